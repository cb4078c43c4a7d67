//! The HTTP client under instant-acme: counts every ACME request by kind and outcome (so POSTs per
//! certificate can be read off /metrics), remembers Retry-After, and signs the few requests
//! instant-acme has no API for (RFC 8555 §7.4.1 newAuthz).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
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
    retry_after: Mutex<Option<Duration>>,
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

    /// The Retry-After of the last 429/503 answer, taken (so it applies once).
    pub fn take_retry_after(&self) -> Option<Duration> {
        self.shared
            .retry_after
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Sends a request and reads the whole body.
    pub async fn send(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), WorkerError> {
        let mut rsp = HttpClient::request(self, req)
            .await
            .map_err(|e| WorkerError::Http(e.to_string()))?;
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

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let kind = self.kind(&req.uri().to_string());
        let method = req.method().as_str().to_string();
        let fut = HttpClient::request(&self.inner, req);
        let requests = self.requests.clone();
        let shared = self.shared.clone();
        Box::pin(async move {
            let result = fut.await;
            let outcome = match &result {
                Ok(rsp) => {
                    let status = rsp.parts.status;
                    if status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::SERVICE_UNAVAILABLE
                    {
                        let secs = rsp
                            .parts
                            .headers
                            .get(http::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok());
                        if let Some(s) = secs {
                            *shared
                                .retry_after
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner) =
                                Some(Duration::from_secs(s.min(86_400)));
                        }
                    }
                    status.as_u16().to_string()
                }
                Err(_) => "error".to_string(),
            };
            requests
                .get_or_create(&RequestLabels {
                    kind: kind.to_string(),
                    method,
                    outcome,
                })
                .inc();
            result
        })
    }
}

/// Signs requests with the ACME account's key (ES256, `kid` form), for the resources
/// instant-acme cannot reach.
pub struct RawSigner {
    kid: String,
    key: EcdsaKeyPair,
    new_nonce: String,
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

impl RawSigner {
    pub fn new(kid: &str, pkcs8: &[u8], new_nonce: &str) -> Result<Self, WorkerError> {
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map_err(|_| {
                WorkerError::Config("the ACME account key is not a P-256 PKCS#8 key".into())
            })?;
        Ok(RawSigner {
            kid: kid.to_string(),
            key,
            new_nonce: new_nonce.to_string(),
        })
    }

    async fn nonce(&self, http: &AcmeHttp) -> Result<String, WorkerError> {
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
        for attempt in 0..2 {
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
            let value: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes)
                    .map_err(|e| WorkerError::Http(format!("POST {url}: not JSON: {e}")))?
            };
            if parts.status.is_success() {
                return Ok((parts, value));
            }
            let problem_type = value
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if attempt == 0
                && problem_type == "urn:ietf:params:acme:error:badNonce"
                && let Some(n) = replay_nonce(&parts)
            {
                nonce = n;
                continue;
            }
            return Err(WorkerError::Acme {
                problem_type,
                detail: value
                    .get("detail")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                status: parts.status.as_u16(),
            });
        }
        Err(WorkerError::Http(format!(
            "POST {url}: the CA rejected two nonces in a row"
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
}
