//! Bad gRPC input gets InvalidArgument or PermissionDenied with a message naming the problem,
//! and stores nothing but the audit event of the refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Dev, csr_for, enroll_req, mac};
use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::admin_service_client::AdminServiceClient;
use ragw_proto::registrar::v1::audit_service_client::AuditServiceClient;
use ragw_proto::registrar::v1::enrollment_service_client::EnrollmentServiceClient;
use ragw_proto::registrar::v1::worker_service_client::WorkerServiceClient;
use ragw_runtime::identity::Role;
use tonic::Code;

fn expect(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("the registrar accepted bad input");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(needle),
        "message {:?} does not name the problem ({needle:?})",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_only_audited() {
    let dev = Dev::start(&["--no-worker"]);
    let mut gw = EnrollmentServiceClient::new(dev.channel(Role::Gateway).await);
    let (_, good_csr) = csr_for(&["whatever.devices.ragw.test".to_string()]);
    let mut refusals = 0;
    // Start-up writes its own events (the local CA certifying its HTTPS endpoints); count from here.
    let mut audit = AuditServiceClient::new(dev.channel(Role::Auditor).await);
    let start_seq = audit
        .query(pb::AuditQueryRequest {
            filter: None,
            limit: 1000,
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .last()
        .map(|e| e.seq)
        .unwrap_or(0);

    let mut bad_kind = mac(1);
    bad_kind.kind = 99;
    expect(
        gw.enroll(enroll_req(bad_kind, good_csr.clone())).await,
        Code::InvalidArgument,
        "unknown identity kind 99",
    );
    refusals += 1;

    let mut unset_kind = mac(1);
    unset_kind.kind = 0;
    expect(
        gw.enroll(enroll_req(unset_kind, good_csr.clone())).await,
        Code::InvalidArgument,
        "device.kind is not set",
    );
    refusals += 1;

    let mut req = enroll_req(mac(1), good_csr.clone());
    req.protocol = 42;
    expect(
        gw.enroll(req).await,
        Code::InvalidArgument,
        "protocol: unknown value 42",
    );
    refusals += 1;

    expect(
        gw.enroll(enroll_req(mac(1), Vec::new())).await,
        Code::InvalidArgument,
        "csr_der is empty",
    );
    refusals += 1;

    expect(
        gw.enroll(enroll_req(mac(1), b"\x30\x03\x02\x01\x00garbage".to_vec()))
            .await,
        Code::InvalidArgument,
        "csr_der:",
    );
    refusals += 1;

    expect(
        gw.enroll(enroll_req(mac(1), vec![0x30; 20_000])).await,
        Code::InvalidArgument,
        "at most 16384",
    );
    refusals += 1;

    let long_device = pb::DeviceIdentity {
        kind: pb::IdentityKind::SerialNumber as i32,
        value: "x".repeat(300),
    };
    expect(
        gw.enroll(enroll_req(long_device, good_csr.clone())).await,
        Code::InvalidArgument,
        "at most 128",
    );
    refusals += 1;

    let mut req = enroll_req(mac(1), good_csr.clone());
    req.profile = "p".repeat(100);
    expect(
        gw.enroll(req).await,
        Code::InvalidArgument,
        "profile name is 100 bytes",
    );
    refusals += 1;

    let mut req = enroll_req(mac(1), good_csr.clone());
    req.profile = "nosuch".into();
    expect(
        gw.enroll(req).await,
        Code::InvalidArgument,
        "unknown profile \"nosuch\"",
    );
    refusals += 1;

    // Wrong roles.
    let mut auditor_as_gateway = EnrollmentServiceClient::new(dev.channel(Role::Auditor).await);
    expect(
        auditor_as_gateway
            .enroll(enroll_req(mac(1), good_csr.clone()))
            .await,
        Code::PermissionDenied,
        "requires the role gateway",
    );
    refusals += 1;
    let mut gateway_as_worker = WorkerServiceClient::new(dev.channel(Role::Gateway).await);
    expect(
        gateway_as_worker
            .lease(pb::LeaseRequest {
                worker_id: "w".into(),
                max_jobs: 1,
                lease_seconds: 60,
                wait_millis: 0,
                max_revocations: 0,
            })
            .await,
        Code::PermissionDenied,
        "requires the role worker",
    );
    refusals += 1;
    let mut auditor_as_admin = AdminServiceClient::new(dev.channel(Role::Auditor).await);
    expect(
        auditor_as_admin
            .approve(pb::ApproveRequest {
                enrollment_id: "0000".into(),
                reason: String::new(),
            })
            .await,
        Code::PermissionDenied,
        "requires the role admin",
    );
    refusals += 1;

    // Worker steps: only workers record them, only known steps, bounded printable text, and
    // job steps only under a lease the registrar issued.
    let step = |step: pb::WorkerStep| pb::RecordStepRequest {
        step: step as i32,
        directory_url: "https://ca.example/directory".into(),
        subject: "devices.ragw.test".into(),
        worker_id: "w".into(),
        ..Default::default()
    };
    let mut gw_as_worker = WorkerServiceClient::new(dev.channel(Role::Gateway).await);
    expect(
        gw_as_worker
            .record_step(step(pb::WorkerStep::ParentPreauthorized))
            .await,
        Code::PermissionDenied,
        "requires the role worker",
    );
    refusals += 1;
    let mut worker = WorkerServiceClient::new(dev.channel(Role::Worker).await);
    expect(
        worker.record_step(step(pb::WorkerStep::Unspecified)).await,
        Code::InvalidArgument,
        "not a worker step",
    );
    refusals += 1;
    let mut with_newline = step(pb::WorkerStep::ChallengePublished);
    with_newline.subject = "_acme-challenge.x\nforged line".into();
    expect(
        worker.record_step(with_newline).await,
        Code::InvalidArgument,
        "subject contains control characters",
    );
    refusals += 1;
    let mut bad_lease = step(pb::WorkerStep::ChallengeRemoved);
    bad_lease.enrollment_id = "0000".into();
    bad_lease.lease_token = "not-a-token".into();
    expect(
        worker.record_step(bad_lease).await,
        Code::InvalidArgument,
        "lease_token",
    );
    refusals += 1;

    // Revocation job reports: only workers, only well-formed references, bounded text.
    expect(
        gw_as_worker
            .complete_revocation(pb::CompleteRevocationRequest {
                serial_hex: "1a2b".into(),
                lease_token: "00".repeat(16),
                already_revoked: false,
            })
            .await,
        Code::PermissionDenied,
        "requires the role worker",
    );
    refusals += 1;
    expect(
        worker
            .complete_revocation(pb::CompleteRevocationRequest {
                serial_hex: "not hex".into(),
                lease_token: "00".repeat(16),
                already_revoked: false,
            })
            .await,
        Code::InvalidArgument,
        "serial_hex",
    );
    refusals += 1;
    expect(
        worker
            .fail_revocation(pb::FailRevocationRequest {
                serial_hex: "1a2b".into(),
                lease_token: "not-a-token".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "lease_token",
    );
    refusals += 1;
    expect(
        worker
            .fail_revocation(pb::FailRevocationRequest {
                serial_hex: "1a2b".into(),
                lease_token: "00".repeat(16),
                detail: "x".repeat(5000),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "exceed 4096 bytes",
    );
    refusals += 1;

    let mut admin = AdminServiceClient::new(dev.channel(Role::Admin).await);
    expect(
        admin
            .list_enrollments(pb::ListEnrollmentsRequest {
                device: None,
                state: 77,
                limit: 10,
                after: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "state: unknown value 77",
    );
    refusals += 1;

    // Revoking a serial the registrar never issued is refused, and audited like any refusal.
    expect(
        admin
            .revoke_certificate(pb::RevokeCertificateRequest {
                serial_hex: "1a2b3c".into(),
                reason: "keyCompromise".into(),
            })
            .await,
        Code::NotFound,
        "certificate with serial 1a2b3c",
    );
    refusals += 1;

    // Nothing stored but the refusals.
    let db = rusqlite::Connection::open(dev.dir.join("ragw.db")).unwrap();
    for table in [
        "devices",
        "labels",
        "enrollments",
        "certificates",
        "revocation_jobs",
    ] {
        let n: i64 = db
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "{table} has rows after refused calls");
    }
    let events = audit
        .query(pb::AuditQueryRequest {
            filter: None,
            limit: 1000,
            after_seq: start_seq,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        events.len(),
        refusals,
        "one audit event per refusal: {events:#?}"
    );
    assert!(events.iter().all(|e| e.action == "rpc.refused"));
    assert!(
        events.iter().any(
            |e| e.actor.starts_with("auditor:") && e.details_json.contains("permission_denied")
        )
    );
    let (code, out, err) = dev.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_for_a_name_not_assigned_is_refused_with_the_expected_name() {
    let dev = Dev::start(&["--no-worker"]);
    let mut gw = EnrollmentServiceClient::new(dev.channel(Role::Gateway).await);
    let a = gw
        .get_assignment(pb::GetAssignmentRequest {
            device: Some(mac(5)),
            profile: "iot".into(),
            current_certificate_der: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let (_, csr) = csr_for(&["printer.example.com".to_string()]);
    let status = gw.enroll(enroll_req(mac(5), csr)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains(&a.names[0]),
        "{}",
        status.message()
    );
    assert_eq!(
        status.metadata().get("ragw-error-class").unwrap(),
        "bad_identity"
    );
    assert_eq!(status.metadata().get("ragw-teap-error").unwrap(), "1024");
    let db = rusqlite::Connection::open(dev.dir.join("ragw.db")).unwrap();
    let n: i64 = db
        .query_row("SELECT COUNT(*) FROM enrollments", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}
