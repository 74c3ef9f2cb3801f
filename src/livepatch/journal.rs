//! Patching the user's tree without ever leaving it modified.
//!
//! Before a file is written, its original bytes are saved in a journal directory in klpx's cache and the
//! journal is committed (written, synced, renamed into place). Undoing restores from the journal and then
//! deletes it. A run killed outright leaves the journal behind, and the next klpx run on that tree restores
//! it before anything else. SIGINT, SIGTERM and SIGHUP restore at once and end the process; the journal
//! mutex keeps a signal from restoring while files are being written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::UserError;
use crate::kernel::cache::{self, fingerprint_bytes};
use crate::patch::source::FileEdit;

/// The journal of the patch currently applied by this process, if any.
static ACTIVE: Mutex<Option<PathBuf>> = Mutex::new(None);

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The tree the files belong to.
    tree: PathBuf,
    files: Vec<FileRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileRecord {
    path: PathBuf,
    /// Name of the backup file in the journal directory; `None` when the file did not exist.
    backup: Option<String>,
    /// The file's modification time (nanoseconds since the epoch), put back on restore so that the
    /// user's next `make` does not rebuild everything that includes a restored header.
    #[serde(default)]
    mtime_ns: Option<u128>,
}

/// The journal directory for `tree` (canonical path).
fn journal_dir(tree: &Path) -> PathBuf {
    cache::root().join("journals").join(format!(
        "{:016x}",
        fingerprint_bytes(tree.as_os_str().as_encoded_bytes())
    ))
}

/// Restores a journal left in `tree`'s journal directory by a killed run. Returns how many files it
/// restored (0 when there was no journal).
pub fn recover(tree: &Path) -> Result<usize> {
    let real = tree
        .canonicalize()
        .with_context(|| format!("{}", tree.display()))?;
    restore_dir(&journal_dir(&real))
}

fn restore_dir(dir: &Path) -> Result<usize> {
    let index = dir.join("journal.json");
    let text = match std::fs::read_to_string(&index) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A journal that never got committed changed nothing; drop its backups.
            if dir.exists() {
                std::fs::remove_dir_all(dir).ok();
            }
            return Ok(0);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", index.display())),
    };
    let record: Record = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: corrupt journal; restore its files by hand",
            index.display()
        )
    })?;
    for f in &record.files {
        match &f.backup {
            Some(b) => {
                let bytes = std::fs::read(dir.join(b))
                    .with_context(|| format!("reading the backup of {}", f.path.display()))?;
                std::fs::write(&f.path, bytes)
                    .with_context(|| format!("restoring {}", f.path.display()))?;
                if let Some(ns) = f.mtime_ns {
                    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns as u64);
                    if let Ok(file) = std::fs::File::options().write(true).open(&f.path) {
                        let _ = file.set_modified(t);
                    }
                }
            }
            None => match std::fs::remove_file(&f.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("removing {}", f.path.display()));
                }
            },
        }
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(record.files.len())
}

/// Files of a tree patched under a journal. Dropping it without [`Patched::undo`] still restores.
#[derive(Debug)]
#[must_use = "a patched tree must be restored"]
pub struct Patched {
    dir: Option<PathBuf>,
}

/// Writes `edits` (with their `after` contents) into `tree`, journaled.
pub fn apply(tree: &Path, edits: &[FileEdit]) -> Result<Patched> {
    install_signal_handlers();
    let real = tree
        .canonicalize()
        .with_context(|| format!("{}", tree.display()))?;
    let dir = journal_dir(&real);
    let mut active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
    if dir.exists() {
        restore_dir(&dir)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::with_capacity(edits.len());
    for (i, e) in edits.iter().enumerate() {
        let backup = match &e.before {
            Some(bytes) => {
                let name = format!("{i}.orig");
                write_synced(&dir.join(&name), bytes)?;
                Some(name)
            }
            None => None,
        };
        let mtime_ns = std::fs::metadata(&e.path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos());
        files.push(FileRecord {
            path: e.path.clone(),
            backup,
            mtime_ns,
        });
    }
    let record = Record { tree: real, files };
    let tmp = dir.join("journal.json.tmp");
    write_synced(&tmp, serde_json::to_string_pretty(&record)?.as_bytes())?;
    std::fs::rename(&tmp, dir.join("journal.json")).context("committing the journal")?;
    *active = Some(dir.clone());
    let patched = Patched {
        dir: Some(dir.clone()),
    };
    for e in edits {
        let r = match &e.after {
            Some(bytes) => std::fs::write(&e.path, bytes),
            None => std::fs::remove_file(&e.path),
        };
        if let Err(err) = r {
            drop(active);
            let msg = format!("cannot write {}: {err}", e.path.display());
            patched.undo().context(msg.clone())?;
            return Err(UserError::new(msg).into());
        }
    }
    Ok(patched)
}

impl Patched {
    /// Restores every file and removes the journal.
    pub fn undo(mut self) -> Result<()> {
        self.restore()
    }

    fn restore(&mut self) -> Result<()> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        let mut active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
        restore_dir(&dir)?;
        *active = None;
        Ok(())
    }
}

impl Drop for Patched {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!("klpx: error: restoring the patched tree: {e:#}");
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// On SIGINT, SIGTERM or SIGHUP: restore the active journal and remove the work directories, then
/// exit as the signal would.
pub fn install_signal_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return;
        };
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let mut active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(dir) = active.take() {
                    match restore_dir(&dir) {
                        Ok(n) => eprintln!("klpx: interrupted; restored {n} patched file(s)"),
                        Err(e) => eprintln!("klpx: interrupted; restoring failed: {e:#}"),
                    }
                } else {
                    eprintln!("klpx: interrupted");
                }
                super::workdir::remove_on_interrupt();
                std::process::exit(128 + sig);
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_after_apply_and_after_a_crash() {
        let root = std::env::temp_dir().join(format!("klpx-journal-{}", std::process::id()));
        // SAFETY: tests in this binary that use the cache all point it here.
        unsafe { std::env::set_var("KLPX_CACHE", root.join("cache")) };
        let tree = root.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("a.c"), "old\n").unwrap();
        let edits = vec![
            FileEdit {
                rel: "a.c".into(),
                path: tree.join("a.c"),
                before: Some(b"old\n".to_vec()),
                after: Some(b"new\n".to_vec()),
                placements: vec![],
            },
            FileEdit {
                rel: "b.c".into(),
                path: tree.join("b.c"),
                before: None,
                after: Some(b"created\n".to_vec()),
                placements: vec![],
            },
        ];
        let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
        let before = mtime(&tree.join("a.c"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let p = apply(&tree, &edits).unwrap();
        assert_eq!(std::fs::read_to_string(tree.join("a.c")).unwrap(), "new\n");
        std::thread::sleep(std::time::Duration::from_millis(20));
        p.undo().unwrap();
        assert_eq!(std::fs::read_to_string(tree.join("a.c")).unwrap(), "old\n");
        assert_eq!(
            mtime(&tree.join("a.c")),
            before,
            "modification time restored"
        );
        assert!(!tree.join("b.c").exists());
        // A run that dies without undoing: the next run's recover() restores.
        let p = apply(&tree, &edits).unwrap();
        std::mem::forget(p);
        *ACTIVE.lock().unwrap() = None;
        assert_eq!(std::fs::read_to_string(tree.join("a.c")).unwrap(), "new\n");
        assert_eq!(recover(&tree).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(tree.join("a.c")).unwrap(), "old\n");
        assert!(!tree.join("b.c").exists());
        assert_eq!(recover(&tree).unwrap(), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
