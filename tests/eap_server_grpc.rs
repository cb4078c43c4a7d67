//! An EAP server that terminates TEAP itself (FreeRADIUS, an ISE-style server) enrolls its
//! peers through the registrar with the `ragw eap-server` CLI, the documented example client:
//! GetAssignment gives the CSR-Attributes DER for the peer, Enroll + WaitEnrollment the
//! certs-only PKCS#7. openssl builds the peer's CSR and checks what comes back; the audit log
//! names the EAP server and TEAP; callers without the eap-server role are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Dev, csr_for, mac};
use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::audit_service_client::AuditServiceClient;
use ragw_proto::registrar::v1::enrollment_service_client::EnrollmentServiceClient;
use ragw_runtime::identity::Role;

/// True when openssl runs; otherwise a loud skip (a failure when RAGW_REQUIRE_PEERS=1).
fn have_openssl() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let msg = "openssl is not installed: SKIPPING the EAP-server enrollment test";
        assert!(
            std::env::var("RAGW_REQUIRE_PEERS").as_deref() != Ok("1"),
            "{msg}, but RAGW_REQUIRE_PEERS=1 requires it"
        );
        eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
    }
    found
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `ragw eap-server …` with explicit credentials, as an operator outside `ragw dev` runs it.
fn eap_server_cli(dev: &Dev, cert: &Path, key: &Path, args: &[&str]) -> (i32, String, String) {
    let ca = dev.dir.join("tls").join("ca.pem");
    let out = Command::new(common::ragw_bin())
        .arg("eap-server")
        .args(["--registrar", &dev.grpc])
        .args(["--ca", path(&ca), "--cert", path(cert), "--key", path(key)])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A component certificate for an external EAP server, issued with openssl from the dev
/// component CA exactly as docs/teap.md tells an operator to: returns (certificate, key).
fn issue_eap_server_certificate(dev: &Dev, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let tls = dev.dir.join("tls");
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let cert = dir.join(format!("{name}.pem"));
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!(
            "subjectAltName = DNS:{name}, URI:urn:ragw:role:eap-server\n\
             extendedKeyUsage = clientAuth\n\
             keyUsage = critical, digitalSignature\n\
             basicConstraints = critical, CA:FALSE\n"
        ),
    )
    .unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path(&key),
    ]);
    openssl(&[
        "req",
        "-new",
        "-key",
        path(&key),
        "-subj",
        &format!("/CN={name}"),
        "-out",
        path(&csr),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        path(&csr),
        "-CA",
        path(&tls.join("ca.pem")),
        "-CAkey",
        path(&tls.join("ca.key")),
        "-days",
        "30",
        "-extfile",
        path(&ext),
        "-out",
        path(&cert),
    ]);
    (cert, key)
}

/// A certificate and key `ragw dev` generated for `role`.
fn dev_pair(dev: &Dev, stem: &str) -> (PathBuf, PathBuf) {
    let tls = dev.dir.join("tls");
    (
        tls.join(format!("{stem}.pem")),
        tls.join(format!("{stem}.key")),
    )
}

/// The value printed after `key` on a line of the CLI's output.
fn field(output: &str, key: &str) -> String {
    output
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("no {key:?} in {output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eap_server_enrolls_a_teap_peer_through_grpc() {
    if !have_openssl() {
        return;
    }
    let dev = Dev::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let attrs = work.path().join("attrs.der");
    let device = mac(0x9_0001);
    let identity = format!("mac:{}", device.value);
    let (cert, cert_key) = issue_eap_server_certificate(&dev, work.path(), "radius1.example.test");

    // 1. The CSR attributes for the peer's CSR-Attributes TLV.
    let (code, out, err) = eap_server_cli(
        &dev,
        &cert,
        &cert_key,
        &[
            "csrattrs",
            "--identity",
            &identity,
            "--profile",
            "iot",
            "--out",
            path(&attrs),
        ],
    );
    assert_eq!(code, 0, "csrattrs: {out}{err}");
    let name = field(&out, "names");
    assert!(
        !name.is_empty() && !name.contains(','),
        "one assigned name: {out}"
    );
    let der = std::fs::read(&attrs).unwrap();
    let parsed = ragw_pki::csrattrs::parse_csr_attrs(&der).expect("CsrAttrs DER");
    assert_eq!(
        ragw_pki::csrattrs::requested_dns_names(&parsed).unwrap(),
        vec![name.clone()]
    );
    // The same bytes ragw's EST /csrattrs and TEAP CSR-Attributes TLV carry.
    let expected = ragw_pki::encode_csr_attrs(&ragw_pki::CsrAttrsRequest {
        dns_names: vec![name.clone()],
        key: Some(ragw_domain::KeyType::EcdsaP256),
        challenge_password: false,
    })
    .unwrap();
    assert_eq!(der, expected);
    // An independent parser agrees: DER, and it names the assigned dNSName.
    let asn1 = openssl(&["asn1parse", "-inform", "DER", "-in", path(&attrs)]);
    assert!(asn1.contains("prime256v1"), "{asn1}");
    let asn1_names = openssl(&[
        "asn1parse",
        "-inform",
        "DER",
        "-in",
        path(&attrs),
        "-strparse",
        // The OCTET STRING holding the subjectAltName: found by its position in the dump.
        &san_octet_string_offset(&asn1),
    ]);
    // A GeneralName dNSName ([2] IA5String, shown without its text) of the name's length, and
    // those octets in the DER.
    assert!(
        asn1_names
            .lines()
            .any(|l| l.contains(&format!("l={:>4} prim: cont [ 2 ]", name.len()))),
        "{asn1_names}"
    );
    assert!(der.windows(name.len()).any(|w| w == name.as_bytes()));

    // 2. The peer's CSR, as a TEAP peer would build it from those attributes.
    let key = work.path().join("peer.key");
    let csr = work.path().join("peer.csr");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path(&key),
    ]);
    openssl(&[
        "req",
        "-new",
        "-key",
        path(&key),
        "-subj",
        &format!("/CN={name}"),
        "-addext",
        &format!("subjectAltName=DNS:{name}"),
        "-outform",
        "DER",
        "-out",
        path(&csr),
    ]);

    // 3. Enroll and wait: the certs-only PKCS#7 for the peer's PKCS#7 TLV.
    let p7 = work.path().join("chain.p7");
    let (code, out, err) = eap_server_cli(
        &dev,
        &cert,
        &cert_key,
        &[
            "enroll",
            "--identity",
            &identity,
            "--profile",
            "iot",
            "--csr",
            path(&csr),
            "--wait",
            "60s",
            "--out",
            path(&p7),
        ],
    );
    assert_eq!(code, 0, "enroll: {out}{err}");
    let enrollment_id = field(&out, "enrollment");
    let certs = openssl(&["pkcs7", "-inform", "DER", "-in", path(&p7), "-print_certs"]);
    assert!(
        certs.contains(&format!("CN = {name}")) || certs.contains(&format!("CN={name}")),
        "the leaf names {name}: {certs}"
    );
    let chain = work.path().join("chain.pem");
    std::fs::write(&chain, &certs).unwrap();
    let leaf = work.path().join("leaf.pem");
    std::fs::write(&leaf, pem_with_subject(&certs, &name)).unwrap();
    let text = openssl(&[
        "x509",
        "-in",
        path(&leaf),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(text.contains(&format!("DNS:{name}")), "{text}");
    let root = dev.dir.join("ca").join("root.pem");
    let verified = openssl(&[
        "verify",
        "-CAfile",
        path(&root),
        "-untrusted",
        path(&chain),
        path(&leaf),
    ]);
    assert!(verified.contains(": OK"), "{verified}");

    // The retry of the same CSR (a RADIUS retransmission reaching another EAP server node)
    // answers with the same enrollment and the same PKCS#7.
    let p7_again = work.path().join("again.p7");
    let (code, out, err) = eap_server_cli(
        &dev,
        &cert,
        &cert_key,
        &[
            "wait",
            &enrollment_id,
            "--wait",
            "5s",
            "--out",
            path(&p7_again),
        ],
    );
    assert_eq!(code, 0, "wait: {out}{err}");
    assert_eq!(
        std::fs::read(&p7).unwrap(),
        std::fs::read(&p7_again).unwrap()
    );

    // 4. The audit log names the EAP server and TEAP.
    let mut audit = AuditServiceClient::new(dev.channel(Role::Auditor).await);
    let events = audit
        .query(pb::AuditQueryRequest {
            filter: Some(pb::AuditFilter {
                device: identity.clone(),
                ..Default::default()
            }),
            limit: 100,
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let received = events
        .iter()
        .find(|e| e.action == "enrollment.received" && e.enrollment == enrollment_id)
        .unwrap_or_else(|| panic!("no enrollment.received in {events:#?}"));
    assert_eq!(received.actor, "eap-server:radius1.example.test");
    let details: serde_json::Value = serde_json::from_str(&received.details_json).unwrap();
    assert_eq!(details["protocol"], "teap", "{details}");
    assert!(
        events
            .iter()
            .any(|e| e.action == "enrollment.issued" && e.enrollment == enrollment_id),
        "{events:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_device_callers_reach_the_enrollment_rpcs() {
    let dev = Dev::start(&["--no-worker"]);
    let work = tempfile::tempdir().unwrap();
    let attrs = work.path().join("attrs.der");
    let device = mac(0x9_0002);
    let identity = format!("mac:{}", device.value);
    let args = [
        "csrattrs",
        "--identity",
        &identity,
        "--profile",
        "iot",
        "--out",
        path(&attrs),
    ];

    // A component certificate without eap-server or gateway: refused, and nothing written.
    for stem in ["worker", "auditor", "admin"] {
        let (cert, key) = dev_pair(&dev, stem);
        let (code, out, err) = eap_server_cli(&dev, &cert, &key, &args);
        assert_ne!(code, 0, "{stem}: {out}{err}");
        assert!(err.contains("PermissionDenied"), "{stem}: {err}");
        assert!(
            err.contains("eap-server"),
            "{stem}: the error names the role: {err}"
        );
        assert!(!attrs.exists(), "{stem}");
    }
    let mut audit = AuditServiceClient::new(dev.channel(Role::Auditor).await);
    let refused = audit
        .query(pb::AuditQueryRequest {
            filter: Some(pb::AuditFilter {
                action: "rpc.refused".into(),
                ..Default::default()
            }),
            limit: 100,
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        refused.iter().any(|e| e.actor == "worker:worker"
            && e.details_json.contains("GetAssignment")
            && e.details_json.contains("permission_denied")),
        "{refused:#?}"
    );

    // The eap-server role acts for TEAP only.
    let mut eap = EnrollmentServiceClient::new(dev.channel(Role::EapServer).await);
    let a = eap
        .get_assignment(pb::GetAssignmentRequest {
            device: Some(device.clone()),
            profile: "iot".into(),
            current_certificate_der: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!a.csr_attributes_der.is_empty());
    let (_, csr) = csr_for(&a.names);
    let as_est = eap
        .enroll(pb::EnrollRequest {
            csr_der: csr.clone(),
            device: Some(device.clone()),
            protocol: pb::Protocol::Est as i32,
            profile: "iot".into(),
            current_certificate_der: Vec::new(),
        })
        .await
        .expect_err("an EAP server cannot enroll for EST");
    assert_eq!(as_est.code(), tonic::Code::PermissionDenied, "{as_est:?}");
    let as_est = eap
        .record_access(pb::RecordAccessRequest {
            protocol: pb::Protocol::Est as i32,
            ..Default::default()
        })
        .await
        .expect_err("an EAP server cannot record EST access");
    assert_eq!(as_est.code(), tonic::Code::PermissionDenied, "{as_est:?}");
    // The same CSR under TEAP is accepted (no worker runs: it stays queued, with no PKCS#7).
    let e = eap
        .enroll(pb::EnrollRequest {
            csr_der: csr,
            device: Some(device),
            protocol: pb::Protocol::Teap as i32,
            profile: "iot".into(),
            current_certificate_der: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .enrollment
        .unwrap();
    assert_ne!(e.state, pb::EnrollmentState::Issued as i32);
    assert!(e.pkcs7_der.is_empty());
    assert_eq!(e.protocol, pb::Protocol::Teap as i32);
}

/// The PEM block of `openssl pkcs7 -print_certs` output whose subject is CN=`cn` (CMS keeps
/// its certificates as a SET, so the leaf need not come first).
fn pem_with_subject(text: &str, cn: &str) -> String {
    let end_marker = "-----END CERTIFICATE-----";
    let block = text
        .split_inclusive(end_marker)
        .find(|b| {
            b.lines().any(|l| {
                l.starts_with("subject=")
                    && (l.ends_with(&format!("CN = {cn}")) || l.ends_with(&format!("CN={cn}")))
            })
        })
        .unwrap_or_else(|| panic!("no certificate for {cn} in {text}"));
    let begin = block.find("-----BEGIN CERTIFICATE-----").unwrap();
    format!("{}\n", &block[begin..])
}

/// In an `openssl asn1parse` dump of CsrAttrs, the offset of the OCTET STRING that follows the
/// subjectAltName OID (the extension value, itself DER).
fn san_octet_string_offset(dump: &str) -> String {
    let mut lines = dump
        .lines()
        .skip_while(|l| !l.contains("X509v3 Subject Alternative Name"));
    lines.next().expect("a subjectAltName in the CsrAttrs");
    let octets = lines
        .find(|l| l.contains("OCTET STRING"))
        .expect("the subjectAltName value");
    octets.split(':').next().unwrap().trim().to_string()
}
