//! The lock that keeps two klpx processes from patching one source tree at once.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::kernel::cache::{self, fingerprint_bytes};

/// An exclusive lock on a source tree, held while its files may be patched. The lock file lives in
/// klpx's cache, named after the tree, so the tree itself gets no extra file.
pub struct SourceLock(#[allow(dead_code)] File);

impl SourceLock {
    /// Takes the lock, failing at once with a user error when another klpx holds it.
    pub fn try_take(src: &Path) -> Result<SourceLock> {
        let (f, path) = SourceLock::open(src)?;
        match f.try_lock() {
            Ok(()) => Ok(SourceLock(f)),
            Err(std::fs::TryLockError::WouldBlock) => Err(crate::error::UserError::new(format!(
                "{}: another klpx is patching this tree (lock {}); wait for it to finish",
                src.display(),
                path.display()
            ))
            .into()),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }

    /// Takes the lock, waiting for another klpx to finish.
    pub fn take(src: &Path) -> Result<SourceLock> {
        let (f, _) = SourceLock::open(src)?;
        f.lock()
            .with_context(|| format!("locking {}", src.display()))?;
        Ok(SourceLock(f))
    }

    fn open(src: &Path) -> Result<(File, PathBuf)> {
        let real = src
            .canonicalize()
            .with_context(|| format!("{}", src.display()))?;
        let dir = cache::root().join("locks");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!(
            "{:016x}.lock",
            fingerprint_bytes(real.as_os_str().as_encoded_bytes())
        ));
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok((f, path))
    }
}

/// Checks that `patches` apply to the source tree `src` (under its lock, after restoring what an
/// interrupted run left patched), before any long work; nothing is written. Returns how many
/// files a killed run had left patched.
pub fn check_patches_apply(src: &Path, patches: &[PathBuf], fuzz: usize) -> Result<usize> {
    let loaded = crate::patch::source::SourcePatch::load_all(patches)?;
    let _lock = SourceLock::try_take(src)?;
    let restored = super::journal::recover(src)?;
    crate::patch::source::plan_edits(&loaded, src, fuzz)?;
    Ok(restored)
}
