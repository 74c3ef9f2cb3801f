//! `klpx build`: turns the command line (and kbuild's environment variables) into a plain
//! [`BuildRequest`], runs the pipeline, and reports.

use std::path::{Path, PathBuf};

use anyhow::Result;
use klpx_arch::Arch;

use crate::cli::BuildArgs;
use crate::distro::debian;
use crate::error::{UserError, exit};
use crate::kbuild::prepared::{
    PREPARED_MAKE_VARS, PrepareRequest, check_tools, compiler_prefix, config_compiler, prepare,
};
use crate::kbuild::toolchain::find_compiler;
use crate::kbuild::toolchain::{Toolchain, check_compiler_text};
use crate::livepatch::journal;
use crate::livepatch::lock::SourceLock;
use crate::livepatch::pipeline::{
    BuildReport, BuildRequest, OotModule, Outcome, ShippedKernel, SignWith, build, default_workdir,
};
use crate::module::link::LinkRun;
use crate::patch::source::{SourcePatch, plan_edits};

/// Runs `klpx build`; returns the exit status.
pub fn run(a: BuildArgs) -> Result<i32> {
    let req = request(a.clone(), &Env::from_process())?;
    // Everything is checked (the patches apply); only now the long work may start.
    if req.shipped.is_none() && unbuilt(&req.objdir) {
        build_tree_once(&req.srcdir, &req.objdir, &req.toolchain, req.jobs)?;
    }
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
    /// The architecture `ARCH` names, as kbuild takes it (`x86`, `arm64`, `powerpc`, `s390`, or
    /// one of klpx's names).
    fn arch(&self) -> Result<Option<Arch>, UserError> {
        self.arch
            .as_deref()
            .map(|n| {
                n.parse::<Arch>()
                    .map_err(|e| UserError::new(format!("ARCH={n}: {e}")))
            })
            .transpose()
    }

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
    if a.distro.is_some() || a.symvers.is_some() {
        return prepared_request(a, env);
    }
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
    let arch_given = match a.arch {
        Some(a) => Some(a),
        None => env.arch()?,
    };
    let srcdir = a.sourcedir.clone().unwrap_or_else(|| PathBuf::from("."));
    let objdir = a
        .objdir
        .clone()
        .or(env.kbuild_output.clone().map(PathBuf::from))
        .unwrap_or_else(|| srcdir.clone());
    let arch: Arch = match arch_given {
        Some(a) => a,
        // As kbuild would: the tree's own architecture, else the host's.
        None => std::fs::read_to_string(objdir.join(".config"))
            .ok()
            .and_then(|c| Arch::from_config(&c))
            .or_else(Arch::host)
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

    let config_text = std::fs::read_to_string(objdir.join(".config")).unwrap_or_default();
    if let Some(c) = Arch::from_config(&config_text)
        && c != arch
    {
        return Err(UserError::new(format!(
            "--arch {arch}: {} is configured for {c}; give that tree's architecture or another tree",
            objdir.join(".config").display()
        ))
        .into());
    }
    let llvm = a.llvm || env.llvm.as_deref().is_some_and(|v| v != "0");
    if compiler.gcc.is_none() && !llvm && a.cc.is_none() {
        return Err(UserError::new(format!(
            "{} {}: {} is not installed; install {} or give another prefix with --cross",
            compiler.source,
            compiler.prefix,
            compiler.command(),
            arch.backend().compiler_package()
        ))
        .into());
    }
    if let Some(o) = &a.output {
        crate::files::check_output_dir(o, "-o")?;
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
    for p in &a.patch.patches {
        if !p.is_file() {
            return Err(UserError::new(format!("{}: no such patch file", p.display())).into());
        }
    }
    if let Some(v) = &a.vmlinux
        && !v.is_file()
    {
        return Err(UserError::new(format!("{}: no such vmlinux", v.display())).into());
    }
    let name = a.patch.module_name()?;
    let sign = sign_with(a.sign_key.as_deref(), a.sign_cert.as_deref())?;
    let jobs = crate::cli::jobs_for(a.jobs, a.launcher.as_deref())?;
    let toolchain = Toolchain {
        arch,
        cross: compiler.prefix.clone(),
        llvm,
        cc: a.cc.clone(),
        extra_vars: Vec::new(),
        launcher: a.launcher.clone(),
    };
    // The patches must read, and apply, before any long work. Reading is checked here; applying
    // needs the tree's lock (another klpx may hold it patched), so it is checked here only when the
    // tree is to be built first, and otherwise by the pipeline's plan under the lock.
    let patches: Vec<SourcePatch> = a
        .patch
        .patches
        .iter()
        .map(|p| SourcePatch::load(p))
        .collect::<Result<_, _>>()?;
    if unbuilt(&objdir) {
        let root = oot.as_ref().map_or(srcdir.as_path(), |o| o.src.as_path());
        let _lock = SourceLock::try_take(root)?;
        journal::recover(root)?;
        plan_edits(&patches, root, a.patch.fuzz)?;
    }
    Ok(BuildRequest {
        patches: a.patch.patches.iter().map(|p| absolute(p)).collect(),
        fuzz: a.patch.fuzz,
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
        replace: !a.patch.non_replace,
        skip_compiler_check: a.skip_compiler_check,
        skip_identity_check: a.skip_identity_check,
        quiet: a.json,
        oot,
        shipped: None,
        sign,
    })
}

/// `--sign-key` and `--sign-cert`, checked readable before any long work.
pub fn sign_with(key: Option<&Path>, cert: Option<&Path>) -> Result<Option<SignWith>, UserError> {
    let (Some(key), Some(cert)) = (key, cert) else {
        return Ok(None);
    };
    for (what, p) in [("--sign-key", key), ("--sign-cert", cert)] {
        std::fs::File::open(p)
            .map_err(|e| UserError::new(format!("{what} {}: cannot read: {e}", p.display())))?;
    }
    Ok(Some(SignWith {
        key: absolute(key),
        cert: absolute(cert),
    }))
}

/// A build against a kernel that was never built here: a distribution's, from its packages
/// (`--distro`), or any kernel's source, config, Module.symvers and vmlinux (`--symvers`). klpx
/// prepares a scratch output tree once per kernel (in the cache) and kbuild compiles only the objects
/// the patch touches.
fn prepared_request(a: BuildArgs, env: &Env) -> Result<BuildRequest> {
    // Cheap checks first: options, the patches, the release in the package indexes.
    let patches: Vec<SourcePatch> = a
        .patch
        .patches
        .iter()
        .map(|p| SourcePatch::load(p))
        .collect::<Result<_, _>>()?;
    let name = a.patch.module_name()?;
    let sign = sign_with(a.sign_key.as_deref(), a.sign_cert.as_deref())?;
    let jobs = crate::cli::jobs_for(a.jobs, a.launcher.as_deref())?;
    if let Some(o) = &a.output {
        crate::files::check_output_dir(o, "-o")?;
    }
    let arch: Option<Arch> = match a.arch {
        Some(a) => Some(a),
        None => env.arch()?,
    };
    let quiet = a.json;
    let say = |m: &str| {
        if !quiet {
            eprintln!("klpx: {m}");
        }
    };
    if a.llvm && a.cc.is_none() {
        // Before any index is read or package fetched.
        check_clang_in_path()?;
    }
    let mut tools: Option<(String, Vec<String>)> = None;
    let target = match &a.distro {
        Some(spec) => {
            let release = debian::parse_distro(spec)?;
            let arch = arch.unwrap_or(Arch::X86_64);
            let rel = debian::resolve(arch, release.as_deref())?;
            say(&format!(
                "Debian {} ({}, {})",
                rel.release, rel.version, rel.image_package
            ));
            let k = debian::fetch(&rel, &say, &mut |config| {
                tools = Some(config_tools(&a, arch, config)?);
                Ok(())
            })?;
            PreparedTarget {
                arch,
                release: Some(rel.release.clone()),
                srcdir: k.source.clone(),
                config: k.config.clone(),
                symvers: k.symvers.clone(),
                vmlinux: Some(k.vmlinux.clone()),
                system_map: None,
                modules: Some(k.modules.clone()),
                // A compiler other than the kernel's gets a prepared tree of its own.
                objdir: if a.cc.is_none() && a.cross.is_none() && !a.llvm {
                    k.dir.join("obj")
                } else {
                    k.dir.join(format!(
                        "obj-{:016x}",
                        path_hash(Path::new(&format!("{:?} {:?} {}", a.cc, a.cross, a.llvm)))
                    ))
                },
            }
        }
        None => {
            let need = |o: &Option<PathBuf>, what: &str| -> Result<PathBuf> {
                let p = o
                    .clone()
                    .ok_or_else(|| UserError::new(format!("--symvers needs {what}")))?;
                if !p.exists() {
                    return Err(UserError::new(format!("{}: no such file", p.display())).into());
                }
                Ok(absolute(&p))
            };
            let config = need(&a.config, "-c CONFIG")?;
            let symvers = need(&a.symvers, "--symvers FILE")?;
            let (vmlinux, system_map) = match &a.system_map {
                Some(map) => {
                    let map = need(&Some(map.clone()), "--system-map FILE")?;
                    // Read now: a bad map is said before the tree is prepared.
                    crate::module::sympos::SymbolTable::from_system_map(&map)?;
                    (None, Some(map))
                }
                None => (
                    Some(need(&a.vmlinux, "-v VMLINUX (or --system-map FILE)")?),
                    None,
                ),
            };
            if let Some(r) = &a.archversion
                && (r.is_empty()
                    || !r
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c)))
            {
                return Err(UserError::new(format!(
                    "-a {r}: not a kernel release (letters, digits and . _ + ~ - only)"
                ))
                .into());
            }
            let text = std::fs::read_to_string(&config)
                .map_err(|e| UserError::new(format!("{}: cannot read: {e}", config.display())))?;
            let arch = match (arch, Arch::from_config(&text)) {
                (Some(a), Some(c)) if a != c => {
                    return Err(UserError::new(format!(
                        "{}: configures {c}, not --arch {a}",
                        config.display()
                    ))
                    .into());
                }
                (a, c) => a.or(c).unwrap_or(Arch::X86_64),
            };
            tools = Some(config_tools(&a, arch, &config)?);
            let srcdir = match &a.sourcerpm {
                Some(srpm) => crate::distro::srpm::prepared_source(srpm, &say)?,
                None => absolute(&a.sourcedir.clone().unwrap_or_else(|| PathBuf::from("."))),
            };
            if !srcdir.join("Makefile").is_file() || !srcdir.join("Kconfig").is_file() {
                return Err(UserError::new(format!(
                    "{}: not a kernel source tree (no Makefile and Kconfig); give it with -s",
                    srcdir.display()
                ))
                .into());
            }
            let objdir = match &a.objdir {
                Some(o) => absolute(o),
                None => crate::kernel::cache::root().join("prepared").join(format!(
                    "{}-{:016x}",
                    arch,
                    path_hash(&config)
                )),
            };
            PreparedTarget {
                arch,
                release: a.archversion.clone(),
                srcdir,
                config,
                symvers,
                vmlinux,
                system_map,
                modules: a.modules.as_deref().map(absolute),
                objdir,
            }
        }
    };
    let (cc, compat) = match tools {
        Some(t) => t,
        None => config_tools(&a, target.arch, &target.config)?,
    };
    // The vmlinux in the boot image: the code the identity check reads without -v, and a check
    // that -v is the same build.
    let image_vmlinux = match &a.image {
        None => None,
        Some(image) => {
            let extracted = crate::kernel::image::extract_vmlinux(&target.srcdir, image)?;
            if let Some(v) = &target.vmlinux {
                let (want, got) = (
                    crate::kernel::image::build_id(v)?,
                    crate::kernel::image::build_id(&extracted)?,
                );
                if want.is_some() && got.is_some() && want != got {
                    return Err(UserError::new(format!(
                        "{} and the vmlinux in {} are different builds (their build ids differ)",
                        v.display(),
                        image.display()
                    ))
                    .into());
                }
            }
            Some(extracted)
        }
    };
    let toolchain = Toolchain {
        arch: target.arch,
        cross: a.cross.clone().unwrap_or_else(|| {
            if a.llvm && !target.arch.is_host() {
                // clang's --target comes from CROSS_COMPILE.
                target.arch.backend().default_cross_prefix().to_string()
            } else {
                compiler_prefix(&cc)
            }
        }),
        llvm: a.llvm,
        cc: Some(cc),
        launcher: a.launcher.clone(),
        extra_vars: PREPARED_MAKE_VARS
            .iter()
            .map(|v| v.to_string())
            .chain(compat)
            // 6.12's kbuild takes KERNELRELEASE; older ones (6.1) build it from KERNELVERSION.
            .chain(
                target
                    .release
                    .iter()
                    .flat_map(|r| [format!("KERNELRELEASE={r}"), format!("KERNELVERSION={r}")]),
            )
            .collect(),
    };
    {
        // The source must not be patched by another klpx while kbuild reads it.
        let _lock = SourceLock::try_take(&target.srcdir)?;
        journal::recover(&target.srcdir)?;
        plan_edits(&patches, &target.srcdir, a.patch.fuzz)?;
        prepare(
            &PrepareRequest {
                srcdir: &target.srcdir,
                config: &target.config,
                symvers: &target.symvers,
                objdir: &target.objdir,
                toolchain: &toolchain,
                jobs,
                other_compiler: a.llvm,
            },
            &say,
        )?;
    }
    Ok(BuildRequest {
        patches: a.patch.patches.iter().map(|p| absolute(p)).collect(),
        fuzz: a.patch.fuzz,
        srcdir: target.srcdir,
        objdir: target.objdir,
        toolchain,
        vmlinux: target.vmlinux,
        jobs,
        targets: a.targets.clone(),
        workdir: default_workdir(&name),
        output: absolute(&a.output.clone().unwrap_or_else(|| PathBuf::from("."))),
        name,
        keep_workdir: a.debug > 0 || a.skip_cleanup,
        replace: !a.patch.non_replace,
        skip_compiler_check: a.skip_compiler_check,
        skip_identity_check: a.skip_identity_check,
        quiet,
        oot: None,
        sign,
        shipped: Some(ShippedKernel {
            modules: target.modules,
            system_map: target.system_map,
            image_vmlinux,
        }),
    })
}

/// The compiler, and the compat compiler's make variables, that a kernel config asks for, checked
/// installed (and the compiler the config's own, unless --skip-compiler-check). Cheap: it runs
/// before any download beyond the config, and before any preparation.
fn config_tools(a: &BuildArgs, arch: Arch, config: &Path) -> Result<(String, Vec<String>)> {
    let config_text = std::fs::read_to_string(config)
        .map_err(|e| UserError::new(format!("{}: cannot read: {e}", config.display())))?;
    if let Some(c) = Arch::from_config(&config_text)
        && c != arch
    {
        return Err(UserError::new(format!(
            "{}: configures {c}, not {}",
            config.display(),
            arch
        ))
        .into());
    }
    let cc = match &a.cc {
        Some(cc) => cc.clone(),
        // clang builds for every target (CROSS_COMPILE names it).
        None if a.llvm => {
            check_clang_in_path()?;
            "clang".to_string()
        }
        None => {
            let cc = config_compiler(&config_text).ok_or_else(|| {
                UserError::new(format!(
                    "{}: no CONFIG_CC_VERSION_TEXT; give the compiler with --cc",
                    config.display()
                ))
            })?;
            // A kernel built natively names its compiler without a target (`gcc-12` on s390x):
            // here it is the same compiler for the target, the cross one.
            if compiler_prefix(&cc).is_empty() && !arch.is_host() {
                format!(
                    "{}{cc}",
                    a.cross
                        .clone()
                        .unwrap_or_else(|| arch.backend().default_cross_prefix().to_string())
                )
            } else {
                cc
            }
        }
    };
    check_tools(config, &config_text, &cc)?;
    // With --llvm the compiler is another one than the config's by request, in a tree of its own.
    if !a.skip_compiler_check && !a.llvm {
        // Against the kernel's own config: the prepared tree's records whatever compiler prepared it.
        check_compiler_text(config, &config_text, &cc)?;
    }
    // The compat compiler, where the architecture has one and the config builds compat code.
    let compat: Vec<String> = match arch.backend().compat_compiler() {
        Some((var, package)) if config_text.lines().any(|l| l == "CONFIG_COMPAT=y") => {
            let prefix = var.split_once('=').map_or("", |(_, p)| p);
            if which::which(format!("{prefix}gcc")).is_err() {
                return Err(UserError::new(format!(
                    "{}: the kernel's compat code is built with {prefix}gcc, which is not \
                     installed (Debian: apt-get install {package})",
                    config.display()
                ))
                .into());
            }
            vec![var.to_string()]
        }
        _ => Vec::new(),
    };
    Ok((cc, compat))
}

/// The files a prepared build takes its kernel from.
struct PreparedTarget {
    arch: Arch,
    /// The kernel's release (`uname -r`), which the module's vermagic names.
    release: Option<String>,
    srcdir: PathBuf,
    config: PathBuf,
    symvers: PathBuf,
    /// vmlinux with symbols, or else the System.map.
    vmlinux: Option<PathBuf>,
    system_map: Option<PathBuf>,
    modules: Option<PathBuf>,
    objdir: PathBuf,
}

/// A stable name for a cache directory made from a file's absolute path.
fn path_hash(p: &Path) -> u64 {
    crate::kernel::cache::fingerprint(&[p.display().to_string().as_bytes()])
}

/// Builds a configured but unbuilt tree once with make, passing make's progress through.
/// Whether the tree is configured but was never built (no `vmlinux.a` or `Module.symvers`).
fn unbuilt(objdir: &Path) -> bool {
    !objdir.join("vmlinux.a").is_file() || !objdir.join("Module.symvers").is_file()
}

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
    let status = crate::kbuild::make(&argv)
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
                let link = match r.link {
                    Some(LinkRun::Replayed) => "; linked with kbuild's recorded commands",
                    Some(LinkRun::Kept) => "; the last link's, its inputs unchanged",
                    _ => "",
                };
                println!(
                    "module: {} ({} livepatch relocations{link})",
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

/// `--llvm` without `--cc` compiles with the `clang` in PATH: its absence is said in one line with
/// what to install.
fn check_clang_in_path() -> Result<(), UserError> {
    if which::which("clang").is_err() {
        return Err(UserError::new(
            "--llvm: clang is not in PATH (Debian: apt-get install clang-16 lld-16 llvm-16, then PATH=/usr/lib/llvm-16/bin:$PATH)",
        ));
    }
    Ok(())
}
