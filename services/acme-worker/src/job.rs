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

use crate::WorkerError;
use crate::acme_http::{AcmeHttp, RequestLabels};
use crate::dns::DnsProvider;
use crate::upstream::{Upstream, UpstreamConfig};

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
    pub fn register(&self, registry: &MetricsRegistry) {
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
}

/// How a job ended, for the registrar.
struct JobFailure {
    retryable: bool,
    problem: Option<pb::AcmeProblem>,
    detail: String,
    retry_after: Option<Duration>,
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
            upstreams.push(Arc::new(Upstream::new(u.clone(), http)));
        }
        Ok(Arc::new(Worker {
            id,
            config,
            registrar: WorkerServiceClient::new(registrar),
            upstreams,
            dns,
            metrics,
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
                    for job in rsp.into_inner().jobs {
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            break;
                        };
                        let me = self.clone();
                        tokio::spawn(async move {
                            me.work(job).await;
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

    async fn work(&self, job: pb::Job) {
        let span =
            tracing::info_span!("job", enrollment = %job.enrollment_id, attempt = job.attempt);
        let _enter = span.enter();
        drop(_enter);
        // Keep the lease alive while the ACME conversation runs.
        let keeper = {
            let mut client = self.registrar.clone();
            let (id, token) = (job.enrollment_id.clone(), job.lease_token.clone());
            let secs = self.config.lease_seconds;
            tokio::spawn(async move {
                let every = Duration::from_secs(u64::from(secs.max(3) / 3));
                loop {
                    tokio::time::sleep(every).await;
                    if let Err(s) = client
                        .extend(pb::ExtendRequest {
                            enrollment_id: id.clone(),
                            lease_token: token.clone(),
                            lease_seconds: secs,
                        })
                        .await
                    {
                        tracing::warn!(error = %s.message(), "could not extend the lease");
                        return;
                    }
                }
            })
        };
        let outcome = self.issue(&job).await;
        keeper.abort();
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
                        problem: f.problem,
                        detail: f.detail.chars().take(4000).collect(),
                        retry_after_seconds: f
                            .retry_after
                            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
                            .unwrap_or(0),
                    })
                    .await
                {
                    tracing::error!(enrollment = %job.enrollment_id, error = %s.message(), "could not report the failure");
                }
            }
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
        let upstream = self
            .upstream_for(&job.profile)
            .map_err(|e| failure(&e, None))?;
        let result = self.issue_with(&upstream, job).await;
        result.map_err(|e| failure(&e, upstream.http.take_retry_after()))
    }

    async fn issue_with(
        &self,
        upstream: &Upstream,
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
                });
            }
            identifiers.push(Identifier::Dns(name.clone()));
        }
        let mut order = match self.resume(account, job).await {
            Some(order) => order,
            None => {
                // Pre-authorize the parent domain once, so the order below comes back ready.
                let preauthorized = upstream
                    .ensure_parent_authorization(&job.parent_domain, self.dns.as_ref())
                    .await?;
                let order = account
                    .new_order(&NewOrder::new(&identifiers))
                    .await
                    .map_err(WorkerError::from_acme)?;
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
            self.answer_challenges(&mut order).await?;
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
        Ok(chain)
    }

    /// The recorded order, when it is still usable.
    async fn resume(&self, account: &instant_acme::Account, job: &pb::Job) -> Option<Order> {
        if job.acme_order_url.is_empty() {
            return None;
        }
        match account.order(job.acme_order_url.clone()).await {
            Ok(mut order) => {
                if order.state().status == OrderStatus::Invalid {
                    return None;
                }
                tracing::info!(url = %job.acme_order_url, "resuming the recorded order");
                Some(order)
            }
            Err(e) => {
                tracing::warn!(url = %job.acme_order_url, error = %e, "cannot resume the recorded order; placing a new one");
                None
            }
        }
    }

    /// dns-01 for every authorization that is not valid yet; records are removed afterwards,
    /// whether validation passed or not.
    async fn answer_challenges(&self, order: &mut Order) -> Result<(), WorkerError> {
        let mut published: Vec<(String, String)> = Vec::new();
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
                self.dns
                    .add_txt(&record, &value)
                    .await
                    .map_err(|e| WorkerError::Dns(e.to_string()))?;
                published.push((record, value));
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
                });
            }
            Ok(())
        }
        .await;
        for (record, value) in published {
            if let Err(e) = self.dns.remove_txt(&record, &value).await {
                tracing::warn!(error = %e, record, "could not remove a challenge record");
            }
        }
        result
    }
}

/// Retryable or not, as draft-ietf-acme-integrations maps ACME problems.
fn failure(e: &WorkerError, retry_after: Option<Duration>) -> JobFailure {
    match e {
        WorkerError::Acme {
            problem_type,
            detail,
            status,
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

    fn acme(problem: &str, status: u16) -> WorkerError {
        WorkerError::Acme {
            problem_type: format!("urn:ietf:params:acme:error:{problem}"),
            detail: "d".into(),
            status,
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
            assert!(failure(&acme(p, 400), None).retryable, "{p}");
        }
        for p in [
            "badCSR",
            "rejectedIdentifier",
            "caa",
            "malformed",
            "unsupportedIdentifier",
        ] {
            assert!(!failure(&acme(p, 400), None).retryable, "{p}");
        }
        // Whatever the type, a 5xx or 429 is the CA's trouble, not the request's.
        assert!(failure(&acme("somethingNew", 503), None).retryable);
        assert!(failure(&acme("somethingNew", 429), None).retryable);
        assert!(failure(&WorkerError::Http("reset".into()), None).retryable);
    }

    #[test]
    fn the_problem_and_retry_after_reach_the_registrar() {
        let f = failure(&acme("rateLimited", 429), Some(Duration::from_secs(120)));
        let p = f.problem.unwrap();
        assert_eq!(p.r#type, "urn:ietf:params:acme:error:rateLimited");
        assert_eq!(p.status, 429);
        assert_eq!(f.retry_after, Some(Duration::from_secs(120)));
    }
}
