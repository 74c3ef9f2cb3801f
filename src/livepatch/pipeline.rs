//! The `klpx build` pipeline: plan → compile both builds of each affected object → diff → module.
//! Takes plain values ([`BuildRequest`]); the command line lives in `cmd::build`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use rayon::prelude::*;
use serde::Serialize;

use super::affected::{AffectedObject, affected_objects, check_edits};
use super::journal;
use super::lineno::fix_line_numbers;
use super::progress::Stages;
use super::workdir::WorkDir;
use crate::differ::{self, DiffOptions, Exports, OutTarget, Verdict};
use crate::error::{Unpatchable, UserError};
use crate::kbuild::cmdfile::cmd_path;
use crate::kbuild::compile::{livepatch_cflags, recompile_with};
use crate::kbuild::includes::including_units;
use crate::kbuild::links::LinkMap;
use crate::kbuild::objcache::ObjectCache;
use crate::kbuild::prepared::compile_objects;
use crate::kbuild::toolchain::{Toolchain, check_compiler};
use crate::kernel::identity::{KernelImage, first_difference};
use crate::kernel::units::CompileUnits;
use crate::livepatch::lock::SourceLock;
use crate::module::check::check_module;
use crate::module::klp_rela::{read_side_tables, write_klp_sections};
use crate::module::link::{LinkRun, ModuleLink};
use crate::module::reloc_check::check_relocations;
use crate::module::source::{
    CALLBACK_PREFIXES, FuncSpec, ModuleSpec, ObjectSpec, kbuild_file, module_source, write_headers,
};
use crate::module::sympos::SymbolTable;
use crate::objfile::ObjectFile;
use crate::patch::source::{FileEdit, SourcePatch, plan_edits};
use crate::writer::diff_object::{ALIAS_PREFIX, klp_records, write_object_aliased};

/// Everything `klpx build` needs, as plain values.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub patches: Vec<PathBuf>,
    /// Outer context lines a hunk may ignore (GNU patch's fuzz).
    pub fuzz: usize,
    /// The kernel source tree the patches apply to.
    pub srcdir: PathBuf,
    /// The built output tree (`O=`), or the source tree for in-tree builds.
    pub objdir: PathBuf,
    pub toolchain: Toolchain,
    /// The target's vmlinux for symbol positions (default: the tree's).
    pub vmlinux: Option<PathBuf>,
    pub jobs: usize,
    /// Livepatch objects to consider (`vmlinux`, module names); empty means all.
    pub targets: Vec<String>,
    /// Module file name without `.ko`.
    pub name: String,
    /// Directory the module is written to.
    pub output: PathBuf,
    /// Where intermediate files go.
    pub workdir: PathBuf,
    /// Keep `workdir` afterwards (`--debug`, `--skip-cleanup`).
    pub keep_workdir: bool,
    pub replace: bool,
    pub skip_compiler_check: bool,
    /// Build for a shipped kernel without proving the rebuilt originals are its functions.
    pub skip_identity_check: bool,
    pub quiet: bool,
    /// An out-of-tree module to patch instead of the kernel tree: its built `.ko` and its source
    /// directory (which the patches apply to).
    pub oot: Option<OotModule>,
    /// Sign the module with this key and certificate, through the tree's `scripts/sign-file`.
    pub sign: Option<SignWith>,
    /// Set when `objdir` is a prepared tree of a kernel that was never built here (a
    /// distribution's): kbuild compiles the edited objects once before planning, and modules come
    /// from the shipped kernel.
    pub shipped: Option<ShippedKernel>,
}

/// A module signing key and its certificate (PEM), as `scripts/sign-file` takes them.
#[derive(Debug, Clone)]
pub struct SignWith {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// Signs `module` with the kernel's own `scripts/sign-file` and the hash the tree's config names
/// (`CONFIG_MODULE_SIG_HASH`), in `scratch`; returns the signed bytes.
fn sign_module(objdir: &Path, sign: &SignWith, scratch: &Path, module: &[u8]) -> Result<Vec<u8>> {
    let tool = objdir.join("scripts/sign-file");
    if !tool.is_file() {
        return Err(UserError::new(format!(
            "{}: no scripts/sign-file (the kernel has no CONFIG_MODULE_SIG); build without \
             --sign-key",
            objdir.display()
        ))
        .into());
    }
    let config = std::fs::read_to_string(objdir.join(".config")).unwrap_or_default();
    let hash = config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_MODULE_SIG_HASH="))
        .map(|h| h.trim_matches('"').to_string())
        .unwrap_or_else(|| "sha256".to_string());
    std::fs::write(scratch, module).with_context(|| format!("writing {}", scratch.display()))?;
    let out = duct::cmd!(&tool, &hash, &sign.key, &sign.cert, scratch)
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        .run()
        .context("running scripts/sign-file")?;
    if !out.status.success() {
        return Err(UserError::new(format!(
            "signing the module with {} and {} failed: {}",
            sign.key.display(),
            sign.cert.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
        .into());
    }
    Ok(std::fs::read(scratch)?)
}

/// The shipped kernel behind a prepared tree.
#[derive(Debug, Clone)]
pub struct ShippedKernel {
    /// The shipped modules, `lib/modules/<release>` (with `modules.order`), when known.
    pub modules: Option<PathBuf>,
    /// The kernel's System.map, for symbol positions when there is no vmlinux with symbols.
    pub system_map: Option<PathBuf>,
    /// The vmlinux taken out of the kernel's boot image (stripped: code by address), for the
    /// identity check when there is no vmlinux with symbols.
    pub image_vmlinux: Option<PathBuf>,
}

/// An out-of-tree module built with `make -C <objdir> M=<src>`.
#[derive(Debug, Clone)]
pub struct OotModule {
    pub ko: PathBuf,
    pub src: PathBuf,
}

/// What happened to one affected object.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectReport {
    pub object: String,
    pub target: String,
    pub verdict: Verdict,
    pub changed_functions: Vec<String>,
    pub new_functions: Vec<String>,
    pub refusals: Vec<String>,
}

/// How a build ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Module,
    NoChange,
    Refused,
}

/// The closing report.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub outcome: Outcome,
    pub objects: Vec<ObjectReport>,
    pub module: Option<PathBuf>,
    pub klp_relocations: usize,
    /// Stage name → seconds.
    pub stages: Vec<(String, f64)>,
    /// klpx's own peak resident memory (VmHWM), in KiB; compilers and make are separate processes.
    pub peak_rss_kib: u64,
    /// Whether the target kernel can load livepatches at all (`CONFIG_LIVEPATCH`); when not (Linux
    /// 6.12 on arm64), the module is built and checked but cannot be loaded.
    pub loadable: bool,
    /// The release the module is built for (its vermagic): the tree's `kernel.release`.
    pub kernel_release: Option<String>,
    /// Original objects copied from the object cache instead of compiled.
    pub cached_objects: usize,
    /// How the module was linked: `make`, `replayed` (kbuild's recorded link commands, when only
    /// the parts' contents changed since the last build of the module) or `kept`.
    pub link: Option<LinkRun>,
    pub notes: Vec<String>,
}

/// Runs the pipeline: locks the tree the patches apply to, restores a journal left by a killed run,
/// plans, compiles the original build, patches the tree under a journal for the patched build, and
/// finishes with the diff and the module.
pub fn build(req: &BuildRequest) -> Result<BuildReport> {
    let root = patch_root(req);
    // The lock first: a journal is only left over when no klpx holds the lock.
    let _lock = SourceLock::try_take(root)?;
    let restored = journal::recover(root)?;
    if restored > 0 && !req.quiet {
        eprintln!(
            "klpx: restored {restored} file(s) of {} left patched by an interrupted run",
            root.display()
        );
    }
    let mut planned = plan(req)?;
    planned.compile("orig", "original build")?;
    planned.compile_patched()?;
    let cached = planned.cached_objects;
    let mut report = planned.finish()?;
    report.cached_objects = cached;
    Ok(report)
}

/// The tree the patches apply to: the kernel source, or an out-of-tree module's directory.
pub fn patch_root(req: &BuildRequest) -> &Path {
    req.oot.as_ref().map_or(&req.srcdir, |o| &o.src)
}

/// A build planned and ready to compile: what [`plan`] found, carried through the later phases.
pub struct Planned {
    req: BuildRequest,
    stages: Stages,
    notes: Vec<String>,
    /// The patched files' contents, with `#line` fixes, as the patched build sees them.
    edits: Vec<FileEdit>,
    links: LinkMap,
    objects: Vec<AffectedObject>,
    dirs: Vec<PathBuf>,
    flags: Vec<String>,
    loadable: bool,
    /// Original objects the object cache provided.
    cached_objects: usize,
    /// Removes the work directory when the build is over, unless it is to be kept.
    _workdir: WorkDir,
}

/// Plans a build without taking the tree's lock (the caller holds it): reads the patches, refuses
/// what cannot be patched, finds the affected objects, checks the compiler, prepares the work
/// directory.
pub fn plan(req: &BuildRequest) -> Result<Planned> {
    let mut stages = Stages::new(req.quiet);
    let mut notes = Vec::new();
    stages.start("plan", "reading the patches and the tree");
    let patch_root = patch_root(req);
    let patches: Vec<SourcePatch> = req
        .patches
        .iter()
        .map(|p| SourcePatch::load(p))
        .collect::<Result<_, _>>()?;
    let edits = plan_edits(&patches, patch_root, req.fuzz)?;
    for n in patches
        .iter()
        .flat_map(|p| p.notes.iter().cloned())
        .chain(edits.iter().flat_map(FileEdit::notes))
    {
        stages.note(&n);
        notes.push(n);
    }
    check_edits(&edits, req.oot.is_none())?;
    let printed = notes.len();
    let mut links = match &req.shipped {
        Some(shipped) => prepared_links(req, shipped, &edits, &mut stages, &mut notes)?,
        None => LinkMap::load(&req.objdir)?,
    };
    let mut targets = req.targets.clone();
    if let Some(o) = &req.oot {
        targets = vec![links.add_module(&o.ko)?];
    }
    let objects = affected_objects(
        if req.oot.is_some() {
            patch_root
        } else {
            &req.objdir
        },
        &req.objdir,
        &edits,
        &links,
        &targets,
        &mut notes,
    )?;
    for n in &notes[printed..] {
        stages.note(n);
    }
    let loadable = std::fs::read_to_string(req.objdir.join(".config"))
        .map(|c| c.lines().any(|l| l == "CONFIG_LIVEPATCH=y"))
        .unwrap_or(false);
    if !loadable {
        let n = format!(
            "{} has no CONFIG_LIVEPATCH{}: the module is built and checked, but this kernel cannot \
             load it",
            req.objdir.display(),
            if req.toolchain.arch.backend().livepatch_loadable() {
                String::new()
            } else {
                format!(" (Linux 6.12 has none on {})", req.toolchain.arch)
            }
        );
        stages.note(&n);
        notes.push(n);
    }
    if objects.is_empty() {
        return Err(UserError::new(format!(
            "{}: the patch changes no object built in {}",
            req.patches[0].display(),
            req.objdir.display()
        ))
        .into());
    }
    if !req.skip_compiler_check {
        let command = req.toolchain.rewrite_command(&objects[0].cmd.command);
        check_compiler(&req.objdir, &req.toolchain.compiler_of(&command))?;
    }

    // Compile both builds.
    let work = &req.workdir;
    let workdir = WorkDir::create(work, req.keep_workdir)?;
    let include = work.join("include");
    write_headers(&include)?;
    let mut flags: Vec<String> = livepatch_cflags(req.toolchain.arch.backend())
        .into_iter()
        .map(str::to_string)
        .collect();
    flags.push(format!("-I{}", include.display()));
    let dirs: Vec<PathBuf> = (0..objects.len())
        .map(|i| work.join("objects").join(i.to_string()))
        .collect();
    for d in &dirs {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    Ok(Planned {
        req: req.clone(),
        stages,
        notes,
        edits: with_line_fixes(&edits),
        links,
        objects,
        dirs,
        flags,
        loadable,
        cached_objects: 0,
        _workdir: workdir,
    })
}

/// The links of a prepared tree, after kbuild compiled, once, every object the edits may affect:
/// each edited `.c` file's object, and where a header (or a `.c` file another one includes) is
/// edited, every translation unit that includes it. A compiled object counts only when the shipped
/// kernel has it: a compile unit of vmlinux's debug information, or an object of a module.
fn prepared_links(
    req: &BuildRequest,
    shipped: &ShippedKernel,
    edits: &[FileEdit],
    stages: &mut Stages,
    notes: &mut Vec<String>,
) -> Result<LinkMap> {
    stages.start("kbuild", "compiling the edited objects once with kbuild");
    let object_of = |c: &str| format!("{}.o", c.trim_end_matches(".c"));
    let units = match (&req.vmlinux, &shipped.system_map) {
        (Some(vmlinux), _) => {
            let units = CompileUnits::read(vmlinux)?;
            if units.count == 0 {
                notes.push(format!(
                    "{}: no debug information; which objects are the kernel's is judged by its \
                     symbol table's file blocks",
                    vmlinux.display()
                ));
            }
            units
        }
        (None, Some(map)) => {
            notes.push(format!(
                "{}: no vmlinux; which objects are the kernel's is judged by their symbols' \
                 names{}",
                map.display(),
                if shipped.image_vmlinux.is_some() {
                    ", and the identity check reads the code in the boot image (--image)"
                } else {
                    ", and the identity check is skipped (give --image)"
                }
            ));
            CompileUnits::from_system_map(map)?
        }
        (None, None) => {
            return Err(UserError::new(
                "a prepared tree needs the kernel's vmlinux (-v) or System.map (--system-map)",
            )
            .into());
        }
    };
    let links_now = || {
        LinkMap::prepared(
            &req.srcdir,
            &req.objdir,
            shipped.modules.as_deref(),
            &|s, o| units.has(s, o),
        )
    };
    let own: Vec<String> = edits
        .iter()
        .filter(|e| e.rel.ends_with(".c") && e.before.is_some())
        .map(|e| object_of(&e.rel))
        .collect();
    let mut not_built: HashSet<String> = HashSet::new();
    if let Err(e) = compile_objects(
        &req.srcdir,
        &req.objdir,
        &req.toolchain,
        req.jobs,
        &own,
        false,
    ) {
        // A file this config does not build may not even compile for it (kernel/cpu_pm.c on
        // x86_64): that is no error when the kernel has no such unit; the note says so.
        let failed: Vec<&String> = own
            .iter()
            .filter(|o| !cmd_path(&req.objdir, o).is_file())
            .collect();
        let source = |o: &str| format!("{}.c", o.trim_end_matches(".o"));
        if units.count == 0
            || failed.is_empty()
            || failed.iter().any(|o| units.contains(&source(o)))
        {
            return Err(e);
        }
        for o in failed {
            not_built.insert(source(o));
            notes.push(format!(
                "{}: not part of this kernel (no compile unit of vmlinux), and kbuild cannot \
                 compile it for this config",
                source(o)
            ));
        }
    }
    let links = links_now()?;
    let included: Vec<String> = edits
        .iter()
        .filter(|e| e.rel.ends_with(".h") || !links.owner.contains_key(&object_of(&e.rel)))
        .filter(|e| !not_built.contains(&e.rel))
        .map(|e| e.rel.clone())
        .collect();
    if included.is_empty() {
        return Ok(links);
    }
    let arch_dir = req.toolchain.arch.backend().kernel_arch();
    let candidates = including_units(&req.srcdir, arch_dir, &included);
    notes.push(if candidates.is_empty() {
        format!(
            "{}: not part of this kernel (no compile unit of vmlinux, no module object) and \
             included by no translation unit",
            included.join(", ")
        )
    } else {
        format!(
            "{} may be included by {} translation unit(s); kbuild compiles each once in {}",
            included.join(", "),
            candidates.len(),
            req.objdir.display()
        )
    });
    let objects: Vec<String> = candidates.iter().map(|c| object_of(c)).collect();
    // Keep going: a candidate the config does not build may not compile at all.
    compile_objects(
        &req.srcdir,
        &req.objdir,
        &req.toolchain,
        req.jobs,
        &objects,
        true,
    )?;
    for c in &candidates {
        if units.count > 0 && units.contains(c) && !cmd_path(&req.objdir, &object_of(c)).is_file() {
            return Err(UserError::new(format!(
                "{c}: part of the kernel, but kbuild could not compile it in {}",
                req.objdir.display()
            ))
            .into());
        }
    }
    Ok(links_now()?)
}

impl Planned {
    /// The files as the patched build must see them.
    pub fn edits(&self) -> &[FileEdit] {
        &self.edits
    }

    /// Compiles every affected object into `<which>.o`, in parallel up to the request's jobs.
    pub fn compile(&mut self, which: &str, what: &str) -> Result<()> {
        let req = &self.req;
        self.stages.start(
            if which == "orig" {
                "compile"
            } else {
                "compile-patched"
            },
            &format!("{} object(s), {what}, -j{}", self.objects.len(), req.jobs),
        );
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(req.jobs.max(1))
            .build()
            .context("starting the compile pool")?;
        // The original side of an object is the same in every build of the tree: kept between
        // builds, so a second build compiles only the patched side.
        let cache = (which == "orig").then(|| ObjectCache::for_tree(&req.objdir));
        let cached = pool.install(|| {
            self.objects
                .par_iter()
                .zip(&self.dirs)
                .map(|(o, d)| {
                    let out = d.join(format!("{which}.o"));
                    let keyed = cache.as_ref().and_then(|c| {
                        Some((c, c.key(&o.cmd, &flags, &req.toolchain, &req.workdir)?))
                    });
                    if let Some((c, k)) = &keyed
                        && c.fetch(k, &out)
                    {
                        return Ok(true);
                    }
                    recompile_with(&req.objdir, &o.cmd, &out, &flags, Some(&req.toolchain))
                        .map_err(|e| {
                            anyhow::Error::from(UserError::new(format!(
                                "{} ({which} build): {e:#}",
                                o.object
                            )))
                        })?;
                    if let Some((c, k)) = &keyed {
                        c.store(k, &out);
                    }
                    Ok(false)
                })
                .collect::<Result<Vec<bool>>>()
        })?;
        if let Some(c) = &cache {
            c.trim();
        }
        let hits = cached.iter().filter(|&&h| h).count();
        if hits > 0 {
            self.notes.push(format!(
                "{hits} of {} original object(s) from the object cache (unchanged sources, headers and command)",
                cached.len()
            ));
        }
        self.cached_objects += hits;
        Ok(())
    }

    /// The patched build: patches the tree under a journal, compiles, and restores the tree.
    pub fn compile_patched(&mut self) -> Result<()> {
        let root = patch_root(&self.req).to_path_buf();
        let patched = journal::apply(&root, &self.edits)?;
        let built = self.compile("patched", "patched build (tree patched, journaled)");
        patched.undo()?;
        built
    }

    /// Diffs each object's two builds and, when the change is patchable, builds and checks the
    /// module; the report names the kernel release the module is for.
    pub fn finish(self) -> Result<BuildReport> {
        let release =
            std::fs::read_to_string(self.req.objdir.join("include/config/kernel.release"))
                .ok()
                .map(|r| r.trim().to_string());
        let mut report = self.diff_and_link()?;
        report.kernel_release = release;
        Ok(report)
    }

    fn diff_and_link(self) -> Result<BuildReport> {
        let Planned {
            req,
            mut stages,
            notes,
            links,
            objects,
            dirs,
            loadable,
            _workdir,
            ..
        } = self;
        let req = &req;
        // Diff.
        stages.start("diff", "comparing each object's two builds");
        let symvers =
            std::fs::read_to_string(req.objdir.join("Module.symvers")).unwrap_or_default();
        let exports = Exports::from_symvers(&symvers);
        let exported: HashSet<String> = exports.symbols.clone().unwrap_or_default();
        let config = std::fs::read_to_string(req.objdir.join(".config")).unwrap_or_default();
        let objtool_at_link = req.toolchain.arch.backend().objtool_at_module_link(&config);
        let bytes = read_pairs(&dirs)?;
        let identity_image: Option<PathBuf> = req
            .shipped
            .as_ref()
            .and_then(|s| req.vmlinux.clone().or_else(|| s.image_vmlinux.clone()));
        let compare_shipped = identity_image.is_some() && !req.skip_identity_check;
        let Diffed {
            reports,
            mut diffs,
            identity,
            refused,
        } = diff_objects(
            &objects,
            &dirs,
            &bytes,
            &exports,
            compare_shipped,
            objtool_at_link,
        )?;
        let units = Units::of(diffs.iter().map(|(pat, _)| pat));
        let CrossLinked {
            parts,
            mut specs,
            pending_funcs,
        } = cross_link(&mut diffs, &objects)?;
        let ended = if refused {
            Some(Outcome::Refused)
        } else if parts.is_empty() {
            Some(Outcome::NoChange)
        } else {
            None
        };
        if let Some(outcome) = ended {
            stages.finish();
            return Ok(report(loadable, outcome, reports, None, 0, &stages, notes));
        }

        // Module.
        stages.start("module", "generating and linking the livepatch module");
        let vmlinux = req
            .vmlinux
            .clone()
            .unwrap_or_else(|| req.objdir.join("vmlinux"));
        let tables = symbol_tables(req, &links, &vmlinux, specs.keys())?;
        place_functions(&mut specs, pending_funcs, &tables, &units)?;
        let spec = module_spec(req, specs, &parts, &exports)?;
        let (linked, link) = link_module(req, &objects, &spec, &parts)?;
        if !identity.is_empty() {
            stages.start(
                "identity",
                "comparing the rebuilt original functions with the shipped kernel's",
            );
            let code_of = identity_image.unwrap_or(vmlinux);
            check_identity(
                req,
                &objects,
                &identity,
                &code_of,
                &tables["vmlinux"],
                &units,
            )?;
        }

        stages.start("klp-sections", "writing .klp.rela sections into the module");
        let (finished, klp_relocations) =
            livepatch_sections(req, &linked, &tables, &units, &exported).inspect_err(|e| {
                if e.is::<Unpatchable>() {
                    stages.finish();
                }
            })?;
        let out = write_module(req, finished)?;
        stages.finish();
        let mut report = report(
            loadable,
            Outcome::Module,
            reports,
            Some(out),
            klp_relocations,
            &stages,
            notes,
        );
        report.link = Some(link);
        Ok(report)
    }
}

/// Each object's two builds, as the compile stages left them (`orig.o`, `patched.o`).
fn read_pairs(dirs: &[PathBuf]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    dirs.iter()
        .map(|d| -> Result<_> {
            let read = |f: &str| {
                let path = d.join(f);
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
            };
            Ok((read("orig.o")?, read("patched.o")?))
        })
        .collect()
}

/// Gives each patched function its place in its livepatch object's spec, with its symbol position
/// in the target's symbol table (`old_sympos`, told apart by the function's compile unit).
fn place_functions(
    specs: &mut BTreeMap<String, ObjectSpec>,
    pending: Vec<(String, String, String, Option<String>)>,
    tables: &HashMap<String, SymbolTable>,
    units: &Units,
) -> Result<()> {
    for (target, old, alias, source) in pending {
        let unit = units.unit_of(&source, &old);
        let pos = tables[&target]
            .sympos(&old, unit.as_ref().map(|(f, l)| (f.as_str(), *l)))
            .map_err(UserError::new)?;
        specs.entry(target).or_default().funcs.push(FuncSpec {
            old_name: old,
            new_symbol: alias,
            sympos: pos,
        });
    }
    Ok(())
}

/// Writes the finished module (signed first, with `--sign`) into the output directory; returns
/// its path.
fn write_module(req: &BuildRequest, finished: Vec<u8>) -> Result<PathBuf> {
    std::fs::create_dir_all(&req.output)
        .with_context(|| format!("creating {}", req.output.display()))?;
    let out = req.output.join(format!("{}.ko", req.name));
    let finished = match &req.sign {
        Some(sign) => sign_module(&req.objdir, sign, &req.workdir.join("signed.ko"), &finished)?,
        None => finished,
    };
    crate::files::write_whole(&out, &finished)?;
    Ok(out)
}

/// The symbol table of every livepatch object the module names: vmlinux's (from `vmlinux`, or the
/// shipped kernel's System.map), and each module's `.ko`.
fn symbol_tables<'a>(
    req: &BuildRequest,
    links: &LinkMap,
    vmlinux: &Path,
    names: impl Iterator<Item = &'a String>,
) -> Result<HashMap<String, SymbolTable>> {
    let mut tables = HashMap::new();
    let system_map = req.shipped.as_ref().and_then(|s| s.system_map.as_ref());
    for name in names {
        let table = if name == "vmlinux" {
            match (&req.vmlinux, system_map) {
                (None, Some(map)) => SymbolTable::from_system_map(map)?,
                _ => SymbolTable::load(vmlinux, false)?,
            }
        } else {
            let ko = links.modules.get(name).ok_or_else(|| {
                UserError::new(format!(
                    "module {name} is not built in {}",
                    req.objdir.display()
                ))
            })?;
            SymbolTable::load(&req.objdir.join(ko), true)?
        };
        tables.insert(name.clone(), table);
    }
    Ok(tables)
}

/// Each translation unit's local symbol names, by its source file name: what tells a local target
/// apart from same-named locals of other files when its symbol position is looked up.
struct Units(HashMap<String, HashSet<String>>);

impl Units {
    fn of<'a, 'd: 'a>(objects: impl Iterator<Item = &'a ObjectFile<'d>>) -> Units {
        let mut units: HashMap<String, HashSet<String>> = HashMap::new();
        for pat in objects {
            if let Some(src) = pat.source_name {
                let set = units.entry(src.to_string()).or_default();
                for sym in &pat.symbols {
                    if !sym.global && sym.section.is_some() && !sym.name.is_empty() {
                        set.insert(sym.name.to_string());
                    }
                }
            }
        }
        Units(units)
    }

    /// The unit of `source` when `name` is one of its locals, for [`SymbolTable::sympos`].
    fn unit_of(&self, source: &Option<String>, name: &str) -> Option<(String, &HashSet<String>)> {
        let s = source.as_deref()?;
        let locals = self.0.get(s)?;
        locals.contains(name).then(|| (s.to_string(), locals))
    }
}

/// The identity stage: each changed function's original, as kbuild compiled it, and each function
/// the module reaches by livepatch relocation where the object defines it, must be byte for byte
/// the code of the shipped kernel `code_of` (relocated fields and jump-label sites aside).
fn check_identity(
    req: &BuildRequest,
    objects: &[AffectedObject],
    identity: &[(usize, Vec<String>, Vec<String>)],
    code_of: &Path,
    table: &SymbolTable,
    units: &Units,
) -> Result<()> {
    let data = crate::mapped::MappedFile::open(code_of)?;
    let image = KernelImage::parse(&data)
        .map_err(|e| UserError::new(format!("{}: {e}", code_of.display())))?;
    for (i, changed, reached) in identity {
        // kbuild's own compile of the object, with the kernel's flags only: klpx's build
        // adds its own (one section per function, and on some architectures code-model
        // flags that change the code), so it is not the one to compare.
        let path = req.objdir.join(&objects[*i].object);
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let orig = ObjectFile::parse(&path, &data)?;
        let source = orig.source_name.map(str::to_string);
        let is_function_here = |n: &str| {
            orig.symbols.iter().any(|s| {
                s.name == n
                    && s.kind == crate::objfile::SymKind::Func
                    && s.section.is_some()
                    && !s.weak
            })
        };
        // Reached functions of other files are not in this object, and a weak default
        // here may be overridden elsewhere (the livepatch relocation resolves to the
        // kernel's definition, `arch_dup_task_struct` of x86): neither is compared.
        let names = changed
            .iter()
            .chain(reached.iter().filter(|n| is_function_here(n)));
        for name in names {
            let unit = units.unit_of(&source, name);
            let pos = table
                .sympos(name, unit.as_ref().map(|(f, l)| (f.as_str(), *l)))
                .map_err(UserError::new)?;
            let size = orig
                .symbols
                .iter()
                .find(|s| s.name == name.as_str() && s.section.is_some())
                .map_or(0, |s| s.size);
            let shipped = table
                .address(name, pos as usize)
                .and_then(|a| image.code(a, size));
            let differs = match shipped {
                None => Some(0),
                Some(code) => first_difference(&orig, name, code).map_err(UserError::new)?,
            };
            if let Some(at) = differs {
                return Err(UserError::new(format!(
                    "{}: {name}: the rebuilt original differs from the shipped kernel's at \
                     +{at:#x} ({}): the source, config or compiler is not the kernel's \
                     (--skip-identity-check builds anyway)",
                    objects[*i].object,
                    code_of.display()
                ))
                .into());
            }
        }
    }
    Ok(())
}

/// The generated module's description: its name, mode, the functions of each livepatch object, and
/// the symbol namespaces whose exports its parts use.
fn module_spec(
    req: &BuildRequest,
    specs: BTreeMap<String, ObjectSpec>,
    parts: &[(usize, Vec<u8>)],
    exports: &Exports,
) -> Result<ModuleSpec> {
    // Namespaces of the exports the parts use.
    let mut imports = std::collections::BTreeSet::new();
    for (_, bytes) in parts {
        let part = ObjectFile::parse(Path::new("part.o"), bytes)?;
        for sym in part.symbols.iter().filter(|s| s.is_undefined()) {
            if let Some(ns) = exports.namespaces.get(sym.name) {
                imports.insert(ns.clone());
            }
        }
    }
    let spec = ModuleSpec {
        imports,
        name: req.name.clone(),
        replace: req.replace,
        objects: specs,
        description: format!(
            "livepatch built by klpx from {}",
            req.patches
                .iter()
                .map(|p| p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Ok(spec)
}

/// Writes the module's source, Kbuild file and parts into the module directory and links it with
/// the tree's own kbuild; returns the linked `.ko` and how it was linked.
fn link_module(
    req: &BuildRequest,
    objects: &[AffectedObject],
    spec: &ModuleSpec,
    parts: &[(usize, Vec<u8>)],
) -> Result<(Vec<u8>, LinkRun)> {
    // The module directory outlives the build (beside the tree's object cache, one per module
    // name) unless the work directory is kept for inspection: the next build of the patch finds
    // its last link there (module::link).
    let mdir = if req.keep_workdir {
        req.workdir.join("module")
    } else {
        crate::kbuild::objcache::dir_of(&req.objdir)
            .join("modules")
            .join(&req.name)
    };
    std::fs::create_dir_all(&mdir).with_context(|| format!("creating {}", mdir.display()))?;
    let source = module_source(spec);
    let kbuild = kbuild_file(&req.name, parts.len());
    write_if_changed(&mdir.join("klpx-livepatch.c"), source.as_bytes())?;
    write_if_changed(&mdir.join("Kbuild"), kbuild.as_bytes())?;
    for (n, (_, bytes)) in parts.iter().enumerate() {
        write_if_changed(&mdir.join(format!("part-{n}.o_shipped")), bytes)?;
        // With MODVERSIONS, modpost reads each object's CRCs from its `.cmd` file (`#SYMVER`
        // lines), which kbuild's copy of a shipped object does not write. The parts export
        // nothing: an empty record says so.
        write_if_changed(
            &mdir.join(format!(".part-{n}.o.cmd")),
            format!("savedcmd_part-{n}.o := klpx diff\n").as_bytes(),
        )?;
    }
    let clang_tree = std::fs::read_to_string(req.objdir.join(".config"))
        .map(|c| c.lines().any(|l| l == "CONFIG_CC_IS_CLANG=y"))
        .unwrap_or(false);
    let command = req.toolchain.rewrite_command(&objects[0].cmd.command);
    let vars = req.toolchain.make_vars_for(&command, clang_tree);
    let part_bytes: Vec<&[u8]> = parts.iter().map(|(_, b)| b.as_slice()).collect();
    let run = ModuleLink {
        objdir: &req.objdir,
        dir: &mdir,
        name: &req.name,
        generated: &[&source, &kbuild],
        parts: &part_bytes,
        vars: &vars,
        jobs: req.jobs,
    }
    .run()?;
    let linked_path = mdir.join(format!("{}.ko", req.name));
    let linked = std::fs::read(&linked_path)
        .with_context(|| format!("reading {}", linked_path.display()))?;
    Ok((linked, run))
}

/// Writes `bytes` to `path` unless it already holds them, so that make sees an unchanged file as
/// up to date.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Turns the linked module's side tables into `.klp.rela` sections and `.klp.sym` symbols, then
/// checks the result: every symbol resolves, and every relocation the kernel will apply can be
/// applied right (a refusal otherwise). Returns the module and its livepatch relocation count.
fn livepatch_sections(
    req: &BuildRequest,
    linked: &[u8],
    tables: &HashMap<String, SymbolTable>,
    units: &Units,
    exported: &HashSet<String>,
) -> Result<(Vec<u8>, usize)> {
    let side = read_side_tables(linked).context("reading klpx's side tables in the module")?;
    let finished = write_klp_sections(linked, &side.relocs, &|r| {
        let t = tables
            .get(&r.object)
            .ok_or_else(|| anyhow!("no symbol table for {}", r.object))?;
        let unit = units.unit_of(&r.source, &r.symbol);
        t.sympos(&r.symbol, unit.as_ref().map(|(f, l)| (f.as_str(), *l)))
            .map_err(|e| UserError::new(e).into())
    })?;
    let backend = req.toolchain.arch.backend();
    let check = check_module(
        &req.name,
        &finished,
        exported,
        &|n| backend.is_module_provided(n),
        tables,
    )?;
    if !check.problems.is_empty() {
        return Err(anyhow!(
            "the module failed its checks:\n{}",
            check.problems.join("\n")
        ));
    }
    let bad = check_relocations(&req.name, &finished, backend, tables)?;
    if !bad.is_empty() {
        return Err(Unpatchable(format!(
            "{} relocation(s) of the module cannot be applied right; refusing it:\n{}",
            bad.len(),
            bad.join("\n")
        ))
        .into());
    }
    Ok((finished, side.relocs.len()))
}

/// What the diff stage found, object by object.
struct Diffed<'d> {
    reports: Vec<ObjectReport>,
    /// Each object's patched build and its diff.
    diffs: Vec<(ObjectFile<'d>, differ::Diff)>,
    /// Objects whose functions must be proven the shipped kernel's: (object, changed functions,
    /// functions the module reaches by livepatch relocation).
    identity: Vec<(usize, Vec<String>, Vec<String>)>,
    refused: bool,
}

/// The diff stage: each object's two builds (`bytes`, read from `dirs`), diffed; `compare_shipped`
/// asks for the functions the identity stage compares with the shipped kernel.
fn diff_objects<'d>(
    objects: &[AffectedObject],
    dirs: &[PathBuf],
    bytes: &'d [(Vec<u8>, Vec<u8>)],
    exports: &Exports,
    compare_shipped: bool,
    objtool_at_module_link: bool,
) -> Result<Diffed<'d>> {
    let mut reports = Vec::new();
    let mut refused = false;
    let mut diffs = Vec::with_capacity(objects.len());
    // Objects whose changed functions must be proven the shipped kernel's: (object, names),
    // against the code of the vmlinux with symbols, or of the one inside the boot image.
    // The second list holds the functions the module reaches by livepatch relocation: where
    // the object defines them, they are compared too.
    let mut identity: Vec<(usize, Vec<String>, Vec<String>)> = Vec::new();
    for (i, (o, (ob, pb))) in objects.iter().zip(bytes).enumerate() {
        let orig = ObjectFile::parse(&dirs[i].join("orig.o"), ob)?;
        let pat = ObjectFile::parse(&dirs[i].join("patched.o"), pb)?;
        let d = differ::diff(
            &orig,
            &pat,
            &DiffOptions {
                object_name: o.target.clone(),
                exports: exports.clone(),
                count_line_changes: false,
                objtool_at_module_link,
            },
        )?;
        reports.push(ObjectReport {
            object: o.object.clone(),
            target: o.target.clone(),
            verdict: d.verdict,
            changed_functions: d.changed_functions.iter().map(|f| f.name.clone()).collect(),
            new_functions: d.new_functions.clone(),
            refusals: d
                .refusals
                .iter()
                .map(|r| format!("{}: {}", r.symbol, r.reason))
                .collect(),
        });
        refused |= d.verdict == Verdict::Unpatchable;
        if compare_shipped && o.target == "vmlinux" {
            let changed: Vec<String> = d.changed_functions.iter().map(|f| f.name.clone()).collect();
            let mut reached: Vec<String> = d
                .selection
                .pieces
                .iter()
                .flat_map(|p| &p.relocs)
                .filter_map(|r| match &r.target {
                    OutTarget::Klp(t) if t.object == "vmlinux" => Some(t.symbol.clone()),
                    _ => None,
                })
                .filter(|n| !changed.contains(n))
                .collect();
            reached.sort();
            reached.dedup();
            identity.push((i, changed, reached));
        }
        diffs.push((pat, d));
    }
    Ok(Diffed {
        reports,
        diffs,
        identity,
        refused,
    })
}

/// The parts of the module, one per patchable object, and what the generated source will name.
struct CrossLinked {
    /// (object index, the object written for the module link).
    parts: Vec<(usize, Vec<u8>)>,
    specs: BTreeMap<String, ObjectSpec>,
    /// (livepatch object, old name, alias in the module, source file) of each patched function,
    /// waiting for its symbol position.
    pending_funcs: Vec<(String, String, String, Option<String>)>,
}

/// The cross-object link stage: new global symbols one object defines and another uses become
/// ordinary references inside the module, callbacks get aliases unique in the module, and each
/// patchable object is written with its functions under aliases (`ALIAS_PREFIX`).
fn cross_link(
    diffs: &mut [(ObjectFile<'_>, differ::Diff)],
    objects: &[AffectedObject],
) -> Result<CrossLinked> {
    let mut parts: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut specs: BTreeMap<String, ObjectSpec> = BTreeMap::new();
    let mut pending_funcs: Vec<(String, String, String, Option<String>)> = Vec::new();
    // New global symbols one object defines and another uses are linked inside the module.
    let new_globals: HashSet<String> = diffs
        .iter()
        .filter(|(_, d)| d.verdict == Verdict::Patchable)
        .flat_map(|(pat, d)| {
            d.new_functions
                .iter()
                .chain(&d.new_data)
                .filter(|n| {
                    pat.symbols
                        .iter()
                        .any(|s| s.global && s.section.is_some() && s.name == n.as_str())
                })
                .cloned()
                .collect::<Vec<_>>()
        })
        .collect();
    for (i, ((pat, d), o)) in diffs.iter_mut().zip(objects).enumerate() {
        if d.verdict != Verdict::Patchable {
            continue;
        }
        for piece in &mut d.selection.pieces {
            for r in &mut piece.relocs {
                if let OutTarget::Klp(t) = &r.target
                    && new_globals.contains(&t.symbol)
                {
                    r.target = OutTarget::Undefined(t.symbol.clone());
                }
            }
        }
        let prefix = format!("{ALIAS_PREFIX}f{i}_");
        let spec = specs.entry(o.target.clone()).or_default();
        // Callback wrappers are static in their file (kpatch-macros.h), so files may use the same
        // names; each gets an alias unique in the module for the generated klp_object.
        let mut callback_aliases = Vec::new();
        for f in &d.new_functions {
            for (p, field) in CALLBACK_PREFIXES {
                if !f.starts_with(p) {
                    continue;
                }
                let sym = pat
                    .symbols
                    .iter()
                    .position(|s| s.name == f.as_str() && s.section.is_some())
                    .ok_or_else(|| {
                        anyhow!("{}: callback {f} is new but has no symbol", o.object)
                    })?;
                let alias = format!("{ALIAS_PREFIX}cb{i}_{field}");
                if spec.callbacks.insert(field, alias.clone()).is_some() {
                    return Err(UserError::new(format!(
                        "{}: {f}: a second {field} callback for {}, whose klp_object already \
                         has one from another file (one callback of each kind per object)",
                        o.object, o.target
                    ))
                    .into());
                }
                callback_aliases.push((sym, alias));
            }
        }
        parts.push((
            i,
            write_object_aliased(pat, d, Some(&prefix), &callback_aliases)?,
        ));
        for (n, (_, old)) in d.selection.patched_functions.iter().enumerate() {
            pending_funcs.push((
                o.target.clone(),
                old.clone(),
                format!("{prefix}{n}"),
                pat.source_name.map(str::to_string),
            ));
        }
        for k in klp_records(pat, d) {
            specs.entry(k.target.object.clone()).or_default();
        }
    }
    Ok(CrossLinked {
        parts,
        specs,
        pending_funcs,
    })
}

fn report(
    loadable: bool,
    outcome: Outcome,
    objects: Vec<ObjectReport>,
    module: Option<PathBuf>,
    klp_relocations: usize,
    stages: &Stages,
    notes: Vec<String>,
) -> BuildReport {
    BuildReport {
        outcome,
        objects,
        module,
        klp_relocations,
        stages: stages
            .done
            .iter()
            .map(|(n, d)| (n.clone(), d.as_secs_f64()))
            .collect(),
        peak_rss_kib: peak_rss_kib(),
        loadable,
        kernel_release: None,
        cached_objects: 0,
        link: None,
        notes,
    }
}

/// The edits with `#line` directives added to patched C sources and headers.
fn with_line_fixes(edits: &[FileEdit]) -> Vec<FileEdit> {
    edits
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if let (Some(before), Some(after)) = (&e.before, &e.after)
                && (e.rel.ends_with(".c") || e.rel.ends_with(".h"))
            {
                let b = String::from_utf8_lossy(before);
                let a = String::from_utf8_lossy(after);
                e.after = Some(fix_line_numbers(&b, &a).into_bytes());
            }
            e
        })
        .collect()
}

/// Where a module's intermediate files go by default: one directory per run, so that builds of the
/// same name on different trees never share one.
pub fn default_workdir(name: &str) -> PathBuf {
    crate::kernel::cache::root()
        .join("build")
        .join(format!("{name}-{}", std::process::id()))
}

/// Exposed for tests: the affected objects of `edits` in a tree.
pub fn plan_objects(objdir: &Path, edits: &[FileEdit]) -> Result<Vec<AffectedObject>> {
    let links = LinkMap::load(objdir)?;
    let mut notes = Vec::new();
    Ok(affected_objects(
        objdir,
        objdir,
        edits,
        &links,
        &[],
        &mut notes,
    )?)
}

/// This process's peak resident set size from `/proc/self/status` (0 where unavailable).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
