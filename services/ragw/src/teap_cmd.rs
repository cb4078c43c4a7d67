//! `ragw run --target teap`: the TEAP gateway alone (RADIUS over UDP, and RadSec when
//! `[teap.radsec]` is set), talking to a registrar over gRPC.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use ragw_runtime::ops::{Health, MetricsRegistry};
use ragw_teap::gateway::GrpcRegistrar;
use ragw_teap::service::{RadsecListener, TeapService, TeapTls};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::config::Config;
use crate::serve::{shutdown_signal, wait_stop};

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

pub async fn run_teap(config: Option<&Path>) -> Result<()> {
    let cfg = Config::load(config)?;
    ragw_runtime::telemetry::init_tracing(cfg.log.format, &cfg.log.level);
    let teap = cfg
        .teap
        .clone()
        .context("`ragw run --target teap` needs a [teap] section")?;
    let component_tls = cfg.tls.clone().context(
        "the TEAP gateway needs a [tls] section (ca, cert, key): its component certificate \
         with the role gateway, to call the registrar",
    )?;
    let gateway_config = teap
        .to_config(&|name| std::env::var(name).ok())
        .context("invalid [teap] section")?;
    let (Some(cert), Some(key)) = (&teap.tls_cert, &teap.tls_key) else {
        anyhow::bail!(
            "teap.tls_cert and teap.tls_key (the TEAP server certificate and key devices see in \
             the tunnel handshake) are required"
        );
    };
    let server_tls = TeapTls {
        cert_chain_pem: read(cert)?,
        key_pem: read(key)?,
        trusted_server_root_pem: match &teap.trusted_server_root {
            Some(path) => read(path)?,
            None => Vec::new(),
        },
    };
    let channel = crate::client::registrar_channel(
        &teap.registrar_url,
        teap.registrar_tls_name.as_deref(),
        &component_tls,
    )?;
    let socket = UdpSocket::bind(teap.listen)
        .await
        .with_context(|| format!("binding {}", teap.listen))?;
    let ops = TcpListener::bind(teap.ops_listen)
        .await
        .with_context(|| format!("binding {}", teap.ops_listen))?;
    let bound = socket.local_addr()?;
    let ops_bound = ops.local_addr()?;

    let radsec = match &teap.radsec {
        Some(section) => {
            let settings = section
                .to_settings(teap.tls_cert.as_deref(), teap.tls_key.as_deref())
                .context("invalid [teap.radsec] section")?;
            let listener = TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("binding RadSec on {}", settings.listen))?;
            Some(RadsecListener {
                listener,
                tls: TeapTls {
                    cert_chain_pem: settings.cert_chain_pem,
                    key_pem: settings.key_pem,
                    // The RadSec connection's own TLS; TEAP's Trusted-Server-Root is the
                    // TEAP server's.
                    trusted_server_root_pem: Vec::new(),
                },
                client_ca_pem: settings.client_ca_pem,
                clients: settings.clients,
                limits: settings.limits,
            })
        }
        None => None,
    };
    let radsec_bound = match &radsec {
        Some(r) => Some(r.listener.local_addr()?),
        None => None,
    };

    let metrics = MetricsRegistry::new();
    let health = Health::new();
    let mut service = TeapService::new(
        gateway_config,
        server_tls,
        Arc::new(GrpcRegistrar::new(channel)),
    )
    .with_metrics(&metrics);
    if let Some(radsec) = radsec {
        service = service.with_radsec(radsec);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let ops_task = tokio::spawn(ragw_runtime::ops::serve(
        ops,
        health.clone(),
        metrics,
        wait_stop(stop_rx.clone()),
    ));
    let mut teap_task = tokio::spawn(service.serve(socket, wait_stop(stop_rx)));
    health.set_ready(true);
    println!("TEAP gateway (RADIUS) on udp://{bound} , ops on http://{ops_bound}");
    if let Some(radsec) = radsec_bound {
        println!("TEAP gateway (RadSec, RADIUS over TLS) on tcp://{radsec}");
    }

    // A bad server certificate ends the gateway at once; do not wait for a signal then.
    let ended_early = tokio::select! {
        () = shutdown_signal() => None,
        result = &mut teap_task => Some(result),
    };
    let _ = stop_tx.send(true);
    let result = match ended_early {
        Some(result) => result,
        None => teap_task.await,
    };
    result.context("TEAP task")?.context("TEAP gateway")?;
    ops_task
        .await
        .context("ops task")?
        .context("ops endpoint")?;
    Ok(())
}
