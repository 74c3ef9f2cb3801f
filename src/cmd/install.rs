//! `klpx install` and `klpx uninstall`: livepatch modules kept for a kernel release, for
//! `klpx load --all` at boot.

use std::path::Path;

use anyhow::Result;

use crate::error::exit;
use crate::machine::Machine;

pub fn install(module: &Path, kernel: Option<&str>) -> Result<i32> {
    let dest = Machine::default().install(module, kernel)?;
    println!("installed {}", dest.display());
    Ok(exit::OK)
}

pub fn uninstall(name: &str, kernel: Option<&str>) -> Result<i32> {
    let gone = Machine::default().uninstall(name, kernel)?;
    println!("removed {}", gone.display());
    Ok(exit::OK)
}
