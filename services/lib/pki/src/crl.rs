//! X.509 CRLs (RFC 5280 §5): the distribution points a certificate names, and a CRL's
//! signature checked against its issuer before any entry of it is believed.

use aws_lc_rs::signature::UnparsedPublicKey;
use der::{Decode, Encode};
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{CrlDistributionPoints, CrlReason};

use crate::csr::{MIN_CA_RSA_BITS, SigAlg, key_type_with_min_rsa, public_key_bytes};

/// The largest CRL accepted, in DER bytes: a CRL of 100 000 entries is about 4 MiB.
pub const MAX_CRL_DER_LEN: usize = 8 * 1024 * 1024;

const CRL_DISTRIBUTION_POINTS: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.29.31");
const CRL_REASON: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("2.5.29.21");

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrlError {
    #[error("the CRL is {len} bytes, more than the {max} accepted")]
    TooLarge { len: usize, max: usize },
    #[error("the CRL is not a DER X.509 CertificateList: {0}")]
    Malformed(String),
    #[error("the issuer certificate cannot be used: {0}")]
    BadIssuer(String),
    #[error("the CRL's issuer is not the subject of the issuer certificate")]
    IssuerMismatch,
    #[error("the CRL's {algorithm} signature does not verify with the issuer's key")]
    BadSignature { algorithm: &'static str },
}

/// One entry of a verified CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedSerial {
    /// Lower-case hex of the serial's DER content octets, as ragw stores serials.
    pub serial_hex: String,
    /// The entry's reasonCode in RFC 5280 spelling (`keyCompromise`, ...), `unspecified` when
    /// the entry has none.
    pub reason: String,
}

/// The http(s) URIs of the certificate's CRL distribution points; empty when it has none or
/// cannot be parsed (such a certificate is simply not polled).
pub fn crl_distribution_points(cert_der: &[u8]) -> Vec<String> {
    let Ok(cert) = Certificate::from_der(cert_der) else {
        return Vec::new();
    };
    let mut urls = Vec::new();
    for ext in cert.tbs_certificate().extensions().into_iter().flatten() {
        if ext.extn_id != CRL_DISTRIBUTION_POINTS {
            continue;
        }
        let Ok(points) = CrlDistributionPoints::from_der(ext.extn_value.as_bytes()) else {
            continue;
        };
        for DistributionPoint {
            distribution_point,
            crl_issuer,
            ..
        } in points.0
        {
            // An indirect CRL (signed by someone else than the issuer) is not supported.
            if crl_issuer.is_some() {
                continue;
            }
            if let Some(DistributionPointName::FullName(names)) = distribution_point {
                for name in names {
                    if let GeneralName::UniformResourceIdentifier(uri) = name {
                        let uri = uri.as_str();
                        if uri.starts_with("http://") || uri.starts_with("https://") {
                            urls.push(uri.to_string());
                        }
                    }
                }
            }
        }
    }
    urls
}

/// Decodes `crl_der`, checks that `issuer_der` (the CA certificate that issued the
/// certificates the CRL covers) is its issuer and signed it, and returns its entries. Nothing
/// of a CRL that fails any check is returned.
pub fn verify_crl(crl_der: &[u8], issuer_der: &[u8]) -> Result<Vec<RevokedSerial>, CrlError> {
    if crl_der.len() > MAX_CRL_DER_LEN {
        return Err(CrlError::TooLarge {
            len: crl_der.len(),
            max: MAX_CRL_DER_LEN,
        });
    }
    let crl: CertificateList =
        CertificateList::from_der(crl_der).map_err(|e| CrlError::Malformed(e.to_string()))?;
    let issuer =
        Certificate::from_der(issuer_der).map_err(|e| CrlError::BadIssuer(e.to_string()))?;
    if crl.tbs_cert_list.issuer != *issuer.tbs_certificate().subject() {
        return Err(CrlError::IssuerMismatch);
    }
    let spki = issuer.tbs_certificate().subject_public_key_info();
    let key = key_type_with_min_rsa(spki, MIN_CA_RSA_BITS)
        .map_err(|e| CrlError::BadIssuer(e.to_string()))?;
    let sig = SigAlg::from_identifier(&crl.signature_algorithm)
        .map_err(|e| CrlError::Malformed(e.to_string()))?;
    if crl.tbs_cert_list.signature != crl.signature_algorithm {
        return Err(CrlError::Malformed(
            "the signature algorithm inside and outside the signed part differ".into(),
        ));
    }
    let verifier = sig
        .verifier(key)
        .map_err(|e| CrlError::BadIssuer(e.to_string()))?;
    let tbs = crl
        .tbs_cert_list
        .to_der()
        .map_err(|e| CrlError::Malformed(format!("re-encoding: {e}")))?;
    let signature = crl
        .signature
        .as_bytes()
        .ok_or_else(|| CrlError::Malformed("the signature BIT STRING has unused bits".into()))?;
    let public_key = public_key_bytes(spki).map_err(|e| CrlError::BadIssuer(e.to_string()))?;
    UnparsedPublicKey::new(verifier, public_key)
        .verify(&tbs, signature)
        .map_err(|_| CrlError::BadSignature {
            algorithm: sig.name,
        })?;

    let mut out = Vec::new();
    for entry in crl.tbs_cert_list.revoked_certificates.into_iter().flatten() {
        let mut reason = CrlReason::Unspecified;
        for ext in entry.crl_entry_extensions.iter().flatten() {
            if ext.extn_id == CRL_REASON
                && let Ok(r) = CrlReason::from_der(ext.extn_value.as_bytes())
            {
                reason = r;
            }
        }
        // removeFromCRL only appears in delta CRLs: the certificate is no longer revoked.
        if reason == CrlReason::RemoveFromCRL {
            continue;
        }
        out.push(RevokedSerial {
            serial_hex: hex::encode(entry.serial_number.as_bytes()),
            reason: reason_name(reason).to_string(),
        });
    }
    Ok(out)
}

fn reason_name(reason: CrlReason) -> &'static str {
    match reason {
        CrlReason::Unspecified => "unspecified",
        CrlReason::KeyCompromise => "keyCompromise",
        CrlReason::CaCompromise => "cACompromise",
        CrlReason::AffiliationChanged => "affiliationChanged",
        CrlReason::Superseded => "superseded",
        CrlReason::CessationOfOperation => "cessationOfOperation",
        CrlReason::CertificateHold => "certificateHold",
        CrlReason::RemoveFromCRL => "removeFromCRL",
        CrlReason::PrivilegeWithdrawn => "privilegeWithdrawn",
        CrlReason::AaCompromise => "aACompromise",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
        IsCa, Issuer, KeyIdMethod, KeyPair, RevocationReason, RevokedCertParams, SerialNumber,
    };
    use time::{Duration, OffsetDateTime};

    struct TestCa {
        der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    fn crl(signer: &TestCa, serials: &[(&[u8], Option<RevocationReason>)]) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::hours(1),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|(s, r)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: now,
                    reason_code: *r,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&signer.issuer)
        .unwrap()
        .der()
        .to_vec()
    }

    #[test]
    fn a_crl_signed_by_the_issuer_lists_its_serials_and_reasons() {
        let ca = ca("Test CA");
        let der = crl(
            &ca,
            &[
                (&[0x41, 0x02], Some(RevocationReason::KeyCompromise)),
                (&[0x42], None),
            ],
        );
        let entries = verify_crl(&der, &ca.der).unwrap();
        assert_eq!(
            entries,
            vec![
                RevokedSerial {
                    serial_hex: "4102".into(),
                    reason: "keyCompromise".into()
                },
                RevokedSerial {
                    serial_hex: "42".into(),
                    reason: "unspecified".into()
                },
            ]
        );
    }

    #[test]
    fn a_crl_with_a_bad_signature_is_refused() {
        let ca = ca("Test CA");
        let mut der = crl(&ca, &[(&[0x41], Some(RevocationReason::KeyCompromise))]);
        // The signature is the last element: flip a bit in its last byte.
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert!(matches!(
            verify_crl(&der, &ca.der),
            Err(CrlError::BadSignature { .. }) | Err(CrlError::Malformed(_))
        ));
    }

    #[test]
    fn a_crl_signed_by_another_key_with_the_same_name_is_refused() {
        let real = ca("Test CA");
        let impostor = ca("Test CA");
        let der = crl(&impostor, &[(&[0x41], None)]);
        assert!(matches!(
            verify_crl(&der, &real.der),
            Err(CrlError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_crl_of_another_issuer_is_refused() {
        let real = ca("Test CA");
        let other = ca("Other CA");
        let der = crl(&other, &[(&[0x41], None)]);
        assert_eq!(verify_crl(&der, &real.der), Err(CrlError::IssuerMismatch));
        assert!(verify_crl(b"not a crl", &real.der).is_err());
    }

    #[test]
    fn distribution_points_are_read_from_the_certificate() {
        let ca = ca("Test CA");
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["d.example".to_string()]).unwrap();
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![
                "https://ca.example/crl".into(),
                "ldap://ca.example/crl".into(),
            ],
        }];
        let leaf = params.signed_by(&key, &ca.issuer).unwrap();
        assert_eq!(
            crl_distribution_points(leaf.der()),
            vec!["https://ca.example/crl".to_string()]
        );
        assert!(crl_distribution_points(&ca.der).is_empty());
    }
}
