//! A livepatch release: the modules one patch set gave on each architecture, laid out per
//! architecture and kernel release with their packages, and described by a manifest.
//!
//! Building the modules is the matrix's (or the distribution build's) job; this stage takes their
//! results as plain values and writes the release directory:
//!
//! ```text
//! DIR/<arch>/<release>/<name>.ko
//! DIR/<arch>/<release>/<package>_<version>_<debian arch>.deb
//! DIR/<arch>/<release>/<package>-<version>-1.<rpm arch>.rpm
//! DIR/manifest.json  DIR/report.md  DIR/SHA256SUMS
//! ```
//!
//! [`kernel_package`] builds the permanent fix beside it: the kernel itself with the patches
//! applied, packaged by the kernel's own `bindeb-pkg`/`binrpm-pkg`.

pub mod kernel_package;
pub mod package;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::matrix::report::{Difference, Report};
use crate::matrix::run::ArchResult;
use crate::matrix::verify::{BootTarget, Verified};
use crate::verify::inspect::{PatchedFunction, inspect};
use package::{PackageSpec, debian_package, rpm_package, tool_packages};

/// What the release is, besides the modules.
#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    pub name: String,
    pub version: String,
    /// The release directory (new or empty; checked by the caller).
    pub output: PathBuf,
    pub maintainer: String,
    /// The patches' file names.
    pub patches: Vec<String>,
    /// `--distro`, when the modules are for a distribution's kernels.
    pub distro: Option<String>,
    /// Package a module that failed its verification all the same.
    pub package_unverified: bool,
}

/// One architecture's build and the kernel it targets.
#[derive(Debug)]
pub struct BuiltArch {
    pub result: ArchResult,
    /// The target kernel's vmlinux, for its build id.
    pub vmlinux: Option<PathBuf>,
    /// The distribution's kernel image package(s) the module fits (alternatives), for `Depends`.
    pub depends_on: Vec<String>,
    /// The patched kernel's own packages (`--with-kernel`), or why they could not be built.
    pub kernel_build: Option<Result<Vec<PathBuf>, String>>,
    /// The kernel `--verify` proves the module on, or why there is none.
    pub boot: Result<BootTarget, String>,
    /// The module proven in qemu (`--verify`), when it was.
    pub verified: Option<Verified>,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// The klpx that built it.
    pub klpx: String,
    pub patches: Vec<String>,
    pub distro: Option<String>,
    pub arches: Vec<ArchManifest>,
    /// klpx itself with its boot unit, packaged for the host architecture when the release has it
    /// (`tools/`), for the machines that load the livepatches.
    pub tools: Vec<String>,
    /// Why the tools could not be packaged, when they could not.
    pub tools_error: Option<String>,
    /// What is not the same on every architecture (the matrix report's differences).
    pub differences: Vec<Difference>,
}

/// One architecture of the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct ArchManifest {
    pub arch: String,
    /// `module`, `module (cannot load)`, `no-change`, `refused`, `failed`, or `verify failed`
    /// (not packaged).
    pub status: String,
    pub kernel_release: Option<String>,
    pub vermagic: Option<String>,
    /// The target kernel's GNU build id (hex), when its vmlinux is at hand.
    pub build_id: Option<String>,
    /// Paths relative to the release directory.
    pub module: Option<String>,
    pub sha256: Option<String>,
    pub signed: bool,
    pub packages: Vec<String>,
    /// The kernel rebuilt with the patches, packaged (`--with-kernel`): the permanent fix.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel_packages: Vec<String>,
    /// Why the patched kernel could not be packaged (`--with-kernel`); the livepatch stands.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_error: Option<String>,
    /// The functions the module replaces, with their positions, read back from the module.
    pub functions: Vec<PatchedFunction>,
    pub new_functions: Vec<String>,
    pub refusals: Vec<String>,
    pub error: Option<String>,
    /// The verification in qemu (`--verify`): outcome, reason, the checks' output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verified>,
}

impl Manifest {
    pub fn refused(&self) -> bool {
        self.arches.iter().any(|a| a.status == "refused")
    }
    pub fn verify_failed(&self) -> bool {
        self.arches
            .iter()
            .any(|a| a.verify.as_ref().is_some_and(|v| !v.passed))
    }
}

/// Writes the release directory from the architectures' builds; `scratch` is for package staging
/// (removed by the caller). An architecture whose packaging fails is marked failed; the others
/// are written all the same.
pub fn write(req: &ReleaseRequest, built: &[BuiltArch], scratch: &Path) -> Result<Manifest> {
    let mut report = Report::new(built.iter().map(|b| &b.result));
    if built.iter().any(|b| b.verified.is_some()) {
        report.add_verification(built.iter().map(|b| b.verified.clone()).collect());
    }
    let mut arches = Vec::new();
    for (b, row) in built.iter().zip(&report.rows) {
        let mut m = ArchManifest {
            arch: row.arch.clone(),
            status: row.status.clone(),
            kernel_release: None,
            vermagic: None,
            build_id: None,
            module: None,
            sha256: None,
            signed: false,
            packages: Vec::new(),
            kernel_packages: Vec::new(),
            kernel_error: None,
            functions: Vec::new(),
            new_functions: row.new_functions.clone(),
            refusals: row.refusals.clone(),
            error: row.error.clone(),
            verify: b.verified.clone(),
        };
        let unverified = b
            .verified
            .as_ref()
            .is_some_and(|v| !v.passed && !req.package_unverified);
        if let Err(f) = &b.result.outcome {
            m.error = Some(f.message.clone());
        }
        if let Ok(r) = &b.result.outcome {
            m.kernel_release = r.kernel_release.clone();
            if unverified {
                m.status = "verify failed".into();
                m.error = b.verified.as_ref().map(|v| {
                    format!(
                        "not packaged: the module failed in qemu ({}); --package-unverified packages it",
                        v.reason
                    )
                });
            } else if let Some(ko) = &r.module
                && let Err(e) = place(req, b, ko, &mut m, &scratch.join(&row.arch))
            {
                m.status = "failed".into();
                m.error = Some(format!("{e:#}"));
            }
        }
        arches.push(m);
    }
    // The report names the modules where the release has them.
    for (row, m) in report.rows.iter_mut().zip(&arches) {
        row.module = m.module.clone();
    }
    let mut tools = Vec::new();
    let mut tools_error = None;
    if let Some(host) = klpx_arch::Arch::host()
        && built.iter().any(|b| b.result.arch == host)
    {
        let dir = req.output.join("tools");
        match tool_packages(host, &req.maintainer, &scratch.join("tools"), &dir) {
            Ok(files) => {
                for p in files {
                    let name = p.file_name().unwrap_or_default().to_string_lossy();
                    tools.push(format!("tools/{name}"));
                }
            }
            Err(e) => tools_error = Some(format!("{e:#}")),
        }
    }
    let manifest = Manifest {
        name: req.name.clone(),
        version: req.version.clone(),
        klpx: env!("CARGO_PKG_VERSION").to_string(),
        patches: req.patches.clone(),
        distro: req.distro.clone(),
        arches,
        tools,
        tools_error,
        differences: report.differences.clone(),
    };
    let json = serde_json::to_string_pretty(&manifest)? + "\n";
    crate::files::write_whole(&req.output.join("manifest.json"), json.as_bytes())?;
    let title = format!("{} {}: {}", req.name, req.version, req.patches.join(", "));
    crate::files::write_whole(
        &req.output.join("report.md"),
        report.markdown(&title).as_bytes(),
    )?;
    write_sums(&req.output)?;
    Ok(manifest)
}

/// Moves one architecture's module into the release, reads it back and packages it.
fn place(
    req: &ReleaseRequest,
    b: &BuiltArch,
    ko: &Path,
    m: &mut ArchManifest,
    scratch: &Path,
) -> Result<()> {
    let release = m
        .kernel_release
        .clone()
        .context("the build did not say which kernel release the module is for")?;
    let rel_dir = PathBuf::from(&m.arch).join(&release);
    let dir = req.output.join(&rel_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = format!("{}.ko", req.name);
    let dest = dir.join(&file);
    std::fs::rename(ko, &dest)
        .or_else(|_| std::fs::copy(ko, &dest).map(|_| ()))
        .with_context(|| format!("moving {} to {}", ko.display(), dest.display()))?;
    m.module = Some(rel_dir.join(&file).display().to_string());
    m.sha256 = Some(sha256_file(&dest)?);
    let contents = inspect(&dest)?;
    m.vermagic = contents.vermagic.clone();
    m.signed = contents.signed;
    m.functions = contents.functions;
    m.build_id = b.vmlinux.as_deref().and_then(build_id);
    std::fs::create_dir_all(scratch)?;
    let spec = PackageSpec {
        arch: b.result.arch,
        name: &req.name,
        version: &req.version,
        kernel_release: &release,
        module: &dest,
        kernel_packages: &b.depends_on,
        maintainer: &req.maintainer,
        patches: &req.patches,
    };
    for p in [
        debian_package(&spec, scratch, &dir)?,
        rpm_package(&spec, &dir)?,
    ] {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        m.packages
            .push(rel_dir.join(name.as_ref()).display().to_string());
    }
    match &b.kernel_build {
        None => {}
        Some(Err(e)) => m.kernel_error = Some(e.clone()),
        Some(Ok(files)) => {
            let kdir = dir.join("kernel");
            std::fs::create_dir_all(&kdir)?;
            for f in files {
                let name = f.file_name().unwrap_or_default();
                std::fs::rename(f, kdir.join(name))
                    .with_context(|| format!("moving {}", f.display()))?;
                m.kernel_packages
                    .push(rel_dir.join("kernel").join(name).display().to_string());
            }
        }
    }
    Ok(())
}

/// The GNU build id of an ELF file, in hex; `None` when it has none or cannot be read.
fn build_id(vmlinux: &Path) -> Option<String> {
    use object::Object;
    let map = crate::mapped::MappedFile::open(vmlinux).ok()?;
    let elf = object::File::parse(&*map).ok()?;
    let id = elf.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

fn sha256_file(path: &Path) -> Result<String> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `SHA256SUMS` over every file of the release, in `sha256sum -c` form.
fn write_sums(dir: &Path) -> Result<()> {
    let mut files = Vec::new();
    collect_files(dir, dir, &mut files)?;
    files.sort();
    let mut text = String::new();
    for f in files.iter().filter(|f| f.as_os_str() != "SHA256SUMS") {
        text.push_str(&format!(
            "{}  {}\n",
            sha256_file(&dir.join(f))?,
            f.display()
        ));
    }
    crate::files::write_whole(&dir.join("SHA256SUMS"), text.as_bytes())?;
    Ok(())
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let path = e.path();
        let name = e.file_name();
        // klpx's own scratch space inside the release directory is not part of it.
        if name.to_string_lossy().starts_with(".klpx") {
            continue;
        }
        if e.file_type()?.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}
