//! Project automation, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! - `train`: trains the default task (CMUdict G2P) within a time budget on the CPU, prints
//!   test WER/PER and sample words, and leaves a model for `s2s decode`.
//! - `test`: the project's full check: formatting, clippy, and the whole test suite.
//! - `bench`: the benchmarks in `benches/`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const USAGE: &str = "usage: cargo xtask <command> [options]

commands:
  train [--task g2p|copy|reverse|sort|double|tsv] [--epochs N] [--out DIR]
        [--time-limit SECONDS] [--backend flex] [-- EXTRA s2s train OPTIONS]
        Train (default: CMUdict G2P, 15 minutes in all on a 2-core CPU), then print the
        test WER/PER and sample words. The model lands in --out (default runs/g2p).
  test  Check formatting, run clippy with -D warnings, and run every test (release mode).
  bench Run the benchmarks in benches/ and print their figures.";

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(project_root());
    c
}

fn run(mut cmd: Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("train") => train(&args[1..]),
        Some("test") => test(),
        Some("bench") => bench(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

fn test() -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run(fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--release",
        "--",
        "-D",
        "warnings",
    ]);
    run(clippy)?;
    let mut tests = cargo();
    tests.args(["test", "--workspace", "--release"]);
    run(tests)
}

fn bench(extra: &[String]) -> Result<()> {
    let mut b = cargo();
    b.args(["bench", "-p", "s2s-benches"]).args(extra);
    run(b)
}

struct TrainOptions {
    task: String,
    epochs: String,
    out: PathBuf,
    time_limit: f64,
    backend: String,
    extra: Vec<String>,
}

fn parse_train(args: &[String]) -> Result<TrainOptions> {
    let mut o = TrainOptions {
        task: "g2p".into(),
        epochs: "100".into(),
        out: PathBuf::from("runs/g2p"),
        // 15 minutes in all: training stops at this budget, then the last validation and the
        // test evaluation run.
        time_limit: 840.0,
        backend: "flex".into(),
        extra: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--task" => o.task = value()?,
            "--epochs" => o.epochs = value()?,
            "--out" => o.out = PathBuf::from(value()?),
            "--time-limit" => {
                o.time_limit = value()?.parse().context("--time-limit takes seconds")?
            }
            "--backend" => o.backend = value()?,
            "--" => {
                o.extra = it.cloned().collect();
                break;
            }
            other => bail!("unknown train option {other:?}\n\n{USAGE}"),
        }
    }
    if o.task != "g2p" && o.out == Path::new("runs/g2p") {
        o.out = PathBuf::from(format!("runs/{}", o.task));
    }
    Ok(o)
}

fn train(args: &[String]) -> Result<()> {
    let o = parse_train(args)?;
    let mut build = cargo();
    build.args(["build", "--release", "-p", "s2s-cli"]);
    run(build)?;
    let s2s = project_root().join("target/release/s2s");
    let out = if o.out.is_absolute() {
        o.out.clone()
    } else {
        project_root().join(&o.out)
    };
    let started = std::time::Instant::now();
    let mut cmd = Command::new(&s2s);
    cmd.args([
        "--backend",
        &o.backend,
        "train",
        "--task",
        &o.task,
        "--epochs",
        &o.epochs,
    ])
    .arg("--out")
    .arg(&out)
    .args(["--time-limit", &o.time_limit.to_string()])
    // The default recipe: Adam at 2e-3 with a short warmup and a cosine decay over 2,600
    // steps (what this project's 2-core machine does in about 12 minutes); the time limit
    // only guards slower machines. Later options (after `--`) override these.
    .args([
        "--lr",
        "2e-3",
        "--warmup",
        "200",
        "--decay",
        "cosine",
        "--max-steps",
        "2600",
    ])
    .args(&o.extra)
    .current_dir(project_root());
    // Progress and epoch lines (stderr) go straight to the terminal; the test scores come
    // back on stdout.
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    eprintln!("$ {cmd:?}");
    let trained = cmd.output().context("running s2s train")?;
    if !trained.status.success() {
        bail!("s2s train failed with {}", trained.status);
    }
    let train_secs = started.elapsed().as_secs_f64();
    // `s2s train` prints the test scores as one JSON line when the task has a test split.
    let printed = String::from_utf8_lossy(&trained.stdout);
    let Some(line) = printed.lines().rev().find(|l| l.starts_with('{')) else {
        println!(
            "model saved to {} ({train_secs:.0}s); no test split to score",
            out.display()
        );
        return Ok(());
    };
    let mut report: serde_json::Value =
        serde_json::from_str(line).context("parsing s2s train output")?;
    if o.task == "g2p" {
        // Sample words from the test split.
        let mut eval = Command::new(&s2s);
        eval.args(["--backend", &o.backend, "eval", "--model"])
            .arg(&out)
            .args(["--split", "test", "--json", "--samples", "10"])
            .current_dir(project_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        eprintln!("$ {eval:?}");
        let output = eval.output().context("running s2s eval")?;
        if !output.status.success() {
            bail!(
                "s2s eval failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        report = serde_json::from_slice(&output.stdout).context("parsing s2s eval output")?;
    }
    let scores = &report["scores"];
    let total = started.elapsed().as_secs_f64();
    println!(
        "== {}: test split, {} sequences ==",
        o.task, scores["count"]
    );
    println!(
        "WER: {:.2}%",
        100.0 * scores["wer"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "PER (token error rate): {:.2}%",
        100.0 * scores["ter"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "exact match: {:.2}%",
        100.0 * scores["exact_match"].as_f64().unwrap_or(f64::NAN)
    );
    println!("time: {train_secs:.0}s training, {total:.0}s in all");
    println!("samples (source -> prediction | references):");
    for s in report["samples"].as_array().into_iter().flatten() {
        println!(
            "  {} -> {} | {}",
            s["source"].as_str().unwrap_or(""),
            s["prediction"].as_str().unwrap_or(""),
            s["references"]
        );
    }
    println!(
        "model: {} (try: echo hello | target/release/s2s decode --model {})",
        out.display(),
        out.display()
    );
    Ok(())
}
