//! Configuration: [`EstSection`] is the `[est]` section of the configuration file (paths,
//! plain values); [`EstConfig`] is what the gateway runs on (files read, secrets digested,
//! names parsed). `ragw dev` can build an [`EstConfig`] directly.

use crate::guard::GuardLimits;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ragw_device_auth::{AuthConfigError, basic_from_section, client_cert_from_section};
use ragw_domain::KeyType;
use serde::Deserialize;
use thiserror::Error;

// The authentication sections and their checks are shared with the TEAP gateway.
pub use ragw_device_auth::{
    BasicAuth, BasicSection, CertIdentityField, ClientCertAuth, ClientCertSection, SERIAL_NUMBER,
    Secret, parse_pem_certs, read_password_file, read_pem_certs,
};

use crate::proxy::IpNet;

/// Operation names RFC 7030 reserves in the path; a label cannot be one of them.
pub(crate) const OPERATIONS: &[&str] = &[
    "cacerts",
    "simpleenroll",
    "simplereenroll",
    "fullcmc",
    "serverkeygen",
    "csrattrs",
];

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("est.{key}: {reason}")]
    Invalid { key: String, reason: String },
}

impl From<AuthConfigError> for ConfigError {
    fn from(e: AuthConfigError) -> Self {
        match e {
            AuthConfigError::Read { path, source } => ConfigError::Read { path, source },
            AuthConfigError::File { path, reason } => ConfigError::File { path, reason },
            AuthConfigError::Invalid { key, reason } => ConfigError::Invalid { key, reason },
        }
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// The file format.

/// The `[est]` section. Labels are a table keyed by the label, so a secret can be set from the
/// environment: `RAGW_EST__LABELS__IOT__BASIC__BOOTSTRAP_SECRET`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EstSection {
    /// HTTPS listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Health, readiness and metrics endpoint.
    #[serde(default = "default_ops_listen")]
    pub ops_listen: SocketAddr,
    /// The registrar's gRPC URL, e.g. `https://registrar:7443`.
    #[serde(default = "default_registrar_url")]
    pub registrar_url: String,
    /// TLS name to expect in the registrar's certificate; defaults to the URL's host.
    pub registrar_tls_name: Option<String>,
    /// The HTTPS server certificate chain (PEM, end entity first) and its private key.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The label served on `/.well-known/est/<operation>` (no label in the path). Without it,
    /// those paths answer 404 and every client must use a label.
    pub default_label: Option<String>,
    /// PEM CA certificates `/cacerts` returns for labels that set none themselves.
    pub cacerts: Option<PathBuf>,
    #[serde(default)]
    pub enrollment: EnrollmentSection,
    #[serde(default)]
    pub limits: LimitsSection,
    /// TLS terminated at an ingress: accept the client certificate from a request header, only
    /// from these proxies.
    pub trusted_proxy: Option<TrustedProxySection>,
    #[serde(default)]
    pub labels: BTreeMap<String, LabelSection>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}

fn default_ops_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9465))
}

fn default_registrar_url() -> String {
    "https://127.0.0.1:7443".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentSection {
    /// How long a simpleenroll waits for the certificate before answering 202.
    #[serde(default = "default_wait")]
    pub wait_seconds: u64,
    /// Retry-After of a 202 while the certificate is being obtained.
    #[serde(default = "default_retry_after")]
    pub retry_after_seconds: u32,
    /// Retry-After of a 202 while an operator has to approve the device.
    #[serde(default = "default_approval_retry_after")]
    pub approval_retry_after_seconds: u32,
}

impl Default for EnrollmentSection {
    fn default() -> Self {
        EnrollmentSection {
            wait_seconds: default_wait(),
            retry_after_seconds: default_retry_after(),
            approval_retry_after_seconds: default_approval_retry_after(),
        }
    }
}

fn default_wait() -> u64 {
    10
}
fn default_retry_after() -> u32 {
    10
}
fn default_approval_retry_after() -> u32 {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest request body accepted (base64 text).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Sustained requests per second per client address; 0 turns rate limiting off.
    #[serde(default = "default_rate")]
    pub requests_per_second: f64,
    /// Requests a client address may make in a burst.
    #[serde(default = "default_burst")]
    pub burst: u32,
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_seconds: u64,
    /// Time to receive the request head.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_seconds: u64,
    /// Time to receive the body.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_seconds: u64,
    /// Bound on one registrar call (the enrollment wait is bounded separately).
    #[serde(default = "default_registrar_timeout")]
    pub registrar_timeout_seconds: u64,
    /// Connections served at once; more wait in the listen queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// First wait imposed on a user name after a wrong password, from any address; it doubles
    /// with each further failure.
    #[serde(default = "default_user_failure_delay")]
    pub user_failure_delay_seconds: u64,
    /// Longest wait a user name is made to serve; never a permanent lock-out.
    #[serde(default = "default_user_failure_max_delay")]
    pub user_failure_max_delay_seconds: u64,
    /// A user name's failure count drops by one per this many seconds without failures.
    #[serde(default = "default_user_failure_decay")]
    pub user_failure_decay_seconds: u64,
    /// Failed authentications checked per second server-wide; beyond it Basic credentials are
    /// refused unchecked (503 + Retry-After). 0 turns the bound off.
    #[serde(default = "default_failed_auth_per_second")]
    pub failed_authentications_per_second: u32,
    /// Refusals audited one by one per source address and interval; the rest are counted into
    /// one summary event per source and interval.
    #[serde(default = "default_refusal_audit_per_source")]
    pub refusal_audit_per_source: u32,
    #[serde(default = "default_refusal_audit_interval")]
    pub refusal_audit_interval_seconds: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_body_bytes: default_max_body(),
            requests_per_second: default_rate(),
            burst: default_burst(),
            handshake_timeout_seconds: default_handshake_timeout(),
            header_timeout_seconds: default_header_timeout(),
            body_timeout_seconds: default_body_timeout(),
            registrar_timeout_seconds: default_registrar_timeout(),
            max_connections: default_max_connections(),
            user_failure_delay_seconds: default_user_failure_delay(),
            user_failure_max_delay_seconds: default_user_failure_max_delay(),
            user_failure_decay_seconds: default_user_failure_decay(),
            failed_authentications_per_second: default_failed_auth_per_second(),
            refusal_audit_per_source: default_refusal_audit_per_source(),
            refusal_audit_interval_seconds: default_refusal_audit_interval(),
        }
    }
}

fn default_user_failure_delay() -> u64 {
    1
}
fn default_user_failure_max_delay() -> u64 {
    300
}
fn default_user_failure_decay() -> u64 {
    600
}
fn default_failed_auth_per_second() -> u32 {
    20
}
fn default_refusal_audit_per_source() -> u32 {
    10
}
fn default_refusal_audit_interval() -> u64 {
    60
}

fn default_max_body() -> usize {
    // An RSA-8192 CSR with a handful of names is under 3 KiB of DER, 4 KiB of base64.
    32 * 1024
}
fn default_rate() -> f64 {
    5.0
}
fn default_burst() -> u32 {
    20
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_header_timeout() -> u64 {
    10
}
fn default_body_timeout() -> u64 {
    10
}
fn default_registrar_timeout() -> u64 {
    10
}
fn default_max_connections() -> usize {
    1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedProxySection {
    /// Addresses or CIDR blocks of the proxies, e.g. `["10.0.0.0/8", "127.0.0.1"]`.
    pub addresses: Vec<String>,
    /// Header carrying the client certificate: URL-encoded PEM (nginx
    /// `$ssl_client_escaped_cert`), PEM, base64 DER, or an Envoy `x-forwarded-client-cert`
    /// value with `Cert="…"`.
    #[serde(default = "default_cert_header")]
    pub client_cert_header: String,
    /// Header whose last address is the client's, for rate limiting and logs.
    #[serde(default = "default_forwarded_for")]
    pub client_address_header: Option<String>,
}

fn default_cert_header() -> String {
    "x-ssl-client-cert".into()
}
fn default_forwarded_for() -> Option<String> {
    Some("x-forwarded-for".into())
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSection {
    /// Registrar profile; defaults to the label itself.
    pub profile: Option<String>,
    /// PEM CA certificates for `/cacerts`; defaults to `est.cacerts`.
    pub cacerts: Option<PathBuf>,
    /// Line length of base64 response bodies; 64 (default) gives CRLF-terminated lines as in
    /// RFC 7030's examples, which clients decoding with OpenSSL's line-based BIO need (it reads
    /// nothing from a body without a line break and cuts lines of 1024 characters and more).
    /// 0 writes one line, for labels serving strongSwan's `pki --est`, which reads nothing else.
    #[serde(default = "default_base64_line_length")]
    pub base64_line_length: usize,
    /// Send `Content-Transfer-Encoding: base64` with base64 bodies (RFC 7030 did; RFC 8951
    /// says clients must not rely on it).
    #[serde(default = "default_true")]
    pub content_transfer_encoding: bool,
    /// `WWW-Authenticate: Basic realm="…"`; defaults to `ragw EST <label>`.
    pub realm: Option<String>,
    /// Key type `/csrattrs` asks for; defaults to the profile's first allowed key.
    pub csrattrs_key: Option<KeyType>,
    pub basic: Option<BasicSection>,
    pub client_cert: Option<ClientCertSection>,
}

/// RFC 7030's examples and MIME (RFC 2045 allows up to 76) wrap base64 at 64 characters.
pub const DEFAULT_BASE64_LINE_LENGTH: usize = 64;

fn default_base64_line_length() -> usize {
    DEFAULT_BASE64_LINE_LENGTH
}

fn default_true() -> bool {
    true
}

// ---------------------------------------------------------------------------------------------
// What the gateway runs on.

/// The gateway's configuration.
#[derive(Debug, Clone, Default)]
pub struct EstConfig {
    pub labels: Vec<LabelConfig>,
    /// Label served without a label in the path.
    pub default_label: Option<String>,
    pub limits: Limits,
    pub enrollment: EnrollmentTiming,
    pub trusted_proxy: Option<TrustedProxy>,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub requests_per_second: f64,
    pub burst: u32,
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub registrar_timeout: Duration,
    pub max_connections: usize,
    pub guard: GuardLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_section(&LimitsSection::default())
    }
}

impl Limits {
    fn from_section(s: &LimitsSection) -> Limits {
        Limits {
            max_body_bytes: s.max_body_bytes,
            requests_per_second: s.requests_per_second,
            burst: s.burst,
            handshake_timeout: Duration::from_secs(s.handshake_timeout_seconds),
            header_timeout: Duration::from_secs(s.header_timeout_seconds),
            body_timeout: Duration::from_secs(s.body_timeout_seconds),
            registrar_timeout: Duration::from_secs(s.registrar_timeout_seconds),
            max_connections: s.max_connections,
            guard: GuardLimits {
                user_base_delay: Duration::from_secs(s.user_failure_delay_seconds),
                user_max_delay: Duration::from_secs(s.user_failure_max_delay_seconds),
                user_decay: Duration::from_secs(s.user_failure_decay_seconds),
                failures_per_second: s.failed_authentications_per_second,
                audit_per_source: s.refusal_audit_per_source,
                audit_interval: Duration::from_secs(s.refusal_audit_interval_seconds),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct EnrollmentTiming {
    pub wait: Duration,
    pub retry_after_seconds: u32,
    pub approval_retry_after_seconds: u32,
}

impl Default for EnrollmentTiming {
    fn default() -> Self {
        let s = EnrollmentSection::default();
        EnrollmentTiming {
            wait: Duration::from_secs(s.wait_seconds),
            retry_after_seconds: s.retry_after_seconds,
            approval_retry_after_seconds: s.approval_retry_after_seconds,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrustedProxy {
    pub addresses: Vec<IpNet>,
    /// Lower-case header name.
    pub client_cert_header: String,
    pub client_address_header: Option<String>,
}

impl TrustedProxy {
    pub fn is_trusted(&self, addr: IpAddr) -> bool {
        self.addresses.iter().any(|n| n.contains(addr))
    }
}

/// One EST label (`/.well-known/est/<label>/…`) and the registrar profile behind it.
#[derive(Debug, Clone)]
pub struct LabelConfig {
    pub label: String,
    pub profile: String,
    /// DER certificates for `/cacerts`: the issuing chain and the root.
    pub cacerts: Vec<Vec<u8>>,
    pub base64_line_length: usize,
    pub content_transfer_encoding: bool,
    pub realm: String,
    pub csrattrs_key: Option<KeyType>,
    pub basic: Option<BasicAuth>,
    pub client_cert: Option<ClientCertAuth>,
}

impl LabelConfig {
    /// A label with defaults and no authentication method yet.
    pub fn new(label: &str, profile: &str) -> LabelConfig {
        LabelConfig {
            label: label.to_string(),
            profile: profile.to_string(),
            cacerts: Vec::new(),
            base64_line_length: DEFAULT_BASE64_LINE_LENGTH,
            content_transfer_encoding: true,
            realm: format!("ragw EST {label}"),
            csrattrs_key: None,
            basic: None,
            client_cert: None,
        }
    }
}

pub(crate) fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 64
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !OPERATIONS.contains(&label)
}

impl EstConfig {
    /// Checks what the types cannot: at least one label, valid label names, an authentication
    /// method per label, a known default label, sane limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.labels.is_empty() {
            return Err(invalid(
                "labels",
                "no label is configured; add [est.labels.<name>] with basic or client_cert \
                 authentication",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for l in &self.labels {
            let key = format!("labels.{}", l.label);
            if !valid_label(&l.label) {
                return Err(invalid(
                    key,
                    "a label is 1-64 of A-Z a-z 0-9 - _ . and not an EST operation name",
                ));
            }
            if !seen.insert(l.label.as_str()) {
                return Err(invalid(key, "the label is configured twice"));
            }
            if l.profile.is_empty() {
                return Err(invalid(key + ".profile", "must not be empty"));
            }
            if l.basic.is_none() && l.client_cert.is_none() {
                return Err(invalid(
                    key,
                    "no authentication method: set basic (password or bootstrap secret) or \
                     client_cert (trust anchors), or both",
                ));
            }
            if let Some(b) = &l.basic
                && b.passwords.is_empty()
                && b.bootstrap.is_none()
            {
                return Err(invalid(
                    key + ".basic",
                    "neither password_file nor a bootstrap secret is set, so no password \
                     could ever be accepted",
                ));
            }
            if let Some(c) = &l.client_cert
                && c.trust_anchors.is_empty()
            {
                return Err(invalid(
                    key + ".client_cert.trust_anchors",
                    "holds no certificate",
                ));
            }
            if l.base64_line_length != 0
                && (l.base64_line_length % 4 != 0 || !(4..=76).contains(&l.base64_line_length))
            {
                return Err(invalid(
                    key + ".base64_line_length",
                    "must be 0 (one line) or a multiple of 4 from 4 to 76",
                ));
            }
            if l.realm.contains('"') || l.realm.chars().any(|c| c.is_control()) {
                return Err(invalid(
                    key + ".realm",
                    "must not contain quotes or control characters",
                ));
            }
        }
        if let Some(d) = &self.default_label
            && !self.labels.iter().any(|l| &l.label == d)
        {
            return Err(invalid(
                "default_label",
                format!("{d:?} is not one of the configured labels"),
            ));
        }
        let lim = &self.limits;
        if lim.max_body_bytes < 1024 || lim.max_body_bytes > 1024 * 1024 {
            return Err(invalid(
                "limits.max_body_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        if !lim.requests_per_second.is_finite() || lim.requests_per_second < 0.0 {
            return Err(invalid(
                "limits.requests_per_second",
                "must be a number ≥ 0 (0 turns rate limiting off)",
            ));
        }
        if lim.requests_per_second > 0.0 && lim.burst == 0 {
            return Err(invalid("limits.burst", "must be at least 1"));
        }
        if lim.max_connections == 0 {
            return Err(invalid("limits.max_connections", "must be at least 1"));
        }
        for (name, d) in [
            ("limits.handshake_timeout_seconds", lim.handshake_timeout),
            ("limits.header_timeout_seconds", lim.header_timeout),
            ("limits.body_timeout_seconds", lim.body_timeout),
            ("limits.registrar_timeout_seconds", lim.registrar_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        if let Some(p) = &self.trusted_proxy
            && p.addresses.is_empty()
        {
            return Err(invalid(
                "trusted_proxy.addresses",
                "is empty; list the proxies' addresses, or drop [est.trusted_proxy]",
            ));
        }
        Ok(())
    }

    pub fn label(&self, name: &str) -> Option<&LabelConfig> {
        self.labels.iter().find(|l| l.label == name)
    }
}

impl EstSection {
    /// Reads every file the section names and builds the gateway configuration. Relative
    /// paths are taken as they are (relative to the working directory).
    pub fn to_config(&self) -> Result<EstConfig, ConfigError> {
        let cfg = self.to_config_parts()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Like [`to_config`](Self::to_config) without the checks of the whole: for a caller that
    /// adds labels of its own (`ragw dev`) and validates the result.
    pub fn to_config_parts(&self) -> Result<EstConfig, ConfigError> {
        let default_cacerts = match &self.cacerts {
            Some(p) => Some(read_pem_certs(p)?),
            None => None,
        };
        let mut labels = Vec::with_capacity(self.labels.len());
        for (name, s) in &self.labels {
            let key = format!("labels.{name}");
            let mut l = LabelConfig::new(name, s.profile.as_deref().unwrap_or(name));
            l.cacerts = match &s.cacerts {
                Some(p) => read_pem_certs(p)?,
                None => default_cacerts.clone().unwrap_or_default(),
            };
            l.base64_line_length = s.base64_line_length;
            l.content_transfer_encoding = s.content_transfer_encoding;
            if let Some(r) = &s.realm {
                l.realm = r.clone();
            }
            l.csrattrs_key = s.csrattrs_key;
            if let Some(b) = &s.basic {
                l.basic = Some(basic_from_section(&key, b)?);
            }
            if let Some(c) = &s.client_cert {
                l.client_cert = Some(client_cert_from_section(&key, c)?);
            }
            labels.push(l);
        }
        let trusted_proxy = match &self.trusted_proxy {
            Some(p) => Some(TrustedProxy {
                addresses: p
                    .addresses
                    .iter()
                    .map(|a| {
                        a.parse::<IpNet>()
                            .map_err(|e| invalid("trusted_proxy.addresses", e))
                    })
                    .collect::<Result<_, _>>()?,
                client_cert_header: header_name(
                    "trusted_proxy.client_cert_header",
                    &p.client_cert_header,
                )?,
                client_address_header: p
                    .client_address_header
                    .as_deref()
                    .map(|h| header_name("trusted_proxy.client_address_header", h))
                    .transpose()?,
            }),
            None => None,
        };
        let cfg = EstConfig {
            labels,
            default_label: self.default_label.clone(),
            limits: Limits::from_section(&self.limits),
            enrollment: EnrollmentTiming {
                wait: Duration::from_secs(self.enrollment.wait_seconds),
                retry_after_seconds: self.enrollment.retry_after_seconds,
                approval_retry_after_seconds: self.enrollment.approval_retry_after_seconds,
            },
            trusted_proxy,
        };
        Ok(cfg)
    }
}

fn header_name(key: &str, name: &str) -> Result<String, ConfigError> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map(|h| h.as_str().to_string())
        .map_err(|_| invalid(key, format!("{name:?} is not a valid HTTP header name")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ragw_domain::IdentityKind;

    #[test]
    fn validation_names_the_key() {
        let mut cfg = EstConfig {
            labels: vec![LabelConfig::new("iot", "iot")],
            default_label: None,
            limits: Limits::default(),
            enrollment: EnrollmentTiming::default(),
            trusted_proxy: None,
        };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.contains("est.labels.iot") && e.contains("no authentication"),
            "{e}"
        );
        let mut basic = BasicAuth::new(IdentityKind::SerialNumber);
        basic.bootstrap = Some(Secret::from_plain("s3cret"));
        cfg.labels[0].basic = Some(basic);
        cfg.validate().unwrap();
        cfg.default_label = Some("other".into());
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("default_label")
        );
        cfg.default_label = None;
        cfg.labels[0].label = "simpleenroll".into();
        assert!(cfg.validate().is_err());
        cfg.labels[0].label = "iot".into();
        cfg.labels[0].base64_line_length = 63;
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("base64_line_length")
        );
    }

    #[test]
    fn section_reads_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(
            &pem_path,
            format!("# comment\n{}{}", cert.pem(), cert.pem()),
        )
        .unwrap();
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        let pw_path = dir.path().join("passwords");
        std::fs::write(&pw_path, format!("AA-BB-CC-DD-EE-FF:{hash}\n")).unwrap();
        let mut labels = BTreeMap::new();
        labels.insert(
            "cams".to_string(),
            LabelSection {
                profile: Some("cameras".into()),
                basic: Some(BasicSection {
                    identity_kind: Some("mac".into()),
                    password_file: Some(pw_path),
                    ..Default::default()
                }),
                client_cert: Some(ClientCertSection {
                    trust_anchors: pem_path.clone(),
                    identity: Some("san:hardwareModuleName".into()),
                    identity_kind: None,
                }),
                ..Default::default()
            },
        );
        let section = EstSection {
            listen: default_listen(),
            ops_listen: default_ops_listen(),
            registrar_url: default_registrar_url(),
            registrar_tls_name: None,
            tls_cert: None,
            tls_key: None,
            default_label: Some("cams".into()),
            cacerts: Some(pem_path),
            enrollment: EnrollmentSection::default(),
            limits: LimitsSection::default(),
            trusted_proxy: Some(TrustedProxySection {
                addresses: vec!["10.0.0.0/8".into()],
                client_cert_header: "X-Client-Cert".into(),
                client_address_header: None,
            }),
            labels,
        };
        let cfg = section.to_config().unwrap();
        let l = cfg.label("cams").unwrap();
        assert_eq!(l.profile, "cameras");
        assert_eq!(l.cacerts.len(), 2);
        assert_eq!(l.cacerts[0], cert.der().to_vec());
        let basic = l.basic.as_ref().unwrap();
        assert_eq!(basic.identity_kind, IdentityKind::Mac);
        assert!(basic.passwords.contains_key("aa:bb:cc:dd:ee:ff"));
        let cc = l.client_cert.as_ref().unwrap();
        assert_eq!(cc.identity, CertIdentityField::SanHardwareModuleName);
        assert_eq!(cc.identity_kind, IdentityKind::IdevidSerial);
        let proxy = cfg.trusted_proxy.as_ref().unwrap();
        assert_eq!(proxy.client_cert_header, "x-client-cert");
        assert!(proxy.is_trusted("10.2.3.4".parse().unwrap()));

        let mut bad = section.clone();
        bad.labels
            .get_mut("cams")
            .unwrap()
            .basic
            .as_mut()
            .unwrap()
            .identity_kind = Some("imei".into());
        let e = bad.to_config().unwrap_err().to_string();
        assert!(e.contains("est.labels.cams.basic.identity_kind"), "{e}");
        let mut bad = section.clone();
        bad.cacerts = Some(dir.path().join("missing.pem"));
        assert!(
            bad.to_config()
                .unwrap_err()
                .to_string()
                .contains("missing.pem")
        );
        assert!(
            parse_pem_certs("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .unwrap_err()
                .contains("PRIVATE KEY")
        );
    }
}
