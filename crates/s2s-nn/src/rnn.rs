//! Fused LSTM and GRU layers.
//!
//! The weights are stored as two matrices over the concatenated gates, as in PyTorch
//! (`weight_ih` / `weight_hh`, gate order `i f g o` for LSTM and `r z n` for GRU, stored
//! transposed here so that `x.matmul(w)` applies them). A sequence costs one matmul for the
//! input projection of all time steps plus one matmul per step for the recurrent part,
//! instead of one small matmul per gate and step.

use burn::config::Config;
use burn::module::{Initializer, Module, Param};
use burn::tensor::activation::sigmoid;
use burn::tensor::{backend::Backend, Tensor};
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

    /// Keeps the new state where `keep_new` is 1 and the old one where it is 0.
    /// `keep_new` and `keep_old` are `[batch, 1]` masks of 0/1 that sum to one; the selection
    /// is exact (`x * 1 + y * 0 == x`).
    fn select(new: Self, old: Self, keep_new: &Tensor<B, 2>, keep_old: &Tensor<B, 2>) -> Self {
        let mix = |n: Tensor<B, 2>, o: Tensor<B, 2>| n * keep_new.clone() + o * keep_old.clone();
        RnnState {
            h: mix(new.h, old.h),
            c: match (new.c, old.c) {
                (Some(n), Some(o)) => Some(mix(n, o)),
                _ => None,
            },
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

impl<B: Backend> RnnLayer<B> {
    /// Applies the input weights and bias to every time step at once.
    ///
    /// # Shapes
    /// - `input`: `[batch, seq, d_input]`
    /// - returns `[batch, seq, gates * d_hidden]`
    pub fn project_input(&self, input: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d] = input.dims();
        let g = self.weight_ih.dims()[1];
        (input.reshape([b * t, d]).matmul(self.weight_ih.val()) + self.bias_ih.val().unsqueeze())
            .reshape([b, t, g])
    }

    /// One time step from an input that was already projected by
    /// [`project_input`](Self::project_input) (or an equivalent sum of projections).
    ///
    /// # Shapes
    /// - `projected`: `[batch, gates * d_hidden]`
    /// - `state`: `[batch, d_hidden]` each
    pub fn step_projected(&self, projected: Tensor<B, 2>, state: RnnState<B>) -> RnnState<B> {
        let recurrent =
            state.h.clone().matmul(self.weight_hh.val()) + self.bias_hh.val().unsqueeze();
        match self.cell {
            CellKind::Lstm => {
                let gates = projected + recurrent;
                let mut parts = gates.chunk(4, 1).into_iter();
                let (i, f, g, o) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                );
                let c_prev = state.c.expect("LSTM state has a cell");
                let c = sigmoid(f) * c_prev + sigmoid(i) * g.tanh();
                let h = sigmoid(o) * c.clone().tanh();
                RnnState { h, c: Some(c) }
            }
            CellKind::Gru => {
                let mut x = projected.chunk(3, 1).into_iter();
                let mut r = recurrent.chunk(3, 1).into_iter();
                let (xr, xz, xn) = (x.next().unwrap(), x.next().unwrap(), x.next().unwrap());
                let (hr, hz, hn) = (r.next().unwrap(), r.next().unwrap(), r.next().unwrap());
                let reset = sigmoid(xr + hr);
                let update = sigmoid(xz + hz);
                let candidate = (xn + reset * hn).tanh();
                // h' = (1 - z) * n + z * h
                let h = candidate.clone() + update * (state.h - candidate);
                RnnState { h, c: None }
            }
        }
    }

    /// One time step from a raw input `[batch, d_input]`.
    pub fn step(&self, input: Tensor<B, 2>, state: RnnState<B>) -> RnnState<B> {
        let projected = input.matmul(self.weight_ih.val()) + self.bias_ih.val().unsqueeze();
        self.step_projected(projected, state)
    }

    /// Runs the layer over a sequence.
    ///
    /// With `valid` given, a padded position (mask 0) leaves the state unchanged and gets a
    /// zero output, so the final state of each row is its state after its true last token and
    /// a `reverse` pass starts at the true last token.
    ///
    /// # Shapes
    /// - `input`: `[batch, seq, d_input]`
    /// - `valid`: `[batch, seq]` of 1.0 (token) / 0.0 (padding)
    /// - returns the outputs `[batch, seq, d_hidden]` and the final state `[batch, d_hidden]`
    pub fn forward(
        &self,
        input: Tensor<B, 3>,
        valid: Option<Tensor<B, 2>>,
        reverse: bool,
        initial: Option<RnnState<B>>,
    ) -> (Tensor<B, 3>, RnnState<B>) {
        let [batch, seq, _] = input.dims();
        let device = input.device();
        let projected = self.project_input(input);
        let mut state =
            initial.unwrap_or_else(|| RnnState::zeros(self.cell, batch, self.d_hidden, &device));
        if seq == 0 {
            return (Tensor::zeros([batch, 0, self.d_hidden], &device), state);
        }
        let steps: Vec<Tensor<B, 2>> = projected
            .chunk(seq, 1)
            .into_iter()
            .map(|t| t.squeeze_dim(1))
            .collect();
        let masks: Option<Vec<(Tensor<B, 2>, Tensor<B, 2>)>> = valid.map(|v| {
            let inv = v.clone().neg().add_scalar(1.0);
            v.chunk(seq, 1).into_iter().zip(inv.chunk(seq, 1)).collect()
        });
        let mut outputs: Vec<Option<Tensor<B, 2>>> = (0..seq).map(|_| None).collect();
        let order: Box<dyn Iterator<Item = usize>> = if reverse {
            Box::new((0..seq).rev())
        } else {
            Box::new(0..seq)
        };
        for t in order {
            let new = self.step_projected(steps[t].clone(), state.clone());
            match &masks {
                Some(m) => {
                    let (keep, old) = &m[t];
                    outputs[t] = Some(new.h.clone() * keep.clone());
                    state = RnnState::select(new, state, keep, old);
                }
                None => {
                    outputs[t] = Some(new.h.clone());
                    state = new;
                }
            }
        }
        let outputs: Vec<Tensor<B, 2>> = outputs
            .into_iter()
            .map(|o| o.expect("every step ran"))
            .collect();
        (Tensor::stack(outputs, 1), state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use s2s_tensor::ops;

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

        #[test]
        fn padding_never_changes_state() {
            for cell in [CellKind::Gru, CellKind::Lstm] {
                for reverse in [false, true] {
                    let device = device();
                    let l = layer(cell);
                    let x = s2s_tensor::backend::seeded::<TB, _>(&device, 3, || {
                        Tensor::<TB, 3>::random(
                            [1, 5, 3],
                            burn::tensor::Distribution::Normal(0.0, 1.0),
                            &device,
                        )
                    });
                    let alone = l.forward(x.clone().slice([0..1, 0..2]), None, reverse, None);
                    let mask = ops::length_mask_float::<TB>(&[2], 5, &device);
                    let padded = l.forward(x, Some(mask), reverse, None);
                    let a = ops::to_vec_f32(alone.1.h);
                    let b = ops::to_vec_f32(padded.1.h);
                    for (x, y) in a.iter().zip(&b) {
                        assert!(
                            (x - y).abs() < 1e-6,
                            "{cell:?} reverse={reverse}: {a:?} vs {b:?}"
                        );
                    }
                    let out_pad = ops::to_vec_f32(padded.0.slice([0..1, 2..5]));
                    assert!(out_pad.iter().all(|&v| v == 0.0));
                }
            }
        }
    }
}
