//! Helpers for the local ACME CA's interoperability tests: a BIND primary for the device zone
//! (RFC 2136 updates with a TSIG key) on a free port, and `ragw run --target ca` as a child
//! process. Both are killed when dropped.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ZONE: &str = "devices.example.test";

/// `true` when `program` can be run. Missing: a LOUD skip, or a failure under
/// `RAGW_REQUIRE_PEERS=1`.
pub fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        let msg = format!("{program} is not installed: SKIPPING this interoperability test");
        if std::env::var("RAGW_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{msg}, but RAGW_REQUIRE_PEERS=1 requires it");
        }
        eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
    }
    found
}

/// A port free on 127.0.0.1 for both UDP and TCP (DNS needs both).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

pub struct Bind {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub key_file: PathBuf,
    pub key_name: String,
    pub secret: String,
}

impl Bind {
    pub fn start(work: &Path) -> Bind {
        let dir = work.join("dns");
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("acme-update.key");
        let out = Command::new("tsig-keygen")
            .args(["-a", "hmac-sha256", "acme-update"])
            .output()
            .expect("tsig-keygen");
        assert!(out.status.success());
        let key_text = String::from_utf8(out.stdout).unwrap();
        std::fs::write(&key_file, &key_text).unwrap();
        let secret = key_text
            .split("secret \"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_string();
        let port = free_port();
        let d = dir.display();
        std::fs::write(
            dir.join("named.conf"),
            format!(
                "include \"{d}/acme-update.key\";\n\
                 options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; \
                 listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; \
                 recursion no; allow-query {{ 127.0.0.1; }}; dnssec-validation no; }};\n\
                 controls {{ }};\n\
                 zone \"{ZONE}\" {{ type primary; file \"{d}/db.zone\"; \
                 update-policy {{ grant acme-update. zonesub TXT; }}; }};\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("db.zone"),
            format!(
                "$TTL 60\n@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60\n\
                 @ IN NS ns1.{ZONE}.\nns1 IN A 127.0.0.1\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\n"
            ),
        )
        .unwrap();
        let mut cmd = Command::new("named");
        cmd.arg("-f")
            .arg("-c")
            .arg(dir.join("named.conf"))
            .arg("-L")
            .arg(dir.join("named.log"));
        // named drops to the bind user when started as root; that user must be able to reach
        // and write the zone directory (journals of dynamic updates).
        if is_root() && user_exists("bind") {
            use std::os::unix::fs::PermissionsExt;
            let mut p = dir.as_path();
            while let Some(parent) = p.parent() {
                if parent == Path::new("/") || parent == Path::new("/tmp") {
                    break;
                }
                let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755));
                p = parent;
            }
            let _ = Command::new("chown")
                .args(["-R", "bind:bind"])
                .arg(&dir)
                .status();
            cmd.args(["-u", "bind"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start named");
        let bind = Bind {
            child,
            port,
            key_file,
            key_name: "acme-update".into(),
            secret,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let out = Command::new("dig")
                .args(["+short", "+time=1", "+tries=1", "@127.0.0.1", "-p"])
                .arg(port.to_string())
                .args(["SOA", ZONE])
                .output()
                .unwrap();
            if out.status.success() && !out.stdout.is_empty() {
                return bind;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(bind.dir.join("named.log")).unwrap_or_default();
        panic!("named did not come up on port {port}:\n{log}");
    }

    /// Adds (or with `add == false` removes) a TXT record through RFC 2136 with the TSIG key.
    pub fn nsupdate(&self, name: &str, value: &str, add: bool) {
        let verb = if add {
            format!("update add {name}. 60 TXT \"{value}\"")
        } else {
            format!("update delete {name}. TXT \"{value}\"")
        };
        let script = format!(
            "server 127.0.0.1 {}\nzone {ZONE}\n{verb}\nsend\n",
            self.port
        );
        let mut child = Command::new("nsupdate")
            .arg("-k")
            .arg(&self.key_file)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nsupdate failed");
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn user_exists(user: &str) -> bool {
    Command::new("id")
        .arg(user)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `ragw run --target ca` on a free port, trusting `dns_port` for dns-01.
pub struct CaProcess {
    child: Child,
    pub directory: String,
    pub root_pem: PathBuf,
    pub config: PathBuf,
}

impl CaProcess {
    pub fn start(work: &Path, dns_port: u16, extra_ca: &str) -> CaProcess {
        let config = work.join("ragw.toml");
        std::fs::write(
            &config,
            format!(
                "[log]\nlevel = \"warn\"\n\n[store]\nbackend = \"sqlite\"\npath = \"{db}\"\n\n\
                 [ca]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{ca}\"\n\
                 domain_suffixes = [\"{ZONE}\"]\ndns_resolver = \"127.0.0.1:{dns_port}\"\n\
                 dns_timeout_ms = 3000\n{extra_ca}\n",
                db = work.join("ragw.db").display(),
                ca = work.join("ca").display(),
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ragw"))
            .args(["run", "--target", "ca", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ragw run --target ca");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(d) = line.strip_prefix("directory: ") {
                    let _ = tx.send(d.to_string());
                }
            }
        });
        let directory = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(d) => d,
            Err(_) => {
                let _ = child.kill();
                panic!("ragw run --target ca did not print its directory URL");
            }
        };
        CaProcess {
            child,
            directory,
            root_pem: work.join("ca").join("root.pem"),
            config,
        }
    }

    /// Runs `ragw <args> --config <this CA's config>`.
    pub fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_ragw"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for CaProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl verify` of `leaf` against `root` with the untrusted intermediates in `chain`.
pub fn openssl_verify(root: &Path, chain: &Path, leaf: &Path) {
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(root)
        .arg("-untrusted")
        .arg(chain)
        .arg(leaf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify {}: {}{}",
        leaf.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The serial of a PEM certificate, lower-case hex without separators.
pub fn serial_of(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

/// Fetches the CA's CRL and checks with `openssl verify -crl_check` that `leaf` is revoked.
pub fn assert_revoked_in_crl(ca: &CaProcess, chain: &Path, leaf: &Path) {
    let work = leaf.parent().unwrap();
    let der = work.join("crl.der");
    let url = ca.directory.replace("/directory", "/crl");
    let ok = Command::new("curl")
        .args(["-sSf", "--cacert"])
        .arg(&ca.root_pem)
        .arg("-o")
        .arg(&der)
        .arg(&url)
        .status()
        .unwrap()
        .success();
    assert!(ok, "fetching {url}");
    let pem = work.join("crl.pem");
    assert!(
        Command::new("openssl")
            .args(["crl", "-inform", "DER", "-in"])
            .arg(&der)
            .arg("-out")
            .arg(&pem)
            .status()
            .unwrap()
            .success()
    );
    let out = Command::new("openssl")
        .args(["verify", "-crl_check", "-CAfile"])
        .arg(&ca.root_pem)
        .arg("-untrusted")
        .arg(chain)
        .arg("-CRLfile")
        .arg(&pem)
        .arg(leaf)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() && text.contains("revoked"),
        "expected the CRL to revoke {}: {text}",
        leaf.display()
    );
}
