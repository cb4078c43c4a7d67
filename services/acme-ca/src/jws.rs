//! JWS as ACME uses it (RFC 8555 §6.2, RFC 7515 flattened JSON serialization): parsing with
//! size limits, public JWKs (RFC 7517/7518), RFC 7638 thumbprints and signature checks.
//!
//! Accepted signature algorithms: ES256, ES384, ES512, EdDSA (Ed25519) and RS256 with RSA keys of
//! 2048 to 8192 bits. `none` and MAC algorithms are refused here; MACs are only used inside an
//! external account binding, which [`verify_eab`] checks.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ECDSA_P521_SHA512_FIXED, ED25519,
    ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
};
use aws_lc_rs::{digest, hmac};
use serde_json::{Map, Value};

use crate::b64;
use crate::problem::{Problem, ProblemType};

/// What the directory's `badSignatureAlgorithm` problems list.
pub const ALGORITHMS: &[&str] = &["ES256", "ES384", "ES512", "EdDSA", "RS256"];

const MAX_PROTECTED: usize = 8 * 1024;
const MAX_SIGNATURE: usize = 1024;
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Es256,
    Es384,
    Es512,
    EdDsa,
    Rs256,
}

impl Alg {
    pub fn parse(s: &str) -> Result<Alg, Problem> {
        match s {
            "ES256" => Ok(Alg::Es256),
            "ES384" => Ok(Alg::Es384),
            // P-521 leaves are certified, so their keys must be able to sign revokeCert.
            "ES512" => Ok(Alg::Es512),
            "EdDSA" => Ok(Alg::EdDsa),
            "RS256" => Ok(Alg::Rs256),
            other => {
                let why = if other == "none" {
                    "unsigned requests (alg \"none\") are refused".to_string()
                } else if other.starts_with("HS") {
                    format!(
                        "{other} is a MAC algorithm, only allowed inside externalAccountBinding"
                    )
                } else {
                    format!("signature algorithm {:?} is not supported", truncate(other))
                };
                let mut p = Problem::new(ProblemType::BadSignatureAlgorithm, why);
                p.algorithms = Some(ALGORITHMS.to_vec());
                Err(p)
            }
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyMaterial {
    P256 { point: Vec<u8> },
    P384 { point: Vec<u8> },
    P521 { point: Vec<u8> },
    Ed25519 { x: Vec<u8> },
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

/// A public key from a JWK, with the member strings the thumbprint is computed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    key: KeyMaterial,
    /// RFC 7638 required members, in lexicographic order.
    members: Vec<(&'static str, String)>,
}

fn bad_key(detail: impl Into<String>) -> Problem {
    Problem::new(ProblemType::BadPublicKey, detail)
}

fn member<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, Problem> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad_key(format!("JWK member {name:?} is not a string"))),
        None => Err(bad_key(format!("JWK lacks the member {name:?}"))),
    }
}

fn member_bytes(obj: &Map<String, Value>, name: &str, max: usize) -> Result<Vec<u8>, Problem> {
    b64::decode(member(obj, name)?, max).map_err(|e| bad_key(format!("JWK member {name:?} is {e}")))
}

impl Jwk {
    pub fn from_value(v: &Value) -> Result<Jwk, Problem> {
        let obj = v
            .as_object()
            .ok_or_else(|| bad_key("the JWK is not a JSON object"))?;
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            if obj.contains_key(private) {
                return Err(bad_key(format!(
                    "the JWK carries the private or secret member {private:?}; send the public key only"
                )));
            }
        }
        let kty = member(obj, "kty")?;
        let (key, members) = match kty {
            "EC" => {
                let crv = member(obj, "crv")?;
                let len = match crv {
                    "P-256" => 32,
                    "P-384" => 48,
                    "P-521" => 66,
                    other => {
                        return Err(bad_key(format!(
                            "EC curve {:?} is not supported (P-256, P-384, P-521)",
                            truncate(other)
                        )));
                    }
                };
                let x = member_bytes(obj, "x", 66)?;
                let y = member_bytes(obj, "y", 66)?;
                if x.len() != len || y.len() != len {
                    return Err(bad_key(format!(
                        "{crv} coordinates must be {len} bytes each, got {} and {}",
                        x.len(),
                        y.len()
                    )));
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let alg = match len {
                    32 => &ECDSA_P256_SHA256_FIXED,
                    48 => &ECDSA_P384_SHA384_FIXED,
                    _ => &ECDSA_P521_SHA512_FIXED,
                };
                ParsedPublicKey::new(alg, &point)
                    .map_err(|_| bad_key(format!("the {crv} point is not on the curve")))?;
                let key = match len {
                    32 => KeyMaterial::P256 { point },
                    48 => KeyMaterial::P384 { point },
                    _ => KeyMaterial::P521 { point },
                };
                (
                    key,
                    vec![
                        ("crv", crv.to_string()),
                        ("kty", "EC".to_string()),
                        ("x", member(obj, "x")?.to_string()),
                        ("y", member(obj, "y")?.to_string()),
                    ],
                )
            }
            "OKP" => {
                let crv = member(obj, "crv")?;
                if crv != "Ed25519" {
                    return Err(bad_key(format!(
                        "OKP curve {:?} is not supported (Ed25519)",
                        truncate(crv)
                    )));
                }
                let x = member_bytes(obj, "x", 64)?;
                if x.len() != 32 {
                    return Err(bad_key("an Ed25519 key is 32 bytes"));
                }
                ParsedPublicKey::new(&ED25519, &x)
                    .map_err(|_| bad_key("the Ed25519 key is not valid"))?;
                (
                    KeyMaterial::Ed25519 { x },
                    vec![
                        ("crv", crv.to_string()),
                        ("kty", "OKP".to_string()),
                        ("x", member(obj, "x")?.to_string()),
                    ],
                )
            }
            "RSA" => {
                let n = member_bytes(obj, "n", MAX_RSA_BITS / 8 + 1)?;
                let e = member_bytes(obj, "e", 8)?;
                // Minimal encodings keep one thumbprint per key, hence one account per key.
                if n.first() == Some(&0) || e.first() == Some(&0) || e.is_empty() {
                    return Err(bad_key(
                        "RSA n and e must be minimal big-endian encodings (RFC 7518 §6.3.1)",
                    ));
                }
                let bits = bit_len(&n);
                if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                    return Err(bad_key(format!(
                        "the RSA modulus has {bits} bits; 2048 to 8192 are accepted"
                    )));
                }
                if e.last().is_none_or(|b| b & 1 == 0) || e.as_slice() == [1] {
                    return Err(bad_key("the RSA public exponent must be odd and above 1"));
                }
                (
                    KeyMaterial::Rsa { n, e },
                    vec![
                        ("e", member(obj, "e")?.to_string()),
                        ("kty", "RSA".to_string()),
                        ("n", member(obj, "n")?.to_string()),
                    ],
                )
            }
            other => {
                return Err(bad_key(format!(
                    "key type {:?} is not supported (EC, OKP, RSA)",
                    truncate(other)
                )));
            }
        };
        Ok(Jwk { key, members })
    }

    /// The RFC 7638 JSON form (required members only, sorted, no whitespace); what the store
    /// keeps.
    pub fn canonical(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::String((*k).to_string()).to_string());
            out.push(':');
            out.push_str(&Value::String(v.clone()).to_string());
        }
        out.push('}');
        out
    }

    /// RFC 7638 SHA-256 thumbprint, base64url.
    pub fn thumbprint(&self) -> String {
        b64::encode(digest::digest(&digest::SHA256, self.canonical().as_bytes()))
    }

    pub fn describe(&self) -> String {
        match &self.key {
            KeyMaterial::P256 { .. } => "ecdsa-p256".into(),
            KeyMaterial::P384 { .. } => "ecdsa-p384".into(),
            KeyMaterial::P521 { .. } => "ecdsa-p521".into(),
            KeyMaterial::Ed25519 { .. } => "ed25519".into(),
            KeyMaterial::Rsa { n, .. } => format!("rsa-{}", bit_len(n)),
        }
    }

    /// Checks `signature` over `input` made with `alg` by this key. A key/algorithm mismatch
    /// is `badSignatureAlgorithm`; a signature that does not verify is `malformed`.
    pub fn verify(&self, alg: Alg, input: &[u8], signature: &[u8]) -> Result<(), Problem> {
        let ok = match (&self.key, alg) {
            (KeyMaterial::P256 { point }, Alg::Es256) => {
                ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                    .ok()
                    .is_some_and(|k| k.verify_sig(input, signature).is_ok())
            }
            (KeyMaterial::P384 { point }, Alg::Es384) => {
                ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point)
                    .ok()
                    .is_some_and(|k| k.verify_sig(input, signature).is_ok())
            }
            (KeyMaterial::P521 { point }, Alg::Es512) => {
                ParsedPublicKey::new(&ECDSA_P521_SHA512_FIXED, point)
                    .ok()
                    .is_some_and(|k| k.verify_sig(input, signature).is_ok())
            }
            (KeyMaterial::Ed25519 { x }, Alg::EdDsa) => ParsedPublicKey::new(&ED25519, x)
                .ok()
                .is_some_and(|k| k.verify_sig(input, signature).is_ok()),
            (KeyMaterial::Rsa { n, e }, Alg::Rs256) => RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .verify(&RSA_PKCS1_2048_8192_SHA256, input, signature)
            .is_ok(),
            (_, alg) => {
                let mut p = Problem::new(
                    ProblemType::BadSignatureAlgorithm,
                    format!("{alg:?} cannot be used with a {} key", self.describe()),
                );
                p.algorithms = Some(ALGORITHMS.to_vec());
                return Err(p);
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Problem::malformed(
                "the JWS signature does not verify with the key",
            ))
        }
    }

    /// The JWK for a certificate's SubjectPublicKeyInfo (to authorize revocation signed by
    /// the certificate's key); `None` for key types JWS cannot use here.
    pub fn from_spki_der(spki: &[u8]) -> Option<Jwk> {
        use der::Decode;
        use x509_cert::spki::SubjectPublicKeyInfoOwned;
        let spki = SubjectPublicKeyInfoOwned::from_der(spki).ok()?;
        let bits = spki.subject_public_key.as_bytes()?;
        let alg = spki.algorithm.oid;
        let mut obj = Map::new();
        if alg == const_oid::db::rfc5912::ID_EC_PUBLIC_KEY {
            let curve: const_oid::ObjectIdentifier = spki.algorithm.parameters?.decode_as().ok()?;
            let (crv, len) = if curve == const_oid::db::rfc5912::SECP_256_R_1 {
                ("P-256", 32)
            } else if curve == const_oid::db::rfc5912::SECP_384_R_1 {
                ("P-384", 48)
            } else if curve == const_oid::db::rfc5912::SECP_521_R_1 {
                ("P-521", 66)
            } else {
                return None;
            };
            if bits.len() != 1 + 2 * len || bits[0] != 4 {
                return None;
            }
            obj.insert("kty".into(), "EC".into());
            obj.insert("crv".into(), crv.into());
            obj.insert("x".into(), b64::encode(&bits[1..=len]).into());
            obj.insert("y".into(), b64::encode(&bits[1 + len..]).into());
        } else if alg == const_oid::db::rfc8410::ID_ED_25519 {
            obj.insert("kty".into(), "OKP".into());
            obj.insert("crv".into(), "Ed25519".into());
            obj.insert("x".into(), b64::encode(bits).into());
        } else if alg == const_oid::db::rfc5912::RSA_ENCRYPTION {
            let (n, e) = rsa_public_key(bits)?;
            obj.insert("kty".into(), "RSA".into());
            obj.insert("n".into(), b64::encode(n).into());
            obj.insert("e".into(), b64::encode(e).into());
        } else {
            return None;
        }
        Jwk::from_value(&Value::Object(obj)).ok()
    }
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`, minimal unsigned
/// big-endian bytes.
fn rsa_public_key(der_bytes: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    use der::asn1::UintRef;
    use der::{Decode, Reader, SliceReader};
    let mut r = SliceReader::new(der_bytes).ok()?;
    let (n, e) = r
        .sequence(|seq| {
            let n = UintRef::decode(seq)?;
            let e = UintRef::decode(seq)?;
            Ok::<_, der::Error>((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
        })
        .ok()?;
    Some((n, e))
}

fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(first) => (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    }
}

/// The protected header members ACME uses.
#[derive(Debug, Clone, Default)]
pub struct Header {
    pub alg: String,
    pub nonce: Option<String>,
    pub url: Option<String>,
    pub kid: Option<String>,
    pub jwk: Option<Value>,
}

/// A flattened JWS, decoded but not verified.
#[derive(Debug, Clone)]
pub struct Jws {
    pub header: Header,
    pub protected_b64: String,
    pub payload_b64: String,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

impl Jws {
    pub fn signing_input(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.protected_b64.len() + 1 + self.payload_b64.len());
        v.extend_from_slice(self.protected_b64.as_bytes());
        v.push(b'.');
        v.extend_from_slice(self.payload_b64.as_bytes());
        v
    }

    /// Parses a request body (a JSON object in flattened serialization).
    pub fn parse_body(body: &[u8], max_payload: usize) -> Result<Jws, Problem> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| Problem::malformed(format!("the request body is not JSON: {e}")))?;
        Jws::from_value(&v, max_payload)
    }

    pub fn from_value(v: &Value, max_payload: usize) -> Result<Jws, Problem> {
        let obj = v.as_object().ok_or_else(|| {
            Problem::malformed("the JWS must be a JSON object (flattened JSON serialization)")
        })?;
        for key in obj.keys() {
            match key.as_str() {
                "protected" | "payload" | "signature" => {}
                "header" => {
                    return Err(Problem::malformed(
                        "the JWS has an unprotected header, which ACME forbids (RFC 8555 §6.2)",
                    ));
                }
                "signatures" => {
                    return Err(Problem::malformed(
                        "the general JWS serialization is not accepted; use the flattened one",
                    ));
                }
                other => {
                    return Err(Problem::malformed(format!(
                        "unexpected JWS member {:?}",
                        truncate(other)
                    )));
                }
            }
        }
        let field = |name: &str| -> Result<String, Problem> {
            match obj.get(name) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(Problem::malformed(format!("JWS {name:?} is not a string"))),
                None => Err(Problem::malformed(format!(
                    "the JWS has no {name:?} member"
                ))),
            }
        };
        let protected_b64 = field("protected")?;
        let payload_b64 = field("payload")?;
        let signature_b64 = field("signature")?;
        let protected = b64::decode(&protected_b64, MAX_PROTECTED)
            .map_err(|e| Problem::malformed(format!("JWS \"protected\" is {e}")))?;
        let payload = b64::decode(&payload_b64, max_payload)
            .map_err(|e| Problem::malformed(format!("JWS \"payload\" is {e}")))?;
        let signature = b64::decode(&signature_b64, MAX_SIGNATURE)
            .map_err(|e| Problem::malformed(format!("JWS \"signature\" is {e}")))?;
        let header = parse_header(&protected)?;
        Ok(Jws {
            header,
            protected_b64,
            payload_b64,
            payload,
            signature,
        })
    }
}

fn parse_header(bytes: &[u8]) -> Result<Header, Problem> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| Problem::malformed(format!("the JWS protected header is not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Problem::malformed("the JWS protected header is not a JSON object"))?;
    let opt_str = |name: &str| -> Result<Option<String>, Problem> {
        match obj.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Problem::malformed(format!(
                "protected header {name:?} is not a string"
            ))),
        }
    };
    if obj.contains_key("crit") {
        return Err(Problem::malformed(
            "the protected header lists critical extensions (\"crit\"); none are supported",
        ));
    }
    if obj.contains_key("b64") {
        return Err(Problem::malformed(
            "unencoded payloads (\"b64\") are not supported",
        ));
    }
    let alg =
        opt_str("alg")?.ok_or_else(|| Problem::malformed("the protected header has no \"alg\""))?;
    let jwk = match obj.get("jwk") {
        None => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => {
            return Err(Problem::malformed(
                "protected header \"jwk\" is not an object",
            ));
        }
    };
    Ok(Header {
        alg,
        nonce: opt_str("nonce")?,
        url: opt_str("url")?,
        kid: opt_str("kid")?,
        jwk,
    })
}

/// Verifies an externalAccountBinding JWS (RFC 8555 §7.3.4) against the configured keys and
/// returns the key id. `account_jwk` is the outer request's key; `url` the newAccount URL.
pub fn verify_eab(
    eab: &Value,
    account_jwk: &Jwk,
    url: &str,
    keys: &[(String, Vec<u8>)],
) -> Result<String, Problem> {
    let jws = Jws::from_value(eab, 16 * 1024)
        .map_err(|p| Problem::malformed(format!("externalAccountBinding: {}", p.detail)))?;
    let alg = match jws.header.alg.as_str() {
        "HS256" => hmac::HMAC_SHA256,
        "HS384" => hmac::HMAC_SHA384,
        "HS512" => hmac::HMAC_SHA512,
        other => {
            let mut p = Problem::new(
                ProblemType::BadSignatureAlgorithm,
                format!(
                    "externalAccountBinding must use HS256, HS384 or HS512, not {:?}",
                    truncate(other)
                ),
            );
            p.algorithms = Some(vec!["HS256", "HS384", "HS512"]);
            return Err(p);
        }
    };
    if jws.header.nonce.is_some() {
        return Err(Problem::malformed(
            "externalAccountBinding must not carry a nonce",
        ));
    }
    if jws.header.url.as_deref() != Some(url) {
        return Err(Problem::unauthorized(
            "externalAccountBinding \"url\" is not the newAccount URL",
        ));
    }
    let kid = jws
        .header
        .kid
        .clone()
        .ok_or_else(|| Problem::malformed("externalAccountBinding has no \"kid\""))?;
    let payload: Value = serde_json::from_slice(&jws.payload)
        .map_err(|_| Problem::malformed("externalAccountBinding payload is not the account JWK"))?;
    let inner = Jwk::from_value(&payload)?;
    if inner.thumbprint() != account_jwk.thumbprint() {
        return Err(Problem::unauthorized(
            "externalAccountBinding binds another key than the one signing the request",
        ));
    }
    let Some((_, secret)) = keys.iter().find(|(k, _)| *k == kid) else {
        return Err(Problem::unauthorized(format!(
            "unknown external account key id {:?}",
            truncate(&kid)
        )));
    };
    let key = hmac::Key::new(alg, secret);
    hmac::verify(&key, &jws.signing_input(), &jws.signature)
        .map_err(|_| Problem::unauthorized("the externalAccountBinding MAC does not verify"))?;
    Ok(kid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7638_thumbprint_example() {
        // The RSA key of RFC 7638 §3.1 and its published thumbprint.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let k = Jwk::from_value(&jwk).unwrap();
        assert_eq!(
            k.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert_eq!(k.describe(), "rsa-2048");
    }

    #[test]
    fn refuses_bad_keys() {
        let cases = [
            json!({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}),
            json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}),
            json!({"kty": "oct", "k": "AAAA"}),
            json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "OKP", "crv": "X25519", "x": "AA"}),
            json!("not an object"),
            json!({"kty": "EC", "crv": "P-256", "x": b64::encode([1u8; 32]), "y": b64::encode([1u8; 32])}),
        ];
        for c in cases {
            let p = Jwk::from_value(&c).unwrap_err();
            assert_eq!(p.kind, ProblemType::BadPublicKey, "{c}");
        }
    }

    #[test]
    fn algorithms() {
        for good in ALGORITHMS {
            assert!(Alg::parse(good).is_ok(), "{good}");
        }
        for bad in ["none", "HS256", "ES521", "PS256", "PS512", ""] {
            let p = Alg::parse(bad).unwrap_err();
            assert_eq!(p.kind, ProblemType::BadSignatureAlgorithm);
            assert!(p.algorithms.is_some());
        }
    }

    #[test]
    fn es512_with_p521_keys() {
        use aws_lc_rs::rand::SystemRandom;
        use aws_lc_rs::signature::{ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let pair = EcdsaKeyPair::generate(&ECDSA_P521_SHA512_FIXED_SIGNING).unwrap();
        let point = pair.public_key().as_ref();
        assert_eq!(point.len(), 1 + 2 * 66);
        let jwk = Jwk::from_value(&json!({
            "kty": "EC",
            "crv": "P-521",
            "x": b64::encode(&point[1..=66]),
            "y": b64::encode(&point[67..]),
        }))
        .unwrap();
        assert_eq!(jwk.describe(), "ecdsa-p521");
        let sig = pair.sign(&SystemRandom::new(), b"input").unwrap();
        jwk.verify(Alg::Es512, b"input", sig.as_ref()).unwrap();
        let p = jwk.verify(Alg::Es512, b"other", sig.as_ref()).unwrap_err();
        assert_eq!(p.kind, ProblemType::Malformed);
        let p = jwk.verify(Alg::Es384, b"input", sig.as_ref()).unwrap_err();
        assert_eq!(p.kind, ProblemType::BadSignatureAlgorithm);

        // A P-521 certificate key maps onto the same JWK, so it can sign its revocation.
        let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
        let from_cert =
            Jwk::from_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&leaf_key)).unwrap();
        assert_eq!(from_cert.describe(), "ecdsa-p521");
    }

    #[test]
    fn jws_shape_is_strict() {
        let ok = json!({"protected": b64::encode(br#"{"alg":"ES256"}"#), "payload": "", "signature": "AA"});
        assert!(Jws::from_value(&ok, 100).is_ok());
        let mut with_header = ok.clone();
        with_header["header"] = json!({});
        assert!(Jws::from_value(&with_header, 100).is_err());
        let crit = json!({"protected": b64::encode(br#"{"alg":"ES256","crit":["x"]}"#), "payload": "", "signature": "AA"});
        assert!(Jws::from_value(&crit, 100).is_err());
        let big = json!({"protected": b64::encode(br#"{"alg":"ES256"}"#), "payload": b64::encode([0u8; 200]), "signature": "AA"});
        assert!(Jws::from_value(&big, 100).is_err());
        let not_json = json!({"protected": b64::encode(b"{"), "payload": "", "signature": "AA"});
        assert!(Jws::from_value(&not_json, 100).is_err());
        assert!(Jws::parse_body(b"\xff\xfe", 100).is_err());
    }
}
