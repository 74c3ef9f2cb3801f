//! `klpx diff` on pairs compiled without klpx's `#line` directives, on Debian's own kernel configs:
//! a patch that adds lines near the top of net/core/dev.c must not make the functions below it
//! changed (tests/standalone-pairs/cases.yaml). Every function klpx calls "line numbers only" is
//! checked against objdump: its instructions differ only in numbers that moved by the lines added.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::corpus::strings;
use common::kernel::{ObjectPair, build_pair_in, repo};
use klpx::kernel::cache;
use klpx::patch::source::SourcePatch;
use klpx_arch::Arch;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    patch: String,
    object: String,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    verdict: String,
    #[serde(default)]
    changed: Vec<String>,
    /// Where an architecture's compiler makes other functions changed (inlining).
    #[serde(default)]
    changed_on: std::collections::BTreeMap<String, Vec<String>>,
    lines_moved: i64,
}

fn cases_dir() -> PathBuf {
    repo().join("tests/standalone-pairs")
}

fn cases(file: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(cases_dir().join(file))
        .unwrap_or_else(|e| panic!("reading {file}: {e}"));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parsing {file}: {e}"))
}

/// `klpx diff --json [EXTRA] ORIG PATCHED`: the report and the exit status.
fn diff(pair: &ObjectPair, extra: &[&str]) -> (serde_json::Value, Option<i32>) {
    let run = Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args(["diff", "--json"])
        .args(extra)
        .arg(&pair.orig)
        .arg(&pair.patched)
        .output()
        .expect("running klpx");
    let json = serde_json::from_slice(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON from klpx diff ({e}): {}",
            String::from_utf8_lossy(&run.stderr)
        )
    });
    (json, run.status.code())
}

/// objdump -dr of one function, from its first instruction on.
fn disassembly(arch: Arch, obj: &Path, function: &str) -> Vec<String> {
    let tool = format!("{}objdump", arch.backend().default_cross_prefix());
    let out = Command::new(&tool)
        .args(["-dr", "--no-show-raw-insn"])
        .arg(format!("--disassemble={function}"))
        .arg(obj)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    assert!(out.status.success(), "{tool} failed on {}", obj.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let strings = string_sections(obj);
    text.lines()
        .skip_while(|l| !l.starts_with("Disassembly of section"))
        .map(|l| with_strings(l, &strings))
        .collect()
}

/// The object's merged string sections (`SHF_MERGE|SHF_STRINGS`), by name, read with the object
/// crate.
fn string_sections(obj: &Path) -> Vec<(String, Vec<u8>)> {
    use object::{Object, ObjectSection, SectionKind};
    let bytes = std::fs::read(obj).expect("reading the object");
    let file = object::File::parse(&*bytes).expect("parsing the object");
    file.sections()
        .filter(|s| s.kind() == SectionKind::ReadOnlyString)
        .filter_map(|s| Some((s.name().ok()?.to_string(), s.data().ok()?.to_vec())))
        .collect()
}

/// An objdump relocation line with its `SECTION+0xOFF` into a merged string section written as the
/// string it points into (`"Not tainted"+0`): a string added or grown above moves every later
/// string's offset (clang merges a file's strings into one `.rodata.str1.1`), not what it reads.
fn with_strings(line: &str, strings: &[(String, Vec<u8>)]) -> String {
    for (name, data) in strings {
        let Some(at) = line.find(&format!("\t{name}+0x")) else {
            continue;
        };
        let start = at + name.len() + 4;
        let hex: String = line[start..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        let Ok(mut off) = usize::from_str_radix(&hex, 16) else {
            continue;
        };
        // A PC-relative reference's addend is the offset less the 4 bytes of its field.
        if line.contains("PC32") || line.contains("PLT32") {
            off += 4;
        }
        if off >= data.len() {
            continue;
        }
        let begin = data[..off]
            .iter()
            .rposition(|&b| b == 0)
            .map_or(0, |p| p + 1);
        let end = data[off..]
            .iter()
            .position(|&b| b == 0)
            .map_or(data.len(), |p| off + p);
        return format!(
            "{}\t{:?}+{}{}",
            &line[..at],
            String::from_utf8_lossy(&data[begin..end]),
            off - begin,
            &line[start + hex.len()..]
        );
    }
    line.to_string()
}

/// Splits an objdump line into its numbers and the text between them.
fn tokens(line: &str) -> (Vec<String>, Vec<i64>) {
    let (mut text, mut numbers) = (vec![String::new()], Vec::new());
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let hex = b[i..].starts_with(b"0x");
            let start = if hex { i + 2 } else { i };
            let mut end = start;
            while end < b.len()
                && (if hex {
                    b[end].is_ascii_hexdigit()
                } else {
                    b[end].is_ascii_digit()
                })
            {
                end += 1;
            }
            let radix = if hex { 16 } else { 10 };
            if let Ok(n) = i64::from_str_radix(&line[start..end], radix) {
                numbers.push(n);
                text.push(String::new());
                i = end;
                continue;
            }
        }
        text.last_mut().expect("never empty").push(b[i] as char);
        i += 1;
    }
    (text, numbers)
}

/// Why two builds of `function` differ in more than numbers moved by `moved`, if they do.
fn more_than_lines(arch: Arch, pair: &ObjectPair, function: &str, moved: i64) -> Option<String> {
    let (a, b) = (
        disassembly(arch, &pair.orig, function),
        disassembly(arch, &pair.patched, function),
    );
    if a.len() != b.len() || a.len() < 2 {
        return Some(format!(
            "{function}: {} vs {} lines of disassembly",
            a.len(),
            b.len()
        ));
    }
    for (x, y) in a.iter().zip(&b).filter(|(x, y)| x != y) {
        let ((tx, nx), (ty, ny)) = (tokens(x), tokens(y));
        let only_moved = tx == ty
            && nx.len() == ny.len()
            && nx.iter().zip(&ny).all(|(p, q)| p == q || q - p == moved);
        if !only_moved {
            return Some(format!("{function}: `{}` became `{}`", x.trim(), y.trim()));
        }
    }
    None
}

fn run_arch(arch: Arch, distro: &str) {
    let scratch = std::env::temp_dir().join(format!("klpx-standalone-{}", arch.name()));
    let cases = cases("cases.yaml");
    let any_patch = cases_dir().join(&cases[0].patch);
    let tree = common::distro::tree(arch, distro, &any_patch, &scratch)
        .unwrap_or_else(|e| panic!("{arch}: {e:#}"));
    let objects: Vec<String> = cases.iter().map(|c| c.object.clone()).collect();
    tree.compile(&objects)
        .unwrap_or_else(|e| panic!("{arch}: compiling the original objects: {e:#}"));
    let release = tree
        .out
        .parent()
        .and_then(Path::file_name)
        .map_or_else(|| "tree".to_string(), |n| n.to_string_lossy().into_owned());
    let failures = run_cases(arch, &tree.src, &tree.out, &release, &cases);
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Builds each case's pair in the output tree `out` (over `src`, its objects compiled there
/// already) and checks `klpx diff` on it; returns the failures.
fn run_cases(arch: Arch, src: &Path, out: &Path, release: &str, cases: &[Case]) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let text = std::fs::read_to_string(cases_dir().join(&case.patch)).expect("reading patch");
        let patch = SourcePatch::parse(&case.patch, &text).expect("parsing patch");
        let dir = cache::root()
            .join("standalone-pairs")
            .join(release)
            .join(&case.name);
        let pair = build_pair_in(src, out, arch, &case.object, &patch, &text, &dir)
            .unwrap_or_else(|e| panic!("{arch} {}: building the pair: {e:#}", case.name));
        let mut bad = Vec::new();
        let (report, status) = diff(&pair, &[]);
        let want_status = match case.expect.verdict.as_str() {
            "patchable" => 0,
            "no-change" => 1,
            _ => 3,
        };
        if report["verdict"] != case.expect.verdict.as_str() || status != Some(want_status) {
            bad.push(format!(
                "verdict {} (exit {status:?}), expected {}; refusals {}",
                report["verdict"], case.expect.verdict, report["refusals"]
            ));
        }
        let changed = strings(&report, "changed_functions");
        let want: BTreeSet<String> = case
            .expect
            .changed_on
            .get(arch.name())
            .unwrap_or(&case.expect.changed)
            .iter()
            .cloned()
            .collect();
        if changed != want {
            bad.push(format!("changed {changed:?}, expected {want:?}"));
        }
        let line_only = strings(&report, "line_only_functions");
        if line_only.is_empty() {
            bad.push("no function differs in line numbers only".to_string());
        }
        bad.extend(
            line_only
                .iter()
                .filter_map(|f| more_than_lines(arch, &pair, f, case.expect.lines_moved)),
        );
        // Counted, the same functions are changed.
        let (counted, _) = diff(&pair, &["--count-line-changes"]);
        let all: BTreeSet<String> = want.union(&line_only).cloned().collect();
        if strings(&counted, "changed_functions") != all
            || !strings(&counted, "line_only_functions").is_empty()
        {
            bad.push(format!(
                "with --count-line-changes: changed {:?}, expected {all:?}",
                strings(&counted, "changed_functions")
            ));
        }
        eprintln!(
            "{arch} {}: {} changed, {} differ in line numbers only",
            case.name,
            changed.len(),
            line_only.len()
        );
        failures.extend(
            bad.into_iter()
                .map(|b| format!("{arch} {}: {b}", case.name)),
        );
    }
    failures
}

#[test]
fn standalone_pairs_x86_64() {
    run_arch(Arch::X86_64, "debian");
}

#[test]
fn standalone_pairs_arm64() {
    run_arch(Arch::Arm64, "debian");
}

#[test]
fn standalone_pairs_ppc64le() {
    run_arch(Arch::Ppc64le, "debian:6.1");
}

#[test]
fn standalone_pairs_s390() {
    run_arch(Arch::S390x, "debian:6.1");
}

/// The tiny x86_64 tree with PRINTK_INDEX and UBSAN (tests/kernel-corpus/bookkeeping.config),
/// configured and prepared by `klpx kernel config --fragment`: every printk below the added lines
/// has a `.printk_index` entry whose line moved, and every bounds and shift check UBSAN data whose
/// line moved.
#[test]
fn standalone_pairs_printk_index_ubsan() {
    let fragment = repo().join("tests/kernel-corpus/bookkeeping.config");
    let out = Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args([
            "kernel",
            "config",
            "--arch",
            "x86_64",
            "-j",
            "2",
            "--fragment",
        ])
        .arg(&fragment)
        .output()
        .expect("running klpx kernel config");
    assert!(
        out.status.success(),
        "klpx kernel config --fragment: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let config = std::fs::read_to_string(tree.join(".config")).expect("the tree's .config");
    for option in [
        "CONFIG_PRINTK_INDEX=y",
        "CONFIG_UBSAN_BOUNDS=y",
        "CONFIG_UBSAN_SHIFT=y",
    ] {
        assert!(
            config.lines().any(|l| l == option),
            "{option} not in the tree's .config"
        );
    }
    let src = cache::debian_source().expect("the kernel source");
    let cases = cases("bookkeeping.yaml");
    let mut objects: Vec<&str> = cases.iter().map(|c| c.object.as_str()).collect();
    objects.dedup();
    {
        let _lock = klpx::livepatch::lock::SourceLock::take(&src).unwrap();
        let kt = klpx::kernel::tree::KernelTree::new(Arch::X86_64, &src, &tree, 2);
        kt.build_objects(&objects)
            .unwrap_or_else(|e| panic!("compiling {objects:?}: {e:#}"));
    }
    let mut failures = run_cases(Arch::X86_64, &src, &tree, "x86_64-bookkeeping", &cases);
    failures.extend(ubsan_failures(
        "x86_64-bookkeeping",
        ".data..Lubsan_data",
        &cases,
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same tree and patches built with clang 16 (`klpx kernel build --llvm --fragment`, Debian's
/// /usr/lib/llvm-16/bin first in PATH), whose UBSAN check data are unnamed labels
/// (`.data..L__unnamed_N`, numbered in order, so five added lines renumber none).
#[test]
fn standalone_pairs_printk_index_ubsan_clang() {
    common::kernel::use_llvm_16();
    let fragment = repo().join("tests/kernel-corpus/bookkeeping.config");
    // Built whole (the boot test builds it too), so its objects and their commands are there.
    let out = Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args([
            "kernel",
            "build",
            "--llvm",
            "--arch",
            "x86_64",
            "-j",
            "2",
            "--fragment",
        ])
        .arg(&fragment)
        .output()
        .expect("running klpx kernel build");
    assert!(
        out.status.success(),
        "klpx kernel build --llvm --fragment: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let src = cache::debian_source().expect("the kernel source");
    let cases = cases("bookkeeping-clang.yaml");
    let release = "x86_64-llvm-bookkeeping";
    let mut failures = run_cases(Arch::X86_64, &src, &tree, release, &cases);
    failures.extend(ubsan_failures(release, ".data..L__unnamed_", &cases));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// [`ubsan_lines_moved`] on each case's cached pair of `release`, as failure lines.
fn ubsan_failures(release: &str, prefix: &str, cases: &[Case]) -> Vec<String> {
    cases
        .iter()
        .filter_map(|case| {
            let dir = cache::root()
                .join("standalone-pairs")
                .join(release)
                .join(&case.name);
            let pair = ObjectPair {
                orig: dir.join("orig.o"),
                patched: dir.join("patched.o"),
            };
            ubsan_lines_moved(&pair, prefix, case.expect.lines_moved)
                .err()
                .map(|e| format!("{}: {e}", case.name))
        })
        .collect()
}

/// Checks, with the object crate's reader rather than klpx's, that every UBSAN check's data
/// (writable sections named `prefix`N: gcc's `.data..Lubsan_dataN`, clang's `.data..L__unnamed_N`;
/// the same N in both builds when no check was added) is byte-equal in both builds but for its line
/// (`struct source_location`: bytes 8..12), which either stayed or moved by `moved`, and that some
/// moved.
fn ubsan_lines_moved(pair: &ObjectPair, prefix: &str, moved: i64) -> Result<(), String> {
    use object::{Object, ObjectSection};
    let (a, b) = (
        std::fs::read(&pair.orig).map_err(|e| e.to_string())?,
        std::fs::read(&pair.patched).map_err(|e| e.to_string())?,
    );
    let (a, b) = (
        object::File::parse(&*a).map_err(|e| e.to_string())?,
        object::File::parse(&*b).map_err(|e| e.to_string())?,
    );
    let mut moved_count = 0;
    for sa in a.sections() {
        let name = sa.name().map_err(|e| e.to_string())?;
        if !name.starts_with(prefix) {
            continue;
        }
        let sb = b
            .section_by_name(name)
            .ok_or_else(|| format!("{name}: not in the patched build"))?;
        let (x, y) = (sa.data().unwrap_or(&[]), sb.data().unwrap_or(&[]));
        let line = |d: &[u8]| i64::from(u32::from_le_bytes(d[8..12].try_into().unwrap()));
        if x.len() != y.len() || x.len() < 16 || x[..8] != y[..8] || x[12..] != y[12..] {
            return Err(format!("{name}: differs in more than its line"));
        }
        match line(y) - line(x) {
            0 => {}
            d if d == moved => moved_count += 1,
            d => return Err(format!("{name}: its line moved by {d}, not {moved}")),
        }
    }
    if moved_count == 0 {
        return Err("no UBSAN check's line moved".to_string());
    }
    Ok(())
}

#[test]
fn objdump_lines_split_into_numbers() {
    let (t, n) = tokens("  9d:\tmov    $0x436,%edx");
    assert_eq!(n, vec![0x9, 0x436]);
    assert_eq!(t.len(), 3);
    let (_, n) = tokens("  48:\tli      r5,1078");
    assert_eq!(n, vec![48, 5, 1078]);
}
