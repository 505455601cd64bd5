//! Training throughput (target tokens/s) and greedy decoding throughput (words/s) of the
//! g2p-bench model on the default CPU backend, following `shared/docs/benchmark.md`:
//! training over 30 steps after 3 warm-up steps (batch 64), greedy decoding of 1,000 test
//! words in batches of 64 with max length 40.
//!
//! Decoding uses the trained model in `runs/g2p` (from `cargo xtask train`) when present,
//! or `S2S_BENCH_MODEL=DIR`; otherwise an untrained model, which it says, since untrained
//! outputs run to the maximum length.

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use s2s_benches::{bench_model, cmudict, project_root};
use s2s_data::batch::plan_training_batches;
use s2s_data::{BatchSize, Example, TextCodec, Tokenizer, TrainingBatch};
use s2s_decode::{decode_all, Greedy};
use s2s_nn::{CellKind, Seq2Seq};
use s2s_tensor::backend::{DefaultAutodiffBackend as AB, DefaultBackend as B};
use s2s_train::loss::masked_cross_entropy;
use s2s_train::trainer::clip_global_norm;
use s2s_train::Checkpoint;
use std::time::Instant;

fn main() {
    let splits = cmudict();
    let codec = TextCodec::build(&splits.train, Tokenizer::Chars, Tokenizer::Whitespace, 1);
    let device = Default::default();
    let train = codec.encode_pairs(&splits.train);
    let lengths: Vec<(usize, usize)> = train
        .iter()
        .map(|e| (e.source.len(), e.target.len()))
        .collect();
    let plan = plan_training_batches(&lengths, BatchSize::Sentences(64), 1);
    println!(
        "machine threads: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    for cell in [CellKind::Gru, CellKind::Lstm] {
        let mut model: Seq2Seq<AB> =
            bench_model(codec.source_vocab.len(), codec.target_vocab.len(), cell).init(&device);
        let mut optim = AdamConfig::new().init::<AB, Seq2Seq<AB>>();
        let mut tokens = 0usize;
        let mut start = Instant::now();
        for (i, indices) in plan.iter().take(33).enumerate() {
            if i == 3 {
                start = Instant::now();
                tokens = 0;
            }
            let examples: Vec<&Example> = indices.iter().map(|&j| &train[j]).collect();
            let batch = TrainingBatch::<AB>::new(&examples, &device);
            tokens += batch.target_tokens();
            let logits = model.forward(batch.source, &batch.source_lengths, batch.target_input);
            let loss = masked_cross_entropy(logits, batch.target_output, 0.0);
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            clip_global_norm(&model, &mut grads, 1.0);
            model = optim.step(1e-3, model, grads);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "train {cell:?}: {:.0} target tokens/s ({tokens} tokens in {secs:.2}s)",
            tokens as f64 / secs
        );
        let _ = model.valid();
    }

    let model_dir = std::env::var("S2S_BENCH_MODEL")
        .map(Into::into)
        .unwrap_or_else(|_| project_root().join("runs/g2p"));
    let (model, codec, label) = match Checkpoint::<B>::load(&model_dir, &device) {
        Ok(c) => (
            c.model,
            c.codec,
            format!("trained model {}", model_dir.display()),
        ),
        Err(_) => (
            bench_model(
                codec.source_vocab.len(),
                codec.target_vocab.len(),
                CellKind::Gru,
            )
            .init::<B>(&device),
            codec,
            "UNTRAINED model (run `cargo xtask train` first for realistic output lengths)"
                .to_string(),
        ),
    };
    let words: Vec<Vec<u32>> = splits
        .test
        .iter()
        .take(1000)
        .map(|p| codec.encode_source(&p.source).0)
        .collect();
    let greedy = Greedy::new(40);
    let _ = decode_all(
        &model,
        &greedy,
        &words[..64],
        BatchSize::Sentences(64),
        &device,
    );
    let start = Instant::now();
    let out = decode_all(&model, &greedy, &words, BatchSize::Sentences(64), &device);
    let secs = start.elapsed().as_secs_f64();
    let out_tokens: usize = out.iter().map(|h| h[0].tokens.len()).sum();
    println!(
        "greedy ({label}): {:.0} words/s ({} words, {out_tokens} output tokens, {secs:.2}s)",
        words.len() as f64 / secs,
        words.len()
    );
}
