//! Decoding strategies for sequence-to-sequence models.
//!
//! A model exposes the small [`StepDecoder`] trait (encode a batch once, then advance every
//! row by one token; reorder rows when the set of live hypotheses changes). A strategy such
//! as [`Greedy`] implements [`Strategy`] for any `StepDecoder`, so new strategies and new
//! models plug in independently. [`decode_all`] decodes any number of sources in
//! length-sorted batches and returns the results in input order. An [`Ensemble`] of models
//! is itself a `StepDecoder`.
//!
//! ```
//! use s2s_decode::{decode_all, Greedy};
//! use s2s_data::BatchSize;
//! use s2s_nn::Seq2SeqConfig;
//! use s2s_tensor::backend::DefaultBackend as B;
//!
//! let device = Default::default();
//! let model = Seq2SeqConfig::new(10, 10).with_d_hidden(8).with_d_decoder(8)
//!     .with_d_attention(8).with_d_embed(4).init::<B>(&device);
//! let sources = vec![vec![4, 5, 6], vec![], vec![7]];
//! let out = decode_all(&model, &Greedy::new(5), &sources, BatchSize::Sentences(2), &device);
//! assert_eq!(out.len(), 3);
//! assert!(out[1][0].tokens.is_empty()); // An empty source gives an empty output.
//! assert!(out[0][0].tokens.len() <= 5);
//! ```

mod beam;
mod driver;
mod ensemble;
mod greedy;
mod sample;
mod search;
mod step;

pub use beam::BeamSearch;
pub use ensemble::Ensemble;
pub use greedy::Greedy;
pub use sample::Sampling;
pub use search::{ForbidUnk, LengthPenalty, LogitsProcessor, LogitsProcessors, NoRepeatNgram};
pub use step::{SpecialTokens, StepDecoder};

use burn::tensor::backend::Backend;
use s2s_data::{batch, BatchSize, InferenceBatch};

/// One decoded output.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Output token ids, without `<sos>` and `<eos>`.
    pub tokens: Vec<u32>,
    /// Sum of the log-probabilities of the tokens (and of `<eos>` when it was produced).
    pub score: f32,
    /// Attention weights of each output step over the source, when requested.
    pub attention: Option<Vec<Vec<f32>>>,
}

/// A decoding strategy: turns a batch of sources into a list of hypotheses per source
/// (best first).
pub trait Strategy<B: Backend, M: StepDecoder<B>> {
    /// Decodes every row of `batch`; the result has one entry per row, in row order.
    fn decode(&self, model: &M, batch: &InferenceBatch<B>) -> Vec<Vec<Hypothesis>>;
}

/// Decodes `sources` (token ids without specials) in length-sorted batches of `size` and
/// returns the hypotheses in input order. Empty sources give one empty hypothesis without
/// running the model.
pub fn decode_all<B, M, S>(
    model: &M,
    strategy: &S,
    sources: &[Vec<u32>],
    size: BatchSize,
    device: &B::Device,
) -> Vec<Vec<Hypothesis>>
where
    B: Backend,
    M: StepDecoder<B>,
    S: Strategy<B, M>,
{
    let plan = DecodePlan::new(sources, size);
    let decoded = plan
        .batches
        .iter()
        .map(|indices| decode_batch(model, strategy, sources, indices, device))
        .collect();
    plan.finish(sources, decoded)
}

/// [`decode_all`] with the batches shared out among up to `workers` threads of rayon's pool
/// (see [`s2s_tensor::workers`]), which take the next batch as they become free. The
/// batches and the results are exactly those of [`decode_all`] (every strategy's output for
/// a sentence is independent of the other rows of its batch, and the batches are the same);
/// only their order of execution changes.
///
/// This is parallelism across batches ("inter-op" threads): on a CPU, two workers running
/// one intra-op thread each keep both cores busy through the small element-wise steps of an
/// RNN, which a single batch cannot. `workers <= 1` decodes one batch at a time, as
/// [`decode_all`] does, but on a thread of the pool, where burn-flex's kernels split their
/// work without handing it over from outside.
pub fn decode_all_parallel<B, M, S>(
    model: &M,
    strategy: &S,
    sources: &[Vec<u32>],
    size: BatchSize,
    device: &B::Device,
    workers: usize,
) -> Vec<Vec<Hypothesis>>
where
    B: Backend,
    M: StepDecoder<B> + Sync,
    S: Strategy<B, M> + Sync,
{
    let plan = DecodePlan::new(sources, size);
    // Longest batches first, so that the last batch to start is a short one.
    let mut order: Vec<usize> = (0..plan.batches.len()).collect();
    order.sort_by_key(|&b| {
        let longest = plan.batches[b].iter().map(|&i| sources[i].len()).max();
        std::cmp::Reverse(longest.unwrap_or(0) * plan.batches[b].len())
    });
    // Each worker takes the next batch when it is free, on a thread of rayon's pool.
    let done = s2s_tensor::workers::each_on_pool(order.len(), workers, |k| {
        decode_batch(model, strategy, sources, &plan.batches[order[k]], device)
    });
    let mut decoded: Vec<Option<Vec<Vec<Hypothesis>>>> = vec![None; plan.batches.len()];
    for (&b, out) in order.iter().zip(done) {
        decoded[b] = Some(out);
    }
    let decoded = decoded
        .into_iter()
        .map(|d| d.expect("every batch is decoded by some worker"))
        .collect();
    plan.finish(sources, decoded)
}

/// The batches of a decoding run: indices into the sources, length-sorted, empty sources
/// left out.
struct DecodePlan {
    batches: Vec<Vec<usize>>,
}

impl DecodePlan {
    fn new(sources: &[Vec<u32>], size: BatchSize) -> Self {
        let non_empty: Vec<usize> = (0..sources.len())
            .filter(|&i| !sources[i].is_empty())
            .collect();
        let lengths: Vec<usize> = non_empty.iter().map(|&i| sources[i].len()).collect();
        let batches = batch::plan_inference_batches(&lengths, size)
            .into_iter()
            .map(|plan| plan.iter().map(|&j| non_empty[j]).collect())
            .collect();
        DecodePlan { batches }
    }

    /// Puts the decoded batches (in plan order) and the empty sources back in input order.
    fn finish(
        self,
        sources: &[Vec<u32>],
        decoded: Vec<Vec<Vec<Hypothesis>>>,
    ) -> Vec<Vec<Hypothesis>> {
        let mut results: Vec<(usize, Vec<Hypothesis>)> = Vec::with_capacity(sources.len());
        for (indices, hyps) in self.batches.into_iter().zip(decoded) {
            results.extend(indices.into_iter().zip(hyps));
        }
        for (i, s) in sources.iter().enumerate() {
            if s.is_empty() {
                results.push((
                    i,
                    vec![Hypothesis {
                        tokens: Vec::new(),
                        score: 0.0,
                        attention: None,
                    }],
                ));
            }
        }
        batch::restore_order(results)
    }
}

/// Decodes the sources at `indices` as one batch.
fn decode_batch<B: Backend, M: StepDecoder<B>, S: Strategy<B, M>>(
    model: &M,
    strategy: &S,
    sources: &[Vec<u32>],
    indices: &[usize],
    device: &B::Device,
) -> Vec<Vec<Hypothesis>> {
    let rows: Vec<&[u32]> = indices.iter().map(|&i| sources[i].as_slice()).collect();
    let batch = InferenceBatch::new(&rows, indices.to_vec(), device);
    strategy.decode(model, &batch)
}

/// Any of the built-in strategies, chosen at run time (for command lines and configs).
#[derive(Debug, Clone, PartialEq)]
pub enum Decoding {
    /// [`Greedy`].
    Greedy(Greedy),
    /// [`BeamSearch`] (diverse when `groups > 1`).
    Beam(BeamSearch),
    /// [`Sampling`].
    Sample(Sampling),
}

impl<B: Backend, M: StepDecoder<B>> Strategy<B, M> for Decoding {
    fn decode(&self, model: &M, batch: &InferenceBatch<B>) -> Vec<Vec<Hypothesis>> {
        match self {
            Decoding::Greedy(s) => s.decode(model, batch),
            Decoding::Beam(s) => s.decode(model, batch),
            Decoding::Sample(s) => s.decode(model, batch),
        }
    }
}
