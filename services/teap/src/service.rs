//! The running TEAP gateway: the UDP socket (and the RadSec listener when configured), the
//! RADIUS server core, the TEAP server
//! configuration (TLS 1.2 certificate, Authority-ID), the registrar and the metrics, put
//! together. `ragw run --target teap` and `ragw dev` call this; every decision is the core's,
//! the gateway's or the conversation's.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ragw_runtime::ops::MetricsRegistry;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::config::TeapConfig;
use crate::gateway::{
    GatewayError, RandomSource, Registrar, ServerEngine, TeapGateway, TeapMetrics,
};
use crate::radius_server::radsec::{RADSEC_SECRET, RadsecLimits, RadsecServer, radsec_tls_config};
use crate::radius_server::udp::{completion_channel, serve_observed};
use crate::radius_server::{CacheLimits, Client, ClientTable, IpPrefix, RadiusServer, Secret};
use crate::teap_server::{ConversationLimits, TeapServerConfig, tls_server_config};

/// Retransmission cache entries at least (one per request in flight or recently answered).
const MIN_CACHE_ENTRIES: usize = 4096;
/// How long an answer stays cached beyond the longest a request can be deferred, so a NAS's
/// last retransmission still gets it (RFC 5080 §2.2.2).
const CACHE_MARGIN: Duration = Duration::from_secs(10);

/// The TEAP server certificate chain (PEM, end entity first) and its key (PEM), and the CA
/// certificates (PEM) handed to a peer that asks for the Trusted-Server-Root (RFC 9930 §4.2.17):
/// the roots that let it check this server's certificate next time. Empty: the request is
/// answered without roots.
#[derive(Clone)]
pub struct TeapTls {
    pub cert_chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub trusted_server_root_pem: Vec<u8>,
}

impl std::fmt::Debug for TeapTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeapTls").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TeapServiceError {
    #[error("invalid TEAP configuration: {0}")]
    Config(#[from] GatewayError),
    #[error("TEAP server certificate: {0}")]
    Tls(String),
    #[error("RADIUS listener: {0}")]
    Io(#[from] std::io::Error),
}

/// The RadSec listener (RFC 6614): a bound TCP socket, its server certificate, the CA client
/// certificates must chain to, the client sources, and the connection limits.
pub struct RadsecListener {
    pub listener: TcpListener,
    pub tls: TeapTls,
    pub client_ca_pem: Vec<u8>,
    pub clients: Vec<(String, IpPrefix)>,
    pub limits: RadsecLimits,
}

pub struct TeapService {
    config: TeapConfig,
    tls: TeapTls,
    registrar: Arc<dyn Registrar>,
    metrics: TeapMetrics,
    random: RandomSource,
    radsec: Option<RadsecListener>,
}

impl TeapService {
    pub fn new(config: TeapConfig, tls: TeapTls, registrar: Arc<dyn Registrar>) -> TeapService {
        TeapService {
            config,
            tls,
            registrar,
            metrics: TeapMetrics::new(),
            random: system_random(),
            radsec: None,
        }
    }

    /// Serves RadSec on `radsec` too, with its own RADIUS core and conversations (a NAS keeps
    /// a conversation on one transport).
    pub fn with_radsec(mut self, radsec: RadsecListener) -> TeapService {
        self.radsec = Some(radsec);
        self
    }

    /// Registers the gateway's metrics (component `teap`).
    pub fn with_metrics(self, registry: &MetricsRegistry) -> TeapService {
        self.metrics.register(registry);
        self
    }

    /// Serves RADIUS on `socket` (and RadSec when configured) until `shutdown` resolves; a
    /// listener failing ends both.
    pub async fn serve(
        mut self,
        socket: UdpSocket,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), TeapServiceError> {
        let (chain, key) = parse_tls(&self.tls)?;
        let tls =
            tls_server_config(chain, key).map_err(|e| TeapServiceError::Tls(e.to_string()))?;
        let trusted_server_root_pkcs7 = trusted_server_root(&self.tls.trusted_server_root_pem)?;
        let server_config = Arc::new(TeapServerConfig {
            tls,
            authority_id: self.config.authority_id.clone(),
            limits: ConversationLimits::default(),
            trusted_server_root_pkcs7,
        });
        let mut clients = ClientTable::new();
        for c in &self.config.clients {
            clients.insert(
                c.prefix,
                Client {
                    name: c.name.clone(),
                    secret: c.secret.clone(),
                },
            );
        }
        let limits = &self.config.limits;
        let cache = CacheLimits {
            max_entries: MIN_CACHE_ENTRIES.max(limits.max_conversations),
            lifetime: limits.enrollment_hold + limits.registrar_timeout * 2 + CACHE_MARGIN,
        };
        let radsec = match self.radsec.take() {
            Some(radsec) => Some(self.radsec_core(radsec, &server_config, cache)?),
            None => None,
        };
        let (completer, completions) = completion_channel();
        let engine = ServerEngine::new(server_config, Arc::clone(&self.random));
        let metrics = self.metrics.clone();
        let gateway = TeapGateway::new(
            self.config,
            engine,
            self.registrar,
            completer,
            self.metrics,
            self.random,
            Arc::new(Instant::now),
        )?;
        let core = RadiusServer::new(clients, gateway, cache);

        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let udp = {
            let metrics = metrics.clone();
            let stop_tx = stop_tx.clone();
            let stop = stopped(stop_rx.clone());
            async move {
                let result = serve_observed(
                    socket,
                    core,
                    completions,
                    |datagram, action| metrics.observe(datagram, action),
                    stop,
                )
                .await
                .map(|_| ());
                let _ = stop_tx.send(true);
                result
            }
        };
        let radsec = {
            let stop_tx = stop_tx.clone();
            let stop = stopped(stop_rx.clone());
            async move {
                let Some((server, listener, core, completions)) = radsec else {
                    return Ok(());
                };
                let result = server
                    .serve(
                        listener,
                        core,
                        completions,
                        |packet, action| metrics.observe(packet, action),
                        stop,
                    )
                    .await
                    .map(|_| ());
                let _ = stop_tx.send(true);
                result
            }
        };
        let signal = async move {
            tokio::select! {
                () = shutdown => {}
                () = stopped(stop_rx) => {}
            }
            let _ = stop_tx.send(true);
        };
        let ((), udp, radsec) = tokio::join!(signal, udp, radsec);
        udp?;
        radsec?;
        Ok(())
    }

    /// The RadSec listener's own core: a second gateway on the same TEAP server configuration
    /// and registrar, its client table holding the fixed secret `radsec`.
    #[allow(clippy::type_complexity)]
    fn radsec_core(
        &self,
        radsec: RadsecListener,
        server_config: &Arc<TeapServerConfig>,
        cache: CacheLimits,
    ) -> Result<
        (
            RadsecServer,
            TcpListener,
            RadiusServer<TeapGateway<ServerEngine>>,
            crate::radius_server::udp::Completions,
        ),
        TeapServiceError,
    > {
        let (chain, key) = parse_tls(&radsec.tls)?;
        let client_cas: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&radsec.client_ca_pem)
                .collect::<Result<_, _>>()
                .map_err(|e| TeapServiceError::Tls(format!("RadSec client CA: {e}")))?;
        let tls = radsec_tls_config(chain, key, &client_cas)
            .map_err(|e| TeapServiceError::Tls(e.to_string()))?;
        let secret = Secret::new(RADSEC_SECRET)
            .map_err(|e| TeapServiceError::Tls(format!("RadSec secret: {e}")))?;
        let mut clients = ClientTable::new();
        for (name, prefix) in &radsec.clients {
            clients.insert(
                *prefix,
                Client {
                    name: name.clone(),
                    secret: secret.clone(),
                },
            );
        }
        let (completer, completions) = completion_channel();
        let engine = ServerEngine::new(Arc::clone(server_config), Arc::clone(&self.random));
        let gateway = TeapGateway::new(
            self.config.clone(),
            engine,
            Arc::clone(&self.registrar),
            completer,
            self.metrics.for_another_gateway(),
            Arc::clone(&self.random),
            Arc::new(Instant::now),
        )?;
        let server = RadsecServer::new(tls, radsec.limits);
        Ok((
            server,
            radsec.listener,
            RadiusServer::new(clients, gateway, cache),
            completions,
        ))
    }
}

fn parse_tls(
    tls: &TeapTls,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TeapServiceError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&tls.cert_chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TeapServiceError::Tls(format!("certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(TeapServiceError::Tls(
            "the certificate file holds no CERTIFICATE block".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem)
        .map_err(|e| TeapServiceError::Tls(format!("private key: {e}")))?;
    Ok((chain, key))
}

/// The system CSPRNG (aws-lc-rs, the one crypto provider).
pub fn system_random() -> RandomSource {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    Arc::new(move |buf: &mut [u8]| {
        if provider.secure_random.fill(buf).is_err() {
            // Never seen in practice; the RADIUS secret still guards every packet.
            tracing::error!("the system random generator failed");
        }
    })
}

/// The certs-only PKCS#7 for the Trusted-Server-Root TLV, from PEM CA certificates.
fn trusted_server_root(pem: &[u8]) -> Result<Option<Vec<u8>>, TeapServiceError> {
    if pem.is_empty() {
        return Ok(None);
    }
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TeapServiceError::Tls(format!("trusted server root: {e}")))?;
    if roots.is_empty() {
        return Err(TeapServiceError::Tls(
            "the trusted server root file holds no CERTIFICATE block".into(),
        ));
    }
    ragw_pki::certs_only(&roots)
        .map(Some)
        .map_err(|e| TeapServiceError::Tls(format!("trusted server root: {e}")))
}

#[cfg(test)]
mod trusted_server_root_tests {
    use super::*;

    #[test]
    fn roots_become_a_certs_only_pkcs7_and_garbage_is_refused() {
        let key = rcgen::KeyPair::generate().expect("key");
        let root = rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .self_signed(&key)
            .expect("root");
        let pkcs7 = trusted_server_root(root.pem().as_bytes())
            .expect("pkcs7")
            .expect("some");
        let certs = ragw_pki::pkcs7::parse_certs_only(&pkcs7).expect("parses");
        assert_eq!(certs, vec![root.der().to_vec()]);
        assert!(trusted_server_root(b"").expect("empty is fine").is_none());
        assert!(trusted_server_root(b"not pem").is_err());
    }
}
