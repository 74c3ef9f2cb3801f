//! One module per subcommand. Each takes plain values and returns the process exit status.

pub mod arch;
pub mod build;
pub mod demo;
pub mod diff;
pub mod docs;
pub mod doctor;
pub mod info;
pub mod install;
pub mod kernel;
pub mod list;
pub mod load;
pub mod matrix;
pub mod release;
pub mod verify;
