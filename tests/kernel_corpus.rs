//! The differ on real kernel objects: Debian's linux-source-6.12 translation units compiled with their
//! recorded kbuild commands for each architecture, original and patched, against verdicts checked by
//! reading the source and the disassembly (tests/kernel-corpus/cases.yaml).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::corpus::{resolve, strings};
use common::kernel::{self, Case};
use klpx_arch::Arch;

fn refused(v: &serde_json::Value) -> BTreeSet<String> {
    v["refusals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["symbol"].as_str().map(str::to_string))
        .collect()
}

/// Checks one case; returns a description of every mismatch.
fn check(arch: Arch, tree: &klpx::kernel::tree::KernelTree, case: &Case) -> Vec<String> {
    let pair = match kernel::pair(tree, case) {
        Ok(p) => p,
        Err(e) => {
            return vec![format!(
                "{arch} {}: building the pair failed: {e:#}",
                case.name
            )];
        }
    };
    let out = pair.patched.with_file_name("out.o");
    let _ = std::fs::remove_file(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args(["diff", "--json", "-o"])
        .arg(&out)
        .arg(&pair.orig)
        .arg(&pair.patched)
        .output()
        .expect("running klpx");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let json: serde_json::Value = match serde_json::from_slice(&run.stdout) {
        Ok(v) => v,
        Err(e) => {
            return vec![format!(
                "{arch} {}: no JSON ({e}); stderr: {stderr}",
                case.name
            )];
        }
    };
    let e = case.expect_for(arch);
    let mut bad = Vec::new();
    let want_code = match e.verdict.as_str() {
        "patchable" => 0,
        "no-change" => 1,
        "unpatchable" => 3,
        other => {
            return vec![format!(
                "{}: unknown verdict {other} in cases.yaml",
                case.name
            )];
        }
    };
    if json["verdict"] != e.verdict.as_str() || run.status.code() != Some(want_code) {
        bad.push(format!(
            "verdict {} (exit {:?}), expected {} (exit {want_code}); refusals: {}",
            json["verdict"],
            run.status.code(),
            e.verdict,
            json["refusals"]
        ));
    }
    // An expected name may be alternatives (`panic|vpanic`, tests/common/corpus.rs).
    let changed = resolve(&e.changed, &strings(&json, "changed_functions"));
    for (key, want) in [("changed_functions", &e.changed), ("new_functions", &e.new)] {
        let got = strings(&json, key);
        let want = resolve(want, &got);
        if got != want {
            bad.push(format!("{key} {got:?}, expected {want:?}"));
        }
    }
    let got = refused(&json);
    let want: BTreeSet<String> = e.refused.iter().cloned().collect();
    if got != want {
        bad.push(format!("refused {got:?}, expected {want:?}"));
    }
    if want_code == 0 {
        match std::fs::read(&out) {
            Ok(bytes) => check_output(arch, &bytes, &changed, &mut bad),
            Err(e) => bad.push(format!("no output object: {e}")),
        }
    }
    bad.into_iter()
        .map(|b| format!("{arch} {}: {b}", case.name))
        .collect()
}

/// The output object must be a valid relocatable of the right machine and byte order that defines
/// every changed function.
fn check_output(arch: Arch, bytes: &[u8], changed: &BTreeSet<String>, bad: &mut Vec<String>) {
    use object::{Object, ObjectSymbol};
    let file = match object::File::parse(bytes) {
        Ok(f) => f,
        Err(e) => return bad.push(format!("output does not parse: {e}")),
    };
    let big = arch.backend().endian() == klpx_arch::Endian::Big;
    if file.is_little_endian() == big {
        bad.push("output has the wrong byte order".to_string());
    }
    for f in changed {
        if !file
            .symbols()
            .any(|s| s.name() == Ok(f) && s.is_definition())
        {
            bad.push(format!("output does not define changed function {f}"));
        }
    }
}

fn run_arch(arch: Arch) {
    let tree =
        kernel::tree(arch).unwrap_or_else(|e| panic!("{arch}: preparing the kernel tree: {e:#}"));
    let cases = kernel::cases().expect("reading cases.yaml");
    let mine: Vec<&Case> = cases.iter().filter(|c| c.applies_to(arch)).collect();
    kernel::build_originals(&tree, &mine)
        .unwrap_or_else(|e| panic!("{arch}: building the original objects: {e:#}"));
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in mine {
        ran += 1;
        failures.extend(check(arch, &tree, case));
    }
    assert!(ran > 0, "no corpus case applies to {arch}");
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed on {arch}:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{arch}: {ran} kernel corpus cases passed");
}

#[test]
fn kernel_corpus_x86_64() {
    run_arch(Arch::X86_64);
}

#[test]
fn kernel_corpus_arm64() {
    run_arch(Arch::Arm64);
}

#[test]
fn kernel_corpus_ppc64le() {
    run_arch(Arch::Ppc64le);
}

#[test]
fn kernel_corpus_s390() {
    run_arch(Arch::S390x);
}
