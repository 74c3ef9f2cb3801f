//! Linking the module with the kernel's own kbuild (`make M=`), so that vermagic, module versions and
//! the module linker script are the tree's own.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::kbuild::toolchain::MakeVars;

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
    let out = duct::cmd("make", &argv)
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
