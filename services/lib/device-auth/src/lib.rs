//! Device authentication shared by the ragw gateways, so EST and TEAP accept the very same
//! credentials with the very same code:
//! - passwords: per-device argon2 hashes from a password file, or a label-wide bootstrap secret
//!   ([`PasswordChecker`] over a [`BasicAuth`]);
//! - device certificates: a chain to a label's trust anchors (IEEE 802.1AR IDevIDs,
//!   [`CertVerifiers`]), the device identifier taken from a configured field
//!   ([`certificate_identity`]), and the validity check for a certificate ragw issued
//!   ([`check_validity`]; the registrar matches those byte for byte);
//! - bounds on password guessing per user name and server-wide, and on the audit rows refusals
//!   write ([`guard`]);
//! - the configuration sections naming them ([`BasicSection`], [`ClientCertSection`]) and their
//!   validated forms.
//!
//! No transport types here: how credentials arrive (an HTTP Basic header, a TEAP
//! Basic-Password-Auth TLV, a TLS handshake) is the gateway's business.

mod check;
mod config;
pub mod guard;

pub use check::{
    CertVerifiers, PasswordChecker, ValidityError, certificate_identity, check_validity,
};
pub use config::{
    AuthConfigError, BasicAuth, BasicSection, CertIdentityField, ClientCertAuth, ClientCertSection,
    SERIAL_NUMBER, Secret, basic_from_section, client_cert_from_section, parse_identity_kind,
    parse_password_file, parse_pem_certs, read_password_file, read_pem_certs,
};
