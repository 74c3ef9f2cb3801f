//! Module signing in tests: a throwaway key made with openssl, and checking a signed module with
//! the kernel's own tooling (`scripts/extract-module-sig.pl` takes it apart) and openssl (verifies
//! the PKCS#7 signature over the rest), independently of klpx.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use super::cli::text;

fn openssl(args: &[&str]) {
    let o = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl");
    assert!(o.status.success(), "openssl {args:?}: {}", text(&o.stderr));
}

/// A fresh self-signed code-signing key and certificate (PEM) in `dir`: (key, cert).
pub fn signing_key(dir: &Path) -> (PathBuf, PathBuf) {
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    openssl(&[
        "req",
        "-new",
        "-nodes",
        "-utf8",
        "-sha256",
        "-days",
        "2",
        "-batch",
        "-x509",
        "-subj",
        "/CN=klpx test signing key",
        "-addext",
        "extendedKeyUsage=codeSigning",
        "-outform",
        "PEM",
        "-out",
        cert.to_str().unwrap(),
        "-keyout",
        key.to_str().unwrap(),
    ]);
    (key, cert)
}

/// Asserts that `ko` carries the kernel's signature trailer and that its PKCS#7 signature verifies
/// over the module's contents with `cert`: the kernel's `scripts/extract-module-sig.pl` (from the
/// cached Debian source) splits the module into its unsigned contents (`-0`) and its signature
/// (`-s`), and `openssl cms` verifies one against the other; `scratch` holds the pieces.
pub fn assert_signed(ko: &Path, cert: &Path, scratch: &Path) {
    let data = std::fs::read(ko).unwrap();
    assert!(
        data.ends_with(b"~Module signature appended~\n"),
        "{}: no signature trailer",
        ko.display()
    );
    let tool = klpx::kernel::cache::debian_source()
        .unwrap()
        .join("scripts/extract-module-sig.pl");
    let extract = |part: &str| {
        let o = std::process::Command::new("perl")
            .arg(&tool)
            .arg(part)
            .arg(ko)
            .output()
            .expect("running perl");
        assert!(
            o.status.success(),
            "extract-module-sig.pl {part}: {}",
            text(&o.stderr)
        );
        o.stdout
    };
    let (sig, body) = (scratch.join("sig.der"), scratch.join("content.ko"));
    std::fs::write(&sig, extract("-s")).unwrap();
    std::fs::write(&body, extract("-0")).unwrap();
    assert!(std::fs::metadata(&sig).unwrap().len() > 0, "no signature");
    openssl(&[
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        sig.to_str().unwrap(),
        "-content",
        body.to_str().unwrap(),
        "-certfile",
        cert.to_str().unwrap(),
        "-nointern",
        "-noverify",
        "-out",
        "/dev/null",
    ]);
}
