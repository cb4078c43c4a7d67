//! The ACME worker: leases enrollment jobs from the registrar, runs the ACME conversation and
//! answers dns-01 challenges through a [`dns::DnsProvider`].

pub mod acme_http;
pub mod dns;
pub mod job;
pub mod steps;
pub mod upstream;

#[cfg(test)]
mod test_support;

use std::time::Duration;

use thiserror::Error;

/// Why a job or the worker's set-up failed.
#[derive(Debug, Error)]
pub enum WorkerError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("ACME problem {problem_type} (HTTP {status}): {detail}")]
    Acme {
        problem_type: String,
        detail: String,
        status: u16,
        /// The Retry-After of the answer that carried this problem.
        retry_after: Option<Duration>,
    },
    #[error("DNS: {0}")]
    Dns(String),
    #[error("registrar: {0}")]
    Registrar(String),
    /// The recorded order could not be read for a reason that may pass (network, 5xx, rate
    /// limit): the job is retried later rather than ordering again.
    #[error("the recorded order cannot be read now: {0}")]
    OrderUnreachable(Box<WorkerError>),
}

impl WorkerError {
    /// Keeps the Retry-After that [`acme_http::AcmeHttp`] attached to a throttled answer.
    pub fn from_acme(e: instant_acme::Error) -> Self {
        match e {
            instant_acme::Error::Api(p) => WorkerError::Acme {
                problem_type: p.r#type.unwrap_or_default(),
                detail: p.detail.unwrap_or_default(),
                status: p.status.unwrap_or(0),
                retry_after: None,
            },
            instant_acme::Error::Other(e) => match e.downcast::<acme_http::Throttled>() {
                Ok(t) => WorkerError::from(*t),
                Err(e) => WorkerError::Http(e.to_string()),
            },
            other => WorkerError::Http(other.to_string()),
        }
    }

    /// The wait the CA asked for with the answer behind this error.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            WorkerError::Acme { retry_after, .. } => *retry_after,
            WorkerError::OrderUnreachable(e) => e.retry_after(),
            _ => None,
        }
    }
}
