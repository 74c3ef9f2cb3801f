//! `klpx build --distro debian` on Debian's own amd64 kernel, from Debian's packages, with no kernel
//! build: the patches of tests/boot/cases.yaml are built against the release that pairs with
//! `linux-source-6.12` (Debian's config: IBT, call padding, retpolines and return thunks, call depth
//! tracking, MODVERSIONS, BTF, dynamic debug), and `klpx verify --distro debian` boots Debian's own
//! vmlinuz in qemu, loads each module, and checks the behaviour before, after and once it is removed.
//! The packages and the prepared tree are cached (`~/.cache/klpx/distro/debian`) across runs.

mod common;

use common::batch::{BootCase, Group, assert_result};
use common::cases::case;
use common::cli::{assert_exit, klpx, text};

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Builds take the Debian source's lock: one at a time within this binary.
static SERIAL: Mutex<()> = Mutex::new(());

/// `klpx build --distro debian --json -o OUT -n NAME EXTRA... PATCH`.
fn build(out_dir: &Path, name: &str, extra: &[&str], patch: &Path) -> std::process::Output {
    let mut args = vec![
        "build",
        "--distro",
        "debian",
        "--json",
        "-o",
        out_dir.to_str().unwrap(),
        "-n",
        name,
    ];
    args.extend_from_slice(extra);
    args.push(patch.to_str().unwrap());
    klpx(&args)
}

/// The current release's files in klpx's cache, fetched by a `--distro debian` build into
/// `dir/fetch`: its name, its directory (headers, dbg, image) and its unpacked source.
struct Fetched {
    release: String,
    kdir: PathBuf,
    source: PathBuf,
}

fn fetched(dir: &Path) -> Fetched {
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let out = build(&dir.join("fetch"), "livepatch-fetch", &[], &patch);
    assert_exit(&out, 0, "--distro build");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let release = r["kernel_release"].as_str().unwrap().to_string();
    let cache = klpx::kernel::cache::root();
    let kdir = cache.join("distro/debian").join(&release);
    let resolved = std::fs::read_to_string(kdir.join("resolved")).unwrap();
    let version = resolved.split_whitespace().next().unwrap().to_string();
    let source = cache
        .join("distro/debian/source")
        .join(version)
        .join("linux-source-6.12");
    Fetched {
        release,
        kdir,
        source,
    }
}

/// A module of the release's image package (`kernel/fs/binfmt_misc.ko`), decompressed into `dir`.
fn shipped_module(release: &str, rel: &str, dir: &Path) -> PathBuf {
    let cache = klpx::kernel::cache::root();
    let xz = cache
        .join("distro/debian")
        .join(release)
        .join("image/lib/modules")
        .join(release)
        .join(format!("{rel}.xz"));
    let out = dir.join(Path::new(rel).file_name().unwrap());
    let data = std::process::Command::new("xz")
        .arg("-dc")
        .arg(&xz)
        .output()
        .expect("running xz");
    assert!(data.status.success(), "{}: cannot decompress", xz.display());
    std::fs::write(&out, data.stdout).unwrap();
    out
}

/// The shared boot of the cases on Debian's kernel.
static GROUP: Group = Group::new();

/// The cases of cases.yaml that run on Debian's kernel, each with a test calling [`run_case`]
/// (`every_distro_case_has_a_test` holds the two lists together).
const DISTRO_CASES: &[&str] = &[
    "string-change",
    "new-function",
    "new-global-function",
    "new-static-data",
    "static-local",
    "header-edit",
    "callbacks",
    "shadow-variable",
    "syscall",
    "fork-copy-process",
    "exit-do-exit",
    "proc-status-string-table",
    "sys-prctl-jump-table",
    "kallsyms-names",
    "binfmt-misc-module",
    "dynamic-debug",
    "module-static-name",
    "tracepoint",
    "symbol-namespace",
    "refuse-global-data",
    "refuse-init",
    "refuse-asm",
    "refuse-lib",
    "line-shift-only",
];

fn group_cases() -> Vec<String> {
    DISTRO_CASES.iter().map(|c| c.to_string()).collect()
}

/// Builds case `name` for Debian's current amd64 kernel (every case, on the first call) and boots
/// its module with the others in one guest on Debian's vmlinuz; a case the shared boot did not
/// reach boots alone. The guest must have run Debian's release.
fn run_case(name: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let release = klpx::distro::debian::resolve(klpx_arch::Arch::X86_64, None)
        .expect("Debian's current amd64 release")
        .release;
    let on_debian = |args: &[String]| {
        let mut args = args.to_vec();
        args.extend(["--distro".into(), format!("debian:{release}")]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        klpx(&refs)
    };
    let result = GROUP.result(name, &group_cases(), build_case, on_debian);
    if let Some(ran) = assert_result(name, result, on_debian) {
        assert_eq!(
            ran, release,
            "{name}: the guest did not run Debian's kernel"
        );
    }
}

/// Builds case `name` with `klpx build --distro debian` and checks the build; returns what to
/// boot (nothing for a refusal or a no-change).
fn build_case(name: &str) -> Option<BootCase> {
    let c = case(name);
    let patch = common::kernel::repo().join("tests/boot").join(&c.patch);
    let out_dir =
        std::env::temp_dir().join(format!("klpx-distro-{}-{}", c.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let module = format!("livepatch-{}", c.name);
    let out = build(&out_dir, &module, &[], &patch);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let ko = out_dir.join(format!("{module}.ko"));
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
    let mut changed: Vec<String> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| o["changed_functions"].as_array().unwrap().clone())
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    changed.sort();
    let mut want = c
        .changed_on_debian
        .clone()
        .unwrap_or_else(|| c.changed.clone());
    want.sort();
    assert_eq!(changed, want, "{name}: changed functions");
    let release = report["kernel_release"].as_str().expect("kernel_release");
    assert!(
        release.ends_with("-amd64"),
        "{name}: the module is not built for Debian's release: {release}"
    );

    let files = c
        .shipped_files
        .iter()
        .map(|f| shipped_module(release, f, &out_dir))
        .collect();
    let (before, after) = (c.before.clone(), c.after.clone());
    Some(BootCase {
        modules: vec![ko],
        check: c.check.into_iter().collect(),
        expect_before: before,
        expect_after: after,
        files,
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
fn fork_copy_process_many_data_references() {
    run_case("fork-copy-process");
}

#[test]
fn exit_do_exit() {
    run_case("exit-do-exit");
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
fn kallsyms_and_stacks_name_the_real_function() {
    run_case("kallsyms-names");
}

#[test]
fn shipped_module_function_patched_as_it_loads() {
    run_case("binfmt-misc-module");
}

#[test]
fn dynamic_debug_site_of_a_changed_function() {
    run_case("dynamic-debug");
}

#[test]
fn module_static_function_named_like_vmlinux_ones() {
    run_case("module-static-name");
}

#[test]
fn tracepoint_of_a_changed_function() {
    run_case("tracepoint");
}

#[test]
fn symbol_namespace_imported() {
    run_case("symbol-namespace");
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
fn line_shift_only_is_no_change() {
    run_case("line-shift-only");
}

/// The rebuilt original must be the shipped kernel's function: a compiler that reports the same
/// version as Debian's but generates other code (a wrapper adding -fno-omit-frame-pointer, as a
/// differently built gcc would) is refused with the function named, and no module is written; --skip-identity-check
/// builds anyway. The other compiler gets its own prepared tree, removed afterwards.
#[test]
fn identity_check_refuses_code_the_shipped_kernel_does_not_have() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("klpx-distro-identity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cc = dir.join("x86_64-linux-gnu-gcc-12");
    std::fs::write(
        &cc,
        "#!/bin/sh\nexec /usr/bin/x86_64-linux-gnu-gcc-12 \"$@\" -fno-omit-frame-pointer\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let out_dir = dir.join("out");
    let cc = cc.to_str().unwrap();
    let out = build(&out_dir, "livepatch-identity", &["--cc", cc], &patch);
    assert_exit(&out, 2, "identity check");
    let err = text(&out.stderr);
    assert!(
        err.contains("cmdline_proc_show: the rebuilt original differs from the shipped kernel's"),
        "{err}"
    );
    assert!(!out_dir.join("livepatch-identity.ko").exists());
    let out = build(
        &out_dir,
        "livepatch-identity",
        &["--cc", cc, "--skip-identity-check"],
        &patch,
    );
    assert_exit(&out, 0, "--skip-identity-check");
    assert!(out_dir.join("livepatch-identity.ko").is_file());
    for t in other_trees() {
        let _ = std::fs::remove_dir_all(t);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Prepared trees of other compilers in the cache (`distro/debian/*/obj-*`).
fn other_trees() -> Vec<PathBuf> {
    let cache = klpx::kernel::cache::root();
    let mut out = Vec::new();
    for rel in std::fs::read_dir(cache.join("distro/debian"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for e in std::fs::read_dir(rel.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with("obj-") {
                out.push(e.path());
            }
        }
    }
    out
}

/// The objects of a header edit, found without a full build (through `#include` lines, compiled by
/// kbuild in a prepared tree and judged by vmlinux's symbols), are the objects the built tree's
/// recorded dependencies name: the tiny x86_64 tree, once as built, once as a never-built kernel
/// given by its source, config, Module.symvers and vmlinux (kpatch-build's shape).
#[test]
fn prepared_tree_finds_the_objects_the_built_tree_finds() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = common::kernel::built_tree(klpx_arch::Arch::X86_64).expect("the tiny x86_64 tree");
    let patch = common::kernel::repo().join("tests/boot/header-edit.patch");
    let dir = std::env::temp_dir().join(format!("klpx-prepared-equal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let objects = |out: &std::process::Output, what: &str| -> Vec<(String, String)> {
        assert_exit(out, 0, what);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut v: Vec<(String, String)> = r["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o["object"].as_str().unwrap().to_string(),
                    o["verdict"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let built = common::cli::build_module(
        &tree,
        &dir.join("built"),
        "livepatch-hdr-built",
        &["--json"],
        &[&patch],
    );
    let built = objects(&built, "built tree");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let prepared = klpx(&[
        "build",
        "--json",
        "-s",
        &s(&tree.src),
        "-c",
        &s(&tree.out.join(".config")),
        "--symvers",
        &s(&tree.out.join("Module.symvers")),
        "-v",
        &s(&tree.out.join("vmlinux")),
        "-O",
        &s(&dir.join("prepared-tree")),
        "-o",
        &s(&dir.join("prepared")),
        "-n",
        "livepatch-hdr-prepared",
        &s(&patch),
    ]);
    let prepared = objects(&prepared, "prepared tree");
    assert!(
        built.len() > 10,
        "the header reaches many objects: {built:?}"
    );
    assert_eq!(prepared, built, "objects and verdicts, prepared vs built");
    assert!(dir.join("prepared/livepatch-hdr-prepared.ko").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The cases of tests/boot/cases.yaml that apply to Debian's 6.1 source as they are.
const SIX_ONE_CASES: &[&str] = &[
    "string-change",
    "new-function",
    "new-static-data",
    "static-local",
    "exit-do-exit",
    "proc-status-string-table",
    "kallsyms-names",
    "fork-copy-process",
];

/// Builds `cases` for a Debian kernel that cannot load livepatches (`--distro SPEC --arch ARCH`,
/// plus `extra`), each passing the identity check, and checks each module with
/// `klpx verify --distro` without loading: it says why, and finds every changed function's
/// patchable entry in the release's vmlinux.
fn built_and_checked(spec: &str, arch: &str, cases: &[&str], extra: &[&str]) {
    let dir = std::env::temp_dir().join(format!("klpx-distro-{arch}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for name in cases {
        let c = case(name);
        let patch = common::kernel::repo().join("tests/boot").join(&c.patch);
        let module = format!("livepatch-{name}");
        let mut args = vec![
            "build",
            "--distro",
            spec,
            "--arch",
            arch,
            "--json",
            "-o",
            dir.to_str().unwrap(),
            "-n",
            &module,
        ];
        args.extend_from_slice(extra);
        args.push(patch.to_str().unwrap());
        let out = klpx(&args);
        assert_exit(&out, 0, &format!("{name} on Debian {spec} {arch}"));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut changed: Vec<String> = r["objects"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|o| o["changed_functions"].as_array().unwrap().clone())
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        changed.sort();
        let mut want = c
            .changed_by_arch
            .get(arch)
            .cloned()
            .unwrap_or(c.changed.clone());
        want.sort();
        assert_eq!(changed, want, "{name}: changed functions");
        let release = r["kernel_release"].as_str().unwrap().to_string();
        assert_eq!(r["loadable"], false, "{name}");
        let ko = dir.join(format!("{module}.ko"));
        let v = klpx(&[
            "verify",
            ko.to_str().unwrap(),
            "--distro",
            &format!("debian:{release}"),
            "--arch",
            arch,
        ]);
        assert_exit(&v, 0, &format!("{name}: verify without loading"));
        let said = text(&v.stdout);
        assert!(
            said.contains("no CONFIG_LIVEPATCH") && said.contains("was not loaded"),
            "{said}"
        );
        for f in &want {
            assert!(
                said.contains(&format!("{f}: patchable entry in vmlinux")),
                "{said}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Debian's s390x kernel (only its 6.1 series is served for s390x here, as `--distro debian:6.1`
/// resolves it) has HAVE_LIVEPATCH but not LIVEPATCH: patches from tests/boot/cases.yaml that apply
/// to 6.1 are built against its packages and checked without loading. Debian built it natively with
/// gcc 12.2.0-14+deb12u1 and the cross compiler is 12.2.0-14: with --skip-compiler-check, the
/// identity check finds every function these patches change identical. The changed functions are
/// their own symbols in that vmlinux (nm: t cmdline_proc_show, T do_exit, T proc_pid_status, ...).
#[test]
fn s390x_debian_6_1_built_and_checked() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    built_and_checked(
        "debian:6.1",
        "s390",
        SIX_ONE_CASES,
        &["--skip-compiler-check"],
    );
}

/// Debian's arm64 6.12 kernel has no LIVEPATCH (Linux 6.12 has no arm64 support). Debian built it
/// natively with gcc 12.2.0-14+deb12u1; Debian's arm64 cross compiler is 12.2.0-14, so the compiler
/// check refuses, and with --skip-compiler-check the identity check decides per function: the
/// functions these patches change, and those their code reaches in the same files, compile to the
/// same code and are built and checked; do_exit does not (its prologue differs: the stack-protector
/// layout fix of +deb12u1), and that build is refused, naming it.
#[test]
fn arm64_debian_built_and_checked_and_an_older_compiler_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("klpx-distro-arm64-cc-{}", std::process::id()));
    let patch = |n: &str| common::kernel::repo().join("tests/boot").join(n);
    let out = build_for(&dir, "arm64", &[], &patch("exit-do-exit.patch"));
    assert_exit(&out, 2, "the cross compiler is not Debian's arm64 compiler");
    assert!(
        text(&out.stderr).contains("compiler mismatch"),
        "{}",
        text(&out.stderr)
    );
    let out = build_for(
        &dir,
        "arm64",
        &["--skip-compiler-check"],
        &patch("exit-do-exit.patch"),
    );
    assert_exit(&out, 2, "identity check with another compiler build");
    assert!(
        text(&out.stderr)
            .contains("do_exit: the rebuilt original differs from the shipped kernel's"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.join("livepatch-exit.ko").exists());
    let _ = std::fs::remove_dir_all(&dir);
    built_and_checked(
        "debian",
        "arm64",
        &[
            "string-change",
            "new-function",
            "new-static-data",
            "static-local",
            "new-global-function",
            "header-edit",
        ],
        &["--skip-compiler-check"],
    );
}

/// Debian's ppc64el 6.12 index is broken on this mirror (size mismatch, mirror sync), so the 6.1
/// series stands in: its config has HAVE_LIVEPATCH but not LIVEPATCH. It was built natively with
/// gcc 12.2.0-14+deb12u1, the cross compiler is 12.2.0-14: with --skip-compiler-check, every
/// function these patches change compiles to the shipped code (the identity check passes).
#[test]
fn ppc64le_debian_6_1_built_and_checked() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    built_and_checked(
        "debian:6.1",
        "ppc64le",
        SIX_ONE_CASES,
        &["--skip-compiler-check"],
    );
}

/// `klpx build --distro debian --arch ARCH EXTRA... PATCH` into `dir`, named livepatch-exit.
fn build_for(dir: &Path, arch: &str, extra: &[&str], patch: &Path) -> std::process::Output {
    let mut args = vec!["build", "--distro", "debian", "--arch", arch, "-o"];
    args.push(dir.to_str().unwrap());
    args.extend_from_slice(&["-n", "livepatch-exit"]);
    args.extend_from_slice(extra);
    args.push(patch.to_str().unwrap());
    klpx(&args)
}

/// Every case of tests/boot/cases.yaml for distribution kernels only has a test here.
#[test]
fn every_distro_case_has_a_test() {
    let src = std::fs::read_to_string(file!()).unwrap();
    for c in common::cases::cases().into_iter().filter(|c| c.distro_only) {
        assert!(
            DISTRO_CASES.contains(&c.name.as_str()),
            "case {} is not in DISTRO_CASES",
            c.name
        );
    }
    let tested = src.matches("    run_case(\"").count();
    assert_eq!(tested, DISTRO_CASES.len(), "tests calling run_case");
    for name in DISTRO_CASES {
        assert!(
            src.contains(&format!("run_case(\"{name}\")")),
            "case {name} has no test"
        );
    }
}

/// kpatch-build's `-r`: a kernel packaged as a source RPM. The test makes one the way a
/// distribution does (the release's source as the tarball, a distribution patch that %prep
/// applies, `rpmbuild -bs`), and klpx builds from it with the release's config, Module.symvers and
/// vmlinux given as files (the generic path, no --distro): the identity check passes, and the
/// module works on Debian's kernel.
#[test]
fn source_rpm_prepared_by_its_prep() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("klpx-srpm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let Fetched {
        release,
        kdir,
        source,
    } = fetched(&dir);
    let cache = klpx::kernel::cache::root();
    // The source RPM is made once per Debian release and kept, as a distribution's would be: klpx
    // unpacks and prepares a source RPM once (its cache is keyed by the file), so later runs
    // exercise that path and the module build only.
    let kept = cache.join("test-sources").join(format!("srpm-{release}"));
    let srpm = kept.join("klpx-kernel-6.12-1.src.rpm");
    if !srpm.is_file() {
        // An earlier release's source RPM and what klpx prepared of it are this test's own: gone.
        let own = |dir: PathBuf, prefix: &str| {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        };
        own(cache.join("test-sources"), "srpm-");
        own(cache.join("srpm"), "klpx-kernel-6.12-1");
        let work = cache
            .join("test-sources")
            .join(format!(".srpm-{release}.partial"));
        let _ = std::fs::remove_dir_all(&work);
        let sources = work.join("SOURCES");
        std::fs::create_dir_all(&sources).unwrap();
        let src_parent = source.parent().unwrap();
        let run = |cmd: &mut std::process::Command| {
            let o = cmd.output().expect("running a tool");
            assert!(o.status.success(), "{cmd:?}: {}", text(&o.stderr));
        };
        run(std::process::Command::new("sh").arg("-c").arg(format!(
            "tar -C {} -cf - linux-source-6.12 | gzip -1 > {}",
            src_parent.display(),
            sources.join("linux-source-6.12.tar.gz").display()
        )));
        std::fs::write(
            sources.join("distro-readme.patch"),
            "--- a/README\n+++ b/README\n@@ -1,3 +1,4 @@\n+Built for klpx's source RPM test.\n Linux kernel\n ============\n \n",
        )
        .unwrap();
        let spec = work.join("kernel.spec");
        std::fs::write(
            &spec,
            "Name: klpx-kernel\nVersion: 6.12\nRelease: 1\nSummary: Linux kernel source for klpx's test\n\
             License: GPL-2.0-only\nSource0: linux-source-6.12.tar.gz\nPatch0: distro-readme.patch\n\
             BuildArch: noarch\n\n%description\nThe kernel source, with a distribution patch.\n\n\
             %prep\n%autosetup -n linux-source-6.12 -p1\n",
        )
        .unwrap();
        let topdir = work.join("rpm");
        run(std::process::Command::new("rpmbuild")
            .arg("-bs")
            .arg("-D")
            .arg(format!("_topdir {}", topdir.display()))
            .arg("-D")
            .arg(format!("_sourcedir {}", sources.display()))
            .arg(&spec));
        let made = std::fs::read_dir(topdir.join("SRPMS"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".src.rpm"))
            .expect("rpmbuild -bs made a source RPM");
        std::fs::create_dir_all(&kept).unwrap();
        std::fs::rename(&made, &srpm).unwrap();
        std::fs::remove_dir_all(&work).unwrap();
    }
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out_dir = dir.join("out");
    let out = klpx(&[
        "build",
        "--json",
        "-r",
        &s(&srpm),
        "-c",
        &s(&kdir.join("headers/config")),
        "--symvers",
        &s(&kdir.join("headers/Module.symvers")),
        "-v",
        &s(&kdir.join("dbg/vmlinux")),
        "-a",
        &release,
        "-O",
        &s(&kept.join("prepared")),
        "-o",
        &s(&out_dir),
        "-n",
        "livepatch-srpm",
        &s(&patch),
    ]);
    assert_exit(&out, 0, "build from the source RPM");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["kernel_release"].as_str(), Some(release.as_str()));
    let ko = out_dir.join("livepatch-srpm.ko");
    let v = klpx(&[
        "verify",
        &s(&ko),
        "--distro",
        &format!("debian:{release}"),
        "--check",
        "cat /proc/cmdline",
        "--expect-before",
        "console=",
        "--expect-after",
        "klpx console=",
    ]);
    assert_exit(&v, 0, "the source RPM's livepatch on Debian's kernel");
    // The prepared source is klpx's, in its cache; the README edit of %prep is in it.
    let readme_patched = std::fs::read_dir(cache.join("srpm"))
        .unwrap()
        .flatten()
        .any(|e| {
            std::fs::read_to_string(e.path().join("BUILD/linux-source-6.12/README"))
                .is_ok_and(|t| t.starts_with("Built for klpx's source RPM test."))
        });
    assert!(readme_patched, "%prep did not apply the distribution patch");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--sign-key/--sign-cert` sign through the kernel's own scripts/sign-file: the module ends in the
/// kernel's signature trailer, the PKCS#7 signature verifies over the module's contents with the
/// certificate (openssl cms, independently of klpx), and Debian's kernel loads it (the key is not in
/// its keyring and Secure Boot is off: loaded with a taint, as Debian documents).
#[test]
fn signed_module_verifies_and_loads() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("klpx-sign-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert) = common::sign::signing_key(&dir);
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let out_dir = dir.join("out");
    let out = build(
        &out_dir,
        "livepatch-signed",
        &[
            "--sign-key",
            key.to_str().unwrap(),
            "--sign-cert",
            cert.to_str().unwrap(),
        ],
        &patch,
    );
    assert_exit(&out, 0, "signed build");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let release = r["kernel_release"].as_str().unwrap().to_string();
    let ko = out_dir.join("livepatch-signed.ko");
    common::sign::assert_signed(&ko, &cert, &dir);
    let v = klpx(&[
        "verify",
        ko.to_str().unwrap(),
        "--distro",
        &format!("debian:{release}"),
        "--check",
        "cat /proc/cmdline",
        "--expect-after",
        "klpx console=",
    ]);
    assert_exit(&v, 0, "the signed module on Debian's kernel");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The linux-source-6.12 versions that Debian's suites of this host's release serve (klpx's own
/// indexes), older than the kernel's version `than`, newest first: the mirror keeps only a few, so
/// they are read when the test runs, never named.
fn older_sources(than: &str) -> Vec<String> {
    let apt = klpx::distro::apt::AptState::open("amd64").expect("klpx's amd64 indexes");
    let codename = klpx::distro::apt::host_codename().expect("this host's Debian codename");
    let versions = apt
        .versions_in_release("linux-source-6.12", &codename)
        .expect("apt-cache");
    let older = |v: &str| {
        std::process::Command::new("dpkg")
            .args(["--compare-versions", v, "lt", than])
            .status()
            .expect("running dpkg --compare-versions")
            .success()
    };
    versions.into_iter().filter(|v| older(v)).collect()
}

/// `emergency_restart`'s definition in the text of a kernel/reboot.c, to its closing brace.
fn emergency_restart(reboot_c: &str, what: &str) -> String {
    let start = reboot_c
        .find("void emergency_restart(void)\n{")
        .unwrap_or_else(|| panic!("{what}: no emergency_restart"));
    let len = reboot_c[start..].find("\n}\n").unwrap();
    reboot_c[start..start + len].to_string()
}

/// Runs `sh -c SCRIPT` with `$0` set to `arg` in `dir`; its standard output.
fn sh(script: &str, arg: &Path, dir: &Path) -> Vec<u8> {
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(arg)
        .current_dir(dir)
        .output()
        .expect("running sh");
    assert!(o.status.success(), "{script}: {}", text(&o.stderr));
    o.stdout
}

/// A source of another version than the kernel (kpatch-build's classic mistake): the newest
/// linux-source-6.12 of this Debian release still served, older than the kernel, whose
/// `emergency_restart` differs from the kernel's (Debian's stable updates changed it in 6.12.117:
/// nbcon_cpu_emergency_enter() and printk_trigger_flush() added), with the current release's
/// config, Module.symvers and vmlinux, given as files. The newest such source keeps the rest of
/// the tree close to the kernel's (an older one's Kconfig no longer reproduces the config, a
/// refusal before any compile). The patch (a git diff written against 6.12.115) touches
/// `emergency_restart`: the identity check refuses, naming the function, and no module is written.
#[test]
fn source_of_another_version_refused_by_the_identity_check() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("klpx-older-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let Fetched {
        release,
        kdir,
        source,
    } = fetched(&dir);
    let kernel_version = std::fs::read_to_string(kdir.join("resolved")).unwrap();
    let kernel_version = kernel_version
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let current = std::fs::read_to_string(source.join("kernel/reboot.c")).unwrap();
    let current = emergency_restart(&current, &kernel_version);
    let cache = klpx::kernel::cache::root();
    let sources = cache.join("test-sources");
    let apt = klpx::distro::apt::AptState::open("amd64").expect("klpx's amd64 indexes");
    let candidates = older_sources(&kernel_version);
    // Each candidate's kernel/reboot.c, taken from its package (kept in the cache), until one
    // differs; that one is unpacked whole, once.
    let mut chosen = None;
    for version in &candidates {
        let debs = sources.join("debs");
        std::fs::create_dir_all(&debs).unwrap();
        let deb = apt
            .download("linux-source-6.12", version, &debs)
            .unwrap_or_else(|e| panic!("downloading linux-source-6.12 {version}: {e:#}"));
        let reboot_c = sh(
            "dpkg-deb --fsys-tarfile \"$0\" | tar -xO ./usr/src/linux-source-6.12.tar.xz | \
             tar -xJO linux-source-6.12/kernel/reboot.c",
            &deb,
            &debs,
        );
        if emergency_restart(&text(&reboot_c), version) != current {
            chosen = Some((version.clone(), deb));
            break;
        }
    }
    let (version, deb) = chosen.unwrap_or_else(|| {
        panic!(
            "no linux-source-6.12 older than {kernel_version} that this host's Debian suites serve \
             ({candidates:?}) has another emergency_restart: this test needs one"
        )
    });
    eprintln!("kernel {release} ({kernel_version}), source {version}");
    let older = sources.join(&version);
    let src = older.join("linux-source-6.12");
    if !src.join("Makefile").is_file() {
        let _ = std::fs::remove_dir_all(&older);
        std::fs::create_dir_all(&older).unwrap();
        sh(
            "dpkg-deb --fsys-tarfile \"$0\" | tar -xO ./usr/src/linux-source-6.12.tar.xz | tar -xJ",
            &deb,
            &older,
        );
    }
    let patch = common::kernel::repo().join("tests/boot/emergency-restart-6.12.115.patch");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out_dir = dir.join("out");
    let out = klpx(&[
        "build",
        "-s",
        &s(&src),
        "-c",
        &s(&kdir.join("headers/config")),
        "--symvers",
        &s(&kdir.join("headers/Module.symvers")),
        "-v",
        &s(&kdir.join("dbg/vmlinux")),
        "-a",
        &release,
        "-O",
        &s(&dir.join("prepared")),
        "-o",
        &s(&out_dir),
        "-n",
        "livepatch-older",
        &s(&patch),
    ]);
    assert_exit(&out, 2, "a source of another version");
    let err = text(&out.stderr);
    assert!(
        err.contains("kernel/reboot.o: ")
            && err.contains("the rebuilt original differs from the shipped kernel's"),
        "{err}"
    );
    assert!(!out_dir.join("livepatch-older.ko").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// kpatch-build's shape with only a System.map (no vmlinux with symbols): Debian's real System.map
/// from the -dbg package gives the symbol positions, the identity check reads the code of the
/// vmlinux inside Debian's vmlinuz (--image), and the module boots on Debian's kernel. The image
/// package's placeholder System.map is refused, saying where the real one is.
#[test]
fn system_map_instead_of_vmlinux() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("klpx-sysmap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let Fetched {
        release,
        kdir,
        source: src,
    } = fetched(&dir);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let with_map = |map: &Path, extra: &[String]| {
        let mut args: Vec<String> = [
            "build",
            "--json",
            "-s",
            &s(&src),
            "-c",
            &s(&kdir.join("headers/config")),
            "--symvers",
            &s(&kdir.join("headers/Module.symvers")),
            "--system-map",
            &s(map),
            "-a",
            &release,
            "-O",
            &s(&dir.join("prepared")),
            "-o",
            &s(&dir.join("out")),
            "-n",
            "livepatch-sysmap",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        args.push(s(&patch));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        klpx(&refs)
    };
    let placeholder = kdir.join(format!("image/boot/System.map-{release}"));
    let out = with_map(&placeholder, &[]);
    assert_exit(&out, 2, "the image package's placeholder System.map");
    assert!(
        text(&out.stderr).contains("-dbg package"),
        "{}",
        text(&out.stderr)
    );
    // With the boot image, the identity check reads the code of the vmlinux inside it.
    let vmlinuz = kdir.join(format!("image/boot/vmlinuz-{release}"));
    let out = with_map(
        &kdir.join("dbg/System.map"),
        &["--image".to_string(), s(&vmlinuz)],
    );
    assert_exit(&out, 0, "build with a System.map and the boot image");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|st| st[0] == "identity"),
        "no identity check: {r}"
    );
    let ko = dir.join("out/livepatch-sysmap.ko");
    let v = klpx(&[
        "verify",
        &s(&ko),
        "--distro",
        &format!("debian:{release}"),
        "--check",
        "cat /proc/cmdline",
        "--expect-after",
        "klpx console=",
    ]);
    assert_exit(&v, 0, "the System.map module on Debian's kernel");
    let _ = std::fs::remove_dir_all(&dir);
}
