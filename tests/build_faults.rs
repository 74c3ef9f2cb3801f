//! Faults injected into `klpx build`: the user's tree is never left modified and no work is lost.
//! A patch that does not apply, paths that leave the tree, a second klpx on the same tree, a run
//! killed outright (its journal is restored by the next run), and SIGTERM / SIGINT in the middle of
//! the patched compile.

mod common;

use common::cli::{klpx, text};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use klpx::livepatch::journal;
use klpx::livepatch::lock::SourceLock;
use klpx::patch::source::FileEdit;
use klpx_arch::Arch;

static SERIAL: Mutex<()> = Mutex::new(());

/// A minimal "built tree": enough for klpx to get past its up-front checks to the patch handling.
fn fake_tree(tag: &str) -> (PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("klpx-faults-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let src = root.join("src");
    let obj = root.join("obj");
    std::fs::create_dir_all(src.join("kernel")).unwrap();
    std::fs::create_dir_all(&obj).unwrap();
    std::fs::write(src.join("Makefile"), "# fake\n").unwrap();
    std::fs::write(src.join("Kconfig"), "# fake\n").unwrap();
    std::fs::write(src.join("kernel/a.c"), "int a(void)\n{\n\treturn 1;\n}\n").unwrap();
    std::fs::write(obj.join(".config"), "CONFIG_CC_VERSION_TEXT=\"x\"\n").unwrap();
    std::fs::write(obj.join("vmlinux.a"), "!<thin>\n").unwrap();
    std::fs::write(obj.join("Module.symvers"), "").unwrap();
    (src, obj)
}

/// `klpx build` of `patch` on a fake tree; its output and its stderr as text.
fn build_fake(src: &Path, obj: &Path, patch: &Path) -> (Output, String) {
    let out = klpx(&[
        "build",
        "-s",
        src.to_str().unwrap(),
        "-O",
        obj.to_str().unwrap(),
        "--skip-compiler-check",
        patch.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    (out, err)
}

const GOOD: &str = "--- a/kernel/a.c\n+++ b/kernel/a.c\n@@ -1,4 +1,4 @@\n int a(void)\n {\n-\treturn 1;\n+\treturn 2;\n }\n";

#[test]
fn a_patch_that_does_not_apply_names_the_file_and_touches_nothing() {
    let (src, obj) = fake_tree("noapply");
    std::fs::write(src.join("kernel/b.c"), "int b;\n").unwrap();
    // The first file applies, the second does not: neither may be written.
    let patch = src.parent().unwrap().join("bad.patch");
    std::fs::write(
        &patch,
        format!("{GOOD}--- a/kernel/b.c\n+++ b/kernel/b.c\n@@ -1 +1 @@\n-int nope;\n+int b = 1;\n"),
    )
    .unwrap();
    let (out, err) = build_fake(&src, &obj, &patch);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("kernel/b.c"), "{err}");
    // Besides the stage line, the error is one line naming the patch, the file and the hunk.
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("klpx: plan:"))
        .collect();
    assert_eq!(errors.len(), 1, "one line: {err}");
    assert!(errors[0].contains("hunk #1"), "{err}");
    assert_eq!(
        std::fs::read_to_string(src.join("kernel/a.c")).unwrap(),
        "int a(void)\n{\n\treturn 1;\n}\n"
    );
    assert_eq!(
        std::fs::read_to_string(src.join("kernel/b.c")).unwrap(),
        "int b;\n"
    );
}

#[test]
fn paths_that_leave_the_tree_are_refused_before_any_write() {
    let (src, obj) = fake_tree("escape");
    let outside = src.parent().unwrap().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("x.c"), "int x;\n").unwrap();
    std::os::unix::fs::symlink(&outside, src.join("evil")).unwrap();
    for (name, body) in [
        (
            "dotdot",
            "--- a/../outside/x.c\n+++ b/../outside/x.c\n@@ -1 +1 @@\n-int x;\n+int y;\n",
        ),
        (
            "symlink",
            "--- a/evil/x.c\n+++ b/evil/x.c\n@@ -1 +1 @@\n-int x;\n+int y;\n",
        ),
    ] {
        let patch = src.parent().unwrap().join(format!("{name}.patch"));
        std::fs::write(&patch, body).unwrap();
        let (out, err) = build_fake(&src, &obj, &patch);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains("outside") || err.contains("leaves"),
            "{name}: {err}"
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("x.c")).unwrap(),
            "int x;\n"
        );
    }
}

#[test]
fn a_second_klpx_on_the_same_tree_is_refused() {
    let (src, obj) = fake_tree("lock");
    let patch = src.parent().unwrap().join("good.patch");
    std::fs::write(&patch, GOOD).unwrap();
    let _held = SourceLock::try_take(&src).unwrap();
    let (out, err) = build_fake(&src, &obj, &patch);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("another klpx"), "{err}");
}

#[test]
fn a_refused_second_run_leaves_the_first_runs_patch_alone() {
    let (src, obj) = fake_tree("second");
    let a = src.join("kernel/a.c");
    let edits = vec![FileEdit {
        rel: "kernel/a.c".into(),
        path: a.clone(),
        before: Some(std::fs::read(&a).unwrap()),
        after: Some(b"patched by the first run, which is still compiling\n".to_vec()),
        placements: vec![],
    }];
    // The first run: holds the lock and has the tree patched under its journal.
    let _held = SourceLock::try_take(&src).unwrap();
    let first = journal::apply(&src, &edits).unwrap();
    let patch = src.parent().unwrap().join("good.patch");
    std::fs::write(&patch, GOOD).unwrap();
    let (out, err) = build_fake(&src, &obj, &patch);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("another klpx"), "{err}");
    assert!(!err.contains("restored"), "{err}");
    assert!(
        std::fs::read_to_string(&a)
            .unwrap()
            .starts_with("patched by the first run"),
        "the second run touched the first run's patched file"
    );
    first.undo().unwrap();
    assert_eq!(
        std::fs::read_to_string(&a).unwrap(),
        "int a(void)\n{\n\treturn 1;\n}\n"
    );
}

#[test]
fn a_journal_left_by_a_killed_run_is_restored_first() {
    let (src, obj) = fake_tree("journal");
    let a = src.join("kernel/a.c");
    let edits = vec![FileEdit {
        rel: "kernel/a.c".into(),
        path: a.clone(),
        before: Some(std::fs::read(&a).unwrap()),
        after: Some(b"half-written by a run that was killed\n".to_vec()),
        placements: vec![],
    }];
    // Apply under a journal and "die" without undoing.
    let patched = journal::apply(&src, &edits).unwrap();
    std::mem::forget(patched);
    assert!(
        std::fs::read_to_string(&a)
            .unwrap()
            .starts_with("half-written")
    );
    let patch = src.parent().unwrap().join("good.patch");
    std::fs::write(&patch, GOOD).unwrap();
    let (_, err) = build_fake(&src, &obj, &patch);
    assert!(err.contains("restored 1 file"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&a).unwrap(),
        "int a(void)\n{\n\treturn 1;\n}\n"
    );
}

/// The work directory `klpx build` of the header patch uses in process `pid`.
fn workdir_of(pid: u32) -> PathBuf {
    klpx::kernel::cache::root()
        .join("build")
        .join(format!("livepatch-header-edit-{pid}"))
}

/// Starts a real build of a header patch (dozens of objects), waits until the tree is patched, sends
/// `signal`, and checks that the tree is as before and the journal and work directory gone.
fn interrupt_during_patched_compile(signal: i32) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = common::kernel::built_tree(Arch::X86_64).expect("x86_64 kernel tree");
    let patch = common::kernel::repo().join("tests/boot/header-edit.patch");
    let files = [
        "fs/proc/internal.h",
        "fs/proc/cmdline.c",
        "fs/proc/version.c",
    ];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(tree.src.join(f)).unwrap())
        .collect();
    let out_dir = std::env::temp_dir().join(format!("klpx-faults-sig-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args([
            "build",
            "-s",
            tree.src.to_str().unwrap(),
            "-O",
            tree.out.to_str().unwrap(),
            "-o",
            out_dir.to_str().unwrap(),
            "-j",
            "1",
            patch.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("compile-patched") {
            break;
        }
    }
    // The tree is patched now; give the compiles a moment, then interrupt.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        std::fs::read(tree.src.join(files[0])).unwrap() != before[0],
        "the tree should be patched during the patched compile:\n{log}"
    );
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    for line in lines {
        log.push_str(&line.unwrap());
        log.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + signal), "{log}");
    assert!(log.contains("interrupted; restored"), "{log}");
    assert!(
        !workdir_of(child.id()).exists(),
        "the work directory was left in the cache"
    );
    for (f, b) in files.iter().zip(&before) {
        assert_eq!(
            &std::fs::read(tree.src.join(f)).unwrap(),
            b,
            "{f} not restored"
        );
    }
    assert_eq!(
        journal::recover(&tree.src).unwrap(),
        0,
        "a journal was left"
    );
}

#[test]
fn sigterm_during_the_patched_compile_restores_the_tree() {
    interrupt_during_patched_compile(libc::SIGTERM);
}

#[test]
fn sigint_during_the_patched_compile_restores_the_tree() {
    interrupt_during_patched_compile(libc::SIGINT);
}

#[test]
fn the_next_build_removes_the_work_directory_of_a_killed_one() {
    use std::os::unix::process::CommandExt;
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = common::kernel::built_tree(Arch::X86_64).expect("x86_64 kernel tree");
    let repo = common::kernel::repo();
    let out_dir = std::env::temp_dir().join(format!("klpx-faults-kill-{}", std::process::id()));
    let build = |patch: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_klpx"));
        c.args(["build", "-s", tree.src.to_str().unwrap()])
            .args(["-O", tree.out.to_str().unwrap()])
            .args(["-o", out_dir.to_str().unwrap(), "-j", "1"])
            .arg(repo.join(patch));
        c
    };
    // Its own process group, killed whole as a closed terminal or an OOM kill of the session would.
    let mut child = build("tests/boot/header-edit.patch")
        .process_group(0)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("compile-patched") {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    child.wait().unwrap();
    let left = workdir_of(child.id());
    assert!(
        left.is_dir(),
        "SIGKILL leaves the work directory (nothing can run)"
    );
    let next = build("examples/proc-cmdline.patch").output().unwrap();
    let err = text(&next.stderr);
    assert_eq!(next.status.code(), Some(0), "{err}");
    assert!(
        err.contains("restored"),
        "the killed run's journal is restored: {err}"
    );
    assert!(
        !left.exists(),
        "the next build removes the killed run's work directory"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
