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
pub fn adam_update<B: Backend>(
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    moments: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
    step: AdamStep,
) -> AdamState<B> {
    #[cfg(feature = "flex")]
    if on_flex::is_flex_f32(&param) {
        return on_flex::adam_update(param, grad, moments, step);
    }
    #[cfg(feature = "tch")]
    if on_tch::is_tch::<B>() {
        return on_tch::adam_update(param, grad, moments, step);
    }
    adam_update_composed(param, grad, moments, step)
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

#[cfg(feature = "flex")]
mod on_flex {
    use super::{AdamState, AdamStep};
    use crate::backend::Flex;
    use crate::flex::{cast, tensor};
    use burn::backend::flex::FlexTensor;
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
    use s2s_kernels::optim;

    /// The flex tensor behind `t`, which the caller knows to be a tensor of [`Flex`].
    fn primitive<B: Backend>(t: Tensor<B, 1>) -> FlexTensor {
        match cast::<_, Tensor<Flex, 1>>(t).map(Tensor::into_primitive) {
            Ok(TensorPrimitive::Float(t)) => t,
            _ => unreachable!("called only for float tensors of Flex"),
        }
    }

    /// Whether `B` is [`Flex`] and `t` holds `f32`.
    pub(super) fn is_flex_f32<B: Backend>(t: &Tensor<B, 1>) -> bool {
        std::any::TypeId::of::<B>() == std::any::TypeId::of::<Flex>() && t.dtype() == DType::F32
    }

    /// `t` with its values contiguous from the start of its buffer (copied otherwise).
    fn contiguous<B: Backend>(t: Tensor<B, 1>) -> FlexTensor {
        let t = primitive(t);
        match t.layout().contiguous_offsets() {
            Some((0, _)) => t,
            _ => t.to_contiguous(),
        }
    }

    /// The update in place, one pass over the values: the parameter and its moments are
    /// written over, or copied first where another tensor shares their buffer
    /// (`storage_mut`, copy on write).
    pub(super) fn adam_update<B: Backend>(
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        moments: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
        step: AdamStep,
    ) -> AdamState<B> {
        let n = param.dims()[0];
        let zeros = || FlexTensor::from_data(TensorData::new(vec![0.0f32; n], [n]));
        let (mut m, mut v) = match moments {
            Some((m, v)) => (contiguous(m), contiguous(v)),
            None => (zeros(), zeros()),
        };
        let (mut p, g) = (contiguous(param), contiguous(grad));
        optim::adam(
            &mut p.storage_mut::<f32>()[..n],
            &g.storage::<f32>()[..n],
            &mut m.storage_mut::<f32>()[..n],
            &mut v.storage_mut::<f32>()[..n],
            step,
        );
        AdamState {
            param: tensor(p),
            moment_1: tensor(m),
            moment_2: tensor(v),
        }
    }
}

#[cfg(feature = "tch")]
mod on_tch {
    use super::{AdamState, AdamStep};
    use crate::backend::{from_tch, tch_of, Tch};
    use burn::tensor::backend::Backend;
    use burn::tensor::Tensor;

    /// Whether `B` is [`Tch`].
    pub(super) fn is_tch<B: Backend>() -> bool {
        std::any::TypeId::of::<B>() == std::any::TypeId::of::<Tch>()
    }

    fn torch<B: Backend>(t: Tensor<B, 1>) -> (tch::Tensor, bool) {
        tch_of(t).unwrap_or_else(|| unreachable!("called only when B is Tch, on float tensors"))
    }

    /// The values of `t` to be written in place: its own when nothing else holds them, else
    /// a copy.
    fn writable<B: Backend>(t: Tensor<B, 1>) -> tch::Tensor {
        match torch(t) {
            (t, true) => t,
            (t, false) => t.copy(),
        }
    }

    /// The update in place: the parameter, its moments and the gradient are written over
    /// (copied first where another tensor shares their values, as Burn's in-place
    /// operations do).
    pub(super) fn adam_update<B: Backend>(
        param: Tensor<B, 1>,
        grad: Tensor<B, 1>,
        moments: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
        s: AdamStep,
    ) -> AdamState<B> {
        let (a1, a2) = (1.0 - s.beta_1 as f64, 1.0 - s.beta_2 as f64);
        // The gradient's values are the one buffer of the step: the gradient, its square,
        // then the denominator.
        let mut g = writable(grad);
        let (m, v) = match moments {
            // m + (1 - b1) (g - m) and v + (1 - b2) (g^2 - v).
            Some((m, v)) => {
                let (mut m, mut v) = (writable(m), writable(v));
                let _ = m.lerp_(&g, a1);
                let _ = g.g_mul_(&g.shallow_clone());
                let _ = v.lerp_(&g, a2);
                (m, v)
            }
            None => {
                let m = g.g_mul_scalar(a1);
                let _ = g.g_mul_(&g.shallow_clone());
                (m, g.g_mul_scalar(a2))
            }
        };
        // p + m / ((sqrt(v) + eps) / (-lr * factor)): the denominator's scalings in place,
        // then one `addcdiv`.
        let _ = v.sqrt_out(&g);
        let _ = g.g_add_scalar_(s.epsilon as f64);
        let _ = g.g_div_scalar_(-(s.lr as f64) * s.factor as f64);
        let mut p = writable(param);
        let _ = p.addcdiv_(&m, &g);
        AdamState {
            param: from_tch(p),
            moment_1: from_tch(m),
            moment_2: from_tch(v),
        }
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
