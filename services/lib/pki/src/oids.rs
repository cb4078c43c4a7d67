//! Object identifiers the CSR code recognises.

use const_oid::ObjectIdentifier;

const fn oid(s: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(s)
}

// Public key algorithms (SubjectPublicKeyInfo.algorithm).
pub const EC_PUBLIC_KEY: ObjectIdentifier = oid("1.2.840.10045.2.1");
pub const RSA_ENCRYPTION: ObjectIdentifier = oid("1.2.840.113549.1.1.1");
/// id-Ed25519, both the key algorithm and the signature algorithm (RFC 8410).
pub const ED25519: ObjectIdentifier = oid("1.3.101.112");

// Named curves.
pub const SECP256R1: ObjectIdentifier = oid("1.2.840.10045.3.1.7");
pub const SECP384R1: ObjectIdentifier = oid("1.3.132.0.34");
pub const SECP521R1: ObjectIdentifier = oid("1.3.132.0.35");

// Signature algorithms.
pub const ECDSA_WITH_SHA256: ObjectIdentifier = oid("1.2.840.10045.4.3.2");
pub const ECDSA_WITH_SHA384: ObjectIdentifier = oid("1.2.840.10045.4.3.3");
pub const ECDSA_WITH_SHA512: ObjectIdentifier = oid("1.2.840.10045.4.3.4");
pub const SHA256_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.11");
pub const SHA384_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.12");
pub const SHA512_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.13");

// PKCS#9 attributes.
pub const EXTENSION_REQUEST: ObjectIdentifier = oid("1.2.840.113549.1.9.14");

// Extensions.
pub const SUBJECT_KEY_IDENTIFIER: ObjectIdentifier = oid("2.5.29.14");
pub const KEY_USAGE: ObjectIdentifier = oid("2.5.29.15");
pub const SUBJECT_ALT_NAME: ObjectIdentifier = oid("2.5.29.17");
pub const BASIC_CONSTRAINTS: ObjectIdentifier = oid("2.5.29.19");
pub const EXT_KEY_USAGE: ObjectIdentifier = oid("2.5.29.37");

// Name attributes.
pub const COMMON_NAME: ObjectIdentifier = oid("2.5.4.3");

/// Extensions the CSR may carry, critical or not; the CA decides what it actually issues.
pub const KNOWN_EXTENSIONS: &[ObjectIdentifier] = &[
    SUBJECT_ALT_NAME,
    KEY_USAGE,
    EXT_KEY_USAGE,
    BASIC_CONSTRAINTS,
    SUBJECT_KEY_IDENTIFIER,
];

/// Curves people actually meet that const-oid's database does not name.
const CURVE_NAMES: &[(ObjectIdentifier, &str)] = &[
    (oid("1.2.840.10045.3.1.1"), "P-192 (secp192r1, prime192v1)"),
    (oid("1.2.840.10045.3.1.7"), "P-256 (secp256r1, prime256v1)"),
    (oid("1.3.132.0.33"), "P-224 (secp224r1)"),
    (oid("1.3.132.0.34"), "P-384 (secp384r1)"),
    (oid("1.3.132.0.35"), "P-521 (secp521r1)"),
    (oid("1.3.132.0.10"), "secp256k1"),
    (oid("1.3.36.3.3.2.8.1.1.7"), "brainpoolP256r1"),
    (oid("1.3.36.3.3.2.8.1.1.11"), "brainpoolP384r1"),
    (oid("1.3.36.3.3.2.8.1.1.13"), "brainpoolP512r1"),
];

/// `name (dotted.oid)` when the name is known, else the dotted OID alone.
pub fn describe(oid: &ObjectIdentifier) -> String {
    let local = CURVE_NAMES.iter().find(|(o, _)| o == oid).map(|(_, n)| *n);
    match local.or_else(|| const_oid::db::DB.by_oid(oid)) {
        Some(name) => format!("{name} ({oid})"),
        None => oid.to_string(),
    }
}
