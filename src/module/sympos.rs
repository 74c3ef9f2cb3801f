//! Symbol positions: how the livepatch core tells same-named symbols of one object apart.
//!
//! `old_sympos` and the `,<pos>` of a `.klp.sym` name count symbols of that name in the order the kernel
//! walks them: for vmlinux, kallsyms order, which for equal names is address order (scripts/kallsyms.c
//! `compare_names`); for a module, its symbol table order (`module_kallsyms_on_each_symbol`), keeping
//! only what the module loader keeps in the core kallsyms (allocated, non-init sections). Position 0
//! means "the only one".
//!
//! Which of several same-named symbols is meant: a global is the one global of that name; a local
//! is one of the `STT_FILE` blocks of the patched translation unit's file name, and where several
//! blocks have that name (two `core.c`), the block that shares the most local names with the
//! translation unit, as kpatch's lookup does.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result};
use object::elf;
use object::read::elf::{FileHeader, SectionHeader, Sym};

use crate::error::UserError;

/// One defined symbol of an object's symbol table.
#[derive(Debug, Clone)]
struct Entry {
    addr: u64,
    /// The `STT_FILE` block it belongs to (file basename and block number), for local symbols.
    block: Option<usize>,
}

/// A run of local symbols after one `STT_FILE` symbol.
#[derive(Debug, Default)]
struct Block {
    file: String,
    locals: HashSet<String>,
}

/// The symbols of vmlinux or of a module, by name.
#[derive(Debug, Default)]
pub struct SymbolTable {
    /// Display name of the file, for errors.
    pub path: String,
    by_name: HashMap<String, Vec<Entry>>,
    blocks: Vec<Block>,
    /// Made from a System.map: no file symbols, every local in one nameless block.
    from_map: bool,
}

impl SymbolTable {
    /// Reads the symbol table of vmlinux (`module == false`: address order) or of a module's `.ko`
    /// (table order, core kallsyms only).
    pub fn load(path: &Path, module: bool) -> Result<SymbolTable> {
        let name = path.display().to_string();
        let tool = [("xz", "xz"), ("zst", "zstd"), ("gz", "gzip")]
            .into_iter()
            .find(|(ext, _)| path.extension().is_some_and(|e| e == *ext));
        if let Some((_, tool)) = tool {
            // Distributions ship modules compressed (`.ko.xz`).
            let out = duct::cmd!(tool, "-dc", path)
                .stdout_capture()
                .stderr_capture()
                .unchecked()
                .run()
                .with_context(|| format!("running {tool} on {name}"))?;
            if !out.status.success() {
                return Err(UserError::new(format!(
                    "{name}: cannot decompress with {tool}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
                .into());
            }
            return SymbolTable::parse(&name, &out.stdout, module);
        }
        let data = crate::mapped::MappedFile::open(path)?;
        SymbolTable::parse(&name, &data, module)
    }

    pub fn parse(name: &str, data: &[u8], module: bool) -> Result<SymbolTable> {
        let bad = |e: &dyn std::fmt::Display| UserError::new(format!("{name}: {e}"));
        let header = elf::FileHeader64::<object::Endianness>::parse(data).map_err(|e| bad(&e))?;
        let endian = header.endian().map_err(|e| bad(&e))?;
        let sections = header.sections(endian, data).map_err(|e| bad(&e))?;
        let symbols = sections
            .symbols(endian, data, elf::SHT_SYMTAB)
            .map_err(|e| bad(&e))?;
        // What a module's core kallsyms keeps (kernel/module/kallsyms.c is_core_symbol).
        let kept: Vec<bool> = sections
            .iter()
            .map(|s| {
                let n = sections.section_name(endian, s).unwrap_or_default();
                s.sh_flags(endian).0 & elf::SHF_ALLOC.0 != 0
                    && !n.starts_with(b".init")
                    && !n.starts_with(b".exit")
            })
            .collect();
        let mut table = SymbolTable {
            path: name.to_string(),
            ..SymbolTable::default()
        };
        let mut block: Option<usize> = None;
        for sym in symbols.iter() {
            let n = sym.name(endian, symbols.strings()).unwrap_or_default();
            let kind = sym.st_type();
            if kind == elf::STT_FILE {
                let n = String::from_utf8_lossy(n);
                table.blocks.push(Block {
                    file: n.rsplit('/').next().unwrap_or(&n).to_string(),
                    locals: HashSet::new(),
                });
                block = Some(table.blocks.len() - 1);
                continue;
            }
            let shndx = sym.st_shndx(endian);
            if n.is_empty() || kind == elf::STT_SECTION || shndx == elf::SHN_UNDEF {
                continue;
            }
            if module
                && shndx
                    .index()
                    .is_some_and(|i| !kept.get(usize::from(i)).copied().unwrap_or(false))
            {
                continue;
            }
            let name = String::from_utf8_lossy(n).into_owned();
            let local = sym.st_bind() == elf::STB_LOCAL;
            if local && let Some(b) = block {
                table.blocks[b].locals.insert(name.clone());
            }
            table.by_name.entry(name).or_default().push(Entry {
                addr: sym.st_value(endian),
                block: if local { block } else { None },
            });
        }
        if !module {
            for v in table.by_name.values_mut() {
                v.sort_by_key(|e| e.addr);
            }
        }
        Ok(table)
    }

    /// The address of symbol `name` at position `pos` (0: the only one, else 1-based in this table's
    /// order), as the kernel resolves a `.klp.sym` name.
    pub fn address(&self, name: &str, pos: usize) -> Option<u64> {
        let v = self.by_name.get(name)?;
        match pos {
            0 => (v.len() == 1).then(|| v[0].addr),
            p => v.get(p - 1).map(|e| e.addr),
        }
    }

    /// Reads a `System.map` (`address type name` per line, in address order, as `nm -n` prints
    /// vmlinux): names and addresses, locals told from globals by the lower-case type, but no file
    /// symbols, so same-named locals cannot be told apart.
    pub fn from_system_map(path: &Path) -> Result<SymbolTable> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UserError::new(format!("{}: cannot read: {e}", path.display())))?;
        let mut table = SymbolTable {
            path: path.display().to_string(),
            blocks: vec![Block::default()],
            from_map: true,
            ..SymbolTable::default()
        };
        for (n, line) in text.lines().enumerate() {
            let mut f = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let parsed = (u64::from_str_radix(addr, 16), kind.chars().next(), f.next());
            let (Ok(addr), Some(k), None) = parsed else {
                return Err(UserError::new(format!(
                    "{}:{}: not a System.map line (address type name){}",
                    path.display(),
                    n + 1,
                    if line.contains("real System.map") {
                        "; Debian's image package ships this placeholder, the real System.map \
                         is in the -dbg package"
                    } else {
                        ""
                    }
                ))
                .into());
            };
            if matches!(k, 'a' | 'A' | 'U' | 'w' | 'v') {
                continue;
            }
            let local = k.is_ascii_lowercase();
            if local {
                table.blocks[0].locals.insert(name.to_string());
            }
            table
                .by_name
                .entry(name.to_string())
                .or_default()
                .push(Entry {
                    addr,
                    block: local.then_some(0),
                });
        }
        if table.by_name.is_empty() {
            return Err(UserError::new(format!(
                "{}: no symbols (Debian's image package ships a placeholder; the real System.map \
                 is in the -dbg package)",
                path.display()
            ))
            .into());
        }
        for v in table.by_name.values_mut() {
            v.sort_by_key(|e| e.addr);
        }
        Ok(table)
    }

    /// Whether a translation unit whose file is `file` (base name), with these local and global
    /// symbol names, is linked into this kernel, judged from the symbol table alone (for a vmlinux
    /// without debug information): a file block of that name holds one of its locals, or, for a
    /// unit without locals, one of its globals is defined here.
    pub fn has_unit(&self, file: &str, locals: &HashSet<String>, globals: &[String]) -> bool {
        if self.from_map {
            // No file names: one of its symbols is the kernel's, by name and binding.
            return locals.iter().any(|l| self.blocks[0].locals.contains(l))
                || globals.iter().any(|g| {
                    self.by_name
                        .get(g)
                        .is_some_and(|v| v.iter().any(|e| e.block.is_none()))
                });
        }
        let base = file.rsplit('/').next().unwrap_or(file);
        let blocks: Vec<&Block> = self.blocks.iter().filter(|b| b.file == base).collect();
        if blocks.is_empty() {
            return false;
        }
        if !locals.is_empty() {
            return blocks.iter().any(|b| !b.locals.is_disjoint(locals));
        }
        globals.iter().any(|g| {
            self.by_name
                .get(g)
                .is_some_and(|v| v.iter().any(|e| e.block.is_none()))
        })
    }

    /// How many symbols are called `name`.
    pub fn count(&self, name: &str) -> usize {
        self.by_name.get(name).map_or(0, Vec::len)
    }

    /// The position of `name`: 0 when the name is unique, else its 1-based position. `unit` says the
    /// symbol is a local of the patched translation unit: its file name (`cmdline.c`) and the names
    /// of its local symbols; `None` means a global. An error names the symbol when it is missing or
    /// cannot be told apart.
    pub fn sympos(
        &self,
        name: &str,
        unit: Option<(&str, &HashSet<String>)>,
    ) -> Result<u64, String> {
        let all = self.by_name.get(name).map(Vec::as_slice).unwrap_or(&[]);
        if all.is_empty() {
            return Err(format!("{}: no symbol {name}", self.path));
        }
        let hits: Vec<usize> = match unit {
            None => all
                .iter()
                .enumerate()
                .filter(|(_, e)| e.block.is_none())
                .map(|(i, _)| i)
                .collect(),
            Some((file, locals)) => {
                let base = file.rsplit('/').next().unwrap_or(file);
                let same_file: Vec<(usize, usize)> = all
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| {
                        let b = &self.blocks[e.block?];
                        (b.file == base).then(|| (i, b.locals.intersection(locals).count()))
                    })
                    .collect();
                let best = same_file.iter().map(|&(_, n)| n).max().unwrap_or(0);
                same_file
                    .into_iter()
                    .filter(|&(_, n)| n == best)
                    .map(|(i, _)| i)
                    .collect()
            }
        };
        if all.len() == 1 && (self.blocks.is_empty() || self.from_map) {
            // A module stripped of its file symbols (distributions strip them from shipped
            // modules), or a System.map: one symbol of the name is the one meant; several cannot
            // be told apart.
            return Ok(0);
        }
        let what = match unit {
            None => "global".to_string(),
            Some((file, _)) => format!("local of {file}"),
        };
        match hits.as_slice() {
            [one] if all.len() == 1 => {
                let _ = one;
                Ok(0)
            }
            [one] => Ok(*one as u64 + 1),
            _ if self.from_map => Err(format!(
                "{}: {} symbols called {name}, and a System.map cannot tell them apart; give the \
                 vmlinux with symbols (-v)",
                self.path,
                all.len()
            )),
            [] => Err(format!(
                "{}: {} symbol(s) called {name} but none is the {what}",
                self.path,
                all.len()
            )),
            _ => Err(format!(
                "{}: {} symbols called {name} are each a {what} alike; cannot tell them apart",
                self.path,
                hits.len()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, u64, Option<usize>)], blocks: &[(&str, &[&str])]) -> SymbolTable {
        let mut t = SymbolTable {
            path: "vmlinux".into(),
            ..SymbolTable::default()
        };
        for (f, locals) in blocks {
            t.blocks.push(Block {
                file: f.to_string(),
                locals: locals.iter().map(|s| s.to_string()).collect(),
            });
        }
        for &(n, addr, block) in entries {
            t.by_name
                .entry(n.to_string())
                .or_default()
                .push(Entry { addr, block });
        }
        t
    }

    #[test]
    fn locals_of_two_files_with_one_name_are_told_apart_by_their_neighbours() {
        // Two core.c files each with a static `show`, and a global `show` elsewhere.
        let t = table(
            &[
                ("show", 0x100, Some(0)),
                ("show", 0x200, Some(1)),
                ("show", 0x300, None),
            ],
            &[
                ("core.c", &["show", "a_helper"]),
                ("core.c", &["show", "b_helper", "b_data"]),
            ],
        );
        let unit: HashSet<String> = ["show", "b_helper"].iter().map(|s| s.to_string()).collect();
        assert_eq!(t.sympos("show", Some(("core.c", &unit))), Ok(2));
        assert_eq!(t.sympos("show", None), Ok(3));
        let other: HashSet<String> = ["show"].iter().map(|s| s.to_string()).collect();
        assert!(t.sympos("show", Some(("core.c", &other))).is_err());
        assert!(t.sympos("show", Some(("other.c", &unit))).is_err());
    }

    #[test]
    fn a_unique_name_is_position_zero() {
        let t = table(&[("only", 0x10, Some(0))], &[("a.c", &["only"])]);
        let unit: HashSet<String> = ["only"].iter().map(|s| s.to_string()).collect();
        assert_eq!(t.sympos("only", Some(("a.c", &unit))), Ok(0));
        assert!(t.sympos("missing", None).is_err());
    }
}
