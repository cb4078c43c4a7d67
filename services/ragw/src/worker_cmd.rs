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
use ragw_acme_worker::upstream::UpstreamConfig;
use ragw_runtime::ops::{Health, MetricsRegistry};
use serde::Deserialize;
use tokio::net::TcpListener;

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
        /// Names published as each zone's NS records (the first is the SOA MNAME). Behind an
        /// NS delegation, list the names the parent zone's NS records use.
        #[serde(default)]
        nameservers: Vec<String>,
        /// SOA RNAME (mailbox as a name); default `hostmaster.<zone>`.
        hostmaster: Option<String>,
        /// TTL of the SOA, NS and challenge records (default 60).
        ttl: Option<u32>,
        /// Serve zone transfers signed with the TSIG key (stealth primary behind a public
        /// secondary).
        #[serde(default)]
        allow_transfer: bool,
        /// Secondaries sent a NOTIFY after each change.
        #[serde(default)]
        notify: Vec<SocketAddr>,
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
            nameservers,
            hostmaster,
            ttl,
            allow_transfer,
            notify,
        } => {
            let zones: Vec<&str> = zones.iter().map(String::as_str).collect();
            let mut cfg = BuiltinDnsConfig::new(*listen, &zones, key_file.clone());
            for zone in &mut cfg.zones {
                zone.nameservers = nameservers.clone();
                zone.hostmaster = hostmaster.clone();
            }
            if let Some(ttl) = ttl {
                cfg.ttl = *ttl;
            }
            cfg.allow_transfer = *allow_transfer;
            cfg.notify = notify.clone();
            let server = BuiltinDns::bind(cfg, metrics.clone())
                .await
                .context("starting the built-in DNS server")?;
            (Arc::new(server.clone()), Some(server))
        }
    })
}

/// With no `[[worker.upstreams]]`, the worker uses the local ragw CA described by the same
/// configuration's `[ca]` section: its directory, its root as trust anchor, and an account file
/// in its data directory (the worker must mount that directory).
fn local_ca_upstream(ca: &ragw_acme_ca::CaConfig) -> Result<UpstreamConfig> {
    let base = match &ca.external_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None if !ca.listen.ip().is_unspecified() => format!("https://{}", ca.listen),
        None => anyhow::bail!(
            "the worker has no [[worker.upstreams]] and [ca] listens on {} without              ca.external_url: set one of them",
            ca.listen
        ),
    };
    Ok(UpstreamConfig {
        profiles: Vec::new(),
        directory_url: format!("{base}/directory"),
        ca_trust: (!ca.plain_http).then(|| ca.data_dir.join("root.pem")),
        contact: Vec::new(),
        eab_kid: None,
        eab_hmac_file: None,
        account_file: ca.data_dir.join("worker-account.json"),
        preauthorize: true,
        preauth_renew_before_hours: 24,
        order_profiles: Default::default(),
    })
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
    let mut worker_cfg = cfg
        .worker
        .clone()
        .context("the worker needs a [worker] section")?;
    if worker_cfg.upstreams.is_empty() {
        let ca = cfg
            .ca
            .as_ref()
            .context("the worker has no [[worker.upstreams]] and no [ca] section to default to")?;
        let upstream = local_ca_upstream(ca)?;
        tracing::info!(directory = %upstream.directory_url, "no upstream configured: using the local ragw CA");
        worker_cfg.upstreams.push(upstream);
    }
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
    dns_metrics.register(&metrics.component("worker"));
    let worker_metrics = WorkerMetrics::default();
    worker_metrics.register(&metrics);
    let (dns, builtin) = dns_provider(&dns_section, &dns_metrics).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(server) = builtin {
        tokio::spawn(server.serve(crate::serve::wait_stop(stop_rx.clone())));
    }
    let channel = crate::client::registrar_channel(
        &registrar,
        worker_cfg.registrar_tls_name.as_deref(),
        &tls,
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A DNS query for `name` (type `qtype`, class IN), as a resolver would send it.
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(u8::try_from(label.len()).unwrap());
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test]
    async fn the_builtin_server_takes_its_stealth_primary_settings_from_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
[dns]
provider = "builtin"
listen = "127.0.0.1:0"
zones = ["devices.example.com"]
key_file = "{}"
nameservers = ["ns1.dns-provider.example", "ns2.dns-provider.example"]
hostmaster = "pki-team.example.com"
ttl = 120
allow_transfer = true
notify = ["127.0.0.1:5300"]
"#,
            dir.path().join("tsig.key").display()
        );
        let file = dir.path().join("worker.toml");
        std::fs::write(&file, text).unwrap();
        let section = Config::load(Some(&file)).unwrap().dns.unwrap();
        let (_, server) = dns_provider(&section, &DnsMetrics::new()).await.unwrap();
        let server = server.unwrap();
        let answers = server.responder().handle(
            &query("devices.example.com", 2),
            ragw_acme_worker::dns::Transport::Udp,
            0,
        );
        assert_eq!(answers.len(), 1);
        let ns = &answers[0];
        assert!(
            contains(ns, b"\x03ns1\x0cdns-provider\x07example"),
            "{ns:?}"
        );
        // The second name shares its suffix with the first through compression.
        assert!(contains(ns, b"\x03ns2"), "{ns:?}");
        assert!(
            contains(ns, &[0, 2, 0, 1, 0, 0, 0, 120]),
            "NS with TTL 120: {ns:?}"
        );
        // An unsigned transfer request is refused even with transfers on: they need the key.
        let axfr = server.responder().handle(
            &query("devices.example.com", 252),
            ragw_acme_worker::dns::Transport::Tcp,
            0,
        );
        assert!(!axfr.is_empty());
        assert_ne!(
            axfr[0][3] & 0x0f,
            0,
            "unsigned AXFR answered: {:?}",
            axfr[0]
        );
    }

    #[test]
    fn without_upstreams_the_worker_defaults_to_the_configured_local_ca() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("all.toml");
        std::fs::write(
            &file,
            "[ca]\nlisten = \"0.0.0.0:8443\"\nexternal_url = \"https://ca.devices.example.com:8443/\"\n\
             data_dir = \"/var/lib/ragw/ca\"\ndomain_suffixes = [\"devices.example.com\"]\ndns_resolver = \"10.0.0.53:53\"\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&file)).unwrap();
        let up = local_ca_upstream(cfg.ca.as_ref().unwrap()).unwrap();
        assert_eq!(
            up.directory_url,
            "https://ca.devices.example.com:8443/directory"
        );
        assert_eq!(
            up.ca_trust.as_deref(),
            Some(Path::new("/var/lib/ragw/ca/root.pem"))
        );
        assert!(up.preauthorize);

        let mut ca = cfg.ca.unwrap();
        ca.external_url = None;
        let err = local_ca_upstream(&ca).unwrap_err().to_string();
        assert!(err.contains("ca.external_url"), "{err}");
    }

    #[test]
    fn unknown_builtin_dns_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("worker.toml");
        std::fs::write(
            &file,
            "[dns]\nprovider = \"builtin\"\nlisten = \"127.0.0.1:0\"\nzones = []\nkey_file = \"k\"\nnotifyy = []\n",
        )
        .unwrap();
        let err = format!("{:#}", Config::load(Some(&file)).unwrap_err());
        assert!(err.contains("notifyy"), "{err}");
    }
}
