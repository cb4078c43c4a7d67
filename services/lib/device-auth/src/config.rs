//! The configuration sections of device authentication (`basic`, `client_cert`, as found in
//! `[est.labels.<name>]` and `[teap.labels.<name>]`) and their validated forms.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use ragw_domain::IdentityKind;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_cert::Certificate;

/// A problem in an authentication section. `key` is relative to the gateway's section (e.g.
/// `labels.iot.basic.bootstrap_secret`); the gateway's own error adds its prefix (`est.`,
/// `teap.`).
#[derive(Debug, Error)]
pub enum AuthConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> AuthConfigError {
    AuthConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The file format.

/// Passwords: the user name is the device identifier.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicSection {
    /// How the registrar knows the username: `serial` (default), `mac`, `idevid` or `user`.
    pub identity_kind: Option<String>,
    /// Per-device passwords: lines `identifier:$argon2id$…` (PHC strings); `#` comments.
    pub password_file: Option<PathBuf>,
    /// One secret every device of the label may use (bootstrap). Prefer the hash, or set this
    /// from the environment rather than in the file.
    pub bootstrap_secret: Option<String>,
    pub bootstrap_secret_file: Option<PathBuf>,
    /// An argon2 PHC string of the bootstrap secret.
    pub bootstrap_secret_hash: Option<String>,
}

/// Device certificates (IDevIDs) from the device maker's CAs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertSection {
    /// PEM CA certificates a device certificate must chain to (intermediates may be listed
    /// too; each is trusted on its own).
    pub trust_anchors: PathBuf,
    /// Where the device identifier is: `subject:serialNumber` (default), `subject:CN`,
    /// `subject:<dotted OID>`, `san:dns`, `san:uri`, `san:email`, `san:hardwareModuleName`.
    pub identity: Option<String>,
    /// How the registrar knows the identifier: `idevid` (default), `serial`, `mac` or `user`.
    pub identity_kind: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// What the gateways run on.

#[derive(Debug, Clone)]
pub struct BasicAuth {
    pub identity_kind: IdentityKind,
    /// Device identifier → argon2 PHC string.
    pub passwords: HashMap<String, String>,
    pub bootstrap: Option<Secret>,
}

impl BasicAuth {
    pub fn new(identity_kind: IdentityKind) -> BasicAuth {
        BasicAuth {
            identity_kind,
            passwords: HashMap::new(),
            bootstrap: None,
        }
    }

    /// Whether checking a password may run argon2 (so the caller moves the work off the async
    /// threads).
    pub fn uses_argon2(&self) -> bool {
        !self.passwords.is_empty() || matches!(self.bootstrap, Some(Secret::Argon2(_)))
    }

    /// Whether any password could ever be accepted.
    pub fn accepts_any(&self) -> bool {
        !self.passwords.is_empty() || self.bootstrap.is_some()
    }
}

/// A shared secret, held only as a digest or a password hash.
#[derive(Clone)]
pub enum Secret {
    /// SHA-256 of a secret given in clear; only a digest stays in memory.
    Sha256([u8; 32]),
    /// An argon2 PHC string.
    Argon2(String),
}

impl Secret {
    pub fn from_plain(secret: &str) -> Secret {
        Secret::Sha256(Sha256::digest(secret.as_bytes()).into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Sha256(_) => f.write_str("Secret::Sha256(..)"),
            Secret::Argon2(_) => f.write_str("Secret::Argon2(..)"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientCertAuth {
    pub trust_anchors: Vec<CertificateDer<'static>>,
    pub identity: CertIdentityField,
    pub identity_kind: IdentityKind,
}

/// Where in a device certificate the identifier is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertIdentityField {
    Subject(ObjectIdentifier),
    SanDns,
    SanUri,
    SanEmail,
    /// RFC 4108 hardwareModuleName (IEEE 802.1AR): its hwSerialNum.
    SanHardwareModuleName,
}

pub const SERIAL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.5");
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

impl CertIdentityField {
    pub fn parse(s: &str) -> Result<Self, String> {
        let field = match s {
            "subject:serialNumber" => CertIdentityField::Subject(SERIAL_NUMBER),
            "subject:CN" | "subject:commonName" => CertIdentityField::Subject(COMMON_NAME),
            "san:dns" => CertIdentityField::SanDns,
            "san:uri" => CertIdentityField::SanUri,
            "san:email" => CertIdentityField::SanEmail,
            "san:hardwareModuleName" => CertIdentityField::SanHardwareModuleName,
            other => match other.strip_prefix("subject:").map(ObjectIdentifier::new) {
                Some(Ok(oid)) => CertIdentityField::Subject(oid),
                _ => {
                    return Err(format!(
                        "{s:?} is not an identity field; use subject:serialNumber, subject:CN, \
                         subject:<dotted OID>, san:dns, san:uri, san:email or \
                         san:hardwareModuleName"
                    ));
                }
            },
        };
        Ok(field)
    }
}

impl fmt::Display for CertIdentityField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertIdentityField::Subject(oid) if *oid == SERIAL_NUMBER => {
                f.write_str("subject serialNumber")
            }
            CertIdentityField::Subject(oid) if *oid == COMMON_NAME => {
                f.write_str("subject commonName")
            }
            CertIdentityField::Subject(oid) => write!(f, "subject attribute {oid}"),
            CertIdentityField::SanDns => f.write_str("subjectAltName dNSName"),
            CertIdentityField::SanUri => f.write_str("subjectAltName URI"),
            CertIdentityField::SanEmail => f.write_str("subjectAltName rfc822Name"),
            CertIdentityField::SanHardwareModuleName => {
                f.write_str("subjectAltName hardwareModuleName")
            }
        }
    }
}

/// An identity kind setting (`mac`, `serial`, `idevid`, `user`), `default` when unset.
pub fn parse_identity_kind(
    key: &str,
    value: Option<&str>,
    default: IdentityKind,
) -> Result<IdentityKind, AuthConfigError> {
    match value {
        None => Ok(default),
        Some(v) => IdentityKind::parse(v).ok_or_else(|| {
            invalid(
                key,
                format!("{v:?} is not an identity kind; use mac, serial, idevid or user"),
            )
        }),
    }
}

/// Reads the files of a `basic` section. `key` is the label's key (`labels.<name>`).
pub fn basic_from_section(key: &str, b: &BasicSection) -> Result<BasicAuth, AuthConfigError> {
    let mut auth = BasicAuth::new(parse_identity_kind(
        &format!("{key}.basic.identity_kind"),
        b.identity_kind.as_deref(),
        IdentityKind::SerialNumber,
    )?);
    if let Some(path) = &b.password_file {
        // Keyed by the identifier as the registrar will know it (a MAC written
        // AA-BB-… in the file matches a device that logs in as aa:bb:…).
        for (id, hash) in read_password_file(path)? {
            let device =
                ragw_domain::DeviceIdentity::new(auth.identity_kind, &id).map_err(|e| {
                    AuthConfigError::File {
                        path: path.clone(),
                        reason: format!("{id:?} is not a valid device identifier: {e}"),
                    }
                })?;
            auth.passwords.insert(device.value().to_string(), hash);
        }
    }
    let secrets = [
        b.bootstrap_secret.is_some(),
        b.bootstrap_secret_file.is_some(),
        b.bootstrap_secret_hash.is_some(),
    ];
    if secrets.iter().filter(|s| **s).count() > 1 {
        return Err(invalid(
            format!("{key}.basic"),
            "set only one of bootstrap_secret, bootstrap_secret_file and bootstrap_secret_hash",
        ));
    }
    if let Some(s) = &b.bootstrap_secret {
        if s.is_empty() {
            return Err(invalid(format!("{key}.basic.bootstrap_secret"), "is empty"));
        }
        auth.bootstrap = Some(Secret::from_plain(s));
    }
    if let Some(path) = &b.bootstrap_secret_file {
        let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let secret = text.trim_end_matches(['\r', '\n']);
        if secret.is_empty() {
            return Err(AuthConfigError::File {
                path: path.clone(),
                reason: "the bootstrap secret file is empty".into(),
            });
        }
        auth.bootstrap = Some(Secret::from_plain(secret));
    }
    if let Some(h) = &b.bootstrap_secret_hash {
        check_phc(h).map_err(|e| invalid(format!("{key}.basic.bootstrap_secret_hash"), e))?;
        auth.bootstrap = Some(Secret::Argon2(h.clone()));
    }
    Ok(auth)
}

/// Reads the trust anchors of a `client_cert` section. `key` is the label's key.
pub fn client_cert_from_section(
    key: &str,
    c: &ClientCertSection,
) -> Result<ClientCertAuth, AuthConfigError> {
    let identity = match &c.identity {
        Some(f) => CertIdentityField::parse(f)
            .map_err(|e| invalid(format!("{key}.client_cert.identity"), e))?,
        None => CertIdentityField::Subject(SERIAL_NUMBER),
    };
    Ok(ClientCertAuth {
        trust_anchors: read_pem_certs(&c.trust_anchors)?
            .into_iter()
            .map(CertificateDer::from)
            .collect(),
        identity,
        identity_kind: parse_identity_kind(
            &format!("{key}.client_cert.identity_kind"),
            c.identity_kind.as_deref(),
            IdentityKind::IdevidSerial,
        )?,
    })
}

fn check_phc(hash: &str) -> Result<(), String> {
    let parsed = argon2::PasswordHash::new(hash)
        .map_err(|e| format!("not a PHC password hash string ({e})"))?;
    let alg = parsed.algorithm.as_str();
    if !alg.starts_with("argon2") {
        return Err(format!(
            "the hash uses {alg}; only argon2 (argon2id, argon2i, argon2d) hashes are accepted"
        ));
    }
    Ok(())
}

/// `identifier:$argon2id$…` per line; blank lines and `#` comments skipped.
pub fn read_password_file(path: &Path) -> Result<HashMap<String, String>, AuthConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_password_file(&text).map_err(|reason| AuthConfigError::File {
        path: path.to_path_buf(),
        reason,
    })
}

pub fn parse_password_file(text: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // PHC strings start with '$', so the first ":$" ends the identifier even if the
        // identifier is a MAC address with colons.
        let Some(split) = line.find(":$") else {
            return Err(format!(
                "line {}: expected identifier:$argon2id$… (an argon2 PHC string)",
                i + 1
            ));
        };
        let (id, hash) = (&line[..split], &line[split + 1..]);
        if id.is_empty() {
            return Err(format!("line {}: the identifier is empty", i + 1));
        }
        check_phc(hash).map_err(|e| format!("line {}: {e}", i + 1))?;
        if out.insert(id.to_string(), hash.to_string()).is_some() {
            return Err(format!("line {}: {id:?} is listed twice", i + 1));
        }
    }
    Ok(out)
}

/// DER certificates from a PEM file (every CERTIFICATE block; other blocks are refused).
pub fn read_pem_certs(path: &Path) -> Result<Vec<Vec<u8>>, AuthConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_pem_certs(&text).map_err(|reason| AuthConfigError::File {
        path: path.to_path_buf(),
        reason,
    })
}

pub fn parse_pem_certs(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut block: Option<(String, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if block.is_some() {
                return Err(format!("line {}: BEGIN inside another PEM block", i + 1));
            }
            block = Some((label.to_string(), String::new()));
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            let Some((begin, body)) = block.take() else {
                return Err(format!("line {}: END without BEGIN", i + 1));
            };
            if begin != label {
                return Err(format!(
                    "line {}: BEGIN {begin} ended by END {label}",
                    i + 1
                ));
            }
            if label != "CERTIFICATE" {
                return Err(format!(
                    "line {}: a {label} block where only CERTIFICATE blocks belong",
                    i + 1
                ));
            }
            let n = out.len() + 1;
            let der = ragw_pki::base64::decode_lenient(body.as_bytes(), 1 << 20)
                .map_err(|e| format!("certificate {n}: {e}"))?;
            let cert = Certificate::from_der(&der).map_err(|e| format!("certificate {n}: {e}"))?;
            // A BER-encoded certificate would change bytes when re-encoded (EST /cacerts).
            if cert.to_der().ok().as_deref() != Some(der.as_slice()) {
                return Err(format!("certificate {n} is not DER-encoded"));
            }
            out.push(der);
        } else if let Some((_, body)) = block.as_mut() {
            body.push_str(line);
        }
    }
    if block.is_some() {
        return Err("a PEM block has no END line".into());
    }
    if out.is_empty() {
        return Err("no PEM CERTIFICATE block found".into());
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HASH: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";

    #[test]
    fn password_file_lines() {
        let text = format!("# devices\n\n02:00:00:00:00:01:{HASH}\nsn-42:{HASH}\n");
        let m = parse_password_file(&text).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["02:00:00:00:00:01"], HASH);
        assert!(
            parse_password_file("sn-1:plaintext")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            parse_password_file("sn-1:$2y$10$abcdefghijklmnopqrstuv")
                .unwrap_err()
                .contains("line 1")
        );
        let dup = format!("a:{HASH}\na:{HASH}\n");
        assert!(parse_password_file(&dup).unwrap_err().contains("twice"));
    }

    #[test]
    fn identity_fields_parse() {
        assert_eq!(
            CertIdentityField::parse("subject:serialNumber").unwrap(),
            CertIdentityField::Subject(SERIAL_NUMBER)
        );
        assert_eq!(
            CertIdentityField::parse("subject:2.5.4.45").unwrap(),
            CertIdentityField::Subject(ObjectIdentifier::new_unwrap("2.5.4.45"))
        );
        assert!(CertIdentityField::parse("issuer:CN").is_err());
    }

    #[test]
    fn sections_read_their_files_and_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let pw_path = dir.path().join("passwords");
        std::fs::write(&pw_path, format!("AA-BB-CC-DD-EE-FF:{HASH}\n")).unwrap();
        let section = BasicSection {
            identity_kind: Some("mac".into()),
            password_file: Some(pw_path),
            ..Default::default()
        };
        let basic = basic_from_section("labels.cams", &section).unwrap();
        assert_eq!(basic.identity_kind, IdentityKind::Mac);
        assert!(basic.passwords.contains_key("aa:bb:cc:dd:ee:ff"));
        assert!(basic.uses_argon2() && basic.accepts_any());

        let two = BasicSection {
            bootstrap_secret: Some("a".into()),
            bootstrap_secret_hash: Some(HASH.into()),
            ..Default::default()
        };
        let e = basic_from_section("labels.cams", &two)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("labels.cams.basic: set only one"), "{e}");
        let bad_kind = BasicSection {
            identity_kind: Some("imei".into()),
            ..Default::default()
        };
        let e = basic_from_section("labels.x", &bad_kind)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("labels.x.basic.identity_kind"), "{e}");

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, cert.pem()).unwrap();
        let cc = client_cert_from_section(
            "labels.cams",
            &ClientCertSection {
                trust_anchors: pem_path,
                identity: Some("san:hardwareModuleName".into()),
                identity_kind: None,
            },
        )
        .unwrap();
        assert_eq!(cc.identity, CertIdentityField::SanHardwareModuleName);
        assert_eq!(cc.identity_kind, IdentityKind::IdevidSerial);
        assert_eq!(cc.trust_anchors[0].as_ref(), cert.der().as_ref());
        let e = client_cert_from_section(
            "labels.cams",
            &ClientCertSection {
                trust_anchors: dir.path().join("missing.pem"),
                identity: None,
                identity_kind: None,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing.pem"), "{e}");
        assert!(
            parse_pem_certs("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .unwrap_err()
                .contains("PRIVATE KEY")
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = Secret::from_plain("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
