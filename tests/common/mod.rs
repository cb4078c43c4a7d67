//! Shared helpers for ragw's end-to-end tests: start `ragw dev` as a separate process, connect
//! to its registrar with the role credentials it generated, make device CSRs.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod pg_cluster;

use ragw_proto::registrar::v1 as pb;
use ragw_runtime::identity::{Role, ensure_dev_credentials};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub fn ragw_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ragw")
}

/// A running `ragw dev`, stopped when dropped.
pub struct Dev {
    pub child: Child,
    pub dir: PathBuf,
    pub grpc: String,
    _temp: Option<tempfile::TempDir>,
}

impl Dev {
    pub fn start(extra: &[&str]) -> Dev {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("data");
        let mut dev = Dev::start_in(&dir, extra);
        dev._temp = Some(temp);
        dev
    }

    /// Starts in `dir` (kept by the caller, so a restart can reuse it).
    pub fn start_in(dir: &Path, extra: &[&str]) -> Dev {
        let endpoints = dir.join("endpoints.json");
        let _ = std::fs::remove_file(&endpoints);
        let mut cmd = Command::new(ragw_bin());
        cmd.arg("dev").arg("--data-dir").arg(dir).args(extra);
        // Tests run side by side: every listener on a free port.
        if !extra.contains(&"--est-addr") {
            cmd.args(["--est-addr", "127.0.0.1:0"]);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
        cmd.env("RAGW_LOG", "warn");
        let mut child = cmd.spawn().expect("start ragw dev");
        let deadline = Instant::now() + Duration::from_secs(60);
        let grpc = loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("ragw dev exited early with {status}");
            }
            if let Ok(text) = std::fs::read_to_string(&endpoints)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(g) = v.get("grpc").and_then(|g| g.as_str())
            {
                break g.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "ragw dev did not write endpoints.json in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Dev {
            child,
            dir: dir.to_path_buf(),
            grpc,
            _temp: None,
        }
    }

    pub async fn channel(&self, role: Role) -> Channel {
        let creds = ensure_dev_credentials(&self.dir.join("tls")).unwrap();
        let (cert, key) = creds.pair(role);
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(&creds.ca_pem).unwrap()))
            .identity(Identity::from_pem(
                std::fs::read(cert).unwrap(),
                std::fs::read(key).unwrap(),
            ))
            .domain_name("localhost");
        Channel::from_shared(self.grpc.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Runs `ragw <args…> --data-dir DIR` and returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(ragw_bin())
            .args(args)
            .arg("--data-dir")
            .arg(&self.dir)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn stop(&mut self) {
        #[cfg(unix)]
        {
            // SIGTERM first, so the process shuts down as it would in Kubernetes.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn mac(i: u32) -> pb::DeviceIdentity {
    let b = i.to_be_bytes();
    pb::DeviceIdentity {
        kind: pb::IdentityKind::Mac as i32,
        value: format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3]),
    }
}

/// A P-256 key and a DER CSR for `names`.
pub fn csr_for(names: &[String]) -> (rcgen::KeyPair, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(names.to_vec()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).unwrap();
    (key, csr.der().to_vec())
}

/// PostgreSQL for this test: a config file selecting a fresh schema, or `None` (skip, loudly;
/// a failure when RAGW_REQUIRE_PEERS=1).
pub struct Pg {
    pub url: String,
    pub schema: String,
    pub config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Pg {
    pub fn fresh() -> Option<Pg> {
        let url = ragw_store::test_support::database_url()?;
        let schema = ragw_store::test_support::fresh_schema_name();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ragw.toml");
        std::fs::write(
            &config,
            format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\npool_size = 8\n"),
        )
        .unwrap();
        Some(Pg {
            url,
            schema,
            config,
            _dir: dir,
        })
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("SET search_path TO {}", self.schema))
            .await
            .unwrap();
        client
    }

    pub async fn drop_schema(&self) {
        ragw_store::test_support::drop_schemas(&self.url, std::slice::from_ref(&self.schema)).await;
    }
}

/// A plain HTTP/1.1 GET over loopback; returns (status line, body).
pub fn http_get(url: &str) -> (String, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

impl Dev {
    /// An endpoint from endpoints.json.
    pub fn endpoint(&self, key: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join("endpoints.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in endpoints.json"))
            .to_string()
    }
}

/// `ragw run --target worker` as a separate process, killed (SIGKILL) on drop.
pub struct WorkerProcess {
    pub child: Child,
    /// The worker's Prometheus endpoint.
    pub metrics: String,
}

impl WorkerProcess {
    pub fn start(config: &Path) -> WorkerProcess {
        use std::io::BufRead;
        let mut child = Command::new(ragw_bin())
            .args(["run", "--target", "worker", "--config"])
            .arg(config)
            .env("RAGW_LOG", "warn,ragw_acme_worker=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        let line = lines.next().expect("worker printed nothing").unwrap();
        let ops = line
            .strip_prefix("worker ops on ")
            .unwrap_or_else(|| panic!("unexpected: {line}"));
        std::thread::spawn(move || for _ in lines {});
        WorkerProcess {
            child,
            metrics: format!("{ops}/metrics"),
        }
    }

    /// SIGKILL: no shutdown, no lease handed back.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The sum of every sample whose line starts with `prefix` (a metric name, optionally with
/// the first labels) in a Prometheus text exposition.
pub fn metric(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A DER certificate as PEM.
pub fn pem_cert(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: String = b64
        .as_bytes()
        .chunks(64)
        .map(|c| format!("{}\n", String::from_utf8_lossy(c)))
        .collect();
    format!("-----BEGIN CERTIFICATE-----\n{lines}-----END CERTIFICATE-----\n")
}

/// An EST enrollment of `csr` for `device` under the `iot` profile.
pub fn enroll_req(device: pb::DeviceIdentity, csr: Vec<u8>) -> pb::EnrollRequest {
    pb::EnrollRequest {
        csr_der: csr,
        device: Some(device),
        protocol: pb::Protocol::Est as i32,
        profile: "iot".into(),
        current_certificate_der: Vec::new(),
    }
}

/// Asks for each device's name and enrolls it with a fresh CSR; returns (name, enrollment id).
pub async fn enroll(
    gw: &mut pb::enrollment_service_client::EnrollmentServiceClient<Channel>,
    devices: std::ops::Range<u32>,
) -> Vec<(String, String)> {
    let mut pending = Vec::new();
    for i in devices {
        let a = gw
            .get_assignment(pb::GetAssignmentRequest {
                device: Some(mac(i)),
                profile: "iot".into(),
                current_certificate_der: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(a.names.len(), 1, "{:?}", a.names);
        let (_, csr) = csr_for(&a.names);
        let e = gw
            .enroll(enroll_req(mac(i), csr))
            .await
            .unwrap()
            .into_inner()
            .enrollment
            .unwrap();
        pending.push((a.names[0].clone(), e.id));
    }
    pending
}

/// Waits (bounded) until every enrollment is issued; returns (name, chain) in order.
pub async fn wait_issued(
    gw: &mut pb::enrollment_service_client::EnrollmentServiceClient<Channel>,
    pending: &[(String, String)],
    within: Duration,
) -> Vec<(String, Vec<Vec<u8>>)> {
    let deadline = Instant::now() + within;
    let mut issued = Vec::new();
    for (name, id) in pending {
        loop {
            let e = gw
                .wait_enrollment(pb::WaitEnrollmentRequest {
                    id: id.clone(),
                    timeout_millis: 10_000,
                })
                .await
                .unwrap()
                .into_inner();
            if e.state == pb::EnrollmentState::Issued as i32 {
                issued.push((name.clone(), e.certificate_chain));
                break;
            }
            assert_ne!(
                e.state,
                pb::EnrollmentState::Failed as i32,
                "{name}: {}",
                e.failure_detail
            );
            assert!(
                Instant::now() < deadline,
                "{name} not issued in time: state {}",
                e.state
            );
        }
    }
    issued
}

/// (action, device, details) of the audit events whose action starts with `prefix`, read from
/// a `ragw dev` SQLite database.
pub fn audit_events(db: &Path, prefix: &str) -> Vec<(String, String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT action, device, details FROM audit_events WHERE action LIKE ?1 ORDER BY seq",
        )
        .unwrap();
    stmt.query_map([format!("{prefix}%")], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}
