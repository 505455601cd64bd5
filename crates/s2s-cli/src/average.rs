//! `s2s average`: checkpoint averaging from the command line.

use anyhow::{bail, Result};
use clap::Args;
use s2s_train::average::average_checkpoints;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct AverageArgs {
    /// Model folders (or run folders: their best model) of one architecture and one set of
    /// vocabularies, such as a run's checkpoints/step-*.
    #[arg(required = true, value_name = "DIR")]
    models: Vec<PathBuf>,
    /// The new model folder; it must not exist yet.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Averages the weights of the models into a new model folder.
pub fn run<B: s2s_tensor::S2sBackend>(args: AverageArgs, device: &B::Device) -> Result<()> {
    if args.out.exists() {
        bail!(
            "--out {}: exists already; give a new folder (nothing was written)",
            args.out.display()
        );
    }
    let averaged = average_checkpoints::<B>(&args.models, device)?;
    averaged.save(&args.out)?;
    eprintln!(
        "averaged {} models into {}",
        args.models.len(),
        args.out.display()
    );
    Ok(())
}
