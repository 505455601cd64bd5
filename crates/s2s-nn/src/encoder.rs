//! The length-aware recurrent encoder.

use crate::rnn::{CellKind, RnnLayer, RnnLayerConfig, RnnState, SeqInput};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig};
use burn::tensor::{backend::Backend, Int, Tensor};
use s2s_tensor::S2sBackend;

/// Configuration of the [`Encoder`].
#[derive(Config, Debug)]
pub struct EncoderConfig {
    /// Source vocabulary size.
    pub vocab_size: usize,
    /// Embedding size.
    pub d_embed: usize,
    /// Hidden size of each direction.
    pub d_hidden: usize,
    /// Number of stacked layers.
    #[config(default = 1)]
    pub n_layers: usize,
    /// Run a backward direction too and concatenate the outputs.
    #[config(default = true)]
    pub bidirectional: bool,
    /// Cell type.
    #[config(default = "CellKind::Gru")]
    pub cell: CellKind,
    /// Dropout on the embeddings and between layers.
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl EncoderConfig {
    /// Size of the encoder outputs (`d_hidden`, doubled when bidirectional).
    pub fn d_output(&self) -> usize {
        self.d_hidden * if self.bidirectional { 2 } else { 1 }
    }

    /// Initialises the encoder.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Encoder<B> {
        let layer = |i: usize| {
            let d_in = if i == 0 {
                self.d_embed
            } else {
                self.d_output()
            };
            RnnLayerConfig::new(d_in, self.d_hidden)
                .with_cell(self.cell)
                .init(device)
        };
        Encoder {
            embedding: EmbeddingConfig::new(self.vocab_size, self.d_embed).init(device),
            forward_layers: (0..self.n_layers).map(layer).collect(),
            backward_layers: if self.bidirectional {
                (0..self.n_layers).map(layer).collect()
            } else {
                Vec::new()
            },
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// Embedding + stacked recurrent layers, optionally bidirectional.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// Source embeddings.
    pub embedding: Embedding<B>,
    /// Forward-direction layers.
    pub forward_layers: Vec<RnnLayer<B>>,
    /// Backward-direction layers (empty when unidirectional).
    pub backward_layers: Vec<RnnLayer<B>>,
    /// Dropout on embeddings and between layers.
    pub dropout: Dropout,
}

/// What the encoder produces.
#[derive(Debug, Clone)]
pub struct EncoderOutput<B: Backend> {
    /// Top-layer outputs `[batch, src_len, d_output]`, zero at padded positions.
    pub outputs: Tensor<B, 3>,
    /// Final state of every layer: `(forward, backward)`, each at the row's true last token
    /// (forward) or first token (backward, which starts at the true last token).
    pub final_states: Vec<(RnnState<B>, Option<RnnState<B>>)>,
}

impl<B: S2sBackend> Encoder<B> {
    /// Encodes a padded batch of sources.
    ///
    /// # Shapes
    /// - `source`: `[batch, src_len]` token ids, padded with `<pad>`
    /// - `lengths`: the true length of each row
    /// - returns outputs `[batch, src_len, d_output]`
    pub fn forward(&self, source: Tensor<B, 2, Int>, lengths: &[usize]) -> EncoderOutput<B> {
        let [batch, _] = source.dims();
        assert_eq!(batch, lengths.len(), "one length per source row");
        let mut final_states = Vec::with_capacity(self.forward_layers.len());
        let mut x: Option<Tensor<B, 3>> = None;
        for (i, fwd) in self.forward_layers.iter().enumerate() {
            let bwd = self.backward_layers.get(i);
            let input = match x.take() {
                Some(x) => SeqInput::Features(crate::dropout::apply(&self.dropout, x)),
                // Without dropout on the embeddings, the first layer looks up its projected
                // inputs in a table of the projected embeddings.
                None if dropout_is_identity::<B>(&self.dropout, &source.device()) => {
                    SeqInput::Tokens {
                        embedding: self.embedding.weight.val(),
                        tokens: source.clone(),
                    }
                }
                None => SeqInput::Features(crate::dropout::apply(
                    &self.dropout,
                    self.embedding.forward(source.clone()),
                )),
            };
            let out = RnnLayer::seq(fwd, bwd, input, lengths);
            x = Some(out.outputs);
            final_states.push((out.forward, out.backward));
        }
        EncoderOutput {
            outputs: x.expect("the encoder has a layer"),
            final_states,
        }
    }
}

/// Whether `dropout.forward` returns its input unchanged on this device's backend: always
/// without autodiff (inference), and with a probability of 0.
pub(crate) fn dropout_is_identity<B: Backend>(dropout: &Dropout, device: &B::Device) -> bool {
    dropout.prob == 0.0 || !B::ad_enabled(device)
}
