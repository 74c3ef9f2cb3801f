//! Linking the module with the kernel's own kbuild (`make M=`), so that vermagic, module versions and
//! the module linker script are the tree's own; and linking it again without make when that gives
//! the same module.
//!
//! A patch author rebuilds the same patch many times, editing it between builds. Each build writes
//! the module's parts (the diffed objects) into a module directory kept beside the tree, and the
//! directory remembers its last link (`.klpx-linked`):
//!
//! - everything the same: the last module stands ([`LinkRun::Kept`]);
//! - only the parts' contents changed, not what modpost reads of them (their sections and their
//!   global symbols, defined or undefined), and the tree builds no module BTF: kbuild's own recorded
//!   link commands (`.NAME.o.cmd`, `.NAME.ko.cmd`) are run again, without make, which costs most of
//!   a `make M=` in reading Makefiles ([`LinkRun::Replayed`]). modpost would write the same
//!   `NAME.mod.c`, so the `NAME.mod.o` of the last link is the one make would use;
//! - anything else: `make M=` ([`LinkRun::Make`]).

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use object::{Object, ObjectSection, ObjectSymbol};
use serde::Serialize;

use crate::kbuild::cmdfile::CmdFile;
use crate::kbuild::toolchain::MakeVars;
use crate::kernel::cache::fingerprint;

/// How this build linked its module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkRun {
    /// `make M=`.
    Make,
    /// kbuild's recorded link commands, run again without make.
    Replayed,
    /// The last link's module: nothing it was made of changed.
    Kept,
}

/// One module directory's link: where it is, what it is made of, and how make is run there.
pub struct ModuleLink<'a> {
    pub objdir: &'a Path,
    pub dir: &'a Path,
    pub name: &'a str,
    /// The generated files (`klpx-livepatch.c`, `Kbuild`), as written.
    pub generated: &'a [&'a str],
    /// The parts, as written (`part-N.o_shipped`).
    pub parts: &'a [&'a [u8]],
    pub vars: &'a MakeVars,
    pub jobs: usize,
}

/// The record a successful link leaves: three fingerprints, one per line.
const RECORD: &str = ".klpx-linked";

/// What decided the last link, by fingerprint.
#[derive(Debug, PartialEq, Eq)]
struct LinkRecord {
    /// Everything: the frame and the parts' bytes.
    whole: u64,
    /// Everything but the parts: the generated files, the make variables and the tree's files.
    frame: u64,
    /// What modpost reads of the parts: their sections and global symbols.
    interface: u64,
}

impl LinkRecord {
    fn text(&self) -> String {
        format!(
            "{:016x}\n{:016x}\n{:016x}\n",
            self.whole, self.frame, self.interface
        )
    }

    fn parse(text: &str) -> Option<LinkRecord> {
        let mut lines = text.lines().map(|l| u64::from_str_radix(l, 16).ok());
        Some(LinkRecord {
            whole: lines.next()??,
            frame: lines.next()??,
            interface: lines.next()??,
        })
    }
}

impl ModuleLink<'_> {
    /// Links the module in its directory (the files are written there already), the cheapest way
    /// that gives what `make M=` gives; returns how.
    pub fn run(&self) -> Result<LinkRun> {
        let ko = self.dir.join(format!("{}.ko", self.name));
        let record_path = self.dir.join(RECORD);
        let frame = self.frame();
        let now = LinkRecord {
            whole: fingerprint(&[&frame.to_le_bytes(), &fingerprint(self.parts).to_le_bytes()]),
            frame,
            interface: interface(self.parts)?,
        };
        let last = std::fs::read_to_string(&record_path)
            .ok()
            .and_then(|t| LinkRecord::parse(&t))
            .filter(|_| ko.is_file());
        // The record goes before anything is linked and comes back after: an interrupted link
        // leaves none, and the next build runs make.
        let _ = std::fs::remove_file(&record_path);
        let run = match last {
            Some(last) if last == now => LinkRun::Kept,
            Some(last)
                if last.frame == now.frame
                    && last.interface == now.interface
                    && !builds_module_btf(self.objdir)
                    && self.replay().is_ok() =>
            {
                LinkRun::Replayed
            }
            _ => {
                make_module(self.objdir, self.dir, self.vars, self.jobs)?;
                LinkRun::Make
            }
        };
        std::fs::write(&record_path, now.text())
            .with_context(|| format!("writing {}", record_path.display()))?;
        Ok(run)
    }

    /// The generated files, the make variables, and the tree's files kbuild links the module
    /// against (its config, `Module.symvers` with the CRCs, the module linker script, the release),
    /// by size and modification time.
    fn frame(&self) -> u64 {
        let args = self.vars.args().join(" ");
        let tree: Vec<String> = [
            ".config",
            "Module.symvers",
            "include/config/auto.conf",
            "include/generated/utsrelease.h",
            "scripts/module.lds",
        ]
        .iter()
        .map(|f| match std::fs::metadata(self.objdir.join(f)) {
            Ok(m) => format!("{f} {} {:?}", m.len(), m.modified().ok()),
            Err(_) => format!("{f} missing"),
        })
        .collect();
        let tree = tree.join("\n");
        let mut all: Vec<&[u8]> = vec![b"klpx-link-2", args.as_bytes(), tree.as_bytes()];
        all.extend(self.generated.iter().map(|g| g.as_bytes()));
        fingerprint(&all)
    }

    /// Runs the commands kbuild recorded for the last link of this directory: the parts copied to
    /// `part-N.o` (kbuild's `cat` of a shipped object), `NAME.o` linked from them, `NAME.ko` from
    /// it and the last `NAME.mod.o`. Fails, for make to run instead, when a record is missing, is
    /// another directory's, or holds make's escapes.
    fn replay(&self) -> Result<()> {
        let recorded = |target: &str| -> Result<String> {
            let path = self.dir.join(format!(".{target}.cmd"));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let cmd = CmdFile::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            if cmd.target != self.dir.join(target).to_string_lossy() {
                bail!("{}: recorded for {}", path.display(), cmd.target);
            }
            // kbuild writes make's escaping of `$`, `#` and `'` into the record; such a command
            // is left to make.
            if cmd.command.contains(['$', '#', '\'', '\\']) {
                bail!("{}: the command holds make escapes", path.display());
            }
            Ok(cmd.command)
        };
        let link_o = recorded(&format!("{}.o", self.name))?;
        let link_ko = recorded(&format!("{}.ko", self.name))?;
        for (n, bytes) in self.parts.iter().enumerate() {
            let part = self.dir.join(format!("part-{n}.o"));
            std::fs::write(&part, bytes).with_context(|| format!("writing {}", part.display()))?;
        }
        for command in [link_o, link_ko] {
            let out = duct::cmd!("sh", "-c", &command)
                .dir(self.objdir)
                .stderr_to_stdout()
                .stdout_capture()
                .unchecked()
                .run()
                .context("running a recorded link command")?;
            if !out.status.success() {
                bail!("{command}: {}", String::from_utf8_lossy(&out.stdout).trim());
            }
        }
        Ok(())
    }
}

/// What modpost reads of the parts: each one's section names and its global and weak symbols, with
/// whether each is defined. Equal interfaces give modpost the same undefined symbols (the module's
/// `__versions` and dependencies) and the same exports (none).
fn interface(parts: &[&[u8]]) -> Result<u64> {
    let mut text = String::new();
    for (n, bytes) in parts.iter().enumerate() {
        let file = object::File::parse(*bytes).with_context(|| format!("reading part {n}"))?;
        text.push_str(&format!("part {n}\n"));
        for s in file.sections() {
            text.push_str(s.name().unwrap_or("?"));
            text.push('\n');
        }
        let mut symbols: Vec<String> = file
            .symbols()
            .filter(|s| s.is_global() || s.is_weak())
            .map(|s| {
                format!(
                    "{} {}",
                    if s.is_undefined() { 'U' } else { 'D' },
                    s.name().unwrap_or("?")
                )
            })
            .collect();
        symbols.sort();
        text.push_str(&symbols.join("\n"));
        text.push('\n');
    }
    Ok(fingerprint(&[text.as_bytes()]))
}

/// Whether `make M=` would add BTF to the module (`CONFIG_DEBUG_INFO_BTF_MODULES` and a vmlinux in
/// the tree): a step kbuild keeps no record of, so make must run.
fn builds_module_btf(objdir: &Path) -> bool {
    objdir.join("vmlinux").is_file()
        && std::fs::read_to_string(objdir.join(".config"))
            .is_ok_and(|c| c.lines().any(|l| l == "CONFIG_DEBUG_INFO_BTF_MODULES=y"))
}

/// Runs `make -C OBJDIR M=DIR modules` with the tree's make variables; the module lands in `dir`.
pub fn make_module(objdir: &Path, dir: &Path, vars: &MakeVars, jobs: usize) -> Result<()> {
    let mut argv: Vec<String> = vec![
        "-C".into(),
        objdir.display().to_string(),
        format!("M={}", dir.display()),
        format!("-j{}", jobs.max(1)),
    ];
    argv.extend(vars.args());
    argv.push("modules".into());
    let out = crate::kbuild::make(&argv)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running make M= for the livepatch module")?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = text.lines().collect();
        let tail = &tail[tail.len().saturating_sub(30)..];
        bail!(
            "linking the livepatch module failed (make -C {} M={}):\n{}",
            objdir.display(),
            dir.display(),
            tail.join("\n")
        );
    }
    Ok(())
}
