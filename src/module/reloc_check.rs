//! The last check before klpx calls a module good: every relocation the kernel will apply to it (the
//! ordinary ones when it loads, the `.klp.rela` ones when their object is there), with its symbol
//! resolved as the kernel will resolve it (a symbol of the module, an export of vmlinux, a
//! `.klp.sym.<object>.<symbol>,<pos>` in the target's symbol table), must be one the architecture's
//! module loader applies, in range from the module area, with the encoding the instruction needs.
//! The rules are the backend's ([`klpx_arch::Backend::check_module_reloc`]); this module reads the
//! finished `.ko` with `object` and hands each relocation over.

use std::collections::HashMap;

use anyhow::{Context, Result};
use klpx_arch::{Backend, ModuleReloc, Reach};
use object::elf;
use object::read::elf::{FileHeader, Rela, SectionHeader, Sym};

use super::klp_rela::SHN_LIVEPATCH;
use super::sympos::SymbolTable;

/// One line per relocation that cannot be right: `<module>: <section>+<offset>: <type> to <symbol>:
/// <reason>`. `tables` holds the symbol tables of vmlinux and of the patched modules; symbols the
/// module loader itself provides (ppc64 `.TOC.`) count as the module's.
pub fn check_relocations(
    name: &str,
    data: &[u8],
    backend: &dyn Backend,
    tables: &HashMap<String, SymbolTable>,
) -> Result<Vec<String>> {
    let provided = |n: &str| backend.is_module_provided(n);
    let header = elf::FileHeader64::<object::Endianness>::parse(data)
        .with_context(|| format!("{name}: not a 64-bit ELF module"))?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let symbols = sections.symbols(endian, data, elf::SHT_SYMTAB)?;
    let mut problems = Vec::new();
    for rs in sections.iter() {
        let Some((relas, _)) = rs.rela(endian, data)? else {
            continue;
        };
        let target_index = rs.sh_info(endian) as usize;
        let Ok(target) = sections.section(object::SectionIndex(target_index)) else {
            continue;
        };
        if target.sh_flags(endian).0 & elf::SHF_ALLOC.0 == 0 {
            continue;
        }
        let target_name =
            String::from_utf8_lossy(sections.section_name(endian, target).unwrap_or_default());
        let contents = if target.sh_type(endian) == elf::SHT_NOBITS {
            None
        } else {
            Some(target.data(endian, data)?)
        };
        for r in relas {
            let offset = r.r_offset(endian);
            let r_type = r.r_type(endian, false).0;
            let addend = r.r_addend(endian);
            let index = r.r_sym(endian, false) as usize;
            let (symbol, reach) = if index == 0 {
                (String::new(), Reach::Module)
            } else {
                let sym = symbols.symbol(object::SymbolIndex(index))?;
                let n = String::from_utf8_lossy(sym.name(endian, symbols.strings())?).into_owned();
                let reach = if sym.st_shndx(endian) == elf::SHN_UNDEF && provided(&n) {
                    Reach::Module
                } else {
                    reach_of(&n, sym.st_shndx(endian), addend, tables)
                };
                (n, reach)
            };
            let place = contents.and_then(|c| {
                let at = offset as usize;
                c.get(at..c.len().min(at + 16))
            });
            let preceding = contents.map_or(&[][..], |c| {
                let at = (offset as usize).min(c.len());
                &c[at.saturating_sub(8)..at]
            });
            let reloc = ModuleReloc {
                r_type,
                symbol: &symbol,
                preceding,
                addend,
                place,
                reach,
            };
            if let Err(why) = backend.check_module_reloc(&reloc) {
                let shown = if symbol.is_empty() {
                    "no symbol"
                } else {
                    &symbol
                };
                problems.push(format!(
                    "{name}: {target_name}+{offset:#x}: {} to {shown}{addend:+}: {why}",
                    backend.reloc_name(r_type)
                ));
            }
        }
    }
    Ok(problems)
}

/// Where the kernel resolves a symbol of the module: its own, vmlinux (an export, or a `.klp.sym`
/// of vmlinux, whose address the symbol table gives), or another module.
fn reach_of(
    name: &str,
    shndx: elf::SymbolSection,
    addend: i64,
    tables: &HashMap<String, SymbolTable>,
) -> Reach {
    let in_vmlinux = |symbol: &str, pos: usize| Reach::Kernel {
        address: tables
            .get("vmlinux")
            .and_then(|t| t.address(symbol, pos))
            .map(|a| a.wrapping_add(addend as u64)),
    };
    if shndx == elf::SymbolSection(SHN_LIVEPATCH) {
        let parsed = name
            .strip_prefix(".klp.sym.")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(object, rest)| {
                let (symbol, pos) = rest.rsplit_once(',')?;
                Some((object, symbol, pos.parse::<usize>().ok()?))
            });
        return match parsed {
            Some(("vmlinux", symbol, pos)) => in_vmlinux(symbol, pos),
            Some(_) => Reach::OtherModule,
            None => Reach::Kernel { address: None },
        };
    }
    if shndx == elf::SHN_UNDEF {
        // The loader resolves undefined symbols among vmlinux's exports (checked elsewhere).
        let unique = tables.get("vmlinux").map_or(0, |t| t.count(name)) == 1;
        return if unique {
            in_vmlinux(name, 0)
        } else {
            Reach::Kernel { address: None }
        };
    }
    Reach::Module
}
