//! The configuration file (TOML) shared by every target, with `RAGW_SECTION__KEY` environment
//! overrides. Unknown keys are errors, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ragw_domain::Profile;
use ragw_domain::profile::validate_profiles;
use ragw_runtime::telemetry::LogFormat;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub registrar: RegistrarSection,
    pub tls: Option<TlsSection>,
    #[serde(default)]
    pub profiles: Vec<Profile>,
    /// The local ACME CA (`ragw run --target ca`).
    pub ca: Option<ragw_acme_ca::CaConfig>,
    /// The EST gateway (`ragw run --target est`).
    pub est: Option<ragw_est::EstSection>,
    /// The TEAP gateway (`ragw run --target teap`).
    pub teap: Option<ragw_teap::config::TeapSection>,
    /// The ACME worker (`ragw run --target worker`).
    pub worker: Option<ragw_acme_worker::job::WorkerConfig>,
    /// How the worker publishes dns-01 records.
    pub dns: Option<crate::worker_cmd::DnsSection>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: default_level(),
        }
    }
}

fn default_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    #[serde(default)]
    pub backend: StoreBackend,
    /// SQLite database file.
    pub path: Option<PathBuf>,
    /// PostgreSQL connection string. Put credentials in `RAGW_STORE__URL`, not in the file.
    pub url: Option<String>,
    pub schema: Option<String>,
    pub pool_size: Option<usize>,
}

impl StoreSection {
    /// The store to open; `default_sqlite` is used when the file names none.
    pub fn resolve(&self, default_sqlite: &Path) -> Result<ragw_store::StoreConfig> {
        Ok(match self.backend {
            StoreBackend::Sqlite => ragw_store::StoreConfig::Sqlite {
                path: self
                    .path
                    .clone()
                    .unwrap_or_else(|| default_sqlite.to_path_buf()),
            },
            StoreBackend::Postgres => ragw_store::StoreConfig::Postgres {
                url: self.url.clone().context(
                    "store.backend is postgres but store.url (or RAGW_STORE__URL) is not set",
                )?,
                schema: self.schema.clone(),
                pool_size: self.pool_size.unwrap_or(16),
            },
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrarSection {
    #[serde(default = "default_grpc")]
    pub listen: SocketAddr,
    #[serde(default = "default_ops")]
    pub ops_listen: SocketAddr,
    #[serde(default = "default_attempts")]
    pub max_attempts: i64,
    #[serde(default = "default_wait")]
    pub max_wait_seconds: u64,
    #[serde(default = "default_lease")]
    pub max_lease_seconds: u64,
    /// How often the registrar fetches the CRLs of the certificates it issued, so that a
    /// revocation made at the CA stops re-enrollment; 0 switches polling off. Unset: 300 s
    /// (`ragw dev`: 5 s).
    #[serde(default)]
    pub crl_poll_interval_seconds: Option<u64>,
    #[serde(default = "default_crl_fetch_timeout")]
    pub crl_fetch_timeout_seconds: u64,
    /// PEM CA certificates that authenticate https CRL servers; unset: the public web PKI
    /// (`ragw dev`: the local CA's root).
    #[serde(default)]
    pub crl_https_trust: Option<PathBuf>,
}

impl Default for RegistrarSection {
    fn default() -> Self {
        RegistrarSection {
            listen: default_grpc(),
            ops_listen: default_ops(),
            max_attempts: default_attempts(),
            max_wait_seconds: default_wait(),
            max_lease_seconds: default_lease(),
            crl_poll_interval_seconds: None,
            crl_fetch_timeout_seconds: default_crl_fetch_timeout(),
            crl_https_trust: None,
        }
    }
}

fn default_grpc() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7443))
}

fn default_ops() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

fn default_attempts() -> i64 {
    10
}

fn default_wait() -> u64 {
    30
}

fn default_lease() -> u64 {
    600
}

/// Production CRL poll interval: a revocation at the CA stops re-enrollment within this plus
/// the CA's CRL caching.
pub const DEFAULT_CRL_POLL_SECONDS: u64 = 300;

fn default_crl_fetch_timeout() -> u64 {
    10
}

/// The component's mutual-TLS identity for gRPC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA that issues component certificates (trusted for peers).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// Where the worker serves /healthz, /readyz and /metrics.
    pub fn worker_ops_listen(&self) -> SocketAddr {
        self.worker
            .as_ref()
            .and_then(|w| w.ops_listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9465)))
    }

    pub fn load(file: Option<&Path>) -> Result<Config> {
        let mut cfg: Config =
            ragw_runtime::config::load(file, std::env::vars()).with_context(|| match file {
                Some(f) => format!("loading configuration from {}", f.display()),
                None => "loading configuration from the environment".to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&mut self) -> Result<()> {
        validate_profiles(&mut self.profiles).context("invalid profile")?;
        if let Some(ca) = &mut self.ca {
            ca.validate().context("invalid [ca] section")?;
        }
        if self.registrar.max_attempts < 1 {
            bail!("registrar.max_attempts must be at least 1");
        }
        Ok(())
    }

    pub fn crl_poll_settings(&self) -> ragw_registrar::CrlPollSettings {
        ragw_registrar::CrlPollSettings {
            interval: std::time::Duration::from_secs(
                self.registrar
                    .crl_poll_interval_seconds
                    .unwrap_or(DEFAULT_CRL_POLL_SECONDS),
            ),
            fetch_timeout: std::time::Duration::from_secs(
                self.registrar.crl_fetch_timeout_seconds.max(1),
            ),
            https_trust: self.registrar.crl_https_trust.clone(),
        }
    }

    pub fn registrar_settings(&self) -> ragw_registrar::RegistrarSettings {
        ragw_registrar::RegistrarSettings {
            profiles: self.profiles.clone(),
            max_attempts: self.registrar.max_attempts,
            max_wait: std::time::Duration::from_secs(self.registrar.max_wait_seconds),
            max_lease: std::time::Duration::from_secs(self.registrar.max_lease_seconds),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Every example config in deploy/ must load as the binary would load it.
    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let mut cfg: Config =
                ragw_runtime::config::load(Some(&path), Vec::<(String, String)>::new())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            cfg.validate()
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            assert!(
                !cfg.profiles.is_empty()
                    || cfg.ca.is_some()
                    || cfg.est.is_some()
                    || cfg.teap.is_some()
                    || cfg.worker.is_some(),
                "{} configures no component",
                path.display()
            );
            if let Some(w) = &cfg.worker {
                assert!(w.registrar.is_some() && !w.upstreams.is_empty() && cfg.dns.is_some());
            }
            if path.ends_with("est.toml") {
                // The guessing bounds the example documents are read as written.
                let limits = &cfg.est.as_ref().unwrap().limits;
                assert_eq!(limits.failed_authentications_per_second, 20);
                assert_eq!(limits.user_failure_max_delay_seconds, 300);
                assert_eq!(limits.refusal_audit_per_source, 10);
            }
            if path.ends_with("teap.toml") {
                let teap = cfg.teap.as_ref().unwrap();
                assert_eq!(teap.limits.enrollment_hold_seconds, 20);
                assert_eq!(teap.clients.len(), 2);
                assert!(
                    teap.clients
                        .values()
                        .all(|c| c.secret_file.is_some() != c.secret_env.is_some())
                );
                let iot = &teap.labels["iot"];
                assert_eq!(
                    iot.provisioning.certificate,
                    ragw_teap::config::CertificateProvisioning::Required
                );
            }
            if path.ends_with("registrar.toml") {
                assert_eq!(cfg.registrar.crl_poll_interval_seconds, Some(300));
                assert_eq!(cfg.crl_poll_settings().interval.as_secs(), 300);
            }
            if path.ends_with("dev.toml") {
                assert_eq!(cfg.registrar.crl_poll_interval_seconds, Some(5));
            }
            seen += 1;
        }
        assert_eq!(
            Config::default().crl_poll_settings().interval.as_secs(),
            DEFAULT_CRL_POLL_SECONDS
        );
        assert!(seen >= 2, "expected example configs in {}", dir.display());
    }

    #[test]
    fn unknown_keys_and_env_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[store]\nbackend = \"postgres\"\n").unwrap();
        let env = vec![(
            "RAGW_STORE__URL".to_string(),
            "postgres://db/ragw".to_string(),
        )];
        let cfg: Config = ragw_runtime::config::load(Some(&file), env).unwrap();
        assert_eq!(cfg.store.url.as_deref(), Some("postgres://db/ragw"));

        std::fs::write(&file, "[store]\nbakend = \"postgres\"\n").unwrap();
        let err = ragw_runtime::config::load::<Config>(Some(&file), Vec::new()).unwrap_err();
        assert!(err.to_string().contains("bakend"), "{err}");

        // [teap] follows the same rules: a client's secret source set from the environment.
        std::fs::write(&file, "[teap.clients.nas1]\naddress = \"192.0.2.10\"\n").unwrap();
        let env = vec![(
            "RAGW_TEAP__CLIENTS__NAS1__SECRET_ENV".to_string(),
            "NAS1_SECRET".to_string(),
        )];
        let cfg: Config = ragw_runtime::config::load(Some(&file), env).unwrap();
        let nas1 = &cfg.teap.as_ref().unwrap().clients["nas1"];
        assert_eq!(nas1.secret_env.as_deref(), Some("NAS1_SECRET"));
        std::fs::write(
            &file,
            "[teap.clients.nas1]\naddress = \"192.0.2.10\"\nsecret = \"testing123\"\n",
        )
        .unwrap();
        let err = ragw_runtime::config::load::<Config>(Some(&file), Vec::new()).unwrap_err();
        assert!(err.to_string().contains("secret"), "{err}");

        let env = vec![("RAGW_REGISTRAR__MAX_ATEMPTS".to_string(), "3".to_string())];
        let err = ragw_runtime::config::load::<Config>(None, env).unwrap_err();
        assert!(
            err.to_string().contains("RAGW_REGISTRAR__MAX_ATEMPTS")
                || err.to_string().contains("max_atempts"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_profile_is_refused_with_its_name() {
        let mut cfg: Config = ragw_runtime::config::load(None, Vec::new()).unwrap();
        cfg.profiles.push(Profile::with_defaults(
            "simpleenroll",
            "devices.example.com",
        ));
        let err = cfg.validate().unwrap_err();
        assert!(format!("{err:#}").contains("simpleenroll"));
    }
}
