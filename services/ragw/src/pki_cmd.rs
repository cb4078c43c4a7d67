//! `ragw pki`: the component CA for a production deployment, kept in one directory — create it,
//! issue and renew per-component certificates (role in a SAN URI), and hand them to Kubernetes.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Subcommand};
use der::{DecodePem, Encode};
use ragw_runtime::identity::{ComponentCa, Role, roles_from_cert_der, write_private_file};
use x509_cert::Certificate;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const DEFAULT_CA_NAME: &str = "ragw component CA";
const DEFAULT_LEAF_DAYS: u32 = 365;
const SECONDS_PER_DAY: u64 = 86_400;

#[derive(Args)]
pub struct PkiArgs {
    #[command(subcommand)]
    pub command: PkiCommand,
}

#[derive(Subcommand)]
pub enum PkiCommand {
    /// Create the component CA: DIR/ca.pem (what every component trusts) and DIR/ca.key (0600).
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Subject CN of the CA certificate.
        #[arg(long, default_value = DEFAULT_CA_NAME)]
        common_name: String,
        /// Replace an existing CA. Every certificate it issued stops being trusted.
        #[arg(long)]
        force: bool,
    },
    /// Issue a component certificate: DIR/NAME.pem (certificate, then the CA) and DIR/NAME.key.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// What the holder may do (repeat for several): gateway, eap-server, worker, admin,
        /// auditor, registrar, ca.
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<Role>,
        /// File stem and subject CN.
        #[arg(long, value_parser = parse_file_name)]
        name: String,
        /// DNS names peers dial the component by (repeatable).
        #[arg(long = "dns")]
        dns_names: Vec<String>,
        /// IP addresses peers dial the component by (repeatable).
        #[arg(long = "ip")]
        ip_addrs: Vec<IpAddr>,
        #[arg(long, default_value_t = DEFAULT_LEAF_DAYS, value_parser = clap::value_parser!(u32).range(1..))]
        days: u32,
        /// Replace an existing NAME.pem / NAME.key.
        #[arg(long)]
        force: bool,
    },
    /// Re-issue DIR/NAME.pem from the same CA with the roles, DNS names and IP addresses of the
    /// current certificate, under a NEW private key (DIR/NAME.key is replaced).
    Renew {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, value_parser = parse_file_name)]
        name: String,
        /// Validity of the new certificate; default: the lifetime of the current one.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        days: Option<u32>,
    },
    /// Print a Kubernetes `kubernetes.io/tls` Secret (tls.crt, tls.key, ca.crt) for NAME.
    K8sSecret {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, value_parser = parse_file_name)]
        name: String,
        /// metadata.name of the Secret; default NAME.
        #[arg(long)]
        secret_name: Option<String>,
        #[arg(long)]
        namespace: Option<String>,
    },
}

pub fn run(args: PkiArgs) -> Result<()> {
    match args.command {
        PkiCommand::Init {
            dir,
            common_name,
            force,
        } => init(&dir, &common_name, force),
        PkiCommand::Issue {
            dir,
            roles,
            name,
            dns_names,
            ip_addrs,
            days,
            force,
        } => {
            let leaf = Leaf {
                roles,
                dns_names,
                ip_addrs,
                days,
            };
            let (cert, key) = leaf_paths(&dir, &name);
            if !force && (cert.exists() || key.exists()) {
                bail!(
                    "{} or {} already exists: use `ragw pki renew` or --force",
                    cert.display(),
                    key.display()
                );
            }
            issue(&dir, &name, &leaf)?;
            println!("{}", cert.display());
            Ok(())
        }
        PkiCommand::Renew { dir, name, days } => renew(&dir, &name, days),
        PkiCommand::K8sSecret {
            dir,
            name,
            secret_name,
            namespace,
        } => {
            let manifest = k8s_secret(
                &dir,
                &name,
                secret_name.as_deref().unwrap_or(&name),
                namespace.as_deref(),
            )?;
            print!("{manifest}");
            Ok(())
        }
    }
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| {
        let valid: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown role {s:?}; valid roles: {}", valid.join(", "))
    })
}

/// NAME becomes a file stem in DIR: nothing that could leave DIR or hide the file.
fn parse_file_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && !s.starts_with('.')
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?}: use letters, digits, '-', '_' and '.' (not first), at most 128 characters"
        ))
    }
}

fn ca_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE))
}

fn leaf_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

fn init(dir: &Path, common_name: &str, force: bool) -> Result<()> {
    let (cert, key) = ca_paths(dir);
    if !force && (cert.exists() || key.exists()) {
        bail!(
            "{} already holds a component CA; --force replaces it (every certificate it issued \
             stops being trusted)",
            dir.display()
        );
    }
    let ca = ComponentCa::generate(common_name).context("generating the component CA")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomically(&key, ca.key_pem(), true)?;
    write_atomically(&cert, ca.cert_pem(), false)?;
    println!("{}", cert.display());
    Ok(())
}

fn load_ca(dir: &Path) -> Result<ComponentCa> {
    let (cert, key) = ca_paths(dir);
    ComponentCa::load(&cert, &key).with_context(|| {
        format!(
            "loading the component CA from {} (`ragw pki init --dir {0}` creates it)",
            dir.display()
        )
    })
}

/// What a component certificate says besides its name.
#[derive(Debug, PartialEq, Eq)]
struct Leaf {
    roles: Vec<Role>,
    dns_names: Vec<String>,
    ip_addrs: Vec<IpAddr>,
    days: u32,
}

fn issue(dir: &Path, name: &str, leaf: &Leaf) -> Result<()> {
    let ca = load_ca(dir)?;
    let issued = ca
        .issue(
            name,
            &leaf.roles,
            &leaf.dns_names,
            &leaf.ip_addrs,
            leaf.days,
        )
        .with_context(|| format!("issuing the certificate for {name}"))?;
    let (cert, key) = leaf_paths(dir, name);
    // Key first: a crash in between leaves a new key beside an old certificate, which fails
    // loudly at start, rather than a certificate nobody holds the key of.
    write_atomically(&key, &issued.key_pem, true)?;
    write_atomically(
        &cert,
        format!("{}{}", issued.cert_pem, ca.cert_pem()),
        false,
    )?;
    Ok(())
}

fn renew(dir: &Path, name: &str, days: Option<u32>) -> Result<()> {
    let (cert_path, _) = leaf_paths(dir, name);
    let pem = std::fs::read(&cert_path)
        .with_context(|| format!("reading {} to renew it", cert_path.display()))?;
    // NAME.pem holds the certificate, then the CA: the first block is the one to renew.
    let current = Certificate::load_pem_chain(&pem)
        .ok()
        .and_then(|chain| chain.into_iter().next())
        .with_context(|| format!("{}: not a PEM certificate", cert_path.display()))?;
    let ca_pem = std::fs::read(ca_paths(dir).0)?;
    let ca_cert = Certificate::from_pem(&ca_pem).context("reading the CA certificate")?;
    if current.tbs_certificate().issuer() != ca_cert.tbs_certificate().subject() {
        bail!(
            "{} was not issued by the CA in {}",
            cert_path.display(),
            dir.display()
        );
    }
    let mut leaf = leaf_from_cert(&current)?;
    if leaf.roles.is_empty() {
        bail!("{} carries no ragw role", cert_path.display());
    }
    if let Some(d) = days {
        leaf.days = d;
    }
    issue(dir, name, &leaf)?;
    println!("{}", cert_path.display());
    Ok(())
}

fn leaf_from_cert(cert: &Certificate) -> Result<Leaf> {
    let der = cert.to_der()?;
    let roles = roles_from_cert_der(&der)?;
    let tbs = cert.tbs_certificate();
    let mut dns_names = Vec::new();
    let mut ip_addrs = Vec::new();
    if let Some((_, san)) = tbs.get_extension::<SubjectAltName>()? {
        for general_name in &san.0 {
            match general_name {
                GeneralName::DnsName(d) => dns_names.push(d.as_str().to_owned()),
                GeneralName::IpAddress(octets) => {
                    let bytes = octets.as_bytes();
                    let ip = if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
                        IpAddr::from(v4)
                    } else if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
                        IpAddr::from(v6)
                    } else {
                        bail!("an iPAddress SAN of {} bytes", bytes.len());
                    };
                    ip_addrs.push(ip);
                }
                _ => {}
            }
        }
    }
    let validity = tbs.validity();
    let lifetime = validity
        .not_after
        .to_unix_duration()
        .saturating_sub(validity.not_before.to_unix_duration());
    // Issued certificates are backdated a few minutes; rounding to the nearest day undoes it.
    let days = (lifetime.as_secs() + SECONDS_PER_DAY / 2) / SECONDS_PER_DAY;
    let days = u32::try_from(days.max(1)).unwrap_or(DEFAULT_LEAF_DAYS);
    Ok(Leaf {
        roles,
        dns_names,
        ip_addrs,
        days,
    })
}

/// Kubernetes object names (RFC 1123 subdomain).
fn valid_k8s_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn k8s_secret(
    dir: &Path,
    name: &str,
    secret_name: &str,
    namespace: Option<&str>,
) -> Result<String> {
    if !valid_k8s_name(secret_name) {
        bail!("{secret_name:?} is not a valid Kubernetes name: use --secret-name (lowercase)");
    }
    if let Some(ns) = namespace
        && !valid_k8s_name(ns)
    {
        bail!("{ns:?} is not a valid Kubernetes namespace");
    }
    let (cert, key) = leaf_paths(dir, name);
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let cert_pem = read(&cert)?;
    let key_pem = read(&key)?;
    let ca_pem = read(&ca_paths(dir).0)?;
    let mut out = String::new();
    out.push_str("apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata:\n");
    writeln!(out, "  name: {secret_name}")?;
    if let Some(ns) = namespace {
        writeln!(out, "  namespace: {ns}")?;
    }
    out.push_str("data:\n");
    writeln!(out, "  tls.crt: {}", BASE64.encode(cert_pem))?;
    writeln!(out, "  tls.key: {}", BASE64.encode(key_pem))?;
    writeln!(out, "  ca.crt: {}", BASE64.encode(ca_pem))?;
    Ok(out)
}

/// Writes through a temporary file and a rename, so a reader never sees half a PEM.
fn write_atomically(path: &Path, contents: impl AsRef<[u8]>, private: bool) -> Result<()> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    if private {
        write_private_file(&tmp, contents)
    } else {
        std::fs::write(&tmp, contents)
    }
    .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_inside_the_directory() {
        assert!(parse_file_name("registrar-0").is_ok());
        assert!(parse_file_name("est.gw_1").is_ok());
        for bad in ["", ".hidden", "../x", "a/b", "a b"] {
            assert!(parse_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kubernetes_names() {
        assert!(valid_k8s_name("ragw-registrar"));
        assert!(valid_k8s_name("a.b-c"));
        for bad in ["", "Upper", "-x", "x-", "a..b", "a_b"] {
            assert!(!valid_k8s_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn renewal_reads_back_what_was_issued() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), DEFAULT_CA_NAME, false).unwrap();
        let leaf = Leaf {
            roles: vec![Role::Registrar, Role::Admin],
            dns_names: vec!["registrar.ragw.svc".into()],
            ip_addrs: vec!["10.0.0.7".parse().unwrap(), "::1".parse().unwrap()],
            days: 90,
        };
        issue(dir.path(), "reg", &leaf).unwrap();
        let pem = std::fs::read(dir.path().join("reg.pem")).unwrap();
        let cert = Certificate::load_pem_chain(&pem).unwrap().remove(0);
        assert_eq!(leaf_from_cert(&cert).unwrap(), leaf);
    }

    #[test]
    fn init_refuses_to_replace_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), DEFAULT_CA_NAME, false).unwrap();
        let before = std::fs::read(dir.path().join(CA_CERT_FILE)).unwrap();
        assert!(init(dir.path(), DEFAULT_CA_NAME, false).is_err());
        assert_eq!(
            std::fs::read(dir.path().join(CA_CERT_FILE)).unwrap(),
            before
        );
        init(dir.path(), DEFAULT_CA_NAME, true).unwrap();
        assert_ne!(
            std::fs::read(dir.path().join(CA_CERT_FILE)).unwrap(),
            before
        );
    }
}
