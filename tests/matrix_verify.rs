//! `klpx matrix --verify` and `klpx release --verify`: the modules of the default matrix booted in
//! qemu on each architecture's own tiny kernel, all at once, with a boot case's checks; arm64
//! (no CONFIG_LIVEPATCH in 6.12) checked against its vmlinux instead. A module that fails its
//! checks is not packaged by `klpx release` unless `--package-unverified` says so.

mod common;

use std::path::PathBuf;

use common::cli::{assert_exit, klpx, text};
use klpx_arch::Arch;
use serde_json::Value;

/// The tests here patch the one shared source tree, which one klpx at a time may do.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("klpx-mverify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn case_patch(case: &common::cases::Case) -> String {
    common::kernel::repo()
        .join("tests/boot")
        .join(&case.patch)
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn matrix_verifies_every_architecture() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    for a in Arch::ALL {
        common::kernel::built_tree(a).unwrap();
    }
    let case = common::cases::case("string-change");
    let (check, before, after) = (
        case.check.clone().unwrap(),
        case.before.clone().unwrap(),
        case.after.clone().unwrap(),
    );
    let dir = scratch("matrix");
    let md = dir.join("report.md");
    let patch = case_patch(&case);
    let out = klpx(&[
        "matrix",
        &patch,
        "-n",
        "livepatch-mverify",
        "-o",
        dir.join("out").to_str().unwrap(),
        "--json",
        "--markdown",
        md.to_str().unwrap(),
        "--verify",
        "--check",
        &check,
        "--expect-before",
        &before,
        "--expect-after",
        &after,
    ]);
    assert_exit(&out, 0, "klpx matrix --verify");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        let arch = row["arch"].as_str().unwrap();
        let v = &row["verify"];
        assert_eq!(v["passed"], true, "{arch}: {v}");
        if arch == "arm64" {
            assert_eq!(v["outcome"], "pass (without loading)");
            assert!(v["before"].as_array().unwrap().is_empty());
            continue;
        }
        assert_eq!(v["outcome"], "pass", "{arch}");
        // The guest's own /proc/cmdline, before the livepatch and with it.
        let b = v["before"][0].as_str().unwrap();
        let a = v["after"][0].as_str().unwrap();
        assert!(b.contains(&before) && !b.contains(&after), "{arch}: {b}");
        assert!(a.contains(&after), "{arch}: {a}");
    }
    let kinds: Vec<&str> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"verify"), "{kinds:?}");
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(md.contains("| verify | before | after |"), "{md}");
    assert!(md.contains("`klpx console="), "{md}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A check that fails with the livepatch loaded: `klpx release --verify` does not package that
/// architecture (exit 3), and `--package-unverified` packages it with the failure recorded.
#[test]
fn release_does_not_package_a_module_that_failed_verification() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    common::kernel::built_tree(Arch::X86_64).unwrap();
    let case = common::cases::case("string-change");
    let patch = case_patch(&case);
    let dir = scratch("release");
    let release = |out: &str, extra: &[&str]| {
        let out = dir.join(out);
        let mut args = vec![
            "release",
            &patch,
            "-n",
            "livepatch-unverified",
            "--version",
            "1",
            "--arches",
            "x86_64",
            "--verify",
            "--check",
            "cat /proc/cmdline",
            "--expect-after",
            "text the patch never prints",
        ];
        let o = out.to_str().unwrap().to_string();
        args.extend(["-o", &o]);
        args.extend(extra);
        let r = klpx(&args);
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap())
                .unwrap_or_else(|e| panic!("{e}: {}", text(&r.stderr)));
        (r, out, manifest)
    };
    let (r, out, manifest) = release("gated", &[]);
    assert_exit(&r, 3, "release --verify with a failing check");
    let x86 = &manifest["arches"][0];
    assert_eq!(x86["status"], "verify failed");
    assert_eq!(x86["verify"]["passed"], false);
    // The check ran, and showed the livepatch working: only the expectation was wrong.
    assert!(
        x86["verify"]["after"][0]
            .as_str()
            .unwrap()
            .contains("klpx console="),
        "{x86}"
    );
    assert!(x86["packages"].as_array().unwrap().is_empty());
    assert!(!out.join("x86_64").exists());

    let (r, out, manifest) = release("forced", &["--package-unverified"]);
    assert_exit(
        &r,
        3,
        "--package-unverified still says the verification failed",
    );
    let x86 = &manifest["arches"][0];
    assert_eq!(x86["status"], "module");
    assert_eq!(x86["verify"]["passed"], false);
    assert_eq!(x86["packages"].as_array().unwrap().len(), 2);
    for p in x86["packages"].as_array().unwrap() {
        assert!(out.join(p.as_str().unwrap()).is_file());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
