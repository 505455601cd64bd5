//! The PyTorch reference module (`benches/pytorch_g2p.py`) computes what the s2s model
//! computes, for both cells: `s2s-bench export` writes a seeded model with its
//! teacher-forced logits and greedy outputs, and the script rebuilds the model in PyTorch
//! from the exported weights and compares (logits within its tolerance of 1e-4 relative, or
//! it exits with an error; greedy outputs counted).
//!
//! It needs the project's virtualenv with torch (`$S2S_VENV`, else `.venv`). Without one it
//! says so and passes, unless `S2S_REQUIRE_TORCH=1` (set by `cargo xtask test` whenever it
//! uses the virtualenv), which makes a missing torch a failure.

use std::path::PathBuf;
use std::process::Command;

fn python() -> Option<PathBuf> {
    let venv = match std::env::var_os("S2S_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv"),
    };
    let py = venv.join("bin/python");
    let works = Command::new(&py)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(py);
    }
    eprintln!(
        "pytorch_parity: NOT compared with PyTorch: no Python that can `import torch` in {}",
        venv.display()
    );
    if std::env::var_os("S2S_REQUIRE_TORCH").is_some_and(|v| v == "1") {
        panic!("S2S_REQUIRE_TORCH=1 but torch was not found");
    }
    None
}

#[test]
fn pytorch_reference_computes_the_same_logits_and_greedy_outputs() {
    let Some(py) = python() else { return };
    for cell in ["gru", "lstm"] {
        let dir = tempfile::tempdir().unwrap();
        let export = Command::new(env!("CARGO_BIN_EXE_s2s-bench"))
            .args(["export", "--cell", cell, "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            export.status.success(),
            "{}",
            String::from_utf8_lossy(&export.stderr)
        );
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pytorch_g2p.py");
        let out = Command::new(&py)
            .arg(&script)
            .arg("--dir")
            .arg(dir.path())
            .args(["--parity-only", "--threads", "1"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{cell}: {stderr}");
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
        let parity = &result["parity"];
        assert!(
            parity["max_rel"].as_f64().unwrap() <= 1e-4,
            "{cell}: {parity}"
        );
        let total = parity["greedy_total"].as_u64().unwrap();
        assert!(total > 0);
        assert_eq!(
            parity["greedy_equal"].as_u64().unwrap(),
            total,
            "{cell}: {parity}"
        );
    }
}
