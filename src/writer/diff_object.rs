//! Writes the differ's selection as an ELF relocatable object.
//!
//! Livepatch relocations and patched-function records cannot travel through `ld -r` and the module link
//! as `.klp.rela` sections and `SHN_LIVEPATCH` symbols, so they are carried in klpx's side tables
//! ([`super::side_table`] defines their layout). After the module link, the module writer turns each
//! `.klpx.relocs` entry into a `.klp.rela` entry against a `.klp.sym` symbol, and each `.klpx.funcs`
//! entry into a `klp_func`.

use std::borrow::Cow;
use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use klpx_arch::{Endian, RelocClass, Site};
use object::elf;

use super::side_table;
use crate::differ::{Diff, KlpTarget, OutReloc, OutTarget};
use crate::error::UserError;
use crate::objfile::{ObjectFile, SymKind};

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
    klp_relocs(diff)
        .map(|(pi, r, t)| KlpRecord {
            piece: pi,
            section: patched.sections[diff.selection.pieces[pi].section]
                .name
                .to_string(),
            offset: r.offset,
            r_type: r.r_type,
            addend: r.addend,
            target: t.clone(),
        })
        .collect()
}

/// The livepatch relocations of a diff in output order, borrowed: piece index, relocation, target.
fn klp_relocs(diff: &Diff) -> impl Iterator<Item = (usize, &OutReloc, &KlpTarget)> {
    diff.selection
        .pieces
        .iter()
        .enumerate()
        .flat_map(|(pi, piece)| {
            piece.relocs.iter().filter_map(move |r| match &r.target {
                OutTarget::Klp(t) => Some((pi, r, &**t)),
                _ => None,
            })
        })
}

/// An emitted patched symbol: the piece it lands in, its value there, its name and index in the output.
#[derive(Clone, Copy)]
struct Placed {
    sym: usize,
    piece: usize,
    value: u64,
    name: u32,
    index: u32,
}

/// The position of patched symbol `s` in `placed`.
fn slot(placed: &[Placed], s: usize) -> usize {
    placed
        .binary_search_by_key(&s, |p| p.sym)
        .expect("emitted symbols are placed")
}

/// Size of an ELF64 file header, section header, symbol and `Rela` entry.
const EHDR: u64 = 64;
const SHDR: u64 = 64;
const SYM: u64 = 24;
const RELA: u64 = 24;

/// Appends `name` and a NUL to a string table and returns its offset.
fn add_str(table: &mut Vec<u8>, name: &[u8]) -> u32 {
    let at = table.len() as u32;
    table.extend_from_slice(name);
    table.push(0);
    at
}

/// Appends integers in the output's byte order.
struct Out {
    buf: Vec<u8>,
    big: bool,
}

impl Out {
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    /// Pads with zeros up to file offset `at`.
    fn pad_to(&mut self, at: u64) {
        debug_assert!(self.buf.len() as u64 <= at);
        self.buf.resize(at as usize, 0);
    }
    fn rela(&mut self, offset: u64, sym: u32, r_type: u32, addend: i64) {
        self.u64(offset);
        self.u64(u64::from(sym) << 32 | u64::from(r_type));
        self.u64(addend as u64);
    }
    fn sym(&mut self, name: u32, info: u8, other: u8, shndx: u16, value: u64, size: u64) {
        self.u32(name);
        self.buf.extend_from_slice(&[info, other]);
        self.u16(shndx);
        self.u64(value);
        self.u64(size);
    }
    #[allow(clippy::too_many_arguments)]
    fn shdr(
        &mut self,
        name: u32,
        sh_type: u32,
        flags: u64,
        offset: u64,
        size: u64,
        link: u32,
        info: u32,
        align: u64,
        entsize: u64,
    ) {
        self.u32(name);
        self.u32(sh_type);
        self.u64(flags);
        self.u64(0);
        self.u64(offset);
        self.u64(size);
        self.u32(link);
        self.u32(info);
        self.u64(align);
        self.u64(entsize);
    }
}

/// Where each part of the output goes: file offset bumps, aligned.
struct Layout(u64);

impl Layout {
    fn take(&mut self, size: u64, align: u64) -> u64 {
        let at = self.0.next_multiple_of(align.max(1));
        self.0 = at + size;
        at
    }
}

/// Serialises the selection of `diff` (taken from `patched`) into an ELF relocatable object.
pub fn write_object(patched: &ObjectFile, diff: &Diff) -> Result<Vec<u8>> {
    write_object_aliased(patched, diff, None, &[])
}

/// Names of the global aliases klpx gives functions so that the generated module source can name
/// them (a new version of a static function, a callback wrapper). They start with this prefix, which
/// the module writer removes again from the final `.ko` (relocations move to the function's own
/// symbol), so that kallsyms, oopses, `perf` and `/proc/<pid>/stack` show the real names.
pub const ALIAS_PREFIX: &str = "__klpx_alias_";

/// Like [`write_object`], and with `alias_prefix` also gives the n-th patched function (in the order of
/// `.klpx.funcs`) the global alias `<prefix><n>`, so that generated module code can name a new version
/// of a static function; the prefix must make the names unique within the module. `extra` names more
/// aliases: (index of a selected symbol of `patched`, alias name).
///
/// The ELF file is written directly: the pieces' bytes are borrowed from the input and the tables are
/// laid out once, so the output buffer is the only large allocation.
pub fn write_object_aliased(
    patched: &ObjectFile,
    diff: &Diff,
    alias_prefix: Option<&str>,
    extra: &[(usize, String)],
) -> Result<Vec<u8>> {
    let sel = &diff.selection;
    let backend = patched.backend();

    // Contents of each piece: borrowed from the input unless cut from several ranges.
    let mut contents: Vec<Cow<[u8]>> = Vec::with_capacity(sel.pieces.len());
    for p in &sel.pieces {
        let section = &patched.sections[p.section];
        if section.is_nobits() {
            contents.push(Cow::Borrowed(&[]));
            continue;
        }
        let part = |&(s, e): &(u64, u64)| {
            section.data.get(s as usize..e as usize).ok_or_else(|| {
                anyhow!(
                    "{}: range {s:#x}..{e:#x} lies outside its {} bytes",
                    section.name,
                    section.data.len()
                )
            })
        };
        let mut bytes = match p.ranges.as_slice() {
            [one] => Cow::Borrowed(part(one)?),
            ranges => {
                let mut bytes = Vec::with_capacity(p.size() as usize);
                for range in ranges {
                    bytes.extend_from_slice(part(range)?);
                }
                Cow::Owned(bytes)
            }
        };
        if !p.edits.is_empty() {
            let owned = bytes.to_mut();
            for &(at, b) in &p.edits {
                let slot = owned.get_mut(at as usize).ok_or_else(|| {
                    anyhow!("internal: an instruction rewrite beyond {}", section.name)
                })?;
                *slot = b;
            }
        }
        contents.push(bytes);
    }

    // The pieces cut from each input section: (section, piece), sorted.
    let mut by_section: Vec<(usize, usize)> = sel
        .pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (p.section, i))
        .collect();
    by_section.sort_unstable();
    let pieces_of = |sec: usize| {
        let lo = by_section.partition_point(|&(s, _)| s < sec);
        let hi = lo + by_section[lo..].partition_point(|&(s, _)| s == sec);
        by_section[lo..hi].iter().map(|&(_, i)| i)
    };
    // The piece that holds input offset `off` of section `sec`: inside a range first, since the end
    // of one carved piece (a `.toc` entry, a string) is the start of the next, which after the link
    // is somewhere else; only a reference to the very end of the emitted content (a function's end,
    // as ORC marks it) takes the end of a range.
    let locate = |sec: usize, off: u64| -> Option<(usize, u64)> {
        pieces_of(sec)
            .find_map(|i| sel.pieces[i].map_inside(off).map(|o| (i, o)))
            .or_else(|| pieces_of(sec).find_map(|i| sel.pieces[i].map(off).map(|o| (i, o))))
    };
    // A section emitted whole keeps every offset, so any reference relative to it keeps its meaning,
    // even one whose target lies outside it (an s390 jump table entry `.quad .L5-.L4` is `R_390_PC64`
    // against the function's section with the entry's own offset in the addend).
    let whole = |sec: usize| -> Option<usize> {
        let size = patched.sections[sec].size;
        pieces_of(sec).find(|&i| sel.pieces[i].ranges == [(0, size)])
    };
    let in_code = |pi: usize| patched.sections[sel.pieces[pi].section].is_exec();
    // Where a `Location` relocation of piece `pi` lands: (piece, offset in it, target offset in the
    // input section as the architecture reads the addend).
    let location = |pi: usize, r: &OutReloc, sec: usize| -> Result<(usize, u64, i64)> {
        let site = if in_code(pi) {
            Site::Code {
                bytes: &contents[pi],
                offset: r.offset,
            }
        } else {
            Site::Data
        };
        let off = backend.target_offset(r.r_type, r.addend, site);
        u64::try_from(off)
            .ok()
            .and_then(|o| locate(sec, o))
            .or_else(|| whole(sec).map(|w| (w, off as u64)))
            .map(|(tp, mapped)| (tp, mapped, off))
            .ok_or_else(|| {
                let (from, to) = (
                    patched.sections[sel.pieces[pi].section].name,
                    patched.sections[sec].name,
                );
                let size = patched.sections[sec].size;
                if off < 0 || off as u64 > size {
                    // Only the addend says where: the target is outside the section, so which of
                    // its data the code means cannot be told (a corrupt addend, or address
                    // arithmetic klpx cannot carry into a module).
                    UserError::new(format!(
                        "{}: relocation in {from} at {:#x} points at {to}{off:+#x}, outside that section ({size:#x} bytes); klpx cannot tell which data it refers to",
                        patched.path, r.offset
                    ))
                    .into()
                } else {
                    anyhow!(
                        "internal: relocation in {from} at {:#x} points into {to} at {off:#x}, which is not emitted",
                        r.offset
                    )
                }
            })
    };
    // A GOT entry is made per symbol, and the addend only moves the reference to it (s390
    // `R_390_GOTENT`): a reference to a place without a symbol of its own (a `.LC` string label)
    // gets a local anchor symbol there, never "section + offset", which would read the section's
    // entry.
    let mut anchors: Vec<(usize, u64)> = Vec::new();
    for (pi, p) in sel.pieces.iter().enumerate() {
        for r in &p.relocs {
            if let OutTarget::Location(sec) = r.target
                && backend.reloc_class(r.r_type) == RelocClass::Got
            {
                let (tp, mapped, _) = location(pi, r, sec)?;
                anchors.push((tp, mapped));
            }
        }
    }
    anchors.sort_unstable();
    anchors.dedup();
    // Where each emitted patched symbol lands, sorted by symbol; names and indexes come later.
    let mut placed: Vec<Placed> = Vec::with_capacity(sel.symbols.len());
    for &s in &sel.symbols {
        let sym = &patched.symbols[s];
        let sec = sym.sec().expect("emitted symbols are defined");
        // The piece that holds the whole symbol (several carved pieces may hold its start).
        let end = sym.value + sym.size;
        let holds = |i: &usize| {
            let p = &sel.pieces[*i];
            p.ranges.len() == 1 && p.ranges[0].0 <= sym.value && end <= p.ranges[0].1
        };
        let piece = pieces_of(sec).find(holds).ok_or_else(|| {
            anyhow!(
                "internal: symbol {} is not inside an emitted piece",
                sym.name
            )
        })?;
        placed.push(Placed {
            sym: s,
            piece,
            value: sym.value - sel.pieces[piece].ranges[0].0,
            name: 0,
            index: 0,
        });
    }
    placed.sort_unstable_by_key(|p| p.sym);

    // Side-table strings and entries.
    let mut side_strings = Vec::new();
    let mut add_target = |object: &str, symbol: &str, source: Option<&str>| {
        side_table::add_names(&mut side_strings, object, symbol, source)
    };
    let klp: Vec<(usize, &OutReloc, &KlpTarget)> = klp_relocs(diff).collect();
    // Relocations to one symbol share their target and its strings.
    let mut shared: HashMap<*const KlpTarget, u64> = HashMap::new();
    let klp_strings: Vec<u64> = klp
        .iter()
        .map(|&(_, _, t)| {
            *shared
                .entry(t)
                .or_insert_with(|| add_target(&t.object, &t.symbol, t.source.as_deref()))
        })
        .collect();
    let funcs: Vec<(usize, u64)> = sel
        .patched_functions
        .iter()
        .map(|(new, old_name)| {
            let at = add_target(&diff.object_name, old_name, patched.source_name);
            (*new, at)
        })
        .collect();
    let has_side = !klp.is_empty() || !funcs.is_empty();

    // Symbols the module loader resolves, sorted and once each.
    let mut undefined: Vec<&str> = sel
        .pieces
        .iter()
        .flat_map(|p| &p.relocs)
        .filter_map(|r| match &r.target {
            OutTarget::Undefined(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    undefined.sort_unstable();
    undefined.dedup();

    // Section indexes: the pieces, the side strings, the pieces' relocations, the side tables with
    // theirs, then the symbol and string tables.
    // A livepatch relocation goes into the side table; where the module's link reads
    // relocations (`Backend::klp_placeholder`), a no-op one with the same addend stays in place.
    let placeholder = backend.klp_placeholder();
    let emitted = |r: &&OutReloc| match r.target {
        OutTarget::Dropped(_) => false,
        OutTarget::Klp(_) => placeholder.is_some(),
        _ => true,
    };
    let plain_count: Vec<usize> = sel
        .pieces
        .iter()
        .map(|p| p.relocs.iter().filter(emitted).count())
        .collect();
    let piece_index = |i: usize| (1 + i) as u32;
    let mut next = 1 + sel.pieces.len() as u32;
    let mut take = |n: u32| {
        let at = next;
        next += n;
        at
    };
    let side_index = has_side.then(|| take(1));
    let rela_index: Vec<Option<u32>> = plain_count
        .iter()
        .map(|&n| (n > 0).then(|| take(1)))
        .collect();
    let relocs_index = (!klp.is_empty()).then(|| take(2));
    let funcs_index = (!funcs.is_empty()).then(|| take(2));
    let symtab_index = take(3);
    let (strtab_index, shstrtab_index) = (symtab_index + 1, symtab_index + 2);
    let section_count = next;
    if section_count >= u32::from(elf::SHN_LORESERVE) {
        bail!(
            "{}: the output would have {section_count} sections, more than ELF's 16-bit section indexes hold",
            patched.path
        );
    }

    // Symbol indexes and names: null, file, section symbols, local symbols, then globals, aliases and
    // undefined symbols.
    let mut strtab = vec![0u8];
    let file_name = patched
        .source_name
        .map(|n| add_str(&mut strtab, n.as_bytes()));
    let mut symbol_count = 1 + u32::from(file_name.is_some());
    let section_sym = |i: usize| 1 + u32::from(file_name.is_some()) + i as u32;
    symbol_count += sel.pieces.len() as u32;
    let side_sym = side_index.map(|_| {
        symbol_count += 1;
        symbol_count - 1
    });
    let first_anchor = symbol_count;
    let anchor_names: Vec<u32> = (0..anchors.len())
        .map(|n| add_str(&mut strtab, format!("__klpx_got_{n}").as_bytes()))
        .collect();
    symbol_count += anchors.len() as u32;
    let mut num_local = 0;
    for global in [false, true] {
        if global {
            num_local = symbol_count;
        }
        for &s in &sel.symbols {
            let sym = &patched.symbols[s];
            if sym.global != global {
                continue;
            }
            let at = slot(&placed, s);
            placed[at].name = add_str(&mut strtab, sym.name.as_bytes());
            placed[at].index = symbol_count;
            symbol_count += 1;
        }
    }
    let mut aliases: Vec<(usize, u32)> = match alias_prefix {
        Some(prefix) => sel
            .patched_functions
            .iter()
            .enumerate()
            .map(|(n, (s, _))| {
                let name = add_str(&mut strtab, format!("{prefix}{n}").as_bytes());
                (*s, name)
            })
            .collect(),
        None => Vec::new(),
    };
    for (s, alias) in extra {
        if !sel.symbols.contains(s) {
            bail!(
                "{}: {} is not in the output object; it cannot get the alias {alias}",
                patched.path,
                patched.symbols.get(*s).map_or("?", |x| x.name)
            );
        }
        aliases.push((*s, add_str(&mut strtab, alias.as_bytes())));
    }
    symbol_count += aliases.len() as u32;
    let first_undefined = symbol_count;
    let undefined_names: Vec<u32> = undefined
        .iter()
        .map(|n| add_str(&mut strtab, n.as_bytes()))
        .collect();
    symbol_count += undefined.len() as u32;

    // Section names. A piece with relocations shares its name with theirs: ".rela<name>" + 5.
    let mut shstrtab = vec![0u8];
    let piece_names: Vec<(u32, Option<u32>)> = sel
        .pieces
        .iter()
        .zip(&rela_index)
        .map(|(p, rela)| {
            let name = patched.sections[p.section].name.as_bytes();
            match rela {
                Some(_) => {
                    let at = shstrtab.len() as u32;
                    shstrtab.extend_from_slice(b".rela");
                    add_str(&mut shstrtab, name);
                    (at + 5, Some(at))
                }
                None => (add_str(&mut shstrtab, name), None),
            }
        })
        .collect();
    let side_name = side_index.map(|_| add_str(&mut shstrtab, side_table::STRTAB.as_bytes()));
    // `.rela.klpx.relocs`: the table's own name is the tail of its relocations' (at + 5).
    let relocs_names = relocs_index.map(|_| {
        let at = add_str(
            &mut shstrtab,
            format!(".rela{}", side_table::RELOCS).as_bytes(),
        );
        (at + 5, at)
    });
    let funcs_names = funcs_index.map(|_| {
        let at = add_str(
            &mut shstrtab,
            format!(".rela{}", side_table::FUNCS).as_bytes(),
        );
        (at + 5, at)
    });
    let symtab_name = add_str(&mut shstrtab, b".symtab");
    let strtab_name = add_str(&mut shstrtab, b".strtab");
    let shstrtab_name = add_str(&mut shstrtab, b".shstrtab");

    // File layout.
    let mut layout = Layout(EHDR);
    let piece_offset: Vec<u64> = sel
        .pieces
        .iter()
        .zip(&contents)
        .map(|(p, c)| {
            let s = &patched.sections[p.section];
            if s.is_nobits() {
                0
            } else {
                layout.take(c.len() as u64, u64::from(s.align))
            }
        })
        .collect();
    let rela_offset: Vec<u64> = plain_count
        .iter()
        .map(|&n| {
            if n == 0 {
                0
            } else {
                layout.take(n as u64 * RELA, 8)
            }
        })
        .collect();
    let side_offset = side_index.map(|_| layout.take(side_strings.len() as u64, 1));
    let relocs_offset = relocs_index.map(|_| {
        let n = klp.len() as u64;
        (
            layout.take(n * side_table::RELOC_SIZE as u64, 8),
            layout.take(2 * n * RELA, 8),
        )
    });
    let funcs_offset = funcs_index.map(|_| {
        let n = funcs.len() as u64;
        (
            layout.take(n * side_table::FUNC_SIZE as u64, 8),
            layout.take(2 * n * RELA, 8),
        )
    });
    let symtab_offset = layout.take(u64::from(symbol_count) * SYM, 8);
    let strtab_offset = layout.take(strtab.len() as u64, 1);
    let shstrtab_offset = layout.take(shstrtab.len() as u64, 1);
    let shoff = layout.take(u64::from(section_count) * SHDR, 8);

    let mut out = Out {
        buf: Vec::with_capacity(layout.0 as usize),
        big: backend.endian() == Endian::Big,
    };

    // File header.
    out.buf.extend_from_slice(&[
        0x7f,
        b'E',
        b'L',
        b'F',
        elf::ELFCLASS64.0,
        if out.big {
            elf::ELFDATA2MSB.0
        } else {
            elf::ELFDATA2LSB.0
        },
        elf::EV_CURRENT.0,
        patched.os_abi,
    ]);
    out.buf.extend_from_slice(&[0; 8]);
    out.u16(elf::ET_REL.0);
    out.u16(backend.elf_machine());
    out.u32(u32::from(elf::EV_CURRENT.0));
    out.u64(0); // e_entry
    out.u64(0); // e_phoff
    out.u64(shoff);
    out.u32(patched.e_flags);
    out.u16(EHDR as u16);
    out.u16(0); // e_phentsize
    out.u16(0); // e_phnum
    out.u16(SHDR as u16);
    out.u16(section_count as u16);
    out.u16(shstrtab_index as u16);

    // Contents.
    for (i, p) in sel.pieces.iter().enumerate() {
        if !patched.sections[p.section].is_nobits() {
            out.pad_to(piece_offset[i]);
            out.buf.extend_from_slice(&contents[i]);
        }
    }

    // Plain relocations (everything but livepatch ones).
    for (pi, p) in sel.pieces.iter().enumerate() {
        if plain_count[pi] == 0 {
            continue;
        }
        out.pad_to(rela_offset[pi]);
        for r in p.relocs.iter().filter(emitted) {
            let mut r_type = r.r_type;
            let (sym, addend) = match &r.target {
                OutTarget::Symbol(s) => (
                    placed
                        .binary_search_by_key(s, |p| p.sym)
                        .map(|i| placed[i].index)
                        .map_err(|_| anyhow!("internal: relocation to unemitted symbol"))?,
                    r.addend,
                ),
                OutTarget::Location(sec) => {
                    let (tp, mapped, off) = location(pi, r, *sec)?;
                    if backend.reloc_class(r.r_type) == RelocClass::Got {
                        let n = anchors
                            .binary_search(&(tp, mapped))
                            .map_err(|_| anyhow!("internal: GOT reference without its anchor"))?;
                        (first_anchor + n as u32, r.addend - off)
                    } else {
                        (section_sym(tp), r.addend + mapped as i64 - off)
                    }
                }
                OutTarget::Undefined(n) => {
                    let at = undefined
                        .binary_search(&n.as_str())
                        .expect("undefined names are listed");
                    (first_undefined + at as u32, r.addend)
                }
                OutTarget::NoSymbol => (0, r.addend),
                OutTarget::Klp(_) => {
                    r_type = placeholder.expect("placeholders only");
                    (0, r.addend)
                }
                OutTarget::Dropped(_) => unreachable!("filtered out"),
            };
            out.rela(r.offset, sym, r_type, addend);
        }
    }

    // Side tables.
    let abs64 = backend.abs64();
    if let Some(at) = side_offset {
        out.pad_to(at);
        out.buf.extend_from_slice(&side_strings);
    }
    let side_sym = side_sym.unwrap_or(0);
    if let Some((data, rel)) = relocs_offset {
        out.pad_to(data);
        for &(_, k, _) in &klp {
            out.buf.extend_from_slice(&side_table::reloc_entry(
                backend.endian(),
                k.addend,
                k.r_type,
            ));
        }
        out.pad_to(rel);
        for (n, &(piece, k, _)) in klp.iter().enumerate() {
            let base = (n * side_table::RELOC_SIZE) as u64;
            out.rela(
                base + side_table::PLACE,
                section_sym(piece),
                abs64,
                k.offset as i64,
            );
            out.rela(
                base + side_table::NAMES,
                side_sym,
                abs64,
                klp_strings[n] as i64,
            );
        }
    }
    if let Some((data, rel)) = funcs_offset {
        out.pad_to(data);
        out.buf
            .resize(out.buf.len() + funcs.len() * side_table::FUNC_SIZE, 0);
        out.pad_to(rel);
        for (n, &(sym, name)) in funcs.iter().enumerate() {
            let base = (n * side_table::FUNC_SIZE) as u64;
            out.rela(
                base + side_table::PLACE,
                placed[slot(&placed, sym)].index,
                abs64,
                0,
            );
            out.rela(base + side_table::NAMES, side_sym, abs64, name as i64);
        }
    }

    // Symbols.
    out.pad_to(symtab_offset);
    out.sym(0, 0, 0, 0, 0, 0);
    let info = |bind, kind| elf::SymbolInfo::new(bind, kind).0;
    if let Some(name) = file_name {
        out.sym(
            name,
            info(elf::STB_LOCAL, elf::STT_FILE),
            0,
            elf::SHN_ABS.0,
            0,
            0,
        );
    }
    for i in 0..sel.pieces.len() {
        let index = piece_index(i) as u16;
        out.sym(0, info(elf::STB_LOCAL, elf::STT_SECTION), 0, index, 0, 0);
    }
    if let Some(index) = side_index {
        let index = index as u16;
        out.sym(0, info(elf::STB_LOCAL, elf::STT_SECTION), 0, index, 0, 0);
    }
    for (&(tp, mapped), &name) in anchors.iter().zip(&anchor_names) {
        let index = piece_index(tp) as u16;
        out.sym(
            name,
            info(elf::STB_LOCAL, elf::STT_NOTYPE),
            0,
            index,
            mapped,
            0,
        );
    }
    for global in [false, true] {
        for &s in &sel.symbols {
            let sym = &patched.symbols[s];
            if sym.global != global {
                continue;
            }
            let p = placed[slot(&placed, s)];
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
            let index = piece_index(p.piece) as u16;
            out.sym(
                p.name,
                info(bind, kind),
                sym.st_other,
                index,
                p.value,
                sym.size,
            );
        }
    }
    for &(s, name) in &aliases {
        let sym = &patched.symbols[s];
        let p = placed[slot(&placed, s)];
        let index = piece_index(p.piece) as u16;
        let kind = info(elf::STB_GLOBAL, elf::STT_FUNC);
        out.sym(name, kind, sym.st_other, index, p.value, sym.size);
    }
    for &name in &undefined_names {
        let kind = info(elf::STB_GLOBAL, elf::STT_NOTYPE);
        out.sym(name, kind, 0, elf::SHN_UNDEF.0, 0, 0);
    }
    out.pad_to(strtab_offset);
    out.buf.extend_from_slice(&strtab);
    out.pad_to(shstrtab_offset);
    out.buf.extend_from_slice(&shstrtab);

    // Section headers, in index order.
    out.pad_to(shoff);
    out.shdr(0, 0, 0, 0, 0, 0, 0, 0, 0);
    for (i, p) in sel.pieces.iter().enumerate() {
        let s = &patched.sections[p.section];
        let link = p
            .link
            .and_then(|input| pieces_of(input).next())
            .map(piece_index);
        let mut flags = s.flags & !elf::SHF_GROUP.0;
        if link.is_none() {
            flags &= !elf::SHF_LINK_ORDER.0;
        }
        out.shdr(
            piece_names[i].0,
            s.sh_type,
            flags,
            piece_offset[i],
            p.size(),
            link.unwrap_or(0),
            0,
            u64::from(s.align.max(1)),
            s.entsize,
        );
    }
    if let (Some(name), Some(at)) = (side_name, side_offset) {
        let size = side_strings.len() as u64;
        out.shdr(name, elf::SHT_PROGBITS.0, 0, at, size, 0, 0, 1, 0);
    }
    let info_link = elf::SHF_INFO_LINK.0;
    for (i, index) in rela_index.iter().enumerate() {
        if index.is_some() {
            let size = plain_count[i] as u64 * RELA;
            let name = piece_names[i].1.expect("relocation sections are named");
            let target = piece_index(i);
            let (rela, off) = (elf::SHT_RELA.0, rela_offset[i]);
            out.shdr(
                name,
                rela,
                info_link,
                off,
                size,
                symtab_index,
                target,
                8,
                RELA,
            );
        }
    }
    for (index, names, offsets, count, size) in [
        (
            relocs_index,
            relocs_names,
            relocs_offset,
            klp.len(),
            side_table::RELOC_SIZE,
        ),
        (
            funcs_index,
            funcs_names,
            funcs_offset,
            funcs.len(),
            side_table::FUNC_SIZE,
        ),
    ] {
        let (Some(index), Some((name, rname)), Some((data, rel))) = (index, names, offsets) else {
            continue;
        };
        let (count, size) = (count as u64, size as u64);
        let progbits = elf::SHT_PROGBITS.0;
        out.shdr(name, progbits, 0, data, count * size, 0, 0, 8, size);
        let rela = elf::SHT_RELA.0;
        let rsize = 2 * count * RELA;
        out.shdr(
            rname,
            rela,
            info_link,
            rel,
            rsize,
            symtab_index,
            index,
            8,
            RELA,
        );
    }
    let size = u64::from(symbol_count) * SYM;
    let (symtab, strtab_type) = (elf::SHT_SYMTAB.0, elf::SHT_STRTAB.0);
    out.shdr(
        symtab_name,
        symtab,
        0,
        symtab_offset,
        size,
        strtab_index,
        num_local,
        8,
        SYM,
    );
    let size = strtab.len() as u64;
    out.shdr(strtab_name, strtab_type, 0, strtab_offset, size, 0, 0, 1, 0);
    let size = shstrtab.len() as u64;
    out.shdr(
        shstrtab_name,
        strtab_type,
        0,
        shstrtab_offset,
        size,
        0,
        0,
        1,
        0,
    );
    debug_assert_eq!(out.buf.len() as u64, layout.0);
    Ok(out.buf)
}
