//! Model folders: configuration, vocabularies and weights, written atomically.
//!
//! A folder holds `config.json` ([`CheckpointMeta`]: model configuration, tokenizers, task,
//! training summary), `source_vocab.json`, `target_vocab.json` and `model.safetensors` (the
//! weights under PyTorch's names and layouts, [`s2s_nn::weights`], docs/model-format.md).
//! Folders of layout 1 hold `model.mpk` (Burn's named MessagePack) instead; they keep
//! loading, and saving one again writes layout 2 (`s2s convert`). [`Checkpoint::save`] writes
//! a complete folder beside the destination, syncs it and renames it into place, so a crash
//! never leaves a half-written checkpoint at the destination; [`Checkpoint::load`] checks
//! every weight's name and shape against `config.json`.

use crate::durable;
use burn::module::{Module, ModuleVisitor, Param};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use s2s_data::{TextCodec, Tokenizer, Vocab};
use s2s_decode::Ensemble;
use s2s_nn::{weights, Seq2Seq, Seq2SeqConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the folder layout that s2s writes: the weights in `model.safetensors`.
pub const FORMAT: u32 = 2;

/// The layout before [`FORMAT`] 2, read but no longer written: the weights in Burn's
/// `model.mpk`.
pub const MPK_FORMAT: u32 = 1;

/// The weights file of a [`FORMAT`] folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The weights file of an [`MPK_FORMAT`] folder.
pub const MPK_WEIGHTS_FILE: &str = "model.mpk";

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

impl From<durable::IoError> for CheckpointError {
    fn from(e: durable::IoError) -> Self {
        CheckpointError::Io {
            path: e.path,
            source: e.source,
        }
    }
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
    /// Version of s2s that wrote the folder (empty for folders written before it was
    /// recorded).
    #[serde(default)]
    pub s2s_version: String,
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

/// Whether `dir` holds a model folder's `config.json` ([`CheckpointMeta`]).
pub fn is_model_folder(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<CheckpointMeta>(&t).ok())
        .is_some()
}

/// The name of the best model's folder in a training run folder.
pub const BEST: &str = "best";

/// The key of a training run folder's `config.json` that marks it as one (its value is the
/// run folder's layout version).
pub const RUN_MARK: &str = "s2s_run";

/// Whether `dir/config.json` marks `dir` as a training run folder (`s2s_train::run`).
pub fn is_run_folder(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v.get(RUN_MARK).is_some())
}

/// The model folder that `dir` names: `dir` itself, or for a training run folder
/// ([`is_run_folder`]), its `best/` model; if a process was killed while it replaced `best/`,
/// the complete previous version that it left (`.best.old-PID`), which the next
/// `s2s train --resume` puts back.
pub fn model_folder(dir: &Path) -> PathBuf {
    if !is_run_folder(dir) {
        return dir.to_path_buf();
    }
    let best = dir.join(BEST);
    if best.is_dir() {
        return best;
    }
    let prefix = format!(".{}.old-", BEST);
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && durable::is_temp_name(n))
        })
        .unwrap_or(best)
}

/// The name and shape of every float parameter of `model`, in visiting order, without
/// initialising lazy parameters.
pub fn parameter_shapes<B: Backend, M: Module<B>>(model: &M) -> Vec<(String, Vec<usize>)> {
    struct Shapes {
        path: Vec<String>,
        out: Vec<(String, Vec<usize>)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.out
                .push((self.path.join("."), param.lazy_shape().dims::<D>().to_vec()));
        }
    }
    let mut shapes = Shapes {
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut shapes);
    shapes.out
}

/// The settings of the model folder whose `config.json` is `config`: the metadata (checked:
/// format, a valid model configuration) and the tokenizers with the vocabularies beside it
/// (checked against the model's vocabulary sizes). The weights are not read.
pub fn load_settings(config: &Path) -> Result<(CheckpointMeta, TextCodec), CheckpointError> {
    let dir = durable::parent_of(config);

    let text = std::fs::read_to_string(config).map_err(io(config))?;
    let meta: CheckpointMeta =
        serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
            path: config.to_path_buf(),
            message: e.to_string(),
        })?;
    if meta.format != FORMAT && meta.format != MPK_FORMAT {
        return Err(CheckpointError::Invalid {
            path: config.to_path_buf(),
            message: format!(
                "format {} is not supported (expected {FORMAT}, or {MPK_FORMAT} for folders \
                 with model.mpk)",
                meta.format
            ),
        });
    }
    meta.model
        .validate()
        .map_err(|e| CheckpointError::Invalid {
            path: config.to_path_buf(),
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
    let codec = TextCodec {
        source_tokenizer: meta.source_tokenizer.clone(),
        target_tokenizer: meta.target_tokenizer.clone(),
        source_vocab,
        target_vocab,
    };
    Ok((meta, codec))
}

impl<B: Backend> Checkpoint<B> {
    /// Writes the model folder's files (`config.json`, the vocabularies,
    /// `model.safetensors`), always of layout [`FORMAT`], into the existing folder `dir`,
    /// without syncing them: [`save`](Self::save) and the trainer call it on a temporary
    /// folder that they sync and rename.
    pub fn write_files(&self, dir: &Path) -> Result<(), CheckpointError> {
        let config = dir.join("config.json");
        let mut meta = self.meta.clone();
        meta.format = FORMAT;
        meta.s2s_version = env!("CARGO_PKG_VERSION").to_string();
        let json = serde_json::to_string_pretty(&meta).expect("metadata serialises");
        std::fs::write(&config, json).map_err(io(&config))?;
        self.codec
            .source_vocab
            .save(&dir.join("source_vocab.json"))?;
        self.codec
            .target_vocab
            .save(&dir.join("target_vocab.json"))?;
        let path = dir.join(WEIGHTS_FILE);
        let bytes = weights_file(&weights::named_tensors(&self.model), &path)?;
        std::fs::write(&path, bytes).map_err(io(&path))
    }

    /// Writes the checkpoint to `dir` atomically and durably ([`durable::write_dir`]): the
    /// files go to a fresh sibling folder, are synced, and the folder replaces `dir`.
    ///
    /// `dir` must not exist or be a model folder already: anything else there is an error,
    /// and nothing is touched.
    pub fn save(&self, dir: &Path) -> Result<(), CheckpointError> {
        if dir.exists() && !is_model_folder(dir) {
            return Err(CheckpointError::Invalid {
                path: dir.to_path_buf(),
                message: "exists and is not an s2s model folder; not replaced".into(),
            });
        }
        let parent = durable::parent_of(dir);
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        durable::write_dir(dir, |tmp| self.write_files(tmp))
    }

    /// Reads the model folder `dir` (or a training run folder's `best/` model) onto
    /// `device`. Every weight's name and shape is checked against `config.json`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self, CheckpointError> {
        let dir = &model_folder(dir);
        if !dir.is_dir() {
            return Err(CheckpointError::Invalid {
                path: dir.to_path_buf(),
                message: format!(
                    "not a model folder (expected config.json, vocabularies and {WEIGHTS_FILE})"
                ),
            });
        }
        let config = dir.join("config.json");
        let (meta, codec) = load_settings(&config)?;
        let model = if meta.format == MPK_FORMAT {
            load_mpk(dir, &meta.model, device)?
        } else {
            let path = dir.join(WEIGHTS_FILE);
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let invalid = |message| CheckpointError::Invalid {
                path: path.clone(),
                message,
            };
            let tensors = weights::from_safetensors(&bytes)
                .map_err(|e| invalid(format!("cannot read weights: {e}")))?;
            weights::from_named_tensors::<B>(&meta.model, tensors, device)
                .map_err(|e| invalid(format!("{e} (from {})", config.display())))?
        };
        Ok(Checkpoint { codec, meta, model })
    }

    /// Brings the model folder `dir` (not a run folder) to layout [`FORMAT`] in place and
    /// returns whether it had to: a layout-1 folder gets `model.safetensors`, then its
    /// `config.json` with the new `format` (each written atomically, so a crash leaves a folder
    /// that loads), is read back and compared weight for weight with `model.mpk`, which is
    /// then removed. Everything else in the folder (a run's `last/` optimizer state) stays.
    pub fn convert(dir: &Path, device: &B::Device) -> Result<bool, CheckpointError> {
        let config = dir.join("config.json");
        let (meta, _) = load_settings(&config)?;
        if meta.format == FORMAT {
            return Ok(false);
        }
        let old = Checkpoint::<B>::load(dir, device)?;
        let tensors = weights::named_tensors(&old.model);
        let path = dir.join(WEIGHTS_FILE);
        durable::write_file(&path, &weights_file(&tensors, &path)?)?;
        let mut meta = old.meta.clone();
        meta.format = FORMAT;
        meta.s2s_version = env!("CARGO_PKG_VERSION").to_string();
        let json = serde_json::to_string_pretty(&meta).expect("metadata serialises");
        durable::write_file(&config, json.as_bytes())?;
        let new = Checkpoint::<B>::load(dir, device)?;
        if weights::named_tensors(&new.model) != tensors {
            return Err(CheckpointError::Invalid {
                path,
                message: format!(
                    "does not read back as the weights of {MPK_WEIGHTS_FILE}; both are kept"
                ),
            });
        }
        let mpk = dir.join(MPK_WEIGHTS_FILE);
        std::fs::remove_file(&mpk).map_err(io(&mpk))?;
        durable::sync_dir(dir)?;
        Ok(true)
    }

    /// Loads the models of an ensemble (model folders or run folders, see [`load`]): they
    /// must share their tokenizers and vocabularies, token for token, since they read the
    /// same source ids and their next-token distributions are averaged. Returns the first
    /// checkpoint (whose codec and settings the ensemble uses) and the ensemble of all.
    ///
    /// [`load`]: Checkpoint::load
    pub fn load_ensemble(
        dirs: &[PathBuf],
        device: &B::Device,
    ) -> Result<(Checkpoint<B>, Ensemble<Seq2Seq<B>>), CheckpointError> {
        let Some((first_dir, rest)) = dirs.split_first() else {
            return Err(CheckpointError::Invalid {
                path: PathBuf::new(),
                message: "an ensemble needs at least one model folder".into(),
            });
        };
        let first = Checkpoint::<B>::load(first_dir, device)?;
        let mut models = vec![first.model.clone()];
        for dir in rest {
            let other = Checkpoint::<B>::load(dir, device)?;
            if let Some(what) = codec_difference(&first.codec, &other.codec) {
                return Err(CheckpointError::Invalid {
                    path: model_folder(dir),
                    message: format!(
                        "cannot be ensembled with {}: {what}",
                        model_folder(first_dir).display()
                    ),
                });
            }
            models.push(other.model);
        }
        let ensemble = Ensemble::new(models).expect("at least the first model");
        Ok((first, ensemble))
    }
}

/// The bytes of `model.safetensors` (at `path`, for the error) for `tensors`.
fn weights_file(
    tensors: &std::collections::BTreeMap<String, weights::NamedTensor>,
    path: &Path,
) -> Result<Vec<u8>, CheckpointError> {
    weights::to_safetensors(tensors, Some(weights::file_metadata())).map_err(|e| {
        CheckpointError::Invalid {
            path: path.to_path_buf(),
            message: format!("cannot write weights: {e}"),
        }
    })
}

/// The weights of a layout-1 folder (`model.mpk`, Burn's named MessagePack), each
/// parameter's shape checked against `model`'s configuration.
fn load_mpk<B: Backend>(
    dir: &Path,
    model: &Seq2SeqConfig,
    device: &B::Device,
) -> Result<Seq2Seq<B>, CheckpointError> {
    let path = dir.join(MPK_WEIGHTS_FILE);
    let fresh = model.init::<B>(device);
    let expected = parameter_shapes(&fresh);
    let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
    let loaded = fresh
        .load_file(path.with_extension(""), &recorder, device)
        .map_err(|e| CheckpointError::Invalid {
            path: path.clone(),
            message: format!("cannot read weights: {e}"),
        })?;
    let found = parameter_shapes(&loaded);
    for ((name, want), (_, got)) in expected.iter().zip(&found) {
        if want != got {
            return Err(CheckpointError::Invalid {
                path,
                message: format!(
                    "parameter {name} has shape {got:?}, but config.json gives {want:?}"
                ),
            });
        }
    }
    Ok(loaded)
}

/// How two codecs differ (tokenizers, then vocabularies: sizes or the first differing id),
/// or `None` when they are the same.
pub fn codec_difference(a: &TextCodec, b: &TextCodec) -> Option<String> {
    if a.source_tokenizer != b.source_tokenizer || a.target_tokenizer != b.target_tokenizer {
        return Some("its tokenizers differ".into());
    }
    for (side, x, y) in [
        ("source", &a.source_vocab, &b.source_vocab),
        ("target", &a.target_vocab, &b.target_vocab),
    ] {
        if x.len() != y.len() {
            return Some(format!(
                "its {side} vocabulary has {} tokens, not {}",
                y.len(),
                x.len()
            ));
        }
        if let Some(id) = (0..x.len()).find(|&i| x.tokens()[i] != y.tokens()[i]) {
            return Some(format!(
                "its {side} vocabulary has {:?} at id {id}, not {:?}",
                y.tokens()[id],
                x.tokens()[id]
            ));
        }
    }
    None
}
