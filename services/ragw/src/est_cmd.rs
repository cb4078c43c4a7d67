//! `ragw run --target est`: the EST gateway alone, talking to a registrar over gRPC.

use std::path::Path;

use anyhow::{Context, Result};
use ragw_est::{EstServer, ServerTls};
use ragw_runtime::ops::{Health, MetricsRegistry};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::serve::{shutdown_signal, wait_stop};

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

pub async fn run_est(config: Option<&Path>) -> Result<()> {
    let cfg = Config::load(config)?;
    ragw_runtime::telemetry::init_tracing(cfg.log.format, &cfg.log.level);
    let est = cfg
        .est
        .clone()
        .context("`ragw run --target est` needs an [est] section")?;
    let component_tls = cfg.tls.clone().context(
        "the EST gateway needs a [tls] section (ca, cert, key): its component certificate \
         with the role gateway, to call the registrar",
    )?;
    let gateway_config = est.to_config().context("invalid [est] section")?;
    let (Some(cert), Some(key)) = (&est.tls_cert, &est.tls_key) else {
        anyhow::bail!(
            "est.tls_cert and est.tls_key (the HTTPS server certificate and key) are required"
        );
    };
    let server_tls = ServerTls {
        cert_chain_pem: read(cert)?,
        key_pem: read(key)?,
    };
    let channel = crate::client::registrar_channel(
        &est.registrar_url,
        est.registrar_tls_name.as_deref(),
        &component_tls,
    )?;
    let listener = TcpListener::bind(est.listen)
        .await
        .with_context(|| format!("binding {}", est.listen))?;
    let ops = TcpListener::bind(est.ops_listen)
        .await
        .with_context(|| format!("binding {}", est.ops_listen))?;
    let bound = listener.local_addr()?;
    let ops_bound = ops.local_addr()?;

    let metrics = MetricsRegistry::new();
    let health = Health::new();
    let server = EstServer::new(gateway_config, channel)?.with_metrics(&metrics);
    let (stop_tx, stop_rx) = watch::channel(false);
    let ops_task = tokio::spawn(ragw_runtime::ops::serve(
        ops,
        health.clone(),
        metrics,
        wait_stop(stop_rx.clone()),
    ));
    let est_task = tokio::spawn(server.serve(listener, server_tls, wait_stop(stop_rx)));
    health.set_ready(true);
    println!("EST gateway on https://{bound} , ops on http://{ops_bound}");

    shutdown_signal().await;
    let _ = stop_tx.send(true);
    est_task.await.context("EST task")?.context("EST gateway")?;
    ops_task
        .await
        .context("ops task")?
        .context("ops endpoint")?;
    Ok(())
}
