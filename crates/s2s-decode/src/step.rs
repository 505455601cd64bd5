//! The step API that decoding strategies drive.

use burn::tensor::{backend::Backend, Int, Tensor};
use s2s_data::Vocab;
use s2s_nn::{DecoderState, Memory, Seq2Seq};

/// The token ids that a decoder gives a meaning of its own, which the strategies read from
/// [`StepDecoder::special_tokens`] instead of assuming them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialTokens {
    /// The first input of every output.
    pub sos: usize,
    /// Ends an output.
    pub eos: usize,
    /// The unknown token (`--forbid-unk` forbids it), if the vocabulary has one.
    pub unk: Option<usize>,
}

impl Default for SpecialTokens {
    /// The ids of `s2s_data::Vocab`, which every s2s vocabulary uses.
    fn default() -> Self {
        SpecialTokens {
            sos: Vocab::SOS as usize,
            eos: Vocab::EOS as usize,
            unk: Some(Vocab::UNK as usize),
        }
    }
}

/// A model that can be decoded one token at a time.
///
/// `Memory` holds what is computed once per source (encoder outputs, attention keys);
/// `State` what changes every step. Both are batched along their first dimension.
pub trait StepDecoder<B: Backend> {
    /// Per-source data computed once.
    type Memory: Clone;
    /// Per-step recurrent state.
    type State: Clone;

    /// Encodes a padded batch of sources (`[batch, src_len]`, true `lengths`).
    fn start(&self, source: Tensor<B, 2, Int>, lengths: &[usize]) -> (Self::Memory, Self::State);

    /// Advances every row by one token.
    ///
    /// # Shapes
    /// - `tokens`: `[batch]`
    /// - returns logits `[batch, vocab]`, the new state and attention `[batch, src_len]`
    fn step(
        &self,
        memory: &Self::Memory,
        tokens: Tensor<B, 1, Int>,
        state: Self::State,
    ) -> (Tensor<B, 2>, Self::State, Tensor<B, 2>);

    /// Keeps (or repeats) rows: `out[i] = in[indices[i]]`, for memory and state alike.
    fn select_rows(
        &self,
        memory: &Self::Memory,
        state: Self::State,
        indices: &[usize],
    ) -> (Self::Memory, Self::State);

    /// Keeps (or repeats) rows of the state alone: `out[i] = in[indices[i]]`. Strategies
    /// call it instead of [`select_rows`](Self::select_rows) when every row keeps the source
    /// it had, so the memory (encoder outputs and keys, the larger part) is not copied.
    fn select_state_rows(&self, state: Self::State, indices: &[usize]) -> Self::State;

    /// The decoder's special tokens (by default those of `s2s_data::Vocab`).
    fn special_tokens(&self) -> SpecialTokens {
        SpecialTokens::default()
    }
}

impl<B: s2s_tensor::S2sBackend> StepDecoder<B> for Seq2Seq<B> {
    type Memory = Memory<B>;
    type State = DecoderState<B>;

    fn start(&self, source: Tensor<B, 2, Int>, lengths: &[usize]) -> (Memory<B>, DecoderState<B>) {
        // No decoding cache yet: for one row per source (greedy) it did not pay, 8% slower on
        // flex in paired runs; `select_rows` builds it when a strategy repeats rows.
        Seq2Seq::start(self, source, lengths)
    }

    fn step(
        &self,
        memory: &Memory<B>,
        tokens: Tensor<B, 1, Int>,
        state: DecoderState<B>,
    ) -> (Tensor<B, 2>, DecoderState<B>, Tensor<B, 2>) {
        let out = Seq2Seq::step(self, memory, tokens, state);
        (out.logits, out.state, out.attention)
    }

    fn select_rows(
        &self,
        memory: &Memory<B>,
        state: DecoderState<B>,
        indices: &[usize],
    ) -> (Memory<B>, DecoderState<B>) {
        // Rows repeated: from here on a source is decoded in several rows, where the
        // decoding cache saves more than it costs (see `Seq2Seq::with_decoding_cache`).
        let cached;
        let memory = if indices.len() > memory.batch_size() && !memory.has_cached_values() {
            cached = self.with_decoding_cache(memory, true);
            &cached
        } else {
            memory
        };
        (memory.select_rows(indices), state.select_rows(indices))
    }

    fn select_state_rows(&self, state: DecoderState<B>, indices: &[usize]) -> DecoderState<B> {
        state.select_rows(indices)
    }
}
