//! The PyTorch reference module (`benches/pytorch_g2p.py`) computes what the s2s model
//! computes, for both cells: a small model is trained for 300 steps (so that greedy outputs
//! end and their argmaxes are not near ties), `s2s-bench export --model` writes it with its
//! teacher-forced logits, greedy outputs of 1,000 test words and every parameter's gradient
//! of one batch's loss (label smoothing 0.1), and the script rebuilds the model in PyTorch
//! from the exported weights and compares: logits within 1e-4 relative, every gradient within
//! 1e-4 of its parameter's largest gradient value (or it exits with an error), and every
//! greedy output equal.
//!
//! It needs the project's virtualenv with torch (`$S2S_VENV`, else `.venv`). Without one it
//! says so and passes, unless `S2S_REQUIRE_TORCH=1` (set by `cargo xtask test` whenever it
//! uses the virtualenv), which makes a missing torch a failure.

use s2s_data::{TextCodec, Tokenizer};
use s2s_nn::{CellKind, Seq2SeqConfig};
use s2s_tensor::backend::{Autodiff, DefaultBackend};
use s2s_train::{train, TrainConfig};
use std::path::PathBuf;
use std::process::Command;

/// A run folder of a small model of `cell` trained for 300 steps on CMUdict.
fn trained(cell: CellKind, dir: &std::path::Path) -> PathBuf {
    let splits = s2s_benches::cmudict();
    let codec = TextCodec::build(&splits.train, Tokenizer::Chars, Tokenizer::Whitespace, 1);
    let model = Seq2SeqConfig::new(0, 0)
        .with_d_embed(32)
        .with_d_hidden(64)
        .with_d_decoder(64)
        .with_d_attention(64)
        .with_cell(cell);
    let config = TrainConfig::new()
        .with_epochs(1)
        .with_max_steps(Some(300))
        .with_batch_size(64)
        .with_lr(3e-3)
        .with_max_decode_len(40);
    let out = dir.join("run");
    train::<Autodiff<DefaultBackend>>(
        "g2p",
        model,
        codec,
        &splits.train,
        &splits.dev[..200],
        &config,
        &out,
        &Default::default(),
    )
    .expect("training the reference model");
    out
}

#[test]
fn pytorch_reference_computes_the_same_logits_gradients_and_greedy_outputs() {
    let Some(py) = s2s_benches::torch_python("pytorch_parity") else {
        return;
    };
    for (cell, name) in [(CellKind::Gru, "gru"), (CellKind::Lstm, "lstm")] {
        let dir = tempfile::tempdir().unwrap();
        let run = trained(cell, dir.path());
        let export_dir = dir.path().join("export");
        let export = Command::new(env!("CARGO_BIN_EXE_s2s-bench"))
            .args(["export", "--cell", name, "--model"])
            .arg(&run)
            .arg("--out")
            .arg(&export_dir)
            .output()
            .unwrap();
        assert!(
            export.status.success(),
            "{}",
            String::from_utf8_lossy(&export.stderr)
        );
        let model: serde_json::Value =
            serde_json::from_slice(&std::fs::read(export_dir.join("model.json")).unwrap()).unwrap();
        assert_eq!(
            model["trained"], true,
            "{name}: the export used the trained model"
        );
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pytorch_g2p.py");
        let out = Command::new(&py)
            .arg(&script)
            .arg("--dir")
            .arg(&export_dir)
            .args(["--parity-only", "--threads", "1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
        let parity = &result["parity"];
        eprintln!("{name}: {parity}");
        assert!(
            parity["max_rel"].as_f64().unwrap() <= 1e-4,
            "{name}: {parity}"
        );
        assert!(
            parity["gradient_max_rel"].as_f64().unwrap() <= 1e-4,
            "{name}: {parity}"
        );
        assert!(
            parity["gradients_compared"].as_u64().unwrap() >= 10,
            "{name}: {parity}"
        );
        assert_eq!(
            parity["greedy_total"].as_u64().unwrap(),
            1000,
            "{name}: {parity}"
        );
        assert_eq!(
            parity["greedy_equal"].as_u64().unwrap(),
            1000,
            "{name}: {parity}"
        );
        // Trained: most outputs end before the length limit of 40.
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(export_dir.join("reference.json")).unwrap())
                .unwrap();
        let ended = reference["greedy"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g.as_array().unwrap().len() < 40)
            .count();
        assert!(
            ended > 900,
            "{name}: only {ended} of 1000 greedy outputs ended"
        );
    }
}
