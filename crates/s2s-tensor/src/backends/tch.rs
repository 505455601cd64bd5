//! [`S2sBackend`] for [`Tch`]: the GRU and LSTM steps, the attention weights, their
//! gradients and the Adam update as direct libtorch calls, in fewer kernels and allocations
//! than Burn's operations: in-place activations on the gate blocks, `addcmul`, products
//! written into the blocks of one gradient tensor, libtorch's fused
//! `sigmoid_backward`/`tanh_backward`, its one-kernel softmax and softmax gradient, and
//! `lerp`/`addcdiv` for Adam (seven kernels against Burn's thirteen). Here the `g` block of
//! the LSTM's `act` holds `tanh(g)` itself. Results are within 1e-5 of Burn's operations.

use crate::adam::{AdamState, AdamStep};
use crate::backend::Tch;
use crate::ops::MASK_VALUE;
use crate::reference;
use crate::s2s_backend::{
    AttentionGrads, AttentionStep, GruGrads, GruStep, LstmGrads, LstmStep, S2sBackend,
};
use burn::backend::libtorch::TchTensor;
use burn::tensor::{Bool, Tensor, TensorPrimitive};

impl S2sBackend for Tch {
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
        match gru_backward(&grad, &r_n, &rz, &n, &diff) {
            Some([projected, recurrent, h]) => GruGrads {
                projected,
                recurrent,
                h,
            },
            None => reference::gru_backward(grad, r_n, rz, n, diff),
        }
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
        match lstm_backward(&grad, &act, &c, &tanh_c) {
            Some([gates, c]) => LstmGrads { gates, c },
            None => reference::lstm_backward(grad, act, c, tanh_c),
        }
    }

    fn attention_forward(
        keys: Tensor<Self, 2>,
        q: Tensor<Self, 2>,
        v: Tensor<Self, 2>,
        valid: Tensor<Self, 2, Bool>,
    ) -> AttentionStep<Self> {
        match attention_forward(&keys, &q, &v, &valid) {
            Some((weights, hidden)) => AttentionStep { weights, hidden },
            None => reference::attention_forward(keys, q, v, valid),
        }
    }

    fn attention_backward(
        grad: Tensor<Self, 2>,
        weights: Tensor<Self, 2>,
        hidden: Tensor<Self, 2>,
        v: Tensor<Self, 2>,
    ) -> AttentionGrads<Self> {
        match attention_backward(&grad, &weights, &hidden, &v) {
            Some([keys, q, v]) => AttentionGrads { keys, q, v },
            None => reference::attention_backward(grad, weights, hidden, v),
        }
    }

    fn adam_update(
        param: Tensor<Self, 1>,
        grad: Tensor<Self, 1>,
        moments: Option<(Tensor<Self, 1>, Tensor<Self, 1>)>,
        step: AdamStep,
    ) -> AdamState<Self> {
        adam_update(param, grad, moments, step)
    }
}

/// The libtorch tensor behind a float tensor, with whether it is the only reference to its
/// values (Burn's own test before it writes in place); `None` for a quantized tensor.
fn tch_of<const D: usize>(t: Tensor<Tch, D>) -> Option<(tch::Tensor, bool)> {
    match t.into_primitive() {
        TensorPrimitive::Float(t) => {
            let unique = t.can_mut();
            Some((t.tensor, unique))
        }
        TensorPrimitive::QFloat(_) => None,
    }
}

/// A libtorch tensor as a tensor.
fn from_tch<const D: usize>(t: tch::Tensor) -> Tensor<Tch, D> {
    Tensor::from_primitive(TensorPrimitive::Float(TchTensor::new(t)))
}

/// The libtorch tensors behind `tensors` (`None` for quantized ones).
fn torch<const N: usize>(tensors: [&Tensor<Tch, 2>; N]) -> Option<[tch::Tensor; N]> {
    let mut out = Vec::with_capacity(N);
    for t in tensors {
        out.push(tch_of(t.clone())?.0);
    }
    out.try_into().ok()
}

/// The attention weights and `sigmoid(keys + q)`: 8 kernels, against 11.
fn attention_forward(
    keys: &Tensor<Tch, 2>,
    q: &Tensor<Tch, 2>,
    v: &Tensor<Tch, 2>,
    valid: &Tensor<Tch, 2, Bool>,
) -> Option<(Tensor<Tch, 2>, Tensor<Tch, 2>)> {
    let [keys, q, v] = torch([keys, q, v])?;
    let valid = valid.clone().into_primitive().tensor;
    let (src_len, d) = (keys.size()[0], v.size()[0]);
    let (sources, batch) = (keys.size()[1] / d, q.size()[1] / d);
    let repeat =
        crate::ops::RowLayout::of_shapes(batch as usize, sources as usize).per_source() as i64;
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
fn attention_backward(
    grad: &Tensor<Tch, 2>,
    weights: &Tensor<Tch, 2>,
    hidden: &Tensor<Tch, 2>,
    v: &Tensor<Tch, 2>,
) -> Option<[Tensor<Tch, 2>; 3]> {
    let [grad, weights, hidden, v] = torch([grad, weights, hidden, v])?;
    let [batch, src_len] = [grad.size()[0], grad.size()[1]];
    let d = v.size()[0];
    // Zero where masked, as the weights are; source-major like `hidden`.
    let dscores = tch::Tensor::internal_softmax_backward_data(&grad, &weights, 1, tch::Kind::Float)
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
fn gru_forward(p: &Tensor<Tch, 2>, r: &Tensor<Tch, 2>, h: &Tensor<Tch, 2>) -> Option<GruStep<Tch>> {
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
    Some(GruStep {
        h: from_tch(h_new),
        rz: from_tch(rz),
        n: from_tch(n),
        diff: from_tch(diff),
    })
}

/// The gradients of the input's and the state's pre-activations and of `h`: 8 kernels,
/// against 15.
fn gru_backward(
    grad: &Tensor<Tch, 2>,
    r_n: &Tensor<Tch, 2>,
    rz: &Tensor<Tch, 2>,
    n: &Tensor<Tch, 2>,
    diff: &Tensor<Tch, 2>,
) -> Option<[Tensor<Tch, 2>; 3]> {
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

fn lstm_forward(
    p: &Tensor<Tch, 2>,
    r: &Tensor<Tch, 2>,
    c: &Tensor<Tch, 2>,
) -> Option<LstmStep<Tch>> {
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
    Some(LstmStep {
        h: from_tch(h),
        c: from_tch(c_new),
        act: from_tch(act),
        tanh_c: from_tch(tanh_c),
    })
}

fn lstm_backward(
    grad: &Tensor<Tch, 2>,
    act: &Tensor<Tch, 2>,
    c: &Tensor<Tch, 2>,
    tanh_c: &Tensor<Tch, 2>,
) -> Option<[Tensor<Tch, 2>; 2]> {
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

/// The values of `t` to be written in place: its own when nothing else holds them, else
/// a copy.
fn writable(t: Tensor<Tch, 1>) -> tch::Tensor {
    match tch_of(t).expect("a float tensor") {
        (t, true) => t,
        (t, false) => t.copy(),
    }
}

/// The update in place: the parameter, its moments and the gradient are written over
/// (copied first where another tensor shares their values, as Burn's in-place
/// operations do).
fn adam_update(
    param: Tensor<Tch, 1>,
    grad: Tensor<Tch, 1>,
    moments: Option<(Tensor<Tch, 1>, Tensor<Tch, 1>)>,
    s: AdamStep,
) -> AdamState<Tch> {
    let (a1, a2) = (1.0 - s.beta_1 as f64, 1.0 - s.beta_2 as f64);
    // The gradient's values are the one buffer of the step: the gradient, its square,
    // then the denominator.
    let mut g = writable(grad);
    let (m, v) = match moments {
        // m + (1 - b1) (g - m) and v + (1 - b2) (g^2 - v).
        Some((m, v)) => {
            let (mut m, mut v) = (writable(m), writable(v));
            let _ = m.lerp_(&g, a1);
            let _ = g.g_mul_(&g.shallow_clone());
            let _ = v.lerp_(&g, a2);
            (m, v)
        }
        None => {
            let m = g.g_mul_scalar(a1);
            let _ = g.g_mul_(&g.shallow_clone());
            (m, g.g_mul_scalar(a2))
        }
    };
    // p + m / ((sqrt(v) + eps) / (-lr * factor)): the denominator's scalings in place,
    // then one `addcdiv`.
    let _ = v.sqrt_out(&g);
    let _ = g.g_add_scalar_(s.epsilon as f64);
    let _ = g.g_div_scalar_(-(s.lr as f64) * s.factor as f64);
    let mut p = writable(param);
    let _ = p.addcdiv_(&m, &g);
    AdamState {
        param: from_tch(p),
        moment_1: from_tch(m),
        moment_2: from_tch(v),
    }
}
