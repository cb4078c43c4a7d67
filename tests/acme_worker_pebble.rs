//! The per-name dns-01 path against a CA without newAuthz: Pebble as the upstream CA, BIND with
//! a TSIG key as the RFC 2136 target, `ragw run --target worker` as a separate process, and 50
//! device enrollments end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod peers;

use std::process::Command;
use std::time::Duration;

use common::{Dev, WorkerProcess, enroll, metric, wait_issued};
use ragw_proto::registrar::v1::enrollment_service_client::EnrollmentServiceClient;
use ragw_runtime::identity::Role;

const DOMAIN: &str = "devices.ragw.test";
const DEVICES: u32 = 50;

fn worker_config(
    dir: &std::path::Path,
    dev: &Dev,
    upstream: &str,
    dns: &str,
) -> std::path::PathBuf {
    let tls = dev.dir.join("tls");
    let path = dir.join("worker.toml");
    std::fs::write(
        &path,
        format!(
            r#"[tls]
ca = "{tls}/ca.pem"
cert = "{tls}/worker.pem"
key = "{tls}/worker.key"

[worker]
registrar = "{grpc}"
ops_listen = "127.0.0.1:0"
concurrency = 8
lease_seconds = 60
poll_wait_ms = 1000

{upstream}

{dns}
"#,
            tls = tls.display(),
            grpc = dev.grpc,
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_enrollments_through_pebble_and_bind() {
    let temp = tempfile::tempdir().unwrap();
    let Some(bind) = peers::Bind::start(&temp.path().join("bind"), DOMAIN) else {
        return;
    };
    let Some(pebble) = peers::Pebble::start(&temp.path().join("pebble"), bind.port) else {
        return;
    };
    let Some(curl) = peers::find_program("curl", "curl") else {
        return;
    };
    let curl = curl.as_path();
    let dev = Dev::start(&["--no-worker", "--domain", DOMAIN]);
    let upstream = format!(
        "[[worker.upstreams]]\ndirectory_url = \"{}\"\nca_trust = \"{}\"\naccount_file = \"{}\"\n",
        pebble.directory,
        pebble.tls_ca.display(),
        temp.path().join("account.json").display()
    );
    let dns = format!(
        "[dns]\nprovider = \"rfc2136\"\nserver = \"127.0.0.1:{}\"\nzone = \"{DOMAIN}\"\nkey_file = \"{}\"\n",
        bind.port,
        bind.key_file.display()
    );
    let config = worker_config(temp.path(), &dev, &upstream, &dns);
    let worker = WorkerProcess::start(&config);

    let mut gw = EnrollmentServiceClient::new(dev.channel(Role::Gateway).await);
    let pending = enroll(&mut gw, 0..DEVICES).await;
    let issued = wait_issued(&mut gw, &pending, Duration::from_secs(600)).await;
    assert_eq!(issued.len(), DEVICES as usize);
    // Gateways serve Pebble's CA certificates, as Pebble returned them above the devices'.
    let ca_certs = gw
        .get_ca_certificates(ragw_proto::registrar::v1::GetCaCertificatesRequest {
            profile: "iot".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .certificates_der;
    assert!(!ca_certs.is_empty());
    assert_eq!(ca_certs.as_slice(), &issued[0].1[1..]);
    // Every per-name dns-01 record is in the audit log under its device, and so is its
    // removal.
    let steps = common::audit_events(&dev.dir.join("ragw.db"), "worker.challenge_");
    let published: Vec<_> = steps
        .iter()
        .filter(|(a, _, _)| a == "worker.challenge_published")
        .collect();
    assert_eq!(published.len(), DEVICES as usize, "{steps:?}");
    assert!(published.iter().all(|(_, device, _)| !device.is_empty()));
    let removed: Vec<_> = steps
        .iter()
        .filter(|(a, _, _)| a == "worker.challenge_removed")
        .collect();
    assert_eq!(removed.len(), DEVICES as usize, "{steps:?}");
    assert!(removed.iter().all(|(_, device, _)| !device.is_empty()));

    // Every chain verifies against Pebble's root and certifies exactly the device's name.
    let root = temp.path().join("pebble-root.pem");
    let out = Command::new(curl)
        .args(["-sS", "--fail", "--cacert"])
        .arg(&pebble.tls_ca)
        .arg(format!("{}/roots/0", pebble.management))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&root, &out.stdout).unwrap();
    for (n, (name, chain)) in issued.iter().enumerate() {
        let leaf = temp.path().join(format!("leaf-{n}.pem"));
        let inter = temp.path().join(format!("inter-{n}.pem"));
        std::fs::write(&leaf, common::pem_cert(&chain[0])).unwrap();
        std::fs::write(
            &inter,
            chain[1..]
                .iter()
                .map(|c| common::pem_cert(c))
                .collect::<String>(),
        )
        .unwrap();
        let (ok, text) = peers::openssl_verify(&root, Some(&inter), &leaf);
        assert!(ok, "{name}: {text}");
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(&leaf)
            .output()
            .unwrap();
        let san = String::from_utf8_lossy(&text.stdout).to_string();
        assert!(san.contains(&format!("DNS:{name}")), "{san}");
    }

    // One certificate per job, every challenge record added and removed again.
    let (_, body) = common::http_get(&worker.metrics);
    assert_eq!(
        metric(&body, "ragw_worker_acme_certificates_issued_total"),
        f64::from(DEVICES),
        "{body}"
    );
    let adds = metric(
        &body,
        "ragw_worker_dns_updates_total{provider=\"rfc2136\",operation=\"add\",outcome=\"ok\"}",
    );
    let removes = metric(
        &body,
        "ragw_worker_dns_updates_total{provider=\"rfc2136\",operation=\"remove\",outcome=\"ok\"}",
    );
    assert!(adds >= f64::from(DEVICES), "{body}");
    assert_eq!(adds, removes, "every TXT record removed: {body}");
    revocation_reaches_pebble(&dev, &pebble, curl, &issued[0].1[0]);

    if let Some(dig) = peers::find_program("dig", "bind9-dnsutils") {
        let out = Command::new(dig)
            .args(["+short", "-p", &bind.port.to_string(), "@127.0.0.1", "TXT"])
            .arg(format!("_acme-challenge.{}", issued[0].0))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).trim().is_empty(),
            "challenge record left behind"
        );
    }
}

/// An operator's revocation reaches the upstream CA: the worker sends revokeCert to Pebble
/// with its account key, and Pebble's management API reports the certificate revoked.
fn revocation_reaches_pebble(
    dev: &Dev,
    pebble: &peers::Pebble,
    curl: &std::path::Path,
    leaf_der: &[u8],
) {
    use der::Decode;
    let leaf = x509_cert::Certificate::from_der(leaf_der).unwrap();
    let serial: String = leaf
        .tbs_certificate()
        .serial_number()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (code, out, err) = dev.cli(&["admin", "revoke-cert", &serial, "--reason", "keyCompromise"]);
    assert_eq!(code, 0, "{out}{err}");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !common::audit_events(&dev.dir.join("ragw.db"), "certificate.revoked_at_ca")
        .iter()
        .any(|(_, _, details)| details.contains(&serial))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the revocation did not reach Pebble in time: {:?}",
            common::audit_events(&dev.dir.join("ragw.db"), "certificate.revocation")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Pebble writes serials as lower-case hex without leading zeros.
    let trimmed = serial.trim_start_matches('0');
    let out = Command::new(curl)
        .args(["-sS", "--fail", "--cacert"])
        .arg(&pebble.tls_ca)
        .arg(format!(
            "{}/cert-status-by-serial/{trimmed}",
            pebble.management
        ))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{body}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        body.contains("\"Revoked\""),
        "Pebble does not show it revoked: {body}"
    );
}
