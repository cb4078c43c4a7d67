//! A small ACME client: what the load tool, the RFC 9444 flow test and the bad-input corpus
//! drive the CA (or Pebble) with. It speaks the parts instant-acme lacks (newAuthz,
//! `subdomainAuthAllowed`, `ancestorDomain`) and can send deliberately broken requests.
//! One HTTP/1.1 connection per client; one request at a time.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
    ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use thiserror::Error;
use tokio_rustls::TlsConnector;

use crate::b64;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("transport: {0}")]
    Transport(String),
    #[error("HTTP {status}: {problem}")]
    Problem { status: u16, problem: Value },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

impl ClientError {
    /// The ACME error type name (`badNonce`, …) of a problem response.
    pub fn problem_type(&self) -> Option<String> {
        match self {
            ClientError::Problem { problem, .. } => {
                problem.get("type").and_then(Value::as_str).map(|t| {
                    t.trim_start_matches("urn:ietf:params:acme:error:")
                        .to_string()
                })
            }
            _ => None,
        }
    }
}

fn transport(e: impl std::fmt::Display) -> ClientError {
    ClientError::Transport(e.to_string())
}

/// A response, as received.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The ACME error type name of a problem document, if this is one.
    pub fn problem_type(&self) -> Option<String> {
        if self.status < 400 {
            return None;
        }
        self.json().get("type").and_then(Value::as_str).map(|t| {
            t.trim_start_matches("urn:ietf:params:acme:error:")
                .to_string()
        })
    }

    fn ok(self) -> Result<HttpResponse, ClientError> {
        if self.status >= 400 {
            Err(ClientError::Problem {
                status: self.status,
                problem: self.json(),
            })
        } else {
            Ok(self)
        }
    }
}

/// How long one request may take before the connection is given up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One keep-alive connection to one server.
struct Transport {
    https: bool,
    host: String,
    port: u16,
    tls: Option<TlsConnector>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

fn split(url: &str) -> Result<(bool, String, u16, String), ClientError> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(ClientError::Protocol(format!("not an http(s) URL: {url}")));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']').unwrap_or((v6, ""));
        (
            h.to_string(),
            p.strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default),
        )
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse()
                    .map_err(|_| ClientError::Protocol(format!("bad port in {url}")))?,
            ),
            None => (authority.to_string(), default),
        }
    };
    Ok((https, host, port, path.to_string()))
}

impl Transport {
    fn new(directory_url: &str, root_pem: Option<&str>) -> Result<Transport, ClientError> {
        let (https, host, port, _) = split(directory_url)?;
        let tls = if https {
            let mut roots = rustls::RootCertStore::empty();
            for der in crate::ca::pem_certificates(root_pem.unwrap_or("")) {
                roots.add(CertificateDer::from(der)).map_err(transport)?;
            }
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(transport)?
                .with_root_certificates(roots)
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(TlsConnector::from(Arc::new(cfg)))
        } else {
            None
        };
        Ok(Transport {
            https,
            host,
            port,
            tls,
            sender: None,
        })
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let addr = format!("{}:{}", self.host_for_connect(), self.port);
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(transport)?;
        let _ = tcp.set_nodelay(true);
        let sender = match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone()).map_err(transport)?;
                let stream = tls.connect(name, tcp).await.map_err(transport)?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(transport)?;
                tokio::spawn(conn);
                sender
            }
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(transport)?;
                tokio::spawn(conn);
                sender
            }
        };
        self.sender = Some(sender);
        Ok(())
    }

    fn host_for_connect(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => self.host.clone(),
        }
    }

    async fn request(
        &mut self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<HttpResponse, ClientError> {
        let (https, host, port, path) = split(url)?;
        if https != self.https || host != self.host || port != self.port {
            return Err(ClientError::Protocol(format!(
                "{url} is on another server than the directory"
            )));
        }
        let host_header = format!("{}:{}", self.host_for_connect(), self.port);
        for attempt in 0..2 {
            if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
                tokio::time::timeout(REQUEST_TIMEOUT, self.connect())
                    .await
                    .map_err(|_| ClientError::Timeout(format!("connecting for {url}")))??;
            }
            let Some(sender) = self.sender.as_mut() else {
                return Err(ClientError::Transport("no connection".into()));
            };
            if sender.ready().await.is_err() {
                self.sender = None;
                continue;
            }
            let mut req = http::Request::builder()
                .method(method)
                .uri(path.as_str())
                .header(http::header::HOST, host_header.as_str())
                .header(http::header::USER_AGENT, "ragw-acme-client");
            if let Some(ct) = content_type {
                req = req.header(http::header::CONTENT_TYPE, ct);
            }
            let req = req
                .body(Full::new(Bytes::from(body.clone())))
                .map_err(transport)?;
            let sent = tokio::time::timeout(REQUEST_TIMEOUT, async {
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                let headers: Vec<(String, String)> = resp
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
                    })
                    .collect();
                let body = resp.into_body().collect().await?.to_bytes().to_vec();
                Ok::<_, hyper::Error>(HttpResponse {
                    status,
                    headers,
                    body,
                })
            })
            .await;
            let sent = match sent {
                Ok(r) => r,
                Err(_) => {
                    // The connection may be wedged; the next request opens a new one.
                    self.sender = None;
                    return Err(ClientError::Timeout(format!(
                        "{method} {url}: no answer within {REQUEST_TIMEOUT:?}"
                    )));
                }
            };
            match sent {
                Ok(resp) => return Ok(resp),
                // A keep-alive connection the server closed meanwhile: reconnect once.
                Err(e) if attempt == 0 => {
                    tracing::debug!(error = %e, "request failed; reconnecting");
                    self.sender = None;
                }
                Err(e) => return Err(transport(e)),
            }
        }
        Err(ClientError::Transport(
            "the server keeps closing the connection".into(),
        ))
    }
}

/// An account key and its JWS algorithm.
pub enum ClientKey {
    Es256(EcdsaKeyPair),
    Es384(EcdsaKeyPair),
    Es512(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Rs256(RsaKeyPair),
}

impl ClientKey {
    pub fn es256() -> ClientKey {
        // Generation only fails when the system RNG does; nothing can proceed then.
        #[allow(clippy::expect_used)]
        ClientKey::Es256(
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("P-256 key generation"),
        )
    }

    pub fn generate(alg: &str) -> Result<ClientKey, ClientError> {
        let fail = |_| ClientError::Protocol("key generation failed".into());
        Ok(match alg {
            "ES256" => ClientKey::Es256(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(fail)?,
            ),
            "ES384" => ClientKey::Es384(
                EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).map_err(fail)?,
            ),
            "ES512" => ClientKey::Es512(
                EcdsaKeyPair::generate(&ECDSA_P521_SHA512_FIXED_SIGNING).map_err(fail)?,
            ),
            "EdDSA" => ClientKey::EdDsa(Ed25519KeyPair::generate().map_err(fail)?),
            "RS256" => ClientKey::Rs256(RsaKeyPair::generate(KeySize::Rsa2048).map_err(fail)?),
            other => return Err(ClientError::Protocol(format!("unknown algorithm {other}"))),
        })
    }

    pub fn alg(&self) -> &'static str {
        match self {
            ClientKey::Es256(_) => "ES256",
            ClientKey::Es384(_) => "ES384",
            ClientKey::Es512(_) => "ES512",
            ClientKey::EdDsa(_) => "EdDSA",
            ClientKey::Rs256(_) => "RS256",
        }
    }

    pub fn jwk(&self) -> Value {
        match self {
            ClientKey::Es256(k) | ClientKey::Es384(k) | ClientKey::Es512(k) => {
                let p = k.public_key().as_ref();
                let n = (p.len() - 1) / 2;
                let crv = match n {
                    32 => "P-256",
                    48 => "P-384",
                    _ => "P-521",
                };
                json!({"kty": "EC", "crv": crv, "x": b64::encode(&p[1..=n]), "y": b64::encode(&p[1 + n..])})
            }
            ClientKey::EdDsa(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64::encode(k.public_key().as_ref())})
            }
            ClientKey::Rs256(k) => {
                let pk = k.public_key();
                json!({
                    "kty": "RSA",
                    "n": b64::encode(pk.modulus().big_endian_without_leading_zero()),
                    "e": b64::encode(pk.exponent().big_endian_without_leading_zero()),
                })
            }
        }
    }

    pub fn thumbprint(&self) -> String {
        crate::jws::Jwk::from_value(&self.jwk())
            .map(|j| j.thumbprint())
            .unwrap_or_default()
    }

    pub fn sign(&self, input: &[u8]) -> Result<Vec<u8>, ClientError> {
        let rng = SystemRandom::new();
        let fail = |_| ClientError::Protocol("signing failed".into());
        Ok(match self {
            ClientKey::Es256(k) | ClientKey::Es384(k) | ClientKey::Es512(k) => {
                k.sign(&rng, input).map_err(fail)?.as_ref().to_vec()
            }
            ClientKey::EdDsa(k) => k.sign(input).as_ref().to_vec(),
            ClientKey::Rs256(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, input, &mut sig)
                    .map_err(fail)?;
                sig
            }
        })
    }

    /// A flattened JWS over `protected` and `payload` (`None`: POST-as-GET).
    pub fn jws(&self, protected: &Value, payload: Option<&Value>) -> Result<Value, ClientError> {
        let p64 = b64::encode(protected.to_string());
        let pl64 = payload
            .map(|p| b64::encode(p.to_string()))
            .unwrap_or_default();
        let sig = self.sign(format!("{p64}.{pl64}").as_bytes())?;
        Ok(json!({"protected": p64, "payload": pl64, "signature": b64::encode(sig)}))
    }
}

/// The directory's URLs.
#[derive(Debug, Clone)]
pub struct Directory {
    pub new_nonce: String,
    pub new_account: String,
    pub new_order: String,
    pub new_authz: Option<String>,
    pub revoke_cert: String,
    pub key_change: String,
    pub meta: Value,
}

/// An ACME client with one account.
pub struct AcmeClient {
    transport: Transport,
    pub directory_url: String,
    pub dir: Directory,
    pub key: ClientKey,
    pub kid: Option<String>,
    nonce: Option<String>,
    /// Signed POSTs sent (retries included).
    pub posts: u64,
    /// badNonce answers that were retried.
    pub bad_nonce_retries: u64,
}

impl AcmeClient {
    /// Reads the directory; `root_pem` is the trust anchor for an https directory.
    pub async fn connect(
        directory_url: &str,
        root_pem: Option<&str>,
    ) -> Result<AcmeClient, ClientError> {
        Self::connect_with_key(directory_url, root_pem, ClientKey::es256()).await
    }

    pub async fn connect_with_key(
        directory_url: &str,
        root_pem: Option<&str>,
        key: ClientKey,
    ) -> Result<AcmeClient, ClientError> {
        let mut transport = Transport::new(directory_url, root_pem)?;
        let d = transport
            .request("GET", directory_url, None, Vec::new())
            .await?
            .ok()?
            .json();
        let s = |k: &str| -> Result<String, ClientError> {
            d.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ClientError::Protocol(format!("the directory has no {k}")))
        };
        let dir = Directory {
            new_nonce: s("newNonce")?,
            new_account: s("newAccount")?,
            new_order: s("newOrder")?,
            new_authz: d
                .get("newAuthz")
                .and_then(Value::as_str)
                .map(str::to_string),
            revoke_cert: s("revokeCert")?,
            key_change: s("keyChange")?,
            meta: d.get("meta").cloned().unwrap_or(Value::Null),
        };
        Ok(AcmeClient {
            transport,
            directory_url: directory_url.to_string(),
            dir,
            key,
            kid: None,
            nonce: None,
            posts: 0,
            bad_nonce_retries: 0,
        })
    }

    /// The directory's `meta` object.
    pub fn get_directory_meta(&self) -> Value {
        self.dir.meta.clone()
    }

    /// A fresh nonce from newNonce (HEAD).
    pub async fn fresh_nonce(&mut self) -> Result<String, ClientError> {
        let url = self.dir.new_nonce.clone();
        let r = self
            .transport
            .request("HEAD", &url, None, Vec::new())
            .await?;
        r.header("replay-nonce")
            .map(str::to_string)
            .ok_or_else(|| ClientError::Protocol("newNonce gave no Replay-Nonce".into()))
    }

    async fn take_nonce(&mut self) -> Result<String, ClientError> {
        match self.nonce.take() {
            Some(n) => Ok(n),
            None => self.fresh_nonce().await,
        }
    }

    /// Sends `body` as is (for hostile requests); keeps the Replay-Nonce it gets back.
    pub async fn send_raw(
        &mut self,
        method: &str,
        url: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<HttpResponse, ClientError> {
        let r = self
            .transport
            .request(method, url, content_type, body)
            .await?;
        if let Some(n) = r.header("replay-nonce") {
            self.nonce = Some(n.to_string());
        }
        Ok(r)
    }

    pub fn protected(&self, url: &str, nonce: &str) -> Value {
        let mut p = json!({"alg": self.key.alg(), "nonce": nonce, "url": url});
        match (&self.kid, p.as_object_mut()) {
            (Some(kid), Some(m)) => {
                m.insert("kid".into(), Value::String(kid.clone()));
            }
            (None, Some(m)) => {
                m.insert("jwk".into(), self.key.jwk());
            }
            _ => {}
        }
        p
    }

    /// A signed POST (`payload` `None` = POST-as-GET), retrying badNonce twice.
    pub async fn post(
        &mut self,
        url: &str,
        payload: Option<&Value>,
    ) -> Result<HttpResponse, ClientError> {
        let mut last = None;
        for _ in 0..3 {
            let nonce = self.take_nonce().await?;
            let body = self.key.jws(&self.protected(url, &nonce), payload)?;
            self.posts += 1;
            let r = self
                .send_raw(
                    "POST",
                    url,
                    Some("application/jose+json"),
                    body.to_string().into_bytes(),
                )
                .await?;
            if r.problem_type().as_deref() == Some("badNonce") {
                self.bad_nonce_retries += 1;
                last = Some(r);
                continue;
            }
            return Ok(r);
        }
        last.ok_or_else(|| ClientError::Protocol("no response".into()))
    }

    async fn post_ok(
        &mut self,
        url: &str,
        payload: Option<&Value>,
    ) -> Result<HttpResponse, ClientError> {
        self.post(url, payload).await?.ok()
    }

    pub async fn new_account(
        &mut self,
        contacts: &[&str],
        eab: Option<(&str, &[u8])>,
    ) -> Result<Value, ClientError> {
        let url = self.dir.new_account.clone();
        let mut payload = json!({"termsOfServiceAgreed": true, "contact": contacts});
        if let Some((kid, mac)) = eab {
            let protected = json!({"alg": "HS256", "kid": kid, "url": url});
            let p64 = b64::encode(protected.to_string());
            let pl64 = b64::encode(self.key.jwk().to_string());
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, mac);
            let tag = aws_lc_rs::hmac::sign(&key, format!("{p64}.{pl64}").as_bytes());
            payload["externalAccountBinding"] =
                json!({"protected": p64, "payload": pl64, "signature": b64::encode(tag.as_ref())});
        }
        let r = self.post_ok(&url, Some(&payload)).await?;
        self.kid = Some(
            r.header("location")
                .ok_or_else(|| ClientError::Protocol("newAccount gave no Location".into()))?
                .to_string(),
        );
        Ok(r.json())
    }

    /// newOrder for `(type, value, ancestorDomain)` identifiers; returns (order URL, order).
    pub async fn new_order(
        &mut self,
        identifiers: &[(&str, &str, Option<&str>)],
    ) -> Result<(String, Value), ClientError> {
        let ids: Vec<Value> = identifiers
            .iter()
            .map(|(t, v, a)| {
                let mut i = json!({"type": t, "value": v});
                if let Some(a) = a {
                    i["ancestorDomain"] = json!(a);
                }
                i
            })
            .collect();
        let url = self.dir.new_order.clone();
        let r = self
            .post_ok(&url, Some(&json!({"identifiers": ids})))
            .await?;
        let loc = r
            .header("location")
            .ok_or_else(|| ClientError::Protocol("newOrder gave no Location".into()))?
            .to_string();
        Ok((loc, r.json()))
    }

    /// newAuthz (RFC 8555 §7.4.1), optionally asking for subdomain authorization (RFC 9444).
    pub async fn new_authz(
        &mut self,
        name: &str,
        subdomains: bool,
    ) -> Result<(String, Value), ClientError> {
        let url = self
            .dir
            .new_authz
            .clone()
            .ok_or_else(|| ClientError::Protocol("the server has no newAuthz".into()))?;
        let mut ident = json!({"type": "dns", "value": name});
        if subdomains {
            ident["subdomainAuthAllowed"] = json!(true);
        }
        let r = self
            .post_ok(&url, Some(&json!({"identifier": ident})))
            .await?;
        let loc = r
            .header("location")
            .ok_or_else(|| ClientError::Protocol("newAuthz gave no Location".into()))?
            .to_string();
        Ok((loc, r.json()))
    }

    pub async fn get(&mut self, url: &str) -> Result<Value, ClientError> {
        Ok(self.post_ok(url, None).await?.json())
    }

    pub fn key_authorization(&self, token: &str) -> String {
        format!("{token}.{}", self.key.thumbprint())
    }

    /// The challenge of `kind` in an authorization object.
    pub fn challenge(authz: &Value, kind: &str) -> Result<(String, String), ClientError> {
        authz
            .get("challenges")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
            .and_then(|c| {
                Some((
                    c.get("url")?.as_str()?.to_string(),
                    c.get("token")?.as_str()?.to_string(),
                ))
            })
            .ok_or_else(|| ClientError::Protocol(format!("no {kind} challenge")))
    }

    pub async fn respond(&mut self, challenge_url: &str) -> Result<Value, ClientError> {
        Ok(self.post_ok(challenge_url, Some(&json!({}))).await?.json())
    }

    /// Polls (POST-as-GET) until `status` is one of `done`, for at most `timeout`.
    pub async fn poll(
        &mut self,
        url: &str,
        done: &[&str],
        timeout: Duration,
    ) -> Result<Value, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut wait = Duration::from_millis(20);
        loop {
            let v = self.get(url).await?;
            let status = v.get("status").and_then(Value::as_str).unwrap_or("");
            if done.contains(&status) {
                return Ok(v);
            }
            if matches!(status, "invalid") {
                return Err(ClientError::Protocol(format!("{url} became invalid: {v}")));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Timeout(format!("{url} is still {status}")));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
    }

    pub async fn finalize(
        &mut self,
        finalize_url: &str,
        csr_der: &[u8],
    ) -> Result<HttpResponse, ClientError> {
        self.post(finalize_url, Some(&json!({"csr": b64::encode(csr_der)})))
            .await
    }

    pub async fn download(&mut self, cert_url: &str) -> Result<String, ClientError> {
        let r = self.post_ok(cert_url, None).await?;
        String::from_utf8(r.body)
            .map_err(|_| ClientError::Protocol("certificate is not PEM text".into()))
    }

    pub async fn revoke(
        &mut self,
        cert_der: &[u8],
        reason: Option<i64>,
    ) -> Result<HttpResponse, ClientError> {
        let url = self.dir.revoke_cert.clone();
        let mut p = json!({"certificate": b64::encode(cert_der)});
        if let Some(r) = reason {
            p["reason"] = json!(r);
        }
        self.post(&url, Some(&p)).await
    }
}

/// A CSR for `dns` names and `ips` with a fresh key; returns (DER, key PEM).
pub fn make_csr(dns: &[String], ips: &[IpAddr]) -> Result<(Vec<u8>, String), ClientError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(first) = dns.first() {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.as_str());
    }
    let mut sans = Vec::new();
    for d in dns {
        sans.push(rcgen::SanType::DnsName(d.as_str().try_into().map_err(
            |e: rcgen::Error| ClientError::Protocol(e.to_string()),
        )?));
    }
    sans.extend(ips.iter().copied().map(rcgen::SanType::IpAddress));
    params.subject_alt_names = sans;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok((csr.der().to_vec(), key.serialize_pem()))
}
