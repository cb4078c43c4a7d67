//! A CA on a free port, backed by SQLite (or PostgreSQL), with an in-memory DNS responder as
//! its resolver.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ragw_acme_ca::client::{AcmeClient, make_csr};
use ragw_acme_ca::dns_responder::DnsResponder;
use ragw_acme_ca::validate::dns01_value;
use ragw_acme_ca::{Ca, CaConfig};
use ragw_store::Store;
use serde_json::Value;
use tokio::sync::oneshot;

pub const DOMAIN: &str = "devices.example.test";

pub struct TestCa {
    pub ca: Arc<Ca>,
    pub store: Arc<dyn Store>,
    pub dns: DnsResponder,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestCa {
    pub async fn start() -> TestCa {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut CaConfig)) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let store = ragw_store::open(&ragw_store::StoreConfig::Sqlite {
            path: dir.path().join("ragw.db"),
        })
        .await
        .unwrap();
        Self::start_on(store, dir, tweak).await
    }

    pub async fn start_on(
        store: Arc<dyn Store>,
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut CaConfig),
    ) -> TestCa {
        let dns = DnsResponder::start("127.0.0.1".parse().unwrap())
            .await
            .unwrap();
        let mut cfg = CaConfig::new(dir.path().join("ca"), vec![DOMAIN.into()], dns.addr());
        cfg.dns_timeout_ms = 2000;
        // The tests exercise `.local` and IP identifiers; both are off in a default CA.
        cfg.allow_local = true;
        cfg.allow_ip = true;
        tweak(&mut cfg);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ca = Arc::new(
            Ca::open(cfg, store.clone(), listener.local_addr().unwrap())
                .await
                .unwrap(),
        );
        let (tx, rx) = oneshot::channel::<()>();
        let serving = ca.clone();
        let task = tokio::spawn(async move {
            ragw_acme_ca::serve_ca(serving, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestCa {
            ca,
            store,
            dns,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> AcmeClient {
        AcmeClient::connect(&self.ca.directory_url(), Some(self.ca.root_pem()))
            .await
            .unwrap()
    }

    pub async fn account(&self) -> AcmeClient {
        let mut c = self.client().await;
        c.new_account(&["mailto:ops@example.test"], None)
            .await
            .unwrap();
        c
    }

    /// Publishes the dns-01 answer for `authz_url` and responds to the challenge.
    pub async fn solve_dns01(&self, c: &mut AcmeClient, authz_url: &str) -> Value {
        let authz = c.get(authz_url).await.unwrap();
        let name = authz["identifier"]["value"].as_str().unwrap().to_string();
        let (url, token) = AcmeClient::challenge(&authz, "dns-01").unwrap();
        let value = dns01_value(&c.key_authorization(&token));
        self.dns.add_txt(&format!("_acme-challenge.{name}"), &value);
        c.respond(&url).await.unwrap();
        c.poll(authz_url, &["valid"], std::time::Duration::from_secs(10))
            .await
            .unwrap()
    }

    /// Finalizes a ready order for `names` and returns the PEM chain.
    pub async fn finish(&self, c: &mut AcmeClient, order: &Value, names: &[&str]) -> String {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let (csr, _) = make_csr(&names, &[]).unwrap();
        let r = c
            .finalize(order["finalize"].as_str().unwrap(), &csr)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let o = r.json();
        assert_eq!(o["status"], "valid", "{o}");
        c.download(o["certificate"].as_str().unwrap())
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// `openssl verify` of a leaf against the root, with the chain's intermediates; `None` when
/// openssl is missing.
pub fn openssl_verify(root_pem: &str, chain_pem: &str) -> Option<(bool, String)> {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!(
            "\n!!!!!!!! openssl is not installed: SKIPPING the openssl verify step !!!!!!!!\n"
        );
        if std::env::var("RAGW_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("openssl is missing but RAGW_REQUIRE_PEERS=1");
        }
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    let chain = dir.path().join("chain.pem");
    std::fs::write(&root, root_pem).unwrap();
    std::fs::write(&chain, chain_pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&root)
        .arg("-untrusted")
        .arg(&chain)
        .arg(&chain)
        .output()
        .unwrap();
    Some((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}
