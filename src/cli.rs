//! The command line, as clap types. Each subcommand's arguments are turned into plain values by its
//! module in `cmd/` before any work starts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "klpx",
    version,
    about = "Build Linux livepatch modules from source patches (x86_64, arm64, ppc64le, s390)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// What klpx knows about each architecture.
    Arch {
        #[command(subcommand)]
        what: ArchCommand,
    },
    /// Checks that each architecture's compiler is installed, and says what to install if not.
    Doctor(DoctorArgs),
    /// Runs klpx on the built-in example: installs what is missing, prepares a tiny kernel tree, diffs.
    Demo(DemoArgs),
    /// Decides what a patch changed in one object and writes what the livepatch needs.
    #[command(after_help = DIFF_HELP)]
    Diff(DiffArgs),
}

#[derive(Debug, Subcommand)]
pub enum ArchCommand {
    /// Lists the supported architectures and each backend's conventions.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Check only this architecture (x86_64, arm64, ppc64le, s390).
    #[arg(long)]
    pub arch: Option<String>,
    /// Compiler prefix (CROSS_COMPILE) to check instead of the default one.
    #[arg(long)]
    pub cross: Option<String>,
}

const DIFF_HELP: &str = "\
Exit status:
  0  a patchable change was found (and OUT was written when -o was given)
  1  no functional change
  2  bad input (unreadable, corrupt or mismatched objects, bad options)
  3  the change cannot be live-patched (one line per refused symbol on stderr)

Without --symvers, symbols defined outside the object are taken as exported (plain relocations)
and symbols defined in it as unexported (livepatch relocations).";

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The object as built from the unpatched source.
    pub orig: PathBuf,
    /// The same object built from the patched source.
    pub patched: PathBuf,
    /// Write the object holding what the livepatch needs here.
    #[arg(short = 'o', long = "output", value_name = "OUT.o")]
    pub output: Option<PathBuf>,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    pub json: bool,
    /// The livepatch object the code belongs to: vmlinux or a module name.
    #[arg(long = "object", default_value = "vmlinux", value_name = "NAME")]
    pub object: String,
    /// kbuild's Module.symvers: which symbols the module loader can resolve.
    #[arg(long, value_name = "FILE")]
    pub symvers: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Architecture of the demo tree.
    #[arg(long, default_value = "x86_64")]
    pub arch: String,
    /// Parallel make jobs.
    #[arg(short = 'j', long, default_value_t = 2)]
    pub jobs: usize,
}
