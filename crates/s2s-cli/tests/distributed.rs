//! `s2s train --nodes 2` as a user runs it: two processes on 127.0.0.1 train one model
//! (equal to one process with two workers), and every fault ends with a clear error: other
//! settings on one node, a node that dies, a node that never comes, a port in use, bad flags.
#![cfg(feature = "distributed")]

mod common;

use common::{s2s, text};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The options of every run here but --out: the reverse task, a small model, one worker.
fn base(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--task",
        "reverse",
        "--synthetic-size",
        "600",
        "--epochs",
        "2",
        "--batch-size",
        "24",
        "--embed",
        "8",
        "--hidden",
        "16",
        "--decoder-hidden",
        "16",
        "--attention-dim",
        "16",
        "--max-len",
        "12",
        "--seed",
        "5",
        "--no-progress",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(out.to_str().unwrap().into());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Three free ports on 127.0.0.1 (the coordinator's and two data ports).
fn free_ports() -> [u16; 3] {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    [ports[0], ports[1], ports[2]]
}

/// Starts rank `rank` of two with `args` (from [`base`]) and the group's flags.
fn node(args: &[String], rank: usize, ports: [u16; 3], extra: &[&str]) -> Child {
    let coordinator = format!("127.0.0.1:{}", ports[0]);
    let data_port = ports[1 + rank].to_string();
    let rank = rank.to_string();
    Command::new(env!("CARGO_BIN_EXE_s2s"))
        .args(args)
        .args([
            "--nodes",
            "2",
            "--node-rank",
            &rank,
            "--coordinator",
            &coordinator,
        ])
        .args(["--data-port", &data_port])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("s2s runs")
}

/// Waits for `child` at most `limit`; kills it (and fails) after that.
fn finish(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} did not end within {limit:?}; stderr:\n{}",
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn valid_losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "valid")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn two_processes_train_as_one_process_with_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let together = dir.path().join("together");
    let args = base(&together, &["--workers", "1"]);
    let ports = free_ports();
    let rank0 = node(&args, 0, ports, &[]);
    let rank1 = node(&args, 1, ports, &[]);
    let out1 = finish(rank1, Duration::from_secs(600), "rank 1");
    let out0 = finish(rank0, Duration::from_secs(600), "rank 0");
    assert!(out0.status.success(), "rank 0: {}", text(&out0.stderr));
    assert!(out1.status.success(), "rank 1: {}", text(&out1.stderr));
    // Rank 0 reports the test scores on stdout, and nothing else is there (burn-collective's
    // logs go to stderr); rank 1 prints nothing on stdout.
    let json: serde_json::Value = serde_json::from_str(text(&out0.stdout).trim())
        .unwrap_or_else(|e| panic!("rank 0's stdout {:?}: {e}", text(&out0.stdout)));
    assert_eq!(json["split"], "test");
    assert_eq!(text(&out1.stdout), "");
    assert!(text(&out1.stderr).contains("rank 0 wrote the run"));

    let alone = train_alone(dir.path(), "alone", &["--workers", "2"]);
    assert_same_training(&together, &alone);
    // The final models decode the same.
    let decode = |run: &Path| {
        let out = s2s(
            &[
                "decode",
                "--model",
                run.to_str().unwrap(),
                "--strategy",
                "beam",
            ],
            b"abc\ncab\nhello\nzzyx\n",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_eq!(decode(&together), decode(&alone));
}

/// Trains alone with `extra` into `dir/name`; returns the run folder.
fn train_alone(dir: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let run = dir.join(name);
    let args = base(&run, extra);
    let out = s2s(&args.iter().map(String::as_str).collect::<Vec<_>>(), b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    run
}

fn assert_same_training(a: &Path, b: &Path) {
    let (la, lb) = (valid_losses(a), valid_losses(b));
    assert_eq!(la.len(), lb.len());
    for ((sa, x), (sb, y)) in la.iter().zip(&lb) {
        assert_eq!(sa, sb);
        assert!((x - y).abs() <= 1e-5 * y, "validation loss {x} vs {y}");
    }
}

#[test]
fn devices_of_one_process_train_as_workers_do() {
    let dir = tempfile::tempdir().unwrap();
    // Two CPU peers in one process against one process with two workers.
    let peers = train_alone(
        dir.path(),
        "peers",
        &["--devices", "cpu,cpu", "--workers", "1"],
    );
    let workers = train_alone(dir.path(), "workers", &["--workers", "2"]);
    assert_same_training(&peers, &workers);
    // Two processes of two devices each: four peers, ranks 0-3, against four workers.
    let four = dir.path().join("four");
    let args = base(&four, &["--devices", "cpu,cpu", "--workers", "1"]);
    let ports = free_ports();
    let rank0 = node(&args, 0, ports, &[]);
    let rank1 = node(&args, 1, ports, &[]);
    for (rank, child) in [(1, rank1), (0, rank0)] {
        let out = finish(child, Duration::from_secs(600), "a node");
        assert!(out.status.success(), "rank {rank}: {}", text(&out.stderr));
    }
    let events = std::fs::read_to_string(four.join("metrics.jsonl")).unwrap();
    assert!(events.contains(r#""peers":4"#), "{events}");
    let workers4 = train_alone(dir.path(), "workers4", &["--workers", "4"]);
    assert_same_training(&four, &workers4);
}

#[test]
fn ctrl_c_on_one_node_stops_both_and_both_resume_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("r");
    let args = base(&run, &["--epochs", "4", "--workers", "1"]);
    let ports = free_ports();
    let rank0 = node(&args, 0, ports, &[]);
    let rank1 = node(&args, 1, ports, &[]);
    // After the first validation, Ctrl-C on rank 1 only.
    let start = Instant::now();
    while !std::fs::read_to_string(run.join("metrics.jsonl")).is_ok_and(|m| m.contains("valid")) {
        assert!(start.elapsed() < Duration::from_secs(300), "no validation");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &rank1.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut steps = Vec::new();
    for (rank, child) in [(1, rank1), (0, rank0)] {
        let out = finish(child, Duration::from_secs(300), "a stopped node");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "rank {rank}: {err}");
        let step = err
            .split("at step ")
            .nth(1)
            .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
            .map(str::to_string);
        steps.push(step.unwrap_or_else(|| panic!("rank {rank}: {err}")));
    }
    assert_eq!(steps[0], steps[1], "both stopped after the same step");
    // Both resume the run and finish it as one process with two workers does.
    let dir_str = run.to_str().unwrap().to_string();
    let resume: Vec<String> = ["train", "--resume", &dir_str, "--no-progress"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ports = free_ports();
    let rank0 = node(&resume, 0, ports, &[]);
    let rank1 = node(&resume, 1, ports, &[]);
    for (rank, child) in [(1, rank1), (0, rank0)] {
        let out = finish(child, Duration::from_secs(300), "a resumed node");
        assert!(out.status.success(), "rank {rank}: {}", text(&out.stderr));
    }
    let alone = train_alone(dir.path(), "alone", &["--epochs", "4", "--workers", "2"]);
    assert_same_training(&run, &alone);
}

#[test]
fn nodes_with_other_settings_refuse_to_train_together() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let rank0 = node(&base(&dir.path().join("a"), &[]), 0, ports, &[]);
    let rank1 = node(
        &base(&dir.path().join("b"), &["--lr", "0.01"]),
        1,
        ports,
        &[],
    );
    for (rank, child) in [(0, rank0), (1, rank1)] {
        let out = finish(child, Duration::from_secs(300), "a node");
        let err = text(&out.stderr);
        assert!(!out.status.success(), "rank {rank} succeeded");
        assert!(
            err.contains("the peers disagree") && err.contains("other settings"),
            "rank {rank}: {err}"
        );
    }
}

#[test]
fn a_node_that_dies_stops_the_others_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let args = base(
        &dir.path().join("r"),
        &["--epochs", "200", "--workers", "1"],
    );
    let timeout = ["--collective-timeout", "10"];
    let rank0 = node(&args, 0, ports, &timeout);
    let mut rank1 = node(&args, 1, ports, &timeout);
    // Let them join and train a while, then kill rank 1 as a crash would.
    let run = dir.path().join("r");
    let start = Instant::now();
    while !run.join("last").is_dir() {
        assert!(start.elapsed() < Duration::from_secs(300), "no epoch ended");
        std::thread::sleep(Duration::from_millis(100));
    }
    rank1.kill().unwrap();
    let _ = rank1.wait();
    let killed = Instant::now();
    let out = finish(rank0, Duration::from_secs(120), "rank 0 after rank 1 died");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("the gradient all-reduce"),
        "rank 0 after {:?}: {err}",
        killed.elapsed()
    );
    // What rank 0 had saved is intact: it resumes alone.
    assert!(run.join("last/training_state.json").is_file());
}

#[test]
fn a_node_that_never_comes_is_an_error_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let rank0 = node(
        &base(&dir.path().join("r"), &[]),
        0,
        ports,
        &["--collective-timeout", "3"],
    );
    let out = finish(rank0, Duration::from_secs(120), "rank 0 alone");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("joining the training group did not complete within 3 s"),
        "{err}"
    );
}

#[test]
fn ports_in_use_and_bad_flags_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let ports = free_ports();
    let args = base(&dir.path().join("r"), &[]);
    let run = |extra: &[&str]| {
        let all: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect();
        let out = s2s(&all, b"");
        assert!(!out.status.success(), "{extra:?} succeeded");
        text(&out.stderr)
    };
    let coordinator = format!("127.0.0.1:{port}");
    let err = run(&["--nodes", "2", "--coordinator", &coordinator]);
    assert!(
        err.contains(&format!("the coordinator's port {port} cannot be used")),
        "{err}"
    );
    let coordinator = format!("127.0.0.1:{}", ports[0]);
    let busy_data = port.to_string();
    let err = run(&[
        "--nodes",
        "2",
        "--coordinator",
        &coordinator,
        "--data-port",
        &busy_data,
    ]);
    assert!(
        err.contains(&format!("--data-port {port} cannot be used")),
        "{err}"
    );
    let err = run(&["--nodes", "2"]);
    assert!(
        err.contains("--nodes 2 needs --coordinator HOST:PORT"),
        "{err}"
    );
    let err = run(&[
        "--nodes",
        "2",
        "--node-rank",
        "2",
        "--coordinator",
        &coordinator,
    ]);
    assert!(
        err.contains("--node-rank 2 must be below --nodes 2"),
        "{err}"
    );
    let err = run(&[
        "--nodes",
        "2",
        "--node-rank",
        "1",
        "--coordinator",
        "nohost.invalid:1",
    ]);
    assert!(err.contains("--coordinator nohost.invalid:1"), "{err}");
    // Nothing was written by the refused runs.
    assert!(!dir.path().join("r").exists());
}
