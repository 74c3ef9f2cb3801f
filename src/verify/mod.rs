//! `klpx verify`: boots a kernel in qemu with a generated initramfs, runs check commands, loads the
//! livepatch module(s), waits for each transition, runs the checks again, disables the livepatches,
//! unloads the modules, and reports what happened at each step. A workload runs after every
//! transition. A step whose result never arrived is a failure, not a pass: a verification that did
//! not see a step work cannot say it did.
//!
//! One boot can verify several cases ([`VerifyCase`]), one after the other, each with its own
//! modules, checks and expectations: a boot costs seconds to a minute under TCG, a case a second or
//! two. Each case starts on the kernel the case before left as it found it (its livepatches
//! disabled, its modules removed, its checks showing the old behaviour again); the first case that
//! fails ends the run, since the kernel's state is no longer known, and the cases after it fail.
//!
//! [`run`] takes plain values ([`VerifyRequest`]) and returns a [`VerifyReport`]; the command line
//! lives in `cmd::verify`. Per-architecture facts (emulator, machine, console, halt) come from the
//! architecture's backend.

pub mod cases;
pub mod guest;
pub mod initramfs;
pub mod inspect;
pub mod module;
pub mod qemu;
pub mod without_loading;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use klpx_arch::Arch;
use serde::Serialize;

use crate::error::UserError;
use guest::{CaseId, GuestLog, GuestModule, Plan, PlanCase, Step};
use module::ModuleInfo;

/// Default time limit for the whole guest run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default time limit for one livepatch transition inside the guest.
pub const DEFAULT_TRANSITION_TIMEOUT: Duration = Duration::from_secs(30);

/// One case of a run: modules loaded together, checks run before loading, with the livepatches
/// enabled and after removing them, and what the checks must print.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyCase {
    /// Modules to load in order; at least one must be a livepatch.
    pub modules: Vec<PathBuf>,
    /// Shell commands run in the guest before loading and after the transitions.
    pub checks: Vec<String>,
    /// Text the checks' output must contain before loading and again after unloading.
    pub expect_before: Option<String>,
    /// Text the checks' output must contain after loading.
    pub expect_after: Option<String>,
    /// Files the case's checks find in `/klpx/files/<name>`, not loaded (a module a check loads
    /// after the livepatch, a helper program).
    pub files: Vec<PathBuf>,
}

/// What to verify, as plain values.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub arch: Arch,
    /// The bootable kernel image (`arch/x86/boot/bzImage`, `vmlinux` on ppc64le).
    pub kernel_image: PathBuf,
    /// Modules to load in order; at least one must be a livepatch. (With `cases`, empty.)
    pub modules: Vec<PathBuf>,
    /// Shell commands run in the guest before loading and after the transitions.
    pub checks: Vec<String>,
    /// Text the checks' output must contain before loading and again after unloading.
    pub expect_before: Option<String>,
    /// Text the checks' output must contain after loading.
    pub expect_after: Option<String>,
    /// The time limit of the whole guest run, every case included.
    pub timeout: Duration,
    pub transition_timeout: Duration,
    pub memory_mb: u32,
    /// KVM or TCG; `Auto` uses KVM when it works here.
    pub accel: qemu::Accel,
    /// Exercise common kernel paths (forks, execs, /proc) after every livepatch transition.
    pub workload: bool,
    /// Files copied to `/klpx/files/<name>` in the guest without being loaded (a module that
    /// checks load after the livepatch, a helper program).
    pub files: Vec<PathBuf>,
    /// Several cases verified in one boot, in order. Empty: the one case `modules`, `checks`,
    /// `expect_before`, `expect_after` and `files` make (which must be empty when this is not).
    pub cases: Vec<VerifyCase>,
    /// The guest's static busybox for `arch` (`setup::busybox` finds or downloads one).
    pub busybox: Option<PathBuf>,
}

impl VerifyRequest {
    /// A request with no checks and the default limits.
    pub fn new(arch: Arch, kernel_image: PathBuf, modules: Vec<PathBuf>) -> VerifyRequest {
        VerifyRequest {
            arch,
            kernel_image,
            modules,
            checks: Vec::new(),
            expect_before: None,
            expect_after: None,
            timeout: DEFAULT_TIMEOUT,
            transition_timeout: DEFAULT_TRANSITION_TIMEOUT,
            memory_mb: 512,
            accel: qemu::Accel::Auto,
            workload: true,
            files: Vec::new(),
            cases: Vec::new(),
            busybox: None,
        }
    }

    /// A request verifying `cases` in one boot, with the default limits (`timeout` covers the
    /// whole run: raise it with the number of cases).
    pub fn with_cases(arch: Arch, kernel_image: PathBuf, cases: Vec<VerifyCase>) -> VerifyRequest {
        let mut req = VerifyRequest::new(arch, kernel_image, Vec::new());
        req.cases = cases;
        req
    }

    /// The cases the run verifies: `cases`, or the one the single-case fields make.
    pub fn cases(&self) -> Vec<VerifyCase> {
        if !self.cases.is_empty() {
            return self.cases.clone();
        }
        vec![VerifyCase {
            modules: self.modules.clone(),
            checks: self.checks.clone(),
            expect_before: self.expect_before.clone(),
            expect_after: self.expect_after.clone(),
            files: self.files.clone(),
        }]
    }

    /// Whether the single-case fields are used as well as `cases` (which one was meant is not
    /// known).
    fn mixes_forms(&self) -> bool {
        !self.cases.is_empty()
            && (!self.modules.is_empty()
                || !self.checks.is_empty()
                || self.expect_before.is_some()
                || self.expect_after.is_some()
                || !self.files.is_empty())
    }
}

/// A command's result in the guest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CommandResult {
    /// Exit status; `None` when the guest never reported one.
    pub status: Option<i32>,
    /// Standard output and error, together.
    pub output: String,
    /// Kernel messages printed on the console while it ran.
    pub kernel_messages: Vec<String>,
}

/// One check command, before loading, with the livepatches enabled, and after unloading.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub command: String,
    pub before: Option<CommandResult>,
    pub after: Option<CommandResult>,
    /// After the livepatches were disabled and the modules removed.
    pub unloaded: Option<CommandResult>,
}

/// One run of the workload ([`guest::WORKLOAD`]), after one livepatch's transition.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadRun {
    /// The transition it followed: `enable` or `disable`.
    pub transition: String,
    /// The livepatch whose transition it was.
    pub patch: String,
    /// The run's result; `None` when the guest reported none (it did not get there, or the
    /// livepatch had no disabling transition of its own because a replacing one took its place).
    pub result: Option<CommandResult>,
}

/// What happened to one module.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleReport {
    pub path: PathBuf,
    pub name: String,
    /// The livepatch name, for livepatch modules.
    pub patch: Option<String>,
    /// `insmod`'s result, if it ran.
    pub load: Option<CommandResult>,
    pub loaded: bool,
    /// How the enabling transition ended: `done`, `timeout`, `missing` (no such livepatch in sysfs).
    pub transition: Option<String>,
    /// `echo 0 > enabled`'s result, if it ran.
    pub disable: Option<CommandResult>,
    /// The livepatch is gone after disabling (its transition finished and it was freed).
    pub disabled: bool,
    pub unload: Option<CommandResult>,
    pub unloaded: bool,
}

/// What happened in one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// The case's number, from 1, as the text report and the guest's markers count.
    pub number: usize,
    pub passed: bool,
    /// One line: why it failed (`did not run: ...` when the guest never began it), or what passed.
    pub reason: String,
    /// The guest began the case.
    pub ran: bool,
    pub expect_before: Option<String>,
    pub expect_after: Option<String>,
    pub modules: Vec<ModuleReport>,
    pub checks: Vec<CheckReport>,
    /// The workload's runs in the guest's order, when it was asked for: after each livepatch's
    /// enabling, in load order, then after each one's disabling, newest first.
    pub workloads: Vec<WorkloadRun>,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Every case passed.
    pub passed: bool,
    /// One line: why it failed (with several cases, which case, and the cases after it), or what
    /// passed.
    pub reason: String,
    pub arch: String,
    pub kernel_image: PathBuf,
    /// The kernel command line the guest booted with.
    pub cmdline: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    pub qemu_command: Vec<String>,
    /// The guest reached klpx's `/init`.
    pub booted: bool,
    /// `uname -r` in the guest.
    pub guest_release: Option<String>,
    /// The only case's modules, checks and workload runs, as in `cases[0]`; empty with several
    /// cases (each case has its own), so that a reader of these does not take one case's for all.
    pub modules: Vec<ModuleReport>,
    pub checks: Vec<CheckReport>,
    pub workloads: Vec<WorkloadRun>,
    /// Every case, in order (one for a request without `cases`).
    pub cases: Vec<CaseReport>,
    /// The script ran to its end (with several cases, also when it stopped after a failed case).
    pub finished: bool,
    /// The step the guest was in when it stopped, if it did not finish.
    pub unfinished: Option<String>,
    pub timed_out: bool,
    /// qemu was stopped early: the kernel faulted and the guest then went silent (a fault that
    /// killed a task holding a lock the guest's next step needs).
    pub stopped_after_fault: bool,
    /// Seconds from starting qemu to the guest's `/init`.
    pub boot_seconds: Option<f64>,
    pub total_seconds: f64,
    /// The guest's serial console.
    pub log: String,
}

/// Checks the inputs, boots the kernel with the modules and checks, and reports. Missing files and
/// modules of another architecture are [`UserError`]s; a guest that fails is a report with
/// `passed: false`.
pub fn run(req: &VerifyRequest) -> Result<VerifyReport> {
    let modules = read_inputs(req)?;
    let backend = req.arch.backend();
    if which::which(backend.qemu_binary()).is_err() {
        return Err(UserError::new(format!(
            "{} is not installed; install {}",
            backend.qemu_binary(),
            backend.qemu_package()
        ))
        .into());
    }
    let busybox = req.busybox.as_deref().ok_or_else(|| {
        UserError::new(format!(
            "no static busybox for the {} guest (Debian's busybox-static)",
            req.arch
        ))
    })?;
    initramfs::check_static(busybox, req.arch)?;

    let cases = req.cases();
    let count = cases.len();
    let mut plan = Plan {
        cases: Vec::new(),
        transition_timeout: req.transition_timeout,
        halt: backend.guest_halt().to_string(),
        workload: req.workload,
    };
    let mut members = Vec::new();
    if req.workload {
        members.push(initramfs::Member {
            path: guest::WORKLOAD_PATH.to_string(),
            perm: 0o755,
            data: guest::WORKLOAD.as_bytes().to_vec(),
        });
    }
    for (k, (case, infos)) in cases.iter().zip(&modules).enumerate() {
        let id = CaseId::of(k, count);
        let planned = PlanCase {
            id,
            modules: infos
                .iter()
                .enumerate()
                .map(|(i, m)| GuestModule {
                    file: guest_module_path(id, i, &m.path),
                    name: m.name.clone(),
                    patch: m.livepatch.then(|| m.patch_name()),
                })
                .collect(),
            checks: case.checks.len(),
            expect_before: case.expect_before.is_some(),
            expect_after: case.expect_after.is_some(),
        };
        for (m, g) in infos.iter().zip(&planned.modules) {
            let data = std::fs::read(&m.path).with_context(|| m.path.display().to_string())?;
            members.push(initramfs::Member {
                path: g.file.clone(),
                perm: 0o644,
                data,
            });
        }
        for f in &case.files {
            let data = std::fs::read(f).with_context(|| f.display().to_string())?;
            members.push(initramfs::Member {
                path: format!("{}/{}", id.files_dir(), guest_name(f)),
                perm: 0o755,
                data,
            });
        }
        for (i, c) in case.checks.iter().enumerate() {
            members.push(initramfs::Member {
                path: id.check_path(i),
                perm: 0o755,
                data: format!("{c}\n").into_bytes(),
            });
        }
        // The guest matches the expectations itself only when a case follows (to stop before it).
        if id.0.is_some() {
            for (stage, text) in [
                ("before", &case.expect_before),
                ("after", &case.expect_after),
            ] {
                if let Some(t) = text {
                    members.push(initramfs::Member {
                        path: id.expect_path(stage),
                        perm: 0o644,
                        data: t.as_bytes().to_vec(),
                    });
                }
            }
        }
        plan.cases.push(planned);
    }
    let initrd = initramfs::build(busybox, &guest::init_script(&plan), &members)?;
    let work = WorkDir::new()?;
    let initrd_path = work.0.join("initrd.gz");
    std::fs::write(&initrd_path, initrd)
        .with_context(|| format!("writing {}", initrd_path.display()))?;

    let cmdline = qemu::kernel_cmdline(req.arch);
    let out = qemu::run(&qemu::QemuConfig {
        arch: req.arch,
        kernel: req.kernel_image.clone(),
        initrd: initrd_path,
        cmdline: cmdline.clone(),
        memory_mb: req.memory_mb,
        timeout: req.timeout,
        boot_marker: guest::BOOT_MARKER.to_string(),
        done_marker: guest::DONE_MARKER.to_string(),
        accel: req.accel,
    })?;
    Ok(assess(req, &modules, out, cmdline))
}

/// The report of one guest run: each step's result as the console log tells it, and the verdict.
/// Apart from qemu, so that the rules are tested on logs. `modules` are each case's, in order.
pub(crate) fn assess(
    req: &VerifyRequest,
    modules: &[Vec<ModuleInfo>],
    out: qemu::QemuOutput,
    cmdline: String,
) -> VerifyReport {
    let g = guest::parse(&out.log);
    let cases = req.cases();
    let count = cases.len();
    let case_reports = cases
        .iter()
        .zip(modules)
        .enumerate()
        .map(|(k, (c, infos))| {
            let id = CaseId::of(k, count);
            CaseReport {
                number: k + 1,
                passed: false,
                reason: String::new(),
                ran: match id.0 {
                    Some(n) => g.cases.contains(&n),
                    None => g.booted.is_some(),
                },
                expect_before: c.expect_before.clone(),
                expect_after: c.expect_after.clone(),
                modules: module_reports(infos, &g, id),
                checks: check_reports(&c.checks, &g, id),
                workloads: workload_runs(infos, &g, req.workload, id),
            }
        })
        .collect();
    let mut report = VerifyReport {
        passed: false,
        reason: String::new(),
        arch: req.arch.name().to_string(),
        kernel_image: req.kernel_image.clone(),
        cmdline,
        accel: out.accel.to_string(),
        qemu_command: out.command.clone(),
        booted: g.booted.is_some(),
        guest_release: g.booted.as_ref().map(|(_, r)| r.clone()),
        modules: Vec::new(),
        checks: Vec::new(),
        workloads: Vec::new(),
        cases: case_reports,
        finished: g.done,
        unfinished: None,
        timed_out: out.timed_out,
        stopped_after_fault: out.stopped_after_fault,
        boot_seconds: out.boot_time.map(|d| d.as_secs_f64()),
        total_seconds: out.elapsed.as_secs_f64(),
        log: out.log,
    };
    report.unfinished = g
        .unfinished
        .as_deref()
        .map(|t| describe_tag(t, &cases, &report.cases));
    let qemu_failed = (out.exit_code.is_some_and(|c| c != 0) && !report.booted)
        .then(|| first_line(&out.stderr).to_string())
        .filter(|e| !e.is_empty());
    let booted = match qemu_failed {
        Some(e) => Err(format!(
            "qemu failed (status {}): {e}",
            status(out.exit_code)
        )),
        None => judge_boot(req, &report),
    };
    match booted {
        Err(e) => {
            for c in &mut report.cases {
                c.reason = format!("did not run: {e}");
            }
            report.reason = if count > 1 {
                format!("{e}; none of the {count} cases ran")
            } else {
                e
            };
        }
        Ok(()) => judge_cases(req, &cases, &mut report, &g),
    }
    if let [only] = report.cases.as_slice() {
        report.modules = only.modules.clone();
        report.checks = only.checks.clone();
        report.workloads = only.workloads.clone();
    }
    report
}

/// Judges every case, in order, and the run: the first case that fails ends the verdicts (the
/// kernel's state was no longer known after it), so each case after it fails whether or not the
/// guest ran it.
fn judge_cases(req: &VerifyRequest, cases: &[VerifyCase], r: &mut VerifyReport, g: &GuestLog) {
    let count = cases.len();
    let mut failed: Option<usize> = None;
    for (k, case) in cases.iter().enumerate() {
        let cr = &r.cases[k];
        let verdict = match failed {
            Some(j) if cr.ran => Err(format!("not judged: it ran after case {j} failed")),
            Some(j) => Err(format!("did not run: case {j} failed")),
            None if !cr.ran => Err(match g.stopped_after {
                Some(j) => format!("did not run: the guest stopped after case {j}"),
                None => "did not run".to_string(),
            }),
            None => judge_case(req, case, CaseId::of(k, count), r, cr, g),
        };
        if verdict.is_err() && failed.is_none() {
            failed = Some(k + 1);
        }
        let cr = &mut r.cases[k];
        cr.passed = verdict.is_ok();
        cr.reason = verdict.unwrap_or_else(|e| e);
    }
    r.passed = failed.is_none();
    r.reason = match (failed, r.cases.as_slice()) {
        (_, [only]) => only.reason.clone(),
        (None, all) => {
            let sum = |f: &dyn Fn(&CaseReport) -> usize| all.iter().map(f).sum::<usize>();
            format!(
                "{count} cases passed in one boot: {}",
                summary(
                    sum(&|c| c.modules.iter().filter(|m| m.patch.is_some()).count()),
                    sum(&|c| c.workloads.iter().filter(|w| w.result.is_some()).count()),
                    sum(&|c| c.checks.len()),
                )
            )
        }
        (Some(j), all) => {
            let c = &all[j - 1];
            let head = if c.reason.starts_with("did not run") {
                format!("case {j} of {count} {}", c.reason)
            } else {
                format!("case {j} of {count} failed: {}", c.reason)
            };
            format!("{head}{}", later_cases(&all[j..]))
        }
    };
}

/// What became of the cases after the one that failed, for the run's reason: `; case 3 did not
/// run`, `; cases 3 to 5 were not judged`.
fn later_cases(later: &[CaseReport]) -> String {
    let (Some(first), Some(last)) = (later.first(), later.last()) else {
        return String::new();
    };
    let which = match later.len() {
        1 => format!("case {}", first.number),
        2 => format!("cases {} and {}", first.number, last.number),
        _ => format!("cases {} to {}", first.number, last.number),
    };
    let ran = later.iter().filter(|c| c.ran).count();
    let what = match (ran, later.len()) {
        (0, _) => "did not run",
        (r, n) if r == n && n == 1 => "was not judged",
        (r, n) if r == n => "were not judged",
        _ => "did not run or were not judged",
    };
    format!("; {which} {what}")
}

/// "1 livepatch loaded and enabled, workload ran after each of 2 transitions, 1 check passed,
/// disabled and unloaded": what a case that passed did.
fn summary(patches: usize, runs: usize, checks: usize) -> String {
    format!(
        "{} livepatch{} loaded and enabled, {}{} check{} passed, disabled and unloaded",
        patches,
        if patches == 1 { "" } else { "es" },
        match runs {
            0 => String::new(),
            1 => "workload ran after 1 transition, ".to_string(),
            n => format!("workload ran after each of {n} transitions, "),
        },
        checks,
        if checks == 1 { "" } else { "s" },
    )
}

/// Reads and checks the inputs: the kernel image exists, and each case's modules and files (see
/// [`read_case`]; with several cases an error names the case). Returns each case's modules.
pub fn read_inputs(req: &VerifyRequest) -> Result<Vec<Vec<ModuleInfo>>, UserError> {
    if !req.kernel_image.is_file() {
        return Err(UserError::new(format!(
            "{}: no such kernel image",
            req.kernel_image.display()
        )));
    }
    if req.mixes_forms() {
        return Err(UserError::new(
            "a verify request has its cases, or the modules, checks, expectations and files of \
             one, not both",
        ));
    }
    let cases = req.cases();
    let count = cases.len();
    cases
        .iter()
        .enumerate()
        .map(|(k, c)| {
            read_case(req.arch, c).map_err(|e| {
                if count > 1 {
                    UserError::new(format!("case {}: {e}", k + 1))
                } else {
                    e
                }
            })
        })
        .collect()
}

/// Reads and checks one case: every file exists, every module is one of `arch`, at least one is a
/// livepatch, no two share a name (they are loaded together), no two files share a name.
pub fn read_case(arch: Arch, case: &VerifyCase) -> Result<Vec<ModuleInfo>, UserError> {
    if case.modules.is_empty() {
        return Err(UserError::new("no module to verify"));
    }
    if case.checks.is_empty() && (case.expect_before.is_some() || case.expect_after.is_some()) {
        return Err(UserError::new(
            "--expect-before and --expect-after need a --check whose output they match",
        ));
    }
    let mut modules: Vec<ModuleInfo> = Vec::new();
    for path in &case.modules {
        if !path.is_file() {
            return Err(UserError::new(format!(
                "{}: no such kernel module",
                path.display()
            )));
        }
        let m = module::read_module(path)?;
        if m.arch != arch {
            return Err(UserError::new(format!(
                "{}: a module for {}, but the kernel is {}",
                path.display(),
                m.arch,
                arch
            )));
        }
        if let Some(other) = modules.iter().find(|o| o.patch_name() == m.patch_name()) {
            return Err(UserError::new(format!(
                "{}: module name {} is also the name of {}",
                path.display(),
                m.name,
                other.path.display()
            )));
        }
        modules.push(m);
    }
    let mut names = std::collections::HashSet::new();
    for f in &case.files {
        if !f.is_file() {
            return Err(UserError::new(format!("{}: no such file", f.display())));
        }
        if !names.insert(guest_file_path(f)) {
            return Err(UserError::new(format!(
                "{}: another --file has the same name",
                f.display()
            )));
        }
    }
    if !modules.iter().any(|m| m.livepatch) {
        return Err(UserError::new(format!(
            "{}: not a livepatch module (no livepatch=Y in .modinfo)",
            case.modules[0].display()
        )));
    }
    Ok(modules)
}

/// Where module `i` of a case lives in the initramfs.
fn guest_module_path(id: CaseId, i: usize, path: &Path) -> String {
    format!("{}/{i}-{}", id.dir(), guest_name(path))
}

/// Where a `--file` lives in the initramfs: `/klpx/files/<name>`.
pub fn guest_file_path(path: &Path) -> String {
    format!("{}/files/{}", guest::DIR, guest_name(path))
}

/// A file's name as the guest sees it: its base name, with characters other than letters, digits,
/// `.`, `_` and `-` replaced by `_`.
fn guest_name(path: &Path) -> String {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "module.ko".to_string());
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn result(g: &GuestLog, tag: &str) -> Option<CommandResult> {
    g.capture(tag).map(|c| CommandResult {
        status: c.status,
        output: String::from_utf8_lossy(&c.output).into_owned(),
        kernel_messages: c.kernel.clone(),
    })
}

/// The livepatch's transitions in case `id`, in the order the guest reported them.
fn transitions<'a>(g: &'a GuestLog, id: CaseId, patch: &str) -> &'a [guest::Transition] {
    g.transitions
        .get(&id.tag(patch))
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn module_reports(modules: &[ModuleInfo], g: &GuestLog, id: CaseId) -> Vec<ModuleReport> {
    modules
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let patch = m.livepatch.then(|| m.patch_name());
            let transitions = patch
                .as_deref()
                .map(|p| transitions(g, id, p))
                .unwrap_or_default();
            let load = result(g, &id.tag(&format!("insmod.{i}")));
            let disable = result(g, &id.tag(&format!("disable.{i}")));
            let unload = result(g, &id.tag(&format!("rmmod.{i}")));
            ModuleReport {
                path: m.path.clone(),
                name: m.name.clone(),
                loaded: load.as_ref().is_some_and(|r| r.status == Some(0)),
                transition: transitions.first().map(|t| t.state.clone()),
                // After the disabling transition the patch is freed and its directory goes away,
                // asynchronously: seen as gone, or still there with enabled=0.
                disabled: disable.as_ref().is_some_and(|d| d.status == Some(0))
                    && transitions.get(1).is_some_and(|t| {
                        t.state == "gone"
                            || (t.state == "done" && t.enabled.as_deref() == Some("0"))
                    }),
                unloaded: unload.as_ref().is_some_and(|r| r.status == Some(0)),
                patch,
                load,
                disable,
                unload,
            }
        })
        .collect()
}

/// Every workload run the script has, in its order, with the result the guest reported for it.
fn workload_runs(
    modules: &[ModuleInfo],
    g: &GuestLog,
    asked: bool,
    id: CaseId,
) -> Vec<WorkloadRun> {
    if !asked {
        return Vec::new();
    }
    let patches: Vec<(usize, String)> = modules
        .iter()
        .enumerate()
        .filter(|(_, m)| m.livepatch)
        .map(|(i, m)| (i, m.patch_name()))
        .collect();
    let enabling = patches.iter().map(|p| (Step::Enable, p));
    let disabling = patches.iter().rev().map(|p| (Step::Disable, p));
    enabling
        .chain(disabling)
        .map(|(step, (i, patch))| WorkloadRun {
            transition: step.name().to_string(),
            patch: patch.clone(),
            result: result(g, &id.tag(&guest::workload_tag(step, *i))),
        })
        .collect()
}

fn check_reports(checks: &[String], g: &GuestLog, id: CaseId) -> Vec<CheckReport> {
    checks
        .iter()
        .enumerate()
        .map(|(i, c)| CheckReport {
            command: c.clone(),
            before: result(g, &id.tag(&format!("check.before.{i}"))),
            after: result(g, &id.tag(&format!("check.after.{i}"))),
            unloaded: result(g, &id.tag(&format!("check.unloaded.{i}"))),
        })
        .collect()
}

/// `Ok(summary)` when every step of a case worked, else `Err(the first thing that went wrong)`.
fn judge_case(
    req: &VerifyRequest,
    case: &VerifyCase,
    id: CaseId,
    r: &VerifyReport,
    c: &CaseReport,
    g: &GuestLog,
) -> Result<String, String> {
    judge_kernel_health(&r.log, id, r.cases.len())?;
    judge_loads(req, c, g, id)?;
    judge_enabled(case, c)?;
    judge_unloads(req, case, c)?;
    judge_end(req, r, case, c, g, id)?;
    judge_complete(c)?;
    Ok(summary(
        c.modules.iter().filter(|m| m.patch.is_some()).count(),
        c.workloads.iter().filter(|w| w.result.is_some()).count(),
        c.checks.len(),
    ))
}

/// The kernel reached klpx's init.
fn judge_boot(req: &VerifyRequest, r: &VerifyReport) -> Result<(), String> {
    let limit = req.timeout.as_secs();
    if !r.booted {
        if let Some(p) = r.log.lines().find(|l| l.contains("Kernel panic")) {
            return Err(format!(
                "the kernel did not reach klpx's init: {}",
                p.trim()
            ));
        }
        return Err(if r.timed_out {
            format!("the kernel did not reach klpx's init within {limit} s")
        } else {
            "the kernel did not reach klpx's init (qemu exited)".to_string()
        });
    }
    Ok(())
}

/// The kernel stayed healthy from the case's first module load on, until the next case's: a
/// warning, BUG or oops there is the case's modules' doing (objtool's return-site table missing
/// from a module makes the kernel warn "Unpatched return thunk in use"; a wrong jump label makes it
/// BUG when the key is switched), even when every check still printed what it should. `count`: the
/// run's number of cases.
fn judge_kernel_health(log: &str, id: CaseId, count: usize) -> Result<(), String> {
    let first_load =
        |id: CaseId| log.find(&format!("{}BEGIN {}", guest::MARKER, id.tag("insmod.")));
    let Some(start) = first_load(id) else {
        return Ok(());
    };
    let end = match id.0 {
        Some(n) => (n + 1..=count)
            .filter_map(|m| first_load(CaseId(Some(m))))
            .filter(|&at| at > start)
            .min()
            .unwrap_or(log.len()),
        None => log.len(),
    };
    const SIGNS: [&str; 6] = [
        "WARNING: CPU:",
        "kernel BUG at",
        "BUG: ",
        "Oops: ",
        "general protection fault",
        "Unable to handle kernel",
    ];
    let lines: Vec<&str> = log[start..end].lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(at) = SIGNS.iter().find_map(|s| line.find(s)) {
            // The line that names the place (`RIP:`, `pc :`, `NIP`, `Krnl PSW`), when there is one.
            let place = lines[i + 1..]
                .iter()
                .take(12)
                .find(|l| {
                    ["RIP:", " pc :", "NIP ", "Krnl PSW"]
                        .iter()
                        .any(|k| l.contains(k))
                })
                .map(|l| format!(" ({})", strip_time(l)))
                .unwrap_or_default();
            return Err(format!(
                "the kernel reported a problem after the modules began loading: {}{place}",
                line[at..].trim()
            ));
        }
    }
    Ok(())
}

/// A console line without its `[    4.289940] ` timestamp.
fn strip_time(line: &str) -> &str {
    let l = line.trim();
    match (l.starts_with('['), l.find("] ")) {
        (true, Some(end)) => l[end + 2..].trim(),
        _ => l,
    }
}

/// Every module loaded, and every livepatch finished its transition enabled.
fn judge_loads(
    req: &VerifyRequest,
    c: &CaseReport,
    g: &GuestLog,
    id: CaseId,
) -> Result<(), String> {
    for m in &c.modules {
        let Some(load) = &m.load else { break };
        if !m.loaded {
            // The kernel's reason names the module; other messages are unrelated noise.
            let kernel = load
                .kernel_messages
                .iter()
                .rev()
                .find(|k| k.contains(&m.name))
                .map(|k| format!(" (kernel: {k})"))
                .unwrap_or_default();
            return Err(format!(
                "insmod {} failed with status {}: {}{kernel}",
                m.name,
                status(load.status),
                first_line(&load.output)
            ));
        }
        match (m.patch.as_deref(), m.transition.as_deref()) {
            (Some(p), Some("missing")) => {
                return Err(format!(
                    "{} loaded but /sys/kernel/livepatch/{p} does not exist",
                    m.name
                ));
            }
            (Some(p), Some("timeout")) => {
                return Err(format!(
                    "the transition of livepatch {p} did not finish within {} s",
                    req.transition_timeout.as_secs()
                ));
            }
            (Some(p), Some("done")) => {
                let enabled = transitions(g, id, p)
                    .first()
                    .and_then(|t| t.enabled.clone());
                if enabled.as_deref() != Some("1") {
                    return Err(format!(
                        "livepatch {p} is not enabled after its transition (enabled={})",
                        enabled.unwrap_or_default()
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// With the livepatches enabled: the workload worked after each enabling, and the checks passed
/// and printed what they should (and had printed the old behaviour before).
fn judge_enabled(case: &VerifyCase, c: &CaseReport) -> Result<(), String> {
    for w in c
        .workloads
        .iter()
        .filter(|w| w.transition == Step::Enable.name())
    {
        judge_workload(w)?;
    }
    for check in &c.checks {
        if let Some(after) = &check.after
            && after.status != Some(0)
        {
            return Err(format!(
                "check `{}` exited with status {} after loading",
                check.command,
                status(after.status)
            ));
        }
    }
    judge_expected(
        &c.checks,
        case.expect_after.as_deref(),
        ("--expect-after", "after loading", ""),
        |c| c.after.as_ref(),
    )?;
    judge_expected(
        &c.checks,
        case.expect_before.as_deref(),
        ("--expect-before", "before loading", ""),
        |c| c.before.as_ref(),
    )
}
/// A workload run that reported a result succeeded. (One that reported none is
/// [`judge_complete`]'s.)
fn judge_workload(w: &WorkloadRun) -> Result<(), String> {
    match &w.result {
        Some(res) if res.status != Some(0) => Err(format!(
            "the workload (forks, execs, /proc reads) failed after {} livepatch {}, status {}: {}",
            transition_words(&w.transition),
            w.patch,
            status(res.status),
            first_line(&res.output)
        )),
        _ => Ok(()),
    }
}

/// `enabling` or `disabling`, for a [`WorkloadRun::transition`].
fn transition_words(transition: &str) -> &'static str {
    if transition == Step::Disable.name() {
        "disabling"
    } else {
        "enabling"
    }
}

/// The checks' output at one stage meets an `--expect-*`: each check that reported printed
/// something (a check that prints nothing shows nothing about the behaviour expected: a command
/// with its output sent elsewhere, a file that was not there), and together they contain `want`.
/// `what` is the option, the stage in words and a note for the reason. Results that are missing
/// are [`judge_end`]'s (the guest stopped) or [`judge_complete`]'s.
fn judge_expected(
    checks: &[CheckReport],
    want: Option<&str>,
    what: (&str, &str, &str),
    pick: impl Fn(&CheckReport) -> Option<&CommandResult>,
) -> Result<(), String> {
    let (option, stage, note) = what;
    let Some(want) = want else {
        return Ok(());
    };
    if let Some(c) = checks
        .iter()
        .find(|c| pick(c).is_some_and(|res| res.output.trim().is_empty()))
    {
        return Err(format!(
            "{stage}, check `{}` printed nothing ({option} was given)",
            c.command
        ));
    }
    if checks.iter().all(|c| pick(c).is_some()) && !joined(checks, &pick).contains(want) {
        return Err(format!(
            "{stage}, the checks' output does not contain {want:?}{note}"
        ));
    }
    Ok(())
}

/// Every livepatch disabled and every module unloaded, and the old behaviour came back.
fn judge_unloads(req: &VerifyRequest, case: &VerifyCase, c: &CaseReport) -> Result<(), String> {
    for m in c.modules.iter().rev() {
        if let Some(d) = &m.disable
            && d.status != Some(0)
        {
            return Err(format!(
                "disabling livepatch {} failed: {}",
                m.patch.as_deref().unwrap_or(&m.name),
                first_line(&d.output)
            ));
        }
        if m.disable.is_some() && !m.disabled {
            return Err(format!(
                "livepatch {} did not finish disabling within {} s",
                m.patch.as_deref().unwrap_or(&m.name),
                req.transition_timeout.as_secs()
            ));
        }
        if let Some(w) = c.workloads.iter().find(|w| {
            w.transition == Step::Disable.name() && m.patch.as_deref() == Some(w.patch.as_str())
        }) {
            judge_workload(w)?;
        }
        if let Some(u) = &m.unload
            && !m.unloaded
        {
            return Err(format!(
                "rmmod {} failed with status {}: {}",
                m.name,
                status(u.status),
                first_line(&u.output)
            ));
        }
    }
    judge_expected(
        &c.checks,
        case.expect_before.as_deref(),
        (
            "--expect-before",
            "after unloading",
            " (the old behaviour did not come back)",
        ),
        |c| c.unloaded.as_ref(),
    )
}

/// The guest got through the case (to the script's end, to the next case, or to stopping after
/// this one), with the case's output readable.
fn judge_end(
    req: &VerifyRequest,
    r: &VerifyReport,
    case: &VerifyCase,
    c: &CaseReport,
    g: &GuestLog,
    id: CaseId,
) -> Result<(), String> {
    let limit = req.timeout.as_secs();
    let through = match id.0 {
        Some(n) => g.done || g.cases.contains(&(n + 1)) || g.stopped_after == Some(n),
        None => g.done,
    };
    if !through {
        let at = g
            .unfinished
            .as_deref()
            .and_then(|t| t.strip_prefix(&id.prefix()))
            .map(|step| format!(" during {}", describe_step(step, case, c)))
            .unwrap_or_default();
        return Err(if r.timed_out {
            format!("the guest did not finish within {limit} s{at}")
        } else {
            format!("the guest stopped before the end{at}")
        });
    }
    let prefix = id.prefix();
    let garbled: Vec<&str> = g
        .captures
        .iter()
        .filter(|(t, c)| c.garbled && t.starts_with(&prefix))
        .map(|(t, _)| t.as_str())
        .collect();
    if !garbled.is_empty() {
        return Err(format!(
            "kernel messages broke into the output of {} (see the log)",
            garbled.join(", ")
        ));
    }
    Ok(())
}

/// Every step the guest takes once the steps before it worked reported its result. Judged last:
/// the earlier judges passed and the guest got through the case, so a result that is missing was
/// lost (a marker the console dropped or a kernel message broke), and what klpx did not see work,
/// it cannot call a pass.
fn judge_complete(c: &CaseReport) -> Result<(), String> {
    for m in &c.modules {
        if m.load.is_none() {
            return Err(format!("no result from insmod {}", m.name));
        }
        if let Some(p) = &m.patch
            && m.transition.is_none()
        {
            return Err(format!(
                "no report of livepatch {p}'s transition after loading"
            ));
        }
    }
    for w in &c.workloads {
        // Every enabling is a transition; a livepatch disabled by the guest had one more, and one
        // a replacing livepatch took the place of (nothing to disable) had none.
        let ran_transition = w.transition == Step::Enable.name()
            || c.modules
                .iter()
                .any(|m| m.patch.as_deref() == Some(w.patch.as_str()) && m.disabled);
        if ran_transition && w.result.is_none() {
            return Err(format!(
                "no result from the workload after {} livepatch {}",
                transition_words(&w.transition),
                w.patch
            ));
        }
    }
    for check in &c.checks {
        for (stage, res) in [
            ("before loading", &check.before),
            ("after loading", &check.after),
            ("after unloading", &check.unloaded),
        ] {
            if res.is_none() {
                return Err(format!("no result from check `{}` {stage}", check.command));
            }
        }
    }
    Ok(())
}

/// What a capture tag stands for, in words; with several cases, `case <n>: ` first.
fn describe_tag(tag: &str, cases: &[VerifyCase], reports: &[CaseReport]) -> String {
    let numbered = tag
        .strip_prefix("case")
        .and_then(|t| t.split_once('.'))
        .and_then(|(n, step)| Some((n.parse::<usize>().ok()?, step)));
    match numbered {
        Some((n, step)) if cases.len() > 1 && (1..=cases.len()).contains(&n) => format!(
            "case {n}: {}",
            describe_step(step, &cases[n - 1], &reports[n - 1])
        ),
        _ if cases.len() == 1 => describe_step(tag, &cases[0], &reports[0]),
        _ => tag.to_string(),
    }
}

/// What a step of a case (a capture tag without its case prefix) stands for, in words.
fn describe_step(tag: &str, case: &VerifyCase, c: &CaseReport) -> String {
    let mut parts = tag.split('.');
    let (kind, a, b) = (parts.next(), parts.next(), parts.next());
    let index = |s: Option<&str>| s.and_then(|s| s.parse::<usize>().ok());
    let module = |i: Option<usize>| {
        i.and_then(|i| c.modules.get(i))
            .map(|m| m.name.clone())
            .unwrap_or_default()
    };
    match kind {
        Some("check") => format!(
            "check `{}` ({})",
            index(b)
                .and_then(|i| case.checks.get(i))
                .cloned()
                .unwrap_or_default(),
            match a {
                Some("unloaded") => "after unloading",
                Some("after") => "after loading",
                _ => "before loading",
            }
        ),
        Some("insmod") => format!("insmod {}", module(index(a))),
        Some("disable") => format!("disabling {}", module(index(a))),
        Some("rmmod") => format!("rmmod {}", module(index(a))),
        Some("workload") => format!(
            "the workload (forks, execs, /proc reads) after {} {}",
            transition_words(a.unwrap_or("")),
            module(index(b))
        ),
        _ => tag.to_string(),
    }
}

fn joined(checks: &[CheckReport], pick: impl Fn(&CheckReport) -> Option<&CommandResult>) -> String {
    checks
        .iter()
        .filter_map(|c| pick(c).map(|r| r.output.as_str()))
        .collect::<Vec<_>>()
        .join("")
}

fn status(s: Option<i32>) -> String {
    s.map(|s| s.to_string()).unwrap_or_else(|| "?".to_string())
}

fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// A private scratch directory, removed when dropped, and when klpx is ended by a signal (qemu, its
/// only other user, dies with klpx).
struct WorkDir(PathBuf);

impl WorkDir {
    fn new() -> Result<WorkDir> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "klpx-verify-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::livepatch::workdir::track(&dir);
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        crate::livepatch::workdir::untrack(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMDLINE: &str = "console=ttyS0 panic=-1\n";
    const PATCHED: &str = "this has been live patched\n";
    const WORKED: &str = "workload: 150 shells forked and exec'd (each running cat), /proc read\n";

    fn livepatch(name: &str) -> ModuleInfo {
        ModuleInfo {
            path: PathBuf::from(format!("{name}.ko")),
            name: name.to_string(),
            livepatch: true,
            vermagic: None,
            arch: Arch::X86_64,
        }
    }

    fn request(modules: &[ModuleInfo], checks: &[&str]) -> VerifyRequest {
        let mut req = VerifyRequest::new(
            Arch::X86_64,
            PathBuf::from("bzImage"),
            modules.iter().map(|m| m.path.clone()).collect(),
        );
        req.checks = checks.iter().map(|c| c.to_string()).collect();
        req
    }

    /// The console lines of one capture as the guest's script prints them (`od`'s hex, sixteen
    /// bytes a line).
    fn capture(tag: &str, output: &str, status: i32) -> String {
        let mut s = format!("KLPX:BEGIN {tag}\n");
        for chunk in output.as_bytes().chunks(16) {
            s.push_str("KLPX:X");
            for b in chunk {
                s.push_str(&format!(" {b:02x}"));
            }
            s.push('\n');
        }
        s.push_str(&format!("KLPX:END {tag} {status}\n"));
        s
    }

    /// A guest's console, step by step: (tag, the step's lines).
    type Run = Vec<(String, String)>;

    fn step(tag: &str, output: &str) -> (String, String) {
        (tag.to_string(), capture(tag, output, 0))
    }

    fn marker(line: &str) -> (String, String) {
        (line.to_string(), format!("{line}\n"))
    }

    /// The sample livepatch with one check (`cat /proc/cmdline`), every step worked.
    fn sample_run() -> Run {
        vec![
            marker("KLPX:BOOT x86_64 6.12.117"),
            step("check.before.0", CMDLINE),
            step("insmod.0", ""),
            marker("KLPX:TRANSITION livepatch_sample done 1"),
            step("workload.enable.0", WORKED),
            step("check.after.0", PATCHED),
            step("disable.0", ""),
            marker("KLPX:TRANSITION livepatch_sample gone -"),
            step("workload.disable.0", WORKED),
            step("rmmod.0", ""),
            step("check.unloaded.0", CMDLINE),
            marker("KLPX:DONE"),
        ]
    }

    fn without(mut run: Run, tag: &str) -> Run {
        let before = run.len();
        run.retain(|(t, _)| t != tag);
        assert_eq!(run.len() + 1, before, "{tag} is not a step");
        run
    }

    fn with(mut run: Run, tag: &str, output: &str, status: i32) -> Run {
        let s = run
            .iter_mut()
            .find(|(t, _)| t == tag)
            .unwrap_or_else(|| panic!("{tag} is not a step"));
        s.1 = capture(tag, output, status);
        run
    }

    /// Judges a console log with the code `run` uses on qemu's.
    fn assess_run(req: &VerifyRequest, modules: &[ModuleInfo], run: &Run) -> VerifyReport {
        let done = run.iter().any(|(t, _)| t == guest::DONE_MARKER);
        let out = qemu::QemuOutput {
            log: run.iter().map(|(_, s)| s.as_str()).collect(),
            accel: "tcg",
            command: Vec::new(),
            boot_time: Some(Duration::from_secs(1)),
            elapsed: Duration::from_secs(9),
            timed_out: !done,
            stopped_after_fault: false,
            exit_code: done.then_some(0),
            stderr: String::new(),
        };
        let per_case = match req.cases.as_slice() {
            [] => vec![modules.to_vec()],
            cases => cases
                .iter()
                .map(|c| {
                    c.modules
                        .iter()
                        .map(|p| livepatch(p.file_stem().unwrap().to_str().unwrap()))
                        .collect()
                })
                .collect(),
        };
        assess(req, &per_case, out, qemu::kernel_cmdline(Arch::X86_64))
    }

    #[test]
    fn a_run_with_every_result_passes_and_lists_each_workload_run() {
        let m = [livepatch("livepatch_sample")];
        let mut req = request(&m, &["cat /proc/cmdline"]);
        req.expect_before = Some("console=".into());
        req.expect_after = Some("live patched".into());
        let r = assess_run(&req, &m, &sample_run());
        assert_eq!(
            (r.passed, r.reason.as_str()),
            (
                true,
                "1 livepatch loaded and enabled, workload ran after each of 2 transitions, 1 check \
                 passed, disabled and unloaded"
            )
        );
        let runs: Vec<(&str, &str, Option<&str>)> = r
            .workloads
            .iter()
            .map(|w| {
                let out = w.result.as_ref().map(|res| res.output.as_str());
                (w.transition.as_str(), w.patch.as_str(), out)
            })
            .collect();
        assert_eq!(
            runs,
            [
                ("enable", "livepatch_sample", Some(WORKED)),
                ("disable", "livepatch_sample", Some(WORKED)),
            ]
        );
    }

    #[test]
    fn a_missing_workload_result_fails_naming_its_transition() {
        let m = [livepatch("livepatch_sample")];
        let req = request(&m, &["cat /proc/cmdline"]);
        for (tag, reason) in [
            (
                "workload.enable.0",
                "no result from the workload after enabling livepatch livepatch_sample",
            ),
            (
                "workload.disable.0",
                "no result from the workload after disabling livepatch livepatch_sample",
            ),
        ] {
            let r = assess_run(&req, &m, &without(sample_run(), tag));
            assert_eq!((r.passed, r.reason.as_str()), (false, reason), "{tag}");
            assert_eq!(r.workloads.len(), 2, "{tag}: every run is listed");
        }
        // Without the workload asked for, none is expected.
        let mut req = req;
        req.workload = false;
        let run = without(
            without(sample_run(), "workload.enable.0"),
            "workload.disable.0",
        );
        let r = assess_run(&req, &m, &run);
        assert!(r.passed, "{}", r.reason);
        assert!(r.workloads.is_empty());
        assert!(!r.reason.contains("workload"), "{}", r.reason);
    }

    #[test]
    fn a_failed_workload_after_disabling_fails() {
        let m = [livepatch("livepatch_sample")];
        let req = request(&m, &["cat /proc/cmdline"]);
        let run = with(
            sample_run(),
            "workload.disable.0",
            "fork/exec 7 failed\n",
            1,
        );
        let r = assess_run(&req, &m, &run);
        assert!(!r.passed);
        assert_eq!(
            r.reason,
            "the workload (forks, execs, /proc reads) failed after disabling livepatch \
             livepatch_sample, status 1: fork/exec 7 failed"
        );
    }

    #[test]
    fn a_check_that_printed_nothing_fails_where_an_expectation_was_given() {
        let m = [livepatch("livepatch_sample")];
        let mut req = request(&m, &["cat /proc/cmdline"]);
        let silent_after = with(sample_run(), "check.after.0", "", 0);
        // No expectation: the check exited 0, which is all that was asked.
        assert!(assess_run(&req, &m, &silent_after).passed);

        req.expect_after = Some("live patched".into());
        let r = assess_run(&req, &m, &silent_after);
        assert_eq!(
            (r.passed, r.reason.as_str()),
            (
                false,
                "after loading, check `cat /proc/cmdline` printed nothing (--expect-after was given)"
            )
        );

        // Two checks: the other one's output has the text, the silent one still fails.
        let mut req = request(&m, &["cat /proc/cmdline", "true"]);
        req.expect_before = Some("console=".into());
        let mut run = sample_run();
        for first in ["check.before.0", "check.after.0", "check.unloaded.0"] {
            let at = run.iter().position(|(t, _)| t == first).unwrap();
            run.insert(at + 1, step(&first.replace(".0", ".1"), ""));
        }
        let r = assess_run(&req, &m, &run);
        assert_eq!(
            (r.passed, r.reason.as_str()),
            (
                false,
                "before loading, check `true` printed nothing (--expect-before was given)"
            )
        );
        // A line of blanks is nothing too.
        let run = with(sample_run(), "check.unloaded.0", " \n", 0);
        let req = {
            let mut q = request(&m, &["cat /proc/cmdline"]);
            q.expect_before = Some("console=".into());
            q
        };
        assert_eq!(
            assess_run(&req, &m, &run).reason,
            "after unloading, check `cat /proc/cmdline` printed nothing (--expect-before was given)"
        );
    }

    #[test]
    fn a_missing_check_result_fails() {
        let m = [livepatch("livepatch_sample")];
        let mut req = request(&m, &["cat /proc/cmdline"]);
        req.expect_after = Some("live patched".into());
        let r = assess_run(&req, &m, &without(sample_run(), "check.after.0"));
        assert_eq!(
            (r.passed, r.reason.as_str()),
            (
                false,
                "no result from check `cat /proc/cmdline` after loading"
            )
        );
        req.expect_after = None;
        let r = assess_run(&req, &m, &without(sample_run(), "check.unloaded.0"));
        assert_eq!(
            r.reason,
            "no result from check `cat /proc/cmdline` after unloading"
        );
    }

    #[test]
    fn a_guest_that_stopped_in_a_workload_run_says_which() {
        let m = [livepatch("livepatch_sample")];
        let req = request(&m, &["cat /proc/cmdline"]);
        let mut run = sample_run();
        let at = run
            .iter()
            .position(|(t, _)| t == "workload.enable.0")
            .unwrap();
        run.truncate(at);
        run.push(marker("KLPX:BEGIN workload.enable.0"));
        let r = assess_run(&req, &m, &run);
        assert_eq!(
            r.reason,
            "the guest did not finish within 120 s during the workload (forks, execs, /proc reads) \
             after enabling livepatch_sample"
        );
    }

    /// Two livepatches, the second replacing the first (atomic replace): the workload runs after
    /// each enabling, and after the one disabling left (the first livepatch is gone by then).
    #[test]
    fn each_livepatch_has_its_runs_and_a_replaced_one_no_disabling() {
        let m = [livepatch("lp_one"), livepatch("lp_two")];
        let req = request(&m, &["cat /proc/cmdline"]);
        let run: Run = vec![
            marker("KLPX:BOOT x86_64 6.12.117"),
            step("check.before.0", CMDLINE),
            step("insmod.0", ""),
            marker("KLPX:TRANSITION lp_one done 1"),
            step("workload.enable.0", WORKED),
            step("insmod.1", ""),
            marker("KLPX:TRANSITION lp_two done 1"),
            step("workload.enable.1", WORKED),
            step("check.after.0", PATCHED),
            step("disable.1", ""),
            marker("KLPX:TRANSITION lp_two gone -"),
            step("workload.disable.1", WORKED),
            step("rmmod.1", ""),
            step("rmmod.0", ""),
            step("check.unloaded.0", CMDLINE),
            marker("KLPX:DONE"),
        ];
        let r = assess_run(&req, &m, &run);
        assert!(r.passed, "{}", r.reason);
        assert!(
            r.reason
                .contains("workload ran after each of 3 transitions"),
            "{}",
            r.reason
        );
        let order: Vec<String> = r
            .workloads
            .iter()
            .map(|w| format!("{} {}", w.transition, w.patch))
            .collect();
        assert_eq!(
            order,
            [
                "enable lp_one",
                "enable lp_two",
                "disable lp_two",
                "disable lp_one"
            ]
        );
        assert!(r.workloads[3].result.is_none());

        let r = assess_run(&req, &m, &without(run, "workload.enable.1"));
        assert_eq!(
            r.reason,
            "no result from the workload after enabling livepatch lp_two"
        );
    }

    /// Case `n` of several loading the sample livepatch with one check, every step worked: the
    /// lines the script prints for it, under the case's tags and transition names.
    fn sample_case(n: usize) -> Run {
        let t = |rest: &str| format!("case{n}.{rest}");
        vec![
            marker(&format!("KLPX:CASE {n}")),
            step(&t("check.before.0"), CMDLINE),
            step(&t("insmod.0"), ""),
            marker(&format!("KLPX:TRANSITION case{n}.livepatch_sample done 1")),
            step(&t("workload.enable.0"), WORKED),
            step(&t("check.after.0"), PATCHED),
            step(&t("disable.0"), ""),
            marker(&format!("KLPX:TRANSITION case{n}.livepatch_sample gone -")),
            step(&t("workload.disable.0"), WORKED),
            step(&t("rmmod.0"), ""),
            step(&t("check.unloaded.0"), CMDLINE),
        ]
    }

    /// Two cases patching the same function with the same module, each with its own check and
    /// expectations.
    fn two_cases() -> VerifyRequest {
        let case = |check: &str, after: &str| VerifyCase {
            modules: vec![PathBuf::from("livepatch_sample.ko")],
            checks: vec![check.to_string()],
            expect_before: Some("console=".into()),
            expect_after: Some(after.into()),
            files: Vec::new(),
        };
        VerifyRequest::with_cases(
            Arch::X86_64,
            PathBuf::from("bzImage"),
            vec![
                case("cat /proc/cmdline", "live patched"),
                case("cat /proc/cmdline; echo", "this has been"),
            ],
        )
    }

    /// The console of a boot that ran both cases through.
    fn two_case_run() -> Run {
        let mut run = vec![marker("KLPX:BOOT x86_64 6.12.117")];
        run.extend(sample_case(1));
        run.extend(sample_case(2));
        run.push(marker("KLPX:DONE"));
        run
    }

    /// (passed, reason) of each case.
    fn verdicts(r: &VerifyReport) -> Vec<(bool, String)> {
        r.cases
            .iter()
            .map(|c| (c.passed, c.reason.clone()))
            .collect()
    }

    const ONE_CASE_PASSED: &str = "1 livepatch loaded and enabled, workload ran after each of 2 \
                                   transitions, 1 check passed, disabled and unloaded";

    #[test]
    fn two_cases_in_one_boot_pass_each_on_its_own() {
        let req = two_cases();
        let r = assess_run(&req, &[], &two_case_run());
        assert_eq!(
            (r.passed, r.reason.as_str()),
            (
                true,
                "2 cases passed in one boot: 2 livepatches loaded and enabled, workload ran after \
                 each of 4 transitions, 2 checks passed, disabled and unloaded"
            )
        );
        assert_eq!(
            verdicts(&r),
            [
                (true, ONE_CASE_PASSED.to_string()),
                (true, ONE_CASE_PASSED.to_string())
            ]
        );
        for (c, command) in r
            .cases
            .iter()
            .zip(["cat /proc/cmdline", "cat /proc/cmdline; echo"])
        {
            assert!(c.ran);
            assert_eq!(c.checks[0].command, command);
            let outputs: Vec<&str> = [
                &c.checks[0].before,
                &c.checks[0].after,
                &c.checks[0].unloaded,
            ]
            .iter()
            .map(|o| o.as_ref().unwrap().output.as_str())
            .collect();
            assert_eq!(outputs, [CMDLINE, PATCHED, CMDLINE]);
            assert_eq!(c.modules[0].transition.as_deref(), Some("done"));
            assert!(c.modules[0].disabled && c.modules[0].unloaded);
            assert_eq!(c.workloads.len(), 2);
            assert!(c.workloads.iter().all(|w| w.result.is_some()));
        }
        // The top-level lists are the only case's: with two, each case has its own.
        assert!(r.modules.is_empty() && r.checks.is_empty() && r.workloads.is_empty());
    }

    #[test]
    fn a_failing_second_case_is_named_and_the_first_still_passes() {
        let mut req = two_cases();
        req.cases[1].expect_after = Some("livepatch_sample".into());
        let r = assess_run(&req, &[], &two_case_run());
        assert_eq!(
            (r.passed, r.reason.as_str()),
            (
                false,
                "case 2 of 2 failed: after loading, the checks' output does not contain \
                 \"livepatch_sample\""
            )
        );
        assert_eq!(verdicts(&r)[0], (true, ONE_CASE_PASSED.to_string()));
        assert!(!r.cases[1].passed);

        // A guest that hung in the second case's workload: that case, and that step.
        let mut run = two_case_run();
        let at = run
            .iter()
            .position(|(t, _)| t == "case2.workload.enable.0")
            .unwrap();
        run.truncate(at);
        run.push(marker("KLPX:BEGIN case2.workload.enable.0"));
        let r = assess_run(&two_cases(), &[], &run);
        assert_eq!(
            r.reason,
            "case 2 of 2 failed: the guest did not finish within 120 s during the workload \
             (forks, execs, /proc reads) after enabling livepatch_sample"
        );
        assert!(r.cases[0].passed, "{}", r.cases[0].reason);
        assert_eq!(
            r.unfinished.as_deref(),
            Some(
                "case 2: the workload (forks, execs, /proc reads) after enabling livepatch_sample"
            )
        );
    }

    /// The first case's check fails after loading: the guest stops (`KLPX:STOP 1`) instead of
    /// running the second case on a kernel whose state is not known, and the second case, which
    /// never ran, fails.
    #[test]
    fn a_case_that_never_ran_fails() {
        let mut run = vec![marker("KLPX:BOOT x86_64 6.12.117")];
        run.extend(with(
            sample_case(1),
            "case1.check.after.0",
            "cat: /proc/cmdline: No such file\n",
            1,
        ));
        run.push(marker("KLPX:STOP 1"));
        run.push(marker("KLPX:DONE"));
        let r = assess_run(&two_cases(), &[], &run);
        assert_eq!(
            (r.passed, r.reason.as_str()),
            (
                false,
                "case 1 of 2 failed: check `cat /proc/cmdline` exited with status 1 after \
                 loading; case 2 did not run"
            )
        );
        assert_eq!(
            verdicts(&r)[1],
            (false, "did not run: case 1 failed".to_string())
        );
        assert!(r.cases[0].ran && !r.cases[1].ran);
        assert!(r.cases[1].checks[0].before.is_none());
        assert!(r.finished, "the guest ended on purpose");

        // A guest that stopped although every result of case 1 passes here (its own test saw
        // otherwise): case 2 still did not run, and that fails the run.
        let mut run = vec![marker("KLPX:BOOT x86_64 6.12.117")];
        run.extend(sample_case(1));
        run.push(marker("KLPX:STOP 1"));
        run.push(marker("KLPX:DONE"));
        let r = assess_run(&two_cases(), &[], &run);
        assert_eq!(
            (r.passed, r.reason.as_str()),
            (
                false,
                "case 2 of 2 did not run: the guest stopped after case 1"
            )
        );
        assert!(r.cases[0].passed);

        // A kernel that never reached the script: no case ran.
        let r = assess_run(
            &two_cases(),
            &[],
            &vec![marker("[    0.1] Linux version 6.12")],
        );
        assert_eq!(
            r.reason,
            "the kernel did not reach klpx's init within 120 s; none of the 2 cases ran"
        );
        assert_eq!(
            verdicts(&r)[1],
            (
                false,
                "did not run: the kernel did not reach klpx's init within 120 s".to_string()
            )
        );
    }

    /// The first case's livepatch came off, but its check still prints the new behaviour: the old
    /// one did not come back, so the kernel is not as it was and the second case does not count.
    #[test]
    fn a_case_whose_unloaded_check_shows_the_new_behaviour_fails() {
        let mut run = vec![marker("KLPX:BOOT x86_64 6.12.117")];
        run.extend(with(sample_case(1), "case1.check.unloaded.0", PATCHED, 0));
        run.push(marker("KLPX:STOP 1"));
        run.push(marker("KLPX:DONE"));
        let r = assess_run(&two_cases(), &[], &run);
        assert_eq!(
            r.reason,
            "case 1 of 2 failed: after unloading, the checks' output does not contain \
             \"console=\" (the old behaviour did not come back); case 2 did not run"
        );
        assert_eq!(
            r.cases[0].checks[0].unloaded.as_ref().unwrap().output,
            PATCHED
        );
    }

    /// A kernel warning is seen by klpx only, not by the guest, which goes on: the case it came in
    /// fails, and a later case that ran is not judged. A warning in the second case is the second
    /// case's.
    #[test]
    fn kernel_trouble_is_the_case_s_it_came_in() {
        let warning = "[    2.8] WARNING: CPU: 0 PID: 310 at kernel/livepatch/core.c:1 klp\n";
        let mut run = two_case_run();
        let at = run
            .iter()
            .position(|(t, _)| t == "case1.check.after.0")
            .unwrap();
        run.insert(at, ("warning".into(), warning.into()));
        let r = assess_run(&two_cases(), &[], &run);
        assert_eq!(
            r.reason,
            "case 1 of 2 failed: the kernel reported a problem after the modules began loading: \
             WARNING: CPU: 0 PID: 310 at kernel/livepatch/core.c:1 klp; case 2 was not judged"
        );
        assert_eq!(
            verdicts(&r)[1],
            (false, "not judged: it ran after case 1 failed".to_string())
        );

        let mut run = two_case_run();
        let at = run
            .iter()
            .position(|(t, _)| t == "case2.check.after.0")
            .unwrap();
        run.insert(at, ("warning".into(), warning.into()));
        let r = assess_run(&two_cases(), &[], &run);
        assert!(r.cases[0].passed, "{}", r.cases[0].reason);
        assert!(
            r.reason
                .starts_with("case 2 of 2 failed: the kernel reported a problem"),
            "{}",
            r.reason
        );
    }

    /// A request has its cases or the fields of one case, not both.
    #[test]
    fn cases_and_the_one_case_fields_do_not_mix() {
        let image = std::env::current_exe().unwrap();
        let mut req = two_cases();
        req.kernel_image = image;
        req.checks = vec!["true".into()];
        assert_eq!(
            read_inputs(&req).unwrap_err().to_string(),
            "a verify request has its cases, or the modules, checks, expectations and files of \
             one, not both"
        );
        req.checks.clear();
        assert_eq!(
            read_inputs(&req).unwrap_err().to_string(),
            "case 1: livepatch_sample.ko: no such kernel module"
        );
    }

    /// Lines of a real run: Debian's 6.12 amd64 kernel with a livepatch whose `__jump_table` key
    /// relocation objtool could not find (so it wrote no return sites and no jump-label NOPs).
    #[test]
    fn kernel_trouble_after_loading_fails() {
        let healthy = "[    1.0] e1000: probe\nKLPX:BOOT x86_64 6.12\nKLPX:BEGIN insmod.0\n\
                       [    2.1] livepatch: enabling patch 'livepatch_tracepoint'\nKLPX:END insmod.0 0\n";
        assert_eq!(judge_kernel_health(healthy, CaseId::ONLY, 1), Ok(()));
        let warned = format!(
            "{healthy}[    2.844888] WARNING: CPU: 0 PID: 310 at arch/x86/kernel/cpu/bugs.c:3033 __warn_thunk+0x2a/0x40\n\
             [    2.845024] RIP: 0010:__warn_thunk+0x2a/0x40\n"
        );
        let why = judge_kernel_health(&warned, CaseId::ONLY, 1).unwrap_err();
        assert!(
            why.contains("WARNING: CPU: 0 PID: 310 at arch/x86/kernel/cpu/bugs.c:3033"),
            "{why}"
        );
        assert!(why.ends_with("(RIP: 0010:__warn_thunk+0x2a/0x40)"), "{why}");
        let bug = format!(
            "{healthy}[    4.290555] kernel BUG at arch/x86/kernel/jump_label.c:73!\n\
             [    4.291023] Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI\n"
        );
        assert!(
            judge_kernel_health(&bug, CaseId::ONLY, 1)
                .unwrap_err()
                .contains("kernel BUG at arch/x86/kernel/jump_label.c:73!")
        );
        // Before the first load, the kernel's own warnings are not the module's.
        let early =
            "[    0.5] WARNING: CPU: 0 PID: 1 at drivers/foo.c:1 probe\nKLPX:BOOT x86_64 6.12\n";
        assert_eq!(judge_kernel_health(early, CaseId::ONLY, 1), Ok(()));
    }
}
