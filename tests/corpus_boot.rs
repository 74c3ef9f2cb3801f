//! Every case of the kernel corpus (tests/kernel-corpus/cases.yaml) whose verdict on an architecture
//! is a module, built with `klpx build` on that architecture's tiny tree and loaded: on x86_64,
//! ppc64le and s390 all of them in one guest, as separate livepatches (`-R`, so each stays enabled)
//! loaded one after another, with klpx verify's workload (a few hundred forks and execs, /proc
//! reads) after each one's enabling and disabling; on arm64 (Linux 6.12 cannot load livepatches
//! there) built and checked. A module that breaks a common kernel path fails here instead of on a
//! user's machine.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;

use common::cli::{assert_exit, build_module, klpx, text};
use klpx::kernel::tree::KernelTree;
use klpx_arch::Arch;

/// Builds take the source tree's lock: one at a time within this binary.
static SERIAL: Mutex<()> = Mutex::new(());

/// Builds every module-verdict case for `arch`; returns the tree and the modules. The tree is taken
/// here, under the serial lock: taking it takes the source tree's lock for a moment, which would make
/// another thread's `klpx build` refuse to start.
fn build_all(arch: Arch) -> (KernelTree, Vec<PathBuf>) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = common::kernel::built_tree(arch).unwrap_or_else(|e| panic!("{arch} tree: {e:#}"));
    let out = std::env::temp_dir().join(format!("klpx-corpus-boot-{arch}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut modules = Vec::new();
    let mut failures = Vec::new();
    for case in common::kernel::cases().unwrap() {
        if !case.applies_to(arch) || case.expect_for(arch).verdict != "patchable" {
            continue;
        }
        let patch = common::kernel::repo()
            .join("tests/kernel-corpus")
            .join(&case.patch);
        // Module names become livepatch names: at most 55 characters, `-` as `_`.
        let name = format!("lp-{}", case.name);
        let r = build_module(&tree, &out, &name, &["-R"], &[&patch]);
        if r.status.code() != Some(0) {
            failures.push(format!(
                "{arch} {}: klpx build exited {:?}: {}",
                case.name,
                r.status.code(),
                text(&r.stderr).lines().last().unwrap_or("")
            ));
            continue;
        }
        modules.push(out.join(format!("{name}.ko")));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(modules.len() >= 15, "only {} module cases", modules.len());
    (tree, modules)
}

fn boot_all(arch: Arch) {
    let (tree, modules) = build_all(arch);
    let mut args: Vec<String> = vec!["verify".into()];
    args.extend(modules.iter().map(|m| m.display().to_string()));
    args.extend([
        "--tree".into(),
        tree.out.display().to_string(),
        "--timeout".into(),
        "900".into(),
        "--check".into(),
        "cat /proc/version /proc/cmdline /proc/uptime /proc/loadavg >/dev/null; ls /sys/kernel/livepatch | wc -l".into(),
        "--expect-after".into(),
        format!("{}\n", modules.len()),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let v = klpx(&refs);
    assert_exit(
        &v,
        0,
        &format!(
            "{arch}: {} corpus livepatches loaded together",
            modules.len()
        ),
    );
    // None replaces another (`-R`): each is enabled and disabled, a workload run after each.
    assert!(
        text(&v.stdout).contains(&format!(
            "workload ran after each of {} transitions",
            2 * modules.len()
        )),
        "{}",
        text(&v.stdout)
    );
    if let Some(dir) = modules.first().and_then(|m| m.parent()) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn x86_64_corpus_modules_load_and_run() {
    boot_all(Arch::X86_64);
}

#[test]
fn ppc64le_corpus_modules_load_and_run() {
    boot_all(Arch::Ppc64le);
}

#[test]
fn s390_corpus_modules_load_and_run() {
    boot_all(Arch::S390x);
}

/// arm64 6.12 has no CONFIG_LIVEPATCH: every module-verdict case builds and passes klpx's module
/// checks (links, livepatch relocations resolve, relocation rules, patchable entries).
#[test]
fn arm64_corpus_modules_build_and_check() {
    let (tree, modules) = build_all(Arch::Arm64);
    for m in &modules {
        let v = klpx(&[
            "verify",
            m.to_str().unwrap(),
            "--tree",
            tree.out.to_str().unwrap(),
        ]);
        assert_exit(
            &v,
            0,
            &format!("arm64 verify without loading {}", m.display()),
        );
    }
}
