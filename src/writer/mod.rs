//! Writers: ELF objects klpx produces.

pub mod diff_object;
pub mod side_table;
