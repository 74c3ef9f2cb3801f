//! Kernel source RPMs (kpatch-build's `-r`): a distribution that packages its kernel as RPMs ships
//! the source as a `.src.rpm` holding the upstream tarball, the distribution's patches and the spec
//! file whose `%prep` applies them. klpx unpacks it (`rpm2cpio | cpio`) and runs `%prep`
//! (`rpmbuild -bp`) once per source RPM, in its cache, and builds against the prepared source.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::UserError;

/// The lead every RPM file starts with.
const RPM_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];

/// The kernel source `srpm`'s `%prep` makes, prepared once in the cache; `progress` hears what
/// takes long.
pub fn prepared_source(srpm: &Path, progress: &dyn Fn(&str)) -> Result<PathBuf> {
    let meta = std::fs::metadata(srpm)
        .map_err(|e| UserError::new(format!("{}: cannot read: {e}", srpm.display())))?;
    let mut lead = [0u8; 4];
    use std::io::Read;
    std::fs::File::open(srpm)
        .and_then(|mut f| f.read_exact(&mut lead))
        .map_err(|e| UserError::new(format!("{}: cannot read: {e}", srpm.display())))?;
    if lead != RPM_MAGIC || !meta.is_file() {
        return Err(UserError::new(format!(
            "{}: not an RPM file (give the kernel's .src.rpm)",
            srpm.display()
        ))
        .into());
    }
    for tool in ["rpm2cpio", "cpio", "rpmbuild"] {
        if which::which(tool).is_err() {
            return Err(UserError::new(format!(
                "{}: unpacking a source RPM needs {tool} (Debian: apt-get install rpm cpio)",
                srpm.display()
            ))
            .into());
        }
    }
    let stem = srpm
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".src.rpm").to_string())
        .unwrap_or_default();
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let key = crate::kernel::cache::fingerprint(&[format!(
        "{} {} {modified}",
        std::path::absolute(srpm).unwrap_or_default().display(),
        meta.len()
    )
    .as_bytes()]);
    let dir = crate::kernel::cache::root()
        .join("srpm")
        .join(format!("{stem}-{key:016x}"));
    let top = super::debian::once(&dir, |tmp| {
        progress(&format!(
            "unpacking {} and running its %prep (once per source RPM)",
            srpm.display()
        ));
        let sources = tmp.join("SOURCES");
        std::fs::create_dir_all(&sources)?;
        let out = duct::cmd!("rpm2cpio", srpm)
            .pipe(duct::cmd!("cpio", "-idm", "--quiet").dir(&sources))
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .context("running rpm2cpio | cpio")?;
        if !out.status.success() {
            return Err(UserError::new(format!(
                "{}: cannot unpack: {}",
                srpm.display(),
                String::from_utf8_lossy(&out.stdout).trim()
            ))
            .into());
        }
        let spec = std::fs::read_dir(&sources)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "spec"))
            .ok_or_else(|| UserError::new(format!("{}: holds no .spec file", srpm.display())))?;
        let topdir = format!("_topdir {}", tmp.display());
        let srcdir = format!("_sourcedir {}", sources.display());
        let out = duct::cmd!(
            "rpmbuild", "-bp", "--nodeps", "-D", &topdir, "-D", &srcdir, &spec
        )
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running rpmbuild -bp")?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = text.lines().collect();
            return Err(UserError::new(format!(
                "{}: its %prep failed (rpmbuild -bp):\n{}",
                srpm.display(),
                lines[lines.len().saturating_sub(15)..].join("\n")
            ))
            .into());
        }
        Ok(())
    })?;
    find_kernel_source(&top.join("BUILD"), 4).ok_or_else(|| {
        UserError::new(format!(
            "{}: its %prep made no kernel source tree (no Makefile, Kconfig and kernel/ under {})",
            srpm.display(),
            top.join("BUILD").display()
        ))
        .into()
    })
}

/// The first directory under `dir` (at most `depth` levels down) that is a kernel source tree.
fn find_kernel_source(dir: &Path, depth: usize) -> Option<PathBuf> {
    if dir.join("Makefile").is_file()
        && dir.join("Kconfig").is_file()
        && dir.join("kernel").is_dir()
    {
        return Some(dir.to_path_buf());
    }
    if depth == 0 {
        return None;
    }
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    children.sort();
    children
        .iter()
        .find_map(|c| find_kernel_source(c, depth - 1))
}
