//! One training batch on several CPU threads: the batch's rows are shared out among workers,
//! each computes the loss and gradients of its share, and the gradients are summed.
//!
//! A single batch of a small RNN keeps one core busy through its many small element-wise
//! kernels while the matrix products alone use all of them. Two workers with one intra-op
//! thread each (libtorch) keep both cores of a 2-core machine busy throughout. The step is
//! the same step: each share's loss is divided by the token count of the whole batch, so the
//! shares' gradients add up to the gradient of the batch's mean loss.

use crate::loss::masked_nll_sum;
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use s2s_data::{Example, TrainingBatch};
use s2s_nn::Seq2Seq;
use s2s_tensor::{S2sAutodiffBackend, S2sBackend};

/// What [`batch_gradients`] returns.
#[derive(Debug)]
pub struct BatchGradients {
    /// Mean loss per (non-pad) target token over the whole batch.
    pub loss: f64,
    /// Non-pad target tokens of the whole batch.
    pub tokens: usize,
    /// Gradients of the mean loss, keyed by the model's parameter ids.
    pub grads: GradientsParams,
}

/// Whether `B` must record its autodiff graphs on one thread
/// ([`S2sBackend::AUTODIFF_ACROSS_THREADS`]): Burn 0.21's CubeCL backends (wgpu) lost
/// gradient contributions when three threads did so on one device (a wrong embedding
/// gradient in this module's test; one and two workers happened to pass). libtorch and flex
/// are safe.
pub(crate) fn single_threaded_autodiff<B: S2sBackend>() -> bool {
    !B::AUTODIFF_ACROSS_THREADS
}

/// Loss and gradients of one training batch, its rows split into at most `workers`
/// contiguous shares that run side by side, each on a thread of its own
/// ([`s2s_tensor::workers::each_apart`]; `workers <= 1`: on the caller's thread, on the
/// model itself). On Burn's CubeCL backends (wgpu) it always runs one worker: their
/// autodiff is not safe across threads in Burn 0.21.
///
/// `forward(model, share, first_row)` returns the logits of a share (`[rows, tgt_len,
/// vocab]`); `first_row` is the share's first row in `examples`, for per-row settings such as
/// scheduled sampling. The loss is the masked cross-entropy with label smoothing `smoothing`,
/// averaged over the target tokens of the whole batch.
///
/// Each worker runs on a fork of the model: the same parameters and parameter ids, its own
/// autodiff graph. (Burn's autodiff keeps graphs that share nodes under one lock, so workers
/// on the model itself would run their backward passes one at a time.) With dropout, the
/// workers draw from the backend's one random generator in whatever order they run, so such
/// a step is not bit-for-bit reproducible; without dropout it is, up to the order of the
/// floating-point sums.
pub fn batch_gradients<B, F>(
    model: &Seq2Seq<B>,
    examples: &[&Example],
    smoothing: f32,
    workers: usize,
    device: &B::Device,
    forward: F,
) -> BatchGradients
where
    B: S2sAutodiffBackend,
    F: Fn(&Seq2Seq<B>, &TrainingBatch<B>, usize) -> Tensor<B, 3> + Sync,
{
    let share = Share {
        first_row: 0,
        batch_tokens: batch_tokens(examples),
    };
    share_gradients(model, examples, share, smoothing, workers, device, forward)
}

/// Where the rows given to [`share_gradients`] sit in the whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// The first row's index in the whole batch (for per-row settings and dropout streams).
    pub first_row: usize,
    /// The whole batch's target tokens (`<eos>` included): the loss's divisor.
    pub batch_tokens: usize,
}

/// The target tokens of `examples`, `<eos>` included.
pub fn batch_tokens(examples: &[&Example]) -> usize {
    examples.iter().map(|e| e.target.len() + 1).sum()
}

/// [`batch_gradients`] of a share of a larger batch (a peer's share in data-parallel
/// training, [`crate::collective`]): the loss of `examples` divided by the whole batch's
/// tokens, so that the shares' gradients add up to the gradient of the batch's mean loss.
/// Returned `loss` is this share's part of the batch's mean loss, `tokens` this share's
/// tokens. An empty share gives a loss of 0 and no gradients.
pub fn share_gradients<B, F>(
    model: &Seq2Seq<B>,
    examples: &[&Example],
    share: Share,
    smoothing: f32,
    workers: usize,
    device: &B::Device,
    forward: F,
) -> BatchGradients
where
    B: S2sAutodiffBackend,
    F: Fn(&Seq2Seq<B>, &TrainingBatch<B>, usize) -> Tensor<B, 3> + Sync,
{
    let tokens = batch_tokens(examples);
    if examples.is_empty() {
        return BatchGradients {
            loss: 0.0,
            tokens,
            grads: GradientsParams::new(),
        };
    }
    let divisor = share.batch_tokens.max(1) as f32;
    let share_grads = |model: &Seq2Seq<B>, first: usize, rows: &[&Example]| {
        let batch = TrainingBatch::<B>::new(rows, device);
        let logits = forward(model, &batch, share.first_row + first);
        let (sum, _) = masked_nll_sum(logits, batch.target_output, smoothing);
        let loss = sum.div_scalar(divisor);
        let value = s2s_tensor::ops::to_vec_f32(loss.clone().inner())[0] as f64;
        (value, GradientsParams::from_grads(loss.backward(), model))
    };
    let workers = if single_threaded_autodiff::<B>() {
        1
    } else {
        workers.clamp(1, examples.len())
    };
    if workers == 1 {
        let (loss, grads) = share_grads(model, 0, examples);
        return BatchGradients {
            loss,
            tokens,
            grads,
        };
    }
    let chunk = examples.len().div_ceil(workers);
    let chunks: Vec<&[&Example]> = examples.chunks(chunk).collect();
    // Each share on a thread of its own, which may hold its graph's lock across kernels
    // (see `s2s_tensor::workers`). A panic in a worker is a bug in the model or a backend:
    // it is passed on as is.
    let results = s2s_tensor::workers::each_apart(chunks.len(), |k| {
        let fork = model.clone().fork(device);
        share_grads(&fork, k * chunk, chunks[k])
    });
    let mut accumulator = GradientsAccumulator::<Seq2Seq<B>>::new();
    let mut loss = 0.0;
    for (value, grads) in results {
        loss += value;
        accumulator.accumulate(model, grads);
    }
    BatchGradients {
        loss,
        tokens,
        grads: accumulator.grads(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::masked_cross_entropy;
    use burn::module::{ModuleVisitor, Param};
    use s2s_nn::{CellKind, Seq2SeqConfig};

    s2s_tensor::for_each_backend! {
        type AB = TestAutodiffBackend;

        /// Every gradient of `model` in `grads`, flattened, in visiting order.
        fn flat(model: &Seq2Seq<AB>, grads: &GradientsParams) -> Vec<Vec<f32>> {
            struct Collect<'a>(&'a GradientsParams, Vec<Vec<f32>>);
            impl ModuleVisitor<AB> for Collect<'_> {
                fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
                    let g = self.0.get::<TestBackend, D>(param.id).expect("every parameter has a gradient");
                    self.1.push(s2s_tensor::ops::to_vec_f32(g.flatten::<1>(0, D - 1)));
                }
            }
            let mut c = Collect(grads, Vec::new());
            model.visit(&mut c);
            c.1
        }

        fn examples() -> Vec<Example> {
            // Uneven lengths, so that the shares pad differently from the whole batch.
            (0..7u32)
                .map(|i| Example {
                    source: (0..1 + i % 4).map(|j| 4 + (i + j) % 9).collect(),
                    target: (0..1 + (i * 3) % 5).map(|j| 4 + (i * 2 + j) % 7).collect(),
                })
                .collect()
        }

        #[test]
        fn workers_give_the_gradient_of_the_whole_batch() {
            let device = device();
            if single_threaded_autodiff::<AB>() {
                // wgpu: every count runs the one-worker path, the whole batch's backward pass,
                // which the parity tests' training (through `batch_gradients`) checks against
                // flex. Here it took five minutes of llvmpipe kernel compilation per CI run.
                return;
            }
            let data = examples();
            let rows: Vec<&Example> = data.iter().collect();
            for cell in [CellKind::Gru, CellKind::Lstm] {
                let config = Seq2SeqConfig::new(13, 11)
                    .with_d_embed(4)
                    .with_d_hidden(6)
                    .with_d_decoder(5)
                    .with_d_attention(3)
                    .with_cell(cell);
                let model: Seq2Seq<AB> =
                    s2s_tensor::backend::seeded_module::<AB, _>(&device, 3, || config.init(&device));
                // The reference: the whole batch's mean loss, differentiated directly.
                let batch = TrainingBatch::<AB>::new(&rows, &device);
                let tokens = batch.target_tokens();
                let logits = model.forward(batch.source, &batch.source_lengths, batch.target_input);
                let loss = masked_cross_entropy(logits, batch.target_output, 0.1);
                let want_loss = s2s_tensor::ops::to_vec_f32(loss.clone().inner())[0] as f64;
                let want = flat(&model, &GradientsParams::from_grads(loss.backward(), &model));
                for workers in [1, 2, 3, 7, 9] {
                    let out = batch_gradients(&model, &rows, 0.1, workers, &device, |m, b, _| {
                        m.forward(b.source.clone(), &b.source_lengths, b.target_input.clone())
                    });
                    assert_eq!(out.tokens, tokens);
                    assert!((out.loss - want_loss).abs() < 1e-5, "{workers} workers: loss {} vs {want_loss}", out.loss);
                    let got = flat(&model, &out.grads);
                    assert_eq!(got.len(), want.len());
                    for (p, (g, w)) in got.iter().zip(&want).enumerate() {
                        for (a, b) in g.iter().zip(w) {
                            assert!((a - b).abs() <= 1e-5 + 1e-4 * b.abs(), "{cell:?}, {workers} workers, parameter {p}: {a} vs {b}");
                        }
                    }
                }
            }
        }

        #[test]
        fn shares_know_their_first_row() {
            let device = device();
            if single_threaded_autodiff::<AB>() {
                // One share only; the gradient test covers that path.
                return;
            }
            let data = examples();
            let rows: Vec<&Example> = data.iter().collect();
            let model: Seq2Seq<AB> = Seq2SeqConfig::new(13, 11)
                .with_d_embed(2)
                .with_d_hidden(2)
                .with_d_decoder(2)
                .with_d_attention(2)
                .init(&device);
            let seen = std::sync::Mutex::new(Vec::new());
            batch_gradients(&model, &rows, 0.0, 3, &device, |m, b, first| {
                seen.lock().unwrap().push((first, b.len()));
                m.forward(b.source.clone(), &b.source_lengths, b.target_input.clone())
            });
            let mut seen = seen.into_inner().unwrap();
            seen.sort();
            assert_eq!(seen, vec![(0, 3), (3, 3), (6, 1)]);
        }
    }
}
