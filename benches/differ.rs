//! Differ throughput over the real-object corpus: read both objects, diff them, write the output.
//!
//! Uses the object pairs the kernel corpus test compiles (tests/kernel-corpus), building any that are
//! missing. Throughput is the size of both inputs per second.

#[path = "../tests/common/kernel.rs"]
mod kernel;

use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use klpx::differ::{DiffOptions, Exports, Verdict, diff};
use klpx::objfile::ObjectFile;
use klpx::writer::diff_object::write_object;
use klpx_arch::Arch;

/// Every (orig, patched) pair of the corpus, for every architecture, as bytes.
pub fn corpus_pairs() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let cases = kernel::cases().expect("reading tests/kernel-corpus/cases.yaml");
    let mut pairs = Vec::new();
    for arch in Arch::ALL {
        let tree = kernel::tree(arch).expect("preparing a kernel tree");
        let mine: Vec<&kernel::Case> = cases.iter().filter(|c| c.applies_to(arch)).collect();
        kernel::build_originals(&tree, &mine).expect("building original objects");
        for case in mine {
            let p = kernel::pair(&tree, case).expect("building an object pair");
            pairs.push((
                format!("{arch}/{}", case.name),
                read(&p.orig),
                read(&p.patched),
            ));
        }
    }
    pairs
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
    };
    let d = diff(&o, &p, &opts).expect("diff");
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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
