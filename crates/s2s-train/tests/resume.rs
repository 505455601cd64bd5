//! Runs stopped and resumed end exactly where the uninterrupted run ends, and runs of the
//! same settings with several workers repeat bit for bit. Kept in its own test binary, like
//! `reproducible.rs`: a model's initialisation draws from the backend's process-wide
//! generator.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use common::small_model;
use s2s_data::corpus::SyntheticTask;
use s2s_data::{Pair, TextCodec, Tokenizer};
use s2s_nn::Seq2Seq;
use s2s_tensor::backend::DefaultAutodiffBackend as AB;
use s2s_train::{OpenMode, Outcome, RunFolder, TrainConfig, TrainEvent, Trainer};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

fn data() -> (Vec<Pair>, Vec<Pair>) {
    let pairs = SyntheticTask::Sort.generate(260, 1, 6, 6, 4);
    let (train, valid) = pairs.split_at(220);
    (train.to_vec(), valid.to_vec())
}

/// Dropout, scheduled sampling, two workers, a validation inside the epoch: every source of
/// randomness and every piece of saved state is exercised.
fn config() -> TrainConfig {
    TrainConfig::new()
        .with_epochs(3)
        .with_batch_size(16)
        .with_lr(3e-3)
        .with_warmup(3)
        .with_teacher_forcing("0.8".parse().unwrap())
        .with_workers(2)
        .with_valid_every(Some(5))
        .with_save_every(4)
        .with_log_every(3)
}

/// Starts a run in `dir`; `stop_at`: raise the stop flag once this step is reached.
fn start(dir: &Path, stop_at: Option<usize>) -> Outcome {
    let (train, valid) = data();
    let codec = TextCodec::build(&train, Tokenizer::Chars, Tokenizer::Chars, 1);
    let run = RunFolder::open(dir, OpenMode::New).unwrap();
    let mut trainer = Trainer::<AB>::new(
        "sort",
        small_model().with_dropout(0.2),
        codec,
        &train,
        &valid,
        config(),
        run,
        &serde_json::json!({}),
        None,
        &Default::default(),
    )
    .unwrap();
    drive(&mut trainer, stop_at)
}

fn drive(trainer: &mut Trainer<AB>, stop_at: Option<usize>) -> Outcome {
    let stop = AtomicBool::new(false);
    let report = trainer
        .run(&stop, &mut |event| {
            if let TrainEvent::Step { step, .. } = event {
                if Some(step) == stop_at {
                    stop.store(true, Ordering::SeqCst);
                }
            }
        })
        .unwrap();
    report.outcome
}

fn resume(dir: &Path, stop_at: Option<usize>) -> Outcome {
    let (train, valid) = data();
    let run = RunFolder::open(dir, OpenMode::Resume).unwrap();
    let mut trainer = Trainer::<AB>::resume(run, &train, &valid, None, &Default::default()).unwrap();
    drive(&mut trainer, stop_at)
}

/// Every weight of a model folder, flattened.
fn weights(dir: &Path) -> Vec<Vec<f32>> {
    let model: Seq2Seq<AB> = s2s_train::Checkpoint::load(dir, &Default::default())
        .unwrap()
        .model;
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor<AB> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            self.0
                .push(s2s_tensor::ops::to_vec_f32(param.val().flatten::<1>(0, D - 1)));
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// The events of `metrics.jsonl` without the fields that measure time.
fn events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let map = v.as_object_mut().unwrap();
            map.remove("tokens_per_second");
            map.remove("elapsed_seconds");
            v
        })
        .filter(|v| v["event"] != "resume")
        .collect()
}

#[test]
fn stopped_and_resumed_runs_end_bit_for_bit_equal() {
    let root = tempfile::tempdir().unwrap();
    let straight = root.path().join("straight");
    assert_eq!(start(&straight, None), Outcome::Finished);
    // 220 pairs in batches of 16: 14 steps an epoch, 42 in all. Stops inside an epoch,
    // right after a save, right after a validation, and at an epoch's last step; the second
    // run is stopped twice.
    for stops in [vec![9], vec![4, 10], vec![14], vec![29, 35]] {
        let dir = root.path().join(format!("stopped-{stops:?}"));
        assert_eq!(start(&dir, Some(stops[0])), Outcome::Interrupted);
        for (i, _) in stops.iter().enumerate() {
            let next = stops.get(i + 1).copied();
            let want = if next.is_some() {
                Outcome::Interrupted
            } else {
                Outcome::Finished
            };
            assert_eq!(resume(&dir, next), want, "{stops:?}");
        }
        for folder in ["last", "best"] {
            assert_eq!(
                weights(&dir.join(folder)),
                weights(&straight.join(folder)),
                "{folder}/ after stops at {stops:?}"
            );
        }
        assert_eq!(events(&dir), events(&straight), "metrics after stops at {stops:?}");
    }
    // The training moved the weights, and dropout was on: a run with another seed differs.
    let other = root.path().join("other-seed");
    let (train, valid) = data();
    let codec = TextCodec::build(&train, Tokenizer::Chars, Tokenizer::Chars, 1);
    let run = RunFolder::open(&other, OpenMode::New).unwrap();
    let mut trainer = Trainer::<AB>::new(
        "sort",
        small_model().with_dropout(0.2),
        codec,
        &train,
        &valid,
        config().with_seed(7),
        run,
        &serde_json::json!({}),
        None,
        &Default::default(),
    )
    .unwrap();
    drive(&mut trainer, None);
    assert_ne!(weights(&other.join("last")), weights(&straight.join("last")));
}

#[test]
fn two_runs_with_two_workers_log_identical_losses() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    start(&a, None);
    start(&b, None);
    let (ea, eb) = (events(&a), events(&b));
    assert!(ea.iter().filter(|e| e["event"] == "train").count() >= 10);
    assert!(ea.iter().filter(|e| e["event"] == "valid").count() >= 8);
    assert_eq!(ea, eb);
    assert_eq!(weights(&a.join("last")), weights(&b.join("last")));
}
