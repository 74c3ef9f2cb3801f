//! Where klpx keeps what it downloads, unpacks and builds: `$KLPX_CACHE`, else `~/.cache/klpx`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Debian's kernel source tarball.
pub const DEBIAN_SOURCE_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
/// The directory the tarball unpacks to.
pub const DEBIAN_SOURCE_DIR: &str = "linux-source-6.12";

/// The cache root. An empty `KLPX_CACHE` counts as unset (a relative one is taken from the current
/// directory once, as an absolute path), so that nothing lands in whatever directory klpx runs in.
pub fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("KLPX_CACHE").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return std::path::absolute(&dir).unwrap_or(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("klpx")
}

/// The unpacked Debian kernel source, unpacking the tarball on first use.
pub fn debian_source() -> Result<PathBuf> {
    let dir = root().join("src");
    let src = dir.join(DEBIAN_SOURCE_DIR);
    if src.join("Makefile").is_file() && src.join(".klpx-unpacked").is_file() {
        return Ok(src);
    }
    if !Path::new(DEBIAN_SOURCE_TARBALL).is_file() {
        bail!("{DEBIAN_SOURCE_TARBALL} not found: apt-get install linux-source-6.12");
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    duct::cmd!("tar", "-xf", DEBIAN_SOURCE_TARBALL, "-C", &dir)
        .run()
        .with_context(|| format!("unpacking {DEBIAN_SOURCE_TARBALL}"))?;
    std::fs::write(src.join(".klpx-unpacked"), "").context("marking the source unpacked")?;
    Ok(src)
}

/// A stable 64-bit fingerprint (FNV-1a) of byte strings, for cache directory names and markers: the
/// standard library's hasher may change between Rust releases, and a cache outlives a build.
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .fold(FNV_OFFSET, |h, p| fnv1a(fnv1a(h, p), &[0xff]))
}

/// [`fingerprint`] of one byte string, without a separator (the tree stamps, locks and journals
/// were named with it before there were several parts; kept so their names stay).
pub fn fingerprint_bytes(bytes: &[u8]) -> u64 {
    fnv1a(FNV_OFFSET, bytes)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
