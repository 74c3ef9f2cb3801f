//! `klpx demo`: the whole path on the built-in default, on a fresh machine.
//!
//! Today it runs up to the object differ: installs what is missing, unpacks Debian's kernel source,
//! configures and prepares a tiny livepatch-capable tree, compiles the object the bundled example patch
//! touches before and after the patch with its recorded kbuild command, and shows what the livepatch
//! would carry.

use std::time::Instant;

use anyhow::{Context, Result};
use klpx_arch::Arch;

use crate::differ::{self, DiffOptions, Exports, Verdict};
use crate::kbuild::objpair::build_pair;
use crate::kernel::cache;
use crate::kernel::tree::KernelTree;
use crate::objfile::ObjectFile;
use crate::patch::source::SourcePatch;
use crate::setup;
use crate::writer::diff_object::{klp_records, write_object};

/// The bundled example: a visible change to what `/proc/cmdline` prints.
const EXAMPLE_PATCH: &str = include_str!("../../examples/proc-cmdline.patch");
const EXAMPLE_OBJECT: &str = "fs/proc/cmdline.o";

/// Runs the demo for `arch` with `jobs` parallel make jobs; returns the exit status.
pub fn run(arch: Arch, jobs: usize) -> Result<i32> {
    let backend = arch.backend();
    let start = Instant::now();
    let mut packages = setup::BUILD_PACKAGES.to_vec();
    packages.push(backend.compiler_package());
    setup::ensure_packages(&packages)?;
    step(&start, "unpacking Debian's linux-source-6.12 (once)");
    let src = cache::debian_source()?;
    let tree = KernelTree::new(
        arch,
        &src,
        &cache::root().join("trees").join(arch.name()),
        jobs,
    );
    step(
        &start,
        &format!(
            "configuring and preparing a tiny {arch} tree in {} (once)",
            tree.out.display()
        ),
    );
    let dropped = tree.ensure_prepared()?;
    for d in dropped {
        eprintln!("klpx: note: Kconfig did not keep {d}");
    }
    step(&start, &format!("building {EXAMPLE_OBJECT} with kbuild"));
    tree.build_objects(&[EXAMPLE_OBJECT])?;
    let patch = SourcePatch::parse("examples/proc-cmdline.patch", EXAMPLE_PATCH)?;
    let dir = cache::root().join("demo").join(arch.name());
    step(
        &start,
        "compiling it before and after the patch with its recorded command + -ffunction-sections -fdata-sections",
    );
    let pair = build_pair(&tree, EXAMPLE_OBJECT, &patch, EXAMPLE_PATCH, &dir)?;

    step(&start, "diffing the two objects");
    let orig_bytes = std::fs::read(&pair.orig).with_context(|| pair.orig.display().to_string())?;
    let patched_bytes =
        std::fs::read(&pair.patched).with_context(|| pair.patched.display().to_string())?;
    let orig = ObjectFile::parse(&pair.orig, &orig_bytes)?;
    let patched = ObjectFile::parse(&pair.patched, &patched_bytes)?;
    let symvers = std::fs::read_to_string(tree.out.join("Module.symvers")).ok();
    let opts = DiffOptions {
        object_name: "vmlinux".to_string(),
        exports: symvers
            .as_deref()
            .map(Exports::from_symvers)
            .unwrap_or_default(),
    };
    let diff = differ::diff(&orig, &patched, &opts)?;
    println!();
    println!("patch:   examples/proc-cmdline.patch ({EXAMPLE_OBJECT}, {arch})");
    for f in &diff.changed_functions {
        println!("changed: {}", f.name);
    }
    for f in &diff.new_functions {
        println!("new:     {f}");
    }
    for k in klp_records(&patched, &diff) {
        println!(
            "livepatch relocation: {}+{:#x} -> {}:{}",
            k.section, k.offset, k.target.object, k.target.symbol
        );
    }
    for r in &diff.refusals {
        println!("refused: {}: {}", r.symbol, r.reason);
    }
    if diff.verdict == Verdict::Patchable {
        let out = dir.join("livepatch-part.o");
        std::fs::write(&out, write_object(&patched, &diff)?)
            .with_context(|| out.display().to_string())?;
        println!(
            "wrote:   {} ({} bytes)",
            out.display(),
            std::fs::metadata(&out)?.len()
        );
    }
    println!(
        "verdict: {:?} in {:.1} s",
        diff.verdict,
        start.elapsed().as_secs_f64()
    );
    println!(
        "(building, loading and checking the module in qemu come with `klpx build` and `klpx verify`)"
    );
    Ok(if diff.verdict == Verdict::Patchable {
        0
    } else {
        1
    })
}

fn step(start: &Instant, what: &str) {
    eprintln!("[{:6.1}s] {what}", start.elapsed().as_secs_f64());
}
