//! The generated part of a livepatch module: its C source (klp_patch, klp_object, klp_func, callbacks)
//! and its kbuild file, plus the headers patch authors include.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

/// Headers a patch may include (`#include "kpatch-macros.h"`); written into the work directory and put
/// on the compiler's include path for both builds of every object.
pub const HEADERS: [(&str, &str); 3] = [
    (
        "kpatch-macros.h",
        include_str!("../../include/kpatch-macros.h"),
    ),
    (
        "kpatch-syscall.h",
        include_str!("../../include/kpatch-syscall.h"),
    ),
    ("klpx.h", include_str!("../../include/klpx.h")),
];

/// Name prefixes of the callback wrappers the headers define, with the `klp_callbacks` field each fills.
pub const CALLBACK_PREFIXES: [(&str, &str); 4] = [
    ("klpx_pre_patch_cb_", "pre_patch"),
    ("klpx_post_patch_cb_", "post_patch"),
    ("klpx_pre_unpatch_cb_", "pre_unpatch"),
    ("klpx_post_unpatch_cb_", "post_unpatch"),
];

/// One function the livepatch replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuncSpec {
    pub old_name: String,
    /// The global alias of the new version, defined in a part object.
    pub new_symbol: String,
    pub sympos: u64,
}

/// One `klp_object`: vmlinux or a module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectSpec {
    pub funcs: Vec<FuncSpec>,
    /// `klp_callbacks` field → function name.
    pub callbacks: BTreeMap<&'static str, String>,
}

/// Everything the generated source says.
#[derive(Debug, Clone)]
pub struct ModuleSpec {
    /// File name of the module, without `.ko` (`livepatch-fix`).
    pub name: String,
    /// Atomic replace (`klp_patch.replace`).
    pub replace: bool,
    /// `vmlinux` or module name → what is patched there.
    pub objects: BTreeMap<String, ObjectSpec>,
    /// Shown in `MODULE_DESCRIPTION`.
    pub description: String,
    /// Symbol namespaces the module's code uses exports of (`MODULE_INFO(import_ns, ...)`).
    pub imports: std::collections::BTreeSet<String>,
}

/// Sanitises a module name: letters, digits, `-` and `_`, at most 55 characters (the livepatch core's
/// limit for object names).
pub fn sanitize_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(55);
    s
}

/// Whether `name` is a module name the kernel takes: 1 to 55 ASCII letters, digits, `-` and `_`
/// (`MODULE_NAME_LEN` is 56 with the NUL on 64-bit kernels).
pub fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 55
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a module name the user gave (`-n`, `--object`): what the kernel takes as a module name
/// and as a livepatch object name, unchanged: ASCII letters, digits, `-` and `_`, 1 to 55 characters.
pub fn check_module_name(option: &str, name: &str) -> Result<(), crate::error::UserError> {
    if is_module_name(name) {
        Ok(())
    } else {
        Err(crate::error::UserError::new(format!(
            "{option} {name:?}: not a module name; use 1 to 55 ASCII letters, digits, '-' and '_'"
        )))
    }
}

/// The default name for a patch file: `livepatch-<file stem>`.
pub fn default_name(patch: &Path) -> String {
    let stem = patch
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = stem
        .strip_suffix(".patch")
        .or_else(|| stem.strip_suffix(".diff"))
        .unwrap_or(&stem);
    sanitize_name(&format!("livepatch-{stem}"))
}

fn c_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => out.push(c),
            c => {
                let _ = write!(out, "\\x{:02x}", c as u32 & 0xff);
            }
        }
    }
    out.push('"');
    out
}

/// For kernels that cannot load livepatches (Linux 6.12 on arm64 has no `CONFIG_LIVEPATCH`), the
/// livepatch structures as 6.12's `<linux/livepatch.h>` names them, so that the module still compiles
/// and links and its livepatch sections can be written and checked; `klp_enable_patch` then refuses.
/// Inert where the kernel has livepatch support.
const NO_LIVEPATCH_FALLBACK: &str = "\
#if !IS_ENABLED(CONFIG_LIVEPATCH)
/* This kernel has no livepatch support: build and check only (the module cannot be loaded). */
struct klp_func { const char *old_name; void *new_func; unsigned long old_sympos; };
struct klp_object;
struct klp_callbacks {
\tint (*pre_patch)(struct klp_object *obj);
\tvoid (*post_patch)(struct klp_object *obj);
\tvoid (*pre_unpatch)(struct klp_object *obj);
\tvoid (*post_unpatch)(struct klp_object *obj);
};
struct klp_object { const char *name; struct klp_func *funcs; struct klp_callbacks callbacks; };
struct klp_patch { struct module *mod; struct klp_object *objs; bool replace; };
static inline int klp_enable_patch(struct klp_patch *patch) { return -ENOSYS; }
#endif

";

/// The module's own function the livepatch core calls for object `n`'s callback `field`.
fn callback_entry(n: usize, field: &str) -> String {
    format!("klpx_callback_{n}_{field}")
}

/// The module's C source.
pub fn module_source(spec: &ModuleSpec) -> String {
    let mut c = String::new();
    c.push_str("// SPDX-License-Identifier: GPL-2.0\n/* Generated by klpx. */\n");
    c.push_str(
        "#include <linux/module.h>\n#include <linux/kernel.h>\n#include <linux/livepatch.h>\n\n",
    );
    c.push_str(NO_LIVEPATCH_FALLBACK);
    // The new functions are named as data: the module only passes their addresses to the
    // livepatch core, and a function declaration whose address is taken would make clang's kCFI
    // add a `__kcfi_typeid_` symbol with klpx's internal name to the module's kallsyms.
    for o in spec.objects.values() {
        for f in &o.funcs {
            let _ = writeln!(c, "extern char {}[];", f.new_symbol);
        }
    }
    // The livepatch core calls the callbacks through pointers. On a kernel with control-flow
    // integrity (clang's kCFI) every indirect call checks a type hash its compiler put before the
    // target, which the patch's own callback lacks when nothing in its file takes its address:
    // the core gets a function of this file that calls it directly.
    for (n, o) in spec.objects.values().enumerate() {
        for (field, f) in &o.callbacks {
            let (ret, call) = if *field == "pre_patch" {
                ("int", "return ")
            } else {
                ("void", "")
            };
            let _ = writeln!(
                c,
                "extern {ret} {f}(struct klp_object *obj);\n\
                 static notrace {ret} {}(struct klp_object *obj)\n{{\n\t{call}{f}(obj);\n}}",
                callback_entry(n, field)
            );
        }
    }
    c.push('\n');
    for (n, o) in spec.objects.values().enumerate() {
        let _ = writeln!(c, "static struct klp_func klpx_funcs_{n}[] __used = {{");
        for f in &o.funcs {
            let _ = writeln!(
                c,
                "\t{{ .old_name = {}, .new_func = {}, .old_sympos = {} }},",
                c_string(&f.old_name),
                f.new_symbol,
                f.sympos
            );
        }
        c.push_str("\t{ }\n};\n\n");
    }
    c.push_str("static struct klp_object klpx_objects[] __used = {\n");
    for (n, (name, o)) in spec.objects.iter().enumerate() {
        let objname = if name == "vmlinux" {
            "NULL".to_string()
        } else {
            c_string(name)
        };
        let _ = write!(c, "\t{{ .name = {objname}, .funcs = klpx_funcs_{n}");
        if !o.callbacks.is_empty() {
            c.push_str(", .callbacks = {");
            for field in o.callbacks.keys() {
                let _ = write!(c, " .{field} = {},", callback_entry(n, field));
            }
            c.push_str(" }");
        }
        c.push_str(" },\n");
    }
    c.push_str("\t{ }\n};\n\n");
    let _ = write!(
        c,
        "static struct klp_patch klpx_patch __used = {{\n\t.mod = THIS_MODULE,\n\t.objs = klpx_objects,\n\t.replace = {},\n}};\n\n",
        spec.replace
    );
    c.push_str(
        "/* notrace: the livepatch's own init and exit are no ftrace targets. */\n\
         static notrace int __init klpx_init(void)\n{\n\treturn klp_enable_patch(&klpx_patch);\n}\n\n\
         static notrace void __exit klpx_exit(void)\n{\n}\n\n\
         module_init(klpx_init);\nmodule_exit(klpx_exit);\n\
         MODULE_LICENSE(\"GPL\");\nMODULE_INFO(livepatch, \"Y\");\n",
    );
    let _ = writeln!(c, "MODULE_DESCRIPTION({});", c_string(&spec.description));
    // What `klpx info` (and modinfo) shows of the patch without reading klp_func's layout.
    let _ = writeln!(c, "MODULE_INFO(klpx_replace, \"{}\");", spec.replace as u8);
    for (name, o) in &spec.objects {
        for f in &o.funcs {
            let _ = writeln!(
                c,
                "MODULE_INFO(klpx_func, {});",
                c_string(&format!("{name}:{}:{}", f.old_name, f.sympos))
            );
        }
    }
    for ns in &spec.imports {
        // What MODULE_IMPORT_NS expands to, in every kernel generation (its argument changed from an
        // identifier to a string in 6.13).
        let _ = writeln!(c, "MODULE_INFO(import_ns, {});", c_string(ns));
    }
    c
}

/// The kbuild file linking the generated source with the part objects (`part-N.o`, shipped).
pub fn kbuild_file(name: &str, parts: usize) -> String {
    let mut k = format!("obj-m := {name}.o\n{name}-y := klpx-livepatch.o");
    for n in 0..parts {
        let _ = write!(k, " part-{n}.o");
    }
    k.push('\n');
    k
}

/// Writes the headers into `dir`.
pub fn write_headers(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in HEADERS {
        std::fs::write(dir.join(name), text)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitised_and_bounded() {
        assert_eq!(
            default_name(Path::new("/x/fix proc.patch")),
            "livepatch-fix-proc"
        );
        assert_eq!(sanitize_name(&"a".repeat(80)).len(), 55);
    }

    #[test]
    fn source_declares_every_function_and_callback() {
        let mut objects = BTreeMap::new();
        let mut o = ObjectSpec::default();
        o.funcs.push(FuncSpec {
            old_name: "cmdline_proc_show".into(),
            new_symbol: "klpx_f0_0".into(),
            sympos: 0,
        });
        o.callbacks
            .insert("pre_patch", "klpx_pre_patch_cb_x".into());
        objects.insert("vmlinux".to_string(), o);
        let src = module_source(&ModuleSpec {
            name: "livepatch-t".into(),
            replace: true,
            objects,
            description: "t".into(),
            imports: ["EFIVAR".to_string()].into_iter().collect(),
        });
        assert!(src.contains("extern char klpx_f0_0[];"));
        assert!(src.contains(".old_name = \"cmdline_proc_show\", .new_func = klpx_f0_0"));
        assert!(src.contains(".name = NULL"));
        assert!(src.contains(".pre_patch = klpx_callback_0_pre_patch"));
        assert!(src.contains(
            "static notrace int klpx_callback_0_pre_patch(struct klp_object *obj)\n{\n\treturn klpx_pre_patch_cb_x(obj);\n}"
        ));
        assert!(src.contains(".replace = true"));
        assert!(src.contains("MODULE_INFO(livepatch, \"Y\")"));
        assert!(src.contains("MODULE_INFO(import_ns, \"EFIVAR\");"));
    }
}
