//! `klpx demo`: the whole path on the built-in default, on a fresh machine.
//!
//! Installs what is missing (Debian packages), unpacks Debian's linux-source-6.12 into the cache,
//! configures a tiny livepatch-capable kernel from `configs/` and builds it once (cached), builds a
//! livepatch module from the bundled example patch with `klpx build`'s pipeline, boots the kernel in
//! qemu, and shows `/proc/cmdline` before and after the livepatch.

use std::time::Instant;

use anyhow::Result;
use klpx_arch::Arch;

use crate::error::{UserError, exit};
use crate::kbuild::toolchain::Toolchain;
use crate::kernel::cache;
use crate::kernel::tree::KernelTree;
use crate::livepatch::pipeline::{BuildRequest, Outcome, build, default_workdir};
use crate::setup;
use crate::verify::{self, VerifyRequest};

/// The bundled example: a visible change to what `/proc/cmdline` prints.
const EXAMPLE_PATCH: &str = include_str!("../../examples/proc-cmdline.patch");
const CHECK: &str = "cat /proc/cmdline";

/// Runs the demo for `arch` with `jobs` parallel make jobs; returns the exit status.
pub fn run(arch: Arch, jobs: usize) -> Result<i32> {
    let backend = arch.backend();
    let start = Instant::now();
    let mut packages = setup::BUILD_PACKAGES.to_vec();
    packages.push(backend.compiler_package());
    packages.push(backend.qemu_package());
    // The host's static busybox (other architectures' come from Debian's foreign packages).
    packages.push("busybox-static");
    packages.push("cpio");
    setup::ensure_packages(&packages)?;
    step(&start, "unpacking Debian's linux-source-6.12 (once)");
    let src = cache::debian_source()?;
    let tree = KernelTree::new(
        arch,
        &src,
        &cache::root().join("trees").join(arch.name()),
        jobs,
    );
    step(
        &start,
        &format!(
            "configuring and building a tiny livepatch-capable {arch} kernel in {} (once; a few minutes)",
            tree.out.display()
        ),
    );
    for d in tree.ensure_built()? {
        eprintln!("klpx: note: Kconfig did not keep {d}");
    }

    step(&start, "klpx build examples/proc-cmdline.patch");
    let dir = cache::root().join("demo").join(arch.name());
    std::fs::create_dir_all(&dir)?;
    let patch = dir.join("proc-cmdline.patch");
    std::fs::write(&patch, EXAMPLE_PATCH)?;
    let name = "livepatch-proc-cmdline".to_string();
    let report = build(&BuildRequest {
        patches: vec![patch],
        fuzz: crate::patch::source::DEFAULT_FUZZ,
        srcdir: tree.src.clone(),
        objdir: tree.out.clone(),
        toolchain: Toolchain {
            arch,
            cross: tree.cross.clone(),
            llvm: false,
            cc: None,
            extra_vars: Vec::new(),
            launcher: None,
        },
        vmlinux: None,
        jobs,
        targets: Vec::new(),
        workdir: default_workdir(&name),
        name,
        output: dir.clone(),
        keep_workdir: false,
        replace: true,
        skip_compiler_check: false,
        skip_identity_check: false,
        quiet: false,
        oot: None,
        shipped: None,
        sign: None,
    })?;
    for o in &report.objects {
        println!(
            "{} ({}): changed {}",
            o.object,
            o.target,
            o.changed_functions.join(", ")
        );
    }
    let Some(module) = report
        .module
        .clone()
        .filter(|_| report.outcome == Outcome::Module)
    else {
        return Err(UserError::new("the example patch did not produce a module").into());
    };
    let times: Vec<String> = report
        .stages
        .iter()
        .map(|(n, s)| format!("{n} {s:.1}s"))
        .collect();
    println!("module: {} ({})", module.display(), times.join(", "));

    if !backend.livepatch_loadable() {
        println!(
            "{arch}: Linux 6.12 has no livepatch support on this architecture; the module was built and checked, not loaded"
        );
        return Ok(exit::OK);
    }
    step(
        &start,
        &format!(
            "booting the kernel in {} and loading the module",
            backend.qemu_binary()
        ),
    );
    let mut req = VerifyRequest::new(arch, tree.out.join(backend.kernel_image()), vec![module]);
    req.checks = vec![CHECK.to_string()];
    req.expect_after = Some("klpx ".to_string());
    crate::setup::ensure_packages(&[req.arch.backend().qemu_package()])?;
    req.busybox = Some(crate::setup::busybox(arch)?);
    let v = verify::run(&req)?;
    let out = |r: &Option<verify::CommandResult>| {
        r.as_ref()
            .map(|c| c.output.trim().to_string())
            .unwrap_or_else(|| "(not run)".into())
    };
    if let Some(c) = v.checks.first() {
        println!();
        println!("$ {CHECK}   # before the livepatch");
        println!("{}", out(&c.before));
        println!("$ {CHECK}   # livepatch loaded and its transition done");
        println!("{}", out(&c.after));
        println!("$ {CHECK}   # livepatch disabled and unloaded");
        println!("{}", out(&c.unloaded));
        println!();
    }
    println!(
        "{}: {} (total {:.1} s)",
        if v.passed { "PASS" } else { "FAIL" },
        v.reason,
        start.elapsed().as_secs_f64()
    );
    if !v.passed {
        eprintln!("{}", v.log);
        return Ok(exit::UNPATCHABLE);
    }
    Ok(exit::OK)
}

fn step(start: &Instant, what: &str) {
    eprintln!("[{:6.1}s] {what}", start.elapsed().as_secs_f64());
}
