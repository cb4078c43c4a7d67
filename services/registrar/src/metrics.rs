//! Registrar counters, exported on the component's /metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use ragw_runtime::ops::MetricsRegistry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub rpc: String,
    pub outcome: String,
}

#[derive(Clone, Default, Debug)]
pub struct RegistrarMetrics {
    pub rpcs: Family<RpcLabels, Counter>,
    pub enrollments_created: Counter,
    pub certificates_recorded: Counter,
    pub jobs_leased: Counter,
    /// The CRL poller's counters (`ragw_registrar_crl_*`).
    pub crl: crate::crl_poll::CrlMetrics,
}

impl RegistrarMetrics {
    /// Registers the counters under `ragw_registrar_`.
    pub fn register(&self, registry: &MetricsRegistry) {
        let registry = registry.component("registrar");
        registry.register(
            "rpcs",
            "Registrar RPCs by name and outcome (ok or the gRPC code)",
            self.rpcs.clone(),
        );
        registry.register(
            "enrollments_created",
            "New enrollments stored (retries of an existing one not counted)",
            self.enrollments_created.clone(),
        );
        registry.register(
            "certificates_recorded",
            "Certificates recorded as issued",
            self.certificates_recorded.clone(),
        );
        registry.register(
            "jobs_leased",
            "Jobs handed to workers",
            self.jobs_leased.clone(),
        );
        registry.register(
            "crl_polls",
            "CRL polls started (one per registrar.crl_poll_interval_seconds)",
            self.crl.polls.clone(),
        );
        registry.register(
            "crl_fetches",
            "CRL fetches by outcome: ok, fetch_failed (transport, status, size, timeout), bad_crl (not a CRL, wrong issuer, bad signature)",
            self.crl.fetches.clone(),
        );
        registry.register(
            "crl_revoked",
            "Certificates marked revoked because their CA's CRL lists them",
            self.crl.revoked.clone(),
        );
    }

    pub(crate) fn rpc(&self, rpc: &str, outcome: &str) {
        self.rpcs
            .get_or_create(&RpcLabels {
                rpc: rpc.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}
