//! The TEAP gateway's metrics, registered under the `teap` component of the shared registry.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use ragw_runtime::ops::MetricsRegistry;

use crate::radius::Code;
use crate::radius_server::{Action, DropReason};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// Cheap to clone: every clone counts into the same metrics.
#[derive(Clone, Default)]
pub struct TeapMetrics {
    requests: Family<CodeLabel, Counter>,
    replies: Family<CodeLabel, Counter>,
    drops: Family<ReasonLabel, Counter>,
    conversations_open: Gauge,
    // This gateway's share of `conversations_open` (the RadSec listener's gateway has its own,
    // see `for_another_gateway`), so two gateways add up instead of overwriting each other.
    own_open: Arc<AtomicI64>,
    decisions: Family<OutcomeLabel, Counter>,
    provisioning: Family<OutcomeLabel, Counter>,
    unaudited: Counter,
    passwords_not_checked: Family<ReasonLabel, Counter>,
    conversation_seconds: ConversationSeconds,
}

/// Whole conversations, EAP-Response/Identity to Access-Accept or -Reject, by outcome: 10 ms
/// to about 80 s, which covers a conversation held for an enrollment.
#[derive(Clone)]
struct ConversationSeconds(Family<OutcomeLabel, Histogram, fn() -> Histogram>);

impl Default for ConversationSeconds {
    fn default() -> Self {
        ConversationSeconds(Family::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 14))
        }))
    }
}

impl TeapMetrics {
    pub fn new() -> TeapMetrics {
        TeapMetrics::default()
    }

    pub fn register(&self, registry: &MetricsRegistry) {
        let r = registry.component("teap");
        r.register(
            "radius_requests",
            "RADIUS datagrams received, by packet code",
            self.requests.clone(),
        );
        r.register(
            "radius_replies",
            "RADIUS replies sent (retransmissions included), by packet code",
            self.replies.clone(),
        );
        r.register(
            "radius_drops",
            "RADIUS datagrams answered with silence, by reason",
            self.drops.clone(),
        );
        r.register(
            "conversations_open",
            "TEAP conversations in progress",
            self.conversations_open.clone(),
        );
        r.register(
            "decisions",
            "Finished TEAP authentications: accepted or rejected",
            self.decisions.clone(),
        );
        r.register(
            "provisioning",
            "Certificate provisioning inside TEAP: issued, failed, declined (offered but no \
             CSR came), not_offered, unavailable (the registrar gave no assignment)",
            self.provisioning.clone(),
        );
        r.register(
            "passwords_not_checked",
            "Passwords refused unchecked: user_backoff (the user name failed recently) or \
             global_bound (too many failed passwords this second)",
            self.passwords_not_checked.clone(),
        );
        r.register(
            "conversation_seconds",
            "TEAP conversations from EAP-Response/Identity to the final Access-Accept or \
             Access-Reject, by outcome (accepted, rejected)",
            self.conversation_seconds.0.clone(),
        );
        r.register(
            "unaudited_events",
            "Accepts or refusals not sent to the audit log because too many were in flight or \
             the per-NAS refusal budget was spent",
            self.unaudited.clone(),
        );
    }

    /// What the UDP shell did with one datagram (`received` is `None` for a completion).
    pub fn observe(&self, received: Option<&[u8]>, action: &Action) {
        if let Some(datagram) = received {
            let code = datagram
                .first()
                .and_then(|c| Code::from_u8(*c).ok())
                .map_or_else(|| "unknown".to_string(), code_name);
            self.requests.get_or_create(&CodeLabel { code }).inc();
        }
        match action {
            Action::Send(bytes) => {
                let code = bytes
                    .first()
                    .and_then(|c| Code::from_u8(*c).ok())
                    .map_or_else(|| "unknown".to_string(), code_name);
                self.replies.get_or_create(&CodeLabel { code }).inc();
            }
            Action::Drop(reason) => self.drop(drop_name(*reason)),
            Action::Deferred(_) => {}
        }
    }

    pub(crate) fn drop(&self, reason: &str) {
        self.drops
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub(crate) fn set_open(&self, open: usize) {
        let open = i64::try_from(open).unwrap_or(i64::MAX);
        let before = self.own_open.swap(open, Ordering::Relaxed);
        self.conversations_open.inc_by(open.saturating_sub(before));
    }

    /// The same metrics for a second gateway (the RadSec listener's): counters shared, its
    /// open conversations added to the gauge rather than replacing this one's.
    pub fn for_another_gateway(&self) -> TeapMetrics {
        TeapMetrics {
            own_open: Arc::default(),
            ..self.clone()
        }
    }

    pub(crate) fn decision(&self, accepted: bool) {
        let outcome = if accepted { "accepted" } else { "rejected" };
        self.decisions
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub(crate) fn conversation_finished(&self, accepted: bool, took: Duration) {
        let outcome = if accepted { "accepted" } else { "rejected" };
        self.conversation_seconds
            .0
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn provisioning(&self, outcome: &str) {
        self.provisioning
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub(crate) fn password_not_checked(&self, reason: &str) {
        self.passwords_not_checked
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub(crate) fn unaudited(&self) {
        self.unaudited.inc();
    }
}

fn code_name(code: Code) -> String {
    format!("{code:?}")
        .chars()
        .fold(String::new(), |mut out, c| {
            if c.is_ascii_uppercase() && !out.is_empty() {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            out
        })
}

fn drop_name(reason: DropReason) -> &'static str {
    match reason {
        DropReason::UnknownClient => "unknown_client",
        DropReason::Malformed => "malformed",
        DropReason::MissingMessageAuthenticator => "missing_message_authenticator",
        DropReason::BadMessageAuthenticator => "bad_message_authenticator",
        DropReason::UnsupportedCode => "unsupported_code",
        DropReason::DuplicateInProgress => "duplicate_in_progress",
        DropReason::ResponseEncodingFailed => "response_encoding_failed",
        DropReason::DiscardedByHandler => "discarded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_snake_case() {
        assert_eq!(code_name(Code::AccessChallenge), "access_challenge");
        assert_eq!(code_name(Code::StatusServer), "status_server");
    }
}

#[cfg(test)]
mod open_gauge_tests {
    use super::TeapMetrics;

    #[test]
    fn two_gateways_add_up_in_conversations_open() {
        let udp = TeapMetrics::new();
        let radsec = udp.for_another_gateway();
        udp.set_open(3);
        radsec.set_open(2);
        assert_eq!(udp.conversations_open.get(), 5);
        udp.set_open(1);
        assert_eq!(radsec.conversations_open.get(), 3);
        // A clone is the same gateway: it replaces, not adds.
        udp.clone().set_open(4);
        assert_eq!(udp.conversations_open.get(), 6);
    }
}
