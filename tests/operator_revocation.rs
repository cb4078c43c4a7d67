//! An operator's revocation reaches the issuing CA (issue 8 §1): `ragw admin revoke-cert`
//! marks the registrar's row and queues a revocation job in the same transaction; the dev
//! worker leases it and calls the local CA's ACME revokeCert with its account key, so that
//! `ragw ca list` shows the certificate revoked and the CA's `/crl` lists its serial. Run on
//! SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod peers;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Dev, Pg, enroll, wait_issued};
use der::Decode;
use ragw_proto::registrar::v1::enrollment_service_client::EnrollmentServiceClient;
use ragw_runtime::identity::Role;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The serial as the CA writes it: hex without leading zero bytes.
fn ca_serial(serial: &[u8]) -> String {
    let mut s = serial;
    while s.len() > 1 && s[0] == 0 {
        s = &s[1..];
    }
    hex(s)
}

/// Whether `ragw ca list` shows `serial` revoked (None: not listed at all).
fn ca_lists_revoked(dev: &Dev, ca_config: &[&str], serial: &str) -> Option<bool> {
    let mut args = vec!["ca", "list", "--format", "json", "--limit", "1000"];
    args.extend_from_slice(ca_config);
    let (code, out, err) = dev.cli(&args);
    assert_eq!(code, 0, "ragw ca list: {err}");
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["serial"].as_str() == Some(serial))
        .map(|v| v["revoked"].as_bool().unwrap_or(false))
}

/// The serials the CA's CRL lists, fetched with curl over the CA's TLS.
fn crl_serials(dev: &Dev, curl: &std::path::Path) -> Vec<String> {
    let url = dev.endpoint("acme_directory").replace("/directory", "/crl");
    let out = Command::new(curl)
        .args(["-sSf", "--cacert"])
        .arg(dev.dir.join("ca").join("root.pem"))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fetching {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crl: x509_cert::crl::CertificateList =
        der::Decode::from_der(&out.stdout).expect("the CRL is DER");
    crl.tbs_cert_list
        .revoked_certificates
        .unwrap_or_default()
        .iter()
        .map(|r| ca_serial(r.serial_number.as_bytes()))
        .collect()
}

fn audit_actions(dev: &Dev) -> Vec<String> {
    let (code, out, err) = dev.cli(&["audit", "query", "--format", "json"]);
    assert_eq!(code, 0, "ragw audit query: {err}");
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["action"].as_str().map(str::to_string))
        .collect()
}

async fn revoke_reaches_the_ca(dev: &Dev, ca_config: &[&str]) {
    let Some(curl) = peers::find_program("curl", "curl") else {
        return;
    };
    let mut gw = EnrollmentServiceClient::new(dev.channel(Role::Gateway).await);
    let pending = enroll(&mut gw, 1..2).await;
    let issued = wait_issued(&mut gw, &pending, Duration::from_secs(120)).await;
    let leaf = x509_cert::Certificate::from_der(&issued[0].1[0]).unwrap();
    let raw_serial = leaf.tbs_certificate().serial_number().as_bytes().to_vec();
    let serial = ca_serial(&raw_serial);
    assert_eq!(ca_lists_revoked(dev, ca_config, &serial), Some(false));
    assert!(!crl_serials(dev, &curl).contains(&serial));

    let (code, out, err) = dev.cli(&[
        "admin",
        "revoke-cert",
        &hex(&raw_serial),
        "--reason",
        "keyCompromise",
    ]);
    assert_eq!(code, 0, "{out}{err}");

    // The worker takes the job at its next Lease; how soon is not this test's business, only
    // that it happens.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let at_ca = ca_lists_revoked(dev, ca_config, &serial) == Some(true);
        let recorded = audit_actions(dev)
            .iter()
            .any(|a| a == "certificate.revoked_at_ca");
        if at_ca && recorded {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "revocation did not reach the CA in time (CA shows revoked: {at_ca}, \
             certificate.revoked_at_ca audited: {recorded})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        crl_serials(dev, &curl).contains(&serial),
        "the CRL does not list {serial}"
    );
    let actions = audit_actions(dev);
    for expected in [
        "certificate.revoked",
        "certificate.revocation_queued",
        "certificate.revocation_leased",
        "certificate.revoked_at_ca",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "missing {expected} in {actions:?}"
        );
    }
    // Revoking again is refused and queues nothing more.
    let (code, _, err) = dev.cli(&["admin", "revoke-cert", &hex(&raw_serial)]);
    assert_ne!(code, 0);
    assert!(err.contains("already revoked"), "{err}");
    let queued = audit_actions(dev)
        .iter()
        .filter(|a| *a == "certificate.revocation_queued")
        .count();
    assert_eq!(queued, 1);
    already_revoked_at_the_ca_counts_as_done(dev, ca_config, &mut gw).await;
    let (code, out, err) = dev.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A certificate revoked at the CA first (`ragw ca revoke`) and then by the operator: the CA
/// answers `alreadyRevoked`, which completes the job (audited with `already_revoked`).
async fn already_revoked_at_the_ca_counts_as_done(
    dev: &Dev,
    ca_config: &[&str],
    gw: &mut EnrollmentServiceClient<tonic::transport::Channel>,
) {
    let pending = enroll(gw, 2..3).await;
    let issued = wait_issued(gw, &pending, Duration::from_secs(120)).await;
    let leaf = x509_cert::Certificate::from_der(&issued[0].1[0]).unwrap();
    let raw_serial = leaf.tbs_certificate().serial_number().as_bytes().to_vec();
    let serial = ca_serial(&raw_serial);
    let mut args = vec!["ca", "revoke", serial.as_str(), "--reason", "superseded"];
    args.extend_from_slice(ca_config);
    let (code, out, err) = dev.cli(&args);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = dev.cli(&["admin", "revoke-cert", &hex(&raw_serial)]);
    assert_eq!(code, 0, "{out}{err}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, out, err) = dev.cli(&[
            "audit",
            "query",
            "--action",
            "certificate.revoked_at_ca",
            "--format",
            "json",
        ]);
        assert_eq!(code, 0, "{err}");
        let done = out
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| serde_json::from_str::<serde_json::Value>(v["details"].as_str()?).ok())
            .find(|d| d["serial"].as_str() == Some(hex(&raw_serial).as_str()));
        if let Some(d) = done {
            assert_eq!(d["already_revoked"], serde_json::json!(true), "{d}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the revocation of a certificate already revoked at the CA did not complete in time"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // (`ragw ca revoke` runs outside the CA server, whose CRL cache may lag for up to 30 s:
    // the CA's own records are what this checks.)
    assert_eq!(ca_lists_revoked(dev, ca_config, &serial), Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_revocation_reaches_the_local_ca_sqlite() {
    let dev = Dev::start(&[]);
    revoke_reaches_the_ca(&dev, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_revocation_reaches_the_local_ca_postgres() {
    let Some(pg) = Pg::fresh() else { return };
    let config = pg.config.to_string_lossy().into_owned();
    let dev = Dev::start(&["--config", &config]);
    revoke_reaches_the_ca(&dev, &["--config", &config]).await;
    drop(dev);
    pg.drop_schema().await;
}
