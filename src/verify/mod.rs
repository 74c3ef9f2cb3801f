//! `klpx verify`: boots a kernel in qemu with a generated initramfs, runs check commands, loads the
//! livepatch module(s), waits for each transition, runs the checks again, disables the livepatches,
//! unloads the modules, and reports what happened at each step.
//!
//! [`run`] takes plain values ([`VerifyRequest`]) and returns a [`VerifyReport`]; the command line
//! lives in `cmd::verify`. Per-architecture facts (emulator, machine, console, halt) come from the
//! architecture's backend.

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
use guest::{GuestLog, GuestModule, Plan};
use module::ModuleInfo;

/// Default time limit for the whole guest run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default time limit for one livepatch transition inside the guest.
pub const DEFAULT_TRANSITION_TIMEOUT: Duration = Duration::from_secs(30);

/// What to verify, as plain values.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub arch: Arch,
    /// The bootable kernel image (`arch/x86/boot/bzImage`, `vmlinux` on ppc64le).
    pub kernel_image: PathBuf,
    /// Modules to load in order; at least one must be a livepatch.
    pub modules: Vec<PathBuf>,
    /// Shell commands run in the guest before loading and after the transitions.
    pub checks: Vec<String>,
    /// Text the checks' output must contain before loading and again after unloading.
    pub expect_before: Option<String>,
    /// Text the checks' output must contain after loading.
    pub expect_after: Option<String>,
    pub timeout: Duration,
    pub transition_timeout: Duration,
    pub memory_mb: u32,
    /// KVM or TCG; `Auto` uses KVM when it works here.
    pub accel: qemu::Accel,
    /// Exercise common kernel paths (forks, execs, /proc) once the livepatches are enabled.
    pub workload: bool,
    /// Files copied to `/klpx/files/<name>` in the guest without being loaded (a module that
    /// checks load after the livepatch, a helper program).
    pub files: Vec<PathBuf>,
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
            busybox: None,
        }
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

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub passed: bool,
    /// One line: why it failed, or what passed.
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
    pub modules: Vec<ModuleReport>,
    pub checks: Vec<CheckReport>,
    /// The workload's result, when it ran (see [`guest::WORKLOAD`]).
    pub workload: Option<CommandResult>,
    /// The script ran to its end.
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

    let plan = Plan {
        modules: modules
            .iter()
            .enumerate()
            .map(|(i, m)| GuestModule {
                file: guest_module_path(i, &m.path),
                name: m.name.clone(),
                patch: m.livepatch.then(|| m.patch_name()),
            })
            .collect(),
        checks: req.checks.len(),
        transition_timeout: req.transition_timeout,
        halt: backend.guest_halt().to_string(),
        workload: req.workload,
    };
    let mut members = Vec::new();
    for (m, g) in modules.iter().zip(&plan.modules) {
        let data = std::fs::read(&m.path).with_context(|| m.path.display().to_string())?;
        members.push(initramfs::Member {
            path: g.file.clone(),
            perm: 0o644,
            data,
        });
    }
    if req.workload {
        members.push(initramfs::Member {
            path: guest::WORKLOAD_PATH.to_string(),
            perm: 0o755,
            data: guest::WORKLOAD.as_bytes().to_vec(),
        });
    }
    for f in &req.files {
        let data = std::fs::read(f).with_context(|| f.display().to_string())?;
        members.push(initramfs::Member {
            path: guest_file_path(f),
            perm: 0o755,
            data,
        });
    }
    for (i, c) in req.checks.iter().enumerate() {
        members.push(initramfs::Member {
            path: guest::check_path(i),
            perm: 0o755,
            data: format!("{c}\n").into_bytes(),
        });
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
    let g = guest::parse(&out.log);
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
        modules: module_reports(&modules, &g),
        checks: check_reports(&req.checks, &g),
        workload: result(&g, "workload"),
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
        .map(|t| describe_tag(t, req, &report));
    let qemu_failed = (out.exit_code.is_some_and(|c| c != 0) && !report.booted)
        .then(|| first_line(&out.stderr).to_string())
        .filter(|e| !e.is_empty());
    let verdict = match qemu_failed {
        Some(e) => Err(format!(
            "qemu failed (status {}): {e}",
            status(out.exit_code)
        )),
        None => judge(req, &report, &g),
    };
    report.passed = verdict.is_ok();
    report.reason = verdict.unwrap_or_else(|e| e);
    Ok(report)
}

/// Reads and checks the inputs: every file exists, every module is one of `req.arch`, at least one
/// is a livepatch, no two share a name.
pub fn read_inputs(req: &VerifyRequest) -> Result<Vec<ModuleInfo>, UserError> {
    if !req.kernel_image.is_file() {
        return Err(UserError::new(format!(
            "{}: no such kernel image",
            req.kernel_image.display()
        )));
    }
    if req.modules.is_empty() {
        return Err(UserError::new("no module to verify"));
    }
    if req.checks.is_empty() && (req.expect_before.is_some() || req.expect_after.is_some()) {
        return Err(UserError::new(
            "--expect-before and --expect-after need a --check whose output they match",
        ));
    }
    let mut modules: Vec<ModuleInfo> = Vec::new();
    for path in &req.modules {
        if !path.is_file() {
            return Err(UserError::new(format!(
                "{}: no such kernel module",
                path.display()
            )));
        }
        let m = module::read_module(path)?;
        if m.arch != req.arch {
            return Err(UserError::new(format!(
                "{}: a module for {}, but the kernel is {}",
                path.display(),
                m.arch,
                req.arch
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
    for f in &req.files {
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
            req.modules[0].display()
        )));
    }
    Ok(modules)
}

/// Where module `i` lives in the initramfs.
fn guest_module_path(i: usize, path: &Path) -> String {
    format!("{}/{i}-{}", guest::DIR, guest_name(path))
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

fn module_reports(modules: &[ModuleInfo], g: &GuestLog) -> Vec<ModuleReport> {
    modules
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let patch = m.livepatch.then(|| m.patch_name());
            let transitions = patch
                .as_ref()
                .and_then(|p| g.transitions.get(p))
                .cloned()
                .unwrap_or_default();
            let load = result(g, &format!("insmod.{i}"));
            let disable = result(g, &format!("disable.{i}"));
            let unload = result(g, &format!("rmmod.{i}"));
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

fn check_reports(checks: &[String], g: &GuestLog) -> Vec<CheckReport> {
    checks
        .iter()
        .enumerate()
        .map(|(i, c)| CheckReport {
            command: c.clone(),
            before: result(g, &format!("check.before.{i}")),
            after: result(g, &format!("check.after.{i}")),
            unloaded: result(g, &format!("check.unloaded.{i}")),
        })
        .collect()
}

/// `Ok(summary)` when every step worked, else `Err(the first thing that went wrong)`.
fn judge(req: &VerifyRequest, r: &VerifyReport, g: &GuestLog) -> Result<String, String> {
    judge_boot(req, r)?;
    judge_kernel_health(&r.log)?;
    judge_loads(req, r, g)?;
    judge_enabled(req, r)?;
    judge_unloads(req, r)?;
    judge_end(req, r, g)?;
    let patches = r.modules.iter().filter(|m| m.patch.is_some()).count();
    Ok(format!(
        "{} livepatch{} loaded and enabled, {}{} check{} passed, disabled and unloaded",
        patches,
        if patches == 1 { "" } else { "es" },
        if r.workload.is_some() {
            "workload ran, "
        } else {
            ""
        },
        r.checks.len(),
        if r.checks.len() == 1 { "" } else { "s" },
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

/// The kernel stayed healthy from the first module load on: a warning, BUG or oops there is the
/// module's doing (objtool's return-site table missing from a module makes the kernel warn
/// "Unpatched return thunk in use"; a wrong jump label makes it BUG when the key is switched), even
/// when every check still printed what it should.
fn judge_kernel_health(log: &str) -> Result<(), String> {
    let Some(start) = log.find(&format!("{}BEGIN insmod", guest::MARKER)) else {
        return Ok(());
    };
    const SIGNS: [&str; 6] = [
        "WARNING: CPU:",
        "kernel BUG at",
        "BUG: ",
        "Oops: ",
        "general protection fault",
        "Unable to handle kernel",
    ];
    let lines: Vec<&str> = log[start..].lines().collect();
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
fn judge_loads(req: &VerifyRequest, r: &VerifyReport, g: &GuestLog) -> Result<(), String> {
    for m in &r.modules {
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
                let enabled = g.transitions[p].first().and_then(|t| t.enabled.clone());
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

/// With the livepatches enabled: the workload ran, and the checks passed and printed what they
/// should (and had printed the old behaviour before).
fn judge_enabled(req: &VerifyRequest, r: &VerifyReport) -> Result<(), String> {
    if let Some(w) = &r.workload
        && w.status != Some(0)
    {
        return Err(format!(
            "the workload (forks, execs, /proc reads) failed with the livepatches enabled, status \
             {}: {}",
            status(w.status),
            first_line(&w.output)
        ));
    }
    for c in &r.checks {
        if let Some(after) = &c.after
            && after.status != Some(0)
        {
            return Err(format!(
                "check `{}` exited with status {} after loading",
                c.command,
                status(after.status)
            ));
        }
    }
    if let Some(want) = &req.expect_after
        && r.checks.iter().all(|c| c.after.is_some())
        && !joined(&r.checks, |c| c.after.as_ref()).contains(want.as_str())
    {
        return Err(format!(
            "after loading, the checks' output does not contain {want:?}"
        ));
    }
    if let Some(want) = &req.expect_before
        && r.checks.iter().all(|c| c.before.is_some())
        && !joined(&r.checks, |c| c.before.as_ref()).contains(want.as_str())
    {
        return Err(format!(
            "before loading, the checks' output does not contain {want:?}"
        ));
    }
    Ok(())
}

/// Every livepatch disabled and every module unloaded, and the old behaviour came back.
fn judge_unloads(req: &VerifyRequest, r: &VerifyReport) -> Result<(), String> {
    for m in r.modules.iter().rev() {
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
    if let Some(want) = &req.expect_before
        && r.checks.iter().all(|c| c.unloaded.is_some())
        && !joined(&r.checks, |c| c.unloaded.as_ref()).contains(want.as_str())
    {
        return Err(format!(
            "after unloading, the checks' output does not contain {want:?} (the old behaviour did not come back)"
        ));
    }
    Ok(())
}

/// The guest ran to its end, with its output readable.
fn judge_end(req: &VerifyRequest, r: &VerifyReport, g: &GuestLog) -> Result<(), String> {
    let limit = req.timeout.as_secs();
    if !r.finished {
        let at = r
            .unfinished
            .as_deref()
            .map(|t| format!(" during {t}"))
            .unwrap_or_default();
        return Err(if r.timed_out {
            format!("the guest did not finish within {limit} s{at}")
        } else {
            format!("the guest stopped before the end{at}")
        });
    }
    let garbled: Vec<&str> = g
        .captures
        .iter()
        .filter(|(_, c)| c.garbled)
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

/// What a capture tag stands for, in words.
fn describe_tag(tag: &str, req: &VerifyRequest, r: &VerifyReport) -> String {
    let mut parts = tag.split('.');
    let (kind, a, b) = (parts.next(), parts.next(), parts.next());
    let index = |s: Option<&str>| s.and_then(|s| s.parse::<usize>().ok());
    let module = |i: Option<usize>| {
        i.and_then(|i| r.modules.get(i))
            .map(|m| m.name.clone())
            .unwrap_or_default()
    };
    match kind {
        Some("check") => format!(
            "check `{}` ({} loading)",
            index(b)
                .and_then(|i| req.checks.get(i))
                .cloned()
                .unwrap_or_default(),
            a.unwrap_or("")
        ),
        Some("insmod") => format!("insmod {}", module(index(a))),
        Some("disable") => format!("disabling {}", module(index(a))),
        Some("rmmod") => format!("rmmod {}", module(index(a))),
        Some("workload") => {
            "the workload (forks, execs, /proc reads) with the livepatches enabled".to_string()
        }
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

/// A private scratch directory, removed when dropped.
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
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::judge_kernel_health;

    /// Lines of a real run: Debian's 6.12 amd64 kernel with a livepatch whose `__jump_table` key
    /// relocation objtool could not find (so it wrote no return sites and no jump-label NOPs).
    #[test]
    fn kernel_trouble_after_loading_fails() {
        let healthy = "[    1.0] e1000: probe\nKLPX:BOOT x86_64 6.12\nKLPX:BEGIN insmod.0\n\
                       [    2.1] livepatch: enabling patch 'livepatch_tracepoint'\nKLPX:END insmod.0 0\n";
        assert_eq!(judge_kernel_health(healthy), Ok(()));
        let warned = format!(
            "{healthy}[    2.844888] WARNING: CPU: 0 PID: 310 at arch/x86/kernel/cpu/bugs.c:3033 __warn_thunk+0x2a/0x40\n\
             [    2.845024] RIP: 0010:__warn_thunk+0x2a/0x40\n"
        );
        let why = judge_kernel_health(&warned).unwrap_err();
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
            judge_kernel_health(&bug)
                .unwrap_err()
                .contains("kernel BUG at arch/x86/kernel/jump_label.c:73!")
        );
        // Before the first load, the kernel's own warnings are not the module's.
        let early =
            "[    0.5] WARNING: CPU: 0 PID: 1 at drivers/foo.c:1 probe\nKLPX:BOOT x86_64 6.12\n";
        assert_eq!(judge_kernel_health(early), Ok(()));
    }
}
