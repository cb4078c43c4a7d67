//! Certs-only CMS SignedData ("degenerate PKCS#7", RFC 5652 §5 with no signers), the container
//! EST uses for `/cacerts` and the enrollment responses (RFC 7030 §4.1.3, §4.2.3).

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use const_oid::db::rfc5911::ID_SIGNED_DATA;
use der::{Decode, Encode};
use thiserror::Error;
use x509_cert::Certificate;

/// Most certificates accepted in one container, in either direction.
pub const MAX_CERTS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Pkcs7Error {
    #[error("a certs-only container needs at least one certificate")]
    NoCertificates,
    #[error("{count} certificates are more than the {MAX_CERTS} a container may hold")]
    TooMany { count: usize },
    #[error("certificate {index} is not a DER X.509 certificate: {reason}")]
    BadCertificate { index: usize, reason: String },
    #[error("not a DER CMS ContentInfo: {0}")]
    Malformed(String),
    #[error("the ContentInfo holds {0}, not SignedData")]
    NotSignedData(String),
    #[error("the SignedData has {0} signer(s); a certs-only container has none")]
    HasSigners(usize),
}

/// Encodes `certs` (DER, in any order) as a DER certs-only SignedData ContentInfo. The
/// certificates are re-encoded as they were decoded, so a certificate's bytes (and signature)
/// are unchanged; CMS's `SET OF` puts them in DER order, which carries no meaning.
pub fn certs_only(certs: &[impl AsRef<[u8]>]) -> Result<Vec<u8>, Pkcs7Error> {
    if certs.is_empty() {
        return Err(Pkcs7Error::NoCertificates);
    }
    if certs.len() > MAX_CERTS {
        return Err(Pkcs7Error::TooMany { count: certs.len() });
    }
    let mut path = Vec::with_capacity(certs.len());
    for (index, der) in certs.iter().enumerate() {
        let der = der.as_ref();
        let cert = Certificate::from_der(der).map_err(|e| Pkcs7Error::BadCertificate {
            index,
            reason: e.to_string(),
        })?;
        // Every certificate on the wire must be exactly the one the CA signed; a decoder that
        // accepted non-DER (BER) input would re-encode it differently.
        if cert.to_der().ok().as_deref() != Some(der) {
            return Err(Pkcs7Error::BadCertificate {
                index,
                reason: "not in DER (re-encoding changes its bytes)".into(),
            });
        }
        path.push(cert);
    }
    let info = ContentInfo::try_from(path).map_err(|e| Pkcs7Error::Malformed(e.to_string()))?;
    info.to_der()
        .map_err(|e| Pkcs7Error::Malformed(e.to_string()))
}

/// The DER certificates in a certs-only container, in container order. Refuses anything else
/// (other content types, signers, trailing bytes).
pub fn parse_certs_only(der: &[u8]) -> Result<Vec<Vec<u8>>, Pkcs7Error> {
    let info = ContentInfo::from_der(der).map_err(|e| Pkcs7Error::Malformed(e.to_string()))?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(Pkcs7Error::NotSignedData(info.content_type.to_string()));
    }
    let sd: SignedData = info
        .content
        .decode_as()
        .map_err(|e| Pkcs7Error::Malformed(format!("SignedData: {e}")))?;
    if !sd.signer_infos.0.is_empty() {
        return Err(Pkcs7Error::HasSigners(sd.signer_infos.0.len()));
    }
    let mut out = Vec::new();
    for choice in sd.certificates.iter().flat_map(|set| set.0.iter()) {
        if out.len() == MAX_CERTS {
            return Err(Pkcs7Error::TooMany {
                count: MAX_CERTS + 1,
            });
        }
        match choice {
            CertificateChoices::Certificate(c) => out.push(
                c.to_der()
                    .map_err(|e| Pkcs7Error::Malformed(e.to_string()))?,
            ),
            CertificateChoices::Other(_) => {
                return Err(Pkcs7Error::Malformed(
                    "the container holds a non-X.509 certificate format".into(),
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(Pkcs7Error::NoCertificates);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, IsCa, Issuer, KeyPair};

    fn chain() -> Vec<Vec<u8>> {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["abcdefghi.devices.example.com".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        vec![leaf.der().to_vec(), ca.der().to_vec()]
    }

    #[test]
    fn round_trips_and_keeps_certificate_bytes() {
        let certs = chain();
        let p7 = certs_only(&certs).unwrap();
        let mut back = parse_certs_only(&p7).unwrap();
        let mut want = certs.clone();
        back.sort();
        want.sort();
        assert_eq!(back, want);

        let one = certs_only(&certs[..1]).unwrap();
        assert_eq!(parse_certs_only(&one).unwrap(), vec![certs[0].clone()]);
    }

    #[test]
    fn structure_is_what_openssl_produces() {
        let certs = chain();
        let p7 = certs_only(&certs[..1]).unwrap();
        let info = ContentInfo::from_der(&p7).unwrap();
        assert_eq!(info.content_type, ID_SIGNED_DATA);
        let sd: SignedData = info.content.decode_as().unwrap();
        assert_eq!(sd.version, cms::content_info::CmsVersion::V1);
        assert!(sd.digest_algorithms.is_empty());
        assert_eq!(
            sd.encap_content_info.econtent_type,
            const_oid::db::rfc5911::ID_DATA
        );
        assert!(sd.encap_content_info.econtent.is_none());
        assert!(sd.signer_infos.0.is_empty());
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(
            certs_only(&Vec::<Vec<u8>>::new()),
            Err(Pkcs7Error::NoCertificates)
        );
        let e = certs_only(&[b"not a cert".to_vec()]).unwrap_err();
        assert!(
            matches!(e, Pkcs7Error::BadCertificate { index: 0, .. }),
            "{e}"
        );
        let many = vec![chain()[0].clone(); MAX_CERTS + 1];
        assert_eq!(
            certs_only(&many),
            Err(Pkcs7Error::TooMany {
                count: MAX_CERTS + 1
            })
        );
        assert!(matches!(
            parse_certs_only(b"\x30\x00"),
            Err(Pkcs7Error::Malformed(_))
        ));
        let mut p7 = certs_only(&chain()).unwrap();
        p7.push(0);
        assert!(matches!(
            parse_certs_only(&p7),
            Err(Pkcs7Error::Malformed(_))
        ));
    }
}
