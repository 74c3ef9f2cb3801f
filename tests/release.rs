//! `klpx release`: a boot case's patch released for the four architectures of klpx's default matrix
//! (the tiny trees), and for Debian's own amd64 kernel, signed. Every figure of the manifest is
//! checked against another tool: `sha256sum`, kmod's `modinfo`, binutils' `readelf -n`,
//! `dpkg-deb`, `dpkg --root`, `rpm -qp`, openssl, and the kernel trees' own `kernel.release`.

mod common;

/// The tests here patch the one shared source tree, which one klpx at a time may do.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::cli::{assert_exit, klpx, text, tool};
use klpx_arch::Arch;
use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("klpx-release-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The GNU build id `readelf -n` prints for an ELF file.
fn readelf_build_id(elf: &Path) -> String {
    tool("readelf", &["-n", elf.to_str().unwrap()])
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .unwrap_or_else(|| panic!("{}: readelf shows no build id", elf.display()))
}

/// Checks what every packaged architecture of a release must hold, against other tools; returns
/// the manifest entry. `debian_arch`/`rpm_arch` are written out here, not taken from klpx.
fn check_packaged(
    release_dir: &Path,
    manifest: &Value,
    arch: &str,
    debian_arch: &str,
    rpm_arch: &str,
    name: &str,
    version: &str,
) -> Value {
    let entry = manifest["arches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["arch"] == arch)
        .unwrap_or_else(|| panic!("no {arch} in the manifest"))
        .clone();
    let release = entry["kernel_release"].as_str().unwrap();
    let ko_rel = format!("{arch}/{release}/{name}.ko");
    assert_eq!(entry["module"], ko_rel.as_str());
    let ko = release_dir.join(&ko_rel);
    let ko_s = ko.to_str().unwrap();
    // The checksum, by coreutils.
    let sum = tool("sha256sum", &[ko_s]);
    assert_eq!(entry["sha256"], sum.split_whitespace().next().unwrap());
    // The vermagic, by kmod; it starts with the kernel release.
    let vermagic = tool("modinfo", &["-F", "vermagic", ko_s]);
    assert_eq!(entry["vermagic"].as_str().unwrap().trim(), vermagic.trim());
    assert_eq!(vermagic.split_whitespace().next(), Some(release));

    // The Debian package: control fields and contents, by dpkg-deb.
    let pkg = format!("{name}-{release}").to_ascii_lowercase();
    let deb_rel = format!("{arch}/{release}/{pkg}_{version}_{debian_arch}.deb");
    let rpm_rel = format!("{arch}/{release}/{pkg}-{version}-1.{rpm_arch}.rpm");
    let packages: Vec<&str> = entry["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(packages, [deb_rel.as_str(), rpm_rel.as_str()]);
    let deb = release_dir.join(&deb_rel);
    let deb_s = deb.to_str().unwrap();
    for (field, want) in [
        ("Package", pkg.as_str()),
        ("Version", version),
        ("Architecture", debian_arch),
    ] {
        assert_eq!(
            tool("dpkg-deb", &["-f", deb_s, field]).trim(),
            want,
            "{field}"
        );
    }
    // Where `klpx load --all` looks: /var/lib/klpx/<release>/ (tests/operator.rs).
    let installed = format!("var/lib/klpx/{release}/{name}.ko");
    let listing = tool("dpkg-deb", &["-c", deb_s]);
    assert!(listing.contains(&format!("./{installed}")), "{listing}");
    let unpacked = release_dir.parent().unwrap().join(format!("x-{arch}"));
    tool("dpkg-deb", &["-x", deb_s, unpacked.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(unpacked.join(&installed)).unwrap(),
        std::fs::read(&ko).unwrap(),
        "the Debian package installs another file than the release's module"
    );

    // The RPM, by rpm.
    let rpm = release_dir.join(&rpm_rel);
    let rpm_s = rpm.to_str().unwrap();
    assert_eq!(
        tool("rpm", &["-qp", "--qf", "%{NAME} %{VERSION} %{ARCH}", rpm_s]),
        format!("{pkg} {version} {rpm_arch}")
    );
    assert_eq!(
        tool("rpm", &["-qlp", rpm_s]).trim(),
        format!("/{installed}")
    );
    entry
}

/// The boot case `string-change` (examples/proc-cmdline.patch) released over klpx's default
/// matrix: a module and two packages per architecture, the manifest's figures matching other
/// tools', SHA256SUMS passing `sha256sum -c`, the amd64 package installed with `dpkg --root`.
#[test]
fn four_architecture_release() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let case = common::cases::case("string-change");
    let patch = common::kernel::repo()
        .join("tests/boot")
        .join(&case.patch)
        .canonicalize()
        .unwrap();
    let arches = [
        (Arch::X86_64, "amd64", "x86_64"),
        (Arch::Arm64, "arm64", "aarch64"),
        (Arch::Ppc64le, "ppc64el", "ppc64le"),
        (Arch::S390x, "s390x", "s390x"),
    ];
    // The default matrix's trees (trees/<arch> in the cache), built once.
    let trees: Vec<_> = arches
        .iter()
        .map(|(a, _, _)| common::kernel::built_tree(*a).unwrap())
        .collect();
    let dir = scratch("matrix");
    let out = dir.join("release");
    let name = "livepatch-release";
    let version = "1.0~rc1";
    // rpm expands `%(...)` in a spec: the maintainer's text must come out as written.
    let maintainer = "Ops 100% %(touch /tmp/klpx-spec-ran) <ops@example.org>";
    let r = klpx(&[
        "release",
        patch.to_str().unwrap(),
        "-n",
        name,
        "--version",
        version,
        "--maintainer",
        maintainer,
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_exit(&r, 0, "klpx release");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["name"], name);
    assert_eq!(manifest["version"], version);
    assert_eq!(manifest["arches"].as_array().unwrap().len(), 4);
    for ((arch, deb_arch, rpm_arch), tree) in arches.iter().zip(&trees) {
        let e = check_packaged(
            &out,
            &manifest,
            arch.name(),
            deb_arch,
            rpm_arch,
            name,
            version,
        );
        let release =
            std::fs::read_to_string(tree.out.join("include/config/kernel.release")).unwrap();
        assert_eq!(e["kernel_release"], release.trim(), "{arch}");
        assert_eq!(
            e["build_id"].as_str().unwrap(),
            readelf_build_id(&tree.out.join("vmlinux")),
            "{arch}"
        );
        // Nothing loads a livepatch on arm64 6.12 (no CONFIG_LIVEPATCH there).
        let status = if *arch == Arch::Arm64 {
            "module (cannot load)"
        } else {
            "module"
        };
        assert_eq!(e["status"], status);
        let functions: BTreeSet<String> = e["functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                assert_eq!(f["object"], "vmlinux");
                assert_eq!(f["sympos"], 0, "cmdline_proc_show is a unique name");
                f["function"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(functions, case.changed.iter().cloned().collect(), "{arch}");
        assert_eq!(e["signed"], false);
        assert!(e["error"].is_null());
        let rpm = out.join(e["packages"][1].as_str().unwrap());
        assert_eq!(
            tool(
                "rpm",
                &["-qp", "--qf", "%{PACKAGER}", rpm.to_str().unwrap()]
            ),
            maintainer
        );
        let deb = out.join(e["packages"][0].as_str().unwrap());
        assert_eq!(
            tool("dpkg-deb", &["-f", deb.to_str().unwrap(), "Maintainer"]).trim(),
            maintainer
        );
    }
    assert!(
        !Path::new("/tmp/klpx-spec-ran").exists(),
        "rpm ran the maintainer's %(...)"
    );
    assert_eq!(manifest["differences"].as_array().unwrap().len(), 1);
    assert_eq!(manifest["differences"][0]["kind"], "status");
    // Every file is listed and intact.
    let check = Command::new("sha256sum")
        .args(["-c", "--strict", "SHA256SUMS"])
        .current_dir(&out)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stdout));
    // Per architecture a module and two packages; klpx's two packages; manifest and report.
    assert_eq!(text(&check.stdout).lines().count(), 4 * 3 + 2 + 2);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for (arch, _, _) in &arches {
        assert!(report.contains(&format!("| {} |", arch.name())), "{report}");
    }
    assert!(
        !out.join(".klpx-build").exists(),
        "scratch space left behind"
    );

    // The amd64 package installs into a scratch root as dpkg installs it on a machine.
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let x86 = &manifest["arches"][0];
    let deb = out.join(x86["packages"][0].as_str().unwrap());
    let root_arg = format!("--root={}", root.display());
    tool("dpkg", &[&root_arg, "-i", deb.to_str().unwrap()]);
    let release = x86["kernel_release"].as_str().unwrap();
    let pkg = format!("{name}-{release}");
    let status = tool("dpkg", &[&root_arg, "-s", &pkg]);
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(
        root.join(format!("var/lib/klpx/{release}/{name}.ko"))
            .is_file()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A release for Debian's own amd64 kernel, signed with a key made here: the module's signature
/// verifies with openssl, the package depends on that kernel's image package (which Debian's
/// index knows), the build id is the one of Debian's vmlinux, and `--verify` boots Debian's own
/// vmlinuz with the signed module.
#[test]
fn signed_release_for_debian() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch("debian");
    let (key, cert) = common::sign::signing_key(&dir);
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let out = dir.join("release");
    let name = "livepatch-signed";
    let r = klpx(&[
        "release",
        patch.to_str().unwrap(),
        "-n",
        name,
        "--version",
        "2",
        "--distro",
        "debian",
        "--arches",
        "x86_64",
        "--sign-key",
        key.to_str().unwrap(),
        "--sign-cert",
        cert.to_str().unwrap(),
        "--verify",
        "--check",
        "cat /proc/cmdline",
        "--expect-after",
        "klpx console=",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_exit(&r, 0, "klpx release --distro debian --verify");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["distro"], "debian");
    let e = check_packaged(&out, &manifest, "x86_64", "amd64", "x86_64", name, "2");
    let release = e["kernel_release"].as_str().unwrap();
    assert!(release.ends_with("-amd64"), "{release}");
    assert_eq!(e["signed"], true);
    assert_eq!(e["verify"]["outcome"], "pass", "{}", e["verify"]);
    let after = e["verify"]["after"][0].as_str().unwrap();
    assert!(after.contains("klpx console="), "{after}");
    let ko = out.join(e["module"].as_str().unwrap());
    common::sign::assert_signed(&ko, &cert, &dir);
    // Depends on the exact kernel, signed or unsigned image, both known to apt.
    let deb = out.join(e["packages"][0].as_str().unwrap());
    let depends = tool("dpkg-deb", &["-f", deb.to_str().unwrap(), "Depends"]);
    assert_eq!(
        depends.trim(),
        format!("linux-image-{release} | linux-image-{release}-unsigned")
    );
    let policy = tool(
        "apt-cache",
        &["policy", &format!("linux-image-{release}-unsigned")],
    );
    assert!(policy.contains("Candidate:"), "{policy}");
    let vmlinux = klpx::kernel::cache::root()
        .join("distro/debian")
        .join(release)
        .join("dbg/vmlinux");
    assert_eq!(e["build_id"].as_str().unwrap(), readelf_build_id(&vmlinux));
    let _ = std::fs::remove_dir_all(&dir);
}

/// One architecture failing (a compiler launcher that fails, as a broken distcc would) does not
/// stop the others: x86_64 is released, s390 is marked failed with the compiler's failure, and the
/// exit status says so.
#[test]
fn one_architecture_failing_still_releases_the_others() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    common::kernel::built_tree(Arch::X86_64).unwrap();
    common::kernel::built_tree(Arch::S390x).unwrap();
    let dir = scratch("partial");
    let matrix = dir.join("matrix.yaml");
    std::fs::write(
        &matrix,
        "source: debian:linux-source-6.12\noutput: trees\njobs: 2\narches:\n  - arch: x86_64\n    \
         cross: \"\"\n  - arch: s390\n    cross: s390x-linux-gnu-\n    launcher: \"false\"\n",
    )
    .unwrap();
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let out = dir.join("release");
    let r = klpx(&[
        "release",
        patch.to_str().unwrap(),
        "-n",
        "livepatch-partial",
        "--version",
        "1",
        "-f",
        matrix.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    // A compiler that fails is the user's toolchain to fix, as in `klpx matrix`: exit 2.
    assert_exit(&r, 2, "one architecture failing");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    check_packaged(
        &out,
        &manifest,
        "x86_64",
        "amd64",
        "x86_64",
        "livepatch-partial",
        "1",
    );
    let s390 = &manifest["arches"][1];
    assert_eq!(s390["arch"], "s390");
    assert_eq!(s390["status"], "failed");
    assert!(
        s390["error"]
            .as_str()
            .unwrap()
            .contains("compiling fs/proc/cmdline.o failed"),
        "{s390}"
    );
    assert!(s390["module"].is_null() && s390["packages"].as_array().unwrap().is_empty());
    assert!(!out.join("s390").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad input is refused before any build, with nothing written.
#[test]
fn bad_release_input_is_refused_up_front() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = scratch("bad");
    let patch = common::kernel::repo().join("examples/proc-cmdline.patch");
    let p = patch.to_str().unwrap();
    let out = dir.join("out");
    let o = out.to_str().unwrap();
    let full = dir.join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("keep.txt"), "the user's").unwrap();
    let missing = dir.join("missing.pem");
    let one_arch = dir.join("x86.yaml");
    std::fs::write(
        &one_arch,
        "source: debian:linux-source-6.12\noutput: trees\narches:\n  - arch: x86_64\n",
    )
    .unwrap();
    for (args, says) in [
        (vec!["--version", "1-2", "-o", o], "--version 1-2"),
        (vec!["--version", "v1", "-o", o], "--version v1"),
        (
            vec!["--version", "1", "-o", full.to_str().unwrap()],
            "not empty",
        ),
        (
            vec!["--version", "1", "-o", o, "--arches", "x86_64,riscv"],
            "riscv",
        ),
        (
            vec![
                "--version",
                "1",
                "-o",
                o,
                "-f",
                one_arch.to_str().unwrap(),
                "--arches",
                "s390",
            ],
            "has no such architecture",
        ),
        (
            vec![
                "--version",
                "1",
                "-o",
                o,
                "--sign-key",
                missing.to_str().unwrap(),
                "--sign-cert",
                missing.to_str().unwrap(),
            ],
            "missing.pem",
        ),
    ] {
        let mut a = vec!["release", p];
        a.extend(args.iter().copied());
        let r = klpx(&a);
        assert_exit(&r, 2, &format!("{a:?}"));
        assert!(text(&r.stderr).contains(says), "{a:?}: {}", text(&r.stderr));
        assert!(!out.exists(), "{a:?} created the release directory");
    }
    assert_eq!(
        std::fs::read_to_string(full.join("keep.txt")).unwrap(),
        "the user's"
    );
    // A patch written for another version of the file: refused before any build, and the
    // release directory is never made.
    let src = klpx::kernel::cache::debian_source().unwrap();
    let other = common::patches::patch_for_another_version(&src, &dir);
    let r = klpx(&[
        "release",
        other.to_str().unwrap(),
        "--version",
        "1",
        "-o",
        o,
    ]);
    assert_exit(&r, 2, "a patch that does not apply");
    assert!(
        text(&r.stderr).contains("fs/proc/cmdline.c"),
        "{}",
        text(&r.stderr)
    );
    assert!(
        !out.exists(),
        "the release directory was made for a patch that does not apply"
    );
    // KLPX_ARCHES is --arches, and named when wrong.
    let r = Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args(["release", p, "--version", "1", "-o", o, "-f"])
        .arg(&one_arch)
        .env("KLPX_ARCHES", "s390")
        .output()
        .unwrap();
    assert_exit(&r, 2, "KLPX_ARCHES=s390 with a matrix of x86_64 only");
    assert!(
        text(&r.stderr).contains("KLPX_ARCHES"),
        "{}",
        text(&r.stderr)
    );
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
