//! EST CSR attributes (RFC 7030 §4.5.2 as clarified by RFC 9908): what the server tells a
//! device to put in its CSR.
//!
//! ragw uses the "legacy" attribute form of RFC 9908 §3.2, which every deployed EST client
//! understands, rather than the new template attribute:
//!
//! ```text
//! CsrAttrs  ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID
//! AttrOrOID ::= CHOICE { oid OBJECT IDENTIFIER, attribute Attribute }
//! ```
//!
//! - the assigned names: one `extensionRequest` attribute holding one `Extensions` with a
//!   subjectAltName of dNSNames;
//! - the key type: an `id-ecPublicKey` attribute whose value is the curve OID, or an
//!   `rsaEncryption` attribute whose value is the modulus size as an INTEGER; Ed25519, which has
//!   no parameters, as the bare `id-Ed25519` OID;
//! - the signature hash: the bare signature algorithm OID (e.g. `ecdsa-with-SHA256`);
//! - optionally the bare `challengePassword` OID.

use const_oid::ObjectIdentifier;
use der::asn1::{Any, Ia5String, OctetString, SetOfVec};
use der::{Decode, Encode, Tag, Tagged};
use ragw_domain::KeyType;
use thiserror::Error;
use x509_cert::attr::Attribute;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::oids;

const CHALLENGE_PASSWORD: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.7");

/// What the server asks of the next CSR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrAttrsRequest {
    /// dNSNames the subjectAltName must carry; none means no extensionRequest attribute.
    pub dns_names: Vec<String>,
    /// The key type to use; the signature hash follows from it.
    pub key: Option<KeyType>,
    /// Whether to ask for the challengePassword attribute (RFC 7030 §3.5 PoP linking).
    pub challenge_password: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CsrAttrsError {
    #[error("{0:?} cannot be a dNSName (it must be ASCII)")]
    BadName(String),
    #[error("cannot encode the CSR attributes: {0}")]
    Encode(String),
    #[error("not a DER CsrAttrs SEQUENCE: {0}")]
    Malformed(String),
}

fn enc(e: der::Error) -> CsrAttrsError {
    CsrAttrsError::Encode(e.to_string())
}

/// The key attribute (or bare OID) and the signature algorithm for a key type.
fn key_elements(key: KeyType) -> Result<(Any, Option<ObjectIdentifier>), CsrAttrsError> {
    let ec = |curve: ObjectIdentifier| -> Result<Any, CsrAttrsError> {
        attribute_any(oids::EC_PUBLIC_KEY, Any::encode_from(&curve).map_err(enc)?)
    };
    Ok(match key {
        KeyType::EcdsaP256 => (ec(oids::SECP256R1)?, Some(oids::ECDSA_WITH_SHA256)),
        KeyType::EcdsaP384 => (ec(oids::SECP384R1)?, Some(oids::ECDSA_WITH_SHA384)),
        KeyType::EcdsaP521 => (ec(oids::SECP521R1)?, Some(oids::ECDSA_WITH_SHA512)),
        KeyType::Rsa { min_bits } => (
            attribute_any(
                oids::RSA_ENCRYPTION,
                Any::encode_from(&min_bits).map_err(enc)?,
            )?,
            Some(oids::SHA256_WITH_RSA),
        ),
        KeyType::Ed25519 => (Any::encode_from(&oids::ED25519).map_err(enc)?, None),
    })
}

fn attribute_any(oid: ObjectIdentifier, value: Any) -> Result<Any, CsrAttrsError> {
    let mut values = SetOfVec::new();
    values.insert(value).map_err(enc)?;
    Any::encode_from(&Attribute { oid, values }).map_err(enc)
}

/// DER `CsrAttrs` for `request`, in the order challengePassword, key type, extensionRequest,
/// signature algorithm (the order of the RFC 9908 examples; clients must not depend on it).
pub fn encode_csr_attrs(request: &CsrAttrsRequest) -> Result<Vec<u8>, CsrAttrsError> {
    let mut items: Vec<Any> = Vec::new();
    if request.challenge_password {
        items.push(Any::encode_from(&CHALLENGE_PASSWORD).map_err(enc)?);
    }
    let key = request.key.map(key_elements).transpose()?;
    let signature = key.as_ref().and_then(|(_, sig)| *sig);
    if let Some((key_item, _)) = key {
        items.push(key_item);
    }
    if !request.dns_names.is_empty() {
        let names = request
            .dns_names
            .iter()
            .map(|n| {
                Ia5String::new(n)
                    .map(GeneralName::DnsName)
                    .map_err(|_| CsrAttrsError::BadName(n.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let san = SubjectAltName(names).to_der().map_err(enc)?;
        let extensions = vec![Extension {
            extn_id: oids::SUBJECT_ALT_NAME,
            critical: false,
            extn_value: OctetString::new(san).map_err(enc)?,
        }];
        items.push(attribute_any(
            oids::EXTENSION_REQUEST,
            Any::encode_from(&extensions).map_err(enc)?,
        )?);
    }
    if let Some(sig) = signature {
        items.push(Any::encode_from(&sig).map_err(enc)?);
    }
    items.to_der().map_err(enc)
}

/// One element of a decoded `CsrAttrs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrOrOid {
    Oid(ObjectIdentifier),
    Attribute(Attribute),
}

/// Decodes a DER `CsrAttrs` (for clients and tests; the server only encodes).
pub fn parse_csr_attrs(der: &[u8]) -> Result<Vec<AttrOrOid>, CsrAttrsError> {
    let malformed = |e: der::Error| CsrAttrsError::Malformed(e.to_string());
    let items = Vec::<Any>::from_der(der).map_err(malformed)?;
    items
        .iter()
        .map(|item| match item.tag() {
            Tag::ObjectIdentifier => item.decode_as().map(AttrOrOid::Oid).map_err(malformed),
            Tag::Sequence => item
                .decode_as()
                .map(AttrOrOid::Attribute)
                .map_err(malformed),
            other => Err(CsrAttrsError::Malformed(format!(
                "an element is a {other}, neither an OID nor an Attribute"
            ))),
        })
        .collect()
}

/// The subjectAltName dNSNames requested by the extensionRequest attribute of decoded
/// `CsrAttrs`.
pub fn requested_dns_names(attrs: &[AttrOrOid]) -> Result<Vec<String>, CsrAttrsError> {
    let malformed = |e: der::Error| CsrAttrsError::Malformed(e.to_string());
    let mut names = Vec::new();
    for item in attrs {
        let AttrOrOid::Attribute(attr) = item else {
            continue;
        };
        if attr.oid != oids::EXTENSION_REQUEST {
            continue;
        }
        for value in attr.values.iter() {
            let extensions: Vec<Extension> = value.decode_as().map_err(malformed)?;
            for ext in extensions
                .iter()
                .filter(|e| e.extn_id == oids::SUBJECT_ALT_NAME)
            {
                let san = SubjectAltName::from_der(ext.extn_value.as_bytes()).map_err(malformed)?;
                for name in san.0 {
                    if let GeneralName::DnsName(dns) = name {
                        names.push(dns.to_string());
                    }
                }
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The RFC 9908-style example of the EST notes, verified against libest
    /// (challengePassword, P-256, SAN pledge-001.iot.example.com, ecdsa-with-SHA256).
    const LIBEST_EXAMPLE: &str = "MGQGCSqGSIb3DQEJBzAVBgcqhkjOPQIBMQoGCCqGSM49AwEHMDYGCSqGSIb3DQEJ\
         DjEpMCcwJQYDVR0RBB4wHIIacGxlZGdlLTAwMS5pb3QuZXhhbXBsZS5jb20GCCqG\
         SM49BAMC";

    #[test]
    fn matches_the_interoperable_example_byte_for_byte() {
        let der = encode_csr_attrs(&CsrAttrsRequest {
            dns_names: vec!["pledge-001.iot.example.com".into()],
            key: Some(KeyType::EcdsaP256),
            challenge_password: true,
        })
        .unwrap();
        let expected = crate::base64::decode_lenient(LIBEST_EXAMPLE.as_bytes(), 4096).unwrap();
        assert_eq!(hex::encode(&der), hex::encode(&expected));
    }

    #[test]
    fn key_types_and_hashes() {
        let cases = [
            (KeyType::EcdsaP384, Some(oids::ECDSA_WITH_SHA384)),
            (KeyType::EcdsaP521, Some(oids::ECDSA_WITH_SHA512)),
            (KeyType::Rsa { min_bits: 3072 }, Some(oids::SHA256_WITH_RSA)),
            (KeyType::Ed25519, None),
        ];
        for (key, sig) in cases {
            let der = encode_csr_attrs(&CsrAttrsRequest {
                dns_names: vec!["a.example.com".into(), "a.local".into()],
                key: Some(key),
                challenge_password: false,
            })
            .unwrap();
            let attrs = parse_csr_attrs(&der).unwrap();
            assert_eq!(
                requested_dns_names(&attrs).unwrap(),
                vec!["a.example.com", "a.local"]
            );
            let bare: Vec<ObjectIdentifier> = attrs
                .iter()
                .filter_map(|a| match a {
                    AttrOrOid::Oid(o) => Some(*o),
                    _ => None,
                })
                .collect();
            match key {
                KeyType::Ed25519 => assert_eq!(bare, vec![oids::ED25519]),
                _ => assert_eq!(bare, vec![sig.unwrap()]),
            }
            if let KeyType::Rsa { .. } = key {
                let AttrOrOid::Attribute(a) = &attrs[0] else {
                    panic!("no key attribute")
                };
                assert_eq!(a.oid, oids::RSA_ENCRYPTION);
                let bits: u32 = a.values.iter().next().unwrap().decode_as().unwrap();
                assert_eq!(bits, 3072);
            }
        }
    }

    #[test]
    fn empty_request_is_an_empty_sequence() {
        let der = encode_csr_attrs(&CsrAttrsRequest::default()).unwrap();
        assert_eq!(der, vec![0x30, 0x00]);
        assert!(parse_csr_attrs(&der).unwrap().is_empty());
    }

    #[test]
    fn refuses_what_it_cannot_encode_or_decode() {
        let e = encode_csr_attrs(&CsrAttrsRequest {
            dns_names: vec!["bücher.example".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(e, CsrAttrsError::BadName(_)));
        assert!(parse_csr_attrs(b"\x30\x03\x02\x01\x00").is_err());
        assert!(parse_csr_attrs(b"garbage").is_err());
    }
}
