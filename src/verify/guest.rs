//! The guest side of `klpx verify`: the `/init` script klpx puts into the initramfs, and the parser for
//! the marker lines it prints on the serial console.
//!
//! The script prints one marker per line, each starting with `KLPX:`; kernel messages on the same
//! console do not start with it. Command output travels hex-encoded (`od`), sixteen bytes a line, so
//! that any bytes survive and a marker cannot be forged by a check's output.
//!
//! ```text
//! KLPX:BOOT <uname -m> <uname -r>
//! KLPX:BEGIN <tag>              output of a command: check.before.N, insmod.N,
//! KLPX:X 74 68 69 73 ...        workload.enable.N, check.after.N, disable.N, workload.disable.N,
//!                               rmmod.N, check.unloaded.N (N: the module's place in the order)
//! KLPX:END <tag> <exit status>
//! KLPX:TRANSITION <patch> done|timeout|gone|missing <enabled>
//! KLPX:DONE
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// The marker prefix of every line the script prints for klpx.
pub const MARKER: &str = "KLPX:";
/// The line the guest prints when it has booted into the script.
pub const BOOT_MARKER: &str = "KLPX:BOOT";
/// The line the guest prints just before it halts.
pub const DONE_MARKER: &str = "KLPX:DONE";

/// Where the initramfs keeps klpx's files.
pub const DIR: &str = "/klpx";

/// One module the script loads, in order.
#[derive(Debug, Clone)]
pub struct GuestModule {
    /// Path in the initramfs.
    pub file: String,
    /// The kernel's module name.
    pub name: String,
    /// The livepatch name under `/sys/kernel/livepatch`, for livepatch modules.
    pub patch: Option<String>,
}

/// What the script does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub modules: Vec<GuestModule>,
    /// Number of check scripts (`/klpx/check.N.sh`).
    pub checks: usize,
    /// How long to wait for each livepatch transition.
    pub transition_timeout: Duration,
    /// The command that ends the guest (`reboot -f`, `poweroff -f`).
    pub halt: String,
    /// Run [`WORKLOAD`] after every livepatch transition: after each livepatch's enabling (so a
    /// module that breaks a kernel path is caught with only the livepatches loaded so far) and
    /// after each one's disabling (the kernel must keep working as the old code comes back).
    pub workload: bool,
}

/// Where the workload script lives in the initramfs.
pub const WORKLOAD_PATH: &str = "/klpx/workload.sh";

/// Common kernel paths exercised after each livepatch transition, so that a module that breaks them
/// (a wrong relocation in a patched `copy_process` crashes the first fork) fails the verify instead of
/// passing it: a few hundred forks and execs, every process's `/proc/<pid>/status`, `/proc/meminfo`,
/// `/proc/self/maps`, `ps`, and the livepatch sysfs tree.
pub const WORKLOAD: &str = r#"n=0
while [ $n -lt 150 ]; do
    sh -c 'cat /proc/self/maps /proc/self/status >/dev/null' || { echo "fork/exec $n failed"; exit 1; }
    n=$((n+1))
done
for f in /proc/[0-9]*/status; do cat $f >/dev/null 2>&1; done
cat /proc/meminfo /proc/self/maps /proc/version /proc/cmdline >/dev/null || exit 1
ps >/dev/null || exit 1
find /sys/kernel/livepatch >/dev/null
echo "workload: $n shells forked and exec'd (each running cat), /proc read"
"#;

/// The livepatch transition a workload run follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Enable,
    Disable,
}

impl Step {
    /// The word in capture tags and reports: `enable`, `disable`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Step::Enable => "enable",
            Step::Disable => "disable",
        }
    }
}

/// The capture tag of the workload run after module `i`'s livepatch transition: one tag per run,
/// so that each run's result is told apart and a run that never reported is noticed.
pub(crate) fn workload_tag(step: Step, i: usize) -> String {
    format!("workload.{}.{i}", step.name())
}

/// The initramfs path of check `i`.
pub fn check_path(i: usize) -> String {
    format!("{DIR}/check.{i}.sh")
}

/// The `/init` script for a plan.
pub fn init_script(plan: &Plan) -> String {
    let tenths = (plan.transition_timeout.as_millis() / 100).max(1);
    let mut s = String::new();
    s.push_str(&format!(
        r#"#!/bin/busybox sh
# Written by klpx verify: runs the checks, loads the modules and waits for each livepatch transition,
# runs the checks again, disables the livepatches, unloads the modules, runs the checks a third time,
# and halts; the workload (when asked for) runs after each transition. Markers: KLPX:...
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "KLPX:BOOT $(uname -m) $(uname -r)"

# capture TAG CMD...: runs CMD and prints its output (hex) and exit status. Kernel messages printed
# while it runs land between BEGIN and END.
capture() {{
    tag=$1; shift
    echo "KLPX:BEGIN $tag"
    "$@" </dev/null >/tmp/out 2>&1
    rc=$?
    od -An -v -tx1 /tmp/out | sed 's/^ */KLPX:X /'
    echo "KLPX:END $tag $rc"
    return $rc
}}

# wait_transition PATCH: waits until the patch's transition is over or the patch is gone.
wait_transition() {{
    d=/sys/kernel/livepatch/$1
    n=0
    while [ -e $d/transition ] && [ "$(cat $d/transition 2>/dev/null)" != 0 ]; do
        n=$((n+1))
        if [ $n -gt {tenths} ]; then
            echo "KLPX:TRANSITION $1 timeout $(cat $d/enabled 2>/dev/null)"
            return 1
        fi
        sleep 0.1
    done
    if [ -e $d/enabled ]; then
        echo "KLPX:TRANSITION $1 done $(cat $d/enabled)"
    else
        echo "KLPX:TRANSITION $1 gone -"
    fi
}}

# unload TAG NAME: removes a module, retrying while the livepatch core still holds it.
unload() {{
    n=0
    while ! rmmod $2 >/dev/null 2>&1; do
        n=$((n+1))
        if [ $n -ge 50 ]; then
            capture $1 rmmod $2
            return 1
        fi
        sleep 0.1
    done
    echo "KLPX:BEGIN $1"
    echo "KLPX:END $1 0"
}}

loaded() {{
    grep -q "^$1 " /proc/modules
}}

"#
    ));
    // Plain modules (a module the livepatch targets) load first, so the "before" checks see them.
    s.push_str("ok=1\n");
    for (i, m) in plan.modules.iter().enumerate() {
        if m.patch.is_none() {
            let _ = writeln!(
                s,
                "[ $ok = 1 ] && {{ capture insmod.{i} insmod {} || ok=0; }}",
                m.file
            );
        }
    }
    for i in 0..plan.checks {
        let _ = writeln!(s, "capture check.before.{i} sh {}", check_path(i));
    }
    for (i, m) in plan.modules.iter().enumerate() {
        if m.patch.is_none() {
            continue;
        }
        let _ = writeln!(
            s,
            "[ $ok = 1 ] && {{ capture insmod.{i} insmod {} || ok=0; }}",
            m.file
        );
        if let Some(p) = &m.patch {
            let _ = writeln!(
                s,
                "[ $ok = 1 ] && {{ if [ -d /sys/kernel/livepatch/{p} ]; then wait_transition {p} || ok=0; \
                 else echo \"KLPX:TRANSITION {p} missing -\"; ok=0; fi; }}"
            );
        }
        if plan.workload {
            let _ = writeln!(
                s,
                "[ $ok = 1 ] && {{ capture {} sh {WORKLOAD_PATH} || ok=0; }}",
                workload_tag(Step::Enable, i)
            );
        }
    }
    for i in 0..plan.checks {
        let _ = writeln!(
            s,
            "[ $ok = 1 ] && capture check.after.{i} sh {}",
            check_path(i)
        );
    }
    // A livepatch that is gone before its turn (an atomic-replace livepatch loaded after it took its
    // place) has no disabling transition of its own, so no workload after one. The disable's status
    // is kept in `off`: sh has no local variables, and the functions above set `rc`, `d`, `n`.
    for (i, m) in plan.modules.iter().enumerate().rev() {
        if let Some(p) = &m.patch {
            let workload = if plan.workload {
                format!(
                    " && [ $off = 0 ] && [ $ok = 1 ] && {{ capture {} sh {WORKLOAD_PATH} || ok=0; }}",
                    workload_tag(Step::Disable, i)
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "if [ -e /sys/kernel/livepatch/{p}/enabled ]; then \
                 capture disable.{i} sh -c 'echo 0 > /sys/kernel/livepatch/{p}/enabled'; off=$?; \
                 wait_transition {p}{workload}; fi"
            );
        }
    }
    for (i, m) in plan.modules.iter().enumerate().rev() {
        if m.patch.is_some() {
            let _ = writeln!(s, "loaded {} && unload rmmod.{i} {}", m.name, m.name);
        }
    }
    for i in 0..plan.checks {
        let _ = writeln!(s, "capture check.unloaded.{i} sh {}", check_path(i));
    }
    for (i, m) in plan.modules.iter().enumerate().rev() {
        if m.patch.is_none() {
            let _ = writeln!(s, "loaded {} && unload rmmod.{i} {}", m.name, m.name);
        }
    }
    let _ = writeln!(s, "echo {DONE_MARKER}\nsync\n{}", plan.halt);
    s
}

/// A command's output and exit status as the guest reported them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub status: Option<i32>,
    pub output: Vec<u8>,
    /// Console lines that are not klpx's (kernel messages) seen while the command ran.
    pub kernel: Vec<String>,
    /// Output lines that could not be decoded (a kernel message broke into one).
    pub garbled: bool,
}

/// How a livepatch transition ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// `done`, `timeout`, `gone` (the patch disappeared: disabled and freed) or `missing` (no sysfs
    /// directory after loading: the module registered no livepatch of that name).
    pub state: String,
    /// The `enabled` file's value at that moment, if there was one.
    pub enabled: Option<String>,
}

/// Everything the markers in a guest log say.
#[derive(Debug, Clone, Default)]
pub struct GuestLog {
    /// `uname -m` and `uname -r` of the guest, once it booted into the script.
    pub booted: Option<(String, String)>,
    /// Captured commands by tag.
    pub captures: BTreeMap<String, Captured>,
    /// Transitions of each patch in the order they were reported.
    pub transitions: BTreeMap<String, Vec<Transition>>,
    /// The script reached its end.
    pub done: bool,
    /// The tag of a capture that began but never ended (the guest hung or died in it).
    pub unfinished: Option<String>,
}

impl GuestLog {
    pub fn capture(&self, tag: &str) -> Option<&Captured> {
        self.captures.get(tag)
    }
}

/// Parses the serial console log of a guest running the script.
pub fn parse(log: &str) -> GuestLog {
    let mut g = GuestLog::default();
    let mut open: Option<(String, Captured)> = None;
    for line in log.lines() {
        let Some(at) = line.find(MARKER) else {
            if let Some((_, c)) = open.as_mut()
                && !line.trim().is_empty()
            {
                c.kernel.push(line.trim_end().to_string());
            }
            continue;
        };
        let rest = line[at + MARKER.len()..].trim_end_matches('\r');
        let mut words = rest.split_whitespace();
        match words.next() {
            Some("BOOT") => {
                let m = words.next().unwrap_or("").to_string();
                let r = words.next().unwrap_or("").to_string();
                g.booted = Some((m, r));
            }
            Some("BEGIN") => {
                open = Some((words.next().unwrap_or("").to_string(), Captured::default()));
            }
            Some("X") => {
                if let Some((_, c)) = open.as_mut() {
                    for w in words {
                        match u8::from_str_radix(w, 16) {
                            Ok(b) if w.len() == 2 => c.output.push(b),
                            _ => c.garbled = true,
                        }
                    }
                }
            }
            Some("END") => {
                let tag = words.next().unwrap_or("").to_string();
                let status = words.next().and_then(|s| s.parse().ok());
                let mut c = match open.take() {
                    Some((t, c)) if t == tag => c,
                    _ => Captured::default(),
                };
                c.status = status;
                g.captures.insert(tag, c);
            }
            Some("TRANSITION") => {
                let patch = words.next().unwrap_or("").to_string();
                let state = words.next().unwrap_or("").to_string();
                let enabled = words.next().filter(|e| *e != "-").map(str::to_string);
                g.transitions
                    .entry(patch)
                    .or_default()
                    .push(Transition { state, enabled });
            }
            Some("DONE") => g.done = true,
            _ => {}
        }
    }
    g.unfinished = open.map(|(t, _)| t);
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            modules: vec![GuestModule {
                file: "/klpx/0-livepatch-sample.ko".into(),
                name: "livepatch_sample".into(),
                patch: Some("livepatch_sample".into()),
            }],
            checks: 1,
            transition_timeout: Duration::from_secs(30),
            halt: "reboot -f".into(),
            workload: true,
        }
    }

    #[test]
    fn script_runs_the_steps_in_order() {
        let s = init_script(&plan());
        let pos = |needle: &str| {
            s.find(needle)
                .unwrap_or_else(|| panic!("{needle} not in\n{s}"))
        };
        assert!(s.starts_with("#!/bin/busybox sh\n"));
        let steps = [
            "capture check.before.0 sh /klpx/check.0.sh",
            "capture insmod.0 insmod /klpx/0-livepatch-sample.ko",
            "wait_transition livepatch_sample || ok=0",
            "capture workload.enable.0 sh /klpx/workload.sh || ok=0",
            "capture check.after.0 sh /klpx/check.0.sh",
            "echo 0 > /sys/kernel/livepatch/livepatch_sample/enabled",
            "wait_transition livepatch_sample && [ $off = 0 ] && [ $ok = 1 ]",
            "capture workload.disable.0 sh /klpx/workload.sh || ok=0",
            "unload rmmod.0 livepatch_sample",
            "capture check.unloaded.0 sh /klpx/check.0.sh",
            "echo KLPX:DONE",
            "reboot -f",
        ];
        for w in steps.windows(2) {
            assert!(pos(w[0]) < pos(w[1]), "{} before {}", w[0], w[1]);
        }
        // 30 s in tenths of a second.
        assert!(s.contains("-gt 300 ]"));
    }

    /// With two livepatches the workload runs after each one's enabling, in load order, and after
    /// each one's disabling, newest first: four runs, each under its own tag.
    #[test]
    fn the_workload_runs_after_every_transition() {
        let mut p = plan();
        p.modules.push(GuestModule {
            file: "/klpx/1-livepatch-callbacks-demo.ko".into(),
            name: "livepatch_callbacks_demo".into(),
            patch: Some("livepatch_callbacks_demo".into()),
        });
        let s = init_script(&p);
        let pos = |needle: &str| {
            s.find(needle)
                .unwrap_or_else(|| panic!("{needle} not in\n{s}"))
        };
        let steps = [
            "wait_transition livepatch_sample || ok=0",
            "capture workload.enable.0 sh /klpx/workload.sh",
            "wait_transition livepatch_callbacks_demo || ok=0",
            "capture workload.enable.1 sh /klpx/workload.sh",
            "capture check.after.0",
            "capture disable.1 ",
            "capture workload.disable.1 sh /klpx/workload.sh",
            "capture disable.0 ",
            "capture workload.disable.0 sh /klpx/workload.sh",
            "unload rmmod.1",
        ];
        for w in steps.windows(2) {
            assert!(pos(w[0]) < pos(w[1]), "{} before {}", w[0], w[1]);
        }
        assert_eq!(s.matches("sh /klpx/workload.sh").count(), 4, "{s}");

        p.workload = false;
        let s = init_script(&p);
        assert!(!s.contains(WORKLOAD_PATH), "{s}");
        assert!(
            s.contains("off=$?; wait_transition livepatch_sample; fi"),
            "{s}"
        );
    }

    #[test]
    fn parses_markers_between_kernel_messages() {
        let log = "\
[    0.1] Linux version 6.12\r
KLPX:BOOT x86_64 6.12.117\r
KLPX:BEGIN check.before.0\r
KLPX:X 63 6f 6e 73 6f 6c 65 3d 74 74 79 53 30 0a\r
KLPX:END check.before.0 0\r
KLPX:BEGIN insmod.0\r
livepatch: enabling patch 'livepatch_sample'\r
KLPX:END insmod.0 0\r
KLPX:TRANSITION livepatch_sample done 1\r
KLPX:BEGIN check.after.0\r
KLPX:X 74 68 69 73 0a\r
KLPX:END check.after.0 1\r
KLPX:TRANSITION livepatch_sample gone -\r
KLPX:BEGIN rmmod.0\r
";
        let g = parse(log);
        assert_eq!(
            g.booted,
            Some(("x86_64".to_string(), "6.12.117".to_string()))
        );
        let before = g.capture("check.before.0").unwrap();
        assert_eq!(before.output, b"console=ttyS0\n");
        assert_eq!(before.status, Some(0));
        let insmod = g.capture("insmod.0").unwrap();
        assert_eq!(insmod.output, b"");
        assert_eq!(
            insmod.kernel,
            ["livepatch: enabling patch 'livepatch_sample'"]
        );
        let after = g.capture("check.after.0").unwrap();
        assert_eq!(
            (after.output.as_slice(), after.status),
            (&b"this\n"[..], Some(1))
        );
        let t = &g.transitions["livepatch_sample"];
        assert_eq!(t[0].state, "done");
        assert_eq!(t[0].enabled.as_deref(), Some("1"));
        assert_eq!(t[1].state, "gone");
        assert_eq!(t[1].enabled, None);
        assert!(!g.done);
        assert_eq!(g.unfinished.as_deref(), Some("rmmod.0"));
    }

    #[test]
    fn a_broken_hex_line_is_flagged() {
        let g = parse("KLPX:BEGIN t\nKLPX:X 41 4[  1.0] oops\nKLPX:END t 0\nKLPX:DONE\n");
        let c = g.capture("t").unwrap();
        assert!(c.garbled);
        assert_eq!(c.output, b"A");
        assert!(g.done);
    }
}
