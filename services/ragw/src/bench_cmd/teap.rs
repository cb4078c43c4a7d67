//! `ragw bench teap`: N TEAP provisioning conversations by C concurrent new pledges against the
//! RADIUS front of `ragw dev`'s TEAP gateway, with conversations/s, latency percentiles and
//! RADIUS round trips per conversation, next to the rate of bare TLS 1.2 handshakes of the same
//! shape measured in the same run.
//!
//! Every conversation is a new pledge driven by the project's own peer (`ragw-teap-peer`) over
//! UDP as a NAS would carry it: EAP-Response/Identity → TEAP Start → TLS 1.2 tunnel →
//! Basic-Password-Auth with the bootstrap password and a device identifier no earlier run used →
//! Request-Action(PKCS#10) with CSR-Attributes → a CSR with exactly the assigned names →
//! PKCS#7 → Crypto-Binding → Result → EAP-Success with MS-MPPE keys. A conversation counts as a
//! success only with Access-Accept, the peer's own success (verified Crypto-Binding), a PKCS#7
//! holding a certificate, and the Access-Accept's MSK equal to the peer's.
//!
//! The comparison is an in-process loop of TLS 1.2 handshakes (rustls client and server in one
//! thread, memory buffers): the gateway's own `tls_server_config` (asks for a client
//! certificate, accepts none) and the peer's `client_tls_config`, with a P-256 server leaf under
//! a P-384 CA as `ragw dev` issues it. It is the tunnel's cryptographic floor without RADIUS,
//! the registrar or the CA, and unlike a tunnel-only TEAP conversation it leaves no refusal in
//! the server's audit log.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use ragw_teap_peer::{
    Peer, PeerConfig, PeerError, RadiusAttrs, RadiusOutcome, client_tls_config, run_over_radius,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde::Serialize;
use serde_json::Value;

use super::est::{Format, LatencyMs, Machine, cores, csr_der};

#[derive(Args)]
pub struct TeapBench {
    /// The `ragw dev` data directory (endpoints.json, radius-secret, ca/root.pem, dev-password).
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
    /// Conversations per measurement, each by a new pledge.
    #[arg(short = 'n', long, default_value_t = 200)]
    pub count: usize,
    /// TEAP label, sent as the realm of the outer identity (`anonymous@<label>`); the
    /// gateway's default label when absent.
    #[arg(long)]
    pub profile_label: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Unmeasured conversations first (at the first concurrency value).
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// In-process TLS 1.2 handshakes timed on one thread for the comparison; 0 skips it.
    #[arg(long, default_value_t = 1000)]
    pub handshake_iterations: usize,
    /// One conversation fails after this long.
    #[arg(long, default_value_t = 120)]
    pub timeout_seconds: u64,
    /// Framed-MTU the NAS announces (eapol_test sends 1400).
    #[arg(long, default_value_t = 1400)]
    pub framed_mtu: u32,
    /// Seconds the NAS waits for a RADIUS answer before retransmitting.
    #[arg(long, default_value_t = 2)]
    pub radius_timeout_seconds: u64,
}

/// The gateway as `ragw dev` describes it in its data directory.
struct Target {
    radius: SocketAddr,
    secret: Vec<u8>,
    password: String,
    tls: Arc<rustls::ClientConfig>,
    outer_identity: String,
}

impl Target {
    fn load(data_dir: &Path, label: Option<&str>) -> Result<Target> {
        let endpoints_path = data_dir.join("endpoints.json");
        let text = std::fs::read_to_string(&endpoints_path).with_context(|| {
            format!(
                "reading {} (is `ragw dev` running?)",
                endpoints_path.display()
            )
        })?;
        let endpoints: Value = serde_json::from_str(&text)
            .with_context(|| format!("parsing {}", endpoints_path.display()))?;
        let radius = endpoints
            .get("radius")
            .and_then(Value::as_str)
            .with_context(|| format!("no \"radius\" in {}", endpoints_path.display()))?;
        let radius: SocketAddr = radius
            .parse()
            .with_context(|| format!("the RADIUS address {radius:?} is not host:port"))?;
        let read_trimmed = |name: &str| -> Result<String> {
            let path = data_dir.join(name);
            Ok(std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_string())
        };
        let secret = read_trimmed("radius-secret")?.into_bytes();
        let password = read_trimmed("dev-password")?;
        let root_path = data_dir.join("ca").join("root.pem");
        let root_pem = std::fs::read(&root_path)
            .with_context(|| format!("reading {}", root_path.display()))?;
        let roots = CertificateDer::pem_slice_iter(&root_pem)
            .collect::<Result<Vec<_>, _>>()
            .context("the root PEM")?;
        if roots.is_empty() {
            bail!("{} holds no certificate", root_path.display());
        }
        Ok(Target {
            radius,
            secret,
            password,
            tls: client_tls_config(&roots, None).context("the peer's TLS configuration")?,
            outer_identity: match label {
                Some(l) => format!("anonymous@{l}"),
                None => "anonymous".into(),
            },
        })
    }

    /// The dev TEAP certificate names the loopback address the gateway listens on.
    fn server_name(&self) -> ServerName<'static> {
        ServerName::IpAddress(self.radius.ip().into())
    }
}

/// Why a conversation did not end with a certificate.
#[derive(Debug)]
enum Failure {
    Timeout,
    Radius(String),
    Rejected(String),
    PeerFailed(String),
    NoCertificate(String),
    MskMismatch,
    Local(String),
}

impl Failure {
    fn kind(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Radius(_) => "radius",
            Failure::Rejected(_) => "access-reject",
            Failure::PeerFailed(_) => "peer",
            Failure::NoCertificate(_) => "no certificate",
            Failure::MskMismatch => "msk mismatch",
            Failure::Local(_) => "pledge",
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::Timeout => "no outcome within the timeout".into(),
            Failure::MskMismatch => "the Access-Accept's MSK differs from the peer's".into(),
            Failure::Radius(d)
            | Failure::Rejected(d)
            | Failure::PeerFailed(d)
            | Failure::NoCertificate(d)
            | Failure::Local(d) => format!("{}: {d}", self.kind()),
        }
    }
}

/// The PKCS#10 builder the peer calls with the CSR-Attributes DER: a CSR with exactly the
/// assigned names. An unusable CSR-Attributes yields an empty CSR, which the gateway refuses,
/// so the conversation fails visibly.
fn csr_builder(key: KeyPair) -> ragw_teap_peer::CsrBuilder {
    Box::new(move |attributes: &[u8]| {
        let names = ragw_pki::csrattrs::parse_csr_attrs(attributes)
            .ok()
            .and_then(|a| ragw_pki::csrattrs::requested_dns_names(&a).ok())
            .unwrap_or_default();
        if names.is_empty() {
            tracing::warn!("bench teap: the CSR attributes assign no DNS name");
            return Vec::new();
        }
        csr_der(&key, &names).unwrap_or_default()
    })
}

struct Success {
    requests: u32,
    retransmissions: u32,
}

async fn converse(
    target: &Target,
    device: &str,
    key: KeyPair,
    attrs: RadiusAttrs,
) -> Result<Success, Failure> {
    let mut config = PeerConfig::new(
        target.tls.clone(),
        target.server_name(),
        target.outer_identity.clone(),
    );
    config.password = Some((device.to_string(), target.password.as_bytes().to_vec()));
    config.csr = Some(csr_builder(key));
    let peer = Peer::new(config).map_err(|e| Failure::Local(e.to_string()))?;
    let outcome: RadiusOutcome = run_over_radius(peer, target.radius, &target.secret, attrs)
        .await
        .map_err(|e| match e {
            PeerError::PeerFinishedEarly(o) => Failure::PeerFailed(format!(
                "finished before the server: {}",
                o.failure.unwrap_or_default()
            )),
            other => Failure::Radius(other.to_string()),
        })?;
    if !outcome.accepted {
        return Err(Failure::Rejected(format!(
            "errors {:?}, reply {:?}, peer {:?}",
            outcome.peer.errors,
            outcome.reply_messages,
            outcome.peer.failure.as_deref().unwrap_or("")
        )));
    }
    if !outcome.peer.success {
        return Err(Failure::PeerFailed(
            outcome.peer.failure.clone().unwrap_or_default(),
        ));
    }
    let pkcs7 = outcome
        .peer
        .pkcs7
        .as_deref()
        .ok_or_else(|| Failure::NoCertificate("no PKCS#7 TLV".into()))?;
    let certs =
        ragw_pki::parse_certs_only(pkcs7).map_err(|e| Failure::NoCertificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(Failure::NoCertificate(
            "the PKCS#7 holds no certificate".into(),
        ));
    }
    match (&outcome.radius_msk, &outcome.peer.keys) {
        (Some(radius), Some(keys)) if radius[..] == keys.msk[..] => {}
        _ => return Err(Failure::MskMismatch),
    }
    Ok(Success {
        requests: outcome.requests,
        retransmissions: outcome.retransmissions,
    })
}

struct Outcome {
    latency: Duration,
    result: Result<Success, Failure>,
}

struct LoadSettings {
    run_id: String,
    timeout: Duration,
    attrs: RadiusAttrs,
}

async fn run_load(
    target: &Arc<Target>,
    settings: &Arc<LoadSettings>,
    first: usize,
    concurrency: usize,
    count: usize,
) -> LoadRun {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(count) {
        let (target, next, settings) = (target.clone(), next.clone(), settings.clone());
        tasks.spawn(async move {
            let mut outcomes = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let n = first + i;
                let device = format!("bench-{}-{n}", settings.run_id);
                // The key exists before the pledge starts, as on a device.
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
                let mut attrs = settings.attrs.clone();
                attrs.calling_station_id = Some(calling_station_id(n));
                let t0 = Instant::now();
                let result =
                    tokio::time::timeout(settings.timeout, converse(&target, &device, key, attrs))
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

/// A locally administered MAC per pledge, as a NAS reports the supplicant's.
fn calling_station_id(n: usize) -> String {
    let b = (n as u32).to_be_bytes();
    format!("02-00-{:02X}-{:02X}-{:02X}-{:02X}", b[0], b[1], b[2], b[3])
}

fn summarize(concurrency: usize, count: usize, wall: Duration, outcomes: Vec<Outcome>) -> LoadRun {
    let mut latencies = Vec::with_capacity(outcomes.len());
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut first_error = None;
    let (mut requests, mut retransmissions) = (0u64, 0u64);
    for o in outcomes {
        match o.result {
            Ok(s) => {
                latencies.push(o.latency);
                requests += u64::from(s.requests);
                retransmissions += u64::from(s.retransmissions);
            }
            Err(f) => {
                *errors.entry(f.kind().to_string()).or_default() += 1;
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
        conversations_per_second: if wall_seconds > 0.0 {
            succeeded as f64 / wall_seconds
        } else {
            0.0
        },
        latency_ms: LatencyMs::of(&latencies),
        radius_round_trips_per_conversation: (succeeded > 0)
            .then(|| requests as f64 / succeeded as f64),
        retransmissions,
        errors,
        first_error,
        ratio_to_handshakes: None,
    }
}

#[derive(Debug, Serialize)]
struct LoadRun {
    concurrency: usize,
    count: usize,
    succeeded: usize,
    failed: usize,
    wall_seconds: f64,
    conversations_per_second: f64,
    latency_ms: Option<LatencyMs>,
    /// Distinct Access-Requests per successful conversation (retransmissions not counted).
    radius_round_trips_per_conversation: Option<f64>,
    /// Access-Requests sent again after a RADIUS timeout, over all successful conversations.
    retransmissions: u64,
    errors: BTreeMap<String, usize>,
    first_error: Option<String>,
    /// conversations/s ÷ the handshake-only rate.
    ratio_to_handshakes: Option<f64>,
}

#[derive(Debug, Serialize)]
struct HandshakeRate {
    what: &'static str,
    provider: &'static str,
    iterations: usize,
    seconds: f64,
    handshakes_per_second_per_core: f64,
    cores: usize,
    /// handshakes/s per core × cores: the rate if the machine did nothing but these handshakes
    /// (client and server side both included, as both run here).
    handshakes_per_second: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    target: String,
    outer_identity: String,
    machine: Machine,
    pledges: &'static str,
    run_id: String,
    warmup: usize,
    handshakes: Option<HandshakeRate>,
    runs: Vec<LoadRun>,
}

const PLEDGES: &str = "one pledge per conversation: new P-256 key, new device identifier, own UDP \
                       socket and Calling-Station-Id, full TLS 1.2 handshake (no resumption)";

pub async fn run(args: TeapBench) -> Result<()> {
    if args.count == 0 || args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--count and every --concurrency value must be positive");
    }
    let target = Arc::new(Target::load(&args.data_dir, args.profile_label.as_deref())?);
    // The comparison first, while the server is idle; one core's synchronous work.
    let handshakes = if args.handshake_iterations > 0 {
        let k = args.handshake_iterations;
        Some(
            tokio::task::spawn_blocking(move || measure_handshakes(k))
                .await
                .context("the handshake measurement panicked")??,
        )
    } else {
        None
    };
    let settings = Arc::new(LoadSettings {
        run_id: format!("{:08x}", rand::random::<u32>()),
        timeout: Duration::from_secs(args.timeout_seconds.max(1)),
        attrs: RadiusAttrs {
            calling_station_id: None,
            nas_identifier: Some("ragw-bench".into()),
            framed_mtu: Some(args.framed_mtu),
            timeout: Duration::from_secs(args.radius_timeout_seconds.max(1)),
            // Retransmit until the conversation's own timeout ends it.
            max_tries: u32::try_from(args.timeout_seconds / args.radius_timeout_seconds.max(1) + 1)
                .unwrap_or(u32::MAX),
        },
    });
    if args.warmup > 0 {
        let c = args.concurrency.first().copied().unwrap_or(1);
        let w = run_load(&target, &settings, 0, c, args.warmup).await;
        if w.failed > 0 {
            bail!(
                "warm-up: {} of {} conversations failed; first: {}",
                w.failed,
                w.count,
                w.first_error.unwrap_or_default()
            );
        }
    }
    let mut runs = Vec::new();
    for (i, &c) in args.concurrency.iter().enumerate() {
        let first = args.warmup + i * args.count;
        let mut run = run_load(&target, &settings, first, c, args.count).await;
        run.ratio_to_handshakes = handshakes
            .as_ref()
            .map(|h| run.conversations_per_second / h.handshakes_per_second);
        runs.push(run);
    }
    let report = Report {
        target: format!("radius://{}", target.radius),
        outer_identity: target.outer_identity.clone(),
        machine: Machine::this(),
        pledges: PLEDGES,
        run_id: settings.run_id.clone(),
        warmup: args.warmup,
        handshakes,
        runs,
    };
    match args.format {
        Format::Text => print!("{}", render_text(&report)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    let failed: usize = report.runs.iter().map(|r| r.failed).sum();
    if failed > 0 {
        bail!(
            "{failed} of {} conversations failed",
            report.runs.iter().map(|r| r.count).sum::<usize>()
        );
    }
    Ok(())
}

fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ragw bench teap → {} as {} ({} cores{})",
        r.target,
        r.outer_identity,
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
        "device identifiers bench-{}-<n>; {} unmeasured warm-up conversations first",
        r.run_id, r.warmup
    );
    if let Some(h) = &r.handshakes {
        let _ = writeln!(s, "handshake-only comparison ({}): {}", h.provider, h.what);
        let _ = writeln!(
            s,
            "  {} handshakes on one thread in {:.3} s: {:.1}/s per core × {} cores = {:.1} handshakes/s",
            h.iterations,
            h.seconds,
            h.handshakes_per_second_per_core,
            h.cores,
            h.handshakes_per_second
        );
    }
    let _ = writeln!(
        s,
        "{:>5} {:>6} {:>6} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>11}",
        "C",
        "N",
        "ok",
        "failed",
        "conv/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "RTs/conv",
        "resent",
        "of handsh."
    );
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    for run in &r.runs {
        let l = run.latency_ms.as_ref();
        let _ = writeln!(
            s,
            "{:>5} {:>6} {:>6} {:>6} {:>8.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>11}",
            run.concurrency,
            run.count,
            run.succeeded,
            run.failed,
            run.conversations_per_second,
            ms(l.map(|l| l.p50)),
            ms(l.map(|l| l.p90)),
            ms(l.map(|l| l.p99)),
            ms(l.map(|l| l.max)),
            run.radius_round_trips_per_conversation
                .map_or_else(|| "-".to_string(), |x| format!("{x:.2}")),
            run.retransmissions,
            run.ratio_to_handshakes
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

/// A server chain shaped like `ragw dev`'s TEAP certificate: a P-256 leaf for 127.0.0.1 under
/// a P-384 CA, which the client trusts.
struct HandshakePki {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl HandshakePki {
    fn new() -> Result<HandshakePki> {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ragw bench CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let leaf =
            CertificateParams::new(vec!["127.0.0.1".to_string()])?.signed_by(&leaf_key, &issuer)?;
        let server = ragw_teap::teap_server::tls_server_config(
            vec![leaf.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .context("the gateway's TLS configuration")?;
        let client = client_tls_config(std::slice::from_ref(ca_cert.der()), None)
            .context("the peer's TLS configuration")?;
        Ok(HandshakePki { server, client })
    }

    /// One full handshake through memory buffers, both sides in this thread; the version the
    /// client negotiated.
    fn handshake(&self) -> Result<Option<rustls::ProtocolVersion>> {
        let name =
            ServerName::IpAddress(std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST).into());
        let mut client = rustls::ClientConnection::new(self.client.clone(), name)?;
        let mut server = rustls::ServerConnection::new(self.server.clone())?;
        let mut buf = Vec::with_capacity(8192);
        for _ in 0..16 {
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(client.protocol_version());
            }
            buf.clear();
            while client.wants_write() {
                client.write_tls(&mut buf)?;
            }
            if !buf.is_empty() {
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    server.read_tls(&mut rd)?;
                }
                server.process_new_packets()?;
            }
            buf.clear();
            while server.wants_write() {
                server.write_tls(&mut buf)?;
            }
            if !buf.is_empty() {
                let mut rd = &buf[..];
                while !rd.is_empty() {
                    client.read_tls(&mut rd)?;
                }
                client.process_new_packets()?;
            }
        }
        bail!("the handshake did not finish in 16 flights")
    }
}

fn measure_handshakes(iterations: usize) -> Result<HandshakeRate> {
    let pki = HandshakePki::new()?;
    pki.handshake().context("a trial handshake")?;
    let t0 = Instant::now();
    for _ in 0..iterations {
        pki.handshake()?;
    }
    let seconds = t0.elapsed().as_secs_f64().max(1e-9);
    let per_core = iterations as f64 / seconds;
    let cores = cores();
    Ok(HandshakeRate {
        what: "in-process TLS 1.2 handshakes, rustls client and server in one thread: the \
               gateway's tls_server_config (client certificate asked for, none sent), the peer's \
               client_tls_config, ECDHE P-256/X25519 as negotiated, P-256 leaf under a P-384 CA, \
               no resumption",
        provider: "aws-lc-rs",
        iterations,
        seconds,
        handshakes_per_second_per_core: per_core,
        cores,
        handshakes_per_second: per_core * cores as f64,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn in_process_handshake_completes_with_tls12() {
        let pki = HandshakePki::new().unwrap();
        assert_eq!(
            pki.handshake().unwrap(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        let rate = measure_handshakes(3).unwrap();
        assert_eq!(rate.iterations, 3);
        assert!(rate.handshakes_per_second > 0.0);
    }

    #[test]
    fn calling_station_ids_differ_per_pledge() {
        assert_eq!(calling_station_id(1), "02-00-00-00-00-01");
        assert_ne!(calling_station_id(256), calling_station_id(1));
    }
}
