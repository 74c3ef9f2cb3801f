//! `klpx build`: turns the command line (and kbuild's environment variables) into a plain
//! [`BuildRequest`], runs the pipeline, and reports.

use std::path::{Path, PathBuf};

use anyhow::Result;
use klpx_arch::Arch;

use crate::build::journal;
use crate::build::pipeline::{
    BuildReport, BuildRequest, OotModule, Outcome, build, default_workdir,
};
use crate::cli::BuildArgs;
use crate::error::{UserError, exit};
use crate::kbuild::objpair::SourceLock;
use crate::kbuild::toolchain::Toolchain;
use crate::module::source::{default_name, sanitize_name};
use crate::patch::source::{SourcePatch, plan_edits};
use crate::toolchain::find_compiler;

/// Runs `klpx build`; returns the exit status.
pub fn run(a: BuildArgs) -> Result<i32> {
    let req = request(a.clone(), &Env::from_process())?;
    let json = a.json;
    let report = build(&req)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report, req.keep_workdir.then_some(req.workdir.as_path()));
    }
    Ok(match report.outcome {
        Outcome::Module => exit::OK,
        Outcome::NoChange => exit::NO_CHANGE,
        Outcome::Refused => exit::UNPATCHABLE,
    })
}

/// kbuild's environment variables, read once.
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub arch: Option<String>,
    pub cross_compile: Option<String>,
    pub llvm: Option<String>,
    pub kbuild_output: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            arch: get("ARCH"),
            cross_compile: get("CROSS_COMPILE"),
            llvm: get("LLVM"),
            kbuild_output: get("KBUILD_OUTPUT"),
        }
    }
}

/// Resolves options, environment and defaults into a request; checks what can be checked up front.
pub fn request(a: BuildArgs, env: &Env) -> Result<BuildRequest> {
    let oot = match (&a.oot_module, &a.oot_module_src) {
        (Some(ko), Some(src)) => {
            if !ko.is_file() {
                return Err(UserError::new(format!(
                    "--oot-module {}: no such module",
                    ko.display()
                ))
                .into());
            }
            if !src.is_dir() {
                return Err(UserError::new(format!(
                    "--oot-module-src {}: not a directory",
                    src.display()
                ))
                .into());
            }
            Some(OotModule {
                ko: absolute(ko),
                src: absolute(src),
            })
        }
        (None, None) => None,
        _ => {
            return Err(UserError::new(
                "--oot-module and --oot-module-src go together: the built .ko and its source directory",
            )
            .into());
        }
    };
    let arch_name = a.arch.clone().or(env.arch.clone());
    let srcdir = a.sourcedir.clone().unwrap_or_else(|| PathBuf::from("."));
    let objdir = a
        .objdir
        .clone()
        .or(env.kbuild_output.clone().map(PathBuf::from))
        .unwrap_or_else(|| srcdir.clone());
    let arch: Arch = match arch_name {
        Some(n) => n
            .parse()
            .map_err(|e| UserError::new(format!("--arch: {e}")))?,
        // As kbuild would: the tree's own architecture, else the host's.
        None => std::fs::read_to_string(objdir.join(".config"))
            .ok()
            .and_then(|c| Arch::from_config(&c))
            .or_else(|| {
                Arch::ALL.into_iter().find(|a| {
                    a.backend().triple().architecture.to_string() == std::env::consts::ARCH
                })
            })
            .unwrap_or(Arch::X86_64),
    };
    let compiler = find_compiler(
        arch.backend(),
        a.cross.as_deref(),
        env.cross_compile.as_deref(),
    );
    for (what, dir) in [("--sourcedir", &srcdir), ("--objdir", &objdir)] {
        if !dir.is_dir() {
            return Err(
                UserError::new(format!("{what} {}: not a directory", dir.display())).into(),
            );
        }
    }
    if !srcdir.join("Makefile").is_file() || !srcdir.join("Kconfig").is_file() {
        return Err(UserError::new(format!(
            "{}: not a kernel source tree (no Makefile and Kconfig); give it with -s",
            srcdir.display()
        ))
        .into());
    }
    if !objdir.join(".config").is_file() {
        return Err(UserError::new(format!(
            "{}: no .config; configure and build the kernel first (or give the output tree with -O)",
            objdir.display()
        ))
        .into());
    }

    if let Some(c) = &a.config {
        let want = std::fs::read(c)
            .map_err(|e| UserError::new(format!("{}: cannot read: {e}", c.display())))?;
        let have = std::fs::read(objdir.join(".config")).unwrap_or_default();
        if want != have {
            return Err(UserError::new(format!(
                "{}: differs from {}; build against the tree configured with it",
                c.display(),
                objdir.join(".config").display()
            ))
            .into());
        }
    }
    if let Some(v) = &a.archversion {
        let release = std::fs::read_to_string(objdir.join("include/config/kernel.release"))
            .unwrap_or_default();
        if release.trim() != v {
            return Err(UserError::new(format!(
                "--archversion {v}: the tree in {} is {}",
                objdir.display(),
                release.trim()
            ))
            .into());
        }
    }
    for p in &a.patches {
        if !p.is_file() {
            return Err(UserError::new(format!("{}: no such patch file", p.display())).into());
        }
    }
    if let Some(v) = &a.vmlinux
        && !v.is_file()
    {
        return Err(UserError::new(format!("{}: no such vmlinux", v.display())).into());
    }
    let name = match &a.name {
        Some(n) => {
            let s = sanitize_name(n);
            if s.is_empty() {
                return Err(UserError::new("--name: empty after sanitising").into());
            }
            s
        }
        None => default_name(&a.patches[0]),
    };
    let llvm = a.llvm || env.llvm.as_deref().is_some_and(|v| v != "0");
    let jobs = a.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let toolchain = Toolchain {
        arch,
        cross: compiler.prefix.clone(),
        llvm,
        cc: a.cc.clone(),
        launcher: a.launcher.clone(),
    };
    // The patches must read, and apply, before any long work. Reading is checked here; applying
    // needs the tree's lock (another klpx may hold it patched), so it is checked here only when the
    // tree is to be built first, and otherwise by the pipeline's plan under the lock.
    let patches: Vec<SourcePatch> = a
        .patches
        .iter()
        .map(|p| SourcePatch::load(p))
        .collect::<Result<_, _>>()?;
    let unbuilt = !objdir.join("vmlinux.a").is_file() || !objdir.join("Module.symvers").is_file();
    if unbuilt {
        let root = oot.as_ref().map_or(srcdir.as_path(), |o| o.src.as_path());
        let _lock = SourceLock::try_take(root)?;
        journal::recover(root)?;
        plan_edits(&patches, root, a.fuzz)?;
    }
    if unbuilt {
        build_tree_once(&srcdir, &objdir, &toolchain, jobs)?;
    }
    Ok(BuildRequest {
        patches: a.patches.iter().map(|p| absolute(p)).collect(),
        fuzz: a.fuzz,
        srcdir: absolute(&srcdir),
        objdir: absolute(&objdir),
        toolchain,
        vmlinux: a.vmlinux.as_deref().map(absolute),
        jobs,
        targets: a.targets.clone(),
        workdir: default_workdir(&name),
        output: absolute(&a.output.clone().unwrap_or_else(|| PathBuf::from("."))),
        name,
        keep_workdir: a.debug > 0 || a.skip_cleanup,
        replace: !a.non_replace,
        skip_compiler_check: a.skip_compiler_check,
        quiet: a.json,
        oot,
    })
}

/// Builds a configured but unbuilt tree once with make, passing make's progress through.
fn build_tree_once(srcdir: &Path, objdir: &Path, toolchain: &Toolchain, jobs: usize) -> Result<()> {
    eprintln!(
        "klpx: {} is configured but not built; building it once with make -j{jobs} (this takes a while)",
        objdir.display()
    );
    let mut argv: Vec<String> = vec!["-C".into(), srcdir.display().to_string()];
    if absolute(srcdir) != absolute(objdir) {
        argv.push(format!("O={}", absolute(objdir).display()));
    }
    argv.push(format!("-j{jobs}"));
    argv.extend(toolchain.make_vars().args());
    let status = duct::cmd("make", &argv)
        .stdout_to_stderr()
        .unchecked()
        .run()
        .map_err(|e| UserError::new(format!("cannot run make: {e}")))?;
    if !status.status.success() {
        return Err(UserError::new(format!(
            "building the kernel in {} failed (make's output is above)",
            objdir.display()
        ))
        .into());
    }
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn print_summary(r: &BuildReport, workdir: Option<&Path>) {
    for o in &r.objects {
        let what = match o.verdict {
            crate::differ::Verdict::Patchable => "patched",
            crate::differ::Verdict::NoChange => "no functional change",
            crate::differ::Verdict::Unpatchable => "REFUSED",
        };
        println!("{} ({}): {what}", o.object, o.target);
        if !o.changed_functions.is_empty() {
            println!("  changed: {}", o.changed_functions.join(", "));
        }
        if !o.new_functions.is_empty() {
            println!("  new:     {}", o.new_functions.join(", "));
        }
        for f in &o.refusals {
            eprintln!("klpx: {}: {f}", o.object);
        }
    }
    match r.outcome {
        Outcome::Module => {
            if let Some(m) = &r.module {
                println!(
                    "module: {} ({} livepatch relocations)",
                    m.display(),
                    r.klp_relocations
                );
            }
            if !r.loadable {
                println!(
                    "note: the target kernel has no livepatch support (CONFIG_LIVEPATCH): the module \
                     links, its livepatch relocations resolve against vmlinux and its functions have \
                     their patchable entries, but it cannot be loaded"
                );
            }
        }
        Outcome::NoChange => println!("no functional change: no module built"),
        Outcome::Refused => eprintln!("klpx: the patch cannot be live-patched; no module built"),
    }
    let times: Vec<String> = r
        .stages
        .iter()
        .map(|(n, s)| format!("{n} {s:.1}s"))
        .collect();
    println!("time: {}", times.join(", "));
    if let Some(w) = workdir {
        println!("work directory kept: {}", w.display());
    }
}
