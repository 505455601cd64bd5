//! `sigmoid` and `tanh` for any backend, with vectorised kernels on burn-flex.
//!
//! burn-flex 0.21 evaluates both through scalar calls to the C library's `expf`/`tanhf`, one
//! element at a time, with a branch per element; a profile of flex decoding put a quarter of
//! its time there (the attention's `[src_len * batch, d]` sigmoid per step and the cells'
//! gates). On [`Flex`](crate::backend::Flex) itself (no autodiff) these functions run the
//! kernels of `s2s_kernels` (a branch-free polynomial `exp`, Cephes' `expf`, within a few
//! units in the last place, which the compiler vectorises); every other backend, and
//! `Autodiff<Flex>`, gets Burn's own.
//! The fused cells and attention of [`crate::fused`] call them on the inner backend, so
//! training on flex uses the kernels in the forward pass too.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// The logistic function `1 / (1 + exp(-x))`, elementwise.
pub fn sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let x = match flex::map(x, s2s_kernels::sigmoid_in_place) {
        Ok(y) => return y,
        Err(x) => x,
    };
    burn::tensor::activation::sigmoid(x)
}

/// The hyperbolic tangent, elementwise.
pub fn tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let x = match flex::map(x, s2s_kernels::tanh_in_place) {
        Ok(y) => return y,
        Err(x) => x,
    };
    x.tanh()
}

#[cfg(feature = "flex")]
mod flex {
    use crate::backend::Flex;
    use crate::flex::{cast, tensor};
    use burn::backend::flex::FlexTensor;
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

    /// `f` applied to the values of `x` when `B` is [`Flex`] and `x` holds `f32`; `x` back
    /// otherwise.
    pub(super) fn map<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        f: fn(&mut [f32]),
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        let x: Tensor<Flex, D> = cast(x)?;
        match x.into_primitive() {
            TensorPrimitive::Float(t) if t.dtype() == DType::F32 => Ok(tensor(apply(t, f))),
            other => Err(cast(Tensor::<Flex, D>::from_primitive(other)).expect("B is Flex")),
        }
    }

    /// `f` over the tensor's values: in place when it owns a contiguous buffer, else into a
    /// new contiguous one.
    fn apply(mut t: FlexTensor, f: fn(&mut [f32])) -> FlexTensor {
        if let Some((start, end)) = t.layout().contiguous_offsets() {
            if let Some(values) = t.try_storage_mut::<f32>() {
                f(&mut values[start..end]);
                return t;
            }
        }
        let shape = t.layout().shape().clone();
        let contiguous = t.to_contiguous();
        let mut values = contiguous
            .as_slice::<f32>()
            .expect("a contiguous f32 tensor")
            .to_vec();
        f(&mut values);
        FlexTensor::from_data(TensorData::new(values, shape))
    }
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
