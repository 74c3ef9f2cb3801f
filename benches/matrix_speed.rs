//! `cargo bench --bench matrix_speed`: the livepatch stage of `klpx matrix` for the four
//! architectures of cross-dev.yaml on built trees, all together against one after another
//! (`--sequential`), median of 3 runs per patch. Not a test: it prints a table.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use klpx_arch::Arch;

const RUNS: usize = 3;

fn run(patch: &std::path::Path, sequential: bool, out: &std::path::Path) -> Duration {
    let repo = common::kernel::repo();
    let mut args = vec![
        "matrix".to_string(),
        "-f".into(),
        repo.join("cross-dev.yaml").display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--json".into(),
    ];
    if sequential {
        args.push("--sequential".into());
    }
    args.push(patch.display().to_string());
    let start = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args(&args)
        .output()
        .unwrap();
    let took = start.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    took
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64()
}

fn main() {
    for arch in Arch::ALL {
        common::kernel::built_tree(arch).expect("built tree");
    }
    let repo = common::kernel::repo();
    let out = std::env::temp_dir().join(format!("klpx-bench-matrix-{}", std::process::id()));
    println!(
        "{:<22} {:>12} {:>12} {:>6}",
        "patch", "parallel s", "sequential s", "ratio"
    );
    for p in [
        "examples/proc-cmdline.patch",
        "tests/boot/new-global-function.patch",
        "tests/boot/header-edit.patch",
    ] {
        let patch = repo.join(p);
        let par = median((0..RUNS).map(|_| run(&patch, false, &out)).collect());
        let seq = median((0..RUNS).map(|_| run(&patch, true, &out)).collect());
        let name = patch.file_stem().unwrap().to_string_lossy().into_owned();
        println!("{name:<22} {par:>12.2} {seq:>12.2} {:>6.2}", par / seq);
    }
    let _ = std::fs::remove_dir_all(&out);
}
