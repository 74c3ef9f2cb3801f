//! Everything klpx needs to know about an architecture, as data and pure decisions.
//!
//! No code outside this crate matches on an architecture: the kbuild driver, the object differ and the
//! module writer ask a [`Backend`] instead. The crate does no I/O; callers hand it bytes and relocations
//! they have read and get answers back.

mod arm64;
mod ppc64le;
mod s390;
mod x86_64;

use std::fmt;
use std::str::FromStr;

pub use target_lexicon::Triple;

/// Byte order of an architecture's ELF objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endian {
    Little,
    Big,
}

/// The architectures klpx supports. The enum is only an identifier; behaviour lives in [`Backend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    X86_64,
    Arm64,
    Ppc64le,
    S390x,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::X86_64, Arch::Arm64, Arch::Ppc64le, Arch::S390x];

    /// The backend that answers every per-architecture question.
    pub fn backend(self) -> &'static dyn Backend {
        match self {
            Arch::X86_64 => &x86_64::X86_64,
            Arch::Arm64 => &arm64::Arm64,
            Arch::Ppc64le => &ppc64le::Ppc64le,
            Arch::S390x => &s390::S390x,
        }
    }

    /// Every architecture's name, comma-separated, for messages.
    pub fn names() -> String {
        Arch::ALL.map(Arch::name).join(", ")
    }

    /// The architecture klpx itself runs on, when it is one of the four.
    pub fn host() -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.backend().triple().architecture == Triple::host().architecture)
    }

    /// Whether this is the architecture klpx runs on (no cross compiler needed, KVM possible).
    pub fn is_host(self) -> bool {
        Arch::host() == Some(self)
    }

    /// The architecture of an ELF object, from its `e_machine` and byte order.
    pub fn from_elf(machine: u16, endian: Endian) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.backend().elf_machine() == machine && a.backend().endian() == endian)
    }

    /// The architecture named by a kernel `ARCH` value (x86, arm64, powerpc, s390) or a common alias.
    pub fn from_kernel_arch(name: &str) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.backend().kernel_arch() == name || a.backend().aliases().contains(&name))
    }

    pub fn name(self) -> &'static str {
        self.backend().name()
    }

    /// The architecture a kernel `.config` is for, from the symbols each backend names.
    pub fn from_config(config: &str) -> Option<Arch> {
        let set: Vec<&str> = config
            .lines()
            .filter_map(|l| l.strip_suffix("=y"))
            .collect();
        Arch::ALL
            .into_iter()
            .find(|a| a.backend().config_marks().iter().all(|m| set.contains(m)))
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an architecture name klpx does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownArch(pub String);

impl fmt::Display for UnknownArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown architecture '{}': use one of {}",
            self.0,
            Arch::names()
        )
    }
}

impl std::error::Error for UnknownArch {}

impl FromStr for Arch {
    type Err = UnknownArch;
    fn from_str(s: &str) -> Result<Arch, UnknownArch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .or_else(|| Arch::from_kernel_arch(s))
            .ok_or_else(|| UnknownArch(s.to_string()))
    }
}

/// What a relocation does, independent of its architecture-specific type number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RelocClass {
    /// A direct call or branch to a function (x86 PLT32, arm64 CALL26/JUMP26, ppc REL24, s390 PLT32DBL).
    Call,
    /// A PC-relative reference to data or code (x86 PC32, arm64 ADRP/PREL, s390 PC32DBL).
    PcRel,
    /// An absolute address or part of one (x86 64/32S, arm64 ABS64 and LO12, ppc ADDR64).
    Abs,
    /// A reference through the TOC (ppc64 TOC16_*).
    Toc,
    /// A reference through the GOT (x86 GOTPCREL, arm64 GOT_PAGE, s390 GOTENT).
    Got,
    /// Anything else the backend does not classify.
    Other,
}

impl RelocClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RelocClass::Call => "call",
            RelocClass::PcRel => "pc-relative",
            RelocClass::Abs => "absolute",
            RelocClass::Toc => "toc",
            RelocClass::Got => "got",
            RelocClass::Other => "other",
        }
    }
}

/// Where a relocation's field sits.
#[derive(Clone, Copy, Debug)]
pub enum Site<'a> {
    /// In an instruction: the bytes of the code around it and the field's offset in them.
    Code { bytes: &'a [u8], offset: u64 },
    /// In data (a table entry, a pointer).
    Data,
}

/// A PC-relative branch whose displacement the assembler filled in itself (caller and callee in one
/// section, so no relocation): where the displacement sits and where the branch lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolvedBranch {
    /// The displacement's bytes `[start, end)` in the section.
    pub field: (usize, usize),
    /// The branch target, as an offset in the section.
    pub target: i64,
}

/// A load of a constant into a register (`mov $imm, %edx`, `movz w2, #imm`, `li r5, imm`,
/// `lghi %r4, imm`): how `__LINE__` reaches the kernel functions that report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImmediateLoad {
    /// The instruction's bytes `[start, end)` in the section.
    pub insn: (usize, usize),
    /// The destination, as the architecture numbers its registers, with the operand width and any
    /// shift folded in: two loads with the same `register` differ in their value only.
    pub register: u32,
    pub value: i64,
}

/// The longest instruction [`Backend::immediate_load`] recognises (x86: REX, `c7`, ModRM, imm32).
pub const MAX_IMMEDIATE_LOAD: usize = 7;

/// A relocation inside one function, as the differ hands it to a backend.
#[derive(Clone, Copy, Debug)]
pub struct CodeReloc<'a> {
    /// Offset from the start of the function symbol (may be negative for pre-symbol padding).
    pub offset: i64,
    pub r_type: u32,
    /// Name of the symbol the relocation refers to (a section name for section symbols).
    pub target: &'a str,
    pub addend: i64,
}

/// One function's code as the differ sees it.
#[derive(Clone, Copy, Debug)]
pub struct FunctionCode<'a> {
    pub name: &'a str,
    /// The name of the section holding it (`.text.NAME` with `-ffunction-sections`).
    pub section: &'a str,
    /// The function's bytes, starting at its symbol value.
    pub bytes: &'a [u8],
    /// Relocations inside the function, sorted by offset.
    pub relocs: &'a [CodeReloc<'a>],
    /// The symbol's `st_other` (ppc64 ELFv2 keeps the local-entry offset there).
    pub st_other: u8,
    /// Offsets (from the function start) named by `__mcount_loc` or `__patchable_function_entries`.
    pub entry_sites: &'a [i64],
}

/// Where a relocation of a finished module leads, as the module loader will resolve it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Inside the module itself (a symbol it defines, or no symbol at all).
    Module,
    /// vmlinux; `address` is the symbol's link-time address plus the addend when the symbol table
    /// says (alignment survives KASLR, which moves the kernel by whole pages at least).
    Kernel { address: Option<u64> },
    /// Another module, loaded anywhere in the module area.
    OtherModule,
}

/// One relocation the kernel will apply to a finished livepatch module: an ordinary one when the
/// module loads, or a livepatch one (`.klp.rela`) when its object is there.
#[derive(Clone, Copy, Debug)]
pub struct ModuleReloc<'a> {
    pub r_type: u32,
    /// The relocation's symbol name (empty for none; `.klp.sym.*` for livepatch symbols).
    pub symbol: &'a str,
    pub addend: i64,
    /// The bytes of the relocated section from the relocated field on (at most 16), or `None` for a
    /// section without contents.
    pub place: Option<&'a [u8]>,
    /// The bytes just before the field (at most 8; empty when none): the start of its instruction.
    pub preceding: &'a [u8],
    pub reach: Reach,
}

impl Reach {
    /// Outside the module's own memory.
    pub fn external(self) -> bool {
        self != Reach::Module
    }
}

/// A special section: a table of fixed-size entries, each pointing at code.
#[derive(Clone, Copy, Debug)]
pub struct SpecialSection {
    pub name: &'static str,
    /// Entry sizes possible for this kernel generation, most likely first. Empty: infer from relocations.
    pub entry_sizes: &'static [u64],
    /// A section whose entries run in lockstep with this one's and carry no relocations (ORC).
    pub parallel: Option<(&'static str, u64)>,
    /// A section of replacement code the entries point into, kept whole when any entry is kept.
    pub companion: Option<&'static str>,
    /// What the entries' keys are, when the module loader wires them up as the module loads (static
    /// keys, static calls): a key of another module may not be there yet.
    pub keys: Option<&'static str>,
}

impl SpecialSection {
    pub const fn table(name: &'static str, entry_sizes: &'static [u64]) -> SpecialSection {
        SpecialSection {
            name,
            entry_sizes,
            parallel: None,
            companion: None,
            keys: None,
        }
    }

    /// The table, with entries naming keys of the given kind (`static key`).
    pub const fn with_keys(self, what: &'static str) -> SpecialSection {
        SpecialSection {
            keys: Some(what),
            ..self
        }
    }
}

/// Sections every kernel architecture shares.
const GENERIC_SPECIAL: [SpecialSection; 4] = [
    SpecialSection::table("__bug_table", &[12, 8]),
    SpecialSection::table("__jump_table", &[16]).with_keys("static key"),
    SpecialSection::table("__mcount_loc", &[8]),
    SpecialSection::table("__patchable_function_entries", &[8]),
];

/// The per-architecture questions. One implementation per supported architecture.
pub trait Backend: Send + Sync {
    fn arch(&self) -> Arch;
    /// klpx's name: x86_64, arm64, ppc64le, s390.
    fn name(&self) -> &'static str;
    /// Other names users write for it (aarch64, ppc64el, s390x, ...).
    fn aliases(&self) -> &'static [&'static str];
    /// The kernel's `ARCH=` value.
    fn kernel_arch(&self) -> &'static str;
    fn elf_machine(&self) -> u16;
    fn endian(&self) -> Endian;
    /// The `CROSS_COMPILE` prefix of Debian's cross compiler (empty on the native x86_64 host).
    fn default_cross_prefix(&self) -> &'static str;
    /// The Debian package that provides `<prefix>gcc`.
    fn compiler_package(&self) -> &'static str;
    fn triple(&self) -> Triple;
    /// The kernel config fragment (`configs/<name>.config`) that makes a small tree of this architecture
    /// livepatch-capable and bootable in qemu, on top of tinyconfig and `configs/livepatch.config`.
    fn config_fragment(&self) -> &'static str;
    /// One line describing how the kernel makes functions traceable on this architecture.
    fn entry_convention(&self) -> &'static str;
    /// The kernel's function-entry compiler flags (`CC_FLAGS_FTRACE` for the usual configuration).
    fn entry_cflags(&self) -> &'static [&'static str];
    /// Code-generation flags that make a stand-alone C file compile like kernel code.
    fn kernel_cflags(&self) -> &'static [&'static str];
    /// Flags klpx adds to the kernel's own when it compiles objects for a livepatch (ppc64:
    /// `-mcmodel=large`, so data of the running kernel is reached through TOC entries).
    fn livepatch_cflags(&self) -> &'static [&'static str] {
        &[]
    }
    /// How relocation addends relate to the byte they name, per relocation class, in one line.
    fn addend_convention(&self) -> &'static str;
    fn reloc_class(&self, r_type: u32) -> RelocClass;
    fn reloc_name(&self, r_type: u32) -> String;
    /// Whether the architecture's ELF ABI defines relocation type `r_type` (an object with any other
    /// type is corrupt).
    fn knows_reloc(&self, r_type: u32) -> bool {
        has_reloc_name(self.elf_machine(), r_type)
    }
    /// Offset within the target that a relocation refers to: the addend corrected by the distance from
    /// the relocated field to the point the CPU measures from (x86 PC32 in an instruction: +4, or more
    /// when an immediate follows the field; s390 PC32DBL: -2). `site` tells an instruction operand
    /// from a data word such as `.long sym - .`.
    fn target_offset(&self, r_type: u32, addend: i64, site: Site) -> i64;
    /// The 64-bit absolute relocation type, used for klpx's own side tables.
    fn abs64(&self) -> u32;
    /// The bytes a relocation of `r_type` at `offset` lets the linker write, as `(start, length)`:
    /// what a comparison of one function from two links must leave out.
    fn reloc_field(&self, r_type: u32, offset: u64) -> (u64, u64) {
        if r_type == self.abs64() {
            (offset, 8)
        } else {
            (offset, 4)
        }
    }
    /// The length of the jump-label site at the start of `code`, which the kernel's link may have
    /// rewritten (objtool turns x86 jumps of disabled keys into NOPs).
    fn jump_label_len(&self, _code: &[u8]) -> u64 {
        4
    }
    /// Where the function's ftrace entry is, if it has one: `Ok(description)` or `Err(what was seen)`.
    fn find_entry(&self, f: &FunctionCode) -> Result<&'static str, String>;
    /// Whether a call from patch code at `relocs[index]` can reach a symbol outside the module
    /// (ppc64 needs a `nop` after the `bl` for the TOC restore). `Err` carries the reason.
    fn check_external_call(&self, _f: &FunctionCode, _index: usize) -> Result<(), String> {
        Ok(())
    }
    /// Whether a relocation of this type can reach a symbol outside the module (ppc64 TOC-relative
    /// accesses cannot reach the running kernel's data). `Err` carries the reason.
    fn check_external_reference(&self, _r_type: u32) -> Result<(), String> {
        Ok(())
    }
    /// A relocation in code that reaches outside the module, written another way that means the
    /// same and reaches better: the new relocation type and the bytes to change at (offset in
    /// `code`, new byte). `to_module` says the target is in a loadable module (which may load, go
    /// and come back elsewhere) rather than vmlinux. s390: `larl` of a kernel address becomes `lgrl`
    /// from a GOT slot of the module; `lgrl` from the GOT of a module's address becomes `larl`.
    fn rewrite_external(
        &self,
        _code: &[u8],
        _offset: usize,
        _r_type: u32,
        _to_module: bool,
    ) -> Option<(u32, Vec<(usize, u8)>)> {
        None
    }
    /// Whether the kernel can apply this relocation of a finished module and get it right: a type its
    /// module loader handles, a range that reaches from the module area to where the target lives,
    /// the encoding the relocated instruction needs. `Err` is the one-line reason. Checked on every
    /// relocation of the module before klpx reports it good.
    fn check_module_reloc(&self, _r: &ModuleReloc) -> Result<(), String> {
        Ok(())
    }
    /// Writable sections of per-object constants that patch code carries its own copy of, with
    /// their entry size (ppc64 `.toc`, 8-byte addresses).
    fn private_sections(&self) -> &'static [(&'static str, u64)] {
        &[]
    }
    /// The relocation-free relative branch (call, jump) whose displacement covers byte `pos` of the
    /// section bytes `code`, if there is one. Used where several functions share one section
    /// (`.sched.text`) and a changed function shifts the displacements of its neighbours.
    fn resolved_branch(&self, code: &[u8], pos: usize) -> Option<ResolvedBranch>;
    /// The instruction at byte `start` of the section bytes `code`, when it loads a constant into
    /// a register (at most [`MAX_IMMEDIATE_LOAD`] bytes long). Used to see a function whose only
    /// change is the line number it passes to `__might_sleep` or `__warn_printk`. Callers try every
    /// start that could cover a byte: decoding backwards is ambiguous on x86.
    fn immediate_load(&self, code: &[u8], start: usize) -> Option<ImmediateLoad>;
    /// The tables objtool writes for the code it reads (ORC, return and call sites...). Where the
    /// module's link runs objtool ([`Backend::objtool_at_module_link`]), it writes them for the
    /// whole module and skips any it finds already there, so the parts must not bring them.
    fn objtool_tables(&self) -> &'static [&'static str] {
        &[]
    }
    /// Whether kbuild runs objtool over a whole module at its link for a kernel with this
    /// `.config`, rather than over each object as it is compiled.
    fn objtool_at_module_link(&self, _config: &str) -> bool {
        false
    }
    /// The no-op relocation type klpx leaves in place of each livepatch relocation, when the
    /// module's link reads relocations (the livepatch one itself travels in klpx's side table,
    /// invisible to it). `None`: nothing is left.
    fn klp_placeholder(&self) -> Option<u32> {
        None
    }
    /// Special sections this architecture's kernel emits.
    fn special_sections(&self) -> &'static [SpecialSection];
    /// Symbols that are not functions or data even though they look like them (arm64 `$x`).
    fn is_mapping_symbol(&self, _name: &str) -> bool {
        false
    }
    /// Symbols every module gets from the module link or the loader (ppc64 `.TOC.` and the `-Os`
    /// register save/restore helpers): references to them stay plain relocations.
    fn is_module_provided(&self, _name: &str) -> bool {
        false
    }

    // What booting a kernel of this architecture in qemu takes (`klpx verify`).

    /// The qemu system emulator (`qemu-system-x86_64`).
    fn qemu_binary(&self) -> &'static str;
    /// The Debian package that provides [`Backend::qemu_binary`].
    fn qemu_package(&self) -> &'static str;
    /// Machine and CPU arguments the emulator needs for a kernel of this architecture.
    fn qemu_machine_args(&self) -> &'static [&'static str];
    /// The console device the kernel prints to under qemu (`console=` on the command line).
    fn console(&self) -> &'static str;
    /// The bootable kernel image, relative to the kernel output tree.
    fn kernel_image(&self) -> &'static str;
    /// The bytes (offset, value) every bootable image of the architecture carries, so a file given
    /// as a kernel is known for one before qemu starts.
    fn kernel_image_magic(&self) -> &'static [(usize, &'static [u8])];
    /// Debian's name for the architecture, for foreign packages (`busybox-static:<name>`).
    fn debian_arch(&self) -> &'static str;
    /// The flavour of Debian's default kernel image for this architecture: the last part of its
    /// release (`6.12.117+deb12-amd64`, `6.1.0-50-s390x`).
    fn debian_flavour(&self) -> &'static str;
    /// RPM's name for the architecture (`%{_arch}`, `rpmbuild --target`): `x86_64`, `aarch64`,
    /// `ppc64le`, `s390x`.
    fn rpm_arch(&self) -> &'static str;
    /// The busybox command that ends the guest so that qemu (run with `-no-reboot`) exits.
    fn guest_halt(&self) -> &'static str {
        "poweroff -f"
    }
    /// How far into a function its ftrace entry (the call or NOPs a `__mcount_loc` or
    /// `__patchable_function_entries` record names) may lie: after an `ENDBR64`, a `BTI C`, or
    /// ppc64's global entry.
    fn entry_window(&self) -> u64 {
        16
    }
    /// The `/proc/cpuinfo` flags that say the host CPU has hardware virtualization for KVM; empty
    /// where the CPU lists none, and `/dev/kvm` is taken at its word.
    fn virtualization_flags(&self) -> &'static [&'static str] {
        &[]
    }
    /// How many bytes before a function's symbol its ftrace record may point: arm64 with
    /// DYNAMIC_FTRACE_WITH_CALL_OPS (`-fpatchable-function-entry=4,2`) records the first of two
    /// NOPs placed before the function.
    fn entry_record_before(&self) -> u64 {
        0
    }
    /// Make variables naming the compiler of the architecture's 32-bit compat code, with the
    /// Debian package that provides it: arm64's compat vDSO (COMPAT_VDSO) is built with
    /// `CROSS_COMPILE_COMPAT`, and without it Kconfig drops the option a distribution config has.
    fn compat_compiler(&self) -> Option<(&'static str, &'static str)> {
        None
    }
    /// Kconfig symbols that are all `=y` in a `.config` for this architecture (and not for another).
    fn config_marks(&self) -> &'static [&'static str];
    /// Whether Linux 6.12 can load livepatches here (`HAVE_LIVEPATCH`); arm64 gained it in 6.17.
    fn livepatch_loadable(&self) -> bool {
        true
    }
}

/// Looks up a special section by name for a backend, including the generic ones.
pub fn special_section(backend: &dyn Backend, name: &str) -> Option<SpecialSection> {
    backend
        .special_sections()
        .iter()
        .chain(GENERIC_SPECIAL.iter())
        .find(|s| s.name == name)
        .copied()
}

/// Every special section of a backend: its own and the generic ones.
pub fn all_special_sections(backend: &dyn Backend) -> Vec<SpecialSection> {
    backend
        .special_sections()
        .iter()
        .chain(GENERIC_SPECIAL.iter())
        .copied()
        .collect()
}

/// The entry size of `name` when it is one of the backend's private sections (ppc64 `.toc`: 8).
pub fn private_entry_size(backend: &dyn Backend, name: &str) -> Option<u64> {
    backend
        .private_sections()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, size)| size)
}

/// Whether `head` (the first kilobyte or more of a file) starts a bootable kernel image of the
/// backend's architecture.
pub fn is_kernel_image(backend: &dyn Backend, head: &[u8]) -> bool {
    backend
        .kernel_image_magic()
        .iter()
        .all(|&(at, magic)| head.get(at..at + magic.len()) == Some(magic))
}

/// Reads a 32-bit word in the architecture's byte order.
pub fn read_u32(endian: Endian, bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(match endian {
        Endian::Little => u32::from_le_bytes(b),
        Endian::Big => u32::from_be_bytes(b),
    })
}

/// The object crate's name of relocation type `r_type` of `machine`, when its table has one.
fn known_reloc_name(machine: u16, r_type: u32) -> Option<&'static str> {
    object::elf::machine_names(object::elf::Machine(machine))
        .r
        .name(object::elf::RelocationType(r_type))
}

/// Whether the object crate's table names relocation type `r_type` of `machine`.
fn has_reloc_name(machine: u16, r_type: u32) -> bool {
    known_reloc_name(machine, r_type).is_some()
}

/// Name of a relocation type for a machine (`R_X86_64_PC32`), or its number when unnamed.
fn reloc_name(machine: u16, r_type: u32) -> String {
    known_reloc_name(machine, r_type)
        .map(str::to_string)
        .unwrap_or_else(|| format!("relocation type {r_type}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>().unwrap(), a);
            assert_eq!(Arch::from_kernel_arch(a.backend().kernel_arch()), Some(a));
            assert_eq!(
                Arch::from_elf(a.backend().elf_machine(), a.backend().endian()),
                Some(a)
            );
        }
        assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Arm64);
        assert_eq!("s390x".parse::<Arch>().unwrap(), Arch::S390x);
        assert_eq!("powerpc".parse::<Arch>().unwrap(), Arch::Ppc64le);
        assert!("mips".parse::<Arch>().is_err());
    }

    #[test]
    fn kernel_arch_values() {
        let got: Vec<_> = Arch::ALL
            .iter()
            .map(|a| a.backend().kernel_arch())
            .collect();
        assert_eq!(got, ["x86", "arm64", "powerpc", "s390"]);
        assert_eq!(Arch::S390x.backend().endian(), Endian::Big);
    }

    #[test]
    fn qemu_facts() {
        let got: Vec<_> = Arch::ALL
            .iter()
            .map(|a| {
                let b = a.backend();
                (
                    b.qemu_binary(),
                    b.qemu_package(),
                    b.console(),
                    b.kernel_image(),
                    b.debian_arch(),
                    b.guest_halt(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "qemu-system-x86_64",
                    "qemu-system-x86",
                    "ttyS0",
                    "arch/x86/boot/bzImage",
                    "amd64",
                    "reboot -f"
                ),
                (
                    "qemu-system-aarch64",
                    "qemu-system-arm",
                    "ttyAMA0",
                    "arch/arm64/boot/Image",
                    "arm64",
                    "poweroff -f"
                ),
                (
                    "qemu-system-ppc64",
                    "qemu-system-ppc",
                    "hvc0",
                    "vmlinux",
                    "ppc64el",
                    "poweroff -f"
                ),
                (
                    "qemu-system-s390x",
                    "qemu-system-misc",
                    "ttysclp0",
                    "arch/s390/boot/bzImage",
                    "s390x",
                    "poweroff -f"
                ),
            ]
        );
        assert!(Arch::X86_64.backend().qemu_machine_args().is_empty());
        assert_eq!(
            Arch::Ppc64le.backend().qemu_machine_args(),
            ["-M", "pseries"]
        );
        assert_eq!(
            Arch::S390x.backend().qemu_machine_args(),
            ["-M", "s390-ccw-virtio"]
        );
        assert_eq!(
            Arch::Arm64.backend().qemu_machine_args(),
            ["-M", "virt", "-cpu", "cortex-a57"]
        );
        // Debian's names are accepted as aliases.
        for a in Arch::ALL {
            assert_eq!(a.backend().debian_arch().parse::<Arch>().unwrap(), a);
            assert_eq!(a.backend().rpm_arch().parse::<Arch>().unwrap(), a);
        }
    }

    #[test]
    fn triples_parse() {
        for a in Arch::ALL {
            let t = a.backend().triple();
            assert_eq!(
                t.endianness().unwrap() == target_lexicon::Endianness::Big,
                a.backend().endian() == Endian::Big
            );
        }
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn a_config_names_its_architecture() {
        assert_eq!(
            Arch::from_config("CONFIG_64BIT=y\nCONFIG_X86_64=y\n"),
            Some(Arch::X86_64)
        );
        assert_eq!(
            Arch::from_config("CONFIG_PPC64=y\nCONFIG_CPU_LITTLE_ENDIAN=y\n"),
            Some(Arch::Ppc64le)
        );
        // Big-endian ppc64 is none of klpx's.
        assert_eq!(Arch::from_config("CONFIG_PPC64=y\n"), None);
        assert_eq!(Arch::from_config("CONFIG_S390=y\n"), Some(Arch::S390x));
        assert_eq!(Arch::from_config("CONFIG_ARM64=y\n"), Some(Arch::Arm64));
    }
}

/// The module-relocation rules, each checked against what the kernel's loader does with such a
/// relocation (the file named in each case).
#[cfg(test)]
mod module_reloc_rules {
    use super::*;
    use object::elf;

    fn reloc<'a>(
        r_type: u32,
        addend: i64,
        place: Option<&'a [u8]>,
        reach: Reach,
    ) -> ModuleReloc<'a> {
        ModuleReloc {
            r_type,
            symbol: "sym",
            addend,
            place,
            preceding: &[],
            reach,
        }
    }
    const KERNEL: Reach = Reach::Kernel { address: None };

    #[test]
    fn x86_64() {
        // arch/x86/kernel/module.c: 32 overflows for kernel addresses; non-zero targets refused.
        let b = Arch::X86_64.backend();
        let zero = [0u8; 8];
        assert!(
            b.check_module_reloc(&reloc(elf::R_X86_64_PLT32.0, -4, Some(&zero), KERNEL))
                .is_ok()
        );
        assert!(
            b.check_module_reloc(&reloc(elf::R_X86_64_32.0, 0, Some(&zero), KERNEL))
                .is_err()
        );
        let dirty = [0u8, 0, 1, 0];
        assert!(
            b.check_module_reloc(&reloc(elf::R_X86_64_PC32.0, -4, Some(&dirty), KERNEL))
                .is_err()
        );
        assert!(
            b.check_module_reloc(&reloc(elf::R_X86_64_GOTPCREL.0, -4, Some(&zero), KERNEL))
                .is_err()
        );
    }

    #[test]
    fn ppc64le() {
        // arch/powerpc/kernel/module_64.c: calls out go through a stub and need a nop for the TOC
        // restore (restore_r2), except ftrace's own calls.
        let b = Arch::Ppc64le.backend();
        let bl_nop = [0x01, 0x00, 0x00, 0x48, 0x00, 0x00, 0x00, 0x60];
        let bl_other = [0x01, 0x00, 0x00, 0x48, 0x78, 0x1b, 0x63, 0x7c];
        let b_only = [0x00, 0x00, 0x00, 0x48, 0x00, 0x00, 0x00, 0x60];
        let rel24 = elf::R_PPC64_REL24.0;
        assert!(
            b.check_module_reloc(&reloc(rel24, 0, Some(&bl_nop), KERNEL))
                .is_ok()
        );
        assert!(
            b.check_module_reloc(&reloc(rel24, 0, Some(&bl_other), KERNEL))
                .is_err()
        );
        assert!(
            b.check_module_reloc(&reloc(rel24, 0, Some(&b_only), KERNEL))
                .is_err()
        );
        let mut mcount = reloc(rel24, 0, Some(&bl_other), KERNEL);
        mcount.symbol = "_mcount";
        assert!(b.check_module_reloc(&mcount).is_ok());
        assert!(
            b.check_module_reloc(&reloc(rel24, 0, Some(&b_only), Reach::Module))
                .is_ok()
        );
        let toc = elf::R_PPC64_TOC16_HA.0;
        assert!(b.check_module_reloc(&reloc(toc, 0, None, KERNEL)).is_err());
        assert!(
            b.check_module_reloc(&reloc(elf::R_PPC64_REL32.0, 0, None, Reach::OtherModule))
                .is_err()
        );
        assert!(
            b.check_module_reloc(&reloc(elf::R_PPC64_ADDR64.0, 0, None, KERNEL))
                .is_ok()
        );
    }

    #[test]
    fn s390() {
        // arch/s390/boot/startup.c puts the module area in the 2 GiB below the kernel; module.c
        // applies *DBL fields as halfwords.
        let b = Arch::S390x.backend();
        assert!(
            b.check_module_reloc(&reloc(elf::R_390_PC32DBL.0, 2, None, KERNEL))
                .is_ok()
        );
        assert!(
            b.check_module_reloc(&reloc(elf::R_390_PC32DBL.0, 3, None, KERNEL))
                .is_err()
        );
        assert!(
            b.check_module_reloc(&reloc(elf::R_390_PC32.0, 0, None, KERNEL))
                .is_err()
        );
        assert!(
            b.check_module_reloc(&reloc(elf::R_390_PC16DBL.0, 2, None, KERNEL))
                .is_err()
        );
        assert!(
            b.check_module_reloc(&reloc(elf::R_390_PC16DBL.0, 2, None, Reach::Module))
                .is_ok()
        );
        assert!(
            b.check_module_reloc(&reloc(elf::R_390_GOTENT.0, 2, None, KERNEL))
                .is_ok()
        );
        let odd = Reach::Kernel {
            address: Some(0x1001),
        };
        assert!(
            b.check_module_reloc(&reloc(elf::R_390_PC32DBL.0, 2, None, odd))
                .is_err()
        );
    }

    #[test]
    fn arm64() {
        // arch/arm64/kernel/module.c: LDSTn_ABS_LO12_NC drops the low bits of the target.
        let b = Arch::Arm64.backend();
        let at = |a| Reach::Kernel { address: Some(a) };
        let ld64 = elf::R_AARCH64_LDST64_ABS_LO12_NC.0;
        assert!(
            b.check_module_reloc(&reloc(ld64, 0, None, at(0x1000)))
                .is_ok()
        );
        assert!(
            b.check_module_reloc(&reloc(ld64, 0, None, at(0x1004)))
                .is_err()
        );
        assert!(
            b.check_module_reloc(&reloc(elf::R_AARCH64_CONDBR19.0, 0, None, KERNEL))
                .is_err()
        );
        assert!(
            b.check_module_reloc(&reloc(elf::R_AARCH64_CALL26.0, 0, None, KERNEL))
                .is_ok()
        );
    }

    /// Loads of line numbers as gcc 12 emits them for ASSERT_RTNL() in net/core/dev.o (Debian's
    /// configs; bytes from objdump -d), and instructions that are not such loads.
    #[test]
    fn immediate_loads() {
        let load = |arch: Arch, code: &[u8], at: usize| arch.backend().immediate_load(code, at);
        // x86_64 `jne .-0x47; mov $0x15ac,%edx`: the jne's displacement byte (b9) is no `mov %ecx`
        // when decoding starts at the right place.
        let x86 = [0x75, 0xb9, 0xba, 0xac, 0x15, 0x00, 0x00];
        let l = load(Arch::X86_64, &x86, 2).expect("mov $imm32, %edx");
        assert_eq!((l.insn, l.value), ((2, 7), 0x15ac));
        assert_eq!(
            load(Arch::X86_64, &x86, 1).map(|l| l.value),
            Some(0x0015_acba)
        );
        assert!(load(Arch::X86_64, &x86, 0).is_none());
        // `mov $0x1,%r8d` (41 b8) and `mov $0x5,%rax` (48 c7 c0): distinct destinations.
        let r8 = load(Arch::X86_64, &[0x41, 0xb8, 1, 0, 0, 0], 0).expect("REX.B");
        let rax = load(Arch::X86_64, &[0x48, 0xc7, 0xc0, 5, 0, 0, 0], 0).expect("REX.W c7");
        assert_ne!(r8.register, rax.register);
        assert_eq!((rax.insn, rax.value), ((0, 7), 5));
        // arm64 `mov w2, #0x15ac` (52 82 b5 82), and `ret` is none.
        let l = load(Arch::Arm64, &0x5282_b582u32.to_le_bytes(), 0).expect("movz");
        assert_eq!(l.value, 5548);
        assert!(load(Arch::Arm64, &0xd65f_03c0u32.to_le_bytes(), 0).is_none());
        assert!(load(Arch::Arm64, &[0; 8], 2).is_none());
        // ppc64le `li r5,5316` (38 a0 14 c4); `addi r5,r9,8` has RA != 0.
        let l = load(Arch::Ppc64le, &[0xc4, 0x14, 0xa0, 0x38], 0).expect("li");
        assert_eq!(l.value, 5316);
        assert!(load(Arch::Ppc64le, &0x38a9_0008u32.to_le_bytes(), 0).is_none());
        // s390 `lghi %r4,5316` (a7 49 14 c4) and `lhi %r2,0`; `brasl` (c0 e5) is none.
        let l = load(Arch::S390x, &[0xa7, 0x49, 0x14, 0xc4], 0).expect("lghi");
        assert_eq!((l.insn, l.value), ((0, 4), 5316));
        let lhi = load(Arch::S390x, &[0xa7, 0x28, 0, 0], 0).expect("lhi");
        assert_ne!(lhi.register, l.register);
        assert!(load(Arch::S390x, &[0xc0, 0xe5, 0, 0, 0, 0], 0).is_none());
    }
}
