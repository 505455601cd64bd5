//! Translating through the library API instead of the CLI: load a model folder trained by
//! `cargo xtask train --task eng-fra`, decode a test file with batched beam search, detokenize
//! and score BLEU and chrF (sacreBLEU's defaults).
//!
//! ```sh
//! cargo xtask train --task eng-fra
//! cargo run --release -p s2s-example-translate -- runs/eng-fra runs/eng-fra-data/test.tsv
//! ```

use anyhow::{Context, Result};
use s2s_data::corpus;
use s2s_decode::LengthPenalty;
use s2s_infer::{DecodeOptions, StrategyKind, Translator};
use s2s_metrics::{corpus_bleu, corpus_chrf};
use s2s_tensor::backend::{flex_device, Flex};
use std::path::PathBuf;

fn main() -> Result<()> {
    // Decoding's products use their weights in place (process-wide, set once).
    s2s_tensor::tuning::prefer_unpacked_gemm_weights();
    let mut args = std::env::args().skip(1);
    let usage = "usage: s2s-example-translate MODEL_DIR TEST.tsv [BEAM_SIZE]";
    let model = PathBuf::from(args.next().context(usage)?);
    let test = PathBuf::from(args.next().context(usage)?);
    let beam: usize = match args.next() {
        Some(b) => b.parse().context("BEAM_SIZE must be a number")?,
        None => 5,
    };

    // The concrete backend is chosen here, in the runner; everything below is generic.
    let device = flex_device("cpu")?;
    let translator = Translator::<Flex>::load(&[model], &device)?;
    let pairs = corpus::read_tsv(&test)?;

    // Text in, text out: the model's own tokenizer (BPE for eng-fra) and vocabulary;
    // sentences are sorted by length into batches and come back in input order.
    let options = DecodeOptions {
        strategy: StrategyKind::Beam,
        beam_size: beam.max(1),
        length_penalty: LengthPenalty::Average(1.0),
        ..Default::default()
    };
    let sources: Vec<&str> = pairs.iter().map(|p| p.source.as_str()).collect();
    let started = std::time::Instant::now();
    let translations = translator.translate(&sources, &options)?;
    let secs = started.elapsed().as_secs_f64();
    let outputs: Vec<String> = translations
        .into_iter()
        .map(|t| {
            t.outputs
                .into_iter()
                .next()
                .map(|o| o.text)
                .unwrap_or_default()
        })
        .collect();

    for (p, o) in pairs.iter().zip(&outputs).take(5) {
        println!("{}\n  -> {o}\n  (reference: {})", p.source, p.target);
    }
    let refs = [pairs.iter().map(|p| p.target.as_str()).collect::<Vec<_>>()];
    let bleu = corpus_bleu(&outputs, &refs)?;
    let chrf = corpus_chrf(&outputs, &refs)?;
    println!(
        "{} sentences, beam {beam}, {:.0} sentences/s",
        pairs.len(),
        pairs.len() as f64 / secs
    );
    println!("{bleu}  ({})", bleu.signature());
    println!("{chrf}  ({})", chrf.signature());
    Ok(())
}
