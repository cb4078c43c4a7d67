//! Revocation jobs: an operator's revocation (`ragw admin revoke-cert`) is queued in the same
//! transaction that marks the registrar's certificate row revoked, and a worker leases it to
//! call the issuing CA's ACME `revokeCert`, so the CA (and its CRL) learns of it too.

use ragw_domain::AuditDraft;
use rand::Rng;
use serde_json::json;

use crate::logic::{Tx, split_chain};
use crate::sql::{Conn, Dialect, Row};
use crate::{CertificateRecord, FailOutcome, Result, StoreError};

/// Where a revocation job is on its way to the issuing CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationState {
    /// Waiting for a worker (first time, or again after a retryable failure).
    Queued,
    /// Leased by a worker.
    Revoking,
    /// The CA answered that the certificate is revoked (now or already before).
    Done,
    /// Given up: a definitive refusal, or too many attempts.
    Failed,
}

impl RevocationState {
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationState::Queued => "queued",
            RevocationState::Revoking => "revoking",
            RevocationState::Done => "done",
            RevocationState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RevocationState::Queued,
            "revoking" => RevocationState::Revoking,
            "done" => RevocationState::Done,
            "failed" => RevocationState::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationJobRecord {
    pub serial_hex: String,
    /// The reason as the operator gave it (an RFC 5280 reason name such as `keyCompromise`).
    pub reason: String,
    pub state: RevocationState,
    pub attempts: i64,
    pub not_before: i64,
    pub lease_owner: Option<String>,
    pub lease_expires: Option<i64>,
    pub failure_detail: Option<String>,
    pub created: i64,
    pub updated: i64,
}

/// A revocation job handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedRevocation {
    pub job: RevocationJobRecord,
    /// The profile the certificate was issued for: it selects the upstream CA.
    pub profile: String,
    /// The end-entity certificate, DER, as the CA issued it.
    pub certificate_der: Vec<u8>,
    pub lease_token: String,
    pub lease_expires: i64,
}

const JOB_COLUMNS: &str = "serial_hex, reason, state, attempts, not_before, lease_owner, lease_expires, \
     failure_detail, created, updated FROM revocation_jobs";

fn job_from_row(row: &Row) -> Result<RevocationJobRecord> {
    let state_text = row.text(2)?;
    let state = RevocationState::parse(&state_text)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown revocation state {state_text:?}")))?;
    Ok(RevocationJobRecord {
        serial_hex: row.text(0)?,
        reason: row.text(1)?,
        state,
        attempts: row.int(3)?,
        not_before: row.int(4)?,
        lease_owner: row.opt_text(5)?,
        lease_expires: row.opt_int(6)?,
        failure_detail: row.opt_text(7)?,
        created: row.int(8)?,
        updated: row.int(9)?,
    })
}

pub(crate) async fn get_revocation_job<C: Conn>(
    tx: &mut Tx<C>,
    serial_hex: &str,
) -> Result<Option<RevocationJobRecord>> {
    let rows =
        tx.c.query(
            &format!("SELECT {JOB_COLUMNS} WHERE serial_hex = $1"),
            &[serial_hex.to_ascii_lowercase().into()],
        )
        .await?;
    rows.first().map(job_from_row).transpose()
}

async fn must_get_job<C: Conn>(tx: &mut Tx<C>, serial_hex: &str) -> Result<RevocationJobRecord> {
    get_revocation_job(tx, serial_hex)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("revocation job for serial {serial_hex}")))
}

/// Queues the revocation of `cert` at its CA; called by `revoke_certificate` in its transaction.
pub(crate) async fn queue_revocation<C: Conn>(
    tx: &mut Tx<C>,
    cert: &CertificateRecord,
    actor: &str,
    reason: &str,
) -> Result<()> {
    let now = tx.now;
    tx.c.exec(
        "INSERT INTO revocation_jobs (serial_hex, reason, state, created, updated, attempts, not_before) \
         VALUES ($1, $2, 'queued', $3, $3, 0, $3)",
        &[(&cert.serial_hex).into(), reason.into(), now.into()],
    )
    .await?;
    tx.audit(
        AuditDraft::new(actor, "certificate.revocation_queued")
            .device(cert.device.key())
            .enrollment(&cert.enrollment_id)
            .details(json!({"serial": cert.serial_hex, "reason": reason})),
    )
    .await?;
    Ok(())
}

/// The device and enrollment of a certificate, for the audit events of its revocation job.
async fn certificate_owner<C: Conn>(
    tx: &mut Tx<C>,
    serial_hex: &str,
) -> Result<(String, String, String, Vec<u8>)> {
    let rows =
        tx.c.query(
            "SELECT c.device_id, c.enrollment_id, e.profile, c.chain_der FROM certificates c \
             JOIN enrollments e ON e.id = c.enrollment_id WHERE c.serial_hex = $1",
            &[serial_hex.into()],
        )
        .await?;
    let row = rows.first().ok_or_else(|| {
        StoreError::Corrupt(format!("revocation job for unknown serial {serial_hex}"))
    })?;
    let leaf = split_chain(&row.blob(3)?)?
        .into_iter()
        .next()
        .ok_or_else(|| {
            StoreError::Corrupt(format!("certificate {serial_hex} has an empty chain"))
        })?;
    Ok((row.text(0)?, row.text(1)?, row.text(2)?, leaf))
}

/// Leases up to `max` ready revocation jobs: queued and due, or leased with an expired lease.
pub(crate) async fn lease_revocations<C: Conn>(
    tx: &mut Tx<C>,
    worker: &str,
    max: u32,
    lease_micros: i64,
) -> Result<Vec<LeasedRevocation>> {
    let lock = match tx.c.dialect() {
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        Dialect::Sqlite => "",
    };
    let now = tx.now;
    let rows = tx
        .c
        .query(
            &format!(
                "SELECT serial_hex FROM revocation_jobs WHERE (state = 'queued' AND not_before <= $1) \
                 OR (state = 'revoking' AND lease_expires < $1) ORDER BY not_before, serial_hex LIMIT $2{lock}"
            ),
            &[now.into(), i64::from(max.clamp(1, 100)).into()],
        )
        .await?;
    let mut leased = Vec::new();
    for row in &rows {
        let serial = row.text(0)?;
        let before = must_get_job(tx, &serial).await?;
        let token = hex::encode(rand::rng().random::<[u8; 16]>());
        let expires = now.saturating_add(lease_micros);
        tx.c.exec(
            "UPDATE revocation_jobs SET state = 'revoking', lease_owner = $1, lease_token = $2, lease_expires = $3, \
             attempts = attempts + 1, updated = $4 WHERE serial_hex = $5",
            &[worker.into(), (&token).into(), expires.into(), now.into(), (&serial).into()],
        )
        .await?;
        let (device, enrollment, profile, leaf) = certificate_owner(tx, &serial).await?;
        tx.audit(
            AuditDraft::new(worker, "certificate.revocation_leased")
                .device(device)
                .enrollment(enrollment)
                .details(json!({
                    "serial": serial,
                    "attempt": before.attempts + 1,
                    "lease_expires": expires,
                    "previous_worker": if before.state == RevocationState::Revoking { before.lease_owner.clone() } else { None },
                })),
        )
        .await?;
        leased.push(LeasedRevocation {
            job: must_get_job(tx, &serial).await?,
            profile,
            certificate_der: leaf,
            lease_token: token,
            lease_expires: expires,
        });
    }
    Ok(leased)
}

/// The job, if `token` is its current lease.
async fn leased_job<C: Conn>(
    tx: &mut Tx<C>,
    serial_hex: &str,
    token: &str,
) -> Result<RevocationJobRecord> {
    let serial = serial_hex.to_ascii_lowercase();
    let rows =
        tx.c.query(
            "SELECT 1 FROM revocation_jobs WHERE serial_hex = $1 AND state = 'revoking' AND lease_token = $2",
            &[(&serial).into(), token.into()],
        )
        .await?;
    if rows.is_empty() {
        // Unknown serials are reported like a lost lease: a worker learns nothing from the
        // difference, and either way it must stop.
        return Err(StoreError::LeaseLost(format!("revocation of {serial}")));
    }
    must_get_job(tx, &serial).await
}

/// The CA has the certificate revoked; `already_revoked` when it answered `alreadyRevoked`.
pub(crate) async fn complete_revocation<C: Conn>(
    tx: &mut Tx<C>,
    serial_hex: &str,
    token: &str,
    worker: &str,
    already_revoked: bool,
) -> Result<RevocationJobRecord> {
    let current = get_revocation_job(tx, serial_hex).await?;
    if let Some(done) = current.filter(|j| j.state == RevocationState::Done) {
        // A worker that lost the answer to its report retries it: same outcome.
        return Ok(done);
    }
    let job = leased_job(tx, serial_hex, token).await?;
    let now = tx.now;
    tx.c.exec(
        "UPDATE revocation_jobs SET state = 'done', lease_owner = NULL, lease_token = NULL, lease_expires = NULL, \
         failure_detail = NULL, updated = $1 WHERE serial_hex = $2",
        &[now.into(), (&job.serial_hex).into()],
    )
    .await?;
    let (device, enrollment, _, _) = certificate_owner(tx, &job.serial_hex).await?;
    tx.audit(
        AuditDraft::new(worker, "certificate.revoked_at_ca")
            .device(device)
            .enrollment(enrollment)
            .details(json!({
                "serial": job.serial_hex,
                "reason": job.reason,
                "attempt": job.attempts,
                "already_revoked": already_revoked,
            })),
    )
    .await?;
    must_get_job(tx, &job.serial_hex).await
}

/// The CA call failed: queued again at `outcome.retry_at`, or failed for good when the failure
/// is not retryable or `outcome.max_attempts` were made.
pub(crate) async fn fail_revocation<C: Conn>(
    tx: &mut Tx<C>,
    serial_hex: &str,
    token: &str,
    worker: &str,
    outcome: &FailOutcome,
) -> Result<RevocationJobRecord> {
    let job = leased_job(tx, serial_hex, token).await?;
    let give_up = !outcome.retryable || job.attempts >= outcome.max_attempts;
    let now = tx.now;
    if give_up {
        tx.c.exec(
            "UPDATE revocation_jobs SET state = 'failed', failure_detail = $1, lease_owner = NULL, lease_token = NULL, \
             lease_expires = NULL, updated = $2 WHERE serial_hex = $3",
            &[(&outcome.detail).into(), now.into(), (&job.serial_hex).into()],
        )
        .await?;
    } else {
        tx.c.exec(
            "UPDATE revocation_jobs SET state = 'queued', not_before = $1, failure_detail = $2, lease_owner = NULL, \
             lease_token = NULL, lease_expires = NULL, updated = $3 WHERE serial_hex = $4",
            &[
                outcome.retry_at.into(),
                (&outcome.detail).into(),
                now.into(),
                (&job.serial_hex).into(),
            ],
        )
        .await?;
    }
    let (device, enrollment, _, _) = certificate_owner(tx, &job.serial_hex).await?;
    tx.audit(
        AuditDraft::new(worker, "certificate.revocation_failed")
            .device(device)
            .enrollment(enrollment)
            .details(json!({
                "serial": job.serial_hex,
                "detail": outcome.detail,
                "class": outcome.class.as_str(),
                "retryable": outcome.retryable,
                "attempt": job.attempts,
                "acme_problem": outcome.acme_problem,
                "retry_at": if give_up { None } else { Some(outcome.retry_at) },
                "gave_up": give_up,
            })),
    )
    .await?;
    must_get_job(tx, &job.serial_hex).await
}
