//! The element-wise part of an Adam step on one parameter, in as few passes as the backend
//! allows.
//!
//! Burn's `Adam` runs about thirteen kernels per parameter and step (scalings, sums, a
//! square, a square root, a division), each writing a tensor that the next one reads again.
//! On [`Flex`](crate::backend::Flex), [`adam_update`] runs one pass per parameter
//! (`s2s_kernels::optim`) with the same operations in the same order, so the result is the
//! same bit for bit. On [`Tch`](crate::backend::Tch) it runs seven libtorch kernels (`lerp`
//! for the moments, `addcdiv` for the update), within rounding of Burn's. Both write over
//! the parameter and its moments (and on libtorch the gradient) in place wherever no other
//! tensor shares their values, and copy them first where one does: a step then allocates
//! nothing of a parameter's size, where fresh buffers of that size come from `mmap` and
//! cost a page fault per 4 KiB written. Every other backend runs Burn's operations as
//! Burn's `Adam` does.
//!
//! # Shapes
//! Every tensor is one parameter's values flattened: `[n]`.

pub use s2s_kernels::optim::AdamStep;

use crate::s2s_backend::S2sBackend;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// A parameter and its two moments after an Adam step.
#[derive(Debug, Clone)]
pub struct AdamState<B: Backend> {
    /// The parameter's new values.
    pub param: Tensor<B, 1>,
    /// The first moment (mean of the gradients).
    pub moment_1: Tensor<B, 1>,
    /// The second moment (mean of the squared gradients).
    pub moment_2: Tensor<B, 1>,
}

/// One Adam step of `param` with gradient `grad`; `moments` are the first and second
/// moments after the previous step (`None` before the first, when both are zero).
pub fn adam_update<B: S2sBackend>(
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    moments: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    step: AdamStep,
) -> AdamState<B> {
    B::adam_update(param, grad, moments, step)
}

/// [`adam_update`] with Burn's tensor operations, as Burn's `Adam` runs them.
pub fn adam_update_composed<B: Backend>(
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    moments: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    s: AdamStep,
) -> AdamState<B> {
    let (a1, a2) = (1.0 - s.beta_1, 1.0 - s.beta_2);
    let (moment_1, moment_2) = match moments {
        Some((m, v)) => (
            m.mul_scalar(s.beta_1).add(grad.clone().mul_scalar(a1)),
            v.mul_scalar(s.beta_2).add(grad.square().mul_scalar(a2)),
        ),
        None => (grad.clone().mul_scalar(a1), grad.square().mul_scalar(a2)),
    };
    let delta = moment_1
        .clone()
        .mul_scalar(s.factor)
        .div(moment_2.clone().sqrt().add_scalar(s.epsilon))
        .mul_scalar(s.lr);
    AdamState {
        param: param - delta,
        moment_1,
        moment_2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::for_each_backend! {
        use crate::ops::to_vec_f32;
        use burn::tensor::TensorData;
        type B = TestBackend;

        /// Every backend's update equals Burn's operations, whether it writes over tensors of
        /// its own or copies shared ones, and leaves the shared ones as they were.
        #[test]
        fn updates_equal_burns_in_place_or_not() {
            let device = device();
            let n = 37;
            let values = |k: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + k) * 0.71).sin()).collect() };
            let tensor = |v: &[f32]| Tensor::<B, 1>::from_data(TensorData::new(v.to_vec(), [n]), &device);
            let (p, g, m) = (values(1.0), values(2.0), values(3.0));
            let v: Vec<f32> = values(4.0).iter().map(|x| x * x).collect();
            let close = |got: Tensor<B, 1>, want: Tensor<B, 1>, what: &str| {
                for (a, b) in to_vec_f32(got).into_iter().zip(to_vec_f32(want)) {
                    assert!((a - b).abs() <= 1e-6 + 1e-5 * b.abs(), "{what}: {a} vs {b}");
                }
            };
            for first in [true, false] {
                let step = AdamStep::new(0.9, 0.999, 1e-5, 1e-2, if first { 1 } else { 4 });
                let moments = || (!first).then(|| (tensor(&m), tensor(&v)));
                let want = adam_update_composed(tensor(&p), tensor(&g), moments(), step);
                // Tensors of its own.
                let own = adam_update(tensor(&p), tensor(&g), moments(), step);
                // Shared with tensors that the caller keeps.
                let shared = [tensor(&p), tensor(&g)];
                let shared_moments = moments();
                let copied = adam_update(
                    shared[0].clone(),
                    shared[1].clone(),
                    shared_moments.clone(),
                    step,
                );
                for out in [own, copied] {
                    close(out.param, want.param.clone(), "parameter");
                    close(out.moment_1, want.moment_1.clone(), "first moment");
                    close(out.moment_2, want.moment_2.clone(), "second moment");
                }
                assert_eq!(to_vec_f32(shared[0].clone()), p);
                assert_eq!(to_vec_f32(shared[1].clone()), g);
                if let Some((m1, m2)) = shared_moments {
                    assert_eq!(to_vec_f32(m1), m);
                    assert_eq!(to_vec_f32(m2), v);
                }
            }
        }
    }
}
