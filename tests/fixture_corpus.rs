//! The fixture corpus: small C translation units under `tests/fixtures/<case>/` (orig.c and patched.c),
//! compiled for each architecture with the kernel's code-generation and function-entry flags and diffed
//! with `klpx diff --json -o OUT.o`. The expected verdicts, symbol lists and output contents live in
//! `tests/fixtures/cases.yaml`; they were worked out from the C and its disassembly.
//!
//! The second half checks that bad input (not ELF, truncated, corrupt, 32-bit, mismatched, missing)
//! ends in exit status 2 with one line on stderr naming the file, and never in a panic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use klpx_arch::{Arch, Endian};
use object::read::elf::{ElfFile64, FileHeader};
use object::{Endianness, Object, ObjectKind, ObjectSection, ObjectSymbol, SymbolKind};
use serde::Deserialize;
use serde_json::Value as Json;
use serde_norway::Mapping;

/// Where the cases live.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Flags every fixture is compiled with, after the architecture's own.
const COMMON_CFLAGS: [&str; 4] = [
    "-ffunction-sections",
    "-fdata-sections",
    "-ffreestanding",
    "-fno-stack-protector",
];

// ---------------------------------------------------------------------------------------------------
// cases.yaml
// ---------------------------------------------------------------------------------------------------

/// What `klpx diff` decides about a pair of objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Verdict {
    Patchable,
    NoChange,
    Unpatchable,
}

impl Verdict {
    /// The exit status `klpx diff` uses for this verdict.
    fn exit_status(self) -> i32 {
        match self {
            Verdict::Patchable => 0,
            Verdict::NoChange => 1,
            Verdict::Unpatchable => 3,
        }
    }

    /// The verdict as the JSON report spells it.
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Patchable => "patchable",
            Verdict::NoChange => "no-change",
            Verdict::Unpatchable => "unpatchable",
        }
    }
}

/// One case of cases.yaml, as written (expectations still unmerged).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    symvers: Option<String>,
    /// x86_64: built as kernels before 5.8 without objtool built it: `-pg -mfentry` without
    /// `-mrecord-mcount`, then the kernel's own `scripts/recordmcount` (see [`recordmcount`]).
    #[serde(default)]
    recordmcount: bool,
    #[serde(default)]
    known_bug: Option<String>,
    expect: Mapping,
    #[serde(default)]
    arch: BTreeMap<String, Mapping>,
}

/// A refusal the case expects: its symbol, and a substring of its reason.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedRefusal {
    symbol: String,
    reason: String,
}

/// Checks on OUT.o beyond the generic ones.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputExpect {
    #[serde(default)]
    defined: Vec<String>,
    #[serde(default)]
    undefined: Vec<String>,
    #[serde(default)]
    absent: Vec<String>,
    #[serde(default)]
    strings: Vec<String>,
    #[serde(default)]
    section_sizes: BTreeMap<String, u64>,
}

/// The expectations of one case on one architecture, overrides applied.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    verdict: Verdict,
    #[serde(default)]
    changed: Vec<String>,
    #[serde(default)]
    new: Vec<String>,
    #[serde(default)]
    copied: Vec<String>,
    #[serde(default)]
    changed_data: Vec<String>,
    #[serde(default)]
    new_data: Vec<String>,
    #[serde(default)]
    klp: Vec<String>,
    #[serde(default)]
    refused: Vec<ExpectedRefusal>,
    #[serde(default)]
    special_entries: BTreeMap<String, u64>,
    #[serde(default)]
    output: OutputExpect,
    #[serde(default)]
    unchecked: Vec<String>,
    #[serde(default)]
    known_bug: Option<String>,
}

impl Case {
    fn dir(&self) -> PathBuf {
        Path::new(FIXTURES).join(&self.name)
    }

    fn applies_to(&self, arch: Arch) -> bool {
        self.arches
            .as_ref()
            .is_none_or(|list| list.iter().any(|a| a == arch.name()))
    }

    /// `expect` with the architecture's keys replacing the common ones, and the known bugs that apply
    /// (the case's and the architecture's).
    fn expect_for(&self, arch: Arch) -> Expect {
        let mut merged = self.expect.clone();
        if let Some(over) = self.arch.get(arch.name()) {
            for (k, v) in over {
                merged.insert(k.clone(), v.clone());
            }
        }
        let mut e: Expect = serde_norway::from_value(serde_norway::Value::Mapping(merged))
            .unwrap_or_else(|err| panic!("cases.yaml: {} on {arch}: {err}", self.name));
        e.known_bug = match (self.known_bug.clone(), e.known_bug) {
            (Some(all), Some(here)) => Some(format!("{all}; on {arch}: {here}")),
            (all, here) => here.or(all),
        };
        e
    }

    /// Extra `klpx diff` arguments.
    fn klpx_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(o) = &self.object {
            args.extend(["--object".to_string(), o.clone()]);
        }
        if let Some(s) = &self.symvers {
            args.push("--symvers".to_string());
            args.push(self.dir().join(s).display().to_string());
        }
        args
    }

    fn object_name(&self) -> &str {
        self.object.as_deref().unwrap_or("vmlinux")
    }
}

/// Reads and validates cases.yaml: known architecture names, existing sources, parseable
/// expectations for every architecture.
fn load_cases() -> Vec<Case> {
    let path = Path::new(FIXTURES).join("cases.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let cases: Vec<Case> =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
    for case in &cases {
        let listed = case.arches.iter().flatten().chain(case.arch.keys());
        for a in listed {
            assert!(
                names.contains(&a.as_str()),
                "cases.yaml: {}: unknown architecture {a}",
                case.name
            );
        }
        for file in ["orig.c", "patched.c"] {
            let src = case.dir().join(file);
            assert!(src.is_file(), "cases.yaml: {} lacks {}", case.name, file);
        }
        for arch in Arch::ALL {
            case.expect_for(arch);
        }
    }
    cases
}

// ---------------------------------------------------------------------------------------------------
// Building and running
// ---------------------------------------------------------------------------------------------------

/// A directory of its own under the system temporary directory, removed only when asked (a failing
/// test leaves its objects behind for inspection).
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("klpx-fixtures-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The compiler command for `arch`: `<prefix>gcc -O2 <kernel flags> <entry flags> <livepatch flags>
/// <common flags> -c`. The livepatch flags are what klpx adds to kernel builds it diffs (ppc64le
/// `-mcmodel=large`, so static data is reached through `.toc` entries a module can relocate).
fn compiler(arch: Arch, old_mcount: bool) -> Command {
    let b = arch.backend();
    let mut cmd = Command::new(format!("{}gcc", b.default_cross_prefix()));
    cmd.arg("-O2")
        .args(b.kernel_cflags())
        .args(
            b.entry_cflags()
                .iter()
                .filter(|f| !(old_mcount && **f == "-mrecord-mcount")),
        )
        .args(b.livepatch_cflags())
        .args(COMMON_CFLAGS)
        .arg("-c");
    cmd
}

/// The kernel's `scripts/recordmcount`, built once from the cached linux-source-6.12.
fn recordmcount_tool() -> Result<PathBuf, String> {
    static TOOL: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    TOOL.get_or_init(|| {
        let src = klpx::kernel::cache::debian_source().map_err(|e| format!("{e:#}"))?;
        let dir = klpx::kernel::cache::root().join("tools");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let tool = dir.join(format!("recordmcount-{}", std::process::id()));
        let out = Command::new("gcc")
            .args(["-O2", "-I"])
            .arg(src.join("tools/include"))
            .arg(src.join("scripts/recordmcount.c"))
            .arg("-o")
            .arg(&tool)
            .output()
            .map_err(|e| format!("running gcc: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building recordmcount: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let kept = dir.join("recordmcount");
        std::fs::rename(&tool, &kept).map_err(|e| e.to_string())?;
        Ok(kept)
    })
    .clone()
}

/// Runs recordmcount over `obj` as kernels before 5.8 did (Linux commit 9c8e2f6d3d36 taught it
/// `.text.*`). Their list of traced sections named `.text` but no `.text.NAME`, so the call to
/// `__fentry__` of every function `-ffunction-sections` put in a section of its own became a 5-byte
/// NOP with an `R_X86_64_NONE` relocation, listed nowhere. Today's tool does the same for sections
/// off its list; each `.text.NAME` is renamed off it (to `.tExt.NAME`) for the run and back after,
/// which leaves exactly what the old tool wrote.
fn recordmcount(obj: &Path) -> Result<(), String> {
    let tool = recordmcount_tool()?;
    let bytes = std::fs::read(obj).map_err(|e| e.to_string())?;
    let file = ElfFile64::<Endianness>::parse(&*bytes).map_err(|e| e.to_string())?;
    let names: Vec<String> = file
        .sections()
        .filter_map(|s| s.name().ok().map(str::to_string))
        .filter(|n| n.starts_with(".text."))
        .collect();
    let run = |program: &Path, args: Vec<String>| -> Result<(), String> {
        let out = Command::new(program)
            .args(&args)
            .arg(obj)
            .output()
            .map_err(|e| format!("running {}: {e}", program.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed: {}",
                program.display(),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let renames = |from: &str, to: &str| -> Vec<String> {
        names
            .iter()
            .flat_map(|n| {
                let (a, b) = (n.replacen(".text.", from, 1), n.replacen(".text.", to, 1));
                ["--rename-section".to_string(), format!("{a}={b}")]
            })
            .collect()
    };
    run(Path::new("objcopy"), renames(".text.", ".tExt."))?;
    run(&tool, vec!["-w".to_string()])?;
    run(Path::new("objcopy"), renames(".tExt.", ".text."))
}

/// Compiles `src` for `arch` into `out`. Both builds of a case are compiled from a copy named
/// `<unit>.c` in a directory of their own, so `__FILE__` and the `STT_FILE` symbol agree between them
/// as they do in a kernel build; `include_dir` serves the fixture's own headers. A missing compiler
/// panics: CI installs all four.
fn compile(
    arch: Arch,
    src: &Path,
    unit: &str,
    include_dir: &Path,
    out: &Path,
    old_mcount: bool,
) -> Result<(), String> {
    let dir = out.with_extension("src");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let copy = dir.join(format!("{unit}.c"));
    std::fs::copy(src, &copy).map_err(|e| format!("copying {}: {e}", src.display()))?;
    let mut cmd = compiler(arch, old_mcount);
    cmd.arg("-I")
        .arg(include_dir)
        .arg(format!("{unit}.c"))
        .arg("-o")
        .arg(out)
        .current_dir(&dir);
    let result = cmd.output().unwrap_or_else(|e| {
        panic!(
            "{arch}: cannot run {:?} ({e}); install {}",
            cmd.get_program(),
            arch.backend().compiler_package()
        )
    });
    if !result.status.success() {
        return Err(format!(
            "{} failed on {}:\n{}",
            cmd.get_program().to_string_lossy(),
            src.display(),
            String::from_utf8_lossy(&result.stderr)
        ));
    }
    if old_mcount {
        recordmcount(out)?;
    }
    check_machine(arch, out)
}

/// The compiler must have produced an object of the architecture's machine (guards against a host
/// `gcc` that is not x86_64).
fn check_machine(arch: Arch, obj: &Path) -> Result<(), String> {
    let bytes = std::fs::read(obj).map_err(|e| format!("reading {}: {e}", obj.display()))?;
    let file = ElfFile64::<Endianness>::parse(&*bytes)
        .map_err(|e| format!("{}: not a 64-bit ELF: {e}", obj.display()))?;
    let machine = file.elf_header().e_machine(file.endian()).0;
    if machine != arch.backend().elf_machine() {
        return Err(format!(
            "{}: compiler produced e_machine {machine}, not {arch}'s",
            obj.display()
        ));
    }
    Ok(())
}

/// Runs the klpx binary.
fn klpx<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args(args)
        .output()
        .expect("running klpx")
}

/// The files of one case on one architecture.
struct Pair {
    orig: PathBuf,
    patched: PathBuf,
    out: PathBuf,
}

/// Compiles both builds of a case.
fn build_pair(arch: Arch, case: &Case, dir: &Path) -> Result<Pair, String> {
    let pair = Pair {
        orig: dir.join("orig.o"),
        patched: dir.join("patched.o"),
        out: dir.join("out.o"),
    };
    let unit = case.name.replace('-', "_");
    compile(
        arch,
        &case.dir().join("orig.c"),
        &unit,
        &case.dir(),
        &pair.orig,
        case.recordmcount,
    )?;
    compile(
        arch,
        &case.dir().join("patched.c"),
        &unit,
        &case.dir(),
        &pair.patched,
        case.recordmcount,
    )?;
    Ok(pair)
}

// ---------------------------------------------------------------------------------------------------
// Checking a report
// ---------------------------------------------------------------------------------------------------

/// A JSON array of strings as a set.
fn json_set(v: &Json) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

fn set(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

/// Whether `name` matches `pattern` (a trailing `*` matches any suffix).
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// Symbol names of an object file: all of them, and the defined functions.
struct SymbolNames {
    all: BTreeSet<String>,
    functions: BTreeSet<String>,
}

fn symbol_names(path: &Path) -> Result<SymbolNames, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let file = object::File::parse(&*bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut names = SymbolNames {
        all: BTreeSet::new(),
        functions: BTreeSet::new(),
    };
    for s in file.symbols() {
        let Ok(name) = s.name() else { continue };
        if s.kind() == SymbolKind::Text && s.is_definition() {
            names.functions.insert(name.to_string());
        }
        names.all.insert(name.to_string());
    }
    Ok(names)
}

/// Compares the verdict and the exit status.
fn check_verdict(e: &Expect, report: &Json, status: Option<i32>, bad: &mut Vec<String>) {
    let want = e.verdict.exit_status();
    if report["verdict"] != e.verdict.as_str() || status != Some(want) {
        bad.push(format!(
            "verdict {} with exit status {status:?}, expected {} with {want}; refusals: {}",
            report["verdict"],
            e.verdict.as_str(),
            report["refusals"]
        ));
    }
}

/// Compares the symbol lists of the report with the expected sets.
fn check_lists(e: &Expect, report: &Json, bad: &mut Vec<String>) {
    let lists = [
        ("changed", "changed_functions", &e.changed),
        ("new", "new_functions", &e.new),
        ("copied", "copied_functions", &e.copied),
        ("changed_data", "changed_data", &e.changed_data),
        ("new_data", "new_data", &e.new_data),
    ];
    for (field, key, want) in lists {
        if e.unchecked.iter().any(|u| u == field) {
            continue;
        }
        let got = json_set(&report[key]);
        if got != set(want) {
            bad.push(format!("{key} {got:?}, expected {:?}", set(want)));
        }
    }
}

/// The refused symbols must be exactly the expected ones, each with the expected words in its reason.
fn check_refusals(e: &Expect, report: &Json, bad: &mut Vec<String>) {
    let got: Vec<(String, String)> = report["refusals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (field("symbol"), field("reason"))
        })
        .collect();
    let got_symbols: BTreeSet<String> = got.iter().map(|(s, _)| s.clone()).collect();
    let want_symbols: BTreeSet<String> = e.refused.iter().map(|r| r.symbol.clone()).collect();
    if got_symbols != want_symbols {
        bad.push(format!(
            "refused symbols {got_symbols:?}, expected {want_symbols:?}; refusals: {got:?}"
        ));
    }
    for want in &e.refused {
        let found = got
            .iter()
            .any(|(s, r)| *s == want.symbol && r.contains(&want.reason));
        if !found && got_symbols.contains(&want.symbol) {
            bad.push(format!(
                "no refusal of {} says \"{}\"; refusals: {got:?}",
                want.symbol, want.reason
            ));
        }
    }
}

/// Each listed special section must keep exactly the expected number of entries.
fn check_special_entries(e: &Expect, report: &Json, bad: &mut Vec<String>) {
    for (section, want) in &e.special_entries {
        let got = report["special_entries"][section].as_u64().unwrap_or(0);
        if got != *want {
            bad.push(format!(
                "special_entries.{section} = {got}, expected {want} (all: {})",
                report["special_entries"]
            ));
        }
    }
}

/// Livepatch relocations name the case's object and a symbol of orig.o; for a patchable change their
/// symbols are exactly the expected ones.
fn check_klp(case: &Case, e: &Expect, report: &Json, orig: &SymbolNames, bad: &mut Vec<String>) {
    let relocs = report["klp_relocations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut symbols = BTreeSet::new();
    for r in &relocs {
        let object = r["object"].as_str().unwrap_or_default();
        let symbol = r["symbol"].as_str().unwrap_or_default();
        if object != case.object_name() {
            bad.push(format!(
                "livepatch relocation for object {object:?}, expected {}: {r}",
                case.object_name()
            ));
        }
        if symbol.is_empty() || !orig.all.contains(symbol) {
            bad.push(format!(
                "livepatch relocation names {symbol:?}, which is not a symbol of orig.o: {r}"
            ));
        }
        symbols.insert(symbol.to_string());
    }
    if e.verdict == Verdict::Patchable && symbols != set(&e.klp) {
        bad.push(format!(
            "livepatch relocations name {symbols:?}, expected {:?}",
            set(&e.klp)
        ));
    }
}

/// Every patched function's old name is a function of orig.o, and the list matches changed_functions.
fn check_patched_functions(report: &Json, orig: &SymbolNames, bad: &mut Vec<String>) {
    let list = report["patched_functions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: BTreeSet<String> = list
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    if names != json_set(&report["changed_functions"]) {
        bad.push(format!(
            "patched_functions {names:?} differ from changed_functions {}",
            report["changed_functions"]
        ));
    }
    for p in &list {
        let old = p["old_name"].as_str().unwrap_or_default();
        if !orig.functions.contains(old) {
            bad.push(format!(
                "patched function {p} has old_name {old:?}, not a function of orig.o"
            ));
        }
    }
}

/// stderr carries one line per refusal, naming its symbol, and nothing else.
fn check_stderr(report: &Json, stderr: &str, bad: &mut Vec<String>) {
    let refusals = report["refusals"].as_array().cloned().unwrap_or_default();
    let lines: Vec<&str> = stderr.lines().collect();
    if lines.len() != refusals.len() {
        bad.push(format!(
            "{} refusals but {} lines on stderr: {stderr:?}",
            refusals.len(),
            lines.len()
        ));
    }
    for r in &refusals {
        let symbol = r["symbol"].as_str().unwrap_or_default();
        if !lines.iter().any(|l| l.contains(symbol)) {
            bad.push(format!("no stderr line names refused {symbol:?}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Checking OUT.o
// ---------------------------------------------------------------------------------------------------

/// What OUT.o defines and needs.
struct OutSymbols {
    functions: BTreeSet<String>,
    defined: BTreeSet<String>,
    undefined: BTreeSet<String>,
    /// Undefined symbols without a name (besides the null symbol).
    nameless_undefined: usize,
}

fn out_symbols(file: &ElfFile64<Endianness>) -> OutSymbols {
    let mut s = OutSymbols {
        functions: BTreeSet::new(),
        defined: BTreeSet::new(),
        undefined: BTreeSet::new(),
        nameless_undefined: 0,
    };
    for sym in file.symbols() {
        let name = sym.name().unwrap_or_default().to_string();
        if sym.is_undefined() {
            if name.is_empty() {
                s.nameless_undefined += 1;
            } else {
                s.undefined.insert(name);
            }
        } else if sym.is_definition() {
            if sym.kind() == SymbolKind::Text {
                s.functions.insert(name.clone());
            }
            s.defined.insert(name);
        }
    }
    s
}

/// Whether `name` is one of `allowed` or a compiler-split child of one (`foo.cold`, `foo.part.3`).
fn allowed_function(name: &str, allowed: &BTreeSet<String>) -> bool {
    allowed.contains(name)
        || [".cold", ".part."]
            .iter()
            .filter_map(|m| name.find(m))
            .any(|i| allowed.contains(&name[..i]))
}

/// The generic and case-specific checks on OUT.o.
fn check_output(arch: Arch, e: &Expect, bytes: &[u8], bad: &mut Vec<String>) {
    let file = match ElfFile64::<Endianness>::parse(bytes) {
        Ok(f) => f,
        Err(err) => return bad.push(format!("OUT.o does not parse as 64-bit ELF: {err}")),
    };
    check_output_header(arch, &file, bad);
    let syms = out_symbols(&file);
    let wanted: BTreeSet<String> = e
        .changed
        .iter()
        .chain(&e.new)
        .chain(&e.copied)
        .cloned()
        .collect();
    for f in &wanted {
        if !syms.functions.contains(f) {
            bad.push(format!("OUT.o does not define function {f}"));
        }
    }
    for f in &syms.functions {
        if !allowed_function(f, &wanted) {
            bad.push(format!(
                "OUT.o defines function {f}, which is neither changed, new nor copied"
            ));
        }
    }
    for d in &e.new_data {
        if !syms.defined.contains(d) {
            bad.push(format!("OUT.o does not define new data {d}"));
        }
    }
    if syms.nameless_undefined > 0 {
        bad.push(format!(
            "OUT.o has {} undefined symbol(s) without a name",
            syms.nameless_undefined
        ));
    }
    check_output_expect(&e.output, &file, &syms, bytes, bad);
}

/// Relocatable, and of the architecture's machine and byte order.
fn check_output_header(arch: Arch, file: &ElfFile64<Endianness>, bad: &mut Vec<String>) {
    let b = arch.backend();
    if file.kind() != ObjectKind::Relocatable {
        bad.push(format!("OUT.o is {:?}, not relocatable", file.kind()));
    }
    let machine = file.elf_header().e_machine(file.endian()).0;
    if machine != b.elf_machine() {
        bad.push(format!(
            "OUT.o has e_machine {machine}, expected {}",
            b.elf_machine()
        ));
    }
    if file.is_little_endian() != (b.endian() == Endian::Little) {
        bad.push(format!("OUT.o is not {:?}-endian", b.endian()));
    }
}

/// The `output:` checks of a case.
fn check_output_expect(
    o: &OutputExpect,
    file: &ElfFile64<Endianness>,
    syms: &OutSymbols,
    bytes: &[u8],
    bad: &mut Vec<String>,
) {
    let any = |set: &BTreeSet<String>, p: &str| set.iter().any(|n| matches(p, n));
    for p in &o.defined {
        if !any(&syms.defined, p) {
            bad.push(format!("OUT.o does not define {p}"));
        }
    }
    for p in &o.undefined {
        if !any(&syms.undefined, p) {
            bad.push(format!("OUT.o has no undefined symbol {p}"));
        }
    }
    for p in &o.absent {
        let found: Vec<&String> = syms.defined.iter().filter(|n| matches(p, n)).collect();
        if !found.is_empty() {
            bad.push(format!("OUT.o defines {found:?}, which must not be there"));
        }
    }
    for s in &o.strings {
        if !bytes.windows(s.len()).any(|w| w == s.as_bytes()) {
            bad.push(format!("OUT.o does not contain the string {s:?}"));
        }
    }
    for (name, want) in &o.section_sizes {
        match file.section_by_name(name) {
            Some(sec) if sec.size() == *want => {}
            Some(sec) => bad.push(format!(
                "OUT.o section {name} has {} bytes, expected {want}",
                sec.size()
            )),
            None => bad.push(format!("OUT.o has no section {name}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Running the corpus
// ---------------------------------------------------------------------------------------------------

/// Runs one case on one architecture; returns every mismatch found.
fn check_case(arch: Arch, case: &Case, dir: &Path) -> Vec<String> {
    let e = case.expect_for(arch);
    let pair = match build_pair(arch, case, dir) {
        Ok(p) => p,
        Err(err) => return vec![err],
    };
    let mut args = vec!["diff".to_string(), "--json".to_string(), "-o".to_string()];
    args.push(pair.out.display().to_string());
    args.push(pair.orig.display().to_string());
    args.push(pair.patched.display().to_string());
    args.extend(case.klpx_args());
    let run = klpx(&args);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    let report: Json = match serde_json::from_slice(&run.stdout) {
        Ok(v) => v,
        Err(err) => {
            return vec![format!(
                "no JSON report ({err}); exit status {:?}, stderr: {stderr}",
                run.status.code()
            )];
        }
    };
    let orig = match symbol_names(&pair.orig) {
        Ok(s) => s,
        Err(err) => return vec![err],
    };
    let mut bad = Vec::new();
    check_verdict(&e, &report, run.status.code(), &mut bad);
    check_lists(&e, &report, &mut bad);
    check_refusals(&e, &report, &mut bad);
    check_special_entries(&e, &report, &mut bad);
    check_klp(case, &e, &report, &orig, &mut bad);
    check_patched_functions(&report, &orig, &mut bad);
    check_stderr(&report, &stderr, &mut bad);
    check_written_output(arch, &e, &pair.out, &report, &mut bad);
    bad
}

/// OUT.o exists exactly for patchable changes (and the report says where), and passes the checks.
fn check_written_output(arch: Arch, e: &Expect, out: &Path, report: &Json, bad: &mut Vec<String>) {
    let written = out.exists();
    if e.verdict != Verdict::Patchable {
        if written {
            bad.push(format!(
                "OUT.o was written for a {} verdict",
                e.verdict.as_str()
            ));
        }
        return;
    }
    if report["output"].as_str() != Some(&*out.display().to_string()) {
        bad.push(format!(
            "report output is {}, expected {}",
            report["output"],
            out.display()
        ));
    }
    match std::fs::read(out) {
        Ok(bytes) => check_output(arch, e, &bytes, bad),
        Err(err) => bad.push(format!("no OUT.o: {err}")),
    }
}

/// How a case fared.
enum Outcome {
    Pass,
    Fail(Vec<String>),
    /// Failed as a known klpx bug predicts.
    KnownBug(String, Vec<String>),
    /// Marked as a known bug but passes: the mark is stale.
    Stale(String),
}

impl Outcome {
    fn of(problems: Vec<String>, known_bug: Option<String>) -> Outcome {
        match (problems.is_empty(), known_bug) {
            (true, None) => Outcome::Pass,
            (true, Some(note)) => Outcome::Stale(note),
            (false, None) => Outcome::Fail(problems),
            (false, Some(note)) => Outcome::KnownBug(note, problems),
        }
    }

    fn passed(&self) -> bool {
        matches!(self, Outcome::Pass)
    }

    fn label(&self) -> &'static str {
        match self {
            Outcome::Pass => "ok",
            Outcome::Fail(_) => "FAILED",
            Outcome::KnownBug(..) => "FAILED (known klpx bug)",
            Outcome::Stale(_) => "FAILED (known_bug mark is stale: the case passes)",
        }
    }

    /// The failure message lines, indented under the case.
    fn details(&self) -> Vec<String> {
        match self {
            Outcome::Pass => Vec::new(),
            Outcome::Fail(p) => p.iter().map(|l| format!("    {l}")).collect(),
            Outcome::KnownBug(note, p) => std::iter::once(format!("    known bug: {note}"))
                .chain(p.iter().map(|l| format!("    {l}")))
                .collect(),
            Outcome::Stale(note) => vec![format!(
                "    remove the known_bug mark from cases.yaml: {note}"
            )],
        }
    }
}

/// Runs every case that applies to `arch`, prints one line per case, and fails listing every case
/// that did not pass.
fn run_arch(arch: Arch) {
    let started = Instant::now();
    let cases = load_cases();
    let scratch = Scratch::new(arch.name());
    let mut table = Vec::new();
    let mut failures = Vec::new();
    for case in cases.iter().filter(|c| c.applies_to(arch)) {
        let t = Instant::now();
        let problems = check_case(arch, case, &scratch.path().join(&case.name));
        let outcome = Outcome::of(problems, case.expect_for(arch).known_bug);
        let line = format!(
            "{arch} {:<28} {} ({:.2} s)",
            case.name,
            outcome.label(),
            t.elapsed().as_secs_f64()
        );
        if !outcome.passed() {
            failures.push(line.clone());
            failures.extend(outcome.details());
        }
        table.push(line);
    }
    let ran = table.len();
    let failed = failures.iter().filter(|l| !l.starts_with(' ')).count();
    let summary = format!(
        "{arch}: {} of {ran} fixture cases passed in {:.1} s",
        ran - failed,
        started.elapsed().as_secs_f64()
    );
    eprintln!("{}\n{summary}", table.join("\n"));
    assert!(ran > 0, "no fixture case applies to {arch}");
    assert!(
        failures.is_empty(),
        "{summary}; objects kept in {}\n{}",
        scratch.path().display(),
        failures.join("\n")
    );
    scratch.remove();
}

#[test]
fn fixtures_x86_64() {
    run_arch(Arch::X86_64);
}

#[test]
fn fixtures_arm64() {
    run_arch(Arch::Arm64);
}

#[test]
fn fixtures_ppc64le() {
    run_arch(Arch::Ppc64le);
}

#[test]
fn fixtures_s390() {
    run_arch(Arch::S390x);
}

// ---------------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------------

/// A small valid object for `arch`, compiled into `dir`.
fn valid_object(arch: Arch, dir: &Path) -> PathBuf {
    let src = dir.join("valid.c");
    std::fs::write(&src, "int answer(int x)\n{\n\treturn x + 42;\n}\n").expect("writing valid.c");
    let out = dir.join(format!("valid-{}.o", arch.name()));
    compile(arch, &src, "valid", dir, &out, false).unwrap_or_else(|e| panic!("{e}"));
    out
}

/// Runs `klpx diff ORIG PATCHED -o OUT` and checks the bad-input contract: exit status 2, no panic,
/// exactly one line on stderr and naming every file in `blamed`, no OUT written.
fn expect_bad_input(dir: &Path, orig: &Path, patched: &Path, blamed: &[&Path]) {
    let out = dir.join("never-written.o");
    let run = diff_into(orig, patched, &out);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let what = format!("klpx diff {} {}", orig.display(), patched.display());
    assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
    assert_eq!(
        run.status.code(),
        Some(2),
        "{what}: exit status; stderr: {stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "{what}: stderr must be one line: {stderr:?}"
    );
    for file in blamed {
        let name = file.display().to_string();
        assert!(
            stderr.contains(&name),
            "{what}: stderr does not name {name}: {stderr:?}"
        );
    }
    assert!(!out.exists(), "{what} wrote {}", out.display());
}

/// `klpx diff ORIG PATCHED -o OUT`.
fn diff_into(orig: &Path, patched: &Path, out: &Path) -> Output {
    klpx([
        "diff".as_ref(),
        orig.as_os_str(),
        patched.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ])
}

/// Checks a bad file both as the original and as the patched object, next to a valid x86_64 one.
fn expect_rejected(label: &str, make_bad: impl FnOnce(&Path, &[u8]) -> PathBuf) {
    let scratch = Scratch::new(label);
    let dir = scratch.path();
    let good = valid_object(Arch::X86_64, dir);
    let good_bytes = std::fs::read(&good).expect("reading the valid object");
    let bad = make_bad(dir, &good_bytes);
    expect_bad_input(dir, &bad, &good, &[&bad]);
    expect_bad_input(dir, &good, &bad, &[&bad]);
    scratch.remove();
}

/// Writes `bytes` to `dir/name` and returns the path.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

#[test]
fn bad_input_not_elf() {
    expect_rejected("not-elf", |dir, _| {
        write_file(dir, "notes.o", b"this is a text file, not an object\n")
    });
}

#[test]
fn bad_input_truncated_elf() {
    expect_rejected("truncated", |dir, good| {
        write_file(dir, "truncated.o", &good[..100])
    });
}

#[test]
fn bad_input_corrupt_section_header_offset() {
    expect_rejected("bad-shoff", |dir, good| {
        let mut bytes = good.to_vec();
        // e_shoff, at offset 0x28 of a 64-bit little-endian header, now points far past the end.
        bytes[0x28..0x30].copy_from_slice(&0x7fff_ffff_0000_u64.to_le_bytes());
        write_file(dir, "bad-shoff.o", &bytes)
    });
}

#[test]
fn bad_input_32bit_elf() {
    expect_rejected("elf32", |dir, _| {
        let mut obj = object::write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::I386,
            object::Endianness::Little,
        );
        let text = obj.section_id(object::write::StandardSection::Text);
        obj.append_section_data(text, &[0x31, 0xc0, 0xc3], 1);
        let bytes = obj.write().expect("writing a 32-bit ELF object");
        write_file(dir, "elf32.o", &bytes)
    });
}

#[test]
fn bad_input_mismatched_architectures() {
    let scratch = Scratch::new("mismatch");
    let dir = scratch.path();
    let x86 = valid_object(Arch::X86_64, dir);
    let arm = valid_object(Arch::Arm64, dir);
    expect_bad_input(dir, &x86, &arm, &[&x86, &arm]);
    expect_bad_input(dir, &arm, &x86, &[&x86, &arm]);
    scratch.remove();
}

#[test]
fn bad_input_missing_file() {
    expect_rejected("missing", |dir, _| dir.join("does-not-exist.o"));
}

#[test]
fn bad_input_no_section_headers() {
    // e_shoff (0x28) or e_shnum (0x3c) zeroed: an object with no sections, once reported as "no
    // functional change".
    expect_rejected("shoff-zero", |dir, good| {
        let mut bytes = good.to_vec();
        bytes[0x28..0x30].fill(0);
        write_file(dir, "shoff-zero.o", &bytes)
    });
    expect_rejected("shnum-zero", |dir, good| {
        let mut bytes = good.to_vec();
        bytes[0x3c..0x3e].fill(0);
        write_file(dir, "shnum-zero.o", &bytes)
    });
}

/// The file offsets of the `r_info` and `r_addend` fields of every RELA entry in `bytes` (a 64-bit
/// little-endian object) whose symbol is of `kind`, found with the object crate.
fn rela_fields(bytes: &[u8], kind: SymbolKind) -> Vec<(usize, usize)> {
    use object::read::elf::SectionHeader;
    let file = ElfFile64::<Endianness>::parse(bytes).expect("a valid object");
    let e = file.endian();
    let symbols: Vec<SymbolKind> = file.symbols().map(|s| s.kind()).collect();
    let mut out = Vec::new();
    for sec in file.elf_section_table().iter() {
        if sec.sh_type(e) != object::elf::SHT_RELA {
            continue;
        }
        let start = sec.sh_offset(e) as usize;
        let relas: &[object::elf::Rela64<Endianness>] = sec.data_as_array(e, bytes).unwrap();
        for (i, r) in relas.iter().enumerate() {
            // The object crate's symbol list skips the null symbol 0.
            let sym = r.r_sym(e, false) as usize;
            if sym > 0 && symbols.get(sym - 1) == Some(&kind) {
                let at = start + i * 24;
                out.push((at + 8, at + 16));
            }
        }
    }
    out
}

/// A valid x86_64 object whose code reads a string literal (a relocation against a section symbol).
fn object_with_string(dir: &Path) -> PathBuf {
    let src = dir.join("greeting.c");
    std::fs::write(
        &src,
        "const char *greeting(int x)\n{\n\treturn x ? \"hello, livepatch\" : \"bye\";\n}\n",
    )
    .unwrap();
    let out = dir.join("greeting.o");
    compile(Arch::X86_64, &src, "greeting", dir, &out, false).unwrap_or_else(|e| panic!("{e}"));
    out
}

#[test]
fn bad_input_unknown_relocation_type() {
    // Once reported as a livepatch relocation "relocation type 200", or a missing __fentry__ call.
    expect_rejected("unknown-reloc", |dir, good| {
        let (info, _) = rela_fields(good, SymbolKind::Unknown)
            .into_iter()
            .chain(rela_fields(good, SymbolKind::Text))
            .next()
            .expect("the __fentry__ relocation");
        let mut bytes = good.to_vec();
        bytes[info..info + 4].copy_from_slice(&200u32.to_le_bytes());
        write_file(dir, "unknown-reloc.o", &bytes)
    });
}

#[test]
fn bad_input_relocation_outside_its_section() {
    // A flipped addend on a `.toc` reference of a changed ppc64le function once ended in exit 4
    // ("internal") with -o: the `.toc` is carved into entries (here `counter`'s, not `other`'s, is
    // carried), and a place far outside it is none of them.
    let scratch = Scratch::new("far-addend");
    let dir = scratch.path();
    let unit = |body: &str, out: &str| {
        let src = dir.join(format!("{out}.c"));
        std::fs::write(
            &src,
            format!(
                "static int counter, other;\n\nint bump(int x)\n{{\n\tcounter += {body};\n\treturn counter;\n}}\n\n\
                 int keep(int x)\n{{\n\tother += x;\n\treturn other;\n}}\n"
            ),
        )
        .unwrap();
        let obj = dir.join(format!("{out}.o"));
        compile(Arch::Ppc64le, &src, "bump", dir, &obj, false).unwrap_or_else(|e| panic!("{e}"));
        obj
    };
    let orig = unit("x", "orig");
    let patched = unit("x + 1", "patched");
    let bytes = std::fs::read(&patched).unwrap();
    let fields = rela_fields(&bytes, SymbolKind::Section);
    assert!(
        !fields.is_empty(),
        "-mcmodel=large reaches counter through .toc"
    );
    let mut outside = 0;
    for (n, (_, addend)) in fields.into_iter().enumerate() {
        let mut bad = bytes.clone();
        bad[addend..addend + 8].copy_from_slice(&(-0x7fff_0000_i64).to_le_bytes());
        let bad = write_file(dir, &format!("far-{n}.o"), &bad);
        let run = diff_into(&orig, &bad, &dir.join("out.o"));
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            matches!(run.status.code(), Some(0 | 2 | 3)),
            "far-{n}.o: a bad addend is the input's fault, a refusal or carried as is, never internal: {stderr}"
        );
        if run.status.code() == Some(2) {
            assert!(stderr.contains("outside that section"), "{stderr}");
            outside += 1;
        }
    }
    assert!(
        outside > 0,
        "the code's own .toc references are refused as bad input"
    );
    scratch.remove();
}

#[test]
fn bad_input_objects_of_different_source_files() {
    // Two units of one architecture: once diffed as a "patchable" change.
    let scratch = Scratch::new("two-units");
    let dir = scratch.path();
    let valid = valid_object(Arch::X86_64, dir);
    let greeting = object_with_string(dir);
    expect_bad_input(dir, &valid, &greeting, &[&valid, &greeting]);
    scratch.remove();
}

#[test]
fn bad_input_a_device_or_a_directory() {
    // /dev/zero was once read until memory ran out.
    let scratch = Scratch::new("device");
    let dir = scratch.path();
    let good = valid_object(Arch::X86_64, dir);
    for bad in [Path::new("/dev/zero"), dir] {
        expect_bad_input(dir, bad, &good, &[bad]);
    }
    scratch.remove();
}

#[test]
fn an_output_that_is_an_input_is_refused_and_the_input_kept() {
    let scratch = Scratch::new("output-is-input");
    let dir = scratch.path();
    let src = dir.join("v.c");
    std::fs::write(&src, "int answer(int x)\n{\n\treturn x + 42;\n}\n").unwrap();
    let orig = dir.join("orig.o");
    compile(Arch::X86_64, &src, "valid", dir, &orig, false).unwrap();
    std::fs::write(&src, "int answer(int x)\n{\n\treturn x + 43;\n}\n").unwrap();
    let patched = dir.join("patched.o");
    compile(Arch::X86_64, &src, "valid", dir, &patched, false).unwrap();
    let soft = dir.join("soft.o");
    std::os::unix::fs::symlink(&orig, &soft).unwrap();
    let hard = dir.join("hard.o");
    std::fs::hard_link(&patched, &hard).unwrap();
    let before = (
        std::fs::read(&orig).unwrap(),
        std::fs::read(&patched).unwrap(),
    );
    for out in [&orig, &patched, &soft, &hard] {
        let run = diff_into(&orig, &patched, out);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "-o {}: {stderr}", out.display());
        assert!(stderr.contains("is the input"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let after = (
        std::fs::read(&orig).unwrap(),
        std::fs::read(&patched).unwrap(),
    );
    assert!(before == after, "an input was written over");
    // An output in a missing directory is the user's to fix (once exit 4).
    let missing = dir.join("no-such-dir/out.o");
    let run = diff_into(&orig, &patched, &missing);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no-such-dir"), "{stderr}");
    // The same diff into a fresh file works, and the patched function is what changed.
    let fresh = dir.join("out.o");
    let run = diff_into(&orig, &patched, &fresh);
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("changed function  answer"));
    assert!(fresh.is_file());
    scratch.remove();
}

#[test]
fn object_names_that_are_not_module_names_are_refused() {
    let scratch = Scratch::new("object-name");
    let dir = scratch.path();
    let good = valid_object(Arch::X86_64, dir);
    for name in ["../../etc/evil", "a b", "näme", "", &"m".repeat(56)] {
        let run = klpx([
            "diff".as_ref(),
            good.as_os_str(),
            good.as_os_str(),
            "--object".as_ref(),
            name.as_ref(),
        ]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "--object {name:?}: {stderr}");
        assert!(stderr.contains("not a module name"), "{stderr}");
    }
    scratch.remove();
}
