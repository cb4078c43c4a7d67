//! One upstream ACME CA: its directory, the shared account, and the parent-domain
//! pre-authorizations (RFC 8555 §7.4.1 with RFC 9444 `subdomainAuthAllowed`).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use instant_acme::{Account, AccountCredentials, ExternalAccountKey, NewAccount, Order};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Mutex, OnceCell};

use crate::WorkerError;
use crate::acme_http::{AcmeHttp, RawSigner};
use crate::dns::DnsProvider;
use crate::steps::{Step, StepRecorder};
use ragw_proto::registrar::v1 as pb;

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
    /// The CA's order profile (draft-ietf-acme-profiles) for each set of extended key usages
    /// a ragw profile asks for, keyed `serverAuth`, `clientAuth` or `serverAuth+clientAuth`.
    /// Unset keys use the local CA's names (`server`, `client`, `server-client`).
    #[serde(default)]
    pub order_profiles: BTreeMap<String, String>,
}

/// The key of [`UpstreamConfig::order_profiles`] for a set of extended key usages: serverAuth
/// first, each once, whatever order the profile lists them in.
pub fn eku_set_key(ekus: &[String]) -> String {
    let mut known: Vec<&str> = ["serverAuth", "clientAuth"]
        .into_iter()
        .filter(|k| ekus.iter().any(|e| e == k))
        .collect();
    known.extend(
        ekus.iter()
            .map(String::as_str)
            .filter(|e| !matches!(*e, "serverAuth" | "clientAuth")),
    );
    known.join("+")
}

/// [`Upstream::order_profile`] without the directory fetch: `listed` are the names of the
/// directory's `meta.profiles`.
pub fn choose_order_profile(
    configured: &BTreeMap<String, String>,
    ekus: &[String],
    listed: &[String],
    directory_url: &str,
) -> Result<Option<String>, WorkerError> {
    if ekus.is_empty() {
        return Ok(None);
    }
    let key = eku_set_key(ekus);
    let wanted = configured
        .get(&key)
        .map(String::as_str)
        .or_else(|| default_order_profile(&key));
    if let Some(name) = wanted.filter(|n| listed.iter().any(|l| l == n)) {
        return Ok(Some(name.to_string()));
    }
    if key == "serverAuth" || listed.is_empty() {
        return Ok(None);
    }
    Err(WorkerError::Acme {
        problem_type: "urn:ietf:params:acme:error:invalidProfile".into(),
        detail: format!(
            "the CA at {directory_url} cannot issue {key} certificates: it offers the profiles \
             [{}] and none is mapped to {key} (looked for {:?}); map one in order_profiles or \
             send this ragw profile to a CA that issues them (the local CA or an enterprise CA)",
            listed.join(", "),
            wanted.unwrap_or("")
        ),
        status: 400,
        retry_after: None,
    })
}

/// The local CA's profile names, used when `order_profiles` does not name one.
fn default_order_profile(key: &str) -> Option<&'static str> {
    match key {
        "serverAuth" => Some("server"),
        "clientAuth" => Some("client"),
        "serverAuth+clientAuth" => Some("server-client"),
        _ => None,
    }
}

fn yes() -> bool {
    true
}

fn default_renew_before() -> u64 {
    24
}

/// A recorded order, as the CA describes it now.
pub enum RecordedOrder {
    /// Still usable: the job resumes it.
    Usable(Box<Order>),
    /// Definitively gone or unusable (why): the job places a new order.
    Gone(String),
}

pub struct Upstream {
    pub config: UpstreamConfig,
    pub http: AcmeHttp,
    directory: OnceCell<Value>,
    account: OnceCell<(Account, Arc<RawSigner>)>,
    /// Parent domain → when (Unix seconds) its valid subdomain authorization is renewed.
    preauth: Mutex<HashMap<String, i64>>,
    /// Where account, pre-authorization and challenge steps are audited (none in unit tests).
    steps: Option<StepRecorder>,
    /// Until when the CA asked (Retry-After on 429/503) not to be contacted.
    paused_until: std::sync::Mutex<Option<std::time::Instant>>,
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
            steps: None,
            paused_until: std::sync::Mutex::new(None),
        }
    }

    /// Remembers a Retry-After the CA sent, so jobs that start meanwhile do not contact it.
    pub fn back_off(&self, wait: Duration) {
        let until = std::time::Instant::now() + wait;
        if let Ok(mut paused) = self.paused_until.lock() {
            *paused = Some(paused.map_or(until, |p| p.max(until)));
        }
    }

    /// How much longer the CA asked not to be contacted, if it did.
    pub fn backing_off(&self) -> Option<Duration> {
        let until = (*self.paused_until.lock().ok()?)?;
        until
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// Audits this upstream's account, pre-authorization and challenge steps through `steps`.
    pub fn with_steps(mut self, steps: StepRecorder) -> Self {
        self.steps = Some(steps);
        self
    }

    fn step<'a>(&'a self, kind: pb::WorkerStep, subject: &'a str, detail: &'a str) -> Step<'a> {
        Step {
            kind,
            job: None,
            directory_url: &self.config.directory_url,
            subject,
            detail,
            expires_unix_micros: 0,
        }
    }

    async fn record(&self, step: Step<'_>) -> Result<(), WorkerError> {
        match &self.steps {
            Some(steps) => steps.record(step).await,
            None => Ok(()),
        }
    }

    async fn record_done(&self, step: Step<'_>) {
        if let Some(steps) = &self.steps {
            steps.record_done(step).await;
        }
    }

    pub fn serves(&self, profile: &str) -> bool {
        self.config.profiles.is_empty() || self.config.profiles.iter().any(|p| p == profile)
    }

    /// The order profile to ask for so the certificate carries `ekus`; `None` asks for the
    /// CA's default. A CA that lists profiles (draft-ietf-acme-profiles) but none for these
    /// EKUs cannot issue them: refused with `invalidProfile` before anything is ordered. A
    /// serverAuth-only certificate is what every CA's default issues, and a CA without the
    /// profiles extension is asked for its default; the issued leaf is checked either way.
    pub async fn order_profile(&self, ekus: &[String]) -> Result<Option<String>, WorkerError> {
        if ekus.is_empty() {
            return Ok(None);
        }
        let listed: Vec<String> = self
            .directory()
            .await?
            .pointer("/meta/profiles")
            .and_then(Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        choose_order_profile(
            &self.config.order_profiles,
            ekus,
            &listed,
            &self.config.directory_url,
        )
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

    /// The account, loaded from its file or created once and published 0600 (see
    /// [`publish_new_file`]: workers starting together on an empty volume agree on one account).
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
                    Ok(bytes) => parse_credentials(path, &bytes)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        self.create_account().await?
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

    /// Registers a new account and publishes its credentials, unless another worker sharing
    /// the file published first: then that account is used and ours is deactivated.
    async fn create_account(&self) -> Result<AccountCredentials, WorkerError> {
        let path = self.config.account_file.clone();
        let contacts: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
        let eab = match (&self.config.eab_kid, &self.config.eab_hmac_file) {
            (Some(kid), Some(file)) => {
                let text = tokio::fs::read_to_string(file).await.map_err(|e| {
                    WorkerError::Config(format!("EAB HMAC file {}: {e}", file.display()))
                })?;
                let key = base64::Engine::decode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    text.trim().trim_end_matches('='),
                )
                .map_err(|_| WorkerError::Config("the EAB HMAC key is not base64url".into()))?;
                Some(ExternalAccountKey::new(kid.clone(), &key))
            }
            (None, None) => None,
            _ => {
                return Err(WorkerError::Config(
                    "EAB needs both eab_kid and eab_hmac_file".into(),
                ));
            }
        };
        let (ours, credentials) = Account::builder_with_http(Box::new(self.http.clone()))
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
        let saved = tokio::task::spawn_blocking(move || save_credentials(&path, credentials))
            .await
            .map_err(|e| WorkerError::Config(format!("saving the account: {e}")))
            .and_then(|r| r);
        let (credentials, published) = match saved {
            Ok(s) => s,
            Err(e) => {
                // Nobody can use an account whose key was not kept: deactivate it, or every
                // retry would leave another one behind on the CA.
                if let Err(d) = ours.deactivate().await {
                    tracing::warn!(error = %d, "could not deactivate an account whose credentials were not saved");
                }
                return Err(e);
            }
        };
        let file = self.config.account_file.display();
        if published {
            tracing::info!(file = %file, "created an ACME account");
            let detail = format!("credentials in {file}");
            self.record_done(self.step(pb::WorkerStep::AccountCreated, ours.id(), &detail))
                .await;
        } else {
            tracing::info!(file = %file, "another worker created the ACME account first; using it");
            // Ours was never used; leaving it active would only clutter the CA.
            if let Err(e) = ours.deactivate().await {
                tracing::debug!(error = %e, "could not deactivate the unused account");
            }
        }
        Ok(credentials)
    }

    /// Places an order whose identifiers name `parent` as their RFC 9444 `ancestorDomain`
    /// (RFC 9444 §4.2), so a CA holding the parent's subdomain authorization can answer with
    /// a ready order. instant-acme cannot express the field, so the request is signed here and
    /// the order handed to instant-acme for the rest of the conversation.
    pub async fn new_order_under(
        &self,
        names: &[String],
        parent: &str,
        profile: Option<&str>,
    ) -> Result<Order, WorkerError> {
        let new_order = self
            .directory()
            .await?
            .get("newOrder")
            .and_then(Value::as_str)
            .ok_or_else(|| WorkerError::Config("the ACME directory has no newOrder".into()))?
            .to_string();
        let (account, signer) = self.account().await?;
        let mut payload = json!({ "identifiers": order_identifiers(names, parent) });
        if let Some(profile) = profile {
            payload["profile"] = json!(profile);
        }
        let (parts, state) = signer.post(&self.http, &new_order, Some(&payload)).await?;
        let url = parts
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| WorkerError::Http("newOrder answered without a Location".into()))?;
        self.load_order(account, &url, &parts, &state).await
    }

    /// The order recorded for a job, if it can still be finished. `Gone` only when the CA says
    /// so definitively; anything that may pass (network, 5xx, rate limits) is an error, so the
    /// job is retried instead of ordering the same names again.
    pub async fn recorded_order(&self, url: &str) -> Result<RecordedOrder, WorkerError> {
        let (account, signer) = self.account().await?;
        if !self.hosts(url).await? {
            return Ok(RecordedOrder::Gone(format!(
                "it is not on the CA at {}",
                self.config.directory_url
            )));
        }
        let (parts, state) = match signer.post(&self.http, url, None).await {
            Ok(answer) => answer,
            Err(e) => {
                return match order_gone(&e) {
                    Some(why) => Ok(RecordedOrder::Gone(why)),
                    None => Err(e),
                };
            }
        };
        if let Some(why) = order_unusable(&state, now_secs()) {
            return Ok(RecordedOrder::Gone(why));
        }
        self.load_order(account, url, &parts, &state)
            .await
            .map(|o| RecordedOrder::Usable(Box::new(o)))
    }

    /// Hands an order object just received to instant-acme without asking the CA again.
    async fn load_order(
        &self,
        account: &Account,
        url: &str,
        parts: &http::response::Parts,
        state: &Value,
    ) -> Result<Order, WorkerError> {
        let _primed = self.http.prime(url, parts, state)?;
        account
            .order(url.to_string())
            .await
            .map_err(WorkerError::from_acme)
    }

    /// Whether `url` is on this CA (the origin of its directory or newOrder), so an order
    /// recorded against a CA the operator has since replaced is not fetched forever.
    async fn hosts(&self, url: &str) -> Result<bool, WorkerError> {
        let Some(theirs) = origin(url) else {
            return Ok(false);
        };
        let new_order = self
            .directory()
            .await?
            .get("newOrder")
            .and_then(Value::as_str)
            .and_then(origin);
        Ok(origin(&self.config.directory_url).as_ref() == Some(&theirs)
            || new_order.as_ref() == Some(&theirs))
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
            .is_some_and(|renew_at| *renew_at > now_secs())
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
                retry_after: None,
            });
        }
        let expires = authz
            .get("expires")
            .and_then(Value::as_str)
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
            .map(|t| t.unix_timestamp())
            .unwrap_or_else(|| now_secs() + 3600);
        tracing::info!(parent, expires, "parent domain pre-authorized");
        let mut step = self.step(pb::WorkerStep::ParentPreauthorized, parent, &authz_url);
        step.expires_unix_micros = expires.saturating_mul(1_000_000);
        self.record_done(step).await;
        cache.insert(
            parent.to_string(),
            renewal_time(now_secs(), expires, renew_before),
        );
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
        let why = format!("pre-authorization of {parent} and its subdomains");
        self.record(self.step(pb::WorkerStep::ChallengePublished, &record, &why))
            .await?;
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
                            retry_after: None,
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
        match dns.remove_txt(&record, &value).await {
            Ok(()) => {
                self.record_done(self.step(pb::WorkerStep::ChallengeRemoved, &record, &why))
                    .await;
            }
            Err(e) => tracing::warn!(error = %e, record, "could not remove a challenge record"),
        }
        result
    }
}

/// When to authorize the parent again: `renew_before` ahead of the expiry, but never before
/// half of the authorization's remaining life, so a CA whose authorizations live shorter than
/// `renew_before` does not get a newAuthz for every job.
fn renewal_time(now: i64, expires: i64, renew_before: i64) -> i64 {
    expires
        .saturating_sub(renew_before)
        .max(now.saturating_add(expires.saturating_sub(now) / 2))
}

/// RFC 9444 §4.2 identifiers: each name under `parent` carries it as `ancestorDomain`; a name
/// that is not a proper subdomain (the parent itself) goes without, as a CA must refuse it.
fn order_identifiers(names: &[String], parent: &str) -> Vec<Value> {
    names
        .iter()
        .map(|name| {
            if is_proper_subdomain(name.trim_start_matches("*."), parent) {
                json!({"type": "dns", "value": name, "ancestorDomain": parent})
            } else {
                json!({"type": "dns", "value": name})
            }
        })
        .collect()
}

/// Label-wise: `a.example.com` is under `example.com`, `aexample.com` is not.
fn is_proper_subdomain(name: &str, parent: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let parent = parent.trim_end_matches('.').to_ascii_lowercase();
    !parent.is_empty()
        && name.len() > parent.len() + 1
        && name.ends_with(&parent)
        && name.as_bytes()[name.len() - parent.len() - 1] == b'.'
}

/// Scheme and authority of a URL, compared case-insensitively.
fn origin(url: &str) -> Option<(String, String)> {
    let uri = url.parse::<http::Uri>().ok()?;
    Some((
        uri.scheme_str()?.to_ascii_lowercase(),
        uri.authority()?.as_str().to_ascii_lowercase(),
    ))
}

/// Why an error fetching an order means it will never be usable: the CA does not have it
/// (404, 410) or it belongs to another account (RFC 8555 §6.7 `unauthorized`, 403).
fn order_gone(e: &WorkerError) -> Option<String> {
    let WorkerError::Acme {
        problem_type,
        detail,
        status,
        ..
    } = e
    else {
        return None;
    };
    match status {
        404 | 410 => Some(format!("the CA answers HTTP {status}: {detail}")),
        403 if problem_type == "urn:ietf:params:acme:error:unauthorized" => Some(format!(
            "the CA refuses this account access to it: {detail}"
        )),
        _ => None,
    }
}

/// Why an order object can no longer lead to a certificate: `invalid` (RFC 8555 §7.1.6; an
/// expired order becomes invalid, some CAs say `expired`), or still pending or ready past its
/// `expires`. A `valid` or `processing` order is kept whatever its expiry: the certificate is
/// there or on its way.
fn order_unusable(state: &Value, now: i64) -> Option<String> {
    let status = state.get("status").and_then(Value::as_str).unwrap_or("");
    match status {
        "invalid" | "expired" => Some(format!("its status is {status}")),
        "pending" | "ready" => {
            let expires = state
                .get("expires")
                .and_then(Value::as_str)
                .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())?;
            (expires.unix_timestamp() <= now).then(|| format!("it expired at {expires}"))
        }
        _ => None,
    }
}

fn parse_credentials(path: &Path, bytes: &[u8]) -> Result<AccountCredentials, WorkerError> {
    serde_json::from_slice(bytes)
        .map_err(|e| WorkerError::Config(format!("account file {}: {e}", path.display())))
}

/// Publishes `credentials` at `path` unless another creator did first. Returns the credentials
/// the file holds afterwards, and whether they are ours.
fn save_credentials(
    path: &Path,
    credentials: AccountCredentials,
) -> Result<(AccountCredentials, bool), WorkerError> {
    let json = serde_json::to_vec(&credentials)
        .map_err(|e| WorkerError::Config(format!("account credentials: {e}")))?;
    let saving = |e: io::Error| {
        WorkerError::Config(format!("saving the account to {}: {e}", path.display()))
    };
    match publish_new_file(path, &json).map_err(saving)? {
        Publication::Ours => Ok((credentials, true)),
        Publication::Existing(bytes) => Ok((parse_credentials(path, &bytes)?, false)),
    }
}

/// How [`publish_new_file`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Publication {
    /// Our contents are at the path.
    Ours,
    /// The path already held these contents; ours were discarded.
    Existing(Vec<u8>),
}

/// Makes temporary names unique between threads of one process (the pid covers processes).
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `contents` to `path` (mode 0600) unless a file is already there, without ever
/// replacing it or showing a partial file: the contents go to a unique temporary file in the
/// same directory first, which is then hard-linked to `path`. `link(2)` fails instead of
/// replacing an existing name, so of several concurrent creators exactly one wins and the
/// others read the winner's complete file.
fn publish_new_file(path: &Path, contents: &[u8]) -> io::Result<Publication> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?
        .to_string_lossy()
        .into_owned();
    fs::create_dir_all(&dir)?;
    let (tmp, mut file) = loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(file) => break (tmp, file),
            // Left behind by a crashed process that had our pid.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let result = (|| {
        // A restrictive umask could leave the owner without read access.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)?;
        file.sync_all()?;
        match fs::hard_link(&tmp, path) {
            Ok(()) => {
                // The new name survives a crash only once the directory is synced; failing
                // that only costs durability, not correctness.
                if let Err(e) = fs::File::open(&dir).and_then(|d| d.sync_all()) {
                    tracing::debug!(error = %e, dir = %dir.display(), "could not sync the directory");
                }
                Ok(Publication::Ours)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Ok(Publication::Existing(fs::read(path)?))
            }
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("publishing by hard link (the volume must support hard links): {e}"),
            )),
        }
    })();
    if let Err(e) = fs::remove_file(&tmp) {
        tracing::debug!(error = %e, file = %tmp.display(), "could not remove a temporary file");
    }
    result
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::test_support::{Canned, FakeServer, account_json, acme_directory};
    use prometheus_client::metrics::family::Family;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_order_profile_follows_the_ekus_and_the_directory() {
        let none = BTreeMap::new();
        let local = strings(&["server", "server-client"]);
        let url = "https://ca.test/directory";
        // The local CA: each EKU set gets its profile, whatever order the EKUs came in.
        let pick = |ekus: &[&str], listed: &[String], map: &BTreeMap<String, String>| {
            choose_order_profile(map, &strings(ekus), listed, url)
        };
        assert_eq!(
            pick(&["serverAuth"], &local, &none).unwrap().as_deref(),
            Some("server")
        );
        assert_eq!(
            pick(&["clientAuth", "serverAuth"], &local, &none)
                .unwrap()
                .as_deref(),
            Some("server-client")
        );
        // No EKUs (an older registrar): the CA's default, as before.
        assert_eq!(pick(&[], &local, &none).unwrap(), None);
        // A CA without the profiles extension: its default; the leaf is checked afterwards.
        assert_eq!(
            pick(&["serverAuth", "clientAuth"], &[], &none).unwrap(),
            None
        );
        // A public CA whose profiles are all server-only: serverAuth is its default ...
        let public = strings(&["classic", "tlsserver", "shortlived"]);
        assert_eq!(pick(&["serverAuth"], &public, &none).unwrap(), None);
        // ... and clientAuth is refused before anything is ordered, with a mapped problem.
        let e = pick(&["serverAuth", "clientAuth"], &public, &none).unwrap_err();
        match &e {
            WorkerError::Acme {
                problem_type,
                detail,
                ..
            } => {
                assert_eq!(problem_type, "urn:ietf:params:acme:error:invalidProfile");
                assert!(detail.contains("serverAuth+clientAuth"), "{detail}");
                assert!(detail.contains("tlsserver"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        // An operator's mapping picks the CA's own name for the set.
        let mut mapped = BTreeMap::new();
        mapped.insert("serverAuth+clientAuth".to_string(), "classic".to_string());
        assert_eq!(
            pick(&["serverAuth", "clientAuth"], &public, &mapped)
                .unwrap()
                .as_deref(),
            Some("classic")
        );
    }

    #[test]
    fn identifiers_under_the_parent_name_it_as_their_ancestor() {
        let names = [
            "d1.devices.example.com",
            "D2.Devices.Example.COM",
            "*.d3.devices.example.com",
            "devices.example.com",
            "xdevices.example.com",
            "other.test",
        ]
        .map(String::from);
        let ids = order_identifiers(&names, "devices.example.com");
        let ancestors: Vec<Option<&str>> = ids
            .iter()
            .map(|i| i.get("ancestorDomain").and_then(Value::as_str))
            .collect();
        let p = Some("devices.example.com");
        assert_eq!(ancestors, [p, p, p, None, None, None]);
        assert_eq!(
            ids[0],
            json!({"type": "dns", "value": "d1.devices.example.com", "ancestorDomain": "devices.example.com"})
        );
    }

    #[test]
    fn only_a_definitive_answer_makes_a_recorded_order_gone() {
        let acme = |problem: &str, status: u16| WorkerError::Acme {
            problem_type: format!("urn:ietf:params:acme:error:{problem}"),
            detail: "d".into(),
            status,
            retry_after: None,
        };
        assert!(order_gone(&acme("malformed", 404)).is_some());
        assert!(order_gone(&acme("", 410)).is_some());
        assert!(order_gone(&acme("unauthorized", 403)).is_some());
        for passing in [
            acme("serverInternal", 500),
            acme("", 502),
            acme("rateLimited", 429),
            acme("badNonce", 400),
            acme("malformed", 400),
            WorkerError::Http("connection reset".into()),
        ] {
            assert!(order_gone(&passing).is_none(), "{passing:?}");
        }

        let now = 1_700_000_000;
        let past = "2023-01-01T00:00:00Z";
        let future = "2099-01-01T00:00:00Z";
        let state = |status: &str, expires: &str| json!({"status": status, "expires": expires});
        assert!(order_unusable(&state("invalid", future), now).is_some());
        assert!(order_unusable(&state("expired", future), now).is_some());
        assert!(order_unusable(&state("pending", past), now).is_some());
        assert!(order_unusable(&state("ready", past), now).is_some());
        assert!(order_unusable(&state("ready", future), now).is_none());
        assert!(order_unusable(&state("valid", past), now).is_none());
        assert!(order_unusable(&state("processing", past), now).is_none());
        assert!(order_unusable(&json!({"status": "pending"}), now).is_none());
    }

    #[test]
    fn origins_compare_scheme_and_authority() {
        assert_eq!(
            origin("https://CA.example:14000/order/1"),
            origin("https://ca.example:14000/dir")
        );
        assert_ne!(
            origin("https://ca.example/order/1"),
            origin("http://ca.example/dir")
        );
        assert_ne!(
            origin("https://old.example/order/1"),
            origin("https://ca.example/dir")
        );
        assert_eq!(origin("not a url"), None);
    }

    #[test]
    fn concurrent_creators_publish_one_file_and_readers_never_see_part_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("account.json");
        let creators = 8;
        let barrier = std::sync::Barrier::new(creators + 1);
        let done = std::sync::atomic::AtomicBool::new(false);
        // Large enough that a write could be observed half-way if it were published early.
        let contents: Vec<Vec<u8>> = (0..creators)
            .map(|i| format!("{i}:{}", "x".repeat(256 * 1024)).into_bytes())
            .collect();
        let (results, reads) = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                barrier.wait();
                let mut reads = Vec::new();
                while !done.load(Ordering::SeqCst) {
                    if let Ok(bytes) = fs::read(&path) {
                        reads.push(bytes);
                    }
                }
                reads
            });
            let handles: Vec<_> = contents
                .iter()
                .map(|c| {
                    s.spawn(|| {
                        barrier.wait();
                        publish_new_file(&path, c).unwrap()
                    })
                })
                .collect();
            let results: Vec<Publication> =
                handles.into_iter().map(|h| h.join().unwrap()).collect();
            done.store(true, Ordering::SeqCst);
            (results, reader.join().unwrap())
        });
        let on_disk = fs::read(&path).unwrap();
        let winners = results.iter().filter(|r| **r == Publication::Ours).count();
        assert_eq!(winners, 1, "{results:?}");
        for (mine, result) in contents.iter().zip(&results) {
            let ends_with = match result {
                Publication::Ours => mine,
                Publication::Existing(theirs) => theirs,
            };
            assert_eq!(ends_with, &on_disk);
        }
        for read in reads {
            assert_eq!(read, on_disk, "a reader saw a partial or different file");
        }
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let left: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["account.json"], "temporary files left behind");

        // An existing file is never replaced.
        assert_eq!(
            publish_new_file(&path, b"late").unwrap(),
            Publication::Existing(on_disk.clone())
        );
        assert_eq!(fs::read(&path).unwrap(), on_disk);
    }

    #[test]
    fn racing_workers_end_up_with_the_same_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("account.json");
        let workers = 6;
        let barrier = std::sync::Barrier::new(workers);
        let kept: Vec<(String, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let ours: AccountCredentials =
                            serde_json::from_slice(&account_json("https://ca.example")).unwrap();
                        barrier.wait();
                        let (kept, published) = save_credentials(&path, ours).unwrap();
                        (serde_json::to_string(&kept).unwrap(), published)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(kept.iter().filter(|(_, published)| *published).count(), 1);
        let on_disk = fs::read_to_string(&path).unwrap();
        for (credentials, _) in &kept {
            assert_eq!(credentials, &on_disk);
        }
    }

    fn upstream(base: &str, dir: &Path) -> Upstream {
        let account_file = dir.join("account.json");
        fs::write(&account_file, account_json(base)).unwrap();
        let config: UpstreamConfig = serde_json::from_value(json!({
            "directory_url": format!("{base}/dir"),
            "account_file": account_file,
        }))
        .unwrap();
        Upstream::new(config, AcmeHttp::new(None, Family::default()).unwrap())
    }

    fn order(base: &str, status: &str) -> Value {
        json!({
            "status": status,
            "expires": "2099-01-01T00:00:00Z",
            "identifiers": [{"type": "dns", "value": "d1.devices.example.com"}],
            "authorizations": [format!("{base}/authz/1")],
            "finalize": format!("{base}/order/1/finalize"),
        })
    }

    #[test]
    fn a_retry_after_pauses_the_upstream_for_every_job() {
        let dir = tempfile::tempdir().unwrap();
        let up = upstream("https://ca.example", dir.path());
        assert!(up.backing_off().is_none());
        up.back_off(Duration::from_secs(120));
        // A shorter Retry-After from a later answer does not shorten the pause.
        up.back_off(Duration::from_secs(5));
        let left = up.backing_off().unwrap();
        assert!(left > Duration::from_secs(60) && left <= Duration::from_secs(120));
        up.back_off(Duration::ZERO);
        assert!(up.backing_off().is_some());
    }

    #[test]
    fn the_parent_is_renewed_ahead_of_expiry_but_not_for_every_job() {
        let day = 86_400;
        // A 30-day authorization with the default 24 h margin: renewed a day early.
        assert_eq!(renewal_time(0, 30 * day, day), 29 * day);
        // An 8-hour authorization: renewed half-way instead of at once.
        assert_eq!(renewal_time(0, 8 * 3600, day), 4 * 3600);
        // Already expired (clock skew): renewed at the next job.
        assert!(renewal_time(100, 50, day) <= 100);
    }

    #[tokio::test]
    async fn signed_requests_reuse_replay_nonces_and_retry_bad_ones() {
        let calls = Arc::new(AtomicU64::new(0));
        let counter = calls.clone();
        let server = FakeServer::start(acme_directory(move |_, seen| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            match seen.path.as_str() {
                // Two badNonce answers in a row, then success: within the three attempts.
                "/flaky" if n < 2 => {
                    Canned::json(400, json!({"type": "urn:ietf:params:acme:error:badNonce"}))
                        .header("Replay-Nonce", &format!("from-bad-{n}"))
                }
                _ => Canned::json(200, json!({"ok": true}))
                    .header("Replay-Nonce", &format!("from-ok-{n}")),
            }
        }))
        .await;
        let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        let signer = RawSigner::new(
            &format!("{}/acct/1", server.base),
            pkcs8.as_ref(),
            &format!("{}/nonce", server.base),
        )
        .unwrap();
        let http = AcmeHttp::new(None, Family::default()).unwrap();
        signer
            .post(&http, &format!("{}/flaky", server.base), None)
            .await
            .unwrap();
        signer
            .post(&http, &format!("{}/next", server.base), None)
            .await
            .unwrap();
        assert_eq!(server.count("HEAD", "/nonce"), 1, "one newNonce for both");
        let nonces: Vec<String> = server
            .seen()
            .iter()
            .filter(|s| s.method == "POST")
            .map(|s| s.protected()["nonce"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            nonces,
            ["bm9uY2U", "from-bad-0", "from-bad-1", "from-ok-2"],
            "each request signs the nonce of the answer before it"
        );
    }

    #[tokio::test]
    async fn device_orders_name_the_parent_and_cost_one_post() {
        let server = FakeServer::start(acme_directory(|base, seen| match seen.path.as_str() {
            "/new-order" => Canned::json(201, order(base, "ready"))
                .header("Location", &format!("{base}/order/1"))
                .header("Replay-Nonce", "fresh"),
            _ => Canned::json(404, json!({"type": "urn:ietf:params:acme:error:malformed"})),
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let up = upstream(&server.base, dir.path());
        let names = vec!["d1.devices.example.com".to_string()];
        let mut order = up
            .new_order_under(&names, "devices.example.com", None)
            .await
            .unwrap();
        assert_eq!(order.url(), format!("{}/order/1", server.base));
        assert_eq!(order.state().status, instant_acme::OrderStatus::Ready);
        let posts: Vec<_> = server
            .seen()
            .into_iter()
            .filter(|s| s.method == "POST")
            .collect();
        assert_eq!(posts.len(), 1, "{posts:?}");
        assert_eq!(
            posts[0].payload(),
            json!({"identifiers": [{"type": "dns", "value": "d1.devices.example.com", "ancestorDomain": "devices.example.com"}]})
        );
    }

    #[tokio::test]
    async fn a_ca_listing_no_client_auth_profile_is_refused_before_any_order() {
        let server = FakeServer::start(|base, seen| match seen.path.as_str() {
            "/dir" => Canned::json(
                200,
                json!({
                    "newNonce": format!("{base}/nonce"),
                    "newAccount": format!("{base}/new-account"),
                    "newOrder": format!("{base}/new-order"),
                    "meta": {"profiles": {
                        "classic": "the default",
                        "tlsserver": "serverAuth only",
                    }},
                }),
            ),
            _ => Canned::json(404, json!({"type": "urn:ietf:params:acme:error:malformed"})),
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let up = upstream(&server.base, dir.path());
        let both = strings(&["serverAuth", "clientAuth"]);
        let e = up.order_profile(&both).await.unwrap_err();
        assert!(
            matches!(&e, WorkerError::Acme { problem_type, .. }
                if problem_type == "urn:ietf:params:acme:error:invalidProfile"),
            "{e:?}"
        );
        assert_eq!(up.order_profile(&both[..1]).await.unwrap(), None);
        assert!(
            server.seen().iter().all(|s| s.method != "POST"),
            "nothing was ordered"
        );
    }

    #[tokio::test]
    async fn the_chosen_profile_goes_into_new_order() {
        let server = FakeServer::start(acme_directory(|base, seen| match seen.path.as_str() {
            "/new-order" => Canned::json(201, order(base, "ready"))
                .header("Location", &format!("{base}/order/1"))
                .header("Replay-Nonce", "fresh"),
            _ => Canned::json(404, json!({"type": "urn:ietf:params:acme:error:malformed"})),
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let up = upstream(&server.base, dir.path());
        let names = vec!["d1.devices.example.com".to_string()];
        up.new_order_under(&names, "devices.example.com", Some("server-client"))
            .await
            .unwrap();
        let post = server
            .seen()
            .into_iter()
            .find(|s| s.method == "POST")
            .unwrap();
        assert_eq!(post.payload()["profile"], json!("server-client"));
    }

    #[tokio::test]
    async fn a_recorded_order_is_dropped_only_when_the_ca_says_it_is_gone() {
        let server = FakeServer::start(acme_directory(|base, seen| {
            match seen.path.as_str() {
                "/order/ready" => Canned::json(200, order(base, "ready")),
                "/order/invalid" => Canned::json(200, order(base, "invalid")),
                "/order/gone" => Canned::json(
                    404,
                    json!({"type": "urn:ietf:params:acme:error:malformed", "detail": "no such order"}),
                ),
                "/order/busy" => Canned::json(
                    503,
                    json!({"type": "urn:ietf:params:acme:error:serverInternal"}),
                )
                .header("Retry-After", "30"),
                // A proxy's error page, not a problem document.
                _ => Canned {
                    status: 502,
                    headers: vec![],
                    body: "<html>bad gateway</html>".into(),
                },
            }
        }))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let up = upstream(&server.base, dir.path());
        let url = |path: &str| format!("{}{path}", server.base);

        match up.recorded_order(&url("/order/ready")).await.unwrap() {
            RecordedOrder::Usable(mut o) => {
                assert_eq!(o.state().status, instant_acme::OrderStatus::Ready)
            }
            RecordedOrder::Gone(why) => panic!("{why}"),
        }
        // Loaded into instant-acme from the one answer.
        assert_eq!(server.count("POST", "/order/ready"), 1);
        for gone in ["/order/invalid", "/order/gone"] {
            assert!(
                matches!(
                    up.recorded_order(&url(gone)).await.unwrap(),
                    RecordedOrder::Gone(_)
                ),
                "{gone}"
            );
        }
        let other_ca = "https://old-ca.example/order/1";
        assert!(matches!(
            up.recorded_order(other_ca).await.unwrap(),
            RecordedOrder::Gone(_)
        ));
        let busy = up.recorded_order(&url("/order/busy")).await.err().unwrap();
        assert_eq!(busy.retry_after(), Some(Duration::from_secs(30)));
        let proxy = up.recorded_order(&url("/order/proxy")).await.err().unwrap();
        assert!(
            matches!(proxy, WorkerError::Acme { status: 502, .. }),
            "{proxy:?}"
        );
    }
}
