//! The operator's commands on the machine that runs the kernel: a statically linked klpx (glibc,
//! `+crt-static`) in the initramfs of the tiny x86_64 kernel, run by root in the guest. `load --all`
//! at boot, `install`, `list`, `load`, `unload`, `uninstall`, `info`, and the bad states: a module
//! built for another kernel release (Debian's own), loading twice, unloading what is not loaded,
//! and a transition that does not finish (a shell waits in the patched `do_wait`), which is
//! reported by task and reversed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::cli::{assert_exit, build_module, text};
use common::kernel::{built_tree, repo};
use klpx::setup::busybox;
use klpx::verify::initramfs::{Member, build, check_static};
use klpx::verify::qemu::{Accel, QemuConfig, kernel_cmdline, run};
use klpx_arch::Arch;

static SERIAL: Mutex<()> = Mutex::new(());

/// klpx built statically for the guest (`cargo build --release` with `+crt-static`, into its own
/// target directory beside the test's).
fn static_klpx() -> PathBuf {
    let target_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args(["build", "--release", "--bin", "klpx"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "building the static klpx: {}",
        text(&out.stderr)
    );
    let built = target_dir.join("x86_64-unknown-linux-gnu/release/klpx");
    // Without its debug information (35 MB with it): the initramfs stays small.
    let bin = target_dir.join("klpx-guest");
    let strip = Command::new("strip")
        .arg("-o")
        .arg(&bin)
        .arg(&built)
        .status()
        .expect("running strip");
    assert!(strip.success(), "strip failed");
    check_static(&bin, Arch::X86_64).expect("klpx is statically linked");
    bin
}

/// Builds `patch` (relative to the repository) into `dir` as module `name`.
fn module(
    tree: &klpx::kernel::tree::KernelTree,
    dir: &Path,
    name: &str,
    patch: &str,
    extra: &[&str],
) -> PathBuf {
    let out = build_module(tree, dir, name, extra, &[&repo().join(patch)]);
    assert_exit(&out, 0, &format!("building {name}"));
    dir.join(format!("{name}.ko"))
}

/// A step the guest runs: a label and a command line, its output and exit status printed between
/// markers.
const STEPS: &[(&str, &str)] = &[
    // At boot, as the service does: the modules installed for this release are loaded.
    ("boot-all", "klpx load --all"),
    ("boot-list", "klpx list"),
    ("boot-cmdline", "cat /proc/cmdline"),
    ("unload-boot", "klpx unload livepatch-op-cmdline"),
    ("uninstall-boot", "klpx uninstall livepatch-op-cmdline"),
    ("uninstall-again", "klpx uninstall livepatch-op-cmdline"),
    ("list-empty", "klpx list"),
    // Installing and loading by hand.
    (
        "install",
        "klpx install /klpx/files/livepatch-op-cmdline.ko",
    ),
    ("info-installed", "klpx info livepatch-op-cmdline"),
    ("info-missing", "klpx info livepatch-op-nothing"),
    (
        "install-wrong-kernel",
        "klpx install --kernel 6.1.0-99-amd64 /klpx/files/livepatch-op-cmdline.ko",
    ),
    ("load", "klpx load /klpx/files/livepatch-op-cmdline.ko"),
    (
        "load-twice",
        "klpx load /klpx/files/livepatch-op-cmdline.ko",
    ),
    (
        "load-other-kernel",
        "klpx load /klpx/files/livepatch-op-debian.ko",
    ),
    (
        "load-stacked",
        "klpx load /klpx/files/livepatch-op-version.ko",
    ),
    ("list-json", "klpx list --json"),
    ("list", "klpx list"),
    ("unload-stacked", "klpx unload livepatch_op_version"),
    ("unload", "klpx unload /klpx/files/livepatch-op-cmdline.ko"),
    ("unload-again", "klpx unload livepatch-op-cmdline"),
    ("after-cmdline", "cat /proc/cmdline"),
    // A transition that cannot finish: a shell waits in do_wait, which the patch replaces.
    (
        "stall",
        "sh -c 'sh -c \"sleep 30; true\" & p=$!; sleep 1; klpx load --timeout 3 /klpx/files/livepatch-op-wait.ko; rc=$?; echo waiter=$p; kill $p; exit $rc'",
    ),
    ("stall-gone", "klpx list"),
];

/// The guest's /init: the steps, each as `OP:BEGIN label`, output, `OP:END label status`.
fn init_script(release_dir: &str) -> String {
    let mut s = String::from(
        "#!/bin/busybox sh\n/bin/busybox mkdir -p /proc /sys /dev /tmp /var/lib\n/bin/busybox --install -s /bin\n\
         export PATH=/bin\nmount -t proc proc /proc\nmount -t sysfs sysfs /sys\nmount -t devtmpfs dev /dev 2>/dev/null\n",
    );
    s.push_str(&format!(
        "mkdir -p /var/lib/klpx/$(uname -r)\ncp /klpx/files/livepatch-op-cmdline.ko /var/lib/klpx/$(uname -r)/livepatch_op_cmdline.ko\n\
         echo OP:RELEASE $(uname -r) {release_dir}\n"
    ));
    for (label, cmd) in STEPS {
        s.push_str(&format!(
            "echo OP:BEGIN {label}\n{cmd} >/tmp/out 2>&1\nrc=$?\ncat /tmp/out\necho OP:END {label} $rc\n"
        ));
    }
    s.push_str("echo OP:DONE\nreboot -f\n");
    s
}

/// Each step's output and exit status, from the console log.
fn steps(log: &str) -> std::collections::BTreeMap<String, (String, i32)> {
    let mut out = std::collections::BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in log.lines() {
        if let Some(label) = line.strip_prefix("OP:BEGIN ") {
            current = Some((label.trim().to_string(), String::new()));
        } else if let Some(rest) = line.strip_prefix("OP:END ") {
            let mut f = rest.split_whitespace();
            let (label, rc) = (
                f.next().unwrap_or(""),
                f.next().and_then(|r| r.parse().ok()),
            );
            if let Some((l, text)) = current.take()
                && l == label
            {
                out.insert(l, (text, rc.unwrap_or(-1)));
            }
        } else if let Some((_, text)) = current.as_mut() {
            // Kernel messages land in the console too; they start with a timestamp.
            if !line.starts_with('[') {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    out
}

#[test]
fn operator_commands_in_the_guest() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = built_tree(Arch::X86_64).expect("the tiny x86_64 tree");
    let dir = std::env::temp_dir().join(format!("klpx-operator-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = static_klpx();
    let cmdline = module(
        &tree,
        &dir,
        "livepatch-op-cmdline",
        "examples/proc-cmdline.patch",
        &[],
    );
    // Non-replace: it stacks on the first instead of replacing it.
    let version = module(
        &tree,
        &dir,
        "livepatch-op-version",
        "tests/boot/new-function.patch",
        &["-R"],
    );
    let wait = module(
        &tree,
        &dir,
        "livepatch-op-wait",
        "tests/boot/kallsyms-names.patch",
        &[],
    );
    // The same patch built for another kernel release: Debian's own 6.12 kernel, from its
    // packages (`--distro debian`, cached by the distribution tests).
    let debian = common::cli::klpx(&[
        "build",
        "--distro",
        "debian",
        "-o",
        dir.to_str().unwrap(),
        "-n",
        "livepatch-op-debian",
        repo().join("examples/proc-cmdline.patch").to_str().unwrap(),
    ]);
    assert_exit(
        &debian,
        0,
        "building livepatch-op-debian for Debian's kernel",
    );
    let other = dir.join("livepatch-op-debian.ko");

    let mut members = vec![Member {
        path: "bin/klpx".into(),
        perm: 0o755,
        data: std::fs::read(&bin).unwrap(),
    }];
    for ko in [&cmdline, &version, &wait, &other] {
        members.push(Member {
            path: format!("klpx/files/{}", ko.file_name().unwrap().to_string_lossy()),
            perm: 0o644,
            data: std::fs::read(ko).unwrap(),
        });
    }
    let initrd = build(
        &busybox(Arch::X86_64).unwrap(),
        &init_script("/var/lib/klpx"),
        &members,
    )
    .unwrap();
    let initrd_path = dir.join("initrd.gz");
    std::fs::write(&initrd_path, initrd).unwrap();
    let image = tree.out.join(Arch::X86_64.backend().kernel_image());
    let out = run(&QemuConfig {
        arch: Arch::X86_64,
        kernel: image,
        initrd: initrd_path,
        cmdline: kernel_cmdline(Arch::X86_64),
        memory_mb: 512,
        timeout: Duration::from_secs(300),
        boot_marker: "OP:RELEASE".into(),
        done_marker: "OP:DONE".into(),
        accel: Accel::Auto,
    })
    .unwrap();
    let log = out.log.clone();
    let s = steps(&log);
    for (label, (text, rc)) in &s {
        eprintln!("--- {label} (exit {rc})\n{text}");
    }
    let step = |label: &str| -> (String, i32) {
        s.get(label)
            .cloned()
            .unwrap_or_else(|| panic!("step {label} did not run; guest log:\n{log}"))
    };
    let expect = |label: &str, rc: i32, contains: &[&str]| {
        let (text, got) = step(label);
        assert_eq!(
            got, rc,
            "{label}: exit {got}, expected {rc}:\n{text}\n--- log ---\n{log}"
        );
        for c in contains {
            assert!(text.contains(c), "{label}: no {c:?} in:\n{text}");
        }
    };
    expect(
        "boot-all",
        0,
        &["livepatch_op_cmdline: loaded, transition done"],
    );
    expect(
        "boot-list",
        0,
        &[
            "(running): livepatch_op_cmdline.ko",
            "livepatch_op_cmdline enabled",
            "vmlinux: cmdline_proc_show,1",
        ],
    );
    expect("boot-cmdline", 0, &["klpx"]);
    expect(
        "unload-boot",
        0,
        &["livepatch_op_cmdline: disabled and removed"],
    );
    expect("uninstall-boot", 0, &["removed /var/lib/klpx/"]);
    expect(
        "uninstall-again",
        2,
        &["livepatch_op_cmdline.ko is not installed for kernel"],
    );
    expect(
        "list-empty",
        0,
        &[
            "Installed livepatch modules (/var/lib/klpx):\n  none",
            "Loaded livepatches:\n  none",
        ],
    );
    expect(
        "install",
        0,
        &["installed /var/lib/klpx/", "/livepatch_op_cmdline.ko"],
    );
    expect(
        "info-installed",
        0,
        &[
            "module:      livepatch_op_cmdline",
            "patches:     vmlinux:cmdline_proc_show",
        ],
    );
    expect(
        "info-missing",
        2,
        &["no livepatch livepatch_op_nothing is installed for"],
    );
    expect(
        "install-wrong-kernel",
        2,
        &["not 6.1.0-99-amd64; it would not load there"],
    );
    expect(
        "load",
        0,
        &["livepatch_op_cmdline: loaded, transition done"],
    );
    expect("load-twice", 2, &["livepatch_op_cmdline is already loaded"]);
    expect(
        "load-other-kernel",
        2,
        &["but this kernel is", "it cannot load here"],
    );
    expect(
        "load-stacked",
        0,
        &["livepatch_op_version: loaded, transition done"],
    );
    expect(
        "list",
        0,
        &[
            "livepatch_op_cmdline enabled",
            "livepatch_op_version enabled",
        ],
    );
    let (json, _) = step("list-json");
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("list --json: {e}:\n{json}"));
    assert_eq!(v["loaded"].as_array().map(Vec::len), Some(2), "{json}");
    expect(
        "unload-stacked",
        0,
        &["livepatch_op_version: disabled and removed"],
    );
    expect("unload", 0, &["livepatch_op_cmdline: disabled and removed"]);
    expect("unload-again", 2, &["livepatch_op_cmdline is not loaded"]);
    let (after, _) = step("after-cmdline");
    assert!(
        !after.contains("klpx"),
        "the old /proc/cmdline is back: {after}"
    );
    let (stall, rc) = step("stall");
    assert_eq!(rc, 3, "stall: exit {rc}:\n{stall}\n--- log ---\n{log}");
    let waiter = stall
        .lines()
        .find_map(|l| l.strip_prefix("waiter="))
        .expect("the waiting shell's pid")
        .trim()
        .to_string();
    assert!(stall.contains("the transition did not finish"), "{stall}");
    assert!(
        stall.contains(&format!("pid {waiter} (sh) in ")) && stall.contains("do_wait"),
        "the waiting shell is named with its frame:\n{stall}"
    );
    assert!(stall.contains("reversed and removed"), "{stall}");
    expect("stall-gone", 0, &["Loaded livepatches:\n  none"]);
    let _ = std::fs::remove_dir_all(&dir);
}
