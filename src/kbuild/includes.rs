//! Which translation units may include a file, found from the source alone: a never-built tree has
//! no recorded dependencies, so an edited header's users are found through `#include` lines, and
//! kbuild then compiles them and records the exact dependencies.
//!
//! The match is generous on purpose (a file is a candidate when an include with a directory names it
//! by a path suffix, or a bare name is its neighbour): a candidate too many costs a compile, a missed one a wrong
//! livepatch. Other architectures' trees, tools, scripts and documentation are not kernel code for
//! this build and are skipped.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

/// Top-level directories that hold no kernel translation units of a build.
const SKIPPED_TOP: &[&str] = &[
    "Documentation",
    "tools",
    "scripts",
    "usr",
    "LICENSES",
    "debian",
];

/// An `#include` line of a file: the file (tree-relative) and what it names.
struct Include {
    file: String,
    name: String,
}

/// The `.c` files (tree-relative) that include any of `files` directly or through other files,
/// under `srcdir`, for the architecture whose source directory is `arch/<arch_dir>`.
pub fn including_units(srcdir: &Path, arch_dir: &str, files: &[String]) -> Vec<String> {
    let sources = source_files(srcdir, arch_dir);
    let includes: Vec<Include> = sources
        .par_iter()
        .flat_map_iter(|rel| {
            let text = std::fs::read(srcdir.join(rel)).unwrap_or_default();
            include_names(&text)
                .into_iter()
                .map(|name| Include {
                    file: rel.clone(),
                    name,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    // Index by the included file's base name: a target is only compared with includes naming it.
    let mut by_base: HashMap<&str, Vec<&Include>> = HashMap::new();
    for inc in &includes {
        by_base.entry(base_name(&inc.name)).or_default().push(inc);
    }
    let mut seen: BTreeSet<String> = files.iter().cloned().collect();
    let mut queue: Vec<String> = files.to_vec();
    let mut units = BTreeSet::new();
    while let Some(target) = queue.pop() {
        for inc in by_base.get(base_name(&target)).into_iter().flatten() {
            if !names(&inc.file, &inc.name, &target) || seen.contains(&inc.file) {
                continue;
            }
            seen.insert(inc.file.clone());
            queue.push(inc.file.clone());
            if inc.file.ends_with(".c") {
                units.insert(inc.file.clone());
            }
        }
    }
    units.into_iter().collect()
}

fn base_name(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// Whether `#include` of `name` in `file` may mean `target`.
fn names(file: &str, name: &str, target: &str) -> bool {
    // A path with a directory (`linux/fs.h`, `asm/x.h`) is found through the include paths: any
    // file ending in it. A bare name (`"internal.h"`) is the including file's neighbour: mm/, fs/
    // and kernel/ each have their own internal.h.
    if name.contains('/') && (target == name || target.ends_with(&format!("/{name}"))) {
        return true;
    }
    let dir = file.rsplit_once('/').map_or("", |(d, _)| d);
    normalize(&format!("{dir}/{name}")) == target
}

/// Resolves `.` and `..` components of a relative path.
fn normalize(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            _ => out.push(part),
        }
    }
    out.join("/")
}

/// The names of a file's `#include "x"` and `#include <x>` lines.
fn include_names(text: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let line = line.trim_ascii_start();
        let Some(rest) = line.strip_prefix(b"#") else {
            continue;
        };
        let Some(rest) = rest.trim_ascii_start().strip_prefix(b"include") else {
            continue;
        };
        let rest = rest.trim_ascii_start();
        let close = match rest.first() {
            Some(b'"') => b'"',
            Some(b'<') => b'>',
            _ => continue,
        };
        if let Some(end) = rest[1..].iter().position(|&b| b == close) {
            out.push(String::from_utf8_lossy(&rest[1..1 + end]).into_owned());
        }
    }
    out
}

/// Every `.c` and `.h` file under `srcdir`, tree-relative, skipping [`SKIPPED_TOP`] and the other
/// architectures.
fn source_files(srcdir: &Path, arch_dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(srcdir.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                let skip = (rel.is_empty() && SKIPPED_TOP.contains(&name.as_str()))
                    || (rel == "arch" && name != arch_dir);
                if !skip {
                    stack.push((e.path(), child));
                }
            } else if ft.is_file() && (name.ends_with(".c") || name.ends_with(".h")) {
                out.push(child);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_lines() {
        let t =
            b"#include <linux/fs.h>\n  #  include \"internal.h\"\n// #include <no.h>\n#define X\n";
        assert_eq!(include_names(t), vec!["linux/fs.h", "internal.h"]);
    }

    #[test]
    fn what_an_include_may_name() {
        assert!(names(
            "fs/proc/cmdline.c",
            "internal.h",
            "fs/proc/internal.h"
        ));
        assert!(names("fs/x.c", "linux/fs.h", "include/linux/fs.h"));
        assert!(names("fs/proc/a.c", "../internal.h", "fs/internal.h"));
        assert!(!names("fs/proc/a.c", "linux/fs.h", "include/linux/nfs.h"));
        assert!(!names("mm/a.c", "internal.h", "fs/proc/internal.h"));
    }
}
