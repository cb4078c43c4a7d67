//! Opaque DNS labels: random, allocated once per device and profile, never derived from the
//! device identifier, so that a name in a certificate (or in CT logs) reveals nothing about it.

use rand::Rng;

/// RFC 4648 base32 alphabet in lower case: valid in DNS labels, no look-alike 0/1/8/9.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// One leading letter (26 choices) and eight base32 characters: log2(26) + 8 × 5 ≈ 44.7 bits.
pub const LABEL_LEN: usize = 9;

/// Draws a fresh label. The first character is always a letter, so a label never looks like a
/// number to tools that guess types.
pub fn random_label<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut out = String::with_capacity(LABEL_LEN + 1);
    out.push(ALPHABET[rng.random_range(0..26)] as char);
    for _ in 1..LABEL_LEN {
        out.push(ALPHABET[rng.random_range(0..32)] as char);
    }
    out
}

/// Whether `s` is shaped like a label this module hands out.
pub fn is_allocated_label_shape(s: &str) -> bool {
    s.len() == LABEL_LEN
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes().all(|b| ALPHABET.contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn labels_are_dns_safe_and_distinct() {
        let mut rng = rand::rng();
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let l = random_label(&mut rng);
            assert!(is_allocated_label_shape(&l), "{l}");
            assert!(crate::names::is_valid_dns_label(&l));
            seen.insert(l);
        }
        assert_eq!(seen.len(), 10_000);
    }

    #[test]
    fn entropy_is_at_least_forty_bits() {
        let bits = (26f64).log2() + (LABEL_LEN as f64 - 1.0) * 5.0;
        assert!(bits >= 40.0);
    }
}
