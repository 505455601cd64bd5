//! The GRU and LSTM cell updates and the additive attention weights, as the model calls
//! them: each runs its backend's [`S2sBackend`] version, which on `Autodiff<B>` is one node
//! of Burn's autodiff graph with a hand-written gradient ([`crate::autodiff`]), on
//! [`Flex`](crate::backend::Flex) one pass of `s2s_kernels` per row, on
//! [`Tch`](crate::backend::Tch) a few direct libtorch calls, and elsewhere Burn's tensor
//! operations ([`crate::reference`]).
//!
//! The `*_composed` functions run the reference maths on any backend, autodiff included, as
//! Burn's own operations (one autodiff node per operation): the tests compare every
//! backend's version, values and gradients, with them.
//!
//! Shapes as in [`crate::s2s_backend`].

use crate::reference;
use crate::s2s_backend::S2sBackend;
use burn::tensor::{Bool, Tensor};

/// The GRU update (PyTorch's equations, the reset gate applied after the recurrent matmul):
/// `r, z = sigmoid(x_rz + h_rz)`, `n = tanh(x_n + r * h_n)`, `h' = (1 - z) * n + z * h`.
pub fn gru_cell<B: S2sBackend>(
    projected: Tensor<B, 2>,
    recurrent: Tensor<B, 2>,
    h: Tensor<B, 2>,
) -> Tensor<B, 2> {
    B::gru_cell(projected, recurrent, h)
}

/// The LSTM update: `i, f, o = sigmoid(..)`, `g = tanh(..)`, `c' = f * c + i * g`,
/// `h' = o * tanh(c')`; returns `(h', c')`.
pub fn lstm_cell<B: S2sBackend>(
    projected: Tensor<B, 2>,
    recurrent: Tensor<B, 2>,
    c: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    B::lstm_cell(projected, recurrent, c)
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
pub fn additive_attention<B: S2sBackend>(
    keys: Tensor<B, 2>,
    q: Tensor<B, 2>,
    v: Tensor<B, 2>,
    valid: Tensor<B, 2, Bool>,
) -> Tensor<B, 2> {
    B::additive_attention(keys, q, v, valid)
}

/// Whether [`gru_cell`], [`lstm_cell`] and [`additive_attention`] record one node with a
/// hand-written gradient for backend `B` (`Autodiff<B>`), rather than Burn's operations.
pub fn fuses<B: S2sBackend>() -> bool {
    B::ONE_NODE_GRADIENTS
}

/// [`gru_cell`] written with Burn's tensor operations, for any backend.
pub fn gru_cell_composed<B: S2sBackend>(
    projected: Tensor<B, 2>,
    recurrent: Tensor<B, 2>,
    h: Tensor<B, 2>,
) -> Tensor<B, 2> {
    reference::gru_forward(projected, recurrent, h).h
}

/// [`lstm_cell`] written with Burn's tensor operations, for any backend.
pub fn lstm_cell_composed<B: S2sBackend>(
    projected: Tensor<B, 2>,
    recurrent: Tensor<B, 2>,
    c: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let out = reference::lstm_forward(projected, recurrent, c);
    (out.h, out.c)
}

/// [`additive_attention`] written with Burn's tensor operations, for any backend.
pub fn additive_attention_composed<B: S2sBackend>(
    keys: Tensor<B, 2>,
    q: Tensor<B, 2>,
    v: Tensor<B, 2>,
    valid: Tensor<B, 2, Bool>,
) -> Tensor<B, 2> {
    reference::attention_forward(keys, q, v, valid).weights
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::to_vec_f32;
    use burn::tensor::backend::AutodiffBackend;
    use burn::tensor::TensorData;

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
