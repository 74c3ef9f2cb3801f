//! Names as the compiler numbers them, and what they mean.
//!
//! Two builds of one translation unit number their compiler-generated symbols differently (`count.3` vs
//! `count.5`, `foo.isra.0` vs `foo.isra.1`, `__UNIQUE_ID_ddebug412`), so symbols are correlated by a
//! canonical name with the numbers removed.

use std::borrow::Cow;

/// A local symbol's name without compiler numbering: `foo.isra.0` → `foo.isra`, `count.3` → `count`,
/// `__UNIQUE_ID_ddebug412` → `__UNIQUE_ID_ddebug`, `foo.llvm.1234` → `foo`.
pub fn canonical(name: &str) -> Cow<'_, str> {
    let name = match name.find(".llvm.") {
        Some(i) => &name[..i],
        None => name,
    };
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or("");
    let first = without_unique_id_number(first);
    let numbered = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !name.contains('.') {
        return Cow::Borrowed(first);
    }
    let mut out = String::with_capacity(name.len());
    out.push_str(first);
    for p in parts.filter(|p| !numbered(p)) {
        out.push('.');
        // clang names a static local after its function: `fn.__UNIQUE_ID_ddebug717`.
        out.push_str(without_unique_id_number(p));
    }
    if out == name {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(out)
    }
}

/// `__UNIQUE_ID_ddebug412` without its counter (`__UNIQUE_ID_ddebug`); other names as they are.
fn without_unique_id_number(part: &str) -> &str {
    if part.starts_with("__UNIQUE_ID_") {
        part.trim_end_matches(|c: char| c.is_ascii_digit())
    } else {
        part
    }
}

/// Static locals the kernel's macros create for their own bookkeeping. Their values belong to one build,
/// so patched code gets fresh copies instead of references to the running kernel's. gcc names a
/// static local `var.N` (`canonical`: `var`), clang `function.var`: the variable's own name is the
/// last part.
pub fn is_special_static(canonical: &str) -> bool {
    let canonical = canonical.rsplit('.').next().unwrap_or(canonical);
    const SPECIAL: [&str; 11] = [
        // printk's format index (PRINTK_INDEX): an entry (format, function, file, line) and the
        // pointer to it in `.printk_index`, read only by debugfs.
        "_entry",
        "_entry_ptr",
        "__key",
        "__warned",
        "__already_done",
        "__print_once",
        "__func__",
        "_rs",
        "CSWTCH",
        "__msg",
        "descriptor",
    ];
    SPECIAL.contains(&canonical)
        || canonical.starts_with("__UNIQUE_ID_ddebug")
        || canonical.starts_with("__UNIQUE_ID___addressable")
}

/// Sections the compiler makes for one anonymous object each with `-fdata-sections`, named after
/// its local label: clang's `.rodata..L.str.2` (a string literal it does not merge) and
/// `.rodata..L__unnamed_3`, gcc's UBSAN data (below). The labels are numbered in order, so one added
/// above renumbers every later one: such a section is known by its contents, never by its name.
pub fn is_anonymous_constant_section(name: &str) -> bool {
    name.contains("..L.str") || name.contains("..L__unnamed_") || is_sanitizer_site_section(name)
}

/// UBSAN's per-check data, one section each with `-fdata-sections` (gcc: `.data..Lubsan_data12`,
/// a source position and type pointers; `.data..Lubsan_type3`, a type descriptor). Writable only
/// for the bit the kernel sets once a check has reported: kernel bookkeeping of one build, so
/// patched code gets its own copy (the check may report once more), never the running kernel's.
pub fn is_sanitizer_site_section(name: &str) -> bool {
    name.contains("..Lubsan_")
}

/// Sections that carry nothing a livepatch module takes over (metadata, exports, debug info).
pub fn is_ignored_section(name: &str) -> bool {
    const PREFIXES: [&str; 18] = [
        ".comment",
        // PRINTK_INDEX: the running kernel's index keeps the formats it was built with.
        ".printk_index",
        ".note",
        ".debug",
        ".discard",
        ".modinfo",
        "__ksymtab",
        "__kcrctab",
        ".export_symbol",
        "__param",
        ".BTF",
        ".llvm",
        ".gnu",
        ".group",
        ".initcall",
        ".con_initcall",
        "__tracepoint_str",
        ".eh_frame",
    ];
    name.is_empty() || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Sections the kernel frees after boot or never keeps for a module: changing them cannot be patched.
pub fn is_init_section(name: &str) -> bool {
    name.starts_with(".init.")
        || name.starts_with(".exit.")
        || name == ".init"
        || name.starts_with(".head.text")
}

/// Padding and CFI symbols placed before functions (x86 `__pfx_foo`, `__cfi_foo`): not functions.
pub fn is_function_prefix(name: &str) -> bool {
    name.starts_with("__pfx_") || name.starts_with("__cfi_")
}

/// For a compiler-split child (`foo.cold`, `foo.part.3`), the canonical name of its parent.
pub fn child_parent(canonical: &str) -> Option<(&str, ChildKind)> {
    if let Some(p) = canonical.strip_suffix(".cold") {
        return Some((p, ChildKind::Cold));
    }
    if let Some(i) = canonical.find(".part")
        && (canonical[i..] == *".part" || canonical[i..].starts_with(".part."))
    {
        return Some((&canonical[..i], ChildKind::Part));
    }
    None
}

/// How a child function relates to its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildKind {
    /// Cold code split off the parent: entered by a jump, never called; changes with its parent.
    Cold,
    /// Partial inlining: a real function called by its parent, traceable on its own.
    Part,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_compiler_numbers() {
        assert_eq!(canonical("foo"), "foo");
        assert_eq!(canonical("count.3"), "count");
        assert_eq!(canonical("foo.isra.0"), "foo.isra");
        assert_eq!(canonical("foo.constprop.0.isra.0"), "foo.constprop.isra");
        assert_eq!(canonical("foo.cold"), "foo.cold");
        assert_eq!(canonical("foo.part.12.cold"), "foo.part.cold");
        assert_eq!(canonical("__UNIQUE_ID_ddebug412"), "__UNIQUE_ID_ddebug");
        assert_eq!(
            canonical("__account_locked_vm.__UNIQUE_ID_ddebug717"),
            "__account_locked_vm.__UNIQUE_ID_ddebug"
        );
        assert!(is_special_static("__account_locked_vm.__UNIQUE_ID_ddebug"));
        assert!(is_special_static("get_file.__already_done"));
        assert!(is_special_static("__vm_enough_memory._rs"));
        assert!(!is_special_static("run_cmd.envp"));
        assert_eq!(canonical("__func__.7"), "__func__");
        assert_eq!(canonical("foo.llvm.123456"), "foo");
        assert!(is_anonymous_constant_section(".rodata..L.str.2"));
        assert!(is_anonymous_constant_section(".rodata..L__unnamed_3"));
        assert!(!is_anonymous_constant_section(".rodata.str1.1"));
        assert!(is_anonymous_constant_section(".data..Lubsan_data130"));
        assert!(is_sanitizer_site_section(".data..Lubsan_type8"));
        assert!(!is_sanitizer_site_section(".data.ubsan_state"));
    }

    #[test]
    fn children() {
        assert_eq!(child_parent("foo.cold"), Some(("foo", ChildKind::Cold)));
        assert_eq!(child_parent("foo.part"), Some(("foo", ChildKind::Part)));
        assert_eq!(
            child_parent("foo.part.cold"),
            Some(("foo.part", ChildKind::Cold))
        );
        assert_eq!(child_parent("foo.partial"), None);
        assert_eq!(child_parent("foo"), None);
    }
}
