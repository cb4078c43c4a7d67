//! [`Store`] for any [`Backend`]: runs each operation of `logic` in its own transaction, on a
//! task of its own so that a caller who goes away cannot leave a transaction half done.

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use ragw_domain::{AuditDraft, AuditEvent, DeviceIdentity};

use crate::logic::{self, Begin, Tx};
use crate::revocation;
use crate::sql::Backend;
use crate::{
    AuditFilter, CertificateRecord, DeviceRecord, EnrollmentFilter, EnrollmentRecord, FailOutcome,
    IssuedCertificate, LabelAssignment, LeasedJob, LeasedRevocation, NewEnrollment, Page, Result,
    RevocationJobRecord, Store, StoreError, VerifyReport,
};

const MAX_TRANSACTION_ATTEMPTS: usize = 8;

pub struct SqlStore<B: Backend> {
    pub(crate) backend: Arc<B>,
}

impl<B: Backend> SqlStore<B> {
    pub(crate) fn new(backend: B) -> Self {
        SqlStore {
            backend: Arc::new(backend),
        }
    }

    pub(crate) async fn run<A, R, F>(&self, write: bool, args: A, f: F) -> Result<R>
    where
        A: Send + Sync + 'static,
        R: Send + 'static,
        F: for<'a> Fn(&'a mut Tx<B::C>, &'a A) -> BoxFuture<'a, Result<R>> + Send + Sync + 'static,
    {
        let begin = if write { Begin::Write } else { Begin::Read };
        self.run_as(begin, args, f).await
    }

    /// Runs `f` in one transaction opened as `begin`, retrying the whole transaction when the
    /// backend reports a serialization failure or a busy database.
    pub(crate) async fn run_as<A, R, F>(&self, begin: Begin, args: A, f: F) -> Result<R>
    where
        A: Send + Sync + 'static,
        R: Send + 'static,
        F: for<'a> Fn(&'a mut Tx<B::C>, &'a A) -> BoxFuture<'a, Result<R>> + Send + Sync + 'static,
    {
        let backend = self.backend.clone();
        let task = tokio::spawn(async move {
            let mut last = StoreError::Retry("no attempt made".into());
            for attempt in 0..MAX_TRANSACTION_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(5 << attempt.min(6))).await;
                }
                let conn = backend.acquire().await?;
                let mut tx = match Tx::open(conn, begin).await {
                    Ok(tx) => tx,
                    Err(StoreError::Retry(m)) => {
                        last = StoreError::Retry(m);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match f(&mut tx, &args).await {
                    Ok(r) => match tx.commit().await {
                        Ok(()) => return Ok(r),
                        Err(StoreError::Retry(m)) => last = StoreError::Retry(m),
                        Err(e) => return Err(e),
                    },
                    Err(StoreError::Retry(m)) => {
                        tx.rollback().await;
                        last = StoreError::Retry(m);
                    }
                    Err(e) => {
                        tx.rollback().await;
                        return Err(e);
                    }
                }
            }
            Err(last)
        });
        task.await
            .map_err(|e| StoreError::Backend(format!("store task ended abnormally: {e}")))?
    }
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B> {
    async fn assign_label(
        &self,
        device: &DeviceIdentity,
        profile: &str,
        parent_domain: &str,
        actor: &str,
    ) -> Result<LabelAssignment> {
        let args = (
            device.clone(),
            profile.to_string(),
            parent_domain.to_string(),
            actor.to_string(),
        );
        self.run(true, args, |tx, a| {
            Box::pin(logic::assign_label(tx, &a.0, &a.1, &a.2, &a.3))
        })
        .await
    }

    async fn find_label(
        &self,
        device: &DeviceIdentity,
        profile: &str,
    ) -> Result<Option<LabelAssignment>> {
        let args = (device.clone(), profile.to_string());
        self.run(false, args, |tx, a| {
            Box::pin(logic::find_label(tx, &a.0, &a.1))
        })
        .await
    }

    async fn create_enrollment(&self, new: NewEnrollment) -> Result<(EnrollmentRecord, bool)> {
        self.run(true, new, |tx, a| Box::pin(logic::create_enrollment(tx, a)))
            .await
    }

    async fn get_enrollment(&self, id: &str) -> Result<Option<EnrollmentRecord>> {
        self.run(false, id.to_string(), |tx, a| {
            Box::pin(logic::get_enrollment(tx, a))
        })
        .await
    }

    async fn list_enrollments(
        &self,
        filter: &EnrollmentFilter,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<EnrollmentRecord>> {
        let args = (filter.clone(), limit, after.map(str::to_string));
        self.run(false, args, |tx, a| {
            Box::pin(logic::list_enrollments(tx, &a.0, a.1, a.2.as_deref()))
        })
        .await
    }

    async fn list_devices(&self, limit: u32, after: Option<&str>) -> Result<Page<DeviceRecord>> {
        let args = (limit, after.map(str::to_string));
        self.run(false, args, |tx, a| {
            Box::pin(logic::list_devices(tx, a.0, a.1.as_deref()))
        })
        .await
    }

    async fn get_device(&self, device: &DeviceIdentity) -> Result<Option<DeviceRecord>> {
        self.run(false, device.clone(), |tx, a| {
            Box::pin(logic::get_device(tx, a))
        })
        .await
    }

    async fn count_enrollments(&self) -> Result<i64> {
        self.run(false, (), |tx, _| Box::pin(logic::count_enrollments(tx)))
            .await
    }

    async fn approve(
        &self,
        enrollment_id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<EnrollmentRecord> {
        let args = (
            enrollment_id.to_string(),
            actor.to_string(),
            reason.to_string(),
        );
        self.run(true, args, |tx, a| {
            Box::pin(logic::approve(tx, &a.0, &a.1, &a.2))
        })
        .await
    }

    async fn deny(
        &self,
        enrollment_id: &str,
        actor: &str,
        reason: &str,
    ) -> Result<EnrollmentRecord> {
        let args = (
            enrollment_id.to_string(),
            actor.to_string(),
            reason.to_string(),
        );
        self.run(true, args, |tx, a| {
            Box::pin(logic::deny(tx, &a.0, &a.1, &a.2))
        })
        .await
    }

    async fn revoke_approval(
        &self,
        device: &DeviceIdentity,
        actor: &str,
        reason: &str,
    ) -> Result<DeviceRecord> {
        let args = (device.clone(), actor.to_string(), reason.to_string());
        self.run(true, args, |tx, a| {
            Box::pin(logic::revoke_approval(tx, &a.0, &a.1, &a.2))
        })
        .await
    }

    async fn lease_jobs(
        &self,
        worker: &str,
        max: u32,
        lease_micros: i64,
    ) -> Result<Vec<LeasedJob>> {
        let args = (worker.to_string(), max, lease_micros);
        self.run(true, args, |tx, a| {
            Box::pin(logic::lease_jobs(tx, &a.0, a.1, a.2))
        })
        .await
    }

    async fn extend_lease(
        &self,
        enrollment_id: &str,
        token: &str,
        lease_micros: i64,
    ) -> Result<i64> {
        let args = (enrollment_id.to_string(), token.to_string(), lease_micros);
        self.run(true, args, |tx, a| {
            Box::pin(logic::extend_lease(tx, &a.0, &a.1, a.2))
        })
        .await
    }

    async fn record_order(&self, enrollment_id: &str, token: &str, order_url: &str) -> Result<()> {
        let args = (
            enrollment_id.to_string(),
            token.to_string(),
            order_url.to_string(),
        );
        self.run(true, args, |tx, a| {
            Box::pin(logic::record_order(tx, &a.0, &a.1, &a.2))
        })
        .await
    }

    async fn complete(
        &self,
        enrollment_id: &str,
        token: &str,
        worker: &str,
        certificate: IssuedCertificate,
    ) -> Result<EnrollmentRecord> {
        let args = (
            enrollment_id.to_string(),
            token.to_string(),
            worker.to_string(),
            certificate,
        );
        self.run(true, args, |tx, a| {
            Box::pin(logic::complete(tx, &a.0, &a.1, &a.2, &a.3))
        })
        .await
    }

    async fn fail(
        &self,
        enrollment_id: &str,
        token: &str,
        worker: &str,
        outcome: FailOutcome,
    ) -> Result<EnrollmentRecord> {
        let args = (
            enrollment_id.to_string(),
            token.to_string(),
            worker.to_string(),
            outcome,
        );
        self.run(true, args, |tx, a| {
            Box::pin(logic::fail(tx, &a.0, &a.1, &a.2, &a.3))
        })
        .await
    }

    async fn issuer_certificates(&self, profile: &str) -> Result<Vec<Vec<u8>>> {
        self.run(false, profile.to_string(), |tx, a| {
            Box::pin(logic::issuer_certificates(tx, a))
        })
        .await
    }

    async fn get_certificate(&self, serial_hex: &str) -> Result<Option<CertificateRecord>> {
        self.run(false, serial_hex.to_string(), |tx, a| {
            Box::pin(logic::get_certificate(tx, a))
        })
        .await
    }

    async fn newest_certificate(
        &self,
        device: &DeviceIdentity,
        profile: &str,
    ) -> Result<Option<CertificateRecord>> {
        self.run(false, (device.key(), profile.to_string()), |tx, a| {
            Box::pin(logic::newest_certificate(tx, a))
        })
        .await
    }

    async fn revoke_certificate(
        &self,
        serial_hex: &str,
        actor: &str,
        reason: &str,
    ) -> Result<CertificateRecord> {
        let args = (
            serial_hex.to_string(),
            actor.to_string(),
            reason.to_string(),
        );
        self.run(true, args, |tx, a| {
            Box::pin(logic::revoke_certificate(tx, &a.0, &a.1, &a.2))
        })
        .await
    }

    async fn unrevoked_certificates(
        &self,
        valid_at: i64,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<CertificateRecord>> {
        let args = (valid_at, limit, after.map(str::to_string));
        self.run(false, args, |tx, a| {
            Box::pin(logic::unrevoked_certificates(tx, a.0, a.1, a.2.as_deref()))
        })
        .await
    }

    async fn get_revocation_job(&self, serial_hex: &str) -> Result<Option<RevocationJobRecord>> {
        self.run(false, serial_hex.to_string(), |tx, a| {
            Box::pin(revocation::get_revocation_job(tx, a))
        })
        .await
    }

    async fn revoke_certificate_from_crl(
        &self,
        serial_hex: &str,
        actor: &str,
        reason: &str,
    ) -> Result<Option<CertificateRecord>> {
        let args = (
            serial_hex.to_string(),
            actor.to_string(),
            reason.to_string(),
        );
        self.run(true, args, |tx, a| {
            Box::pin(logic::revoke_certificate_from_crl(tx, &a.0, &a.1, &a.2))
        })
        .await
    }

    async fn lease_revocations(
        &self,
        worker: &str,
        max: u32,
        lease_micros: i64,
    ) -> Result<Vec<LeasedRevocation>> {
        let args = (worker.to_string(), max, lease_micros);
        self.run(true, args, |tx, a| {
            Box::pin(revocation::lease_revocations(tx, &a.0, a.1, a.2))
        })
        .await
    }

    async fn complete_revocation(
        &self,
        serial_hex: &str,
        token: &str,
        worker: &str,
        already_revoked: bool,
    ) -> Result<RevocationJobRecord> {
        let args = (
            serial_hex.to_string(),
            token.to_string(),
            worker.to_string(),
            already_revoked,
        );
        self.run(true, args, |tx, a| {
            Box::pin(revocation::complete_revocation(tx, &a.0, &a.1, &a.2, a.3))
        })
        .await
    }

    async fn fail_revocation(
        &self,
        serial_hex: &str,
        token: &str,
        worker: &str,
        outcome: FailOutcome,
    ) -> Result<RevocationJobRecord> {
        let args = (
            serial_hex.to_string(),
            token.to_string(),
            worker.to_string(),
            outcome,
        );
        self.run(true, args, |tx, a| {
            Box::pin(revocation::fail_revocation(tx, &a.0, &a.1, &a.2, &a.3))
        })
        .await
    }

    async fn append_audit(&self, draft: AuditDraft) -> Result<AuditEvent> {
        self.run(true, draft, |tx, a| {
            Box::pin(logic::append_audit(tx, a.clone()))
        })
        .await
    }

    async fn append_job_audit(
        &self,
        enrollment_id: &str,
        token: &str,
        draft: AuditDraft,
    ) -> Result<AuditEvent> {
        let args = (enrollment_id.to_string(), token.to_string(), draft);
        self.run(true, args, |tx, a| {
            Box::pin(logic::append_job_audit(tx, &a.0, &a.1, a.2.clone()))
        })
        .await
    }

    async fn query_audit(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>> {
        let args = (filter.clone(), after_seq, limit);
        self.run(false, args, |tx, a| {
            Box::pin(logic::query_audit(tx, &a.0, a.1, a.2))
        })
        .await
    }

    async fn verify_audit(&self) -> Result<VerifyReport> {
        self.run(false, (), |tx, _| Box::pin(logic::verify_audit(tx)))
            .await
    }
}
