//! The README's quick start, run exactly as written against `ragw dev` started as a separate
//! process (with its worker and the local CA issuing); manual approval through `ragw admin`;
//! a restart that keeps everything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod peers;

use std::path::Path;
use std::process::Command;

use common::Dev;

/// The fenced block after `<!-- quickstart:NAME -->` in README.md.
fn readme_block(name: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let marker = format!("<!-- quickstart:{name} -->");
    let after = &readme[readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README has no {marker}"))..];
    let start = after.find("```sh\n").unwrap() + "```sh\n".len();
    let end = after[start..].find("```").unwrap();
    after[start..start + end].to_string()
}

/// Runs a README block in `work` with DATA and EST pointing at this `ragw dev`.
fn run_block(dev: &Dev, work: &Path, block: &str) -> (bool, String) {
    let est = dev.endpoint("est");
    let script = block.replacen(
        "DATA=./ragw-data EST=https://127.0.0.1:8443",
        &format!("DATA={} EST={est}", dev.dir.display()),
        1,
    );
    assert_ne!(
        script, block,
        "the block no longer starts with the DATA/EST line"
    );
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(&script)
        .current_dir(work)
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

fn have_peers(programs: &[(&str, &str)]) -> bool {
    programs
        .iter()
        .all(|(p, pkg)| peers::find_program(p, pkg).is_some())
}

#[test]
fn readme_quick_start_with_curl_openssl_and_strongswan() {
    if !have_peers(&[
        ("curl", "curl"),
        ("openssl", "openssl"),
        ("pki", "strongswan-pki"),
    ]) {
        return;
    }
    let dev = Dev::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let (ok, out) = run_block(&dev, work.path(), &readme_block("curl"));
    assert!(ok, "curl + openssl quick start failed:\n{out}");
    assert_eq!(out.matches(": OK").count(), 2, "{out}");
    let (ok, out) = run_block(&dev, work.path(), &readme_block("strongswan"));
    assert!(ok, "strongSwan quick start failed:\n{out}");
    assert_eq!(out.matches(": OK").count(), 2, "{out}");
    // The assigned name is the one in the certificate, and it reveals nothing of the device.
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(work.path().join("device2.pem"))
        .output()
        .unwrap();
    let san = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        san.contains(".devices.ragw.test") && !san.contains("pledge"),
        "{san}"
    );
}

fn curl_enroll(dev: &Dev, work: &Path) -> (String, String) {
    let est = dev.endpoint("est");
    let root = dev.dir.join("ca/root.pem");
    let pw = std::fs::read_to_string(dev.dir.join("dev-password")).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-i", "--cacert"])
        .arg(&root)
        .args(["--user", &format!("pledge-009:{}", pw.trim())])
        .args([
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            "@device.b64",
        ])
        .arg(format!("{est}/.well-known/est/simpleenroll"))
        .current_dir(work)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text.lines().next().unwrap_or_default().to_string();
    (status, text)
}

#[test]
fn manual_approval_then_restart_keeps_everything() {
    if !have_peers(&[("curl", "curl"), ("openssl", "openssl")]) {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let work = temp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // An [est] section tunes the dev gateway (here the Retry-After while approval is pending).
    let config = temp.path().join("dev.toml");
    std::fs::write(
        &config,
        "[est.enrollment]\napproval_retry_after_seconds = 77\n",
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let mut dev = Dev::start_in(&dir, &["--approve", "manual", "--config", &config_arg]);
    let est = dev.endpoint("est");
    let root = dir.join("ca/root.pem");
    let pw = std::fs::read_to_string(dir.join("dev-password")).unwrap();
    let prepare = format!(
        "NAME=$(curl -sS --fail --cacert {root} --user pledge-009:{pw} {est}/.well-known/est/csrattrs \
         | openssl base64 -d | grep -aoE '[a-z0-9]+\\.devices\\.ragw\\.test') && echo $NAME > name && \
         openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout device.key \
         -subj \"/CN=$NAME\" -addext \"subjectAltName=DNS:$NAME\" -outform DER -out device.csr 2>/dev/null && \
         openssl base64 -in device.csr -out device.b64",
        root = root.display(),
        pw = pw.trim(),
    );
    let ok = Command::new("bash")
        .arg("-c")
        .arg(&prepare)
        .current_dir(&work)
        .status()
        .unwrap();
    assert!(ok.success());
    let name = std::fs::read_to_string(work.join("name"))
        .unwrap()
        .trim()
        .to_string();

    // The pledge waits for an operator.
    let (status, text) = curl_enroll(&dev, &work);
    assert!(status.contains("202"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 77"),
        "{text}"
    );
    let (code, out, err) = dev.cli(&["admin", "pending"]);
    assert_eq!(code, 0, "{err}");
    let id = out
        .lines()
        .find(|l| l.contains("serial:pledge-009"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no pending enrollment for pledge-009:\n{out}"))
        .to_string();
    let (code, _, err) = dev.cli(&["admin", "approve", &id, "--reason", "known pledge"]);
    assert_eq!(code, 0, "{err}");
    // The retry with the same CSR gets the certificate (the worker may still be ordering).
    let mut tries = 0;
    let text = loop {
        let (status, text) = curl_enroll(&dev, &work);
        if status.contains("200") {
            break text;
        }
        assert!(status.contains("202"), "{text}");
        tries += 1;
        assert!(tries < 60, "never issued: {text}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(text.contains("application/pkcs7-mime"), "{text}");

    // Restart with the same directory: same root, same name for the device, approval kept.
    let root_before = std::fs::read_to_string(&root).unwrap();
    dev.stop();
    let dev = Dev::start_in(&dir, &["--approve", "manual"]);
    assert_eq!(std::fs::read_to_string(&root).unwrap(), root_before);
    let (code, out, _) = dev.cli(&["admin", "devices"]);
    assert_eq!(code, 0);
    let line = out
        .lines()
        .find(|l| l.contains("serial:pledge-009"))
        .unwrap_or_default();
    assert!(line.contains(&name) && line.contains("yes"), "{out}");
    let (code, out, _) = dev.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

/// Password guessing against `ragw dev` as shipped: a user name that just failed waits (429
/// with Retry-After, whatever password follows), and the ops endpoint counts the passwords
/// left unchecked under the EST component's prefix.
#[test]
fn guessing_one_user_name_is_slowed_and_counted() {
    if !have_peers(&[("curl", "curl")]) {
        return;
    }
    // A long first delay, so that the retry surely falls inside it on a slow machine too.
    let temp = tempfile::tempdir().unwrap();
    let config = temp.path().join("dev.toml");
    std::fs::write(&config, "[est.limits]\nuser_failure_delay_seconds = 120\n").unwrap();
    let dev = Dev::start(&["--config", &config.display().to_string()]);
    let est = dev.endpoint("est");
    let root = dev.dir.join("ca/root.pem");
    let guess = |password: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-i", "--cacert"])
            .arg(&root)
            .args(["--user", &format!("pledge-guessed:{password}")])
            .arg(format!("{est}/.well-known/est/csrattrs"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let first = guess("wrong-1");
    assert!(first.starts_with("HTTP/1.1 401"), "{first}");
    assert!(first.contains("\r\nWWW-Authenticate: Basic"), "{first}");
    let pw = std::fs::read_to_string(dev.dir.join("dev-password")).unwrap();
    let second = guess(pw.trim());
    assert!(second.starts_with("HTTP/1.1 429"), "{second}");
    assert!(second.contains("\r\nRetry-After: "), "{second}");
    let (_, metrics) = common::http_get(&dev.endpoint("metrics"));
    let unchecked = metrics
        .lines()
        .find(|l| l.starts_with("ragw_est_passwords_not_checked_total{reason=\"user_backoff\"}"))
        .unwrap_or_else(|| panic!("no user_backoff counter in:\n{metrics}"));
    assert!(!unchecked.ends_with(" 0"), "{unchecked}");
}
