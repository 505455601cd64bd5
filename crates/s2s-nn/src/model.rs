//! The attention encoder-decoder and its step API.

use crate::attention::{mix, Attention, AttentionConfig, AttentionKind};
use crate::encoder::{dropout_is_identity, Encoder, EncoderConfig};
use crate::linear::{linear_rows, matmul_rows};
use crate::rnn::{CellKind, RnnLayer, RnnLayerConfig, RnnState, StepWeights};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Bool, Int, Tensor, TensorData};
use s2s_tensor::activation::tanh;
use s2s_tensor::ops::{self, RowLayout};
use s2s_tensor::S2sBackend;

/// A model configuration that cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// A setting is out of range or inconsistent with another.
    #[error("invalid model configuration: {0}")]
    Invalid(String),
}

/// Configuration of the [`Seq2Seq`] model, saved as JSON beside the weights.
#[derive(Config, Debug)]
pub struct Seq2SeqConfig {
    /// Source vocabulary size (specials included).
    pub src_vocab: usize,
    /// Target vocabulary size (specials included).
    pub tgt_vocab: usize,
    /// Embedding size (source and target).
    #[config(default = 64)]
    pub d_embed: usize,
    /// Encoder hidden size per direction.
    #[config(default = 256)]
    pub d_hidden: usize,
    /// Decoder hidden size.
    #[config(default = 256)]
    pub d_decoder: usize,
    /// Hidden size of the additive attention.
    #[config(default = 256)]
    pub d_attention: usize,
    /// Encoder layers.
    #[config(default = 1)]
    pub encoder_layers: usize,
    /// Decoder layers.
    #[config(default = 1)]
    pub decoder_layers: usize,
    /// Bidirectional encoder.
    #[config(default = true)]
    pub bidirectional: bool,
    /// Cell type of encoder and decoder.
    #[config(default = "CellKind::Gru")]
    pub cell: CellKind,
    /// Attention scoring function.
    #[config(default = "AttentionKind::Bahdanau")]
    pub attention: AttentionKind,
    /// Dropout on embeddings and between recurrent layers.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Initialise the decoder from the encoder's final states (`tanh(Linear(..))`); zeros
    /// otherwise.
    #[config(default = true)]
    pub bridge: bool,
}

impl Seq2SeqConfig {
    fn encoder_config(&self) -> EncoderConfig {
        EncoderConfig::new(self.src_vocab, self.d_embed, self.d_hidden)
            .with_n_layers(self.encoder_layers)
            .with_bidirectional(self.bidirectional)
            .with_cell(self.cell)
            .with_dropout(self.dropout)
    }

    /// Size of the encoder outputs.
    pub fn d_memory(&self) -> usize {
        self.encoder_config().d_output()
    }

    /// Checks that the configuration can be built.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Invalid(m));
        if self.src_vocab < 5 || self.tgt_vocab < 5 {
            return bad(format!(
                "vocabularies need at least one token beside the 4 specials (source {}, target {})",
                self.src_vocab, self.tgt_vocab
            ));
        }
        for (name, v) in [
            ("d_embed", self.d_embed),
            ("d_hidden", self.d_hidden),
            ("d_decoder", self.d_decoder),
            ("d_attention", self.d_attention),
            ("encoder_layers", self.encoder_layers),
            ("decoder_layers", self.decoder_layers),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.attention == AttentionKind::Dot && self.d_decoder != self.d_memory() {
            return bad(format!(
                "dot attention needs the decoder size ({}) to equal the encoder output size ({})",
                self.d_decoder,
                self.d_memory()
            ));
        }
        Ok(())
    }

    /// Initialises the model.
    ///
    /// # Panics
    /// If [`validate`](Self::validate) fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Seq2Seq<B> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let d_memory = self.d_memory();
        let bridge = |on: bool| {
            on.then(|| {
                LinearConfig::new(d_memory, self.d_decoder * self.decoder_layers).init(device)
            })
        };
        Seq2Seq {
            encoder: self.encoder_config().init(device),
            bridge_h: bridge(self.bridge),
            bridge_c: bridge(self.bridge && self.cell == CellKind::Lstm),
            attention: AttentionConfig::new(self.d_decoder, d_memory, self.d_attention)
                .with_kind(self.attention)
                .init(device),
            embedding: EmbeddingConfig::new(self.tgt_vocab, self.d_embed).init(device),
            decoder_layers: (0..self.decoder_layers)
                .map(|i| {
                    let d_in = if i == 0 {
                        self.d_embed + d_memory
                    } else {
                        self.d_decoder
                    };
                    RnnLayerConfig::new(d_in, self.d_decoder)
                        .with_cell(self.cell)
                        .init(device)
                })
                .collect(),
            output: LinearConfig::new(self.d_decoder + d_memory + self.d_embed, self.tgt_vocab)
                .init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            cell: self.cell,
            d_embed: self.d_embed,
            d_decoder: self.d_decoder,
        }
    }
}

/// The encoder outputs prepared for attention, for a batch of decoder rows.
///
/// Consecutive decoder rows may share a source (the beams of one sentence): the encoder's
/// products (`outputs`, `keys` and the cache's `values`) then have one row per source, and
/// decoder row `b` reads source `b / repeat`, with `repeat = rows / sources`. The masks and
/// lengths have one row per decoder row. [`select_rows`](Self::select_rows) keeps sources
/// shared where it can.
#[derive(Debug, Clone)]
pub struct Memory<B: Backend> {
    /// Encoder outputs `[sources, src_len, d_memory]`.
    pub outputs: Tensor<B, 3>,
    /// Attention keys from [`Attention::keys`] (computed once per batch), source-major:
    /// `[src_len, sources, _]`.
    pub keys: Tensor<B, 3>,
    /// `[rows, src_len]`, `false` at padding.
    pub valid: Tensor<B, 2, Bool>,
    /// True source lengths, one per decoder row.
    pub lengths: Vec<usize>,
    /// Which source each decoder row reads (the beams of a sentence share it).
    pub layout: RowLayout,
    /// What decoding precomputes for the step (see [`DecodingCache`]); `None` from
    /// [`Seq2Seq::start`], which the training passes use.
    pub cache: Option<DecodingCache<B>>,
}

/// Products that decoding computes once per batch of sources.
///
/// The embedding and the attention context enter a step only through two linear maps: the
/// first decoder layer's input projection and the output projection. The embedding's share of
/// both is a lookup in a table computed once (`embedded`), and the context's share is one
/// product with both maps' context rows side by side (`context_weights`).
///
/// Both maps are also linear in the encoder outputs, so `(weights @ outputs) @ W == weights @
/// (outputs @ W)`: with `values = outputs @ W` computed once, a step mixes `[src_len, gates *
/// d_decoder + tgt_vocab]` rows per sentence with its attention weights and needs no context
/// at all. For the G2P model that removes more than half of a step's matrix-product work; it
/// costs about as much per source position, so it is built only when a source is decoded in
/// several rows.
#[derive(Debug, Clone)]
pub struct DecodingCache<B: Backend> {
    /// The context rows of the first layer's input weights and of the output projection, side
    /// by side: `[d_memory, gates * d_decoder + tgt_vocab]`.
    pub context_weights: Tensor<B, 2>,
    /// Encoder outputs times `context_weights`: `[sources, src_len, gates * d_decoder +
    /// tgt_vocab]`, when built.
    pub values: Option<Tensor<B, 3>>,
    /// Every target embedding times the embedding rows of the same two weights, with both
    /// biases: `[tgt_vocab, gates * d_decoder + tgt_vocab]`.
    pub embedded: Tensor<B, 2>,
    /// The output projection's rows for the last decoder layer's state `[d_decoder, tgt_vocab]`.
    pub output_state: Tensor<B, 2>,
    /// Each decoder layer's weights for single steps ([`RnnLayer::weights`]).
    pub layer_weights: Vec<StepWeights<B>>,
}

/// How the teacher-forced pass feeds the target embeddings to the output layer.
enum EmbeddingShare<B: Backend> {
    /// The embeddings themselves, `[batch, steps, d_embed]` (after dropout).
    Features(Tensor<B, 3>),
    /// The target ids `[batch * steps]`, whose projected embeddings are looked up.
    Ids(Tensor<B, 1, Int>),
}

impl<B: S2sBackend> Memory<B> {
    /// Reorders (or repeats) decoder rows: `out[i] = self[indices[i]]`.
    ///
    /// When the new rows come in equal runs from one source each (the beams of each
    /// sentence, as beam search keeps them), the sources are shared by the rows of a run: the
    /// encoder's products are gathered per source, or not at all when the sources stay as
    /// they are. Otherwise each row gets its own copy. On an autodiff backend rows share no
    /// source.
    pub fn select_rows(&self, indices: &[usize]) -> Self {
        let lengths: Vec<usize> = indices.iter().map(|&i| self.lengths[i]).collect();
        let sources = self.layout.sources();
        let source_of: Vec<usize> = indices.iter().map(|&i| self.layout.source_of(i)).collect();
        let run = match B::ad_enabled(&self.outputs.device()) {
            true => 1,
            false => shared_run(&source_of),
        };
        let picked: Vec<usize> = source_of.iter().step_by(run.max(1)).copied().collect();
        let unchanged = picked.len() == sources && picked.iter().enumerate().all(|(i, &s)| i == s);
        let gather = |t: &Tensor<B, 3>| match unchanged {
            true => t.clone(),
            false => ops::gather_rows(t.clone(), &picked),
        };
        Memory {
            outputs: gather(&self.outputs),
            keys: match unchanged {
                true => self.keys.clone(),
                false => self
                    .keys
                    .clone()
                    .select(1, ops::index_tensor::<B>(&picked, &self.keys.device())),
            },
            // Rebuilt from the lengths rather than gathered: gathering a bool tensor yields a
            // `u8` tensor on burn-flex 0.21 that its `bool_not` rejects.
            valid: ops::length_mask(&lengths, self.valid.dims()[1], &self.valid.device()),
            lengths,
            layout: RowLayout::shared(picked.len(), run.max(1)),
            cache: self.cache.as_ref().map(|c| DecodingCache {
                context_weights: c.context_weights.clone(),
                values: c.values.as_ref().map(gather),
                embedded: c.embedded.clone(),
                output_state: c.output_state.clone(),
                layer_weights: c.layer_weights.clone(),
            }),
        }
    }

    /// Whether the [`DecodingCache`] is there with its values.
    pub fn has_cached_values(&self) -> bool {
        self.cache.as_ref().is_some_and(|c| c.values.is_some())
    }

    /// Number of decoder rows.
    pub fn batch_size(&self) -> usize {
        self.lengths.len()
    }
}

/// The length of the runs in which `sources` (each row's source) repeats each of its values,
/// when all runs have that length (`[4, 4, 4, 9, 9, 9]`: 3); otherwise 1.
fn shared_run(sources: &[usize]) -> usize {
    let Some(&first) = sources.first() else {
        return 1;
    };
    let run = sources.iter().take_while(|&&s| s == first).count();
    let equal_runs = sources.len().is_multiple_of(run)
        && sources.chunks(run).all(|c| c.iter().all(|&s| s == c[0]));
    match equal_runs && run > 1 {
        true => run,
        false => 1,
    }
}

/// Where a decoder step's context share comes from (see `Seq2Seq::decoder_step`).
enum ContextShare<'a, B: Backend> {
    /// Mixed with the attention weights from values computed once per batch, `outputs @ W`:
    /// `[sources, src_len, W]`.
    Values(&'a Tensor<B, 3>),
    /// The context (the encoder outputs mixed with the attention weights) times `W`
    /// (`[d_memory, W]`); the step keeps the context.
    Project(&'a Tensor<B, 2>),
}

/// What `Seq2Seq::decoder_step` returns.
struct DecoderStep<B: Backend> {
    /// The last layer's output `[batch, d_decoder]`.
    h: Tensor<B, 2>,
    /// The input's columns beyond the first layer's (`[batch, W - gates * d_decoder]`), if any.
    rest: Option<Tensor<B, 2>>,
    /// The context `[batch, d_memory]`, with [`ContextShare::Project`].
    context: Option<Tensor<B, 2>>,
    /// `[batch, src_len]`
    attention: Tensor<B, 2>,
    state: DecoderState<B>,
}

/// The decoder's recurrent state: one [`RnnState`] per layer.
#[derive(Debug, Clone)]
pub struct DecoderState<B: Backend> {
    /// Per-layer states, bottom first.
    pub layers: Vec<RnnState<B>>,
}

impl<B: Backend> DecoderState<B> {
    /// Reorders (or repeats) batch rows: `out[i] = self[indices[i]]`.
    pub fn select_rows(self, indices: &[usize]) -> Self {
        DecoderState {
            layers: self
                .layers
                .into_iter()
                .map(|s| s.select_rows(indices))
                .collect(),
        }
    }
}

/// The result of one decoder step.
#[derive(Debug, Clone)]
pub struct StepOutput<B: Backend> {
    /// Unnormalised scores of the next token `[batch, tgt_vocab]`.
    pub logits: Tensor<B, 2>,
    /// The state after the step.
    pub state: DecoderState<B>,
    /// Attention weights of this step `[batch, src_len]`.
    pub attention: Tensor<B, 2>,
}

/// An attention RNN encoder-decoder.
#[derive(Module, Debug)]
pub struct Seq2Seq<B: Backend> {
    /// Source encoder.
    pub encoder: Encoder<B>,
    /// Bridge to the decoder's initial hidden states.
    pub bridge_h: Option<Linear<B>>,
    /// Bridge to the decoder's initial LSTM cells.
    pub bridge_c: Option<Linear<B>>,
    /// Attention over the encoder outputs.
    pub attention: Attention<B>,
    /// Target embeddings.
    pub embedding: Embedding<B>,
    /// Decoder layers; the first takes `[embedding; context]`.
    pub decoder_layers: Vec<RnnLayer<B>>,
    /// Output projection from `[decoder state; context; embedding]`.
    pub output: Linear<B>,
    /// Dropout on embeddings and between layers.
    pub dropout: Dropout,
    /// Cell type.
    #[module(skip)]
    pub cell: CellKind,
    /// Embedding size.
    pub d_embed: usize,
    /// Decoder hidden size.
    pub d_decoder: usize,
}

impl<B: S2sBackend> Seq2Seq<B> {
    /// Overwrites rows of the source (`source = true`) or target embedding table, e.g. with
    /// pretrained word vectors: `rows` holds `(token id, vector)`; other rows keep their
    /// initialisation.
    ///
    /// Fails if a vector's size is not the embedding size or an id is out of range.
    pub fn with_embedding_rows(
        mut self,
        source: bool,
        rows: &[(u32, Vec<f32>)],
    ) -> Result<Self, ModelError> {
        let embedding = if source {
            &mut self.encoder.embedding
        } else {
            &mut self.embedding
        };
        let [n, d] = embedding.weight.dims();
        for (id, v) in rows {
            if *id as usize >= n || v.len() != d {
                return Err(ModelError::Invalid(format!(
                    "embedding row {id} of size {} does not fit a {n} x {d} table",
                    v.len()
                )));
            }
        }
        let weight = embedding.weight.clone().map(|w| {
            let device = w.device();
            let grad = w.is_require_grad();
            let mut values = w
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap_or_default();
            for (id, v) in rows {
                let start = *id as usize * d;
                values[start..start + d].copy_from_slice(v);
            }
            let t = Tensor::from_data(TensorData::new(values, [n, d]), &device);
            if grad {
                t.require_grad()
            } else {
                t
            }
        });
        embedding.weight = weight;
        Ok(self)
    }

    /// Encodes sources and prepares the decoder's initial state.
    ///
    /// # Shapes
    /// - `source`: `[batch, src_len]` ids padded with `<pad>`; `lengths`: true lengths
    pub fn start(
        &self,
        source: Tensor<B, 2, Int>,
        lengths: &[usize],
    ) -> (Memory<B>, DecoderState<B>) {
        let [batch, seq] = source.dims();
        let device = source.device();
        let encoded = self.encoder.forward(source, lengths);
        let n_layers = self.decoder_layers.len();
        let layers = match &self.bridge_h {
            Some(bridge_h) => {
                let (fwd, bwd) = encoded
                    .final_states
                    .last()
                    .expect("encoder has a layer")
                    .clone();
                let cat = |a: Tensor<B, 2>, b: Option<Tensor<B, 2>>| match b {
                    Some(b) => Tensor::cat(vec![a, b], 1),
                    None => a,
                };
                let h_in = cat(fwd.h, bwd.as_ref().map(|s| s.h.clone()));
                let hs = tanh(bridge_h.forward(h_in)).chunk(n_layers, 1);
                let cs: Vec<Option<Tensor<B, 2>>> = match (&self.bridge_c, fwd.c) {
                    (Some(bridge_c), Some(c)) => {
                        let c_in = cat(c, bwd.and_then(|s| s.c));
                        tanh(bridge_c.forward(c_in))
                            .chunk(n_layers, 1)
                            .into_iter()
                            .map(Some)
                            .collect()
                    }
                    _ => vec![None; n_layers],
                };
                hs.into_iter()
                    .zip(cs)
                    .map(|(h, c)| RnnState { h, c })
                    .collect()
            }
            None => (0..n_layers)
                .map(|_| RnnState::zeros(self.cell, batch, self.d_decoder, &device))
                .collect(),
        };
        let keys = self.attention.keys(encoded.outputs.clone());
        let memory = Memory {
            outputs: encoded.outputs,
            keys,
            valid: ops::length_mask(lengths, seq, &device),
            lengths: lengths.to_vec(),
            layout: RowLayout::one_per_source(batch),
            cache: None,
        };
        (memory, DecoderState { layers })
    }

    /// The memory with its [`DecodingCache`] (with the `values` too when `values` is true), so
    /// that [`step`](Self::step) takes the cached path. Without autodiff only: on an autodiff
    /// backend (where a step may apply dropout to the embedding) this is a clone, and so is
    /// it when the cache asked for is already there.
    ///
    /// The values cost, per source position, about what they save per decoder row and step,
    /// so they pay when a source is decoded in several rows (beam search, several samples):
    /// `s2s_decode`'s `StepDecoder` implementation builds the cache, values included, when a
    /// strategy first repeats rows. (The cache without the values was 8% slower for greedy
    /// decoding on flex, so one row per source goes without it.)
    pub fn with_decoding_cache(&self, memory: &Memory<B>, values: bool) -> Memory<B> {
        let mut memory = memory.clone();
        if B::ad_enabled(&memory.outputs.device()) {
            return memory;
        }
        let mut cache = match memory.cache.take() {
            Some(cache) => cache,
            None => self.decoding_cache(memory.outputs.dims()[2]),
        };
        if values && cache.values.is_none() {
            cache.values = Some(matmul_rows(
                memory.outputs.clone(),
                cache.context_weights.clone(),
            ));
        }
        memory.cache = Some(cache);
        memory
    }

    /// The [`DecodingCache`] of encoder outputs `d_memory` wide, without the values.
    fn decoding_cache(&self, d_memory: usize) -> DecodingCache<B> {
        let (w_emb, w_ctx) = self.embedding_weights();
        let (out_state_context, out_emb, out_bias) = self.output_weights();
        debug_assert_eq!(out_state_context.dims()[0], self.d_decoder + d_memory);
        let out_h = out_state_context.clone().narrow(0, 0, self.d_decoder);
        let out_ctx = out_state_context.narrow(0, self.d_decoder, d_memory);
        let context_weights = Tensor::cat(vec![w_ctx, out_ctx], 1);
        let bias_ih = self.decoder_layers[0].bias_ih.val();
        let bias = Tensor::cat(vec![bias_ih, out_bias], 0).unsqueeze::<2>();
        let embedded = self
            .embedding
            .weight
            .val()
            .matmul(Tensor::cat(vec![w_emb, out_emb], 1))
            + bias;
        DecodingCache {
            context_weights,
            values: None,
            embedded,
            output_state: out_h,
            layer_weights: self.decoder_layers.iter().map(RnnLayer::weights).collect(),
        }
    }

    /// The output layer's weight rows for the decoder state and the context (`[d_decoder +
    /// d_memory, tgt_vocab]`), its rows for the embedding (`[d_embed, tgt_vocab]`), and its
    /// bias (zeros without one).
    fn output_weights(&self) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1>) {
        let w = self.output.weight.val();
        let [rows, vocab] = w.dims();
        let d_features = rows - self.d_embed;
        let bias = match &self.output.bias {
            Some(b) => b.val(),
            None => Tensor::zeros([vocab], &w.device()),
        };
        (
            w.clone().narrow(0, 0, d_features),
            w.narrow(0, d_features, self.d_embed),
            bias,
        )
    }

    /// The part of the first decoder layer's input weights that multiplies the embedding.
    fn embedding_weights(&self) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let w = self.decoder_layers[0].weight_ih.val();
        let rows = w.dims()[0];
        (
            w.clone().narrow(0, 0, self.d_embed),
            w.narrow(0, self.d_embed, rows - self.d_embed),
        )
    }

    /// Advances the decoder layers from the first layer's projected input (`[batch, gates *
    /// d_decoder]`) with each layer's `weights` ([`RnnLayer::weights`] for single steps,
    /// [`RnnLayer::sequence_weights`] in a loop over a whole sequence); returns the last
    /// layer's output and the new state.
    fn run_layers(
        &self,
        projected: Tensor<B, 2>,
        state: DecoderState<B>,
        weights: &[StepWeights<B>],
    ) -> (Tensor<B, 2>, DecoderState<B>) {
        let mut new_layers = Vec::with_capacity(state.layers.len());
        debug_assert_eq!(
            weights.len(),
            state.layers.len(),
            "one weight set per layer"
        );
        let mut layers = state.layers.into_iter().zip(weights);
        let (s, w) = layers.next().expect("decoder has a layer");
        let first = w.step_projected(projected, s);
        let mut x = first.h.clone();
        new_layers.push(first);
        for (s, w) in layers {
            let next = w.step(crate::dropout::apply(&self.dropout, x), s);
            x = next.h.clone();
            new_layers.push(next);
        }
        (x, DecoderState { layers: new_layers })
    }

    /// The attention of the last decoder layer's state over the memory: `[batch, src_len]`.
    fn attention_weights(&self, memory: &Memory<B>, state: &DecoderState<B>) -> Tensor<B, 2> {
        let query = state.layers.last().expect("decoder has a layer").h.clone();
        self.attention.weights(
            query,
            memory.keys.clone(),
            memory.valid.clone(),
            memory.layout,
        )
    }

    /// The decoder step, which teacher forcing, scheduled sampling and decoding all run: the
    /// attention of the last layer's state over the memory, the context's share added to
    /// `input` (the embedding's share of the first layer's input projection, biases included,
    /// `[batch, W]` with `W >= gates * d_decoder`), and the layers advanced from the first
    /// `gates * d_decoder` columns. Columns beyond those (the output layer's share, in
    /// decoding with the [`DecodingCache`]) come back in [`DecoderStep::rest`].
    /// `weights`: each layer's weights, as [`run_layers`](Self::run_layers) takes them.
    fn decoder_step(
        &self,
        memory: &Memory<B>,
        input: Tensor<B, 2>,
        share: ContextShare<'_, B>,
        state: DecoderState<B>,
        weights: &[StepWeights<B>],
    ) -> DecoderStep<B> {
        let attention = self.attention_weights(memory, &state);
        let (share, context) = match share {
            ContextShare::Values(values) => (mix(&attention, values.clone(), memory.layout), None),
            ContextShare::Project(w) => {
                let context = mix(&attention, memory.outputs.clone(), memory.layout);
                (context.clone().matmul(w.clone()), Some(context))
            }
        };
        let pre = input + share;
        let [_, width] = pre.dims();
        let g = self.decoder_layers[0].weight_ih.dims()[1];
        let (layer_input, rest) = match width - g {
            0 => (pre, None),
            extra => (pre.clone().narrow(1, 0, g), Some(pre.narrow(1, g, extra))),
        };
        let (h, state) = self.run_layers(layer_input, state, weights);
        DecoderStep {
            h,
            rest,
            context,
            attention,
            state,
        }
    }

    /// One decoding step: previous tokens + state -> next-token logits, new state, attention.
    /// With a memory from [`with_decoding_cache`](Self::with_decoding_cache) it uses the
    /// [`DecodingCache`]; the result is the same up to rounding.
    ///
    /// # Shapes
    /// - `tokens`: `[batch]` previous token ids (`<sos>` at the first step)
    /// - returns logits `[batch, tgt_vocab]`, attention `[batch, src_len]`
    pub fn step(
        &self,
        memory: &Memory<B>,
        tokens: Tensor<B, 1, Int>,
        state: DecoderState<B>,
    ) -> StepOutput<B> {
        if let Some(cache) = &memory.cache {
            return self.cached_step(memory, cache, tokens, state);
        }
        let embedded = crate::dropout::apply(
            &self.dropout,
            self.embedding
                .forward(tokens.unsqueeze_dim(1))
                .squeeze_dim(1),
        );
        let (w_emb, w_ctx) = self.embedding_weights();
        let projected =
            embedded.clone().matmul(w_emb) + self.decoder_layers[0].bias_ih.val().unsqueeze();
        let weights: Vec<_> = self.decoder_layers.iter().map(RnnLayer::weights).collect();
        let out = self.decoder_step(
            memory,
            projected,
            ContextShare::Project(&w_ctx),
            state,
            &weights,
        );
        let context = out
            .context
            .expect("a projected context share keeps the context");
        let logits = self
            .output
            .forward(Tensor::cat(vec![out.h, context, embedded], 1));
        StepOutput {
            logits,
            state: out.state,
            attention: out.attention,
        }
    }

    /// [`step`](Self::step) with the [`DecodingCache`]: the embedding's share of both
    /// projections looked up, the context's computed in one product, or with the values no
    /// context at all.
    fn cached_step(
        &self,
        memory: &Memory<B>,
        cache: &DecodingCache<B>,
        tokens: Tensor<B, 1, Int>,
        state: DecoderState<B>,
    ) -> StepOutput<B> {
        // [batch, gates * d_decoder + tgt_vocab]: both projections' context and embedding
        // shares, biases included.
        let share = match &cache.values {
            Some(values) => ContextShare::Values(values),
            None => ContextShare::Project(&cache.context_weights),
        };
        let input = cache.embedded.clone().select(0, tokens);
        let out = self.decoder_step(memory, input, share, state, &cache.layer_weights);
        let output_share = out.rest.expect("the cache holds the output layer's share");
        let logits = out.h.matmul(cache.output_state.clone()) + output_share;
        StepOutput {
            logits,
            state: out.state,
            attention: out.attention,
        }
    }

    /// Teacher-forced forward pass over whole target sequences. The embedding's share of the
    /// decoder input projection and the output projection run once for all steps.
    ///
    /// # Shapes
    /// - `source`: `[batch, src_len]`; `lengths`: true source lengths
    /// - `target_input`: `[batch, tgt_len]` (`<sos> y1 .. yn`, padded)
    /// - returns logits `[batch, tgt_len, tgt_vocab]`
    pub fn forward(
        &self,
        source: Tensor<B, 2, Int>,
        lengths: &[usize],
        target_input: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let [batch, steps] = target_input.dims();
        let device = target_input.device();
        let (memory, mut state) = self.start(source, lengths);
        let (w_emb, w_ctx) = self.embedding_weights();
        let g = w_emb.dims()[1];
        let bias_ih = self.decoder_layers[0].bias_ih.val().unsqueeze();
        // The embedding's share of the first layer's input projection and of the output
        // layer: without dropout, rows of `embedding @ w` looked up (one small product per
        // batch), each step's rows by a lookup of its own: the gradient of a lookup is added
        // into a table-sized tensor, where slicing the steps out of one lookup of every
        // position would write full-size zero tensors in the backward pass (see
        // `ops::split_steps`); with dropout, each position's embedding multiplied.
        let (projected, embedded) = if dropout_is_identity::<B>(&self.dropout, &device) {
            let table = self.embedding.weight.val().matmul(w_emb) + bias_ih;
            let projected: Vec<Tensor<B, 2>> = (0..steps)
                .map(|t| {
                    let ids = target_input.clone().narrow(1, t, 1).reshape([batch]);
                    table.clone().select(0, ids)
                })
                .collect();
            let ids = target_input.reshape([batch * steps]);
            (projected, EmbeddingShare::Ids(ids))
        } else {
            let embedded =
                crate::dropout::apply(&self.dropout, self.embedding.forward(target_input));
            let flat = embedded.clone().reshape([batch * steps, self.d_embed]);
            let projected = (flat.matmul(w_emb) + bias_ih).reshape([batch, steps, g]);
            let projected = ops::split_steps(projected, 1)
                .into_iter()
                .map(|p| p.squeeze_dim(1))
                .collect();
            (projected, EmbeddingShare::Features(embedded))
        };
        // The context enters the recurrence only through `w_ctx`, so its share is mixed from
        // `values = outputs @ w_ctx`, one product over every source position, rather than
        // multiplied per step (see [`DecodingCache`]); the contexts the output layer reads are
        // mixed after the loop, in one batched product.
        let values = matmul_rows(memory.outputs.clone(), w_ctx);
        let mut hs = Vec::with_capacity(steps);
        let mut weights = Vec::with_capacity(steps);
        let layer_weights: Vec<_> = self
            .decoder_layers
            .iter()
            .map(RnnLayer::sequence_weights)
            .collect();
        for p in projected {
            let share = ContextShare::Values(&values);
            let out = self.decoder_step(&memory, p, share, state, &layer_weights);
            state = out.state;
            hs.push(out.h);
            weights.push(out.attention);
        }
        let contexts = Tensor::stack::<3>(weights, 1).matmul(memory.outputs);
        match embedded {
            EmbeddingShare::Features(embedded) => linear_rows(
                &self.output,
                Tensor::cat(vec![Tensor::stack(hs, 1), contexts, embedded], 2),
            ),
            EmbeddingShare::Ids(ids) => {
                let features = Tensor::cat(vec![Tensor::stack(hs, 1), contexts], 2);
                let (out_state_context, out_emb, out_bias) = self.output_weights();
                let vocab = out_emb.dims()[1];
                let table = self.embedding.weight.val().matmul(out_emb) + out_bias.unsqueeze();
                matmul_rows(features, out_state_context)
                    + table.select(0, ids).reshape([batch, steps, vocab])
            }
        }
    }

    /// Forward pass with scheduled sampling: at step `t`, row `b` is fed the model's own
    /// previous prediction (argmax) where `use_prediction[t][b]` is true, the reference token
    /// otherwise. Step 0 always gets `<sos>` from `target_input`.
    ///
    /// # Shapes
    /// - as [`forward`](Self::forward); `use_prediction`: `tgt_len` rows of `batch` flags
    pub fn forward_scheduled(
        &self,
        source: Tensor<B, 2, Int>,
        lengths: &[usize],
        target_input: Tensor<B, 2, Int>,
        use_prediction: &[Vec<bool>],
    ) -> Tensor<B, 3> {
        let [batch, steps] = target_input.dims();
        assert_eq!(
            use_prediction.len(),
            steps,
            "one row of flags per target step"
        );
        let device = target_input.device();
        let (memory, mut state) = self.start(source, lengths);
        let mut logits_all = Vec::with_capacity(steps);
        let mut previous: Option<Tensor<B, 1, Int>> = None;
        for (t, flags) in use_prediction.iter().enumerate() {
            let teacher = target_input.clone().narrow(1, t, 1).squeeze_dim(1);
            let tokens = match previous.take() {
                Some(pred) if flags.iter().any(|&f| f) => {
                    let mask = Tensor::<B, 1, Bool>::from_data(
                        burn::tensor::TensorData::new(flags.clone(), [batch]),
                        &device,
                    );
                    teacher.mask_where(mask, pred)
                }
                _ => teacher,
            };
            let out = self.step(&memory, tokens, state);
            state = out.state;
            previous = Some(out.logits.clone().argmax(1).squeeze_dim(1));
            logits_all.push(out.logits);
        }
        Tensor::stack(logits_all, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    s2s_tensor::for_each_backend! {
        type TB = TestBackend;

        fn tiny(
            cell: CellKind,
            attention: AttentionKind,
            bidirectional: bool,
            layers: usize,
        ) -> Seq2Seq<TB> {
            tiny_on::<TB>(&device(), cell, attention, bidirectional, layers)
        }

        fn tiny_on<X: S2sBackend>(
            device: &X::Device,
            cell: CellKind,
            attention: AttentionKind,
            bidirectional: bool,
            layers: usize,
        ) -> Seq2Seq<X> {
            let d_memory = if bidirectional { 16 } else { 8 };
            let config = Seq2SeqConfig::new(12, 10)
                .with_d_embed(6)
                .with_d_hidden(8)
                .with_d_decoder(if attention == AttentionKind::Dot {
                    d_memory
                } else {
                    12
                })
                .with_d_attention(7)
                .with_cell(cell)
                .with_attention(attention)
                .with_bidirectional(bidirectional)
                .with_encoder_layers(layers)
                .with_decoder_layers(layers);
            s2s_tensor::backend::seeded_module::<X, _>(device, 11, || config.init(device))
        }

        fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
        }

        #[test]
        fn step_loop_equals_teacher_forced_forward() {
            let device = device();
            let model = tiny(CellKind::Lstm, AttentionKind::Bahdanau, true, 2);
            let src = ops::id_matrix::<TB>(&[vec![4, 5, 6], vec![7, 8, 0]], 3, &device);
            let tgt = ops::id_matrix::<TB>(&[vec![1, 4, 5, 6], vec![1, 7, 0, 0]], 4, &device);
            let full = ops::to_vec_f32(model.forward(src.clone(), &[3, 2], tgt.clone()));
            let flags = vec![vec![false; 2]; 4];
            let scheduled = ops::to_vec_f32(model.forward_scheduled(src, &[3, 2], tgt, &flags));
            assert!(close(&full, &scheduled, 1e-5));
        }

        /// Every decoder layer runs, each on the output of the one below: after a step the
        /// state holds one entry per layer, layer k's equals `RnnLayer::step` on layer
        /// k - 1's new output and its own previous state, and the logits (of a step and of
        /// the teacher-forced pass) change with the top layer's weights. (From b68b069 until
        /// this test, an off-by-one left every layer above the first out of the loop.)
        #[test]
        fn every_decoder_layer_takes_part() {
            let device = device();
            for cell in [CellKind::Gru, CellKind::Lstm] {
                let model = tiny(cell, AttentionKind::Bahdanau, true, 3);
                let src = ops::id_matrix::<TB>(&[vec![4, 5, 6], vec![7, 8, 0]], 3, &device);
                let tgt = ops::id_matrix::<TB>(&[vec![1, 4, 5], vec![1, 7, 0]], 3, &device);
                let (memory, state) = model.start(src.clone(), &[3, 2]);
                assert_eq!(state.layers.len(), 3);
                let tokens = ops::index_tensor::<TB>(&[1, 1], &device);
                let out = model.step(&memory, tokens.clone(), state.clone());
                assert_eq!(out.state.layers.len(), 3, "{cell:?}: one state per layer");
                let v = ops::to_vec_f32;
                for k in 1..3 {
                    let want = model.decoder_layers[k].step(
                        out.state.layers[k - 1].h.clone(),
                        state.layers[k].clone(),
                    );
                    let have = &out.state.layers[k];
                    assert!(close(&v(have.h.clone()), &v(want.h), 1e-6), "{cell:?}: layer {k}");
                }
                let mut changed = model.clone();
                let top = &mut changed.decoder_layers[2];
                top.bias_hh = burn::module::Param::from_tensor(top.bias_hh.val().add_scalar(1.0));
                let moved = |a: Vec<f32>, b: Vec<f32>| {
                    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) > 1e-3
                };
                let step = |m: &Seq2Seq<TB>| {
                    let (memory, state) = m.start(src.clone(), &[3, 2]);
                    v(m.step(&memory, tokens.clone(), state).logits)
                };
                assert!(moved(step(&model), step(&changed)), "{cell:?}: step logits");
                let forward =
                    |m: &Seq2Seq<TB>| ops::to_vec_f32(m.forward(src.clone(), &[3, 2], tgt.clone()));
                assert!(moved(forward(&model), forward(&changed)), "{cell:?}: forward logits");
            }
        }

        /// Without dropout the teacher-forced pass looks the target embeddings' projections
        /// up, where the step loop multiplies the embeddings: both give the same gradients
        /// for the parameters on those paths. (The lookup does not depend on the cell; one
        /// cell keeps the test short on wgpu's software driver, and the encoder's lookup is
        /// tested for both cells in `rnn`.)
        #[test]
        fn teacher_forced_gradients_equal_step_loop_gradients() {
            type AB = TestAutodiffBackend;
            let device = device();
            let cell = CellKind::Gru;
            let config = Seq2SeqConfig::new(12, 10)
                .with_d_embed(6)
                .with_d_hidden(8)
                .with_d_decoder(12)
                .with_d_attention(7)
                .with_cell(cell);
            let (model, probe) = s2s_tensor::backend::seeded::<AB, _>(&device, 5, || {
                let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
                let model: Seq2Seq<AB> = config.init(&device);
                (model, Tensor::<AB, 3>::random([2, 4, 10], normal, &device))
            });
            let src = ops::id_matrix::<AB>(&[vec![4, 5, 6], vec![7, 8, 0]], 3, &device);
            let tgt = ops::id_matrix::<AB>(&[vec![1, 4, 5, 6], vec![1, 7, 0, 0]], 4, &device);
            let gradients = |logits: Tensor<AB, 3>| {
                let grads = (logits * probe.clone()).sum().backward();
                let v = |t: Option<Tensor<TB, 2>>| ops::to_vec_f32(t.expect("a gradient"));
                let layer = &model.decoder_layers[0];
                let bias = model.output.bias.as_ref().expect("an output bias");
                vec![
                    v(model.embedding.weight.grad(&grads)),
                    v(model.encoder.embedding.weight.grad(&grads)),
                    v(layer.weight_ih.grad(&grads)),
                    v(layer.bias_ih.grad(&grads).map(|b| b.unsqueeze())),
                    v(layer.weight_hh.grad(&grads)),
                    v(layer.bias_hh.grad(&grads).map(|b| b.unsqueeze())),
                    v(model.output.weight.grad(&grads)),
                    v(bias.grad(&grads).map(|b| b.unsqueeze())),
                ]
            };
            let forward = gradients(model.forward(src.clone(), &[3, 2], tgt.clone()));
            let flags = vec![vec![false; 2]; 4];
            let stepped = gradients(model.forward_scheduled(src, &[3, 2], tgt, &flags));
            for (i, (a, b)) in forward.iter().zip(&stepped).enumerate() {
                assert!(close(a, b, 1e-5), "{cell:?}, gradient {i}: {a:?} vs {b:?}");
            }
        }

        /// The decoding cache changes the order of the products, not the step's results:
        /// logits, attention and states with and without it agree, for every cell,
        /// attention kind and depth, over several steps of a padded batch. On wgpu only the
        /// first two settings run (as property tests run a quarter of their cases there, see
        /// `s2s_tensor::backend::proptest_cases`): each new setting compiles new kernels on
        /// CI's software Vulkan device: all five took 190 s of a full test run on llvmpipe,
        /// two take 71 s.
        #[test]
        fn cached_step_equals_plain_step() {
            let device = device();
            let settings = [
                (CellKind::Gru, AttentionKind::Bahdanau, true, 1, true),
                (CellKind::Lstm, AttentionKind::General, false, 2, false),
                (CellKind::Gru, AttentionKind::Bahdanau, true, 1, false),
                (CellKind::Lstm, AttentionKind::General, false, 2, true),
                (CellKind::Gru, AttentionKind::Dot, true, 2, true),
            ];
            let run = cases(settings.len() as u32) as usize;
            for (cell, attention, bidirectional, layers, values) in settings.into_iter().take(run) {
                let model = tiny(cell, attention, bidirectional, layers);
                let src = ops::id_matrix::<TB>(&[vec![4, 5, 6], vec![7, 8, 0]], 3, &device);
                let (plain_memory, mut plain) = model.start(src.clone(), &[3, 2]);
                let (memory, mut cached) = model.start(src, &[3, 2]);
                // Built in two steps, as beam search does: the table first, the values later.
                let cached_memory = model.with_decoding_cache(&memory, false);
                let cached_memory = model.with_decoding_cache(&cached_memory, values);
                assert!(plain_memory.cache.is_none());
                let cache = cached_memory.cache.as_ref().expect("a cache on an inference backend");
                assert_eq!(cache.values.is_some(), values);
                // Row 1 repeated: the cache is gathered with the rows.
                let cached_memory = cached_memory.select_rows(&[0, 1, 1]);
                let plain_memory = plain_memory.select_rows(&[0, 1, 1]);
                plain = plain.select_rows(&[0, 1, 1]);
                cached = cached.select_rows(&[0, 1, 1]);
                for tokens in [[1, 1, 1], [4, 7, 9], [5, 8, 2]] {
                    let tokens = ops::index_tensor::<TB>(&tokens, &device);
                    let a = model.step(&plain_memory, tokens.clone(), plain);
                    let b = model.step(&cached_memory, tokens, cached);
                    let what = format!("{cell:?} {attention:?} {layers} layers, values {values}");
                    let v = ops::to_vec_f32;
                    assert!(close(&v(b.logits), &v(a.logits), 1e-5), "{what}: logits");
                    assert!(close(&v(b.attention), &v(a.attention), 1e-5), "{what}: attention");
                    for (x, y) in b.state.layers.iter().zip(&a.state.layers) {
                        assert!(close(&v(x.h.clone()), &v(y.h.clone()), 1e-5), "{what}: state");
                    }
                    plain = a.state;
                    cached = b.state;
                }
            }
        }

        /// Selecting rows sets the memory's row layout: equal runs from one source each share
        /// it (also when the sources are narrowed or reordered), anything else gets a row per
        /// source, and the layout maps each row to the source it was selected from. On an
        /// autodiff backend rows never share a source.
        #[test]
        fn selected_rows_carry_their_layout() {
            let device = device();
            let model = tiny(CellKind::Gru, AttentionKind::Bahdanau, true, 1);
            let src = ops::id_matrix::<TB>(&[vec![4, 5, 6], vec![7, 8, 0], vec![9, 0, 0]], 3, &device);
            let (memory, _) = model.start(src, &[3, 2, 1]);
            assert_eq!(memory.layout, RowLayout::one_per_source(3));
            let beams = memory.select_rows(&[0, 0, 1, 1, 2, 2]);
            assert_eq!(beams.layout, RowLayout::shared(3, 2));
            assert_eq!(beams.lengths, [3, 3, 2, 2, 1, 1]);
            // Beams of sentence 2 then sentence 0: sources 2 and 0, two rows each.
            let narrowed = beams.select_rows(&[5, 4, 1, 0]);
            assert_eq!(narrowed.layout, RowLayout::shared(2, 2));
            assert_eq!(narrowed.lengths, [1, 1, 3, 3]);
            assert_eq!(narrowed.outputs.dims()[0], 2);
            let uneven = beams.select_rows(&[0, 1, 2]);
            assert_eq!(uneven.layout, RowLayout::one_per_source(3));
            assert_eq!(uneven.lengths, [3, 3, 2]);
            let empty = beams.select_rows(&[]);
            assert_eq!(empty.layout.rows(), 0);
            type AB = TestAutodiffBackend;
            let model = tiny_on::<AB>(&device, CellKind::Gru, AttentionKind::Bahdanau, true, 1);
            let src = ops::id_matrix::<AB>(&[vec![4, 5, 6], vec![7, 8, 0]], 3, &device);
            let (memory, _) = model.start(src, &[3, 2]);
            let copies = memory.select_rows(&[0, 0, 1, 1]);
            assert_eq!(copies.layout, RowLayout::one_per_source(4));
        }

        /// Rows that share a source (the beams of one sentence) read its encoder products in
        /// place; their steps equal those of rows with copies of them, for every attention
        /// kind, with and without the cache's values, across a selection that keeps the
        /// sharing and one that narrows it to one source. (As for `cached_step_equals_plain_step`,
        /// wgpu runs the first two settings.)
        #[test]
        fn shared_sources_equal_copied_rows() {
            let device = device();
            let settings = [
                (CellKind::Gru, AttentionKind::Bahdanau, true),
                (CellKind::Lstm, AttentionKind::General, false),
                (CellKind::Gru, AttentionKind::Bahdanau, false),
                (CellKind::Gru, AttentionKind::Dot, true),
            ];
            let run = cases(settings.len() as u32) as usize;
            for (cell, attention, values) in settings.into_iter().take(run) {
                let model = tiny(cell, attention, true, 1);
                let src = ops::id_matrix::<TB>(&[vec![4, 5, 6], vec![7, 8, 0]], 3, &device);
                let (memory, state) = model.start(src, &[3, 2]);
                let memory = model.with_decoding_cache(&memory, values);
                // Runs of three rows per source: shared. A seventh row breaks the runs: copied.
                let shared = memory.select_rows(&[0, 0, 0, 1, 1, 1]);
                let copied = memory.select_rows(&[0, 0, 0, 1, 1, 1, 0]);
                assert_eq!(shared.outputs.dims()[0], 2, "three rows per source");
                assert_eq!(copied.outputs.dims()[0], 7, "a row per copy");
                let mut a = (shared, state.clone().select_rows(&[0, 0, 0, 1, 1, 1]));
                let mut b = (copied, state.select_rows(&[0, 0, 0, 1, 1, 1, 0]));
                let what = format!("{cell:?} {attention:?}, values {values}");
                let v = ops::to_vec_f32;
                for (step, tokens) in [[1, 1, 1, 1, 1, 1], [4, 7, 9, 5, 2, 8]].iter().enumerate() {
                    let rows = tokens.len();
                    // The copied rows have the seventh at the first step.
                    let extra = (b.0.batch_size() > rows).then_some(&3);
                    let b_tokens: Vec<usize> = tokens.iter().chain(extra).copied().collect();
                    let x = model.step(&a.0, ops::index_tensor::<TB>(tokens, &device), a.1);
                    let y = model.step(&b.0, ops::index_tensor::<TB>(&b_tokens, &device), b.1);
                    let first = |t: Tensor<TB, 2>| v(t.narrow(0, 0, rows));
                    assert!(close(&v(x.logits), &first(y.logits), 1e-5), "{what}: logits");
                    assert!(close(&v(x.attention), &first(y.attention), 1e-5), "{what}: attention");
                    for (p, q) in x.state.layers.iter().zip(&y.state.layers) {
                        assert!(close(&v(p.h.clone()), &first(q.h.clone()), 1e-5), "{what}: state");
                    }
                    // Then the beams of the second source only, in another order.
                    let next = [5, 4, 3, 5, 4, 3];
                    a = (a.0.select_rows(&next), x.state.select_rows(&next));
                    b = (b.0.select_rows(&next), y.state.select_rows(&next));
                    if step == 0 {
                        assert_eq!(a.0.outputs.dims()[0], 1, "one source left");
                    }
                }
            }
        }

        #[test]
        fn embedding_rows_are_overwritten_and_others_kept() {
            let model = tiny(CellKind::Gru, AttentionKind::Bahdanau, true, 1);
            let before = ops::to_vec_f32(model.encoder.embedding.weight.val());
            let row = vec![0.5, -1.0, 2.0, 0.0, 1.5, -0.25];
            let model = model.with_embedding_rows(true, &[(5, row.clone())]).unwrap();
            let after = ops::to_vec_f32(model.encoder.embedding.weight.val());
            assert_eq!(&after[30..36], row.as_slice());
            assert_eq!(&after[..30], &before[..30]);
            assert_eq!(&after[36..], &before[36..]);
            let target_before = ops::to_vec_f32(model.embedding.weight.val());
            let model = model.with_embedding_rows(false, &[(9, row.clone())]).unwrap();
            let target_after = ops::to_vec_f32(model.embedding.weight.val());
            assert_eq!(&target_after[54..60], row.as_slice());
            assert_eq!(&target_after[..54], &target_before[..54]);
            assert!(model.clone().with_embedding_rows(true, &[(5, vec![1.0; 5])]).is_err());
            assert!(model.with_embedding_rows(false, &[(10, row)]).is_err());
        }

        #[test]
        fn invalid_configs_are_reported() {
            let c = Seq2SeqConfig::new(10, 10)
                .with_attention(AttentionKind::Dot)
                .with_d_decoder(100);
            assert!(c
                .validate()
                .unwrap_err()
                .to_string()
                .contains("dot attention"));
            assert!(Seq2SeqConfig::new(4, 10).validate().is_err());
            assert!(Seq2SeqConfig::new(10, 10)
                .with_dropout(1.0)
                .validate()
                .is_err());
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(cases(24)))]
            /// A sequence encodes and decodes the same alone or inside a padded batch of random
            /// other sequences, at any position.
            #[test]
            fn alone_equals_in_padded_batch(
                seqs in prop::collection::vec(prop::collection::vec(4u32..12, 1..7), 1..5),
                target in prop::collection::vec(4u32..10, 1..5),
                pick in any::<prop::sample::Index>(),
                cell in prop_oneof![Just(CellKind::Gru), Just(CellKind::Lstm)],
                attention in prop_oneof![Just(AttentionKind::Bahdanau), Just(AttentionKind::Dot), Just(AttentionKind::General)],
                bidirectional in any::<bool>(),
            ) {
                let device = device();
                let model = tiny(cell, attention, bidirectional, 1);
                let i = pick.index(seqs.len());
                let lengths: Vec<usize> = seqs.iter().map(Vec::len).collect();
                let width = *lengths.iter().max().unwrap();
                let rows: Vec<Vec<u32>> = seqs.iter().map(|s| { let mut r = s.clone(); r.resize(width, 0); r }).collect();
                let mut tgt = vec![1u32];
                tgt.extend(&target);
                let tgt_rows = vec![tgt.clone(); seqs.len()];
                let batch = model.forward(ops::id_matrix::<TB>(&rows, width, &device), &lengths,
                    ops::id_matrix::<TB>(&tgt_rows, tgt.len(), &device));
                let [_, t, v] = batch.dims();
                let in_batch = ops::to_vec_f32(batch.slice([i..i + 1, 0..t, 0..v]));
                let alone = ops::to_vec_f32(model.forward(
                    ops::id_matrix::<TB>(std::slice::from_ref(&seqs[i]), lengths[i], &device), &lengths[i..i + 1],
                    ops::id_matrix::<TB>(std::slice::from_ref(&tgt), tgt.len(), &device)));
                prop_assert!(close(&in_batch, &alone, 1e-5), "{:?} vs {:?}", in_batch, alone);
            }
        }
    }
}
