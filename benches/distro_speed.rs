//! `cargo bench --bench distro_speed`: `klpx build --distro debian` on Debian's own amd64 kernel.
//! Cold: the packages are downloaded and the source unpacked (a first run does that), but the
//! prepared tree is removed, so the run prepares it, compiles, diffs, checks identity and links.
//! Warm: a second one-file patch on the same release. Also klpx's own peak memory. Not a test: it
//! prints a table. The estimate for kpatch-build (two full builds of Debian's config) is not run here:
//! see the README for how it was extrapolated.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn klpx() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_klpx"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs one build; returns (seconds, peak RSS in MiB, kernel release).
fn build(patch: &Path, out: &Path) -> (f64, f64, String) {
    let start = Instant::now();
    let o = Command::new(klpx())
        .args(["build", "--distro", "debian", "--json", "-o"])
        .arg(out)
        .arg(patch)
        .output()
        .expect("running klpx");
    let secs = start.elapsed().as_secs_f64();
    assert!(
        o.status.success(),
        "klpx build --distro debian {}: {}",
        patch.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (
        secs,
        r["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
        r["kernel_release"].as_str().unwrap_or("").to_string(),
    )
}

fn main() {
    let out = std::env::temp_dir().join(format!("klpx-distro-bench-{}", std::process::id()));
    let first = repo().join("examples/proc-cmdline.patch");
    let second = repo().join("tests/boot/exit-do-exit.patch");
    // A first run fetches and unpacks what is missing; it is not measured.
    let (_, _, release) = build(&first, &out);
    let cache = std::env::var_os("KLPX_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/klpx"));
    let obj = cache.join("distro/debian").join(&release).join("obj");
    std::fs::remove_dir_all(&obj).expect("removing the prepared tree klpx made");
    let (cold, cold_mem, _) = build(&first, &out);
    let (warm, warm_mem, _) = build(&second, &out);
    let (warm2, warm2_mem, _) = build(&first, &out);
    println!(
        "Debian {release}, -j{}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| run | patch | wall | klpx peak RSS |");
    println!("|---|---|---|---|");
    println!(
        "| cold (prepare + compile + identity + link) | proc-cmdline | {cold:.1} s | {cold_mem:.0} MiB |"
    );
    println!(
        "| warm, new object | exit-do-exit (kernel/exit.c) | {warm:.1} s | {warm_mem:.0} MiB |"
    );
    println!("| warm, object compiled before | proc-cmdline | {warm2:.1} s | {warm2_mem:.0} MiB |");
    let _ = std::fs::remove_dir_all(&out);
}
