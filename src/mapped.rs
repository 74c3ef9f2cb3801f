//! Files read through a read-only memory map: a distribution's vmlinux with debug info is hundreds
//! of megabytes, of which klpx reads the symbol table and a few functions.

use std::path::Path;

use anyhow::{Context, Result};

/// A whole file, mapped read-only (or read, when it is empty or cannot be mapped).
pub struct MappedFile {
    ptr: *mut libc::c_void,
    len: usize,
    fallback: Vec<u8>,
}

// SAFETY: the mapping is private and read-only, and lives as long as the value.
unsafe impl Send for MappedFile {}
unsafe impl Sync for MappedFile {}

impl MappedFile {
    pub fn open(path: &Path) -> Result<MappedFile> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len() as usize;
        if len > 0 {
            use std::os::fd::AsRawFd;
            // SAFETY: a fresh private read-only mapping of an open file; unmapped in Drop.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            if ptr != libc::MAP_FAILED {
                return Ok(MappedFile {
                    ptr,
                    len,
                    fallback: Vec::new(),
                });
            }
        }
        Ok(MappedFile {
            ptr: std::ptr::null_mut(),
            len: 0,
            fallback: std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        })
    }
}

impl std::ops::Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.ptr.is_null() {
            &self.fallback
        } else {
            // SAFETY: ptr/len describe a live mapping owned by self.
            unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
        }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if !self.ptr.is_null() {
            // SAFETY: unmapping exactly the mapping made in open.
            unsafe {
                libc::munmap(self.ptr, self.len);
            }
        }
    }
}
