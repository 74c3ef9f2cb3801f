//! Loading and unloading livepatch modules on the running kernel: `insmod`/`rmmod` as processes,
//! the livepatch core's sysfs files, and waiting for transitions, with kpatch's behaviour: a load
//! whose transition does not finish names the tasks it waits for and is reversed; nothing is ever
//! forced.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::livepatches::StalledTask;
use super::{Machine, kernel_name};
use crate::error::UserError;
use crate::verify::module::read_module;

/// How a load or unload ended when the kernel did not refuse outright.
#[derive(Debug)]
pub enum Outcome {
    /// Done; the livepatch (if it is one) finished its transition.
    Done { name: String },
    /// The transition did not finish within the time given: the tasks it still waited for. A load
    /// was reversed (disabled and removed); an unload is left to finish.
    Stalled {
        name: String,
        tasks: Vec<StalledTask>,
        reversed: bool,
    },
}

/// The names in a directory, sorted.
fn sorted_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `program args...`; its output when it fails.
fn run(program: &str, args: &[&str]) -> Result<Result<(), String>> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if out.status.success() {
        return Ok(Ok(()));
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(Err(text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("failed")
        .trim()
        .to_string()))
}

impl Machine {
    /// Waits until livepatch `patch`'s transition is over (or the patch is gone); false on timeout.
    fn wait_transition(&self, patch: &str, timeout: Duration) -> bool {
        let file = self.livepatch.join(patch).join("transition");
        let start = Instant::now();
        loop {
            match std::fs::read_to_string(&file) {
                Ok(v) if v.trim() == "0" => return true,
                Err(_) => return true,
                Ok(_) => {}
            }
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes `0` or `1` to a livepatch's `enabled`; the kernel's refusal as a sentence.
    fn set_enabled(&self, patch: &str, on: bool) -> Result<(), String> {
        let file = self.livepatch.join(patch).join("enabled");
        std::fs::write(&file, if on { "1" } else { "0" }).map_err(|e| e.to_string())
    }

    /// Loads the livepatch module at `path` and waits for its transition.
    pub fn load(&self, path: &Path, timeout: Duration) -> Result<Outcome> {
        let info = read_module(path)?;
        let name = kernel_name(&info.name);
        if !info.livepatch {
            return Err(UserError::new(format!(
                "{}: not a livepatch module (no MODULE_INFO(livepatch, \"Y\"))",
                path.display()
            ))
            .into());
        }
        self.livepatch_dir()?;
        let running = self.release()?;
        let built_for = info
            .vermagic
            .as_deref()
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("");
        if built_for != running {
            return Err(UserError::new(format!(
                "{}: built for kernel {built_for:?}, but this kernel is {running}; it cannot load here",
                path.display()
            ))
            .into());
        }
        if self.module_loaded(&name) {
            return Err(UserError::new(format!(
                "{name} is already loaded (klpx unload {name} first to load it again)"
            ))
            .into());
        }
        let shown = path.display().to_string();
        if let Err(why) = run("insmod", &[&shown])? {
            return Err(UserError::new(format!(
                "insmod {shown}: {why} (dmesg says why the kernel refused it)"
            ))
            .into());
        }
        if self.wait_transition(&name, timeout) {
            return Ok(Outcome::Done { name });
        }
        let tasks = self.stalled_tasks(1);
        // kpatch's way: a patch that cannot finish is reversed, never forced.
        let _ = self.set_enabled(&name, false);
        let reversed = self.wait_transition(&name, timeout) && self.remove(&name).is_ok();
        Ok(Outcome::Stalled {
            name,
            tasks,
            reversed,
        })
    }

    /// Disables livepatch `name` (a module name, with `-` or `_`, or a `.ko` path), waits for the
    /// transition and removes the module.
    pub fn unload(&self, name: &str, timeout: Duration) -> Result<Outcome> {
        let name = if name.ends_with(".ko") && Path::new(name).is_file() {
            kernel_name(&read_module(Path::new(name))?.name)
        } else {
            kernel_name(name.trim_end_matches(".ko"))
        };
        if !self.module_loaded(&name) {
            return Err(UserError::new(format!("{name} is not loaded")).into());
        }
        let holders = sorted_names(&self.modules.join(&name).join("holders"));
        if !holders.is_empty() {
            return Err(UserError::new(format!(
                "{name} is in use by {} (they depend on it); unload them first",
                holders.join(", ")
            ))
            .into());
        }
        if let Some(patch) = self.loaded_patch(&name) {
            if patch.transition {
                return Err(UserError::new(format!(
                    "livepatch {name} is still in a transition; wait for it, or see `klpx list`"
                ))
                .into());
            }
            if patch.enabled
                && let Err(why) = self.set_enabled(&name, false)
            {
                let above: Vec<String> = self
                    .loaded_patches()
                    .into_iter()
                    .filter(|p| p.name != name && p.enabled)
                    .map(|p| p.name)
                    .collect();
                let hint = if above.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; the kernel disables stacked livepatches newest first: unload {} first",
                        above.join(", ")
                    )
                };
                return Err(UserError::new(format!(
                    "cannot disable livepatch {name}: {why}{hint}"
                ))
                .into());
            }
            if !self.wait_transition(&name, timeout) {
                return Ok(Outcome::Stalled {
                    tasks: self.stalled_tasks(0),
                    name,
                    reversed: false,
                });
            }
        }
        self.remove(&name)
            .map_err(|why| UserError::new(format!("rmmod {name}: {why}")))?;
        Ok(Outcome::Done { name })
    }

    /// `rmmod`, retried for a few seconds: the livepatch core drops its hold on a disabled patch's
    /// module from a work item.
    fn remove(&self, name: &str) -> Result<(), String> {
        let start = Instant::now();
        loop {
            match run("rmmod", &[name]) {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(why)) if start.elapsed() > Duration::from_secs(5) => return Err(why),
                Err(e) => return Err(format!("{e:#}")),
                Ok(Err(_)) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}
