//! Replay nonces (RFC 8555 §6.5) valid on every replica: a nonce carries its own expiry and an
//! HMAC under a key shared through the store, so any replica can tell a nonce it never saw
//! from a forged one without a lookup; single use is then enforced by recording the nonce in
//! the store when it is spent.

use aws_lc_rs::hmac;
use rand::Rng;

use crate::b64;

const RANDOM_LEN: usize = 16;
const EXPIRY_LEN: usize = 8;
const MAC_LEN: usize = 16;
const RAW_LEN: usize = RANDOM_LEN + EXPIRY_LEN + MAC_LEN;
/// base64url length of a nonce.
pub const NONCE_LEN: usize = (RAW_LEN * 4).div_ceil(3);

pub struct NonceKey {
    key: hmac::Key,
    lifetime_secs: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonceError {
    Missing,
    Malformed,
    Forged,
    Expired,
}

impl NonceError {
    pub fn detail(&self) -> &'static str {
        match self {
            NonceError::Missing => "the protected header has no \"nonce\"",
            NonceError::Malformed => "the nonce is not one this server issues",
            NonceError::Forged => "the nonce was not issued by this server",
            NonceError::Expired => "the nonce has expired",
        }
    }
}

impl NonceKey {
    pub fn new(secret: &[u8], lifetime_secs: u32) -> Self {
        NonceKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            lifetime_secs: i64::from(lifetime_secs),
        }
    }

    pub fn issue(&self, now_secs: i64) -> String {
        let mut raw = [0u8; RAW_LEN];
        rand::rng().fill(&mut raw[..RANDOM_LEN]);
        raw[RANDOM_LEN..RANDOM_LEN + EXPIRY_LEN]
            .copy_from_slice(&(now_secs + self.lifetime_secs).to_be_bytes());
        let tag = hmac::sign(&self.key, &raw[..RANDOM_LEN + EXPIRY_LEN]);
        raw[RANDOM_LEN + EXPIRY_LEN..].copy_from_slice(&tag.as_ref()[..MAC_LEN]);
        b64::encode(raw)
    }

    /// Checks a nonce statelessly; returns the key to record it under and when it expires
    /// (Unix seconds).
    pub fn check(&self, nonce: Option<&str>, now_secs: i64) -> Result<(String, i64), NonceError> {
        let nonce = nonce.ok_or(NonceError::Missing)?;
        if nonce.len() != NONCE_LEN {
            return Err(NonceError::Malformed);
        }
        let raw = b64::decode(nonce, RAW_LEN).map_err(|_| NonceError::Malformed)?;
        if raw.len() != RAW_LEN {
            return Err(NonceError::Malformed);
        }
        let full = hmac::sign(&self.key, &raw[..RANDOM_LEN + EXPIRY_LEN]);
        // Constant-time comparison of the truncated tag.
        let expected = &full.as_ref()[..MAC_LEN];
        let got = &raw[RANDOM_LEN + EXPIRY_LEN..];
        let diff = expected
            .iter()
            .zip(got)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return Err(NonceError::Forged);
        }
        let mut exp = [0u8; EXPIRY_LEN];
        exp.copy_from_slice(&raw[RANDOM_LEN..RANDOM_LEN + EXPIRY_LEN]);
        let expires = i64::from_be_bytes(exp);
        if expires <= now_secs {
            return Err(NonceError::Expired);
        }
        Ok((b64::encode(&raw[..RANDOM_LEN]), expires))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn issue_and_check() {
        let k = NonceKey::new(b"0123456789abcdef0123456789abcdef", 60);
        let n = k.issue(1000);
        assert_eq!(n.len(), NONCE_LEN);
        let (id, exp) = k.check(Some(&n), 1001).unwrap();
        assert_eq!(exp, 1060);
        assert_eq!(id.len(), 22);
        assert_eq!(k.check(Some(&n), 1060), Err(NonceError::Expired));
        assert_eq!(k.check(None, 1001), Err(NonceError::Missing));
        assert_eq!(k.check(Some("abc"), 1001), Err(NonceError::Malformed));
        let other = NonceKey::new(b"another key, another replica set", 60);
        assert_eq!(other.check(Some(&n), 1001), Err(NonceError::Forged));
        let mut tampered = n.clone().into_bytes();
        tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(k.check(Some(&tampered), 1001).is_err());
        assert_ne!(k.issue(1000), k.issue(1000));
    }
}
