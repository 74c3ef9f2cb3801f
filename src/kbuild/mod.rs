//! Driving kbuild: reading what it recorded and re-running single compiles with extra flags.

pub mod cmdfile;
pub mod compile;
pub mod includes;
pub mod links;
pub mod objcache;
pub mod prepared;
pub mod toolchain;
