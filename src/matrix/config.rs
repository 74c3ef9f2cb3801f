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
    /// Parallel jobs in all on this machine, shared across the architectures: the file's `jobs`,
    /// else the CPUs.
    #[serde(skip)]
    pub jobs: usize,
    /// The compiles a distcc farm takes at once (`distcc -j`), when an architecture compiles
    /// through distcc and the file sets no `jobs`: those compiles run that many, shared.
    #[serde(skip)]
    pub farm_jobs: Option<usize>,
    #[serde(default, rename = "jobs")]
    jobs_in_file: Option<usize>,
    pub arches: Vec<ArchEntry>,
}

impl Matrix {
    /// Parses a matrix file; `name` is used in errors (`cross-dev.yaml:7:11: ...`).
    pub fn parse(name: &str, text: &str) -> Result<Matrix, UserError> {
        check_nesting(name, text)?;
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
        if m.jobs_in_file == Some(0) {
            return Err(UserError::new(format!("{name}: `jobs` must be at least 1")));
        }
        let mut m = m;
        m.jobs = crate::cli::jobs(m.jobs_in_file)?;
        if m.jobs_in_file.is_none() {
            let farm = m
                .arches
                .iter()
                .filter_map(|a| a.launcher.as_deref())
                .filter_map(crate::kbuild::toolchain::launcher_jobs)
                .max();
            m.farm_jobs = Some(crate::cli::jobs_or_farm(farm)).filter(|&n| n > m.jobs);
        }
        Ok(m)
    }

    /// Checks that every extra fragment (relative to `dir`, the matrix file's directory) is a file,
    /// before any kernel tree is built.
    pub fn check_fragments(&self, name: &str, dir: &Path) -> Result<(), UserError> {
        for a in &self.arches {
            for f in &a.fragments {
                if !dir.join(f).is_file() {
                    return Err(UserError::new(format!(
                        "{name}: {}: fragment {}: no such file (paths are relative to the matrix file)",
                        a.arch.0,
                        f.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Keeps only `arches` (`--arches`, `KLPX_ARCHES`; all when empty), each of which the file
    /// (`name`) must list.
    pub fn select(&mut self, arches: &[Arch], name: &str) -> Result<(), UserError> {
        if arches.is_empty() {
            return Ok(());
        }
        if let Some(missing) = arches
            .iter()
            .find(|a| !self.arches.iter().any(|e| e.arch.0 == **a))
        {
            let listed: Vec<&str> = self.arches.iter().map(|e| e.arch.0.name()).collect();
            return Err(UserError::new(format!(
                "--arches (or KLPX_ARCHES) {missing}: {name} has no such architecture (it lists {})",
                listed.join(", ")
            )));
        }
        self.arches.retain(|e| arches.contains(&e.arch.0));
        Ok(())
    }

    /// Checks, before any kernel tree is built, that every architecture's compiler (and launcher)
    /// is on PATH, as `klpx doctor` would find it.
    pub fn check_compilers(&self, name: &str) -> Result<(), UserError> {
        for e in &self.arches {
            let b = e.arch.0.backend();
            let c = crate::kbuild::toolchain::find_compiler(b, e.cross.as_deref(), None);
            let missing = match e.compiler {
                Compiler::Gcc if c.gcc.is_none() => Some((
                    c.command(),
                    if e.cross.is_some() {
                        "fix its `cross` prefix".to_string()
                    } else {
                        format!("apt-get install {}", b.compiler_package())
                    },
                )),
                Compiler::Clang if which::which("clang").is_err() => Some((
                    "clang".to_string(),
                    "apt-get install clang lld llvm".to_string(),
                )),
                _ => None,
            };
            let launcher = e
                .launcher
                .as_ref()
                .filter(|l| which::which(l).is_err())
                .map(|l| (l.clone(), "install it or fix `launcher`".to_string()));
            if let Some((what, fix)) = missing.or(launcher) {
                return Err(UserError::new(format!(
                    "{name}: {}: {what} is not on PATH: {fix}",
                    e.arch.0
                )));
            }
        }
        Ok(())
    }

    /// Reads and parses a matrix file.
    pub fn load(path: &Path) -> Result<Matrix, UserError> {
        let bytes = crate::files::read_input(path, "a matrix YAML file")?;
        if bytes.len() > MAX_FILE {
            return Err(UserError::new(format!(
                "{}: {} bytes; a matrix file is a page of YAML (limit {MAX_FILE})",
                path.display(),
                bytes.len()
            )));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| UserError::new(format!("{}: not UTF-8 text", path.display())))?;
        Matrix::parse(&path.display().to_string(), &text)
    }
}

/// Largest matrix file read (1 MiB): thousands of architectures' worth.
const MAX_FILE: usize = 1 << 20;

/// Deepest nesting of YAML flow collections (`[`, `{`) accepted; a matrix needs three, a `klpx
/// verify --cases` file two.
const MAX_DEPTH: usize = 32;

/// Refuses flow collections nested deeper than [`MAX_DEPTH`] before the YAML parser sees them: its
/// time grows with the square of the depth (100,000 brackets take 20 s).
pub(crate) fn check_nesting(name: &str, text: &str) -> Result<(), UserError> {
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        let mut quote = None;
        let mut prev = ' ';
        for (col, c) in line.chars().enumerate() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '#') if prev.is_whitespace() => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(UserError::new(format!(
                            "{name}:{}:{}: collections nested more than {MAX_DEPTH} deep",
                            n + 1,
                            col + 1
                        )));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            prev = c;
        }
    }
    Ok(())
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
    fn deep_nesting_is_refused_at_once() {
        let deep = format!("source: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let e = Matrix::parse("m.yaml", &deep).unwrap_err().to_string();
        assert!(e.starts_with("m.yaml:1:41: "), "{e}");
        let lines = format!("source: {}\n", "[\n".repeat(100));
        let e = Matrix::parse("m.yaml", &lines).unwrap_err().to_string();
        assert!(e.starts_with("m.yaml:33:1: "), "{e}");
        let quoted = format!(
            "source: \"{}\"\noutput: trees\narches:\n  - arch: x86_64\n",
            "[".repeat(100)
        );
        Matrix::parse("m.yaml", &quoted).unwrap();
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
