//! Fused LSTM and GRU layers.
//!
//! The weights are stored as two matrices over the concatenated gates, as in PyTorch
//! (`weight_ih` / `weight_hh`, gate order `i f g o` for LSTM and `r z n` for GRU, stored
//! transposed here so that `x.matmul(w)` applies them). A sequence costs one matmul for the
//! input projection of all time steps plus one matmul per step for the recurrent part,
//! instead of one small matmul per gate and step.
//!
//! A layer has two entry points: [`RnnLayer::step`], one time step, and [`RnnLayer::seq`], a
//! padded batch in one or both directions. Both go through [`StepWeights`], whose
//! `step`/`step_projected` are the one place where the cell equations are applied; a loop of
//! steps takes the layer's [`weights`](RnnLayer::weights) (plain products) or its
//! [`sequence_weights`](RnnLayer::sequence_weights) (each weight's gradient made once per
//! sequence in training).

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::tensor::{backend::Backend, Int, Tensor};
use s2s_tensor::step_product::StepProduct;
use s2s_tensor::S2sBackend;
use serde::{Deserialize, Serialize};

/// The recurrent cell type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// Long short-term memory (gates `i f g o`).
    Lstm,
    /// Gated recurrent unit, reset gate applied after the recurrent matmul (PyTorch's GRU).
    #[default]
    Gru,
}

impl CellKind {
    /// Number of gate blocks in the fused weight matrices.
    pub fn gates(&self) -> usize {
        match self {
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }
}

impl std::str::FromStr for CellKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lstm" => Ok(CellKind::Lstm),
            "gru" => Ok(CellKind::Gru),
            _ => Err(format!("unknown cell {s:?} (expected lstm or gru)")),
        }
    }
}

/// Configuration of one recurrent layer.
#[derive(Config, Debug)]
pub struct RnnLayerConfig {
    /// Input features.
    pub d_input: usize,
    /// Hidden state size.
    pub d_hidden: usize,
    /// Cell type.
    #[config(default = "CellKind::Gru")]
    pub cell: CellKind,
}

/// The state of a recurrent layer: `h` and, for LSTM, the cell `c`, each `[batch, d_hidden]`.
#[derive(Debug, Clone)]
pub struct RnnState<B: Backend> {
    /// Hidden state `[batch, d_hidden]`.
    pub h: Tensor<B, 2>,
    /// LSTM cell state `[batch, d_hidden]`; `None` for GRU.
    pub c: Option<Tensor<B, 2>>,
}

impl<B: Backend> RnnState<B> {
    /// The all-zero state.
    pub fn zeros(cell: CellKind, batch: usize, d_hidden: usize, device: &B::Device) -> Self {
        RnnState {
            h: Tensor::zeros([batch, d_hidden], device),
            c: (cell == CellKind::Lstm).then(|| Tensor::zeros([batch, d_hidden], device)),
        }
    }

    /// Reorders the batch rows: `out[i] = self[indices[i]]`.
    pub fn select_rows(self, indices: &[usize]) -> Self {
        RnnState {
            h: s2s_tensor::ops::gather_rows(self.h, indices),
            c: self.c.map(|c| s2s_tensor::ops::gather_rows(c, indices)),
        }
    }
}

/// The cell equations on the fused gate pre-activations: `projected` is the input's share
/// (bias included), `recurrent` the state's. On an autodiff backend each update is one node
/// of the graph with a hand-written gradient (see [`s2s_tensor::fused`]).
///
/// # Shapes
/// - `projected`, `recurrent`: `[batch, gates * d_hidden]`
/// - `h`, `c` (LSTM only) and the returned states: `[batch, d_hidden]`
fn cell_update<B: S2sBackend>(
    cell: CellKind,
    projected: Tensor<B, 2>,
    recurrent: Tensor<B, 2>,
    h: Tensor<B, 2>,
    c: Option<Tensor<B, 2>>,
) -> (Tensor<B, 2>, Option<Tensor<B, 2>>) {
    match cell {
        CellKind::Lstm => {
            let c = c.expect("LSTM state has a cell");
            let (h, c) = s2s_tensor::fused::lstm_cell(projected, recurrent, c);
            (h, Some(c))
        }
        CellKind::Gru => (s2s_tensor::fused::gru_cell(projected, recurrent, h), None),
    }
}

/// For each row of a `[batch, seq]` batch flattened to `batch * seq` positions, the position
/// that holds its tokens in reverse order: `b * seq + (len_b - 1 - t)` for `t < len_b`; padded
/// positions map to themselves. The map is its own inverse.
fn reversal_indices(lengths: &[usize], seq: usize) -> Vec<usize> {
    let mut idx = Vec::with_capacity(lengths.len() * seq);
    for (b, &len) in lengths.iter().enumerate() {
        idx.extend((0..seq).map(|t| b * seq + if t < len { len - 1 - t } else { t }));
    }
    idx
}

/// For each direction, the flattened `[batch, seq]` position that feeds input row `(t, b)`
/// (at `t * batch + b`): position `t` of row `b`, or of row `b` reversed within its length for
/// the backward direction (see [`reversal_indices`]).
fn input_rows(lengths: &[usize], seq: usize, dirs: usize) -> Vec<Vec<usize>> {
    let batch = lengths.len();
    let reverse = reversal_indices(lengths, seq);
    (0..dirs)
        .map(|d| {
            (0..seq)
                .flat_map(|t| (0..batch).map(move |b| b * seq + t))
                .map(|i| if d == 0 { i } else { reverse[i] })
                .collect()
        })
        .collect()
}

/// What [`RnnLayer::seq`] returns.
#[derive(Debug, Clone)]
pub struct DirectionsOutput<B: Backend> {
    /// Outputs `[batch, seq, directions * d_hidden]` (forward first), zero at padding.
    pub outputs: Tensor<B, 3>,
    /// Forward final state, at each row's true last token.
    pub forward: RnnState<B>,
    /// Backward final state (after its pass from the true last token down to the first).
    pub backward: Option<RnnState<B>>,
}

/// What [`RnnLayer::seq`] reads.
#[derive(Debug, Clone)]
pub enum SeqInput<B: Backend> {
    /// Input features `[batch, seq, d_input]`.
    Features(Tensor<B, 3>),
    /// Token ids `[batch, seq]` (below `vocab`) and the embedding table `[vocab, d_input]`
    /// they index. The input projection is linear, so `embedding[id] @ w + b` is row `id` of
    /// `embedding @ w + b`: one small product per batch builds that table for every direction
    /// and each position looks its row up, where projecting the looked-up embeddings would
    /// multiply every position's embedding. The gradient reaches the embedding and the input
    /// weights through the table. The result equals [`SeqInput::Features`] of
    /// `embedding.select(tokens)` up to rounding.
    Tokens {
        /// The embedding table `[vocab, d_input]`.
        embedding: Tensor<B, 2>,
        /// Token ids `[batch, seq]`.
        tokens: Tensor<B, 2, Int>,
    },
}

/// A layer's weights as its steps apply them ([`RnnLayer::weights`] for single steps,
/// [`RnnLayer::sequence_weights`] for a loop over one sequence), with the cell equations:
/// [`step`](Self::step) is the one place where a step of a recurrent layer is computed.
#[derive(Clone, Debug)]
pub struct StepWeights<B: Backend> {
    cell: CellKind,
    /// `None` for the stacked directions of [`RnnLayer::seq`], whose inputs come projected.
    input: Option<Product<B>>,
    recurrent: Product<B>,
}

/// How a step applies one weight and its bias.
#[derive(Clone, Debug)]
enum Product<B: Backend> {
    /// `x @ w + b` with Burn's operations, the weight `[d_in, d_out]` as the layer holds it.
    Plain(Tensor<B, 2>, Tensor<B, 1>),
    /// A [`StepProduct`] (in training, the weight's gradient made once per sequence).
    PerSequence(StepProduct<B>),
}

impl<B: S2sBackend> Product<B> {
    fn apply(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Product::Plain(w, b) => x.matmul(w.clone()) + b.clone().unsqueeze(),
            Product::PerSequence(p) => p.apply(x),
        }
    }
}

impl<B: S2sBackend> StepWeights<B> {
    /// One time step from a raw input.
    ///
    /// # Shapes
    /// - `input`: `[batch, d_input]`; `state`: `[batch, d_hidden]` each
    pub fn step(&self, input: Tensor<B, 2>, state: RnnState<B>) -> RnnState<B> {
        let projection = self
            .input
            .as_ref()
            .expect("a single layer's weights take raw inputs");
        self.step_projected(projection.apply(input), state)
    }

    /// One time step from an input whose share of the gates is already computed (the input
    /// weights and bias applied, or an equivalent sum of shares).
    ///
    /// # Shapes
    /// - `projected`: `[batch, gates * d_hidden]`; `state`: `[batch, d_hidden]` each
    pub fn step_projected(&self, projected: Tensor<B, 2>, state: RnnState<B>) -> RnnState<B> {
        let recurrent = self.recurrent.apply(state.h.clone());
        let (h, c) = cell_update(self.cell, projected, recurrent, state.h, state.c);
        RnnState { h, c }
    }
}
/// One recurrent layer (a single direction).
#[derive(Module, Debug)]
pub struct RnnLayer<B: Backend> {
    /// Input weights `[d_input, gates * d_hidden]`.
    pub weight_ih: Param<Tensor<B, 2>>,
    /// Recurrent weights `[d_hidden, gates * d_hidden]`.
    pub weight_hh: Param<Tensor<B, 2>>,
    /// Input bias `[gates * d_hidden]`.
    pub bias_ih: Param<Tensor<B, 1>>,
    /// Recurrent bias `[gates * d_hidden]`.
    pub bias_hh: Param<Tensor<B, 1>>,
    /// Cell type.
    #[module(skip)]
    pub cell: CellKind,
    /// Hidden size.
    pub d_hidden: usize,
}

impl RnnLayerConfig {
    /// Initialises a layer with PyTorch's scheme: every weight uniform in
    /// `[-1/sqrt(d_hidden), 1/sqrt(d_hidden)]`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> RnnLayer<B> {
        let k = 1.0 / (self.d_hidden as f64).sqrt();
        let init = Initializer::Uniform { min: -k, max: k };
        let g = self.cell.gates() * self.d_hidden;
        RnnLayer {
            weight_ih: init.init([self.d_input, g], device),
            weight_hh: init.init([self.d_hidden, g], device),
            bias_ih: init.init([g], device),
            bias_hh: init.init([g], device),
            cell: self.cell,
            d_hidden: self.d_hidden,
        }
    }
}

impl<B: S2sBackend> RnnLayer<B> {
    /// One time step from a raw input (the layer's [`weights`](Self::weights) applied).
    ///
    /// # Shapes
    /// - `input`: `[batch, d_input]`; `state`: `[batch, d_hidden]` each
    pub fn step(&self, input: Tensor<B, 2>, state: RnnState<B>) -> RnnState<B> {
        self.weights().step(input, state)
    }

    /// The weights for single steps: plain products, `x @ w + b`.
    pub fn weights(&self) -> StepWeights<B> {
        let plain =
            |w: &Param<Tensor<B, 2>>, b: &Param<Tensor<B, 1>>| Product::Plain(w.val(), b.val());
        StepWeights {
            cell: self.cell,
            input: Some(plain(&self.weight_ih, &self.bias_ih)),
            recurrent: plain(&self.weight_hh, &self.bias_hh),
        }
    }

    /// The weights for a loop of steps over one sequence: the same results as
    /// [`weights`](Self::weights), but in training each weight's gradient is made once for
    /// all steps (see [`StepProduct`]).
    pub fn sequence_weights(&self) -> StepWeights<B> {
        let product = |w: &Param<Tensor<B, 2>>, b: &Param<Tensor<B, 1>>| {
            Product::PerSequence(StepProduct::new(w.val().unsqueeze(), b.val().unsqueeze()))
        };
        StepWeights {
            cell: self.cell,
            input: Some(product(&self.weight_ih, &self.bias_ih)),
            recurrent: product(&self.weight_hh, &self.bias_hh),
        }
    }

    /// Applies the input weights and bias to every time step at once.
    ///
    /// # Shapes
    /// - `input`: `[batch, seq, d_input]`
    /// - returns `[batch, seq, gates * d_hidden]`
    fn project_input(&self, input: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d] = input.dims();
        let g = self.weight_ih.dims()[1];
        (input.reshape([b * t, d]).matmul(self.weight_ih.val()) + self.bias_ih.val().unsqueeze())
            .reshape([b, t, g])
    }

    /// Runs `forward` and, when given, `backward` (the reverse direction) over a padded batch,
    /// with both directions advancing together: each time step is one batched matmul over the
    /// stacked recurrent weights and one set of element-wise gate operations.
    ///
    /// Padding never enters a state the result depends on: the backward direction reads
    /// every row's tokens reversed within its true length (so its padding comes last, like
    /// the forward direction's), final states are taken at each row's true last token (the
    /// initial zero state for an empty row), and outputs at padded positions are zero. This
    /// is what `pack_padded_sequence` gives PyTorch's RNNs, without per-step masking.
    ///
    /// # Shapes
    /// - `input`: `[batch, seq, d_input]` features or `[batch, seq]` tokens (see
    ///   [`SeqInput`]); `lengths`: true length of each row (`<= seq`)
    /// - returns outputs `[batch, seq, directions * d_hidden]`, states `[batch, d_hidden]`
    ///
    /// # Panics
    /// If the two layers differ in cell or size, or a length exceeds `seq`.
    pub fn seq(
        forward: &Self,
        backward: Option<&Self>,
        input: SeqInput<B>,
        lengths: &[usize],
    ) -> DirectionsOutput<B> {
        let (batch, seq, device) = match &input {
            SeqInput::Features(x) => (x.dims()[0], x.dims()[1], x.device()),
            SeqInput::Tokens { tokens, .. } => {
                (tokens.dims()[0], tokens.dims()[1], tokens.device())
            }
        };
        let layers = Self::directions(forward, backward, batch, seq, lengths);
        if seq == 0 {
            return Self::empty_output(&layers, batch, &device);
        }
        let steps = match input {
            SeqInput::Features(x) => Self::projected_features(&layers, x, lengths),
            SeqInput::Tokens { embedding, tokens } => {
                Self::projected_tokens(&layers, embedding, tokens, lengths)
            }
        };
        Self::run_projected(&layers, steps, lengths)
    }

    /// Each step's projected inputs for [`run_projected`](Self::run_projected), from features
    /// `[batch, seq, d_input]` (`seq >= 1`).
    fn projected_features(
        layers: &[&Self],
        input: Tensor<B, 3>,
        lengths: &[usize],
    ) -> Vec<Tensor<B, 2>> {
        let [batch, seq, d_input] = input.dims();
        let flat = input.reshape([batch * seq, d_input]);
        let rows = input_rows(lengths, seq, layers.len());
        let projected: Vec<Tensor<B, 3>> = layers
            .iter()
            .zip(rows)
            .map(|(layer, rows)| {
                let x = s2s_tensor::ops::gather_rows(flat.clone(), &rows);
                layer.project_input(x.reshape([seq, batch, d_input]))
            })
            .collect();
        let gates = layers[0].cell.gates() * layers[0].d_hidden;
        // [seq, dirs * batch, gates * d_hidden]
        let projected =
            Tensor::stack::<4>(projected, 1).reshape([seq, layers.len() * batch, gates]);
        let rows = layers.len() * batch;
        s2s_tensor::ops::split_steps(projected, 0)
            .into_iter()
            .map(|p| p.reshape([rows, gates]))
            .collect()
    }

    /// Each step's projected inputs for [`run_projected`](Self::run_projected), looked up
    /// in the projected embedding table (see [`SeqInput::Tokens`]; `seq >= 1`).
    fn projected_tokens(
        layers: &[&Self],
        embedding: Tensor<B, 2>,
        tokens: Tensor<B, 2, Int>,
        lengths: &[usize],
    ) -> Vec<Tensor<B, 2>> {
        let [batch, seq] = tokens.dims();
        let dirs = layers.len();
        let device = tokens.device();
        let vocab = embedding.dims()[0];
        let gates = layers[0].cell.gates() * layers[0].d_hidden;
        // [vocab, dirs * gates] read as [vocab * dirs, gates]: row `id * dirs + d` is token
        // `id` projected by direction `d`.
        let weight = Tensor::cat(layers.iter().map(|l| l.weight_ih.val()).collect(), 1);
        let bias = Tensor::cat(layers.iter().map(|l| l.bias_ih.val()).collect(), 0);
        let table = (embedding.matmul(weight) + bias.unsqueeze()).reshape([vocab * dirs, gates]);
        // Position of every (t, d, b) input row in the flattened tokens, and its direction.
        let rows = input_rows(lengths, seq, dirs);
        let positions: Vec<usize> = (0..seq)
            .flat_map(|t| {
                rows.iter()
                    .flat_map(move |r| &r[t * batch..(t + 1) * batch])
            })
            .copied()
            .collect();
        let direction: Vec<usize> = (0..seq * dirs)
            .flat_map(|i| std::iter::repeat_n(i % dirs, batch))
            .collect();
        let ids = tokens
            .reshape([batch * seq])
            .select(0, s2s_tensor::ops::index_tensor::<B>(&positions, &device))
            .mul_scalar(dirs as i64)
            + s2s_tensor::ops::index_tensor::<B>(&direction, &device);
        // Each step looks its rows up on its own: the gradient of a lookup is added into a
        // table-sized tensor, where slicing the steps out of one lookup of every position
        // would write full-size zero tensors in the backward pass (see `ops::split_steps`).
        let rows = dirs * batch;
        (0..seq)
            .map(|t| {
                table
                    .clone()
                    .select(0, ids.clone().narrow(0, t * rows, rows))
            })
            .collect()
    }

    /// The result for sequences of length 0: no outputs, zero final states.
    fn empty_output(layers: &[&Self], batch: usize, device: &B::Device) -> DirectionsOutput<B> {
        let (cell, d_hidden) = (layers[0].cell, layers[0].d_hidden);
        let zero = || RnnState::zeros(cell, batch, d_hidden, device);
        DirectionsOutput {
            outputs: Tensor::zeros([batch, 0, layers.len() * d_hidden], device),
            forward: zero(),
            backward: (layers.len() > 1).then(zero),
        }
    }

    /// The layers of both directions, after checking that they match each other and the batch.
    fn directions<'a>(
        forward: &'a Self,
        backward: Option<&'a Self>,
        batch: usize,
        seq: usize,
        lengths: &[usize],
    ) -> Vec<&'a Self> {
        assert_eq!(batch, lengths.len(), "one length per row");
        assert!(
            lengths.iter().all(|&l| l <= seq),
            "a length exceeds the sequence"
        );
        let layers: Vec<&Self> = std::iter::once(forward).chain(backward).collect();
        assert!(
            layers
                .iter()
                .all(|l| l.cell == forward.cell && l.d_hidden == forward.d_hidden),
            "both directions need the same cell and size"
        );
        layers
    }

    /// The recurrence of [`seq`](Self::seq) over projected inputs, through
    /// [`StepWeights::step_projected`] on both directions' stacked recurrent weights.
    ///
    /// Time-major throughout, with the directions side by side in one `dirs * batch` row
    /// block per step: every per-step tensor is then a contiguous 2-D `[dirs * batch, _]`
    /// block, which backends without fast strided 3-D kernels (burn-flex) need.
    ///
    /// # Shapes
    /// - `steps`: `seq` tensors `[dirs * batch, gates * d_hidden]`, rows in the order of
    ///   [`input_rows`] (direction-major within a step); `seq >= 1`
    fn run_projected(
        layers: &[&Self],
        steps: Vec<Tensor<B, 2>>,
        lengths: &[usize],
    ) -> DirectionsOutput<B> {
        let seq = steps.len();
        let rows = steps[0].dims()[0];
        let (cell, d_hidden) = (layers[0].cell, layers[0].d_hidden);
        let dirs = layers.len();
        let batch = lengths.len();
        let device = steps[0].device();
        // Each direction's recurrent weight and bias over its block of rows; in training, the
        // weights' gradients are made once for all steps (see `StepProduct`).
        let weights = StepWeights {
            cell,
            input: None,
            recurrent: Product::PerSequence(StepProduct::new(
                Tensor::stack(layers.iter().map(|l| l.weight_hh.val()).collect(), 0),
                Tensor::stack(layers.iter().map(|l| l.bias_hh.val()).collect(), 0),
            )),
        };
        let mut state = RnnState::zeros(cell, rows, d_hidden, &device);
        // Index 0 holds the initial (zero) state, index t + 1 the state after step t.
        let mut hs = vec![state.h.clone()];
        let mut cs: Vec<Tensor<B, 2>> = state.c.iter().cloned().collect();
        for p in steps {
            state = weights.step_projected(p, state);
            hs.push(state.h.clone());
            cs.extend(state.c.iter().cloned());
        }
        // All states as rows: state index t, direction d, row b is row `(t * dirs + d) *
        // batch + b`.
        let state_row = |t: usize, d: usize, b: usize| (t * dirs + d) * batch + b;
        let all = |states: Vec<Tensor<B, 2>>| {
            let n = states.len();
            Tensor::stack::<3>(states, 0).reshape([n * rows, d_hidden])
        };
        // Final states: row b of direction d is at state index `index(lengths[b])` of
        // `states`.
        let pick = |states: Tensor<B, 2>, index: &dyn Fn(usize) -> usize| -> Vec<Tensor<B, 2>> {
            let rows: Vec<usize> = (0..dirs)
                .flat_map(|d| {
                    lengths
                        .iter()
                        .enumerate()
                        .map(move |(b, &len)| state_row(index(len), d, b))
                })
                .collect();
            s2s_tensor::ops::gather_rows(states, &rows).chunk(dirs, 0)
        };
        let hs_all = all(hs);
        let final_h = pick(hs_all.clone(), &|len| len);
        // The cell states (LSTM) serve only the final states: only those that some row ends
        // at are stacked (a length-bucketed batch has few lengths), not every step's, whose
        // copies and, in training, zero gradients took about a tenth of this function's
        // time in a profile. Row b of direction d is at slot `ends.index(lengths[b])`.
        let final_c: Vec<Option<Tensor<B, 2>>> = if cs.is_empty() {
            vec![None; dirs]
        } else {
            let mut ends = lengths.to_vec();
            ends.sort_unstable();
            ends.dedup();
            let slot = |len: usize| ends.binary_search(&len).expect("a row's length");
            let ended = match ends.as_slice() {
                [len] => cs[*len].clone(),
                _ => all(ends.iter().map(|&len| cs[len].clone()).collect()),
            };
            pick(ended, &slot).into_iter().map(Some).collect()
        };
        let mut states = final_h
            .into_iter()
            .zip(final_c)
            .map(|(h, c)| RnnState { h, c });
        // Output (b, t) of the forward direction is the state after step t; of the backward
        // direction the state after its step `len - 1 - t` (it read row b reversed). Padded
        // positions read the zero initial state, so they are exactly zero.
        let out_rows: Vec<usize> = lengths
            .iter()
            .enumerate()
            .flat_map(|(b, &len)| {
                (0..seq).flat_map(move |t| {
                    (0..dirs).map(move |d| match (t < len, d) {
                        (false, _) => state_row(0, d, b),
                        (true, 0) => state_row(t + 1, 0, b),
                        (true, _) => state_row(len - t, d, b),
                    })
                })
            })
            .collect();
        let outputs =
            s2s_tensor::ops::gather_rows(hs_all, &out_rows).reshape([batch, seq, dirs * d_hidden]);
        DirectionsOutput {
            outputs,
            forward: states.next().expect("forward state"),
            backward: states.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s2s_tensor::ops;

    /// The layer run over a sequence through [`RnnLayer::step`], one row at a time as a
    /// direction reads it, with the padding masked out: a padded position (mask 0) leaves the
    /// state unchanged and gets a zero output. The oracle for [`RnnLayer::seq`].
    ///
    /// # Shapes
    /// - `input`: `[batch, seq, d_input]`; `valid`: `[batch, seq]` of 1.0 / 0.0
    /// - returns the outputs `[batch, seq, d_hidden]` and the final state
    fn masked_steps<B: S2sBackend>(
        layer: &RnnLayer<B>,
        input: Tensor<B, 3>,
        valid: Tensor<B, 2>,
        reverse: bool,
    ) -> (Tensor<B, 3>, RnnState<B>) {
        let [batch, seq, _] = input.dims();
        let mut state = RnnState::zeros(layer.cell, batch, layer.d_hidden, &input.device());
        let mut outputs: Vec<Option<Tensor<B, 2>>> = vec![None; seq];
        let order: Vec<usize> = if reverse {
            (0..seq).rev().collect()
        } else {
            (0..seq).collect()
        };
        for t in order {
            let x = input.clone().narrow(1, t, 1).squeeze_dim(1);
            let keep = valid.clone().narrow(1, t, 1);
            let old = keep.clone().neg().add_scalar(1.0);
            let new = layer.step(x, state.clone());
            outputs[t] = Some(new.h.clone() * keep.clone());
            let mix = |n: Tensor<B, 2>, o: Tensor<B, 2>| n * keep.clone() + o * old.clone();
            state = RnnState {
                h: mix(new.h, state.h),
                c: new.c.zip(state.c).map(|(n, o)| mix(n, o)),
            };
        }
        let outputs = outputs
            .into_iter()
            .map(|o| o.expect("every step ran"))
            .collect();
        (Tensor::stack(outputs, 1), state)
    }

    s2s_tensor::for_each_backend! {
        type TB = TestBackend;

        fn layer(cell: CellKind) -> RnnLayer<TB> {
            let device = device();
            s2s_tensor::backend::seeded::<TB, _>(&device, 7, || {
                RnnLayerConfig::new(3, 4).with_cell(cell).init(&device)
            })
        }

        /// The GRU equations worked out by hand with scalar weights: with every weight `w` and
        /// bias 0, input x and state h, r = z = sigmoid(3wx + 4wh), n = tanh(3wx + r*4wh).
        #[test]
        fn gru_matches_hand_computation() {
            let device = device();
            let mut l = layer(CellKind::Gru);
            let w = 0.1f32;
            l.weight_ih = Param::from_tensor(Tensor::full([3, 12], w, &device));
            l.weight_hh = Param::from_tensor(Tensor::full([4, 12], w, &device));
            l.bias_ih = Param::from_tensor(Tensor::zeros([12], &device));
            l.bias_hh = Param::from_tensor(Tensor::zeros([12], &device));
            let x = Tensor::<TB, 2>::full([1, 3], 0.5, &device);
            let h0 = RnnState {
                h: Tensor::full([1, 4], 0.2, &device),
                c: None,
            };
            let h1 = ops::to_vec_f32(l.step(x, h0).h);
            let (xs, hs) = (3.0 * w * 0.5, 4.0 * w * 0.2);
            let r = 1.0 / (1.0 + (-(xs + hs)).exp());
            let n = (xs + r * hs).tanh();
            let expected = (1.0 - r) * n + r * 0.2;
            for v in h1 {
                assert!((v - expected).abs() < 1e-6, "{v} vs {expected}");
            }
        }

        proptest::proptest! {
            #![proptest_config(proptest::prelude::ProptestConfig::with_cases(cases(12)))]
            /// Both directions run together from lengths equal the per-direction masked
            /// passes through `step`: outputs, final states (zero for empty rows) and zero
            /// padding.
            #[test]
            fn seq_equals_masked_steps(
                lengths in proptest::collection::vec(0usize..5, 1..4),
                lstm in proptest::bool::ANY,
                bidirectional in proptest::bool::ANY,
                seed in 0u64..1000,
            ) {
                let cell = if lstm { CellKind::Lstm } else { CellKind::Gru };
                let device = device();
                let seq = lengths.iter().copied().max().unwrap_or(0) + 1;
                let (fwd, bwd, x) = s2s_tensor::backend::seeded::<TB, _>(&device, seed, || {
                    let config = RnnLayerConfig::new(3, 4).with_cell(cell);
                    (
                        config.init::<TB>(&device),
                        config.init::<TB>(&device),
                        Tensor::<TB, 3>::random(
                            [lengths.len(), seq, 3],
                            burn::tensor::Distribution::Normal(0.0, 1.0),
                            &device,
                        ),
                    )
                });
                let bwd = bidirectional.then_some(&bwd);
                let got = RnnLayer::seq(&fwd, bwd, SeqInput::Features(x.clone()), &lengths);
                let mask = ops::length_mask_float::<TB>(&lengths, seq, &device);
                let (out_f, state_f) = masked_steps(&fwd, x.clone(), mask.clone(), false);
                let mut outs = vec![out_f];
                let mut finals = vec![(state_f, got.forward)];
                if let Some(b) = bwd {
                    let (out_b, state_b) = masked_steps(b, x, mask, true);
                    outs.push(out_b);
                    finals.push((state_b, got.backward.expect("backward state")));
                }
                let close = |a: Vec<f32>, b: Vec<f32>| {
                    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5)
                };
                proptest::prop_assert!(close(
                    ops::to_vec_f32(got.outputs),
                    ops::to_vec_f32(Tensor::cat(outs, 2))
                ));
                for (want, have) in finals {
                    proptest::prop_assert!(close(ops::to_vec_f32(have.h), ops::to_vec_f32(want.h)));
                    proptest::prop_assert_eq!(want.c.is_some(), have.c.is_some());
                    if let (Some(w), Some(h)) = (want.c, have.c) {
                        proptest::prop_assert!(close(ops::to_vec_f32(h), ops::to_vec_f32(w)));
                    }
                }
            }
        }

        proptest::proptest! {
            #![proptest_config(proptest::prelude::ProptestConfig::with_cases(cases(8)))]
            /// Looking the projected embeddings up gives what projecting the looked-up
            /// embeddings gives: outputs, final states, and the gradients of the embedding
            /// table and of every weight of both directions.
            #[test]
            fn embedded_lookup_equals_projected_embeddings(
                lengths in proptest::collection::vec(0usize..5, 1..4),
                lstm in proptest::bool::ANY,
                bidirectional in proptest::bool::ANY,
                seed in 0u64..1000,
            ) {
                type AB = TestAutodiffBackend;
                let cell = if lstm { CellKind::Lstm } else { CellKind::Gru };
                let device = device();
                let (vocab, seq) = (6, lengths.iter().copied().max().unwrap_or(0) + 1);
                let (fwd, bwd, table, ids, probe) =
                    s2s_tensor::backend::seeded::<AB, _>(&device, seed, || {
                        let config = RnnLayerConfig::new(3, 4).with_cell(cell);
                        let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
                        let dirs = if bidirectional { 2 } else { 1 };
                        (
                            config.init::<AB>(&device),
                            config.init::<AB>(&device),
                            Tensor::<AB, 2>::random([vocab, 3], normal, &device),
                            Tensor::<AB, 2, Int>::random(
                                [lengths.len(), seq],
                                burn::tensor::Distribution::Uniform(0.0, vocab as f64),
                                &device,
                            ),
                            Tensor::<AB, 3>::random([lengths.len(), seq, dirs * 4], normal, &device),
                        )
                    });
                let bwd = bidirectional.then_some(&bwd);
                // Every value that the two paths compute, and their gradients.
                let run = |embedded: bool| {
                    let table = table.clone().require_grad();
                    let input = if embedded {
                        SeqInput::Tokens { embedding: table.clone(), tokens: ids.clone() }
                    } else {
                        let [batch, seq] = ids.dims();
                        let x = table.clone().select(0, ids.clone().reshape([batch * seq]));
                        SeqInput::Features(x.reshape([batch, seq, 3]))
                    };
                    let out = RnnLayer::seq(&fwd, bwd, input, &lengths);
                    let mut states = vec![out.forward.clone()];
                    states.extend(out.backward.clone());
                    let mut loss = (out.outputs.clone() * probe.clone()).sum();
                    let mut values = ops::to_vec_f32(out.outputs.inner());
                    for s in states {
                        loss = loss + s.h.clone().sum();
                        values.extend(ops::to_vec_f32(s.h.inner()));
                        if let Some(c) = s.c {
                            loss = loss + c.clone().mul_scalar(0.5).sum();
                            values.extend(ops::to_vec_f32(c.inner()));
                        }
                    }
                    let grads = loss.backward();
                    let grad = |t: Option<Tensor<TB, 2>>| ops::to_vec_f32(t.expect("a gradient"));
                    let mut all = vec![values, grad(table.grad(&grads))];
                    for layer in std::iter::once(&fwd).chain(bwd) {
                        all.push(grad(layer.weight_ih.grad(&grads)));
                        all.push(grad(layer.weight_hh.grad(&grads)));
                        all.push(grad(layer.bias_ih.grad(&grads).map(|b| b.unsqueeze())));
                        all.push(grad(layer.bias_hh.grad(&grads).map(|b| b.unsqueeze())));
                    }
                    all
                };
                let (want, have) = (run(false), run(true));
                for (i, (w, h)) in want.iter().zip(&have).enumerate() {
                    proptest::prop_assert_eq!(w.len(), h.len());
                    for (x, y) in w.iter().zip(h) {
                        proptest::prop_assert!(
                            (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                            "part {} (0: values, 1: table gradient, then weights): {} vs {}", i, x, y
                        );
                    }
                }
            }
        }

        /// A row padded to a longer batch gets the final states and outputs it gets alone,
        /// and zero outputs at its padding, in both directions.
        #[test]
        fn padding_never_changes_state() {
            for cell in [CellKind::Gru, CellKind::Lstm] {
                let device = device();
                let (fwd, bwd) = (layer(cell), layer(cell));
                let x = s2s_tensor::backend::seeded::<TB, _>(&device, 3, || {
                    Tensor::<TB, 3>::random(
                        [1, 5, 3],
                        burn::tensor::Distribution::Normal(0.0, 1.0),
                        &device,
                    )
                });
                let run = |x: Tensor<TB, 3>| {
                    RnnLayer::seq(&fwd, Some(&bwd), SeqInput::Features(x), &[2])
                };
                let alone = run(x.clone().slice([0..1, 0..2]));
                let padded = run(x);
                let states = |o: &DirectionsOutput<TB>| {
                    let backward = o.backward.clone().expect("backward state");
                    let mut v = ops::to_vec_f32(o.forward.h.clone());
                    v.extend(ops::to_vec_f32(backward.h));
                    v.extend(o.forward.c.clone().map(ops::to_vec_f32).unwrap_or_default());
                    v.extend(backward.c.map(ops::to_vec_f32).unwrap_or_default());
                    v
                };
                let close = |a: Vec<f32>, b: Vec<f32>| {
                    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6)
                };
                assert!(close(states(&alone), states(&padded)), "{cell:?} final states");
                assert!(
                    close(
                        ops::to_vec_f32(alone.outputs),
                        ops::to_vec_f32(padded.outputs.clone().slice([0..1, 0..2]))
                    ),
                    "{cell:?} outputs"
                );
                let out_pad = ops::to_vec_f32(padded.outputs.slice([0..1, 2..5]));
                assert!(out_pad.iter().all(|&v| v == 0.0), "{cell:?} padding");
            }
        }
    }
}
