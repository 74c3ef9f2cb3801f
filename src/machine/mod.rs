//! The machine that runs the kernel: the livepatches loaded in it (`/sys/kernel/livepatch`), the
//! modules installed for each kernel release (`/var/lib/klpx/<release>/`), and loading and
//! unloading them the way kpatch's utility does, with a clear word when the kernel says no. For
//! root on that machine (`klpx load`, `unload`, `list`, `install`, `uninstall`); nothing here
//! builds anything.

pub mod installed;
pub mod livepatches;
pub mod ops;

use std::path::PathBuf;

use crate::error::UserError;

/// Where the machine keeps what these commands read and write.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `/sys/kernel/livepatch`.
    pub livepatch: PathBuf,
    /// `/sys/module`.
    pub modules: PathBuf,
    /// `/proc`.
    pub proc: PathBuf,
    /// `/var/lib/klpx`: one directory per kernel release, holding its livepatch modules.
    pub installed: PathBuf,
}

impl Default for Machine {
    fn default() -> Machine {
        Machine {
            livepatch: PathBuf::from("/sys/kernel/livepatch"),
            modules: PathBuf::from("/sys/module"),
            proc: PathBuf::from("/proc"),
            installed: PathBuf::from(INSTALL_DIR),
        }
    }
}

/// Where `klpx install` puts modules, and the packages klpx makes install them.
pub const INSTALL_DIR: &str = "/var/lib/klpx";

impl Machine {
    /// The running kernel's release (`uname -r`).
    pub fn release(&self) -> Result<String, UserError> {
        let path = self.proc.join("sys/kernel/osrelease");
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|e| {
                UserError::new(format!(
                    "{}: cannot read the kernel release: {e}",
                    path.display()
                ))
            })
    }

    /// Whether the kernel has a module of this name loaded.
    pub fn module_loaded(&self, name: &str) -> bool {
        self.modules.join(name).is_dir()
    }

    /// The kernel's livepatch directory, or why there is none.
    pub fn livepatch_dir(&self) -> Result<&std::path::Path, UserError> {
        if self.livepatch.is_dir() {
            Ok(&self.livepatch)
        } else {
            Err(UserError::new(format!(
                "{}: no such directory; this kernel was built without CONFIG_LIVEPATCH (or sysfs is not mounted)",
                self.livepatch.display()
            )))
        }
    }
}

/// The name the kernel gives a module file's module, and its livepatch (`livepatch-foo` →
/// `livepatch_foo`): kbuild turns `-` into `_`.
pub fn kernel_name(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_names_use_underscores() {
        assert_eq!(super::kernel_name("livepatch-fix-1"), "livepatch_fix_1");
    }
}
