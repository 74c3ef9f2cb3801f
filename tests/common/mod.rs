//! Shared test support.

pub mod kernel;
