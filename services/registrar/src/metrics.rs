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
