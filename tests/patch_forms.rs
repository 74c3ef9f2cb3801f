//! Patches as people make them: `git diff` (with function headings, `-M`, new and deleted files, mode
//! changes, binary files), `git format-patch` mails and series, `diff -Nupr` with timestamps, `diff
//! -up`, quilt, CRLF line ends, hunks that need an offset or fuzz. Every patch here is written by the
//! real tool from edited copies of linux-source-6.12 files. GNU patch is the oracle: klpx must make
//! exactly the files `patch -p1` makes and report the same offset and fuzz for the same hunks. The
//! last tests build such patches into modules with `klpx build` on the tiny x86_64 tree.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::cli::{assert_exit, build_module, klpx, text};
use klpx::kernel::cache;
use klpx::patch::source::{DEFAULT_FUZZ, FileEdit, SourcePatch, plan_edits};
use klpx_arch::Arch;

/// Builds take a lock on the source tree: one at a time within this binary.
static SERIAL: Mutex<()> = Mutex::new(());

fn linux() -> PathBuf {
    let base = cache::root().join("src");
    std::fs::create_dir_all(&base).unwrap();
    let lock = std::fs::File::create(base.join(".unpack.lock")).unwrap();
    lock.lock().unwrap();
    cache::debian_source().expect("Debian's linux-source-6.12")
}

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}{}",
        dir.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A scratch directory with copies of `files` of linux-source-6.12 under `tree/`, committed to git.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str, files: &[&str]) -> Scratch {
        let dir = std::env::temp_dir().join(format!("klpx-forms-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tree = dir.join("tree");
        let src = linux();
        // The builds below patch the source tree for a while (under SERIAL): copy only while none
        // is running, or the copy could be of a patched file.
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        for f in files {
            let to = tree.join(f);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(src.join(f), &to).unwrap();
        }
        run(&tree, "git", &["init", "-q", "."]);
        run(&tree, "git", &["config", "user.email", "dev@example.org"]);
        run(&tree, "git", &["config", "user.name", "Dev"]);
        run(&tree, "git", &["add", "-A"]);
        run(&tree, "git", &["commit", "-qm", "6.12"]);
        Scratch { dir }
    }

    fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }

    /// A copy of the tree as it is now (for `diff -Nupr` and for GNU patch to apply to).
    fn copy(&self, name: &str) -> PathBuf {
        let to = self.dir.join(name);
        let _ = std::fs::remove_dir_all(&to);
        run(
            &self.dir,
            "cp",
            &["-a", self.tree().to_str().unwrap(), to.to_str().unwrap()],
        );
        let _ = std::fs::remove_dir_all(to.join(".git"));
        to
    }

    fn git(&self, args: &[&str]) -> String {
        run(&self.tree(), "git", args)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Replaces `from` by `to` in `file` (once; the text must be there).
fn edit(root: &Path, file: &str, from: &str, to: &str) {
    let p = root.join(file);
    let t = std::fs::read_to_string(&p).unwrap();
    assert!(t.contains(from), "{file} has no {from:?}");
    std::fs::write(&p, t.replacen(from, to, 1)).unwrap();
}

/// What GNU patch makes of `patches` on a copy of `base`: the resulting files and, per hunk that was
/// not exact, (file, hunk number, offset, fuzz) read from its messages.
fn gnu_patch(
    base: &Path,
    patches: &[&Path],
    fuzz: usize,
) -> (PathBuf, Vec<(String, usize, isize, usize)>) {
    let out = base.with_extension("gnu");
    let _ = std::fs::remove_dir_all(&out);
    run(
        base.parent().unwrap(),
        "cp",
        &["-a", base.to_str().unwrap(), out.to_str().unwrap()],
    );
    let mut placed = Vec::new();
    for p in patches {
        let said = run(
            &out,
            "patch",
            &[
                "-p1",
                "--no-backup-if-mismatch",
                "-F",
                &fuzz.to_string(),
                "-i",
                p.to_str().unwrap(),
            ],
        );
        let mut file = String::new();
        for line in said.lines() {
            if let Some(f) = line.strip_prefix("patching file ") {
                file = f.trim().to_string();
            }
            if let Some(rest) = line.strip_prefix("Hunk #") {
                let n: usize = rest.split(' ').next().unwrap().parse().unwrap();
                let fuzz = rest
                    .split("with fuzz ")
                    .nth(1)
                    .map_or(0, |f| f.split([' ', '.']).next().unwrap().parse().unwrap());
                let offset = rest
                    .split("(offset ")
                    .nth(1)
                    .map_or(0, |o| o.split(' ').next().unwrap().parse().unwrap());
                placed.push((file.clone(), n, offset, fuzz));
            }
        }
    }
    (out, placed)
}

/// Plans `patches` with klpx on `base` (nothing written) and checks the result against GNU patch:
/// the same contents for every file, the same hunks placed with the same offset and fuzz. Returns
/// klpx's plan.
fn same_as_gnu_patch(base: &Path, patches: &[&Path], fuzz: usize) -> Vec<FileEdit> {
    let parsed: Vec<SourcePatch> = patches
        .iter()
        .map(|p| SourcePatch::load(p).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let edits = plan_edits(&parsed, base, fuzz).unwrap_or_else(|e| panic!("{e}"));
    let (gnu, gnu_placed) = gnu_patch(base, patches, fuzz);
    for e in &edits {
        let theirs = std::fs::read(gnu.join(&e.rel)).ok();
        assert_eq!(
            e.after.as_deref().map(String::from_utf8_lossy),
            theirs.as_deref().map(String::from_utf8_lossy),
            "{}: klpx and GNU patch disagree",
            e.rel
        );
    }
    let mut ours: Vec<(String, usize, isize, usize)> = edits
        .iter()
        .flat_map(|e| {
            e.placements
                .iter()
                .map(|(_, p)| (e.rel.clone(), p.hunk, p.offset, p.fuzz))
        })
        .collect();
    let mut theirs = gnu_placed;
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs, "hunk placements (file, hunk, offset, fuzz)");
    let _ = std::fs::remove_dir_all(&gnu);
    edits
}

fn klpx_plan_error(base: &Path, patch: &Path, fuzz: usize) -> String {
    let sp = match SourcePatch::load(patch) {
        Ok(sp) => sp,
        Err(e) => return e.to_string(),
    };
    match plan_edits(&[sp], base, fuzz) {
        Ok(_) => panic!("{} applied", patch.display()),
        Err(e) => e.to_string(),
    }
}

const EXIT_C: &str = "kernel/exit.c";
const EXIT_EDIT_1: (&str, &str) = (
    "\tread_lock(&tasklist_lock);\n\tretval = will_become_orphaned_pgrp(task_pgrp(current), NULL);\n",
    "\tread_lock(&tasklist_lock);\n\tif (!jiffies)\n\t\tpr_info(\"klpx: orphaned pgrp check\\n\");\n\tretval = will_become_orphaned_pgrp(task_pgrp(current), NULL);\n",
);
const EXIT_EDIT_2: (&str, &str) = (
    "\tret = do_wait(&wo);\n\tif (ret > 0 && wo.wo_stat)\n",
    "\tret = do_wait(&wo);\n\tif (ret == -ERESTARTSYS)\n\t\tpr_info(\"klpx: kernel_wait interrupted\\n\");\n\tif (ret > 0 && wo.wo_stat)\n",
);

/// Makes kernel/exit.c under `root` look like a newer kernel's: three lines more near the top, and
/// kernel_wait's `int ret;` is `long ret;` (a context line of EXIT_EDIT_2's hunk).
fn make_newer(root: &Path) {
    edit(
        root,
        EXIT_C,
        "#include <linux/mm.h>\n",
        "#include <linux/mm.h>\n/*\n * newer\n */\n",
    );
    edit(
        root,
        EXIT_C,
        "\t\t.wo_flags\t= WEXITED,\n\t};\n\tint ret;\n",
        "\t\t.wo_flags\t= WEXITED,\n\t};\n\tlong ret;\n",
    );
}

/// Three commits over kernel/exit.c and fs/proc/cmdline.c, as a user's branch would have them.
fn commit_series(s: &Scratch, first_message: &str) {
    edit(&s.tree(), EXIT_C, EXIT_EDIT_1.0, EXIT_EDIT_1.1);
    s.git(&["commit", "-qam", first_message]);
    edit(
        &s.tree(),
        "fs/proc/cmdline.c",
        "\tseq_puts(m, saved_command_line);",
        "\tseq_puts(m, \"series \");\n\tseq_puts(m, saved_command_line);",
    );
    s.git(&["commit", "-qam", "proc: mark the command line"]);
    edit(&s.tree(), EXIT_C, EXIT_EDIT_2.0, EXIT_EDIT_2.1);
    s.git(&["commit", "-qam", "exit: note interrupted waits"]);
}

/// The series as `git format-patch` writes it into a directory, one mail per commit, in order.
fn format_patch_files(s: &Scratch) -> Vec<PathBuf> {
    let out = s.dir.join("mails");
    s.git(&["format-patch", "-q", "-o", out.to_str().unwrap(), "HEAD~3"]);
    let mut mails: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    mails.sort();
    mails
}

fn edit_exit(root: &Path) {
    edit(root, EXIT_C, EXIT_EDIT_1.0, EXIT_EDIT_1.1);
    edit(root, EXIT_C, EXIT_EDIT_2.0, EXIT_EDIT_2.1);
}

/// `git diff` writes `diff --git`, `index` and function headings; two hunks deep in kernel/exit.c.
#[test]
fn git_diff_with_function_headings() {
    let s = Scratch::new("gitdiff", &[EXIT_C]);
    let base = s.copy("base");
    edit_exit(&s.tree());
    let diff = s.git(&["diff"]);
    assert!(
        diff.contains("@@ int is_current_pgrp_orphaned(void)")
            || diff.contains("@@ static bool will_become_orphaned_pgrp"),
        "git wrote no function heading:\n{diff}"
    );
    assert!(
        diff.contains("@@ int kernel_wait(pid_t pid, int *stat)"),
        "{diff}"
    );
    let p = s.write("exit.patch", &diff);
    let edits = same_as_gnu_patch(&base, &[&p], DEFAULT_FUZZ);
    assert_eq!(edits.len(), 1);
    assert!(edits[0].placements.is_empty());
    assert_eq!(
        edits[0].after.as_deref(),
        Some(std::fs::read(s.tree().join(EXIT_C)).unwrap().as_slice())
    );
}

/// `git format-patch`: three commits touching two files, as one mbox (`--stdout`) and as three mails.
#[test]
fn format_patch_series_in_one_file_and_in_three() {
    let s = Scratch::new("series", &[EXIT_C, "fs/proc/cmdline.c"]);
    let base = s.copy("base");
    commit_series(
        &s,
        "exit: note orphaned pgrp checks\n\nA body line.\n---\nnot a separator in the body",
    );

    let mbox = s.git(&["format-patch", "--stdout", "HEAD~3"]);
    assert_eq!(mbox.matches("\nFrom: Dev <dev@example.org>").count(), 3);
    assert!(mbox.contains("\n-- \n2."), "no signature trailer:\n{mbox}");
    let one = s.write("series.mbox", &mbox);
    let edits = same_as_gnu_patch(&base, &[&one], DEFAULT_FUZZ);
    assert_eq!(edits.len(), 2);
    for e in &edits {
        assert_eq!(
            e.after.as_deref(),
            Some(std::fs::read(s.tree().join(&e.rel)).unwrap().as_slice()),
            "{}",
            e.rel
        );
    }

    let mails = format_patch_files(&s);
    assert_eq!(mails.len(), 3);
    let refs: Vec<&Path> = mails.iter().map(PathBuf::as_path).collect();
    let three = same_as_gnu_patch(&base, &refs, DEFAULT_FUZZ);
    assert_eq!(
        three.iter().map(|e| &e.after).collect::<Vec<_>>(),
        edits.iter().map(|e| &e.after).collect::<Vec<_>>()
    );
}

/// `diff -Nupr a b` between two directories: timestamps in the headers, function headings, a new
/// file without a newline at its end, a deleted file.
#[test]
fn diff_nupr_with_new_and_deleted_files() {
    let s = Scratch::new("nupr", &[EXIT_C, "fs/proc/cmdline.c", "fs/proc/version.c"]);
    let a = s.copy("a");
    edit_exit(&s.tree());
    std::fs::write(s.tree().join("kernel/klpx_note.h"), "#define KLPX_NOTE 1").unwrap();
    std::fs::remove_file(s.tree().join("fs/proc/version.c")).unwrap();
    let b = s.copy("b");
    let out = Command::new("diff")
        .args(["-Nupr", "a", "b"])
        .current_dir(&s.dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let diff = text(&out.stdout);
    assert!(diff.contains("\\ No newline at end of file"), "{diff}");
    assert!(
        diff.contains("--- a/kernel/exit.c\t20"),
        "no timestamp:\n{diff}"
    );
    assert!(
        diff.contains("@@ int kernel_wait(pid_t pid, int *stat)"),
        "{diff}"
    );
    let p = s.write("nupr.patch", &diff);
    let edits = same_as_gnu_patch(&a, &[&p], DEFAULT_FUZZ);
    let created = edits
        .iter()
        .find(|e| e.rel == "kernel/klpx_note.h")
        .unwrap();
    assert_eq!(created.before, None);
    assert_eq!(created.after.as_deref(), Some(&b"#define KLPX_NOTE 1"[..]));
    let deleted = edits.iter().find(|e| e.rel == "fs/proc/version.c").unwrap();
    assert_eq!(deleted.after, None);
    let _ = b;
}

/// `diff -up` of one file, and a quilt patch (`Index:` lines, `linux.orig/` prefixes).
#[test]
fn diff_up_and_quilt() {
    let s = Scratch::new("up", &[EXIT_C]);
    let base = s.copy("base");
    let up = diff_up_patch(&s);
    same_as_gnu_patch(&base, &[&up], DEFAULT_FUZZ);
    let quilt = quilt_patch(&s);
    let t = std::fs::read_to_string(&quilt).unwrap();
    assert!(t.starts_with("Index: "), "{t}");
    same_as_gnu_patch(&base, &[&quilt], DEFAULT_FUZZ);
}

/// `diff -up` of kernel/exit.c in the scratch tree against a copy with `edit_exit`, relabelled a/ and
/// b/ for `-p1` as a user does with `--label`.
fn diff_up_patch(s: &Scratch) -> PathBuf {
    let old = s.copy("up-old");
    let new = s.copy("up-new");
    edit_exit(&new);
    let out = Command::new("diff")
        .args([
            "-up",
            "--label",
            "a/kernel/exit.c",
            "--label",
            "b/kernel/exit.c",
        ])
        .arg(old.join(EXIT_C))
        .arg(new.join(EXIT_C))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    s.write("up.patch", &text(&out.stdout))
}

/// The same change made as a quilt patch, in a fresh copy of the scratch tree.
fn quilt_patch(s: &Scratch) -> PathBuf {
    let q = s.copy("linux");
    let quilt = |args: &[&str]| {
        let out = Command::new("quilt")
            .args(args)
            .current_dir(&q)
            .env("QUILT_PATCHES", "patches")
            .env("QUILT_REFRESH_ARGS", "")
            .env("QUILT_DIFF_ARGS", "")
            .output()
            .expect("quilt");
        assert!(
            out.status.success(),
            "quilt {args:?}: {}",
            text(&out.stderr)
        );
    };
    quilt(&["new", "exit-notes.patch"]);
    quilt(&["add", EXIT_C]);
    edit_exit(&q);
    quilt(&["refresh", "-p", "1"]);
    q.join("patches/exit-notes.patch")
}

/// A two-hunk patch written against a tree with three more lines at the top applies 3 lines up;
/// a fix written for a newer kernel whose context differs in one outer line needs fuzz 1; a strict
/// `--fuzz 0` refuses it naming the hunk; applying a patch twice says it is already applied.
#[test]
fn offset_fuzz_and_already_applied() {
    let s = Scratch::new("offset", &[EXIT_C]);
    let base = s.copy("base");
    make_newer(&s.tree());
    s.git(&["commit", "-qam", "newer kernel"]);
    edit(&s.tree(), EXIT_C, EXIT_EDIT_1.0, EXIT_EDIT_1.1);
    let newer_fix = s.write("offset.patch", &s.git(&["diff"]));
    let edits = same_as_gnu_patch(&base, &[&newer_fix], DEFAULT_FUZZ);
    assert_eq!(edits[0].placements.len(), 1);
    assert_eq!(edits[0].placements[0].1.offset, -3);

    s.git(&["checkout", "-q", "."]);
    // kernel_wait's change: its first context line is `long ret;` here, `int ret;` in 6.12.
    let t = std::fs::read_to_string(s.tree().join(EXIT_C)).unwrap();
    let t = t.replacen(
        "\tlong ret;\n\n\tret = do_wait(&wo);\n",
        "\tlong ret;\n\n\tret = do_wait(&wo);\n\tif (ret == -ERESTARTSYS)\n\t\tpr_debug(\"klpx\\n\");\n",
        1,
    );
    std::fs::write(s.tree().join(EXIT_C), t).unwrap();
    let two = s.write("fuzz.patch", &s.git(&["diff"]));
    let edits = same_as_gnu_patch(&base, &[&two], DEFAULT_FUZZ);
    let fuzz: Vec<usize> = edits[0].placements.iter().map(|(_, p)| p.fuzz).collect();
    assert_eq!(fuzz, [1], "{:?}", edits[0].placements);
    let e = klpx_plan_error(&base, &two, 0);
    assert!(
        e.contains("kernel/exit.c: hunk #1 `@@ -")
            && e.contains(" @@ int kernel_wait(pid_t pid, int *stat)` does not apply")
            && e.contains("--fuzz 0"),
        "{e}"
    );

    // The same fix applied to a tree that already has it.
    let fixed = s.copy("fixed");
    let e = klpx_plan_error(&fixed, &two, DEFAULT_FUZZ);
    assert!(e.contains("already in the file"), "{e}");
}

/// A patch with CRLF line ends (a mail client's or an editor's) applies to the LF source, and klpx
/// says it stripped them, as GNU patch does.
#[test]
fn crlf_patch_on_lf_source() {
    let s = Scratch::new("crlf", &[EXIT_C]);
    let base = s.copy("base");
    edit_exit(&s.tree());
    let p = s.write("crlf.patch", &s.git(&["diff"]).replace('\n', "\r\n"));
    let edits = same_as_gnu_patch(&base, &[&p], DEFAULT_FUZZ);
    assert_eq!(
        edits[0].after.as_deref(),
        Some(std::fs::read(s.tree().join(EXIT_C)).unwrap().as_slice())
    );
    let sp = SourcePatch::load(&p).unwrap();
    assert!(sp.notes[0].contains("carriage returns"), "{:?}", sp.notes);
}

/// Renames (with `-M`), binary files and mode-only changes: renames and binaries are refused naming
/// the file; a mode change is ignored beside real changes.
#[test]
fn renames_binaries_and_modes() {
    let s = Scratch::new("rename", &[EXIT_C, "fs/proc/cmdline.c"]);
    let base = s.copy("base");
    s.git(&["mv", "fs/proc/cmdline.c", "fs/proc/cmdline2.c"]);
    let pure = s.write("rename.patch", &s.git(&["diff", "-M", "--cached"]));
    let e = klpx_plan_error(&base, &pure, DEFAULT_FUZZ);
    assert!(
        e.contains("fs/proc/cmdline.c -> fs/proc/cmdline2.c") && e.contains("rename"),
        "{e}"
    );
    edit(
        &s.tree(),
        "fs/proc/cmdline2.c",
        "saved_command_line",
        "saved_command_line ",
    );
    s.git(&["add", "-A"]);
    let changed = s.write("rename2.patch", &s.git(&["diff", "-M", "--cached"]));
    let e = klpx_plan_error(&base, &changed, DEFAULT_FUZZ);
    assert!(e.contains("fs/proc/cmdline2.c"), "{e}");
    s.git(&["reset", "-q", "--hard"]);

    std::fs::write(s.tree().join("kernel/blob.bin"), [0u8, 1, 2, 0, 255]).unwrap();
    s.git(&["add", "-A"]);
    let bin = s.write("binary.patch", &s.git(&["diff", "--cached", "--binary"]));
    let e = klpx_plan_error(&base, &bin, DEFAULT_FUZZ);
    assert!(e.contains("kernel/blob.bin: binary diff"), "{e}");
    s.git(&["reset", "-q", "--hard"]);

    edit_exit(&s.tree());
    run(&s.tree(), "chmod", &["+x", "fs/proc/cmdline.c"]);
    let modes = s.write("modes.patch", &s.git(&["diff"]));
    assert!(text(&std::fs::read(&modes).unwrap()).contains("new mode 100755"));
    let edits = same_as_gnu_patch(&base, &[&modes], DEFAULT_FUZZ);
    assert_eq!(
        edits.iter().map(|e| e.rel.as_str()).collect::<Vec<_>>(),
        [EXIT_C]
    );
}

// ---- Through `klpx build` on the tiny x86_64 tree ----

fn tree() -> klpx::kernel::tree::KernelTree {
    common::kernel::built_tree(Arch::X86_64).unwrap_or_else(|e| panic!("x86_64 tree: {e:#}"))
}

/// Runs `klpx build --json` with `patches` on the tiny tree; returns the exit status, the report and
/// stderr, and checks that the source tree is as it was. Holds SERIAL throughout: the build patches
/// the source tree, and taking the tree takes its lock.
fn build(
    name: &str,
    patches: &[&Path],
    extra: &[&str],
) -> (Option<i32>, serde_json::Value, String) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = tree();
    let files = [EXIT_C, "fs/proc/cmdline.c", "fs/proc/version.c"];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(tree.src.join(f)).unwrap())
        .collect();
    let out_dir =
        std::env::temp_dir().join(format!("klpx-forms-out-{name}-{}", std::process::id()));
    let mut options = vec!["--json"];
    options.extend_from_slice(extra);
    let out = build_module(
        &tree,
        &out_dir,
        &format!("livepatch-{name}"),
        &options,
        patches,
    );
    for (f, b) in files.iter().zip(&before) {
        assert_eq!(
            &std::fs::read(tree.src.join(f)).unwrap(),
            b,
            "{name}: {f} left modified"
        );
    }
    let report = serde_json::from_str(&text(&out.stdout)).unwrap_or(serde_json::Value::Null);
    (out.status.code(), report, text(&out.stderr))
}

fn changed(report: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = report["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| o["changed_functions"].as_array().unwrap().clone())
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// A three-commit `git format-patch` series over kernel/exit.c and fs/proc/cmdline.c, in one mbox:
/// built, booted, the change seen in /proc/cmdline; then the same series as three mail files.
#[test]
fn build_format_patch_series() {
    let s = Scratch::new("build-series", &[EXIT_C, "fs/proc/cmdline.c"]);
    commit_series(&s, "exit: note orphaned pgrp checks");
    let mbox = s.write(
        "series.mbox",
        &s.git(&["format-patch", "--stdout", "HEAD~3"]),
    );
    let (code, report, stderr) = build("series", &[&mbox], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        changed(&report),
        [
            "cmdline_proc_show",
            "is_current_pgrp_orphaned",
            "kernel_wait"
        ]
    );
    let tree = {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        tree()
    };
    let ko = std::env::temp_dir()
        .join(format!("klpx-forms-out-series-{}", std::process::id()))
        .join("livepatch-series.ko");
    let v = klpx(&[
        "verify",
        ko.to_str().unwrap(),
        "--tree",
        tree.out.to_str().unwrap(),
        "--check",
        "cat /proc/cmdline",
        "--expect-before",
        "console=",
        "--expect-after",
        "series console=",
    ]);
    assert_exit(&v, 0, "klpx verify of the series");

    let mails = format_patch_files(&s);
    let refs: Vec<&Path> = mails.iter().map(PathBuf::as_path).collect();
    let (code, report, stderr) = build("series3", &refs, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        changed(&report),
        [
            "cmdline_proc_show",
            "is_current_pgrp_orphaned",
            "kernel_wait"
        ]
    );
}

/// `diff -Nupr` at an offset, a newer kernel's fix that needs fuzz 1 (refused with `--fuzz 0`), a
/// CRLF `git diff`, a `diff -up` and a quilt patch, each built into a module.
#[test]
fn build_offset_fuzz_crlf() {
    let s = Scratch::new("build-forms", &[EXIT_C]);
    make_newer(&s.tree());
    let a = s.copy("a");
    edit_exit(&s.tree());
    let b = s.copy("b");
    let out = Command::new("diff")
        .args(["-Nupr", "a", "b"])
        .current_dir(&s.dir)
        .output()
        .unwrap();
    let p = s.write("newer.patch", &text(&out.stdout));
    let _ = (a, b);

    let (code, report, stderr) = build("newer", &[&p], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        changed(&report),
        ["is_current_pgrp_orphaned", "kernel_wait"]
    );
    let notes = report["notes"].to_string();
    assert!(
        notes.contains("kernel/exit.c: hunk #1 applied at line ")
            && notes.contains(" (offset -3 lines)")
            && notes.contains(" (offset -3 lines, fuzz 1)"),
        "{notes}"
    );

    let (code, _, stderr) = build("strict", &[&p], &["--fuzz", "0"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("hunk #2") && stderr.contains("does not apply"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let t = Scratch::new("build-crlf", &[EXIT_C]);
    edit_exit(&t.tree());
    let crlf = t.write("crlf.patch", &t.git(&["diff"]).replace('\n', "\r\n"));
    let u = Scratch::new("build-up", &[EXIT_C]);
    let up = diff_up_patch(&u);
    let quilt = quilt_patch(&u);
    for (name, patch) in [("crlf", &crlf), ("up", &up), ("quilt", &quilt)] {
        let (code, report, stderr) = build(name, &[patch], &[]);
        assert_eq!(code, Some(0), "{name}: {stderr}");
        assert_eq!(
            changed(&report),
            ["is_current_pgrp_orphaned", "kernel_wait"],
            "{name}"
        );
    }
}
