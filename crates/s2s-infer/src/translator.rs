//! A loaded model (or ensemble) that turns strings into strings.

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::options::{DecodeOptions, OptionsError};
use s2s_data::BatchSize;
use s2s_decode::{decode_all_parallel, Decoding, Ensemble, Hypothesis};
use s2s_nn::Seq2Seq;
use s2s_tensor::S2sBackend;
use std::path::PathBuf;

/// One hypothesis for one input.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Output {
    /// The output text (detokenized).
    pub text: String,
    /// Its tokens (without `<eos>`).
    pub tokens: Vec<String>,
    /// The sum of the log-probabilities of its tokens (and of `<eos>`).
    pub score: f32,
    /// The attention of each output step over the source tokens, when asked for: one row
    /// per token, and one more for `<eos>` when the output ended with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention: Option<Vec<Vec<f32>>>,
}

/// What one input became.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Translation {
    /// The input's source tokens (the columns of each output's `attention`).
    pub source_tokens: Vec<String>,
    /// Source tokens that are not in the vocabulary (decoded as `<unk>`).
    pub unknown: Vec<String>,
    /// The hypotheses, best first (one for greedy; `n_best` for beam search and sampling).
    pub outputs: Vec<Output>,
}

/// A model folder (or several, decoded as an ensemble) loaded onto a device, with the
/// batching that `s2s decode` uses: inputs sorted by length into batches of `batch_size`
/// sentences, decoded by `workers` threads side by side. Outputs do not depend on either.
pub struct Translator<B: S2sBackend> {
    /// The first model's folder: its tokenizers, vocabularies and settings are the ensemble's.
    pub checkpoint: Checkpoint<B>,
    models: Ensemble<Seq2Seq<B>>,
    device: B::Device,
    /// Sentences per batch.
    pub batch_size: usize,
    /// Threads that decode batches side by side.
    pub workers: usize,
}

impl<B: S2sBackend> Translator<B> {
    /// Loads the model folders `dirs` (run folders give their best model) onto `device`; more
    /// than one is an ensemble, whose models must share their vocabularies.
    pub fn load(dirs: &[PathBuf], device: &B::Device) -> Result<Self, CheckpointError> {
        let (checkpoint, models) = Checkpoint::<B>::load_ensemble(dirs, device)?;
        Ok(Translator {
            checkpoint,
            models,
            device: device.clone(),
            batch_size: 64,
            workers: 1,
        })
    }

    /// A translator of one model already in memory.
    pub fn from_checkpoint(checkpoint: Checkpoint<B>, device: &B::Device) -> Self {
        let models = Ensemble::new(vec![checkpoint.model.clone()]).expect("one model");
        Translator {
            checkpoint,
            models,
            device: device.clone(),
            batch_size: 64,
            workers: 1,
        }
    }

    /// The models (one, or the ensemble's), for the library's other decoding functions.
    pub fn models(&self) -> &Ensemble<Seq2Seq<B>> {
        &self.models
    }

    /// The source ids of `text`, and the tokens that are not in the vocabulary.
    pub fn encode(&self, text: &str) -> (Vec<u32>, Vec<String>) {
        self.checkpoint.codec.encode_source(text)
    }

    /// The strategy of `options` for this model (its default maximum length).
    pub fn strategy(&self, options: &DecodeOptions) -> Result<Decoding, OptionsError> {
        options.strategy(self.checkpoint.meta.max_decode_len)
    }

    /// Decodes source ids with `strategy`: one hypothesis list per source, best first.
    /// Batches hold `batch_size` sentences, or fewer when there are too few sentences to give
    /// every worker a batch (a server's 64 one-word requests would otherwise be one batch on
    /// one thread); outputs do not depend on it.
    pub fn decode_ids(&self, sources: &[Vec<u32>], strategy: &Decoding) -> Vec<Vec<Hypothesis>> {
        let workers = self.workers.max(1);
        let per_worker = sources.len().div_ceil(workers).max(1);
        let size = BatchSize::Sentences(self.batch_size.clamp(1, per_worker));
        decode_all_parallel(&self.models, strategy, sources, size, &self.device, workers)
    }

    /// Decodes `inputs` with `options`.
    pub fn translate<S: AsRef<str>>(
        &self,
        inputs: &[S],
        options: &DecodeOptions,
    ) -> Result<Vec<Translation>, OptionsError> {
        let strategy = self.strategy(options)?;
        let encoded: Vec<(Vec<u32>, Vec<String>)> =
            inputs.iter().map(|t| self.encode(t.as_ref())).collect();
        let sources: Vec<Vec<u32>> = encoded.iter().map(|(ids, _)| ids.clone()).collect();
        let hyps = self.decode_ids(&sources, &strategy);
        Ok(self.translations(encoded, hyps))
    }

    /// The translations of encoded inputs ([`encode`](Self::encode)) from their hypothesis
    /// lists ([`decode_ids`](Self::decode_ids)), in order.
    pub fn translations(
        &self,
        encoded: Vec<(Vec<u32>, Vec<String>)>,
        hyps: Vec<Vec<Hypothesis>>,
    ) -> Vec<Translation> {
        encoded
            .into_iter()
            .zip(hyps)
            .map(|((ids, unknown), list)| Translation {
                source_tokens: self.source_tokens(&ids),
                unknown,
                outputs: list.into_iter().map(|h| self.output(h)).collect(),
            })
            .collect()
    }

    /// The tokens of source ids.
    pub fn source_tokens(&self, ids: &[u32]) -> Vec<String> {
        let vocab = &self.checkpoint.codec.source_vocab;
        ids.iter()
            .map(|&t| vocab.token(t).unwrap_or("<unk>").to_string())
            .collect()
    }

    /// A hypothesis as text and tokens.
    pub fn output(&self, h: Hypothesis) -> Output {
        let codec = &self.checkpoint.codec;
        Output {
            text: codec.decode_target(&h.tokens),
            tokens: h
                .tokens
                .iter()
                .map(|&t| codec.target_vocab.token(t).unwrap_or("<unk>").to_string())
                .collect(),
            score: h.score,
            attention: h.attention,
        }
    }
}
