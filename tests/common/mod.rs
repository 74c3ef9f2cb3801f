//! Shared test support.

pub mod cli;
pub mod kernel;
