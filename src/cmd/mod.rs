//! One module per subcommand. Each takes plain values and returns the process exit status.

pub mod arch;
pub mod demo;
pub mod diff;
pub mod doctor;
pub mod verify;
