//! The ACME worker: leases enrollment jobs from the registrar, runs the ACME conversation and
//! answers dns-01 challenges through a [`dns::DnsProvider`].

pub mod acme_http;
pub mod dns;
pub mod job;
pub mod upstream;

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
    },
    #[error("DNS: {0}")]
    Dns(String),
    #[error("registrar: {0}")]
    Registrar(String),
}

impl WorkerError {
    pub fn from_acme(e: instant_acme::Error) -> Self {
        match e {
            instant_acme::Error::Api(p) => WorkerError::Acme {
                problem_type: p.r#type.unwrap_or_default(),
                detail: p.detail.unwrap_or_default(),
                status: p.status.unwrap_or(0),
            },
            other => WorkerError::Http(other.to_string()),
        }
    }
}
