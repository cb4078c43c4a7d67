//! DNS providers for dns-01 challenges.
//!
//! A worker publishes the challenge value as a TXT record through a [`DnsProvider`] and removes
//! it once the authorization is decided (valid or not). Two providers exist:
//!
//! - [`Rfc2136Provider`]: RFC 2136 dynamic updates signed with TSIG, for BIND, Knot, PowerDNS or
//!   Windows DNS (hickory-net for transport, hickory-proto for messages and TSIG);
//! - [`BuiltinDns`]: ragw's own authoritative server for the challenge zone(s). It serves the
//!   all-in-one mode, accepts RFC 2136 updates signed with its own key (so certbot, lego or
//!   `nsupdate` can use the dev CA with dns-01), and can be the stealth primary of the
//!   challenge zone (see [`server`]).
//!
//! One name can carry several TXT values at once (the parent-domain pre-authorization and a
//! renewal of the same device can run concurrently), so both providers add and remove single
//! values and never replace a whole RRset.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hickory_proto::rr::Name;
use hickory_proto::rr::rdata::TXT;
use thiserror::Error;

mod metrics;
mod responder;
mod rfc2136;
pub mod server;
mod store;
mod tsig;

pub use metrics::DnsMetrics;
pub use responder::{Responder, Transport, ZoneConfig};
pub use rfc2136::{Rfc2136Config, Rfc2136Provider, Rfc2136Transport};
pub use server::{BuiltinDns, BuiltinDnsConfig};
pub use tsig::{DEFAULT_FUDGE, TsigAlgorithm, TsigKey};

/// Longest TXT value accepted. ACME dns-01 values are 43 characters; the limit only keeps a
/// runaway caller from building huge records.
pub const MAX_TXT_VALUE_LEN: usize = 1024;

/// Publishes and withdraws TXT records for dns-01 challenges.
#[async_trait]
pub trait DnsProvider: Send + Sync {
    /// Adds `value` to the TXT records of `fqdn` (trailing dot optional). Other values of the
    /// same name stay. Adding a value that is already there succeeds.
    async fn add_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError>;

    /// Removes the TXT record of `fqdn` whose value is `value`, and only that one. Removing a
    /// value that is not there succeeds, so cleanup after a failure can always be attempted.
    async fn remove_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError>;

    /// Short name for logs and metrics (`rfc2136`, `builtin`).
    fn name(&self) -> &str;
}

#[async_trait]
impl<T: DnsProvider + ?Sized> DnsProvider for Arc<T> {
    async fn add_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        (**self).add_txt(fqdn, value).await
    }

    async fn remove_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        (**self).remove_txt(fqdn, value).await
    }

    fn name(&self) -> &str {
        (**self).name()
    }
}

/// What went wrong publishing or withdrawing a record, or running the built-in server.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DnsError {
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("{name} is not inside the zone {zone}")]
    NotInZone { name: String, zone: String },
    #[error("invalid TXT value: {0}")]
    InvalidValue(String),
    #[error(
        "the DNS server {server} refused the TSIG key {key:?}: {detail}; check that the key name, \
         algorithm and secret match the key configured on the server"
    )]
    TsigRejected {
        server: String,
        key: String,
        detail: String,
    },
    #[error(
        "the DNS server {server} refused the update of {name} (REFUSED); check that its update \
         policy lets the key {key:?} change TXT records there and that it accepts updates for \
         the zone {zone}"
    )]
    Refused {
        server: String,
        name: String,
        key: String,
        zone: String,
    },
    #[error("the DNS server {server} is not authoritative for the zone {zone} (NOTAUTH)")]
    NotAuthoritative { server: String, zone: String },
    #[error("the DNS server {server} answered {rcode} to the update of {name}")]
    Rcode {
        server: String,
        name: String,
        rcode: String,
    },
    #[error("no answer from the DNS server {server} within {timeout:?}")]
    Timeout { server: String, timeout: Duration },
    #[error("cannot exchange messages with the DNS server {server}: {detail}")]
    Transport { server: String, detail: String },
    #[error(
        "the answer of the DNS server {server} is not correctly signed with the TSIG key {key:?}: {detail}"
    )]
    BadResponse {
        server: String,
        key: String,
        detail: String,
    },
    #[error("TSIG key: {0}")]
    Key(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("built-in DNS server: {0}")]
    Server(String),
    #[error("record limit reached: {0}")]
    Limit(String),
}

/// `fqdn` as an absolute DNS name.
pub(crate) fn parse_fqdn(fqdn: &str) -> Result<Name, DnsError> {
    let invalid = |reason: String| DnsError::InvalidName {
        name: fqdn.to_owned(),
        reason,
    };
    let trimmed = fqdn.trim();
    let bare = trimmed.strip_suffix('.').unwrap_or(trimmed);
    if bare.is_empty() {
        return Err(invalid("empty".to_owned()));
    }
    let mut name = Name::from_ascii(bare).map_err(|e| invalid(e.to_string()))?;
    name.set_fqdn(true);
    if name.is_wildcard() {
        return Err(invalid(
            "wildcards cannot carry challenge records".to_owned(),
        ));
    }
    Ok(name)
}

/// The TXT rdata for a challenge value: printable ASCII, split into the 255-octet
/// character-strings RFC 1035 §3.3.14 allows. The split is deterministic, so the rdata built for
/// a removal matches the one built for the addition.
pub(crate) fn txt_rdata(value: &str) -> Result<TXT, DnsError> {
    if value.is_empty() {
        return Err(DnsError::InvalidValue("empty".to_owned()));
    }
    if value.len() > MAX_TXT_VALUE_LEN {
        return Err(DnsError::InvalidValue(format!(
            "{} bytes, more than {MAX_TXT_VALUE_LEN}",
            value.len()
        )));
    }
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(DnsError::InvalidValue(
            "only printable ASCII is accepted".to_owned(),
        ));
    }
    Ok(TXT::from_bytes(value.as_bytes().chunks(255).collect()))
}

/// The value of TXT rdata as one string: its character-strings concatenated, as ACME CAs read it.
pub(crate) fn txt_value(txt: &TXT) -> String {
    let bytes: Vec<u8> = txt
        .txt_data
        .iter()
        .flat_map(|s| s.iter().copied())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Seconds since the Unix epoch; 0 if the clock is before 1970, which TSIG then reports as
/// BADTIME instead of this process panicking.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let a = parse_fqdn("_acme-challenge.K7Q2.devices.example.test.").unwrap();
        let b = parse_fqdn("_acme-challenge.k7q2.devices.example.test").unwrap();
        assert_eq!(a, b);
        assert!(a.is_fqdn());
        assert!(parse_fqdn("").is_err());
        assert!(parse_fqdn(".").is_err());
        assert!(parse_fqdn("*.example.test").is_err());
        assert!(parse_fqdn(&format!("{}.test", "a".repeat(64))).is_err());
    }

    #[test]
    fn txt_values_split_and_join() {
        let long = "x".repeat(600);
        let txt = txt_rdata(&long).unwrap();
        assert_eq!(
            txt.txt_data.iter().map(|s| s.len()).collect::<Vec<_>>(),
            [255, 255, 90]
        );
        assert_eq!(txt_value(&txt), long);
        assert_eq!(txt_rdata(&long).unwrap(), txt);
        assert!(txt_rdata("").is_err());
        assert!(txt_rdata("a\"b\n").is_err());
        assert!(txt_rdata(&"x".repeat(MAX_TXT_VALUE_LEN + 1)).is_err());
    }
}
