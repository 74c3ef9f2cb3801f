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

    /// The description, one line each, with control characters (a newline in a patch's file
    /// name) made spaces so that no line can start a control field or spec section.
    fn description_lines(&self) -> Vec<String> {
        self.raw_description_lines()
            .into_iter()
            .map(|l| l.replace(|c: char| c.is_control(), " "))
            .collect()
    }

    fn raw_description_lines(&self) -> Vec<String> {
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
    make_dirs(
        &root,
        &[dest.parent().unwrap_or(&root), &root.join("DEBIAN")],
    )?;
    std::fs::copy(spec.module, &dest)
        .with_context(|| format!("copying {} into the package", spec.module.display()))?;
    set_mode(&dest, 0o644)?;
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
    write_file(&root.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
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

/// Builds the RPM into `out_dir`, with a `_topdir` of its own in the temporary directory (rpm's
/// macros cannot take a path with spaces, which the release directory may have); returns its path.
pub fn rpm_package(spec: &PackageSpec, out_dir: &Path) -> Result<PathBuf> {
    let pkg = spec.package_name()?;
    let top = RpmTop::new(&pkg)?;
    let top = top.path();
    let sources = top.join("SOURCES");
    std::fs::create_dir_all(&sources).with_context(|| format!("creating {}", sources.display()))?;
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
         Recommends: klpx\nSource0: {ko}\n",
        spec.version,
        rpm_text(&spec.summary()),
        rpm_text(spec.maintainer)
    ));
    // A distribution's kernel image package is Debian's here, which no RPM database knows; the
    // kernel release is in the name and the description.
    text.push_str("\n%description\n");
    for l in spec.description_lines() {
        text.push_str(&rpm_text(&l));
        text.push('\n');
    }
    text.push_str(&format!(
        "\n%install\nmkdir -p %{{buildroot}}/{dir}\ninstall -m 0644 %{{SOURCE0}} %{{buildroot}}/{dir}/{ko}\n"
    ));
    text.push_str(&format!("\n%files\n/{dir}/{ko}\n"));
    let spec_file = top.join(format!("{pkg}.spec"));
    std::fs::write(&spec_file, text).with_context(|| format!("writing {}", spec_file.display()))?;
    rpmbuild(top, &spec_file, spec.arch, &pkg, spec.version, out_dir)
}

/// Runs `rpmbuild -bb` on `spec_file` for `arch` in `top`, and moves the package it writes,
/// `<name>-<version>-1.<rpm arch>.rpm`, into `out_dir`; returns its path there.
fn rpmbuild(
    top: &Path,
    spec_file: &Path,
    arch: Arch,
    name: &str,
    version: &str,
    out_dir: &Path,
) -> Result<PathBuf> {
    let rpm_arch = arch.backend().rpm_arch();
    run(
        duct::cmd!(
            "rpmbuild",
            "-bb",
            "--target",
            rpm_arch,
            "--define",
            format!("_topdir {}", top.display()),
            spec_file
        ),
        "rpmbuild -bb",
    )?;
    let file_name = format!("{name}-{version}-1.{rpm_arch}.rpm");
    let built = top.join("RPMS").join(rpm_arch).join(&file_name);
    let file = out_dir.join(&file_name);
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
    make_dirs(
        &root,
        &[
            bin.parent().unwrap_or(&root),
            unit.parent().unwrap_or(&root),
            &root.join("DEBIAN"),
        ],
    )?;
    run(
        duct::cmd!("objcopy", "--strip-debug", &exe, &bin),
        "objcopy --strip-debug (binutils)",
    )?;
    set_mode(&bin, 0o755)?;
    write_file(&unit, BOOT_UNIT.as_bytes(), 0o644)?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
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
    write_file(&root.join("DEBIAN/control"), control.as_bytes(), 0o644)?;
    let deb = out_dir.join(format!(
        "klpx_{version}_{}.deb",
        arch.backend().debian_arch()
    ));
    run(
        duct::cmd!("dpkg-deb", "--root-owner-group", "--build", &root, &deb),
        "dpkg-deb --build",
    )?;

    let top = RpmTop::new("klpx")?;
    let top = top.path();
    let sources = top.join("SOURCES");
    std::fs::create_dir_all(&sources).with_context(|| format!("creating {}", sources.display()))?;
    std::fs::copy(&bin, sources.join("klpx")).context("copying klpx into the RPM's sources")?;
    write_file(&sources.join("klpx.service"), BOOT_UNIT.as_bytes(), 0o644)?;
    let mut spec = String::from(
        "%global debug_package %{nil}\n%global __os_install_post %{nil}\n\
         %global _build_id_links none\n",
    );
    spec.push_str(&format!(
        "Name: klpx\nVersion: {version}\nRelease: 1\nSummary: livepatch modules: build, load, list, \
         install\nLicense: GPL-2.0-only\nPackager: {}\nRequires: kmod\n\
         Source0: klpx\nSource1: klpx.service\n\n%description\n{}\n\n%install\n\
         install -D -m 0755 %{{SOURCE0}} %{{buildroot}}/usr/bin/klpx\n\
         install -D -m 0644 %{{SOURCE1}} %{{buildroot}}/lib/systemd/system/klpx.service\n\n\
         %files\n/usr/bin/klpx\n/lib/systemd/system/klpx.service\n",
        rpm_text(maintainer),
        description.join("\n")
    ));
    let spec_file = top.join("klpx.spec");
    std::fs::write(&spec_file, spec).with_context(|| format!("writing {}", spec_file.display()))?;
    let rpm = rpmbuild(top, &spec_file, arch, "klpx", version, out_dir)?;
    Ok(vec![deb, rpm])
}

/// Text for an RPM spec: `%` escaped (rpm expands `%{...}` and runs `%(...)`), control characters
/// made spaces.
fn rpm_text(s: &str) -> String {
    s.replace(|c: char| c.is_control(), " ").replace('%', "%%")
}

/// Creates `dirs` (under `root`) and gives `root` and every directory below it mode 0755, whatever
/// the umask: dpkg-deb refuses a `DEBIAN` directory others cannot read.
fn make_dirs(root: &Path, dirs: &[&Path]) -> Result<()> {
    for d in dirs {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        for a in d.ancestors().take_while(|a| a.starts_with(root)) {
            set_mode(a, 0o755)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    set_mode(path, mode)
}

/// An rpmbuild `_topdir` in the temporary directory, removed when dropped.
struct RpmTop(PathBuf);

impl RpmTop {
    fn new(what: &str) -> Result<RpmTop> {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("klpx-rpm-{}-{n}-{what}", std::process::id()));
        if dir.to_string_lossy().contains(char::is_whitespace) {
            return Err(anyhow!(
                "{}: rpmbuild's _topdir cannot hold whitespace; set TMPDIR to a path without",
                dir.display()
            ));
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(RpmTop(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RpmTop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
    fn spec_text_cannot_run_or_expand_macros() {
        assert_eq!(rpm_text("Ops %(id) <o@x>"), "Ops %%(id) <o@x>");
        assert_eq!(rpm_text("a\n%post\nrm"), "a %%post rm");
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
