//! The compiler klpx compiles with: found for an architecture (`--cross`, a `CROSS_COMPILE` that
//! targets it, else the backend's Debian default), the tree's recorded one or the user's (`--cc`,
//! `--llvm`), through an optional launcher (ccache, sccache, distcc); and the check that it is the
//! one that built the kernel.

use std::path::{Path, PathBuf};

use klpx_arch::{Arch, Backend};

use crate::error::UserError;

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

/// How many compiles a launcher's hosts take at once, when it can say: distcc's `distcc -j` (the
/// slots of `DISTCC_HOSTS` or its hosts file). `None` for other launchers (ccache, sccache, icecc,
/// whose scheduler spreads what it is given).
pub fn launcher_jobs(launcher: &str) -> Option<usize> {
    let name = Path::new(launcher).file_name()?.to_str()?;
    if name != "distcc" {
        return None;
    }
    let out = duct::cmd!(launcher, "-j")
        .stdout_capture()
        .stderr_null()
        .unchecked()
        .run()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .ok()
        .filter(|&n| n > 0)
}

/// The toolchain options of `klpx build`, as kbuild understands them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    pub arch: Arch,
    /// `CROSS_COMPILE`.
    pub cross: String,
    /// `LLVM=1`: clang and the LLVM binutils.
    pub llvm: bool,
    /// `CC`, when the user names the compiler.
    pub cc: Option<String>,
    /// A compiler launcher put in front of the compiler.
    pub launcher: Option<String>,
    /// More make variables every make run on the tree must repeat, as the tree was configured with
    /// them (a prepared distribution tree: `RUSTC=/nonexistent`, or Kconfig reconfigures it).
    pub extra_vars: Vec<String>,
}

/// Extra `make` variables for the tree's toolchain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MakeVars(pub Vec<String>);

impl MakeVars {
    pub fn args(&self) -> Vec<String> {
        self.0.clone()
    }
}

impl Toolchain {
    /// `ARCH=`, `CROSS_COMPILE=`, `LLVM=1`, `CC=` as make arguments.
    pub fn make_vars(&self) -> MakeVars {
        let mut v = vec![
            format!("ARCH={}", self.arch.backend().kernel_arch()),
            format!("CROSS_COMPILE={}", self.cross),
        ];
        if self.llvm {
            v.push("LLVM=1".into());
        }
        let cc = self.cc.clone().or_else(|| {
            self.launcher.as_ref().map(|_| {
                if self.llvm {
                    "clang".to_string()
                } else {
                    format!("{}gcc", self.cross)
                }
            })
        });
        if let Some(cc) = cc {
            match &self.launcher {
                Some(l) => v.push(format!("CC={l} {cc}")),
                None => v.push(format!("CC={cc}")),
            }
        }
        v.extend(self.extra_vars.iter().cloned());
        MakeVars(v)
    }

    /// The make variables for linking with the tree's own compiler: `CC` as the recorded (and
    /// rewritten) compile `command` names it, and `LLVM=1` when the tree was built with clang.
    pub fn make_vars_for(&self, command: &str, clang_tree: bool) -> MakeVars {
        let mut v = vec![
            format!("ARCH={}", self.arch.backend().kernel_arch()),
            format!("CROSS_COMPILE={}", self.cross),
        ];
        if self.llvm || clang_tree {
            v.push("LLVM=1".into());
        }
        let (words, _) = split_compiler(command);
        if !words.is_empty() {
            v.push(format!("CC={}", words.join(" ")));
        }
        v.extend(self.extra_vars.iter().cloned());
        MakeVars(v)
    }

    /// A recorded compile command with the compiler replaced by `--cc` and prefixed by `--launcher`.
    pub fn rewrite_command(&self, recorded: &str) -> String {
        if self.cc.is_none() && self.launcher.is_none() {
            return recorded.to_string();
        }
        let (words, rest) = split_compiler(recorded);
        let mut compiler: Vec<String> = match &self.cc {
            Some(cc) => vec![cc.clone()],
            None => words.iter().map(|s| s.to_string()).collect(),
        };
        if let Some(l) = &self.launcher
            && compiler.first().map(String::as_str) != Some(l.as_str())
        {
            compiler.insert(0, l.clone());
        }
        format!("{} {rest}", compiler.join(" "))
    }

    /// The compiler words of a (rewritten) command without the launcher: what `--version` is asked of.
    pub fn compiler_of(&self, command: &str) -> Vec<String> {
        let (words, _) = split_compiler(command);
        let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        if let Some(l) = &self.launcher
            && w.first() == Some(l)
        {
            w.remove(0);
        }
        w
    }
}

/// Splits a command into its leading compiler words (up to the first option) and the rest.
fn split_compiler(cmd: &str) -> (Vec<&str>, &str) {
    let mut words = Vec::new();
    let mut rest = cmd.trim_start();
    while let Some(w) = rest.split_whitespace().next() {
        if w.starts_with('-') {
            break;
        }
        words.push(w);
        rest = rest[rest.find(w).map_or(0, |i| i + w.len())..].trim_start();
    }
    (words, rest)
}

/// The compiler version the kernel was configured with (`CONFIG_CC_VERSION_TEXT`).
pub fn configured_version(objdir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(objdir.join("include/config/auto.conf"))
        .or_else(|_| std::fs::read_to_string(objdir.join(".config")))
        .ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("CONFIG_CC_VERSION_TEXT=")
            .map(|v| v.trim_matches('"').to_string())
    })
}

/// The first line of `compiler --version`.
pub fn compiler_version(compiler: &[String]) -> Result<String, UserError> {
    let (prog, args) = compiler
        .split_first()
        .ok_or_else(|| UserError::new("no compiler in the recorded command"))?;
    // As kbuild computes CONFIG_CC_VERSION_TEXT: LC_ALL=C, first line, without '#'.
    let out = duct::cmd(prog, args.iter().chain(["--version".to_string()].iter()))
        .env("LC_ALL", "C")
        .stdout_capture()
        .stderr_null()
        .unchecked()
        .run()
        .map_err(|e| UserError::new(format!("{prog}: cannot run ({e}); is it installed?")))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .replace('#', "")
        .trim()
        .to_string())
}

/// A `--version` line without the program name, which differs between a native and a cross build
/// of one compiler (`gcc-12 (Debian 12.2.0-14) 12.2.0`, `s390x-linux-gnu-gcc-12 (Debian 12.2.0-14)
/// 12.2.0`).
fn without_program(version: &str) -> &str {
    version.split_once(' ').map_or(version, |(_, rest)| rest)
}

/// Refuses a compiler that is not the one the config `config` (read from `path`) was made with.
pub fn check_compiler_text(path: &Path, config: &str, compiler: &str) -> Result<(), UserError> {
    let Some(want) = config.lines().find_map(|l| {
        l.strip_prefix("CONFIG_CC_VERSION_TEXT=")
            .map(|v| v.trim_matches('"').to_string())
    }) else {
        return Ok(());
    };
    let got = compiler_version(&[compiler.to_string()])?;
    if without_program(&got) != without_program(&want) {
        return Err(UserError::new(format!(
            "compiler mismatch: {} was built with '{want}' but {compiler} is '{got}'; use the \
             same compiler (--cc) or pass --skip-compiler-check (the identity check still compares \
             the changed functions)",
            path.display()
        )));
    }
    Ok(())
}

/// Refuses a compiler that is not the one the kernel was built with (the same version line, but
/// for the program's name).
pub fn check_compiler(objdir: &Path, compiler: &[String]) -> Result<(), UserError> {
    let Some(want) = configured_version(objdir) else {
        return Err(UserError::new(format!(
            "{}: no CONFIG_CC_VERSION_TEXT in include/config/auto.conf or .config; \
             is the tree configured? (--skip-compiler-check skips this)",
            objdir.display()
        )));
    };
    let got = compiler_version(compiler)?;
    if without_program(&got) != without_program(&want) {
        return Err(UserError::new(format!(
            "compiler mismatch: the kernel was built with '{want}' but {} is '{got}'; \
             use the same compiler (--cc, --cross) or pass --skip-compiler-check",
            compiler.join(" ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tc(cc: Option<&str>, launcher: Option<&str>) -> Toolchain {
        Toolchain {
            arch: Arch::X86_64,
            cross: String::new(),
            llvm: false,
            cc: cc.map(str::to_string),
            launcher: launcher.map(str::to_string),
            extra_vars: Vec::new(),
        }
    }

    #[test]
    fn launcher_and_cc_rewrite_the_recorded_command() {
        let rec = "gcc -Wp,-MMD,x.d -O2 -c -o x.o x.c";
        assert_eq!(tc(None, None).rewrite_command(rec), rec);
        assert_eq!(
            tc(None, Some("ccache")).rewrite_command(rec),
            "ccache gcc -Wp,-MMD,x.d -O2 -c -o x.o x.c"
        );
        assert_eq!(
            tc(Some("gcc-12"), Some("ccache")).rewrite_command("ccache gcc -O2 -c"),
            "ccache gcc-12 -O2 -c"
        );
        let t = tc(None, Some("ccache"));
        assert_eq!(t.compiler_of("ccache gcc -O2"), vec!["gcc"]);
        assert_eq!(
            t.make_vars().0,
            vec!["ARCH=x86", "CROSS_COMPILE=", "CC=ccache gcc"]
        );
        // The link uses the compiler the recorded command names, and LLVM on a clang tree.
        let plain = tc(None, None);
        assert_eq!(
            plain.make_vars_for("gcc-12 -O2 -c -o x.o x.c", false).0,
            vec!["ARCH=x86", "CROSS_COMPILE=", "CC=gcc-12"]
        );
        assert_eq!(
            plain.make_vars_for("clang -O2 -c", true).0,
            vec!["ARCH=x86", "CROSS_COMPILE=", "LLVM=1", "CC=clang"]
        );
    }
}
