//! Component credentials for mutual TLS between ragw components.
//!
//! A component certificate says what its holder may do through SAN URIs
//! `urn:ragw:role:<role>`, and who it is through its first dNSName SAN or, failing that, its
//! CN. The issuing CA is internal to one ragw deployment and never signs device certificates.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use der::asn1::Any;
use der::{Decode, DecodePem, Encode, Tag, Tagged};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::{Duration, OffsetDateTime};
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints as X509BasicConstraints, SubjectAltName, SubjectKeyIdentifier,
};

/// Prefix of the SAN URI that carries a role.
pub const ROLE_URI_PREFIX: &str = "urn:ragw:role:";

/// Validity of a CA made by [`ComponentCa::generate`].
const CA_VALIDITY_DAYS: u32 = 3650;
/// Validity of the all-in-one mode's component certificates.
const DEV_LEAF_VALIDITY_DAYS: u32 = 365;
/// A dev certificate closer than this to expiry is reissued at start, so a long-running dev
/// setup never fails on an expired component certificate.
const DEV_RENEW_BEFORE: Duration = Duration::days(30);
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;
/// Backdating absorbs clock skew between the machine that issues and the ones that verify.
const BACKDATE: Duration = Duration::minutes(5);

/// What went wrong with a component identity.
#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot parse certificate: {0}")]
    Parse(#[from] der::Error),
    #[error("{}: {reason}", path.display())]
    InvalidCa { path: PathBuf, reason: String },
    #[error("the private key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "{} exists but {} does not; restore it or remove both to create a new component CA \
         (which also replaces every component certificate)",
        present.display(),
        missing.display()
    )]
    Incomplete { present: PathBuf, missing: PathBuf },
}

type Result<T, E = IdentityError> = std::result::Result<T, E>;

/// What a component may do, as granted by its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Gateway,
    /// An EAP server that terminates TEAP itself (FreeRADIUS, an ISE-style server) and enrolls
    /// through the registrar's EnrollmentService: a gateway limited to TEAP, told apart from
    /// ragw's own gateways in the audit log.
    #[serde(rename = "eap-server")]
    EapServer,
    Worker,
    Admin,
    Auditor,
    Registrar,
    Ca,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Gateway,
        Role::EapServer,
        Role::Worker,
        Role::Admin,
        Role::Auditor,
        Role::Registrar,
        Role::Ca,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::EapServer => "eap-server",
            Role::Worker => "worker",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Registrar => "registrar",
            Role::Ca => "ca",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The SAN URI that grants this role: `urn:ragw:role:<role>`.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The role name is not one of ragw's roles.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown role {0:?}; expected gateway, eap-server, worker, admin, auditor, registrar or ca"
)]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::parse(s).ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A freshly issued certificate and its private key (PKCS#8), both PEM.
#[derive(Clone)]
pub struct IssuedIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for IssuedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedIdentity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// The internal CA that issues component certificates (ECDSA P-256).
pub struct ComponentCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl fmt::Debug for ComponentCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentCa")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl ComponentCa {
    /// A new self-signed CA. It may only issue end-entity certificates (path length 0).
    pub fn generate(common_name: &str) -> Result<Self> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA certificate and its private key from PEM files.
    pub fn load(cert_pem_path: &Path, key_pem_path: &Path) -> Result<Self> {
        let cert_pem = read(cert_pem_path)?;
        let key_pem = read(key_pem_path)?;
        let invalid = |reason: String| IdentityError::InvalidCa {
            path: cert_pem_path.to_path_buf(),
            reason,
        };
        let cert = Certificate::from_pem(cert_pem.as_bytes())
            .map_err(|e| invalid(format!("not a PEM certificate: {e}")))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| IdentityError::InvalidCa {
            path: key_pem_path.to_path_buf(),
            reason: format!("not a usable PEM private key: {e}"),
        })?;
        let tbs = cert.tbs_certificate();

        let is_ca = tbs
            .get_extension::<X509BasicConstraints>()
            .map_err(|e| invalid(format!("bad basicConstraints: {e}")))?
            .is_some_and(|(_, bc)| bc.ca);
        if !is_ca {
            return Err(invalid("the certificate is not a CA certificate".into()));
        }
        let cert_spki = tbs.subject_public_key_info().to_der()?;
        if cert_spki != key.subject_public_key_info() {
            return Err(IdentityError::KeyMismatch {
                cert: cert_pem_path.to_path_buf(),
                key: key_pem_path.to_path_buf(),
            });
        }

        // rcgen can only rebuild an issuer from a certificate through x509-parser, which this
        // workspace does not use; the issuer is rebuilt from the fields rcgen writes into
        // issued certificates: the subject name (issuer DN must match byte for byte for path
        // building) and the key identifier (authorityKeyIdentifier must match the CA's SKI).
        let mut dn = DistinguishedName::new();
        for rdn in tbs.subject().iter_rdn() {
            let mut atvs = rdn.iter();
            let (Some(atv), None) = (atvs.next(), atvs.next()) else {
                return Err(invalid(
                    "multi-valued RDNs in the subject are not supported".into(),
                ));
            };
            let arcs: Vec<u64> = atv.oid.arcs().map(u64::from).collect();
            dn.push(
                DnType::from_oid(&arcs),
                dn_value(&atv.value).map_err(invalid)?,
            );
        }
        let key_identifier_method = match tbs
            .get_extension::<SubjectKeyIdentifier>()
            .map_err(|e| invalid(format!("bad subjectKeyIdentifier: {e}")))?
        {
            Some((_, ski)) => KeyIdMethod::PreSpecified(ski.0.as_bytes().to_vec()),
            None => KeyIdMethod::Sha256,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.key_identifier_method = key_identifier_method;
        // Only consulted when signing CRLs, which this CA does not do.
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem,
        })
    }

    /// The CA certificate, PEM: what peers trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PKCS#8 PEM, to persist it.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a component certificate for `name` carrying `roles`, usable as TLS client and
    /// server certificate. `dns_names` and `ip_addrs` are the names peers dial it by.
    pub fn issue(
        &self,
        name: &str,
        roles: &[Role],
        dns_names: &[String],
        ip_addrs: &[IpAddr],
        validity_days: u32,
    ) -> Result<IssuedIdentity> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let mut sans = Vec::with_capacity(dns_names.len() + ip_addrs.len() + roles.len());
        for dns in dns_names {
            sans.push(SanType::DnsName(dns.as_str().try_into()?));
        }
        sans.extend(ip_addrs.iter().copied().map(SanType::IpAddress));
        for role in roles {
            sans.push(SanType::URI(role.uri().try_into()?));
        }
        params.subject_alt_names = sans;
        set_validity(&mut params, validity_days);
        let cert = params.signed_by(&key, &self.issuer)?;
        tracing::debug!(name, roles = ?roles, "issued component certificate");
        Ok(IssuedIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(days));
}

/// Maps a subject attribute value to rcgen's, keeping its string type so the re-encoded issuer
/// name is identical to the CA's subject.
fn dn_value(value: &Any) -> std::result::Result<DnValue, String> {
    let bytes = value.value();
    let text = || {
        std::str::from_utf8(bytes).map_err(|_| "a subject attribute is not valid text".to_owned())
    };
    let unsupported = |e: rcgen::Error| format!("unsupported subject attribute: {e}");
    Ok(match value.tag() {
        Tag::Utf8String => DnValue::Utf8String(text()?.to_owned()),
        Tag::PrintableString => DnValue::PrintableString(text()?.try_into().map_err(unsupported)?),
        Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(unsupported)?),
        Tag::TeletexString => DnValue::TeletexString(text()?.try_into().map_err(unsupported)?),
        Tag::BmpString => DnValue::BmpString(
            rcgen::string::BmpString::from_utf16be(bytes.to_vec()).map_err(unsupported)?,
        ),
        other => return Err(format!("unsupported subject attribute type {other:?}")),
    })
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to `path`, readable by the owner only (0600), creating parent directories.
pub fn write_private_file(path: &Path, contents: impl AsRef<[u8]>) -> io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(KEY_MODE)
        .open(path)?;
    // `mode` only applies when the file is created; tighten a pre-existing one before the
    // secret goes in.
    file.set_permissions(fs::Permissions::from_mode(KEY_MODE))?;
    file.write_all(contents.as_ref())?;
    file.sync_all()
}

/// Where the all-in-one mode keeps its component PKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCredentials {
    pub dir: PathBuf,
    /// The component CA certificate: every component trusts it.
    pub ca_pem: PathBuf,
    pub ca_key: PathBuf,
}

impl DevCredentials {
    fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            ca_pem: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
        }
    }

    /// Certificate and key paths of the component holding `role`.
    pub fn pair(&self, role: Role) -> (PathBuf, PathBuf) {
        let stem = dev_file_stem(role);
        (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}.key")),
        )
    }
}

/// `ca` is the component CA's own file stem, so the holder of the ca role (the local ACME CA)
/// gets another.
fn dev_file_stem(role: Role) -> &'static str {
    match role {
        Role::Ca => "acme-ca",
        other => other.as_str(),
    }
}

/// Components that accept connections get loopback names in the all-in-one mode; the others
/// only dial out and are named by their CN, which keeps audit actors readable.
fn dev_server_names(role: Role) -> (Vec<String>, Vec<IpAddr>) {
    match role {
        Role::Registrar | Role::Ca => (
            vec!["localhost".to_owned()],
            vec![
                IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ],
        ),
        _ => (Vec::new(), Vec::new()),
    }
}

/// Makes sure `dir` holds a component CA and one certificate per role, creating whatever is
/// missing and keeping what exists, so a restart keeps every identity.
///
/// A component certificate is reissued when it is unreadable, not issued by the current CA,
/// lacks its role, or expires within 30 days.
pub fn ensure_dev_credentials(dir: &Path) -> Result<DevCredentials> {
    let creds = DevCredentials::at(dir);
    create_private_dir(dir)?;
    let ca = match (creds.ca_pem.exists(), creds.ca_key.exists()) {
        (true, true) => ComponentCa::load(&creds.ca_pem, &creds.ca_key)?,
        (false, false) => {
            let ca = ComponentCa::generate("ragw dev component CA")?;
            replace_file(&creds.ca_key, ca.key_pem().as_bytes(), KEY_MODE)?;
            replace_file(&creds.ca_pem, ca.cert_pem().as_bytes(), CERT_MODE)?;
            tracing::info!(path = %creds.ca_pem.display(), "created dev component CA");
            // Issue with what is on disk: if another process (`ragw admin` started alongside
            // `ragw dev`) created a CA at the same moment, this either adopts the winner or
            // reports the mixed pair instead of issuing certificates nobody trusts.
            ComponentCa::load(&creds.ca_pem, &creds.ca_key)?
        }
        (true, false) => {
            return Err(IdentityError::Incomplete {
                present: creds.ca_pem.clone(),
                missing: creds.ca_key.clone(),
            });
        }
        (false, true) => {
            return Err(IdentityError::Incomplete {
                present: creds.ca_key.clone(),
                missing: creds.ca_pem.clone(),
            });
        }
    };
    let ca_der = pem_to_der(ca.cert_pem())?;
    let ca_ski = subject_key_id(&ca_der)?;

    for role in Role::ALL {
        let (cert_path, key_path) = creds.pair(role);
        if dev_pair_usable(&cert_path, &key_path, role, ca_ski.as_deref()) {
            continue;
        }
        let (dns, ips) = dev_server_names(role);
        let issued = ca.issue(role.as_str(), &[role], &dns, &ips, DEV_LEAF_VALIDITY_DAYS)?;
        replace_file(&key_path, issued.key_pem.as_bytes(), KEY_MODE)?;
        replace_file(&cert_path, issued.cert_pem.as_bytes(), CERT_MODE)?;
        tracing::info!(role = %role, path = %cert_path.display(), "issued dev component certificate");
    }
    Ok(creds)
}

/// Writes through a temporary file and a rename, so a reader (another ragw process sharing the
/// directory) never sees a half-written PEM file. The temporary file starts private so a key
/// is never readable by others, even briefly.
fn replace_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    write_private_file(&tmp, contents).map_err(io_err(&tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// Whether an existing certificate and key can be kept. The key is compared with the
/// certificate because a crash between writing the two leaves a new key beside an old
/// certificate.
fn dev_pair_usable(cert_path: &Path, key_path: &Path, role: Role, ca_ski: Option<&[u8]>) -> bool {
    if !cert_path.exists() || !key_path.exists() {
        return false;
    }
    let check = || -> Result<bool> {
        let der = pem_to_der(&read(cert_path)?)?;
        let cert = Certificate::from_der(&der)?;
        let tbs = cert.tbs_certificate();
        let key = KeyPair::from_pem(&read(key_path)?)?;
        if tbs.subject_public_key_info().to_der()? != key.subject_public_key_info() {
            return Ok(false);
        }
        let not_after = OffsetDateTime::from(tbs.validity().not_after.to_system_time());
        let aki = tbs
            .get_extension::<x509_cert::ext::pkix::AuthorityKeyIdentifier>()?
            .and_then(|(_, aki)| aki.key_identifier)
            .map(|k| k.as_bytes().to_vec());
        Ok(roles_from_cert_der(&der)?.contains(&role)
            && aki.is_some()
            && aki.as_deref() == ca_ski
            && not_after - OffsetDateTime::now_utc() > DEV_RENEW_BEFORE)
    };
    match check() {
        Ok(usable) => usable,
        Err(e) => {
            tracing::warn!(path = %cert_path.display(), error = %e, "replacing unreadable dev certificate");
            false
        }
    }
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    Ok(Certificate::from_pem(pem.as_bytes())?.to_der()?)
}

fn subject_key_id(der: &[u8]) -> Result<Option<Vec<u8>>> {
    let cert = Certificate::from_der(der)?;
    Ok(cert
        .tbs_certificate()
        .get_extension::<SubjectKeyIdentifier>()?
        .map(|(_, ski)| ski.0.as_bytes().to_vec()))
}

/// The roles a component certificate grants (SAN URIs `urn:ragw:role:<role>`). Unknown roles are
/// ignored so that a newer CA can add roles without breaking older verifiers.
pub fn roles_from_cert_der(der: &[u8]) -> Result<Vec<Role>, IdentityError> {
    let cert = Certificate::from_der(der)?;
    let Some((_, san)) = cert.tbs_certificate().get_extension::<SubjectAltName>()? else {
        return Ok(Vec::new());
    };
    let mut roles = Vec::new();
    for name in &san.0 {
        if let GeneralName::UniformResourceIdentifier(uri) = name
            && let Some(role) = uri
                .as_str()
                .strip_prefix(ROLE_URI_PREFIX)
                .and_then(Role::parse)
            && !roles.contains(&role)
        {
            roles.push(role);
        }
    }
    Ok(roles)
}

/// The component's name: its first dNSName SAN, else its CN. `None` if the DER is unreadable or
/// names nothing.
pub fn subject_name_from_cert_der(der: &[u8]) -> Option<String> {
    let cert = Certificate::from_der(der).ok()?;
    let tbs = cert.tbs_certificate();
    if let Ok(Some((_, san))) = tbs.get_extension::<SubjectAltName>()
        && let Some(dns) = san.0.iter().find_map(|n| match n {
            GeneralName::DnsName(d) => Some(d.as_str().to_owned()),
            _ => None,
        })
    {
        return Some(dns);
    }
    tbs.subject()
        .common_name()
        .ok()
        .flatten()
        .map(|cn| cn.value().into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn der(pem: &str) -> Vec<u8> {
        pem_to_der(pem).unwrap()
    }

    #[test]
    fn role_names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!(Role::parse("root"), None);
        assert_eq!(Role::Gateway.uri(), "urn:ragw:role:gateway");
        assert_eq!(Role::EapServer.uri(), "urn:ragw:role:eap-server");
    }

    #[test]
    fn issued_certificate_carries_roles_and_name() {
        let ca = ComponentCa::generate("test CA").unwrap();
        let id = ca.issue("est-1", &[Role::Gateway], &[], &[], 30).unwrap();
        let d = der(&id.cert_pem);
        assert_eq!(roles_from_cert_der(&d).unwrap(), vec![Role::Gateway]);
        assert_eq!(subject_name_from_cert_der(&d).as_deref(), Some("est-1"));
        assert!(KeyPair::from_pem(&id.key_pem).is_ok());

        let both = ca
            .issue(
                "reg",
                &[Role::Registrar, Role::Admin],
                &["registrar.ragw.svc".into()],
                &["127.0.0.1".parse().unwrap()],
                30,
            )
            .unwrap();
        let d = der(&both.cert_pem);
        assert_eq!(
            roles_from_cert_der(&d).unwrap(),
            vec![Role::Registrar, Role::Admin]
        );
        assert_eq!(
            subject_name_from_cert_der(&d).as_deref(),
            Some("registrar.ragw.svc")
        );

        // Leaf is not a CA and is issued by the CA (AKI = CA's SKI).
        let cert = Certificate::from_der(&d).unwrap();
        let (_, bc) = cert
            .tbs_certificate()
            .get_extension::<X509BasicConstraints>()
            .unwrap()
            .unwrap();
        assert!(!bc.ca);
        let ski = subject_key_id(&der(ca.cert_pem())).unwrap();
        assert!(ski.is_some());
        assert_eq!(
            cert.tbs_certificate().issuer(),
            Certificate::from_der(&der(ca.cert_pem()))
                .unwrap()
                .tbs_certificate()
                .subject()
        );
    }

    #[test]
    fn certificate_without_role_uri_has_no_roles() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(vec!["plain.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert!(roles_from_cert_der(cert.der()).unwrap().is_empty());
        assert_eq!(
            subject_name_from_cert_der(cert.der()).as_deref(),
            Some("plain.example")
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(roles_from_cert_der(b"not a certificate").is_err());
        assert!(roles_from_cert_der(&[]).is_err());
        assert!(roles_from_cert_der(&[0x30, 0x82, 0xff, 0xff, 0x00]).is_err());
        assert_eq!(subject_name_from_cert_der(b"\x30\x03\x02\x01\x00"), None);
    }

    #[test]
    fn loaded_ca_issues_like_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ComponentCa::generate("ragw test CA").unwrap();
        let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        fs::write(&cert, ca.cert_pem()).unwrap();
        write_private_file(&key, ca.key_pem()).unwrap();
        let loaded = ComponentCa::load(&cert, &key).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());

        let leaf = loaded.issue("w", &[Role::Worker], &[], &[], 1).unwrap();
        let leaf = Certificate::from_der(&der(&leaf.cert_pem)).unwrap();
        let ca_cert = Certificate::from_der(&der(ca.cert_pem())).unwrap();
        // Byte-identical issuer name and matching key identifiers: what path building needs.
        assert_eq!(
            leaf.tbs_certificate().issuer().to_der().unwrap(),
            ca_cert.tbs_certificate().subject().to_der().unwrap()
        );
        let aki = leaf
            .tbs_certificate()
            .get_extension::<x509_cert::ext::pkix::AuthorityKeyIdentifier>()
            .unwrap()
            .unwrap()
            .1
            .key_identifier
            .unwrap();
        assert_eq!(
            Some(aki.as_bytes().to_vec()),
            subject_key_id(&der(ca.cert_pem())).unwrap()
        );

        // A key from another CA is refused.
        let other = ComponentCa::generate("other").unwrap();
        write_private_file(&key, other.key_pem()).unwrap();
        assert!(matches!(
            ComponentCa::load(&cert, &key),
            Err(IdentityError::KeyMismatch { .. })
        ));
        // A leaf is not a CA.
        let leaf = ca.issue("x", &[Role::Admin], &[], &[], 1).unwrap();
        fs::write(&cert, &leaf.cert_pem).unwrap();
        write_private_file(&key, &leaf.key_pem).unwrap();
        assert!(matches!(
            ComponentCa::load(&cert, &key),
            Err(IdentityError::InvalidCa { .. })
        ));
    }

    #[test]
    fn private_files_are_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/secret.key");
        write_private_file(&path, "one").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // An existing, looser file is tightened.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private_file(&path, "two").unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
    }

    #[test]
    fn dev_credentials_are_created_once_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let first = ensure_dev_credentials(&dir).unwrap();
        let ca_pem = fs::read_to_string(&first.ca_pem).unwrap();
        let mut leaves = Vec::new();
        for role in Role::ALL {
            let (cert, key) = first.pair(role);
            let d = der(&fs::read_to_string(&cert).unwrap());
            assert_eq!(roles_from_cert_der(&d).unwrap(), vec![role]);
            assert_eq!(
                fs::metadata(&key).unwrap().permissions().mode() & 0o777,
                0o600,
                "{}",
                key.display()
            );
            leaves.push(fs::read_to_string(&cert).unwrap());
        }
        assert_eq!(
            fs::metadata(&first.ca_key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (reg, _) = first.pair(Role::Registrar);
        let reg_der = der(&fs::read_to_string(reg).unwrap());
        let cert = Certificate::from_der(&reg_der).unwrap();
        let (_, san) = cert
            .tbs_certificate()
            .get_extension::<SubjectAltName>()
            .unwrap()
            .unwrap();
        let ips: Vec<_> = san
            .0
            .iter()
            .filter_map(|n| match n {
                GeneralName::IpAddress(ip) => Some(ip.as_bytes().len()),
                _ => None,
            })
            .collect();
        assert_eq!(ips, vec![4, 16]);
        assert_eq!(
            subject_name_from_cert_der(&reg_der).as_deref(),
            Some("localhost")
        );

        let second = ensure_dev_credentials(&dir).unwrap();
        assert_eq!(second, first);
        assert_eq!(fs::read_to_string(&second.ca_pem).unwrap(), ca_pem);
        for (role, before) in Role::ALL.into_iter().zip(&leaves) {
            let (cert, _) = second.pair(role);
            assert_eq!(&fs::read_to_string(cert).unwrap(), before);
        }

        // A lost component certificate is reissued under the same CA.
        let (gw, _) = second.pair(Role::Gateway);
        fs::remove_file(&gw).unwrap();
        ensure_dev_credentials(&dir).unwrap();
        assert!(gw.exists());
        assert_eq!(fs::read_to_string(&second.ca_pem).unwrap(), ca_pem);

        // A CA certificate without its key is not silently replaced.
        fs::remove_file(&second.ca_key).unwrap();
        assert!(matches!(
            ensure_dev_credentials(&dir),
            Err(IdentityError::Incomplete { .. })
        ));
    }

    /// The certificates must work where they are used: a rustls mutual-TLS handshake between the
    /// registrar and a gateway, with the CA reloaded from disk (the restart path).
    #[test]
    fn dev_credentials_complete_a_mutual_tls_handshake() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        use std::sync::Arc;

        let tmp = tempfile::tempdir().unwrap();
        ensure_dev_credentials(tmp.path()).unwrap();
        let creds = ensure_dev_credentials(tmp.path()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&creds.ca_pem).unwrap())
            .unwrap();
        let roots = Arc::new(roots);
        let load = |role| {
            let (cert, key) = creds.pair(role);
            (
                vec![CertificateDer::from_pem_file(cert).unwrap()],
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
        };

        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let (chain, key) = load(Role::Registrar);
        let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let (chain, key) = load(Role::Gateway);
        let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();

        for server_name in ["localhost", "127.0.0.1", "::1"] {
            let mut client = rustls::ClientConnection::new(
                Arc::new(client_cfg.clone()),
                ServerName::try_from(server_name).unwrap(),
            )
            .unwrap();
            let mut server = rustls::ServerConnection::new(Arc::new(server_cfg.clone())).unwrap();
            for _ in 0..10 {
                let mut buf = Vec::new();
                client.write_tls(&mut buf).unwrap();
                server.read_tls(&mut buf.as_slice()).unwrap();
                server.process_new_packets().unwrap();
                let mut buf = Vec::new();
                server.write_tls(&mut buf).unwrap();
                client.read_tls(&mut buf.as_slice()).unwrap();
                client.process_new_packets().unwrap();
            }
            assert!(!client.is_handshaking() && !server.is_handshaking());
            let peer = server.peer_certificates().unwrap()[0].clone();
            assert_eq!(roles_from_cert_der(&peer).unwrap(), vec![Role::Gateway]);
            assert_eq!(
                subject_name_from_cert_der(&peer).as_deref(),
                Some("gateway")
            );
        }
    }
}
