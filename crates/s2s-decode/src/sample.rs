//! Seeded sampling with temperature, top-k and top-p (nucleus) filtering.

use crate::driver::drive;
use crate::search::{ExtendRows, LogitsProcessors};
use crate::{Hypothesis, StepDecoder, Strategy};
use burn::tensor::backend::Backend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use s2s_data::corpus::fnv1a;
use s2s_data::InferenceBatch;
use std::cmp::Ordering;

/// Draws `n` outputs per source, token by token, from the model's distribution reshaped by
/// `temperature`, restricted to the `top_k` most likely tokens and to the smallest set whose
/// probability reaches `top_p`.
///
/// Each output has its own random generator, seeded from `seed`, the source tokens and the
/// sample number: the same seed gives the same outputs, whatever the batch (and whatever
/// the `rand` version: the generator is ChaCha12 by name, not `rand`'s `StdRng`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Softmax temperature (> 0; 1 keeps the model's distribution).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens with probability >= `top_p` (1: all).
    pub top_p: f32,
    /// Samples per source.
    pub n: usize,
    /// Base seed.
    pub seed: u64,
    /// Minimum output length before `<eos>` is allowed.
    pub min_len: usize,
    /// Maximum output length.
    pub max_len: usize,
    /// Adjustments to the log-probabilities before sampling.
    pub processors: LogitsProcessors,
    /// Also return each step's attention weights.
    pub keep_attention: bool,
}

impl Sampling {
    /// Plain sampling (temperature 1, no filtering), one sample per source.
    pub fn new(seed: u64, max_len: usize) -> Self {
        Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            n: 1,
            seed,
            min_len: 0,
            max_len,
            processors: LogitsProcessors::default(),
            keep_attention: false,
        }
    }

    /// The tokens that may be drawn and their probabilities (unnormalised), after
    /// temperature, top-k and top-p, in decreasing order of probability.
    pub fn candidates(&self, logp: &[f32]) -> Vec<(usize, f32)> {
        let t = self.temperature.max(1e-6);
        let mut c: Vec<(usize, f32)> = logp
            .iter()
            .enumerate()
            .filter(|(_, &lp)| lp > f32::NEG_INFINITY)
            .map(|(i, &lp)| (i, lp / t))
            .collect();
        c.sort_by(|a, b| {
            b.1.partial_cmp(&a.1)
                .unwrap_or(Ordering::Equal)
                .then(a.0.cmp(&b.0))
        });
        if self.top_k > 0 {
            c.truncate(self.top_k);
        }
        let max = c.first().map_or(0.0, |x| x.1);
        let mut probs: Vec<(usize, f32)> =
            c.into_iter().map(|(i, s)| (i, (s - max).exp())).collect();
        if self.top_p < 1.0 {
            let total: f32 = probs.iter().map(|p| p.1).sum();
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (k, p) in probs.iter().enumerate() {
                acc += p.1 / total;
                if acc >= self.top_p {
                    keep = k + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        probs
    }
}

/// A token drawn from `candidates` (`(id, probability)`); `eos` when there is none.
fn draw(rng: &mut ChaCha12Rng, candidates: &[(usize, f32)], eos: usize) -> usize {
    let total: f32 = candidates.iter().map(|c| c.1).sum();
    let mut x = rng.random::<f32>() * total;
    for &(i, p) in candidates {
        if x < p {
            return i;
        }
        x -= p;
    }
    candidates.last().map_or(eos, |c| c.0)
}

impl<B: Backend, M: StepDecoder<B>> Strategy<B, M> for Sampling {
    fn decode(&self, model: &M, batch: &InferenceBatch<B>) -> Vec<Vec<Hypothesis>> {
        let src_len = batch.source.dims()[1];
        let n = self.n.max(1);
        let ids = s2s_tensor::ops::to_vec_i64(batch.source.clone());
        // Row `r` of the expanded batch is sample `r % n` of source `r / n`.
        let mut rngs: Vec<ChaCha12Rng> = (0..batch.len() * n)
            .map(|r| {
                let i = r / n;
                let mut key: Vec<u8> = self.seed.to_le_bytes().to_vec();
                key.extend(((r % n) as u64).to_le_bytes());
                for &t in &ids[i * src_len..i * src_len + batch.source_lengths[i]] {
                    key.extend(t.to_le_bytes());
                }
                ChaCha12Rng::seed_from_u64(fnv1a(&key))
            })
            .collect();
        let special = model.special_tokens();
        let search = ExtendRows::new(
            special,
            &batch.source_lengths,
            src_len,
            n,
            self.max_len,
            self.min_len,
            &self.processors,
            self.keep_attention,
            |r, logp: &[f32]| draw(&mut rngs[r], &self.candidates(logp), special.eos),
        );
        drive(model, batch, self.keep_attention, search)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_keep_the_most_likely_tokens() {
        let logp: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
        let mut s = Sampling::new(1, 10);
        s.top_k = 2;
        let c: Vec<usize> = s.candidates(&logp).iter().map(|c| c.0).collect();
        assert_eq!(c, vec![0, 1]);
        s.top_k = 0;
        s.top_p = 0.8;
        let c: Vec<usize> = s.candidates(&logp).iter().map(|c| c.0).collect();
        assert_eq!(c, vec![0, 1]);
        s.top_p = 0.81;
        assert_eq!(s.candidates(&logp).len(), 3);
    }

    /// The distribution that `candidates` then `draw` sample from, worked out in f64 from
    /// the definitions: `p^(1/T)` normalised, the `k` most likely, then the fewest most
    /// likely whose mass reaches `top_p`, normalised again.
    fn expected(probs: &[f64], t: f64, k: usize, top_p: f64) -> Vec<f64> {
        let mut w: Vec<(usize, f64)> = probs.iter().map(|p| p.powf(1.0 / t)).enumerate().collect();
        w.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
        if k > 0 {
            w.truncate(k);
        }
        let total: f64 = w.iter().map(|x| x.1).sum();
        let mut acc = 0.0;
        let mut keep = w.len();
        for (i, x) in w.iter().enumerate() {
            acc += x.1 / total;
            if acc >= top_p {
                keep = i + 1;
                break;
            }
        }
        w.truncate(keep);
        let total: f64 = w.iter().map(|x| x.1).sum();
        let mut out = vec![0.0; probs.len()];
        for (i, x) in w {
            out[i] = x / total;
        }
        out
    }

    /// 20,000 seeded draws match the temperature-, top-k- and top-p-adjusted probabilities:
    /// Pearson's chi-square stays below its 0.1% critical value, and tokens outside the
    /// kept set are never drawn. (A sampler that ignored the probabilities, the temperature
    /// or top-p fails this by orders of magnitude.)
    #[test]
    fn draws_follow_the_adjusted_distribution() {
        let probs = [0.4, 0.25, 0.2, 0.1, 0.05];
        let logp: Vec<f32> = probs.iter().map(|p: &f64| p.ln() as f32).collect();
        // Critical values of chi-square at 0.1% for 1..=4 degrees of freedom.
        let critical = [10.83, 13.82, 16.27, 18.47];
        for (t, k, top_p) in [
            (1.0, 0, 1.0),
            (0.5, 0, 1.0),
            (2.0, 0, 1.0),
            (1.0, 3, 1.0),
            (1.0, 0, 0.8),
            (0.7, 4, 0.9),
        ] {
            let mut s = Sampling::new(1, 10);
            s.temperature = t as f32;
            s.top_k = k;
            s.top_p = top_p as f32;
            let want = expected(&probs, t, k, top_p);
            let mut rng = ChaCha12Rng::seed_from_u64(42);
            let n = 20_000;
            let mut counts = [0usize; 5];
            let candidates = s.candidates(&logp);
            for _ in 0..n {
                counts[draw(&mut rng, &candidates, s2s_data::Vocab::EOS as usize)] += 1;
            }
            let mut chi2 = 0.0;
            let mut kept = 0;
            for (c, p) in counts.iter().zip(&want) {
                if *p == 0.0 {
                    assert_eq!(
                        *c, 0,
                        "T {t}, k {k}, p {top_p}: a token outside the kept set was drawn"
                    );
                    continue;
                }
                kept += 1;
                let e = p * n as f64;
                chi2 += (*c as f64 - e).powi(2) / e;
            }
            assert!(
                chi2 < critical[kept - 2],
                "T {t}, k {k}, p {top_p}: chi2 {chi2:.1} for {counts:?}, want {want:?}"
            );
        }
    }
}
