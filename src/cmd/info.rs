//! `klpx info MODULE.ko`: what a livepatch module patches, read from the module itself.

use std::path::Path;

use anyhow::Result;

use crate::error::exit;
use crate::verify::inspect::inspect;

/// Prints what the module at `path` holds; returns the exit status.
pub fn run(path: &Path, json: bool) -> Result<i32> {
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
