//! x86_64: `-pg -mfentry`, `call __fentry__` (or objtool's 5-byte NOP) at entry, RELA with -4 addends.

use object::elf;

use crate::{
    Arch, Backend, Endian, FunctionCode, ImmediateLoad, ModuleReloc, RelocClass, ResolvedBranch,
    Site, SpecialSection, Triple,
};

pub struct X86_64;

const SPECIAL: &[SpecialSection] = &[
    SpecialSection::table("__ex_table", &[12]),
    SpecialSection {
        name: ".altinstructions",
        entry_sizes: &[14],
        parallel: None,
        companion: Some(".altinstr_replacement"),
        keys: None,
    },
    SpecialSection::table(".static_call_sites", &[8]).with_keys("static call key"),
    SpecialSection::table(".smp_locks", &[4]),
    SpecialSection {
        name: ".orc_unwind_ip",
        entry_sizes: &[4],
        parallel: Some((".orc_unwind", 6)),
        companion: None,
        keys: None,
    },
    SpecialSection::table(".retpoline_sites", &[4]),
    SpecialSection::table(".return_sites", &[4]),
    SpecialSection::table(".call_sites", &[4]),
    SpecialSection::table(".ibt_endbr_seal", &[4]),
    // objtool's annotations of the kernel's own code (include/linux/objtool.h, `.long 999b`, and
    // 6.13's `.discard.annotate_insn`): on IBT kernels objtool runs over the linked module and
    // needs them as it did for vmlinux (a paravirt `call *pv_ops` is retpoline-safe, a path after
    // a BUG is reachable); the module's final link discards them.
    SpecialSection::table(".discard.retpoline_safe", &[4]),
    SpecialSection::table(".discard.reachable", &[4]),
    SpecialSection::table(".discard.unreachable", &[4]),
    SpecialSection::table(".discard.noendbr", &[4]),
    SpecialSection::table(".discard.intra_function_calls", &[4]),
    SpecialSection::table(".discard.ignore_alts", &[4]),
    SpecialSection::table(".discard.instr_begin", &[4]),
    SpecialSection::table(".discard.instr_end", &[4]),
    SpecialSection::table(".discard.validate_unret", &[4]),
    SpecialSection::table(".discard.unwind_hints", &[12]),
    SpecialSection::table(".discard.annotate_insn", &[8]),
];

const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];

impl Backend for X86_64 {
    fn arch(&self) -> Arch {
        Arch::X86_64
    }
    fn name(&self) -> &'static str {
        "x86_64"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["x86-64", "amd64", "x86_64"]
    }
    fn kernel_arch(&self) -> &'static str {
        "x86"
    }
    fn elf_machine(&self) -> u16 {
        elf::EM_X86_64.0
    }
    fn endian(&self) -> Endian {
        Endian::Little
    }
    fn default_cross_prefix(&self) -> &'static str {
        ""
    }
    fn compiler_package(&self) -> &'static str {
        "gcc"
    }
    fn triple(&self) -> Triple {
        "x86_64-unknown-linux-gnu".parse().expect("valid triple")
    }
    fn config_fragment(&self) -> &'static str {
        include_str!("../../configs/x86_64.config")
    }
    fn entry_convention(&self) -> &'static str {
        "-pg -mfentry: call __fentry__ at entry (after ENDBR64 with IBT; objtool may turn it into a 5-byte NOP listed in __mcount_loc)"
    }
    fn entry_cflags(&self) -> &'static [&'static str] {
        &["-pg", "-mfentry", "-mrecord-mcount"]
    }
    fn kernel_cflags(&self) -> &'static [&'static str] {
        &[
            "-mcmodel=kernel",
            "-mno-red-zone",
            "-fno-pic",
            "-fno-PIE",
            "-mno-sse",
            "-mno-mmx",
            "-fcf-protection=none",
        ]
    }
    fn addend_convention(&self) -> &'static str {
        "call PLT32 and PC-relative PC32: addend = target - 4 (minus any immediate after the field); absolute 64/32S: addend = target; GOT: GOTPCREL(X)"
    }
    fn reloc_class(&self, r_type: u32) -> RelocClass {
        match elf::RelocationType(r_type) {
            elf::R_X86_64_PLT32 => RelocClass::Call,
            elf::R_X86_64_PC32 | elf::R_X86_64_PC64 => RelocClass::PcRel,
            elf::R_X86_64_64 | elf::R_X86_64_32 | elf::R_X86_64_32S => RelocClass::Abs,
            elf::R_X86_64_GOTPCREL | elf::R_X86_64_GOTPCRELX | elf::R_X86_64_REX_GOTPCRELX => {
                RelocClass::Got
            }
            _ => RelocClass::Other,
        }
    }
    /// arch/x86/kernel/module.c applies 64, 32, 32S, PC32, PLT32 and PC64, refuses to write over
    /// bytes that are not zero, and checks that 32-bit values fit: modules and the kernel live in the
    /// top 2 GiB, so PC32/PLT32/32S reach, a zero-extended 32 never does.
    fn check_module_reloc(&self, r: &ModuleReloc) -> Result<(), String> {
        let size = match elf::RelocationType(r.r_type) {
            elf::R_X86_64_NONE => return Ok(()),
            elf::R_X86_64_64 | elf::R_X86_64_PC64 => 8,
            elf::R_X86_64_32S | elf::R_X86_64_PC32 | elf::R_X86_64_PLT32 => 4,
            elf::R_X86_64_32 => {
                return Err(
                    "a zero-extended 32-bit address cannot hold a kernel or module address \
                     (they are in the top 2 GiB)"
                        .into(),
                );
            }
            _ => return Err("the x86_64 module loader does not apply this type".into()),
        };
        if let Some(bytes) = r.place
            && bytes.iter().take(size).any(|&b| b != 0)
        {
            return Err(
                "the relocated bytes are not zero; the kernel refuses to write over them".into(),
            );
        }
        Ok(())
    }
    fn reloc_name(&self, r_type: u32) -> String {
        crate::reloc_name(self.elf_machine(), r_type)
    }
    fn target_offset(&self, r_type: u32, addend: i64, site: Site) -> i64 {
        let Site::Code { bytes, offset } = site else {
            return addend;
        };
        match self.reloc_class(r_type) {
            // The CPU measures from the end of the instruction: the 32-bit field, plus any immediate
            // that follows it (`movb $1, x(%rip)` has addend -5).
            RelocClass::Call | RelocClass::PcRel | RelocClass::Got => {
                addend + 4 + immediate_after_rip_displacement(bytes, offset as usize)
            }
            _ => addend,
        }
    }
    fn abs64(&self) -> u32 {
        elf::R_X86_64_64.0
    }
    fn find_entry(&self, f: &FunctionCode) -> Result<&'static str, String> {
        let start = if f.bytes.starts_with(&ENDBR64) { 4 } else { 0 };
        let call = f.relocs.iter().any(|r| {
            r.offset == start as i64 + 1
                && r.target == "__fentry__"
                && f.bytes.get(start) == Some(&0xe8)
        });
        if call {
            return Ok("call __fentry__");
        }
        let nop = f.bytes.get(start..start + 5) == Some(&NOP5);
        if nop && f.entry_sites.contains(&(start as i64)) {
            return Ok("5-byte NOP listed in __mcount_loc");
        }
        // scripts/recordmcount makes the call of a function in a section off its list a NOP and its
        // relocation R_X86_64_NONE, listing it nowhere. Before Linux 5.8 the list named `.text` but
        // not `.text.NAME`, where -ffunction-sections (which klpx builds with) puts each function:
        // the kernel's own build, without it, has the function in `.text`, traced. In any other
        // section (`.noinstr.text`, `.entry.text`) it is untraced in the kernel too.
        let removed = nop
            && f.relocs.iter().any(|r| {
                r.offset == start as i64 + 1
                    && r.r_type == elf::R_X86_64_NONE.0
                    && r.target == "__fentry__"
            });
        if removed && f.section.starts_with(".text.") {
            return Ok(
                "call __fentry__ that recordmcount made a NOP in .text.NAME (traced in .text)",
            );
        }
        if removed {
            return Err(format!(
                "recordmcount made its call to __fentry__ a NOP in {}, which ftrace does not trace",
                f.section
            ));
        }
        Err(format!(
            "no call to __fentry__ at offset {start} (the function is notrace or noinstr)"
        ))
    }
    fn resolved_branch(&self, code: &[u8], pos: usize) -> Option<ResolvedBranch> {
        let byte = |i: usize| code.get(i).copied();
        let rel32 = |start: usize| -> Option<ResolvedBranch> {
            let d = i32::from_le_bytes(code.get(start..start + 4)?.try_into().ok()?);
            Some(ResolvedBranch {
                field: (start, start + 4),
                target: start as i64 + 4 + i64::from(d),
            })
        };
        // call/jmp rel32 (e8/e9), jcc rel32 (0f 80..8f), jmp/jcc rel8 (eb, 70..7f).
        for start in pos.saturating_sub(3)..=pos {
            let op = start.checked_sub(1).and_then(byte);
            let esc = start.checked_sub(2).and_then(byte);
            if matches!(op, Some(0xe8 | 0xe9))
                || (esc == Some(0x0f) && op.is_some_and(|b| b & 0xf0 == 0x80))
            {
                return rel32(start);
            }
        }
        let op = pos.checked_sub(1).and_then(byte)?;
        if op == 0xeb || op & 0xf0 == 0x70 {
            let d = byte(pos)? as i8;
            return Some(ResolvedBranch {
                field: (pos, pos + 1),
                target: pos as i64 + 1 + i64::from(d),
            });
        }
        None
    }
    fn immediate_load(&self, code: &[u8], start: usize) -> Option<ImmediateLoad> {
        // `mov $imm32, %r32` (b8+r), and `mov $imm32, r/m` with a register operand (c7 /0, mod 11),
        // each with an optional REX prefix (B selects r8-r15, W widens c7; b8+r with W is movabs).
        let first = *code.get(start)?;
        let (rex, at) = if first & 0xf0 == 0x40 {
            (first, start + 1)
        } else {
            (0, start)
        };
        let op = *code.get(at)?;
        let (imm_at, reg) = match op {
            0xb8..=0xbf if rex & 8 == 0 => (at + 1, op - 0xb8),
            0xc7 => match *code.get(at + 1)? {
                modrm if modrm & 0xf8 == 0xc0 => (at + 2, modrm & 7),
                _ => return None,
            },
            _ => return None,
        };
        let end = imm_at + 4;
        let value = i32::from_le_bytes(code.get(imm_at..end)?.try_into().ok()?);
        let register = u32::from(reg) + u32::from(rex & 1) * 8 + u32::from(rex & 8) * 32;
        Some(ImmediateLoad {
            insn: (start, end),
            register: register | u32::from(op) << 16,
            value: i64::from(value),
        })
    }
    /// With IBT (and clang LTO) kbuild runs objtool over the whole module at its link
    /// (scripts/Makefile.build `delay-objtool`), and objtool stops before writing ORC,
    /// `.return_sites`, `.call_sites` and the jump-label NOPs at the first call without a
    /// relocation ("unannotated intra-function call") or `__jump_table` entry without a key
    /// relocation (whose addend's bit 1 says whether the branch is likely). The module then warns
    /// "Unpatched return thunk in use", and the kernel BUGs when a key is switched. An
    /// `R_X86_64_NONE` against no symbol, with the addend, satisfies objtool (a call to an
    /// undefined symbol is a call out of the module, as it is); the module loader skips it, and
    /// the livepatch relocation writes the place.
    fn objtool_tables(&self) -> &'static [&'static str] {
        &[
            ".orc_unwind",
            ".orc_unwind_ip",
            ".return_sites",
            ".retpoline_sites",
            ".call_sites",
            ".static_call_sites",
            ".ibt_endbr_seal",
            ".cfi_sites",
        ]
    }
    /// scripts/Makefile.build: `delay-objtool := $(or $(CONFIG_LTO_CLANG),$(CONFIG_X86_KERNEL_IBT))`;
    /// then objtool runs once over each module (and over vmlinux.o), not per object, except over
    /// an object that is a module by itself, whose tables the patched object then carries.
    fn objtool_at_module_link(&self, config: &str) -> bool {
        config
            .lines()
            .any(|l| l == "CONFIG_X86_KERNEL_IBT=y" || l == "CONFIG_LTO_CLANG=y")
    }
    fn klp_placeholder(&self) -> Option<u32> {
        Some(elf::R_X86_64_NONE.0)
    }
    fn special_sections(&self) -> &'static [SpecialSection] {
        SPECIAL
    }
    fn qemu_binary(&self) -> &'static str {
        "qemu-system-x86_64"
    }
    fn qemu_package(&self) -> &'static str {
        "qemu-system-x86"
    }
    fn qemu_machine_args(&self) -> &'static [&'static str] {
        &[]
    }
    fn console(&self) -> &'static str {
        "ttyS0"
    }
    fn config_marks(&self) -> &'static [&'static str] {
        &["CONFIG_X86_64"]
    }
    fn kernel_image(&self) -> &'static str {
        "arch/x86/boot/bzImage"
    }
    /// Intel's VT-x and AMD's SVM.
    fn virtualization_flags(&self) -> &'static [&'static str] {
        &["vmx", "svm"]
    }
    fn kernel_image_magic(&self) -> &'static [(usize, &'static [u8])] {
        // The real-mode header's "HdrS" (Documentation/arch/x86/boot.rst).
        &[(0x202, b"HdrS")]
    }
    fn jump_label_len(&self, code: &[u8]) -> u64 {
        // `jmp rel8` (eb) or its 2-byte NOP (66 90); else `jmp rel32` or a 5-byte NOP.
        match code {
            [0xeb, ..] | [0x66, 0x90, ..] => 2,
            _ => 5,
        }
    }
    fn debian_arch(&self) -> &'static str {
        "amd64"
    }
    fn debian_flavour(&self) -> &'static str {
        "amd64"
    }
    fn rpm_arch(&self) -> &'static str {
        "x86_64"
    }
    fn guest_halt(&self) -> &'static str {
        // Tiny kernels have no ACPI, so a power-off hangs; a reboot ends qemu under -no-reboot.
        "reboot -f"
    }
}

/// Size of the immediate operand that follows a RIP-relative displacement at `field` in `code`, for the
/// instructions compilers emit with both (mov/alu/test/imul/shift/bt with an immediate, SSE with imm8).
/// The displacement follows a ModRM byte with mod=00, rm=101; the opcode precedes the ModRM.
pub fn immediate_after_rip_displacement(code: &[u8], field: usize) -> i64 {
    let at = |back: usize| field.checked_sub(back).and_then(|i| code.get(i)).copied();
    let Some(modrm) = at(1) else { return 0 };
    if modrm & 0xc7 != 0x05 {
        return 0;
    }
    let reg = (modrm >> 3) & 7;
    // An operand-size prefix before the opcode (and an optional REX) turns imm32 into imm16.
    let opsize16 =
        at(3) == Some(0x66) || (at(3).is_some_and(|b| b & 0xf0 == 0x40) && at(4) == Some(0x66));
    let imm_z = if opsize16 { 2 } else { 4 };
    match (at(3), at(2)) {
        (Some(0x0f), Some(0xba)) => 1,
        (_, Some(0xc6 | 0x80 | 0x82 | 0x83 | 0x6b | 0xc0 | 0xc1)) => 1,
        (_, Some(0xc7 | 0x81 | 0x69)) => imm_z,
        (_, Some(0xf6)) if reg <= 1 => 1,
        (_, Some(0xf7)) if reg <= 1 => imm_z,
        _ if at(3) == Some(0x3a) && at(4) == Some(0x0f) => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::immediate_after_rip_displacement as imm;

    #[test]
    fn immediates_after_rip_relative_fields() {
        // movl $0x1,0x0(%rip): c7 05 <disp32> <imm32>
        assert_eq!(imm(&[0xc7, 0x05, 0, 0, 0, 0, 1, 0, 0, 0], 2), 4);
        // movb $0x1,0x0(%rip): c6 05 <disp32> <imm8>
        assert_eq!(imm(&[0xc6, 0x05, 0, 0, 0, 0, 1], 2), 1);
        // movw $0x1,0x0(%rip): 66 c7 05 <disp32> <imm16>
        assert_eq!(imm(&[0x66, 0xc7, 0x05, 0, 0, 0, 0, 1, 0], 3), 2);
        // cmpq $0x0,0x0(%rip): 48 83 3d <disp32> <imm8>
        assert_eq!(imm(&[0x48, 0x83, 0x3d, 0, 0, 0, 0, 0], 3), 1);
        // lea 0x0(%rip),%rax: 48 8d 05 <disp32>
        assert_eq!(imm(&[0x48, 0x8d, 0x05, 0, 0, 0, 0], 3), 0);
        // call <rel32>: e8 <rel32>
        assert_eq!(imm(&[0xe8, 0, 0, 0, 0], 1), 0);
        // testb $0x1,0x0(%rip): f6 05 <disp32> <imm8>
        assert_eq!(imm(&[0xf6, 0x05, 0, 0, 0, 0, 1], 2), 1);
        // notl 0x0(%rip): f7 15 <disp32> (reg 2: no immediate)
        assert_eq!(imm(&[0xf7, 0x15, 0, 0, 0, 0], 2), 0);
    }
}
