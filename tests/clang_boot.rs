//! A tiny x86_64 kernel built with clang 16 and the LLVM tools (`klpx kernel build --llvm`, with
//! Debian's /usr/lib/llvm-16/bin first in PATH) and clang's control-flow integrity (`--fragment
//! tests/kernel-corpus/kcfi.config`, CONFIG_CFI_CLANG), on which `klpx build --llvm` builds patches
//! of tests/boot/cases.yaml and `klpx verify` boots each with its check before, after and unloaded.
//! With kCFI every indirect call checks the type hash before its target and a mismatch oopses, so
//! the cases whose module the kernel calls through pointers (callbacks, shadow variable
//! constructors, the klp_patch structures) prove the module's preambles too. One tree serves all:
//! clang's code generation is what the other cases exercise, and kCFI leaves it as it is but for
//! the preambles.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;

use common::batch::{BootCase, Group, assert_result};
use common::cases::case;
use common::cli::{assert_exit, klpx_llvm, text};
use common::kernel::repo;

static SERIAL: Mutex<()> = Mutex::new(());

/// Where clang changes other functions than gcc: it keeps copy_signal out of line (nm of the clang
/// tree's kernel/fork.o: `t copy_signal`; gcc inlines it into copy_process).
const CLANG_CHANGED: &[(&str, &[&str])] = &[("fork-copy-process", &["copy_signal"])];

/// The clang-built kCFI tree: `klpx kernel build --llvm --fragment kcfi.config` (a no-op once
/// built).
fn tree() -> PathBuf {
    let fragment = repo().join("tests/kernel-corpus/kcfi.config");
    let args = [
        "kernel",
        "build",
        "--llvm",
        "--arch",
        "x86_64",
        "-j",
        "2",
        "--fragment",
        fragment.to_str().unwrap(),
    ];
    let out = klpx_llvm(&args);
    assert_exit(&out, 0, "klpx kernel build --llvm");
    let dir = PathBuf::from(text(&out.stdout).trim());
    let comment = std::fs::read(dir.join("vmlinux")).expect("the clang tree's vmlinux");
    assert!(
        comment.windows(5).any(|w| w == b"clang"),
        "vmlinux names no clang in its .comment"
    );
    dir
}

/// The cases, each with its test (`every_case_has_a_test`).
const CASES: &[&str] = &[
    "string-change",
    "new-function",
    "static-local",
    "syscall",
    "fork-copy-process",
    "shadow-variable",
    "callbacks",
    "kallsyms-names",
];

/// The shared boot of the cases.
static GROUP: Group = Group::new();

/// Builds case `name` on the clang kCFI tree (every case, on the first call) and boots its module
/// with the others in one guest; a case the shared boot did not reach boots alone.
fn run_case(name: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = tree();
    let config = std::fs::read_to_string(tree.join(".config")).unwrap();
    assert!(config.lines().any(|l| l == "CONFIG_CFI_CLANG=y"), "no kCFI");
    let on_tree = |args: &[String]| {
        let mut args = args.to_vec();
        args.extend(["--tree".into(), tree.display().to_string()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        klpx_llvm(&refs)
    };
    let names: Vec<String> = CASES.iter().map(|c| c.to_string()).collect();
    let result = GROUP.result(name, &names, |n| build_case(&tree, n), on_tree);
    assert_result(name, result, on_tree);
}

#[test]
fn every_case_has_a_test() {
    let src = std::fs::read_to_string(file!()).unwrap();
    for name in CASES {
        assert!(
            src.contains(&format!("run_case(\"{name}\")")),
            "case {name} has no test"
        );
    }
    assert_eq!(src.matches("    run_case(\"").count(), CASES.len());
}

/// Builds case `name` with `klpx build --llvm` on the clang tree and checks the functions it
/// changed; returns what to boot.
fn build_case(tree: &std::path::Path, name: &str) -> Option<BootCase> {
    let src = klpx::kernel::cache::debian_source().unwrap();
    let c = case(name);
    let patch = repo().join("tests/boot").join(&c.patch);
    let dir = std::env::temp_dir().join(format!("klpx-clang-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The name the checks expect (kallsyms-names greps for its module).
    let module = format!("livepatch-{name}");
    let out = klpx_llvm(&[
        "build",
        "--llvm",
        "-s",
        src.to_str().unwrap(),
        "-O",
        tree.to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
        "-n",
        &module,
        "--json",
        patch.to_str().unwrap(),
    ]);
    assert_exit(&out, 0, &format!("{name}: klpx build --llvm"));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut changed: Vec<String> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| o["changed_functions"].as_array().unwrap().clone())
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    changed.sort();
    let mut want = CLANG_CHANGED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| f.iter().map(|s| s.to_string()).collect())
        .or_else(|| c.changed_by_arch.get("x86_64").cloned())
        .unwrap_or_else(|| c.changed.clone());
    want.sort();
    assert_eq!(changed, want, "{name}: changed functions with clang");
    Some(BootCase {
        modules: vec![dir.join(format!("{module}.ko"))],
        check: c.check.into_iter().collect(),
        expect_before: c.before,
        expect_after: c.after,
        files: Vec::new(),
        scratch: Some(dir),
    })
}

#[test]
fn clang_string_change() {
    run_case("string-change");
}

#[test]
fn clang_new_function() {
    run_case("new-function");
}

#[test]
fn clang_static_local() {
    run_case("static-local");
}

#[test]
fn clang_syscall() {
    run_case("syscall");
}

#[test]
fn clang_copy_process() {
    run_case("fork-copy-process");
}

#[test]
fn clang_shadow_variable() {
    run_case("shadow-variable");
}

#[test]
fn clang_callbacks() {
    run_case("callbacks");
}

#[test]
fn clang_kallsyms_names() {
    run_case("kallsyms-names");
}
