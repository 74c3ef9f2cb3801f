//! arm64: `-fpatchable-function-entry=2` (or `4,2` with CALL_OPS): two NOPs at entry, maybe after `BTI C`.

use object::elf;

use crate::{
    Arch, Backend, Endian, FunctionCode, ImmediateLoad, ModuleReloc, Reach, RelocClass,
    ResolvedBranch, Site, SpecialSection, Triple, read_u32,
};

pub struct Arm64;

const NOP: u32 = 0xd503_201f;
const BTI_C: u32 = 0xd503_245f;
const PACIASP: u32 = 0xd503_233f;

const SPECIAL: &[SpecialSection] = &[
    SpecialSection::table("__ex_table", &[12]),
    SpecialSection {
        name: ".altinstructions",
        entry_sizes: &[12],
        parallel: None,
        companion: Some(".altinstr_replacement"),
        keys: None,
    },
];

impl Backend for Arm64 {
    fn arch(&self) -> Arch {
        Arch::Arm64
    }
    fn name(&self) -> &'static str {
        "arm64"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["aarch64"]
    }
    fn kernel_arch(&self) -> &'static str {
        "arm64"
    }
    fn elf_machine(&self) -> u16 {
        elf::EM_AARCH64.0
    }
    fn endian(&self) -> Endian {
        Endian::Little
    }
    fn default_cross_prefix(&self) -> &'static str {
        "aarch64-linux-gnu-"
    }
    fn compiler_package(&self) -> &'static str {
        "gcc-aarch64-linux-gnu"
    }
    fn triple(&self) -> Triple {
        "aarch64-unknown-linux-gnu".parse().expect("valid triple")
    }
    fn config_fragment(&self) -> &'static str {
        include_str!("../../configs/arm64.config")
    }
    fn entry_convention(&self) -> &'static str {
        "-fpatchable-function-entry=2 (4,2 with CALL_OPS): two NOPs at entry, after BTI C when BTI is on; sites in __patchable_function_entries"
    }
    fn entry_cflags(&self) -> &'static [&'static str] {
        &["-fpatchable-function-entry=2"]
    }
    fn kernel_cflags(&self) -> &'static [&'static str] {
        &[
            "-mgeneral-regs-only",
            "-fno-pic",
            "-fno-PIE",
            "-mbranch-protection=none",
        ]
    }
    fn addend_convention(&self) -> &'static str {
        "call CALL26/JUMP26, PC-relative ADRP+ADD/LDST pairs and PREL32, absolute ABS64: addend = target offset exactly"
    }
    fn reloc_class(&self, r_type: u32) -> RelocClass {
        match elf::RelocationType(r_type) {
            elf::R_AARCH64_CALL26 | elf::R_AARCH64_JUMP26 => RelocClass::Call,
            elf::R_AARCH64_PREL64
            | elf::R_AARCH64_PREL32
            | elf::R_AARCH64_PREL16
            | elf::R_AARCH64_ADR_PREL_PG_HI21
            | elf::R_AARCH64_ADR_PREL_PG_HI21_NC
            | elf::R_AARCH64_ADR_PREL_LO21
            | elf::R_AARCH64_CONDBR19
            | elf::R_AARCH64_TSTBR14 => RelocClass::PcRel,
            elf::R_AARCH64_ABS64
            | elf::R_AARCH64_ABS32
            | elf::R_AARCH64_ABS16
            | elf::R_AARCH64_ADD_ABS_LO12_NC
            | elf::R_AARCH64_LDST8_ABS_LO12_NC
            | elf::R_AARCH64_LDST16_ABS_LO12_NC
            | elf::R_AARCH64_LDST32_ABS_LO12_NC
            | elf::R_AARCH64_LDST64_ABS_LO12_NC
            | elf::R_AARCH64_LDST128_ABS_LO12_NC
            | elf::R_AARCH64_MOVW_UABS_G0
            | elf::R_AARCH64_MOVW_UABS_G0_NC
            | elf::R_AARCH64_MOVW_UABS_G1
            | elf::R_AARCH64_MOVW_UABS_G1_NC
            | elf::R_AARCH64_MOVW_UABS_G2
            | elf::R_AARCH64_MOVW_UABS_G2_NC
            | elf::R_AARCH64_MOVW_UABS_G3 => RelocClass::Abs,
            elf::R_AARCH64_ADR_GOT_PAGE | elf::R_AARCH64_LD64_GOT_LO12_NC => RelocClass::Got,
            _ => RelocClass::Other,
        }
    }
    /// Modules are placed within 2 GiB of the kernel (branches beyond 128 MiB go through module
    /// PLTs): ADRP pages (±4 GiB), 32- and 64-bit fields and calls reach; the short PC-relative
    /// forms do not. A `LDST*_ABS_LO12_NC` field drops the low bits of the target silently, so the
    /// target must be aligned to the access size.
    fn check_module_reloc(&self, r: &ModuleReloc) -> Result<(), String> {
        let t = elf::RelocationType(r.r_type);
        let align = match t {
            elf::R_AARCH64_LDST16_ABS_LO12_NC => 2,
            elf::R_AARCH64_LDST32_ABS_LO12_NC => 4,
            elf::R_AARCH64_LDST64_ABS_LO12_NC => 8,
            elf::R_AARCH64_LDST128_ABS_LO12_NC => 16,
            _ => 1,
        };
        if let Reach::Kernel { address: Some(a) } = r.reach
            && a % align != 0
        {
            return Err(format!(
                "the target {a:#x} is not {align}-byte aligned; the load/store field would drop \
                 its low bits"
            ));
        }
        if !r.reach.external() {
            return Ok(());
        }
        match t {
            elf::R_AARCH64_NONE
            | elf::R_AARCH64_ABS64
            | elf::R_AARCH64_PREL64
            | elf::R_AARCH64_PREL32
            | elf::R_AARCH64_CALL26
            | elf::R_AARCH64_JUMP26
            | elf::R_AARCH64_ADR_PREL_PG_HI21
            | elf::R_AARCH64_ADR_PREL_PG_HI21_NC
            | elf::R_AARCH64_ADD_ABS_LO12_NC
            | elf::R_AARCH64_LDST8_ABS_LO12_NC
            | elf::R_AARCH64_LDST16_ABS_LO12_NC
            | elf::R_AARCH64_LDST32_ABS_LO12_NC
            | elf::R_AARCH64_LDST64_ABS_LO12_NC
            | elf::R_AARCH64_LDST128_ABS_LO12_NC
            | elf::R_AARCH64_MOVW_UABS_G0_NC
            | elf::R_AARCH64_MOVW_UABS_G1_NC
            | elf::R_AARCH64_MOVW_UABS_G2_NC
            | elf::R_AARCH64_MOVW_UABS_G3 => Ok(()),
            _ => Err(
                "a field this short cannot reach from the module area to the kernel or another \
                 module"
                    .into(),
            ),
        }
    }
    fn reloc_name(&self, r_type: u32) -> String {
        crate::reloc_name(self.elf_machine(), r_type)
    }
    fn target_offset(&self, _r_type: u32, addend: i64, _site: Site) -> i64 {
        // AArch64 RELA addends name the target byte directly (ADRP works on pages of S+A).
        addend
    }
    fn abs64(&self) -> u32 {
        elf::R_AARCH64_ABS64.0
    }
    fn find_entry(&self, f: &FunctionCode) -> Result<&'static str, String> {
        let word = |i: usize| read_u32(Endian::Little, f.bytes, i * 4);
        let first = if word(0) == Some(BTI_C) { 1 } else { 0 };
        if word(first) == Some(NOP) && word(first + 1) == Some(NOP) {
            return Ok(if first == 1 {
                "BTI C; NOP; NOP"
            } else {
                "NOP; NOP"
            });
        }
        let seen = match word(0) {
            Some(PACIASP) => "PACIASP".to_string(),
            Some(w) => format!("{w:#010x}"),
            None => "nothing".to_string(),
        };
        Err(format!(
            "no patchable-entry NOPs at entry (first instruction {seen}; the function is notrace or noinstr)"
        ))
    }
    fn resolved_branch(&self, code: &[u8], pos: usize) -> Option<ResolvedBranch> {
        let at = pos & !3;
        let insn = read_u32(Endian::Little, code, at)?;
        let sext = |v: u32, bits: u32| (((v << (32 - bits)) as i32) >> (32 - bits)) as i64;
        let offset = if insn & 0x7c00_0000 == 0x1400_0000 {
            sext(insn & 0x03ff_ffff, 26) * 4 // B, BL
        } else if insn & 0xff00_0010 == 0x5400_0000 {
            sext((insn >> 5) & 0x7ffff, 19) * 4 // B.cond
        } else {
            return None;
        };
        Some(ResolvedBranch {
            field: (at, at + 4),
            target: at as i64 + offset,
        })
    }
    fn immediate_load(&self, code: &[u8], start: usize) -> Option<ImmediateLoad> {
        // MOVZ Wd/Xd, #imm16, LSL #(16*hw): sf 10 100101 hw imm16 Rd (`mov w2, #0x436`).
        if !start.is_multiple_of(4) {
            return None;
        }
        let insn = read_u32(Endian::Little, code, start)?;
        if insn & 0x7f80_0000 != 0x5280_0000 {
            return None;
        }
        let hw = (insn >> 21) & 3;
        Some(ImmediateLoad {
            insn: (start, start + 4),
            register: insn & 0x1f | (insn >> 31) << 5 | hw << 6,
            value: i64::from((insn >> 5) & 0xffff) << (16 * hw),
        })
    }
    fn special_sections(&self) -> &'static [SpecialSection] {
        SPECIAL
    }
    fn is_mapping_symbol(&self, name: &str) -> bool {
        name == "$x" || name == "$d" || name.starts_with("$x.") || name.starts_with("$d.")
    }
    fn qemu_binary(&self) -> &'static str {
        "qemu-system-aarch64"
    }
    fn qemu_package(&self) -> &'static str {
        "qemu-system-arm"
    }
    fn qemu_machine_args(&self) -> &'static [&'static str] {
        &["-M", "virt", "-cpu", "cortex-a57"]
    }
    fn console(&self) -> &'static str {
        "ttyAMA0"
    }
    fn livepatch_loadable(&self) -> bool {
        false
    }
    fn config_marks(&self) -> &'static [&'static str] {
        &["CONFIG_ARM64"]
    }
    fn kernel_image(&self) -> &'static str {
        "arch/arm64/boot/Image"
    }
    fn kernel_image_magic(&self) -> &'static [(usize, &'static [u8])] {
        // The Image header's magic "ARM\x64" (Documentation/arch/arm64/booting.rst).
        &[(0x38, b"ARMd")]
    }
    fn entry_record_before(&self) -> u64 {
        8
    }
    fn compat_compiler(&self) -> Option<(&'static str, &'static str)> {
        Some((
            "CROSS_COMPILE_COMPAT=arm-linux-gnueabihf-",
            "gcc-arm-linux-gnueabihf",
        ))
    }
    fn debian_arch(&self) -> &'static str {
        "arm64"
    }
    fn debian_flavour(&self) -> &'static str {
        "arm64"
    }
    fn rpm_arch(&self) -> &'static str {
        "aarch64"
    }
}
