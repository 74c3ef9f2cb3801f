//! `klpx kernel build|config|clean`: the per-architecture kernel trees in klpx's cache, built from
//! Debian's linux-source-6.12 with tinyconfig and the fragments in `configs/`.

use anyhow::{Context, Result};
use klpx_arch::Arch;

use crate::cli::{KernelArgs, KernelCommand};
use crate::error::{UserError, exit};
use crate::kernel::cache;
use crate::kernel::tree::KernelTree;
use crate::setup;

fn tree_for(a: &KernelArgs) -> Result<KernelTree> {
    let arch: Arch = a
        .arch
        .parse()
        .map_err(|e| UserError::new(format!("--arch: {e}")))?;
    let jobs = a.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let mut packages = setup::BUILD_PACKAGES.to_vec();
    packages.push(arch.backend().compiler_package());
    setup::ensure_packages(&packages)?;
    let src = cache::debian_source()?;
    Ok(KernelTree::new(
        arch,
        &src,
        &cache::root().join("trees").join(arch.name()),
        jobs,
    ))
}

/// Runs a `klpx kernel` subcommand; returns the exit status.
pub fn run(what: KernelCommand) -> Result<i32> {
    match what {
        KernelCommand::Build(a) => {
            let tree = tree_for(&a)?;
            eprintln!(
                "klpx: building the {} kernel in {} (once; a few minutes)",
                tree.arch,
                tree.out.display()
            );
            for d in tree.ensure_built()? {
                eprintln!("klpx: note: Kconfig did not keep {d}");
            }
            println!("{}", tree.out.display());
        }
        KernelCommand::Config(a) => {
            let tree = tree_for(&a)?;
            for d in tree.ensure_prepared()? {
                eprintln!("klpx: note: Kconfig did not keep {d}");
            }
            println!("{}", tree.out.display());
        }
        KernelCommand::Clean(a) => {
            let arch: Arch = a
                .arch
                .parse()
                .map_err(|e| UserError::new(format!("--arch: {e}")))?;
            let dir = cache::root().join("trees").join(arch.name());
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
            println!("removed {}", dir.display());
        }
    }
    Ok(exit::OK)
}
