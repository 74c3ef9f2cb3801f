//! Pairs each function and data symbol of the patched object with its counterpart in the original.
//!
//! The pairing key is the symbol's name for globals and its canonical name for locals; locals whose
//! canonical names collide (two `static int count` in different functions) are told apart by the first
//! function that refers to them. Everything is hash maps: linear in the number of symbols and relocations.

use std::borrow::Cow;
use std::collections::HashMap;

use super::names::{canonical, is_function_prefix, is_special_static};
use crate::objfile::{ObjectFile, Reloc, SymKind};

/// Correlation keys of one object's symbols.
pub struct Keys<'d> {
    /// `key[i]` is the key of symbol `i`, if it takes part in correlation. Borrowed from the object's
    /// string table unless numbering had to be removed or context added.
    pub key: Vec<Option<Cow<'d, str>>>,
    pub by_key: HashMap<Cow<'d, str>, usize>,
}

/// Whether a symbol names a function or data object the differ reasons about.
pub fn is_entity(obj: &ObjectFile, sym: usize) -> bool {
    let s = &obj.symbols[sym];
    matches!(s.kind, SymKind::Func | SymKind::Object)
        && s.section.is_some()
        && !obj.backend().is_mapping_symbol(s.name)
        && !is_function_prefix(s.name)
}

/// Whether a symbol is one of the kernel's bookkeeping statics (never correlated: patch code gets its own).
pub fn is_special(obj: &ObjectFile, sym: usize) -> bool {
    let s = &obj.symbols[sym];
    !s.global && s.kind == SymKind::Object && is_special_static(&canonical(s.name))
}

impl<'d> Keys<'d> {
    pub fn build(obj: &ObjectFile<'d>) -> Keys<'d> {
        let n = obj.symbols.len();
        let mut base: Vec<Option<Cow<'d, str>>> = vec![None; n];
        let mut count: HashMap<Cow<'d, str>, u32> = HashMap::new();
        for (i, s) in obj.symbols.iter().enumerate() {
            if !is_entity(obj, i) || is_special(obj, i) {
                continue;
            }
            let k = if s.global {
                Cow::Borrowed(s.name)
            } else {
                canonical(s.name)
            };
            *count.entry(k.clone()).or_default() += 1;
            base[i] = Some(k);
        }
        let ambiguous = |k: &Option<Cow<'d, str>>| k.as_ref().is_some_and(|k| count[k] > 1);
        let mut context: Vec<Option<String>> = vec![None; n];
        if base.iter().any(ambiguous) {
            for (si, sec) in obj.sections.iter().enumerate() {
                if !sec.is_exec() {
                    continue;
                }
                for r in obj.relocs(si) {
                    let Some(target) = referenced_entity(obj, si, r, true) else {
                        continue;
                    };
                    if !ambiguous(&base[target]) || context[target].is_some() {
                        continue;
                    }
                    if let Some(user) = obj.symbol_covering(si, r.offset) {
                        context[target] = Some(canonical(obj.symbols[user].name).into_owned());
                    }
                }
            }
        }
        let mut key: Vec<Option<Cow<'d, str>>> = vec![None; n];
        let mut by_key = HashMap::with_capacity(count.len());
        for i in 0..n {
            let Some(k) = base[i].take() else { continue };
            let mut k = if count[&k] > 1 {
                Cow::Owned(format!("{k}@{}", context[i].as_deref().unwrap_or("?")))
            } else {
                k
            };
            if by_key.contains_key(&k) {
                // Still ambiguous (same name, same first user): fall back to order of appearance.
                let mut nth = 2;
                while by_key.contains_key(format!("{k}#{nth}").as_str()) {
                    nth += 1;
                }
                k = Cow::Owned(format!("{k}#{nth}"));
            }
            by_key.insert(k.clone(), i);
            key[i] = Some(k);
        }
        Keys { key, by_key }
    }

    /// The key of a symbol, if it has one.
    pub fn of(&self, sym: usize) -> Option<&str> {
        self.key[sym].as_deref()
    }
}

/// The function or data symbol a relocation in section `sec` refers to: named directly, or by section
/// symbol plus offset (how gcc refers to statics), or through an entry of a private table such as the
/// ppc64 `.toc` (when `follow` is set).
pub fn referenced_entity(obj: &ObjectFile, sec: usize, r: &Reloc, follow: bool) -> Option<usize> {
    let sym = &obj.symbols[r.sym()];
    if matches!(sym.kind, SymKind::Func | SymKind::Object) {
        return Some(r.sym());
    }
    let target = sym.sec()?;
    let base = if sym.kind == SymKind::Section {
        0
    } else {
        sym.value as i64
    };
    let off = u64::try_from(
        obj.backend()
            .target_offset(r.r_type, r.addend, obj.site(sec, r.offset))
            + base,
    )
    .ok()?;
    if let Some(c) = obj.symbol_covering(target, off) {
        return Some(c);
    }
    let t = &obj.sections[target];
    if follow && klpx_arch::private_entry_size(obj.backend(), t.name).is_some() {
        let inner = obj.relocs_in(target, off, off + 1).first()?;
        return referenced_entity(obj, target, inner, false);
    }
    None
}

/// Both objects' keys, and the pairing from patched symbols to original ones.
pub struct Correlation<'d> {
    pub orig: Keys<'d>,
    pub patched: Keys<'d>,
}

impl<'d> Correlation<'d> {
    pub fn new(orig: &ObjectFile<'d>, patched: &ObjectFile<'d>) -> Correlation<'d> {
        Correlation {
            orig: Keys::build(orig),
            patched: Keys::build(patched),
        }
    }

    /// The original symbol paired with a patched one.
    pub fn twin(&self, patched_sym: usize) -> Option<usize> {
        self.patched
            .of(patched_sym)
            .and_then(|k| self.orig.by_key.get(k).copied())
    }
}
