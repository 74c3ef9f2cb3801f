//! The initramfs `klpx verify` boots: a gzip'd newc cpio archive with a static busybox for the guest's
//! architecture, klpx's `/init` script, the modules and the check commands.
//!
//! The newc format is written here (it is a header of hex fields per entry); gzip runs as a process.
//! The busybox comes from the caller (`setup::busybox` finds or downloads one) and is checked here to
//! be a static executable of the guest's architecture.

use std::path::Path;

use anyhow::{Context, Result, bail};
use klpx_arch::{Arch, Endian};
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, Object};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// A newc (`070701`) cpio archive being written in memory.
#[derive(Debug, Default)]
pub struct Cpio {
    buf: Vec<u8>,
    next_ino: u32,
}

impl Cpio {
    pub fn new() -> Cpio {
        Cpio {
            buf: Vec::new(),
            next_ino: 1,
        }
    }

    /// A directory (`path` without a leading `/`).
    pub fn dir(&mut self, path: &str) {
        self.entry(path, S_IFDIR | 0o755, 2, (0, 0), &[]);
    }

    /// A regular file with permission bits `perm` (0o755, 0o644).
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.entry(path, S_IFREG | (perm & 0o7777), 1, (0, 0), data);
    }

    /// A character device node.
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.entry(path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[]);
    }

    fn entry(&mut self, path: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(ino, mode, nlink, rdev, path, data.len());
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        name: &str,
        size: usize,
    ) {
        let name = name.trim_start_matches('/');
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so archives are reproducible
            u32::try_from(size).expect("initramfs member under 4 GiB"),
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// Ends the archive with its trailer and returns its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.header(0, 0, 1, (0, 0), "TRAILER!!!", 0);
        self.buf
    }
}

/// Compresses with `gzip -n` (no name or time stamp in the header).
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let out = duct::cmd!("gzip", "-n", "-6", "-c")
        .stdin_bytes(data)
        .stdout_capture()
        .run()
        .context("running gzip")?;
    Ok(out.stdout)
}

/// What goes into the initramfs besides busybox: `(path in the guest, permission bits, bytes)`.
pub struct Member {
    pub path: String,
    pub perm: u32,
    pub data: Vec<u8>,
}

/// The directories every initramfs has.
const BASE_DIRS: [&str; 6] = ["bin", "dev", "proc", "sys", "tmp", "klpx"];

/// The gzip'd initramfs: busybox as `/bin/busybox`, `init` as `/init`, and `members`.
pub fn build(busybox: &Path, init: &str, members: &[Member]) -> Result<Vec<u8>> {
    let bb = std::fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    let mut c = Cpio::new();
    for d in BASE_DIRS {
        c.dir(d);
    }
    c.char_dev("dev/console", 0o600, 5, 1);
    c.char_dev("dev/null", 0o666, 1, 3);
    c.file("bin/busybox", 0o755, &bb);
    c.file("init", 0o755, init.as_bytes());
    let mut dirs = std::collections::BTreeSet::new();
    for m in members {
        // Parent directories first: the kernel's unpacker does not create them.
        let rel = Path::new(m.path.trim_start_matches('/'));
        let parents: Vec<&Path> = rel.ancestors().skip(1).collect();
        for d in parents.into_iter().rev() {
            let d = d.to_string_lossy();
            if !d.is_empty() && !BASE_DIRS.contains(&&*d) && dirs.insert(d.to_string()) {
                c.dir(&d);
            }
        }
        c.file(&m.path, m.perm, &m.data);
    }
    gzip(&c.finish())
}

/// Checks that `path` is a statically linked executable for `arch`.
pub fn check_static(path: &Path, arch: Arch) -> Result<()> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let elf = ElfFile64::<Endianness>::parse(&*data)
        .with_context(|| format!("{}: not a 64-bit ELF executable", path.display()))?;
    let endian = elf.endian();
    let byte_order = if elf.is_little_endian() {
        Endian::Little
    } else {
        Endian::Big
    };
    let machine = elf.elf_header().e_machine(endian).0;
    if Arch::from_elf(machine, byte_order) != Some(arch) {
        bail!("{}: not an {arch} executable", path.display());
    }
    let dynamic = elf
        .elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(endian) == object::elf::PT_INTERP);
    if dynamic {
        bail!(
            "{}: dynamically linked; the guest needs a static busybox (Debian's busybox-static)",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One member read back: name, mode, rdev (major, minor), data.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Reads a newc archive back.
    fn read_newc(mut b: &[u8]) -> Vec<Entry> {
        let field = |h: &[u8], i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                .unwrap()
        };
        let align = |n: usize| n.div_ceil(4) * 4;
        let mut out = Vec::new();
        loop {
            assert_eq!(&b[..6], b"070701");
            let (mode, size, namesize) = (field(b, 1), field(b, 6) as usize, field(b, 11) as usize);
            let rdev = (field(b, 9), field(b, 10));
            let name = std::str::from_utf8(&b[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(b[110 + namesize - 1], 0);
            let data_at = align(110 + namesize);
            let data = b[data_at..data_at + size].to_vec();
            b = &b[align(data_at + size)..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty());
                return out;
            }
            out.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn newc_entries_read_back() {
        let mut c = Cpio::new();
        c.dir("bin");
        c.file("/init", 0o755, b"#!/bin/sh\n");
        c.file("klpx/a.ko", 0o644, b"12345");
        c.char_dev("dev/console", 0o600, 5, 1);
        let bytes = c.finish();
        assert_eq!(bytes.len() % 4, 0);
        let got = read_newc(&bytes);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["bin", "init", "klpx/a.ko", "dev/console"]);
        assert_eq!(got[0].1, 0o040755);
        assert_eq!(
            (got[1].1, got[1].3.as_slice()),
            (0o100755, &b"#!/bin/sh\n"[..])
        );
        assert_eq!(got[2].3, b"12345");
        assert_eq!((got[3].1, got[3].2), (0o020600, (5, 1)));
    }

    #[test]
    fn host_cpio_lists_the_archive() {
        which::which("cpio").expect("GNU cpio (scripts/test.sh installs it)");
        let mut c = Cpio::new();
        c.dir("bin");
        c.file("bin/x", 0o755, b"abc");
        let out = duct::cmd!("cpio", "-t", "--quiet")
            .stdin_bytes(c.finish())
            .read()
            .unwrap();
        assert_eq!(out.lines().collect::<Vec<_>>(), ["bin", "bin/x"]);
    }

    #[test]
    fn gzip_round_trips() {
        let z = gzip(b"hello initramfs").unwrap();
        assert_eq!(&z[..2], &[0x1f, 0x8b]);
        let back = duct::cmd!("gzip", "-dc").stdin_bytes(z).read().unwrap();
        assert_eq!(back, "hello initramfs");
    }
}
