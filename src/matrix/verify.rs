//! `klpx matrix --verify`: after the builds, every architecture's module is proven in qemu at
//! once, each on its own tree's kernel: booted, loaded, the checks run before and after, unloaded.
//! Where the kernel cannot load livepatches (Linux 6.12 on arm64) the module is checked against
//! the tree's vmlinux instead, as `klpx verify` does there.

use std::path::PathBuf;
use std::time::Duration;

use klpx_arch::Arch;

use serde::Serialize;

use super::run::ArchResult;
use crate::verify::{self, VerifyRequest};

/// The checks every architecture runs (`--check`, `--expect-before`, `--expect-after`).
#[derive(Debug, Clone, Default)]
pub struct Checks {
    pub commands: Vec<String>,
    pub expect_before: Option<String>,
    pub expect_after: Option<String>,
    /// Guest time limit per architecture.
    pub timeout: Duration,
    /// The static busybox of each architecture that boots (the caller provides them:
    /// `setup::busybox`).
    pub busybox: Vec<(Arch, PathBuf)>,
}

/// How one architecture's module fared.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// `pass`, `pass (without loading)` or `fail`.
    pub outcome: String,
    pub passed: bool,
    /// One line: why it failed, or what passed.
    pub reason: String,
    /// The checks' output before loading and with the livepatch enabled, one entry per check.
    pub before: Vec<String>,
    pub after: Vec<String>,
    /// The guest's boot and total time (seconds).
    pub seconds: f64,
}

/// The kernel an architecture's module is proven on.
#[derive(Debug, Clone)]
pub struct BootTarget {
    /// The bootable image.
    pub kernel_image: PathBuf,
    /// What the module is checked against when the kernel cannot load livepatches.
    pub reference: Reference,
}

/// The built kernel a module is checked against without loading it.
#[derive(Debug, Clone)]
pub enum Reference {
    /// A built output tree (its vmlinux and Module.symvers).
    Tree(PathBuf),
    /// A shipped kernel: its vmlinux with symbols, Module.symvers, and the directory holding its
    /// modules.
    Shipped {
        vmlinux: PathBuf,
        symvers: PathBuf,
        dir: PathBuf,
    },
}

impl BootTarget {
    /// The kernel an architecture's own output tree built (what `klpx matrix` builds against).
    pub fn of_tree(r: &ArchResult) -> BootTarget {
        BootTarget {
            kernel_image: r.tree.join(r.arch.backend().kernel_image()),
            reference: Reference::Tree(r.tree.clone()),
        }
    }
}

/// Verifies the module of every architecture that built one, all at once, each on its target (or
/// why there is no kernel to boot, which fails the verification); `None` where there was no module.
pub fn verify_all(
    results: &[(ArchResult, Result<BootTarget, String>)],
    checks: &Checks,
) -> Vec<Option<Verified>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = results
            .iter()
            .map(|(r, t)| s.spawn(move || verify_one(r, t.as_ref(), checks)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Some(failed("the verification thread panicked".to_string()))
                })
            })
            .collect()
    })
}

fn failed(reason: String) -> Verified {
    Verified {
        outcome: "fail".into(),
        passed: false,
        reason,
        before: Vec::new(),
        after: Vec::new(),
        seconds: 0.0,
    }
}

fn verify_one(
    r: &ArchResult,
    target: Result<&BootTarget, &String>,
    checks: &Checks,
) -> Option<Verified> {
    let built = r.outcome.as_ref().ok()?;
    let module = built.module.as_ref()?;
    let target = match target {
        Ok(t) => t,
        Err(why) => return Some(failed(format!("no kernel to boot the module on: {why}"))),
    };
    let backend = r.arch.backend();
    if !built.loadable {
        let report = match &target.reference {
            Reference::Tree(tree) => verify::without_loading::check(module, tree, backend),
            Reference::Shipped {
                vmlinux,
                symvers,
                dir,
            } => verify::without_loading::check_against(
                module,
                vmlinux,
                symvers,
                dir,
                &crate::kbuild::links::LinkMap::default(),
                backend,
            ),
        };
        return Some(match report {
            Ok(s) => Verified {
                outcome: if s.passed {
                    "pass (without loading)".into()
                } else {
                    "fail".into()
                },
                passed: s.passed,
                reason: s.reason,
                before: Vec::new(),
                after: Vec::new(),
                seconds: 0.0,
            },
            Err(e) => failed(format!("{e:#}")),
        });
    }
    let mut req = VerifyRequest::new(
        r.arch,
        target.kernel_image.clone(),
        vec![module.to_path_buf()],
    );
    req.checks = checks.commands.clone();
    req.expect_before = checks.expect_before.clone();
    req.expect_after = checks.expect_after.clone();
    req.timeout = checks.timeout;
    req.busybox = checks
        .busybox
        .iter()
        .find(|(a, _)| *a == r.arch)
        .map(|(_, p)| p.clone());
    Some(match verify::run(&req) {
        Ok(v) => {
            let outputs = |after: bool| {
                v.checks
                    .iter()
                    .map(|c| {
                        let r = if after { &c.after } else { &c.before };
                        r.as_ref().map(|r| r.output.clone()).unwrap_or_default()
                    })
                    .collect()
            };
            Verified {
                outcome: if v.passed { "pass" } else { "fail" }.into(),
                passed: v.passed,
                reason: v.reason.clone(),
                before: outputs(false),
                after: outputs(true),
                seconds: v.total_seconds,
            }
        }
        Err(e) => failed(format!("{e:#}")),
    })
}

/// The architectures whose module will boot (a module built for a kernel that loads livepatches),
/// each once: the caller installs their qemu and finds their busybox.
pub fn booting_arches<'a>(results: impl IntoIterator<Item = &'a ArchResult>) -> Vec<Arch> {
    let mut arches: Vec<Arch> = results
        .into_iter()
        .filter(|r| {
            r.outcome
                .as_ref()
                .is_ok_and(|b| b.loadable && b.module.is_some())
        })
        .map(|r| r.arch)
        .collect();
    arches.sort();
    arches.dedup();
    arches
}
