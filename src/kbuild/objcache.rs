//! Original objects kept between builds. A patch author rebuilds the same fix many times against
//! one tree, and the original side of each affected object is the same every time: it is compiled
//! once and then copied from here, so a second build compiles only the patched side.
//!
//! An entry is keyed by everything that decides the object: the compile command as it runs (with
//! klpx's flags and the toolchain's rewrite, output paths made neutral), the contents of the source
//! and of every file kbuild recorded as a dependency, and the size and time of every program and
//! file the command names (the compiler, objtool). A missing dependency means no key, and the
//! object is compiled as before. Entries live in klpx's cache, one directory per output tree,
//! removed with the tree by `klpx kernel clean` and bounded in size (oldest used first out).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::cmdfile::CmdFile;
use super::toolchain::Toolchain;
use crate::kernel::cache;

/// The most one tree's cache holds before the least recently used entries go (512 MiB).
const LIMIT: u64 = 512 << 20;

/// Bumped when what an entry holds changes.
const VERSION: &[u8] = b"klpx-objcache-1";

/// The original objects of one output tree.
#[derive(Debug, Clone)]
pub struct ObjectCache {
    dir: PathBuf,
    objdir: PathBuf,
}

impl ObjectCache {
    /// The cache of the output tree `objdir`.
    pub fn for_tree(objdir: &Path) -> ObjectCache {
        ObjectCache {
            dir: dir_of(objdir),
            objdir: objdir.to_path_buf(),
        }
    }

    /// The key of `cmd` compiled with `extra` flags through `toolchain`, or `None` when a file it
    /// depends on cannot be read. `workdir` is the build's own directory, named after its process:
    /// its path is left out of the key and the contents of the headers klpx put there
    /// (`workdir/include`, in the flags) go in instead.
    pub fn key(
        &self,
        cmd: &CmdFile,
        extra: &[&str],
        toolchain: &Toolchain,
        workdir: &Path,
    ) -> Option<String> {
        let neutral = Path::new("/klpx-objcache/object.o");
        let line = cmd
            .command_for(neutral, &neutral.with_extension("d"), extra)
            .ok()?;
        let line = toolchain
            .rewrite_command(&line)
            .replace(&*workdir.to_string_lossy(), "/klpx-work");
        let mut parts: Vec<Vec<u8>> = vec![VERSION.to_vec(), line.clone().into_bytes()];
        let mut headers: Vec<PathBuf> = std::fs::read_dir(workdir.join("include"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        headers.sort();
        for h in headers {
            parts.push(h.file_name()?.as_encoded_bytes().to_vec());
            parts.push(std::fs::read(&h).ok()?);
        }
        let resolve = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                self.objdir.join(p)
            }
        };
        let mut files: Vec<&str> = cmd.source.iter().map(String::as_str).collect();
        files.extend(cmd.deps.iter().map(String::as_str));
        let mut hashed = std::collections::HashSet::new();
        for f in files {
            parts.push(f.as_bytes().to_vec());
            parts.push(std::fs::read(resolve(f)).ok()?);
            hashed.insert(resolve(f));
        }
        // Programs and files the command runs or reads besides the recorded dependencies (whose
        // contents are in already; their times are not, so that a restored file still matches).
        let first = line.split_whitespace().next().unwrap_or_default();
        let programs = which::which(first).ok().into_iter().chain(
            line.split_whitespace()
                .filter(|w| w.contains('/') && !w.starts_with('-'))
                .map(resolve)
                .filter(|p| p.is_file() && !hashed.contains(p)),
        );
        for p in programs {
            let m = std::fs::metadata(&p).ok()?;
            parts.push(
                format!(
                    "{} {} {}",
                    p.display(),
                    m.len(),
                    m.mtime_nsec() + m.mtime() * 1_000_000_000
                )
                .into_bytes(),
            );
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        Some(format!("{:016x}", cache::fingerprint(&refs)))
    }

    /// Copies the entry `key` to `out`; false when there is none.
    pub fn fetch(&self, key: &str, out: &Path) -> bool {
        let entry = self.dir.join(format!("{key}.o"));
        if std::fs::copy(&entry, out).is_err() {
            return false;
        }
        // Used now: the eviction goes by modification time.
        if let Ok(f) = std::fs::File::options().append(true).open(&entry) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        true
    }

    /// Keeps `out` as the entry `key`. Failures only cost the next build a compile, so they are
    /// ignored.
    pub fn store(&self, key: &str, out: &Path) {
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let tmp = self.dir.join(format!(".{key}.{}.tmp", std::process::id()));
        if std::fs::copy(out, &tmp).is_ok() {
            let _ = std::fs::rename(&tmp, self.dir.join(format!("{key}.o")));
        }
        let _ = std::fs::remove_file(&tmp);
    }

    /// Removes the least recently used entries until the cache holds at most its limit; once per
    /// build, after the entries are stored.
    pub fn trim(&self) {
        self.trim_to(LIMIT);
    }

    fn trim_to(&self, limit: u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                // Entries only: the kept module directories (`modules/`) are not counted.
                let m = e.metadata().ok().filter(|m| m.is_file())?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= limit {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// Where the cache of the output tree `objdir` lives.
pub fn dir_of(objdir: &Path) -> PathBuf {
    let real = objdir
        .canonicalize()
        .unwrap_or_else(|_| objdir.to_path_buf());
    cache::root().join("objects").join(format!(
        "{:016x}",
        cache::fingerprint_bytes(real.as_os_str().as_encoded_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_every_dependency() {
        let dir = std::env::temp_dir().join(format!("klpx-objkey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.c"),
            "#include \"a.h\"\nint a(void) { return A; }\n",
        )
        .unwrap();
        std::fs::write(dir.join("a.h"), "#define A 1\n").unwrap();
        // Touched, not changed: the source named in the command keeps its key.
        std::fs::write(dir.join("a.c"), std::fs::read(dir.join("a.c")).unwrap()).unwrap();
        let cmd = CmdFile::parse(
            "savedcmd_a.o := gcc -Wp,-MMD,./.a.o.d -O2 -c -o a.o ./a.c\n\
             source_a.o := ./a.c\n\
             deps_a.o := \\\n  ./a.c \\\n  a.h \\\n\n",
        )
        .unwrap();
        let tc = Toolchain {
            arch: klpx_arch::Arch::X86_64,
            cross: String::new(),
            llvm: false,
            cc: None,
            launcher: None,
            extra_vars: Vec::new(),
        };
        let c = ObjectCache::for_tree(&dir);
        // Two builds' work directories, each with klpx's header.
        let (w1, w2) = (dir.join("work-1"), dir.join("work-2"));
        for w in [&w1, &w2] {
            std::fs::create_dir_all(w.join("include")).unwrap();
            std::fs::write(w.join("include/klpx.h"), "#define KLPX 1\n").unwrap();
        }
        let key = |flags: &[&str], tc: &Toolchain, w: &Path| {
            let inc = format!("-I{}/include", w.display());
            let mut all = flags.to_vec();
            all.push(&inc);
            c.key(&cmd, &all, tc, w)
        };
        let k1 = key(&["-ffunction-sections"], &tc, &w1).unwrap();
        assert_eq!(
            key(&["-ffunction-sections"], &tc, &w2).unwrap(),
            k1,
            "another build"
        );
        std::fs::write(w2.join("include/klpx.h"), "#define KLPX 2\n").unwrap();
        assert_ne!(
            key(&["-ffunction-sections"], &tc, &w2).unwrap(),
            k1,
            "klpx's header"
        );
        assert_eq!(key(&["-ffunction-sections"], &tc, &w1).unwrap(), k1);
        assert_ne!(key(&["-fdata-sections"], &tc, &w1).unwrap(), k1, "flags");
        std::fs::write(dir.join("a.h"), "#define A 2\n").unwrap();
        assert_ne!(
            key(&["-ffunction-sections"], &tc, &w1).unwrap(),
            k1,
            "a header"
        );
        std::fs::write(dir.join("a.h"), "#define A 1\n").unwrap();
        // Touched, not changed: the source named in the command keeps its key.
        std::fs::write(dir.join("a.c"), std::fs::read(dir.join("a.c")).unwrap()).unwrap();
        assert_eq!(
            key(&["-ffunction-sections"], &tc, &w1).unwrap(),
            k1,
            "contents, not times"
        );
        let ccache = Toolchain {
            cc: Some("gcc-12".into()),
            ..tc.clone()
        };
        assert_ne!(
            key(&["-ffunction-sections"], &ccache, &w1).unwrap(),
            k1,
            "the compiler"
        );
        std::fs::remove_file(dir.join("a.h")).unwrap();
        assert!(
            key(&["-ffunction-sections"], &tc, &w1).is_none(),
            "a missing header"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn trimming_keeps_the_most_recently_used() {
        let dir = std::env::temp_dir().join(format!("klpx-objcache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let c = ObjectCache {
            dir: dir.clone(),
            objdir: dir.clone(),
        };
        let t0 = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        for (i, name) in ["old.o", "mid.o", "new.o"].iter().enumerate() {
            let p = dir.join(name);
            std::fs::write(&p, vec![0u8; 1000]).unwrap();
            let f = std::fs::File::options().append(true).open(&p).unwrap();
            f.set_modified(t0 + std::time::Duration::from_secs(10 * i as u64))
                .unwrap();
        }
        c.trim_to(2000);
        assert!(!dir.join("old.o").exists());
        assert!(dir.join("mid.o").exists() && dir.join("new.o").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
