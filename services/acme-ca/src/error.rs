//! Errors of the CA's start-up and administration paths (request handling answers with
//! [`Problem`](crate::problem::Problem) documents instead).

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CaError {
    #[error("invalid CA configuration: {0}")]
    Config(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA key material in {}: {reason}", path.display())]
    KeyMaterial { path: PathBuf, reason: String },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("store: {0}")]
    Store(#[from] ragw_store::StoreError),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("network: {0}")]
    Net(#[from] std::io::Error),
    #[error("the intermediate expires at {not_after} and cannot sign a useful leaf; {fix}")]
    IntermediateExhausted { not_after: String, fix: String },
    #[error("{0}")]
    Other(String),
}

pub fn io_at(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}
