//! Distribution kernels from their packages: which packages make a release, fetching them into
//! klpx's cache, and the files a livepatch build against that kernel needs.

pub mod apt;
pub mod debian;
pub mod srpm;
