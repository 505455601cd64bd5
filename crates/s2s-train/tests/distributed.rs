//! Data-parallel training on burn-collective with peers as threads of this process
//! (`BurnCollective::local`): the peers' run equals one process's run with as many workers,
//! the replicas stay equal, and a stop raised on one peer stops them all at the same step.
//!
//! burn-collective keeps one local group per process, so the scenarios run one after the
//! other inside a single test.
#![cfg(feature = "distributed")]

mod common;

use burn::module::AutodiffModule;
use common::small_model;
use s2s_data::corpus::SyntheticTask;
use s2s_data::{Pair, TextCodec, Tokenizer};
use s2s_nn::weights::{named_tensors, NamedTensor};
use s2s_tensor::backend::DefaultAutodiffBackend as AB;
use s2s_train::distributed::{self, BurnCollective};
use s2s_train::{OpenMode, Outcome, RunFolder, TrainConfig, TrainReport, Trainer};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

type Weights = BTreeMap<String, NamedTensor>;

struct Task {
    train: Vec<Pair>,
    valid: Vec<Pair>,
    codec: TextCodec,
}

fn task() -> Task {
    let pairs = SyntheticTask::Reverse.generate(700, 1, 7, 8, 5);
    let (train, valid) = pairs.split_at(600);
    Task {
        codec: TextCodec::build(train, Tokenizer::Chars, Tokenizer::Chars, 1),
        train: train.to_vec(),
        valid: valid.to_vec(),
    }
}

fn config(workers: usize) -> TrainConfig {
    TrainConfig::new()
        .with_epochs(2)
        .with_batch_size(24)
        .with_lr(3e-3)
        .with_max_decode_len(10)
        .with_workers(workers)
        .with_seed(11)
}

fn trainer(task: &Task, config: TrainConfig, run: RunFolder) -> Trainer<AB> {
    let settings = serde_json::json!({ "task": "reverse" });
    Trainer::<AB>::new(
        "reverse",
        small_model(),
        task.codec.clone(),
        &task.train,
        &task.valid,
        config,
        run,
        &settings,
        None,
        &Default::default(),
    )
    .unwrap()
}

fn weights(t: &Trainer<AB>) -> Weights {
    named_tensors(&t.model().valid())
}

/// Trains `peers` threads of this process as one run in `dir` (rank 0 writes it); each
/// returns its report and weights. `stop_rank`: a peer whose stop flag is raised from the
/// start.
fn peers_run(
    task: &Task,
    peers: usize,
    dir: &Path,
    stop_rank: Option<usize>,
) -> Vec<(TrainReport, Weights)> {
    distributed::reset();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..peers)
            .map(|rank| {
                s.spawn(move || {
                    let run = if rank == 0 {
                        RunFolder::open(dir, OpenMode::New).unwrap()
                    } else {
                        RunFolder::follower(dir)
                    };
                    let collective =
                        BurnCollective::local(rank, peers, Duration::from_secs(120)).unwrap();
                    let mut t = trainer(task, config(1), run)
                        .with_collective(Box::new(collective))
                        .unwrap();
                    let stop = AtomicBool::new(stop_rank == Some(rank));
                    let report = t.run(&stop, &mut |_| {}).unwrap();
                    (report, weights(&t))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn peers_train_as_one_process_with_as_many_workers() {
    let task = task();
    let dir = tempfile::tempdir().unwrap();

    // One process, two workers: the reference.
    let alone = dir.path().join("alone");
    let mut one = trainer(
        &task,
        config(2),
        RunFolder::open(&alone, OpenMode::New).unwrap(),
    );
    let reference = one.run(&AtomicBool::new(false), &mut |_| {}).unwrap();
    let reference_weights = weights(&one);

    // Two peers of one worker each.
    let together = dir.path().join("together");
    let results = peers_run(&task, 2, &together, None);
    for (rank, (report, w)) in results.iter().enumerate() {
        assert_eq!(report.steps, reference.steps, "rank {rank}");
        assert_eq!(report.outcome, Outcome::Finished);
        for (a, b) in report.history.iter().zip(&reference.history) {
            let rel = (a.train_loss - b.train_loss).abs() / b.train_loss;
            assert!(
                rel <= 1e-5,
                "rank {rank}: train loss {} vs {}",
                a.train_loss,
                b.train_loss
            );
            let rel = (a.valid_loss - b.valid_loss).abs() / b.valid_loss;
            assert!(
                rel <= 1e-5,
                "rank {rank}: valid loss {} vs {}",
                a.valid_loss,
                b.valid_loss
            );
        }
        for (name, t) in w {
            let r = &reference_weights[name];
            let worst = t
                .values
                .iter()
                .zip(&r.values)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst <= 1e-5, "rank {rank}: {name} differs by {worst}");
        }
    }
    // The replicas are equal to each other bit for bit.
    assert_eq!(results[0].1, results[1].1);
    // Rank 0 wrote the run; the follower wrote nothing of its own.
    assert!(together.join("best").is_dir() && together.join("last").is_dir());
    let metrics = std::fs::read_to_string(together.join("metrics.jsonl")).unwrap();
    let valids = metrics.lines().filter(|l| l.contains("\"valid\"")).count();
    assert_eq!(
        valids,
        reference.history.len(),
        "one log line per validation"
    );

    // A stop raised on rank 1 alone stops both after the same (first) step.
    let stopped = dir.path().join("stopped");
    let results = peers_run(&task, 2, &stopped, Some(1));
    for (rank, (report, _)) in results.iter().enumerate() {
        assert_eq!(report.outcome, Outcome::Interrupted, "rank {rank}");
        assert_eq!(report.steps, 1, "rank {rank}");
    }
    assert!(
        stopped.join("last").is_dir(),
        "rank 0 saved the stopped run"
    );

    // Peers built with other settings refuse to train together, on every peer.
    distributed::reset();
    let errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                let task = &task;
                s.spawn(move || {
                    let dir = tempfile::tempdir().unwrap();
                    let run = RunFolder::open(&dir.path().join("r"), OpenMode::New).unwrap();
                    let collective =
                        BurnCollective::local(rank, 2, Duration::from_secs(120)).unwrap();
                    let config = config(1).with_lr(if rank == 0 { 3e-3 } else { 1e-3 });
                    match trainer(task, config, run).with_collective(Box::new(collective)) {
                        Ok(_) => String::new(),
                        Err(e) => e.to_string(),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rank, e) in errors.iter().enumerate() {
        assert!(
            e.contains("the peers disagree") && e.contains("other settings"),
            "rank {rank}: {e:?}"
        );
    }
}
