//! Debian's package tools, driven as processes: `apt-cache` to find packages and versions,
//! `apt-get download` to fetch them into klpx's cache (nothing is installed), `dpkg-deb` and `tar` to
//! take files out of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::UserError;

/// The version apt would install of `pkg` (`name` or `name:arch`), or `None` when no index knows it.
pub fn candidate_version(pkg: &str) -> Result<Option<String>> {
    Ok(versions(pkg)?.into_iter().next())
}

/// Adds Debian architecture `debarch` to dpkg's foreign architectures (and updates the indexes)
/// when it is neither the host's nor added yet; `what` says what klpx needs it for.
pub fn ensure_architecture(debarch: &str, what: &str) -> Result<()> {
    let dpkg = |arg: &str| {
        duct::cmd!("dpkg", arg)
            .read()
            .with_context(|| format!("running dpkg {arg}"))
    };
    if dpkg("--print-architecture")?.trim() == debarch
        || dpkg("--print-foreign-architectures")?
            .split_whitespace()
            .any(|a| a == debarch)
    {
        return Ok(());
    }
    eprintln!("klpx: adding Debian architecture {debarch} for {what}");
    duct::cmd!("dpkg", "--add-architecture", debarch)
        .run()
        .with_context(|| {
            format!("dpkg --add-architecture {debarch} (needs root; run it and apt-get update)")
        })?;
    if let Some(problem) = update() {
        eprintln!("klpx: apt-get update: {problem}");
    }
    Ok(())
}

/// Runs `apt-get update`; returns its first error line when it fails (a mirror in sync may break
/// one architecture's index while the others update).
pub fn update() -> Option<String> {
    let out = duct::cmd!("apt-get", "update", "-q")
        .stdout_null()
        .stderr_capture()
        .unchecked()
        .run();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .find(|l| l.starts_with("E:"))
                .unwrap_or("failed")
                .to_string(),
        ),
        Err(e) => Some(format!("could not run it: {e}")),
    }
}

/// What `apt-cache ARGS` prints (in the C locale); an unknown package prints nothing for it.
fn apt_cache(args: &[String]) -> Result<String> {
    let out = duct::cmd("apt-cache", args)
        .env("LC_ALL", "C")
        .stdout_capture()
        .stderr_null()
        .unchecked()
        .run()
        .context("running apt-cache (is this a Debian system?)")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every version of `pkg` the indexes know, newest first.
pub fn versions(pkg: &str) -> Result<Vec<String>> {
    let name = pkg.split_once(':').map_or(pkg, |(n, _)| n);
    Ok(versions_by_package(&[pkg.to_string()])?
        .remove(name)
        .unwrap_or_default())
}

/// The versions the indexes know of each of `pkgs` (`name:arch`), by name, from one `apt-cache`
/// run: unknown names are simply absent.
pub fn versions_by_package(pkgs: &[String]) -> Result<HashMap<String, Vec<String>>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    if pkgs.is_empty() {
        return Ok(out);
    }
    let args: Vec<String> = std::iter::once("show".to_string())
        .chain(pkgs.iter().cloned())
        .collect();
    let mut package: Option<String> = None;
    for line in apt_cache(&args)?.lines() {
        if let Some(p) = line.strip_prefix("Package: ") {
            package = Some(p.trim().to_string());
        } else if let (Some(v), Some(p)) = (line.strip_prefix("Version: "), &package) {
            out.entry(p.clone()).or_default().push(v.trim().to_string());
        }
    }
    Ok(out)
}

/// Package names starting with `prefix` that the indexes know.
pub fn names_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = apt_cache(&["pkgnames".to_string(), prefix.to_string()])?
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    names.sort();
    Ok(names)
}

/// The file name `apt-get download` gives a package (an epoch's `:` is written `%3a`).
pub fn deb_file_name(name: &str, version: &str, deb_arch: &str) -> String {
    format!("{name}_{}_{deb_arch}.deb", version.replace(':', "%3a"))
}

/// Downloads `name` at `version` (for `deb_arch`, or `all`) into `dir`, unless a previous run did;
/// returns the `.deb`. A download goes to a temporary directory first, so that an interrupted one
/// never leaves a partial file under the final name.
pub fn download(
    name: &str,
    version: &str,
    deb_arch: &str,
    qualifier: Option<&str>,
    dir: &Path,
) -> Result<PathBuf> {
    let file = dir.join(deb_file_name(name, version, deb_arch));
    if file.is_file() {
        return Ok(file);
    }
    let tmp = dir.join(format!(".download-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let spec = match qualifier {
        Some(a) => format!("{name}:{a}={version}"),
        None => format!("{name}={version}"),
    };
    let out = duct::cmd!("apt-get", "download", &spec)
        .dir(&tmp)
        .env("LC_ALL", "C")
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running apt-get download")?;
    let got = tmp.join(deb_file_name(name, version, deb_arch));
    if !out.status.success() || !got.is_file() {
        let _ = std::fs::remove_dir_all(&tmp);
        let text = String::from_utf8_lossy(&out.stdout);
        let why = text
            .lines()
            .rev()
            .find(|l| l.starts_with("E:"))
            .unwrap_or_else(|| text.lines().last().unwrap_or("no output"));
        return Err(UserError::new(format!(
            "apt-get download {spec} failed ({}); check the mirror (apt-get update) or name \
             another release",
            why.trim()
        ))
        .into());
    }
    std::fs::rename(&got, &file).with_context(|| format!("moving {}", file.display()))?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(file)
}

/// Extracts `members` (paths as the package lists them, `./usr/...`) of `deb` under `dir`; all of it
/// when `members` is empty. With members, tar stops once it has each (`--occurrence`), which keeps
/// taking two files from the front of a 1 GB debug package to seconds.
pub fn extract(deb: &Path, dir: &Path, members: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tar: Vec<String> = vec!["-x".into(), "-C".into(), dir.display().to_string()];
    if !members.is_empty() {
        tar.push("--occurrence=1".into());
        tar.extend(members.iter().map(|m| m.to_string()));
    }
    let out = duct::cmd!("dpkg-deb", "--fsys-tarfile", deb)
        .pipe(duct::cmd("tar", &tar))
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .with_context(|| format!("unpacking {}", deb.display()))?;
    // dpkg-deb is killed by SIGPIPE when tar stops early: only what tar extracted counts.
    for m in members {
        if !dir.join(m).exists() {
            return Err(UserError::new(format!(
                "{}: has no {m} ({})",
                deb.display(),
                String::from_utf8_lossy(&out.stdout).trim()
            ))
            .into());
        }
    }
    Ok(())
}

/// Writes member `member` of `deb` to `out` (through a temporary name).
pub fn extract_to_file(deb: &Path, member: &str, out: &Path) -> Result<()> {
    let tmp = out.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    duct::cmd!("dpkg-deb", "--fsys-tarfile", deb)
        .pipe(duct::cmd!("tar", "-xO", "--occurrence=1", member))
        .stdout_file(file)
        .stderr_null()
        .unchecked()
        .run()
        .with_context(|| format!("unpacking {member} from {}", deb.display()))?;
    if std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0) == 0 {
        let _ = std::fs::remove_file(&tmp);
        return Err(UserError::new(format!("{}: has no {member}", deb.display())).into());
    }
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
