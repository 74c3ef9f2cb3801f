//! The config fragments in `configs/`, built into the binary so klpx can configure trees anywhere.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use klpx_arch::Arch;

/// Fragment every livepatch-capable tree gets.
pub const LIVEPATCH: &str = include_str!("../../configs/livepatch.config");

/// Writes the fragments for `arch` into `dir` and returns their paths, livepatch essentials first.
pub fn write_fragments(arch: Arch, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = [
        ("livepatch.config", LIVEPATCH),
        (
            &format!("{}.config", arch.name())[..],
            arch.backend().config_fragment(),
        ),
    ];
    files
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        })
        .collect()
}
