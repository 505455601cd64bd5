//! `s2s export` and `s2s import`: a model's weights as a safetensors file under PyTorch's
//! names and layouts (`s2s_nn::weights`, docs/model-format.md), the state_dict of the
//! reference module in `python/s2s_reference`, and back into a model folder.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use s2s_nn::weights;
use s2s_train::checkpoint::load_settings;
use s2s_train::durable;
use s2s_train::Checkpoint;
use std::collections::HashMap;
use std::path::PathBuf;

/// File formats of `s2s export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// safetensors (F32), PyTorch's parameter names: `safetensors.torch.load_file` reads it
    /// and the reference module loads it with `load_state_dict(strict=True)`.
    Safetensors,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Model folder (or training run folder: its best model).
    #[arg(long)]
    model: PathBuf,
    /// File format.
    #[arg(long, value_enum, default_value_t = Format::Safetensors)]
    format: Format,
    /// The file to write; it must not exist yet.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Weights under PyTorch's names (a safetensors file, such as `s2s export` writes or
    /// `safetensors.torch.save_file(model.state_dict(), ...)` of the reference module).
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// The model's `config.json`, with `source_vocab.json` and `target_vocab.json` beside it.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The new model folder; it must not exist yet.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Writes a model's weights under PyTorch's names.
pub fn export<B: s2s_tensor::S2sBackend>(args: ExportArgs, device: &B::Device) -> Result<()> {
    if args.out.exists() {
        bail!(
            "--out {}: exists already; give a new file (nothing was written)",
            args.out.display()
        );
    }
    let checkpoint = Checkpoint::<B>::load(&args.model, device)?;
    let tensors = weights::named_tensors(&checkpoint.model);
    let metadata = HashMap::from([("format".to_string(), "s2s-pytorch-names-1".to_string())]);
    let bytes = match args.format {
        Format::Safetensors => weights::to_safetensors(&tensors, Some(metadata))?,
    };
    durable::write_file(&args.out, &bytes)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {} tensors to {}", tensors.len(), args.out.display());
    Ok(())
}

/// Builds a model folder from weights under PyTorch's names and a config.json.
pub fn import<B: s2s_tensor::S2sBackend>(args: ImportArgs, device: &B::Device) -> Result<()> {
    if args.out.exists() {
        bail!(
            "--out {}: exists already; give a new folder (nothing was written)",
            args.out.display()
        );
    }
    let (meta, codec) = load_settings(&args.config)?;
    let bytes =
        std::fs::read(&args.from).with_context(|| format!("reading {}", args.from.display()))?;
    let tensors =
        weights::from_safetensors(&bytes).with_context(|| format!("{}", args.from.display()))?;
    let model =
        weights::from_named_tensors::<B>(&meta.model, tensors, device).with_context(|| {
            format!(
                "{} does not fit {}",
                args.from.display(),
                args.config.display()
            )
        })?;
    Checkpoint { meta, codec, model }.save(&args.out)?;
    eprintln!(
        "imported {} into {}",
        args.from.display(),
        args.out.display()
    );
    Ok(())
}
