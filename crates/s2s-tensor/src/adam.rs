//! The element-wise part of an Adam step on one parameter, in as few passes as the backend
//! allows.
//!
//! Burn's `Adam` runs about thirteen kernels per parameter and step (scalings, sums, a
//! square, a square root, a division), each writing a tensor that the next one reads again.
//! On [`Flex`](crate::backend::Flex), [`adam_update`] runs one pass per parameter
//! (`s2s_kernels::optim`), with the same operations in the same order, so the result is the
//! same bit for bit. On [`Tch`](crate::backend::Tch) it runs seven libtorch kernels (`lerp`
//! for the moments, `addcdiv` for the update), within rounding of Burn's. Every other
//! backend runs Burn's operations as Burn's `Adam` does.
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
    if let Some(out) = on_flex::adam_update(&param, &grad, moments.as_ref(), step) {
        return out;
    }
    #[cfg(feature = "tch")]
    if let Some(out) = on_tch::adam_update(&param, &grad, moments.as_ref(), step) {
        return out;
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
    use crate::flex::{contiguous, from_vec, values};
    use burn::tensor::backend::Backend;
    use burn::tensor::Tensor;
    use s2s_kernels::optim;

    pub(super) fn adam_update<B: Backend>(
        param: &Tensor<B, 1>,
        grad: &Tensor<B, 1>,
        moments: Option<&(Tensor<B, 1>, Tensor<B, 1>)>,
        step: AdamStep,
    ) -> Option<AdamState<B>> {
        let n = param.dims()[0];
        let row = |t: &Tensor<B, 1>| t.clone().reshape([1, n]);
        let [p, g] = contiguous([&row(param), &row(grad)])?;
        let out = match moments {
            Some((m, v)) => {
                let [m, v] = contiguous([&row(m), &row(v)])?;
                optim::adam(values(&p), values(&g), Some((values(&m), values(&v))), step)
            }
            None => optim::adam(values(&p), values(&g), None, step),
        };
        let flat = |values: Vec<f32>| from_vec::<B>(values, 1, n).reshape([n]);
        Some(AdamState {
            param: flat(out.param),
            moment_1: flat(out.moment_1),
            moment_2: flat(out.moment_2),
        })
    }
}

#[cfg(feature = "tch")]
mod on_tch {
    use super::{AdamState, AdamStep};
    use crate::backend::Tch;
    use burn::backend::libtorch::TchTensor;
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorPrimitive};
    use std::any::Any;

    /// The libtorch tensor behind `t`, when `B` is [`Tch`] and `t` holds floats.
    fn torch<B: Backend>(t: &Tensor<B, 1>) -> Option<tch::Tensor> {
        let t = (t as &dyn Any).downcast_ref::<Tensor<Tch, 1>>()?;
        match t.clone().into_primitive() {
            TensorPrimitive::Float(t) => Some(t.tensor),
            _ => None,
        }
    }

    /// A libtorch tensor as a tensor of `B`, which the caller knows to be [`Tch`].
    fn burn<B: Backend>(t: tch::Tensor) -> Tensor<B, 1> {
        let t = Tensor::<Tch, 1>::from_primitive(TensorPrimitive::Float(TchTensor::new(t)));
        *(Box::new(t) as Box<dyn Any>)
            .downcast::<Tensor<B, 1>>()
            .unwrap_or_else(|_| unreachable!("called only when B is Tch"))
    }

    pub(super) fn adam_update<B: Backend>(
        param: &Tensor<B, 1>,
        grad: &Tensor<B, 1>,
        moments: Option<&(Tensor<B, 1>, Tensor<B, 1>)>,
        s: AdamStep,
    ) -> Option<AdamState<B>> {
        let (p, g) = (torch(param)?, torch(grad)?);
        let (a1, a2) = (1.0 - s.beta_1 as f64, 1.0 - s.beta_2 as f64);
        let (m, v) = match moments {
            // m + (1 - b1) (g - m) and v + (1 - b2) (g^2 - v): one kernel each, and a
            // square.
            Some((m, v)) => (torch(m)?.lerp(&g, a1), torch(v)?.lerp(&g.square(), a2)),
            None => (g.g_mul_scalar(a1), g.square().g_mul_scalar(a2)),
        };
        // p + m / ((sqrt(v) + eps) / (-lr * factor)): the denominator's scalings in place
        // on the one tensor it allocates, then one `addcdiv`.
        let mut denominator = v.sqrt();
        let _ = denominator.g_add_scalar_(s.epsilon as f64);
        let _ = denominator.g_div_scalar_(-(s.lr as f64) * s.factor as f64);
        let p = p.addcdiv(&m, &denominator);
        Some(AdamState {
            param: burn(p),
            moment_1: burn(m),
            moment_2: burn(v),
        })
    }
}
