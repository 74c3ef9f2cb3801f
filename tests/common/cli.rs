//! Running the klpx binary from tests.

#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `klpx ARGS` and returns what it printed and its status.
pub fn klpx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args(args)
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
