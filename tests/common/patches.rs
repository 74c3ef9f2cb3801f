//! Patches made in tests the way their authors make them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::cli::text;

/// A `git diff` of fs/proc/cmdline.c written against a slightly different version of the file (one
/// context line differs), as a fix written for another kernel is: it does not apply to `src`.
pub fn patch_for_another_version(src: &Path, dir: &Path) -> PathBuf {
    let repo = dir.join("other");
    std::fs::create_dir_all(repo.join("fs/proc")).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
        out.stdout
    };
    let file = repo.join("fs/proc/cmdline.c");
    let orig = std::fs::read_to_string(src.join("fs/proc/cmdline.c")).unwrap();
    // The line right after the change differs, so no fuzz lets it apply (GNU patch agrees).
    let newer = "\tseq_puts(m, saved_command_line); /* newer */";
    let other = orig.replace("\tseq_puts(m, saved_command_line);", newer);
    assert_ne!(orig, other);
    std::fs::write(&file, &other).unwrap();
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "base"]);
    let edited = other.replace(newer, &format!("\tseq_puts(m, \"klpx \");\n{newer}"));
    std::fs::write(&file, edited).unwrap();
    let patch = dir.join("other-version.patch");
    std::fs::write(&patch, git(&["diff"])).unwrap();
    let dry = Command::new("patch")
        .args(["-p1", "--dry-run", "-s", "-i"])
        .arg(&patch)
        .current_dir(src)
        .output()
        .unwrap();
    assert!(!dry.status.success(), "GNU patch must refuse it too");
    patch
}
