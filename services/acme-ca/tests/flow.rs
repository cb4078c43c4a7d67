//! Whole ACME conversations over HTTPS against the local CA: the per-name dns-01 flow, the
//! RFC 9444 pre-authorized flow, renewal, revocation (by account and by certificate key),
//! key change and account deactivation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use der::Decode;

use ragw_acme_ca::client::{AcmeClient, ClientKey, make_csr};
use serde_json::json;
use support::{DOMAIN, TestCa, openssl_verify};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_name_dns01_flow_issues_a_verifiable_chain() {
    let t = TestCa::start().await;
    let mut c = t.account().await;
    let name = format!("k7q2m9x4.{DOMAIN}");
    let (order_url, order) = c.new_order(&[("dns", &name, None)]).await.unwrap();
    assert_eq!(order["status"], "pending");
    let authz_url = order["authorizations"][0].as_str().unwrap().to_string();
    t.solve_dns01(&mut c, &authz_url).await;
    let order = c
        .poll(&order_url, &["ready"], Duration::from_secs(5))
        .await
        .unwrap();
    let pem = t.finish(&mut c, &order, &[&name]).await;
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2);
    if let Some((ok, out)) = openssl_verify(t.ca.root_pem(), &pem) {
        assert!(ok, "openssl verify: {out}");
    }
    let counts = t.store.acme_counts().await.unwrap();
    // One order certificate plus the CA's own HTTPS certificate.
    assert_eq!(counts.certificates, 2);
    let report = t.store.verify_audit().await.unwrap();
    assert!(report.broken.is_none());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preauthorized_parent_makes_device_orders_ready() {
    let t = TestCa::start().await;
    let mut c = t.account().await;
    let dir = c.get_directory_meta();
    assert_eq!(dir["subdomainAuthAllowed"], true);
    assert!(c.dir.new_authz.is_some());

    let (authz_url, authz) = c.new_authz(DOMAIN, true).await.unwrap();
    assert_eq!(authz["status"], "pending");
    assert_eq!(authz["subdomainAuthAllowed"], true);
    let types: Vec<&str> = authz["challenges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["dns-01"]);
    t.solve_dns01(&mut c, &authz_url).await;

    let posts_before = c.posts;
    for i in 0..5 {
        let name = format!("dev{i}.{DOMAIN}");
        let (_, order) = c.new_order(&[("dns", &name, None)]).await.unwrap();
        assert_eq!(order["status"], "ready", "{order}");
        assert_eq!(order["authorizations"][0], authz_url.as_str());
        t.finish(&mut c, &order, &[&name]).await;
    }
    // newOrder + finalize + download per device; no challenge per device.
    assert_eq!(c.posts - posts_before, 15);

    // Label-wise: a sibling that merely ends with the same characters is not covered.
    let (_, sibling) = c
        .new_order(&[("dns", &format!("x.ooo{DOMAIN}"), None)])
        .await
        .unwrap_or_else(|e| (String::new(), json!({"refused": e.to_string()})));
    assert_ne!(sibling["status"], "ready");

    // Another account gets nothing from this authorization.
    let mut other = t.account().await;
    let (_, o) = other
        .new_order(&[("dns", &format!("dev9.{DOMAIN}"), None)])
        .await
        .unwrap();
    assert_eq!(o["status"], "pending");
    t.stop().await;
}

/// A device order left pending from before its parent was pre-authorized (a worker that died
/// after newOrder asks again): the same order comes back ready, with no challenge to solve.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_order_is_ready_once_the_parent_is_preauthorized() {
    let t = TestCa::start().await;
    let mut c = t.account().await;
    let name = format!("late.{DOMAIN}");
    let (first_url, first) = c.new_order(&[("dns", &name, None)]).await.unwrap();
    assert_eq!(first["status"], "pending");
    let (parent_url, _) = c.new_authz(DOMAIN, true).await.unwrap();
    t.solve_dns01(&mut c, &parent_url).await;
    let (again_url, again) = c.new_order(&[("dns", &name, None)]).await.unwrap();
    assert_eq!(again_url, first_url);
    assert_eq!(again["status"], "ready", "{again}");
    assert_eq!(again["authorizations"], json!([parent_url]));
    t.finish(&mut c, &again, &[&name]).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ancestor_domain_in_new_order() {
    let t = TestCa::start().await;
    let mut c = t.account().await;
    let name = format!("a1.{DOMAIN}");
    let (order_url, order) = c.new_order(&[("dns", &name, Some(DOMAIN))]).await.unwrap();
    assert_eq!(order["identifiers"][0]["ancestorDomain"], DOMAIN);
    let authz_url = order["authorizations"][0].as_str().unwrap().to_string();
    let authz = c.get(&authz_url).await.unwrap();
    assert_eq!(authz["identifier"]["value"], DOMAIN);
    assert_eq!(authz["subdomainAuthAllowed"], true);
    t.solve_dns01(&mut c, &authz_url).await;
    let order = c
        .poll(&order_url, &["ready"], Duration::from_secs(5))
        .await
        .unwrap();
    t.finish(&mut c, &order, &[&name]).await;
    let (_, next) = c
        .new_order(&[("dns", &format!("a2.{DOMAIN}"), None)])
        .await
        .unwrap();
    assert_eq!(next["status"], "ready");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_renewal_key_change_and_deactivation() {
    let t = TestCa::start().await;
    let mut c = t.account().await;
    let name = format!("r1.{DOMAIN}");
    let (_, order) = c.new_order(&[("dns", &name, None)]).await.unwrap();
    t.solve_dns01(&mut c, order["authorizations"][0].as_str().unwrap())
        .await;
    let (order_url, _) = c.new_order(&[("dns", &name, None)]).await.unwrap();
    // The valid authorization is reused: the renewal order is ready at once.
    let renewal = c.get(&order_url).await.unwrap();
    assert_eq!(renewal["status"], "ready");
    let pem = t.finish(&mut c, &renewal, &[&name]).await;
    let leaf = ragw_acme_ca::ca::pem_certificates(&pem).remove(0);

    let r = c.revoke(&leaf, Some(4)).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let again = c.revoke(&leaf, Some(4)).await.unwrap();
    assert_eq!(again.problem_type().as_deref(), Some("alreadyRevoked"));
    let crl = t.ca.crl().await.unwrap();
    assert!(crl.len() > 100);

    // Revocation signed by the certificate's own key (jwk), from outside any account.
    let (_, o2) = c.new_order(&[("dns", &name, None)]).await.unwrap();
    let names = vec![name.clone()];
    let (csr, key_pem) = make_csr(&names, &[]).unwrap();
    let fin = c
        .finalize(o2["finalize"].as_str().unwrap(), &csr)
        .await
        .unwrap()
        .json();
    let pem2 = c
        .download(fin["certificate"].as_str().unwrap())
        .await
        .unwrap();
    let leaf2 = ragw_acme_ca::ca::pem_certificates(&pem2).remove(0);
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(key_pem.as_bytes())
        .map(|k: rustls_pki_types::PrivatePkcs8KeyDer<'static>| k.secret_pkcs8_der().to_vec())
        .unwrap();
    let cert_key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
    )
    .unwrap();
    let mut by_key = AcmeClient::connect_with_key(
        &t.ca.directory_url(),
        Some(t.ca.root_pem()),
        ClientKey::Es256(cert_key),
    )
    .await
    .unwrap();
    let r = by_key.revoke(&leaf2, Some(1)).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Key change, then the old key is no longer the account's.
    let old_kid = c.kid.clone().unwrap();
    let new_key = ClientKey::es256();
    let url = c.dir.key_change.clone();
    let inner = new_key
        .jws(
            &json!({"alg": "ES256", "jwk": new_key.jwk(), "url": url}),
            Some(&json!({"account": old_kid, "oldKey": c.key.jwk()})),
        )
        .unwrap();
    let r = c.post(&url, Some(&inner)).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let old_key = std::mem::replace(&mut c.key, new_key);
    let acct = c.get(&old_kid).await.unwrap();
    assert_eq!(acct["status"], "valid");
    let mut stale =
        AcmeClient::connect_with_key(&t.ca.directory_url(), Some(t.ca.root_pem()), old_key)
            .await
            .unwrap();
    stale.kid = Some(old_kid.clone());
    let r = stale.post(&old_kid, None).await.unwrap();
    assert_eq!(
        r.problem_type().as_deref(),
        Some("malformed"),
        "signature by the old key"
    );

    // Deactivation ends the account.
    let r = c
        .post(&old_kid, Some(&json!({"status": "deactivated"})))
        .await
        .unwrap();
    assert_eq!(r.json()["status"], "deactivated");
    let r = c.post(&old_kid, None).await.unwrap();
    assert_eq!(r.problem_type().as_deref(), Some("unauthorized"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_accepted_signature_algorithm_works() {
    let t = TestCa::start().await;
    for alg in ragw_acme_ca::jws::ALGORITHMS {
        let mut c = AcmeClient::connect_with_key(
            &t.ca.directory_url(),
            Some(t.ca.root_pem()),
            ClientKey::generate(alg).unwrap(),
        )
        .await
        .unwrap();
        c.new_account(&[], None).await.unwrap();
        let name = format!("{}.{DOMAIN}", alg.to_ascii_lowercase());
        let (_, order) = c.new_order(&[("dns", &name, None)]).await.unwrap();
        t.solve_dns01(&mut c, order["authorizations"][0].as_str().unwrap())
            .await;
    }
    t.stop().await;
}

/// P-521 leaves are certified by default, so their own key (ES512) must be able to revoke
/// them (RFC 8555 §7.6, second case).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn p521_leaf_is_revoked_by_its_own_key() {
    let t = TestCa::start().await;
    let mut c = t.account().await;
    let name = format!("p521.{DOMAIN}");
    let (_, order) = c.new_order(&[("dns", &name, None)]).await.unwrap();
    t.solve_dns01(&mut c, order["authorizations"][0].as_str().unwrap())
        .await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.clone()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).unwrap();
    let fin = c
        .finalize(order["finalize"].as_str().unwrap(), csr.der())
        .await
        .unwrap();
    assert_eq!(fin.status, 200, "{}", String::from_utf8_lossy(&fin.body));
    let pem = c
        .download(fin.json()["certificate"].as_str().unwrap())
        .await
        .unwrap();
    let leaf = ragw_acme_ca::ca::pem_certificates(&pem).remove(0);
    let cert_key = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P521_SHA512_FIXED_SIGNING,
        &key.serialize_der(),
    )
    .unwrap();
    let mut by_key = AcmeClient::connect_with_key(
        &t.ca.directory_url(),
        Some(t.ca.root_pem()),
        ClientKey::Es512(cert_key),
    )
    .await
    .unwrap();
    let r = by_key.revoke(&leaf, Some(1)).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(t.store.acme_counts().await.unwrap().revoked, 1);
    t.stop().await;
}

/// RFC 8555 §7.6, third case: an account that did not order a certificate may revoke it once
/// it holds valid authorizations for every name in it; before that it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_account_authorized_for_every_name_may_revoke_what_another_ordered() {
    let t = TestCa::start().await;
    let mut owner = t.account().await;
    let name = format!("shared.{DOMAIN}");
    let (_, order) = owner.new_order(&[("dns", &name, None)]).await.unwrap();
    t.solve_dns01(&mut owner, order["authorizations"][0].as_str().unwrap())
        .await;
    let pem = t.finish(&mut owner, &order, &[&name]).await;
    let leaf = ragw_acme_ca::ca::pem_certificates(&pem).remove(0);

    let mut other = t.account().await;
    let r = other.revoke(&leaf, Some(4)).await.unwrap();
    assert_eq!(r.problem_type().as_deref(), Some("unauthorized"));
    assert_eq!(t.store.acme_counts().await.unwrap().revoked, 0);

    let (_, own_order) = other.new_order(&[("dns", &name, None)]).await.unwrap();
    t.solve_dns01(&mut other, own_order["authorizations"][0].as_str().unwrap())
        .await;
    let r = other.revoke(&leaf, Some(4)).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(t.store.acme_counts().await.unwrap().revoked, 1);
    t.stop().await;
}

/// An IP identifier (RFC 8738), validated over http-01 against a real HTTP responder, ends in a
/// certificate whose subjectAltName is that address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ip_identifier_over_http01() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = http.local_addr().unwrap().port();
    let answers: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let served = answers.clone();
    let responder = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = http.accept().await else {
                return;
            };
            let served = served.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let token = path.trim_start_matches("/.well-known/acme-challenge/");
                let body = served.lock().unwrap().get(token).cloned();
                let reply = match body {
                    Some(b) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                        b.len()
                    ),
                    None => {
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_string()
                    }
                };
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    let t = TestCa::start_with(|c| c.http01_port = port).await;
    let mut c = t.account().await;
    let (_, order) = c.new_order(&[("ip", "127.0.0.1", None)]).await.unwrap();
    let authz_url = order["authorizations"][0].as_str().unwrap().to_string();
    let authz = c.get(&authz_url).await.unwrap();
    assert!(
        AcmeClient::challenge(&authz, "dns-01").is_err(),
        "dns-01 is not offered for an IP address: {authz}"
    );
    let (url, token) = AcmeClient::challenge(&authz, "http-01").unwrap();
    answers
        .lock()
        .unwrap()
        .insert(token.clone(), c.key_authorization(&token));
    c.respond(&url).await.unwrap();
    c.poll(&authz_url, &["valid"], Duration::from_secs(10))
        .await
        .unwrap();
    let (csr, _) = make_csr(&[], &["127.0.0.1".parse().unwrap()]).unwrap();
    let fin = c
        .finalize(order["finalize"].as_str().unwrap(), &csr)
        .await
        .unwrap();
    assert_eq!(fin.status, 200, "{}", String::from_utf8_lossy(&fin.body));
    let pem = c
        .download(fin.json()["certificate"].as_str().unwrap())
        .await
        .unwrap();
    let leaf = ragw_acme_ca::ca::pem_certificates(&pem).remove(0);
    let cert = x509_cert::Certificate::from_der(&leaf).unwrap();
    let san = cert
        .tbs_certificate()
        .extensions()
        .unwrap()
        .iter()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME)
        .unwrap();
    assert!(
        san.extn_value
            .as_bytes()
            .windows(6)
            .any(|w| w == [0x87, 4, 127, 0, 0, 1]),
        "iPAddress 127.0.0.1 in the subjectAltName"
    );
    responder.abort();
    t.stop().await;
}

/// RFC 8555 §7.1.2.1: an account's orders list is paged, each page linking the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_orders_list_is_paged_with_link_next() {
    let t = TestCa::start_with(|c| c.orders_page_size = 2).await;
    let mut c = t.account().await;
    let mut placed = Vec::new();
    for i in 0..5 {
        let (url, _) = c
            .new_order(&[("dns", &format!("page{i}.{DOMAIN}"), None)])
            .await
            .unwrap();
        placed.push(url);
    }
    let account = c.get(&c.kid.clone().unwrap()).await.unwrap();
    let mut next = Some(account["orders"].as_str().unwrap().to_string());
    let (mut listed, mut pages) = (Vec::new(), 0);
    while let Some(url) = next.take() {
        let r = c.post(&url, None).await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let urls = r.json()["orders"].as_array().unwrap().clone();
        assert!(urls.len() <= 2, "{urls:?}");
        listed.extend(urls.iter().map(|u| u.as_str().unwrap().to_string()));
        pages += 1;
        next = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("link"))
            .find_map(|(_, l)| {
                l.strip_prefix('<')
                    .and_then(|l| l.split_once(">;rel=\"next\""))
                    .map(|(u, _)| u.to_string())
            });
    }
    assert_eq!(pages, 3);
    listed.sort();
    placed.sort();
    assert_eq!(listed, placed);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn external_account_binding() {
    let mac = [7u8; 32];
    let t = TestCa::start_with(|c| {
        c.eab_required = true;
        c.eab_keys = vec![ragw_acme_ca::EabKey {
            kid: "kid-1".into(),
            hmac_key: ragw_acme_ca::b64::encode(mac),
        }];
    })
    .await;
    let mut c = t.client().await;
    let err = c.new_account(&[], None).await.unwrap_err();
    assert_eq!(
        err.problem_type().as_deref(),
        Some("externalAccountRequired")
    );
    let mut wrong = t.client().await;
    let err = wrong
        .new_account(&[], Some(("kid-1", &[8u8; 32])))
        .await
        .unwrap_err();
    assert_eq!(err.problem_type().as_deref(), Some("unauthorized"));
    c.new_account(&[], Some(("kid-1", &mac))).await.unwrap();
    assert!(c.kid.is_some());
    t.stop().await;
}

/// The same per-name and pre-authorized flows with PostgreSQL as the store (skipped loudly
/// without RAGW_TEST_DATABASE_URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flows_on_postgres() {
    let Some(url) = ragw_store::test_support::database_url() else {
        return;
    };
    let schema = ragw_store::test_support::fresh_schema_name();
    let store = ragw_store::open(&ragw_store::StoreConfig::Postgres {
        url: url.clone(),
        schema: Some(schema.clone()),
        pool_size: 8,
    })
    .await
    .expect("RAGW_TEST_DATABASE_URL is set, so PostgreSQL must be reachable");
    let t = TestCa::start_on(store, tempfile::tempdir().unwrap(), |_| {}).await;
    let mut c = t.account().await;
    let name = format!("pg1.{DOMAIN}");
    let (order_url, order) = c.new_order(&[("dns", &name, None)]).await.unwrap();
    t.solve_dns01(&mut c, order["authorizations"][0].as_str().unwrap())
        .await;
    let order = c
        .poll(&order_url, &["ready"], Duration::from_secs(5))
        .await
        .unwrap();
    let pem = t.finish(&mut c, &order, &[&name]).await;
    if let Some((ok, out)) = openssl_verify(t.ca.root_pem(), &pem) {
        assert!(ok, "{out}");
    }
    let (authz_url, _) = c.new_authz(DOMAIN, true).await.unwrap();
    t.solve_dns01(&mut c, &authz_url).await;
    let mut tasks = Vec::new();
    for i in 0..4 {
        let mut ci = t.account().await;
        let (u, _) = ci.new_authz(DOMAIN, true).await.unwrap();
        t.solve_dns01(&mut ci, &u).await;
        tasks.push(async move {
            let n = format!("pg-dev{i}.{DOMAIN}");
            let (_, o) = ci.new_order(&[("dns", &n, None)]).await.unwrap();
            assert_eq!(o["status"], "ready");
            (ci, o, n)
        });
    }
    for (mut ci, o, n) in futures::future::join_all(tasks).await {
        t.finish(&mut ci, &o, &[&n]).await;
    }
    assert!(t.store.verify_audit().await.unwrap().broken.is_none());
    t.stop().await;
    ragw_store::test_support::drop_schemas(&url, &[schema]).await;
}

/// Issue 8 §6: IP identifiers and `.local` names are off in a default CA and switched on per
/// issuance profile; orders with any other profile are still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ip_and_local_identifiers_only_through_a_profile_that_allows_them() {
    let t = TestCa::start_with(|c| {
        c.allow_local = false;
        c.allow_ip = false;
        c.profiles.insert(
            "lan".into(),
            ragw_acme_ca::IssuanceProfile {
                ekus: vec![ragw_domain::profile::Eku::ServerAuth],
                description: "devices on the local network".into(),
                allow_local: true,
                allow_ip: true,
            },
        );
    })
    .await;
    let mut c = t.account().await;
    for (kind, value) in [("ip", "127.0.0.1"), ("dns", "printer.local")] {
        let err = c.new_order(&[(kind, value, None)]).await.unwrap_err();
        assert_eq!(
            err.problem_type().as_deref(),
            Some("rejectedIdentifier"),
            "{value} under the default profile"
        );
        let url = c.dir.new_order.clone();
        let r = c
            .post(
                &url,
                Some(&serde_json::json!({
                    "identifiers": [{"type": kind, "value": value}],
                    "profile": "lan",
                })),
            )
            .await
            .unwrap();
        assert_eq!(
            r.status,
            201,
            "{value} under lan: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    t.stop().await;
}
