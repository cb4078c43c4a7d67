//! `ragw dev`: every component in one process on embedded defaults — registrar (SQLite), local
//! ACME CA, built-in challenge DNS, one ACME worker, the EST gateway and the TEAP gateway
//! (RADIUS on loopback) — talking gRPC over loopback exactly as in production.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use ragw_acme_ca::{Ca, CaConfig, serve_ca};
use ragw_acme_worker::dns::{BuiltinDns, BuiltinDnsConfig, DnsMetrics};
use ragw_acme_worker::job::{Worker, WorkerConfig, WorkerMetrics};
use ragw_acme_worker::upstream::UpstreamConfig;
use ragw_domain::{ApprovalMode, IdentityKind, Profile};
use ragw_est::{BasicAuth, EstConfig, EstServer, LabelConfig, Secret, ServerTls};
use ragw_runtime::identity::{ComponentCa, Role, ensure_dev_credentials, write_private_file};
use ragw_runtime::ops::MetricsRegistry;
use ragw_teap::config::{RadiusClient, TeapConfig, TeapLabel, authority_id_for};
use ragw_teap::gateway::GrpcRegistrar;
use ragw_teap::service::{RadsecListener, TeapService, TeapTls};
use serde_json::json;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::config::Config;
use crate::serve::{read_tls, shutdown_signal, start_registrar, wait_stop};

#[derive(Clone, Copy, ValueEnum)]
pub enum Approve {
    Auto,
    Manual,
}

#[derive(Args)]
pub struct DevArgs {
    /// Where state, keys and credentials live; a restart with the same directory keeps
    /// everything.
    #[arg(long, default_value = "./ragw-data")]
    pub data_dir: PathBuf,
    /// Parent domain of device names.
    #[arg(long, default_value = "devices.ragw.test")]
    pub domain: String,
    /// Approval mode of the default profile.
    #[arg(long, value_enum, default_value = "auto")]
    pub approve: Approve,
    /// EST gateway (HTTPS) address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub est_addr: SocketAddr,
    /// TEAP gateway (RADIUS over UDP) address; loopback NASes (127.0.0.0/8) may use it with the
    /// secret in DATA_DIR/radius-secret.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub radius_addr: SocketAddr,
    /// TEAP gateway RadSec (RADIUS over TLS) address; loopback clients with the certificate in
    /// DATA_DIR/radsec/client.pem may use it.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub radsec_addr: SocketAddr,
    /// Local ACME CA (HTTPS) address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub acme_addr: SocketAddr,
    /// Built-in DNS server (UDP and TCP) for the challenge zone.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub dns_addr: SocketAddr,
    /// Registrar gRPC address.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub grpc_addr: SocketAddr,
    /// Health, readiness and Prometheus metrics of every component.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub metrics_addr: SocketAddr,
    /// Device identifier used in the printed examples; any device identifier may enroll with
    /// the bootstrap password.
    #[arg(long, default_value = "pledge-001")]
    pub dev_user: String,
    /// Bootstrap password for HTTP Basic; generated (and written 0600 to DATA_DIR/dev-password)
    /// when not given.
    #[arg(long, env = "RAGW_DEV_PASSWORD", hide_env_values = true)]
    pub dev_password: Option<String>,
    /// Do not run the built-in ACME worker (another `ragw run --target worker` serves this
    /// registrar).
    #[arg(long)]
    pub no_worker: bool,
    /// A configuration file in the services' format; its profiles replace the default one and
    /// its [store] section can point at PostgreSQL.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

pub fn endpoints_file(data_dir: &Path) -> PathBuf {
    data_dir.join("endpoints.json")
}

#[cfg(unix)]
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", dir.display()))
}

#[cfg(not(unix))]
fn private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

pub fn radius_secret_file(data_dir: &Path) -> PathBuf {
    data_dir.join("radius-secret")
}

pub fn radsec_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("radsec")
}

/// The dev RadSec client PKI in DATA_DIR/radsec: a CA of its own (not the component CA, so a
/// RadSec client certificate is no component identity), and one client certificate from it
/// for loopback NASes and proxies; keys 0600. Made once, reused after. Returns the CA PEM.
fn ensure_radsec_client_credentials(dir: &Path) -> Result<Vec<u8>> {
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let (client_pem, client_key) = (dir.join("client.pem"), dir.join("client.key"));
    if ![&ca_pem, &ca_key, &client_pem, &client_key]
        .iter()
        .all(|p| p.is_file())
    {
        let ca = ComponentCa::generate("ragw dev RadSec client CA")
            .context("generating the dev RadSec client CA")?;
        let issued = ca
            .issue("radsec-client", &[], &[], &[], 365)
            .context("issuing the dev RadSec client certificate")?;
        write_private_file(&ca_key, ca.key_pem())
            .with_context(|| format!("writing {}", ca_key.display()))?;
        write_private_file(&client_key, &issued.key_pem)
            .with_context(|| format!("writing {}", client_key.display()))?;
        std::fs::write(&ca_pem, ca.cert_pem())
            .with_context(|| format!("writing {}", ca_pem.display()))?;
        std::fs::write(&client_pem, format!("{}{}", issued.cert_pem, ca.cert_pem()))
            .with_context(|| format!("writing {}", client_pem.display()))?;
    }
    std::fs::read(&ca_pem).with_context(|| format!("reading {}", ca_pem.display()))
}

/// The bootstrap password: given, or read back from the data directory, or generated once and
/// printed (the only time it is shown).
fn bootstrap_password(args: &DevArgs) -> Result<(String, bool)> {
    if let Some(p) = &args.dev_password {
        return Ok((p.clone(), false));
    }
    read_or_generate_secret(&args.data_dir.join("dev-password"))
}

/// A secret read back from `file`, or generated, written there (0600) and flagged as new.
fn read_or_generate_secret(file: &Path) -> Result<(String, bool)> {
    let file = file.to_path_buf();
    match std::fs::read_to_string(&file) {
        Ok(p) if !p.trim().is_empty() => Ok((p.trim().to_string(), false)),
        _ => {
            let alphabet = b"abcdefghijkmnopqrstuvwxyz23456789";
            let bytes: [u8; 20] = rand::random();
            let password: String = bytes
                .iter()
                .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
                .collect();
            write_private_file(&file, format!("{password}\n"))
                .with_context(|| format!("writing {}", file.display()))?;
            Ok((password, true))
        }
    }
}

pub async fn run(args: DevArgs) -> Result<()> {
    let mut cfg = Config::load(args.config.as_deref())?;
    ragw_runtime::telemetry::init_tracing(cfg.log.format, &cfg.log.level);
    if cfg.profiles.is_empty() {
        let mut p = Profile::with_defaults("iot", &args.domain);
        p.approval = match args.approve {
            Approve::Auto => ApprovalMode::Auto,
            Approve::Manual => ApprovalMode::Manual,
        };
        cfg.profiles.push(p);
        cfg.validate()?;
    }
    private_dir(&args.data_dir)?;
    // Revocations at the local CA reach the registrar within seconds, over the CA's HTTPS.
    cfg.registrar.crl_poll_interval_seconds.get_or_insert(5);
    if cfg.registrar.crl_https_trust.is_none() {
        cfg.registrar.crl_https_trust = Some(args.data_dir.join("ca").join("root.pem"));
    }
    let (password, generated) = bootstrap_password(&args)?;
    let (radius_secret, radius_secret_generated) =
        read_or_generate_secret(&radius_secret_file(&args.data_dir))?;
    let creds =
        ensure_dev_credentials(&tls_dir(&args.data_dir)).context("component credentials")?;
    let (cert, key) = creds.pair(Role::Registrar);
    let tls = read_tls(&creds.ca_pem, &cert, &key)?;
    let store_cfg = cfg.store.resolve(&args.data_dir.join("ragw.db"))?;
    let store = ragw_store::open(&store_cfg)
        .await
        .context("opening the store")?;
    let metrics = MetricsRegistry::new();
    let (stop_tx, stop_rx) = watch::channel(false);

    // Registrar and the shared ops endpoint.
    let grpc = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("binding the registrar to {}", args.grpc_addr))?;
    let ops = TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics endpoint to {}", args.metrics_addr))?;
    let (bound, registrar) = start_registrar(
        &cfg,
        store.clone(),
        tls,
        grpc,
        ops,
        metrics.clone(),
        stop_rx.clone(),
    )
    .await?;
    let grpc_url = format!("https://{}", bound.grpc);

    // Built-in DNS for every parent domain: the CA validates dns-01 against it, the worker
    // publishes into it in process, external ACME clients update it with its TSIG key.
    let mut zones: Vec<String> = cfg
        .profiles
        .iter()
        .flat_map(|p| p.parent_domains.clone())
        .collect();
    zones.sort();
    zones.dedup();
    let zone_refs: Vec<&str> = zones.iter().map(String::as_str).collect();
    let dns_metrics = DnsMetrics::new();
    dns_metrics.register(&metrics.component("worker"));
    let dns = BuiltinDns::bind(
        BuiltinDnsConfig::new(
            args.dns_addr,
            &zone_refs,
            args.data_dir.join("dns").join("tsig.key"),
        ),
        dns_metrics,
    )
    .await
    .context("starting the built-in DNS server")?;
    let dns_task = tokio::spawn(dns.serve(wait_stop(stop_rx.clone())));

    // Local ACME CA.
    let ca_listener = TcpListener::bind(args.acme_addr)
        .await
        .with_context(|| format!("binding the local CA to {}", args.acme_addr))?;
    let ca_cfg = match cfg.ca.clone() {
        Some(c) => c,
        None => {
            let mut c = CaConfig::new(args.data_dir.join("ca"), zones.clone(), dns.udp_addr());
            // `.local` names and IP identifiers stay off unless a profile asks for them.
            c.allow_local = cfg.profiles.iter().any(|p| p.allow_local_name);
            c.allow_ip = cfg.profiles.iter().any(|p| p.allow_ip_sans);
            c
        }
    };
    let ca = Arc::new(
        Ca::open(ca_cfg, store.clone(), ca_listener.local_addr()?)
            .await
            .context("starting the local ACME CA")?,
    );
    ca.metrics().register(&metrics);
    let ca_task = tokio::spawn(serve_ca(
        ca.clone(),
        ca_listener,
        wait_stop(stop_rx.clone()),
    ));
    let root_pem = args.data_dir.join("ca").join("root.pem");

    // One worker, against the local CA unless the config names other upstreams.
    let worker_task = if args.no_worker {
        None
    } else {
        let mut worker_cfg = cfg.worker.clone().unwrap_or(WorkerConfig {
            registrar: None,
            registrar_tls_name: None,
            ops_listen: None,
            id: None,
            concurrency: 8,
            lease_seconds: 300,
            poll_wait_ms: 10_000,
            upstreams: Vec::new(),
        });
        if worker_cfg.upstreams.is_empty() {
            worker_cfg.upstreams.push(UpstreamConfig {
                profiles: Vec::new(),
                directory_url: ca.directory_url(),
                ca_trust: Some(root_pem.clone()),
                contact: Vec::new(),
                eab_kid: None,
                eab_hmac_file: None,
                account_file: args.data_dir.join("worker").join("account.json"),
                preauthorize: true,
                preauth_renew_before_hours: 24,
                order_profiles: Default::default(),
            });
        }
        let (wcert, wkey) = creds.pair(Role::Worker);
        let channel = dev_channel(&grpc_url, &creds.ca_pem, wcert, wkey)?;
        let worker_metrics = WorkerMetrics::default();
        worker_metrics.register(&metrics);
        let worker = Worker::new(
            worker_cfg.id.clone().unwrap_or_else(|| "dev".into()),
            worker_cfg,
            channel,
            Arc::new(dns.clone()),
            worker_metrics,
        )?;
        Some(tokio::spawn(worker.run(wait_stop(stop_rx.clone()))))
    };

    // EST gateway: one label per profile, its HTTPS certificate from the local CA, so the root
    // from /cacerts also validates the server (trust on first use). When the config names other
    // upstreams, /cacerts serves what those CAs return with the devices' certificates.
    let local_ca_upstream = cfg.worker.as_ref().is_none_or(|w| w.upstreams.is_empty());
    let chain_der: Vec<Vec<u8>> = if local_ca_upstream {
        ragw_acme_ca::ca::pem_certificates(&ca.chain_pem())
    } else {
        Vec::new()
    };
    let mut labels = Vec::new();
    for p in &cfg.profiles {
        let mut label = LabelConfig::new(&p.name, &p.name);
        label.cacerts = chain_der.clone();
        let mut basic = BasicAuth::new(IdentityKind::SerialNumber);
        basic.bootstrap = Some(Secret::from_plain(&password));
        label.basic = Some(basic);
        labels.push(label);
    }
    let mut est_config = EstConfig {
        default_label: cfg.profiles.first().map(|p| p.name.clone()),
        labels,
        ..EstConfig::default()
    };
    // An [est] section tunes the dev gateway: its limits, enrollment timing, trusted proxy and
    // default label apply, and its labels replace (or add to) the generated ones. Listen
    // addresses, TLS and the registrar URL stay dev's own.
    if let Some(section) = &cfg.est {
        let from_file = section.to_config_parts().context("the [est] section")?;
        est_config.limits = from_file.limits;
        est_config.enrollment = from_file.enrollment;
        est_config.trusted_proxy = from_file.trusted_proxy;
        if from_file.default_label.is_some() {
            est_config.default_label = from_file.default_label;
        }
        for mut label in from_file.labels {
            if label.cacerts.is_empty() {
                label.cacerts = chain_der.clone();
            }
            est_config.labels.retain(|l| l.label != label.label);
            est_config.labels.push(label);
        }
    }
    let (gcert, gkey) = creds.pair(Role::Gateway);
    let gateway_channel = dev_channel(&grpc_url, &creds.ca_pem, gcert, gkey)?;
    let (server_chain, server_key) = ca
        .issue_server_certificate()
        .await
        .context("issuing the EST server certificate")?;
    let server_tls = ServerTls {
        cert_chain_pem: server_chain
            .iter()
            .map(|c| ragw_acme_ca::ca::pem_encode("CERTIFICATE", c))
            .collect::<String>()
            .into_bytes(),
        key_pem: ragw_acme_ca::ca::pem_encode("PRIVATE KEY", &server_key).into_bytes(),
    };
    let est_listener = TcpListener::bind(args.est_addr)
        .await
        .with_context(|| format!("binding the EST gateway to {}", args.est_addr))?;
    let est_addr = est_listener.local_addr()?;
    let est = EstServer::new(est_config, gateway_channel)?.with_metrics(&metrics);
    let est_task = tokio::spawn(est.serve(est_listener, server_tls, wait_stop(stop_rx.clone())));

    // TEAP gateway: RADIUS on loopback for NASes on this host (a FreeRADIUS proxy, eapol_test,
    // ragw's own peer), the same labels and bootstrap password as EST, a server certificate
    // from the local CA.
    let (teap_chain, teap_key) = ca
        .issue_server_certificate()
        .await
        .context("issuing the TEAP server certificate")?;
    let mut teap_config = TeapConfig {
        clients: vec![RadiusClient {
            name: "dev-loopback".into(),
            prefix: "127.0.0.0/8".parse().context("the loopback prefix")?,
            secret: ragw_teap::radius_server::Secret::new(radius_secret.clone().into_bytes())
                .context("the RADIUS secret")?,
        }],
        labels: cfg
            .profiles
            .iter()
            .map(|p| {
                let mut label = TeapLabel::new(&p.name, &p.name);
                let mut basic = BasicAuth::new(IdentityKind::SerialNumber);
                basic.bootstrap = Some(Secret::from_plain(&password));
                label.basic = Some(basic);
                label
            })
            .collect(),
        default_label: cfg.profiles.first().map(|p| p.name.clone()),
        limits: Default::default(),
        authority_id: teap_chain
            .first()
            .map(|leaf| authority_id_for(leaf))
            .unwrap_or_else(|| b"ragw-dev".to_vec()),
    };
    // A [teap] section tunes the dev gateway like [est] does: its limits, default label and
    // Authority-ID apply, its labels and clients replace (or add to) the generated ones.
    if let Some(section) = &cfg.teap {
        let from_file = section
            .to_config_parts(&|name| std::env::var(name).ok())
            .context("the [teap] section")?;
        teap_config.limits = from_file.limits;
        if from_file.default_label.is_some() {
            teap_config.default_label = from_file.default_label;
        }
        if !from_file.authority_id.is_empty() {
            teap_config.authority_id = from_file.authority_id;
        }
        for label in from_file.labels {
            teap_config.labels.retain(|l| l.label != label.label);
            teap_config.labels.push(label);
        }
        for client in from_file.clients {
            teap_config
                .clients
                .retain(|c| c.name != client.name && c.prefix != client.prefix);
            teap_config.clients.push(client);
        }
    }
    let teap_tls = TeapTls {
        cert_chain_pem: teap_chain
            .iter()
            .map(|c| ragw_acme_ca::ca::pem_encode("CERTIFICATE", c))
            .collect::<String>()
            .into_bytes(),
        key_pem: ragw_acme_ca::ca::pem_encode("PRIVATE KEY", &teap_key).into_bytes(),
        // The dev CA's root issued the TEAP server certificate.
        trusted_server_root_pem: std::fs::read(&root_pem)
            .with_context(|| format!("reading {}", root_pem.display()))?,
    };
    let (tcert, tkey) = creds.pair(Role::Gateway);
    let teap_channel = dev_channel(&grpc_url, &creds.ca_pem, tcert, tkey)?;
    let radius_socket = UdpSocket::bind(args.radius_addr)
        .await
        .with_context(|| format!("binding the TEAP gateway to {}", args.radius_addr))?;
    let radius_addr = radius_socket.local_addr()?;
    // RadSec beside UDP: the TEAP server certificate, clients on loopback with the dev RadSec
    // client certificate (or whatever a [teap.radsec] section names).
    let radsec_listener = TcpListener::bind(args.radsec_addr)
        .await
        .with_context(|| format!("binding RadSec to {}", args.radsec_addr))?;
    let radsec_addr = radsec_listener.local_addr()?;
    let mut radsec = RadsecListener {
        listener: radsec_listener,
        tls: teap_tls.clone(),
        client_ca_pem: ensure_radsec_client_credentials(&radsec_dir(&args.data_dir))?,
        clients: vec![(
            "dev-loopback".into(),
            "127.0.0.0/8".parse().context("the loopback prefix")?,
        )],
        limits: Default::default(),
    };
    if let Some(section) = cfg.teap.as_ref().and_then(|t| t.radsec.as_ref()) {
        radsec.limits = section.limits().context("the [teap.radsec] section")?;
        if !section.clients.is_empty() {
            radsec.clients = section
                .client_prefixes()
                .context("the [teap.radsec] section")?;
        }
        if let Some(ca) = &section.client_ca {
            radsec.client_ca_pem =
                std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        }
    }
    let teap = TeapService::new(
        teap_config,
        teap_tls,
        Arc::new(GrpcRegistrar::new(teap_channel)),
    )
    .with_metrics(&metrics)
    .with_radsec(radsec);
    let teap_task = tokio::spawn(teap.serve(radius_socket, wait_stop(stop_rx.clone())));

    let endpoints = json!({
        "est": format!("https://{est_addr}"),
        "radius": radius_addr.to_string(),
        "radsec": radsec_addr.to_string(),
        "acme_directory": ca.directory_url(),
        "dns": dns.udp_addr().to_string(),
        "grpc": grpc_url,
        "metrics": format!("http://{}/metrics", bound.ops),
    });
    let text = serde_json::to_string_pretty(&endpoints)?;
    std::fs::write(endpoints_file(&args.data_dir), format!("{text}\n"))
        .context("writing endpoints.json")?;
    let dir = args.data_dir.display();
    println!("ragw dev is running (data in {dir})");
    println!("  EST             https://{est_addr}/.well-known/est/");
    println!(
        "  TEAP (RADIUS)   udp://{radius_addr} for NASes on 127.0.0.0/8, secret in {dir}/radius-secret"
    );
    println!(
        "  TEAP (RadSec)   tcp://{radsec_addr} for loopback clients with {dir}/radsec/client.pem (key client.key), server CA {}",
        root_pem.display()
    );
    println!("  ACME directory  {}", ca.directory_url());
    println!("  DNS (TSIG key {dir}/dns/tsig.key)  {}", dns.udp_addr());
    println!("  registrar gRPC  {grpc_url}");
    println!("  metrics         http://{}/metrics", bound.ops);
    println!("  root CA         {}", root_pem.display());
    for p in &cfg.profiles {
        println!(
            "  profile {:<8} EST label /.well-known/est/{}/, devices under {} (approval {:?})",
            p.name,
            p.name,
            p.primary_parent_domain(),
            p.approval
        );
    }
    if generated {
        println!(
            "  bootstrap password (shown once, also in {dir}/dev-password): {password}\n  e.g. curl --user {}:<password> …",
            args.dev_user
        );
    } else {
        println!("  bootstrap password: in {dir}/dev-password (or as given)");
    }
    if radius_secret_generated {
        println!("  RADIUS secret (shown once, also in {dir}/radius-secret): {radius_secret}");
    }
    println!("  admin / audit   ragw admin --data-dir {dir} …, ragw audit --data-dir {dir} …");

    shutdown_signal().await;
    let _ = stop_tx.send(true);
    if let Some(t) = worker_task {
        let _ = t.await;
    }
    let _ = est_task.await;
    match teap_task.await {
        Ok(Err(e)) => tracing::error!(error = %e, "TEAP gateway"),
        Err(e) => tracing::error!(error = %e, "TEAP gateway task"),
        Ok(Ok(())) => {}
    }
    let _ = ca_task.await;
    let _ = dns_task.await;
    registrar.await.context("registrar")?
}

/// A channel to the dev registrar, whose generated certificate is issued for `localhost`.
fn dev_channel(
    url: &str,
    ca: &Path,
    cert: PathBuf,
    key: PathBuf,
) -> Result<tonic::transport::Channel> {
    let tls = crate::config::TlsSection {
        ca: ca.to_path_buf(),
        cert,
        key,
    };
    crate::client::registrar_channel(url, Some("localhost"), &tls)
}
