//! Compares functions and data by content, with each relocation reduced to what it means: the
//! correlated symbol it names, the string it points into, or the bytes of an anonymous constant.
//! Section indexes, symbol-table order and string-table offsets never take part.

use std::borrow::Cow;

use super::correlate::{Keys, is_special};
use super::names::canonical;
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
    // Section symbols and local labels (`.LC0` on s390) both name a place in a section.
    let base = if sym.kind == SymKind::Section {
        0
    } else {
        sym.value as i64
    };
    let off = obj
        .backend()
        .target_offset(r.r_type, r.addend, obj.site(from, r.offset))
        + base;
    if section.is_strings()
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

/// Whether two symbols have the same bytes and relocations that mean the same things.
pub fn same_contents(
    orig: &ObjectFile,
    ok: &Keys,
    osym: usize,
    patched: &ObjectFile,
    pk: &Keys,
    psym: usize,
) -> bool {
    let (os, oe) = extent(orig, osym);
    let (ps, pe) = extent(patched, psym);
    if oe - os != pe - ps {
        return false;
    }
    let (Some(osec_index), Some(psec_index)) =
        (orig.symbols[osym].sec(), patched.symbols[psym].sec())
    else {
        return false;
    };
    let (osec, psec) = (&orig.sections[osec_index], &patched.sections[psec_index]);
    if osec.is_nobits() != psec.is_nobits() {
        return false;
    }
    if !osec.is_nobits() {
        let (Some(a), Some(b)) = (
            osec.data.get(os as usize..oe as usize),
            psec.data.get(ps as usize..pe as usize),
        ) else {
            return false;
        };
        if a != b
            && !(osec.is_exec()
                && branches_explain(orig, ok, osec_index, os, patched, pk, psec_index, ps, a, b))
        {
            return false;
        }
    }
    let (orel, prel) = (
        orig.relocs_in(osec_index, os, oe),
        patched.relocs_in(psec_index, ps, pe),
    );
    orel.len() == prel.len()
        && orel.iter().zip(prel).all(|(a, b)| {
            a.offset - os == b.offset - ps
                && a.r_type == b.r_type
                && target(orig, ok, a, osec_index) == target(patched, pk, b, psec_index)
        })
}

/// Whether every byte that differs between two functions lies in the displacement of a branch the
/// assembler resolved inside the section (no relocation), and both branches land on the same place of
/// the same correlated symbol. Functions sharing a section (`.sched.text`) see such displacements move
/// when a neighbour changes size.
#[allow(clippy::too_many_arguments)]
fn branches_explain(
    orig: &ObjectFile,
    ok: &Keys,
    osec: usize,
    os: u64,
    patched: &ObjectFile,
    pk: &Keys,
    psec: usize,
    ps: u64,
    a: &[u8],
    b: &[u8],
) -> bool {
    let backend = patched.backend();
    let (odata, pdata) = (orig.sections[osec].data, patched.sections[psec].data);
    let landing =
        |obj: &ObjectFile, keys: &Keys, sec: usize, target: i64| -> Option<(String, i64)> {
            let cover = obj.symbol_covering(sec, u64::try_from(target).ok()?)?;
            let s = &obj.symbols[cover];
            let name = keys
                .of(cover)
                .map_or_else(|| s.name.to_string(), str::to_string);
            Some((name, target - s.value as i64))
        };
    let mut i = 0;
    while i < a.len() {
        if a[i] == b[i] {
            i += 1;
            continue;
        }
        let (Some(ob), Some(pb)) = (
            backend.resolved_branch(odata, os as usize + i),
            backend.resolved_branch(pdata, ps as usize + i),
        ) else {
            return false;
        };
        let field_o = (ob.field.0 as u64 - os, ob.field.1 as u64 - os);
        let field_p = (pb.field.0 as u64 - ps, pb.field.1 as u64 - ps);
        let relocated = !orig
            .relocs_in(osec, ob.field.0 as u64, ob.field.1 as u64)
            .is_empty();
        if field_o != field_p || relocated {
            return false;
        }
        match (
            landing(orig, ok, osec, ob.target),
            landing(patched, pk, psec, pb.target),
        ) {
            (Some(x), Some(y)) if x == y => i = field_o.1 as usize,
            _ => return false,
        }
    }
    true
}
