//! The livepatch modules installed on the machine, one directory per kernel release
//! (`/var/lib/klpx/<release>/<name>.ko`, as kpatch keeps `/var/lib/kpatch`), which `klpx load --all`
//! loads at boot for the running release.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{Machine, kernel_name};
use crate::error::UserError;
use crate::verify::module::read_module;

impl Machine {
    /// Installed modules: release → module files, sorted.
    pub fn installed_modules(&self) -> BTreeMap<String, Vec<PathBuf>> {
        let mut out = BTreeMap::new();
        for rel in std::fs::read_dir(&self.installed)
            .into_iter()
            .flatten()
            .flatten()
        {
            if !rel.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let mut mods: Vec<PathBuf> = std::fs::read_dir(rel.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "ko"))
                .collect();
            mods.sort();
            out.insert(rel.file_name().to_string_lossy().into_owned(), mods);
        }
        out
    }

    /// Installs the livepatch module at `path` for the release it was built for (`release`, when
    /// given, must be that one). Returns where it went.
    pub fn install(&self, path: &Path, release: Option<&str>) -> Result<PathBuf> {
        let info = read_module(path)?;
        if !info.livepatch {
            return Err(UserError::new(format!(
                "{}: not a livepatch module (no MODULE_INFO(livepatch, \"Y\"))",
                path.display()
            ))
            .into());
        }
        let built_for = info
            .vermagic
            .as_deref()
            .and_then(|v| v.split_whitespace().next())
            .ok_or_else(|| UserError::new(format!("{}: no vermagic", path.display())))?;
        if let Some(r) = release
            && r != built_for
        {
            return Err(UserError::new(format!(
                "{}: built for kernel {built_for}, not {r}; it would not load there",
                path.display()
            ))
            .into());
        }
        if built_for.is_empty() || built_for.contains('/') || built_for.starts_with('.') {
            return Err(UserError::new(format!(
                "{}: vermagic names no kernel release ({built_for:?})",
                path.display()
            ))
            .into());
        }
        let bytes = crate::files::read_input(path, "a kernel module (.ko)")?;
        let dir = self.installed.join(built_for);
        std::fs::create_dir_all(&dir)
            .map_err(|e| UserError::new(format!("{}: cannot create: {e}", dir.display())))?;
        let dest = dir.join(format!("{}.ko", kernel_name(&info.name)));
        crate::files::write_whole(&dest, &bytes)?;
        Ok(dest)
    }

    /// Removes installed module `name` for `release` (default: the running kernel's). Returns the
    /// file removed.
    pub fn uninstall(&self, name: &str, release: Option<&str>) -> Result<PathBuf> {
        let release = match release {
            Some(r) => r.to_string(),
            None => self.release()?,
        };
        let file = format!("{}.ko", kernel_name(name.trim_end_matches(".ko")));
        let path = self.installed.join(&release).join(&file);
        if !path.is_file() {
            let elsewhere: Vec<String> = self
                .installed_modules()
                .into_iter()
                .filter(|(_, mods)| {
                    mods.iter()
                        .any(|m| m.file_name().is_some_and(|f| f == file.as_str()))
                })
                .map(|(r, _)| r)
                .collect();
            let hint = if elsewhere.is_empty() {
                String::new()
            } else {
                format!(" (installed for {}; give --kernel)", elsewhere.join(", "))
            };
            return Err(UserError::new(format!(
                "{file} is not installed for kernel {release}{hint}"
            ))
            .into());
        }
        std::fs::remove_file(&path)
            .map_err(|e| UserError::new(format!("{}: cannot remove: {e}", path.display())))?;
        let _ = std::fs::remove_dir(self.installed.join(&release));
        Ok(path)
    }
}
