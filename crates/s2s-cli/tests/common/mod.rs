//! Helpers shared by the tests that run the `s2s` binary.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `s2s` with `args`, `stdin` on its standard input.
pub fn s2s(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_s2s"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("s2s runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn train_tiny(dir: &Path) -> String {
    train_tiny_with(dir, &[])
}

/// `train_tiny` with more options.
pub fn train_tiny_with(dir: &Path, extra: &[&str]) -> String {
    let model = dir.join("m");
    let model_str = model.to_str().unwrap().to_string();
    let args: Vec<&str> = [
        "train",
        "--task",
        "reverse",
        "--synthetic-size",
        "600",
        "--epochs",
        "1",
        "--embed",
        "8",
        "--hidden",
        "16",
        "--decoder-hidden",
        "16",
        "--attention-dim",
        "16",
        "--max-len",
        "20",
        "--no-progress",
        "--out",
        &model_str,
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect();
    let out = s2s(&args, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The test split's scores come as one JSON line.
    let json: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(json["split"], "test");
    // A run folder: its settings, its log, and the best and last models.
    for file in [
        "config.json",
        "metrics.jsonl",
        "best/config.json",
        "best/model.safetensors",
        "last/model.safetensors",
        "last/training_state.json",
        "last/optimizer.bin",
    ] {
        assert!(model.join(file).is_file(), "{file}");
    }
    model_str
}
