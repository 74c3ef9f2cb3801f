//! A kernel output tree (`O=`) for one architecture: configured from a base config plus klpx's
//! fragments, prepared, and built whole or one object at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use klpx_arch::Arch;

use super::configs;

/// klpx's config fragments as merged into a tree (in every tree klpx configured).
pub const FRAGMENTS: &str = ".klpx-fragments";

/// The file that says klpx created an output tree (and may remove it with `klpx kernel clean`).
pub const CREATED_MARKER: &str = ".klpx-tree";

/// Creates `dir` for a new tree and marks it as klpx's; a directory that already holds anything is
/// used as it is and never marked, so `klpx kernel clean` will not remove what klpx did not make.
fn claim(dir: &Path) -> Result<()> {
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(_) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            true
        }
    };
    if empty {
        std::fs::write(
            dir.join(CREATED_MARKER),
            "made by klpx kernel build/config\n",
        )
        .with_context(|| format!("marking {}", dir.display()))?;
    }
    Ok(())
}

/// How the tree's `.config` starts before the fragments are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseConfig {
    Tinyconfig,
    Defconfig,
    /// A user's `.config`.
    File(PathBuf),
}

/// One architecture's output tree over a kernel source.
#[derive(Debug, Clone)]
pub struct KernelTree {
    pub arch: Arch,
    pub src: PathBuf,
    pub out: PathBuf,
    /// `CROSS_COMPILE` prefix.
    pub cross: String,
    pub jobs: usize,
    /// Config fragments merged after klpx's own (a matrix's per-architecture extras).
    pub extra_fragments: Vec<PathBuf>,
    /// kbuild's `LLVM=` (`1`, a `-16` suffix or a `/usr/lib/llvm-16/bin/` prefix): clang and the
    /// LLVM tools instead of gcc and binutils.
    pub llvm: Option<String>,
}

impl KernelTree {
    /// A tree for `arch` with the backend's default cross prefix.
    pub fn new(arch: Arch, src: &Path, out: &Path, jobs: usize) -> KernelTree {
        KernelTree {
            arch,
            src: src.to_path_buf(),
            out: out.to_path_buf(),
            cross: arch.backend().default_cross_prefix().to_string(),
            jobs,
            extra_fragments: Vec::new(),
            llvm: None,
        }
    }

    /// The same tree built with clang and the LLVM tools (`LLVM=llvm`).
    pub fn with_llvm(mut self, llvm: &str) -> KernelTree {
        self.llvm = Some(llvm.to_string());
        self
    }

    /// `make -C SRC O=OUT ARCH=.. CROSS_COMPILE=.. ARGS`, with output captured for errors.
    pub fn make(&self, args: &[&str]) -> Result<()> {
        let mut argv: Vec<String> = vec![
            "-C".into(),
            self.src.display().to_string(),
            format!("O={}", self.out.display()),
            format!("ARCH={}", self.arch.backend().kernel_arch()),
            format!("CROSS_COMPILE={}", self.cross),
            format!("-j{}", self.jobs.max(1)),
        ];
        if let Some(llvm) = &self.llvm {
            argv.push(format!("LLVM={llvm}"));
        }
        argv.extend(args.iter().map(|s| s.to_string()));
        let out = crate::kbuild::make(&argv)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .with_context(|| format!("running make {}", args.join(" ")))?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "make {} failed for {} in {}:\n{}",
                args.join(" "),
                self.arch,
                self.out.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// Writes `.config` from `base` plus `fragments`, and checks that every option a fragment sets
    /// survived Kconfig. Returns the options that Kconfig dropped (with what it chose instead).
    pub fn configure(&self, base: &BaseConfig, fragments: &[PathBuf]) -> Result<Vec<String>> {
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("creating {}", self.out.display()))?;
        match base {
            BaseConfig::Tinyconfig => self.make(&["tinyconfig"])?,
            BaseConfig::Defconfig => self.make(&["defconfig"])?,
            BaseConfig::File(p) => {
                std::fs::copy(p, self.out.join(".config"))
                    .with_context(|| format!("copying {}", p.display()))?;
            }
        }
        let mut wanted = BTreeMap::new();
        let mut config =
            std::fs::read_to_string(self.out.join(".config")).context("reading .config")?;
        for f in fragments {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            for (k, v) in parse_config(&text) {
                wanted.insert(k, v);
            }
            config.push('\n');
            config.push_str(&text);
        }
        std::fs::write(self.out.join(".config"), config).context("writing .config")?;
        self.make(&["olddefconfig"])?;
        let got = parse_config(
            &std::fs::read_to_string(self.out.join(".config")).context("reading .config")?,
        );
        let got: BTreeMap<String, String> = got.into_iter().collect();
        Ok(wanted
            .into_iter()
            .filter_map(|(k, v)| {
                let actual = got.get(&k).cloned().unwrap_or_else(|| "n".to_string());
                (actual != v).then(|| format!("{k}={v} (Kconfig chose {actual})"))
            })
            .collect())
    }

    /// Builds what single-object compiles need (generated headers, objtool, scripts).
    pub fn prepare(&self) -> Result<()> {
        self.make(&["prepare"])
    }

    /// Configures (from tinyconfig and klpx's fragments) and prepares the tree unless it already was
    /// with the same fragments. Returns the options Kconfig did not keep, when it configured.
    pub fn ensure_prepared(&self) -> Result<Vec<String>> {
        self.ensure_prepared_from(&BaseConfig::Tinyconfig)
    }

    /// [`KernelTree::ensure_prepared`] from another base config.
    pub fn ensure_prepared_from(&self, base: &BaseConfig) -> Result<Vec<String>> {
        claim(&self.out)?;
        let mut fragments = configs::write_fragments(self.arch, &self.out.join(FRAGMENTS))?;
        fragments.extend(self.extra_fragments.iter().cloned());
        let mut key = match base {
            BaseConfig::Tinyconfig => String::new(),
            BaseConfig::Defconfig => "defconfig\n".to_string(),
            BaseConfig::File(p) => {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
            }
        };
        for f in &fragments {
            key.push_str(&std::fs::read_to_string(f)?);
        }
        if let Some(llvm) = &self.llvm {
            key.push_str(&format!("LLVM={llvm}\n"));
        }
        let key = format!("{:016x}", super::cache::fingerprint_bytes(key.as_bytes()));
        let stamp = self.out.join(".klpx-prepared");
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str()) {
            return Ok(Vec::new());
        }
        let dropped = self.configure(base, &fragments)?;
        self.prepare()?;
        std::fs::write(&stamp, key).context("writing the prepared stamp")?;
        Ok(dropped)
    }

    /// Configures and prepares the tree as [`KernelTree::ensure_prepared`] does, then builds the kernel
    /// and its modules once; later calls with the same fragments do nothing.
    pub fn ensure_built(&self) -> Result<Vec<String>> {
        self.ensure_built_from(&BaseConfig::Tinyconfig)
    }

    /// [`KernelTree::ensure_built`] from another base config.
    pub fn ensure_built_from(&self, base: &BaseConfig) -> Result<Vec<String>> {
        let dropped = self.ensure_prepared_from(base)?;
        let key = std::fs::read_to_string(self.out.join(".klpx-prepared")).unwrap_or_default();
        let stamp = self.out.join(".klpx-built");
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str())
            && self.out.join("vmlinux.a").is_file()
            && self.out.join("Module.symvers").is_file()
        {
            return Ok(dropped);
        }
        self.make(&[])?;
        std::fs::write(&stamp, key).context("writing the built stamp")?;
        Ok(dropped)
    }

    /// Builds single objects (`kernel/sys.o`), which also records their `.cmd` files.
    pub fn build_objects(&self, objects: &[&str]) -> Result<()> {
        self.make(objects)
    }
}

/// `CONFIG_X=v` and `# CONFIG_X is not set` lines, as (option, value) with `n` for unset.
pub fn parse_config(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if let Some(rest) = l
                .strip_prefix("# ")
                .and_then(|r| r.strip_suffix(" is not set"))
            {
                return rest
                    .starts_with("CONFIG_")
                    .then(|| (rest.to_string(), "n".to_string()));
            }
            let (k, v) = l.split_once('=')?;
            k.starts_with("CONFIG_")
                .then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_config_lines() {
        let got =
            super::parse_config("CONFIG_A=y\n# CONFIG_B is not set\n# comment\nCONFIG_C=\"x y\"\n");
        assert_eq!(
            got,
            vec![
                ("CONFIG_A".to_string(), "y".to_string()),
                ("CONFIG_B".to_string(), "n".to_string()),
                ("CONFIG_C".to_string(), "\"x y\"".to_string())
            ]
        );
    }
}
