//! The local ACME CA (`ragw run --target ca`) with real peers: certbot (dns-rfc2136) and lego
//! (rfc2136) obtain, renew and revoke certificates with dns-01 against a BIND primary updated
//! over RFC 2136 with a TSIG key; `openssl verify` checks every chain they receive and the CRL
//! lists what they revoked. A third test drives the RFC 9444 pre-authorization flow (which no
//! Debian client speaks) against the same BIND, and checks that device orders come back
//! `ready` without a challenge per device name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acme_support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use acme_support::{Bind, CaProcess, ZONE, assert_revoked_in_crl, have, openssl_verify, serial_of};
use ragw_acme_ca::client::{AcmeClient, make_csr};
use ragw_acme_ca::validate::dns01_value;

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

fn revoked_in_store(ca: &CaProcess, serial: &str) -> bool {
    let (ok, out) = ca.cli(&["ca", "list", "--format", "json", "--limit", "1000"]);
    assert!(ok, "ragw ca list: {out}");
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| v["serial"] == serial && v["revoked"] == true)
}

#[test]
fn certbot_obtains_renews_and_revokes() {
    if !(have("named") && have("certbot") && have("openssl") && have("curl")) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let bind = Bind::start(work.path());
    let ca = CaProcess::start(work.path(), bind.port, "");
    let cb = work.path().join("certbot");
    let ini = work.path().join("rfc2136.ini");
    std::fs::write(
        &ini,
        format!(
            "dns_rfc2136_server = 127.0.0.1\ndns_rfc2136_port = {}\ndns_rfc2136_name = {}.\n\
             dns_rfc2136_secret = {}\ndns_rfc2136_algorithm = HMAC-SHA256\n",
            bind.port, bind.key_name, bind.secret
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ini, std::fs::Permissions::from_mode(0o600)).unwrap();
    let name = format!("p3x8w1zq.{ZONE}");
    let certbot = |args: &[&str]| {
        let mut c = Command::new("certbot");
        c.args(args)
            .arg("--config-dir")
            .arg(cb.join("config"))
            .arg("--work-dir")
            .arg(cb.join("work"))
            .arg("--logs-dir")
            .arg(cb.join("logs"))
            .env("REQUESTS_CA_BUNDLE", &ca.root_pem);
        c
    };
    run(
        certbot(&[
            "certonly",
            "--non-interactive",
            "--agree-tos",
            "-m",
            "ops@example.test",
            "--no-eff-email",
            "--server",
            &ca.directory,
            "--authenticator",
            "dns-rfc2136",
            "--dns-rfc2136-propagation-seconds",
            "1",
            "--key-type",
            "ecdsa",
            "-d",
            &name,
        ])
        .arg("--dns-rfc2136-credentials")
        .arg(&ini),
        "certbot certonly",
    );
    let live = cb.join("config").join("live").join(&name);
    openssl_verify(
        &ca.root_pem,
        &live.join("chain.pem"),
        &live.join("cert.pem"),
    );
    openssl_verify(
        &ca.root_pem,
        &live.join("chain.pem"),
        &live.join("fullchain.pem"),
    );
    let first = serial_of(&live.join("cert.pem"));

    run(
        // Without a TTY certbot sleeps up to 8 minutes before renewing, unless told not to.
        &mut certbot(&[
            "renew",
            "--non-interactive",
            "--force-renewal",
            "--no-random-sleep-on-renew",
        ]),
        "certbot renew",
    );
    openssl_verify(
        &ca.root_pem,
        &live.join("chain.pem"),
        &live.join("cert.pem"),
    );
    let renewed = serial_of(&live.join("cert.pem"));
    assert_ne!(first, renewed, "renewal issued a new certificate");

    run(
        &mut certbot(&[
            "revoke",
            "--non-interactive",
            "--server",
            &ca.directory,
            "--reason",
            "keycompromise",
            "--no-delete-after-revoke",
            "--cert-path",
            live.join("cert.pem").to_str().unwrap(),
        ]),
        "certbot revoke",
    );
    assert!(
        revoked_in_store(&ca, &renewed),
        "ragw ca list shows the revocation"
    );
    let leaf = work.path().join("certbot-leaf.pem");
    std::fs::copy(live.join("cert.pem"), &leaf).unwrap();
    assert_revoked_in_crl(&ca, &live.join("chain.pem"), &leaf);
}

#[test]
fn lego_obtains_renews_and_revokes() {
    if !(have("named") && have("lego") && have("openssl") && have("curl")) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let bind = Bind::start(work.path());
    let ca = CaProcess::start(work.path(), bind.port, "");
    let path = work.path().join("lego");
    let name = format!("k7q2m9x4.{ZONE}");
    let lego = |args: &[&str]| {
        let mut c = Command::new("lego");
        c.args([
            "--accept-tos",
            "--email",
            "ops@example.test",
            "--server",
            &ca.directory,
            "--dns",
            "rfc2136",
            "--dns.resolvers",
            &format!("127.0.0.1:{}", bind.port),
            "--dns.disable-cp",
            "-d",
            &name,
        ])
        .arg("--path")
        .arg(&path)
        .args(args)
        .env("LEGO_CA_CERTIFICATES", &ca.root_pem)
        .env("RFC2136_NAMESERVER", format!("127.0.0.1:{}", bind.port))
        .env("RFC2136_TSIG_ALGORITHM", "hmac-sha256.")
        .env("RFC2136_TSIG_KEY", &bind.key_name)
        .env("RFC2136_TSIG_SECRET", &bind.secret)
        .env("RFC2136_PROPAGATION_TIMEOUT", "30")
        .env("RFC2136_POLLING_INTERVAL", "1");
        c
    };
    run(&mut lego(&["run"]), "lego run");
    let certs = path.join("certificates");
    let crt = certs.join(format!("{name}.crt"));
    let issuer = certs.join(format!("{name}.issuer.crt"));
    openssl_verify(&ca.root_pem, &issuer, &crt);
    let first = serial_of(&crt);

    run(
        &mut lego(&["renew", "--days", "90", "--no-random-sleep"]),
        "lego renew",
    );
    openssl_verify(&ca.root_pem, &issuer, &crt);
    let renewed = serial_of(&crt);
    assert_ne!(first, renewed, "renewal issued a new certificate");

    let leaf = work.path().join("lego-leaf.pem");
    std::fs::copy(&crt, &leaf).unwrap();
    run(
        &mut lego(&["revoke", "--reason", "4", "--keep"]),
        "lego revoke",
    );
    assert!(
        revoked_in_store(&ca, &renewed),
        "ragw ca list shows the revocation"
    );
    assert_revoked_in_crl(&ca, &issuer, &leaf);

    // The operator's view: the root, and a revocation by serial from the command line.
    let (ok, shown) = ca.cli(&["ca", "show", "--chain", "--text"]);
    assert!(ok && shown.contains("SHA-256"), "{shown}");
    let (ok, out) = ca.cli(&["ca", "revoke", &first, "--reason", "superseded"]);
    assert!(ok, "ragw ca revoke: {out}");
    assert!(revoked_in_store(&ca, &first));
    let (ok, out) = ca.cli(&["ca", "revoke", &first]);
    assert!(!ok && out.contains("already revoked"), "{out}");
}

/// RFC 9444 over real DNS: one dns-01 challenge for the parent domain (published in BIND with
/// nsupdate), then every device order is `ready` at once and costs newOrder + finalize +
/// download.
#[test]
fn preauthorized_parent_domain_over_bind() {
    if !(have("named") && have("nsupdate") && have("openssl")) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let bind = Bind::start(work.path());
    let ca = CaProcess::start(work.path(), bind.port, "");
    let root = std::fs::read_to_string(&ca.root_pem).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = AcmeClient::connect(&ca.directory, Some(&root))
            .await
            .unwrap();
        assert_eq!(c.dir.meta["subdomainAuthAllowed"], true);
        c.new_account(&[&format!("https://gw.{ZONE}")], None)
            .await
            .unwrap();
        let (authz_url, authz) = c.new_authz(ZONE, true).await.unwrap();
        assert_eq!(authz["subdomainAuthAllowed"], true);
        let (chall, token) = AcmeClient::challenge(&authz, "dns-01").unwrap();
        let value = dns01_value(&c.key_authorization(&token));
        bind.nsupdate(&format!("_acme-challenge.{ZONE}"), &value, true);
        c.respond(&chall).await.unwrap();
        let authz = c
            .poll(&authz_url, &["valid"], Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(authz["identifier"]["value"], ZONE);
        bind.nsupdate(&format!("_acme-challenge.{ZONE}"), &value, false);

        let posts_before = c.posts;
        for i in 0..10 {
            let name = format!("dev{i:02}x.{ZONE}");
            let (_, order) = c.new_order(&[("dns", &name, None)]).await.unwrap();
            assert_eq!(order["status"], "ready", "{order}");
            assert_eq!(order["authorizations"].as_array().unwrap().len(), 1);
            assert_eq!(order["authorizations"][0], authz_url.as_str());
            let (csr, _) = make_csr(std::slice::from_ref(&name), &[]).unwrap();
            let done = c
                .finalize(order["finalize"].as_str().unwrap(), &csr)
                .await
                .unwrap()
                .json();
            assert_eq!(done["status"], "valid", "{done}");
            let pem = c
                .download(done["certificate"].as_str().unwrap())
                .await
                .unwrap();
            let path = work.path().join(format!("{name}.pem"));
            std::fs::write(&path, &pem).unwrap();
            openssl_verify(&ca.root_pem, &path, &path);
        }
        assert_eq!(
            c.posts - posts_before,
            30,
            "three POSTs per device certificate"
        );

        // A name outside the pre-authorized parent still needs its own challenge.
        let outside = format!("x.ooo{ZONE}");
        let refused = c.new_order(&[("dns", &outside, None)]).await;
        assert!(refused.is_err(), "{outside} is outside the CA's domain");
    });
}
