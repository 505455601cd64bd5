//! Attention over the encoder outputs: Bahdanau (additive) and Luong (dot, general).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Bool, Tensor};
use s2s_tensor::ops::RowLayout;
use s2s_tensor::S2sBackend;
use serde::{Deserialize, Serialize};

/// The scoring function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKind {
    /// `v^T tanh(W_q q + W_k k)` (Bahdanau et al., 2015).
    #[default]
    Bahdanau,
    /// `q^T k` (Luong et al., 2015); needs `d_query == d_key`.
    Dot,
    /// `q^T W k` (Luong et al., 2015).
    General,
}

impl std::str::FromStr for AttentionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bahdanau" => Ok(AttentionKind::Bahdanau),
            "dot" => Ok(AttentionKind::Dot),
            "general" => Ok(AttentionKind::General),
            _ => Err(format!(
                "unknown attention {s:?} (expected bahdanau, dot or general)"
            )),
        }
    }
}

/// Configuration of [`Attention`].
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Query size (the decoder state).
    pub d_query: usize,
    /// Key size (the encoder outputs).
    pub d_key: usize,
    /// Hidden size of the additive score (Bahdanau only).
    pub d_attention: usize,
    /// Scoring function.
    #[config(default = "AttentionKind::Bahdanau")]
    pub kind: AttentionKind,
}

impl AttentionConfig {
    /// Initialises the attention.
    ///
    /// # Panics
    /// For `Dot` with `d_query != d_key` (check with [`crate::Seq2SeqConfig::validate`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        let (query, key, score) = match self.kind {
            AttentionKind::Bahdanau => (
                Some(
                    LinearConfig::new(self.d_query, self.d_attention)
                        .with_bias(false)
                        .init(device),
                ),
                Some(LinearConfig::new(self.d_key, self.d_attention).init(device)),
                Some(
                    LinearConfig::new(self.d_attention, 1)
                        .with_bias(false)
                        .init(device),
                ),
            ),
            AttentionKind::Dot => {
                assert_eq!(
                    self.d_query, self.d_key,
                    "dot attention needs d_query == d_key"
                );
                (None, None, None)
            }
            AttentionKind::General => (
                None,
                Some(
                    LinearConfig::new(self.d_key, self.d_query)
                        .with_bias(false)
                        .init(device),
                ),
                None,
            ),
        };
        Attention {
            query,
            key,
            score,
            kind: self.kind,
        }
    }
}

/// Attention scores, masked softmax and context.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection (Bahdanau).
    pub query: Option<Linear<B>>,
    /// Key projection (Bahdanau, general).
    pub key: Option<Linear<B>>,
    /// Score vector `v` (Bahdanau).
    pub score: Option<Linear<B>>,
    /// Scoring function.
    #[module(skip)]
    pub kind: AttentionKind,
}

impl<B: S2sBackend> Attention<B> {
    /// Projects the encoder outputs once per source, before decoding starts.
    ///
    /// Bahdanau keys are stored doubled, `2 (W_k k + b_k)`: [`forward`](Self::forward)
    /// computes `v^T tanh(a)` as `2 v^T sigmoid(2a) - sum(v)` and drops the constant, which
    /// the softmax ignores. The result is the same attention; the point is the backward pass,
    /// where Burn recomputes `tanh` and spends four more passes over `[batch, src_len,
    /// d_attention]` per step, against one fused pass for `sigmoid`.
    ///
    /// The keys are source-major, `[src_len, batch, _]`, and contiguous: a step then adds its
    /// query to them as one row broadcast over the source positions, which every backend runs
    /// as a plain vectorised loop (burn-flex's broadcast kernels cover a shared row, not a
    /// `[batch, 1, d]` operand over `[batch, src_len, d]`).
    ///
    /// # Shapes
    /// - `memory`: `[batch, src_len, d_key]`
    /// - returns `[src_len, batch, d_attention]` (Bahdanau), `[src_len, batch, d_query]`
    ///   (general) or the memory itself, source-major (dot)
    pub fn keys(&self, memory: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, src_len, d_key] = memory.dims();
        // The rows projected in the memory's batch-major order, then gathered into
        // source-major order: the gather's gradient is a scatter of whole rows into a
        // contiguous tensor. Swapping the dimensions instead would make the memory's gradient
        // a strided view, which burn-flex adds to the memory's other gradients, like the
        // forward pass's copy of a swapped view, with a scalar walk over every element.
        let order: Vec<usize> = (0..src_len)
            .flat_map(|s| (0..batch).map(move |b| b * src_len + s))
            .collect();
        let rows = memory.reshape([batch * src_len, d_key]);
        let projected = match (&self.key, self.kind) {
            (Some(k), AttentionKind::Bahdanau) => k.forward(rows).mul_scalar(2.0),
            (Some(k), _) => k.forward(rows),
            (None, _) => rows,
        };
        let d = projected.dims()[1];
        s2s_tensor::ops::gather_rows(projected, &order).reshape([src_len, batch, d])
    }

    /// Attends from `query` over the source.
    ///
    /// # Shapes
    /// - `query`: `[batch, d_query]`
    /// - `keys`: from [`keys`](Self::keys), `[src_len, sources, _]`
    /// - `memory`: `[sources, src_len, d_key]`; `layout`: which source each query row reads
    ///   (see [`weights`](Self::weights))
    /// - `valid`: `[batch, src_len]`, `false` at padding
    /// - returns the context `[batch, d_key]` and the weights `[batch, src_len]`
    pub fn forward(
        &self,
        query: Tensor<B, 2>,
        keys: Tensor<B, 3>,
        memory: Tensor<B, 3>,
        valid: Tensor<B, 2, Bool>,
        layout: RowLayout,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let weights = self.weights(query, keys, valid, layout);
        let context = mix(&weights, memory, layout);
        (context, weights)
    }

    /// The attention weights alone (masked softmax of the scores), for callers that mix
    /// something other than the memory with them.
    ///
    /// Consecutive query rows may share a source, as `layout` says: row `b` attends over
    /// source `layout.source_of(b)` (beam search's rows of one sentence read its keys without
    /// copies of them).
    ///
    /// # Shapes
    /// - `query`: `[batch, d_query]`; `keys`: `[src_len, sources, _]`; `valid`: `[batch,
    ///   src_len]`; `layout`: `batch` rows over `sources` sources; returns `[batch, src_len]`
    ///
    /// # Panics
    /// When `layout` does not match the shapes.
    pub fn weights(
        &self,
        query: Tensor<B, 2>,
        keys: Tensor<B, 3>,
        valid: Tensor<B, 2, Bool>,
        layout: RowLayout,
    ) -> Tensor<B, 2> {
        let [src_len, sources, d] = keys.dims();
        let batch = query.dims()[0];
        check_layout(layout, batch, sources);
        let repeat = layout.per_source();
        // Each `[src_len, sources * d]` row of keys meets the same `[1, batch * d]` query row.
        let flat = keys.reshape([src_len, sources * d]);
        match self.kind {
            AttentionKind::Bahdanau => {
                // v^T tanh(k + q) = 2 v^T sigmoid(2k + 2q) - sum(v); `keys` hold 2k. In
                // training this is one autodiff node with a hand-written gradient.
                let q = self
                    .query
                    .as_ref()
                    .expect("bahdanau has a query projection")
                    .forward(query)
                    .mul_scalar(2.0);
                let v = self
                    .score
                    .as_ref()
                    .expect("bahdanau has a score vector")
                    .weight
                    .val();
                s2s_tensor::fused::additive_attention(flat, q.reshape([1, batch * d]), v, valid)
            }
            AttentionKind::Dot | AttentionKind::General => {
                // [src_len, batch]
                let products = match repeat {
                    1 => (flat * query.reshape([1, batch * d])).reshape([src_len, batch, d]),
                    _ => (flat.reshape([src_len, sources, 1, d])
                        * query.reshape([1, sources, repeat, d]))
                    .reshape([src_len, batch, d]),
                };
                let scores = products.sum_dim(2).reshape([src_len, batch]);
                s2s_tensor::ops::masked_softmax(scores.swap_dims(0, 1), valid, 1)
            }
        }
    }
}

/// The attention-weighted sum of `values` over the source positions, one batched product.
/// As in [`Attention::weights`], consecutive rows may share a source: row `b` mixes the
/// values of source `layout.source_of(b)` (one `[per_source, src_len] x [src_len, d]`
/// product per source).
///
/// # Shapes
/// - `weights`: `[batch, src_len]`; `values`: `[sources, src_len, d]`; `layout`: `batch`
///   rows over `sources` sources; returns `[batch, d]`
///
/// # Panics
/// When `layout` does not match the shapes.
pub fn mix<B: Backend>(
    weights: &Tensor<B, 2>,
    values: Tensor<B, 3>,
    layout: RowLayout,
) -> Tensor<B, 2> {
    let [batch, src_len] = weights.dims();
    let [sources, _, d] = values.dims();
    check_layout(layout, batch, sources);
    match layout.per_source() {
        1 => weights
            .clone()
            .unsqueeze_dim(1)
            .matmul(values)
            .squeeze_dim(1),
        repeat => weights
            .clone()
            .reshape([sources, repeat, src_len])
            .matmul(values)
            .reshape([batch, d]),
    }
}

/// Panics unless `layout` lays `rows` rows over `sources` sources.
fn check_layout(layout: RowLayout, rows: usize, sources: usize) {
    assert!(
        layout.rows() == rows && layout.sources() == sources,
        "{layout:?} does not lay {rows} rows over {sources} sources"
    );
}
