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
use crate::collective::{
    check_agreement, fingerprint, share_of, Collective, CollectiveError, StepExchange, StepFlags,
};
use crate::metrics::{corpus_bleu_chrf, Scores};
use crate::optim::Adam;
use crate::parallel::{batch_tokens, share_gradients, Share};
use crate::run::{RunError, RunFolder};
use crate::schedule::{Decay, LrSchedule};
use crate::state::{TrainingState, Window, STATE_FORMAT};
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use s2s_data::batch::plan_training_batches;
use s2s_data::corpus::group_references;
use s2s_data::{BatchSize, Example, Pair, Reference, TextCodec, TrainingBatch};
use s2s_decode::Greedy;
use s2s_nn::{Seq2Seq, Seq2SeqConfig};
use s2s_tensor::S2sAutodiffBackend;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub use crate::config::{BestMetric, TrainConfig};
pub use crate::validation::{evaluate, evaluate_with, validation_loss};

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
    /// The peers of a data-parallel run could not work together.
    #[error(transparent)]
    Collective(#[from] CollectiveError),
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
    /// The end of the run: the last kept checkpoints were averaged into `averaged/`, and
    /// the average validated.
    Averaged {
        /// How many checkpoints were averaged.
        checkpoints: usize,
        /// Validation loss of the average.
        valid_loss: f64,
        /// Its validation scores (greedy).
        scores: Scores,
        /// Its validation BLEU.
        bleu: f64,
        /// Its validation chrF.
        chrf: f64,
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

/// What a run starts from, new or resumed.
struct Start<B: AutodiffBackend> {
    task: String,
    model_config: Seq2SeqConfig,
    codec: TextCodec,
    model: Seq2Seq<B>,
    optim: Adam<B>,
    state: TrainingState,
    notes: Vec<String>,
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
    /// The other peers of a data-parallel run ([`Trainer::with_collective`]).
    collective: Option<Box<dyn Collective>>,
    /// The flags all peers agreed on in the last step's all-reduce.
    agreed: StepFlags,
    /// Seconds spent in the steps' all-reduces since the last logged window, and their
    /// number (logged as `exchange_ms` in data-parallel runs).
    exchange: (f64, usize),
}

impl<B: S2sAutodiffBackend> Trainer<B> {
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
                let model: Seq2Seq<B> =
                    s2s_tensor::backend::seeded_module::<B, _>(device, config.seed, || {
                        model_config.init(device)
                    });
                with_word_vectors(model, &model_config, &codec, &config, &mut notes)?
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
        let start = Start {
            task: task.to_string(),
            model_config,
            codec,
            model,
            optim,
            state,
            notes,
        };
        Self::assemble(start, train_pairs, valid_pairs, run, device)
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
        let start = Start {
            task: checkpoint.meta.task,
            model_config: checkpoint.meta.model,
            codec: checkpoint.codec,
            model: checkpoint.model,
            optim,
            state,
            notes,
        };
        Self::assemble(start, train_pairs, valid_pairs, run, device)
    }

    /// The trainer of `start` over the encoded data.
    fn assemble(
        start: Start<B>,
        train_pairs: &[Pair],
        valid_pairs: &[Pair],
        run: RunFolder,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        let Start {
            task,
            model_config,
            codec,
            model,
            optim,
            state,
            notes,
        } = start;
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
            .unwrap_or_else(|| BestMetric::for_task(&task));
        Ok(Trainer {
            config,
            task,
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
            collective: None,
            agreed: StepFlags::default(),
            exchange: (0.0, 0),
        })
    }

    /// Makes this trainer one peer of a data-parallel run ([`crate::collective`]): each step
    /// trains on this peer's share of the batch and sums gradients, loss, tokens and stop
    /// flags with the other peers through `collective`. Every peer must be built the same
    /// way (the same settings but `workers`, data, seed and starting point); this is checked
    /// now, with one all-reduce, and a difference is an error on every peer. Only a peer
    /// whose run folder [writes](RunFolder::writes) (rank 0's) writes checkpoints and logs;
    /// every peer validates (the replicas are equal, so they agree on the best model and on
    /// early stopping).
    pub fn with_collective(
        mut self,
        mut collective: Box<dyn Collective>,
    ) -> Result<Self, TrainError> {
        check_agreement(collective.as_mut(), self.fingerprint())?;
        let shapes = parameter_shapes(&self.model);
        let values: usize = shapes
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() + 1)
            .sum::<usize>()
            + 4;
        self.run.log(&json!({
            "event": "collective",
            "step": self.state.step,
            "peers": collective.peers(),
            "values_per_step": values,
            "bytes_per_step": values * 4,
        }))?;
        self.collective = Some(collective);
        Ok(self)
    }

    /// Leaves the data-parallel group (if any) after a run; see [`Collective::finish`].
    pub fn finish_collective(&mut self) -> Result<(), TrainError> {
        if let Some(c) = self.collective.as_deref_mut() {
            c.finish()?;
        }
        Ok(())
    }

    /// A hash of what every peer of a data-parallel run must share: the settings (but the
    /// node-local `workers`), the model configuration, the encoded data, the position in the
    /// run and the weights.
    fn fingerprint(&self) -> u64 {
        let mut config = self.config.clone();
        config.workers = 0;
        let mut bytes = serde_json::to_vec(&json!({
            "task": self.task,
            "train": config,
            "model": self.model_config,
            "step": self.state.step,
            "epoch": self.state.epoch,
            "batch": self.state.batch,
        }))
        .expect("JSON serialises");
        for e in self.data.train.iter().chain(&self.data.valid) {
            for &id in e.source.iter().chain(&e.target) {
                bytes.extend((id as u64).to_le_bytes());
            }
            bytes.push(0xff);
        }
        for tensor in s2s_nn::weights::named_tensors(&self.model).values() {
            bytes.extend(tensor.values.iter().flat_map(|v| v.to_le_bytes()));
        }
        fingerprint(&bytes)
    }

    /// The stop and out-of-time decisions after a step: the peers' agreed flags in a
    /// data-parallel run, this process's own otherwise.
    fn flags_now(&self, stop: &AtomicBool, clock: &Clock) -> StepFlags {
        if self.collective.is_some() {
            self.agreed
        } else {
            self.local_flags(stop, clock)
        }
    }

    /// This process's stop request and time limit.
    fn local_flags(&self, stop: &AtomicBool, clock: &Clock) -> StepFlags {
        StepFlags {
            stop: stop.load(Ordering::SeqCst),
            out_of_time: self
                .config
                .time_limit_secs
                .is_some_and(|t| clock.elapsed() >= t),
        }
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

    /// One optimizer step on the batch of `indices` (rows of the training data; in a
    /// data-parallel run this peer's share of them, `step_flags` exchanged with the peers);
    /// returns the batch's mean loss per target token, its target tokens and the gradient
    /// norm before clipping.
    fn step(
        &mut self,
        indices: &[usize],
        step_flags: StepFlags,
    ) -> Result<(f64, usize, f64), TrainError> {
        let config = &self.config;
        let step = self.state.step;
        let examples: Vec<&Example> = indices.iter().map(|&i| &self.data.train[i]).collect();
        let ratio = config.teacher_forcing.ratio(step);
        // Scheduled sampling draws its flags for the whole batch, whatever the workers.
        let flags: Option<Vec<Vec<bool>>> = (ratio < 1.0).then(|| {
            let mut rng = ChaCha12Rng::seed_from_u64(step_seed(config.seed, step, SAMPLING_STREAM));
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
        let total = batch_tokens(&examples);
        let rows = match &self.collective {
            Some(c) => share_of(examples.len(), c.rank(), c.peers()),
            None => 0..examples.len(),
        };
        let share = Share {
            first_row: rows.start,
            batch_tokens: total,
        };
        let out = share_gradients(
            &self.model,
            &examples[rows],
            share,
            config.label_smoothing,
            config.workers,
            &self.device,
            forward,
        );
        let clip_norm = config.clip_norm;
        let (loss, tokens, mut grads) = match self.collective.as_deref_mut() {
            None => (out.loss, out.tokens, out.grads),
            Some(c) => {
                let started = Instant::now();
                let summed = StepExchange::run::<B, _>(
                    &self.model,
                    out.grads,
                    out.loss,
                    out.tokens,
                    step_flags,
                    c,
                )?;
                if summed.tokens != total {
                    return Err(CollectiveError::Mismatch(format!(
                        "step {step}: the peers' shares hold {} target tokens, the batch {total}",
                        summed.tokens
                    ))
                    .into());
                }
                self.agreed = summed.flags;
                self.exchange.0 += started.elapsed().as_secs_f64();
                self.exchange.1 += 1;
                (summed.loss, summed.tokens, summed.grads)
            }
        };
        let norm = clip_global_norm(&self.model, &mut grads, clip_norm);
        let model = self.model.clone();
        self.model = self.optim.step(self.schedule.at(step), model, grads);
        self.state.step += 1;
        Ok((loss, tokens, norm))
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
        let (valid_loss, scores, bleu, chrf) = self.measure(&valid_model);
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
        let checkpoint = Checkpoint {
            meta: self.meta(json!({ "validation": log, "train": config })),
            codec: self.codec.clone(),
            model: valid_model,
        };
        if better {
            self.state.best = Some((cost, valid_loss, self.state.step));
            self.state.bad_validations = 0;
            self.best_epoch = log.epoch;
            if self.run.writes() {
                checkpoint.save(&self.run.best())?;
            }
        } else {
            self.state.bad_validations += 1;
        }
        self.keep_checkpoint(&checkpoint)?;
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

    /// A model's validation loss, greedy scores, BLEU and chrF on the validation set.
    fn measure(&self, model: &Seq2Seq<B::InnerBackend>) -> (f64, Scores, f64, f64) {
        let config = &self.config;
        let loss = validation_loss(model, &self.data.valid, config.batch_size, &self.device);
        let (scores, predictions) = evaluate_with(
            model,
            &self.codec,
            &self.data.valid_refs,
            &Greedy::new(config.max_decode_len),
            config.batch_size,
            config.workers,
            &self.device,
        );
        let (bleu, chrf) =
            corpus_bleu_chrf(&self.data.valid_pairs, &self.data.valid_refs, &predictions);
        (loss, scores, bleu, chrf)
    }

    /// With `keep_checkpoints`, saves a validated model as `checkpoints/step-NNNNNNNN/` and
    /// removes the oldest kept ones beyond that number (only those: nothing else there).
    fn keep_checkpoint(&self, checkpoint: &Checkpoint<B::InnerBackend>) -> Result<(), TrainError> {
        let keep = self.config.keep_checkpoints;
        if keep == 0 || !self.run.writes() {
            return Ok(());
        }
        let dir = self.run.checkpoints();
        std::fs::create_dir_all(&dir).map_err(crate::durable::at(&dir))?;
        checkpoint.save(&dir.join(format!("step-{:08}", self.state.step)))?;
        let kept = self.run.kept_checkpoints()?;
        for old in &kept[..kept.len().saturating_sub(keep)] {
            std::fs::remove_dir_all(old).map_err(crate::durable::at(old))?;
        }
        crate::durable::sync_dir(&dir)?;
        Ok(())
    }

    /// With `average_last`, averages the last kept checkpoints into `averaged/`, validates
    /// the average and logs it (`"event": "averaged"`).
    fn average(&mut self, events: &mut dyn FnMut(TrainEvent)) -> Result<(), TrainError> {
        let n = self.config.average_last;
        if n == 0 || !self.run.writes() {
            return Ok(());
        }
        let kept = self.run.kept_checkpoints()?;
        let last = &kept[kept.len().saturating_sub(n)..];
        if last.is_empty() {
            return Ok(());
        }
        let averaged = crate::average::average_checkpoints::<B::InnerBackend>(last, &self.device)?;
        let (valid_loss, scores, bleu, chrf) = self.measure(&averaged.model);
        averaged.save(&self.run.averaged())?;
        let names: Vec<String> = last
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        self.run.log(&json!({
            "event": "averaged",
            "step": self.state.step,
            "checkpoints": names,
            "loss": valid_loss,
            "exact_match": scores.exact_match,
            "wer": scores.wer,
            "per": scores.ter,
            "bleu": bleu,
            "chrf": chrf,
        }))?;
        events(TrainEvent::Averaged {
            checkpoints: last.len(),
            valid_loss,
            scores,
            bleu,
            chrf,
        });
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
        if !self.run.writes() {
            return Ok(());
        }
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
    /// when it improves and then `last/`, as does every `save_every`-th step and the end of
    /// every epoch.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        events: &mut dyn FnMut(TrainEvent),
    ) -> Result<TrainReport, TrainError> {
        for note in std::mem::take(&mut self.notes) {
            events(TrainEvent::Note(note));
        }
        let clock = Clock {
            started: Instant::now(),
            before: self.state.elapsed_seconds,
        };
        let outcome = loop {
            if self.state.step >= self.total_steps || self.state.epoch > self.config.epochs {
                if self.state.validated_at != Some(self.state.step) && self.state.step > 0 {
                    self.validate(0.0, clock.elapsed(), events)?;
                }
                break Outcome::Finished;
            }
            if let Some(outcome) = self.train_epoch(stop, &clock, events)? {
                break outcome;
            }
        };
        if outcome != Outcome::Interrupted {
            self.average(events)?;
        }
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

    /// Trains the rest of the epoch in progress, validates it, moves on to the next and
    /// writes `last/`; returns the outcome if the run ends inside it.
    fn train_epoch(
        &mut self,
        stop: &AtomicBool,
        clock: &Clock,
        events: &mut dyn FnMut(TrainEvent),
    ) -> Result<Option<Outcome>, TrainError> {
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
        let mut meter = Meter::new();
        while self.state.batch < plan.len() {
            let flags = self.local_flags(stop, clock);
            let (loss, tokens, norm) = self.step(&plan[self.state.batch], flags)?;
            self.state.batch += 1;
            self.record(loss, tokens, norm, &mut meter, clock, events)?;
            if let Some(outcome) = self.after_step(stop, &mut meter, clock, events)? {
                return Ok(Some(outcome));
            }
        }
        // The epoch is done: validate it (unless that just happened), then move on.
        if self.state.validated_at != Some(self.state.step) {
            self.validate(meter.rate(), clock.elapsed(), events)?;
        }
        let patience_out = self.out_of_patience();
        self.state.epoch += 1;
        self.state.batch = 0;
        self.state.epoch_loss = (0.0, 0);
        self.save_last(clock.elapsed())?;
        events(TrainEvent::Saved {
            step: self.state.step,
        });
        Ok(if patience_out {
            Some(Outcome::EarlyStopped)
        } else if self.flags_now(stop, clock).stop {
            Some(Outcome::Interrupted)
        } else {
            None
        })
    }

    /// Adds a step's loss, tokens and gradient norm to the epoch's and the log window's
    /// sums, reports the step, and logs the window every `log_every` steps.
    fn record(
        &mut self,
        loss: f64,
        tokens: usize,
        norm: f64,
        meter: &mut Meter,
        clock: &Clock,
        events: &mut dyn FnMut(TrainEvent),
    ) -> Result<(), TrainError> {
        meter.tokens += tokens;
        meter.window_tokens += tokens;
        let s = &mut self.state;
        s.epoch_loss.0 += loss * tokens as f64;
        s.epoch_loss.1 += tokens;
        s.window.loss += loss * tokens as f64;
        s.window.tokens += tokens;
        s.window.grad_norm += norm;
        s.window.steps += 1;
        let step = s.step;
        events(TrainEvent::Step {
            step,
            loss: s.epoch_loss.0 / s.epoch_loss.1.max(1) as f64,
            tokens_per_second: meter.rate(),
        });
        if step.is_multiple_of(self.config.log_every) {
            let w = std::mem::take(&mut s.window);
            let mut event = json!({
                "event": "train",
                "step": step,
                "epoch": s.epoch,
                "loss": w.loss / w.tokens.max(1) as f64,
                "lr": self.schedule.at(step - 1),
                "grad_norm": w.grad_norm / w.steps.max(1) as f64,
                "tokens_per_second": meter.window_rate(),
                "elapsed_seconds": clock.elapsed(),
            });
            if self.collective.is_some() {
                // Milliseconds per step in the all-reduce (waiting for the peers included).
                let (seconds, n) = std::mem::take(&mut self.exchange);
                event["exchange_ms"] = json!(1000.0 * seconds / n.max(1) as f64);
            }
            self.run.log(&event)?;
            meter.window_tokens = 0;
            meter.window_since = Instant::now();
        }
        Ok(())
    }

    /// What follows a step: validation (every `valid_every` steps, and at the end),
    /// `last/` (after a validation, every `save_every` steps, and when stopped), and the
    /// outcome if the run ends here.
    fn after_step(
        &mut self,
        stop: &AtomicBool,
        meter: &mut Meter,
        clock: &Clock,
        events: &mut dyn FnMut(TrainEvent),
    ) -> Result<Option<Outcome>, TrainError> {
        let step = self.state.step;
        let flags = self.flags_now(stop, clock);
        let out_of_time = flags.out_of_time;
        let at_end = step >= self.total_steps || out_of_time;
        let validate = at_end
            || self
                .config
                .valid_every
                .is_some_and(|n| step.is_multiple_of(n));
        if validate {
            self.validate(meter.rate(), clock.elapsed(), events)?;
            meter.tokens = 0;
            meter.since = Instant::now();
        }
        let interrupted = flags.stop;
        if validate || interrupted || step.is_multiple_of(self.config.save_every) {
            self.save_last(clock.elapsed())?;
            events(TrainEvent::Saved { step });
        }
        Ok(if interrupted {
            Some(Outcome::Interrupted)
        } else if validate && self.out_of_patience() {
            Some(Outcome::EarlyStopped)
        } else if out_of_time {
            Some(Outcome::OutOfTime)
        } else if at_end {
            Some(Outcome::Finished)
        } else {
            None
        })
    }

    /// Whether `patience` validations in a row have not improved on the best.
    fn out_of_patience(&self) -> bool {
        self.config
            .patience
            .is_some_and(|p| self.state.bad_validations >= p)
    }
}

/// Seconds of training: those of earlier processes of the run and this one's.
struct Clock {
    started: Instant,
    before: f64,
}

impl Clock {
    fn elapsed(&self) -> f64 {
        self.before + self.started.elapsed().as_secs_f64()
    }
}

/// Target tokens since the last validation and since the last logged window, for the
/// tokens-per-second figures.
struct Meter {
    tokens: usize,
    since: Instant,
    window_tokens: usize,
    window_since: Instant,
}

impl Meter {
    fn new() -> Self {
        Meter {
            tokens: 0,
            since: Instant::now(),
            window_tokens: 0,
            window_since: Instant::now(),
        }
    }

    fn rate(&self) -> f64 {
        self.tokens as f64 / self.since.elapsed().as_secs_f64().max(1e-9)
    }

    fn window_rate(&self) -> f64 {
        self.window_tokens as f64 / self.window_since.elapsed().as_secs_f64().max(1e-9)
    }
}

/// `model` with the embedding rows of the tokens found in the configured word-vector files
/// (`source_embeddings`, `target_embeddings`); a note for each file.
fn with_word_vectors<B: S2sAutodiffBackend>(
    mut model: Seq2Seq<B>,
    model_config: &Seq2SeqConfig,
    codec: &TextCodec,
    config: &TrainConfig,
    notes: &mut Vec<String>,
) -> Result<Seq2Seq<B>, TrainError> {
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
    Ok(model)
}

/// Trains a model in a new run folder `out` ([`Trainer::new`] then [`Trainer::run`]), with
/// no stop flag and no events. The best model is `out/best/` (which [`Checkpoint::load`]
/// finds from `out`).
///
/// `model_config`'s vocabulary sizes are set from `codec`.
#[allow(clippy::too_many_arguments)]
pub fn train<B: S2sAutodiffBackend>(
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
