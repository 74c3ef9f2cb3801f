//! Where every object of a kernel output tree is linked: into vmlinux (`vmlinux.a`, a thin
//! archive) or into a module (the `.mod` files of `modules.order`), or, in a tree prepared but never
//! built, what the compile flags and the shipped kernel say.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::cmdfile::{CmdFile, cmd_files};
use crate::error::UserError;

/// Where every object of a built tree is linked.
#[derive(Debug, Default)]
pub struct LinkMap {
    /// Object → livepatch object name.
    pub owner: HashMap<String, String>,
    /// Module name → its `.ko` path relative to the output tree.
    pub modules: BTreeMap<String, String>,
    /// Made from a prepared tree, where an object with a record may still not be the kernel's.
    pub prepared: bool,
}

impl LinkMap {
    /// Reads `vmlinux.a` and the `.mod` files of `modules.order` in the output tree `objdir`.
    pub fn load(objdir: &Path) -> Result<LinkMap, UserError> {
        let mut map = LinkMap::default();
        let archive = objdir.join("vmlinux.a");
        let data = std::fs::read(&archive).map_err(|e| {
            UserError::new(format!(
                "{}: cannot read ({e}); build the kernel first (make, or klpx build --prepare)",
                archive.display()
            ))
        })?;
        let ar = object::read::archive::ArchiveFile::parse(&*data)
            .map_err(|e| UserError::new(format!("{}: not an archive: {e}", archive.display())))?;
        for m in ar.members() {
            let m = m.map_err(|e| UserError::new(format!("{}: {e}", archive.display())))?;
            let name = String::from_utf8_lossy(m.name()).into_owned();
            map.owner.insert(name, "vmlinux".to_string());
        }
        let order = std::fs::read_to_string(objdir.join("modules.order")).unwrap_or_default();
        for line in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let base = line.trim_end_matches(".o").trim_end_matches(".ko");
            let name = module_name(base);
            let mod_file = objdir.join(format!("{base}.mod"));
            let objects = std::fs::read_to_string(&mod_file).unwrap_or_default();
            for o in objects.split_whitespace() {
                map.owner.insert(o.to_string(), name.clone());
            }
            map.modules.insert(name, format!("{base}.ko"));
        }
        Ok(map)
    }
}

impl LinkMap {
    /// The links of a prepared tree (never built): each object kbuild compiled there belongs to the
    /// module its flags name (`-DMODULE`, `KBUILD_MODNAME`), else to vmlinux; the modules are the
    /// shipped kernel's, from `modules.order` under `modules` (compressed or not).
    /// `in_vmlinux(source, object)` says whether the kernel links the object compiled from
    /// `source` (relative to the source tree) into vmlinux, from its debug info or symbols.
    pub fn prepared(
        srcdir: &Path,
        objdir: &Path,
        modules: Option<&Path>,
        linked: &dyn Fn(&str, &Path) -> bool,
    ) -> Result<LinkMap, UserError> {
        // kbuild records `$(srctree)/fs/x.c` in `O=` builds.
        let src_prefix = format!("{}/", srcdir.display());
        let in_vmlinux = |source: &str, object: &str| {
            let rel = source.strip_prefix(&src_prefix).unwrap_or(source);
            linked(rel.strip_prefix("./").unwrap_or(rel), &objdir.join(object))
        };
        let mut map = LinkMap {
            prepared: true,
            ..LinkMap::default()
        };
        for path in cmd_files(objdir) {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(cmd) = CmdFile::parse(&text) else {
                continue;
            };
            let owner = if cmd.command.split_whitespace().any(|w| w == "-DMODULE") {
                match modname(&cmd.command) {
                    Some(m) => m,
                    None => continue,
                }
            } else if cmd
                .source
                .as_deref()
                .is_some_and(|s| in_vmlinux(s, &cmd.target))
            {
                "vmlinux".to_string()
            } else {
                // Compiled here, but not part of the shipped kernel.
                continue;
            };
            map.owner.insert(cmd.target.clone(), owner);
        }
        if let Some(dir) = modules {
            let order_file = dir.join("modules.order");
            let order = std::fs::read_to_string(&order_file).map_err(|e| {
                UserError::new(format!("{}: cannot read: {e}", order_file.display()))
            })?;
            for line in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let ko = dir.join(line);
                let found = [".xz", ".zst", ".gz"]
                    .iter()
                    .map(|z| PathBuf::from(format!("{}{z}", ko.display())))
                    .chain([ko.clone()])
                    .find(|p| p.is_file());
                if let Some(p) = found {
                    map.modules
                        .insert(module_name(line), p.display().to_string());
                }
            }
        }
        Ok(map)
    }

    /// Adds an out-of-tree module, built with `make M=`: its `.mod` file (beside the `.ko`) lists its
    /// objects by absolute path. Returns the module's name.
    pub fn add_module(&mut self, ko: &Path) -> Result<String, UserError> {
        let path = ko.display().to_string();
        let base = path.trim_end_matches(".ko");
        let name = module_name(base);
        let mod_file = format!("{base}.mod");
        let objects = std::fs::read_to_string(&mod_file).map_err(|e| {
            UserError::new(format!(
                "{mod_file}: cannot read ({e}); give --oot-module the .ko built in its source directory"
            ))
        })?;
        for o in objects.split_whitespace() {
            self.owner.insert(o.to_string(), name.clone());
        }
        self.modules.insert(name.clone(), path);
        Ok(name)
    }
}

/// The module name a compile command gives (`-DKBUILD_MODNAME='"dummy"'`).
fn modname(command: &str) -> Option<String> {
    let at = command.find("-DKBUILD_MODNAME=")? + "-DKBUILD_MODNAME=".len();
    let rest = &command[at..];
    let word = rest.split_whitespace().next()?;
    let name = word.trim_matches(|c| c == '\'' || c == '"' || c == '\\');
    (!name.is_empty()).then(|| name.to_string())
}

/// The name the kernel gives the module built as `dir/name-x.ko`: `name_x`.
pub fn module_name(path: &str) -> String {
    path.rsplit('/')
        .next()
        .unwrap_or(path)
        .trim_end_matches(".ko")
        .replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modname_from_flags() {
        assert_eq!(
            modname("gcc -DMODULE -DKBUILD_BASENAME='\"dummy\"' -DKBUILD_MODNAME='\"dummy\"' -c")
                .as_deref(),
            Some("dummy")
        );
        assert_eq!(modname("gcc -c x.c"), None);
    }

    #[test]
    fn module_names_use_underscores() {
        assert_eq!(
            module_name("samples/kobject/kobject-example"),
            "kobject_example"
        );
        assert_eq!(module_name("fs/ext4/ext4.ko"), "ext4");
    }
}
