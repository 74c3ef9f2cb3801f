//! s390x (big-endian): `-pg -mfentry -mnop-mcount`: a 6-byte `brcl 0,0` at entry; PC-relative fields are
//! halfword-scaled and measured from the instruction start, two bytes before the field (addend +2).

use object::elf;

use crate::{
    Arch, Backend, Endian, FunctionCode, ImmediateLoad, ModuleReloc, Reach, RelocClass,
    ResolvedBranch, Site, SpecialSection, Triple,
};

pub struct S390x;

const BRCL_0_0: [u8; 6] = [0xc0, 0x04, 0x00, 0x00, 0x00, 0x00];

const SPECIAL: &[SpecialSection] = &[
    SpecialSection::table("__ex_table", &[12]),
    SpecialSection {
        name: ".altinstructions",
        entry_sizes: &[13, 12],
        parallel: None,
        companion: Some(".altinstr_replacement"),
        keys: None,
    },
    SpecialSection::table(".s390_indirect_jump", &[4]),
    SpecialSection::table(".s390_indirect_call", &[4]),
    SpecialSection::table(".s390_indirect_branches", &[4]),
    SpecialSection::table(".s390_return_reg", &[4]),
    SpecialSection::table(".s390_return_mem", &[4]),
];

impl Backend for S390x {
    fn arch(&self) -> Arch {
        Arch::S390x
    }
    fn name(&self) -> &'static str {
        "s390"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["s390x"]
    }
    fn kernel_arch(&self) -> &'static str {
        "s390"
    }
    fn elf_machine(&self) -> u16 {
        elf::EM_S390.0
    }
    fn endian(&self) -> Endian {
        Endian::Big
    }
    fn default_cross_prefix(&self) -> &'static str {
        "s390x-linux-gnu-"
    }
    fn compiler_package(&self) -> &'static str {
        "gcc-s390x-linux-gnu"
    }
    fn triple(&self) -> Triple {
        "s390x-unknown-linux-gnu".parse().expect("valid triple")
    }
    fn config_fragment(&self) -> &'static str {
        include_str!("../../configs/s390.config")
    }
    fn entry_convention(&self) -> &'static str {
        "-pg -mfentry -mnop-mcount -mrecord-mcount: brcl 0,0 (c0 04 00 00 00 00) at entry, or brasl to __fentry__; sites in __mcount_loc"
    }
    fn entry_cflags(&self) -> &'static [&'static str] {
        &["-pg", "-mfentry", "-mnop-mcount", "-mrecord-mcount"]
    }
    fn kernel_cflags(&self) -> &'static [&'static str] {
        &["-fPIC", "-march=z10", "-mpacked-stack", "-msoft-float"]
    }
    /// Static data through the GOT (`lgrl %r, sym@GOTENT`), as kpatch-build does on s390x: otherwise
    /// a reference from patch code to the kernel's static data is a PC-relative `lgrl`/`larl` across
    /// the 2 GiB module area, beyond what QEMU before 8.0 computes right; the GOT slot is the
    /// module's own and holds the full address.
    fn livepatch_cflags(&self) -> &'static [&'static str] {
        &["-mno-pic-data-is-text-relative"]
    }
    fn addend_convention(&self) -> &'static str {
        "call PLT32DBL and PC-relative PC32DBL (halfword-scaled, from the instruction start): addend = target + 2; absolute 64; GOT GOTENT"
    }
    fn reloc_class(&self, r_type: u32) -> RelocClass {
        match elf::RelocationType(r_type) {
            elf::R_390_PLT32DBL | elf::R_390_PLT32 | elf::R_390_PLT16DBL => RelocClass::Call,
            elf::R_390_PC32
            | elf::R_390_PC64
            | elf::R_390_PC16DBL
            | elf::R_390_PC32DBL
            | elf::R_390_PC16 => RelocClass::PcRel,
            elf::R_390_64 | elf::R_390_32 | elf::R_390_16 | elf::R_390_8 => RelocClass::Abs,
            elf::R_390_GOTENT
            | elf::R_390_GOTPCDBL
            | elf::R_390_GOT12
            | elf::R_390_GOT20
            | elf::R_390_GOT32 => RelocClass::Got,
            _ => RelocClass::Other,
        }
    }
    /// Since 6.10 the module area is the 2 GiB right below the kernel image
    /// (arch/s390/boot/startup.c), so a module reaches vmlinux across 2 GiB plus the target's place
    /// in the image: halfword-scaled 32-bit fields (±4 GiB) reach, byte-scaled 32-bit and every
    /// shorter PC-relative field do not; GOT and PLT references go through slots in the module.
    /// `*DBL` fields count halfwords, so the target must be even.
    fn check_module_reloc(&self, r: &ModuleReloc) -> Result<(), String> {
        let t = elf::RelocationType(r.r_type);
        let halfwords = matches!(
            t,
            elf::R_390_PC16DBL | elf::R_390_PC32DBL | elf::R_390_PLT16DBL | elf::R_390_PLT32DBL
        ) || t == elf::R_390_GOTENT
            || t == elf::R_390_GOTPCDBL;
        if halfwords && r.addend % 2 != 0 {
            return Err("a halfword-scaled field with an odd addend".into());
        }
        if let Reach::Kernel { address: Some(a) } = r.reach
            && halfwords
            && a % 2 != 0
            && !matches!(t, elf::R_390_GOTENT | elf::R_390_GOTPCDBL)
        {
            return Err(format!(
                "the target {a:#x} is odd; a halfword-scaled field cannot reach it"
            ));
        }
        if !r.reach.external() {
            return Ok(());
        }
        let got = matches!(
            t,
            elf::R_390_GOTENT
                | elf::R_390_GOT12
                | elf::R_390_GOT20
                | elf::R_390_GOT32
                | elf::R_390_GOT64
                | elf::R_390_GOTPCDBL
        );
        if got && r.reach == Reach::OtherModule {
            return Err(
                "a GOT reference to another module: s390 fills a GOT slot once, so after that \
                 module reloads elsewhere the slot keeps its old address"
                    .into(),
            );
        }
        if matches!(t, elf::R_390_PC32DBL | elf::R_390_PLT32DBL)
            && matches!(r.reach, Reach::Kernel { .. })
        {
            // Only `brasl`/`brcl` (c0x5, c0x4): QEMU before 8.0 computes the address a `larl`,
            // `lgrl`, `lrl`, ... reaches beyond 2 GiB 4 GiB too low, and from the module area the
            // kernel is that far; klpx writes such references through the GOT.
            let branch = match r.preceding {
                [.., op, reg] => *op == 0xc0 && matches!(reg & 0x0f, 0x4 | 0x5),
                _ => true,
            };
            if !branch {
                return Err(
                    "a relative-long data or address reference from the module area to the \
                     kernel (more than 2 GiB away; QEMU before 8.0 computes it 4 GiB off); it \
                     must go through the GOT"
                        .into(),
                );
            }
        }
        match t {
            elf::R_390_NONE
            | elf::R_390_64
            | elf::R_390_PC64
            | elf::R_390_PC32DBL
            | elf::R_390_PLT32DBL
            | elf::R_390_PLT32
            | elf::R_390_PLT64
            | elf::R_390_GOTENT
            | elf::R_390_GOT12
            | elf::R_390_GOT20
            | elf::R_390_GOT32
            | elf::R_390_GOT64 => Ok(()),
            elf::R_390_PC32 | elf::R_390_32 => Err(
                "a 32-bit byte offset or address cannot reach the kernel from the module area \
                 (2 GiB below the kernel image)"
                    .into(),
            ),
            elf::R_390_PC16
            | elf::R_390_PC16DBL
            | elf::R_390_PLT16DBL
            | elf::R_390_16
            | elf::R_390_12
            | elf::R_390_20
            | elf::R_390_8 => Err("a field this short cannot reach outside the module".into()),
            _ => Err("klpx does not know this type to reach outside the module".into()),
        }
    }
    /// `larl %rN, sym` (`c0 N0`, a PC32DBL or PLT32DBL field at +2) loads the address of `sym`; `lgrl
    /// %rN, sym@GOTENT` (`c4 N8`, same length and field) loads it from a GOT slot in the module. The
    /// kernel is more than 2 GiB from the module area, so its addresses go through the GOT (kbuild's
    /// `-fPIC` code takes the address of a static kernel function with `larl`). A module's address
    /// must not: s390 fills a GOT slot once (module.c, `got_initialized`), so after the target module
    /// reloads elsewhere the slot would keep the old address; the module area is 2 GiB, so `larl`
    /// reaches it and is written again at every load.
    fn rewrite_external(
        &self,
        code: &[u8],
        offset: usize,
        r_type: u32,
        to_module: bool,
    ) -> Option<(u32, Vec<(usize, u8)>)> {
        if offset < 2 {
            return None;
        }
        let (op, reg) = (*code.get(offset - 2)?, *code.get(offset - 1)?);
        let t = elf::RelocationType(r_type);
        if to_module {
            // lgrl %rN, sym@GOTENT -> larl %rN, sym
            return (t == elf::R_390_GOTENT && op == 0xc4 && reg & 0x0f == 0x08).then(|| {
                (
                    elf::R_390_PC32DBL.0,
                    vec![(offset - 2, 0xc0), (offset - 1, reg & 0xf0)],
                )
            });
        }
        // PLT32DBL too: the loader uses the target itself, not the PLT slot, whenever it is within
        // ±4 GiB (module.c), so `larl %r, f@PLT` is as far as `larl %r, f`.
        (matches!(t, elf::R_390_PC32DBL | elf::R_390_PLT32DBL) && op == 0xc0 && reg & 0x0f == 0x00)
            .then(|| {
                (
                    elf::R_390_GOTENT.0,
                    vec![(offset - 2, 0xc4), (offset - 1, (reg & 0xf0) | 0x08)],
                )
            })
    }
    fn reloc_name(&self, r_type: u32) -> String {
        crate::reloc_name(self.elf_machine(), r_type)
    }
    fn target_offset(&self, r_type: u32, addend: i64, _site: Site) -> i64 {
        match elf::RelocationType(r_type) {
            // The field sits two bytes into the instruction and the CPU measures from the instruction,
            // so an exact reference carries addend +2.
            elf::R_390_PC32DBL | elf::R_390_PLT32DBL | elf::R_390_GOTENT | elf::R_390_PC16DBL => {
                addend - 2
            }
            _ => addend,
        }
    }
    fn abs64(&self) -> u32 {
        elf::R_390_64.0
    }
    fn find_entry(&self, f: &FunctionCode) -> Result<&'static str, String> {
        if f.bytes.starts_with(&BRCL_0_0) {
            return Ok("brcl 0,0");
        }
        if f.bytes.starts_with(&[0xc0, 0x05])
            && f.relocs
                .iter()
                .any(|r| r.offset == 2 && r.target == "__fentry__")
        {
            return Ok("brasl %r0,__fentry__");
        }
        Err("no brcl 0,0 or brasl to __fentry__ at entry (the function is notrace)".to_string())
    }
    fn resolved_branch(&self, code: &[u8], pos: usize) -> Option<ResolvedBranch> {
        // brcl/brasl (c0 x4/x5, 32-bit halfword displacement) and brc/bras (a7 x4/x5, 16-bit),
        // measured from the instruction start.
        for start in pos.saturating_sub(5)..=pos {
            let (op, sub) = (*code.get(start)?, *code.get(start + 1)? & 0x0f);
            if op == 0xc0 && (sub == 4 || sub == 5) && (start + 2..start + 6).contains(&pos) {
                let d = i32::from_be_bytes(code.get(start + 2..start + 6)?.try_into().ok()?);
                return Some(ResolvedBranch {
                    field: (start + 2, start + 6),
                    target: start as i64 + 2 * i64::from(d),
                });
            }
            if op == 0xa7 && (sub == 4 || sub == 5) && (start + 2..start + 4).contains(&pos) {
                let d = i16::from_be_bytes(code.get(start + 2..start + 4)?.try_into().ok()?);
                return Some(ResolvedBranch {
                    field: (start + 2, start + 4),
                    target: start as i64 + 2 * i64::from(d),
                });
            }
        }
        None
    }
    fn immediate_load(&self, code: &[u8], start: usize) -> Option<ImmediateLoad> {
        // lhi/lghi (a7 r8/r9, signed 16-bit) and lgfi/iilf (c0 r1/r9, 32-bit), the immediate after
        // the two opcode bytes; instructions start on halfwords.
        if !start.is_multiple_of(2) {
            return None;
        }
        let (op, r1) = (*code.get(start)?, *code.get(start + 1)?);
        let imm = |len: usize| code.get(start + 2..start + 2 + len);
        let (end, value) = match (op, r1 & 0x0f) {
            (0xa7, 8 | 9) => (
                start + 4,
                i64::from(i16::from_be_bytes(imm(2)?.try_into().ok()?)),
            ),
            (0xc0, 1) => (
                start + 6,
                i64::from(i32::from_be_bytes(imm(4)?.try_into().ok()?)),
            ),
            (0xc0, 9) => (
                start + 6,
                i64::from(u32::from_be_bytes(imm(4)?.try_into().ok()?)),
            ),
            _ => return None,
        };
        Some(ImmediateLoad {
            insn: (start, end),
            register: u32::from(op) << 8 | u32::from(r1),
            value,
        })
    }
    fn special_sections(&self) -> &'static [SpecialSection] {
        SPECIAL
    }
    fn is_module_provided(&self, name: &str) -> bool {
        name == "_GLOBAL_OFFSET_TABLE_"
    }
    fn qemu_binary(&self) -> &'static str {
        "qemu-system-s390x"
    }
    fn qemu_package(&self) -> &'static str {
        "qemu-system-misc"
    }
    fn qemu_machine_args(&self) -> &'static [&'static str] {
        &["-M", "s390-ccw-virtio"]
    }
    fn console(&self) -> &'static str {
        "ttysclp0"
    }
    fn config_marks(&self) -> &'static [&'static str] {
        &["CONFIG_S390"]
    }
    fn kernel_image(&self) -> &'static str {
        "arch/s390/boot/bzImage"
    }
    fn kernel_image_magic(&self) -> &'static [(usize, &'static [u8])] {
        // The IPL PSW's first word and the first IPL CCW (arch/s390/boot/head.S).
        &[(0, &[0, 8, 0, 0]), (8, &[2, 0, 0, 0x18, 0x60, 0, 0, 0x50])]
    }
    fn debian_arch(&self) -> &'static str {
        "s390x"
    }
    fn debian_flavour(&self) -> &'static str {
        "s390x"
    }
    fn rpm_arch(&self) -> &'static str {
        "s390x"
    }
}
