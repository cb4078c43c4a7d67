//! The registrar: the only owner of the database. Gateways enroll devices through it, workers
//! lease jobs from it, operators and auditors query it, all over gRPC with mutual TLS; the role
//! in the caller's certificate decides which RPCs it may call.

mod admin;
mod audit_service;
mod auth;
mod convert;
pub mod crl_poll;
mod enrollment;
mod metrics;
mod revocation;
mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ragw_domain::Profile;
use ragw_proto::registrar::v1 as pb;
use ragw_store::Store;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

pub use crl_poll::{CrlPollSettings, CrlPoller};
pub use metrics::RegistrarMetrics;

/// Largest gRPC message the registrar decodes. Fields have their own, smaller limits, checked
/// with a message that names the field.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct RegistrarSettings {
    pub profiles: Vec<Profile>,
    /// A retryable failure becomes terminal after this many attempts.
    pub max_attempts: i64,
    /// Upper bound on WaitEnrollment and Lease long polls.
    pub max_wait: Duration,
    /// Longest lease a worker may ask for.
    pub max_lease: Duration,
}

impl Default for RegistrarSettings {
    fn default() -> Self {
        RegistrarSettings {
            profiles: Vec::new(),
            max_attempts: 10,
            max_wait: Duration::from_secs(30),
            max_lease: Duration::from_secs(600),
        }
    }
}

pub struct Registrar {
    store: Arc<dyn Store>,
    profiles: HashMap<String, Profile>,
    settings: RegistrarSettings,
    /// Woken on every enrollment change this replica makes; waiters also poll, so changes made
    /// by other replicas are seen too.
    changed: Notify,
    metrics: RegistrarMetrics,
}

impl Registrar {
    /// The extended key usages a profile's certificates must carry, as told to workers. A
    /// profile no longer configured (an enrollment from before a config change) asks for none,
    /// so the worker falls back to the CA's default.
    pub(crate) fn profile_ekus(&self, profile: &str) -> Vec<String> {
        self.profiles
            .get(profile)
            .map(|p| p.eku.iter().map(|e| e.as_str().to_string()).collect())
            .unwrap_or_default()
    }

    pub fn new(
        store: Arc<dyn Store>,
        settings: RegistrarSettings,
        metrics: RegistrarMetrics,
    ) -> Arc<Self> {
        let profiles = settings
            .profiles
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        Arc::new(Registrar {
            store,
            profiles,
            settings,
            changed: Notify::new(),
            metrics,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn notify_change(&self) {
        self.changed.notify_waiters();
    }
}

/// PEM material for the registrar's gRPC listener.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// CA that issued the component certificates callers present.
    pub client_ca_pem: Vec<u8>,
}

/// Serves the four services on `listener` until `shutdown` resolves. Client certificates are
/// required.
pub async fn serve(
    registrar: Arc<Registrar>,
    listener: TcpListener,
    tls: TlsMaterial,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let tls_config = ServerTlsConfig::new()
        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
        .client_ca_root(Certificate::from_pem(&tls.client_ca_pem));
    Server::builder()
        .tls_config(tls_config)?
        .add_service(
            pb::enrollment_service_server::EnrollmentServiceServer::from_arc(registrar.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            pb::worker_service_server::WorkerServiceServer::from_arc(registrar.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            pb::admin_service_server::AdminServiceServer::from_arc(registrar.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            pb::audit_service_server::AuditServiceServer::from_arc(registrar)
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
