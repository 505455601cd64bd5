//! Sequence metrics: exact match, word error rate and token (phoneme) error rate; corpus
//! BLEU and chrF of a test file.

use s2s_data::{Pair, Reference};
use s2s_metrics::{BleuScore, ChrfScore, MetricsError};
use serde::{Deserialize, Serialize};

/// Levenshtein distance between two token sequences.
pub fn edit_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(x != y);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Task metrics over a set of predictions, each against one or more references.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Number of sequences scored.
    pub count: usize,
    /// Fraction of predictions equal to one of their references.
    pub exact_match: f64,
    /// Word error rate for G2P: the fraction of words whose prediction matches no reference
    /// (`1 - exact_match`).
    pub wer: f64,
    /// Token error rate (PER for G2P): the summed edit distance to the closest reference
    /// over the summed length of those references.
    pub ter: f64,
}

/// Scores predictions against references (tokens). `references[i]` holds every acceptable
/// output for item `i`.
///
/// # Panics
/// If the lengths differ or an item has no reference.
pub fn score<S: AsRef<str> + PartialEq>(
    predictions: &[Vec<S>],
    references: &[Vec<Vec<S>>],
) -> Scores {
    assert_eq!(
        predictions.len(),
        references.len(),
        "one reference set per prediction"
    );
    let mut exact = 0usize;
    let mut errors = 0usize;
    let mut ref_tokens = 0usize;
    for (pred, refs) in predictions.iter().zip(references) {
        assert!(!refs.is_empty(), "every item needs a reference");
        let (dist, len) = refs
            .iter()
            .map(|r| (edit_distance(pred, r), r.len()))
            .min_by_key(|&(d, l)| (d, std::cmp::Reverse(l)))
            .expect("non-empty");
        if dist == 0 {
            exact += 1;
        }
        errors += dist;
        ref_tokens += len;
    }
    let n = predictions.len().max(1) as f64;
    let exact_match = exact as f64 / n;
    Scores {
        count: predictions.len(),
        exact_match,
        wer: 1.0 - exact_match,
        ter: errors as f64 / ref_tokens.max(1) as f64,
    }
}

/// Which references BLEU and chrF compare with, when a test set repeats sources with other
/// targets (Tatoeba, CMUdict's variant pronunciations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferenceMode {
    /// One line per test pair, its own target the single reference (`nrefs:1`): what
    /// `sacrebleu targets -i outputs` gives for the test file.
    #[default]
    PerLine,
    /// One hypothesis per distinct source against all of its targets (multi-reference,
    /// `nrefs:N` or `nrefs:var`): what sacreBLEU gives with one reference file per
    /// alternative.
    Grouped,
}

/// Corpus BLEU and chrF (sacreBLEU's defaults) of `predictions` (one per distinct source,
/// `refs` from [`group_references`](s2s_data::corpus::group_references)) in `mode`.
pub fn corpus_scores_with(
    pairs: &[Pair],
    refs: &[Reference],
    predictions: &[String],
    mode: ReferenceMode,
) -> Result<(BleuScore, ChrfScore), MetricsError> {
    match mode {
        ReferenceMode::PerLine => corpus_scores(pairs, refs, predictions),
        ReferenceMode::Grouped => {
            let groups: Vec<&[String]> = refs.iter().map(|r| r.targets.as_slice()).collect();
            Ok((
                s2s_metrics::BleuConfig::default().corpus_score_grouped(predictions, &groups)?,
                s2s_metrics::ChrfConfig::default().corpus_score_grouped(predictions, &groups)?,
            ))
        }
    }
}

/// Corpus BLEU and chrF (sacreBLEU's defaults) over the test pairs, one line per pair with
/// its own target as the single reference: what `sacrebleu targets -i outputs` gives for the
/// test file ([`ReferenceMode::PerLine`]). `predictions` are per distinct source (`refs`,
/// from [`group_references`](s2s_data::corpus::group_references)).
pub fn corpus_scores(
    pairs: &[Pair],
    refs: &[Reference],
    predictions: &[String],
) -> Result<(BleuScore, ChrfScore), MetricsError> {
    let by_source: std::collections::HashMap<&str, &str> = refs
        .iter()
        .zip(predictions)
        .map(|(r, p)| (r.source.as_str(), p.as_str()))
        .collect();
    let hyps: Vec<&str> = pairs
        .iter()
        .map(|p| by_source.get(p.source.as_str()).copied().unwrap_or(""))
        .collect();
    let targets: Vec<&str> = pairs.iter().map(|p| p.target.as_str()).collect();
    let streams = [targets];
    Ok((
        s2s_metrics::corpus_bleu(&hyps, &streams)?,
        s2s_metrics::corpus_chrf(&hyps, &streams)?,
    ))
}

/// The scores of [`corpus_scores`] (NaN where they cannot be computed).
pub fn corpus_bleu_chrf(pairs: &[Pair], refs: &[Reference], predictions: &[String]) -> (f64, f64) {
    corpus_scores(pairs, refs, predictions)
        .map_or((f64::NAN, f64::NAN), |(b, c)| (b.score, c.score))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_cases() {
        assert_eq!(edit_distance(&["a", "b", "c"], &["a", "c"]), 1);
        assert_eq!(edit_distance::<&str>(&[], &["x", "y"]), 2);
        assert_eq!(
            edit_distance(
                &['k', 'i', 't', 't', 'e', 'n'],
                &['s', 'i', 't', 't', 'i', 'n', 'g']
            ),
            3
        );
    }

    #[test]
    fn scores_use_the_closest_reference() {
        let preds = vec![vec!["R", "EH", "D"], vec!["K", "AE"]];
        let refs = vec![
            vec![vec!["R", "IY", "D"], vec!["R", "EH", "D"]],
            vec![vec!["K", "AE", "T"]],
        ];
        let s = score(&preds, &refs);
        assert_eq!(s.exact_match, 0.5);
        assert_eq!(s.wer, 0.5);
        // 0 errors over 3 + 1 error over 3.
        assert!((s.ter - 1.0 / 6.0).abs() < 1e-12);
    }
}
