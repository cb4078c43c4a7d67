//! Why a CSR was refused.

use std::net::IpAddr;

use ragw_domain::{ErrorClass, KeyType};
use thiserror::Error;

/// A CSR refusal. Every message names what the CSR had and, where there is one, what was
/// expected, so it can be shown to the device operator as is.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CsrError {
    /// The DER is longer than [`MAX_CSR_DER_LEN`](crate::MAX_CSR_DER_LEN).
    #[error("the CSR is {len} bytes long; at most {max} bytes are accepted")]
    TooLarge { len: usize, max: usize },

    /// Empty input, not DER, not a PKCS#10 CertificationRequest, wrong version, trailing bytes,
    /// duplicate extensions, … The string says which.
    #[error("malformed CSR: {0}")]
    Malformed(String),

    /// The self-signature does not verify: no proof of possession of the private key.
    #[error(
        "the CSR's {algorithm} signature does not verify with the CSR's own public key, so it \
         does not prove possession of the private key"
    )]
    BadSignature { algorithm: &'static str },

    /// The CSR is signed with an algorithm ragw does not verify (RSA-PSS, SHA-1, …).
    #[error(
        "the CSR is signed with {algorithm}, which is not supported; use ecdsa-with-SHA256, \
         ecdsa-with-SHA384, ecdsa-with-SHA512, sha256WithRSAEncryption, \
         sha384WithRSAEncryption, sha512WithRSAEncryption or Ed25519"
    )]
    UnsupportedSignatureAlgorithm { algorithm: String },

    /// The signature algorithm belongs to another key family than the public key.
    #[error("the CSR is signed with {algorithm}, which cannot be made with its {key} public key")]
    SignatureKeyMismatch {
        algorithm: &'static str,
        key: KeyType,
    },

    /// A key type ragw does not handle at all (unknown curve, RSA under 2048 bits, …).
    #[error(
        "the CSR's public key is {key}, which is not supported; use an ECDSA key on P-256, \
         P-384 or P-521, an Ed25519 key or an RSA key of 2048 to 8192 bits"
    )]
    UnsupportedKey { key: String },

    /// A supported key type that the profile does not allow.
    #[error(
        "the CSR's public key is {found}, which this profile does not allow; allowed: {}",
        allowed_keys(.allowed)
    )]
    KeyNotAllowed {
        found: KeyType,
        allowed: Vec<KeyType>,
    },

    /// An unknown extension marked critical in the extensionRequest.
    #[error(
        "the CSR requests the critical extension {extension}, which is not supported; drop it \
         or mark it non-critical"
    )]
    UnsupportedExtension { extension: String },

    /// A subjectAltName entry other than dNSName or iPAddress.
    #[error(
        "the CSR's subjectAltName has an {kind} entry{}; only dNSName and iPAddress entries \
         are accepted",
        value_suffix(.value)
    )]
    UnsupportedSanType {
        kind: &'static str,
        value: Option<String>,
    },

    /// A dNSName entry that is not a syntactically valid host name (wildcards included).
    #[error(
        "the CSR's subjectAltName dNSName {name:?} is not a valid host name (dot-separated \
         labels of 1-63 letters, digits or hyphens, no wildcards, at most 253 characters)"
    )]
    BadName { name: String },

    /// The device has no name yet: names are assigned when it asks for its CSR attributes, so
    /// no CSR it could have built names it correctly, and an enrollment must not allocate one.
    #[error(
        "no name is assigned to this device in profile {profile:?} yet: ask for the CSR \
         attributes first (EST /csrattrs or the TEAP CSR-Attributes TLV) and put the dNSName \
         they carry in the CSR's subjectAltName"
    )]
    NoNameAssigned { profile: String },

    /// A dNSName that is not assigned to this device.
    #[error(
        "the CSR asks for {name:?}, but this device is assigned {}",
        quoted_list(.expected)
    )]
    NameNotAssigned { name: String, expected: Vec<String> },

    /// The CSR lacks (some of) the names assigned to the device.
    #[error(
        "the CSR does not ask for all the names this device is assigned: its subjectAltName \
         must contain the dNSName{} {}",
        if .expected.len() == 1 { "" } else { "s" },
        quoted_list(.expected)
    )]
    MissingNames { expected: Vec<String> },

    /// `localhost` or a name under it.
    #[error("the CSR asks for {name:?}; localhost names are never certified")]
    Localhost { name: String },

    /// An iPAddress entry while the profile allows none.
    #[error("the CSR asks for the IP address {ip}, but this profile allows no IP addresses")]
    IpNotAllowed { ip: IpAddr },

    /// An iPAddress entry outside the private, link-local and loopback ranges.
    #[error(
        "the CSR asks for the IP address {ip}, which is not private, link-local or loopback; \
         only those may be certified"
    )]
    PublicIp { ip: IpAddr },

    /// The subject common name is not one of the dNSName entries.
    #[error(
        "the CSR's subject common name {common_name:?} is not one of its subjectAltName dNSNames \
         ({}); drop the common name or make it one of them",
        quoted_list_or_none(.dns_names)
    )]
    CommonNameNotInSans {
        common_name: String,
        dns_names: Vec<String>,
    },
}

impl CsrError {
    /// The protocol-independent class: name problems are `BadIdentity`, everything else
    /// `BadRequest`.
    pub fn class(&self) -> ErrorClass {
        match self {
            CsrError::NameNotAssigned { .. }
            | CsrError::NoNameAssigned { .. }
            | CsrError::MissingNames { .. }
            | CsrError::Localhost { .. }
            | CsrError::PublicIp { .. }
            | CsrError::IpNotAllowed { .. }
            | CsrError::CommonNameNotInSans { .. }
            | CsrError::UnsupportedSanType { .. }
            | CsrError::BadName { .. } => ErrorClass::BadIdentity,
            CsrError::TooLarge { .. }
            | CsrError::Malformed(_)
            | CsrError::BadSignature { .. }
            | CsrError::UnsupportedSignatureAlgorithm { .. }
            | CsrError::SignatureKeyMismatch { .. }
            | CsrError::UnsupportedKey { .. }
            | CsrError::KeyNotAllowed { .. }
            | CsrError::UnsupportedExtension { .. } => ErrorClass::BadRequest,
        }
    }

    /// TEAP Error TLV code (RFC 9930 §4.2.6): 1022 Unsupported Algorithm in CSR, 1023
    /// Unsupported Extension in CSR, 1024 Bad Identity in CSR, 1025 Bad CSR.
    pub fn teap_error_code(&self) -> u32 {
        match self {
            CsrError::UnsupportedSignatureAlgorithm { .. }
            | CsrError::UnsupportedKey { .. }
            | CsrError::KeyNotAllowed { .. } => 1022,
            CsrError::UnsupportedExtension { .. } => 1023,
            other => other.class().teap_error_code(),
        }
    }
}

/// `"a"`, `"a" and "b"`, `"a", "b" and "c"`.
pub(crate) fn quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    match quoted.split_last() {
        None => "no name".to_string(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

fn quoted_list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "it has none".to_string()
    } else {
        quoted_list(items)
    }
}

fn allowed_keys(keys: &[KeyType]) -> String {
    if keys.is_empty() {
        return "none".to_string();
    }
    keys.iter()
        .map(|k| match k {
            KeyType::Rsa { min_bits } => format!("rsa-{min_bits} or longer"),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn value_suffix(value: &Option<String>) -> String {
    match value {
        Some(v) => format!(" ({v:?})"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_naturally() {
        assert_eq!(quoted_list(&[]), "no name");
        assert_eq!(quoted_list(&["a".into()]), "\"a\"");
        assert_eq!(quoted_list(&["a".into(), "b".into()]), "\"a\" and \"b\"");
        assert_eq!(
            quoted_list(&["a".into(), "b".into(), "c".into()]),
            "\"a\", \"b\" and \"c\""
        );
    }

    #[test]
    fn classes_and_teap_codes() {
        let e = CsrError::NameNotAssigned {
            name: "foo.example.com".into(),
            expected: vec!["abcdefghi.devices.example.com".into()],
        };
        assert_eq!(e.class(), ErrorClass::BadIdentity);
        assert_eq!(e.teap_error_code(), 1024);
        assert_eq!(
            e.to_string(),
            "the CSR asks for \"foo.example.com\", but this device is assigned \
             \"abcdefghi.devices.example.com\""
        );

        let e = CsrError::KeyNotAllowed {
            found: KeyType::Rsa { min_bits: 2048 },
            allowed: vec![KeyType::EcdsaP256, KeyType::Rsa { min_bits: 3072 }],
        };
        assert_eq!(e.class(), ErrorClass::BadRequest);
        assert_eq!(e.teap_error_code(), 1022);
        assert!(
            e.to_string()
                .contains("rsa-2048, which this profile does not allow; allowed: ecdsa-p256, rsa-3072 or longer"),
            "{e}"
        );

        let e = CsrError::UnsupportedExtension {
            extension: "1.2.3.4".into(),
        };
        assert_eq!(
            (e.class(), e.teap_error_code()),
            (ErrorClass::BadRequest, 1023)
        );
        let e = CsrError::BadSignature {
            algorithm: "ecdsa-with-SHA256",
        };
        assert_eq!(
            (e.class(), e.teap_error_code()),
            (ErrorClass::BadRequest, 1025)
        );
        let e = CsrError::UnsupportedSanType {
            kind: "rfc822Name",
            value: Some("dev@example.com".into()),
        };
        assert_eq!(
            (e.class(), e.teap_error_code()),
            (ErrorClass::BadIdentity, 1024)
        );
        assert!(
            e.to_string()
                .contains("rfc822Name entry (\"dev@example.com\")")
        );
    }
}
