//! Debian's own kernel configs as object sources: the scratch `O=` tree `klpx build --distro` prepares
//! from Debian's packages (cached in `~/.cache/klpx/distro/debian`), with single objects compiled in it
//! by kbuild so that their commands are recorded.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use klpx::cli::{Cli, Command};
use klpx::kbuild::prepared::compile_objects;
use klpx::kbuild::toolchain::Toolchain;
use klpx::livepatch::lock::SourceLock;
use klpx_arch::Arch;

/// A prepared tree of a Debian kernel: the source, the output tree, and the make variables it was
/// configured with.
pub struct DistroTree {
    pub arch: Arch,
    pub src: PathBuf,
    pub out: PathBuf,
    pub toolchain: Toolchain,
}

/// The tree `klpx build --distro SPEC --arch ARCH PATCH` would build in, prepared (a no-op when it
/// is). `patch` is any patch that applies to the source: the request checks it before preparing.
pub fn tree(arch: Arch, spec: &str, patch: &Path, scratch: &Path) -> Result<DistroTree> {
    tree_with(arch, spec, patch, scratch, &[])
}

/// [`tree`] with more `klpx build` options (`--llvm`: a tree of its own, compiled by clang).
pub fn tree_with(
    arch: Arch,
    spec: &str,
    patch: &Path,
    scratch: &Path,
    extra: &[&str],
) -> Result<DistroTree> {
    std::fs::create_dir_all(scratch)?;
    let (scratch, patch) = (scratch.display().to_string(), patch.display().to_string());
    let mut argv = vec![
        "klpx",
        "build",
        "--distro",
        spec,
        "--arch",
        arch.name(),
        "--json",
        // Debian's cross compilers can be a packaging revision apart from the ones that built
        // its foreign kernels ("12.2.0-14" vs "12.2.0-14+deb12u1"); objects are all that is made.
        "--skip-compiler-check",
        "-o",
        &scratch,
    ];
    argv.extend(extra);
    argv.push(&patch);
    let cli = Cli::try_parse_from(argv).context("parsing the build command line")?;
    let Command::Build(args) = cli.command else {
        bail!("not a build command");
    };
    let req = klpx::cmd::build::request(*args, &klpx::cmd::build::Env::from_process())
        .with_context(|| format!("preparing Debian's {arch} tree ({spec})"))?;
    Ok(DistroTree {
        arch,
        src: req.srcdir,
        out: req.objdir,
        toolchain: req.toolchain,
    })
}

impl DistroTree {
    /// Compiles `objects` with kbuild (once: later calls find them), recording their commands.
    pub fn compile(&self, objects: &[String]) -> Result<()> {
        let _lock = SourceLock::take(&self.src)?;
        compile_objects(&self.src, &self.out, &self.toolchain, 2, objects, false)
    }
}
