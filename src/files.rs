//! The user's files at klpx's edges: inputs read with a bound, outputs written whole or not at
//! all, and never an output that is one of the inputs.

use std::path::{Path, PathBuf};

use crate::error::UserError;

/// Largest input file klpx reads whole (4 GiB): more than any object or module, less than what
/// would exhaust memory if a device or a runaway file were given.
pub const INPUT_LIMIT: u64 = 4 << 30;

/// Reads a regular file of at most [`INPUT_LIMIT`] bytes; `what` says what it should be.
pub fn read_input(path: &Path, what: &str) -> Result<Vec<u8>, UserError> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| UserError::new(format!("{shown}: cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(UserError::new(format!(
            "{shown}: not a regular file (give {what})"
        )));
    }
    if meta.len() > INPUT_LIMIT {
        return Err(UserError::new(format!(
            "{shown}: {} bytes, more than any {what} (limit {INPUT_LIMIT})",
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| UserError::new(format!("{shown}: cannot read: {e}")))
}

/// Whether two paths name one file (through symlinks and hard links).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Checks, before any work, that `out` can be written as a new file: its directory exists, it is
/// not a directory, and it is none of `inputs`.
pub fn check_output(out: &Path, option: &str, inputs: &[&Path]) -> Result<(), UserError> {
    let shown = out.display();
    if let Some(i) = inputs.iter().find(|i| same_file(out, i)) {
        return Err(UserError::new(format!(
            "{option} {shown}: is the input {}; give another output file",
            i.display()
        )));
    }
    if out.is_dir() {
        return Err(UserError::new(format!(
            "{option} {shown}: is a directory; give a file name"
        )));
    }
    let dir = parent_dir(out);
    if !dir.is_dir() {
        return Err(UserError::new(format!(
            "{option} {shown}: directory {} does not exist",
            dir.display()
        )));
    }
    Ok(())
}

/// Checks, before any work, that files can be written into the directory `dir` (made later if it
/// does not exist): it is not a file, and it (or the nearest directory above it that exists) is
/// writable by this process.
pub fn check_output_dir(dir: &Path, option: &str) -> Result<(), UserError> {
    let shown = dir.display();
    if dir.exists() && !dir.is_dir() {
        return Err(UserError::new(format!(
            "{option} {shown}: not a directory; give a directory"
        )));
    }
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let Some(existing) = abs.ancestors().find(|a| a.exists()) else {
        return Ok(());
    };
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(existing.as_os_str().as_bytes())
        .map_err(|_| UserError::new(format!("{option} {shown}: a NUL in the path")))?;
    // SAFETY: a valid NUL-terminated path; access(2) only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(UserError::new(format!(
            "{option} {shown}: {} is not writable",
            existing.display()
        )));
    }
    Ok(())
}

/// The directory a file path is in (`.` for a bare name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `bytes` to `out` through a temporary file in the same directory and a rename, so a
/// reader (or a crash) never sees half a file, and a symlink at `out` is replaced, not followed.
pub fn write_whole(out: &Path, bytes: &[u8]) -> Result<(), UserError> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = parent_dir(out).join(format!(".{name}.klpx-{}", std::process::id()));
    let fail = |e: std::io::Error| {
        let _ = std::fs::remove_file(&tmp);
        UserError::new(format!("{}: cannot write: {e}", out.display()))
    };
    std::fs::write(&tmp, bytes).map_err(fail)?;
    std::fs::rename(&tmp, out).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_that_is_an_input_is_refused_through_links() {
        let dir = std::env::temp_dir().join(format!("klpx-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("a.o");
        std::fs::write(&input, b"x").unwrap();
        let soft = dir.join("soft.o");
        let hard = dir.join("hard.o");
        let _ = std::fs::remove_file(&soft);
        let _ = std::fs::remove_file(&hard);
        std::os::unix::fs::symlink(&input, &soft).unwrap();
        std::fs::hard_link(&input, &hard).unwrap();
        for out in [&input, &soft, &hard] {
            let e = check_output(out, "-o", &[&input]).unwrap_err();
            assert!(e.to_string().contains("is the input"), "{e}");
        }
        assert!(check_output(&dir.join("new.o"), "-o", &[&input]).is_ok());
        let e = check_output(&dir.join("none/new.o"), "-o", &[&input]).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        write_whole(&soft, b"new").unwrap();
        assert_eq!(
            std::fs::read(&input).unwrap(),
            b"x",
            "the symlink's target is kept"
        );
        assert_eq!(std::fs::read(&soft).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_and_directories_are_not_inputs() {
        for p in ["/dev/zero", "/"] {
            let e = read_input(Path::new(p), "a .o object").unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
    }
}
