//! The ACME load generator behind `ragw bench acme`: N certificates with C concurrent clients
//! (one account each) against any directory, in the per-name dns-01 flow or the pre-authorized
//! (RFC 8555 §7.4.1 + RFC 9444) flow. dns-01 answers are published in an in-process DNS
//! responder that the CA under test must use as its resolver.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{AcmeClient, ClientError, make_csr};
use crate::dns_responder::DnsResponder;
use crate::validate::dns01_value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// newOrder, authorization, dns-01 challenge, poll, finalize, download: per name.
    PerName,
    /// One parent-domain authorization per account (newAuthz with subdomainAuthAllowed), then
    /// newOrder (ready at once), finalize, download per name.
    PreAuthorized,
}

impl Flow {
    pub fn name(self) -> &'static str {
        match self {
            Flow::PerName => "per-name dns-01",
            Flow::PreAuthorized => "pre-authorized (RFC 9444)",
        }
    }
}

#[derive(Clone)]
pub struct Target {
    pub label: String,
    pub directory: String,
    pub root_pem: Option<String>,
}

pub struct Options {
    pub certificates: usize,
    pub concurrency: usize,
    pub flow: Flow,
    /// Names are `<unique label>.<domain>`.
    pub domain: String,
    pub dns: Arc<DnsResponder>,
    pub poll_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub label: String,
    pub flow: Flow,
    pub issued: usize,
    pub failures: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Account creation and, in the pre-authorized flow, the parent authorizations.
    pub setup: Duration,
    pub posts: u64,
    pub bad_nonce_retries: u64,
    pub latencies: Vec<Duration>,
    /// The target stopped answering (a request timed out); the measurement was abandoned.
    pub wedged: bool,
}

impl Report {
    pub fn orders_per_second(&self) -> f64 {
        self.issued as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn posts_per_certificate(&self) -> f64 {
        self.posts as f64 / (self.issued.max(1)) as f64
    }

    pub fn latency_percentile(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        let i = ((l.len() as f64 - 1.0) * p).round() as usize;
        l[i.min(l.len() - 1)]
    }
}

fn tag() -> String {
    hex::encode(rand::random::<[u8; 4]>())
}

async fn authorize(
    c: &mut AcmeClient,
    dns: &DnsResponder,
    authz_url: &str,
    timeout: Duration,
) -> Result<(), ClientError> {
    let authz = c.get(authz_url).await?;
    if authz.get("status").and_then(Value::as_str) == Some("valid") {
        return Ok(());
    }
    let name = authz
        .pointer("/identifier/value")
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::Protocol("authorization without identifier".into()))?
        .to_string();
    let (url, token) = AcmeClient::challenge(&authz, "dns-01")?;
    let record = format!("_acme-challenge.{name}");
    let value = dns01_value(&c.key_authorization(&token));
    dns.add_txt(&record, &value);
    let result = async {
        c.respond(&url).await?;
        c.poll(authz_url, &["valid"], timeout).await
    }
    .await;
    dns.remove_txt(&record, &value);
    result.map(|_| ())
}

async fn one_certificate(
    c: &mut AcmeClient,
    opts: &Options,
    name: &str,
) -> Result<(), ClientError> {
    let (order_url, order) = c.new_order(&[("dns", name, None)]).await?;
    if order.get("status").and_then(Value::as_str) != Some("ready") {
        let authzs: Vec<String> = order
            .get("authorizations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        for a in &authzs {
            authorize(c, &opts.dns, a, opts.poll_timeout).await?;
        }
        c.poll(&order_url, &["ready"], opts.poll_timeout).await?;
    }
    let finalize = order
        .get("finalize")
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::Protocol("order without finalize URL".into()))?
        .to_string();
    let (csr, _) = make_csr(&[name.to_string()], &[])?;
    let r = c.finalize(&finalize, &csr).await?;
    if r.status >= 400 {
        return Err(ClientError::Problem {
            status: r.status,
            problem: r.json(),
        });
    }
    let mut done = r.json();
    if done.get("status").and_then(Value::as_str) != Some("valid") {
        done = c.poll(&order_url, &["valid"], opts.poll_timeout).await?;
    }
    let cert = done
        .get("certificate")
        .and_then(Value::as_str)
        .ok_or_else(|| ClientError::Protocol("valid order without certificate".into()))?
        .to_string();
    let pem = c.download(&cert).await?;
    if !pem.contains("BEGIN CERTIFICATE") {
        return Err(ClientError::Protocol(
            "the download is not a PEM chain".into(),
        ));
    }
    Ok(())
}

/// Runs one measurement.
pub async fn run(target: &Target, opts: Options) -> Result<Report, ClientError> {
    let opts = Arc::new(opts);
    let run_tag = tag();
    let setup_start = Instant::now();
    let mut clients = Vec::with_capacity(opts.concurrency);
    for _ in 0..opts.concurrency.max(1) {
        let mut c = AcmeClient::connect(&target.directory, target.root_pem.as_deref()).await?;
        c.new_account(&["mailto:bench@example.test"], None).await?;
        if opts.flow == Flow::PreAuthorized {
            let (url, _) = c.new_authz(&opts.domain, true).await?;
            authorize(&mut c, &opts.dns, &url, opts.poll_timeout).await?;
        }
        c.posts = 0;
        c.bad_nonce_retries = 0;
        clients.push(c);
    }
    let setup = setup_start.elapsed();
    let next = Arc::new(AtomicUsize::new(0));
    let wedged = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in clients {
        let next = next.clone();
        let wedged = wedged.clone();
        let opts = opts.clone();
        let run_tag = run_tag.clone();
        tasks.spawn(async move {
            let mut ok = 0usize;
            let mut failed = 0usize;
            let mut first_error = None;
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= opts.certificates || wedged.load(Ordering::SeqCst) {
                    break;
                }
                let name = format!("b{run_tag}n{i}.{}", opts.domain);
                let t0 = Instant::now();
                match one_certificate(&mut c, &opts, &name).await {
                    Ok(()) => {
                        ok += 1;
                        latencies.push(t0.elapsed());
                    }
                    Err(e) => {
                        // A server that stops answering is not slow, it is stuck: stop
                        // measuring it rather than time out request after request.
                        if matches!(e, ClientError::Timeout(_)) {
                            wedged.store(true, Ordering::SeqCst);
                        }
                        failed += 1;
                        if first_error.is_none() {
                            first_error = Some(format!("{name}: {e}"));
                        }
                    }
                }
            }
            (
                ok,
                failed,
                first_error,
                latencies,
                c.posts,
                c.bad_nonce_retries,
            )
        });
    }
    let mut report = Report {
        label: target.label.clone(),
        flow: opts.flow,
        issued: 0,
        failures: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        setup,
        posts: 0,
        bad_nonce_retries: 0,
        latencies: Vec::new(),
        wedged: false,
    };
    while let Some(r) = tasks.join_next().await {
        let (ok, failed, err, lat, posts, retries) =
            r.map_err(|e| ClientError::Protocol(format!("load task: {e}")))?;
        report.issued += ok;
        report.failures += failed;
        report.first_error = report.first_error.or(err);
        report.latencies.extend(lat);
        report.posts += posts;
        report.bad_nonce_retries += retries;
    }
    report.elapsed = started.elapsed();
    report.wedged = wedged.load(Ordering::SeqCst);
    Ok(report)
}

/// TLS material for a comparison server (Pebble ships none): a throwaway CA and a certificate
/// for 127.0.0.1, written to `dir`. Returns (CA PEM, certificate path, key path).
pub fn loopback_tls(
    dir: &std::path::Path,
) -> Result<(String, std::path::PathBuf, std::path::PathBuf), crate::CaError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "bench comparison CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let now = time::OffsetDateTime::now_utc();
    ca.not_before = now - time::Duration::hours(1);
    ca.not_after = now + time::Duration::days(2);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.subject_alt_names = vec![SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]))];
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + time::Duration::days(2);
    let cert = leaf.signed_by(&key, &issuer)?;
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    let write =
        |p: &std::path::Path, s: String| std::fs::write(p, s).map_err(crate::error::io_at(p));
    write(&cert_path, cert.pem())?;
    ragw_runtime::identity::write_private_file(&key_path, key.serialize_pem())
        .map_err(crate::error::io_at(&key_path))?;
    Ok((ca_cert.pem(), cert_path, key_path))
}
