//! Teacher-forcing and learning-rate schedules.

use serde::{Deserialize, Serialize};

/// How often the reference token (rather than the model's own prediction) is fed to the
/// decoder, as a function of the training step. Decided per time step and per sequence
/// (scheduled sampling, Bengio et al. 2015).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TeacherForcing {
    /// A fixed ratio; 1.0 is plain teacher forcing.
    Constant {
        /// Probability of feeding the reference token.
        ratio: f64,
    },
    /// Linear decay from `start` to `end` over `steps` steps, then `end`.
    Linear {
        /// Ratio at step 0.
        start: f64,
        /// Final ratio.
        end: f64,
        /// Steps of the decay.
        steps: usize,
    },
    /// `k / (k + exp(step / k))`, the inverse-sigmoid decay of the scheduled-sampling paper
    /// (with the step measured in units of 1: larger `k` decays later).
    InverseSigmoid {
        /// Decay constant (>= 1).
        k: f64,
    },
}

impl Default for TeacherForcing {
    fn default() -> Self {
        TeacherForcing::Constant { ratio: 1.0 }
    }
}

impl TeacherForcing {
    /// The ratio at `step`.
    pub fn ratio(&self, step: usize) -> f64 {
        let s = step as f64;
        match *self {
            TeacherForcing::Constant { ratio } => ratio,
            TeacherForcing::Linear { start, end, steps } => {
                if steps == 0 || step >= steps {
                    end
                } else {
                    start + (end - start) * s / steps as f64
                }
            }
            TeacherForcing::InverseSigmoid { k } => {
                let k = k.max(1.0);
                k / (k + (s / k).exp())
            }
        }
        .clamp(0.0, 1.0)
    }
}

impl std::str::FromStr for TeacherForcing {
    type Err = String;
    /// Parses `const:R`, `linear:START:END:STEPS` or `invsigmoid:K` (a bare number is a
    /// constant ratio).
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |x: &str| {
            x.parse::<f64>()
                .map_err(|_| format!("bad number {x:?} in {s:?}"))
        };
        match parts.as_slice() {
            [r] => Ok(TeacherForcing::Constant { ratio: num(r)? }),
            ["const", r] => Ok(TeacherForcing::Constant { ratio: num(r)? }),
            ["linear", a, b, n] => Ok(TeacherForcing::Linear {
                start: num(a)?,
                end: num(b)?,
                steps: n.parse().map_err(|_| format!("bad step count in {s:?}"))?,
            }),
            ["invsigmoid", k] => Ok(TeacherForcing::InverseSigmoid { k: num(k)? }),
            _ => Err(format!(
                "unknown teacher forcing {s:?} (expected R, const:R, linear:START:END:STEPS or invsigmoid:K)"
            )),
        }
    }
}

/// Learning rate: linear warmup to `base`, then a decay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub base: f64,
    /// Warmup steps (linear from `base / warmup` to `base`).
    pub warmup: usize,
    /// What follows the warmup.
    pub decay: Decay,
}

/// Learning-rate decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decay {
    /// Constant.
    None,
    /// `base * sqrt(warmup / step)`.
    InverseSqrt,
    /// Cosine from `base` to `base * floor` at `total` steps.
    Cosine {
        /// Total training steps.
        total: usize,
        /// Final fraction of `base`.
        floor: f64,
    },
}

impl LrSchedule {
    /// The learning rate at `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        let s = step + 1;
        if s <= self.warmup {
            return self.base * s as f64 / self.warmup as f64;
        }
        match self.decay {
            Decay::None => self.base,
            Decay::InverseSqrt => self.base * (self.warmup.max(1) as f64 / s as f64).sqrt(),
            Decay::Cosine { total, floor } => {
                let span = total.saturating_sub(self.warmup).max(1) as f64;
                let progress = ((s - self.warmup) as f64 / span).min(1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                self.base * (floor + (1.0 - floor) * cos)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teacher_forcing_schedules() {
        assert_eq!(TeacherForcing::Constant { ratio: 0.5 }.ratio(1000), 0.5);
        let lin = TeacherForcing::Linear {
            start: 1.0,
            end: 0.5,
            steps: 10,
        };
        assert_eq!(lin.ratio(0), 1.0);
        assert!((lin.ratio(5) - 0.75).abs() < 1e-12);
        assert_eq!(lin.ratio(99), 0.5);
        let inv = TeacherForcing::InverseSigmoid { k: 100.0 };
        assert!((inv.ratio(0) - 100.0 / 101.0).abs() < 1e-12);
        assert!(inv.ratio(1000) < inv.ratio(100));
        assert_eq!("linear:1:0.5:10".parse::<TeacherForcing>().unwrap(), lin);
        assert!("warp:3".parse::<TeacherForcing>().is_err());
    }

    #[test]
    fn warmup_then_decay() {
        let s = LrSchedule {
            base: 1e-3,
            warmup: 10,
            decay: Decay::Cosine {
                total: 110,
                floor: 0.1,
            },
        };
        assert!((s.at(0) - 1e-4).abs() < 1e-12);
        assert!((s.at(9) - 1e-3).abs() < 1e-12);
        assert!((s.at(109) - 1e-4).abs() < 1e-9);
        assert!(s.at(60) < s.at(20));
        let inv = LrSchedule {
            base: 1.0,
            warmup: 4,
            decay: Decay::InverseSqrt,
        };
        assert!((inv.at(15) - 0.5).abs() < 1e-12);
    }
}
