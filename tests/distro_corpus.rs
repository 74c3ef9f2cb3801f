//! The kernel corpus's patches (tests/kernel-corpus/) on Debian's own kernel configs, in the trees
//! `klpx build --distro` prepares: objects with IBT, call padding, retpolines, dynamic debug,
//! tracepoints and static calls, compiled by kbuild's recorded commands, original and patched,
//! against verdicts checked by reading the source and the disassembly of Debian's objects
//! (tests/distro-corpus/cases.yaml).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::kernel::{build_pair_in, repo};
use klpx::kernel::cache;
use klpx::patch::source::SourcePatch;
use klpx_arch::Arch;
use serde::Deserialize;

/// A corpus case on one Debian release: the kernel corpus case it takes its patch and object from,
/// and what klpx must say.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    verdict: String,
    #[serde(default)]
    changed: Vec<String>,
    #[serde(default)]
    new: Vec<String>,
    #[serde(default)]
    refused: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct KernelCase {
    name: String,
    patch: String,
    object: String,
}

fn strings(v: &serde_json::Value, key: &str) -> BTreeSet<String> {
    v[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

/// Both releases share Debian's 6.12 source, which preparing a tree locks without waiting.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(arch: Arch, distro: &str, file: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let kernel: Vec<KernelCase> = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("tests/kernel-corpus/cases.yaml")).unwrap(),
    )
    .unwrap();
    let by_name: BTreeMap<&str, &KernelCase> =
        kernel.iter().map(|c| (c.name.as_str(), c)).collect();
    let cases: Vec<Case> = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("tests/distro-corpus").join(file)).unwrap(),
    )
    .unwrap_or_else(|e| panic!("parsing {file}: {e}"));
    let scratch = std::env::temp_dir().join(format!("klpx-distro-corpus-{}", arch.name()));
    let first = repo()
        .join("tests/kernel-corpus")
        .join(&by_name[cases[0].name.as_str()].patch);
    let tree = common::distro::tree(arch, distro, &first, &scratch)
        .unwrap_or_else(|e| panic!("{arch}: {e:#}"));
    let mut objects: Vec<String> = cases
        .iter()
        .map(|c| by_name[c.name.as_str()].object.clone())
        .collect();
    objects.sort();
    objects.dedup();
    tree.compile(&objects)
        .unwrap_or_else(|e| panic!("{arch}: compiling the objects: {e:#}"));
    let release = tree
        .out
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut failures = Vec::new();
    for case in &cases {
        let k = by_name
            .get(case.name.as_str())
            .unwrap_or_else(|| panic!("{}: no such kernel corpus case", case.name));
        let path = repo().join("tests/kernel-corpus").join(&k.patch);
        let text = std::fs::read_to_string(&path).unwrap();
        let patch = SourcePatch::parse(&k.patch, &text).unwrap();
        let dir = cache::root()
            .join("distro-corpus")
            .join(&release)
            .join(&case.name);
        let pair = match build_pair_in(&tree.src, &tree.out, arch, &k.object, &patch, &text, &dir) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{}: building the pair: {e:#}", case.name));
                continue;
            }
        };
        let out = Command::new(env!("CARGO_BIN_EXE_klpx"))
            .args(["diff", "--json", "--symvers"])
            .arg(tree.out.join("Module.symvers"))
            .arg(&pair.orig)
            .arg(&pair.patched)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let refused: BTreeSet<String> = v["refusals"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["symbol"].as_str().map(str::to_string))
            .collect();
        let got = (
            v["verdict"].as_str().unwrap_or("?").to_string(),
            strings(&v, "changed_functions"),
            strings(&v, "new_functions"),
            refused,
        );
        let want = (
            case.verdict.clone(),
            case.changed.iter().cloned().collect(),
            case.new.iter().cloned().collect(),
            case.refused.iter().cloned().collect(),
        );
        eprintln!(
            "{arch} {}: {} changed {:?} new {:?} refused {:?}",
            case.name, got.0, got.1, got.2, got.3
        );
        if got != want {
            failures.push(format!(
                "{}: got {} {:?} {:?} refused {:?}, expected {} {:?} {:?} refused {:?}",
                case.name, got.0, got.1, got.2, got.3, want.0, want.1, want.2, want.3
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed on Debian's {arch}:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn debian_amd64() {
    run(Arch::X86_64, "debian", "debian-amd64.yaml");
}

#[test]
fn debian_arm64() {
    run(Arch::Arm64, "debian", "debian-arm64.yaml");
}

#[test]
fn debian_6_1_ppc64el() {
    run(Arch::Ppc64le, "debian:6.1", "debian-6.1-ppc64le.yaml");
}

#[test]
fn debian_6_1_s390x() {
    run(Arch::S390x, "debian:6.1", "debian-6.1-s390.yaml");
}

#[test]
fn debian_6_1_amd64() {
    run(Arch::X86_64, "debian:6.1", "debian-6.1-amd64.yaml");
}
