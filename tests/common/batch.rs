//! One guest boot for many boot cases: the tests of an architecture build their modules first and
//! `klpx verify --cases FILE` then boots the kernel once, each case loaded, checked and removed on
//! its own (a boot of a TCG guest costs 4 s on the tiny x86_64 kernel, 10 to 20 s on ppc64le and
//! Debian's kernels). A case the shared boot did not reach (an earlier case failed, and the guest
//! stops there) is booted on its own, so that each test still answers for its own case only.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Serialize;

use super::cli::text;

/// What one case puts in the guest, as `klpx verify --cases` reads it.
#[derive(Debug, Clone, Serialize)]
pub struct BootCase {
    /// Modules in load order (the livepatch's target module first).
    pub modules: Vec<PathBuf>,
    pub check: Vec<String>,
    pub expect_before: Option<String>,
    pub expect_after: Option<String>,
    pub files: Vec<PathBuf>,
    /// The case's scratch directory (its module, its files), removed once its result is known.
    #[serde(skip)]
    pub scratch: Option<PathBuf>,
}

impl BootCase {
    /// `klpx verify`'s arguments for this case alone (modules, `--check`, `--expect-*`, `--file`).
    pub fn verify_args(&self) -> Vec<String> {
        let mut args: Vec<String> = self
            .modules
            .iter()
            .map(|m| m.display().to_string())
            .collect();
        for c in &self.check {
            args.extend(["--check".into(), c.clone()]);
        }
        for (flag, v) in [
            ("--expect-before", &self.expect_before),
            ("--expect-after", &self.expect_after),
        ] {
            if let Some(v) = v {
                args.extend([flag.into(), v.clone()]);
            }
        }
        for f in &self.files {
            args.extend(["--file".into(), f.display().to_string()]);
        }
        args
    }
}

/// A case's result in the shared boot.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Passed, in a guest that ran this kernel release (`uname -r`).
    Passed(String),
    Failed(String),
    /// The guest stopped before the case (an earlier one failed).
    NotRun,
}

/// What the build step of a case gave: a module to boot, or nothing to boot (a refusal, a
/// no-change, an architecture that cannot load livepatches), or the build's own failure.
pub type Built = Result<Option<BootCase>, String>;

/// The shared boot of one group of cases (an architecture's tiny tree, Debian's kernel): each
/// case's build result and boot outcome, made once by the first test that asks.
pub struct Group {
    results: OnceLock<HashMap<String, (Built, Option<Outcome>)>>,
}

impl Group {
    pub const fn new() -> Group {
        Group {
            results: OnceLock::new(),
        }
    }

    /// The result of case `name`: on first use, `build` runs for every case of `names` (a panic
    /// in it is that case's failure) and the modules boot together with `verify` (`klpx verify
    /// --cases FILE` plus the kernel's arguments); returns the build result and, when it built a
    /// module, the boot outcome. Other callers wait for the first; the caller holds whatever
    /// serialises the tests' builds.
    pub fn result(
        &self,
        name: &str,
        names: &[String],
        build: impl Fn(&str) -> Option<BootCase>,
        verify: impl Fn(&[String]) -> std::process::Output,
    ) -> (Built, Option<Outcome>) {
        let results = self.results.get_or_init(|| {
            let built: Vec<(String, Built)> = names
                .iter()
                .map(|n| {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(n)))
                        .map_err(|p| panic_text(&p));
                    (n.clone(), r)
                })
                .collect();
            let booted: Vec<(&String, &BootCase)> = built
                .iter()
                .filter_map(|(n, r)| match r {
                    Ok(Some(c)) => Some((n, c)),
                    _ => None,
                })
                .collect();
            // A shared boot that gives no report fails every case in it, once: a panic here
            // would leave the group unmade, and the next test would build and boot it all again.
            let outcomes = if booted.is_empty() {
                HashMap::new()
            } else {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    boot_together(&booted, &verify)
                }))
                .unwrap_or_else(|p| {
                    let why = panic_text(&p);
                    booted
                        .iter()
                        .map(|(n, _)| ((*n).clone(), Outcome::Failed(why.clone())))
                        .collect()
                })
            };
            built
                .into_iter()
                .map(|(n, r)| {
                    let o = outcomes.get(&n).cloned();
                    (n, (r, o))
                })
                .collect()
        });
        results
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: not a case of this group"))
    }
}

impl Default for Group {
    fn default() -> Self {
        Group::new()
    }
}

/// `klpx verify --cases FILE --json` over `cases`; each case's outcome by name.
fn boot_together(
    cases: &[(&String, &BootCase)],
    verify: &impl Fn(&[String]) -> std::process::Output,
) -> HashMap<String, Outcome> {
    let dir = std::env::temp_dir().join(format!(
        "klpx-boot-cases-{}-{}",
        std::process::id(),
        cases[0].0
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cases.json");
    let list: Vec<&BootCase> = cases.iter().map(|(_, c)| *c).collect();
    std::fs::write(&file, serde_json::to_vec_pretty(&list).unwrap()).unwrap();
    // 60 s a case (verify's limit is per case; the cases here take 3 to 20 s): a guest that hangs
    // costs minutes, not the default's two minutes a case.
    let out = verify(&[
        "verify".into(),
        "--cases".into(),
        file.display().to_string(),
        "--timeout".into(),
        "60".into(),
        "--json".into(),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "klpx verify --cases printed no report ({e}), exit {:?}:\n{}",
            out.status.code(),
            text(&out.stderr)
        )
    });
    let per_case = report["cases"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        per_case.len(),
        cases.len(),
        "klpx verify --cases reported {} cases of {}: {}",
        per_case.len(),
        cases.len(),
        report["reason"]
    );
    let tail = tail(report["log"].as_str().unwrap_or(""), 60);
    // The first failed case answers for the failure; a later case that did not pass (not run, or
    // not judged after a kernel warning the guest could not see) boots alone.
    let mut failed_before = false;
    cases
        .iter()
        .zip(per_case)
        .map(|((name, _), r)| {
            let reason = r["reason"].as_str().unwrap_or("").to_string();
            let o = if r["passed"] == true {
                Outcome::Passed(report["guest_release"].as_str().unwrap_or("").to_string())
            } else if r["ran"] == true && !std::mem::replace(&mut failed_before, true) {
                Outcome::Failed(format!(
                    "{reason}\n(run reason: {})\nguest log, last lines:\n{tail}",
                    report["reason"]
                ))
            } else {
                Outcome::NotRun
            };
            ((*name).clone(), o)
        })
        .collect()
}

/// The last `n` lines of `log`.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the build step panicked".to_string())
}

/// Asserts a case's result: its build step's panic again, its boot's failure, or, for a case the
/// shared boot did not reach, a boot of its own with `verify` (`klpx verify ARGS...`). Returns the
/// release the guest ran (`uname -r`), when the case booted.
pub fn assert_result(
    name: &str,
    result: (Built, Option<Outcome>),
    verify_alone: impl Fn(&[String]) -> std::process::Output,
) -> Option<String> {
    let (built, outcome) = result;
    let case = match built {
        Err(e) => panic!("{e}"),
        Ok(None) => return None,
        Ok(Some(c)) => c,
    };
    let _scratch = Scratch(case.scratch.clone());
    match outcome {
        Some(Outcome::Passed(release)) => Some(release),
        Some(Outcome::Failed(why)) => panic!("{name}: in the shared boot: {why}"),
        Some(Outcome::NotRun) | None => {
            let mut args = vec!["verify".to_string(), "--json".to_string()];
            args.extend(case.verify_args());
            let out = verify_alone(&args);
            let report: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{name}: verify alone (the shared boot stopped before it): {}\n{}\n{}",
                report["reason"],
                tail(report["log"].as_str().unwrap_or(""), 60),
                text(&out.stderr)
            );
            report["guest_release"].as_str().map(str::to_string)
        }
    }
}

/// Removes a case's scratch directory when its test ends, passed or failed.
struct Scratch(Option<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
