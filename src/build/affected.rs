//! Which objects of a built tree a patch affects, and which livepatch object each belongs to.
//!
//! kbuild records, for every object, the exact compile command and every file it read (`.<obj>.cmd`).
//! An edited `.c` file affects the objects compiled from it; an edited header affects every object whose
//! recorded dependencies include it. `vmlinux.a` (a thin archive) lists what vmlinux links; each module's
//! `.mod` file lists its objects.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::error::{Unpatchable, UserError};
use crate::kbuild::cmdfile::CmdFile;
use crate::kernel::units::CompileUnits;
use crate::patch::source::FileEdit;

/// An object the patch affects.
#[derive(Debug, Clone)]
pub struct AffectedObject {
    /// kbuild's name, relative to the output tree (`fs/proc/cmdline.o`).
    pub object: String,
    /// The livepatch object it is linked into: `vmlinux` or a module name (with `_`).
    pub target: String,
    pub cmd: CmdFile,
}

/// Where every object of a built tree is linked.
#[derive(Debug, Default)]
pub struct LinkMap {
    /// Object → livepatch object name.
    pub owner: HashMap<String, String>,
    /// Module name → its `.ko` path relative to the output tree.
    pub modules: BTreeMap<String, String>,
    /// Made from a prepared tree, where an object with a record may still not be the kernel's.
    pub prepared: bool,
}

impl LinkMap {
    /// Reads `vmlinux.a` and the `.mod` files of `modules.order` in the output tree `objdir`.
    pub fn load(objdir: &Path) -> Result<LinkMap, UserError> {
        let mut map = LinkMap::default();
        let archive = objdir.join("vmlinux.a");
        let data = std::fs::read(&archive).map_err(|e| {
            UserError::new(format!(
                "{}: cannot read ({e}); build the kernel first (make, or klpx build --prepare)",
                archive.display()
            ))
        })?;
        let ar = object::read::archive::ArchiveFile::parse(&*data)
            .map_err(|e| UserError::new(format!("{}: not an archive: {e}", archive.display())))?;
        for m in ar.members() {
            let m = m.map_err(|e| UserError::new(format!("{}: {e}", archive.display())))?;
            let name = String::from_utf8_lossy(m.name()).into_owned();
            map.owner.insert(name, "vmlinux".to_string());
        }
        let order = std::fs::read_to_string(objdir.join("modules.order")).unwrap_or_default();
        for line in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let base = line.trim_end_matches(".o").trim_end_matches(".ko");
            let name = module_name(base);
            let mod_file = objdir.join(format!("{base}.mod"));
            let objects = std::fs::read_to_string(&mod_file).unwrap_or_default();
            for o in objects.split_whitespace() {
                map.owner.insert(o.to_string(), name.clone());
            }
            map.modules.insert(name, format!("{base}.ko"));
        }
        Ok(map)
    }
}

impl LinkMap {
    /// The links of a prepared tree (never built): each object kbuild compiled there belongs to the
    /// module its flags name (`-DMODULE`, `KBUILD_MODNAME`), else to vmlinux; the modules are the
    /// shipped kernel's, from `modules.order` under `modules` (compressed or not).
    pub fn prepared(
        srcdir: &Path,
        objdir: &Path,
        modules: Option<&Path>,
        units: &CompileUnits,
    ) -> Result<LinkMap, UserError> {
        // kbuild records `$(srctree)/fs/x.c` in `O=` builds.
        let src_prefix = format!("{}/", srcdir.display());
        let in_vmlinux = |source: &str, object: &str| {
            let rel = source.strip_prefix(&src_prefix).unwrap_or(source);
            units.has(rel.strip_prefix("./").unwrap_or(rel), &objdir.join(object))
        };
        let mut map = LinkMap {
            prepared: true,
            ..LinkMap::default()
        };
        for path in cmd_files(objdir) {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(cmd) = CmdFile::parse(&text) else {
                continue;
            };
            let owner = if cmd.command.split_whitespace().any(|w| w == "-DMODULE") {
                match modname(&cmd.command) {
                    Some(m) => m,
                    None => continue,
                }
            } else if cmd
                .source
                .as_deref()
                .is_some_and(|s| in_vmlinux(s, &cmd.target))
            {
                "vmlinux".to_string()
            } else {
                // Compiled here, but not part of the shipped kernel.
                continue;
            };
            map.owner.insert(cmd.target.clone(), owner);
        }
        if let Some(dir) = modules {
            let order_file = dir.join("modules.order");
            let order = std::fs::read_to_string(&order_file).map_err(|e| {
                UserError::new(format!("{}: cannot read: {e}", order_file.display()))
            })?;
            for line in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let ko = dir.join(line);
                let found = [".xz", ".zst", ".gz"]
                    .iter()
                    .map(|z| PathBuf::from(format!("{}{z}", ko.display())))
                    .chain([ko.clone()])
                    .find(|p| p.is_file());
                if let Some(p) = found {
                    map.modules
                        .insert(module_name(line), p.display().to_string());
                }
            }
        }
        Ok(map)
    }

    /// Adds an out-of-tree module, built with `make M=`: its `.mod` file (beside the `.ko`) lists its
    /// objects by absolute path. Returns the module's name.
    pub fn add_module(&mut self, ko: &Path) -> Result<String, UserError> {
        let path = ko.display().to_string();
        let base = path.trim_end_matches(".ko");
        let name = module_name(base);
        let mod_file = format!("{base}.mod");
        let objects = std::fs::read_to_string(&mod_file).map_err(|e| {
            UserError::new(format!(
                "{mod_file}: cannot read ({e}); give --oot-module the .ko built in its source directory"
            ))
        })?;
        for o in objects.split_whitespace() {
            self.owner.insert(o.to_string(), name.clone());
        }
        self.modules.insert(name.clone(), path);
        Ok(name)
    }
}

/// The module name a compile command gives (`-DKBUILD_MODNAME='"dummy"'`).
fn modname(command: &str) -> Option<String> {
    let at = command.find("-DKBUILD_MODNAME=")? + "-DKBUILD_MODNAME=".len();
    let rest = &command[at..];
    let word = rest.split_whitespace().next()?;
    let name = word.trim_matches(|c| c == '\'' || c == '"' || c == '\\');
    (!name.is_empty()).then(|| name.to_string())
}

/// The name the kernel gives the module built as `dir/name-x.ko`: `name_x`.
pub fn module_name(path: &str) -> String {
    path.rsplit('/')
        .next()
        .unwrap_or(path)
        .trim_end_matches(".ko")
        .replace('-', "_")
}

/// Refuses, before any long work, edits that no livepatch can carry. `kernel` says the edits are to
/// the kernel's own tree (where `lib/` means the kernel's library).
pub fn check_edits(edits: &[FileEdit], kernel: bool) -> Result<(), Unpatchable> {
    for e in edits {
        let why = if e.rel.ends_with(".S") || e.rel.ends_with(".s") {
            Some("assembly changes cannot be live-patched (no function-level diff of .S files)")
        } else if kernel && e.rel.starts_with("lib/") {
            Some(
                "lib/ is linked into the kernel, its decompressor and its boot code alike; klpx refuses it",
            )
        } else if !(e.rel.ends_with(".c") || e.rel.ends_with(".h")) {
            Some("only .c and .h changes can be live-patched")
        } else if e.before.is_none() && e.rel.ends_with(".c") {
            Some("a new .c file needs a Makefile change, which cannot be live-patched")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(Unpatchable(format!("{}: {why}", e.rel)));
        }
    }
    Ok(())
}

/// Finds the objects that `edits` affect, from the `.cmd` files under `cmd_root` (the kernel output
/// tree, or an out-of-tree module's directory); relative paths in them are relative to the kernel
/// output tree `objdir`. `targets`, when not empty, keeps only objects of those livepatch objects.
/// Notes about skipped objects go to `notes`.
pub fn affected_objects(
    cmd_root: &Path,
    objdir: &Path,
    edits: &[FileEdit],
    links: &LinkMap,
    targets: &[String],
    notes: &mut Vec<String>,
) -> Result<Vec<AffectedObject>, UserError> {
    let edited: HashMap<PathBuf, &str> = edits
        .iter()
        .map(|e| (canonical(&e.path), e.rel.as_str()))
        .collect();
    // A header, or a .c file with no object of its own (kernel/sched/idle.c is #included by
    // build_policy.c): found through the recorded dependency lists of every object.
    let own_object = |e: &FileEdit| {
        let object = format!("{}.o", e.rel.trim_end_matches(".c"));
        e.rel.ends_with(".c")
            && crate::kbuild::cmdfile::cmd_path(cmd_root, &object).is_file()
            && (!links.prepared || links.owner.contains_key(&object))
    };
    let headers = edits.iter().any(|e| !own_object(e));
    let basenames: std::collections::HashSet<&str> = edits
        .iter()
        .map(|e| e.rel.rsplit('/').next().unwrap_or(&e.rel))
        .collect();
    // Only paths ending in an edited file's name are resolved (canonicalising every dependency of
    // every object would cost a system call each).
    let resolve = |p: &str| -> PathBuf {
        if !basenames.contains(p.rsplit('/').next().unwrap_or(p)) {
            return PathBuf::new();
        }
        let p = Path::new(p);
        if p.is_absolute() {
            canonical(p)
        } else {
            canonical(&objdir.join(p))
        }
    };
    let mut found: BTreeMap<String, AffectedObject> = BTreeMap::new();
    let mut consider = |cmd: CmdFile, notes: &mut Vec<String>| {
        let by_source = cmd
            .source
            .as_deref()
            .map(|s| edited.contains_key(&resolve(s)))
            .unwrap_or(false);
        let by_header = headers && cmd.deps.iter().any(|d| edited.contains_key(&resolve(d)));
        if !(by_source || by_header) {
            return;
        }
        let Some(owner) = links.owner.get(&cmd.target) else {
            return;
        };
        if !cmd.is_c_compile() {
            notes.push(format!(
                "{} is not compiled from C; a change there is not live-patched",
                cmd.target
            ));
            return;
        }
        if !targets.is_empty() && !targets.iter().any(|t| module_name(t) == *owner) {
            return;
        }
        found.insert(
            cmd.target.clone(),
            AffectedObject {
                object: cmd.target.clone(),
                target: owner.clone(),
                cmd,
            },
        );
    };
    if headers {
        for path in cmd_files(cmd_root) {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if !basenames.iter().any(|b| text.contains(b)) {
                continue;
            }
            if let Ok(cmd) = CmdFile::parse(&text) {
                consider(cmd, notes);
            }
        }
    } else {
        for e in edits {
            let rel = e.rel.trim_end_matches(".c");
            let path = crate::kbuild::cmdfile::cmd_path(cmd_root, &format!("{rel}.o"));
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let cmd = CmdFile::parse(&text)
                        .map_err(|why| UserError::new(format!("{}: {why}", path.display())))?;
                    consider(cmd, notes);
                }
                Err(_) => notes.push(format!(
                    "{}: not built in {} (no {}); nothing to patch there",
                    e.rel,
                    cmd_root.display(),
                    path.display()
                )),
            }
        }
    }
    Ok(found.into_values().collect())
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// Every `.*.o.cmd` file of an output tree, skipping host tools and the `source` link.
fn cmd_files(objdir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![objdir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                let top = dir == objdir;
                if !(name.starts_with('.') || top && matches!(&*name, "scripts" | "tools" | "usr"))
                {
                    stack.push(e.path());
                }
            } else if ft.is_file() && name.starts_with('.') && name.ends_with(".o.cmd") {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modname_from_flags() {
        assert_eq!(
            modname("gcc -DMODULE -DKBUILD_BASENAME='\"dummy\"' -DKBUILD_MODNAME='\"dummy\"' -c")
                .as_deref(),
            Some("dummy")
        );
        assert_eq!(modname("gcc -c x.c"), None);
    }

    #[test]
    fn module_names_use_underscores() {
        assert_eq!(
            module_name("samples/kobject/kobject-example"),
            "kobject_example"
        );
        assert_eq!(module_name("fs/ext4/ext4.ko"), "ext4");
    }
}
