//! EST end-to-end helpers: a test PKI, a test-only issuer that completes the registrar's jobs
//! (standing in for the ACME workers), an in-process EST gateway in front of a `ragw dev`
//! registrar, and a raw HTTPS client that can send exactly the bytes a test wants.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use ragw_domain::IdentityKind;
use ragw_est::{
    BasicAuth, CertIdentityField, ClientCertAuth, EstConfig, LabelConfig, Limits, Secret, ServerTls,
};
use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::worker_service_client::WorkerServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, IsCa, Issuer,
    KeyPair, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tonic::transport::Channel;

pub const BOOTSTRAP: &str = "bootstrap-secret";
pub const HASHED_USER: &str = "sn-hashed";
pub const HASHED_PASSWORD: &str = "per-device-password";
/// The IDevID serial number of the test device certificate.
pub const IDEVID_SERIAL: &str = "IDEVID-0042";

/// A CA made with rcgen.
pub struct TestCa {
    pub der: Vec<u8>,
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

static SERIAL: AtomicU64 = AtomicU64::new(1);

fn next_serial() -> SerialNumber {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let n = SERIAL.fetch_add(1, Ordering::Relaxed);
    let mut bytes = vec![0x01];
    bytes.extend_from_slice(&nanos.to_be_bytes());
    bytes.extend_from_slice(&n.to_be_bytes());
    SerialNumber::from_slice(&bytes)
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        TestCa {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// Signs a certificate for the CSR's key and names (what an ACME CA does).
    pub fn sign_csr(&self, csr_der: &[u8]) -> Vec<u8> {
        let der = rustls_pki_types::CertificateSigningRequestDer::from(csr_der.to_vec());
        let mut csr = CertificateSigningRequestParams::from_der(&der).unwrap();
        csr.params.serial_number = Some(next_serial());
        csr.params.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
        csr.params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        csr.params.is_ca = IsCa::ExplicitNoCa;
        csr.params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        csr.signed_by(&self.issuer).unwrap().der().to_vec()
    }

    /// A leaf certificate and its key (PKCS#8 DER); `serial` becomes the subject serialNumber.
    pub fn leaf(&self, names: &[&str], serial: Option<&str>) -> (Vec<u8>, Vec<u8>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(s) = serial {
            p.distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 5]), s);
        }
        p.serial_number = Some(next_serial());
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.der().to_vec(), key.serialize_der(), key)
    }
}

/// Everything the EST tests need besides the registrar.
pub struct EstPki {
    /// Signs device certificates (the stand-in for the ACME CA); what /cacerts serves.
    pub issuing: Arc<TestCa>,
    /// The device maker's CA (IDevID trust anchor).
    pub device_ca: TestCa,
    /// Signs the gateway's HTTPS certificate.
    pub server_ca: TestCa,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    /// An IDevID with subject serialNumber [`IDEVID_SERIAL`].
    pub idevid_der: Vec<u8>,
    pub idevid_key_der: Vec<u8>,
    pub idevid_key: KeyPair,
}

impl EstPki {
    pub fn new() -> EstPki {
        let issuing = Arc::new(TestCa::new("ragw test issuing CA"));
        let device_ca = TestCa::new("Widget Factory IDevID CA");
        let server_ca = TestCa::new("EST server test CA");
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let server = p.signed_by(&key, &server_ca.issuer).unwrap();
        let (idevid_der, idevid_key_der, idevid_key) =
            device_ca.leaf(&["widget.factory.example"], Some(IDEVID_SERIAL));
        EstPki {
            issuing,
            device_ca,
            server_cert_pem: server.pem(),
            server_key_pem: key.serialize_pem(),
            server_ca,
            idevid_der,
            idevid_key_der,
            idevid_key,
        }
    }

    pub fn server_tls(&self) -> ServerTls {
        ServerTls {
            cert_chain_pem: self.server_cert_pem.clone().into_bytes(),
            key_pem: self.server_key_pem.clone().into_bytes(),
        }
    }

    /// Writes the HTTPS trust anchor and the device CA as PEM files for external clients.
    pub fn write_files(&self, dir: &Path) -> PemFiles {
        let server_ca = dir.join("est-server-ca.pem");
        std::fs::write(&server_ca, &self.server_ca.pem).unwrap();
        let issuing = dir.join("issuing-ca.pem");
        std::fs::write(&issuing, &self.issuing.pem).unwrap();
        let device_ca = dir.join("device-ca.pem");
        std::fs::write(&device_ca, &self.device_ca.pem).unwrap();
        let server_cert = dir.join("est-server.pem");
        std::fs::write(&server_cert, &self.server_cert_pem).unwrap();
        let server_key = dir.join("est-server.key");
        std::fs::write(&server_key, &self.server_key_pem).unwrap();
        PemFiles {
            server_ca,
            issuing,
            device_ca,
            server_cert,
            server_key,
        }
    }
}

pub struct PemFiles {
    pub server_ca: PathBuf,
    pub issuing: PathBuf,
    pub device_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// An argon2id PHC string (cheap parameters: this is a test).
pub fn argon2_hash(password: &str) -> String {
    use argon2::PasswordHasher;
    let params = argon2::Params::new(1024, 1, 1, None).unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password_with_salt(password.as_bytes(), b"est-test-salt-16")
        .unwrap()
        .to_string()
}

/// The gateway configuration most tests use: label `iot` (the default) over the `ragw dev`
/// profile `iot`, with a bootstrap secret, one per-device argon2 password, and IDevIDs from the
/// test device CA; no rate limit.
pub fn est_config(pki: &EstPki) -> EstConfig {
    let mut iot = LabelConfig::new("iot", "iot");
    iot.cacerts = vec![pki.issuing.der.clone()];
    let mut basic = BasicAuth::new(IdentityKind::SerialNumber);
    basic.bootstrap = Some(Secret::from_plain(BOOTSTRAP));
    basic
        .passwords
        .insert(HASHED_USER.into(), argon2_hash(HASHED_PASSWORD));
    iot.basic = Some(basic);
    iot.client_cert = Some(ClientCertAuth {
        trust_anchors: vec![CertificateDer::from(pki.device_ca.der.clone())],
        identity: CertIdentityField::parse("subject:serialNumber").unwrap(),
        identity_kind: IdentityKind::IdevidSerial,
    });
    EstConfig {
        labels: vec![iot],
        default_label: Some("iot".into()),
        limits: Limits {
            requests_per_second: 0.0,
            ..Limits::default()
        },
        enrollment: ragw_est::EnrollmentTiming {
            wait: std::time::Duration::from_secs(5),
            retry_after_seconds: 3,
            approval_retry_after_seconds: 120,
        },
        trusted_proxy: None,
    }
}

/// An in-process EST gateway, stopped when dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    pub async fn start(config: EstConfig, registrar: Channel, pki: &EstPki) -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut rx) = watch::channel(false);
        let shutdown = async move {
            while !*rx.borrow() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let tls = pki.server_tls();
        let task = tokio::spawn(async move {
            ragw_est::serve(config, registrar, listener, tls, shutdown)
                .await
                .unwrap();
        });
        Gateway {
            addr,
            stop,
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Completes every job the registrar hands out with a certificate from `ca`: the ACME workers'
/// part, without ACME. Stopped when dropped.
pub struct TestIssuer {
    task: tokio::task::JoinHandle<()>,
}

impl TestIssuer {
    pub fn spawn(worker: Channel, ca: Arc<TestCa>) -> TestIssuer {
        let task = tokio::spawn(async move {
            let mut w = WorkerServiceClient::new(worker);
            loop {
                let jobs = match w
                    .lease(pb::LeaseRequest {
                        worker_id: "est-test-issuer".into(),
                        max_jobs: 16,
                        lease_seconds: 60,
                        wait_millis: 2000,
                        max_revocations: 0,
                    })
                    .await
                {
                    Ok(r) => r.into_inner().jobs,
                    Err(_) => {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        continue;
                    }
                };
                for job in jobs {
                    let cert = ca.sign_csr(&job.csr_der);
                    let _ = w
                        .complete(pb::CompleteRequest {
                            enrollment_id: job.enrollment_id,
                            lease_token: job.lease_token,
                            certificate_chain: vec![cert, ca.der.clone()],
                        })
                        .await;
                }
            }
        });
        TestIssuer { task }
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client identity for TLS: certificate DER chain and PKCS#8 key DER.
#[derive(Clone)]
pub struct ClientIdentity {
    pub chain: Vec<Vec<u8>>,
    pub key_pkcs8: Vec<u8>,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The DER certificates of a base64 certs-only body.
    pub fn certs(&self) -> Vec<Vec<u8>> {
        assert_eq!(self.status, 200, "{}", self.text());
        let der = ragw_pki::base64::decode_lenient(&self.body, 1 << 20).unwrap();
        ragw_pki::parse_certs_only(&der).unwrap()
    }

    #[track_caller]
    pub fn expect(&self, status: u16, needle: &str) {
        assert_eq!(
            self.status,
            status,
            "expected {status} containing {needle:?}, got {}: {}",
            self.status,
            self.text()
        );
        assert!(
            self.text().contains(needle),
            "the {status} body {:?} does not say {needle:?}",
            self.text()
        );
        if status >= 400 {
            assert!(
                self.header("content-type")
                    .is_some_and(|c| c.starts_with("text/plain")),
                "error without a plain-text body: {:?}",
                self.headers
            );
        }
        assert_eq!(
            self.header("content-length"),
            Some(self.body.len().to_string().as_str()),
            "Content-Length must be on every response"
        );
    }
}

/// A raw HTTPS client: sends `head` (request line and headers, without the final blank line)
/// plus `body`, with `Connection: close`, and reads the whole answer.
pub struct RawClient {
    pub addr: SocketAddr,
    pub server_ca_der: Vec<u8>,
    pub identity: Option<ClientIdentity>,
    /// Source address to connect from (a loopback alias, for the trusted-proxy tests).
    pub from: Option<IpAddr>,
}

impl RawClient {
    pub fn new(gw: &Gateway, pki: &EstPki) -> RawClient {
        RawClient {
            addr: gw.addr,
            server_ca_der: pki.server_ca.der.clone(),
            identity: None,
            from: None,
        }
    }

    pub fn with_identity(mut self, identity: ClientIdentity) -> RawClient {
        self.identity = Some(identity);
        self
    }

    pub async fn send(&self, head: &str, body: &[u8]) -> Response {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.server_ca_der.clone()))
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(
                    id.chain
                        .iter()
                        .map(|c| CertificateDer::from(c.clone()))
                        .collect(),
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8.clone())),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(from) = self.from {
            socket.bind(SocketAddr::new(from, 0)).unwrap();
        }
        let tcp = socket.connect(self.addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut req = head.trim_end_matches("\r\n").to_string();
        req.push_str("\r\nHost: localhost\r\nConnection: close\r\n");
        if !body.is_empty() && !head.to_ascii_lowercase().contains("content-length") {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        tls.write_all(body).await.unwrap();
        tls.flush().await.unwrap();
        let mut raw = Vec::new();
        // A server that closes without close_notify is fine for these tests.
        let _ = tls.read_to_end(&mut raw).await;
        parse_response(&raw)
    }

    pub async fn get(&self, path: &str, extra: &str) -> Response {
        self.send(&format!("GET {path} HTTP/1.1\r\n{extra}"), b"")
            .await
    }

    /// POSTs base64 `body` as application/pkcs10.
    pub async fn post_csr(&self, path: &str, extra: &str, body: &[u8]) -> Response {
        self.send(
            &format!("POST {path} HTTP/1.1\r\nContent-Type: application/pkcs10\r\n{extra}"),
            body,
        )
        .await
    }
}

pub fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

pub fn b64(der: &[u8]) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .encode(der)
        .into_bytes()
}

/// The dNSNames a /csrattrs answer asks for.
pub fn csrattrs_names(resp: &Response) -> Vec<String> {
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/csrattrs"));
    let der = ragw_pki::base64::decode_lenient(&resp.body, 1 << 20).unwrap();
    let attrs = ragw_pki::csrattrs::parse_csr_attrs(&der).unwrap();
    ragw_pki::csrattrs::requested_dns_names(&attrs).unwrap()
}

/// A CSR (DER) for `names` with the given key.
pub fn csr_with(key: &KeyPair, names: &[String]) -> Vec<u8> {
    let mut params = CertificateParams::new(names.to_vec()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.serialize_request(key).unwrap().der().to_vec()
}

/// The SubjectPublicKeyInfo DER of a certificate.
pub fn cert_spki(cert_der: &[u8]) -> Vec<u8> {
    use der::{Decode, Encode};
    x509_cert::Certificate::from_der(cert_der)
        .unwrap()
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap()
}

/// The hex serial number of a certificate.
pub fn cert_serial_hex(cert_der: &[u8]) -> String {
    use der::Decode;
    hex::encode(
        x509_cert::Certificate::from_der(cert_der)
            .unwrap()
            .tbs_certificate()
            .serial_number()
            .as_bytes(),
    )
}

/// Whether an external program is on PATH; if not, says so loudly and fails when
/// RAGW_REQUIRE_PEERS=1.
pub fn have_program(name: &str, package: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        let msg = format!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPING: `{name}` is not installed (Debian package {package}).\n\
             !!! This EST interoperability test did NOT run.\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        if std::env::var("RAGW_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{msg}RAGW_REQUIRE_PEERS=1, so a missing peer is a failure");
        }
        eprintln!("{msg}");
    }
    found
}
