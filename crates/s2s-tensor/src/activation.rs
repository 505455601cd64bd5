//! `sigmoid` and `tanh` for any [`S2sBackend`], with vectorised kernels on burn-flex.
//!
//! burn-flex 0.21 evaluates both through scalar calls to the C library's `expf`/`tanhf`, one
//! element at a time, with a branch per element; a profile of flex decoding put a quarter of
//! its time there (the attention's `[src_len * batch, d]` sigmoid per step and the cells'
//! gates). On [`Flex`](crate::backend::Flex) itself (no autodiff) these functions run the
//! kernels of `s2s_kernels` (a branch-free polynomial `exp`, Cephes' `expf`, within a few
//! units in the last place, which the compiler vectorises); every other backend, and
//! `Autodiff<Flex>`, gets Burn's own. The reference cells and attention
//! ([`crate::reference`]) call them on the inner backend, so training on flex uses the
//! kernels in the forward pass too.

use crate::s2s_backend::S2sBackend;
use burn::tensor::Tensor;

/// The logistic function `1 / (1 + exp(-x))`, elementwise.
pub fn sigmoid<B: S2sBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    B::elementwise_sigmoid(x)
}

/// The hyperbolic tangent, elementwise.
pub fn tanh<B: S2sBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    B::elementwise_tanh(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::for_each_backend! {
        use crate::ops::to_vec_f32;
        use burn::tensor::TensorData;
        type B = TestBackend;

        /// Every backend agrees with Burn's own functions, on contiguous and strided
        /// (transposed) tensors, shared or owned, and leaves a shared input as it was.
        #[test]
        fn sigmoid_and_tanh_equal_burns() {
            let device = device();
            let values: Vec<f32> = (0..60).map(|i| (i as f32 - 30.0) * 0.37).collect();
            let x = Tensor::<B, 2>::from_data(TensorData::new(values.clone(), [6, 10]), &device);
            for t in [x.clone(), x.clone().swap_dims(0, 1)] {
                let pairs = [
                    (sigmoid(t.clone()), burn::tensor::activation::sigmoid(t.clone())),
                    (tanh(t.clone()), t.clone().tanh()),
                ];
                for (got, want) in pairs {
                    assert_eq!(got.dims(), want.dims());
                    for (a, b) in to_vec_f32(got).into_iter().zip(to_vec_f32(want)) {
                        assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-6), "{a} vs {b}");
                    }
                }
            }
            assert_eq!(to_vec_f32(x), values);
            // A tensor that owns its buffer is overwritten in place.
            let own = |v: &[f32]| Tensor::<B, 2>::from_data(TensorData::new(v.to_vec(), [6, 10]), &device);
            let want = to_vec_f32(burn::tensor::activation::sigmoid(own(&values)));
            for (a, b) in to_vec_f32(sigmoid(own(&values))).into_iter().zip(want) {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-6), "{a} vs {b}");
            }
        }
    }
}
