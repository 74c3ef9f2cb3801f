//! The livepatches a running kernel has loaded, as `/sys/kernel/livepatch` shows them
//! (Documentation/ABI/testing/sysfs-kernel-livepatch), and the tasks a transition waits for
//! (`/proc/<pid>/task/<tid>/patch_state`).

use std::path::Path;

use serde::Serialize;

use super::Machine;

/// One loaded livepatch.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedPatch {
    pub name: String,
    pub enabled: bool,
    /// A transition (enabling or disabling) is still going on.
    pub transition: bool,
    /// Atomic replace (`None`: the kernel does not say; the `replace` file came in 6.11).
    pub replace: Option<bool>,
    pub objects: Vec<PatchedObject>,
}

/// An object a livepatch patches: `vmlinux` or a module.
#[derive(Debug, Clone, Serialize)]
pub struct PatchedObject {
    pub name: String,
    /// The object is loaded and its functions redirected.
    pub patched: bool,
    /// `function,sympos` as the kernel names its directories.
    pub functions: Vec<String>,
}

/// A task a transition has not reached yet.
#[derive(Debug, Clone, Serialize)]
pub struct StalledTask {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// The innermost frame of its kernel stack, when the kernel shows it.
    pub stack: Option<String>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn flag(path: &Path) -> Option<bool> {
    read_trimmed(path).map(|v| v == "1")
}

fn sorted_dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

impl Machine {
    /// Every loaded livepatch, by name.
    pub fn loaded_patches(&self) -> Vec<LoadedPatch> {
        sorted_dirs(&self.livepatch)
            .into_iter()
            .filter_map(|name| self.loaded_patch(&name))
            .collect()
    }

    /// The loaded livepatch `name` (the kernel's name, with `_`).
    pub fn loaded_patch(&self, name: &str) -> Option<LoadedPatch> {
        let dir = self.livepatch.join(name);
        let enabled = flag(&dir.join("enabled"))?;
        let objects = sorted_dirs(&dir)
            .into_iter()
            .map(|object| {
                let odir = dir.join(&object);
                PatchedObject {
                    patched: flag(&odir.join("patched")).unwrap_or(false),
                    functions: sorted_dirs(&odir),
                    name: object,
                }
            })
            .collect();
        Some(LoadedPatch {
            name: name.to_string(),
            enabled,
            transition: flag(&dir.join("transition")).unwrap_or(false),
            replace: flag(&dir.join("replace")),
            objects,
        })
    }

    /// Tasks whose `patch_state` is not yet `target` (1 while enabling, 0 while disabling).
    pub fn stalled_tasks(&self, target: i32) -> Vec<StalledTask> {
        let mut out = Vec::new();
        let pids = std::fs::read_dir(&self.proc)
            .into_iter()
            .flatten()
            .flatten();
        for p in pids {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let tasks = std::fs::read_dir(p.path().join("task"))
                .into_iter()
                .flatten()
                .flatten();
            for t in tasks {
                let Ok(tid) = t.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let dir = t.path();
                let Some(state) = read_trimmed(&dir.join("patch_state")) else {
                    continue;
                };
                if state.parse::<i32>().ok() == Some(target) || state == "-1" {
                    continue;
                }
                out.push(StalledTask {
                    pid,
                    tid,
                    comm: read_trimmed(&dir.join("comm")).unwrap_or_default(),
                    stack: std::fs::read_to_string(dir.join("stack"))
                        .ok()
                        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
                        .filter(|l| !l.is_empty()),
                });
            }
        }
        out.sort_by_key(|t| (t.pid, t.tid));
        out
    }
}
