//! `ragw run --target worker`: lease jobs from the registrar and obtain certificates from the
//! configured ACME CAs, answering dns-01 through RFC 2136 or the built-in DNS server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use ragw_acme_worker::dns::{
    BuiltinDns, BuiltinDnsConfig, DnsMetrics, DnsProvider, Rfc2136Config, Rfc2136Provider, TsigKey,
};
use ragw_acme_worker::job::{Worker, WorkerMetrics};
use ragw_runtime::ops::{Health, MetricsRegistry};
use serde::Deserialize;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::config::Config;

/// How dns-01 records are published.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase", deny_unknown_fields)]
pub enum DnsSection {
    /// RFC 2136 dynamic updates with TSIG to the zone's primary (BIND, Knot, PowerDNS …).
    Rfc2136 {
        server: SocketAddr,
        zone: String,
        /// BIND key-file syntax: `key "name" { algorithm hmac-sha256; secret "…"; };`
        key_file: PathBuf,
        /// Which key of the file, when it holds several.
        key_name: Option<String>,
        ttl: Option<u32>,
    },
    /// ragw's own authoritative server for the challenge zone(s).
    Builtin {
        listen: SocketAddr,
        zones: Vec<String>,
        /// Created (0600) on first start; external ACME clients sign updates with it.
        key_file: PathBuf,
    },
}

/// A DNS provider from the configuration; the built-in server is returned too so its caller
/// can run it.
pub async fn dns_provider(
    section: &DnsSection,
    metrics: &DnsMetrics,
) -> Result<(Arc<dyn DnsProvider>, Option<BuiltinDns>)> {
    Ok(match section {
        DnsSection::Rfc2136 {
            server,
            zone,
            key_file,
            key_name,
            ttl,
        } => {
            let key = TsigKey::from_bind_file(key_file, key_name.as_deref())
                .with_context(|| format!("TSIG key {}", key_file.display()))?;
            let mut cfg = Rfc2136Config::new(*server, zone, key);
            if let Some(ttl) = ttl {
                cfg.ttl = *ttl;
            }
            let provider = Rfc2136Provider::new(cfg)?.with_metrics(metrics.clone());
            (Arc::new(provider), None)
        }
        DnsSection::Builtin {
            listen,
            zones,
            key_file,
        } => {
            let zones: Vec<&str> = zones.iter().map(String::as_str).collect();
            let server = BuiltinDns::bind(
                BuiltinDnsConfig::new(*listen, &zones, key_file.clone()),
                metrics.clone(),
            )
            .await
            .context("starting the built-in DNS server")?;
            (Arc::new(server.clone()), Some(server))
        }
    })
}

pub async fn registrar_channel(url: &str, ca: &Path, cert: &Path, key: &Path) -> Result<Channel> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)?))
        .identity(Identity::from_pem(read(cert)?, read(key)?))
        .domain_name("localhost");
    // Lazy: the worker keeps retrying while the registrar is down.
    Ok(Channel::from_shared(url.to_string())
        .with_context(|| format!("registrar URL {url:?}"))?
        .tls_config(tls)?
        .connect_lazy())
}

fn worker_id(configured: &Option<String>) -> String {
    configured.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| format!("worker-{}", std::process::id()))
    })
}

pub async fn run_worker(config: Option<&Path>) -> Result<()> {
    let cfg = Config::load(config)?;
    ragw_runtime::telemetry::init_tracing(cfg.log.format, &cfg.log.level);
    let worker_cfg = cfg
        .worker
        .clone()
        .context("the worker needs a [worker] section")?;
    let registrar = worker_cfg
        .registrar
        .clone()
        .context("worker.registrar (the registrar's gRPC URL) is not set")?;
    let tls = cfg
        .tls
        .clone()
        .context("the worker needs a [tls] section with its worker certificate")?;
    let dns_section = cfg
        .dns
        .clone()
        .context("the worker needs a [dns] section")?;
    let metrics = MetricsRegistry::new();
    let dns_metrics = DnsMetrics::new();
    dns_metrics.register(&metrics);
    let worker_metrics = WorkerMetrics::default();
    worker_metrics.register(&metrics);
    let (dns, builtin) = dns_provider(&dns_section, &dns_metrics).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(server) = builtin {
        tokio::spawn(server.serve(crate::serve::wait_stop(stop_rx.clone())));
    }
    let channel = registrar_channel(&registrar, &tls.ca, &tls.cert, &tls.key).await?;
    let worker = Worker::new(
        worker_id(&worker_cfg.id),
        worker_cfg.clone(),
        channel,
        dns,
        worker_metrics,
    )?;
    let health = Health::new();
    let ops = TcpListener::bind(cfg.worker_ops_listen())
        .await
        .with_context(|| format!("binding {}", cfg.worker_ops_listen()))?;
    println!("worker ops on http://{}", ops.local_addr()?);
    let ops_task = tokio::spawn(ragw_runtime::ops::serve(
        ops,
        health.clone(),
        metrics,
        crate::serve::wait_stop(stop_rx.clone()),
    ));
    health.set_ready(true);
    let run = tokio::spawn(worker.run(crate::serve::wait_stop(stop_rx)));
    crate::serve::shutdown_signal().await;
    let _ = stop_tx.send(true);
    let _ = run.await;
    let _ = ops_task.await;
    Ok(())
}
