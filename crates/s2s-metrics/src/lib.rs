//! Corpus-level machine-translation metrics for s2s: BLEU and chrF / chrF++, ported from
//! [sacreBLEU](https://github.com/mjpost/sacrebleu) 2.6.0 so that the scores, the sufficient
//! statistics and the reproducibility signatures are the ones sacreBLEU prints for the same
//! text.
//!
//! - [`corpus_bleu`] / [`BleuConfig`]: sacreBLEU's `BLEU()` (defaults: `13a` tokenizer, n-gram
//!   order 4, `exp` smoothing, mixed case, no effective order). Also the `none`, `intl` and
//!   `char` tokenizers, lowercasing and the other smoothing methods.
//! - [`corpus_chrf`] / [`ChrfConfig`]: sacreBLEU's `CHRF()` (defaults: character order 6, word
//!   order 0, beta 2, whitespace removed, sacreBLEU 2.x's effective-order averaging);
//!   [`ChrfConfig::chrf_plus_plus`] gives chrF++ (word order 2).
//!
//! Like sacreBLEU, corpus scores are computed from the statistics summed over all segments
//! (not averaged sentence scores), and references are given as *streams*: `refs[k][i]` is the
//! `k`-th reference of the `i`-th hypothesis, every stream having one line per hypothesis.
//!
//! ```
//! use s2s_metrics::{corpus_bleu, corpus_chrf};
//!
//! let hyps = ["Le chat est assis sur le tapis.", "Il fait beau !"];
//! let refs = vec![vec!["Le chat est assis sur le tapis.", "Il fait très beau !"]];
//! let bleu = corpus_bleu(&hyps, &refs)?;
//! // sacreBLEU 2.6.0: BLEU = 79.68 100.0/90.0/75.0/83.3 (BP = 0.920 ratio = 0.923 hyp_len = 12 ref_len = 13)
//! assert_eq!(
//!     bleu.to_string(),
//!     "BLEU = 79.68 100.0/90.0/75.0/83.3 (BP = 0.920 ratio = 0.923 hyp_len = 12 ref_len = 13)"
//! );
//! assert_eq!(bleu.signature(), "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0");
//!
//! let chrf = corpus_chrf(&hyps, &refs)?;
//! assert_eq!(chrf.to_string(), "chrF2 = 82.66");
//! assert_eq!(chrf.signature(), "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0");
//! # Ok::<(), s2s_metrics::MetricsError>(())
//! ```

pub mod bleu;
pub mod chrf;
mod error;
mod stats;
mod text;
pub mod tokenizer;

pub use bleu::{corpus_bleu, sentence_bleu, BleuConfig, BleuScore, BleuStats, Smoothing};
pub use chrf::{corpus_chrf, sentence_chrf, ChrfConfig, ChrfScore, ChrfStats, NgramMatch};
pub use error::MetricsError;
pub use tokenizer::Tokenizer;

/// The sacreBLEU version whose behaviour this crate reproduces; it ends every signature.
pub const SACREBLEU_VERSION: &str = "2.6.0";
