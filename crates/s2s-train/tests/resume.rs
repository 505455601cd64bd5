//! Runs stopped and resumed end exactly where the uninterrupted run ends, and runs of the
//! same settings with several workers repeat bit for bit. Kept in its own test binary, like
//! `reproducible.rs`: a model's initialisation draws from the backend's process-wide
//! generator.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use common::small_model;
use s2s_data::corpus::SyntheticTask;
use s2s_data::{Pair, TextCodec, Tokenizer};
use s2s_nn::Seq2Seq;
use s2s_tensor::backend::DefaultAutodiffBackend;
use s2s_tensor::S2sAutodiffBackend;
use s2s_train::{OpenMode, Outcome, RunFolder, TrainConfig, TrainEvent, TrainReport, Trainer};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Every test of this binary holds this lock: the tests compare runs bit for bit, and one of
/// them (`two_runs_with_two_workers_log_identical_losses`) once saw its two runs differ
/// from the first step while the tch and wgpu instances ran beside it; the cause was not
/// found (see docs/training-runs.md). One run at a time is what a training process does.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

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

/// Starts a run of `config` in `dir`; `stop_at`: raise the stop flag once this step is
/// reached.
fn start_with<AB: S2sAutodiffBackend>(
    dir: &Path,
    config: TrainConfig,
    stop_at: Option<usize>,
    device: &AB::Device,
) -> TrainReport {
    let (train, valid) = data();
    let codec = TextCodec::build(&train, Tokenizer::Chars, Tokenizer::Chars, 1);
    let run = RunFolder::open(dir, OpenMode::New).unwrap();
    let mut trainer = Trainer::<AB>::new(
        "sort",
        small_model().with_dropout(0.2),
        codec,
        &train,
        &valid,
        config,
        run,
        &serde_json::json!({}),
        None,
        device,
    )
    .unwrap();
    drive(&mut trainer, stop_at)
}

fn start(dir: &Path, stop_at: Option<usize>) -> Outcome {
    start_with::<DefaultAutodiffBackend>(dir, config(), stop_at, &Default::default()).outcome
}

fn drive<AB: S2sAutodiffBackend>(trainer: &mut Trainer<AB>, stop_at: Option<usize>) -> TrainReport {
    let stop = AtomicBool::new(false);
    trainer
        .run(&stop, &mut |event| {
            if let TrainEvent::Step { step, .. } = event {
                if Some(step) == stop_at {
                    stop.store(true, Ordering::SeqCst);
                }
            }
        })
        .unwrap()
}

fn resume_on<AB: S2sAutodiffBackend>(
    dir: &Path,
    stop_at: Option<usize>,
    device: &AB::Device,
) -> Outcome {
    let (train, valid) = data();
    let run = RunFolder::open(dir, OpenMode::Resume).unwrap();
    let mut trainer = Trainer::<AB>::resume(run, &train, &valid, None, device).unwrap();
    drive(&mut trainer, stop_at).outcome
}

fn resume(dir: &Path, stop_at: Option<usize>) -> Outcome {
    resume_on::<DefaultAutodiffBackend>(dir, stop_at, &Default::default())
}

/// Every weight of a model folder on `AB`, flattened.
fn weights_on<AB: S2sAutodiffBackend>(dir: &Path, device: &AB::Device) -> Vec<Vec<f32>> {
    let model: Seq2Seq<AB> = s2s_train::Checkpoint::load(dir, device).unwrap().model;
    struct Collect(Vec<Vec<f32>>);
    impl<AB: AutodiffBackend> ModuleVisitor<AB> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            self.0.push(s2s_tensor::ops::to_vec_f32(
                param.val().flatten::<1>(0, D - 1),
            ));
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

fn weights(dir: &Path) -> Vec<Vec<f32>> {
    weights_on::<DefaultAutodiffBackend>(dir, &Default::default())
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
    let _serial = serial();
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
        assert_eq!(
            events(&dir),
            events(&straight),
            "metrics after stops at {stops:?}"
        );
    }
    // The training moved the weights, and dropout was on: a run with another seed differs.
    let other = root.path().join("other-seed");
    let device = Default::default();
    start_with::<DefaultAutodiffBackend>(&other, config().with_seed(7), None, &device);
    assert_ne!(
        weights(&other.join("last")),
        weights(&straight.join("last"))
    );
}

#[test]
fn two_runs_with_two_workers_log_identical_losses() {
    let _serial = serial();
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

s2s_tensor::for_each_backend! {
    type AB = TestAutodiffBackend;

    /// On every backend, a run stopped inside an epoch and resumed ends at the weights of
    /// the straight run: bit for bit on flex (also tested at length above), within 1e-5
    /// elsewhere. Short (two epochs of 14 steps), for wgpu's software device in CI.
    #[test]
    fn a_resumed_run_ends_where_the_straight_run_ends() {
        let _serial = serial();
        let device = device();
        let config = || config().with_epochs(2).with_valid_every(None).with_save_every(100);
        let root = tempfile::tempdir().unwrap();
        let (straight, stopped) = (root.path().join("straight"), root.path().join("stopped"));
        assert_eq!(start_with::<AB>(&straight, config(), None, &device).outcome, Outcome::Finished);
        assert_eq!(start_with::<AB>(&stopped, config(), Some(9), &device).outcome, Outcome::Interrupted);
        assert_eq!(resume_on::<AB>(&stopped, None, &device), Outcome::Finished);
        let exact = module_path!().ends_with("flex");
        let (a, b) = (
            weights_on::<AB>(&stopped.join("last"), &device),
            weights_on::<AB>(&straight.join("last"), &device),
        );
        assert_eq!(a.len(), b.len());
        for (p, (x, y)) in a.iter().zip(&b).enumerate() {
            for (u, v) in x.iter().zip(y) {
                let close = if exact { u == v } else { (u - v).abs() <= 1e-5 + 1e-5 * v.abs() };
                assert!(close, "parameter {p}: {u} vs {v}");
            }
        }
    }
}

/// `patience`: with a learning rate too small to move any f32 weight, no validation after
/// the first improves on it, and the run stops after `patience` of them (dropout does not
/// touch validation).
#[test]
fn patience_stops_a_run_that_no_longer_improves() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("flat");
    let config = config()
        .with_lr(1e-12)
        .with_warmup(0)
        .with_valid_every(Some(2))
        .with_patience(Some(2))
        .with_best_metric(Some(s2s_train::BestMetric::Loss));
    let report = start_with::<DefaultAutodiffBackend>(&dir, config, None, &Default::default());
    assert_eq!(report.outcome, Outcome::EarlyStopped);
    assert_eq!((report.steps, report.best_step), (6, 2));
    assert_eq!(report.history.len(), 3);
    let end = events(&dir).pop().unwrap();
    assert_eq!(end["outcome"], "early_stopped");
}

/// The learning-rate schedule as the trainer wires it: linear warmup, then a cosine decay
/// that ends at `max_steps` (its `total: 0` filled in by the trainer), read back from the
/// learning rates `metrics.jsonl` logs at every step; the run stops at `max_steps`.
#[test]
fn warmup_and_cosine_end_at_max_steps() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("schedule");
    let config = config()
        .with_lr(0.01)
        .with_warmup(4)
        .with_decay(s2s_train::Decay::Cosine {
            total: 0,
            floor: 0.1,
        })
        .with_max_steps(Some(20))
        .with_log_every(1);
    let report = start_with::<DefaultAutodiffBackend>(&dir, config, None, &Default::default());
    assert_eq!((report.outcome, report.steps), (Outcome::Finished, 20));
    let lr: Vec<f64> = events(&dir)
        .iter()
        .filter(|e| e["event"] == "train")
        .map(|e| e["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lr.len(), 20);
    for (i, want) in [(0, 0.0025), (1, 0.005), (3, 0.01), (19, 0.001)] {
        assert!(
            (lr[i] - want).abs() < 1e-12,
            "step {}: lr {} vs {want}",
            i + 1,
            lr[i]
        );
    }
    assert!(
        lr[4..].windows(2).all(|w| w[1] < w[0]),
        "not decaying: {lr:?}"
    );
}

/// The metric that picks `best/` is oriented so that lower is better: error rates and loss
/// as they are, BLEU, chrF and exact match negated; a NaN never wins.
#[test]
fn best_metrics_are_oriented() {
    let _serial = serial();
    use s2s_train::{BestMetric, EpochLog, Scores};
    let log = |wer: f64, bleu: f64, loss: f64| EpochLog {
        epoch: 1,
        steps: 1,
        train_loss: 1.0,
        valid_loss: loss,
        valid_perplexity: loss.exp(),
        scores: Scores {
            count: 1,
            exact_match: 1.0 - wer,
            wer,
            ter: wer / 2.0,
        },
        bleu,
        chrf: bleu,
        tokens_per_second: 1.0,
        elapsed_seconds: 1.0,
    };
    let (better, worse) = (log(0.2, 40.0, 0.5), log(0.3, 30.0, 0.7));
    for m in [
        BestMetric::Loss,
        BestMetric::Wer,
        BestMetric::Per,
        BestMetric::Bleu,
        BestMetric::Chrf,
        BestMetric::Exact,
    ] {
        assert!(m.cost(&better) < m.cost(&worse), "{m:?}");
        assert_eq!(m.name().parse::<BestMetric>().unwrap(), m);
    }
    assert_eq!(
        BestMetric::Bleu.cost(&log(0.2, f64::NAN, 0.5)),
        f64::INFINITY
    );
    assert_eq!(BestMetric::for_task("g2p"), BestMetric::Wer);
    assert_eq!(BestMetric::for_task("tsv"), BestMetric::Bleu);
    assert_eq!(BestMetric::for_task("reverse"), BestMetric::Exact);
}
