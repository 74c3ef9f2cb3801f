//! A prepared output tree: a kernel that was never built here, made ready for livepatch builds with
//! no full build. kbuild configures the scratch `O=` tree with the target's own config (`olddefconfig
//! modules_prepare`, seconds), the target's `Module.symvers` goes beside it, and kbuild then compiles
//! single objects on demand (`make path/file.o`), recording each command and its dependencies in
//! `.file.o.cmd` exactly as a full build would. Modules link against it with `make M=`, as DKMS does.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use super::toolchain::Toolchain;
use crate::error::UserError;

/// The file klpx writes last into a tree it prepared: the fingerprint of its inputs.
pub const MARKER: &str = ".klpx-prepared";

/// Make variables every make run on a prepared tree repeats: no Rust toolchain (the host's rustc,
/// if any, is not the distribution's, and Kconfig would record its version and reconfigure).
pub const PREPARED_MAKE_VARS: &[&str] = &["RUSTC=/nonexistent"];

/// Config options klpx changes, because a tree without the distribution's keys cannot build
/// otherwise: no trusted keys to embed, and no signing of every module at `modules_install`.
const EDITS: &[(&str, Option<&str>)] = &[
    ("CONFIG_SYSTEM_TRUSTED_KEYS", Some("\"\"")),
    ("CONFIG_SYSTEM_REVOCATION_KEYS", Some("\"\"")),
    ("CONFIG_MODULE_SIG_ALL", None),
];

/// Options that record tool versions (a difference there is the compiler check's business), what
/// the host's Rust toolchain can do (klpx prepares without one), and whether the compiler can link
/// user programs (a cross compiler without the target's C library
/// cannot; only user-space test programs depend on it).
fn is_tool_version(key: &str) -> bool {
    key.ends_with("_VERSION")
        // What a host's Rust toolchain can do, recorded whether or not the kernel uses Rust.
        || key.starts_with("CONFIG_RUSTC_")
        || key == "CONFIG_RUST_IS_AVAILABLE"
        || matches!(
            key,
            "CONFIG_CC_VERSION_TEXT" | "CONFIG_CC_CAN_LINK" | "CONFIG_CC_CAN_LINK_STATIC"
        )
}

/// What a prepared tree is made from.
#[derive(Debug, Clone)]
pub struct PrepareRequest<'a> {
    pub srcdir: &'a Path,
    pub config: &'a Path,
    pub symvers: &'a Path,
    pub objdir: &'a Path,
    pub toolchain: &'a Toolchain,
    pub jobs: usize,
    /// Built with another compiler than the config's by request (`--llvm` for a gcc kernel): the
    /// options Kconfig derives from the compiler change, and are said rather than refused.
    pub other_compiler: bool,
}

/// The compiler a config names (`CONFIG_CC_VERSION_TEXT`'s first word: `x86_64-linux-gnu-gcc-12`).
pub fn config_compiler(config: &str) -> Option<String> {
    config.lines().find_map(|l| {
        let v = l.strip_prefix("CONFIG_CC_VERSION_TEXT=")?;
        v.trim_matches('"')
            .split_whitespace()
            .next()
            .map(str::to_string)
    })
}

/// The `CROSS_COMPILE` prefix of a compiler name (`x86_64-linux-gnu-gcc-12` → `x86_64-linux-gnu-`).
pub fn compiler_prefix(cc: &str) -> String {
    // The binutils are found through PATH: a compiler given by path names its prefix by its name.
    let name = cc.rsplit('/').next().unwrap_or(cc);
    match name.rfind("gcc").or_else(|| name.rfind("clang")) {
        Some(i) => name[..i].to_string(),
        None => String::new(),
    }
}

/// Refuses, before any long work, a config this machine cannot reproduce: a missing compiler, or
/// BTF without `pahole` (Kconfig would silently drop it and `struct module` would change size).
pub fn check_tools(config_path: &Path, config: &str, cc: &str) -> Result<(), UserError> {
    if which::which(cc).is_err() {
        return Err(UserError::new(format!(
            "{}: the kernel was built with {cc}, which is not installed (Debian: apt-get install {})",
            config_path.display(),
            debian_compiler_package(cc)
        )));
    }
    if config.lines().any(|l| l == "CONFIG_DEBUG_INFO_BTF=y") && which::which("pahole").is_err() {
        return Err(UserError::new(format!(
            "{}: DEBUG_INFO_BTF needs pahole, which is not installed (apt-get install dwarves)",
            config_path.display()
        )));
    }
    Ok(())
}

/// The Debian package of a compiler name: `x86_64-linux-gnu-gcc-12` is `gcc-12` on amd64 and
/// `gcc-12-x86-64-linux-gnu` elsewhere; both are named.
fn debian_compiler_package(cc: &str) -> String {
    let name = cc.rsplit('/').next().unwrap_or(cc);
    match name.rsplit_once("-gcc-") {
        Some((triple, v)) => format!("gcc-{v}-{} or gcc-{v}", triple.replace('_', "-")),
        None => name.to_string(),
    }
}

/// Prepares `objdir` (or finds it prepared from the same inputs). A directory klpx did not prepare
/// is never emptied: it must not exist, or be empty.
pub fn prepare(req: &PrepareRequest, progress: &dyn Fn(&str)) -> Result<()> {
    let config = std::fs::read(req.config)
        .map_err(|e| UserError::new(format!("{}: cannot read: {e}", req.config.display())))?;
    let symvers = std::fs::read(req.symvers)
        .map_err(|e| UserError::new(format!("{}: cannot read: {e}", req.symvers.display())))?;
    let fingerprint = format!(
        "{:016x}",
        crate::kernel::cache::fingerprint(&[
            &config,
            &symvers,
            req.srcdir.display().to_string().as_bytes(),
            without_launcher(req.toolchain)
                .make_vars()
                .args()
                .join(" ")
                .as_bytes(),
        ])
    );
    let marker = req.objdir.join(MARKER);
    if std::fs::read_to_string(&marker).is_ok_and(|m| m.trim() == fingerprint) {
        return Ok(());
    }
    if req.objdir.exists() {
        let empty = std::fs::read_dir(req.objdir)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        if marker.is_file() {
            std::fs::remove_dir_all(req.objdir)
                .with_context(|| format!("clearing {}", req.objdir.display()))?;
        } else if !empty {
            return Err(UserError::new(format!(
                "{}: exists and was not prepared by klpx; give an empty or new directory",
                req.objdir.display()
            ))
            .into());
        }
    }
    std::fs::create_dir_all(req.objdir)
        .with_context(|| format!("creating {}", req.objdir.display()))?;
    // Marked as klpx's before anything is written, so that a failed or interrupted preparation is
    // cleared by the next one; the fingerprint replaces it once the tree is complete.
    std::fs::write(&marker, "incomplete\n")
        .with_context(|| format!("writing {}", marker.display()))?;
    let text = String::from_utf8_lossy(&config);
    std::fs::write(req.objdir.join(".config"), edited_config(&text))
        .with_context(|| format!("writing {}/.config", req.objdir.display()))?;
    progress(&format!(
        "preparing {} (olddefconfig modules_prepare)",
        req.objdir.display()
    ));
    let mut argv: Vec<String> = vec![
        "-C".into(),
        req.srcdir.display().to_string(),
        format!("O={}", req.objdir.display()),
        format!("-j{}", crate::cli::local_jobs(req.jobs)),
    ];
    argv.extend(without_launcher(req.toolchain).make_vars().args());
    argv.extend(["olddefconfig".into(), "modules_prepare".into()]);
    run_make(&argv, "preparing the tree")?;
    let got = std::fs::read_to_string(req.objdir.join(".config"))?;
    let drift = config_drift(&text, &got);
    if !drift.is_empty() && req.other_compiler {
        progress(&format!(
            "note: with {}, Kconfig changed {} option(s) of the kernel's config: {}",
            req.toolchain.cc.as_deref().unwrap_or("another compiler"),
            drift.len(),
            drift.join(", ")
        ));
    } else if !drift.is_empty() {
        return Err(UserError::new(format!(
            "{}: kbuild here cannot reproduce this config ({} option(s) changed: {}); the kernel \
             source and the config must be of the same version, with the same tools installed",
            req.config.display(),
            drift.len(),
            drift.iter().take(4).cloned().collect::<Vec<_>>().join(", ")
        ))
        .into());
    }
    std::fs::write(req.objdir.join("Module.symvers"), &symvers)
        .with_context(|| format!("writing {}/Module.symvers", req.objdir.display()))?;
    std::fs::write(&marker, format!("{fingerprint}\n"))
        .with_context(|| format!("writing {}", marker.display()))?;
    Ok(())
}

/// The config with [`EDITS`] applied.
fn edited_config(config: &str) -> String {
    let mut out = String::with_capacity(config.len());
    for line in config.lines() {
        let key = config_key(line);
        match EDITS.iter().find(|(k, _)| Some(*k) == key) {
            Some((k, Some(v))) => out.push_str(&format!("{k}={v}")),
            Some((k, None)) => out.push_str(&format!("# {k} is not set")),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The option a `.config` line sets or unsets.
fn config_key(line: &str) -> Option<&str> {
    if let Some(rest) = line.strip_prefix("# ") {
        return rest.strip_suffix(" is not set");
    }
    line.split_once('=').map(|(k, _)| k)
}

/// Options whose value differs between the wanted config and the one kbuild wrote, apart from klpx's
/// own edits and tool versions: `KEY: want → got`.
fn config_drift(want: &str, got: &str) -> Vec<String> {
    let values = |text: &str| -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| {
                let k = config_key(l)?;
                let v = l.split_once('=').map_or("n", |(_, v)| v);
                Some((k.to_string(), v.to_string()))
            })
            .collect()
    };
    let (w, g) = (values(want), values(got));
    w.iter()
        .filter(|(k, _)| !EDITS.iter().any(|(e, _)| e == k) && !is_tool_version(k))
        .filter_map(|(k, v)| {
            let now = g.get(k).map(String::as_str).unwrap_or("n");
            (now != v).then(|| format!("{k}: {v} → {now}"))
        })
        .collect()
}

/// Compiles single objects (`path/file.o`) of a prepared tree with kbuild, which records their
/// commands and dependencies. With `keep_going` (candidates that may not be the kernel's), objects
/// compiled before are left as they are, those that do not compile are left out, and the caller
/// looks at what was made.
pub fn compile_objects(
    srcdir: &Path,
    objdir: &Path,
    toolchain: &Toolchain,
    jobs: usize,
    objects: &[String],
    keep_going: bool,
) -> Result<()> {
    // Candidates compiled before are not asked for again; the objects of edited files are, unless
    // they are up to date with their sources (the identity check reads them).
    let vars = without_launcher(toolchain).make_vars().args();
    let record = objdir.join(KBUILD_VARS);
    let same_vars = std::fs::read_to_string(&record).is_ok_and(|r| r == vars.join("\n"));
    let missing: Vec<&String> = objects
        .iter()
        .filter(|o| {
            if keep_going {
                !super::cmdfile::cmd_path(objdir, o).is_file()
            } else {
                !(same_vars && is_up_to_date(objdir, o))
            }
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut argv: Vec<String> = vec![
        "-C".into(),
        srcdir.display().to_string(),
        format!("O={}", objdir.display()),
        format!("-j{}", crate::cli::local_jobs(jobs)),
    ];
    argv.extend(vars.iter().cloned());
    if keep_going {
        argv.push("-k".into());
    }
    argv.extend(missing.into_iter().cloned());
    match run_make(&argv, "compiling the original objects once with kbuild") {
        Err(_) if keep_going => Ok(()),
        Err(e) => Err(e),
        Ok(()) => {
            if !keep_going {
                std::fs::write(&record, vars.join("\n"))
                    .with_context(|| format!("writing {}", record.display()))?;
            }
            Ok(())
        }
    }
}

/// The make variables [`compile_objects`] last compiled with in a tree: kbuild records each
/// object's command, and an object built with other variables is not up to date.
const KBUILD_VARS: &str = ".klpx-kbuild-vars";

/// Whether kbuild would find `object` up to date, decided without make, which reads the kernel's
/// Makefiles to decide it (a second or more on a distribution's config): the object and its `.cmd`
/// record exist, and nothing the record names is newer than the object: its source, every header,
/// the `include/config/` file of each config option it reads, and the config itself.
fn is_up_to_date(objdir: &Path, object: &str) -> bool {
    let built = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(at) = built(&objdir.join(object)) else {
        return false;
    };
    let Ok(cmd) = super::cmdfile::CmdFile::load(objdir, object) else {
        return false;
    };
    let newer = |rel: &str| built(&objdir.join(rel)).is_none_or(|t| t > at);
    // An option's file exists only while the option is set: a missing one is no change.
    let option_newer = |rel: &String| built(&objdir.join(rel)).is_some_and(|t| t > at);
    !cmd.source.as_deref().is_some_and(newer)
        && !cmd.deps.iter().any(|d| newer(d))
        && !cmd.options.iter().any(option_newer)
        && !newer("include/config/auto.conf")
}

/// The toolchain without its launcher: the tree and its recorded commands must not depend on a
/// launcher one build used (klpx puts the launcher of each build in front of the recorded command).
fn without_launcher(t: &Toolchain) -> Toolchain {
    Toolchain {
        launcher: None,
        ..t.clone()
    }
}

fn run_make(argv: &[String], what: &str) -> Result<()> {
    let out = crate::kbuild::make(argv)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .with_context(|| format!("{what}: cannot run make"))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        return Err(UserError::new(format!(
            "{what} failed (make {}):\n{}",
            argv.join(" "),
            lines[lines.len().saturating_sub(20)..].join("\n")
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object, its kbuild record (the shape fixdep writes), its source, a header and a config
    /// option's file, with the object built after all of them; `newer` is then touched after it.
    fn object_with(newer: Option<&str>) -> bool {
        use std::time::{Duration, SystemTime};
        let dir = std::env::temp_dir().join(format!(
            "klpx-uptodate-{}-{}",
            std::process::id(),
            newer.unwrap_or("none").replace('/', "-")
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for d in [
            "fs/proc",
            "src/fs/proc",
            "src/include/linux",
            "include/config",
        ] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(
            dir.join("fs/proc/.cmdline.o.cmd"),
            "savedcmd_fs/proc/cmdline.o := gcc -c -o fs/proc/cmdline.o src/fs/proc/cmdline.c\n\n\
             source_fs/proc/cmdline.o := src/fs/proc/cmdline.c\n\n\
             deps_fs/proc/cmdline.o := \\\n  src/include/linux/fs.h \\\n    \
             $(wildcard include/config/SMP) \\\n    $(wildcard include/config/UNSET) \\\n\n",
        )
        .unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(100);
        let set = |f: &str, t: SystemTime| {
            std::fs::File::options()
                .write(true)
                .open(dir.join(f))
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        for f in INPUTS {
            std::fs::write(dir.join(f), "x").unwrap();
            set(f, t0);
        }
        std::fs::write(dir.join("fs/proc/cmdline.o"), "o").unwrap();
        set("fs/proc/cmdline.o", t0 + Duration::from_secs(10));
        if let Some(f) = newer {
            set(f, t0 + Duration::from_secs(20));
        }
        let fresh = is_up_to_date(&dir, "fs/proc/cmdline.o");
        let _ = std::fs::remove_dir_all(&dir);
        fresh
    }

    /// The source, a header, a set option's file (`include/config/UNSET` does not exist: the option
    /// is not set) and the config.
    const INPUTS: [&str; 4] = [
        "src/fs/proc/cmdline.c",
        "src/include/linux/fs.h",
        "include/config/SMP",
        "include/config/auto.conf",
    ];

    #[test]
    fn an_object_is_up_to_date_until_what_its_record_names_changes() {
        assert!(object_with(None));
        for f in INPUTS {
            assert!(!object_with(Some(f)), "{f} newer than the object");
        }
    }

    #[test]
    fn compiler_of_a_config() {
        let c = "CONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0\"\n";
        assert_eq!(
            config_compiler(c).as_deref(),
            Some("x86_64-linux-gnu-gcc-12")
        );
        assert_eq!(
            compiler_prefix("x86_64-linux-gnu-gcc-12"),
            "x86_64-linux-gnu-"
        );
        assert_eq!(compiler_prefix("gcc"), "");
        assert_eq!(
            compiler_prefix("/opt/x/aarch64-linux-gnu-gcc-12"),
            "aarch64-linux-gnu-"
        );
        assert_eq!(compiler_prefix("clang"), "");
    }

    #[test]
    fn edits_and_drift() {
        let want = "CONFIG_A=y\nCONFIG_SYSTEM_TRUSTED_KEYS=\"debian/certs.pem\"\nCONFIG_MODULE_SIG_ALL=y\n\
                    # CONFIG_B is not set\nCONFIG_GCC_VERSION=120200\nCONFIG_BTF=y\n";
        let e = edited_config(want);
        assert!(e.contains("CONFIG_SYSTEM_TRUSTED_KEYS=\"\"\n"));
        assert!(e.contains("# CONFIG_MODULE_SIG_ALL is not set\n"));
        assert!(e.starts_with("CONFIG_A=y\n"));
        assert!(e.contains("\n# CONFIG_B is not set\n"));
        // What kbuild writes back: klpx's edits and a tool version differ, and BTF was dropped.
        let got = "CONFIG_A=y\nCONFIG_SYSTEM_TRUSTED_KEYS=\"\"\n# CONFIG_MODULE_SIG_ALL is not set\n\
                   CONFIG_GCC_VERSION=120300\n";
        assert_eq!(config_drift(want, got), vec!["CONFIG_BTF: y → n"]);
    }
}
