//! BLEU (Papineni et al., 2002) exactly as sacreBLEU 2.6.0's `BLEU` metric computes it
//! (`sacrebleu/metrics/bleu.py`).
//!
//! Each segment is lowercased (optionally), right-stripped and tokenized; its n-grams up to
//! [`BleuConfig::max_ngram_order`] are clipped against the maximum count over its references,
//! and the reference length is the one closest to the hypothesis length (the shorter on a
//! tie). The statistics are summed over the corpus and only then turned into precisions, a
//! brevity penalty and the score.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::stats::{self, SegmentMetric};
use crate::text::{py_rstrip, py_split};
use crate::{MetricsError, Tokenizer, SACREBLEU_VERSION};

/// What sacreBLEU's `my_log` returns for `log(0)`.
const LOG_ZERO: f64 = -9_999_999_999.0;

/// BLEU smoothing method (sacreBLEU's `smooth_method` / `smooth_value`), after Chen & Cherry
/// (2014).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Smoothing {
    /// `none`: no smoothing.
    None,
    /// `floor`: a zero precision becomes `value / total` (method 1; sacreBLEU's default value
    /// is [`Smoothing::FLOOR_DEFAULT`]).
    Floor(f64),
    /// `add-k`: `value` is added to the matches and totals of orders 2 and up (method 2;
    /// sacreBLEU's default value is [`Smoothing::ADD_K_DEFAULT`]).
    AddK(f64),
    /// `exp`: NIST / mteval-v13a smoothing (method 3), sacreBLEU's default.
    #[default]
    Exp,
}

impl Smoothing {
    /// sacreBLEU's default value for `floor`.
    pub const FLOOR_DEFAULT: f64 = 0.1;
    /// sacreBLEU's default value for `add-k`.
    pub const ADD_K_DEFAULT: f64 = 1.0;

    /// The method's name as in sacreBLEU (`none`, `floor`, `add-k`, `exp`).
    pub fn name(&self) -> &'static str {
        match self {
            Smoothing::None => "none",
            Smoothing::Floor(_) => "floor",
            Smoothing::AddK(_) => "add-k",
            Smoothing::Exp => "exp",
        }
    }

    /// The `smooth:` field of the signature, e.g. `exp` or `floor[0.10]`.
    pub fn signature(&self) -> String {
        match self {
            Smoothing::None | Smoothing::Exp => self.name().to_owned(),
            Smoothing::Floor(v) | Smoothing::AddK(v) => format!("{}[{v:.2}]", self.name()),
        }
    }
}

/// Settings of BLEU; [`Default`] is sacreBLEU's `BLEU()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BleuConfig {
    /// Lowercase hypotheses and references first (`-lc`; signature `case:lc`).
    pub lowercase: bool,
    /// The tokenizer (default `13a`).
    pub tokenizer: Tokenizer,
    /// The smoothing method (default `exp`).
    pub smoothing: Smoothing,
    /// The highest n-gram order (default 4); at least 1.
    pub max_ngram_order: usize,
    /// Stop at the highest order that has any hypothesis n-gram (signature `eff:yes`); meant
    /// for sentence-level BLEU, off by default.
    pub effective_order: bool,
}

impl Default for BleuConfig {
    fn default() -> Self {
        BleuConfig {
            lowercase: false,
            tokenizer: Tokenizer::V13a,
            smoothing: Smoothing::Exp,
            max_ngram_order: Self::DEFAULT_MAX_NGRAM_ORDER,
            effective_order: false,
        }
    }
}

/// BLEU's sufficient statistics: summed over segments, they give the corpus score.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BleuStats {
    /// Hypothesis length in tokens.
    pub sys_len: u64,
    /// Reference length in tokens (the closest reference of each segment).
    pub ref_len: u64,
    /// Clipped matching n-grams per order (index 0 is unigrams).
    pub counts: Vec<u64>,
    /// Hypothesis n-grams per order.
    pub totals: Vec<u64>,
}

impl BleuStats {
    /// All-zero statistics for n-gram orders `1..=max_ngram_order`.
    pub fn zeros(max_ngram_order: usize) -> Self {
        BleuStats {
            sys_len: 0,
            ref_len: 0,
            counts: vec![0; max_ngram_order],
            totals: vec![0; max_ngram_order],
        }
    }

    /// Adds `other` to `self` (the shorter per-order vectors are zero-extended).
    pub fn add(&mut self, other: &BleuStats) {
        self.sys_len += other.sys_len;
        self.ref_len += other.ref_len;
        add_padded(&mut self.counts, &other.counts);
        add_padded(&mut self.totals, &other.totals);
    }
}

fn add_padded(acc: &mut Vec<u64>, other: &[u64]) {
    if acc.len() < other.len() {
        acc.resize(other.len(), 0);
    }
    for (a, b) in acc.iter_mut().zip(other) {
        *a += b;
    }
}

/// A BLEU score with everything sacreBLEU reports about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BleuScore {
    /// The score, 0 to 100.
    pub score: f64,
    /// Clipped matching n-grams per order.
    pub counts: Vec<u64>,
    /// Hypothesis n-grams per order.
    pub totals: Vec<u64>,
    /// Smoothed n-gram precisions per order, in percent (all 0 when nothing matched).
    pub precisions: Vec<f64>,
    /// Brevity penalty.
    pub bp: f64,
    /// `sys_len / ref_len` (0 when `ref_len` is 0).
    pub ratio: f64,
    /// Hypothesis length in tokens.
    pub sys_len: u64,
    /// Reference length in tokens.
    pub ref_len: u64,
    /// Number of reference streams.
    pub nrefs: usize,
    /// sacreBLEU's signature, e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`.
    pub signature: String,
}

impl BleuScore {
    /// sacreBLEU's reproducibility signature.
    pub fn signature(&self) -> &str {
        &self.signature
    }

    /// The part after the score, e.g.
    /// `71.2/45.6/30.1/20.0 (BP = 1.000 ratio = 1.002 hyp_len = 1234 ref_len = 1232)`.
    pub fn verbose(&self) -> String {
        let prec: Vec<String> = self.precisions.iter().map(|p| format!("{p:.1}")).collect();
        format!(
            "{} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            prec.join("/"),
            self.bp,
            self.ratio,
            self.sys_len,
            self.ref_len
        )
    }

    /// The line `sacrebleu -f text -w WIDTH` prints, e.g.
    /// `BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0 = 37.40 71.2/...`.
    pub fn format_with_signature(&self, width: usize) -> String {
        format!(
            "BLEU|{} = {:.width$} {}",
            self.signature,
            self.score,
            self.verbose()
        )
    }
}

/// `BLEU = 37.40 71.2/45.6/30.1/20.0 (BP = 1.000 ratio = 1.002 hyp_len = 1234 ref_len = 1232)`,
/// as sacreBLEU's `BLEUScore.format()`; the score has 2 decimals unless a precision is given
/// (`{:.4}`).
impl fmt::Display for BleuScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = f.precision().unwrap_or(2);
        write!(f, "BLEU = {:.width$} {}", self.score, self.verbose())
    }
}

impl BleuConfig {
    /// sacreBLEU's default highest n-gram order.
    pub const DEFAULT_MAX_NGRAM_ORDER: usize = 4;

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), MetricsError> {
        let invalid = |reason: String| MetricsError::InvalidConfig {
            metric: "BLEU",
            reason,
        };
        if self.max_ngram_order == 0 {
            return Err(invalid("max_ngram_order must be at least 1".into()));
        }
        if let Smoothing::Floor(v) | Smoothing::AddK(v) = self.smoothing {
            if !v.is_finite() || v < 0.0 {
                return Err(invalid(format!(
                    "the {} smoothing value must be finite and non-negative, got {v}",
                    self.smoothing.name()
                )));
            }
        }
        Ok(())
    }

    /// sacreBLEU's signature for `nrefs` reference streams.
    pub fn signature(&self, nrefs: usize) -> String {
        format!(
            "nrefs:{nrefs}|case:{}|eff:{}|tok:{}|smooth:{}|version:{SACREBLEU_VERSION}",
            if self.lowercase { "lc" } else { "mixed" },
            if self.effective_order { "yes" } else { "no" },
            self.tokenizer.name(),
            self.smoothing.signature()
        )
    }

    /// Corpus BLEU of `hyps` against reference streams `refs` (`refs[k][i]` is the `k`-th
    /// reference of `hyps[i]`), as `BLEU(...).corpus_score(hyps, refs)`. An empty corpus
    /// scores 0.
    pub fn corpus_score<H, R, S>(&self, hyps: &[H], refs: &[R]) -> Result<BleuScore, MetricsError>
    where
        H: AsRef<str>,
        R: AsRef<[S]>,
        S: AsRef<str>,
    {
        let stats = self.corpus_stats(hyps, refs)?;
        self.score_from_stats(&stats, refs.len())
    }

    /// Corpus BLEU where each hypothesis has its own references, any number of them
    /// (`refs[i]` are those of `hyps[i]`): what sacreBLEU computes from reference streams
    /// padded with `None` where a segment has fewer. The signature says `nrefs:N` when every
    /// segment has `N`, else `nrefs:var`; `nrefs` of the score is the largest number.
    pub fn corpus_score_grouped<H, R, S>(
        &self,
        hyps: &[H],
        refs: &[R],
    ) -> Result<BleuScore, MetricsError>
    where
        H: AsRef<str>,
        R: AsRef<[S]>,
        S: AsRef<str>,
    {
        let (stats, nrefs) = stats::grouped_stats(self, hyps, refs)?;
        let most = refs.iter().map(|r| r.as_ref().len()).max().unwrap_or(1);
        let mut score = self.score_from_stats(&stats, most)?;
        score.signature = stats::with_nrefs(self.signature(1), nrefs);
        Ok(score)
    }

    /// BLEU of one hypothesis against its references, as sacreBLEU's `sentence_score` (which
    /// is a corpus of one segment; consider [`BleuConfig::effective_order`]).
    pub fn sentence_score<S: AsRef<str>>(
        &self,
        hyp: &str,
        refs: &[S],
    ) -> Result<BleuScore, MetricsError> {
        let stats = self.segment_stats(hyp, refs)?;
        self.score_from_stats(&stats, refs.len())
    }

    /// The statistics of a corpus, summed over its segments.
    pub fn corpus_stats<H, R, S>(&self, hyps: &[H], refs: &[R]) -> Result<BleuStats, MetricsError>
    where
        H: AsRef<str>,
        R: AsRef<[S]>,
        S: AsRef<str>,
    {
        stats::corpus_stats(self, hyps, refs)
    }

    /// The statistics of one segment against its references (at least one).
    pub fn segment_stats<S: AsRef<str>>(
        &self,
        hyp: &str,
        refs: &[S],
    ) -> Result<BleuStats, MetricsError> {
        stats::segment_stats(self, hyp, refs)
    }

    /// `BLEU._preprocess_segment`: lowercase (optionally), `rstrip()`, tokenize.
    fn preprocess(&self, sent: &str) -> String {
        if self.lowercase {
            self.tokenizer.tokenize(py_rstrip(&sent.to_lowercase()))
        } else {
            self.tokenizer.tokenize(py_rstrip(sent))
        }
    }

    /// The score from (summed) statistics, as `BLEU.compute_bleu`; `nrefs` only goes into the
    /// signature.
    pub fn score_from_stats(
        &self,
        stats: &BleuStats,
        nrefs: usize,
    ) -> Result<BleuScore, MetricsError> {
        self.validate()?;
        let order = self.max_ngram_order;
        if stats.counts.len() != order || stats.totals.len() != order {
            return Err(MetricsError::StatsMismatch {
                metric: "BLEU",
                reason: format!(
                    "{} counts and {} totals for max_ngram_order {order}",
                    stats.counts.len(),
                    stats.totals.len()
                ),
            });
        }
        let (sys_len, ref_len) = (stats.sys_len, stats.ref_len);

        let mut bp = 1.0;
        if sys_len < ref_len {
            bp = if sys_len > 0 {
                (1.0 - ref_len as f64 / sys_len as f64).exp()
            } else {
                0.0
            };
        }

        let mut precisions = vec![0.0; order];
        let mut score = 0.0;

        // Early stop if there are no matches (sacreBLEU #141).
        if stats.counts.iter().any(|&c| c != 0) {
            let mut smooth_mteval = 1.0_f64;
            let mut eff_order = order;
            for n in 1..=order {
                let mut correct = stats.counts[n - 1] as f64;
                let mut total = stats.totals[n - 1] as f64;
                if let Smoothing::AddK(k) = self.smoothing {
                    if n > 1 {
                        correct += k;
                        total += k;
                    }
                }
                if total == 0.0 {
                    break;
                }
                if self.effective_order {
                    eff_order = n;
                }
                if correct == 0.0 {
                    match self.smoothing {
                        Smoothing::Exp => {
                            smooth_mteval *= 2.0;
                            precisions[n - 1] = 100.0 / (smooth_mteval * total);
                        }
                        Smoothing::Floor(v) => precisions[n - 1] = 100.0 * v / total,
                        Smoothing::None | Smoothing::AddK(_) => {}
                    }
                } else {
                    precisions[n - 1] = 100.0 * correct / total;
                }
            }
            let log_sum = precisions[..eff_order]
                .iter()
                .fold(0.0, |acc, &p| acc + my_log(p));
            score = bp * (log_sum / eff_order as f64).exp();
        }

        Ok(BleuScore {
            score,
            counts: stats.counts.clone(),
            totals: stats.totals.clone(),
            precisions,
            bp,
            ratio: if ref_len > 0 {
                sys_len as f64 / ref_len as f64
            } else {
                0.0
            },
            sys_len,
            ref_len,
            nrefs,
            signature: self.signature(nrefs),
        })
    }
}

impl SegmentMetric for BleuConfig {
    type Stats = BleuStats;

    fn check_config(&self) -> Result<(), MetricsError> {
        self.validate()
    }

    fn zero_stats(&self) -> BleuStats {
        BleuStats::zeros(self.max_ngram_order)
    }

    fn add_stats(total: &mut BleuStats, segment: &BleuStats) {
        total.add(segment);
    }

    /// `_extract_reference_info` + `_compute_segment_statistics`.
    fn segment_stats_unchecked<S: AsRef<str>>(&self, hyp: &str, refs: &[S]) -> BleuStats {
        let order = self.max_ngram_order;
        let refs: Vec<String> = refs.iter().map(|r| self.preprocess(r.as_ref())).collect();
        let ref_tokens: Vec<Vec<&str>> = refs.iter().map(|r| py_split(r).collect()).collect();
        let mut ref_ngrams: HashMap<&[&str], u64> = HashMap::new();
        let mut ref_lens = Vec::with_capacity(ref_tokens.len());
        for tokens in &ref_tokens {
            ref_lens.push(tokens.len());
            for (ngram, count) in ngram_counts(tokens, order) {
                let best = ref_ngrams.entry(ngram).or_insert(0);
                *best = (*best).max(count);
            }
        }

        let hyp = self.preprocess(hyp);
        let hyp_tokens: Vec<&str> = py_split(&hyp).collect();
        let hyp_len = hyp_tokens.len();
        let ref_len = closest_ref_len(hyp_len, &ref_lens);

        let mut stats = BleuStats::zeros(order);
        stats.sys_len = hyp_len as u64;
        stats.ref_len = ref_len as u64;
        for (ngram, count) in ngram_counts(&hyp_tokens, order) {
            let n = ngram.len() - 1;
            stats.totals[n] += count;
            if let Some(&r) = ref_ngrams.get(ngram) {
                stats.counts[n] += count.min(r);
            }
        }
        stats
    }
}

/// sacreBLEU's `my_log`: `log` with `log(0)` floored.
fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        LOG_ZERO
    } else {
        x.ln()
    }
}

/// `extract_all_word_ngrams(line, 1, max_order)` on already split tokens.
fn ngram_counts<'t, 's>(tokens: &'t [&'s str], max_order: usize) -> HashMap<&'t [&'s str], u64> {
    let mut counts = HashMap::new();
    for n in 1..=max_order.min(tokens.len()) {
        for ngram in tokens.windows(n) {
            *counts.entry(ngram).or_insert(0) += 1;
        }
    }
    counts
}

/// `BLEU._get_closest_ref_len`: the reference length closest to `hyp_len`, the shorter one on
/// a tie.
fn closest_ref_len(hyp_len: usize, ref_lens: &[usize]) -> usize {
    let mut best: Option<(usize, usize)> = None; // (diff, len)
    for &len in ref_lens {
        let diff = hyp_len.abs_diff(len);
        best = match best {
            Some((d, l)) if diff > d || (diff == d && len >= l) => Some((d, l)),
            _ => Some((diff, len)),
        };
    }
    best.map_or(0, |(_, len)| len)
}

/// Corpus BLEU with sacreBLEU's defaults (`BLEU()`); see [`BleuConfig::corpus_score`].
pub fn corpus_bleu<H, R, S>(hyps: &[H], refs: &[R]) -> Result<BleuScore, MetricsError>
where
    H: AsRef<str>,
    R: AsRef<[S]>,
    S: AsRef<str>,
{
    BleuConfig::default().corpus_score(hyps, refs)
}

/// Sentence BLEU with sacreBLEU's `BLEU()` defaults (effective order off, as in the
/// constructor); see [`BleuConfig::sentence_score`].
pub fn sentence_bleu<S: AsRef<str>>(hyp: &str, refs: &[S]) -> Result<BleuScore, MetricsError> {
    BleuConfig::default().sentence_score(hyp, refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_reference_length() {
        assert_eq!(closest_ref_len(10, &[12, 8]), 8); // tie: the shorter
        assert_eq!(closest_ref_len(10, &[8, 12]), 8);
        assert_eq!(closest_ref_len(10, &[13, 11, 9]), 9);
        assert_eq!(closest_ref_len(10, &[3]), 3);
    }

    #[test]
    fn signatures() {
        let mut c = BleuConfig::default();
        assert_eq!(
            c.signature(1),
            "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
        );
        c.lowercase = true;
        c.effective_order = true;
        c.tokenizer = Tokenizer::Intl;
        c.smoothing = Smoothing::Floor(Smoothing::FLOOR_DEFAULT);
        assert_eq!(
            c.signature(3),
            "nrefs:3|case:lc|eff:yes|tok:intl|smooth:floor[0.10]|version:2.6.0"
        );
        assert_eq!(Smoothing::AddK(1.0).signature(), "add-k[1.00]");
    }

    #[test]
    fn invalid_configs_are_errors() {
        let c = BleuConfig {
            max_ngram_order: 0,
            ..BleuConfig::default()
        };
        assert!(matches!(
            c.corpus_score(&["a"], &[["a"]]),
            Err(MetricsError::InvalidConfig { .. })
        ));
        let c = BleuConfig {
            smoothing: Smoothing::Floor(f64::NAN),
            ..BleuConfig::default()
        };
        assert!(c.validate().is_err());
        let stats = BleuStats::zeros(3);
        assert!(matches!(
            BleuConfig::default().score_from_stats(&stats, 1),
            Err(MetricsError::StatsMismatch { .. })
        ));
    }
}
