//! The packages of one architecture's livepatch: a Debian package (`dpkg-deb`) and an RPM
//! (`rpmbuild`), each installing the module into `/var/lib/klpx/<release>/`, where `klpx load
//! --all` finds it at boot. The packages carry no scripts: loading is the operator's (or the boot
//! unit's) decision, not the package manager's.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use klpx_arch::Arch;

use crate::error::UserError;

/// What the packages of one module say about it.
#[derive(Debug, Clone)]
pub struct PackageSpec<'a> {
    pub arch: Arch,
    /// The module's name (without `.ko`).
    pub name: &'a str,
    /// The release version (`--version`).
    pub version: &'a str,
    /// The kernel release the module is built for.
    pub kernel_release: &'a str,
    /// The module file.
    pub module: &'a Path,
    /// Alternatives of the kernel image package the module fits (a distribution's), for `Depends`.
    pub kernel_packages: &'a [String],
    pub maintainer: &'a str,
    /// The patches' file names, for the description.
    pub patches: &'a [String],
}

impl PackageSpec<'_> {
    /// The package name: the module's name and the kernel release, as Debian and RPM allow
    /// (`livepatch-fix-6.12.117-deb12-amd64`; lower case, `_` as `-`).
    pub fn package_name(&self) -> Result<String, UserError> {
        let n = format!("{}-{}", self.name, self.kernel_release)
            .to_ascii_lowercase()
            .replace('_', "-");
        let ok = n.len() >= 2
            && n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !ok {
            return Err(UserError::new(format!(
                "kernel release {}: makes the package name {n}, which Debian and RPM do not allow \
                 (letters, digits, + - . only)",
                self.kernel_release
            )));
        }
        Ok(n)
    }

    /// Where the package puts the module, relative to `/`.
    pub fn installed_path(&self) -> String {
        format!(
            "{}/{}/{}.ko",
            crate::machine::INSTALL_DIR.trim_start_matches('/'),
            self.kernel_release,
            self.name
        )
    }

    fn summary(&self) -> String {
        format!(
            "Livepatch module {} for Linux {} ({})",
            self.name,
            self.kernel_release,
            self.arch.name()
        )
    }

    fn description_lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "The livepatch module {}.ko, built by klpx {} for the kernel release {}.",
            self.name,
            env!("CARGO_PKG_VERSION"),
            self.kernel_release
        )];
        lines.push(format!(
            "Installed into /{}/; klpx load --all (klpx.service) loads it at boot.",
            self.installed_path()
                .rsplit_once('/')
                .map_or("", |(d, _)| d)
        ));
        for p in self.patches {
            lines.push(format!("Patch: {p}"));
        }
        lines
    }
}

/// Builds the Debian package into `out_dir`, staging in `scratch`; returns its path.
pub fn debian_package(spec: &PackageSpec, scratch: &Path, out_dir: &Path) -> Result<PathBuf> {
    let pkg = spec.package_name()?;
    let root = scratch.join("deb");
    let dest = root.join(spec.installed_path());
    std::fs::create_dir_all(dest.parent().unwrap_or(&root))?;
    std::fs::create_dir_all(root.join("DEBIAN"))?;
    std::fs::copy(spec.module, &dest)
        .with_context(|| format!("copying {} into the package", spec.module.display()))?;
    let size_kib = std::fs::metadata(&dest)?.len().div_ceil(1024);
    let mut control = format!(
        "Package: {pkg}\nVersion: {}\nArchitecture: {}\nMaintainer: {}\nInstalled-Size: {size_kib}\n\
         Section: kernel\nPriority: optional\n",
        spec.version,
        spec.arch.backend().debian_arch(),
        spec.maintainer
    );
    if !spec.kernel_packages.is_empty() {
        control.push_str(&format!("Depends: {}\n", spec.kernel_packages.join(" | ")));
    }
    control.push_str("Recommends: klpx\n");
    control.push_str(&format!("Description: {}\n", spec.summary()));
    for l in spec.description_lines() {
        control.push_str(&format!(" {l}\n"));
    }
    std::fs::write(root.join("DEBIAN/control"), control)?;
    let file = out_dir.join(format!(
        "{pkg}_{}_{}.deb",
        spec.version,
        spec.arch.backend().debian_arch()
    ));
    run(
        duct::cmd!("dpkg-deb", "--root-owner-group", "--build", &root, &file),
        "dpkg-deb --build",
    )?;
    Ok(file)
}

/// Builds the RPM into `out_dir`, with a `_topdir` in `scratch` (a path without spaces, as rpm's
/// macros need); returns its path.
pub fn rpm_package(spec: &PackageSpec, scratch: &Path, out_dir: &Path) -> Result<PathBuf> {
    let pkg = spec.package_name()?;
    let top = scratch.join("rpm");
    if top.to_string_lossy().contains(char::is_whitespace) {
        return Err(anyhow!(
            "{}: rpmbuild's _topdir cannot hold whitespace",
            top.display()
        ));
    }
    let sources = top.join("SOURCES");
    std::fs::create_dir_all(&sources)?;
    let ko = format!("{}.ko", spec.name);
    std::fs::copy(spec.module, sources.join(&ko))
        .with_context(|| format!("copying {} into the package", spec.module.display()))?;
    let dir = spec
        .installed_path()
        .rsplit_once('/')
        .map_or(String::new(), |(d, _)| d.to_string());
    let mut text = String::new();
    // The module is installed as built: no stripping, no debug package, no build-id links.
    text.push_str("%global debug_package %{nil}\n%global __os_install_post %{nil}\n");
    text.push_str("%global _build_id_links none\n");
    text.push_str(&format!(
        "Name: {pkg}\nVersion: {}\nRelease: 1\nSummary: {}\nLicense: GPL-2.0-only\nPackager: {}\n\
         Source0: {ko}\n",
        spec.version,
        spec.summary(),
        spec.maintainer
    ));
    // A distribution's kernel image package is Debian's here, which no RPM database knows; the
    // kernel release is in the name and the description.
    text.push_str("\n%description\n");
    for l in spec.description_lines() {
        text.push_str(&l);
        text.push('\n');
    }
    text.push_str(&format!(
        "\n%install\nmkdir -p %{{buildroot}}/{dir}\ninstall -m 0644 %{{SOURCE0}} %{{buildroot}}/{dir}/{ko}\n"
    ));
    text.push_str(&format!("\n%files\n/{dir}/{ko}\n"));
    let spec_file = top.join(format!("{pkg}.spec"));
    std::fs::write(&spec_file, text)?;
    let rpm_arch = spec.arch.backend().rpm_arch();
    run(
        duct::cmd!(
            "rpmbuild",
            "-bb",
            "--target",
            rpm_arch,
            "--define",
            format!("_topdir {}", top.display()),
            &spec_file
        ),
        "rpmbuild -bb",
    )?;
    let name = format!("{pkg}-{}-1.{rpm_arch}.rpm", spec.version);
    let built = top.join("RPMS").join(rpm_arch).join(&name);
    let file = out_dir.join(&name);
    std::fs::rename(&built, &file)
        .with_context(|| format!("rpmbuild wrote no {}", built.display()))?;
    Ok(file)
}

/// The boot unit that runs `klpx load --all` (contrib/klpx.service).
pub const BOOT_UNIT: &str = include_str!("../../contrib/klpx.service");

/// klpx itself, for the machines that run the livepatches: this executable (debug info stripped)
/// as `/usr/bin/klpx` and the boot unit as `/lib/systemd/system/klpx.service`, as a Debian package
/// and an RPM for `arch` (the host's: the executable is the one running). Returns their paths.
pub fn tool_packages(
    arch: Arch,
    maintainer: &str,
    scratch: &Path,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let exe = std::env::current_exe().context("finding klpx's own executable")?;
    let version = env!("CARGO_PKG_VERSION");
    let root = scratch.join("tool-deb");
    let bin = root.join("usr/bin/klpx");
    let unit = root.join("lib/systemd/system/klpx.service");
    for d in [&bin, &unit] {
        std::fs::create_dir_all(d.parent().unwrap_or(&root))?;
    }
    std::fs::create_dir_all(root.join("DEBIAN"))?;
    run(
        duct::cmd!("objcopy", "--strip-debug", &exe, &bin),
        "objcopy --strip-debug (binutils)",
    )?;
    std::fs::write(&unit, BOOT_UNIT)?;
    std::fs::create_dir_all(out_dir)?;
    let size_kib = std::fs::metadata(&bin)?.len().div_ceil(1024) + 1;
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let glibc = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) }
        .to_string_lossy()
        .into_owned();
    let description = [
        "Builds Linux livepatch modules and, on the machines that run them, loads, lists,",
        "installs and removes them (klpx load/unload/list/install/uninstall). klpx.service",
        "loads the livepatches installed for the running kernel at boot:",
        "systemctl enable klpx.service.",
    ];
    let mut control = format!(
        "Package: klpx\nVersion: {version}\nArchitecture: {}\nMaintainer: {maintainer}\n\
         Installed-Size: {size_kib}\nSection: admin\nPriority: optional\nDepends: libc6 (>= {glibc}), kmod\n\
         Description: livepatch modules: build, load, list, install\n",
        arch.backend().debian_arch()
    );
    for l in description {
        control.push_str(&format!(" {l}\n"));
    }
    std::fs::write(root.join("DEBIAN/control"), control)?;
    let deb = out_dir.join(format!(
        "klpx_{version}_{}.deb",
        arch.backend().debian_arch()
    ));
    run(
        duct::cmd!("dpkg-deb", "--root-owner-group", "--build", &root, &deb),
        "dpkg-deb --build",
    )?;

    let top = scratch.join("tool-rpm");
    let sources = top.join("SOURCES");
    std::fs::create_dir_all(&sources)?;
    std::fs::copy(&bin, sources.join("klpx"))?;
    std::fs::write(sources.join("klpx.service"), BOOT_UNIT)?;
    let rpm_arch = arch.backend().rpm_arch();
    let mut spec = String::from(
        "%global debug_package %{nil}\n%global __os_install_post %{nil}\n\
         %global _build_id_links none\n",
    );
    spec.push_str(&format!(
        "Name: klpx\nVersion: {version}\nRelease: 1\nSummary: livepatch modules: build, load, list, \
         install\nLicense: GPL-2.0-only\nPackager: {maintainer}\nRequires: kmod\n\
         Source0: klpx\nSource1: klpx.service\n\n%description\n{}\n\n%install\n\
         install -D -m 0755 %{{SOURCE0}} %{{buildroot}}/usr/bin/klpx\n\
         install -D -m 0644 %{{SOURCE1}} %{{buildroot}}/lib/systemd/system/klpx.service\n\n\
         %files\n/usr/bin/klpx\n/lib/systemd/system/klpx.service\n",
        description.join("\n")
    ));
    let spec_file = top.join("klpx.spec");
    std::fs::write(&spec_file, spec)?;
    run(
        duct::cmd!(
            "rpmbuild",
            "-bb",
            "--target",
            rpm_arch,
            "--define",
            format!("_topdir {}", top.display()),
            &spec_file
        ),
        "rpmbuild -bb",
    )?;
    let name = format!("klpx-{version}-1.{rpm_arch}.rpm");
    let rpm = out_dir.join(&name);
    std::fs::rename(top.join("RPMS").join(rpm_arch).join(&name), &rpm)
        .with_context(|| format!("rpmbuild wrote no {name}"))?;
    Ok(vec![deb, rpm])
}

/// Runs a packaging tool, keeping its output for the error.
fn run(cmd: duct::Expression, what: &str) -> Result<()> {
    let out = cmd
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        return Err(anyhow!(
            "{what} failed: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ));
    }
    Ok(())
}

/// Checks a release version for both formats: Debian's upstream version without `-` or `:` and
/// RPM's `Version`, which allows no `-` either.
pub fn check_version(v: &str) -> Result<(), UserError> {
    let ok = v.starts_with(|c: char| c.is_ascii_digit())
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~".contains(c));
    if ok {
        Ok(())
    } else {
        Err(UserError::new(format!(
            "--version {v}: give a digit first, then letters, digits, . + ~ (e.g. 1.0 or 2~rc1)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        for ok in ["1", "1.0", "2~rc1", "20261130+fix.2"] {
            assert!(check_version(ok).is_ok(), "{ok}");
        }
        for bad in ["", "v1", "1-2", "1:2", "1 2", "1/2", "../1"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn package_names() {
        let spec = |name, release| PackageSpec {
            arch: Arch::X86_64,
            name,
            version: "1",
            kernel_release: release,
            module: Path::new("x.ko"),
            kernel_packages: &[],
            maintainer: "m",
            patches: &[],
        };
        assert_eq!(
            spec("livepatch-Fix_1", "6.12.117+deb12-amd64")
                .package_name()
                .unwrap(),
            "livepatch-fix-1-6.12.117+deb12-amd64"
        );
        assert!(spec("x", "6.12 rc").package_name().is_err());
    }
}
