//! The enrollment lifecycle:
//! `received → rejected | awaiting_approval → approved → queued → ordering → issued | failed`.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnrollmentState {
    Received,
    Rejected,
    AwaitingApproval,
    Approved,
    Queued,
    Ordering,
    Issued,
    Failed,
}

impl EnrollmentState {
    pub const ALL: [EnrollmentState; 8] = [
        EnrollmentState::Received,
        EnrollmentState::Rejected,
        EnrollmentState::AwaitingApproval,
        EnrollmentState::Approved,
        EnrollmentState::Queued,
        EnrollmentState::Ordering,
        EnrollmentState::Issued,
        EnrollmentState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EnrollmentState::Received => "received",
            EnrollmentState::Rejected => "rejected",
            EnrollmentState::AwaitingApproval => "awaiting_approval",
            EnrollmentState::Approved => "approved",
            EnrollmentState::Queued => "queued",
            EnrollmentState::Ordering => "ordering",
            EnrollmentState::Issued => "issued",
            EnrollmentState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EnrollmentState::Rejected | EnrollmentState::Issued | EnrollmentState::Failed
        )
    }

    /// The only moves the lifecycle allows. `ordering → queued` is a retryable failure or an
    /// expired lease handed back; `ordering → ordering` is a re-lease by another worker.
    pub fn can_move_to(self, next: EnrollmentState) -> bool {
        use EnrollmentState::*;
        matches!(
            (self, next),
            (Received, Rejected)
                | (Received, AwaitingApproval)
                | (Received, Approved)
                | (AwaitingApproval, Approved)
                | (AwaitingApproval, Rejected)
                | (Approved, Queued)
                | (Queued, Ordering)
                | (Ordering, Ordering)
                | (Ordering, Queued)
                | (Ordering, Issued)
                | (Ordering, Failed)
        )
    }

    /// Audit action recorded when an enrollment enters this state.
    pub fn audit_action(self) -> &'static str {
        match self {
            EnrollmentState::Received => "enrollment.received",
            EnrollmentState::Rejected => "enrollment.rejected",
            EnrollmentState::AwaitingApproval => "enrollment.awaiting_approval",
            EnrollmentState::Approved => "enrollment.approved",
            EnrollmentState::Queued => "enrollment.queued",
            EnrollmentState::Ordering => "enrollment.ordering",
            EnrollmentState::Issued => "enrollment.issued",
            EnrollmentState::Failed => "enrollment.failed",
        }
    }
}

impl fmt::Display for EnrollmentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalMode {
    #[default]
    Auto,
    Manual,
}

/// The path a new enrollment takes from `received`, given the profile's approval mode and
/// whether an operator approved the device before (draft-sweet-iot-acme §3.4.4: once approved,
/// renewals pass until the approval is revoked).
pub fn initial_path(mode: ApprovalMode, device_approved: bool) -> &'static [EnrollmentState] {
    use EnrollmentState::*;
    match (mode, device_approved) {
        (ApprovalMode::Manual, false) => &[Received, AwaitingApproval],
        _ => &[Received, Approved, Queued],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Est,
    Teap,
    Admin,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Est => "est",
            Protocol::Teap => "teap",
            Protocol::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "est" => Some(Protocol::Est),
            "teap" => Some(Protocol::Teap),
            "admin" => Some(Protocol::Admin),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EnrollmentState::*;

    #[test]
    fn paths_only_take_allowed_moves() {
        for mode in [ApprovalMode::Auto, ApprovalMode::Manual] {
            for approved in [false, true] {
                let path = initial_path(mode, approved);
                assert_eq!(path[0], Received);
                for w in path.windows(2) {
                    assert!(w[0].can_move_to(w[1]), "{:?} -> {:?}", w[0], w[1]);
                }
            }
        }
        assert_eq!(
            initial_path(ApprovalMode::Manual, false).last(),
            Some(&AwaitingApproval)
        );
        assert_eq!(
            initial_path(ApprovalMode::Manual, true).last(),
            Some(&Queued)
        );
    }

    #[test]
    fn terminal_states_go_nowhere() {
        for from in EnrollmentState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in EnrollmentState::ALL {
                assert!(!from.can_move_to(to), "{from} -> {to}");
            }
        }
        assert!(!Queued.can_move_to(Issued));
        assert!(!AwaitingApproval.can_move_to(Queued));
    }

    #[test]
    fn names_round_trip() {
        for s in EnrollmentState::ALL {
            assert_eq!(EnrollmentState::parse(s.as_str()), Some(s));
        }
        assert_eq!(EnrollmentState::parse("nope"), None);
    }
}
