//! `cargo xtask check-patches` (also run by `cargo xtask test` with its lints): each patched
//! copy under `patches/` must equal the published crate plus the `.patch` file beside it, so
//! that the repository shows the whole change and nobody edits a copy silently.

use crate::{project_root, run};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// A crates.io package that the workspace replaces with a patched copy.
struct Patched {
    name: &'static str,
    version: &'static str,
    /// The `.crate` file's SHA-256, as in the crates.io index.
    sha256: &'static str,
}

const PATCHED: &[Patched] = &[
    Patched {
        name: "burn-flex",
        version: "0.21.0",
        sha256: "0098bf6555c151517b4c98ca0e8ed1ab6a976e40f5f4e967c117b00eee21e192",
    },
    Patched {
        name: "burn-communication",
        version: "0.21.0",
        sha256: "0da93381634fb6ef2fbf9a19415439b1658bcdf2e044a8909caa54b8960e63bb",
    },
    Patched {
        name: "burn-collective",
        version: "0.21.0",
        sha256: "427bdb9240bd1a41199066d44bc042341aa0cb0f46590d9af15eb88dd81066e7",
    },
];

/// How a missing download is treated.
#[derive(Clone, Copy, PartialEq)]
pub enum Offline {
    /// An error (`cargo xtask check-patches`).
    Fail,
    /// A warning, and the check is skipped (`cargo xtask test`, which must not fail for the
    /// network's sake); a copy that differs from its patch is an error either way.
    Warn,
}

/// Checks every patched copy; the published `.crate` files are downloaded once into
/// `target/patch-check/`.
pub fn check(offline: Offline) -> Result<()> {
    let root = project_root();
    let work = root.join("target/patch-check");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    for p in PATCHED {
        let file = work.join(format!("{}-{}.crate", p.name, p.version));
        if !file.exists() || sha256(&file)? != p.sha256 {
            let url = format!(
                "https://static.crates.io/crates/{}/{}-{}.crate",
                p.name, p.name, p.version
            );
            let mut curl = Command::new("curl");
            curl.args(["-sSfL", "--retry", "3", "-o"])
                .arg(&file)
                .arg(&url);
            if let Err(e) = run(curl) {
                let e = e.context(format!("downloading {url} (the patch check needs it)"));
                if offline == Offline::Warn {
                    eprintln!("warning: patch check of {} skipped: {e:#}", p.name);
                    let _ = std::fs::remove_file(&file);
                    continue;
                }
                return Err(e);
            }
        }
        let got = sha256(&file)?;
        if got != p.sha256 {
            bail!(
                "{}: SHA-256 {got}, but crates.io publishes {} for {} {}",
                file.display(),
                p.sha256,
                p.name,
                p.version
            );
        }
        let unpacked = work.join(format!("{}-{}", p.name, p.version));
        if unpacked.exists() {
            std::fs::remove_dir_all(&unpacked)
                .with_context(|| format!("removing {}", unpacked.display()))?;
        }
        let mut tar = Command::new("tar");
        tar.arg("-xzf").arg(&file).arg("-C").arg(&work);
        run(tar)?;
        let patch_file = root.join(format!("patches/{}.patch", p.name));
        let mut patch = Command::new("patch");
        patch
            .args(["-p1", "--quiet", "--forward", "-i"])
            .arg(&patch_file)
            .current_dir(&unpacked);
        run(patch).with_context(|| format!("applying {}", patch_file.display()))?;
        let copy = root.join(format!("patches/{}", p.name));
        let out = Command::new("diff")
            .arg("-r")
            .arg(&unpacked)
            .arg(&copy)
            .output()
            .context("running diff")?;
        if !out.status.success() {
            bail!(
                "{} is not {} {} plus {}: edit the copy only together with the patch \
                 (regenerate it with `diff -ruN` from the published crate)\n{}",
                copy.display(),
                p.name,
                p.version,
                patch_file.display(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        eprintln!(
            "[xtask] {} equals {} {} plus {}",
            copy.display(),
            p.name,
            p.version,
            patch_file.display()
        );
    }
    Ok(())
}

/// The SHA-256 of `file`, through `sha256sum`.
fn sha256(file: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(file)
        .output()
        .context("running sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", file.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}
