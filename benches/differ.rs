//! Differ throughput over the real-object corpus: read both objects, diff them, write the output.
//!
//! Uses the object pairs the kernel corpus test compiles (tests/kernel-corpus) into
//! `$KLPX_CACHE/corpus/<arch>/<case>`; when any is missing, prepares the trees and builds the missing
//! ones as the test does. Throughput is the size of both inputs per second.

#[path = "../tests/common/kernel.rs"]
mod kernel;

use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use klpx::differ::{DiffOptions, Exports, Verdict, diff};
use klpx::kernel::cache;
use klpx::objfile::ObjectFile;
use klpx::writer::diff_object::write_object;
use klpx_arch::Arch;

/// Every (orig, patched) pair of the corpus, for every architecture, as bytes, named `<arch>/<case>`.
pub fn corpus_pairs() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    corpus_pairs_matching("")
}

/// The pairs whose name contains `filter`.
pub fn corpus_pairs_matching(filter: &str) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let cases = kernel::cases().expect("reading tests/kernel-corpus/cases.yaml");
    let mut pairs = Vec::new();
    for arch in Arch::ALL {
        let mine: Vec<&kernel::Case> = cases
            .iter()
            .filter(|c| c.applies_to(arch) && format!("{arch}/{}", c.name).contains(filter))
            .collect();
        let dir = |c: &kernel::Case| cache::root().join("corpus").join(arch.name()).join(&c.name);
        let cached = mine
            .iter()
            .all(|c| dir(c).join("orig.o").is_file() && dir(c).join("patched.o").is_file());
        if !cached {
            let tree = kernel::tree(arch).expect("preparing a kernel tree");
            kernel::build_originals(&tree, &mine).expect("building original objects");
            for case in &mine {
                kernel::pair(&tree, case).expect("building an object pair");
            }
        }
        for case in mine {
            pairs.push((
                format!("{arch}/{}", case.name),
                read(&dir(case).join("orig.o")),
                read(&dir(case).join("patched.o")),
            ));
        }
    }
    pairs
}

/// The pairs of the newer corpora already in the cache (nothing is built for them here): Debian's
/// configs (`distro-corpus/<release>/<case>`), clang (`corpus/<arch>-llvm16/<case>`) and the
/// standalone pairs (`standalone-pairs/<release>/<case>`), named `<dir>/<case>`.
pub fn newer_corpora_pairs(filter: &str) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let root = cache::root();
    let mut dirs: Vec<PathBuf> = Vec::new();
    let subdirs = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        v
    };
    for top in ["distro-corpus", "standalone-pairs"] {
        for rel in subdirs(&root.join(top)) {
            dirs.extend(subdirs(&rel));
        }
    }
    for arch in subdirs(&root.join("corpus")) {
        if arch.to_string_lossy().ends_with("-llvm16") {
            dirs.extend(subdirs(&arch));
        }
    }
    dirs.into_iter()
        .filter(|d| d.join("orig.o").is_file() && d.join("patched.o").is_file())
        .filter_map(|d| {
            let name = d.strip_prefix(&root).ok()?.display().to_string();
            name.contains(filter)
                .then(|| (name, read(&d.join("orig.o")), read(&d.join("patched.o"))))
        })
        .collect()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One full differ run over a pair; returns the output size so nothing is optimised away.
pub fn run_pair(orig: &[u8], patched: &[u8]) -> usize {
    let o = ObjectFile::parse(&PathBuf::from("orig.o"), orig).expect("orig parses");
    let p = ObjectFile::parse(&PathBuf::from("patched.o"), patched).expect("patched parses");
    let opts = DiffOptions {
        object_name: "vmlinux".into(),
        exports: Exports::default(),
        count_line_changes: false,
        objtool_at_module_link: false,
    };
    let d = diff(&o, &p, &opts).expect("diff");
    // As `klpx diff` does: the original's tables go before the output is written.
    drop(o);
    if d.verdict == Verdict::Patchable {
        write_object(&p, &d).expect("write").len()
    } else {
        0
    }
}

fn bench(c: &mut Criterion) {
    let pairs = corpus_pairs();
    let bytes: usize = pairs.iter().map(|(_, a, b)| a.len() + b.len()).sum();
    let mut group = c.benchmark_group("differ");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function(
        format!(
            "kernel corpus ({} pairs, {} KiB)",
            pairs.len(),
            bytes / 1024
        ),
        |b| b.iter(|| pairs.iter().map(|(_, o, p)| run_pair(o, p)).sum::<usize>()),
    );
    let newer = newer_corpora_pairs("");
    if !newer.is_empty() {
        let bytes: usize = newer.iter().map(|(_, a, b)| a.len() + b.len()).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(
            format!(
                "Debian, clang and standalone corpora ({} pairs, {} KiB)",
                newer.len(),
                bytes / 1024
            ),
            |b| b.iter(|| newer.iter().map(|(_, o, p)| run_pair(o, p)).sum::<usize>()),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
