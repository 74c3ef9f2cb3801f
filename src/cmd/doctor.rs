//! `klpx doctor`: is each architecture's compiler installed, and what to install when it is not.

use anyhow::Result;
use klpx_arch::Arch;

use crate::error::UserError;
use crate::kbuild::toolchain::find_compiler;

/// Checks the compilers; exit status 0 when every checked one is present, 1 otherwise.
pub fn run(arch: Option<Arch>, cross: Option<&str>, env_cross: Option<&str>) -> Result<i32> {
    let arches: Vec<Arch> = match arch {
        Some(a) => vec![a],
        None => {
            if cross.is_some() {
                return Err(UserError::new(
                    "--cross needs --arch: a prefix names one architecture's compiler",
                )
                .into());
            }
            Arch::ALL.to_vec()
        }
    };
    let mut missing = 0;
    for a in arches {
        let b = a.backend();
        let c = find_compiler(b, cross, env_cross);
        match &c.gcc {
            Some(path) => println!(
                "{:<8} ok       {} ({}, from {})",
                b.name(),
                c.command(),
                path.display(),
                c.source
            ),
            None => {
                missing += 1;
                let fix = if c.source == "default" {
                    format!("apt-get install {}", b.compiler_package())
                } else {
                    format!(
                        "install a compiler named {}, or drop {}",
                        c.command(),
                        c.source
                    )
                };
                println!(
                    "{:<8} missing  {} not found on PATH: {fix}",
                    b.name(),
                    c.command()
                );
            }
        }
    }
    Ok(if missing == 0 { 0 } else { 1 })
}
