//! `klpx verify MODULE --kernel IMAGE`: boots the kernel in qemu, loads the livepatch, runs the checks
//! before and after, disables and unloads it, and says whether all of it worked. `--cases FILE` does
//! that for several cases in one boot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use klpx_arch::Arch;

use crate::cli::VerifyArgs;
use crate::distro::debian::{self, DebianKernel};
use crate::error::{UserError, exit};
use crate::verify::{
    self, CaseReport, CheckReport, CommandResult, ModuleReport, VerifyCase, VerifyReport,
    VerifyRequest, WorkloadRun,
};

/// Turns the command line's values into a request: the architecture is `--arch`, else the first
/// module's; the image is `--kernel`, else the architecture's image in `--tree`. `--cases` is read
/// and checked whole.
pub fn request(a: &VerifyArgs) -> Result<VerifyRequest, UserError> {
    let cases = read_cases(a)?;
    check_cases(a, cases.as_deref())?;
    request_for(a, cases, None)
}

/// The cases `--cases` lists, parsed (not yet checked against the kernel's architecture).
fn read_cases(a: &VerifyArgs) -> Result<Option<Vec<VerifyCase>>, UserError> {
    a.cases.as_deref().map(verify::cases::read).transpose()
}

/// The first module given: the architecture comes from it when `--arch` does not say.
fn first_module<'a>(a: &'a VerifyArgs, cases: Option<&'a [VerifyCase]>) -> Option<&'a PathBuf> {
    match cases {
        Some(cases) => cases.first().and_then(|c| c.modules.first()),
        None => a.modules.first(),
    }
}

/// The architecture `--arch` names, else the first module's, else x86_64.
fn arch_of(a: &VerifyArgs, cases: Option<&[VerifyCase]>) -> Result<Arch, UserError> {
    Ok(match a.arch {
        Some(arch) => arch,
        None => match first_module(a, cases) {
            Some(m) if m.is_file() => verify::module::read_module(m)?.arch,
            _ => Arch::X86_64,
        },
    })
}

/// Checks every case of `--cases` (its modules exist, are modules of the kernel's architecture,
/// one at least is a livepatch; its files exist) before anything is fetched or booted, each problem
/// in one line naming the file and the case.
fn check_cases(a: &VerifyArgs, cases: Option<&[VerifyCase]>) -> Result<(), UserError> {
    let (Some(file), Some(cases)) = (&a.cases, cases) else {
        return Ok(());
    };
    let in_case =
        |k: usize, e: UserError| UserError::new(format!("{}: case {k}: {e}", file.display()));
    let arch = arch_of(a, Some(cases)).map_err(|e| in_case(1, e))?;
    for (k, case) in cases.iter().enumerate() {
        verify::read_case(arch, case).map_err(|e| in_case(k + 1, e))?;
    }
    Ok(())
}

/// The distribution kernel `--distro` names, fetched into the cache.
fn distro_kernel(
    a: &VerifyArgs,
    cases: Option<&[VerifyCase]>,
) -> Result<Option<DebianKernel>, UserError> {
    let Some(spec) = &a.distro else {
        return Ok(None);
    };
    let release = debian::parse_distro(spec)?;
    let rel = debian::resolve(arch_of(a, cases)?, release.as_deref()).map_err(as_user)?;
    let k = debian::fetch(
        &rel,
        &|m| {
            if !a.json {
                eprintln!("klpx: {m}")
            }
        },
        &mut |_| Ok(()),
    )
    .map_err(as_user)?;
    Ok(Some(k))
}

/// [`request`], with the distribution kernel `--distro` named, fetched.
fn request_for(
    a: &VerifyArgs,
    cases: Option<Vec<VerifyCase>>,
    distro: Option<&DebianKernel>,
) -> Result<VerifyRequest, UserError> {
    let arch = arch_of(a, cases.as_deref())?;
    let kernel_image = match (&a.kernel, &a.tree) {
        (Some(k), _) => k.clone(),
        (None, None) if distro.is_some() => distro.map(|k| k.vmlinuz.clone()).unwrap_or_default(),
        (None, Some(t)) => {
            if !t.is_dir() {
                return Err(UserError::new(format!(
                    "{}: no such kernel tree",
                    t.display()
                )));
            }
            t.join(arch.backend().kernel_image())
        }
        (None, None) => {
            return Err(UserError::new(
                "say which kernel to boot: --kernel IMAGE or --tree DIR",
            ));
        }
    };
    check_kernel_image(arch, &kernel_image)?;
    if a.timeout == 0 {
        return Err(UserError::new("--timeout must be at least 1 second"));
    }
    let mut req = match cases {
        // --timeout is each case's: a boot of several cases takes longer than one.
        Some(cases) => {
            let count = cases.len() as u64;
            let mut req = VerifyRequest::with_cases(arch, kernel_image, cases);
            req.timeout = Duration::from_secs(a.timeout.saturating_mul(count));
            req
        }
        None => {
            let mut req = VerifyRequest::new(arch, kernel_image, a.modules.clone());
            req.checks = a.checks.clone();
            req.expect_before = a.expect_before.clone();
            req.expect_after = a.expect_after.clone();
            req.files = a.files.clone();
            req.timeout = Duration::from_secs(a.timeout);
            req
        }
    };
    req.workload = !a.no_workload;
    req.accel = a
        .accel
        .parse()
        .map_err(|e| UserError::new(format!("--accel: {e}")))?;
    Ok(req)
}

/// Checks, before qemu starts, that `image` is a bootable kernel of `arch`.
fn check_kernel_image(arch: Arch, image: &Path) -> Result<(), UserError> {
    use std::io::Read;
    let shown = image.display();
    if !image.exists() {
        return Err(UserError::new(format!("{shown}: no such kernel image")));
    }
    let mut head = Vec::with_capacity(1024);
    std::fs::File::open(image)
        .and_then(|f| f.take(1024).read_to_end(&mut head))
        .map_err(|e| UserError::new(format!("{shown}: cannot read the kernel image: {e}")))?;
    if !klpx_arch::is_kernel_image(arch.backend(), &head) {
        return Err(UserError::new(format!(
            "{shown}: not a bootable {arch} kernel (expected what the build leaves in {}); check --kernel and --arch",
            arch.backend().kernel_image()
        )));
    }
    Ok(())
}

/// A failure to resolve or fetch a distribution's kernel, as the user's to fix (bad release,
/// unreachable mirror).
fn as_user(e: anyhow::Error) -> UserError {
    match e.downcast::<UserError>() {
        Ok(u) => u,
        Err(e) => UserError::new(format!("{e:#}")),
    }
}

/// Runs the verification and prints the outcome; returns the exit status (0 pass, 3 fail).
pub fn run(a: &VerifyArgs) -> Result<i32> {
    // A cases file is read and checked whole before a distribution's kernel is fetched or a guest
    // booted: a mistake in it costs nothing but its message.
    let cases = read_cases(a)?;
    check_cases(a, cases.as_deref())?;
    let distro = distro_kernel(a, cases.as_deref())?;
    let mut req = request_for(a, cases, distro.as_ref())?;
    if let Some(code) = without_loading(a, &req, distro.as_ref())? {
        return Ok(code);
    }
    crate::setup::ensure_packages(&[req.arch.backend().qemu_package()])?;
    req.busybox = Some(crate::setup::busybox(req.arch)?);
    let report = verify::run(&req)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    } else {
        print_report(&report);
    }
    Ok(if report.passed {
        exit::OK
    } else {
        exit::UNPATCHABLE
    })
}

fn print_report(r: &VerifyReport) {
    match (&r.guest_release, r.boot_seconds) {
        (Some(rel), Some(s)) => println!(
            "booted:  {} {rel} in {s:.1} s ({}, {})",
            r.arch,
            r.accel,
            r.kernel_image.display()
        ),
        _ => println!(
            "booted:  no ({} {}, {})",
            r.arch,
            r.accel,
            r.kernel_image.display()
        ),
    }
    if r.cases.len() > 1 {
        for c in &r.cases {
            print_case(c);
        }
    } else {
        print_steps(&r.modules, &r.workloads, &r.checks);
    }
    let verdict = if r.passed { "PASS" } else { "FAIL" };
    println!("{verdict}:    {} ({:.1} s)", r.reason, r.total_seconds);
    if !r.passed {
        println!("--- guest log ---");
        print!("{}", r.log);
        if !r.log.ends_with('\n') {
            println!();
        }
        println!("--- end of guest log ---");
    }
}

/// One case of several: its verdict, then its steps (none for a case the guest never began).
fn print_case(c: &CaseReport) {
    let verdict = if c.passed { "PASS" } else { "FAIL" };
    println!("case {}:  {verdict}: {}", c.number, c.reason);
    if c.ran {
        print_steps(&c.modules, &c.workloads, &c.checks);
    }
}

/// What happened to each module, each workload run and each check.
fn print_steps(modules: &[ModuleReport], workloads: &[WorkloadRun], checks: &[CheckReport]) {
    for m in modules {
        let mut steps = Vec::new();
        if m.load.is_some() {
            steps.push(if m.loaded { "loaded" } else { "load failed" }.to_string());
        }
        if let Some(t) = &m.transition {
            steps.push(format!("transition {t}"));
        }
        if m.disable.is_some() {
            steps.push(
                if m.disabled {
                    "disabled"
                } else {
                    "disable failed"
                }
                .to_string(),
            );
        }
        if m.unload.is_some() {
            steps.push(
                if m.unloaded {
                    "unloaded"
                } else {
                    "unload failed"
                }
                .to_string(),
            );
        }
        if steps.is_empty() {
            steps.push("not reached".to_string());
        }
        println!(
            "module:  {} ({}): {}",
            m.name,
            m.path.display(),
            steps.join(", ")
        );
    }
    if !workloads.is_empty() {
        println!("workload: after each transition");
        let labels: Vec<String> = workloads
            .iter()
            .map(|w| format!("{} {}", w.transition, w.patch))
            .collect();
        let width = labels.iter().map(String::len).max().unwrap_or(0);
        for (w, label) in workloads.iter().zip(&labels) {
            print_result(label, width, w.result.as_ref());
        }
    }
    for c in checks {
        println!("check:   {}", c.command);
        print_result("before", 8, c.before.as_ref());
        print_result("after", 8, c.after.as_ref());
        print_result("unloaded", 8, c.unloaded.as_ref());
    }
}

/// One result on a line (more when its output has more), labelled `when` padded to `width`.
fn print_result(when: &str, width: usize, r: Option<&CommandResult>) {
    let Some(r) = r else {
        println!("  {when:<width$}  (not run)");
        return;
    };
    let status = r
        .status
        .map(|s| s.to_string())
        .unwrap_or_else(|| "?".to_string());
    let prefix = format!("  {when:<width$}  [exit {status}] ");
    let mut lines = r.output.lines();
    println!("{prefix}{}", lines.next().unwrap_or(""));
    for l in lines {
        println!("{:width$}{l}", "", width = prefix.len());
    }
}

/// A kernel that cannot load livepatches (no `CONFIG_LIVEPATCH` in the tree, as on Linux 6.12
/// arm64) is not booted: the module is checked against the tree's vmlinux instead, and the output
/// says so. Returns the exit status when that is the case.
fn without_loading(
    a: &VerifyArgs,
    req: &VerifyRequest,
    distro: Option<&DebianKernel>,
) -> Result<Option<i32>> {
    let config = match distro {
        Some(k) => std::fs::read_to_string(&k.config).ok(),
        None => a
            .tree
            .as_ref()
            .and_then(|t| std::fs::read_to_string(t.join(".config")).ok()),
    };
    let loadable = match &config {
        Some(c) => c.lines().any(|l| l == "CONFIG_LIVEPATCH=y"),
        None => req.arch.backend().livepatch_loadable(),
    };
    if loadable {
        return Ok(None);
    }
    let backend = req.arch.backend();
    // Every case's modules, each checked on its own.
    let modules: Vec<PathBuf> = req.cases().into_iter().flat_map(|c| c.modules).collect();
    if let Some(k) = distro {
        // The distribution's modules ship compressed: livepatches of vmlinux are checked.
        let links = crate::kbuild::links::LinkMap::default();
        let mut all_passed = true;
        for m in &modules {
            if !m.is_file() {
                return Err(
                    UserError::new(format!("{}: no such kernel module", m.display())).into(),
                );
            }
            let r = crate::verify::without_loading::check_against(
                m, &k.vmlinux, &k.symvers, &k.dir, &links, backend,
            )?;
            all_passed &= r.passed;
            print_static(a, m, &r)?;
        }
        return Ok(Some(if all_passed {
            exit::OK
        } else {
            exit::UNPATCHABLE
        }));
    }
    let Some(tree) = &a.tree else {
        return Err(UserError::new(format!(
            "{}: Linux 6.12 cannot load livepatches on this architecture; give --tree DIR so \
             that the module can be checked against its vmlinux instead",
            req.arch
        ))
        .into());
    };
    let mut all_passed = true;
    for m in &modules {
        if !m.is_file() {
            return Err(UserError::new(format!("{}: no such kernel module", m.display())).into());
        }
        let r = crate::verify::without_loading::check(m, tree, backend)?;
        all_passed &= r.passed;
        print_static(a, m, &r)?;
    }
    Ok(Some(if all_passed {
        exit::OK
    } else {
        exit::UNPATCHABLE
    }))
}

/// Prints the outcome of checking a module without loading it.
fn print_static(
    a: &VerifyArgs,
    m: &std::path::Path,
    r: &crate::verify::without_loading::StaticReport,
) -> Result<()> {
    if a.json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!(
        "{}: this kernel cannot load livepatches (no CONFIG_LIVEPATCH); the module was not loaded",
        m.display()
    );
    for (f, ok) in &r.functions {
        println!(
            "  {f}: {}",
            if *ok {
                "patchable entry in vmlinux"
            } else {
                "NO patchable entry"
            }
        );
    }
    println!(
        "{}: {}",
        if r.passed {
            "PASS (without loading)"
        } else {
            "FAIL"
        },
        r.reason
    );
    Ok(())
}
