//! CSR builders and fixtures for the unit tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ragw_domain::Profile;
use ragw_domain::profile::AssignedNames;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType, SignatureAlgorithm};

pub const LABEL: &str = "abcdefghi";
pub const PARENT: &str = "devices.example.com";
/// The name the fixtures and most tests ask for: `LABEL.PARENT`.
pub const NAME: &str = "abcdefghi.devices.example.com";

pub fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

pub fn ip(addr: &str) -> SanType {
    SanType::IpAddress(addr.parse().unwrap())
}

/// CSR parameters with exactly these SANs and, optionally, a subject CN (nothing else).
pub fn params(sans: Vec<SanType>, cn: Option<&str>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans;
    p.distinguished_name = DistinguishedName::new();
    if let Some(cn) = cn {
        p.distinguished_name.push(DnType::CommonName, cn);
    }
    p
}

pub fn make_csr_with_key(key: &KeyPair, p: CertificateParams) -> Vec<u8> {
    p.serialize_request(key).unwrap().der().to_vec()
}

pub fn make_csr_with(alg: &'static SignatureAlgorithm, p: CertificateParams) -> Vec<u8> {
    make_csr_with_key(&KeyPair::generate_for(alg).unwrap(), p)
}

pub fn make_csr(alg: &'static SignatureAlgorithm, sans: Vec<SanType>, cn: Option<&str>) -> Vec<u8> {
    make_csr_with(alg, params(sans, cn))
}

/// A checked-in openssl-made CSR from `tests/fixtures` (see the README there).
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The default profile under [`PARENT`].
pub fn test_profile() -> Profile {
    let mut p = Profile::with_defaults("iot", PARENT);
    p.validate().unwrap();
    p
}

pub fn assigned(profile: &Profile) -> AssignedNames {
    profile.names_for(LABEL, PARENT)
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// An extra extensionRequest attribute (one non-critical private extension), to make a CSR
/// with two of them.
pub fn second_extension_request() -> rcgen::Attribute {
    use der::Encode;
    use der::asn1::{Any, OctetString, SetOfVec};
    let ext = x509_cert::ext::Extension {
        extn_id: const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.55555.2"),
        critical: false,
        extn_value: OctetString::new(vec![5, 0]).unwrap(),
    };
    let mut values = SetOfVec::<Any>::new();
    values
        .insert(Any::encode_from(&vec![ext]).unwrap())
        .unwrap();
    rcgen::Attribute {
        oid: &[1, 2, 840, 113549, 1, 9, 14],
        values: values.to_der().unwrap(),
    }
}

/// Deterministic xorshift64 for the mangling test.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform enough in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}
