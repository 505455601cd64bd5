//! The `s2s` command line: train, decode and evaluate sequence-to-sequence models.
//!
//! The concrete Burn backend is chosen here and nowhere else (`--backend`).

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use s2s_data::corpus::{self, group_references, CmudictOptions, Reference, SyntheticTask};
use s2s_data::{Pair, Splits, Subword, TextCodec, Tokenizer};
use s2s_decode::{Decoding, LengthPenalty};
use s2s_infer::{DecodeOptions, StrategyKind, Translator};
use s2s_nn::{AttentionKind, CellKind, Seq2SeqConfig};
use s2s_tensor::{S2sAutodiffBackend, S2sBackend};
use s2s_train::metrics::{corpus_scores_with, ReferenceMode};
use s2s_train::run::{OpenMode, RunFolder};
use s2s_train::{
    evaluate, evaluate_with, AdamConfig, BestMetric, Checkpoint, Decay, Outcome, TeacherForcing,
    TrainConfig, TrainEvent, TrainReport, Trainer,
};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

mod align;
mod average;
mod interop;
mod plot;
mod serve;

#[derive(Parser)]
#[command(
    name = "s2s",
    version,
    about = "Sequence-to-sequence models: train, decode, evaluate"
)]
struct Cli {
    /// Compute backend.
    #[arg(long, global = true, value_enum, default_value_t = BackendName::Flex)]
    backend: BackendName,
    /// Device of the backend: `cpu` (flex); `cpu`, `cuda`, `cuda:N`, `mps` (tch); `default`,
    /// `cpu`, `discrete[:N]`, `integrated[:N]`, `virtual[:N]` (wgpu).
    #[arg(long, global = true, default_value = "default")]
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackendName {
    /// Burn's pure-Rust CPU backend.
    Flex,
    /// libtorch (CPU or CUDA); needs a build with `--features tch`.
    Tch,
    /// WGPU (Vulkan/Metal/DX12); needs a build with `--features wgpu`.
    Wgpu,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model in a run folder (best/ and last/ checkpoints, metrics.jsonl); resumable.
    #[command(args_override_self = true)]
    Train(Box<TrainArgs>),
    /// Decode source lines from stdin, one output line per input line.
    Decode(DecodeArgs),
    /// Evaluate a model on a test set (exact match, WER, token/phoneme error rate, BLEU,
    /// chrF).
    Eval(EvalArgs),
    /// Translate plain text: one line in, one line out, streamed in length-sorted batches.
    Translate(TranslateArgs),
    /// Split a parallel TSV corpus into train/valid/test files (90/5/5 by source hash).
    Split(SplitArgs),
    /// Draw one attention matrix of `s2s decode --alignments` as a PNG heatmap.
    Align(align::AlignArgs),
    /// Draw a training run's curves (loss, best metric, learning rate) as a PNG.
    Plot(plot::PlotArgs),
    /// Forced decoding: the log-probability of each `source<TAB>target` line's target.
    Score(ScoreArgs),
    /// Average the weights of several checkpoints of one model into a new model folder.
    Average(average::AverageArgs),
    /// Write a model's weights under PyTorch's names (safetensors; see docs/model-format.md).
    Export(interop::ExportArgs),
    /// Make a model folder from weights under PyTorch's names and a config.json.
    Import(interop::ImportArgs),
    /// Bring model folders written before model.safetensors (model.mpk, format 1) to the
    /// current layout, in place.
    Convert(interop::ConvertArgs),
    /// Serve a model over HTTP (POST /v1/decode, a page to try it at /), with dynamic
    /// batching.
    Serve(serve::ServeArgs),
}

#[derive(Args, Debug)]
struct ScoreArgs {
    /// Model folder (or training run folder: its best model).
    #[arg(long)]
    model: PathBuf,
    /// `source<TAB>target` lines (default: stdin).
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Also print every target token's log-probability (`<eos>` last), space-separated,
    /// after a tab.
    #[arg(long)]
    per_token: bool,
    /// Pairs per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Task {
    /// CMUdict grapheme-to-phoneme.
    G2p,
    /// Copy random strings.
    Copy,
    /// Reverse random strings.
    Reverse,
    /// Sort random strings.
    Sort,
    /// Repeat every symbol twice.
    Double,
    /// Parallel TSV files (`--train`, `--valid`).
    Tsv,
}

#[derive(Clone, Copy, Debug, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum TokenizerArg {
    /// One token per character.
    Chars,
    /// Whitespace-separated words.
    Whitespace,
    /// BPE subwords learned from the training side (NFKC-normalised).
    Bpe,
}

impl TokenizerArg {
    /// The tokenizer; BPE is trained on `texts` (one side of the training pairs).
    fn build<'a>(
        self,
        texts: impl Iterator<Item = &'a str> + Send,
        bpe: &BpeArgs,
    ) -> Result<Tokenizer> {
        Ok(match self {
            TokenizerArg::Chars => Tokenizer::Chars,
            TokenizerArg::Whitespace => Tokenizer::Whitespace,
            TokenizerArg::Bpe => Tokenizer::Bpe(
                Subword::train(texts, bpe.bpe_vocab, bpe.bpe_min_freq)
                    .context("training the BPE tokenizer")?,
            ),
        })
    }
}

/// Subword settings (tokenizer `bpe`).
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
struct BpeArgs {
    /// BPE vocabulary size per side (characters and merges).
    #[arg(long, default_value_t = 8000)]
    bpe_vocab: usize,
    /// Minimum count of a pair for a BPE merge.
    #[arg(long, default_value_t = 2)]
    bpe_min_freq: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum DecayArg {
    None,
    InvSqrt,
    Cosine,
}

/// Where the data comes from (shared by `train` and `eval`).
#[derive(Args, Debug, Clone, Serialize, Deserialize)]
struct DataArgs {
    /// CMUdict file for the g2p task.
    #[arg(long, default_value = default_cmudict())]
    cmudict: PathBuf,
    /// Keep vowel stress digits in CMUdict phonemes (removed by default).
    #[arg(long)]
    keep_stress: bool,
}

fn default_cmudict() -> &'static str {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/cmudict/cmudict.dict"
    )
}

/// `s2s train`'s options. They are also the run's `config.json` (and the recipes under
/// `recipes/`): every field is a setting under its option's name with `_` for `-`, read back
/// by `--config FILE` and `--resume DIR`; options on the command line override the file.
#[derive(Args, Debug, Serialize, Deserialize)]
struct TrainArgs {
    /// Read the settings from this JSON file (a recipe such as recipes/g2p.json, or a run's
    /// config.json); options given on the command line override it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Continue the training run in DIR from its last checkpoint, with the settings of its
    /// config.json (options given here override them).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["overwrite", "config", "init_from"])]
    #[serde(skip)]
    resume: Option<PathBuf>,
    /// Start the run in --out again when --out is a run folder already (its best/, last/,
    /// checkpoints/, averaged/ and metrics.jsonl are removed; nothing else is).
    #[arg(long)]
    #[serde(skip)]
    overwrite: bool,
    /// Start from the weights, architecture and vocabularies of this model folder (or run
    /// folder's best model) with a fresh optimizer: fine-tuning.
    #[arg(long, value_name = "DIR")]
    init_from: Option<PathBuf>,
    /// The task.
    #[arg(long, value_enum, default_value_t = Task::G2p)]
    task: Task,
    /// Training TSV (task tsv).
    #[arg(long)]
    train: Option<PathBuf>,
    /// Validation TSV (task tsv).
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Test TSV evaluated after training (task tsv; g2p uses its test split).
    #[arg(long)]
    test: Option<PathBuf>,
    #[command(flatten)]
    #[serde(flatten)]
    data: DataArgs,
    /// Source tokenizer (task tsv).
    #[arg(long, value_enum, default_value_t = TokenizerArg::Whitespace)]
    source_tokenizer: TokenizerArg,
    /// Target tokenizer (task tsv).
    #[arg(long, value_enum, default_value_t = TokenizerArg::Whitespace)]
    target_tokenizer: TokenizerArg,
    #[command(flatten)]
    #[serde(flatten)]
    bpe: BpeArgs,
    /// Pretrained word vectors (GloVe / word2vec text, size = --embed) for the source
    /// embeddings.
    #[arg(long, value_name = "FILE")]
    source_embeddings: Option<PathBuf>,
    /// Pretrained word vectors for the target embeddings.
    #[arg(long, value_name = "FILE")]
    target_embeddings: Option<PathBuf>,
    /// Minimum token count to enter a vocabulary.
    #[arg(long, default_value_t = 1)]
    min_freq: usize,
    /// Number of training pairs for synthetic tasks.
    #[arg(long, default_value_t = 20_000)]
    synthetic_size: usize,
    /// The run folder: config.json, metrics.jsonl, best/ and last/. It must not exist, be
    /// empty, or be a run folder (with --overwrite).
    #[arg(long, default_value = "runs/model")]
    out: PathBuf,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Stop after this many seconds of training (then validate and keep the best model).
    #[arg(long)]
    time_limit: Option<f64>,
    /// Stop after this many optimizer steps; a cosine decay ends there.
    #[arg(long)]
    max_steps: Option<usize>,
    /// Sentences per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Batch training data by padded tokens (rows x longest) instead of sentences.
    #[arg(long)]
    batch_tokens: Option<usize>,
    /// Peak learning rate (Adam).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Warmup steps.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Learning-rate decay after warmup.
    #[arg(long, value_enum, default_value_t = DecayArg::None)]
    decay: DecayArg,
    /// Clip the global gradient norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    clip_norm: f64,
    /// Adam's beta_1 and beta_2.
    #[arg(long, value_name = "B1,B2", default_value = "0.9,0.999")]
    adam_betas: String,
    /// Adam's epsilon.
    #[arg(long, default_value_t = 1e-5)]
    adam_eps: f32,
    /// Decoupled weight decay (AdamW); 0 is plain Adam.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Teacher forcing: R, const:R, linear:START:END:STEPS or invsigmoid:K.
    #[arg(long, default_value = "1.0")]
    teacher_forcing: String,
    /// Label smoothing, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f32,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Maximum decoded length during validation.
    #[arg(long, default_value_t = 50)]
    max_len: usize,
    /// Validate every N steps as well as after every epoch.
    #[arg(long, value_name = "N")]
    valid_every: Option<usize>,
    /// Write last/ (weights and training state) every N steps, and after every validation.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    save_every: usize,
    /// Log the training loss, learning rate and gradient norm to metrics.jsonl every N
    /// steps.
    #[arg(long, value_name = "N", default_value_t = 50)]
    log_every: usize,
    /// Stop when the best metric has not improved for N validations in a row.
    #[arg(long, value_name = "N")]
    patience: Option<usize>,
    /// Keep the model of each of the last N validations in checkpoints/step-NNNNNNNN/ (for
    /// `s2s average`).
    #[arg(long, value_name = "N", default_value_t = 0)]
    keep_checkpoints: usize,
    /// At the end, average the last N kept checkpoints into averaged/ and validate it
    /// (needs --keep-checkpoints N or more).
    #[arg(long, value_name = "N", default_value_t = 0)]
    average_last: usize,
    /// The validation metric that picks best/ (loss, wer, per, bleu, chrf, exact); default:
    /// wer for g2p, bleu for tsv, exact for the synthetic tasks.
    #[arg(long)]
    best_metric: Option<BestMetric>,
    /// Recurrent cell.
    #[arg(long, default_value = "gru")]
    cell: CellKind,
    /// Attention: bahdanau, dot or general.
    #[arg(long, default_value = "bahdanau")]
    attention: AttentionKind,
    /// Embedding size.
    #[arg(long, default_value_t = 64)]
    embed: usize,
    /// Encoder hidden size per direction.
    #[arg(long, default_value_t = 256)]
    hidden: usize,
    /// Decoder hidden size.
    #[arg(long, default_value_t = 256)]
    decoder_hidden: usize,
    /// Attention hidden size (Bahdanau).
    #[arg(long, default_value_t = 256)]
    attention_dim: usize,
    /// Encoder layers.
    #[arg(long, default_value_t = 1)]
    encoder_layers: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = 1)]
    decoder_layers: usize,
    /// Use a unidirectional encoder.
    #[arg(long)]
    unidirectional: bool,
    /// Dropout on embeddings and between layers.
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// Start the decoder from zeros instead of the bridged encoder state.
    #[arg(long)]
    no_bridge: bool,
    /// Threads that share the rows of every batch (default: one per CPU core on flex and on
    /// tch's CPU device, where each then runs one libtorch thread; one on a GPU). The step is
    /// the same whatever their number up to the order of sums; runs with the same number are
    /// reproducible bit for bit.
    #[arg(long)]
    workers: Option<usize>,
    /// Hide the progress bar.
    #[arg(long)]
    #[serde(skip)]
    no_progress: bool,
    #[command(flatten)]
    #[serde(skip)]
    group: GroupArgs,
}

/// `s2s train`'s options for training on several processes or machines together
/// (data-parallel, on burn-collective; s2s built with the `distributed` feature). They are
/// node-local, so they are not part of the run's settings.
#[derive(Args, Debug, Default, Clone)]
#[command(next_help_heading = "Several processes or machines (feature `distributed`)")]
struct GroupArgs {
    /// Train on these devices of this process side by side, one replica of the model on
    /// each (data-parallel; the batch is shared among them as among --nodes), for example
    /// cuda:0,cuda:1 (tch) or discrete:0,discrete:1 (wgpu); cpu,cpu gives CPU peers (flex,
    /// for testing). Replaces --device; each device runs --workers threads.
    #[arg(long, value_name = "LIST")]
    devices: Option<String>,
    /// Processes training together. Each runs the same command on the same data, but for
    /// --node-rank; each step every process trains on its share of the batch and they sum
    /// their gradients, so the run is the run of one process with that many --workers.
    #[arg(long, default_value_t = 1, value_name = "N")]
    nodes: usize,
    /// This process's rank, 0..N. Rank 0 starts the coordinator and is the only one that
    /// writes the run folder (--out); the others only read it (to --resume).
    #[arg(long, default_value_t = 0, value_name = "R")]
    node_rank: usize,
    /// HOST:PORT of the coordinator, which rank 0 starts on PORT: rank 0's machine.
    #[arg(long, value_name = "HOST:PORT")]
    coordinator: Option<String>,
    /// The address the other processes reach this one at (default: this machine's address
    /// on the route to the coordinator).
    #[arg(long, value_name = "HOST")]
    node_host: Option<String>,
    /// The port this process serves its part of the gradient sums on (default: the
    /// coordinator's PORT + 1 + R).
    #[arg(long, value_name = "PORT")]
    data_port: Option<u16>,
    /// Give up, with an error, when joining or any step's exchange takes longer than this
    /// (a process that died, hangs or never started).
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    collective_timeout: u64,
}

impl GroupArgs {
    /// Whether this run has several peers (processes or devices).
    fn several(&self) -> bool {
        self.nodes > 1 || self.device_specs().len() > 1
    }

    /// The entries of --devices (none without it).
    fn device_specs(&self) -> Vec<&str> {
        self.devices
            .as_deref()
            .map(|list| list.split(',').map(str::trim).collect())
            .unwrap_or_default()
    }

    /// Whether this process trains without writing the run folder (a rank above 0).
    fn follower(&self) -> bool {
        self.nodes > 1 && self.node_rank > 0
    }

    /// Checks the options before any data is read.
    fn check(&self) -> Result<()> {
        if self.nodes == 0 {
            bail!("--nodes must be at least 1");
        }
        if self.node_rank >= self.nodes {
            bail!(
                "--node-rank {} must be below --nodes {}",
                self.node_rank,
                self.nodes
            );
        }
        if self.collective_timeout == 0 {
            bail!("--collective-timeout must be at least 1 second");
        }
        if self.devices.is_some() && self.device_specs().iter().any(|d| d.is_empty()) {
            bail!("--devices: a comma-separated list of devices, such as cuda:0,cuda:1");
        }
        if self.nodes > 1 && self.coordinator.is_none() {
            bail!("--nodes {} needs --coordinator HOST:PORT", self.nodes);
        }
        if self.several() && !cfg!(feature = "distributed") {
            bail!(
                "--nodes and --devices need s2s built with the `distributed` feature \
                 (cargo build --release -p s2s-cli --features distributed)"
            );
        }
        Ok(())
    }

    /// Joins the other peers (before any data is read or written): one collective per
    /// device of this process.
    #[cfg(feature = "distributed")]
    fn join(&self, devices: usize) -> Result<Vec<Box<dyn s2s_train::Collective>>> {
        let settings = s2s_train::distributed::NodeSettings {
            nodes: self.nodes,
            rank: self.node_rank,
            coordinator: self.coordinator.clone().unwrap_or_default(),
            host: self.node_host.clone(),
            data_port: self.data_port,
            timeout: std::time::Duration::from_secs(self.collective_timeout),
        };
        // burn-collective logs through `log`/`tracing` and installs an INFO subscriber on
        // stdout when none is there: install ours first (stderr, warnings; RUST_LOG
        // overrides). Its orchestrator logs every peer's ordinary disconnection as an error.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,burn_collective::global::orchestrator=off")
        });
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .try_init();
        let node = (self.nodes > 1).then_some(&settings);
        if node.is_some() {
            eprintln!(
                "rank {} of {}: joining the others through {}",
                self.node_rank, self.nodes, settings.coordinator
            );
        }
        let peers = s2s_train::distributed::BurnCollective::join(node, devices, settings.timeout)?;
        if node.is_some() {
            eprintln!("rank {} of {}: all joined", self.node_rank, self.nodes);
        }
        Ok(peers
            .into_iter()
            .map(|p| Box::new(p) as Box<dyn s2s_train::Collective>)
            .collect())
    }

    #[cfg(not(feature = "distributed"))]
    fn join(&self, _devices: usize) -> Result<Vec<Box<dyn s2s_train::Collective>>> {
        bail!("--nodes and --devices need s2s built with the `distributed` feature")
    }
}

#[derive(Args, Debug)]
struct DecodeArgs {
    /// Model folder (or training run folder: its best model). Repeat it to decode with an
    /// ensemble: the models' next-token log-probabilities are averaged at every step; they
    /// must share their vocabularies.
    #[arg(long, required = true)]
    model: Vec<PathBuf>,
    #[command(flatten)]
    decoding: DecodingArgs,
    /// Print every hypothesis of the n-best list as `hypothesis<TAB>score`, with one blank
    /// line after each input.
    #[arg(long)]
    scores: bool,
    /// Write each output's attention matrix to FILE as JSON lines.
    #[arg(long, value_name = "FILE")]
    alignments: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct TranslateArgs {
    /// Model folder (or training run folder: its best model). Repeat it to decode with an
    /// ensemble: the models' next-token log-probabilities are averaged at every step; they
    /// must share their vocabularies.
    #[arg(long, required = true)]
    model: Vec<PathBuf>,
    /// Input text file (default: stdin).
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Output file (default: stdout); written to a temporary file and renamed when done.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Lines read, sorted by length and decoded at a time; outputs keep input order.
    #[arg(long, default_value_t = 10_000)]
    chunk: usize,
    #[command(flatten)]
    decoding: DecodingArgs,
}

#[derive(Args, Debug)]
struct SplitArgs {
    /// Parallel TSV corpus (`source<TAB>target` per line).
    #[arg(long)]
    input: PathBuf,
    /// Output folder for train.tsv, valid.tsv and test.tsv.
    #[arg(long)]
    out: PathBuf,
    /// Swap the columns (translate target -> source).
    #[arg(long)]
    swap: bool,
    /// Keep only the PyTorch tutorial's pairs: English starting with "i am", "he is", ...,
    /// both sides shorter than `--max-words` words.
    #[arg(long)]
    tutorial_filter: bool,
    /// Word limit of `--tutorial-filter`.
    #[arg(long, default_value_t = 10)]
    max_words: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StrategyArg {
    Greedy,
    Beam,
    Sample,
    Diverse,
}

/// How to decode (shared by `decode` and `eval`).
#[derive(Args, Debug)]
struct DecodingArgs {
    /// Decoding strategy.
    #[arg(long, value_enum, default_value_t = StrategyArg::Greedy)]
    strategy: StrategyArg,
    /// Beams per sentence (beam, diverse).
    #[arg(long, default_value_t = 5)]
    beam_size: usize,
    /// Hypotheses per sentence (beam, diverse; for sample, the number of samples).
    #[arg(long, default_value_t = 1)]
    n_best: usize,
    /// Length penalty: none, avg:ALPHA or gnmt:ALPHA.
    #[arg(long, default_value = "none")]
    length_penalty: LengthPenalty,
    /// Minimum output length.
    #[arg(long, default_value_t = 0)]
    min_len: usize,
    /// Maximum output length (default: the model's).
    #[arg(long)]
    max_len: Option<usize>,
    /// Also cap the output length at RATIO x the source length (beam, diverse).
    #[arg(long)]
    max_len_ratio: Option<f32>,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Sample only among the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample only among the most likely tokens that make up probability P.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Beam groups (diverse).
    #[arg(long, default_value_t = 2)]
    groups: usize,
    /// Diversity penalty between groups (diverse).
    #[arg(long, default_value_t = 0.5)]
    diversity: f32,
    /// Seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Forbid repeating any n-gram of this size (0: off).
    #[arg(long, default_value_t = 0)]
    no_repeat_ngram: usize,
    /// Never output `<unk>`.
    #[arg(long)]
    forbid_unk: bool,
    /// Sentences per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Threads that decode batches side by side (default: one per CPU core on flex and on
    /// tch's CPU device, where each then runs one libtorch thread; one on a GPU). The
    /// output does not depend on it.
    #[arg(long)]
    workers: Option<usize>,
}

impl DecodingArgs {
    /// The options as data (`s2s_infer::DecodeOptions`, what `s2s serve` takes as JSON).
    fn options(&self, keep_attention: bool) -> DecodeOptions {
        DecodeOptions {
            strategy: match self.strategy {
                StrategyArg::Greedy => StrategyKind::Greedy,
                StrategyArg::Beam => StrategyKind::Beam,
                StrategyArg::Sample => StrategyKind::Sample,
                StrategyArg::Diverse => StrategyKind::Diverse,
            },
            beam_size: self.beam_size,
            n_best: self.n_best,
            length_penalty: self.length_penalty,
            min_len: self.min_len,
            max_len: self.max_len,
            max_len_ratio: self.max_len_ratio,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            groups: self.groups,
            diversity: self.diversity,
            seed: self.seed,
            no_repeat_ngram: self.no_repeat_ngram,
            forbid_unk: self.forbid_unk,
            attention: keep_attention,
        }
    }

    fn strategy(&self, default_max_len: usize, keep_attention: bool) -> Result<Decoding> {
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        self.options(keep_attention)
            .strategy(default_max_len)
            .map_err(|e| anyhow::anyhow!(e.cli_message()))
    }

    /// A translator of the models `dirs` with these options' batching.
    fn translator<B: S2sBackend>(
        &self,
        dirs: &[PathBuf],
        device: &B::Device,
    ) -> Result<Translator<B>> {
        let mut translator = Translator::<B>::load(dirs, device)?;
        translator.batch_size = self.batch_size;
        translator.workers = self.workers.unwrap_or(1);
        Ok(translator)
    }
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// Model folder (or training run folder: its best model). Repeat it to decode with an
    /// ensemble: the models' next-token log-probabilities are averaged at every step; they
    /// must share their vocabularies.
    #[arg(long, required = true)]
    model: Vec<PathBuf>,
    /// Test TSV (`source<TAB>target`; repeated sources are extra references).
    #[arg(long, conflicts_with = "split")]
    test: Option<PathBuf>,
    /// Evaluate on a CMUdict split instead (g2p models).
    #[arg(long, value_enum)]
    split: Option<SplitArg>,
    #[command(flatten)]
    data: DataArgs,
    /// Print the scores as JSON.
    #[arg(long)]
    json: bool,
    /// Also print this many sample predictions.
    #[arg(long, default_value_t = 0)]
    samples: usize,
    /// BLEU and chrF references: per-line (each test line against its own target, as
    /// `sacrebleu targets -i outputs`) or grouped (one hypothesis per distinct source against
    /// all of its targets, multi-reference).
    #[arg(long, value_enum, default_value = "per-line")]
    references: ReferencesArg,
    #[command(flatten)]
    decoding: DecodingArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReferencesArg {
    PerLine,
    Grouped,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SplitArg {
    Dev,
    Test,
}

fn main() {
    // Decoding's products (validation included) use their weights in place; set once here,
    // for the whole process (see the function's docs).
    s2s_tensor::tuning::prefer_unpacked_gemm_weights();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let train_matches = matches.subcommand_matches("train");
    if let Err(e) = run(cli, train_matches) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(mut cli: Cli, train_matches: Option<&clap::ArgMatches>) -> Result<()> {
    use s2s_tensor::backend::{self as backends, Autodiff, BackendKind};
    match cli.command {
        Command::Align(args) => return align::run(args),
        Command::Plot(args) => return plot::run(args),
        Command::Train(args) => {
            let matches = train_matches.expect("train's matches");
            cli.command = Command::Train(Box::new(train_settings(*args, matches)?));
        }
        _ => {}
    }
    let kind = match cli.backend {
        BackendName::Flex => BackendKind::Flex,
        BackendName::Tch => BackendKind::Tch,
        BackendName::Wgpu => BackendKind::Wgpu,
    };
    kind.ensure_compiled()?;
    let spec = cli.device.clone();
    let spec = spec.as_str();
    if let Some(workers) = cli.command.workers_mut() {
        let on_cpu = match kind {
            BackendKind::Flex => true,
            BackendKind::Tch => matches!(spec, "" | "cpu" | "default"),
            BackendKind::Wgpu => false,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = *workers.get_or_insert(if on_cpu { cores } else { 1 });
        if workers == 0 {
            bail!("--workers must be at least 1");
        }
        if on_cpu && workers > 1 {
            // Split the cores among the workers rather than give each of them all of them.
            backends::set_intra_op_threads(kind, (cores / workers).max(1));
        }
    }
    match kind {
        #[cfg(feature = "flex")]
        BackendKind::Flex => {
            let devices = train_devices(&cli.command, backends::flex_device)?;
            dispatch::<backends::Flex, Autodiff<backends::Flex>>(
                cli.command,
                &backends::flex_device(spec)?,
                devices,
            )
        }
        #[cfg(feature = "tch")]
        BackendKind::Tch => {
            let devices = train_devices(&cli.command, backends::tch_device)?;
            dispatch::<backends::Tch, Autodiff<backends::Tch>>(
                cli.command,
                &backends::tch_device(spec)?,
                devices,
            )
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            let devices = train_devices(&cli.command, backends::wgpu_device)?;
            dispatch::<backends::Wgpu, Autodiff<backends::Wgpu>>(
                cli.command,
                &backends::wgpu_device(spec)?,
                devices,
            )
        }
        #[allow(unreachable_patterns)]
        other => unreachable!("{other} passed ensure_compiled"),
    }
}

impl Command {
    /// The `--workers` setting of the commands that have one.
    fn workers_mut(&mut self) -> Option<&mut Option<usize>> {
        match self {
            Command::Train(a) => Some(&mut a.workers),
            Command::Decode(a) => Some(&mut a.decoding.workers),
            Command::Eval(a) => Some(&mut a.decoding.workers),
            Command::Translate(a) => Some(&mut a.decoding.workers),
            Command::Serve(a) => Some(&mut a.workers),
            _ => None,
        }
    }
}

/// Runs `trainer` with the progress bar and the printed validations.
fn run_with_progress<AB: S2sAutodiffBackend>(
    trainer: &mut Trainer<AB>,
    stop: &AtomicBool,
    args: &TrainArgs,
) -> Result<TrainReport> {
    let mut printer = Printer {
        bar: indicatif::ProgressBar::hidden(),
        progress: !args.no_progress,
        metric: trainer.best_metric(),
    };
    let report = trainer.run(stop, &mut |e| printer.event(e))?;
    printer.bar.finish_and_clear();
    Ok(report)
}

/// `s2s train --devices`: each device of the list, parsed as `--device` is (none without it).
fn train_devices<D, E>(command: &Command, parse: impl Fn(&str) -> Result<D, E>) -> Result<Vec<D>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match command {
        Command::Train(args) => args
            .group
            .device_specs()
            .into_iter()
            .map(|spec| parse(spec).map_err(|e| anyhow::anyhow!("--devices: {e}")))
            .collect(),
        _ => Ok(Vec::new()),
    }
}

fn dispatch<B: S2sBackend, AB: S2sAutodiffBackend<InnerBackend = B, Device = B::Device>>(
    command: Command,
    device: &B::Device,
    devices: Vec<B::Device>,
) -> Result<()> {
    match command {
        Command::Train(args) => cmd_train::<AB>(*args, device, devices),
        Command::Decode(args) => cmd_decode::<B>(args, device),
        Command::Eval(args) => cmd_eval::<B>(args, device),
        Command::Translate(args) => cmd_translate::<B>(args, device),
        Command::Split(args) => cmd_split(args),
        Command::Align(args) => align::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Score(args) => cmd_score::<B>(args, device),
        Command::Average(args) => average::run::<B>(args, device),
        Command::Export(args) => interop::export::<B>(args, device),
        Command::Import(args) => interop::import::<B>(args, device),
        Command::Convert(args) => interop::convert::<B>(args, device),
        Command::Serve(args) => serve::run::<B>(args, device),
    }
}

fn cmudict_splits(data: &DataArgs) -> Result<Splits> {
    Ok(corpus::read_cmudict(
        &data.cmudict,
        CmudictOptions {
            keep_stress: data.keep_stress,
        },
    )?)
}

fn synthetic(task: SyntheticTask, n: usize, seed: u64) -> Splits {
    let gen = |n, s| task.generate(n, 1, 12, 10, s);
    Splits {
        train: gen(n, seed),
        dev: gen(1000, seed.wrapping_add(1)),
        test: gen(1000, seed.wrapping_add(2)),
    }
}

/// The settings of `s2s train`: the command line alone, or merged over a settings file
/// (`--config FILE`, or the run's `config.json` with `--resume DIR`): an option given on the
/// command line wins, the file gives the rest, and the defaults fill what neither gives. A
/// setting in the file that `s2s train` does not know is an error naming the file.
fn train_settings(args: TrainArgs, matches: &clap::ArgMatches) -> Result<TrainArgs> {
    let (file, mut base) = match (&args.resume, &args.config) {
        (Some(dir), _) => {
            if matches.value_source("out") == Some(clap::parser::ValueSource::CommandLine)
                && args.out != *dir
            {
                bail!(
                    "--resume {} and --out {} name different folders",
                    dir.display(),
                    args.out.display()
                );
            }
            RunFolder::check(dir, OpenMode::Resume)?;
            let run = RunFolder::open(dir, OpenMode::Resume)?;
            (dir.join("config.json"), run.read_config()?)
        }
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("{}: cannot read", file.display()))?;
            let value: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: invalid JSON", file.display()))?;
            (file.clone(), value)
        }
        (None, None) => return Ok(args),
    };
    let given = serde_json::to_value(&args)?;
    let (Some(base_map), Some(given_map)) = (base.as_object_mut(), given.as_object()) else {
        bail!("{}: expected a JSON object of settings", file.display());
    };
    base_map.remove("s2s_run");
    base_map.remove("s2s_version");
    if let Some(key) = base_map.keys().find(|k| !given_map.contains_key(*k)) {
        bail!("{}: unknown setting {key:?}", file.display());
    }
    for (key, value) in given_map {
        let on_command_line =
            matches.value_source(key) == Some(clap::parser::ValueSource::CommandLine);
        if on_command_line || !base_map.contains_key(key) {
            base_map.insert(key.clone(), value.clone());
        }
    }
    let mut merged: TrainArgs = serde_json::from_value(base)
        .with_context(|| format!("{}: invalid settings", file.display()))?;
    merged.config = args.config;
    merged.overwrite = args.overwrite;
    merged.no_progress = args.no_progress;
    merged.group = args.group;
    if let Some(dir) = args.resume {
        merged.out = dir.clone();
        merged.resume = Some(dir);
    }
    Ok(merged)
}

/// A task's name, its data, and its source and target tokenizers (when built).
type TaskData = (&'static str, Splits, Option<(Tokenizer, Tokenizer)>);

impl TrainArgs {
    /// The library's training settings; invalid values are errors.
    fn train_config(&self) -> Result<TrainConfig> {
        let decay = match self.decay {
            DecayArg::None => Decay::None,
            DecayArg::InvSqrt => Decay::InverseSqrt,
            DecayArg::Cosine => Decay::Cosine {
                total: 0,
                floor: 0.05,
            },
        };
        let teacher_forcing: TeacherForcing = self
            .teacher_forcing
            .parse()
            .map_err(|e| anyhow::anyhow!("--teacher-forcing: {e}"))?;
        let betas: Vec<f32> = self
            .adam_betas
            .split(',')
            .map(|b| b.trim().parse::<f32>())
            .collect::<Result<_, _>>()
            .ok()
            .filter(|b: &Vec<f32>| b.len() == 2)
            .with_context(|| {
                format!(
                    "--adam-betas: expected B1,B2 such as 0.9,0.999, got {:?}",
                    self.adam_betas
                )
            })?;
        let config = TrainConfig::new()
            .with_epochs(self.epochs)
            .with_batch_size(self.batch_size)
            .with_batch_tokens(self.batch_tokens)
            .with_lr(self.lr)
            .with_warmup(self.warmup)
            .with_decay(decay)
            .with_clip_norm(self.clip_norm)
            .with_adam(
                AdamConfig::new()
                    .with_beta_1(betas[0])
                    .with_beta_2(betas[1])
                    .with_epsilon(self.adam_eps)
                    .with_weight_decay(self.weight_decay),
            )
            .with_teacher_forcing(teacher_forcing)
            .with_label_smoothing(self.label_smoothing)
            .with_seed(self.seed)
            .with_max_decode_len(self.max_len)
            .with_time_limit_secs(self.time_limit)
            .with_source_embeddings(self.source_embeddings.clone())
            .with_target_embeddings(self.target_embeddings.clone())
            .with_max_steps(self.max_steps)
            .with_workers(self.workers.unwrap_or(1))
            .with_valid_every(self.valid_every)
            .with_save_every(self.save_every)
            .with_log_every(self.log_every)
            .with_patience(self.patience)
            .with_best_metric(self.best_metric)
            .with_keep_checkpoints(self.keep_checkpoints)
            .with_average_last(self.average_last);
        config.validate()?;
        Ok(config)
    }

    /// The model configuration of the options (vocabulary sizes from `codec`).
    fn model_config(&self, codec: &TextCodec) -> Seq2SeqConfig {
        Seq2SeqConfig::new(codec.source_vocab.len(), codec.target_vocab.len())
            .with_d_embed(self.embed)
            .with_d_hidden(self.hidden)
            .with_d_decoder(self.decoder_hidden)
            .with_d_attention(self.attention_dim)
            .with_encoder_layers(self.encoder_layers)
            .with_decoder_layers(self.decoder_layers)
            .with_bidirectional(!self.unidirectional)
            .with_cell(self.cell)
            .with_attention(self.attention)
            .with_dropout(self.dropout)
            .with_bridge(!self.no_bridge)
    }

    /// The task's name and data, and its tokenizers (`None` for BPE when `build_tokenizers`
    /// is false: a resumed run reads its vocabularies from its checkpoint).
    fn task_data(&self, build_tokenizers: bool) -> Result<TaskData> {
        Ok(match self.task {
            Task::G2p => (
                "g2p",
                cmudict_splits(&self.data)?,
                Some((Tokenizer::Chars, Tokenizer::Whitespace)),
            ),
            Task::Tsv => {
                let (Some(train), Some(valid)) = (&self.train, &self.valid) else {
                    bail!("task tsv needs --train FILE and --valid FILE");
                };
                let test = match &self.test {
                    Some(t) => corpus::read_tsv(t)?,
                    None => Vec::new(),
                };
                let splits = Splits {
                    train: corpus::read_tsv(train)?,
                    dev: corpus::read_tsv(valid)?,
                    test,
                };
                let tokenizers = if build_tokenizers {
                    let src = self
                        .source_tokenizer
                        .build(splits.train.iter().map(|p| p.source.as_str()), &self.bpe)?;
                    let tgt = self
                        .target_tokenizer
                        .build(splits.train.iter().map(|p| p.target.as_str()), &self.bpe)?;
                    Some((src, tgt))
                } else {
                    None
                };
                ("tsv", splits, tokenizers)
            }
            t => {
                let (task, name) = match t {
                    Task::Copy => (SyntheticTask::Copy, "copy"),
                    Task::Reverse => (SyntheticTask::Reverse, "reverse"),
                    Task::Sort => (SyntheticTask::Sort, "sort"),
                    _ => (SyntheticTask::Double, "double"),
                };
                (
                    name,
                    synthetic(task, self.synthetic_size, self.seed),
                    Some((Tokenizer::Chars, Tokenizer::Chars)),
                )
            }
        })
    }

    /// The settings as the run's `config.json` stores them.
    fn settings(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(self)?)
    }
}

/// A flag that SIGINT and SIGTERM raise; a second signal exits at once (status 130).
fn stop_flag() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // The conditional exit first: it fires only when the flag is already up.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())
            .context("installing the signal handler")?;
        signal_hook::flag::register(signal, stop.clone())
            .context("installing the signal handler")?;
    }
    Ok(stop)
}

/// Prints a run's events: a progress bar per epoch and a line per validation (stderr).
struct Printer {
    bar: indicatif::ProgressBar,
    progress: bool,
    metric: BestMetric,
}

impl Printer {
    fn event(&mut self, event: TrainEvent) {
        match event {
            TrainEvent::Note(note) => self.bar.suspend(|| eprintln!("{note}")),
            TrainEvent::Epoch {
                epoch,
                epochs,
                batches,
                done,
            } => {
                self.bar.finish_and_clear();
                self.bar = if self.progress {
                    indicatif::ProgressBar::new(batches as u64)
                } else {
                    indicatif::ProgressBar::hidden()
                };
                self.bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                self.bar.set_prefix(format!("{epoch}/{epochs}"));
                self.bar.set_position(done as u64);
                self.bar.reset_eta();
            }
            TrainEvent::Step {
                loss,
                tokens_per_second,
                ..
            } => {
                self.bar
                    .set_message(format!("loss {loss:.3} {tokens_per_second:.0} tok/s"));
                self.bar.inc(1);
            }
            TrainEvent::Validated { log, best } => {
                let s = &log.scores;
                let line = format!(
                    "epoch {} step {}: train loss {:.4}, valid loss {:.4} (ppl {:.3}), valid exact {:.2}% WER {:.2}% TER {:.2}% BLEU {:.2} chrF {:.2}, {:.0} tok/s, {:.0}s{}",
                    log.epoch,
                    log.steps,
                    log.train_loss,
                    log.valid_loss,
                    log.valid_perplexity,
                    100.0 * s.exact_match,
                    100.0 * s.wer,
                    100.0 * s.ter,
                    log.bleu,
                    log.chrf,
                    log.tokens_per_second,
                    log.elapsed_seconds,
                    if best {
                        format!(" (best {})", self.metric.name())
                    } else {
                        String::new()
                    }
                );
                self.bar.suspend(|| eprintln!("{line}"));
            }
            TrainEvent::Saved { .. } => {}
            TrainEvent::Averaged {
                checkpoints,
                valid_loss,
                scores,
                bleu,
                chrf,
            } => {
                let line = format!(
                    "averaged the last {checkpoints} checkpoints: valid loss {valid_loss:.4}, valid exact {:.2}% WER {:.2}% TER {:.2}% BLEU {bleu:.2} chrF {chrf:.2}",
                    100.0 * scores.exact_match,
                    100.0 * scores.wer,
                    100.0 * scores.ter,
                );
                self.bar.suspend(|| eprintln!("{line}"));
            }
        }
    }
}

fn cmd_train<AB: S2sAutodiffBackend>(
    args: TrainArgs,
    device: &AB::Device,
    devices: Vec<AB::Device>,
) -> Result<()> {
    let config = args.train_config()?;
    // The model options, checked before any data is read (the vocabulary sizes come later).
    let mut model_flags = args.model_config(&TextCodec::build(
        &[],
        Tokenizer::Chars,
        Tokenizer::Chars,
        1,
    ));
    model_flags.src_vocab = s2s_data::Vocab::SPECIALS.len() + 1;
    model_flags.tgt_vocab = s2s_data::Vocab::SPECIALS.len() + 1;
    model_flags.validate()?;
    let mode = match (&args.resume, args.overwrite) {
        (Some(_), _) => OpenMode::Resume,
        (None, true) => OpenMode::Overwrite,
        (None, false) => OpenMode::New,
    };
    args.group.check()?;
    let follower = args.group.follower();
    // Refuse a wrong --out before reading any data; nothing is changed until the data is in.
    // (Ranks above 0 do not write it: rank 0 may be creating it now.)
    if !follower {
        RunFolder::check(&args.out, mode)?;
    }
    // --devices: one peer per device (the first one writes the run), else --device alone.
    let devices = if devices.is_empty() {
        vec![device.clone()]
    } else {
        devices
    };
    let device = &devices[0];
    let collectives = match args.group.several() {
        true => args.group.join(devices.len())?,
        false => Vec::new(),
    };
    let (name, splits, tokenizers) = args.task_data(mode != OpenMode::Resume)?;
    eprintln!(
        "task {name}: {} training, {} validation, {} test pairs",
        splits.train.len(),
        splits.dev.len(),
        splits.test.len()
    );
    let run = if follower {
        RunFolder::follower(&args.out)
    } else {
        RunFolder::open(&args.out, mode)?
    };
    let settings = args.settings()?;
    // A new run's vocabularies and model configuration, made once for every device.
    let new_run = if mode == OpenMode::Resume {
        run.write_config(&settings)?;
        None
    } else {
        let (codec, model) = match &args.init_from {
            Some(dir) => {
                let ckpt = Checkpoint::<AB>::load(dir, device)?;
                let model = ckpt.meta.model.clone().with_dropout(args.dropout);
                eprintln!(
                    "starting from the weights of {} (its architecture and vocabularies)",
                    dir.display()
                );
                (ckpt.codec, model)
            }
            None => {
                let (src_tok, tgt_tok) = tokenizers.expect("built for a new run");
                let codec = TextCodec::build(&splits.train, src_tok, tgt_tok, args.min_freq);
                let model = args.model_config(&codec);
                (codec, model)
            }
        };
        eprintln!(
            "vocabularies: {} source ({}), {} target ({}) tokens, specials included",
            codec.source_vocab.len(),
            codec.source_tokenizer.describe(),
            codec.target_vocab.len(),
            codec.target_tokenizer.describe()
        );
        Some((codec, model))
    };
    // The trainer of device k: the first writes the run folder (on rank 0), the others
    // follow it.
    let build = |k: usize| -> Result<Trainer<AB>> {
        let device = &devices[k];
        let run = match k {
            0 => run.clone(),
            _ => RunFolder::follower(&args.out),
        };
        Ok(match &new_run {
            None => Trainer::<AB>::resume(
                run,
                &splits.train,
                &splits.dev,
                Some(config.clone()),
                device,
            )?,
            Some((codec, model)) => {
                let initial = match &args.init_from {
                    Some(dir) => Some(Checkpoint::<AB>::load(dir, device)?.model),
                    None => None,
                };
                Trainer::<AB>::new(
                    name,
                    model.clone(),
                    codec.clone(),
                    &splits.train,
                    &splits.dev,
                    config.clone(),
                    run,
                    &settings,
                    initial,
                    device,
                )?
            }
        })
    };
    let trainers = (0..devices.len()).map(build).collect::<Result<Vec<_>>>()?;
    let stop = stop_flag()?;
    let stop: &AtomicBool = &stop;
    let report = if collectives.is_empty() {
        let mut trainers = trainers;
        run_with_progress(&mut trainers[0], stop, &args)?
    } else {
        // One thread per device; every peer's data and settings are checked against the
        // others' first (`with_collective`).
        let results: Vec<Result<TrainReport>> = std::thread::scope(|s| {
            let handles: Vec<_> = trainers
                .into_iter()
                .zip(collectives)
                .enumerate()
                .map(|(k, (trainer, collective))| {
                    let args = &args;
                    s.spawn(move || -> Result<TrainReport> {
                        let mut trainer = trainer.with_collective(collective)?;
                        let report = match k {
                            0 => run_with_progress(&mut trainer, stop, args)?,
                            _ => trainer.run(stop, &mut |_| {})?,
                        };
                        trainer.finish_collective()?;
                        Ok(report)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a training thread panicked")))
                })
                .collect()
        });
        let mut reports = Vec::new();
        for result in results {
            reports.push(result?);
        }
        reports.swap_remove(0)
    };
    let out = args.out.display().to_string();
    if follower {
        eprintln!(
            "rank {}: {:?} at step {}; rank 0 wrote the run to its {out}",
            args.group.node_rank, report.outcome, report.steps
        );
        if report.outcome == Outcome::Interrupted {
            std::process::exit(130);
        }
        return Ok(());
    }
    if report.outcome == Outcome::Interrupted {
        eprintln!(
            "stopped at step {}; last/ holds it. Continue with: s2s train --resume {out}",
            report.steps
        );
        std::process::exit(130);
    }
    eprintln!(
        "{}: step {}; best model (step {}, epoch {}) in {out}/best",
        match report.outcome {
            Outcome::Finished => "finished",
            Outcome::OutOfTime => "time limit reached",
            Outcome::EarlyStopped => "stopped early (patience)",
            Outcome::Interrupted => "interrupted",
        },
        report.steps,
        report.best_step,
        report.best_epoch
    );
    if !splits.test.is_empty() {
        let refs = group_references(&splits.test);
        let test = |dir: &std::path::Path| -> Result<s2s_train::Scores> {
            let ckpt = Checkpoint::<AB::InnerBackend>::load(dir, device)?;
            let (scores, _) = evaluate(
                &ckpt.model,
                &ckpt.codec,
                &refs,
                args.batch_size,
                args.max_len,
                device,
            );
            Ok(scores)
        };
        let mut line = serde_json::json!({ "split": "test", "scores": test(&args.out)? });
        let averaged = RunFolder::follower(&args.out).averaged();
        if args.average_last > 0 && averaged.is_dir() {
            line["averaged"] = serde_json::to_value(test(&averaged)?)?;
        }
        println!("{}", serde_json::to_string(&line)?);
    }
    Ok(())
}

fn cmd_decode<B: S2sBackend>(args: DecodeArgs, device: &B::Device) -> Result<()> {
    let translator = args.decoding.translator::<B>(&args.model, device)?;
    let strategy = args.decoding.strategy(
        translator.checkpoint.meta.max_decode_len,
        args.alignments.is_some(),
    )?;
    let mut sources = Vec::new();
    let mut lines = LineReader::new(Box::new(std::io::stdin().lock()), "stdin".into());
    while let Some((n, text)) = lines.next_line()? {
        let (ids, unknown) = translator.encode(&text);
        if !unknown.is_empty() {
            eprintln!(
                "warning: stdin:{n}: not in the source vocabulary, decoded as <unk>: {unknown:?}"
            );
        }
        sources.push(ids);
    }
    let hyps = translator.decode_ids(&sources, &strategy);
    let codec = &translator.checkpoint.codec;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for list in &hyps {
        if args.scores {
            for h in list {
                writeln!(out, "{}\t{}", codec.decode_target(&h.tokens), h.score)?;
            }
            writeln!(out)?;
        } else {
            let best = list.first().map(|h| h.tokens.as_slice()).unwrap_or(&[]);
            writeln!(out, "{}", codec.decode_target(best))?;
        }
    }
    out.flush()?;
    if let Some(path) = &args.alignments {
        write_alignments(path, codec, &sources, &hyps)?;
    }
    Ok(())
}

/// One JSON line per input: source tokens, output tokens and the attention matrix
/// (`attention[output step][source position]`) of the best hypothesis. `output` holds one
/// token per step, specials included, and ends with `<eos>` when the hypothesis did, so that
/// `attention[i]` is the attention of the step that produced `output[i]` (`s2s align` draws it).
fn write_alignments(
    path: &std::path::Path,
    codec: &TextCodec,
    sources: &[Vec<u32>],
    hyps: &[Vec<s2s_decode::Hypothesis>],
) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?,
    );
    for (i, (src, list)) in sources.iter().zip(hyps).enumerate() {
        let best = list.first();
        let source: Vec<&str> = src
            .iter()
            .map(|&t| codec.source_vocab.token(t).unwrap_or("<unk>"))
            .collect();
        let attention = best.and_then(|h| h.attention.clone()).unwrap_or_default();
        let mut ids = best.map(|h| h.tokens.clone()).unwrap_or_default();
        if attention.len() == ids.len() + 1 {
            ids.push(s2s_data::Vocab::EOS);
        }
        let output: Vec<&str> = ids
            .iter()
            .map(|&t| codec.target_vocab.token(t).unwrap_or("<unk>"))
            .collect();
        let line = serde_json::json!({ "index": i, "source": source, "output": output, "attention": attention });
        writeln!(file, "{line}").with_context(|| format!("{}: write failed", tmp.display()))?;
    }
    file.flush()
        .with_context(|| format!("{}: write failed", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

fn cmd_eval<B: S2sBackend>(args: EvalArgs, device: &B::Device) -> Result<()> {
    let translator = args.decoding.translator::<B>(&args.model, device)?;
    let ckpt = &translator.checkpoint;
    let (label, pairs): (String, Vec<Pair>) = match (&args.test, args.split) {
        (Some(path), _) => (path.display().to_string(), corpus::read_tsv(path)?),
        (None, Some(split)) => {
            let s = cmudict_splits(&args.data)?;
            match split {
                SplitArg::Dev => ("cmudict dev".into(), s.dev),
                SplitArg::Test => ("cmudict test".into(), s.test),
            }
        }
        (None, None) => bail!("give --test FILE or --split dev|test"),
    };
    let refs: Vec<Reference> = group_references(&pairs);
    let strategy = args.decoding.strategy(ckpt.meta.max_decode_len, false)?;
    let size = args.decoding.batch_size;
    let started = std::time::Instant::now();
    let (scores, predictions) = {
        let workers = args.decoding.workers.unwrap_or(1);
        evaluate_with(
            translator.models(),
            &ckpt.codec,
            &refs,
            &strategy,
            size,
            workers,
            device,
        )
    };
    let seconds = started.elapsed().as_secs_f64();
    let mode = match args.references {
        ReferencesArg::PerLine => ReferenceMode::PerLine,
        ReferencesArg::Grouped => ReferenceMode::Grouped,
    };
    let (bleu, chrf) = corpus_scores_with(&pairs, &refs, &predictions, mode)?;
    let references = match mode {
        ReferenceMode::PerLine => {
            format!("per-line ({} test lines, one reference each)", pairs.len())
        }
        ReferenceMode::Grouped => format!(
            "grouped ({} distinct sources, {} references in all)",
            refs.len(),
            pairs.len()
        ),
    };
    if args.json {
        let samples: Vec<_> = refs
            .iter()
            .zip(&predictions)
            .take(args.samples)
            .map(|(r, p)| serde_json::json!({ "source": r.source, "prediction": p, "references": r.targets }))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "test": label,
                "references": mode,
                "scores": scores,
                "bleu": { "score": bleu.score, "signature": bleu.signature(), "verbose": bleu.to_string() },
                "chrf": { "score": chrf.score, "signature": chrf.signature() },
                "decode_seconds": seconds,
                "samples": samples
            }))?
        );
    } else {
        println!("test: {label}");
        println!("sequences: {}", scores.count);
        println!("exact match: {:.2}%", 100.0 * scores.exact_match);
        println!("WER: {:.2}%", 100.0 * scores.wer);
        println!("token error rate (PER): {:.2}%", 100.0 * scores.ter);
        println!("BLEU/chrF references: {references}");
        println!("{bleu} ({})", bleu.signature());
        println!("{chrf} ({})", chrf.signature());
        println!(
            "decoding: {seconds:.2}s ({:.0} sequences/s)",
            scores.count as f64 / seconds.max(1e-9)
        );
        for (r, p) in refs.iter().zip(&predictions).take(args.samples) {
            println!("{}\t{}\t(ref: {})", r.source, p, r.targets.join(" | "));
        }
    }
    Ok(())
}

fn cmd_split(args: SplitArgs) -> Result<()> {
    let mut pairs = corpus::read_tsv(&args.input)?;
    let total = pairs.len();
    if args.swap {
        for p in &mut pairs {
            std::mem::swap(&mut p.source, &mut p.target);
        }
    }
    if args.tutorial_filter {
        pairs = corpus::tutorial_filter(pairs, args.max_words);
    }
    if pairs.is_empty() {
        bail!("{}: no pairs left after filtering", args.input.display());
    }
    let kept = pairs.len();
    let splits = Splits::by_source_hash(pairs);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    for (name, part) in [
        ("train.tsv", &splits.train),
        ("valid.tsv", &splits.dev),
        ("test.tsv", &splits.test),
    ] {
        let path = args.out.join(name);
        let tmp = path.with_extension("tsv.tmp");
        corpus::write_tsv(&tmp, part)?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    eprintln!(
        "{}: {total} pairs, {kept} kept; {} train, {} valid, {} test in {}",
        args.input.display(),
        splits.train.len(),
        splits.dev.len(),
        splits.test.len(),
        args.out.display()
    );
    Ok(())
}

fn cmd_translate<B: S2sBackend>(args: TranslateArgs, device: &B::Device) -> Result<()> {
    if args.chunk == 0 {
        bail!("--chunk must be at least 1");
    }
    if let (Some(input), Some(output)) = (&args.input, &args.output) {
        let same = input == output
            || std::fs::canonicalize(input)
                .ok()
                .zip(std::fs::canonicalize(output).ok())
                .is_some_and(|(a, b)| a == b);
        if same {
            bail!(
                "--input and --output are the same file ({}): the output would replace the input",
                input.display()
            );
        }
    }
    let translator = args.decoding.translator::<B>(&args.model, device)?;
    let strategy = args
        .decoding
        .strategy(translator.checkpoint.meta.max_decode_len, false)?;
    let (name, reader) = open_input(args.input.as_deref())?;
    let tmp = args.output.as_ref().map(|p| p.with_extension("tmp"));
    let mut out: Box<dyn Write> = match &tmp {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("{}: cannot create", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut lines = LineReader::new(reader, name);
    loop {
        let mut sources = Vec::with_capacity(args.chunk);
        while sources.len() < args.chunk {
            let Some((n, text)) = lines.next_line()? else {
                break;
            };
            let (ids, unknown) = translator.encode(&text);
            if !unknown.is_empty() {
                eprintln!(
                    "warning: {}:{n}: not in the source vocabulary, decoded as <unk>: {unknown:?}",
                    lines.name
                );
            }
            sources.push(ids);
        }
        if sources.is_empty() {
            break;
        }
        let hyps = translator.decode_ids(&sources, &strategy);
        for list in &hyps {
            let best = list.first().map(|h| h.tokens.as_slice()).unwrap_or(&[]);
            writeln!(out, "{}", translator.checkpoint.codec.decode_target(best))?;
        }
        out.flush()?;
    }
    drop(out);
    if let (Some(tmp), Some(path)) = (&tmp, &args.output) {
        std::fs::rename(tmp, path).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}

/// `s2s score`: one line per input line, the target's total log-probability (natural log,
/// `<eos>` included), and with `--per-token` each token's after a tab.
fn cmd_score<B: S2sBackend>(args: ScoreArgs, device: &B::Device) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let ckpt = Checkpoint::<B>::load(&args.model, device)?;
    let (name, reader) = open_input(args.input.as_deref())?;
    let mut lines = LineReader::new(reader, name);
    let mut examples = Vec::new();
    while let Some((n, text)) = lines.next_line()? {
        let Some((source, target)) = text.split_once('\t') else {
            bail!(
                "{}:{n}: expected `source<TAB>target`, found no tab",
                lines.name
            );
        };
        let codec = &ckpt.codec;
        let (source, unknown_source) = codec.encode_source(source.trim());
        let (target, unknown_target) = codec
            .target_vocab
            .encode_reporting(&codec.target_tokens(target.trim()));
        for (side, unknown) in [("source", unknown_source), ("target", unknown_target)] {
            if !unknown.is_empty() {
                eprintln!(
                    "warning: {}:{n}: not in the {side} vocabulary, scored as <unk>: {unknown:?}",
                    lines.name
                );
            }
        }
        examples.push(s2s_data::Example { source, target });
    }
    let scores = s2s_train::score::token_log_probs(&ckpt.model, &examples, args.batch_size, device);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for tokens in &scores {
        let total: f64 = tokens.iter().map(|&v| v as f64).sum();
        if args.per_token {
            let each: Vec<String> = tokens.iter().map(|v| v.to_string()).collect();
            writeln!(out, "{total}\t{}", each.join(" "))?;
        } else {
            writeln!(out, "{total}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The input's name for messages and a reader of it: the file, or stdin when there is none.
fn open_input(path: Option<&std::path::Path>) -> Result<(String, Box<dyn BufRead>)> {
    Ok(match path {
        Some(path) => (
            path.display().to_string(),
            Box::new(std::io::BufReader::new(
                std::fs::File::open(path)
                    .with_context(|| format!("{}: cannot open", path.display()))?,
            )),
        ),
        None => ("stdin".into(), Box::new(std::io::stdin().lock())),
    })
}

/// Reads lines of UTF-8 text, naming the input and line in errors.
struct LineReader {
    reader: Box<dyn BufRead>,
    name: String,
    line: usize,
    buf: Vec<u8>,
}

impl LineReader {
    fn new(reader: Box<dyn BufRead>, name: String) -> Self {
        LineReader {
            reader,
            name,
            line: 0,
            buf: Vec::new(),
        }
    }

    /// The next line (number, text without the line ending, trimmed), or `None` at the end.
    fn next_line(&mut self) -> Result<Option<(usize, String)>> {
        self.buf.clear();
        let read = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .with_context(|| format!("reading {}", self.name))?;
        if read == 0 {
            return Ok(None);
        }
        self.line += 1;
        let text = std::str::from_utf8(&self.buf).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: invalid UTF-8 at byte {}",
                self.name,
                self.line,
                e.valid_up_to()
            )
        })?;
        Ok(Some((
            self.line,
            text.trim_end_matches(['\n', '\r']).trim().to_string(),
        )))
    }
}
