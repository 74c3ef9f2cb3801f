//! Reads one ELF relocatable object into plain tables the differ can index in O(1).
//!
//! Everything is borrowed from the file's bytes; nothing is copied but the relocations, which are kept
//! in one table sorted by section and offset. Indexes are `u32` and each section refers to its part of
//! the shared tables by range, so a small object costs little more than its own size. Any inconsistency
//! (truncated tables, indexes out of range, a foreign machine) ends in a [`UserError`] naming the file
//! and the problem: inputs are untrusted.

use std::num::NonZeroU32;
use std::path::Path;

use klpx_arch::{Arch, Backend, CodeReloc, Endian, Site};
use object::elf::{self, FileHeader64};
use object::read::elf::{FileHeader, Rela, SectionHeader, Sym};
use object::{Endianness, SectionIndex};

use crate::error::UserError;

/// Largest size, value or addend a sane relocatable object has (1 TiB): bounds all offset arithmetic.
const LIMIT: u64 = 1 << 40;

/// Largest section alignment accepted (a page of the largest kernel page size).
const MAX_ALIGN: u64 = 1 << 16;

/// Whether a section of this type is one of the linker's own tables (null, symbols, strings,
/// relocations, groups), which no relocation may patch.
fn is_table(sh_type: u32) -> bool {
    [
        elf::SHT_NULL,
        elf::SHT_SYMTAB,
        elf::SHT_STRTAB,
        elf::SHT_RELA,
        elf::SHT_REL,
        elf::SHT_HASH,
        elf::SHT_DYNAMIC,
        elf::SHT_DYNSYM,
        elf::SHT_GROUP,
        elf::SHT_SYMTAB_SHNDX,
    ]
    .iter()
    .any(|t| t.0 == sh_type)
}

/// How an error message names a table section's type.
fn table_kind(sh_type: u32) -> &'static str {
    match elf::SectionType(sh_type) {
        elf::SHT_NULL => "null section",
        elf::SHT_SYMTAB | elf::SHT_DYNSYM => "symbol table",
        elf::SHT_STRTAB => "string table",
        elf::SHT_RELA | elf::SHT_REL => "relocation section",
        elf::SHT_GROUP => "section group",
        _ => "linker table",
    }
}

/// What a symbol names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SymKind {
    Func,
    Object,
    Section,
    File,
    NoType,
    Other,
}

/// One symbol-table entry.
#[derive(Clone, Debug)]
pub struct Symbol<'d> {
    pub name: &'d str,
    pub kind: SymKind,
    /// Bound globally or weakly (visible outside the object).
    pub global: bool,
    pub weak: bool,
    /// The defining section, or `None` for undefined, absolute and common symbols (section 0 is never
    /// one). [`Symbol::sec`] gives it as an index.
    pub section: Option<NonZeroU32>,
    pub value: u64,
    pub size: u64,
    pub st_other: u8,
}

impl Symbol<'_> {
    pub fn is_undefined(&self) -> bool {
        self.section.is_none() && self.kind != SymKind::File
    }
    /// The index of the defining section.
    pub fn sec(&self) -> Option<usize> {
        self.section.map(|s| s.get() as usize)
    }
}

/// One relocation, already attached to the section it patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reloc {
    pub offset: u64,
    pub addend: i64,
    pub r_type: u32,
    /// Index of the symbol; [`Reloc::sym`] gives it as a `usize`.
    pub symbol: u32,
}

impl Reloc {
    pub fn sym(&self) -> usize {
        self.symbol as usize
    }
}

/// One section. Its relocations and the symbols defined in it are found through [`ObjectFile::relocs`]
/// and [`ObjectFile::defined_in`].
#[derive(Clone, Debug)]
pub struct Section<'d> {
    pub name: &'d str,
    /// File contents; empty for `SHT_NOBITS`.
    pub data: &'d [u8],
    pub size: u64,
    pub flags: u64,
    pub entsize: u64,
    pub sh_type: u32,
    /// At most 64 KiB.
    pub align: u32,
    /// `sh_link`: for `SHF_LINK_ORDER` sections, the section they describe.
    pub link: u32,
    /// The `STT_SECTION` symbol for this section, if any (symbol 0 never is one).
    pub section_symbol: Option<NonZeroU32>,
    /// Where this section's part of [`ObjectFile`]'s relocation table starts (the next section's
    /// part starts where it ends).
    relocs: u32,
    /// Where this section's part of [`ObjectFile`]'s table of defined symbols starts.
    symbols: u32,
}

impl Section<'_> {
    pub fn is_alloc(&self) -> bool {
        self.flags & elf::SHF_ALLOC.0 != 0
    }
    pub fn is_exec(&self) -> bool {
        self.flags & elf::SHF_EXECINSTR.0 != 0
    }
    pub fn is_write(&self) -> bool {
        self.flags & elf::SHF_WRITE.0 != 0
    }
    pub fn is_strings(&self) -> bool {
        self.flags & elf::SHF_STRINGS.0 != 0
    }
    pub fn is_merge(&self) -> bool {
        self.flags & elf::SHF_MERGE.0 != 0
    }
    pub fn is_link_order(&self) -> bool {
        self.flags & elf::SHF_LINK_ORDER.0 != 0
    }
    /// Whether the section holds program contents (code or data), as opposed to metadata such as
    /// relocations, symbols or strings that only the linker reads.
    pub fn is_content(&self) -> bool {
        [
            elf::SHT_PROGBITS,
            elf::SHT_NOBITS,
            elf::SHT_INIT_ARRAY,
            elf::SHT_FINI_ARRAY,
            elf::SHT_PREINIT_ARRAY,
        ]
        .iter()
        .any(|t| t.0 == self.sh_type)
    }
    pub fn is_nobits(&self) -> bool {
        self.sh_type == elf::SHT_NOBITS.0
    }
}

/// A parsed relocatable object.
#[derive(Debug)]
pub struct ObjectFile<'d> {
    pub path: String,
    pub arch: Arch,
    pub sections: Vec<Section<'d>>,
    pub symbols: Vec<Symbol<'d>>,
    /// Every relocation, grouped by the section it applies to and sorted by offset within it.
    relocs: Vec<Reloc>,
    /// Function and object symbols grouped by section, sorted by value (larger first at one value).
    defined: Vec<u32>,
    /// `e_flags` (ppc64 records the ELFv2 ABI here) and the OS ABI byte, copied to outputs.
    pub e_flags: u32,
    pub os_abi: u8,
    /// The source file name from the first `STT_FILE` symbol.
    pub source_name: Option<&'d str>,
}

impl<'d> ObjectFile<'d> {
    pub fn backend(&self) -> &'static dyn Backend {
        self.arch.backend()
    }

    /// Parses `data`, read from `path`, as a 64-bit ELF relocatable object of a supported architecture.
    pub fn parse(path: &Path, data: &'d [u8]) -> Result<ObjectFile<'d>, UserError> {
        let shown = path.display().to_string();
        let bad = |what: &str| UserError::new(format!("{shown}: {what}"));
        if data.len() < 4 || &data[..4] != b"\x7fELF" {
            return Err(bad("not an ELF file (give a compiled .o object)"));
        }
        if data.get(4) != Some(&elf::ELFCLASS64.0) {
            return Err(bad(&format!(
                "not a 64-bit ELF object (klpx supports {})",
                Arch::names()
            )));
        }
        let header = FileHeader64::<Endianness>::parse(data)
            .map_err(|e| bad(&format!("corrupt ELF header: {e}")))?;
        let e = header
            .endian()
            .map_err(|e| bad(&format!("corrupt ELF header: {e}")))?;
        if header.e_type(e) != elf::ET_REL {
            return Err(bad(
                "not a relocatable object (ET_REL); give the .o, not a linked file",
            ));
        }
        let endian = if header.is_big_endian() {
            Endian::Big
        } else {
            Endian::Little
        };
        let machine = header.e_machine(e).0;
        let arch = Arch::from_elf(machine, endian).ok_or_else(|| {
            bad(&format!(
                "unsupported machine {machine} ({endian:?}-endian); klpx supports {}",
                Arch::names()
            ))
        })?;
        let table = header
            .sections(e, data)
            .map_err(|err| bad(&format!("corrupt section headers: {err}")))?;
        let reader = Reader {
            shown: &shown,
            data,
            e,
            table,
            arch,
        };
        let mut sections = reader.sections()?;
        let (symbols, source_name, symtab_index) = reader.symbols(sections.len())?;
        let relocs = reader.relocations(&mut sections, symbols.len(), symtab_index)?;
        let defined = reader.index_defined(&mut sections, &symbols)?;
        Ok(ObjectFile {
            path: shown.clone(),
            arch,
            sections,
            symbols,
            relocs,
            defined,
            e_flags: header.e_flags(e).0,
            os_abi: header.e_ident().os_abi.0,
            source_name,
        })
    }

    /// The relocations applying to section `sec`, sorted by offset.
    pub fn relocs(&self, sec: usize) -> &[Reloc] {
        let lo = self.sections[sec].relocs as usize;
        let hi = self
            .sections
            .get(sec + 1)
            .map_or(self.relocs.len(), |s| s.relocs as usize);
        &self.relocs[lo..hi]
    }

    /// The relocations of section `sec` whose offset lies in `[start, end)`, found by binary search.
    pub fn relocs_in(&self, sec: usize, start: u64, end: u64) -> &[Reloc] {
        let all = self.relocs(sec);
        let lo = all.partition_point(|r| r.offset < start);
        let hi = lo + all[lo..].partition_point(|r| r.offset < end);
        &all[lo..hi]
    }

    /// The function and object symbols defined in section `sec`, sorted by value (at one value, the
    /// larger first).
    pub fn defined_in(&self, sec: usize) -> &[u32] {
        let lo = self.sections[sec].symbols as usize;
        let hi = self
            .sections
            .get(sec + 1)
            .map_or(self.defined.len(), |s| s.symbols as usize);
        &self.defined[lo..hi]
    }

    /// Where a relocation at `offset` of section `sec` sits: in code (with the bytes around it) or data.
    pub fn site(&self, sec: usize, offset: u64) -> Site<'d> {
        let s = &self.sections[sec];
        if s.is_exec() {
            Site::Code {
                bytes: s.data,
                offset,
            }
        } else {
            Site::Data
        }
    }

    /// The relocations of `[start, end)` in section `sec` as a backend sees them: offsets from `start`,
    /// targets by name.
    pub fn code_relocs(&self, sec: usize, start: u64, end: u64) -> Vec<CodeReloc<'d>> {
        self.relocs_in(sec, start, end)
            .iter()
            .map(|r| CodeReloc {
                offset: (r.offset - start) as i64,
                r_type: r.r_type,
                target: self.symbol_label(r.sym()),
                addend: r.addend,
            })
            .collect()
    }

    /// A symbol's name for messages: section symbols, which have none, go by their section's name.
    pub fn symbol_label(&self, sym: usize) -> &'d str {
        let s = &self.symbols[sym];
        match (s.kind, s.sec()) {
            (SymKind::Section, Some(sec)) => self.sections[sec].name,
            _ => s.name,
        }
    }

    /// The bytes of a function or object symbol (empty for bss and undefined symbols).
    pub fn symbol_bytes(&self, sym: usize) -> &'d [u8] {
        let s = &self.symbols[sym];
        let Some(sec) = s.sec() else { return &[] };
        let data = self.sections[sec].data;
        let start = (s.value as usize).min(data.len());
        let end = (s.value.saturating_add(s.size) as usize).min(data.len());
        &data[start..end]
    }

    /// The symbol whose `[value, value + size)` covers `offset` in `section`, if any.
    pub fn symbol_covering(&self, section: usize, offset: u64) -> Option<usize> {
        let list = self.defined_in(section);
        let idx = list.partition_point(|&i| self.symbols[i as usize].value <= offset);
        list[..idx].iter().rev().map(|&i| i as usize).find(|&i| {
            let s = &self.symbols[i];
            offset < s.value + s.size.max(1)
        })
    }
}

/// The parts of [`ObjectFile::parse`]: one ELF file's tables, read and checked one after another.
struct Reader<'a, 'd> {
    shown: &'a str,
    data: &'d [u8],
    e: Endianness,
    table: object::read::elf::SectionTable<'d, FileHeader64<Endianness>>,
    arch: Arch,
}

impl<'d> Reader<'_, 'd> {
    fn bad(&self, what: &str) -> UserError {
        UserError::new(format!("{}: {what}", self.shown))
    }

    /// The section headers, each with its contents.
    fn sections(&self) -> Result<Vec<Section<'d>>, UserError> {
        let (table, e, bad) = (&self.table, self.e, |w: &str| self.bad(w));
        if table.is_empty() {
            return Err(bad(
                "has no section headers (e_shoff or e_shnum is 0): corrupt or not a compiled object",
            ));
        }
        if u32::try_from(table.len()).is_err() {
            return Err(bad("has more sections than an index of 32 bits holds"));
        }
        let mut sections = Vec::with_capacity(table.len());
        for (index, sh) in table.enumerate() {
            let name = table
                .section_name(e, sh)
                .ok()
                .and_then(|n| std::str::from_utf8(n).ok())
                .ok_or_else(|| bad(&format!("section {} has a corrupt name", index.0)))?;
            let sh_type = sh.sh_type(e).0;
            let size = sh.sh_size(e);
            if size > LIMIT {
                return Err(bad(&format!("section {name} claims {size} bytes")));
            }
            let align = sh.sh_addralign(e);
            if align > MAX_ALIGN || (align > 1 && !align.is_power_of_two()) {
                return Err(bad(&format!(
                    "section {name} has an invalid alignment {align}"
                )));
            }
            let data = if sh_type == elf::SHT_NOBITS.0 || index.0 == 0 {
                &[][..]
            } else {
                sh.data(e, self.data).map_err(|_| {
                    bad(&format!(
                        "section {name} lies outside the file (truncated?)"
                    ))
                })?
            };
            sections.push(Section {
                name,
                data,
                size,
                flags: sh.sh_flags(e).0,
                entsize: sh.sh_entsize(e),
                sh_type,
                align: align as u32,
                link: sh.sh_link(e),
                section_symbol: None,
                relocs: 0,
                symbols: 0,
            });
        }

        Ok(sections)
    }

    /// The symbol table, the source file's name (the first `STT_FILE`) and the table's index.
    fn symbols(
        &self,
        section_count: usize,
    ) -> Result<(Vec<Symbol<'d>>, Option<&'d str>, usize), UserError> {
        let (table, e, bad) = (&self.table, self.e, |w: &str| self.bad(w));
        let symtab = table
            .symbols(e, self.data, elf::SHT_SYMTAB)
            .map_err(|err| bad(&format!("corrupt symbol table: {err}")))?;
        if u32::try_from(symtab.len()).is_err() {
            return Err(bad("has more symbols than an index of 32 bits holds"));
        }
        let mut symbols = Vec::with_capacity(symtab.len());
        let mut source_name = None;
        for (index, sym) in symtab.enumerate() {
            let name = symtab
                .symbol_name(e, sym)
                .ok()
                .and_then(|n| std::str::from_utf8(n).ok())
                .ok_or_else(|| bad(&format!("symbol {} has a corrupt name", index.0)))?;
            let kind = match sym.st_type() {
                elf::STT_FUNC => SymKind::Func,
                elf::STT_OBJECT | elf::STT_TLS => SymKind::Object,
                elf::STT_SECTION => SymKind::Section,
                elf::STT_FILE => SymKind::File,
                elf::STT_NOTYPE => SymKind::NoType,
                _ => SymKind::Other,
            };
            let section = match symtab.symbol_section(e, sym, index) {
                Ok(Some(SectionIndex(i))) if i < section_count && i != 0 => {
                    NonZeroU32::new(i as u32)
                }
                Ok(Some(_)) => {
                    return Err(bad(&format!(
                        "symbol {name} names a section that does not exist"
                    )));
                }
                Ok(None) => None,
                Err(err) => return Err(bad(&format!("symbol {name}: {err}"))),
            };
            if kind == SymKind::File && source_name.is_none() && !name.is_empty() {
                source_name = Some(name);
            }
            let bind = sym.st_bind();
            if sym.st_value(e) > LIMIT || sym.st_size(e) > LIMIT {
                return Err(bad(&format!("symbol {name} has an absurd value or size")));
            }
            symbols.push(Symbol {
                name,
                kind,
                global: bind == elf::STB_GLOBAL
                    || bind == elf::STB_WEAK
                    || bind == elf::STB_GNU_UNIQUE,
                weak: bind == elf::STB_WEAK,
                section,
                value: sym.st_value(e),
                size: sym.st_size(e),
                st_other: sym.st_other().0,
            });
        }
        let symtab_index = symtab.section().0;

        Ok((symbols, source_name, symtab_index))
    }

    /// Every relocation, grouped by the section it applies to (whose range in the table it sets)
    /// and sorted by offset there.
    fn relocations(
        &self,
        sections: &mut [Section<'d>],
        symbol_count: usize,
        symtab_index: usize,
    ) -> Result<Vec<Reloc>, UserError> {
        let (table, e, bad, arch) = (&self.table, self.e, |w: &str| self.bad(w), self.arch);
        // Relocation sections, grouped by the section they apply to (usually one each).
        let mut rela_sections = Vec::new();
        let mut total = 0usize;
        for (index, sh) in table.enumerate() {
            let Some((relas, link)) = sh
                .rela(e, self.data)
                .map_err(|err| bad(&format!("corrupt relocation section {}: {err}", index.0)))?
            else {
                if sh.sh_type(e) == elf::SHT_REL {
                    return Err(bad(
                        "REL relocations are not used by any supported kernel architecture",
                    ));
                }
                continue;
            };
            let target = sh.sh_info(e) as usize;
            let rel_name = sections[index.0].name;
            if link.0 != symtab_index || target == 0 || target >= sections.len() {
                return Err(bad(&format!(
                    "relocation section {rel_name} has a bad sh_link or sh_info"
                )));
            }
            if is_table(sections[target].sh_type) {
                return Err(bad(&format!(
                    "relocation section {rel_name} applies to {}, which is a {} and cannot be relocated",
                    sections[target].name,
                    table_kind(sections[target].sh_type)
                )));
            }
            total += relas.len();
            rela_sections.push((target, rel_name, relas));
        }
        rela_sections.sort_by_key(|&(target, _, _)| target);
        if u32::try_from(total).is_err() {
            return Err(bad("has more relocations than an index of 32 bits holds"));
        }
        let mut relocs = Vec::with_capacity(total);
        let mut pending = rela_sections.iter().peekable();
        for (index, section) in sections.iter_mut().enumerate() {
            let first = relocs.len();
            section.relocs = first as u32;
            while let Some(&(_, rel_name, relas)) = pending.next_if(|&&(t, _, _)| t == index) {
                for rela in relas {
                    let symbol = rela.r_sym(e, false);
                    let offset = rela.r_offset(e);
                    if symbol as usize >= symbol_count || offset >= section.size {
                        return Err(bad(&format!(
                            "relocation in {rel_name} at {offset:#x} names symbol {symbol} or an offset out of range"
                        )));
                    }
                    if rela.r_addend(e).unsigned_abs() > LIMIT {
                        return Err(bad(&format!(
                            "relocation in {rel_name} at {offset:#x} has an absurd addend"
                        )));
                    }
                    let r_type = rela.r_type(e, false).0;
                    if !arch.backend().knows_reloc(r_type) {
                        return Err(bad(&format!(
                            "relocation in {rel_name} at {offset:#x} has type {r_type}, which no {arch} ABI defines"
                        )));
                    }
                    relocs.push(Reloc {
                        offset,
                        addend: rela.r_addend(e),
                        r_type,
                        symbol,
                    });
                }
            }
            // Stable: relocations at one offset (ppc64 pairs) keep their order.
            relocs[first..].sort_by_key(|r| r.offset);
        }

        Ok(relocs)
    }

    /// The defined functions and data, sorted by section and address (each section's range set),
    /// and each section's own symbol.
    fn index_defined(
        &self,
        sections: &mut [Section<'d>],
        symbols: &[Symbol<'d>],
    ) -> Result<Vec<u32>, UserError> {
        let (bad, arch) = (|w: &str| self.bad(w), self.arch);
        let mut defined = Vec::new();
        for (i, sym) in symbols.iter().enumerate() {
            let Some(s) = sym.sec() else { continue };
            match sym.kind {
                SymKind::Section => {
                    sections[s].section_symbol =
                        sections[s].section_symbol.or(NonZeroU32::new(i as u32));
                }
                SymKind::Func | SymKind::Object if !arch.backend().is_mapping_symbol(sym.name) => {
                    if !sections[s].is_content() {
                        return Err(bad(&format!(
                            "symbol {} is defined in {}, which holds no code or data",
                            sym.name, sections[s].name
                        )));
                    }
                    let end = sym.value.checked_add(sym.size);
                    if end.is_none_or(|end| end > sections[s].size) {
                        return Err(bad(&format!(
                            "symbol {} extends past the end of its section {}",
                            sym.name, sections[s].name
                        )));
                    }
                    defined.push(i as u32);
                }
                _ => {}
            }
        }
        defined.sort_unstable_by_key(|&i| {
            let s = &symbols[i as usize];
            (s.section, s.value, std::cmp::Reverse(s.size), i)
        });
        let mut at = 0;
        for (index, sec) in sections.iter_mut().enumerate() {
            sec.symbols = at as u32;
            while at < defined.len() && symbols[defined[at] as usize].sec() == Some(index) {
                at += 1;
            }
        }

        Ok(defined)
    }
}

/// Hand-made ELF objects for unit tests: x86_64, little-endian, with the sections given.
#[cfg(test)]
pub(crate) mod test_elf {
    /// Section index of `.symtab`; `.strtab` and `.shstrtab` follow, and the sections given start at
    /// [`FIRST`].
    pub const SYMTAB: u32 = 1;
    pub const FIRST: u32 = 4;

    pub struct Sec {
        pub name: &'static str,
        pub sh_type: u32,
        pub flags: u64,
        pub data: Vec<u8>,
        pub link: u32,
        pub info: u32,
        pub entsize: u64,
    }

    impl Sec {
        pub fn new(name: &'static str, sh_type: u32, flags: u64, data: Vec<u8>) -> Sec {
            Sec {
                name,
                sh_type,
                flags,
                data,
                link: 0,
                info: 0,
                entsize: 0,
            }
        }
        /// A `SHT_RELA` section applying to section `target` (an index counted from 0).
        pub fn rela(name: &'static str, target: u32, relas: &[(u64, u32, u32, i64)]) -> Sec {
            let mut data = Vec::new();
            for &(offset, sym, r_type, addend) in relas {
                data.extend(offset.to_le_bytes());
                data.extend((u64::from(sym) << 32 | u64::from(r_type)).to_le_bytes());
                data.extend(addend.to_le_bytes());
            }
            Sec {
                link: SYMTAB,
                info: target,
                entsize: 24,
                ..Sec::new(name, 4, 0x40, data)
            }
        }
    }

    /// A symbol: name, `st_info`, section index, value, size.
    pub type Sym = (&'static str, u8, u16, u64, u64);

    pub fn build(secs: &[Sec], syms: &[Sym]) -> Vec<u8> {
        let mut shstr = vec![0u8];
        let mut str_ = vec![0u8];
        let name = |tab: &mut Vec<u8>, n: &str| {
            let at = tab.len() as u32;
            tab.extend(n.as_bytes());
            tab.push(0);
            at
        };
        let mut symtab = vec![0u8; 24];
        for &(n, info, shndx, value, size) in syms {
            symtab.extend(name(&mut str_, n).to_le_bytes());
            symtab.extend([info, 0]);
            symtab.extend(shndx.to_le_bytes());
            symtab.extend(value.to_le_bytes());
            symtab.extend(size.to_le_bytes());
        }
        let fixed = [
            Sec {
                link: 2,
                info: 1,
                entsize: 24,
                ..Sec::new(".symtab", 2, 0, symtab)
            },
            Sec::new(".strtab", 3, 0, str_),
        ];
        let mut all: Vec<(u32, &Sec)> = Vec::new();
        for s in fixed.iter().chain(secs) {
            all.push((name(&mut shstr, s.name), s));
        }
        let shstrtab_name = name(&mut shstr, ".shstrtab");
        let shstrtab = Sec::new(".shstrtab", 3, 0, shstr);
        all.insert(2, (shstrtab_name, &shstrtab));
        let align = |out: &mut Vec<u8>| out.resize(out.len().next_multiple_of(8), 0);
        let mut out = vec![0u8; 64];
        let mut offsets = Vec::new();
        for (_, s) in &all {
            align(&mut out);
            offsets.push(out.len() as u64);
            out.extend(&s.data);
        }
        align(&mut out);
        let shoff = out.len() as u64;
        out.extend([0u8; 64]);
        for ((n, s), off) in all.iter().zip(&offsets) {
            out.extend(n.to_le_bytes());
            out.extend(s.sh_type.to_le_bytes());
            out.extend(s.flags.to_le_bytes());
            out.extend(0u64.to_le_bytes());
            out.extend(off.to_le_bytes());
            out.extend((s.data.len() as u64).to_le_bytes());
            out.extend(s.link.to_le_bytes());
            out.extend(s.info.to_le_bytes());
            out.extend(8u64.to_le_bytes());
            out.extend(s.entsize.to_le_bytes());
        }
        let header = &mut out[..64];
        header[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        header[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
        header[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        header[20..24].copy_from_slice(&1u32.to_le_bytes());
        header[40..48].copy_from_slice(&shoff.to_le_bytes());
        header[52..54].copy_from_slice(&64u16.to_le_bytes());
        header[58..60].copy_from_slice(&64u16.to_le_bytes());
        header[60..62].copy_from_slice(&(all.len() as u16 + 1).to_le_bytes());
        header[62..64].copy_from_slice(&3u16.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::ObjectFile;
    use super::test_elf::{FIRST, Sec, build};

    #[test]
    fn reads_a_hand_made_object() {
        let text = Sec::new(".text", 1, 0x6, vec![0xc3; 16]);
        let rela = Sec::rela(".rela.text", FIRST, &[(0, 1, 2, -4)]);
        let bytes = build(&[text, rela], &[("f", 0x12, FIRST as u16, 0, 16)]);
        let obj = ObjectFile::parse(Path::new("t.o"), &bytes).expect("parses");
        let text = obj.sections.iter().position(|s| s.name == ".text").unwrap();
        assert_eq!(obj.relocs(text).len(), 1);
        assert_eq!(obj.defined_in(text), [1]);
        assert_eq!(obj.symbols[1].name, "f");
    }

    /// Found by fuzzing: a relocation section applying to another relocation section was read, and a
    /// special section of that name then went into klpx's output as a relocation section without a
    /// symbol table, which did not read back.
    #[test]
    fn relocations_of_a_relocation_section_are_bad_input() {
        let text = Sec::new(".text", 1, 0x6, vec![0xc3; 16]);
        let rela = Sec::rela("__mmu_ftr_fixup", FIRST, &[(0, 1, 2, -4)]);
        let rela_of_rela = Sec::rela("er", FIRST + 1, &[(0, 1, 1, 0)]);
        let bytes = build(
            &[text, rela, rela_of_rela],
            &[("f", 0x12, FIRST as u16, 0, 16)],
        );
        let err = ObjectFile::parse(Path::new("t.o"), &bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.o: relocation section er applies to __mmu_ftr_fixup, which is a relocation section and cannot be relocated"
        );
    }
}
