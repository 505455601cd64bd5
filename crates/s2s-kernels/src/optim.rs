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

/// A parameter and its moments after an Adam step.
#[derive(Debug)]
pub struct AdamUpdate {
    /// The parameter's new values.
    pub param: Vec<f32>,
    /// The first moment (mean of the gradients).
    pub moment_1: Vec<f32>,
    /// The second moment (mean of the squared gradients).
    pub moment_2: Vec<f32>,
}

/// One Adam step of a parameter `p` with gradient `g` and moments `m`, `v` (`None` before
/// the first step, when both are zero), each operation in the order and precision of
/// Burn's `Adam`, so that the result is the same bit for bit.
///
/// # Panics
/// If the slices differ in length.
pub fn adam(p: &[f32], g: &[f32], moments: Option<(&[f32], &[f32])>, s: AdamStep) -> AdamUpdate {
    crate::vectorized(
        #[inline(always)]
        || {
            let n = p.len();
            assert_eq!(g.len(), n, "adam: gradient and parameter differ in length");
            let (a1, a2) = (1.0 - s.beta_1, 1.0 - s.beta_2);
            let (moment_1, moment_2): (Vec<f32>, Vec<f32>) = match moments {
                Some((m, v)) => {
                    assert!(
                        m.len() == n && v.len() == n,
                        "adam: moments differ in length"
                    );
                    (
                        g.iter()
                            .zip(m)
                            .map(|(g, m)| m * s.beta_1 + g * a1)
                            .collect(),
                        g.iter()
                            .zip(v)
                            .map(|(g, v)| v * s.beta_2 + g * g * a2)
                            .collect(),
                    )
                }
                None => (
                    g.iter().map(|g| g * a1).collect(),
                    g.iter().map(|g| g * g * a2).collect(),
                ),
            };
            let param = p
                .iter()
                .zip(moment_1.iter().zip(&moment_2))
                .map(|(p, (m, v))| p - (m * s.factor) / (v.sqrt() + s.epsilon) * s.lr)
                .collect();
            AdamUpdate {
                param,
                moment_1,
                moment_2,
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_formula() {
        let (p, g) = ([1.0f32, -2.0, 0.5], [0.1f32, 0.0, -3.0]);
        let (m, v) = ([0.2f32, -0.1, 0.0], [0.04f32, 0.01, 1.0]);
        let s = AdamStep::new(0.9, 0.999, 1e-5, 1e-3, 3);
        let out = adam(&p, &g, Some((&m, &v)), s);
        for i in 0..3 {
            let m1 = 0.9 * m[i] + 0.1 * g[i];
            let v1 = 0.999 * v[i] + 0.001 * g[i] * g[i];
            let (b1, b2) = (1.0 - 0.9f64.powi(3), 1.0 - 0.999f64.powi(3));
            let want = p[i] as f64 - 1e-3 * (m1 as f64 / b1) / ((v1 as f64 / b2).sqrt() + 1e-5);
            assert!((out.moment_1[i] - m1).abs() <= 1e-6 * m1.abs().max(1.0));
            assert!((out.moment_2[i] - v1).abs() <= 1e-6 * v1.abs().max(1.0));
            assert!(
                (out.param[i] as f64 - want).abs() < 1e-6,
                "{i}: {} vs {want}",
                out.param[i]
            );
        }
        // Before the first step the moments are zero.
        let first = adam(&p, &g, None, AdamStep::new(0.9, 0.999, 1e-5, 1e-3, 1));
        let zeros = [0.0f32; 3];
        let with_zeros = adam(
            &p,
            &g,
            Some((&zeros, &zeros)),
            AdamStep::new(0.9, 0.999, 1e-5, 1e-3, 1),
        );
        assert_eq!(first.param, with_zeros.param);
        assert_eq!(first.moment_2, with_zeros.moment_2);
    }
}
