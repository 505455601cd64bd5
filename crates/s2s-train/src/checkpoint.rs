//! Model folders: configuration, vocabularies and weights, written atomically.
//!
//! A folder holds `config.json` ([`CheckpointMeta`]: model configuration, tokenizers, task,
//! training summary), `source_vocab.json`, `target_vocab.json` and `model.mpk` (named
//! MessagePack, full precision: readable by every backend). [`Checkpoint::save`] writes a
//! complete folder beside the destination and renames it into place, so a crash never leaves
//! a half-written checkpoint at the destination.

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;
use s2s_data::{TextCodec, Tokenizer, Vocab};
use s2s_nn::{Seq2Seq, Seq2SeqConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the folder layout.
pub const FORMAT: u32 = 1;

/// An error reading or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File system error.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is not what it should be.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A vocabulary could not be read.
    #[error(transparent)]
    Data(#[from] s2s_data::DataError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `config.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Layout version ([`FORMAT`]).
    pub format: u32,
    /// Task name (`g2p`, `reverse`, `tsv`, ...).
    pub task: String,
    /// Model configuration.
    pub model: Seq2SeqConfig,
    /// Source tokenizer.
    pub source_tokenizer: Tokenizer,
    /// Target tokenizer.
    pub target_tokenizer: Tokenizer,
    /// Default maximum output length for decoding.
    pub max_decode_len: usize,
    /// Free-form training summary (epoch, scores).
    #[serde(default)]
    pub summary: serde_json::Value,
}

/// A model with everything needed to turn text into text.
#[derive(Debug, Clone)]
pub struct Checkpoint<B: Backend> {
    /// Metadata and configuration.
    pub meta: CheckpointMeta,
    /// Tokenizers and vocabularies.
    pub codec: TextCodec,
    /// The model.
    pub model: Seq2Seq<B>,
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

impl<B: Backend> Checkpoint<B> {
    /// Writes the checkpoint to `dir` atomically: the files go to a fresh sibling folder,
    /// which then replaces `dir` by rename.
    pub fn save(&self, dir: &Path) -> Result<(), CheckpointError> {
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("model");
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let config = tmp.join("config.json");
        let json = serde_json::to_string_pretty(&self.meta).expect("metadata serialises");
        std::fs::write(&config, json).map_err(io(&config))?;
        self.codec
            .source_vocab
            .save(&tmp.join("source_vocab.json"))?;
        self.codec
            .target_vocab
            .save(&tmp.join("target_vocab.json"))?;
        let weights = tmp.join("model");
        self.model
            .clone()
            .save_file(weights.clone(), &recorder())
            .map_err(|e| CheckpointError::Invalid {
                path: weights.with_extension("mpk"),
                message: format!("cannot write weights: {e}"),
            })?;
        // Swap into place: old folder aside, new folder in, old folder removed.
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(io(dir))?;
        }
        std::fs::rename(&tmp, dir).map_err(io(dir))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        Ok(())
    }

    /// Reads a checkpoint written by [`save`](Self::save) onto `device`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, CheckpointError> {
        if !dir.is_dir() {
            return Err(CheckpointError::Invalid {
                path: dir.to_path_buf(),
                message: "not a model folder (expected config.json, vocabularies and model.mpk)"
                    .into(),
            });
        }
        let config = dir.join("config.json");
        let text = std::fs::read_to_string(&config).map_err(io(&config))?;
        let meta: CheckpointMeta =
            serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
                path: config.clone(),
                message: e.to_string(),
            })?;
        if meta.format != FORMAT {
            return Err(CheckpointError::Invalid {
                path: config,
                message: format!(
                    "format {} is not supported (expected {FORMAT})",
                    meta.format
                ),
            });
        }
        meta.model
            .validate()
            .map_err(|e| CheckpointError::Invalid {
                path: config.clone(),
                message: e.to_string(),
            })?;
        let source_vocab = Vocab::load(&dir.join("source_vocab.json"))?;
        let target_vocab = Vocab::load(&dir.join("target_vocab.json"))?;
        for (side, vocab, size) in [
            ("source", &source_vocab, meta.model.src_vocab),
            ("target", &target_vocab, meta.model.tgt_vocab),
        ] {
            if vocab.len() != size {
                return Err(CheckpointError::Invalid {
                    path: dir.join(format!("{side}_vocab.json")),
                    message: format!("{} tokens, but the model expects {size}", vocab.len()),
                });
            }
        }
        let weights = dir.join("model.mpk");
        let model = meta
            .model
            .init::<B>(device)
            .load_file(dir.join("model"), &recorder(), device)
            .map_err(|e| CheckpointError::Invalid {
                path: weights,
                message: format!("cannot read weights: {e}"),
            })?;
        Ok(Checkpoint {
            codec: TextCodec {
                source_tokenizer: meta.source_tokenizer.clone(),
                target_tokenizer: meta.target_tokenizer.clone(),
                source_vocab,
                target_vocab,
            },
            meta,
            model,
        })
    }
}
