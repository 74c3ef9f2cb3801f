//! The small commands: `klpx arch list`, `klpx doctor`, and the default matrix in cross-dev.yaml.

use std::process::Command;

use serde::Deserialize;

fn klpx(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args(args)
        .output()
        .expect("running klpx")
}

#[test]
fn arch_list_reports_the_elf_and_kernel_facts() {
    let out = klpx(&["arch", "list", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // (name, kernel ARCH, e_machine from the ELF psABIs, byte order, Debian compiler package)
    let expected = [
        ("x86_64", "x86", 62, "little", "gcc"),
        ("arm64", "arm64", 183, "little", "gcc-aarch64-linux-gnu"),
        (
            "ppc64le",
            "powerpc",
            21,
            "little",
            "gcc-powerpc64le-linux-gnu",
        ),
        ("s390", "s390", 22, "big", "gcc-s390x-linux-gnu"),
    ];
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), expected.len());
    for (a, (name, karch, machine, endian, pkg)) in arr.iter().zip(expected) {
        assert_eq!(a["name"], name);
        assert_eq!(a["kernel_arch"], karch);
        assert_eq!(a["elf_machine"], machine);
        assert_eq!(a["endian"], endian);
        assert_eq!(a["compiler_package"], pkg);
    }
    let text = klpx(&["arch", "list"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("CROSS_COMPILE=s390x-linux-gnu-"));
}

#[test]
fn doctor_finds_installed_compilers_and_names_the_package_for_missing_ones() {
    let out = klpx(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(" ok ")).count(),
        4,
        "{text}"
    );

    let out = klpx(&["doctor", "--arch", "arm64", "--cross", "no-such-prefix-"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("no-such-prefix-gcc not found"), "{text}");

    let out = Command::new(env!("CARGO_BIN_EXE_klpx"))
        .args(["doctor", "--arch", "s390"])
        .env("CROSS_COMPILE", "s390x-missing-")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "CROSS_COMPILE for s390 must be honoured"
    );

    let out = klpx(&["doctor", "--arch", "mips"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown architecture 'mips'"));
}

#[derive(Deserialize)]
struct Matrix {
    arches: Vec<MatrixArch>,
}

#[derive(Deserialize)]
struct MatrixArch {
    arch: String,
    cross: String,
}

#[test]
fn default_matrix_lists_four_arches_with_installed_compilers() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/cross-dev.yaml")).unwrap();
    let m: Matrix = serde_norway::from_str(&text).unwrap();
    let names: Vec<&str> = m.arches.iter().map(|a| a.arch.as_str()).collect();
    assert_eq!(names, ["x86_64", "arm64", "ppc64le", "s390"]);
    for a in &m.arches {
        let out = klpx(&["doctor", "--arch", &a.arch, "--cross", &a.cross]);
        assert!(
            out.status.success(),
            "{}: {}",
            a.arch,
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn bad_options_end_in_one_line_and_exit_2() {
    for (args, needle) in [
        (
            &["kernel", "config", "--base", "/nonexistent/.config"][..],
            "--base /nonexistent/.config",
        ),
        (
            &["kernel", "build", "--arch", "sparc"][..],
            "unknown architecture 'sparc'",
        ),
        (
            &["build", "/nonexistent.patch", "-s", "/"][..],
            "not a kernel source tree",
        ),
        (
            &["build", "--arch", "mips", "x.patch"][..],
            "unknown architecture 'mips'",
        ),
        // clap's own usage errors are one line too.
        (&["diff"][..], "<ORIG> <PATCHED>"),
        (
            &["build", "--jobs", "x", "y.patch"][..],
            "invalid value 'x'",
        ),
        (&["frobnicate"][..], "unrecognized subcommand 'frobnicate'"),
    ] {
        let out = klpx(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

/// The bash completion script, sourced in bash, completes subcommands and options.
#[test]
fn bash_completion_completes_subcommands_and_options() {
    let complete = |words: &str, cword: usize| {
        let script = format!(
            "source <({bin} completions bash); COMP_WORDS=({words}); COMP_CWORD={cword}; \
             _klpx klpx \"${{COMP_WORDS[$COMP_CWORD]}}\" \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; \
             echo \"${{COMPREPLY[@]}}\"",
            bin = env!("CARGO_BIN_EXE_klpx")
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .output()
            .expect("bash");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(complete("klpx b", 1), "build");
    assert_eq!(
        complete("klpx build --skip-c", 2),
        "--skip-cleanup --skip-compiler-check"
    );
    for shell in ["zsh", "fish"] {
        let out = klpx(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stdout).contains("skip-compiler-check"));
    }
}

/// `klpx man` and `klpx man SUBCOMMAND` are pages man(1) renders, naming the options.
#[test]
fn manual_pages_render() {
    for (args, title, option) in [
        (&["man"][..], "klpx(1)", "completions"),
        (
            &["man", "build"][..],
            "klpx-build(1)",
            "--skip-compiler-check",
        ),
        (&["man", "verify"][..], "klpx-verify(1)", "--expect-after"),
    ] {
        let page = klpx(args);
        assert_eq!(page.status.code(), Some(0), "{args:?}");
        let path = std::env::temp_dir().join(format!("klpx-man-{}.1", std::process::id()));
        std::fs::write(&path, &page.stdout).unwrap();
        let shown = std::process::Command::new("man")
            .args(["-l", path.to_str().unwrap()])
            .env("MANWIDTH", "100")
            .output()
            .expect("man (scripts/test.sh installs man-db)");
        // Bold and underline come as overstrikes (`X\bX`) when not on a terminal.
        let mut text = String::new();
        for c in String::from_utf8_lossy(&shown.stdout).chars() {
            if c == '\u{8}' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        assert!(text.contains(title), "{args:?}: {text}");
        assert!(text.contains(option), "{args:?}: {text}");
        let _ = std::fs::remove_file(&path);
    }
    let out = klpx(&["man", "nope"]);
    assert_eq!(out.status.code(), Some(2));
}

/// contrib/klpx.service passes `systemd-analyze verify` with its ExecStart pointing at this klpx,
/// and the command it runs is one klpx has.
#[test]
fn boot_service_unit_verifies() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/klpx.service"))
            .expect("reading contrib/klpx.service");
    assert!(
        unit.contains("ExecStart=/usr/bin/klpx load --all"),
        "{unit}"
    );
    let help = klpx(&["load", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--all"));
    let dir = std::env::temp_dir().join(format!("klpx-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("klpx.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/klpx", env!("CARGO_BIN_EXE_klpx")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("running systemd-analyze (systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert!(
        !said.contains("klpx.service:"),
        "systemd-analyze verify: {said}"
    );
}
