//! kbuild's `.<name>.o.cmd` files: the exact command that built an object and the files it depended on.
//!
//! ```text
//! savedcmd_kernel/sys.o := gcc -Wp,-MMD,kernel/.sys.o.d ... -c -o kernel/sys.o ../src/kernel/sys.c ; ./tools/objtool/objtool ... kernel/sys.o
//! source_kernel/sys.o := ../src/kernel/sys.c
//! deps_kernel/sys.o := \
//!   include/linux/compiler-version.h \
//!     $(wildcard include/config/CC_VERSION_TEXT) \
//! ```

use std::path::{Path, PathBuf};

use crate::error::UserError;

/// What a `.cmd` file records about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdFile {
    /// The object as kbuild names it, relative to the output tree (`kernel/sys.o`).
    pub target: String,
    /// The shell command that built it, run from the output tree.
    pub command: String,
    /// The source file, as written in the command (relative to the output tree or absolute).
    pub source: Option<String>,
    /// Files the object depends on (headers included), as written by fixdep.
    pub deps: Vec<String>,
    /// The `include/config/<OPTION>` files fixdep names for the config options the source reads
    /// (`$(wildcard include/config/SMP)`): kbuild touches one when its option changes.
    pub options: Vec<String>,
}

impl CmdFile {
    /// Reads and parses `tree/<dir>/.<name>.o.cmd` for the object `rel` (`kernel/sys.o`).
    pub fn load(tree: &Path, rel: &str) -> Result<CmdFile, UserError> {
        let path = cmd_path(tree, rel);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            UserError::new(format!(
                "{}: cannot read ({e}); has {rel} been built in this tree?",
                path.display()
            ))
        })?;
        CmdFile::parse(&text).map_err(|why| UserError::new(format!("{}: {why}", path.display())))
    }

    /// Parses the text of a `.cmd` file.
    pub fn parse(text: &str) -> Result<CmdFile, String> {
        let mut target = None;
        let mut command = None;
        let mut source = None;
        let mut deps = Vec::new();
        let mut options = Vec::new();
        let mut in_deps = false;
        for line in text.lines() {
            if let Some(rest) = line
                .strip_prefix("savedcmd_")
                .or_else(|| line.strip_prefix("cmd_"))
            {
                let (t, c) = rest
                    .split_once(" := ")
                    .ok_or("savedcmd line without ' := '")?;
                target = Some(t.to_string());
                command = Some(c.to_string());
                in_deps = false;
            } else if let Some(rest) = line.strip_prefix("source_") {
                source = rest.split_once(" := ").map(|(_, s)| s.trim().to_string());
                in_deps = false;
            } else if line.starts_with("deps_") {
                in_deps = true;
            } else if in_deps {
                let item = line.trim().trim_end_matches('\\').trim();
                if item.is_empty() {
                    in_deps = false;
                } else if let Some(option) = item.strip_prefix("$(wildcard ") {
                    options.push(option.trim_end_matches(')').to_string());
                } else {
                    deps.push(item.to_string());
                }
            }
        }
        let target = target.ok_or("no savedcmd_ line")?;
        let command = command.ok_or("no savedcmd_ line")?;
        Ok(CmdFile {
            target,
            command,
            source,
            deps,
            options,
        })
    }

    /// Whether the object was compiled from C (not assembled, linked or generated).
    pub fn is_c_compile(&self) -> bool {
        self.source.as_deref().is_some_and(|s| s.ends_with(".c")) && self.command.contains(" -c ")
    }

    /// The command rewritten to build `out` instead of the tree's object, with `extra` compiler flags
    /// added, and its dependency file sent to `depfile`. Later steps (objtool) follow the output.
    pub fn command_for(
        &self,
        out: &Path,
        depfile: &Path,
        extra: &[&str],
    ) -> Result<String, String> {
        let out = shell_quote(&out.to_string_lossy());
        let mut cmd = replace_word(&self.command, &self.target, &out);
        let dep_flag = cmd
            .split_whitespace()
            .find(|w| w.starts_with("-Wp,-MMD,") || w.starts_with("-Wp,-MD,"))
            .map(str::to_string);
        if let Some(flag) = dep_flag {
            // `-Wp,-MMD,<file>`: keep everything up to the second comma.
            let keep = flag
                .match_indices(',')
                .nth(1)
                .map_or(flag.len(), |(i, _)| i + 1);
            cmd = cmd.replacen(
                &flag,
                &format!(
                    "{}{}",
                    &flag[..keep],
                    shell_quote(&depfile.to_string_lossy())
                ),
                1,
            );
        }
        let marker = format!(" -c -o {out} ");
        let at = cmd.find(&marker).ok_or_else(|| {
            format!(
                "cannot find ' -c -o {}' in the recorded command",
                self.target
            )
        })?;
        let flags: String = extra
            .iter()
            .map(|f| format!(" {}", shell_quote(f)))
            .collect();
        cmd.insert_str(at, &flags);
        Ok(cmd)
    }
}

/// Path of the `.cmd` file for object `rel` in `tree`.
pub fn cmd_path(tree: &Path, rel: &str) -> PathBuf {
    let rel = Path::new(rel);
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    tree.join(rel.parent().unwrap_or(Path::new("")))
        .join(format!(".{name}.cmd"))
}

/// Replaces whole-word occurrences of `word` (bounded by whitespace, `;` or the ends).
fn replace_word(text: &str, word: &str, with: &str) -> String {
    let bytes = text.as_bytes();
    let is_sep = |b: u8| b.is_ascii_whitespace() || b == b';';
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(pos) = text[i..].find(word) {
        let start = i + pos;
        let end = start + word.len();
        let before_ok = start == 0 || is_sep(bytes[start - 1]);
        let after_ok = end == bytes.len() || is_sep(bytes[end]);
        out.push_str(&text[i..start]);
        out.push_str(if before_ok && after_ok { with } else { word });
        i = end;
    }
    out.push_str(&text[i..]);
    out
}

/// Quotes a word for `sh` when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./,=+:@%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Every `.*.o.cmd` file of an output tree, skipping host tools and the `source` link.
pub fn cmd_files(objdir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![objdir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                let top = dir == objdir;
                if !(name.starts_with('.') || top && matches!(&*name, "scripts" | "tools" | "usr"))
                {
                    stack.push(e.path());
                }
            } else if ft.is_file() && name.starts_with('.') && name.ends_with(".o.cmd") {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "savedcmd_kernel/sys.o := gcc -Wp,-MMD,kernel/.sys.o.d -nostdinc -O2 -DKBUILD_BASENAME='\"sys\"' -c -o kernel/sys.o ../src/kernel/sys.c  ; ./tools/objtool/objtool --orc kernel/sys.o\n\nsource_kernel/sys.o := ../src/kernel/sys.c\n\ndeps_kernel/sys.o := \\\n  include/linux/compiler-version.h \\\n    $(wildcard include/config/CC_VERSION_TEXT) \\\n  include/linux/kconfig.h \\\n\nkernel/sys.o: $(deps_kernel/sys.o)\n\n$(deps_kernel/sys.o):\n";

    #[test]
    fn parses_kbuild_cmd_file() {
        let c = CmdFile::parse(SAMPLE).unwrap();
        assert_eq!(c.target, "kernel/sys.o");
        assert_eq!(c.source.as_deref(), Some("../src/kernel/sys.c"));
        assert_eq!(
            c.deps,
            [
                "include/linux/compiler-version.h",
                "include/linux/kconfig.h"
            ]
        );
        assert_eq!(c.options, ["include/config/CC_VERSION_TEXT"]);
        assert!(c.is_c_compile());
    }

    #[test]
    fn rewrites_output_depfile_and_flags() {
        let c = CmdFile::parse(SAMPLE).unwrap();
        let cmd = c
            .command_for(
                Path::new("/w/orig.o"),
                Path::new("/w/orig.d"),
                &["-ffunction-sections"],
            )
            .unwrap();
        assert!(cmd.contains("-Wp,-MMD,/w/orig.d "), "{cmd}");
        assert!(
            cmd.contains(" -ffunction-sections -c -o /w/orig.o ../src/kernel/sys.c"),
            "{cmd}"
        );
        assert!(cmd.ends_with("objtool --orc /w/orig.o"), "{cmd}");
        assert!(!cmd.contains("kernel/sys.o"), "{cmd}");
    }
}
