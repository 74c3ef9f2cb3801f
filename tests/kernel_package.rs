//! `klpx kernel package`: the permanent fix beside the livepatch. The tiny x86_64 kernel rebuilt
//! with a boot case's patch and packaged by the kernel's own `bindeb-pkg` and `binrpm-pkg`; the
//! packages checked with `dpkg-deb` and `rpm -qp`; the source tree as it was; and the packaged
//! kernel booted in qemu showing the patch's behaviour before any livepatch is loaded.

mod common;

/// The tests here patch the one shared source tree, which one klpx at a time may do.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

use std::path::{Path, PathBuf};

use common::cli::{assert_exit, build_module, klpx, text, tool};
use klpx_arch::Arch;

fn sorted_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn patched_kernel_packages_boot_with_the_fix() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let base = common::kernel::built_tree(Arch::X86_64).unwrap();
    let release = std::fs::read_to_string(base.out.join("include/config/kernel.release"))
        .unwrap()
        .trim()
        .to_string();
    let case = common::cases::case("string-change");
    let patch: PathBuf = common::kernel::repo()
        .join("tests/boot")
        .join(&case.patch)
        .canonicalize()
        .unwrap();
    let patched_file = base.src.join("fs/proc/cmdline.c");
    let before = std::fs::read(&patched_file).unwrap();
    let dir = std::env::temp_dir().join(format!("klpx-kpkg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // Debian packages.
    let debs = dir.join("deb");
    let out = klpx(&[
        "kernel",
        "package",
        "--arch",
        "x86_64",
        "--format",
        "deb",
        "-o",
        debs.to_str().unwrap(),
        patch.to_str().unwrap(),
    ]);
    assert_exit(&out, 0, "klpx kernel package --format deb");
    assert_eq!(
        std::fs::read(&patched_file).unwrap(),
        before,
        "the source tree was left patched"
    );
    let files = sorted_files(&debs);
    let image = files
        .iter()
        .find(|f| f.starts_with(&format!("linux-image-{release}_")) && f.ends_with("_amd64.deb"))
        .unwrap_or_else(|| panic!("no linux-image-{release} package: {files:?}"));
    let image = debs.join(image);
    let image_s = image.to_str().unwrap();
    assert_eq!(
        tool("dpkg-deb", &["-f", image_s, "Package"]).trim(),
        format!("linux-image-{release}")
    );
    assert_eq!(
        tool("dpkg-deb", &["-f", image_s, "Architecture"]).trim(),
        "amd64"
    );
    let listing = tool("dpkg-deb", &["-c", image_s]);
    assert!(
        listing.contains(&format!("./boot/vmlinuz-{release}")),
        "{listing}"
    );
    let root = dir.join("root");
    tool("dpkg-deb", &["-x", image_s, root.to_str().unwrap()]);
    let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));

    // The packaged kernel boots, and /proc/cmdline shows the fix before any livepatch: the
    // livepatch loaded is another boot case's (new-function, /proc/version), built against the
    // unpatched tree, which the packaged kernel still is a target for.
    let other = common::cases::case("new-function");
    let other_patch = common::kernel::repo()
        .join("tests/boot")
        .join(&other.patch)
        .canonicalize()
        .unwrap();
    let module_dir = dir.join("module");
    let b = build_module(&base, &module_dir, "livepatch-other", &[], &[&other_patch]);
    assert_exit(&b, 0, "the other case's livepatch");
    let v = klpx(&[
        "verify",
        module_dir.join("livepatch-other.ko").to_str().unwrap(),
        "--kernel",
        vmlinuz.to_str().unwrap(),
        "--check",
        "cat /proc/cmdline",
        "--expect-before",
        case.after.as_deref().unwrap(),
    ]);
    assert_exit(&v, 0, "the packaged kernel booted with the fix built in");

    // RPMs, from the same packaging tree.
    let rpms = dir.join("rpm");
    let out = klpx(&[
        "kernel",
        "package",
        "--arch",
        "x86_64",
        "--format",
        "rpm",
        "-o",
        rpms.to_str().unwrap(),
        patch.to_str().unwrap(),
    ]);
    assert_exit(&out, 0, "klpx kernel package --format rpm");
    assert_eq!(std::fs::read(&patched_file).unwrap(), before);
    let files = sorted_files(&rpms);
    let kernel = files
        .iter()
        .find(|f| f.starts_with("kernel-6") && f.ends_with(".x86_64.rpm"))
        .unwrap_or_else(|| panic!("no kernel RPM: {files:?}"));
    let kernel = rpms.join(kernel);
    let k = kernel.to_str().unwrap();
    assert_eq!(
        tool("rpm", &["-qp", "--qf", "%{NAME} %{VERSION} %{ARCH}", k]),
        format!("kernel {} x86_64", release.split('-').next().unwrap())
    );
    let listing = tool("rpm", &["-qlp", k]);
    assert!(
        listing
            .lines()
            .any(|l| l == format!("/boot/vmlinuz-{release}")),
        "{listing}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad input stops before any build: a missing patch, and a patch that does not apply, for which
/// the tree named with -O is not even configured.
#[test]
fn kernel_package_refuses_bad_patches_up_front() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("klpx-kpkg-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.patch");
    let out = klpx(&[
        "kernel",
        "package",
        "-o",
        dir.join("out").to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_exit(&out, 2, "a missing patch");
    assert!(text(&out.stderr).contains("missing.patch"));
    assert!(!dir.join("out").exists());
    let base = common::kernel::built_tree(Arch::X86_64).unwrap();
    let other = common::patches::patch_for_another_version(&base.src, &dir);
    let out = klpx(&[
        "kernel",
        "package",
        "-o",
        dir.join("out").to_str().unwrap(),
        other.to_str().unwrap(),
    ]);
    assert_exit(&out, 2, "a patch that does not apply");
    assert!(
        text(&out.stderr).contains("fs/proc/cmdline.c"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.join("out").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `klpx release --with-kernel`: the livepatch and, beside it, the patched kernel's own packages,
/// listed in the manifest and in SHA256SUMS.
#[test]
fn release_with_kernel_packages_the_permanent_fix() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let base = common::kernel::built_tree(Arch::X86_64).unwrap();
    let release = std::fs::read_to_string(base.out.join("include/config/kernel.release"))
        .unwrap()
        .trim()
        .to_string();
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let dir = std::env::temp_dir().join(format!("klpx-kpkg-rel-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("release");
    let r = klpx(&[
        "release",
        patch.to_str().unwrap(),
        "--version",
        "3",
        "--arches",
        "x86_64",
        "--with-kernel",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_exit(&r, 0, "klpx release --with-kernel");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let kernel: Vec<&str> = manifest["arches"][0]["kernel_packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let prefix = format!("x86_64/{release}/kernel/");
    assert!(kernel.iter().all(|p| p.starts_with(&prefix)), "{kernel:?}");
    let image = kernel
        .iter()
        .find(|p| p.contains(&format!("/linux-image-{release}_")))
        .unwrap_or_else(|| panic!("no linux-image package: {kernel:?}"));
    let image = out.join(image);
    assert_eq!(
        tool("dpkg-deb", &["-f", image.to_str().unwrap(), "Package"]).trim(),
        format!("linux-image-{release}")
    );
    let rpm = kernel
        .iter()
        .find(|p| p.contains("/kernel-6") && p.ends_with(".x86_64.rpm"))
        .unwrap_or_else(|| panic!("no kernel RPM: {kernel:?}"));
    assert!(
        tool("rpm", &["-qlp", out.join(rpm).to_str().unwrap()])
            .lines()
            .any(|l| l == format!("/boot/vmlinuz-{release}"))
    );
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    for p in &kernel {
        assert!(sums.contains(&format!("  {p}\n")), "{p} not in SHA256SUMS");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
