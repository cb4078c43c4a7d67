//! One upstream ACME CA: its directory, the shared account, and the parent-domain
//! pre-authorizations (RFC 8555 §7.4.1 with RFC 9444 `subdomainAuthAllowed`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Mutex, OnceCell};

use crate::WorkerError;
use crate::acme_http::{AcmeHttp, RawSigner};
use crate::dns::DnsProvider;

fn default_contact() -> Vec<String> {
    Vec::new()
}

/// Where a profile's certificates come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Profiles served by this CA; empty means every profile without a more specific upstream.
    #[serde(default)]
    pub profiles: Vec<String>,
    pub directory_url: String,
    /// PEM file with the CA certificates to trust for a private CA; the web PKI otherwise.
    pub ca_trust: Option<PathBuf>,
    #[serde(default = "default_contact")]
    pub contact: Vec<String>,
    /// External Account Binding key id; the HMAC key (base64url) is read from `eab_hmac_file`.
    pub eab_kid: Option<String>,
    pub eab_hmac_file: Option<PathBuf>,
    /// Account credentials, created on first use (mode 0600) and shared by every worker that
    /// mounts the same file.
    pub account_file: PathBuf,
    /// Pre-authorize the parent domain when the CA offers newAuthz (default true).
    #[serde(default = "yes")]
    pub preauthorize: bool,
    /// Re-authorize the parent domain this long before its authorization expires.
    #[serde(default = "default_renew_before")]
    pub preauth_renew_before_hours: u64,
}

fn yes() -> bool {
    true
}

fn default_renew_before() -> u64 {
    24
}

pub struct Upstream {
    pub config: UpstreamConfig,
    pub http: AcmeHttp,
    directory: OnceCell<Value>,
    account: OnceCell<(Account, Arc<RawSigner>)>,
    /// Parent domain → expiry (Unix seconds) of its valid subdomain authorization.
    preauth: Mutex<HashMap<String, i64>>,
}

fn now_secs() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl Upstream {
    pub fn new(config: UpstreamConfig, http: AcmeHttp) -> Self {
        Upstream {
            config,
            http,
            directory: OnceCell::new(),
            account: OnceCell::new(),
            preauth: Mutex::new(HashMap::new()),
        }
    }

    pub fn serves(&self, profile: &str) -> bool {
        self.config.profiles.is_empty() || self.config.profiles.iter().any(|p| p == profile)
    }

    pub async fn directory(&self) -> Result<&Value, WorkerError> {
        self.directory
            .get_or_try_init(|| async {
                let d = self.http.get_json(&self.config.directory_url).await?;
                self.http.learn_directory(&d);
                Ok::<Value, WorkerError>(d)
            })
            .await
    }

    pub async fn new_authz_url(&self) -> Result<Option<String>, WorkerError> {
        Ok(self
            .directory()
            .await?
            .get("newAuthz")
            .and_then(Value::as_str)
            .map(str::to_string))
    }

    /// The account, loaded from its file or created once and saved 0600.
    pub async fn account(&self) -> Result<&(Account, Arc<RawSigner>), WorkerError> {
        self.account
            .get_or_try_init(|| async {
                let dir = self.directory().await?;
                let new_nonce = dir
                    .get("newNonce")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        WorkerError::Config("the ACME directory has no newNonce".into())
                    })?
                    .to_string();
                let builder = Account::builder_with_http(Box::new(self.http.clone()));
                let path = &self.config.account_file;
                let credentials: AccountCredentials = match tokio::fs::read(path).await {
                    Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                        WorkerError::Config(format!("account file {}: {e}", path.display()))
                    })?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        let contacts: Vec<&str> =
                            self.config.contact.iter().map(String::as_str).collect();
                        let eab = match (&self.config.eab_kid, &self.config.eab_hmac_file) {
                            (Some(kid), Some(file)) => {
                                let text = tokio::fs::read_to_string(file).await.map_err(|e| {
                                    WorkerError::Config(format!(
                                        "EAB HMAC file {}: {e}",
                                        file.display()
                                    ))
                                })?;
                                let key = base64::Engine::decode(
                                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                                    text.trim().trim_end_matches('='),
                                )
                                .map_err(|_| {
                                    WorkerError::Config("the EAB HMAC key is not base64url".into())
                                })?;
                                Some(ExternalAccountKey::new(kid.clone(), &key))
                            }
                            (None, None) => None,
                            _ => {
                                return Err(WorkerError::Config(
                                    "EAB needs both eab_kid and eab_hmac_file".into(),
                                ));
                            }
                        };
                        let (_, credentials) =
                            Account::builder_with_http(Box::new(self.http.clone()))
                                .create(
                                    &NewAccount {
                                        contact: &contacts,
                                        terms_of_service_agreed: true,
                                        only_return_existing: false,
                                    },
                                    self.config.directory_url.clone(),
                                    eab.as_ref(),
                                )
                                .await
                                .map_err(WorkerError::from_acme)?;
                        let json = serde_json::to_vec(&credentials).map_err(|e| {
                            WorkerError::Config(format!("account credentials: {e}"))
                        })?;
                        ragw_runtime::identity::write_private_file(path, &json).map_err(|e| {
                            WorkerError::Config(format!(
                                "saving the account to {}: {e}",
                                path.display()
                            ))
                        })?;
                        tracing::info!(file = %path.display(), "created an ACME account");
                        credentials
                    }
                    Err(e) => {
                        return Err(WorkerError::Config(format!(
                            "account file {}: {e}",
                            path.display()
                        )));
                    }
                };
                let key = credentials.private_key().secret_pkcs8_der().to_vec();
                let account = builder
                    .from_credentials(credentials)
                    .await
                    .map_err(WorkerError::from_acme)?;
                let signer = RawSigner::new(account.id(), &key, &new_nonce)?;
                Ok::<_, WorkerError>((account, Arc::new(signer)))
            })
            .await
    }

    /// Makes sure `parent` has a valid authorization covering its subdomains. Returns false
    /// when this CA has no newAuthz (the caller then answers dns-01 per name).
    pub async fn ensure_parent_authorization(
        &self,
        parent: &str,
        dns: &dyn DnsProvider,
    ) -> Result<bool, WorkerError> {
        if !self.config.preauthorize {
            return Ok(false);
        }
        let Some(new_authz) = self.new_authz_url().await? else {
            return Ok(false);
        };
        let renew_before =
            i64::try_from(self.config.preauth_renew_before_hours * 3600).unwrap_or(i64::MAX);
        // One pre-authorization at a time per upstream: concurrent jobs wait for it instead of
        // each authorizing the parent again.
        let mut cache = self.preauth.lock().await;
        if cache
            .get(parent)
            .is_some_and(|exp| *exp - renew_before > now_secs())
        {
            return Ok(true);
        }
        let (account, signer) = self.account().await?;
        let (parts, authz) = signer
            .post(
                &self.http,
                &new_authz,
                Some(&json!({"identifier": {"type": "dns", "value": parent, "subdomainAuthAllowed": true}})),
            )
            .await?;
        let authz_url = parts
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| WorkerError::Http("newAuthz answered without a Location".into()))?;
        let authz = if authz.get("status").and_then(Value::as_str) == Some("valid") {
            authz
        } else {
            self.validate_authorization(account, signer, &authz_url, &authz, parent, dns)
                .await?
        };
        if authz.get("subdomainAuthAllowed").and_then(Value::as_bool) != Some(true) {
            return Err(WorkerError::Acme {
                problem_type: "urn:ietf:params:acme:error:rejectedIdentifier".into(),
                detail: format!("the CA authorized {parent} but not its subdomains (RFC 9444)"),
                status: 403,
            });
        }
        let expires = authz
            .get("expires")
            .and_then(Value::as_str)
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
            .map(|t| t.unix_timestamp())
            .unwrap_or_else(|| now_secs() + 3600);
        tracing::info!(parent, expires, "parent domain pre-authorized");
        cache.insert(parent.to_string(), expires);
        Ok(true)
    }

    async fn validate_authorization(
        &self,
        account: &Account,
        signer: &RawSigner,
        authz_url: &str,
        authz: &Value,
        parent: &str,
        dns: &dyn DnsProvider,
    ) -> Result<Value, WorkerError> {
        let challenge = authz
            .get("challenges")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some("dns-01"))
            })
            .ok_or_else(|| {
                WorkerError::Http(format!(
                    "the authorization for {parent} offers no dns-01 challenge"
                ))
            })?;
        let token = challenge
            .get("token")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let url = challenge
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| WorkerError::Http("dns-01 challenge without a url".into()))?;
        let key_authorization = format!("{token}.{}", account.key_thumbprint());
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key_authorization.as_bytes());
        let value = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            digest.as_ref(),
        );
        let record = format!("_acme-challenge.{parent}");
        dns.add_txt(&record, &value)
            .await
            .map_err(|e| WorkerError::Dns(e.to_string()))?;
        let result = async {
            signer.post(&self.http, url, Some(&json!({}))).await?;
            let mut delay = Duration::from_millis(250);
            for _ in 0..40 {
                tokio::time::sleep(delay).await;
                let (_, state) = signer.post(&self.http, authz_url, None).await?;
                match state.get("status").and_then(Value::as_str) {
                    Some("valid") => return Ok(state),
                    Some("pending") | Some("processing") => {}
                    other => {
                        let detail = state
                            .get("challenges")
                            .and_then(Value::as_array)
                            .and_then(|cs| cs.iter().find_map(|c| c.get("error")))
                            .cloned()
                            .unwrap_or(Value::Null);
                        return Err(WorkerError::Acme {
                            problem_type: detail
                                .get("type")
                                .and_then(Value::as_str)
                                .unwrap_or("urn:ietf:params:acme:error:unauthorized")
                                .to_string(),
                            detail: format!(
                                "authorization of {parent} ended {}: {}",
                                other.unwrap_or("without a status"),
                                detail.get("detail").and_then(Value::as_str).unwrap_or("")
                            ),
                            status: 403,
                        });
                    }
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(WorkerError::Http(format!(
                "the authorization of {parent} did not complete in time"
            )))
        }
        .await;
        // Removed whatever happened: a stale TXT record helps no one.
        if let Err(e) = dns.remove_txt(&record, &value).await {
            tracing::warn!(error = %e, record, "could not remove a challenge record");
        }
        result
    }
}
