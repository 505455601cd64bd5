//! Neural network layers for RNN encoder-decoder models, generic over the Burn backend.
//!
//! - [`rnn`]: LSTM and GRU layers with PyTorch's gate equations, written so that the input
//!   projection of a whole sequence is one matmul and each time step is one fused matmul over
//!   the concatenated gates; padded positions never change a state.
//! - [`encoder`]: embedding + stacked (optionally bidirectional) recurrent layers, length-aware
//!   (what `pack_padded_sequence` gives PyTorch users).
//! - [`dropout`]: dropout with masks from a generator the trainer seeds per step and share.
//! - [`attention`]: Bahdanau (additive) and Luong (dot, general) attention with source
//!   padding masked.
//! - [`model`]: the [`Seq2Seq`] model with a bridge from encoder to decoder states, a
//!   teacher-forced training forward and a step API ([`Seq2Seq::start`], [`Seq2Seq::step`])
//!   that every decoding strategy uses.
//! - [`weights`]: the model's weights under PyTorch's names and layouts (those of the
//!   reference module in `python/s2s_reference`), and as safetensors files; [`torch_file`]
//!   reads and writes them as PyTorch's `.pt` files of a `state_dict`.
//!
//! ```
//! use s2s_nn::{Seq2SeqConfig, CellKind};
//! use s2s_tensor::{backend::DefaultBackend as B, ops};
//!
//! let device = Default::default();
//! let config = Seq2SeqConfig::new(10, 12)
//!     .with_d_embed(8).with_d_hidden(16).with_d_decoder(16).with_d_attention(16)
//!     .with_cell(CellKind::Lstm);
//! config.validate().unwrap();
//! let model = config.init::<B>(&device);
//! let src = ops::id_matrix::<B>(&[vec![4, 5, 6], vec![7, 0, 0]], 3, &device);
//! let (memory, state) = model.start(src, &[3, 1]);
//! let sos = ops::index_tensor::<B>(&[1, 1], &device);
//! let out = model.step(&memory, sos, state);
//! assert_eq!(out.logits.dims(), [2, 12]);
//! assert_eq!(out.attention.dims(), [2, 3]);
//! ```

pub mod attention;
pub mod dropout;
pub mod encoder;
pub mod linear;
pub mod model;
pub mod rnn;
pub mod torch_file;
pub mod weights;

pub use attention::{Attention, AttentionConfig, AttentionKind};
pub use encoder::{Encoder, EncoderConfig, EncoderOutput};
pub use model::{
    DecoderState, DecodingCache, Memory, ModelError, Seq2Seq, Seq2SeqConfig, StepOutput,
};
pub use rnn::{CellKind, DirectionsOutput, RnnLayer, RnnLayerConfig, RnnState};
