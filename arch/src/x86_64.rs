//! x86_64: `-pg -mfentry`, `call __fentry__` (or objtool's 5-byte NOP) at entry, RELA with -4 addends.

use object::elf;

use crate::{Arch, Backend, Endian, FunctionCode, RelocClass, SpecialSection, Triple};

pub struct X86_64;

const SPECIAL: &[SpecialSection] = &[
    SpecialSection::table("__ex_table", &[12]),
    SpecialSection {
        name: ".altinstructions",
        entry_sizes: &[14],
        parallel: None,
        companion: Some(".altinstr_replacement"),
    },
    SpecialSection::table(".static_call_sites", &[8]),
    SpecialSection::table(".smp_locks", &[4]),
    SpecialSection {
        name: ".orc_unwind_ip",
        entry_sizes: &[4],
        parallel: Some((".orc_unwind", 6)),
        companion: None,
    },
    SpecialSection::table(".retpoline_sites", &[4]),
    SpecialSection::table(".return_sites", &[4]),
    SpecialSection::table(".call_sites", &[4]),
    SpecialSection::table(".ibt_endbr_seal", &[4]),
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
    fn reloc_name(&self, r_type: u32) -> String {
        crate::reloc_name(self.elf_machine(), r_type)
    }
    fn target_offset(&self, r_type: u32, addend: i64, in_code: bool) -> i64 {
        if !in_code {
            return addend;
        }
        match self.reloc_class(r_type) {
            // The CPU measures from the end of the instruction; for the common forms the 32-bit field is
            // its last four bytes.
            RelocClass::Call | RelocClass::PcRel | RelocClass::Got => addend + 4,
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
        if f.bytes.get(start..start + 5) == Some(&NOP5) && f.entry_sites.contains(&(start as i64)) {
            return Ok("5-byte NOP listed in __mcount_loc");
        }
        Err(format!(
            "no call to __fentry__ at offset {start} (the function is notrace or noinstr)"
        ))
    }
    fn special_sections(&self) -> &'static [SpecialSection] {
        SPECIAL
    }
}
