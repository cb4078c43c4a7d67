//! Counters for the DNS side of dns-01: updates a worker makes, and what the built-in server is
//! asked.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use ragw_runtime::ops::MetricsRegistry;

use super::DnsError;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpdateLabels {
    provider: String,
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    rcode: String,
}

/// DNS counters. Clones share the counters; an unregistered instance counts without being
/// exported, so tests and tools need no registry.
#[derive(Debug, Clone, Default)]
pub struct DnsMetrics {
    updates: Family<UpdateLabels, Counter>,
    server_updates: Family<ServerLabels, Counter>,
    server_queries: Family<ServerLabels, Counter>,
}

/// What a record change is, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Add,
    Remove,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Add => "add",
            Operation::Remove => "remove",
        }
    }
}

impl DnsMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the counters; with `registry.component("worker")` they are exported as
    /// `ragw_worker_dns_updates_total{provider,operation,outcome}`,
    /// `ragw_worker_dns_server_updates_total{rcode}` and `ragw_worker_dns_server_queries_total{rcode}`.
    pub fn register(&self, registry: &MetricsRegistry) {
        registry.register(
            "dns_updates",
            "TXT record changes made through a DNS provider, by provider, operation and outcome",
            self.updates.clone(),
        );
        registry.register(
            "dns_server_updates",
            "RFC 2136 UPDATE messages answered by the built-in DNS server, by response code",
            self.server_updates.clone(),
        );
        registry.register(
            "dns_server_queries",
            "Queries answered by the built-in DNS server, by response code",
            self.server_queries.clone(),
        );
    }

    pub(crate) fn record_update(
        &self,
        provider: &str,
        operation: Operation,
        result: &Result<(), DnsError>,
    ) {
        let outcome = match result {
            Ok(()) => "ok",
            Err(e) => e.outcome(),
        };
        self.updates
            .get_or_create(&UpdateLabels {
                provider: provider.to_owned(),
                operation: operation.as_str(),
                outcome,
            })
            .inc();
    }

    pub(crate) fn record_server_update(&self, rcode: &str) {
        self.server_updates
            .get_or_create(&ServerLabels {
                rcode: rcode.to_owned(),
            })
            .inc();
    }

    pub(crate) fn record_server_query(&self, rcode: &str) {
        self.server_queries
            .get_or_create(&ServerLabels {
                rcode: rcode.to_owned(),
            })
            .inc();
    }

    /// The count of provider updates with these labels (for tests and diagnostics).
    pub fn update_count(&self, provider: &str, operation: &str, outcome: &str) -> u64 {
        let operation = match operation {
            "add" => Operation::Add,
            "remove" => Operation::Remove,
            _ => return 0,
        };
        let outcome = match outcome_label(outcome) {
            Some(o) => o,
            None => return 0,
        };
        self.updates
            .get_or_create(&UpdateLabels {
                provider: provider.to_owned(),
                operation: operation.as_str(),
                outcome,
            })
            .get()
    }

    /// The count of RFC 2136 updates the built-in server answered with `rcode` (e.g. `"NOERROR"`).
    pub fn server_update_count(&self, rcode: &str) -> u64 {
        self.server_updates
            .get_or_create(&ServerLabels {
                rcode: rcode.to_owned(),
            })
            .get()
    }
}

/// The outcome labels in use, so a lookup with a string maps onto the `&'static str` labels.
const OUTCOMES: [&str; 11] = [
    "ok",
    "invalid",
    "tsig_rejected",
    "refused",
    "notauth",
    "server_error",
    "timeout",
    "transport",
    "bad_response",
    "limit",
    "error",
];

fn outcome_label(s: &str) -> Option<&'static str> {
    OUTCOMES.into_iter().find(|o| *o == s)
}

impl DnsError {
    /// The `outcome` label of a failed update.
    pub(crate) fn outcome(&self) -> &'static str {
        match self {
            DnsError::InvalidName { .. }
            | DnsError::NotInZone { .. }
            | DnsError::InvalidValue(_) => "invalid",
            DnsError::TsigRejected { .. } => "tsig_rejected",
            DnsError::Refused { .. } => "refused",
            DnsError::NotAuthoritative { .. } => "notauth",
            DnsError::Rcode { .. } => "server_error",
            DnsError::Timeout { .. } => "timeout",
            DnsError::Transport { .. } => "transport",
            DnsError::BadResponse { .. } => "bad_response",
            DnsError::Limit(_) => "limit",
            DnsError::Key(_) | DnsError::Io { .. } | DnsError::Server(_) => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_exported() {
        let registry = MetricsRegistry::new();
        let metrics = DnsMetrics::new();
        metrics.register(&registry.component("worker"));
        metrics.record_update("rfc2136", Operation::Add, &Ok(()));
        metrics.record_update(
            "rfc2136",
            Operation::Remove,
            &Err(DnsError::Limit("x".into())),
        );
        metrics.record_server_update("REFUSED");
        metrics.record_server_query("NXDOMAIN");
        let text = registry.encode().unwrap();
        for needle in [
            "ragw_worker_dns_updates_total{provider=\"rfc2136\",operation=\"add\",outcome=\"ok\"} 1",
            "ragw_worker_dns_updates_total{provider=\"rfc2136\",operation=\"remove\",outcome=\"limit\"} 1",
            "ragw_worker_dns_server_updates_total{rcode=\"REFUSED\"} 1",
            "ragw_worker_dns_server_queries_total{rcode=\"NXDOMAIN\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        assert_eq!(metrics.update_count("rfc2136", "add", "ok"), 1);
        assert_eq!(metrics.server_update_count("REFUSED"), 1);
    }
}
