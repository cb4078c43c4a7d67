//! ragw's persistence: one [`Store`] trait, a PostgreSQL backend (tokio-postgres with a pool,
//! leases with `FOR UPDATE SKIP LOCKED`) and an SQLite backend (rusqlite, WAL), sharing one
//! implementation of the logic and one conformance suite.
//!
//! Every mutating operation runs in one transaction that also appends its audit events, so a
//! state change and its audit record are stored together or not at all.

mod acme;
mod acme_logic;
mod logic;
pub mod postgres;
mod revocation;
mod schema;
pub mod sql;
mod sql_store;
pub mod sqlite;

#[cfg(any(test, feature = "test-support"))]
pub mod acme_conformance;
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;

use std::sync::Arc;

use async_trait::async_trait;
use ragw_domain::audit::ChainBreak;
use ragw_domain::{
    ApprovalMode, AuditDraft, AuditEvent, DeviceIdentity, EnrollmentState, ErrorClass, Protocol,
};
use thiserror::Error;

pub use acme::*;
pub use revocation::{LeasedRevocation, RevocationJobRecord, RevocationState};
pub use sql_store::SqlStore;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the lease on enrollment {0} is no longer held by this worker")]
    LeaseLost(String),
    #[error("database error: {0}")]
    Backend(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("schema migration failed: {0}")]
    Migration(String),
    /// A serialization failure or deadlock the store retries internally.
    #[error("transaction must be retried: {0}")]
    Retry(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database, and where.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Sqlite {
        path: std::path::PathBuf,
    },
    Postgres {
        /// `postgres://user@host:port/db` or a key=value connection string.
        url: String,
        /// Schema to create and use; `public` when `None`.
        schema: Option<String>,
        pool_size: usize,
    },
}

/// Opens the configured store and runs its migrations.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Store>> {
    match config {
        StoreConfig::Sqlite { path } => Ok(Arc::new(sqlite::open(path).await?)),
        StoreConfig::Postgres {
            url,
            schema,
            pool_size,
        } => Ok(Arc::new(
            postgres::open(url, schema.as_deref(), *pool_size).await?,
        )),
    }
}

/// A device's label for one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelAssignment {
    pub device: DeviceIdentity,
    pub profile: String,
    pub parent_domain: String,
    pub label: String,
    /// True when this call allocated the label.
    pub allocated: bool,
}

#[derive(Debug, Clone)]
pub struct NewEnrollment {
    pub id: String,
    pub device: DeviceIdentity,
    pub profile: String,
    pub approval: ApprovalMode,
    pub label: String,
    pub parent_domain: String,
    pub names: Vec<String>,
    pub protocol: Protocol,
    pub csr_der: Vec<u8>,
    /// Lower-case hex SHA-256 of `csr_der`.
    pub csr_sha256: String,
    pub actor: String,
    /// Extra facts for the audit event of `received` (key type, names, re-enrollment …).
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentRecord {
    pub id: String,
    pub device: DeviceIdentity,
    pub profile: String,
    pub label: String,
    pub parent_domain: String,
    pub names: Vec<String>,
    pub protocol: Protocol,
    pub csr_der: Vec<u8>,
    pub csr_sha256: String,
    pub state: EnrollmentState,
    pub created: i64,
    pub updated: i64,
    pub attempts: i64,
    pub lease_owner: Option<String>,
    pub lease_expires: Option<i64>,
    pub not_before: i64,
    pub acme_order_url: Option<String>,
    pub failure_detail: Option<String>,
    pub failure_class: Option<ErrorClass>,
    /// DER certificates, end entity first, once issued.
    pub certificate_chain: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub identity: DeviceIdentity,
    pub approved: bool,
    pub first_seen: i64,
    pub labels: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasedJob {
    pub enrollment: EnrollmentRecord,
    pub lease_token: String,
    pub lease_expires: i64,
}

/// Facts the registrar read from the issued end-entity certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub serial_hex: String,
    pub not_before: i64,
    pub not_after: i64,
    pub chain: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    pub serial_hex: String,
    pub enrollment_id: String,
    pub device: DeviceIdentity,
    pub not_before: i64,
    pub not_after: i64,
    pub issued: i64,
    pub revoked: bool,
    pub revocation_reason: Option<String>,
    pub chain: Vec<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct FailOutcome {
    pub retryable: bool,
    pub detail: String,
    pub class: ErrorClass,
    /// When a retryable failure may be leased again (Unix micros).
    pub retry_at: i64,
    /// Give up instead of retrying once this many attempts were made.
    pub max_attempts: i64,
    pub acme_problem: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub device: Option<String>,
    pub label: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnrollmentFilter {
    pub device: Option<DeviceIdentity>,
    pub state: Option<EnrollmentState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: i64,
    pub head_seq: i64,
    pub head_hash: [u8; 32],
    pub broken: Option<ChainBreak>,
}

/// A page of results and the cursor for the next one (`None` at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[async_trait]
/// Everything ragw stores; the local ACME CA's part is [`AcmeStore`], so an `Arc<dyn Store>`
/// can be handed to the CA as an `Arc<dyn AcmeStore>`.
pub trait Store: AcmeStore + Send + Sync {
    /// Returns the device's label for the profile, allocating one (and recording the device)
    /// on first contact.
    async fn assign_label(
        &self,
        device: &DeviceIdentity,
        profile: &str,
        parent_domain: &str,
        actor: &str,
    ) -> Result<LabelAssignment>;

    /// The device's label for the profile if one was allocated; never allocates.
    async fn find_label(
        &self,
        device: &DeviceIdentity,
        profile: &str,
    ) -> Result<Option<LabelAssignment>>;

    /// Stores a new enrollment, or returns the existing one with the same (device, CSR hash)
    /// with `true`.
    async fn create_enrollment(&self, new: NewEnrollment) -> Result<(EnrollmentRecord, bool)>;
    async fn get_enrollment(&self, id: &str) -> Result<Option<EnrollmentRecord>>;
    async fn list_enrollments(
        &self,
        filter: &EnrollmentFilter,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<EnrollmentRecord>>;
    async fn list_devices(&self, limit: u32, after: Option<&str>) -> Result<Page<DeviceRecord>>;
    async fn get_device(&self, device: &DeviceIdentity) -> Result<Option<DeviceRecord>>;
    /// Counts enrollments, for tests and metrics.
    async fn count_enrollments(&self) -> Result<i64>;

    async fn approve(
        &self,
        enrollment_id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<EnrollmentRecord>;
    async fn deny(
        &self,
        enrollment_id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<EnrollmentRecord>;
    async fn revoke_approval(
        &self,
        device: &DeviceIdentity,
        actor: &str,
        reason: &str,
    ) -> Result<DeviceRecord>;

    /// Leases up to `max` ready jobs (queued, or ordering with an expired lease).
    async fn lease_jobs(&self, worker: &str, max: u32, lease_micros: i64)
    -> Result<Vec<LeasedJob>>;
    async fn extend_lease(
        &self,
        enrollment_id: &str,
        token: &str,
        lease_micros: i64,
    ) -> Result<i64>;
    async fn record_order(&self, enrollment_id: &str, token: &str, order_url: &str) -> Result<()>;
    async fn complete(
        &self,
        enrollment_id: &str,
        token: &str,
        worker: &str,
        certificate: IssuedCertificate,
    ) -> Result<EnrollmentRecord>;
    async fn fail(
        &self,
        enrollment_id: &str,
        token: &str,
        worker: &str,
        outcome: FailOutcome,
    ) -> Result<EnrollmentRecord>;

    async fn get_certificate(&self, serial_hex: &str) -> Result<Option<CertificateRecord>>;
    /// The certificate most recently issued to `device` for `profile`, revoked or not: a
    /// re-enrollment must present it, since an older one has been superseded by a renewal.
    async fn newest_certificate(
        &self,
        device: &DeviceIdentity,
        profile: &str,
    ) -> Result<Option<CertificateRecord>>;
    /// The CA certificates (the chain without its end-entity certificate) of the newest
    /// certificate issued for `profile`; empty when none was issued yet.
    async fn issuer_certificates(&self, profile: &str) -> Result<Vec<Vec<u8>>>;
    /// Marks the certificate revoked and, in the same transaction, queues the job that revokes
    /// it at the issuing CA.
    async fn revoke_certificate(
        &self,
        serial_hex: &str,
        actor: &str,
        reason: &str,
    ) -> Result<CertificateRecord>;
    /// Unrevoked certificates whose notAfter is at or after `valid_at` (Unix micros), ordered
    /// by serial; `after` is the previous page's cursor.
    async fn unrevoked_certificates(
        &self,
        valid_at: i64,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<CertificateRecord>>;
    /// Marks the certificate revoked because the issuing CA's CRL lists it, audited as
    /// `certificate.revoked` by `actor`. Idempotent: an unknown or already revoked serial is
    /// `Ok(None)`.
    async fn revoke_certificate_from_crl(
        &self,
        serial_hex: &str,
        actor: &str,
        reason: &str,
    ) -> Result<Option<CertificateRecord>>;

    /// The revocation job of a certificate revoked through [`Store::revoke_certificate`].
    async fn get_revocation_job(&self, serial_hex: &str) -> Result<Option<RevocationJobRecord>>;
    /// Leases up to `max` revocation jobs (queued and due, or revoking with an expired lease).
    async fn lease_revocations(
        &self,
        worker: &str,
        max: u32,
        lease_micros: i64,
    ) -> Result<Vec<LeasedRevocation>>;
    /// The CA has revoked the certificate (`already_revoked`: it said it had been before).
    async fn complete_revocation(
        &self,
        serial_hex: &str,
        token: &str,
        worker: &str,
        already_revoked: bool,
    ) -> Result<RevocationJobRecord>;
    /// The CA call failed: retried at `outcome.retry_at` unless it is final.
    async fn fail_revocation(
        &self,
        serial_hex: &str,
        token: &str,
        worker: &str,
        outcome: FailOutcome,
    ) -> Result<RevocationJobRecord>;

    /// Appends an event on its own (refusals, reads that must leave a trace).
    async fn append_audit(&self, draft: AuditDraft) -> Result<AuditEvent>;
    /// Appends `draft` for a step of a leased job: refused with `LeaseLost` unless `token` still
    /// holds the lease; the event names the job's device, label and enrollment.
    async fn append_job_audit(
        &self,
        enrollment_id: &str,
        token: &str,
        draft: AuditDraft,
    ) -> Result<AuditEvent>;
    async fn query_audit(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>>;
    /// Walks the whole chain in one snapshot and compares it with the recorded head.
    async fn verify_audit(&self) -> Result<VerifyReport>;
}
