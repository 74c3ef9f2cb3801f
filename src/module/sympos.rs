//! Symbol positions: how the livepatch core tells same-named symbols of one object apart.
//!
//! `old_sympos` and the `,<pos>` of a `.klp.sym` name count symbols of that name in the order the kernel
//! walks them: for vmlinux, kallsyms order, which for equal names is address order (scripts/kallsyms.c
//! `compare_names`); for a module, its symbol table order (`module_kallsyms_on_each_symbol`). Position 0
//! means "the only one". A local symbol's translation unit is the `STT_FILE` symbol before it.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use object::elf;
use object::read::elf::{FileHeader, Sym};

use crate::error::UserError;

/// One defined symbol of an object's symbol table.
#[derive(Debug, Clone)]
struct Entry {
    addr: u64,
    /// The `STT_FILE` name in force (basename), for local symbols.
    file: Option<String>,
    local: bool,
}

/// The symbols of vmlinux or of a module, by name.
#[derive(Debug, Default)]
pub struct SymbolTable {
    /// Display name of the file, for errors.
    pub path: String,
    by_name: HashMap<String, Vec<Entry>>,
}

impl SymbolTable {
    /// Reads the symbol table of an ELF file (vmlinux, or a module's `.ko`). `address_order` sorts
    /// same-named symbols by address (vmlinux); otherwise table order is kept (modules).
    pub fn load(path: &Path, address_order: bool) -> Result<SymbolTable> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        SymbolTable::parse(&path.display().to_string(), &data, address_order)
    }

    pub fn parse(name: &str, data: &[u8], address_order: bool) -> Result<SymbolTable> {
        let header = elf::FileHeader64::<object::Endianness>::parse(data)
            .map_err(|e| UserError::new(format!("{name}: not a 64-bit ELF file: {e}")))?;
        let endian = header
            .endian()
            .map_err(|e| UserError::new(format!("{name}: {e}")))?;
        let sections = header
            .sections(endian, data)
            .map_err(|e| UserError::new(format!("{name}: {e}")))?;
        let symbols = sections
            .symbols(endian, data, elf::SHT_SYMTAB)
            .map_err(|e| UserError::new(format!("{name}: {e}")))?;
        let mut by_name: HashMap<String, Vec<Entry>> = HashMap::new();
        let mut file: Option<String> = None;
        for sym in symbols.iter() {
            let n = sym.name(endian, symbols.strings()).unwrap_or_default();
            let kind = sym.st_type();
            if kind == elf::STT_FILE {
                let n = String::from_utf8_lossy(n);
                file = Some(n.rsplit('/').next().unwrap_or(&n).to_string());
                continue;
            }
            if n.is_empty() || kind == elf::STT_SECTION || sym.st_shndx(endian) == elf::SHN_UNDEF {
                continue;
            }
            let local = sym.st_bind() == elf::STB_LOCAL;
            by_name
                .entry(String::from_utf8_lossy(n).into_owned())
                .or_default()
                .push(Entry {
                    addr: sym.st_value(endian),
                    file: if local { file.clone() } else { None },
                    local,
                });
        }
        if address_order {
            for v in by_name.values_mut() {
                v.sort_by_key(|e| e.addr);
            }
        }
        Ok(SymbolTable {
            path: name.to_string(),
            by_name,
        })
    }

    /// How many symbols are called `name`.
    pub fn count(&self, name: &str) -> usize {
        self.by_name.get(name).map_or(0, Vec::len)
    }

    /// The position of `name` from translation unit `source` (a file name such as `cmdline.c`): 0 when
    /// the name is unique, else its 1-based position. An error names the symbol when it is missing or
    /// cannot be told apart.
    pub fn sympos(&self, name: &str, source: Option<&str>) -> Result<u64, String> {
        let all = self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[]);
        match all.len() {
            0 => Err(format!("{}: no symbol {name}", self.path)),
            1 => Ok(0),
            _ => {
                let base = source.map(|s| s.rsplit('/').next().unwrap_or(s));
                let mut hits: Vec<usize> = all
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.local && base.is_some() && e.file.as_deref() == base)
                    .map(|(i, _)| i)
                    .collect();
                if hits.is_empty() {
                    // Not a local of the patched file: the one global of that name, if there is one.
                    hits = all
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| !e.local)
                        .map(|(i, _)| i)
                        .collect();
                }
                match hits.as_slice() {
                    [one] => Ok(*one as u64 + 1),
                    [] => Err(format!(
                        "{}: {} symbols are called {name} and none is a local of {}",
                        self.path,
                        all.len(),
                        source.unwrap_or("the patched file")
                    )),
                    _ => Err(format!(
                        "{}: {} symbols called {name} come from {}; cannot tell them apart",
                        self.path,
                        hits.len(),
                        source.unwrap_or("the patched file")
                    )),
                }
            }
        }
    }
}
