//! klpx: turns kernel source patches into livepatch modules for x86_64, arm64, ppc64le and s390.
//!
//! Data flows one way: command line → plan → kbuild → diff → module → verify. This library holds the
//! stages; the binary only parses the command line and reports.

pub mod build;
pub mod cli;
pub mod cmd;
pub mod differ;
pub mod distro;
pub mod error;
pub mod files;
pub mod kbuild;
pub mod kernel;
pub mod mapped;
pub mod matrix;
pub mod module;
pub mod objfile;
pub mod patch;
pub mod setup;
pub mod toolchain;
pub mod verify;
pub mod writer;
