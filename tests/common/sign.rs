//! Module signing in tests: a throwaway key made with openssl, and checking a signed module the
//! way the kernel reads it, with openssl (independently of klpx).

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
/// over the module's contents with `cert` (openssl cms); `scratch` holds the pieces.
pub fn assert_signed(ko: &Path, cert: &Path, scratch: &Path) {
    let data = std::fs::read(ko).unwrap();
    // include/linux/module_signature.h: contents, PKCS#7, struct module_signature (12 bytes, the
    // signature's length big-endian in its last 4), then the magic string.
    let magic = b"~Module signature appended~\n";
    assert!(
        data.ends_with(magic),
        "{}: no signature trailer",
        ko.display()
    );
    let info = data.len() - magic.len() - 12;
    let sig_len = u32::from_be_bytes(data[info + 8..info + 12].try_into().unwrap()) as usize;
    let content = &data[..info - sig_len];
    let (sig, body) = (scratch.join("sig.der"), scratch.join("content.ko"));
    std::fs::write(&sig, &data[info - sig_len..info]).unwrap();
    std::fs::write(&body, content).unwrap();
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
