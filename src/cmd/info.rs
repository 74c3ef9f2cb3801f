//! `klpx info MODULE.ko|NAME`: what a livepatch module patches, read from the module itself: a
//! file, or one installed for the running kernel under that name (`/var/lib/klpx/<release>/`).

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::{UserError, exit};
use crate::machine::{Machine, kernel_name};
use crate::verify::inspect::inspect;

/// The module file `arg` names: the file itself, or the module installed for the running kernel
/// under that name.
fn module_file(arg: &Path) -> Result<PathBuf, UserError> {
    if arg.exists() || arg.components().count() > 1 {
        return Ok(arg.to_path_buf());
    }
    let name = kernel_name(arg.to_string_lossy().trim_end_matches(".ko"));
    let m = Machine::default();
    let release = m.release()?;
    let installed = m.installed.join(&release).join(format!("{name}.ko"));
    if installed.is_file() {
        return Ok(installed);
    }
    Err(UserError::new(format!(
        "{}: no such file, and no livepatch {name} is installed for {release} ({})",
        arg.display(),
        m.installed.join(&release).display()
    )))
}

/// Prints what the module `arg` names holds; returns the exit status.
pub fn run(arg: &Path, json: bool) -> Result<i32> {
    let path = module_file(arg)?;
    let path = path.as_path();
    let m = inspect(path)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(exit::OK);
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    println!("module:      {} ({})", m.name, m.arch);
    println!("vermagic:    {}", m.vermagic.as_deref().unwrap_or("(none)"));
    println!("livepatch:   {}", yes_no(m.livepatch));
    if let Some(r) = m.replace {
        println!("replace:     {}", yes_no(r));
    }
    println!("signed:      {}", yes_no(m.signed));
    if let Some(d) = &m.description {
        println!("description: {d}");
    }
    if !m.depends.is_empty() {
        println!("depends:     {}", m.depends.join(", "));
    }
    for ns in &m.import_ns {
        println!("imports:     {ns}");
    }
    if m.functions.is_empty() {
        println!("functions:   not recorded (not built by klpx)");
    }
    for f in &m.functions {
        let pos = if f.sympos == 0 {
            String::new()
        } else {
            format!(" (position {})", f.sympos)
        };
        println!("patches:     {}:{}{pos}", f.object, f.function);
    }
    for (object, n) in &m.klp_relocations {
        let symbols = m.klp_symbols.get(object).map_or(0, Vec::len);
        println!(
            "relocations: {n} livepatch relocation(s) against {symbols} symbol(s) of {object}"
        );
    }
    Ok(exit::OK)
}
