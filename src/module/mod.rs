//! The livepatch module: generated source, the kbuild link, the livepatch ELF sections written into the
//! linked `.ko`, and the checks the final module must pass.

pub mod check;
pub mod klp_rela;
pub mod link;
pub mod reloc_check;
pub mod source;
pub mod sympos;
