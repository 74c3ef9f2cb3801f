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
/// `TRANSITION <patch>` when a transition ended, `CASE <n>` and `STOP <n>` with several cases,
/// `BOOT` and `DONE`.
fn steps(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.find("KLPX:").map(|at| &l[at + "KLPX:".len()..]))
        .filter_map(|m| {
            let w: Vec<&str> = m.split_whitespace().collect();
            match w.as_slice() {
                ["BEGIN", tag, ..] | ["TRANSITION", tag, ..] | ["CASE", tag] | ["STOP", tag] => {
                    Some(format!("{} {tag}", w[0]))
                }
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

/// The JSON report of a `klpx verify --json` run that ended with `code`, showing everything it
/// printed when it did not.
fn report(out: &std::process::Output, code: i32) -> serde_json::Value {
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap()
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
    let r = report(&out, 0);
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
    let r = report(&out, 0);
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
    let r = report(&out, 3);
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

/// A new directory of this test process's for `name`.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("klpx-verify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A cases file in a new directory, with a `note.txt` of each case's own in `one/` and `two/`
/// (relative paths in the file are taken from its directory). `first_after`: the first case's
/// `expect_after`.
fn two_cases(name: &str, first_after: &str) -> (PathBuf, PathBuf) {
    let (tree, ko) = sample();
    let demo = tree.join("samples/livepatch/livepatch-callbacks-demo.ko");
    let dir = scratch(name);
    for (sub, note) in [("one", "note of case one\n"), ("two", "note of case two\n")] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::write(dir.join(sub).join("note.txt"), note).unwrap();
    }
    let file = dir.join("cases.yaml");
    std::fs::write(
        &file,
        format!(
            "# Both cases patch cmdline_proc_show with the sample livepatch.\n\
             - modules: [{ko}]\n  \
               check: [\"cat /proc/cmdline\", \"cat /klpx/files/note.txt\"]\n  \
               expect_before: \"console=\"\n  \
               expect_after: \"{first_after}\"\n  \
               files: [one/note.txt]\n\
             - modules: [{ko}, {demo}]\n  \
               checks: [\"cat /proc/cmdline; ls /sys/kernel/livepatch; cat /klpx/files/note.txt\"]\n  \
               expect-before: \"console=\"\n  \
               expect-after: \"livepatch_callbacks_demo\"\n  \
               files: [two/note.txt]\n",
            ko = ko.display(),
            demo = demo.display()
        ),
    )
    .unwrap();
    (tree, file)
}

/// One boot, two cases loading the same livepatch of the same function: each case's checks see
/// the kernel as it booted before loading and again after unloading, the livepatch's text while
/// loaded, and the case's own files.
#[test]
fn two_cases_in_one_boot_patch_the_same_function_each_on_its_own() {
    let (tree, file) = two_cases("two-cases", PATCHED);
    let out = klpx(&[
        "verify",
        "--cases",
        file.to_str().unwrap(),
        "--tree",
        tree.to_str().unwrap(),
        "--json",
    ]);
    let r = report(&out, 0);
    assert_eq!(r["passed"], true);
    assert_eq!(
        r["reason"],
        "2 cases passed in one boot: 3 livepatches loaded and enabled, workload ran after each of \
         6 transitions, 3 checks passed, disabled and unloaded"
    );
    let cmdline = r["cmdline"].as_str().unwrap();
    let output = |c: &serde_json::Value, i: usize, when: &str| {
        c["checks"][i][when]["output"]
            .as_str()
            .unwrap_or_else(|| panic!("no {when} output of check {i} in {c}"))
            .to_string()
    };

    let one = &r["cases"][0];
    assert_eq!(
        (one["number"].as_u64(), one["passed"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(output(one, 0, "before").trim(), cmdline);
    assert_eq!(output(one, 0, "after").trim(), PATCHED);
    assert_eq!(output(one, 0, "unloaded").trim(), cmdline);
    for when in ["before", "after", "unloaded"] {
        assert_eq!(output(one, 1, when), "note of case one\n");
    }
    assert_workload_runs(
        one,
        &[
            ("enable", "livepatch_sample"),
            ("disable", "livepatch_sample"),
        ],
    );

    let two = &r["cases"][1];
    assert_eq!(
        (two["number"].as_u64(), two["passed"].as_bool()),
        (Some(2), Some(true))
    );
    // The first case's livepatch is gone: the second starts on the kernel as it booted.
    assert_eq!(
        output(two, 0, "before"),
        format!("{cmdline}\nnote of case two\n")
    );
    assert_eq!(
        output(two, 0, "after"),
        format!("{PATCHED}\nlivepatch_callbacks_demo\nlivepatch_sample\nnote of case two\n")
    );
    assert_eq!(
        output(two, 0, "unloaded"),
        format!("{cmdline}\nnote of case two\n")
    );
    assert_workload_runs(
        two,
        &[
            ("enable", "livepatch_sample"),
            ("enable", "livepatch_callbacks_demo"),
            ("disable", "livepatch_callbacks_demo"),
            ("disable", "livepatch_sample"),
        ],
    );
    let names: Vec<&str> = two["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["unloaded"], true, "{m}");
            m["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(names, ["livepatch_sample", "livepatch_callbacks_demo"]);
    // With several cases, each has its own lists.
    assert_eq!(r["modules"], serde_json::json!([]));
    assert_eq!(r["checks"], serde_json::json!([]));

    let log = r["log"].as_str().unwrap();
    assert_eq!(
        log.matches("livepatch: 'livepatch_sample': patching complete")
            .count(),
        2,
        "{log}"
    );
    assert_eq!(
        steps(log),
        [
            "BOOT",
            "CASE 1",
            "BEGIN case1.check.before.0",
            "BEGIN case1.check.before.1",
            "BEGIN case1.insmod.0",
            "TRANSITION case1.livepatch_sample",
            "BEGIN case1.workload.enable.0",
            "BEGIN case1.check.after.0",
            "BEGIN case1.check.after.1",
            "BEGIN case1.disable.0",
            "TRANSITION case1.livepatch_sample",
            "BEGIN case1.workload.disable.0",
            "BEGIN case1.rmmod.0",
            "BEGIN case1.check.unloaded.0",
            "BEGIN case1.check.unloaded.1",
            "CASE 2",
            "BEGIN case2.check.before.0",
            "BEGIN case2.insmod.0",
            "TRANSITION case2.livepatch_sample",
            "BEGIN case2.workload.enable.0",
            "BEGIN case2.insmod.1",
            "TRANSITION case2.livepatch_callbacks_demo",
            "BEGIN case2.workload.enable.1",
            "BEGIN case2.check.after.0",
            "BEGIN case2.disable.1",
            "TRANSITION case2.livepatch_callbacks_demo",
            "BEGIN case2.workload.disable.1",
            "BEGIN case2.disable.0",
            "TRANSITION case2.livepatch_sample",
            "BEGIN case2.workload.disable.0",
            "BEGIN case2.rmmod.1",
            "BEGIN case2.rmmod.0",
            "BEGIN case2.check.unloaded.0",
            "DONE",
        ]
    );
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}

/// The first case expects what its livepatch does not print: the guest sees it, stops before the
/// second case (the run does not go on from a case that failed), and the run fails naming case 1.
#[test]
fn a_wrong_expectation_in_the_first_case_ends_the_run_there() {
    let (tree, file) = two_cases("first-fails", "something the patch does not print");
    let args = [
        "verify",
        "--cases",
        file.to_str().unwrap(),
        "--tree",
        tree.to_str().unwrap(),
    ];
    let out = klpx(&args);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let reason = "case 1 of 2 failed: after loading, the checks' output does not contain \
                  \"something the patch does not print\"; case 2 did not run";
    assert!(
        stdout.contains(&format!("\nFAIL:    {reason} (")),
        "{stdout}"
    );
    assert!(
        stdout.contains("\ncase 2:  FAIL: did not run: case 1 failed\n"),
        "{stdout}"
    );
    let (summary, log) = stdout
        .split_once("--- guest log ---\n")
        .unwrap_or_else(|| panic!("no guest log in\n{stdout}"));
    // The first case did everything else, and came off again.
    assert!(
        summary.contains("case 1:  FAIL: after loading"),
        "{summary}"
    );
    assert!(
        summary.contains("loaded, transition done, disabled, unloaded"),
        "{summary}"
    );
    let steps = steps(log);
    assert_eq!(
        steps[steps.len() - 4..],
        [
            "BEGIN case1.check.unloaded.0",
            "BEGIN case1.check.unloaded.1",
            "STOP 1",
            "DONE"
        ]
    );
    assert!(!log.contains("case2."), "{log}");

    let mut json = args.to_vec();
    json.push("--json");
    let out = klpx(&json);
    assert_eq!(out.status.code(), Some(3));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["reason"], reason);
    assert_eq!(r["cases"][0]["ran"], true);
    assert_eq!(r["cases"][1]["ran"], false);
    assert_eq!(r["cases"][1]["passed"], false);
    assert_eq!(
        r["cases"][1]["checks"][0]["before"],
        serde_json::Value::Null
    );
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}

/// A cases file with a mistake ends in one line naming it, exit status 2, before anything boots.
#[test]
fn a_bad_cases_file_is_one_line_and_bad_input() {
    let (tree, ko) = sample();
    let plain = tree.join("samples/livepatch/livepatch-callbacks-mod.ko");
    let dir = scratch("bad-cases");
    let name = |f: &str| dir.join(f).display().to_string();
    for (file, content, error) in [
        (
            "parse.yaml",
            "- modules: [a.ko]\n  check: [\"cat /proc/cmdline\"\n".to_string(),
            format!(
                "{}:3:1: did not find expected ',' or ']'",
                name("parse.yaml")
            ),
        ),
        (
            "typo.yaml",
            format!("- modules: [{}]\n  expect_afer: x\n", ko.display()),
            format!(
                "{}:2:3: case 1: unknown field `expect_afer`, expected one of `module`, \
                 `modules`, `check`, `checks`, `expect-before`, `expect_before`, `expect-after`, \
                 `expect_after`, `file`, `files`",
                name("typo.yaml")
            ),
        ),
        (
            "missing.yaml",
            format!("- modules: [{}]\n- modules: [gone.ko]\n", ko.display()),
            format!(
                "{}: case 2: {}: no such kernel module",
                name("missing.yaml"),
                name("gone.ko")
            ),
        ),
        (
            "empty-case.yaml",
            format!("- modules: [{}]\n- check: [true]\n", ko.display()),
            format!("{}: case 2 has no modules", name("empty-case.yaml")),
        ),
        (
            "plain.json",
            format!("[{{\"modules\": [\"{}\"]}}]", plain.display()),
            format!(
                "{}: case 1: {}: not a livepatch module (no livepatch=Y in .modinfo)",
                name("plain.json"),
                plain.display()
            ),
        ),
        (
            "trailing.json",
            "[{\"modules\": [\"a.ko\"],}]".to_string(),
            format!("{}:1:23: trailing comma", name("trailing.json")),
        ),
    ] {
        std::fs::write(dir.join(file), content).unwrap();
        let out = klpx(&[
            "verify",
            "--cases",
            &name(file),
            "--tree",
            tree.to_str().unwrap(),
        ]);
        assert_eq!(
            (out.status.code(), text(&out.stderr)),
            (Some(2), format!("klpx: {error}\n")),
            "{file}: {}",
            text(&out.stdout)
        );
        assert_eq!(text(&out.stdout), "", "{file}");
    }
    let out = klpx(&[
        "verify",
        "--cases",
        &name("nonexistent.yaml"),
        "--tree",
        tree.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "klpx: {}: cannot read: No such file or directory (os error 2)\n",
            name("nonexistent.yaml")
        )
    );
    // --cases says what each case checks: the options of one case do not go with it.
    let out = klpx(&[
        "verify",
        "--cases",
        &name("missing.yaml"),
        ko.to_str().unwrap(),
        "--tree",
        tree.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("'--cases <FILE>' cannot be used with"));
    let _ = std::fs::remove_dir_all(&dir);
}
