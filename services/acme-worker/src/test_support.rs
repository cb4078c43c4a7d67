//! A scripted HTTP/1.1 server standing in for an ACME CA in unit tests: each request is
//! recorded and answered by a closure, one request per connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

impl Seen {
    /// The decoded JWS protected header of a POST.
    pub fn protected(&self) -> serde_json::Value {
        let jws: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        let bytes = base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jws["protected"].as_str().unwrap(),
        )
        .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The decoded JWS payload of a POST (`Null` for POST-as-GET).
    pub fn payload(&self) -> serde_json::Value {
        let jws: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        let payload = jws["payload"].as_str().unwrap();
        if payload.is_empty() {
            return serde_json::Value::Null;
        }
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }
}

/// What to answer.
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Canned {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Canned {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = dyn Fn(&str, &Seen) -> Canned + Send + Sync;

pub struct FakeServer {
    /// `http://127.0.0.1:port`
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeServer {
    /// Serves until the runtime ends; `handler` gets the base URL and the request.
    pub async fn start(handler: impl Fn(&str, &Seen) -> Canned + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (b, s) = (base.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (base, seen, handler) = (b.clone(), s.clone(), handler.clone());
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    seen.lock().unwrap().push(request.clone());
                    let canned = handler(&base, &request);
                    let mut head = format!(
                        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                        canned.status,
                        canned.body.len()
                    );
                    for (name, value) in &canned.headers {
                        head.push_str(&format!("{name}: {value}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = stream.write_all(head.as_bytes()).await;
                    if request.method != "HEAD" {
                        let _ = stream.write_all(canned.body.as_bytes()).await;
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        FakeServer { base, seen }
    }

    /// Every request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests so far with this method and path.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .count()
    }
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen { method, path, body })
}

/// A listener that accepts connections and never answers: a CA that hangs.
pub async fn silent_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    base
}

/// A minimal ACME directory at `{base}/dir`, answering newNonce; anything else goes to `rest`.
pub fn acme_directory(
    rest: impl Fn(&str, &Seen) -> Canned + Send + Sync + 'static,
) -> impl Fn(&str, &Seen) -> Canned + Send + Sync + 'static {
    move |base, seen| match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", "/dir") => Canned::json(
            200,
            serde_json::json!({
                "newNonce": format!("{base}/nonce"),
                "newAccount": format!("{base}/new-account"),
                "newOrder": format!("{base}/new-order"),
                "newAuthz": format!("{base}/new-authz"),
                "revokeCert": format!("{base}/revoke"),
                "keyChange": format!("{base}/key-change"),
            }),
        ),
        ("HEAD", "/nonce") | ("GET", "/nonce") => Canned {
            status: 200,
            headers: vec![("Replay-Nonce".into(), "bm9uY2U".into())],
            body: String::new(),
        },
        _ => rest(base, seen),
    }
}

/// Account credentials (a fresh P-256 key) for `{base}/acct/1`, as instant-acme stores them.
pub fn account_json(base: &str) -> Vec<u8> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    serde_json::to_vec(&serde_json::json!({
        "id": format!("{base}/acct/1"),
        "key_pkcs8": base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            pkcs8.as_ref(),
        ),
        "directory": format!("{base}/dir"),
    }))
    .unwrap()
}
