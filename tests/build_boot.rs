//! `klpx build` end to end on real kernels: the tiny x86_64, ppc64le and s390 trees (Debian's
//! linux-source-6.12 with tinyconfig and configs/, cross-compiled with Debian's compilers), built
//! once and cached; each patch of tests/boot/cases.yaml is built into a livepatch module that qemu
//! boots and loads, with a check of the behaviour before and after. The refusals must end in a clear
//! error and no module. The user's tree must never be left modified.

mod common;

use common::batch::{BootCase, Group, assert_result};
use common::cases::{case, cases};
use common::cli::{assert_exit, build_module, klpx, text};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use klpx::kernel::tree::KernelTree;
use klpx_arch::Arch;

/// Builds take a lock on the source tree: run them one at a time within this binary.
static SERIAL: Mutex<()> = Mutex::new(());

fn tree() -> KernelTree {
    tree_for(Arch::X86_64)
}

fn tree_for(arch: Arch) -> KernelTree {
    common::kernel::built_tree(arch).unwrap_or_else(|e| panic!("{arch} kernel tree: {e:#}"))
}

/// Contents of every file a patch touches, to prove the tree is left as it was.
fn snapshot(src: &Path, patch: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let text = std::fs::read_to_string(patch).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("+++ b/"))
        .map(|rel| {
            let p = src.join(rel.trim());
            let bytes = std::fs::read(&p).ok();
            (p, bytes)
        })
        .collect()
}

fn run_case(name: &str) {
    run_case_on(Arch::X86_64, name);
}

/// The shared boot of each architecture's cases (x86_64, ppc64le, s390, arm64).
static GROUPS: [Group; 4] = [Group::new(), Group::new(), Group::new(), Group::new()];

/// The cases of cases.yaml whose tests run [`run_case_on`] for `arch`: those that run there
/// (tests/boot/cases.yaml's `arches`) and are not distribution-only.
fn group_cases(arch: Arch) -> Vec<String> {
    cases()
        .into_iter()
        .filter(|c| c.runs_on(arch.name()))
        .map(|c| c.name)
        .collect()
}

/// Builds case `name` on `arch`'s tiny tree (every case of the architecture, on the first call)
/// and boots its module with the others in one guest; a case the shared boot did not reach boots
/// alone.
fn run_case_on(arch: Arch, name: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let group = &GROUPS[Arch::ALL.iter().position(|a| *a == arch).unwrap()];
    let tree = tree_for(arch);
    let with_tree = |args: &[String]| {
        let mut args = args.to_vec();
        args.extend(["--tree".into(), tree.out.display().to_string()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        klpx(&refs)
    };
    let result = group.result(name, &group_cases(arch), |n| build_case(arch, n), with_tree);
    assert_result(name, result, with_tree);
}

/// Builds case `name` with `klpx build` on `arch`'s tiny tree and checks the build (its outcome,
/// the functions it changed, the source tree left as it was); returns what to boot, or nothing for
/// a refusal, a no-change, or an architecture that cannot load livepatches (checked here without
/// loading).
fn build_case(arch: Arch, name: &str) -> Option<BootCase> {
    let c = case(name);
    let tree = tree_for(arch);
    let patch = common::kernel::repo().join("tests/boot").join(&c.patch);
    let out_dir = std::env::temp_dir().join(format!(
        "klpx-boot-{arch}-{}-{}",
        c.name,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&out_dir);
    let before = snapshot(&tree.src, &patch);
    let out = build_module(
        &tree,
        &out_dir,
        &format!("livepatch-{}", c.name),
        &["--json"],
        &[&patch],
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        snapshot(&tree.src, &patch),
        before,
        "{name}: the source tree was left modified"
    );
    let ko = out_dir.join(format!("livepatch-{}.ko", c.name));
    match c.outcome.as_str() {
        "refused" => {
            assert_eq!(out.status.code(), Some(3), "{name}: {stdout}\n{stderr}");
            let msg = c.message.as_deref().unwrap();
            assert!(
                stderr.contains(msg) || stdout.contains(msg),
                "{name}: the refusal does not name {msg}:\n{stdout}\n{stderr}"
            );
            assert!(!ko.exists(), "{name}: a module was written");
            return None;
        }
        "no-change" => {
            assert_eq!(out.status.code(), Some(1), "{name}: {stdout}\n{stderr}");
            assert!(!ko.exists(), "{name}: a module was written");
            return None;
        }
        _ => assert_eq!(out.status.code(), Some(0), "{name}: {stdout}\n{stderr}"),
    }
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("build --json");
    let mut changed: Vec<String> = Vec::new();
    let mut new: Vec<String> = Vec::new();
    for o in report["objects"].as_array().unwrap() {
        for f in o["changed_functions"].as_array().unwrap() {
            changed.push(f.as_str().unwrap().to_string());
        }
        for f in o["new_functions"].as_array().unwrap() {
            new.push(f.as_str().unwrap().to_string());
        }
    }
    changed.sort();
    let mut want = c
        .changed_by_arch
        .get(arch.name())
        .cloned()
        .unwrap_or_else(|| c.changed.clone());
    want.sort();
    assert_eq!(changed, want, "{name}: changed functions");
    for n in &c.new {
        assert!(
            new.contains(n),
            "{name}: {n} is not among the new functions {new:?}"
        );
    }
    assert!(ko.is_file(), "{name}: no module at {}", ko.display());
    if !arch.backend().livepatch_loadable() {
        // Linux 6.12 arm64: built and checked (links, livepatch relocations resolve against vmlinux,
        // patchable entries present), and said so; there is nothing that could load it.
        assert_eq!(report["loadable"], false, "{name}: {stdout}");
        // klpx verify checks it without loading, against the tree's vmlinux, and says so.
        let v = klpx(&[
            "verify",
            ko.to_str().unwrap(),
            "--tree",
            tree.out.to_str().unwrap(),
        ]);
        assert_exit(&v, 0, &format!("{name}: verify without loading"));
        let said = text(&v.stdout);
        assert!(said.contains("was not loaded"), "{name}: {said}");
        for f in &want {
            assert!(
                said.contains(&format!("{f}: patchable entry in vmlinux")),
                "{name}: {said}"
            );
        }
        let _ = std::fs::remove_dir_all(&out_dir);
        return None;
    }

    // Booted with the architecture's other cases; the output directory stays until the run ends
    // (the temporary directory is this process's own).
    let mut modules: Vec<PathBuf> = c.load.iter().map(|l| tree.out.join(l)).collect();
    modules.push(ko);
    Some(BootCase {
        modules,
        check: c.check.iter().cloned().collect(),
        expect_before: c.before.clone(),
        expect_after: c.after.clone(),
        files: c.files.iter().map(|f| tree.out.join(f)).collect(),
        scratch: Some(out_dir),
    })
}

#[test]
fn string_change() {
    run_case("string-change");
}
#[test]
fn new_function() {
    run_case("new-function");
}
#[test]
fn new_global_function_called_from_another_file() {
    run_case("new-global-function");
}
#[test]
fn new_static_data() {
    run_case("new-static-data");
}
#[test]
fn static_local_variable() {
    run_case("static-local");
}
#[test]
fn header_edit_included_by_several_files() {
    run_case("header-edit");
}
#[test]
fn callbacks() {
    run_case("callbacks");
}
#[test]
fn shadow_variable() {
    run_case("shadow-variable");
}
#[test]
fn syscall() {
    run_case("syscall");
}
#[test]
fn loadable_module_function() {
    run_case("module-function");
}
#[test]
fn fork_copy_process_many_data_references() {
    run_case("fork-copy-process");
}
#[test]
fn exit_do_exit() {
    run_case("exit-do-exit");
}
#[test]
fn kallsyms_and_stacks_name_the_real_function() {
    run_case("kallsyms-names");
}
#[test]
fn proc_status_string_table() {
    run_case("proc-status-string-table");
}
#[test]
fn sys_prctl_jump_table() {
    run_case("sys-prctl-jump-table");
}
#[test]
fn refuses_changed_global_data() {
    run_case("refuse-global-data");
}
#[test]
fn refuses_init_change() {
    run_case("refuse-init");
}
#[test]
fn refuses_assembly() {
    run_case("refuse-asm");
}
#[test]
fn refuses_lib() {
    run_case("refuse-lib");
}
#[test]
fn refuses_relocation_out_of_range() {
    run_case("refuse-reloc-range");
}
#[test]
fn line_shift_only_is_no_change() {
    run_case("line-shift-only");
}

/// The same patches cross-built for ppc64le and s390 (Debian's cross compilers), booted in
/// `qemu-system-ppc64 -M pseries` and `qemu-system-s390x`.
macro_rules! cross_cases {
    ($arch:ident, $a:expr) => {
        mod $arch {
            use super::*;
            #[test]
            fn string_change() {
                run_case_on($a, "string-change");
            }
            #[test]
            fn new_function() {
                run_case_on($a, "new-function");
            }
            #[test]
            fn new_global_function_called_from_another_file() {
                run_case_on($a, "new-global-function");
            }
            #[test]
            fn new_static_data() {
                run_case_on($a, "new-static-data");
            }
            #[test]
            fn static_local_variable() {
                run_case_on($a, "static-local");
            }
            #[test]
            fn header_edit_included_by_several_files() {
                run_case_on($a, "header-edit");
            }
            #[test]
            fn callbacks() {
                run_case_on($a, "callbacks");
            }
            #[test]
            fn shadow_variable() {
                run_case_on($a, "shadow-variable");
            }
            #[test]
            fn syscall() {
                run_case_on($a, "syscall");
            }
            #[test]
            fn loadable_module_function() {
                run_case_on($a, "module-function");
            }
            #[test]
            fn fork_copy_process_many_data_references() {
                run_case_on($a, "fork-copy-process");
            }
            #[test]
            fn exit_do_exit() {
                run_case_on($a, "exit-do-exit");
            }
            #[test]
            fn kallsyms_and_stacks_name_the_real_function() {
                run_case_on($a, "kallsyms-names");
            }
            #[test]
            fn proc_status_string_table() {
                run_case_on($a, "proc-status-string-table");
            }
            #[test]
            fn sys_prctl_jump_table() {
                run_case_on($a, "sys-prctl-jump-table");
            }
            #[test]
            fn refuses_changed_global_data() {
                run_case_on($a, "refuse-global-data");
            }
            #[test]
            fn refuses_init_change() {
                run_case_on($a, "refuse-init");
            }
            #[test]
            fn line_shift_only_is_no_change() {
                run_case_on($a, "line-shift-only");
            }
        }
    };
}

cross_cases!(ppc64le, Arch::Ppc64le);
cross_cases!(s390, Arch::S390x);

/// arm64 (Linux 6.12 cannot load livepatches there): the patches that do not use the livepatch API
/// (callbacks, shadow variables) are built and the module checked without loading.
mod arm64 {
    use super::*;
    #[test]
    fn string_change() {
        run_case_on(Arch::Arm64, "string-change");
    }
    #[test]
    fn new_function() {
        run_case_on(Arch::Arm64, "new-function");
    }
    #[test]
    fn new_global_function_called_from_another_file() {
        run_case_on(Arch::Arm64, "new-global-function");
    }
    #[test]
    fn new_static_data() {
        run_case_on(Arch::Arm64, "new-static-data");
    }
    #[test]
    fn static_local_variable() {
        run_case_on(Arch::Arm64, "static-local");
    }
    #[test]
    fn header_edit_included_by_several_files() {
        run_case_on(Arch::Arm64, "header-edit");
    }
    #[test]
    fn syscall() {
        run_case_on(Arch::Arm64, "syscall");
    }
    #[test]
    fn loadable_module_function() {
        run_case_on(Arch::Arm64, "module-function");
    }
    #[test]
    fn fork_copy_process_many_data_references() {
        run_case_on(Arch::Arm64, "fork-copy-process");
    }
    #[test]
    fn exit_do_exit() {
        run_case_on(Arch::Arm64, "exit-do-exit");
    }
    #[test]
    fn kallsyms_and_stacks_name_the_real_function() {
        run_case_on(Arch::Arm64, "kallsyms-names");
    }
    #[test]
    fn proc_status_string_table() {
        run_case_on(Arch::Arm64, "proc-status-string-table");
    }
    #[test]
    fn sys_prctl_jump_table() {
        run_case_on(Arch::Arm64, "sys-prctl-jump-table");
    }
    #[test]
    fn refuses_changed_global_data() {
        run_case_on(Arch::Arm64, "refuse-global-data");
    }
    #[test]
    fn refuses_init_change() {
        run_case_on(Arch::Arm64, "refuse-init");
    }
    #[test]
    fn line_shift_only_is_no_change() {
        run_case_on(Arch::Arm64, "line-shift-only");
    }
}

/// The tests follow tests/boot/cases.yaml: every case has a test on each architecture its `arches`
/// names, and none elsewhere (those for distribution kernels only are in distro_boot.rs).
#[test]
fn every_case_has_a_test() {
    let src = std::fs::read_to_string(file!()).unwrap();
    let cross = &src
        [src.find("macro_rules! cross_cases").unwrap()..src.find("cross_cases!(ppc64le").unwrap()];
    let arm = &src[src.find("mod arm64 {").unwrap()..];
    let x86 = &src[..src.find("macro_rules! cross_cases").unwrap()];
    let tested = |arch: &str, name: &str| match arch {
        "x86_64" => x86.contains(&format!("run_case(\"{name}\")")),
        "ppc64le" | "s390" => cross.contains(&format!("run_case_on($a, \"{name}\")")),
        "arm64" => arm.contains(&format!("run_case_on(Arch::Arm64, \"{name}\")")),
        _ => unreachable!(),
    };
    for c in cases() {
        for arch in ["x86_64", "ppc64le", "s390", "arm64"] {
            assert_eq!(
                tested(arch, &c.name),
                c.runs_on(arch),
                "case {} on {arch}: cases.yaml and the tests disagree",
                c.name
            );
        }
    }
}

/// An out-of-tree module (tests/boot/oot), built with `make M=` in a scratch copy, patched with
/// `--oot-module`/`--oot-module-src`, loaded in qemu with the livepatch.
#[test]
fn out_of_tree_module_function() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = tree();
    let repo = common::kernel::repo();
    let dir = std::env::temp_dir().join(format!("klpx-oot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["hello.c", "Kbuild"] {
        std::fs::copy(repo.join("tests/boot/oot").join(f), dir.join(f)).unwrap();
    }
    let make = Command::new("make")
        .args([
            "-C",
            tree.out.to_str().unwrap(),
            &format!("M={}", dir.display()),
            "ARCH=x86",
            "modules",
        ])
        .output()
        .unwrap();
    assert!(make.status.success(), "{}", text(&make.stderr));
    let ko = dir.join("klpx-oot.ko");
    let before = std::fs::read(dir.join("hello.c")).unwrap();
    let out = klpx(&[
        "build",
        "-s",
        tree.src.to_str().unwrap(),
        "-O",
        tree.out.to_str().unwrap(),
        "--oot-module",
        ko.to_str().unwrap(),
        "--oot-module-src",
        dir.to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
        "-n",
        "livepatch-oot",
        repo.join("tests/boot/oot-module.patch").to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("answer_show"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(std::fs::read(dir.join("hello.c")).unwrap(), before);
    let v = klpx(&[
        "verify",
        ko.to_str().unwrap(),
        dir.join("livepatch-oot.ko").to_str().unwrap(),
        "--tree",
        tree.out.to_str().unwrap(),
        "--check",
        "cat /sys/kernel/klpx_oot/answer",
        "--expect-before",
        "42",
        "--expect-after",
        "43",
    ]);
    assert_exit(&v, 0, "klpx verify of the out-of-tree livepatch");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--launcher ccache`: both compiles of the object and the module link go through the launcher (its
/// cache fills), and the module still loads and works.
#[test]
fn compiler_launcher() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = tree();
    let dir = std::env::temp_dir().join(format!("klpx-ccache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ccache_dir = dir.join("ccache");
    std::fs::create_dir_all(&ccache_dir).unwrap();
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let out = Command::new(env!("CARGO_BIN_EXE_klpx"))
        .env("CCACHE_DIR", &ccache_dir)
        .args([
            "build",
            "--launcher",
            "ccache",
            "-s",
            tree.src.to_str().unwrap(),
            "-O",
            tree.out.to_str().unwrap(),
            "-o",
            dir.to_str().unwrap(),
            "-n",
            "livepatch-ccache",
            patch.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_exit(&out, 0, "klpx build --launcher ccache");
    let cached = std::fs::read_dir(&ccache_dir).unwrap().count();
    assert!(
        cached > 0,
        "ccache saw no compile: {}",
        ccache_dir.display()
    );
    let v = klpx(&[
        "verify",
        dir.join("livepatch-ccache.ko").to_str().unwrap(),
        "--tree",
        tree.out.to_str().unwrap(),
        "--check",
        "cat /proc/cmdline",
        "--expect-after",
        "klpx console=",
    ]);
    assert_exit(&v, 0, "klpx verify");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `.c` file that has no object of its own (kernel/sched/idle.c is `#include`d by
/// build_policy.c) is found through the recorded dependency lists.
#[test]
fn included_c_file_is_found_through_dependencies() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = tree();
    let rel = "kernel/sched/idle.c";
    let bytes = std::fs::read(tree.src.join(rel)).unwrap();
    let edits = vec![klpx::patch::source::FileEdit {
        rel: rel.into(),
        path: tree.src.join(rel),
        before: Some(bytes.clone()),
        after: Some(bytes),
        placements: vec![],
    }];
    let objects = klpx::livepatch::pipeline::plan_objects(&tree.out, &edits).unwrap();
    let names: Vec<&str> = objects.iter().map(|o| o.object.as_str()).collect();
    assert_eq!(names, ["kernel/sched/build_policy.o"]);
}

/// kpatch callbacks in three objects of one patch (tests/boot/callbacks-objects.patch): a vmlinux
/// file and two loadable modules, each declaring all four callbacks under the same function names.
/// Each callback must run for its own klp_object only: the vmlinux and kobject-example ones when the
/// livepatch is enabled (kobject-example is loaded first), kset-example's when that module is loaded
/// after the livepatch, and all three objects' unpatch callbacks when it is disabled.
fn callbacks_per_object_on(arch: Arch) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = tree_for(arch);
    let patch = common::kernel::repo().join("tests/boot/callbacks-objects.patch");
    let out_dir = std::env::temp_dir().join(format!("klpx-cbobj-{arch}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let before = snapshot(&tree.src, &patch);
    let out = build_module(&tree, &out_dir, "livepatch-cbobj", &[], &[&patch]);
    assert_eq!(
        snapshot(&tree.src, &patch),
        before,
        "source tree left modified"
    );
    assert_exit(&out, 0, "klpx build of callbacks in three objects");
    let ko = out_dir.join("livepatch-cbobj.ko");
    let samples = tree.out.join("samples/kobject");
    let check = "if [ -d /sys/kernel/livepatch/livepatch_cbobj ] && ! grep -q '^kset_example ' /proc/modules; \
                 then insmod /klpx/files/kset-example.ko || exit 1; fi; \
                 cat /proc/cmdline /sys/kernel/kobject_example/foo; dmesg | grep klpx-cb; true";
    let v = klpx(&[
        "verify",
        samples.join("kobject-example.ko").to_str().unwrap(),
        ko.to_str().unwrap(),
        "--tree",
        tree.out.to_str().unwrap(),
        "--file",
        samples.join("kset-example.ko").to_str().unwrap(),
        "--check",
        check,
        "--expect-after",
        "cbobj console=",
        "--json",
    ]);
    assert_exit(&v, 0, "klpx verify of callbacks in three objects");
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    let output = |when: &str| {
        report["checks"][0][when]["output"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Each file's tag and the klp_object its callbacks must see.
    let objects = [
        ("cmdline", "vmlinux"),
        ("kobject-example", "kobject_example"),
        ("kset-example", "kset_example"),
    ];
    let lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("klpx-cb: "))
            .map(|l| l[l.find("klpx-cb: ").unwrap()..].trim().to_string())
            .collect()
    };
    let expect = |kinds: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = objects
            .iter()
            .flat_map(|(tag, obj)| {
                kinds
                    .iter()
                    .map(move |k| format!("klpx-cb: {tag} {k} obj={obj}"))
            })
            .collect();
        v.sort();
        v
    };
    let mut after = lines(&output("after"));
    after.sort();
    assert_eq!(
        after,
        expect(&["pre_patch", "post_patch"]),
        "{}",
        output("after")
    );
    let mut unloaded = lines(&output("unloaded"));
    unloaded.sort();
    assert_eq!(
        unloaded,
        expect(&["pre_patch", "post_patch", "pre_unpatch", "post_unpatch"]),
        "{}",
        output("unloaded")
    );
    assert!(lines(&output("before")).is_empty());
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn callbacks_per_object() {
    callbacks_per_object_on(Arch::X86_64);
}
#[test]
fn ppc64le_callbacks_per_object() {
    callbacks_per_object_on(Arch::Ppc64le);
}
#[test]
fn s390_callbacks_per_object() {
    callbacks_per_object_on(Arch::S390x);
}

/// A second build of the same patch takes the original object from the object cache (the patched
/// side is compiled again), and that object is byte for byte the one the first build compiled.
#[test]
fn a_second_build_takes_the_original_objects_from_the_cache() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = tree();
    let cache = klpx::kbuild::objcache::dir_of(&tree.out);
    let _ = std::fs::remove_dir_all(&cache);
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let dir = std::env::temp_dir().join(format!("klpx-objcache-{}", std::process::id()));
    let build = |out: &str| {
        let out_dir = dir.join(out);
        // --skip-cleanup keeps the work directory (named after klpx's pid) to read orig.o from.
        let child = Command::new(env!("CARGO_BIN_EXE_klpx"))
            .args(["build", "-s", tree.src.to_str().unwrap()])
            .args(["-O", tree.out.to_str().unwrap()])
            .args(["-o", out_dir.to_str().unwrap(), "-n", "livepatch-cached"])
            .args(["--json", "--skip-cleanup"])
            .arg(&patch)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let run = child.wait_with_output().unwrap();
        assert_exit(&run, 0, out);
        let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        let work = klpx::kernel::cache::root()
            .join("build")
            .join(format!("livepatch-cached-{pid}"));
        let orig = std::fs::read(work.join("objects/0/orig.o")).unwrap();
        std::fs::remove_dir_all(&work).unwrap();
        assert!(
            out_dir.join("livepatch-cached.ko").is_file(),
            "{out}: no module"
        );
        (report["cached_objects"].as_u64().unwrap(), orig)
    };
    let (first_hits, compiled) = build("first");
    let (second_hits, cached) = build("second");
    assert_eq!(first_hits, 0, "the cache was emptied");
    assert_eq!(second_hits, 1, "fs/proc/cmdline.o comes from the cache");
    assert!(compiled == cached, "the cached object is the one compiled");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rebuilds of one patch file, edited between builds, in the same tree (module::link): the same
/// inputs keep the module kbuild linked last time (make does not run, the linked file keeps its
/// modification time); a change to the part's bytes only runs kbuild's recorded link commands again,
/// and the module is byte-equal to the one make linked from the same inputs; a new undefined symbol
/// or a changed `Module.symvers` runs make.
#[test]
fn rebuilds_keep_replay_or_make_the_module_link() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = tree();
    let name = "livepatch-relink";
    let mdir = klpx::kbuild::objcache::dir_of(&tree.out)
        .join("modules")
        .join(name);
    let _ = std::fs::remove_dir_all(&mdir);
    let linked = mdir.join(format!("{name}.ko"));
    let original =
        std::fs::read_to_string(common::kernel::repo().join("examples/proc-cmdline.patch"))
            .unwrap();
    let dir = std::env::temp_dir().join(format!("klpx-relink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One patch file, edited between builds as an author edits a fix (its name is in the
    // module's description).
    let patch = dir.join("fix.patch");
    let build = |text: &str, out: &str| {
        std::fs::write(&patch, text).unwrap();
        let run = build_module(&tree, &dir.join(out), name, &["--json"], &[&patch]);
        assert_exit(&run, 0, out);
        let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        let ko = std::fs::read(dir.join(out).join(format!("{name}.ko"))).unwrap();
        let mtime = std::fs::metadata(&linked).unwrap().modified().unwrap();
        (
            ko,
            mtime,
            report["link"].as_str().unwrap_or("none").to_string(),
        )
    };
    let (first, t1, how) = build(&original, "first");
    assert_eq!(how, "make", "a new module directory");
    let (again, t2, how) = build(&original, "again");
    assert_eq!(
        (t1, how.as_str()),
        (t2, "kept"),
        "the same inputs linked again"
    );
    assert!(first == again, "the kept module differs from the first");
    // Another string: only the part's bytes change, not its sections or symbols.
    let edited = original.replacen("\"klpx ", "\"Klpx ", 1);
    let (changed, t3, how) = build(&edited, "edited");
    assert_ne!(t2, t3, "an edited patch was not linked again");
    assert_eq!(how, "replayed", "an edited string");
    assert!(
        changed != first,
        "the edited patch's module is the first one"
    );
    // Linked without make, the first patch's module is byte for byte the one make linked.
    let (back, t4, how) = build(&original, "back");
    assert_ne!(t3, t4, "going back to the first patch was not linked again");
    assert_eq!(how, "replayed", "going back");
    assert!(
        back == first,
        "the first patch's module differs when linked again"
    );
    // A call to another kernel function is another undefined symbol for modpost: make runs, and
    // the module needs seq_printf.
    let printf = original.replacen("seq_puts(m, \"klpx \");", "seq_printf(m, \"klpx \");", 1);
    assert_ne!(printf, original);
    let (_, _, how) = build(&printf, "printf");
    assert_eq!(how, "make", "a new undefined symbol");
    let versions = common::cli::tool("readelf", &["-sW", linked.to_str().unwrap()]);
    assert!(versions.contains("seq_printf"), "{versions}");
    let symvers = tree.out.join("Module.symvers");
    std::fs::File::options()
        .append(true)
        .open(&symvers)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    let (_, _, how) = build(&printf, "tree-changed");
    assert_eq!(how, "make", "a changed Module.symvers");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A livepatch whose pre-patch callback faults oopses inside `klp_enable_patch`, killing insmod with
/// the livepatch core's `klp_mutex` held; the guest's next step (disabling the patch) waits for it
/// forever. `klpx verify` names the fault and where it was, and stops qemu once the console has gone
/// quiet after it, not at its time limit (the report says which: `stopped_after_fault`, not
/// `timed_out`).
#[test]
fn a_fault_in_the_guest_ends_the_boot_without_waiting_for_the_time_limit() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = tree();
    let text =
        std::fs::read_to_string(common::kernel::repo().join("tests/boot/callbacks.patch")).unwrap();
    let faulting = text.replacen(
        "+\treturn 0;\n+}\n+KPATCH_PRE_PATCH_CALLBACK",
        "+\t*(volatile int *)16 = 1;\n+\treturn 0;\n+}\n+KPATCH_PRE_PATCH_CALLBACK",
        1,
    );
    assert_ne!(faulting, text);
    // One line more in the hunk it is added to.
    let faulting = faulting.replacen("@@ -4,9 +4,24 @@", "@@ -4,9 +4,25 @@", 1);
    let dir = std::env::temp_dir().join(format!("klpx-fault-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let patch = dir.join("fault.patch");
    std::fs::write(&patch, faulting).unwrap();
    let run = build_module(&tree, &dir, "livepatch-fault", &[], &[&patch]);
    assert_exit(&run, 0, "build");
    let v = klpx(&[
        "verify",
        dir.join("livepatch-fault.ko").to_str().unwrap(),
        "--tree",
        tree.out.to_str().unwrap(),
        "--check",
        "cat /proc/cmdline",
        "--timeout",
        "300",
        "--json",
    ]);
    assert_exit(&v, 3, "verify");
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    let why = report["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("reported a problem") && why.contains("klpx_pre_patch"),
        "{why}"
    );
    assert_eq!(report["stopped_after_fault"], true, "{why}");
    assert_eq!(report["timed_out"], false);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `klpx info` on a module klpx built names the patched function (cases.yaml's expectation for
/// string-change), the version magic kmod's `modinfo` reads, and the livepatch relocations `readelf`
/// counts; on the kernel's own sample livepatch, what is there without klpx's records.
#[test]
fn klpx_info_names_what_the_module_patches() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = tree();
    let c = case("string-change");
    let patch = common::kernel::repo().join("tests/boot").join(&c.patch);
    let dir = std::env::temp_dir().join(format!("klpx-info-{}", std::process::id()));
    let run = build_module(&tree, &dir, "livepatch-info", &[], &[&patch]);
    assert_exit(&run, 0, "build");
    let ko = dir.join("livepatch-info.ko");
    let out = klpx(&["info", "--json", ko.to_str().unwrap()]);
    assert_exit(&out, 0, "info");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let functions: Vec<String> = info["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}:{}:{}",
                f["object"].as_str().unwrap(),
                f["function"].as_str().unwrap(),
                f["sympos"]
            )
        })
        .collect();
    // The name is unique in vmlinux (position 0), as nm says.
    let nm = Command::new("nm")
        .arg(tree.out.join("vmlinux"))
        .output()
        .unwrap();
    let nm = text(&nm.stdout);
    for f in &c.changed {
        let n = nm.lines().filter(|l| l.ends_with(&format!(" {f}"))).count();
        assert_eq!(n, 1, "{f} in vmlinux");
    }
    let want: Vec<String> = c.changed.iter().map(|f| format!("vmlinux:{f}:0")).collect();
    assert_eq!(functions, want);
    assert_eq!(info["replace"], true);
    assert_eq!(info["livepatch"], true);
    let modinfo = Command::new("modinfo")
        .args(["-F", "vermagic"])
        .arg(&ko)
        .output()
        .unwrap();
    assert_eq!(
        info["vermagic"].as_str().unwrap().trim(),
        text(&modinfo.stdout).trim()
    );
    let readelf = Command::new("readelf")
        .args(["-rW"])
        .arg(&ko)
        .output()
        .unwrap();
    let readelf = text(&readelf.stdout);
    let at = readelf
        .find("'.klp.rela.vmlinux.")
        .expect("a .klp.rela section");
    let entries: usize = readelf[at..]
        .lines()
        .next()
        .and_then(|l| l.split(" contains ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(info["klp_relocations"]["vmlinux"], entries);
    // The kernel's sample: a livepatch, no klpx records.
    let sample = tree.out.join("samples/livepatch/livepatch-sample.ko");
    let out = klpx(&["info", sample.to_str().unwrap()]);
    assert_exit(&out, 0, "info on the sample");
    let said = text(&out.stdout);
    assert!(said.contains("livepatch:   yes"), "{said}");
    assert!(said.contains("not recorded"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
}
