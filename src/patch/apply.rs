//! Placing hunks the way GNU patch does by default, so that a patch that `patch -p1` applies, klpx
//! applies to the same lines: each hunk is looked for at its line number shifted by the offset the
//! hunks before it needed, then ever further away in both directions (offset); when it is nowhere,
//! again while ignoring one, then two, of its outer context lines (fuzz). A fix written for a newer
//! kernel often applies to a stable tree only that way. Hunks never overlap and stay in order.

use super::parse::{Hunk, HunkLine};

/// Where one hunk went, when it was not exactly where the patch said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// 1-based number of the hunk in its file's patch.
    pub hunk: usize,
    /// 1-based line of the old file where the hunk's first line went.
    pub line: usize,
    /// Lines away from where the patch said.
    pub offset: isize,
    /// Outer context lines that were not compared.
    pub fuzz: usize,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hunk #{} applied at line {}", self.hunk, self.line)?;
        let mut parts = Vec::new();
        if self.offset != 0 {
            let n = self.offset.unsigned_abs();
            parts.push(format!(
                "offset {} line{}",
                self.offset,
                if n == 1 { "" } else { "s" }
            ));
        }
        if self.fuzz != 0 {
            parts.push(format!("fuzz {}", self.fuzz));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// Why a hunk could not be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HunkFailed {
    /// 1-based number of the hunk.
    pub hunk: usize,
    pub header: String,
    /// The patch's change is already in the file (its new side matches exactly).
    pub already_applied: bool,
}

/// The bytes a patch makes of `old`, and the hunks that needed an offset or fuzz. Lines are compared
/// as bytes, so a source file that is not UTF-8 (an old driver with a Latin-1 name) is patched
/// byte for byte.
pub fn apply_hunks(
    old: &[u8],
    hunks: &[Hunk],
    max_fuzz: usize,
) -> Result<(Vec<u8>, Vec<Placement>), HunkFailed> {
    let input: Vec<&[u8]> = old.split_inclusive(|&b| b == b'\n').collect();
    let mut out = Vec::with_capacity(old.len() + 256);
    let mut placements = Vec::new();
    // Lines of `input` already copied or replaced (GNU patch's last_frozen_line).
    let mut frozen = 0usize;
    // The offset the hunks so far needed, carried to the next one (GNU patch's in_offset).
    let mut carried: isize = 0;
    for (i, hunk) in hunks.iter().enumerate() {
        let pattern: Vec<&[u8]> = old_side(hunk).collect();
        let shape = Shape::of(hunk);
        let max = max_fuzz.min(shape.prefix.max(shape.suffix));
        let found = (0..=max).find_map(|fuzz| {
            locate(&input, &pattern, &shape, frozen, carried, fuzz).map(|at| (at, fuzz))
        });
        let Some((at, fuzz)) = found else {
            let new_side: Vec<&[u8]> = new_side(hunk).collect();
            let new_shape = Shape {
                first: hunk.new_start.max(1),
                ..shape
            };
            return Err(HunkFailed {
                hunk: i + 1,
                header: hunk.header(),
                already_applied: !new_side.is_empty()
                    && locate(&input, &new_side, &new_shape, frozen, carried, 0).is_some(),
            });
        };
        let offset = at as isize - shape.first as isize;
        carried = at as isize - shape.first as isize;
        if offset != 0 || fuzz != 0 {
            placements.push(Placement {
                hunk: i + 1,
                line: at,
                offset,
                fuzz,
            });
        }
        // Unchanged lines up to the hunk, then the hunk with the file's own context lines (under
        // fuzz they may differ from the patch's).
        for l in &input[frozen..at - 1] {
            out.extend_from_slice(l);
        }
        let mut cursor = at - 1;
        for line in &hunk.lines {
            match line {
                HunkLine::Context(_) => {
                    out.extend_from_slice(input[cursor]);
                    cursor += 1;
                }
                HunkLine::Delete(_) => cursor += 1,
                HunkLine::Insert(text) => out.extend_from_slice(text.as_bytes()),
            }
        }
        frozen = cursor;
    }
    for l in &input[frozen..] {
        out.extend_from_slice(l);
    }
    Ok((out, placements))
}

/// The lines a hunk expects in the old file.
fn old_side(h: &Hunk) -> impl Iterator<Item = &[u8]> {
    h.lines.iter().filter_map(|l| match l {
        HunkLine::Context(s) | HunkLine::Delete(s) => Some(s.as_bytes()),
        HunkLine::Insert(_) => None,
    })
}

/// The lines a hunk leaves in the new file.
fn new_side(h: &Hunk) -> impl Iterator<Item = &[u8]> {
    h.lines.iter().filter_map(|l| match l {
        HunkLine::Context(s) | HunkLine::Insert(s) => Some(s.as_bytes()),
        HunkLine::Delete(_) => None,
    })
}

/// What placement needs of a hunk: where it says it goes and its context at each end.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// 1-based line of the old file the hunk's first line belongs at.
    first: usize,
    /// Context lines before the first change, and after the last.
    prefix: usize,
    suffix: usize,
}

impl Shape {
    fn of(h: &Hunk) -> Shape {
        let is_context = |l: &&HunkLine| matches!(l, HunkLine::Context(_));
        Shape {
            // An empty old range names the line after which the new lines go.
            first: if h.old_len == 0 {
                h.old_start + 1
            } else {
                h.old_start.max(1)
            },
            prefix: h.lines.iter().take_while(is_context).count(),
            suffix: h.lines.iter().rev().take_while(is_context).count(),
        }
    }
}

/// GNU patch's `locate_hunk`: the 1-based line where `pattern` matches, ignoring `fuzz` outer context
/// lines, searching outwards from the hunk's line plus the carried offset. A hunk with less context
/// at one end than the other sits at that end of the file and may only match there.
fn locate(
    input: &[&[u8]],
    pattern: &[&[u8]],
    shape: &Shape,
    frozen: usize,
    carried: isize,
    fuzz: usize,
) -> Option<usize> {
    let n = input.len() as isize;
    let pat = pattern.len() as isize;
    let first = shape.first as isize + carried;
    if pat == 0 {
        return (first >= 1 && first as usize > frozen && first <= n + 1).then_some(first as usize);
    }
    let context = shape.prefix.max(shape.suffix) as isize;
    let mut prefix_fuzz = fuzz as isize + shape.prefix as isize - context;
    let suffix_fuzz = fuzz as isize + shape.suffix as isize - context;
    let matches_at = |at: isize, pf: isize, sf: isize| -> bool {
        if at < 1 || (at as usize) <= frozen || at + pat - 1 - sf > n {
            return false;
        }
        (pf..pat - sf).all(|k| {
            let line = (at + k - 1) as usize;
            line < input.len() && input[line] == pattern[k as usize]
        })
    };
    if prefix_fuzz < 0 && shape.first > 1 {
        prefix_fuzz = 0;
    }
    if prefix_fuzz < 0 {
        // Only at the start of the file (and, with short context at the end too, only the whole
        // file).
        if suffix_fuzz < 0 && pat != n {
            return None;
        }
        return matches_at(1, 0, suffix_fuzz.max(0)).then_some(1);
    }
    if suffix_fuzz < 0 {
        // Only at the end of the file.
        let at = n - pat + 1;
        return matches_at(at, prefix_fuzz, 0).then_some(at as usize);
    }
    let max_where = n - (pat - suffix_fuzz) + 1;
    let min_where = frozen as isize + 1;
    let max_pos = max_where - first;
    let max_neg = first - min_where;
    for off in 0..=max_pos.max(max_neg).max(0) {
        if off <= max_pos && matches_at(first + off, prefix_fuzz, suffix_fuzz) {
            return Some((first + off) as usize);
        }
        if off > 0 && off <= max_neg && matches_at(first - off, prefix_fuzz, suffix_fuzz) {
            return Some((first - off) as usize);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::parse::SourcePatch;

    fn hunks(diff: &str) -> Vec<Hunk> {
        SourcePatch::parse("t.patch", diff).unwrap().files[0]
            .hunks
            .clone()
    }

    /// `apply_hunks` on text.
    fn apply(old: &str, h: &[Hunk], fuzz: usize) -> Result<(String, Vec<Placement>), HunkFailed> {
        apply_hunks(old.as_bytes(), h, fuzz).map(|(b, p)| (String::from_utf8(b).unwrap(), p))
    }

    fn numbered(n: usize) -> String {
        (1..=n).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn exact_offset_and_fuzz() {
        let d = "--- a/f.c\n+++ b/f.c\n@@ -4,7 +4,7 @@ int f(void)\n line 4\n line 5\n line 6\n-line 7\n+LINE 7\n line 8\n line 9\n line 10\n";
        let (out, p) = apply(&numbered(12), &hunks(d), 2).unwrap();
        assert!(out.contains("line 6\nLINE 7\nline 8\n"), "{out}");
        assert!(p.is_empty());

        // Three lines more at the top: the same hunk applies 3 lines further down.
        let shifted = format!("a\nb\nc\n{}", numbered(12));
        let (out, p) = apply(&shifted, &hunks(d), 2).unwrap();
        assert!(out.contains("line 6\nLINE 7\nline 8\n"));
        assert_eq!(
            p,
            vec![Placement {
                hunk: 1,
                line: 7,
                offset: 3,
                fuzz: 0
            }]
        );
        assert_eq!(
            p[0].to_string(),
            "hunk #1 applied at line 7 (offset 3 lines)"
        );

        // The first context line differs: only with fuzz 1, and the file's own line is kept.
        let changed = numbered(12).replace("line 4\n", "line four\n");
        let (out, p) = apply(&changed, &hunks(d), 2).unwrap();
        assert!(out.contains("line four\nline 5\nline 6\nLINE 7\n"), "{out}");
        assert_eq!(p[0].fuzz, 1);
        let e = apply(&changed, &hunks(d), 0).unwrap_err();
        assert_eq!(e.hunk, 1);
        assert!(!e.already_applied);

        // A changed line next to the change is never fuzzed away.
        let inner = numbered(12).replace("line 6\n", "line six\n");
        assert!(apply(&inner, &hunks(d), 2).is_err());

        // Applied twice: the second time says it is already there.
        let (once, _) = apply(&numbered(12), &hunks(d), 2).unwrap();
        assert!(apply(&once, &hunks(d), 2).unwrap_err().already_applied);
    }

    #[test]
    fn start_and_end_of_file_and_new_files() {
        // Short context at the top: the hunk belongs at the start of the file only.
        let d = "--- a/f.c\n+++ b/f.c\n@@ -1,4 +1,5 @@\n+top\n line 1\n line 2\n line 3\n line 4\n";
        let (out, _) = apply(&numbered(6), &hunks(d), 2).unwrap();
        assert!(out.starts_with("top\nline 1\n"));
        let moved = format!("x\n{}", numbered(6));
        assert!(apply(&moved, &hunks(d), 0).is_err());

        // Missing newline at the end, on both sides.
        let d = "--- a/f.c\n+++ b/f.c\n@@ -2,2 +2,2 @@\n line 2\n-line 3\n\\ No newline at end of file\n+LINE 3\n\\ No newline at end of file\n";
        let (out, _) = apply("line 1\nline 2\nline 3", &hunks(d), 2).unwrap();
        assert_eq!(out, "line 1\nline 2\nLINE 3");

        // A new file.
        let d = "--- /dev/null\n+++ b/n.c\n@@ -0,0 +1,2 @@\n+one\n+two\n";
        let (out, _) = apply("", &hunks(d), 2).unwrap();
        assert_eq!(out, "one\ntwo\n");
    }

    #[test]
    fn second_hunk_carries_the_first_hunks_offset() {
        let d = "--- a/f.c\n+++ b/f.c\n@@ -2,3 +2,3 @@\n line 2\n-line 3\n+LINE 3\n line 4\n@@ -20,3 +20,3 @@\n line 20\n-line 21\n+LINE 21\n line 22\n";
        let text = numbered(30).replace("line 10\n", "line 10\nextra\nextra\n");
        let (out, p) = apply(&text, &hunks(d), 2).unwrap();
        assert!(out.contains("LINE 3\n") && out.contains("line 20\nLINE 21\nline 22\n"));
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].hunk, p[0].line, p[0].offset), (2, 22, 2));
    }
}

#[cfg(test)]
mod bytes {
    use super::*;
    use crate::patch::parse::SourcePatch;

    /// A Latin-1 byte in the file (not UTF-8) is kept as it is, and matching is by bytes.
    #[test]
    fn patches_a_file_that_is_not_utf8() {
        let d = "--- a/f.c\n+++ b/f.c\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n";
        let hunks = SourcePatch::parse("t.patch", d).unwrap().files[0]
            .hunks
            .clone();
        let old = b"a\nb\nc\n/* J\xf6rg */\n";
        let (out, _) = apply_hunks(old, &hunks, 2).unwrap();
        assert_eq!(out, b"a\nB\nc\n/* J\xf6rg */\n");
    }
}
