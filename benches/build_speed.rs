//! `cargo bench --bench build_speed`: wall time of `klpx build` from patch to `.ko` on the built tiny
//! x86_64 tree, for the module-producing patches of tests/boot/cases.yaml, beside the floor — the
//! affected objects compiled twice with their recorded kbuild commands (as parallel as klpx's `-j`)
//! plus `make M=` of a trivial module — and klpx's own peak memory. The first build of each patch
//! starts with the tree's object cache empty; the next ones ("again") find the original objects
//! there and compile only the patched side, and link only when the module's inputs changed. The
//! "edited" builds change one string literal of the patch's new code each time (`"klpx` becomes
//! `"Klpx`, `"KLpx`, ...), as a patch author iterating on a fix does: the patched side is compiled
//! and the module linked every time. Not a test: it prints a table.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use klpx::kbuild::compile::recompile;
use klpx::livepatch::journal;
use klpx::livepatch::lock::SourceLock;
use klpx::livepatch::pipeline::plan_objects;
use klpx::patch::source::{SourcePatch, plan_edits};
use klpx_arch::Arch;
use rayon::prelude::*;

const JOBS: usize = 2;
const RUNS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The floor for one patch: recorded compiles of the affected objects before and after, in parallel.
fn floor_compiles(src: &Path, obj: &Path, patch: &Path, scratch: &Path) -> (usize, Duration) {
    let sp = SourcePatch::load(patch).unwrap();
    let edits = plan_edits(
        std::slice::from_ref(&sp),
        src,
        klpx::patch::source::DEFAULT_FUZZ,
    )
    .unwrap();
    let objects = plan_objects(obj, &edits).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(JOBS)
        .build()
        .unwrap();
    let compile = |tag: &str| {
        pool.install(|| {
            objects.par_iter().enumerate().for_each(|(i, o)| {
                recompile(obj, &o.cmd, &scratch.join(format!("{tag}-{i}.o")), &[]).unwrap();
            })
        })
    };
    // The shared tree is patched as klpx patches it: under its lock and journal, always restored.
    let _lock = SourceLock::try_take(src).unwrap();
    let start = Instant::now();
    compile("orig");
    let patched = journal::apply(src, &edits).unwrap();
    compile("patched");
    patched.undo().unwrap();
    (objects.len(), start.elapsed())
}

/// `make M=` of a one-function module: the link floor.
fn floor_trivial_module(obj: &Path, scratch: &Path) -> Duration {
    let dir = scratch.join("trivial");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("trivial.c"),
        "#include <linux/module.h>\nstatic int __init t_init(void) { return 0; }\n\
         module_init(t_init);\nMODULE_LICENSE(\"GPL\");\n",
    )
    .unwrap();
    std::fs::write(dir.join("Kbuild"), "obj-m := trivial.o\n").unwrap();
    let start = Instant::now();
    let st = Command::new("make")
        .args([
            "-C",
            obj.to_str().unwrap(),
            &format!("M={}", dir.display()),
            "ARCH=x86",
            "-j2",
            "modules",
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    start.elapsed()
}

fn main() {
    let tree = common::kernel::built_tree(Arch::X86_64).expect("x86_64 tree");
    let scratch = std::env::temp_dir().join(format!("klpx-bench-build-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let cases: Vec<serde_json::Value> = serde_norway::from_str(
        &std::fs::read_to_string(common::kernel::repo().join("tests/boot/cases.yaml")).unwrap(),
    )
    .unwrap();
    println!(
        "{:<22} {:>4} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} {:>6} {:>9}",
        "patch",
        "objs",
        "first s",
        "again s",
        "edited s",
        "floor s",
        "first",
        "again",
        "edited",
        "peak MiB"
    );
    let objects = klpx::kbuild::objcache::dir_of(&tree.out);
    let link = median(
        (0..RUNS)
            .map(|_| floor_trivial_module(&tree.out, &scratch))
            .collect(),
    );
    // The tiny x86_64 tree's module cases (not those only a distribution kernel builds).
    let runs_here = |c: &&serde_json::Value| {
        c["outcome"] == "module"
            && c["distro_only"] != true
            && c["arches"]
                .as_array()
                .is_none_or(|a| a.iter().any(|x| x == "x86_64"))
    };
    for c in cases.iter().filter(runs_here) {
        let name = c["name"].as_str().unwrap();
        let patch = common::kernel::repo()
            .join("tests/boot")
            .join(c["patch"].as_str().unwrap());
        let mut klpx_times = Vec::new();
        let mut peak = 0u64;
        let _ = std::fs::remove_dir_all(&objects);
        let build = |patch: &Path| {
            let start = Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_klpx"))
                .args([
                    "build",
                    "-s",
                    tree.src.to_str().unwrap(),
                    "-O",
                    tree.out.to_str().unwrap(),
                    "-o",
                    scratch.to_str().unwrap(),
                    "-j",
                    "2",
                    "--json",
                    patch.to_str().unwrap(),
                ])
                .output()
                .unwrap();
            let took = start.elapsed();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            (took, report["peak_rss_kib"].as_u64().unwrap_or(0))
        };
        for _ in 0..RUNS {
            let (took, rss) = build(&patch);
            klpx_times.push(took);
            peak = peak.max(rss);
        }
        let text = std::fs::read_to_string(&patch).unwrap();
        let edited_times: Vec<Duration> = ["Klpx", "KLpx", "KLPx"]
            .iter()
            .filter_map(|new| {
                let edited = edit_string(&text, new)?;
                let path = scratch.join(format!("edited-{name}.patch"));
                std::fs::write(&path, edited).unwrap();
                Some(build(&path).0)
            })
            .collect();
        let mut floors = Vec::new();
        let mut objs = 0;
        for _ in 0..RUNS {
            let (n, t) = floor_compiles(&tree.src, &tree.out, &patch, &scratch);
            objs = n;
            floors.push(t);
        }
        let first = klpx_times[0].as_secs_f64();
        let again = median(klpx_times[1..].to_vec()).as_secs_f64();
        let f = (median(floors) + link).as_secs_f64();
        let (edited, edited_ratio) = if edited_times.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            let e = median(edited_times).as_secs_f64();
            (format!("{e:.2}"), format!("{:.2}", e / f))
        };
        println!(
            "{name:<22} {objs:>4} {first:>9.2} {again:>9.2} {edited:>9} {f:>9.2} {:>6.2} {:>6.2} {edited_ratio:>6} {:>9.1}",
            first / f,
            again / f,
            peak as f64 / 1024.0
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
}

/// The patch with the first `"klpx` of an added line changed to `"<new>`, or `None` when no
/// added line has one.
fn edit_string(patch: &str, new: &str) -> Option<String> {
    let mut done = false;
    let lines: Vec<String> = patch
        .lines()
        .map(|l| {
            if !done && l.starts_with('+') && !l.starts_with("+++") && l.contains("\"klpx") {
                done = true;
                l.replacen("\"klpx", &format!("\"{new}"), 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    done.then(|| lines.join("\n") + "\n")
}
