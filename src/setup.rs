//! Installing what klpx drives (Debian packages), for `klpx demo` on a fresh machine, and the
//! static busybox `klpx verify` puts in its guests (downloaded for foreign architectures). Only the
//! command layer calls this: the library's stages take what it provides as plain paths.

use std::fs::File;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use klpx_arch::Arch;

use crate::kernel::cache;

/// Packages every kernel build needs, whatever the architecture.
pub const BUILD_PACKAGES: [&str; 9] = [
    "linux-source-6.12",
    "make",
    "gcc",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "xz-utils",
];

/// Whether a Debian package is installed.
pub fn is_installed(package: &str) -> bool {
    duct::cmd!("dpkg-query", "-W", "-f", "${Status}", package)
        .stdout_capture()
        .stderr_null()
        .unchecked()
        .run()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the packages that are missing; says what it does. Needs root.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let is_root = duct::cmd!("id", "-u")
        .read()
        .map(|u| u.trim() == "0")
        .unwrap_or(false);
    if !is_root {
        bail!(
            "missing Debian packages: {}; run: sudo apt-get install {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    eprintln!("klpx: installing {}", missing.join(" "));
    duct::cmd!("apt-get", "update", "-q")
        .stdout_null()
        .run()
        .context("apt-get update")?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(missing.iter().copied());
    duct::cmd("apt-get", &args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout_null()
        .run()
        .with_context(|| format!("apt-get install {}", missing.join(" ")))?;
    Ok(())
}

/// Debian's name of the host architecture (`dpkg --print-architecture`).
pub fn host_debian_arch() -> Result<String> {
    Ok(duct::cmd!("dpkg", "--print-architecture")
        .read()
        .context("running dpkg --print-architecture")?
        .trim()
        .to_string())
}

/// A static busybox for `arch`: the host's when the architectures agree, else Debian's package for
/// `arch` unpacked in the cache (downloaded once). Checked to be a static executable of `arch`.
pub fn busybox(arch: Arch) -> Result<PathBuf> {
    let debarch = arch.backend().debian_arch();
    let path = if host_debian_arch()? == debarch {
        ensure_packages(&["busybox-static"])?;
        PathBuf::from("/bin/busybox")
    } else {
        foreign_busybox(debarch)?
    };
    crate::verify::initramfs::check_static(&path, arch)?;
    Ok(path)
}

/// Downloads and unpacks `busybox-static:<debarch>` into `<cache>/busybox/<debarch>` once.
fn foreign_busybox(debarch: &str) -> Result<PathBuf> {
    let base = cache::root().join("busybox");
    let dir = base.join(debarch);
    let bin = dir.join("bin/busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let lock = File::create(base.join(".lock")).context("creating the busybox lock")?;
    lock.lock().context("locking the busybox cache")?;
    if bin.is_file() {
        return Ok(bin);
    }
    crate::distro::apt::ensure_architecture(debarch, "its busybox-static")?;
    let download = base.join(format!("{debarch}.download"));
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    let package = format!("busybox-static:{debarch}");
    let fetch = || {
        duct::cmd!("apt-get", "download", "-q", &package)
            .dir(&download)
            .stdout_null()
            .stderr_capture()
            .unchecked()
            .run()
    };
    eprintln!("klpx: downloading {package}");
    let mut out = fetch().with_context(|| format!("running apt-get download {package}"))?;
    let mut update_problem = None;
    if !out.status.success() {
        update_problem = crate::distro::apt::update();
        out = fetch().with_context(|| format!("running apt-get download {package}"))?;
    }
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        bail!(
            "apt-get download {package} failed: {}{}",
            why.trim().lines().next().unwrap_or(""),
            update_problem
                .map(|u| format!(" (apt-get update said: {u})"))
                .unwrap_or_default()
        );
    }
    let deb = std::fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))?;
    let unpack = base.join(format!("{debarch}.unpack"));
    let _ = std::fs::remove_dir_all(&unpack);
    duct::cmd!("dpkg-deb", "-x", &deb, &unpack)
        .run()
        .with_context(|| format!("unpacking {}", deb.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&unpack, &dir)
        .with_context(|| format!("moving the unpacked busybox to {}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&download);
    if !bin.is_file() {
        bail!("{package} holds no bin/busybox");
    }
    Ok(bin)
}
