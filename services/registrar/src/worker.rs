//! WorkerService: ACME workers lease jobs, report the order URL, and hand back a chain or a
//! failure.

use std::time::{Duration, Instant};

use der::{Decode, Encode};
use ragw_domain::ErrorClass;
use ragw_proto::registrar::v1 as pb;
use ragw_runtime::identity::Role;
use ragw_store::{EnrollmentRecord, FailOutcome, IssuedCertificate};
use serde_json::json;
use tonic::{Request, Response, Status};
use x509_cert::Certificate;
use x509_cert::request::CertReq;

use crate::Registrar;
use crate::auth::store_status;
use crate::convert::state_to_pb;

const MAX_CHAIN_LEN: usize = 8;
const MAX_CERT_DER_LEN: usize = 16 * 1024;
const MAX_TEXT: usize = 4096;

/// How a worker's failure report (of an order or a revocation) is stored: retried after the
/// attempt's backoff or the CA's Retry-After, whichever is longer.
pub(crate) fn failure_outcome(
    attempts: i64,
    retry_after_seconds: u32,
    detail: &str,
    problem: Option<&pb::AcmeProblem>,
    retryable: bool,
    class: ErrorClass,
    max_attempts: i64,
) -> FailOutcome {
    let wait = backoff(attempts).max(Duration::from_secs(u64::from(retry_after_seconds)));
    let retry_at = now_micros().saturating_add(i64::try_from(wait.as_micros()).unwrap_or(i64::MAX));
    let detail = if detail.is_empty() {
        problem
            .map(|p| p.detail.clone())
            .unwrap_or_else(|| "the worker reported a failure".into())
    } else {
        detail.to_string()
    };
    FailOutcome {
        retryable,
        detail,
        class,
        retry_at,
        max_attempts,
        acme_problem: problem
            .map(|p| json!({"type": p.r#type, "detail": p.detail, "status": p.status})),
    }
}

/// A worker's failure report (of an order or a revocation) keeps its texts bounded.
pub(crate) fn check_failure_text(
    detail: &str,
    problem: Option<&pb::AcmeProblem>,
) -> Result<(), Status> {
    let too_long = detail.len() > MAX_TEXT
        || problem.is_some_and(|p| p.r#type.len() > 256 || p.detail.len() > MAX_TEXT);
    if too_long {
        return Err(Status::invalid_argument(
            "detail or problem fields exceed 4096 bytes",
        ));
    }
    Ok(())
}
const POLL: Duration = Duration::from_millis(250);

/// What the registrar reads off an issued certificate.
pub(crate) struct CertFacts {
    pub serial_hex: String,
    pub not_before: i64,
    pub not_after: i64,
    pub spki_der: Vec<u8>,
}

pub(crate) fn certificate_facts(der: &[u8]) -> Result<CertFacts, String> {
    let cert =
        Certificate::from_der(der).map_err(|e| format!("not a DER X.509 certificate: {e}"))?;
    let tbs = cert.tbs_certificate();
    let micros = |t: &x509_cert::time::Time| -> i64 {
        i64::try_from(t.to_unix_duration().as_micros()).unwrap_or(i64::MAX)
    };
    Ok(CertFacts {
        serial_hex: hex::encode(tbs.serial_number().as_bytes()),
        not_before: micros(&tbs.validity().not_before),
        not_after: micros(&tbs.validity().not_after),
        spki_der: tbs
            .subject_public_key_info()
            .to_der()
            .map_err(|e| format!("certificate public key: {e}"))?,
    })
}

fn csr_spki(csr_der: &[u8]) -> Result<Vec<u8>, String> {
    let csr = CertReq::from_der(csr_der).map_err(|e| format!("stored CSR unreadable: {e}"))?;
    csr.info
        .public_key
        .to_der()
        .map_err(|e| format!("stored CSR public key: {e}"))
}

pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Exponential backoff for retryable failures: 10 s, 20 s, 40 s … capped at one hour.
pub(crate) fn backoff(attempt: i64) -> Duration {
    let exp = attempt.clamp(1, 20) as u32 - 1;
    Duration::from_secs(10u64.saturating_mul(1u64 << exp.min(12))).min(Duration::from_secs(3600))
}

fn job_to_pb(
    e: &EnrollmentRecord,
    token: &str,
    expires: i64,
    lease_seconds: u32,
    ekus: Vec<String>,
) -> pb::Job {
    pb::Job {
        ekus,
        lease_seconds,
        enrollment_id: e.id.clone(),
        lease_token: token.to_string(),
        lease_deadline_unix_micros: expires,
        csr_der: e.csr_der.clone(),
        names: e.names.clone(),
        profile: e.profile.clone(),
        parent_domain: e.parent_domain.clone(),
        acme_order_url: e.acme_order_url.clone().unwrap_or_default(),
        attempt: i32::try_from(e.attempts).unwrap_or(i32::MAX),
    }
}

fn check_lease_ref(id: &str, token: &str) -> Result<(), Status> {
    if id.is_empty() || id.len() > 64 {
        return Err(Status::invalid_argument(
            "enrollment_id is missing or too long",
        ));
    }
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument(
            "lease_token is not a token this registrar issued",
        ));
    }
    Ok(())
}

/// The audit action of a worker step, or why the request is refused.
fn step_action(step: i32) -> Result<&'static str, Status> {
    match pb::WorkerStep::try_from(step) {
        Ok(pb::WorkerStep::AccountCreated) => Ok("worker.account_created"),
        Ok(pb::WorkerStep::ParentPreauthorized) => Ok("worker.parent_preauthorized"),
        Ok(pb::WorkerStep::ChallengePublished) => Ok("worker.challenge_published"),
        Ok(pb::WorkerStep::ChallengeRemoved) => Ok("worker.challenge_removed"),
        Ok(pb::WorkerStep::Unspecified) | Err(_) => Err(Status::invalid_argument(format!(
            "step {step} is not a worker step this registrar records"
        ))),
    }
}

/// Text fields of a step: bounded and free of control characters, so the audit log stays
/// readable whatever a worker sends.
fn check_step_text(field: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.len() > max {
        return Err(Status::invalid_argument(format!(
            "{field} is longer than {max} bytes"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "{field} contains control characters"
        )));
    }
    Ok(())
}

impl Registrar {
    fn lease_micros(&self, requested: u32) -> i64 {
        i64::try_from(self.lease_granted(requested).as_micros()).unwrap_or(i64::MAX)
    }

    /// The lease a worker gets for `requested` seconds: at least 10 s, at most `max_lease`.
    fn lease_granted(&self, requested: u32) -> Duration {
        Duration::from_secs(u64::from(requested.max(10))).min(self.settings.max_lease)
    }
}

#[tonic::async_trait]
impl pb::worker_service_server::WorkerService for Registrar {
    async fn lease(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        let caller = self.authorize(&request, "Lease", &[Role::Worker]).await?;
        let req = request.into_inner();
        if req.worker_id.len() > 128 {
            return Err(self
                .refuse(
                    &caller.actor(),
                    "Lease",
                    Status::invalid_argument("worker_id is longer than 128 bytes"),
                    "",
                )
                .await);
        }
        let worker = if req.worker_id.is_empty() {
            caller.actor()
        } else {
            format!("{}/{}", caller.actor(), req.worker_id)
        };
        let max = req.max_jobs.clamp(1, 100);
        let lease = self.lease_micros(req.lease_seconds);
        let granted =
            u32::try_from(self.lease_granted(req.lease_seconds).as_secs()).unwrap_or(u32::MAX);
        let deadline = Instant::now()
            + Duration::from_millis(u64::from(req.wait_millis)).min(self.settings.max_wait);
        loop {
            let notified = self.changed.notified();
            let jobs = self
                .store
                .lease_jobs(&worker, max, lease)
                .await
                .map_err(store_status)?;
            // Only workers that say they handle revocation jobs get them.
            let revocations = if req.max_revocations > 0 {
                self.store
                    .lease_revocations(&worker, req.max_revocations.min(100), lease)
                    .await
                    .map_err(store_status)?
            } else {
                Vec::new()
            };
            let now = Instant::now();
            if !jobs.is_empty() || !revocations.is_empty() || now >= deadline {
                self.metrics.jobs_leased.inc_by(jobs.len() as u64);
                self.metrics.rpc("Lease", "ok");
                if !jobs.is_empty() {
                    self.notify_change();
                }
                return Ok(Response::new(pb::LeaseResponse {
                    jobs: jobs
                        .iter()
                        .map(|j| {
                            job_to_pb(
                                &j.enrollment,
                                &j.lease_token,
                                j.lease_expires,
                                granted,
                                self.profile_ekus(&j.enrollment.profile),
                            )
                        })
                        .collect(),
                    revocations: revocations
                        .iter()
                        .map(|r| crate::revocation::revocation_to_pb(r, granted))
                        .collect(),
                }));
            }
            let _ = tokio::time::timeout((deadline - now).min(POLL), notified).await;
        }
    }

    async fn extend(
        &self,
        request: Request<pb::ExtendRequest>,
    ) -> Result<Response<pb::ExtendResponse>, Status> {
        let caller = self.authorize(&request, "Extend", &[Role::Worker]).await?;
        let req = request.into_inner();
        if let Err(s) = check_lease_ref(&req.enrollment_id, &req.lease_token) {
            return Err(self.refuse(&caller.actor(), "Extend", s, "").await);
        }
        let expires = self
            .store
            .extend_lease(
                &req.enrollment_id,
                &req.lease_token,
                self.lease_micros(req.lease_seconds),
            )
            .await
            .map_err(store_status)?;
        self.metrics.rpc("Extend", "ok");
        Ok(Response::new(pb::ExtendResponse {
            lease_deadline_unix_micros: expires,
            lease_seconds: u32::try_from(self.lease_granted(req.lease_seconds).as_secs())
                .unwrap_or(u32::MAX),
        }))
    }

    async fn record_order(
        &self,
        request: Request<pb::RecordOrderRequest>,
    ) -> Result<Response<pb::RecordOrderResponse>, Status> {
        let caller = self
            .authorize(&request, "RecordOrder", &[Role::Worker])
            .await?;
        let req = request.into_inner();
        if let Err(s) = check_lease_ref(&req.enrollment_id, &req.lease_token) {
            return Err(self.refuse(&caller.actor(), "RecordOrder", s, "").await);
        }
        let url_ok = req.acme_order_url.len() <= 2048
            && (req.acme_order_url.starts_with("https://")
                || req.acme_order_url.starts_with("http://"));
        if !url_ok {
            return Err(self
                .refuse(
                    &caller.actor(),
                    "RecordOrder",
                    Status::invalid_argument(
                        "acme_order_url must be an http(s) URL of at most 2048 bytes",
                    ),
                    "",
                )
                .await);
        }
        self.store
            .record_order(&req.enrollment_id, &req.lease_token, &req.acme_order_url)
            .await
            .map_err(store_status)?;
        self.metrics.rpc("RecordOrder", "ok");
        Ok(Response::new(pb::RecordOrderResponse {}))
    }

    async fn record_step(
        &self,
        request: Request<pb::RecordStepRequest>,
    ) -> Result<Response<pb::RecordStepResponse>, Status> {
        let caller = self
            .authorize(&request, "RecordStep", &[Role::Worker])
            .await?;
        let actor = caller.actor();
        let req = request.into_inner();
        let in_job = !req.enrollment_id.is_empty() || !req.lease_token.is_empty();
        let checked = step_action(req.step).and_then(|action| {
            if in_job {
                check_lease_ref(&req.enrollment_id, &req.lease_token)?;
            }
            check_step_text("directory_url", &req.directory_url, 2048)?;
            check_step_text("subject", &req.subject, 2048)?;
            check_step_text("detail", &req.detail, 2048)?;
            check_step_text("worker_id", &req.worker_id, 128)?;
            Ok(action)
        });
        let action = match checked {
            Ok(a) => a,
            Err(s) => return Err(self.refuse(&actor, "RecordStep", s, "").await),
        };
        let mut details = json!({
            "claimed_worker_id": req.worker_id,
            "directory_url": req.directory_url,
            "subject": req.subject,
        });
        if !req.detail.is_empty() {
            details["detail"] = json!(req.detail);
        }
        if req.expires_unix_micros != 0 {
            details["expires_unix_micros"] = json!(req.expires_unix_micros);
        }
        let draft = ragw_domain::AuditDraft::new(actor, action).details(details);
        let appended = if in_job {
            self.store
                .append_job_audit(&req.enrollment_id, &req.lease_token, draft)
                .await
        } else {
            self.store.append_audit(draft).await
        };
        appended.map_err(store_status)?;
        self.metrics.rpc("RecordStep", "ok");
        Ok(Response::new(pb::RecordStepResponse {}))
    }

    async fn complete(
        &self,
        request: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::CompleteResponse>, Status> {
        let caller = self
            .authorize(&request, "Complete", &[Role::Worker])
            .await?;
        let req = request.into_inner();
        let actor = caller.actor();
        if let Err(s) = check_lease_ref(&req.enrollment_id, &req.lease_token) {
            return Err(self.refuse(&actor, "Complete", s, "").await);
        }
        if req.certificate_chain.is_empty() || req.certificate_chain.len() > MAX_CHAIN_LEN {
            return Err(self
                .refuse(
                    &actor,
                    "Complete",
                    Status::invalid_argument(format!(
                        "certificate_chain must hold 1 to {MAX_CHAIN_LEN} certificates, not {}",
                        req.certificate_chain.len()
                    )),
                    "",
                )
                .await);
        }
        for (i, c) in req.certificate_chain.iter().enumerate() {
            let problem = if c.len() > MAX_CERT_DER_LEN {
                Some(format!(
                    "certificate_chain[{i}] is {} bytes; at most {MAX_CERT_DER_LEN}",
                    c.len()
                ))
            } else {
                certificate_facts(c)
                    .err()
                    .map(|e| format!("certificate_chain[{i}]: {e}"))
            };
            if let Some(p) = problem {
                return Err(self
                    .refuse(&actor, "Complete", Status::invalid_argument(p), "")
                    .await);
            }
        }
        // The CA part of the newest chain becomes what gateways serve as /cacerts, so a chain
        // whose links do not hold is refused here rather than handed to every device.
        if let Err(e) = ragw_pki::check_chain(&req.certificate_chain) {
            return Err(self
                .refuse(
                    &actor,
                    "Complete",
                    Status::invalid_argument(format!("certificate_chain: {e}")),
                    "",
                )
                .await);
        }
        let enrollment = self
            .store
            .get_enrollment(&req.enrollment_id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::not_found(format!("enrollment {} not found", req.enrollment_id))
            })?;
        let facts =
            certificate_facts(&req.certificate_chain[0]).map_err(Status::invalid_argument)?;
        // The certificate must certify the key the device proved it holds.
        let spki = csr_spki(&enrollment.csr_der).map_err(Status::internal)?;
        if spki != facts.spki_der {
            return Err(self
                .refuse(
                    &actor,
                    "Complete",
                    Status::invalid_argument(
                        "certificate_chain[0] does not certify the key in the device's CSR",
                    ),
                    &enrollment.device.key(),
                )
                .await);
        }
        self.store
            .complete(
                &req.enrollment_id,
                &req.lease_token,
                &actor,
                IssuedCertificate {
                    serial_hex: facts.serial_hex,
                    not_before: facts.not_before,
                    not_after: facts.not_after,
                    chain: req.certificate_chain,
                },
            )
            .await
            .map_err(store_status)?;
        self.metrics.certificates_recorded.inc();
        self.metrics.rpc("Complete", "ok");
        self.notify_change();
        Ok(Response::new(pb::CompleteResponse {}))
    }

    async fn complete_revocation(
        &self,
        request: Request<pb::CompleteRevocationRequest>,
    ) -> Result<Response<pb::CompleteRevocationResponse>, Status> {
        self.complete_revocation_rpc(request).await
    }

    async fn fail_revocation(
        &self,
        request: Request<pb::FailRevocationRequest>,
    ) -> Result<Response<pb::FailRevocationResponse>, Status> {
        self.fail_revocation_rpc(request).await
    }

    async fn fail(
        &self,
        request: Request<pb::FailRequest>,
    ) -> Result<Response<pb::FailResponse>, Status> {
        let caller = self.authorize(&request, "Fail", &[Role::Worker]).await?;
        let req = request.into_inner();
        let actor = caller.actor();
        if let Err(s) = check_lease_ref(&req.enrollment_id, &req.lease_token) {
            return Err(self.refuse(&actor, "Fail", s, "").await);
        }
        let problem = req.problem.as_ref();
        if let Err(s) = check_failure_text(&req.detail, problem) {
            return Err(self.refuse(&actor, "Fail", s, "").await);
        }
        let class = problem
            .map(|p| ErrorClass::from_acme_problem(&p.r#type))
            .unwrap_or(ErrorClass::InternalCaError);
        let enrollment = self
            .store
            .get_enrollment(&req.enrollment_id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| {
                Status::not_found(format!("enrollment {} not found", req.enrollment_id))
            })?;
        let outcome = failure_outcome(
            enrollment.attempts,
            req.retry_after_seconds,
            &req.detail,
            problem,
            req.retryable,
            class,
            self.settings.max_attempts,
        );
        let e = self
            .store
            .fail(&req.enrollment_id, &req.lease_token, &actor, outcome)
            .await
            .map_err(store_status)?;
        self.metrics.rpc("Fail", "ok");
        self.notify_change();
        Ok(Response::new(pb::FailResponse {
            state: state_to_pb(e.state) as i32,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(100), Duration::from_secs(3600));
        assert_eq!(backoff(0), Duration::from_secs(10));
    }
}
