//! Installing what klpx drives (Debian packages), for `klpx demo` on a fresh machine.

use anyhow::{Context, Result, bail};

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
