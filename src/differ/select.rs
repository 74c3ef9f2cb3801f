//! Decides what goes into the output object and how each reference out of it is resolved.
//!
//! A worklist starts from the changed and new functions and follows their relocations: new data, string
//! literals, anonymous constants and kernel bookkeeping statics are taken along; everything else the
//! running kernel already has stays a reference, resolved either by the module loader (an exported
//! symbol) or by the livepatch core (a livepatch relocation naming the object and symbol). Special
//! sections keep exactly the entries that belong to what was taken. Each symbol and relocation is
//! visited once.

use std::collections::HashMap;
use std::sync::Arc;

use klpx_arch::{FunctionCode, RelocClass, Site, private_entry_size, special_section};

use super::compare::is_sanitizer_site;
use super::correlate::{Correlation, is_entity, is_special, referenced_entity};
use super::names::{canonical, is_ignored_section, is_init_section};
use super::special::split_entries;
use super::{Exports, Refusal};
use crate::objfile::{ObjectFile, Reloc, SymKind};

/// A livepatch relocation's target: resolved by the livepatch core through kallsyms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KlpTarget {
    pub object: String,
    pub symbol: String,
    /// The original object's source file, which tells same-named local symbols apart.
    pub source: Option<String>,
}

/// Where a relocation of the output object points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutTarget {
    /// A symbol of the patched object that is emitted into the output.
    Symbol(usize),
    /// A place in a patched section that is (partly) emitted: section index, offset from its start
    /// (the addend is then the offset in the output piece).
    Location(usize),
    /// A symbol the module loader resolves: exported by the kernel, or the loader's own (`.TOC.`).
    Undefined(String),
    /// A livepatch relocation. Relocations to one symbol share their target.
    Klp(Arc<KlpTarget>),
    /// The null symbol (a relocation that needs none, such as ppc64 `R_PPC64_ENTRY`).
    NoSymbol,
    /// A reference into metadata the module does not carry (a `.discard` or debug section): not emitted.
    /// The patched section it points into.
    Dropped(usize),
}

/// One relocation of an output piece, with offsets relative to the piece.
#[derive(Clone, Debug)]
pub struct OutReloc {
    pub offset: u64,
    pub r_type: u32,
    pub target: OutTarget,
    pub addend: i64,
}

/// A run of bytes taken from one patched section into one output section.
#[derive(Clone, Debug)]
pub struct Piece {
    pub section: usize,
    /// Byte ranges `[start, end)` of the input section, concatenated in this order.
    pub ranges: Vec<(u64, u64)>,
    /// For `SHF_LINK_ORDER` sections, the input section they describe.
    pub link: Option<usize>,
    pub relocs: Vec<OutReloc>,
    /// Bytes the output changes: (offset in the piece, new byte), from rewritten instructions
    /// ([`klpx_arch::Backend::rewrite_external`]).
    pub edits: Vec<(u64, u8)>,
}

impl Piece {
    pub fn size(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }
    /// Output offset of input offset `off` when one of the ranges holds it strictly inside
    /// (`start <= off < end`).
    pub fn map_inside(&self, off: u64) -> Option<u64> {
        let mut base = 0;
        for &(s, e) in &self.ranges {
            if (s..e).contains(&off) {
                return Some(base + off - s);
            }
            base += e - s;
        }
        None
    }

    /// Output offset of input offset `off`, if one of the ranges holds it. The end of a range counts
    /// too (ORC and other tables mark the end of a function), after every range's inside. Where
    /// several pieces of one section are emitted, the end of one is the start of the next: look for
    /// a piece that holds `off` inside ([`Piece::map_inside`]) first.
    pub fn map(&self, off: u64) -> Option<u64> {
        let mut base = 0;
        let mut at_end = None;
        for &(s, e) in &self.ranges {
            if (s..e).contains(&off) {
                return Some(base + off - s);
            }
            if off == e && at_end.is_none() {
                at_end = Some(base + e - s);
            }
            base += e - s;
        }
        at_end
    }
}

/// Status of a patched function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuncStatus {
    Changed,
    New,
    Unchanged,
}

/// Everything the output writer and the report need.
#[derive(Debug, Default)]
pub struct Selection {
    pub pieces: Vec<Piece>,
    /// Patched symbols emitted into the output, in order of inclusion.
    pub symbols: Vec<usize>,
    /// Changed functions: the patched symbol and the name the running kernel knows it by.
    pub patched_functions: Vec<(usize, String)>,
    /// Unchanged functions copied in because patch code must call them directly (ppc64 local calls).
    pub copied_functions: Vec<usize>,
    pub special_entries: Vec<(String, usize)>,
}

/// Inputs of the selection, borrowed.
pub struct Selector<'a, 'd> {
    pub orig: &'a ObjectFile<'d>,
    pub patched: &'a ObjectFile<'d>,
    pub corr: &'a Correlation<'d>,
    pub exports: &'a Exports,
    pub object_name: &'a str,
    pub status: &'a [Option<FuncStatus>],
    pub refusals: &'a mut Vec<Refusal>,
    included: Vec<bool>,
    piece_of_section: HashMap<usize, usize>,
    carved: HashMap<usize, Vec<usize>>,
    klp_targets: HashMap<&'d str, Arc<KlpTarget>>,
    queue: Vec<usize>,
    out: Selection,
    /// Special sections objtool writes at the module's link: not selected.
    objtool_tables: &'static [&'static str],
}

/// How a symbol reference out of included content resolves, before it is turned into an [`OutTarget`].
enum Resolved {
    Internal(OutTarget),
    External(OutTarget),
}

impl<'a, 'd> Selector<'a, 'd> {
    pub fn new(
        orig: &'a ObjectFile<'d>,
        patched: &'a ObjectFile<'d>,
        corr: &'a Correlation<'d>,
        exports: &'a Exports,
        object_name: &'a str,
        status: &'a [Option<FuncStatus>],
        refusals: &'a mut Vec<Refusal>,
    ) -> Self {
        Selector {
            orig,
            patched,
            corr,
            exports,
            object_name,
            status,
            refusals,
            included: vec![false; patched.symbols.len()],
            piece_of_section: HashMap::new(),
            carved: HashMap::new(),
            klp_targets: HashMap::new(),
            queue: Vec::new(),
            out: Selection::default(),
            objtool_tables: &[],
        }
    }

    /// Leaves out the tables objtool writes, when the module's link runs it.
    pub fn leaving_objtool_tables(mut self, at_module_link: bool) -> Self {
        if at_module_link {
            self.objtool_tables = self.patched.backend().objtool_tables();
        }
        self
    }

    /// Runs the selection from the given roots (changed and new functions with their children).
    pub fn run(mut self, roots: &[usize]) -> Selection {
        for &r in roots {
            self.include_symbol(r);
        }
        self.drain();
        self.select_special_entries();
        self.drain();
        self.out
    }

    fn refuse(&mut self, symbol: &str, reason: String) {
        if !self
            .refusals
            .iter()
            .any(|r| r.symbol == symbol && r.reason == reason)
        {
            self.refusals.push(Refusal {
                symbol: symbol.to_string(),
                reason,
            });
        }
    }

    /// Takes a symbol into the output, with the part of its section it occupies.
    fn include_symbol(&mut self, sym: usize) {
        if self.included[sym] {
            return;
        }
        self.included[sym] = true;
        self.out.symbols.push(sym);
        let p = self.patched;
        let sec = p.symbols[sym].sec().expect("entities are defined");
        let section = &p.sections[sec];
        if is_init_section(section.name) {
            let what = if section.is_exec() {
                "__init code"
            } else {
                "__initdata"
            };
            self.refuse(
                p.symbols[sym].name,
                format!(
                    "{what} in {} is freed after boot and cannot be patched",
                    section.name
                ),
            );
        }
        if self.piece_of_section.contains_key(&sec) {
            return;
        }
        // The whole section comes along: aliases, and in a section several functions share
        // (`.sched.text`) the neighbours, whose calls and jumps between them the assembler resolved
        // without relocations. Copies of unchanged neighbours are harmless; cutting them apart is not.
        self.add_piece(sec, vec![(0, section.size)], None);
        for s in p.defined_in(sec).iter().map(|&s| s as usize) {
            let copy = s != sym
                && !self.included[s]
                && self.status[s] == Some(FuncStatus::Unchanged)
                && !same_place(p, s, sym);
            if copy {
                self.out.copied_functions.push(s);
            }
        }
        for s in p.defined_in(sec).iter().map(|&s| s as usize) {
            if s != sym && is_entity(p, s) && !self.included[s] {
                self.included[s] = true;
                self.out.symbols.push(s);
            }
        }
    }

    /// Takes one range of a section (an entry of a private table), once.
    fn include_range(&mut self, sec: usize, range: (u64, u64)) {
        let known = self
            .carved
            .get(&sec)
            .into_iter()
            .flatten()
            .any(|&i| self.out.pieces[i].ranges[0] == range);
        if !known && !self.piece_of_section.contains_key(&sec) {
            let idx = self.add_piece(sec, vec![range], None);
            self.carved.entry(sec).or_default().push(idx);
        }
    }

    /// Takes a whole anonymous section (strings, constants, alternative replacements).
    fn include_section(&mut self, sec: usize) {
        if self.piece_of_section.contains_key(&sec) {
            return;
        }
        let size = self.patched.sections[sec].size;
        self.add_piece(sec, vec![(0, size)], None);
    }

    fn add_piece(&mut self, sec: usize, ranges: Vec<(u64, u64)>, link: Option<usize>) -> usize {
        let size = self.patched.sections[sec].size;
        debug_assert!(
            ranges.iter().all(|&(s, e)| s <= e && e <= size),
            "piece ranges {ranges:?} lie in section {} of {size} bytes",
            self.patched.sections[sec].name
        );
        let idx = self.out.pieces.len();
        self.out.pieces.push(Piece {
            section: sec,
            ranges,
            link,
            relocs: Vec::new(),
            edits: Vec::new(),
        });
        if self.out.pieces[idx].ranges == [(0, self.patched.sections[sec].size)] {
            self.piece_of_section.insert(sec, idx);
        }
        self.queue.push(idx);
        idx
    }

    /// Whether input offset `off` of section `sec` is emitted.
    fn is_emitted(&self, sec: usize, off: u64) -> bool {
        if self.piece_of_section.contains_key(&sec) {
            return true;
        }
        self.carved
            .get(&sec)
            .is_some_and(|v| v.iter().any(|&i| self.out.pieces[i].map(off).is_some()))
    }

    fn drain(&mut self) {
        while let Some(idx) = self.queue.pop() {
            let sec = self.out.pieces[idx].section;
            let p = self.patched;
            // A copy: resolving may look at this piece's ranges (a `.toc` entry naming another).
            let ranges = self.out.pieces[idx].ranges.clone();
            let count = ranges
                .iter()
                .map(|&(s, e)| p.relocs_in(sec, s, e).len())
                .sum();
            let mut relocs = Vec::with_capacity(count);
            let mut edits = Vec::new();
            let mut base = 0;
            let code = p.sections[sec].is_exec().then_some(p.sections[sec].data);
            for &(s, e) in &ranges {
                for r in p.relocs_in(sec, s, e) {
                    let (target, addend) = self.resolve(sec, r);
                    self.check_reach(sec, r, &target);
                    let mut r_type = r.r_type;
                    let to_module = match &target {
                        OutTarget::Klp(k) => Some(k.object != "vmlinux"),
                        OutTarget::Undefined(_) => Some(false),
                        _ => None,
                    };
                    if let Some(to_module) = to_module
                        && let Some(code) = code
                        && let Some((t, changes)) = p.backend().rewrite_external(
                            code,
                            r.offset as usize,
                            r.r_type,
                            to_module,
                        )
                        && changes.iter().all(|&(at, _)| (s..e).contains(&(at as u64)))
                    {
                        r_type = t;
                        edits.extend(changes.iter().map(|&(at, b)| (base + at as u64 - s, b)));
                    }
                    relocs.push(OutReloc {
                        offset: base + r.offset - s,
                        r_type,
                        target,
                        addend,
                    });
                }
                base += e - s;
            }
            self.out.pieces[idx].edits = edits;
            if p.sections[sec].is_exec() {
                self.check_calls(sec, idx, &mut relocs);
            }
            self.out.pieces[idx].relocs = relocs;
        }
    }

    /// Resolves one relocation found in included content into a target and the addend to use with it.
    /// `Location` addends are offsets from the start of the input section. A GOT reference outside
    /// the module must name a symbol exactly: the loader's GOT slot holds the symbol's address, so
    /// "symbol + k" cannot be expressed.
    fn resolve(&mut self, from_sec: usize, r: &Reloc) -> (OutTarget, i64) {
        let (target, addend) = self.resolve_target(from_sec, r);
        let p = self.patched;
        if matches!(target, OutTarget::Klp(_) | OutTarget::Undefined(_))
            && p.backend().reloc_class(r.r_type) == RelocClass::Got
            && p.backend()
                .target_offset(r.r_type, addend, p.site(from_sec, r.offset))
                != 0
        {
            let name = match &target {
                OutTarget::Klp(k) => k.symbol.clone(),
                OutTarget::Undefined(n) => n.clone(),
                _ => String::new(),
            };
            self.refuse(
                &name,
                format!(
                    "a GOT reference to {name}{addend:+} points inside the symbol, which a GOT entry \
                     (the symbol's address) cannot express"
                ),
            );
        }
        (target, addend)
    }

    fn resolve_target(&mut self, from_sec: usize, r: &Reloc) -> (OutTarget, i64) {
        let p = self.patched;
        let sym = &p.symbols[r.sym()];
        if r.symbol == 0 {
            // No symbol (ppc64 R_PPC64_ENTRY): the relocation stays as it is.
            return (OutTarget::NoSymbol, r.addend);
        }
        let Some(sec) = sym.sec() else {
            return (self.external_undefined(sym.name), r.addend);
        };
        if is_entity(p, r.sym()) || is_special(p, r.sym()) {
            return match self.entity(r.sym()) {
                Resolved::Internal(t) | Resolved::External(t) => (t, r.addend),
            };
        }
        let section = &p.sections[sec];
        let in_section = r.addend + sym.value as i64;
        let off = p
            .backend()
            .target_offset(r.r_type, in_section, p.site(from_sec, r.offset));
        if let Some(cover) = u64::try_from(off)
            .ok()
            .and_then(|o| p.symbol_covering(sec, o))
            && (is_entity(p, cover) || is_special(p, cover))
        {
            let relative = in_section - p.symbols[cover].value as i64;
            return match self.entity(cover) {
                Resolved::Internal(_) => (OutTarget::Location(sec), in_section),
                Resolved::External(t) => (t, relative),
            };
        }
        if is_ignored_section(section.name) || !section.is_alloc() || !section.is_content() {
            return (OutTarget::Dropped(sec), in_section);
        }
        if let Some(size) = private_entry_size(p.backend(), section.name) {
            // A table of address-sized entries (ppc64 `.toc`): take only the entry referenced.
            let entry = (off.max(0) as u64) / size * size;
            if entry >= section.size {
                self.refuse(
                    section.name,
                    format!("a reference to offset {off:#x} lies outside the section"),
                );
                return (OutTarget::Dropped(sec), in_section);
            }
            self.include_range(sec, (entry, (entry + size).min(section.size)));
            return (OutTarget::Location(sec), in_section);
        }
        if section.is_write() && !is_sanitizer_site(self.patched, sec) {
            self.refuse(
                section.name,
                "patched code refers to writable data without a symbol; it cannot be shared with the running kernel"
                    .to_string(),
            );
        }
        self.include_section(sec);
        (OutTarget::Location(sec), in_section)
    }

    /// Some relocation types cannot reach outside the module (ppc64 TOC16): refuse them there.
    fn check_reach(&mut self, sec: usize, r: &Reloc, target: &OutTarget) {
        let name = match target {
            OutTarget::Klp(k) => k.symbol.as_str(),
            OutTarget::Undefined(n) => n.as_str(),
            _ => return,
        };
        if let Err(why) = self.patched.backend().check_external_reference(r.r_type) {
            let p = self.patched;
            let user = p
                .symbol_covering(sec, r.offset)
                .map_or(p.sections[sec].name, |s| p.symbols[s].name);
            let name = name.to_string();
            self.refuse(&name, format!("referenced from {user}: {why}"));
        }
    }

    /// Resolves a reference to a named function or data symbol of the patched object.
    fn entity(&mut self, sym: usize) -> Resolved {
        let p = self.patched;
        if self.included[sym] {
            return Resolved::Internal(OutTarget::Symbol(sym));
        }
        if is_special(p, sym) {
            self.include_symbol(sym);
            return Resolved::Internal(OutTarget::Symbol(sym));
        }
        let Some(twin) = self.corr.twin(sym) else {
            // New in the patched build: it has to travel with the patch.
            self.include_symbol(sym);
            return Resolved::Internal(OutTarget::Symbol(sym));
        };
        if p.symbols[sym].kind == SymKind::Func && self.status[sym] == Some(FuncStatus::Changed) {
            self.include_symbol(sym);
            return Resolved::Internal(OutTarget::Symbol(sym));
        }
        let o = &self.orig.symbols[twin];
        let osec = o.sec().map(|s| self.orig.sections[s].name).unwrap_or("");
        if is_init_section(osec) {
            self.refuse(
                o.name,
                format!(
                    "patched code refers to {} in {osec}, which is freed after boot",
                    o.name
                ),
            );
        }
        let exported = o.global && self.exports.exported(o.name, true);
        Resolved::External(if exported {
            OutTarget::Undefined(o.name.to_string())
        } else {
            self.klp(o.name)
        })
    }

    fn klp(&mut self, name: &'d str) -> OutTarget {
        let (object, source) = (self.object_name, self.orig.source_name);
        let target = self.klp_targets.entry(name).or_insert_with(|| {
            Arc::new(KlpTarget {
                object: object.to_string(),
                symbol: name.to_string(),
                source: source.map(str::to_string),
            })
        });
        OutTarget::Klp(Arc::clone(target))
    }

    /// A symbol the patched object does not define.
    fn external_undefined(&mut self, name: &'d str) -> OutTarget {
        if self.patched.backend().is_module_provided(name) || self.exports.exported(name, false) {
            OutTarget::Undefined(name.to_string())
        } else {
            self.klp(name)
        }
    }

    /// ppc64: a call that leaves the module needs a `nop` for the TOC restore. A call to a function of
    /// this object without one (the compiler made it local) is served by copying the callee in.
    fn check_calls(&mut self, sec: usize, piece: usize, relocs: &mut [OutReloc]) {
        let p = self.patched;
        let backend = p.backend();
        let section = &p.sections[sec];
        let ranges = self.out.pieces[piece].ranges.clone();
        if ranges.len() != 1 {
            return;
        }
        let (start, end) = ranges[0];
        let Some(code) = section.data.get(start as usize..end as usize) else {
            return;
        };
        let inputs = p.relocs_in(sec, start, end);
        // The backend's view of the code, made when a call first needs checking.
        let mut views = None;
        for (i, r) in inputs.iter().enumerate() {
            if backend.reloc_class(r.r_type) != RelocClass::Call {
                continue;
            }
            if !matches!(
                relocs[i].target,
                OutTarget::Klp(_) | OutTarget::Undefined(_)
            ) {
                continue;
            }
            let views = views.get_or_insert_with(|| p.code_relocs(sec, start, end));
            let f = FunctionCode {
                name: section.name,
                section: section.name,
                bytes: code,
                relocs: views,
                st_other: 0,
                entry_sites: &[],
            };
            let Err(why) = backend.check_external_call(&f, i) else {
                continue;
            };
            let owner = p
                .symbol_covering(sec, r.offset)
                .map_or(section.name, |s| p.symbols[s].name);
            // The callee, also when gas refers to it by section symbol (`bl .text.foo`).
            let callee = referenced_entity(p, sec, r, false)
                .filter(|&c| is_entity(p, c) && p.symbols[c].kind == SymKind::Func);
            let Some(callee) = callee else {
                self.refuse(owner, why);
                continue;
            };
            let callee_sec = p.symbols[callee].sec().expect("entities are defined");
            if is_init_section(p.sections[callee_sec].name) {
                // Never copied: resolving the reference already refused it as __init.
                continue;
            }
            if !self.included[callee] {
                self.include_symbol(callee);
                self.out.copied_functions.push(callee);
            }
            relocs[i].target = if r.sym() == callee {
                OutTarget::Symbol(callee)
            } else {
                relocs[i].addend = r.addend + p.symbols[r.sym()].value as i64;
                OutTarget::Location(callee_sec)
            };
        }
    }

    /// Keeps the special-section entries that belong to emitted code, and checks what they refer to.
    fn select_special_entries(&mut self) {
        let p = self.patched;
        let backend = p.backend();
        for (sec, section) in p.sections.iter().enumerate() {
            // A table of the same name that holds no data (a relocation section, say) is not one.
            let Some(spec) =
                special_section(backend, section.name).filter(|_| section.is_content())
            else {
                continue;
            };
            if self.objtool_tables.contains(&section.name) {
                continue;
            }
            let entries = match split_entries(p, sec, &spec) {
                Ok(e) => e,
                Err(why) => {
                    if self.emitted_any(sec) {
                        self.refuse(section.name, why);
                    }
                    continue;
                }
            };
            let mut kept = Vec::new();
            let mut kept_index = Vec::new();
            let mut kept_owner = Vec::new();
            for (n, &(s, e)) in entries.iter().enumerate() {
                let owner = p.relocs_in(sec, s, e).iter().find_map(|r| {
                    let t = &p.symbols[r.sym()];
                    let tsec = t.sec()?;
                    let off =
                        backend.target_offset(r.r_type, r.addend, Site::Data) + t.value as i64;
                    p.sections[tsec].is_exec().then_some((tsec, off))
                });
                if let Some((tsec, off)) = owner
                    && off >= 0
                    && self.is_emitted(tsec, off as u64)
                {
                    kept.push((s, e));
                    kept_index.push(n);
                    kept_owner.push(tsec);
                }
            }
            if kept.is_empty() {
                continue;
            }
            self.out
                .special_entries
                .push((section.name.to_string(), kept.len()));
            if section.is_link_order() {
                // A link-order table belongs to the code its entries describe. gcc may put the
                // entries of several functions in one such section linked to the first function's
                // section (`__patchable_function_entries` → `.init.text`), which is not emitted: each
                // run of entries goes out linked to the section it describes, as the linker needs
                // every input section of the name to be link-order.
                let mut start = 0;
                while start < kept.len() {
                    let owner = kept_owner[start];
                    let end = (start..kept.len())
                        .find(|&i| kept_owner[i] != owner)
                        .unwrap_or(kept.len());
                    self.add_piece(sec, kept[start..end].to_vec(), Some(owner));
                    start = end;
                }
            } else {
                self.add_piece(sec, kept.clone(), None);
            }
            self.check_keys(section.name, &kept);
            if let Some((parallel, size)) = spec.parallel
                && let Some(psec) = p
                    .sections
                    .iter()
                    .position(|s| s.name == parallel && s.is_content())
            {
                if p.sections[psec].size != entries.len() as u64 * size {
                    self.refuse(
                        parallel,
                        format!(
                            "{parallel} does not have one {size}-byte entry per {} entry",
                            section.name
                        ),
                    );
                    continue;
                }
                let ranges = kept_index
                    .iter()
                    .map(|&n| (n as u64 * size, (n as u64 + 1) * size))
                    .collect();
                self.add_piece(psec, ranges, None);
            }
        }
    }

    fn emitted_any(&self, sec: usize) -> bool {
        let p = self.patched;
        p.relocs(sec).iter().any(|r| {
            let t = &p.symbols[r.sym()];
            t.sec()
                .is_some_and(|s| p.sections[s].is_exec() && self.is_emitted(s, t.value))
        })
    }

    /// Static keys and static calls are wired up when the patch module loads. Livepatch relocations
    /// against vmlinux are written before that (kernel/livepatch/core.c, klp_write_section_relocs: "so
    /// that jump_label_apply_nops can access unexported vmlinux symbols"), so vmlinux keys are fine;
    /// a key in a module is resolved only when that module loads, too late for the patch's tables.
    fn check_keys(&mut self, name: &str, kept: &[(u64, u64)]) {
        let p = self.patched;
        let Some(what) = special_section(p.backend(), name).and_then(|s| s.keys) else {
            return;
        };
        if self.object_name == "vmlinux" {
            return;
        }
        let sec = p
            .sections
            .iter()
            .position(|s| s.name == name)
            .expect("section exists");
        for &(s, e) in kept {
            for r in p.relocs_in(sec, s, e) {
                let t = &p.symbols[r.sym()];
                if t.sec().is_some_and(|ts| p.sections[ts].is_exec()) {
                    continue;
                }
                let key = if t.kind == SymKind::Section {
                    let off = r.addend.max(0) as u64;
                    t.sec()
                        .and_then(|ts| p.symbol_covering(ts, off))
                        .map(|c| canonical(p.symbols[c].name).into_owned())
                        .unwrap_or_else(|| t.name.to_string())
                } else {
                    t.name.to_string()
                };
                let exported = t.global && self.exports.exported(t.name, t.section.is_some());
                let new_in_patch = t.section.is_some()
                    && is_entity(p, r.sym())
                    && self.corr.twin(r.sym()).is_none();
                if exported || new_in_patch {
                    continue;
                }
                self.refuse(
                    &key,
                    format!(
                        "{what} used by patched code lives in module {}, which may load after the patch; \
                         read it with static_key_enabled() instead",
                        self.object_name
                    ),
                );
            }
        }
    }
}

/// Two symbols at the same place (aliases).
fn same_place(obj: &ObjectFile, a: usize, b: usize) -> bool {
    let (x, y) = (&obj.symbols[a], &obj.symbols[b]);
    x.value == y.value && x.size == y.size
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::differ::{DiffOptions, Exports, Verdict, diff};
    use crate::objfile::ObjectFile;
    use crate::objfile::test_elf::{FIRST, Sec, build};
    use crate::writer::diff_object::write_object;

    /// A new function with four ORC entries, whose `.orc_unwind` is not a table of data but a relocation
    /// section of that name. It must not be copied into the output as if it were ORC data: the output
    /// would carry a relocation section without a symbol table and not read back.
    #[test]
    fn a_parallel_table_must_hold_data() {
        let text = || Sec::new(".text", 1, 0x6, vec![0xc3; 16]);
        let orig = build(&[text()], &[]);
        let ip = Sec::new(".orc_unwind_ip", 1, 0x2, vec![0; 16]);
        let ip_rela = Sec::rela(
            ".rela.orc_unwind_ip",
            FIRST + 1,
            &[(0, 1, 2, 0), (4, 1, 2, 4), (8, 1, 2, 8), (12, 1, 2, 12)],
        );
        // 24 bytes: one relocation entry, and also the size of four 6-byte ORC entries.
        let fake = Sec::rela(".orc_unwind", FIRST, &[(0, 0, 0, 0)]);
        let patched = build(
            &[text(), ip, ip_rela, fake],
            &[("f", 0x12, FIRST as u16, 0, 16)],
        );
        let o = ObjectFile::parse(Path::new("orig.o"), &orig).expect("orig parses");
        let p = ObjectFile::parse(Path::new("patched.o"), &patched).expect("patched parses");
        let opts = DiffOptions {
            object_name: "vmlinux".into(),
            exports: Exports::default(),
            count_line_changes: false,
            objtool_at_module_link: false,
        };
        let d = diff(&o, &p, &opts).expect("diffs");
        assert_eq!(d.verdict, Verdict::Patchable);
        assert_eq!(d.new_functions, ["f"]);
        let out = write_object(&p, &d).expect("writes");
        let back = ObjectFile::parse(Path::new("out.o"), &out).expect("klpx's output reads back");
        let names: Vec<&str> = back.sections.iter().map(|s| s.name).collect();
        assert!(names.contains(&".orc_unwind_ip"), "{names:?}");
        assert!(!names.contains(&".orc_unwind"), "{names:?}");
    }
}
