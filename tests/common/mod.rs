//! Shared test support.

pub mod batch;
pub mod cases;
pub mod cli;
pub mod corpus;
pub mod distro;
pub mod kernel;
pub mod patches;
pub mod sign;
