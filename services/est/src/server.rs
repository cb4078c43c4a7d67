//! The thin I/O shell: TCP accept, TLS (tokio-rustls), HTTP/1.1 (hyper), registrar calls
//! (tonic). All decisions are [`Gateway`]'s.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::guard::{RefusalAudit, RefusalSummary};
use crate::header_case::{CanonicalCase, RequestMethods};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::enrollment_service_client::EnrollmentServiceClient;
use ragw_runtime::ops::MetricsRegistry;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tonic::Status;
use tonic::transport::Channel;

use crate::config::EstConfig;
use crate::gateway::{EnrollNext, Gateway, GatewayError, HttpRequest, HttpResponse, Peer, Step};
use crate::tls::{ServerTls, server_config};

/// How long open connections get to finish their request after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Request head limit (hyper's read buffer); the body has its own limit.
const MAX_HEAD_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EstError {
    #[error("invalid EST configuration: {0}")]
    Config(#[from] GatewayError),
    #[error("EST TLS configuration: {0}")]
    Tls(String),
    #[error("EST listener: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

#[derive(Clone)]
struct EstMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<OperationLabel, Histogram, fn() -> Histogram>,
    unaudited_refusals: Counter,
    passwords_not_checked: Family<ReasonLabel, Counter>,
    summarized_refusals: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl EstMetrics {
    fn new() -> Self {
        EstMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            unaudited_refusals: Counter::default(),
            passwords_not_checked: Family::default(),
            summarized_refusals: Counter::default(),
        }
    }

    fn register(&self, registry: &MetricsRegistry) {
        let r = registry.component("est");
        r.register(
            "requests",
            "EST requests by operation and HTTP status",
            self.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "EST request latency by operation, including the wait for issuance",
            self.duration.clone(),
        );
        r.register(
            "unaudited_refusals",
            "Refused requests not sent to the audit log because too many were already in flight",
            self.unaudited_refusals.clone(),
        );
        r.register(
            "passwords_not_checked",
            "Basic credentials refused unchecked: user_backoff (the user name failed recently) or \
             global_bound (too many failed authentications this second)",
            self.passwords_not_checked.clone(),
        );
        r.register(
            "summarized_refusals",
            "Refusals counted into a per-source summary audit event instead of one event each",
            self.summarized_refusals.clone(),
        );
    }
}

struct Inner {
    gateway: Gateway,
    registrar: Channel,
    metrics: EstMetrics,
    refusal_slots: Arc<tokio::sync::Semaphore>,
    /// The registrar's CA certificates per profile, so unauthenticated `/cacerts` requests do
    /// not each reach the store.
    cacerts: std::sync::Mutex<HashMap<String, (Instant, pb::CaCertificates)>>,
}

/// How long `/cacerts` answers from the registrar are reused: the certificates for a minute, the
/// answer that there are none yet for a few seconds (so the first issuance shows up soon, while
/// unauthenticated requests still do not each reach the store).
const CACERTS_CACHE: Duration = Duration::from_secs(60);
const NO_CACERTS_CACHE: Duration = Duration::from_secs(5);

/// The EST gateway server.
pub struct EstServer {
    inner: Arc<Inner>,
}

impl EstServer {
    /// `registrar` is a channel authenticated with a component certificate of role gateway.
    pub fn new(config: EstConfig, registrar: Channel) -> Result<EstServer, EstError> {
        Ok(EstServer {
            inner: Arc::new(Inner {
                gateway: Gateway::new(config)?,
                registrar,
                metrics: EstMetrics::new(),
                refusal_slots: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_REFUSAL_RECORDS)),
                cacerts: std::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Exports `ragw_est_requests` and `ragw_est_request_duration_seconds` on `registry`.
    pub fn with_metrics(self, registry: &MetricsRegistry) -> EstServer {
        self.inner.metrics.register(registry);
        self
    }

    /// Serves HTTPS on `listener` until `shutdown` completes; then stops accepting, lets open
    /// requests finish (up to 10 s) and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: ServerTls,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), EstError> {
        let config = server_config(self.inner.gateway.config(), &tls).map_err(EstError::Tls)?;
        let acceptor = TlsAcceptor::from(config);
        let limits = self.inner.gateway.config().limits.clone();
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "EST gateway listening");
        }
        tokio::pin!(shutdown);
        loop {
            while connections.try_join_next().is_some() {}
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (tcp, addr) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let inner = self.inner.clone();
            let acceptor = acceptor.clone();
            let stop = stop_rx.clone();
            let limits = limits.clone();
            connections.spawn(async move {
                let _permit = permit;
                serve_connection(inner, acceptor, tcp, addr, limits, stop).await;
            });
        }
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "EST connections still open after the shutdown grace period; closing them"
            );
            connections.abort_all();
        }
        tracing::info!("EST gateway stopped");
        Ok(())
    }
}

/// Serves the EST gateway on `listener` with `config` until `shutdown` completes. `registrar`
/// must be authenticated with a component certificate of role gateway.
pub async fn serve(
    config: EstConfig,
    registrar: Channel,
    listener: TcpListener,
    tls: ServerTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EstError> {
    EstServer::new(config, registrar)?
        .serve(listener, tls, shutdown)
        .await
}

async fn wait_stop(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

async fn serve_connection(
    inner: Arc<Inner>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    addr: SocketAddr,
    limits: crate::config::Limits,
    stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(client = %addr, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(client = %addr, "TLS handshake timed out");
            return;
        }
    };
    let tls_chain: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let peer = Peer {
        addr: addr.ip().to_canonical(),
        tls_chain,
    };
    // Which requests are HEADs, in order: their answers carry a Content-Length but no body,
    // which the header-name rewriter must know to find the next response head.
    let methods = RequestMethods::default();
    let noted_methods = methods.clone();
    let service = service_fn(move |req: http::Request<Incoming>| {
        let inner = inner.clone();
        let peer = peer.clone();
        noted_methods.note(req.method() == http::Method::HEAD);
        async move { Ok::<_, Infallible>(handle(inner, peer, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(TokioIo::new(CanonicalCase::new(tls, methods)), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(client = %addr, error = %e, "HTTP connection ended with an error");
            }
        }
        _ = wait_stop(stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn handle(
    inner: Arc<Inner>,
    peer: Peer,
    req: http::Request<Incoming>,
) -> http::Response<Full<Bytes>> {
    let started = Instant::now();
    let gw = &inner.gateway;
    let (parts, body) = req.into_parts();
    let client = gw.client_address(peer.addr, &parts.headers);
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    let claimed = basic_username(&parts.headers);
    let (resp, pending, admitted) = match gw.admit(client, started) {
        Err(r) => (r, None, false),
        Ok(()) => {
            let (resp, pending) = process(&inner, peer, parts, body).await;
            (resp, pending, true)
        }
    };
    let operation = pending
        .as_ref()
        .map(|p| p.operation.as_str())
        .unwrap_or_else(|| operation_from_path(&path));
    inner
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            operation: operation.to_string(),
            status: resp.status.as_u16(),
        })
        .inc();
    inner
        .metrics
        .duration
        .get_or_create(&OperationLabel {
            operation: operation.to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    let device = pending
        .as_ref()
        .and_then(|p| p.device.as_ref())
        .map(|d| d.to_string())
        .unwrap_or_default();
    // Past admission, a 429 or 503 the registrar never saw is the guessing guard refusing to
    // check a password.
    let unchecked = admitted && pending.is_none();
    if unchecked && resp.status == http::StatusCode::TOO_MANY_REQUESTS {
        count_not_checked(&inner, "user_backoff");
    }
    if unchecked && resp.status == http::StatusCode::SERVICE_UNAVAILABLE {
        count_not_checked(&inner, "global_bound");
    }
    // Refusals the registrar never saw are audited through it, in bounded form: per source and
    // interval the first few one by one, the rest as one summary. Per-address rate-limit
    // answers are not audited at all, so a flood cannot turn into a flood of audit rows.
    let refused =
        resp.status.is_client_error() || resp.status == http::StatusCode::SERVICE_UNAVAILABLE;
    if refused && unchecked && path.starts_with("/.well-known/est/") {
        let (audit, summaries) = gw.note_refusal(client, started);
        for summary in summaries {
            record_refusal_summary(&inner, &summary);
        }
        match audit {
            RefusalAudit::Record => {
                record_refusal(&inner, &path, operation, claimed, client.to_string(), &resp)
            }
            RefusalAudit::Counted => {
                inner.metrics.summarized_refusals.inc();
            }
        }
    }
    tracing::info!(
        client = %client,
        %method,
        path = %truncate_path(&path),
        status = resp.status.as_u16(),
        operation,
        device = %device,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "EST request"
    );
    to_http(resp)
}

/// The username of a Basic Authorization header, as claimed (never the password).
fn basic_username(headers: &http::HeaderMap) -> String {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b| ragw_pki::base64::decode_lenient(b.as_bytes(), 1024).ok())
        .and_then(|raw| {
            let text = String::from_utf8_lossy(&raw).into_owned();
            text.split_once(':')
                .map(|(user, _)| user.chars().take(128).collect())
        })
        .unwrap_or_default()
}

fn count_not_checked(inner: &Inner, reason: &str) {
    inner
        .metrics
        .passwords_not_checked
        .get_or_create(&ReasonLabel {
            reason: reason.to_string(),
        })
        .inc();
}

/// One audit event for the refusals from a source that were counted, not recorded, in an
/// interval.
fn record_refusal_summary(inner: &Arc<Inner>, summary: &RefusalSummary) {
    let Ok(permit) = inner.refusal_slots.clone().try_acquire_owned() else {
        inner.metrics.unaudited_refusals.inc();
        return;
    };
    let request = pb::RecordRefusalRequest {
        protocol: pb::Protocol::Est as i32,
        label: String::new(),
        claimed_identity: String::new(),
        client_address: summary.source.to_string(),
        status: 0,
        reason: format!(
            "{} further refusals from this address within {} s were not audited one by one",
            summary.suppressed,
            summary.interval.as_secs()
        ),
        operation: "refusal_summary".to_string(),
        ..Default::default()
    };
    let mut registrar = EnrollmentServiceClient::new(inner.registrar.clone());
    tokio::spawn(async move {
        if let Err(e) = registrar.record_refusal(request).await {
            tracing::warn!(error = %e.message(), "could not audit a refusal summary");
        }
        drop(permit);
    });
}

/// At most this many refusal records in flight; beyond it they are counted, not audited.
const MAX_PENDING_REFUSAL_RECORDS: usize = 32;

fn record_refusal(
    inner: &Arc<Inner>,
    path: &str,
    operation: &str,
    claimed: String,
    client: String,
    resp: &HttpResponse,
) {
    let Ok(permit) = inner.refusal_slots.clone().try_acquire_owned() else {
        inner.metrics.unaudited_refusals.inc();
        return;
    };
    let label = path
        .trim_start_matches("/.well-known/est/")
        .split('/')
        .next()
        .filter(|seg| operation_from_path(&format!("/{seg}")) == "other")
        .unwrap_or("")
        .chars()
        .take(64)
        .collect::<String>();
    let request = pb::RecordRefusalRequest {
        protocol: pb::Protocol::Est as i32,
        label,
        claimed_identity: claimed,
        client_address: client,
        status: u32::from(resp.status.as_u16()),
        reason: String::from_utf8_lossy(&resp.body)
            .chars()
            .take(512)
            .collect(),
        operation: operation.to_string(),
        ..Default::default()
    };
    let mut registrar = EnrollmentServiceClient::new(inner.registrar.clone());
    tokio::spawn(async move {
        if let Err(e) = registrar.record_refusal(request).await {
            tracing::warn!(error = %e.message(), "could not audit a refused EST request");
        }
        drop(permit);
    });
}

fn operation_from_path(path: &str) -> &'static str {
    let last = path.rsplit('/').next().unwrap_or("");
    match last {
        "cacerts" => "cacerts",
        "csrattrs" => "csrattrs",
        "simpleenroll" => "simpleenroll",
        "simplereenroll" => "simplereenroll",
        "fullcmc" => "fullcmc",
        "serverkeygen" => "serverkeygen",
        _ => "other",
    }
}

fn truncate_path(p: &str) -> &str {
    match p.char_indices().nth(200) {
        Some((i, _)) => &p[..i],
        None => p,
    }
}

fn to_http(resp: HttpResponse) -> http::Response<Full<Bytes>> {
    let mut out = http::Response::new(Full::new(resp.body));
    *out.status_mut() = resp.status;
    let headers = out.headers_mut();
    for (name, value) in resp.headers {
        headers.append(name, value);
    }
    out
}

async fn process(
    inner: &Arc<Inner>,
    peer: Peer,
    parts: http::request::Parts,
    body: Incoming,
) -> (HttpResponse, Option<crate::gateway::Pending>) {
    let gw = &inner.gateway;
    let limits = &gw.config().limits;
    if let Err(r) = gw.check_declared_length(&parts.headers) {
        return (r, None);
    }
    let collected = tokio::time::timeout(
        limits.body_timeout,
        Limited::new(body, limits.max_body_bytes).collect(),
    )
    .await;
    let body = match collected {
        Err(_) => return (gw.body_timeout(), None),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return (gw.body_too_large(), None);
            }
            return (
                HttpResponse::text(
                    http::StatusCode::BAD_REQUEST,
                    format!("the request body could not be read: {e}"),
                ),
                None,
            );
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let request = HttpRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
        peer,
    };
    let step = if gw.may_block(&request.headers) {
        let inner = inner.clone();
        match tokio::task::spawn_blocking(move || inner.gateway.begin(&request, SystemTime::now()))
            .await
        {
            Ok(step) => step,
            Err(e) => {
                tracing::error!(error = %e, "request task failed");
                return (
                    HttpResponse::text(
                        http::StatusCode::INTERNAL_SERVER_ERROR,
                        "internal error while authenticating the request",
                    ),
                    None,
                );
            }
        }
    } else {
        gw.begin(&request, SystemTime::now())
    };
    match step {
        Step::Respond(r) => (r, None),
        Step::Assignment(pending, call) => {
            let mut client = EnrollmentServiceClient::new(inner.registrar.clone());
            let result = call_registrar(
                limits.registrar_timeout,
                Duration::ZERO,
                |req| client.get_assignment(req),
                call,
            )
            .await;
            (gw.assignment_response(&pending, result), Some(pending))
        }
        Step::Enroll(pending, call) => {
            let resp = enroll(inner, &pending, call).await;
            (resp, Some(pending))
        }
        Step::CaCerts(pending, call) => {
            let result = ca_certificates(inner, call).await;
            (gw.cacerts_from_registrar(&pending, result), Some(pending))
        }
    }
}

/// The profile's CA certificates, from the cache while fresh.
async fn ca_certificates(
    inner: &Arc<Inner>,
    call: pb::GetCaCertificatesRequest,
) -> Result<pb::CaCertificates, Status> {
    let cached = inner.cacerts.lock().ok().and_then(|cache| {
        cache
            .get(&call.profile)
            .filter(|(at, c)| {
                let ttl = if c.certificates_der.is_empty() {
                    NO_CACERTS_CACHE
                } else {
                    CACERTS_CACHE
                };
                at.elapsed() < ttl
            })
            .map(|(_, c)| c.clone())
    });
    if let Some(c) = cached {
        return Ok(c);
    }
    let profile = call.profile.clone();
    let mut client = EnrollmentServiceClient::new(inner.registrar.clone());
    let result = call_registrar(
        inner.gateway.config().limits.registrar_timeout,
        Duration::ZERO,
        |req| client.get_ca_certificates(req),
        call,
    )
    .await;
    if let Ok(c) = &result
        && let Ok(mut cache) = inner.cacerts.lock()
    {
        cache.insert(profile, (Instant::now(), c.clone()));
    }
    result
}

/// One registrar RPC with a deadline: `timeout` plus `extra` (the time the RPC itself is asked
/// to wait).
async fn call_registrar<T, R, F, Fut>(
    timeout: Duration,
    extra: Duration,
    f: F,
    message: T,
) -> Result<R, Status>
where
    F: FnOnce(tonic::Request<T>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<R>, Status>>,
{
    let bound = timeout + extra;
    let mut req = tonic::Request::new(message);
    req.set_timeout(bound);
    match tokio::time::timeout(bound + Duration::from_secs(1), f(req)).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no answer within {} s",
            bound.as_secs()
        ))),
    }
}

async fn enroll(
    inner: &Arc<Inner>,
    pending: &crate::gateway::Pending,
    call: pb::EnrollRequest,
) -> HttpResponse {
    let gw = &inner.gateway;
    let limits = &gw.config().limits;
    let mut client = EnrollmentServiceClient::new(inner.registrar.clone());
    let deadline = Instant::now() + gw.wait_bound();
    let mut enrollment = match call_registrar(
        limits.registrar_timeout,
        Duration::ZERO,
        |r| client.enroll(r),
        call,
    )
    .await
    {
        Ok(pb::EnrollResponse {
            enrollment: Some(e),
            ..
        }) => e,
        Ok(_) => {
            return HttpResponse::text(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "the registrar answered without an enrollment",
            );
        }
        Err(s) => return gw.registrar_error(pending, &s),
    };
    loop {
        let now = Instant::now();
        let id = match gw.enroll_response(pending, &enrollment, now >= deadline) {
            EnrollNext::Respond(r) => return r,
            EnrollNext::Wait(id) => id,
        };
        let remaining = deadline.saturating_duration_since(now);
        let wait = pb::WaitEnrollmentRequest {
            id,
            timeout_millis: u32::try_from(remaining.as_millis()).unwrap_or(u32::MAX),
        };
        match call_registrar(
            limits.registrar_timeout,
            remaining,
            |r| client.wait_enrollment(r),
            wait,
        )
        .await
        {
            Ok(e) => enrollment = e,
            // The enrollment is stored; a registrar hiccup during the wait is a "retry later",
            // not an error.
            Err(s) => {
                tracing::warn!(error = %s, "waiting for the enrollment failed");
                return match gw.enroll_response(pending, &enrollment, true) {
                    EnrollNext::Respond(r) => r,
                    EnrollNext::Wait(_) => gw.registrar_error(pending, &s),
                };
            }
        }
    }
}
