//! Ensembles: several models decoded as one.

use crate::StepDecoder;
use burn::tensor::activation::log_softmax;
use burn::tensor::{backend::Backend, Int, Tensor};

/// Several models that share their source and target vocabularies, decoded as one model
/// whose next-token log-probabilities are the mean of theirs (as OpenNMT-py and Marian
/// ensemble; the strategies then normalise that mean, so scores stay log-probabilities) and
/// whose attention is the mean of theirs.
///
/// It is a [`StepDecoder`], so every strategy decodes it unchanged: greedy, beam search and
/// n-best lists, sampling, with their constraints. Each model keeps its own memory and
/// state; rows are reordered in all of them together.
///
/// The vocabularies are not checked here (a `StepDecoder` has none): whoever builds the
/// ensemble checks that the models' vocabularies are the same, token for token.
#[derive(Debug, Clone)]
pub struct Ensemble<M> {
    models: Vec<M>,
}

impl<M> Ensemble<M> {
    /// The ensemble of `models`, or `None` when there are none.
    pub fn new(models: Vec<M>) -> Option<Self> {
        (!models.is_empty()).then_some(Ensemble { models })
    }

    /// The models, in the order given.
    pub fn models(&self) -> &[M] {
        &self.models
    }
}

impl<B: Backend, M: StepDecoder<B>> StepDecoder<B> for Ensemble<M> {
    type Memory = Vec<M::Memory>;
    type State = Vec<M::State>;

    /// The first model's (the models share their vocabularies).
    fn special_tokens(&self) -> crate::SpecialTokens {
        self.models[0].special_tokens()
    }

    fn start(&self, source: Tensor<B, 2, Int>, lengths: &[usize]) -> (Self::Memory, Self::State) {
        self.models
            .iter()
            .map(|m| m.start(source.clone(), lengths))
            .unzip()
    }

    /// # Shapes
    /// - `tokens`: `[batch]`
    /// - returns the mean log-probabilities `[batch, vocab]` (a single model's logits as they
    ///   are), the new states and the mean attention `[batch, src_len]`
    fn step(
        &self,
        memory: &Self::Memory,
        tokens: Tensor<B, 1, Int>,
        state: Self::State,
    ) -> (Tensor<B, 2>, Self::State, Tensor<B, 2>) {
        if let ([model], [memory]) = (self.models.as_slice(), memory.as_slice()) {
            // One model: its logits as they are (the strategies normalise them), so that an
            // ensemble of one decodes exactly as the model.
            let state = state.into_iter().next().expect("one state per model");
            let (logits, state, attention) = model.step(memory, tokens, state);
            return (logits, vec![state], attention);
        }
        let k = self.models.len() as f32;
        let mut log_probs: Option<Tensor<B, 2>> = None;
        let mut attention: Option<Tensor<B, 2>> = None;
        let mut states = Vec::with_capacity(self.models.len());
        for ((model, memory), state) in self.models.iter().zip(memory).zip(state) {
            let (logits, state, weights) = model.step(memory, tokens.clone(), state);
            let lp = log_softmax(logits, 1);
            log_probs = Some(match log_probs {
                Some(sum) => sum + lp,
                None => lp,
            });
            attention = Some(match attention {
                Some(sum) => sum + weights,
                None => weights,
            });
            states.push(state);
        }
        let mean =
            |t: Option<Tensor<B, 2>>| t.expect("an ensemble has at least one model").div_scalar(k);
        (mean(log_probs), states, mean(attention))
    }

    fn select_rows(
        &self,
        memory: &Self::Memory,
        state: Self::State,
        indices: &[usize],
    ) -> (Self::Memory, Self::State) {
        self.models
            .iter()
            .zip(memory)
            .zip(state)
            .map(|((m, memory), state)| m.select_rows(memory, state, indices))
            .unzip()
    }

    fn select_state_rows(&self, state: Self::State, indices: &[usize]) -> Self::State {
        self.models
            .iter()
            .zip(state)
            .map(|(m, state)| m.select_state_rows(state, indices))
            .collect()
    }
}
