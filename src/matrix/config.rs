//! The architecture matrix (`cross-dev.yaml`): one kernel source, an output tree per architecture,
//! each architecture's compiler. Every error names the file, line and column.

use std::path::{Path, PathBuf};

use klpx_arch::Arch;
use serde::{Deserialize, Deserializer};

use crate::error::UserError;

/// An architecture name, checked while parsing so that a bad one is reported at its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchName(pub Arch);

impl<'de> Deserialize<'de> for ArchName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ArchName, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map(ArchName)
            .map_err(|e| serde::de::Error::custom(format!("{e}")))
    }
}

/// The compiler family of one architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compiler {
    Gcc,
    /// clang with the LLVM tools (`LLVM=1`).
    Clang,
}

/// One architecture of the matrix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchEntry {
    pub arch: ArchName,
    /// `CROSS_COMPILE`; default: the architecture's Debian prefix.
    #[serde(default)]
    pub cross: Option<String>,
    #[serde(default = "default_compiler")]
    pub compiler: Compiler,
    /// A compiler launcher (ccache, sccache, distcc).
    #[serde(default)]
    pub launcher: Option<String>,
    /// Extra kernel config fragments, relative to the matrix file.
    #[serde(default)]
    pub fragments: Vec<PathBuf>,
}

fn default_compiler() -> Compiler {
    Compiler::Gcc
}

/// The whole matrix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    /// `debian:linux-source-6.12` (unpacked into klpx's cache) or a kernel source directory.
    pub source: String,
    /// Prefix of the output trees (`<output>/<arch>`); relative to klpx's cache.
    pub output: PathBuf,
    /// Parallel jobs in all, shared across the architectures.
    #[serde(default = "default_jobs")]
    pub jobs: usize,
    pub arches: Vec<ArchEntry>,
}

fn default_jobs() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl Matrix {
    /// Parses a matrix file; `name` is used in errors (`cross-dev.yaml:7:11: ...`).
    pub fn parse(name: &str, text: &str) -> Result<Matrix, UserError> {
        let m: Matrix = serde_norway::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("{}:{}", l.line(), l.column()))
                .unwrap_or_else(|| "1:1".into());
            let msg = e.to_string();
            // serde_norway appends " at line L column C"; the location is given up front instead.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            UserError::new(format!("{name}:{at}: {msg}"))
        })?;
        if m.arches.is_empty() {
            return Err(UserError::new(format!(
                "{name}: `arches` lists no architecture"
            )));
        }
        let mut seen = Vec::new();
        for a in &m.arches {
            if seen.contains(&a.arch.0) {
                return Err(UserError::new(format!(
                    "{name}: {} is listed twice under `arches`",
                    a.arch.0
                )));
            }
            seen.push(a.arch.0);
        }
        if m.jobs == 0 {
            return Err(UserError::new(format!("{name}: `jobs` must be at least 1")));
        }
        Ok(m)
    }

    /// Reads and parses a matrix file.
    pub fn load(path: &Path) -> Result<Matrix, UserError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UserError::new(format!("{}: cannot read: {e}", path.display())))?;
        Matrix::parse(&path.display().to_string(), &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_matrix_parses() {
        let text = include_str!("../../cross-dev.yaml");
        let m = Matrix::parse("cross-dev.yaml", text).unwrap();
        let arches: Vec<Arch> = m.arches.iter().map(|a| a.arch.0).collect();
        assert_eq!(arches, Arch::ALL);
    }

    #[test]
    fn errors_name_line_and_column() {
        let bad = "source: x\noutput: trees\narches:\n  - arch: x86_64\n    crosss: \"\"\n";
        let e = Matrix::parse("m.yaml", bad).unwrap_err().to_string();
        assert!(e.starts_with("m.yaml:5:5: "), "{e}");
        assert!(e.contains("crosss"), "{e}");
        let bad = "source: x\noutput: trees\narches:\n  - arch: sparc\n";
        let e = Matrix::parse("m.yaml", bad).unwrap_err().to_string();
        assert!(e.starts_with("m.yaml:4:"), "{e}");
        assert!(e.contains("sparc"), "{e}");
    }
}
