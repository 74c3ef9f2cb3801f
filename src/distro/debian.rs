//! Debian's own kernels, from Debian's packages: which release a `--distro debian[:RELEASE]` means,
//! and the files klpx takes from its packages into the cache.
//!
//! A release (what `uname -r` prints, `6.12.117+deb12-amd64`) is served by four packages of one
//! version: the image (`linux-image-<release>-unsigned` where Debian signs, else
//! `linux-image-<release>`: vmlinuz, the modules), the headers (`linux-headers-<release>`: the config
//! and `Module.symvers`), the debug image (`linux-image-<release>-dbg`: vmlinux with symbols, the real
//! System.map; the image package's System.map is a placeholder) and the source
//! (`linux-source-<series>`, Debian-patched, of the same version).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use klpx_arch::Arch;

use super::apt;
use crate::error::UserError;

/// The kernel series klpx takes by default (the one `linux-source-6.12` serves).
pub const DEFAULT_SERIES: &str = "6.12";

/// A Debian kernel release, resolved against the package indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianRelease {
    pub arch: Arch,
    /// `uname -r`: `6.12.117+deb12-amd64`.
    pub release: String,
    /// The packages' version: `6.12.117-1~deb12u1`.
    pub version: String,
    /// The image package's name.
    pub image_package: String,
    /// `6.12`: names the source package.
    pub series: String,
}

/// The files of one release, in klpx's cache.
#[derive(Debug, Clone)]
pub struct DebianKernel {
    pub release: DebianRelease,
    /// Debian's config for the release.
    pub config: PathBuf,
    pub symvers: PathBuf,
    /// vmlinux with symbols, from the debug package.
    pub vmlinux: PathBuf,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the image package.
    pub modules: PathBuf,
    /// The unpacked source of the release's version.
    pub source: PathBuf,
    /// Where the release's files and its prepared tree live.
    pub dir: PathBuf,
}

/// `debian`, `debian:RELEASE` or `debian:SERIES` (`6.1`: its newest release), as `--distro`
/// takes it.
pub fn parse_distro(spec: &str) -> Result<Option<String>, UserError> {
    let (name, release) = match spec.split_once(':') {
        Some((n, r)) => (n, Some(r)),
        None => (spec, None),
    };
    if name != "debian" {
        return Err(UserError::new(format!(
            "--distro {spec}: klpx knows Debian's packages (debian or debian:RELEASE); for another \
             distribution give its files: -s SRC -c CONFIG --symvers FILE -v VMLINUX"
        )));
    }
    if let Some(r) = release {
        check_release_name(r)?;
    }
    Ok(release.map(str::to_string))
}

/// A release name must be what `uname -r` prints: it names cache directories and packages.
fn check_release_name(r: &str) -> Result<(), UserError> {
    let ok = !r.is_empty()
        && r.len() <= 64
        && r.chars().next().is_some_and(|c| c.is_ascii_digit())
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_' | '~'))
        && (r.contains('-') || is_series(r));
    if ok {
        Ok(())
    } else {
        Err(UserError::new(format!(
            "--distro debian:{r}: not a kernel release; give what uname -r prints \
             (e.g. 6.12.117+deb12-amd64)"
        )))
    }
}

/// The series (`6.12`) of a release or version.
fn series_of(release: &str) -> String {
    release
        .split(['.', '-', '+'])
        .take(2)
        .collect::<Vec<_>>()
        .join(".")
}

/// Resolves `--distro debian[:RELEASE]` for `arch` against klpx's own package indexes (fetched
/// when there are none or they are a day old, and again when they do not know the release): cheap,
/// so it runs before any download. A release fetched before needs no index.
pub fn resolve(arch: Arch, release: Option<&str>) -> Result<DebianRelease> {
    if let Some(r) = release.filter(|r| !is_series(r))
        && let Some(known) = resolved_before(arch, r)
    {
        return Ok(known);
    }
    let mut apt = apt::AptState::open(arch.backend().debian_arch())?;
    match resolve_in(&apt, arch, release) {
        Err(e) if e.is::<UserError>() && apt.refresh()? => resolve_in(&apt, arch, release),
        result => result,
    }
}

/// [`resolve`] in the indexes `apt` holds now.
fn resolve_in(apt: &apt::AptState, arch: Arch, release: Option<&str>) -> Result<DebianRelease> {
    let deb_arch = apt.debarch();
    let release = match release {
        Some(series) if is_series(series) => default_release(apt, arch, series)?,
        Some(r) => r.to_string(),
        None => default_release(apt, arch, DEFAULT_SERIES)?,
    };
    for image in [
        format!("linux-image-{release}-unsigned"),
        format!("linux-image-{release}"),
    ] {
        if let Some(version) = apt.versions(&image)?.into_iter().next() {
            return Ok(DebianRelease {
                arch,
                series: series_of(&release),
                release,
                version,
                image_package: image,
            });
        }
    }
    Err(UserError::new(format!(
        "Debian's package indexes ({}) know no image of release {release} for {deb_arch} \
         (linux-image-{release}[-unsigned]); name a release apt-cache knows there, or a series \
         (debian:6.12)",
        apt::SUITES.map(|(_, s)| s).join(", ")
    ))
    .into())
}

/// The record [`fetch`] leaves of a release it fetched: `version image_package`.
const RESOLVED: &str = "resolved";

/// A release fetched before, from its record: naming the release again needs no index.
fn resolved_before(arch: Arch, release: &str) -> Option<DebianRelease> {
    let text = std::fs::read_to_string(cache_dir().join(release).join(RESOLVED)).ok()?;
    let (version, image) = text.trim().split_once(' ')?;
    Some(DebianRelease {
        arch,
        release: release.to_string(),
        version: version.to_string(),
        image_package: image.to_string(),
        series: series_of(release),
    })
}

/// `6.12`, `6.1`: a series, which `--distro debian:SERIES` takes as its newest release.
fn is_series(s: &str) -> bool {
    let mut parts = s.split('.');
    let ok =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// The newest release of the architecture's default flavour in `series` for which apt serves the
/// source of the same version (`linux-source-<series>`): the source's newest version first, older
/// ones when the architecture's index lags (s390x has no security suite here). The suites of the
/// Debian release this host runs come first: their kernels were built by the compiler it has.
fn default_release(apt: &apt::AptState, arch: Arch, series: &str) -> Result<String> {
    let b = arch.backend();
    let source = format!("linux-source-{series}");
    let host_versions = match apt::host_codename() {
        Some(codename) => apt.versions_in_release(&source, &codename)?,
        None => Vec::new(),
    };
    let all_versions = apt.versions(&source)?;
    if all_versions.is_empty() {
        return Err(UserError::new(format!(
            "Debian's package indexes for {} know no {source}; name the release: \
             --distro debian:RELEASE",
            apt.debarch()
        ))
        .into());
    }
    let flavour = format!("-{}", b.debian_flavour());
    let mut candidates: Vec<String> = apt
        .names_with_prefix(&format!("linux-image-{series}."))?
        .into_iter()
        .filter_map(|n| {
            let r = n.strip_prefix("linux-image-")?;
            let r = r.strip_suffix("-unsigned").unwrap_or(r);
            let abi = r.strip_suffix(&flavour)?;
            // `6.12.117+deb12`, `6.1.0-50`; not another flavour (`6.12.117+deb12-cloud`).
            let mut parts = abi.split('-');
            parts.next();
            parts
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| r.to_string())
        })
        .collect();
    candidates.dedup();
    let images: Vec<String> = candidates
        .iter()
        .flat_map(|r| {
            [
                format!("linux-image-{r}-unsigned"),
                format!("linux-image-{r}"),
            ]
        })
        .collect();
    let known = apt.versions_by_package(&images)?;
    // The host's release's suites first; a source they list (an `all` package is in every
    // architecture's index) but build no image of falls through to every suite.
    for version in host_versions.iter().chain(&all_versions) {
        for r in candidates.iter().rev() {
            for image in [
                format!("linux-image-{r}-unsigned"),
                format!("linux-image-{r}"),
            ] {
                if known.get(&image).is_some_and(|v| v.contains(version)) {
                    return Ok(r.clone());
                }
            }
        }
    }
    Err(UserError::new(format!(
        "no Debian {} image of any version of {source} in the package indexes; name a release: \
         --distro debian:RELEASE",
        b.debian_flavour()
    ))
    .into())
}

/// Root of klpx's Debian cache.
pub fn cache_dir() -> PathBuf {
    crate::kernel::cache::root().join("distro").join("debian")
}

/// Downloads and unpacks what `rel` needs, each part once: later runs find it in the cache. The
/// headers come first (3 MB): `check_config` sees Debian's config before the large downloads, so
/// that a missing compiler is said before a gigabyte is fetched.
pub fn fetch(
    rel: &DebianRelease,
    progress: &dyn Fn(&str),
    check_config: &mut dyn FnMut(&Path) -> Result<()>,
) -> Result<DebianKernel> {
    let root = cache_dir();
    let debs = root.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let deb_arch = rel.arch.backend().debian_arch();
    let dir = root.join(&rel.release);
    let r = &rel.release;
    // The indexes are read only when something is downloaded: a release whose parts are all
    // cached needs none.
    let state = std::cell::OnceCell::new();
    let get = |name: &str| -> Result<PathBuf> {
        let apt = match state.get() {
            Some(a) => a,
            None => {
                let opened = apt::AptState::open(deb_arch)?;
                state.get_or_init(|| opened)
            }
        };
        progress(&format!("downloading {name} {}", rel.version));
        apt.download(name, &rel.version, &debs)
    };

    let headers_pkg = format!("linux-headers-{r}");
    let headers = once(&dir.join("headers"), |tmp| {
        let deb = get(&headers_pkg)?;
        let base = format!("./usr/src/linux-headers-{r}");
        apt::extract(
            &deb,
            tmp,
            &[
                &format!("{base}/.config"),
                &format!("{base}/Module.symvers"),
            ],
        )?;
        let from = tmp.join(&base[2..]);
        std::fs::rename(from.join(".config"), tmp.join("config"))?;
        std::fs::rename(from.join("Module.symvers"), tmp.join("Module.symvers"))?;
        std::fs::remove_dir_all(tmp.join("usr"))?;
        Ok(())
    })?;

    check_config(&headers.join("config"))?;

    let dbg_pkg = format!("linux-image-{r}-dbg");
    let dbg = once(&dir.join("dbg"), |tmp| {
        let deb = get(&dbg_pkg)?;
        progress(&format!("unpacking vmlinux from {dbg_pkg}"));
        let base = "./usr/lib/debug/boot";
        apt::extract(
            &deb,
            tmp,
            &[
                &format!("{base}/vmlinux-{r}"),
                &format!("{base}/System.map-{r}"),
            ],
        )?;
        let from = tmp.join(&base[2..]);
        std::fs::rename(from.join(format!("vmlinux-{r}")), tmp.join("vmlinux"))?;
        std::fs::rename(from.join(format!("System.map-{r}")), tmp.join("System.map"))?;
        std::fs::remove_dir_all(tmp.join("usr"))?;
        Ok(())
    })?;

    let image = once(&dir.join("image"), |tmp| {
        let deb = get(&rel.image_package)?;
        progress(&format!("unpacking {}", rel.image_package));
        apt::extract(&deb, tmp, &[])?;
        Ok(())
    })?;

    let source_pkg = format!("linux-source-{}", rel.series);
    let source_root = once(&root.join("source").join(&rel.version), |tmp| {
        let deb = get(&source_pkg)?;
        progress(&format!(
            "unpacking {source_pkg} {} (once per version; about a minute)",
            rel.version
        ));
        let tarball = tmp.join("source.tar.xz");
        apt::extract_to_file(
            &deb,
            &format!("./usr/src/linux-source-{}.tar.xz", rel.series),
            &tarball,
        )?;
        let out = duct::cmd!("tar", "-xf", &tarball, "-C", tmp)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()?;
        if !out.status.success() {
            return Err(UserError::new(format!(
                "{}: cannot unpack {}: {}",
                deb.display(),
                tarball.display(),
                String::from_utf8_lossy(&out.stdout).trim()
            ))
            .into());
        }
        std::fs::remove_file(&tarball)?;
        Ok(())
    })?;
    let source = source_root.join(format!("linux-source-{}", rel.series));
    if !source.join("Makefile").is_file() {
        return Err(UserError::new(format!(
            "{}: the unpacked {source_pkg} has no Makefile",
            source.display()
        ))
        .into());
    }

    std::fs::write(
        dir.join(RESOLVED),
        format!("{} {}\n", rel.version, rel.image_package),
    )
    .with_context(|| format!("writing {}", dir.join(RESOLVED).display()))?;
    let vmlinuz = image.join("boot").join(format!("vmlinuz-{r}"));
    let vmlinuz = if vmlinuz.is_file() {
        vmlinuz
    } else {
        // ppc64el and s390x ship the image as boot/vmlinux-<release>.
        image.join("boot").join(format!("vmlinux-{r}"))
    };
    Ok(DebianKernel {
        release: rel.clone(),
        config: headers.join("config"),
        symvers: headers.join("Module.symvers"),
        vmlinux: dbg.join("vmlinux"),
        vmlinuz,
        modules: image.join("lib").join("modules").join(r),
        source,
        dir,
    })
}

/// Makes `dir` once: `fill` writes into a temporary sibling, which is renamed to `dir` only when it
/// is complete, so an interrupted run never leaves a half-made part behind under the real name.
pub(crate) fn once(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    if dir.is_dir() {
        return Ok(dir.to_path_buf());
    }
    let parent = dir.parent().context("cache directory has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".{}.partial-{}",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    match fill(&tmp) {
        Ok(()) => {
            std::fs::rename(&tmp, dir).with_context(|| format!("creating {}", dir.display()))?;
            Ok(dir.to_path_buf())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distro_specs() {
        assert_eq!(parse_distro("debian").unwrap(), None);
        assert_eq!(
            parse_distro("debian:6.12.117+deb12-amd64")
                .unwrap()
                .as_deref(),
            Some("6.12.117+deb12-amd64")
        );
        assert!(parse_distro("ubuntu").is_err());
        assert!(parse_distro("debian:../../etc").is_err());
        assert!(parse_distro("debian:").is_err());
        assert!(parse_distro("debian:6.12 amd64").is_err());
        assert_eq!(parse_distro("debian:6.1").unwrap().as_deref(), Some("6.1"));
        assert!(is_series("6.12") && is_series("6.1"));
        assert!(!is_series("6.12.117+deb12-amd64") && !is_series("6") && !is_series("6.x"));
    }

    #[test]
    fn series() {
        assert_eq!(series_of("6.12.117+deb12-amd64"), "6.12");
        assert_eq!(series_of("6.1.0-50-s390x"), "6.1");
    }
}
