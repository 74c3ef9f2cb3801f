//! ppc64le (ELFv2): global and local entry; `mflr r0; bl _mcount` (-mprofile-kernel) or patchable-entry
//! NOPs after the local entry; calls leaving the module need a `nop` after the `bl` for the TOC restore.

use object::elf;

use crate::{
    Arch, Backend, Endian, FunctionCode, ImmediateLoad, ModuleReloc, RelocClass, ResolvedBranch,
    Site, SpecialSection, Triple, read_u32,
};

pub struct Ppc64le;

const NOP: u32 = 0x6000_0000;
const MFLR_R0: u32 = 0x7c08_02a6;
/// `object` lacks these ELFv2 power10 constants.
const R_PPC64_REL24_NOTOC: elf::RelocationType = elf::RelocationType(116);
const R_PPC64_PCREL34: elf::RelocationType = elf::RelocationType(132);

const SPECIAL: &[SpecialSection] = &[
    SpecialSection::table("__ex_table", &[8]),
    SpecialSection::table("__ftr_fixup", &[48]),
    SpecialSection::table("__mmu_ftr_fixup", &[48]),
    SpecialSection::table("__fw_ftr_fixup", &[48]),
    SpecialSection::table("__lwsync_fixup", &[8, 4]),
];

/// Byte offset of the local entry point encoded in an ELFv2 symbol's `st_other`.
pub fn local_entry_offset(st_other: u8) -> usize {
    match (st_other >> 5) & 7 {
        v @ 2..=6 => 1 << v,
        _ => 0,
    }
}

impl Backend for Ppc64le {
    fn arch(&self) -> Arch {
        Arch::Ppc64le
    }
    fn name(&self) -> &'static str {
        "ppc64le"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["ppc64el", "powerpc64le", "ppc64"]
    }
    fn kernel_arch(&self) -> &'static str {
        "powerpc"
    }
    fn elf_machine(&self) -> u16 {
        elf::EM_PPC64.0
    }
    fn endian(&self) -> Endian {
        Endian::Little
    }
    fn default_cross_prefix(&self) -> &'static str {
        "powerpc64le-linux-gnu-"
    }
    fn compiler_package(&self) -> &'static str {
        "gcc-powerpc64le-linux-gnu"
    }
    fn triple(&self) -> Triple {
        "powerpc64le-unknown-linux-gnu"
            .parse()
            .expect("valid triple")
    }
    fn config_fragment(&self) -> &'static str {
        include_str!("../../configs/ppc64le.config")
    }
    fn entry_convention(&self) -> &'static str {
        "-pg -mprofile-kernel: mflr r0; bl _mcount after the local entry (or -fpatchable-function-entry=2 NOPs); external calls need a nop for the TOC restore"
    }
    fn entry_cflags(&self) -> &'static [&'static str] {
        &["-pg", "-mprofile-kernel"]
    }
    fn kernel_cflags(&self) -> &'static [&'static str] {
        &[
            "-mcmodel=medium",
            "-mno-pointers-to-nested-functions",
            "-msoft-float",
            "-fno-pic",
        ]
    }
    fn livepatch_cflags(&self) -> &'static [&'static str] {
        &["-mcmodel=large"]
    }
    fn addend_convention(&self) -> &'static str {
        "call REL24 (+ nop for the TOC restore), TOC16_HA/LO(_DS) against .TOC./.toc entries, absolute ADDR64: addend = target offset exactly"
    }
    fn reloc_class(&self, r_type: u32) -> RelocClass {
        match elf::RelocationType(r_type) {
            elf::R_PPC64_REL24 | R_PPC64_REL24_NOTOC => RelocClass::Call,
            elf::R_PPC64_REL14
            | elf::R_PPC64_REL32
            | elf::R_PPC64_REL64
            | elf::R_PPC64_REL16_HA
            | elf::R_PPC64_REL16_LO
            | R_PPC64_PCREL34 => RelocClass::PcRel,
            elf::R_PPC64_ADDR64
            | elf::R_PPC64_ADDR32
            | elf::R_PPC64_ADDR16_HA
            | elf::R_PPC64_ADDR16_LO => RelocClass::Abs,
            elf::R_PPC64_TOC16
            | elf::R_PPC64_TOC16_HA
            | elf::R_PPC64_TOC16_LO
            | elf::R_PPC64_TOC16_HI
            | elf::R_PPC64_TOC16_DS
            | elf::R_PPC64_TOC16_LO_DS
            | elf::R_PPC64_TOC => RelocClass::Toc,
            _ => RelocClass::Other,
        }
    }
    /// Modules live at 0xc008..., far from the kernel's 0xc000...: outside the module only 64-bit
    /// fields reach, and calls, which the loader sends through a stub and must be a `bl` followed by
    /// the `nop` it turns into the TOC restore. TOC-relative fields reach the module's own TOC only.
    fn check_module_reloc(&self, r: &ModuleReloc) -> Result<(), String> {
        let t = elf::RelocationType(r.r_type);
        if !r.reach.external() {
            return Ok(());
        }
        match t {
            elf::R_PPC64_NONE | elf::R_PPC64_ADDR64 | elf::R_PPC64_REL64 => Ok(()),
            // The loader's own ftrace call sites need no TOC restore (module_64.c,
            // is_mprofile_ftrace_call).
            elf::R_PPC64_REL24
                if ["_mcount", "ftrace_caller", "ftrace_regs_caller"].contains(&r.symbol) =>
            {
                Ok(())
            }
            elf::R_PPC64_REL24 => {
                let word = |at: usize| {
                    r.place
                        .and_then(|b| b.get(at..at + 4))
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                };
                match (word(0), word(4)) {
                    (Some(insn), _) if insn & 0xfc00_0003 != 0x4800_0001 => Err(
                        "a branch without link (a sibling call) to outside the module cannot get \
                         its TOC restored"
                            .into(),
                    ),
                    (Some(_), Some(NOP)) => Ok(()),
                    (Some(_), _) => Err(
                        "a call to outside the module without the nop after it that the loader \
                         turns into the TOC restore"
                            .into(),
                    ),
                    (None, _) => Ok(()),
                }
            }
            elf::R_PPC64_TOC16
            | elf::R_PPC64_TOC16_HA
            | elf::R_PPC64_TOC16_LO
            | elf::R_PPC64_TOC16_HI
            | elf::R_PPC64_TOC16_DS
            | elf::R_PPC64_TOC16_LO_DS => Err(
                "a TOC-relative field reaches only the module's own TOC, not another object's data"
                    .into(),
            ),
            _ => Err(
                "a field shorter than 64 bits cannot reach from the module area (0xc008...) to the \
                 kernel or another module"
                    .into(),
            ),
        }
    }
    fn reloc_name(&self, r_type: u32) -> String {
        crate::reloc_name(self.elf_machine(), r_type)
    }
    /// binutils' `include/elf/ppc64.h` defines types the object crate's table lacks: 116 to 150
    /// (`R_PPC64_ENTRY` 118, which gcc puts at every global entry, and Power10's PCREL34 family)
    /// and the `REL16` and GNU types from 240 on.
    fn knows_reloc(&self, r_type: u32) -> bool {
        matches!(r_type, 116..=150 | 240..=254) || crate::has_reloc_name(self.elf_machine(), r_type)
    }
    fn target_offset(&self, _r_type: u32, addend: i64, _site: Site) -> i64 {
        addend
    }
    fn abs64(&self) -> u32 {
        elf::R_PPC64_ADDR64.0
    }
    fn find_entry(&self, f: &FunctionCode) -> Result<&'static str, String> {
        let local = local_entry_offset(f.st_other) as i64;
        let mcount = f.relocs.iter().any(|r| {
            r.target == "_mcount"
                && self.reloc_class(r.r_type) == RelocClass::Call
                && (local..=local + 12).contains(&r.offset)
        });
        let word = |off: i64| read_u32(Endian::Little, f.bytes, off as usize);
        if mcount && (word(local) == Some(MFLR_R0) || word(local + 4) == Some(MFLR_R0)) {
            return Ok("mflr r0; bl _mcount (-mprofile-kernel)");
        }
        if word(local) == Some(NOP) && word(local + 4) == Some(NOP)
            || f.entry_sites
                .iter()
                .any(|s| (local..=local + 4).contains(s))
        {
            return Ok("patchable-entry NOPs after the local entry");
        }
        Err(format!(
            "no mflr r0; bl _mcount or patchable-entry NOPs after the local entry at +{local} (the function is notrace)"
        ))
    }
    fn check_external_call(&self, f: &FunctionCode, index: usize) -> Result<(), String> {
        let r = &f.relocs[index];
        if self.reloc_class(r.r_type) != RelocClass::Call
            || r.target == "_mcount"
            || self.is_module_provided(r.target)
        {
            return Ok(());
        }
        let Some(insn) = read_u32(Endian::Little, f.bytes, r.offset as usize) else {
            return Ok(());
        };
        if insn & 1 == 0 {
            return Err(format!(
                "tail branch (sibling call) to {} at +{:#x} cannot come back through the TOC restore",
                r.target, r.offset
            ));
        }
        if read_u32(Endian::Little, f.bytes, r.offset as usize + 4) != Some(NOP) {
            return Err(format!(
                "call to {} at +{:#x} has no nop after it for the TOC restore (a call the compiler made local)",
                r.target, r.offset
            ));
        }
        Ok(())
    }
    fn check_external_reference(&self, r_type: u32) -> Result<(), String> {
        if self.reloc_class(r_type) == RelocClass::Toc {
            return Err(
                "a TOC-relative access cannot reach the running kernel's data from a module; \
                 build with -mcmodel=large so it goes through a TOC entry"
                    .to_string(),
            );
        }
        Ok(())
    }
    fn private_sections(&self) -> &'static [(&'static str, u64)] {
        &[(".toc", 8)]
    }
    fn resolved_branch(&self, code: &[u8], pos: usize) -> Option<ResolvedBranch> {
        let at = pos & !3;
        let insn = read_u32(Endian::Little, code, at)?;
        let sext = |v: u32, bits: u32| (((v << (32 - bits)) as i32) >> (32 - bits)) as i64;
        if insn & 2 != 0 {
            return None; // absolute (AA) branches carry no displacement
        }
        let offset = match insn >> 26 {
            18 => sext(insn & 0x03ff_fffc, 26), // b, bl
            16 => sext(insn & 0xfffc, 16),      // bc
            _ => return None,
        };
        Some(ResolvedBranch {
            field: (at, at + 4),
            target: at as i64 + offset,
        })
    }
    fn immediate_load(&self, code: &[u8], start: usize) -> Option<ImmediateLoad> {
        // li rD, simm16: addi (primary opcode 14) with RA = 0.
        if !start.is_multiple_of(4) {
            return None;
        }
        let insn = read_u32(Endian::Little, code, start)?;
        if insn >> 26 != 14 || (insn >> 16) & 0x1f != 0 {
            return None;
        }
        Some(ImmediateLoad {
            insn: (start, start + 4),
            register: (insn >> 21) & 0x1f,
            value: i64::from(insn as u16 as i16),
        })
    }
    fn special_sections(&self) -> &'static [SpecialSection] {
        SPECIAL
    }
    fn is_module_provided(&self, name: &str) -> bool {
        // arch/powerpc/lib/crtsavres.o is linked into every module built for size.
        const HELPERS: [&str; 8] = [
            "_savegpr0_",
            "_restgpr0_",
            "_savegpr1_",
            "_restgpr1_",
            "_savefpr_",
            "_restfpr_",
            "_savevr_",
            "_restvr_",
        ];
        name == ".TOC." || HELPERS.iter().any(|h| name.starts_with(h))
    }
    fn qemu_binary(&self) -> &'static str {
        "qemu-system-ppc64"
    }
    fn qemu_package(&self) -> &'static str {
        "qemu-system-ppc"
    }
    fn qemu_machine_args(&self) -> &'static [&'static str] {
        &["-M", "pseries"]
    }
    fn console(&self) -> &'static str {
        "hvc0"
    }
    fn config_marks(&self) -> &'static [&'static str] {
        &["CONFIG_PPC64", "CONFIG_CPU_LITTLE_ENDIAN"]
    }
    fn kernel_image(&self) -> &'static str {
        "vmlinux"
    }
    fn kernel_image_magic(&self) -> &'static [(usize, &'static [u8])] {
        // A 64-bit little-endian ELF for EM_PPC64 (qemu's pseries loads vmlinux).
        &[(0, b"\x7fELF\x02\x01"), (0x12, &[21, 0])]
    }
    fn reloc_field(&self, r_type: u32, offset: u64) -> (u64, u64) {
        // Half-word fields (TOC16_HA/LO) sit inside 4-byte instructions: the instruction.
        if r_type == self.abs64() {
            (offset, 8)
        } else {
            (offset & !3, 4)
        }
    }
    fn debian_arch(&self) -> &'static str {
        "ppc64el"
    }
    fn debian_flavour(&self) -> &'static str {
        "powerpc64le"
    }
    fn rpm_arch(&self) -> &'static str {
        "ppc64le"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_entry_from_st_other() {
        assert_eq!(super::local_entry_offset(0), 0);
        assert_eq!(super::local_entry_offset(3 << 5), 8);
        assert_eq!(super::local_entry_offset(2 << 5), 4);
    }
}
