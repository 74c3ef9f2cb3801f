//! Verification without loading, for kernels that cannot load livepatches (Linux 6.12 on arm64 has
//! no `CONFIG_LIVEPATCH`): what can be checked from the files alone.
//!
//! - the module is a linked livepatch module (`.modinfo` says `livepatch=Y`) and everything it
//!   leaves undefined is exported by vmlinux;
//! - every livepatch relocation's symbol names exactly one symbol of vmlinux (at its position);
//! - every function the module replaces starts with a patchable entry in vmlinux: its address is
//!   in vmlinux's `__mcount_loc` table (where the kernel's link puts the compiler's
//!   `__patchable_function_entries` records), within the backend's entry window (after `BTI C`).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use object::elf;
use object::read::elf::{FileHeader, Rela, SectionHeader, Sym};
use serde::Serialize;

use crate::differ::Exports;
use crate::module::check::check_module;
use crate::module::sympos::SymbolTable;

/// What was checked and found.
#[derive(Debug, Clone, Serialize)]
pub struct StaticReport {
    pub passed: bool,
    pub reason: String,
    pub klp_relocations: usize,
    pub klp_symbols: usize,
    /// Replaced functions and whether each has its patchable entry in vmlinux.
    pub functions: Vec<(String, bool)>,
    pub problems: Vec<String>,
}

type Hdr = elf::FileHeader64<object::Endianness>;

/// Checks `module` against the built tree `tree` (its vmlinux and Module.symvers).
pub fn check(module: &Path, tree: &Path, backend: &dyn klpx_arch::Backend) -> Result<StaticReport> {
    let links = crate::kbuild::links::LinkMap::load(tree)?;
    check_against(
        module,
        &tree.join("vmlinux"),
        &tree.join("Module.symvers"),
        tree,
        &links,
        backend,
    )
}

/// [`check`] against a kernel's files: its vmlinux, its `Module.symvers`, and its modules (paths
/// in `links`, relative to `modules_root`).
pub fn check_against(
    module: &Path,
    vmlinux_path: &Path,
    symvers_path: &Path,
    modules_root: &Path,
    links: &crate::kbuild::links::LinkMap,
    backend: &dyn klpx_arch::Backend,
) -> Result<StaticReport> {
    let provided = |n: &str| backend.is_module_provided(n);
    let before = backend.entry_record_before();
    let name = module.display().to_string();
    let data = std::fs::read(module).with_context(|| format!("reading {name}"))?;
    let vmlinux = crate::mapped::MappedFile::open(vmlinux_path)?;
    let symvers = std::fs::read_to_string(symvers_path).unwrap_or_default();
    let exported: HashSet<String> = Exports::from_symvers(&symvers).symbols.unwrap_or_default();
    let table = SymbolTable::parse(&vmlinux_path.display().to_string(), &vmlinux, false)?;
    let mut tables = HashMap::new();
    tables.insert("vmlinux".to_string(), table);
    // The tree's modules, for livepatch symbols and functions of module objects.
    let mut module_files: HashMap<String, Vec<u8>> = HashMap::new();
    for (m, ko) in &links.modules {
        let path = modules_root.join(ko);
        if let Ok(bytes) = std::fs::read(&path) {
            tables.insert(
                m.clone(),
                SymbolTable::parse(&path.display().to_string(), &bytes, true)?,
            );
            module_files.insert(m.clone(), bytes);
        }
    }
    let mc = check_module(&name, &data, &exported, &provided, &tables)?;
    let mut problems = mc.problems.clone();

    let sites = mcount_sites(&vmlinux).context("reading vmlinux's __mcount_loc")?;
    let window = backend.entry_window();
    let addrs = function_addresses(&vmlinux)?;
    let mut functions = Vec::new();
    for f in replaced_functions(&data)? {
        let in_vmlinux = addrs.get(&f).map(|v| {
            v.iter().any(|&a| {
                let i = sites.partition_point(|&s| s < a.saturating_sub(before));
                sites.get(i).is_some_and(|&s| s < a + window)
            })
        });
        let ok = match in_vmlinux {
            Some(ok) => ok,
            None => module_files
                .values()
                .any(|ko| module_entry(ko, &f, before, window).unwrap_or(false)),
        };
        if !ok {
            problems.push(format!(
                "{name}: {f} has no patchable entry in vmlinux (not in __mcount_loc)"
            ));
        }
        functions.push((f, ok));
    }
    if functions.is_empty() {
        problems.push(format!("{name}: no replaced functions found in the module"));
    }
    let passed = problems.is_empty();
    let reason = if passed {
        format!(
            "not loaded (this kernel has no livepatch support); checked instead: the module links, \
             its {} livepatch relocation(s) resolve against vmlinux, and the {} function(s) it \
             replaces have their patchable entry",
            mc.klp_relocations,
            functions.len()
        )
    } else {
        problems[0].clone()
    };
    Ok(StaticReport {
        passed,
        reason,
        klp_relocations: mc.klp_relocations,
        klp_symbols: mc.klp_symbols,
        functions,
        problems,
    })
}

/// Addresses in vmlinux's `__mcount_loc` table (`__start_mcount_loc` .. `__stop_mcount_loc`), sorted.
fn mcount_sites(data: &[u8]) -> Result<Vec<u64>> {
    use object::Endian;
    let header = Hdr::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let symbols = sections.symbols(endian, data, elf::SHT_SYMTAB)?;
    let find = |n: &[u8]| {
        symbols
            .iter()
            .find(|s| s.name(endian, symbols.strings()).ok() == Some(n))
            .map(|s| s.st_value(endian))
    };
    let (Some(start), Some(stop)) = (find(b"__start_mcount_loc"), find(b"__stop_mcount_loc"))
    else {
        anyhow::bail!("vmlinux has no __start_mcount_loc/__stop_mcount_loc");
    };
    let sec = sections
        .iter()
        .find(|s| {
            let a = s.sh_addr(endian);
            s.sh_type(endian) != elf::SHT_NOBITS
                && s.sh_flags(endian).0 & elf::SHF_ALLOC.0 != 0
                && a <= start
                && stop <= a + s.sh_size(endian)
        })
        .context("no section holds the __mcount_loc table")?;
    let bytes = sec.data(endian, data)?;
    let off = (start - sec.sh_addr(endian)) as usize;
    let len = (stop - start) as usize;
    let table = bytes
        .get(off..off + len)
        .context("__mcount_loc out of range")?;
    let mut sites: Vec<u64> = table
        .chunks_exact(8)
        .map(|c| {
            let b: [u8; 8] = c.try_into().expect("8 bytes");
            if endian.is_big_endian() {
                u64::from_be_bytes(b)
            } else {
                u64::from_le_bytes(b)
            }
        })
        .collect();
    // A relocatable kernel linked as PIE (arm64, ppc64le) leaves its absolute addresses to the
    // dynamic relocations it applies to itself at boot: symbol-less (relative) ones give the value.
    for rs in sections.iter() {
        if rs.sh_type(endian) != elf::SHT_RELA || rs.sh_flags(endian).0 & elf::SHF_ALLOC.0 == 0 {
            continue;
        }
        let Some((relas, _)) = rs.rela(endian, data)? else {
            continue;
        };
        for r in relas {
            let at = r.r_offset(endian);
            if at >= start && at < stop && (at - start) % 8 == 0 && r.r_sym(endian, false) == 0 {
                sites[((at - start) / 8) as usize] = r.r_addend(endian) as u64;
            }
        }
    }
    sites.sort_unstable();
    Ok(sites)
}

/// Function symbols of vmlinux by name.
fn function_addresses(data: &[u8]) -> Result<HashMap<String, Vec<u64>>> {
    let header = Hdr::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let symbols = sections.symbols(endian, data, elf::SHT_SYMTAB)?;
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    for s in symbols.iter() {
        if s.st_type() == elf::STT_FUNC {
            let n = String::from_utf8_lossy(s.name(endian, symbols.strings()).unwrap_or_default());
            out.entry(n.into_owned())
                .or_default()
                .push(s.st_value(endian));
        }
    }
    Ok(out)
}

/// The `old_name`s of the module's `klp_func` arrays (klpx's generated `klpx_funcs_N`): the
/// relocations at the start of each entry point at the name strings.
fn replaced_functions(data: &[u8]) -> Result<Vec<String>> {
    let header = Hdr::parse(data)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let symbols = sections.symbols(endian, data, elf::SHT_SYMTAB)?;
    let mut names = Vec::new();
    for sym in symbols.iter() {
        let n = sym.name(endian, symbols.strings()).unwrap_or_default();
        if !n.starts_with(b"klpx_funcs_") {
            continue;
        }
        let Some(shndx) = sym.st_shndx(endian).index() else {
            continue;
        };
        let (start, end) = (
            sym.st_value(endian),
            sym.st_value(endian) + sym.st_size(endian),
        );
        // The relocations of that section inside the array, in offset order.
        let mut at: Vec<(u64, u64, i64)> = Vec::new();
        for rs in sections.iter() {
            if rs.sh_info(endian) as usize != usize::from(shndx) {
                continue;
            }
            let Some((relas, _)) = rs.rela(endian, data)? else {
                continue;
            };
            for r in relas {
                let off = r.r_offset(endian);
                if off >= start && off < end {
                    at.push((off, u64::from(r.r_sym(endian, false)), r.r_addend(endian)));
                }
            }
        }
        at.sort_unstable();
        // The first relocation of each entry is its old_name; entries are evenly spaced, and the
        // array ends with an empty entry, so there is one relocation pair per function.
        let pairs: Vec<&(u64, u64, i64)> = at.iter().step_by(2).collect();
        for &&(_, target, addend) in &pairs {
            let t = symbols.symbol(object::SymbolIndex(target as usize))?;
            let Some(ts) = t.st_shndx(endian).index() else {
                continue;
            };
            let sec = sections.section(object::SectionIndex(usize::from(ts)))?;
            let bytes = sec.data(endian, data)?;
            let from = (t.st_value(endian) as i64 + addend) as usize;
            if let Some(rest) = bytes.get(from..) {
                let s = rest.split(|&b| b == 0).next().unwrap_or_default();
                names.push(String::from_utf8_lossy(s).into_owned());
            }
        }
    }
    Ok(names)
}

/// Whether the module `ko` defines function `name` with a patchable entry: a relocation of its
/// `__patchable_function_entries` (or `__mcount_loc`) table points into the function's entry window.
fn module_entry(ko: &[u8], name: &str, before: u64, window: u64) -> Result<bool> {
    let header = Hdr::parse(ko)?;
    let endian = header.endian()?;
    let sections = header.sections(endian, ko)?;
    let symbols = sections.symbols(endian, ko, elf::SHT_SYMTAB)?;
    let Some(func) = symbols.iter().find(|s| {
        s.st_type() == elf::STT_FUNC
            && s.st_shndx(endian).index().is_some()
            && s.name(endian, symbols.strings()).ok() == Some(name.as_bytes())
    }) else {
        return Ok(false);
    };
    let fsec = func.st_shndx(endian).index().map(usize::from);
    let start = func.st_value(endian);
    for (i, s) in sections.iter().enumerate() {
        let n = sections.section_name(endian, s).unwrap_or_default();
        if n != b"__patchable_function_entries" && n != b"__mcount_loc" {
            continue;
        }
        for rs in sections.iter() {
            if rs.sh_info(endian) as usize != i {
                continue;
            }
            let Some((relas, _)) = rs.rela(endian, ko)? else {
                continue;
            };
            for r in relas {
                let t = symbols.symbol(object::SymbolIndex(r.r_sym(endian, false) as usize))?;
                let at = t.st_value(endian).wrapping_add(r.r_addend(endian) as u64);
                if t.st_shndx(endian).index().map(usize::from) == fsec
                    && at >= start.saturating_sub(before)
                    && at < start + window
                {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}
