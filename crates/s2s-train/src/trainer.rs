//! The training loop as a [`Trainer`]: batches, loss, gradient clipping, Adam, validation,
//! and a run folder ([`crate::run`]) that holds the run's whole state, so that a run stopped
//! at any moment resumes where it stopped, bit for bit.
//!
//! The trainer prints nothing: it reports through a callback ([`TrainEvent`]) and writes
//! every measurement to the run's `metrics.jsonl`. A run is reproducible: the batch order of
//! an epoch comes from the seed and the epoch, and every random draw of a step (dropout
//! masks, scheduled-sampling flags) from the seed, the step and the worker's share, never
//! from a generator shared between threads.

use crate::checkpoint::{parameter_shapes, Checkpoint, CheckpointError, CheckpointMeta, FORMAT};
use crate::loss::masked_nll_sum;
use crate::metrics::{corpus_bleu_chrf, score, Scores};
use crate::optim::{Adam, AdamConfig};
use crate::parallel::batch_gradients;
use crate::run::{RunError, RunFolder};
use crate::schedule::{Decay, LrSchedule, TeacherForcing};
use crate::state::{TrainingState, Window, STATE_FORMAT};
use burn::config::Config;
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use rand::{rngs::StdRng, Rng, SeedableRng};
use s2s_data::batch::{plan_inference_batches, plan_training_batches};
use s2s_data::corpus::group_references;
use s2s_data::{BatchSize, Example, Pair, Reference, TextCodec, TrainingBatch};
use s2s_decode::{decode_all_parallel, Greedy, Strategy};
use s2s_nn::{Seq2Seq, Seq2SeqConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

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
            _ => return Err(format!("unknown metric {s:?} (loss, wer, per, bleu, chrf or exact)")),
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
        if self.max_steps == Some(0) {
            return bad("max steps must be at least 1".into());
        }
        if self.time_limit_secs.is_some_and(|t| !(t > 0.0)) {
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
                return bad(format!("teacher forcing ratio must be in [0, 1], got {ratio}"));
            }
        }
        Ok(())
    }
}

/// An error during training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The data cannot be trained on.
    #[error("{0}")]
    Data(String),
    /// A setting is invalid.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The model configuration is invalid.
    #[error(transparent)]
    Model(#[from] s2s_nn::ModelError),
    /// An input file (word vectors) is invalid.
    #[error(transparent)]
    Input(#[from] s2s_data::DataError),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The run folder cannot be used or written.
    #[error(transparent)]
    Run(#[from] RunError),
}

impl From<crate::durable::IoError> for TrainError {
    fn from(e: crate::durable::IoError) -> Self {
        TrainError::Run(RunError::Io(e))
    }
}

/// One validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based epoch in progress.
    pub epoch: usize,
    /// Optimizer steps so far.
    pub steps: usize,
    /// Mean training loss of the epoch so far (per target token).
    pub train_loss: f64,
    /// Validation loss per target token (no label smoothing).
    pub valid_loss: f64,
    /// `exp(valid_loss)`.
    pub valid_perplexity: f64,
    /// Greedy-decoding metrics on the validation set.
    pub scores: Scores,
    /// Corpus BLEU of the greedy outputs (one line per validation pair).
    pub bleu: f64,
    /// Corpus chrF of the same.
    pub chrf: f64,
    /// Target tokens per second during training since the previous validation.
    pub tokens_per_second: f64,
    /// Wall-clock seconds of training so far (every process of the run).
    pub elapsed_seconds: f64,
}

/// What a [`Trainer`] reports while it runs.
#[derive(Debug)]
pub enum TrainEvent<'a> {
    /// Something worth telling (word vectors read, temporary files cleaned up).
    Note(String),
    /// An epoch begins (or resumes at batch `done`).
    Epoch {
        /// 1-based epoch.
        epoch: usize,
        /// Epochs in all.
        epochs: usize,
        /// Batches in the epoch.
        batches: usize,
        /// Batches already trained on (a resumed epoch).
        done: usize,
    },
    /// A step was taken.
    Step {
        /// Steps so far.
        step: usize,
        /// Mean loss of the epoch so far.
        loss: f64,
        /// Target tokens per second since the epoch (or process) began.
        tokens_per_second: f64,
    },
    /// A validation finished; `best` if it was the best so far (and `best/` was written).
    Validated {
        /// The measurements.
        log: &'a EpochLog,
        /// Whether it is the best so far.
        best: bool,
    },
    /// `last/` was written at this step.
    Saved {
        /// Steps so far.
        step: usize,
    },
}

/// Why [`Trainer::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every epoch or `max_steps` steps were trained.
    Finished,
    /// The time limit was reached.
    OutOfTime,
    /// The best metric did not improve for `patience` validations.
    EarlyStopped,
    /// The stop flag was raised (a signal): `last/` holds the step reached.
    Interrupted,
}

/// The outcome of [`Trainer::run`] or [`train`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    /// Every validation of this process, in order.
    pub history: Vec<EpochLog>,
    /// The epoch of the best validation so far (0 if none).
    pub best_epoch: usize,
    /// The step of the best validation so far (0 if none).
    pub best_step: usize,
    /// Why the run stopped.
    pub outcome: Outcome,
    /// Steps taken in all.
    pub steps: usize,
}

/// Visits every float parameter that has a gradient.
struct GradVisitor<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    /// `None`: accumulate the squared norm; `Some(c)`: scale every gradient by `c`.
    scale: Option<f32>,
    squares: Vec<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradVisitor<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        match self.scale {
            None => {
                if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                    // The sum of squares as the product of a row and a column: no squared
                    // copy of a parameter-sized gradient.
                    let n = g.shape().num_elements();
                    let row = g.reshape([1, n]);
                    let square = row.clone().matmul(row.transpose());
                    self.squares.push(square.reshape([1]));
                }
            }
            Some(c) => {
                if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                    self.grads
                        .register::<B::InnerBackend, D>(param.id, g.mul_scalar(c));
                }
            }
        }
    }
}

/// Scales all gradients so that their global L2 norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let mut visitor = GradVisitor::<B> {
        grads,
        scale: None,
        squares: Vec::new(),
    };
    model.visit(&mut visitor);
    if visitor.squares.is_empty() {
        return 0.0;
    }
    let total = s2s_tensor::ops::to_vec_f32(Tensor::cat(visitor.squares, 0).sum())[0] as f64;
    let norm = total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let mut scaler = GradVisitor::<B> {
            grads: visitor.grads,
            scale: Some((max_norm / (norm + 1e-6)) as f32),
            squares: Vec::new(),
        };
        model.visit(&mut scaler);
    }
    norm
}

/// Mean validation loss per target token (no smoothing), over length-sorted batches.
pub fn validation_loss<B: Backend>(
    model: &Seq2Seq<B>,
    examples: &[Example],
    batch_size: usize,
    device: &B::Device,
) -> f64 {
    let lengths: Vec<usize> = examples.iter().map(|e| e.source.len()).collect();
    let mut sum = 0.0f64;
    let mut count = 0usize;
    for plan in plan_inference_batches(&lengths, BatchSize::Sentences(batch_size)) {
        let refs: Vec<&Example> = plan.iter().map(|&i| &examples[i]).collect();
        let batch = TrainingBatch::<B>::new(&refs, device);
        let logits = model.forward(batch.source, &batch.source_lengths, batch.target_input);
        let (s, n) = masked_nll_sum(logits, batch.target_output, 0.0);
        sum += s2s_tensor::ops::to_vec_f32(s)[0] as f64;
        count += n;
    }
    sum / count.max(1) as f64
}

/// Greedy-decodes the sources of `references` and scores them; also returns the predictions
/// (as text) in input order.
pub fn evaluate<B: Backend>(
    model: &Seq2Seq<B>,
    codec: &TextCodec,
    references: &[Reference],
    batch_size: usize,
    max_len: usize,
    device: &B::Device,
) -> (Scores, Vec<String>) {
    let greedy = Greedy::new(max_len);
    evaluate_with(model, codec, references, &greedy, batch_size, 1, device)
}

/// Decodes the sources of `references` with `strategy`, in batches of `batch_size` shared out
/// among `workers` threads ([`decode_all_parallel`]), and scores the best hypothesis of each;
/// also returns the predictions (as text) in input order.
pub fn evaluate_with<B: Backend, S: Strategy<B, Seq2Seq<B>> + Sync>(
    model: &Seq2Seq<B>,
    codec: &TextCodec,
    references: &[Reference],
    strategy: &S,
    batch_size: usize,
    workers: usize,
    device: &B::Device,
) -> (Scores, Vec<String>) {
    let sources: Vec<Vec<u32>> = references
        .iter()
        .map(|r| codec.encode_source(&r.source).0)
        .collect();
    let hyps = decode_all_parallel(
        model,
        strategy,
        &sources,
        BatchSize::Sentences(batch_size),
        device,
        workers,
    );
    let predicted: Vec<Vec<String>> = hyps
        .iter()
        .map(|h| codec.decode_target_tokens(&h[0].tokens))
        .collect();
    let refs: Vec<Vec<Vec<String>>> = references
        .iter()
        .map(|r| r.targets.iter().map(|t| codec.target_tokens(t)).collect())
        .collect();
    let scores = score(&predicted, &refs);
    let text = predicted
        .iter()
        .map(|p| codec.target_tokenizer.detokenize(p))
        .collect();
    (scores, text)
}

/// SplitMix64's finaliser: a well-mixed 64-bit value of `x`.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of one random stream of a step: the run's seed, the step and a stream number.
fn step_seed(seed: u64, step: usize, stream: u64) -> u64 {
    splitmix(splitmix(seed ^ splitmix(step as u64)) ^ stream)
}

/// Scheduled sampling's stream (dropout streams are numbered by their share's first row).
const SAMPLING_STREAM: u64 = u64::MAX;

/// The encoded data of a run.
struct Data {
    train: Vec<Example>,
    lengths: Vec<(usize, usize)>,
    valid: Vec<Example>,
    valid_pairs: Vec<Pair>,
    valid_refs: Vec<Reference>,
}

/// A training run: the model, the optimizer, the data and the run folder; see the
/// [module](self) documentation.
pub struct Trainer<B: AutodiffBackend> {
    config: TrainConfig,
    task: String,
    model_config: Seq2SeqConfig,
    codec: TextCodec,
    model: Seq2Seq<B>,
    optim: Adam<B>,
    data: Data,
    batch_size: BatchSize,
    total_steps: usize,
    schedule: LrSchedule,
    metric: BestMetric,
    state: TrainingState,
    run: RunFolder,
    device: B::Device,
    notes: Vec<String>,
    history: Vec<EpochLog>,
    best_epoch: usize,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A new run in `run` (opened with [`OpenMode::New`](crate::run::OpenMode) or
    /// `Overwrite`): a model initialised from `config.seed` (its vocabulary sizes set from
    /// `codec`, its embeddings from the configured word vectors), or `initial` (fine-tuning:
    /// another model's weights, a fresh optimizer). `settings` goes to the run's
    /// `config.json` (the CLI stores its options there).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        task: &str,
        mut model_config: Seq2SeqConfig,
        codec: TextCodec,
        train_pairs: &[Pair],
        valid_pairs: &[Pair],
        config: TrainConfig,
        run: RunFolder,
        settings: &serde_json::Value,
        initial: Option<Seq2Seq<B>>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        model_config.src_vocab = codec.source_vocab.len();
        model_config.tgt_vocab = codec.target_vocab.len();
        model_config.validate()?;
        let mut notes = Vec::new();
        let model = match initial {
            Some(model) => {
                let (want, got) = (
                    parameter_shapes(&model_config.init::<B>(device)),
                    parameter_shapes(&model),
                );
                if want != got {
                    return Err(TrainError::Config(
                        "the initial model's parameters do not match the model configuration"
                            .into(),
                    ));
                }
                model
            }
            None => {
                let mut model: Seq2Seq<B> =
                    s2s_tensor::backend::seeded_module::<B, _>(device, config.seed, || {
                        model_config.init(device)
                    });
                for (source, path, vocab) in [
                    (true, &config.source_embeddings, &codec.source_vocab),
                    (false, &config.target_embeddings, &codec.target_vocab),
                ] {
                    let Some(path) = path else { continue };
                    let vectors = s2s_data::read_word_vectors(path, vocab)?;
                    if vectors.dim != model_config.d_embed {
                        return Err(TrainError::Data(format!(
                            "{}: vectors of size {}, but the model's embeddings have size {} (--embed)",
                            path.display(),
                            vectors.dim,
                            model_config.d_embed
                        )));
                    }
                    notes.push(format!(
                        "{}: {} of {} {} tokens initialised from {} vectors",
                        path.display(),
                        vectors.rows.len(),
                        vocab.len() - s2s_data::Vocab::SPECIALS.len(),
                        if source { "source" } else { "target" },
                        vectors.in_file
                    ));
                    model = model.with_embedding_rows(source, &vectors.rows)?;
                }
                model
            }
        };
        run.write_config(settings)?;
        let state = TrainingState {
            format: STATE_FORMAT,
            config: config.clone(),
            step: 0,
            epoch: 1,
            batch: 0,
            epoch_loss: (0.0, 0),
            window: Window::default(),
            best: None,
            bad_validations: 0,
            validated_at: None,
            elapsed_seconds: 0.0,
            moments: Vec::new(),
        };
        let optim = config.adam.init::<B>(config.workers);
        Self::assemble(
            task, model_config, codec, model, optim, train_pairs, valid_pairs, state, run,
            notes, device,
        )
    }

    /// Continues the run in `run` (opened with [`OpenMode::Resume`](crate::run::OpenMode))
    /// from its `last/` checkpoint: weights, optimizer moments, position in the data, best
    /// score and patience. `config`, if given, replaces the saved settings (for example more
    /// epochs); with the saved ones, the resumed run ends exactly as the uninterrupted run
    /// would have.
    pub fn resume(
        run: RunFolder,
        train_pairs: &[Pair],
        valid_pairs: &[Pair],
        config: Option<TrainConfig>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let last = run.last();
        let checkpoint = Checkpoint::<B>::load(&last, device)?;
        let (mut state, moments) = crate::state::read(&last)?;
        if let Some(config) = config {
            state.config = config;
        }
        state.config.validate()?;
        let mut optim = state.config.adam.init::<B>(state.config.workers);
        optim
            .import(&checkpoint.model, moments)
            .map_err(|message| CheckpointError::Invalid {
                path: last.join(crate::state::OPTIMIZER),
                message,
            })?;
        run.truncate_metrics(state.step)?;
        run.log(&json!({ "event": "resume", "step": state.step, "epoch": state.epoch }))?;
        let notes = vec![format!(
            "resuming {} at step {} (epoch {}, batch {})",
            run.dir().display(),
            state.step,
            state.epoch,
            state.batch
        )];
        Self::assemble(
            &checkpoint.meta.task,
            checkpoint.meta.model,
            checkpoint.codec,
            checkpoint.model,
            optim,
            train_pairs,
            valid_pairs,
            state,
            run,
            notes,
            device,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        task: &str,
        model_config: Seq2SeqConfig,
        codec: TextCodec,
        model: Seq2Seq<B>,
        optim: Adam<B>,
        train_pairs: &[Pair],
        valid_pairs: &[Pair],
        state: TrainingState,
        run: RunFolder,
        notes: Vec<String>,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        if train_pairs.is_empty() || valid_pairs.is_empty() {
            return Err(TrainError::Data(format!(
                "need training and validation pairs (got {} and {})",
                train_pairs.len(),
                valid_pairs.len()
            )));
        }
        let config = state.config.clone();
        let train = codec.encode_pairs(train_pairs);
        let lengths: Vec<(usize, usize)> = train
            .iter()
            .map(|e| (e.source.len(), e.target.len()))
            .collect();
        let data = Data {
            lengths,
            train,
            valid: codec.encode_pairs(valid_pairs),
            valid_pairs: valid_pairs.to_vec(),
            valid_refs: group_references(valid_pairs),
        };
        let batch_size = match config.batch_tokens {
            Some(n) => BatchSize::Tokens(n),
            None => BatchSize::Sentences(config.batch_size),
        };
        let steps_per_epoch = plan_training_batches(&data.lengths, batch_size, config.seed).len();
        let total_steps = config
            .max_steps
            .unwrap_or(usize::MAX)
            .min(steps_per_epoch.saturating_mul(config.epochs));
        let schedule = LrSchedule {
            base: config.lr,
            warmup: config.warmup,
            decay: match config.decay {
                Decay::Cosine { total: 0, floor } => Decay::Cosine {
                    total: total_steps,
                    floor,
                },
                d => d,
            },
        };
        let metric = config
            .best_metric
            .unwrap_or_else(|| BestMetric::for_task(task));
        Ok(Trainer {
            config,
            task: task.to_string(),
            model_config,
            codec,
            model,
            optim,
            data,
            batch_size,
            total_steps,
            schedule,
            metric,
            state,
            run,
            device: device.clone(),
            notes,
            history: Vec::new(),
            best_epoch: 0,
        })
    }

    /// The model as it stands.
    pub fn model(&self) -> &Seq2Seq<B> {
        &self.model
    }

    /// Where the run stands.
    pub fn state(&self) -> &TrainingState {
        &self.state
    }

    /// The run folder.
    pub fn run_folder(&self) -> &RunFolder {
        &self.run
    }

    /// The metric that picks `best/`.
    pub fn best_metric(&self) -> BestMetric {
        self.metric
    }

    /// Steps the run takes in all (`max_steps`, or every batch of every epoch).
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// One optimizer step on the batch of `indices` (rows of the training data); returns the
    /// batch's mean loss per target token, its target tokens and the gradient norm before
    /// clipping.
    fn step(&mut self, indices: &[usize]) -> (f64, usize, f64) {
        let config = &self.config;
        let step = self.state.step;
        let examples: Vec<&Example> = indices.iter().map(|&i| &self.data.train[i]).collect();
        let ratio = config.teacher_forcing.ratio(step);
        // Scheduled sampling draws its flags for the whole batch, whatever the workers.
        let flags: Option<Vec<Vec<bool>>> = (ratio < 1.0).then(|| {
            let mut rng = StdRng::seed_from_u64(step_seed(config.seed, step, SAMPLING_STREAM));
            let steps = examples.iter().map(|e| e.target.len() + 1).max();
            (0..steps.unwrap_or(0))
                .map(|t| {
                    (0..examples.len())
                        .map(|_| t > 0 && rng.random::<f64>() >= ratio)
                        .collect()
                })
                .collect()
        });
        let seed = config.seed;
        let forward = |m: &Seq2Seq<B>, batch: &TrainingBatch<B>, first: usize| {
            let (source, lengths, input) = (
                batch.source.clone(),
                &batch.source_lengths,
                batch.target_input.clone(),
            );
            // Each share draws its dropout masks from its own stream.
            s2s_nn::dropout::with_seed(step_seed(seed, step, first as u64), || match &flags {
                None => m.forward(source, lengths, input),
                Some(flags) => {
                    let steps = input.dims()[1];
                    let rows = first..first + batch.len();
                    let share: Vec<Vec<bool>> = flags[..steps]
                        .iter()
                        .map(|f| f[rows.clone()].to_vec())
                        .collect();
                    m.forward_scheduled(source, lengths, input, &share)
                }
            })
        };
        let out = batch_gradients(
            &self.model,
            &examples,
            config.label_smoothing,
            config.workers,
            &self.device,
            forward,
        );
        let mut grads = out.grads;
        let norm = clip_global_norm(&self.model, &mut grads, config.clip_norm);
        let model = self.model.clone();
        self.model = self.optim.step(self.schedule.at(step), model, grads);
        self.state.step += 1;
        (out.loss, out.tokens, norm)
    }

    /// Validates the model: loss, greedy decoding scored against the references, BLEU and
    /// chrF. Logs it, writes `best/` if it is the best so far, and updates the patience
    /// count.
    fn validate(
        &mut self,
        tokens_per_second: f64,
        elapsed: f64,
        events: &mut dyn FnMut(TrainEvent),
    ) -> Result<(), TrainError> {
        let config = &self.config;
        let valid_model = self.model.valid();
        let valid_loss =
            validation_loss(&valid_model, &self.data.valid, config.batch_size, &self.device);
        let (scores, predictions) = evaluate_with(
            &valid_model,
            &self.codec,
            &self.data.valid_refs,
            &Greedy::new(config.max_decode_len),
            config.batch_size,
            config.workers,
            &self.device,
        );
        let (bleu, chrf) =
            corpus_bleu_chrf(&self.data.valid_pairs, &self.data.valid_refs, &predictions);
        let (sum, tokens) = self.state.epoch_loss;
        let log = EpochLog {
            epoch: self.state.epoch,
            steps: self.state.step,
            train_loss: sum / tokens.max(1) as f64,
            valid_loss,
            valid_perplexity: valid_loss.exp(),
            scores,
            bleu,
            chrf,
            tokens_per_second,
            elapsed_seconds: elapsed,
        };
        let cost = self.metric.cost(&log);
        let better = self
            .state
            .best
            .is_none_or(|(c, l, _)| (cost, valid_loss) < (c, l));
        if better {
            self.state.best = Some((cost, valid_loss, self.state.step));
            self.state.bad_validations = 0;
            self.best_epoch = log.epoch;
            Checkpoint {
                meta: self.meta(json!({ "validation": log, "train": config })),
                codec: self.codec.clone(),
                model: valid_model,
            }
            .save(&self.run.best())?;
        } else {
            self.state.bad_validations += 1;
        }
        self.state.validated_at = Some(self.state.step);
        self.run.log(&json!({
            "event": "valid",
            "step": log.steps,
            "epoch": log.epoch,
            "train_loss": log.train_loss,
            "loss": log.valid_loss,
            "perplexity": log.valid_perplexity,
            "exact_match": log.scores.exact_match,
            "wer": log.scores.wer,
            "per": log.scores.ter,
            "bleu": log.bleu,
            "chrf": log.chrf,
            "best_metric": self.metric.name(),
            "best": better,
            "tokens_per_second": log.tokens_per_second,
            "elapsed_seconds": log.elapsed_seconds,
        }))?;
        events(TrainEvent::Validated {
            log: &log,
            best: better,
        });
        self.history.push(log);
        Ok(())
    }

    fn meta(&self, summary: serde_json::Value) -> CheckpointMeta {
        CheckpointMeta {
            format: FORMAT,
            task: self.task.clone(),
            model: self.model_config.clone(),
            source_tokenizer: self.codec.source_tokenizer.clone(),
            target_tokenizer: self.codec.target_tokenizer.clone(),
            max_decode_len: self.config.max_decode_len,
            summary,
            s2s_version: String::new(),
        }
    }

    /// Writes `last/`: the model folder with the training state and optimizer moments
    /// beside its weights, atomically and durably; `metrics.jsonl` is synced first.
    pub fn save_last(&mut self, elapsed: f64) -> Result<(), TrainError> {
        self.state.elapsed_seconds = elapsed;
        self.run.sync_metrics()?;
        let checkpoint = Checkpoint {
            meta: self.meta(json!({ "step": self.state.step, "epoch": self.state.epoch })),
            codec: self.codec.clone(),
            model: self.model.clone(),
        };
        let moments = self.optim.export(&self.model);
        let state = &self.state;
        crate::durable::write_dir(&self.run.last(), |dir| {
            checkpoint.write_files(dir)?;
            crate::state::write(dir, state, &moments)
        })?;
        Ok(())
    }

    /// Trains until the run ends (every epoch or `max_steps`, the time limit, `patience`)
    /// or `stop` is raised, which is checked after every step: the step finishes, `last/` is
    /// written and the run returns [`Outcome::Interrupted`]. Every validation writes `best/`
    /// when it improves and then `last/`, as does every `save_every`-th step and the end.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        events: &mut dyn FnMut(TrainEvent),
    ) -> Result<TrainReport, TrainError> {
        for note in std::mem::take(&mut self.notes) {
            events(TrainEvent::Note(note));
        }
        let started = Instant::now();
        let before = self.state.elapsed_seconds;
        let elapsed = move || before + started.elapsed().as_secs_f64();
        let outcome = 'run: loop {
            let finished = self.state.step >= self.total_steps || self.state.epoch > self.config.epochs;
            if finished {
                if self.state.validated_at != Some(self.state.step) && self.state.step > 0 {
                    self.validate(0.0, elapsed(), events)?;
                }
                break Outcome::Finished;
            }
            let epoch = self.state.epoch;
            let plan = plan_training_batches(
                &self.data.lengths,
                self.batch_size,
                self.config.seed.wrapping_add(epoch as u64),
            );
            events(TrainEvent::Epoch {
                epoch,
                epochs: self.config.epochs,
                batches: plan.len(),
                done: self.state.batch,
            });
            let (mut tokens, mut clock) = (0usize, Instant::now());
            let mut window_clock = Instant::now();
            while self.state.batch < plan.len() {
                let (loss, n, norm) = self.step(&plan[self.state.batch]);
                self.state.batch += 1;
                tokens += n;
                let s = &mut self.state;
                s.epoch_loss.0 += loss * n as f64;
                s.epoch_loss.1 += n;
                s.window.loss += loss * n as f64;
                s.window.tokens += n;
                s.window.grad_norm += norm;
                s.window.steps += 1;
                let step = s.step;
                let rate = |tokens: usize, since: Instant| {
                    tokens as f64 / since.elapsed().as_secs_f64().max(1e-9)
                };
                events(TrainEvent::Step {
                    step,
                    loss: s.epoch_loss.0 / s.epoch_loss.1.max(1) as f64,
                    tokens_per_second: rate(tokens, clock),
                });
                if step % self.config.log_every == 0 {
                    let w = std::mem::take(&mut s.window);
                    self.run.log(&json!({
                        "event": "train",
                        "step": step,
                        "epoch": epoch,
                        "loss": w.loss / w.tokens.max(1) as f64,
                        "lr": self.schedule.at(step - 1),
                        "grad_norm": w.grad_norm / w.steps.max(1) as f64,
                        "tokens_per_second": rate(w.tokens, window_clock),
                        "elapsed_seconds": elapsed(),
                    }))?;
                    window_clock = Instant::now();
                }
                let out_of_time = self
                    .config
                    .time_limit_secs
                    .is_some_and(|t| elapsed() >= t);
                let at_end = step >= self.total_steps || out_of_time;
                let validate = at_end || self.config.valid_every.is_some_and(|n| step % n == 0);
                if validate {
                    self.validate(rate(tokens, clock), elapsed(), events)?;
                    (tokens, clock) = (0, Instant::now());
                }
                let patience_out = validate
                    && self
                        .config
                        .patience
                        .is_some_and(|p| self.state.bad_validations >= p);
                let interrupted = stop.load(Ordering::SeqCst);
                if validate || interrupted || step % self.config.save_every == 0 {
                    self.save_last(elapsed())?;
                    events(TrainEvent::Saved { step });
                }
                if interrupted {
                    break 'run Outcome::Interrupted;
                }
                if patience_out {
                    break 'run Outcome::EarlyStopped;
                }
                if out_of_time {
                    break 'run Outcome::OutOfTime;
                }
                if at_end {
                    break 'run Outcome::Finished;
                }
            }
            // The epoch is done: validate it (unless that just happened), then move on.
            if self.state.validated_at != Some(self.state.step) {
                self.validate(
                    tokens as f64 / clock.elapsed().as_secs_f64().max(1e-9),
                    elapsed(),
                    events,
                )?;
            }
            let patience_out = self
                .config
                .patience
                .is_some_and(|p| self.state.bad_validations >= p);
            self.state.epoch += 1;
            self.state.batch = 0;
            self.state.epoch_loss = (0.0, 0);
            self.save_last(elapsed())?;
            events(TrainEvent::Saved {
                step: self.state.step,
            });
            if patience_out {
                break Outcome::EarlyStopped;
            }
            if stop.load(Ordering::SeqCst) {
                break Outcome::Interrupted;
            }
        };
        self.run.log(&json!({
            "event": "end",
            "step": self.state.step,
            "outcome": outcome,
        }))?;
        self.run.sync_metrics()?;
        Ok(TrainReport {
            history: self.history.clone(),
            best_epoch: self.best_epoch,
            best_step: self.state.best.map_or(0, |b| b.2),
            outcome,
            steps: self.state.step,
        })
    }
}

/// Trains a model in a new run folder `out` ([`Trainer::new`] then [`Trainer::run`]), with
/// no stop flag and no events. The best model is `out/best/` (which [`Checkpoint::load`]
/// finds from `out`).
///
/// `model_config`'s vocabulary sizes are set from `codec`.
#[allow(clippy::too_many_arguments)]
pub fn train<B: AutodiffBackend>(
    task: &str,
    model_config: Seq2SeqConfig,
    codec: TextCodec,
    train_pairs: &[Pair],
    valid_pairs: &[Pair],
    config: &TrainConfig,
    out: &Path,
    device: &B::Device,
) -> Result<TrainReport, TrainError> {
    let run = RunFolder::open(out, crate::run::OpenMode::New)?;
    let settings = json!({ "task": task, "model": model_config, "train": config });
    let mut trainer = Trainer::<B>::new(
        task,
        model_config,
        codec,
        train_pairs,
        valid_pairs,
        config.clone(),
        run,
        &settings,
        None,
        device,
    )?;
    trainer.run(&AtomicBool::new(false), &mut |_| {})
}
