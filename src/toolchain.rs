//! Finding the compiler for an architecture: an explicit `--cross` prefix, else a `CROSS_COMPILE` from
//! the environment that targets the architecture, else the backend's Debian default.

use std::path::PathBuf;

use klpx_arch::Backend;

/// Where the C compiler for an architecture comes from and whether it is installed.
#[derive(Debug, Clone)]
pub struct Compiler {
    pub prefix: String,
    /// Why this prefix: "--cross", "CROSS_COMPILE" or "default".
    pub source: &'static str,
    pub gcc: Option<PathBuf>,
}

impl Compiler {
    pub fn command(&self) -> String {
        format!("{}gcc", self.prefix)
    }
}

/// Whether a `CROSS_COMPILE` prefix targets the backend's architecture (`aarch64-linux-gnu-` → arm64).
pub fn prefix_targets(backend: &dyn Backend, prefix: &str) -> bool {
    if prefix.is_empty() {
        return backend.arch().is_host();
    }
    let arch = backend.triple().architecture.to_string();
    let base = prefix.rsplit('/').next().unwrap_or(prefix);
    base.starts_with(&format!("{arch}-"))
}

/// Resolves the compiler prefix for `backend`.
pub fn find_compiler(
    backend: &dyn Backend,
    cross: Option<&str>,
    env_cross: Option<&str>,
) -> Compiler {
    let (prefix, source) = match (cross, env_cross) {
        (Some(p), _) => (p.to_string(), "--cross"),
        (None, Some(p)) if prefix_targets(backend, p) => (p.to_string(), "CROSS_COMPILE"),
        _ => (backend.default_cross_prefix().to_string(), "default"),
    };
    let gcc = which::which(format!("{prefix}gcc")).ok();
    Compiler {
        prefix,
        source,
        gcc,
    }
}
