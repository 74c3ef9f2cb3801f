//! A build's work directory in klpx's cache: marked with the pid of the klpx that made it, removed
//! when the build ends (unless kept), on SIGINT/SIGTERM/SIGHUP, and by the next build when the
//! process that made it died without either (SIGKILL, a crash, a power cut).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

/// The marker file: the pid of the klpx that made the directory, or `keep` when it is kept.
const MARKER: &str = ".klpx-work";

/// Work directories to remove if the process is interrupted.
static ACTIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A build's work directory, removed when dropped unless kept (`--debug`, `--skip-cleanup`).
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// Creates `path` afresh (removing what a previous build left there) and marks it, after
    /// removing the work directories beside it whose klpx is gone.
    pub fn create(path: &Path, keep: bool) -> Result<WorkDir> {
        if let Some(parent) = path.parent() {
            remove_stale(parent);
        }
        if path.exists() {
            std::fs::remove_dir_all(path)
                .with_context(|| format!("clearing {}", path.display()))?;
        }
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        let mark = if keep {
            "keep".to_string()
        } else {
            std::process::id().to_string()
        };
        std::fs::write(path.join(MARKER), mark)
            .with_context(|| format!("marking {}", path.display()))?;
        if !keep {
            super::journal::install_signal_handlers();
            lock().push(path.to_path_buf());
        }
        Ok(WorkDir {
            path: path.to_path_buf(),
            keep,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
            lock().retain(|p| p != &self.path);
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Has `dir` (a scratch directory of this process's own, outside the cache: `klpx verify`'s) removed
/// if the process is ended by SIGINT, SIGTERM or SIGHUP; [`untrack`] when it is removed otherwise.
pub(crate) fn track(dir: &Path) {
    super::journal::install_signal_handlers();
    lock().push(dir.to_path_buf());
}

/// Forgets a directory [`track`] was given.
pub(crate) fn untrack(dir: &Path) {
    lock().retain(|p| p != dir);
}

/// Removes the work directories of this process; for the signal handler, just before it exits.
pub fn remove_on_interrupt() {
    for p in lock().drain(..) {
        let _ = std::fs::remove_dir_all(&p);
    }
}

/// Removes the work directories in `parent` whose marker names a process that no longer runs.
/// Directories without a marker, or kept ones, are left alone: klpx did not make them, or was told
/// to keep them.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let Ok(mark) = std::fs::read_to_string(dir.join(MARKER)) else {
            continue;
        };
        let Ok(pid) = mark.trim().parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_processs_directory_goes_and_others_stay() {
        let root = std::env::temp_dir().join(format!("klpx-workdir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dead = root.join("dead-1");
        let kept = root.join("kept-1");
        let foreign = root.join("foreign");
        for d in [&dead, &kept, &foreign] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("file"), "x").unwrap();
        }
        // A pid above the kernel's limit (4194304) never runs.
        std::fs::write(dead.join(MARKER), "4194305").unwrap();
        std::fs::write(kept.join(MARKER), "keep").unwrap();
        let live = WorkDir::create(&root.join("live"), false).unwrap();
        assert!(!dead.exists());
        assert!(kept.exists() && foreign.exists() && live.path().exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
