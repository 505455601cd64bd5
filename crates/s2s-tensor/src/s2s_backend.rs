//! [`S2sBackend`]: the operations of s2s that have faster versions on some backends, each
//! with a default written with Burn's tensor operations.
//!
//! A Burn [`Backend`] becomes usable by the s2s model, decoders and trainer by implementing
//! this trait; `impl S2sBackend for MyBackend {}` takes every default (Burn's own operations,
//! [`crate::reference`]). The backends compiled into this crate override what they do
//! faster: [`Flex`](crate::backend::Flex) runs the cells, the attention, `sigmoid`/`tanh` and
//! the Adam update as single passes of `s2s_kernels`; [`Tch`](crate::backend::Tch) calls
//! libtorch directly in fewer kernels; [`Wgpu`](crate::backend::Wgpu) takes the defaults but
//! records its autodiff graphs on one thread. `Autodiff<B>` for any `B: S2sBackend` records
//! each cell update, attention step and per-sequence weight product as one autodiff node
//! whose gradient calls `B`'s backward operations ([`crate::autodiff`]).
//!
//! Which version runs is decided by the type, at compile time: nothing in s2s inspects a
//! backend at run time.
//!
//! # Shapes (cells)
//! - `projected`, `recurrent`: `[batch, gates * d_hidden]`, the input's and the state's share
//!   of the gate pre-activations, biases included (gate order `r z n` for GRU, `i f g o` for
//!   LSTM, as in PyTorch)
//! - `h`, `c` and the returned states: `[batch, d_hidden]`
//!
//! # Shapes (attention)
//! - `keys`: `[src_len, sources * d]`, source-major; `q`: `[1, batch * d]`; `v`: `[d, 1]`
//! - `valid`: `[batch, src_len]`, `false` at padding; weights: `[batch, src_len]`
//!
//! Several query rows may share one block of keys (the rows of one source in beam search):
//! with `sources` key blocks and `batch = repeat * sources` query rows, row `b` meets block
//! `b / repeat`.

use crate::adam::{AdamState, AdamStep};
use crate::reference;
use crate::step_product::StepProduct;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Tensor};

/// A GRU update and what its gradient reads (see [`S2sBackend::gru_forward`]).
#[derive(Debug, Clone)]
pub struct GruStep<B: Backend> {
    /// The new state `h'`.
    pub h: Tensor<B, 2>,
    /// `sigmoid` of the reset and update gates, `[batch, 2 * d]`.
    pub rz: Tensor<B, 2>,
    /// The candidate `n`.
    pub n: Tensor<B, 2>,
    /// `h - n`.
    pub diff: Tensor<B, 2>,
}

/// An LSTM update and what its gradient reads (see [`S2sBackend::lstm_forward`]).
#[derive(Debug, Clone)]
pub struct LstmStep<B: Backend> {
    /// The new state `h'`.
    pub h: Tensor<B, 2>,
    /// The new cell `c'`.
    pub c: Tensor<B, 2>,
    /// The activated gates, `[batch, 4 * d]`, in the backend's own form: the reference keeps
    /// `(tanh(g) + 1) / 2` in the `g` block (one sigmoid over all four), libtorch `tanh(g)`.
    /// Only the same backend's [`S2sBackend::lstm_backward`] reads it.
    pub act: Tensor<B, 2>,
    /// `tanh(c')`.
    pub tanh_c: Tensor<B, 2>,
}

/// Additive attention's weights and what their gradient reads.
#[derive(Debug, Clone)]
pub struct AttentionStep<B: Backend> {
    /// `[batch, src_len]`
    pub weights: Tensor<B, 2>,
    /// `sigmoid(keys + q)`, `[src_len * batch, d]`, source-major.
    pub hidden: Tensor<B, 2>,
}

/// The gradients of a GRU update's inputs.
#[derive(Debug, Clone)]
pub struct GruGrads<B: Backend> {
    /// Of `projected`, `[batch, 3 * d]`.
    pub projected: Tensor<B, 2>,
    /// Of `recurrent`, `[batch, 3 * d]`.
    pub recurrent: Tensor<B, 2>,
    /// Of `h`, `[batch, d]`.
    pub h: Tensor<B, 2>,
}

/// The gradients of an LSTM update's inputs.
#[derive(Debug, Clone)]
pub struct LstmGrads<B: Backend> {
    /// Of the gate pre-activations, `projected` and `recurrent` alike, `[batch, 4 * d]`.
    pub gates: Tensor<B, 2>,
    /// Of `c`, `[batch, d]`.
    pub c: Tensor<B, 2>,
}

/// The gradients of additive attention's inputs.
#[derive(Debug, Clone)]
pub struct AttentionGrads<B: Backend> {
    /// Of `keys`, `[src_len, batch * d]` (one block per query row).
    pub keys: Tensor<B, 2>,
    /// Of `q`, `[1, batch * d]`.
    pub q: Tensor<B, 2>,
    /// Of `v`, `[d, 1]`.
    pub v: Tensor<B, 2>,
}

/// A Burn backend with the operations s2s runs faster where it can (see the module docs).
///
/// Every method has a default written with Burn's tensor operations. A backend that
/// overrides a `*_forward` method must override the matching `*_backward` too: the state
/// between the two is the backend's own.
pub trait S2sBackend: Backend {
    /// Whether the cells, the attention and [`StepProduct`] record one autodiff node with a
    /// hand-written gradient (true on `Autodiff<B>`).
    const ONE_NODE_GRADIENTS: bool = false;

    /// Whether autodiff graphs may be recorded on several threads at once on one device.
    /// Burn 0.21's CubeCL backends (wgpu) lost gradient contributions when three threads did
    /// so; training then runs one worker.
    const AUTODIFF_ACROSS_THREADS: bool = true;

    /// The logistic function `1 / (1 + exp(-x))`, elementwise.
    fn elementwise_sigmoid<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        burn::tensor::activation::sigmoid(x)
    }

    /// The hyperbolic tangent, elementwise.
    fn elementwise_tanh<const D: usize>(x: Tensor<Self, D>) -> Tensor<Self, D> {
        x.tanh()
    }

    /// The GRU update (see [`crate::fused::gru_cell`]).
    fn gru_cell(
        projected: Tensor<Self, 2>,
        recurrent: Tensor<Self, 2>,
        h: Tensor<Self, 2>,
    ) -> Tensor<Self, 2> {
        Self::gru_forward(projected, recurrent, h).h
    }

    /// The GRU update with what its gradient reads.
    fn gru_forward(
        projected: Tensor<Self, 2>,
        recurrent: Tensor<Self, 2>,
        h: Tensor<Self, 2>,
    ) -> GruStep<Self> {
        reference::gru_forward(projected, recurrent, h)
    }

    /// The gradients of a GRU update's inputs from the gradient of `h'` (`grad`), the `n`
    /// block of `recurrent` (`r_n`, `[batch, d]`) and the forward pass's `rz`, `n`, `diff`.
    fn gru_backward(
        grad: Tensor<Self, 2>,
        r_n: Tensor<Self, 2>,
        rz: Tensor<Self, 2>,
        n: Tensor<Self, 2>,
        diff: Tensor<Self, 2>,
    ) -> GruGrads<Self> {
        reference::gru_backward(grad, r_n, rz, n, diff)
    }

    /// The LSTM update; returns `(h', c')` (see [`crate::fused::lstm_cell`]).
    fn lstm_cell(
        projected: Tensor<Self, 2>,
        recurrent: Tensor<Self, 2>,
        c: Tensor<Self, 2>,
    ) -> (Tensor<Self, 2>, Tensor<Self, 2>) {
        let step = Self::lstm_forward(projected, recurrent, c);
        (step.h, step.c)
    }

    /// The LSTM update with what its gradient reads.
    fn lstm_forward(
        projected: Tensor<Self, 2>,
        recurrent: Tensor<Self, 2>,
        c: Tensor<Self, 2>,
    ) -> LstmStep<Self> {
        reference::lstm_forward(projected, recurrent, c)
    }

    /// The gradients of an LSTM update's inputs from the gradient of `[h', c']` (`grad`,
    /// `[batch, 2 * d]`), the forward pass's `act`, the cell before the step (`c`) and
    /// `tanh(c')`.
    fn lstm_backward(
        grad: Tensor<Self, 2>,
        act: Tensor<Self, 2>,
        c: Tensor<Self, 2>,
        tanh_c: Tensor<Self, 2>,
    ) -> LstmGrads<Self> {
        reference::lstm_backward(grad, act, c, tanh_c)
    }

    /// The weights of additive attention (see [`crate::fused::additive_attention`]).
    fn additive_attention(
        keys: Tensor<Self, 2>,
        q: Tensor<Self, 2>,
        v: Tensor<Self, 2>,
        valid: Tensor<Self, 2, Bool>,
    ) -> Tensor<Self, 2> {
        Self::attention_forward(keys, q, v, valid).weights
    }

    /// The weights of additive attention with what their gradient reads.
    fn attention_forward(
        keys: Tensor<Self, 2>,
        q: Tensor<Self, 2>,
        v: Tensor<Self, 2>,
        valid: Tensor<Self, 2, Bool>,
    ) -> AttentionStep<Self> {
        reference::attention_forward(keys, q, v, valid)
    }

    /// The gradients of the keys (one block per query row), the query and `v` from the
    /// weights' gradient (`grad`), the forward pass's weights and `hidden`, and `v`.
    fn attention_backward(
        grad: Tensor<Self, 2>,
        weights: Tensor<Self, 2>,
        hidden: Tensor<Self, 2>,
        v: Tensor<Self, 2>,
    ) -> AttentionGrads<Self> {
        reference::attention_backward(grad, weights, hidden, v)
    }

    /// `x @ weight + bias` for every step of a sequence (see [`StepProduct`]).
    fn step_product(weight: Tensor<Self, 3>, bias: Tensor<Self, 2>) -> StepProduct<Self> {
        StepProduct::plain(weight, bias)
    }

    /// One Adam step of one parameter (see [`crate::adam::adam_update`]).
    fn adam_update(
        param: Tensor<Self, 1>,
        grad: Tensor<Self, 1>,
        moments: Option<(Tensor<Self, 1>, Tensor<Self, 1>)>,
        step: AdamStep,
    ) -> AdamState<Self> {
        crate::adam::adam_update_composed(param, grad, moments, step)
    }
}

/// An autodiff backend whose inner backend is an [`S2sBackend`] too: what training needs.
pub trait S2sAutodiffBackend: AutodiffBackend<InnerBackend: S2sBackend> + S2sBackend {}

impl<B> S2sAutodiffBackend for B
where
    B: AutodiffBackend + S2sBackend,
    B::InnerBackend: S2sBackend,
{
}

/// One autodiff node per cell update, attention step and sequence's weight product.
impl<B: S2sBackend> S2sBackend for Autodiff<B, NoCheckpointing> {
    const ONE_NODE_GRADIENTS: bool = true;
    const AUTODIFF_ACROSS_THREADS: bool = B::AUTODIFF_ACROSS_THREADS;

    fn gru_cell(
        projected: Tensor<Self, 2>,
        recurrent: Tensor<Self, 2>,
        h: Tensor<Self, 2>,
    ) -> Tensor<Self, 2> {
        crate::autodiff::gru_cell(projected, recurrent, h)
    }

    fn lstm_cell(
        projected: Tensor<Self, 2>,
        recurrent: Tensor<Self, 2>,
        c: Tensor<Self, 2>,
    ) -> (Tensor<Self, 2>, Tensor<Self, 2>) {
        crate::autodiff::lstm_cell(projected, recurrent, c)
    }

    fn additive_attention(
        keys: Tensor<Self, 2>,
        q: Tensor<Self, 2>,
        v: Tensor<Self, 2>,
        valid: Tensor<Self, 2, Bool>,
    ) -> Tensor<Self, 2> {
        crate::autodiff::additive_attention(keys, q, v, valid)
    }

    fn step_product(weight: Tensor<Self, 3>, bias: Tensor<Self, 2>) -> StepProduct<Self> {
        crate::step_product::per_sequence(weight, bias)
    }
}
