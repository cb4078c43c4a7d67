//! The sans-IO core on its own: requests in, responses out, no sockets. A stub validator
//! stands in for DNS. Also a mutation loop: thousands of damaged versions of valid requests
//! must each get a 4xx problem document, never a 5xx or a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use ragw_acme_ca::client::{ClientKey, make_csr};
use ragw_acme_ca::problem::Problem;
use ragw_acme_ca::validate::Validator;
use ragw_acme_ca::{Ca, CaConfig, Request, Response, b64};
use ragw_store::{AcmeIdentifier, Store};
use serde_json::{Value, json};

struct AlwaysValid;

#[async_trait]
impl Validator for AlwaysValid {
    async fn validate(&self, _: &str, _: &AcmeIdentifier, _: &str, _: &str) -> Result<(), Problem> {
        Ok(())
    }
}

const BASE: &str = "https://ca.devices.example.test";

async fn core() -> (Ca, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = ragw_store::open(&ragw_store::StoreConfig::Sqlite {
        path: dir.path().join("db"),
    })
    .await
    .unwrap();
    let mut cfg = CaConfig::new(
        dir.path().join("ca"),
        vec!["devices.example.test".into()],
        "127.0.0.1:9".parse().unwrap(),
    );
    cfg.external_url = Some(BASE.into());
    cfg.account_requests_per_second = 0;
    let ca = Ca::open(cfg, store.clone(), "127.0.0.1:1".parse().unwrap())
        .await
        .unwrap()
        .with_validator(Arc::new(AlwaysValid));
    (ca, store, dir)
}

fn get(path: &str) -> Request {
    Request {
        method: "GET".into(),
        path: path.into(),
        content_type: None,
        body: Vec::new(),
    }
}

struct Signer {
    key: ClientKey,
    kid: Option<String>,
}

impl Signer {
    async fn post(&self, ca: &Ca, path: &str, payload: Option<&Value>) -> Response {
        let nonce = ca
            .handle(Request {
                method: "HEAD".into(),
                ..get("/new-nonce")
            })
            .await
            .header_value("Replay-Nonce")
            .unwrap()
            .to_string();
        let url = format!("{BASE}{path}");
        let mut protected = json!({"alg": self.key.alg(), "nonce": nonce, "url": url});
        match &self.kid {
            Some(k) => protected["kid"] = json!(k),
            None => protected["jwk"] = self.key.jwk(),
        }
        let body = self
            .key
            .jws(&protected, payload)
            .unwrap()
            .to_string()
            .into_bytes();
        ca.handle(Request {
            method: "POST".into(),
            path: path.into(),
            content_type: Some("application/jose+json".into()),
            body,
        })
        .await
    }
}

fn json_of(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn path_of(url: &str) -> String {
    url.strip_prefix(BASE).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_order_through_the_core() {
    let (ca, store, _dir) = core().await;
    let d = ca.handle(get("/directory")).await;
    assert_eq!(d.status, 200);
    assert_eq!(json_of(&d)["newAuthz"], format!("{BASE}/new-authz"));
    let n = ca
        .handle(Request {
            method: "HEAD".into(),
            ..get("/new-nonce")
        })
        .await;
    assert_eq!(n.status, 200);
    assert_eq!(n.header_value("Cache-Control"), Some("no-store"));

    let mut s = Signer {
        key: ClientKey::es256(),
        kid: None,
    };
    let r = s
        .post(
            &ca,
            "/new-account",
            Some(&json!({"contact": ["https://dev1.devices.example.test"]})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    s.kid = Some(r.header_value("Location").unwrap().to_string());

    let name = "dev1.devices.example.test";
    let r = s
        .post(
            &ca,
            "/new-order",
            Some(&json!({"identifiers": [{"type": "dns", "value": name}]})),
        )
        .await;
    assert_eq!(r.status, 201);
    let order = json_of(&r);
    let authz_path = path_of(order["authorizations"][0].as_str().unwrap());
    let authz = json_of(&s.post(&ca, &authz_path, None).await);
    let chall = authz["challenges"][0]["url"].as_str().unwrap().to_string();
    let r = s.post(&ca, &path_of(&chall), Some(&json!({}))).await;
    assert_eq!(json_of(&r)["status"], "valid");
    let (csr, _) = make_csr(&[name.to_string()], &[]).unwrap();
    let fin = path_of(order["finalize"].as_str().unwrap());
    let r = s
        .post(&ca, &fin, Some(&json!({"csr": b64::encode(csr)})))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let done = json_of(&r);
    assert_eq!(done["status"], "valid");
    let cert = s
        .post(&ca, &path_of(done["certificate"].as_str().unwrap()), None)
        .await;
    assert_eq!(
        cert.header_value("Content-Type"),
        Some("application/pem-certificate-chain")
    );
    assert_eq!(store.acme_counts().await.unwrap().certificates, 1);

    let crl = ca.handle(get("/crl")).await;
    assert_eq!(crl.status, 200);
    assert_eq!(
        crl.header_value("Content-Type"),
        Some("application/pkix-crl")
    );
}

/// A tiny deterministic PRNG, so a failure names a reproducible case.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_requests_never_fail_the_server() {
    let (ca, store, _dir) = core().await;
    let mut s = Signer {
        key: ClientKey::es256(),
        kid: None,
    };
    let r = s.post(&ca, "/new-account", Some(&json!({}))).await;
    s.kid = Some(r.header_value("Location").unwrap().to_string());
    let r = s
        .post(
            &ca,
            "/new-order",
            Some(&json!({"identifiers": [{"type": "dns", "value": "f.devices.example.test"}]})),
        )
        .await;
    let order = json_of(&r);
    let targets = [
        "/new-order".to_string(),
        "/new-account".to_string(),
        "/new-authz".to_string(),
        "/revoke-cert".to_string(),
        "/key-change".to_string(),
        path_of(order["finalize"].as_str().unwrap()),
        path_of(order["authorizations"][0].as_str().unwrap()),
        path_of(s.kid.as_deref().unwrap()),
    ];
    let before = store.acme_counts().await.unwrap();
    let mut rng = Lcg(0x5eed);
    for case in 0..3000 {
        let path = &targets[rng.below(targets.len())];
        let nonce = ca
            .handle(Request {
                method: "HEAD".into(),
                ..get("/new-nonce")
            })
            .await
            .header_value("Replay-Nonce")
            .unwrap()
            .to_string();
        let protected =
            json!({"alg": "ES256", "nonce": nonce, "url": format!("{BASE}{path}"), "kid": s.kid});
        let payload = json!({"identifiers": [{"type": "dns", "value": "g.devices.example.test"}], "csr": "AAAA", "certificate": "AAAA", "contact": ["mailto:a@b.test"], "identifier": {"type": "dns", "value": "devices.example.test"}});
        let mut body = s
            .key
            .jws(&protected, Some(&payload))
            .unwrap()
            .to_string()
            .into_bytes();
        match rng.below(4) {
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(body.len());
                    body[i] = rng.next() as u8;
                }
            }
            1 => body.truncate(rng.below(body.len())),
            2 => {
                let i = rng.below(body.len());
                let junk: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
                body.splice(i..i, junk);
            }
            _ => {
                // Damage inside the base64url members, where the parsers beyond JSON live.
                let text = String::from_utf8(body.clone()).unwrap();
                let v: Value = serde_json::from_str(&text).unwrap();
                let member = ["protected", "payload", "signature"][rng.below(3)];
                let mut m = v[member].as_str().unwrap().as_bytes().to_vec();
                if !m.is_empty() {
                    let i = rng.below(m.len());
                    m[i] = b"-_AZaz09+/=!"[rng.below(12)];
                }
                let mut v = v.clone();
                v[member] = json!(String::from_utf8_lossy(&m));
                body = v.to_string().into_bytes();
            }
        }
        let r = ca
            .handle(Request {
                method: "POST".into(),
                path: path.clone(),
                content_type: Some("application/jose+json".into()),
                body,
            })
            .await;
        assert!(
            r.status < 500,
            "case {case} on {path}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        if r.status >= 400 {
            assert_eq!(
                r.header_value("Content-Type"),
                Some("application/problem+json"),
                "case {case}"
            );
        }
        assert!(r.header_value("Replay-Nonce").is_some(), "case {case}");
    }
    let after = store.acme_counts().await.unwrap();
    assert_eq!(before.certificates, after.certificates);
    assert_eq!(before.accounts, after.accounts);
}
