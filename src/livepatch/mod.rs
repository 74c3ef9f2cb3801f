//! `klpx build`: from source patches and a built kernel tree to a livepatch module.

pub mod affected;
pub mod journal;
pub mod lineno;
pub mod lock;
pub mod pipeline;
pub mod progress;
pub mod workdir;
