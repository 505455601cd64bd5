//! Training runs from the command line: run folders that refuse what is not theirs, settings
//! files, invalid flags, and runs stopped by SIGINT or killed by SIGKILL at random moments
//! that resume to the weights of the run that was never stopped.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use s2s_tensor::backend::Flex;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn s2s(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_s2s"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("s2s runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A small reverse-task run: 1,500 pairs in batches of 16 (94 steps an epoch), 2 workers,
/// dropout and scheduled sampling, `last/` at every step.
fn run_args(out: &Path) -> Vec<String> {
    [
        "train",
        "--task",
        "reverse",
        "--synthetic-size",
        "1500",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--embed",
        "8",
        "--hidden",
        "16",
        "--decoder-hidden",
        "16",
        "--attention-dim",
        "16",
        "--max-len",
        "14",
        "--dropout",
        "0.2",
        "--teacher-forcing",
        "0.8",
        "--workers",
        "2",
        "--save-every",
        "1",
        "--valid-every",
        "40",
        "--log-every",
        "2",
        "--no-progress",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.to_str().unwrap().to_string()])
    .collect()
}

fn spawn(args: &[String]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_s2s"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("s2s runs")
}

/// Every weight of a model folder, flattened.
fn weights(dir: &Path) -> Vec<Vec<f32>> {
    let model = s2s_train::Checkpoint::<Flex>::load(dir, &Default::default())
        .unwrap()
        .model;
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor<Flex> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Flex, D>>) {
            self.0.push(s2s_tensor::ops::to_vec_f32(
                param.val().flatten::<1>(0, D - 1),
            ));
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// Losses of `metrics.jsonl` (training and validation events), by step.
fn losses(dir: &Path) -> Vec<(u64, String, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "train" || v["event"] == "valid")
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["event"].as_str().unwrap().to_string(),
                v["loss"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Names in `dir` that are temporary files of an interrupted save.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_result() {
    let root = tempfile::tempdir().unwrap();
    let straight = root.path().join("straight");
    let started = std::time::Instant::now();
    let out = s2s(&run_args(&straight)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    // Kills land between 2% and 30% of a whole run's time after each start, so that they
    // come at every stage (start-up, training, saves) on a fast machine as on a slow one.
    let whole = started.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Two runs of the same settings (2 workers) log the same losses.
    let again = root.path().join("again");
    let out = s2s(&run_args(&again)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(losses(&again), losses(&straight));

    // SIGINT: the step finishes, last/ is written, the exit status is non-zero and one
    // line says how to resume.
    let dir = root.path().join("interrupted");
    let child = spawn(&run_args(&dir));
    while !dir.join("last/training_state.json").is_file() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("s2s train --resume {}", dir.display())),
        "{err}"
    );
    let out = s2s(&["train", "--resume", dir.to_str().unwrap(), "--no-progress"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(weights(&dir.join("last")), weights(&straight.join("last")));

    // SIGKILL at 20 moments drawn from a fixed seed (every step writes last/, so many land
    // inside a save); each time the run resumes from what is on disk.
    let dir = root.path().join("killed");
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut kills = 0;
    let mut finished = false;
    while !finished {
        let resumable = dir.join("last/training_state.json").is_file();
        let args: Vec<String> = if resumable {
            vec![
                "train".into(),
                "--resume".into(),
                dir.to_str().unwrap().into(),
                "--no-progress".into(),
            ]
        } else {
            // Killed before the first checkpoint: start again.
            let mut a = run_args(&dir);
            if s2s_train::run::is_run_folder(&dir) {
                a.push("--overwrite".into());
            }
            a
        };
        let mut child = spawn(&args);
        if kills < 20 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let wait = whole.mul_f64(0.02 + 0.28 * (state % 1000) as f64 / 1000.0);
            std::thread::sleep(wait);
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                continue;
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        finished = true;
    }
    assert!(
        kills >= 5,
        "only {kills} kills landed before the run finished"
    );
    assert_eq!(weights(&dir.join("last")), weights(&straight.join("last")));
    assert_eq!(weights(&dir.join("best")), weights(&straight.join("best")));
    assert_eq!(losses(&dir), losses(&straight));
    assert_eq!(leftovers(&dir), Vec::<String>::new());
}

#[test]
fn out_refuses_what_is_not_a_run_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let train = |out: &Path, extra: &[&str]| {
        let mut args: Vec<String> = run_args(out);
        args.extend([
            "--epochs".into(),
            "1".into(),
            "--synthetic-size".into(),
            "40".into(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        s2s(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // A folder holding a file of the user's, and a file.
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("corpus.tsv"), "a\tb\n").unwrap();
    let file = root.path().join("notes.txt");
    std::fs::write(&file, "mine").unwrap();
    for (out, extra) in [
        (&data, &[][..]),
        (&data, &["--overwrite"][..]),
        (&file, &[][..]),
    ] {
        let result = train(out, extra);
        let err = text(&result.stderr);
        assert_eq!(result.status.code(), Some(1), "{err}");
        assert!(err.contains(&out.display().to_string()), "{err}");
    }
    assert_eq!(
        std::fs::read_to_string(data.join("corpus.tsv")).unwrap(),
        "a\tb\n"
    );
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");

    // A run folder: again without --resume or --overwrite is an error that says so.
    let run = root.path().join("run");
    let out = train(&run, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = std::fs::read(run.join("best/model.safetensors")).unwrap();
    let out = train(&run, &[]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--resume") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(run.join("best/model.safetensors")).unwrap(),
        before
    );
    // A model folder (the run's best/) is not a run folder.
    let best = run.join("best");
    let out = train(&best, &["--overwrite"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("model folder"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(best.join("model.safetensors")).unwrap(),
        before
    );
    // --overwrite starts the run again and keeps the user's files.
    std::fs::write(run.join("notes.txt"), "mine").unwrap();
    let out = train(&run, &["--overwrite", "--seed", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(run.join("notes.txt")).unwrap(),
        "mine"
    );

    // decode takes the run folder (its best model), and a folder whose weights do not
    // match its config.json is an error naming the parameter.
    let out = Command::new(env!("CARGO_BIN_EXE_s2s"))
        .args(["decode", "--model", run.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"abc\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let wrong = root.path().join("wrong");
    std::fs::create_dir(&wrong).unwrap();
    for f in [
        "model.safetensors",
        "source_vocab.json",
        "target_vocab.json",
    ] {
        std::fs::copy(best.join(f), wrong.join(f)).unwrap();
    }
    let config = std::fs::read_to_string(best.join("config.json"))
        .unwrap()
        .replace("\"d_hidden\": 16", "\"d_hidden\": 12");
    std::fs::write(wrong.join("config.json"), config).unwrap();
    let out = s2s(&[
        "eval",
        "--model",
        wrong.to_str().unwrap(),
        "--split",
        "test",
    ]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("model.safetensors")
            && err.contains("tensor encoder."),
        "{err}"
    );
}

#[test]
fn settings_files_and_invalid_flags() {
    let root = tempfile::tempdir().unwrap();
    let recipe = root.path().join("recipe.json");
    std::fs::write(
        &recipe,
        r#"{ "task": "reverse", "synthetic_size": 40, "epochs": 1, "embed": 8, "hidden": 16,
             "decoder_hidden": 16, "attention_dim": 16, "lr": 0.004, "seed": 9 }"#,
    )
    .unwrap();
    let run = root.path().join("run");
    let out = s2s(&[
        "train",
        "--config",
        recipe.to_str().unwrap(),
        "--seed",
        "11",
        "--no-progress",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The run's config.json holds the file's settings, the command line's over them, and
    // the defaults; it is itself a settings file.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["lr"], 0.004);
    assert_eq!(saved["seed"], 11);
    assert_eq!(saved["embed"], 8);
    assert_eq!(saved["batch_size"], 64);
    assert_eq!(saved["task"], "reverse");
    let copy = root.path().join("copy");
    let out = s2s(&[
        "train",
        "--config",
        run.join("config.json").to_str().unwrap(),
        "--no-progress",
        "--out",
        copy.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(losses(&copy), losses(&run));

    // --init-from: the architecture and vocabularies come from the model started from (its
    // 16-wide layers, not the default 256), with its weights.
    let tuned = root.path().join("tuned");
    let out = s2s(&[
        "train",
        "--task",
        "reverse",
        "--synthetic-size",
        "40",
        "--epochs",
        "1",
        "--init-from",
        run.to_str().unwrap(),
        "--no-progress",
        "--out",
        tuned.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let model_of = |dir: &Path| -> serde_json::Value {
        let text = std::fs::read_to_string(dir.join("best/config.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["model"].clone()
    };
    assert_eq!(model_of(&tuned), model_of(&run));
    assert_eq!(model_of(&tuned)["d_hidden"], 16);

    // An unknown setting names the file and the key.
    std::fs::write(&recipe, r#"{ "task": "reverse", "lrr": 0.1 }"#).unwrap();
    let out = s2s(&["train", "--config", recipe.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("recipe.json") && err.contains("lrr"),
        "{err}"
    );

    // Invalid values are errors, not silent changes.
    let fresh = root.path().join("fresh");
    let fresh = fresh.to_str().unwrap();
    for (flag, value) in [
        ("--label-smoothing", "1.0"),
        ("--label-smoothing=-0.1", ""),
        ("--lr", "0"),
        ("--lr=-1e-3", ""),
        ("--batch-size", "0"),
        ("--epochs", "0"),
        ("--workers", "0"),
        ("--adam-betas", "0.9"),
        ("--teacher-forcing", "2"),
    ] {
        let mut args = vec!["train", "--task", "reverse", flag];
        if !value.is_empty() {
            args.push(value);
        }
        args.extend(["--out", fresh]);
        let out = s2s(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}: {err}");
        assert!(
            !Path::new(fresh).exists(),
            "{flag} {value} created the run folder"
        );
    }
    let model = run.to_str().unwrap();
    for args in [
        &["decode", "--model", model, "--temperature", "0"][..],
        &["decode", "--model", model, "--temperature", "NaN"][..],
        &[
            "decode",
            "--model",
            model,
            "--strategy",
            "beam",
            "--max-len-ratio=-1",
        ][..],
    ] {
        let out = s2s(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    }
    let input = root.path().join("in.txt");
    std::fs::write(&input, "abc\n").unwrap();
    let i = input.to_str().unwrap();
    let out = s2s(&["translate", "--model", model, "-i", i, "-o", i]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains("same file"), "{err}");
    assert_eq!(std::fs::read_to_string(&input).unwrap(), "abc\n");
}
