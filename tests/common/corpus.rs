//! Expectation files over the kernel corpus's patches (tests/kernel-corpus/): one entry per case with
//! the verdict and the changed, new and refused symbols klpx must report for one kernel build
//! (a distribution's config, a compiler), checked against `klpx diff`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use super::kernel::{ObjectPair, repo};

/// What klpx must say about one case on one build. A name may be alternatives, `panic|vpanic`:
/// what holds for every release of a series where a stable update moved code between functions
/// (6.12.118 split `panic` into a `vpanic` that the patched, inlined function now lands in);
/// exactly one of them must be reported.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub name: String,
    pub verdict: String,
    #[serde(default)]
    pub changed: Vec<String>,
    #[serde(default)]
    pub new: Vec<String>,
    #[serde(default)]
    pub refused: Vec<String>,
}

/// A case of tests/kernel-corpus/cases.yaml: its patch and object.
#[derive(Debug, Clone, Deserialize)]
pub struct KernelCase {
    pub name: String,
    pub patch: String,
    pub object: String,
}

/// The kernel corpus's cases by name.
pub fn kernel_cases() -> BTreeMap<String, KernelCase> {
    let list: Vec<KernelCase> = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("tests/kernel-corpus/cases.yaml")).unwrap(),
    )
    .unwrap();
    list.into_iter().map(|c| (c.name.clone(), c)).collect()
}

/// An expectation file (relative to the repository).
pub fn expectations(file: &str) -> Vec<Expectation> {
    serde_norway::from_str(&std::fs::read_to_string(repo().join(file)).unwrap())
        .unwrap_or_else(|e| panic!("parsing {file}: {e}"))
}

/// A JSON report's array of strings `key`, as a set.
pub fn strings(v: &serde_json::Value, key: &str) -> BTreeSet<String> {
    v[key]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

/// Runs `klpx diff --json` on `pair` (with `--symvers` when given) and compares with `want`;
/// returns a description of the mismatch. Prints what klpx said.
pub fn check(
    label: &str,
    pair: &ObjectPair,
    symvers: Option<&Path>,
    want: &Expectation,
) -> Option<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_klpx"));
    cmd.args(["diff", "--json"]);
    if let Some(s) = symvers {
        cmd.arg("--symvers").arg(s);
    }
    let out = cmd.arg(&pair.orig).arg(&pair.patched).output().unwrap();
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
    eprintln!(
        "{label} {}: {} changed {:?} new {:?} refused {:?}",
        want.name, got.0, got.1, got.2, got.3
    );
    let expected = (
        want.verdict.clone(),
        resolve(&want.changed, &got.1),
        resolve(&want.new, &got.2),
        resolve(&want.refused, &got.3),
    );
    (got != expected).then(|| {
        format!(
            "{}: got {} {:?} {:?} refused {:?}, expected {} {:?} {:?} refused {:?}",
            want.name, got.0, got.1, got.2, got.3, expected.0, expected.1, expected.2, expected.3
        )
    })
}

/// `want` with each `a|b` entry replaced by the one alternative `got` holds (left as written when
/// it holds none or several, so that the comparison fails showing it).
pub fn resolve(want: &[String], got: &BTreeSet<String>) -> BTreeSet<String> {
    want.iter()
        .map(|w| {
            let present: Vec<&str> = w.split('|').filter(|a| got.contains(*a)).collect();
            match present.as_slice() {
                [one] if w.contains('|') => one.to_string(),
                _ => w.clone(),
            }
        })
        .collect()
}
