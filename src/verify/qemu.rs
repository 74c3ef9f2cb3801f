//! Running a kernel in qemu: the command line for an architecture, a time limit, and the serial
//! console captured line by line.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use klpx_arch::Arch;

/// How long qemu may keep running after the guest said it is done (the halt itself).
const HALT_GRACE: Duration = Duration::from_secs(10);

/// How long a guest whose kernel oopsed may stay silent before qemu is stopped. An oops kills the
/// task that hit it with whatever locks it held (`klp_mutex`, when a livepatch callback faults in
/// `klp_enable_patch`), and the guest's next step waits for them until the time limit; a guest that
/// survives its oops goes on printing and ends as usual.
const OOPS_QUIET: Duration = Duration::from_secs(20);

/// Console text of a kernel fault that kills the running task, on any architecture (x86 `Oops:`,
/// arm64 `Unable to handle kernel`, ppc64 `BUG: Kernel NULL pointer`, s390 `Oops: 0004 ilc:3`).
const FAULT_SIGNS: [&str; 6] = [
    "Oops",
    "kernel BUG at",
    "general protection fault",
    "Unable to handle kernel",
    "BUG: Kernel NULL pointer",
    "BUG: kernel NULL pointer",
];

/// One qemu run.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub arch: Arch,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Kernel command line (`console=` and `panic=-1` included).
    pub cmdline: String,
    pub memory_mb: u32,
    pub timeout: Duration,
    /// A line containing this marks the start of the guest's own work (for the boot time).
    pub boot_marker: String,
    /// A line containing this means the guest is about to halt.
    pub done_marker: String,
    pub accel: Accel,
}

/// What a qemu run produced.
#[derive(Debug, Clone)]
pub struct QemuOutput {
    /// The whole serial console, with `\r` removed.
    pub log: String,
    /// `kvm` or `tcg`.
    pub accel: &'static str,
    /// The command that ran, for reports.
    pub command: Vec<String>,
    /// When the boot marker appeared, counted from qemu's start.
    pub boot_time: Option<Duration>,
    pub elapsed: Duration,
    /// qemu was killed at the time limit.
    pub timed_out: bool,
    /// qemu was stopped after the guest's kernel faulted after the boot marker and the console then
    /// stayed silent ([`OOPS_QUIET`]).
    pub stopped_after_fault: bool,
    /// qemu's exit status (None when it was killed).
    pub exit_code: Option<i32>,
    /// What qemu itself said on its standard error (also appended to `log`).
    pub stderr: String,
}

/// The kernel command line klpx boots with: the architecture's console and reboot (not hang) on panic.
pub fn kernel_cmdline(arch: Arch) -> String {
    format!("console={} panic=-1", arch.backend().console())
}

/// How qemu runs the guest's CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM when [`kvm_usable`] says it works, else TCG.
    Auto,
    Kvm,
    Tcg,
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Accel, String> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(format!("unknown accelerator '{s}': use auto, kvm or tcg")),
        }
    }
}

/// Whether KVM can run a guest of `arch` here: the guest has the host's architecture, `/dev/kvm`
/// opens, and the host CPU advertises hardware virtualization. (A virtual machine without nested
/// virtualization may still have `/dev/kvm`, and guests then hang in the firmware.)
pub fn kvm_usable(arch: Arch) -> bool {
    arch.is_host()
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
        && std::fs::read_to_string("/proc/cpuinfo")
            .map(|c| hardware_virtualization(&c, arch.backend().virtualization_flags()))
            .unwrap_or(false)
}

/// Whether `/proc/cpuinfo` shows hardware virtualization: one of `wanted` (the backend's) in its
/// `flags` lines. Hosts with no flags to look for are taken at `/dev/kvm`'s word.
fn hardware_virtualization(cpuinfo: &str, wanted: &[&str]) -> bool {
    if wanted.is_empty() {
        return true;
    }
    cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "flags"))
        .any(|l| l.split_whitespace().any(|f| wanted.contains(&f)))
}

/// The qemu arguments for a run (without the binary).
pub fn qemu_args(c: &QemuConfig, kvm: bool) -> Vec<String> {
    let b = c.arch.backend();
    let mut args: Vec<String> = b
        .qemu_machine_args()
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(
        [
            "-accel",
            if kvm { "kvm" } else { "tcg" },
            "-m",
            &c.memory_mb.to_string(),
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
            "-kernel",
            &c.kernel.display().to_string(),
            "-initrd",
            &c.initrd.display().to_string(),
            "-append",
            &c.cmdline,
        ]
        .map(str::to_string),
    );
    args
}

/// Runs qemu until it exits, the guest has halted, or the time limit; returns the console log.
pub fn run(c: &QemuConfig) -> Result<QemuOutput> {
    let kvm = match c.accel {
        Accel::Auto => kvm_usable(c.arch),
        Accel::Kvm => true,
        Accel::Tcg => false,
    };
    let binary = c.arch.backend().qemu_binary();
    let args = qemu_args(c, kvm);
    let mut command = vec![binary.to_string()];
    command.extend(args.iter().cloned());
    let start = Instant::now();
    let mut qemu = Command::new(binary);
    qemu.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // qemu dies with the thread that started it: klpx killed (SIGTERM, SIGKILL) leaves no guest
    // running.
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut qemu, || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = qemu.spawn().with_context(|| format!("starting {binary}"))?;
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = printable(&String::from_utf8_lossy(&line));
                    if tx.send((Instant::now(), text)).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut log = String::new();
    let mut boot_time = None;
    let mut done_at: Option<Instant> = None;
    let mut timed_out = false;
    let mut faulted = false;
    let mut last_line = start;
    let mut stopped_after_fault = false;
    let exit_code = loop {
        while let Ok((at, text)) = rx.try_recv() {
            if boot_time.is_none() && text.contains(&c.boot_marker) {
                boot_time = Some(at - start);
            }
            if done_at.is_none() && text.contains(&c.done_marker) {
                done_at = Some(at);
            }
            faulted |= boot_time.is_some() && FAULT_SIGNS.iter().any(|s| text.contains(s));
            last_line = at;
            log.push_str(&text);
        }
        if let Some(status) = child.try_wait().context("waiting for qemu")? {
            break status.code();
        }
        let halt_overdue = done_at.is_some_and(|d| d.elapsed() > HALT_GRACE);
        let hung_after_fault = faulted && done_at.is_none() && last_line.elapsed() > OOPS_QUIET;
        if start.elapsed() > c.timeout || halt_overdue || hung_after_fault {
            stopped_after_fault = hung_after_fault && !halt_overdue;
            timed_out = !halt_overdue && !stopped_after_fault;
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    while let Ok((at, text)) = rx.try_recv() {
        if boot_time.is_none() && text.contains(&c.boot_marker) {
            boot_time = Some(at - start);
        }
        log.push_str(&text);
    }
    let errors = err_reader.join().unwrap_or_default();
    if !errors.trim().is_empty() {
        log.push_str("\n[qemu stderr]\n");
        log.push_str(&errors);
    }
    Ok(QemuOutput {
        log,
        accel: if kvm { "kvm" } else { "tcg" },
        command,
        boot_time,
        elapsed: start.elapsed(),
        timed_out,
        stopped_after_fault,
        exit_code,
        stderr: errors,
    })
}

/// The text of a console line without terminal control: escape sequences (firmware clears the screen
/// and resets the terminal), carriage returns and other control characters but tab and newline.
pub fn printable(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // A two-character sequence (ESC c, ESC 7, ...).
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(arch: Arch) -> QemuConfig {
        QemuConfig {
            arch,
            kernel: "/k".into(),
            initrd: "/i.gz".into(),
            cmdline: kernel_cmdline(arch),
            memory_mb: 512,
            timeout: Duration::from_secs(1),
            boot_marker: "B".into(),
            done_marker: "D".into(),
            accel: Accel::Auto,
        }
    }

    #[test]
    fn command_lines() {
        let a = qemu_args(&config(Arch::X86_64), true).join(" ");
        assert_eq!(
            a,
            "-accel kvm -m 512 -smp 1 -nographic -no-reboot -kernel /k -initrd /i.gz \
             -append console=ttyS0 panic=-1"
        );
        let a = qemu_args(&config(Arch::S390x), false).join(" ");
        assert!(a.starts_with("-M s390-ccw-virtio -accel tcg "), "{a}");
        assert!(a.ends_with("console=ttysclp0 panic=-1"), "{a}");
        let a = qemu_args(&config(Arch::Ppc64le), false).join(" ");
        assert!(a.starts_with("-M pseries -accel tcg "), "{a}");
    }

    #[test]
    fn terminal_control_is_removed() {
        assert_eq!(
            printable("\u{1b}c\u{1b}[?7l\u{1b}[2J\u{1b}[0mSeaBIOS (version 1.16)\r\n"),
            "SeaBIOS (version 1.16)\n"
        );
        assert_eq!(printable("a\tb\u{7}c\n"), "a\tbc\n");
    }

    #[test]
    fn hardware_virtualization_flags() {
        let x86 = Arch::X86_64.backend().virtualization_flags();
        assert!(hardware_virtualization("flags\t\t: fpu vme svm lm\n", x86));
        assert!(hardware_virtualization(
            "flags\t\t: fpu vmx\nflags\t\t: fpu vmx\n",
            x86
        ));
        assert!(!hardware_virtualization(
            "flags\t\t: fpu hypervisor lm\n",
            x86
        ));
        let ppc = Arch::Ppc64le.backend().virtualization_flags();
        assert!(hardware_virtualization("cpu\t\t: POWER9\n", ppc));
    }

    #[test]
    fn no_kvm_for_foreign_guests() {
        for a in Arch::ALL {
            if !a.is_host() {
                assert!(!kvm_usable(a));
            }
        }
    }
}
