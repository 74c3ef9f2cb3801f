//! The matrix report: a row per architecture and what differs between them (functions changed on
//! some architectures and not others, refusals on some only, different outcomes), as text, JSON
//! and Markdown.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::run::ArchResult;
use super::verify::Verified;
use crate::livepatch::pipeline::Outcome;

/// One architecture's row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub arch: String,
    /// `module`, `module (cannot load)`, `no-change`, `refused` or `failed`.
    pub status: String,
    pub changed_functions: Vec<String>,
    pub new_functions: Vec<String>,
    pub refusals: Vec<String>,
    pub module: Option<String>,
    pub error: Option<String>,
    pub seconds: f64,
    /// The module proven in qemu (`--verify`), when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verified>,
}

/// Something that is not the same on every architecture.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// `changed`, `new`, `refused` or `status`.
    pub kind: String,
    pub what: String,
    /// The architectures where it holds; the others do not have it.
    pub on: Vec<String>,
    pub not_on: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    pub differences: Vec<Difference>,
}

impl Report {
    pub fn new<'a>(results: impl IntoIterator<Item = &'a ArchResult>) -> Report {
        let rows: Vec<Row> = results
            .into_iter()
            .map(|r| {
                let mut row = Row {
                    arch: r.arch.name().to_string(),
                    status: String::new(),
                    changed_functions: Vec::new(),
                    new_functions: Vec::new(),
                    refusals: Vec::new(),
                    module: None,
                    error: None,
                    seconds: r.time.as_secs_f64(),
                    verify: None,
                };
                match &r.outcome {
                    Err(e) => {
                        row.status = "failed".into();
                        row.error = Some(e.message.lines().next().unwrap_or("").to_string());
                    }
                    Ok(b) => {
                        row.status = match b.outcome {
                            Outcome::Module if b.loadable => "module".into(),
                            Outcome::Module => "module (cannot load)".into(),
                            Outcome::NoChange => "no-change".into(),
                            Outcome::Refused => "refused".into(),
                        };
                        for o in &b.objects {
                            row.changed_functions
                                .extend(o.changed_functions.iter().cloned());
                            row.new_functions.extend(o.new_functions.iter().cloned());
                            row.refusals
                                .extend(o.refusals.iter().map(|f| format!("{}: {f}", o.object)));
                        }
                        row.changed_functions.sort();
                        row.new_functions.sort();
                        row.module = b.module.as_ref().map(|m| m.display().to_string());
                    }
                }
                row
            })
            .collect();
        let all: Vec<String> = rows.iter().map(|r| r.arch.clone()).collect();
        let mut differences = Vec::new();
        let mut differ = |kind: &str, sets: BTreeMap<String, BTreeSet<String>>| {
            for (what, on) in sets {
                if on.len() < all.len() {
                    differences.push(Difference {
                        kind: kind.to_string(),
                        what,
                        not_on: all.iter().filter(|a| !on.contains(*a)).cloned().collect(),
                        on: on.into_iter().collect(),
                    });
                }
            }
        };
        let gather = |f: &dyn Fn(&Row) -> Vec<String>| {
            let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for r in &rows {
                for x in f(r) {
                    m.entry(x).or_default().insert(r.arch.clone());
                }
            }
            m
        };
        differ("changed", gather(&|r| r.changed_functions.clone()));
        differ("new", gather(&|r| r.new_functions.clone()));
        differ(
            "refused",
            gather(&|r| {
                r.refusals
                    .iter()
                    .map(|x| x.split(": ").take(2).collect::<Vec<_>>().join(": "))
                    .collect()
            }),
        );
        // Outcomes: only those that differ from the most common one.
        let mut statuses = gather(&|r| vec![r.status.clone()]);
        if let Some(common) = statuses
            .iter()
            .max_by_key(|(_, on)| on.len())
            .map(|(s, _)| s.clone())
        {
            statuses.remove(&common);
        }
        differ("status", statuses);
        Report { rows, differences }
    }

    /// Adds each architecture's verification (in the rows' order), and where its outcome is not
    /// the same everywhere, a difference of kind `verify`.
    pub fn add_verification(&mut self, verified: Vec<Option<Verified>>) {
        let mut outcomes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (row, v) in self.rows.iter_mut().zip(verified) {
            if let Some(v) = &v {
                outcomes
                    .entry(v.outcome.clone())
                    .or_default()
                    .insert(row.arch.clone());
            }
            row.verify = v;
        }
        let all: Vec<String> = self.rows.iter().map(|r| r.arch.clone()).collect();
        if outcomes.len() > 1 {
            for (what, on) in outcomes {
                self.differences.push(Difference {
                    kind: "verify".into(),
                    what,
                    not_on: all.iter().filter(|a| !on.contains(*a)).cloned().collect(),
                    on: on.into_iter().collect(),
                });
            }
        }
    }

    /// Whether an architecture's module failed its verification.
    pub fn verify_failed(&self) -> bool {
        self.rows
            .iter()
            .any(|r| r.verify.as_ref().is_some_and(|v| !v.passed))
    }

    /// A plain-text table and the differences.
    pub fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{:<8} {:<21} {:>7}  {:<40} module",
            "arch", "status", "time", "changed / new / refused"
        );
        for r in &self.rows {
            let what = summary(r);
            let _ = writeln!(
                t,
                "{:<8} {:<21} {:>6.1}s  {:<40} {}",
                r.arch,
                r.status,
                r.seconds,
                what,
                r.module.as_deref().or(r.error.as_deref()).unwrap_or("-")
            );
        }
        if self.rows.iter().any(|r| r.verify.is_some()) {
            t.push_str("\nverified in qemu:\n");
            for r in &self.rows {
                let Some(v) = &r.verify else {
                    let _ = writeln!(t, "  {:<8} not verified (no module)", r.arch);
                    continue;
                };
                let _ = writeln!(t, "  {:<8} {}: {}", r.arch, v.outcome, v.reason);
                for (i, (b, a)) in v.before.iter().zip(&v.after).enumerate() {
                    let _ = writeln!(t, "           check {}: before: {}", i + 1, one_line(b));
                    let _ = writeln!(t, "           check {}: after:  {}", i + 1, one_line(a));
                }
            }
        }
        if self.differences.is_empty() {
            t.push_str("\nno differences between the architectures\n");
        } else {
            t.push_str("\ndifferences between the architectures:\n");
            for d in &self.differences {
                let _ = writeln!(
                    t,
                    "  {} {}: on {}; not on {}",
                    d.kind,
                    d.what,
                    d.on.join(", "),
                    d.not_on.join(", ")
                );
            }
        }
        t
    }

    /// The same as Markdown, for a release ticket.
    pub fn markdown(&self, title: &str) -> String {
        let mut t = format!("## Livepatch matrix: {title}\n\n");
        let verified = self.rows.iter().any(|r| r.verify.is_some());
        t.push_str("| arch | status | changed | new | refused | module | time |");
        t.push_str(if verified {
            " verify | before | after |\n"
        } else {
            "\n"
        });
        t.push_str("| --- | --- | --- | --- | --- | --- | ---: |");
        t.push_str(if verified {
            " --- | --- | --- |\n"
        } else {
            "\n"
        });
        let code = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.iter()
                    .map(|x| format!("`{x}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        for r in &self.rows {
            let _ = write!(
                t,
                "| {} | {} | {} | {} | {} | {} | {:.1} s |",
                r.arch,
                r.status,
                code(&r.changed_functions),
                code(&r.new_functions),
                if r.refusals.is_empty() {
                    "-".to_string()
                } else {
                    r.refusals.join("; ")
                },
                r.module
                    .as_deref()
                    .map(|m| format!("`{m}`"))
                    .or(r.error.clone())
                    .unwrap_or_else(|| "-".into()),
                r.seconds
            );
            if verified {
                let cell = |v: &[String]| {
                    if v.is_empty() {
                        "-".to_string()
                    } else {
                        v.iter()
                            .map(|x| format!("`{}`", one_line(x).replace('|', "\\|")))
                            .collect::<Vec<_>>()
                            .join("<br>")
                    }
                };
                let _ = match &r.verify {
                    Some(v) => write!(
                        t,
                        " {}: {} | {} | {} |",
                        v.outcome,
                        one_line(&v.reason).replace('|', "\\|"),
                        cell(&v.before),
                        cell(&v.after)
                    ),
                    None => write!(t, " - | - | - |"),
                };
            }
            t.push('\n');
        }
        if self.differences.is_empty() {
            t.push_str("\nNo differences between the architectures.\n");
        } else {
            t.push_str("\n### Differences between the architectures\n\n");
            for d in &self.differences {
                let _ = writeln!(
                    t,
                    "- {} `{}`: on {}; not on {}",
                    d.kind,
                    d.what,
                    d.on.join(", "),
                    d.not_on.join(", ")
                );
            }
        }
        t
    }
}

/// A check's output on one line, shortened for a table.
fn one_line(s: &str) -> String {
    let l = s.trim().replace('\n', " / ");
    if l.chars().count() > 80 {
        format!("{}…", l.chars().take(79).collect::<String>())
    } else {
        l
    }
}

fn summary(r: &Row) -> String {
    let mut parts = Vec::new();
    if !r.changed_functions.is_empty() {
        parts.push(r.changed_functions.join(","));
    }
    if !r.new_functions.is_empty() {
        parts.push(format!("+{}", r.new_functions.join(",+")));
    }
    if !r.refusals.is_empty() {
        parts.push(format!("{} refused", r.refusals.len()));
    }
    let s = parts.join(" ");
    if s.len() > 40 {
        format!("{}…", &s[..s.floor_char_boundary(39)])
    } else if s.is_empty() {
        "-".into()
    } else {
        s
    }
}
