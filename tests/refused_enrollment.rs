//! A refused enrollment changes nothing but the audit log (issue 8 §5): a device whose only
//! request was refused is not registered, gets no label and no enrollment; only GetAssignment
//! (EST /csrattrs, the TEAP CSR-Attributes TLV) allocates a name. Runs on both store backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Dev, Pg, csr_for, enroll_req, mac};
use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::admin_service_client::AdminServiceClient;
use ragw_proto::registrar::v1::audit_service_client::AuditServiceClient;
use ragw_proto::registrar::v1::enrollment_service_client::EnrollmentServiceClient;
use ragw_runtime::identity::Role;

fn device_key(d: &pb::DeviceIdentity) -> String {
    format!("mac:{}", d.value)
}

async fn audited(dev: &Dev, device: &pb::DeviceIdentity) -> Vec<pb::AuditEvent> {
    let mut audit = AuditServiceClient::new(dev.channel(Role::Auditor).await);
    audit
        .query(pb::AuditQueryRequest {
            filter: Some(pb::AuditFilter {
                device: device_key(device),
                ..Default::default()
            }),
            limit: 100,
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

async fn devices(dev: &Dev) -> Vec<pb::Device> {
    let mut admin = AdminServiceClient::new(dev.channel(Role::Admin).await);
    admin
        .list_devices(pb::ListDevicesRequest {
            limit: 100,
            after: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .devices
}

async fn enrollments_of(dev: &Dev, device: &pb::DeviceIdentity) -> usize {
    let mut admin = AdminServiceClient::new(dev.channel(Role::Admin).await);
    admin
        .list_enrollments(pb::ListEnrollmentsRequest {
            device: Some(device.clone()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .enrollments
        .len()
}

async fn refused_requests_change_nothing(dev: &Dev) {
    let mut gw = EnrollmentServiceClient::new(dev.channel(Role::Gateway).await);

    // A device that never asked for its name sends a CSR naming another device.
    let stranger = mac(0x5_0001);
    let (_, foreign) = csr_for(&["k7q2m9x4abc.devices.ragw.test".to_string()]);
    let refused = gw.enroll(enroll_req(stranger.clone(), foreign)).await;
    let status = refused.expect_err("a device without a name cannot enroll");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("no name is assigned") && status.message().contains("/csrattrs"),
        "the refusal tells the device where its name comes from: {}",
        status.message()
    );
    assert_eq!(
        status
            .metadata()
            .get("ragw-error-class")
            .and_then(|v| v.to_str().ok()),
        Some("bad_identity")
    );
    assert!(
        devices(dev)
            .await
            .iter()
            .all(|d| d.identity.as_ref() != Some(&stranger)),
        "the refused device was registered"
    );
    assert_eq!(enrollments_of(dev, &stranger).await, 0);
    let events = audited(dev, &stranger).await;
    let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        ["rpc.refused"],
        "only the refusal is recorded: {events:#?}"
    );

    // Asking for the name is what registers the device; a bad CSR afterwards adds no enrollment.
    let known = mac(0x5_0002);
    let assignment = gw
        .get_assignment(pb::GetAssignmentRequest {
            device: Some(known.clone()),
            profile: "iot".into(),
            current_certificate_der: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let (_, foreign) = csr_for(&["www.example.com".to_string()]);
    let status = gw
        .enroll(enroll_req(known.clone(), foreign))
        .await
        .expect_err("a foreign name is refused");
    assert!(
        status.message().contains(&assignment.names[0]),
        "the refusal names the assigned name: {}",
        status.message()
    );
    assert_eq!(enrollments_of(dev, &known).await, 0);
    let actions: Vec<String> = audited(dev, &known)
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        ["device.registered", "label.allocated", "rpc.refused"]
    );

    // The same device then enrolls with its own name, under the label it was given.
    let (_, own) = csr_for(&assignment.names);
    let e = gw
        .enroll(enroll_req(known.clone(), own))
        .await
        .unwrap()
        .into_inner()
        .enrollment
        .unwrap();
    assert_eq!(e.label, assignment.label);
    assert_eq!(enrollments_of(dev, &known).await, 1);

    let (code, out, err) = dev.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_enrollment_leaves_nothing_sqlite() {
    let dev = Dev::start(&["--no-worker"]);
    refused_requests_change_nothing(&dev).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_enrollment_leaves_nothing_postgres() {
    let Some(pg) = Pg::fresh() else { return };
    let config = pg.config.to_string_lossy().into_owned();
    let dev = Dev::start(&["--no-worker", "--config", &config]);
    refused_requests_change_nothing(&dev).await;
    drop(dev);
    pg.drop_schema().await;
}
