//! The training state saved beside the weights in a run's `last/` folder: where the run is
//! (step, epoch, batch), what it has measured so far, and the optimizer's moments.
//!
//! The random draws of a step (dropout masks, scheduled-sampling flags) are seeded from the
//! run's seed and the step ([`crate::trainer`]), so no generator state needs saving: a run
//! resumed at step `s` draws what the uninterrupted run drew at `s`.
//!
//! `optimizer.bin` holds the moments as raw little-endian `f32`, parameter by parameter in
//! the model's visiting order (first moment, then second); `training_state.json` lists each
//! parameter's step count and size, so that a truncated or foreign file is an error naming
//! it.

use crate::checkpoint::CheckpointError;
use crate::optim::SavedMoments;
use crate::trainer::TrainConfig;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The state file in `last/`.
pub const STATE: &str = "training_state.json";
/// The optimizer's moments in `last/`.
pub const OPTIMIZER: &str = "optimizer.bin";

/// Where a run stands and what it has measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingState {
    /// Layout version of this file.
    pub format: u32,
    /// The settings the run was started or last resumed with.
    pub config: TrainConfig,
    /// Optimizer steps taken.
    pub step: usize,
    /// The epoch in progress (1-based).
    pub epoch: usize,
    /// Batches of `epoch` already trained on.
    pub batch: usize,
    /// Training loss summed over the target tokens of `epoch` so far, and those tokens.
    pub epoch_loss: (f64, usize),
    /// The same since the last logged training event, with the summed gradient norms and
    /// the steps.
    pub window: Window,
    /// Best validation so far: the value compared (lower is better) and the step.
    pub best: Option<(f64, f64, usize)>,
    /// Validations since the best one (for `patience`).
    pub bad_validations: usize,
    /// Step of the last validation.
    pub validated_at: Option<usize>,
    /// Seconds of training before this process (for the time limit and the logs).
    pub elapsed_seconds: f64,
    /// Each parameter's optimizer steps and size (`None`: no step yet), in visiting order.
    pub moments: Vec<Option<(i32, usize)>>,
}

/// Sums over the steps since the last logged training event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Loss summed over target tokens.
    pub loss: f64,
    /// Target tokens.
    pub tokens: usize,
    /// Gradient norms (before clipping) summed over steps.
    pub grad_norm: f64,
    /// Steps.
    pub steps: usize,
}

/// Version of [`TrainingState`]'s layout.
pub const STATE_FORMAT: u32 = 1;

fn invalid(path: &Path, message: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Writes `state` and `moments` into the folder `dir` (not synced: the caller's
/// [`crate::durable::write_dir`] does that). `state.moments` is filled from `moments`.
pub fn write(
    dir: &Path,
    state: &TrainingState,
    moments: &[Option<SavedMoments>],
) -> Result<(), CheckpointError> {
    let mut state = state.clone();
    state.moments = moments
        .iter()
        .map(|m| m.as_ref().map(|m| (m.steps, m.moment_1.len())))
        .collect();
    let mut bytes = Vec::new();
    for m in moments.iter().flatten() {
        for v in m.moment_1.iter().chain(&m.moment_2) {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    let path = dir.join(OPTIMIZER);
    std::fs::write(&path, bytes).map_err(crate::durable::at(&path))?;
    let path = dir.join(STATE);
    let json = serde_json::to_string_pretty(&state).expect("state serialises");
    std::fs::write(&path, json).map_err(crate::durable::at(&path))?;
    Ok(())
}

/// Reads what [`write`] wrote in `dir`.
pub fn read(dir: &Path) -> Result<(TrainingState, Vec<Option<SavedMoments>>), CheckpointError> {
    let path = dir.join(STATE);
    let text = std::fs::read_to_string(&path).map_err(crate::durable::at(&path))?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(&path, e.to_string()))?;
    // Settings added to `TrainConfig` after the run was saved take their defaults, so that
    // a newer s2s resumes an older run.
    if let (Some(config), serde_json::Value::Object(defaults)) = (
        value.get_mut("config").and_then(|c| c.as_object_mut()),
        serde_json::to_value(TrainConfig::new()).expect("a config serialises"),
    ) {
        for (key, default) in defaults {
            config.entry(key).or_insert(default);
        }
    }
    let state: TrainingState =
        serde_json::from_value(value).map_err(|e| invalid(&path, e.to_string()))?;
    if state.format != STATE_FORMAT {
        return Err(invalid(
            &path,
            format!(
                "format {} is not supported (expected {STATE_FORMAT})",
                state.format
            ),
        ));
    }
    let path = dir.join(OPTIMIZER);
    let bytes = std::fs::read(&path).map_err(crate::durable::at(&path))?;
    let want: usize = state.moments.iter().flatten().map(|&(_, n)| 8 * n).sum();
    if bytes.len() != want {
        return Err(invalid(
            &path,
            format!(
                "{} bytes, but {STATE} lists {want} (truncated or from another run)",
                bytes.len()
            ),
        ));
    }
    let mut floats = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let moments = state
        .moments
        .iter()
        .map(|m| {
            m.map(|(steps, n)| SavedMoments {
                steps,
                moment_1: floats.by_ref().take(n).collect(),
                moment_2: floats.by_ref().take(n).collect(),
            })
        })
        .collect();
    Ok((state, moments))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (TrainingState, Vec<Option<SavedMoments>>) {
        let state = TrainingState {
            format: STATE_FORMAT,
            config: TrainConfig::new(),
            step: 12,
            epoch: 2,
            batch: 3,
            epoch_loss: (4.5, 9),
            window: Window::default(),
            best: Some((0.25, 1.5, 10)),
            bad_validations: 1,
            validated_at: Some(10),
            elapsed_seconds: 3.0,
            moments: Vec::new(),
        };
        let moments = vec![
            Some(SavedMoments {
                steps: 12,
                moment_1: vec![1.0, -2.5, f32::MIN_POSITIVE],
                moment_2: vec![0.5, 1e-30, 7.0],
            }),
            None,
            Some(SavedMoments {
                steps: 3,
                moment_1: vec![0.1],
                moment_2: vec![0.2],
            }),
        ];
        (state, moments)
    }

    #[test]
    fn state_round_trips_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let (state, moments) = sample();
        write(dir.path(), &state, &moments).unwrap();
        let (got, got_moments) = read(dir.path()).unwrap();
        assert_eq!(got_moments, moments);
        assert_eq!(got.step, 12);
        assert_eq!(got.moments, vec![Some((12, 3)), None, Some((3, 1))]);
    }

    /// A state saved before a setting existed reads with that setting's default.
    #[test]
    fn settings_added_later_take_their_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let (mut state, moments) = sample();
        state.config.keep_checkpoints = 3;
        write(dir.path(), &state, &moments).unwrap();
        let path = dir.path().join(STATE);
        let mut value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let config = value["config"].as_object_mut().unwrap();
        config.remove("keep_checkpoints").unwrap();
        config.remove("average_last").unwrap();
        std::fs::write(&path, value.to_string()).unwrap();
        let (got, _) = read(dir.path()).unwrap();
        assert_eq!(got.config.keep_checkpoints, 0);
        assert_eq!(got.config.average_last, 0);
        assert_eq!(got.step, 12);
    }

    #[test]
    fn a_truncated_optimizer_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (state, moments) = sample();
        write(dir.path(), &state, &moments).unwrap();
        let path = dir.path().join(OPTIMIZER);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = read(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("optimizer.bin") && err.contains("truncated"),
            "{err}"
        );
    }
}
