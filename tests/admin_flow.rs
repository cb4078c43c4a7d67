//! The operator's path: manual approval with `ragw admin`, a worker completing the job, the
//! audit trail that records it, and a restart that keeps everything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Dev, csr_for, mac};
use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::enrollment_service_client::EnrollmentServiceClient;
use ragw_proto::registrar::v1::worker_service_client::WorkerServiceClient;
use ragw_runtime::identity::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_approval_then_issue_then_restart() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    let mut dev = Dev::start_in(&dir, &["--no-worker", "--approve", "manual"]);
    let mut gw = EnrollmentServiceClient::new(dev.channel(Role::Gateway).await);
    let a = gw
        .get_assignment(pb::GetAssignmentRequest {
            device: Some(mac(9)),
            profile: "iot".into(),
            current_certificate_der: Vec::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let (key, csr) = csr_for(&a.names);
    let e = gw
        .enroll(common::enroll_req(mac(9), csr))
        .await
        .unwrap()
        .into_inner()
        .enrollment
        .unwrap();
    assert_eq!(e.state, pb::EnrollmentState::AwaitingApproval as i32);

    let (code, out, err) = dev.cli(&["admin", "pending"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&e.id), "{out}");
    let (code, out, err) = dev.cli(&["admin", "approve", &e.id, "--reason", "known printer"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("queued"), "{out}");

    // A worker leases it and hands back a certificate for the device's key.
    let mut worker = WorkerServiceClient::new(dev.channel(Role::Worker).await);
    let jobs = worker
        .lease(pb::LeaseRequest {
            worker_id: "w1".into(),
            max_jobs: 5,
            lease_seconds: 60,
            wait_millis: 2000,
            max_revocations: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].enrollment_id, e.id);
    let mut params = rcgen::CertificateParams::new(a.names.clone()).unwrap();
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x1a, 0x2b, 0x3c]));
    let cert = params.self_signed(&key).unwrap();
    // A certificate for another key is refused.
    let other = rcgen::KeyPair::generate().unwrap();
    let wrong = rcgen::CertificateParams::new(a.names.clone())
        .unwrap()
        .self_signed(&other)
        .unwrap();
    let status = worker
        .complete(pb::CompleteRequest {
            enrollment_id: e.id.clone(),
            lease_token: jobs[0].lease_token.clone(),
            certificate_chain: vec![wrong.der().to_vec()],
        })
        .await
        .unwrap_err();
    assert!(
        status.message().contains("does not certify the key"),
        "{status:?}"
    );
    // So is a chain whose next certificate did not sign the first: gateways would serve it as
    // the CA certificates.
    let status = worker
        .complete(pb::CompleteRequest {
            enrollment_id: e.id.clone(),
            lease_token: jobs[0].lease_token.clone(),
            certificate_chain: vec![cert.der().to_vec(), wrong.der().to_vec()],
        })
        .await
        .unwrap_err();
    assert!(
        status
            .message()
            .contains("certificate_chain: certificate 0 of the chain"),
        "{status:?}"
    );
    worker
        .complete(pb::CompleteRequest {
            enrollment_id: e.id.clone(),
            lease_token: jobs[0].lease_token.clone(),
            certificate_chain: vec![cert.der().to_vec()],
        })
        .await
        .unwrap();
    let done = gw
        .wait_enrollment(pb::WaitEnrollmentRequest {
            id: e.id.clone(),
            timeout_millis: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.state, pb::EnrollmentState::Issued as i32);
    assert_eq!(done.certificate_chain, vec![cert.der().to_vec()]);

    let (code, out, _) = dev.cli(&[
        "audit",
        "query",
        "--device",
        "mac:02:00:00:00:00:09",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let actions: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for expected in [
        "device.registered",
        "label.allocated",
        "enrollment.received",
        "enrollment.awaiting_approval",
        "approval.granted",
        "enrollment.approved",
        "enrollment.queued",
        "enrollment.ordering",
        "rpc.refused",
        "enrollment.issued",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "missing {expected} in {actions:?}"
        );
    }
    assert!(
        out.contains("admin:"),
        "the approval names the operator: {out}"
    );

    // The ops endpoint serves health, readiness and the registrar's counters.
    let metrics = dev.endpoint("metrics");
    let (status, body) = common::http_get(&metrics);
    assert!(status.contains("200"), "{status}");
    let samples: Vec<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(
        samples.contains(&"ragw_registrar_rpcs_total{rpc=\"Approve\",outcome=\"ok\"} 1"),
        "{body}"
    );
    assert!(
        samples.contains(&"ragw_registrar_certificates_recorded_total 1"),
        "{body}"
    );
    // One prefix per component, never doubled (`ragw_ragw_…`).
    for sample in &samples {
        let name = sample.split(['{', ' ']).next().unwrap_or_default();
        assert!(
            [
                "ragw_registrar_",
                "ragw_worker_",
                "ragw_ca_",
                "ragw_est_",
                "ragw_teap_"
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix))
                && !name.starts_with("ragw_ragw"),
            "metric {name} does not carry exactly one component prefix"
        );
    }
    let (status, body) = common::http_get(&metrics.replace("/metrics", "/readyz"));
    assert!(
        status.contains("200") && body.contains("ready"),
        "{status} {body}"
    );

    // Restart with the same directory: everything is still there.
    dev.stop();
    let dev = Dev::start_in(&dir, &["--no-worker", "--approve", "manual"]);
    let (code, out, err) = dev.cli(&["admin", "enrollments", "--state", "issued"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&e.id), "{out}");
    let (code, out, _) = dev.cli(&["admin", "devices"]);
    assert_eq!(code, 0);
    assert!(out.contains(&a.label) && out.contains("yes"), "{out}");
    let (code, out, err) = dev.cli(&[
        "admin",
        "revoke-cert",
        "1a2b3c",
        "--reason",
        "keyCompromise",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1a2b3c"), "{out}");
    let (code, out, err) = dev.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}
