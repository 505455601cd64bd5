//! Training for s2s models.
//!
//! - [`config`]: the training settings and the metric that picks the best model.
//! - [`validation`]: validation loss, and decoding scored against references.
//! - [`loss`]: cross-entropy averaged over real (non-pad) target tokens, with label smoothing.
//! - [`schedule`]: teacher forcing (constant, linear, inverse-sigmoid scheduled sampling) and
//!   learning-rate warmup/decay.
//! - [`trainer`]: the [`Trainer`]: length-bucketed batches, Adam, global gradient-norm
//!   clipping, validation (loss, perplexity, exact match, WER, token error rate, BLEU, chrF),
//!   the best checkpoint kept, resumable bit for bit.
//! - [`run`]: run folders (`config.json`, `metrics.jsonl`, `best/`, `last/`) that refuse to
//!   touch what is not theirs.
//! - [`state`]: the training state saved in `last/` (position, best score, optimizer).
//! - [`durable`] (from `s2s_infer`): atomic, synced writes of files and folders, and cleanup
//!   after a kill.
//! - [`parallel`]: one batch's loss and gradients computed by several threads, each on a
//!   share of the rows.
//! - [`collective`]: data-parallel training, several peers (threads, processes, machines)
//!   training one model; [`distributed`] (feature `distributed`) connects them through Burn's
//!   `burn-collective`.
//! - [`checkpoint`] (from `s2s_infer`, which runs models without this crate): model folders
//!   (config JSON, vocabularies, weights) written atomically, their weights checked on load.
//! - [`score`]: forced decoding, the log-probability of a given target.
//! - [`metrics`]: edit distance, exact match, WER and PER against multiple references.
//!
//! ```no_run
//! use s2s_data::{corpus::SyntheticTask, Splits, TextCodec, Tokenizer};
//! use s2s_nn::Seq2SeqConfig;
//! use s2s_tensor::backend::DefaultAutodiffBackend as B;
//! use s2s_train::{train, TrainConfig};
//!
//! let pairs = SyntheticTask::Reverse.generate(2000, 1, 8, 10, 1);
//! let (train_pairs, valid_pairs) = pairs.split_at(1800);
//! let codec = TextCodec::build(train_pairs, Tokenizer::Chars, Tokenizer::Chars, 1);
//! let report = train::<B>("reverse", Seq2SeqConfig::new(0, 0), codec, train_pairs, valid_pairs,
//!     &TrainConfig::new().with_epochs(3), "runs/reverse".as_ref(), &Default::default())?;
//! println!("best epoch {}", report.best_epoch); // the model is in runs/reverse/best
//! # Ok::<(), s2s_train::TrainError>(())
//! ```

pub mod average;
pub mod collective;
#[cfg(feature = "distributed")]
pub mod distributed;
pub use s2s_infer::{checkpoint, durable};
pub mod config;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod run;
pub mod schedule;
pub mod score;
pub mod state;
pub mod trainer;
pub mod validation;

pub use checkpoint::{Checkpoint, CheckpointError, CheckpointMeta};
pub use collective::{Collective, CollectiveError};
pub use metrics::Scores;
pub use optim::{Adam, AdamConfig};
pub use parallel::{batch_gradients, BatchGradients};
pub use run::{OpenMode, RunFolder};
pub use schedule::{Decay, LrSchedule, TeacherForcing};
pub use trainer::{
    evaluate, evaluate_with, train, validation_loss, BestMetric, EpochLog, Outcome, TrainConfig,
    TrainError, TrainEvent, TrainReport, Trainer,
};
