//! Livepatch relocations recorded by `klpx diff` must survive `ld -r` with other objects (as they will
//! in the module link): after linking two diff outputs together, every `.klpx.relocs` entry still
//! names the same place and the same symbol, for every architecture, read back with `object`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use klpx_arch::Arch;
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};

const ORIG_A: &str = "extern int printk(const char *, ...);\nstatic int counter;\nint shown(int a) { counter++; printk(\"value %d\\n\", a + counter); return 0; }\nint other(int a) { return a + 1; }\n";
const PATCHED_A: &str = "extern int printk(const char *, ...);\nstatic int counter;\nint shown(int a) { counter += 2; printk(\"patched %d\\n\", a + counter); return 0; }\nint other(int a) { return a + 1; }\n";
// B has a static function named like A's, so `ld -r` merges the two `.text.shown` sections and A's
// places move by the size of B's.
const ORIG_B: &str = "static int limit = 3;\nstatic long total;\n__attribute__((noinline)) static long shown(long v) { if (v > limit) v = limit; total += v; return total; }\nlong add(long v) { return shown(v) + 1; }\n";
const PATCHED_B: &str = "static int limit = 3;\nstatic long total;\n__attribute__((noinline)) static long shown(long v) { if (v > limit + 1) v = limit; total += v; return total; }\nlong add(long v) { return shown(v) + 1; }\n";

fn workdir(arch: Arch) -> PathBuf {
    let d = std::env::temp_dir().join(format!("klpx-link-{}-{}", arch.name(), std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles `src` as the unit `<unit>.c` (in a directory of its own, so both builds of a unit carry
/// the same source file name, as a kernel build's do) into `out`.
fn compile(arch: Arch, unit: &str, src: &str, out: &Path) {
    let b = arch.backend();
    let dir = out.with_extension("src");
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join(format!("{unit}.c"));
    std::fs::write(&c, src).unwrap();
    let status = Command::new(format!("{}gcc", b.default_cross_prefix()))
        .args([
            "-O2",
            "-ffunction-sections",
            "-fdata-sections",
            "-ffreestanding",
            "-fno-stack-protector",
            "-c",
        ])
        .args(b.kernel_cflags())
        .args(b.entry_cflags())
        .args(b.livepatch_cflags())
        .arg("-o")
        .arg(out)
        .arg(&c)
        .status()
        .expect("running the compiler");
    assert!(status.success(), "{arch}: compiling {}", c.display());
}

/// Runs `klpx diff --json -o out` and returns the (section, offset, symbol) of each livepatch relocation.
fn diff(orig: &Path, patched: &Path, out: &Path) -> BTreeSet<(String, u64, String)> {
    let run = Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args(["diff", "--json", "-o"])
        .args([out, orig, patched])
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    v["klp_relocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["section"].as_str().unwrap().to_string(),
                k["offset"].as_u64().unwrap(),
                k["symbol"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Reads `.klpx.relocs` of a (linked) object: each entry's place (section name, section index, offset)
/// and symbol name.
fn read_side_table(bytes: &[u8]) -> BTreeSet<(String, usize, u64, String)> {
    let file = object::File::parse(bytes).unwrap();
    let table = file
        .section_by_name(".klpx.relocs")
        .expect(".klpx.relocs survives");
    let strtab = file
        .section_by_name(".klpx.strtab")
        .expect(".klpx.strtab survives");
    let strings = strtab.data().unwrap();
    let mut dest = std::collections::BTreeMap::new();
    let mut name = std::collections::BTreeMap::new();
    for (off, r) in table.relocations() {
        let (sec, base) = match r.target() {
            RelocationTarget::Symbol(i) => {
                let s = file.symbol_by_index(i).unwrap();
                (
                    file.section_by_index(s.section_index().unwrap()).unwrap(),
                    s.address(),
                )
            }
            RelocationTarget::Section(i) => (file.section_by_index(i).unwrap(), 0),
            _ => panic!("unexpected relocation target"),
        };
        let at = (base as i64 + r.addend()) as u64;
        if off % 32 == 0 {
            dest.insert(
                off / 32,
                (sec.name().unwrap().to_string(), sec.index().0, at),
            );
        } else {
            assert_eq!(sec.name().unwrap(), ".klpx.strtab");
            let rest = &strings[at as usize..];
            let obj_end = rest.iter().position(|&b| b == 0).unwrap();
            let sym = &rest[obj_end + 1..];
            let sym_end = sym.iter().position(|&b| b == 0).unwrap();
            assert_eq!(&rest[..obj_end], b"vmlinux");
            name.insert(
                off / 32,
                String::from_utf8(sym[..sym_end].to_vec()).unwrap(),
            );
        }
    }
    assert_eq!(dest.len(), name.len());
    dest.into_iter()
        .map(|(i, (s, x, o))| (s, x, o, name[&i].clone()))
        .collect()
}

/// Where each input section starts in the merged output section of its name, as `ld -r` lays them out.
fn merged_starts(inputs: &[Vec<u8>]) -> std::collections::HashMap<(usize, usize), u64> {
    let mut end: std::collections::HashMap<String, u64> = Default::default();
    let mut start = std::collections::HashMap::new();
    for (f, bytes) in inputs.iter().enumerate() {
        let file = object::File::parse(&**bytes).unwrap();
        for sec in file.sections() {
            let name = sec.name().unwrap().to_string();
            let at = end.entry(name).or_insert(0);
            let align = sec.align().max(1);
            *at = at.div_ceil(align) * align;
            start.insert((f, sec.index().0), *at);
            *at += sec.size();
        }
    }
    start
}

fn check(arch: Arch) {
    let d = workdir(arch);
    let [oa, pa, ob, pb, outa, outb, linked] = [
        "oa.o", "pa.o", "ob.o", "pb.o", "outa.o", "outb.o", "linked.o",
    ]
    .map(|n| d.join(n));
    compile(arch, "a", ORIG_A, &oa);
    compile(arch, "a", PATCHED_A, &pa);
    compile(arch, "b", ORIG_B, &ob);
    compile(arch, "b", PATCHED_B, &pb);
    let want = diff(&oa, &pa, &outa);
    let from_b = diff(&ob, &pb, &outb);
    assert!(
        want.iter().any(|k| k.2 == "counter"),
        "{arch}: counter must be a livepatch relocation: {want:?}"
    );
    assert!(
        from_b.iter().any(|k| k.2 == "total"),
        "{arch}: total must be a livepatch relocation: {from_b:?}"
    );
    // Linking A after B moves A's sections; the places must move with them.
    let status = Command::new(format!("{}ld", arch.backend().default_cross_prefix()))
        .args(["-r", "-o"])
        .args([&linked, &outb, &outa])
        .status()
        .unwrap();
    assert!(status.success(), "{arch}: ld -r failed");
    let a_only = read_side_table(&std::fs::read(&outa).unwrap());
    let strip = |t: &BTreeSet<(String, usize, u64, String)>| -> BTreeSet<(String, u64, String)> {
        t.iter()
            .map(|(s, _, o, n)| (s.clone(), *o, n.clone()))
            .collect()
    };
    assert_eq!(
        strip(&a_only),
        want,
        "{arch}: the unlinked side table must match the report"
    );
    // `ld -r` concatenates same-named sections in input order (B, then A), each at its alignment:
    // every place must move to where its section landed.
    let inputs = [std::fs::read(&outb).unwrap(), std::fs::read(&outa).unwrap()];
    let start = merged_starts(&inputs);
    let b_only = read_side_table(&inputs[0]);
    let want: BTreeSet<(String, u64, String)> = b_only
        .iter()
        .map(|e| (0, e))
        .chain(a_only.iter().map(|e| (1, e)))
        .map(|(f, (s, x, o, n))| (s.clone(), start[&(f, *x)] + o, n.clone()))
        .collect();
    assert!(
        a_only.iter().any(|(_, x, _, _)| start[&(1, *x)] > 0),
        "{arch}: the link must move some of A's places, or the test proves nothing"
    );
    let got = strip(&read_side_table(&std::fs::read(&linked).unwrap()));
    assert_eq!(got, want, "{arch}: entries after ld -r");
    let file_bytes = std::fs::read(&linked).unwrap();
    let file = object::File::parse(&*file_bytes).unwrap();
    assert_eq!(
        file.is_little_endian(),
        arch.backend().endian() == klpx_arch::Endian::Little
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn side_tables_survive_ld_r_on_every_arch() {
    for arch in Arch::ALL {
        check(arch);
    }
}
