//! The weights of additive (Bahdanau) attention and their gradient, one pass over each source
//! position: `softmax(2 v . sigmoid(k + q))` over the source positions, masked, as
//! `s2s_tensor::fused::additive_attention` defines it (the caller passes doubled keys and
//! query, so that this is `v . tanh(k + q)` up to a constant the softmax ignores).
//!
//! # Shapes
//! - `keys`: `[src_len, batch * d]`, source-major; `q`: `[batch * d]`; `v`: `[d]`
//! - `valid`: `[batch, src_len]`, `false` at padding
//! - weights: `[batch, src_len]`; `hidden = sigmoid(keys + q)`: `[src_len * batch, d]`

use crate::cells::Rows;
use crate::{sigmoid_f32, sigmoid_slice};

/// The score given to padding before the softmax: far enough below any real score that its
/// weight is exactly zero, and finite, so that a row with no valid position gets uniform
/// weights rather than NaN (as `s2s_tensor::ops::masked_softmax` does).
pub const MASK_VALUE: f32 = -1.0e9;

/// The attention weights and `sigmoid(keys + q)`, which the gradient reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Attention {
    /// `[batch, src_len]`.
    pub weights: Vec<f32>,
    /// `[src_len * batch, d]`.
    pub hidden: Vec<f32>,
}

/// The attention weights of one decoder step.
///
/// # Panics
/// When the shapes disagree.
pub fn additive_attention(keys: Rows, q: &[f32], v: &[f32], valid: &[bool]) -> Attention {
    crate::vectorized(
        #[inline(always)]
        || {
            let (src_len, width, d) = (keys.rows(), keys.cols(), v.len());
            assert!(
                d > 0 && width.is_multiple_of(d) && q.len() == width,
                "additive_attention: keys of width {width}, a query of {} and v of {d}",
                q.len()
            );
            let batch = width / d;
            assert_eq!(
                valid.len(),
                batch * src_len,
                "additive_attention: the mask's size"
            );
            let mut hidden = vec![0.0; src_len * width];
            // Source-major scores, `[src_len, batch]`, then the softmax over each batch row.
            let mut scores = vec![0.0; src_len * batch];
            for s in 0..src_len {
                let row = &mut hidden[s * width..(s + 1) * width];
                for ((o, k), q) in row.iter_mut().zip(keys.row(s)).zip(q) {
                    *o = k + q;
                }
                sigmoid_slice(row);
                for (b, score) in scores[s * batch..(s + 1) * batch].iter_mut().enumerate() {
                    *score = 2.0 * dot(&row[b * d..(b + 1) * d], v);
                }
            }
            Attention {
                weights: masked_softmax(&scores, valid, batch, src_len),
                hidden,
            }
        },
    )
}

/// The attention weights alone, as decoding needs them: [`additive_attention`] without
/// `hidden` (`sigmoid(keys + q)` is summed against `v` as it is computed, never stored), and
/// with each block of keys shared by consecutive query rows, so that the several rows of one
/// source (beam search, several samples) need no copies of its keys.
///
/// # Shapes
/// - `keys`: `[src_len, sources * d]`, source-major; `q`: `[batch * d]`, where `batch` is a
///   multiple of `sources` and query row `b` meets key block `b / (batch / sources)`
/// - `valid`: `[batch, src_len]`; returns the weights `[batch, src_len]`
///
/// # Panics
/// When the shapes disagree.
pub fn additive_attention_weights(keys: Rows, q: &[f32], v: &[f32], valid: &[bool]) -> Vec<f32> {
    crate::vectorized(
        #[inline(always)]
        || {
            let (src_len, width, d) = (keys.rows(), keys.cols(), v.len());
            assert!(
                d > 0 && width.is_multiple_of(d) && q.len().is_multiple_of(d),
                "additive_attention_weights: keys of width {width}, a query of {} and v of {d}",
                q.len()
            );
            let (sources, batch) = (width / d, q.len() / d);
            assert!(
                batch == sources || (sources > 0 && batch.is_multiple_of(sources)),
                "additive_attention_weights: {batch} query rows for {sources} key blocks"
            );
            assert_eq!(
                valid.len(),
                batch * src_len,
                "additive_attention_weights: the mask's size"
            );
            let repeat = (batch / sources.max(1)).max(1);
            let mut scores = vec![0.0; src_len * batch];
            for s in 0..src_len {
                let keys = keys.row(s);
                for (b, (score, q)) in scores[s * batch..(s + 1) * batch]
                    .iter_mut()
                    .zip(q.chunks_exact(d))
                    .enumerate()
                {
                    let key = &keys[(b / repeat) * d..(b / repeat + 1) * d];
                    *score = 2.0 * sigmoid_dot(key, q, v);
                }
            }
            masked_softmax(&scores, valid, batch, src_len)
        },
    )
}

/// The softmax over each row's valid positions of source-major `scores` (`[src_len,
/// batch]`): `[batch, src_len]`, exactly zero at padding.
#[inline(always)]
fn masked_softmax(scores: &[f32], valid: &[bool], batch: usize, src_len: usize) -> Vec<f32> {
    let mut weights = vec![0.0; batch * src_len];
    for (b, w) in weights.chunks_mut(src_len.max(1)).enumerate() {
        for (s, w) in w.iter_mut().enumerate() {
            *w = match valid[b * src_len + s] {
                true => scores[s * batch + b],
                false => MASK_VALUE,
            };
        }
        let max = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for x in w.iter_mut() {
            *x = (*x - max).exp();
        }
        let sum: f32 = w.iter().sum();
        for x in w.iter_mut() {
            *x /= sum;
        }
    }
    weights
}

/// `sigmoid(k + q) . v`, in eight lanes like [`dot`].
#[inline(always)]
fn sigmoid_dot(k: &[f32], q: &[f32], v: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0f32; LANES];
    let (k_chunks, q_chunks, v_chunks) = (
        k.chunks_exact(LANES),
        q.chunks_exact(LANES),
        v.chunks_exact(LANES),
    );
    let tail: f32 = k_chunks
        .remainder()
        .iter()
        .zip(q_chunks.remainder())
        .zip(v_chunks.remainder())
        .map(|((k, q), v)| sigmoid_f32(k + q) * v)
        .sum();
    for ((k, q), v) in k_chunks.zip(q_chunks).zip(v_chunks) {
        for l in 0..LANES {
            acc[l] += sigmoid_f32(k[l] + q[l]) * v[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `a . b`, summed in eight lanes so that the loop vectorises (a single `f32` sum would have
/// to run in order).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The gradients of the attention weights' inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionGrads {
    /// Of the keys, `[src_len, batch * d]`.
    pub keys: Vec<f32>,
    /// Of the query, `[batch * d]` (the keys' gradient summed over the source positions).
    pub q: Vec<f32>,
    /// Of `v`, `[d]`.
    pub v: Vec<f32>,
}

/// The gradient of [`additive_attention`] for the weights' gradient `grad` (`[batch,
/// src_len]`), from its saved `weights` and `hidden` and `v`.
///
/// # Panics
/// When the shapes disagree.
pub fn additive_attention_backward(
    grad: &[f32],
    weights: &[f32],
    hidden: &[f32],
    v: &[f32],
    src_len: usize,
) -> AttentionGrads {
    crate::vectorized(
        #[inline(always)]
        || {
            let d = v.len();
            let batch = match src_len {
                0 => 0,
                _ => weights.len() / src_len,
            };
            assert!(
                grad.len() == weights.len() && weights.len() == batch * src_len,
                "additive_attention_backward: a gradient of {} for {} weights",
                grad.len(),
                weights.len()
            );
            assert_eq!(
                hidden.len(),
                src_len * batch * d,
                "additive_attention_backward: hidden"
            );
            // Softmax: d score = w (dw - sum(dw w)), with the scores' factor 2; source-major.
            let mut dscores = vec![0.0; src_len * batch];
            for b in 0..batch {
                let (g, w) = (
                    &grad[b * src_len..(b + 1) * src_len],
                    &weights[b * src_len..(b + 1) * src_len],
                );
                let dot: f32 = g.iter().zip(w).map(|(g, w)| g * w).sum();
                for s in 0..src_len {
                    dscores[s * batch + b] = 2.0 * w[s] * (g[s] - dot);
                }
            }
            let width = batch * d;
            let mut out = AttentionGrads {
                keys: vec![0.0; src_len * width],
                q: vec![0.0; width],
                v: vec![0.0; d],
            };
            for (k, (&ds, h)) in dscores.iter().zip(hidden.chunks(d.max(1))).enumerate() {
                for (dv, h) in out.v.iter_mut().zip(h) {
                    *dv += ds * h;
                }
                let dpre = &mut out.keys[k * d..(k + 1) * d];
                for ((o, h), v) in dpre.iter_mut().zip(h).zip(v) {
                    *o = ds * v * (h - h * h);
                }
            }
            for row in out.keys.chunks(width.max(1)) {
                for (q, k) in out.q.iter_mut().zip(row) {
                    *q += k;
                }
            }
            out
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weights alone equal [`additive_attention`]'s, bit for bit, with the keys of each
    /// source copied for each of its query rows; with one row per source as well.
    #[test]
    fn weights_alone_share_each_sources_keys() {
        let (src_len, sources, d) = (4, 3, 11);
        let value = |i: usize, seed: usize| (((i * 5 + seed * 17) as f32) * 0.29).sin() * 3.0;
        let keys: Vec<f32> = (0..src_len * sources * d).map(|i| value(i, 1)).collect();
        let v: Vec<f32> = (0..d).map(|i| value(i, 3)).collect();
        for repeat in [1, 2, 5] {
            let batch = sources * repeat;
            let q: Vec<f32> = (0..batch * d).map(|i| value(i, 2)).collect();
            let lengths: Vec<usize> = (0..batch).map(|b| [4, 2, 0][b / repeat]).collect();
            let valid: Vec<bool> = lengths
                .iter()
                .flat_map(|&n| (0..src_len).map(move |s| s < n))
                .collect();
            // Every source's keys repeated for its rows: `[src_len, batch * d]`.
            let repeated: Vec<f32> = (0..src_len)
                .flat_map(|s| {
                    let keys = &keys;
                    (0..batch).flat_map(move |b| {
                        let start = (s * sources + b / repeat) * d;
                        keys[start..start + d].iter().copied()
                    })
                })
                .collect();
            let full = additive_attention(
                Rows::new(&repeated, src_len, batch * d, batch * d).unwrap(),
                &q,
                &v,
                &valid,
            );
            let alone = additive_attention_weights(
                Rows::new(&keys, src_len, sources * d, sources * d).unwrap(),
                &q,
                &v,
                &valid,
            );
            assert_eq!(alone, full.weights, "repeat {repeat}");
        }
    }

    /// The weights and gradients against the equations in f64, with a padded position, a
    /// fully masked row and strided keys.
    #[test]
    fn attention_and_gradient_follow_the_equations() {
        let (src_len, batch, d) = (3, 3, 4);
        let width = batch * d;
        let value = |i: usize, seed: usize| (((i * 7 + seed * 13) as f32) * 0.37).sin() * 2.0;
        let wide: Vec<f32> = (0..src_len * (width + 2)).map(|i| value(i, 1)).collect();
        let keys = Rows::new(&wide[1..], src_len, width, width + 2).unwrap();
        let q: Vec<f32> = (0..width).map(|i| value(i, 2)).collect();
        let v: Vec<f32> = (0..d).map(|i| value(i, 3)).collect();
        let grad: Vec<f32> = (0..batch * src_len).map(|i| value(i, 4)).collect();
        let lengths = [3, 2, 0];
        let valid: Vec<bool> = lengths
            .iter()
            .flat_map(|&n| (0..src_len).map(move |s| s < n))
            .collect();
        let att = additive_attention(keys, &q, &v, &valid);
        let grads = additive_attention_backward(&grad, &att.weights, &att.hidden, &v, src_len);

        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let hidden = |s: usize, b: usize, j: usize| {
            sig(f64::from(keys.row(s)[b * d + j]) + f64::from(q[b * d + j]))
        };
        let (mut dkeys, mut dq, mut dv) =
            (vec![0.0; src_len * width], vec![0.0; width], vec![0.0; d]);
        for b in 0..batch {
            let scores: Vec<f64> = (0..src_len)
                .map(|s| match s < lengths[b] {
                    true => {
                        2.0 * (0..d)
                            .map(|j| hidden(s, b, j) * f64::from(v[j]))
                            .sum::<f64>()
                    }
                    false => f64::from(MASK_VALUE),
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = scores.iter().map(|x| (x - max).exp()).sum();
            let w: Vec<f64> = scores.iter().map(|x| (x - max).exp() / sum).collect();
            let g: Vec<f64> = (0..src_len)
                .map(|s| f64::from(grad[b * src_len + s]))
                .collect();
            let dot: f64 = g.iter().zip(&w).map(|(g, w)| g * w).sum();
            for s in 0..src_len {
                let got = f64::from(att.weights[b * src_len + s]);
                assert!(
                    (got - w[s]).abs() < 1e-6,
                    "weight {b},{s}: {got} vs {}",
                    w[s]
                );
                if s >= lengths[b] && lengths[b] > 0 {
                    assert_eq!(got, 0.0, "padding gets no weight");
                }
                let ds = 2.0 * w[s] * (g[s] - dot);
                for j in 0..d {
                    let h = hidden(s, b, j);
                    let pre = ds * f64::from(v[j]) * h * (1.0 - h);
                    dkeys[s * width + b * d + j] = pre;
                    dq[b * d + j] += pre;
                    dv[j] += ds * h;
                }
            }
        }
        for (got, want) in [(&grads.keys, &dkeys), (&grads.q, &dq), (&grads.v, &dv)] {
            for (a, b) in got.iter().zip(want.iter()) {
                assert!(
                    (f64::from(*a) - b).abs() < 1e-5 * b.abs().max(1.0),
                    "{a} vs {b}"
                );
            }
        }
    }
}
