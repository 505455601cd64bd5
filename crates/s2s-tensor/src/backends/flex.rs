//! [`S2sBackend`] for [`Flex`]: the cells, the attention, their gradients, `sigmoid`/`tanh`
//! and the Adam update as single passes of `s2s_kernels` over `f32` values (Burn's
//! operations for other float types).
//!
//! The cells and attention run one pass per row, within 1e-5 of Burn's operations; the
//! activations a branch-free polynomial (see [`crate::activation`]); the Adam update the same
//! operations as Burn's in the same order, so the same values bit for bit, writing over the
//! parameter and its moments wherever no other tensor shares their values.

use super::flex_tensors::{bools, contiguous, dims, from_vec, row_major, rows, tensor, values};
use crate::adam::{AdamState, AdamStep};
use crate::backend::Flex;
use crate::reference;
use crate::s2s_backend::{
    AttentionGrads, AttentionStep, GruGrads, GruStep, LstmGrads, LstmStep, S2sBackend,
};
use burn::backend::flex::FlexTensor;
use burn::tensor::{Bool, DType, Tensor, TensorData, TensorPrimitive};
use s2s_kernels::{attention, cells, optim};

impl S2sBackend for Flex {
    fn elementwise_sigmoid<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        map(
            x,
            s2s_kernels::sigmoid_in_place,
            burn::tensor::activation::sigmoid,
        )
    }

    fn elementwise_tanh<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        map(x, s2s_kernels::tanh_in_place, Tensor::tanh)
    }

    fn gru_cell(p: Tensor<Self, 2>, r: Tensor<Self, 2>, h: Tensor<Self, 2>) -> Tensor<Self, 2> {
        gru_state(&p, &r, &h).unwrap_or_else(|| Self::gru_forward(p, r, h).h)
    }

    fn gru_forward(p: Tensor<Self, 2>, r: Tensor<Self, 2>, h: Tensor<Self, 2>) -> GruStep<Self> {
        gru_forward(&p, &r, &h).unwrap_or_else(|| reference::gru_forward(p, r, h))
    }

    fn gru_backward(
        grad: Tensor<Self, 2>,
        r_n: Tensor<Self, 2>,
        rz: Tensor<Self, 2>,
        n: Tensor<Self, 2>,
        diff: Tensor<Self, 2>,
    ) -> GruGrads<Self> {
        gru_backward(&grad, &r_n, &rz, &n, &diff)
            .unwrap_or_else(|| reference::gru_backward(grad, r_n, rz, n, diff))
    }

    fn lstm_cell(
        p: Tensor<Self, 2>,
        r: Tensor<Self, 2>,
        c: Tensor<Self, 2>,
    ) -> (Tensor<Self, 2>, Tensor<Self, 2>) {
        lstm_state(&p, &r, &c).unwrap_or_else(|| {
            let step = Self::lstm_forward(p, r, c);
            (step.h, step.c)
        })
    }

    fn lstm_forward(p: Tensor<Self, 2>, r: Tensor<Self, 2>, c: Tensor<Self, 2>) -> LstmStep<Self> {
        lstm_forward(&p, &r, &c).unwrap_or_else(|| reference::lstm_forward(p, r, c))
    }

    fn lstm_backward(
        grad: Tensor<Self, 2>,
        act: Tensor<Self, 2>,
        c: Tensor<Self, 2>,
        tanh_c: Tensor<Self, 2>,
    ) -> LstmGrads<Self> {
        lstm_backward(&grad, &act, &c, &tanh_c)
            .unwrap_or_else(|| reference::lstm_backward(grad, act, c, tanh_c))
    }

    fn additive_attention(
        keys: Tensor<Self, 2>,
        q: Tensor<Self, 2>,
        v: Tensor<Self, 2>,
        valid: Tensor<Self, 2, Bool>,
    ) -> Tensor<Self, 2> {
        attention_weights(&keys, &q, &v, &valid)
            .unwrap_or_else(|| Self::attention_forward(keys, q, v, valid).weights)
    }

    fn attention_forward(
        keys: Tensor<Self, 2>,
        q: Tensor<Self, 2>,
        v: Tensor<Self, 2>,
        valid: Tensor<Self, 2, Bool>,
    ) -> AttentionStep<Self> {
        attention_forward(&keys, &q, &v, &valid)
            .unwrap_or_else(|| reference::attention_forward(keys, q, v, valid))
    }

    fn attention_backward(
        grad: Tensor<Self, 2>,
        weights: Tensor<Self, 2>,
        hidden: Tensor<Self, 2>,
        v: Tensor<Self, 2>,
    ) -> AttentionGrads<Self> {
        attention_backward(&grad, &weights, &hidden, &v)
            .unwrap_or_else(|| reference::attention_backward(grad, weights, hidden, v))
    }

    fn adam_update(
        param: Tensor<Self, 1>,
        grad: Tensor<Self, 1>,
        moments: Option<(Tensor<Self, 1>, Tensor<Self, 1>)>,
        step: AdamStep,
    ) -> AdamState<Self> {
        if param.dtype() == DType::F32 {
            adam_update(param, grad, moments, step)
        } else {
            crate::adam::adam_update_composed(param, grad, moments, step)
        }
    }
}

/// `f` applied to the values of `x` when it holds `f32`; `otherwise(x)` when not.
fn map<const D: usize>(
    x: Tensor<Flex, D>,
    f: fn(&mut [f32]),
    otherwise: fn(Tensor<Flex, D>) -> Tensor<Flex, D>,
) -> Tensor<Flex, D> {
    match x.into_primitive() {
        TensorPrimitive::Float(t) if t.dtype() == DType::F32 => tensor(apply(t, f)),
        other => otherwise(Tensor::from_primitive(other)),
    }
}

/// `f` over the tensor's values: in place when it owns a contiguous buffer, else into a new
/// contiguous one.
fn apply(mut t: FlexTensor, f: fn(&mut [f32])) -> FlexTensor {
    if let Some((start, end)) = t.layout().contiguous_offsets() {
        if let Some(values) = t.try_storage_mut::<f32>() {
            f(&mut values[start..end]);
            return t;
        }
    }
    let shape = t.layout().shape().clone();
    let contiguous = t.to_contiguous();
    let mut values = contiguous
        .as_slice::<f32>()
        .expect("a contiguous f32 tensor")
        .to_vec();
    f(&mut values);
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The attention weights and `sigmoid(keys + q)`, one block of keys per query row.
fn attention_forward(
    keys: &Tensor<Flex, 2>,
    q: &Tensor<Flex, 2>,
    v: &Tensor<Flex, 2>,
    valid: &Tensor<Flex, 2, Bool>,
) -> Option<AttentionStep<Flex>> {
    let [keys] = row_major([keys])?;
    let [q, v] = contiguous([q, v])?;
    let ([src_len, width], d) = (dims(&keys), values(&v).len());
    if values(&q).len() != width {
        return None;
    }
    let valid = bools(valid)?;
    let batch = width / d;
    let att = attention::additive_attention(rows(&keys), values(&q), values(&v), &valid);
    Some(AttentionStep {
        weights: from_vec(att.weights, batch, src_len),
        hidden: from_vec(att.hidden, src_len * batch, d),
    })
}

/// The attention weights alone, each block of keys shared by the query rows that meet it.
fn attention_weights(
    keys: &Tensor<Flex, 2>,
    q: &Tensor<Flex, 2>,
    v: &Tensor<Flex, 2>,
    valid: &Tensor<Flex, 2, Bool>,
) -> Option<Tensor<Flex, 2>> {
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
fn attention_backward(
    grad: &Tensor<Flex, 2>,
    weights: &Tensor<Flex, 2>,
    hidden: &Tensor<Flex, 2>,
    v: &Tensor<Flex, 2>,
) -> Option<AttentionGrads<Flex>> {
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
    Some(AttentionGrads {
        keys: from_vec(g.keys, src_len, batch * d),
        q: from_vec(g.q, 1, batch * d),
        v: from_vec(g.v, d, 1),
    })
}

fn gru_forward(
    p: &Tensor<Flex, 2>,
    r: &Tensor<Flex, 2>,
    h: &Tensor<Flex, 2>,
) -> Option<GruStep<Flex>> {
    let [p, r, h] = row_major([p, r, h])?;
    let [b, d] = dims(&h);
    let step = cells::gru_step(rows(&p), rows(&r), rows(&h));
    Some(GruStep {
        h: from_vec(step.h, b, d),
        rz: from_vec(step.rz, b, 2 * d),
        n: from_vec(step.n, b, d),
        diff: from_vec(step.diff, b, d),
    })
}

/// The new state alone, without what the gradient reads (decoding).
fn gru_state(
    p: &Tensor<Flex, 2>,
    r: &Tensor<Flex, 2>,
    h: &Tensor<Flex, 2>,
) -> Option<Tensor<Flex, 2>> {
    let [p, r, h] = row_major([p, r, h])?;
    let [b, d] = dims(&h);
    Some(from_vec(
        cells::gru_state(rows(&p), rows(&r), rows(&h)),
        b,
        d,
    ))
}

/// The new state and cell alone.
fn lstm_state(
    p: &Tensor<Flex, 2>,
    r: &Tensor<Flex, 2>,
    c: &Tensor<Flex, 2>,
) -> Option<(Tensor<Flex, 2>, Tensor<Flex, 2>)> {
    let [p, r, c] = row_major([p, r, c])?;
    let [b, d] = dims(&c);
    let (h, c) = cells::lstm_state(rows(&p), rows(&r), rows(&c));
    Some((from_vec(h, b, d), from_vec(c, b, d)))
}

/// The gradients of the input's and the state's pre-activations and of `h`.
fn gru_backward(
    grad: &Tensor<Flex, 2>,
    r_n: &Tensor<Flex, 2>,
    rz: &Tensor<Flex, 2>,
    n: &Tensor<Flex, 2>,
    diff: &Tensor<Flex, 2>,
) -> Option<GruGrads<Flex>> {
    let [grad, r_n, rz, n, diff] = row_major([grad, r_n, rz, n, diff])?;
    let [b, d] = dims(&n);
    let g = cells::gru_step_backward(rows(&grad), rows(&r_n), rows(&rz), rows(&n), rows(&diff));
    Some(GruGrads {
        projected: from_vec(g.p, b, 3 * d),
        recurrent: from_vec(g.r, b, 3 * d),
        h: from_vec(g.h, b, d),
    })
}

fn lstm_forward(
    p: &Tensor<Flex, 2>,
    r: &Tensor<Flex, 2>,
    c: &Tensor<Flex, 2>,
) -> Option<LstmStep<Flex>> {
    let [p, r, c] = row_major([p, r, c])?;
    let [b, d] = dims(&c);
    let step = cells::lstm_step(rows(&p), rows(&r), rows(&c));
    Some(LstmStep {
        h: from_vec(step.h, b, d),
        c: from_vec(step.c, b, d),
        act: from_vec(step.act, b, 4 * d),
        tanh_c: from_vec(step.tanh_c, b, d),
    })
}

/// The gradients of the gate pre-activations (the input's and the state's alike) and of `c`.
fn lstm_backward(
    grad: &Tensor<Flex, 2>,
    act: &Tensor<Flex, 2>,
    c: &Tensor<Flex, 2>,
    tanh_c: &Tensor<Flex, 2>,
) -> Option<LstmGrads<Flex>> {
    let [grad, act, c, tanh_c] = row_major([grad, act, c, tanh_c])?;
    let [b, d] = dims(&c);
    let g = cells::lstm_step_backward(rows(&grad), rows(&act), rows(&c), rows(&tanh_c));
    Some(LstmGrads {
        gates: from_vec(g.gates, b, 4 * d),
        c: from_vec(g.c, b, d),
    })
}

/// The flex tensor behind `t` (taken, not cloned, so that the update may write in place),
/// with its values contiguous from the start of its buffer (copied otherwise).
fn flat(t: Tensor<Flex, 1>) -> FlexTensor {
    let t = match t.into_primitive() {
        TensorPrimitive::Float(t) => t,
        TensorPrimitive::QFloat(_) => unreachable!("a parameter of f32 values"),
    };
    match t.layout().contiguous_offsets() {
        Some((0, _)) => t,
        _ => t.to_contiguous(),
    }
}

/// The Adam update in place, one pass over the values: the parameter and its moments are
/// written over, or copied first where another tensor shares their buffer (`storage_mut`,
/// copy on write).
fn adam_update(
    param: Tensor<Flex, 1>,
    grad: Tensor<Flex, 1>,
    moments: Option<(Tensor<Flex, 1>, Tensor<Flex, 1>)>,
    step: AdamStep,
) -> AdamState<Flex> {
    let n = param.dims()[0];
    let zeros = || FlexTensor::from_data(TensorData::new(vec![0.0f32; n], [n]));
    let (mut m, mut v) = match moments {
        Some((m, v)) => (flat(m), flat(v)),
        None => (zeros(), zeros()),
    };
    let (mut p, g) = (flat(param), flat(grad));
    optim::adam(
        &mut p.storage_mut::<f32>()[..n],
        &g.storage::<f32>()[..n],
        &mut m.storage_mut::<f32>()[..n],
        &mut v.storage_mut::<f32>()[..n],
        step,
    );
    AdamState {
        param: tensor(p),
        moment_1: tensor(m),
        moment_2: tensor(v),
    }
}
