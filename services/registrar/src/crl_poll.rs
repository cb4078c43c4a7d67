//! Revocations made at the CA reach the registrar: every poll interval the registrar reads the
//! CRL distribution points of the unrevoked certificates it issued, fetches each CRL, checks
//! its signature against the issuer certificate stored in the chain, and marks every listed
//! certificate it issued revoked, so it can no longer re-enroll.
//!
//! The bound on how long a certificate revoked at the CA can still re-enroll is therefore the
//! poll interval plus however long the CA serves a CRL without the revocation (the local CA
//! regenerates its CRL at once on a revocation; others cache for up to their nextUpdate).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use ragw_domain::AuditDraft;
use ragw_pki::{MAX_CRL_DER_LEN, crl_distribution_points, verify_crl};
use ragw_store::Store;
use rustls_pki_types::pem::PemObject;
use serde_json::json;

/// Certificates read from the store per page.
const PAGE: u32 = 500;

#[derive(Debug, Clone)]
pub struct CrlPollSettings {
    /// Time between two polls; zero switches polling off.
    pub interval: Duration,
    /// Bound on one CRL fetch (connect, headers and body).
    pub fetch_timeout: Duration,
    /// PEM file of the CA certificates that authenticate https CRL servers; `None`: the public
    /// web PKI. Read at every poll, so it may appear after the registrar started. The CRL's
    /// own signature is what makes its content trusted; this only guards the transport.
    pub https_trust: Option<PathBuf>,
}

impl Default for CrlPollSettings {
    fn default() -> Self {
        CrlPollSettings {
            interval: Duration::from_secs(300),
            fetch_timeout: Duration::from_secs(10),
            https_trust: None,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrlFetchLabels {
    /// `ok`, `fetch_failed` (transport, status, size, timeout) or `bad_crl` (not a CRL, wrong
    /// issuer, bad signature).
    pub outcome: String,
}

#[derive(Clone, Default, Debug)]
pub struct CrlMetrics {
    pub polls: Counter,
    pub fetches: Family<CrlFetchLabels, Counter>,
    pub revoked: Counter,
}

impl CrlMetrics {
    fn fetch(&self, outcome: &str) {
        self.fetches
            .get_or_create(&CrlFetchLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

/// What one poll did, for tests and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    pub urls: usize,
    pub failed: usize,
    pub revoked: Vec<String>,
}

pub struct CrlPoller {
    store: Arc<dyn Store>,
    settings: CrlPollSettings,
    metrics: CrlMetrics,
    /// The last failure audited per URL: a URL that keeps failing the same way is audited
    /// once, not every interval (logs and metrics still count every failure).
    last_failure: Mutex<HashMap<String, String>>,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// One CRL URL and, per issuer certificate, the serials ragw issued under it that the CRL may
/// list.
type Sources = BTreeMap<String, BTreeMap<Vec<u8>, BTreeSet<String>>>;

impl CrlPoller {
    pub fn new(store: Arc<dyn Store>, settings: CrlPollSettings, metrics: CrlMetrics) -> Self {
        CrlPoller {
            store,
            settings,
            metrics,
            last_failure: Mutex::new(HashMap::new()),
        }
    }

    /// Polls every interval until `shutdown` resolves. Nothing here is fatal: failures are
    /// logged, counted and audited, and the next interval tries again.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        if self.settings.interval.is_zero() {
            tracing::info!("CRL polling is off (registrar.crl_poll_interval_seconds = 0)");
            return;
        }
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            let report = self.poll_once().await;
            tracing::debug!(?report, "CRL poll done");
        }
    }

    pub async fn poll_once(&self) -> PollReport {
        self.metrics.polls.inc();
        let mut report = PollReport::default();
        let sources = match self.sources().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "CRL poll: reading the issued certificates failed");
                return report;
            }
        };
        report.urls = sources.len();
        if sources.is_empty() {
            return report;
        }
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => {
                for url in sources.keys() {
                    self.failed(url, "fetch_failed", &e).await;
                }
                report.failed = sources.len();
                return report;
            }
        };
        for (url, issuers) in &sources {
            let der = match self.fetch(&client, url).await {
                Ok(der) => der,
                Err(e) => {
                    self.failed(url, "fetch_failed", &e).await;
                    report.failed += 1;
                    continue;
                }
            };
            let mut verified_any = false;
            let mut last_error = String::new();
            for (issuer, serials) in issuers {
                let entries = match verify_crl(&der, issuer) {
                    Ok(entries) => entries,
                    Err(e) => {
                        last_error = e.to_string();
                        continue;
                    }
                };
                verified_any = true;
                for entry in entries {
                    if !serials.contains(&entry.serial_hex) {
                        continue;
                    }
                    let actor = format!("crl:{url}");
                    match self
                        .store
                        .revoke_certificate_from_crl(&entry.serial_hex, &actor, &entry.reason)
                        .await
                    {
                        Ok(Some(_)) => {
                            tracing::info!(serial = %entry.serial_hex, reason = %entry.reason,
                                url = %url, "certificate revoked by its CA's CRL");
                            self.metrics.revoked.inc();
                            report.revoked.push(entry.serial_hex);
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(serial = %entry.serial_hex, error = %e,
                            "CRL poll: marking a certificate revoked failed"),
                    }
                }
            }
            if verified_any {
                self.metrics.fetch("ok");
                self.recovered(url);
            } else {
                self.failed(url, "bad_crl", &last_error).await;
                report.failed += 1;
            }
        }
        report
    }

    /// CRL URL -> issuer certificate -> serials, from the unrevoked, unexpired certificates.
    async fn sources(&self) -> Result<Sources, ragw_store::StoreError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let mut sources = Sources::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .unrevoked_certificates(now, PAGE, after.as_deref())
                .await?;
            for cert in page.items {
                // Without the issuer certificate a CRL cannot be verified: not polled.
                let (Some(leaf), Some(issuer)) = (cert.chain.first(), cert.chain.get(1)) else {
                    continue;
                };
                for url in crl_distribution_points(leaf) {
                    sources
                        .entry(url)
                        .or_default()
                        .entry(issuer.clone())
                        .or_default()
                        .insert(cert.serial_hex.clone());
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(sources),
            }
        }
    }

    fn client(&self) -> Result<HttpClient, String> {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match &self.settings.https_trust {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("reading CRL https trust {}: {e}", path.display()))?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| format!("CRL https trust PEM: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("CRL https trust certificate: {e}"))?;
                }
                builder.with_tls_config(
                    rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::aws_lc_rs::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS: {e}"))?
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
                )
            }
            None => builder.with_webpki_roots(),
        };
        let connector = builder.https_or_http().enable_http1().build();
        Ok(Client::builder(TokioExecutor::new()).build(connector))
    }

    async fn fetch(&self, client: &HttpClient, url: &str) -> Result<Vec<u8>, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let request = async {
            let response = client
                .get(uri)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("HTTP status {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_CRL_DER_LEN)
                .collect()
                .await
                .map_err(|e| format!("reading the body (at most {MAX_CRL_DER_LEN} bytes): {e}"))?;
            Ok(body.to_bytes().to_vec())
        };
        tokio::time::timeout(self.settings.fetch_timeout, request)
            .await
            .map_err(|_| {
                format!(
                    "no complete answer within {:?}",
                    self.settings.fetch_timeout
                )
            })?
    }

    async fn failed(&self, url: &str, outcome: &str, error: &str) {
        self.metrics.fetch(outcome);
        tracing::warn!(url = %url, outcome, error = %error, "CRL poll failed for this URL");
        let first = {
            let mut last = self
                .last_failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            last.insert(url.to_string(), error.to_string()).as_deref() != Some(error)
        };
        if first {
            let draft = AuditDraft::new(format!("crl:{url}"), "crl.fetch_failed")
                .details(json!({"url": url, "outcome": outcome, "error": error}));
            if let Err(e) = self.store.append_audit(draft).await {
                tracing::warn!(error = %e, "CRL poll: auditing a failure failed");
            }
        }
    }

    fn recovered(&self, url: &str) {
        self.last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(url);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ragw_domain::{ApprovalMode, DeviceIdentity, IdentityKind, Protocol};
    use ragw_store::{AuditFilter, IssuedCertificate, NewEnrollment, StoreConfig};
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
        IsCa, Issuer, KeyIdMethod, KeyPair, RevocationReason, RevokedCertParams, SerialNumber,
        date_time_ymd,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SERIAL: [u8; 3] = [0x41, 0x02, 0x03];

    fn crl(issuer: &Issuer<'static, KeyPair>) -> Vec<u8> {
        CertificateRevocationListParams {
            this_update: date_time_ymd(2025, 1, 1),
            next_update: date_time_ymd(2035, 1, 1),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from_slice(&SERIAL),
                revocation_time: date_time_ymd(2025, 6, 1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(issuer)
        .unwrap()
        .der()
        .to_vec()
    }

    /// Serves whatever `body` holds at every request, over plain HTTP.
    async fn crl_server(body: Arc<Mutex<Vec<u8>>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let body = body.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                });
            }
        });
        format!("http://{addr}/crl")
    }

    #[tokio::test]
    async fn an_unreachable_crl_is_counted_audited_once_and_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = ragw_store::open(&StoreConfig::Sqlite {
            path: dir.path().join("r.db"),
        })
        .await
        .unwrap();
        // A port nothing listens on: bind, note it, close.
        let url = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            format!("http://{}/crl", l.local_addr().unwrap())
        };
        let (ca_params, ca_key) = ca_params();
        let ca_der = ca_params.self_signed(&ca_key).unwrap().der().to_vec();
        let issuer = Issuer::new(ca_params, ca_key);
        issue_into(&*store, &issuer, ca_der, &url).await;
        let metrics = CrlMetrics::default();
        let poller = CrlPoller::new(store.clone(), CrlPollSettings::default(), metrics.clone());
        for _ in 0..3 {
            let report = poller.poll_once().await;
            assert_eq!((report.urls, report.failed), (1, 1));
        }
        assert_eq!(
            metrics
                .fetches
                .get_or_create(&CrlFetchLabels {
                    outcome: "fetch_failed".into(),
                })
                .get(),
            3
        );
        let audited = store
            .query_audit(
                &AuditFilter {
                    action: Some("crl.fetch_failed".into()),
                    actor: Some(format!("crl:{url}")),
                    ..Default::default()
                },
                0,
                100,
            )
            .await
            .unwrap();
        assert_eq!(audited.len(), 1);
        let cert = store
            .get_certificate(&hex::encode(SERIAL))
            .await
            .unwrap()
            .unwrap();
        assert!(!cert.revoked);
    }

    fn ca_params() -> (CertificateParams, KeyPair) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Issuing CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        (ca_params, ca_key)
    }

    /// Records a leaf with serial [`SERIAL`] issued by `issuer`, naming `url` as its CRL.
    async fn issue_into(
        store: &dyn Store,
        issuer: &Issuer<'static, KeyPair>,
        ca_der: Vec<u8>,
        url: &str,
    ) -> DeviceIdentity {
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["d1.devices.example.test".into()]).unwrap();
        leaf.serial_number = Some(SerialNumber::from_slice(&SERIAL));
        leaf.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![url.to_string()],
        }];
        let leaf_der = leaf.signed_by(&leaf_key, issuer).unwrap().der().to_vec();
        let device = DeviceIdentity::new(IdentityKind::Mac, "02:00:00:00:00:01").unwrap();
        let (e, _) = store
            .create_enrollment(NewEnrollment {
                id: "enr-crl-1".into(),
                device: device.clone(),
                profile: "iot".into(),
                approval: ApprovalMode::Auto,
                label: "d1".into(),
                parent_domain: "devices.example.test".into(),
                names: vec!["d1.devices.example.test".into()],
                protocol: Protocol::Est,
                csr_der: b"csr".to_vec(),
                csr_sha256: "00".repeat(32),
                actor: "gateway:test".into(),
                details: json!({}),
            })
            .await
            .unwrap();
        let job = store.lease_jobs("w", 1, 60_000_000).await.unwrap();
        store
            .complete(
                &e.id,
                &job[0].lease_token,
                "w",
                IssuedCertificate {
                    serial_hex: hex::encode(SERIAL),
                    not_before: 0,
                    not_after: i64::MAX / 2,
                    chain: vec![leaf_der, ca_der],
                },
            )
            .await
            .unwrap();
        device
    }

    #[tokio::test]
    async fn only_a_crl_signed_by_the_issuer_revokes_and_failures_are_audited_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = ragw_store::open(&StoreConfig::Sqlite {
            path: dir.path().join("r.db"),
        })
        .await
        .unwrap();
        let body = Arc::new(Mutex::new(Vec::new()));
        let url = crl_server(body.clone()).await;

        // The issuing CA and a leaf it issued, with the CRL URL in it.
        let (ca_params, ca_key) = ca_params();
        let ca_der = ca_params.self_signed(&ca_key).unwrap().der().to_vec();
        let issuer = Issuer::new(ca_params.clone(), ca_key);
        let device = issue_into(&*store, &issuer, ca_der, &url).await;

        let metrics = CrlMetrics::default();
        let poller = CrlPoller::new(
            store.clone(),
            CrlPollSettings {
                interval: Duration::from_secs(1),
                fetch_timeout: Duration::from_secs(10),
                https_trust: None,
            },
            metrics.clone(),
        );
        let fetches = |outcome: &str| {
            metrics
                .fetches
                .get_or_create(&CrlFetchLabels {
                    outcome: outcome.into(),
                })
                .get()
        };
        let failures = || async {
            store
                .query_audit(
                    &AuditFilter {
                        action: Some("crl.fetch_failed".into()),
                        ..Default::default()
                    },
                    0,
                    100,
                )
                .await
                .unwrap()
                .len()
        };

        // A CRL listing the serial, but with its signature damaged: nothing is marked.
        let mut tampered = crl(&issuer);
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        *body.lock().unwrap() = tampered;
        for _ in 0..2 {
            let report = poller.poll_once().await;
            assert_eq!((report.urls, report.failed), (1, 1));
            assert!(report.revoked.is_empty());
        }
        // Signed by another key under the same name: refused too.
        let impostor = Issuer::new(ca_params, KeyPair::generate().unwrap());
        *body.lock().unwrap() = crl(&impostor);
        let report = poller.poll_once().await;
        assert_eq!((report.failed, report.revoked.len()), (1, 0));
        let cert = store
            .get_certificate(&hex::encode(SERIAL))
            .await
            .unwrap()
            .unwrap();
        assert!(!cert.revoked);
        assert_eq!(fetches("bad_crl"), 3);
        // Audited when the error first appears, not again while it stays the same.
        assert_eq!(failures().await, 1);

        // The issuer's own CRL revokes it, once.
        *body.lock().unwrap() = crl(&issuer);
        let report = poller.poll_once().await;
        assert_eq!(report.revoked, vec![hex::encode(SERIAL)]);
        let cert = store
            .get_certificate(&hex::encode(SERIAL))
            .await
            .unwrap()
            .unwrap();
        assert!(cert.revoked);
        assert_eq!(cert.revocation_reason.as_deref(), Some("keyCompromise"));
        assert_eq!(fetches("ok"), 1);
        assert_eq!(metrics.revoked.get(), 1);
        let events = store
            .query_audit(
                &AuditFilter {
                    actor: Some(format!("crl:{url}")),
                    action: Some("certificate.revoked".into()),
                    ..Default::default()
                },
                0,
                100,
            )
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].device, device.key());
        // Nothing left to poll: revoked certificates are not fetched for again.
        assert_eq!(poller.poll_once().await, PollReport::default());
    }
}
