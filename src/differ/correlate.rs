//! Pairs each function and data symbol of the patched object with its counterpart in the original.
//!
//! The pairing key is the symbol's name for globals and its canonical name for locals; locals whose
//! canonical names collide (two `static int count` in different functions) are told apart by the first
//! function that refers to them. Everything is hash maps: linear in the number of symbols and relocations.

use std::collections::HashMap;

use super::names::{canonical, is_function_prefix, is_special_static};
use crate::objfile::{ObjectFile, SymKind};

/// Correlation keys of one object's symbols.
pub struct Keys {
    /// `key[i]` is the key of symbol `i`, if it takes part in correlation.
    pub key: Vec<Option<String>>,
    pub by_key: HashMap<String, usize>,
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

impl Keys {
    pub fn build(obj: &ObjectFile) -> Keys {
        let n = obj.symbols.len();
        let mut base: Vec<Option<String>> = vec![None; n];
        let mut count: HashMap<String, u32> = HashMap::new();
        for (i, s) in obj.symbols.iter().enumerate() {
            if !is_entity(obj, i) || is_special(obj, i) {
                continue;
            }
            let k = if s.global {
                s.name.to_string()
            } else {
                canonical(s.name).into_owned()
            };
            *count.entry(k.clone()).or_default() += 1;
            base[i] = Some(k);
        }
        let ambiguous = |k: &Option<String>| k.as_ref().is_some_and(|k| count[k] > 1);
        let mut context: Vec<Option<String>> = vec![None; n];
        if base.iter().any(ambiguous) {
            for (si, sec) in obj.sections.iter().enumerate() {
                for r in &sec.relocs {
                    if !ambiguous(&base[r.symbol]) || context[r.symbol].is_some() {
                        continue;
                    }
                    if let Some(user) = obj.symbol_covering(si, r.offset) {
                        context[r.symbol] = Some(canonical(obj.symbols[user].name).into_owned());
                    }
                }
            }
        }
        let mut key = vec![None; n];
        let mut by_key = HashMap::with_capacity(n);
        for i in 0..n {
            let Some(k) = base[i].take() else { continue };
            let mut k = if ambiguous(&Some(k.clone())) {
                format!("{k}@{}", context[i].as_deref().unwrap_or("?"))
            } else {
                k
            };
            if by_key.contains_key(&k) {
                // Still ambiguous (same name, same first user): fall back to order of appearance.
                let mut nth = 2;
                while by_key.contains_key(&format!("{k}#{nth}")) {
                    nth += 1;
                }
                k = format!("{k}#{nth}");
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

/// Both objects' keys, and the pairing from patched symbols to original ones.
pub struct Correlation {
    pub orig: Keys,
    pub patched: Keys,
}

impl Correlation {
    pub fn new(orig: &ObjectFile, patched: &ObjectFile) -> Correlation {
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
