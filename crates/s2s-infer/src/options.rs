//! Decoding options as data: what `s2s decode` takes as flags and `s2s serve` as JSON, checked
//! and turned into a [`Decoding`] strategy.

use s2s_decode::{BeamSearch, Decoding, Greedy, LengthPenalty, LogitsProcessors, Sampling};
use serde::{Deserialize, Serialize};

/// The decoding strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyKind {
    /// The most likely token at every step.
    #[default]
    Greedy,
    /// Beam search.
    Beam,
    /// Sampling (temperature, top-k, top-p).
    Sample,
    /// Diverse beam search (beam groups with a diversity penalty).
    Diverse,
}

/// Options that are not valid together or out of range. The message names each option in
/// backticks as its field (`` `n_best` ``); [`cli_message`](Self::cli_message) names them as
/// the flags of `s2s decode` (`--n-best`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct OptionsError(pub String);

impl OptionsError {
    /// The message with every `` `field` `` written as its flag, `--field` in kebab case.
    pub fn cli_message(&self) -> String {
        let mut out = String::new();
        for (i, part) in self.0.split('`').enumerate() {
            if i % 2 == 1 {
                out.push_str("--");
                out.push_str(&part.replace('_', "-"));
            } else {
                out.push_str(part);
            }
        }
        out
    }
}

/// How to decode: the options of `s2s decode` (docs/cli.md), with its defaults. Unknown
/// fields are refused when read from JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeOptions {
    /// The strategy.
    pub strategy: StrategyKind,
    /// Beams per sentence (beam, diverse).
    pub beam_size: usize,
    /// Hypotheses per sentence (beam, diverse; samples for sample).
    pub n_best: usize,
    /// Length penalty: `none`, `avg:ALPHA` or `gnmt:ALPHA`.
    #[serde(with = "penalty")]
    pub length_penalty: LengthPenalty,
    /// Minimum output length.
    pub min_len: usize,
    /// Maximum output length (`None`: the model's).
    pub max_len: Option<usize>,
    /// Also cap the output length at this ratio times the source length (beam, diverse).
    pub max_len_ratio: Option<f32>,
    /// Sampling temperature.
    pub temperature: f32,
    /// Sample among the K most likely tokens (0: all).
    pub top_k: usize,
    /// Sample among the most likely tokens that make up probability P.
    pub top_p: f32,
    /// Beam groups (diverse).
    pub groups: usize,
    /// Diversity penalty between groups (diverse).
    pub diversity: f32,
    /// Seed for sampling.
    pub seed: u64,
    /// Forbid repeating any n-gram of this size (0: off).
    pub no_repeat_ngram: usize,
    /// Never output `<unk>`.
    pub forbid_unk: bool,
    /// Keep the attention weights of each output step.
    pub attention: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            strategy: StrategyKind::Greedy,
            beam_size: 5,
            n_best: 1,
            length_penalty: LengthPenalty::None,
            min_len: 0,
            max_len: None,
            max_len_ratio: None,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            groups: 2,
            diversity: 0.5,
            seed: 0,
            no_repeat_ngram: 0,
            forbid_unk: false,
            attention: false,
        }
    }
}

/// `LengthPenalty` as its text form (`none`, `avg:0.6`, `gnmt:1.0`).
mod penalty {
    use s2s_decode::LengthPenalty;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &LengthPenalty, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&match p {
            LengthPenalty::None => "none".to_string(),
            LengthPenalty::Average(a) => format!("avg:{a}"),
            LengthPenalty::Gnmt(a) => format!("gnmt:{a}"),
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LengthPenalty, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl DecodeOptions {
    /// The strategy these options describe, for a model whose default maximum output length
    /// is `default_max_len`; an error names the option that is out of range.
    pub fn strategy(&self, default_max_len: usize) -> Result<Decoding, OptionsError> {
        let bad = |m: String| Err(OptionsError(m));
        let max_len = self.max_len.unwrap_or(default_max_len);
        let processors = LogitsProcessors {
            no_repeat_ngram: self.no_repeat_ngram,
            forbid_unk: self.forbid_unk,
            ..LogitsProcessors::default()
        };
        if self.n_best == 0 || self.beam_size == 0 {
            return bad("`n_best` and `beam_size` must be at least 1".into());
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!(
                "`temperature` must be a finite number > 0, got {}",
                self.temperature
            ));
        }
        if let Some(r) = self.max_len_ratio {
            if !(r.is_finite() && r >= 0.0) {
                return bad(format!(
                    "`max_len_ratio` must be a finite number >= 0, got {r}"
                ));
            }
        }
        if !(self.diversity.is_finite() && self.diversity >= 0.0) {
            return bad(format!(
                "`diversity` must be a finite number >= 0, got {}",
                self.diversity
            ));
        }
        let keep_attention = self.attention;
        Ok(match self.strategy {
            StrategyKind::Greedy => {
                let mut g = Greedy::new(max_len).with_attention(keep_attention);
                g.min_len = self.min_len;
                g.processors = processors;
                Decoding::Greedy(g)
            }
            StrategyKind::Beam | StrategyKind::Diverse => {
                let mut b = BeamSearch::new(self.beam_size, max_len);
                b.n_best = self.n_best;
                b.length_penalty = self.length_penalty;
                b.min_len = self.min_len;
                b.max_len_ratio = self.max_len_ratio;
                b.processors = processors;
                b.keep_attention = keep_attention;
                if self.strategy == StrategyKind::Diverse {
                    if self.groups == 0 || !self.beam_size.is_multiple_of(self.groups) {
                        return bad(format!(
                            "`beam_size` ({}) must be a multiple of `groups` ({})",
                            self.beam_size, self.groups
                        ));
                    }
                    b.groups = self.groups;
                    b.diversity = self.diversity;
                }
                if self.n_best > self.beam_size {
                    return bad(format!(
                        "`n_best` ({}) cannot exceed `beam_size` ({})",
                        self.n_best, self.beam_size
                    ));
                }
                Decoding::Beam(b)
            }
            StrategyKind::Sample => {
                if !(self.top_p > 0.0 && self.top_p <= 1.0) {
                    return bad(format!("`top_p` must be in (0, 1], got {}", self.top_p));
                }
                let mut s = Sampling::new(self.seed, max_len);
                s.temperature = self.temperature;
                s.top_k = self.top_k;
                s.top_p = self.top_p;
                s.n = self.n_best;
                s.min_len = self.min_len;
                s.processors = processors;
                s.keep_attention = keep_attention;
                Decoding::Sample(s)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_options_have_the_cli_defaults_and_refuse_unknown_fields() {
        let o: DecodeOptions = serde_json::from_str(
            r#"{"strategy": "beam", "n_best": 3, "length_penalty": "avg:0.6"}"#,
        )
        .unwrap();
        assert_eq!(o.strategy, StrategyKind::Beam);
        assert_eq!((o.beam_size, o.n_best), (5, 3));
        assert_eq!(o.length_penalty, LengthPenalty::Average(0.6));
        let again: DecodeOptions =
            serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(again, o);
        let err = serde_json::from_str::<DecodeOptions>(r#"{"beam": 5}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `beam`"), "{err}");
        let err = serde_json::from_str::<DecodeOptions>(r#"{"length_penalty": "loud"}"#);
        assert!(err.is_err());
    }

    #[test]
    fn out_of_range_options_name_the_option() {
        let o = DecodeOptions {
            strategy: StrategyKind::Beam,
            beam_size: 2,
            n_best: 3,
            ..Default::default()
        };
        let err = o.strategy(50).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`n_best` (3) cannot exceed `beam_size` (2)"
        );
        assert_eq!(
            err.cli_message(),
            "--n-best (3) cannot exceed --beam-size (2)"
        );
        let o = DecodeOptions {
            strategy: StrategyKind::Sample,
            top_p: 0.0,
            ..Default::default()
        };
        assert!(o.strategy(50).unwrap_err().to_string().contains("`top_p`"));
        assert!(matches!(
            DecodeOptions::default().strategy(7),
            Ok(Decoding::Greedy(g)) if g.max_len == 7
        ));
    }
}
