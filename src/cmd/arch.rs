//! `klpx arch list`: what each backend says.

use klpx_arch::{Arch, Endian};
use serde::Serialize;

#[derive(Serialize)]
struct ArchInfo {
    name: &'static str,
    kernel_arch: &'static str,
    triple: String,
    elf_machine: u16,
    endian: &'static str,
    cross_compile: &'static str,
    compiler_package: &'static str,
    entry: &'static str,
    entry_cflags: Vec<&'static str>,
    livepatch_cflags: Vec<&'static str>,
    relocations: &'static str,
    /// Special sections with the entry sizes tried when splitting them.
    special_sections: Vec<String>,
    /// `klpx verify`: the emulator with its machine arguments, its Debian package, the console,
    /// the kernel image in a built tree, and Debian's architecture name (for busybox-static).
    qemu: String,
    qemu_package: &'static str,
    console: &'static str,
    kernel_image: &'static str,
    debian_arch: &'static str,
}

fn info(arch: Arch) -> ArchInfo {
    let b = arch.backend();
    ArchInfo {
        name: b.name(),
        kernel_arch: b.kernel_arch(),
        triple: b.triple().to_string(),
        elf_machine: b.elf_machine(),
        endian: if b.endian() == Endian::Big {
            "big"
        } else {
            "little"
        },
        cross_compile: b.default_cross_prefix(),
        compiler_package: b.compiler_package(),
        entry: b.entry_convention(),
        entry_cflags: b.entry_cflags().to_vec(),
        livepatch_cflags: b.livepatch_cflags().to_vec(),
        relocations: b.addend_convention(),
        special_sections: klpx_arch::all_special_sections(b)
            .iter()
            .map(|s| {
                let sizes: Vec<String> = s.entry_sizes.iter().map(u64::to_string).collect();
                let mut d = format!("{} ({})", s.name, sizes.join("|"));
                if let Some((p, n)) = s.parallel {
                    d.push_str(&format!(" with {p} ({n})"));
                }
                if let Some(c) = s.companion {
                    d.push_str(&format!(" and {c}"));
                }
                d
            })
            .collect(),
        qemu: std::iter::once(b.qemu_binary())
            .chain(b.qemu_machine_args().iter().copied())
            .collect::<Vec<_>>()
            .join(" "),
        qemu_package: b.qemu_package(),
        console: b.console(),
        kernel_image: b.kernel_image(),
        debian_arch: b.debian_arch(),
    }
}

/// Prints the architecture table (or JSON) and returns the exit status.
pub fn list(json: bool) -> i32 {
    let all: Vec<ArchInfo> = Arch::ALL.into_iter().map(info).collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&all).expect("serialisable")
        );
        return 0;
    }
    for a in &all {
        println!("{}", a.name);
        println!(
            "  ARCH={}  CROSS_COMPILE={}  triple {}",
            a.kernel_arch, a.cross_compile, a.triple
        );
        println!(
            "  ELF machine {}, {}-endian; compiler package {}",
            a.elf_machine, a.endian, a.compiler_package
        );
        println!("  entry: {}", a.entry);
        println!(
            "  entry flags: {}; livepatch objects add: -ffunction-sections -fdata-sections {}",
            a.entry_cflags.join(" "),
            a.livepatch_cflags.join(" ")
        );
        println!("  relocations: {}", a.relocations);
        println!(
            "  special sections (entry bytes): {}",
            a.special_sections.join(", ")
        );
        println!(
            "  qemu: {} ({}), console {}, image {}, Debian arch {}",
            a.qemu, a.qemu_package, a.console, a.kernel_image, a.debian_arch
        );
    }
    0
}
