//! Which objects of a built tree a patch affects, and which livepatch object each belongs to.
//!
//! kbuild records, for every object, the exact compile command and every file it read (`.<obj>.cmd`).
//! An edited `.c` file affects the objects compiled from it; an edited header affects every object whose
//! recorded dependencies include it. `vmlinux.a` (a thin archive) lists what vmlinux links; each module's
//! `.mod` file lists its objects.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::error::{Unpatchable, UserError};
use crate::kbuild::cmdfile::{CmdFile, cmd_files};
use crate::kbuild::links::{LinkMap, module_name};
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
