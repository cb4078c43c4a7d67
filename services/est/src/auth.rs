//! Device authentication: HTTP Basic (per-device argon2 hashes or a bootstrap secret) and TLS
//! client certificates (IDevIDs chained to a label's trust anchors). The checks themselves are
//! `ragw-device-auth`'s, shared with the TEAP gateway; only the HTTP side lives here.

use std::time::SystemTime;

use ragw_device_auth::ValidityError;
pub(crate) use ragw_device_auth::{CertVerifiers, PasswordChecker, certificate_identity};

use crate::config::EstConfig;

/// Longest Authorization header value considered.
const MAX_AUTHORIZATION: usize = 1024;

/// Credentials from an `Authorization: Basic` header.
pub(crate) struct BasicCredentials {
    pub user: String,
    pub password: Vec<u8>,
}

/// `Ok(None)` without the header; an error names what is wrong with it.
pub(crate) fn parse_basic(
    value: Option<&http::HeaderValue>,
) -> Result<Option<BasicCredentials>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.len() > MAX_AUTHORIZATION {
        return Err(format!(
            "the Authorization header is {} bytes; at most {MAX_AUTHORIZATION} are accepted",
            bytes.len()
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| "the Authorization header is not ASCII".to_string())?;
    let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(format!(
            "the Authorization scheme {scheme:?} is not supported; use Basic (or a TLS client \
             certificate)"
        ));
    }
    let decoded = ragw_pki::base64::decode_lenient(rest.trim().as_bytes(), MAX_AUTHORIZATION)
        .map_err(|e| format!("the Basic credentials are not valid base64 ({e})"))?;
    let colon = decoded.iter().position(|&b| b == b':').ok_or_else(|| {
        "the Basic credentials have no ':' between user name and password".to_string()
    })?;
    let user = std::str::from_utf8(&decoded[..colon])
        .map_err(|_| "the Basic user name is not UTF-8".to_string())?;
    if user.is_empty() {
        return Err("the Basic user name (the device identifier) is empty".into());
    }
    Ok(Some(BasicCredentials {
        user: user.to_string(),
        password: decoded[colon + 1..].to_vec(),
    }))
}

/// Whether checking a password may run argon2 (so the caller moves the work off the async
/// threads).
pub(crate) fn uses_argon2(config: &EstConfig) -> bool {
    config
        .labels
        .iter()
        .any(|l| l.basic.as_ref().is_some_and(|b| b.uses_argon2()))
}

/// Per-label chain verification of the labels that take device certificates.
pub(crate) fn cert_verifiers(
    config: &EstConfig,
    provider: &std::sync::Arc<rustls::crypto::CryptoProvider>,
) -> Result<CertVerifiers, String> {
    CertVerifiers::new(
        config
            .labels
            .iter()
            .filter_map(|l| l.client_cert.as_ref().map(|c| (l.label.as_str(), c))),
        provider,
    )
}

/// The validity window of a certificate ragw issued, worded for EST (an expired one is
/// replaced through /simpleenroll).
pub(crate) fn check_validity(der: &[u8], now: SystemTime) -> Result<(), String> {
    ragw_device_auth::check_validity(der, now).map_err(|e| match e {
        ValidityError::Expired(_) => format!("{e}; enroll again with /simpleenroll"),
        other => other.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn header(v: &str) -> http::HeaderValue {
        http::HeaderValue::from_str(v).unwrap()
    }

    fn basic(user_pass: &str) -> http::HeaderValue {
        header(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        ))
    }

    #[test]
    fn basic_header_parsing() {
        let c = parse_basic(Some(&basic("sn-1:pa:ss"))).unwrap().unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_slice()),
            ("sn-1", &b"pa:ss"[..])
        );
        assert!(parse_basic(None).unwrap().is_none());
        let e = parse_basic(Some(&header("Bearer abc"))).err().unwrap();
        assert!(e.contains("Bearer") && e.contains("not supported"), "{e}");
        let e = parse_basic(Some(&header("Basic !!!"))).err().unwrap();
        assert!(e.contains("base64"), "{e}");
        let e = parse_basic(Some(&basic("nocolon"))).err().unwrap();
        assert!(e.contains("':'"), "{e}");
        let e = parse_basic(Some(&basic(":pw"))).err().unwrap();
        assert!(e.contains("empty"), "{e}");
        let long = "a".repeat(MAX_AUTHORIZATION + 1);
        assert!(parse_basic(Some(&header(&long))).is_err());
    }
}
