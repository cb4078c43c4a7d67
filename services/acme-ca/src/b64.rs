//! Strict base64url (RFC 4648 §5, no padding, as JWS requires): padding, whitespace, the
//! standard alphabet and non-zero trailing bits are all refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum B64Error {
    TooLong { max: usize },
    Invalid(String),
}

impl std::fmt::Display for B64Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            B64Error::TooLong { max } => write!(f, "longer than {max} bytes once decoded"),
            B64Error::Invalid(e) => write!(f, "not base64url without padding ({e})"),
        }
    }
}

/// Decodes at most `max` bytes of output.
pub fn decode(text: &str, max: usize) -> Result<Vec<u8>, B64Error> {
    // Checking the length first keeps a hostile megabyte string from being decoded at all.
    if text.len() / 4 * 3 > max + 3 {
        return Err(B64Error::TooLong { max });
    }
    let out = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| B64Error::Invalid(e.to_string()))?;
    if out.len() > max {
        return Err(B64Error::TooLong { max });
    }
    Ok(out)
}

pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn strict() {
        assert_eq!(decode("aGk", 10).unwrap(), b"hi");
        assert!(decode("aGk=", 10).is_err());
        assert!(decode("aG k", 10).is_err());
        assert!(decode("a+/a", 10).is_err());
        assert!(decode("aGl", 10).is_err(), "non-zero trailing bits");
        assert!(matches!(
            decode(&"A".repeat(100), 10),
            Err(B64Error::TooLong { .. })
        ));
        assert_eq!(decode("", 10).unwrap(), b"");
    }
}
