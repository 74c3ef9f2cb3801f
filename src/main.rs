//! The klpx binary: parses the command line, hands plain values to a subcommand, maps errors to exit
//! statuses (2 for the user's mistakes, 4 for everything else).

use clap::Parser;

use klpx::cli::{ArchCommand, Cli, Command};
use klpx::cmd;
use klpx::error::{Unpatchable, UserError, exit};

fn main() {
    // Output piped into `head` should end klpx quietly, as it does any Unix tool, not as a panic.
    // SAFETY: setting a signal disposition to the default before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let env_cross = std::env::var("CROSS_COMPILE").ok();
    let result = match cli.command {
        Command::Arch {
            what: ArchCommand::List { json },
        } => Ok(cmd::arch::list(json)),
        Command::Doctor(a) => {
            cmd::doctor::run(a.arch.as_deref(), a.cross.as_deref(), env_cross.as_deref())
        }
        Command::Demo(a) => a
            .arch
            .parse::<klpx_arch::Arch>()
            .map_err(|e| UserError::new(format!("--arch: {e}")).into())
            .and_then(|arch| Ok((arch, klpx::cli::jobs(Some(a.jobs))?)))
            .and_then(|(arch, jobs)| cmd::demo::run(arch, jobs)),
        Command::Diff(a) => cmd::diff::run(&cmd::diff::DiffRequest::from(a)),
        Command::Build(a) => cmd::build::run(*a),
        Command::Matrix(a) => cmd::matrix::run(a),
        Command::Kernel { what } => cmd::kernel::run(what),
        Command::Verify(a) => cmd::verify::run(&a),
        Command::Info { module, json } => cmd::info::run(&module, json),
        Command::Completions { shell } => cmd::docs::completions(shell),
        Command::Man { subcommand } => cmd::docs::man(subcommand.as_deref()),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<Unpatchable>().is_some() => {
            eprintln!("klpx: {e}");
            exit::UNPATCHABLE
        }
        Err(e) => match e.downcast_ref::<UserError>() {
            Some(u) => {
                eprintln!("klpx: {u}");
                exit::USER
            }
            None => {
                eprintln!("klpx: error: {e:#}");
                exit::INTERNAL
            }
        },
    };
    std::process::exit(code);
}
