//! Splits special sections (tables of fixed-size entries pointing at code) into their entries.
//!
//! Entry sizes depend on the kernel version and configuration, so the backend offers candidates and the
//! split is checked against the relocations: every entry must carry the same pattern of relocated
//! fields. When no candidate fits, the smallest period that does is used.

use klpx_arch::SpecialSection;

use crate::objfile::ObjectFile;

/// The `[start, end)` byte ranges of a special section's entries.
pub fn split_entries(
    obj: &ObjectFile,
    sec: usize,
    spec: &SpecialSection,
) -> Result<Vec<(u64, u64)>, String> {
    let section = &obj.sections[sec];
    let size = section.size;
    if size == 0 {
        return Ok(Vec::new());
    }
    let declared = (section.entsize > 0).then_some(section.entsize);
    let fits = |n: u64| n > 0 && size.is_multiple_of(n) && consistent(obj, sec, n);
    let chosen = declared
        .into_iter()
        .chain(spec.entry_sizes.iter().copied())
        .find(|&n| fits(n))
        .or_else(|| (4..=size.min(256)).find(|&n| fits(n)));
    match chosen {
        Some(n) => Ok((0..size / n).map(|i| (i * n, (i + 1) * n)).collect()),
        None => Err(format!(
            "cannot split {} ({size} bytes) into entries of a known size ({:?})",
            spec.name, spec.entry_sizes
        )),
    }
}

/// Whether every entry of size `n` has relocations at the same in-entry offsets (and at least one).
fn consistent(obj: &ObjectFile, sec: usize, n: u64) -> bool {
    let section = &obj.sections[sec];
    let mut pattern: Option<Vec<u64>> = None;
    let mut relocs = obj.relocs(sec).iter().peekable();
    for i in 0..section.size / n {
        let (start, end) = (i * n, (i + 1) * n);
        let mut here = Vec::new();
        while let Some(r) = relocs.next_if(|r| r.offset < end) {
            here.push(r.offset - start);
        }
        if here.is_empty() {
            return false;
        }
        match &pattern {
            None => pattern = Some(here),
            Some(p) if *p != here => return false,
            Some(_) => {}
        }
    }
    true
}
