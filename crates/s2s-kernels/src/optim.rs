//! The element-wise part of an Adam step in one pass over a parameter's values.

/// The scalars of one Adam step of a parameter (Burn's `AdamConfig` formulation):
/// `m' = b1 m + (1 - b1) g`, `v' = b2 v + (1 - b2) g^2` and
/// `p' = p - lr * (m' * factor) / (sqrt(v') + epsilon)`, where `factor` and `epsilon` carry
/// the bias corrections of step `t` ([`AdamStep::new`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Decay of the first moment.
    pub beta_1: f32,
    /// Decay of the second moment.
    pub beta_2: f32,
    /// `sqrt(1 - b2^t) / (1 - b1^t)`.
    pub factor: f32,
    /// The configured epsilon times `sqrt(1 - b2^t)`.
    pub epsilon: f32,
    /// Learning rate.
    pub lr: f32,
}

impl AdamStep {
    /// The scalars of step `t` (1 for the first step), as Burn's `Adam` computes them.
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32, lr: f32, t: i32) -> Self {
        let correction_2 = (1.0 - beta_2.powi(t)).sqrt();
        Self {
            beta_1,
            beta_2,
            factor: correction_2 / (1.0 - beta_1.powi(t)),
            epsilon: epsilon * correction_2,
            lr,
        }
    }
}

/// One Adam step of a parameter `p` with gradient `g`, in place: `p` and the moments `m`,
/// `v` (zero before the first step) are overwritten with their new values. Each operation
/// runs in the order and precision of Burn's `Adam`, so that the result is the same bit for
/// bit (up to the sign of a zero moment).
///
/// # Panics
/// If the slices differ in length.
pub fn adam(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamStep) {
    crate::vectorized(
        #[inline(always)]
        || {
            let n = p.len();
            assert!(
                g.len() == n && m.len() == n && v.len() == n,
                "adam: parameter, gradient and moments differ in length"
            );
            let (a1, a2) = (1.0 - s.beta_1, 1.0 - s.beta_2);
            for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = *m * s.beta_1 + g * a1;
                *v = *v * s.beta_2 + g * g * a2;
                *p -= (*m * s.factor) / (v.sqrt() + s.epsilon) * s.lr;
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_formula() {
        let g = [0.1f32, 0.0, -3.0];
        let (p0, m0, v0) = (
            [1.0f32, -2.0, 0.5],
            [0.2f32, -0.1, 0.0],
            [0.04f32, 0.01, 1.0],
        );
        let (mut p, mut m, mut v) = (p0, m0, v0);
        let s = AdamStep::new(0.9, 0.999, 1e-5, 1e-3, 3);
        adam(&mut p, &g, &mut m, &mut v, s);
        for i in 0..3 {
            let m1 = 0.9 * m0[i] + 0.1 * g[i];
            let v1 = 0.999 * v0[i] + 0.001 * g[i] * g[i];
            let (b1, b2) = (1.0 - 0.9f64.powi(3), 1.0 - 0.999f64.powi(3));
            let want = p0[i] as f64 - 1e-3 * (m1 as f64 / b1) / ((v1 as f64 / b2).sqrt() + 1e-5);
            assert!((m[i] - m1).abs() <= 1e-6 * m1.abs().max(1.0));
            assert!((v[i] - v1).abs() <= 1e-6 * v1.abs().max(1.0));
            assert!((p[i] as f64 - want).abs() < 1e-6, "{i}: {} vs {want}", p[i]);
        }
    }
}
