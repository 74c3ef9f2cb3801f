//! klpx's side tables: how livepatch relocations and patched-function records travel from the diff
//! object through `ld -r` and the module link to the module writer. Linkers merge or drop
//! `.klp.rela` sections and `SHN_LIVEPATCH` symbols, but carry ordinary data with ordinary
//! relocations, so the records are written as such. This module is the one place that knows the
//! layout; the diff object writer encodes it and the module writer decodes it.
//!
//! `.klpx.relocs`, 32-byte entries in target byte order:
//!   0  u64  place to relocate      (R_*_64 relocation against the patched section)
//!   8  u64  "object\0symbol\0source\0"  (R_*_64 relocation into `.klpx.strtab`)
//!   16 i64  addend
//!   24 u32  relocation type
//!   28 u32  reserved, 0
//!
//! `.klpx.funcs`, 24-byte entries:
//!   0  u64  new function           (R_*_64 relocation against its symbol)
//!   8  u64  "object\0old name\0source\0"
//!   16 u64  reserved, 0

use anyhow::{Result, anyhow};
use klpx_arch::Endian;

/// The section of livepatch relocation entries.
pub const RELOCS: &str = ".klpx.relocs";
/// The section of patched-function entries.
pub const FUNCS: &str = ".klpx.funcs";
/// The names the entries point at.
pub const STRTAB: &str = ".klpx.strtab";
/// What every side-table section's name starts with (and `.rela` + it, their relocations).
pub const PREFIX: &str = ".klpx.";

/// Size of one `.klpx.relocs` entry.
pub const RELOC_SIZE: usize = 32;
/// Size of one `.klpx.funcs` entry.
pub const FUNC_SIZE: usize = 24;

/// Offset in an entry of the field relocated to the place (or function) it describes.
pub const PLACE: u64 = 0;
/// Offset in an entry of the field relocated to its names in `.klpx.strtab`.
pub const NAMES: u64 = 8;

/// A `.klpx.relocs` entry's own bytes: the two relocated fields zero, then addend and type.
pub fn reloc_entry(endian: Endian, addend: i64, r_type: u32) -> [u8; RELOC_SIZE] {
    let mut e = [0u8; RELOC_SIZE];
    let (a, t) = match endian {
        Endian::Little => (addend.to_le_bytes(), r_type.to_le_bytes()),
        Endian::Big => (addend.to_be_bytes(), r_type.to_be_bytes()),
    };
    e[16..24].copy_from_slice(&a);
    e[24..28].copy_from_slice(&t);
    e
}

/// The addend and relocation type of a `.klpx.relocs` entry.
pub fn read_reloc_entry(endian: Endian, entry: &[u8]) -> Option<(i64, u32)> {
    let a: [u8; 8] = entry.get(16..24)?.try_into().ok()?;
    let t: [u8; 4] = entry.get(24..28)?.try_into().ok()?;
    Some(match endian {
        Endian::Little => (i64::from_le_bytes(a), u32::from_le_bytes(t)),
        Endian::Big => (i64::from_be_bytes(a), u32::from_be_bytes(t)),
    })
}

/// Appends an entry's names (`object\0symbol\0source\0`) to `strtab`; returns where they start.
pub fn add_names(strtab: &mut Vec<u8>, object: &str, symbol: &str, source: Option<&str>) -> u64 {
    let at = strtab.len() as u64;
    for part in [object, symbol, source.unwrap_or("")] {
        strtab.extend_from_slice(part.as_bytes());
        strtab.push(0);
    }
    at
}

/// The names at `at` of `.klpx.strtab`: object, symbol, and the source file when there is one.
pub fn read_names(strtab: &[u8], at: u64) -> Result<(String, String, Option<String>)> {
    let rest = strtab
        .get(at as usize..)
        .ok_or_else(|| anyhow!("{STRTAB}: offset {at:#x} out of range"))?;
    let mut parts = rest.split(|&b| b == 0);
    let mut next = || {
        parts
            .next()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .ok_or_else(|| anyhow!("{STRTAB}: unterminated entry at {at:#x}"))
    };
    let (o, s, src) = (next()?, next()?, next()?);
    Ok((o, s, (!src.is_empty()).then_some(src)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_names_read_back() {
        for endian in [Endian::Little, Endian::Big] {
            let e = reloc_entry(endian, -4, 0x1a);
            assert_eq!(read_reloc_entry(endian, &e), Some((-4, 0x1a)));
            assert_eq!(&e[..16], &[0; 16]);
        }
        let mut s = Vec::new();
        add_names(&mut s, "vmlinux", "x", None);
        let at = add_names(&mut s, "ext4", "y", Some("fs/ext4/inode.c"));
        assert_eq!(
            read_names(&s, at).unwrap(),
            ("ext4".into(), "y".into(), Some("fs/ext4/inode.c".into()))
        );
        assert_eq!(read_names(&s, 0).unwrap().2, None);
    }
}
