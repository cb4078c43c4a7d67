//! The CA's configuration (`[ca]` in ragw's configuration file).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ragw_domain::names::{is_localhost, is_valid_dns_name, normalize_dns_name};
use ragw_domain::{Eku, KeyType};
use serde::Deserialize;

use crate::error::CaError;

/// Key type of the root and the intermediate (draft-sweet-iot-acme §3.4.1: ECDSA P-384 or RSA
/// of at least 3072 bits, signed with SHA-384 here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum CaKeyType {
    #[default]
    #[serde(rename = "ecdsa-p384")]
    EcdsaP384,
    #[serde(rename = "rsa-3072")]
    Rsa3072,
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

/// One issuance profile: what leaves ordered with it may be used for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuanceProfile {
    /// Extended key usages written into the leaf.
    pub ekus: Vec<Eku>,
    #[serde(default)]
    pub description: String,
    /// Orders with this profile may name `.local` names even when `ca.allow_local` is off.
    #[serde(default)]
    pub allow_local: bool,
    /// Orders with this profile may name private/loopback IPs even when `ca.allow_ip` is off.
    #[serde(default)]
    pub allow_ip: bool,
}

/// An external account binding key (RFC 8555 §7.3.4).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EabKey {
    pub kid: String,
    /// The MAC key, base64url without padding (what `--eab-hmac-key` / `--hmac` take).
    pub hmac_key: String,
}

impl std::fmt::Debug for EabKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EabKey")
            .field("kid", &self.kid)
            .field("hmac_key", &"[redacted]")
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Where the ACME server listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Health, readiness and metrics endpoint of `ragw run --target ca` (none when unset).
    pub ops_listen: Option<SocketAddr>,
    /// The URL clients reach the server at (`https://ca.example.com:8443`, optionally with a
    /// path prefix). Default: `https://<bound address>`.
    pub external_url: Option<String>,
    /// Serve plain HTTP (behind a TLS-terminating proxy) instead of HTTPS.
    #[serde(default)]
    pub plain_http: bool,
    /// Keys and certificates of the root and the intermediate (files, keys 0600).
    pub data_dir: PathBuf,
    /// DNS names are certified only at or under these suffixes (and under `.local` when
    /// `allow_local`).
    pub domain_suffixes: Vec<String>,
    /// Off by default: a `.local` name is nobody's to prove, and this root is trusted by the
    /// devices and the EST server.
    #[serde(default)]
    pub allow_local: bool,
    /// Private, link-local and loopback IP identifiers (RFC 8738, validated by http-01). Off
    /// by default for the same reason: any account could otherwise get a certificate for a
    /// loopback or private address.
    #[serde(default)]
    pub allow_ip: bool,
    /// The CA's own names: subjectAltNames of the root (draft-sweet §3.4.1) and of the HTTPS
    /// server certificate. Default: `ragw-ca.<first suffix>` and `ragw-ca.local`.
    #[serde(default)]
    pub ca_names: Vec<String>,
    /// Extra IP addresses for the HTTPS server certificate (the host of `external_url` is
    /// always included).
    #[serde(default)]
    pub server_ips: Vec<IpAddr>,
    #[serde(default = "default_organization")]
    pub organization: String,
    #[serde(default)]
    pub key_type: CaKeyType,
    /// Root validity, 1 to 10 years (draft-sweet §3.4.1).
    #[serde(default = "default_root_years")]
    pub root_validity_years: u32,
    /// Intermediate validity (capped by the root's).
    #[serde(default = "default_intermediate_days")]
    pub intermediate_validity_days: u32,
    /// Leaf validity, 1 to 90 days (draft-sweet §3.4.5: three months or less).
    #[serde(default = "default_leaf_days")]
    pub leaf_validity_days: u32,
    /// Key types accepted in CSRs.
    #[serde(default = "default_leaf_keys")]
    pub leaf_key_types: Vec<KeyType>,
    /// Issuance profiles by name (RFC draft-aaron-acme-profiles `profile` in newOrder).
    #[serde(default = "default_profiles")]
    pub profiles: BTreeMap<String, IssuanceProfile>,
    #[serde(default = "default_profile_name")]
    pub default_profile: String,
    /// DNS server asked for `_acme-challenge` TXT records (and A/AAAA for http-01).
    pub dns_resolver: SocketAddr,
    #[serde(default = "default_dns_timeout")]
    pub dns_timeout_ms: u64,
    /// Offer http-01 (needed for IP identifiers).
    #[serde(default = "yes")]
    pub http01: bool,
    /// Port http-01 connects to (80 in production; tests use another).
    #[serde(default = "default_http01_port")]
    pub http01_port: u16,
    /// RFC 9444: authorizations may cover subdomains; `ancestorDomain` is honoured.
    #[serde(default = "yes")]
    pub subdomain_auth: bool,
    #[serde(default)]
    pub eab_required: bool,
    #[serde(default)]
    pub eab_keys: Vec<EabKey>,
    pub terms_of_service: Option<String>,
    #[serde(default = "default_pending_hours")]
    pub pending_authz_hours: u32,
    #[serde(default = "default_valid_authz_hours")]
    pub valid_authz_hours: u32,
    #[serde(default = "default_order_hours")]
    pub order_hours: u32,
    #[serde(default = "default_nonce_seconds")]
    pub nonce_lifetime_seconds: u32,
    #[serde(default = "default_crl_hours")]
    pub crl_validity_hours: u32,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// A client that has not sent its request head within this many seconds is disconnected
    /// (slow-header clients would otherwise hold connections open).
    #[serde(default = "default_io_timeout")]
    pub header_timeout_seconds: u64,
    /// A request body that has not fully arrived within this many seconds is answered 408.
    #[serde(default = "default_io_timeout")]
    pub body_timeout_seconds: u64,
    #[serde(default = "default_max_identifiers")]
    pub max_identifiers: usize,
    /// Order URLs per page of an account's orders list (RFC 8555 §7.1.2.1); further pages are
    /// linked with `Link: <…>;rel="next"`. 1 to 1000.
    #[serde(default = "default_orders_page")]
    pub orders_page_size: u32,
    /// Signed requests per second per account (token bucket, per replica); 0 turns it off.
    #[serde(default = "default_rate")]
    pub account_requests_per_second: u32,
    #[serde(default = "default_burst")]
    pub account_request_burst: u32,
}

fn yes() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_organization() -> String {
    "ragw".into()
}
fn default_root_years() -> u32 {
    10
}
fn default_intermediate_days() -> u32 {
    5 * 365
}
fn default_orders_page() -> u32 {
    1000
}
fn default_leaf_days() -> u32 {
    30
}
fn default_leaf_keys() -> Vec<KeyType> {
    vec![
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::EcdsaP521,
        KeyType::Rsa { min_bits: 2048 },
    ]
}
fn default_profiles() -> BTreeMap<String, IssuanceProfile> {
    let mut m = BTreeMap::new();
    m.insert(
        "server".to_string(),
        IssuanceProfile {
            ekus: vec![Eku::ServerAuth],
            description: "TLS server certificate".into(),
            allow_local: false,
            allow_ip: false,
        },
    );
    m.insert(
        "server-client".to_string(),
        IssuanceProfile {
            ekus: vec![Eku::ServerAuth, Eku::ClientAuth],
            description: "TLS server and client certificate (EAP-TLS, mutual TLS)".into(),
            allow_local: false,
            allow_ip: false,
        },
    );
    m
}
fn default_profile_name() -> String {
    "server".into()
}
fn default_dns_timeout() -> u64 {
    5000
}
fn default_http01_port() -> u16 {
    80
}
fn default_pending_hours() -> u32 {
    24 * 7
}
fn default_valid_authz_hours() -> u32 {
    24 * 30
}
fn default_order_hours() -> u32 {
    24 * 7
}
fn default_nonce_seconds() -> u32 {
    3600
}
fn default_crl_hours() -> u32 {
    24
}
fn default_io_timeout() -> u64 {
    10
}
fn default_max_body() -> usize {
    64 * 1024
}
fn default_max_identifiers() -> usize {
    100
}
/// High enough that one ACME worker account (all of ragw's devices) is not throttled on
/// ordinary hardware, low enough to stop a runaway client.
fn default_rate() -> u32 {
    1000
}
fn default_burst() -> u32 {
    2000
}

impl CaConfig {
    /// A configuration with defaults, for code that builds one (tests, `ragw dev`).
    pub fn new(data_dir: PathBuf, domain_suffixes: Vec<String>, dns_resolver: SocketAddr) -> Self {
        CaConfig {
            listen: default_listen(),
            ops_listen: None,
            external_url: None,
            plain_http: false,
            data_dir,
            domain_suffixes,
            allow_local: false,
            allow_ip: false,
            ca_names: Vec::new(),
            server_ips: Vec::new(),
            organization: default_organization(),
            key_type: CaKeyType::default(),
            root_validity_years: default_root_years(),
            intermediate_validity_days: default_intermediate_days(),
            leaf_validity_days: default_leaf_days(),
            leaf_key_types: default_leaf_keys(),
            profiles: default_profiles(),
            default_profile: default_profile_name(),
            dns_resolver,
            dns_timeout_ms: default_dns_timeout(),
            http01: true,
            http01_port: default_http01_port(),
            subdomain_auth: true,
            eab_required: false,
            eab_keys: Vec::new(),
            terms_of_service: None,
            pending_authz_hours: default_pending_hours(),
            valid_authz_hours: default_valid_authz_hours(),
            order_hours: default_order_hours(),
            nonce_lifetime_seconds: default_nonce_seconds(),
            crl_validity_hours: default_crl_hours(),
            max_body_bytes: default_max_body(),
            header_timeout_seconds: default_io_timeout(),
            body_timeout_seconds: default_io_timeout(),
            max_identifiers: default_max_identifiers(),
            orders_page_size: default_orders_page(),
            account_requests_per_second: default_rate(),
            account_request_burst: default_burst(),
        }
    }

    /// Checks the values and normalizes names; call before use.
    pub fn validate(&mut self) -> Result<(), CaError> {
        let bad = |m: String| Err(CaError::Config(m));
        if !(1..=10).contains(&self.root_validity_years) {
            return bad(format!(
                "ca.root_validity_years is {}; it must be 1 to 10 (draft-sweet-iot-acme §3.4.1)",
                self.root_validity_years
            ));
        }
        if !(1..=90).contains(&self.leaf_validity_days) {
            return bad(format!(
                "ca.leaf_validity_days is {}; it must be 1 to 90 (draft-sweet-iot-acme §3.4.5)",
                self.leaf_validity_days
            ));
        }
        if self.intermediate_validity_days <= self.leaf_validity_days {
            return bad(
                "ca.intermediate_validity_days must be longer than ca.leaf_validity_days".into(),
            );
        }
        if self.domain_suffixes.is_empty() && !self.allow_local {
            return bad("ca.domain_suffixes is empty and ca.allow_local is false: the CA could certify nothing".into());
        }
        for s in &mut self.domain_suffixes {
            *s = normalize_dns_name(s);
            if !is_valid_dns_name(s) || is_localhost(s) || !s.contains('.') {
                return bad(format!(
                    "ca.domain_suffixes: {s:?} is not a usable domain (a valid name with at least two labels, not localhost)"
                ));
            }
        }
        if self.ca_names.is_empty() {
            if let Some(first) = self.domain_suffixes.first() {
                self.ca_names.push(format!("ragw-ca.{first}"));
            }
            if self.allow_local {
                self.ca_names.push("ragw-ca.local".into());
            }
        }
        for n in &mut self.ca_names {
            *n = normalize_dns_name(n);
            if !is_valid_dns_name(n) || is_localhost(n) {
                return bad(format!("ca.ca_names: {n:?} is not a valid host name"));
            }
        }
        for ip in &self.server_ips {
            if !ragw_domain::names::is_local_ip(ip) {
                return bad(format!(
                    "ca.server_ips: {ip} is not private, link-local or loopback"
                ));
            }
        }
        if !self.profiles.contains_key(&self.default_profile) {
            return bad(format!(
                "ca.default_profile {:?} is not one of ca.profiles",
                self.default_profile
            ));
        }
        for (name, p) in &self.profiles {
            if p.ekus.is_empty() {
                return bad(format!("ca.profiles.{name} has no ekus"));
            }
        }
        if self.leaf_key_types.is_empty() {
            return bad("ca.leaf_key_types is empty".into());
        }
        if self.eab_required && self.eab_keys.is_empty() {
            return bad("ca.eab_required is set but ca.eab_keys is empty".into());
        }
        for k in &self.eab_keys {
            if k.kid.is_empty()
                || crate::b64::decode(&k.hmac_key, 1024).map_or(true, |v| v.len() < 16)
            {
                return bad(format!(
                    "ca.eab_keys: key {:?} needs a kid and a base64url hmac_key of at least 16 bytes",
                    k.kid
                ));
            }
        }
        if let Some(url) = &self.external_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return bad(format!("ca.external_url {url:?} is not an http(s) URL"));
        }
        if !(1..=1000).contains(&self.orders_page_size) {
            return bad(format!(
                "ca.orders_page_size is {}; it must be 1 to 1000",
                self.orders_page_size
            ));
        }
        if !(1..=300).contains(&self.header_timeout_seconds)
            || !(1..=300).contains(&self.body_timeout_seconds)
        {
            return bad(
                "ca.header_timeout_seconds and ca.body_timeout_seconds must be 1 to 300".into(),
            );
        }
        if self.max_body_bytes < 4096 {
            return bad("ca.max_body_bytes must be at least 4096".into());
        }
        if self.nonce_lifetime_seconds == 0 || self.max_identifiers == 0 {
            return bad("ca.nonce_lifetime_seconds and ca.max_identifiers must be positive".into());
        }
        Ok(())
    }

    /// The base URL: `external_url` without a trailing slash, or `https://<bound>`.
    pub fn base_url(&self, bound: SocketAddr) -> String {
        match &self.external_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let scheme = if self.plain_http { "http" } else { "https" };
                format!("{scheme}://{bound}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn base() -> CaConfig {
        CaConfig::new(
            "/tmp/x".into(),
            vec!["Devices.Example.Test.".into()],
            "127.0.0.1:53".parse().unwrap(),
        )
    }

    #[test]
    fn defaults_validate_and_normalize() {
        let mut c = base();
        c.validate().unwrap();
        assert_eq!(c.domain_suffixes, vec!["devices.example.test"]);
        assert_eq!(c.ca_names, vec!["ragw-ca.devices.example.test"]);
        c.ca_names.clear();
        c.allow_local = true;
        c.validate().unwrap();
        assert_eq!(
            c.ca_names,
            vec!["ragw-ca.devices.example.test", "ragw-ca.local"]
        );
    }

    #[test]
    fn bounds_are_enforced() {
        let mut c = base();
        c.root_validity_years = 11;
        assert!(c.validate().is_err());
        let mut c = base();
        c.leaf_validity_days = 91;
        assert!(c.validate().is_err());
        let mut c = base();
        c.domain_suffixes = vec!["localhost".into()];
        assert!(c.validate().is_err());
        let mut c = base();
        c.domain_suffixes = vec!["com".into()];
        assert!(c.validate().is_err());
        let mut c = base();
        c.eab_required = true;
        assert!(c.validate().is_err());
        let mut c = base();
        c.server_ips = vec!["8.8.8.8".parse().unwrap()];
        assert!(c.validate().is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = r#"
            data_dir = "/tmp/x"
            domain_suffixes = ["d.example.test"]
            dns_resolver = "127.0.0.1:53"
            key_typ = "rsa-3072"
        "#;
        let err = toml_like(text);
        assert!(err.contains("key_typ"), "{err}");
    }

    fn toml_like(text: &str) -> String {
        // The runtime's loader is TOML; serde_json is enough to show deny_unknown_fields.
        let mut map = serde_json::Map::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once('=').unwrap();
            let v: serde_json::Value = serde_json::from_str(v.trim()).unwrap();
            map.insert(k.trim().to_string(), v);
        }
        serde_json::from_value::<CaConfig>(serde_json::Value::Object(map))
            .unwrap_err()
            .to_string()
    }
}
