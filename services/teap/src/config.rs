//! Configuration: [`TeapSection`] is the `[teap]` section of the configuration file (paths and
//! plain values, with the same `RAGW_TEAP__…` environment overrides as every section);
//! [`TeapConfig`] is what the gateway runs on (secrets read, addresses parsed, files loaded).
//! `ragw dev` can build a [`TeapConfig`] directly.
//!
//! RADIUS shared secrets never sit in the file: a client names a `secret_file` or a
//! `secret_env` variable. Device authentication (`basic`, `client_cert`) is the very section
//! EST labels use (`ragw-device-auth`), so both gateways accept the same credentials.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ragw_device_auth::guard::GuardLimits;
use ragw_device_auth::{
    AuthConfigError, BasicAuth, BasicSection, ClientCertAuth, ClientCertSection,
    basic_from_section, client_cert_from_section, read_pem_certs,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::radius_server::{IpPrefix, Secret};

pub mod radsec;
pub use radsec::{RadsecSection, RadsecSettings};

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
    #[error("teap.{key}: {reason}")]
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

/// The `[teap]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeapSection {
    /// RADIUS (UDP) listen address for Access-Requests from NASes or a RADIUS proxy.
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
    /// The TEAP server certificate chain (PEM, end entity first) and its private key (PEM):
    /// what devices see in the phase-1 TLS handshake.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) given to a device that asks for the Trusted-Server-Root: the root
    /// of `tls_cert`, so the device can check this server next time. Unset: such a request is
    /// answered without roots.
    pub trusted_server_root: Option<PathBuf>,
    /// The Authority-ID the server sends in its Start (RFC 9930 §4.2.2), as text. Unset: the
    /// first 16 octets of the SHA-256 of the server certificate, so replicas sharing a
    /// certificate share an Authority-ID.
    pub authority_id: Option<String>,
    /// Label for outer identities whose realm (`…@<label>`) names no configured label.
    pub default_label: Option<String>,
    #[serde(default)]
    pub limits: TeapLimitsSection,
    /// RADIUS clients by name: `[teap.clients.<name>]`.
    #[serde(default)]
    pub clients: BTreeMap<String, RadiusClientSection>,
    /// `[teap.labels.<name>]`: device authentication and provisioning per label.
    #[serde(default)]
    pub labels: BTreeMap<String, TeapLabelSection>,
    /// `[teap.radsec]`: RadSec (RADIUS over TLS) beside UDP; absent = UDP only.
    pub radsec: Option<RadsecSection>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 1812))
}

fn default_ops_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9467))
}

fn default_registrar_url() -> String {
    "https://127.0.0.1:7443".into()
}

/// One RADIUS client (a NAS, or the RADIUS proxy in front of ragw).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadiusClientSection {
    /// Source address or CIDR block, e.g. `192.0.2.10` or `10.0.0.0/8`; the most specific
    /// entry containing a request's source wins.
    pub address: String,
    /// File holding the shared secret (one line; a trailing newline is ignored).
    pub secret_file: Option<PathBuf>,
    /// Name of the environment variable holding the shared secret.
    pub secret_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeapLimitsSection {
    /// TEAP conversations held at once; a new conversation beyond it is refused.
    #[serde(default = "default_max_conversations")]
    pub max_conversations: usize,
    /// Longest a conversation may last from its Identity to its end.
    #[serde(default = "default_conversation_lifetime")]
    pub conversation_lifetime_seconds: u64,
    /// How long an enrollment may hold the EAP exchange waiting for the certificate; then the
    /// device gets a retryable error. Keep it below the NAS's (or proxy's) response window.
    #[serde(default = "default_enrollment_hold")]
    pub enrollment_hold_seconds: u64,
    /// Bound on one registrar call other than the enrollment wait.
    #[serde(default = "default_registrar_timeout")]
    pub registrar_timeout_seconds: u64,
    /// First wait imposed on a user name (per label) after a wrong password, from any NAS; it
    /// doubles with each further failure. The same bounds as `[est.limits]`.
    #[serde(default = "default_user_failure_delay")]
    pub user_failure_delay_seconds: u64,
    /// Longest wait a user name is made to serve; never a permanent lock-out.
    #[serde(default = "default_user_failure_max_delay")]
    pub user_failure_max_delay_seconds: u64,
    /// A user name's failure count drops by one per this many seconds without failures.
    #[serde(default = "default_user_failure_decay")]
    pub user_failure_decay_seconds: u64,
    /// Failed passwords checked per second gateway-wide; beyond it passwords are refused
    /// unchecked. 0 turns the bound off.
    #[serde(default = "default_failed_auth_per_second")]
    pub failed_authentications_per_second: u32,
    /// Refusals audited one by one per NAS and interval; the rest are only counted.
    #[serde(default = "default_refusal_audit_per_source")]
    pub refusal_audit_per_source: u32,
    #[serde(default = "default_refusal_audit_interval")]
    pub refusal_audit_interval_seconds: u64,
}

impl Default for TeapLimitsSection {
    fn default() -> Self {
        TeapLimitsSection {
            max_conversations: default_max_conversations(),
            conversation_lifetime_seconds: default_conversation_lifetime(),
            enrollment_hold_seconds: default_enrollment_hold(),
            registrar_timeout_seconds: default_registrar_timeout(),
            user_failure_delay_seconds: default_user_failure_delay(),
            user_failure_max_delay_seconds: default_user_failure_max_delay(),
            user_failure_decay_seconds: default_user_failure_decay(),
            failed_authentications_per_second: default_failed_auth_per_second(),
            refusal_audit_per_source: default_refusal_audit_per_source(),
            refusal_audit_interval_seconds: default_refusal_audit_interval(),
        }
    }
}

fn default_max_conversations() -> usize {
    10_000
}
fn default_conversation_lifetime() -> u64 {
    120
}
fn default_enrollment_hold() -> u64 {
    20
}
fn default_registrar_timeout() -> u64 {
    10
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeapLabelSection {
    /// Registrar profile; defaults to the label itself.
    pub profile: Option<String>,
    /// Passwords inside the tunnel (Basic-Password-Auth): the user name is the device
    /// identifier. The same section as `[est.labels.<name>.basic]`.
    pub basic: Option<BasicSection>,
    /// Device certificates in the phase-1 handshake (IDevIDs). The same section as
    /// `[est.labels.<name>.client_cert]`.
    pub client_cert: Option<ClientCertSection>,
    /// How a device no certificate authenticated sends the `basic` password inside the
    /// tunnel; needs `basic`.
    #[serde(default)]
    pub password_method: PasswordMethod,
    #[serde(default)]
    pub provisioning: ProvisioningSection,
}

/// The inner method that carries the password (both check the same `basic` credentials).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum PasswordMethod {
    /// Basic-Password-Auth TLVs (RFC 9930 "Inner Password Authentication"): user name and password in one TLV.
    #[default]
    #[serde(rename = "basic")]
    Basic,
    /// Inner EAP-GTC (RFC 3748 §5.6) in EAP-Payload TLVs: the inner EAP identity is the user
    /// name, the GTC response the password. For peers that run inner EAP but not
    /// Basic-Password-Auth; like it, it binds no inner keys to the tunnel.
    #[serde(rename = "eap-gtc")]
    EapGtc,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisioningSection {
    #[serde(default)]
    pub certificate: CertificateProvisioning,
}

/// Whether an authenticated device is asked for a CSR (RFC 9930 §3.8.2, Request-Action with a
/// PKCS#10 TLV).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateProvisioning {
    /// The device must enroll: one that does not send a CSR is refused.
    Required,
    /// The device may enroll; one that declines is still authenticated.
    #[default]
    Offered,
    /// Network authentication only.
    Never,
}

// ---------------------------------------------------------------------------------------------
// What the gateway runs on.

#[derive(Debug, Clone)]
pub struct TeapConfig {
    pub clients: Vec<RadiusClient>,
    pub labels: Vec<TeapLabel>,
    pub default_label: Option<String>,
    pub limits: TeapLimits,
    pub authority_id: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct RadiusClient {
    pub name: String,
    pub prefix: IpPrefix,
    pub secret: Secret,
}

#[derive(Debug, Clone)]
pub struct TeapLabel {
    pub label: String,
    pub profile: String,
    pub basic: Option<BasicAuth>,
    pub client_cert: Option<ClientCertAuth>,
    pub password_method: PasswordMethod,
    pub certificate: CertificateProvisioning,
}

impl TeapLabel {
    /// A label with no authentication method yet, offering certificates.
    pub fn new(label: &str, profile: &str) -> TeapLabel {
        TeapLabel {
            label: label.to_string(),
            profile: profile.to_string(),
            basic: None,
            client_cert: None,
            password_method: PasswordMethod::Basic,
            certificate: CertificateProvisioning::Offered,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TeapLimits {
    pub max_conversations: usize,
    pub conversation_lifetime: Duration,
    pub enrollment_hold: Duration,
    pub registrar_timeout: Duration,
    pub refusal_audit_per_source: u32,
    pub refusal_audit_interval: Duration,
    /// Password-guessing bounds (the audit fields repeat the two above).
    pub guard: GuardLimits,
}

impl Default for TeapLimits {
    fn default() -> Self {
        TeapLimits::from_section(&TeapLimitsSection::default())
    }
}

impl TeapLimits {
    fn from_section(s: &TeapLimitsSection) -> TeapLimits {
        TeapLimits {
            max_conversations: s.max_conversations,
            conversation_lifetime: Duration::from_secs(s.conversation_lifetime_seconds),
            enrollment_hold: Duration::from_secs(s.enrollment_hold_seconds),
            registrar_timeout: Duration::from_secs(s.registrar_timeout_seconds),
            refusal_audit_per_source: s.refusal_audit_per_source,
            refusal_audit_interval: Duration::from_secs(s.refusal_audit_interval_seconds),
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

/// Longest Authority-ID accepted: a TLV value is bounded by 16 bits, but peers store it.
const MAX_AUTHORITY_ID: usize = 256;

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 64
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl TeapConfig {
    /// Checks what the types cannot: clients and labels present and well named, an
    /// authentication method per label, a known default label, sane limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.clients.is_empty() {
            return Err(invalid(
                "clients",
                "no RADIUS client is configured, so every request would be dropped; add \
                 [teap.clients.<name>] with address and secret_file or secret_env",
            ));
        }
        let mut names = HashSet::new();
        let mut prefixes = Vec::new();
        for c in &self.clients {
            if !names.insert(c.name.as_str()) {
                return Err(invalid(
                    format!("clients.{}", c.name),
                    "is configured twice",
                ));
            }
            if let Some((other, _)) = prefixes.iter().find(|(_, p)| *p == c.prefix) {
                return Err(invalid(
                    format!("clients.{}.address", c.name),
                    format!("is the same address as clients.{other}"),
                ));
            }
            prefixes.push((c.name.as_str(), c.prefix));
        }
        if self.labels.is_empty() {
            return Err(invalid(
                "labels",
                "no label is configured; add [teap.labels.<name>] with basic or client_cert \
                 authentication",
            ));
        }
        let mut seen = HashSet::new();
        for l in &self.labels {
            let key = format!("labels.{}", l.label);
            if !valid_label(&l.label) {
                return Err(invalid(key, "a label is 1-64 of A-Z a-z 0-9 - _ ."));
            }
            if !seen.insert(l.label.to_ascii_lowercase()) {
                return Err(invalid(
                    key,
                    "the label is configured twice (labels match realms without regard to case)",
                ));
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
                && !b.accepts_any()
            {
                return Err(invalid(
                    key + ".basic",
                    "neither password_file nor a bootstrap secret is set, so no password \
                     could ever be accepted",
                ));
            }
            if l.password_method != PasswordMethod::Basic && l.basic.is_none() {
                return Err(invalid(
                    key + ".password_method",
                    "asks for a password inside the tunnel, but the label has no basic section \
                     to check it against",
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
        }
        if let Some(d) = &self.default_label
            && !self.labels.iter().any(|l| &l.label == d)
        {
            return Err(invalid(
                "default_label",
                format!("{d:?} is not one of the configured labels"),
            ));
        }
        if self.authority_id.is_empty() || self.authority_id.len() > MAX_AUTHORITY_ID {
            return Err(invalid(
                "authority_id",
                format!("must be 1 to {MAX_AUTHORITY_ID} octets"),
            ));
        }
        let lim = &self.limits;
        if lim.max_conversations == 0 {
            return Err(invalid("limits.max_conversations", "must be at least 1"));
        }
        for (name, d) in [
            (
                "limits.conversation_lifetime_seconds",
                lim.conversation_lifetime,
            ),
            ("limits.enrollment_hold_seconds", lim.enrollment_hold),
            ("limits.registrar_timeout_seconds", lim.registrar_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        if lim.enrollment_hold >= lim.conversation_lifetime {
            return Err(invalid(
                "limits.enrollment_hold_seconds",
                format!(
                    "is {} s, which is not shorter than limits.conversation_lifetime_seconds \
                     ({} s): the conversation would expire while the enrollment holds it",
                    lim.enrollment_hold.as_secs(),
                    lim.conversation_lifetime.as_secs()
                ),
            ));
        }
        Ok(())
    }

    pub fn label(&self, name: &str) -> Option<&TeapLabel> {
        self.labels.iter().find(|l| l.label == name)
    }

    /// The label an outer EAP identity selects: the realm after the last `@` when it names a
    /// configured label (without regard to case), else the default label. A realm naming no
    /// label is routing information for RADIUS proxies (`…@example.com`), not an error.
    pub fn label_for_identity(&self, outer_identity: &[u8]) -> Option<&TeapLabel> {
        let realm = outer_identity
            .iter()
            .rposition(|&b| b == b'@')
            .and_then(|at| outer_identity.get(at + 1..))
            .and_then(|r| std::str::from_utf8(r).ok());
        realm
            .and_then(|r| self.labels.iter().find(|l| l.label.eq_ignore_ascii_case(r)))
            .or_else(|| self.default_label.as_deref().and_then(|d| self.label(d)))
    }
}

impl TeapSection {
    /// Reads every file and variable the section names and builds the gateway configuration.
    /// `env` looks up the variables `secret_env` names (`std::env::var(..).ok()` in the binary).
    pub fn to_config(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<TeapConfig, ConfigError> {
        let cfg = self.to_config_parts(env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Like [`to_config`](Self::to_config) without the checks of the whole: for a caller that
    /// adds clients or labels of its own (`ragw dev`) and validates the result.
    pub fn to_config_parts(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<TeapConfig, ConfigError> {
        let mut clients = Vec::with_capacity(self.clients.len());
        for (name, c) in &self.clients {
            let key = format!("clients.{name}");
            let prefix: IpPrefix = c
                .address
                .parse()
                .map_err(|e| invalid(format!("{key}.address"), format!("{e}")))?;
            let secret = match (&c.secret_file, &c.secret_env) {
                (Some(path), None) => {
                    let text =
                        std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                            path: path.clone(),
                            source,
                        })?;
                    let secret = text.trim_end_matches(['\r', '\n']);
                    if secret.is_empty() {
                        return Err(ConfigError::File {
                            path: path.clone(),
                            reason: format!("the shared secret of {key} is empty"),
                        });
                    }
                    secret.as_bytes().to_vec()
                }
                (None, Some(var)) => match env(var) {
                    Some(v) if !v.is_empty() => v.into_bytes(),
                    Some(_) => {
                        return Err(invalid(
                            format!("{key}.secret_env"),
                            format!("the environment variable {var} is empty"),
                        ));
                    }
                    None => {
                        return Err(invalid(
                            format!("{key}.secret_env"),
                            format!("the environment variable {var} is not set"),
                        ));
                    }
                },
                (Some(_), Some(_)) => {
                    return Err(invalid(key, "set only one of secret_file and secret_env"));
                }
                (None, None) => {
                    return Err(invalid(
                        key,
                        "no shared secret: set secret_file or secret_env (a secret is never \
                         written in the configuration file)",
                    ));
                }
            };
            let secret = Secret::new(secret).map_err(|e| invalid(key.clone(), e.to_string()))?;
            clients.push(RadiusClient {
                name: name.clone(),
                prefix,
                secret,
            });
        }
        let mut labels = Vec::with_capacity(self.labels.len());
        for (name, s) in &self.labels {
            let key = format!("labels.{name}");
            let mut l = TeapLabel::new(name, s.profile.as_deref().unwrap_or(name));
            if let Some(b) = &s.basic {
                l.basic = Some(basic_from_section(&key, b)?);
            }
            if let Some(c) = &s.client_cert {
                l.client_cert = Some(client_cert_from_section(&key, c)?);
            }
            l.password_method = s.password_method;
            l.certificate = s.provisioning.certificate;
            labels.push(l);
        }
        let authority_id = match (&self.authority_id, &self.tls_cert) {
            (Some(id), _) => id.as_bytes().to_vec(),
            (None, Some(path)) => {
                let chain = read_pem_certs(path)?;
                match chain.first() {
                    Some(leaf) => authority_id_for(leaf),
                    None => Vec::new(),
                }
            }
            (None, None) => Vec::new(),
        };
        Ok(TeapConfig {
            clients,
            labels,
            default_label: self.default_label.clone(),
            limits: TeapLimits::from_section(&self.limits),
            authority_id,
        })
    }
}

/// The default Authority-ID for a server certificate (DER): 16 octets of its SHA-256.
pub fn authority_id_for(certificate_der: &[u8]) -> Vec<u8> {
    Sha256::digest(certificate_der)
        .get(..16)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
