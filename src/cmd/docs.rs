//! `klpx completions SHELL` and `klpx man [SUBCOMMAND]`: shell completions and manual pages,
//! generated from the clap definitions of the command line, so they never drift from it.

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{UserError, exit};

/// Prints the completion script of `shell` for klpx.
pub fn completions(shell: clap_complete::Shell) -> Result<i32> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "klpx", &mut std::io::stdout());
    Ok(exit::OK)
}

/// Prints klpx(1), or klpx-SUBCOMMAND(1) as git names its pages.
pub fn man(subcommand: Option<&str>) -> Result<i32> {
    let cmd = Cli::command();
    let page = match subcommand {
        None => cmd,
        Some(name) => {
            let sub = cmd.find_subcommand(name).cloned().ok_or_else(|| {
                let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
                UserError::new(format!(
                    "klpx man {name}: no such subcommand; one of {}",
                    names.join(", ")
                ))
            })?;
            let full = format!("klpx-{name}");
            sub.name(full.clone()).bin_name(full)
        }
    };
    clap_mangen::Man::new(page)
        .render(&mut std::io::stdout().lock())
        .context("writing the manual page")?;
    Ok(exit::OK)
}
