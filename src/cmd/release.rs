//! `klpx release`: checks everything cheap first (version, patches, matrix, release directory,
//! signing key, packaging tools, the distribution's releases), builds the modules through the
//! matrix or the distribution build, and hands the results to [`crate::release::write`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use klpx_arch::Arch;

use crate::cli::{BuildArgs, ReleaseArgs};
use crate::cmd::build::Env;
use crate::cmd::matrix::load_matrix;
use crate::distro::debian;
use crate::error::{UserError, exit};
use crate::livepatch::pipeline::{SignWith, build};
use crate::matrix::config::Matrix;
use crate::matrix::run::{ArchFailure, ArchResult, MatrixRequest, run as run_matrix};
use crate::matrix::verify::{BootTarget, Reference};
use crate::patch::source::SourcePatch;
use crate::release::kernel_package::{PackageFormat, PackageRequest, build_packages};
use crate::release::package::check_version;
use crate::release::{BuiltArch, ReleaseRequest, write};

/// Scratch space inside the release directory (module outputs, package staging), removed at the end.
const SCRATCH: &str = ".klpx-build";

/// Runs `klpx release`; returns the exit status.
pub fn run(a: ReleaseArgs) -> Result<i32> {
    let plan = checked(&a)?;
    // Only now is anything written: the release directory, and scratch space inside it.
    let output = plan.output.clone();
    let made_output = !output.exists();
    std::fs::create_dir_all(&output)
        .map_err(|e| UserError::new(format!("-o {}: cannot create: {e}", a.output.display())))?;
    let scratch = output.join(SCRATCH);
    let released = std::fs::create_dir_all(&scratch)
        .with_context(|| format!("creating {}", scratch.display()))
        .and_then(|_| release(&a, plan, &scratch));
    let _ = std::fs::remove_dir_all(&scratch);
    let (built, manifest) = match released {
        Ok(r) => r,
        Err(e) => {
            // No release was written: the directory klpx made goes (it is empty again).
            if made_output {
                let _ = std::fs::remove_dir(&output);
            }
            return Err(e);
        }
    };
    print_summary(&a, &manifest)?;
    let failed = |user: bool| {
        built
            .iter()
            .any(|b| matches!(&b.result.outcome, Err(f) if f.user_error == user))
    };
    // A failure after the build (moving, packaging) is klpx's or its tools'.
    let packaging_failed = built.iter().zip(&manifest.arches).any(|(b, m)| {
        b.result.outcome.is_ok() && (m.status == "failed" || m.kernel_error.is_some())
    });
    Ok(
        if failed(false) || packaging_failed || manifest.tools_error.is_some() {
            exit::INTERNAL
        } else if failed(true) {
            exit::USER
        } else if manifest.refused() || manifest.verify_failed() {
            exit::UNPATCHABLE
        } else {
            exit::OK
        },
    )
}

/// Everything `klpx release` checked before writing anything.
struct Plan {
    name: String,
    /// The patches, as absolute paths.
    patches: Vec<PathBuf>,
    matrix: Matrix,
    matrix_dir: PathBuf,
    /// The matrix's kernel source (without `--distro`).
    source: Option<PathBuf>,
    /// `--distro` and each architecture's release in the package indexes.
    distro: Option<(String, Vec<debian::DebianRelease>)>,
    sign: Option<SignWith>,
    checks: Option<crate::matrix::verify::Checks>,
    jobs: usize,
    output: PathBuf,
}

/// The cheap checks, in order: version, patches, name, matrix and `--arches`, maintainer, release
/// directory, signing key, packaging tools; without `--distro` the matrix's fragments and
/// compilers and whether the patches apply, with it each architecture's release in the package
/// indexes.
fn checked(a: &ReleaseArgs) -> Result<Plan> {
    check_version(&a.version)?;
    SourcePatch::load_all(&a.patch.patches)?;
    let name = a.patch.module_name()?;
    let checks = a.verify.checks()?;
    let (mut matrix, matrix_dir, shown) = load_matrix(a.file.as_deref())?;
    matrix.select(&a.arches.arches, &shown)?;
    if a.maintainer.trim().is_empty() || a.maintainer.contains('\n') {
        return Err(UserError::new("--maintainer: give one line, `NAME <EMAIL>`").into());
    }
    check_release_dir(&a.output)?;
    let sign = crate::cmd::build::sign_with(a.sign_key.as_deref(), a.sign_cert.as_deref())?;
    for (tool, package) in [("dpkg-deb", "dpkg"), ("rpmbuild", "rpm")] {
        if which::which(tool).is_err() {
            return Err(UserError::new(format!(
                "{tool} is not installed; it builds the release's packages (apt-get install {package})"
            ))
            .into());
        }
    }
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let patches: Vec<PathBuf> = a.patch.patches.iter().map(|p| abs(p)).collect();
    let mut source = None;
    let distro = match &a.distro {
        None => {
            matrix.check_fragments(&shown, &matrix_dir)?;
            matrix.check_compilers(&shown)?;
            let src = crate::matrix::run::source_dir(&matrix)?;
            crate::livepatch::lock::check_patches_apply(&src, &patches, a.patch.fuzz)?;
            source = Some(src);
            None
        }
        Some(spec) => {
            let wanted = debian::parse_distro(spec)?;
            let mut rels = Vec::new();
            for e in &matrix.arches {
                let rel = debian::resolve(e.arch.0, wanted.as_deref()).map_err(|err| {
                    UserError::new(format!(
                        "--distro {spec} on {}: {err:#}; leave the architecture out with --arches",
                        e.arch.0
                    ))
                })?;
                rels.push(rel);
            }
            Some((spec.clone(), rels))
        }
    };
    Ok(Plan {
        name,
        patches,
        matrix,
        matrix_dir: abs(&matrix_dir),
        source,
        distro,
        sign,
        checks,
        jobs: crate::cli::jobs(a.jobs)?,
        output: abs(&a.output),
    })
}

/// Builds, verifies and packages; writes the release into `plan.output`, staging in `scratch`.
fn release(
    a: &ReleaseArgs,
    plan: Plan,
    scratch: &Path,
) -> Result<(Vec<BuiltArch>, crate::release::Manifest)> {
    let modules = scratch.join("modules");
    let entries = plan.matrix.arches.clone();
    let mut built = match &plan.distro {
        None => matrix_builds(
            a,
            plan.matrix,
            plan.matrix_dir,
            &plan.patches,
            &plan.name,
            &modules,
            plan.sign,
        )?,
        Some((spec, rels)) => rels
            .iter()
            .map(|rel| distro_build(a, spec, rel, plan.jobs, &modules))
            .collect(),
    };
    if let Some(mut checks) = plan.checks {
        use crate::matrix::verify::{booting_arches, verify_all};
        for arch in booting_arches(built.iter().map(|b| &b.result)) {
            crate::setup::ensure_packages(&[arch.backend().qemu_package()])?;
            checks.busybox.push((arch, crate::setup::busybox(arch)?));
        }
        let targets: Vec<_> = built
            .iter()
            .map(|b| (b.result.clone(), b.boot.clone()))
            .collect();
        for (b, v) in built.iter_mut().zip(verify_all(&targets, &checks)) {
            b.verified = v;
        }
    }
    if let Some(src) = plan.source.as_ref().filter(|_| a.with_kernel) {
        for (b, e) in built.iter_mut().zip(&entries) {
            let unverified = b
                .verified
                .as_ref()
                .is_some_and(|v| !v.passed && !a.package_unverified);
            if unverified || !b.result.outcome.as_ref().is_ok_and(|r| r.module.is_some()) {
                continue;
            }
            b.kernel_build = Some(kernel_packages(
                a,
                &plan.patches,
                b,
                e,
                src,
                plan.jobs,
                scratch,
            ));
        }
    }
    let req = ReleaseRequest {
        name: plan.name,
        version: a.version.clone(),
        output: plan.output,
        maintainer: a.maintainer.clone(),
        patches: a
            .patch
            .patches
            .iter()
            .map(|p| {
                p.file_name().map_or_else(
                    || p.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                )
            })
            .collect(),
        distro: a.distro.clone(),
        package_unverified: a.package_unverified,
    };
    let manifest = write(&req, &built, &scratch.join("packages"))?;
    Ok((built, manifest))
}

/// One line per architecture, or the manifest as JSON.
fn print_summary(a: &ReleaseArgs, manifest: &crate::release::Manifest) -> Result<()> {
    if a.json {
        println!("{}", serde_json::to_string_pretty(manifest)?);
        return Ok(());
    }
    for m in &manifest.arches {
        let what = match (&m.module, &m.error) {
            (Some(ko), _) => format!("{ko} (+ {} packages)", m.packages.len()),
            (None, Some(e)) => e.lines().next().unwrap_or_default().to_string(),
            (None, None) => String::new(),
        };
        println!(
            "{:<8} {:<24} {:<22} {what}",
            m.arch,
            m.kernel_release.as_deref().unwrap_or("-"),
            m.status
        );
        if let Some(e) = &m.kernel_error {
            println!("         the patched kernel was not packaged: {e}");
        }
    }
    if let Some(e) = &manifest.tools_error {
        eprintln!("klpx: packaging klpx itself failed: {e}");
    }
    println!(
        "release {} {} written to {} (manifest.json, SHA256SUMS, report.md)",
        manifest.name,
        manifest.version,
        a.output.display()
    );
    Ok(())
}

/// The release directory must be new or empty: a release never overwrites files.
fn check_release_dir(dir: &Path) -> Result<(), UserError> {
    crate::files::check_output_dir(dir, "-o")?;
    if dir.is_dir()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(UserError::new(format!(
            "-o {}: not empty; a release goes into a new or empty directory",
            dir.display()
        )));
    }
    Ok(())
}

/// The modules of the matrix's trees, all architectures together.
fn matrix_builds(
    a: &ReleaseArgs,
    matrix: Matrix,
    matrix_dir: PathBuf,
    patches: &[PathBuf],
    name: &str,
    modules: &Path,
    sign: Option<SignWith>,
) -> Result<Vec<BuiltArch>> {
    let results = run_matrix(&MatrixRequest {
        matrix,
        matrix_dir,
        patches: patches.to_vec(),
        fuzz: a.patch.fuzz,
        name: name.to_string(),
        output: modules.to_path_buf(),
        replace: !a.patch.non_replace,
        sequential: false,
        quiet: a.json,
        sign,
    })?;
    Ok(results
        .into_iter()
        .map(|r| BuiltArch {
            vmlinux: Some(r.tree.join("vmlinux")),
            boot: Ok(BootTarget::of_tree(&r)),
            depends_on: Vec::new(),
            kernel_build: None,
            verified: None,
            result: r,
        })
        .collect())
}

/// The patched kernel of one architecture's tree, as Debian packages and RPMs (`--with-kernel`).
fn kernel_packages(
    a: &ReleaseArgs,
    patches: &[PathBuf],
    b: &BuiltArch,
    e: &crate::matrix::config::ArchEntry,
    src: &Path,
    jobs: usize,
    scratch: &Path,
) -> Result<Vec<PathBuf>, String> {
    let arch = b.result.arch;
    let mut base = crate::kernel::tree::KernelTree::new(arch, src, &b.result.tree, jobs);
    if let Some(c) = &e.cross {
        base.cross = c.clone();
    }
    let mut files = Vec::new();
    for format in [PackageFormat::Deb, PackageFormat::Rpm] {
        crate::setup::ensure_packages(format.tools()).map_err(|e| format!("{e:#}"))?;
        let made = build_packages(
            &PackageRequest {
                base: base.clone(),
                patches: patches.to_vec(),
                fuzz: a.patch.fuzz,
                format,
                output: scratch.join("kernel").join(arch.name()),
            },
            &|m| {
                if !a.json {
                    eprintln!("klpx: {arch}: {m}")
                }
            },
        )
        .map_err(|e| format!("{e:#}"))?;
        files.extend(made);
    }
    Ok(files)
}

/// One architecture's module for the distribution's kernel, as `klpx build --distro` builds it.
fn distro_build(
    a: &ReleaseArgs,
    spec: &str,
    rel: &debian::DebianRelease,
    jobs: usize,
    modules: &Path,
) -> BuiltArch {
    let arch: Arch = rel.arch;
    let args = BuildArgs {
        patch: a.patch.clone(),
        distro: Some(format!(
            "{}:{}",
            spec.split(':').next().unwrap_or(spec),
            rel.release
        )),
        arch: Some(arch),
        output: Some(modules.join(arch.name())),
        jobs: Some(jobs),
        sign_key: a.sign_key.clone(),
        sign_cert: a.sign_cert.clone(),
        json: a.json,
        ..BuildArgs::default()
    };
    let started = Instant::now();
    let mut vmlinux = None;
    let mut tree = PathBuf::new();
    let outcome = crate::cmd::build::request(args, &Env::default())
        .and_then(|req| {
            vmlinux = req.vmlinux.clone();
            tree = req.objdir.clone();
            build(&req)
        })
        .map_err(|e| ArchFailure::from_error(&e, ""));
    if let Err(e) = &outcome
        && !a.json
    {
        eprintln!("klpx: {arch}: {e}");
    }
    // The shipped kernel `--verify` boots: fetched already by the build, so read from the cache.
    let fetched = match &outcome {
        Ok(_) => debian::fetch(rel, &|_| {}, &mut |_| Ok(())).map_err(|e| format!("{e:#}")),
        Err(_) => Err("the build failed".to_string()),
    };
    let boot = fetched.map(|k| BootTarget {
        kernel_image: k.vmlinuz,
        reference: Reference::Shipped {
            vmlinux: k.vmlinux,
            symvers: k.symvers,
            dir: k.dir,
        },
    });
    // Debian's signed and unsigned images of a release are the same kernel.
    let mut depends_on = vec![format!("linux-image-{}", rel.release)];
    if !depends_on.contains(&rel.image_package) {
        depends_on.push(rel.image_package.clone());
    }
    BuiltArch {
        result: ArchResult {
            arch,
            tree,
            outcome,
            time: started.elapsed(),
        },
        vmlinux,
        depends_on,
        kernel_build: None,
        boot,
        verified: None,
    }
}
