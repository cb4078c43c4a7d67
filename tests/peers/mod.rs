//! Real peers for end-to-end tests: find the program (skip loudly, or fail under
//! `RAGW_REQUIRE_PEERS=1`), run BIND and Pebble on free ports, kill them on drop.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn peers_required() -> bool {
    std::env::var("RAGW_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// The path of `program`, or `None` after a loud notice; panics when peers are required.
pub fn find_program(program: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    if let Some(found) = dirs.iter().map(|d| d.join(program)).find(|p| p.is_file()) {
        return Some(found);
    }
    if peers_required() {
        panic!("RAGW_REQUIRE_PEERS=1 but `{program}` is not installed (apt-get install {package})");
    }
    use std::io::Write;
    let bar = "!".repeat(78);
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n{bar}\n!!! SKIPPED: `{program}` is not installed (apt-get install {package}).\n\
         !!! This interoperability test did NOT run. Set RAGW_REQUIRE_PEERS=1 to fail instead.\n{bar}\n"
    );
    None
}

/// A port free for UDP and TCP on 127.0.0.1 right now, for programs that cannot report the
/// port they bound.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

pub fn wait_for_tcp(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (and reaped) on drop; its log is printed when a test fails.
pub struct KillOnDrop {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ----\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

pub fn spawn_logged(mut cmd: Command, name: &str, log: &Path) -> KillOnDrop {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    KillOnDrop {
        child: cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}")),
        name: name.to_string(),
        log: log.to_path_buf(),
    }
}

/// BIND primary for `zone` on a free port, accepting TXT updates signed with a fresh TSIG key.
pub struct Bind {
    pub port: u16,
    pub key_file: PathBuf,
    pub zone: String,
    _named: KillOnDrop,
}

impl Bind {
    pub fn start(dir: &Path, zone: &str) -> Option<Bind> {
        let named = find_program("named", "bind9")?;
        let keygen = find_program("tsig-keygen", "bind9-utils")?;
        std::fs::create_dir_all(dir).unwrap();
        let key_file = dir.join("update.key");
        let key = Command::new(keygen)
            .args(["-a", "hmac-sha256", "acme-update"])
            .output()
            .unwrap();
        assert!(key.status.success());
        std::fs::write(&key_file, &key.stdout).unwrap();
        let port = free_port();
        let d = dir.display();
        std::fs::write(
            dir.join("named.conf"),
            format!(
                r#"include "{d}/update.key";
options {{ directory "{d}"; pid-file "{d}/named.pid"; listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }}; recursion no; allow-query {{ 127.0.0.1; }}; dnssec-validation no; }};
controls {{ }};
zone "{zone}" {{ type primary; file "{d}/db.zone"; update-policy {{ grant acme-update. zonesub TXT; }}; }};
"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("db.zone"),
            format!(
                "$TTL 60\n@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 3600 600 86400 60\n  IN NS ns1.{zone}.\nns1 IN A 127.0.0.1\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\n"
            ),
        )
        .unwrap();
        let mut cmd = Command::new(named);
        cmd.arg("-g").arg("-c").arg(dir.join("named.conf"));
        // As root BIND would switch to the bind user, which cannot read a root-only temp dir.
        let process = spawn_logged(cmd, "named", &dir.join("named.log"));
        wait_for_tcp(port, "named");
        Some(Bind {
            port,
            key_file,
            zone: zone.to_string(),
            _named: process,
        })
    }
}

/// Pebble (the ACME test CA) on free ports, validating dns-01 against `dns_port`.
pub struct Pebble {
    pub directory: String,
    pub management: String,
    /// CA of Pebble's own HTTPS listener (not of the certificates it issues).
    pub tls_ca: PathBuf,
    _pebble: KillOnDrop,
}

impl Pebble {
    pub fn start(dir: &Path, dns_port: u16) -> Option<Pebble> {
        let pebble = find_program("pebble", "pebble")?;
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pebble test listener CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("listener.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("listener.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("listener-ca.pem"), ca.pem()).unwrap();
        let (port, mport, http_port, tls_port) =
            (free_port(), free_port(), free_port(), free_port());
        let d = dir.display();
        std::fs::write(
            dir.join("pebble.json"),
            format!(
                r#"{{"pebble": {{"listenAddress": "127.0.0.1:{port}", "managementListenAddress": "127.0.0.1:{mport}",
  "certificate": "{d}/listener.pem", "privateKey": "{d}/listener.key", "httpPort": {http_port}, "tlsPort": {tls_port},
  "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#
            ),
        )
        .unwrap();
        let mut cmd = Command::new(pebble);
        cmd.arg("-config")
            .arg(dir.join("pebble.json"))
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{dns_port}"))
            .env("PEBBLE_VA_NOSLEEP", "1");
        let process = spawn_logged(cmd, "pebble", &dir.join("pebble.log"));
        wait_for_tcp(port, "pebble");
        Some(Pebble {
            directory: format!("https://127.0.0.1:{port}/dir"),
            management: format!("https://127.0.0.1:{mport}"),
            tls_ca: dir.join("listener-ca.pem"),
            _pebble: process,
        })
    }
}

/// `openssl verify` of a leaf against a trust anchor and intermediates (all PEM files).
pub fn openssl_verify(root: &Path, intermediates: Option<&Path>, leaf: &Path) -> (bool, String) {
    let Some(openssl) = find_program("openssl", "openssl") else {
        return (true, "openssl missing".into());
    };
    let mut cmd = Command::new(openssl);
    cmd.arg("verify").arg("-CAfile").arg(root);
    if let Some(i) = intermediates {
        cmd.arg("-untrusted").arg(i);
    }
    let out = cmd.arg(leaf).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
