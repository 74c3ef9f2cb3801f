//! `klpx matrix` over all four architectures of the default matrix (cross-dev.yaml), with a patch
//! that must show a real cross-architecture difference: besides a common fix in fs/proc/cmdline.c it
//! changes arch/x86/kernel/cpu/proc.c, which only the x86_64 kernel builds. The x86_64 module is then
//! booted to check both changes.

mod common;

use common::cli::{assert_exit, klpx};
use klpx_arch::Arch;

#[test]
fn four_architectures_in_parallel_show_an_x86_only_change() {
    for arch in Arch::ALL {
        common::kernel::built_tree(arch).unwrap_or_else(|e| panic!("{arch}: {e:#}"));
    }
    let repo = common::kernel::repo();
    let dir = std::env::temp_dir().join(format!("klpx-matrix-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let md = dir.join("report.md");
    let out = klpx(&[
        "matrix",
        "-f",
        repo.join("cross-dev.yaml").to_str().unwrap(),
        "-o",
        dir.to_str().unwrap(),
        "-n",
        "livepatch-matrix",
        "--json",
        "--markdown",
        md.to_str().unwrap(),
        repo.join("tests/matrix/x86-cpuinfo.patch")
            .to_str()
            .unwrap(),
    ]);
    assert_exit(&out, 0, "klpx matrix");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let row = |a: &str| rows.iter().find(|r| r["arch"] == a).unwrap();
    for a in ["x86_64", "ppc64le", "s390"] {
        assert_eq!(row(a)["status"], "module", "{a}: {}", row(a));
    }
    assert_eq!(row("arm64")["status"], "module (cannot load)");
    assert_eq!(
        row("x86_64")["changed_functions"],
        serde_json::json!(["cmdline_proc_show", "show_cpuinfo"])
    );
    for a in ["arm64", "ppc64le", "s390"] {
        assert_eq!(
            row(a)["changed_functions"],
            serde_json::json!(["cmdline_proc_show"]),
            "{a}"
        );
        let ko = dir.join(a).join("livepatch-matrix.ko");
        assert!(ko.is_file(), "{}", ko.display());
    }
    let diffs = report["differences"].as_array().unwrap();
    assert!(
        diffs.iter().any(|d| d["kind"] == "changed"
            && d["what"] == "show_cpuinfo"
            && d["on"] == serde_json::json!(["x86_64"])),
        "{diffs:?}"
    );
    let markdown = std::fs::read_to_string(&md).unwrap();
    assert!(markdown.contains("| x86_64 | module |"), "{markdown}");
    assert!(
        markdown.contains("changed `show_cpuinfo`: on x86_64"),
        "{markdown}"
    );

    // The x86_64 module carries both changes.
    let tree = common::kernel::built_tree(Arch::X86_64).unwrap();
    let v = klpx(&[
        "verify",
        dir.join("x86_64/livepatch-matrix.ko").to_str().unwrap(),
        "--tree",
        tree.out.to_str().unwrap(),
        "--check",
        "head -1 /proc/cpuinfo; cat /proc/cmdline",
        "--expect-after",
        "klpx\t\t: patched\nklpx console=",
    ]);
    assert_exit(&v, 0, "klpx verify of the x86_64 module");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn matrix_file_errors_name_line_and_column() {
    let dir = std::env::temp_dir().join(format!("klpx-matrix-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("m.yaml");
    std::fs::write(
        &f,
        "source: debian:linux-source-6.12\noutput: trees\narches:\n  - arch: x86_64\n  - arch: vax\n",
    )
    .unwrap();
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let out = klpx(&["matrix", "-f", f.to_str().unwrap(), patch.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("m.yaml:5:"), "{err}");
    assert!(err.contains("vax"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
