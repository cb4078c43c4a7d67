//! Revocation jobs over WorkerService: an operator revocation (`RevokeCertificate`) queued a
//! job in the store; workers lease it next to order jobs, call the issuing CA's ACME
//! `revokeCert`, and report the outcome here.

use ragw_domain::ErrorClass;
use ragw_proto::registrar::v1 as pb;
use ragw_runtime::identity::Role;
use ragw_store::LeasedRevocation;
use tonic::{Request, Response, Status};

use crate::Registrar;
use crate::auth::store_status;

/// The RFC 5280 CRLReason code for an operator's reason, restricted to the codes RFC 8555 CAs
/// accept for revokeCert (0, 1, 3, 4, 5, 9): any other text revokes as `unspecified` (0), so a
/// free-text reason never keeps a certificate off the CRL.
pub(crate) fn reason_code(reason: &str) -> u32 {
    match reason.trim() {
        r if r.eq_ignore_ascii_case("keyCompromise") => 1,
        r if r.eq_ignore_ascii_case("affiliationChanged") => 3,
        r if r.eq_ignore_ascii_case("superseded") => 4,
        r if r.eq_ignore_ascii_case("cessationOfOperation") => 5,
        r if r.eq_ignore_ascii_case("privilegeWithdrawn") => 9,
        _ => 0,
    }
}

pub(crate) fn revocation_to_pb(r: &LeasedRevocation, lease_seconds: u32) -> pb::RevocationJob {
    pb::RevocationJob {
        serial_hex: r.job.serial_hex.clone(),
        lease_token: r.lease_token.clone(),
        lease_deadline_unix_micros: r.lease_expires,
        lease_seconds,
        certificate_der: r.certificate_der.clone(),
        profile: r.profile.clone(),
        reason_code: reason_code(&r.job.reason),
        attempt: i32::try_from(r.job.attempts).unwrap_or(i32::MAX),
    }
}

fn check_revocation_ref(serial: &str, token: &str) -> Result<(), Status> {
    if serial.is_empty() || serial.len() > 64 || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument(
            "serial_hex is missing, too long or not hex",
        ));
    }
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument(
            "lease_token is not a token this registrar issued",
        ));
    }
    Ok(())
}

impl Registrar {
    pub(crate) async fn complete_revocation_rpc(
        &self,
        request: Request<pb::CompleteRevocationRequest>,
    ) -> Result<Response<pb::CompleteRevocationResponse>, Status> {
        let caller = self
            .authorize(&request, "CompleteRevocation", &[Role::Worker])
            .await?;
        let actor = caller.actor();
        let req = request.into_inner();
        if let Err(s) = check_revocation_ref(&req.serial_hex, &req.lease_token) {
            return Err(self.refuse(&actor, "CompleteRevocation", s, "").await);
        }
        self.store
            .complete_revocation(
                &req.serial_hex,
                &req.lease_token,
                &actor,
                req.already_revoked,
            )
            .await
            .map_err(store_status)?;
        self.metrics.rpc("CompleteRevocation", "ok");
        Ok(Response::new(pb::CompleteRevocationResponse {}))
    }

    pub(crate) async fn fail_revocation_rpc(
        &self,
        request: Request<pb::FailRevocationRequest>,
    ) -> Result<Response<pb::FailRevocationResponse>, Status> {
        let caller = self
            .authorize(&request, "FailRevocation", &[Role::Worker])
            .await?;
        let actor = caller.actor();
        let req = request.into_inner();
        if let Err(s) = check_revocation_ref(&req.serial_hex, &req.lease_token) {
            return Err(self.refuse(&actor, "FailRevocation", s, "").await);
        }
        let problem = req.problem.as_ref();
        if let Err(s) = crate::worker::check_failure_text(&req.detail, problem) {
            return Err(self.refuse(&actor, "FailRevocation", s, "").await);
        }
        let job = self
            .store
            .get_revocation_job(&req.serial_hex)
            .await
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "the lease on the revocation of {} is no longer held by this worker",
                    req.serial_hex
                ))
            })?;
        let outcome = crate::worker::failure_outcome(
            job.attempts,
            req.retry_after_seconds,
            &req.detail,
            problem,
            req.retryable,
            ErrorClass::InternalCaError,
            self.settings.max_attempts,
        );
        let after = self
            .store
            .fail_revocation(&req.serial_hex, &req.lease_token, &actor, outcome)
            .await
            .map_err(store_status)?;
        self.metrics.rpc("FailRevocation", "ok");
        Ok(Response::new(pb::FailRevocationResponse {
            gave_up: after.state == ragw_store::RevocationState::Failed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_map_to_codes_a_ca_accepts() {
        assert_eq!(reason_code("keyCompromise"), 1);
        assert_eq!(reason_code("KeyCompromise"), 1);
        assert_eq!(reason_code("superseded"), 4);
        assert_eq!(reason_code("cessationOfOperation"), 5);
        assert_eq!(reason_code("decommissioned"), 0);
        // cACompromise (2) is not accepted by revokeCert: revoked as unspecified instead.
        assert_eq!(reason_code("cACompromise"), 0);
    }
}
