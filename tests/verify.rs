//! `klpx verify` on a real kernel: the tiny x86_64 tree in the cache, booted in qemu with the kernel's
//! sample livepatch (samples/livepatch/livepatch-sample.ko), which makes /proc/cmdline read
//! "this has been live patched".

mod common;

use common::cli::{klpx, text};

use std::path::PathBuf;

use klpx_arch::Arch;

const PATCHED: &str = "this has been live patched";

/// What each workload run prints: its size (shells forked and exec'd) is pinned here, so that a
/// workload made smaller, or one that stops early and still exits 0, fails this test.
const WORKLOAD_DONE: &str =
    "workload: 150 shells forked and exec'd (each running cat), /proc read\n";

/// The guest's steps in the order its console shows them: `BEGIN <tag>` of each captured command,
/// `TRANSITION <patch>` when a transition ended, `BOOT` and `DONE`.
fn steps(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.find("KLPX:").map(|at| &l[at + "KLPX:".len()..]))
        .filter_map(|m| {
            let w: Vec<&str> = m.split_whitespace().collect();
            match w.as_slice() {
                ["BEGIN", tag, ..] | ["TRANSITION", tag, ..] => Some(format!("{} {tag}", w[0])),
                ["BOOT", ..] | ["DONE"] => Some(w[0].to_string()),
                _ => None,
            }
        })
        .collect()
}

/// The report lists `runs` (transition, livepatch) as its workload runs, in that order, each one
/// having exited 0 after printing [`WORKLOAD_DONE`].
fn assert_workload_runs(r: &serde_json::Value, runs: &[(&str, &str)]) {
    let listed = r["workloads"]
        .as_array()
        .unwrap_or_else(|| panic!("no workloads in {r}"));
    let seen: Vec<(&str, &str)> = listed
        .iter()
        .map(|w| {
            (
                w["transition"].as_str().unwrap_or(""),
                w["patch"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(seen, runs);
    for w in listed {
        assert_eq!(w["result"]["status"], 0, "{w}");
        assert_eq!(w["result"]["output"], WORKLOAD_DONE, "{w}");
    }
}

/// The built x86_64 tree and its sample livepatch (the tree is built on first use and cached).
fn sample() -> (PathBuf, PathBuf) {
    let tree = common::kernel::built_tree(Arch::X86_64).expect("building the x86_64 tree");
    let ko = tree.out.join("samples/livepatch/livepatch-sample.ko");
    assert!(ko.is_file(), "{} was not built", ko.display());
    (tree.out, ko)
}

#[test]
fn sample_livepatch_changes_proc_cmdline_and_comes_off_again() {
    let (tree, ko) = sample();
    let out = klpx(&[
        "verify",
        ko.to_str().unwrap(),
        "--tree",
        tree.to_str().unwrap(),
        "--check",
        "cat /proc/cmdline",
        "--expect-after",
        PATCHED,
        "--json",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["passed"], true);
    assert_eq!(r["booted"], true);
    assert_eq!(r["finished"], true);
    let cmdline = r["cmdline"].as_str().unwrap();
    assert!(cmdline.contains("console=ttyS0"), "{cmdline}");

    let check = &r["checks"][0];
    assert_eq!(check["command"], "cat /proc/cmdline");
    // Before loading, the kernel prints the command line qemu passed it.
    assert_eq!(check["before"]["status"], 0);
    assert_eq!(check["before"]["output"].as_str().unwrap().trim(), cmdline);
    // With the livepatch enabled, the replacement function prints its text.
    assert_eq!(check["after"]["status"], 0);
    assert_eq!(check["after"]["output"].as_str().unwrap().trim(), PATCHED);
    // Disabled and removed, the original function is back.
    assert_eq!(
        check["unloaded"]["output"].as_str().unwrap().trim(),
        cmdline
    );

    let m = &r["modules"][0];
    assert_eq!(m["name"], "livepatch_sample");
    assert_eq!(m["patch"], "livepatch_sample");
    assert_eq!(m["loaded"], true);
    assert_eq!(m["transition"], "done");
    assert_eq!(m["disabled"], true);
    assert_eq!(m["unloaded"], true);
    // The kernel said so too.
    let log = r["log"].as_str().unwrap();
    assert!(
        log.contains("livepatch: 'livepatch_sample': patching complete"),
        "{log}"
    );
    assert!(
        log.contains("livepatch: 'livepatch_sample': unpatching complete"),
        "{log}"
    );

    // The workload ran after the enabling transition and after the disabling one, each time
    // whole.
    assert_workload_runs(
        &r,
        &[
            ("enable", "livepatch_sample"),
            ("disable", "livepatch_sample"),
        ],
    );
    assert_eq!(
        steps(log),
        [
            "BOOT",
            "BEGIN check.before.0",
            "BEGIN insmod.0",
            "TRANSITION livepatch_sample",
            "BEGIN workload.enable.0",
            "BEGIN check.after.0",
            "BEGIN disable.0",
            "TRANSITION livepatch_sample",
            "BEGIN workload.disable.0",
            "BEGIN rmmod.0",
            "BEGIN check.unloaded.0",
            "DONE",
        ]
    );
    assert_eq!(
        r["reason"],
        "1 livepatch loaded and enabled, workload ran after each of 2 transitions, 1 check passed, \
         disabled and unloaded"
    );
}

/// Two livepatches stacked (neither replaces the other): the workload runs after each one's
/// enabling, in load order, and after each one's disabling, newest first.
#[test]
fn with_two_livepatches_the_workload_runs_after_each_transition() {
    let (tree, ko) = sample();
    let demo = tree.join("samples/livepatch/livepatch-callbacks-demo.ko");
    let out = klpx(&[
        "verify",
        ko.to_str().unwrap(),
        demo.to_str().unwrap(),
        "--tree",
        tree.to_str().unwrap(),
        "--check",
        "cat /proc/cmdline; ls /sys/kernel/livepatch",
        "--expect-after",
        PATCHED,
        "--json",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    // Both were enabled together.
    let after = r["checks"][0]["after"]["output"].as_str().unwrap();
    assert!(after.contains("livepatch_callbacks_demo"), "{after}");
    assert!(after.contains("livepatch_sample"), "{after}");
    assert_workload_runs(
        &r,
        &[
            ("enable", "livepatch_sample"),
            ("enable", "livepatch_callbacks_demo"),
            ("disable", "livepatch_callbacks_demo"),
            ("disable", "livepatch_sample"),
        ],
    );
    assert_eq!(
        steps(r["log"].as_str().unwrap()),
        [
            "BOOT",
            "BEGIN check.before.0",
            "BEGIN insmod.0",
            "TRANSITION livepatch_sample",
            "BEGIN workload.enable.0",
            "BEGIN insmod.1",
            "TRANSITION livepatch_callbacks_demo",
            "BEGIN workload.enable.1",
            "BEGIN check.after.0",
            "BEGIN disable.1",
            "TRANSITION livepatch_callbacks_demo",
            "BEGIN workload.disable.1",
            "BEGIN disable.0",
            "TRANSITION livepatch_sample",
            "BEGIN workload.disable.0",
            "BEGIN rmmod.1",
            "BEGIN rmmod.0",
            "BEGIN check.unloaded.0",
            "DONE",
        ]
    );
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("workload ran after each of 4 transitions"),
        "{}",
        r["reason"]
    );
}

/// A check that prints nothing shows nothing about what `--expect-after` asks for, even when
/// another check's output has the text.
#[test]
fn a_check_printing_nothing_with_expect_after_fails() {
    let (tree, ko) = sample();
    let out = klpx(&[
        "verify",
        ko.to_str().unwrap(),
        "--tree",
        tree.to_str().unwrap(),
        "--check",
        "cat /proc/cmdline",
        "--check",
        "cat /proc/cmdline >/dev/null",
        "--expect-after",
        PATCHED,
        "--no-workload",
        "--json",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["passed"], false);
    assert_eq!(
        r["reason"],
        "after loading, check `cat /proc/cmdline >/dev/null` printed nothing (--expect-after was \
         given)"
    );
    // The silent check did run, and exited 0; the other one printed the text.
    assert_eq!(r["checks"][1]["after"]["status"], 0);
    assert_eq!(r["checks"][1]["after"]["output"], "");
    assert_eq!(
        r["checks"][0]["after"]["output"].as_str().unwrap().trim(),
        PATCHED
    );
    // Everything else worked; no workload was asked for.
    assert_eq!(r["modules"][0]["unloaded"], true);
    assert_eq!(r["workloads"], serde_json::json!([]));
}

#[test]
fn failing_check_exits_3_with_the_guest_log() {
    let (tree, ko) = sample();
    let out = klpx(&[
        "verify",
        ko.to_str().unwrap(),
        "--kernel",
        tree.join("arch/x86/boot/bzImage").to_str().unwrap(),
        "--check",
        "grep -q 'not in any command line' /proc/cmdline",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains(
            "FAIL:    check `grep -q 'not in any command line' /proc/cmdline` exited with status 1 after loading"
        ),
        "{stdout}"
    );
    let log = stdout
        .split_once("--- guest log ---\n")
        .map(|(_, l)| l)
        .unwrap_or_else(|| panic!("no guest log in\n{stdout}"));
    assert!(log.contains("Linux version 6.12"), "{log}");
    assert!(
        log.contains("livepatch: enabling patch 'livepatch_sample'"),
        "{log}"
    );
    assert!(
        log.trim_end().ends_with("--- end of guest log ---"),
        "{log}"
    );
}

#[test]
fn unmet_expectation_fails() {
    let (tree, ko) = sample();
    let out = klpx(&[
        "verify",
        ko.to_str().unwrap(),
        "--tree",
        tree.to_str().unwrap(),
        "--check",
        "cat /proc/cmdline",
        "--expect-after",
        "something the patch does not print",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["passed"], false);
    assert_eq!(
        r["reason"],
        "after loading, the checks' output does not contain \"something the patch does not print\""
    );
    // Everything else worked.
    assert_eq!(r["modules"][0]["unloaded"], true);
}

#[test]
fn missing_or_wrong_inputs_are_bad_input() {
    let out = klpx(&[
        "verify",
        "/nonexistent/fix.ko",
        "--kernel",
        "/nonexistent/bzImage",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "klpx: /nonexistent/bzImage: no such kernel image\n"
    );

    // A real kernel image, so that the module is what is wrong.
    let (tree, _) = sample();
    let image = tree.join("arch/x86/boot/bzImage");
    let image = image.to_str().unwrap();
    let out = klpx(&["verify", "/nonexistent/fix.ko", "--kernel", image]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "klpx: /nonexistent/fix.ko: no such kernel module\n"
    );

    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = klpx(&["verify", manifest, "--kernel", image, "--arch", "x86_64"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("klpx: {manifest}: not a 64-bit ELF kernel module")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = klpx(&[
        "verify",
        manifest,
        "--tree",
        "/nonexistent/tree",
        "--arch",
        "x86_64",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "klpx: /nonexistent/tree: no such kernel tree\n"
    );
}

#[test]
fn a_module_that_is_not_a_livepatch_is_refused() {
    let (tree, _) = sample();
    let plain = tree.join("samples/livepatch/livepatch-callbacks-mod.ko");
    let out = klpx(&[
        "verify",
        plain.to_str().unwrap(),
        "--tree",
        tree.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "klpx: {}: not a livepatch module (no livepatch=Y in .modinfo)\n",
            plain.display()
        )
    );
}
