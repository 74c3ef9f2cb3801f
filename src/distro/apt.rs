//! Debian's package tools, driven as processes over klpx's own apt state: `apt-get update` of the
//! suites a kernel release may live in, `apt-cache` to find packages and versions, `apt-get
//! download` to fetch them into klpx's cache (nothing is installed), `dpkg-deb` and `tar` to take
//! files out of them.
//!
//! The state (apt's lists, its package cache, its sources and configuration) lives under
//! `<cache>/apt/<debarch>`, one per Debian architecture, and reaches apt through `APT_CONFIG`.
//! That file points apt's configuration parts at an empty directory, so nothing of the system's
//! apt configuration, sources or indexes is read or written: no root, no `dpkg
//! --add-architecture`, and the host's `apt-get install` sees the same indexes as before.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use crate::error::UserError;

/// Debian's archive and its security archive (the redirector every Debian host reaches; the host's
/// proxy settings apply, see [`host_network_settings`]).
const ARCHIVE: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";

/// The suites a kernel release may live in: Debian 12 and 13 with their updates, security
/// fixes and backports, and unstable. Each is one source line, so that a suite whose index does
/// not download costs only itself.
pub const SUITES: [(&str, &str); 9] = [
    (ARCHIVE, "bookworm"),
    (ARCHIVE, "bookworm-updates"),
    (SECURITY, "bookworm-security"),
    (ARCHIVE, "bookworm-backports"),
    (ARCHIVE, "trixie"),
    (ARCHIVE, "trixie-updates"),
    (SECURITY, "trixie-security"),
    (ARCHIVE, "trixie-backports"),
    (ARCHIVE, "sid"),
];

/// The archive's signing keys (Debian's debian-archive-keyring package).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Lists older than this are fetched again before they are read.
const MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// klpx's apt state for one Debian architecture.
#[derive(Debug, Clone)]
pub struct AptState {
    dir: PathBuf,
    debarch: String,
    /// Whether [`AptState::open`] fetched the lists: a release they do not know is then not
    /// worth another fetch.
    fetched_now: bool,
}

impl AptState {
    /// The state for `debarch` under `<cache>/apt`, its lists fetched when there are none yet or
    /// they are older than a day.
    pub fn open(debarch: &str) -> Result<AptState> {
        let mut state = AptState::at(&crate::kernel::cache::root().join("apt"), debarch)?;
        let _lock = state.lock()?;
        if !state.is_fresh() {
            state.update_locked()?;
            state.fetched_now = true;
        }
        Ok(state)
    }

    /// Writes the state's configuration under `base/<debarch>` (directories, sources,
    /// `apt.conf`), fetching nothing.
    fn at(base: &Path, debarch: &str) -> Result<AptState> {
        let ok = !debarch.is_empty() && debarch.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(
                UserError::new(format!("{debarch:?}: not a Debian architecture name")).into(),
            );
        }
        let dir = base.join(debarch);
        for sub in ["lists/partial", "cache/archives/partial", "empty"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let state = AptState {
            dir,
            debarch: debarch.to_string(),
            fetched_now: false,
        };
        write_if_changed(&state.dir.join("status"), "")?;
        write_if_changed(&state.dir.join("sources.list"), &sources_list())?;
        write_if_changed(&state.config(), &state.apt_conf())?;
        Ok(state)
    }

    /// The Debian architecture the state indexes.
    pub fn debarch(&self) -> &str {
        &self.debarch
    }

    /// The `APT_CONFIG` file: with it, `apt-get` and `apt-cache` use this state only.
    pub fn config(&self) -> PathBuf {
        self.dir.join("apt.conf")
    }

    fn apt_conf(&self) -> String {
        let d = self.dir.display();
        let empty = self.dir.join("empty");
        let e = empty.display();
        // As root, apt hands downloads to the _apt user, who cannot enter a home directory's
        // cache: the state is the invoking user's own, so its downloads stay that user's.
        let sandbox = if is_root() {
            "APT::Sandbox::User \"root\";\n"
        } else {
            ""
        };
        format!(
            "// klpx's own apt state for {arch}: written by klpx, read through APT_CONFIG.\n\
             Dir::Etc::Parts \"{e}\";\n\
             Dir::Etc::Main \"/dev/null\";\n\
             Dir::Etc::SourceList \"{d}/sources.list\";\n\
             Dir::Etc::SourceParts \"{e}\";\n\
             Dir::Etc::Preferences \"/dev/null\";\n\
             Dir::Etc::PreferencesParts \"{e}\";\n\
             Dir::State \"{d}\";\n\
             Dir::State::Lists \"{d}/lists\";\n\
             Dir::State::status \"{d}/status\";\n\
             Dir::Cache \"{d}/cache\";\n\
             Dir::Cache::pkgcache \"pkgcache.bin\";\n\
             Dir::Cache::srcpkgcache \"srcpkgcache.bin\";\n\
             APT::Architecture \"{arch}\";\n\
             APT::Architectures {{ \"{arch}\"; }};\n\
             Acquire::Languages \"none\";\n\
             Acquire::Retries \"3\";\n\
             {sandbox}{host}",
            arch = self.debarch,
            host = host_network_settings(),
        )
    }

    /// Serialises updates of the state between klpx processes.
    fn lock(&self) -> Result<File> {
        let path = self.dir.join("lock");
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        f.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(f)
    }

    fn stamp(&self) -> PathBuf {
        self.dir.join("updated")
    }

    /// Whether the lists were fetched less than a day ago.
    fn is_fresh(&self) -> bool {
        std::fs::metadata(self.stamp())
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < MAX_AGE)
    }

    /// Fetches the lists again unless [`AptState::open`] just did (a release the indexes did
    /// not know may have arrived since); says whether it fetched.
    pub fn refresh(&mut self) -> Result<bool> {
        if self.fetched_now {
            return Ok(false);
        }
        let _lock = self.lock()?;
        self.update_locked()?;
        self.fetched_now = true;
        Ok(true)
    }

    /// `apt-get update` of every suite. A suite whose index does not download (a mirror in sync
    /// serves an index its InRelease does not describe; a suite without the architecture) is
    /// said in one line and costs only itself: apt keeps the others. Fails only when no suite
    /// has an index.
    fn update_locked(&self) -> Result<()> {
        if !Path::new(KEYRING).is_file() {
            return Err(UserError::new(format!(
                "{KEYRING}: not found; klpx checks Debian's package indexes with Debian's archive \
                 keys (apt-get install debian-archive-keyring)"
            ))
            .into());
        }
        eprintln!(
            "klpx: fetching Debian's package indexes for {} ({} suites, into {})",
            self.debarch,
            SUITES.len(),
            self.dir.display()
        );
        let out = self
            .command("apt-get", &["update", "-q"])
            .stdout_null()
            .stderr_capture()
            .unchecked()
            .run()
            .context("running apt-get update (is this a Debian system?)")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let notes = update_notes(&stderr);
        for note in &notes {
            eprintln!("klpx: note: {note}");
        }
        let lists = self.dir.join("lists");
        let any = std::fs::read_dir(&lists)
            .with_context(|| format!("reading {}", lists.display()))?
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"));
        if !any {
            return Err(UserError::new(format!(
                "apt-get update fetched no package index for {} from {ARCHIVE} ({}); check the \
                 network or the mirror",
                self.debarch,
                notes.first().map_or("no error said", String::as_str)
            ))
            .into());
        }
        File::create(self.stamp())
            .with_context(|| format!("writing {}", self.stamp().display()))?;
        Ok(())
    }

    /// `program ARGS` over this state, in the C locale.
    fn command(&self, program: &str, args: &[&str]) -> duct::Expression {
        duct::cmd(program, args)
            .env("APT_CONFIG", self.config())
            .env("LC_ALL", "C")
    }

    /// What `apt-cache ARGS` prints; an unknown package prints nothing for it.
    fn apt_cache(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command("apt-cache", args)
            .stdout_capture()
            .stderr_null()
            .unchecked()
            .run()
            .context("running apt-cache (is this a Debian system?)")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Every version of `pkg` the indexes know, newest first.
    pub fn versions(&self, pkg: &str) -> Result<Vec<String>> {
        Ok(self
            .versions_by_package(&[pkg.to_string()])?
            .remove(pkg)
            .unwrap_or_default())
    }

    /// The versions the indexes know of each of `pkgs`, by name, from one `apt-cache` run:
    /// unknown names are simply absent.
    pub fn versions_by_package(&self, pkgs: &[String]) -> Result<HashMap<String, Vec<String>>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        if pkgs.is_empty() {
            return Ok(out);
        }
        let mut args = vec!["show"];
        args.extend(pkgs.iter().map(String::as_str));
        let mut package: Option<String> = None;
        for line in self.apt_cache(&args)?.lines() {
            if let Some(p) = line.strip_prefix("Package: ") {
                package = Some(p.trim().to_string());
            } else if let (Some(v), Some(p)) = (line.strip_prefix("Version: "), &package) {
                let versions = out.entry(p.clone()).or_default();
                if !versions.iter().any(|x| x == v.trim()) {
                    versions.push(v.trim().to_string());
                }
            }
        }
        Ok(out)
    }

    /// The versions of `pkg` with the suites that serve each (`apt-cache madison`), newest first.
    pub fn versions_by_suite(&self, pkg: &str) -> Result<Vec<(String, String)>> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in self.apt_cache(&["madison", pkg])?.lines() {
            // `pkg | version | URI SUITE/COMPONENT ARCH Packages`
            let mut fields = line.split(" | ").map(str::trim);
            let (Some(name), Some(version), Some(origin)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let suite = origin
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.split('/').next());
            if let (true, Some(suite)) = (name == pkg, suite) {
                out.push((version.to_string(), suite.to_string()));
            }
        }
        Ok(out)
    }

    /// The versions of `pkg` that a suite of Debian release `codename` serves (its updates,
    /// security fixes and backports too), newest first.
    pub fn versions_in_release(&self, pkg: &str, codename: &str) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for (version, suite) in self.versions_by_suite(pkg)? {
            let ours = suite == codename
                || suite
                    .strip_prefix(codename)
                    .is_some_and(|rest| rest.starts_with('-'));
            if ours && !out.contains(&version) {
                out.push(version);
            }
        }
        Ok(out)
    }

    /// Package names starting with `prefix` that the indexes know.
    pub fn names_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .apt_cache(&["pkgnames", prefix])?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Downloads `name` at `version` (a package of this state's architecture or `all`) into
    /// `dir`, unless a previous run did; returns the `.deb`. A download goes to a temporary
    /// directory first, so that an interrupted one never leaves a partial file under the final
    /// name.
    pub fn download(&self, name: &str, version: &str, dir: &Path) -> Result<PathBuf> {
        let arch_of_file = |a: &str| dir.join(deb_file_name(name, version, a));
        for a in [self.debarch.as_str(), "all"] {
            if arch_of_file(a).is_file() {
                return Ok(arch_of_file(a));
            }
        }
        let tmp = dir.join(format!(".download-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let spec = format!("{name}={version}");
        let out = self
            .command("apt-get", &["download", "-q", &spec])
            .dir(&tmp)
            .stderr_to_stdout()
            .stdout_capture()
            .unchecked()
            .run()
            .context("running apt-get download")?;
        let got = [self.debarch.as_str(), "all"]
            .into_iter()
            .map(|a| (a, tmp.join(deb_file_name(name, version, a))))
            .find(|(_, p)| p.is_file());
        let Some((arch, got)) = got.filter(|_| out.status.success()) else {
            let _ = std::fs::remove_dir_all(&tmp);
            let text = String::from_utf8_lossy(&out.stdout);
            let why = text
                .lines()
                .rev()
                .find(|l| l.starts_with("E:"))
                .unwrap_or_else(|| text.lines().last().unwrap_or("no output"));
            return Err(UserError::new(format!(
                "apt-get download {spec} ({}) failed: {}; the mirror may have dropped that \
                 version: name another release",
                self.debarch,
                why.trim()
            ))
            .into());
        };
        let file = arch_of_file(arch);
        std::fs::rename(&got, &file).with_context(|| format!("moving {}", file.display()))?;
        let _ = std::fs::remove_dir_all(&tmp);
        Ok(file)
    }
}

/// One `deb` line per suite, `main` only, signed by Debian's archive keys.
fn sources_list() -> String {
    SUITES
        .iter()
        .map(|(uri, suite)| format!("deb [signed-by={KEYRING}] {uri} {suite} main\n"))
        .collect()
}

/// The one-line notes of an `apt-get update`'s error and warning lines, one per suite they
/// name: what apt ignored ("mirror sync in progress", an index it cannot verify).
fn update_notes(stderr: &str) -> Vec<String> {
    let mut notes: Vec<String> = Vec::new();
    for line in stderr.lines() {
        let Some(text) = line
            .strip_prefix("E: ")
            .or_else(|| line.strip_prefix("W: "))
        else {
            continue;
        };
        // The summary line says nothing a suite's own line has not.
        if text.starts_with("Some index files failed to download") {
            continue;
        }
        let suite = SUITES
            .iter()
            .map(|(_, s)| *s)
            .filter(|s| text.contains(&format!(" {s}/")) || text.contains(&format!("/dists/{s}/")))
            .max_by_key(|s| s.len());
        let note = match suite {
            Some(s) => format!("suite {s} skipped: {}", text.trim()),
            None => text.trim().to_string(),
        };
        if !notes.contains(&note) {
            notes.push(note);
        }
    }
    notes
}

/// Writes `text` to `path` unless it holds it already (so that a reader never sees a file being
/// rewritten with the same content).
fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The host's apt settings of how to reach and trust a mirror (its proxies; whether it checks a
/// Release file's dates, which a host whose mirror is a snapshot turns off), as `apt-config dump`
/// prints them: the state's downloads go the way the host's do. Read, never written.
fn host_network_settings() -> String {
    const KEYS: [&str; 5] = [
        "Acquire::http::Proxy ",
        "Acquire::https::Proxy ",
        "Acquire::ftp::Proxy ",
        "Acquire::Check-Valid-Until ",
        "Acquire::Check-Date ",
    ];
    let dump = duct::cmd!("apt-config", "dump")
        .env_remove("APT_CONFIG")
        .stdout_capture()
        .stderr_null()
        .unchecked()
        .run()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    dump.lines()
        .filter(|l| KEYS.iter().any(|k| l.starts_with(k)) && l.ends_with("\";"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The codename of the Debian release this host runs (`bookworm`), from `/etc/os-release`.
pub fn host_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// The file name `apt-get download` gives a package (an epoch's `:` is written `%3a`).
pub fn deb_file_name(name: &str, version: &str, deb_arch: &str) -> String {
    format!("{name}_{}_{deb_arch}.deb", version.replace(':', "%3a"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suite_that_fails_is_named_once() {
        let stderr = "W: Failed to fetch http://deb.debian.org/debian-security/dists/bookworm-security/main/binary-ppc64el/Packages.xz  File has unexpected size (1 != 2). Mirror sync in progress? [IP: 1.2.3.4 80]\n\
                      W: Failed to fetch http://deb.debian.org/debian-security/dists/bookworm-security/main/binary-ppc64el/Packages.xz  File has unexpected size (1 != 2). Mirror sync in progress? [IP: 1.2.3.4 80]\n\
                      E: Some index files failed to download. They have been ignored, or old ones used instead.\n";
        let notes = update_notes(stderr);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("suite bookworm-security skipped: Failed to fetch"));
        assert!(update_notes("Get:1 http://deb.debian.org/debian sid InRelease\n").is_empty());
    }

    #[test]
    fn the_state_reads_nothing_of_the_system() {
        let base = std::env::temp_dir().join(format!("klpx-apt-state-{}", std::process::id()));
        let state = AptState::at(&base, "s390x").unwrap();
        let conf = std::fs::read_to_string(state.config()).unwrap();
        let dir = base.join("s390x");
        // Every place apt reads or writes is the state's, or /dev/null.
        for line in conf.lines().filter(|l| l.starts_with("Dir::")) {
            let value = line.split('"').nth(1).unwrap();
            assert!(
                value.starts_with(dir.to_str().unwrap())
                    || value == "/dev/null"
                    || !value.starts_with('/'),
                "{line}"
            );
        }
        assert!(conf.contains("APT::Architectures { \"s390x\"; };"));
        let sources = std::fs::read_to_string(dir.join("sources.list")).unwrap();
        assert_eq!(sources.lines().count(), SUITES.len());
        assert!(sources.contains(" http://deb.debian.org/debian-security trixie-security main"));
        assert!(AptState::at(&base, "../etc").is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
