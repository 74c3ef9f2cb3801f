//! The klpx binary: parses the command line, hands plain values to a subcommand, maps errors to exit
//! statuses (2 for the user's mistakes, 4 for everything else).

use clap::Parser;
use clap::error::ErrorKind;

use klpx::cli::{ArchCommand, Cli, Command};
use klpx::cmd;
use klpx::error::{Unpatchable, UserError, exit};

fn main() {
    // Output piped into `head` should end klpx quietly, as it does any Unix tool, not as a panic.
    // SAFETY: setting a signal disposition to the default before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => usage_error(e),
    };
    let env_cross = std::env::var("CROSS_COMPILE").ok();
    let result = match cli.command {
        Command::Arch {
            what: ArchCommand::List { json },
        } => Ok(cmd::arch::list(json)),
        Command::Doctor(a) => cmd::doctor::run(a.arch, a.cross.as_deref(), env_cross.as_deref()),
        Command::Demo(a) => klpx::cli::jobs(Some(a.jobs))
            .map_err(Into::into)
            .and_then(|jobs| cmd::demo::run(a.arch, jobs)),
        Command::Diff(a) => cmd::diff::run(&cmd::diff::DiffRequest::from(a)),
        Command::Build(a) => cmd::build::run(*a),
        Command::Matrix(a) => cmd::matrix::run(a),
        Command::Release(a) => cmd::release::run(*a),
        Command::Kernel { what } => cmd::kernel::run(what),
        Command::Verify(a) => cmd::verify::run(&a),
        Command::Info { module, json } => cmd::info::run(&module, json),
        Command::Load(a) => cmd::load::run(&a),
        Command::Unload { name, timeout } => cmd::load::unload(&name, timeout),
        Command::List { json } => cmd::list::run(json),
        Command::Install { module, kernel } => cmd::install::install(&module, kernel.as_deref()),
        Command::Uninstall { name, kernel } => cmd::install::uninstall(&name, kernel.as_deref()),
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

/// Help and version go out as clap writes them; a usage error is bad input like any other: one
/// line naming the option and what is wrong, exit status 2.
fn usage_error(e: clap::Error) -> ! {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    // The message is the first paragraph (a list of missing arguments runs over several lines).
    let text = e.render().to_string();
    let message: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    eprintln!("klpx: {message} (klpx --help says more)");
    std::process::exit(exit::USER);
}
