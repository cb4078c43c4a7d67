//! Revocation jobs: an operator revoked a certificate in the registrar; the worker revokes it
//! at the issuing CA with ACME `revokeCert`, signed with the account key (RFC 8555 §7.6: the
//! account that ordered it), and reports the outcome. `alreadyRevoked` is success: the CA's
//! state is what was asked for.

use instant_acme::{RevocationReason, RevocationRequest};
use ragw_proto::registrar::v1 as pb;
use rustls_pki_types::CertificateDer;

use super::{JobFailure, Worker};
use crate::WorkerError;

/// What became of one revocation job at the CA.
pub(super) enum RevocationOutcome {
    Revoked,
    AlreadyRevoked,
    Failed(JobFailure),
}

/// The ACME reason for an RFC 5280 CRLReason code; codes revokeCert does not accept are sent
/// as unspecified (the registrar already maps to accepted codes, this guards the wire).
fn acme_reason(code: u32) -> RevocationReason {
    match code {
        1 => RevocationReason::KeyCompromise,
        3 => RevocationReason::AffiliationChanged,
        4 => RevocationReason::Superseded,
        5 => RevocationReason::CessationOfOperation,
        9 => RevocationReason::PrivilegeWithdrawn,
        _ => RevocationReason::Unspecified,
    }
}

fn short_type(problem_type: &str) -> &str {
    problem_type.rsplit(':').next().unwrap_or_default()
}

/// Whether a failed revokeCert is worth retrying: a CA that is down, throttled or out of
/// nonces, yes; a CA that refuses this account or this certificate, no (it will refuse again).
fn revocation_failure(e: &WorkerError) -> JobFailure {
    let mut f = super::failure(e);
    if let WorkerError::Acme {
        problem_type,
        status,
        ..
    } = e
    {
        f.retryable = matches!(
            short_type(problem_type),
            "rateLimited" | "serverInternal" | "badNonce" | "connection"
        ) || *status >= 500
            || *status == 429;
    }
    f
}

impl Worker {
    pub(super) async fn revoke_at_ca(&self, job: &pb::RevocationJob) -> RevocationOutcome {
        let upstream = match self.upstream_for(&job.profile) {
            Ok(u) => u,
            Err(e) => return RevocationOutcome::Failed(revocation_failure(&e)),
        };
        if let Some(wait) = upstream.backing_off() {
            return RevocationOutcome::Failed(revocation_failure(&WorkerError::Acme {
                problem_type: "urn:ietf:params:acme:error:rateLimited".into(),
                detail: format!(
                    "the CA asked for a pause ({} s left); not contacted",
                    wait.as_secs().max(1)
                ),
                status: 429,
                retry_after: Some(wait),
            }));
        }
        let result = async {
            let (account, _) = upstream.account().await?;
            let der = CertificateDer::from(job.certificate_der.clone());
            account
                .revoke(&RevocationRequest {
                    certificate: &der,
                    reason: Some(acme_reason(job.reason_code)),
                })
                .await
                .map_err(WorkerError::from_acme)
        }
        .await;
        match result {
            Ok(()) => RevocationOutcome::Revoked,
            Err(WorkerError::Acme { problem_type, .. })
                if short_type(&problem_type) == "alreadyRevoked" =>
            {
                RevocationOutcome::AlreadyRevoked
            }
            Err(e) => {
                if let Some(wait) = e.retry_after() {
                    upstream.back_off(wait);
                }
                RevocationOutcome::Failed(revocation_failure(&e))
            }
        }
    }

    /// Revokes one certificate at its CA and reports the outcome, unless the lease ran out
    /// first (then the job is another worker's to do, and nothing is reported).
    pub(super) async fn work_revocation(
        &self,
        job: pb::RevocationJob,
        leased_at: std::time::Instant,
    ) {
        let deadline = leased_at + self.lease_length(job.lease_seconds);
        let outcome = match tokio::time::timeout_at(deadline.into(), self.revoke_at_ca(&job)).await
        {
            Ok(o) => o,
            Err(_) => {
                self.job_result("revocation_lease_lost");
                tracing::warn!(serial = %job.serial_hex, "the lease ran out before the CA answered; abandoning the revocation");
                return;
            }
        };
        let mut client = self.registrar.clone();
        let reported = match outcome {
            RevocationOutcome::Revoked | RevocationOutcome::AlreadyRevoked => {
                let already_revoked = matches!(outcome, RevocationOutcome::AlreadyRevoked);
                self.job_result("revoked");
                tracing::info!(serial = %job.serial_hex, already_revoked, "certificate revoked at the CA");
                client
                    .complete_revocation(pb::CompleteRevocationRequest {
                        serial_hex: job.serial_hex.clone(),
                        lease_token: job.lease_token.clone(),
                        already_revoked,
                    })
                    .await
                    .map(|_| ())
            }
            RevocationOutcome::Failed(f) => {
                self.job_result(if f.retryable {
                    "revocation_retry"
                } else {
                    "revocation_failed"
                });
                tracing::warn!(serial = %job.serial_hex, retryable = f.retryable, detail = %f.detail, "revokeCert failed");
                client
                    .fail_revocation(pb::FailRevocationRequest {
                        serial_hex: job.serial_hex.clone(),
                        lease_token: job.lease_token.clone(),
                        retryable: f.retryable,
                        retry_after_seconds: f.retry_after_seconds(),
                        problem: f.problem,
                        detail: f.detail.chars().take(4000).collect(),
                    })
                    .await
                    .map(|_| ())
            }
        };
        if let Err(s) = reported {
            tracing::error!(serial = %job.serial_hex, error = %s.message(), "could not report the revocation outcome");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme(problem: &str, status: u16) -> WorkerError {
        WorkerError::Acme {
            problem_type: format!("urn:ietf:params:acme:error:{problem}"),
            detail: "x".into(),
            status,
            retry_after: None,
        }
    }

    #[test]
    fn a_ca_that_refuses_the_revocation_is_not_asked_again() {
        assert!(!revocation_failure(&acme("unauthorized", 403)).retryable);
        assert!(!revocation_failure(&acme("malformed", 404)).retryable);
        assert!(!revocation_failure(&acme("badRevocationReason", 400)).retryable);
        assert!(revocation_failure(&acme("serverInternal", 500)).retryable);
        assert!(revocation_failure(&acme("rateLimited", 429)).retryable);
        assert!(revocation_failure(&WorkerError::Http("connection refused".into())).retryable);
    }

    #[test]
    fn reasons_outside_what_revoke_cert_accepts_go_as_unspecified() {
        assert!(matches!(acme_reason(1), RevocationReason::KeyCompromise));
        assert!(matches!(acme_reason(2), RevocationReason::Unspecified));
        assert!(matches!(acme_reason(0), RevocationReason::Unspecified));
    }
}
