//! The three error classes every gateway maps onto its own protocol, as
//! draft-ietf-acme-integrations recommends (ACME problem → CMC failInfo → TEAP Error TLV).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// CMC badRequest; TEAP 1025 "Bad CSR" (or 1022/1023 for the algorithm/extension cases).
    BadRequest,
    /// CMC badIdentity; TEAP 1024 "Bad Identity in CSR".
    BadIdentity,
    /// CMC internalCAError; TEAP 1026 "Internal CA Error".
    InternalCaError,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::BadRequest => "bad_request",
            ErrorClass::BadIdentity => "bad_identity",
            ErrorClass::InternalCaError => "internal_ca_error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bad_request" => Some(ErrorClass::BadRequest),
            "bad_identity" => Some(ErrorClass::BadIdentity),
            "internal_ca_error" => Some(ErrorClass::InternalCaError),
            _ => None,
        }
    }

    /// CMC failInfo name (RFC 5272 §6.1.4 CMCFailInfo).
    pub fn cmc_fail_info(self) -> &'static str {
        match self {
            ErrorClass::BadRequest => "badRequest",
            ErrorClass::BadIdentity => "badIdentity",
            ErrorClass::InternalCaError => "internalCAError",
        }
    }

    /// TEAP Error TLV code (RFC 9930 §4.2.6) for the general case of the class.
    pub fn teap_error_code(self) -> u32 {
        match self {
            ErrorClass::BadRequest => 1025,
            ErrorClass::BadIdentity => 1024,
            ErrorClass::InternalCaError => 1026,
        }
    }

    /// Maps an ACME problem type (RFC 8555 §6.7) as draft-ietf-acme-integrations recommends.
    pub fn from_acme_problem(problem_type: &str) -> Self {
        let short = problem_type
            .strip_prefix("urn:ietf:params:acme:error:")
            .unwrap_or(problem_type);
        match short {
            "badCSR" | "caa" | "badSignatureAlgorithm" | "badPublicKey" => ErrorClass::BadRequest,
            "rejectedIdentifier" | "unsupportedIdentifier" => ErrorClass::BadIdentity,
            _ => ErrorClass::InternalCaError,
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acme_problems_map_as_the_integrations_draft_says() {
        assert_eq!(
            ErrorClass::from_acme_problem("urn:ietf:params:acme:error:badCSR"),
            ErrorClass::BadRequest
        );
        assert_eq!(ErrorClass::from_acme_problem("caa"), ErrorClass::BadRequest);
        assert_eq!(
            ErrorClass::from_acme_problem("urn:ietf:params:acme:error:rejectedIdentifier"),
            ErrorClass::BadIdentity
        );
        assert_eq!(
            ErrorClass::from_acme_problem("urn:ietf:params:acme:error:serverInternal"),
            ErrorClass::InternalCaError
        );
        // The CA cannot issue the profile's certificate type: nothing the device can fix.
        assert_eq!(
            ErrorClass::from_acme_problem("urn:ietf:params:acme:error:invalidProfile"),
            ErrorClass::InternalCaError
        );
        assert_eq!(ErrorClass::BadIdentity.teap_error_code(), 1024);
        assert_eq!(ErrorClass::BadRequest.teap_error_code(), 1025);
        assert_eq!(ErrorClass::InternalCaError.teap_error_code(), 1026);
    }

    #[test]
    fn names_round_trip() {
        for c in [
            ErrorClass::BadRequest,
            ErrorClass::BadIdentity,
            ErrorClass::InternalCaError,
        ] {
            assert_eq!(ErrorClass::parse(c.as_str()), Some(c));
        }
    }
}
