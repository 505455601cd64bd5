//! The training loop: batches, loss, gradient clipping, Adam, validation and checkpoints.

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointMeta, FORMAT};
use crate::loss::masked_nll_sum;
use crate::metrics::{score, Scores};
use crate::optim::AdamConfig;
use crate::parallel::batch_gradients;
use crate::schedule::{Decay, LrSchedule, TeacherForcing};
use burn::config::Config;
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::StdRng, Rng, SeedableRng};
use s2s_data::batch::{plan_inference_batches, plan_training_batches};
use s2s_data::corpus::group_references;
use s2s_data::{BatchSize, Example, Pair, Reference, TextCodec, TrainingBatch};
use s2s_decode::{decode_all_parallel, Greedy, Strategy};
use s2s_nn::{Seq2Seq, Seq2SeqConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

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
    /// Seed for weights, batch order and scheduled sampling.
    #[config(default = 42)]
    pub seed: u64,
    /// Maximum output length when decoding the validation set.
    #[config(default = 50)]
    pub max_decode_len: usize,
    /// Stop after this many optimizer steps (the epoch in progress is then validated); a
    /// cosine decay ends at this step.
    pub max_steps: Option<usize>,
    /// Stop training after this many seconds (checked after every step); the epoch in
    /// progress is then validated and the run ends. The learning-rate schedule does not
    /// depend on time, so a run that finishes its steps within the limit is reproducible.
    pub time_limit_secs: Option<f64>,
    /// Pretrained word vectors (GloVe / word2vec text) for the source embeddings; tokens
    /// not in the file keep their random initialisation.
    pub source_embeddings: Option<std::path::PathBuf>,
    /// Pretrained word vectors for the target embeddings.
    pub target_embeddings: Option<std::path::PathBuf>,
    /// Threads that share the rows of every batch ([`crate::parallel`]); the step is the
    /// same whatever their number. On a CPU, one per core, each with one intra-op thread,
    /// is the fastest.
    #[config(default = 1)]
    pub workers: usize,
    /// Show a progress bar.
    #[config(default = true)]
    pub progress: bool,
    /// Print one line per epoch on stderr.
    #[config(default = true)]
    pub log_epochs: bool,
}

/// An error during training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The data cannot be trained on.
    #[error("{0}")]
    Data(String),
    /// The model configuration is invalid.
    #[error(transparent)]
    Model(#[from] s2s_nn::ModelError),
    /// An input file (word vectors) is invalid.
    #[error(transparent)]
    Input(#[from] s2s_data::DataError),
    /// A checkpoint could not be written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// What one epoch achieved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based epoch.
    pub epoch: usize,
    /// Optimizer steps so far.
    pub steps: usize,
    /// Mean training loss of the epoch (per target token).
    pub train_loss: f64,
    /// Validation loss per target token (no label smoothing).
    pub valid_loss: f64,
    /// `exp(valid_loss)`.
    pub valid_perplexity: f64,
    /// Greedy-decoding metrics on the validation set.
    pub scores: Scores,
    /// Target tokens per second during training.
    pub tokens_per_second: f64,
    /// Wall-clock seconds since the start of training.
    pub elapsed_seconds: f64,
}

/// The outcome of [`train`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    /// Every epoch, in order.
    pub history: Vec<EpochLog>,
    /// The epoch whose checkpoint was kept.
    pub best_epoch: usize,
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

/// Trains a model and keeps the best checkpoint (lowest validation WER, then loss) in `out`.
///
/// `model_config`'s vocabulary sizes are set from `codec`.
#[allow(clippy::too_many_arguments)]
pub fn train<B: AutodiffBackend>(
    task: &str,
    mut model_config: Seq2SeqConfig,
    codec: TextCodec,
    train_pairs: &[Pair],
    valid_pairs: &[Pair],
    config: &TrainConfig,
    out: &Path,
    device: &B::Device,
) -> Result<TrainReport, TrainError> {
    if train_pairs.is_empty() || valid_pairs.is_empty() {
        return Err(TrainError::Data(format!(
            "need training and validation pairs (got {} and {})",
            train_pairs.len(),
            valid_pairs.len()
        )));
    }
    model_config.src_vocab = codec.source_vocab.len();
    model_config.tgt_vocab = codec.target_vocab.len();
    model_config.validate()?;
    let mut model: Seq2Seq<B> =
        s2s_tensor::backend::seeded::<B, _>(device, config.seed, || model_config.init(device));
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
        if config.log_epochs {
            eprintln!(
                "{}: {} of {} {} tokens initialised from {} vectors",
                path.display(),
                vectors.rows.len(),
                vocab.len() - s2s_data::Vocab::SPECIALS.len(),
                if source { "source" } else { "target" },
                vectors.in_file
            );
        }
        model = model.with_embedding_rows(source, &vectors.rows)?;
    }
    let mut optim = AdamConfig::new().init::<B>(config.workers);
    let train_examples = codec.encode_pairs(train_pairs);
    let valid_examples = codec.encode_pairs(valid_pairs);
    let valid_refs = group_references(valid_pairs);
    let lengths: Vec<(usize, usize)> = train_examples
        .iter()
        .map(|e| (e.source.len(), e.target.len()))
        .collect();
    let size = match config.batch_tokens {
        Some(n) => BatchSize::Tokens(n),
        None => BatchSize::Sentences(config.batch_size),
    };
    let steps_per_epoch = plan_training_batches(&lengths, size, config.seed).len();
    let total_steps = config
        .max_steps
        .unwrap_or(usize::MAX)
        .min(steps_per_epoch * config.epochs);
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
    let mut rng = StdRng::seed_from_u64(config.seed ^ 0x5eed);
    let start = Instant::now();
    let mut step = 0usize;
    let mut history: Vec<EpochLog> = Vec::new();
    let mut best: Option<(f64, f64, usize)> = None;
    let mut stop = false;
    for epoch in 1..=config.epochs {
        let plan = plan_training_batches(&lengths, size, config.seed.wrapping_add(epoch as u64));
        let bar = if config.progress {
            ProgressBar::new(plan.len() as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{}", config.epochs));
        let epoch_start = Instant::now();
        let (mut loss_sum, mut loss_tokens, mut tokens) = (0.0f64, 0usize, 0usize);
        for indices in plan {
            let examples: Vec<&Example> = indices.iter().map(|&i| &train_examples[i]).collect();
            let ratio = config.teacher_forcing.ratio(step);
            // Scheduled sampling draws its flags for the whole batch, whatever the workers.
            let flags: Option<Vec<Vec<bool>>> = (ratio < 1.0).then(|| {
                let steps = examples.iter().map(|e| e.target.len() + 1).max();
                (0..steps.unwrap_or(0))
                    .map(|t| {
                        (0..examples.len())
                            .map(|_| t > 0 && rng.random::<f64>() >= ratio)
                            .collect()
                    })
                    .collect()
            });
            let forward = |m: &Seq2Seq<B>, batch: &TrainingBatch<B>, first: usize| {
                let (source, lengths, input) = (
                    batch.source.clone(),
                    &batch.source_lengths,
                    batch.target_input.clone(),
                );
                match &flags {
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
                }
            };
            let out = batch_gradients(
                &model,
                &examples,
                config.label_smoothing,
                config.workers,
                device,
                forward,
            );
            let (loss_value, mut grads) = (out.loss, out.grads);
            if config.clip_norm > 0.0 {
                clip_global_norm(&model, &mut grads, config.clip_norm);
            }
            model = optim.step(schedule.at(step), model, grads);
            step += 1;
            let n = out.tokens;
            loss_sum += loss_value * n as f64;
            loss_tokens += n;
            tokens += n;
            let secs = epoch_start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.3} {:.0} tok/s",
                loss_sum / loss_tokens as f64,
                tokens as f64 / secs
            ));
            bar.inc(1);
            let out_of_time = config
                .time_limit_secs
                .is_some_and(|t| start.elapsed().as_secs_f64() >= t);
            if step >= total_steps || out_of_time {
                stop = true;
                break;
            }
        }
        bar.finish_and_clear();
        let tokens_per_second = tokens as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
        let valid_model = model.valid();
        let valid_loss = validation_loss(&valid_model, &valid_examples, config.batch_size, device);
        let (scores, _) = evaluate_with(
            &valid_model,
            &codec,
            &valid_refs,
            &Greedy::new(config.max_decode_len),
            config.batch_size,
            config.workers,
            device,
        );
        let log = EpochLog {
            epoch,
            steps: step,
            train_loss: loss_sum / loss_tokens.max(1) as f64,
            valid_loss,
            valid_perplexity: valid_loss.exp(),
            scores,
            tokens_per_second,
            elapsed_seconds: start.elapsed().as_secs_f64(),
        };
        if config.log_epochs {
            eprintln!(
                "epoch {epoch}: train loss {:.4}, valid loss {:.4} (ppl {:.3}), valid exact {:.2}% WER {:.2}% TER {:.2}%, {:.0} tok/s, {:.0}s",
                log.train_loss,
                log.valid_loss,
                log.valid_perplexity,
                100.0 * scores.exact_match,
                100.0 * scores.wer,
                100.0 * scores.ter,
                log.tokens_per_second,
                log.elapsed_seconds
            );
        }
        let key = (scores.wer, valid_loss, epoch);
        if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
            best = Some(key);
            let checkpoint = Checkpoint {
                meta: CheckpointMeta {
                    format: FORMAT,
                    task: task.to_string(),
                    model: model_config.clone(),
                    source_tokenizer: codec.source_tokenizer.clone(),
                    target_tokenizer: codec.target_tokenizer.clone(),
                    max_decode_len: config.max_decode_len,
                    summary: serde_json::json!({ "epoch": log, "train": config }),
                },
                codec: codec.clone(),
                model: valid_model,
            };
            checkpoint.save(out)?;
        }
        history.push(log);
        if stop {
            break;
        }
    }
    Ok(TrainReport {
        history,
        best_epoch: best.map(|b| b.2).unwrap_or(0),
    })
}
