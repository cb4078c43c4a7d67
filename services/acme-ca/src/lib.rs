//! ragw's local ACME CA (project issue 3).
//!
//! A real RFC 8555 server for any ACME client: directory (with `newAuthz` and
//! `meta.subdomainAuthAllowed`), nonces valid across replicas, accounts (contacts, external
//! account binding, key change, deactivation), orders, pre-authorization (RFC 8555 §7.4.1),
//! RFC 9444 subdomain authorization, dns-01 and http-01 validation, finalization, certificate
//! download, revocation and a CRL. Certificates follow draft-sweet-iot-acme §3.4.
//!
//! The protocol core ([`Ca::handle`]) is sans-IO: a request (method, path, content type, body)
//! in, a response out, with store calls and challenge validation behind traits. [`serve`] is
//! the thin HTTPS adapter around it.

pub mod b64;
pub mod bench;
pub mod ca;
pub mod client;
pub mod config;
pub mod dns;
pub mod dns_responder;
pub mod error;
pub mod http;
pub mod jws;
pub mod metrics;
pub mod nonce;
pub mod pki;
pub mod policy;
pub mod problem;
pub mod validate;

pub use ca::{Ca, Request, Response};
pub use config::{CaConfig, CaKeyType, EabKey, IssuanceProfile};
pub use error::CaError;
pub use http::{serve, serve_ca};
pub use problem::{Problem, ProblemType};
