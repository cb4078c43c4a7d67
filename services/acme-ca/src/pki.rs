//! The CA's key material and what it signs: a root generated on first start (draft-sweet-iot-
//! acme §3.4.1), an intermediate that issues the leaves, leaf certificates for CSR public keys,
//! CRLs, and the CA's own HTTPS server certificate.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::digest;
use const_oid::db::rfc5912;
use der::asn1::Any;
use der::{Decode, DecodePem, Encode, Tag, Tagged};
use ragw_domain::Eku;
use ragw_store::RevokedEntry;
use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    PKCS_ECDSA_P521_SHA512, PKCS_ED25519, PKCS_RSA_SHA256, PKCS_RSA_SHA384, PublicKeyData,
    RevocationReason, RevokedCertParams, RsaKeySize, SanType, SerialNumber, SignatureAlgorithm,
};
use time::{Duration, OffsetDateTime};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::spki::SubjectPublicKeyInfoOwned;

use crate::config::{CaConfig, CaKeyType};
use crate::error::{CaError, io_at};

const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;
/// Absorbs clock skew between the CA and the relying parties.
const BACKDATE: Duration = Duration::minutes(5);
/// The shortest leaf signed when the intermediate would cut a leaf short: one that dies within
/// hours only moves the outage onto the device, so the CA refuses and says why instead.
pub const MIN_LEAF_LIFETIME: Duration = Duration::days(1);

/// A public key taken from a CSR, in the form rcgen writes into a certificate.
pub struct ForeignKey {
    alg: &'static SignatureAlgorithm,
    bits: Vec<u8>,
    spki_der: Vec<u8>,
}

impl PublicKeyData for ForeignKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

impl ForeignKey {
    /// Maps a SubjectPublicKeyInfo onto the rcgen algorithm whose key encoding is the same.
    pub fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Option<ForeignKey> {
        let oid = spki.algorithm.oid;
        let alg: &'static SignatureAlgorithm = if oid == rfc5912::ID_EC_PUBLIC_KEY {
            let curve: const_oid::ObjectIdentifier =
                spki.algorithm.parameters.as_ref()?.decode_as().ok()?;
            if curve == rfc5912::SECP_256_R_1 {
                &PKCS_ECDSA_P256_SHA256
            } else if curve == rfc5912::SECP_384_R_1 {
                &PKCS_ECDSA_P384_SHA384
            } else if curve == rfc5912::SECP_521_R_1 {
                &PKCS_ECDSA_P521_SHA512
            } else {
                return None;
            }
        } else if oid == rfc5912::RSA_ENCRYPTION {
            &PKCS_RSA_SHA256
        } else if oid == const_oid::db::rfc8410::ID_ED_25519 {
            &PKCS_ED25519
        } else {
            return None;
        };
        Some(ForeignKey {
            alg,
            bits: spki.subject_public_key.as_bytes()?.to_vec(),
            spki_der: spki.to_der().ok()?,
        })
    }

    pub fn is_rsa(&self) -> bool {
        std::ptr::eq(self.alg, &PKCS_RSA_SHA256)
    }

    pub fn spki_sha256_hex(&self) -> String {
        hex::encode(digest::digest(&digest::SHA256, &self.spki_der))
    }
}

/// What a leaf is issued for.
pub struct LeafRequest<'a> {
    pub key: &'a ForeignKey,
    pub dns_names: &'a [String],
    pub ips: &'a [IpAddr],
    pub ekus: &'a [Eku],
    pub not_before: Option<OffsetDateTime>,
    pub not_after: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct IssuedLeaf {
    pub der: Vec<u8>,
    pub serial_hex: String,
    /// Unix microseconds.
    pub not_before: i64,
    pub not_after: i64,
}

pub struct CaPki {
    root_pem: String,
    root_der: Vec<u8>,
    intermediate_pem: String,
    intermediate_der: Vec<u8>,
    intermediate_ski: Vec<u8>,
    intermediate_not_after: OffsetDateTime,
    root_not_after: OffsetDateTime,
    /// A full leaf lifetime (`leaf_validity_days`).
    leaf_span: Duration,
    issuer: Issuer<'static, KeyPair>,
    crl_url: String,
}

impl std::fmt::Debug for CaPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaPki")
            .field("root", &self.root_pem.len())
            .field("intermediate_not_after", &self.intermediate_not_after)
            .finish_non_exhaustive()
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

pub fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

fn key_material(path: &Path, reason: impl Into<String>) -> CaError {
    CaError::KeyMaterial {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes a file that must not exist yet, with `mode` from the start, so a key is never
/// readable by others and two replicas starting together cannot both create one.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_at(path))?;
    f.write_all(contents).map_err(io_at(path))?;
    f.sync_all().map_err(io_at(path))
}

fn random_serial() -> (SerialNumber, String) {
    let mut b = [0u8; 16];
    rand::rng().fill(&mut b);
    // Positive, and never a leading zero byte, so the hex is what `openssl x509 -serial` shows.
    b[0] = (b[0] & 0x3f) | 0x40;
    (SerialNumber::from_slice(&b), hex::encode(b))
}

fn add_years(t: OffsetDateTime, years: u32) -> OffsetDateTime {
    let year = t.year() + years as i32;
    t.replace_year(year)
        .or_else(|_| (t - Duration::days(1)).replace_year(year))
        .unwrap_or(t + Duration::days(365 * i64::from(years)))
}

fn generate_key(kind: CaKeyType) -> Result<KeyPair, CaError> {
    Ok(match kind {
        CaKeyType::EcdsaP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?,
        CaKeyType::Rsa3072 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA384, RsaKeySize::_3072)?,
        CaKeyType::Rsa4096 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA384, RsaKeySize::_4096)?,
    })
}

fn dn(organization: &str, common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, organization);
    dn.push(DnType::CommonName, common_name);
    dn
}

struct Paths {
    root_key: PathBuf,
    root_cert: PathBuf,
    int_key: PathBuf,
    int_cert: PathBuf,
}

impl CaPki {
    /// Loads the root and intermediate from `data_dir`, creating what is missing: the root on
    /// first start, a new intermediate when the current one could not cover a full leaf
    /// lifetime any more.
    pub fn load_or_create(cfg: &CaConfig, crl_url: String) -> Result<CaPki, CaError> {
        let dir = &cfg.data_dir;
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io_at(dir))?;
        let p = Paths {
            root_key: dir.join("root.key"),
            root_cert: dir.join("root.pem"),
            int_key: dir.join("intermediate.key"),
            int_cert: dir.join("intermediate.pem"),
        };
        let now = OffsetDateTime::now_utc();
        let root = match (p.root_key.exists(), p.root_cert.exists()) {
            (true, true) => Loaded::from_files(&p.root_cert, &p.root_key)?,
            (false, false) => {
                let r = generate_root(cfg, now)?;
                write_new(&p.root_key, r.key.serialize_pem().as_bytes(), KEY_MODE)?;
                write_new(&p.root_cert, r.pem.as_bytes(), CERT_MODE)?;
                tracing::info!(path = %p.root_cert.display(), "generated the local CA root");
                r
            }
            (key, _) => {
                let (present, missing) = if key {
                    (&p.root_key, &p.root_cert)
                } else {
                    (&p.root_cert, &p.root_key)
                };
                return Err(key_material(
                    present,
                    format!(
                        "{} is missing; restore it, or remove both to create a new root (every \
                         relying party then needs the new root)",
                        missing.display()
                    ),
                ));
            }
        };
        if root.not_after <= now {
            return Err(key_material(
                &p.root_cert,
                "the root has expired; move the data directory aside to create a new one",
            ));
        }
        let leaf_span = Duration::days(i64::from(cfg.leaf_validity_days));
        let intermediate = match (p.int_key.exists(), p.int_cert.exists()) {
            (true, true) => {
                let i = Loaded::from_files(&p.int_cert, &p.int_key)?;
                if i.not_after < now + leaf_span && root.not_after > now + leaf_span {
                    // Keep the old pair next to the new one for the record.
                    let stamp = now.unix_timestamp();
                    let _ = fs::rename(&p.int_cert, dir.join(format!("intermediate-{stamp}.pem")));
                    let _ = fs::rename(&p.int_key, dir.join(format!("intermediate-{stamp}.key")));
                    new_intermediate(cfg, &root, &p, now)?
                } else {
                    i
                }
            }
            (false, false) => new_intermediate(cfg, &root, &p, now)?,
            _ => {
                return Err(key_material(
                    &p.int_cert,
                    "only one of intermediate.pem and intermediate.key exists; remove the other \
                     to issue a new intermediate",
                ));
            }
        };
        if intermediate.issuer_der != root.subject_der {
            return Err(key_material(
                &p.int_cert,
                "the intermediate was not issued by the root in this directory",
            ));
        }
        let Loaded {
            pem: intermediate_pem,
            der: intermediate_der,
            ski: intermediate_ski,
            not_after: intermediate_not_after,
            params,
            key,
            ..
        } = intermediate;
        Ok(CaPki {
            root_pem: root.pem,
            root_der: root.der,
            intermediate_pem,
            intermediate_der,
            intermediate_ski,
            intermediate_not_after,
            root_not_after: root.not_after,
            leaf_span,
            issuer: Issuer::new(params, key),
            crl_url,
        })
    }

    /// What the operator has to do about an intermediate that ends too soon: a restart makes
    /// a new one (see [`CaPki::load_or_create`]) unless the root itself ends within a leaf
    /// lifetime.
    fn intermediate_fix(&self, now: OffsetDateTime) -> String {
        if self.root_not_after > now + self.leaf_span {
            "restart the CA: at start it issues a new intermediate when the current one cannot \
             cover a full leaf lifetime (relying parties that pin the intermediate need the new \
             chain.pem)"
                .to_string()
        } else {
            format!(
                "the root itself expires at {}: move the data directory aside and restart to \
                 create a new root, then give every relying party the new root.pem",
                rfc3339(self.root_not_after)
            )
        }
    }

    /// A warning when the intermediate is within its last leaf lifetime, so the leaves it
    /// signs now end early (with it); `None` while it can cover full leaves.
    pub fn intermediate_warning(&self, now: OffsetDateTime) -> Option<String> {
        (self.intermediate_not_after < now + self.leaf_span).then(|| {
            format!(
                "the intermediate expires at {}, within one leaf lifetime: new leaves end with it \
                 and issuance stops {} before; {}",
                rfc3339(self.intermediate_not_after),
                MIN_LEAF_LIFETIME,
                self.intermediate_fix(now)
            )
        })
    }

    /// Refuses a leaf that should end at `not_after` when the intermediate would cut it below
    /// both that and [`MIN_LEAF_LIFETIME`]; a shorter leaf that was asked for is fine.
    pub fn check_can_issue(
        &self,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), CaError> {
        if self.intermediate_not_after < not_after.min(now + MIN_LEAF_LIFETIME) {
            return Err(CaError::IntermediateExhausted {
                not_after: rfc3339(self.intermediate_not_after),
                fix: self.intermediate_fix(now),
            });
        }
        Ok(())
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    /// The intermediate then the root, PEM: what relying parties may install.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.intermediate_pem, self.root_pem)
    }

    pub fn intermediate_pem(&self) -> &str {
        &self.intermediate_pem
    }

    /// The latest `notAfter` a leaf may have.
    pub fn max_not_after(&self) -> OffsetDateTime {
        self.intermediate_not_after
    }

    pub fn issue(&self, req: &LeafRequest<'_>) -> Result<IssuedLeaf, CaError> {
        let now = OffsetDateTime::now_utc();
        self.check_can_issue(req.not_after, now)?;
        let (serial, serial_hex) = random_serial();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(first) = req.dns_names.first().filter(|n| n.len() <= 64) {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.serial_number = Some(serial);
        params.not_before = req.not_before.unwrap_or(now - BACKDATE);
        params.not_after = req.not_after.min(self.intermediate_not_after);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if req.key.is_rsa() {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = req
            .ekus
            .iter()
            .map(|e| match e {
                Eku::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
                Eku::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
            })
            .collect();
        params.use_authority_key_identifier_extension = true;
        let mut sans = Vec::with_capacity(req.dns_names.len() + req.ips.len());
        for n in req.dns_names {
            sans.push(SanType::DnsName(n.as_str().try_into()?));
        }
        sans.extend(req.ips.iter().copied().map(SanType::IpAddress));
        params.subject_alt_names = sans;
        params.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![self.crl_url.clone()],
        }];
        let cert = params.signed_by(req.key, &self.issuer)?;
        Ok(IssuedLeaf {
            der: cert.der().to_vec(),
            serial_hex,
            not_before: micros(params.not_before),
            not_after: micros(params.not_after),
        })
    }

    /// A CRL of `entries`, signed by the intermediate (the issuer of every leaf it lists).
    pub fn sign_crl(
        &self,
        entries: &[RevokedEntry],
        validity: Duration,
    ) -> Result<Vec<u8>, CaError> {
        let now = OffsetDateTime::now_utc();
        let mut revoked = Vec::with_capacity(entries.len());
        for e in entries {
            let bytes = hex::decode(&e.serial_hex).map_err(|_| {
                CaError::Other(format!("stored serial {:?} is not hex", e.serial_hex))
            })?;
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(e.revoked_at) * 1000,
                )
                .unwrap_or(now),
                reason_code: e.reason.and_then(reason_code),
                invalidity_date: None,
            });
        }
        // Seconds since the epoch increase with every CRL this CA (any replica) signs.
        let number = now.unix_timestamp().max(1).to_be_bytes();
        let params = CertificateRevocationListParams {
            this_update: now - BACKDATE,
            next_update: now + validity,
            crl_number: SerialNumber::from_slice(&number),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::PreSpecified(self.intermediate_ski.clone()),
        };
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }

    /// A TLS server certificate for the CA itself, with a fresh P-256 key.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        validity_days: u32,
    ) -> Result<(IssuedLeaf, KeyPair, ForeignKey), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let spki = SubjectPublicKeyInfoOwned::from_der(&key.subject_public_key_info())
            .map_err(|e| CaError::Other(format!("server key: {e}")))?;
        let foreign = ForeignKey::from_spki(&spki)
            .ok_or_else(|| CaError::Other("server key has an unexpected type".into()))?;
        let leaf = self.issue(&LeafRequest {
            key: &foreign,
            dns_names,
            ips,
            ekus: &[Eku::ServerAuth],
            not_before: None,
            not_after: OffsetDateTime::now_utc() + Duration::days(i64::from(validity_days)),
        })?;
        Ok((leaf, key, foreign))
    }
}

/// What an operator wants to see of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    pub subject: String,
    pub issuer: String,
    pub serial_hex: String,
    pub not_before: String,
    pub not_after: String,
    pub sha256_fingerprint: String,
}

/// Summarizes a DER certificate; `None` if it does not parse.
pub fn describe_certificate(der: &[u8]) -> Option<CertificateSummary> {
    let cert = Certificate::from_der(der).ok()?;
    let tbs = cert.tbs_certificate();
    let time = |t: x509_cert::time::Time| {
        OffsetDateTime::from_unix_timestamp(i64::try_from(t.to_unix_duration().as_secs()).ok()?)
            .ok()?
            .format(&time::format_description::well_known::Rfc3339)
            .ok()
    };
    let fp = digest::digest(&digest::SHA256, der);
    Some(CertificateSummary {
        subject: tbs.subject().to_string(),
        issuer: tbs.issuer().to_string(),
        serial_hex: hex::encode(tbs.serial_number().as_bytes()),
        not_before: time(tbs.validity().not_before)?,
        not_after: time(tbs.validity().not_after)?,
        sha256_fingerprint: fp
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
    })
}

fn reason_code(code: i64) -> Option<RevocationReason> {
    Some(match code {
        0 => RevocationReason::Unspecified,
        1 => RevocationReason::KeyCompromise,
        2 => RevocationReason::CaCompromise,
        3 => RevocationReason::AffiliationChanged,
        4 => RevocationReason::Superseded,
        5 => RevocationReason::CessationOfOperation,
        6 => RevocationReason::CertificateHold,
        9 => RevocationReason::PrivilegeWithdrawn,
        10 => RevocationReason::AaCompromise,
        _ => return None,
    })
}

/// A CA certificate and key, loaded or just made.
struct Loaded {
    pem: String,
    der: Vec<u8>,
    subject_der: Vec<u8>,
    issuer_der: Vec<u8>,
    ski: Vec<u8>,
    not_after: OffsetDateTime,
    params: CertificateParams,
    key: KeyPair,
}

impl Loaded {
    fn from_files(cert_path: &Path, key_path: &Path) -> Result<Loaded, CaError> {
        let pem = fs::read_to_string(cert_path).map_err(io_at(cert_path))?;
        let key_pem = fs::read_to_string(key_path).map_err(io_at(key_path))?;
        let mode = fs::metadata(key_path)
            .map_err(io_at(key_path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(key_material(
                key_path,
                format!(
                    "the key file is readable by others (mode {:o}); chmod 600 it",
                    mode & 0o777
                ),
            ));
        }
        let cert = Certificate::from_pem(pem.as_bytes())
            .map_err(|e| key_material(cert_path, format!("not a PEM certificate: {e}")))?;
        let tbs = cert.tbs_certificate();
        let spki = tbs.subject_public_key_info();
        let alg = if spki.algorithm.oid == rfc5912::RSA_ENCRYPTION {
            &PKCS_RSA_SHA384
        } else {
            let curve: Option<const_oid::ObjectIdentifier> = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as().ok());
            if curve == Some(rfc5912::SECP_384_R_1) {
                &PKCS_ECDSA_P384_SHA384
            } else {
                return Err(key_material(
                    cert_path,
                    "the CA key is neither ECDSA P-384 nor RSA",
                ));
            }
        };
        let key = KeyPair::from_pkcs8_pem_and_sign_algo(&key_pem, alg)
            .map_err(|e| key_material(key_path, format!("not a usable PKCS#8 key: {e}")))?;
        let spki_der = spki
            .to_der()
            .map_err(|e| key_material(cert_path, e.to_string()))?;
        if spki_der != key.subject_public_key_info() {
            return Err(key_material(
                key_path,
                format!("the key does not belong to {}", cert_path.display()),
            ));
        }
        let ski = match tbs
            .get_extension::<SubjectKeyIdentifier>()
            .map_err(|e| key_material(cert_path, format!("bad subjectKeyIdentifier: {e}")))?
        {
            Some((_, ski)) => ski.0.as_bytes().to_vec(),
            None => {
                return Err(key_material(cert_path, "no subjectKeyIdentifier"));
            }
        };
        // rcgen rebuilds an issuer only through x509-parser, which this workspace does not
        // use; the subject is rebuilt attribute by attribute, keeping each string type, so the
        // issuer name of what it signs matches this subject byte for byte.
        let mut name = DistinguishedName::new();
        for rdn in tbs.subject().iter_rdn() {
            let mut atvs = rdn.iter();
            let (Some(atv), None) = (atvs.next(), atvs.next()) else {
                return Err(key_material(
                    cert_path,
                    "multi-valued RDNs are not supported",
                ));
            };
            let arcs: Vec<u64> = atv.oid.arcs().map(u64::from).collect();
            name.push(
                DnType::from_oid(&arcs),
                dn_value(&atv.value).map_err(|r| key_material(cert_path, r))?,
            );
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = name;
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski.clone());
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let not_after = tbs.validity().not_after.to_unix_duration();
        let not_after =
            OffsetDateTime::UNIX_EPOCH + Duration::try_from(not_after).unwrap_or(Duration::ZERO);
        Ok(Loaded {
            der: cert
                .to_der()
                .map_err(|e| key_material(cert_path, e.to_string()))?,
            subject_der: tbs
                .subject()
                .to_der()
                .map_err(|e| key_material(cert_path, e.to_string()))?,
            issuer_der: tbs
                .issuer()
                .to_der()
                .map_err(|e| key_material(cert_path, e.to_string()))?,
            pem,
            ski,
            not_after,
            params,
            key,
        })
    }

    fn from_generated(
        cert: rcgen::Certificate,
        params: CertificateParams,
        key: KeyPair,
    ) -> Result<Loaded, CaError> {
        let der = cert.der().to_vec();
        let parsed = Certificate::from_der(&der).map_err(|e| CaError::Other(e.to_string()))?;
        let tbs = parsed.tbs_certificate();
        let ski = params.key_identifier(&key);
        let mut issuer_params = CertificateParams::default();
        issuer_params.distinguished_name = params.distinguished_name.clone();
        issuer_params.key_identifier_method = KeyIdMethod::PreSpecified(ski.clone());
        issuer_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Loaded {
            pem: cert.pem(),
            subject_der: tbs
                .subject()
                .to_der()
                .map_err(|e| CaError::Other(e.to_string()))?,
            issuer_der: tbs
                .issuer()
                .to_der()
                .map_err(|e| CaError::Other(e.to_string()))?,
            der,
            ski,
            not_after: params.not_after,
            params: issuer_params,
            key,
        })
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
}

fn generate_root(cfg: &CaConfig, now: OffsetDateTime) -> Result<Loaded, CaError> {
    let key = generate_key(cfg.key_type)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(
        &cfg.organization,
        &format!("{} local ACME root CA", cfg.organization),
    );
    let (serial, _) = random_serial();
    params.serial_number = Some(serial);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - BACKDATE;
    // Exactly the configured number of years, so "between 1 and 10 years, inclusive" holds.
    params.not_after = add_years(params.not_before, cfg.root_validity_years);
    let mut sans = Vec::new();
    for n in &cfg.ca_names {
        sans.push(SanType::DnsName(n.as_str().try_into()?));
    }
    sans.extend(cfg.server_ips.iter().copied().map(SanType::IpAddress));
    params.subject_alt_names = sans;
    let cert = params.self_signed(&key)?;
    Loaded::from_generated(cert, params, key)
}

fn new_intermediate(
    cfg: &CaConfig,
    root: &Loaded,
    p: &Paths,
    now: OffsetDateTime,
) -> Result<Loaded, CaError> {
    let key = generate_key(cfg.key_type)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(
        &cfg.organization,
        &format!(
            "{} local ACME issuing CA {}",
            cfg.organization,
            now.unix_timestamp()
        ),
    );
    let (serial, _) = random_serial();
    params.serial_number = Some(serial);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after =
        (now + Duration::days(i64::from(cfg.intermediate_validity_days))).min(root.not_after);
    let cert = params.signed_by(&key, &root.issuer())?;
    let loaded = Loaded::from_generated(cert, params, key)?;
    write_new(&p.int_key, loaded.key.serialize_pem().as_bytes(), KEY_MODE)?;
    write_new(&p.int_cert, loaded.pem.as_bytes(), CERT_MODE)?;
    tracing::info!(path = %p.int_cert.display(), "issued a new intermediate");
    Ok(Loaded {
        issuer_der: root.subject_der.clone(),
        ..loaded
    })
}

/// Maps a subject attribute value onto rcgen's, keeping its string type.
fn dn_value(value: &Any) -> Result<DnValue, String> {
    let bytes = value.value();
    let text = || {
        std::str::from_utf8(bytes).map_err(|_| "a subject attribute is not valid text".to_owned())
    };
    let unsupported = |e: rcgen::Error| format!("unsupported subject attribute: {e}");
    Ok(match value.tag() {
        Tag::Utf8String => DnValue::Utf8String(text()?.to_owned()),
        Tag::PrintableString => DnValue::PrintableString(text()?.try_into().map_err(unsupported)?),
        Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(unsupported)?),
        other => return Err(format!("unsupported subject attribute type {other:?}")),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg(dir: &Path) -> CaConfig {
        let mut c = CaConfig::new(
            dir.to_path_buf(),
            vec!["devices.example.test".into()],
            "127.0.0.1:53".parse().unwrap(),
        );
        c.validate().unwrap();
        c
    }

    #[test]
    fn root_is_generated_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(&dir.path().join("ca"));
        let a = CaPki::load_or_create(&c, "https://x/crl".into()).unwrap();
        let mode = fs::metadata(c.data_dir.join("root.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(c.data_dir.join("intermediate.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = CaPki::load_or_create(&c, "https://x/crl".into()).unwrap();
        assert_eq!(a.root_pem(), b.root_pem());
        assert_eq!(a.intermediate_pem(), b.intermediate_pem());

        let root = Certificate::from_der(a.root_der()).unwrap();
        let tbs = root.tbs_certificate();
        let years = tbs.validity().not_after.to_unix_duration().as_secs()
            - tbs.validity().not_before.to_unix_duration().as_secs();
        assert!((10 * 365 * 86400..=10 * 366 * 86400).contains(&years));
        assert_eq!(
            root.signature_algorithm().oid,
            const_oid::db::rfc5912::ECDSA_WITH_SHA_384
        );

        // Leaves from the reloaded intermediate chain to the same intermediate.
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = SubjectPublicKeyInfoOwned::from_der(&key.subject_public_key_info()).unwrap();
        let fk = ForeignKey::from_spki(&spki).unwrap();
        let leaf = b
            .issue(&LeafRequest {
                key: &fk,
                dns_names: &["d.devices.example.test".into()],
                ips: &["10.0.0.1".parse().unwrap()],
                ekus: &[Eku::ServerAuth],
                not_before: None,
                not_after: OffsetDateTime::now_utc() + Duration::days(30),
            })
            .unwrap();
        let parsed = Certificate::from_der(&leaf.der).unwrap();
        let int = Certificate::from_der(b.intermediate_der()).unwrap();
        assert_eq!(
            parsed.tbs_certificate().issuer(),
            int.tbs_certificate().subject()
        );
        assert_eq!(leaf.serial_hex.len(), 32);
        let crl = b
            .sign_crl(
                &[RevokedEntry {
                    serial_hex: leaf.serial_hex.clone(),
                    revoked_at: micros(OffsetDateTime::now_utc()),
                    reason: Some(1),
                }],
                Duration::hours(24),
            )
            .unwrap();
        assert!(crl.len() > 100);
    }

    #[test]
    fn an_intermediate_near_its_end_warns_then_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(&dir.path().join("ca"));
        let mut pki = CaPki::load_or_create(&c, "u".into()).unwrap();
        let now = OffsetDateTime::now_utc();
        assert!(pki.intermediate_warning(now).is_none());
        pki.check_can_issue(now + Duration::days(30), now).unwrap();

        // Within the last leaf lifetime: leaves are cut short, with a warning naming the fix.
        pki.intermediate_not_after = now + Duration::days(10);
        let w = pki.intermediate_warning(now).unwrap();
        assert!(w.contains("restart the CA"), "{w}");
        pki.check_can_issue(now + Duration::days(30), now).unwrap();

        // Less than a minimal leaf lifetime left: refused, unless a shorter leaf was asked for.
        pki.intermediate_not_after = now + Duration::hours(12);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = SubjectPublicKeyInfoOwned::from_der(&key.subject_public_key_info()).unwrap();
        let fk = ForeignKey::from_spki(&spki).unwrap();
        let leaf = |not_after| LeafRequest {
            key: &fk,
            dns_names: &[],
            ips: &[],
            ekus: &[Eku::ServerAuth],
            not_before: None,
            not_after,
        };
        let e = pki.issue(&leaf(now + Duration::days(30))).unwrap_err();
        assert!(matches!(e, CaError::IntermediateExhausted { .. }), "{e}");
        assert!(e.to_string().contains("restart the CA"), "{e}");
        pki.issue(&leaf(now + Duration::hours(6))).unwrap();
        pki.intermediate_not_after = now - Duration::hours(1);
        assert!(pki.issue(&leaf(now + Duration::hours(6))).is_err());

        // When the root ends within a leaf lifetime too, a restart does not help.
        pki.root_not_after = now + Duration::days(2);
        let e = pki
            .check_can_issue(now + Duration::days(30), now)
            .unwrap_err();
        assert!(e.to_string().contains("new root"), "{e}");
    }

    #[test]
    fn loose_key_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(&dir.path().join("ca"));
        CaPki::load_or_create(&c, "u".into()).unwrap();
        fs::set_permissions(
            c.data_dir.join("root.key"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(CaPki::load_or_create(&c, "u".into()).is_err());
    }

    #[test]
    fn rsa_root() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg(&dir.path().join("ca"));
        c.key_type = CaKeyType::Rsa3072;
        let a = CaPki::load_or_create(&c, "u".into()).unwrap();
        let b = CaPki::load_or_create(&c, "u".into()).unwrap();
        assert_eq!(a.root_pem(), b.root_pem());
        let root = Certificate::from_der(a.root_der()).unwrap();
        assert_eq!(
            root.signature_algorithm().oid,
            const_oid::db::rfc5912::SHA_384_WITH_RSA_ENCRYPTION
        );
    }
}
