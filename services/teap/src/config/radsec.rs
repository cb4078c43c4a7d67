//! `[teap.radsec]`: RadSec (RFC 6614, RADIUS over TLS on TCP) as a second listener beside
//! RADIUS/UDP. Mutual TLS: a RadSec client (a NAS or a RADIUS proxy) presents a certificate
//! chaining to `client_ca` and connects from an address in `clients`; the RADIUS secret is the
//! fixed `radsec` (RFC 6614 §2.3), so nothing secret sits in this section.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid};
use crate::radius_server::IpPrefix;
use crate::radius_server::radsec::{RADSEC_PORT, RadsecLimits};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadsecSection {
    /// TCP listen address (RFC 6614's port 2083 by default).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The RadSec server certificate chain (PEM, end entity first) and key (PEM); unset: the
    /// TEAP server certificate (`teap.tls_cert`, `teap.tls_key`).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) a client certificate must chain to.
    pub client_ca: Option<PathBuf>,
    /// RadSec clients by name: source address or CIDR block, e.g. `proxy1 = "192.0.2.10"`.
    #[serde(default)]
    pub clients: BTreeMap<String, String>,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u64,
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_seconds: u64,
    /// Replies queued per connection before a client that does not read is disconnected.
    #[serde(default = "default_max_queued_replies")]
    pub max_queued_replies: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], RADSEC_PORT))
}
fn default_max_connections() -> usize {
    RadsecLimits::default().max_connections
}
fn default_idle_timeout() -> u64 {
    RadsecLimits::default().idle_timeout.as_secs()
}
fn default_handshake_timeout() -> u64 {
    RadsecLimits::default().handshake_timeout.as_secs()
}
fn default_max_queued_replies() -> usize {
    RadsecLimits::default().max_queued_replies
}

/// The section with its files read.
#[derive(Clone)]
pub struct RadsecSettings {
    pub listen: SocketAddr,
    pub cert_chain_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Vec<u8>,
    pub clients: Vec<(String, IpPrefix)>,
    pub limits: RadsecLimits,
}

impl std::fmt::Debug for RadsecSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RadsecSettings")
            .field("listen", &self.listen)
            .field("clients", &self.clients)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl RadsecSection {
    /// Reads the files; `teap_cert`/`teap_key` stand in for an unset `tls_cert`/`tls_key`.
    pub fn to_settings(
        &self,
        teap_cert: Option<&Path>,
        teap_key: Option<&Path>,
    ) -> Result<RadsecSettings, ConfigError> {
        let (Some(cert), Some(key)) = (
            self.tls_cert.as_deref().or(teap_cert),
            self.tls_key.as_deref().or(teap_key),
        ) else {
            return Err(invalid(
                "radsec",
                "no server certificate: set radsec.tls_cert and radsec.tls_key (or teap.tls_cert \
                 and teap.tls_key)",
            ));
        };
        let Some(client_ca) = &self.client_ca else {
            return Err(invalid(
                "radsec.client_ca",
                "required: RadSec clients authenticate with a certificate from this CA",
            ));
        };
        let clients = self.client_prefixes()?;
        Ok(RadsecSettings {
            listen: self.listen,
            cert_chain_pem: read(cert)?,
            key_pem: read(key)?,
            client_ca_pem: read(client_ca)?,
            clients,
            limits: self.limits()?,
        })
    }

    pub fn client_prefixes(&self) -> Result<Vec<(String, IpPrefix)>, ConfigError> {
        if self.clients.is_empty() {
            return Err(invalid(
                "radsec.clients",
                "no RadSec client: add `<name> = \"<address or CIDR>\"` under [teap.radsec.clients]",
            ));
        }
        self.clients
            .iter()
            .map(|(name, address)| {
                let prefix: IpPrefix = address
                    .parse()
                    .map_err(|e| invalid(format!("radsec.clients.{name}"), format!("{e}")))?;
                Ok((name.clone(), prefix))
            })
            .collect()
    }

    pub fn limits(&self) -> Result<RadsecLimits, ConfigError> {
        if self.max_connections == 0 {
            return Err(invalid("radsec.max_connections", "must be at least 1"));
        }
        if self.idle_timeout_seconds == 0 || self.handshake_timeout_seconds == 0 {
            return Err(invalid(
                "radsec",
                "idle_timeout_seconds and handshake_timeout_seconds must be at least 1",
            ));
        }
        Ok(RadsecLimits {
            max_connections: self.max_connections,
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            handshake_timeout: Duration::from_secs(self.handshake_timeout_seconds),
            max_queued_replies: self.max_queued_replies.max(1),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn section(text: &str) -> RadsecSection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_and_clients() {
        let s = section(
            "client_ca = \"/ca.pem\"\n[clients]\nproxy1 = \"192.0.2.10\"\nlan = \"10.0.0.0/8\"\n",
        );
        assert_eq!(s.listen.port(), 2083);
        let clients = s.client_prefixes().unwrap();
        assert_eq!(clients.len(), 2);
        assert_eq!(s.limits().unwrap().max_connections, 256);
    }

    #[test]
    fn refuses_what_cannot_work() {
        let no_clients = section("client_ca = \"/ca.pem\"\n");
        assert!(no_clients.client_prefixes().is_err());
        let bad = section("[clients]\nx = \"not-an-address\"\n");
        assert!(bad.client_prefixes().is_err());
        let no_ca = section("[clients]\nx = \"192.0.2.1\"\n");
        let err = no_ca
            .to_settings(Some(Path::new("/c.pem")), Some(Path::new("/k.pem")))
            .unwrap_err();
        assert!(err.to_string().contains("client_ca"), "{err}");
        let no_cert = section("client_ca = \"/ca.pem\"\n[clients]\nx = \"192.0.2.1\"\n");
        assert!(no_cert.to_settings(None, None).is_err());
        assert!(section("max_connections = 0").limits().is_err());
        assert!(toml::from_str::<RadsecSection>("bogus = 1").is_err());
    }
}
