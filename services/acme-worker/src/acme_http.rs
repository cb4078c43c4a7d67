//! The HTTP client under instant-acme: counts every ACME request by kind and outcome (so POSTs per
//! certificate can be read off /metrics), turns a 429/503 answer with Retry-After into an error
//! that carries the wait, and signs the few requests instant-acme has no API for (RFC 8555
//! §7.4.1 newAuthz, RFC 9444 `ancestorDomain` in newOrder, reading an order's raw state).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use thiserror::Error;

use crate::WorkerError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub kind: String,
    pub method: String,
    pub outcome: String,
}

/// Shared by every clone of the client.
#[derive(Default)]
struct Shared {
    /// Directory URL → request kind, learned from the directory.
    kinds: Mutex<HashMap<String, &'static str>>,
    /// Order objects already fetched with [`RawSigner`], keyed by URL, each handed once to
    /// instant-acme's next POST-as-GET of that URL (see [`AcmeHttp::prime`]).
    primed: Mutex<HashMap<String, Primed>>,
}

/// A response received earlier, replayed once.
struct Primed {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Longest Retry-After honoured. A CA asking for more is still retried after this, so a
/// mistaken or hostile header cannot park an enrollment for weeks.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// A 429 or 503 answer that carried a Retry-After. It is returned as that request's error, so
/// the wait travels with the job that received it: concurrent jobs of one upstream never see
/// each other's value.
#[derive(Debug, Error)]
#[error("HTTP {status}, retry after {}s: {problem_type} {detail}", retry_after.as_secs())]
pub struct Throttled {
    pub status: u16,
    pub problem_type: String,
    pub detail: String,
    pub retry_after: Duration,
}

impl From<Throttled> for WorkerError {
    fn from(t: Throttled) -> Self {
        WorkerError::Acme {
            problem_type: t.problem_type,
            detail: t.detail,
            status: t.status,
            retry_after: Some(t.retry_after),
        }
    }
}

/// RFC 9110 §10.2.3: `Retry-After = HTTP-date / delay-seconds`, as a wait from `now`, capped at
/// [`MAX_RETRY_AFTER`]. A date in the past means no wait; anything else unparseable, `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let wait = if value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for u64 is still "a very long time", not garbage.
        value
            .parse::<u64>()
            .map(Duration::from_secs)
            .unwrap_or(MAX_RETRY_AFTER)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The wait a throttling answer asks for: only 429 and 503 carry a Retry-After that means
/// "this request, later" (RFC 8555 §6.6, RFC 9110 §15.6.4).
fn throttle_wait(parts: &http::response::Parts) -> Option<Duration> {
    if parts.status != StatusCode::TOO_MANY_REQUESTS
        && parts.status != StatusCode::SERVICE_UNAVAILABLE
    {
        return None;
    }
    let value = parts
        .headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    parse_retry_after(value, SystemTime::now())
}

/// The problem document's type and detail, or a stand-in when the body is not one.
fn problem_fields(status: StatusCode, body: &[u8]) -> (String, String) {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .map(|s| s.chars().take(1024).collect::<String>())
    };
    (
        field("type").unwrap_or_default(),
        field("detail").unwrap_or_else(|| format!("HTTP {status}")),
    )
}

#[derive(Clone)]
pub struct AcmeHttp {
    inner: HyperClient<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    shared: Arc<Shared>,
    requests: Family<RequestLabels, Counter>,
}

/// Response bodies larger than this are refused (a directory or an order is a few KiB).
const MAX_BODY: usize = 1024 * 1024;

impl AcmeHttp {
    /// `roots_pem`: trust only these CA certificates (a private CA); `None`: the public web PKI.
    pub fn new(
        roots_pem: Option<&[u8]>,
        requests: Family<RequestLabels, Counter>,
    ) -> Result<Self, WorkerError> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match roots_pem {
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
                    let cert =
                        cert.map_err(|e| WorkerError::Config(format!("CA trust PEM: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| WorkerError::Config(format!("CA trust certificate: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(WorkerError::Config(
                        "CA trust PEM holds no certificate".into(),
                    ));
                }
                builder.with_tls_config(
                    rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::aws_lc_rs::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| WorkerError::Config(format!("TLS: {e}")))?
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
                )
            }
            None => builder.with_webpki_roots(),
        }
        .https_or_http()
        .enable_http1()
        .build();
        Ok(AcmeHttp {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
            shared: Arc::new(Shared::default()),
            requests,
        })
    }

    /// Teaches the counter the directory's URLs, so requests are labelled by resource.
    pub fn learn_directory(&self, directory: &Value) {
        let mut kinds = self
            .shared
            .kinds
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (field, kind) in [
            ("newNonce", "newNonce"),
            ("newAccount", "newAccount"),
            ("newOrder", "newOrder"),
            ("newAuthz", "newAuthz"),
            ("revokeCert", "revokeCert"),
            ("keyChange", "keyChange"),
        ] {
            if let Some(url) = directory.get(field).and_then(Value::as_str) {
                kinds.insert(url.to_string(), kind);
            }
        }
    }

    fn kind(&self, uri: &str) -> &'static str {
        let kinds = self
            .shared
            .kinds
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(k) = kinds.get(uri) {
            return k;
        }
        // Resource URLs are the CA's own; these words are how Pebble, Boulder and ragw's CA
        // spell them.
        let lower = uri.to_ascii_lowercase();
        if lower.contains("finalize") {
            "finalize"
        } else if lower.contains("chal") {
            "challenge"
        } else if lower.contains("authz") {
            "authorization"
        } else if lower.contains("cert") {
            "certificate"
        } else if lower.contains("order") {
            "order"
        } else if lower.contains("dir") {
            "directory"
        } else {
            "other"
        }
    }

    /// Makes instant-acme's next POST-as-GET of `url` answer with this response instead of
    /// asking the CA again: an order just created or read with [`RawSigner`] is handed to
    /// instant-acme (`Account::order`) without a second POST for the same state. The replay is
    /// not counted as a request. The returned guard withdraws the response if it was not used.
    pub fn prime(
        &self,
        url: &str,
        parts: &http::response::Parts,
        body: &Value,
    ) -> Result<PrimedGuard, WorkerError> {
        let key = url
            .parse::<http::Uri>()
            .map_err(|e| WorkerError::Http(format!("order URL {url:?}: {e}")))?
            .to_string();
        let body = serde_json::to_vec(body)
            .map_err(|e| WorkerError::Http(format!("re-encoding the order: {e}")))?;
        let mut headers = parts.headers.clone();
        // The body was re-encoded; its length may differ.
        headers.remove(http::header::CONTENT_LENGTH);
        // The nonce of that answer belongs to the raw signer's pool: handed to instant-acme as
        // well, one of the two would be refused as already used.
        headers.remove("replay-nonce");
        self.shared
            .primed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                key.clone(),
                Primed {
                    status: parts.status,
                    headers,
                    body: Bytes::from(body),
                },
            );
        Ok(PrimedGuard {
            shared: self.shared.clone(),
            key,
        })
    }

    /// Sends a request and reads the whole body.
    pub async fn send(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), WorkerError> {
        let mut rsp = HttpClient::request(self, req)
            .await
            .map_err(WorkerError::from_acme)?;
        let body = rsp
            .body
            .into_bytes()
            .await
            .map_err(|e| WorkerError::Http(format!("reading the response: {e}")))?;
        if body.len() > MAX_BODY {
            return Err(WorkerError::Http(format!(
                "response of {} bytes is too large",
                body.len()
            )));
        }
        Ok((rsp.parts, body))
    }

    pub async fn get_json(&self, url: &str) -> Result<Value, WorkerError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(url)
            .body(BodyWrapper::from(Vec::new()))
            .map_err(|e| WorkerError::Http(e.to_string()))?;
        let (parts, body) = self.send(req).await?;
        if !parts.status.is_success() {
            return Err(WorkerError::Http(format!(
                "GET {url}: HTTP {}",
                parts.status
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| WorkerError::Http(format!("GET {url}: not JSON: {e}")))
    }
}

/// Withdraws a primed response that instant-acme did not take (its request failed earlier, or
/// the job was cancelled), so nothing stale is left for a later request.
pub struct PrimedGuard {
    shared: Arc<Shared>,
    key: String,
}

impl Drop for PrimedGuard {
    fn drop(&mut self) {
        self.shared
            .primed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let uri = req.uri().to_string();
        if req.method() == Method::POST {
            let primed = self
                .shared
                .primed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&uri);
            if let Some(p) = primed {
                return Box::pin(async move { Ok(p.into_response()) });
            }
        }
        let kind = self.kind(&uri);
        let method = req.method().as_str().to_string();
        let fut = HttpClient::request(&self.inner, req);
        let requests = self.requests.clone();
        Box::pin(async move {
            let result = fut.await;
            let outcome = match &result {
                Ok(rsp) => rsp.parts.status.as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            requests
                .get_or_create(&RequestLabels {
                    kind: kind.to_string(),
                    method,
                    outcome,
                })
                .inc();
            let mut rsp = result?;
            let Some(retry_after) = throttle_wait(&rsp.parts) else {
                return Ok(rsp);
            };
            // The body is only read for the problem's type and detail; an unreadable one must
            // not lose the Retry-After.
            let body = rsp.body.into_bytes().await.unwrap_or_default();
            let (problem_type, detail) = problem_fields(rsp.parts.status, &body);
            Err(instant_acme::Error::Other(Box::new(Throttled {
                status: rsp.parts.status.as_u16(),
                problem_type,
                detail,
                retry_after,
            })))
        })
    }
}

impl Primed {
    fn into_response(self) -> BytesResponse {
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = self.status;
        parts.headers = self.headers;
        BytesResponse {
            parts,
            body: Box::new(self.body),
        }
    }
}

/// Signs requests with the ACME account's key (ES256, `kid` form), for the resources
/// instant-acme cannot reach.
pub struct RawSigner {
    kid: String,
    key: EcdsaKeyPair,
    new_nonce: String,
    nonces: std::sync::Mutex<Vec<String>>,
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Attempts of one signed request when the CA answers badNonce (as instant-acme does).
const BAD_NONCE_ATTEMPTS: usize = 3;
/// Unused nonces kept for later requests; more are dropped, as nonces expire on the CA.
const NONCE_POOL: usize = 16;

impl RawSigner {
    fn keep_nonce(&self, nonce: Option<String>) {
        if let (Some(n), Ok(mut pool)) = (nonce, self.nonces.lock())
            && pool.len() < NONCE_POOL
        {
            pool.push(n);
        }
    }

    pub fn new(kid: &str, pkcs8: &[u8], new_nonce: &str) -> Result<Self, WorkerError> {
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map_err(|_| {
                WorkerError::Config("the ACME account key is not a P-256 PKCS#8 key".into())
            })?;
        Ok(RawSigner {
            kid: kid.to_string(),
            key,
            new_nonce: new_nonce.to_string(),
            nonces: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// A Replay-Nonce from an earlier answer if one is left (RFC 8555 §7.2: every answer
    /// carries a fresh one), else one from newNonce.
    async fn nonce(&self, http: &AcmeHttp) -> Result<String, WorkerError> {
        if let Some(n) = self.nonces.lock().ok().and_then(|mut pool| pool.pop()) {
            return Ok(n);
        }
        let req = Request::builder()
            .method(Method::HEAD)
            .uri(&self.new_nonce)
            .body(BodyWrapper::from(Vec::new()))
            .map_err(|e| WorkerError::Http(e.to_string()))?;
        let (parts, _) = http.send(req).await?;
        replay_nonce(&parts)
            .ok_or_else(|| WorkerError::Http("newNonce answered without a Replay-Nonce".into()))
    }

    /// POSTs `payload` (or POST-as-GET with `None`) to `url`; retries once on badNonce.
    pub async fn post(
        &self,
        http: &AcmeHttp,
        url: &str,
        payload: Option<&Value>,
    ) -> Result<(http::response::Parts, Value), WorkerError> {
        let mut nonce = self.nonce(http).await?;
        for attempt in 0..BAD_NONCE_ATTEMPTS {
            let protected =
                serde_json::json!({"alg": "ES256", "kid": self.kid, "nonce": nonce, "url": url});
            let protected = b64(protected.to_string().as_bytes());
            let payload = payload
                .map(|p| b64(p.to_string().as_bytes()))
                .unwrap_or_default();
            let signing_input = format!("{protected}.{payload}");
            let signature = self
                .key
                .sign(&SystemRandom::new(), signing_input.as_bytes())
                .map_err(|_| WorkerError::Http("signing failed".into()))?;
            let body = serde_json::json!({"protected": protected, "payload": payload, "signature": b64(signature.as_ref())});
            let req = Request::builder()
                .method(Method::POST)
                .uri(url)
                .header(http::header::CONTENT_TYPE, "application/jose+json")
                .body(BodyWrapper::from(body.to_string().into_bytes()))
                .map_err(|e| WorkerError::Http(e.to_string()))?;
            let (parts, bytes) = http.send(req).await?;
            let fresh = replay_nonce(&parts);
            if parts.status.is_success() {
                self.keep_nonce(fresh);
                let value: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes)
                        .map_err(|e| WorkerError::Http(format!("POST {url}: not JSON: {e}")))?
                };
                return Ok((parts, value));
            }
            // An error without a problem document still has its status, which callers need
            // (a 404 order is gone; a 502 from a proxy is not).
            let (problem_type, detail) = problem_fields(parts.status, &bytes);
            if attempt + 1 < BAD_NONCE_ATTEMPTS
                && problem_type == "urn:ietf:params:acme:error:badNonce"
                && let Some(n) = fresh
            {
                nonce = n;
                continue;
            }
            self.keep_nonce(fresh);
            return Err(WorkerError::Acme {
                problem_type,
                detail,
                status: parts.status.as_u16(),
                retry_after: None,
            });
        }
        Err(WorkerError::Http(format!(
            "POST {url}: the CA rejected {BAD_NONCE_ATTEMPTS} nonces in a row"
        )))
    }
}

fn replay_nonce(parts: &http::response::Parts) -> Option<String> {
    parts
        .headers
        .get("replay-nonce")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, KeyPair, UnparsedPublicKey};

    fn client() -> AcmeHttp {
        AcmeHttp::new(None, Family::default()).unwrap()
    }

    #[test]
    fn requests_are_labelled_by_resource() {
        let http = client();
        http.learn_directory(&serde_json::json!({
            "newNonce": "https://ca/nonce-plz", "newOrder": "https://ca/order-plz", "newAuthz": "https://ca/new-authz"
        }));
        assert_eq!(http.kind("https://ca/nonce-plz"), "newNonce");
        assert_eq!(http.kind("https://ca/order-plz"), "newOrder");
        assert_eq!(http.kind("https://ca/new-authz"), "newAuthz");
        assert_eq!(http.kind("https://ca/finalize-order/7"), "finalize");
        assert_eq!(http.kind("https://ca/chalZ/1"), "challenge");
        assert_eq!(http.kind("https://ca/authz-v3/1"), "authorization");
        assert_eq!(http.kind("https://ca/certZ/1"), "certificate");
        assert_eq!(http.kind("https://ca/my-order/1"), "order");
    }

    #[test]
    fn raw_signatures_verify_with_the_account_key() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let signer =
            RawSigner::new("https://ca/acct/1", pkcs8.as_ref(), "https://ca/nonce").unwrap();
        let sig = signer.key.sign(&rng, b"protected.payload").unwrap();
        let public = signer.key.public_key().as_ref().to_vec();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
            .verify(b"protected.payload", sig.as_ref())
            .unwrap();
        assert!(RawSigner::new("kid", b"not a key", "https://ca/nonce").is_err());
    }

    #[test]
    fn a_trust_file_without_certificates_is_refused() {
        assert!(AcmeHttp::new(Some(b"garbage"), Family::default()).is_err());
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let parse = |v: &str| parse_retry_after(v, now);
        assert_eq!(parse("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 0 "), Some(Duration::ZERO));
        // The three HTTP-date forms RFC 9110 §5.6.7 makes recipients accept.
        assert_eq!(
            parse("Sun, 06 Nov 1994 08:51:37 GMT"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse("Sunday, 06-Nov-94 08:50:37 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse("Sun Nov  6 08:49:47 1994"),
            Some(Duration::from_secs(10))
        );
        // Already past: no extra wait.
        assert_eq!(parse("Sun, 06 Nov 1994 08:00:00 GMT"), Some(Duration::ZERO));
        // Capped, however far away the CA asks.
        assert_eq!(parse("31536000"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse("99999999999999999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse("Fri, 31 Dec 1999 23:59:59 GMT"),
            Some(MAX_RETRY_AFTER)
        );
        for garbage in ["", "soon", "-5", "1.5", "Sun, 99 Nov 1994 08:49:37 GMT"] {
            assert_eq!(parse(garbage), None, "{garbage:?}");
        }
    }

    fn post(url: &str) -> Request<BodyWrapper<Bytes>> {
        Request::builder()
            .method(Method::POST)
            .uri(url)
            .body(BodyWrapper::from(b"{}".to_vec()))
            .unwrap()
    }

    #[tokio::test]
    async fn each_throttled_request_carries_its_own_retry_after() {
        use crate::test_support::{Canned, FakeServer};
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3600));
        let server = FakeServer::start(move |_, seen| match seen.path.as_str() {
            "/a" => Canned::json(
                429,
                serde_json::json!({"type": "urn:ietf:params:acme:error:rateLimited", "detail": "slow down"}),
            )
            .header("Retry-After", "7"),
            "/b" => Canned::json(503, serde_json::json!({"detail": "maintenance"}))
                .header("Retry-After", &later),
            _ => Canned::json(429, serde_json::json!({})),
        })
        .await;
        let http = client();
        let (a, b, c) = tokio::join!(
            http.send(post(&format!("{}/a", server.base))),
            http.send(post(&format!("{}/b", server.base))),
            http.send(post(&format!("{}/c", server.base))),
        );
        let a = a.unwrap_err();
        assert_eq!(a.retry_after(), Some(Duration::from_secs(7)));
        let WorkerError::Acme {
            problem_type,
            detail,
            status,
            ..
        } = &a
        else {
            panic!("{a:?}");
        };
        assert_eq!(
            (problem_type.as_str(), detail.as_str(), *status),
            ("urn:ietf:params:acme:error:rateLimited", "slow down", 429)
        );
        let b = b.unwrap_err().retry_after().unwrap();
        assert!(
            b > Duration::from_secs(7) && b <= Duration::from_secs(3600),
            "{b:?}"
        );
        // A 429 without Retry-After is an ordinary answer.
        let (parts, _) = c.unwrap();
        assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);

        // Through instant-acme, the wait arrives inside its error.
        let e = HttpClient::request(&http, post(&format!("{}/a", server.base)))
            .await
            .err()
            .unwrap();
        assert_eq!(
            WorkerError::from_acme(e).retry_after(),
            Some(Duration::from_secs(7))
        );
    }

    #[tokio::test]
    async fn a_primed_order_is_replayed_once_without_a_request() {
        use crate::test_support::{Canned, FakeServer};
        let server =
            FakeServer::start(|_, _| Canned::json(200, serde_json::json!({"from": "ca"}))).await;
        let requests = Family::<RequestLabels, Counter>::default();
        let http = AcmeHttp::new(None, requests.clone()).unwrap();
        let url = format!("{}/order/1", server.base);
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = StatusCode::CREATED;
        parts.headers.insert("replay-nonce", "n1".parse().unwrap());
        let guard = http
            .prime(&url, &parts, &serde_json::json!({"status": "ready"}))
            .unwrap();

        let (parts, body) = http.send(post(&url)).await.unwrap();
        assert_eq!(parts.status, StatusCode::CREATED);
        // Its nonce stays with the raw signer that received it: used twice, one use would fail.
        assert_eq!(replay_nonce(&parts), None);
        assert_eq!(body, Bytes::from_static(br#"{"status":"ready"}"#));
        assert!(server.seen().is_empty());
        let counted: u64 = requests
            .get_or_create(&RequestLabels {
                kind: "order".into(),
                method: "POST".into(),
                outcome: "201".into(),
            })
            .get();
        assert_eq!(counted, 0, "a replay is not a request");

        // Once only: the next POST reaches the CA and is counted.
        let (_, body) = http.send(post(&url)).await.unwrap();
        assert_eq!(body, Bytes::from_static(br#"{"from":"ca"}"#));
        assert_eq!(server.count("POST", "/order/1"), 1);
        drop(guard);

        // An unused priming is withdrawn with its guard.
        let guard = http.prime(&url, &parts, &serde_json::json!({})).unwrap();
        drop(guard);
        http.send(post(&url)).await.unwrap();
        assert_eq!(server.count("POST", "/order/1"), 2);
    }
}
