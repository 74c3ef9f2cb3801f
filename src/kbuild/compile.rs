//! Re-running one recorded kbuild compile with the flags a livepatch needs.

use std::path::Path;

use anyhow::{Context, Result, bail};
use klpx_arch::Backend;

use super::cmdfile::CmdFile;
use super::toolchain::Toolchain;

/// Flags added to the kernel's own for livepatch objects: one section per function and data object, so
/// the differ can take exactly what changed, plus whatever the architecture needs.
pub fn livepatch_cflags(backend: &dyn Backend) -> Vec<&'static str> {
    let mut flags = vec!["-ffunction-sections", "-fdata-sections"];
    flags.extend_from_slice(backend.livepatch_cflags());
    flags
}

/// Compiles `cmd`'s source again, from the output tree `tree`, into `out` (its dependency file beside
/// it), with `extra` flags. The compiler's messages are returned in the error when it fails.
pub fn recompile(tree: &Path, cmd: &CmdFile, out: &Path, extra: &[&str]) -> Result<()> {
    recompile_with(tree, cmd, out, extra, None)
}

/// [`recompile`] with the compiler and launcher `toolchain` asks for.
pub fn recompile_with(
    tree: &Path,
    cmd: &CmdFile,
    out: &Path,
    extra: &[&str],
    toolchain: Option<&Toolchain>,
) -> Result<()> {
    let depfile = out.with_extension("d");
    let line = cmd
        .command_for(out, &depfile, extra)
        .map_err(|why| anyhow::anyhow!("{}: {why}", cmd.target))?;
    let line = match toolchain {
        Some(t) => t.rewrite_command(&line),
        None => line,
    };
    let result = duct::cmd!("sh", "-c", &line)
        .dir(tree)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .with_context(|| format!("running the recorded compile of {}", cmd.target))?;
    if !result.status.success() {
        bail!(
            "compiling {} failed:\n{}",
            cmd.target,
            String::from_utf8_lossy(&result.stdout)
                .lines()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}
