//! Dynamic padding and batch planning.
//!
//! Batches are padded to their own longest sequence. Training batches group sequences of
//! similar length (length-bucketed shuffling); inference batches are sorted by length and
//! carry the original indices so that results can be put back in input order with
//! [`restore_order`].

use crate::{Example, Vocab};
use burn::tensor::{backend::Backend, Int, Tensor};
use rand::{seq::SliceRandom, SeedableRng};
use rand_chacha::ChaCha12Rng;
use s2s_tensor::ops;
use serde::{Deserialize, Serialize};

/// How large a batch may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchSize {
    /// At most this many sequences.
    Sentences(usize),
    /// At most this many padded tokens (`rows x longest`), always at least one sequence.
    Tokens(usize),
}

/// Cuts `indices` (already in the wanted order) into consecutive batches no larger than
/// `size`, where `len(i)` is the padded length an item contributes.
fn chunk(indices: &[usize], size: BatchSize, len: impl Fn(usize) -> usize) -> Vec<Vec<usize>> {
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for &i in indices {
        let l = len(i).max(1);
        let fits = match size {
            BatchSize::Sentences(n) => current.len() < n.max(1),
            BatchSize::Tokens(n) => (current.len() + 1) * longest.max(l) <= n,
        };
        if !fits && !current.is_empty() {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(l);
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Plans training batches: shuffles, sorts pools of about 50 batches by length so that each
/// batch holds sequences of similar length, then shuffles the order of the batches.
/// `lengths[i]` is `(source length, target length)` of example `i`.
pub fn plan_training_batches(
    lengths: &[(usize, usize)],
    size: BatchSize,
    seed: u64,
) -> Vec<Vec<usize>> {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let per_batch = match size {
        BatchSize::Sentences(n) => n.max(1),
        BatchSize::Tokens(n) => {
            let mean =
                lengths.iter().map(|l| l.0.max(l.1) + 1).sum::<usize>() / lengths.len().max(1);
            (n / mean.max(1)).max(1)
        }
    };
    let pool = per_batch * 50;
    let padded = |i: usize| lengths[i].0.max(lengths[i].1 + 1);
    let mut batches = Vec::new();
    for chunk_indices in order.chunks_mut(pool) {
        chunk_indices.sort_by_key(|&i| (lengths[i].0, lengths[i].1));
        batches.extend(chunk(chunk_indices, size, padded));
    }
    batches.shuffle(&mut rng);
    batches
}

/// Plans inference batches: sources sorted by decreasing length (ties by index), cut into
/// batches. Every index appears exactly once.
pub fn plan_inference_batches(src_lengths: &[usize], size: BatchSize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..src_lengths.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(src_lengths[i]), i));
    chunk(&order, size, |i| src_lengths[i])
}

/// Puts `(original index, result)` pairs back in input order.
///
/// # Panics
/// If the indices are not a permutation of `0..results.len()`.
pub fn restore_order<T>(results: Vec<(usize, T)>) -> Vec<T> {
    let n = results.len();
    let mut slots: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for (i, r) in results {
        assert!(i < n && slots[i].is_none(), "indices must be a permutation");
        slots[i] = Some(r);
    }
    slots
        .into_iter()
        .map(|s| s.expect("every index filled"))
        .collect()
}

/// Pads id sequences to their longest with `<pad>`; returns the rows and the width.
fn pad(seqs: &[Vec<u32>]) -> (Vec<Vec<u32>>, usize) {
    let width = seqs.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let rows = seqs
        .iter()
        .map(|s| {
            let mut r = s.clone();
            r.resize(width, Vocab::PAD);
            r
        })
        .collect();
    (rows, width)
}

/// A padded training batch with teacher-forcing inputs and shifted targets.
#[derive(Debug, Clone)]
pub struct TrainingBatch<B: Backend> {
    /// Source ids, `[batch, src_len]`, padded with `<pad>`.
    pub source: Tensor<B, 2, Int>,
    /// True source lengths.
    pub source_lengths: Vec<usize>,
    /// Decoder inputs `<sos> y1 .. yn`, `[batch, tgt_len]`.
    pub target_input: Tensor<B, 2, Int>,
    /// Decoder outputs `y1 .. yn <eos>`, `[batch, tgt_len]`, padded with `<pad>`.
    pub target_output: Tensor<B, 2, Int>,
    /// True target lengths, `<eos>` included.
    pub target_lengths: Vec<usize>,
}

impl<B: Backend> TrainingBatch<B> {
    /// Pads examples into a batch on `device`.
    pub fn new(examples: &[&Example], device: &B::Device) -> Self {
        let sources: Vec<Vec<u32>> = examples.iter().map(|e| e.source.clone()).collect();
        let inputs: Vec<Vec<u32>> = examples
            .iter()
            .map(|e| {
                std::iter::once(Vocab::SOS)
                    .chain(e.target.iter().copied())
                    .collect()
            })
            .collect();
        let outputs: Vec<Vec<u32>> = examples
            .iter()
            .map(|e| {
                e.target
                    .iter()
                    .copied()
                    .chain(std::iter::once(Vocab::EOS))
                    .collect()
            })
            .collect();
        let (src_rows, src_w) = pad(&sources);
        let (in_rows, tgt_w) = pad(&inputs);
        let (out_rows, _) = pad(&outputs);
        TrainingBatch {
            source: ops::id_matrix(&src_rows, src_w, device),
            source_lengths: sources.iter().map(Vec::len).collect(),
            target_input: ops::id_matrix(&in_rows, tgt_w, device),
            target_output: ops::id_matrix(&out_rows, tgt_w, device),
            target_lengths: outputs.iter().map(Vec::len).collect(),
        }
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.source_lengths.len()
    }

    /// True for a batch without sequences.
    pub fn is_empty(&self) -> bool {
        self.source_lengths.is_empty()
    }

    /// Number of target tokens that count in the loss (`<eos>` included, padding excluded).
    pub fn target_tokens(&self) -> usize {
        self.target_lengths.iter().sum()
    }
}

/// A padded batch of sources to decode, with the original positions of its rows.
#[derive(Debug, Clone)]
pub struct InferenceBatch<B: Backend> {
    /// Source ids, `[batch, src_len]`, padded with `<pad>`.
    pub source: Tensor<B, 2, Int>,
    /// True source lengths.
    pub source_lengths: Vec<usize>,
    /// Original index of each row in the caller's input.
    pub indices: Vec<usize>,
}

impl<B: Backend> InferenceBatch<B> {
    /// Pads sources into a batch on `device`; `indices` are their positions in the input.
    pub fn new(sources: &[&[u32]], indices: Vec<usize>, device: &B::Device) -> Self {
        assert_eq!(sources.len(), indices.len(), "one index per source");
        let owned: Vec<Vec<u32>> = sources.iter().map(|s| s.to_vec()).collect();
        let (rows, width) = pad(&owned);
        InferenceBatch {
            source: ops::id_matrix(&rows, width, device),
            source_lengths: owned.iter().map(Vec::len).collect(),
            indices,
        }
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.source_lengths.len()
    }

    /// True for a batch without sequences.
    pub fn is_empty(&self) -> bool {
        self.source_lengths.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use s2s_tensor::backend::DefaultBackend as B;

    #[test]
    fn training_batch_shifts_targets_and_pads() {
        let e1 = Example {
            source: vec![5, 6, 7],
            target: vec![8],
        };
        let e2 = Example {
            source: vec![5],
            target: vec![9, 10],
        };
        let b = TrainingBatch::<B>::new(&[&e1, &e2], &Default::default());
        assert_eq!(ops::to_vec_i64(b.source), vec![5, 6, 7, 5, 0, 0]);
        assert_eq!(ops::to_vec_i64(b.target_input), vec![1, 8, 0, 1, 9, 10]);
        assert_eq!(ops::to_vec_i64(b.target_output), vec![8, 2, 0, 9, 10, 2]);
        assert_eq!(b.target_lengths, vec![2, 3]);
        assert_eq!(b.source_lengths, vec![3, 1]);
    }

    #[test]
    fn token_batches_respect_budget() {
        let lens = [5usize, 1, 3, 3, 2, 8];
        let batches = plan_inference_batches(&lens, BatchSize::Tokens(8));
        assert_eq!(batches, vec![vec![5], vec![0], vec![2, 3], vec![4, 1]]);
    }

    proptest! {
        #[test]
        fn plans_cover_every_index_once(
            lens in prop::collection::vec((0usize..20, 0usize..20), 1..200),
            n in 1usize..40,
            by_tokens in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let size = if by_tokens { BatchSize::Tokens(n * 10) } else { BatchSize::Sentences(n) };
            let train = plan_training_batches(&lens, size, seed);
            let src: Vec<usize> = lens.iter().map(|l| l.0).collect();
            let infer = plan_inference_batches(&src, size);
            for plan in [train, infer] {
                let mut all: Vec<usize> = plan.iter().flatten().copied().collect();
                all.sort_unstable();
                prop_assert_eq!(all, (0..lens.len()).collect::<Vec<_>>());
                if let BatchSize::Sentences(n) = size {
                    prop_assert!(plan.iter().all(|b| !b.is_empty() && b.len() <= n));
                }
            }
            let results: Vec<(usize, usize)> = plan_inference_batches(&src, size)
                .into_iter().flatten().map(|i| (i, src[i])).collect();
            prop_assert_eq!(restore_order(results), src);
        }
    }
}
