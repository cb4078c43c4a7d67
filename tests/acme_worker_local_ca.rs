//! ragw's own local CA as the worker's upstream, with `ragw dev --no-worker` as registrar, CA
//! and built-in DNS, and `ragw run --target worker` as separate processes:
//!
//! - the pre-authorized path: the worker authorizes the parent domain once (newAuthz, RFC 9444)
//!   and every device order then costs at most newOrder + finalize + download; its dns-01
//!   record goes to the dev built-in DNS over RFC 2136 with the dev TSIG key, as an external
//!   client's would;
//! - a worker SIGKILLed while it holds leases: a second worker takes the jobs over once the
//!   leases expire, and the CA's own records show exactly one order per enrollment. Killed
//!   after its first certificates, every order is already recorded and resumed; killed while
//!   orders are still being placed, the CA hands back the unrecorded ones and finishes the
//!   abandoned finalizes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod peers;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Dev, WorkerProcess, enroll, metric, wait_issued};
use ragw_proto::registrar::v1::enrollment_service_client::EnrollmentServiceClient;
use ragw_runtime::identity::Role;

const DOMAIN: &str = "devices.ragw.test";

/// A worker configuration against the dev registrar, the dev CA and the dev built-in DNS
/// (through RFC 2136, with the TSIG key `ragw dev` generated).
fn worker_config(dir: &Path, dev: &Dev, id: &str, concurrency: u32, lease_seconds: u32) -> PathBuf {
    let tls = dev.dir.join("tls");
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"[tls]
ca = "{tls}/ca.pem"
cert = "{tls}/worker.pem"
key = "{tls}/worker.key"

[worker]
registrar = "{grpc}"
# The dev registrar certificate names localhost (and 127.0.0.1).
registrar_tls_name = "localhost"
ops_listen = "127.0.0.1:0"
id = "{id}"
concurrency = {concurrency}
lease_seconds = {lease_seconds}
poll_wait_ms = 1000

[[worker.upstreams]]
directory_url = "{directory}"
ca_trust = "{root}"
account_file = "{account}"

[dns]
provider = "rfc2136"
server = "{dns}"
zone = "{DOMAIN}"
key_file = "{key}"
"#,
            tls = tls.display(),
            grpc = dev.grpc,
            directory = dev.endpoint("acme_directory"),
            root = dev.dir.join("ca").join("root.pem").display(),
            // Shared by every worker of the test, as a mounted secret would be.
            account = dir.join("account.json").display(),
            dns = dev.endpoint("dns"),
            key = dev.dir.join("dns").join("tsig.key").display(),
        ),
    )
    .unwrap();
    path
}

/// The subjectAltName entries of a certificate, DNS names as `DNS:name`.
fn san_entries(cert_der: &[u8]) -> Vec<String> {
    use der::Decode;
    use der::oid::AssociatedOid;
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let cert = x509_cert::Certificate::from_der(cert_der).unwrap();
    let mut out = Vec::new();
    for ext in cert
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .filter(|e| e.extn_id == SubjectAltName::OID)
    {
        let san = SubjectAltName::from_der(ext.extn_value.as_bytes()).unwrap();
        for name in san.0 {
            out.push(match name {
                GeneralName::DnsName(d) => format!("DNS:{d}"),
                other => format!("{other:?}"),
            });
        }
    }
    out
}

/// `openssl verify` of every chain against the dev root, and a SAN of exactly the device's name.
fn verify_chains(dir: &Path, root: &Path, issued: &[(String, Vec<Vec<u8>>)]) {
    for (n, (name, chain)) in issued.iter().enumerate() {
        assert!(chain.len() >= 2, "{name}: leaf without its intermediate");
        let leaf = dir.join(format!("leaf-{n}.pem"));
        let inter = dir.join(format!("inter-{n}.pem"));
        std::fs::write(&leaf, common::pem_cert(&chain[0])).unwrap();
        let rest: String = chain[1..].iter().map(|c| common::pem_cert(c)).collect();
        std::fs::write(&inter, rest).unwrap();
        let (ok, text) = peers::openssl_verify(root, Some(&inter), &leaf);
        assert!(ok, "{name}: {text}");
        assert_eq!(
            san_entries(&chain[0]),
            vec![format!("DNS:{name}")],
            "{name}"
        );
    }
}

/// POSTs per request kind, from the worker's `ragw_worker_acme_requests_total`.
fn posts_by_kind(body: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("ragw_worker_acme_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        if !labels.split(',').any(|l| l == "method=\"POST\"") {
            continue;
        }
        let kind = labels
            .split(',')
            .find_map(|l| l.strip_prefix("kind=\""))
            .and_then(|k| k.strip_suffix('"'))
            .unwrap_or("?")
            .to_string();
        *out.entry(kind).or_insert(0.0) += value.trim().parse::<f64>().unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_enrollments_through_the_pre_authorized_parent() {
    const DEVICES: u32 = 50;
    if peers::find_program("openssl", "openssl").is_none() {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let dev = Dev::start(&["--no-worker", "--domain", DOMAIN]);
    let config = worker_config(temp.path(), &dev, "preauth", 8, 60);
    let worker = WorkerProcess::start(&config);

    let mut gw = EnrollmentServiceClient::new(dev.channel(Role::Gateway).await);
    let pending = enroll(&mut gw, 0..DEVICES).await;
    let issued = wait_issued(&mut gw, &pending, Duration::from_secs(600)).await;
    assert_eq!(issued.len(), DEVICES as usize);
    verify_chains(temp.path(), &dev.dir.join("ca").join("root.pem"), &issued);

    let (_, body) = common::http_get(&worker.metrics);
    assert_eq!(
        metric(&body, "ragw_worker_acme_certificates_issued_total"),
        f64::from(DEVICES),
        "{body}"
    );
    let posts = posts_by_kind(&body);
    let kind = |k: &str| posts.get(k).copied().unwrap_or(0.0);
    assert_eq!(kind("newAuthz"), 1.0, "one parent authorization: {posts:?}");
    // The parent authorization: the account, newAuthz, its dns-01 challenge and the polls of
    // the authorization. No device order touches an authorization or a challenge.
    let parent = kind("newAccount") + kind("newAuthz") + kind("challenge") + kind("authorization");
    let total: f64 = posts.values().sum();
    let per_certificate = (total - parent) / f64::from(DEVICES);
    eprintln!(
        "POSTs by kind {posts:?}: {parent} for the parent authorization, \
         {per_certificate:.2} per certificate after it"
    );
    assert!(
        per_certificate <= 3.0,
        "{per_certificate} POSTs per certificate after the parent authorization: {posts:?}"
    );
    // The parent's dns-01 record went to the built-in DNS over RFC 2136 and was removed again.
    let ok = |op: &str| {
        metric(
            &body,
            &format!(
                "ragw_worker_dns_updates_total{{provider=\"rfc2136\",operation=\"{op}\",outcome=\"ok\"}}"
            ),
        )
    };
    assert_eq!(ok("add"), 1.0, "{body}");
    assert_eq!(ok("remove"), 1.0, "{body}");
    // RFC 9444 §4.2: every device order named the pre-authorized parent as its ancestorDomain.
    let ancestors = order_ancestors(&dev.dir.join("ragw.db"));
    assert_eq!(ancestors.len(), DEVICES as usize, "{ancestors:?}");
    for (name, ancestor) in &ancestors {
        assert_eq!(ancestor.as_deref(), Some(DOMAIN), "{name}");
    }
    // The CA's own counters agree: one certificate and one newOrder per device.
    let (_, ca_body) = common::http_get(&dev.endpoint("metrics"));
    assert_eq!(
        metric(&ca_body, "ragw_ca_certificates_issued_total"),
        f64::from(DEVICES),
        "{ca_body}"
    );
    assert_eq!(
        metric(
            &ca_body,
            "ragw_ca_requests_total{resource=\"newOrder\",method=\"POST\",status=\"201\"}"
        ),
        f64::from(DEVICES),
        "{ca_body}"
    );
    // The audit log shows the account, the parent's pre-authorization and its dns-01 record.
    // Steps that already happened are recorded in the background: give them a moment.
    let db = dev.dir.join("ragw.db");
    let mut steps = common::audit_events(&db, "worker.");
    for _ in 0..100 {
        if steps.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        steps = common::audit_events(&db, "worker.");
    }
    let count = |action: &str| steps.iter().filter(|(a, _, _)| a == action).count();
    assert_eq!(count("worker.account_created"), 1, "{steps:?}");
    assert_eq!(count("worker.parent_preauthorized"), 1, "{steps:?}");
    assert_eq!(count("worker.challenge_published"), 1, "{steps:?}");
    assert_eq!(count("worker.challenge_removed"), 1, "{steps:?}");
    assert!(
        steps
            .iter()
            .any(|(a, _, d)| a == "worker.parent_preauthorized" && d.contains(DOMAIN)),
        "{steps:?}"
    );
}

/// (identifier value, its ancestorDomain) of every identifier in the local CA's orders.
fn order_ancestors(db: &Path) -> Vec<(String, Option<String>)> {
    let db = rusqlite::Connection::open(db).unwrap();
    let mut stmt = db.prepare("SELECT identifiers FROM acme_orders").unwrap();
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows.iter()
        .flat_map(|ids| {
            let ids: serde_json::Value = serde_json::from_str(ids).unwrap();
            ids.as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    (
                        i["value"].as_str().unwrap().to_string(),
                        i["ancestorDomain"].as_str().map(str::to_string),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One row per order the local CA holds: (identifier values, status).
fn ca_orders(db: &Path) -> Vec<(Vec<String>, String)> {
    let db = rusqlite::Connection::open(db).unwrap();
    let mut stmt = db
        .prepare("SELECT identifiers, status FROM acme_orders")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|row| {
            let (ids, status) = row.unwrap();
            let ids: serde_json::Value = serde_json::from_str(&ids).unwrap();
            let values = ids
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["value"].as_str().unwrap().to_string())
                .collect();
            (values, status)
        })
        .collect()
}

/// Enrollments by (state, whether an ACME order URL is recorded), from the registrar's tables.
fn enrollment_states(db: &Path) -> BTreeMap<(String, bool), u32> {
    let db = rusqlite::Connection::open(db).unwrap();
    let mut stmt = db
        .prepare("SELECT state, acme_order_url IS NOT NULL FROM enrollments")
        .unwrap();
    let mut out = BTreeMap::new();
    for row in stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))
        .unwrap()
    {
        *out.entry(row.unwrap()).or_insert(0) += 1;
    }
    out
}

/// When the first worker is SIGKILLed.
#[derive(Clone, Copy, Debug)]
enum KillPoint {
    /// Once it has handed the registrar this many certificates: by then every order of the
    /// batch is placed and recorded, and the jobs still leased resume them.
    AfterCertificates(u32),
    /// Once the CA holds this many orders: orders are still being placed, some of them not
    /// yet recorded with the registrar, and finalize requests are on the way.
    WhenTheCaHoldsOrders(i64),
}

/// Enrolls `devices`, kills the first worker at `kill`, lets a second worker (same account)
/// take the expired leases over, and checks on the CA side that every device name was ordered
/// exactly once.
async fn kill_a_worker_and_take_over(devices: u32, kill: KillPoint) {
    let temp = tempfile::tempdir().unwrap();
    let dev = Dev::start(&["--no-worker", "--domain", DOMAIN]);
    let db = dev.dir.join("ragw.db");
    // The shortest lease the registrar grants, so the dead worker's jobs come back quickly;
    // enough concurrency that the first worker leases every job at once.
    let first = worker_config(temp.path(), &dev, "first", devices, 10);
    let second = worker_config(temp.path(), &dev, "second", devices, 10);

    let mut gw = EnrollmentServiceClient::new(dev.channel(Role::Gateway).await);
    let pending = enroll(&mut gw, 0..devices).await;

    let mut worker = WorkerProcess::start(&first);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let reached = match kill {
            KillPoint::AfterCertificates(n) => {
                let (_, body) = common::http_get(&worker.metrics);
                metric(&body, "ragw_worker_acme_certificates_issued_total") >= f64::from(n)
            }
            KillPoint::WhenTheCaHoldsOrders(n) => {
                let conn = rusqlite::Connection::open(&db).unwrap();
                // The CA creates its tables on start; a busy database is just asked again.
                conn.query_row("SELECT count(*) FROM acme_orders", [], |r| r.get(0))
                    .is_ok_and(|count: i64| count >= n)
            }
        };
        if reached {
            break;
        }
        assert!(
            worker.child.try_wait().unwrap().is_none(),
            "the first worker exited on its own"
        );
        assert!(
            Instant::now() < deadline,
            "the first worker did not get to {kill:?} in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.kill9();
    let at_kill = enrollment_states(&db);
    let mut ca_at_kill: BTreeMap<String, u32> = BTreeMap::new();
    for (_, status) in ca_orders(&db) {
        *ca_at_kill.entry(status).or_insert(0) += 1;
    }
    eprintln!(
        "{kill:?}: enrollments (state, order recorded) {at_kill:?}, CA orders by status \
         {ca_at_kill:?}"
    );
    let left: u32 = at_kill
        .iter()
        .filter(|((state, _), _)| state != "issued")
        .map(|(_, n)| n)
        .sum();
    assert!(
        left > 0,
        "the first worker finished every job before it was killed: {at_kill:?}"
    );

    // A second worker, same account, takes over once the dead worker's leases expire.
    let _worker = WorkerProcess::start(&second);
    let issued = wait_issued(&mut gw, &pending, Duration::from_secs(300)).await;
    assert_eq!(issued.len(), devices as usize);
    if peers::find_program("openssl", "openssl").is_some() {
        verify_chains(temp.path(), &dev.dir.join("ca").join("root.pem"), &issued);
    }

    // Counted by the CA: every device name was ordered exactly once, and that order is the
    // one that was issued.
    let mut orders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (names, status) in ca_orders(&db) {
        for name in names {
            orders.entry(name).or_default().push(status.clone());
        }
    }
    let enrolled: BTreeSet<String> = pending.iter().map(|(n, _)| n.clone()).collect();
    let device_orders: BTreeMap<&String, &Vec<String>> = orders
        .iter()
        .filter(|(name, _)| name.ends_with(&format!(".{DOMAIN}")))
        .collect();
    let ordered: BTreeSet<String> = device_orders.keys().map(|n| (*n).clone()).collect();
    assert_eq!(ordered, enrolled, "orders for names nobody enrolled");
    let repeated: Vec<_> = device_orders
        .iter()
        .filter(|(_, statuses)| statuses.len() != 1)
        .collect();
    assert!(
        repeated.is_empty(),
        "{} of {devices} names ordered more than once (statuses): {repeated:?}",
        repeated.len()
    );
    for (name, statuses) in &device_orders {
        assert_eq!(statuses.as_slice(), ["valid"], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_holding_leases_leaves_one_order_per_enrollment() {
    kill_a_worker_and_take_over(40, KillPoint::AfterCertificates(3)).await;
}

/// Killed while orders are still being placed: an order the CA created but the worker had not
/// yet recorded is handed back by the CA's newOrder (same account, same identifiers) instead of
/// being placed again, and a finalize whose client died still completes on the CA, so the
/// resumed job downloads the certificate instead of finding the order stuck in `processing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_while_ordering_leaves_one_order_per_enrollment() {
    kill_a_worker_and_take_over(40, KillPoint::WhenTheCaHoldsOrders(20)).await;
}
