//! The driver loop that every strategy runs (OpenNMT-py's `DecodeStrategy` with its loop in
//! `Translator._translate_batch`, fairseq's `search.py` with `SequenceGenerator`): the
//! model's steps and the reordering of its rows here, the choice of the next tokens in a
//! [`SearchState`] of the strategy's own.

use crate::search::{step_logprobs, Logprobs};
use crate::{Hypothesis, StepDecoder};
use burn::tensor::backend::Backend;
use s2s_data::InferenceBatch;

/// How the model's rows follow a step.
pub(crate) enum Reorder {
    /// The rows stay as they are.
    Keep,
    /// Only the decoder state is reordered, `state[i] = state[rows[i]]`; the memory's rows
    /// stay (beam search's sentences keep their blocks of rows).
    State(Vec<usize>),
    /// Memory and state are both gathered, `row[i] = row[rows[i]]`.
    All(Vec<usize>),
}

/// A strategy's state between model steps: which token each model row reads next, what a
/// step's log-probabilities make of the outputs, and how the rows follow.
pub(crate) trait SearchState {
    /// The model rows to start from, as indices of the batch's sources (`None`: one row per
    /// source, in order).
    fn initial_rows(&self) -> Option<Vec<usize>>;

    /// Whether every output has ended.
    fn is_finished(&self) -> bool;

    /// Each model row's input token at `step` (`<sos>` at step 0).
    fn input_tokens(&self, step: usize) -> Vec<usize>;

    /// Reads step `step`'s log-probabilities (every row's, before the logits processors):
    /// extends, ends or replaces the outputs, and says how the model's rows follow.
    fn advance(&mut self, step: usize, out: Logprobs) -> Reorder;

    /// The outputs of every source, best first where the strategy ranks them.
    fn finalize(self) -> Vec<Vec<Hypothesis>>;
}

/// Decodes `batch` with `search`: one model step for every row at a time until the search
/// is finished. Attention weights are read back when `keep_attention` is set.
pub(crate) fn drive<B: Backend, M: StepDecoder<B>, S: SearchState>(
    model: &M,
    batch: &InferenceBatch<B>,
    keep_attention: bool,
    mut search: S,
) -> Vec<Vec<Hypothesis>> {
    let device = batch.source.device();
    let (memory, state) = model.start(batch.source.clone(), &batch.source_lengths);
    let (mut memory, mut state) = match search.initial_rows() {
        Some(rows) => model.select_rows(&memory, state, &rows),
        None => (memory, state),
    };
    for step in 0.. {
        if search.is_finished() {
            break;
        }
        let tokens = search.input_tokens(step);
        let (out, next) = step_logprobs(model, &memory, &tokens, state, keep_attention, &device);
        state = next;
        match search.advance(step, out) {
            Reorder::Keep => {}
            Reorder::State(rows) => state = model.select_state_rows(state, &rows),
            Reorder::All(rows) => (memory, state) = model.select_rows(&memory, state, &rows),
        }
    }
    search.finalize()
}
