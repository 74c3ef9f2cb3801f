//! Real kernel objects for tests and benchmarks: per-architecture output trees over Debian's
//! linux-source-6.12 (configured from `configs/`, prepared once and cached), and original/patched
//! object pairs compiled with each object's recorded kbuild command plus the livepatch flags.

#![allow(dead_code)]

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use klpx::kbuild::cmdfile::CmdFile;
use klpx::kbuild::compile::{livepatch_cflags, recompile};
use klpx::kernel::cache;
use klpx::kernel::tree::{BaseConfig, KernelTree};
use klpx::patch::source::SourcePatch;
use klpx_arch::Arch;
use serde::Deserialize;

/// The repository root (where `configs/` and `tests/` live).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fragments merged on top of tinyconfig for `arch`.
pub fn fragments(arch: Arch) -> Vec<PathBuf> {
    vec![
        repo().join("configs/livepatch.config"),
        repo().join(format!("configs/{}.config", arch.name())),
    ]
}

fn hash_of(parts: &[&[u8]]) -> String {
    let mut h = std::hash::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

/// Holds the source tree's lock: patches are applied in place, one at a time across processes.
pub struct SourceLock(File);

impl SourceLock {
    pub fn take(src: &Path) -> Result<SourceLock> {
        let f = File::create(src.join(".klpx-test.lock")).context("creating the source lock")?;
        f.lock().context("locking the source tree")?;
        Ok(SourceLock(f))
    }
}

/// A configured and prepared tree for `arch`, built on first use and reused while its configuration
/// inputs are unchanged.
pub fn tree(arch: Arch) -> Result<KernelTree> {
    let src = {
        // Unpacking must not race with another test's patch application.
        let base = cache::root().join("src");
        std::fs::create_dir_all(&base)?;
        let lock = File::create(base.join(".unpack.lock"))?;
        lock.lock()?;
        cache::debian_source()?
    };
    let out = cache::root().join("trees").join(arch.name());
    let tree = KernelTree::new(arch, &src, &out, 2);
    let frags = fragments(arch);
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for f in &frags {
        inputs.push(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?);
    }
    let key = hash_of(&inputs.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let stamp = out.join(".klpx-prepared");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str()) {
        return Ok(tree);
    }
    let _lock = SourceLock::take(&src)?;
    let dropped = tree.configure(&BaseConfig::Tinyconfig, &frags)?;
    if !dropped.is_empty() {
        eprintln!("{arch}: Kconfig did not keep: {}", dropped.join(", "));
    }
    tree.prepare()?;
    std::fs::write(&stamp, &key)?;
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

/// Compiled original and patched objects of one case.
pub struct Pair {
    pub orig: PathBuf,
    pub patched: PathBuf,
}

/// Builds (or reuses) the original and patched objects of `case` in `tree`.
pub fn pair(tree: &KernelTree, case: &Case) -> Result<Pair> {
    let dir = cache::root()
        .join("corpus")
        .join(tree.arch.name())
        .join(&case.name);
    std::fs::create_dir_all(&dir)?;
    let patch_path = repo().join("tests/kernel-corpus").join(&case.patch);
    let patch_text = std::fs::read_to_string(&patch_path)
        .with_context(|| format!("reading {}", patch_path.display()))?;
    let flags = livepatch_cflags(tree.arch.backend());

    let lock = SourceLock::take(&tree.src)?;
    let cmd = CmdFile::load(&tree.out, &case.object)?;
    let key = hash_of(&[
        patch_text.as_bytes(),
        cmd.command.as_bytes(),
        flags.join(" ").as_bytes(),
    ]);
    let (orig, patched) = (dir.join("orig.o"), dir.join("patched.o"));
    let key_file = dir.join("key");
    if std::fs::read_to_string(&key_file).ok().as_deref() == Some(key.as_str())
        && orig.is_file()
        && patched.is_file()
    {
        return Ok(Pair { orig, patched });
    }
    recompile(&tree.out, &cmd, &orig, &flags)
        .with_context(|| format!("{}: original build", case.name))?;
    let sp = SourcePatch::parse(&case.patch, &patch_text)?;
    let applied = sp.apply(&tree.src)?;
    let built = recompile(&tree.out, &cmd, &patched, &flags);
    applied
        .revert()
        .context("reverting the patch in the test source tree")?;
    built.with_context(|| format!("{}: patched build", case.name))?;
    drop(lock);
    std::fs::write(&key_file, key)?;
    Ok(Pair { orig, patched })
}
