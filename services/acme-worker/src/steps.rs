//! ACME steps the registrar's audit log must show (WorkerService.RecordStep): the account, the
//! parent domain's pre-authorization, and every dns-01 record published or removed.

use std::time::Duration;

use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::worker_service_client::WorkerServiceClient;
use tonic::transport::Channel;

use crate::WorkerError;

/// The job a step belongs to: its enrollment and the lease token that proves it is ours.
#[derive(Clone, Copy)]
pub struct JobRef<'a> {
    pub enrollment_id: &'a str,
    pub lease_token: &'a str,
}

impl<'a> JobRef<'a> {
    pub fn of(job: &'a pb::Job) -> Self {
        JobRef {
            enrollment_id: &job.enrollment_id,
            lease_token: &job.lease_token,
        }
    }
}

/// One step to record.
pub struct Step<'a> {
    pub kind: pb::WorkerStep,
    pub job: Option<JobRef<'a>>,
    pub directory_url: &'a str,
    pub subject: &'a str,
    pub detail: &'a str,
    pub expires_unix_micros: i64,
}

/// Sends steps to the registrar as this worker.
#[derive(Clone)]
pub struct StepRecorder {
    registrar: WorkerServiceClient<Channel>,
    worker_id: String,
}

impl StepRecorder {
    pub fn new(registrar: WorkerServiceClient<Channel>, worker_id: String) -> Self {
        StepRecorder {
            registrar,
            worker_id,
        }
    }

    fn request(&self, step: &Step<'_>) -> pb::RecordStepRequest {
        let (enrollment_id, lease_token) = step
            .job
            .map(|j| (j.enrollment_id.to_string(), j.lease_token.to_string()))
            .unwrap_or_default();
        pb::RecordStepRequest {
            step: step.kind as i32,
            enrollment_id,
            lease_token,
            directory_url: step.directory_url.to_string(),
            subject: step.subject.to_string(),
            detail: step.detail.to_string(),
            expires_unix_micros: step.expires_unix_micros,
            worker_id: self.worker_id.clone(),
        }
    }

    /// Records `step`. Callers record a change before making it where they can (a dns-01
    /// record is only published once its audit event is stored), so a failure here stops the
    /// change.
    pub async fn record(&self, step: Step<'_>) -> Result<(), WorkerError> {
        let request = self.request(&step);
        self.registrar
            .clone()
            .record_step(request)
            .await
            .map(|_| ())
            .map_err(|s| refused(step.kind, &s))
    }

    /// Records a step that already happened, in the background: a registrar that cannot be
    /// reached is asked again for about a minute, and only then is the gap logged, as undoing
    /// the change would not make the log more complete.
    pub async fn record_done(&self, step: Step<'_>) {
        let request = self.request(&step);
        let kind = step.kind;
        let registrar = self.registrar.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(500);
            for attempt in 1..=RECORD_ATTEMPTS {
                match registrar.clone().record_step(request.clone()).await {
                    Ok(_) => return,
                    Err(s) if attempt == RECORD_ATTEMPTS || !passing(s.code()) => {
                        tracing::warn!(error = %refused(kind, &s), "an ACME step is missing from the audit log");
                        return;
                    }
                    Err(_) => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(16));
                    }
                }
            }
        });
    }
}

/// Attempts to record a step that already happened (about a minute of backoff in all).
const RECORD_ATTEMPTS: u32 = 7;

/// Errors that another attempt may not see: the registrar down, busy or slow.
fn passing(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
            | tonic::Code::Internal
            | tonic::Code::Unknown
    )
}

fn refused(kind: pb::WorkerStep, s: &tonic::Status) -> WorkerError {
    WorkerError::Registrar(format!(
        "could not audit {}: {} ({:?})",
        kind.as_str_name(),
        s.message(),
        s.code()
    ))
}
