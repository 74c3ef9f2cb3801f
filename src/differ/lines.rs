//! Line-number-only changes. The kernel's checking and reporting macros pass `__FILE__` and
//! `__LINE__` to a function (`might_sleep()` to `__might_sleep`, `ASSERT_RTNL()` and `WARN()` to
//! `__warn_printk`, `rcu_dereference_check()` to `lockdep_rcu_suspicious`), so lines inserted above
//! a function change the constants it loads although nothing it does changed. Objects that
//! `klpx build` compiles keep their line numbers (it adds `#line` directives after each change);
//! objects compiled elsewhere do not, and without this rule a patch adding lines near the top of
//! `net/core/dev.c` would report 43 changed functions where none changed.
//!
//! The rule (kpatch applies a similar one): a function is unchanged when every byte that differs is
//! the immediate of a load of a constant into a register (the architecture says which instructions
//! those are), the same register in both builds, both values between 1 and [`MAX_LINE`], the next
//! call after it goes to one of [`LINE_TAKERS`], and the arguments of that call include a string
//! naming a source file (`.c` or `.h`): `__FILE__`. Everything else (the relocations included) must
//! be the same.

use klpx_arch::{MAX_IMMEDIATE_LOAD, RelocClass};

use super::compare::{Side, Target, target};

/// Functions the kernel's macros hand `__FILE__` and `__LINE__` to, across kernel generations
/// (`warn_slowpath_fmt` before 4.16 on x86, `__warn_printk` since; `_printk` since 5.15).
pub const LINE_TAKERS: &[&str] = &[
    "__might_sleep",
    "__might_resched",
    "__might_fault",
    "___might_sleep",
    "__cant_sleep",
    "__cant_migrate",
    "lockdep_rcu_suspicious",
    "__warn_printk",
    "warn_slowpath_fmt",
    "warn_slowpath_null",
    "_printk",
    "printk",
    "__jbd2_debug",
];

/// The largest constant taken for a line number.
pub const MAX_LINE: i64 = 1 << 20;

/// When the byte at `i` (from the symbols' starts) differs because of a line number, where the
/// load holding it ends (from the symbols' starts).
pub fn line_number_at(o: Side, p: Side, i: usize) -> Option<usize> {
    (i.saturating_sub(MAX_IMMEDIATE_LOAD - 1)..=i).find_map(|start| line_load(o, p, start, i))
}

/// The end of the load starting at `start` (from the symbols' starts) when it covers byte `i` and
/// holds a line number in both builds.
fn line_load(o: Side, p: Side, start: usize, i: usize) -> Option<usize> {
    let backend = p.obj.backend();
    let ol = backend.immediate_load(o.code(), o.start as usize + start)?;
    let pl = backend.immediate_load(p.code(), p.start as usize + start)?;
    let end = pl.insn.1 - p.start as usize;
    if ol.insn.1 - o.start as usize != end || end <= i || ol.register != pl.register {
        return None;
    }
    let is_line = |v: i64| (1..=MAX_LINE).contains(&v);
    if !is_line(ol.value) || !is_line(pl.value) {
        return None;
    }
    // The relocations are compared separately and must mean the same in both builds: looking at
    // the patched side's is enough.
    let len = p.end - p.start;
    let is_call = |r: &&crate::objfile::Reloc| backend.reloc_class(r.r_type) == RelocClass::Call;
    let call = p.relocs(end as u64, len).iter().find(is_call)?;
    if !LINE_TAKERS.contains(&p.obj.symbols[call.sym()].name) {
        return None;
    }
    let call_at = call.offset - p.start;
    let window_start = p
        .relocs(0, start as u64)
        .iter()
        .rev()
        .find(is_call)
        .map_or(0, |r| r.offset - p.start + 1);
    let names_file = p.relocs(window_start, call_at).iter().any(|r| {
        let text = match target(p.obj, p.keys, r, p.sec) {
            Target::Str { text, .. } => Some(text),
            Target::Indirect { to, .. } => match *to {
                Target::Str { text, .. } => Some(text),
                _ => None,
            },
            _ => None,
        };
        text.is_some_and(is_source_file_name)
    });
    names_file.then_some(end)
}

/// Whether two relocation targets differ only in line numbers: strings that quote a source
/// position (`"... at net/core/dev.c:10742"`, the `FILE_LINE` of fortify's warnings) and dynamic
/// debug descriptors (`__UNIQUE_ID_ddebug*`, whose `lineno` bit-field moves with the line of the
/// `pr_debug`).
pub fn same_but_lines(a: &Target, b: &Target, big_endian: bool) -> bool {
    match (a, b) {
        (Target::Str { text: x, inner: i }, Target::Str { text: y, inner: j }) => {
            i == j && x != y && without_positions(x) == without_positions(y)
        }
        (
            Target::Special {
                name: n,
                bytes: x,
                addend: i,
            },
            Target::Special {
                name: m,
                bytes: y,
                addend: j,
            },
        ) => {
            // gcc's `__UNIQUE_ID_ddebug`, clang's `function.__UNIQUE_ID_ddebug`.
            n == m
                && i == j
                && n.rsplit('.').next() == Some("__UNIQUE_ID_ddebug")
                && ddebug_line_only(x, y, big_endian)
        }
        (
            Target::SiteData {
                bytes: x,
                addend: i,
            },
            Target::SiteData {
                bytes: y,
                addend: j,
            },
        ) => i == j && sanitizer_line_only(x, y, big_endian),
        (Target::Indirect { via: v, to: x }, Target::Indirect { via: w, to: y }) => {
            v == w && same_but_lines(x, y, big_endian)
        }
        _ => false,
    }
}

/// `text` with the digits of every `.c:N` and `.h:N` replaced by `#`.
fn without_positions(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        out.push(text[i]);
        i += 1;
        if out.ends_with(b".c:") || out.ends_with(b".h:") {
            let digits = text[i..].iter().take_while(|b| b.is_ascii_digit()).count();
            if digits > 0 {
                out.push(b'#');
                i += digits;
            }
        }
    }
    out
}

/// The 32-bit word at `at` of `bytes` (which the caller checked holds it), in the target's order.
fn u32_at(bytes: &[u8], at: usize, big_endian: bool) -> u32 {
    let w: [u8; 4] = bytes[at..at + 4].try_into().expect("four bytes");
    if big_endian {
        u32::from_be_bytes(w)
    } else {
        u32::from_le_bytes(w)
    }
}

/// Whether the data of two UBSAN checks differ only in the line of their source position. Each
/// starts with `struct source_location` (lib/ubsan.h: the file name pointer, then the 32-bit
/// `line` and `column`); on these 64-bit kernels the line is bytes 8..12.
fn sanitizer_line_only(a: &[u8], b: &[u8], big_endian: bool) -> bool {
    const LINE: usize = 8;
    if a.len() != b.len() || a.len() < LINE + 8 {
        return false;
    }
    let line = |x: &[u8]| u32_at(x, LINE, big_endian);
    let plausible = |l: u32| (1..1 << 20).contains(&l);
    a[..LINE] == b[..LINE]
        && a[LINE + 4..] == b[LINE + 4..]
        && line(a) != line(b)
        && plausible(line(a))
        && plausible(line(b))
}

/// Whether two `struct _ddebug` (include/linux/dynamic_debug.h: four pointers, then the 32-bit word
/// holding `lineno:18`, `class_id:6`, `flags:8`, then the static key) differ only in `lineno`, the
/// word's first bit-field: its low bits on little-endian machines, its high bits on big-endian.
fn ddebug_line_only(a: &[u8], b: &[u8], big_endian: bool) -> bool {
    const WORD: usize = 32;
    if a.len() != b.len() || a.len() < WORD + 4 {
        return false;
    }
    let word = |x: &[u8]| u32_at(x, WORD, big_endian);
    let lineno: u32 = if big_endian { !0 << 14 } else { (1 << 18) - 1 };
    a[..WORD] == b[..WORD]
        && a[WORD + 4..] == b[WORD + 4..]
        && word(a) & !lineno == word(b) & !lineno
}

/// Whether a string is a source file's name as `__FILE__` spells it (`net/core/dev.c`, or an
/// absolute path without `-fmacro-prefix-map`).
pub(super) fn is_source_file_name(text: &[u8]) -> bool {
    (text.ends_with(b".c") || text.ends_with(b".h"))
        && text.len() > 2
        && !text
            .iter()
            .any(|&b| b.is_ascii_whitespace() || b == b'%' || !b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `struct source_location` then a type pointer, as gcc lays out `.Lubsan_data` (line 939,
    /// column 2 in kernel/panic.o; 944 once five lines were added above).
    fn ubsan_data(line: u32, column: u32) -> Vec<u8> {
        let mut d = vec![0u8; 8];
        d.extend(line.to_le_bytes());
        d.extend(column.to_le_bytes());
        d.extend([0u8; 8]);
        d
    }

    #[test]
    fn ubsan_data_differ_in_line_only() {
        assert!(sanitizer_line_only(
            &ubsan_data(939, 2),
            &ubsan_data(944, 2),
            false
        ));
        assert!(!sanitizer_line_only(
            &ubsan_data(939, 2),
            &ubsan_data(939, 5),
            false
        ));
        assert!(!sanitizer_line_only(
            &ubsan_data(939, 2),
            &ubsan_data(939, 2),
            false
        ));
        assert!(!sanitizer_line_only(
            &ubsan_data(939, 2),
            &ubsan_data(0, 2),
            false
        ));
        let mut other_type = ubsan_data(944, 2);
        other_type[20] = 1;
        assert!(!sanitizer_line_only(
            &ubsan_data(939, 2),
            &other_type,
            false
        ));
    }

    #[test]
    fn quoted_positions_are_line_only() {
        let s = |t: &'static [u8]| Target::Str { text: t, inner: 0 };
        let a = s(b"field \"dev->perm_addr\" at net/core/dev.c:10742");
        let b = s(b"field \"dev->perm_addr\" at net/core/dev.c:10747");
        assert!(same_but_lines(&a, &b, false));
        let c = s(b"field \"dev->perm_addr\" at net/core/dev.c:10747 (x)");
        assert!(!same_but_lines(&a, &c, false));
        // A changed number that is not a position is a change.
        assert!(!same_but_lines(&s(b"limit 10"), &s(b"limit 11"), false));
    }

    #[test]
    fn ddebug_descriptors_differ_in_lineno_only() {
        // The word at 32 of a real descriptor (net/core/dev.o, Debian's amd64 config): lineno 7933,
        // class_id 63 (_DPRINTK_CLASS_DFLT), no flags; the patched build's line is 7938.
        let mut a = vec![0u8; 56];
        let mut b = vec![0u8; 56];
        a[32..36].copy_from_slice(&0x00fc_1efd_u32.to_le_bytes());
        b[32..36].copy_from_slice(&0x00fc_1f02_u32.to_le_bytes());
        assert!(ddebug_line_only(&a, &b, false));
        // The flags byte changed (a `+p` default): not a line-only change.
        b[35] = 1;
        assert!(!ddebug_line_only(&a, &b, false));
        // Big-endian: lineno is the word's top 18 bits.
        let (mut c, mut d) = (vec![0u8; 56], vec![0u8; 56]);
        c[32..36].copy_from_slice(&(7933u32 << 14 | 63 << 8).to_be_bytes());
        d[32..36].copy_from_slice(&(7938u32 << 14 | 63 << 8).to_be_bytes());
        assert!(ddebug_line_only(&c, &d, true));
        assert!(!ddebug_line_only(&c, &d, false));
    }

    #[test]
    fn file_names_are_told_from_messages() {
        assert!(is_source_file_name(b"net/core/dev.c"));
        assert!(is_source_file_name(
            b"/usr/src/linux/include/linux/rcupdate.h"
        ));
        assert!(!is_source_file_name(b"RTNL: assertion failed at %s (%d)\n"));
        assert!(!is_source_file_name(b"see dev.c"));
        assert!(!is_source_file_name(b".c"));
    }
}
