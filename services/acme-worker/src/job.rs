//! The job loop: lease enrollments from the registrar, run the ACME conversation, report the
//! chain or a typed failure. A job's order URL is recorded before finalizing, so a job leased
//! again after a crash resumes the same order instead of placing another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use instant_acme::{ChallengeType, Identifier, NewOrder, Order, OrderStatus, RetryPolicy};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::worker_service_client::WorkerServiceClient;
use ragw_runtime::ops::MetricsRegistry;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use tracing::Instrument;

use crate::WorkerError;
use crate::acme_http::{AcmeHttp, RequestLabels};
use crate::dns::DnsProvider;
use crate::steps::{JobRef, Step, StepRecorder};
use crate::upstream::{RecordedOrder, Upstream, UpstreamConfig};

mod revoke;

/// Revocation jobs asked for per Lease call. They run beside order jobs without taking a
/// concurrency slot: each is one revokeCert request, bounded by this number.
const MAX_REVOCATIONS_PER_LEASE: u32 = 4;

fn default_concurrency() -> usize {
    8
}

fn default_lease_seconds() -> u32 {
    300
}

fn default_poll_ms() -> u32 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// The registrar's gRPC URL (`ragw run --target worker`; `ragw dev` fills it in).
    pub registrar: Option<String>,
    /// The name the registrar's TLS certificate is checked against (default: the host of
    /// `registrar`).
    pub registrar_tls_name: Option<String>,
    /// Where /healthz, /readyz and /metrics are served (default 127.0.0.1:9465).
    pub ops_listen: Option<std::net::SocketAddr>,
    /// Distinguishes this worker in leases and audit events (defaults to the host name).
    pub id: Option<String>,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u32,
    /// Long-poll bound of one Lease call.
    #[serde(default = "default_poll_ms")]
    pub poll_wait_ms: u32,
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub result: String,
}

#[derive(Clone)]
pub struct WorkerMetrics {
    pub acme_requests: Family<RequestLabels, Counter>,
    pub certificates: Counter,
    pub jobs: Family<JobLabels, Counter>,
    pub lease_wait: Histogram,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            acme_requests: Family::default(),
            certificates: Counter::default(),
            jobs: Family::default(),
            lease_wait: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        }
    }
}

impl WorkerMetrics {
    /// Registers the counters under `ragw_worker_`.
    pub fn register(&self, registry: &MetricsRegistry) {
        let registry = registry.component("worker");
        registry.register(
            "acme_requests",
            "ACME HTTP requests by resource kind, method and HTTP status (or error)",
            self.acme_requests.clone(),
        );
        registry.register(
            "acme_certificates_issued",
            "Certificates obtained from the upstream CA and handed to the registrar",
            self.certificates.clone(),
        );
        registry.register("acme_jobs", "Jobs finished, by result", self.jobs.clone());
        registry.register(
            "acme_lease_wait_seconds",
            "Time a Lease call waited for work",
            self.lease_wait.clone(),
        );
    }
}

pub struct Worker {
    id: String,
    config: WorkerConfig,
    registrar: WorkerServiceClient<Channel>,
    upstreams: Vec<Arc<Upstream>>,
    dns: Arc<dyn DnsProvider>,
    metrics: WorkerMetrics,
    steps: StepRecorder,
}

/// How long a failed Extend waits before the next attempt (while the lease lasts).
const EXTEND_RETRY: Duration = Duration::from_secs(1);

/// Why a lease ended before its job did.
enum LeaseEnd {
    /// The registrar says the lease is not ours (any more): another worker may hold the job.
    Refused(tonic::Status),
    /// Extend failed for other reasons until the lease ran out.
    Expired,
}

/// Whether an Extend failure is the registrar's answer about the lease rather than a passing
/// failure. The registrar answers FAILED_PRECONDITION when the lease is no longer held by this
/// token and NOT_FOUND when the enrollment is gone; a request or credential it refuses will
/// not be accepted on retry either.
fn lease_refused(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::FailedPrecondition
            | tonic::Code::NotFound
            | tonic::Code::InvalidArgument
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
    )
}

/// How a job ended, for the registrar.
struct JobFailure {
    retryable: bool,
    problem: Option<pb::AcmeProblem>,
    detail: String,
    retry_after: Option<Duration>,
}

impl JobFailure {
    /// The CA's requested pause in whole seconds for the registrar's backoff; 0 when none.
    fn retry_after_seconds(&self) -> u32 {
        self.retry_after
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(0)
    }
}

impl Worker {
    pub fn new(
        id: String,
        config: WorkerConfig,
        registrar: Channel,
        dns: Arc<dyn DnsProvider>,
        metrics: WorkerMetrics,
    ) -> Result<Arc<Self>, WorkerError> {
        if config.upstreams.is_empty() {
            return Err(WorkerError::Config(
                "the worker has no [[worker.upstreams]]".into(),
            ));
        }
        let registrar = WorkerServiceClient::new(registrar);
        let steps = StepRecorder::new(registrar.clone(), id.clone());
        let mut upstreams = Vec::new();
        for u in &config.upstreams {
            let roots = match &u.ca_trust {
                Some(p) => Some(
                    std::fs::read(p)
                        .map_err(|e| WorkerError::Config(format!("{}: {e}", p.display())))?,
                ),
                None => None,
            };
            let http = AcmeHttp::new(roots.as_deref(), metrics.acme_requests.clone())?;
            upstreams.push(Arc::new(
                Upstream::new(u.clone(), http).with_steps(steps.clone()),
            ));
        }
        Ok(Arc::new(Worker {
            id,
            config,
            registrar,
            upstreams,
            dns,
            metrics,
            steps,
        }))
    }

    fn upstream_for(&self, profile: &str) -> Result<Arc<Upstream>, WorkerError> {
        self.upstreams
            .iter()
            .find(|u| u.config.profiles.iter().any(|p| p == profile))
            .or_else(|| self.upstreams.iter().find(|u| u.serves(profile)))
            .cloned()
            .ok_or_else(|| {
                WorkerError::Config(format!("no upstream CA serves profile {profile:?}"))
            })
    }

    /// Leases and works jobs until `shutdown` resolves, then lets running jobs finish (their
    /// leases would expire and hand them to another worker if this one were killed instead).
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()> + Send) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        tokio::pin!(shutdown);
        loop {
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    _ = &mut shutdown => break,
                    p = permits.clone().acquire_owned() => { drop(p); continue; }
                }
            }
            let started = Instant::now();
            let mut registrar = self.registrar.clone();
            let lease = registrar.lease(pb::LeaseRequest {
                worker_id: self.id.clone(),
                max_jobs: u32::try_from(free).unwrap_or(u32::MAX),
                lease_seconds: self.config.lease_seconds,
                wait_millis: self.config.poll_wait_ms,
                max_revocations: MAX_REVOCATIONS_PER_LEASE,
            });
            let jobs = tokio::select! {
                _ = &mut shutdown => break,
                r = lease => r,
            };
            self.metrics
                .lease_wait
                .observe(started.elapsed().as_secs_f64());
            match jobs {
                Ok(rsp) => {
                    let rsp = rsp.into_inner();
                    for revocation in rsp.revocations {
                        let me = self.clone();
                        tokio::spawn(async move {
                            me.work_revocation(revocation, started).await;
                        });
                    }
                    for job in rsp.jobs {
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            break;
                        };
                        let me = self.clone();
                        tokio::spawn(async move {
                            me.work(job, started).await;
                            drop(permit);
                        });
                    }
                }
                Err(status) => {
                    tracing::warn!(error = %status.message(), code = ?status.code(), "lease failed; retrying");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        let total = u32::try_from(self.config.concurrency.max(1)).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(Duration::from_secs(30), permits.acquire_many(total)).await;
    }

    /// Runs one job while keeping its lease. `leased_at` is when the Lease call was sent: the
    /// lease cannot have started earlier.
    async fn work(&self, job: pb::Job, leased_at: Instant) {
        let span =
            tracing::info_span!("job", enrollment = %job.enrollment_id, attempt = job.attempt);
        self.work_in_span(job, leased_at).instrument(span).await;
    }

    /// The lease to count with: what was asked for, or less if the registrar granted less
    /// (0 from a registrar that does not say).
    fn lease_length(&self, granted: u32) -> Duration {
        let asked = self.config.lease_seconds;
        let secs = if granted == 0 {
            asked
        } else {
            asked.min(granted)
        };
        Duration::from_secs(u64::from(secs))
    }

    async fn work_in_span(&self, job: pb::Job, leased_at: Instant) {
        let deadline = leased_at + self.lease_length(job.lease_seconds);
        // Whoever finishes first: the ACME work, or the lease. A job whose lease is gone may
        // already be another worker's, so its work stops here and nothing is reported.
        let outcome = tokio::select! {
            outcome = self.issue(&job) => outcome,
            end = self.keep_lease(&job, deadline) => {
                self.job_result("lease_lost");
                match end {
                    LeaseEnd::Refused(s) => tracing::warn!(
                        enrollment = %job.enrollment_id, code = ?s.code(), error = %s.message(),
                        "the registrar refused to extend the lease; abandoning the job"
                    ),
                    LeaseEnd::Expired => tracing::warn!(
                        enrollment = %job.enrollment_id,
                        "the lease ran out while the registrar could not extend it; abandoning the job"
                    ),
                }
                return;
            }
        };
        let mut client = self.registrar.clone();
        match outcome {
            Ok(chain) => {
                match client
                    .complete(pb::CompleteRequest {
                        enrollment_id: job.enrollment_id.clone(),
                        lease_token: job.lease_token.clone(),
                        certificate_chain: chain,
                    })
                    .await
                {
                    Ok(_) => {
                        self.metrics.certificates.inc();
                        self.job_result("issued");
                        tracing::info!(enrollment = %job.enrollment_id, "certificate issued");
                    }
                    Err(s) => {
                        self.job_result("complete_refused");
                        tracing::error!(enrollment = %job.enrollment_id, error = %s.message(), "the registrar refused the certificate");
                    }
                }
            }
            Err(f) => {
                self.job_result(if f.retryable { "retry" } else { "failed" });
                tracing::warn!(enrollment = %job.enrollment_id, retryable = f.retryable, detail = %f.detail, "ACME order failed");
                if let Err(s) = client
                    .fail(pb::FailRequest {
                        enrollment_id: job.enrollment_id.clone(),
                        lease_token: job.lease_token.clone(),
                        retryable: f.retryable,
                        retry_after_seconds: f.retry_after_seconds(),
                        problem: f.problem,
                        detail: f.detail.chars().take(4000).collect(),
                    })
                    .await
                {
                    tracing::error!(enrollment = %job.enrollment_id, error = %s.message(), "could not report the failure");
                }
            }
        }
    }

    /// Extends the lease every third of its length until the registrar refuses (the lease is
    /// gone or not ours) or, while Extend keeps failing for other reasons, until the lease
    /// may have run out.
    ///
    /// The lease is timed on this worker's clock from when it was asked for, so clock skew
    /// between worker and registrar cannot stretch it.
    async fn keep_lease(&self, job: &pb::Job, mut deadline: Instant) -> LeaseEnd {
        let secs = self.config.lease_seconds;
        let mut lease = self.lease_length(job.lease_seconds);
        let mut every = (lease / 3).max(Duration::from_secs(1));
        let mut client = self.registrar.clone();
        let mut next = Instant::now() + every;
        loop {
            tokio::time::sleep_until(next.into()).await;
            let sent = Instant::now();
            // The call may take until the lease runs out; at least a moment, so a lease whose
            // start is only known roughly (a long Lease poll) still gets one attempt.
            let budget = deadline.saturating_duration_since(sent).max(EXTEND_RETRY);
            let extend = client.extend(pb::ExtendRequest {
                enrollment_id: job.enrollment_id.clone(),
                lease_token: job.lease_token.clone(),
                lease_seconds: secs,
            });
            let error = match tokio::time::timeout(budget, extend).await {
                Ok(Ok(r)) => {
                    lease = self.lease_length(r.into_inner().lease_seconds);
                    every = (lease / 3).max(Duration::from_secs(1));
                    deadline = sent + lease;
                    next = sent + every;
                    continue;
                }
                Ok(Err(s)) if lease_refused(s.code()) => return LeaseEnd::Refused(s),
                Ok(Err(s)) => format!("{:?}: {}", s.code(), s.message()),
                Err(_) => "no answer".to_string(),
            };
            let now = Instant::now();
            if now >= deadline {
                return LeaseEnd::Expired;
            }
            tracing::warn!(
                enrollment = %job.enrollment_id, error,
                "could not extend the lease; retrying while it lasts"
            );
            next = (now + EXTEND_RETRY.min(every)).min(deadline);
        }
    }

    fn job_result(&self, result: &str) {
        self.metrics
            .jobs
            .get_or_create(&JobLabels {
                result: result.to_string(),
            })
            .inc();
    }

    async fn issue(&self, job: &pb::Job) -> Result<Vec<Vec<u8>>, JobFailure> {
        let upstream = self.upstream_for(&job.profile).map_err(|e| failure(&e))?;
        // A CA that asked to be left alone is not asked again by the next jobs either: they go
        // back to the registrar with the rest of the wait.
        if let Some(wait) = upstream.backing_off() {
            return Err(failure(&WorkerError::Acme {
                problem_type: "urn:ietf:params:acme:error:rateLimited".into(),
                detail: format!(
                    "the CA asked for a pause ({} s left); not contacted",
                    wait.as_secs().max(1)
                ),
                status: 429,
                retry_after: Some(wait),
            }));
        }
        self.issue_with(&upstream, job).await.map_err(|e| {
            if let Some(wait) = e.retry_after() {
                upstream.back_off(wait);
            }
            failure(&e)
        })
    }

    async fn issue_with(
        &self,
        upstream: &Arc<Upstream>,
        job: &pb::Job,
    ) -> Result<Vec<Vec<u8>>, WorkerError> {
        let (account, _) = upstream.account().await?;
        let mut identifiers = Vec::new();
        for name in &job.names {
            if name.parse::<std::net::IpAddr>().is_ok() {
                return Err(WorkerError::Acme {
                    problem_type: "urn:ietf:params:acme:error:unsupportedIdentifier".into(),
                    detail: format!("IP address {name} cannot be validated with dns-01"),
                    status: 400,
                    retry_after: None,
                });
            }
            identifiers.push(Identifier::Dns(name.clone()));
        }
        let profile = upstream.order_profile(&job.ekus).await?;
        let mut order = match self.resume(upstream, job).await? {
            Some(order) => order,
            None => {
                // Pre-authorize the parent domain once, so the order below comes back ready.
                // The authorization is shared with every job under the parent (they wait for
                // it), so it runs to its end even if this job is abandoned.
                let preauthorized = {
                    let (upstream, dns) = (upstream.clone(), self.dns.clone());
                    let parent = job.parent_domain.clone();
                    tokio::spawn(async move {
                        upstream
                            .ensure_parent_authorization(&parent, dns.as_ref())
                            .await
                    })
                    .await
                    .map_err(|e| WorkerError::Http(format!("parent authorization: {e}")))??
                };
                let order = if preauthorized {
                    upstream
                        .new_order_under(&job.names, &job.parent_domain, profile.as_deref())
                        .await?
                } else {
                    let mut new_order = NewOrder::new(&identifiers);
                    if let Some(p) = profile.as_deref() {
                        new_order = new_order.profile(p);
                    }
                    account
                        .new_order(&new_order)
                        .await
                        .map_err(WorkerError::from_acme)?
                };
                self.registrar
                    .clone()
                    .record_order(pb::RecordOrderRequest {
                        enrollment_id: job.enrollment_id.clone(),
                        lease_token: job.lease_token.clone(),
                        acme_order_url: order.url().to_string(),
                    })
                    .await
                    .map_err(|s| WorkerError::Registrar(s.message().to_string()))?;
                tracing::debug!(url = order.url(), preauthorized, "order placed");
                order
            }
        };
        let status = order.state().status;
        if status == OrderStatus::Pending {
            self.answer_challenges(&mut order, upstream, job).await?;
        }
        match order.state().status {
            OrderStatus::Ready => order
                .finalize_csr(&job.csr_der)
                .await
                .map_err(WorkerError::from_acme)?,
            OrderStatus::Processing | OrderStatus::Valid => {}
            OrderStatus::Invalid => {
                let problem = order.state().error.clone();
                return Err(match problem {
                    Some(p) => WorkerError::from_acme(instant_acme::Error::Api(p)),
                    None => WorkerError::Acme {
                        problem_type: "urn:ietf:params:acme:error:orderInvalid".into(),
                        detail: "the CA marked the order invalid".into(),
                        status: 403,
                        retry_after: None,
                    },
                });
            }
            OrderStatus::Pending => {
                return Err(WorkerError::Http(
                    "the order is still pending after its challenges".into(),
                ));
            }
        }
        // A CA that issues during finalize answers `valid` at once: one more POST for the chain.
        let pem = match order.certificate().await.map_err(WorkerError::from_acme)? {
            Some(pem) => pem,
            None => order
                .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(90)))
                .await
                .map_err(WorkerError::from_acme)?,
        };
        let mut chain = Vec::new();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert =
                cert.map_err(|e| WorkerError::Http(format!("the CA's certificate PEM: {e}")))?;
            chain.push(cert.to_vec());
        }
        if chain.is_empty() {
            return Err(WorkerError::Http("the CA returned no certificate".into()));
        }
        check_leaf_ekus(&chain[0], &job.ekus)?;
        Ok(chain)
    }

    /// The recorded order, when it is still usable; `None` when there is none or the CA says
    /// it is gone for good. Any other failure to read it fails the job as retryable: ordering
    /// again because of a passing error would leave two orders for one enrollment.
    async fn resume(
        &self,
        upstream: &Upstream,
        job: &pb::Job,
    ) -> Result<Option<Order>, WorkerError> {
        let url = &job.acme_order_url;
        if url.is_empty() {
            return Ok(None);
        }
        match upstream.recorded_order(url).await {
            Ok(RecordedOrder::Usable(order)) => {
                tracing::info!(url = %url, "resuming the recorded order");
                Ok(Some(*order))
            }
            Ok(RecordedOrder::Gone(why)) => {
                tracing::warn!(url = %url, why, "the recorded order is unusable; placing a new one");
                Ok(None)
            }
            Err(e) => Err(WorkerError::OrderUnreachable(Box::new(e))),
        }
    }

    /// dns-01 for every authorization that is not valid yet; records are removed afterwards,
    /// whether validation passed or not.
    async fn answer_challenges(
        &self,
        order: &mut Order,
        upstream: &Upstream,
        job: &pb::Job,
    ) -> Result<(), WorkerError> {
        let directory_url = upstream.config.directory_url.as_str();
        let mut published = ChallengeRecords {
            dns: self.dns.clone(),
            records: Vec::new(),
            steps: self.steps.clone(),
            directory_url: directory_url.to_string(),
            enrollment_id: job.enrollment_id.clone(),
            lease_token: job.lease_token.clone(),
        };
        let result = async {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(WorkerError::from_acme)?;
                if authz.status == instant_acme::AuthorizationStatus::Valid {
                    continue;
                }
                let Identifier::Dns(name) = authz.identifier().identifier.clone() else {
                    return Err(WorkerError::Http(
                        "only DNS identifiers are supported".into(),
                    ));
                };
                let base = name.trim_start_matches("*.").to_string();
                let mut challenge = authz.challenge(ChallengeType::Dns01).ok_or_else(|| {
                    WorkerError::Http(format!("the CA offers no dns-01 challenge for {name}"))
                })?;
                let value = challenge.key_authorization().dns_value();
                let record = format!("_acme-challenge.{base}");
                // Audited before it is published: a record the log does not show is never put
                // in the zone.
                self.steps
                    .record(Step {
                        kind: pb::WorkerStep::ChallengePublished,
                        job: Some(JobRef::of(job)),
                        directory_url,
                        subject: &record,
                        detail: &format!("dns-01 for {name}"),
                        expires_unix_micros: 0,
                    })
                    .await?;
                // Listed before it is added: if the job is dropped while the update is on its
                // way, the record may exist, and removing one that does not is harmless.
                published.records.push((record.clone(), value.clone()));
                self.dns
                    .add_txt(&record, &value)
                    .await
                    .map_err(|e| WorkerError::Dns(e.to_string()))?;
                challenge
                    .set_ready()
                    .await
                    .map_err(WorkerError::from_acme)?;
            }
            let status = order
                .poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(120)))
                .await
                .map_err(WorkerError::from_acme)?;
            if status != OrderStatus::Ready {
                return Err(WorkerError::Acme {
                    problem_type: "urn:ietf:params:acme:error:unauthorized".into(),
                    detail: format!("dns-01 validation ended {status:?}"),
                    status: 403,
                    retry_after: None,
                });
            }
            Ok(())
        }
        .await;
        published.remove().await;
        result
    }
}

/// dns-01 records a job published. They are removed once validation is decided; a job
/// abandoned before that (its lease lost) drops this, and the records are removed in the
/// background instead of lingering in the zone.
struct ChallengeRecords {
    dns: Arc<dyn DnsProvider>,
    records: Vec<(String, String)>,
    steps: StepRecorder,
    directory_url: String,
    enrollment_id: String,
    lease_token: String,
}

impl ChallengeRecords {
    /// Removal while the job still holds its lease: audited under the job's device.
    async fn remove(mut self) {
        let records = std::mem::take(&mut self.records);
        self.remove_and_audit(records, true).await;
    }

    /// Removes `records` and audits each removal: under the job while `in_job`, falling back
    /// to an event outside the job (naming the enrollment in its detail) when the lease is gone
    /// by then, as for a job abandoned after losing it.
    fn remove_and_audit(
        &self,
        records: Vec<(String, String)>,
        in_job: bool,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (dns, steps) = (self.dns.clone(), self.steps.clone());
        let directory_url = self.directory_url.clone();
        let (enrollment_id, lease_token) = (self.enrollment_id.clone(), self.lease_token.clone());
        let detail = format!("enrollment {enrollment_id}");
        async move {
            for (record, removed) in remove_records(dns.as_ref(), records).await {
                if !removed {
                    continue;
                }
                let step = |job| Step {
                    kind: pb::WorkerStep::ChallengeRemoved,
                    job,
                    directory_url: &directory_url,
                    subject: &record,
                    detail: &detail,
                    expires_unix_micros: 0,
                };
                let job = JobRef {
                    enrollment_id: &enrollment_id,
                    lease_token: &lease_token,
                };
                if in_job && steps.record(step(Some(job))).await.is_ok() {
                    continue;
                }
                steps.record_done(step(None)).await;
            }
        }
    }
}

impl Drop for ChallengeRecords {
    fn drop(&mut self) {
        if self.records.is_empty() {
            return;
        }
        let records = std::mem::take(&mut self.records);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.remove_and_audit(records, false));
        }
    }
}

/// Removes each record; returns each record name with whether it was removed.
async fn remove_records(
    dns: &dyn DnsProvider,
    records: Vec<(String, String)>,
) -> Vec<(String, bool)> {
    let mut out = Vec::with_capacity(records.len());
    for (record, value) in records {
        let removed = match dns.remove_txt(&record, &value).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, record, "could not remove a challenge record");
                false
            }
        };
        out.push((record, removed));
    }
    out
}

/// Retryable or not, as draft-ietf-acme-integrations maps ACME problems. A Retry-After the CA
/// sent with the failing answer goes along; the registrar waits max(backoff, Retry-After).
/// A leaf that lacks an extended key usage the profile asked for would fail where the device
/// uses it (802.1X without clientAuth), so it is not delivered: the job fails with
/// `invalidProfile`. A leaf without the extension is unrestricted (RFC 5280 §4.2.1.12).
fn check_leaf_ekus(leaf_der: &[u8], wanted: &[String]) -> Result<(), WorkerError> {
    use der::Decode;
    use der::oid::AssociatedOid;
    use x509_cert::ext::pkix::ExtendedKeyUsage;
    if wanted.is_empty() {
        return Ok(());
    }
    let unreadable = |e: der::Error| WorkerError::Acme {
        problem_type: "urn:ietf:params:acme:error:serverInternal".into(),
        detail: format!("the issued certificate does not decode: {e}"),
        status: 500,
        retry_after: None,
    };
    let cert = x509_cert::Certificate::from_der(leaf_der).map_err(unreadable)?;
    let Some(ext) = cert
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .find(|e| e.extn_id == ExtendedKeyUsage::OID)
    else {
        return Ok(());
    };
    let eku = ExtendedKeyUsage::from_der(ext.extn_value.as_bytes()).map_err(unreadable)?;
    let has = |oid| eku.0.contains(&oid);
    let missing: Vec<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|w| match *w {
            "serverAuth" => !has(der::oid::db::rfc5280::ID_KP_SERVER_AUTH),
            "clientAuth" => !has(der::oid::db::rfc5280::ID_KP_CLIENT_AUTH),
            _ => true,
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(WorkerError::Acme {
        problem_type: "urn:ietf:params:acme:error:invalidProfile".into(),
        detail: format!(
            "the CA issued a certificate without the extended key usage {} the profile asks \
             for; it was not delivered",
            missing.join(", ")
        ),
        status: 400,
        retry_after: None,
    })
}

fn failure(e: &WorkerError) -> JobFailure {
    let retry_after = e.retry_after();
    match e {
        WorkerError::Acme {
            problem_type,
            detail,
            status,
            ..
        } => {
            let short = problem_type.rsplit(':').next().unwrap_or_default();
            let retryable = matches!(
                short,
                "rateLimited"
                    | "serverInternal"
                    | "badNonce"
                    | "connection"
                    | "dns"
                    | "incorrectResponse"
                    | "unauthorized"
            ) || *status >= 500
                || *status == 429;
            JobFailure {
                retryable,
                problem: Some(pb::AcmeProblem {
                    r#type: problem_type.clone(),
                    detail: detail.clone(),
                    status: u32::from(*status),
                }),
                detail: format!("{problem_type}: {detail}"),
                retry_after,
            }
        }
        WorkerError::Config(m) => JobFailure {
            retryable: true,
            problem: None,
            detail: format!("worker configuration: {m}"),
            retry_after: None,
        },
        // The recorded order could not be read now: whatever the CA said, the job is retried
        // (ordering again is what must not happen), but its problem goes to the registrar.
        WorkerError::OrderUnreachable(inner) => {
            let mut f = failure(inner);
            f.retryable = true;
            f.detail = format!("the recorded order cannot be read now: {}", f.detail);
            f
        }
        other => JobFailure {
            retryable: true,
            problem: None,
            detail: other.to_string(),
            retry_after,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ragw_proto::registrar::v1::worker_service_server::{WorkerService, WorkerServiceServer};
    use tonic::{Request, Response, Status};

    fn leaf_with(ekus: &[rcgen::ExtendedKeyUsagePurpose]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["d1.example.test".into()]).unwrap();
        params.extended_key_usages = ekus.to_vec();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_leaf_without_a_wanted_eku_is_not_delivered() {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        let both = vec!["serverAuth".to_string(), "clientAuth".to_string()];
        let server_only = leaf_with(&[ServerAuth]);
        assert!(check_leaf_ekus(&server_only, &both[..1]).is_ok());
        assert!(check_leaf_ekus(&leaf_with(&[ServerAuth, ClientAuth]), &both).is_ok());
        // No extension at all: unrestricted (RFC 5280 §4.2.1.12).
        assert!(check_leaf_ekus(&leaf_with(&[]), &both).is_ok());
        let e = check_leaf_ekus(&server_only, &both).unwrap_err();
        assert!(e.to_string().contains("clientAuth"), "{e}");
        let f = failure(&e);
        assert!(!f.retryable, "the same CA would issue the same again");
        assert!(f.problem.unwrap().r#type.ends_with(":invalidProfile"));
    }

    fn acme(problem: &str, status: u16) -> WorkerError {
        WorkerError::Acme {
            problem_type: format!("urn:ietf:params:acme:error:{problem}"),
            detail: "d".into(),
            status,
            retry_after: None,
        }
    }

    #[test]
    fn problems_split_into_retryable_and_terminal() {
        for p in [
            "rateLimited",
            "serverInternal",
            "badNonce",
            "connection",
            "dns",
        ] {
            assert!(failure(&acme(p, 400)).retryable, "{p}");
        }
        for p in [
            "badCSR",
            "rejectedIdentifier",
            "caa",
            "malformed",
            "unsupportedIdentifier",
        ] {
            assert!(!failure(&acme(p, 400)).retryable, "{p}");
        }
        // Whatever the type, a 5xx or 429 is the CA's trouble, not the request's.
        assert!(failure(&acme("somethingNew", 503)).retryable);
        assert!(failure(&acme("somethingNew", 429)).retryable);
        assert!(failure(&WorkerError::Http("reset".into())).retryable);
    }

    #[test]
    fn the_problem_and_retry_after_reach_the_registrar() {
        let mut e = acme("rateLimited", 429);
        if let WorkerError::Acme { retry_after, .. } = &mut e {
            *retry_after = Some(Duration::from_secs(120));
        }
        let f = failure(&e);
        let p = f.problem.unwrap();
        assert_eq!(p.r#type, "urn:ietf:params:acme:error:rateLimited");
        assert_eq!(p.status, 429);
        assert_eq!(f.retry_after, Some(Duration::from_secs(120)));
        // Without one, the registrar's backoff alone decides.
        assert_eq!(failure(&acme("rateLimited", 429)).retry_after, None);
    }

    #[test]
    fn an_unreadable_recorded_order_is_retried_not_reordered() {
        let mut inner = acme("malformed", 400);
        if let WorkerError::Acme { retry_after, .. } = &mut inner {
            *retry_after = Some(Duration::from_secs(30));
        }
        let f = failure(&WorkerError::OrderUnreachable(Box::new(inner)));
        assert!(f.retryable);
        assert_eq!(f.retry_after, Some(Duration::from_secs(30)));
    }

    #[test]
    fn only_the_registrar_s_answers_about_the_lease_end_it() {
        for code in [
            tonic::Code::FailedPrecondition,
            tonic::Code::NotFound,
            tonic::Code::PermissionDenied,
        ] {
            assert!(lease_refused(code), "{code:?}");
        }
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::DeadlineExceeded,
            tonic::Code::Internal,
            tonic::Code::Unknown,
            tonic::Code::Cancelled,
        ] {
            assert!(!lease_refused(code), "{code:?}");
        }
    }

    /// A registrar whose Extend succeeds `ok_first` times, then answers `then`.
    #[derive(Clone)]
    struct Registrar(Arc<Script>);

    struct Script {
        ok_first: usize,
        then: tonic::Code,
        extends: AtomicUsize,
        reports: Mutex<Vec<&'static str>>,
    }

    #[tonic::async_trait]
    impl WorkerService for Registrar {
        async fn lease(
            &self,
            _: Request<pb::LeaseRequest>,
        ) -> Result<Response<pb::LeaseResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn extend(
            &self,
            _: Request<pb::ExtendRequest>,
        ) -> Result<Response<pb::ExtendResponse>, Status> {
            if self.0.extends.fetch_add(1, Ordering::SeqCst) < self.0.ok_first {
                return Ok(Response::new(pb::ExtendResponse {
                    lease_deadline_unix_micros: 0,
                    lease_seconds: 3,
                }));
            }
            Err(Status::new(self.0.then, "scripted"))
        }

        async fn record_order(
            &self,
            _: Request<pb::RecordOrderRequest>,
        ) -> Result<Response<pb::RecordOrderResponse>, Status> {
            self.0.reports.lock().unwrap().push("RecordOrder");
            Ok(Response::new(pb::RecordOrderResponse {}))
        }

        async fn complete(
            &self,
            _: Request<pb::CompleteRequest>,
        ) -> Result<Response<pb::CompleteResponse>, Status> {
            self.0.reports.lock().unwrap().push("Complete");
            Ok(Response::new(pb::CompleteResponse {}))
        }

        async fn fail(
            &self,
            _: Request<pb::FailRequest>,
        ) -> Result<Response<pb::FailResponse>, Status> {
            self.0.reports.lock().unwrap().push("Fail");
            Ok(Response::new(pb::FailResponse::default()))
        }

        async fn record_step(
            &self,
            _: Request<pb::RecordStepRequest>,
        ) -> Result<Response<pb::RecordStepResponse>, Status> {
            self.0.reports.lock().unwrap().push("RecordStep");
            Ok(Response::new(pb::RecordStepResponse {}))
        }

        async fn complete_revocation(
            &self,
            _: Request<pb::CompleteRevocationRequest>,
        ) -> Result<Response<pb::CompleteRevocationResponse>, Status> {
            self.0.reports.lock().unwrap().push("CompleteRevocation");
            Ok(Response::new(pb::CompleteRevocationResponse {}))
        }

        async fn fail_revocation(
            &self,
            _: Request<pb::FailRevocationRequest>,
        ) -> Result<Response<pb::FailRevocationResponse>, Status> {
            self.0.reports.lock().unwrap().push("FailRevocation");
            Ok(Response::new(pb::FailRevocationResponse::default()))
        }
    }

    struct NoDns;

    #[async_trait::async_trait]
    impl DnsProvider for NoDns {
        async fn add_txt(&self, _: &str, _: &str) -> Result<(), crate::dns::DnsError> {
            Ok(())
        }
        async fn remove_txt(&self, _: &str, _: &str) -> Result<(), crate::dns::DnsError> {
            Ok(())
        }
        fn name(&self) -> &str {
            "none"
        }
    }

    /// Runs one job against a CA that never answers, so only the lease can end it.
    async fn run_job_until_the_lease_ends(ok_first: usize, then: tonic::Code) -> Arc<Script> {
        run_job_with_leases(ok_first, then, 3, 0).await
    }

    /// Works one job against a scripted registrar until its lease ends: the worker asks for
    /// `asked` seconds, the registrar grants `granted` (0: does not say).
    async fn run_job_with_leases(
        ok_first: usize,
        then: tonic::Code,
        asked: u32,
        granted: u32,
    ) -> Arc<Script> {
        let registrar = Arc::new(Script {
            ok_first,
            then,
            extends: AtomicUsize::new(0),
            reports: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(WorkerServiceServer::new(Registrar(registrar.clone())))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let ca = crate::test_support::silent_server().await;
        let dir = tempfile::tempdir().unwrap();
        let config: WorkerConfig = serde_json::from_value(serde_json::json!({
            "lease_seconds": asked,
            "upstreams": [{
                "directory_url": format!("{ca}/dir"),
                "account_file": dir.path().join("account.json"),
            }],
        }))
        .unwrap();
        let metrics = WorkerMetrics::default();
        let worker = Worker::new(
            "w".into(),
            config,
            channel,
            Arc::new(NoDns),
            metrics.clone(),
        )
        .unwrap();
        let job = pb::Job {
            enrollment_id: "e1".into(),
            lease_token: "0".repeat(32),
            names: vec!["d1.devices.example.com".into()],
            parent_domain: "devices.example.com".into(),
            profile: "default".into(),
            lease_seconds: granted,
            ..Default::default()
        };
        // Not a speed check: a worker counting with its own 300 s instead of the 3 s granted
        // would still be working the job long after this bound.
        tokio::time::timeout(Duration::from_secs(60), worker.work(job, Instant::now()))
            .await
            .expect("the job outlived its lease");
        let lost = metrics
            .jobs
            .get_or_create(&JobLabels {
                result: "lease_lost".into(),
            })
            .get();
        assert_eq!(lost, 1);
        registrar
    }

    #[tokio::test]
    async fn a_refused_extend_abandons_the_job_without_reporting_it() {
        let registrar = run_job_until_the_lease_ends(2, tonic::Code::FailedPrecondition).await;
        assert_eq!(registrar.extends.load(Ordering::SeqCst), 3);
        assert!(registrar.reports.lock().unwrap().is_empty());
    }

    /// A registrar that grants less than asked (its `max_lease`) sets the worker's clock: the
    /// job is abandoned when the granted lease runs out, not the one in the worker's config.
    #[tokio::test]
    async fn the_granted_lease_bounds_the_work_not_the_one_asked_for() {
        let registrar = run_job_with_leases(0, tonic::Code::Unavailable, 300, 3).await;
        assert!(registrar.extends.load(Ordering::SeqCst) >= 1);
        assert!(registrar.reports.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn failing_extends_are_retried_until_the_lease_runs_out() {
        let registrar = run_job_until_the_lease_ends(0, tonic::Code::Unavailable).await;
        assert!(registrar.extends.load(Ordering::SeqCst) >= 2);
        assert!(registrar.reports.lock().unwrap().is_empty());
    }
}
