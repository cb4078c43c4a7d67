//! Real EST peers against the gateway: curl + openssl (against `ragw run --target est`, the
//! binary as deployed) and strongSwan's `pki --est`. Each test skips loudly when its program
//! is missing, and fails instead when RAGW_REQUIRE_PEERS=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod est_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dev, ragw_bin};
use est_support::*;
use ragw_runtime::identity::Role;

/// Runs a program (bounded by coreutils `timeout`) off the async threads; returns (exit code,
/// stdout, stderr).
async fn run(dir: &Path, program: &str, args: &[&str]) -> (i32, Vec<u8>, String) {
    let dir = dir.to_path_buf();
    let mut cmd = vec!["120".to_string(), program.to_string()];
    cmd.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let out = Command::new("timeout")
            .args(&cmd)
            .current_dir(&dir)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[track_caller]
fn ok(r: &(i32, Vec<u8>, String), what: &str) -> String {
    assert_eq!(
        r.0,
        0,
        "{what} failed: stdout {:?} stderr {:?}",
        String::from_utf8_lossy(&r.1),
        r.2
    );
    String::from_utf8_lossy(&r.1).into_owned()
}

/// `ragw run --target est` as a child process, stopped when dropped.
struct EstProcess {
    child: Child,
    port: u16,
}

impl EstProcess {
    fn start(config: &Path, env: &[(&str, &str)]) -> EstProcess {
        let mut cmd = Command::new(ragw_bin());
        cmd.args(["run", "--target", "est", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("EST gateway on https://") {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("ragw run --target est did not report its address");
            }
        };
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        EstProcess { child, port }
    }
}

impl Drop for EstProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
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

fn write_config(dir: &Path, dev: &Dev, files: &PemFiles) -> PathBuf {
    let tls = dev.dir.join("tls");
    let config = format!(
        r#"[log]
level = "warn"

[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"

[est]
listen = "127.0.0.1:0"
ops_listen = "127.0.0.1:0"
registrar_url = "{grpc}"
registrar_tls_name = "localhost"
tls_cert = "{server_cert}"
tls_key = "{server_key}"
default_label = "iot"
cacerts = "{issuing}"

[est.enrollment]
wait_seconds = 10
retry_after_seconds = 2

[est.limits]
requests_per_second = 0

[est.labels.iot]
base64_line_length = 64

[est.labels.iot.basic]
identity_kind = "serial"

[est.labels.iot.client_cert]
trust_anchors = "{device_ca}"
identity = "subject:serialNumber"
"#,
        ca = tls.join("ca.pem").display(),
        cert = tls.join("gateway.pem").display(),
        key = tls.join("gateway.key").display(),
        grpc = dev.grpc,
        server_cert = files.server_cert.display(),
        server_key = files.server_key.display(),
        issuing = files.issuing.display(),
        device_ca = files.device_ca.display(),
    );
    let path = dir.join("est.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// POSTs with curl until the answer is not 202; returns the last status.
async fn curl_enroll(dir: &Path, args: &[&str], out: &str) -> String {
    for _ in 0..30 {
        let mut all = vec!["-sS", "-o", out, "-w", "%{http_code}"];
        all.extend_from_slice(args);
        let r = run(dir, "curl", &all).await;
        let status = ok(&r, "curl");
        if status != "202" {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    "202".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_openssl_against_ragw_run_target_est() {
    if !have_program("curl", "curl") || !have_program("openssl", "openssl") {
        return;
    }
    let dev = Dev::start(&["--no-worker"]);
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let pki = EstPki::new();
    let files = pki.write_files(dir);
    let _issuer = TestIssuer::spawn(dev.channel(Role::Worker).await, pki.issuing.clone());
    let config = write_config(dir, &dev, &files);
    // The secret comes from the environment, as it would in a Kubernetes Secret.
    let est = EstProcess::start(
        &config,
        &[("RAGW_EST__LABELS__IOT__BASIC__BOOTSTRAP_SECRET", BOOTSTRAP)],
    );
    let base = format!("https://localhost:{}/.well-known/est", est.port);
    let ca = files.server_ca.to_str().unwrap().to_string();
    let user = format!("sn-curl:{BOOTSTRAP}");

    // cacerts → openssl pkcs7 (the label wraps base64 at 64 columns).
    ok(
        &run(
            dir,
            "curl",
            &[
                "-sS",
                "--fail",
                "--cacert",
                &ca,
                "-o",
                "cacerts.b64",
                &format!("{base}/cacerts"),
            ],
        )
        .await,
        "curl cacerts",
    );
    ok(
        &run(
            dir,
            "openssl",
            &["base64", "-d", "-in", "cacerts.b64", "-out", "cacerts.der"],
        )
        .await,
        "base64",
    );
    let printed = ok(
        &run(
            dir,
            "openssl",
            &[
                "pkcs7",
                "-inform",
                "DER",
                "-in",
                "cacerts.der",
                "-print_certs",
            ],
        )
        .await,
        "openssl pkcs7",
    );
    assert!(printed.contains("ragw test issuing CA"), "{printed}");

    // csrattrs → openssl asn1parse.
    ok(
        &run(
            dir,
            "curl",
            &[
                "-sS",
                "--fail",
                "--cacert",
                &ca,
                "--user",
                &user,
                "-o",
                "attrs.b64",
                &format!("{base}/csrattrs"),
            ],
        )
        .await,
        "curl csrattrs",
    );
    ok(
        &run(
            dir,
            "openssl",
            &["base64", "-d", "-in", "attrs.b64", "-out", "attrs.der"],
        )
        .await,
        "base64",
    );
    let parsed = ok(
        &run(
            dir,
            "openssl",
            &["asn1parse", "-inform", "DER", "-in", "attrs.der"],
        )
        .await,
        "openssl asn1parse",
    );
    for needle in [
        "id-ecPublicKey",
        "prime256v1",
        "Extension Request",
        "ecdsa-with-SHA256",
    ] {
        assert!(parsed.contains(needle), "{needle} missing from {parsed}");
    }
    let der = std::fs::read(dir.join("attrs.der")).unwrap();
    let names = ragw_pki::csrattrs::requested_dns_names(
        &ragw_pki::csrattrs::parse_csr_attrs(&der).unwrap(),
    )
    .unwrap();
    let name = names[0].clone();

    // openssl req → curl simpleenroll → openssl pkcs7.
    let csr = |key: &str, out: &str| {
        vec![
            "req".to_string(),
            "-new".into(),
            "-newkey".into(),
            "ec".into(),
            "-pkeyopt".into(),
            "ec_paramgen_curve:P-256".into(),
            "-nodes".into(),
            "-keyout".into(),
            key.into(),
            "-subj".into(),
            format!("/CN={name}"),
            "-addext".into(),
            format!("subjectAltName=DNS:{name}"),
            "-outform".into(),
            "DER".into(),
            "-out".into(),
            out.into(),
        ]
    };
    let args = csr("key.pem", "req.der");
    ok(
        &run(
            dir,
            "openssl",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await,
        "openssl req",
    );
    ok(
        &run(
            dir,
            "openssl",
            &["base64", "-in", "req.der", "-out", "req.b64"],
        )
        .await,
        "base64",
    );
    let url = format!("{base}/simpleenroll");
    let status = curl_enroll(
        dir,
        &[
            "--cacert",
            &ca,
            "--user",
            &user,
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            "@req.b64",
            &url,
        ],
        "cert.b64",
    )
    .await;
    assert_eq!(
        status,
        "200",
        "{}",
        std::fs::read_to_string(dir.join("cert.b64")).unwrap_or_default()
    );
    ok(
        &run(
            dir,
            "openssl",
            &["base64", "-d", "-in", "cert.b64", "-out", "cert.p7"],
        )
        .await,
        "base64",
    );
    ok(
        &run(
            dir,
            "openssl",
            &[
                "pkcs7",
                "-inform",
                "DER",
                "-in",
                "cert.p7",
                "-print_certs",
                "-out",
                "cert.pem",
            ],
        )
        .await,
        "openssl pkcs7",
    );
    let san = ok(
        &run(
            dir,
            "openssl",
            &[
                "x509",
                "-in",
                "cert.pem",
                "-noout",
                "-ext",
                "subjectAltName",
            ],
        )
        .await,
        "x509",
    );
    assert!(san.contains(&format!("DNS:{name}")), "{san}");
    let cert_pub = ok(
        &run(
            dir,
            "openssl",
            &["x509", "-in", "cert.pem", "-noout", "-pubkey"],
        )
        .await,
        "x509 pubkey",
    );
    let key_pub = ok(
        &run(dir, "openssl", &["pkey", "-in", "key.pem", "-pubout"]).await,
        "pkey",
    );
    assert_eq!(cert_pub, key_pub);

    // simplereenroll with the issued certificate as TLS client certificate and a new key.
    let args = csr("key2.pem", "req2.der");
    ok(
        &run(
            dir,
            "openssl",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await,
        "openssl req",
    );
    ok(
        &run(
            dir,
            "openssl",
            &["base64", "-A", "-in", "req2.der", "-out", "req2.b64"],
        )
        .await,
        "base64",
    );
    let url = format!("{base}/simplereenroll");
    let status = curl_enroll(
        dir,
        &[
            "--cacert",
            &ca,
            "--cert",
            "cert.pem",
            "--key",
            "key.pem",
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            "@req2.b64",
            &url,
        ],
        "cert2.b64",
    )
    .await;
    assert_eq!(
        status,
        "200",
        "{}",
        std::fs::read_to_string(dir.join("cert2.b64")).unwrap_or_default()
    );
    ok(
        &run(
            dir,
            "openssl",
            // It posted one line (-A), so it gets one line back and decodes with -A too.
            &["base64", "-d", "-A", "-in", "cert2.b64", "-out", "cert2.p7"],
        )
        .await,
        "base64",
    );
    ok(
        &run(
            dir,
            "openssl",
            &[
                "pkcs7",
                "-inform",
                "DER",
                "-in",
                "cert2.p7",
                "-print_certs",
                "-out",
                "cert2.pem",
            ],
        )
        .await,
        "openssl pkcs7",
    );
    let cert2_pub = ok(
        &run(
            dir,
            "openssl",
            &["x509", "-in", "cert2.pem", "-noout", "-pubkey"],
        )
        .await,
        "x509",
    );
    let key2_pub = ok(
        &run(dir, "openssl", &["pkey", "-in", "key2.pem", "-pubout"]).await,
        "pkey",
    );
    assert_eq!(cert2_pub, key2_pub);

    // An IDevID via curl --cert; wrong credentials get a 401 with the Basic challenge.
    std::fs::write(dir.join("idevid.pem"), pem(&pki.idevid_der, "CERTIFICATE")).unwrap();
    std::fs::write(dir.join("idevid.key"), pki.idevid_key.serialize_pem()).unwrap();
    ok(
        &run(
            dir,
            "curl",
            &[
                "-sS",
                "--fail",
                "--cacert",
                &ca,
                "--cert",
                "idevid.pem",
                "--key",
                "idevid.key",
                "-o",
                "idevid-attrs.b64",
                &format!("{base}/csrattrs"),
            ],
        )
        .await,
        "curl csrattrs with an IDevID",
    );
    let r = run(
        dir,
        "curl",
        &[
            "-sS",
            "--cacert",
            &ca,
            "--user",
            "sn-curl:wrong",
            "-D",
            "h.txt",
            "-o",
            "body.txt",
            "-w",
            "%{http_code}",
            &format!("{base}/csrattrs"),
        ],
    )
    .await;
    assert_eq!(ok(&r, "curl"), "401");
    let head = std::fs::read_to_string(dir.join("h.txt"))
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        head.contains("www-authenticate: basic realm=\"ragw est iot\""),
        "{head}"
    );
    let body = std::fs::read_to_string(dir.join("body.txt")).unwrap();
    assert!(body.contains("wrong user name or password"), "{body}");
}

fn pem(der: &[u8], label: &str) -> String {
    let b = String::from_utf8(b64(der)).unwrap();
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strongswan_pki_est_enroll_and_reenroll() {
    if !have_program(
        "pki",
        "strongswan-pki libstrongswan-standard-plugins libstrongswan-extra-plugins",
    ) {
        return;
    }
    let dev = Dev::start(&["--no-worker"]);
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let pki = EstPki::new();
    let files = pki.write_files(dir);
    let _issuer = TestIssuer::spawn(dev.channel(Role::Worker).await, pki.issuing.clone());
    // strongSwan's `pki --est` decodes only unwrapped base64 ("could not parse pkcs7
    // signed-data container" on CRLF lines); it posts its CSR on one line and so gets its
    // certificate on one line from the default (wrapping) labels.
    let config = est_config(&pki);
    assert!(config.labels.iter().all(|l| l.base64_line_length == 64));
    let gw = Gateway::start(config, dev.channel(Role::Gateway).await, &pki).await;
    let client = RawClient::new(&gw, &pki);
    let names = csrattrs_names(
        &client
            .get("/.well-known/est/csrattrs", &basic("sn-swan", BOOTSTRAP))
            .await,
    );
    let name = names[0].clone();
    let ca = files.server_ca.to_str().unwrap().to_string();
    let url = gw.url();

    let gen_req = |key: &'static str, req: &'static str| {
        let name = name.clone();
        async move {
            let k = run(
                dir,
                "pki",
                &[
                    "--gen",
                    "--type",
                    "ecdsa",
                    "--size",
                    "256",
                    "--outform",
                    "der",
                ],
            )
            .await;
            ok(&k, "pki --gen");
            std::fs::write(dir.join(key), &k.1).unwrap();
            let dn = format!("CN={name}");
            let r = run(
                dir,
                "pki",
                &[
                    "--req",
                    "--type",
                    "priv",
                    "--in",
                    key,
                    "--dn",
                    &dn,
                    "--san",
                    &name,
                    "--outform",
                    "der",
                ],
            )
            .await;
            ok(&r, "pki --req");
            std::fs::write(dir.join(req), &r.1).unwrap();
            let p = run(dir, "pki", &["--pub", "--in", key, "--outform", "der"]).await;
            ok(&p, "pki --pub");
            p.1
        }
    };

    let spki = gen_req("key.der", "req.der").await;
    let userpass = format!("sn-swan:{BOOTSTRAP}");
    let r = run(
        dir,
        "pki",
        &[
            "--est",
            "--url",
            &url,
            "--in",
            "req.der",
            "--cacert",
            &ca,
            "--userpass",
            &userpass,
            "--outform",
            "pem",
            "--interval",
            "1",
            "--maxpolltime",
            "60",
        ],
    )
    .await;
    let cert_pem = ok(&r, "pki --est");
    let cert = first_cert(&cert_pem);
    assert_eq!(cert_spki(&cert), spki);
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();

    let spki2 = gen_req("key2.der", "req2.der").await;
    let r = run(
        dir,
        "pki",
        &[
            "--est",
            "--url",
            &url,
            "--in",
            "req2.der",
            "--cacert",
            &ca,
            "--cert",
            "cert.pem",
            "--key",
            "key.der",
            "--outform",
            "pem",
            "--interval",
            "1",
            "--maxpolltime",
            "60",
        ],
    )
    .await;
    let cert2 = first_cert(&ok(&r, "pki --est re-enroll"));
    assert_eq!(cert_spki(&cert2), spki2);
    assert_ne!(cert2, cert);

    // A wrong secret fails, and says so.
    let r = run(
        dir,
        "pki",
        &[
            "--est",
            "--url",
            &url,
            "--in",
            "req.der",
            "--cacert",
            &ca,
            "--userpass",
            "sn-swan:wrong",
            "--outform",
            "pem",
        ],
    )
    .await;
    assert_ne!(r.0, 0, "pki --est accepted a wrong password");
    gw.shutdown().await;
}

fn first_cert(pem_text: &str) -> Vec<u8> {
    let certs = ragw_est::config::parse_pem_certs(pem_text)
        .unwrap_or_else(|e| panic!("no certificate in {pem_text:?}: {e}"));
    certs[0].clone()
}
