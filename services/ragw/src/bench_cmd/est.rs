//! `ragw bench est`: N enrollments by C concurrent pledges against the EST gateway of
//! `ragw dev`, with enrollments/s and latency percentiles, next to the crypto-only ceiling of
//! the same pipeline (CSR checks, the leaf signature, the ACME JWS work) measured with the same
//! provider in the same run.
//!
//! Every enrollment is a new pledge, as in a fleet roll-out: its own P-256 key, its own device
//! identifier (unique per run, so the registrar never answers with an earlier enrollment), its
//! own TLS connection without session resumption and, against a loopback address, its own
//! source address in 127.0.0.0/8. The last point matters: the gateway limits requests per
//! client address (5/s with bursts of 20 in `ragw dev`), which is right for devices that each
//! have an address and would otherwise cap a single-address load tool at ~2.5 enrollments/s.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use der::Decode;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ragw_acme_ca::CaConfig;
use ragw_acme_ca::b64;
use ragw_acme_ca::client::ClientKey;
use ragw_acme_ca::jws::{Alg, Jwk, Jws};
use ragw_acme_ca::pki::{CaPki, ForeignKey, LeafRequest};
use ragw_domain::Eku;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Args)]
pub struct EstBench {
    /// The `ragw dev` data directory (endpoints.json, ca/root.pem, dev-password).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Concurrent pledges; a list (1,8,32) measures each value in turn.
    #[arg(
        short = 'c',
        long,
        value_delimiter = ',',
        num_args = 1..,
        default_value = "8"
    )]
    pub concurrency: Vec<usize>,
    /// Enrollments per measurement, each by a new pledge.
    #[arg(short = 'n', long, default_value_t = 200)]
    pub count: usize,
    /// EST label (`/.well-known/est/<label>/`); the gateway's default label when absent.
    #[arg(long)]
    pub profile_label: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Unmeasured enrollments first (at the first concurrency value): the worker's one-time
    /// ACME account and parent-domain pre-authorization then stay out of the figures.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Crypto-only bundles timed on one thread for the ceiling; 0 skips the measurement.
    #[arg(long, default_value_t = 1000)]
    pub crypto_iterations: usize,
    /// One enrollment (csrattrs, simpleenroll and every retry) fails after this long.
    #[arg(long, default_value_t = 120)]
    pub timeout_seconds: u64,
    /// Connect every pledge from the system's default source address instead of its own
    /// loopback address (for systems without all of 127.0.0.0/8 on the loopback interface;
    /// the gateway's per-address rate limit then throttles the run).
    #[arg(long)]
    pub single_source_address: bool,
}

/// Response bodies above this are refused: a certs-only PKCS#7 or CSR attributes are a few KiB.
const MAX_BODY: usize = 256 * 1024;

/// What one crypto bundle holds, per enrollment. The registrar checks the CSR's proof of
/// possession, and the local CA's finalize checks it again before it signs.
const CSR_VERIFICATIONS: usize = 2;
const CERTIFICATE_SIGNATURES: usize = 1;
/// The worker's pre-authorized flow: newOrder, finalize, certificate (POST-as-GET).
const JWS_POSTS: usize = 3;

pub async fn run(args: EstBench) -> Result<()> {
    if args.count == 0 || args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--count and every --concurrency value must be positive");
    }
    let target = Arc::new(Target::load(
        &args.data_dir,
        args.profile_label.as_deref(),
        !args.single_source_address,
    )?);
    // The ceiling first, while the server is idle, so the two figures do not disturb each
    // other; a blocking thread, because it is one core's worth of synchronous work.
    let crypto = if args.crypto_iterations > 0 {
        let k = args.crypto_iterations;
        Some(
            tokio::task::spawn_blocking(move || measure_crypto(k))
                .await
                .context("the crypto measurement panicked")??,
        )
    } else {
        None
    };
    let run_id = format!("{:08x}", rand::random::<u32>());
    let timeout = Duration::from_secs(args.timeout_seconds.max(1));
    if args.warmup > 0 {
        let c = args.concurrency.first().copied().unwrap_or(1);
        let w = run_load(&target, &run_id, 0, c, args.warmup, timeout).await;
        if w.failed > 0 {
            bail!(
                "warm-up: {} of {} enrollments failed; first: {}",
                w.failed,
                w.count,
                w.first_error.unwrap_or_default()
            );
        }
    }
    let mut runs = Vec::new();
    for (i, &c) in args.concurrency.iter().enumerate() {
        let before = target.acme_counters().await;
        // Device identifiers and source addresses continue across measurements.
        let first = args.warmup + i * args.count;
        let mut run = run_load(&target, &run_id, first, c, args.count, timeout).await;
        if let (Some(b), Some(a)) = (before, target.acme_counters().await) {
            run.acme = Some(a.since(&b));
        }
        run.ratio_to_ceiling = crypto
            .as_ref()
            .map(|cr| run.enrollments_per_second / cr.ceiling_per_second);
        runs.push(run);
    }
    let report = Report {
        target: target.base.clone(),
        machine: Machine::this(),
        pledges: pledge_description(target.spread_sources),
        run_id,
        warmup: args.warmup,
        crypto,
        runs,
    };
    match args.format {
        Format::Text => print!("{}", render_text(&report)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    let failed: usize = report.runs.iter().map(|r| r.failed).sum();
    if failed > 0 {
        bail!(
            "{failed} of {} enrollments failed",
            report.runs.iter().map(|r| r.count).sum::<usize>()
        );
    }
    Ok(())
}

fn pledge_description(spread: bool) -> String {
    let mut s = String::from(
        "one pledge per enrollment: new P-256 key, new device identifier, new TLS connection \
         (no resumption)",
    );
    if spread {
        s.push_str(", own source address in 127.0.0.0/8");
    }
    s
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The gateway as `ragw dev` describes it in its data directory.
struct Target {
    /// `https://host:port/.well-known/est/` or `…/est/<label>/`.
    base: String,
    tls: rustls::ClientConfig,
    password: String,
    metrics: Option<String>,
    /// Give each pledge its own loopback source address.
    spread_sources: bool,
}

impl Target {
    fn load(data_dir: &Path, label: Option<&str>, spread: bool) -> Result<Target> {
        let endpoints_path = data_dir.join("endpoints.json");
        let text = std::fs::read_to_string(&endpoints_path).with_context(|| {
            format!(
                "reading {} (is `ragw dev` running?)",
                endpoints_path.display()
            )
        })?;
        let endpoints: Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", endpoints_path.display()))?;
        let est = endpoints
            .get("est")
            .and_then(Value::as_str)
            .with_context(|| format!("no \"est\" in {}", endpoints_path.display()))?
            .trim_end_matches('/')
            .to_string();
        let uri: http::Uri = est
            .parse()
            .with_context(|| format!("the EST URL {est:?} is not a URL"))?;
        let loopback = uri
            .host()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok())
            .is_some_and(|ip| ip.is_loopback() && ip.is_ipv4());
        let base = match label {
            Some(l) => format!("{est}/.well-known/est/{l}/"),
            None => format!("{est}/.well-known/est/"),
        };
        let root_path = data_dir.join("ca").join("root.pem");
        let root_pem = std::fs::read(&root_path)
            .with_context(|| format!("reading {}", root_path.display()))?;
        let password_path = data_dir.join("dev-password");
        let password = std::fs::read_to_string(&password_path)
            .with_context(|| format!("reading {}", password_path.display()))?
            .trim()
            .to_string();
        Ok(Target {
            base,
            tls: tls_config(&root_pem)?,
            password,
            metrics: endpoints
                .get("metrics")
                .and_then(Value::as_str)
                .map(str::to_string),
            spread_sources: spread && loopback,
        })
    }

    fn source_address(&self, n: usize) -> Option<IpAddr> {
        self.spread_sources.then(|| loopback_source(n))
    }

    /// The worker's ACME counters from the metrics endpoint; `None` when it cannot be read
    /// (the report then goes without measured POSTs per certificate).
    async fn acme_counters(&self) -> Option<AcmeCounters> {
        let url = self.metrics.as_deref()?;
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let req = Request::get(url).body(Full::new(Bytes::new())).ok()?;
        let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .ok()?
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body = Limited::new(resp.into_body(), 16 * 1024 * 1024)
            .collect()
            .await
            .ok()?
            .to_bytes();
        Some(AcmeCounters::parse(&String::from_utf8_lossy(&body)))
    }
}

/// Trusts only the dev CA's root, with aws-lc-rs, and never resumes a session: every pledge is
/// a device of its own with no ticket from another one.
fn tls_config(root_pem: &[u8]) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem) {
        roots
            .add(cert.context("the root PEM")?)
            .context("the root certificate")?;
    }
    if roots.is_empty() {
        bail!("the root PEM holds no certificate");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(cfg)
}

fn pledge_client(tls: &rustls::ClientConfig, local: Option<IpAddr>) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_local_address(local);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(https)
}

/// Pledge `n`'s source address: 127.h.m.l with h ≥ 1 (never 127.0.0.1, which other local
/// clients share) and l in 1..=254; distinct for the first 16 million pledges.
fn loopback_source(n: usize) -> IpAddr {
    let n = n % (254 * 256 * 254);
    let low = (n % 254) as u8 + 1;
    let mid = ((n / 254) % 256) as u8;
    let high = (n / (254 * 256)) as u8 + 1;
    IpAddr::V4(Ipv4Addr::new(127, high, mid, low))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    CsrAttrs,
    SimpleEnroll,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::CsrAttrs => "csrattrs",
            Step::SimpleEnroll => "simpleenroll",
        }
    }
}

/// Why an enrollment did not end with a certificate.
#[derive(Debug)]
enum Failure {
    Timeout,
    Connect {
        step: Step,
        detail: String,
    },
    Transport {
        step: Step,
        detail: String,
    },
    Status {
        step: Step,
        status: u16,
        detail: String,
    },
    BadBody {
        step: Step,
        detail: String,
    },
    Local(String),
}

impl Failure {
    /// The bucket the report counts it in.
    fn kind(&self) -> String {
        match self {
            Failure::Timeout => "timeout".into(),
            Failure::Connect { step, .. } => format!("{}: connect", step.name()),
            Failure::Transport { step, .. } => format!("{}: transport", step.name()),
            Failure::Status { step, status, .. } => format!("{}: HTTP {status}", step.name()),
            Failure::BadBody { step, .. } => format!("{}: bad response", step.name()),
            Failure::Local(_) => "pledge".into(),
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::Timeout => "no certificate within the timeout".into(),
            Failure::Connect { detail, .. }
            | Failure::Transport { detail, .. }
            | Failure::BadBody { detail, .. }
            | Failure::Local(detail) => format!("{}: {detail}", self.kind()),
            Failure::Status { detail, .. } => format!("{}: {detail}", self.kind()),
        }
    }
}

/// Retries one enrollment needed.
#[derive(Debug, Default, Clone, Copy)]
struct Retries {
    /// 202 Accepted: the certificate was still being obtained.
    pending: u32,
    /// 429 / 503 with Retry-After.
    throttled: u32,
}

struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Bytes,
}

async fn send(
    client: &HttpsClient,
    step: Step,
    req: Request<Full<Bytes>>,
) -> Result<Answer, Failure> {
    let resp = client.request(req).await.map_err(|e| {
        let detail = error_chain(&e);
        if e.is_connect() {
            Failure::Connect { step, detail }
        } else {
            Failure::Transport { step, detail }
        }
    })?;
    let status = resp.status();
    let retry_after = retry_after(resp.headers());
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| Failure::Transport {
            step,
            detail: format!("reading the body: {e}"),
        })?
        .to_bytes();
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// The error and its sources: hyper's own text ("client error (SendRequest)") hides the cause.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Retry-After in seconds (the gateway never sends an HTTP date).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Statuses a pledge waits out: the answer says when to come back.
fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

fn text_of(body: &Bytes) -> String {
    String::from_utf8_lossy(body).chars().take(300).collect()
}

/// One pledge: csrattrs for its assigned name, a CSR with exactly that name, simpleenroll until
/// the certificate comes (the same CSR after every 202).
async fn enroll(
    target: &Target,
    device: &str,
    local: Option<IpAddr>,
    key: &KeyPair,
) -> Result<Retries, Failure> {
    let mut client = pledge_client(&target.tls, local);
    let auth = format!(
        "Basic {}",
        STANDARD.encode(format!("{device}:{}", target.password))
    );
    let mut retries = Retries::default();
    let local_err = |e: http::Error| Failure::Local(e.to_string());

    let names = loop {
        let req = Request::get(format!("{}csrattrs", target.base))
            .header(AUTHORIZATION, &auth)
            .body(Full::new(Bytes::new()))
            .map_err(local_err)?;
        let a = send(&client, Step::CsrAttrs, req).await?;
        if retryable(a.status) {
            retries.throttled += 1;
            client = wait_out(&target.tls, local, a.retry_after).await;
            continue;
        }
        if a.status != StatusCode::OK {
            return Err(Failure::Status {
                step: Step::CsrAttrs,
                status: a.status.as_u16(),
                detail: text_of(&a.body),
            });
        }
        break assigned_names(&a.body).map_err(|detail| Failure::BadBody {
            step: Step::CsrAttrs,
            detail,
        })?;
    };

    let csr = csr_der(key, &names).map_err(|e| Failure::Local(format!("{e:#}")))?;
    let body = Bytes::from(STANDARD.encode(&csr));
    loop {
        let req = Request::post(format!("{}simpleenroll", target.base))
            .header(AUTHORIZATION, &auth)
            .header(CONTENT_TYPE, "application/pkcs10")
            .body(Full::new(body.clone()))
            .map_err(local_err)?;
        let a = send(&client, Step::SimpleEnroll, req).await?;
        match a.status {
            StatusCode::OK => {
                check_certs_only(&a.body).map_err(|detail| Failure::BadBody {
                    step: Step::SimpleEnroll,
                    detail,
                })?;
                return Ok(retries);
            }
            StatusCode::ACCEPTED => retries.pending += 1,
            s if retryable(s) => retries.throttled += 1,
            s => {
                return Err(Failure::Status {
                    step: Step::SimpleEnroll,
                    status: s.as_u16(),
                    detail: text_of(&a.body),
                });
            }
        }
        client = wait_out(&target.tls, local, a.retry_after).await;
    }
}

/// Sleeps for Retry-After, then gives the pledge a new connection, as a device that went away
/// would have: the server closes connections idle for as long as a Retry-After (10 s), and
/// reusing one raced with that close (requests failed with `SendRequest`).
async fn wait_out(
    tls: &rustls::ClientConfig,
    local: Option<IpAddr>,
    retry_after: Option<Duration>,
) -> HttpsClient {
    tokio::time::sleep(retry_after.unwrap_or(Duration::from_secs(1))).await;
    pledge_client(tls, local)
}

/// The dNSNames a base64 CsrAttrs asks for.
fn assigned_names(body: &[u8]) -> Result<Vec<String>, String> {
    let der = ragw_pki::base64::decode_lenient(body, MAX_BODY).map_err(|e| e.to_string())?;
    let attrs = ragw_pki::csrattrs::parse_csr_attrs(&der).map_err(|e| e.to_string())?;
    let names = ragw_pki::csrattrs::requested_dns_names(&attrs).map_err(|e| e.to_string())?;
    if names.is_empty() {
        return Err("the CSR attributes assign no DNS name".into());
    }
    Ok(names)
}

/// A base64 certs-only PKCS#7 holding at least one certificate.
fn check_certs_only(body: &[u8]) -> Result<(), String> {
    let der = ragw_pki::base64::decode_lenient(body, MAX_BODY).map_err(|e| e.to_string())?;
    let certs = ragw_pki::parse_certs_only(&der).map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("the PKCS#7 holds no certificate".into());
    }
    Ok(())
}

/// A CSR with the names as subjectAltNames and the first as common name, like the README's
/// openssl command.
pub(super) fn csr_der(key: &KeyPair, names: &[String]) -> Result<Vec<u8>> {
    let first = names.first().context("no name to request")?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, first.as_str());
    Ok(params.serialize_request(key)?.der().to_vec())
}

struct Outcome {
    latency: Duration,
    result: Result<Retries, Failure>,
}

async fn run_load(
    target: &Arc<Target>,
    run_id: &str,
    first: usize,
    concurrency: usize,
    count: usize,
    timeout: Duration,
) -> LoadRun {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(count) {
        let (target, next, run_id) = (target.clone(), next.clone(), run_id.to_string());
        tasks.spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let n = first + i;
                let device = format!("bench-{run_id}-{n}");
                // The key exists before the pledge starts enrolling, as on a device.
                let key = match KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256) {
                    Ok(k) => k,
                    Err(e) => {
                        outcomes.push(Outcome {
                            latency: Duration::ZERO,
                            result: Err(Failure::Local(format!("key generation: {e}"))),
                        });
                        continue;
                    }
                };
                let t0 = Instant::now();
                let result = tokio::time::timeout(
                    timeout,
                    enroll(&target, &device, target.source_address(n), &key),
                )
                .await
                .unwrap_or(Err(Failure::Timeout));
                outcomes.push(Outcome {
                    latency: t0.elapsed(),
                    result,
                });
            }
            outcomes
        });
    }
    let mut outcomes = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(o) => outcomes.extend(o),
            Err(e) => outcomes.push(Outcome {
                latency: Duration::ZERO,
                result: Err(Failure::Local(format!("a pledge task died: {e}"))),
            }),
        }
    }
    summarize(concurrency, count, started.elapsed(), outcomes)
}

fn summarize(concurrency: usize, count: usize, wall: Duration, outcomes: Vec<Outcome>) -> LoadRun {
    let mut latencies = Vec::with_capacity(outcomes.len());
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut first_error = None;
    let (mut pending, mut throttled) = (0u64, 0u64);
    for o in outcomes {
        match o.result {
            Ok(r) => {
                latencies.push(o.latency);
                pending += u64::from(r.pending);
                throttled += u64::from(r.throttled);
            }
            Err(f) => {
                *errors.entry(f.kind()).or_default() += 1;
                first_error.get_or_insert_with(|| f.message());
            }
        }
    }
    latencies.sort_unstable();
    let succeeded = latencies.len();
    let failed = errors.values().sum();
    let wall_seconds = wall.as_secs_f64();
    LoadRun {
        concurrency,
        count,
        succeeded,
        failed,
        wall_seconds,
        enrollments_per_second: if wall_seconds > 0.0 {
            succeeded as f64 / wall_seconds
        } else {
            0.0
        },
        latency_ms: LatencyMs::of(&latencies),
        retries_202: pending,
        retries_throttled: throttled,
        errors,
        first_error,
        acme: None,
        ratio_to_ceiling: None,
    }
}

/// Nearest-rank percentile (`q` in (0, 1]) of sorted samples.
pub(super) fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(super) struct LatencyMs {
    pub(super) p50: f64,
    pub(super) p90: f64,
    pub(super) p99: f64,
    pub(super) max: f64,
}

impl LatencyMs {
    pub(super) fn of(sorted: &[Duration]) -> Option<LatencyMs> {
        let ms = |q| percentile(sorted, q).map(|d| d.as_secs_f64() * 1000.0);
        Some(LatencyMs {
            p50: ms(0.50)?,
            p90: ms(0.90)?,
            p99: ms(0.99)?,
            max: ms(1.0)?,
        })
    }
}

/// The worker's ACME requests, from its Prometheus counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct AcmeCounters {
    posts: f64,
    certificates: f64,
}

impl AcmeCounters {
    fn parse(exposition: &str) -> AcmeCounters {
        let mut c = AcmeCounters::default();
        for line in exposition.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            if name.ends_with("acme_requests_total") && line.contains("method=\"POST\"") {
                c.posts += value;
            } else if name.ends_with("acme_certificates_issued_total") {
                c.certificates += value;
            }
        }
        c
    }

    fn since(&self, before: &AcmeCounters) -> AcmeStats {
        let posts = self.posts - before.posts;
        let certificates = self.certificates - before.certificates;
        AcmeStats {
            posts,
            certificates,
            posts_per_certificate: (certificates > 0.0).then(|| posts / certificates),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct AcmeStats {
    posts: f64,
    certificates: f64,
    posts_per_certificate: Option<f64>,
}

#[derive(Debug, Serialize)]
struct LoadRun {
    concurrency: usize,
    count: usize,
    succeeded: usize,
    failed: usize,
    wall_seconds: f64,
    enrollments_per_second: f64,
    latency_ms: Option<LatencyMs>,
    /// 202 answers waited out, over all enrollments.
    retries_202: u64,
    /// 429/503 answers waited out.
    retries_throttled: u64,
    errors: BTreeMap<String, usize>,
    first_error: Option<String>,
    /// The worker's ACME POSTs during this measurement (from the metrics endpoint).
    acme: Option<AcmeStats>,
    /// enrollments/s ÷ the crypto-only ceiling.
    ratio_to_ceiling: Option<f64>,
}

#[derive(Debug, Serialize)]
pub(super) struct Machine {
    pub(super) cores: usize,
    pub(super) cpu: Option<String>,
}

impl Machine {
    pub(super) fn this() -> Machine {
        Machine {
            cores: cores(),
            cpu: std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, m)| m.trim().to_string())
            }),
        }
    }
}

pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(Debug, Serialize)]
struct BundleShape {
    csr_verifications: usize,
    csr_key: &'static str,
    certificate_signatures: usize,
    issuer_key: &'static str,
    jws_es256_sign_and_verify: usize,
}

#[derive(Debug, Serialize)]
struct CryptoCeiling {
    provider: &'static str,
    bundle: BundleShape,
    iterations: usize,
    seconds: f64,
    bundles_per_second_per_core: f64,
    cores: usize,
    /// bundles/s per core × cores: enrollments/s if nothing but this cryptography ran.
    ceiling_per_second: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    target: String,
    machine: Machine,
    pledges: String,
    run_id: String,
    /// Unmeasured enrollments before the first measurement.
    warmup: usize,
    crypto: Option<CryptoCeiling>,
    runs: Vec<LoadRun>,
}

fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ragw bench est → {} ({} cores{})",
        r.target,
        r.machine.cores,
        r.machine
            .cpu
            .as_deref()
            .map(|c| format!(", {c}"))
            .unwrap_or_default()
    );
    let _ = writeln!(s, "pledges: {}", r.pledges);
    let _ = writeln!(
        s,
        "device identifiers bench-{}-<n>; {} unmeasured warm-up enrollments first",
        r.run_id, r.warmup
    );
    if let Some(c) = &r.crypto {
        let _ = writeln!(
            s,
            "crypto-only ceiling ({}): 1 bundle = {} CSR verifications ({}) + {} certificate \
             signature ({}) + {} ES256 JWS sign+verify",
            c.provider,
            c.bundle.csr_verifications,
            c.bundle.csr_key,
            c.bundle.certificate_signatures,
            c.bundle.issuer_key,
            c.bundle.jws_es256_sign_and_verify
        );
        let _ = writeln!(
            s,
            "  {} bundles on one thread in {:.3} s: {:.1} bundles/s per core × {} cores = {:.1} enrollments/s",
            c.iterations, c.seconds, c.bundles_per_second_per_core, c.cores, c.ceiling_per_second
        );
    }
    let _ = writeln!(
        s,
        "{:>5} {:>6} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} {:>10} {:>10}",
        "C",
        "N",
        "ok",
        "failed",
        "enroll/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "202s",
        "429s",
        "POSTs/cert",
        "of ceiling"
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    for run in &r.runs {
        let l = run.latency_ms.as_ref();
        let _ = writeln!(
            s,
            "{:>5} {:>6} {:>6} {:>6} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} {:>10} {:>10}",
            run.concurrency,
            run.count,
            run.succeeded,
            run.failed,
            run.enrollments_per_second,
            ms(l.map(|l| l.p50)),
            ms(l.map(|l| l.p90)),
            ms(l.map(|l| l.p99)),
            ms(l.map(|l| l.max)),
            run.retries_202,
            run.retries_throttled,
            run.acme
                .as_ref()
                .and_then(|a| a.posts_per_certificate)
                .map_or_else(|| "-".to_string(), |p| format!("{p:.2}")),
            run.ratio_to_ceiling
                .map_or_else(|| "-".to_string(), |x| format!("{:.1}%", x * 100.0)),
        );
    }
    for run in r.runs.iter().filter(|run| !run.errors.is_empty()) {
        let kinds: Vec<String> = run
            .errors
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect();
        let _ = writeln!(s, "errors at C={}: {}", run.concurrency, kinds.join(", "));
        if let Some(e) = &run.first_error {
            let _ = writeln!(s, "  first: {e}");
        }
    }
    s
}

/// One enrollment's cryptography outside the pledge, on the same provider (aws-lc-rs) and
/// through the same functions the services call: the registrar's and the CA's CSR checks
/// (`ragw_pki::parse_csr`), the local CA's leaf signature (`CaPki::issue`, the default P-384
/// intermediate), and the worker's three JWS (signed like the worker's aws-lc-rs ES256 key,
/// verified the way `Ca::verify` does: parse, stored JWK, signature).
pub struct CryptoBundle {
    pki: CaPki,
    csr_der: Vec<u8>,
    account: ClientKey,
    /// The account key as the CA stores it (RFC 7638 form), parsed again per request as the
    /// CA does.
    stored_jwk: String,
    kid: String,
    base: String,
    _dir: tempfile::TempDir,
}

const BUNDLE_DOMAIN: &str = "devices.bench.test";

impl CryptoBundle {
    pub fn new() -> Result<CryptoBundle> {
        let dir = tempfile::tempdir().context("a temporary directory for the bench CA")?;
        let cfg = CaConfig::new(
            dir.path().join("ca"),
            vec![BUNDLE_DOMAIN.to_string()],
            SocketAddr::from((Ipv4Addr::LOCALHOST, 53)),
        );
        let pki = CaPki::load_or_create(&cfg, "http://127.0.0.1/crl".into())
            .map_err(|e| anyhow!("creating the bench CA: {e}"))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let csr_der = csr_der(&key, &[format!("k7q2m9x4a.{BUNDLE_DOMAIN}")])?;
        let account = ClientKey::generate("ES256").map_err(|e| anyhow!("account key: {e}"))?;
        let stored_jwk = Jwk::from_value(&account.jwk())
            .map_err(|p| anyhow!("account JWK: {p}"))?
            .canonical();
        let base = "https://127.0.0.1:14000/acme".to_string();
        Ok(CryptoBundle {
            pki,
            csr_der,
            account,
            stored_jwk,
            kid: format!("{base}/acct/1"),
            base,
            _dir: dir,
        })
    }

    /// Runs the bundle once; returns the leaf so that tests can check what was signed.
    pub fn run_once(&self) -> Result<Vec<u8>> {
        // Registrar: the device's proof of possession.
        let parsed = ragw_pki::parse_csr(&self.csr_der).context("registrar CSR check")?;
        // Worker → CA: newOrder for the assigned name.
        let identifiers: Vec<Value> = parsed
            .dns_names
            .iter()
            .map(|n| json!({"type": "dns", "value": n}))
            .collect();
        self.post(
            &format!("{}/new-order", self.base),
            Some(&json!({ "identifiers": identifiers })),
        )?;
        // Worker → CA: finalize with the device's CSR; the CA checks it again and signs.
        self.post(
            &format!("{}/order/1/finalize", self.base),
            Some(&json!({ "csr": b64::encode(&self.csr_der) })),
        )?;
        let at_ca = ragw_pki::parse_csr(&self.csr_der).context("CA CSR check")?;
        let req = x509_cert::request::CertReq::from_der(&self.csr_der)?;
        let key = ForeignKey::from_spki(&req.info.public_key)
            .context("the CSR's key cannot be certified")?;
        let leaf = self
            .pki
            .issue(&LeafRequest {
                key: &key,
                dns_names: &at_ca.dns_names,
                ips: &at_ca.ip_addresses,
                ekus: &[Eku::ServerAuth, Eku::ClientAuth],
                not_before: None,
                not_after: time::OffsetDateTime::now_utc() + time::Duration::days(30),
            })
            .map_err(|e| anyhow!("signing the leaf: {e}"))?;
        // Worker → CA: download the certificate (POST-as-GET).
        self.post(&format!("{}/cert/1", self.base), None)?;
        Ok(leaf.der)
    }

    fn post(&self, url: &str, payload: Option<&Value>) -> Result<()> {
        let body = self.sign(url, payload)?;
        self.verify(body.as_bytes())
    }

    /// The worker's side: a flattened JWS by the account key.
    fn sign(&self, url: &str, payload: Option<&Value>) -> Result<String> {
        let protected = json!({
            "alg": "ES256",
            "kid": self.kid,
            "nonce": "bench-nonce-0123456789abcdef",
            "url": url,
        });
        Ok(self
            .account
            .jws(&protected, payload)
            .map_err(|e| anyhow!("signing a JWS: {e}"))?
            .to_string())
    }

    /// The CA's side, in `Ca::verify`'s order (nonces and the store are not cryptography).
    fn verify(&self, body: &[u8]) -> Result<()> {
        let jws = Jws::parse_body(body, 64 * 1024).map_err(|p| anyhow!("JWS: {p}"))?;
        let alg = Alg::parse(&jws.header.alg).map_err(|p| anyhow!("JWS alg: {p}"))?;
        let stored: Value = serde_json::from_str(&self.stored_jwk)?;
        let key = Jwk::from_value(&stored).map_err(|p| anyhow!("stored JWK: {p}"))?;
        key.verify(alg, &jws.signing_input(), &jws.signature)
            .map_err(|p| anyhow!("JWS signature: {p}"))
    }
}

/// Bundles before the clock starts: first-use costs (tables, allocator) are not the steady
/// state.
const CRYPTO_WARMUP: usize = 20;

fn measure_crypto(iterations: usize) -> Result<CryptoCeiling> {
    let bundle = CryptoBundle::new()?;
    for _ in 0..CRYPTO_WARMUP {
        bundle.run_once()?;
    }
    let start = Instant::now();
    for _ in 0..iterations {
        bundle.run_once()?;
    }
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    let per_core = iterations as f64 / seconds;
    let cores = cores();
    Ok(CryptoCeiling {
        provider: "aws-lc-rs",
        bundle: BundleShape {
            csr_verifications: CSR_VERIFICATIONS,
            csr_key: "ECDSA P-256/SHA-256",
            certificate_signatures: CERTIFICATE_SIGNATURES,
            issuer_key: "ECDSA P-384/SHA-384",
            jws_es256_sign_and_verify: JWS_POSTS,
        },
        iterations,
        seconds,
        bundles_per_second_per_core: per_core,
        cores,
        ceiling_per_second: per_core * cores as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[ms(7)], 0.5), Some(ms(7)));
        assert_eq!(percentile(&[ms(7)], 0.99), Some(ms(7)));
        let hundred: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&hundred, 0.50), Some(ms(50)));
        assert_eq!(percentile(&hundred, 0.90), Some(ms(90)));
        assert_eq!(percentile(&hundred, 0.99), Some(ms(99)));
        assert_eq!(percentile(&hundred, 1.0), Some(ms(100)));
        let ten: Vec<Duration> = (1..=10).map(ms).collect();
        // ceil(0.99 × 10) = 10: with ten samples p99 is the maximum.
        assert_eq!(percentile(&ten, 0.99), Some(ms(10)));
        assert_eq!(percentile(&ten, 0.5), Some(ms(5)));
        assert_eq!(LatencyMs::of(&[]), None);
    }

    #[test]
    fn summary_counts_successes_errors_and_retries() {
        let outcomes = vec![
            Outcome {
                latency: ms(30),
                result: Ok(Retries {
                    pending: 1,
                    throttled: 0,
                }),
            },
            Outcome {
                latency: ms(10),
                result: Ok(Retries::default()),
            },
            Outcome {
                latency: ms(5),
                result: Err(Failure::Status {
                    step: Step::SimpleEnroll,
                    status: 400,
                    detail: "badRequest".into(),
                }),
            },
            Outcome {
                latency: ms(120_000),
                result: Err(Failure::Timeout),
            },
        ];
        let run = summarize(2, 4, Duration::from_secs(2), outcomes);
        assert_eq!((run.succeeded, run.failed), (2, 2));
        assert!((run.enrollments_per_second - 1.0).abs() < 1e-9);
        assert_eq!(run.retries_202, 1);
        assert_eq!(run.errors.get("simpleenroll: HTTP 400"), Some(&1));
        assert_eq!(run.errors.get("timeout"), Some(&1));
        assert_eq!(
            run.first_error.as_deref(),
            Some("simpleenroll: HTTP 400: badRequest")
        );
        // Failed enrollments do not enter the latency figures.
        let l = run.latency_ms.unwrap();
        assert_eq!((l.p50, l.max), (10.0, 30.0));
    }

    fn sample_report() -> Report {
        let mut errors = BTreeMap::new();
        errors.insert("csrattrs: HTTP 401".to_string(), 2);
        Report {
            target: "https://127.0.0.1:8443/.well-known/est/".into(),
            machine: Machine {
                cores: 2,
                cpu: Some("Test CPU".into()),
            },
            pledges: pledge_description(true),
            run_id: "0000abcd".into(),
            warmup: 10,
            crypto: Some(CryptoCeiling {
                provider: "aws-lc-rs",
                bundle: BundleShape {
                    csr_verifications: 2,
                    csr_key: "ECDSA P-256/SHA-256",
                    certificate_signatures: 1,
                    issuer_key: "ECDSA P-384/SHA-384",
                    jws_es256_sign_and_verify: 3,
                },
                iterations: 1000,
                seconds: 0.5,
                bundles_per_second_per_core: 2000.0,
                cores: 2,
                ceiling_per_second: 4000.0,
            }),
            runs: vec![LoadRun {
                concurrency: 8,
                count: 100,
                succeeded: 98,
                failed: 2,
                wall_seconds: 2.0,
                enrollments_per_second: 49.0,
                latency_ms: Some(LatencyMs {
                    p50: 12.25,
                    p90: 20.0,
                    p99: 33.0,
                    max: 40.5,
                }),
                retries_202: 3,
                retries_throttled: 0,
                errors,
                first_error: Some("csrattrs: HTTP 401: no".into()),
                acme: Some(AcmeStats {
                    posts: 294.0,
                    certificates: 98.0,
                    posts_per_certificate: Some(3.0),
                }),
                ratio_to_ceiling: Some(49.0 / 4000.0),
            }],
        }
    }

    #[test]
    fn text_report_shows_figures_ceiling_and_errors() {
        let text = render_text(&sample_report());
        assert!(text.contains("(2 cores, Test CPU)"), "{text}");
        assert!(text.contains("2 CSR verifications"), "{text}");
        assert!(text.contains("bench-0000abcd-<n>; 10 unmeasured"), "{text}");
        assert!(
            text.contains("2000.0 bundles/s per core × 2 cores = 4000.0 enrollments/s"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with("8 "))
            .unwrap();
        for cell in [
            "100", "98", "49.0", "12.2", "20.0", "33.0", "40.5", "3.00", "1.2%",
        ] {
            assert!(row.contains(cell), "{cell} missing in {row}");
        }
        assert!(
            text.contains("errors at C=8: csrattrs: HTTP 401 ×2"),
            "{text}"
        );
        assert!(text.contains("first: csrattrs: HTTP 401: no"), "{text}");
    }

    #[test]
    fn json_report_carries_the_same_figures() {
        let v = serde_json::to_value(sample_report()).unwrap();
        assert_eq!(v["crypto"]["ceiling_per_second"], 4000.0);
        assert_eq!(v["crypto"]["bundle"]["jws_es256_sign_and_verify"], 3);
        assert_eq!(v["runs"][0]["succeeded"], 98);
        assert_eq!(v["runs"][0]["latency_ms"]["p99"], 33.0);
        assert_eq!(v["runs"][0]["errors"]["csrattrs: HTTP 401"], 2);
        assert_eq!(v["runs"][0]["acme"]["posts_per_certificate"], 3.0);
    }

    #[test]
    fn metrics_parser_sums_posts_and_certificates() {
        let text = "# HELP acme_requests ACME HTTP requests\n\
            # TYPE acme_requests counter\n\
            acme_requests_total{kind=\"newOrder\",method=\"POST\",outcome=\"201\"} 10\n\
            acme_requests_total{kind=\"order\",method=\"POST\",outcome=\"200\"} 20\n\
            acme_requests_total{kind=\"directory\",method=\"GET\",outcome=\"200\"} 1\n\
            ragw_worker_acme_certificates_issued_total 10\n";
        let now = AcmeCounters::parse(text);
        assert_eq!(
            now,
            AcmeCounters {
                posts: 30.0,
                certificates: 10.0
            }
        );
        let stats = now.since(&AcmeCounters {
            posts: 6.0,
            certificates: 2.0,
        });
        assert_eq!(stats.posts_per_certificate, Some(3.0));
        assert_eq!(
            AcmeCounters::default()
                .since(&AcmeCounters::default())
                .posts_per_certificate,
            None
        );
    }

    #[test]
    fn loopback_sources_are_distinct_and_never_the_shared_address() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..70_000 {
            let a = loopback_source(n);
            let IpAddr::V4(v4) = a else { panic!("{a}") };
            assert!(v4.is_loopback());
            assert_ne!(v4, Ipv4Addr::LOCALHOST);
            assert!(!matches!(v4.octets()[3], 0 | 255), "{v4}");
            assert!(seen.insert(a), "{a} twice");
        }
    }

    #[test]
    fn crypto_bundle_runs_and_verifies_what_it_signs() {
        use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1, UnparsedPublicKey};
        use der::Encode;
        let bundle = CryptoBundle::new().unwrap();
        let leaf_der = bundle.run_once().unwrap();
        // The leaf is signed by the bench CA's intermediate, with P-384 / SHA-384.
        let leaf = x509_cert::Certificate::from_der(&leaf_der).unwrap();
        let int = x509_cert::Certificate::from_der(bundle.pki.intermediate_der()).unwrap();
        let int_key = int
            .tbs_certificate()
            .subject_public_key_info()
            .subject_public_key
            .raw_bytes()
            .to_vec();
        let tbs = leaf.tbs_certificate().to_der().unwrap();
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, &int_key)
            .verify(&tbs, leaf.signature().raw_bytes())
            .unwrap();
        // The CSR's name made it into the certificate.
        let leaf_text = String::from_utf8_lossy(&leaf_der);
        assert!(leaf_text.contains("k7q2m9x4a.devices.bench.test"));

        // The CA side really checks the worker's signatures: a changed payload fails.
        let url = format!("{}/new-order", bundle.base);
        let body = bundle.sign(&url, Some(&json!({"x": 1}))).unwrap();
        bundle.verify(body.as_bytes()).unwrap();
        let mut v: Value = serde_json::from_str(&body).unwrap();
        v["payload"] = Value::String(b64::encode(json!({"x": 2}).to_string()));
        assert!(bundle.verify(v.to_string().as_bytes()).is_err());
        // And a signature by another account key fails too.
        let other = ClientKey::generate("ES256").unwrap();
        let forged = other
            .jws(
                &json!({"alg": "ES256", "kid": bundle.kid, "url": url}),
                None,
            )
            .unwrap();
        assert!(bundle.verify(forged.to_string().as_bytes()).is_err());
    }

    #[test]
    fn assigned_names_come_from_csr_attributes() {
        use ragw_pki::{CsrAttrsRequest, encode_csr_attrs};
        let der = encode_csr_attrs(&CsrAttrsRequest {
            dns_names: vec!["abc123.devices.ragw.test".into()],
            key: None,
            challenge_password: false,
        })
        .unwrap();
        let b64text = ragw_pki::base64::encode_wrapped(&der, 64);
        assert_eq!(
            assigned_names(b64text.as_bytes()).unwrap(),
            vec!["abc123.devices.ragw.test".to_string()]
        );
        assert!(assigned_names(b"not base64 !").is_err());
        // And a CSR built from it names it, with a verifiable signature.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = csr_der(&key, &["abc123.devices.ragw.test".to_string()]).unwrap();
        let parsed = ragw_pki::parse_csr(&csr).unwrap();
        assert_eq!(parsed.dns_names, vec!["abc123.devices.ragw.test"]);
        assert_eq!(
            parsed.subject_common_name.as_deref(),
            Some("abc123.devices.ragw.test")
        );
    }
}
