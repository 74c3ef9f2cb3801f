//! A source patch: the files it touches and what they hold once it is applied (written to the tree
//! only by the journal, which can always undo it).

use std::path::{Path, PathBuf};

use super::apply::{Placement, apply_hunks};
pub use super::parse::{FileChange, Hunk, HunkLine, SourcePatch};
use crate::error::UserError;

/// GNU patch's default fuzz: up to two outer context lines of a hunk may differ from the tree.
pub const DEFAULT_FUZZ: usize = 2;

impl FileEdit {
    /// One line per hunk that needed an offset or fuzz, for the build's notes.
    pub fn notes(&self) -> impl Iterator<Item = String> + '_ {
        self.placements
            .iter()
            .map(|(patch, p)| format!("{patch}: {}: {p}", self.rel))
    }
}

/// One file's contents before and after a series of patches, computed without touching the tree.
#[derive(Debug, Clone)]
pub struct FileEdit {
    /// Path relative to the tree root.
    pub rel: String,
    /// Absolute path in the tree (checked to stay inside it).
    pub path: PathBuf,
    /// `None` when the patches create the file.
    pub before: Option<Vec<u8>>,
    /// `None` when the patches delete the file.
    pub after: Option<Vec<u8>>,
    /// Hunks that were not exactly where the patch said (offset, fuzz), with the patch's name.
    pub placements: Vec<(String, Placement)>,
}

/// Computes what `patches`, applied in order, make of every file they touch under `root`. Nothing is
/// written; a patch that does not apply is a one-line error naming the patch, the file and the hunk.
/// Hunks are placed as GNU patch places them, with at most `fuzz` outer context lines ignored.
pub fn plan_edits(
    patches: &[SourcePatch],
    root: &Path,
    fuzz: usize,
) -> Result<Vec<FileEdit>, UserError> {
    let mut edits: Vec<FileEdit> = Vec::new();
    for sp in patches {
        for f in &sp.files {
            let at = match edits.iter().position(|e| e.rel == f.path) {
                Some(i) => i,
                None => {
                    let path = inside_tree(root, &f.path)
                        .map_err(|why| UserError::new(format!("{}: {why}", sp.name)))?;
                    let before = match std::fs::read(&path) {
                        Ok(b) => Some(b),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound && f.created => None,
                        Err(e) => {
                            return Err(UserError::new(format!(
                                "{}: {}: cannot read: {e}",
                                sp.name, f.path
                            )));
                        }
                    };
                    edits.push(FileEdit {
                        rel: f.path.clone(),
                        path,
                        after: before.clone(),
                        before,
                        placements: Vec::new(),
                    });
                    edits.len() - 1
                }
            };
            let e = &mut edits[at];
            let old_bytes = e.after.as_deref().unwrap_or_default();
            let (new_bytes, placed) = apply_hunks(old_bytes, &f.hunks, fuzz).map_err(|h| {
                let why = if h.already_applied {
                    "its change is already in the file (applied before, or a reversed patch?)"
                        .to_string()
                } else if fuzz == 0 {
                    "its lines are not in the file (--fuzz 0: context must match exactly)"
                        .to_string()
                } else {
                    format!(
                        "its lines are not in the file, at any offset, with up to {fuzz} context \
                         lines ignored (does the patch match this tree?)"
                    )
                };
                UserError::new(format!(
                    "{}: {}: hunk #{} `{}` does not apply: {why}",
                    sp.name, f.path, h.hunk, h.header
                ))
            })?;
            e.placements
                .extend(placed.into_iter().map(|p| (sp.name.clone(), p)));
            e.after = (!f.deleted).then_some(new_bytes);
        }
    }
    Ok(edits)
}

/// Resolves `rel` under `root`, refusing symlinks that lead out of the tree.
fn inside_tree(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;
    let path = root.join(rel);
    let parent = path.parent().unwrap_or(&root);
    let real_parent = parent.canonicalize().map_err(|e| format!("{rel}: {e}"))?;
    let real = match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => {
            path.canonicalize().map_err(|e| format!("{rel}: {e}"))?
        }
        _ => real_parent.join(path.file_name().unwrap_or_default()),
    };
    if !real.starts_with(&root) {
        return Err(format!(
            "{rel}: resolves to {} outside the source tree; refusing to apply",
            real.display()
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_the_new_contents_without_writing() {
        let dir = std::env::temp_dir().join(format!("klpx-patch-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("kernel")).unwrap();
        std::fs::write(dir.join("kernel/a.c"), "one\ntwo\nthree\n").unwrap();
        let p = "--- a/kernel/a.c\n+++ b/kernel/a.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n";
        let sp = SourcePatch::parse("t.patch", p).unwrap();
        assert_eq!(sp.files[0].path, "kernel/a.c");
        let edits = plan_edits(std::slice::from_ref(&sp), &dir, DEFAULT_FUZZ).unwrap();
        assert_eq!(edits.len(), 1);
        assert_eq!(edits[0].before.as_deref(), Some(&b"one\ntwo\nthree\n"[..]));
        assert_eq!(edits[0].after.as_deref(), Some(&b"one\nTWO\nthree\n"[..]));
        assert_eq!(
            std::fs::read_to_string(dir.join("kernel/a.c")).unwrap(),
            "one\ntwo\nthree\n",
            "planning writes nothing"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
