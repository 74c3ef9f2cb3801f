//! `klpx diff ORIG.o PATCHED.o`: the object differ on the command line.

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use crate::differ::{self, DiffOptions, Exports, PatchedFunction, Refusal, Verdict};
use crate::error::{UserError, exit};
use crate::files;
use crate::module::source::check_module_name;
use crate::objfile::ObjectFile;
use crate::writer::diff_object::{klp_records, write_object};

/// Plain values the diff needs.
#[derive(Debug, Clone)]
pub struct DiffRequest {
    pub orig: PathBuf,
    pub patched: PathBuf,
    pub output: Option<PathBuf>,
    pub json: bool,
    pub object: String,
    pub symvers: Option<PathBuf>,
    pub count_line_changes: bool,
}

impl From<crate::cli::DiffArgs> for DiffRequest {
    fn from(a: crate::cli::DiffArgs) -> DiffRequest {
        DiffRequest {
            orig: a.orig,
            patched: a.patched,
            output: a.output,
            json: a.json,
            object: a.object,
            symvers: a.symvers,
            count_line_changes: a.count_line_changes,
        }
    }
}

#[derive(Serialize)]
struct KlpRelocJson {
    section: String,
    offset: u64,
    #[serde(rename = "type")]
    r_type: String,
    object: String,
    symbol: String,
    addend: i64,
}

#[derive(Serialize)]
struct Report<'a> {
    arch: &'static str,
    orig: String,
    patched: String,
    object: &'a str,
    verdict: Verdict,
    changed_functions: Vec<&'a str>,
    patched_functions: &'a [PatchedFunction],
    new_functions: &'a [String],
    copied_functions: &'a [String],
    line_only_functions: &'a [String],
    changed_data: &'a [String],
    new_data: &'a [String],
    klp_relocations: Vec<KlpRelocJson>,
    special_entries: std::collections::BTreeMap<&'a str, usize>,
    refusals: &'a [Refusal],
    output: Option<String>,
}

/// Runs the differ and reports; returns the exit status.
pub fn run(req: &DiffRequest) -> Result<i32> {
    if req.object != "vmlinux" {
        check_module_name("--object", &req.object)?;
    }
    if let Some(out) = &req.output {
        files::check_output(out, "-o", &[&req.orig, &req.patched])?;
    }
    let exports = match &req.symvers {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                UserError::new(format!("{}: cannot read Module.symvers: {e}", p.display()))
            })?;
            Exports::from_symvers(&text)
        }
        None => Exports::default(),
    };
    let orig_bytes = files::read_input(&req.orig, "a compiled .o object")?;
    let patched_bytes = files::read_input(&req.patched, "a compiled .o object")?;
    let orig = ObjectFile::parse(&req.orig, &orig_bytes)?;
    let patched = ObjectFile::parse(&req.patched, &patched_bytes)?;
    let opts = DiffOptions {
        object_name: req.object.clone(),
        exports,
        count_line_changes: req.count_line_changes,
        objtool_at_module_link: false,
    };
    let diff = differ::diff(&orig, &patched, &opts)?;
    // The original's tables and bytes are done with: the output is written from the patched
    // object alone, and at its peak it should not share the heap with them.
    drop(orig);
    drop(orig_bytes);

    let mut written = None;
    if let (Some(out), Verdict::Patchable) = (&req.output, diff.verdict) {
        let bytes = write_object(&patched, &diff)?;
        files::write_whole(out, &bytes)?;
        written = Some(out.display().to_string());
    }

    let backend = patched.backend();
    let klp: Vec<KlpRelocJson> = klp_records(&patched, &diff)
        .into_iter()
        .map(|k| KlpRelocJson {
            section: k.section,
            offset: k.offset,
            r_type: backend.reloc_name(k.r_type),
            object: k.target.object,
            symbol: k.target.symbol,
            addend: k.addend,
        })
        .collect();
    let special: std::collections::BTreeMap<&str, usize> = diff
        .selection
        .special_entries
        .iter()
        .fold(Default::default(), |mut m, (n, c)| {
            *m.entry(n.as_str()).or_default() += c;
            m
        });

    if req.json {
        let report = Report {
            arch: backend.name(),
            orig: req.orig.display().to_string(),
            patched: req.patched.display().to_string(),
            object: &req.object,
            verdict: diff.verdict,
            changed_functions: diff
                .changed_functions
                .iter()
                .map(|f| f.name.as_str())
                .collect(),
            patched_functions: &diff.changed_functions,
            new_functions: &diff.new_functions,
            copied_functions: &diff.copied_functions,
            line_only_functions: &diff.line_only_functions,
            changed_data: &diff.changed_data,
            new_data: &diff.new_data,
            klp_relocations: klp,
            special_entries: special,
            refusals: &diff.refusals,
            output: written,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    } else {
        print_summary(
            &req.patched,
            backend.name(),
            &diff,
            &klp,
            &special,
            written.as_deref(),
        );
    }
    for r in &diff.refusals {
        eprintln!(
            "klpx: {}: {}: cannot be live-patched: {}",
            req.patched.display(),
            r.symbol,
            r.reason
        );
    }
    Ok(match diff.verdict {
        Verdict::Patchable => exit::OK,
        Verdict::NoChange => exit::NO_CHANGE,
        Verdict::Unpatchable => exit::UNPATCHABLE,
    })
}

fn print_summary(
    patched: &Path,
    arch: &str,
    diff: &differ::Diff,
    klp: &[KlpRelocJson],
    special: &std::collections::BTreeMap<&str, usize>,
    written: Option<&str>,
) {
    let verdict = match diff.verdict {
        Verdict::Patchable => "patchable change",
        Verdict::NoChange => "no functional change",
        Verdict::Unpatchable => "change cannot be live-patched",
    };
    println!("{} ({arch}): {verdict}", patched.display());
    for f in &diff.changed_functions {
        if f.name == f.old_name {
            println!("  changed function  {}", f.name);
        } else {
            println!(
                "  changed function  {} (running kernel: {})",
                f.name, f.old_name
            );
        }
    }
    for f in &diff.new_functions {
        println!("  new function      {f}");
    }
    for f in &diff.copied_functions {
        println!("  copied function   {f} (unchanged, travels with the patched code)");
    }
    if !diff.line_only_functions.is_empty() {
        println!(
            "  unchanged         {} function(s) whose code differs only in line numbers (--count-line-changes counts them)",
            diff.line_only_functions.len()
        );
    }
    for d in &diff.new_data {
        println!("  new data          {d}");
    }
    for d in &diff.changed_data {
        println!("  changed data      {d}");
    }
    for k in klp {
        println!(
            "  livepatch reloc   {}+{:#x} -> {}:{} ({})",
            k.section, k.offset, k.object, k.symbol, k.r_type
        );
    }
    for (name, n) in special {
        println!("  special entries   {name}: {n}");
    }
    if let Some(w) = written {
        println!("  wrote {w}");
    }
}
