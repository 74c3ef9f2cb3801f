//! What a built livepatch module says about itself, read with `object`: its `.modinfo` (name,
//! vermagic, the `klpx_func` records klpx writes), the objects its `.klp.rela.<object>.<section>`
//! sections patch, the `.klp.sym.<object>.<symbol>,<pos>` symbols they resolve against, and whether a
//! signature is appended. For `klpx info`, and for modules klpx did not build (kpatch's): then the
//! patched functions are not recorded, and the rest still is.

use std::collections::BTreeMap;
use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol};
use serde::Serialize;

use super::module::{modinfo_entries, parse_module};
use crate::error::UserError;

/// The marker the kernel's `scripts/sign-file` appends after a module's signature.
const SIGNATURE_MARKER: &[u8] = b"~Module signature appended~\n";

/// One function the livepatch replaces, as klpx recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PatchedFunction {
    /// `vmlinux` or a module name.
    pub object: String,
    pub function: String,
    /// Its position among same-named symbols of the object (0: the name is unique).
    pub sympos: u64,
}

/// What a livepatch module holds.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleContents {
    pub name: String,
    pub arch: &'static str,
    pub vermagic: Option<String>,
    pub livepatch: bool,
    pub description: Option<String>,
    /// Atomic replace, when klpx built it (`None`: not recorded).
    pub replace: Option<bool>,
    pub depends: Vec<String>,
    pub import_ns: Vec<String>,
    pub signed: bool,
    /// Empty for modules klpx did not build.
    pub functions: Vec<PatchedFunction>,
    /// Livepatch object → its livepatch relocations (`.klp.rela` entries).
    pub klp_relocations: BTreeMap<String, usize>,
    /// Livepatch object → the symbols of it the module resolves when it is there.
    pub klp_symbols: BTreeMap<String, Vec<String>>,
}

/// Reads the module at `path`.
pub fn inspect(path: &Path) -> Result<ModuleContents, UserError> {
    let shown = path.display();
    let data = crate::files::read_input(path, "a kernel module (.ko)")?;
    let info = parse_module(path, &data)?;
    let elf = object::File::parse(&*data)
        .map_err(|e| UserError::new(format!("{shown}: not an ELF module: {e}")))?;
    let modinfo = modinfo_entries(
        elf.section_by_name(".modinfo")
            .and_then(|s| s.data().ok())
            .unwrap_or_default(),
    );
    let all = |key: &str| -> Vec<String> {
        modinfo
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mut functions = Vec::new();
    for record in all("klpx_func") {
        // `object:function:sympos`; a function name holds no `:`.
        let mut parts = record.rsplitn(3, ':');
        let (Some(pos), Some(function), Some(object)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(UserError::new(format!(
                "{shown}: a klpx_func record {record:?} is not object:function:sympos"
            )));
        };
        functions.push(PatchedFunction {
            object: object.to_string(),
            function: function.to_string(),
            sympos: pos.parse().map_err(|_| {
                UserError::new(format!("{shown}: klpx_func {record:?}: bad position"))
            })?,
        });
    }
    let mut klp_relocations = BTreeMap::new();
    for s in elf.sections() {
        let Ok(name) = s.name() else { continue };
        if let Some(rest) = name.strip_prefix(".klp.rela.") {
            // `.klp.rela.<object>.<section>`: the object name holds no `.`.
            let object = rest.split('.').next().unwrap_or(rest).to_string();
            let entries = s.size() / 24;
            *klp_relocations.entry(object).or_insert(0) += entries as usize;
        }
    }
    let mut klp_symbols: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for sym in elf.symbols() {
        let Ok(name) = sym.name() else { continue };
        if let Some(rest) = name.strip_prefix(".klp.sym.")
            && let Some((object, symbol)) = rest.split_once('.')
        {
            klp_symbols
                .entry(object.to_string())
                .or_default()
                .push(symbol.to_string());
        }
    }
    for v in klp_symbols.values_mut() {
        v.sort();
        v.dedup();
    }
    let first = |key: &str| all(key).into_iter().next();
    Ok(ModuleContents {
        name: info.name,
        arch: info.arch.name(),
        vermagic: info.vermagic,
        livepatch: info.livepatch,
        description: first("description"),
        replace: first("klpx_replace").map(|v| v == "1"),
        depends: first("depends")
            .map(|d| {
                d.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        import_ns: all("import_ns"),
        signed: data.ends_with(SIGNATURE_MARKER),
        functions,
        klp_relocations,
        klp_symbols,
    })
}
