//! Keeping `__LINE__` stable: a patch that inserts or removes lines shifts the line numbers that
//! `WARN`, `BUG` and `printk` sites below it bake into their code, which would make every such function
//! look changed. After each changed region of a patched `.c` or `.h` file, a `#line` directive puts the
//! numbering back to the original's, so unchanged code compiles exactly as before. Before each run of
//! inserted lines another puts it at the patched file's own numbering, so a report from new code
//! (a `WARN`, a UBSAN check) names the line the patch author sees in the patched source.

/// Returns `after` with `#line` directives that restore `before`'s numbering after every change. Only
/// places where a directive is valid C are used: the start of a line that is outside comments and
/// strings and does not continue a macro.
pub fn fix_line_numbers(before: &str, after: &str) -> String {
    let patch = diffy::create_patch(before, after);
    let safe = safe_line_starts(after);
    // Whether a directive may go before line `n` (1-based; a hunk that empties the file starts at
    // line 0 of the new text, before which nothing goes).
    let safe_at = |n: usize| {
        n.checked_sub(1)
            .and_then(|i| safe.get(i))
            .copied()
            .unwrap_or(false)
    };
    // (new line number before which to insert, old line number it must carry).
    let mut inserts: Vec<(usize, usize)> = Vec::new();
    // The number the compiler gives the patched file's line `n` is `n + delta`.
    let mut delta: isize = 0;
    let numbered = |n: usize, delta: isize| n.wrapping_add_signed(delta);
    let hunks = patch.hunks();
    for (h, hunk) in hunks.iter().enumerate() {
        let mut old_no = hunk.old_range().start();
        let mut new_no = hunk.new_range().start();
        let mut pending = false;
        for line in hunk.lines() {
            let safe_here = safe_at(new_no);
            match line {
                diffy::Line::Context(_) => {
                    if pending && numbered(new_no, delta) != old_no && safe_here {
                        inserts.push((new_no, old_no));
                        delta = old_no as isize - new_no as isize;
                        pending = false;
                    }
                    old_no += 1;
                    new_no += 1;
                }
                diffy::Line::Delete(_) => {
                    old_no += 1;
                    pending = true;
                }
                diffy::Line::Insert(_) => {
                    if delta != 0 && safe_here {
                        inserts.push((new_no, new_no));
                        delta = 0;
                    }
                    new_no += 1;
                    pending = true;
                }
            }
        }
        if pending && numbered(new_no, delta) != old_no {
            // No safe line in the hunk's trailing context: the first safe one after it, before the
            // next hunk (unchanged lines keep the hunk's end offset).
            let limit = hunks
                .get(h + 1)
                .map_or(safe.len(), |n| n.new_range().start());
            if let Some(at) = (new_no..limit).find(|&l| safe_at(l)) {
                let old = (at + old_no).saturating_sub(new_no);
                inserts.push((at, old));
                delta = old as isize - at as isize;
            }
        }
    }
    if inserts.is_empty() {
        return after.to_string();
    }
    let mut out = String::with_capacity(after.len() + inserts.len() * 16);
    let mut next = inserts.iter().peekable();
    for (i, line) in after.split_inclusive('\n').enumerate() {
        if let Some(&&(at, old)) = next.peek()
            && at == i + 1
        {
            out.push_str(&format!("#line {old}\n"));
            next.next();
        }
        out.push_str(line);
    }
    out
}

/// For each line of `text` (0-based), whether a preprocessor directive may start there.
fn safe_line_starts(text: &str) -> Vec<bool> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Code,
        Block,
        Line,
        Str(u8),
    }
    let bytes = text.as_bytes();
    let mut safe = vec![true];
    let mut state = State::Code;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        match state {
            State::Code => match (b, next) {
                (b'/', Some(b'*')) => {
                    state = State::Block;
                    i += 1;
                }
                (b'/', Some(b'/')) => state = State::Line,
                (b'"' | b'\'', _) => state = State::Str(b),
                _ => {}
            },
            State::Block => {
                if b == b'*' && next == Some(b'/') {
                    state = State::Code;
                    i += 1;
                }
            }
            State::Line => {}
            State::Str(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    state = State::Code;
                }
            }
        }
        if b == b'\n' {
            let continued = i > 0 && bytes[i - 1] == b'\\';
            if state == State::Line && !continued {
                state = State::Code;
            }
            if matches!(state, State::Str(_)) && !continued {
                state = State::Code;
            }
            safe.push(state == State::Code && !continued);
        }
        i += 1;
    }
    safe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_numbering_after_an_insertion() {
        let before = "a\nb\nc\nd\ne\n";
        let after = "a\nnew1\nnew2\nb\nc\nd\ne\n";
        let fixed = fix_line_numbers(before, after);
        assert_eq!(fixed, "a\nnew1\nnew2\n#line 2\nb\nc\nd\ne\n");
    }

    #[test]
    fn restores_numbering_after_a_deletion() {
        let before = "a\nb\nc\nd\ne\nf\n";
        let after = "a\nd\ne\nf\n";
        assert_eq!(fix_line_numbers(before, after), "a\n#line 4\nd\ne\nf\n");
    }

    #[test]
    fn inserted_lines_carry_the_patched_files_numbers() {
        let before = "a\nb\nc\n";
        let after = "a\nx\nb\ny\nc\n";
        // x is line 2 of the patched file without a directive; y needs one to be line 4.
        assert_eq!(
            fix_line_numbers(before, after),
            "a\nx\n#line 2\nb\n#line 4\ny\n#line 3\nc\n"
        );
    }

    #[test]
    fn a_file_emptied_or_filled_needs_nothing() {
        assert_eq!(fix_line_numbers("a\nb\n", ""), "");
        assert_eq!(fix_line_numbers("", "a\nb\n"), "a\nb\n");
    }

    #[test]
    fn same_line_count_needs_nothing() {
        assert_eq!(fix_line_numbers("a\nb\nc\n", "a\nB\nc\n"), "a\nB\nc\n");
    }

    #[test]
    fn a_change_deep_in_a_comment_is_fixed_after_it() {
        let before = "a\n/*\n c1\n c2\n c3\n c4\n c5\n */\nb\n";
        let after = "a\n/*\n c1\n added\n c2\n c3\n c4\n c5\n */\nb\n";
        // The hunk's context ends inside the comment; the directive goes before "b".
        assert_eq!(
            fix_line_numbers(before, after),
            "a\n/*\n c1\n added\n c2\n c3\n c4\n c5\n */\n#line 9\nb\n"
        );
    }

    #[test]
    fn never_inside_comments_or_macros() {
        let before = "x\n/* c1\nc2 */\n#define M \\\n  1\ny\n";
        let after = "x\nadded\n/* c1\nc2 */\n#define M \\\n  1\ny\n";
        let fixed = fix_line_numbers(before, after);
        // The first safe place is before "/* c1" (line 3 of the new text).
        assert_eq!(
            fixed,
            "x\nadded\n#line 2\n/* c1\nc2 */\n#define M \\\n  1\ny\n"
        );
        let after = "x\n/* c1\nadded\nc2 */\n#define M \\\n  1\ny\n";
        let fixed = fix_line_numbers(before, after);
        assert_eq!(
            fixed,
            "x\n/* c1\nadded\nc2 */\n#line 4\n#define M \\\n  1\ny\n"
        );
    }
}
