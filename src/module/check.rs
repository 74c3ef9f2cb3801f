//! The checks a finished livepatch module must pass before klpx reports success: the module loader can
//! resolve every undefined symbol (it is exported by vmlinux), every livepatch symbol names exactly one
//! symbol of its object, and the livepatch sections have the form the kernel expects.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use object::elf;
use object::read::elf::{FileHeader, SectionHeader, Sym};

use super::klp_rela::{SHF_RELA_LIVEPATCH, SHN_LIVEPATCH};
use super::sympos::SymbolTable;

/// What the check found; empty `problems` means the module is good.
#[derive(Debug, Default)]
pub struct ModuleCheck {
    pub klp_relocations: usize,
    pub klp_symbols: usize,
    pub undefined: usize,
    pub problems: Vec<String>,
}

/// Checks the module `data` (named `name` in messages). `exported` holds what vmlinux exports;
/// `provided(name)` says the module loader itself provides a symbol (ppc64 `.TOC.`); `tables` maps an
/// object name (`vmlinux`, a module) to its symbol table.
pub fn check_module(
    name: &str,
    data: &[u8],
    exported: &HashSet<String>,
    provided: &dyn Fn(&str) -> bool,
    tables: &HashMap<String, SymbolTable>,
) -> Result<ModuleCheck> {
    let header = elf::FileHeader64::<object::Endianness>::parse(data)
        .with_context(|| format!("{name}: not a 64-bit ELF module"))?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let symbols = sections.symbols(endian, data, elf::SHT_SYMTAB)?;
    let mut out = ModuleCheck::default();
    let mut has_livepatch_info = false;
    for s in sections.iter() {
        let sname = sections.section_name(endian, s).unwrap_or_default();
        if sname == b".modinfo" {
            let d = s.data(endian, data).unwrap_or_default();
            has_livepatch_info = d.split(|&b| b == 0).any(|kv| kv == b"livepatch=Y");
        }
        if sname.starts_with(b".klp.rela.") {
            let flags = s.sh_flags(endian).0;
            if s.sh_type(endian) != elf::SHT_RELA || flags & SHF_RELA_LIVEPATCH == 0 {
                out.problems.push(format!(
                    "{name}: {} is not a SHF_RELA_LIVEPATCH relocation section",
                    String::from_utf8_lossy(sname)
                ));
            }
            out.klp_relocations += (s.sh_size(endian) / 24) as usize;
        }
        if sname.starts_with(crate::writer::side_table::PREFIX.as_bytes()) {
            out.problems.push(format!(
                "{name}: klpx's side table {} was left in the module",
                String::from_utf8_lossy(sname)
            ));
        }
    }
    if !has_livepatch_info {
        out.problems
            .push(format!("{name}: .modinfo lacks livepatch=Y"));
    }
    for sym in symbols.iter().skip(1) {
        let n = String::from_utf8_lossy(sym.name(endian, symbols.strings()).unwrap_or_default());
        let shndx = sym.st_shndx(endian);
        if shndx == elf::SymbolSection(SHN_LIVEPATCH) {
            out.klp_symbols += 1;
            if let Err(why) = check_klp_symbol(&n, tables) {
                out.problems.push(format!("{name}: {n}: {why}"));
            }
        } else if shndx == elf::SHN_UNDEF && !n.is_empty() {
            out.undefined += 1;
            if !exported.contains(n.as_ref()) && !provided(&n) {
                out.problems.push(format!(
                    "{name}: undefined symbol {n} is not exported by vmlinux, so the module cannot load"
                ));
            }
        }
    }
    Ok(out)
}

/// `.klp.sym.<object>.<symbol>,<pos>` must name exactly one symbol of its object.
fn check_klp_symbol(n: &str, tables: &HashMap<String, SymbolTable>) -> Result<(), String> {
    let rest = n
        .strip_prefix(".klp.sym.")
        .ok_or("a livepatch symbol must be named .klp.sym.<object>.<symbol>,<pos>")?;
    let (object, rest) = rest.split_once('.').ok_or("no object name")?;
    let (symbol, pos) = rest.rsplit_once(',').ok_or("no ,<pos>")?;
    let pos: usize = pos.parse().map_err(|_| "position is not a number")?;
    if object.len() > 55 || symbol.len() > 511 {
        return Err("name longer than the kernel's 55/511 limits".into());
    }
    let table = tables
        .get(object)
        .ok_or_else(|| format!("no symbol table for object {object}"))?;
    let count = table.count(symbol);
    match (pos, count) {
        (_, 0) => Err(format!("{object} has no symbol {symbol}")),
        (0, 1) => Ok(()),
        (0, c) => Err(format!(
            "{object} has {c} symbols called {symbol} but position 0"
        )),
        (p, c) if p <= c => Ok(()),
        (p, c) => Err(format!(
            "position {p} but {object} has only {c} symbols called {symbol}"
        )),
    }
}
