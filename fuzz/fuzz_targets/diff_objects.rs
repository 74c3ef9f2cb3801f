//! Fuzzes the object reader, the differ and the diff-object writer together.
//!
//! Input: a 4-byte little-endian split point, then two objects. Whatever the bytes, reading and diffing
//! must end in a value or an error, never a panic; and an object the writer produces must read back.

#![no_main]

use std::path::Path;

use klpx::differ::{DiffOptions, Exports, Verdict, diff};
use klpx::objfile::ObjectFile;
use klpx::writer::diff_object::write_object;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let split = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let rest = &data[4..];
    let split = split % (rest.len() + 1);
    let (a, b) = rest.split_at(split);
    let Ok(orig) = ObjectFile::parse(Path::new("orig.o"), a) else { return };
    let Ok(patched) = ObjectFile::parse(Path::new("patched.o"), b) else { return };
    let opts = DiffOptions { object_name: "vmlinux".into(), exports: Exports::default(), count_line_changes: false, objtool_at_module_link: false };
    let Ok(d) = diff(&orig, &patched, &opts) else { return };
    if d.verdict == Verdict::Patchable {
        if let Ok(out) = write_object(&patched, &d) {
            ObjectFile::parse(Path::new("out.o"), &out).expect("klpx's own output must read back");
        }
    }
});
