//! Starting the registrar and its ops endpoint, and stopping on SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use ragw_registrar::{CrlPoller, Registrar, RegistrarMetrics, TlsMaterial};
use ragw_runtime::ops::{Health, MetricsRegistry};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;

pub use ragw_runtime::ops::shutdown_signal;

pub fn read_tls(ca: &Path, cert: &Path, key: &Path) -> Result<TlsMaterial> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok(TlsMaterial {
        cert_pem: read(cert)?,
        key_pem: read(key)?,
        client_ca_pem: read(ca)?,
    })
}

pub struct Bound {
    pub grpc: SocketAddr,
    pub ops: SocketAddr,
}

/// Starts the registrar's gRPC server and the ops endpoint; runs until `stop` flips.
pub async fn start_registrar(
    cfg: &Config,
    store: Arc<dyn ragw_store::Store>,
    tls: TlsMaterial,
    grpc: TcpListener,
    ops: TcpListener,
    metrics: MetricsRegistry,
    stop: watch::Receiver<bool>,
) -> Result<(Bound, tokio::task::JoinHandle<Result<()>>)> {
    let bound = Bound {
        grpc: grpc.local_addr()?,
        ops: ops.local_addr()?,
    };
    let registrar_metrics = RegistrarMetrics::default();
    registrar_metrics.register(&metrics);
    let health = Health::new();
    let crl_poller = CrlPoller::new(
        store.clone(),
        cfg.crl_poll_settings(),
        registrar_metrics.crl.clone(),
    );
    let registrar = Registrar::new(store, cfg.registrar_settings(), registrar_metrics);
    let crl_task = tokio::spawn(crl_poller.run(wait_stop(stop.clone())));

    let ops_task = tokio::spawn(ragw_runtime::ops::serve(
        ops,
        health.clone(),
        metrics,
        wait_stop(stop.clone()),
    ));
    let grpc_task = tokio::spawn(ragw_registrar::serve(registrar, grpc, tls, wait_stop(stop)));
    health.set_ready(true);
    tracing::info!(grpc = %bound.grpc, ops = %bound.ops, "registrar serving");
    let handle = tokio::spawn(async move {
        grpc_task
            .await
            .context("registrar task")?
            .context("registrar gRPC server")?;
        crl_task.await.context("CRL poll task")?;
        ops_task
            .await
            .context("ops task")?
            .context("ops endpoint")?;
        Ok(())
    });
    Ok((bound, handle))
}

pub async fn wait_stop(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

pub async fn run_registrar(config: Option<&Path>) -> Result<()> {
    let cfg = Config::load(config)?;
    ragw_runtime::telemetry::init_tracing(cfg.log.format, &cfg.log.level);
    let tls_cfg = cfg.tls.clone().context(
        "the registrar needs a [tls] section (ca, cert, key) for its mutual-TLS gRPC listener",
    )?;
    let tls = read_tls(&tls_cfg.ca, &tls_cfg.cert, &tls_cfg.key)?;
    let store_cfg = cfg.store.resolve(Path::new("ragw.db"))?;
    let store = ragw_store::open(&store_cfg)
        .await
        .context("opening the store")?;
    let grpc = TcpListener::bind(cfg.registrar.listen)
        .await
        .with_context(|| format!("binding {}", cfg.registrar.listen))?;
    let ops = TcpListener::bind(cfg.registrar.ops_listen)
        .await
        .with_context(|| format!("binding {}", cfg.registrar.ops_listen))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (bound, handle) =
        start_registrar(&cfg, store, tls, grpc, ops, MetricsRegistry::new(), stop_rx).await?;
    println!(
        "registrar gRPC on {} , ops on http://{}",
        bound.grpc, bound.ops
    );
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    handle.await.context("registrar")?
}
