//! The vmlinux inside a kernel's boot image (`vmlinuz`, `bzImage`): the kernel's own
//! `scripts/extract-vmlinux` finds the compressed payload and decompresses it. On x86_64 that payload
//! is vmlinux itself, stripped: its code by address, which the identity check reads when there is
//! no vmlinux with symbols.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use object::Object;

use crate::error::UserError;

/// Extracts the vmlinux of `image` with `srcdir`'s `scripts/extract-vmlinux`, once per image, into
/// klpx's cache; returns its path.
pub fn extract_vmlinux(srcdir: &Path, image: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(image)
        .map_err(|e| UserError::new(format!("{}: cannot read: {e}", image.display())))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let key = super::cache::fingerprint(&[
        std::path::absolute(image)
            .unwrap_or_default()
            .display()
            .to_string()
            .as_bytes(),
        &meta.len().to_le_bytes(),
        &modified.to_le_bytes(),
    ]);
    let dir = super::cache::root()
        .join("images")
        .join(format!("{key:016x}"));
    let out = dir.join("vmlinux");
    if out.is_file() {
        return Ok(out);
    }
    let script = srcdir.join("scripts/extract-vmlinux");
    if !script.is_file() {
        return Err(UserError::new(format!(
            "{}: no scripts/extract-vmlinux to take vmlinux out of {}",
            srcdir.display(),
            image.display()
        ))
        .into());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = dir.join("vmlinux.partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let run = duct::cmd!(&script, image)
        .stdout_file(file)
        .stderr_capture()
        .unchecked()
        .run()
        .context("running scripts/extract-vmlinux")?;
    let data = std::fs::read(&partial).unwrap_or_default();
    if !run.status.success() || object::File::parse(&*data).is_err() {
        let _ = std::fs::remove_file(&partial);
        return Err(UserError::new(format!(
            "{}: no vmlinux found in it ({}); is it a kernel image, and is its decompressor \
             (xz, zstd, gzip, lz4) installed?",
            image.display(),
            String::from_utf8_lossy(&run.stderr).trim()
        ))
        .into());
    }
    std::fs::rename(&partial, &out).with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// The GNU build id of an ELF file, when it has one.
pub fn build_id(path: &Path) -> Result<Option<Vec<u8>>> {
    let data = crate::mapped::MappedFile::open(path)?;
    let file = object::File::parse(&*data)
        .map_err(|e| UserError::new(format!("{}: not an ELF file: {e}", path.display())))?;
    Ok(file.build_id().ok().flatten().map(<[u8]>::to_vec))
}
