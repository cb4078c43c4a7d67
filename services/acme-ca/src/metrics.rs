//! The local CA's Prometheus metrics: requests by resource and status, problems by ACME type,
//! certificates issued and revoked, and request latency.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use ragw_runtime::ops::MetricsRegistry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub resource: &'static str,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProblemLabels {
    /// The ACME error type without its `urn:ietf:params:acme:error:` prefix.
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    pub resource: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

#[derive(Clone)]
pub struct CaMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub problems: Family<ProblemLabels, Counter>,
    pub duration: Family<ResourceLabel, Histogram, fn() -> Histogram>,
    pub issued: Counter,
    pub revoked: Counter,
}

impl Default for CaMetrics {
    fn default() -> Self {
        CaMetrics {
            requests: Family::default(),
            problems: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            issued: Counter::default(),
            revoked: Counter::default(),
        }
    }
}

impl CaMetrics {
    /// Exports `ragw_ca_requests_total`, `ragw_ca_problems_total`,
    /// `ragw_ca_request_duration_seconds`, `ragw_ca_certificates_issued_total` and
    /// `ragw_ca_certificates_revoked_total`.
    pub fn register(&self, registry: &MetricsRegistry) {
        let r = registry.component("ca");
        r.register(
            "requests",
            "ACME requests by resource, method and HTTP status",
            self.requests.clone(),
        );
        r.register(
            "problems",
            "ACME problem documents sent, by error type",
            self.problems.clone(),
        );
        r.register(
            "request_duration_seconds",
            "ACME request latency by resource",
            self.duration.clone(),
        );
        r.register(
            "certificates_issued",
            "Certificates issued by the local CA",
            self.issued.clone(),
        );
        r.register(
            "certificates_revoked",
            "Certificates revoked through ACME revokeCert",
            self.revoked.clone(),
        );
    }
}

/// The short ACME error type of a problem document body, if it is one.
pub fn problem_type(body: &[u8]) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    let t = doc.get("type")?.as_str()?;
    Some(
        t.strip_prefix("urn:ietf:params:acme:error:")
            .unwrap_or(t)
            .chars()
            .take(64)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_types_are_shortened_and_bounded() {
        assert_eq!(
            problem_type(br#"{"type":"urn:ietf:params:acme:error:badNonce","detail":"x"}"#)
                .as_deref(),
            Some("badNonce")
        );
        assert_eq!(problem_type(b"not json"), None);
        assert_eq!(problem_type(br#"{"detail":"no type"}"#), None);
        let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(500));
        assert_eq!(problem_type(long.as_bytes()).unwrap().len(), 64);
    }
}
