//! Conformance checks for the ACME CA's part of the store, run against every backend by
//! [`crate::conformance::run_all`].

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use serde_json::json;

use crate::{
    AcmeIdentifier, AuditFilter, AuthzStatus, ChallengeStatus, NewAcmeAccount, NewAcmeCertificate,
    NewAcmeOrder, NewAuthzSpec, NewOrderIdentifier, OrderIdentifier, OrderStatus, Store,
    StoreError, ValidationOutcome,
};

type Fresh = Arc<dyn Store>;

const HOUR: i64 = 3_600_000_000;

fn now() -> i64 {
    crate::logic::now_micros()
}

fn account(n: u32) -> NewAcmeAccount {
    NewAcmeAccount {
        jwk: format!("{{\"kty\":\"EC\",\"n\":{n}}}"),
        thumbprint: format!("thumb-{n}"),
        contacts: vec![format!("mailto:ops{n}@example.test")],
        eab_kid: None,
        details: json!({"alg": "ES256"}),
    }
}

fn spec(value: &str, subdomain: bool) -> NewAuthzSpec {
    NewAuthzSpec {
        identifier: AcmeIdentifier::dns(value),
        subdomain_auth: subdomain,
        wildcard: false,
        challenge_types: vec!["dns-01".into(), "http-01".into()],
        expires: now() + 24 * HOUR,
    }
}

fn order_for(account_id: &str, names: &[&str]) -> NewAcmeOrder {
    NewAcmeOrder {
        account_id: account_id.to_string(),
        identifiers: names
            .iter()
            .map(|n| NewOrderIdentifier {
                order: OrderIdentifier {
                    identifier: AcmeIdentifier::dns(*n),
                    ancestor_domain: None,
                },
                new_authz: spec(n, false),
            })
            .collect(),
        profile: "server".into(),
        not_before: None,
        not_after: None,
        expires: now() + 24 * HOUR,
    }
}

fn cert_for(order_id: &str, account_id: &str, serial: &str, names: &[&str]) -> NewAcmeCertificate {
    NewAcmeCertificate {
        serial_hex: serial.to_string(),
        order_id: Some(order_id.to_string()),
        account_id: Some(account_id.to_string()),
        identifiers: names.iter().map(|n| AcmeIdentifier::dns(*n)).collect(),
        spki_sha256: "ab".repeat(32),
        profile: "server".into(),
        not_before: now(),
        not_after: now() + 24 * HOUR,
        chain: vec![b"leaf".to_vec(), b"intermediate".to_vec()],
    }
}

async fn validate_all(store: &Fresh, account_id: &str, authz_ids: &[String]) {
    for id in authz_ids {
        let authz = store.acme_get_authz(id).await.unwrap().unwrap();
        if authz.status == AuthzStatus::Valid {
            continue;
        }
        store
            .acme_record_validation(
                &authz.challenges[0].id,
                account_id,
                ValidationOutcome::Valid {
                    authz_expires: now() + 24 * HOUR,
                },
            )
            .await
            .unwrap();
    }
}

async fn audit_count(store: &Fresh, action: &str) -> usize {
    store
        .query_audit(
            &AuditFilter {
                action: Some(action.into()),
                ..Default::default()
            },
            0,
            1000,
        )
        .await
        .unwrap()
        .len()
}

async fn verify_ok(store: &Fresh) {
    let report = store.verify_audit().await.unwrap();
    assert!(report.broken.is_none(), "{:?}", report.broken);
}

pub async fn acme_nonces_and_secrets(store: Fresh) {
    let exp = now() + HOUR;
    assert!(store.acme_use_nonce("n1", exp).await.unwrap());
    assert!(!store.acme_use_nonce("n1", exp).await.unwrap());
    assert!(store.acme_use_nonce("n2", exp).await.unwrap());
    let (acct, _) = store.acme_create_account(account(7)).await.unwrap();
    let (fresh, found) = store
        .acme_begin_request("n3", exp, Some(&acct.id))
        .await
        .unwrap();
    assert!(fresh);
    assert_eq!(found.unwrap().id, acct.id);
    let (fresh, found) = store
        .acme_begin_request("n3", exp, Some("nobody"))
        .await
        .unwrap();
    assert!(!fresh);
    assert!(found.is_none());
    let head = store.verify_audit().await.unwrap().head_seq;
    let a = store.acme_secret("nonce-key", "first").await.unwrap();
    let b = store.acme_secret("nonce-key", "second").await.unwrap();
    assert_eq!(a, "first");
    assert_eq!(b, "first");
    // None of these writes an audit event.
    assert_eq!(store.verify_audit().await.unwrap().head_seq, head);
}

pub async fn acme_accounts(store: Fresh) {
    let (a, created) = store.acme_create_account(account(1)).await.unwrap();
    assert!(created);
    let (again, created) = store.acme_create_account(account(1)).await.unwrap();
    assert!(!created);
    assert_eq!(a.id, again.id);
    let (b, _) = store.acme_create_account(account(2)).await.unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(
        store
            .acme_find_account("thumb-2")
            .await
            .unwrap()
            .unwrap()
            .id,
        b.id
    );

    let updated = store
        .acme_update_contacts(&a.id, vec!["https://device.example.test".into()])
        .await
        .unwrap();
    assert_eq!(updated.contacts, vec!["https://device.example.test"]);

    // The key of another account cannot be taken over; a stale old key is refused too.
    assert!(matches!(
        store
            .acme_change_key(&a.id, "thumb-1", "{}", "thumb-2")
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .acme_change_key(&a.id, "thumb-9", "{}", "thumb-3")
            .await,
        Err(StoreError::Conflict(_))
    ));
    let rolled = store
        .acme_change_key(&a.id, "thumb-1", "{\"new\":1}", "thumb-3")
        .await
        .unwrap();
    assert_eq!(rolled.thumbprint, "thumb-3");
    assert!(store.acme_find_account("thumb-1").await.unwrap().is_none());

    let d = store.acme_deactivate_account(&a.id).await.unwrap();
    assert_eq!(d.status.as_str(), "deactivated");
    assert!(matches!(
        store
            .acme_create_order(order_for(&a.id, &["x.devices.example.test"]))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.acme_deactivate_account(&a.id).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(audit_count(&store, "acme.account.created").await, 2);
    assert_eq!(audit_count(&store, "acme.account.key_changed").await, 1);
    assert_eq!(audit_count(&store, "acme.account.deactivated").await, 1);
    verify_ok(&store).await;
}

pub async fn acme_order_lifecycle(store: Fresh) {
    let (acct, _) = store.acme_create_account(account(1)).await.unwrap();
    let names = ["a1.devices.example.test", "a2.devices.example.test"];
    let order = store
        .acme_create_order(order_for(&acct.id, &names))
        .await
        .unwrap();
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(order.authz_ids.len(), 2);
    let authz = store
        .acme_get_authz(&order.authz_ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(authz.status, AuthzStatus::Pending);
    assert_eq!(authz.challenges.len(), 2);
    assert_eq!(authz.challenges[0].kind, "dns-01");
    assert_eq!(authz.challenges[0].token.len(), 32);

    // A second order for the same name shares the pending authorization.
    let twin = store
        .acme_create_order(order_for(&acct.id, &names[..1]))
        .await
        .unwrap();
    assert_eq!(twin.authz_ids[0], order.authz_ids[0]);

    assert!(matches!(
        store.acme_begin_finalize(&order.id, &acct.id).await,
        Err(StoreError::Conflict(s)) if s == "pending"
    ));
    validate_all(&store, &acct.id, &order.authz_ids[..1]).await;
    let o = store.acme_get_order(&order.id).await.unwrap().unwrap();
    assert_eq!(o.status, OrderStatus::Pending);
    validate_all(&store, &acct.id, &order.authz_ids).await;
    let o = store.acme_get_order(&order.id).await.unwrap().unwrap();
    assert_eq!(o.status, OrderStatus::Ready);

    // A decided challenge cannot be decided again.
    let ch = store
        .acme_get_authz(&order.authz_ids[0])
        .await
        .unwrap()
        .unwrap()
        .challenges[0]
        .clone();
    assert_eq!(ch.status, ChallengeStatus::Valid);
    assert!(matches!(
        store
            .acme_record_validation(
                &ch.id,
                &acct.id,
                ValidationOutcome::Invalid { error: "{}".into() }
            )
            .await,
        Err(StoreError::Conflict(_))
    ));

    // Only the owner may finalize; only once.
    let (other, _) = store.acme_create_account(account(2)).await.unwrap();
    assert!(matches!(
        store.acme_begin_finalize(&order.id, &other.id).await,
        Err(StoreError::NotFound(_))
    ));
    let p = store
        .acme_begin_finalize(&order.id, &acct.id)
        .await
        .unwrap();
    assert_eq!(p.status, OrderStatus::Processing);
    assert!(matches!(
        store.acme_begin_finalize(&order.id, &acct.id).await,
        Err(StoreError::Conflict(s)) if s == "processing"
    ));
    let done = store
        .acme_complete_finalize(cert_for(&order.id, &acct.id, "0A0B", &names))
        .await
        .unwrap();
    assert_eq!(done.status, OrderStatus::Valid);
    assert_eq!(done.cert_serial.as_deref(), Some("0a0b"));

    let c = store.acme_get_certificate("0a0b").await.unwrap().unwrap();
    assert_eq!(c.chain.len(), 2);
    assert_eq!(c.identifiers.len(), 2);
    assert!(!c.revoked);
    let page = store.acme_list_certificates(10, None).await.unwrap();
    assert_eq!(page.items.len(), 1);

    let orders = store.acme_list_orders(&acct.id, 1, None).await.unwrap();
    assert_eq!(orders.items.len(), 1);
    let rest = store
        .acme_list_orders(&acct.id, 10, orders.next.as_deref())
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert!(rest.next.is_none());

    let r = store
        .acme_revoke_certificate("0A0B", 1, "acme-account:x")
        .await
        .unwrap();
    assert!(r.revoked);
    assert_eq!(r.revocation_reason, Some(1));
    assert!(matches!(
        store.acme_revoke_certificate("0a0b", 1, "x").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.acme_revoke_certificate("ffff", 1, "x").await,
        Err(StoreError::NotFound(_))
    ));
    let revoked = store.acme_revoked_unexpired().await.unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].serial_hex, "0a0b");

    let counts = store.acme_counts().await.unwrap();
    assert_eq!(counts.certificates, 1);
    assert_eq!(counts.revoked, 1);
    assert_eq!(counts.orders, 2);
    assert_eq!(audit_count(&store, "acme.authz.valid").await, 2);
    assert_eq!(audit_count(&store, "acme.certificate.issued").await, 1);
    assert_eq!(audit_count(&store, "acme.certificate.revoked").await, 1);
    verify_ok(&store).await;
}

pub async fn acme_failures_invalidate(store: Fresh) {
    let (acct, _) = store.acme_create_account(account(1)).await.unwrap();
    let order = store
        .acme_create_order(order_for(&acct.id, &["f.devices.example.test"]))
        .await
        .unwrap();
    let authz = store
        .acme_get_authz(&order.authz_ids[0])
        .await
        .unwrap()
        .unwrap();
    let (ch, az) = store
        .acme_record_validation(
            &authz.challenges[0].id,
            &acct.id,
            ValidationOutcome::Invalid {
                error: json!({"type": "urn:ietf:params:acme:error:dns"}).to_string(),
            },
        )
        .await
        .unwrap();
    assert_eq!(ch.status, ChallengeStatus::Invalid);
    assert!(ch.error.unwrap().contains("error:dns"));
    assert_eq!(az.status, AuthzStatus::Invalid);
    let o = store.acme_get_order(&order.id).await.unwrap().unwrap();
    assert_eq!(o.status, OrderStatus::Invalid);

    // Another account may not touch this account's challenge.
    let (other, _) = store.acme_create_account(account(2)).await.unwrap();
    let order2 = store
        .acme_create_order(order_for(&acct.id, &["g.devices.example.test"]))
        .await
        .unwrap();
    let authz2 = store
        .acme_get_authz(&order2.authz_ids[0])
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        store
            .acme_record_validation(
                &authz2.challenges[0].id,
                &other.id,
                ValidationOutcome::Valid {
                    authz_expires: now() + HOUR
                }
            )
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.acme_deactivate_authz(&authz2.id, &other.id).await,
        Err(StoreError::NotFound(_))
    ));
    let d = store
        .acme_deactivate_authz(&authz2.id, &acct.id)
        .await
        .unwrap();
    assert_eq!(d.status, AuthzStatus::Deactivated);
    assert_eq!(
        store
            .acme_get_order(&order2.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        OrderStatus::Invalid
    );

    // A finalization that fails leaves the order invalid with its problem.
    let order3 = store
        .acme_create_order(order_for(&acct.id, &["h.devices.example.test"]))
        .await
        .unwrap();
    validate_all(&store, &acct.id, &order3.authz_ids).await;
    store
        .acme_begin_finalize(&order3.id, &acct.id)
        .await
        .unwrap();
    let failed = store
        .acme_fail_finalize(&order3.id, "{\"type\":\"x\"}")
        .await
        .unwrap();
    assert_eq!(failed.status, OrderStatus::Invalid);
    assert!(failed.error.is_some());

    // An authorization that expired no longer makes an order ready.
    let order4 = store
        .acme_create_order(order_for(&acct.id, &["i.devices.example.test"]))
        .await
        .unwrap();
    let authz4 = store
        .acme_get_authz(&order4.authz_ids[0])
        .await
        .unwrap()
        .unwrap();
    store
        .acme_record_validation(
            &authz4.challenges[0].id,
            &acct.id,
            ValidationOutcome::Valid {
                authz_expires: now() - 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .acme_get_authz(&authz4.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        AuthzStatus::Expired
    );
    assert_eq!(
        store
            .acme_get_order(&order4.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        OrderStatus::Invalid
    );
    verify_ok(&store).await;
}

/// RFC 9444: a valid ancestor authorization with subdomain authorization makes orders for
/// names under it `ready` at once, for the same account only, label-wise.
pub async fn acme_subdomain_authorization(store: Fresh) {
    let (acct, _) = store.acme_create_account(account(1)).await.unwrap();
    let (other, _) = store.acme_create_account(account(2)).await.unwrap();
    let parent = store
        .acme_create_authz(&acct.id, spec("oo.example.test", true))
        .await
        .unwrap();
    assert!(parent.subdomain_auth);
    assert_eq!(parent.status, AuthzStatus::Pending);

    // Pending does not cover anything yet.
    let early = store
        .acme_create_order(order_for(&acct.id, &["d1.oo.example.test"]))
        .await
        .unwrap();
    assert_eq!(early.status, OrderStatus::Pending);
    assert_ne!(early.authz_ids[0], parent.id);

    validate_all(&store, &acct.id, std::slice::from_ref(&parent.id)).await;

    let names = ["d2.oo.example.test", "x.d3.oo.example.test"];
    let covered = store
        .acme_create_order(order_for(&acct.id, &names))
        .await
        .unwrap();
    assert_eq!(covered.status, OrderStatus::Ready);
    assert_eq!(covered.authz_ids, vec![parent.id.clone()]);
    assert_eq!(covered.identifiers.len(), 2);

    let exact = store
        .acme_create_order(order_for(&acct.id, &["oo.example.test"]))
        .await
        .unwrap();
    assert_eq!(exact.status, OrderStatus::Ready);

    // Label-wise: ooo.example.test is not under oo.example.test.
    let sibling = store
        .acme_create_order(order_for(&acct.id, &["ooo.example.test"]))
        .await
        .unwrap();
    assert_eq!(sibling.status, OrderStatus::Pending);
    // Another account's authorization covers nothing for this one.
    let foreign = store
        .acme_create_order(order_for(&other.id, &["d4.oo.example.test"]))
        .await
        .unwrap();
    assert_eq!(foreign.status, OrderStatus::Pending);

    // A valid authorization without subdomain authorization covers only its own name.
    let plain = store
        .acme_create_authz(&acct.id, spec("pp.example.test", false))
        .await
        .unwrap();
    validate_all(&store, &acct.id, std::slice::from_ref(&plain.id)).await;
    let under_plain = store
        .acme_create_order(order_for(&acct.id, &["d5.pp.example.test"]))
        .await
        .unwrap();
    assert_eq!(under_plain.status, OrderStatus::Pending);

    // ancestorDomain: a new authorization for the ancestor, shared by the next orders.
    let with_ancestor = |name: &str| NewAcmeOrder {
        account_id: acct.id.clone(),
        identifiers: vec![NewOrderIdentifier {
            order: OrderIdentifier {
                identifier: AcmeIdentifier::dns(name),
                ancestor_domain: Some("qq.example.test".into()),
            },
            new_authz: spec("qq.example.test", true),
        }],
        profile: "server".into(),
        not_before: None,
        not_after: None,
        expires: now() + HOUR,
    };
    let a1 = store
        .acme_create_order(with_ancestor("d6.qq.example.test"))
        .await
        .unwrap();
    let a2 = store
        .acme_create_order(with_ancestor("d7.qq.example.test"))
        .await
        .unwrap();
    assert_eq!(
        a1.identifiers[0].ancestor_domain.as_deref(),
        Some("qq.example.test")
    );
    assert_eq!(a1.authz_ids, a2.authz_ids);
    let az = store
        .acme_get_authz(&a1.authz_ids[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(az.identifier.value, "qq.example.test");
    assert!(az.subdomain_auth);
    validate_all(&store, &acct.id, &a1.authz_ids).await;
    for id in [&a1.id, &a2.id] {
        assert_eq!(
            store.acme_get_order(id).await.unwrap().unwrap().status,
            OrderStatus::Ready
        );
    }
    verify_ok(&store).await;
}

/// Two validations of one challenge racing: exactly one decides.
pub async fn acme_concurrent_validation(store: Fresh) {
    let (acct, _) = store.acme_create_account(account(1)).await.unwrap();
    let order = store
        .acme_create_order(order_for(&acct.id, &["race.devices.example.test"]))
        .await
        .unwrap();
    let authz = store
        .acme_get_authz(&order.authz_ids[0])
        .await
        .unwrap()
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        let ch = authz.challenges[0].id.clone();
        let acct = acct.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .acme_record_validation(
                    &ch,
                    &acct,
                    ValidationOutcome::Valid {
                        authz_expires: now() + HOUR,
                    },
                )
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(audit_count(&store, "acme.authz.valid").await, 1);
    verify_ok(&store).await;
}

/// Races that the global audit lock no longer serializes for ACME writes: one key makes one
/// account, one order is claimed once, one certificate is revoked once, and many accounts
/// issuing at once still leave an unbroken audit chain.
pub async fn acme_concurrent_writes(store: Fresh) {
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.acme_create_account(account(42)).await.unwrap()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for t in tasks {
        let (a, c) = t.await.unwrap();
        ids.insert(a.id);
        created += usize::from(c);
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(created, 1);
    let acct = ids.into_iter().next().unwrap();

    let order = store
        .acme_create_order(order_for(&acct, &["claim.devices.example.test"]))
        .await
        .unwrap();
    validate_all(&store, &acct, &order.authz_ids).await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        let (o, a) = (order.id.clone(), acct.clone());
        tasks.push(tokio::spawn(async move {
            store.acme_begin_finalize(&o, &a).await
        }));
    }
    let mut claimed = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => claimed += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(claimed, 1, "exactly one finalize claims the order");
    store
        .acme_complete_finalize(cert_for(
            &order.id,
            &acct,
            "7a01",
            &["claim.devices.example.test"],
        ))
        .await
        .unwrap();
    assert!(matches!(
        store
            .acme_complete_finalize(cert_for(
                &order.id,
                &acct,
                "7a02",
                &["claim.devices.example.test"]
            ))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.acme_revoke_certificate("7a01", 1, "t").await
        }));
    }
    let mut revoked = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => revoked += 1,
            Err(StoreError::Conflict(_)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(revoked, 1);

    // Many accounts ordering and validating at once.
    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let (a, _) = store.acme_create_account(account(100 + i)).await.unwrap();
            for j in 0..3 {
                let name = format!("c{i}-{j}.devices.example.test");
                let o = store
                    .acme_create_order(order_for(&a.id, &[name.as_str()]))
                    .await
                    .unwrap();
                validate_all(&store, &a.id, &o.authz_ids).await;
                store.acme_begin_finalize(&o.id, &a.id).await.unwrap();
                store
                    .acme_complete_finalize(cert_for(
                        &o.id,
                        &a.id,
                        &format!("c{i:02x}{j:02x}"),
                        &[name.as_str()],
                    ))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(audit_count(&store, "acme.certificate.issued").await, 25);
    verify_ok(&store).await;
}

/// A newOrder for identifiers the account already has a pending or ready order for returns
/// that order; a finished order is never handed back.
pub async fn acme_order_reuse(store: Fresh) {
    let (acct, _) = store.acme_create_account(account(1)).await.unwrap();
    let (other, _) = store.acme_create_account(account(2)).await.unwrap();
    let a = store
        .acme_create_order(order_for(
            &acct.id,
            &["x.devices.example.test", "y.devices.example.test"],
        ))
        .await
        .unwrap();
    let again = store
        .acme_create_order(order_for(
            &acct.id,
            &["y.devices.example.test", "x.devices.example.test"],
        ))
        .await
        .unwrap();
    assert_eq!(
        a.id, again.id,
        "same names in another order: the same order"
    );
    let mut other_profile = order_for(
        &acct.id,
        &["x.devices.example.test", "y.devices.example.test"],
    );
    other_profile.profile = "server-client".into();
    assert_ne!(
        store.acme_create_order(other_profile).await.unwrap().id,
        a.id
    );
    assert_ne!(
        store
            .acme_create_order(order_for(
                &other.id,
                &["x.devices.example.test", "y.devices.example.test"]
            ))
            .await
            .unwrap()
            .id,
        a.id,
        "another account's order is never handed out"
    );
    validate_all(&store, &acct.id, &a.authz_ids).await;
    let ready = store
        .acme_create_order(order_for(
            &acct.id,
            &["x.devices.example.test", "y.devices.example.test"],
        ))
        .await
        .unwrap();
    assert_eq!(ready.id, a.id);
    assert_eq!(ready.status, OrderStatus::Ready);
    store.acme_begin_finalize(&a.id, &acct.id).await.unwrap();
    store
        .acme_complete_finalize(cert_for(
            &a.id,
            &acct.id,
            "5e01",
            &["x.devices.example.test", "y.devices.example.test"],
        ))
        .await
        .unwrap();
    let renewal = store
        .acme_create_order(order_for(
            &acct.id,
            &["x.devices.example.test", "y.devices.example.test"],
        ))
        .await
        .unwrap();
    assert_ne!(renewal.id, a.id);
    assert_eq!(
        renewal.status,
        OrderStatus::Ready,
        "the valid authorizations are reused"
    );
    verify_ok(&store).await;
}

/// A pending order made before its names' parent was pre-authorized: asking for it again
/// gives the same order, now `ready` through the parent's authorization, without a new
/// authorization or challenge. Partly covered orders are handed back as they were.
pub async fn acme_order_reuse_sees_new_coverage(store: Fresh) {
    let (acct, _) = store.acme_create_account(account(1)).await.unwrap();
    let early = store
        .acme_create_order(order_for(
            &acct.id,
            &["d1.zz.example.test", "d2.zz.example.test"],
        ))
        .await
        .unwrap();
    assert_eq!(early.status, OrderStatus::Pending);
    let partial = store
        .acme_create_order(order_for(
            &acct.id,
            &["d3.zz.example.test", "other.example.test"],
        ))
        .await
        .unwrap();
    let racing = store
        .acme_create_order(order_for(&acct.id, &["d4.zz.example.test"]))
        .await
        .unwrap();
    let parent = store
        .acme_create_authz(&acct.id, spec("zz.example.test", true))
        .await
        .unwrap();
    validate_all(&store, &acct.id, std::slice::from_ref(&parent.id)).await;
    let before = store.acme_counts().await.unwrap();

    let again = store
        .acme_create_order(order_for(
            &acct.id,
            &["d2.zz.example.test", "d1.zz.example.test"],
        ))
        .await
        .unwrap();
    assert_eq!(again.id, early.id, "the pending order is handed back");
    assert_eq!(again.status, OrderStatus::Ready);
    assert_eq!(again.authz_ids, vec![parent.id.clone()]);
    let after = store.acme_counts().await.unwrap();
    assert_eq!(after.authzs, before.authzs, "no new authorization");
    assert_eq!(after.orders, before.orders, "no new order");
    assert_eq!(audit_count(&store, "acme.order.relinked").await, 1);
    // The old order's own pending authorizations are left alone (other orders may share them).
    for id in &early.authz_ids {
        let a = store.acme_get_authz(id).await.unwrap().unwrap();
        assert_eq!(a.status, AuthzStatus::Pending);
    }
    let same = store
        .acme_create_order(order_for(
            &acct.id,
            &["d1.zz.example.test", "d2.zz.example.test"],
        ))
        .await
        .unwrap();
    assert_eq!(same.id, early.id);
    assert_eq!(same.status, OrderStatus::Ready);
    assert_eq!(audit_count(&store, "acme.order.relinked").await, 1);

    let part = store
        .acme_create_order(order_for(
            &acct.id,
            &["d3.zz.example.test", "other.example.test"],
        ))
        .await
        .unwrap();
    assert_eq!(part.id, partial.id);
    assert_eq!(part.status, OrderStatus::Pending);
    assert_eq!(part.authz_ids, partial.authz_ids);

    // Concurrent newOrders relink once and all get the ready order.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let store = store.clone();
        let acct = acct.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .acme_create_order(order_for(&acct, &["d4.zz.example.test"]))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        let o = t.await.unwrap();
        assert_eq!(o.id, racing.id);
        assert_eq!(o.status, OrderStatus::Ready);
        assert_eq!(o.authz_ids, vec![parent.id.clone()]);
    }
    assert_eq!(audit_count(&store, "acme.order.relinked").await, 2);

    store
        .acme_begin_finalize(&early.id, &acct.id)
        .await
        .unwrap();
    verify_ok(&store).await;
}
