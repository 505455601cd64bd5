//! The ceiling of a server whose rounds hold R words: the words of a file decoded in process,
//! R consecutive words per call of `Translator::translate` (as `s2s serve` decodes a round:
//! the words of one round sorted by length and shared among the workers), with no HTTP, JSON
//! or client. Prints one JSON line per R with words/s, and the same words decoded in one call
//! (offline). `scripts/serve-bench.sh` runs it (docs/serving.md).
//!
//! ```sh
//! cargo run --release -p s2s-benches --example serve_rounds -- MODEL_DIR WORDS_FILE PASSES R...
//! ```

use anyhow::{Context, Result};
use s2s_infer::{DecodeOptions, Translator};
use s2s_tensor::backend::DefaultBackend as B;
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(
        args.len() >= 3,
        "usage: serve_rounds MODEL_DIR WORDS_FILE PASSES [R...]"
    );
    s2s_tensor::tuning::prefer_unpacked_gemm_weights();
    let model = PathBuf::from(&args[0]);
    let text = std::fs::read_to_string(&args[1]).with_context(|| args[1].clone())?;
    let passes: usize = args[2].parse().context("PASSES")?;
    let rounds: Vec<usize> = args[3..]
        .iter()
        .map(|r| r.parse().context("R"))
        .collect::<Result<_>>()?;
    let words: Vec<&str> = text.lines().collect();
    let all: Vec<&str> = (0..passes).flat_map(|_| words.iter().copied()).collect();
    let mut translator = Translator::<B>::load(&[model], &Default::default())?;
    translator.workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = DecodeOptions::default();
    let rate = |r: usize| -> Result<f64> {
        let start = Instant::now();
        for chunk in all.chunks(r) {
            translator.translate(chunk, &options)?;
        }
        Ok(all.len() as f64 / start.elapsed().as_secs_f64())
    };
    let offline = rate(all.len())?;
    println!(
        "{}",
        serde_json::json!({ "round": "all", "words": all.len(), "words_per_second": offline })
    );
    for r in rounds {
        let wps = rate(r)?;
        println!(
            "{}",
            serde_json::json!({
                "round": r,
                "words": all.len(),
                "words_per_second": wps,
                "of_offline": wps / offline,
            })
        );
    }
    Ok(())
}
