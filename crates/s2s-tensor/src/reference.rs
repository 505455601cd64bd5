//! The cells', the attention's and their gradients' reference maths, written with Burn's
//! tensor operations: the defaults of [`S2sBackend`], which every backend can run and the
//! faster versions are tested against.
//!
//! Shapes as in [`crate::s2s_backend`].

use crate::s2s_backend::{
    AttentionGrads, AttentionStep, GruGrads, GruStep, LstmGrads, LstmStep, S2sBackend,
};
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::{Bool, Tensor, TensorData};

/// The GRU update (PyTorch's equations, the reset gate applied after the recurrent matmul):
/// `r, z = sigmoid(x_rz + h_rz)`, `n = tanh(x_n + r * h_n)`, `h' = (1 - z) * n + z * h`.
pub fn gru_forward<B: S2sBackend>(p: Tensor<B, 2>, r: Tensor<B, 2>, h: Tensor<B, 2>) -> GruStep<B> {
    let d = h.dims()[1];
    // Reset and update gates together: one add and one sigmoid over `2 * d_hidden`.
    let rz = B::elementwise_sigmoid(p.clone().narrow(1, 0, 2 * d) + r.clone().narrow(1, 0, 2 * d));
    let reset = rz.clone().narrow(1, 0, d);
    let update = rz.clone().narrow(1, d, d);
    let n = B::elementwise_tanh(p.narrow(1, 2 * d, d) + reset * r.narrow(1, 2 * d, d));
    // h' = (1 - z) * n + z * h
    let diff = h - n.clone();
    GruStep {
        h: n.clone() + update * diff.clone(),
        rz,
        n,
        diff,
    }
}

/// The gradients of [`gru_forward`]'s inputs.
pub fn gru_backward<B: Backend>(
    grad: Tensor<B, 2>,
    r_n: Tensor<B, 2>,
    rz: Tensor<B, 2>,
    n: Tensor<B, 2>,
    diff: Tensor<B, 2>,
) -> GruGrads<B> {
    let d = n.dims()[1];
    let update = rz.clone().narrow(1, d, d);
    let reset = rz.clone().narrow(1, 0, d);
    let dh = grad.clone() * update;
    // d h'/d n = 1 - z, then through tanh: 1 - n^2.
    let dn = grad.clone() - dh.clone();
    let dn_pre = dn.clone() - dn * n.clone() * n;
    let dz = grad * diff;
    let dreset = dn_pre.clone() * r_n;
    let drz_pre = Tensor::cat(vec![dreset, dz], 1) * (rz.clone() - rz.clone() * rz);
    GruGrads {
        recurrent: Tensor::cat(vec![drz_pre.clone(), dn_pre.clone() * reset], 1),
        projected: Tensor::cat(vec![drz_pre, dn_pre], 1),
        h: dh,
    }
}

/// The per-column factor `[4 * d]` that the `g` block's pre-activation is scaled by:
/// `tanh(g) = 2 sigmoid(2g) - 1`.
fn lstm_scale<B: Backend>(d: usize, square: bool, device: &B::Device) -> Tensor<B, 2> {
    let mut scale = vec![1.0f32; 4 * d];
    scale[2 * d..3 * d].fill(if square { 4.0 } else { 2.0 });
    Tensor::<B, 1>::from_data(TensorData::new(scale, [4 * d]), device).unsqueeze()
}

/// The LSTM update: `i, f, o = sigmoid(..)`, `g = tanh(..)`, `c' = f * c + i * g`,
/// `h' = o * tanh(c')`.
pub fn lstm_forward<B: S2sBackend>(
    p: Tensor<B, 2>,
    r: Tensor<B, 2>,
    c: Tensor<B, 2>,
) -> LstmStep<B> {
    let d = c.dims()[1];
    // One sigmoid over all four blocks, with the `g` block's input doubled, since
    // tanh(g) = 2 sigmoid(2g) - 1: fewer kernels than a sigmoid per gate plus a tanh.
    let act = B::elementwise_sigmoid((p + r) * lstm_scale::<B>(d, false, &c.device()));
    let i = act.clone().narrow(1, 0, d);
    let f = act.clone().narrow(1, d, d);
    let o = act.clone().narrow(1, 3 * d, d);
    let g = act
        .clone()
        .narrow(1, 2 * d, d)
        .mul_scalar(2.0)
        .sub_scalar(1.0);
    let c = f * c + i * g;
    let tanh_c = B::elementwise_tanh(c.clone());
    LstmStep {
        h: o * tanh_c.clone(),
        c,
        act,
        tanh_c,
    }
}

/// The gradients of [`lstm_forward`]'s inputs.
pub fn lstm_backward<B: Backend>(
    grad: Tensor<B, 2>,
    act: Tensor<B, 2>,
    c: Tensor<B, 2>,
    tanh_c: Tensor<B, 2>,
) -> LstmGrads<B> {
    let d = c.dims()[1];
    let gate = |k: usize| act.clone().narrow(1, k * d, d);
    let dh = grad.clone().narrow(1, 0, d);
    // The output's `c'` gradient plus the share that reaches `c'` through `h' = o tanh(c')`.
    let dh_o = dh.clone() * gate(3);
    let dc = grad.narrow(1, d, d) + dh_o.clone() - dh_o * tanh_c.clone() * tanh_c.clone();
    let g = gate(2).mul_scalar(2.0).sub_scalar(1.0);
    // d/d(pre) of sigmoid(scale * pre) is act (1 - act) scale; the `g` block's gradient
    // arrives through `g = 2 act - 1`, one more factor 2.
    let dgates = Tensor::cat(
        vec![
            dc.clone() * g,
            dc.clone() * c.clone(),
            dc.clone() * gate(0),
            dh * tanh_c,
        ],
        1,
    );
    let gates =
        dgates * (act.clone() - act.clone() * act.clone()) * lstm_scale::<B>(d, true, &c.device());
    LstmGrads {
        gates,
        c: dc * gate(1),
    }
}

/// `keys` (`[src_len, sources * d]`) with each block of `d` columns repeated for the query
/// rows that share it, so that there is one block per row of a query `width` wide.
pub fn keys_per_row<B: Backend>(keys: Tensor<B, 2>, width: usize, d: usize) -> Tensor<B, 2> {
    let [src_len, keys_width] = keys.dims();
    if keys_width == width || d == 0 {
        return keys;
    }
    let (sources, batch) = (keys_width / d, width / d);
    let repeat = crate::ops::RowLayout::of_shapes(batch, sources).per_source();
    let blocks: Vec<usize> = (0..batch).map(|b| b / repeat).collect();
    let blocks = crate::ops::index_tensor::<B>(&blocks, &keys.device());
    keys.reshape([src_len, sources, d])
        .select(1, blocks)
        .reshape([src_len, width])
}

/// The weights of additive (Bahdanau) attention, `softmax(2 v^T sigmoid(keys + q))` over the
/// source positions, masked, and `sigmoid(keys + q)` (`[src_len * batch, d]`), which the
/// gradient reads.
pub fn attention_forward<B: S2sBackend>(
    keys: Tensor<B, 2>,
    q: Tensor<B, 2>,
    v: Tensor<B, 2>,
    valid: Tensor<B, 2, Bool>,
) -> AttentionStep<B> {
    let [src_len, width] = keys.dims();
    let d = v.dims()[0];
    let (sources, batch) = (width / d, q.dims()[1] / d);
    // Through `[src_len, batch, d]`, as `s2s_nn` ran it before this node: reshaping the sum
    // straight to `[src_len * batch, d]` made burn-wgpu's forward pass give results 1e-3
    // apart for the same input in two calls (`alone_equals_in_padded_batch`, seed saved).
    let hidden = match crate::ops::RowLayout::of_shapes(batch, sources).per_source() {
        1 => B::elementwise_sigmoid(keys + q).reshape([src_len, batch, d]),
        // Each block of keys broadcast over the rows that share it.
        repeat => B::elementwise_sigmoid(
            keys.reshape([src_len, sources, 1, d]) + q.reshape([1, sources, repeat, d]),
        )
        .reshape([src_len, batch, d]),
    };
    let scores = linear(hidden.clone().reshape([src_len * batch, d]), v, None)
        .reshape([src_len, batch, 1])
        .reshape([src_len, batch])
        .mul_scalar(2.0);
    let hidden = hidden.reshape([src_len * batch, d]);
    let weights = crate::ops::masked_softmax(scores.swap_dims(0, 1), valid, 1);
    AttentionStep { weights, hidden }
}

/// The gradients of [`attention_forward`]'s inputs (one block of keys per query row).
pub fn attention_backward<B: Backend>(
    grad: Tensor<B, 2>,
    weights: Tensor<B, 2>,
    hidden: Tensor<B, 2>,
    v: Tensor<B, 2>,
) -> AttentionGrads<B> {
    let [batch, src_len] = weights.dims();
    let d = v.dims()[0];
    // Softmax: d scores = w * (dw - sum(dw * w)); zero where masked, as w is.
    let dot = (grad.clone() * weights.clone()).sum_dim(1);
    // Source-major like `hidden`, with the scores' factor 2: `[src_len * batch, 1]`.
    let dscores = (weights * (grad - dot))
        .mul_scalar(2.0)
        .swap_dims(0, 1)
        .reshape([src_len * batch, 1]);
    let dv = hidden.clone().transpose().matmul(dscores.clone());
    // `v` as a row by reshaping, not transposing: burn-tch 0.21's `swap_dims` gives the
    // view of `v` a storage handle of its own, so a product with as many elements as the
    // view (one source position in the batch) ran in place, into the parameter `v`
    // (tracel-ai/burn#5375, fixed after 0.21).
    let dpre = (dscores * v.reshape([1, d]) * (hidden.clone() - hidden.clone() * hidden))
        .reshape([src_len, batch * d]);
    AttentionGrads {
        q: dpre.clone().sum_dim(0),
        keys: dpre,
        v: dv,
    }
}
