//! Bad input to the commands that start long work (`build`, `matrix`, `kernel`, `verify`): each ends
//! in exit status 2 with one line naming the file or option, before any kernel build, qemu boot or
//! write, and leaves nothing behind. Uses the tiny x86_64 tree the other suites build and cache.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;

use common::cli::{klpx, text};
use klpx_arch::Arch;

/// The tests share the cached source tree (its lock refuses a second klpx at a time).
static SERIAL: Mutex<()> = Mutex::new(());

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("klpx-bad-input-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs klpx and checks the bad-input contract: exit 2, one line on stderr containing `needle`.
fn refused(args: &[&str], needle: &str) {
    let out = klpx(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: wanted {needle:?} in {err}");
}

/// The work directories of this user's builds.
fn workdirs() -> Vec<PathBuf> {
    std::fs::read_dir(klpx::kernel::cache::root().join("build"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn build_checks_options_against_the_tree_before_any_work() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = common::kernel::built_tree(Arch::X86_64).expect("x86_64 kernel tree");
    let (src, obj) = (tree.src.to_str().unwrap(), tree.out.to_str().unwrap());
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let patch = patch.to_str().unwrap();
    let dir = scratch("build");
    let out = dir.join("out");
    let out_s = out.to_str().unwrap();
    let before = workdirs();
    let base = ["build", "-s", src, "-O", obj, "-o", out_s];
    let cases: &[(&[&str], &str)] = &[
        // Once accepted: host objects compiled with s390 flags.
        (&["--arch", "s390"], "is configured for x86_64"),
        // Once rewritten silently to "------etc-evil".
        (&["-n", "../../etc/evil"], "not a module name"),
        (&["-n", "with space"], "not a module name"),
        (&["-n", "ünïcode"], "not a module name"),
        (
            &["--cross", "/nonexistent/cc-"],
            "/nonexistent/cc-gcc is not installed",
        ),
        (&["-j", "0"], "-j 0"),
    ];
    for (extra, needle) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args.push(patch);
        refused(&args, needle);
    }
    // -o naming a file, not a directory.
    let file = dir.join("a-file");
    std::fs::write(&file, "mine\n").unwrap();
    refused(
        &[
            "build",
            "-s",
            src,
            "-O",
            obj,
            "-o",
            file.to_str().unwrap(),
            patch,
        ],
        "not a directory",
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine\n");
    // A file that is no patch.
    let notes = dir.join("notes.patch");
    std::fs::write(&notes, "these are notes, not a patch\n").unwrap();
    let notes_s = notes.to_str().unwrap();
    let out = klpx(&["build", "-s", src, "-O", obj, "-o", out_s, notes_s]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(notes_s), "{}", text(&out.stderr));
    assert!(!dir.join("out").exists(), "nothing is written");
    assert_eq!(workdirs(), before, "no work directory is left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unbuilt_tree_is_not_built_for_a_patch_that_does_not_apply() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = common::kernel::tree(Arch::X86_64).expect("x86_64 kernel tree");
    let dir = scratch("unbuilt");
    // A configured tree that was never built: klpx would build it whole (minutes) first.
    let obj = dir.join("obj");
    std::fs::create_dir_all(&obj).unwrap();
    std::fs::copy(tree.out.join(".config"), obj.join(".config")).unwrap();
    let patch = common::patches::patch_for_another_version(&tree.src, &dir);
    let started = std::time::Instant::now();
    refused(
        &[
            "build",
            "-s",
            tree.src.to_str().unwrap(),
            "-O",
            obj.to_str().unwrap(),
            "-o",
            dir.join("out").to_str().unwrap(),
            patch.to_str().unwrap(),
        ],
        "fs/proc/cmdline.c",
    );
    let entries: Vec<_> = std::fs::read_dir(&obj).unwrap().flatten().collect();
    assert_eq!(entries.len(), 1, "only .config is there: make never ran");
    eprintln!("refused in {:?}", started.elapsed());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn matrix_checks_its_inputs_before_building_any_tree() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = common::kernel::tree(Arch::X86_64).expect("x86_64 kernel tree");
    let dir = scratch("matrix");
    let good = common::kernel::repo().join("examples/proc-cmdline.patch");
    let good = good.to_str().unwrap();
    // The output trees of this matrix do not exist: any kernel build would create them.
    let trees = dir.join("trees");
    let yaml = |extra: &str| {
        let f = dir.join("m.yaml");
        std::fs::write(
            &f,
            format!(
                "source: {}\noutput: {}\narches:\n  - arch: x86_64\n{extra}",
                tree.src.display(),
                trees.display()
            ),
        )
        .unwrap();
        f
    };
    let plain = yaml("");
    let plain = plain.to_str().unwrap();
    // Modules would go here, never into the current directory.
    let out = dir.join("out");
    let out = out.to_str().unwrap();
    refused(
        &[
            "matrix",
            "-o",
            out,
            "-f",
            plain,
            "-n",
            "../../etc/evil",
            good,
        ],
        "not a module name",
    );
    refused(
        &["matrix", "-o", out, "-f", plain, "--markdown", good, good],
        "is the input",
    );
    let missing = yaml("    fragments: [no-such.config]\n");
    refused(
        &["matrix", "-o", out, "-f", missing.to_str().unwrap(), good],
        "no-such.config",
    );
    let plain = yaml("");
    let patch = common::patches::patch_for_another_version(&tree.src, &dir);
    refused(
        &[
            "matrix",
            "-o",
            out,
            "-f",
            plain.to_str().unwrap(),
            patch.to_str().unwrap(),
        ],
        "fs/proc/cmdline.c",
    );
    let deep = dir.join("deep.yaml");
    std::fs::write(
        &deep,
        format!("source: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .unwrap();
    refused(
        &["matrix", "-o", out, "-f", deep.to_str().unwrap(), good],
        "nested more than",
    );
    assert!(!trees.exists(), "no kernel tree was started");
    assert!(!dir.join("out").exists(), "no module was written");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kernel_clean_removes_only_trees_klpx_made() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = common::kernel::tree(Arch::X86_64).expect("x86_64 kernel tree");
    let dir = scratch("clean");
    let mine = dir.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("thesis.tex"), "years of work\n").unwrap();
    let home = std::env::var("HOME").unwrap();
    let cache = klpx::kernel::cache::root();
    for (target, needle) in [
        (mine.to_str().unwrap(), "no .klpx-tree marker"),
        ("/", "is /"),
        (home.as_str(), home.as_str()),
        (cache.to_str().unwrap(), cache.to_str().unwrap()),
        (tree.src.to_str().unwrap(), "kernel source tree"),
    ] {
        refused(&["kernel", "clean", "-O", target], needle);
    }
    assert!(mine.join("thesis.tex").is_file());
    assert!(tree.src.join("Makefile").is_file());
    // A tree klpx starts (a real `klpx kernel config`) is klpx's to remove.
    let new = dir.join("new-tree");
    let out = klpx(&[
        "kernel",
        "config",
        "--arch",
        "x86_64",
        "-O",
        new.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(new.join(".config").is_file());
    let out = klpx(&["kernel", "clean", "-O", new.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!new.exists());
    // --cross naming no compiler is refused before a tree is started.
    refused(
        &[
            "kernel",
            "config",
            "-O",
            new.to_str().unwrap(),
            "--cross",
            "/nonexistent-",
        ],
        "/nonexistent-gcc is not installed",
    );
    assert!(!new.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn verify_boots_only_a_kernel_image_of_the_architecture() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch("verify");
    let ko = dir.join("x.ko");
    std::fs::write(&ko, "not yet read\n").unwrap();
    let ko = ko.to_str().unwrap();
    let text_file = dir.join("bzImage");
    std::fs::write(&text_file, "a text file named like a kernel\n").unwrap();
    refused(
        &[
            "verify",
            "--arch",
            "x86_64",
            "--kernel",
            text_file.to_str().unwrap(),
            ko,
        ],
        "not a bootable x86_64 kernel",
    );
    // A real kernel of another architecture (the tiny arm64 tree's Image, built here when no
    // other test has yet), and a tree without the image (ppc64le boots vmlinux).
    let arm = common::kernel::built_tree(Arch::Arm64)
        .expect("the arm64 kernel tree")
        .out
        .join("arch/arm64/boot/Image");
    assert!(arm.is_file(), "{}: no Image after the build", arm.display());
    refused(
        &[
            "verify",
            "--arch",
            "x86_64",
            "--kernel",
            arm.to_str().unwrap(),
            ko,
        ],
        "not a bootable x86_64 kernel",
    );
    refused(
        &[
            "verify",
            "--arch",
            "ppc64le",
            "--tree",
            dir.to_str().unwrap(),
            ko,
        ],
        "vmlinux",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn jobs_are_bounded() {
    refused(&["kernel", "build", "-j", "0"], "-j 0");
    refused(&["demo", "-j", "0"], "-j 0");
}

/// `--llvm` with no `clang` in PATH (Debian installs it as clang-16 unless its bin directory comes
/// first) is said in one line with what to do, before Debian's tree is prepared.
#[test]
fn llvm_without_clang_in_path_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch("llvm");
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args([
            "build", "--distro", "debian", "--llvm", "--arch", "x86_64", "--json",
        ])
        .arg("-o")
        .arg(dir.join("out"))
        .arg(&patch)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env_remove("KLPX_ARCHES")
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--llvm: clang is not in PATH"), "{err}");
    assert!(!dir.join("out").exists(), "an output directory was made");
    let _ = std::fs::remove_dir_all(&dir);
}
