//! ragw's own TEAP peer (`ragw-teap-peer`) against a running `ragw dev`, as the TEAP end-to-end
//! tests use it: a device that authenticates with the bootstrap password or a client
//! certificate, builds its CSR from the CSR-Attributes the gateway sends (exactly the names and
//! the key type asked for), and ends with the outcome of both the peer and the RADIUS server.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ragw_pki::csrattrs::{AttrOrOid, parse_csr_attrs, requested_dns_names};
use ragw_teap_peer::{
    CsrBuilder, Peer, PeerConfig, RadiusAttrs, RadiusOutcome, client_tls_config, run_over_radius,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use crate::common::Dev;

/// Where the test NAS sends its Access-Requests and with which secret.
#[derive(Clone)]
pub struct Radius {
    pub server: SocketAddr,
    pub secret: Vec<u8>,
}

impl Radius {
    /// `ragw dev`'s own RADIUS address and generated secret.
    pub fn of(dev: &Dev) -> Radius {
        let secret = std::fs::read_to_string(dev.dir.join("radius-secret")).unwrap();
        Radius {
            server: dev.endpoint("radius").parse().unwrap(),
            secret: secret.trim().as_bytes().to_vec(),
        }
    }
}

pub fn dev_password(dev: &Dev) -> String {
    std::fs::read_to_string(dev.dir.join("dev-password"))
        .unwrap()
        .trim()
        .to_string()
}

/// The dev CA's root (DER), the one trust anchor a device needs for the TEAP server.
pub fn root_der(dev: &Dev) -> Vec<u8> {
    let pem = std::fs::read_to_string(dev.dir.join("ca").join("root.pem")).unwrap();
    pem_blocks(&pem).into_iter().next().expect("a root")
}

/// The DER contents of every PEM block in `pem`.
pub fn pem_blocks(pem: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            body = Some(String::new());
        } else if line.starts_with("-----END ") {
            if let Some(b) = body.take() {
                out.push(base64::engine::general_purpose::STANDARD.decode(b).unwrap());
            }
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    out
}

/// A device key and the CSR it sent, with the CSR-Attributes it was built from.
#[derive(Clone)]
pub struct Enrolled {
    pub key_pkcs8: Vec<u8>,
    pub key_pem: String,
    /// SubjectPublicKeyInfo DER of the key.
    pub spki_der: Vec<u8>,
    pub csr_der: Vec<u8>,
    pub names: Vec<String>,
    pub csr_attributes: Vec<u8>,
}

/// The key algorithm the CSR-Attributes ask for (RFC 9908 §4: an Attribute whose type is the
/// key's algorithm OID, for EC with the curve as value; or a bare OID).
pub fn requested_key(attrs: &[AttrOrOid]) -> &'static rcgen::SignatureAlgorithm {
    const EC: &str = "1.2.840.10045.2.1";
    const P256: &str = "1.2.840.10045.3.1.7";
    const P384: &str = "1.3.132.0.34";
    const ED25519: &str = "1.3.101.112";
    for item in attrs {
        match item {
            AttrOrOid::Attribute(a) if a.oid.to_string() == EC => {
                let curve = a.values.iter().next().expect("the curve");
                let curve: der::asn1::ObjectIdentifier = curve.decode_as().expect("a curve OID");
                return match curve.to_string().as_str() {
                    P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
                    P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
                    other => panic!("curve {other} not supported by this test"),
                };
            }
            AttrOrOid::Oid(oid) if oid.to_string() == ED25519 => return &rcgen::PKCS_ED25519,
            _ => {}
        }
    }
    panic!("the CSR-Attributes name no key type this test supports");
}

/// A CSR for `names` with a fresh key of `alg` (subject empty, names in subjectAltName).
pub fn make_csr(
    alg: &'static rcgen::SignatureAlgorithm,
    names: &[String],
) -> (rcgen::KeyPair, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::new(names.to_vec()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).unwrap();
    (key, csr.der().to_vec())
}

/// A CSR builder that follows the CSR-Attributes exactly (or, with `names`, asks for those
/// names instead), and records what it built.
pub fn csr_from_attributes(
    override_names: Option<Vec<String>>,
) -> (CsrBuilder, Arc<Mutex<Option<Enrolled>>>) {
    let built = Arc::new(Mutex::new(None));
    let record = Arc::clone(&built);
    let builder: CsrBuilder = Box::new(move |attributes: &[u8]| {
        let attrs = parse_csr_attrs(attributes).expect("DER CSR-Attributes");
        let assigned = requested_dns_names(&attrs).expect("the names");
        let names = override_names.clone().unwrap_or(assigned);
        let (key, csr) = make_csr(requested_key(&attrs), &names);
        *record.lock().unwrap() = Some(Enrolled {
            key_pkcs8: key.serialize_der(),
            key_pem: key.serialize_pem(),
            spki_der: rcgen::PublicKeyData::subject_public_key_info(&key),
            csr_der: csr.clone(),
            names,
            csr_attributes: attributes.to_vec(),
        });
        csr
    });
    (builder, built)
}

/// A CSR builder that sends the very same CSR again.
pub fn same_csr(csr: Vec<u8>) -> CsrBuilder {
    Box::new(move |_| csr.clone())
}

/// How the device proves itself in the tunnel.
pub enum Credential {
    /// Basic-Password-Auth: (user name = device identifier, password).
    Password(String, String),
    /// A client certificate in phase 1: leaf-first DER chain and PKCS#8 key.
    Certificate(Vec<Vec<u8>>, Vec<u8>),
}

pub fn peer(
    dev: &Dev,
    outer_identity: &str,
    credential: Credential,
    csr: Option<CsrBuilder>,
) -> Peer {
    let roots = [CertificateDer::from(root_der(dev))];
    let (password, client_auth) = match credential {
        Credential::Password(user, password) => (Some((user, password.into_bytes())), None),
        Credential::Certificate(chain, key) => (
            None,
            Some((
                chain.into_iter().map(CertificateDer::from).collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            )),
        ),
    };
    let tls = client_tls_config(&roots, client_auth).unwrap();
    // The dev CA certifies its loopback servers by IP address.
    let server_name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut config = PeerConfig::new(tls, server_name, outer_identity);
    config.password = password;
    config.csr = csr;
    Peer::new(config).unwrap()
}

pub const NAS: &str = "e2e-nas";

/// One conversation as a NAS would carry it: Calling-Station-Id `station`, NAS-Identifier
/// [`NAS`]; retransmits every 5 s (the gateway holds a request while the certificate is
/// issued), up to 12 times.
pub async fn run(peer: Peer, radius: &Radius, station: &str) -> RadiusOutcome {
    let attrs = RadiusAttrs {
        calling_station_id: Some(station.to_string()),
        nas_identifier: Some(NAS.to_string()),
        framed_mtu: None,
        timeout: Duration::from_secs(5),
        max_tries: 12,
    };
    run_over_radius(peer, radius.server, &radius.secret, attrs)
        .await
        .expect("a conversation over RADIUS")
}

/// The PKCS#7 the device received, as its DER certificates, leaf first and each next one the
/// issuer of the one before. (The certificates of a SignedData are a DER SET OF, so their order
/// on the wire is the encoding's, not the chain's: a device has to find its leaf.)
pub fn chain_of(outcome: &RadiusOutcome) -> Vec<Vec<u8>> {
    let pkcs7 = outcome.peer.pkcs7.as_ref().expect("a PKCS#7 TLV");
    let certs = ragw_pki::parse_certs_only(pkcs7).expect("a certs-only PKCS#7");
    leaf_first(certs)
}

pub fn leaf_first(certs: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    use der::{Decode, Encode};
    let names = |der: &[u8]| {
        let c = x509_cert::Certificate::from_der(der).unwrap();
        (
            c.tbs_certificate().subject().to_der().unwrap(),
            c.tbs_certificate().issuer().to_der().unwrap(),
        )
    };
    let parsed: Vec<_> = certs.iter().map(|c| names(c)).collect();
    let leaf = (0..certs.len())
        .find(|&i| {
            parsed
                .iter()
                .enumerate()
                .all(|(j, (_, issuer))| j == i || *issuer != parsed[i].0)
        })
        .expect("a certificate that issued none of the others");
    let mut order = vec![leaf];
    while order.len() < certs.len() {
        let last = order[order.len() - 1];
        let Some(next) = (0..certs.len())
            .find(|&j| !order.contains(&j) && parsed[j].0 == parsed[last].1 && j != last)
        else {
            break;
        };
        order.push(next);
    }
    assert_eq!(order.len(), certs.len(), "the certificates form one chain");
    order.into_iter().map(|i| certs[i].clone()).collect()
}

/// The dNSNames in a certificate's subjectAltName.
pub fn san_dns_names(cert_der: &[u8]) -> Vec<String> {
    use der::Decode;
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let cert = x509_cert::Certificate::from_der(cert_der).unwrap();
    let mut names = Vec::new();
    for ext in cert.tbs_certificate().extensions().into_iter().flatten() {
        if ext.extn_id.to_string() == "2.5.29.17" {
            let san = SubjectAltName::from_der(ext.extn_value.as_bytes()).unwrap();
            for n in san.0 {
                if let GeneralName::DnsName(d) = n {
                    names.push(d.to_string());
                }
            }
        }
    }
    names
}

/// The SubjectPublicKeyInfo DER of a certificate.
pub fn spki_der(cert_der: &[u8]) -> Vec<u8> {
    use der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(cert_der).unwrap();
    cert.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap()
}

/// `openssl verify -CAfile DATA_DIR/ca/root.pem -untrusted <intermediates> <leaf>` (the real
/// program); panics with its output unless it says OK. Skipped loudly when openssl is missing.
pub fn openssl_verifies(dev: &Dev, chain: &[Vec<u8>], work: &Path) {
    let Some(openssl) = crate::peers::find_program("openssl", "openssl") else {
        return;
    };
    let leaf = work.join("leaf.pem");
    let untrusted = work.join("untrusted.pem");
    std::fs::write(&leaf, crate::common::pem_cert(&chain[0])).unwrap();
    let rest: String = chain[1..]
        .iter()
        .map(|c| crate::common::pem_cert(c))
        .collect();
    let mut cmd = Command::new(openssl);
    cmd.arg("verify")
        .arg("-CAfile")
        .arg(dev.dir.join("ca").join("root.pem"));
    if !rest.is_empty() {
        std::fs::write(&untrusted, rest).unwrap();
        cmd.arg("-untrusted").arg(&untrusted);
    }
    let out = cmd.arg(&leaf).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(": OK"),
        "openssl verify failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The audit events (JSON objects) with `action`, through `ragw audit query` (any backend).
pub fn audit(dev: &Dev, action: &str) -> Vec<serde_json::Value> {
    let (code, out, err) = dev.cli(&["audit", "query", "--action", action, "--format", "json"]);
    assert_eq!(code, 0, "ragw audit query: {err}");
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["action"] == action)
        .collect()
}

/// Waits (bounded) for an audit event with `action` whose text contains every needle; the
/// gateway audits after it answers, so the row may lag the reply a little.
pub async fn wait_for_audit(dev: &Dev, action: &str, needles: &[&str]) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(e) = audit(dev, action).into_iter().find(|e| {
            let text = e.to_string();
            needles.iter().all(|n| text.contains(n))
        }) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {action} event with {needles:?}; events: {:?}",
            audit(dev, action)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `ragw admin enrollments --device <device>` as (id, state, names) rows.
pub fn enrollments_of(dev: &Dev, device: &str) -> Vec<(String, String, String)> {
    let (code, out, err) = dev.cli(&["admin", "enrollments", "--device", device]);
    assert_eq!(code, 0, "ragw admin enrollments: {err}");
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?.to_string();
            let _device = f.next()?;
            let state = f.next()?.to_string();
            let _profile = f.next()?;
            Some((id, state, f.next().unwrap_or_default().to_string()))
        })
        .collect()
}
