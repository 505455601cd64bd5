//! Single-thread times of the `s2s_kernels` CPU kernels at the G2P model's step shapes (64
//! rows, 256 units; attention over 10 source positions), as the flex backend runs them.
//!
//! `cargo run --release -p s2s-benches --example kernels`

use s2s_kernels::attention::{additive_attention, additive_attention_backward};
use s2s_kernels::cells::{gru_step, gru_step_backward, lstm_step, lstm_step_backward, Rows};
use s2s_kernels::optim::{adam, AdamStep};
use std::hint::black_box;
use std::time::Instant;

/// `n` values in about `[-2, 2]`, varied without a random generator.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104_729) % 4001) as f32 / 1000.0) - 2.0)
        .collect()
}

/// Microseconds per call of `f`, the best of five rounds of `reps` calls.
fn time<R>(reps: usize, mut f: impl FnMut() -> R) -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                black_box(f());
            }
            start.elapsed().as_secs_f64() / reps as f64 * 1e6
        })
        .fold(f64::INFINITY, f64::min)
}

/// `values` as rows of `cols`.
fn rows(values: &[f32], cols: usize) -> Rows<'_> {
    Rows::contiguous(values, cols).expect("whole rows")
}

fn main() {
    let (b, d, src_len, reps) = (64, 256, 10, 2000);
    let (p3, r3, h) = (values(b * 3 * d, 1), values(b * 3 * d, 2), values(b * d, 3));
    let (p4, r4) = (values(b * 4 * d, 4), values(b * 4 * d, 5));
    let gru = gru_step(rows(&p3, 3 * d), rows(&r3, 3 * d), rows(&h, d));
    let lstm = lstm_step(rows(&p4, 4 * d), rows(&r4, 4 * d), rows(&h, d));
    let (keys, q, v) = (values(src_len * b * d, 6), values(b * d, 7), values(d, 8));
    let valid = vec![true; b * src_len];
    let att = additive_attention(rows(&keys, b * d), &q, &v, &valid);
    let grad_w = values(b * src_len, 9);
    let grad = values(1 << 18, 10);
    let (mut params, mut moment_1) = (grad.clone(), grad.clone());
    let mut moment_2: Vec<f32> = grad.iter().map(|g| g * g).collect();
    let step = AdamStep::new(0.9, 0.999, 1e-5, 1e-3, 2);
    let figures = [
        (
            "gru_step",
            time(reps, || {
                gru_step(rows(&p3, 3 * d), rows(&r3, 3 * d), rows(&h, d))
            }),
        ),
        (
            "gru_step_backward",
            time(reps, || {
                gru_step_backward(
                    rows(&h, d),
                    rows(&r3[..b * d], d),
                    rows(&gru.rz, 2 * d),
                    rows(&gru.n, d),
                    rows(&gru.diff, d),
                )
            }),
        ),
        (
            "lstm_step",
            time(reps, || {
                lstm_step(rows(&p4, 4 * d), rows(&r4, 4 * d), rows(&h, d))
            }),
        ),
        (
            "lstm_step_backward",
            time(reps, || {
                lstm_step_backward(
                    rows(&r4[..2 * b * d], 2 * d),
                    rows(&lstm.act, 4 * d),
                    rows(&h, d),
                    rows(&lstm.tanh_c, d),
                )
            }),
        ),
        (
            "additive_attention",
            time(reps, || {
                additive_attention(rows(&keys, b * d), &q, &v, &valid)
            }),
        ),
        (
            "additive_attention_backward",
            time(reps, || {
                additive_attention_backward(&grad_w, &att.weights, &att.hidden, &v, src_len)
            }),
        ),
        (
            "adam (262,144 parameters)",
            time(reps / 10, || {
                adam(&mut params, &grad, &mut moment_1, &mut moment_2, step)
            }),
        ),
    ];
    for (name, us) in figures {
        println!("{name}: {us:.1} us");
    }
}
