//! The checks: passwords against a label's [`BasicAuth`], device certificate chains against
//! a label's trust anchors, the device identifier in a certificate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use der::asn1::{Ia5StringRef, OctetString, PrintableStringRef, Utf8StringRef};
use der::{Decode, Sequence, Tag, Tagged};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::config::{BasicAuth, CertIdentityField, ClientCertAuth, Secret};

/// Verified passwords remembered, so a device's retries do not each cost an argon2 run.
const PASSWORD_CACHE_ENTRIES: usize = 10_000;

const HARDWARE_MODULE_NAME: const_oid::ObjectIdentifier =
    const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.4");

/// Checks passwords; remembers successes under a keyed digest so a retry costs no argon2 run.
pub struct PasswordChecker {
    key: [u8; 32],
    verified: Mutex<HashMap<(String, String), [u8; 32]>>,
}

impl Default for PasswordChecker {
    fn default() -> Self {
        PasswordChecker::new()
    }
}

impl PasswordChecker {
    pub fn new() -> PasswordChecker {
        let mut key = [0u8; 32];
        // Without randomness the cache key would be a plain SHA-256 of the password; refuse
        // to cache then rather than weaken what a memory dump shows.
        let ok = aws_lc_rs_fill(&mut key);
        PasswordChecker {
            key: if ok { key } else { [0u8; 32] },
            verified: Mutex::new(HashMap::new()),
        }
    }

    fn digest(&self, password: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(password);
        h.finalize().into()
    }

    /// Whether `password` is right for `user` on `label`. A device listed in the password
    /// file must use its own password; the bootstrap secret is for devices not listed.
    pub fn check(&self, label: &str, basic: &BasicAuth, user: &str, password: &[u8]) -> bool {
        let cache_key = (label.to_string(), user.to_string());
        let digest = self.digest(password);
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&cache_key)
            .is_some_and(|d| constant_time_eq(d, &digest));
        if cached {
            return true;
        }
        let ok = match (basic.passwords.get(user), &basic.bootstrap) {
            (Some(hash), _) => argon2_ok(hash, password),
            (None, Some(Secret::Sha256(want))) => {
                constant_time_eq(&Sha256::digest(password).into(), want)
            }
            (None, Some(Secret::Argon2(hash))) => argon2_ok(hash, password),
            (None, None) => false,
        };
        if ok && self.key != [0u8; 32] {
            let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= PASSWORD_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(cache_key, digest);
        }
        ok
    }
}

fn aws_lc_rs_fill(buf: &mut [u8]) -> bool {
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(buf)
        .is_ok()
}

fn argon2_ok(hash: &str, password: &[u8]) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password, &parsed).is_ok(),
        Err(_) => false,
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Per-label chain verification of device certificates.
pub struct CertVerifiers {
    by_label: HashMap<String, Arc<dyn ClientCertVerifier>>,
}

impl CertVerifiers {
    /// One verifier per label that takes device certificates: `(label, its client_cert)`.
    pub fn new<'a>(
        labels: impl IntoIterator<Item = (&'a str, &'a ClientCertAuth)>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let mut by_label = HashMap::new();
        for (label, cc) in labels {
            let mut roots = RootCertStore::empty();
            for (i, anchor) in cc.trust_anchors.iter().enumerate() {
                roots.add(anchor.clone()).map_err(|e| {
                    format!("label {label}: trust anchor {} is unusable: {e}", i + 1)
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("label {label}: {e}"))?;
            by_label.insert(label.to_string(), verifier);
        }
        Ok(CertVerifiers { by_label })
    }

    /// Verifies `chain` (end entity first) against the label's anchors at `now`.
    pub fn verify(
        &self,
        label: &str,
        chain: &[CertificateDer<'static>],
        now: SystemTime,
    ) -> Result<(), String> {
        let verifier = self
            .by_label
            .get(label)
            .ok_or_else(|| format!("label {label:?} accepts no client certificates"))?;
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| "no client certificate was presented".to_string())?;
        let now = UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        verifier
            .verify_client_cert(leaf, intermediates, now)
            .map(|_| ())
            .map_err(|e| describe_cert_error(&e, label))
    }
}

fn describe_cert_error(e: &rustls::Error, label: &str) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => format!(
            "it was not issued by a certificate authority that label {label:?} trusts for \
             device certificates"
        ),
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "it has expired".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "it is not valid yet".into()
        }
        rustls::Error::InvalidCertificate(C::InvalidPurpose | C::InvalidPurposeContext { .. }) => {
            "its extended key usage does not allow TLS client authentication".into()
        }
        rustls::Error::InvalidCertificate(C::BadSignature) => {
            "its signature does not verify".into()
        }
        rustls::Error::InvalidCertificate(C::Revoked) => "it is revoked".into(),
        other => format!("it does not verify ({other})"),
    }
}

/// RFC 4108 HardwareModuleName.
#[derive(Sequence)]
struct HardwareModuleName {
    hw_type: const_oid::ObjectIdentifier,
    hw_serial_num: OctetString,
}

/// The device identifier in `field` of a certificate.
pub fn certificate_identity(der: &[u8], field: CertIdentityField) -> Result<String, String> {
    let cert = Certificate::from_der(der).map_err(|e| format!("unreadable certificate ({e})"))?;
    let tbs = cert.tbs_certificate();
    let missing = || format!("the client certificate has no {field}");
    match field {
        CertIdentityField::Subject(oid) => {
            let atv = tbs
                .subject()
                .iter()
                .find(|atv| atv.oid == oid)
                .ok_or_else(missing)?;
            let v = &atv.value;
            let text = match v.tag() {
                Tag::Utf8String => v.decode_as::<Utf8StringRef<'_>>().map(|s| s.to_string()),
                Tag::PrintableString => v
                    .decode_as::<PrintableStringRef<'_>>()
                    .map(|s| s.to_string()),
                Tag::Ia5String => v.decode_as::<Ia5StringRef<'_>>().map(|s| s.to_string()),
                other => return Err(format!("the certificate's {field} is a {other}, not text")),
            };
            text.map_err(|e| format!("the certificate's {field} is not valid text ({e})"))
        }
        _ => {
            let (_, san) = tbs
                .get_extension::<SubjectAltName>()
                .map_err(|e| format!("the certificate's subjectAltName is unreadable ({e})"))?
                .ok_or_else(missing)?;
            for name in san.0 {
                match (field, name) {
                    (CertIdentityField::SanDns, GeneralName::DnsName(s)) => {
                        return Ok(s.to_string());
                    }
                    (CertIdentityField::SanUri, GeneralName::UniformResourceIdentifier(s)) => {
                        return Ok(s.to_string());
                    }
                    (CertIdentityField::SanEmail, GeneralName::Rfc822Name(s)) => {
                        return Ok(s.to_string());
                    }
                    (CertIdentityField::SanHardwareModuleName, GeneralName::OtherName(o))
                        if o.type_id == HARDWARE_MODULE_NAME =>
                    {
                        let hw: HardwareModuleName = o.value.decode_as().map_err(|e| {
                            format!("the certificate's hardwareModuleName is unreadable ({e})")
                        })?;
                        let serial = hw.hw_serial_num.as_bytes();
                        return Ok(
                            if !serial.is_empty() && serial.iter().all(|b| b.is_ascii_graphic()) {
                                String::from_utf8_lossy(serial).into_owned()
                            } else {
                                hex::encode(serial)
                            },
                        );
                    }
                    _ => {}
                }
            }
            Err(missing())
        }
    }
}

/// Why a certificate is outside its validity window (or unreadable).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidityError {
    #[error("unreadable certificate ({0})")]
    Unreadable(String),
    /// The notAfter time, as the certificate states it.
    #[error("it expired at {0}")]
    Expired(String),
    /// The notBefore time.
    #[error("it is not valid before {0}")]
    NotYetValid(String),
}

/// The validity window check done for re-enrollment certificates (ragw's own certificates
/// are matched byte for byte by the registrar, so the chain needs no re-verification).
pub fn check_validity(der: &[u8], now: SystemTime) -> Result<(), ValidityError> {
    let cert = Certificate::from_der(der).map_err(|e| ValidityError::Unreadable(e.to_string()))?;
    let validity = cert.tbs_certificate().validity();
    if now > validity.not_after.to_system_time() {
        return Err(ValidityError::Expired(validity.not_after.to_string()));
    }
    if now < validity.not_before.to_system_time() {
        return Err(ValidityError::NotYetValid(validity.not_before.to_string()));
    }
    Ok(())
}
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ragw_domain::IdentityKind;

    #[test]
    fn passwords_hashes_and_bootstrap() {
        use argon2::PasswordHasher;
        let params = argon2::Params::new(1024, 1, 1, None).unwrap();
        let a2 = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let hash = a2
            .hash_password_with_salt(b"device-pw", b"0123456789abcdef")
            .unwrap()
            .to_string();
        let mut b = BasicAuth::new(IdentityKind::SerialNumber);
        b.passwords.insert("sn-1".into(), hash);
        b.bootstrap = Some(Secret::from_plain("boot"));
        let c = PasswordChecker::new();
        assert!(c.check("iot", &b, "sn-1", b"device-pw"));
        assert!(c.check("iot", &b, "sn-1", b"device-pw"), "cached");
        assert!(
            !c.check("iot", &b, "sn-1", b"boot"),
            "listed devices use their own"
        );
        assert!(!c.check("iot", &b, "sn-1", b"wrong"));
        assert!(c.check("iot", &b, "sn-2", b"boot"));
        assert!(!c.check("iot", &b, "sn-2", b"device-pw"));
        b.bootstrap = None;
        assert!(!c.check("lab", &b, "sn-2", b"boot"));
    }

    #[test]
    fn identity_fields() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["dev-7.example".to_string()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]), "SN-0042");
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "Widget");
        let der = p.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(
            certificate_identity(
                &der,
                CertIdentityField::parse("subject:serialNumber").unwrap()
            )
            .unwrap(),
            "SN-0042"
        );
        assert_eq!(
            certificate_identity(&der, CertIdentityField::parse("subject:CN").unwrap()).unwrap(),
            "Widget"
        );
        assert_eq!(
            certificate_identity(&der, CertIdentityField::SanDns).unwrap(),
            "dev-7.example"
        );
        let e = certificate_identity(&der, CertIdentityField::SanUri).unwrap_err();
        assert!(e.contains("no subjectAltName URI"), "{e}");
        assert!(certificate_identity(b"junk", CertIdentityField::SanDns).is_err());
        check_validity(&der, SystemTime::now()).unwrap();
        let far = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(3000 * 365 * 86400);
        assert!(matches!(
            check_validity(&der, far),
            Err(ValidityError::Expired(_))
        ));
    }

    #[test]
    fn chains_to_the_label_anchors() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Maker CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]), "SN-9");
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let cc = ClientCertAuth {
            trust_anchors: vec![ca.der().clone()],
            identity: CertIdentityField::Subject(crate::SERIAL_NUMBER),
            identity_kind: IdentityKind::IdevidSerial,
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let v = CertVerifiers::new([("iot", &cc)], &provider).unwrap();
        let chain = vec![leaf.der().clone()];
        v.verify("iot", &chain, SystemTime::now()).unwrap();
        assert_eq!(
            certificate_identity(chain[0].as_ref(), cc.identity).unwrap(),
            "SN-9"
        );
        let e = v.verify("lab", &chain, SystemTime::now()).unwrap_err();
        assert!(e.contains("accepts no client certificates"), "{e}");
        assert!(v.verify("iot", &[], SystemTime::now()).is_err());
        let other_key = rcgen::KeyPair::generate().unwrap();
        let self_signed = rcgen::CertificateParams::new(vec!["x.example".to_string()])
            .unwrap()
            .self_signed(&other_key)
            .unwrap();
        let e = v
            .verify("iot", &[self_signed.der().clone()], SystemTime::now())
            .unwrap_err();
        assert!(e.contains("not issued by"), "{e}");
    }
}
