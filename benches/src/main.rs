//! `s2s-bench`: one backend's side of the backend comparison benchmark
//! (`shared/docs/benchmark.md`), and the export that the PyTorch reference reads.
//!
//! - `s2s-bench export --cell gru|lstm --out DIR [--model DIR]` writes a checkpoint of the
//!   benchmark model (the trained G2P model when given and of the same cell, otherwise a seeded
//!   initialisation) to `DIR/checkpoint`, and for `benches/pytorch_g2p.py`: its weights
//!   (`model.json`), the training batches and test words (`data.json`) and reference outputs
//!   (`reference.json`: teacher-forced logits of one batch, greedy outputs of the 1,000 test
//!   words, every parameter's gradient of one batch's loss with label smoothing 0.1).
//! - `s2s-bench run --backend B [--device D] --model DIR/checkpoint` measures training
//!   throughput, greedy and beam-5 decoding (each the median of [`DECODE_PASSES`] passes over
//!   the test words, every pass in `*_words_s_passes`) and peak memory on one backend and
//!   prints one JSON line, with the matrix-product work of decoding (`greedy_gemm_mflop_per_word`,
//!   `beam5_gemm_mflop_per_word`). `cargo xtask bench` runs both for every compiled backend and
//!   prints the table. `--phases` adds the median milliseconds of each phase of a training step
//!   (`phase_forward_ms`, `phase_backward_ms`, `phase_clip_ms`, `phase_optimizer_ms`).

use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use clap::{Parser, Subcommand, ValueEnum};
use s2s_benches::{
    bench_model, cmudict, named_gradients, named_params, peak_rss_mib, CountingDecoder,
};
use s2s_data::batch::plan_training_batches;
use s2s_data::{BatchSize, Example, TextCodec, Tokenizer, TrainingBatch};
use s2s_decode::{decode_all, decode_all_parallel, BeamSearch, Greedy, Strategy};
use s2s_nn::{CellKind, Seq2Seq, Seq2SeqConfig};
use s2s_tensor::backend::{self as backends, Autodiff, BackendKind};
use s2s_tensor::ops;
use s2s_tensor::{S2sAutodiffBackend, S2sBackend};
use s2s_train::loss::masked_cross_entropy;
use s2s_train::trainer::clip_global_norm;
use s2s_train::{batch_gradients, AdamConfig, Checkpoint, CheckpointMeta};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Training steps measured, after [`WARMUP_STEPS`].
const TRAIN_STEPS: usize = 30;
/// Training steps run before the clock starts.
const WARMUP_STEPS: usize = 3;
/// Sentences per training and decoding batch.
const BATCH: usize = 64;
/// Test words decoded.
const WORDS: usize = 1000;
/// Maximum output length when decoding.
const MAX_LEN: usize = 40;
/// Passes over the test words for each decoding figure, which is the median pass: one pass
/// takes a fraction of a second, where a shared machine's slow spells last about as long.
const DECODE_PASSES: usize = 5;
/// Seed of the training batch order and of the untrained models.
const SEED: u64 = 1;
/// Label smoothing of the loss whose gradients the export writes.
const GRADIENT_SMOOTHING: f32 = 0.1;

#[derive(Parser)]
#[command(name = "s2s-bench", about = "The s2s backend comparison benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the benchmark model, batches and reference outputs for every side to read.
    Export {
        /// Recurrent cell.
        #[arg(long, value_enum)]
        cell: Cell,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// A trained checkpoint to use when its cell matches (decoding lengths are then
        /// realistic).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Measure one backend and print one JSON line.
    Run {
        /// Backend.
        #[arg(long, default_value = "flex")]
        backend: String,
        /// Device of the backend (as for `s2s --device`).
        #[arg(long, default_value = "default")]
        device: String,
        /// The checkpoint written by `export`.
        #[arg(long)]
        model: PathBuf,
        /// CPU threads (rayon for flex, intra-op threads for libtorch); default: all cores.
        #[arg(long)]
        threads: Option<usize>,
        /// Workers: training batches' rows and decoding batches are shared out among this
        /// many threads, each running `threads / workers` intra-op threads (libtorch), so the
        /// total stays `threads`. The `--phases` pass runs one worker.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Leave out the training measurement.
        #[arg(long)]
        no_train: bool,
        /// Leave out the beam search measurement.
        #[arg(long)]
        no_beam: bool,
        /// Also time the phases of a training step (forward, backward, clipping, optimizer)
        /// in a separate pass with a device sync between phases.
        #[arg(long)]
        phases: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Cell {
    Gru,
    Lstm,
}

impl From<Cell> for CellKind {
    fn from(c: Cell) -> Self {
        match c {
            Cell::Gru => CellKind::Gru,
            Cell::Lstm => CellKind::Lstm,
        }
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().command {
        Command::Export { cell, out, model } => export(cell.into(), &out, model.as_deref()),
        Command::Run {
            backend,
            device,
            model,
            threads,
            workers,
            no_train,
            no_beam,
            phases,
        } => {
            let threads = threads.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build_global()
                .context("setting up the rayon thread pool")?;
            let kind: BackendKind = backend.parse()?;
            kind.ensure_compiled()?;
            let opts = RunOptions {
                backend: kind,
                device,
                model,
                threads,
                workers: workers.max(1),
                train: !no_train,
                beam: !no_beam,
                phases,
            };
            let result = match kind {
                #[cfg(feature = "flex")]
                BackendKind::Flex => {
                    let device = backends::flex_device(&opts.device)?;
                    measure::<backends::Flex, Autodiff<backends::Flex>>(&opts, &device)?
                }
                #[cfg(feature = "tch")]
                BackendKind::Tch => {
                    backends::set_tch_threads(threads);
                    let device = backends::tch_device(&opts.device)?;
                    measure::<backends::Tch, Autodiff<backends::Tch>>(&opts, &device)?
                }
                #[cfg(feature = "wgpu")]
                BackendKind::Wgpu => {
                    let device = backends::wgpu_device(&opts.device)?;
                    measure::<backends::Wgpu, Autodiff<backends::Wgpu>>(&opts, &device)?
                }
                #[allow(unreachable_patterns)]
                other => bail!("backend {other} is compiled into s2s-tensor but not into s2s-bench; build with --features {other}"),
            };
            println!("{result}");
            Ok(())
        }
    }
}

/// The codec and the encoded training and test data, built the same way on every side.
struct BenchData {
    codec: TextCodec,
    train: Vec<Example>,
    batches: Vec<Vec<usize>>,
    test: Vec<Vec<u32>>,
}

fn bench_data(codec: Option<TextCodec>) -> BenchData {
    let splits = cmudict();
    let codec = codec.unwrap_or_else(|| {
        TextCodec::build(&splits.train, Tokenizer::Chars, Tokenizer::Whitespace, 1)
    });
    let train = codec.encode_pairs(&splits.train);
    let lengths: Vec<(usize, usize)> = train
        .iter()
        .map(|e| (e.source.len(), e.target.len()))
        .collect();
    let batches = plan_training_batches(&lengths, BatchSize::Sentences(BATCH), SEED)
        .into_iter()
        .take(WARMUP_STEPS + TRAIN_STEPS)
        .collect();
    let test = splits
        .test
        .iter()
        .take(WORDS)
        .map(|p| codec.encode_source(&p.source).0)
        .collect();
    BenchData {
        codec,
        train,
        batches,
        test,
    }
}

fn export(cell: CellKind, out: &Path, trained: Option<&Path>) -> Result<()> {
    use s2s_tensor::backend::DefaultBackend as B;
    let device = Default::default();
    let loaded = trained
        .map(|dir| Checkpoint::<B>::load(dir, &device))
        .transpose()
        .context("loading the trained model")?
        .filter(|c| c.meta.model.cell == cell);
    let is_trained = loaded.is_some();
    let (model, data, meta) = match loaded {
        Some(c) => {
            let data = bench_data(Some(c.codec));
            (c.model, data, c.meta)
        }
        None => {
            let data = bench_data(None);
            let config = bench_model(
                data.codec.source_vocab.len(),
                data.codec.target_vocab.len(),
                cell,
            );
            let model = s2s_tensor::backend::seeded_module::<B, _>(&device, SEED, || {
                config.init::<B>(&device)
            });
            let meta = CheckpointMeta {
                format: 1,
                task: "g2p-bench".into(),
                model: config,
                source_tokenizer: Tokenizer::Chars,
                target_tokenizer: Tokenizer::Whitespace,
                max_decode_len: MAX_LEN,
                summary: json!({ "untrained": true }),
                s2s_version: String::new(),
            };
            (model, data, meta)
        }
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, value: serde_json::Value| -> Result<()> {
        let path = out.join(name);
        std::fs::write(&path, serde_json::to_vec(&value)?)
            .with_context(|| format!("writing {}", path.display()))
    };
    let config = &meta.model;
    write(
        "model.json",
        json!({
            "cell": if cell == CellKind::Gru { "gru" } else { "lstm" },
            "trained": is_trained,
            "config": config,
            "pad": s2s_data::Vocab::PAD, "sos": s2s_data::Vocab::SOS, "eos": s2s_data::Vocab::EOS,
            "params": named_params(&model),
        }),
    )?;
    let batches: Vec<Vec<serde_json::Value>> = data
        .batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|&i| json!({"source": data.train[i].source, "target": data.train[i].target}))
                .collect()
        })
        .collect();
    write(
        "data.json",
        json!({
            "warmup_steps": WARMUP_STEPS, "train_steps": TRAIN_STEPS, "batch": BATCH,
            "max_len": MAX_LEN, "train_batches": batches, "test_sources": data.test,
        }),
    )?;
    // Reference outputs: teacher-forced logits of the first training batch, the greedy
    // outputs of the test words, and the gradients of the first batch's loss.
    let examples: Vec<&Example> = data.batches[0].iter().map(|&i| &data.train[i]).collect();
    let batch = TrainingBatch::<B>::new(&examples, &device);
    let logits = model.forward(
        batch.source.clone(),
        &batch.source_lengths,
        batch.target_input.clone(),
    );
    s2s_tensor::tuning::prefer_unpacked_gemm_weights();
    let greedy = decode_all(
        &model,
        &Greedy::new(MAX_LEN),
        &data.test,
        BatchSize::Sentences(BATCH),
        &device,
    );
    let checkpoint = out.join("checkpoint");
    Checkpoint {
        meta,
        codec: data.codec,
        model,
    }
    .save(&checkpoint)?;
    // The same weights on the autodiff backend, as training sees them.
    let trainee = Checkpoint::<Autodiff<B>>::load(&checkpoint, &device)?.model;
    let batch = TrainingBatch::<Autodiff<B>>::new(&examples, &device);
    let logits_ad = trainee.forward(batch.source, &batch.source_lengths, batch.target_input);
    let loss = masked_cross_entropy(logits_ad, batch.target_output, GRADIENT_SMOOTHING);
    let grads = GradientsParams::from_grads(loss.backward(), &trainee);
    write(
        "reference.json",
        json!({
            "batch": 0,
            "logits_shape": logits.dims(),
            "logits": ops::to_vec_f32(logits),
            "greedy": greedy.iter().map(|h| &h[0].tokens).collect::<Vec<_>>(),
            "label_smoothing": GRADIENT_SMOOTHING,
            "gradients": named_gradients(&trainee, &grads),
        }),
    )?;
    eprintln!(
        "exported the {} {cell:?} model to {}",
        if is_trained { "trained" } else { "untrained" },
        out.display()
    );
    Ok(())
}

struct RunOptions {
    backend: BackendKind,
    device: String,
    model: PathBuf,
    threads: usize,
    workers: usize,
    train: bool,
    beam: bool,
    phases: bool,
}

fn measure<B: S2sBackend, AB: S2sAutodiffBackend<InnerBackend = B, Device = B::Device>>(
    opts: &RunOptions,
    device: &B::Device,
) -> Result<serde_json::Value> {
    let ckpt = Checkpoint::<B>::load(&opts.model, device)?;
    let cell = ckpt.meta.model.cell;
    let data = bench_data(Some(ckpt.codec.clone()));
    let mut result = json!({
        "side": opts.backend.name(),
        "device": opts.device,
        "cell": if cell == CellKind::Gru { "gru" } else { "lstm" },
        "threads": opts.threads,
        "workers": opts.workers,
        "trained": ckpt.meta.summary.get("untrained").is_none(),
    });
    // The workers share the threads: `threads / workers` intra-op threads each.
    backends::set_intra_op_threads(opts.backend, (opts.threads / opts.workers).max(1));
    if opts.train {
        let start = Checkpoint::<AB>::load(&opts.model, device)?.model;
        let (tokens_per_s, _) = train_steps::<AB>(start, &data, device, opts.workers, false)?;
        result["train_tok_s"] = json!(tokens_per_s);
    }
    let model = ckpt.model;
    let config = &ckpt.meta.model;
    let mut record = |name: &str, f: DecodeFigures| {
        result[format!("{name}_words_s")] = json!(f.words_s);
        result[format!("{name}_words_s_passes")] = json!(f.passes);
        result[format!("{name}_out_tokens")] = json!(f.out_tokens);
        result[format!("{name}_gemm_mflop_per_word")] = json!(f.gemm_mflop_per_word);
    };
    // Training above ran with gemm's own packing; decoding runs as the s2s binary does.
    s2s_tensor::tuning::prefer_unpacked_gemm_weights();
    let greedy = Greedy::new(MAX_LEN);
    record(
        "greedy",
        decode_throughput(&model, config, &greedy, &data, device, opts.workers),
    );
    if opts.beam {
        let beam = BeamSearch::new(5, MAX_LEN);
        record(
            "beam5",
            decode_throughput(&model, config, &beam, &data, device, opts.workers),
        );
    }
    // Peak memory of the measurements above, before the extra pass of `--phases`.
    result["peak_rss_mib"] = json!(peak_rss_mib());
    if opts.phases {
        // One worker with every thread, so that the phases are those of one step.
        backends::set_intra_op_threads(opts.backend, opts.threads);
        let start = Checkpoint::<AB>::load(&opts.model, device)?.model;
        let (_, phases) = train_steps::<AB>(start, &data, device, 1, true)?;
        for (name, ms) in PHASES.iter().zip(phases) {
            result[format!("phase_{name}_ms")] = json!(ms);
        }
    }
    Ok(result)
}

/// The phases of a training step that `--phases` times.
const PHASES: [&str; 4] = ["forward", "backward", "clip", "optimizer"];

/// Target tokens per second over [`TRAIN_STEPS`] steps after [`WARMUP_STEPS`], from the
/// given weights: forward, backward, global-norm clipping at 1.0 and an Adam step.
///
/// With `workers > 1`, every batch's rows are shared out among that many threads
/// ([`batch_gradients`]). With `phases` (one worker), the device is synced after every phase
/// and the second result holds the median milliseconds of each of [`PHASES`] over the
/// measured steps (the syncs slow the steps down, so the throughput of such a pass is not the
/// one to report).
fn train_steps<AB: S2sAutodiffBackend>(
    mut model: Seq2Seq<AB>,
    data: &BenchData,
    device: &AB::Device,
    workers: usize,
    phases: bool,
) -> Result<(f64, Vec<f64>)> {
    let sync = || AB::sync(device).map_err(|e| anyhow::anyhow!("device sync failed: {e:?}"));
    let mut optim = AdamConfig::new().init::<AB>(workers);
    let mut tokens = 0usize;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); PHASES.len()];
    let mut start = Instant::now();
    for (i, indices) in data.batches.iter().enumerate() {
        if i == WARMUP_STEPS {
            sync()?;
            start = Instant::now();
            tokens = 0;
            times.iter_mut().for_each(Vec::clear);
        }
        let mut lap = Instant::now();
        let mut phase_done = |phase: usize| -> Result<()> {
            if phases {
                sync()?;
                times[phase].push(lap.elapsed().as_secs_f64() * 1e3);
                lap = Instant::now();
            }
            Ok(())
        };
        let examples: Vec<&Example> = indices.iter().map(|&j| &data.train[j]).collect();
        let mut grads = if workers > 1 {
            let out = batch_gradients(&model, &examples, 0.0, workers, device, |m, b, _| {
                m.forward(b.source.clone(), &b.source_lengths, b.target_input.clone())
            });
            tokens += out.tokens;
            out.grads
        } else {
            let batch = TrainingBatch::<AB>::new(&examples, device);
            tokens += batch.target_tokens();
            let logits = model.forward(batch.source, &batch.source_lengths, batch.target_input);
            let loss = masked_cross_entropy(logits, batch.target_output, 0.0);
            phase_done(0)?;
            let raw = loss.backward();
            phase_done(1)?;
            GradientsParams::from_grads(raw, &model)
        };
        clip_global_norm(&model, &mut grads, 1.0);
        phase_done(2)?;
        model = optim.step(1e-3, model, grads);
        phase_done(3)?;
    }
    sync()?;
    let secs = start.elapsed().as_secs_f64();
    let _ = model.valid();
    let medians = times.into_iter().map(median).collect();
    Ok((tokens as f64 / secs, medians))
}

/// The median of some values (0 for none).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// What [`decode_throughput`] measured.
struct DecodeFigures {
    /// Words per second of the median pass.
    words_s: f64,
    /// Words per second of every pass, in order.
    passes: Vec<f64>,
    /// Output tokens of one pass (`<eos>` excluded).
    out_tokens: usize,
    /// Matrix-product work of one pass in MFLOP per word
    /// ([`s2s_benches::DecodingWork::gemm_flops`]).
    gemm_mflop_per_word: f64,
}

/// Words per second decoding the test words in batches of [`BATCH`], after one warm-up
/// batch per worker: the median of [`DECODE_PASSES`] passes over all the words.
fn decode_throughput<B: S2sBackend, S: for<'m> Strategy<B, CountingDecoder<'m, B>> + Sync>(
    model: &Seq2Seq<B>,
    config: &Seq2SeqConfig,
    strategy: &S,
    data: &BenchData,
    device: &B::Device,
    workers: usize,
) -> DecodeFigures {
    // One batch per worker, on the workers' threads.
    let warm_up = CountingDecoder::new(model);
    let _ = decode_all_parallel(
        &warm_up,
        strategy,
        &data.test[..(BATCH * workers).min(data.test.len())],
        BatchSize::Sentences(BATCH),
        device,
        workers,
    );
    let words = data.test.len() as f64;
    let mut passes = Vec::with_capacity(DECODE_PASSES);
    let mut first = None;
    for _ in 0..DECODE_PASSES {
        let counter = CountingDecoder::new(model);
        let start = Instant::now();
        let out = decode_all_parallel(
            &counter,
            strategy,
            &data.test,
            BatchSize::Sentences(BATCH),
            device,
            workers,
        );
        passes.push(words / start.elapsed().as_secs_f64());
        let tokens: usize = out.iter().map(|h| h[0].tokens.len()).sum();
        let mflop = counter.work().gemm_flops(config) / words / 1e6;
        first.get_or_insert((tokens, mflop));
    }
    let (out_tokens, gemm_mflop_per_word) = first.expect("at least one pass");
    DecodeFigures {
        words_s: median(passes.clone()),
        passes,
        out_tokens,
        gemm_mflop_per_word,
    }
}
