//! `klpx kernel build|config|clean`: the per-architecture kernel trees in klpx's cache, built from
//! Debian's linux-source-6.12 with tinyconfig and the fragments in `configs/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use klpx_arch::Arch;

use crate::cli::{KernelArgs, KernelCommand, KernelPackageArgs};
use crate::error::{UserError, exit};
use crate::kbuild::toolchain::find_compiler;
use crate::kernel::cache;
use crate::kernel::tree::{BaseConfig, CREATED_MARKER, FRAGMENTS, KernelTree};
use crate::release::kernel_package::{PackageRequest, build_packages};
use crate::setup;

/// The base config a `--base` value names.
fn base_of(a: &KernelArgs) -> Result<BaseConfig> {
    Ok(match a.base.as_str() {
        "tinyconfig" => BaseConfig::Tinyconfig,
        "defconfig" => BaseConfig::Defconfig,
        path => {
            let p = std::path::PathBuf::from(path);
            if !p.is_file() {
                return Err(UserError::new(format!(
                    "--base {path}: not tinyconfig, defconfig or a readable .config file"
                ))
                .into());
            }
            BaseConfig::File(std::path::absolute(&p).unwrap_or(p))
        }
    })
}

/// The tree's directory: `--objdir`, else the cache's `trees/<arch>` (`trees/<arch>-<base>` for
/// other bases, so they never overwrite the tiny tree the tests use).
fn tree_dir(a: &KernelArgs, arch: Arch) -> std::path::PathBuf {
    if let Some(d) = &a.objdir {
        return std::path::absolute(d).unwrap_or_else(|_| d.clone());
    }
    let mut name = match a.base.as_str() {
        "tinyconfig" => arch.name().to_string(),
        "defconfig" => format!("{}-defconfig", arch.name()),
        _ => format!("{}-custom", arch.name()),
    };
    if a.llvm {
        name.push_str("-llvm");
    }
    for f in &a.fragments {
        name.push('-');
        name.push_str(&fragment_name(f));
    }
    cache::root().join("trees").join(name)
}

/// A fragment's file name without `.config`, with anything but letters, digits, `_` and `.` made
/// `_`: the part of a cached tree's name that says which fragment it carries.
fn fragment_name(f: &Path) -> String {
    let stem = f
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let stem = stem.strip_suffix(".config").unwrap_or(&stem);
    stem.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Reads each `--fragment` and checks that every line is a config assignment, a `# CONFIG_X is not
/// set`, a comment or blank: a wrong file is said before any tree is configured. Returns the
/// fragments' absolute paths.
fn checked_fragments(fragments: &[PathBuf]) -> Result<Vec<PathBuf>, UserError> {
    fragments
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| {
                UserError::new(format!("--fragment {}: cannot read: {e}", f.display()))
            })?;
            for (i, line) in text.lines().enumerate() {
                let l = line.trim();
                let assignment = l.strip_prefix("CONFIG_").is_some_and(|rest| {
                    rest.split_once('=').is_some_and(|(k, _)| {
                        !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    })
                });
                if !(l.is_empty() || l.starts_with('#') || assignment) {
                    return Err(UserError::new(format!(
                        "{}:{}: not a config line (CONFIG_X=value, # CONFIG_X is not set or a comment): {line}",
                        f.display(),
                        i + 1
                    )));
                }
            }
            Ok(std::path::absolute(f).unwrap_or_else(|_| f.clone()))
        })
        .collect()
}

fn tree_for(a: &KernelArgs) -> Result<KernelTree> {
    let arch = a.arch;
    let jobs = crate::cli::jobs(a.jobs)?;
    let fragments = checked_fragments(&a.fragments)?;
    let mut packages = setup::BUILD_PACKAGES.to_vec();
    packages.push(arch.backend().compiler_package());
    setup::ensure_packages(&packages)?;
    let src = cache::debian_source()?;
    let mut tree = KernelTree::new(arch, &src, &tree_dir(a, arch), jobs);
    tree.extra_fragments = fragments;
    if a.llvm {
        for tool in ["clang", "ld.lld", "llvm-objcopy"] {
            if which::which(tool).is_err() {
                return Err(UserError::new(format!(
                    "--llvm: {tool} is not in PATH (Debian: apt-get install clang-16 lld-16 llvm-16, then PATH=/usr/lib/llvm-16/bin:$PATH)"
                ))
                .into());
            }
        }
        tree = tree.with_llvm("1");
        if let Some(c) = &a.cross {
            tree.cross = c.clone();
        }
        return Ok(tree);
    }
    let compiler = find_compiler(arch.backend(), a.cross.as_deref(), None);
    if compiler.gcc.is_none() {
        return Err(UserError::new(format!(
            "{} {}: {} is not installed; install {} or give another prefix with --cross",
            compiler.source,
            compiler.prefix,
            compiler.command(),
            arch.backend().compiler_package()
        ))
        .into());
    }
    tree.cross = compiler.prefix;
    Ok(tree)
}

/// Refuses to remove anything but an output tree klpx made: one holding the marker klpx writes when
/// it creates a tree, or one of the cache's own trees. Never `/`, the home directory, the cache
/// root, a directory above any of them, or a kernel source tree.
fn check_removable(dir: &Path) -> Result<(), UserError> {
    let real = dir
        .canonicalize()
        .map_err(|e| UserError::new(format!("{}: {e}", dir.display())))?;
    let refuse = |why: &str| {
        Err(UserError::new(format!(
            "{}: {why}; klpx kernel clean removes only output trees klpx made",
            dir.display()
        )))
    };
    let root = cache::root();
    let guarded = [
        Some(PathBuf::from("/")),
        std::env::var_os("HOME").map(PathBuf::from),
        Some(root.clone()),
    ];
    for g in guarded.into_iter().flatten() {
        let g = g.canonicalize().unwrap_or(g);
        if g.starts_with(&real) {
            let how = if g == real { "is" } else { "holds" };
            return refuse(&format!("{how} {}", g.display()));
        }
    }
    if real.join("Kconfig").is_file() {
        return refuse("is a kernel source tree");
    }
    if !real.is_dir() {
        return refuse("is not a directory");
    }
    let made = real.join(CREATED_MARKER).is_file();
    let cached = real.starts_with(root.canonicalize().unwrap_or(root.clone()).join("trees"))
        && real.join(FRAGMENTS).is_file();
    if !(made || cached) {
        return refuse(&format!("holds no {CREATED_MARKER} marker"));
    }
    Ok(())
}

/// Runs a `klpx kernel` subcommand; returns the exit status.
pub fn run(what: KernelCommand) -> Result<i32> {
    match what {
        KernelCommand::Build(a) => {
            let tree = tree_for(&a)?;
            // A build of the tree (or a patched compile over its source) by another klpx finishes
            // first: two makes in one output tree would spoil each other's files.
            let _lock = crate::livepatch::lock::SourceLock::take(&tree.src)?;
            eprintln!(
                "klpx: building the {} kernel in {} (once; a few minutes)",
                tree.arch,
                tree.out.display()
            );
            for d in tree.ensure_built_from(&base_of(&a)?)? {
                eprintln!("klpx: note: Kconfig did not keep {d}");
            }
            println!("{}", tree.out.display());
        }
        KernelCommand::Config(a) => {
            let tree = tree_for(&a)?;
            let _lock = crate::livepatch::lock::SourceLock::take(&tree.src)?;
            for d in tree.ensure_prepared_from(&base_of(&a)?)? {
                eprintln!("klpx: note: Kconfig did not keep {d}");
            }
            println!("{}", tree.out.display());
        }
        KernelCommand::Package(p) => return package(&p),
        KernelCommand::Clean(a) => {
            let dir = tree_dir(&a, a.arch);
            // The tree `klpx kernel package` built the patched kernel in goes with its base
            // tree, and on its own when the base is gone already.
            let packages = crate::release::kernel_package::package_dir(&dir);
            let remove_packages = || -> Result<()> {
                if packages.join(CREATED_MARKER).is_file() {
                    std::fs::remove_dir_all(&packages)
                        .with_context(|| format!("removing {}", packages.display()))?;
                    println!("removed {}", packages.display());
                }
                Ok(())
            };
            if !dir.exists() {
                remove_packages()?;
                println!("{}: nothing to remove", dir.display());
                return Ok(exit::OK);
            }
            check_removable(&dir)?;
            // The tree's original objects kept between builds go with it.
            let objects = crate::kbuild::objcache::dir_of(&dir);
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            if objects.exists() {
                std::fs::remove_dir_all(&objects)
                    .with_context(|| format!("removing {}", objects.display()))?;
            }
            remove_packages()?;
            println!("removed {}", dir.display());
        }
    }
    Ok(exit::OK)
}

/// `klpx kernel package`: checks the patches and the output directory, configures the base tree
/// when needed, then builds and packages.
fn package(p: &KernelPackageArgs) -> Result<i32> {
    crate::patch::source::SourcePatch::load_all(&p.patches)?;
    let output = p.output.clone().unwrap_or_else(|| PathBuf::from("."));
    crate::files::check_output_dir(&output, "-o")?;
    let abs = |x: &Path| std::path::absolute(x).unwrap_or_else(|_| x.to_path_buf());
    let patches: Vec<PathBuf> = p.patches.iter().map(|x| abs(x)).collect();
    // Whether the patches apply, before any tree is configured or built.
    setup::ensure_packages(&["linux-source-6.12"])?;
    crate::livepatch::lock::check_patches_apply(&cache::debian_source()?, &patches, p.fuzz)?;
    let tree = tree_for(&p.tree)?;
    setup::ensure_packages(p.format.tools())?;
    for d in tree.ensure_prepared_from(&base_of(&p.tree)?)? {
        eprintln!("klpx: note: Kconfig did not keep {d}");
    }
    let made = build_packages(
        &PackageRequest {
            base: tree,
            patches,
            fuzz: p.fuzz,
            format: p.format,
            output: abs(&output),
        },
        &|m| eprintln!("klpx: {m}"),
    )?;
    for m in made {
        println!("{}", m.display());
    }
    Ok(exit::OK)
}
