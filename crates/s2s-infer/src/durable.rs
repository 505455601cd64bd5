//! Writing to disk so that a crash, a kill or a full disk never leaves a half-written file
//! or folder where a complete one is expected.
//!
//! Every file is written under a temporary name, flushed to disk (`fsync`) and renamed into
//! place, and the folder holding it is synced so that the rename itself survives a power
//! loss. A folder (a checkpoint) is written complete under a temporary name beside its
//! destination and swapped in by [`replace_dir`]; [`recover`] finishes or undoes a swap that
//! a kill interrupted and removes the temporary files this module left behind. Temporary
//! names start with `.` and end in `.tmp-PID` (being written) or `.old-PID` (the previous
//! version during a swap), so that [`recover`] can tell them from everything else.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An I/O error with the path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct IoError {
    /// The file or folder.
    pub path: PathBuf,
    /// The underlying error.
    pub source: std::io::Error,
}

/// Maps an `io::Error` to an [`IoError`] naming `path`.
pub fn at(path: &Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
    move |source| IoError {
        path: path.to_path_buf(),
        source,
    }
}

/// Flushes a folder's entries (new names, renames) to disk.
pub fn sync_dir(dir: &Path) -> Result<(), IoError> {
    // Opening a folder read-only and syncing it is how POSIX makes renames durable; other
    // systems (Windows) cannot open folders this way, and their renames need no such step.
    #[cfg(unix)]
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(at(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Flushes one file's contents to disk.
pub fn sync_file(path: &Path) -> Result<(), IoError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(at(path))
}

/// The parent folder of `path` (`.` for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A temporary sibling of `path`: `.NAME.tmp-PID` in the same folder.
pub fn temp_sibling(path: &Path, kind: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    parent_of(path).join(format!(".{name}.{kind}-{}", std::process::id()))
}

/// Writes `bytes` to `path` atomically and durably: a temporary file beside it, synced,
/// renamed over `path`, and the folder synced. On error `path` is as it was and the
/// temporary file is removed.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let tmp = temp_sibling(path, "tmp");
    let written = (|| {
        let mut file = File::create(&tmp).map_err(at(&tmp))?;
        file.write_all(bytes).map_err(at(&tmp))?;
        file.sync_all().map_err(at(&tmp))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(at(path))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(parent_of(path))
}

/// Writes a folder at `dest` atomically: `fill` writes its files into a fresh temporary
/// folder beside `dest`, every file and the folder are synced, and the folder then replaces
/// `dest` ([`replace_dir`]). On error `dest` is as it was and the temporary folder is removed.
pub fn write_dir<E: From<IoError>>(
    dest: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = temp_sibling(dest, "tmp");
    if tmp.exists() {
        // Left by an earlier process with this PID: ours by its name.
        std::fs::remove_dir_all(&tmp).map_err(at(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(at(&tmp))?;
    let filled = fill(&tmp).and_then(|()| {
        for entry in std::fs::read_dir(&tmp).map_err(at(&tmp))? {
            let path = entry.map_err(at(&tmp))?.path();
            if path.is_file() {
                sync_file(&path)?;
            }
        }
        sync_dir(&tmp)?;
        Ok(())
    });
    if let Err(e) = filled {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    replace_dir(&tmp, dest).map_err(E::from)
}

/// Moves the complete folder `new` to `dest`, replacing the folder there, if any: `dest` is
/// renamed to `.NAME.old-PID`, `new` to `dest`, the parent synced, the old folder removed.
/// A kill between the two renames leaves no `dest` but the old folder, which [`recover`]
/// renames back.
pub fn replace_dir(new: &Path, dest: &Path) -> Result<(), IoError> {
    let parent = parent_of(dest);
    let old = temp_sibling(dest, "old");
    let had_old = dest.exists();
    if had_old {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(at(&old))?;
        }
        std::fs::rename(dest, &old).map_err(at(dest))?;
    }
    if let Err(e) = std::fs::rename(new, dest) {
        if had_old {
            let _ = std::fs::rename(&old, dest);
        }
        return Err(at(dest)(e));
    }
    sync_dir(parent)?;
    if had_old {
        std::fs::remove_dir_all(&old).map_err(at(&old))?;
    }
    Ok(())
}

/// What [`recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Temporary files and folders removed.
    pub removed: Vec<PathBuf>,
    /// Folders put back from an interrupted swap (`.NAME.old-PID` renamed to `NAME`).
    pub restored: Vec<PathBuf>,
}

/// Cleans up after a process that was killed while writing into `dir`: removes every
/// `.NAME.tmp-PID` entry, renames `.NAME.old-PID` back to `NAME` where `NAME` is missing (a
/// swap interrupted between its renames) and removes it otherwise. Touches nothing else.
pub fn recover(dir: &Path) -> Result<Recovered, IoError> {
    let mut done = Recovered::default();
    let mut entries: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(at(dir))? {
        entries.push(entry.map_err(at(dir))?.path());
    }
    entries.sort();
    for path in entries {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some((base, kind)) = temp_name(name) else {
            continue;
        };
        let remove = |path: &Path| {
            if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            }
            .map_err(at(path))
        };
        match kind {
            "tmp" => {
                remove(&path)?;
                done.removed.push(path);
            }
            _ => {
                let dest = dir.join(base);
                if dest.exists() {
                    remove(&path)?;
                    done.removed.push(path);
                } else {
                    std::fs::rename(&path, &dest).map_err(at(&path))?;
                    done.restored.push(dest);
                }
            }
        }
    }
    if !done.removed.is_empty() || !done.restored.is_empty() {
        sync_dir(dir)?;
    }
    Ok(done)
}

/// Whether `name` is one of this module's temporary names (`.NAME.tmp-PID`,
/// `.NAME.old-PID`).
pub fn is_temp_name(name: &str) -> bool {
    temp_name(name).is_some()
}

/// `(NAME, "tmp" | "old")` for a name `.NAME.tmp-PID` or `.NAME.old-PID`.
fn temp_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix('.')?;
    let (head, pid) = rest.rsplit_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (base, kind) = head.rsplit_once('.')?;
    (!base.is_empty() && (kind == "tmp" || kind == "old")).then_some((base, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_recognised() {
        assert_eq!(temp_name(".last.tmp-123"), Some(("last", "tmp")));
        assert_eq!(
            temp_name(".metrics.jsonl.old-9"),
            Some(("metrics.jsonl", "old"))
        );
        assert_eq!(temp_name(".last.tmp-"), None);
        assert_eq!(temp_name("last.tmp-12"), None);
        assert_eq!(temp_name(".notes.txt"), None);
        assert_eq!(temp_name(".x.bak-12"), None);
    }

    #[test]
    fn files_and_folders_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.json");
        write_file(&file, b"one").unwrap();
        write_file(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        let folder = dir.path().join("last");
        for text in ["first", "second"] {
            write_dir::<IoError>(&folder, |tmp| {
                std::fs::write(tmp.join("w"), text).map_err(at(tmp))
            })
            .unwrap();
            assert_eq!(std::fs::read_to_string(folder.join("w")).unwrap(), text);
        }
        // A failing fill leaves the folder as it was and no temporary folder.
        let failed = write_dir::<IoError>(&folder, |tmp| {
            std::fs::write(tmp.join("w"), "third").map_err(at(tmp))?;
            Err(at(tmp)(std::io::Error::other("disk full")))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(folder.join("w")).unwrap(), "second");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a.json", "last"]);
    }

    #[test]
    fn recover_finishes_an_interrupted_swap() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A swap killed between its renames: only the old folder is left.
        std::fs::create_dir(d.join(".last.old-77")).unwrap();
        std::fs::write(d.join(".last.old-77/w"), "kept").unwrap();
        // A folder and a file being written, and an old copy whose swap completed.
        std::fs::create_dir(d.join(".best.tmp-78")).unwrap();
        std::fs::write(d.join(".metrics.jsonl.tmp-78"), "partial").unwrap();
        std::fs::create_dir(d.join("best")).unwrap();
        std::fs::create_dir(d.join(".best.old-79")).unwrap();
        // Not ours: left alone.
        std::fs::write(d.join("notes.txt"), "mine").unwrap();
        std::fs::write(d.join(".hidden"), "mine").unwrap();
        let done = recover(d).unwrap();
        assert_eq!(done.restored, vec![d.join("last")]);
        assert_eq!(done.removed.len(), 3);
        assert_eq!(std::fs::read_to_string(d.join("last/w")).unwrap(), "kept");
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".hidden", "best", "last", "notes.txt"]);
    }
}
