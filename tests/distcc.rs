//! Compiles spread over machines with distcc: a `distccd` listening on 127.0.0.1 only (never any
//! other address) stands in for the build farm. `klpx build --launcher distcc` and a matrix whose
//! architectures name `launcher: distcc` must send their compiles there (distccd's own log says
//! which), and raise their jobs to what the hosts take (more slots in DISTCC_HOSTS than CPUs).

mod common;

/// The tests here patch the one shared source tree, which one klpx at a time may do.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{assert_exit, text};
use klpx_arch::Arch;

/// A distccd on 127.0.0.1, stopped when dropped.
struct Distccd {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Distccd {
    fn start(dir: &Path) -> Distccd {
        // A free port: bound and released (a race with another process is possible but harmless:
        // distccd then fails to start and the test says so).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("distccd.log");
        // Run as root, distccd drops to its own user before it opens the log.
        std::fs::write(&log, "").unwrap();
        std::fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let child = Command::new("distccd")
            .args(["--no-detach", "--daemon", "--listen", "127.0.0.1"])
            .args(["--allow", "127.0.0.1", "--port", &port.to_string()])
            .args(["--log-level", "info", "--log-file", log.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: the workers it forks are stopped with it.
            .process_group(0)
            .spawn()
            .expect("starting distccd (apt-get install distcc)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "distccd did not listen on 127.0.0.1:{port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Distccd { child, port, log }
    }

    /// `DISTCC_HOSTS` naming this daemon with [`slots`] slots.
    fn hosts(&self) -> String {
        format!("127.0.0.1:{}/{}", self.port, slots())
    }

    /// The compilers and sources distccd compiled successfully.
    fn compiled(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("COMPILE_OK"))
            .filter_map(|l| l.split_once("ms ").map(|(_, what)| what.to_string()))
            .collect()
    }
}

impl Drop for Distccd {
    fn drop(&mut self) {
        // SAFETY: signalling the daemon's own process group (its pid), which only it and its
        // workers are in.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// The farm's slots: more than this machine's CPUs, so klpx must raise its jobs to them.
fn slots() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) + 4
}

/// What klpx says when it raises its compile jobs to the farm's.
fn raised() -> String {
    format!("run {} at a time", slots())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("klpx-distcc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs klpx with distcc pointed at the daemon only, never falling back to compiling here.
fn klpx_through(d: &Distccd, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args(args)
        .env("DISTCC_HOSTS", d.hosts())
        .env("DISTCC_FALLBACK", "0")
        .env("DISTCC_DIR", d.log.parent().unwrap())
        .env_remove("KLPX_ARCHES")
        .output()
        .expect("running klpx")
}

#[test]
fn build_compiles_through_distcc() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tree = common::kernel::built_tree(Arch::X86_64).unwrap();
    let dir = scratch("build");
    let d = Distccd::start(&dir);
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let out = klpx_through(
        &d,
        &[
            "build",
            "--arch",
            "x86_64",
            "-s",
            tree.src.to_str().unwrap(),
            "-O",
            tree.out.to_str().unwrap(),
            "-o",
            dir.join("out").to_str().unwrap(),
            "-n",
            "livepatch-distcc",
            "--launcher",
            "distcc",
            patch.to_str().unwrap(),
        ],
    );
    assert_exit(&out, 0, "klpx build --launcher distcc");
    let err = text(&out.stderr);
    assert!(err.contains(&raised()), "{err}");
    assert!(dir.join("out/livepatch-distcc.ko").is_file());
    let compiled = d.compiled();
    assert!(
        compiled
            .iter()
            .any(|c| c.ends_with("/fs/proc/cmdline.c") && c.contains("gcc")),
        "distccd compiled no fs/proc/cmdline.c: {compiled:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A matrix of two architectures, both compiling through distcc (s390 with its cross compiler, as
/// a farm of Debian machines with gcc-s390x-linux-gnu would): no `jobs` in the file, so the
/// compiles take the hosts' slots.
#[test]
fn matrix_compiles_each_architecture_through_distcc() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    common::kernel::built_tree(Arch::X86_64).unwrap();
    common::kernel::built_tree(Arch::S390x).unwrap();
    let dir = scratch("matrix");
    let d = Distccd::start(&dir);
    let matrix = dir.join("farm.yaml");
    std::fs::write(
        &matrix,
        "source: debian:linux-source-6.12\noutput: trees\narches:\n  - arch: x86_64\n    cross: \"\"\n    \
         launcher: distcc\n  - arch: s390\n    cross: s390x-linux-gnu-\n    launcher: distcc\n",
    )
    .unwrap();
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let out = klpx_through(
        &d,
        &[
            "matrix",
            "-f",
            matrix.to_str().unwrap(),
            "-o",
            dir.join("out").to_str().unwrap(),
            "-n",
            "livepatch-farm",
            patch.to_str().unwrap(),
        ],
    );
    assert_exit(&out, 0, "klpx matrix through distcc");
    assert!(
        text(&out.stderr).contains(&raised()),
        "{}",
        text(&out.stderr)
    );
    for (arch, compiler) in [
        ("x86_64", "x86_64-linux-gnu-gcc"),
        ("s390", "s390x-linux-gnu-gcc"),
    ] {
        assert!(dir.join(format!("out/{arch}/livepatch-farm.ko")).is_file());
        let compiled = d.compiled();
        assert!(
            compiled
                .iter()
                .any(|c| c.starts_with(compiler) && c.ends_with("/fs/proc/cmdline.c")),
            "distccd compiled no fs/proc/cmdline.c with {compiler}: {compiled:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
