//! The translation units linked into a kernel, from its debug information: every compile unit of
//! vmlinux's DWARF names its source file. This is what a never-built tree cannot tell: whether the
//! config builds a `.c` file into the kernel. A vmlinux without debug information is judged by its
//! symbol table's file blocks instead.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result};
use object::{Object, ObjectSection};

use crate::error::UserError;
use crate::mapped::MappedFile;
use crate::module::sympos::SymbolTable;
use crate::objfile::SymKind;

/// The source files of vmlinux's compile units, as every `/`-suffix of their names (`a/b/c.c`,
/// `b/c.c`, `c.c`), so that a tree-relative path matches whatever directory the kernel was built in.
#[derive(Debug, Default)]
pub struct CompileUnits {
    suffixes: HashSet<String>,
    /// How many compile units there were: 0 means the kernel has no debug information.
    pub count: usize,
    /// Without debug information: the symbol table, whose file blocks judge a compiled object.
    symbols: Option<SymbolTable>,
}

impl CompileUnits {
    /// Reads the compile units of `vmlinux` (an ELF with `.debug_info`).
    pub fn read(vmlinux: &Path) -> Result<CompileUnits> {
        let data = MappedFile::open(vmlinux)?;
        let file = object::File::parse(&*data)
            .map_err(|e| UserError::new(format!("{}: not an ELF file: {e}", vmlinux.display())))?;
        let endian = if file.is_little_endian() {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        };
        let load = |id: gimli::SectionId| -> Result<gimli::EndianSlice<'_, gimli::RunTimeEndian>> {
            let bytes: &[u8] = match file.section_by_name(id.name()) {
                Some(s) => s.data().unwrap_or(&[]),
                None => &[],
            };
            Ok(gimli::EndianSlice::new(bytes, endian))
        };
        let dwarf = gimli::Dwarf::load(load)?;
        let mut units = CompileUnits::default();
        let mut headers = dwarf.units();
        while let Some(header) = headers
            .next()
            .with_context(|| format!("{}: reading .debug_info", vmlinux.display()))?
        {
            let Ok(unit) = dwarf.unit(header) else {
                continue;
            };
            let mut entries = unit.entries();
            let Ok(Some((_, root))) = entries.next_dfs() else {
                continue;
            };
            let Ok(Some(name)) = root.attr_value(gimli::DW_AT_name) else {
                continue;
            };
            let Ok(name) = dwarf.attr_string(&unit, name) else {
                continue;
            };
            units.count += 1;
            units.add(&name.to_string_lossy());
        }
        if units.count == 0 {
            units.symbols = Some(SymbolTable::parse(
                &vmlinux.display().to_string(),
                &data,
                false,
            )?);
        }
        Ok(units)
    }

    /// The kernel's units as far as a System.map can tell: by its symbols' names.
    pub fn from_system_map(map: &Path) -> Result<CompileUnits> {
        Ok(CompileUnits {
            symbols: Some(SymbolTable::from_system_map(map)?),
            ..CompileUnits::default()
        })
    }

    /// Whether the kernel has the translation unit `rel` (`fs/proc/cmdline.c`), whose object kbuild
    /// compiled at `object`: by its compile unit, or without debug information by the object's
    /// symbols in the file block of its name (as kpatch finds a unit's symbols).
    pub fn has(&self, rel: &str, object: &Path) -> bool {
        let Some(table) = &self.symbols else {
            return self.contains(rel);
        };
        let Ok(data) = std::fs::read(object) else {
            return false;
        };
        let Ok(obj) = crate::objfile::ObjectFile::parse(object, &data) else {
            return false;
        };
        let defined = |global: bool| {
            obj.symbols
                .iter()
                .filter(move |s| {
                    s.global == global
                        && s.section.is_some()
                        && !s.name.is_empty()
                        && matches!(s.kind, SymKind::Func | SymKind::Object)
                })
                .map(|s| s.name.to_string())
        };
        let locals: HashSet<String> = defined(false).collect();
        let globals: Vec<String> = defined(true).collect();
        table.has_unit(rel, &locals, &globals)
    }

    fn add(&mut self, name: &str) {
        let mut rest = name;
        loop {
            let clean = rest.trim_start_matches("./");
            if !clean.is_empty() && !clean.starts_with("../") {
                self.suffixes.insert(clean.to_string());
            }
            match rest.find('/') {
                Some(i) => rest = &rest[i + 1..],
                None => break,
            }
        }
    }

    /// Whether the tree-relative source `rel` (`fs/proc/cmdline.c`) is one of the kernel's units.
    pub fn contains(&self, rel: &str) -> bool {
        self.suffixes.contains(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_match_tree_paths() {
        let mut u = CompileUnits::default();
        u.add("/build/linux-6.12/fs/proc/cmdline.c");
        u.add("../kernel/fork.c");
        assert!(u.contains("fs/proc/cmdline.c"));
        assert!(u.contains("kernel/fork.c"));
        assert!(!u.contains("fs/proc/version.c"));
    }
}
