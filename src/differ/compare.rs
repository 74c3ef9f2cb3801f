//! Compares functions and data by content, with each relocation reduced to what it means: the
//! correlated symbol it names, the string it points into, or the bytes of an anonymous constant.
//! Section indexes, symbol-table order and string-table offsets never take part.

use std::borrow::Cow;

use super::correlate::{Keys, is_special};
use super::lines::is_source_file_name;
use super::names::{canonical, is_anonymous_constant_section, is_sanitizer_site_section};
use crate::objfile::{ObjectFile, Reloc, SymKind};

/// What a relocation refers to, in terms that mean the same thing in both builds.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// A correlated function or data symbol, with the offset from its start.
    Entity { key: &'a str, addend: i64 },
    /// A kernel bookkeeping static (`__warned`, `__func__`), compared by name and contents.
    Special {
        name: Cow<'a, str>,
        bytes: &'a [u8],
        addend: i64,
    },
    /// A position inside a string literal.
    Str { text: &'a [u8], inner: i64 },
    /// A position in an anonymous mergeable constant section, by the constant's bytes.
    Const { bytes: &'a [u8], addend: i64 },
    /// The data of one UBSAN check (a section of its own: `.data..Lubsan_data12`), by its bytes:
    /// the source position, then what the check reports.
    SiteData { bytes: &'a [u8], addend: i64 },
    /// A pointer-sized entry of an anonymous table (ppc64 `.toc`), compared by what it points to.
    Indirect { via: &'a str, to: Box<Target<'a>> },
    /// A position in an anonymous section without symbols.
    Section { name: &'a str, addend: i64 },
    /// A symbol defined elsewhere.
    External { name: &'a str, addend: i64 },
}

/// Byte range `[start, end)` of a function or data symbol within its section. Zero-sized symbols (from
/// assembly) extend to the next symbol or the end of the section.
pub fn extent(obj: &ObjectFile, sym: usize) -> (u64, u64) {
    let s = &obj.symbols[sym];
    let Some(sec) = s.sec() else { return (0, 0) };
    if s.size > 0 {
        return (s.value, s.value + s.size);
    }
    // The symbols are sorted by value: the first one past this one is the next.
    let list = obj.defined_in(sec);
    let after = list.partition_point(|&i| obj.symbols[i as usize].value <= s.value);
    let next = list
        .get(after)
        .map_or(obj.sections[sec].size, |&i| obj.symbols[i as usize].value);
    (s.value, next)
}

/// The NUL-terminated string that contains byte `off` of `data`, and `off`'s position inside it.
pub fn string_at(data: &[u8], off: usize) -> Option<(&[u8], i64)> {
    if off >= data.len() {
        return None;
    }
    let start = data[..off]
        .iter()
        .rposition(|&b| b == 0)
        .map_or(0, |p| p + 1);
    let end = data[off..]
        .iter()
        .position(|&b| b == 0)
        .map_or(data.len(), |p| off + p);
    Some((&data[start..end], (off - start) as i64))
}

/// Where relocation `r` of section `from` points in its symbol's section: the symbol's value there
/// (none for a section symbol; a local label, `.LC0` on s390, names a place inside one), and the
/// offset it reaches once the architecture's addend rules are applied.
fn place_reached(obj: &ObjectFile, r: &Reloc, from: usize) -> (i64, i64) {
    let sym = &obj.symbols[r.sym()];
    let base = if sym.kind == SymKind::Section {
        0
    } else {
        sym.value as i64
    };
    let off = obj
        .backend()
        .target_offset(r.r_type, r.addend, obj.site(from, r.offset))
        + base;
    (base, off)
}

/// Whether section `sec` of `obj` holds the data of one UBSAN check: gcc names it
/// (`.data..Lubsan_data12`, [`is_sanitizer_site_section`]); clang leaves it unnamed
/// (`.data..L__unnamed_1`, writable, no symbol) and it is told by its start, lib/ubsan.h's `struct
/// source_location`, whose first word points at a source file's name.
pub fn is_sanitizer_site(obj: &ObjectFile, sec: usize) -> bool {
    let section = &obj.sections[sec];
    if is_sanitizer_site_section(section.name) {
        return true;
    }
    if !(section.name.contains("..L__unnamed_")
        && section.is_write()
        && obj.defined_in(sec).is_empty())
    {
        return false;
    }
    let Some(r) = obj.relocs_in(sec, 0, 1).first() else {
        return false;
    };
    let sym = &obj.symbols[r.sym()];
    let Some(to) = sym.sec() else {
        return false;
    };
    let strings = &obj.sections[to];
    let (_, off) = place_reached(obj, r, sec);
    strings.is_strings()
        && usize::try_from(off)
            .ok()
            .and_then(|o| string_at(strings.data, o))
            .is_some_and(|(text, inner)| inner == 0 && is_source_file_name(text))
}

/// Reduces one relocation of `obj` to its meaning.
/// `from` is the section the relocation belongs to.
pub fn target<'a>(obj: &'a ObjectFile, keys: &'a Keys, r: &Reloc, from: usize) -> Target<'a> {
    target_at_depth(obj, keys, r, from, 0)
}

fn target_at_depth<'a>(
    obj: &'a ObjectFile,
    keys: &'a Keys,
    r: &Reloc,
    from: usize,
    depth: u8,
) -> Target<'a> {
    let sym = &obj.symbols[r.sym()];
    let Some(sec_index) = sym.sec() else {
        return Target::External {
            name: sym.name,
            addend: r.addend,
        };
    };
    if let Some(key) = keys.of(r.sym()) {
        return Target::Entity {
            key,
            addend: r.addend,
        };
    }
    if is_special(obj, r.sym()) {
        return Target::Special {
            name: canonical(sym.name),
            bytes: obj.symbol_bytes(r.sym()),
            addend: r.addend,
        };
    }
    let section = &obj.sections[sec_index];
    let (base, off) = place_reached(obj, r, from);
    let anonymous = is_anonymous_constant_section(section.name);
    if (section.is_strings() || anonymous && section.name.contains("..L.str"))
        && let Some((text, inner)) = usize::try_from(off)
            .ok()
            .and_then(|o| string_at(section.data, o))
    {
        return Target::Str { text, inner };
    }
    if let Some(cover) = u64::try_from(off)
        .ok()
        .and_then(|o| obj.symbol_covering(sec_index, o))
    {
        if let Some(key) = keys.of(cover) {
            return Target::Entity {
                key,
                addend: r.addend + base - obj.symbols[cover].value as i64,
            };
        }
        if is_special(obj, cover) {
            let s = &obj.symbols[cover];
            return Target::Special {
                name: canonical(s.name),
                bytes: obj.symbol_bytes(cover),
                addend: r.addend + base - s.value as i64,
            };
        }
    }
    if is_sanitizer_site(obj, sec_index) {
        return Target::SiteData {
            bytes: section.data,
            addend: r.addend + base,
        };
    }
    if anonymous && obj.defined_in(sec_index).is_empty() {
        return Target::Const {
            bytes: section.data,
            addend: r.addend + base,
        };
    }
    if section.is_merge() && section.entsize > 0 {
        let start = usize::try_from(off).unwrap_or(usize::MAX);
        let bytes = section
            .data
            .get(start..start.saturating_add(section.entsize as usize))
            .unwrap_or(&[]);
        return Target::Const {
            bytes,
            addend: r.addend + base - off,
        };
    }
    if depth == 0
        && let Ok(at) = u64::try_from(off)
        && let Some(inner) = obj.relocs_in(sec_index, at, at + 1).first()
    {
        let to = target_at_depth(obj, keys, inner, sec_index, depth + 1);
        return Target::Indirect {
            via: section.name,
            to: Box::new(to),
        };
    }
    Target::Section {
        name: section.name,
        addend: r.addend + base,
    }
}

/// How the contents of a symbol compare with its original's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sameness {
    Same,
    /// Code whose only differences are line numbers passed to the kernel's reporting functions
    /// (`__might_sleep`, `__warn_printk`): the lines above it moved, the function did not change.
    LinesOnly,
    Different,
}

/// One symbol's contents as [`compare`] reads them: its object, the object's correlation keys, and
/// the symbol's section and byte range.
#[derive(Clone, Copy)]
pub struct Side<'o, 'd> {
    pub obj: &'o ObjectFile<'d>,
    pub keys: &'o Keys<'d>,
    pub sec: usize,
    pub start: u64,
    pub end: u64,
}

impl<'o, 'd> Side<'o, 'd> {
    fn of(obj: &'o ObjectFile<'d>, keys: &'o Keys<'d>, sym: usize) -> Option<Side<'o, 'd>> {
        let (start, end) = extent(obj, sym);
        Some(Side {
            obj,
            keys,
            sec: obj.symbols[sym].sec()?,
            start,
            end,
        })
    }

    /// The section's bytes.
    pub fn code(&self) -> &'d [u8] {
        self.obj.sections[self.sec].data
    }

    /// The relocations in `[start + from, start + to)` of the symbol.
    pub fn relocs(&self, from: u64, to: u64) -> &'o [Reloc] {
        self.obj
            .relocs_in(self.sec, self.start + from, self.start + to)
    }
}

/// Whether two symbols have the same bytes and relocations that mean the same things.
pub fn same_contents(
    orig: &ObjectFile,
    ok: &Keys,
    osym: usize,
    patched: &ObjectFile,
    pk: &Keys,
    psym: usize,
) -> bool {
    compare(orig, ok, osym, patched, pk, psym, false) == Sameness::Same
}

/// Compares two symbols' bytes and relocations. With `lines`, code that differs only in line
/// numbers (see [`super::lines`]) is [`Sameness::LinesOnly`]; without, it is different.
pub fn compare(
    orig: &ObjectFile,
    ok: &Keys,
    osym: usize,
    patched: &ObjectFile,
    pk: &Keys,
    psym: usize,
    lines: bool,
) -> Sameness {
    let (Some(o), Some(p)) = (Side::of(orig, ok, osym), Side::of(patched, pk, psym)) else {
        return Sameness::Different;
    };
    if o.end - o.start != p.end - p.start {
        return Sameness::Different;
    }
    let (osec, psec) = (&orig.sections[o.sec], &patched.sections[p.sec]);
    if osec.is_nobits() != psec.is_nobits() {
        return Sameness::Different;
    }
    let mut result = Sameness::Same;
    if !osec.is_nobits() {
        let (Some(a), Some(b)) = (
            osec.data.get(o.start as usize..o.end as usize),
            psec.data.get(p.start as usize..p.end as usize),
        ) else {
            return Sameness::Different;
        };
        if a != b {
            if !osec.is_exec() {
                return Sameness::Different;
            }
            match explain_differences(o, p, a, b, lines) {
                Some(r) => result = r,
                None => return Sameness::Different,
            }
        }
    }
    let (orel, prel) = (o.relocs(0, o.end - o.start), p.relocs(0, p.end - p.start));
    if orel.len() != prel.len() {
        return Sameness::Different;
    }
    let big_endian = patched.backend().endian() == klpx_arch::Endian::Big;
    for (a, b) in orel.iter().zip(prel) {
        if a.offset - o.start != b.offset - p.start || a.r_type != b.r_type {
            return Sameness::Different;
        }
        let (x, y) = (target(orig, ok, a, o.sec), target(patched, pk, b, p.sec));
        if x == y {
            continue;
        }
        if lines && super::lines::same_but_lines(&x, &y, big_endian) {
            result = Sameness::LinesOnly;
        } else {
            return Sameness::Different;
        }
    }
    result
}

/// Explains every byte that differs between two functions `a` and `b` (their bytes), or returns
/// `None`. A difference is explained by the displacement of a branch the assembler resolved inside
/// the section (no relocation) when both branches land on the same place of the same correlated
/// symbol: functions sharing a section (`.sched.text`) see such displacements move when a
/// neighbour changes size. With `lines`, also by a line number (see [`super::lines`]); the result
/// says whether one was needed.
fn explain_differences(o: Side, p: Side, a: &[u8], b: &[u8], lines: bool) -> Option<Sameness> {
    let mut result = Sameness::Same;
    let mut i = 0;
    while i < a.len() {
        if a[i] == b[i] {
            i += 1;
            continue;
        }
        if let Some(end) = branch_explains(o, p, i) {
            i = end;
        } else if lines && let Some(end) = super::lines::line_number_at(o, p, i) {
            result = Sameness::LinesOnly;
            i = end;
        } else {
            return None;
        }
    }
    Some(result)
}

/// Where the resolved branch covering byte `i` (from the symbols' starts) ends, when both builds
/// have one there landing on the same place of the same correlated symbol.
fn branch_explains(o: Side, p: Side, i: usize) -> Option<usize> {
    let backend = p.obj.backend();
    let landing = |s: Side, target: i64| -> Option<(String, i64)> {
        let cover = s.obj.symbol_covering(s.sec, u64::try_from(target).ok()?)?;
        let sym = &s.obj.symbols[cover];
        let name = s
            .keys
            .of(cover)
            .map_or_else(|| sym.name.to_string(), str::to_string);
        Some((name, target - sym.value as i64))
    };
    let ob = backend.resolved_branch(o.code(), o.start as usize + i)?;
    let pb = backend.resolved_branch(p.code(), p.start as usize + i)?;
    let field_o = (ob.field.0 as u64 - o.start, ob.field.1 as u64 - o.start);
    let field_p = (pb.field.0 as u64 - p.start, pb.field.1 as u64 - p.start);
    let relocated = !o
        .obj
        .relocs_in(o.sec, ob.field.0 as u64, ob.field.1 as u64)
        .is_empty();
    if field_o != field_p || relocated {
        return None;
    }
    let (x, y) = (landing(o, ob.target)?, landing(p, pb.target)?);
    (x == y).then_some(field_o.1 as usize)
}
