//! Enrollment profiles: which names a device gets, which keys it may use, who approves it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::enrollment::ApprovalMode;
use crate::names::{is_valid_dns_name, normalize_dns_name};

/// Public key types a profile can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    Ed25519,
    /// RSA with a modulus of at least this many bits.
    Rsa {
        min_bits: u32,
    },
}

/// The smallest RSA modulus any profile may allow.
pub const MIN_RSA_BITS: u32 = 2048;

impl KeyType {
    /// Whether a key of this concrete type satisfies the allowed type `self`.
    pub fn admits(&self, key: &KeyType) -> bool {
        match (self, key) {
            (KeyType::Rsa { min_bits }, KeyType::Rsa { min_bits: bits }) => bits >= min_bits,
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::EcdsaP256 => f.write_str("ecdsa-p256"),
            KeyType::EcdsaP384 => f.write_str("ecdsa-p384"),
            KeyType::EcdsaP521 => f.write_str("ecdsa-p521"),
            KeyType::Ed25519 => f.write_str("ed25519"),
            KeyType::Rsa { min_bits } => write!(f, "rsa-{min_bits}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown key type {0:?}: use ecdsa-p256, ecdsa-p384, ecdsa-p521, ed25519 or rsa-BITS (BITS ≥ 2048)"
)]
pub struct UnknownKeyType(pub String);

impl FromStr for KeyType {
    type Err = UnknownKeyType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ecdsa-p256" => Ok(KeyType::EcdsaP256),
            "ecdsa-p384" => Ok(KeyType::EcdsaP384),
            "ecdsa-p521" => Ok(KeyType::EcdsaP521),
            "ed25519" => Ok(KeyType::Ed25519),
            other => match other.strip_prefix("rsa-").map(str::parse::<u32>) {
                Some(Ok(bits)) if bits >= MIN_RSA_BITS => Ok(KeyType::Rsa { min_bits: bits }),
                _ => Err(UnknownKeyType(s.to_string())),
            },
        }
    }
}

impl Serialize for KeyType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Eku {
    ServerAuth,
    ClientAuth,
}

impl Eku {
    /// The name used in configuration and on the wire to workers (`serverAuth`, `clientAuth`).
    pub fn as_str(self) -> &'static str {
        match self {
            Eku::ServerAuth => "serverAuth",
            Eku::ClientAuth => "clientAuth",
        }
    }
}

fn default_keys() -> Vec<KeyType> {
    vec![
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::EcdsaP521,
        KeyType::Rsa { min_bits: 3072 },
    ]
}

fn default_eku() -> Vec<Eku> {
    vec![Eku::ServerAuth, Eku::ClientAuth]
}

fn default_validity_days() -> u32 {
    30
}

/// A profile as written in the configuration. Its name is the EST label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    /// Parent domains under which device labels are allocated; the first is used for new
    /// devices.
    pub parent_domains: Vec<String>,
    #[serde(default = "default_keys")]
    pub allowed_keys: Vec<KeyType>,
    /// Whether the CSR may (not must) also carry `<label>.local`.
    #[serde(default)]
    pub allow_local_name: bool,
    /// Whether the CSR may carry private, link-local or loopback IP addresses.
    #[serde(default)]
    pub allow_ip_sans: bool,
    #[serde(default)]
    pub approval: ApprovalMode,
    #[serde(default = "default_validity_days")]
    pub leaf_validity_days: u32,
    #[serde(default = "default_eku")]
    pub eku: Vec<Eku>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProfileError {
    #[error("profile name {0:?} is not a valid EST label (1–64 of A-Z a-z 0-9 - _ .)")]
    BadName(String),
    #[error("profile {profile:?} has no parent domain")]
    NoParentDomain { profile: String },
    #[error("profile {profile:?}: parent domain {domain:?} is not a valid DNS name")]
    BadParentDomain { profile: String, domain: String },
    #[error("profile {profile:?} allows no key type")]
    NoKeyTypes { profile: String },
    #[error("profile {profile:?}: leaf validity must be 1..=398 days, not {days}")]
    BadValidity { profile: String, days: u32 },
    #[error("profile {profile:?} has no extended key usage")]
    NoEku { profile: String },
    #[error("profile name {0:?} is used twice")]
    Duplicate(String),
}

/// Operation names RFC 7030 reserves in the path; a label cannot be one of them.
const EST_OPERATIONS: &[&str] = &[
    "cacerts",
    "simpleenroll",
    "simplereenroll",
    "fullcmc",
    "serverkeygen",
    "csrattrs",
];

impl Profile {
    pub fn validate(&mut self) -> Result<(), ProfileError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !EST_OPERATIONS.contains(&self.name.as_str());
        if !name_ok {
            return Err(ProfileError::BadName(self.name.clone()));
        }
        if self.parent_domains.is_empty() {
            return Err(ProfileError::NoParentDomain {
                profile: self.name.clone(),
            });
        }
        for d in &mut self.parent_domains {
            *d = normalize_dns_name(d);
            if !is_valid_dns_name(d) {
                return Err(ProfileError::BadParentDomain {
                    profile: self.name.clone(),
                    domain: d.clone(),
                });
            }
        }
        if self.allowed_keys.is_empty() {
            return Err(ProfileError::NoKeyTypes {
                profile: self.name.clone(),
            });
        }
        if !(1..=398).contains(&self.leaf_validity_days) {
            return Err(ProfileError::BadValidity {
                profile: self.name.clone(),
                days: self.leaf_validity_days,
            });
        }
        if self.eku.is_empty() {
            return Err(ProfileError::NoEku {
                profile: self.name.clone(),
            });
        }
        Ok(())
    }

    pub fn primary_parent_domain(&self) -> &str {
        self.parent_domains
            .first()
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The names a device with `label` must request, and the ones it may add.
    pub fn names_for(&self, label: &str, parent_domain: &str) -> AssignedNames {
        AssignedNames {
            required: vec![format!("{label}.{parent_domain}")],
            optional: if self.allow_local_name {
                vec![format!("{label}.local")]
            } else {
                Vec::new()
            },
        }
    }

    pub fn admits_key(&self, key: &KeyType) -> bool {
        self.allowed_keys.iter().any(|a| a.admits(key))
    }

    /// A profile with the defaults, for tests and the all-in-one mode.
    pub fn with_defaults(name: &str, parent_domain: &str) -> Profile {
        Profile {
            name: name.to_string(),
            parent_domains: vec![parent_domain.to_string()],
            allowed_keys: default_keys(),
            allow_local_name: false,
            allow_ip_sans: false,
            approval: ApprovalMode::Auto,
            leaf_validity_days: default_validity_days(),
            eku: default_eku(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignedNames {
    pub required: Vec<String>,
    pub optional: Vec<String>,
}

pub fn validate_profiles(profiles: &mut [Profile]) -> Result<(), ProfileError> {
    let mut seen = std::collections::HashSet::new();
    for p in profiles.iter_mut() {
        p.validate()?;
        if !seen.insert(p.name.clone()) {
            return Err(ProfileError::Duplicate(p.name.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_types_parse_and_admit() {
        let rsa3072: KeyType = "rsa-3072".parse().unwrap();
        assert!(rsa3072.admits(&KeyType::Rsa { min_bits: 4096 }));
        assert!(!rsa3072.admits(&KeyType::Rsa { min_bits: 2048 }));
        assert!("rsa-1024".parse::<KeyType>().is_err());
        assert!("dsa".parse::<KeyType>().is_err());
        assert_eq!(
            "ecdsa-p384".parse::<KeyType>().unwrap().to_string(),
            "ecdsa-p384"
        );
    }

    #[test]
    fn default_profile_refuses_small_rsa_and_allows_p256() {
        let p = Profile::with_defaults("iot", "devices.example.com");
        assert!(p.admits_key(&KeyType::EcdsaP256));
        assert!(!p.admits_key(&KeyType::Rsa { min_bits: 2048 }));
        assert!(p.admits_key(&KeyType::Rsa { min_bits: 3072 }));
        assert!(!p.admits_key(&KeyType::Ed25519));
    }

    #[test]
    fn validation_names_the_problem() {
        let mut p = Profile::with_defaults("simpleenroll", "devices.example.com");
        assert!(matches!(p.validate(), Err(ProfileError::BadName(_))));
        let mut p = Profile::with_defaults("iot", "bad..domain");
        assert!(matches!(
            p.validate(),
            Err(ProfileError::BadParentDomain { .. })
        ));
        let mut p = Profile::with_defaults("iot", "Devices.Example.COM.");
        p.validate().unwrap();
        assert_eq!(p.primary_parent_domain(), "devices.example.com");
        let mut both = vec![p.clone(), p];
        assert!(matches!(
            validate_profiles(&mut both),
            Err(ProfileError::Duplicate(_))
        ));
    }

    #[test]
    fn names_follow_the_profile() {
        let mut p = Profile::with_defaults("iot", "d.example.com");
        p.allow_local_name = true;
        let n = p.names_for("abcdefghi", "d.example.com");
        assert_eq!(n.required, vec!["abcdefghi.d.example.com"]);
        assert_eq!(n.optional, vec!["abcdefghi.local"]);
    }
}
