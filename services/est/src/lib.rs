//! ragw's EST gateway (RFC 7030, with RFC 8951 and RFC 9908).
//!
//! Devices call `/.well-known/est/[<label>/]{cacerts,csrattrs,simpleenroll,simplereenroll}`
//! over HTTPS. The gateway authenticates the device (TLS client certificate such as an IDevID,
//! or HTTP Basic), asks the registrar over gRPC (role gateway) for the device's names or an
//! enrollment, and answers in EST's formats. It keeps no state that matters: any replica can
//! answer any retry, because the registrar makes enrollments idempotent.
//!
//! - [`gateway`]: the sans-IO core ([`Gateway`]): request in, response or registrar call out.
//! - [`server`]: the thin shell: TCP, rustls, hyper, tonic ([`serve`], [`EstServer`]).
//! - [`header_case`]: canonical header-name spelling on HTTP/1 responses.
//! - [`config`]: the `[est]` file section ([`EstSection`]) and the runtime [`EstConfig`].

mod auth;
pub mod config;
pub mod gateway;
/// Password-guessing bounds and refusal audit budgets, shared with the TEAP gateway.
pub use ragw_device_auth::guard;
pub mod header_case;
pub mod proxy;
mod ratelimit;
pub mod server;
mod tls;

pub use config::{
    BasicAuth, CertIdentityField, ClientCertAuth, ConfigError, EnrollmentTiming, EstConfig,
    EstSection, LabelConfig, Limits, Secret, TrustedProxy,
};
pub use gateway::{Gateway, HttpRequest, HttpResponse, Operation, Peer};
pub use server::{EstError, EstServer, serve};
pub use tls::ServerTls;
