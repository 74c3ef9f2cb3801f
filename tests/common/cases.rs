//! The boot cases of tests/boot/cases.yaml: real patches with the behaviour expected before and
//! after the livepatch, shared by the tiny-tree and the distribution-kernel boot tests.

#![allow(dead_code)]

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Case {
    pub name: String,
    pub patch: String,
    pub outcome: String,
    #[serde(default)]
    pub changed: Vec<String>,
    /// Where an architecture names the changed functions differently (syscall wrappers).
    #[serde(default)]
    pub changed_by_arch: std::collections::HashMap<String, Vec<String>>,
    #[serde(default)]
    pub new: Vec<String>,
    #[serde(default)]
    pub check: Option<String>,
    #[serde(default)]
    pub before: Option<String>,
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub load: Vec<String>,
    /// Files of the tree put in the guest (`/klpx/files/<name>`) without loading them.
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// The changed functions on Debian's amd64 kernel where its config makes more of them (the
    /// 32-bit syscall entries of IA32_EMULATION, arch/x86/include/asm/syscall_wrapper.h).
    #[serde(default)]
    pub changed_on_debian: Option<Vec<String>>,
    /// Only for distribution kernels: the tiny trees do not build what it patches.
    #[serde(default)]
    pub distro_only: bool,
    /// Modules of the distribution's image package put in the guest (`/klpx/files/<name>.ko`,
    /// decompressed), as paths under `lib/modules/<release>/`.
    #[serde(default)]
    pub shipped_files: Vec<String>,
    /// The tiny trees' architectures the case runs on (default: all four).
    #[serde(default)]
    pub arches: Option<Vec<String>>,
}

impl Case {
    /// Whether the case runs on the tiny tree of `arch` (never for distribution-only cases).
    pub fn runs_on(&self, arch: &str) -> bool {
        !self.distro_only
            && self
                .arches
                .as_ref()
                .is_none_or(|a| a.iter().any(|x| x == arch))
    }
}

impl Case {
    /// `klpx verify`'s `--check`, `--expect-before` and `--expect-after` for the case.
    pub fn verify_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, value) in [
            ("--check", &self.check),
            ("--expect-before", &self.before),
            ("--expect-after", &self.after),
        ] {
            if let Some(v) = value {
                args.extend([flag.to_string(), v.clone()]);
            }
        }
        args
    }
}

pub fn cases() -> Vec<Case> {
    let path = super::kernel::repo().join("tests/boot/cases.yaml");
    serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

pub fn case(name: &str) -> Case {
    cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name} in tests/boot/cases.yaml"))
}
