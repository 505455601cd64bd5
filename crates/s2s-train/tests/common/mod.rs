//! Helpers shared by the integration tests.

use s2s_nn::Seq2SeqConfig;

/// A small model that trains in seconds; vocabulary sizes are set by `train`.
pub fn small_model() -> Seq2SeqConfig {
    Seq2SeqConfig::new(0, 0)
        .with_d_embed(16)
        .with_d_hidden(48)
        .with_d_decoder(64)
        .with_d_attention(48)
}
