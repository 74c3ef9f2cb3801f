//! Kernel sources and output trees klpx manages for the user (demo, tests, `klpx kernel`).

pub mod cache;
pub mod configs;
pub mod identity;
pub mod image;
pub mod tree;
pub mod units;
