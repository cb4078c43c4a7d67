//! hostap's EAP-TEAP peer (`eapol_test`, a RADIUS client and EAP peer in one) against
//! `ragw dev`'s TEAP gateway: Basic-Password-Auth with the dev bootstrap password ends in
//! EAP-Success with the MPPE keys equal to the peer's MSK (hostap declines the offered
//! certificate provisioning: it has no PKCS#10 support), audited as `gateway.access_granted`;
//! a wrong password ends in EAP-Failure, audited as `gateway.refused`. A device certificate
//! (an IDevID under a label's trust anchors, configured in a `[teap]` section given to
//! `ragw dev --config`) authenticates in phase 1 without a password. So does the certificate
//! ragw itself issued to a device (provisioned first with ragw's own TEAP peer), with the MPPE
//! keys equal to hostap's MSK.
//! A label with `password_method = "eap-gtc"` takes the same kind of password by inner EAP-GTC.
//!
//! eapol_test with EAP-TEAP is built from Debian's `wpa` sources by `.ci/build-hostap-peers`
//! (Debian's binary lacks TEAP); it is found through RAGW_EAPOL_TEST or the peers cache.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod peers;
mod teap_support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Dev;

fn eapol_test() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RAGW_EAPOL_TEST") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "RAGW_EAPOL_TEST={} is not a file",
            path.display()
        );
        return Some(path);
    }
    let cache = std::env::var_os("RAGW_PEERS_DIR")
        .map_or_else(|| PathBuf::from("/var/tmp/ragw-peers"), PathBuf::from);
    let mut builds: Vec<PathBuf> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("hostap-"))
        .map(|e| e.path().join("eapol_test"))
        .filter(|p| p.is_file())
        .collect();
    builds.sort();
    if let Some(found) = builds.pop() {
        return Some(found);
    }
    if peers::peers_required() {
        panic!(
            "RAGW_REQUIRE_PEERS=1 but hostap's eapol_test with EAP-TEAP is not built (.ci/build-hostap-peers)"
        );
    }
    let bar = "!".repeat(78);
    eprintln!(
        "\n{bar}\n!!! SKIPPED: hostap's eapol_test with EAP-TEAP is not built (.ci/build-hostap-peers).\n\
         !!! This interoperability test did NOT run. Set RAGW_REQUIRE_PEERS=1 to fail instead.\n{bar}\n"
    );
    None
}

fn config(dir: &Path, identity: &str, password: &str, ca: &Path) -> PathBuf {
    config_with(dir, identity, ca, &[("password", password.to_string())])
}

fn config_with(dir: &Path, identity: &str, ca: &Path, auth: &[(&str, String)]) -> PathBuf {
    let mut text = String::from("network={\n\tkey_mgmt=IEEE8021X\n\teap=TEAP\n\teapol_flags=0\n");
    let mut lines = vec![
        ("identity", identity.to_string()),
        ("ca_cert", ca.display().to_string()),
        // hostap's TEAP peer wants a PAC file name; the file need not exist.
        ("pac_file", dir.join("eapol_test.pac").display().to_string()),
    ];
    lines.extend(auth.iter().cloned());
    for (k, v) in lines {
        writeln!(text, "\t{k}=\"{v}\"").unwrap();
    }
    text.push_str("}\n");
    let path = dir.join(format!("{}.conf", identity.replace('@', "_")));
    std::fs::write(&path, text).unwrap();
    path
}

/// (eapol_test succeeded, its output).
fn run(eapol_test: &Path, config: &Path, server: SocketAddr, secret: &str) -> (bool, String) {
    let out = Command::new(eapol_test)
        .arg("-c")
        .arg(config)
        .arg(format!("-a{}", server.ip()))
        .arg(format!("-p{}", server.port()))
        .arg(format!("-s{secret}"))
        .arg("-r0")
        .arg("-t30")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let ok = out.status.success() && stdout.lines().any(|l| l == "SUCCESS");
    (ok, stdout)
}

fn hexdump(log: &str, label: &str) -> Option<Vec<u8>> {
    let prefix = format!("{label} - hexdump(len=");
    let line = log.lines().find_map(|l| l.strip_prefix(prefix.as_str()))?;
    let (_, octets) = line.split_once("): ")?;
    octets
        .split(' ')
        .map(|o| u8::from_str_radix(o, 16))
        .collect::<Result<_, _>>()
        .ok()
}

fn wait_for_audit(db: &Path, action: &str, needle: &str) -> (String, String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(e) = common::audit_events(db, action)
            .into_iter()
            .find(|e| e.2.contains(needle))
        {
            return e;
        }
        assert!(Instant::now() < deadline, "no {action} event with {needle}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn hostap_peer_authenticates_with_the_bootstrap_password() {
    let Some(eapol_test) = eapol_test() else {
        return;
    };
    let dev = Dev::start(&[]);
    let server: SocketAddr = dev.endpoint("radius").parse().unwrap();
    let secret = std::fs::read_to_string(dev.dir.join("radius-secret")).unwrap();
    let password = std::fs::read_to_string(dev.dir.join("dev-password")).unwrap();
    let ca = dev.dir.join("ca").join("root.pem");
    let work = tempfile::tempdir().unwrap();

    // The outer identity has no realm: the default label (the first profile, iot) applies;
    // hostap sends the same identity as the Basic-Password-Auth user name.
    let good = config(work.path(), "sn-teap-1", password.trim(), &ca);
    let (ok, out) = run(&eapol_test, &good, server, secret.trim());
    assert!(ok, "eapol_test failed:\n{out}");
    let peer_msk = hexdump(&out, "EAP-TEAP: Derived key (MSK)").expect("peer MSK in the log");
    let mut radius_msk = hexdump(&out, "MS-MPPE-Recv-Key (crypt)").expect("Recv-Key");
    radius_msk.extend(hexdump(&out, "MS-MPPE-Send-Key (sign)").expect("Send-Key"));
    assert_eq!(peer_msk.len(), 64);
    assert_eq!(
        radius_msk, peer_msk,
        "the Access-Accept carries the peer's MSK"
    );

    let db = dev.dir.join("ragw.db");
    let (_, _, details) = wait_for_audit(&db, "gateway.access_granted", "sn-teap-1");
    assert!(details.contains("password"), "{details}");
    assert!(details.contains("\"label\":\"iot\""), "{details}");

    let bad = config(work.path(), "sn-teap-2", "not-the-password", &ca);
    let (ok, out) = run(&eapol_test, &bad, server, secret.trim());
    assert!(!ok, "a wrong password was accepted:\n{out}");
    let (_, _, details) = wait_for_audit(&db, "gateway.refused", "wrong user name or password");
    assert!(details.contains("sn-teap-2"), "{details}");
}

#[test]
fn hostap_peer_authenticates_with_an_idevid_under_the_label_anchors() {
    let Some(eapol_test) = eapol_test() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    // The device maker's CA and one device certificate (serialNumber in the subject).
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Maker IDevID CA");
    let maker_ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let device_key = rcgen::KeyPair::generate().unwrap();
    let mut device = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    device
        .distinguished_name
        .push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]), "IDEV-0001");
    device.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let device_cert = device.signed_by(&device_key, &issuer).unwrap();
    let anchors = work.path().join("maker-ca.pem");
    std::fs::write(&anchors, maker_ca.pem()).unwrap();
    let cert = work.path().join("device.pem");
    std::fs::write(&cert, device_cert.pem()).unwrap();
    let key = work.path().join("device.key");
    std::fs::write(&key, device_key.serialize_pem()).unwrap();
    let dev_config = work.path().join("dev.toml");
    std::fs::write(
        &dev_config,
        format!(
            "[teap.labels.factory]\nprofile = \"iot\"\n\n[teap.labels.factory.client_cert]\n\
             trust_anchors = \"{}\"\n\n[teap.labels.factory.provisioning]\ncertificate = \"never\"\n",
            anchors.display()
        ),
    )
    .unwrap();

    let dev = Dev::start(&["--config", dev_config.to_str().unwrap()]);
    let server: SocketAddr = dev.endpoint("radius").parse().unwrap();
    let secret = std::fs::read_to_string(dev.dir.join("radius-secret")).unwrap();
    let root = dev.dir.join("ca").join("root.pem");
    let peer = config_with(
        work.path(),
        "anonymous@factory",
        &root,
        &[
            ("client_cert", cert.display().to_string()),
            ("private_key", key.display().to_string()),
        ],
    );
    let (ok, out) = run(&eapol_test, &peer, server, secret.trim());
    assert!(ok, "eapol_test failed:\n{out}");
    let (_, _, details) = wait_for_audit(
        &dev.dir.join("ragw.db"),
        "gateway.access_granted",
        "IDEV-0001",
    );
    assert!(details.contains("device certificate"), "{details}");
    assert!(details.contains("\"label\":\"factory\""), "{details}");

    // The same certificate under the password-only label: refused (no password configured in
    // the peer, and the certificate is neither trusted there nor one ragw issued).
    let elsewhere = config_with(
        work.path(),
        "anonymous@iot",
        &root,
        &[
            ("client_cert", cert.display().to_string()),
            ("private_key", key.display().to_string()),
        ],
    );
    let (ok, out) = run(&eapol_test, &elsewhere, server, secret.trim());
    assert!(
        !ok,
        "accepted under a label that does not trust the maker CA:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostap_peer_authenticates_with_the_certificate_ragw_issued() {
    let Some(eapol_test) = eapol_test() else {
        return;
    };
    let dev = Dev::start(&[]);
    let radius = teap_support::Radius::of(&dev);
    // ragw's own peer enrolls the device inside TEAP (hostap has no PKCS#10 support).
    let (builder, built) = teap_support::csr_from_attributes(None);
    let peer = teap_support::peer(
        &dev,
        "anonymous@iot",
        teap_support::Credential::Password(
            "SN-TEAP-HOSTAP".into(),
            teap_support::dev_password(&dev),
        ),
        Some(builder),
    );
    let provisioned = teap_support::run(peer, &radius, "02-00-5e-00-53-90").await;
    assert!(provisioned.accepted, "{provisioned:?}");
    let chain = teap_support::chain_of(&provisioned);
    let enrolled = built.lock().unwrap().clone().unwrap();

    let work = tempfile::tempdir().unwrap();
    let cert = work.path().join("issued.pem");
    let chain_pem: String = chain.iter().map(|c| common::pem_cert(c)).collect();
    std::fs::write(&cert, chain_pem).unwrap();
    let key = work.path().join("issued.key");
    std::fs::write(&key, &enrolled.key_pem).unwrap();
    let root = dev.dir.join("ca").join("root.pem");
    let conf = config_with(
        work.path(),
        "anonymous@iot",
        &root,
        &[
            ("client_cert", cert.display().to_string()),
            ("private_key", key.display().to_string()),
        ],
    );
    let secret = String::from_utf8(radius.secret.clone()).unwrap();
    let (ok, out) =
        tokio::task::spawn_blocking(move || run(&eapol_test, &conf, radius.server, &secret))
            .await
            .unwrap();
    assert!(ok, "eapol_test failed:\n{out}");
    assert!(
        !out.contains("Basic-Password-Auth-Req"),
        "no password was asked:\n{out}"
    );
    let peer_msk = hexdump(&out, "EAP-TEAP: Derived key (MSK)").expect("peer MSK in the log");
    let mut radius_msk = hexdump(&out, "MS-MPPE-Recv-Key (crypt)").expect("Recv-Key");
    radius_msk.extend(hexdump(&out, "MS-MPPE-Send-Key (sign)").expect("Send-Key"));
    assert_eq!(peer_msk.len(), 64);
    assert_eq!(
        radius_msk, peer_msk,
        "the Access-Accept carries the peer's MSK"
    );
    teap_support::wait_for_audit(&dev, "gateway.access_granted", &["certificate ragw issued"])
        .await;
}

#[test]
fn hostap_peer_authenticates_by_inner_eap_gtc_where_the_label_asks_for_it() {
    let Some(eapol_test) = eapol_test() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let dev_config = work.path().join("dev.toml");
    std::fs::write(
        &dev_config,
        "[teap.labels.gtc]\nprofile = \"iot\"\npassword_method = \"eap-gtc\"\n\n\
         [teap.labels.gtc.basic]\nbootstrap_secret = \"gtc-bootstrap\"\n",
    )
    .unwrap();
    let dev = Dev::start(&["--config", dev_config.to_str().unwrap()]);
    let server: SocketAddr = dev.endpoint("radius").parse().unwrap();
    let secret = std::fs::read_to_string(dev.dir.join("radius-secret")).unwrap();
    let ca = dev.dir.join("ca").join("root.pem");
    let db = dev.dir.join("ragw.db");

    // The realm of the outer (anonymous) identity picks the label; hostap sends `identity` in
    // the inner EAP-Response/Identity and the password as the EAP-GTC response.
    let gtc_peer = |identity: &str, password: &str| {
        config_with(
            work.path(),
            identity,
            &ca,
            &[
                ("anonymous_identity", "anonymous@gtc".to_string()),
                ("password", password.to_string()),
                ("phase2", "auth=GTC".to_string()),
            ],
        )
    };
    let (ok, out) = run(
        &eapol_test,
        &gtc_peer("sn-gtc-1", "gtc-bootstrap"),
        server,
        secret.trim(),
    );
    assert!(ok, "eapol_test failed:\n{out}");
    assert!(
        out.contains("EAP-TEAP: Selected Phase 2 EAP vendor 0 method 6"),
        "the peer did not run inner EAP-GTC:\n{out}"
    );
    let peer_msk = hexdump(&out, "EAP-TEAP: Derived key (MSK)").expect("peer MSK in the log");
    let mut radius_msk = hexdump(&out, "MS-MPPE-Recv-Key (crypt)").expect("Recv-Key");
    radius_msk.extend(hexdump(&out, "MS-MPPE-Send-Key (sign)").expect("Send-Key"));
    assert_eq!(
        radius_msk, peer_msk,
        "the Access-Accept carries the peer's MSK"
    );
    let (_, _, details) = wait_for_audit(&db, "gateway.access_granted", "sn-gtc-1");
    assert!(details.contains("EAP-GTC"), "{details}");
    assert!(details.contains("\"label\":\"gtc\""), "{details}");

    let (ok, out) = run(
        &eapol_test,
        &gtc_peer("sn-gtc-2", "not-the-secret"),
        server,
        secret.trim(),
    );
    assert!(!ok, "a wrong password was accepted:\n{out}");
    // The refusal names the user name tried (from the inner EAP-Response/Identity).
    let (_, _, details) = wait_for_audit(&db, "gateway.refused", "wrong user name or password");
    assert!(details.contains("\"label\":\"gtc\""), "{details}");
    assert!(details.contains("sn-gtc-2"), "{details}");

    // A peer configured for another inner method answers EAP-GTC with a legacy Nak: refused
    // with Error 1032 (Inner method not supported).
    let (ok, out) = run(
        &eapol_test,
        &config_with(
            work.path(),
            "sn-gtc-3",
            &ca,
            &[
                ("anonymous_identity", "anonymous@gtc".to_string()),
                ("password", "gtc-bootstrap".to_string()),
                ("phase2", "auth=MSCHAPV2".to_string()),
            ],
        ),
        server,
        secret.trim(),
    );
    assert!(!ok, "a peer refusing EAP-GTC was accepted:\n{out}");
    let (_, _, details) = wait_for_audit(&db, "gateway.refused", "refused inner EAP method 6");
    assert!(details.contains("\"status\":1032"), "{details}");
}
