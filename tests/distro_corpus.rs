//! The kernel corpus's patches (tests/kernel-corpus/) on Debian's own kernel configs, in the trees
//! `klpx build --distro` prepares: objects with IBT, call padding, retpolines, dynamic debug,
//! tracepoints and static calls, compiled by kbuild's recorded commands, original and patched,
//! against verdicts checked by reading the source and the disassembly of Debian's objects
//! (tests/distro-corpus/cases.yaml).

mod common;

use common::corpus::{check, expectations, kernel_cases};
use common::kernel::{build_pair_in, repo};
use klpx::kernel::cache;
use klpx::patch::source::SourcePatch;
use klpx_arch::Arch;

/// Both releases share Debian's 6.12 source, which preparing a tree locks without waiting.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(arch: Arch, distro: &str, file: &str) {
    run_with(arch, distro, file, &[]);
}

/// With clang 16 and the LLVM tools on Debian's config (`klpx build --distro --llvm`, Debian's
/// /usr/lib/llvm-16/bin first in PATH as the README says): the prepared tree is one of its own.
fn run_clang(arch: Arch, file: &str) {
    common::kernel::use_llvm_16();
    run_with(arch, "debian", file, &["--llvm"]);
}

fn run_with(arch: Arch, distro: &str, file: &str, extra: &[&str]) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let by_name = kernel_cases();
    let cases = expectations(&format!("tests/distro-corpus/{file}"));
    let scratch = std::env::temp_dir().join(format!("klpx-distro-corpus-{}", arch.name()));
    let first = repo()
        .join("tests/kernel-corpus")
        .join(&by_name[&cases[0].name].patch);
    let tree = common::distro::tree_with(arch, distro, &first, &scratch, extra)
        .unwrap_or_else(|e| panic!("{arch}: {e:#}"));
    let clang = if extra.contains(&"--llvm") {
        "-llvm"
    } else {
        ""
    };
    let mut objects: Vec<String> = cases
        .iter()
        .map(|c| by_name[&c.name].object.clone())
        .collect();
    objects.sort();
    objects.dedup();
    tree.compile(&objects)
        .unwrap_or_else(|e| panic!("{arch}: compiling the objects: {e:#}"));
    let release = tree
        .out
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| format!("{}{clang}", n.to_string_lossy()))
        .unwrap_or_default();
    // The expectations hold for any release of the series; the one tested is said.
    eprintln!("{arch}: Debian release {release} ({distro})");
    let symvers = tree.out.join("Module.symvers");
    let mut failures = Vec::new();
    for case in &cases {
        let k = by_name
            .get(&case.name)
            .unwrap_or_else(|| panic!("{}: no such kernel corpus case", case.name));
        let path = repo().join("tests/kernel-corpus").join(&k.patch);
        let text = std::fs::read_to_string(&path).unwrap();
        let patch = SourcePatch::parse(&k.patch, &text).unwrap();
        let dir = cache::root()
            .join("distro-corpus")
            .join(&release)
            .join(&case.name);
        match build_pair_in(&tree.src, &tree.out, arch, &k.object, &patch, &text, &dir) {
            Ok(pair) => failures.extend(check(arch.name(), &pair, Some(&symvers), case)),
            Err(e) => failures.push(format!("{}: building the pair: {e:#}", case.name)),
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

#[test]
fn debian_amd64_clang() {
    run_clang(Arch::X86_64, "debian-amd64-clang.yaml");
}

#[test]
fn debian_arm64_clang() {
    run_clang(Arch::Arm64, "debian-arm64-clang.yaml");
}

/// The newest 6.12 release Debian 12's suites build for ppc64el (klpx's own indexes find it in
/// bookworm-security).
#[test]
fn debian_ppc64el() {
    run(Arch::Ppc64le, "debian", "debian-ppc64le.yaml");
}

#[test]
fn debian_6_1_arm64() {
    run(Arch::Arm64, "debian:6.1", "debian-6.1-arm64.yaml");
}

/// The newest 6.12 release Debian 12's suites build for s390x: bookworm-security builds 6.12 for
/// every architecture but s390x, so klpx's own indexes find it in bookworm-backports.
#[test]
fn debian_s390x() {
    run(Arch::S390x, "debian", "debian-s390.yaml");
}
