//! The kernel corpus's patches built with clang 16 and the LLVM tools (`LLVM=/usr/lib/llvm-16/bin/`,
//! Debian's clang-16 and lld-16) on the tiny configs, against expectations checked with objdump of
//! the clang objects (tests/kernel-corpus/clang-*.yaml): clang's string labels, its static local
//! names and its own inlining decisions.

mod common;

use common::corpus::{check, expectations, kernel_cases};
use common::kernel::{build_pair_in, llvm_tree, repo};
use klpx::kernel::cache;
use klpx::patch::source::SourcePatch;
use klpx_arch::Arch;

fn run(arch: Arch, file: &str) {
    let by_name = kernel_cases();
    let cases = expectations(&format!("tests/kernel-corpus/{file}"));
    let tree = llvm_tree(arch).unwrap_or_else(|e| panic!("{arch} (clang): {e:#}"));
    let mut objects: Vec<&str> = cases
        .iter()
        .map(|c| by_name[&c.name].object.as_str())
        .collect();
    objects.sort();
    objects.dedup();
    {
        let _lock = klpx::livepatch::lock::SourceLock::take(&tree.src).unwrap();
        tree.build_objects(&objects)
            .unwrap_or_else(|e| panic!("{arch} (clang): compiling the objects: {e:#}"));
    }
    let mut failures = Vec::new();
    for case in &cases {
        let k = &by_name[&case.name];
        let text =
            std::fs::read_to_string(repo().join("tests/kernel-corpus").join(&k.patch)).unwrap();
        let patch = SourcePatch::parse(&k.patch, &text).unwrap();
        let dir = cache::root()
            .join("corpus")
            .join(format!("{}-llvm16", arch.name()))
            .join(&case.name);
        match build_pair_in(&tree.src, &tree.out, arch, &k.object, &patch, &text, &dir) {
            Ok(pair) => failures.extend(check(&format!("{arch} clang"), &pair, None, case)),
            Err(e) => failures.push(format!("{}: building the pair: {e:#}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed with clang on {arch}:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn clang_x86_64() {
    run(Arch::X86_64, "clang-x86_64.yaml");
}

#[test]
fn clang_arm64() {
    run(Arch::Arm64, "clang-arm64.yaml");
}
