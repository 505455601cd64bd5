//! Pieces shared by the strategies: one model step read back as log-probabilities, logits
//! processors and length penalties.

use crate::driver::{Reorder, SearchState};
use crate::{SpecialTokens, StepDecoder};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use s2s_tensor::ops;
use std::fmt;
use std::sync::Arc;

/// The log-probabilities of one step, on the host.
pub(crate) struct Logprobs {
    /// `[rows * vocab]` row-major log-probabilities.
    pub logp: Vec<f32>,
    /// Vocabulary size.
    pub vocab: usize,
    /// `[rows * src_len]` attention weights, when asked for.
    pub attention: Option<Vec<f32>>,
}

/// Runs one model step for `tokens` and reads the log-probabilities back; returns them with
/// the model state after the step.
pub(crate) fn step_logprobs<B: Backend, M: StepDecoder<B>>(
    model: &M,
    memory: &M::Memory,
    tokens: &[usize],
    state: M::State,
    keep_attention: bool,
    device: &B::Device,
) -> (Logprobs, M::State) {
    let input = ops::index_tensor::<B>(tokens, device);
    let (logits, state, attention) = model.step(memory, input, state);
    let vocab = logits.dims()[1];
    let out = Logprobs {
        logp: ops::to_vec_f32(log_softmax(logits, 1)),
        vocab,
        attention: keep_attention.then(|| ops::to_vec_f32(attention)),
    };
    (out, state)
}

/// Copies the attention row of `row` for a source of `len` tokens out of a step's
/// `[rows * src_len]` weights.
pub(crate) fn attention_row(weights: &[f32], row: usize, src_len: usize, len: usize) -> Vec<f32> {
    weights[row * src_len..row * src_len + len].to_vec()
}

/// One adjustment of a row of next-token log-probabilities, which every strategy applies
/// before it chooses (OpenNMT-py's and Hugging Face's logits processors). Implement it for a
/// constraint of your own and add it to [`LogitsProcessors::custom`].
pub trait LogitsProcessor: fmt::Debug + Send + Sync {
    /// Sets forbidden tokens of `logp` (`[vocab]`) to `-inf`, given the output so far
    /// (`prefix`, without `<sos>`) and the decoder's special tokens.
    fn process(&self, prefix: &[u32], logp: &mut [f32], special: &SpecialTokens);
}

/// Never produce `<unk>` (`--forbid-unk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForbidUnk;

impl LogitsProcessor for ForbidUnk {
    fn process(&self, _prefix: &[u32], logp: &mut [f32], special: &SpecialTokens) {
        if let Some(unk) = special.unk {
            logp[unk] = f32::NEG_INFINITY;
        }
    }
}

/// No n-gram of this size twice in an output (`--no-repeat-ngram N`; 0 is off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRepeatNgram(pub usize);

impl LogitsProcessor for NoRepeatNgram {
    fn process(&self, prefix: &[u32], logp: &mut [f32], _special: &SpecialTokens) {
        let n = self.0;
        if n > 0 && prefix.len() + 1 >= n {
            let tail = &prefix[prefix.len() + 1 - n..];
            for window in prefix.windows(n) {
                if window[..n - 1] == *tail {
                    logp[window[n - 1] as usize] = f32::NEG_INFINITY;
                }
            }
        }
    }
}

/// The adjustments a strategy applies to next-token log-probabilities before it chooses: the
/// built-in ones that are switched on, then [`custom`](Self::custom), in order.
#[derive(Debug, Clone, Default)]
pub struct LogitsProcessors {
    /// Forbid any n-gram of this size from appearing twice in an output (0: off;
    /// [`NoRepeatNgram`]).
    pub no_repeat_ngram: usize,
    /// Never produce `<unk>` ([`ForbidUnk`]).
    pub forbid_unk: bool,
    /// Further processors, run after the built-in ones in this order.
    pub custom: Vec<Arc<dyn LogitsProcessor>>,
}

/// Equal when the built-in settings are and `custom` holds the same processors (the same
/// `Arc`s) in the same order.
impl PartialEq for LogitsProcessors {
    fn eq(&self, other: &Self) -> bool {
        self.no_repeat_ngram == other.no_repeat_ngram
            && self.forbid_unk == other.forbid_unk
            && self.custom.len() == other.custom.len()
            && self
                .custom
                .iter()
                .zip(&other.custom)
                .all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl LogitsProcessors {
    /// True when some processor is on.
    pub fn is_active(&self) -> bool {
        self.no_repeat_ngram > 0 || self.forbid_unk || !self.custom.is_empty()
    }

    /// Sets forbidden tokens to `-inf` given the output so far (`prefix`, without `<sos>`),
    /// with the special tokens of `s2s_data::Vocab`.
    pub fn apply(&self, prefix: &[u32], logp: &mut [f32]) {
        self.apply_for(prefix, logp, &SpecialTokens::default());
    }

    /// [`apply`](Self::apply) with a decoder's own special tokens.
    pub fn apply_for(&self, prefix: &[u32], logp: &mut [f32], special: &SpecialTokens) {
        if self.forbid_unk {
            ForbidUnk.process(prefix, logp, special);
        }
        NoRepeatNgram(self.no_repeat_ngram).process(prefix, logp, special);
        for p in &self.custom {
            p.process(prefix, logp, special);
        }
    }

    /// Forbids `<eos>` (id `eos`) while the output is shorter than `min_len`.
    pub(crate) fn apply_min_len(len: usize, min_len: usize, eos: usize, logp: &mut [f32]) {
        if len < min_len {
            logp[eos] = f32::NEG_INFINITY;
        }
    }
}

/// How a hypothesis' log-probability sum is normalised by its length when ranking.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LengthPenalty {
    /// The raw sum (favours short outputs).
    #[default]
    None,
    /// `score / len^alpha`; alpha 0 is the raw sum, 1 the mean per token (0.6-1.0 is usual).
    Average(f32),
    /// GNMT's `score / ((5 + len) / 6)^alpha` (Wu et al., 2016).
    Gnmt(f32),
}

impl LengthPenalty {
    /// The divisor for an output of `len` tokens (`<eos>` included).
    pub fn divisor(&self, len: usize) -> f32 {
        let len = len.max(1) as f32;
        match *self {
            LengthPenalty::None => 1.0,
            LengthPenalty::Average(alpha) => len.powf(alpha),
            LengthPenalty::Gnmt(alpha) => ((5.0 + len) / 6.0).powf(alpha),
        }
    }

    /// The normalised score.
    pub fn apply(&self, score: f32, len: usize) -> f32 {
        score / self.divisor(len)
    }
}

impl std::str::FromStr for LengthPenalty {
    type Err = String;
    /// Parses `none`, `avg:ALPHA` or `gnmt:ALPHA`.
    fn from_str(s: &str) -> Result<Self, String> {
        let alpha = |a: &str| {
            a.parse::<f32>()
                .map_err(|_| format!("bad alpha {a:?} in {s:?}"))
        };
        match s.split_once(':') {
            None if s == "none" => Ok(LengthPenalty::None),
            Some(("avg", a)) => Ok(LengthPenalty::Average(alpha(a)?)),
            Some(("gnmt", a)) => Ok(LengthPenalty::Gnmt(alpha(a)?)),
            _ => Err(format!(
                "unknown length penalty {s:?} (expected none, avg:ALPHA or gnmt:ALPHA)"
            )),
        }
    }
}

/// The search of the strategies that extend each output by one chosen token per step
/// (greedy, sampling), run by [`drive`](crate::driver::drive). Every source is decoded
/// `copies` times; rows that produce `<eos>` leave the batch. `choose(row, logp)` picks the
/// next token of an expanded row from its processed log-probabilities. The outputs come
/// back grouped per source, copies in order.
pub(crate) struct ExtendRows<'a, F> {
    special: SpecialTokens,
    max_len: usize,
    min_len: usize,
    processors: &'a LogitsProcessors,
    source_lengths: &'a [usize],
    src_len: usize,
    copies: usize,
    /// The source of each expanded row.
    expand: Vec<usize>,
    hyps: Vec<crate::Hypothesis>,
    /// `active[k]` is the expanded row of live model row `k`.
    active: Vec<usize>,
    /// Each live row's next input token.
    tokens: Vec<usize>,
    choose: F,
}

impl<'a, F: FnMut(usize, &[f32]) -> usize> ExtendRows<'a, F> {
    /// The search over `source_lengths.len()` sources of at most `src_len` tokens.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        special: SpecialTokens,
        source_lengths: &'a [usize],
        src_len: usize,
        copies: usize,
        max_len: usize,
        min_len: usize,
        processors: &'a LogitsProcessors,
        keep_attention: bool,
        choose: F,
    ) -> Self {
        let copies = copies.max(1);
        let expand: Vec<usize> = (0..source_lengths.len())
            .flat_map(|i| std::iter::repeat_n(i, copies))
            .collect();
        let hyps = expand
            .iter()
            .map(|_| crate::Hypothesis {
                tokens: Vec::new(),
                score: 0.0,
                attention: keep_attention.then(Vec::new),
            })
            .collect();
        ExtendRows {
            special,
            max_len,
            min_len,
            processors,
            source_lengths,
            src_len,
            copies,
            active: (0..expand.len()).collect(),
            tokens: vec![special.sos; expand.len()],
            expand,
            hyps,
            choose,
        }
    }
}

impl<F: FnMut(usize, &[f32]) -> usize> SearchState for ExtendRows<'_, F> {
    fn initial_rows(&self) -> Option<Vec<usize>> {
        (self.copies > 1).then(|| self.expand.clone())
    }

    fn is_finished(&self) -> bool {
        self.active.is_empty()
    }

    fn input_tokens(&self, _step: usize) -> Vec<usize> {
        self.tokens.clone()
    }

    fn advance(&mut self, step: usize, mut out: Logprobs) -> Reorder {
        let v = out.vocab;
        let special = self.special;
        let (mut keep, mut next) = (Vec::new(), Vec::new());
        for (k, &r) in self.active.iter().enumerate() {
            let h = &mut self.hyps[r];
            let logp = &mut out.logp[k * v..(k + 1) * v];
            self.processors.apply_for(&h.tokens, logp, &special);
            LogitsProcessors::apply_min_len(h.tokens.len(), self.min_len, special.eos, logp);
            let id = (self.choose)(r, logp);
            // At the last step only `<eos>` may still be scored; the row stops either way.
            if id == special.eos || step == self.max_len {
                if id == special.eos {
                    h.score += logp[id];
                }
                continue;
            }
            h.score += logp[id];
            h.tokens.push(id as u32);
            if let (Some(att), Some(w)) = (h.attention.as_mut(), out.attention.as_ref()) {
                let len = self.source_lengths[self.expand[r]];
                att.push(attention_row(w, k, self.src_len, len));
            }
            keep.push(k);
            next.push(id);
        }
        let reorder = match keep.len() != self.active.len() && !keep.is_empty() {
            true => Reorder::All(keep.clone()),
            false => Reorder::Keep,
        };
        self.tokens = next;
        self.active = keep.iter().map(|&k| self.active[k]).collect();
        reorder
    }

    fn finalize(self) -> Vec<Vec<crate::Hypothesis>> {
        let mut per_source: Vec<Vec<crate::Hypothesis>> = (0..self.source_lengths.len())
            .map(|_| Vec::with_capacity(self.copies))
            .collect();
        for (r, h) in self.hyps.into_iter().enumerate() {
            per_source[self.expand[r]].push(h);
        }
        per_source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_repeat_ngram_blocks_the_completion() {
        let p = LogitsProcessors {
            no_repeat_ngram: 2,
            forbid_unk: true,
            ..LogitsProcessors::default()
        };
        let mut logp = vec![0.0f32; 8];
        // Prefix 5 6 5: the bigram "5 6" exists, so after "5" the token 6 is blocked.
        p.apply(&[5, 6, 5], &mut logp);
        assert_eq!(logp[6], f32::NEG_INFINITY);
        assert_eq!(logp[s2s_data::Vocab::UNK as usize], f32::NEG_INFINITY);
        assert_eq!(logp.iter().filter(|v| v.is_infinite()).count(), 2);
    }

    #[test]
    fn penalties() {
        assert_eq!(LengthPenalty::None.apply(-4.0, 4), -4.0);
        assert_eq!(LengthPenalty::Average(1.0).apply(-4.0, 4), -1.0);
        assert!((LengthPenalty::Gnmt(1.0).apply(-4.0, 7) + 2.0).abs() < 1e-6);
        assert_eq!(
            "avg:0.6".parse::<LengthPenalty>().unwrap(),
            LengthPenalty::Average(0.6)
        );
        assert!("avg".parse::<LengthPenalty>().is_err());
    }
}
