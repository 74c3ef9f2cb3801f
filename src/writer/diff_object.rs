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
use object::write::StringId;
use object::write::elf::{FileHeader, Rel, SectionHeader, SectionIndex, Sym, SymbolIndex, Writer};

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

/// An emitted patched symbol: the piece it lands in and its value there.
#[derive(Clone, Copy)]
struct Placed {
    sym: usize,
    piece: usize,
    value: u64,
}

/// The position of patched symbol `s` in `placed`.
fn slot(placed: &[Placed], s: usize) -> usize {
    placed
        .binary_search_by_key(&s, |p| p.sym)
        .expect("emitted symbols are placed")
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
/// Planning and emitting are apart: [`Plan::new`] decides every piece's bytes, where each relocation
/// lands, which symbols are emitted and what the side tables hold; [`Plan::emit`] writes that through
/// `object`'s ELF writer, which lays out the file and its string tables. The pieces' bytes are
/// borrowed from the input and the writer allocates the output once at its final size.
pub fn write_object_aliased(
    patched: &ObjectFile,
    diff: &Diff,
    alias_prefix: Option<&str>,
    extra: &[(usize, String)],
) -> Result<Vec<u8>> {
    Plan::new(patched, diff, alias_prefix, extra)?.emit()
}

/// What a relocation of the output names.
#[derive(Clone, Copy)]
enum RelSym {
    None,
    /// The section symbol of a piece.
    Piece(usize),
    /// The n-th GOT anchor.
    Anchor(usize),
    /// An emitted symbol of the patched object.
    Symbol(usize),
    /// The n-th undefined symbol.
    Undefined(usize),
}

/// A relocation of a piece as the output carries it.
struct PlainReloc {
    offset: u64,
    sym: RelSym,
    r_type: u32,
    addend: i64,
}

/// klpx's side tables for the module writer: livepatch relocations and patched functions, with
/// the offsets of their names in `.klpx.strtab`.
struct SideTables<'o> {
    strings: Vec<u8>,
    klp: Vec<(usize, &'o OutReloc, &'o KlpTarget)>,
    klp_names: Vec<u64>,
    /// (patched symbol, offset of its names).
    funcs: Vec<(usize, u64)>,
}

impl<'o> SideTables<'o> {
    fn new(patched: &ObjectFile, diff: &'o Diff) -> SideTables<'o> {
        let mut strings = Vec::new();
        let klp: Vec<(usize, &OutReloc, &KlpTarget)> = klp_relocs(diff).collect();
        // Relocations to one symbol share their target and its strings.
        let mut shared: HashMap<*const KlpTarget, u64> = HashMap::new();
        let klp_names = klp
            .iter()
            .map(|&(_, _, t)| {
                *shared.entry(t).or_insert_with(|| {
                    side_table::add_names(&mut strings, &t.object, &t.symbol, t.source.as_deref())
                })
            })
            .collect();
        let funcs = diff
            .selection
            .patched_functions
            .iter()
            .map(|(new, old_name)| {
                let at = side_table::add_names(
                    &mut strings,
                    &diff.object_name,
                    old_name,
                    patched.source_name,
                );
                (*new, at)
            })
            .collect();
        SideTables {
            strings,
            klp,
            klp_names,
            funcs,
        }
    }

    fn is_empty(&self) -> bool {
        self.klp.is_empty() && self.funcs.is_empty()
    }

    /// (entries, entry size) of `.klpx.relocs` and `.klpx.funcs`.
    fn table_sizes(&self) -> [(usize, usize); 2] {
        [
            (self.klp.len(), side_table::RELOC_SIZE),
            (self.funcs.len(), side_table::FUNC_SIZE),
        ]
    }
}

/// The output object decided: everything [`Plan::emit`] writes, in terms of the input.
struct Plan<'d, 'o> {
    patched: &'o ObjectFile<'d>,
    diff: &'o Diff,
    /// Each piece's bytes: borrowed from the input unless cut from several ranges or rewritten.
    contents: Vec<Cow<'d, [u8]>>,
    /// Where each piece's pieces and relocations land.
    map: PieceMap<'o, 'd>,
    /// How many relocations each piece carries (resolved again as they are written).
    reloc_counts: Vec<usize>,
    /// GOT anchors, emitted patched symbols and undefined symbols.
    emitted: Emitted<'o>,
    side: SideTables<'o>,
    /// Global aliases: (patched symbol, name).
    aliases: Vec<(usize, String)>,
}

impl<'d, 'o> Plan<'d, 'o> {
    fn new(
        patched: &'o ObjectFile<'d>,
        diff: &'o Diff,
        alias_prefix: Option<&str>,
        extra: &[(usize, String)],
    ) -> Result<Plan<'d, 'o>> {
        let sel = &diff.selection;
        let contents = piece_contents(patched, diff)?;
        let map = PieceMap::new(patched, diff);
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
        let emitted = Emitted {
            anchors: got_anchors(patched, diff, &map, &contents)?,
            placed: place_symbols(patched, diff, &map)?,
            undefined,
        };
        // Every relocation resolves (or the object is refused) before anything is written.
        let mut reloc_counts = Vec::with_capacity(sel.pieces.len());
        for pi in 0..sel.pieces.len() {
            let mut n = 0;
            for r in &sel.pieces[pi].relocs {
                n += usize::from(plain_reloc(patched, &map, &contents, &emitted, pi, r)?.is_some());
            }
            reloc_counts.push(n);
        }
        let mut aliases: Vec<(usize, String)> = alias_prefix
            .map(|prefix| {
                sel.patched_functions
                    .iter()
                    .enumerate()
                    .map(|(n, (s, _))| (*s, format!("{prefix}{n}")))
                    .collect()
            })
            .unwrap_or_default();
        for (s, alias) in extra {
            if !sel.symbols.contains(s) {
                bail!(
                    "{}: {} is not in the output object; it cannot get the alias {alias}",
                    patched.path,
                    patched.symbols.get(*s).map_or("?", |x| x.name)
                );
            }
            aliases.push((*s, alias.clone()));
        }
        Ok(Plan {
            patched,
            diff,
            contents,
            map,
            reloc_counts,
            emitted,
            side: SideTables::new(patched, diff),
            aliases,
        })
    }

    /// Writes the planned object through `object`'s two-phase ELF writer: everything is reserved
    /// (indexes, names, file ranges), then written in the same order.
    fn emit(&self) -> Result<Vec<u8>> {
        let endian = match self.patched.backend().endian() {
            Endian::Big => object::Endianness::Big,
            Endian::Little => object::Endianness::Little,
        };
        let names = self.owned_names();
        let mut buffer = Vec::new();
        let mut w = Writer::new(endian, true, &mut buffer);
        w.reserve_file_header();
        let sections = self.reserve_sections(&mut w, &names)?;
        let symbols = self.reserve_symbols(&mut w, &sections, &names)?;
        let layout = self.reserve_layout(&mut w, &sections)?;
        self.write_contents(&mut w, &symbols)?;
        self.write_side_tables(&mut w, &sections, &symbols);
        self.write_symbols(&mut w, &sections, &symbols);
        self.write_section_headers(&mut w, &sections, &symbols, &layout);
        debug_assert_eq!(w.reserved_len(), w.len());
        drop(w);
        Ok(buffer)
    }

    /// The names the output has that the input does not, owned for as long as the writer
    /// borrows them.
    fn owned_names(&self) -> OwnedNames {
        let sections = &self.patched.sections;
        OwnedNames {
            rela: (self.diff.selection.pieces.iter().zip(&self.reloc_counts))
                .map(|(p, &n)| {
                    if n == 0 {
                        Vec::new()
                    } else {
                        [b".rela", sections[p.section].name.as_bytes()].concat()
                    }
                })
                .collect(),
            side_rela: [
                format!(".rela{}", side_table::RELOCS),
                format!(".rela{}", side_table::FUNCS),
            ],
            anchors: (0..self.emitted.anchors.len())
                .map(|n| format!("__klpx_got_{n}"))
                .collect(),
        }
    }

    /// Section indexes and names: the pieces, the side strings, the pieces' relocations, the side
    /// tables with theirs, then the symbol and string tables. A piece's name is the tail of its
    /// relocations' (".rela" + name), which the writer's string table shares.
    fn reserve_sections<'n>(&self, w: &mut Writer<'n>, names: &'n OwnedNames) -> Result<Sections>
    where
        'o: 'n,
    {
        let patched = self.patched;
        w.reserve_null_section_index();
        let pieces: Vec<Reserved> = (self.diff.selection.pieces.iter())
            .map(|p| {
                let name = w.add_section_name(patched.sections[p.section].name.as_bytes());
                (w.reserve_section_index(), name)
            })
            .collect();
        let side = (!self.side.is_empty()).then(|| {
            let name = w.add_section_name(side_table::STRTAB.as_bytes());
            (w.reserve_section_index(), name)
        });
        let relas = (self.reloc_counts.iter().zip(&names.rela))
            .map(|(&n, name)| {
                (n > 0).then(|| (w.reserve_section_index(), w.add_section_name(name)))
            })
            .collect();
        let mut tables = [None, None];
        for (n, (data_name, count)) in [
            (side_table::RELOCS, self.side.klp.len()),
            (side_table::FUNCS, self.side.funcs.len()),
        ]
        .into_iter()
        .enumerate()
        {
            if count > 0 {
                let data_name = w.add_section_name(data_name.as_bytes());
                let data = (w.reserve_section_index(), data_name);
                let rela_name = w.add_section_name(names.side_rela[n].as_bytes());
                tables[n] = Some((data, (w.reserve_section_index(), rela_name)));
            }
        }
        let symtab = w.reserve_symtab_section_index();
        w.reserve_strtab_section_index();
        let count = w.reserve_shstrtab_section_index().0 + 1;
        if count >= u32::from(elf::SHN_LORESERVE) {
            bail!(
                "{}: the output would have {count} sections, more than ELF's 16-bit section indexes hold",
                patched.path
            );
        }
        Ok(Sections {
            pieces,
            side,
            relas,
            tables,
            symtab,
        })
    }

    /// Symbol indexes and names: null, file, section symbols, GOT anchors, local symbols, then
    /// globals, aliases and undefined symbols.
    fn reserve_symbols<'n>(
        &'n self,
        w: &mut Writer<'n>,
        sections: &Sections,
        names: &'n OwnedNames,
    ) -> Result<Symbols>
    where
        'o: 'n,
        'd: 'n,
    {
        let (patched, placed) = (self.patched, &self.emitted.placed);
        let in_piece = |piece: usize| Some(sections.pieces[piece].0);
        w.reserve_null_symbol_index();
        let file = patched.source_name.map(|n| {
            let id = w.add_string(n.as_bytes());
            w.reserve_symbol_index(None);
            id
        });
        let pieces = (0..sections.pieces.len())
            .map(|i| w.reserve_symbol_index(in_piece(i)))
            .collect();
        let side = sections
            .side
            .map(|(index, _)| w.reserve_symbol_index(Some(index)));
        let anchors = (self.emitted.anchors.iter().zip(&names.anchors))
            .map(|(&(piece, _), name)| {
                let id = w.add_string(name.as_bytes());
                (w.reserve_symbol_index(in_piece(piece)), id)
            })
            .collect();
        let mut emitted: Vec<Option<(SymbolIndex, StringId)>> = vec![None; placed.len()];
        let mut num_local = 0;
        for global in [false, true] {
            if global {
                num_local = w.symbol_count();
            }
            for &s in &self.diff.selection.symbols {
                let sym = &patched.symbols[s];
                if sym.global == global {
                    let at = slot(placed, s);
                    let id = w.add_string(sym.name.as_bytes());
                    emitted[at] = Some((w.reserve_symbol_index(in_piece(placed[at].piece)), id));
                }
            }
        }
        let emitted = emitted
            .into_iter()
            .map(|s| s.ok_or_else(|| anyhow!("internal: an emitted symbol without an index")))
            .collect::<Result<_>>()?;
        let aliases = (self.aliases.iter())
            .map(|(s, name)| {
                w.reserve_symbol_index(in_piece(placed[slot(placed, *s)].piece));
                w.add_string(name.as_bytes())
            })
            .collect();
        let undefined = (self.emitted.undefined.iter())
            .map(|n| (w.reserve_symbol_index(None), w.add_string(n.as_bytes())))
            .collect();
        Ok(Symbols {
            file,
            pieces,
            side,
            anchors,
            emitted,
            num_local,
            aliases,
            undefined,
        })
    }

    /// File ranges, in the order they are written: contents, relocations, side tables, then the
    /// symbol and string tables and the section headers.
    fn reserve_layout(&self, w: &mut Writer, sections: &Sections) -> Result<Layout> {
        let patched = self.patched;
        let pieces = (self.diff.selection.pieces.iter().zip(&self.contents))
            .map(|(p, c)| {
                let s = &patched.sections[p.section];
                if s.is_nobits() {
                    0
                } else {
                    w.reserve(c.len() as u64, u64::from(s.align.max(1)))
                }
            })
            .collect();
        let relas = (self.reloc_counts.iter())
            .map(|&n| {
                if n == 0 {
                    0
                } else {
                    w.reserve_relocations(n, true)
                }
            })
            .collect();
        let side = sections
            .side
            .map(|_| w.reserve(self.side.strings.len() as u64, 1));
        let mut tables = [None, None];
        for (n, (count, size)) in self.side.table_sizes().into_iter().enumerate() {
            if sections.tables[n].is_some() {
                let data = w.reserve((count * size) as u64, 8);
                tables[n] = Some((data, w.reserve_relocations(2 * count, true)));
            }
        }
        w.reserve_symtab();
        w.reserve_strtab()?;
        w.reserve_shstrtab()?;
        w.reserve_section_headers();
        Ok(Layout {
            pieces,
            relas,
            side,
            tables,
        })
    }

    /// The file header, the pieces' bytes and their relocations.
    fn write_contents(&self, w: &mut Writer, symbols: &Symbols) -> Result<()> {
        let (patched, sel) = (self.patched, &self.diff.selection);
        let backend = patched.backend();
        w.write_file_header(&FileHeader {
            os_abi: elf::OsAbi(patched.os_abi),
            abi_version: 0,
            e_type: elf::ET_REL,
            e_machine: elf::Machine(backend.elf_machine()),
            e_entry: 0,
            e_flags: elf::FileFlags(patched.e_flags),
        })?;
        for (p, bytes) in sel.pieces.iter().zip(&self.contents) {
            let s = &patched.sections[p.section];
            if !s.is_nobits() {
                w.write_align(u64::from(s.align.max(1)));
                w.write(bytes);
            }
        }
        let placed = &self.emitted.placed;
        let index = |r: RelSym| -> u32 {
            match r {
                RelSym::None => 0,
                RelSym::Piece(p) => symbols.pieces[p].0,
                RelSym::Anchor(n) => symbols.anchors[n].0.0,
                RelSym::Symbol(s) => symbols.emitted[slot(placed, s)].0.0,
                RelSym::Undefined(n) => symbols.undefined[n].0.0,
            }
        };
        for (pi, p) in sel.pieces.iter().enumerate() {
            if self.reloc_counts[pi] == 0 {
                continue;
            }
            w.write_align_relocation();
            for r in &p.relocs {
                let resolved =
                    plain_reloc(patched, &self.map, &self.contents, &self.emitted, pi, r)?;
                if let Some(r) = resolved {
                    w.write_relocation(true, &rel(r.offset, index(r.sym), r.r_type, r.addend));
                }
            }
        }
        Ok(())
    }

    /// `.klpx.strtab`, then `.klpx.relocs` and `.klpx.funcs` with their relocations (layout in
    /// [`side_table`]).
    fn write_side_tables(&self, w: &mut Writer, sections: &Sections, symbols: &Symbols) {
        let backend = self.patched.backend();
        let abs64 = backend.abs64();
        if sections.side.is_some() {
            w.write(&self.side.strings);
        }
        let names = symbols.side.map_or(0, |s| s.0);
        if sections.tables[0].is_some() {
            w.write_align(8);
            for &(_, k, _) in &self.side.klp {
                w.write(&side_table::reloc_entry(
                    backend.endian(),
                    k.addend,
                    k.r_type,
                ));
            }
            w.write_align_relocation();
            for (n, &(piece, k, _)) in self.side.klp.iter().enumerate() {
                let base = (n * side_table::RELOC_SIZE) as u64;
                let (place, at) = (symbols.pieces[piece].0, self.side.klp_names[n] as i64);
                w.write_relocation(
                    true,
                    &rel(base + side_table::PLACE, place, abs64, k.offset as i64),
                );
                w.write_relocation(true, &rel(base + side_table::NAMES, names, abs64, at));
            }
        }
        if sections.tables[1].is_some() {
            w.write_align(8);
            for _ in &self.side.funcs {
                w.write(&[0; side_table::FUNC_SIZE]);
            }
            w.write_align_relocation();
            for (n, &(sym, at)) in self.side.funcs.iter().enumerate() {
                let base = (n * side_table::FUNC_SIZE) as u64;
                let place = symbols.emitted[slot(&self.emitted.placed, sym)].0.0;
                w.write_relocation(true, &rel(base + side_table::PLACE, place, abs64, 0));
                w.write_relocation(
                    true,
                    &rel(base + side_table::NAMES, names, abs64, at as i64),
                );
            }
        }
    }

    /// The symbol table in the order [`Plan::reserve_symbols`] gave, and the string tables.
    fn write_symbols(&self, w: &mut Writer, sections: &Sections, symbols: &Symbols) {
        let (patched, placed) = (self.patched, &self.emitted.placed);
        let info = elf::SymbolInfo::new;
        let in_piece = |piece: usize| Some(sections.pieces[piece].0.0);
        let sym = |st_name, section, st_info, st_other, st_value, st_size| Sym {
            st_name,
            section,
            st_info,
            st_other: elf::SymbolOther(st_other),
            st_shndx: elf::SHN_UNDEF,
            st_value,
            st_size,
        };
        w.write_null_symbol();
        if let Some(id) = symbols.file {
            w.write_symbol(&Sym {
                st_shndx: elf::SHN_ABS,
                ..sym(
                    w.string_offset(Some(id)),
                    None,
                    info(elf::STB_LOCAL, elf::STT_FILE),
                    0,
                    0,
                    0,
                )
            });
        }
        let section_symbol = info(elf::STB_LOCAL, elf::STT_SECTION);
        for i in 0..sections.pieces.len() {
            w.write_symbol(&sym(0, in_piece(i), section_symbol, 0, 0, 0));
        }
        if let Some((index, _)) = sections.side {
            w.write_symbol(&sym(0, Some(index.0), section_symbol, 0, 0, 0));
        }
        for (&(piece, at), &(_, id)) in self.emitted.anchors.iter().zip(&symbols.anchors) {
            let name = w.string_offset(Some(id));
            let kind = info(elf::STB_LOCAL, elf::STT_NOTYPE);
            w.write_symbol(&sym(name, in_piece(piece), kind, 0, at, 0));
        }
        for global in [false, true] {
            for &s in &self.diff.selection.symbols {
                let input = &patched.symbols[s];
                if input.global != global {
                    continue;
                }
                let at = slot(placed, s);
                let bind = match (input.global, input.weak) {
                    (false, _) => elf::STB_LOCAL,
                    (true, true) => elf::STB_WEAK,
                    (true, false) => elf::STB_GLOBAL,
                };
                let kind = match input.kind {
                    SymKind::Func => elf::STT_FUNC,
                    SymKind::Object => elf::STT_OBJECT,
                    _ => elf::STT_NOTYPE,
                };
                let name = w.string_offset(Some(symbols.emitted[at].1));
                let p = placed[at];
                let st_info = info(bind, kind);
                w.write_symbol(&sym(
                    name,
                    in_piece(p.piece),
                    st_info,
                    input.st_other,
                    p.value,
                    input.size,
                ));
            }
        }
        for (&(s, _), &id) in self.aliases.iter().zip(&symbols.aliases) {
            let (input, p) = (&patched.symbols[s], placed[slot(placed, s)]);
            let name = w.string_offset(Some(id));
            let st_info = info(elf::STB_GLOBAL, elf::STT_FUNC);
            w.write_symbol(&sym(
                name,
                in_piece(p.piece),
                st_info,
                input.st_other,
                p.value,
                input.size,
            ));
        }
        for &(_, id) in &symbols.undefined {
            let name = w.string_offset(Some(id));
            w.write_symbol(&sym(
                name,
                None,
                info(elf::STB_GLOBAL, elf::STT_NOTYPE),
                0,
                0,
                0,
            ));
        }
        w.write_strtab();
        w.write_shstrtab();
    }

    /// The section headers, in index order.
    fn write_section_headers(
        &self,
        w: &mut Writer,
        sections: &Sections,
        symbols: &Symbols,
        layout: &Layout,
    ) {
        let patched = self.patched;
        let header = |name, sh_type, offset, size, align, entsize| SectionHeader {
            sh_name: name,
            sh_type,
            sh_flags: elf::SectionFlags(0),
            sh_addr: 0,
            sh_offset: offset,
            sh_size: size,
            sh_link: 0,
            sh_info: 0,
            sh_addralign: align,
            sh_entsize: entsize,
        };
        w.write_null_section_header();
        for (i, p) in self.diff.selection.pieces.iter().enumerate() {
            let s = &patched.sections[p.section];
            let link = p.link.and_then(|input| self.map.of(input).next());
            let mut flags = s.flags & !elf::SHF_GROUP.0;
            if link.is_none() {
                flags &= !elf::SHF_LINK_ORDER.0;
            }
            let name = w.section_name_offset(Some(sections.pieces[i].1));
            let align = u64::from(s.align.max(1));
            w.write_section_header(&SectionHeader {
                sh_flags: elf::SectionFlags(flags),
                sh_link: link.map_or(0, |l| sections.pieces[l].0.0),
                ..header(
                    name,
                    elf::SectionType(s.sh_type),
                    layout.pieces[i],
                    p.size(),
                    align,
                    s.entsize,
                )
            });
        }
        if let (Some((_, name)), Some(at)) = (sections.side, layout.side) {
            let (name, size) = (
                w.section_name_offset(Some(name)),
                self.side.strings.len() as u64,
            );
            w.write_section_header(&header(name, elf::SHT_PROGBITS, at, size, 1, 0));
        }
        for (i, rela) in sections.relas.iter().enumerate() {
            if let Some((_, name)) = rela {
                let (target, at, count) =
                    (sections.pieces[i].0, layout.relas[i], self.reloc_counts[i]);
                w.write_relocation_section_header(*name, target, sections.symtab, at, count, true);
            }
        }
        let sizes = self.side.table_sizes();
        for (n, (table, at)) in sections.tables.iter().zip(&layout.tables).enumerate() {
            let (Some(((data, name), (_, rela_name))), Some((at, rela_at))) = (table, at) else {
                continue;
            };
            let (count, size) = sizes[n];
            let name = w.section_name_offset(Some(*name));
            let entries = (count * size) as u64;
            w.write_section_header(&header(
                name,
                elf::SHT_PROGBITS,
                *at,
                entries,
                8,
                size as u64,
            ));
            w.write_relocation_section_header(
                *rela_name,
                *data,
                sections.symtab,
                *rela_at,
                2 * count,
                true,
            );
        }
        w.write_symtab_section_header(symbols.num_local);
        w.write_strtab_section_header();
        w.write_shstrtab_section_header();
    }
}

/// Names the output has that the input does not: ".rela" + each piece's name (for pieces with
/// relocations), the side tables' relocation sections, the GOT anchors.
struct OwnedNames {
    rela: Vec<Vec<u8>>,
    side_rela: [String; 2],
    anchors: Vec<String>,
}

/// A reserved section: its index and name.
type Reserved = (SectionIndex, StringId);

/// The output's sections as reserved: (index, name) of each piece, the side strings, each piece's
/// relocations, each side table and its relocations; the symbol table's index.
struct Sections {
    pieces: Vec<Reserved>,
    side: Option<Reserved>,
    relas: Vec<Option<Reserved>>,
    /// Each side table and its relocations.
    tables: [Option<(Reserved, Reserved)>; 2],
    symtab: SectionIndex,
}

/// The output's symbols as reserved: (index, name) where relocations or the side tables name them.
struct Symbols {
    file: Option<StringId>,
    pieces: Vec<SymbolIndex>,
    side: Option<SymbolIndex>,
    anchors: Vec<(SymbolIndex, StringId)>,
    /// The emitted patched symbols, in the order of [`Emitted::placed`].
    emitted: Vec<(SymbolIndex, StringId)>,
    num_local: u32,
    aliases: Vec<StringId>,
    undefined: Vec<(SymbolIndex, StringId)>,
}

/// File offsets: each piece's bytes, each piece's relocations, the side strings, each side table
/// and its relocations.
struct Layout {
    pieces: Vec<u64>,
    relas: Vec<u64>,
    side: Option<u64>,
    tables: [Option<(u64, u64)>; 2],
}

/// An ELF `Rela` entry.
fn rel(offset: u64, sym: u32, r_type: u32, addend: i64) -> Rel {
    Rel {
        r_offset: offset,
        r_sym: sym,
        r_type: elf::RelocationType(r_type),
        r_addend: addend,
    }
}

/// Each piece's bytes: borrowed from the input unless cut from several ranges, with the
/// instruction rewrites applied.
fn piece_contents<'d>(patched: &ObjectFile<'d>, diff: &Diff) -> Result<Vec<Cow<'d, [u8]>>> {
    let mut contents: Vec<Cow<[u8]>> = Vec::with_capacity(diff.selection.pieces.len());
    for p in &diff.selection.pieces {
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
    Ok(contents)
}

/// Which pieces were cut from which input section, and where an input offset lands.
struct PieceMap<'o, 'd> {
    patched: &'o ObjectFile<'d>,
    diff: &'o Diff,
    /// (section, piece), sorted.
    by_section: Vec<(usize, usize)>,
}

impl<'o, 'd> PieceMap<'o, 'd> {
    fn new(patched: &'o ObjectFile<'d>, diff: &'o Diff) -> PieceMap<'o, 'd> {
        let mut by_section: Vec<(usize, usize)> = diff
            .selection
            .pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.section, i))
            .collect();
        by_section.sort_unstable();
        PieceMap {
            patched,
            diff,
            by_section,
        }
    }

    /// The pieces cut from input section `sec`.
    fn of(&self, sec: usize) -> impl Iterator<Item = usize> + '_ {
        let lo = self.by_section.partition_point(|&(s, _)| s < sec);
        let hi = lo + self.by_section[lo..].partition_point(|&(s, _)| s == sec);
        self.by_section[lo..hi].iter().map(|&(_, i)| i)
    }

    /// The piece that holds input offset `off` of section `sec`: inside a range first, since the
    /// end of one carved piece (a `.toc` entry, a string) is the start of the next, which after
    /// the link is somewhere else; only a reference to the very end of the emitted content (a
    /// function's end, as ORC marks it) takes the end of a range.
    fn locate(&self, sec: usize, off: u64) -> Option<(usize, u64)> {
        let pieces = &self.diff.selection.pieces;
        self.of(sec)
            .find_map(|i| pieces[i].map_inside(off).map(|o| (i, o)))
            .or_else(|| {
                self.of(sec)
                    .find_map(|i| pieces[i].map(off).map(|o| (i, o)))
            })
    }

    /// A section emitted whole keeps every offset, so any reference relative to it keeps its
    /// meaning, even one whose target lies outside it (an s390 jump table entry `.quad .L5-.L4`
    /// is `R_390_PC64` against the function's section with the entry's own offset in the addend).
    fn whole(&self, sec: usize) -> Option<usize> {
        let size = self.patched.sections[sec].size;
        self.of(sec)
            .find(|&i| self.diff.selection.pieces[i].ranges == [(0, size)])
    }

    /// Where a `Location` relocation `r` of piece `pi` (whose bytes are `code`) into input
    /// section `sec` lands: (piece, offset in it, target offset in the input section as the
    /// architecture reads the addend).
    fn location(
        &self,
        pi: usize,
        code: &[u8],
        r: &OutReloc,
        sec: usize,
    ) -> Result<(usize, u64, i64)> {
        let patched = self.patched;
        let from_sec = self.diff.selection.pieces[pi].section;
        let site = if patched.sections[from_sec].is_exec() {
            Site::Code {
                bytes: code,
                offset: r.offset,
            }
        } else {
            Site::Data
        };
        let off = patched.backend().target_offset(r.r_type, r.addend, site);
        u64::try_from(off)
            .ok()
            .and_then(|o| self.locate(sec, o))
            .or_else(|| self.whole(sec).map(|w| (w, off as u64)))
            .map(|(tp, mapped)| (tp, mapped, off))
            .ok_or_else(|| {
                let (from, to) = (patched.sections[from_sec].name, patched.sections[sec].name);
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
    }
}

/// A GOT entry is made per symbol, and the addend only moves the reference to it (s390
/// `R_390_GOTENT`): a reference to a place without a symbol of its own (a `.LC` string label) gets
/// a local anchor symbol there, never "section + offset", which would read the section's entry.
/// Returns the anchors' places (piece, offset), sorted.
fn got_anchors(
    patched: &ObjectFile,
    diff: &Diff,
    map: &PieceMap,
    contents: &[Cow<[u8]>],
) -> Result<Vec<(usize, u64)>> {
    let backend = patched.backend();
    let mut anchors: Vec<(usize, u64)> = Vec::new();
    for (pi, p) in diff.selection.pieces.iter().enumerate() {
        for r in &p.relocs {
            if let OutTarget::Location(sec) = r.target
                && backend.reloc_class(r.r_type) == RelocClass::Got
            {
                let (tp, mapped, _) = map.location(pi, &contents[pi], r, sec)?;
                anchors.push((tp, mapped));
            }
        }
    }
    anchors.sort_unstable();
    anchors.dedup();
    Ok(anchors)
}

/// Where each emitted patched symbol lands, sorted by symbol.
fn place_symbols(patched: &ObjectFile, diff: &Diff, map: &PieceMap) -> Result<Vec<Placed>> {
    let pieces = &diff.selection.pieces;
    let mut placed: Vec<Placed> = Vec::with_capacity(diff.selection.symbols.len());
    for &s in &diff.selection.symbols {
        let sym = &patched.symbols[s];
        let sec = sym.sec().expect("emitted symbols are defined");
        // The piece that holds the whole symbol (several carved pieces may hold its start).
        let end = sym.value + sym.size;
        let holds = |i: &usize| {
            let p = &pieces[*i];
            p.ranges.len() == 1 && p.ranges[0].0 <= sym.value && end <= p.ranges[0].1
        };
        let piece = map.of(sec).find(holds).ok_or_else(|| {
            anyhow!(
                "internal: symbol {} is not inside an emitted piece",
                sym.name
            )
        })?;
        placed.push(Placed {
            sym: s,
            piece,
            value: sym.value - pieces[piece].ranges[0].0,
        });
    }
    placed.sort_unstable_by_key(|p| p.sym);
    Ok(placed)
}

/// What the relocations of the output may name besides pieces: GOT anchors, emitted symbols and
/// undefined symbols, each sorted.
struct Emitted<'o> {
    /// Places that get a local symbol for GOT references: (piece, offset in it).
    anchors: Vec<(usize, u64)>,
    /// Emitted patched symbols, sorted by symbol.
    placed: Vec<Placed>,
    /// Symbols the module loader resolves, once each.
    undefined: Vec<&'o str>,
}

/// What relocation `r` of piece `pi` becomes in the output, resolved to what it names, or `None`
/// when it is not written there. A livepatch relocation goes into the side table; where the
/// module's link reads relocations (`Backend::klp_placeholder`), a no-op one with the same addend
/// stays in place.
fn plain_reloc(
    patched: &ObjectFile,
    map: &PieceMap,
    contents: &[Cow<[u8]>],
    emitted: &Emitted,
    pi: usize,
    r: &OutReloc,
) -> Result<Option<PlainReloc>> {
    let backend = patched.backend();
    let mut r_type = r.r_type;
    let (sym, addend) = match &r.target {
        OutTarget::Dropped(_) => return Ok(None),
        OutTarget::Klp(_) => match backend.klp_placeholder() {
            Some(p) => {
                r_type = p;
                (RelSym::None, r.addend)
            }
            None => return Ok(None),
        },
        OutTarget::Symbol(s) => {
            if emitted.placed.binary_search_by_key(s, |p| p.sym).is_err() {
                bail!("internal: relocation to unemitted symbol");
            }
            (RelSym::Symbol(*s), r.addend)
        }
        OutTarget::Location(sec) => {
            let (tp, mapped, off) = map.location(pi, &contents[pi], r, *sec)?;
            if backend.reloc_class(r.r_type) == RelocClass::Got {
                let n = emitted
                    .anchors
                    .binary_search(&(tp, mapped))
                    .map_err(|_| anyhow!("internal: GOT reference without its anchor"))?;
                (RelSym::Anchor(n), r.addend - off)
            } else {
                (RelSym::Piece(tp), r.addend + mapped as i64 - off)
            }
        }
        OutTarget::Undefined(n) => {
            let at = emitted
                .undefined
                .binary_search(&n.as_str())
                .map_err(|_| anyhow!("internal: an undefined symbol not listed"))?;
            (RelSym::Undefined(at), r.addend)
        }
        OutTarget::NoSymbol => (RelSym::None, r.addend),
    };
    Ok(Some(PlainReloc {
        offset: r.offset,
        sym,
        r_type,
        addend,
    }))
}
