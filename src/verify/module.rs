//! What `klpx verify` reads from a kernel module (`.ko`): its name, whether it is a livepatch, its
//! version magic and architecture. Read from `.modinfo` (and `.gnu.linkonce.this_module` for the name
//! when `.modinfo` lacks it) with the `object` crate.

use std::path::{Path, PathBuf};

use klpx_arch::{Arch, Endian};
use object::read::elf::{ElfFile64, FileHeader};
use object::{Endianness, Object, ObjectSection};
use serde::Serialize;

use crate::error::UserError;

/// Offset of `name` in `struct module` on 64-bit kernels: after `enum module_state state` (padded to
/// 8) and `struct list_head list`.
const THIS_MODULE_NAME_OFFSET: usize = 24;
/// `MODULE_NAME_LEN` on 64-bit kernels.
const MODULE_NAME_LEN: usize = 56;

/// A kernel module as `klpx verify` needs to know it.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleInfo {
    pub path: PathBuf,
    /// The module name the kernel uses (`livepatch_sample`).
    pub name: String,
    /// `MODULE_INFO(livepatch, "Y")`.
    pub livepatch: bool,
    pub vermagic: Option<String>,
    /// The architecture its ELF header names.
    #[serde(serialize_with = "arch_name")]
    pub arch: Arch,
}

fn arch_name<S: serde::Serializer>(a: &Arch, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(a.name())
}

impl ModuleInfo {
    /// The livepatch's name under `/sys/kernel/livepatch`: the module name with `-` as `_`.
    pub fn patch_name(&self) -> String {
        self.name.replace('-', "_")
    }
}

/// Reads a module file. Every problem is the user's (wrong file, not a module): one line naming it.
pub fn read_module(path: &Path) -> Result<ModuleInfo, UserError> {
    let bad = |what: &str| UserError::new(format!("{}: {what}", path.display()));
    let data =
        std::fs::read(path).map_err(|e| bad(&format!("cannot read the kernel module: {e}")))?;
    parse_module(path, &data)
}

/// Reads a module from its bytes (`path` names it in errors).
pub fn parse_module(path: &Path, data: &[u8]) -> Result<ModuleInfo, UserError> {
    let bad = |what: &str| UserError::new(format!("{}: {what}", path.display()));
    let elf = ElfFile64::<Endianness>::parse(data)
        .map_err(|e| bad(&format!("not a 64-bit ELF kernel module: {e}")))?;
    let endian = elf.endian();
    let header = elf.elf_header();
    if header.e_type(endian) != object::elf::ET_REL {
        return Err(bad("not a kernel module (not a relocatable ELF object)"));
    }
    let machine = header.e_machine(endian).0;
    let byte_order = if endian == Endianness::Big {
        Endian::Big
    } else {
        Endian::Little
    };
    let arch = Arch::from_elf(machine, byte_order).ok_or_else(|| {
        bad(&format!(
            "ELF machine {machine} is none of klpx's architectures"
        ))
    })?;
    let modinfo = elf
        .section_by_name(".modinfo")
        .ok_or_else(|| bad("not a kernel module (no .modinfo section)"))?;
    let info = modinfo_entries(
        modinfo
            .data()
            .map_err(|e| bad(&format!("unreadable .modinfo: {e}")))?,
    );
    let field = |key: &str| info.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let name = match field("name") {
        Some(n) => n,
        None => this_module_name(&elf).ok_or_else(|| {
            bad("no module name in .modinfo or .gnu.linkonce.this_module (was it built by kbuild?)")
        })?,
    };
    if !crate::module::source::is_module_name(&name) {
        return Err(bad(&format!(
            "module name {name:?} is not a kernel module name"
        )));
    }
    Ok(ModuleInfo {
        path: path.to_path_buf(),
        name,
        livepatch: field("livepatch").as_deref() == Some("Y"),
        vermagic: field("vermagic"),
        arch,
    })
}

/// The `key=value` entries of a `.modinfo` section, in order (a key may repeat: `alias`,
/// `import_ns`).
pub fn modinfo_entries(section: &[u8]) -> Vec<(String, String)> {
    section
        .split(|&b| b == 0)
        .filter_map(|e| {
            let e = String::from_utf8_lossy(e);
            let (k, v) = e.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `struct module.name` in `.gnu.linkonce.this_module`.
fn this_module_name(elf: &ElfFile64<Endianness>) -> Option<String> {
    let data = elf
        .section_by_name(".gnu.linkonce.this_module")?
        .data()
        .ok()?;
    let field = data.get(THIS_MODULE_NAME_OFFSET..THIS_MODULE_NAME_OFFSET + MODULE_NAME_LEN)?;
    let end = field.iter().position(|&b| b == 0)?;
    (end > 0).then(|| String::from_utf8_lossy(&field[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::write::{Object as WObject, StandardSection};
    use object::{Architecture, BinaryFormat, Endianness as E, SectionKind};

    fn module(modinfo: &[u8], this_module: Option<&[u8]>) -> Vec<u8> {
        let mut o = WObject::new(BinaryFormat::Elf, Architecture::X86_64, E::Little);
        o.section_id(StandardSection::Text);
        let s = o.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
        o.append_section_data(s, modinfo, 1);
        if let Some(t) = this_module {
            let s = o.add_section(
                Vec::new(),
                b".gnu.linkonce.this_module".to_vec(),
                SectionKind::Data,
            );
            o.append_section_data(s, t, 8);
        }
        o.write().unwrap()
    }

    #[test]
    fn reads_name_and_livepatch_flag_from_modinfo() {
        let ko = module(
            b"livepatch=Y\0license=GPL\0name=livepatch_sample\0vermagic=6.12.117 mod_unload \0",
            None,
        );
        let m = parse_module(Path::new("x.ko"), &ko).unwrap();
        assert_eq!(m.name, "livepatch_sample");
        assert!(m.livepatch);
        assert_eq!(m.vermagic.as_deref(), Some("6.12.117 mod_unload "));
        assert_eq!(m.arch, Arch::X86_64);
    }

    #[test]
    fn falls_back_to_this_module_and_maps_dashes() {
        let mut this = vec![0u8; 0x400];
        this[24..24 + 9].copy_from_slice(b"my-fix-12");
        let ko = module(b"license=GPL\0", Some(&this));
        let m = parse_module(Path::new("x.ko"), &ko).unwrap();
        assert_eq!(m.name, "my-fix-12");
        assert_eq!(m.patch_name(), "my_fix_12");
        assert!(!m.livepatch);
    }

    #[test]
    fn refuses_what_is_not_a_module() {
        let e = parse_module(Path::new("a.ko"), b"hello").unwrap_err();
        assert!(e.to_string().starts_with("a.ko: not a 64-bit ELF"), "{e}");
        let mut o = WObject::new(BinaryFormat::Elf, Architecture::X86_64, E::Little);
        o.section_id(StandardSection::Text);
        let e = parse_module(Path::new("b.o"), &o.write().unwrap()).unwrap_err();
        assert!(e.to_string().contains("no .modinfo"), "{e}");
    }
}
