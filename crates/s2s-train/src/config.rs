//! Training settings ([`TrainConfig`]) and the validation metric that picks the best model
//! ([`BestMetric`]).

use crate::optim::AdamConfig;
use crate::schedule::{Decay, TeacherForcing};
use crate::trainer::{EpochLog, TrainError};
use burn::config::Config;
use serde::{Deserialize, Serialize};

/// The validation metric that picks the best checkpoint and drives `patience`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BestMetric {
    /// Validation loss per target token (lower is better).
    Loss,
    /// Word (sequence) error rate (lower is better).
    Wer,
    /// Token (phoneme) error rate (lower is better).
    Per,
    /// Corpus BLEU (higher is better).
    Bleu,
    /// Corpus chrF (higher is better).
    Chrf,
    /// Exact match (higher is better).
    Exact,
}

impl BestMetric {
    /// The metric's name in logs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BestMetric::Loss => "loss",
            BestMetric::Wer => "wer",
            BestMetric::Per => "per",
            BestMetric::Bleu => "bleu",
            BestMetric::Chrf => "chrf",
            BestMetric::Exact => "exact",
        }
    }

    /// The default for a task: WER for G2P, BLEU for text (`tsv`), exact match for the
    /// synthetic tasks.
    pub fn for_task(task: &str) -> Self {
        match task {
            "g2p" => BestMetric::Wer,
            "tsv" | "eng-fra" => BestMetric::Bleu,
            _ => BestMetric::Exact,
        }
    }

    /// The metric's value in `log`, oriented so that lower is better.
    pub fn cost(self, log: &EpochLog) -> f64 {
        let v = match self {
            BestMetric::Loss => log.valid_loss,
            BestMetric::Wer => log.scores.wer,
            BestMetric::Per => log.scores.ter,
            BestMetric::Bleu => -log.bleu,
            BestMetric::Chrf => -log.chrf,
            BestMetric::Exact => -log.scores.exact_match,
        };
        if v.is_nan() {
            f64::INFINITY
        } else {
            v
        }
    }
}

impl std::str::FromStr for BestMetric {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "loss" => BestMetric::Loss,
            "wer" => BestMetric::Wer,
            "per" | "ter" => BestMetric::Per,
            "bleu" => BestMetric::Bleu,
            "chrf" => BestMetric::Chrf,
            "exact" => BestMetric::Exact,
            _ => {
                return Err(format!(
                    "unknown metric {s:?} (loss, wer, per, bleu, chrf or exact)"
                ))
            }
        })
    }
}

/// Training settings.
#[derive(Config, Debug)]
pub struct TrainConfig {
    /// Passes over the training data.
    #[config(default = 10)]
    pub epochs: usize,
    /// Sequences per batch.
    #[config(default = 64)]
    pub batch_size: usize,
    /// Batch by padded tokens instead (`rows x longest` at most this many); overrides
    /// `batch_size` for training batches.
    pub batch_tokens: Option<usize>,
    /// Peak learning rate (Adam).
    #[config(default = 1e-3)]
    pub lr: f64,
    /// Linear warmup steps.
    #[config(default = 0)]
    pub warmup: usize,
    /// Decay after warmup.
    #[config(default = "Decay::None")]
    pub decay: Decay,
    /// Clip the global gradient norm to this value (0 disables).
    #[config(default = 1.0)]
    pub clip_norm: f64,
    /// Teacher-forcing schedule.
    #[config(default = "TeacherForcing::Constant { ratio: 1.0 }")]
    pub teacher_forcing: TeacherForcing,
    /// Label smoothing of the loss.
    #[config(default = 0.0)]
    pub label_smoothing: f32,
    /// Adam's settings (betas, epsilon, AdamW weight decay).
    #[config(default = "AdamConfig::new()")]
    pub adam: AdamConfig,
    /// Seed for weights, batch order, dropout and scheduled sampling.
    #[config(default = 42)]
    pub seed: u64,
    /// Maximum output length when decoding the validation set.
    #[config(default = 50)]
    pub max_decode_len: usize,
    /// Stop after this many optimizer steps (the epoch in progress is then validated); a
    /// cosine decay ends at this step.
    pub max_steps: Option<usize>,
    /// Stop training after this many seconds (checked after every step, counted over every
    /// process of the run); the epoch in progress is then validated and the run ends. The
    /// learning-rate schedule does not depend on time, so a run that finishes its steps
    /// within the limit is reproducible.
    pub time_limit_secs: Option<f64>,
    /// Pretrained word vectors (GloVe / word2vec text) for the source embeddings; tokens
    /// not in the file keep their random initialisation.
    pub source_embeddings: Option<std::path::PathBuf>,
    /// Pretrained word vectors for the target embeddings.
    pub target_embeddings: Option<std::path::PathBuf>,
    /// Threads that share the rows of every batch ([`crate::parallel`]); the step is the
    /// same whatever their number (up to the order of floating-point sums). On a CPU, one per
    /// core, each with one intra-op thread, is the fastest. Runs with the same number are
    /// bit-for-bit reproducible.
    #[config(default = 1)]
    pub workers: usize,
    /// Validate every this many steps as well as at the end of every epoch.
    pub valid_every: Option<usize>,
    /// Write `last/` every this many steps (and after every validation).
    #[config(default = 1000)]
    pub save_every: usize,
    /// Log the mean training loss, learning rate and gradient norm to `metrics.jsonl` every
    /// this many steps.
    #[config(default = 50)]
    pub log_every: usize,
    /// Stop when the best metric has not improved for this many validations in a row.
    pub patience: Option<usize>,
    /// The metric that picks `best/` (ties broken by validation loss); `None`: the task's
    /// default ([`BestMetric::for_task`]).
    pub best_metric: Option<BestMetric>,
    /// Keep the model of each of the last this many validations in
    /// `checkpoints/step-NNNNNNNN/` (0: none), for checkpoint averaging.
    #[config(default = 0)]
    pub keep_checkpoints: usize,
    /// At the end of the run, average the weights of the last this many kept checkpoints
    /// into `averaged/` and validate it (0: no averaging; at most `keep_checkpoints`).
    #[config(default = 0)]
    pub average_last: usize,
}

impl TrainConfig {
    /// Checks the settings: an invalid one is an error naming it, never a silent change.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 || self.batch_tokens == Some(0) {
            return bad("the batch size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("the learning rate must be > 0, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!(
                "label smoothing must be in [0, 1), got {}",
                self.label_smoothing
            ));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm >= 0.0) {
            return bad(format!("clip norm must be >= 0, got {}", self.clip_norm));
        }
        let a = &self.adam;
        if !((0.0..1.0).contains(&a.beta_1) && (0.0..1.0).contains(&a.beta_2)) {
            return bad(format!(
                "Adam's betas must be in [0, 1), got {} and {}",
                a.beta_1, a.beta_2
            ));
        }
        if !(a.epsilon.is_finite() && a.epsilon > 0.0) {
            return bad(format!("Adam's epsilon must be > 0, got {}", a.epsilon));
        }
        if !(a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
            return bad(format!("weight decay must be >= 0, got {}", a.weight_decay));
        }
        if self.average_last > self.keep_checkpoints {
            return bad(format!(
                "averaging the last {} checkpoints needs at least as many kept \
                 (keep_checkpoints is {})",
                self.average_last, self.keep_checkpoints
            ));
        }
        if self.max_steps == Some(0) {
            return bad("max steps must be at least 1".into());
        }
        if self.time_limit_secs.is_some_and(|t| t.is_nan() || t <= 0.0) {
            return bad("the time limit must be > 0 seconds".into());
        }
        if self.valid_every == Some(0) || self.save_every == 0 || self.log_every == 0 {
            return bad("valid-every, save-every and log-every must be at least 1".into());
        }
        if self.patience == Some(0) {
            return bad("patience must be at least 1".into());
        }
        if self.workers == 0 {
            return bad("workers must be at least 1".into());
        }
        if let TeacherForcing::Constant { ratio } = self.teacher_forcing {
            if !(0.0..=1.0).contains(&ratio) {
                return bad(format!(
                    "teacher forcing ratio must be in [0, 1], got {ratio}"
                ));
            }
        }
        Ok(())
    }
}
