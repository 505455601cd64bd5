//! The GRU and LSTM cell updates and the additive attention weights on `Autodiff<B>`, each
//! recorded as one node of Burn's autodiff graph whose gradient calls `B`'s backward
//! operations ([`S2sBackend::gru_backward`] and the others).
//!
//! Written with Burn's tensor operations, a GRU cell update is about ten autodiff nodes; their
//! backward pass runs some thirty-five kernels: a zero-filled tensor and a copy for every
//! gate slice, the sums of the gradients of every tensor used twice, and Burn's multi-pass
//! gradients of `sigmoid` and `tanh`. On a small model most of a training step's time is the
//! fixed cost of each kernel, not arithmetic, so the cells record a single node whose
//! gradient takes about fifteen; the attention's node (the additive score, the mask and the
//! softmax) takes about a dozen. The forward pass runs `B`'s forward operations on the inner
//! tensors, so the outputs are those of `B` without autodiff.

use crate::s2s_backend::{AttentionGrads, GruGrads, LstmGrads, S2sBackend};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Bool, Tensor, TensorPrimitive};
use std::marker::PhantomData;

/// The GRU update as one node.
pub(crate) fn gru_cell<B: S2sBackend>(
    projected: Tensor<Autodiff<B>, 2>,
    recurrent: Tensor<Autodiff<B>, 2>,
    h: Tensor<Autodiff<B>, 2>,
) -> Tensor<Autodiff<B>, 2> {
    cell_node(
        GruBackward::<B>(PhantomData),
        [projected, recurrent, h],
        |[p, r, h]| {
            let d = h.dims()[1];
            let r_n = r.clone().narrow(1, 2 * d, d);
            let f = B::gru_forward(p, r, h);
            (f.h, [r_n, f.rz, f.n, f.diff].map(primitive))
        },
    )
}

/// The LSTM update as one node, whose output is `[batch, 2 * d]`: `h'` then `c'`.
pub(crate) fn lstm_cell<B: S2sBackend>(
    projected: Tensor<Autodiff<B>, 2>,
    recurrent: Tensor<Autodiff<B>, 2>,
    c: Tensor<Autodiff<B>, 2>,
) -> (Tensor<Autodiff<B>, 2>, Tensor<Autodiff<B>, 2>) {
    let hc = cell_node(
        LstmBackward::<B>(PhantomData),
        [projected, recurrent, c],
        |[p, r, c]| {
            let f = B::lstm_forward(p, r, c.clone());
            let hc = Tensor::cat(vec![f.h, f.c], 1);
            (hc, [f.act, c, f.tanh_c].map(primitive))
        },
    );
    let d = hc.dims()[1] / 2;
    (hc.clone().narrow(1, 0, d), hc.narrow(1, d, d))
}

/// The attention weights as one node, whose parents are the keys, the query and `v`; `valid`
/// is only read by the forward pass (the softmax's gradient is zero at the masked positions,
/// where the weights are). The node's gradient is written for one block of keys per query
/// row, so keys shared by several rows are first copied per row.
pub(crate) fn additive_attention<B: S2sBackend>(
    keys: Tensor<Autodiff<B>, 2>,
    q: Tensor<Autodiff<B>, 2>,
    v: Tensor<Autodiff<B>, 2>,
    valid: Tensor<Autodiff<B>, 2, Bool>,
) -> Tensor<Autodiff<B>, 2> {
    let keys = crate::reference::keys_per_row(keys, q.dims()[1], v.dims()[0]);
    let valid = valid.inner();
    cell_node(
        AttentionBackward::<B>(PhantomData),
        [keys, q, v],
        |[keys, q, v]| {
            let step = B::attention_forward(keys, q, v.clone(), valid);
            (
                step.weights.clone(),
                [step.weights, step.hidden, v].map(primitive),
            )
        },
    )
}

fn inner<X: S2sBackend>(primitive: FloatTensor<X>) -> Tensor<X, 2> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

fn primitive<X: S2sBackend>(tensor: Tensor<X, 2>) -> FloatTensor<X> {
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

/// The GRU node's gradient.
#[derive(Debug)]
struct GruBackward<X>(PhantomData<X>);

impl<X: S2sBackend> Backward<X, 3> for GruBackward<X> {
    /// `r`'s `n` block, `rz`, `n` and `h - n`.
    type State = [FloatTensor<X>; 4];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [r_n, rz, n, diff] = ops.state.map(inner::<X>);
        let grad = inner::<X>(grads.consume::<X>(&ops.node));
        let [p_node, r_node, h_node] = ops.parents;
        let GruGrads {
            projected,
            recurrent,
            h,
        } = X::gru_backward(grad, r_n, rz, n, diff);
        register!(grads, r_node, recurrent);
        register!(grads, p_node, projected);
        register!(grads, h_node, h);
    }
}

/// The LSTM node's gradient.
#[derive(Debug)]
struct LstmBackward<X>(PhantomData<X>);

impl<X: S2sBackend> Backward<X, 3> for LstmBackward<X> {
    /// The activated gates, `c` (before the step) and `tanh(c')`.
    type State = [FloatTensor<X>; 3];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [act, c, tanh_c] = ops.state.map(inner::<X>);
        let grad = inner::<X>(grads.consume::<X>(&ops.node));
        let [p_node, r_node, c_node] = ops.parents;
        let LstmGrads { gates, c } = X::lstm_backward(grad, act, c, tanh_c);
        register!(grads, r_node, gates.clone());
        register!(grads, p_node, gates);
        register!(grads, c_node, c);
    }
}

/// The attention node's gradient.
#[derive(Debug)]
struct AttentionBackward<X>(PhantomData<X>);

impl<X: S2sBackend> Backward<X, 3> for AttentionBackward<X> {
    /// The weights, `sigmoid(keys + q)` and `v`.
    type State = [FloatTensor<X>; 3];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [weights, hidden, v] = ops.state.map(inner::<X>);
        let grad = inner::<X>(grads.consume::<X>(&ops.node));
        let [keys_node, q_node, v_node] = ops.parents;
        let AttentionGrads { keys, q, v } = X::attention_backward(grad, weights, hidden, v);
        register!(grads, v_node, v);
        register!(grads, q_node, q);
        register!(grads, keys_node, keys);
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
    X: S2sBackend,
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
