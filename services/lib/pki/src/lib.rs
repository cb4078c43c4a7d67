//! PKI helpers for ragw: PKCS#10 CSR parsing (with proof-of-possession check) and the
//! enrollment policy checks a CSR must pass before it reaches a CA.
//!
//! Two steps, usable separately or through [`parse_and_check`]:
//!
//! 1. [`parse_csr`] decodes the DER, verifies the self-signature, determines the key type and
//!    extracts the subjectAltName entries and the subject common name. Structural problems,
//!    unsupported algorithms and names that cannot be certified at all are refused here.
//! 2. [`check_csr`] applies a [`Profile`](ragw_domain::Profile) and the names assigned to the
//!    device ([`AssignedNames`](ragw_domain::profile::AssignedNames)).
//!
//! Every refusal is a [`CsrError`] whose message says what the CSR had and what was expected;
//! [`CsrError::class`] and [`CsrError::teap_error_code`] map it onto the protocols.

pub mod base64;
mod crl;
mod csr;
pub mod csrattrs;
mod error;
mod oids;
pub mod pkcs7;
mod policy;

#[cfg(test)]
mod test_support;

pub use crl::{CrlError, MAX_CRL_DER_LEN, RevokedSerial, crl_distribution_points, verify_crl};
pub use csr::{ChainError, MAX_CSR_DER_LEN, ParsedCsr, check_chain, parse_csr};
pub use csrattrs::{CsrAttrsRequest, encode_csr_attrs};
pub use error::CsrError;
pub use pkcs7::{certs_only, parse_certs_only};
pub use policy::{check_csr, parse_and_check};
