//! After the module link: turns klpx's side tables in the linked `.ko` into the livepatch ELF format.
//!
//! Each `.klpx.relocs` entry (layout in `writer::side_table`) becomes a relocation in
//! `.klp.rela.<object>.<section>` (`SHF_RELA_LIVEPATCH`) against a `.klp.sym.<object>.<symbol>,<pos>`
//! symbol (`SHN_LIVEPATCH`), as Documentation/livepatch/module-elf-format.rst describes. The side tables
//! themselves are dropped. Every other section, symbol and relocation is copied; symbol indexes are
//! renumbered because the side tables' own symbols go.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result, anyhow, bail};
use object::elf;
use object::read::elf::{FileHeader, Rela, SectionHeader, Sym};
use object::write::StringId;
use object::write::elf::{
    FileHeader as OutHeader, Rel, SectionHeader as OutSection, SectionIndex, Sym as OutSym,
    SymbolIndex, Writer,
};

use crate::writer::diff_object::ALIAS_PREFIX;
use crate::writer::side_table::{self, FUNC_SIZE, RELOC_SIZE};

/// `SHF_RELA_LIVEPATCH` (include/uapi/linux/elf.h).
pub const SHF_RELA_LIVEPATCH: u64 = 0x0010_0000;
/// `SHN_LIVEPATCH` (include/uapi/linux/elf.h).
pub const SHN_LIVEPATCH: u16 = 0xff20;

/// A livepatch relocation found in the side table, resolved to a place in the linked module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedKlpReloc {
    /// Section index in the linked module.
    pub section: usize,
    pub offset: u64,
    pub r_type: u32,
    pub addend: i64,
    pub object: String,
    pub symbol: String,
    pub source: Option<String>,
}

/// A patched function found in `.klpx.funcs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedFunc {
    pub object: String,
    pub old_name: String,
    pub source: Option<String>,
}

/// What the side tables of a linked module say.
#[derive(Debug, Default)]
pub struct SideTables {
    pub relocs: Vec<LinkedKlpReloc>,
    pub funcs: Vec<LinkedFunc>,
}

type Hdr = elf::FileHeader64<object::Endianness>;

/// One `.klp.rela` entry before writing: offset, livepatch symbol number, type, addend.
type KlpEntry = (u64, usize, u32, i64);

/// Reads the side tables of a linked module.
pub fn read_side_tables(data: &[u8]) -> Result<SideTables> {
    let header = Hdr::parse(data).context("not a 64-bit ELF module")?;
    let endian = header.endian()?;
    let sections = header.sections(endian, data)?;
    let symbols = sections.symbols(endian, data, elf::SHT_SYMTAB)?;
    let find = |name: &[u8]| {
        sections
            .iter()
            .enumerate()
            .find(|(_, s)| sections.section_name(endian, s).ok() == Some(name))
    };
    let mut out = SideTables::default();
    let Some((_, strtab_sec)) = find(side_table::STRTAB.as_bytes()) else {
        return Ok(out);
    };
    let strtab = strtab_sec.data(endian, data)?;
    // Resolves a relocation of a side table to (section, offset) of what it points at.
    let target = |r: &elf::Rela64<object::Endianness>| -> Result<(usize, u64)> {
        let sym = symbols.symbol(object::SymbolIndex(r.r_sym(endian, false) as usize))?;
        let shndx = sym.st_shndx(endian);
        let Some(shndx) = shndx.index() else {
            bail!("side-table relocation against a symbol outside the module's sections");
        };
        Ok((
            shndx as usize,
            sym.st_value(endian).wrapping_add(r.r_addend(endian) as u64),
        ))
    };
    let strtab_index = find(side_table::STRTAB.as_bytes())
        .map(|(i, _)| i)
        .unwrap_or(0);
    let byte_order = if object::Endian::is_big_endian(endian) {
        klpx_arch::Endian::Big
    } else {
        klpx_arch::Endian::Little
    };
    for (table, size) in [
        (side_table::RELOCS.as_bytes(), RELOC_SIZE),
        (side_table::FUNCS.as_bytes(), FUNC_SIZE),
    ] {
        let Some((index, sec)) = find(table) else {
            continue;
        };
        let bytes = sec.data(endian, data)?;
        let count = bytes.len() / size;
        let mut place: Vec<Option<(usize, u64)>> = vec![None; count];
        let mut names: Vec<Option<u64>> = vec![None; count];
        for rs in sections.iter() {
            let Some((relas, _symtab)) = rs.rela(endian, data)? else {
                continue;
            };
            if rs.sh_info(endian) as usize != index {
                continue;
            }
            for r in relas {
                let off = r.r_offset(endian) as usize;
                let (n, field) = (off / size, (off % size) as u64);
                if n >= count {
                    bail!(
                        "{}: relocation beyond the table",
                        String::from_utf8_lossy(table)
                    );
                }
                let t = target(r)?;
                match field {
                    side_table::PLACE => place[n] = Some(t),
                    side_table::NAMES if t.0 == strtab_index => names[n] = Some(t.1),
                    _ => bail!(
                        "{}: unexpected relocation at {off:#x}",
                        String::from_utf8_lossy(table)
                    ),
                }
            }
        }
        for n in 0..count {
            let (Some((section, offset)), Some(name_at)) = (place[n], names[n]) else {
                bail!(
                    "{}: entry {n} lacks its relocations",
                    String::from_utf8_lossy(table)
                );
            };
            let (object, symbol, source) = side_table::read_names(strtab, name_at)?;
            let e = &bytes[n * size..(n + 1) * size];
            if size == RELOC_SIZE {
                let (addend, r_type) = side_table::read_reloc_entry(byte_order, e)
                    .ok_or_else(|| anyhow!("{}: entry {n} is short", side_table::RELOCS))?;
                out.relocs.push(LinkedKlpReloc {
                    section,
                    offset,
                    r_type,
                    addend,
                    object,
                    symbol,
                    source,
                });
            } else {
                out.funcs.push(LinkedFunc {
                    object,
                    old_name: symbol,
                    source,
                });
            }
        }
    }
    Ok(out)
}

/// Rewrites a linked module: drops the side tables and adds the `.klp.rela` sections and `.klp.sym`
/// symbols for `relocs`, whose symbol positions `sympos` gives. Returns the new file.
///
/// In stages: read the module ([`Module`]), group the livepatch relocations by object and target
/// section ([`KlpGroups`]), find klpx's aliases ([`alias_targets`]), lay the new file out
/// ([`Layout`]), then write it in the same order.
pub fn write_klp_sections(
    data: &[u8],
    relocs: &[LinkedKlpReloc],
    sympos: &dyn Fn(&LinkedKlpReloc) -> Result<u64>,
) -> Result<Vec<u8>> {
    let module = Module::parse(data)?;
    let groups = KlpGroups::new(relocs, sympos, &module)?;
    let aliases = alias_targets(&module);
    let mut buffer = Vec::new();
    let mut w = Writer::new(module.endian, true, &mut buffer);
    let layout = Layout::reserve(&mut w, &module, &groups, &aliases)?;
    layout.write_contents(&mut w, &module, &groups)?;
    layout.write_symbols(&mut w, &module)?;
    layout.write_section_headers(&mut w, &module, &groups);
    drop(w);
    Ok(buffer)
}

/// The linked module as read: its sections with their names, and which of them go or are
/// rewritten by the writer itself.
struct Module<'data> {
    data: &'data [u8],
    header: &'data Hdr,
    endian: object::Endianness,
    sections: object::read::elf::SectionTable<'data, Hdr>,
    symbols: object::read::elf::SymbolTable<'data, Hdr>,
    names: Vec<&'data [u8]>,
    symtab_index: usize,
    strtab_index: usize,
    shstrndx: usize,
}

impl<'data> Module<'data> {
    fn parse(data: &'data [u8]) -> Result<Module<'data>> {
        let header = Hdr::parse(data).context("not a 64-bit ELF module")?;
        let endian = header.endian()?;
        let sections = header.sections(endian, data)?;
        let symbols = sections.symbols(endian, data, elf::SHT_SYMTAB)?;
        let symtab_index = symbols.section().0;
        let names = sections
            .iter()
            .map(|s| sections.section_name(endian, s).unwrap_or_default())
            .collect();
        let shstrndx = header.shstrndx(endian, data)? as usize;
        let strtab_index = sections
            .section(object::SectionIndex(symtab_index))?
            .sh_link(endian) as usize;
        Ok(Module {
            data,
            header,
            endian,
            sections,
            symbols,
            names,
            symtab_index,
            strtab_index,
            shstrndx,
        })
    }

    /// klpx's side tables and their relocations: dropped.
    fn dropped(&self, i: usize) -> bool {
        let n = self.names[i];
        n.starts_with(side_table::PREFIX.as_bytes())
            || n.strip_prefix(b".rela")
                .is_some_and(|r| r.starts_with(side_table::PREFIX.as_bytes()))
    }

    /// The null section and the tables the writer makes anew.
    fn special(&self, i: usize) -> bool {
        i == 0 || i == self.symtab_index || i == self.strtab_index || i == self.shstrndx
    }
}

/// The livepatch symbols (`.klp.sym.<object>.<symbol>,<pos>`, each once) and the relocations
/// against them, grouped by (object, target section): one `.klp.rela` section per group.
struct KlpGroups {
    symbols: Vec<String>,
    groups: BTreeMap<(String, usize), Vec<KlpEntry>>,
    /// `.klp.rela.<object>.<section>`, in `groups` order.
    section_names: Vec<String>,
}

impl KlpGroups {
    fn new(
        relocs: &[LinkedKlpReloc],
        sympos: &dyn Fn(&LinkedKlpReloc) -> Result<u64>,
        m: &Module,
    ) -> Result<KlpGroups> {
        let mut symbols: Vec<String> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut groups: BTreeMap<(String, usize), Vec<KlpEntry>> = BTreeMap::new();
        for r in relocs {
            let pos = sympos(r)?;
            let name = format!(".klp.sym.{}.{},{pos}", r.object, r.symbol);
            let at = *index.entry(name.clone()).or_insert_with(|| {
                symbols.push(name);
                symbols.len() - 1
            });
            groups
                .entry((r.object.clone(), r.section))
                .or_default()
                .push((r.offset, at, r.r_type, r.addend));
        }
        let section_names = groups
            .keys()
            .map(|(obj, sec)| {
                let target = m.names.get(*sec).copied().unwrap_or_default();
                format!(".klp.rela.{obj}.{}", String::from_utf8_lossy(target))
            })
            .collect();
        Ok(KlpGroups {
            symbols,
            groups,
            section_names,
        })
    }
}

/// klpx's own aliases go: relocations against one move to the function's own symbol at the same
/// place, so that kallsyms (which takes the first of equal addresses) names the real function.
/// objtool, where it runs over the linked module (IBT kernels), gives each function symbol its
/// padding symbol (`__pfx_`, and `__cfi_` with kCFI): the aliases' go the same way. Returns alias
/// symbol → the real one.
fn alias_targets(m: &Module) -> HashMap<usize, usize> {
    let mut real: HashMap<(u16, u64), usize> = HashMap::new();
    let mut aliases = Vec::new();
    for (i, sym) in m.symbols.iter().enumerate().skip(1) {
        if sym.st_type() != elf::STT_FUNC {
            continue;
        }
        let name = sym.name(m.endian, m.symbols.strings()).unwrap_or_default();
        let place = (sym.st_shndx(m.endian).0, sym.st_value(m.endian));
        let unprefixed = [b"__pfx_".as_slice(), b"__cfi_"]
            .iter()
            .find_map(|p| name.strip_prefix(*p))
            .unwrap_or(name);
        if unprefixed.starts_with(ALIAS_PREFIX.as_bytes()) {
            aliases.push((i, place));
        } else if !name.is_empty() {
            real.entry(place).or_insert(i);
        }
    }
    aliases
        .into_iter()
        .filter_map(|(i, place)| real.get(&place).map(|&r| (i, r)))
        .collect()
}

/// Where everything of the new file goes: section and symbol indexes, names, the copied
/// relocations (renumbered) and every section's offset.
struct Layout {
    /// Old section index → new (`None`: dropped or made anew).
    new_index: Vec<Option<SectionIndex>>,
    name_ids: Vec<Option<StringId>>,
    /// The `.klp.rela` sections, in [`KlpGroups`] order.
    klp_sections: Vec<StringId>,
    /// Old symbol index → new (`None`: dropped).
    sym_map: Vec<Option<SymbolIndex>>,
    /// Old symbols kept, in their new order, with their names.
    kept: Vec<(usize, Option<StringId>)>,
    num_local: u32,
    klp_ids: Vec<StringId>,
    klp_first: u32,
    offsets: Vec<u64>,
    relas: Vec<Option<Vec<Rel>>>,
    klp_offsets: Vec<u64>,
}

impl Layout {
    fn reserve<'a>(
        w: &mut Writer<'a>,
        m: &'a Module<'a>,
        groups: &'a KlpGroups,
        aliases: &HashMap<usize, usize>,
    ) -> Result<Layout> {
        w.reserve_file_header();
        w.reserve_null_section_index();
        let count = m.names.len();
        let mut new_index: Vec<Option<SectionIndex>> = vec![None; count];
        let mut name_ids: Vec<Option<StringId>> = vec![None; count];
        for i in 0..count {
            if m.special(i) || m.dropped(i) {
                continue;
            }
            new_index[i] = Some(w.reserve_section_index());
            name_ids[i] = Some(w.add_section_name(m.names[i]));
        }
        let klp_sections: Vec<StringId> = groups
            .section_names
            .iter()
            .map(|n| {
                w.reserve_section_index();
                w.add_section_name(n.as_bytes())
            })
            .collect();
        w.reserve_symtab_section_index();
        w.reserve_strtab_section_index();
        w.reserve_shstrtab_section_index();

        // Symbols: all but those of dropped sections and replaced aliases, locals first;
        // livepatch symbols last.
        w.reserve_null_symbol_index();
        let mut sym_map: Vec<Option<SymbolIndex>> = vec![None; m.symbols.len()];
        let mut kept: Vec<(usize, Option<StringId>)> = Vec::new();
        let mut num_local = 1;
        for pass_local in [true, false] {
            for (i, sym) in m.symbols.iter().enumerate().skip(1) {
                if (sym.st_bind() == elf::STB_LOCAL) != pass_local {
                    continue;
                }
                let shndx = sym.st_shndx(m.endian).index().map(usize::from);
                if let Some(shndx) = shndx
                    && (shndx >= count || new_index[shndx].is_none())
                {
                    continue;
                }
                if aliases.contains_key(&i) {
                    continue;
                }
                let name = sym.name(m.endian, m.symbols.strings()).unwrap_or_default();
                let id = (!name.is_empty()).then(|| w.add_string(name));
                let sec = shndx.and_then(|i| new_index[i]);
                sym_map[i] = Some(w.reserve_symbol_index(sec));
                kept.push((i, id));
            }
            if pass_local {
                num_local = w.symbol_count();
            }
        }
        let klp_ids: Vec<StringId> = groups
            .symbols
            .iter()
            .map(|n| {
                let id = w.add_string(n.as_bytes());
                w.reserve_symbol_index(None);
                id
            })
            .collect();
        let klp_first = w.symbol_count() - klp_ids.len() as u32;

        // Section contents, the copied relocations renumbered.
        let mut offsets: Vec<u64> = vec![0; count];
        let mut relas: Vec<Option<Vec<Rel>>> = vec![None; count];
        for (i, s) in m.sections.iter().enumerate() {
            if new_index[i].is_none() {
                continue;
            }
            if let Some((rs, _)) = s.rela(m.endian, m.data)? {
                let out = rs
                    .iter()
                    .map(|r| renumbered(r, m, i, aliases, &sym_map))
                    .collect::<Result<Vec<Rel>>>()?;
                offsets[i] = w.reserve_relocations(out.len(), true);
                relas[i] = Some(out);
            } else if s.sh_type(m.endian) == elf::SHT_REL {
                bail!(
                    "{}: REL relocations are not supported",
                    String::from_utf8_lossy(m.names[i])
                );
            } else if s.sh_type(m.endian) != elf::SHT_NOBITS {
                offsets[i] = w.reserve(s.sh_size(m.endian), s.sh_addralign(m.endian).max(1));
            }
        }
        let klp_offsets: Vec<u64> = groups
            .groups
            .values()
            .map(|v| w.reserve_relocations(v.len(), true))
            .collect();
        w.reserve_symtab();
        w.reserve_strtab().context("laying out .strtab")?;
        w.reserve_shstrtab().context("laying out .shstrtab")?;
        w.reserve_section_headers();
        Ok(Layout {
            new_index,
            name_ids,
            klp_sections,
            sym_map,
            kept,
            num_local,
            klp_ids,
            klp_first,
            offsets,
            relas,
            klp_offsets,
        })
    }

    /// The new index of old section `idx` (0 when it went).
    fn remap(&self, idx: u32) -> u32 {
        self.new_index
            .get(idx as usize)
            .copied()
            .flatten()
            .map_or(0, |x| x.0)
    }

    /// The file header and every section's contents, then the `.klp.rela` sections.
    fn write_contents(&self, w: &mut Writer, m: &Module, groups: &KlpGroups) -> Result<()> {
        let ident = m.header.e_ident();
        w.write_file_header(&OutHeader {
            os_abi: ident.os_abi,
            abi_version: ident.abi_version,
            e_type: m.header.e_type(m.endian),
            e_machine: m.header.e_machine(m.endian),
            e_entry: 0,
            e_flags: m.header.e_flags(m.endian),
        })?;
        for (i, s) in m.sections.iter().enumerate() {
            if self.new_index[i].is_none() {
                continue;
            }
            if let Some(rs) = &self.relas[i] {
                w.write_align_relocation();
                for r in rs {
                    w.write_relocation(true, r);
                }
            } else if s.sh_type(m.endian) != elf::SHT_NOBITS {
                let mut bytes = s.data(m.endian, m.data)?.to_vec();
                if s.sh_type(m.endian) == elf::SHT_GROUP {
                    remap_group(&mut bytes, m.endian, &self.new_index)?;
                }
                w.write_align(s.sh_addralign(m.endian).max(1));
                w.write(&bytes);
            }
        }
        for v in groups.groups.values() {
            w.write_align_relocation();
            for &(offset, sym, r_type, addend) in v {
                w.write_relocation(
                    true,
                    &Rel {
                        r_offset: offset,
                        r_sym: self.klp_first + sym as u32,
                        r_type: elf::RelocationType(r_type),
                        r_addend: addend,
                    },
                );
            }
        }
        Ok(())
    }

    /// The symbol table (kept symbols, then the livepatch symbols in `SHN_LIVEPATCH`) and the
    /// string tables.
    fn write_symbols(&self, w: &mut Writer, m: &Module) -> Result<()> {
        w.write_null_symbol();
        for &(i, id) in &self.kept {
            let sym = m.symbols.symbol(object::SymbolIndex(i))?;
            let shndx = sym.st_shndx(m.endian);
            let section = shndx
                .index()
                .and_then(|i| self.new_index.get(i as usize).copied().flatten());
            w.write_symbol(&OutSym {
                st_name: w.string_offset(id),
                section: section.map(|s| s.0),
                st_info: sym.st_info(),
                st_other: sym.st_other(),
                st_shndx: if section.is_some() {
                    elf::SHN_UNDEF
                } else {
                    shndx
                },
                st_value: sym.st_value(m.endian),
                st_size: sym.st_size(m.endian),
            });
        }
        for &id in &self.klp_ids {
            w.write_symbol(&OutSym {
                st_name: w.string_offset(Some(id)),
                section: None,
                st_info: elf::SymbolInfo::new(elf::STB_GLOBAL, elf::STT_NOTYPE),
                st_other: elf::SymbolOther(0),
                st_shndx: elf::SymbolSection(SHN_LIVEPATCH),
                st_value: 0,
                st_size: 0,
            });
        }
        w.write_strtab();
        w.write_shstrtab();
        Ok(())
    }

    /// The section headers: the copied sections (links and infos renumbered), the `.klp.rela`
    /// sections, and the tables made anew.
    fn write_section_headers(&self, w: &mut Writer, m: &Module, groups: &KlpGroups) {
        w.write_null_section_header();
        let symtab = w.symtab_index();
        for (i, s) in m.sections.iter().enumerate() {
            if self.new_index[i].is_none() {
                continue;
            }
            let flags = s.sh_flags(m.endian);
            let is_group = s.sh_type(m.endian) == elf::SHT_GROUP;
            let (link, info) = match &self.relas[i] {
                Some(_) => (symtab.0, self.remap(s.sh_info(m.endian))),
                None => {
                    let link = if is_group {
                        symtab.0
                    } else if flags.0 & elf::SHF_LINK_ORDER.0 != 0 {
                        self.remap(s.sh_link(m.endian))
                    } else {
                        s.sh_link(m.endian)
                    };
                    let info = if is_group {
                        self.sym_map
                            .get(s.sh_info(m.endian) as usize)
                            .copied()
                            .flatten()
                            .map_or(0, |x| x.0)
                    } else if flags.0 & elf::SHF_INFO_LINK.0 != 0 {
                        self.remap(s.sh_info(m.endian))
                    } else {
                        s.sh_info(m.endian)
                    };
                    (link, info)
                }
            };
            let size = match &self.relas[i] {
                Some(rs) => (rs.len() * 24) as u64,
                None => s.sh_size(m.endian),
            };
            w.write_section_header(&OutSection {
                sh_name: w.section_name_offset(self.name_ids[i]),
                sh_type: s.sh_type(m.endian),
                sh_flags: flags,
                sh_addr: s.sh_addr(m.endian),
                sh_offset: self.offsets[i],
                sh_size: size,
                sh_link: link,
                sh_info: info,
                sh_addralign: s.sh_addralign(m.endian),
                sh_entsize: s.sh_entsize(m.endian),
            });
        }
        for (n, ((_, target), entries)) in groups.groups.iter().enumerate() {
            w.write_section_header(&OutSection {
                sh_name: w.section_name_offset(Some(self.klp_sections[n])),
                sh_type: elf::SHT_RELA,
                sh_flags: elf::SectionFlags(
                    elf::SHF_ALLOC.0 | elf::SHF_INFO_LINK.0 | SHF_RELA_LIVEPATCH,
                ),
                sh_addr: 0,
                sh_offset: self.klp_offsets[n],
                sh_size: (entries.len() * 24) as u64,
                sh_link: symtab.0,
                sh_info: self.new_index[*target].map_or(0, |x| x.0),
                sh_addralign: 8,
                sh_entsize: 24,
            });
        }
        w.write_symtab_section_header(self.num_local);
        w.write_strtab_section_header();
        w.write_shstrtab_section_header();
    }
}

/// A relocation of section `section` copied: its symbol renumbered, an alias's moved to the real
/// function's symbol.
fn renumbered(
    r: &elf::Rela64<object::Endianness>,
    m: &Module,
    section: usize,
    aliases: &HashMap<usize, usize>,
    sym_map: &[Option<SymbolIndex>],
) -> Result<Rel> {
    let old = r.r_sym(m.endian, false) as usize;
    let old = aliases.get(&old).copied().unwrap_or(old);
    let sym = if old == 0 {
        0
    } else {
        sym_map
            .get(old)
            .copied()
            .flatten()
            .ok_or_else(|| {
                anyhow!(
                    "{}: relocation against a symbol of a dropped side table",
                    String::from_utf8_lossy(m.names[section])
                )
            })?
            .0
    };
    Ok(Rel {
        r_offset: r.r_offset(m.endian),
        r_sym: sym,
        r_type: r.r_type(m.endian, false),
        r_addend: r.r_addend(m.endian),
    })
}

/// Renumbers the member sections of a `SHT_GROUP` section.
fn remap_group(
    bytes: &mut [u8],
    endian: object::Endianness,
    new_index: &[Option<SectionIndex>],
) -> Result<()> {
    use object::Endian;
    for word in bytes.chunks_exact_mut(4).skip(1) {
        let old = read_u64(endian, word) as u32;
        let new = new_index
            .get(old as usize)
            .copied()
            .flatten()
            .ok_or_else(|| anyhow!("a section group names a dropped section"))?;
        let b = if endian.is_big_endian() {
            new.0.to_be_bytes()
        } else {
            new.0.to_le_bytes()
        };
        word.copy_from_slice(&b);
    }
    Ok(())
}

/// Reads an unsigned integer of `bytes.len()` (4 or 8) bytes in `endian` order.
fn read_u64(endian: object::Endianness, bytes: &[u8]) -> u64 {
    use object::Endian;
    let fold = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
    if endian.is_big_endian() {
        bytes.iter().fold(0, fold)
    } else {
        bytes.iter().rev().fold(0, fold)
    }
}
