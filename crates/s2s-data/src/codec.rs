//! Text <-> ids for both sides of a model: tokenizers plus vocabularies.

use crate::{corpus, Example, Pair, Tokenizer, Vocab};
use rayon::prelude::*;

/// The tokenizers and vocabularies of a model's source and target side.
#[derive(Debug, Clone, PartialEq)]
pub struct TextCodec {
    /// Source tokenizer.
    pub source_tokenizer: Tokenizer,
    /// Target tokenizer.
    pub target_tokenizer: Tokenizer,
    /// Source vocabulary.
    pub source_vocab: Vocab,
    /// Target vocabulary.
    pub target_vocab: Vocab,
}

impl TextCodec {
    /// Builds both vocabularies from training pairs (tokens seen at least `min_freq` times).
    pub fn build(
        pairs: &[Pair],
        source_tokenizer: Tokenizer,
        target_tokenizer: Tokenizer,
        min_freq: usize,
    ) -> Self {
        let (src, tgt): (Vec<Vec<String>>, Vec<Vec<String>>) = pairs
            .par_iter()
            .map(|p| {
                (
                    source_tokenizer.tokenize(&p.source),
                    target_tokenizer.tokenize(&p.target),
                )
            })
            .unzip();
        TextCodec {
            source_tokenizer,
            target_tokenizer,
            source_vocab: Vocab::build(src.iter(), min_freq),
            target_vocab: Vocab::build(tgt.iter(), min_freq),
        }
    }

    /// Encodes pairs (in parallel, order kept).
    pub fn encode_pairs(&self, pairs: &[Pair]) -> Vec<Example> {
        corpus::encode_pairs(
            pairs,
            &self.source_tokenizer,
            &self.target_tokenizer,
            &self.source_vocab,
            &self.target_vocab,
        )
    }

    /// Encodes a source text; also returns the tokens that were not in the vocabulary.
    pub fn encode_source(&self, text: &str) -> (Vec<u32>, Vec<String>) {
        self.source_vocab
            .encode_reporting(&self.source_tokenizer.tokenize(text))
    }

    /// Target tokens of a target text.
    pub fn target_tokens(&self, text: &str) -> Vec<String> {
        self.target_tokenizer.tokenize(text)
    }

    /// Decodes target ids to tokens (stopping at `<eos>`).
    pub fn decode_target_tokens(&self, ids: &[u32]) -> Vec<String> {
        self.target_vocab.decode(ids)
    }

    /// Decodes target ids to text.
    pub fn decode_target(&self, ids: &[u32]) -> String {
        self.target_tokenizer
            .detokenize(&self.decode_target_tokens(ids))
    }
}
