//! Training run folders: the whole state of a run, safe to stop at any moment.
//!
//! ```text
//! DIR/
//!   config.json     the run's settings (what `s2s train --config` reads back), marked as a run
//!   metrics.jsonl   one JSON object per event: training steps, validations, resumptions
//!   best/           the model with the best validation score (a model folder)
//!   last/           the latest model (a model folder) and, beside its weights, the training
//!                   state: training_state.json and optimizer.bin
//!   checkpoints/    with keep_checkpoints: the model of each of the last validations,
//!                   step-NNNNNNNN/ (model folders)
//!   averaged/       with average_last: the mean of the last kept checkpoints (a model folder)
//! ```
//!
//! [`RunFolder::open`] refuses a folder that is neither empty nor a run folder, and an
//! existing run folder unless the caller asked to resume it or to start it again; it never
//! removes anything it did not write. Every file is written through [`crate::durable`].

use crate::durable::{self, at, IoError};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The best model's folder (`BEST`), the mark of a run folder's `config.json` (`RUN_MARK`)
/// and its test ([`is_run_folder`]) live with the model folders, in `s2s_infer`.
pub use s2s_infer::checkpoint::{is_run_folder, BEST, RUN_MARK};
/// The latest model's folder, with the training state.
pub const LAST: &str = "last";
/// The folder of the kept checkpoints.
pub const CHECKPOINTS: &str = "checkpoints";
/// The averaged model's folder.
pub const AVERAGED: &str = "averaged";
/// The settings file.
pub const CONFIG: &str = "config.json";
/// The event log.
pub const METRICS: &str = "metrics.jsonl";
/// Version of the run folder layout.
pub const RUN_FORMAT: u64 = 1;

/// An error opening or writing a run folder.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// File system error.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The folder cannot be used as asked; nothing was changed.
    #[error("{}: {message}", path.display())]
    Refused {
        /// The folder.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// How to treat an existing run folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// A new run: the folder must not exist, or be empty.
    New,
    /// Continue the run in the folder from its `last/` checkpoint.
    Resume,
    /// Start the run in the folder again: its `best/`, `last/`, `checkpoints/`, `averaged/`
    /// and `metrics.jsonl` are removed.
    Overwrite,
}

/// An open run folder.
#[derive(Debug, Clone)]
pub struct RunFolder {
    dir: PathBuf,
    /// False for a [`follower`](Self::follower): reads only.
    writes: bool,
}

impl RunFolder {
    /// Checks that [`open`](Self::open) would accept `dir` in `mode`, changing nothing:
    /// - `dir` exists and is not a folder, or is a folder that holds anything but a run: an
    ///   error;
    /// - `dir` is a run folder and `mode` is [`OpenMode::New`]: an error;
    /// - `mode` is [`OpenMode::Resume`] and `dir` is not a run folder: an error.
    ///
    /// Returns whether `dir` is a run folder.
    pub fn check(dir: &Path, mode: OpenMode) -> Result<bool, RunError> {
        let refuse = |message: String| RunError::Refused {
            path: dir.to_path_buf(),
            message,
        };
        if dir.exists() && !dir.is_dir() {
            return Err(refuse(
                "exists and is not a folder; nothing was changed".into(),
            ));
        }
        let exists = dir.is_dir();
        // Empty, or holding only what a process killed during its first save left.
        let mut empty = exists;
        if exists {
            for entry in std::fs::read_dir(dir).map_err(at(dir))? {
                let name = entry.map_err(at(dir))?.file_name();
                empty &= durable::is_temp_name(&name.to_string_lossy());
            }
        }
        let is_run = exists && is_run_folder(dir);
        if exists && !empty && !is_run {
            let what = if crate::checkpoint::is_model_folder(dir) {
                "holds an s2s model folder, not a training run"
            } else {
                "is not empty and is not an s2s training run folder"
            };
            return Err(refuse(format!(
                "{what}; choose another --out (nothing was changed)"
            )));
        }
        match mode {
            OpenMode::New if is_run => Err(refuse(
                "is an s2s training run already: pass --resume to continue it or \
                 --overwrite to start it again (nothing was changed)"
                    .into(),
            )),
            OpenMode::Resume if !is_run => Err(refuse(
                "is not an s2s training run folder; nothing to resume".into(),
            )),
            _ => Ok(is_run),
        }
    }

    /// Opens `dir` for a run in `mode` (after [`check`](Self::check)), cleaning up what a
    /// killed process left in it ([`durable::recover`]). [`OpenMode::Resume`] needs a `last/`
    /// checkpoint; [`OpenMode::Overwrite`] removes the run's `best/`, `last/`,
    /// `checkpoints/`, `averaged/` and `metrics.jsonl`, and nothing else.
    pub fn open(dir: &Path, mode: OpenMode) -> Result<Self, RunError> {
        let refuse = |message: String| RunError::Refused {
            path: dir.to_path_buf(),
            message,
        };
        let is_run = Self::check(dir, mode)?;
        std::fs::create_dir_all(dir).map_err(at(dir))?;
        let run = RunFolder {
            dir: dir.to_path_buf(),
            writes: true,
        };
        // `check` passed: the folder is a run folder or holds only temporary files.
        durable::recover(dir)?;
        if run.checkpoints().is_dir() {
            durable::recover(&run.checkpoints())?;
        }
        match mode {
            OpenMode::Resume if !run.last().join(crate::state::STATE).is_file() => {
                return Err(refuse(
                    "has no last/ checkpoint with a training state yet; nothing to resume \
                     (start again with --overwrite)"
                        .into(),
                ));
            }
            OpenMode::Overwrite if is_run => {
                for name in [BEST, LAST, CHECKPOINTS, AVERAGED] {
                    let path = dir.join(name);
                    if path.is_dir() {
                        std::fs::remove_dir_all(&path).map_err(at(&path))?;
                    }
                }
                let metrics = run.metrics();
                if metrics.is_file() {
                    std::fs::remove_file(&metrics).map_err(at(&metrics))?;
                }
                durable::sync_dir(dir)?;
            }
            _ => {}
        }
        Ok(run)
    }

    /// The run folder of `dir` as the peers of a data-parallel run other than rank 0 see it:
    /// they read it (a resumed run's `last/`) but never write it. Nothing is checked or
    /// created; [`log`](Self::log), [`write_config`](Self::write_config),
    /// [`truncate_metrics`](Self::truncate_metrics) and [`sync_metrics`](Self::sync_metrics)
    /// do nothing, and the trainer writes no checkpoint.
    pub fn follower(dir: &Path) -> Self {
        RunFolder {
            dir: dir.to_path_buf(),
            writes: false,
        }
    }

    /// Whether this process writes the run folder (false for a [`follower`](Self::follower)).
    pub fn writes(&self) -> bool {
        self.writes
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `best/`.
    pub fn best(&self) -> PathBuf {
        self.dir.join(BEST)
    }

    /// `last/`.
    pub fn last(&self) -> PathBuf {
        self.dir.join(LAST)
    }

    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join(CHECKPOINTS)
    }

    /// `averaged/`.
    pub fn averaged(&self) -> PathBuf {
        self.dir.join(AVERAGED)
    }

    /// The kept checkpoints in `checkpoints/`, oldest first.
    pub fn kept_checkpoints(&self) -> Result<Vec<PathBuf>, IoError> {
        let dir = self.checkpoints();
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut kept: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(at(&dir))?
            .map(|e| e.map(|e| e.path()).map_err(at(&dir)))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-"))
                    && p.is_dir()
            })
            .collect();
        kept.sort();
        Ok(kept)
    }

    /// `metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.dir.join(METRICS)
    }

    /// The run's settings as written by [`write_config`](Self::write_config), without the
    /// run mark.
    pub fn read_config(&self) -> Result<Value, RunError> {
        let path = self.dir.join(CONFIG);
        let text = std::fs::read_to_string(&path).map_err(at(&path))?;
        let mut value: Value = serde_json::from_str(&text).map_err(|e| RunError::Refused {
            path: path.clone(),
            message: format!("invalid JSON: {e}"),
        })?;
        if let Some(map) = value.as_object_mut() {
            map.remove(RUN_MARK);
            map.remove("s2s_version");
        }
        Ok(value)
    }

    /// Writes `config.json`: `settings` (a JSON object) with the run mark and the s2s
    /// version added.
    pub fn write_config(&self, settings: &Value) -> Result<(), RunError> {
        if !self.writes {
            return Ok(());
        }
        let mut value = settings.clone();
        if let Some(map) = value.as_object_mut() {
            map.insert(RUN_MARK.into(), RUN_FORMAT.into());
            map.insert("s2s_version".into(), env!("CARGO_PKG_VERSION").into());
        }
        let text = serde_json::to_string_pretty(&value).expect("JSON serialises");
        durable::write_file(&self.dir.join(CONFIG), text.as_bytes())?;
        Ok(())
    }

    /// Keeps only the events of `metrics.jsonl` whose `step` is at most `step` (the rest
    /// came after the checkpoint a run resumes from and will be logged again), less the
    /// `end` events of earlier processes.
    pub fn truncate_metrics(&self, step: usize) -> Result<(), RunError> {
        if !self.writes {
            return Ok(());
        }
        let path = self.metrics();
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let mut kept = String::with_capacity(text.len());
        for line in text.lines() {
            let keep = serde_json::from_str::<Value>(line).ok().is_some_and(|v| {
                v.get("event").and_then(Value::as_str) != Some("end")
                    && v.get("step")
                        .and_then(Value::as_u64)
                        .is_some_and(|s| s as usize <= step)
            });
            if keep {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        durable::write_file(&path, kept.as_bytes())?;
        Ok(())
    }

    /// Appends one event to `metrics.jsonl` (flushed; synced at the next checkpoint).
    pub fn log(&self, event: &Value) -> Result<(), RunError> {
        if !self.writes {
            return Ok(());
        }
        let path = self.metrics();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(at(&path))?;
        writeln!(file, "{event}").map_err(at(&path))?;
        Ok(())
    }

    /// Syncs `metrics.jsonl` to disk.
    pub fn sync_metrics(&self) -> Result<(), RunError> {
        if !self.writes {
            return Ok(());
        }
        let path = self.metrics();
        if path.is_file() {
            durable::sync_file(&path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(dir: &Path) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                (p.file_name().unwrap().to_string_lossy().into_owned(), text)
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn foreign_folders_and_files_are_refused_untouched() {
        let root = tempfile::tempdir().unwrap();
        // A folder holding a file of the user's.
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("corpus.tsv"), "a\tb\n").unwrap();
        // A file.
        let file = root.path().join("file.txt");
        std::fs::write(&file, "keep").unwrap();
        // A model folder (not a run).
        let model = root.path().join("model");
        std::fs::create_dir(&model).unwrap();
        let meta = r#"{"format":1,"task":"t","model":{"src_vocab":5,"tgt_vocab":5},"source_tokenizer":"chars","target_tokenizer":"chars","max_decode_len":5}"#;
        std::fs::write(model.join("config.json"), meta).unwrap();
        for mode in [OpenMode::New, OpenMode::Resume, OpenMode::Overwrite] {
            for dir in [&data, &file, &model] {
                let before = if dir.is_dir() { listing(dir) } else { vec![] };
                let err = RunFolder::open(dir, mode).unwrap_err();
                assert!(
                    matches!(err, RunError::Refused { .. }),
                    "{mode:?} {dir:?}: {err}"
                );
                assert!(err.to_string().contains(&dir.display().to_string()));
                if dir.is_dir() {
                    assert_eq!(listing(dir), before);
                }
            }
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
    }

    #[test]
    fn run_folders_need_resume_or_overwrite() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        let run = RunFolder::open(&dir, OpenMode::New).unwrap();
        run.write_config(&serde_json::json!({ "lr": 0.5 })).unwrap();
        assert!(is_run_folder(&dir));
        assert_eq!(run.read_config().unwrap(), serde_json::json!({ "lr": 0.5 }));
        std::fs::create_dir(run.best()).unwrap();
        run.log(&serde_json::json!({ "step": 1 })).unwrap();
        run.log(&serde_json::json!({ "step": 5 })).unwrap();
        // New: refused. Resume without a training state: refused.
        assert!(RunFolder::open(&dir, OpenMode::New).is_err());
        assert!(RunFolder::open(&dir, OpenMode::Resume).is_err());
        assert!(run.best().is_dir());
        std::fs::create_dir(run.last()).unwrap();
        std::fs::write(run.last().join(crate::state::STATE), "{}").unwrap();
        RunFolder::open(&dir, OpenMode::Resume).unwrap();
        run.truncate_metrics(3).unwrap();
        assert_eq!(
            std::fs::read_to_string(run.metrics()).unwrap(),
            "{\"step\":1}\n"
        );
        // Overwrite removes what the run wrote, and nothing else.
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let err = RunFolder::open(&dir, OpenMode::Overwrite);
        assert!(err.is_ok());
        let names: Vec<String> = listing(&dir).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["config.json", "notes.txt"]);
    }

    #[test]
    fn a_killed_swap_of_best_still_names_a_model() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("run");
        let run = RunFolder::open(&dir, OpenMode::New).unwrap();
        run.write_config(&serde_json::json!({})).unwrap();
        assert_eq!(crate::checkpoint::model_folder(&dir), dir.join(BEST));
        // Killed between the swap's renames: only the previous best is left.
        std::fs::create_dir(dir.join(".best.old-12")).unwrap();
        assert_eq!(
            crate::checkpoint::model_folder(&dir),
            dir.join(".best.old-12")
        );
        // The next open puts it back.
        RunFolder::open(&dir, OpenMode::Overwrite).unwrap();
        assert!(!dir.join(".best.old-12").exists());
        assert_eq!(crate::checkpoint::model_folder(&dir), dir.join(BEST));
        // A model folder names itself.
        assert_eq!(
            crate::checkpoint::model_folder(&dir.join(BEST)),
            dir.join(BEST)
        );
    }
}
