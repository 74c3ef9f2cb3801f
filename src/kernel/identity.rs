//! Proof that a rebuilt original function is the shipped kernel's: the code klpx compiled from the
//! unpatched source is compared, byte for byte, with the same function in the kernel the livepatch
//! is for. What either link may have written is left out: every relocated field, and the jump-label
//! sites objtool rewrites. A difference means the source, the config or the compiler is not the
//! kernel's, and a livepatch built from them would replace the function with something else.

use anyhow::Result;
use object::{Object, ObjectSection};

use crate::objfile::ObjectFile;
use crate::objfile::SymKind;

/// The code of a linked kernel (vmlinux), by address.
pub struct KernelImage<'d> {
    file: object::File<'d>,
}

impl<'d> KernelImage<'d> {
    pub fn parse(data: &'d [u8]) -> Result<KernelImage<'d>> {
        Ok(KernelImage {
            file: object::File::parse(data)?,
        })
    }

    /// `len` bytes at address `addr`, when one allocated section with contents holds them (debug
    /// sections sit at address 0 and may span a low-based kernel's addresses: s390's starts at 1 MiB).
    pub fn code(&self, addr: u64, len: u64) -> Option<&'d [u8]> {
        self.file.sections().find_map(|s| {
            let alloc = match s.flags() {
                object::SectionFlags::Elf { sh_flags, .. } => {
                    sh_flags.0 & object::elf::SHF_ALLOC.0 != 0
                }
                _ => true,
            };
            if !alloc {
                return None;
            }
            let start = s.address();
            if addr < start || addr + len > start + s.size() {
                return None;
            }
            let data = s.data().ok()?;
            let at = (addr - start) as usize;
            data.get(at..at + len as usize)
        })
    }
}

/// Compares function `name` of `orig` with `shipped`, its code in the kernel; returns the offset of
/// the first byte that differs, or `None` when they are the same function.
pub fn first_difference(
    orig: &ObjectFile,
    name: &str,
    shipped: &[u8],
) -> Result<Option<u64>, String> {
    let sym = orig
        .symbols
        .iter()
        .position(|s| s.name == name && s.kind == SymKind::Func && s.section.is_some())
        .ok_or_else(|| format!("{name}: not a function of {}", orig.path))?;
    let s = &orig.symbols[sym];
    let sec = s.sec().expect("defined");
    let code = orig.symbol_bytes(sym);
    if code.len() as u64 != s.size || shipped.len() as u64 != s.size {
        return Ok(Some(0));
    }
    let backend = orig.backend();
    let mut masked = vec![false; code.len()];
    let mut mask = |start: u64, len: u64| {
        for i in start..start + len {
            if i >= s.value && i < s.value + s.size {
                masked[(i - s.value) as usize] = true;
            }
        }
    };
    for r in orig.relocs_in(sec, s.value, s.value + s.size) {
        let (start, len) = backend.reloc_field(r.r_type, r.offset);
        mask(start, len);
    }
    // Jump-label sites: the first field of each __jump_table entry names one.
    if let Some(table) = orig.sections.iter().position(|t| t.name == "__jump_table") {
        let entry = klpx_arch::special_section(backend, "__jump_table")
            .and_then(|t| t.entry_sizes.first().copied())
            .unwrap_or(16);
        for r in orig.relocs(table) {
            if r.offset % entry != 0 {
                continue;
            }
            let t = &orig.symbols[r.sym()];
            if t.sec() != Some(sec) {
                continue;
            }
            let site = backend.target_offset(r.r_type, r.addend, orig.site(table, r.offset))
                + t.value as i64;
            if site < s.value as i64 || site >= (s.value + s.size) as i64 {
                continue;
            }
            let at = (site as u64 - s.value) as usize;
            let len = backend.jump_label_len(&code[at..]);
            mask(site as u64, len);
        }
    }
    Ok(code
        .iter()
        .zip(shipped)
        .enumerate()
        .find(|(i, (a, b))| !masked[*i] && a != b)
        .map(|(i, _)| i as u64))
}
