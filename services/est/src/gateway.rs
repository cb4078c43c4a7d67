//! The sans-IO core: an HTTP request (method, path, headers, peer, body) in, either a response
//! or a registrar call out; the registrar's answer in, a response out. No sockets, no clocks
//! read here (the caller passes the time), so every path is testable with plain values.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{
    ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use http::{HeaderMap, Method, StatusCode};
use ragw_domain::{DeviceIdentity, IdentityKind, KeyType};
use ragw_pki::base64::{decode_lenient, encode_wrapped};
use ragw_pki::{CsrAttrsRequest, certs_only, encode_csr_attrs};
use ragw_proto::registrar::v1 as pb;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;
use tonic::{Code, Status};

use crate::auth::{
    CertVerifiers, PasswordChecker, certificate_identity, check_validity, parse_basic, uses_argon2,
};
use crate::config::{EstConfig, LabelConfig, valid_label};
use crate::guard::{AuthGuard, NotChecked, RefusalAudit, RefusalSummary};
use crate::proxy::certificate_from_header;
use crate::ratelimit::RateLimiter;

const WELL_KNOWN: &str = "/.well-known/est/";
const PKCS7: &str = "application/pkcs7-mime; smime-type=certs-only";
const CSRATTRS: &str = "application/csrattrs";
const TEXT: &str = "text/plain; charset=utf-8";
const CTE: HeaderName = HeaderName::from_static("content-transfer-encoding");

/// An EST operation (RFC 7030 §3.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    CaCerts,
    CsrAttrs,
    SimpleEnroll,
    SimpleReenroll,
    FullCmc,
    ServerKeygen,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CaCerts => "cacerts",
            Operation::CsrAttrs => "csrattrs",
            Operation::SimpleEnroll => "simpleenroll",
            Operation::SimpleReenroll => "simplereenroll",
            Operation::FullCmc => "fullcmc",
            Operation::ServerKeygen => "serverkeygen",
        }
    }

    fn parse(s: &str) -> Option<Operation> {
        [
            Operation::CaCerts,
            Operation::CsrAttrs,
            Operation::SimpleEnroll,
            Operation::SimpleReenroll,
            Operation::FullCmc,
            Operation::ServerKeygen,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    fn method(self) -> Method {
        match self {
            Operation::CaCerts | Operation::CsrAttrs => Method::GET,
            _ => Method::POST,
        }
    }

    fn method_name(self) -> &'static str {
        match self {
            Operation::CaCerts | Operation::CsrAttrs => "GET",
            _ => "POST",
        }
    }
}

/// The client's TLS view: its address and the certificate chain it presented (the handshake
/// proved possession of the first certificate's key; nothing else was checked yet).
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: IpAddr,
    pub tls_chain: Vec<CertificateDer<'static>>,
}

#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub peer: Peer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: StatusCode,
    /// Content-Type and Content-Length are always among them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl HttpResponse {
    fn new(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        HttpResponse {
            status,
            headers: vec![
                (CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (CONTENT_LENGTH, HeaderValue::from(body.len())),
            ],
            body,
        }
    }

    /// A plain-text error (or 202) body; always ends with a line break.
    pub fn text(status: StatusCode, message: impl Into<String>) -> Self {
        let mut m = message.into();
        if !m.ends_with('\n') {
            m.push('\n');
        }
        HttpResponse::new(status, TEXT, m)
    }

    fn with(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn header(&self, name: &HeaderName) -> Option<&HeaderValue> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Where a request is after [`Gateway::begin`]. What the registrar calls need is carried in
/// [`Pending`].
#[derive(Debug)]
pub enum Step {
    Respond(HttpResponse),
    /// Call `EnrollmentService.GetAssignment`, then [`Gateway::assignment_response`].
    Assignment(Pending, pb::GetAssignmentRequest),
    /// Call `EnrollmentService.Enroll`, then [`Gateway::enroll_response`] (and
    /// `WaitEnrollment` while it says so).
    Enroll(Pending, pb::EnrollRequest),
    /// No CA certificates configured for the label: call
    /// `EnrollmentService.GetCaCertificates`, then [`Gateway::cacerts_from_registrar`].
    CaCerts(Pending, pb::GetCaCertificatesRequest),
}

/// A request waiting for the registrar.
#[derive(Debug, Clone)]
pub struct Pending {
    pub label: String,
    pub operation: Operation,
    /// The device as the gateway authenticated it; `None` for a re-enrollment that only
    /// presented its ragw certificate (the registrar names the device then).
    pub device: Option<DeviceIdentity>,
    /// The client posted its CSR as one unbroken base64 line, so the certificate goes back as
    /// one line too: strongSwan's `pki --est` does that and decodes nothing else, while
    /// clients that wrap (libest, `openssl base64`) get the label's wrapped form.
    pub one_line_reply: bool,
}

/// What to do after an enrollment answer.
#[derive(Debug)]
pub enum EnrollNext {
    Respond(HttpResponse),
    /// Not terminal yet: `WaitEnrollment` for this id while the wait bound allows.
    Wait(String),
}

/// The EST gateway's request logic.
pub struct Gateway {
    config: EstConfig,
    cacerts: Vec<Option<Bytes>>,
    verifiers: CertVerifiers,
    passwords: PasswordChecker,
    limiter: RateLimiter,
    guard: AuthGuard,
    argon2: bool,
}

/// Building the gateway failed: the configuration is unusable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GatewayError(pub String);

impl Gateway {
    pub fn new(config: EstConfig) -> Result<Gateway, GatewayError> {
        config.validate().map_err(|e| GatewayError(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifiers = crate::auth::cert_verifiers(&config, &provider).map_err(GatewayError)?;
        let mut cacerts = Vec::with_capacity(config.labels.len());
        for l in &config.labels {
            cacerts.push(if l.cacerts.is_empty() {
                None
            } else {
                let der = certs_only(&l.cacerts)
                    .map_err(|e| GatewayError(format!("label {}: cacerts: {e}", l.label)))?;
                Some(Bytes::from(encode_wrapped(&der, l.base64_line_length)))
            });
        }
        Ok(Gateway {
            limiter: RateLimiter::new(config.limits.requests_per_second, config.limits.burst),
            guard: AuthGuard::new(config.limits.guard.clone()),
            argon2: uses_argon2(&config),
            cacerts,
            verifiers,
            passwords: PasswordChecker::new(),
            config,
        })
    }

    pub fn config(&self) -> &EstConfig {
        &self.config
    }

    /// The client's address: the TCP peer, or, behind a trusted proxy, the last address of
    /// the proxy's forwarded-for header.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let Some(proxy) = &self.config.trusted_proxy else {
            return peer;
        };
        let Some(header) = &proxy.client_address_header else {
            return peer;
        };
        if !proxy.is_trusted(peer) {
            return peer;
        }
        headers
            .get_all(header.as_str())
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or(peer)
    }

    /// Rate limit, checked before the body is read.
    pub fn admit(&self, client: IpAddr, now: Instant) -> Result<(), HttpResponse> {
        self.limiter.check(client, now).map_err(|wait| {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            HttpResponse::text(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many requests from {client}: at most {} per second with bursts of {} \
                     are allowed; retry after {secs} s",
                    self.config.limits.requests_per_second, self.config.limits.burst
                ),
            )
            .with(RETRY_AFTER, HeaderValue::from(secs.max(1)))
        })
    }

    /// Refuses a declared body over the limit before reading it.
    pub fn check_declared_length(&self, headers: &HeaderMap) -> Result<(), HttpResponse> {
        let Some(v) = headers.get(CONTENT_LENGTH) else {
            return Ok(());
        };
        match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) if n > self.config.limits.max_body_bytes as u64 => Err(self.body_too_large()),
            Some(_) => Ok(()),
            None => Err(HttpResponse::text(
                StatusCode::BAD_REQUEST,
                "the Content-Length header is not a number",
            )),
        }
    }

    pub fn body_too_large(&self) -> HttpResponse {
        HttpResponse::text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than the {} bytes this server accepts",
                self.config.limits.max_body_bytes
            ),
        )
    }

    pub fn body_timeout(&self) -> HttpResponse {
        HttpResponse::text(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                self.config.limits.body_timeout.as_secs()
            ),
        )
    }

    /// Whether [`begin`](Self::begin) may run argon2 for this request (move it off the async
    /// threads then).
    pub fn may_block(&self, headers: &HeaderMap) -> bool {
        self.argon2 && headers.contains_key(AUTHORIZATION)
    }

    /// Everything that needs no registrar: routing, method, authentication, content type,
    /// body decoding.
    pub fn begin(&self, req: &HttpRequest, now: SystemTime) -> Step {
        self.begin_at(req, now, Instant::now())
    }

    /// [`Gateway::begin`] with the monotonic time the guessing limits count in.
    pub fn begin_at(&self, req: &HttpRequest, now: SystemTime, clock: Instant) -> Step {
        match self.begin_inner(req, now, clock) {
            Ok(step) => step,
            Err(resp) => Step::Respond(resp),
        }
    }

    fn route(&self, path: &str) -> Result<(usize, Operation), HttpResponse> {
        let not_found = |m: String| HttpResponse::text(StatusCode::NOT_FOUND, m);
        let rest = path.strip_prefix(WELL_KNOWN).ok_or_else(|| {
            not_found(format!(
                "{:?} is not an EST path; EST operations are under {WELL_KNOWN}",
                truncate(path, 64)
            ))
        })?;
        let parts: Vec<&str> = rest.split('/').collect();
        let (label, op) = match parts.as_slice() {
            [op] => (None, *op),
            [label, op] => (Some(*label), *op),
            _ => {
                return Err(not_found(format!(
                    "{:?} is not an EST path; use {WELL_KNOWN}<operation> or \
                     {WELL_KNOWN}<label>/<operation>",
                    truncate(path, 64)
                )));
            }
        };
        let index = match label {
            Some(l) => {
                let known = valid_label(l)
                    .then(|| self.config.labels.iter().position(|c| c.label == l))
                    .flatten();
                known.ok_or_else(|| {
                    not_found(format!(
                        "unknown EST label {:?}: no such label is configured on this server",
                        truncate(l, 64)
                    ))
                })?
            }
            None => match &self.config.default_label {
                Some(d) => self
                    .config
                    .labels
                    .iter()
                    .position(|c| &c.label == d)
                    .ok_or_else(|| not_found("the default label is not configured".into()))?,
                None => {
                    return Err(not_found(format!(
                        "this server has no default label; use {WELL_KNOWN}<label>/<operation>"
                    )));
                }
            },
        };
        let operation = Operation::parse(op).ok_or_else(|| {
            not_found(format!(
                "unknown EST operation {:?}; this server offers cacerts, csrattrs, \
                 simpleenroll and simplereenroll",
                truncate(op, 64)
            ))
        })?;
        Ok((index, operation))
    }

    fn begin_inner(
        &self,
        req: &HttpRequest,
        now: SystemTime,
        clock: Instant,
    ) -> Result<Step, HttpResponse> {
        let (index, op) = self.route(&req.path)?;
        let label = &self.config.labels[index];
        if matches!(op, Operation::FullCmc | Operation::ServerKeygen) {
            return Err(HttpResponse::text(
                StatusCode::NOT_IMPLEMENTED,
                format!(
                    "/{} is not supported by this server; it offers cacerts, csrattrs, \
                     simpleenroll and simplereenroll",
                    op.as_str()
                ),
            ));
        }
        if req.method != op.method() {
            return Err(HttpResponse::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "/{} takes {}, not {}",
                    op.as_str(),
                    op.method(),
                    truncate(req.method.as_str(), 16)
                ),
            )
            .with(ALLOW, HeaderValue::from_static(op.method_name())));
        }
        if op == Operation::CaCerts {
            if let Some(body) = self.cacerts.get(index).cloned().flatten() {
                return Ok(Step::Respond(self.base64_response(label, PKCS7, body)));
            }
            let request = pb::GetCaCertificatesRequest {
                profile: label.profile.clone(),
            };
            let pending = Pending {
                label: label.label.clone(),
                operation: op,
                device: None,
                one_line_reply: false,
            };
            return Ok(Step::CaCerts(pending, request));
        }

        let chain = self.client_chain(req)?;
        let one_line_reply = is_one_base64_line(&req.body);
        let pending = |device: Option<DeviceIdentity>| Pending {
            label: label.label.clone(),
            operation: op,
            device,
            one_line_reply,
        };
        match op {
            Operation::CsrAttrs => {
                match self.authenticate(label, req, chain.as_deref(), now, clock) {
                    Ok(device) => {
                        let request = pb::GetAssignmentRequest {
                            device: Some(identity_to_pb(&device)),
                            profile: label.profile.clone(),
                            current_certificate_der: Vec::new(),
                        };
                        Ok(Step::Assignment(pending(Some(device)), request))
                    }
                    // A device holding a certificate ragw issued may learn its name with it
                    // (no password needed); the registrar checks it is that device's current,
                    // unrevoked certificate, and refuses otherwise.
                    Err(refusal) => match chain.as_deref() {
                        Some([leaf, ..])
                            if req.headers.get(AUTHORIZATION).is_none()
                                && check_validity(leaf.as_ref(), now).is_ok() =>
                        {
                            let request = pb::GetAssignmentRequest {
                                device: None,
                                profile: label.profile.clone(),
                                current_certificate_der: leaf.as_ref().to_vec(),
                            };
                            Ok(Step::Assignment(pending(None), request))
                        }
                        _ => Err(refusal),
                    },
                }
            }
            Operation::SimpleEnroll => {
                let device = self.authenticate(label, req, chain.as_deref(), now, clock)?;
                let csr = self.csr_body(req)?;
                let request = enroll_request(&device_opt(&device), label, csr, Vec::new());
                Ok(Step::Enroll(pending(Some(device)), request))
            }
            Operation::SimpleReenroll => {
                let Some(chain) = chain else {
                    return Err(HttpResponse::text(
                        StatusCode::FORBIDDEN,
                        "/simplereenroll needs the certificate ragw issued to this device as \
                         the TLS client certificate, and none was presented; use /simpleenroll \
                         for a first enrollment",
                    ));
                };
                let leaf = chain[0].as_ref().to_vec();
                check_validity(&leaf, now).map_err(|e| {
                    HttpResponse::text(
                        StatusCode::FORBIDDEN,
                        format!("the client certificate cannot be used to re-enroll: {e}"),
                    )
                })?;
                // Credentials are optional here; if sent, they must be right, and the registrar
                // then checks that the certificate belongs to that device.
                let device = match parse_basic(req.headers.get(AUTHORIZATION)) {
                    Ok(Some(_)) => Some(self.basic_identity(label, req, clock)?),
                    Ok(None) => None,
                    Err(e) => return Err(self.unauthorized(label, e)),
                };
                let csr = self.csr_body(req)?;
                let request = enroll_request(&device, label, csr, leaf);
                Ok(Step::Enroll(pending(device), request))
            }
            Operation::CaCerts | Operation::FullCmc | Operation::ServerKeygen => Err(
                HttpResponse::text(StatusCode::INTERNAL_SERVER_ERROR, "unreachable operation"),
            ),
        }
    }

    /// The `/cacerts` answer from the CA certificates the upstream CA returned with the newest
    /// certificate of the label's profile.
    pub fn cacerts_from_registrar(
        &self,
        pending: &Pending,
        result: Result<pb::CaCertificates, Status>,
    ) -> HttpResponse {
        let Some(label) = self.label_config(&pending.label) else {
            return HttpResponse::text(StatusCode::INTERNAL_SERVER_ERROR, "label vanished");
        };
        let certificates = match result {
            Ok(c) => c.certificates_der,
            Err(s) => return self.registrar_error(pending, &s),
        };
        if certificates.is_empty() {
            return HttpResponse::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the CA certificates of label {:?} are learnt from the first certificate the \
                     upstream CA issues for profile {:?}, and none was issued yet; the operator \
                     can set est.labels.{}.cacerts or est.cacerts",
                    label.label, label.profile, label.label
                ),
            )
            .with(RETRY_AFTER, HeaderValue::from(60u32));
        }
        match certs_only(&certificates) {
            Ok(der) => self.base64_response(
                label,
                PKCS7,
                Bytes::from(encode_wrapped(&der, label.base64_line_length)),
            ),
            Err(e) => HttpResponse::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the upstream CA's certificates cannot be encoded: {e}"),
            ),
        }
    }

    fn base64_response(&self, label: &LabelConfig, ct: &'static str, body: Bytes) -> HttpResponse {
        let resp = HttpResponse::new(StatusCode::OK, ct, body);
        if label.content_transfer_encoding {
            resp.with(CTE, HeaderValue::from_static("base64"))
        } else {
            resp
        }
    }

    /// The device's certificate chain, from TLS or (from a trusted proxy) from the header.
    fn client_chain(
        &self,
        req: &HttpRequest,
    ) -> Result<Option<Vec<CertificateDer<'static>>>, HttpResponse> {
        if let Some(proxy) = &self.config.trusted_proxy {
            let trusted = proxy.is_trusted(req.peer.addr);
            if let Some(value) = req.headers.get(proxy.client_cert_header.as_str()) {
                if !trusted {
                    return Err(HttpResponse::text(
                        StatusCode::FORBIDDEN,
                        format!(
                            "the {} header is accepted only from the configured trusted \
                             proxies, and {} is not one of them",
                            proxy.client_cert_header, req.peer.addr
                        ),
                    ));
                }
                if value.as_bytes().iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                let der = certificate_from_header(value.as_bytes()).map_err(|e| {
                    HttpResponse::text(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "the {} header set by the proxy does not hold a client \
                             certificate: {e}",
                            proxy.client_cert_header
                        ),
                    )
                })?;
                return Ok(Some(vec![CertificateDer::from(der)]));
            }
            // The proxy's own TLS client certificate says nothing about the device.
            if trusted {
                return Ok(None);
            }
        }
        Ok((!req.peer.tls_chain.is_empty()).then(|| req.peer.tls_chain.clone()))
    }

    /// A 401 with a Basic challenge where the label takes passwords; a 403 otherwise (a 401
    /// must carry a challenge the client could answer).
    fn unauthorized(&self, label: &LabelConfig, reason: impl Into<String>) -> HttpResponse {
        let reason = reason.into();
        if label.basic.is_none() {
            return HttpResponse::text(StatusCode::FORBIDDEN, reason);
        }
        let challenge = format!("Basic realm=\"{}\", charset=\"UTF-8\"", label.realm);
        let resp = HttpResponse::text(StatusCode::UNAUTHORIZED, reason);
        match HeaderValue::from_str(&challenge) {
            Ok(v) => resp.with(WWW_AUTHENTICATE, v),
            Err(_) => resp.with(WWW_AUTHENTICATE, HeaderValue::from_static("Basic")),
        }
    }

    fn what_is_accepted(label: &LabelConfig) -> String {
        let mut ways = Vec::new();
        if label.basic.is_some() {
            ways.push("HTTP Basic credentials (user name = device identifier)".to_string());
        }
        if let Some(cc) = &label.client_cert {
            ways.push(format!(
                "a TLS client certificate from a device CA it trusts (identity from the {})",
                cc.identity
            ));
        }
        ways.push(
            "a certificate ragw issued to the device (for /csrattrs and /simplereenroll)".into(),
        );
        format!(
            "authentication required: label {:?} accepts {}",
            label.label,
            ways.join(" or ")
        )
    }

    /// A device certificate chained to the label's anchors, else Basic credentials.
    fn authenticate(
        &self,
        label: &LabelConfig,
        req: &HttpRequest,
        chain: Option<&[CertificateDer<'static>]>,
        now: SystemTime,
        clock: Instant,
    ) -> Result<DeviceIdentity, HttpResponse> {
        let mut cert_problem = None;
        if let Some(chain) = chain {
            match &label.client_cert {
                Some(cc) => match self.verifiers.verify(&label.label, chain, now) {
                    Ok(()) => {
                        let value =
                            certificate_identity(chain[0].as_ref(), cc.identity).map_err(|e| {
                                self.unauthorized(
                                    label,
                                    format!("the TLS client certificate is trusted, but {e}"),
                                )
                            })?;
                        return DeviceIdentity::new(cc.identity_kind, &value).map_err(|e| {
                            self.unauthorized(
                                label,
                                format!(
                                    "the TLS client certificate's {} {:?} is not a valid \
                                     device identifier: {e}",
                                    cc.identity,
                                    truncate(&value, 80)
                                ),
                            )
                        });
                    }
                    Err(e) => {
                        cert_problem =
                            Some(format!("the TLS client certificate was not accepted: {e}"))
                    }
                },
                None => {
                    cert_problem = Some(format!(
                        "label {:?} does not accept TLS client certificates",
                        label.label
                    ))
                }
            }
        }
        match parse_basic(req.headers.get(AUTHORIZATION)) {
            Ok(Some(_)) => self.basic_identity(label, req, clock),
            Ok(None) => Err(self.unauthorized(
                label,
                match cert_problem {
                    Some(p) => format!("{p}; {}", Self::what_is_accepted(label)),
                    None => Self::what_is_accepted(label),
                },
            )),
            Err(e) => Err(self.unauthorized(label, e)),
        }
    }

    fn basic_identity(
        &self,
        label: &LabelConfig,
        req: &HttpRequest,
        clock: Instant,
    ) -> Result<DeviceIdentity, HttpResponse> {
        let creds = match parse_basic(req.headers.get(AUTHORIZATION)) {
            Ok(Some(c)) => c,
            Ok(None) => return Err(self.unauthorized(label, Self::what_is_accepted(label))),
            Err(e) => return Err(self.unauthorized(label, e)),
        };
        let Some(basic) = &label.basic else {
            return Err(self.unauthorized(
                label,
                format!(
                    "label {:?} does not accept passwords; present a device certificate",
                    label.label
                ),
            ));
        };
        let device = DeviceIdentity::new(basic.identity_kind, &creds.user).map_err(|e| {
            self.unauthorized(
                label,
                format!(
                    "the user name {:?} is not a valid device identifier ({} expected): {e}",
                    truncate(&creds.user, 80),
                    kind_name(basic.identity_kind)
                ),
            )
        })?;
        // Guessing is bounded per user name (across addresses) and server-wide before any
        // password is checked; the limit is keyed by label and name as the device is.
        let guard_key = format!("{}\0{}", label.label, device.value());
        if let Err(why) = self.guard.may_check(&guard_key, clock) {
            return Err(not_checked(why));
        }
        if !self
            .passwords
            .check(&label.label, basic, device.value(), &creds.password)
        {
            self.guard.record_failure(&guard_key, clock);
            return Err(self.unauthorized(
                label,
                format!("wrong user name or password for label {:?}", label.label),
            ));
        }
        self.guard.record_success(&guard_key);
        Ok(device)
    }

    /// Whether a refusal from `source` is audited on its own, and the summaries of sources
    /// whose audit interval ended (see [`AuthGuard::note_refusal`]).
    pub fn note_refusal(
        &self,
        source: IpAddr,
        clock: Instant,
    ) -> (RefusalAudit, Vec<RefusalSummary>) {
        self.guard.note_refusal(source, clock)
    }

    fn csr_body(&self, req: &HttpRequest) -> Result<Vec<u8>, HttpResponse> {
        let ct = req
            .headers
            .get(CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let media = ct.as_deref().map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
        match media.as_deref() {
            Some("application/pkcs10") => {}
            Some(other) => {
                return Err(HttpResponse::text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "the Content-Type is {:?}; send the CSR as application/pkcs10 (base64 \
                         DER)",
                        truncate(other, 80)
                    ),
                ));
            }
            None => {
                return Err(HttpResponse::text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "the request has no Content-Type; send the CSR as application/pkcs10 \
                     (base64 DER)",
                ));
            }
        }
        decode_lenient(&req.body, self.config.limits.max_body_bytes).map_err(|e| {
            HttpResponse::text(
                StatusCode::BAD_REQUEST,
                format!("the body is not a base64-encoded PKCS#10 CSR: {e}"),
            )
        })
    }

    fn label_config(&self, name: &str) -> Option<&LabelConfig> {
        self.config.label(name)
    }

    /// The `/csrattrs` answer for an assignment.
    pub fn assignment_response(
        &self,
        pending: &Pending,
        result: Result<pb::Assignment, Status>,
    ) -> HttpResponse {
        let Some(label) = self.label_config(&pending.label) else {
            return HttpResponse::text(StatusCode::INTERNAL_SERVER_ERROR, "label vanished");
        };
        let assignment = match result {
            Ok(a) => a,
            Err(s) => return self.registrar_error(pending, &s),
        };
        let key = label.csrattrs_key.or_else(|| {
            assignment
                .allowed_keys
                .iter()
                .find_map(|k| KeyType::from_str(k).ok())
        });
        let request = CsrAttrsRequest {
            dns_names: assignment.names.clone(),
            key,
            challenge_password: false,
        };
        match encode_csr_attrs(&request) {
            Ok(der) => self.base64_response(
                label,
                CSRATTRS,
                Bytes::from(encode_wrapped(&der, label.base64_line_length)),
            ),
            Err(e) => HttpResponse::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the CSR attributes: {e}"),
            ),
        }
    }

    /// The answer to an enrollment, or `Wait` while it is in progress and `final_answer` is
    /// false (the wait bound is not reached).
    pub fn enroll_response(
        &self,
        pending: &Pending,
        enrollment: &pb::Enrollment,
        final_answer: bool,
    ) -> EnrollNext {
        let Some(label) = self.label_config(&pending.label) else {
            return EnrollNext::Respond(HttpResponse::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "label vanished",
            ));
        };
        let id = &enrollment.id;
        let timing = &self.config.enrollment;
        let state = pb::EnrollmentState::try_from(enrollment.state)
            .unwrap_or(pb::EnrollmentState::Unspecified);
        let pending_202 = |what: &str, retry: u32| {
            EnrollNext::Respond(
                HttpResponse::text(
                    StatusCode::ACCEPTED,
                    format!(
                        "enrollment {id} {what}; send the same CSR again after {retry} s to get \
                         the certificate"
                    ),
                )
                .with(RETRY_AFTER, HeaderValue::from(retry)),
            )
        };
        match state {
            pb::EnrollmentState::Issued => match enrollment.certificate_chain.first() {
                // Only the end-entity certificate: the rest of the chain is in /cacerts
                // (draft-ietf-acme-integrations).
                Some(ee) => match certs_only(std::slice::from_ref(ee)) {
                    Ok(der) => {
                        let line_length = if pending.one_line_reply {
                            0
                        } else {
                            label.base64_line_length
                        };
                        EnrollNext::Respond(self.base64_response(
                            label,
                            PKCS7,
                            Bytes::from(encode_wrapped(&der, line_length)),
                        ))
                    }
                    Err(e) => EnrollNext::Respond(HttpResponse::text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("enrollment {id}: the issued certificate cannot be packaged: {e}"),
                    )),
                },
                None => EnrollNext::Respond(HttpResponse::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("enrollment {id} is issued but holds no certificate"),
                )),
            },
            pb::EnrollmentState::Rejected => EnrollNext::Respond(HttpResponse::text(
                StatusCode::FORBIDDEN,
                format!(
                    "enrollment {id} was rejected: {}",
                    or_unknown(&enrollment.failure_detail)
                ),
            )),
            pb::EnrollmentState::Failed => {
                let class = pb::ErrorClass::try_from(enrollment.failure_class)
                    .unwrap_or(pb::ErrorClass::Unspecified);
                let (status, cmc) = match class {
                    pb::ErrorClass::BadRequest => (StatusCode::BAD_REQUEST, "badRequest"),
                    pb::ErrorClass::BadIdentity => (StatusCode::BAD_REQUEST, "badIdentity"),
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "internalCAError"),
                };
                EnrollNext::Respond(HttpResponse::text(
                    status,
                    format!(
                        "{cmc}: enrollment {id} failed: {}; this CSR will keep getting this \
                         answer, so a new attempt needs a new CSR",
                        or_unknown(&enrollment.failure_detail)
                    ),
                ))
            }
            // An operator decides on their own time; holding the connection helps nobody.
            pb::EnrollmentState::AwaitingApproval => pending_202(
                "is awaiting approval by an operator",
                timing.approval_retry_after_seconds,
            ),
            _ if final_answer => pending_202(
                &format!("is in progress ({})", state_name(state)),
                timing.retry_after_seconds,
            ),
            _ => EnrollNext::Wait(id.clone()),
        }
    }

    /// Maps a registrar refusal or failure onto an HTTP answer.
    pub fn registrar_error(&self, pending: &Pending, status: &Status) -> HttpResponse {
        let message = status
            .message()
            .strip_prefix("csr_der: ")
            .unwrap_or(status.message());
        let md = status.metadata();
        let class = md.get("ragw-error-class").and_then(|v| v.to_str().ok());
        let retry = self.config.enrollment.retry_after_seconds;
        match status.code() {
            Code::InvalidArgument => match class {
                Some("bad_identity") => {
                    let expected: Vec<String> = md
                        .get("ragw-expected-names")
                        .and_then(|v| v.to_str().ok())
                        .map(|v| {
                            v.split(',')
                                .filter(|s| !s.is_empty())
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default();
                    let mut body = format!("badIdentity: {message}");
                    if !expected.is_empty() {
                        body.push_str(&format!(
                            "\nexpected subjectAltName: {}",
                            expected
                                .iter()
                                .map(|n| format!("dNSName={n}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                    HttpResponse::text(StatusCode::BAD_REQUEST, body)
                }
                Some("bad_request") => {
                    HttpResponse::text(StatusCode::BAD_REQUEST, format!("badRequest: {message}"))
                }
                _ => HttpResponse::text(StatusCode::BAD_REQUEST, message),
            },
            Code::PermissionDenied => HttpResponse::text(
                StatusCode::FORBIDDEN,
                match pending.operation {
                    Operation::SimpleReenroll => {
                        format!("the client certificate cannot be used to re-enroll: {message}")
                    }
                    _ => message.to_string(),
                },
            ),
            Code::FailedPrecondition => HttpResponse::text(StatusCode::CONFLICT, message),
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled => HttpResponse::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the registrar is not available ({message}); retry after {retry} s"),
            )
            .with(RETRY_AFTER, HeaderValue::from(retry)),
            Code::Unauthenticated => {
                tracing::error!(error = %message, "the registrar refused the gateway's credentials");
                HttpResponse::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the EST gateway cannot authenticate to the registrar; the operator must \
                         fix its credentials; retry after {retry} s"
                    ),
                )
                .with(RETRY_AFTER, HeaderValue::from(retry))
            }
            _ => {
                tracing::error!(code = ?status.code(), error = %message, "registrar failure");
                HttpResponse::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the registrar failed: {message}"),
                )
            }
        }
    }

    /// The bound on one enrollment's wait for issuance.
    pub fn wait_bound(&self) -> Duration {
        self.config.enrollment.wait
    }
}

fn device_opt(d: &DeviceIdentity) -> Option<DeviceIdentity> {
    Some(d.clone())
}

fn enroll_request(
    device: &Option<DeviceIdentity>,
    label: &LabelConfig,
    csr_der: Vec<u8>,
    current_certificate_der: Vec<u8>,
) -> pb::EnrollRequest {
    pb::EnrollRequest {
        csr_der,
        device: device.as_ref().map(identity_to_pb),
        protocol: pb::Protocol::Est as i32,
        profile: label.profile.clone(),
        current_certificate_der,
    }
}

pub(crate) fn identity_to_pb(id: &DeviceIdentity) -> pb::DeviceIdentity {
    let kind = match id.kind() {
        IdentityKind::Mac => pb::IdentityKind::Mac,
        IdentityKind::SerialNumber => pb::IdentityKind::SerialNumber,
        IdentityKind::IdevidSerial => pb::IdentityKind::IdevidSerial,
        IdentityKind::Username => pb::IdentityKind::Username,
    };
    pb::DeviceIdentity {
        kind: kind as i32,
        value: id.value().to_string(),
    }
}

fn kind_name(kind: IdentityKind) -> &'static str {
    match kind {
        IdentityKind::Mac => "a MAC address",
        IdentityKind::SerialNumber => "a serial number",
        IdentityKind::IdevidSerial => "an IDevID serial number",
        IdentityKind::Username => "a user name",
    }
}

fn state_name(s: pb::EnrollmentState) -> &'static str {
    match s {
        pb::EnrollmentState::Received => "received",
        pb::EnrollmentState::Approved => "approved",
        pb::EnrollmentState::Queued => "queued for the CA",
        pb::EnrollmentState::Ordering => "being ordered from the CA",
        pb::EnrollmentState::AwaitingApproval => "awaiting approval",
        pb::EnrollmentState::Issued => "issued",
        pb::EnrollmentState::Rejected => "rejected",
        pb::EnrollmentState::Failed => "failed",
        pb::EnrollmentState::Unspecified => "in an unknown state",
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "no reason recorded"
    } else {
        s
    }
}

/// A password left unchecked: 429 while the user name backs off, 503 while the server-wide
/// bound holds; both say when to come back.
fn not_checked(why: NotChecked) -> HttpResponse {
    let (status, wait, message) = match why {
        NotChecked::UserBackoff(wait) => (
            StatusCode::TOO_MANY_REQUESTS,
            wait,
            "recent wrong passwords for this user name: the password was not checked; retry \
             after the Retry-After delay",
        ),
        NotChecked::GlobalBound(wait) => (
            StatusCode::SERVICE_UNAVAILABLE,
            wait,
            "too many failed authentications on this server just now: the password was not \
             checked; retry after the Retry-After delay",
        ),
    };
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HttpResponse::text(status, message).with(RETRY_AFTER, HeaderValue::from(secs.max(1)))
}

/// Echoing client input in an error: bounded, so a 64 KiB path does not come back whole.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;

/// A request body of base64 text on a single line (trailing line end allowed).
fn is_one_base64_line(body: &[u8]) -> bool {
    let trimmed = body.trim_ascii();
    !trimmed.is_empty() && !trimmed.contains(&b'\n') && !trimmed.contains(&b'\r')
}
