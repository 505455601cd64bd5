//! Data-parallel training: several peers (threads, processes or machines), each with a
//! replica of the model, train as one.
//!
//! Every peer plans the same batches (the same data and seed). In each step peer `r` of `n`
//! takes the `r`-th contiguous share of the batch (`div_ceil`, as the workers of
//! [`crate::parallel`] do), computes the gradients of its share's loss divided by the
//! **whole** batch's target tokens, and the peers sum them with one all-reduce
//! ([`Collective::all_reduce_sum`]) of a flat buffer ([`StepExchange`]): every gradient in the
//! model's parameter order, one flag per parameter (whether any peer has a gradient for it),
//! the loss, the tokens and the peers' stop and out-of-time flags. Every peer then applies
//! the same clipped Adam step to the same summed gradients, so the replicas stay equal, and
//! a run on `n` peers of one worker each is the run of one process with `n` workers (the
//! same shares, the same dropout streams), up to the order of floating-point sums.
//!
//! [`Collective`] is the transport. The `distributed` feature implements it on Burn's
//! `burn-collective` ([`crate::distributed`]); tests may implement it with channels.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

/// A failure of the peers' communication.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CollectiveError {
    /// The group could not be formed (an address, a port, the coordinator).
    #[error("could not join the training group: {0}")]
    Join(String),
    /// A collective operation failed (a peer left, a connection broke).
    #[error("{what} failed: {message}")]
    Failed {
        /// What was being exchanged.
        what: String,
        /// The transport's message.
        message: String,
    },
    /// A collective operation did not complete in time: a peer died, hangs or never came.
    #[error(
        "{what} did not complete within {seconds} s: a peer stopped, hangs or never joined \
         (--collective-timeout)"
    )]
    Timeout {
        /// What was being exchanged.
        what: String,
        /// The limit.
        seconds: u64,
    },
    /// The peers disagree (different data, settings or ranks).
    #[error("the peers disagree: {0}")]
    Mismatch(String),
}

/// The communication among the peers of a data-parallel run.
pub trait Collective: Send {
    /// This peer's rank, `0..peers()`. Rank 0 writes the run folder.
    fn rank(&self) -> usize;

    /// The number of peers.
    fn peers(&self) -> usize;

    /// The element-wise sum of `values` over all peers (every peer passes the same length
    /// and gets the same sums). `what` names the exchange in errors.
    fn all_reduce_sum(&mut self, values: Vec<f32>, what: &str)
        -> Result<Vec<f32>, CollectiveError>;

    /// Leaves the group at the end of a run that finished normally.
    fn finish(&mut self) -> Result<(), CollectiveError> {
        Ok(())
    }
}

/// The rows `start..end` of a batch of `rows` that peer `rank` of `peers` trains on: the
/// `rank`-th of `div_ceil` shares, possibly empty at the end.
pub fn share_of(rows: usize, rank: usize, peers: usize) -> std::ops::Range<usize> {
    let share = rows.div_ceil(peers.max(1));
    let start = (rank * share).min(rows);
    start..(start + share).min(rows)
}

/// Flags a peer raises in a step, agreed by all peers through the step's all-reduce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepFlags {
    /// A stop was requested (Ctrl-C, SIGTERM).
    pub stop: bool,
    /// The run's time limit passed.
    pub out_of_time: bool,
}

/// What one step's all-reduce gives back.
#[derive(Debug)]
pub struct Exchanged {
    /// The summed gradients (only parameters for which some peer had a gradient).
    pub grads: GradientsParams,
    /// The batch's mean loss per target token (the peers' parts summed).
    pub loss: f64,
    /// The batch's target tokens, summed over the peers' shares.
    pub tokens: usize,
    /// Raised if any peer raised it.
    pub flags: StepFlags,
}

/// The flat buffer of one step ([module](self) docs): gradients in the visit order of the
/// model's parameters, a flag per parameter, then `[loss, tokens, stop, out_of_time]`.
pub struct StepExchange;

impl StepExchange {
    /// Sums the peers' gradients, losses, tokens and flags through `collective`.
    pub fn run<B: AutodiffBackend, M: AutodiffModule<B>>(
        model: &M,
        grads: GradientsParams,
        loss: f64,
        tokens: usize,
        flags: StepFlags,
        collective: &mut dyn Collective,
    ) -> Result<Exchanged, CollectiveError> {
        let mut flatten = Flatten::<B> {
            grads: &grads,
            values: Vec::new(),
            present: Vec::new(),
            _b: std::marker::PhantomData,
        };
        model.visit(&mut flatten);
        let Flatten {
            mut values,
            present,
            ..
        } = flatten;
        let params = present.len();
        values.extend(present);
        values.extend([
            loss as f32,
            tokens as f32,
            flags.stop as u8 as f32,
            flags.out_of_time as u8 as f32,
        ]);
        let expected = values.len();
        let summed = collective.all_reduce_sum(values, "the gradient all-reduce")?;
        if summed.len() != expected {
            return Err(CollectiveError::Mismatch(format!(
                "the gradient all-reduce returned {} values, expected {expected}: the peers' \
                 models differ",
                summed.len()
            )));
        }
        let tail = &summed[expected - 4..];
        let gradients = expected - 4 - params;
        let mut unflatten = Unflatten::<B> {
            values: &summed[..gradients],
            present: &summed[gradients..gradients + params],
            offset: 0,
            index: 0,
            grads: GradientsParams::new(),
            _b: std::marker::PhantomData,
        };
        model.visit(&mut unflatten);
        Ok(Exchanged {
            grads: unflatten.grads,
            loss: tail[0] as f64,
            tokens: tail[1].round() as usize,
            flags: StepFlags {
                stop: tail[2] > 0.0,
                out_of_time: tail[3] > 0.0,
            },
        })
    }
}

/// Writes every float parameter's gradient (zeros where it has none) and its flag.
struct Flatten<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    values: Vec<f32>,
    present: Vec<f32>,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        match self.grads.get::<B::InnerBackend, D>(param.id) {
            Some(g) => {
                self.values.extend(s2s_tensor::ops::to_vec_f32(g));
                self.present.push(1.0);
            }
            None => {
                let n = param.shape().num_elements();
                self.values.extend(std::iter::repeat_n(0.0, n));
                self.present.push(0.0);
            }
        }
    }
}

/// Reads the summed gradients back, in the same order, into the model's parameter ids.
struct Unflatten<'a, B: AutodiffBackend> {
    values: &'a [f32],
    present: &'a [f32],
    offset: usize,
    index: usize,
    grads: GradientsParams,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let shape = param.shape();
        let n = shape.num_elements();
        let values = &self.values[self.offset..self.offset + n];
        self.offset += n;
        let present = self.present[self.index] > 0.0;
        self.index += 1;
        if present {
            let device = param.device();
            let data = TensorData::new(values.to_vec(), shape);
            let g = Tensor::<B::InnerBackend, D>::from_data(data, &device);
            self.grads.register::<B::InnerBackend, D>(param.id, g);
        }
    }
}

/// A 64-bit FNV-1a hash of `bytes`, for the peers' agreement check.
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Checks that every peer has a distinct rank in `0..peers` and the same `hash` (of the
/// settings, data and starting point): one all-reduce of a `peers x 5` buffer in which each
/// peer fills its own row with `[1, hash in four 16-bit parts]` (exact in f32).
pub fn check_agreement(collective: &mut dyn Collective, hash: u64) -> Result<(), CollectiveError> {
    let (rank, peers) = (collective.rank(), collective.peers());
    let mut rows = vec![0.0f32; peers * 5];
    rows[rank * 5] = 1.0;
    for k in 0..4 {
        rows[rank * 5 + 1 + k] = ((hash >> (16 * k)) & 0xffff) as f32;
    }
    let summed = collective.all_reduce_sum(rows, "the start-up check")?;
    let count = |r: usize| summed[r * 5].round() as i64;
    let bad: Vec<String> = (0..peers)
        .filter(|&r| count(r) != 1)
        .map(|r| format!("rank {r} joined {} times", count(r)))
        .collect();
    if !bad.is_empty() {
        return Err(CollectiveError::Mismatch(format!(
            "{} (each rank in 0..{peers} must be given to exactly one node: --node-rank)",
            bad.join(", ")
        )));
    }
    let hash_of = |r: usize| -> u64 {
        (0..4).fold(0, |h, k| h | ((summed[r * 5 + 1 + k] as u64) << (16 * k)))
    };
    let differ: Vec<String> = (0..peers)
        .filter(|&r| hash_of(r) != hash)
        .map(|r| r.to_string())
        .collect();
    if !differ.is_empty() {
        return Err(CollectiveError::Mismatch(format!(
            "rank(s) {} have other settings, data or checkpoint than rank {rank} (every node \
             must run the same command on the same data, but for --node-rank)",
            differ.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_batch_in_order() {
        for rows in 0..20 {
            for peers in 1..6 {
                let shares: Vec<_> = (0..peers).map(|r| share_of(rows, r, peers)).collect();
                let mut next = 0;
                for s in &shares {
                    assert_eq!(s.start, next);
                    next = s.end;
                }
                assert_eq!(next, rows);
                // The same split as the workers of `parallel`.
                if rows > 0 {
                    let chunk = rows.div_ceil(peers);
                    let chunks: Vec<usize> = (0..rows)
                        .collect::<Vec<_>>()
                        .chunks(chunk)
                        .map(|c| c[0])
                        .collect();
                    let firsts: Vec<usize> = shares
                        .iter()
                        .filter(|s| !s.is_empty())
                        .map(|s| s.start)
                        .collect();
                    assert_eq!(firsts, chunks);
                }
            }
        }
    }

    #[test]
    fn fingerprints_differ_with_the_bytes() {
        assert_eq!(fingerprint(b"abc"), fingerprint(b"abc"));
        assert_ne!(fingerprint(b"abc"), fingerprint(b"abd"));
    }
}
