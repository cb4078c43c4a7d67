//! The EST gateway end to end: a real `ragw dev` registrar, the gateway in front of it, a
//! test issuer standing in for the ACME workers, and raw HTTPS requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod est_support;

use std::sync::Arc;
use std::time::Duration;

use common::Dev;
use est_support::*;
use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::admin_service_client::AdminServiceClient;
use ragw_proto::registrar::v1::audit_service_client::AuditServiceClient;
use ragw_runtime::identity::Role;
use rcgen::PublicKeyData;

const ENROLL: &str = "/.well-known/est/simpleenroll";
const REENROLL: &str = "/.well-known/est/simplereenroll";
const CSRATTRS: &str = "/.well-known/est/csrattrs";

async fn assigned_names(client: &RawClient, user: &str, password: &str) -> Vec<String> {
    let names = csrattrs_names(&client.get(CSRATTRS, &basic(user, password)).await);
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(".devices.ragw.test"), "{names:?}");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_retry_idevid_and_reenroll() {
    let dev = Dev::start(&["--no-worker"]);
    let pki = EstPki::new();
    let issuer_ca = pki.issuing.clone();
    let config = est_config(&pki);
    let _issuer = TestIssuer::spawn(dev.channel(Role::Worker).await, issuer_ca.clone());
    let gw = Gateway::start(config, dev.channel(Role::Gateway).await, &pki).await;
    let client = RawClient::new(&gw, &pki);

    // /cacerts: no authentication, certs-only, the issuing CA.
    let r = client.get("/.well-known/est/cacerts", "").await;
    r.expect(200, "");
    assert_eq!(
        r.header("content-type"),
        Some("application/pkcs7-mime; smime-type=certs-only")
    );
    assert_eq!(r.certs(), vec![issuer_ca.der.clone()]);
    let labelled = client.get("/.well-known/est/iot/cacerts", "").await;
    assert_eq!(labelled.body, r.body);

    // Basic with the bootstrap secret: the label is allocated on first contact and stays.
    let names = assigned_names(&client, "sn-0001", BOOTSTRAP).await;
    assert_eq!(assigned_names(&client, "sn-0001", BOOTSTRAP).await, names);
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = csr_with(&key, &names);
    let r = client
        .post_csr(ENROLL, &basic("sn-0001", BOOTSTRAP), &b64(&csr))
        .await;
    r.expect(200, "");
    let certs = r.certs();
    assert_eq!(certs.len(), 1, "only the end-entity certificate");
    assert_eq!(cert_spki(&certs[0]), key.subject_public_key_info());

    // The retry with the same CSR (wrapped with CRLF this time) gets the same certificate.
    let wrapped = ragw_pki::base64::encode_wrapped(&csr, 64);
    let again = client
        .post_csr(ENROLL, &basic("sn-0001", BOOTSTRAP), wrapped.as_bytes())
        .await;
    assert_eq!(again.certs(), certs);

    // A per-device argon2 password.
    let hashed_names = assigned_names(&client, HASHED_USER, HASHED_PASSWORD).await;
    assert_ne!(hashed_names, names);
    client
        .get(CSRATTRS, &basic(HASHED_USER, BOOTSTRAP))
        .await
        .expect(401, "wrong user name or password");

    // An IDevID as TLS client certificate: the identity is its subject serialNumber.
    let idevid = client.with_identity(ClientIdentity {
        chain: vec![pki.idevid_der.clone()],
        key_pkcs8: pki.idevid_key_der.clone(),
    });
    let idevid_names = csrattrs_names(&idevid.get(CSRATTRS, "").await);
    let dev_key = rcgen::KeyPair::generate().unwrap();
    let r = idevid
        .post_csr(ENROLL, "", &b64(&csr_with(&dev_key, &idevid_names)))
        .await;
    let device_cert = r.certs().remove(0);
    let mut admin = AdminServiceClient::new(dev.channel(Role::Admin).await);
    let listed = admin
        .list_enrollments(pb::ListEnrollmentsRequest {
            device: Some(pb::DeviceIdentity {
                kind: pb::IdentityKind::IdevidSerial as i32,
                value: IDEVID_SERIAL.into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.enrollments.len(), 1);

    // Re-enrollment with the ragw certificate and a new key; same names.
    let reenroller = RawClient::new(&gw, &pki).with_identity(ClientIdentity {
        chain: vec![device_cert.clone()],
        key_pkcs8: dev_key.serialize_der(),
    });
    // The certificate ragw issued names the device on /csrattrs too, with no password; a
    // client with neither is told every way in.
    assert_eq!(
        csrattrs_names(&reenroller.get(CSRATTRS, "").await),
        idevid_names
    );
    RawClient::new(&gw, &pki)
        .get(CSRATTRS, "")
        .await
        .expect(401, "a certificate ragw issued to the device");
    let new_key = rcgen::KeyPair::generate().unwrap();
    let renewal_csr = b64(&csr_with(&new_key, &idevid_names));
    let r = reenroller.post_csr(REENROLL, "", &renewal_csr).await;
    let renewed = r.certs().remove(0);
    assert_eq!(cert_spki(&renewed), new_key.subject_public_key_info());
    assert_ne!(renewed, device_cert);

    // The renewed certificate has no second life: only the retry of the very request that
    // superseded it gets an answer (the same certificate); any other request is refused.
    let retried = reenroller.post_csr(REENROLL, "", &renewal_csr).await;
    assert_eq!(retried.certs(), vec![renewed.clone()]);
    let another_key = rcgen::KeyPair::generate().unwrap();
    reenroller
        .post_csr(REENROLL, "", &b64(&csr_with(&another_key, &idevid_names)))
        .await
        .expect(403, "superseded");
    reenroller.get(CSRATTRS, "").await.expect(403, "superseded");
    // A device that lost its new certificate comes back with its bootstrap credential.
    let recovered = idevid
        .post_csr(ENROLL, "", &b64(&csr_with(&another_key, &idevid_names)))
        .await;
    recovered.expect(200, "");
    let recovered = recovered.certs().remove(0);
    assert_eq!(cert_spki(&recovered), another_key.subject_public_key_info());
    let renewed_client = RawClient::new(&gw, &pki).with_identity(ClientIdentity {
        chain: vec![recovered.clone()],
        key_pkcs8: another_key.serialize_der(),
    });

    // Other names are refused on re-enrollment too, naming the expected SAN.
    let r = renewed_client
        .post_csr(
            REENROLL,
            "",
            &b64(&csr_with(
                &new_key,
                &["other.devices.ragw.test".to_string()],
            )),
        )
        .await;
    r.expect(400, "badIdentity");
    assert!(
        r.text().contains(&format!("dNSName={}", idevid_names[0])),
        "{}",
        r.text()
    );

    // The IDevID is not a ragw certificate: no re-enrollment with it.
    idevid
        .post_csr(REENROLL, "", &b64(&csr_with(&new_key, &idevid_names)))
        .await
        .expect(403, "not issued by ragw");
    // Another device's credentials next to this certificate: refused.
    reenroller
        .post_csr(
            REENROLL,
            &basic("sn-0001", BOOTSTRAP),
            &b64(&csr_with(&new_key, &idevid_names)),
        )
        .await
        .expect(403, "belongs to another device");

    // A revoked certificate cannot re-enroll.
    admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial_hex: cert_serial_hex(&recovered),
            reason: "keyCompromise".into(),
        })
        .await
        .unwrap();
    let key3 = rcgen::KeyPair::generate().unwrap();
    renewed_client
        .post_csr(REENROLL, "", &b64(&csr_with(&key3, &idevid_names)))
        .await
        .expect(403, "revoked");
    // Revoking it a second time is refused, and the refusal is audited.
    let refused_before = refusals(&dev).await;
    let again = admin
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial_hex: cert_serial_hex(&recovered),
            reason: "keyCompromise".into(),
        })
        .await
        .expect_err("a second revocation was accepted");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    assert!(again.message().contains("already revoked"), "{again:?}");
    assert_eq!(refusals(&dev).await, refused_before + 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_and_stores_nothing() {
    let dev = Dev::start(&["--no-worker"]);
    let pki = EstPki::new();
    let mut config = est_config(&pki);
    // Every refusal of this test audited one by one (the bounded form has its own test).
    config.limits.guard.audit_per_source = 1000;
    let gw = Gateway::start(config, dev.channel(Role::Gateway).await, &pki).await;
    let client = RawClient::new(&gw, &pki);
    let device = "sn-bad";
    let auth = basic(device, BOOTSTRAP);
    let names = assigned_names(&client, device, BOOTSTRAP).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let good = b64(&csr_with(&key, &names));

    // Transport-level problems, refused by the gateway itself.
    client
        .post_csr(ENROLL, &auth, b"MIIB$$$$")
        .await
        .expect(400, "not base64: the character '$' at byte 4");
    client
        .post_csr(ENROLL, &auth, b"")
        .await
        .expect(400, "empty");
    client
        .send(&format!("POST {ENROLL} HTTP/1.1\r\n{auth}"), &good)
        .await
        .expect(415, "no Content-Type");
    client
        .send(
            &format!("POST {ENROLL} HTTP/1.1\r\nContent-Type: text/plain\r\n{auth}"),
            &good,
        )
        .await
        .expect(415, "\"text/plain\"");
    client
        .post_csr(ENROLL, &auth, &vec![b'A'; 40_000])
        .await
        .expect(413, "larger than");
    client
        .get(ENROLL, &auth)
        .await
        .expect(405, "takes POST, not GET");
    client
        .post_csr("/.well-known/est/nolabel/simpleenroll", &auth, &good)
        .await
        .expect(404, "unknown EST label \"nolabel\"");
    client
        .post_csr("/.well-known/est/fullcmc", &auth, &good)
        .await
        .expect(501, "not supported");
    let r = client.post_csr(ENROLL, "", &good).await;
    r.expect(401, "authentication required");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"ragw EST iot\", charset=\"UTF-8\"")
    );
    // A guess on another name (a wrong password makes its name wait): 401, then that name is
    // not checked until the Retry-After is over, even with the right password.
    client
        .post_csr(ENROLL, &basic("sn-guessed", "guess"), &good)
        .await
        .expect(401, "wrong user name or password");
    let r = client
        .post_csr(ENROLL, &basic("sn-guessed", BOOTSTRAP), &good)
        .await;
    r.expect(429, "the password was not checked");
    assert_eq!(r.header("retry-after"), Some("1"));
    client
        .post_csr(ENROLL, "Authorization: Bearer abc\r\n", &good)
        .await
        .expect(401, "not supported");

    // CSR problems, refused by the registrar (which audits each refusal).
    let refused_before = refusals(&dev).await;
    client
        .post_csr(ENROLL, &auth, &b64(b"\x30\x03\x02\x01\x00"))
        .await
        .expect(400, "badRequest: malformed CSR");
    let mut bad_sig = csr_with(&key, &names);
    let n = bad_sig.len();
    bad_sig[n - 5] ^= 0x55;
    client
        .post_csr(ENROLL, &auth, &b64(&bad_sig))
        .await
        .expect(400, "does not verify");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../lib/pki/tests/fixtures");
    for (file, needle) in [("rsa1024.der", "not supported"), ("p192.der", "P-192")] {
        let der = std::fs::read(format!("{fixtures}/{file}")).unwrap();
        client
            .post_csr(ENROLL, &auth, &b64(&der))
            .await
            .expect(400, needle);
    }
    let foreign = client
        .post_csr(
            ENROLL,
            &auth,
            &b64(&csr_with(&key, &["www.example.com".to_string()])),
        )
        .await;
    foreign.expect(400, "badIdentity");
    assert!(
        foreign
            .text()
            .contains(&format!("expected subjectAltName: dNSName={}", names[0])),
        "{}",
        foreign.text()
    );
    let mut extra = names.clone();
    extra.push("extra.devices.ragw.test".into());
    client
        .post_csr(ENROLL, &auth, &b64(&csr_with(&key, &extra)))
        .await
        .expect(400, "badIdentity");
    let mut with_localhost = names.clone();
    with_localhost.push("localhost".into());
    client
        .post_csr(ENROLL, &auth, &b64(&csr_with(&key, &with_localhost)))
        .await
        .expect(400, "localhost");
    let mut p = rcgen::CertificateParams::new(names.clone()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.subject_alt_names
        .push(rcgen::SanType::IpAddress("8.8.8.8".parse().unwrap()));
    let public_ip = p.serialize_request(&key).unwrap().der().to_vec();
    client
        .post_csr(ENROLL, &auth, &b64(&public_ip))
        .await
        .expect(400, "8.8.8.8");
    assert!(refusals(&dev).await >= refused_before + 8);
    // Refusals the gateway made on its own (credentials, encoding, method) are audited too,
    // with the claimed identity and never the password.
    let gateway_refusals = audited(&dev, "gateway.refused").await;
    assert!(
        gateway_refusals
            .iter()
            .any(|d| d.contains("\"status\":401")),
        "{gateway_refusals:#?}"
    );
    assert!(
        gateway_refusals
            .iter()
            .any(|d| d.contains("\"claimed_identity\":\"sn-guessed\"")
                && d.contains("\"status\":401")),
        "{gateway_refusals:#?}"
    );
    assert!(
        gateway_refusals
            .iter()
            .any(|d| d.contains("\"claimed_identity\":\"sn-guessed\"")
                && d.contains("\"status\":429")),
        "the unchecked password is audited too: {gateway_refusals:#?}"
    );

    // Nothing was stored for this device but its label: no enrollment at all.
    let mut admin = AdminServiceClient::new(dev.channel(Role::Admin).await);
    let listed = admin
        .list_enrollments(pb::ListEnrollmentsRequest {
            device: Some(pb::DeviceIdentity {
                kind: pb::IdentityKind::SerialNumber as i32,
                value: device.into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.enrollments.is_empty(), "{:?}", listed.enrollments);
    gw.shutdown().await;
}

async fn refusals(dev: &Dev) -> usize {
    audited(dev, "rpc.refused").await.len()
}

/// The details of every audit event with `action`.
async fn audited(dev: &Dev, action: &str) -> Vec<String> {
    let mut audit = AuditServiceClient::new(dev.channel(Role::Auditor).await);
    let mut after = 0;
    let mut count = Vec::new();
    loop {
        let page = audit
            .query(pb::AuditQueryRequest {
                filter: Some(pb::AuditFilter {
                    action: action.into(),
                    ..Default::default()
                }),
                limit: 500,
                after_seq: after,
            })
            .await
            .unwrap()
            .into_inner();
        count.extend(page.events.iter().map(|e| e.details_json.clone()));
        if page.events.is_empty() || page.next_after_seq == 0 {
            return count;
        }
        after = page.next_after_seq;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_issuance_and_manual_approval_answer_202() {
    let dev = Dev::start(&["--no-worker", "--approve", "manual"]);
    let pki = EstPki::new();
    let mut config = est_config(&pki);
    config.enrollment.wait = Duration::from_millis(300);
    let ca = Arc::new(TestCa::new("issuer"));
    config.labels[0].cacerts = vec![ca.der.clone()];
    let gw = Gateway::start(config, dev.channel(Role::Gateway).await, &pki).await;
    let client = RawClient::new(&gw, &pki);
    let auth = basic("sn-manual", BOOTSTRAP);
    let names = assigned_names(&client, "sn-manual", BOOTSTRAP).await;
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = b64(&csr_with(&key, &names));

    let r = client.post_csr(ENROLL, &auth, &csr).await;
    r.expect(202, "awaiting approval by an operator");
    assert_eq!(r.header("retry-after"), Some("120"));

    let mut admin = AdminServiceClient::new(dev.channel(Role::Admin).await);
    let pending = admin
        .list_pending_approvals(pb::ListPendingApprovalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pending.enrollments.len(), 1);
    admin
        .approve(pb::ApproveRequest {
            enrollment_id: pending.enrollments[0].id.clone(),
            reason: "known device".into(),
        })
        .await
        .unwrap();

    // Approved, but no issuer yet: in progress past the wait bound.
    let r = client.post_csr(ENROLL, &auth, &csr).await;
    r.expect(202, "in progress");
    assert_eq!(r.header("retry-after"), Some("3"));

    let _issuer = TestIssuer::spawn(dev.channel(Role::Worker).await, ca.clone());
    let mut got = None;
    for _ in 0..50 {
        let r = client.post_csr(ENROLL, &auth, &csr).await;
        if r.status == 200 {
            got = Some(r.certs());
            break;
        }
        r.expect(202, "");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let certs = got.expect("the certificate after approval and issuance");
    assert_eq!(cert_spki(&certs[0]), key.subject_public_key_info());
    let again = client.post_csr(ENROLL, &auth, &csr).await;
    assert_eq!(again.certs(), certs, "a retry returns the same certificate");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_header_and_rate_limit() {
    let dev = Dev::start(&["--no-worker"]);
    let pki = EstPki::new();
    let mut config = est_config(&pki);
    config.trusted_proxy = Some(ragw_est::TrustedProxy {
        addresses: vec!["127.0.0.2".parse().unwrap()],
        client_cert_header: "x-ssl-client-cert".into(),
        client_address_header: Some("x-forwarded-for".into()),
    });
    config.limits.requests_per_second = 0.01;
    config.limits.burst = 4;
    let gw = Gateway::start(config, dev.channel(Role::Gateway).await, &pki).await;

    let pem = pem_of(&pki.idevid_der);
    let escaped: String = pem
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    let header = format!("X-SSL-Client-Cert: {escaped}\r\n");

    // From an address that is not a trusted proxy, the header is refused.
    let direct = RawClient::new(&gw, &pki);
    direct
        .get(CSRATTRS, &header)
        .await
        .expect(403, "only from the configured trusted proxies");

    // From the proxy, the header authenticates the device like its TLS certificate would.
    let mut proxy = RawClient::new(&gw, &pki);
    proxy.from = Some("127.0.0.2".parse().unwrap());
    let names = csrattrs_names(
        &proxy
            .get(
                CSRATTRS,
                &format!("{header}X-Forwarded-For: 192.0.2.50\r\n"),
            )
            .await,
    );
    assert_eq!(names.len(), 1);

    // Rate limit per client address: the direct client has used 1 of its burst of 4.
    for _ in 0..3 {
        direct
            .get("/.well-known/est/cacerts", "")
            .await
            .expect(200, "");
    }
    let r = direct.get("/.well-known/est/cacerts", "").await;
    r.expect(429, "too many requests from 127.0.0.1");
    assert!(r.header("retry-after").is_some());
    // Other clients (behind the proxy, by their forwarded address) are not affected.
    proxy
        .get(
            "/.well-known/est/cacerts",
            "X-Forwarded-For: 192.0.2.51\r\n",
        )
        .await
        .expect(200, "");
    gw.shutdown().await;
}

fn pem_of(der: &[u8]) -> String {
    let b = String::from_utf8(b64(der)).unwrap();
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dev = Dev::start(&["--no-worker"]);
    let pki = EstPki::new();
    let mut config = est_config(&pki);
    config.limits.header_timeout = Duration::from_secs(1);
    config.limits.handshake_timeout = Duration::from_secs(1);
    let gw = Gateway::start(config, dev.channel(Role::Gateway).await, &pki).await;

    // A connection that never starts TLS is closed.
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut buf))
        .await
        .expect("the server must close an idle connection")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // A request head that never ends is closed too.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(
            pki.server_ca.der.clone(),
        ))
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.write_all(b"GET /.well-known/est/cacerts HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut rest))
        .await
        .expect("the server must close a connection whose head never ends");
    gw.shutdown().await;
}

/// A label without configured CA certificates serves the ones the upstream CA returned above
/// the newest device certificate of its profile, and says when it cannot know them yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cacerts_come_from_the_upstream_chain_when_none_are_configured() {
    let dev = Dev::start(&["--no-worker"]);
    let pki = EstPki::new();
    let issuer_ca = pki.issuing.clone();
    let mut config = est_config(&pki);
    for label in &mut config.labels {
        label.cacerts.clear();
    }
    let gw = Gateway::start(config, dev.channel(Role::Gateway).await, &pki).await;
    let client = RawClient::new(&gw, &pki);

    let r = client.get("/.well-known/est/cacerts", "").await;
    r.expect(503, "est.labels.iot.cacerts");
    assert_eq!(r.header("retry-after"), Some("60"));

    let _issuer = TestIssuer::spawn(dev.channel(Role::Worker).await, issuer_ca.clone());
    let names = assigned_names(&client, "sn-cacerts", BOOTSTRAP).await;
    let key = rcgen::KeyPair::generate().unwrap();
    client
        .post_csr(
            ENROLL,
            &basic("sn-cacerts", BOOTSTRAP),
            &b64(&csr_with(&key, &names)),
        )
        .await
        .expect(200, "");

    // "None yet" is cached for a few seconds; the certificates appear once it lapses.
    let mut r = client.get("/.well-known/est/cacerts", "").await;
    for _ in 0..60 {
        if r.status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        r = client.get("/.well-known/est/cacerts", "").await;
    }
    r.expect(200, "");
    assert_eq!(r.certs(), vec![issuer_ca.der.clone()]);
    let labelled = client.get("/.well-known/est/iot/cacerts", "").await;
    assert_eq!(labelled.body, r.body);
}

/// What a strict embedded client checks: header names spelled exactly (compared
/// case-sensitively) and base64 in CRLF lines of 64 characters.
fn assert_strict_wire(r: &Response, what: &str) {
    const SPELLED: &[&str] = &[
        "Content-Type",
        "Content-Length",
        "Content-Transfer-Encoding",
        "WWW-Authenticate",
        "Retry-After",
        "Connection",
        "Date",
        "Allow",
    ];
    for (name, _) in &r.headers {
        assert!(
            SPELLED.contains(&name.as_str()),
            "{what}: header name {name:?} is not in its canonical spelling"
        );
    }
    assert!(
        r.headers.iter().any(|(n, _)| n == "Content-Length"),
        "{what}: no Content-Length"
    );
    assert!(
        r.headers.iter().any(|(n, _)| n == "Content-Type"),
        "{what}: no Content-Type"
    );
}

fn assert_wrapped_base64(r: &Response, what: &str) {
    assert!(
        r.headers
            .iter()
            .any(|(n, v)| n == "Content-Transfer-Encoding" && v == "base64"),
        "{what}: no Content-Transfer-Encoding: base64"
    );
    let text = std::str::from_utf8(&r.body).unwrap();
    assert!(
        text.ends_with("\r\n"),
        "{what}: last line not CRLF-terminated"
    );
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    assert!(lines.len() > 1, "{what}: one line");
    for (i, line) in lines.iter().enumerate() {
        assert!(
            !line.contains('\n') && !line.contains('\r'),
            "{what}: bare line break"
        );
        if i + 1 < lines.len() {
            assert_eq!(line.len(), 64, "{what}: line {i} is {} long", line.len());
        } else {
            assert!(!line.is_empty() && line.len() <= 64, "{what}: last line");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_clients_get_exact_header_names_and_64_column_base64() {
    let dev = Dev::start(&["--no-worker", "--approve", "manual"]);
    let pki = EstPki::new();
    let mut config = est_config(&pki);
    config.enrollment.wait = Duration::from_millis(300);
    // est_config's labels take the server default: 64-column CRLF lines.
    assert!(config.labels.iter().all(|l| l.base64_line_length == 64));
    let ca = Arc::new(TestCa::new("issuer"));
    config.labels[0].cacerts = vec![ca.der.clone()];
    let gw = Gateway::start(config, dev.channel(Role::Gateway).await, &pki).await;
    let client = RawClient::new(&gw, &pki);

    let r = client.get("/.well-known/est/cacerts", "").await;
    r.expect(200, "");
    assert_strict_wire(&r, "200 cacerts");
    assert_wrapped_base64(&r, "200 cacerts");

    let r = client.get(CSRATTRS, "").await;
    assert_eq!(r.status, 401);
    assert_strict_wire(&r, "401");
    assert!(
        r.headers
            .iter()
            .any(|(n, v)| n == "WWW-Authenticate" && v.starts_with("Basic realm=")),
        "401 without an exactly spelled WWW-Authenticate: {:?}",
        r.headers
    );

    let r = client.get("/.well-known/est/iot/nothing", "").await;
    assert_eq!(r.status, 404);
    assert_strict_wire(&r, "404");

    let auth = basic("sn-strict", BOOTSTRAP);
    let r = client.get(CSRATTRS, &auth).await;
    r.expect(200, "");
    assert_strict_wire(&r, "200 csrattrs");
    assert_wrapped_base64(&r, "200 csrattrs");
    let names = csrattrs_names(&r);
    let key = rcgen::KeyPair::generate().unwrap();
    // Such clients post their CSR wrapped too (libest: 64 columns); the certificate comes back
    // in the same form. A one-line CSR gets a one-line certificate (strongSwan, est_peers.rs).
    let csr = ragw_pki::base64::encode_wrapped(&csr_with(&key, &names), 64).into_bytes();

    let r = client.post_csr(ENROLL, &auth, &csr).await;
    r.expect(202, "");
    assert_strict_wire(&r, "202 simpleenroll");
    assert!(r.headers.iter().any(|(n, _)| n == "Retry-After"));

    let mut admin = AdminServiceClient::new(dev.channel(Role::Admin).await);
    let pending = admin
        .list_pending_approvals(pb::ListPendingApprovalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    admin
        .approve(pb::ApproveRequest {
            enrollment_id: pending.enrollments[0].id.clone(),
            reason: "strict client".into(),
        })
        .await
        .unwrap();
    let _issuer = TestIssuer::spawn(dev.channel(Role::Worker).await, ca.clone());
    let mut issued = None;
    for _ in 0..50 {
        let r = client.post_csr(ENROLL, &auth, &csr).await;
        if r.status == 200 {
            issued = Some(r);
            break;
        }
        r.expect(202, "");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = issued.expect("the certificate after approval");
    assert_strict_wire(&r, "200 simpleenroll");
    assert_wrapped_base64(&r, "200 simpleenroll");
    gw.shutdown().await;
}

/// Many refusals from one address: the first few audited one by one, the rest as one summary
/// event once the interval is over, so a flood does not grow the log row by row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_from_one_address_are_audited_in_bounded_form() {
    let dev = Dev::start(&["--no-worker"]);
    let pki = EstPki::new();
    let mut config = est_config(&pki);
    config.limits.guard.audit_per_source = 2;
    config.limits.guard.audit_interval = Duration::from_millis(300);
    let gw = Gateway::start(config, dev.channel(Role::Gateway).await, &pki).await;
    let client = RawClient::new(&gw, &pki);
    for i in 0..7 {
        client
            .get(&format!("/.well-known/est/flood{i}/cacerts"), "")
            .await
            .expect(404, "unknown EST label");
    }
    // The interval ends; the next refusal writes the summary of the last one.
    tokio::time::sleep(Duration::from_millis(400)).await;
    client
        .get("/.well-known/est/after/cacerts", "")
        .await
        .expect(404, "unknown EST label");
    let mut events = Vec::new();
    for _ in 0..50 {
        events = audited(&dev, "gateway.refused").await;
        if events.iter().any(|e| e.contains("refusal_summary")) && events.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let summaries: Vec<&String> = events
        .iter()
        .filter(|e| e.contains("\"operation\":\"refusal_summary\""))
        .collect();
    assert_eq!(summaries.len(), 1, "{events:#?}");
    assert!(
        summaries[0].contains("5 further refusals") && summaries[0].contains("127.0.0.1"),
        "{events:#?}"
    );
    // Two of the flood, the summary, and the first of the new interval: not eight rows.
    assert_eq!(events.len(), 4, "{events:#?}");
    gw.shutdown().await;
}
