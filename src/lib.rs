//! klpx: turns kernel source patches into livepatch modules for x86_64, arm64, ppc64le and s390.
//!
//! Data flows one way: command line → plan → kbuild → diff → module → verify. This library holds the
//! stages; the binary only parses the command line and reports.
//!
//! - [`cli`], [`cmd`]: the command line, and one module per subcommand turning it into plain values.
//! - [`livepatch`]: the pipeline that plans a build and runs the stages below in order, with the
//!   journal and lock that keep the user's tree safe.
//! - [`patch`]: reading patches and planning what they write.
//! - [`kbuild`], [`kernel`], [`distro`]: compiling with the kernel's own build, the kernel trees and
//!   images klpx reads, and distribution kernels from their packages.
//! - [`objfile`], [`differ`], [`writer`]: reading objects, deciding what changed, writing the
//!   object that holds it.
//! - [`module`]: the livepatch module around it (`make M=`, `.klp` sections, checks).
//! - [`verify`]: booting a kernel in qemu with the module, or checking it without loading.
//! - [`matrix`]: one patch over several architectures.
//! - [`release`]: a matrix's modules as a release: per architecture and kernel release, packages,
//!   a manifest and checksums.
//! - [`machine`]: the operator's side on the machine that runs the kernel (load, list, install).
//! - [`error`], [`files`], [`mapped`], [`setup`]: exit statuses, the user's files, mapped
//!   inputs, and installing what is missing.

pub mod cli;
pub mod cmd;
pub mod livepatch;
pub mod machine;

pub mod patch;

pub mod distro;
pub mod kbuild;
pub mod kernel;

pub mod differ;
pub mod objfile;
pub mod writer;

pub mod module;

pub mod verify;

pub mod matrix;
pub mod release;

pub mod error;
pub mod files;
pub mod mapped;
pub mod setup;
