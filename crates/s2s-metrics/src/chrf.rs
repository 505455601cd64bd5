//! chrF (Popović, 2015) and chrF++ (Popović, 2017) exactly as sacreBLEU 2.6.0's `CHRF`
//! metric computes them (`sacrebleu/metrics/chrf.py`).
//!
//! For each segment, character n-grams (whitespace removed by default) and, for chrF++, word
//! n-grams (punctuation split off word edges) are matched against every reference; the
//! reference with the best segment F-score is kept. The per-order counts are summed over the
//! corpus and only then turned into an F-beta score.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::stats::{self, SegmentMetric};
use crate::text::{is_py_space, py_split};
use crate::{MetricsError, SACREBLEU_VERSION};

/// sacreBLEU's epsilon for `eps_smoothing`.
const EPS: f64 = 1e-16;

/// Python's `string.punctuation`, which chrF++ splits off word edges.
fn is_punct(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// Settings of chrF; [`Default`] is sacreBLEU's `CHRF()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChrfConfig {
    /// Highest character n-gram order (default 6; signature `nc:`).
    pub char_order: usize,
    /// Highest word n-gram order (default 0; 2 gives chrF++; signature `nw:`).
    pub word_order: usize,
    /// Weight of recall against precision (default 2).
    pub beta: u32,
    /// Lowercase hypotheses and references first (signature `case:lc`).
    pub lowercase: bool,
    /// Keep whitespace in character n-grams (signature `space:yes`).
    pub whitespace: bool,
    /// chrF++.py / Moses / NLTK style epsilon smoothing (signature `eff:no`) instead of
    /// sacreBLEU's default of averaging precision and recall over the orders that have
    /// n-grams (`eff:yes`).
    pub eps_smoothing: bool,
}

impl Default for ChrfConfig {
    fn default() -> Self {
        ChrfConfig {
            char_order: Self::DEFAULT_CHAR_ORDER,
            word_order: 0,
            beta: Self::DEFAULT_BETA,
            lowercase: false,
            whitespace: false,
            eps_smoothing: false,
        }
    }
}

/// Hypothesis, reference and matching n-gram counts of one n-gram order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NgramMatch {
    /// Hypothesis n-grams (counted as 0 when the reference has none of this order).
    pub hyp: u64,
    /// Reference n-grams.
    pub reference: u64,
    /// Matching n-grams (clipped counts).
    pub matched: u64,
}

/// chrF's sufficient statistics: summed over segments, they give the corpus score.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChrfStats {
    /// One entry per order: character orders `1..=char_order`, then word orders
    /// `1..=word_order`.
    pub orders: Vec<NgramMatch>,
}

impl ChrfStats {
    /// All-zero statistics for `n_orders` orders (`char_order + word_order`).
    pub fn zeros(n_orders: usize) -> Self {
        ChrfStats {
            orders: vec![NgramMatch::default(); n_orders],
        }
    }

    /// Adds `other` to `self` (the shorter one is zero-extended).
    pub fn add(&mut self, other: &ChrfStats) {
        if self.orders.len() < other.orders.len() {
            self.orders
                .resize(other.orders.len(), NgramMatch::default());
        }
        for (a, b) in self.orders.iter_mut().zip(&other.orders) {
            a.hyp += b.hyp;
            a.reference += b.reference;
            a.matched += b.matched;
        }
    }
}

/// A chrF / chrF++ score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChrfScore {
    /// The score, 0 to 100.
    pub score: f64,
    /// sacreBLEU's name for the variant: `chrF2`, or `chrF2++` for word order 2.
    pub name: String,
    /// Character n-gram order.
    pub char_order: usize,
    /// Word n-gram order.
    pub word_order: usize,
    /// Beta.
    pub beta: u32,
    /// The summed statistics the score was computed from.
    pub stats: ChrfStats,
    /// Number of reference streams.
    pub nrefs: usize,
    /// sacreBLEU's signature, e.g. `nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0`.
    pub signature: String,
}

impl ChrfScore {
    /// sacreBLEU's reproducibility signature.
    pub fn signature(&self) -> &str {
        &self.signature
    }

    /// The line `sacrebleu -f text -w WIDTH` prints, e.g.
    /// `chrF2|nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0 = 59.62`.
    pub fn format_with_signature(&self, width: usize) -> String {
        format!("{}|{} = {:.width$}", self.name, self.signature, self.score)
    }
}

/// `chrF2 = 59.62`, as sacreBLEU's `CHRFScore.format()`; the score has 2 decimals unless a
/// precision is given (`{:.4}`).
impl fmt::Display for ChrfScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = f.precision().unwrap_or(2);
        write!(f, "{} = {:.width$}", self.name, self.score)
    }
}

/// The n-grams of one segment: per character order, then per word order.
struct Ngrams<'a> {
    chars: Vec<HashMap<&'a [char], u64>>,
    words: Vec<HashMap<&'a [&'a str], u64>>,
}

fn count_windows<T: Eq + Hash>(items: &[T], n: usize) -> HashMap<&[T], u64> {
    let mut counts = HashMap::new();
    if n > 0 {
        for w in items.windows(n) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

/// `CHRF._get_match_statistics`.
fn match_stats<K: Eq + Hash>(hyp: &HashMap<K, u64>, reference: &HashMap<K, u64>) -> NgramMatch {
    let mut matched = 0;
    let mut hyp_count = 0;
    for (ngram, &count) in hyp {
        hyp_count += count;
        if let Some(&r) = reference.get(ngram) {
            matched += count.min(r);
        }
    }
    NgramMatch {
        // Don't count hits if no reference exists for that n-gram order.
        hyp: if reference.is_empty() { 0 } else { hyp_count },
        reference: reference.values().sum(),
        matched,
    }
}

/// The characters chrF looks at: `''.join(line.split())` unless whitespace is kept.
fn chrf_chars(line: &str, whitespace: bool) -> Vec<char> {
    if whitespace {
        line.chars().collect()
    } else {
        line.chars().filter(|&c| !is_py_space(c)).collect()
    }
}

/// `CHRF._remove_punctuation`: one ASCII punctuation mark is split off the end of a word, or
/// else off its start (so `(hi)` gives `(hi` and `)`, as in sacreBLEU).
fn remove_punctuation(sent: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for w in py_split(sent) {
        let mut chars = w.chars();
        let first = chars.next();
        let last = chars.next_back();
        match (first, last) {
            (Some(_), None) => out.push(w),
            (Some(f), Some(l)) => {
                if is_punct(l) {
                    let cut = w.len() - l.len_utf8();
                    out.push(&w[..cut]);
                    out.push(&w[cut..]);
                } else if is_punct(f) {
                    let cut = f.len_utf8();
                    out.push(&w[..cut]);
                    out.push(&w[cut..]);
                } else {
                    out.push(w);
                }
            }
            (None, _) => {}
        }
    }
    out
}

impl ChrfConfig {
    /// sacreBLEU's default character order.
    pub const DEFAULT_CHAR_ORDER: usize = 6;
    /// sacreBLEU's default beta.
    pub const DEFAULT_BETA: u32 = 2;

    /// chrF++: the defaults with word order 2 (`sacrebleu -m chrf --chrf-word-order 2`).
    pub fn chrf_plus_plus() -> Self {
        ChrfConfig {
            word_order: 2,
            ..ChrfConfig::default()
        }
    }

    /// Number of orders, `char_order + word_order`.
    pub fn n_orders(&self) -> usize {
        self.char_order + self.word_order
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), MetricsError> {
        if self.n_orders() == 0 {
            return Err(MetricsError::InvalidConfig {
                metric: "chrF",
                reason: "char_order + word_order must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// sacreBLEU's name for the variant: `chrF{beta}` followed by one `+` per word order.
    pub fn name(&self) -> String {
        format!("chrF{}{}", self.beta, "+".repeat(self.word_order))
    }

    /// sacreBLEU's signature for `nrefs` reference streams.
    pub fn signature(&self, nrefs: usize) -> String {
        format!(
            "nrefs:{nrefs}|case:{}|eff:{}|nc:{}|nw:{}|space:{}|version:{SACREBLEU_VERSION}",
            if self.lowercase { "lc" } else { "mixed" },
            if self.eps_smoothing { "no" } else { "yes" },
            self.char_order,
            self.word_order,
            if self.whitespace { "yes" } else { "no" },
        )
    }

    /// Corpus chrF of `hyps` against reference streams `refs` (`refs[k][i]` is the `k`-th
    /// reference of `hyps[i]`), as `CHRF(...).corpus_score(hyps, refs)`. An empty corpus
    /// scores 0.
    pub fn corpus_score<H, R, S>(&self, hyps: &[H], refs: &[R]) -> Result<ChrfScore, MetricsError>
    where
        H: AsRef<str>,
        R: AsRef<[S]>,
        S: AsRef<str>,
    {
        let stats = self.corpus_stats(hyps, refs)?;
        let mut score = self.score_from_stats(&stats, refs.len())?;
        if hyps.is_empty() {
            // sacreBLEU refuses an empty corpus; with epsilon smoothing the formula would
            // give ~1e-14 rather than 0.
            score.score = 0.0;
        }
        Ok(score)
    }

    /// Corpus chrF where each hypothesis has its own references, any number of them
    /// (`refs[i]` are those of `hyps[i]`), as [`crate::BleuConfig::corpus_score_grouped`]
    /// does for BLEU.
    pub fn corpus_score_grouped<H, R, S>(
        &self,
        hyps: &[H],
        refs: &[R],
    ) -> Result<ChrfScore, MetricsError>
    where
        H: AsRef<str>,
        R: AsRef<[S]>,
        S: AsRef<str>,
    {
        let (stats, nrefs) = stats::grouped_stats(self, hyps, refs)?;
        let most = refs.iter().map(|r| r.as_ref().len()).max().unwrap_or(1);
        let mut score = self.score_from_stats(&stats, most)?;
        if hyps.is_empty() {
            score.score = 0.0;
        }
        score.signature = stats::with_nrefs(self.signature(1), nrefs);
        Ok(score)
    }

    /// chrF of one hypothesis against its references, as sacreBLEU's `sentence_score`.
    pub fn sentence_score<S: AsRef<str>>(
        &self,
        hyp: &str,
        refs: &[S],
    ) -> Result<ChrfScore, MetricsError> {
        let stats = self.segment_stats(hyp, refs)?;
        self.score_from_stats(&stats, refs.len())
    }

    /// The statistics of a corpus, summed over its segments.
    pub fn corpus_stats<H, R, S>(&self, hyps: &[H], refs: &[R]) -> Result<ChrfStats, MetricsError>
    where
        H: AsRef<str>,
        R: AsRef<[S]>,
        S: AsRef<str>,
    {
        stats::corpus_stats(self, hyps, refs)
    }

    /// The statistics of one segment against the best of its references (at least one).
    pub fn segment_stats<S: AsRef<str>>(
        &self,
        hyp: &str,
        refs: &[S],
    ) -> Result<ChrfStats, MetricsError> {
        stats::segment_stats(self, hyp, refs)
    }

    /// `CHRF._preprocess_segment`: optional lowercasing only.
    fn preprocess(&self, sent: &str) -> String {
        if self.lowercase {
            sent.to_lowercase()
        } else {
            sent.to_owned()
        }
    }

    /// The characters and (when word n-grams are on) the words of a preprocessed sentence.
    fn units<'s>(&self, sent: &'s str) -> (Vec<char>, Vec<&'s str>) {
        let words = if self.word_order > 0 {
            remove_punctuation(sent)
        } else {
            Vec::new()
        };
        (chrf_chars(sent, self.whitespace), words)
    }

    fn ngrams<'a>(&self, chars: &'a [char], words: &'a [&'a str]) -> Ngrams<'a> {
        Ngrams {
            chars: (1..=self.char_order)
                .map(|n| count_windows(chars, n))
                .collect(),
            words: (1..=self.word_order)
                .map(|n| count_windows(words, n))
                .collect(),
        }
    }

    /// `CHRF._compute_f_score`, in the same floating-point operations.
    fn f_score(&self, orders: &[NgramMatch]) -> f64 {
        let factor = f64::from(self.beta) * f64::from(self.beta);
        let mut score = 0.0;
        let mut effective_order = 0usize;
        let (mut avg_prec, mut avg_rec) = (0.0, 0.0);

        for o in orders {
            let prec = if o.hyp > 0 {
                o.matched as f64 / o.hyp as f64
            } else {
                EPS
            };
            let rec = if o.reference > 0 {
                o.matched as f64 / o.reference as f64
            } else {
                EPS
            };
            let denom = factor * prec + rec;
            score += if denom > 0.0 {
                (1.0 + factor) * prec * rec / denom
            } else {
                EPS
            };
            if o.hyp > 0 && o.reference > 0 {
                avg_prec += prec;
                avg_rec += rec;
                effective_order += 1;
            }
        }

        if self.eps_smoothing {
            return 100.0 * score / self.n_orders() as f64;
        }
        if effective_order == 0 {
            avg_prec = 0.0;
            avg_rec = 0.0;
        } else {
            avg_prec /= effective_order as f64;
            avg_rec /= effective_order as f64;
        }
        if avg_prec + avg_rec != 0.0 {
            let mut score = (1.0 + factor) * avg_prec * avg_rec;
            score /= (factor * avg_prec) + avg_rec;
            100.0 * score
        } else {
            0.0
        }
    }

    /// The score from (summed) statistics; `nrefs` only goes into the signature.
    pub fn score_from_stats(
        &self,
        stats: &ChrfStats,
        nrefs: usize,
    ) -> Result<ChrfScore, MetricsError> {
        self.validate()?;
        if stats.orders.len() != self.n_orders() {
            return Err(MetricsError::StatsMismatch {
                metric: "chrF",
                reason: format!(
                    "{} orders of statistics for char_order {} + word_order {}",
                    stats.orders.len(),
                    self.char_order,
                    self.word_order
                ),
            });
        }
        Ok(ChrfScore {
            score: self.f_score(&stats.orders),
            name: self.name(),
            char_order: self.char_order,
            word_order: self.word_order,
            beta: self.beta,
            stats: stats.clone(),
            nrefs,
            signature: self.signature(nrefs),
        })
    }
}

impl SegmentMetric for ChrfConfig {
    type Stats = ChrfStats;

    fn check_config(&self) -> Result<(), MetricsError> {
        self.validate()
    }

    fn zero_stats(&self) -> ChrfStats {
        ChrfStats::zeros(self.n_orders())
    }

    fn add_stats(total: &mut ChrfStats, segment: &ChrfStats) {
        total.add(segment);
    }

    /// `CHRF._compute_segment_statistics`: the statistics against the reference with the
    /// best F-score (the first one on a tie).
    fn segment_stats_unchecked<S: AsRef<str>>(&self, hyp: &str, refs: &[S]) -> ChrfStats {
        let hyp = self.preprocess(hyp);
        let (hyp_chars, hyp_words) = self.units(&hyp);
        let hyp_ngrams = self.ngrams(&hyp_chars, &hyp_words);

        let mut best: Option<(f64, ChrfStats)> = None;
        for r in refs {
            let r = self.preprocess(r.as_ref());
            let (ref_chars, ref_words) = self.units(&r);
            let ref_ngrams = self.ngrams(&ref_chars, &ref_words);

            let orders = hyp_ngrams
                .chars
                .iter()
                .zip(&ref_ngrams.chars)
                .map(|(h, r)| match_stats(h, r))
                .chain(
                    hyp_ngrams
                        .words
                        .iter()
                        .zip(&ref_ngrams.words)
                        .map(|(h, r)| match_stats(h, r)),
                )
                .collect();
            let stats = ChrfStats { orders };
            let f = self.f_score(&stats.orders);
            if best.as_ref().is_none_or(|(best_f, _)| f > *best_f) {
                best = Some((f, stats));
            }
        }
        best.map_or_else(|| ChrfStats::zeros(self.n_orders()), |(_, s)| s)
    }
}

/// Corpus chrF with sacreBLEU's defaults (`CHRF()`); see [`ChrfConfig::corpus_score`].
pub fn corpus_chrf<H, R, S>(hyps: &[H], refs: &[R]) -> Result<ChrfScore, MetricsError>
where
    H: AsRef<str>,
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    ChrfConfig::default().corpus_score(hyps, refs)
}

/// Sentence chrF with sacreBLEU's defaults; see [`ChrfConfig::sentence_score`].
pub fn sentence_chrf<S: AsRef<str>>(hyp: &str, refs: &[S]) -> Result<ChrfScore, MetricsError> {
    ChrfConfig::default().sentence_score(hyp, refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_is_split_like_sacrebleu() {
        // CHRF()._remove_punctuation("(hi) «salut» a, b. ! x'") ==
        //   ['(hi', ')', '«salut»', 'a', ',', 'b', '.', '!', 'x', "'"]
        assert_eq!(
            remove_punctuation("(hi) «salut» a, b. ! x'"),
            ["(hi", ")", "«salut»", "a", ",", "b", ".", "!", "x", "'"]
        );
        assert_eq!(remove_punctuation(".a"), [".", "a"]);
    }

    #[test]
    fn signatures_and_names() {
        let c = ChrfConfig::default();
        assert_eq!(
            c.signature(1),
            "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0"
        );
        assert_eq!(c.name(), "chrF2");
        let c = ChrfConfig {
            lowercase: true,
            whitespace: true,
            eps_smoothing: true,
            ..ChrfConfig::chrf_plus_plus()
        };
        assert_eq!(
            c.signature(2),
            "nrefs:2|case:lc|eff:no|nc:6|nw:2|space:yes|version:2.6.0"
        );
        assert_eq!(c.name(), "chrF2++");
    }

    #[test]
    fn invalid_config_and_stats() {
        let c = ChrfConfig {
            char_order: 0,
            ..ChrfConfig::default()
        };
        assert!(matches!(
            c.corpus_score(&["a"], &[["a"]]),
            Err(MetricsError::InvalidConfig { .. })
        ));
        assert!(matches!(
            ChrfConfig::default().score_from_stats(&ChrfStats::zeros(2), 1),
            Err(MetricsError::StatsMismatch { .. })
        ));
    }
}
