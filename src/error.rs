//! Errors that are the user's to fix: exit status 2, one line naming the file, symbol or option.

use std::fmt;

/// A problem with the user's input, as opposed to a bug or an environment failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserError(String);

impl UserError {
    pub fn new(message: impl Into<String>) -> UserError {
        UserError(message.into())
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

/// A change no livepatch can carry, found before any long work (a `.S` file, `lib/`): exit status 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpatchable(pub String);

impl fmt::Display for Unpatchable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unpatchable {}

/// Exit statuses shared by every subcommand.
pub mod exit {
    /// Success; for `klpx diff`, a patchable change was found.
    pub const OK: i32 = 0;
    /// `klpx diff`: the objects differ in nothing that matters.
    pub const NO_CHANGE: i32 = 1;
    /// Bad input or usage: the user has something to fix.
    pub const USER: i32 = 2;
    /// The change cannot be live-patched.
    pub const UNPATCHABLE: i32 = 3;
    /// klpx itself or the environment failed.
    pub const INTERNAL: i32 = 4;
}
