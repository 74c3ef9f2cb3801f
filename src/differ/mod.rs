//! The object differ: given the original and the patched build of one translation unit, decides what
//! changed, whether it can be live-patched, and what the livepatch module must carry.

mod compare;
mod correlate;
pub mod lines;
pub mod names;
pub mod select;
mod special;

use std::collections::{HashMap, HashSet};

use klpx_arch::{Arch, FunctionCode, Site, special_section};
use serde::Serialize;

use crate::error::UserError;
use crate::objfile::{ObjectFile, SymKind};
use compare::{Sameness, compare, extent, same_contents};
use correlate::{Correlation, is_entity};
use names::{ChildKind, canonical, child_parent, is_ignored_section};
use select::Selector;
pub use select::{FuncStatus, KlpTarget, OutReloc, OutTarget, Piece, Selection};

/// Which kernel symbols the module loader can resolve by itself.
#[derive(Debug, Clone, Default)]
pub struct Exports {
    /// Symbols exported to modules (from `Module.symvers`), or `None` when unknown.
    pub symbols: Option<HashSet<String>>,
    /// Exports in a symbol namespace (`EXPORT_SYMBOL_NS`): symbol → namespace. A module that uses
    /// one must import the namespace, or modpost and the module loader refuse it.
    pub namespaces: std::collections::HashMap<String, String>,
}

impl Exports {
    /// Whether `name` can be left to the module loader. Without an export list, symbols defined elsewhere
    /// are assumed exported and symbols defined in the object itself are not.
    pub fn exported(&self, name: &str, defined_here: bool) -> bool {
        match &self.symbols {
            Some(set) => set.contains(name),
            None => !defined_here,
        }
    }

    /// Parses a kbuild `Module.symvers` (`crc<TAB>symbol<TAB>module<TAB>export<TAB>namespace`), keeping
    /// what vmlinux exports: a module's own exports are no use to a patch that may load before it.
    pub fn from_symvers(text: &str) -> Exports {
        let mut symbols = HashSet::new();
        let mut namespaces = std::collections::HashMap::new();
        for l in text.lines() {
            let mut f = l.split('\t');
            let (Some(_), Some(sym), Some(module)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if module != "vmlinux" {
                continue;
            }
            symbols.insert(sym.to_string());
            if let Some(ns) = f.nth(1).map(str::trim).filter(|ns| !ns.is_empty()) {
                namespaces.insert(sym.to_string(), ns.to_string());
            }
        }
        Exports {
            symbols: Some(symbols),
            namespaces,
        }
    }
}

/// What the differ needs besides the two objects.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// The livepatch object the code belongs to: `vmlinux` or a module name.
    pub object_name: String,
    pub exports: Exports,
    /// Counts functions whose only change is a line number as changed (see [`lines`]).
    pub count_line_changes: bool,
    /// The module's link runs objtool (`Backend::objtool_at_module_link`): the tables it writes
    /// stay out of the output, for it to write them for the whole module.
    pub objtool_at_module_link: bool,
}

/// A change that cannot be live-patched, with the symbol it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub symbol: String,
    pub reason: String,
}

/// The verdict on a pair of objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Patchable,
    NoChange,
    Unpatchable,
}

/// A changed function and the name the running kernel knows it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatchedFunction {
    pub name: String,
    pub old_name: String,
}

/// The result of diffing two objects.
#[derive(Debug)]
pub struct Diff {
    pub arch: Arch,
    /// The livepatch object (`vmlinux` or a module name) the code belongs to.
    pub object_name: String,
    pub verdict: Verdict,
    pub changed_functions: Vec<PatchedFunction>,
    pub new_functions: Vec<String>,
    pub changed_data: Vec<String>,
    pub new_data: Vec<String>,
    pub copied_functions: Vec<String>,
    /// Functions whose code differs only in line numbers, taken as unchanged (see [`lines`]).
    pub line_only_functions: Vec<String>,
    pub refusals: Vec<Refusal>,
    pub selection: Selection,
}

/// Refuses two objects that are not builds of one translation unit: their source file symbols
/// differ, or the patched object lacks most of the original's global symbols. Diffing those would
/// call nearly everything new and might still end in a "patchable" module.
fn same_unit(orig: &ObjectFile, patched: &ObjectFile) -> Result<(), UserError> {
    if let (Some(a), Some(b)) = (orig.source_name, patched.source_name)
        && a != b
    {
        return Err(UserError::new(format!(
            "{} is built from {b} but {} from {a}; give two builds of the same source file",
            patched.path, orig.path
        )));
    }
    fn globals<'a>(o: &ObjectFile<'a>) -> HashSet<&'a str> {
        o.symbols
            .iter()
            .filter(|s| {
                s.global && s.sec().is_some() && matches!(s.kind, SymKind::Func | SymKind::Object)
            })
            .map(|s| s.name)
            .collect()
    }
    let (old, new) = (globals(orig), globals(patched));
    let kept = old.iter().filter(|n| new.contains(*n)).count();
    if old.len() >= 4 && kept * 2 < old.len() {
        return Err(UserError::new(format!(
            "{} defines only {kept} of the {} global symbols of {}; give two builds of the same source file",
            patched.path,
            old.len(),
            orig.path
        )));
    }
    Ok(())
}

/// Diffs two parsed objects of one translation unit.
pub fn diff(
    orig: &ObjectFile,
    patched: &ObjectFile,
    opts: &DiffOptions,
) -> Result<Diff, UserError> {
    if orig.arch != patched.arch {
        return Err(UserError::new(format!(
            "{}: built for {} but {} is built for {}; give two builds of the same object",
            patched.path, patched.arch, orig.path, orig.arch
        )));
    }
    same_unit(orig, patched)?;
    let corr = Correlation::new(orig, patched);
    let mut refusals = Vec::new();
    let (mut status, line_only_functions) =
        classify_functions(orig, patched, &corr, !opts.count_line_changes);
    let sites = EntrySites::new(orig);
    let through_callers = patch_callers_of_entryless(orig, patched, &corr, &sites, &mut status);

    let mut changed_functions = Vec::new();
    let mut new_functions = Vec::new();
    let mut roots = Vec::new();
    let mut patched_functions = Vec::new();
    let children = children_by_parent(patched);
    for (i, s) in patched.symbols.iter().enumerate() {
        let Some(st) = status[i] else { continue };
        if st == FuncStatus::Unchanged || is_cold_child(s.name) {
            continue;
        }
        roots.push(i);
        if let Some(kids) = children.get(canonical(s.name).as_ref()) {
            roots.extend(kids.iter().copied());
        }
        match st {
            FuncStatus::Changed => {
                let twin = corr.twin(i).expect("changed functions have a twin");
                let old = &orig.symbols[twin];
                changed_functions.push(PatchedFunction {
                    name: s.name.to_string(),
                    old_name: old.name.to_string(),
                });
                patched_functions.push((i, old.name.to_string()));
                check_entry(orig, twin, &sites, &mut refusals);
            }
            FuncStatus::New if through_callers.contains(&i) => {}
            FuncStatus::New => new_functions.push(s.name.to_string()),
            FuncStatus::Unchanged => {}
        }
    }

    let (changed_data, new_data) = classify_data(orig, patched, &corr, &mut refusals);

    let selection = {
        let mut sel = Selector::new(
            orig,
            patched,
            &corr,
            &opts.exports,
            &opts.object_name,
            &status,
            &mut refusals,
        )
        .leaving_objtool_tables(opts.objtool_at_module_link)
        .run(&roots);
        sel.patched_functions = patched_functions;
        sel
    };
    let copied_functions = selection
        .copied_functions
        .iter()
        .map(|&i| patched.symbols[i].name.to_string())
        .collect();

    let new_global_data = patched.symbols.iter().enumerate().any(|(i, s)| {
        s.global
            && s.kind == SymKind::Object
            && is_entity(patched, i)
            && !in_ignored_section(patched, i)
            && corr.twin(i).is_none()
    });
    let verdict = if !refusals.is_empty() {
        Verdict::Unpatchable
    } else if changed_functions.is_empty() && new_functions.is_empty() && !new_global_data {
        Verdict::NoChange
    } else {
        Verdict::Patchable
    };
    Ok(Diff {
        arch: patched.arch,
        object_name: opts.object_name.clone(),
        verdict,
        changed_functions,
        new_functions,
        changed_data,
        new_data,
        copied_functions,
        line_only_functions,
        refusals,
        selection,
    })
}

fn is_cold_child(name: &str) -> bool {
    matches!(child_parent(&canonical(name)), Some((_, ChildKind::Cold)))
}

/// Status of every patched function symbol (`None` for everything else), and the functions taken
/// as unchanged because only line numbers differ (with `lines`). A `.cold` child's change is its
/// parent's change.
fn classify_functions(
    orig: &ObjectFile,
    patched: &ObjectFile,
    corr: &Correlation,
    lines: bool,
) -> (Vec<Option<FuncStatus>>, Vec<String>) {
    let mut status: Vec<Option<FuncStatus>> = vec![None; patched.symbols.len()];
    let mut line_only = Vec::new();
    for (i, s) in patched.symbols.iter().enumerate() {
        if s.kind != SymKind::Func || !is_entity(patched, i) || in_ignored_section(patched, i) {
            continue;
        }
        status[i] = Some(match corr.twin(i) {
            None => FuncStatus::New,
            Some(o) => match compare(orig, &corr.orig, o, patched, &corr.patched, i, lines) {
                Sameness::Same => FuncStatus::Unchanged,
                Sameness::LinesOnly => {
                    line_only.push(s.name.to_string());
                    FuncStatus::Unchanged
                }
                Sameness::Different => FuncStatus::Changed,
            },
        });
    }
    for (i, s) in patched.symbols.iter().enumerate() {
        if status[i] != Some(FuncStatus::Changed) && status[i] != Some(FuncStatus::New) {
            continue;
        }
        let canon = canonical(s.name);
        if let Some((parent, ChildKind::Cold)) = child_parent(&canon)
            && let Some(&p) = corr.patched.by_key.get(parent)
            && status[p] == Some(FuncStatus::Unchanged)
        {
            status[p] = Some(FuncStatus::Changed);
            line_only.retain(|n| canonical(n) != parent);
        }
    }
    (status, line_only)
}

/// `.cold` and `.part` children of every function, by the parent's canonical name: they travel with it.
fn children_by_parent(obj: &ObjectFile) -> HashMap<String, Vec<usize>> {
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, s) in obj.symbols.iter().enumerate() {
        if s.kind != SymKind::Func || !is_entity(obj, i) {
            continue;
        }
        if let Some((parent, _)) = child_parent(&canonical(s.name)) {
            map.entry(parent.to_string()).or_default().push(i);
        }
    }
    map
}

fn in_ignored_section(obj: &ObjectFile, sym: usize) -> bool {
    obj.symbols[sym]
        .sec()
        .is_some_and(|s| is_ignored_section(obj.sections[s].name))
}

/// Data symbols: changed existing ones are refused (the running kernel keeps using its copy); new ones
/// are listed.
fn classify_data(
    orig: &ObjectFile,
    patched: &ObjectFile,
    corr: &Correlation,
    refusals: &mut Vec<Refusal>,
) -> (Vec<String>, Vec<String>) {
    let mut changed = Vec::new();
    let mut new = Vec::new();
    for (i, s) in patched.symbols.iter().enumerate() {
        if s.kind != SymKind::Object || !is_entity(patched, i) || in_ignored_section(patched, i) {
            continue;
        }
        if correlate::is_special(patched, i) {
            continue;
        }
        match corr.twin(i) {
            None => new.push(s.name.to_string()),
            Some(o) if same_contents(orig, &corr.orig, o, patched, &corr.patched, i) => {}
            Some(o) => {
                let sec = &patched.sections[s.sec().expect("entities are defined")];
                let what = if sec.is_nobits() { "bss" } else { "data" };
                let old = &orig.symbols[o];
                let detail = if old.size != s.size {
                    format!("size {} -> {}", old.size, s.size)
                } else {
                    "initial value or references".to_string()
                };
                refusals.push(Refusal {
                    symbol: s.name.to_string(),
                    reason: format!(
                        "changed existing {what} in {} ({detail}): the running kernel keeps its copy; use a shadow variable or new data",
                        sec.name
                    ),
                });
                changed.push(s.name.to_string());
            }
        }
    }
    (changed, new)
}

/// Call sites recorded in `__mcount_loc` and `__patchable_function_entries`: (section, offset), sorted.
struct EntrySites(Vec<(usize, i64)>);

impl EntrySites {
    fn new(obj: &ObjectFile) -> EntrySites {
        let backend = obj.backend();
        let mut sites = Vec::new();
        for (index, table) in obj.sections.iter().enumerate() {
            if table.name != "__mcount_loc" && table.name != "__patchable_function_entries" {
                continue;
            }
            debug_assert!(special_section(backend, table.name).is_some());
            for r in obj.relocs(index) {
                let t = &obj.symbols[r.sym()];
                if let Some(sec) = t.sec() {
                    let at = backend.target_offset(r.r_type, r.addend, Site::Data) + t.value as i64;
                    sites.push((sec, at));
                }
            }
        }
        sites.sort_unstable();
        EntrySites(sites)
    }

    /// Sites in section `sec`, as offsets from `start`.
    fn relative_to(&self, sec: usize, start: u64) -> Vec<i64> {
        let lo = self.0.partition_point(|&(s, _)| s < sec);
        let hi = lo + self.0[lo..].partition_point(|&(s, _)| s == sec);
        self.0[lo..hi]
            .iter()
            .map(|&(_, at)| at - start as i64)
            .collect()
    }
}

/// A changed static function without a patchable entry cannot be redirected itself: the kernel's
/// `inline` is `notrace`, and an inline function the compiler kept out of line (`__do_sys_prctl`
/// once IA32_EMULATION gives it two callers) has no ftrace entry. Its callers can be, when every
/// reference to its entry is a call from a function that has one: they are patched (marked
/// changed), and the function travels in the module as their callee (marked new, not reported as
/// such). Returns the functions handled so; the others are refused as before.
fn patch_callers_of_entryless(
    orig: &ObjectFile,
    patched: &ObjectFile,
    corr: &Correlation,
    sites: &EntrySites,
    status: &mut [Option<FuncStatus>],
) -> HashSet<usize> {
    let mut handled = HashSet::new();
    for f in 0..patched.symbols.len() {
        if status[f] != Some(FuncStatus::Changed) || patched.symbols[f].global {
            continue;
        }
        let Some(twin) = corr.twin(f) else { continue };
        if entry_of(orig, twin, sites).is_ok() {
            continue;
        }
        let Some(callers) = callers_of(patched, f) else {
            continue;
        };
        let patchable = !callers.is_empty()
            && callers.iter().all(|&c| {
                status[c].is_some()
                    && corr
                        .twin(c)
                        .is_some_and(|t| entry_of(orig, t, sites).is_ok())
            });
        if !patchable {
            continue;
        }
        for c in callers {
            if status[c] == Some(FuncStatus::Unchanged) {
                status[c] = Some(FuncStatus::Changed);
            }
        }
        status[f] = Some(FuncStatus::New);
        handled.insert(f);
    }
    handled
}

/// The functions that reference function `f`'s entry, when every such reference is in a function
/// (a call); `None` when some reference is not (its address is taken in data).
fn callers_of(obj: &ObjectFile, f: usize) -> Option<HashSet<usize>> {
    let target = &obj.symbols[f];
    let fsec = target.sec()?;
    let mut callers = HashSet::new();
    for (sec, section) in obj.sections.iter().enumerate() {
        // Debug information and the kernel's tables about code (bug, jump, exception tables)
        // describe code; they take no function's address.
        if !section.is_alloc() || klpx_arch::special_section(obj.backend(), section.name).is_some()
        {
            continue;
        }
        for r in obj.relocs(sec) {
            let sym = &obj.symbols[r.sym()];
            let base = match sym.kind {
                SymKind::Section => 0,
                _ => sym.value as i64,
            };
            if sym.sec() != Some(fsec) {
                continue;
            }
            let at = obj
                .backend()
                .target_offset(r.r_type, r.addend, obj.site(sec, r.offset))
                + base;
            if at != target.value as i64 {
                continue;
            }
            if !section.is_exec() {
                return None;
            }
            match obj.symbol_covering(sec, r.offset) {
                Some(c) if obj.symbols[c].kind == SymKind::Func => {
                    if c != f {
                        callers.insert(c);
                    }
                }
                _ => return None,
            }
        }
    }
    Some(callers)
}

/// Where function `sym` of `orig` has its ftrace entry, or what was seen instead.
fn entry_of(orig: &ObjectFile, sym: usize, sites: &EntrySites) -> Result<&'static str, String> {
    let s = &orig.symbols[sym];
    let Some(sec) = s.sec() else {
        return Err("undefined".to_string());
    };
    let (start, end) = extent(orig, sym);
    let bytes = orig.sections[sec]
        .data
        .get(start as usize..end as usize)
        .unwrap_or(&[]);
    let views = orig.code_relocs(sec, start, end);
    let sites = sites.relative_to(sec, start);
    orig.backend().find_entry(&FunctionCode {
        name: s.name,
        section: orig.sections[sec].name,
        bytes,
        relocs: &views,
        st_other: s.st_other,
        entry_sites: &sites,
    })
}

/// A changed function needs an ftrace entry in the running kernel's build to be redirected.
fn check_entry(orig: &ObjectFile, sym: usize, sites: &EntrySites, refusals: &mut Vec<Refusal>) {
    if orig.symbols[sym].sec().is_none() {
        return;
    }
    if let Err(why) = entry_of(orig, sym, sites) {
        refusals.push(Refusal {
            symbol: orig.symbols[sym].name.to_string(),
            reason: format!("changed function has no patchable entry: {why}"),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Exports;

    #[test]
    fn symvers_keeps_vmlinux_exports() {
        let e = Exports::from_symvers(
            "0x1\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n0x2\tmod_fn\tdrivers/foo\tEXPORT_SYMBOL_GPL\t\n",
        );
        assert!(e.exported("printk", false));
        assert!(!e.exported("mod_fn", false));
        assert!(!e.exported("other", false));
        let unknown = Exports::default();
        assert!(unknown.exported("printk", false));
        assert!(!unknown.exported("local_fn", true));
    }
}
