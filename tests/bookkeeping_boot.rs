//! Kernel bookkeeping a patch touches, booted: the tiny x86_64 kernel with PRINTK_INDEX and UBSAN
//! (`klpx kernel build --fragment tests/kernel-corpus/bookkeeping.config`), and a patch
//! (tests/boot/bookkeeping-ubsan-printk.patch, `diff -Nup`) whose new code has a printk (a
//! `.printk_index` entry) and an array read UBSAN checks (`.data..Lubsan_data*`, writable: the kernel
//! sets a bit in it once the check has reported). The module carries its own copy of the UBSAN data
//! and leaves the printk index to the running kernel; in the guest the fifth read of /proc/cmdline
//! indexes past the array, and the report must name the patched file's own line, print the type
//! from the module's type descriptor, and come once only (the bit was set in the module's copy).
//! The same with clang 16 (`--llvm`), whose check data is an unnamed label (`.data..L__unnamed_1`),
//! told by its start: a pointer to the source file's name.

mod common;

use std::path::PathBuf;

use common::cli::{assert_exit, klpx, klpx_llvm, text};
use common::kernel::repo;

/// The array read is line 17 of the patched fs/proc/cmdline.c: the hunk `@@ -5,8 +5,16 @@`
/// starts at line 5, and `klpx_slots[slot]` is its thirteenth line.
const REPORT: &str = "fs/proc/cmdline.c:17:";

/// Ten reads (two of them past the array), then what the kernel logged, cleared for the next check.
const CHECK: &str = "for i in 1 2 3 4 5 6 7 8 9 10; do cat /proc/cmdline >/dev/null; done; \
     dmesg -c >/tmp/log; grep -E 'klpx: cmdline read|UBSAN:|out of range' /tmp/log; \
     echo ubsan-reports=$(grep -c UBSAN: /tmp/log)";

/// What differs between the compilers: how the UBSAN check's data section is named (gcc names it,
/// clang leaves it an unnamed label), and how the type is spelled in the report.
struct Compiler {
    /// `klpx kernel build` and `klpx build` options.
    options: &'static [&'static str],
    /// The writable section holding the check's data in the module.
    site_section: &'static str,
    /// The type line of the report.
    type_line: &'static str,
}

const GCC: Compiler = Compiler {
    options: &[],
    site_section: ".data..Lubsan_data",
    type_line: "index 4 is out of range for type 'unsigned int [4]'",
};

/// Debian's clang 16 (`--llvm`, /usr/lib/llvm-16/bin first in PATH as the README says).
const CLANG: Compiler = Compiler {
    options: &["--llvm"],
    site_section: ".data..L__unnamed_",
    type_line: "index 4 is out of range for type 'unsigned int[4]'",
};

#[test]
fn ubsan_data_and_printk_index_boot() {
    run(&GCC);
}

#[test]
fn ubsan_data_and_printk_index_boot_clang() {
    run(&CLANG);
}

/// Both builds patch the one shared source tree, whose lock a second klpx does not wait for.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(cc: &Compiler) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let fragment = repo().join("tests/kernel-corpus/bookkeeping.config");
    let fragment = fragment.to_str().unwrap();
    let mut args = vec!["kernel", "build", "--arch", "x86_64", "-j", "2"];
    args.extend(cc.options);
    args.extend(["--fragment", fragment]);
    let built = klpx_llvm(&args);
    assert_exit(&built, 0, "klpx kernel build --fragment");
    let tree = PathBuf::from(text(&built.stdout).trim());
    let config = std::fs::read_to_string(tree.join(".config")).unwrap();
    for option in ["CONFIG_PRINTK_INDEX=y", "CONFIG_UBSAN_BOUNDS=y"] {
        assert!(config.lines().any(|l| l == option), "{option} not set");
    }
    let src = klpx::kernel::cache::debian_source().unwrap();
    let patch = repo().join("tests/boot/bookkeeping-ubsan-printk.patch");
    let dir = std::env::temp_dir().join(format!(
        "klpx-bookkeeping-{}-{}",
        cc.options.len(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let (src, tree_s, dir_s) = (
        src.display().to_string(),
        tree.display().to_string(),
        dir.display().to_string(),
    );
    let mut args = vec![
        "build",
        "--arch",
        "x86_64",
        "-s",
        &src,
        "-O",
        &tree_s,
        "-o",
        &dir_s,
        "-n",
        "livepatch-bookkeeping",
        "--json",
    ];
    args.extend(cc.options);
    let patch_s = patch.display().to_string();
    args.push(&patch_s);
    let out = klpx_llvm(&args);
    assert_exit(&out, 0, "klpx build");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["objects"][0]["changed_functions"],
        serde_json::json!(["cmdline_proc_show"]),
        "{report}"
    );
    let ko = dir.join("livepatch-bookkeeping.ko");
    // What the module carries, read with readelf: the UBSAN data, writable; no printk index.
    let sections = common::cli::tool("readelf", &["-SW", ko.to_str().unwrap()]);
    let ubsan: Vec<&str> = sections
        .lines()
        .filter(|l| l.contains(cc.site_section) && !l.contains(".rela"))
        .collect();
    assert_eq!(ubsan.len(), 1, "one UBSAN check's data:\n{sections}");
    assert!(ubsan[0].contains(" WA "), "writable: {}", ubsan[0]);
    assert!(!sections.contains(".printk_index"), "{sections}");

    let v = klpx(&[
        "verify",
        ko.to_str().unwrap(),
        "--tree",
        tree.to_str().unwrap(),
        "--check",
        CHECK,
        "--expect-before",
        "ubsan-reports=0",
        "--expect-after",
        "ubsan-reports=1",
        "--json",
    ]);
    let result: serde_json::Value = serde_json::from_slice(&v.stdout)
        .unwrap_or_else(|e| panic!("verify --json: {e}: {}", text(&v.stderr)));
    assert_exit(&v, 0, &format!("klpx verify: {}", result["reason"]));
    let after = result["checks"][0]["after"]["output"].as_str().unwrap();
    for want in [
        "klpx: cmdline read 10",
        "UBSAN: array-index-out-of-bounds in",
        REPORT,
        cc.type_line,
        "ubsan-reports=1",
    ] {
        assert!(after.contains(want), "{want:?} not in:\n{after}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
