//! `ragw pki`: the component CA and certificates it writes, checked with OpenSSL as an
//! independent reader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

fn ragw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ragw"))
        .args(args)
        .output()
        .expect("run ragw")
}

fn ragw_ok(args: &[&str]) -> String {
    let out = ragw(args);
    assert!(
        out.status.success(),
        "ragw {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn openssl_available() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("RAGW_REQUIRE_PEERS").as_deref() != Ok("1"),
            "openssl is required (RAGW_REQUIRE_PEERS=1)"
        );
        eprintln!("SKIPPED: openssl not found; the pki_cmd test needs it");
    }
    found
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn san(cert: &Path) -> String {
    openssl(&[
        "x509",
        "-in",
        cert.to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName",
    ])
}

fn serial(cert: &Path) -> String {
    openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-serial"])
}

/// The public key of a certificate or of a private key, PEM.
fn public_key_of_cert(cert: &Path) -> String {
    openssl(&["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"])
}

fn public_key_of_key(key: &Path) -> String {
    openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"])
}

#[test]
fn pki_init_issue_renew_and_k8s_secret() {
    if !openssl_available() {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("pki");
    let d = dir.to_str().unwrap();

    ragw_ok(&["pki", "init", "--dir", d]);
    let ca_pem = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    assert_eq!(mode(&ca_key), 0o600);
    let ca_before = std::fs::read(&ca_pem).unwrap();
    let again = ragw(&["pki", "init", "--dir", d]);
    assert!(!again.status.success(), "init over an existing CA");
    assert_eq!(std::fs::read(&ca_pem).unwrap(), ca_before);

    ragw_ok(&[
        "pki",
        "issue",
        "--dir",
        d,
        "--role",
        "gateway",
        "--name",
        "est-gw",
        "--dns",
        "est.ragw.example",
        "--days",
        "30",
    ]);
    let cert = dir.join("est-gw.pem");
    let key = dir.join("est-gw.key");
    assert_eq!(mode(&key), 0o600);
    let issued_san = san(&cert);
    assert!(
        issued_san.contains("URI:urn:ragw:role:gateway"),
        "{issued_san}"
    );
    assert!(issued_san.contains("DNS:est.ragw.example"), "{issued_san}");
    let verify = openssl(&[
        "verify",
        "-CAfile",
        ca_pem.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);
    assert!(verify.trim_end().ends_with(": OK"), "{verify}");
    assert_eq!(public_key_of_cert(&cert), public_key_of_key(&key));
    let reissue = ragw(&[
        "pki", "issue", "--dir", d, "--role", "gateway", "--name", "est-gw",
    ]);
    assert!(!reissue.status.success(), "issue over an existing pair");

    let serial_before = serial(&cert);
    let key_before = public_key_of_key(&key);
    ragw_ok(&["pki", "renew", "--dir", d, "--name", "est-gw"]);
    assert_ne!(serial(&cert), serial_before);
    assert_eq!(san(&cert), issued_san);
    assert_eq!(mode(&key), 0o600);
    assert_ne!(public_key_of_key(&key), key_before, "renew makes a new key");
    assert_eq!(public_key_of_cert(&cert), public_key_of_key(&key));
    openssl(&[
        "verify",
        "-CAfile",
        ca_pem.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]);

    let manifest = ragw_ok(&[
        "pki",
        "k8s-secret",
        "--dir",
        d,
        "--name",
        "est-gw",
        "--namespace",
        "ragw",
    ]);
    assert!(manifest.contains("kind: Secret"), "{manifest}");
    assert!(manifest.contains("type: kubernetes.io/tls"), "{manifest}");
    assert!(manifest.contains("  name: est-gw\n"), "{manifest}");
    assert!(manifest.contains("  namespace: ragw\n"), "{manifest}");
    let data: BTreeMap<&str, Vec<u8>> = manifest
        .lines()
        .skip_while(|l| *l != "data:")
        .skip(1)
        .map(|l| {
            let (k, v) = l.trim_start().split_once(": ").unwrap();
            (k, BASE64.decode(v).unwrap())
        })
        .collect();
    assert_eq!(
        data.keys().copied().collect::<Vec<_>>(),
        ["ca.crt", "tls.crt", "tls.key"]
    );
    assert_eq!(data["tls.crt"], std::fs::read(&cert).unwrap());
    assert_eq!(data["tls.key"], std::fs::read(&key).unwrap());
    assert_eq!(data["ca.crt"], ca_before);
}

#[test]
fn unknown_role_lists_the_valid_ones() {
    let temp = tempfile::tempdir().unwrap();
    let d = temp.path().to_str().unwrap();
    ragw_ok(&["pki", "init", "--dir", d]);
    let out = ragw(&["pki", "issue", "--dir", d, "--role", "root", "--name", "x"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown role \"root\""), "{stderr}");
    for role in [
        "gateway",
        "eap-server",
        "worker",
        "admin",
        "auditor",
        "registrar",
        "ca",
    ] {
        assert!(stderr.contains(role), "{role} missing from: {stderr}");
    }
    assert!(!temp.path().join("x.pem").exists());
}
