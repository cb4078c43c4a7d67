//! PKCS#10 parsing: structure, proof of possession, key type, requested names.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use const_oid::ObjectIdentifier;
use der::asn1::{AnyRef, Ia5StringRef, PrintableStringRef, UintRef, Utf8StringRef};
use der::{Decode, Header, Reader, SliceReader, Tag, Tagged};
use ragw_domain::KeyType;
use ragw_domain::names::{is_valid_dns_name, normalize_dns_name};
use ragw_domain::profile::MIN_RSA_BITS;
use sha2::{Digest, Sha256};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::error::CsrError;
use crate::oids;

/// The largest CSR accepted, in DER bytes. An RSA-8192 CSR with a handful of names is well
/// under 3 KiB.
pub const MAX_CSR_DER_LEN: usize = 16 * 1024;

/// The largest RSA modulus accepted (the limit of aws-lc-rs' PKCS #1 verifiers).
const MAX_RSA_BITS: u32 = 8192;

/// A CSR whose structure and self-signature have been verified. Policy is not applied yet: see
/// [`check_csr`](crate::check_csr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCsr {
    /// The DER as received.
    pub der: Vec<u8>,
    /// SHA-256 of [`der`](Self::der).
    pub sha256: [u8; 32],
    /// The concrete key type; for RSA `min_bits` is the actual modulus length.
    pub key: KeyType,
    /// Name of the signature algorithm, e.g. `ecdsa-with-SHA256`, `sha256WithRSAEncryption`,
    /// `Ed25519`.
    pub signature_algorithm: &'static str,
    /// subjectAltName dNSNames, normalized (lower case, no trailing dot), in CSR order, without
    /// duplicates.
    pub dns_names: Vec<String>,
    /// subjectAltName iPAddresses, in CSR order, without duplicates.
    pub ip_addresses: Vec<IpAddr>,
    /// The subject common name as written in the CSR, if there is one.
    pub subject_common_name: Option<String>,
}

impl ParsedCsr {
    /// Hex of [`sha256`](Self::sha256), for logs and audit records.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// Decodes a DER PKCS#10 CSR and verifies its self-signature.
///
/// Refuses (with [`CsrError::Malformed`] unless noted) empty input, input over
/// [`MAX_CSR_DER_LEN`] ([`CsrError::TooLarge`]), anything that is not exactly one DER
/// CertificationRequest of version v1, unsupported keys and signature algorithms, a signature
/// that does not verify ([`CsrError::BadSignature`]), more than one extensionRequest
/// attribute, repeated extensions, unknown critical extensions
/// ([`CsrError::UnsupportedExtension`]), subjectAltName entries other than dNSName and
/// iPAddress ([`CsrError::UnsupportedSanType`]) and invalid host names
/// ([`CsrError::BadName`]).
pub fn parse_csr(der: &[u8]) -> Result<ParsedCsr, CsrError> {
    if der.is_empty() {
        return Err(malformed("the CSR is empty (0 bytes)"));
    }
    if der.len() > MAX_CSR_DER_LEN {
        return Err(CsrError::TooLarge {
            len: der.len(),
            max: MAX_CSR_DER_LEN,
        });
    }
    let (req, tbs) = decode(der)?;

    let key = key_type(&req.info.public_key)?;
    let sig = SigAlg::from_identifier(&req.algorithm)?;
    let verifier = sig.verifier(key)?;
    let signature = req
        .signature
        .as_bytes()
        .ok_or_else(|| malformed("the signature BIT STRING has unused bits"))?;
    let public_key = public_key_bytes(&req.info.public_key)?;
    UnparsedPublicKey::new(verifier, public_key)
        .verify(tbs, signature)
        .map_err(|_| CsrError::BadSignature {
            algorithm: sig.name,
        })?;

    let extensions = requested_extensions(&req.info)?;
    let mut names = SanNames::default();
    for ext in &extensions {
        if ext.extn_id == oids::SUBJECT_ALT_NAME {
            names.parse(ext.extn_value.as_bytes())?;
        }
    }
    let subject_common_name = common_name(&req.info.subject)?;

    Ok(ParsedCsr {
        der: der.to_vec(),
        sha256: Sha256::digest(der).into(),
        key,
        signature_algorithm: sig.name,
        dns_names: names.dns,
        ip_addresses: names.ips,
        subject_common_name,
    })
}

fn malformed(reason: impl Into<String>) -> CsrError {
    CsrError::Malformed(reason.into())
}

fn not_pkcs10(e: der::Error) -> CsrError {
    malformed(format!(
        "not a DER-encoded PKCS#10 CertificationRequest ({e})"
    ))
}

/// Decodes the request and returns it with the DER of `certificationRequestInfo` exactly as
/// received (the signed bytes: re-encoding could differ, e.g. `SET OF` order).
fn decode(der: &[u8]) -> Result<(CertReq, &[u8]), CsrError> {
    let mut reader = SliceReader::new(der).map_err(not_pkcs10)?;
    let req = match CertReq::decode(&mut reader) {
        Ok(req) => req,
        Err(e) => return Err(version_problem(der).unwrap_or_else(|| not_pkcs10(e))),
    };
    if !reader.is_finished() {
        return Err(malformed(format!(
            "{} trailing byte(s) after the CertificationRequest",
            reader.remaining_len()
        )));
    }
    let tbs = info_bytes(der).map_err(not_pkcs10)?;
    Ok((req, tbs))
}

fn info_bytes(der: &[u8]) -> der::Result<&[u8]> {
    let mut reader = SliceReader::new(der)?;
    Header::decode(&mut reader)?;
    reader.tlv_bytes()
}

/// A clearer message than the decoder's when the only problem is the version number.
fn version_problem(der: &[u8]) -> Option<CsrError> {
    let mut reader = SliceReader::new(der).ok()?;
    for _ in 0..2 {
        if Header::decode(&mut reader).ok()?.tag() != Tag::Sequence {
            return None;
        }
    }
    let version = AnyRef::decode(&mut reader).ok()?;
    if version.tag() != Tag::Integer || version.value() == [0] {
        return None;
    }
    let shown = match version.value() {
        [v] if *v < 0x80 => v.to_string(),
        _ => "out of range".to_string(),
    };
    Some(malformed(format!(
        "the CertificationRequest version is {shown}; only v1 (0) exists"
    )))
}

pub(crate) fn public_key_bytes(spki: &SubjectPublicKeyInfoOwned) -> Result<&[u8], CsrError> {
    spki.subject_public_key
        .as_bytes()
        .ok_or_else(|| malformed("the subjectPublicKey BIT STRING has unused bits"))
}

fn params_absent_or_null(alg: &AlgorithmIdentifierOwned) -> bool {
    alg.parameters.as_ref().is_none_or(|p| p.is_null())
}

fn key_type(spki: &SubjectPublicKeyInfoOwned) -> Result<KeyType, CsrError> {
    key_type_with_min_rsa(spki, MIN_RSA_BITS)
}

/// Smallest RSA key accepted for a CA certificate in an upstream's chain (public CAs still use
/// 2048-bit intermediates); device keys need [`MIN_RSA_BITS`].
pub(crate) const MIN_CA_RSA_BITS: u32 = 2048;

pub(crate) fn key_type_with_min_rsa(
    spki: &SubjectPublicKeyInfoOwned,
    min_rsa_bits: u32,
) -> Result<KeyType, CsrError> {
    let alg = &spki.algorithm;
    if alg.oid == oids::EC_PUBLIC_KEY {
        let Some(params) = &alg.parameters else {
            return Err(malformed("the id-ecPublicKey key has no curve parameters"));
        };
        let Ok(curve) = params.decode_as::<ObjectIdentifier>() else {
            return Err(CsrError::UnsupportedKey {
                key: "an EC key with explicit (not named) curve parameters".to_string(),
            });
        };
        match curve {
            c if c == oids::SECP256R1 => Ok(KeyType::EcdsaP256),
            c if c == oids::SECP384R1 => Ok(KeyType::EcdsaP384),
            c if c == oids::SECP521R1 => Ok(KeyType::EcdsaP521),
            other => Err(CsrError::UnsupportedKey {
                key: format!("an EC key on curve {}", oids::describe(&other)),
            }),
        }
    } else if alg.oid == oids::RSA_ENCRYPTION {
        if !params_absent_or_null(alg) {
            return Err(malformed(
                "the rsaEncryption key's algorithm parameters are not NULL",
            ));
        }
        let bits = rsa_modulus_bits(public_key_bytes(spki)?)?;
        if !(min_rsa_bits..=MAX_RSA_BITS).contains(&bits) {
            return Err(CsrError::UnsupportedKey {
                key: format!("a {bits}-bit RSA key"),
            });
        }
        Ok(KeyType::Rsa { min_bits: bits })
    } else if alg.oid == oids::ED25519 {
        if alg.parameters.is_some() {
            return Err(malformed("the Ed25519 key has algorithm parameters"));
        }
        let len = public_key_bytes(spki)?.len();
        if len != 32 {
            return Err(malformed(format!(
                "the Ed25519 public key is {len} bytes long, not 32"
            )));
        }
        Ok(KeyType::Ed25519)
    } else {
        Err(CsrError::UnsupportedKey {
            key: format!("of type {}", oids::describe(&alg.oid)),
        })
    }
}

/// Bit length of the modulus of a DER RSAPublicKey (RFC 8017 A.1.1).
fn rsa_modulus_bits(key: &[u8]) -> Result<u32, CsrError> {
    let bad = |e: der::Error| {
        malformed(format!(
            "the RSA public key is not a DER RSAPublicKey ({e})"
        ))
    };
    let mut reader = SliceReader::new(key).map_err(bad)?;
    let modulus = reader
        .sequence(|seq| {
            let modulus = UintRef::decode(seq)?;
            let _exponent = UintRef::decode(seq)?;
            Ok::<_, der::Error>(modulus)
        })
        .map_err(bad)?;
    reader.finish().map_err(bad)?;
    let bytes = modulus.as_bytes();
    match bytes.first() {
        Some(&top) if top != 0 => {
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX / 16);
            Ok((len - 1) * 8 + (8 - top.leading_zeros()))
        }
        _ => Err(malformed("the RSA modulus is zero")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigKind {
    Ecdsa(Hash),
    RsaPkcs1(Hash),
    Ed25519,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SigAlg {
    pub(crate) name: &'static str,
    kind: SigKind,
}

impl SigAlg {
    pub(crate) fn from_identifier(alg: &AlgorithmIdentifierOwned) -> Result<SigAlg, CsrError> {
        let oid = alg.oid;
        let (name, kind) = match oid {
            o if o == oids::ECDSA_WITH_SHA256 => {
                ("ecdsa-with-SHA256", SigKind::Ecdsa(Hash::Sha256))
            }
            o if o == oids::ECDSA_WITH_SHA384 => {
                ("ecdsa-with-SHA384", SigKind::Ecdsa(Hash::Sha384))
            }
            o if o == oids::ECDSA_WITH_SHA512 => {
                ("ecdsa-with-SHA512", SigKind::Ecdsa(Hash::Sha512))
            }
            o if o == oids::SHA256_WITH_RSA => {
                ("sha256WithRSAEncryption", SigKind::RsaPkcs1(Hash::Sha256))
            }
            o if o == oids::SHA384_WITH_RSA => {
                ("sha384WithRSAEncryption", SigKind::RsaPkcs1(Hash::Sha384))
            }
            o if o == oids::SHA512_WITH_RSA => {
                ("sha512WithRSAEncryption", SigKind::RsaPkcs1(Hash::Sha512))
            }
            o if o == oids::ED25519 => ("Ed25519", SigKind::Ed25519),
            other => {
                return Err(CsrError::UnsupportedSignatureAlgorithm {
                    algorithm: oids::describe(&other),
                });
            }
        };
        let params_ok = match kind {
            // RFC 5758 §3.2 and RFC 8410 §3: absent. RFC 4055 §5: NULL (absent tolerated).
            SigKind::Ecdsa(_) | SigKind::Ed25519 => alg.parameters.is_none(),
            SigKind::RsaPkcs1(_) => params_absent_or_null(alg),
        };
        if !params_ok {
            return Err(malformed(format!(
                "the {name} signature algorithm has parameters it must not have"
            )));
        }
        Ok(SigAlg { name, kind })
    }

    /// The aws-lc-rs verifier for this algorithm and key. aws-lc-rs offers every pairing of
    /// P-256/P-384/P-521 with SHA-256/384/512, so only a family mismatch is refused.
    pub(crate) fn verifier(
        self,
        key: KeyType,
    ) -> Result<&'static dyn VerificationAlgorithm, CsrError> {
        use Hash::*;
        use KeyType::*;
        Ok(match (self.kind, key) {
            (SigKind::Ecdsa(Sha256), EcdsaP256) => &signature::ECDSA_P256_SHA256_ASN1,
            (SigKind::Ecdsa(Sha384), EcdsaP256) => &signature::ECDSA_P256_SHA384_ASN1,
            (SigKind::Ecdsa(Sha512), EcdsaP256) => &signature::ECDSA_P256_SHA512_ASN1,
            (SigKind::Ecdsa(Sha256), EcdsaP384) => &signature::ECDSA_P384_SHA256_ASN1,
            (SigKind::Ecdsa(Sha384), EcdsaP384) => &signature::ECDSA_P384_SHA384_ASN1,
            (SigKind::Ecdsa(Sha512), EcdsaP384) => &signature::ECDSA_P384_SHA512_ASN1,
            (SigKind::Ecdsa(Sha256), EcdsaP521) => &signature::ECDSA_P521_SHA256_ASN1,
            (SigKind::Ecdsa(Sha384), EcdsaP521) => &signature::ECDSA_P521_SHA384_ASN1,
            (SigKind::Ecdsa(Sha512), EcdsaP521) => &signature::ECDSA_P521_SHA512_ASN1,
            (SigKind::RsaPkcs1(Sha256), Rsa { .. }) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (SigKind::RsaPkcs1(Sha384), Rsa { .. }) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (SigKind::RsaPkcs1(Sha512), Rsa { .. }) => &signature::RSA_PKCS1_2048_8192_SHA512,
            (SigKind::Ed25519, Ed25519) => &signature::ED25519,
            _ => {
                return Err(CsrError::SignatureKeyMismatch {
                    algorithm: self.name,
                    key,
                });
            }
        })
    }
}

/// The extensions of the (single) extensionRequest attribute, after refusing repeated and
/// unknown critical extensions.
fn requested_extensions(info: &CertReqInfo) -> Result<Vec<Extension>, CsrError> {
    let mut found = None;
    for attr in info.attributes.iter() {
        if attr.oid != oids::EXTENSION_REQUEST {
            continue;
        }
        if found.is_some() {
            return Err(malformed(
                "the CSR has more than one extensionRequest attribute",
            ));
        }
        found = Some(attr);
    }
    let Some(attr) = found else {
        return Ok(Vec::new());
    };
    let mut values = attr.values.iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(malformed(format!(
            "the extensionRequest attribute has {} values; it must have exactly one",
            attr.values.len()
        )));
    };
    let extensions: Vec<Extension> = value.decode_as().map_err(|e| {
        malformed(format!(
            "the extensionRequest attribute is not a DER SEQUENCE OF Extension ({e})"
        ))
    })?;

    let mut seen = HashSet::new();
    for ext in &extensions {
        if !seen.insert(ext.extn_id) {
            return Err(malformed(format!(
                "the extension {} is requested more than once",
                oids::describe(&ext.extn_id)
            )));
        }
    }
    if let Some(ext) = extensions
        .iter()
        .find(|e| e.critical && !oids::KNOWN_EXTENSIONS.contains(&e.extn_id))
    {
        return Err(CsrError::UnsupportedExtension {
            extension: oids::describe(&ext.extn_id),
        });
    }
    Ok(extensions)
}

#[derive(Default)]
struct SanNames {
    dns: Vec<String>,
    ips: Vec<IpAddr>,
}

impl SanNames {
    fn parse(&mut self, der: &[u8]) -> Result<(), CsrError> {
        let entries = general_names(der).map_err(|e| {
            malformed(format!(
                "the subjectAltName extension is not a DER GeneralNames SEQUENCE ({e})"
            ))
        })?;
        if entries.is_empty() {
            return Err(malformed("the subjectAltName extension is empty"));
        }
        for entry in entries {
            let Tag::ContextSpecific {
                constructed,
                number,
            } = entry.tag()
            else {
                return Err(malformed(format!(
                    "a subjectAltName entry has the tag {}, which no GeneralName has",
                    entry.tag()
                )));
            };
            let kind = match number.value() {
                2 if !constructed => {
                    self.push_dns(entry.value())?;
                    continue;
                }
                7 if !constructed => {
                    self.push_ip(entry.value())?;
                    continue;
                }
                0 => "otherName",
                1 => "rfc822Name",
                2 => "dNSName",
                3 => "x400Address",
                4 => "directoryName",
                5 => "ediPartyName",
                6 => "uniformResourceIdentifier",
                7 => "iPAddress",
                8 => "registeredID",
                n => {
                    return Err(malformed(format!(
                        "a subjectAltName entry has the tag [{n}], which no GeneralName has"
                    )));
                }
            };
            if matches!(kind, "dNSName" | "iPAddress") {
                return Err(malformed(format!(
                    "a subjectAltName {kind} entry is constructed; it must be primitive"
                )));
            }
            let value = match kind {
                "rfc822Name" | "uniformResourceIdentifier" => printable(entry.value()),
                _ => None,
            };
            return Err(CsrError::UnsupportedSanType { kind, value });
        }
        Ok(())
    }

    fn push_dns(&mut self, raw: &[u8]) -> Result<(), CsrError> {
        let Ok(text) = Ia5StringRef::new(raw) else {
            return Err(CsrError::BadName {
                name: String::from_utf8_lossy(raw).into_owned(),
            });
        };
        let name = normalize_dns_name(text.as_str());
        if !is_valid_dns_name(&name) {
            return Err(CsrError::BadName {
                name: text.as_str().to_string(),
            });
        }
        if !self.dns.contains(&name) {
            self.dns.push(name);
        }
        Ok(())
    }

    fn push_ip(&mut self, raw: &[u8]) -> Result<(), CsrError> {
        let ip = if let Ok(v4) = <[u8; 4]>::try_from(raw) {
            IpAddr::V4(Ipv4Addr::from(v4))
        } else if let Ok(v6) = <[u8; 16]>::try_from(raw) {
            IpAddr::V6(Ipv6Addr::from(v6))
        } else {
            return Err(malformed(format!(
                "a subjectAltName iPAddress entry is {} bytes long; it must be 4 (IPv4) or 16 \
                 (IPv6)",
                raw.len()
            )));
        };
        if !self.ips.contains(&ip) {
            self.ips.push(ip);
        }
        Ok(())
    }
}

fn general_names(der: &[u8]) -> der::Result<Vec<AnyRef<'_>>> {
    let mut reader = SliceReader::new(der)?;
    let entries = reader.sequence(|seq| {
        let mut entries = Vec::new();
        while !seq.is_finished() {
            entries.push(AnyRef::decode(seq)?);
        }
        Ok::<_, der::Error>(entries)
    })?;
    reader.finish()?;
    Ok(entries)
}

/// The value for an error message, if it is short printable ASCII.
fn printable(raw: &[u8]) -> Option<String> {
    (raw.len() <= 256 && raw.iter().all(|b| b.is_ascii_graphic() || *b == b' '))
        .then(|| String::from_utf8_lossy(raw).into_owned())
}

fn common_name(subject: &Name) -> Result<Option<String>, CsrError> {
    let mut found = None;
    for atv in subject.iter() {
        if atv.oid != oids::COMMON_NAME {
            continue;
        }
        if found.is_some() {
            return Err(malformed(
                "the subject has more than one common name (CN) attribute",
            ));
        }
        let value = &atv.value;
        let text = match value.tag() {
            Tag::Utf8String => value
                .decode_as::<Utf8StringRef<'_>>()
                .map(|s| s.as_str().to_string()),
            Tag::PrintableString => value
                .decode_as::<PrintableStringRef<'_>>()
                .map(|s| s.as_str().to_string()),
            Tag::Ia5String => value
                .decode_as::<Ia5StringRef<'_>>()
                .map(|s| s.as_str().to_string()),
            other => {
                return Err(malformed(format!(
                    "the subject common name is a {other}; only UTF8String, PrintableString and \
                     IA5String are accepted"
                )));
            }
        }
        .map_err(|e| {
            malformed(format!(
                "the subject common name is not a valid string ({e})"
            ))
        })?;
        found = Some(text);
    }
    Ok(found)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use der::Encode;
    use rcgen::{CustomExtension, SanType};

    #[test]
    fn parses_a_valid_p256_csr() {
        let der = make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, vec![dns(NAME)], Some(NAME));
        let csr = parse_csr(&der).unwrap();
        assert_eq!(csr.key, KeyType::EcdsaP256);
        assert_eq!(csr.signature_algorithm, "ecdsa-with-SHA256");
        assert_eq!(csr.dns_names, vec![NAME.to_string()]);
        assert!(csr.ip_addresses.is_empty());
        assert_eq!(csr.subject_common_name.as_deref(), Some(NAME));
        assert_eq!(csr.der, der);
        assert_eq!(csr.sha256_hex(), hex::encode(Sha256::digest(&der)));
    }

    #[test]
    fn parses_other_supported_keys() {
        let der = make_csr(&rcgen::PKCS_ECDSA_P384_SHA384, vec![dns(NAME)], None);
        let csr = parse_csr(&der).unwrap();
        assert_eq!(
            (csr.key, csr.signature_algorithm),
            (KeyType::EcdsaP384, "ecdsa-with-SHA384")
        );
        assert_eq!(csr.subject_common_name, None);

        let der = make_csr(&rcgen::PKCS_ECDSA_P521_SHA512, vec![dns(NAME)], None);
        let csr = parse_csr(&der).unwrap();
        assert_eq!(
            (csr.key, csr.signature_algorithm),
            (KeyType::EcdsaP521, "ecdsa-with-SHA512")
        );

        let der = make_csr(&rcgen::PKCS_ED25519, vec![dns(NAME)], None);
        let csr = parse_csr(&der).unwrap();
        assert_eq!(
            (csr.key, csr.signature_algorithm),
            (KeyType::Ed25519, "Ed25519")
        );

        let key =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA384, rcgen::RsaKeySize::_3072)
                .unwrap();
        let der = make_csr_with_key(&key, params(vec![dns(NAME)], None));
        let csr = parse_csr(&der).unwrap();
        assert_eq!(
            (csr.key, csr.signature_algorithm),
            (KeyType::Rsa { min_bits: 3072 }, "sha384WithRSAEncryption")
        );
    }

    #[test]
    fn parses_openssl_fixtures() {
        let csr = parse_csr(&fixture("rsa2048.der")).unwrap();
        assert_eq!(csr.key, KeyType::Rsa { min_bits: 2048 });
        assert_eq!(csr.signature_algorithm, "sha256WithRSAEncryption");
        assert_eq!(csr.dns_names, vec![NAME.to_string()]);
        assert_eq!(csr.subject_common_name.as_deref(), Some(NAME));

        let csr = parse_csr(&fixture("p256.der")).unwrap();
        assert_eq!(csr.key, KeyType::EcdsaP256);

        let csr = parse_csr(&fixture("p521-sha512.der")).unwrap();
        assert_eq!(
            (csr.key, csr.signature_algorithm),
            (KeyType::EcdsaP521, "ecdsa-with-SHA512")
        );
    }

    #[test]
    fn names_are_normalized_and_deduplicated() {
        let der = make_csr(
            &rcgen::PKCS_ECDSA_P256_SHA256,
            vec![
                dns("ABCDEFGHI.Devices.Example.COM."),
                ip("10.0.0.1"),
                dns(NAME),
                ip("fd00::1"),
                ip("10.0.0.1"),
                dns("abcdefghi.local"),
            ],
            None,
        );
        let csr = parse_csr(&der).unwrap();
        assert_eq!(csr.dns_names, vec![NAME, "abcdefghi.local"]);
        assert_eq!(
            csr.ip_addresses,
            vec![
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "fd00::1".parse::<IpAddr>().unwrap()
            ]
        );
    }

    #[test]
    fn bad_signature_is_refused() {
        let err = parse_csr(&fixture("p256-badsig.der")).unwrap_err();
        assert_eq!(
            err,
            CsrError::BadSignature {
                algorithm: "ecdsa-with-SHA256"
            }
        );
        assert_eq!(err.teap_error_code(), 1025);

        // Flip a byte of the signed info (the SAN text) of a freshly made CSR.
        let mut der = make_csr(&rcgen::PKCS_ED25519, vec![dns(NAME)], None);
        let at = find(&der, b"abcdefghi").unwrap();
        der[at] = b'x';
        assert!(matches!(
            parse_csr(&der),
            Err(CsrError::BadSignature {
                algorithm: "Ed25519"
            })
        ));
    }

    #[test]
    fn unsupported_keys_are_refused_with_1022() {
        let err = parse_csr(&fixture("rsa1024.der")).unwrap_err();
        assert!(matches!(err, CsrError::UnsupportedKey { .. }), "{err:?}");
        assert_eq!(err.teap_error_code(), 1022);
        assert!(err.to_string().contains("1024-bit RSA key"), "{err}");

        let err = parse_csr(&fixture("p192.der")).unwrap_err();
        assert!(matches!(err, CsrError::UnsupportedKey { .. }), "{err:?}");
        assert_eq!(err.teap_error_code(), 1022);
        assert!(
            err.to_string()
                .contains("an EC key on curve P-192 (secp192r1, prime192v1) (1.2.840.10045.3.1.1)"),
            "{err}"
        );
    }

    #[test]
    fn rsa_pss_signatures_are_refused_with_1022() {
        let err = parse_csr(&fixture("rsa2048-pss.der")).unwrap_err();
        assert!(
            matches!(err, CsrError::UnsupportedSignatureAlgorithm { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("1.2.840.113549.1.1.10"), "{err}");
        assert_eq!(err.teap_error_code(), 1022);
    }

    #[test]
    fn unsupported_san_types_are_refused() {
        let err = parse_csr(&fixture("p256-rfc822.der")).unwrap_err();
        assert_eq!(
            err,
            CsrError::UnsupportedSanType {
                kind: "rfc822Name",
                value: Some("dev@example.com".into())
            }
        );
        assert_eq!(err.teap_error_code(), 1024);

        let uri = SanType::URI("https://example.com/".try_into().unwrap());
        let der = make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, vec![dns(NAME), uri], None);
        assert!(matches!(
            parse_csr(&der),
            Err(CsrError::UnsupportedSanType {
                kind: "uniformResourceIdentifier",
                ..
            })
        ));
    }

    #[test]
    fn invalid_dns_names_are_refused() {
        for bad in [
            "*.devices.example.com",
            "a..example.com",
            "-a.example.com",
            "a_b.example.com",
        ] {
            let der = make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, vec![dns(bad)], None);
            let err = parse_csr(&der).unwrap_err();
            assert_eq!(err, CsrError::BadName { name: bad.into() }, "{bad}");
            assert_eq!(err.teap_error_code(), 1024);
        }
    }

    #[test]
    fn critical_unknown_extensions_are_refused_with_1023() {
        let err = parse_csr(&fixture("p256-critical-ext.der")).unwrap_err();
        assert_eq!(
            err,
            CsrError::UnsupportedExtension {
                extension: "1.3.6.1.4.1.55555.1".into()
            }
        );
        assert_eq!(err.teap_error_code(), 1023);

        let mut p = params(vec![dns(NAME)], None);
        let mut ext = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 55555, 7], vec![5, 0]);
        ext.set_criticality(true);
        p.custom_extensions.push(ext);
        let err = parse_csr(&make_csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, p)).unwrap_err();
        assert_eq!(err.teap_error_code(), 1023);

        // Non-critical unknown extensions and critical known ones are fine.
        let mut p = params(vec![dns(NAME)], None);
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 55555, 7],
            vec![5, 0],
        ));
        p.key_usages.push(rcgen::KeyUsagePurpose::DigitalSignature);
        let csr = parse_csr(&make_csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, p)).unwrap();
        assert_eq!(csr.dns_names, vec![NAME]);
    }

    #[test]
    fn repeated_extensions_are_malformed() {
        let mut p = params(vec![dns(NAME)], None);
        for _ in 0..2 {
            p.custom_extensions.push(CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 4, 1, 55555, 7],
                vec![5, 0],
            ));
        }
        let err = parse_csr(&make_csr_with(&rcgen::PKCS_ECDSA_P256_SHA256, p)).unwrap_err();
        assert!(
            matches!(err, CsrError::Malformed(ref m) if m.contains("more than once")),
            "{err}"
        );
    }

    #[test]
    fn two_extension_requests_are_malformed() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let second = second_extension_request();
        let der = params(vec![dns(NAME)], None)
            .serialize_request_with_attributes(&key, vec![second])
            .unwrap()
            .der()
            .to_vec();
        let err = parse_csr(&der).unwrap_err();
        assert!(
            matches!(err, CsrError::Malformed(ref m) if m.contains("more than one extensionRequest")),
            "{err}"
        );
    }

    #[test]
    fn structural_garbage_is_malformed_without_panic() {
        let good = make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, vec![dns(NAME)], None);

        assert!(matches!(parse_csr(&[]), Err(CsrError::Malformed(m)) if m.contains("empty")));
        assert!(matches!(
            parse_csr(b"hello, world"),
            Err(CsrError::Malformed(_))
        ));
        assert!(matches!(parse_csr(&[0x30]), Err(CsrError::Malformed(_))));
        assert!(matches!(
            parse_csr(&good[..good.len() - 1]),
            Err(CsrError::Malformed(_))
        ));

        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0, 0]);
        let err = parse_csr(&trailing).unwrap_err();
        assert!(
            matches!(err, CsrError::Malformed(ref m) if m.contains("2 trailing byte")),
            "{err}"
        );

        let big = vec![0x30; MAX_CSR_DER_LEN + 1];
        assert_eq!(
            parse_csr(&big),
            Err(CsrError::TooLarge {
                len: MAX_CSR_DER_LEN + 1,
                max: MAX_CSR_DER_LEN
            })
        );

        // A certificate is DER but not a CSR.
        let cert = rcgen::CertificateParams::new(vec![NAME.to_string()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        assert!(matches!(parse_csr(cert.der()), Err(CsrError::Malformed(_))));
    }

    #[test]
    fn wrong_version_is_named() {
        let mut der = make_csr(&rcgen::PKCS_ECDSA_P256_SHA256, vec![dns(NAME)], None);
        let mut reader = SliceReader::new(&der).unwrap();
        let outer = Header::decode(&mut reader).unwrap();
        let info = Header::decode(&mut reader).unwrap();
        let at = usize::try_from(outer.encoded_len().unwrap()).unwrap()
            + usize::try_from(info.encoded_len().unwrap()).unwrap();
        assert_eq!(der[at..at + 3], [2, 1, 0]);
        der[at + 2] = 1;
        let err = parse_csr(&der).unwrap_err();
        assert_eq!(
            err,
            CsrError::Malformed("the CertificationRequest version is 1; only v1 (0) exists".into())
        );
    }

    #[test]
    fn signature_and_key_must_match() {
        let der = fixture("p256.der");
        let (req, _) = decode(&der).unwrap();
        let rsa = SigAlg::from_identifier(&AlgorithmIdentifierOwned {
            oid: oids::SHA256_WITH_RSA,
            parameters: None,
        })
        .unwrap();
        assert_eq!(
            rsa.verifier(key_type(&req.info.public_key).unwrap()).err(),
            Some(CsrError::SignatureKeyMismatch {
                algorithm: "sha256WithRSAEncryption",
                key: KeyType::EcdsaP256
            })
        );
    }

    /// Every truncation and a few thousand random byte flips of valid CSRs: no panic.
    #[test]
    fn mangled_input_never_panics() {
        let samples = [
            make_csr(
                &rcgen::PKCS_ECDSA_P256_SHA256,
                vec![dns(NAME), ip("10.1.2.3"), dns("abcdefghi.local")],
                Some(NAME),
            ),
            make_csr(&rcgen::PKCS_ED25519, vec![dns(NAME)], Some(NAME)),
            fixture("rsa2048.der"),
            fixture("p256-critical-ext.der"),
        ];
        let profile = test_profile();
        let assigned = assigned(&profile);
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for good in &samples {
            for len in 0..good.len() {
                assert!(
                    parse_csr(&good[..len]).is_err(),
                    "truncation to {len} accepted"
                );
            }
            for _ in 0..2_000 {
                let mut der = good.clone();
                for _ in 0..=rng.below(3) {
                    let at = rng.below(der.len());
                    if let Some(b) = der.get_mut(at) {
                        *b ^= 1 << rng.below(8);
                    }
                }
                if let Ok(csr) = parse_csr(&der) {
                    let _ = crate::check_csr(&csr, &profile, &assigned);
                }
            }
            for _ in 0..200 {
                let len = rng.below(good.len() * 2);
                let junk: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                let _ = parse_csr(&junk);
                let mut spliced = good.clone();
                spliced.truncate(rng.below(good.len()));
                spliced.extend_from_slice(&junk);
                let _ = parse_csr(&spliced);
            }
        }
    }
}

/// Why a certificate chain does not hold together.
#[derive(Debug, thiserror::Error)]
#[error("certificate {index} of the chain: {reason}")]
pub struct ChainError {
    /// 0 is the end-entity certificate.
    pub index: usize,
    pub reason: String,
}

/// Checks that each certificate of `chain` (end entity first) names the next as its issuer
/// and carries a valid signature by the next one's key. Whether the top is trusted is the
/// caller's business; this only refuses a chain whose links do not hold.
pub fn check_chain(chain: &[impl AsRef<[u8]>]) -> Result<(), ChainError> {
    let parsed = chain
        .iter()
        .enumerate()
        .map(|(index, der)| {
            x509_cert::Certificate::from_der(der.as_ref()).map_err(|e| ChainError {
                index,
                reason: format!("not a DER X.509 certificate: {e}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (index, pair) in parsed.windows(2).enumerate() {
        let (cert, issuer) = (&pair[0], &pair[1]);
        let fail = |reason: String| ChainError { index, reason };
        if cert.tbs_certificate().issuer() != issuer.tbs_certificate().subject() {
            return Err(fail(format!(
                "its issuer is not the subject of certificate {}",
                index + 1
            )));
        }
        let issuer_spki = issuer.tbs_certificate().subject_public_key_info();
        let key = key_type_with_min_rsa(issuer_spki, MIN_CA_RSA_BITS)
            .map_err(|e| fail(format!("the issuer's key: {e}")))?;
        let sig =
            SigAlg::from_identifier(cert.signature_algorithm()).map_err(|e| fail(e.to_string()))?;
        let verifier = sig.verifier(key).map_err(|e| fail(e.to_string()))?;
        let tbs = der::Encode::to_der(cert.tbs_certificate())
            .map_err(|e| fail(format!("re-encoding: {e}")))?;
        let signature = cert
            .signature()
            .as_bytes()
            .ok_or_else(|| fail("the signature BIT STRING has unused bits".into()))?;
        let public_key = public_key_bytes(issuer_spki).map_err(|e| fail(e.to_string()))?;
        UnparsedPublicKey::new(verifier, public_key)
            .verify(&tbs, signature)
            .map_err(|_| {
                fail(format!(
                    "its {} signature does not verify with the key of certificate {}",
                    sig.name,
                    index + 1
                ))
            })?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod chain_tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    fn ca(name: &str, alg: &'static rcgen::SignatureAlgorithm) -> (CertificateParams, KeyPair) {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        (params, key)
    }

    /// leaf ← intermediate (P-256) ← root (P-384), end entity first.
    fn chain() -> Vec<Vec<u8>> {
        let (root_params, root_key) = ca("root", &rcgen::PKCS_ECDSA_P384_SHA384);
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let (int_params, int_key) = ca("intermediate", &rcgen::PKCS_ECDSA_P256_SHA256);
        let intermediate = int_params.signed_by(&int_key, &root_issuer).unwrap();
        let int_issuer = Issuer::new(int_params, int_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["d1.devices.example.com".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &int_issuer)
            .unwrap();
        vec![
            leaf.der().to_vec(),
            intermediate.der().to_vec(),
            root.der().to_vec(),
        ]
    }

    #[test]
    fn a_chain_whose_links_hold_passes() {
        let c = chain();
        check_chain(&c).unwrap();
        check_chain(&c[..2]).unwrap();
        check_chain(&c[..1]).unwrap();
    }

    #[test]
    fn links_out_of_order_or_forged_are_refused_with_the_certificate_named() {
        let c = chain();
        let swapped = vec![c[0].clone(), c[2].clone(), c[1].clone()];
        let e = check_chain(&swapped).unwrap_err();
        assert_eq!(e.index, 0, "{e}");
        assert!(e.to_string().contains("issuer"), "{e}");

        // Same names, another key: the issuer matches by name but the signature does not.
        let (other_params, other_key) = ca("intermediate", &rcgen::PKCS_ECDSA_P256_SHA256);
        let impostor = other_params.self_signed(&other_key).unwrap();
        let forged = vec![c[0].clone(), impostor.der().to_vec()];
        let e = check_chain(&forged).unwrap_err();
        assert_eq!(e.index, 0);
        assert!(e.to_string().contains("does not verify"), "{e}");

        let e = check_chain(&[c[0].clone(), b"garbage".to_vec()]).unwrap_err();
        assert_eq!(e.index, 1);
    }
}
