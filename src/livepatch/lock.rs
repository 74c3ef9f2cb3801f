//! The lock that keeps two klpx processes from patching one source tree at once.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// An exclusive lock on a source tree, held while its files may be patched. It is taken on the
/// tree's directory itself (`flock` of the directory, canonicalised), so it belongs to the tree:
/// two klpx with different caches (another user, another CI job on the same checkout) exclude
/// each other all the same, and the tree gets no extra file.
pub struct SourceLock(#[allow(dead_code)] File);

impl SourceLock {
    /// Takes the lock, failing at once with a user error when another klpx holds it.
    pub fn try_take(src: &Path) -> Result<SourceLock> {
        let (f, real) = SourceLock::open(src)?;
        match f.try_lock() {
            Ok(()) => Ok(SourceLock(f)),
            Err(std::fs::TryLockError::WouldBlock) => Err(crate::error::UserError::new(format!(
                "{}: another klpx is patching or building this tree; wait for it to finish",
                real.display()
            ))
            .into()),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", real.display()))
            }
        }
    }

    /// Takes the lock, waiting for another klpx to finish (and saying so).
    pub fn take(src: &Path) -> Result<SourceLock> {
        let (f, real) = SourceLock::open(src)?;
        if let Ok(()) = f.try_lock() {
            return Ok(SourceLock(f));
        }
        eprintln!(
            "klpx: waiting for another klpx patching or building {}",
            real.display()
        );
        f.lock()
            .with_context(|| format!("locking {}", real.display()))?;
        Ok(SourceLock(f))
    }

    fn open(src: &Path) -> Result<(File, PathBuf)> {
        let real = src
            .canonicalize()
            .with_context(|| format!("{}", src.display()))?;
        let f = File::open(&real).with_context(|| format!("opening {}", real.display()))?;
        Ok((f, real))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock is the tree's: a second open of the same directory (another klpx, whatever its
    /// cache) is refused while the first holds it, through another path to it too, and may take
    /// it once the first is dropped.
    #[test]
    fn the_lock_belongs_to_the_tree() {
        let root = std::env::temp_dir().join(format!("klpx-lock-{}", std::process::id()));
        let tree = root.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        std::os::unix::fs::symlink(&tree, root.join("link")).unwrap();
        let first = SourceLock::try_take(&tree).unwrap();
        let err = SourceLock::try_take(&root.join("link")).err().unwrap();
        assert!(err.to_string().contains("another klpx"), "{err}");
        drop(first);
        SourceLock::try_take(&root.join("link")).unwrap();
        assert_eq!(
            std::fs::read_dir(&tree).unwrap().count(),
            0,
            "a file in the tree"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
