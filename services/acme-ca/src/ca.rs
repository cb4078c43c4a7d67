//! The sans-IO ACME core: [`Ca::handle`] takes a request (method, path, content type, body)
//! and returns the response; state goes through [`AcmeStore`], challenge checks through
//! [`Validator`].

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use der::{Decode, DecodePem, Encode};
use ragw_domain::names::{is_localhost, is_valid_dns_name, normalize_dns_name};
use ragw_store::{
    AccountStatus, AcmeAccount, AcmeAuthz, AcmeChallenge, AcmeIdentifier, AcmeOrder, AcmeStore,
    AuthzStatus, ChallengeStatus, NewAcmeAccount, NewAcmeCertificate, NewAcmeOrder, NewAuthzSpec,
    NewOrderIdentifier, OrderIdentifier, OrderStatus, StoreError, ValidationOutcome, account_actor,
};
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use x509_cert::Certificate;
use x509_cert::request::CertReq;

use crate::b64;
use crate::config::CaConfig;
use crate::error::CaError;
use crate::jws::{Alg, Jwk, Jws, verify_eab};
use crate::metrics::{CaMetrics, ProblemLabels, RequestLabels, ResourceLabel, problem_type};
use crate::nonce::NonceKey;
use crate::pki::{CaPki, ForeignKey, LeafRequest, micros};
use crate::policy;
use crate::problem::{Problem, ProblemType};
use crate::validate::{NetValidator, Validator};

/// An HTTP request as the core sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path, without query string.
    pub path: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn json(status: u16, v: &Value) -> Self {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: v.to_string().into_bytes(),
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn problem(p: &Problem) -> Self {
        let mut r = Response {
            status: p.status,
            headers: vec![("Content-Type".into(), "application/problem+json".into())],
            body: p.to_json().to_string().into_bytes(),
        };
        if let Some(l) = &p.location {
            r.headers.push(("Location".into(), l.clone()));
        }
        if let Some(s) = p.retry_after {
            r.headers.push(("Retry-After".into(), s.to_string()));
        }
        r
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Directory,
    NewNonce,
    NewAccount,
    NewOrder,
    NewAuthz,
    RevokeCert,
    KeyChange,
    Account(String),
    /// An account's orders list, from the first page or after a cursor (an order id).
    AccountOrders(String, Option<String>),
    Order(String),
    Finalize(String),
    Authz(String),
    Challenge(String),
    Cert(String),
    Crl,
    RootPem,
    ChainPem,
}

impl Route {
    /// The resource name in metrics: the route without the object id.
    fn resource(&self) -> &'static str {
        match self {
            Route::Directory => "directory",
            Route::NewNonce => "newNonce",
            Route::NewAccount => "newAccount",
            Route::NewOrder => "newOrder",
            Route::NewAuthz => "newAuthz",
            Route::RevokeCert => "revokeCert",
            Route::KeyChange => "keyChange",
            Route::Account(_) => "account",
            Route::AccountOrders(..) => "orders",
            Route::Order(_) => "order",
            Route::Finalize(_) => "finalize",
            Route::Authz(_) => "authorization",
            Route::Challenge(_) => "challenge",
            Route::Cert(_) => "certificate",
            Route::Crl => "crl",
            Route::RootPem => "root",
            Route::ChainPem => "chain",
        }
    }
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn route(rel: &str) -> Option<Route> {
    let parts: Vec<&str> = rel.split('/').collect();
    Some(match parts.as_slice() {
        ["", "directory"] => Route::Directory,
        ["", "new-nonce"] => Route::NewNonce,
        ["", "new-account"] => Route::NewAccount,
        ["", "new-order"] => Route::NewOrder,
        ["", "new-authz"] => Route::NewAuthz,
        ["", "revoke-cert"] => Route::RevokeCert,
        ["", "key-change"] => Route::KeyChange,
        ["", "crl"] => Route::Crl,
        ["", "root.pem"] => Route::RootPem,
        ["", "chain.pem"] => Route::ChainPem,
        ["", "acct", id] if is_id(id) => Route::Account(id.to_string()),
        ["", "acct", id, "orders"] if is_id(id) => Route::AccountOrders(id.to_string(), None),
        ["", "acct", id, "orders", after] if is_id(id) && is_id(after) => {
            Route::AccountOrders(id.to_string(), Some(after.to_string()))
        }
        ["", "order", id] if is_id(id) => Route::Order(id.to_string()),
        ["", "order", id, "finalize"] if is_id(id) => Route::Finalize(id.to_string()),
        ["", "authz", id] if is_id(id) => Route::Authz(id.to_string()),
        ["", "chall", id] if is_id(id) => Route::Challenge(id.to_string()),
        ["", "cert", id] if is_id(id) => Route::Cert(id.to_string()),
        _ => return None,
    })
}

fn now_secs() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn now_micros() -> i64 {
    micros(OffsetDateTime::now_utc())
}

fn rfc3339(us: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::NotFound(what) => Problem::not_found(&what),
        StoreError::Conflict(m) => Problem::malformed(m).status(409),
        other => {
            tracing::error!(error = %other, "ACME store operation failed");
            Problem::internal("the CA could not reach its store; retry later")
        }
    }
}

/// What a signed request was authenticated as.
enum Signer {
    Account(AcmeAccount, Jwk),
    Key(Jwk),
}

struct Verified {
    jws: Jws,
    signer: Signer,
}

impl Verified {
    /// `None` for POST-as-GET (empty payload), else the JSON object.
    fn payload(&self) -> Result<Option<Map<String, Value>>, Problem> {
        if self.jws.payload.is_empty() {
            return Ok(None);
        }
        match serde_json::from_slice::<Value>(&self.jws.payload) {
            Ok(Value::Object(m)) => Ok(Some(m)),
            Ok(_) => Err(Problem::malformed("the JWS payload must be a JSON object")),
            Err(e) => Err(Problem::malformed(format!(
                "the JWS payload is not JSON: {e}"
            ))),
        }
    }

    fn object(&self) -> Result<Map<String, Value>, Problem> {
        self.payload()?.ok_or_else(|| {
            Problem::malformed("this resource needs a JSON payload, not POST-as-GET")
        })
    }

    fn account(&self) -> Result<&AcmeAccount, Problem> {
        match &self.signer {
            Signer::Account(a, _) => Ok(a),
            Signer::Key(_) => Err(Problem::malformed(
                "this request must be signed with an account key (\"kid\")",
            )),
        }
    }
}

struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `Err(seconds to wait)` when the account is over its rate.
    fn take(&self, key: &str) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let Ok(mut map) = self.buckets.lock() else {
            return Ok(());
        };
        if map.len() > 50_000 {
            let full = self.burst;
            let rate = self.per_second;
            map.retain(|_, (t, at)| *t + now.duration_since(*at).as_secs_f64() * rate < full);
        }
        let (tokens, at) = map.entry(key.to_string()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

/// The local ACME CA.
pub struct Ca {
    cfg: CaConfig,
    base: String,
    base_path: String,
    store: Arc<dyn AcmeStore>,
    pki: Arc<CaPki>,
    nonces: NonceKey,
    validator: Arc<dyn Validator>,
    eab_keys: Vec<(String, Vec<u8>)>,
    limiter: RateLimiter,
    crl_cache: Mutex<Option<(Instant, Vec<u8>)>>,
    server_names: Vec<String>,
    server_ips: Vec<IpAddr>,
    metrics: CaMetrics,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// `https://host:port/prefix` → (`host`, `/prefix`).
fn split_url(url: &str) -> (String, String) {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, String::new()),
    };
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("").to_string()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string()
    };
    (host, path.trim_end_matches('/').to_string())
}

/// RFC 8555 §7.3.6: requests on behalf of a deactivated (or revoked) account are refused,
/// whether it is named by `kid` or found by its key in newAccount.
fn refuse_unless_valid(acct: &AcmeAccount) -> Result<(), Problem> {
    if acct.status == AccountStatus::Valid {
        Ok(())
    } else {
        Err(Problem::unauthorized(format!(
            "account {} is {}",
            acct.id, acct.status
        )))
    }
}

const NONCE_SECRET: &str = "acme-ca.nonce-hmac-key";
const ALLOWED_REASONS: &[i64] = &[0, 1, 3, 4, 5, 9];
const MAX_CONTACTS: usize = 10;
const CRL_CACHE: StdDuration = StdDuration::from_secs(30);

impl Ca {
    /// Validates `cfg`, loads (or creates) the key material and the shared nonce key. `bound`
    /// is the listener's address, used when `external_url` is not set.
    pub async fn open(
        mut cfg: CaConfig,
        store: Arc<dyn AcmeStore>,
        bound: SocketAddr,
    ) -> Result<Ca, CaError> {
        cfg.validate()?;
        if cfg.external_url.is_none() && bound.ip().is_unspecified() {
            return Err(CaError::Config(format!(
                "the CA listens on {bound}; set ca.external_url to the URL clients use"
            )));
        }
        let base = cfg.base_url(bound);
        let (host, base_path) = split_url(&base);
        let crl_url = format!("{base}/crl");
        let pki_cfg = cfg.clone();
        let pki = tokio::task::spawn_blocking(move || CaPki::load_or_create(&pki_cfg, crl_url))
            .await
            .map_err(|e| CaError::Other(format!("key generation task: {e}")))??;
        if let Some(w) = pki.intermediate_warning(OffsetDateTime::now_utc()) {
            tracing::warn!("{w}");
        }
        let candidate = hex::encode(rand::random::<[u8; 32]>());
        let secret = store.acme_secret(NONCE_SECRET, &candidate).await?;
        let secret = hex::decode(secret)
            .map_err(|_| CaError::Other("the stored nonce key is not hex".into()))?;
        let mut eab_keys = Vec::new();
        for k in &cfg.eab_keys {
            let key = b64::decode(&k.hmac_key, 1024)
                .map_err(|e| CaError::Config(format!("ca.eab_keys {}: {e}", k.kid)))?;
            eab_keys.push((k.kid.clone(), key));
        }
        let mut server_names = cfg.ca_names.clone();
        let mut server_ips = cfg.server_ips.clone();
        match host.parse::<IpAddr>() {
            Ok(ip) if ragw_domain::names::is_local_ip(&ip) => server_ips.push(ip),
            Ok(ip) => tracing::warn!(
                %ip,
                "external_url names a public address, which this CA never certifies; clients \
                 must use a name from ca.ca_names"
            ),
            Err(_) => {
                let h = normalize_dns_name(&host);
                if is_valid_dns_name(&h) && !is_localhost(&h) && !server_names.contains(&h) {
                    server_names.push(h);
                } else if is_localhost(&h) {
                    tracing::warn!(
                        "external_url uses localhost, which is never certified; clients must \
                         use a name from ca.ca_names or an IP address"
                    );
                }
            }
        }
        if server_ips.is_empty() && bound.ip().is_loopback() {
            server_ips.push(bound.ip());
        }
        server_ips.sort();
        server_ips.dedup();
        let validator = Arc::new(NetValidator {
            resolver: cfg.dns_resolver,
            timeout: StdDuration::from_millis(cfg.dns_timeout_ms),
            http_port: cfg.http01_port,
        });
        Ok(Ca {
            nonces: NonceKey::new(&secret, cfg.nonce_lifetime_seconds),
            limiter: RateLimiter {
                per_second: f64::from(cfg.account_requests_per_second),
                burst: f64::from(cfg.account_request_burst.max(1)),
                buckets: Mutex::new(HashMap::new()),
            },
            cfg,
            base,
            base_path,
            store,
            pki: Arc::new(pki),
            validator,
            eab_keys,
            crl_cache: Mutex::new(None),
            server_names,
            server_ips,
            metrics: CaMetrics::default(),
        })
    }

    /// Replaces the challenge validator (tests).
    pub fn with_validator(mut self, v: Arc<dyn Validator>) -> Self {
        self.validator = v;
        self
    }

    /// The CA's counters and latency histograms, for a component's /metrics.
    pub fn metrics(&self) -> &CaMetrics {
        &self.metrics
    }

    pub fn directory_url(&self) -> String {
        self.url("/directory")
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn root_pem(&self) -> &str {
        self.pki.root_pem()
    }

    /// Intermediate then root, PEM.
    pub fn chain_pem(&self) -> String {
        self.pki.chain_pem()
    }

    pub fn config(&self) -> &CaConfig {
        &self.cfg
    }

    pub fn store(&self) -> &Arc<dyn AcmeStore> {
        &self.store
    }

    fn url(&self, rel: &str) -> String {
        format!("{}{rel}", self.base)
    }

    /// Issues (and records) the CA's own HTTPS certificate: leaf and intermediate DER, and the
    /// PKCS#8 key.
    pub async fn issue_server_certificate(&self) -> Result<(Vec<Vec<u8>>, Vec<u8>), CaError> {
        let (leaf, key, foreign) = self.pki.issue_server(
            &self.server_names,
            &self.server_ips,
            self.cfg.leaf_validity_days,
        )?;
        let mut identifiers: Vec<AcmeIdentifier> = self
            .server_names
            .iter()
            .map(|n| AcmeIdentifier::dns(n.clone()))
            .collect();
        identifiers.extend(
            self.server_ips
                .iter()
                .map(|i| AcmeIdentifier::ip(i.to_string())),
        );
        let chain = vec![leaf.der.clone(), self.pki.intermediate_der().to_vec()];
        self.store
            .acme_record_certificate(
                NewAcmeCertificate {
                    serial_hex: leaf.serial_hex.clone(),
                    order_id: None,
                    account_id: None,
                    identifiers,
                    spki_sha256: foreign.spki_sha256_hex(),
                    profile: "ca-server".into(),
                    not_before: leaf.not_before,
                    not_after: leaf.not_after,
                    chain: chain.clone(),
                },
                "ca-https-server",
            )
            .await?;
        Ok((chain, key.serialize_der()))
    }

    /// Logs a warning while the intermediate is within its last leaf lifetime (the CA replaces
    /// it only at start); called at start and daily by [`crate::serve_ca`].
    pub fn check_intermediate(&self) {
        if let Some(w) = self.pki.intermediate_warning(OffsetDateTime::now_utc()) {
            tracing::warn!("{w}");
        }
    }

    pub fn server_validity(&self) -> StdDuration {
        StdDuration::from_secs(u64::from(self.cfg.leaf_validity_days) * 86_400)
    }

    /// Handles one request. Never panics on peer input; every refusal is a problem document.
    pub async fn handle(&self, req: Request) -> Response {
        let started = Instant::now();
        let resp = self.dispatch(&req).await;
        let resource = req
            .path
            .strip_prefix(&self.base_path)
            .and_then(route)
            .map_or("unknown", |r| r.resource());
        let method = match req.method.as_str() {
            m @ ("GET" | "HEAD" | "POST") => m.to_string(),
            _ => "other".to_string(),
        };
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                resource,
                method,
                status: resp.status,
            })
            .inc();
        self.metrics
            .duration
            .get_or_create(&ResourceLabel { resource })
            .observe(started.elapsed().as_secs_f64());
        if resp.status >= 400
            && let Some(t) = problem_type(&resp.body)
        {
            self.metrics
                .problems
                .get_or_create(&ProblemLabels { r#type: t })
                .inc();
        }
        tracing::debug!(
            method = %req.method,
            path = %req.path,
            status = resp.status,
            micros = started.elapsed().as_micros() as u64,
            "acme request"
        );
        resp
    }

    async fn dispatch(&self, req: &Request) -> Response {
        let rel = match req.path.strip_prefix(&self.base_path) {
            Some(r) if r.starts_with('/') => r,
            _ => return self.finish(Response::problem(&Problem::not_found("resource"))),
        };
        let Some(route) = route(rel) else {
            return self.finish(Response::problem(&Problem::not_found("resource")));
        };
        let method = req.method.as_str();
        match (&route, method) {
            (Route::Directory, "GET") => self.finish(Response::json(200, &self.directory())),
            (Route::NewNonce, "HEAD") => self.finish(self.with_nonce(Response::new(200))),
            (Route::NewNonce, "GET") => self.finish(self.with_nonce(Response::new(204))),
            (Route::Crl, "GET") => match self.crl().await {
                Ok(der) => Response {
                    status: 200,
                    headers: vec![("Content-Type".into(), "application/pkix-crl".into())],
                    body: der,
                },
                Err(p) => Response::problem(&p),
            },
            (Route::RootPem, "GET") => Response {
                status: 200,
                headers: vec![(
                    "Content-Type".into(),
                    "application/pem-certificate-chain".into(),
                )],
                body: self.root_pem().as_bytes().to_vec(),
            },
            (Route::ChainPem, "GET") => Response {
                status: 200,
                headers: vec![(
                    "Content-Type".into(),
                    "application/pem-certificate-chain".into(),
                )],
                body: self.chain_pem().into_bytes(),
            },
            (
                Route::Directory | Route::NewNonce | Route::Crl | Route::RootPem | Route::ChainPem,
                _,
            ) => {
                let allow = if route == Route::NewNonce {
                    "GET, HEAD"
                } else {
                    "GET"
                };
                self.finish(
                    Response::problem(
                        &Problem::malformed(format!("{method} is not allowed here")).status(405),
                    )
                    .header("Allow", allow),
                )
            }
            (_, "POST") => {
                let resp = match self.post(req, rel, &route).await {
                    Ok(r) => r,
                    Err(p) => {
                        if p.status >= 500 {
                            tracing::warn!(path = %req.path, problem = %p, "ACME request failed");
                        } else {
                            tracing::debug!(path = %req.path, problem = %p, "ACME request refused");
                        }
                        Response::problem(&p)
                    }
                };
                self.finish(self.with_nonce(resp))
            }
            _ => self.finish(
                Response::problem(
                    &Problem::malformed(format!(
                        "{method} is not allowed here; ACME resources are read with POST-as-GET"
                    ))
                    .status(405),
                )
                .header("Allow", "POST"),
            ),
        }
    }

    /// A problem response with the usual headers, for refusals the HTTP shell makes itself
    /// (oversized or slow bodies).
    pub fn refuse(&self, p: &Problem) -> Response {
        self.finish(self.with_nonce(Response::problem(p)))
    }

    fn finish(&self, r: Response) -> Response {
        let dir = self.directory_url();
        r.header("Link", format!("<{dir}>;rel=\"index\""))
            .header("Cache-Control", "no-store")
    }

    fn with_nonce(&self, r: Response) -> Response {
        r.header("Replay-Nonce", self.nonces.issue(now_secs()))
    }

    fn directory(&self) -> Value {
        let profiles: Map<String, Value> = self
            .cfg
            .profiles
            .iter()
            .map(|(k, p)| (k.clone(), Value::String(p.description.clone())))
            .collect();
        let mut meta = json!({
            "externalAccountRequired": self.cfg.eab_required,
            "subdomainAuthAllowed": self.cfg.subdomain_auth,
            "profiles": profiles,
        });
        if let (Some(tos), Some(m)) = (&self.cfg.terms_of_service, meta.as_object_mut()) {
            m.insert("termsOfService".into(), Value::String(tos.clone()));
        }
        json!({
            "newNonce": self.url("/new-nonce"),
            "newAccount": self.url("/new-account"),
            "newOrder": self.url("/new-order"),
            "newAuthz": self.url("/new-authz"),
            "revokeCert": self.url("/revoke-cert"),
            "keyChange": self.url("/key-change"),
            "meta": meta,
        })
    }

    // -----------------------------------------------------------------------------------------
    // Signed requests

    async fn post(&self, req: &Request, rel: &str, route: &Route) -> Result<Response, Problem> {
        let media = req
            .content_type
            .as_deref()
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        if media.as_deref() != Some("application/jose+json") {
            return Err(Problem::malformed(
                "the Content-Type of an ACME POST must be application/jose+json",
            )
            .status(415));
        }
        if req.body.len() > self.cfg.max_body_bytes {
            return Err(Problem::malformed(format!(
                "the request body is larger than {} bytes",
                self.cfg.max_body_bytes
            ))
            .status(413));
        }
        let v = self.verify(req, rel, route).await?;
        match route {
            Route::NewAccount => self.new_account(&v).await,
            Route::NewOrder => self.new_order(&v).await,
            Route::NewAuthz => self.new_authz(&v).await,
            Route::RevokeCert => self.revoke(&v).await,
            Route::KeyChange => self.key_change(&v).await,
            Route::Account(id) => self.account(&v, id).await,
            Route::AccountOrders(id, after) => self.account_orders(&v, id, after.as_deref()).await,
            Route::Order(id) => self.order(&v, id).await,
            Route::Finalize(id) => self.finalize(&v, id).await,
            Route::Authz(id) => self.authz(&v, id).await,
            Route::Challenge(id) => self.challenge(&v, id).await,
            Route::Cert(serial) => self.certificate(&v, serial).await,
            Route::Directory | Route::NewNonce | Route::Crl | Route::RootPem | Route::ChainPem => {
                Err(Problem::malformed("POST is not allowed here").status(405))
            }
        }
    }

    /// RFC 8555 §6.2–6.5: shape, algorithm, URL, key selection, nonce and signer (one store
    /// transaction), signature, then the nonce's freshness.
    async fn verify(&self, req: &Request, rel: &str, route: &Route) -> Result<Verified, Problem> {
        let jws = Jws::parse_body(&req.body, self.cfg.max_body_bytes)?;
        let alg = Alg::parse(&jws.header.alg)?;
        let expected_url = self.url(rel);
        match jws.header.url.as_deref() {
            None => {
                return Err(Problem::malformed("the protected header has no \"url\""));
            }
            Some(u) if u != expected_url => {
                return Err(Problem::unauthorized(format!(
                    "the protected header \"url\" {:?} is not the URL this request was sent to ({expected_url})",
                    u.chars().take(200).collect::<String>()
                )));
            }
            Some(_) => {}
        }
        enum Source<'a> {
            Key(&'a Value),
            Account(String),
        }
        let source = match (&jws.header.jwk, &jws.header.kid, route) {
            (Some(_), Some(_), _) => {
                return Err(Problem::malformed(
                    "the protected header must carry either \"jwk\" or \"kid\", not both",
                ));
            }
            (None, None, _) => {
                return Err(Problem::malformed(
                    "the protected header carries neither \"jwk\" nor \"kid\"",
                ));
            }
            (None, Some(_), Route::NewAccount) => {
                return Err(Problem::malformed(
                    "newAccount must be signed with \"jwk\", not \"kid\"",
                ));
            }
            (Some(jwk), None, Route::NewAccount | Route::RevokeCert) => Source::Key(jwk),
            (Some(_), None, _) => {
                return Err(Problem::malformed(
                    "this request must be signed by an account (\"kid\"), not with \"jwk\"",
                ));
            }
            (None, Some(kid), _) => Source::Account(self.account_id_of(kid)?.to_string()),
        };
        let (nonce_id, expires) = self
            .nonces
            .check(jws.header.nonce.as_deref(), now_secs())
            .map_err(|e| Problem::new(ProblemType::BadNonce, e.detail()))?;
        // One store round trip per request for the nonce and the signer; the nonce is spent
        // even if the signature then fails (only its legitimate holder could have seen it).
        let account_id = match &source {
            Source::Account(id) => Some(id.as_str()),
            Source::Key(_) => None,
        };
        let (fresh, account) = self
            .store
            .acme_begin_request(&nonce_id, expires.saturating_mul(1_000_000), account_id)
            .await
            .map_err(store_problem)?;
        let signer = match source {
            Source::Key(jwk) => Signer::Key(Jwk::from_value(jwk)?),
            Source::Account(id) => {
                let acct = account.ok_or_else(|| {
                    Problem::new(
                        ProblemType::AccountDoesNotExist,
                        format!("there is no account {id}"),
                    )
                })?;
                refuse_unless_valid(&acct)?;
                let value: Value = serde_json::from_str(&acct.jwk)
                    .map_err(|_| Problem::internal("a stored account key is unreadable"))?;
                let key = Jwk::from_value(&value)
                    .map_err(|_| Problem::internal("a stored account key is unusable"))?;
                Signer::Account(acct, key)
            }
        };
        let key = match &signer {
            Signer::Account(_, k) | Signer::Key(k) => k,
        };
        key.verify(alg, &jws.signing_input(), &jws.signature)?;
        if !fresh {
            return Err(Problem::new(
                ProblemType::BadNonce,
                "the nonce was already used",
            ));
        }
        if let Signer::Account(a, _) = &signer
            && let Err(wait) = self.limiter.take(&a.id)
        {
            let mut p = Problem::new(
                ProblemType::RateLimited,
                format!(
                    "account {} sends more than {} requests per second",
                    a.id, self.cfg.account_requests_per_second
                ),
            );
            p.retry_after = Some(wait);
            return Err(p);
        }
        Ok(Verified { jws, signer })
    }

    fn account_id_of<'k>(&self, kid: &'k str) -> Result<&'k str, Problem> {
        kid.strip_prefix(&self.url("/acct/"))
            .filter(|id| is_id(id))
            .ok_or_else(|| {
                Problem::new(
                    ProblemType::AccountDoesNotExist,
                    "\"kid\" is not an account URL of this server",
                )
            })
    }

    // -----------------------------------------------------------------------------------------
    // Accounts

    fn account_json(&self, a: &AcmeAccount) -> Value {
        json!({
            "status": a.status.as_str(),
            "contact": a.contacts,
            "orders": self.url(&format!("/acct/{}/orders", a.id)),
        })
    }

    async fn new_account(&self, v: &Verified) -> Result<Response, Problem> {
        let Signer::Key(key) = &v.signer else {
            return Err(Problem::malformed("newAccount must be signed with \"jwk\""));
        };
        let p = v.object()?;
        let only_existing = bool_field(&p, "onlyReturnExisting")?.unwrap_or(false);
        let tos = bool_field(&p, "termsOfServiceAgreed")?.unwrap_or(false);
        let contacts = match p.get("contact") {
            None | Some(Value::Null) => Vec::new(),
            Some(c) => check_contacts(c)?,
        };
        let thumbprint = key.thumbprint();
        if let Some(existing) = self
            .store
            .acme_find_account(&thumbprint)
            .await
            .map_err(store_problem)?
        {
            refuse_unless_valid(&existing)?;
            let loc = self.url(&format!("/acct/{}", existing.id));
            return Ok(Response::json(200, &self.account_json(&existing)).header("Location", loc));
        }
        if only_existing {
            return Err(Problem::new(
                ProblemType::AccountDoesNotExist,
                "no account exists for this key",
            ));
        }
        if self.cfg.terms_of_service.is_some() && !tos {
            return Err(Problem::malformed(
                "the terms of service must be agreed to (termsOfServiceAgreed)",
            ));
        }
        let eab_kid = match p.get("externalAccountBinding") {
            None | Some(Value::Null) => {
                if self.cfg.eab_required {
                    return Err(Problem::new(
                        ProblemType::ExternalAccountRequired,
                        "this CA requires an external account binding",
                    ));
                }
                None
            }
            Some(eab) => Some(verify_eab(
                eab,
                key,
                &self.url("/new-account"),
                &self.eab_keys,
            )?),
        };
        let (acct, created) = self
            .store
            .acme_create_account(NewAcmeAccount {
                jwk: key.canonical(),
                thumbprint,
                contacts,
                eab_kid,
                details: json!({"key": key.describe(), "alg": v.jws.header.alg}),
            })
            .await
            .map_err(store_problem)?;
        if !created {
            // Another request made or deactivated the account for this key meanwhile.
            refuse_unless_valid(&acct)?;
        }
        let loc = self.url(&format!("/acct/{}", acct.id));
        Ok(
            Response::json(if created { 201 } else { 200 }, &self.account_json(&acct))
                .header("Location", loc),
        )
    }

    async fn account(&self, v: &Verified, id: &str) -> Result<Response, Problem> {
        let acct = v.account()?;
        if acct.id != id {
            return Err(Problem::unauthorized(
                "an account can only read or change itself",
            ));
        }
        let Some(p) = v.payload()? else {
            return Ok(Response::json(200, &self.account_json(acct)));
        };
        if let Some(status) = p.get("status") {
            if status != "deactivated" {
                return Err(Problem::malformed(
                    "the only status a client may set is \"deactivated\"",
                ));
            }
            let a = self
                .store
                .acme_deactivate_account(id)
                .await
                .map_err(store_problem)?;
            return Ok(Response::json(200, &self.account_json(&a)));
        }
        if let Some(c) = p.get("contact") {
            let contacts = check_contacts(c)?;
            let a = self
                .store
                .acme_update_contacts(id, contacts)
                .await
                .map_err(store_problem)?;
            return Ok(Response::json(200, &self.account_json(&a)));
        }
        Ok(Response::json(200, &self.account_json(acct)))
    }

    async fn account_orders(
        &self,
        v: &Verified,
        id: &str,
        after: Option<&str>,
    ) -> Result<Response, Problem> {
        let acct = v.account()?;
        if acct.id != id {
            return Err(Problem::unauthorized(
                "an account can only list its own orders",
            ));
        }
        let page = self
            .store
            .acme_list_orders(id, self.cfg.orders_page_size, after)
            .await
            .map_err(store_problem)?;
        let urls: Vec<String> = page
            .items
            .iter()
            .map(|o| self.url(&format!("/order/{o}")))
            .collect();
        let resp = Response::json(200, &json!({"orders": urls}));
        Ok(match page.next {
            Some(next) => resp.header(
                "Link",
                format!(
                    "<{}>;rel=\"next\"",
                    self.url(&format!("/acct/{id}/orders/{next}"))
                ),
            ),
            None => resp,
        })
    }

    async fn key_change(&self, v: &Verified) -> Result<Response, Problem> {
        let acct = v.account()?;
        let Signer::Account(_, old_key) = &v.signer else {
            return Err(Problem::malformed(
                "key change must be signed by the account",
            ));
        };
        let outer = v.object()?;
        let inner = Jws::from_value(&Value::Object(outer), 16 * 1024)
            .map_err(|p| Problem::malformed(format!("the inner JWS: {}", p.detail)))?;
        let alg = Alg::parse(&inner.header.alg)?;
        if inner.header.kid.is_some() {
            return Err(Problem::malformed("the inner JWS must not carry \"kid\""));
        }
        if inner.header.nonce.is_some() {
            return Err(Problem::malformed("the inner JWS must not carry a nonce"));
        }
        if inner.header.url.as_deref() != Some(self.url("/key-change").as_str()) {
            return Err(Problem::malformed(
                "the inner JWS \"url\" must be the keyChange URL",
            ));
        }
        let new_jwk =
            inner.header.jwk.as_ref().ok_or_else(|| {
                Problem::malformed("the inner JWS must carry the new key as \"jwk\"")
            })?;
        let new_key = Jwk::from_value(new_jwk)?;
        new_key.verify(alg, &inner.signing_input(), &inner.signature)?;
        let payload: Value = serde_json::from_slice(&inner.payload)
            .map_err(|_| Problem::malformed("the inner JWS payload is not JSON"))?;
        let account_url = self.url(&format!("/acct/{}", acct.id));
        if payload.get("account").and_then(Value::as_str) != Some(account_url.as_str()) {
            return Err(Problem::unauthorized(
                "the inner payload \"account\" is not the signing account",
            ));
        }
        let old = payload
            .get("oldKey")
            .ok_or_else(|| Problem::malformed("the inner payload has no \"oldKey\""))?;
        if Jwk::from_value(old)?.thumbprint() != old_key.thumbprint() {
            return Err(Problem::unauthorized(
                "\"oldKey\" is not the account's current key",
            ));
        }
        let new_tp = new_key.thumbprint();
        if new_tp == old_key.thumbprint() {
            return Err(Problem::malformed("the new key is the current key"));
        }
        match self
            .store
            .acme_change_key(
                &acct.id,
                &old_key.thumbprint(),
                &new_key.canonical(),
                &new_tp,
            )
            .await
        {
            Ok(a) => Ok(Response::json(200, &self.account_json(&a))),
            Err(StoreError::Conflict(m)) => {
                let mut p = Problem::malformed(m).status(409);
                if let Ok(Some(other)) = self.store.acme_find_account(&new_tp).await {
                    p.location = Some(self.url(&format!("/acct/{}", other.id)));
                }
                Err(p)
            }
            Err(e) => Err(store_problem(e)),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Orders and authorizations

    fn challenge_types(&self, ident: &AcmeIdentifier, subdomain: bool) -> Vec<String> {
        let mut v = Vec::new();
        if ident.kind == "dns" {
            v.push("dns-01".to_string());
        }
        // Covering subdomains takes control of the zone (DNS), not of one web server.
        if self.cfg.http01 && !subdomain {
            v.push("http-01".to_string());
        }
        v
    }

    fn order_json(&self, o: &AcmeOrder) -> Value {
        let identifiers: Vec<Value> = o
            .identifiers
            .iter()
            .map(|i| {
                let mut v = json!({"type": i.identifier.kind, "value": i.identifier.value});
                if let (Some(a), Some(m)) = (&i.ancestor_domain, v.as_object_mut()) {
                    m.insert("ancestorDomain".into(), Value::String(a.clone()));
                }
                v
            })
            .collect();
        let mut v = json!({
            "status": o.status.as_str(),
            "expires": rfc3339(o.expires),
            "identifiers": identifiers,
            "authorizations": o.authz_ids.iter().map(|a| self.url(&format!("/authz/{a}"))).collect::<Vec<_>>(),
            "finalize": self.url(&format!("/order/{}/finalize", o.id)),
            "profile": o.profile,
        });
        if let Some(m) = v.as_object_mut() {
            if let Some(nb) = o.not_before {
                m.insert("notBefore".into(), rfc3339(nb).into());
            }
            if let Some(na) = o.not_after {
                m.insert("notAfter".into(), rfc3339(na).into());
            }
            if let (Some(serial), OrderStatus::Valid) = (&o.cert_serial, o.status) {
                m.insert(
                    "certificate".into(),
                    self.url(&format!("/cert/{serial}")).into(),
                );
            }
            if let Some(e) = &o.error
                && let Ok(p) = serde_json::from_str::<Value>(e)
            {
                m.insert("error".into(), p);
            }
        }
        v
    }

    fn challenge_json(&self, c: &AcmeChallenge) -> Value {
        let mut v = json!({
            "type": c.kind,
            "url": self.url(&format!("/chall/{}", c.id)),
            "status": c.status.as_str(),
            "token": c.token,
        });
        if let Some(m) = v.as_object_mut() {
            if let Some(t) = c.validated {
                m.insert("validated".into(), rfc3339(t).into());
            }
            if let Some(e) = &c.error
                && let Ok(p) = serde_json::from_str::<Value>(e)
            {
                m.insert("error".into(), p);
            }
        }
        v
    }

    fn authz_json(&self, a: &AcmeAuthz) -> Value {
        let mut v = json!({
            "identifier": {"type": a.identifier.kind, "value": a.identifier.value},
            "status": a.status.as_str(),
            "expires": rfc3339(a.expires),
            "challenges": a.challenges.iter().map(|c| self.challenge_json(c)).collect::<Vec<_>>(),
        });
        if let Some(m) = v.as_object_mut() {
            if a.wildcard {
                m.insert("wildcard".into(), true.into());
            }
            if a.subdomain_auth {
                m.insert("subdomainAuthAllowed".into(), true.into());
            }
        }
        v
    }

    async fn new_order(&self, v: &Verified) -> Result<Response, Problem> {
        let acct = v.account()?;
        let p = v.object()?;
        let list = match p.get("identifiers") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(Problem::malformed(
                    "newOrder needs an \"identifiers\" array",
                ));
            }
        };
        if list.is_empty() {
            return Err(Problem::malformed("\"identifiers\" is empty"));
        }
        if list.len() > self.cfg.max_identifiers {
            return Err(Problem::new(
                ProblemType::RejectedIdentifier,
                format!(
                    "an order may name at most {} identifiers",
                    self.cfg.max_identifiers
                ),
            ));
        }
        let now = now_micros();
        let pending_expires = now + i64::from(self.cfg.pending_authz_hours) * 3_600_000_000;
        let profile = match p.get("profile") {
            None | Some(Value::Null) => self.cfg.default_profile.clone(),
            Some(Value::String(s)) if self.cfg.profiles.contains_key(s) => s.clone(),
            Some(Value::String(s)) => {
                return Err(Problem::new(
                    ProblemType::InvalidProfile,
                    format!(
                        "profile {:?} does not exist (see the directory's meta.profiles)",
                        s.chars().take(60).collect::<String>()
                    ),
                ));
            }
            Some(_) => return Err(Problem::malformed("\"profile\" must be a string")),
        };
        // A profile may allow `.local` names or IP identifiers the CA refuses by default.
        let widened;
        let policy_cfg: &CaConfig = match self.cfg.profiles.get(&profile) {
            Some(ip)
                if (ip.allow_local && !self.cfg.allow_local)
                    || (ip.allow_ip && !self.cfg.allow_ip) =>
            {
                let mut c = self.cfg.clone();
                c.allow_local |= ip.allow_local;
                c.allow_ip |= ip.allow_ip;
                widened = c;
                &widened
            }
            _ => &self.cfg,
        };
        let mut items: Vec<NewOrderIdentifier> = Vec::with_capacity(list.len());
        let mut seen = BTreeSet::new();
        let mut refusals = Vec::new();
        for raw in list {
            let ident = match policy::parse_identifier(policy_cfg, raw) {
                Ok(i) => i,
                Err(p) if p.kind == ProblemType::Malformed => return Err(p),
                Err(p) => {
                    let shown = raw
                        .get("type")
                        .and_then(Value::as_str)
                        .zip(raw.get("value").and_then(Value::as_str))
                        .map(|(t, v)| (t.to_string(), v.chars().take(253).collect()));
                    refusals.push((p.kind, p.detail, shown));
                    continue;
                }
            };
            let ancestor = match raw.get("ancestorDomain") {
                None | Some(Value::Null) => None,
                Some(a) => {
                    if ident.kind != "dns" {
                        return Err(Problem::malformed(
                            "\"ancestorDomain\" only applies to dns identifiers",
                        ));
                    }
                    Some(policy::check_ancestor(policy_cfg, &ident.value, a)?)
                }
            };
            if !seen.insert(ident.clone()) {
                continue;
            }
            let new_authz = match &ancestor {
                Some(a) => {
                    let id = AcmeIdentifier::dns(a.clone());
                    NewAuthzSpec {
                        challenge_types: self.challenge_types(&id, true),
                        identifier: id,
                        subdomain_auth: true,
                        wildcard: false,
                        expires: pending_expires,
                    }
                }
                None => NewAuthzSpec {
                    challenge_types: self.challenge_types(&ident, false),
                    identifier: ident.clone(),
                    subdomain_auth: false,
                    wildcard: false,
                    expires: pending_expires,
                },
            };
            items.push(NewOrderIdentifier {
                order: OrderIdentifier {
                    identifier: ident,
                    ancestor_domain: ancestor,
                },
                new_authz,
            });
        }
        match refusals.len() {
            0 => {}
            1 => {
                let (kind, detail, _) = refusals.remove(0);
                return Err(Problem::new(kind, detail));
            }
            n => {
                let mut p = Problem::new(
                    ProblemType::RejectedIdentifier,
                    format!("{n} identifiers of the order are refused"),
                );
                p.subproblems = refusals;
                return Err(p);
            }
        }
        let not_before = time_field(&p, "notBefore")?;
        let not_after = time_field(&p, "notAfter")?;
        let max_after = now + i64::from(self.cfg.leaf_validity_days) * 86_400_000_000;
        if let Some(na) = not_after
            && (na > max_after || na <= now)
        {
            return Err(Problem::malformed(format!(
                "notAfter must be in the future and at most {} days ahead",
                self.cfg.leaf_validity_days
            )));
        }
        if let Some(nb) = not_before {
            let earliest = now - 86_400_000_000;
            if nb < earliest || nb >= not_after.unwrap_or(max_after) {
                return Err(Problem::malformed(
                    "notBefore must be after yesterday and before notAfter",
                ));
            }
        }
        let order = self
            .store
            .acme_create_order(NewAcmeOrder {
                account_id: acct.id.clone(),
                identifiers: items,
                profile,
                not_before,
                not_after,
                expires: now + i64::from(self.cfg.order_hours) * 3_600_000_000,
            })
            .await
            .map_err(|e| match e {
                StoreError::Conflict(m) => Problem::unauthorized(m),
                e => store_problem(e),
            })?;
        let loc = self.url(&format!("/order/{}", order.id));
        Ok(Response::json(201, &self.order_json(&order)).header("Location", loc))
    }

    async fn new_authz(&self, v: &Verified) -> Result<Response, Problem> {
        let acct = v.account()?;
        let p = v.object()?;
        let raw = p
            .get("identifier")
            .ok_or_else(|| Problem::malformed("newAuthz needs an \"identifier\""))?;
        if raw
            .get("value")
            .and_then(Value::as_str)
            .is_some_and(|s| s.starts_with("*."))
        {
            return Err(Problem::malformed(
                "wildcard identifiers cannot be pre-authorized (RFC 8555 §7.4.1)",
            ));
        }
        let ident = policy::parse_identifier(&self.cfg, raw)?;
        let wants_subdomains = match raw.get("subdomainAuthAllowed") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(Problem::malformed(
                    "\"subdomainAuthAllowed\" must be a boolean",
                ));
            }
        };
        // RFC 9444: a server that will not cover subdomains still creates a plain authorization.
        let subdomain = wants_subdomains && self.cfg.subdomain_auth && ident.kind == "dns";
        let spec = NewAuthzSpec {
            challenge_types: self.challenge_types(&ident, subdomain),
            identifier: ident,
            subdomain_auth: subdomain,
            wildcard: false,
            expires: now_micros() + i64::from(self.cfg.pending_authz_hours) * 3_600_000_000,
        };
        let authz = self
            .store
            .acme_create_authz(&acct.id, spec)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(m) => Problem::unauthorized(m),
                e => store_problem(e),
            })?;
        let loc = self.url(&format!("/authz/{}", authz.id));
        Ok(Response::json(201, &self.authz_json(&authz)).header("Location", loc))
    }

    async fn order(&self, v: &Verified, id: &str) -> Result<Response, Problem> {
        let acct = v.account()?;
        if v.payload()?.is_some() {
            return Err(Problem::malformed(
                "orders are read with POST-as-GET (an empty payload)",
            ));
        }
        let order = self.owned_order(acct, id).await?;
        let mut r = Response::json(200, &self.order_json(&order));
        if order.status == OrderStatus::Processing {
            r = r.header("Retry-After", "1");
        }
        Ok(r)
    }

    async fn owned_order(&self, acct: &AcmeAccount, id: &str) -> Result<AcmeOrder, Problem> {
        let order = self
            .store
            .acme_get_order(id)
            .await
            .map_err(store_problem)?
            .ok_or_else(|| Problem::not_found("order"))?;
        if order.account_id != acct.id {
            return Err(Problem::unauthorized(
                "the order belongs to another account",
            ));
        }
        Ok(order)
    }

    async fn authz(&self, v: &Verified, id: &str) -> Result<Response, Problem> {
        let acct = v.account()?;
        let authz = self
            .store
            .acme_get_authz(id)
            .await
            .map_err(store_problem)?
            .ok_or_else(|| Problem::not_found("authorization"))?;
        if authz.account_id != acct.id {
            return Err(Problem::unauthorized(
                "the authorization belongs to another account",
            ));
        }
        let Some(p) = v.payload()? else {
            let mut r = Response::json(200, &self.authz_json(&authz));
            if authz.status == AuthzStatus::Pending {
                r = r.header("Retry-After", "1");
            }
            return Ok(r);
        };
        match p.get("status") {
            Some(s) if s == "deactivated" => {
                let a = self
                    .store
                    .acme_deactivate_authz(id, &acct.id)
                    .await
                    .map_err(store_problem)?;
                Ok(Response::json(200, &self.authz_json(&a)))
            }
            Some(_) => Err(Problem::malformed(
                "the only status a client may set is \"deactivated\"",
            )),
            None => Ok(Response::json(200, &self.authz_json(&authz))),
        }
    }

    async fn challenge(&self, v: &Verified, id: &str) -> Result<Response, Problem> {
        let acct = v.account()?;
        let payload = v.payload()?;
        let (ch, authz) = self
            .store
            .acme_get_challenge(id)
            .await
            .map_err(store_problem)?
            .ok_or_else(|| Problem::not_found("challenge"))?;
        if authz.account_id != acct.id {
            return Err(Problem::unauthorized(
                "the challenge belongs to another account",
            ));
        }
        let up = format!("<{}>;rel=\"up\"", self.url(&format!("/authz/{}", authz.id)));
        let respond = |c: &AcmeChallenge| {
            Response::json(200, &self.challenge_json(c)).header("Link", up.clone())
        };
        if payload.is_none()
            || ch.status != ChallengeStatus::Pending
            || authz.status != AuthzStatus::Pending
        {
            return Ok(respond(&ch));
        }
        let Signer::Account(_, key) = &v.signer else {
            return Err(Problem::malformed("challenges are answered by an account"));
        };
        let key_authorization = format!("{}.{}", ch.token, key.thumbprint());
        let outcome = match self
            .validator
            .validate(&ch.kind, &authz.identifier, &ch.token, &key_authorization)
            .await
        {
            Ok(()) => ValidationOutcome::Valid {
                authz_expires: now_micros() + i64::from(self.cfg.valid_authz_hours) * 3_600_000_000,
            },
            Err(p) => {
                tracing::info!(
                    authz = %authz.id,
                    identifier = %authz.identifier,
                    challenge = %ch.kind,
                    problem = %p,
                    "challenge failed"
                );
                ValidationOutcome::Invalid {
                    error: p.to_json().to_string(),
                }
            }
        };
        match self
            .store
            .acme_record_validation(id, &acct.id, outcome)
            .await
        {
            Ok((c, _)) => Ok(respond(&c)),
            // Another request decided first: report what it decided.
            Err(StoreError::Conflict(_)) => {
                let (c, _) = self
                    .store
                    .acme_get_challenge(id)
                    .await
                    .map_err(store_problem)?
                    .ok_or_else(|| Problem::not_found("challenge"))?;
                Ok(respond(&c))
            }
            Err(e) => Err(store_problem(e)),
        }
    }

    async fn finalize(&self, v: &Verified, id: &str) -> Result<Response, Problem> {
        let acct = v.account()?;
        let p = v.object()?;
        let csr_b64 = match p.get("csr") {
            Some(Value::String(s)) => s,
            _ => return Err(Problem::malformed("finalize needs a string \"csr\"")),
        };
        let csr_der = b64::decode(csr_b64, ragw_pki::MAX_CSR_DER_LEN)
            .map_err(|e| Problem::new(ProblemType::BadCsr, format!("\"csr\" is {e}")))?;
        let order = self.owned_order(acct, id).await?;
        if order.status != OrderStatus::Ready {
            return Err(Problem::new(
                ProblemType::OrderNotReady,
                format!("the order is {}, not ready", order.status),
            ));
        }
        let bad_csr = |d: String| Problem::new(ProblemType::BadCsr, d);
        let csr = ragw_pki::parse_csr(&csr_der).map_err(|e| bad_csr(e.to_string()))?;
        if !self.cfg.leaf_key_types.iter().any(|k| k.admits(&csr.key)) {
            let allowed: Vec<String> = self
                .cfg
                .leaf_key_types
                .iter()
                .map(|k| k.to_string())
                .collect();
            return Err(bad_csr(format!(
                "the CSR's key is {}; this CA accepts {}",
                csr.key,
                allowed.join(", ")
            )));
        }
        let want_dns: BTreeSet<String> = order
            .identifiers
            .iter()
            .filter(|i| i.identifier.kind == "dns")
            .map(|i| i.identifier.value.clone())
            .collect();
        let want_ip: BTreeSet<IpAddr> = order
            .identifiers
            .iter()
            .filter(|i| i.identifier.kind == "ip")
            .filter_map(|i| i.identifier.value.parse().ok())
            .collect();
        let got_dns: BTreeSet<String> = csr.dns_names.iter().cloned().collect();
        let got_ip: BTreeSet<IpAddr> = csr.ip_addresses.iter().copied().collect();
        if got_dns != want_dns || got_ip != want_ip {
            let extra: Vec<String> = got_dns
                .difference(&want_dns)
                .cloned()
                .chain(got_ip.difference(&want_ip).map(|i| i.to_string()))
                .collect();
            let missing: Vec<String> = want_dns
                .difference(&got_dns)
                .cloned()
                .chain(want_ip.difference(&got_ip).map(|i| i.to_string()))
                .collect();
            return Err(bad_csr(format!(
                "the CSR must name exactly the order's identifiers; extra: [{}], missing: [{}]",
                extra.join(", "),
                missing.join(", ")
            )));
        }
        if let Some(cn) = &csr.subject_common_name {
            let n = normalize_dns_name(cn);
            let ok =
                want_dns.contains(&n) || cn.parse::<IpAddr>().is_ok_and(|i| want_ip.contains(&i));
            if !ok {
                return Err(bad_csr(format!(
                    "the CSR's common name {:?} is not one of the order's identifiers",
                    cn.chars().take(80).collect::<String>()
                )));
            }
        }
        let req = CertReq::from_der(&csr_der)
            .map_err(|e| bad_csr(format!("the CSR does not decode: {e}")))?;
        let key = ForeignKey::from_spki(&req.info.public_key)
            .ok_or_else(|| bad_csr("the CSR's key type cannot be certified".into()))?;
        let ekus = self
            .cfg
            .profiles
            .get(&order.profile)
            .or_else(|| self.cfg.profiles.get(&self.cfg.default_profile))
            .map(|p| p.ekus.clone())
            .ok_or_else(|| Problem::internal("no issuance profile is configured"))?;
        let to_time =
            |us: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).ok();
        let not_after = order.not_after.and_then(to_time).unwrap_or_else(|| {
            OffsetDateTime::now_utc() + Duration::days(i64::from(self.cfg.leaf_validity_days))
        });
        let not_before = order.not_before.and_then(to_time);
        // Checked before the order is claimed, so it stays ready for after the fix.
        if let Err(e) = self
            .pki
            .check_can_issue(not_after, OffsetDateTime::now_utc())
        {
            tracing::error!(order = id, error = %e, "refusing to issue");
            return Err(Problem::internal(
                "the CA's issuing certificate expires too soon to sign this certificate; the \
                 operator has been told how to fix it",
            ));
        }

        // From here on the order is ours alone: a concurrent finalize gets orderNotReady.
        self.store
            .acme_begin_finalize(id, &acct.id)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(status) => Problem::new(
                    ProblemType::OrderNotReady,
                    format!("the order is {status}, not ready"),
                ),
                e => store_problem(e),
            })?;
        let dns: Vec<String> = csr.dns_names.clone();
        let ips: Vec<IpAddr> = csr.ip_addresses.clone();
        let issued = self.pki.issue(&LeafRequest {
            key: &key,
            dns_names: &dns,
            ips: &ips,
            ekus: &ekus,
            not_before,
            not_after,
        });
        let leaf = match issued {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(order = id, error = %e, "signing failed");
                let p = Problem::internal("the CA could not sign the certificate");
                let _ = self
                    .store
                    .acme_fail_finalize(id, &p.to_json().to_string())
                    .await;
                return Err(p);
            }
        };
        let identifiers: Vec<AcmeIdentifier> = order
            .identifiers
            .iter()
            .map(|i| i.identifier.clone())
            .collect();
        let done = self
            .store
            .acme_complete_finalize(NewAcmeCertificate {
                serial_hex: leaf.serial_hex.clone(),
                order_id: Some(id.to_string()),
                account_id: Some(acct.id.clone()),
                identifiers,
                spki_sha256: key.spki_sha256_hex(),
                profile: order.profile.clone(),
                not_before: leaf.not_before,
                not_after: leaf.not_after,
                chain: vec![leaf.der, self.pki.intermediate_der().to_vec()],
            })
            .await
            .map_err(store_problem)?;
        tracing::info!(order = id, serial = %leaf.serial_hex, account = %acct.id, "certificate issued");
        self.metrics.issued.inc();
        let loc = self.url(&format!("/order/{id}"));
        Ok(Response::json(200, &self.order_json(&done)).header("Location", loc))
    }

    async fn certificate(&self, v: &Verified, serial: &str) -> Result<Response, Problem> {
        let acct = v.account()?;
        if v.payload()?.is_some() {
            return Err(Problem::malformed(
                "certificates are downloaded with POST-as-GET (an empty payload)",
            ));
        }
        let cert = self
            .store
            .acme_get_certificate(serial)
            .await
            .map_err(store_problem)?
            .ok_or_else(|| Problem::not_found("certificate"))?;
        if cert.account_id.as_deref() != Some(acct.id.as_str()) {
            return Err(Problem::unauthorized(
                "the certificate was issued to another account",
            ));
        }
        let mut pem = String::new();
        for der in &cert.chain {
            pem.push_str(&pem_encode("CERTIFICATE", der));
        }
        Ok(Response {
            status: 200,
            headers: vec![(
                "Content-Type".into(),
                "application/pem-certificate-chain".into(),
            )],
            body: pem.into_bytes(),
        })
    }

    async fn revoke(&self, v: &Verified) -> Result<Response, Problem> {
        let p = v.object()?;
        let cert_b64 = match p.get("certificate") {
            Some(Value::String(s)) => s,
            _ => {
                return Err(Problem::malformed(
                    "revokeCert needs a string \"certificate\"",
                ));
            }
        };
        let der = b64::decode(cert_b64, 16 * 1024)
            .map_err(|e| Problem::malformed(format!("\"certificate\" is {e}")))?;
        let reason = match p.get("reason") {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
                Problem::new(
                    ProblemType::BadRevocationReason,
                    "\"reason\" is not an integer",
                )
            })?,
            Some(_) => {
                return Err(Problem::new(
                    ProblemType::BadRevocationReason,
                    "\"reason\" must be an integer",
                ));
            }
        };
        if !ALLOWED_REASONS.contains(&reason) {
            return Err(Problem::new(
                ProblemType::BadRevocationReason,
                format!("reason {reason} is not accepted; use 0, 1, 3, 4, 5 or 9"),
            ));
        }
        let parsed = Certificate::from_der(&der).map_err(|e| {
            Problem::malformed(format!("\"certificate\" is not a DER certificate: {e}"))
        })?;
        let serial_bytes = parsed.tbs_certificate().serial_number().as_bytes();
        let trimmed: &[u8] = {
            let mut s = serial_bytes;
            while s.len() > 1 && s[0] == 0 {
                s = &s[1..];
            }
            s
        };
        let serial = hex::encode(trimmed);
        let stored = self
            .store
            .acme_get_certificate(&serial)
            .await
            .map_err(store_problem)?
            .filter(|c| c.chain.first() == Some(&der))
            .ok_or_else(|| {
                Problem::malformed("this CA did not issue that certificate").status(404)
            })?;
        let actor = match &v.signer {
            Signer::Account(a, _) => {
                // RFC 8555 §7.6: the account that ordered it, or one that holds valid
                // authorizations for every name the certificate carries.
                let ordered_it = stored.account_id.as_deref() == Some(a.id.as_str());
                if !ordered_it
                    && !self
                        .store
                        .acme_account_authorized_for(&a.id, &stored.identifiers)
                        .await
                        .map_err(store_problem)?
                {
                    return Err(Problem::unauthorized(
                        "only the account that ordered a certificate, an account authorized \
                         for all its names, or the certificate's key may revoke it",
                    ));
                }
                account_actor(&a.id)
            }
            Signer::Key(k) => {
                let spki = parsed
                    .tbs_certificate()
                    .subject_public_key_info()
                    .to_der()
                    .map_err(|_| Problem::malformed("the certificate's key does not encode"))?;
                let cert_key = Jwk::from_spki_der(&spki);
                if cert_key.map(|c| c.thumbprint()) != Some(k.thumbprint()) {
                    return Err(Problem::unauthorized(
                        "the request is not signed by the certificate's key",
                    ));
                }
                format!("acme-certificate-key:{}", k.thumbprint())
            }
        };
        if stored.revoked {
            return Err(Problem::new(
                ProblemType::AlreadyRevoked,
                "the certificate is already revoked",
            ));
        }
        match self
            .store
            .acme_revoke_certificate(&serial, reason, &actor)
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(Problem::new(
                    ProblemType::AlreadyRevoked,
                    "the certificate is already revoked",
                ));
            }
            Err(e) => return Err(store_problem(e)),
        }
        if let Ok(mut c) = self.crl_cache.lock() {
            *c = None;
        }
        tracing::info!(serial = %serial, reason, actor = %actor, "certificate revoked");
        self.metrics.revoked.inc();
        Ok(Response::new(200))
    }

    /// The current CRL (DER), regenerated at most every few seconds.
    pub async fn crl(&self) -> Result<Vec<u8>, Problem> {
        if let Ok(c) = self.crl_cache.lock()
            && let Some((at, der)) = c.as_ref()
            && at.elapsed() < CRL_CACHE
        {
            return Ok(der.clone());
        }
        let revoked = self
            .store
            .acme_revoked_unexpired()
            .await
            .map_err(store_problem)?;
        let der = self
            .pki
            .sign_crl(
                &revoked,
                Duration::hours(i64::from(self.cfg.crl_validity_hours)),
            )
            .map_err(|e| {
                tracing::error!(error = %e, "CRL signing failed");
                Problem::internal("the CRL could not be signed")
            })?;
        if let Ok(mut c) = self.crl_cache.lock() {
            *c = Some((Instant::now(), der.clone()));
        }
        Ok(der)
    }
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// DER certificates from a PEM bundle (for tools and tests).
pub fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find("-----END CERTIFICATE-----") else {
            break;
        };
        let block = &rest[start..start + end + "-----END CERTIFICATE-----".len()];
        if let Ok(c) = Certificate::from_pem(block.as_bytes())
            && let Ok(der) = c.to_der()
        {
            out.push(der);
        }
        rest = &rest[start + end + 1..];
    }
    out
}

fn bool_field(p: &Map<String, Value>, name: &str) -> Result<Option<bool>, Problem> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Problem::malformed(format!("\"{name}\" must be a boolean"))),
    }
}

fn time_field(p: &Map<String, Value>, name: &str) -> Result<Option<i64>, Problem> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => OffsetDateTime::parse(s, &Rfc3339)
            .map(|t| Some(micros(t)))
            .map_err(|_| Problem::malformed(format!("\"{name}\" is not an RFC 3339 time"))),
        Some(_) => Err(Problem::malformed(format!("\"{name}\" must be a string"))),
    }
}

/// RFC 8555 §7.3: `mailto:` contacts (one address, no header fields) and, per
/// draft-sweet-iot-acme §3.4.2, `https:` URIs naming the device.
pub fn check_contacts(v: &Value) -> Result<Vec<String>, Problem> {
    let Value::Array(list) = v else {
        return Err(Problem::malformed(
            "\"contact\" must be an array of strings",
        ));
    };
    if list.len() > MAX_CONTACTS {
        return Err(Problem::new(
            ProblemType::InvalidContact,
            format!("at most {MAX_CONTACTS} contacts are accepted"),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for c in list {
        let Value::String(s) = c else {
            return Err(Problem::malformed(
                "\"contact\" must be an array of strings",
            ));
        };
        let invalid = |why: &str| {
            Problem::new(
                ProblemType::InvalidContact,
                format!("contact {:?} {why}", s.chars().take(80).collect::<String>()),
            )
        };
        if s.len() > 320 || s.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            return Err(invalid("is too long or contains whitespace"));
        }
        if let Some(addr) = s.strip_prefix("mailto:") {
            if addr.contains('?') || addr.contains(',') || addr.contains('%') {
                return Err(invalid(
                    "must be one address without header fields or escapes",
                ));
            }
            let Some((local, domain)) = addr.rsplit_once('@') else {
                return Err(invalid("is not an e-mail address"));
            };
            if local.is_empty() || local.contains('@') || !is_valid_dns_name(domain) {
                return Err(invalid("is not an e-mail address"));
            }
        } else if let Some(rest) = s.strip_prefix("https://") {
            let authority = rest.split('/').next().unwrap_or("");
            let host = if let Some(v6) = authority.strip_prefix('[') {
                v6.split(']').next().unwrap_or("")
            } else {
                authority.rsplit_once(':').map_or(authority, |(h, _)| h)
            };
            if host.parse::<IpAddr>().is_err() && !is_valid_dns_name(host) {
                return Err(invalid("does not name a host"));
            }
        } else {
            return Err(Problem::new(
                ProblemType::UnsupportedContact,
                format!(
                    "contact {:?} uses a scheme this CA does not support (mailto:, https:)",
                    s.chars().take(80).collect::<String>()
                ),
            ));
        }
        out.push(s.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/directory"), Some(Route::Directory));
        assert_eq!(route("/acct/abc"), Some(Route::Account("abc".into())));
        assert_eq!(
            route("/order/abc/finalize"),
            Some(Route::Finalize("abc".into()))
        );
        assert_eq!(route("/acct/../x"), None);
        assert_eq!(route("/acct/"), None);
        assert_eq!(route("/cert/ab%20"), None);
        assert_eq!(route(&format!("/authz/{}", "a".repeat(65))), None);
    }

    #[test]
    fn urls() {
        assert_eq!(
            split_url("https://ca.example.test:8443/acme"),
            ("ca.example.test".into(), "/acme".into())
        );
        assert_eq!(
            split_url("https://[::1]:8443"),
            ("::1".into(), String::new())
        );
        assert_eq!(
            split_url("https://127.0.0.1:1"),
            ("127.0.0.1".into(), String::new())
        );
    }

    #[test]
    fn contacts() {
        assert!(
            check_contacts(&json!([
                "mailto:ops@example.test",
                "https://d1.devices.example.test"
            ]))
            .is_ok()
        );
        assert_eq!(
            check_contacts(&json!(["tel:+1"])).unwrap_err().kind,
            ProblemType::UnsupportedContact
        );
        for bad in [
            "mailto:a@b@c",
            "mailto:x@example.test?subject=x",
            "mailto:nope",
            "https://",
            "mailto:a b@example.test",
        ] {
            assert_eq!(
                check_contacts(&json!([bad])).unwrap_err().kind,
                ProblemType::InvalidContact,
                "{bad}"
            );
        }
        assert_eq!(
            check_contacts(&json!("mailto:x@example.test"))
                .unwrap_err()
                .kind,
            ProblemType::Malformed
        );
    }

    #[test]
    fn pem_round_trip() {
        let pem = pem_encode("CERTIFICATE", b"abc");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\nYWJj\n"));
    }
}
