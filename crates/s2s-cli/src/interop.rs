//! `s2s export` and `s2s import`: a model's weights as a safetensors file under PyTorch's
//! names and layouts (`s2s_nn::weights`, docs/model-format.md), the state_dict of the
//! reference module in `python/s2s_reference`, and back into a model folder; `s2s convert`
//! brings folders of layout 1 (`model.mpk`) to the current one.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use s2s_nn::{torch_file, weights};
use s2s_train::checkpoint::{self, load_settings};
use s2s_train::{durable, run, Checkpoint};
use std::path::{Path, PathBuf};

/// File formats of `s2s export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// safetensors (F32), PyTorch's parameter names: `safetensors.torch.load_file` reads it
    /// and the reference module loads it with `load_state_dict(strict=True)`.
    Safetensors,
    /// A `.pt` file of the reference module's `state_dict`, as `torch.save` writes it:
    /// `torch.load(FILE, weights_only=True)` reads it.
    Pytorch,
}

impl Format {
    /// The format a file's name implies: `.pt`/`.pth` PyTorch, `.safetensors` safetensors.
    fn of_name(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "pt" | "pth" => Some(Format::Pytorch),
            "safetensors" => Some(Format::Safetensors),
            _ => None,
        }
    }
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Model folder (or training run folder: its best model).
    #[arg(long)]
    model: PathBuf,
    /// File format (default: from the extension of --out, `.pt`/`.pth` or `.safetensors`).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The file to write; it must not exist yet.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Weights under PyTorch's names: a `.pt` file of the reference module's `state_dict`
    /// (`torch.save(model.state_dict(), FILE)`) or a safetensors file (`s2s export`,
    /// `safetensors.torch.save_file`); which one is read from the file's first bytes.
    #[arg(long, value_name = "FILE")]
    from: PathBuf,
    /// The model's `config.json`, with `source_vocab.json` and `target_vocab.json` beside it.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The new model folder; it must not exist yet.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// A model folder, or a training run folder: its `best/`, `last/`, `averaged/` and every
    /// checkpoint in `checkpoints/`.
    #[arg(long)]
    model: PathBuf,
}

/// The model folders that `dir` names: `dir` itself, or a run folder's.
fn model_folders(dir: &Path) -> Result<Vec<PathBuf>> {
    if !run::is_run_folder(dir) {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut folders: Vec<PathBuf> = [run::BEST, run::LAST, run::AVERAGED]
        .iter()
        .map(|name| dir.join(name))
        .filter(|d| d.is_dir())
        .collect();
    let checkpoints = dir.join(run::CHECKPOINTS);
    if checkpoints.is_dir() {
        let mut steps = std::fs::read_dir(&checkpoints)
            .with_context(|| format!("reading {}", checkpoints.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("reading {}", checkpoints.display()))?;
        steps.retain(|p| checkpoint::is_model_folder(p));
        steps.sort();
        folders.extend(steps);
    }
    Ok(folders)
}

/// Converts model folders of layout 1 (`model.mpk`) to the current one, in place.
pub fn convert<B: s2s_tensor::S2sBackend>(args: ConvertArgs, device: &B::Device) -> Result<()> {
    let folders = model_folders(&args.model)?;
    for dir in folders {
        if Checkpoint::<B>::convert(&dir, device)? {
            eprintln!(
                "converted {}: {} replaces {}",
                dir.display(),
                checkpoint::WEIGHTS_FILE,
                checkpoint::MPK_WEIGHTS_FILE
            );
        } else {
            eprintln!("{}: already format {}", dir.display(), checkpoint::FORMAT);
        }
    }
    Ok(())
}

/// Writes a model's weights under PyTorch's names.
pub fn export<B: s2s_tensor::S2sBackend>(args: ExportArgs, device: &B::Device) -> Result<()> {
    if args.out.exists() {
        bail!(
            "--out {}: exists already; give a new file (nothing was written)",
            args.out.display()
        );
    }
    let Some(format) = args.format.or_else(|| Format::of_name(&args.out)) else {
        bail!(
            "--out {}: give --format (pytorch or safetensors), or a name ending in .pt, .pth \
             or .safetensors",
            args.out.display()
        );
    };
    let checkpoint = Checkpoint::<B>::load(&args.model, device)?;
    let tensors = weights::named_tensors(&checkpoint.model);
    let bytes = match format {
        Format::Safetensors => weights::to_safetensors(&tensors, Some(weights::file_metadata()))?,
        Format::Pytorch => torch_file::write_state_dict(&tensors)?,
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
    let tensors = if bytes.starts_with(b"PK\x03\x04")
        || Format::of_name(&args.from) == Some(Format::Pytorch)
    {
        torch_file::read_state_dict(&bytes)
    } else {
        weights::from_safetensors(&bytes)
    }
    .with_context(|| format!("{}", args.from.display()))?;
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
