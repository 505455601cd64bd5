//! Reproducibility of training runs. Kept in its own test binary: the backend's random
//! generator is process-wide, so training tests running in parallel threads of one process
//! would draw from it in between.

mod common;

use common::small_model;
use s2s_data::corpus::SyntheticTask;
use s2s_data::{TextCodec, Tokenizer};
use s2s_tensor::backend::DefaultAutodiffBackend as AB;
use s2s_train::{train, TrainConfig};

/// The same seed gives the same run, dropout and scheduled sampling included.
#[test]
fn fixed_seed_reproduces_the_run() {
    let pairs = SyntheticTask::Sort.generate(300, 1, 5, 6, 4);
    let (train_pairs, valid_pairs) = pairs.split_at(250);
    let run = |seed: u64| {
        let codec = TextCodec::build(train_pairs, Tokenizer::Chars, Tokenizer::Chars, 1);
        let dir = tempfile::tempdir().unwrap();
        let config = TrainConfig::new()
            .with_epochs(2)
            .with_batch_size(16)
            .with_seed(seed)
            .with_teacher_forcing("0.7".parse().unwrap());
        let model = small_model().with_dropout(0.2);
        let report = train::<AB>(
            "sort",
            model,
            codec,
            train_pairs,
            valid_pairs,
            &config,
            &dir.path().join("m"),
            &Default::default(),
        )
        .unwrap();
        report
            .history
            .iter()
            .map(|e| (e.train_loss, e.valid_loss))
            .collect::<Vec<_>>()
    };
    let a = run(5);
    assert_eq!(a, run(5));
    assert_ne!(a, run(6));
}
