//! Device identities as gateways authenticate them.

use std::fmt;

use thiserror::Error;

/// Longest identifier value accepted; IDevID serial numbers are at most 64 characters
/// (X.520 ub-serial-number), usernames get some slack.
pub const MAX_IDENTITY_VALUE_LEN: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityKind {
    Mac,
    SerialNumber,
    /// serialNumber attribute of an IEEE 802.1AR IDevID subject.
    IdevidSerial,
    Username,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Mac => "mac",
            IdentityKind::SerialNumber => "serial",
            IdentityKind::IdevidSerial => "idevid",
            IdentityKind::Username => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mac" => Some(IdentityKind::Mac),
            "serial" => Some(IdentityKind::SerialNumber),
            "idevid" => Some(IdentityKind::IdevidSerial),
            "user" => Some(IdentityKind::Username),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    #[error("device identifier is empty")]
    Empty,
    #[error(
        "device identifier is {len} characters long; at most {MAX_IDENTITY_VALUE_LEN} are allowed"
    )]
    TooLong { len: usize },
    #[error("device identifier contains a control or non-ASCII character at position {position}")]
    BadCharacter { position: usize },
    #[error("MAC address {value:?} is not six hexadecimal octets (aa:bb:cc:dd:ee:ff)")]
    BadMac { value: String },
    #[error("device key {0:?} is not of the form kind:value")]
    BadKey(String),
}

/// A device identity, normalized so that one device always maps to the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceIdentity {
    kind: IdentityKind,
    value: String,
}

impl DeviceIdentity {
    pub fn new(kind: IdentityKind, value: &str) -> Result<Self, IdentityError> {
        if value.is_empty() {
            return Err(IdentityError::Empty);
        }
        if value.len() > MAX_IDENTITY_VALUE_LEN {
            return Err(IdentityError::TooLong { len: value.len() });
        }
        if let Some(position) = value
            .chars()
            .position(|c| !c.is_ascii() || c.is_ascii_control())
        {
            return Err(IdentityError::BadCharacter { position });
        }
        let value = match kind {
            IdentityKind::Mac => normalize_mac(value)?,
            _ => value.to_string(),
        };
        Ok(DeviceIdentity { kind, value })
    }

    pub fn kind(&self) -> IdentityKind {
        self.kind
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// Stable key used in the store and the audit log: `kind:value`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.value)
    }

    pub fn from_key(key: &str) -> Result<Self, IdentityError> {
        let (kind, value) = key
            .split_once(':')
            .ok_or_else(|| IdentityError::BadKey(key.to_string()))?;
        let kind =
            IdentityKind::parse(kind).ok_or_else(|| IdentityError::BadKey(key.to_string()))?;
        DeviceIdentity::new(kind, value)
    }
}

impl fmt::Display for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.value)
    }
}

/// Accepts `aa:bb:cc:dd:ee:ff`, `AA-BB-CC-DD-EE-FF`, `aabb.ccdd.eeff` and `aabbccddeeff`.
fn normalize_mac(value: &str) -> Result<String, IdentityError> {
    let hex: String = value
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(IdentityError::BadMac {
            value: value.to_string(),
        });
    }
    let lower = hex.to_ascii_lowercase();
    let octets: Vec<&str> = (0..6).map(|i| &lower[i * 2..i * 2 + 2]).collect();
    Ok(octets.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_spellings_normalize_to_one_key() {
        let forms = [
            "AA:BB:CC:DD:EE:FF",
            "aa-bb-cc-dd-ee-ff",
            "aabb.ccdd.eeff",
            "aabbccddeeff",
        ];
        for f in forms {
            let id = DeviceIdentity::new(IdentityKind::Mac, f).unwrap();
            assert_eq!(id.key(), "mac:aa:bb:cc:dd:ee:ff");
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_reason() {
        assert_eq!(
            DeviceIdentity::new(IdentityKind::SerialNumber, ""),
            Err(IdentityError::Empty)
        );
        assert!(matches!(
            DeviceIdentity::new(IdentityKind::Mac, "aa:bb"),
            Err(IdentityError::BadMac { .. })
        ));
        assert!(matches!(
            DeviceIdentity::new(IdentityKind::Username, &"x".repeat(129)),
            Err(IdentityError::TooLong { len: 129 })
        ));
        assert!(matches!(
            DeviceIdentity::new(IdentityKind::Username, "a\nb"),
            Err(IdentityError::BadCharacter { position: 1 })
        ));
    }

    #[test]
    fn key_round_trips() {
        let id = DeviceIdentity::new(IdentityKind::IdevidSerial, "SN:0042").unwrap();
        assert_eq!(DeviceIdentity::from_key(&id.key()).unwrap(), id);
        assert!(DeviceIdentity::from_key("nokind").is_err());
        assert!(DeviceIdentity::from_key("bogus:x").is_err());
    }
}
