//! Running s2s models: what a program that uses a trained model needs, without the training
//! crate.
//!
//! - [`checkpoint`]: model folders (`config.json`, vocabularies, `model.safetensors`):
//!   [`Checkpoint::load`] checks every weight against the configuration, reads folders of
//!   the earlier layout (`model.mpk`), resolves a training run folder to its best model;
//!   [`Checkpoint::save`] writes a folder atomically; [`Checkpoint::convert`] brings an old
//!   folder to the current layout.
//! - [`durable`]: atomic, synced writes of files and folders, and cleanup after a kill.
//! - [`options`]: [`DecodeOptions`], the options of `s2s decode` as data (serde, with
//!   `s2s decode`'s defaults), checked and turned into a strategy.
//! - [`translator`]: a [`Translator`], one model or an ensemble on a device, that turns
//!   strings into outputs (text, tokens, score, attention) through length-sorted batches
//!   decoded by several threads; outputs do not depend on the batching.
//! - [`batcher`]: a [`Batcher`], the dynamic batching of a server: inputs of requests that
//!   arrive within a few milliseconds are decoded together.
//!
//! ```no_run
//! use s2s_infer::{DecodeOptions, StrategyKind, Translator};
//! use s2s_tensor::backend::{flex_device, Flex};
//!
//! let device = flex_device("cpu")?;
//! let translator = Translator::<Flex>::load(&["runs/g2p".into()], &device)?;
//! let options = DecodeOptions { strategy: StrategyKind::Beam, n_best: 3, ..Default::default() };
//! for t in translator.translate(&["hello", "world"], &options)? {
//!     for out in &t.outputs {
//!         println!("{}\t{}", out.text, out.score);
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod batcher;
pub mod checkpoint;
pub mod durable;
pub mod options;
pub mod translator;

pub use batcher::{Batcher, BatcherConfig, BatcherStats, SubmitError};
pub use checkpoint::{Checkpoint, CheckpointError, CheckpointMeta};
pub use options::{DecodeOptions, OptionsError, StrategyKind};
pub use translator::{Output, Translation, Translator};
