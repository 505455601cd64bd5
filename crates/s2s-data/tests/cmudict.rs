//! The repository's copy of CMUdict reads completely and splits as documented.

use s2s_data::corpus::{group_references, read_cmudict, split_of, CmudictOptions, Split};
use std::collections::HashSet;
use std::path::PathBuf;

fn path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/cmudict/cmudict.dict"
    ))
}

#[test]
fn reads_every_entry_and_splits_by_word() {
    let splits = read_cmudict(&path(), CmudictOptions::default()).unwrap();
    let total = splits.train.len() + splits.dev.len() + splits.test.len();
    // 135,166 lines; 306 pronunciations become duplicates of another of the same word once
    // stress is removed (2 are duplicates even with stress) and are merged.
    assert_eq!(total, 134_860);
    let share = |n: usize| n as f64 / total as f64;
    assert!((0.88..0.92).contains(&share(splits.train.len())));
    assert!((0.04..0.06).contains(&share(splits.test.len())));
    for (pairs, split) in [
        (&splits.train, Split::Train),
        (&splits.dev, Split::Dev),
        (&splits.test, Split::Test),
    ] {
        assert!(pairs.iter().all(|p| split_of(&p.source) == split));
    }
    let train_words: HashSet<&str> = splits.train.iter().map(|p| p.source.as_str()).collect();
    assert!(splits
        .test
        .iter()
        .all(|p| !train_words.contains(p.source.as_str())));
    let all: Vec<_> = splits
        .train
        .iter()
        .chain(&splits.dev)
        .chain(&splits.test)
        .cloned()
        .collect();
    let refs = group_references(&all);
    let hello = refs.iter().find(|r| r.source == "hello").unwrap();
    assert_eq!(hello.targets, vec!["HH AH L OW", "HH EH L OW"]);
    assert!(all
        .iter()
        .all(|p| !p.target.chars().any(|c| c.is_ascii_digit())));
    let stressed = read_cmudict(&path(), CmudictOptions { keep_stress: true }).unwrap();
    let n = stressed.train.len() + stressed.dev.len() + stressed.test.len();
    assert_eq!(n, 135_164);
}
