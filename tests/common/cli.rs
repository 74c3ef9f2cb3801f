//! Running the klpx binary from tests.

#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `klpx ARGS` and returns what it printed and its status.
pub fn klpx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args(args)
        // The tests name their architectures; a KLPX_ARCHES of the caller's must not narrow them.
        .env_remove("KLPX_ARCHES")
        .output()
        .expect("running klpx")
}

/// [`klpx`] with Debian's LLVM 16 tools first in PATH, as the README says to run it for clang.
pub fn klpx_llvm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args(args)
        .env("PATH", super::kernel::llvm_16_path())
        .env_remove("KLPX_ARCHES")
        .output()
        .expect("running klpx")
}

/// Bytes as text, for messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts the exit status, showing everything klpx printed when it differs.
pub fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// `klpx build --arch <tree's> -s <source> -O <tree> -o <out_dir> -n <name> <extra>... <patches>...`.
pub fn build_module(
    tree: &klpx::kernel::tree::KernelTree,
    out_dir: &std::path::Path,
    name: &str,
    extra: &[&str],
    patches: &[&std::path::Path],
) -> Output {
    let mut args: Vec<String> = vec![
        "build".into(),
        "--arch".into(),
        tree.arch.name().into(),
        "-s".into(),
        tree.src.display().to_string(),
        "-O".into(),
        tree.out.display().to_string(),
        "-o".into(),
        out_dir.display().to_string(),
        "-n".into(),
        name.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(patches.iter().map(|p| p.display().to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    klpx(&refs)
}

/// Runs another tool (an oracle: dpkg-deb, rpm, readelf, ...) and returns its standard output,
/// failing the test when it fails.
pub fn tool(program: &str, args: &[&str]) -> String {
    let o = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        o.status.success(),
        "{program} {args:?}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}
