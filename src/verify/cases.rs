//! The `--cases` file of `klpx verify`: several cases verified in one boot, as a YAML or JSON list.
//!
//! ```yaml
//! - modules: [livepatch-fix-a.ko]          # paths relative to this file
//!   check: ["cat /proc/cmdline"]           # or `checks`
//!   expect_before: "console="              # or `expect-before`
//!   expect_after: "fixed"
//! - modules: [livepatch-fix-b.ko]
//!   check: ["insmod /klpx/files/helper.ko && cat /proc/helper"]
//!   expect_after: "fixed too"
//!   files: [helper.ko]                     # or `file`
//! ```
//!
//! The file is read and checked whole before anything boots: a typo in a field's name is an error
//! (not a case with no checks that passes), and so is a case with no modules.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::VerifyCase;
use crate::error::UserError;

/// Largest cases file read (4 MiB): tens of thousands of cases, far more than one boot runs.
const MAX_FILE: usize = 4 << 20;

/// One case as the file spells it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default, alias = "module")]
    modules: Vec<PathBuf>,
    #[serde(default, alias = "checks")]
    check: Vec<String>,
    #[serde(default, alias = "expect-before")]
    expect_before: Option<String>,
    #[serde(default, alias = "expect-after")]
    expect_after: Option<String>,
    #[serde(default, alias = "file")]
    files: Vec<PathBuf>,
}

/// Reads the cases in `path` (JSON when it ends in `.json`, else YAML), with relative paths taken
/// from the file's directory. Every problem is one line naming the file (and where it can, the line
/// and column, or the case).
pub fn read(path: &Path) -> Result<Vec<VerifyCase>, UserError> {
    let name = path.display().to_string();
    let bytes = crate::files::read_input(path, "a YAML or JSON list of cases")?;
    if bytes.len() > MAX_FILE {
        return Err(UserError::new(format!(
            "{name}: {} bytes; a cases file is a page or a few of YAML (limit {MAX_FILE})",
            bytes.len()
        )));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| UserError::new(format!("{name}: not UTF-8 text")))?;
    let json = path.extension().is_some_and(|e| e == "json");
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    parse(&name, &text, json, base)
}

/// Parses and checks the text of a cases file; `name` is used in errors (`cases.yaml:3:5: ...`).
pub(crate) fn parse(
    name: &str,
    text: &str,
    json: bool,
    base: &Path,
) -> Result<Vec<VerifyCase>, UserError> {
    let entries: Vec<Entry> = if json {
        serde_json::from_str(text).map_err(|e| {
            let msg = e.to_string();
            // serde_json appends " at line L column C"; the location is given up front instead.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            UserError::new(format!("{name}:{}:{}: {msg}", e.line(), e.column()))
        })?
    } else {
        crate::matrix::config::check_nesting(name, text)?;
        serde_norway::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("{}:{}", l.line(), l.column()))
                .unwrap_or_else(|| "1:1".into());
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg);
            UserError::new(format!("{name}:{at}: {}", case_path(msg)))
        })?
    };
    if entries.is_empty() {
        return Err(UserError::new(format!("{name}: lists no case")));
    }
    let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
    entries
        .into_iter()
        .enumerate()
        .map(|(k, e)| {
            let n = k + 1;
            if e.modules.is_empty() {
                return Err(UserError::new(format!("{name}: case {n} has no modules")));
            }
            if e.check.is_empty() && (e.expect_before.is_some() || e.expect_after.is_some()) {
                return Err(UserError::new(format!(
                    "{name}: case {n}: expect_before and expect_after need a check whose output \
                     they match"
                )));
            }
            Ok(VerifyCase {
                modules: e.modules.into_iter().map(resolve).collect(),
                checks: e.check,
                expect_before: e.expect_before,
                expect_after: e.expect_after,
                files: e.files.into_iter().map(resolve).collect(),
            })
        })
        .collect()
}

/// serde_norway's path to the value in error (`.[1].modules: invalid type ...`) in the words the
/// rest of the errors use (`case 2: modules: invalid type ...`).
fn case_path(msg: &str) -> String {
    let Some(rest) = msg.strip_prefix(".[").or_else(|| msg.strip_prefix('[')) else {
        return msg.to_string();
    };
    let Some((index, rest)) = rest.split_once(']') else {
        return msg.to_string();
    };
    let Ok(index) = index.parse::<usize>() else {
        return msg.to_string();
    };
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    let rest = rest.strip_prefix(": ").unwrap_or(rest);
    format!("case {}: {rest}", index.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<Vec<VerifyCase>, String> {
        parse("cases.yaml", text, false, Path::new("/suite")).map_err(|e| e.to_string())
    }

    #[test]
    fn cases_read_with_paths_from_the_file_and_either_spelling() {
        let cases = yaml(
            "- modules: [a.ko, /abs/b.ko]\n  check: [\"cat /proc/cmdline\"]\n  \
             expect_after: patched\n  files: [sub/helper.ko]\n\
             - modules: [c.ko]\n  checks: [\"true\", \"ls\"]\n  expect-before: \"x\\n\"\n",
        )
        .unwrap();
        assert_eq!(
            cases,
            [
                VerifyCase {
                    modules: vec!["/suite/a.ko".into(), "/abs/b.ko".into()],
                    checks: vec!["cat /proc/cmdline".into()],
                    expect_before: None,
                    expect_after: Some("patched".into()),
                    files: vec!["/suite/sub/helper.ko".into()],
                },
                VerifyCase {
                    modules: vec!["/suite/c.ko".into()],
                    checks: vec!["true".into(), "ls".into()],
                    expect_before: Some("x\n".into()),
                    expect_after: None,
                    files: Vec::new(),
                },
            ]
        );
        let json = parse(
            "cases.json",
            r#"[{"modules": ["a.ko"], "check": ["cat /proc/cmdline"], "expect_after": "p"}]"#,
            true,
            Path::new("."),
        )
        .unwrap();
        assert_eq!(json[0].modules, [PathBuf::from("./a.ko")]);
    }

    #[test]
    fn each_mistake_is_one_line_naming_the_file() {
        for (text, error) in [
            (
                "- modules: [a.ko]\n  expect_afer: x\n",
                "cases.yaml:2:3: case 1: unknown field `expect_afer`, expected one of `module`, \
                 `modules`, `check`, `checks`, `expect-before`, `expect_before`, `expect-after`, \
                 `expect_after`, `file`, `files`",
            ),
            (
                "- modules: a.ko\n",
                "cases.yaml:1:12: case 1: modules: invalid type: string \"a.ko\", expected a \
                 sequence",
            ),
            ("[]\n", "cases.yaml: lists no case"),
            (
                "- modules: [a.ko]\n- check: [true]\n",
                "cases.yaml: case 2 has no modules",
            ),
            (
                "- modules: [a.ko]\n  expect_after: x\n",
                "cases.yaml: case 1: expect_before and expect_after need a check whose output \
                 they match",
            ),
            (
                &format!("- modules: {}a.ko{}\n", "[".repeat(40), "]".repeat(40)),
                "cases.yaml:1:44: collections nested more than 32 deep",
            ),
        ] {
            let got = yaml(text).unwrap_err();
            assert_eq!(got, error, "{text}");
            assert_eq!(got.lines().count(), 1);
        }
        let e = parse(
            "c.json",
            "[{\"modules\": [\"a.ko\"],}]",
            true,
            Path::new("."),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("c.json:1:23: "), "{e}");
        let e = read(Path::new("/nonexistent/cases.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/nonexistent/cases.yaml: cannot read: "),
            "{e}"
        );
    }
}
