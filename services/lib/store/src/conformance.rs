//! One conformance suite for every backend. Each check gets a fresh, empty store from the
//! factory, so checks can count what they find.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;

use ragw_domain::{
    ApprovalMode, AuditDraft, DeviceIdentity, EnrollmentState, ErrorClass, IdentityKind, Protocol,
};
use serde_json::json;

use crate::{
    AuditFilter, EnrollmentFilter, FailOutcome, IssuedCertificate, NewEnrollment, RevocationState,
    Store, StoreError,
};

type Fresh = Arc<dyn Store>;

fn mac(i: u32) -> DeviceIdentity {
    let b = i.to_be_bytes();
    DeviceIdentity::new(
        IdentityKind::Mac,
        &format!("02:00:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3]),
    )
    .expect("valid MAC")
}

fn new_enrollment(
    device: &DeviceIdentity,
    label: &str,
    csr: &[u8],
    approval: ApprovalMode,
) -> NewEnrollment {
    NewEnrollment {
        id: uuid::Uuid::new_v4().to_string(),
        device: device.clone(),
        profile: "iot".into(),
        approval,
        label: label.into(),
        parent_domain: "devices.example.test".into(),
        names: vec![format!("{label}.devices.example.test")],
        protocol: Protocol::Est,
        csr_der: csr.to_vec(),
        // The store treats the hash as an opaque key; the hex of the test bytes is unique too.
        csr_sha256: hex::encode(csr),
        actor: "gateway:test".into(),
        details: json!({"key": "ecdsa-p256"}),
    }
}

fn cert(serial: &str) -> IssuedCertificate {
    IssuedCertificate {
        serial_hex: serial.into(),
        not_before: 1,
        not_after: 2,
        chain: vec![
            format!("ee-{serial}").into_bytes(),
            b"intermediate".to_vec(),
        ],
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
    let report = store.verify_audit().await.expect("verify");
    assert!(
        report.broken.is_none(),
        "audit chain broken: {:?}",
        report.broken
    );
    assert_eq!(report.checked, report.head_seq);
}

pub async fn labels_are_stable_and_unique(store: Fresh) {
    assert_eq!(
        store.find_label(&mac(1), "iot").await.unwrap(),
        None,
        "looking a label up must not allocate one"
    );
    assert!(store.get_device(&mac(1)).await.unwrap().is_none());
    let a = store
        .assign_label(&mac(1), "iot", "devices.example.test", "t")
        .await
        .unwrap();
    assert!(a.allocated);
    let again = store
        .assign_label(&mac(1), "iot", "devices.example.test", "t")
        .await
        .unwrap();
    assert!(!again.allocated);
    assert_eq!(a.label, again.label);
    let other_profile = store
        .assign_label(&mac(1), "cam", "cams.example.test", "t")
        .await
        .unwrap();
    assert_ne!(other_profile.label, a.label);
    let found = store.find_label(&mac(1), "iot").await.unwrap().unwrap();
    assert_eq!((found.label, found.allocated), (a.label.clone(), false));
    let mut labels = std::collections::HashSet::new();
    for i in 10..210 {
        let l = store
            .assign_label(&mac(i), "iot", "devices.example.test", "t")
            .await
            .unwrap();
        assert!(ragw_domain::label::is_allocated_label_shape(&l.label));
        assert!(labels.insert(l.label));
    }
    let dev = store
        .get_device(&mac(1))
        .await
        .unwrap()
        .expect("device recorded");
    assert_eq!(dev.labels.len(), 2);
    let allocated = store
        .query_audit(
            &AuditFilter {
                action: Some("label.allocated".into()),
                ..Default::default()
            },
            0,
            1000,
        )
        .await
        .unwrap();
    assert_eq!(allocated.len(), 202);
    verify_ok(&store).await;
}

pub async fn enrollments_are_idempotent(store: Fresh) {
    let d = mac(1);
    let first = store
        .create_enrollment(new_enrollment(
            &d,
            "aaaaaaaaa",
            b"csr-1",
            ApprovalMode::Auto,
        ))
        .await
        .unwrap();
    assert!(!first.1);
    assert_eq!(first.0.state, EnrollmentState::Queued);
    let again = store
        .create_enrollment(new_enrollment(
            &d,
            "aaaaaaaaa",
            b"csr-1",
            ApprovalMode::Auto,
        ))
        .await
        .unwrap();
    assert!(again.1);
    assert_eq!(again.0.id, first.0.id);
    let other = store
        .create_enrollment(new_enrollment(
            &d,
            "aaaaaaaaa",
            b"csr-2",
            ApprovalMode::Auto,
        ))
        .await
        .unwrap();
    assert_ne!(other.0.id, first.0.id);
    // Same CSR from another device is another enrollment.
    let other_device = store
        .create_enrollment(new_enrollment(
            &mac(2),
            "bbbbbbbbb",
            b"csr-1",
            ApprovalMode::Auto,
        ))
        .await
        .unwrap();
    assert!(!other_device.1);
    assert_eq!(store.count_enrollments().await.unwrap(), 3);
    let got = store.get_enrollment(&first.0.id).await.unwrap().unwrap();
    assert_eq!(got, first.0);
    assert_eq!(got.csr_der, b"csr-1");
    assert_eq!(
        got.names,
        vec!["aaaaaaaaa.devices.example.test".to_string()]
    );
    assert!(store.get_enrollment("nope").await.unwrap().is_none());
    // received → approved → queued, each audited.
    let trail: Vec<String> = store
        .query_audit(
            &AuditFilter {
                device: Some(d.key()),
                ..Default::default()
            },
            0,
            100,
        )
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.enrollment == first.0.id)
        .map(|e| e.action)
        .collect();
    assert_eq!(
        trail,
        vec![
            "enrollment.received",
            "enrollment.approved",
            "enrollment.queued"
        ]
    );
    verify_ok(&store).await;
}

pub async fn manual_approval_flow(store: Fresh) {
    let d = mac(7);
    let (e, _) = store
        .create_enrollment(new_enrollment(
            &d,
            "ccccccccc",
            b"m-1",
            ApprovalMode::Manual,
        ))
        .await
        .unwrap();
    assert_eq!(e.state, EnrollmentState::AwaitingApproval);
    assert!(
        store
            .lease_jobs("w", 10, 60_000_000)
            .await
            .unwrap()
            .is_empty()
    );
    let pending = store
        .list_enrollments(
            &EnrollmentFilter {
                state: Some(EnrollmentState::AwaitingApproval),
                ..Default::default()
            },
            10,
            None,
        )
        .await
        .unwrap();
    assert_eq!(pending.items.len(), 1);
    let approved = store
        .approve(&e.id, "admin:alice", "known device")
        .await
        .unwrap();
    assert_eq!(approved.state, EnrollmentState::Queued);
    assert!(store.get_device(&d).await.unwrap().unwrap().approved);
    assert!(matches!(
        store.approve(&e.id, "admin:alice", "twice").await,
        Err(StoreError::Conflict(_))
    ));
    // A renewal by an approved device passes on its own.
    let (renewal, _) = store
        .create_enrollment(new_enrollment(
            &d,
            "ccccccccc",
            b"m-2",
            ApprovalMode::Manual,
        ))
        .await
        .unwrap();
    assert_eq!(renewal.state, EnrollmentState::Queued);
    // Until the approval is revoked.
    let dev = store
        .revoke_approval(&d, "admin:alice", "decommissioned")
        .await
        .unwrap();
    assert!(!dev.approved);
    let (third, _) = store
        .create_enrollment(new_enrollment(
            &d,
            "ccccccccc",
            b"m-3",
            ApprovalMode::Manual,
        ))
        .await
        .unwrap();
    assert_eq!(third.state, EnrollmentState::AwaitingApproval);
    let denied = store
        .deny(&third.id, "admin:bob", "not ours")
        .await
        .unwrap();
    assert_eq!(denied.state, EnrollmentState::Rejected);
    assert!(denied.failure_detail.unwrap().contains("not ours"));
    assert!(matches!(
        store.deny(&third.id, "admin:bob", "again").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.approve("missing", "admin", "x").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.revoke_approval(&mac(999), "admin", "x").await,
        Err(StoreError::NotFound(_))
    ));
    let granted = store
        .query_audit(
            &AuditFilter {
                action: Some("approval.granted".into()),
                actor: Some("admin:alice".into()),
                ..Default::default()
            },
            0,
            10,
        )
        .await
        .unwrap();
    assert_eq!(granted.len(), 1);
    verify_ok(&store).await;
}

pub async fn lease_lifecycle(store: Fresh) {
    for i in 0..3u32 {
        store
            .create_enrollment(new_enrollment(
                &mac(i),
                &format!("lease{i:04}"),
                format!("l-{i}").as_bytes(),
                ApprovalMode::Auto,
            ))
            .await
            .unwrap();
    }
    let jobs = store.lease_jobs("w1", 2, 60_000_000).await.unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter()
            .all(|j| j.enrollment.state == EnrollmentState::Ordering && j.enrollment.attempts == 1)
    );
    let rest = store.lease_jobs("w2", 10, 60_000_000).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert!(
        store
            .lease_jobs("w3", 10, 60_000_000)
            .await
            .unwrap()
            .is_empty()
    );

    let (a, b, c) = (&jobs[0], &jobs[1], &rest[0]);
    // Wrong token.
    assert!(matches!(
        store.extend_lease(&a.enrollment.id, "bogus", 1).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(
        store
            .extend_lease(&a.enrollment.id, &a.lease_token, 120_000_000)
            .await
            .unwrap()
            > a.lease_expires - 1
    );
    store
        .record_order(
            &a.enrollment.id,
            &a.lease_token,
            "https://ca.example/order/1",
        )
        .await
        .unwrap();
    // A job step is audited under the job's device and label, only while the lease holds.
    let step = store
        .append_job_audit(
            &a.enrollment.id,
            &a.lease_token,
            AuditDraft::new("worker:w1", "worker.challenge_published"),
        )
        .await
        .unwrap();
    assert_eq!(step.enrollment, a.enrollment.id);
    assert_eq!(step.label, a.enrollment.label);
    assert_eq!(step.device, a.enrollment.device.key());
    assert!(matches!(
        store
            .append_job_audit(
                &a.enrollment.id,
                "bogus",
                AuditDraft::new("worker:w1", "worker.challenge_published"),
            )
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    let done = store
        .complete(&a.enrollment.id, &a.lease_token, "w1", cert("0a1b"))
        .await
        .unwrap();
    assert_eq!(done.state, EnrollmentState::Issued);
    assert_eq!(done.certificate_chain.len(), 2);
    // Gateways serve the CA part of the newest chain of the profile.
    assert_eq!(
        store.issuer_certificates(&done.profile).await.unwrap(),
        vec![b"intermediate".to_vec()]
    );
    assert!(
        store
            .issuer_certificates("no-such-profile")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        done.acme_order_url.as_deref(),
        Some("https://ca.example/order/1")
    );
    // A repeated Complete is harmless; a different certificate is not.
    store
        .complete(&a.enrollment.id, &a.lease_token, "w1", cert("0a1b"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .complete(&a.enrollment.id, &a.lease_token, "w1", cert("ffff"))
            .await,
        Err(StoreError::Conflict(_))
    ));

    // Retryable failure goes back to the queue, not before its time.
    let far = crate::logic::now_micros() + 3_600_000_000;
    let retried = store
        .fail(
            &b.enrollment.id,
            &b.lease_token,
            "w1",
            FailOutcome {
                retryable: true,
                detail: "rate limited".into(),
                class: ErrorClass::InternalCaError,
                retry_at: far,
                max_attempts: 5,
                acme_problem: Some(json!({"type": "urn:ietf:params:acme:error:rateLimited"})),
            },
        )
        .await
        .unwrap();
    assert_eq!(retried.state, EnrollmentState::Queued);
    assert_eq!(retried.not_before, far);
    assert!(
        store
            .lease_jobs("w1", 10, 60_000_000)
            .await
            .unwrap()
            .is_empty()
    );
    // The old token is dead.
    assert!(matches!(
        store
            .complete(&b.enrollment.id, &b.lease_token, "w1", cert("0c"))
            .await,
        Err(StoreError::LeaseLost(_))
    ));

    // Terminal failure.
    let failed = store
        .fail(
            &c.enrollment.id,
            &c.lease_token,
            "w2",
            FailOutcome {
                retryable: false,
                detail: "CA refused the name".into(),
                class: ErrorClass::BadIdentity,
                retry_at: 0,
                max_attempts: 5,
                acme_problem: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.state, EnrollmentState::Failed);
    assert_eq!(failed.failure_class, Some(ErrorClass::BadIdentity));

    // An expired lease is handed to the next worker, with the recorded order URL.
    let (e, _) = store
        .create_enrollment(new_enrollment(
            &mac(50),
            "expire000",
            b"x-1",
            ApprovalMode::Auto,
        ))
        .await
        .unwrap();
    let first = store.lease_jobs("w-dead", 1, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    store
        .record_order(&e.id, &first[0].lease_token, "https://ca.example/order/9")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = store.lease_jobs("w-live", 1, 60_000_000).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].enrollment.id, e.id);
    assert_eq!(second[0].enrollment.attempts, 2);
    assert_eq!(
        second[0].enrollment.acme_order_url.as_deref(),
        Some("https://ca.example/order/9")
    );
    assert!(matches!(
        store
            .complete(&e.id, &first[0].lease_token, "w-dead", cert("dd"))
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    store
        .complete(&e.id, &second[0].lease_token, "w-live", cert("ee"))
        .await
        .unwrap();

    // Giving up after max attempts.
    let (g, _) = store
        .create_enrollment(new_enrollment(
            &mac(60),
            "giveup000",
            b"g-1",
            ApprovalMode::Auto,
        ))
        .await
        .unwrap();
    let j = store.lease_jobs("w", 1, 60_000_000).await.unwrap();
    let out = store
        .fail(
            &g.id,
            &j[0].lease_token,
            "w",
            FailOutcome {
                retryable: true,
                detail: "still down".into(),
                class: ErrorClass::InternalCaError,
                retry_at: 0,
                max_attempts: 1,
                acme_problem: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(out.state, EnrollmentState::Failed);
    verify_ok(&store).await;
}

pub async fn concurrent_leases_never_share_a_job(store: Fresh) {
    for i in 0..60u32 {
        store
            .create_enrollment(new_enrollment(
                &mac(i),
                &format!("cl{i:07}"),
                format!("c-{i}").as_bytes(),
                ApprovalMode::Auto,
            ))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..6 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let jobs = s.lease_jobs(&format!("w{w}"), 3, 60_000_000).await.unwrap();
                if jobs.is_empty() {
                    break;
                }
                got.extend(jobs.into_iter().map(|j| j.enrollment.id));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 60, "every job leased once");
    assert_eq!(unique.len(), 60, "no job leased twice");
    verify_ok(&store).await;
}

pub async fn concurrent_duplicates_make_one_enrollment(store: Fresh) {
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..25u32 {
                // Every task submits the same 25 keys.
                let d = mac(i);
                let (e, _) = s
                    .create_enrollment(new_enrollment(
                        &d,
                        &format!("dup{i:06}"),
                        format!("d-{i}").as_bytes(),
                        ApprovalMode::Auto,
                    ))
                    .await
                    .unwrap();
                ids.push((i, e.id, t));
            }
            ids
        }));
    }
    let mut by_key = std::collections::HashMap::new();
    for t in tasks {
        for (i, id, _) in t.await.unwrap() {
            let prev = by_key.insert(i, id.clone());
            if let Some(p) = prev {
                assert_eq!(p, id, "one enrollment per key");
            }
        }
    }
    assert_eq!(store.count_enrollments().await.unwrap(), 25);
    verify_ok(&store).await;
}

pub async fn certificates_can_be_revoked(store: Fresh) {
    let (e, _) = store
        .create_enrollment(new_enrollment(
            &mac(3),
            "revoke000",
            b"r-1",
            ApprovalMode::Auto,
        ))
        .await
        .unwrap();
    let j = store.lease_jobs("w", 1, 60_000_000).await.unwrap();
    store
        .complete(&e.id, &j[0].lease_token, "w", cert("00ab"))
        .await
        .unwrap();
    let c = store.get_certificate("00AB").await.unwrap().unwrap();
    assert!(!c.revoked);
    assert_eq!(c.enrollment_id, e.id);
    assert_eq!(
        store
            .newest_certificate(&mac(3), "iot")
            .await
            .unwrap()
            .map(|c| c.serial_hex),
        Some("00ab".to_string())
    );
    assert!(
        store
            .newest_certificate(&mac(4), "iot")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .newest_certificate(&mac(3), "other-profile")
            .await
            .unwrap()
            .is_none()
    );
    // A renewal supersedes it: the newest certificate is the renewal's.
    let (renewal, _) = store
        .create_enrollment(new_enrollment(
            &mac(3),
            "revoke000",
            b"r-2",
            ApprovalMode::Auto,
        ))
        .await
        .unwrap();
    let j = store.lease_jobs("w", 1, 60_000_000).await.unwrap();
    store
        .complete(&renewal.id, &j[0].lease_token, "w", cert("00cd"))
        .await
        .unwrap();
    assert_eq!(
        store
            .newest_certificate(&mac(3), "iot")
            .await
            .unwrap()
            .map(|c| c.serial_hex),
        Some("00cd".to_string())
    );
    let r = store
        .revoke_certificate("00ab", "admin:alice", "keyCompromise")
        .await
        .unwrap();
    assert!(r.revoked);
    assert_eq!(r.revocation_reason.as_deref(), Some("keyCompromise"));
    assert!(matches!(
        store.revoke_certificate("00ab", "admin", "x").await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.revoke_certificate("beef", "admin", "x").await,
        Err(StoreError::NotFound(_))
    ));
    verify_ok(&store).await;
}

pub async fn certificates_revoked_from_a_crl(store: Fresh) {
    for (i, serial) in ["00a1", "00a2", "00a3"].iter().enumerate() {
        let (e, _) = store
            .create_enrollment(new_enrollment(
                &mac(10 + i as u32),
                &format!("crl00{i}"),
                serial.as_bytes(),
                ApprovalMode::Auto,
            ))
            .await
            .unwrap();
        let j = store.lease_jobs("w", 1, 60_000_000).await.unwrap();
        store
            .complete(&e.id, &j[0].lease_token, "w", cert(serial))
            .await
            .unwrap();
    }
    // Paged by serial; expired certificates (notAfter before valid_at) are left out.
    let page = store.unrevoked_certificates(0, 2, None).await.unwrap();
    let serials: Vec<_> = page.items.iter().map(|c| c.serial_hex.as_str()).collect();
    assert_eq!(serials, ["00a1", "00a2"]);
    assert_eq!(page.items[0].chain, cert("00a1").chain);
    let rest = store
        .unrevoked_certificates(0, 2, page.next.as_deref())
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert!(rest.next.is_none());
    assert!(
        store
            .unrevoked_certificates(3, 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let url = "crl:https://ca.example/crl";
    let revoked = store
        .revoke_certificate_from_crl("00A2", url, "keyCompromise")
        .await
        .unwrap()
        .unwrap();
    assert!(revoked.revoked);
    assert_eq!(revoked.revocation_reason.as_deref(), Some("keyCompromise"));
    // Idempotent: again, and for a serial ragw did not issue, nothing happens.
    assert!(
        store
            .revoke_certificate_from_crl("00a2", url, "keyCompromise")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .revoke_certificate_from_crl("beef", url, "unspecified")
            .await
            .unwrap()
            .is_none()
    );
    let serials: Vec<_> = store
        .unrevoked_certificates(0, 10, None)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.serial_hex)
        .collect();
    assert_eq!(serials, ["00a1", "00a3"]);
    let events = store
        .query_audit(
            &AuditFilter {
                actor: Some(url.into()),
                ..Default::default()
            },
            0,
            100,
        )
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].action, "certificate.revoked");
    assert!(events[0].details.contains("keyCompromise"));
    verify_ok(&store).await;
}

/// An operator revocation queues a job for the CA in the same transaction; workers lease it,
/// a retryable failure queues it again (after its retry time), lease expiry hands it to
/// another worker, and completion is final and idempotent.
pub async fn revocations_are_queued_for_the_ca(store: Fresh) {
    let (e, _) = store
        .create_enrollment(new_enrollment(
            &mac(7),
            "revjob000",
            b"rj-1",
            ApprovalMode::Auto,
        ))
        .await
        .unwrap();
    let j = store.lease_jobs("w", 1, 60_000_000).await.unwrap();
    store
        .complete(&e.id, &j[0].lease_token, "w", cert("0e01"))
        .await
        .unwrap();
    assert!(store.get_revocation_job("0e01").await.unwrap().is_none());
    assert!(
        store
            .lease_revocations("w", 10, 60_000_000)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .revoke_certificate("0E01", "admin:alice", "keyCompromise")
        .await
        .unwrap();
    let queued = store.get_revocation_job("0e01").await.unwrap().unwrap();
    assert_eq!(queued.state, RevocationState::Queued);
    assert_eq!(queued.reason, "keyCompromise");
    assert_eq!(
        audit_count(&store, "certificate.revocation_queued").await,
        1
    );
    // A refused revocation queues nothing more.
    assert!(
        store
            .revoke_certificate("0e01", "admin", "x")
            .await
            .is_err()
    );
    assert_eq!(
        audit_count(&store, "certificate.revocation_queued").await,
        1
    );

    // Leased with what the worker needs: the certificate and its profile.
    let leased = store.lease_revocations("w1", 10, 60_000_000).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].job.state, RevocationState::Revoking);
    assert_eq!(leased[0].job.attempts, 1);
    assert_eq!(leased[0].profile, "iot");
    assert_eq!(leased[0].certificate_der, b"ee-0e01".to_vec());
    assert!(
        store
            .lease_revocations("w2", 10, 60_000_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store
            .complete_revocation("0e01", "00000000000000000000000000000000", "w2", false)
            .await,
        Err(StoreError::LeaseLost(_))
    ));

    // A retryable failure with a retry time in the past is leasable again at once.
    let failed = store
        .fail_revocation(
            "0e01",
            &leased[0].lease_token,
            "w1",
            FailOutcome {
                retryable: true,
                detail: "CA unreachable".into(),
                class: ErrorClass::InternalCaError,
                retry_at: 0,
                max_attempts: 5,
                acme_problem: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(failed.state, RevocationState::Queued);
    assert_eq!(failed.failure_detail.as_deref(), Some("CA unreachable"));
    assert_eq!(
        audit_count(&store, "certificate.revocation_failed").await,
        1
    );

    // A lease that runs out hands the job to the next worker.
    let first = store.lease_revocations("w1", 10, -1).await.unwrap();
    assert_eq!(first.len(), 1);
    let second = store.lease_revocations("w2", 10, 60_000_000).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].job.attempts, 3);
    assert!(matches!(
        store
            .complete_revocation("0e01", &first[0].lease_token, "w1", false)
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    let done = store
        .complete_revocation("0e01", &second[0].lease_token, "w2", true)
        .await
        .unwrap();
    assert_eq!(done.state, RevocationState::Done);
    assert_eq!(done.lease_owner, None);
    // The same report again (a lost answer) has the same outcome and audits nothing more.
    store
        .complete_revocation("0e01", &second[0].lease_token, "w2", true)
        .await
        .unwrap();
    assert_eq!(audit_count(&store, "certificate.revoked_at_ca").await, 1);
    assert!(
        store
            .lease_revocations("w3", 10, 60_000_000)
            .await
            .unwrap()
            .is_empty()
    );

    // A definitive refusal ends the job as failed.
    let (e2, _) = store
        .create_enrollment(new_enrollment(
            &mac(8),
            "revjob001",
            b"rj-2",
            ApprovalMode::Auto,
        ))
        .await
        .unwrap();
    let j = store.lease_jobs("w", 1, 60_000_000).await.unwrap();
    store
        .complete(&e2.id, &j[0].lease_token, "w", cert("0e02"))
        .await
        .unwrap();
    store
        .revoke_certificate("0e02", "admin", "superseded")
        .await
        .unwrap();
    let leased = store.lease_revocations("w1", 10, 60_000_000).await.unwrap();
    let gave_up = store
        .fail_revocation(
            "0e02",
            &leased[0].lease_token,
            "w1",
            FailOutcome {
                retryable: false,
                detail: "unauthorized".into(),
                class: ErrorClass::InternalCaError,
                retry_at: 0,
                max_attempts: 5,
                acme_problem: Some(json!({"type": "urn:ietf:params:acme:error:unauthorized"})),
            },
        )
        .await
        .unwrap();
    assert_eq!(gave_up.state, RevocationState::Failed);
    assert!(
        store
            .lease_revocations("w1", 10, 60_000_000)
            .await
            .unwrap()
            .is_empty()
    );
    verify_ok(&store).await;
}

pub async fn audit_queries_and_paging(store: Fresh) {
    for i in 0..30u32 {
        store
            .append_audit(
                AuditDraft::new(if i % 2 == 0 { "even" } else { "odd" }, "test.event")
                    .device(format!("mac:{i}"))
                    .label(format!("l{}", i % 3))
                    .details(json!({"i": i, "nested": {"b": 1, "a": 2}})),
            )
            .await
            .unwrap();
    }
    let odd = store
        .query_audit(
            &AuditFilter {
                actor: Some("odd".into()),
                ..Default::default()
            },
            0,
            100,
        )
        .await
        .unwrap();
    assert_eq!(odd.len(), 15);
    let l1 = store
        .query_audit(
            &AuditFilter {
                label: Some("l1".into()),
                ..Default::default()
            },
            0,
            100,
        )
        .await
        .unwrap();
    assert_eq!(l1.len(), 10);
    let page1 = store
        .query_audit(&AuditFilter::default(), 0, 7)
        .await
        .unwrap();
    assert_eq!(page1.len(), 7);
    let page2 = store
        .query_audit(&AuditFilter::default(), page1[6].seq, 100)
        .await
        .unwrap();
    assert_eq!(page2.len(), 23);
    assert_eq!(page2[0].seq, page1[6].seq + 1);
    let t = page1[3].time_unix_micros;
    let since = store
        .query_audit(
            &AuditFilter {
                since: Some(t),
                ..Default::default()
            },
            0,
            100,
        )
        .await
        .unwrap();
    assert!(since.iter().all(|e| e.time_unix_micros >= t));
    assert_eq!(page1[0].details, r#"{"i":0,"nested":{"a":2,"b":1}}"#);

    for i in 0..25u32 {
        store
            .create_enrollment(new_enrollment(
                &mac(i),
                &format!("pg{i:07}"),
                format!("p-{i}").as_bytes(),
                ApprovalMode::Auto,
            ))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_enrollments(&EnrollmentFilter::default(), 10, after.as_deref())
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|e| e.id.clone()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    let mut devices = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_devices(10, after.as_deref()).await.unwrap();
        devices.extend(page.items);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(devices.len(), 25);
    assert!(matches!(
        store
            .list_enrollments(&EnrollmentFilter::default(), 10, Some("garbage"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    verify_ok(&store).await;
}

/// Runs every check, each against a fresh store from `make`.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Fresh>,
{
    labels_are_stable_and_unique(make().await).await;
    enrollments_are_idempotent(make().await).await;
    manual_approval_flow(make().await).await;
    lease_lifecycle(make().await).await;
    concurrent_leases_never_share_a_job(make().await).await;
    concurrent_duplicates_make_one_enrollment(make().await).await;
    certificates_can_be_revoked(make().await).await;
    certificates_revoked_from_a_crl(make().await).await;
    revocations_are_queued_for_the_ca(make().await).await;
    audit_queries_and_paging(make().await).await;
    crate::acme_conformance::acme_nonces_and_secrets(make().await).await;
    crate::acme_conformance::acme_accounts(make().await).await;
    crate::acme_conformance::acme_order_lifecycle(make().await).await;
    crate::acme_conformance::acme_failures_invalidate(make().await).await;
    crate::acme_conformance::acme_subdomain_authorization(make().await).await;
    crate::acme_conformance::acme_concurrent_validation(make().await).await;
    crate::acme_conformance::acme_concurrent_writes(make().await).await;
    crate::acme_conformance::acme_order_reuse(make().await).await;
    crate::acme_conformance::acme_order_reuse_sees_new_coverage(make().await).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let counter = std::sync::atomic::AtomicU32::new(0);
        run_all(|| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = dir.path().join(format!("store-{n}.db"));
            async move {
                crate::open(&crate::StoreConfig::Sqlite { path })
                    .await
                    .unwrap()
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_conforms() {
        let Some(url) = crate::test_support::database_url() else {
            return;
        };
        let schemas = std::sync::Mutex::new(Vec::new());
        run_all(|| {
            let schema = crate::test_support::fresh_schema_name();
            schemas.lock().unwrap().push(schema.clone());
            let url = url.clone();
            async move {
                crate::open(&crate::StoreConfig::Postgres {
                    url,
                    schema: Some(schema),
                    pool_size: 8,
                })
                .await
                .expect("RAGW_TEST_DATABASE_URL is set, so PostgreSQL must be reachable")
            }
        })
        .await;
        let names = schemas.lock().unwrap().clone();
        crate::test_support::drop_schemas(&url, &names).await;
    }
}
