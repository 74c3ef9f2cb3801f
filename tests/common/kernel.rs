//! Real kernel objects for tests and benchmarks: per-architecture output trees over Debian's
//! linux-source-6.12 (configured from `configs/`, prepared once and cached), and original/patched
//! object pairs compiled with each object's recorded kbuild command plus the livepatch flags.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use klpx::kbuild::cmdfile::CmdFile;
use klpx::kbuild::compile::{livepatch_cflags, recompile};
use klpx::kernel::cache;
use klpx::kernel::tree::KernelTree;
use klpx::livepatch::journal;
use klpx::livepatch::lock::SourceLock;
use klpx::patch::source::SourcePatch;
use klpx::patch::source::{DEFAULT_FUZZ, plan_edits};
use klpx_arch::Arch;
use serde::Deserialize;

/// The repository root (where `configs/` and `tests/` live).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A configured and prepared tree for `arch` over the cached Debian source, built on first use and
/// reused while the config fragments are unchanged.
pub fn tree(arch: Arch) -> Result<KernelTree> {
    prepared(arch, arch.name(), None)
}

/// Where Debian's clang 16 and its LLVM tools live, unsuffixed (kbuild's `LLVM=` prefix form).
pub const LLVM_16: &str = "/usr/lib/llvm-16/bin/";

/// `PATH` with [`LLVM_16`] first.
pub fn llvm_16_path() -> String {
    format!(
        "{}:{}",
        LLVM_16.trim_end_matches('/'),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Puts [`LLVM_16`] first in this test process's `PATH` (once), for the recorded commands of clang
/// trees that tests run themselves. The directory holds clang and the LLVM tools only, so tests
/// of gcc trees running beside them still find theirs.
pub fn use_llvm_16() {
    static PATH: std::sync::Once = std::sync::Once::new();
    PATH.call_once(|| {
        let path = llvm_16_path();
        // SAFETY: set once, before the caller reads the environment for clang; other tests read
        // PATH only when they start a process, and find gcc there still.
        unsafe { std::env::set_var("PATH", path) };
    });
}

/// As [`tree`], built with clang 16 and the LLVM tools (`LLVM=/usr/lib/llvm-16/bin/`), in a tree
/// of its own.
pub fn llvm_tree(arch: Arch) -> Result<KernelTree> {
    prepared(arch, &format!("{}-llvm16", arch.name()), Some(LLVM_16))
}

/// The cache's `trees/<name>` for `arch`, prepared, with `LLVM=llvm` when given.
fn prepared(arch: Arch, name: &str, llvm: Option<&str>) -> Result<KernelTree> {
    let src = {
        // Unpacking must not race with another test process.
        let base = cache::root().join("src");
        std::fs::create_dir_all(&base)?;
        let lock = File::create(base.join(".unpack.lock"))?;
        lock.lock()?;
        cache::debian_source()?
    };
    let mut tree = KernelTree::new(arch, &src, &cache::root().join("trees").join(name), 2);
    if let Some(l) = llvm {
        tree = tree.with_llvm(l);
    }
    let _lock = SourceLock::take(&src)?;
    let dropped = tree.ensure_prepared()?;
    if !dropped.is_empty() {
        eprintln!("{name}: Kconfig did not keep: {}", dropped.join(", "));
    }
    Ok(tree)
}

/// A tree for `arch` configured, prepared and built whole (kernel image, vmlinux, modules): built on
/// first use (a few minutes) and reused while the fragments are unchanged.
pub fn built_tree(arch: Arch) -> Result<KernelTree> {
    let tree = tree(arch)?;
    let _lock = SourceLock::take(&tree.src)?;
    tree.ensure_built()
        .with_context(|| format!("building the {arch} kernel in {}", tree.out.display()))?;
    Ok(tree)
}

/// Builds the original objects of `cases` in `tree` with kbuild (a no-op when they are up to date), so
/// their `.cmd` files record the tree's current configuration.
pub fn build_originals(tree: &KernelTree, cases: &[&Case]) -> Result<()> {
    let mut objects: Vec<&str> = cases.iter().map(|c| c.object.as_str()).collect();
    objects.sort();
    objects.dedup();
    let _lock = SourceLock::take(&tree.src)?;
    tree.build_objects(&objects)
}

/// One case of the real-object corpus.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    pub name: String,
    pub patch: String,
    /// The object the patch changes, as kbuild names it (`kernel/sys.o`).
    pub object: String,
    #[serde(default)]
    pub arches: Option<Vec<String>>,
    pub expect: Expect,
    /// Per-architecture replacements of fields of `expect`.
    #[serde(default)]
    pub arch: std::collections::BTreeMap<String, ExpectOverride>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Expect {
    pub verdict: String,
    #[serde(default)]
    pub changed: Vec<String>,
    #[serde(default)]
    pub new: Vec<String>,
    #[serde(default)]
    pub refused: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExpectOverride {
    pub verdict: Option<String>,
    pub changed: Option<Vec<String>>,
    pub new: Option<Vec<String>>,
    pub refused: Option<Vec<String>>,
}

impl Case {
    pub fn applies_to(&self, arch: Arch) -> bool {
        self.arches
            .as_ref()
            .is_none_or(|a| a.iter().any(|n| n == arch.name()))
    }

    /// The expectation for `arch`, with its overrides applied.
    pub fn expect_for(&self, arch: Arch) -> Expect {
        let mut e = self.expect.clone();
        if let Some(o) = self.arch.get(arch.name()) {
            if let Some(v) = &o.verdict {
                e.verdict = v.clone();
            }
            if let Some(v) = &o.changed {
                e.changed = v.clone();
            }
            if let Some(v) = &o.new {
                e.new = v.clone();
            }
            if let Some(v) = &o.refused {
                e.refused = v.clone();
            }
        }
        e
    }
}

/// The corpus manifest.
pub fn cases() -> Result<Vec<Case>> {
    let path = repo().join("tests/kernel-corpus/cases.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_norway::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// An object built from the original and from the patched source.
#[derive(Debug, Clone)]
pub struct ObjectPair {
    pub orig: PathBuf,
    pub patched: PathBuf,
}

/// Builds `object` (kbuild's name, `kernel/sys.o`) of the output tree `out` over the source `src`
/// twice into `dir`, before and after `patch` (applied under klpx's journal, as `klpx build` does,
/// but without its `#line` directives), with each object's recorded kbuild command plus the
/// livepatch flags; reuses earlier results when the patch and the recorded command are unchanged.
pub fn build_pair_in(
    src: &Path,
    out: &Path,
    arch: Arch,
    object: &str,
    patch: &SourcePatch,
    patch_text: &str,
    dir: &Path,
) -> Result<ObjectPair> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let flags = livepatch_cflags(arch.backend());
    let _lock = SourceLock::take(src)?;
    let cmd = CmdFile::load(out, object)?;
    let key = format!(
        "{:016x}",
        cache::fingerprint_bytes(
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
    recompile(out, &cmd, &pair.orig, &flags)
        .with_context(|| format!("{object}: original build"))?;
    let edits = plan_edits(std::slice::from_ref(patch), src, DEFAULT_FUZZ)?;
    let patched = journal::apply(src, &edits)?;
    let built = recompile(out, &cmd, &pair.patched, &flags);
    patched.undo()?;
    built.with_context(|| format!("{object}: patched build"))?;
    std::fs::write(&key_file, key)?;
    Ok(pair)
}

/// Builds (or reuses) the original and patched objects of `case` in `tree`.
pub fn pair(tree: &KernelTree, case: &Case) -> Result<ObjectPair> {
    let dir = cache::root()
        .join("corpus")
        .join(tree.arch.name())
        .join(&case.name);
    let patch_path = repo().join("tests/kernel-corpus").join(&case.patch);
    let text = std::fs::read_to_string(&patch_path)
        .with_context(|| format!("reading {}", patch_path.display()))?;
    let patch = SourcePatch::parse(&case.patch, &text)?;
    build_pair_in(
        &tree.src,
        &tree.out,
        tree.arch,
        &case.object,
        &patch,
        &text,
        &dir,
    )
}
