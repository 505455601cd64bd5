//! The GRU and LSTM cell updates and the additive attention weights, each one operation of
//! Burn's autodiff graph with a hand-written gradient.
//!
//! Written with Burn's tensor operations, a GRU cell update is about ten autodiff nodes; their
//! backward pass runs some thirty-five kernels: a zero-filled tensor and a copy for every
//! gate slice, the sums of the gradients of every tensor used twice, and Burn's multi-pass
//! gradients of `sigmoid` and `tanh`. On a small model most of a training step's time is
//! the fixed cost of each kernel, not arithmetic, so [`gru_cell`] and [`lstm_cell`] record a
//! single node whose gradient takes about fifteen. [`additive_attention`] does the same for
//! a decoder step's Bahdanau attention weights (the additive score, the mask and the
//! softmax), whose gradient takes about a dozen kernels.
//!
//! The forward pass runs the same tensor operations as the composed version
//! ([`gru_cell_composed`], [`lstm_cell_composed`], [`additive_attention_composed`]) on the
//! inner backend, so the outputs are the same, bit for bit on wgpu. On
//! [`Tch`](crate::backend::Tch) (with or without autodiff) all three call libtorch directly,
//! in fewer kernels and allocations (in-place gate activations, `addcmul`, libtorch's fused
//! `sigmoid_backward`/`tanh_backward`, its one-kernel softmax and softmax gradient), within
//! 1e-5 of Burn's operations. On plain
//! [`Flex`](crate::backend::Flex), the forward passes (also in decoding, without autodiff)
//! and the nodes' gradients run instead as one pass per row in `s2s_kernels::cells` and
//! `s2s_kernels::attention` (this crate's private `flex` module hands them slices), within
//! 1e-5 of Burn's operations, which `Autodiff<Flex>` runs in the composed versions. The
//! single node is used on `Autodiff<B>` for each backend compiled into this crate
//! ([`Flex`](crate::backend::Flex), [`Tch`](crate::backend::Tch),
//! [`Wgpu`](crate::backend::Wgpu)), recognised by type at run time, so that the library
//! stays generic over any [`Backend`]; every other backend, with or without autodiff, gets
//! the composed version.
//!
//! # Shapes (cells)
//! - `projected`, `recurrent`: `[batch, gates * d_hidden]`, the input's and the state's share
//!   of the gate pre-activations, biases included (gate order `r z n` for GRU, `i f g o` for
//!   LSTM, as in PyTorch)
//! - `h`, `c` and the returned states: `[batch, d_hidden]`

// Without a backend compiled in, only the composed versions are used.
#![cfg_attr(
    not(any(feature = "flex", feature = "tch", feature = "wgpu")),
    allow(dead_code, unused_macros, unused_imports)
)]

use crate::activation::{sigmoid, tanh};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Bool, Tensor, TensorData, TensorPrimitive};
use std::any::Any;

/// The GRU update (PyTorch's equations, the reset gate applied after the recurrent matmul):
/// `r, z = sigmoid(x_rz + h_rz)`, `n = tanh(x_n + r * h_n)`, `h' = (1 - z) * n + z * h`.
pub fn gru_cell<B: Backend>(
    projected: Tensor<B, 2>,
    recurrent: Tensor<B, 2>,
    h: Tensor<B, 2>,
) -> Tensor<B, 2> {
    one_node(GruBackward, [&projected, &recurrent, &h])
        .unwrap_or_else(|| gru_cell_composed(projected, recurrent, h))
}

/// The LSTM update: `i, f, o = sigmoid(..)`, `g = tanh(..)`, `c' = f * c + i * g`,
/// `h' = o * tanh(c')`; returns `(h', c')`.
pub fn lstm_cell<B: Backend>(
    projected: Tensor<B, 2>,
    recurrent: Tensor<B, 2>,
    c: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    match one_node(LstmBackward, [&projected, &recurrent, &c]) {
        Some(hc) => {
            let d = hc.dims()[1] / 2;
            (hc.clone().narrow(1, 0, d), hc.narrow(1, d, d))
        }
        None => lstm_cell_composed(projected, recurrent, c),
    }
}

/// The weights of additive (Bahdanau) attention, `softmax(2 v^T sigmoid(keys + q))` over the
/// source positions, masked: the caller passes doubled keys and query, so that this is
/// `v^T tanh(k + q)` up to a constant, which the softmax ignores (see `s2s_nn::attention`).
///
/// Several query rows may share one block of keys (the rows of one source in beam search):
/// with `sources` key blocks and `batch = repeat * sources` query rows, row `b` meets block
/// `b / repeat`. Without autodiff the keys are then read in place; on an autodiff backend
/// (whose gradient is written for one row per block) they are first copied per row.
///
/// # Shapes
/// - `keys`: `[src_len, sources * d]`, source-major; `q`: `[1, batch * d]`; `v`: `[d, 1]`
/// - `valid`: `[batch, src_len]`, `false` at padding
/// - returns `[batch, src_len]`
pub fn additive_attention<B: Backend>(
    keys: Tensor<B, 2>,
    q: Tensor<B, 2>,
    v: Tensor<B, 2>,
    valid: Tensor<B, 2, Bool>,
) -> Tensor<B, 2> {
    let keys = match B::ad_enabled(&keys.device()) {
        true => keys_per_row(keys, q.dims()[1], v.dims()[0]),
        false => keys,
    };
    one_node(AttentionNode { valid: &valid }, [&keys, &q, &v])
        .unwrap_or_else(|| additive_attention_composed(keys, q, v, valid))
}

/// [`additive_attention`] written with Burn's tensor operations, for any backend (on plain
/// [`Flex`](crate::backend::Flex), one pass of `s2s_kernels::attention`).
pub fn additive_attention_composed<B: Backend>(
    keys: Tensor<B, 2>,
    q: Tensor<B, 2>,
    v: Tensor<B, 2>,
    valid: Tensor<B, 2, Bool>,
) -> Tensor<B, 2> {
    #[cfg(feature = "flex")]
    if let Some(weights) = on_flex::attention_weights(&keys, &q, &v, &valid) {
        return weights;
    }
    attention_forward(keys, q, v, valid).0
}

/// `keys` (`[src_len, sources * d]`) with each block of `d` columns repeated for the query
/// rows that share it, so that there is one block per row of a query `width` wide.
fn keys_per_row<B: Backend>(keys: Tensor<B, 2>, width: usize, d: usize) -> Tensor<B, 2> {
    let [src_len, keys_width] = keys.dims();
    if keys_width == width || d == 0 {
        return keys;
    }
    let (sources, batch) = (keys_width / d, width / d);
    let repeat = crate::ops::rows_per_source(batch, sources);
    let blocks: Vec<usize> = (0..batch).map(|b| b / repeat).collect();
    let blocks = crate::ops::index_tensor::<B>(&blocks, &keys.device());
    keys.reshape([src_len, sources, d])
        .select(1, blocks)
        .reshape([src_len, width])
}

/// The attention weights and `sigmoid(keys + q)` (`[src_len * batch, d]`), which the
/// gradient reads.
fn attention_forward<B: Backend>(
    keys: Tensor<B, 2>,
    q: Tensor<B, 2>,
    v: Tensor<B, 2>,
    valid: Tensor<B, 2, Bool>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    #[cfg(feature = "flex")]
    if let Some(out) = on_flex::attention_forward(&keys, &q, &v, &valid) {
        return out;
    }
    #[cfg(feature = "tch")]
    if let Some(out) = on_tch::attention_forward(&keys, &q, &v, &valid) {
        return out;
    }
    let [src_len, width] = keys.dims();
    let d = v.dims()[0];
    let (sources, batch) = (width / d, q.dims()[1] / d);
    // Through `[src_len, batch, d]`, as `s2s_nn` ran it before this node: reshaping the sum
    // straight to `[src_len * batch, d]` made burn-wgpu's forward pass give results 1e-3
    // apart for the same input in two calls (`alone_equals_in_padded_batch`, seed saved).
    let hidden = match crate::ops::rows_per_source(batch, sources) {
        1 => sigmoid(keys + q).reshape([src_len, batch, d]),
        // Each block of keys broadcast over the rows that share it.
        repeat => {
            sigmoid(keys.reshape([src_len, sources, 1, d]) + q.reshape([1, sources, repeat, d]))
                .reshape([src_len, batch, d])
        }
    };
    let scores = linear(hidden.clone().reshape([src_len * batch, d]), v, None)
        .reshape([src_len, batch, 1])
        .reshape([src_len, batch])
        .mul_scalar(2.0);
    let hidden = hidden.reshape([src_len * batch, d]);
    let weights = crate::ops::masked_softmax(scores.swap_dims(0, 1), valid, 1);
    (weights, hidden)
}

/// Invokes the macro `$on` with each concrete backend compiled into this crate, in the order
/// flex, tch, wgpu.
macro_rules! each_compiled_backend {
    ($on:ident) => {
        #[cfg(feature = "flex")]
        $on!(crate::backend::Flex);
        #[cfg(feature = "tch")]
        $on!(crate::backend::Tch);
        #[cfg(feature = "wgpu")]
        $on!(crate::backend::Wgpu);
    };
}
pub(crate) use each_compiled_backend;

/// A cell update or attention step recorded as one node on `Autodiff<X>`, for any inner
/// backend `X`.
trait OneNode {
    fn record<X: Backend>(self, inputs: [Tensor<Autodiff<X>, 2>; 3]) -> Tensor<Autodiff<X>, 2>;
}

/// `node` over `inputs` when `B` is `Autodiff` over a backend compiled into this crate;
/// `None` otherwise.
fn one_node<B: Backend, N: OneNode>(node: N, inputs: [&Tensor<B, 2>; 3]) -> Option<Tensor<B, 2>> {
    macro_rules! on {
        ($x:ty) => {
            if let [Some(a), Some(b), Some(c)] = inputs.map(autodiff_of::<B, $x, 2>) {
                return Some(same_type(node.record::<$x>([a, b, c])));
            }
        };
    }
    each_compiled_backend!(on);
    let _ = (node, inputs);
    None
}

/// Whether [`gru_cell`], [`lstm_cell`] and [`additive_attention`] record one node with a
/// hand-written gradient for backend `B` (`Autodiff` over a backend compiled into this
/// crate), rather than running the composed versions.
pub fn fuses<B: Backend>() -> bool {
    let id = std::any::TypeId::of::<B>();
    macro_rules! on {
        ($x:ty) => {
            if id == std::any::TypeId::of::<Autodiff<$x>>() {
                return true;
            }
        };
    }
    each_compiled_backend!(on);
    let _ = id;
    false
}

/// [`gru_cell`] written with Burn's tensor operations, for any backend.
pub fn gru_cell_composed<B: Backend>(
    projected: Tensor<B, 2>,
    recurrent: Tensor<B, 2>,
    h: Tensor<B, 2>,
) -> Tensor<B, 2> {
    #[cfg(feature = "flex")]
    if let Some(h) = on_flex::gru_state(&projected, &recurrent, &h) {
        return h;
    }
    gru_forward(projected, recurrent, h).h
}

/// [`lstm_cell`] written with Burn's tensor operations, for any backend.
pub fn lstm_cell_composed<B: Backend>(
    projected: Tensor<B, 2>,
    recurrent: Tensor<B, 2>,
    c: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    #[cfg(feature = "flex")]
    if let Some(hc) = on_flex::lstm_state(&projected, &recurrent, &c) {
        return hc;
    }
    let out = lstm_forward(projected, recurrent, c);
    (out.h, out.c)
}

/// The GRU update and the intermediate results its gradient needs.
struct GruForward<B: Backend> {
    h: Tensor<B, 2>,
    /// `sigmoid` of the reset and update gates, `[batch, 2 * d]`.
    rz: Tensor<B, 2>,
    /// The candidate `n`.
    n: Tensor<B, 2>,
    /// `h - n`.
    diff: Tensor<B, 2>,
}

fn gru_forward<B: Backend>(p: Tensor<B, 2>, r: Tensor<B, 2>, h: Tensor<B, 2>) -> GruForward<B> {
    #[cfg(feature = "flex")]
    if let Some(out) = on_flex::gru_forward(&p, &r, &h) {
        return out;
    }
    #[cfg(feature = "tch")]
    if let Some(out) = on_tch::gru_forward(&p, &r, &h) {
        return out;
    }
    let d = h.dims()[1];
    // Reset and update gates together: one add and one sigmoid over `2 * d_hidden`.
    let rz = sigmoid(p.clone().narrow(1, 0, 2 * d) + r.clone().narrow(1, 0, 2 * d));
    let reset = rz.clone().narrow(1, 0, d);
    let update = rz.clone().narrow(1, d, d);
    let n = tanh(p.narrow(1, 2 * d, d) + reset * r.narrow(1, 2 * d, d));
    // h' = (1 - z) * n + z * h
    let diff = h - n.clone();
    GruForward {
        h: n.clone() + update * diff.clone(),
        rz,
        n,
        diff,
    }
}

/// The LSTM update and the intermediate results its gradient needs.
struct LstmForward<B: Backend> {
    h: Tensor<B, 2>,
    c: Tensor<B, 2>,
    /// The gates after the one sigmoid, `[batch, 4 * d]` (the `g` block is `(g + 1) / 2`).
    act: Tensor<B, 2>,
    /// `tanh(c')`.
    tanh_c: Tensor<B, 2>,
}

/// The per-column factor `[4 * d]` that the `g` block's pre-activation is scaled by:
/// `tanh(g) = 2 sigmoid(2g) - 1`.
fn lstm_scale<B: Backend>(d: usize, square: bool, device: &B::Device) -> Tensor<B, 2> {
    let mut scale = vec![1.0f32; 4 * d];
    scale[2 * d..3 * d].fill(if square { 4.0 } else { 2.0 });
    Tensor::<B, 1>::from_data(TensorData::new(scale, [4 * d]), device).unsqueeze()
}

fn lstm_forward<B: Backend>(p: Tensor<B, 2>, r: Tensor<B, 2>, c: Tensor<B, 2>) -> LstmForward<B> {
    #[cfg(feature = "flex")]
    if let Some(out) = on_flex::lstm_forward(&p, &r, &c) {
        return out;
    }
    #[cfg(feature = "tch")]
    if let Some(out) = on_tch::lstm_forward(&p, &r, &c) {
        return out;
    }
    let d = c.dims()[1];
    // One sigmoid over all four blocks, with the `g` block's input doubled, since
    // tanh(g) = 2 sigmoid(2g) - 1: fewer kernels than a sigmoid per gate plus a tanh.
    let act = sigmoid((p + r) * lstm_scale::<B>(d, false, &c.device()));
    let i = act.clone().narrow(1, 0, d);
    let f = act.clone().narrow(1, d, d);
    let o = act.clone().narrow(1, 3 * d, d);
    let g = act
        .clone()
        .narrow(1, 2 * d, d)
        .mul_scalar(2.0)
        .sub_scalar(1.0);
    let c = f * c + i * g;
    let tanh_c = tanh(c.clone());
    LstmForward {
        h: o * tanh_c.clone(),
        c,
        act,
        tanh_c,
    }
}

/// `tensor` as a tensor of `Autodiff<X>`, when `B` is that backend.
pub(crate) fn autodiff_of<B: Backend, X: Backend, const D: usize>(
    tensor: &Tensor<B, D>,
) -> Option<Tensor<Autodiff<X>, D>> {
    (tensor as &dyn Any)
        .downcast_ref::<Tensor<Autodiff<X>, D>>()
        .cloned()
}

/// `tensor` as a tensor of `B`, which the caller knows to be the same type.
pub(crate) fn same_type<X: Backend, B: Backend, const D: usize>(
    tensor: Tensor<Autodiff<X>, D>,
) -> Tensor<B, D> {
    crate::backend::cast(tensor)
        .unwrap_or_else(|_| unreachable!("called only once `B` was found to be Autodiff<X>"))
}

fn inner<X: Backend>(primitive: FloatTensor<X>) -> Tensor<X, 2> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

fn primitive<X: Backend>(tensor: Tensor<X, 2>) -> FloatTensor<X> {
    tensor.into_primitive().tensor()
}

/// Registers the gradient `$grad` for the parent `$node` when it is tracked (a macro:
/// Burn's node type is not public).
macro_rules! register {
    ($grads:expr, $node:expr, $grad:expr) => {
        if let Some(node) = &$node {
            $grads.register::<X>(node.id, primitive($grad));
        }
    };
}

#[derive(Debug)]
struct GruBackward;

/// What the GRU gradient reads: `r`'s `n` block, `rz`, `n` and `h - n`.
type GruState<X> = [FloatTensor<X>; 4];

impl<X: Backend> Backward<X, 3> for GruBackward {
    type State = GruState<X>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [r_n, rz, n, diff] = ops.state.map(inner::<X>);
        let grad = inner::<X>(grads.consume::<X>(&ops.node));
        let d = n.dims()[1];
        let [p_node, r_node, h_node] = ops.parents;
        let direct: Option<[Tensor<X, 2>; 3]> = None;
        #[cfg(feature = "flex")]
        let direct = direct.or_else(|| on_flex::gru_backward(&grad, &r_n, &rz, &n, &diff));
        #[cfg(feature = "tch")]
        let direct = direct.or_else(|| on_tch::gru_backward(&grad, &r_n, &rz, &n, &diff));
        if let Some([dp, dr, dh]) = direct {
            register!(grads, r_node, dr);
            register!(grads, p_node, dp);
            register!(grads, h_node, dh);
            return;
        }
        let update = rz.clone().narrow(1, d, d);
        let reset = rz.clone().narrow(1, 0, d);
        let dh = grad.clone() * update;
        // d h'/d n = 1 - z, then through tanh: 1 - n^2.
        let dn = grad.clone() - dh.clone();
        let dn_pre = dn.clone() - dn * n.clone() * n;
        let dz = grad * diff;
        let dreset = dn_pre.clone() * r_n;
        let drz_pre = Tensor::cat(vec![dreset, dz], 1) * (rz.clone() - rz.clone() * rz);
        register!(
            grads,
            r_node,
            Tensor::cat(vec![drz_pre.clone(), dn_pre.clone() * reset], 1)
        );
        register!(grads, p_node, Tensor::cat(vec![drz_pre, dn_pre], 1));
        register!(grads, h_node, dh);
    }
}

impl OneNode for GruBackward {
    fn record<X: Backend>(self, inputs: [Tensor<Autodiff<X>, 2>; 3]) -> Tensor<Autodiff<X>, 2> {
        cell_node(self, inputs, |[p, r, h]| {
            let d = h.dims()[1];
            let r_n = r.clone().narrow(1, 2 * d, d);
            let f = gru_forward(p, r, h);
            (f.h, [r_n, f.rz, f.n, f.diff].map(primitive))
        })
    }
}

#[derive(Debug)]
struct LstmBackward;

/// What the LSTM gradient reads: the activated gates, `c` (before the step) and `tanh(c')`.
type LstmState<X> = [FloatTensor<X>; 3];

impl<X: Backend> Backward<X, 3> for LstmBackward {
    type State = LstmState<X>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [act, c, tanh_c] = ops.state.map(inner::<X>);
        let grad = inner::<X>(grads.consume::<X>(&ops.node));
        let d = c.dims()[1];
        let [p_node, r_node, c_node] = ops.parents;
        let direct: Option<[Tensor<X, 2>; 2]> = None;
        #[cfg(feature = "flex")]
        let direct = direct.or_else(|| on_flex::lstm_backward(&grad, &act, &c, &tanh_c));
        #[cfg(feature = "tch")]
        let direct = direct.or_else(|| on_tch::lstm_backward(&grad, &act, &c, &tanh_c));
        if let Some([dpre, dc]) = direct {
            register!(grads, r_node, dpre.clone());
            register!(grads, p_node, dpre);
            register!(grads, c_node, dc);
            return;
        }
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
        let dpre = dgates
            * (act.clone() - act.clone() * act.clone())
            * lstm_scale::<X>(d, true, &c.device());
        register!(grads, r_node, dpre.clone());
        register!(grads, p_node, dpre);
        register!(grads, c_node, dc * gate(1));
    }
}

/// The LSTM node's output is `[batch, 2 * d]`: `h'` then `c'`.
impl OneNode for LstmBackward {
    fn record<X: Backend>(self, inputs: [Tensor<Autodiff<X>, 2>; 3]) -> Tensor<Autodiff<X>, 2> {
        cell_node(self, inputs, |[p, r, c]| {
            let f = lstm_forward(p, r, c.clone());
            let hc = Tensor::cat(vec![f.h, f.c], 1);
            (hc, [f.act, c, f.tanh_c].map(primitive))
        })
    }
}

/// The attention node; `valid` is only read by the forward pass (the softmax's gradient is
/// zero at the masked positions, where the weights are).
struct AttentionNode<'a, B: Backend> {
    valid: &'a Tensor<B, 2, Bool>,
}

#[derive(Debug)]
struct AttentionBackward;

/// What the attention gradient reads: the weights, `sigmoid(keys + q)` and `v`.
type AttentionState<X> = [FloatTensor<X>; 3];

impl<X: Backend> Backward<X, 3> for AttentionBackward {
    type State = AttentionState<X>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [weights, hidden, v] = ops.state.map(inner::<X>);
        let grad = inner::<X>(grads.consume::<X>(&ops.node));
        let [keys_node, q_node, v_node] = ops.parents;
        let direct: Option<[Tensor<X, 2>; 3]> = None;
        #[cfg(feature = "flex")]
        let direct = direct.or_else(|| on_flex::attention_backward(&grad, &weights, &hidden, &v));
        #[cfg(feature = "tch")]
        let direct = direct.or_else(|| on_tch::attention_backward(&grad, &weights, &hidden, &v));
        if let Some([dkeys, dq, dv]) = direct {
            register!(grads, v_node, dv);
            register!(grads, q_node, dq);
            register!(grads, keys_node, dkeys);
            return;
        }
        let [batch, src_len] = weights.dims();
        let d = v.dims()[0];
        // Softmax: d scores = w * (dw - sum(dw * w)); zero where masked, as w is.
        let dot = (grad.clone() * weights.clone()).sum_dim(1);
        // Source-major like `hidden`, with the scores' factor 2: `[src_len * batch, 1]`.
        let dscores = (weights * (grad - dot))
            .mul_scalar(2.0)
            .swap_dims(0, 1)
            .reshape([src_len * batch, 1]);
        register!(
            grads,
            v_node,
            hidden.clone().transpose().matmul(dscores.clone())
        );
        // `v` as a row by reshaping, not transposing: burn-tch 0.21's `swap_dims` gives the
        // view of `v` a storage handle of its own, so a product with as many elements as the
        // view (one source position in the batch) ran in place, into the parameter `v`
        // (tracel-ai/burn#5375, fixed after 0.21).
        let dpre = (dscores * v.reshape([1, d]) * (hidden.clone() - hidden.clone() * hidden))
            .reshape([src_len, batch * d]);
        register!(grads, q_node, dpre.clone().sum_dim(0));
        register!(grads, keys_node, dpre);
    }
}

/// The node's parents are the keys, the query and `v`.
impl<B: Backend> OneNode for AttentionNode<'_, B> {
    fn record<X: Backend>(self, inputs: [Tensor<Autodiff<X>, 2>; 3]) -> Tensor<Autodiff<X>, 2> {
        let valid = (self.valid as &dyn Any)
            .downcast_ref::<Tensor<Autodiff<X>, 2, Bool>>()
            .unwrap_or_else(|| unreachable!("the mask is on the backend of the other inputs"))
            .clone()
            .inner();
        cell_node(AttentionBackward, inputs, |[keys, q, v]| {
            let (weights, hidden) = attention_forward(keys, q, v.clone(), valid);
            (weights.clone(), [weights, hidden, v].map(primitive))
        })
    }
}

/// Records one node with three parents: `forward` computes the output and the state that
/// `backward` reads from the parents' values (on the inner backend).
fn cell_node<X, BO, F>(
    backward: BO,
    inputs: [Tensor<Autodiff<X>, 2>; 3],
    forward: F,
) -> Tensor<Autodiff<X>, 2>
where
    X: Backend,
    BO: Backward<X, 3>,
    F: FnOnce([Tensor<X, 2>; 3]) -> (Tensor<X, 2>, BO::State),
{
    let inputs = inputs.map(|t| t.into_primitive().tensor());
    let values = || inputs.each_ref().map(|t| inner::<X>(t.primitive.clone()));
    let out = match backward
        .prepare::<NoCheckpointing>(inputs.each_ref().map(|t| t.node.clone()))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, state) = forward(values());
            prep.finish(state, primitive(out))
        }
        OpsKind::UnTracked(prep) => prep.finish(primitive(forward(values()).0)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The cells' element-wise work on burn-flex, one pass per row in `s2s_kernels::cells`; each
/// function answers `None` unless `B` is [`Flex`](crate::backend::Flex) and the values `f32`.
#[cfg(feature = "flex")]
mod on_flex {
    use super::{GruForward, LstmForward};
    use crate::flex::{bools, contiguous, dims, from_vec, row_major, rows, values};
    use burn::tensor::backend::Backend;
    use burn::tensor::{Bool, Tensor};
    use s2s_kernels::{attention, cells};

    /// The attention weights and `sigmoid(keys + q)`.
    pub(super) fn attention_forward<B: Backend>(
        keys: &Tensor<B, 2>,
        q: &Tensor<B, 2>,
        v: &Tensor<B, 2>,
        valid: &Tensor<B, 2, Bool>,
    ) -> Option<(Tensor<B, 2>, Tensor<B, 2>)> {
        let [keys] = row_major([keys])?;
        let [q, v] = contiguous([q, v])?;
        let ([src_len, width], d) = (dims(&keys), values(&v).len());
        if values(&q).len() != width {
            return None;
        }
        let valid = bools(valid)?;
        let batch = width / d;
        let att = attention::additive_attention(rows(&keys), values(&q), values(&v), &valid);
        Some((
            from_vec(att.weights, batch, src_len),
            from_vec(att.hidden, src_len * batch, d),
        ))
    }

    /// The attention weights alone, each block of keys shared by the query rows that meet it.
    pub(super) fn attention_weights<B: Backend>(
        keys: &Tensor<B, 2>,
        q: &Tensor<B, 2>,
        v: &Tensor<B, 2>,
        valid: &Tensor<B, 2, Bool>,
    ) -> Option<Tensor<B, 2>> {
        let [keys] = row_major([keys])?;
        let [q, v] = contiguous([q, v])?;
        let valid = bools(valid)?;
        let src_len = dims(&keys)[0];
        let batch = values(&q).len() / values(&v).len();
        let weights =
            attention::additive_attention_weights(rows(&keys), values(&q), values(&v), &valid);
        Some(from_vec(weights, batch, src_len))
    }

    /// The gradients of the keys, the query and `v`.
    pub(super) fn attention_backward<B: Backend>(
        grad: &Tensor<B, 2>,
        weights: &Tensor<B, 2>,
        hidden: &Tensor<B, 2>,
        v: &Tensor<B, 2>,
    ) -> Option<[Tensor<B, 2>; 3]> {
        let [grad, weights, hidden, v] = contiguous([grad, weights, hidden, v])?;
        let [batch, src_len] = dims(&grad);
        let d = values(&v).len();
        let g = attention::additive_attention_backward(
            values(&grad),
            values(&weights),
            values(&hidden),
            values(&v),
            src_len,
        );
        Some([
            from_vec(g.keys, src_len, batch * d),
            from_vec(g.q, 1, batch * d),
            from_vec(g.v, d, 1),
        ])
    }

    pub(super) fn gru_forward<B: Backend>(
        p: &Tensor<B, 2>,
        r: &Tensor<B, 2>,
        h: &Tensor<B, 2>,
    ) -> Option<GruForward<B>> {
        let [p, r, h] = row_major([p, r, h])?;
        let [b, d] = dims(&h);
        let step = cells::gru_step(rows(&p), rows(&r), rows(&h));
        Some(GruForward {
            h: from_vec(step.h, b, d),
            rz: from_vec(step.rz, b, 2 * d),
            n: from_vec(step.n, b, d),
            diff: from_vec(step.diff, b, d),
        })
    }

    /// The new state alone, without what the gradient reads (decoding).
    pub(super) fn gru_state<B: Backend>(
        p: &Tensor<B, 2>,
        r: &Tensor<B, 2>,
        h: &Tensor<B, 2>,
    ) -> Option<Tensor<B, 2>> {
        let [p, r, h] = row_major([p, r, h])?;
        let [b, d] = dims(&h);
        Some(from_vec(
            cells::gru_state(rows(&p), rows(&r), rows(&h)),
            b,
            d,
        ))
    }

    /// The new state and cell alone.
    pub(super) fn lstm_state<B: Backend>(
        p: &Tensor<B, 2>,
        r: &Tensor<B, 2>,
        c: &Tensor<B, 2>,
    ) -> Option<(Tensor<B, 2>, Tensor<B, 2>)> {
        let [p, r, c] = row_major([p, r, c])?;
        let [b, d] = dims(&c);
        let (h, c) = cells::lstm_state(rows(&p), rows(&r), rows(&c));
        Some((from_vec(h, b, d), from_vec(c, b, d)))
    }

    /// The gradients of the input's and the state's pre-activations and of `h`.
    pub(super) fn gru_backward<B: Backend>(
        grad: &Tensor<B, 2>,
        r_n: &Tensor<B, 2>,
        rz: &Tensor<B, 2>,
        n: &Tensor<B, 2>,
        diff: &Tensor<B, 2>,
    ) -> Option<[Tensor<B, 2>; 3]> {
        let [grad, r_n, rz, n, diff] = row_major([grad, r_n, rz, n, diff])?;
        let [b, d] = dims(&n);
        let g = cells::gru_step_backward(rows(&grad), rows(&r_n), rows(&rz), rows(&n), rows(&diff));
        Some([
            from_vec(g.p, b, 3 * d),
            from_vec(g.r, b, 3 * d),
            from_vec(g.h, b, d),
        ])
    }

    pub(super) fn lstm_forward<B: Backend>(
        p: &Tensor<B, 2>,
        r: &Tensor<B, 2>,
        c: &Tensor<B, 2>,
    ) -> Option<LstmForward<B>> {
        let [p, r, c] = row_major([p, r, c])?;
        let [b, d] = dims(&c);
        let step = cells::lstm_step(rows(&p), rows(&r), rows(&c));
        Some(LstmForward {
            h: from_vec(step.h, b, d),
            c: from_vec(step.c, b, d),
            act: from_vec(step.act, b, 4 * d),
            tanh_c: from_vec(step.tanh_c, b, d),
        })
    }

    /// The gradients of the gate pre-activations (the input's and the state's alike) and of
    /// `c`.
    pub(super) fn lstm_backward<B: Backend>(
        grad: &Tensor<B, 2>,
        act: &Tensor<B, 2>,
        c: &Tensor<B, 2>,
        tanh_c: &Tensor<B, 2>,
    ) -> Option<[Tensor<B, 2>; 2]> {
        let [grad, act, c, tanh_c] = row_major([grad, act, c, tanh_c])?;
        let [b, d] = dims(&c);
        let g = cells::lstm_step_backward(rows(&grad), rows(&act), rows(&c), rows(&tanh_c));
        Some([from_vec(g.gates, b, 4 * d), from_vec(g.c, b, d)])
    }
}

/// The GRU and LSTM steps and the attention weights on libtorch in fewer kernels and
/// allocations than Burn's operations: in-place activations on the gate blocks, `addcmul`,
/// products written into the blocks of one gradient tensor, libtorch's fused
/// `sigmoid_backward`/`tanh_backward` and its one-kernel softmax and softmax gradient. Here
/// the `g` block of the LSTM's `act` holds `tanh(g)` itself. Each function answers `None`
/// unless `B` is [`Tch`](crate::backend::Tch).
#[cfg(feature = "tch")]
mod on_tch {
    use super::{GruForward, LstmForward};
    use crate::backend::{cast, from_tch, tch_of, Tch};
    use crate::ops::MASK_VALUE;
    use burn::tensor::backend::Backend;
    use burn::tensor::{Bool, Tensor};

    /// The libtorch tensors behind `tensors`, when `B` is [`Tch`].
    fn torch<B: Backend, const N: usize>(tensors: [&Tensor<B, 2>; N]) -> Option<[tch::Tensor; N]> {
        let mut out = Vec::with_capacity(N);
        for t in tensors {
            out.push(tch_of(t.clone())?.0);
        }
        out.try_into().ok()
    }

    /// The attention weights and `sigmoid(keys + q)`: 8 kernels, against 11.
    pub(super) fn attention_forward<B: Backend>(
        keys: &Tensor<B, 2>,
        q: &Tensor<B, 2>,
        v: &Tensor<B, 2>,
        valid: &Tensor<B, 2, Bool>,
    ) -> Option<(Tensor<B, 2>, Tensor<B, 2>)> {
        let [keys, q, v] = torch([keys, q, v])?;
        let valid = cast::<_, Tensor<Tch, 2, Bool>>(valid.clone())
            .ok()?
            .into_primitive()
            .tensor;
        let (src_len, d) = (keys.size()[0], v.size()[0]);
        let (sources, batch) = (keys.size()[1] / d, q.size()[1] / d);
        let repeat = crate::ops::rows_per_source(batch as usize, sources as usize) as i64;
        // Each block of keys broadcast over the query rows that share it.
        let mut hidden = (keys.view([src_len, sources, 1, d]) + q.view([1, sources, repeat, d]))
            .reshape([src_len * batch, d]);
        let _ = hidden.sigmoid_();
        // The factor 2 on `v` rather than on the scores: a power of two, so the same values.
        let mut scores = hidden
            .mm(&v.g_mul_scalar(2.0))
            .view([src_len, batch])
            .tr()
            .contiguous();
        let _ = scores.masked_fill_(&valid.logical_not(), f64::from(MASK_VALUE));
        let weights = scores.softmax(1, tch::Kind::Float);
        Some((from_tch(weights), from_tch(hidden)))
    }

    /// The gradients of the keys, the query and `v`: 9 kernels, against 12.
    pub(super) fn attention_backward<B: Backend>(
        grad: &Tensor<B, 2>,
        weights: &Tensor<B, 2>,
        hidden: &Tensor<B, 2>,
        v: &Tensor<B, 2>,
    ) -> Option<[Tensor<B, 2>; 3]> {
        let [grad, weights, hidden, v] = torch([grad, weights, hidden, v])?;
        let [batch, src_len] = [grad.size()[0], grad.size()[1]];
        let d = v.size()[0];
        // Zero where masked, as the weights are; source-major like `hidden`.
        let dscores =
            tch::Tensor::internal_softmax_backward_data(&grad, &weights, 1, tch::Kind::Float)
                .tr()
                .contiguous()
                .view([src_len * batch, 1]);
        let mut dv = hidden.tr().mm(&dscores);
        let _ = dv.g_mul_scalar_(2.0);
        let dpre = &dscores * v.reshape([1, d]).g_mul_scalar(2.0);
        let _ = tch::Tensor::sigmoid_backward_grad_input(&dpre, &dpre, &hidden);
        let dpre = dpre.view([src_len, batch * d]);
        let dq = dpre.sum_dim_intlist(0, true, tch::Kind::Float);
        Some([from_tch(dpre), from_tch(dq), from_tch(dv)])
    }

    /// 6 kernels, against 9 for Burn's operations.
    pub(super) fn gru_forward<B: Backend>(
        p: &Tensor<B, 2>,
        r: &Tensor<B, 2>,
        h: &Tensor<B, 2>,
    ) -> Option<GruForward<B>> {
        let [p, r, h] = torch([p, r, h])?;
        let d = h.size()[1];
        let mut rz = p.narrow(1, 0, 2 * d) + r.narrow(1, 0, 2 * d);
        let _ = rz.sigmoid_();
        let (reset, update) = (rz.narrow(1, 0, d), rz.narrow(1, d, d));
        let mut n = p
            .narrow(1, 2 * d, d)
            .addcmul(&reset, &r.narrow(1, 2 * d, d));
        let _ = n.tanh_();
        let diff = &h - &n;
        let h_new = n.addcmul(&update, &diff);
        Some(GruForward {
            h: from_tch(h_new),
            rz: from_tch(rz),
            n: from_tch(n),
            diff: from_tch(diff),
        })
    }

    /// The gradients of the input's and the state's pre-activations and of `h`: 8 kernels,
    /// against 15.
    pub(super) fn gru_backward<B: Backend>(
        grad: &Tensor<B, 2>,
        r_n: &Tensor<B, 2>,
        rz: &Tensor<B, 2>,
        n: &Tensor<B, 2>,
        diff: &Tensor<B, 2>,
    ) -> Option<[Tensor<B, 2>; 3]> {
        let [grad, r_n, rz, n, diff] = torch([grad, r_n, rz, n, diff])?;
        let d = n.size()[1];
        let (reset, update) = (rz.narrow(1, 0, d), rz.narrow(1, d, d));
        let dh = &grad * &update;
        let dn = &grad - &dh;
        let dp = grad.new_empty([grad.size()[0], 3 * d], (grad.kind(), grad.device()));
        let block = |t: &tch::Tensor, k: i64, n: i64| t.narrow(1, k * d, n * d);
        // Through tanh, then through the reset gate's product with `r`'s `n` block.
        let _ = tch::Tensor::tanh_backward_grad_input(&block(&dp, 2, 1), &dn, &n);
        let _ = block(&dp, 2, 1).mul_out(&block(&dp, 0, 1), &r_n);
        let _ = grad.mul_out(&block(&dp, 1, 1), &diff);
        let _ = tch::Tensor::sigmoid_backward_grad_input(&block(&dp, 0, 2), &block(&dp, 0, 2), &rz);
        let dr = dp.empty_like();
        block(&dr, 0, 2).copy_(&block(&dp, 0, 2));
        let _ = block(&dp, 2, 1).mul_out(&block(&dr, 2, 1), &reset);
        Some([from_tch(dp), from_tch(dr), from_tch(dh)])
    }

    pub(super) fn lstm_forward<B: Backend>(
        p: &Tensor<B, 2>,
        r: &Tensor<B, 2>,
        c: &Tensor<B, 2>,
    ) -> Option<LstmForward<B>> {
        let [p, r, c] = torch([p, r, c])?;
        let d = c.size()[1];
        let act = &p + &r;
        let gate = |k: i64, n: i64| act.narrow(1, k * d, n * d);
        let _ = gate(0, 2).sigmoid_();
        let _ = gate(2, 1).tanh_();
        let _ = gate(3, 1).sigmoid_();
        let mut c_new = gate(1, 1) * &c;
        let _ = c_new.addcmul_(&gate(0, 1), &gate(2, 1));
        let tanh_c = c_new.tanh();
        let h = gate(3, 1) * &tanh_c;
        Some(LstmForward {
            h: from_tch(h),
            c: from_tch(c_new),
            act: from_tch(act),
            tanh_c: from_tch(tanh_c),
        })
    }

    pub(super) fn lstm_backward<B: Backend>(
        grad: &Tensor<B, 2>,
        act: &Tensor<B, 2>,
        c: &Tensor<B, 2>,
        tanh_c: &Tensor<B, 2>,
    ) -> Option<[Tensor<B, 2>; 2]> {
        let [grad, act, c, tanh_c] = torch([grad, act, c, tanh_c])?;
        let d = c.size()[1];
        let gate = |k: i64, n: i64| act.narrow(1, k * d, n * d);
        let dh = grad.narrow(1, 0, d);
        let mut dc = tch::Tensor::tanh_backward(&(&dh * gate(3, 1)), &tanh_c);
        let _ = dc.g_add_(&grad.narrow(1, d, d));
        let dgates = act.empty_like();
        let block = |k: i64, n: i64| dgates.narrow(1, k * d, n * d);
        let _ = dc.mul_out(&block(0, 1), &gate(2, 1));
        let _ = dc.mul_out(&block(1, 1), &c);
        let _ = dc.mul_out(&block(2, 1), &gate(0, 1));
        let _ = dh.mul_out(&block(3, 1), &tanh_c);
        let _ = tch::Tensor::sigmoid_backward_grad_input(&block(0, 2), &block(0, 2), &gate(0, 2));
        let _ = tch::Tensor::tanh_backward_grad_input(&block(2, 1), &block(2, 1), &gate(2, 1));
        let _ = tch::Tensor::sigmoid_backward_grad_input(&block(3, 1), &block(3, 1), &gate(3, 1));
        let dc_prev = dc * gate(1, 1);
        Some([from_tch(dgates), from_tch(dc_prev)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::to_vec_f32;
    use burn::tensor::backend::AutodiffBackend;

    crate::for_each_backend! {
        type AB = TestAutodiffBackend;
        type Inner = <AB as AutodiffBackend>::InnerBackend;

        /// A `[rows, cols]` tensor of varied values in about `[-2, 2]`, tracked.
        fn input(rows: usize, cols: usize, seed: usize) -> Tensor<AB, 2> {
            let values: Vec<f32> = (0..rows * cols)
                .map(|i| 2.0 * (((i * 7 + seed * 13) as f32) * 0.37).sin())
                .collect();
            Tensor::<AB, 2>::from_data(TensorData::new(values, [rows, cols]), &device())
                .require_grad()
        }

        fn grad_of(t: &Tensor<AB, 2>, grads: &<AB as AutodiffBackend>::Gradients) -> Vec<f32> {
            to_vec_f32::<Inner, 2>(t.grad(grads).expect("tensor takes part in the loss"))
        }

        fn assert_close(a: &[f32], b: &[f32], what: &str) {
            assert_eq!(a.len(), b.len(), "{what}: lengths");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + x.abs().max(y.abs())),
                    "{what}[{i}]: one node {x}, composed {y}"
                );
            }
        }

        /// Three steps of a cell, each step's gate inputs built from the state as in a
        /// recurrent layer, so that the states' gradients flow through the nodes; returns
        /// the loss value, the outputs and every input's gradient.
        fn run(lstm: bool, fused: bool) -> (Vec<f32>, Vec<Vec<f32>>) {
            let (batch, d) = (3, 4);
            let gates = if lstm { 4 * d } else { 3 * d };
            let ps: Vec<_> = (0..3).map(|k| input(batch, gates, k)).collect();
            let w = input(d, gates, 5);
            let h0 = input(batch, d, 6);
            let c0 = input(batch, d, 7);
            let (mut h, mut c) = (h0.clone(), c0.clone());
            let mut outputs = Vec::new();
            for p in &ps {
                let r = h.clone().matmul(w.clone());
                if lstm {
                    let (h2, c2) = if fused {
                        lstm_cell(p.clone(), r, c)
                    } else {
                        lstm_cell_composed(p.clone(), r, c)
                    };
                    (h, c) = (h2, c2);
                    outputs.push(c.clone());
                } else {
                    h = if fused {
                        gru_cell(p.clone(), r, h)
                    } else {
                        gru_cell_composed(p.clone(), r, h)
                    };
                }
                outputs.push(h.clone());
            }
            let mut loss = Tensor::<AB, 1>::zeros([1], &device());
            for (k, o) in outputs.iter().enumerate() {
                let weights = input(batch, d, 10 + k).detach();
                loss = loss + (o.clone() * weights).sum();
            }
            let values: Vec<f32> = outputs.iter().flat_map(|o| to_vec_f32(o.clone())).collect();
            let grads = loss.backward();
            let mut all: Vec<Vec<f32>> = ps.iter().map(|p| grad_of(p, &grads)).collect();
            all.push(grad_of(&w, &grads));
            all.push(grad_of(&h0, &grads));
            if lstm {
                all.push(grad_of(&c0, &grads));
            }
            (values, all)
        }

        #[test]
        fn the_autodiff_backend_gets_one_node_and_the_plain_one_does_not() {
            assert!(fuses::<AB>());
            assert!(!fuses::<TestBackend>());
        }

        fn assert_node_equals_composed(lstm: bool) {
            let (out_fused, grads_fused) = run(lstm, true);
            let (out_composed, grads_composed) = run(lstm, false);
            // Bit for bit but on flex, where only the node runs the vectorised activations.
            assert_close(&out_fused, &out_composed, "outputs");
            for (k, (a, b)) in grads_fused.iter().zip(&grads_composed).enumerate() {
                assert_close(a, b, &format!("gradient {k}"));
            }
        }

        #[test]
        fn gru_node_equals_composed_outputs_and_gradients() {
            assert_node_equals_composed(false);
        }

        #[test]
        fn lstm_node_equals_composed_outputs_and_gradients() {
            assert_node_equals_composed(true);
        }

        /// Two attention steps over shared keys and `v`, the second query a product of the
        /// first, over sources of the given lengths (padded to the longest); returns the
        /// weights and every input's gradient, and checks that the backward pass leaves the
        /// inputs' values as they were.
        fn run_attention(fused: bool, lengths: &[usize]) -> (Vec<f32>, Vec<Vec<f32>>) {
            let (src_len, batch, d) = (*lengths.iter().max().unwrap(), lengths.len(), 4);
            let keys = input(src_len, batch * d, 1);
            let q0 = input(1, batch * d, 2);
            let v = input(d, 1, 3);
            let w = input(batch * d, batch * d, 4);
            let valid: Vec<bool> = (0..batch * src_len)
                .map(|i| i % src_len < lengths[i / src_len])
                .collect();
            let valid =
                Tensor::<AB, 2, Bool>::from_data(TensorData::new(valid, [batch, src_len]), &device());
            let mut q = q0.clone();
            let mut loss = Tensor::<AB, 1>::zeros([1], &device());
            let mut values = Vec::new();
            for k in 0..2 {
                let (keys, v, valid) = (keys.clone(), v.clone(), valid.clone());
                let weights = if fused {
                    additive_attention(keys, q.clone(), v, valid)
                } else {
                    additive_attention_composed(keys, q.clone(), v, valid)
                };
                values.extend(to_vec_f32(weights.clone()));
                loss = loss + (weights * input(batch, src_len, 10 + k).detach()).sum();
                q = q.matmul(w.clone()).mul_scalar(0.5);
            }
            let inputs = [&keys, &q0, &v, &w];
            let before = inputs.map(|t| to_vec_f32((*t).clone()));
            let grads = loss.backward();
            assert_eq!(inputs.map(|t| to_vec_f32((*t).clone())), before, "inputs changed");
            let all = inputs.map(|t| grad_of(t, &grads)).to_vec();
            (values, all)
        }

        #[test]
        fn attention_node_equals_composed_outputs_and_gradients() {
            // The second batch has one source position: burn-tch once wrote the gradient
            // into `v` there (see `AttentionBackward`).
            for lengths in [&[5, 3, 1][..], &[1]] {
                let (out_fused, grads_fused) = run_attention(true, lengths);
                let (out_composed, grads_composed) = run_attention(false, lengths);
                // The same operations, but on burn-flex the weights differ in the last bit.
                assert_close(&out_fused, &out_composed, "weights");
                if lengths.len() > 1 {
                    assert!(out_fused.contains(&0.0), "padding gets no weight");
                }
                for (k, (a, b)) in grads_fused.iter().zip(&grads_composed).enumerate() {
                    assert_close(a, b, &format!("{lengths:?}: gradient {k}"));
                }
            }
        }

        #[test]
        fn untracked_inputs_give_the_composed_outputs() {
            let d = 4;
            let p = input(2, 3 * d, 1).detach();
            let r = input(2, 3 * d, 2).detach();
            let h = input(2, d, 3).detach();
            // Equal bit for bit but on flex (see `assert_node_equals_composed`).
            assert_close(
                &to_vec_f32(gru_cell(p.clone(), r.clone(), h.clone())),
                &to_vec_f32(gru_cell_composed(p, r, h)),
                "outputs",
            );
        }

        /// On the plain backend (where flex runs `s2s_kernels`), inputs laid out in any way
        /// (transposed, narrowed) give the results of Burn's own operations, which the
        /// composed versions run on the autodiff backend.
        #[test]
        fn the_plain_backend_takes_inputs_of_any_layout() {
            let (batch, d) = (3, 4);
            let plain = |t: &Tensor<AB, 2>| t.clone().inner();
            let transposed = |rows, cols, seed| input(cols, rows, seed).detach().swap_dims(0, 1);
            let narrowed = |rows, cols, seed| input(rows, cols + 3, seed).detach().narrow(1, 2, cols);
            let (p, r, h) = (transposed(batch, 3 * d, 1), narrowed(batch, 3 * d, 2), transposed(batch, d, 3));
            assert_close(
                &to_vec_f32(gru_cell(plain(&p), plain(&r), plain(&h))),
                &to_vec_f32(gru_cell_composed(p, r, h)),
                "gru",
            );
            let (p, r, c) = (narrowed(batch, 4 * d, 4), transposed(batch, 4 * d, 5), narrowed(batch, d, 6));
            let (h_plain, c_plain) = lstm_cell(plain(&p), plain(&r), plain(&c));
            let (h_burn, c_burn) = lstm_cell_composed(p, r, c);
            assert_close(&to_vec_f32(h_plain), &to_vec_f32(h_burn), "lstm h");
            assert_close(&to_vec_f32(c_plain), &to_vec_f32(c_burn), "lstm c");
            let (src_len, lengths) = (3, [3, 1, 2]);
            let (keys, q, v) = (transposed(src_len, batch * d, 7), narrowed(1, batch * d, 8), transposed(d, 1, 9));
            let mask = crate::ops::length_mask::<Inner>(&lengths, src_len, &device());
            assert_close(
                &to_vec_f32(additive_attention(plain(&keys), plain(&q), plain(&v), mask.clone())),
                &to_vec_f32(additive_attention_composed(keys, q, v, Tensor::from_inner(mask))),
                "attention",
            );
        }
    }
}
