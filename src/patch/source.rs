//! A source patch: the files it touches and how to apply and undo it on a tree.

use std::path::{Component, Path, PathBuf};

use diffy::patch_set::{FileOperation, ParseOptions, PatchSet};

use crate::error::UserError;

/// One file's change in a patch.
#[derive(Debug, Clone)]
pub struct FileChange {
    /// Path relative to the tree root (`-p1` applied).
    pub path: String,
    /// The new text of the file is computed from this single-file unified diff.
    pub diff: String,
    pub created: bool,
    pub deleted: bool,
}

/// A parsed patch file.
#[derive(Debug, Clone)]
pub struct SourcePatch {
    pub name: String,
    pub files: Vec<FileChange>,
}

/// A patch applied to a tree, remembering what the files held before.
#[derive(Debug)]
#[must_use = "an applied patch must be reverted"]
pub struct Applied {
    backups: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl SourcePatch {
    /// Parses a unified or git diff. `name` (usually the file name) appears in errors.
    pub fn parse(name: &str, text: &str) -> Result<SourcePatch, UserError> {
        let mut files = Vec::new();
        for item in PatchSet::parse(text, ParseOptions::unidiff()) {
            let fp =
                item.map_err(|e| UserError::new(format!("{name}: not a unified diff: {e}")))?;
            let op = fp.operation().strip_prefix(1);
            let (path, created, deleted) = match &op {
                FileOperation::Modify { modified, .. } => (modified.to_string(), false, false),
                FileOperation::Create(p) => (p.to_string(), true, false),
                FileOperation::Delete(p) => (p.to_string(), false, true),
                FileOperation::Rename { .. } | FileOperation::Copy { .. } => {
                    return Err(UserError::new(format!(
                        "{name}: renames and copies are not supported"
                    )));
                }
            };
            let patch = fp.patch().as_text().ok_or_else(|| {
                UserError::new(format!("{name}: {path}: binary patches are not supported"))
            })?;
            check_relative(name, &path)?;
            files.push(FileChange {
                path,
                diff: patch.to_string(),
                created,
                deleted,
            });
        }
        if files.is_empty() {
            return Err(UserError::new(format!(
                "{name}: no file changes found in the patch"
            )));
        }
        Ok(SourcePatch {
            name: name.to_string(),
            files,
        })
    }

    /// Reads and parses a patch file.
    pub fn load(path: &Path) -> Result<SourcePatch, UserError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UserError::new(format!("{}: cannot read patch: {e}", path.display())))?;
        SourcePatch::parse(&path.display().to_string(), &text)
    }

    /// Computes every file's new contents first, then writes them; a patch that does not apply leaves
    /// the tree untouched.
    pub fn apply(&self, root: &Path) -> Result<Applied, UserError> {
        let planned = plan_edits(std::slice::from_ref(self), root)?;
        let mut applied = Applied {
            backups: Vec::new(),
        };
        for FileEdit {
            path,
            before,
            after,
            ..
        } in planned
        {
            applied.backups.push((path.clone(), before));
            let result = match after {
                Some(text) => std::fs::write(&path, text),
                None => std::fs::remove_file(&path),
            };
            if let Err(e) = result {
                let msg = format!("{}: cannot write {}: {e}", self.name, path.display());
                applied
                    .revert()
                    .map_err(|r| UserError::new(format!("{msg}; and undoing failed: {r}")))?;
                return Err(UserError::new(msg));
            }
        }
        Ok(applied)
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
    /// The unified diffs that changed this file, in order (for `#line` fixing).
    pub diffs: Vec<String>,
}

/// Computes what `patches`, applied in order, make of every file they touch under `root`. Nothing is
/// written; a patch that does not apply is a one-line error naming the patch, the file and the hunk.
pub fn plan_edits(patches: &[SourcePatch], root: &Path) -> Result<Vec<FileEdit>, UserError> {
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
                        diffs: Vec::new(),
                    });
                    edits.len() - 1
                }
            };
            let e = &mut edits[at];
            let old_text = e
                .after
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let patch = diffy::Patch::from_str(&f.diff)
                .map_err(|err| UserError::new(format!("{}: {}: {err}", sp.name, f.path)))?;
            let new_text = diffy::apply(&old_text, &patch).map_err(|err| {
                UserError::new(format!(
                    "{}: {}: {err} (does the patch match this tree?)",
                    sp.name, f.path
                ))
            })?;
            e.after = (!f.deleted).then(|| new_text.into_bytes());
            e.diffs.push(f.diff.clone());
        }
    }
    Ok(edits)
}

impl Applied {
    /// Restores every file to what it held before the patch.
    pub fn revert(mut self) -> std::io::Result<()> {
        let mut first_err = None;
        while let Some((path, before)) = self.backups.pop() {
            let r = match before {
                Some(bytes) => std::fs::write(&path, bytes),
                None => std::fs::remove_file(&path),
            };
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// A patch path must be relative and must not climb out of the tree.
fn check_relative(name: &str, path: &str) -> Result<(), UserError> {
    let p = Path::new(path);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::Prefix(_)))
    {
        return Err(UserError::new(format!(
            "{name}: {path}: path leaves the source tree; refusing to apply"
        )));
    }
    Ok(())
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
    fn refuses_paths_outside() {
        let p = "--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n";
        let e = SourcePatch::parse("x.patch", p).unwrap_err();
        assert!(e.to_string().contains("leaves the source tree"), "{e}");
    }

    #[test]
    fn applies_and_reverts() {
        let dir = std::env::temp_dir().join(format!("klpx-patch-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("kernel")).unwrap();
        std::fs::write(dir.join("kernel/a.c"), "one\ntwo\nthree\n").unwrap();
        let p = "--- a/kernel/a.c\n+++ b/kernel/a.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n";
        let sp = SourcePatch::parse("t.patch", p).unwrap();
        assert_eq!(sp.files[0].path, "kernel/a.c");
        let applied = sp.apply(&dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("kernel/a.c")).unwrap(),
            "one\nTWO\nthree\n"
        );
        applied.revert().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("kernel/a.c")).unwrap(),
            "one\ntwo\nthree\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
