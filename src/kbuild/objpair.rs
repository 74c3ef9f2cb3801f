//! The original and patched builds of one object, compiled with its recorded kbuild command plus the
//! livepatch flags. The patch is applied to the source in place for the patched compile and always
//! reverted; a lock file in the source tree keeps concurrent klpx processes from overlapping.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::cmdfile::CmdFile;
use super::compile::{livepatch_cflags, recompile};
use crate::kernel::cache;
use crate::kernel::tree::{KernelTree, fingerprint};
use crate::patch::source::SourcePatch;

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
            fingerprint(real.as_os_str().as_encoded_bytes())
        ));
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok((f, path))
    }
}

/// An object built from the original and from the patched source.
#[derive(Debug, Clone)]
pub struct ObjectPair {
    pub orig: PathBuf,
    pub patched: PathBuf,
}

/// Builds `object` (kbuild's name, `kernel/sys.o`) of `tree` twice into `dir`, before and after
/// `patch`; reuses earlier results when the patch and the recorded command are unchanged.
pub fn build_pair(
    tree: &KernelTree,
    object: &str,
    patch: &SourcePatch,
    patch_text: &str,
    dir: &Path,
) -> Result<ObjectPair> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let flags = livepatch_cflags(tree.arch.backend());
    let _lock = SourceLock::take(&tree.src)?;
    let cmd = CmdFile::load(&tree.out, object)?;
    let key = format!(
        "{:016x}",
        fingerprint(
            [patch_text, &cmd.command, &flags.join(" ")]
                .join("\n")
                .as_bytes()
        )
    );
    let pair = ObjectPair {
        orig: dir.join("orig.o"),
        patched: dir.join("patched.o"),
    };
    let key_file = dir.join("key");
    if std::fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str())
        && pair.orig.is_file()
        && pair.patched.is_file()
    {
        return Ok(pair);
    }
    recompile(&tree.out, &cmd, &pair.orig, &flags)
        .with_context(|| format!("{object}: original build"))?;
    let applied = patch.apply(&tree.src, crate::patch::source::DEFAULT_FUZZ)?;
    let built = recompile(&tree.out, &cmd, &pair.patched, &flags);
    applied
        .revert()
        .with_context(|| format!("reverting {} in {}", patch.name, tree.src.display()))?;
    built.with_context(|| format!("{object}: patched build"))?;
    std::fs::write(&key_file, key)?;
    Ok(pair)
}
