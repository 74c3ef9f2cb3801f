//! Writes the differ's selection as an ELF relocatable object.
//!
//! Livepatch relocations and patched-function records cannot travel through `ld -r` and the module link
//! as `.klp.rela` sections and `SHN_LIVEPATCH` symbols (linkers merge or drop them), so they are carried
//! in klpx's own side tables, which linkers treat as ordinary data with ordinary relocations:
//!
//! `.klpx.relocs`, 32-byte entries in target byte order:
//!   0  u64  place to relocate      (R_*_64 relocation against the patched section)
//!   8  u64  "object\0symbol\0source\0"  (R_*_64 relocation into `.klpx.strtab`)
//!   16 i64  addend
//!   24 u32  relocation type
//!   28 u32  reserved, 0
//!
//! `.klpx.funcs`, 24-byte entries:
//!   0  u64  new function           (R_*_64 relocation against its symbol)
//!   8  u64  "object\0old name\0source\0"
//!   16 u64  reserved, 0
//!
//! After the module link, the module writer turns each `.klpx.relocs` entry into a `.klp.rela` entry
//! against a `.klp.sym` symbol, and each `.klpx.funcs` entry into a `klp_func`.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow};
use klpx_arch::{Endian, Site};
use object::elf;
use object::write::StringId;
use object::write::elf::{FileHeader, Rel, SectionHeader, SectionIndex, Sym, SymbolIndex, Writer};

use crate::differ::{Diff, KlpTarget, OutTarget};
use crate::objfile::{ObjectFile, SymKind};

/// Size of one `.klpx.relocs` entry.
pub const KLPX_RELOC_SIZE: usize = 32;
/// Size of one `.klpx.funcs` entry.
pub const KLPX_FUNC_SIZE: usize = 24;

/// A livepatch relocation as recorded in the output (for the report and the side table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KlpRecord {
    pub piece: usize,
    pub section: String,
    pub offset: u64,
    pub r_type: u32,
    pub addend: i64,
    pub target: KlpTarget,
}

/// Lists the livepatch relocations of a diff, in output order.
pub fn klp_records(patched: &ObjectFile, diff: &Diff) -> Vec<KlpRecord> {
    let mut out = Vec::new();
    for (pi, piece) in diff.selection.pieces.iter().enumerate() {
        for r in &piece.relocs {
            if let OutTarget::Klp(t) = &r.target {
                out.push(KlpRecord {
                    piece: pi,
                    section: patched.sections[piece.section].name.to_string(),
                    offset: r.offset,
                    r_type: r.r_type,
                    addend: r.addend,
                    target: t.clone(),
                });
            }
        }
    }
    out
}

/// A relocation ready to write: output symbol index, offset, type, addend.
struct PlainRel {
    offset: u64,
    sym: SymbolIndex,
    r_type: u32,
    addend: i64,
}

/// Serialises the selection of `diff` (taken from `patched`) into an ELF relocatable object.
pub fn write_object(patched: &ObjectFile, diff: &Diff) -> Result<Vec<u8>> {
    write_object_aliased(patched, diff, None)
}

/// Like [`write_object`], and with `alias_prefix` also gives the n-th patched function (in the order of
/// `.klpx.funcs`) the global alias `<prefix><n>`, so that generated module code can name a new version
/// of a static function; the prefix must make the names unique within the module.
pub fn write_object_aliased(
    patched: &ObjectFile,
    diff: &Diff,
    alias_prefix: Option<&str>,
) -> Result<Vec<u8>> {
    let sel = &diff.selection;
    let backend = patched.backend();
    let big = backend.endian() == Endian::Big;
    let endian = if big {
        object::Endianness::Big
    } else {
        object::Endianness::Little
    };
    let put64 = |v: u64| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let put32 = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };

    // Contents of each piece.
    let mut contents: Vec<Vec<u8>> = Vec::with_capacity(sel.pieces.len());
    for p in &sel.pieces {
        let section = &patched.sections[p.section];
        let mut bytes = Vec::new();
        if !section.is_nobits() {
            for &(s, e) in &p.ranges {
                let part = section.data.get(s as usize..e as usize).ok_or_else(|| {
                    anyhow!(
                        "{}: range {s:#x}..{e:#x} lies outside its {} bytes",
                        section.name,
                        section.data.len()
                    )
                })?;
                bytes.extend_from_slice(part);
            }
        }
        contents.push(bytes);
    }

    // The pieces cut from each input section, and where each emitted patched symbol lands.
    let mut pieces_of: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, p) in sel.pieces.iter().enumerate() {
        pieces_of.entry(p.section).or_default().push(i);
    }
    let locate = |sec: usize, off: u64| -> Option<(usize, u64)> {
        pieces_of
            .get(&sec)?
            .iter()
            .find_map(|&i| sel.pieces[i].map(off).map(|o| (i, o)))
    };
    let mut sym_place: HashMap<usize, (usize, u64)> = HashMap::new();
    for &s in &sel.symbols {
        let sym = &patched.symbols[s];
        let sec = sym.section.expect("emitted symbols are defined");
        // The piece that holds the whole symbol (several carved pieces may hold its start).
        let end = sym.value + sym.size;
        let holds = |i: &usize| {
            let p = &sel.pieces[*i];
            p.ranges.len() == 1 && p.ranges[0].0 <= sym.value && end <= p.ranges[0].1
        };
        let whole = pieces_of
            .get(&sec)
            .and_then(|v| v.iter().copied().find(holds));
        let place = whole
            .map(|i| (i, sym.value - sel.pieces[i].ranges[0].0))
            .ok_or_else(|| {
                anyhow!(
                    "internal: symbol {} is not inside an emitted piece",
                    sym.name
                )
            })?;
        sym_place.insert(s, place);
    }

    // Side-table strings and entries.
    let mut strtab = Vec::new();
    let mut add_string = |t: &KlpTarget| {
        let at = strtab.len() as u64;
        for part in [
            t.object.as_str(),
            t.symbol.as_str(),
            t.source.as_deref().unwrap_or(""),
        ] {
            strtab.extend_from_slice(part.as_bytes());
            strtab.push(0);
        }
        at
    };
    let klp = klp_records(patched, diff);
    let klp_strings: Vec<u64> = klp.iter().map(|k| add_string(&k.target)).collect();
    let funcs: Vec<(usize, u64)> = sel
        .patched_functions
        .iter()
        .map(|(new, old_name)| {
            let t = KlpTarget {
                object: diff.object_name.clone(),
                symbol: old_name.clone(),
                source: patched.source_name.map(str::to_string),
            };
            (*new, add_string(&t))
        })
        .collect();

    // Section names and symbol names must outlive the writer.
    let piece_names: Vec<&str> = sel
        .pieces
        .iter()
        .map(|p| patched.sections[p.section].name)
        .collect();
    let rela_names: Vec<String> = piece_names.iter().map(|n| format!(".rela{n}")).collect();
    let mut undefined: Vec<String> = Vec::new();
    let mut undefined_index: HashMap<String, usize> = HashMap::new();
    for p in &sel.pieces {
        for r in &p.relocs {
            if let OutTarget::Undefined(n) = &r.target
                && !undefined_index.contains_key(n)
            {
                undefined_index.insert(n.clone(), undefined.len());
                undefined.push(n.clone());
            }
        }
    }
    let has_side = !klp.is_empty() || !funcs.is_empty();

    let mut buffer = Vec::new();
    let mut w = Writer::new(endian, true, &mut buffer);
    w.reserve_file_header();
    w.reserve_null_section_index();
    let piece_index: Vec<SectionIndex> = sel
        .pieces
        .iter()
        .map(|_| w.reserve_section_index())
        .collect();
    let piece_name_ids: Vec<StringId> = piece_names
        .iter()
        .map(|n| w.add_section_name(n.as_bytes()))
        .collect();

    // Plain relocations per piece (everything but livepatch ones).
    let mut plain: Vec<Vec<PlainRel>> = Vec::with_capacity(sel.pieces.len());
    // Symbol indexes are assigned below; first count and name them.
    w.reserve_null_symbol_index();
    let file_name = patched.source_name.map(|n| w.add_string(n.as_bytes()));
    let file_sym = file_name.map(|_| w.reserve_symbol_index(None));
    let section_syms: Vec<SymbolIndex> = piece_index
        .iter()
        .map(|&si| w.reserve_symbol_index(Some(si)))
        .collect();
    let strtab_sec = has_side.then(|| w.reserve_section_index());
    let strtab_sym = strtab_sec.map(|si| w.reserve_symbol_index(Some(si)));
    let mut out_sym: HashMap<usize, SymbolIndex> = HashMap::new();
    let mut sym_names: Vec<(usize, StringId)> = Vec::new();
    let (locals, globals): (Vec<usize>, Vec<usize>) = sel
        .symbols
        .iter()
        .copied()
        .partition(|&s| !patched.symbols[s].global);
    for &s in &locals {
        let id = w.add_string(patched.symbols[s].name.as_bytes());
        let (piece, _) = sym_place[&s];
        out_sym.insert(s, w.reserve_symbol_index(Some(piece_index[piece])));
        sym_names.push((s, id));
    }
    let num_local = w.symbol_count();
    for &s in &globals {
        let id = w.add_string(patched.symbols[s].name.as_bytes());
        let (piece, _) = sym_place[&s];
        out_sym.insert(s, w.reserve_symbol_index(Some(piece_index[piece])));
        sym_names.push((s, id));
    }
    let alias_names: Vec<String> = alias_prefix
        .map(|p| {
            (0..sel.patched_functions.len())
                .map(|n| format!("{p}{n}"))
                .collect()
        })
        .unwrap_or_default();
    let alias_ids: Vec<(usize, StringId)> = alias_names
        .iter()
        .zip(&sel.patched_functions)
        .map(|(name, (s, _))| {
            let id = w.add_string(name.as_bytes());
            let (piece, _) = sym_place[s];
            w.reserve_symbol_index(Some(piece_index[piece]));
            (*s, id)
        })
        .collect();
    let undefined_ids: Vec<(StringId, SymbolIndex)> = undefined
        .iter()
        .map(|n| (w.add_string(n.as_bytes()), w.reserve_symbol_index(None)))
        .collect();

    for (pi, p) in sel.pieces.iter().enumerate() {
        let in_code = patched.sections[p.section].is_exec();
        let site = |offset: u64| {
            if in_code {
                Site::Code {
                    bytes: &contents[pi],
                    offset,
                }
            } else {
                Site::Data
            }
        };
        let mut rels = Vec::new();
        for r in &p.relocs {
            let (sym, addend) = match &r.target {
                OutTarget::Symbol(s) => (
                    *out_sym
                        .get(s)
                        .ok_or_else(|| anyhow!("internal: relocation to unemitted symbol"))?,
                    r.addend,
                ),
                OutTarget::Location(sec) => {
                    let off = backend.target_offset(r.r_type, r.addend, site(r.offset));
                    let (tp, mapped) = u64::try_from(off)
                        .ok()
                        .and_then(|o| locate(*sec, o))
                        .ok_or_else(|| {
                            anyhow!(
                                "internal: relocation in {} at {:#x} points into {} at {off:#x}, which is not emitted",
                                piece_names[pi],
                                r.offset,
                                patched.sections[*sec].name
                            )
                        })?;
                    (section_syms[tp], r.addend + mapped as i64 - off)
                }
                OutTarget::Undefined(n) => (undefined_ids[undefined_index[n]].1, r.addend),
                OutTarget::NoSymbol => (SymbolIndex(0), r.addend),
                OutTarget::Klp(_) | OutTarget::Dropped(_) => continue,
            };
            rels.push(PlainRel {
                offset: r.offset,
                sym,
                r_type: r.r_type,
                addend,
            });
        }
        plain.push(rels);
    }

    let rela_index: Vec<Option<(SectionIndex, StringId)>> = plain
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (!r.is_empty()).then(|| {
                (
                    w.reserve_section_index(),
                    w.add_section_name(rela_names[i].as_bytes()),
                )
            })
        })
        .collect();
    let strtab_name = strtab_sec.map(|_| w.add_section_name(b".klpx.strtab"));
    let side = |w: &mut Writer, n: usize, name: &'static [u8], rname: &'static [u8]| {
        (n > 0).then(|| {
            (
                w.reserve_section_index(),
                w.add_section_name(name),
                w.reserve_section_index(),
                w.add_section_name(rname),
            )
        })
    };
    let relocs_sec = side(&mut w, klp.len(), b".klpx.relocs", b".rela.klpx.relocs");
    let funcs_sec = side(&mut w, funcs.len(), b".klpx.funcs", b".rela.klpx.funcs");
    w.reserve_symtab_section_index();
    w.reserve_strtab_section_index();
    w.reserve_shstrtab_section_index();

    // File layout.
    let piece_offset: Vec<u64> = sel
        .pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let s = &patched.sections[p.section];
            if s.is_nobits() {
                0
            } else {
                w.reserve(contents[i].len() as u64, s.align.max(1))
            }
        })
        .collect();
    let rela_offset: Vec<u64> = plain
        .iter()
        .map(|r| {
            if r.is_empty() {
                0
            } else {
                w.reserve_relocations(r.len(), true)
            }
        })
        .collect();
    let strtab_offset = strtab_sec.map(|_| w.reserve(strtab.len() as u64, 1));
    let relocs_offset = relocs_sec.map(|_| {
        (
            w.reserve((klp.len() * KLPX_RELOC_SIZE) as u64, 8),
            w.reserve_relocations(klp.len() * 2, true),
        )
    });
    let funcs_offset = funcs_sec.map(|_| {
        (
            w.reserve((funcs.len() * KLPX_FUNC_SIZE) as u64, 8),
            w.reserve_relocations(funcs.len() * 2, true),
        )
    });
    w.reserve_symtab();
    w.reserve_strtab().context("laying out .strtab")?;
    w.reserve_shstrtab().context("laying out .shstrtab")?;
    w.reserve_section_headers();

    // Contents.
    w.write_file_header(&FileHeader {
        os_abi: elf::OsAbi(patched.os_abi),
        abi_version: 0,
        e_type: elf::ET_REL,
        e_machine: elf::Machine(backend.elf_machine()),
        e_entry: 0,
        e_flags: elf::FileFlags(patched.e_flags),
    })
    .context("writing the ELF header")?;
    for (i, p) in sel.pieces.iter().enumerate() {
        let s = &patched.sections[p.section];
        if !s.is_nobits() {
            w.write_align(s.align.max(1));
            w.write(&contents[i]);
        }
    }
    for rels in &plain {
        if rels.is_empty() {
            continue;
        }
        w.write_align_relocation();
        for r in rels {
            w.write_relocation(
                true,
                &Rel {
                    r_offset: r.offset,
                    r_sym: r.sym.0,
                    r_type: elf::RelocationType(r.r_type),
                    r_addend: r.addend,
                },
            );
        }
    }
    if strtab_sec.is_some() {
        w.write_align(1);
        w.write(&strtab);
    }
    let abs64 = elf::RelocationType(backend.abs64());
    if relocs_sec.is_some() {
        w.write_align(8);
        for k in &klp {
            let mut entry = Vec::with_capacity(KLPX_RELOC_SIZE);
            entry.extend_from_slice(&put64(0));
            entry.extend_from_slice(&put64(0));
            entry.extend_from_slice(&put64(k.addend as u64));
            entry.extend_from_slice(&put32(k.r_type));
            entry.extend_from_slice(&put32(0));
            w.write(&entry);
        }
        w.write_align_relocation();
        for (n, k) in klp.iter().enumerate() {
            let base = (n * KLPX_RELOC_SIZE) as u64;
            w.write_relocation(
                true,
                &Rel {
                    r_offset: base,
                    r_sym: section_syms[k.piece].0,
                    r_type: abs64,
                    r_addend: k.offset as i64,
                },
            );
            w.write_relocation(
                true,
                &Rel {
                    r_offset: base + 8,
                    r_sym: strtab_sym.expect("side strings").0,
                    r_type: abs64,
                    r_addend: klp_strings[n] as i64,
                },
            );
        }
    }
    if funcs_sec.is_some() {
        w.write_align(8);
        for _ in &funcs {
            w.write(&[0u8; KLPX_FUNC_SIZE]);
        }
        w.write_align_relocation();
        for (n, (sym, name)) in funcs.iter().enumerate() {
            let base = (n * KLPX_FUNC_SIZE) as u64;
            w.write_relocation(
                true,
                &Rel {
                    r_offset: base,
                    r_sym: out_sym[sym].0,
                    r_type: abs64,
                    r_addend: 0,
                },
            );
            w.write_relocation(
                true,
                &Rel {
                    r_offset: base + 8,
                    r_sym: strtab_sym.expect("side strings").0,
                    r_type: abs64,
                    r_addend: *name as i64,
                },
            );
        }
    }

    w.write_null_symbol();
    if let (Some(name), Some(_)) = (file_name, file_sym) {
        w.write_symbol(&Sym {
            st_name: w.string_offset(Some(name)),
            section: None,
            st_info: elf::SymbolInfo::new(elf::STB_LOCAL, elf::STT_FILE),
            st_other: elf::SymbolOther(0),
            st_shndx: elf::SHN_ABS,
            st_value: 0,
            st_size: 0,
        });
    }
    let section_sym = |si: SectionIndex| Sym {
        st_name: 0,
        section: Some(si.0),
        st_info: elf::SymbolInfo::new(elf::STB_LOCAL, elf::STT_SECTION),
        st_other: elf::SymbolOther(0),
        st_shndx: elf::SHN_UNDEF,
        st_value: 0,
        st_size: 0,
    };
    for &si in &piece_index {
        w.write_symbol(&section_sym(si));
    }
    if let Some(si) = strtab_sec {
        w.write_symbol(&section_sym(si));
    }
    for &(s, id) in &sym_names {
        let sym = &patched.symbols[s];
        let (piece, value) = sym_place[&s];
        let bind = if !sym.global {
            elf::STB_LOCAL
        } else if sym.weak {
            elf::STB_WEAK
        } else {
            elf::STB_GLOBAL
        };
        let kind = match sym.kind {
            SymKind::Func => elf::STT_FUNC,
            SymKind::Object => elf::STT_OBJECT,
            _ => elf::STT_NOTYPE,
        };
        w.write_symbol(&Sym {
            st_name: w.string_offset(Some(id)),
            section: Some(piece_index[piece].0),
            st_info: elf::SymbolInfo::new(bind, kind),
            st_other: elf::SymbolOther(sym.st_other),
            st_shndx: elf::SHN_UNDEF,
            st_value: value,
            st_size: sym.size,
        });
    }
    for &(s, id) in &alias_ids {
        let sym = &patched.symbols[s];
        let (piece, value) = sym_place[&s];
        w.write_symbol(&Sym {
            st_name: w.string_offset(Some(id)),
            section: Some(piece_index[piece].0),
            st_info: elf::SymbolInfo::new(elf::STB_GLOBAL, elf::STT_FUNC),
            st_other: elf::SymbolOther(sym.st_other),
            st_shndx: elf::SHN_UNDEF,
            st_value: value,
            st_size: sym.size,
        });
    }
    for &(id, _) in &undefined_ids {
        w.write_symbol(&Sym {
            st_name: w.string_offset(Some(id)),
            section: None,
            st_info: elf::SymbolInfo::new(elf::STB_GLOBAL, elf::STT_NOTYPE),
            st_other: elf::SymbolOther(0),
            st_shndx: elf::SHN_UNDEF,
            st_value: 0,
            st_size: 0,
        });
    }
    w.write_strtab();
    w.write_shstrtab();

    // Section headers, in the order their indexes were reserved.
    w.write_null_section_header();
    let link_of = |input: usize| -> Option<SectionIndex> {
        sel.pieces
            .iter()
            .position(|q| q.section == input)
            .map(|i| piece_index[i])
    };
    for (i, p) in sel.pieces.iter().enumerate() {
        let s = &patched.sections[p.section];
        let link = p.link.and_then(link_of);
        let mut flags = s.flags & !elf::SHF_GROUP.0;
        if link.is_none() {
            flags &= !elf::SHF_LINK_ORDER.0;
        }
        w.write_section_header(&SectionHeader {
            sh_name: w.section_name_offset(Some(piece_name_ids[i])),
            sh_type: elf::SectionType(s.sh_type),
            sh_flags: elf::SectionFlags(flags),
            sh_addr: 0,
            sh_offset: piece_offset[i],
            sh_size: p.size(),
            sh_link: link.map_or(0, |l| l.0),
            sh_info: 0,
            sh_addralign: s.align.max(1),
            sh_entsize: s.entsize,
        });
    }
    if let (Some(name), Some(off)) = (strtab_name, strtab_offset) {
        let sh_name = w.section_name_offset(Some(name));
        w.write_section_header(&SectionHeader {
            sh_name,
            sh_type: elf::SHT_PROGBITS,
            sh_flags: elf::SectionFlags(0),
            sh_addr: 0,
            sh_offset: off,
            sh_size: strtab.len() as u64,
            sh_link: 0,
            sh_info: 0,
            sh_addralign: 1,
            sh_entsize: 0,
        });
    }
    let symtab = w.symtab_index();
    for (i, r) in rela_index.iter().enumerate() {
        if let Some((_, name)) = r {
            w.write_relocation_section_header(
                *name,
                piece_index[i],
                symtab,
                rela_offset[i],
                plain[i].len(),
                true,
            );
        }
    }
    for (sec, offs, count, size) in [
        (relocs_sec, relocs_offset, klp.len(), KLPX_RELOC_SIZE),
        (funcs_sec, funcs_offset, funcs.len(), KLPX_FUNC_SIZE),
    ] {
        let (Some((data_index, name, _, rname)), Some((data_off, rel_off))) = (sec, offs) else {
            continue;
        };
        let sh_name = w.section_name_offset(Some(name));
        w.write_section_header(&SectionHeader {
            sh_name,
            sh_type: elf::SHT_PROGBITS,
            sh_flags: elf::SectionFlags(0),
            sh_addr: 0,
            sh_offset: data_off,
            sh_size: (count * size) as u64,
            sh_link: 0,
            sh_info: 0,
            sh_addralign: 8,
            sh_entsize: size as u64,
        });
        w.write_relocation_section_header(rname, data_index, symtab, rel_off, count * 2, true);
    }
    w.write_symtab_section_header(num_local);
    w.write_strtab_section_header();
    w.write_shstrtab_section_header();
    drop(w);
    Ok(buffer)
}
