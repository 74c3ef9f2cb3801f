//! The permanent fix next to the livepatch: the kernel rebuilt with the patches applied and packaged
//! by the kernel's own `bindeb-pkg` / `binrpm-pkg`.
//!
//! The build runs in an output tree of its own (in klpx's cache, one per base tree) with the base
//! tree's `.config`, never in the base tree: that one must keep matching the running kernel, since
//! livepatches are built against it. The shared source is patched under the journal for the build
//! and restored after, as `klpx build` does.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::UserError;
use crate::kernel::cache;
use crate::kernel::tree::{CREATED_MARKER, KernelTree};
use crate::livepatch::journal;
use crate::livepatch::lock::SourceLock;
use crate::patch::source::{SourcePatch, plan_edits};

/// The kernel's package formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PackageFormat {
    /// Debian packages (`make bindeb-pkg`: linux-image, linux-headers, linux-libc-dev).
    Deb,
    /// RPMs (`make binrpm-pkg`: kernel, kernel-headers, kernel-devel).
    Rpm,
}

impl PackageFormat {
    fn target(self) -> &'static str {
        match self {
            PackageFormat::Deb => "bindeb-pkg",
            PackageFormat::Rpm => "binrpm-pkg",
        }
    }

    /// The Debian packages the kernel's packaging needs here.
    pub fn tools(self) -> &'static [&'static str] {
        match self {
            PackageFormat::Deb => &["dpkg-dev", "debhelper", "rsync"],
            PackageFormat::Rpm => &["rpm"],
        }
    }
}

/// What to package.
#[derive(Debug, Clone)]
pub struct PackageRequest {
    /// The configured tree whose `.config` the kernel is built with.
    pub base: KernelTree,
    pub patches: Vec<PathBuf>,
    pub fuzz: usize,
    pub format: PackageFormat,
    /// Where the packages go.
    pub output: PathBuf,
}

/// The directory holding the packaging tree of the output tree `base` (`tree/`) and what
/// `bindeb-pkg` writes next to it; `klpx kernel clean` removes it with `base`.
pub fn package_dir(base: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    // A hash that stays the same across Rust releases, so `klpx kernel clean` finds it later.
    let hash = cache::fingerprint_bytes(base.as_os_str().as_bytes());
    let name = base
        .file_name()
        .map_or_else(|| "tree".into(), |n| n.to_string_lossy().into_owned());
    cache::root()
        .join("packages")
        .join(format!("{name}-{hash:016x}"))
}

/// Builds the packages; returns their paths in `req.output`.
pub fn build_packages(req: &PackageRequest, say: &dyn Fn(&str)) -> Result<Vec<PathBuf>> {
    let patches: Vec<SourcePatch> = req
        .patches
        .iter()
        .map(|p| SourcePatch::load(p))
        .collect::<Result<_, _>>()?;
    let config = req.base.out.join(".config");
    if !config.is_file() {
        return Err(UserError::new(format!(
            "{}: not a configured kernel tree (no .config)",
            req.base.out.display()
        ))
        .into());
    }
    let src = &req.base.src;
    let _lock = SourceLock::try_take(src)?;
    journal::recover(src)?;
    let edits = plan_edits(&patches, src, req.fuzz)?;

    let dir = package_dir(&req.base.out);
    let tree = KernelTree {
        out: dir.join("tree"),
        ..req.base.clone()
    };
    if !dir.exists() {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join(CREATED_MARKER), "made by klpx kernel package\n")
            .with_context(|| format!("marking {}", dir.display()))?;
    }
    std::fs::create_dir_all(&tree.out)
        .with_context(|| format!("creating {}", tree.out.display()))?;
    std::fs::copy(&config, tree.out.join(".config"))
        .with_context(|| format!("copying {}", config.display()))?;
    tree.make(&["olddefconfig"])?;
    // What an earlier run left: only the files packaging writes, in klpx's own directory.
    for stale in packages_in(&dir, req.format, &tree.out)? {
        std::fs::remove_file(&stale).with_context(|| format!("removing {}", stale.display()))?;
    }

    say(&format!(
        "building the {} kernel with {} patch(es) applied and packaging it (make {}) in {}",
        tree.arch,
        req.patches.len(),
        req.format.target(),
        tree.out.display()
    ));
    let patched = journal::apply(src, &edits)?;
    let built = tree.make(&[req.format.target()]);
    patched.undo()?;
    built?;

    std::fs::create_dir_all(&req.output)
        .map_err(|e| UserError::new(format!("{}: cannot create: {e}", req.output.display())))?;
    let mut out = Vec::new();
    for p in packages_in(&dir, req.format, &tree.out)? {
        let dest = req.output.join(p.file_name().unwrap_or_default());
        if dest.exists() {
            return Err(UserError::new(format!(
                "{}: exists; klpx does not overwrite it (the new one is {})",
                dest.display(),
                p.display()
            ))
            .into());
        }
        std::fs::rename(&p, &dest)
            .or_else(|_| std::fs::copy(&p, &dest).map(|_| ()))
            .with_context(|| format!("moving {} to {}", p.display(), dest.display()))?;
        out.push(dest);
    }
    out.sort();
    Ok(out)
}

/// The package files the kernel's packaging leaves: `bindeb-pkg` beside the output tree
/// (`.deb`, `.changes`, `.buildinfo`), `binrpm-pkg` under `rpmbuild/RPMS/<arch>/`.
fn packages_in(dir: &Path, format: PackageFormat, tree: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    match format {
        PackageFormat::Deb => {
            for e in std::fs::read_dir(dir)? {
                let p = e?.path();
                if p.is_file()
                    && p.extension()
                        .is_some_and(|x| x == "deb" || x == "changes" || x == "buildinfo")
                {
                    found.push(p);
                }
            }
        }
        PackageFormat::Rpm => {
            let rpms = tree.join("rpmbuild/RPMS");
            for arch in std::fs::read_dir(&rpms).into_iter().flatten().flatten() {
                for e in std::fs::read_dir(arch.path())?.flatten() {
                    if e.path().extension().is_some_and(|x| x == "rpm") {
                        found.push(e.path());
                    }
                }
            }
        }
    }
    found.sort();
    Ok(found)
}
