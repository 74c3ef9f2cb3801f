//! `klpx matrix`: reads the matrix file, runs every architecture, prints the report.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cli::MatrixArgs;
use crate::error::exit;
use crate::livepatch::pipeline::Outcome;
use crate::matrix::config::Matrix;
use crate::matrix::report::Report;
use crate::matrix::run::{MatrixRequest, run as run_matrix};
use crate::patch::source::SourcePatch;

/// klpx's own default matrix, used when no file is given and there is no ./cross-dev.yaml.
const DEFAULT_MATRIX: &str = include_str!("../../cross-dev.yaml");

/// Runs `klpx matrix`; returns the exit status.
pub fn run(a: MatrixArgs) -> Result<i32> {
    let (mut matrix, dir, shown) = load_matrix(a.file.as_deref())?;
    matrix.select(&a.arches.arches, &shown)?;
    // Read before any tree is built; whether it applies is known once the source is there.
    SourcePatch::load_all(&a.patch.patches)?;
    let name = a.patch.module_name()?;
    let checks = a.verify.checks()?;
    let output = a.output.clone().unwrap_or_else(|| PathBuf::from(&name));
    matrix.check_fragments(&shown, &dir)?;
    matrix.check_compilers(&shown)?;
    crate::files::check_output_dir(&output, "-o")?;
    if let Some(md) = &a.markdown {
        let inputs: Vec<&Path> = a.patch.patches.iter().map(PathBuf::as_path).collect();
        crate::files::check_output(md, "--markdown", &inputs)?;
    }
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let results = run_matrix(&MatrixRequest {
        matrix,
        matrix_dir: abs(&dir),
        patches: a.patch.patches.iter().map(|p| abs(p)).collect(),
        fuzz: a.patch.fuzz,
        name: name.clone(),
        output: abs(&output),
        replace: !a.patch.non_replace,
        sequential: a.sequential,
        quiet: a.json,
        sign: None,
    })?;
    let mut report = Report::new(&results);
    if let Some(mut checks) = checks {
        use crate::matrix::verify::{BootTarget, booting_arches, verify_all};
        for arch in booting_arches(&results) {
            crate::setup::ensure_packages(&[arch.backend().qemu_package()])?;
            checks.busybox.push((arch, crate::setup::busybox(arch)?));
        }
        let targets: Vec<_> = results
            .iter()
            .map(|r| (r.clone(), Ok(BootTarget::of_tree(r))))
            .collect();
        report.add_verification(verify_all(&targets, &checks));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    if let Some(md) = &a.markdown {
        let title = a
            .patch
            .patches
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        crate::files::write_whole(md, report.markdown(&title).as_bytes())?;
    }
    let failed = |user: bool| {
        results
            .iter()
            .any(|r| matches!(&r.outcome, Err(f) if f.user_error == user))
    };
    let refused = results
        .iter()
        .any(|r| matches!(&r.outcome, Ok(b) if b.outcome == Outcome::Refused));
    Ok(if failed(false) {
        exit::INTERNAL
    } else if failed(true) {
        exit::USER
    } else if refused || report.verify_failed() {
        exit::UNPATCHABLE
    } else {
        exit::OK
    })
}

/// The matrix `-f` names, else ./cross-dev.yaml, else klpx's built-in one; with the directory its
/// fragments are relative to and the name errors give it.
pub fn load_matrix(file: Option<&Path>) -> Result<(Matrix, PathBuf, String)> {
    Ok(match file {
        Some(f) => (Matrix::load(f)?, parent(f), f.display().to_string()),
        None if Path::new("cross-dev.yaml").is_file() => (
            Matrix::load(Path::new("cross-dev.yaml"))?,
            PathBuf::from("."),
            "cross-dev.yaml".to_string(),
        ),
        None => (
            Matrix::parse("(built-in cross-dev.yaml)", DEFAULT_MATRIX)?,
            PathBuf::from("."),
            "cross-dev.yaml".to_string(),
        ),
    })
}

fn parent(f: &Path) -> PathBuf {
    f.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
