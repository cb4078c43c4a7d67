//! Issue 8 §1, CA to registrar: a certificate revoked at the local CA, by its operator
//! (`ragw ca revoke`) or by the key holder (ACME revokeCert signed with the certificate's own
//! key), can no longer re-enroll once the registrar's CRL poll has seen it (`ragw dev` polls
//! every 5 s; the CA caches its CRL up to 30 s when the revocation bypasses the running CA).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::{Dev, csr_for, enroll_req, mac, wait_issued};
use ragw_proto::registrar::v1 as pb;
use ragw_runtime::identity::Role;
use serde_json::{Value, json};
use tonic::transport::Channel;

type Gateway = pb::enrollment_service_client::EnrollmentServiceClient<Channel>;

/// Enrolls device `i` and returns (names, leaf key, chain).
async fn issue(gw: &mut Gateway, i: u32) -> (Vec<String>, rcgen::KeyPair, Vec<Vec<u8>>) {
    let a = gw
        .get_assignment(pb::GetAssignmentRequest {
            device: Some(mac(i)),
            profile: "iot".into(),
            current_certificate_der: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let (key, csr) = csr_for(&a.names);
    let e = gw
        .enroll(enroll_req(mac(i), csr))
        .await
        .unwrap()
        .into_inner()
        .enrollment
        .unwrap();
    let issued = wait_issued(gw, &[(a.names[0].clone(), e.id)], Duration::from_secs(120)).await;
    (a.names, key, issued[0].1.clone())
}

fn serial_of(der: &[u8]) -> String {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der).unwrap();
    hex::encode(cert.tbs_certificate().serial_number().as_bytes())
}

/// Re-enrolls device `i` with `current` and `csr`; the gRPC error message, or `None` when
/// accepted.
async fn reenroll(gw: &mut Gateway, i: u32, csr: &[u8], current: &[u8]) -> Option<String> {
    let mut req = enroll_req(mac(i), csr.to_vec());
    req.current_certificate_der = current.to_vec();
    match gw.enroll(req).await {
        Ok(_) => None,
        Err(status) => Some(status.message().to_string()),
    }
}

/// Waits (bounded) until re-enrollment with `current` is refused as revoked. Every attempt is
/// the same request, as a device retrying would send it: an attempt accepted before the
/// registrar saw the CRL creates one renewal, and the retries are that same enrollment (a
/// fresh CSR each time would supersede `current` instead).
async fn wait_refused_as_revoked(gw: &mut Gateway, i: u32, names: &[String], current: &[u8]) {
    let (_, csr) = csr_for(names);
    // Poll interval (5 s) plus the CA's CRL cache (30 s), with room for a slow machine.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(message) = reenroll(gw, i, &csr, current).await {
            assert!(message.contains("revoked"), "{message}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "re-enrollment with the revoked certificate was still accepted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn have_curl() -> bool {
    let ok = Command::new("curl").arg("--version").output().is_ok();
    if !ok {
        assert!(
            std::env::var("RAGW_REQUIRE_PEERS").as_deref() != Ok("1"),
            "curl is required (RAGW_REQUIRE_PEERS=1)"
        );
        eprintln!("SKIP: curl not installed");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_revoke_stops_reenrollment() {
    let dev = Dev::start(&[]);
    ca_revoke_case(&dev, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_revoke_stops_reenrollment_on_postgres() {
    let Some(pg) = common::Pg::fresh() else {
        return;
    };
    let config = pg.config.display().to_string();
    let dev = Dev::start(&["--config", &config]);
    ca_revoke_case(&dev, Some(&pg)).await;
    drop(dev);
    pg.drop_schema().await;
}

async fn ca_revoke_case(dev: &Dev, pg: Option<&common::Pg>) {
    let mut gw = Gateway::new(dev.channel(Role::Gateway).await);
    let (names, _key, chain) = issue(&mut gw, 801).await;
    let serial = serial_of(&chain[0]);
    // Before the revocation a certificate renews (proves the refusal below is the CRL's).
    let (names2, _key2, chain2) = issue(&mut gw, 802).await;
    let (_, csr2) = csr_for(&names2);
    assert_eq!(reenroll(&mut gw, 802, &csr2, &chain2[0]).await, None);

    let mut args = vec!["ca", "revoke", &serial, "--reason", "keyCompromise"];
    let config = pg.map(|p| p.config.display().to_string());
    if let Some(c) = &config {
        args.extend(["--config", c.as_str()]);
    }
    let (code, out, err) = dev.cli(&args);
    assert_eq!(code, 0, "{out}{err}");
    wait_refused_as_revoked(&mut gw, 801, &names, &chain[0]).await;

    assert_crl_audited(dev, pg, &serial).await;
    let metrics = common::http_get(&dev.endpoint("metrics")).1;
    let revoked: f64 = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("registrar_crl_revoked"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(revoked >= 1.0, "{metrics}");
}

/// The registrar's own `certificate.revoked` event, by the CRL poller (actor `crl:<url>`), in
/// the SQLite database of `ragw dev` or in the test's PostgreSQL schema.
async fn assert_crl_audited(dev: &Dev, pg: Option<&common::Pg>, serial: &str) {
    const QUERY: &str = "SELECT details FROM audit_events WHERE action = 'certificate.revoked' \
                         AND actor LIKE 'crl:https://%/crl' ORDER BY seq";
    let details: Vec<String> = match pg {
        None => rusqlite::Connection::open(dev.dir.join("ragw.db"))
            .unwrap()
            .prepare(QUERY)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect(),
        Some(pg) => pg
            .client()
            .await
            .query(QUERY, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect(),
    };
    assert!(
        details
            .iter()
            .any(|d| d.contains(serial) && d.contains("keyCompromise")),
        "{details:?}"
    );
}

/// curl against the local CA (its root from the data directory); returns (headers, body).
fn curl(root: &std::path::Path, args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "--cacert"])
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

fn header(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {name} in {head}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_revoke_cert_by_the_key_holder_stops_reenrollment() {
    if !have_curl() {
        return;
    }
    let dev = Dev::start(&[]);
    key_holder_revocation_case(&dev, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_revoke_cert_by_the_key_holder_stops_reenrollment_on_postgres() {
    if !have_curl() {
        return;
    }
    let Some(pg) = common::Pg::fresh() else {
        return;
    };
    let config = pg.config.display().to_string();
    let dev = Dev::start(&["--config", &config]);
    key_holder_revocation_case(&dev, Some(&pg)).await;
    drop(dev);
    pg.drop_schema().await;
}

async fn key_holder_revocation_case(dev: &Dev, pg: Option<&common::Pg>) {
    let mut gw = Gateway::new(dev.channel(Role::Gateway).await);
    let (names, key, chain) = issue(&mut gw, 811).await;
    let root = dev.dir.join("ca/root.pem");

    // RFC 8555 §7.6: revokeCert signed with the certificate's key (a jwk, not an account).
    let (_, directory) = curl(&root, &[&dev.endpoint("acme_directory")]);
    let directory: Value = serde_json::from_str(&directory).unwrap();
    let revoke_url = directory["revokeCert"].as_str().unwrap().to_string();
    let (head, _) = curl(&root, &["-I", directory["newNonce"].as_str().unwrap()]);
    let nonce = header(&head, "replay-nonce");
    let public = key.public_key_raw();
    assert_eq!(public.len(), 65);
    let protected = json!({
        "alg": "ES256",
        "jwk": {"crv": "P-256", "kty": "EC", "x": B64.encode(&public[1..33]), "y": B64.encode(&public[33..])},
        "nonce": nonce,
        "url": revoke_url,
    });
    let payload = json!({"certificate": B64.encode(&chain[0]), "reason": 1});
    let protected = B64.encode(protected.to_string());
    let payload = B64.encode(payload.to_string());
    let signer =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der()).unwrap();
    let signature = signer
        .sign(
            &aws_lc_rs::rand::SystemRandom::new(),
            format!("{protected}.{payload}").as_bytes(),
        )
        .unwrap();
    let jws = json!({"protected": protected, "payload": payload, "signature": B64.encode(signature.as_ref())});
    let (head, body) = curl(
        &root,
        &[
            "-H",
            "Content-Type: application/jose+json",
            "--data-binary",
            &jws.to_string(),
            &revoke_url,
        ],
    );
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/2 200"),
        "{head}{body}"
    );

    wait_refused_as_revoked(&mut gw, 811, &names, &chain[0]).await;
    assert_crl_audited(dev, pg, &serial_of(&chain[0])).await;
}
