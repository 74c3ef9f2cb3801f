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
    // From klpx's own indexes of the architecture: the host's Debian release's version first,
    // else the newest any suite serves (busybox-static is static, any release runs).
    let mut apt = crate::distro::apt::AptState::open(debarch)?;
    let version = |apt: &crate::distro::apt::AptState| -> Result<Option<String>> {
        let mine = match crate::distro::apt::host_codename() {
            Some(c) => apt.versions_in_release("busybox-static", &c)?,
            None => Vec::new(),
        };
        Ok(match mine.into_iter().next() {
            Some(v) => Some(v),
            None => apt.versions("busybox-static")?.into_iter().next(),
        })
    };
    let version = match version(&apt)? {
        Some(v) => v,
        None if apt.refresh()? => version(&apt)?
            .with_context(|| format!("Debian's indexes for {debarch} know no busybox-static"))?,
        None => bail!("Debian's indexes for {debarch} know no busybox-static"),
    };
    let download = base.join(format!("{debarch}.download"));
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download)?;
    eprintln!("klpx: downloading busybox-static:{debarch} {version}");
    let deb = apt.download("busybox-static", &version, &download)?;
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
        bail!("busybox-static:{debarch} holds no bin/busybox");
    }
    Ok(bin)
}
