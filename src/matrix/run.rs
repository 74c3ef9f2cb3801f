//! Running one set of patches for every architecture of a matrix, each in its own output tree, in
//! parallel. The source tree is shared, so it is patched once (under the journal) for all the
//! patched builds together; everything else runs per architecture, and one architecture failing
//! stops nothing else.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use klpx_arch::Arch;

use super::config::{Compiler, Matrix};
use super::progress::Board;
use crate::kbuild::toolchain::Toolchain;
use crate::kernel::cache;
use crate::kernel::tree::KernelTree;
use crate::livepatch::journal;
use crate::livepatch::lock::SourceLock;
use crate::livepatch::pipeline::{
    BuildReport, BuildRequest, Planned, SignWith, default_workdir, plan,
};

/// What the matrix run needs besides the matrix file.
#[derive(Debug, Clone)]
pub struct MatrixRequest {
    pub matrix: Matrix,
    /// The directory of the matrix file (extra fragments are relative to it).
    pub matrix_dir: PathBuf,
    pub patches: Vec<PathBuf>,
    /// Outer context lines a hunk may ignore (GNU patch's fuzz).
    pub fuzz: usize,
    /// Module file name without `.ko`.
    pub name: String,
    /// Modules go to `<output>/<arch>/`.
    pub output: PathBuf,
    pub replace: bool,
    /// Run the architectures one after another instead of together (for comparison).
    pub sequential: bool,
    pub quiet: bool,
    /// Sign every module through its tree's `scripts/sign-file`.
    pub sign: Option<SignWith>,
}

/// Why one architecture failed, keeping whether it was the user's input (exit 2) or klpx and
/// its environment (exit 4) when the error is shown as text.
#[derive(Debug, Clone)]
pub struct ArchFailure {
    pub message: String,
    pub user_error: bool,
}

impl ArchFailure {
    pub fn from_error(e: &anyhow::Error, context: &str) -> ArchFailure {
        ArchFailure {
            message: format!("{context}{e:#}"),
            user_error: e.downcast_ref::<crate::error::UserError>().is_some(),
        }
    }
}

impl std::fmt::Display for ArchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One architecture's result.
#[derive(Debug, Clone)]
pub struct ArchResult {
    pub arch: Arch,
    pub tree: PathBuf,
    pub outcome: Result<BuildReport, ArchFailure>,
    /// This architecture's own time in the livepatch stages (plan to module).
    pub time: Duration,
}

/// The kernel source a matrix names.
pub fn source_dir(m: &Matrix) -> Result<PathBuf> {
    match m.source.strip_prefix("debian:") {
        Some("linux-source-6.12") => cache::debian_source(),
        Some(other) => Err(crate::error::UserError::new(format!(
            "source: debian:{other}: only debian:linux-source-6.12 is known; give a directory instead"
        ))
        .into()),
        None => {
            let p = PathBuf::from(&m.source);
            if p.join("Makefile").is_file() {
                Ok(p)
            } else {
                Err(crate::error::UserError::new(format!(
                    "source: {}: not a kernel source tree",
                    p.display()
                ))
                .into())
            }
        }
    }
}

/// The output tree of one architecture.
fn tree_dir(m: &Matrix, arch: Arch) -> PathBuf {
    let base = if m.output.is_absolute() {
        m.output.clone()
    } else {
        cache::root().join(&m.output)
    };
    base.join(arch.name())
}

/// Runs `f` for every item, together on threads or one after another, keeping the order.
fn each<T: Sync, R: Send>(items: &[T], sequential: bool, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if sequential {
        return items.iter().map(&f).collect();
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = items.iter().map(|i| s.spawn(|| f(i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a matrix thread panicked"))
            .collect()
    })
}

/// Runs the matrix.
pub fn run(req: &MatrixRequest) -> Result<Vec<ArchResult>> {
    let m = &req.matrix;
    let src = source_dir(m)?;
    let arches: Vec<Arch> = m.arches.iter().map(|a| a.arch.0).collect();
    // Jobs shared across the architectures that run together.
    let per_arch = if req.sequential {
        m.jobs
    } else {
        (m.jobs / arches.len()).max(1)
    };
    let board = Board::new(&arches, req.quiet);
    check_patches_apply(req, &src, &board)?;

    // Kernel trees: built once, each in its own output tree.
    let trees: Vec<Result<KernelTree, ArchFailure>> = each(&m.arches, req.sequential, |e| {
        let arch = e.arch.0;
        let mut tree = KernelTree::new(arch, &src, &tree_dir(m, arch), per_arch);
        if let Some(c) = &e.cross {
            tree.cross = c.clone();
        }
        tree.extra_fragments = e.fragments.iter().map(|f| req.matrix_dir.join(f)).collect();
        board.set(arch, "kernel tree (built once)");
        tree.ensure_built()
            .map(|_| tree)
            .map_err(|e| ArchFailure::from_error(&e, "kernel tree: "))
    });

    let root = src.clone();
    // The lock first: a journal is only left over when no klpx holds the lock.
    let _lock = SourceLock::try_take(&root)?;
    recover(&root, &board)?;

    // Plan every architecture.
    let times: Vec<Mutex<Duration>> = arches.iter().map(|_| Mutex::new(Duration::ZERO)).collect();
    // Each architecture's own time in the livepatch stages.
    let timed = |i: usize| &times[i];
    let planned: Vec<Mutex<Option<Result<Planned, ArchFailure>>>> = m
        .arches
        .iter()
        .zip(&trees)
        .enumerate()
        .map(|(i, (e, t))| {
            let p = timing(timed(i), || match t {
                Err(why) => Err(why.clone()),
                Ok(tree) => {
                    board.set(e.arch.0, "plan");
                    plan(&request(req, e, tree, compile_jobs(m, e, per_arch)))
                        .map_err(|e| ArchFailure::from_error(&e, ""))
                }
            });
            Mutex::new(Some(p))
        })
        .collect();
    let slot = |i: usize| planned[i].lock().unwrap_or_else(|p| p.into_inner());

    let idx: Vec<usize> = (0..arches.len()).collect();
    let compile = |which: &'static str, what: &'static str| {
        each(&idx, req.sequential, |&i| {
            let mut slot = slot(i);
            if let Some(Ok(p)) = slot.as_mut() {
                board.set(arches[i], what);
                if let Err(e) = timing(timed(i), || p.compile(which, what)) {
                    *slot = Some(Err(ArchFailure::from_error(&e, "")));
                }
            }
        });
    };
    compile("orig", "original build");

    // The shared tree, patched once for every architecture's patched build.
    let edits = (0..arches.len()).find_map(|i| match slot(i).as_ref() {
        Some(Ok(p)) => Some(p.edits().to_vec()),
        _ => None,
    });
    if let Some(edits) = edits {
        let patched = journal::apply(&root, &edits)?;
        compile("patched", "patched build (tree patched, journaled)");
        patched.undo()?;
    }

    // Diff and module, per architecture.
    let results: Vec<ArchResult> = each(&idx, req.sequential, |&i| {
        let taken = slot(i).take().expect("each architecture finishes once");
        let outcome = match taken {
            Err(why) => Err(why),
            Ok(p) => {
                board.set(arches[i], "diff and module");
                timing(timed(i), || {
                    p.finish().map_err(|e| ArchFailure::from_error(&e, ""))
                })
            }
        };
        board.done(arches[i], &outcome);
        ArchResult {
            arch: arches[i],
            tree: tree_dir(m, arches[i]),
            outcome,
            time: *timed(i).lock().unwrap_or_else(|p| p.into_inner()),
        }
    });
    board.finish();
    Ok(results)
}

/// Runs `f`, adding the time it takes to `total`.
fn timing<R>(total: &Mutex<Duration>, f: impl FnOnce() -> R) -> R {
    let t = Instant::now();
    let r = f();
    *total.lock().unwrap_or_else(|p| p.into_inner()) += t.elapsed();
    r
}

/// Restores what an interrupted run left patched (the caller holds the tree's lock).
fn recover(root: &std::path::Path, board: &Board) -> Result<()> {
    let restored = journal::recover(root)?;
    if restored > 0 {
        board.note(&format!(
            "restored {restored} file(s) of {} left patched by an interrupted run",
            root.display()
        ));
    }
    Ok(())
}

/// Checks that the patches apply to the source before any kernel tree is built: a patch that does
/// not is the user's to fix, and should not cost an hour of kernel builds first.
fn check_patches_apply(req: &MatrixRequest, src: &std::path::Path, board: &Board) -> Result<()> {
    let restored = crate::livepatch::lock::check_patches_apply(src, &req.patches, req.fuzz)?;
    if restored > 0 {
        board.note(&format!(
            "restored {restored} file(s) of {} left patched by an interrupted run",
            src.display()
        ));
    }
    Ok(())
}

/// The compile jobs of one architecture: its share of a distcc farm when it compiles through
/// distcc, else its share of this machine.
fn compile_jobs(m: &Matrix, e: &super::config::ArchEntry, per_arch: usize) -> usize {
    let through_distcc = e
        .launcher
        .as_deref()
        .and_then(|l| std::path::Path::new(l).file_name())
        .is_some_and(|n| n == "distcc");
    match m.farm_jobs {
        Some(farm) if through_distcc => (farm / m.arches.len()).max(per_arch),
        _ => per_arch,
    }
}

/// The build request of one architecture.
fn request(
    req: &MatrixRequest,
    e: &super::config::ArchEntry,
    tree: &KernelTree,
    jobs: usize,
) -> BuildRequest {
    let arch = e.arch.0;
    BuildRequest {
        patches: req.patches.clone(),
        fuzz: req.fuzz,
        srcdir: tree.src.clone(),
        objdir: tree.out.clone(),
        toolchain: Toolchain {
            arch,
            cross: tree.cross.clone(),
            llvm: e.compiler == Compiler::Clang,
            cc: None,
            extra_vars: Vec::new(),
            launcher: e.launcher.clone(),
        },
        vmlinux: None,
        jobs,
        targets: Vec::new(),
        name: req.name.clone(),
        output: req.output.join(arch.name()),
        workdir: default_workdir(&format!("{}-{}", req.name, arch.name())),
        keep_workdir: false,
        replace: req.replace,
        skip_compiler_check: false,
        skip_identity_check: false,
        quiet: true,
        oot: None,
        shipped: None,
        sign: req.sign.clone(),
    }
}
