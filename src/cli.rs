//! The command line, as clap types. Each subcommand's arguments are turned into plain values by its
//! module in `cmd/` before any work starts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use klpx_arch::Arch;

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
    /// Kernel trees klpx keeps in its cache, one per architecture.
    Kernel {
        #[command(subcommand)]
        what: KernelCommand,
    },
    /// Builds a livepatch module from source patches against an already-built kernel tree.
    #[command(after_help = BUILD_HELP)]
    Build(Box<BuildArgs>),
    /// Builds one livepatch for several architectures at once and reports what differs.
    #[command(after_help = MATRIX_HELP)]
    Matrix(MatrixArgs),
    /// Builds a livepatch release: per architecture and kernel release the module (signed on
    /// request), a Debian package and an RPM, a manifest, SHA256SUMS and the report.
    #[command(after_help = RELEASE_HELP)]
    Release(Box<ReleaseArgs>),
    /// Boots the kernel in qemu, loads the livepatch, runs checks before and after, unloads it.
    #[command(after_help = VERIFY_HELP)]
    Verify(VerifyArgs),
    /// Shows what a livepatch module patches: its functions, objects, livepatch relocations and
    /// symbols, version magic and signature.
    Info {
        /// The livepatch module, or the name of one installed for the running kernel.
        #[arg(value_name = "MODULE.ko|NAME")]
        module: PathBuf,
        /// Print one JSON object instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Loads a livepatch module into the running kernel and waits for its transition (as root).
    #[command(after_help = LOAD_HELP)]
    Load(LoadArgs),
    /// Disables a loaded livepatch, waits for its transition and removes its module (as root).
    Unload {
        /// The module's name (`livepatch-fix` or `livepatch_fix`), or its .ko file.
        #[arg(value_name = "NAME")]
        name: String,
        /// Seconds to wait for the transition.
        #[arg(long, value_name = "S", default_value_t = 60)]
        timeout: u64,
    },
    /// Lists the livepatch modules installed for each kernel release and the livepatches loaded
    /// now, with the objects and functions each patches.
    List {
        /// Print one JSON object instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Installs a livepatch module for the kernel release it was built for, where `klpx load --all`
    /// finds it at boot (/var/lib/klpx/<release>/).
    Install {
        #[arg(value_name = "MODULE.ko")]
        module: PathBuf,
        /// The kernel release it is for: must be the one its vermagic names.
        #[arg(long = "kernel", value_name = "RELEASE")]
        kernel: Option<String>,
    },
    /// Removes an installed livepatch module (loaded ones stay loaded).
    Uninstall {
        /// The module's name (`livepatch-fix` or `livepatch_fix`).
        #[arg(value_name = "NAME")]
        name: String,
        /// The kernel release it was installed for (default: the running kernel's).
        #[arg(long = "kernel", value_name = "RELEASE")]
        kernel: Option<String>,
    },
    /// Prints the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Prints a manual page (roff), made from these same definitions: `klpx man | man -l -` for
    /// klpx(1), `klpx man build` for klpx-build(1).
    Man {
        /// The subcommand whose page to print (default: klpx's own).
        subcommand: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KernelCommand {
    /// Configures (tinyconfig + configs/ fragments), prepares and builds the tree once; prints its path.
    Build(KernelArgs),
    /// Configures and prepares the tree (enough for `klpx diff` corpora), without building it.
    Config(KernelArgs),
    /// Removes the tree.
    Clean(KernelArgs),
    /// Builds the kernel with patches applied (the permanent fix) and packages it with the
    /// kernel's own bindeb-pkg or binrpm-pkg, in an output tree of its own; the source is restored.
    Package(KernelPackageArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KernelPackageArgs {
    #[command(flatten)]
    pub tree: KernelArgs,
    /// Patches applied for the build (none: the tree's kernel as it is).
    #[arg(value_name = "PATCH")]
    pub patches: Vec<std::path::PathBuf>,
    /// The package format.
    #[arg(long, value_enum, default_value = "deb")]
    pub format: crate::release::kernel_package::PackageFormat,
    /// Directory for the packages (default: the current directory).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: Option<std::path::PathBuf>,
    /// Context lines a hunk may ignore at each end to apply, as GNU patch's --fuzz (0: exact).
    #[arg(short = 'F', long = "fuzz", value_name = "N", default_value_t = crate::patch::source::DEFAULT_FUZZ)]
    pub fuzz: usize,
}

#[derive(Debug, Clone, Args)]
pub struct KernelArgs {
    /// Architecture (x86_64, arm64, ppc64le, s390).
    #[arg(long, default_value = "x86_64", value_parser = parse_arch)]
    pub arch: Arch,
    /// The config the fragments go on top of: tinyconfig, defconfig, or a .config file.
    #[arg(long, default_value = "tinyconfig", value_name = "BASE")]
    pub base: String,
    /// The output tree (default: the cache's trees/<arch>, or trees/<arch>-<base> for other bases).
    #[arg(short = 'O', long = "objdir", value_name = "DIR")]
    pub objdir: Option<std::path::PathBuf>,
    /// CROSS_COMPILE prefix (default: the architecture's Debian prefix).
    #[arg(long)]
    pub cross: Option<String>,
    /// Build with clang and the LLVM tools (`LLVM=1`: `clang`, `ld.lld`, `llvm-*` from PATH; on
    /// Debian, PATH=/usr/lib/llvm-16/bin:$PATH), in a tree of its own (trees/<arch>-llvm).
    #[arg(long)]
    pub llvm: bool,
    /// A config fragment merged after klpx's own (repeatable): `CONFIG_X=y` and `# CONFIG_X is not
    /// set` lines. The tree is the cache's `trees/<arch>-<fragment names>` unless -O is given.
    #[arg(long = "fragment", value_name = "FILE")]
    pub fragments: Vec<std::path::PathBuf>,
    /// Parallel make jobs (default: the number of CPUs).
    #[arg(short = 'j', long = "jobs")]
    pub jobs: Option<usize>,
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
    #[arg(long, value_parser = parse_arch)]
    pub arch: Option<Arch>,
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
    /// Count a function whose code differs only in the line numbers it passes to __might_sleep,
    /// __warn_printk and the like as changed (by default it is unchanged: lines above it moved).
    #[arg(long)]
    pub count_line_changes: bool,
}

const LOAD_HELP: &str = "\
A module built for another kernel release, or one already loaded, is refused before insmod. When the
transition does not finish within --timeout, klpx names the tasks it waits for (pid, name, innermost
kernel frame), reverses the load (disables the livepatch and removes the module) and exits 3; it
never forces a transition. Signalling or stopping those tasks lets a later load finish.

Exit status: 0 loaded (or unloaded), 2 refused (bad module, wrong kernel, already loaded, not
loaded, stacked under another livepatch), 3 the transition did not finish.";

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The livepatch module to load.
    #[arg(
        value_name = "MODULE.ko",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub module: Option<PathBuf>,
    /// Load every module installed for the running kernel (/var/lib/klpx/<release>/), in name
    /// order, skipping loaded ones: what the boot service runs.
    #[arg(long)]
    pub all: bool,
    /// Seconds to wait for each transition.
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Architecture of the demo tree.
    #[arg(long, default_value = "x86_64", value_parser = parse_arch)]
    pub arch: Arch,
    /// Parallel make jobs.
    #[arg(short = 'j', long, default_value_t = 2)]
    pub jobs: usize,
}

const VERIFY_HELP: &str = "\
The guest boots a static busybox from a generated initramfs. Each --check runs (with sh) before the
modules are loaded, again after every livepatch transition has finished, and once more after the
livepatches are disabled and the modules removed. --expect-before (before loading and after removal)
and --expect-after (while enabled) are matched against the checks' combined output, and each check
must print something then. A workload runs after each livepatch's enabling and after its disabling.

--cases FILE verifies several cases in one boot, each on its own: a YAML or JSON list of
  - modules: [a.ko]                # paths relative to FILE's directory
    check: [\"cat /proc/cmdline\"]   # or checks
    expect_before: \"console=\"
    expect_after: \"this has been live patched\"
    files: [helper.ko]             # the case's checks find it in /klpx/files/
For each case in order the guest runs its checks, loads its modules, runs its checks again, disables
and removes them, and runs its checks a third time, so the next case starts on the kernel as it was.
The first case that fails ends the run (the kernel's state is no longer known): the cases after it
do not run, or, when only klpx saw the failure (a kernel warning), are not judged; either way they
fail. With --cases, --timeout is per case: the run may take S seconds times the number of cases.

Exit status:
  0  pass: loaded, transitions finished, every workload run and every check reported and exited 0,
     expectations met, disabled and unloaded (with --cases: in every case)
  2  bad input (missing kernel image or module, not a livepatch, wrong architecture, bad options,
     a cases file that does not parse or lists a case with no modules)
  3  fail: a step in the guest failed or timed out (the reason, naming the case with --cases, then
     the guest's console log)";

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The livepatch module(s) to load, in order (a module a livepatch patches goes first).
    #[arg(required_unless_present = "cases", value_name = "MODULE.ko")]
    pub modules: Vec<PathBuf>,
    /// Verify several cases in one boot, one after the other, each with its own modules, checks,
    /// expectations and files: a YAML or JSON list (see below).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["modules", "checks", "expect_before", "expect_after", "files"]
    )]
    pub cases: Option<PathBuf>,
    /// The kernel image to boot (bzImage on x86_64, vmlinux on ppc64le).
    #[arg(long, value_name = "IMAGE", required_unless_present_any = ["tree", "distro"])]
    pub kernel: Option<PathBuf>,
    /// A built kernel output tree: boot the architecture's image in it.
    #[arg(long, value_name = "DIR", conflicts_with = "kernel")]
    pub tree: Option<PathBuf>,
    /// Boot a distribution's own kernel, from its packages (as `klpx build --distro`).
    #[arg(long, value_name = "debian[:RELEASE]", conflicts_with_all = ["kernel", "tree"])]
    pub distro: Option<String>,
    /// The kernel's architecture (default: the module's).
    #[arg(long, value_parser = parse_arch)]
    pub arch: Option<Arch>,
    /// A shell command to run in the guest before loading and after the transitions.
    #[arg(long = "check", value_name = "CMD")]
    pub checks: Vec<String>,
    /// Text the checks must print before the livepatch is loaded (and again after it is removed).
    #[arg(long, value_name = "TEXT")]
    pub expect_before: Option<String>,
    /// Text the checks must print once the livepatch is enabled.
    #[arg(long, value_name = "TEXT")]
    pub expect_after: Option<String>,
    /// Seconds the whole guest run may take before qemu is stopped; with --cases, seconds per
    /// case (the run may take S times the number of cases).
    #[arg(long, value_name = "S", default_value_t = 120)]
    pub timeout: u64,
    /// Skip the workload (a few hundred forks and execs, /proc reads) that runs after each
    /// livepatch's enabling and after its disabling.
    #[arg(long)]
    pub no_workload: bool,
    /// A file to put in the guest at /klpx/files/<name> without loading it (repeatable): a module
    /// a check loads after the livepatch, a helper.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// How qemu runs the guest: kvm, tcg, or auto (kvm when the host has working hardware
    /// virtualization for the guest's architecture).
    #[arg(long, value_name = "auto|kvm|tcg", default_value = "auto")]
    pub accel: String,
    /// Print one JSON object (with the guest log) instead of a summary.
    #[arg(long)]
    pub json: bool,
}

const BUILD_HELP: &str = "\
Exit status:
  0  the livepatch module was built (its path is printed)
  1  the patch makes no functional change
  2  bad input (patch does not apply, tree not built, unsupported file, compiler mismatch)
  3  the change cannot be live-patched (one line per refused symbol)
  4  klpx or a tool it drives failed

Environment: ARCH, CROSS_COMPILE, LLVM and KBUILD_OUTPUT mean what they mean to kbuild.
Patches written for kpatch-build build unchanged: #include \"kpatch-macros.h\" and
\"kpatch-syscall.h\" are provided (and \"klpx.h\").";

/// The options every command that builds a livepatch from patches takes (`build`, `matrix`).
#[derive(Debug, Clone, Default, Args)]
pub struct PatchArgs {
    /// Source patches (git diff, git format-patch mails, diff -u, quilt), applied in order.
    #[arg(required = true, value_name = "PATCH")]
    pub patches: Vec<PathBuf>,
    /// Context lines a hunk may ignore at each end to apply, as GNU patch's --fuzz (0: exact).
    #[arg(short = 'F', long = "fuzz", value_name = "N", default_value_t = crate::patch::source::DEFAULT_FUZZ)]
    pub fuzz: usize,
    /// Module name (1 to 55 ASCII letters, digits, - and _); default livepatch-<first patch's name>.
    #[arg(short = 'n', long = "name")]
    pub name: Option<String>,
    /// Do not replace earlier livepatches (no atomic replace).
    #[arg(short = 'R', long = "non-replace")]
    pub non_replace: bool,
}

impl PatchArgs {
    /// The module name `-n` gives (checked, never rewritten), or the default from the first patch.
    pub fn module_name(&self) -> Result<String, crate::error::UserError> {
        match &self.name {
            Some(n) => {
                crate::module::source::check_module_name("--name", n)?;
                Ok(n.clone())
            }
            None => Ok(crate::module::source::default_name(&self.patches[0])),
        }
    }
}

#[derive(Debug, Clone, Default, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub patch: PatchArgs,
    /// The kernel source tree (default: the current directory).
    #[arg(short = 's', long = "sourcedir", value_name = "DIR")]
    pub sourcedir: Option<PathBuf>,
    /// The kernel's output tree (`make O=`); default: KBUILD_OUTPUT, else the source tree.
    #[arg(short = 'O', long = "objdir", value_name = "DIR")]
    pub objdir: Option<PathBuf>,
    /// The target kernel's .config; must match the tree's.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The target's vmlinux, for symbol positions (default: the tree's).
    #[arg(short = 'v', long = "vmlinux", value_name = "FILE")]
    pub vmlinux: Option<PathBuf>,
    /// Parallel compile jobs (default: the number of CPUs).
    #[arg(short = 'j', long = "jobs")]
    pub jobs: Option<usize>,
    /// Only patch these targets: vmlinux or module names (repeatable).
    #[arg(short = 't', long = "target", value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Directory to write the module to (default: the current directory).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Keep the work directory and say where it is (repeatable).
    #[arg(short = 'd', long = "debug", action = clap::ArgAction::Count)]
    pub debug: u8,
    /// Build for an out-of-tree module (its built .ko).
    #[arg(long = "oot-module", value_name = "KO")]
    pub oot_module: Option<PathBuf>,
    /// The out-of-tree module's source directory.
    #[arg(long = "oot-module-src", value_name = "DIR")]
    pub oot_module_src: Option<PathBuf>,
    /// Keep the work directory.
    #[arg(long = "skip-cleanup")]
    pub skip_cleanup: bool,
    /// Do not check that the compiler is the one that built the kernel.
    #[arg(long = "skip-compiler-check")]
    pub skip_compiler_check: bool,
    /// The kernel release the patch is for; must match the tree's.
    #[arg(short = 'a', long = "archversion", value_name = "RELEASE")]
    pub archversion: Option<String>,
    /// Architecture (x86_64, arm64, ppc64le, s390; default: ARCH, else x86_64).
    #[arg(long, value_parser = parse_arch)]
    pub arch: Option<Arch>,
    /// CROSS_COMPILE prefix (default: CROSS_COMPILE, else the architecture's Debian prefix).
    #[arg(long)]
    pub cross: Option<String>,
    /// Build with clang and the LLVM tools (LLVM=1).
    #[arg(long)]
    pub llvm: bool,
    /// The C compiler (CC).
    #[arg(long)]
    pub cc: Option<String>,
    /// A compiler launcher: ccache, sccache, distcc.
    #[arg(long)]
    pub launcher: Option<String>,
    /// Build for a distribution's own kernel from its packages, with no kernel build: `debian`
    /// (the release of linux-source-6.12's version), `debian:RELEASE` (what uname -r prints) or
    /// `debian:SERIES` (`debian:6.1`: that series' newest release).
    #[arg(long, value_name = "debian[:RELEASE]", conflicts_with_all = ["sourcedir", "objdir", "config", "vmlinux", "symvers"])]
    pub distro: Option<String>,
    /// A kernel source RPM (.src.rpm): its %prep (rpmbuild -bp) makes the source, instead of -s.
    #[arg(short = 'r', long = "sourcerpm", value_name = "SRPM", conflicts_with_all = ["sourcedir", "distro"], requires = "symvers")]
    pub sourcerpm: Option<PathBuf>,
    /// The target kernel's Module.symvers: with -s and -c, build against a kernel that was never
    /// built here (a prepared tree, in -O or the cache), as for --distro.
    #[arg(long, value_name = "FILE", requires = "config")]
    pub symvers: Option<PathBuf>,
    /// With --symvers and no -v: the kernel's System.map, for symbol positions (same-named locals
    /// cannot be told apart; the identity check needs --image).
    #[arg(
        long,
        value_name = "FILE",
        requires = "symvers",
        conflicts_with = "vmlinux"
    )]
    pub system_map: Option<PathBuf>,
    /// With --distro or --symvers: build without proving that the rebuilt original functions are
    /// the shipped kernel's.
    #[arg(long)]
    pub skip_identity_check: bool,
    /// With --symvers: the kernel's boot image (vmlinuz); the identity check reads its code when
    /// there is no -v, and with -v it must be the same build.
    #[arg(long, value_name = "VMLINUZ", requires = "symvers")]
    pub image: Option<PathBuf>,
    /// The target kernel's modules directory (lib/modules/RELEASE), for -t on a module, with --symvers.
    #[arg(long, value_name = "DIR", requires = "symvers")]
    pub modules: Option<PathBuf>,
    /// Sign the module with this private key (PEM) through the kernel's scripts/sign-file, for
    /// kernels that enforce module signatures (Secure Boot).
    #[arg(long, value_name = "KEY", requires = "sign_cert")]
    pub sign_key: Option<PathBuf>,
    /// The X.509 certificate (PEM) of --sign-key.
    #[arg(long, value_name = "CERT", requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

const MATRIX_HELP: &str = "\
The matrix file (default: ./cross-dev.yaml, else klpx's built-in one) names the kernel source, the
output-tree prefix, the jobs shared by all architectures, and per architecture its cross prefix,
compiler (gcc or clang), launcher and extra config fragments. Each architecture builds in its own
output tree (built once if needed); the source tree is patched once for all patched builds.

With --verify, every architecture's module is then proven in qemu on its tree's kernel, all at
once; the report gains the outcome and the checks' output before and after.

Exit status:
  0  every architecture built its module (or none had a functional change), and passed --verify
  2  bad input (matrix file, patch)
  3  the change cannot be live-patched on at least one architecture, or a module failed --verify
  4  at least one architecture failed";

#[derive(Debug, Clone, Args)]
pub struct MatrixArgs {
    #[command(flatten)]
    pub patch: PatchArgs,
    /// The matrix file.
    #[arg(short = 'f', long = "file", value_name = "YAML")]
    pub file: Option<PathBuf>,
    /// Directory for the modules (`<dir>/<arch>/<name>.ko`; default: ./<name>).
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Run the architectures one after another (for comparison; default: together).
    #[arg(long)]
    pub sequential: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as Markdown to this file.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    #[command(flatten)]
    pub arches: ArchesArg,
    #[command(flatten)]
    pub verify: MatrixVerifyArgs,
}

/// `--verify` and its checks, for `matrix` and `release`.
#[derive(Debug, Clone, Default, Args)]
pub struct MatrixVerifyArgs {
    /// Then boot every architecture's kernel in qemu with its module, all at once: load, run the
    /// checks before and after, unload (where the kernel cannot load livepatches, as arm64 6.12,
    /// check the module against its vmlinux instead).
    #[arg(long)]
    pub verify: bool,
    /// A shell command run in each guest before loading and after the transition (repeatable).
    #[arg(long = "check", value_name = "CMD", requires = "verify")]
    pub checks: Vec<String>,
    /// Text the checks' output must contain before loading.
    #[arg(long, value_name = "TEXT", requires = "verify")]
    pub expect_before: Option<String>,
    /// Text the checks' output must contain with the livepatch enabled.
    #[arg(long, value_name = "TEXT", requires = "verify")]
    pub expect_after: Option<String>,
    /// Time limit of each guest, in seconds (several guests share the CPUs).
    #[arg(long = "verify-timeout", value_name = "S", default_value_t = 300)]
    pub verify_timeout: u64,
}

impl MatrixVerifyArgs {
    /// The checks as the matrix stage takes them; `None` without `--verify`.
    pub fn checks(&self) -> Result<Option<crate::matrix::verify::Checks>, crate::error::UserError> {
        if !self.verify {
            return Ok(None);
        }
        if self.verify_timeout == 0 {
            return Err(crate::error::UserError::new(
                "--verify-timeout must be at least 1 second",
            ));
        }
        Ok(Some(crate::matrix::verify::Checks {
            commands: self.checks.clone(),
            expect_before: self.expect_before.clone(),
            expect_after: self.expect_after.clone(),
            timeout: std::time::Duration::from_secs(self.verify_timeout),
            busybox: Vec::new(),
        }))
    }
}

/// `--arches`: a subset of the matrix file's architectures.
#[derive(Debug, Clone, Default, Args)]
pub struct ArchesArg {
    /// Only these architectures of the matrix file (comma-separated; default: all of them).
    #[arg(long, value_name = "ARCH,...", env = "KLPX_ARCHES", value_delimiter = ',', value_parser = parse_arch)]
    pub arches: Vec<Arch>,
}

const RELEASE_HELP: &str = "\
Without --distro, the modules are built as klpx matrix builds them (the matrix file's trees); with
--distro, for the distribution's own kernel of each architecture, as klpx build --distro does.
DIR must be new or empty. It receives, per architecture and kernel release,
<arch>/<release>/<name>.ko, a Debian package (.deb) and an RPM installing it into
/var/lib/klpx/<release>/ (where klpx load --all finds it), then manifest.json, SHA256SUMS and
report.md. An architecture that fails is marked in the manifest; the others are still written.
With --verify, an architecture whose module fails in qemu is not packaged (--package-unverified
packages it all the same).

Exit status:
  0  every architecture's module was built and packaged (and passed --verify)
  2  bad input (patch, matrix file, version, signing key, DIR not empty)
  3  the change cannot be live-patched on at least one architecture, or a module failed --verify
  4  at least one architecture failed, or packaging (the patched kernel, klpx itself) failed";

#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub patch: PatchArgs,
    /// The release's version (packages and manifest): starts with a digit, then letters, digits,
    /// `.`, `+` and `~`.
    #[arg(long = "version", value_name = "V")]
    pub version: String,
    /// The release directory; must be new or empty.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    pub output: PathBuf,
    /// The matrix file (default: ./cross-dev.yaml, else klpx's built-in one): its architectures,
    /// and its trees when there is no --distro.
    #[arg(short = 'f', long = "file", value_name = "YAML")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub arches: ArchesArg,
    #[command(flatten)]
    pub verify: MatrixVerifyArgs,
    /// Also rebuild each architecture's kernel with the patches applied and add its packages (deb
    /// and RPM, by the kernel's bindeb-pkg and binrpm-pkg) to the release: the permanent fix.
    #[arg(long, conflicts_with = "distro")]
    pub with_kernel: bool,
    /// With --verify: package an architecture whose module failed verification all the same.
    #[arg(long, requires = "verify")]
    pub package_unverified: bool,
    /// Build for the distribution's own kernel of each architecture (as klpx build --distro):
    /// `debian`, `debian:SERIES` or `debian:RELEASE`; the packages then depend on that kernel's
    /// image package.
    #[arg(long, value_name = "debian[:RELEASE]")]
    pub distro: Option<String>,
    /// Sign the modules with this private key (PEM) through each kernel's scripts/sign-file.
    #[arg(long, value_name = "KEY", requires = "sign_cert")]
    pub sign_key: Option<PathBuf>,
    /// The X.509 certificate (PEM) of --sign-key.
    #[arg(long, value_name = "CERT", requires = "sign_key")]
    pub sign_cert: Option<PathBuf>,
    /// The packages' maintainer.
    #[arg(
        long,
        value_name = "NAME <EMAIL>",
        default_value = "klpx release <root@localhost>"
    )]
    pub maintainer: String,
    /// Parallel jobs of the --distro and --with-kernel builds (default: the number of CPUs; the
    /// matrix's builds take the matrix file's `jobs`).
    #[arg(short = 'j', long = "jobs")]
    pub jobs: Option<usize>,
    /// Print the manifest as JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// The CPUs this process may use (1 when unknown).
pub fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Parallel jobs from `-j` (default: the CPUs). 0 is refused; more than four per CPU is capped
/// there, with a note, since make and the thread pool would only thrash (and 100,000 threads do
/// not start at all).
pub fn jobs(requested: Option<usize>) -> Result<usize, crate::error::UserError> {
    let cap = 4 * cpus();
    match requested {
        None => Ok(cpus()),
        Some(0) => Err(crate::error::UserError::new(
            "-j 0: give at least 1 parallel job (or leave -j out for one per CPU)",
        )),
        Some(n) if n > cap => {
            eprintln!(
                "klpx: note: -j {n} is capped at {cap} (four jobs per CPU, {} CPUs)",
                cpus()
            );
            Ok(cap)
        }
        Some(n) => Ok(n),
    }
}

/// Parallel jobs for a build through `launcher`: `-j` when given (capped at four per CPU, or at
/// what a distcc farm takes when that is more), else the CPUs raised to the farm's size
/// (`distcc -j`). Only compiles through the launcher run that many; make's local work (preparing a
/// tree) keeps to [`local_jobs`].
pub fn jobs_for(
    requested: Option<usize>,
    launcher: Option<&str>,
) -> Result<usize, crate::error::UserError> {
    let farm = launcher.and_then(crate::kbuild::toolchain::launcher_jobs);
    match (requested, farm) {
        (Some(n), Some(f)) if n > 4 * cpus() && n <= f.max(4 * cpus()) => Ok(n),
        (Some(_), _) => jobs(requested),
        (None, farm) => Ok(jobs_or_farm(farm)),
    }
}

/// The CPUs, or the jobs a compile farm takes when that is more, with a note saying so.
pub fn jobs_or_farm(farm: Option<usize>) -> usize {
    match farm {
        Some(n) if n > cpus() => {
            eprintln!(
                "klpx: note: compiles through distcc run {n} at a time, as many as its hosts take \
                 (distcc -j)"
            );
            n
        }
        _ => cpus(),
    }
}

/// `jobs` for work that runs on this machine whatever the launcher (make preparing a tree): at
/// most four per CPU.
pub fn local_jobs(jobs: usize) -> usize {
    jobs.clamp(1, 4 * cpus())
}

/// `--arch`: a name or alias the arch crate knows (`x86_64`, `aarch64`, `ppc64el`, `s390x`, ...).
pub fn parse_arch(name: &str) -> Result<Arch, String> {
    name.parse::<Arch>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn jobs_are_at_least_one_and_at_most_four_per_cpu() {
        assert!(super::jobs(Some(0)).is_err());
        assert_eq!(super::jobs(Some(1)).unwrap(), 1);
        assert_eq!(super::jobs(Some(100_000)).unwrap(), 4 * super::cpus());
        assert_eq!(super::jobs(None).unwrap(), super::cpus());
    }
}
