//! A corpus of malformed and hostile requests. Each must get its ACME problem type and HTTP
//! status, never a 5xx, always a problem document (with a fresh Replay-Nonce for POSTs), and
//! must change no ACME state and append no audit event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ragw_acme_ca::b64;
use ragw_acme_ca::client::{AcmeClient, ClientKey, HttpResponse, make_csr};
use ragw_store::{AcmeCounts, Store};
use serde_json::{Value, json};
use support::{DOMAIN, TestCa};

const JOSE: Option<&str> = Some("application/jose+json");

struct Corpus<'a> {
    store: &'a dyn Store,
    before: (AcmeCounts, i64),
    checked: usize,
}

impl Corpus<'_> {
    async fn snapshot(store: &dyn Store) -> (AcmeCounts, i64) {
        (
            store.acme_counts().await.unwrap(),
            store.verify_audit().await.unwrap().head_seq,
        )
    }

    async fn expect(&mut self, case: &str, r: HttpResponse, kind: &str, status: u16) {
        assert!(
            r.status < 500,
            "{case}: server error {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{case}: not a problem document"
        );
        assert_eq!(
            r.problem_type().as_deref(),
            Some(kind),
            "{case}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.status, status, "{case}: status");
        let body = r.json();
        assert_eq!(body["status"], status, "{case}: status member");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{case}: detail"
        );
        let after = Corpus::snapshot(self.store).await;
        assert_eq!(
            after, self.before,
            "{case}: the refused request changed state"
        );
        self.checked += 1;
    }
}

async fn nonce(cl: &mut AcmeClient) -> String {
    cl.fresh_nonce().await.unwrap()
}

fn jws_body(key: &ClientKey, protected: &Value, payload: Option<&Value>) -> Vec<u8> {
    key.jws(protected, payload)
        .unwrap()
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_requests_get_precise_problems_and_change_nothing() {
    let t = TestCa::start().await;
    let mut a = t.account().await;
    let mut b = t.account().await;
    let mut unauthorized = t.account().await;
    let kid_a = a.kid.clone().unwrap();
    let kid_b = b.kid.clone().unwrap();
    let new_order = a.dir.new_order.clone();
    let new_account = a.dir.new_account.clone();
    let new_authz = a.dir.new_authz.clone().unwrap();
    let revoke = a.dir.revoke_cert.clone();
    let key_change = a.dir.key_change.clone();

    // State to aim at: a pending order of A, a ready order of A, an order of B, an issued
    // certificate of B.
    let (pending_url, pending) = a
        .new_order(&[("dns", &format!("p.{DOMAIN}"), None)])
        .await
        .unwrap();
    let (pre_url, _) = a.new_authz(DOMAIN, true).await.unwrap();
    t.solve_dns01(&mut a, &pre_url).await;
    let ready_name = format!("ready.{DOMAIN}");
    let (_, ready) = a.new_order(&[("dns", &ready_name, None)]).await.unwrap();
    assert_eq!(ready["status"], "ready");
    let b_name = format!("b.{DOMAIN}");
    let (b_order_url, b_order) = b.new_order(&[("dns", &b_name, None)]).await.unwrap();
    t.solve_dns01(&mut b, b_order["authorizations"][0].as_str().unwrap())
        .await;
    let b_order = b.get(&b_order_url).await.unwrap();
    let b_pem = t.finish(&mut b, &b_order, &[&b_name]).await;
    let b_leaf = ragw_acme_ca::ca::pem_certificates(&b_pem).remove(0);
    let mut gone = t.account().await;
    let gone_kid = gone.kid.clone().unwrap();
    let r = gone
        .post(&gone_kid, Some(&json!({"status": "deactivated"})))
        .await
        .unwrap();
    assert_eq!(r.json()["status"], "deactivated");

    let mut c = Corpus {
        store: t.store.as_ref(),
        before: Corpus::snapshot(t.store.as_ref()).await,
        checked: 0,
    };

    // --- Transport-level shape -----------------------------------------------------------
    let r = a
        .send_raw("POST", &new_order, JOSE, b"{not json".to_vec())
        .await
        .unwrap();
    c.expect("body is not JSON", r, "malformed", 400).await;
    let r = a
        .send_raw("POST", &new_order, JOSE, b"[1,2,3]".to_vec())
        .await
        .unwrap();
    c.expect("body is a JSON array", r, "malformed", 400).await;
    let r = a
        .send_raw("POST", &new_order, JOSE, vec![0xff, 0xfe, 0x00])
        .await
        .unwrap();
    c.expect("body is binary", r, "malformed", 400).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = a
        .send_raw("POST", &new_order, JOSE, deep.into_bytes())
        .await
        .unwrap();
    c.expect("deeply nested JSON", r, "malformed", 400).await;
    let n = nonce(&mut a).await;
    let body = jws_body(&a.key, &a.protected(&new_order, &n), Some(&json!({})));
    let r = a
        .send_raw("POST", &new_order, Some("application/json"), body)
        .await
        .unwrap();
    c.expect("wrong content type", r, "malformed", 415).await;
    let r = a
        .send_raw("POST", &new_order, None, b"{}".to_vec())
        .await
        .unwrap();
    c.expect("no content type", r, "malformed", 415).await;
    let huge = vec![b'a'; 70 * 1024];
    let r = a.send_raw("POST", &new_order, JOSE, huge).await.unwrap();
    c.expect("oversized body", r, "malformed", 413).await;
    let r = a
        .send_raw("GET", &pending_url, None, Vec::new())
        .await
        .unwrap();
    c.expect("GET on a POST-as-GET resource", r, "malformed", 405)
        .await;
    let unknown = new_order.replace("new-order", "nope");
    let r = a
        .send_raw("POST", &unknown, JOSE, b"{}".to_vec())
        .await
        .unwrap();
    c.expect("unknown resource", r, "malformed", 404).await;
    let r = a
        .send_raw(
            "POST",
            &new_order.replace("new-order", "acct/..%2f..%2fetc"),
            JOSE,
            b"{}".to_vec(),
        )
        .await
        .unwrap();
    c.expect("path traversal in an id", r, "malformed", 404)
        .await;

    // --- JWS serialization ----------------------------------------------------------------
    let n = nonce(&mut a).await;
    let mut good = a
        .key
        .jws(&a.protected(&new_order, &n), Some(&json!({})))
        .unwrap();
    good["protected"] = json!("!!!not-base64!!!");
    let r = a
        .send_raw("POST", &new_order, JOSE, good.to_string().into_bytes())
        .await
        .unwrap();
    c.expect("protected is not base64url", r, "malformed", 400)
        .await;
    let n = nonce(&mut a).await;
    let mut padded = a
        .key
        .jws(
            &a.protected(&new_order, &n),
            Some(&json!({"identifiers": []})),
        )
        .unwrap();
    padded["payload"] = json!(format!("{}=", padded["payload"].as_str().unwrap()));
    let r = a
        .send_raw("POST", &new_order, JOSE, padded.to_string().into_bytes())
        .await
        .unwrap();
    c.expect("payload with base64 padding", r, "malformed", 400)
        .await;
    let not_json_header =
        json!({"protected": b64::encode("not json"), "payload": "", "signature": "AA"});
    let r = a
        .send_raw(
            "POST",
            &new_order,
            JOSE,
            not_json_header.to_string().into_bytes(),
        )
        .await
        .unwrap();
    c.expect("protected header is not JSON", r, "malformed", 400)
        .await;
    let n = nonce(&mut a).await;
    let mut unprotected = a
        .key
        .jws(&a.protected(&new_order, &n), Some(&json!({})))
        .unwrap();
    unprotected["header"] = json!({"kid": kid_b});
    let r = a
        .send_raw(
            "POST",
            &new_order,
            JOSE,
            unprotected.to_string().into_bytes(),
        )
        .await
        .unwrap();
    c.expect("unprotected header", r, "malformed", 400).await;
    let general = json!({"payload": "", "signatures": []});
    let r = a
        .send_raw("POST", &new_order, JOSE, general.to_string().into_bytes())
        .await
        .unwrap();
    c.expect("general serialization", r, "malformed", 400).await;
    let compact = b"\"eyJhbGciOiJFUzI1NiJ9..AA\"".to_vec();
    let r = a.send_raw("POST", &new_order, JOSE, compact).await.unwrap();
    c.expect("compact serialization", r, "malformed", 400).await;

    // --- Algorithms -----------------------------------------------------------------------
    for (alg, sig) in [
        ("none", ""),
        ("HS256", "AAAA"),
        ("ES512", "AAAA"),
        ("RS256", "AAAA"),
    ] {
        let n = nonce(&mut a).await;
        let mut p = a.protected(&new_order, &n);
        p["alg"] = json!(alg);
        let body = json!({
            "protected": b64::encode(p.to_string()),
            "payload": b64::encode(json!({"identifiers": []}).to_string()),
            "signature": sig,
        });
        let r = a
            .send_raw("POST", &new_order, JOSE, body.to_string().into_bytes())
            .await
            .unwrap();
        let algs = r.json()["algorithms"].clone();
        c.expect(&format!("alg {alg}"), r, "badSignatureAlgorithm", 400)
            .await;
        assert!(
            algs.as_array().is_some_and(|a| a.contains(&json!("ES256"))),
            "algorithms list"
        );
    }
    let n = nonce(&mut a).await;
    let mut p = a.protected(&new_order, &n);
    p.as_object_mut().unwrap().remove("alg");
    let r = a
        .send_raw(
            "POST",
            &new_order,
            JOSE,
            jws_body(&a.key, &p, Some(&json!({}))),
        )
        .await
        .unwrap();
    c.expect("no alg", r, "malformed", 400).await;

    // --- URL, nonce, key selection ----------------------------------------------------------
    let n = nonce(&mut a).await;
    let p = a.protected(&format!("{new_order}/other"), &n);
    let r = a
        .send_raw(
            "POST",
            &new_order,
            JOSE,
            jws_body(&a.key, &p, Some(&json!({}))),
        )
        .await
        .unwrap();
    c.expect("url differs from the request URL", r, "unauthorized", 403)
        .await;
    let n = nonce(&mut a).await;
    let mut p = a.protected(&new_order, &n);
    p.as_object_mut().unwrap().remove("url");
    let r = a
        .send_raw(
            "POST",
            &new_order,
            JOSE,
            jws_body(&a.key, &p, Some(&json!({}))),
        )
        .await
        .unwrap();
    c.expect("no url", r, "malformed", 400).await;
    let mut p = a.protected(&new_order, "x");
    p.as_object_mut().unwrap().remove("nonce");
    let r = a
        .send_raw(
            "POST",
            &new_order,
            JOSE,
            jws_body(&a.key, &p, Some(&json!({}))),
        )
        .await
        .unwrap();
    assert!(
        r.header("replay-nonce").is_some(),
        "badNonce carries a fresh nonce"
    );
    c.expect("no nonce", r, "badNonce", 400).await;
    let p = a.protected(&new_order, &b64::encode([0u8; 40]));
    let r = a
        .send_raw(
            "POST",
            &new_order,
            JOSE,
            jws_body(&a.key, &p, Some(&json!({}))),
        )
        .await
        .unwrap();
    assert!(r.header("replay-nonce").is_some());
    c.expect("forged nonce", r, "badNonce", 400).await;
    // A nonce spent by a request that was refused later is spent all the same.
    let n = nonce(&mut a).await;
    let p = a.protected(&pending_url, &n);
    let r = a
        .send_raw(
            "POST",
            &pending_url,
            JOSE,
            jws_body(&a.key, &p, Some(&json!({"x": 1}))),
        )
        .await
        .unwrap();
    c.expect("payload on an order read", r, "malformed", 400)
        .await;
    let r = a
        .send_raw("POST", &pending_url, JOSE, jws_body(&a.key, &p, None))
        .await
        .unwrap();
    assert!(r.header("replay-nonce").is_some());
    c.expect("replayed nonce", r, "badNonce", 400).await;

    let n = nonce(&mut a).await;
    let mut p = a.protected(&new_order, &n);
    p["jwk"] = a.key.jwk();
    let r = a
        .send_raw(
            "POST",
            &new_order,
            JOSE,
            jws_body(&a.key, &p, Some(&json!({}))),
        )
        .await
        .unwrap();
    c.expect("both jwk and kid", r, "malformed", 400).await;
    let n = nonce(&mut a).await;
    let p = json!({"alg": "ES256", "nonce": n, "url": new_order, "jwk": a.key.jwk()});
    let r = a
        .send_raw(
            "POST",
            &new_order,
            JOSE,
            jws_body(&a.key, &p, Some(&json!({}))),
        )
        .await
        .unwrap();
    c.expect("jwk where kid is required", r, "malformed", 400)
        .await;
    let n = nonce(&mut a).await;
    let p = json!({"alg": "ES256", "nonce": n, "url": new_account, "kid": kid_a});
    let r = a
        .send_raw(
            "POST",
            &new_account,
            JOSE,
            jws_body(&a.key, &p, Some(&json!({}))),
        )
        .await
        .unwrap();
    c.expect("kid on newAccount", r, "malformed", 400).await;
    let n = nonce(&mut a).await;
    let p = json!({"alg": "ES256", "nonce": n, "url": new_order});
    let r = a
        .send_raw(
            "POST",
            &new_order,
            JOSE,
            jws_body(&a.key, &p, Some(&json!({}))),
        )
        .await
        .unwrap();
    c.expect("neither jwk nor kid", r, "malformed", 400).await;
    let n = nonce(&mut a).await;
    let p = json!({"alg": "ES256", "nonce": n, "url": new_order, "kid": kid_b});
    let r = a
        .send_raw(
            "POST",
            &new_order,
            JOSE,
            jws_body(
                &a.key,
                &p,
                Some(&json!({"identifiers": [{"type": "dns", "value": format!("z.{DOMAIN}")}]})),
            ),
        )
        .await
        .unwrap();
    c.expect("kid of another account", r, "malformed", 400)
        .await;
    let n = nonce(&mut a).await;
    let ghost = format!("{}zz", &kid_a[..kid_a.len() - 2]);
    let p = json!({"alg": "ES256", "nonce": n, "url": new_order, "kid": ghost});
    let r = a
        .send_raw(
            "POST",
            &new_order,
            JOSE,
            jws_body(&a.key, &p, Some(&json!({}))),
        )
        .await
        .unwrap();
    c.expect("kid of no account", r, "accountDoesNotExist", 400)
        .await;
    let n = nonce(&mut a).await;
    let p = json!({"alg": "ES256", "nonce": n, "url": new_order, "kid": "https://elsewhere.test/acct/1"});
    let r = a
        .send_raw(
            "POST",
            &new_order,
            JOSE,
            jws_body(&a.key, &p, Some(&json!({}))),
        )
        .await
        .unwrap();
    c.expect("kid on another server", r, "accountDoesNotExist", 400)
        .await;
    let n = nonce(&mut a).await;
    let mut sig = a
        .key
        .jws(&a.protected(&new_order, &n), Some(&json!({})))
        .unwrap();
    let mut bytes = b64::decode(sig["signature"].as_str().unwrap(), 1024).unwrap();
    bytes[5] ^= 0x55;
    sig["signature"] = json!(b64::encode(bytes));
    let r = a
        .send_raw("POST", &new_order, JOSE, sig.to_string().into_bytes())
        .await
        .unwrap();
    c.expect("tampered signature", r, "malformed", 400).await;
    let n = nonce(&mut a).await;
    let p = json!({"alg": "ES256", "nonce": n, "url": new_account, "jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}});
    let r = a
        .send_raw(
            "POST",
            &new_account,
            JOSE,
            jws_body(&a.key, &p, Some(&json!({}))),
        )
        .await
        .unwrap();
    c.expect("unusable jwk", r, "badPublicKey", 400).await;
    let n = nonce(&mut a).await;
    let mut priv_jwk = a.key.jwk();
    priv_jwk["d"] = json!("AAAA");
    let p = json!({"alg": "ES256", "nonce": n, "url": new_account, "jwk": priv_jwk});
    let r = a
        .send_raw(
            "POST",
            &new_account,
            JOSE,
            jws_body(&a.key, &p, Some(&json!({}))),
        )
        .await
        .unwrap();
    c.expect("jwk with private key", r, "badPublicKey", 400)
        .await;

    // --- Accounts ---------------------------------------------------------------------------
    let mut fresh = t.client().await;
    for (contact, kind) in [
        ("tel:+15555550100", "unsupportedContact"),
        ("mailto:a@b@c", "invalidContact"),
        ("mailto:x@example.test?subject=hi", "invalidContact"),
        ("https://", "invalidContact"),
    ] {
        let url = fresh.dir.new_account.clone();
        let r = fresh
            .post(&url, Some(&json!({"contact": [contact]})))
            .await
            .unwrap();
        c.expect(&format!("contact {contact}"), r, kind, 400).await;
    }
    let url = fresh.dir.new_account.clone();
    let r = fresh
        .post(&url, Some(&json!({"onlyReturnExisting": true})))
        .await
        .unwrap();
    c.expect(
        "onlyReturnExisting for a new key",
        r,
        "accountDoesNotExist",
        400,
    )
    .await;
    let r = fresh
        .post(&url, Some(&json!({"onlyReturnExisting": "yes"})))
        .await
        .unwrap();
    c.expect("onlyReturnExisting not a boolean", r, "malformed", 400)
        .await;
    let r = fresh.post(&url, None).await.unwrap();
    c.expect("POST-as-GET to newAccount", r, "malformed", 400)
        .await;
    let eab = json!({"protected": b64::encode(json!({"alg": "HS256", "kid": "nope", "url": url}).to_string()), "payload": b64::encode(fresh.key.jwk().to_string()), "signature": "AAAA"});
    let r = fresh
        .post(&url, Some(&json!({"externalAccountBinding": eab})))
        .await
        .unwrap();
    c.expect("EAB with an unknown key id", r, "unauthorized", 403)
        .await;
    // RFC 8555 §7.3.6: a deactivated account's key gets nothing back, not even its account.
    gone.kid = None;
    for (case, payload) in [
        ("newAccount with a deactivated account's key", json!({})),
        (
            "onlyReturnExisting with a deactivated account's key",
            json!({"onlyReturnExisting": true}),
        ),
    ] {
        let r = gone.post(&url, Some(&payload)).await.unwrap();
        assert!(r.header("location").is_none(), "{case}: Location");
        c.expect(case, r, "unauthorized", 403).await;
    }
    let r = a.post(&kid_b, None).await.unwrap();
    c.expect("reading another account", r, "unauthorized", 403)
        .await;
    let r = a
        .post(&kid_a, Some(&json!({"status": "revoked"})))
        .await
        .unwrap();
    c.expect("setting status revoked", r, "malformed", 400)
        .await;
    let inner = a
        .key
        .jws(
            &json!({"alg": "ES256", "kid": kid_a, "url": key_change}),
            Some(&json!({"account": kid_a, "oldKey": a.key.jwk()})),
        )
        .unwrap();
    let r = a.post(&key_change, Some(&inner)).await.unwrap();
    c.expect("key change with inner kid", r, "malformed", 400)
        .await;
    let new_key = ClientKey::es256();
    let inner = new_key
        .jws(
            &json!({"alg": "ES256", "jwk": new_key.jwk(), "url": key_change}),
            Some(&json!({"account": kid_b, "oldKey": a.key.jwk()})),
        )
        .unwrap();
    let r = a.post(&key_change, Some(&inner)).await.unwrap();
    c.expect("key change naming another account", r, "unauthorized", 403)
        .await;
    let inner = b
        .key
        .jws(
            &json!({"alg": "ES256", "jwk": b.key.jwk(), "url": key_change}),
            Some(&json!({"account": kid_a, "oldKey": a.key.jwk()})),
        )
        .unwrap();
    let r = a.post(&key_change, Some(&inner)).await.unwrap();
    c.expect("key change to another account's key", r, "malformed", 409)
        .await;

    // --- Identifiers ----------------------------------------------------------------------
    let cases: Vec<(Value, &str, u16)> = vec![
        (
            json!([{"type": "dns", "value": "localhost"}]),
            "rejectedIdentifier",
            400,
        ),
        (
            json!([{"type": "dns", "value": "printer.localhost"}]),
            "rejectedIdentifier",
            400,
        ),
        (
            json!([{"type": "ip", "value": "8.8.8.8"}]),
            "rejectedIdentifier",
            400,
        ),
        (
            json!([{"type": "ip", "value": "2001:db8::1"}]),
            "rejectedIdentifier",
            400,
        ),
        (
            json!([{"type": "ip", "value": "not-an-ip"}]),
            "malformed",
            400,
        ),
        (
            json!([{"type": "dns", "value": "www.example.com"}]),
            "rejectedIdentifier",
            400,
        ),
        (
            json!([{"type": "dns", "value": format!("*.{DOMAIN}")}]),
            "rejectedIdentifier",
            400,
        ),
        (
            json!([{"type": "dns", "value": format!("bad_name.{DOMAIN}")}]),
            "rejectedIdentifier",
            400,
        ),
        (
            json!([{"type": "dns", "value": format!("{}.{DOMAIN}", "a".repeat(300))}]),
            "rejectedIdentifier",
            400,
        ),
        (
            json!([{"type": "email", "value": "a@b.test"}]),
            "unsupportedIdentifier",
            400,
        ),
        (json!([{"type": "dns"}]), "malformed", 400),
        (json!([{"type": "dns", "value": 5}]), "malformed", 400),
        (json!(["x"]), "malformed", 400),
        (json!([]), "malformed", 400),
        (json!("dns"), "malformed", 400),
        (
            json!([{"type": "dns", "value": "localhost"}, {"type": "ip", "value": "1.1.1.1"}]),
            "rejectedIdentifier",
            400,
        ),
        (
            json!([{"type": "dns", "value": format!("x.{DOMAIN}"), "ancestorDomain": "example.test"}]),
            "rejectedIdentifier",
            400,
        ),
        (
            json!([{"type": "dns", "value": format!("ooo.{DOMAIN}"), "ancestorDomain": format!("oo.{DOMAIN}")}]),
            "malformed",
            400,
        ),
        (
            json!([{"type": "ip", "value": "10.0.0.1", "ancestorDomain": DOMAIN}]),
            "malformed",
            400,
        ),
        (
            Value::Array(
                (0..101)
                    .map(|i| json!({"type": "dns", "value": format!("n{i}.{DOMAIN}")}))
                    .collect(),
            ),
            "rejectedIdentifier",
            400,
        ),
    ];
    for (ids, kind, status) in cases {
        let r = a
            .post(&new_order, Some(&json!({"identifiers": ids})))
            .await
            .unwrap();
        let subs = r.json()["subproblems"].clone();
        c.expect(&format!("newOrder {ids}"), r, kind, status).await;
        if ids.as_array().is_some_and(|a| a.len() == 2) {
            assert_eq!(
                subs.as_array().map(Vec::len),
                Some(2),
                "one subproblem per identifier"
            );
        }
    }
    let r = a.post(&new_order, Some(&json!({"identifiers": [{"type": "dns", "value": format!("q.{DOMAIN}")}], "profile": "nope"}))).await.unwrap();
    c.expect("unknown profile", r, "invalidProfile", 400).await;
    let r = a.post(&new_order, Some(&json!({"identifiers": [{"type": "dns", "value": format!("q.{DOMAIN}")}], "notAfter": "2999-01-01T00:00:00Z"}))).await.unwrap();
    c.expect("notAfter beyond the leaf lifetime", r, "malformed", 400)
        .await;
    let r = a.post(&new_order, Some(&json!({"identifiers": [{"type": "dns", "value": format!("q.{DOMAIN}")}], "notBefore": "yesterday"}))).await.unwrap();
    c.expect("notBefore not RFC 3339", r, "malformed", 400)
        .await;
    let r = a.post(&new_order, None).await.unwrap();
    c.expect("POST-as-GET to newOrder", r, "malformed", 400)
        .await;
    let r = a
        .post(
            &new_authz,
            Some(&json!({"identifier": {"type": "dns", "value": format!("*.{DOMAIN}")}})),
        )
        .await
        .unwrap();
    c.expect("newAuthz for a wildcard", r, "malformed", 400)
        .await;
    let r = a
        .post(
            &new_authz,
            Some(&json!({"identifier": {"type": "dns", "value": "localhost"}})),
        )
        .await
        .unwrap();
    c.expect("newAuthz for localhost", r, "rejectedIdentifier", 400)
        .await;
    let r = a.post(&new_authz, Some(&json!({"identifier": {"type": "dns", "value": DOMAIN, "subdomainAuthAllowed": "yes"}}))).await.unwrap();
    c.expect("subdomainAuthAllowed not a boolean", r, "malformed", 400)
        .await;

    // --- Objects of others, order state -----------------------------------------------------
    let r = a.post(&b_order_url, None).await.unwrap();
    c.expect("reading another account's order", r, "unauthorized", 403)
        .await;
    let b_authz = b_order["authorizations"][0].as_str().unwrap();
    let r = a.post(b_authz, None).await.unwrap();
    c.expect(
        "reading another account's authorization",
        r,
        "unauthorized",
        403,
    )
    .await;
    let b_cert = b_order_url.replace("/order/", "/cert/");
    let r = a.post(&b_cert, None).await.unwrap();
    c.expect("unknown certificate", r, "malformed", 404).await;
    let (csr, _) = make_csr(&[format!("p.{DOMAIN}")], &[]).unwrap();
    let r = a
        .finalize(pending["finalize"].as_str().unwrap(), &csr)
        .await
        .unwrap();
    c.expect("finalize a pending order", r, "orderNotReady", 403)
        .await;

    // --- CSRs ---------------------------------------------------------------------------------
    let fin = ready["finalize"].as_str().unwrap().to_string();
    let (extra, _) = make_csr(&[ready_name.clone(), format!("extra.{DOMAIN}")], &[]).unwrap();
    let r = a.finalize(&fin, &extra).await.unwrap();
    c.expect("CSR with an extra name", r, "badCSR", 400).await;
    let (missing, _) = make_csr(&[format!("other.{DOMAIN}")], &[]).unwrap();
    let r = a.finalize(&fin, &missing).await.unwrap();
    c.expect("CSR with a missing name", r, "badCSR", 400).await;
    let (with_ip, _) = make_csr(
        std::slice::from_ref(&ready_name),
        &["10.0.0.9".parse().unwrap()],
    )
    .unwrap();
    let r = a.finalize(&fin, &with_ip).await.unwrap();
    c.expect("CSR with an extra IP", r, "badCSR", 400).await;
    let (local, _) = make_csr(&[ready_name.clone(), "localhost".into()], &[]).unwrap();
    let r = a.finalize(&fin, &local).await.unwrap();
    c.expect("CSR with localhost", r, "badCSR", 400).await;
    let (public_ip, _) = make_csr(
        std::slice::from_ref(&ready_name),
        &["8.8.8.8".parse().unwrap()],
    )
    .unwrap();
    let r = a.finalize(&fin, &public_ip).await.unwrap();
    c.expect("CSR with a public IP", r, "badCSR", 400).await;
    let r = a.finalize(&fin, b"not a csr").await.unwrap();
    c.expect("CSR garbage", r, "badCSR", 400).await;
    let mut tampered = make_csr(std::slice::from_ref(&ready_name), &[]).unwrap().0;
    let last = tampered.len() - 3;
    tampered[last] ^= 0x01;
    let r = a.finalize(&fin, &tampered).await.unwrap();
    c.expect("CSR with a bad signature", r, "badCSR", 400).await;
    let r = a.post(&fin, Some(&json!({"csr": "***"}))).await.unwrap();
    c.expect("CSR not base64url", r, "badCSR", 400).await;
    let r = a.post(&fin, Some(&json!({"csr": 12}))).await.unwrap();
    c.expect("CSR not a string", r, "malformed", 400).await;
    let r = a
        .post(
            &fin,
            Some(&json!({"csr": b64::encode(vec![0x30u8; 20_000])})),
        )
        .await
        .unwrap();
    c.expect("CSR oversized", r, "badCSR", 400).await;

    // --- Revocation ---------------------------------------------------------------------------
    // An account with no authorization for the certificate's names (`a` pre-authorized the
    // whole domain, which RFC 8555 §7.6 lets revoke it).
    let r = unauthorized.revoke(&b_leaf, Some(1)).await.unwrap();
    c.expect(
        "revoking another account's certificate",
        r,
        "unauthorized",
        403,
    )
    .await;
    let r = b.revoke(&b_leaf, Some(2)).await.unwrap();
    c.expect(
        "revocation reason caCompromise",
        r,
        "badRevocationReason",
        400,
    )
    .await;
    let r = b.revoke(&b_leaf, Some(77)).await.unwrap();
    c.expect("unknown revocation reason", r, "badRevocationReason", 400)
        .await;
    let r = b
        .post(
            &revoke,
            Some(&json!({"certificate": b64::encode(b"garbage")})),
        )
        .await
        .unwrap();
    c.expect("revoking garbage", r, "malformed", 400).await;
    let other_cert = ragw_acme_ca::ca::pem_certificates(t.ca.root_pem()).remove(0);
    let r = b.revoke(&other_cert, None).await.unwrap();
    c.expect(
        "revoking a certificate this CA did not issue",
        r,
        "malformed",
        404,
    )
    .await;
    let mut stranger = t.client().await;
    let r = stranger.revoke(&b_leaf, None).await.unwrap();
    c.expect("revoking with an unrelated jwk", r, "unauthorized", 403)
        .await;

    eprintln!("bad-input corpus: {} cases checked", c.checked);
    assert!(c.checked >= 80, "only {} cases ran", c.checked);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_answers_rate_limited_with_retry_after() {
    let t = TestCa::start_with(|c| {
        c.account_requests_per_second = 1;
        c.account_request_burst = 3;
    })
    .await;
    let mut a = t.account().await;
    let kid = a.kid.clone().unwrap();
    let mut limited = None;
    for _ in 0..10 {
        let r = a.post(&kid, None).await.unwrap();
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the limit was never reached");
    assert_eq!(r.problem_type().as_deref(), Some("rateLimited"));
    assert!(r.header("retry-after").is_some());
    t.stop().await;
}
