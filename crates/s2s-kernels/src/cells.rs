//! The element-wise part of a GRU or LSTM step and of its gradient, one pass over each row.
//!
//! Written with tensor operations, a GRU step's element-wise part is eight kernels (adds,
//! products, `sigmoid`, `tanh`), each with an output of its own, and its gradient a dozen
//! more plus the concatenations of the gate blocks; on a CPU backend each is a loop over
//! memory that the next one reads again. Here each is one loop per row, over values that
//! stay in the cache, writing every result once.
//!
//! The equations, gate layout and saved values are those of `s2s_tensor::fused`, which
//! calls these on burn-flex: gate order `r z n` (GRU) and `i f g o` (LSTM), as in PyTorch.

use crate::{sigmoid_slice, tanh_slice};

/// The rows of a row-major matrix inside a slice: row `i` is
/// `values[i * stride..i * stride + cols]` (a narrowed view of a wider matrix has a stride
/// above its width).
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    values: &'a [f32],
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<'a> Rows<'a> {
    /// `rows` rows of `cols` values, `stride` apart; `None` when `values` is too short or
    /// the stride below the width.
    pub fn new(values: &'a [f32], rows: usize, cols: usize, stride: usize) -> Option<Self> {
        let needed = match rows {
            0 => 0,
            _ => (rows - 1) * stride + cols,
        };
        (stride >= cols && values.len() >= needed).then_some(Self {
            values,
            rows,
            cols,
            stride,
        })
    }

    /// A contiguous `[rows, cols]` matrix.
    pub fn contiguous(values: &'a [f32], cols: usize) -> Option<Self> {
        match cols {
            0 => None,
            _ if !values.len().is_multiple_of(cols) => None,
            _ => Self::new(values, values.len() / cols, cols, cols),
        }
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The width of a row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.values[i * self.stride..i * self.stride + self.cols]
    }
}

/// The GRU step's results, `[rows, _]` each, contiguous.
#[derive(Clone, Debug, PartialEq)]
pub struct GruStep {
    /// `h' = (1 - z) n + z h`, `[rows, d]`.
    pub h: Vec<f32>,
    /// `sigmoid` of the reset and update gates, `[rows, 2 d]`.
    pub rz: Vec<f32>,
    /// The candidate `n = tanh(x_n + r h_n)`, `[rows, d]`.
    pub n: Vec<f32>,
    /// `h - n`, `[rows, d]`.
    pub diff: Vec<f32>,
}

/// One GRU step from the gate pre-activations of the input (`p`, biases included) and of the
/// state (`r`), `[rows, 3 d]` each, and the state `h`, `[rows, d]`.
///
/// # Panics
/// When the shapes disagree.
pub fn gru_step(p: Rows, r: Rows, h: Rows) -> GruStep {
    crate::vectorized(
        #[inline(always)]
        || {
            let (rows, d) = (h.rows(), h.cols());
            assert_gates("gru_step", [p, r], rows, 3 * d);
            let mut out = GruStep {
                h: vec![0.0; rows * d],
                rz: vec![0.0; rows * 2 * d],
                n: vec![0.0; rows * d],
                diff: vec![0.0; rows * d],
            };
            for b in 0..rows {
                let row = b * d..(b + 1) * d;
                gru_row(
                    [p.row(b), r.row(b), h.row(b)],
                    &mut out.rz[2 * b * d..2 * (b + 1) * d],
                    &mut out.n[row.clone()],
                    &mut out.diff[row.clone()],
                    &mut out.h[row],
                );
            }
            out
        },
    )
}

/// [`gru_step`]'s new state `h'` alone, `[rows, d]`, for decoding: the values that the
/// gradient reads are kept for one row at a time.
///
/// # Panics
/// When the shapes disagree.
pub fn gru_state(p: Rows, r: Rows, h: Rows) -> Vec<f32> {
    crate::vectorized(
        #[inline(always)]
        || {
            let (rows, d) = (h.rows(), h.cols());
            assert_gates("gru_state", [p, r], rows, 3 * d);
            let mut out = vec![0.0; rows * d];
            let mut scratch = vec![0.0; 4 * d];
            let (rz, rest) = scratch.split_at_mut(2 * d);
            let (n, diff) = rest.split_at_mut(d);
            for (b, h_out) in out.chunks_mut(d.max(1)).enumerate() {
                gru_row([p.row(b), r.row(b), h.row(b)], rz, n, diff, h_out);
            }
            out
        },
    )
}

/// One row of a GRU step: the gates `rz` (`2 d`), the candidate `n`, `h - n` and `h'` from
/// the row's pre-activations and state `[p, r, h]`.
#[inline(always)]
fn gru_row(
    [p, r, h]: [&[f32]; 3],
    rz: &mut [f32],
    n: &mut [f32],
    diff: &mut [f32],
    h_out: &mut [f32],
) {
    let d = h.len();
    for ((o, x), y) in rz.iter_mut().zip(&p[..2 * d]).zip(&r[..2 * d]) {
        *o = x + y;
    }
    sigmoid_slice(rz);
    let (reset, update) = rz.split_at(d);
    for (((o, x), y), g) in n.iter_mut().zip(&p[2 * d..]).zip(&r[2 * d..]).zip(reset) {
        *o = x + g * y;
    }
    tanh_slice(n);
    let rows_out = h_out.iter_mut().zip(diff.iter_mut());
    for ((((o, diff), n), h), z) in rows_out.zip(&*n).zip(h).zip(update) {
        *diff = h - n;
        *o = n + z * *diff;
    }
}

/// The gradients of a GRU step.
#[derive(Clone, Debug, PartialEq)]
pub struct GruGrads {
    /// Of the input's pre-activations, `[rows, 3 d]`.
    pub p: Vec<f32>,
    /// Of the state's pre-activations, `[rows, 3 d]` (the `n` block scaled by the reset gate).
    pub r: Vec<f32>,
    /// Of the state `h`, `[rows, d]`.
    pub h: Vec<f32>,
}

/// The gradient of [`gru_step`] for the output gradient `grad` (`[rows, d]`), from the
/// state's `n` block of pre-activations `r_n` (`[rows, d]`) and the step's saved values.
///
/// # Panics
/// When the shapes disagree.
pub fn gru_step_backward(grad: Rows, r_n: Rows, rz: Rows, n: Rows, diff: Rows) -> GruGrads {
    crate::vectorized(
        #[inline(always)]
        || {
            let (rows, d) = (grad.rows(), grad.cols());
            assert_gates("gru_step_backward", [r_n, n], rows, d);
            assert_gates("gru_step_backward", [diff, grad], rows, d);
            assert_gates("gru_step_backward", [rz, rz], rows, 2 * d);
            let mut out = GruGrads {
                p: vec![0.0; rows * 3 * d],
                r: vec![0.0; rows * 3 * d],
                h: vec![0.0; rows * d],
            };
            for b in 0..rows {
                let (g, r_n, rz, n, diff) =
                    (grad.row(b), r_n.row(b), rz.row(b), n.row(b), diff.row(b));
                let (reset, update) = rz.split_at(d);
                let dp = &mut out.p[b * 3 * d..(b + 1) * 3 * d];
                let dr = &mut out.r[b * 3 * d..(b + 1) * 3 * d];
                let dh = &mut out.h[b * d..(b + 1) * d];
                let (dp_rz, dp_n) = dp.split_at_mut(2 * d);
                let (dp_r, dp_z) = dp_rz.split_at_mut(d);
                let (dr_rz, dr_n) = dr.split_at_mut(2 * d);
                for j in 0..d {
                    let (g, z, n) = (g[j], update[j], n[j]);
                    dh[j] = g * z;
                    // Through h' = n + z (h - n) to n, then through tanh.
                    let dn_pre = (g - g * z) * (1.0 - n * n);
                    dp_n[j] = dn_pre;
                    dr_n[j] = dn_pre * reset[j];
                    dp_r[j] = dn_pre * r_n[j] * reset[j] * (1.0 - reset[j]);
                    dp_z[j] = g * diff[j] * z * (1.0 - z);
                }
                dr_rz.copy_from_slice(dp_rz);
            }
            out
        },
    )
}

/// The LSTM step's results, `[rows, _]` each, contiguous.
#[derive(Clone, Debug, PartialEq)]
pub struct LstmStep {
    /// `h'`, `[rows, d]`.
    pub h: Vec<f32>,
    /// `c'`, `[rows, d]`.
    pub c: Vec<f32>,
    /// The gates after one `sigmoid`, `[rows, 4 d]`: `i f` and `o` as they are, the `g` block
    /// as `sigmoid(2 g) = (tanh(g) + 1) / 2`.
    pub act: Vec<f32>,
    /// `tanh(c')`, `[rows, d]`.
    pub tanh_c: Vec<f32>,
}

/// One LSTM step from the gate pre-activations of the input (`p`, biases included) and of the
/// state (`r`), `[rows, 4 d]` each, and the cell `c`, `[rows, d]`.
///
/// # Panics
/// When the shapes disagree.
pub fn lstm_step(p: Rows, r: Rows, c: Rows) -> LstmStep {
    crate::vectorized(
        #[inline(always)]
        || {
            let (rows, d) = (c.rows(), c.cols());
            assert_gates("lstm_step", [p, r], rows, 4 * d);
            let mut out = LstmStep {
                h: vec![0.0; rows * d],
                c: vec![0.0; rows * d],
                act: vec![0.0; rows * 4 * d],
                tanh_c: vec![0.0; rows * d],
            };
            for b in 0..rows {
                let row = b * d..(b + 1) * d;
                lstm_row(
                    [p.row(b), r.row(b), c.row(b)],
                    &mut out.act[4 * b * d..4 * (b + 1) * d],
                    &mut out.tanh_c[row.clone()],
                    &mut out.h[row.clone()],
                    &mut out.c[row],
                );
            }
            out
        },
    )
}

/// [`lstm_step`]'s new state alone, `(h', c')`, `[rows, d]` each, for decoding: the values
/// that the gradient reads are kept for one row at a time.
///
/// # Panics
/// When the shapes disagree.
pub fn lstm_state(p: Rows, r: Rows, c: Rows) -> (Vec<f32>, Vec<f32>) {
    crate::vectorized(
        #[inline(always)]
        || {
            let (rows, d) = (c.rows(), c.cols());
            assert_gates("lstm_state", [p, r], rows, 4 * d);
            let (mut h, mut c_new) = (vec![0.0; rows * d], vec![0.0; rows * d]);
            let mut scratch = vec![0.0; 5 * d];
            let (act, tanh_c) = scratch.split_at_mut(4 * d);
            for (b, (h_out, c_out)) in h
                .chunks_mut(d.max(1))
                .zip(c_new.chunks_mut(d.max(1)))
                .enumerate()
            {
                lstm_row([p.row(b), r.row(b), c.row(b)], act, tanh_c, h_out, c_out);
            }
            (h, c_new)
        },
    )
}

/// One row of an LSTM step: the activated gates `act` (`4 d`), `tanh(c')`, `h'` and `c'`
/// from the row's pre-activations and cell `[p, r, c]`.
#[inline(always)]
fn lstm_row(
    [p, r, c]: [&[f32]; 3],
    act: &mut [f32],
    tanh_c: &mut [f32],
    h_out: &mut [f32],
    c_out: &mut [f32],
) {
    let d = c.len();
    for ((o, x), y) in act.iter_mut().zip(p).zip(r) {
        *o = x + y;
    }
    // tanh(g) = 2 sigmoid(2 g) - 1: one sigmoid over all four blocks.
    for v in &mut act[2 * d..3 * d] {
        *v *= 2.0;
    }
    sigmoid_slice(act);
    let (i, rest) = act.split_at(d);
    let (f, rest) = rest.split_at(d);
    let (g, o) = rest.split_at(d);
    for j in 0..d {
        c_out[j] = f[j] * c[j] + i[j] * (2.0 * g[j] - 1.0);
    }
    tanh_c.copy_from_slice(c_out);
    tanh_slice(tanh_c);
    for ((h, o), t) in h_out.iter_mut().zip(o).zip(&*tanh_c) {
        *h = o * t;
    }
}

/// The gradients of an LSTM step.
#[derive(Clone, Debug, PartialEq)]
pub struct LstmGrads {
    /// Of the gate pre-activations, `[rows, 4 d]`: the same for the input's and the state's.
    pub gates: Vec<f32>,
    /// Of the cell `c`, `[rows, d]`.
    pub c: Vec<f32>,
}

/// The gradient of [`lstm_step`] for the output gradient `grad` (`[rows, 2 d]`: `h'` then
/// `c'`), from the step's saved values and the cell `c` before it.
///
/// # Panics
/// When the shapes disagree.
pub fn lstm_step_backward(grad: Rows, act: Rows, c: Rows, tanh_c: Rows) -> LstmGrads {
    crate::vectorized(
        #[inline(always)]
        || {
            let (rows, d) = (c.rows(), c.cols());
            assert_gates("lstm_step_backward", [grad, grad], rows, 2 * d);
            assert_gates("lstm_step_backward", [act, act], rows, 4 * d);
            assert_gates("lstm_step_backward", [tanh_c, tanh_c], rows, d);
            let mut out = LstmGrads {
                gates: vec![0.0; rows * 4 * d],
                c: vec![0.0; rows * d],
            };
            for b in 0..rows {
                let (grad, act, c, tanh_c) = (grad.row(b), act.row(b), c.row(b), tanh_c.row(b));
                let (dh, dc_out) = grad.split_at(d);
                let (i, rest) = act.split_at(d);
                let (f, rest) = rest.split_at(d);
                let (g, o) = rest.split_at(d);
                let gates = &mut out.gates[b * 4 * d..(b + 1) * 4 * d];
                let (di, rest) = gates.split_at_mut(d);
                let (df, rest) = rest.split_at_mut(d);
                let (dg, dout) = rest.split_at_mut(d);
                let dc_prev = &mut out.c[b * d..(b + 1) * d];
                for j in 0..d {
                    let t = tanh_c[j];
                    // The output's c' gradient plus the share that reaches c' through h' = o tanh(c').
                    let dc = dc_out[j] + dh[j] * o[j] * (1.0 - t * t);
                    dc_prev[j] = dc * f[j];
                    // d/d(pre) of sigmoid(pre) is act (1 - act); the g block's pre-activation was
                    // doubled and its value is 2 act - 1, a factor 4 in all.
                    di[j] = dc * (2.0 * g[j] - 1.0) * i[j] * (1.0 - i[j]);
                    df[j] = dc * c[j] * f[j] * (1.0 - f[j]);
                    dg[j] = dc * i[j] * g[j] * (1.0 - g[j]) * 4.0;
                    dout[j] = dh[j] * t * o[j] * (1.0 - o[j]);
                }
            }
            out
        },
    )
}

fn assert_gates(what: &str, gates: [Rows; 2], rows: usize, cols: usize) {
    for m in gates {
        assert!(
            m.rows() == rows && m.cols() == cols,
            "{what}: a [{}, {}] operand where [{rows}, {cols}] was expected",
            m.rows(),
            m.cols()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in about [-3, 3].
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(40_503));
                (x % 6_000) as f32 / 1_000.0 - 3.0
            })
            .collect()
    }

    fn sig(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn close(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (k, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (f64::from(*a) - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{k}: {a} vs {b}"
            );
        }
    }

    /// The GRU step and its gradient against the equations in f64, on a strided `h` (a
    /// narrowed view of a wider matrix).
    #[test]
    fn gru_step_and_gradient_follow_the_equations() {
        let (rows, d) = (3, 5);
        let (p, r, wide, grad) = (
            values(rows * 3 * d, 1),
            values(rows * 3 * d, 2),
            values(rows * 2 * d, 3),
            values(rows * d, 4),
        );
        let h = Rows::new(&wide[d..], rows, d, 2 * d).unwrap();
        let step = gru_step(
            Rows::contiguous(&p, 3 * d).unwrap(),
            Rows::contiguous(&r, 3 * d).unwrap(),
            h,
        );
        let state = gru_state(
            Rows::contiguous(&p, 3 * d).unwrap(),
            Rows::contiguous(&r, 3 * d).unwrap(),
            h,
        );
        assert_eq!(state, step.h, "the state alone is the step's");
        let r_n: Vec<f32> = (0..rows)
            .flat_map(|b| r[b * 3 * d + 2 * d..(b + 1) * 3 * d].to_vec())
            .collect();
        let grads = gru_step_backward(
            Rows::contiguous(&grad, d).unwrap(),
            Rows::contiguous(&r_n, d).unwrap(),
            Rows::contiguous(&step.rz, 2 * d).unwrap(),
            Rows::contiguous(&step.n, d).unwrap(),
            Rows::contiguous(&step.diff, d).unwrap(),
        );
        let mut want = [vec![], vec![], vec![], vec![]];
        let mut want_grads = [vec![0.0; rows * 3 * d], vec![0.0; rows * 3 * d], vec![]];
        for b in 0..rows {
            for j in 0..d {
                let at = |m: &[f32], k: usize| f64::from(m[b * 3 * d + k]);
                let reset = sig(at(&p, j) + at(&r, j));
                let z = sig(at(&p, d + j) + at(&r, d + j));
                let n = (at(&p, 2 * d + j) + reset * at(&r, 2 * d + j)).tanh();
                let h = f64::from(h.row(b)[j]);
                want[0].push((1.0 - z) * n + z * h);
                want[2].push(n);
                want[3].push(h - n);
                let g = f64::from(grad[b * d + j]);
                let dn_pre = g * (1.0 - z) * (1.0 - n * n);
                let dreset = dn_pre * at(&r, 2 * d + j) * reset * (1.0 - reset);
                let dz = g * (h - n) * z * (1.0 - z);
                for (k, v) in [(j, dreset), (d + j, dz), (2 * d + j, dn_pre)] {
                    want_grads[0][b * 3 * d + k] = v;
                    want_grads[1][b * 3 * d + k] = if k == 2 * d + j { dn_pre * reset } else { v };
                }
                want_grads[2].push(g * z);
            }
            for j in 0..2 * d {
                let k = b * 3 * d + j;
                want[1].push(sig(f64::from(p[k]) + f64::from(r[k])));
            }
        }
        for (got, want) in [&step.h, &step.rz, &step.n, &step.diff]
            .into_iter()
            .zip(&want)
        {
            close(got, want);
        }
        for (got, want) in [&grads.p, &grads.r, &grads.h].into_iter().zip(&want_grads) {
            close(got, want);
        }
    }

    /// The LSTM step and its gradient against the equations in f64, on a strided `c`.
    #[test]
    fn lstm_step_and_gradient_follow_the_equations() {
        let (rows, d) = (2, 4);
        let (p, r, wide, grad) = (
            values(rows * 4 * d, 5),
            values(rows * 4 * d, 6),
            values(rows * 2 * d, 7),
            values(rows * 2 * d, 8),
        );
        let c = Rows::new(&wide[d..], rows, d, 2 * d).unwrap();
        let step = lstm_step(
            Rows::contiguous(&p, 4 * d).unwrap(),
            Rows::contiguous(&r, 4 * d).unwrap(),
            c,
        );
        let state = lstm_state(
            Rows::contiguous(&p, 4 * d).unwrap(),
            Rows::contiguous(&r, 4 * d).unwrap(),
            c,
        );
        assert_eq!(
            state,
            (step.h.clone(), step.c.clone()),
            "the state alone is the step's"
        );
        let grads = lstm_step_backward(
            Rows::contiguous(&grad, 2 * d).unwrap(),
            Rows::contiguous(&step.act, 4 * d).unwrap(),
            c,
            Rows::contiguous(&step.tanh_c, d).unwrap(),
        );
        let (mut hc, mut dgates, mut dc_prev) =
            (vec![0.0; rows * 2 * d], vec![0.0; rows * 4 * d], vec![]);
        for b in 0..rows {
            for j in 0..d {
                let pre = |k: usize| {
                    f64::from(p[b * 4 * d + k * d + j]) + f64::from(r[b * 4 * d + k * d + j])
                };
                let (i, f, g, o) = (sig(pre(0)), sig(pre(1)), pre(2).tanh(), sig(pre(3)));
                let c_prev = f64::from(c.row(b)[j]);
                let c_new = f * c_prev + i * g;
                let t = c_new.tanh();
                hc[b * 2 * d + j] = o * t;
                hc[b * 2 * d + d + j] = c_new;
                let (dh, dc_out) = (
                    f64::from(grad[b * 2 * d + j]),
                    f64::from(grad[b * 2 * d + d + j]),
                );
                let dc = dc_out + dh * o * (1.0 - t * t);
                dc_prev.push(dc * f);
                let at = |k: usize| b * 4 * d + k * d + j;
                dgates[at(0)] = dc * g * i * (1.0 - i);
                dgates[at(1)] = dc * c_prev * f * (1.0 - f);
                dgates[at(2)] = dc * i * (1.0 - g * g);
                dgates[at(3)] = dh * t * o * (1.0 - o);
            }
        }
        let (h, c): (Vec<_>, Vec<_>) = hc.chunks(d).enumerate().partition(|(k, _)| k % 2 == 0);
        let flat = |m: Vec<(usize, &[f64])>| {
            m.into_iter()
                .flat_map(|(_, r)| r.to_vec())
                .collect::<Vec<_>>()
        };
        close(&step.h, &flat(h));
        close(&step.c, &flat(c));
        close(&grads.gates, &dgates);
        close(&grads.c, &dc_prev);
    }

    #[test]
    fn rows_reject_short_buffers_and_narrow_strides() {
        assert!(Rows::new(&[0.0; 7], 2, 4, 4).is_none());
        assert!(Rows::new(&[0.0; 8], 2, 4, 3).is_none());
        assert!(Rows::new(&[0.0; 7], 2, 3, 4).is_some());
        assert!(Rows::contiguous(&[0.0; 7], 2).is_none());
    }
}
