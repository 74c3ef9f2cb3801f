//! The guest side of `klpx verify`: the `/init` script klpx puts into the initramfs, and the parser for
//! the marker lines it prints on the serial console.
//!
//! The script prints one marker per line, each starting with `KLPX:`; kernel messages on the same
//! console do not start with it. Command output travels hex-encoded (`od`), sixteen bytes a line, so
//! that any bytes survive and a marker cannot be forged by a check's output.
//!
//! ```text
//! KLPX:BOOT <uname -m> <uname -r>
//! KLPX:CASE <n>                 case n of several begins (not printed for a run of one case)
//! KLPX:BEGIN <tag>              output of a command: check.before.N, insmod.N,
//! KLPX:X 74 68 69 73 ...        workload.enable.N, check.after.N, disable.N, workload.disable.N,
//!                               rmmod.N, check.unloaded.N (N: the module's or check's place in
//!                               its case); with several cases each tag begins with `case<n>.`
//! KLPX:END <tag> <exit status>
//! KLPX:TRANSITION <patch> done|timeout|gone|missing <enabled>   (`case<n>.<patch>` with several)
//! KLPX:STOP <n>                 case n failed by the guest's own test: no later case runs
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

/// Which case of a run a tag, a transition or a file belongs to. A run of one case keeps the names
/// it always had (`insmod.0`, `/klpx/check.0.sh`), so that its console reads as before; with
/// several, case `n` (from 1, as reports count them) has tags beginning with `case<n>.` and its
/// files in `/klpx/case<n>/`, so that two cases loading the same module, or having checks of the
/// same number, are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CaseId(pub(crate) Option<usize>);

impl CaseId {
    /// The only case of a run of one.
    pub(crate) const ONLY: CaseId = CaseId(None);

    /// The id of case `index` (from 0) of `count`.
    pub(crate) fn of(index: usize, count: usize) -> CaseId {
        CaseId((count > 1).then_some(index + 1))
    }

    /// `rest` as this case's tag (or transition name).
    pub(crate) fn tag(self, rest: &str) -> String {
        format!("{}{rest}", self.prefix())
    }

    /// What this case's tags begin with: `case<n>.`, or nothing for the only case.
    pub(crate) fn prefix(self) -> String {
        match self.0 {
            Some(n) => format!("case{n}."),
            None => String::new(),
        }
    }

    /// The initramfs directory of this case's modules, checks and files.
    pub(crate) fn dir(self) -> String {
        match self.0 {
            Some(n) => format!("{DIR}/case{n}"),
            None => DIR.to_string(),
        }
    }

    /// Where this case's files go: `/klpx/files`, where its checks find them, is a link to it
    /// while the case runs.
    pub(crate) fn files_dir(self) -> String {
        format!("{}/files", self.dir())
    }

    /// The initramfs path of check `i`.
    pub(crate) fn check_path(self, i: usize) -> String {
        format!("{}/check.{i}.sh", self.dir())
    }

    /// The initramfs path of this case's `--expect-before` or `--expect-after` text (`stage`:
    /// `before` or `after`), which the guest matches itself when a case follows.
    pub(crate) fn expect_path(self, stage: &str) -> String {
        format!("{}/expect.{stage}", self.dir())
    }
}

/// One case as the script runs it: its modules loaded and its checks run with them, then removed
/// again before the next case.
#[derive(Debug, Clone)]
pub(crate) struct PlanCase {
    pub(crate) id: CaseId,
    pub(crate) modules: Vec<GuestModule>,
    /// Number of check scripts ([`CaseId::check_path`]).
    pub(crate) checks: usize,
    /// The case has an `--expect-before` / `--expect-after` text at [`CaseId::expect_path`].
    pub(crate) expect_before: bool,
    pub(crate) expect_after: bool,
}

/// What the script does.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The cases in order; each starts on the kernel the one before left as it found it.
    pub(crate) cases: Vec<PlanCase>,
    /// How long to wait for each livepatch transition.
    pub(crate) transition_timeout: Duration,
    /// The command that ends the guest (`reboot -f`, `poweroff -f`).
    pub(crate) halt: String,
    /// Run [`WORKLOAD`] after every livepatch transition: after each livepatch's enabling (so a
    /// module that breaks a kernel path is caught with only the livepatches loaded so far) and
    /// after each one's disabling (the kernel must keep working as the old code comes back).
    pub(crate) workload: bool,
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

/// The initramfs path of check `i` of a run of one case.
pub fn check_path(i: usize) -> String {
    CaseId::ONLY.check_path(i)
}

/// The `/init` script for a plan.
pub(crate) fn init_script(plan: &Plan) -> String {
    let tenths = (plan.transition_timeout.as_millis() / 100).max(1);
    let mut s = String::new();
    s.push_str(&format!(
        r#"#!/bin/busybox sh
# Written by klpx verify: for each case, runs the checks, loads the modules and waits for each
# livepatch transition, runs the checks again, disables the livepatches, unloads the modules, runs
# the checks a third time; then halts. The workload (when asked for) runs after each transition.
# When a case follows, a case that failed ends the run (the kernel's state is no longer known).
# Markers: KLPX:...
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

# wait_transition PATCH NAME [ENABLED]: waits until the patch's transition is over or the patch is
# gone, and reports it as NAME; fails when it does not end in time, or when its `enabled` then is
# not ENABLED.
wait_transition() {{
    d=/sys/kernel/livepatch/$1
    n=0
    while [ -e $d/transition ] && [ "$(cat $d/transition 2>/dev/null)" != 0 ]; do
        n=$((n+1))
        if [ $n -gt {tenths} ]; then
            echo "KLPX:TRANSITION $2 timeout $(cat $d/enabled 2>/dev/null)"
            return 1
        fi
        sleep 0.1
    done
    if [ -e $d/enabled ]; then
        e=$(cat $d/enabled)
        echo "KLPX:TRANSITION $2 done $e"
        [ -z "$3" ] || [ "$e" = "$3" ]
    else
        echo "KLPX:TRANSITION $2 gone -"
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

# seen STAGE: adds the last check's output to what the checks printed at STAGE, noting a check
# that printed nothing but blanks (an expectation then fails, as klpx judges it).
seen() {{
    cat /tmp/out >> /tmp/seen.$1
    grep -q '[^[:space:]]' /tmp/out || : > /tmp/silent.$1
}}

# expect STAGE FILE: every check printed something at STAGE, and together they printed the text in
# FILE (compared as text, not as a pattern; the dots keep trailing newlines).
expect() {{
    [ -e /tmp/silent.$1 ] && return 1
    have=$(cat /tmp/seen.$1 2>/dev/null; echo .)
    want=$(cat $2; echo .)
    case "${{have%.}}" in *"${{want%.}}"*) return 0 ;; esac
    return 1
}}

"#
    ));
    // `ok`: the steps so far worked, so the next may run. `good`: nothing in the case failed; when a
    // case follows, the guest goes on only then. Both are global (sh has no local variables).
    s.push_str("run_cases() {\n");
    for (k, c) in plan.cases.iter().enumerate() {
        case_script(&mut s, plan, c);
        if k + 1 < plan.cases.len()
            && let Some(n) = c.id.0
        {
            let _ = writeln!(
                s,
                "[ $ok = 1 ] && [ $good = 1 ] || {{ echo \"KLPX:STOP {n}\"; return; }}"
            );
        }
    }
    s.push_str("}\n\nrun_cases\n");
    let _ = writeln!(s, "echo {DONE_MARKER}\nsync\n{}", plan.halt);
    s
}

/// The script lines of one case. With several cases the guest also tests the case's results itself
/// (each check after loading exits 0, the expectations are met), so that a failed case stops the
/// run before a later case runs on a kernel in a state nobody knows; klpx judges everything again
/// from the markers.
fn case_script(s: &mut String, plan: &Plan, c: &PlanCase) {
    let id = c.id;
    let several = id.0.is_some();
    let tag = |rest: &str| id.tag(rest);
    // After each check's capture: its output kept for the stage's expectation.
    let seen = |stage: &str| {
        if several {
            format!("; seen {stage}")
        } else {
            String::new()
        }
    };
    if let Some(n) = id.0 {
        let _ = writeln!(
            s,
            "# case {n}\necho \"KLPX:CASE {n}\"\nrm -f /klpx/files /tmp/seen.* /tmp/silent.*\n\
             ln -s {} /klpx/files",
            id.files_dir()
        );
    }
    s.push_str("ok=1; good=1\n");
    // Plain modules (a module the livepatch targets) load first, so the "before" checks see them.
    for (i, m) in c.modules.iter().enumerate() {
        if m.patch.is_none() {
            let _ = writeln!(
                s,
                "[ $ok = 1 ] && {{ capture {} insmod {} || ok=0; }}",
                tag(&format!("insmod.{i}")),
                m.file
            );
        }
    }
    for i in 0..c.checks {
        let _ = writeln!(
            s,
            "capture {} sh {}{}",
            tag(&format!("check.before.{i}")),
            id.check_path(i),
            seen("before")
        );
    }
    if several && c.expect_before {
        let _ = writeln!(s, "expect before {} || good=0", id.expect_path("before"));
    }
    for (i, m) in c.modules.iter().enumerate() {
        let Some(p) = &m.patch else { continue };
        let _ = writeln!(
            s,
            "[ $ok = 1 ] && {{ capture {} insmod {} || ok=0; }}",
            tag(&format!("insmod.{i}")),
            m.file
        );
        let _ = writeln!(
            s,
            "[ $ok = 1 ] && {{ if [ -d /sys/kernel/livepatch/{p} ]; then wait_transition {p} {} 1 || ok=0; \
             else echo \"KLPX:TRANSITION {} missing -\"; ok=0; fi; }}",
            tag(p),
            tag(p)
        );
        if plan.workload {
            let _ = writeln!(
                s,
                "[ $ok = 1 ] && {{ capture {} sh {WORKLOAD_PATH} || ok=0; }}",
                tag(&workload_tag(Step::Enable, i))
            );
        }
    }
    for i in 0..c.checks {
        let _ = writeln!(
            s,
            "[ $ok = 1 ] && {{ capture {} sh {} || good=0{}; }}",
            tag(&format!("check.after.{i}")),
            id.check_path(i),
            seen("after")
        );
    }
    if several && c.expect_after {
        let _ = writeln!(
            s,
            "[ $ok = 1 ] && {{ expect after {} || good=0; }}",
            id.expect_path("after")
        );
    }
    // A livepatch that is gone before its turn (an atomic-replace livepatch loaded after it took its
    // place) has no disabling transition of its own, so no workload after one. The disable's status
    // is kept in `off`: sh has no local variables, and the functions above set `rc`, `d`, `n`.
    for (i, m) in c.modules.iter().enumerate().rev() {
        let Some(p) = &m.patch else { continue };
        let workload = if plan.workload {
            format!(
                "[ $ok = 1 ] && {{ capture {} sh {WORKLOAD_PATH} || ok=0; }}",
                tag(&workload_tag(Step::Disable, i))
            )
        } else {
            ":".to_string()
        };
        let _ = writeln!(
            s,
            "if [ -e /sys/kernel/livepatch/{p}/enabled ]; then \
             capture {} sh -c 'echo 0 > /sys/kernel/livepatch/{p}/enabled'; off=$?; \
             if wait_transition {p} {} && [ $off = 0 ]; then {workload}; else good=0; fi; fi",
            tag(&format!("disable.{i}")),
            tag(p)
        );
    }
    for (i, m) in c.modules.iter().enumerate().rev() {
        if m.patch.is_some() {
            let _ = writeln!(
                s,
                "if loaded {}; then unload {} {} || good=0; fi",
                m.name,
                tag(&format!("rmmod.{i}")),
                m.name
            );
        }
    }
    for i in 0..c.checks {
        let _ = writeln!(
            s,
            "capture {} sh {}{}",
            tag(&format!("check.unloaded.{i}")),
            id.check_path(i),
            seen("unloaded")
        );
    }
    if several && c.expect_before {
        let _ = writeln!(s, "expect unloaded {} || good=0", id.expect_path("before"));
    }
    for (i, m) in c.modules.iter().enumerate().rev() {
        if m.patch.is_none() {
            let _ = writeln!(
                s,
                "if loaded {}; then unload {} {} || good=0; fi",
                m.name,
                tag(&format!("rmmod.{i}")),
                m.name
            );
        }
    }
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
    /// The cases of several that the guest began (`KLPX:CASE`), by number, in order.
    pub cases: Vec<usize>,
    /// The case after which the guest stopped because it failed (`KLPX:STOP`).
    pub stopped_after: Option<usize>,
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
            Some("CASE") => g
                .cases
                .extend(words.next().and_then(|n| n.parse::<usize>().ok())),
            Some("STOP") => g.stopped_after = words.next().and_then(|n| n.parse().ok()),
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

    fn sample(file: &str) -> GuestModule {
        GuestModule {
            file: file.into(),
            name: "livepatch_sample".into(),
            patch: Some("livepatch_sample".into()),
        }
    }

    fn plan() -> Plan {
        Plan {
            cases: vec![PlanCase {
                id: CaseId::ONLY,
                modules: vec![sample("/klpx/0-livepatch-sample.ko")],
                checks: 1,
                expect_before: false,
                expect_after: false,
            }],
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
            "wait_transition livepatch_sample livepatch_sample 1 || ok=0",
            "capture workload.enable.0 sh /klpx/workload.sh || ok=0",
            "capture check.after.0 sh /klpx/check.0.sh",
            "echo 0 > /sys/kernel/livepatch/livepatch_sample/enabled",
            "if wait_transition livepatch_sample livepatch_sample && [ $off = 0 ]; then [ $ok = 1 ]",
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
        // One case keeps the plain tags and paths, and has no case markers.
        assert!(!s.contains("KLPX:CASE"), "{s}");
        assert!(!s.contains("KLPX:STOP"), "{s}");
        assert!(!s.contains("case1."), "{s}");
    }

    /// With two livepatches the workload runs after each one's enabling, in load order, and after
    /// each one's disabling, newest first: four runs, each under its own tag.
    #[test]
    fn the_workload_runs_after_every_transition() {
        let mut p = plan();
        p.cases[0].modules.push(GuestModule {
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
            "wait_transition livepatch_sample livepatch_sample 1 || ok=0",
            "capture workload.enable.0 sh /klpx/workload.sh",
            "wait_transition livepatch_callbacks_demo livepatch_callbacks_demo 1 || ok=0",
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
            s.contains(
                "off=$?; if wait_transition livepatch_sample livepatch_sample && [ $off = 0 ]; \
                 then :; else good=0; fi; fi"
            ),
            "{s}"
        );
    }

    /// Two cases, both loading the sample livepatch: each case's steps in order under its own
    /// tags, files and transition names, the first case ending with the guest's own test of its
    /// results (which stops the run when it failed), the second one without (nothing follows).
    #[test]
    fn two_cases_run_one_after_the_other_under_their_own_names() {
        let mut p = plan();
        p.cases = vec![
            PlanCase {
                id: CaseId::of(0, 2),
                modules: vec![sample("/klpx/case1/0-livepatch-sample.ko")],
                checks: 1,
                expect_before: true,
                expect_after: true,
            },
            PlanCase {
                id: CaseId::of(1, 2),
                modules: vec![sample("/klpx/case2/0-livepatch-sample.ko")],
                checks: 2,
                expect_before: false,
                expect_after: true,
            },
        ];
        let s = init_script(&p);
        let pos = |needle: &str| {
            s.find(needle)
                .unwrap_or_else(|| panic!("{needle} not in\n{s}"))
        };
        let steps = [
            "run_cases() {",
            "echo \"KLPX:CASE 1\"",
            "ln -s /klpx/case1/files /klpx/files",
            "capture case1.check.before.0 sh /klpx/case1/check.0.sh; seen before",
            "expect before /klpx/case1/expect.before || good=0",
            "capture case1.insmod.0 insmod /klpx/case1/0-livepatch-sample.ko",
            "wait_transition livepatch_sample case1.livepatch_sample 1 || ok=0",
            "capture case1.workload.enable.0 sh /klpx/workload.sh",
            "capture case1.check.after.0 sh /klpx/case1/check.0.sh || good=0; seen after; }",
            "expect after /klpx/case1/expect.after || good=0",
            "capture case1.disable.0 ",
            "wait_transition livepatch_sample case1.livepatch_sample && [ $off = 0 ]",
            "capture case1.workload.disable.0 sh /klpx/workload.sh",
            "unload case1.rmmod.0 livepatch_sample || good=0",
            "capture case1.check.unloaded.0 sh /klpx/case1/check.0.sh; seen unloaded",
            "expect unloaded /klpx/case1/expect.before || good=0",
            "[ $ok = 1 ] && [ $good = 1 ] || { echo \"KLPX:STOP 1\"; return; }",
            "echo \"KLPX:CASE 2\"",
            "ln -s /klpx/case2/files /klpx/files",
            "capture case2.check.before.1 sh /klpx/case2/check.1.sh",
            "capture case2.insmod.0 insmod /klpx/case2/0-livepatch-sample.ko",
            "wait_transition livepatch_sample case2.livepatch_sample 1",
            "capture case2.check.after.1 sh /klpx/case2/check.1.sh",
            "expect after /klpx/case2/expect.after",
            "unload case2.rmmod.0 livepatch_sample",
            "capture case2.check.unloaded.1 sh /klpx/case2/check.1.sh",
            "\n}\n\nrun_cases\n",
            "echo KLPX:DONE",
            "reboot -f",
        ];
        for w in steps.windows(2) {
            assert!(pos(w[0]) < pos(w[1]), "{} before {}", w[0], w[1]);
        }
        // The second case has no --expect-before, and nothing follows it.
        assert!(!s.contains("/klpx/case2/expect.before"), "{s}");
        assert!(!s.contains("KLPX:STOP 2"), "{s}");
        assert_eq!(s.matches("KLPX:STOP").count(), 1, "{s}");
        // Each case starts with none of the case before's check outputs.
        assert_eq!(
            s.matches("rm -f /klpx/files /tmp/seen.* /tmp/silent.*\n")
                .count(),
            2,
            "{s}"
        );
        assert_eq!(s.matches("sh /klpx/workload.sh").count(), 4, "{s}");
    }

    /// The guest's own expectation test matches text, trailing newlines included, and fails on a
    /// check that printed only blanks: the functions the script defines, run by the host's sh.
    #[test]
    fn the_guest_matches_expectations_as_text() {
        assert!(
            which::which("busybox").is_ok(),
            "this test runs the guest's functions with busybox: apt-get install busybox-static"
        );
        let script = init_script(&plan());
        let dir = std::env::temp_dir().join(format!("klpx-expect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The functions as the script has them, with the guest's /tmp in a directory of this test.
        let functions = script
            [script.find("seen() {").unwrap()..script.find("run_cases() {").unwrap()]
            .replace("/tmp/", &format!("{}/", dir.display()));
        let run = |outputs: &[&str], want: &str| -> bool {
            for f in ["seen.t", "silent.t"] {
                let _ = std::fs::remove_file(dir.join(f));
            }
            let mut body = functions.clone();
            for (i, o) in outputs.iter().enumerate() {
                let f = dir.join(format!("out{i}"));
                std::fs::write(&f, o).unwrap();
                body.push_str(&format!(
                    "cp {} {}/out; seen t\n",
                    f.display(),
                    dir.display()
                ));
            }
            let w = dir.join("want");
            std::fs::write(&w, want).unwrap();
            body.push_str(&format!("expect t {}\n", w.display()));
            std::process::Command::new("busybox")
                .args(["sh", "-c", &body])
                .status()
                .unwrap()
                .success()
        };
        assert!(run(&["console=ttyS0\n"], "console="));
        assert!(run(&["a*b[x]\n", "15\n"], "]\n15\n"));
        assert!(!run(&["150"], "15\n"));
        assert!(!run(&["a*b"], "a?b"));
        assert!(!run(&["console=ttyS0\n", " \n"], "console="));
        let _ = std::fs::remove_dir_all(&dir);
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
