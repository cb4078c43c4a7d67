//! Issue 8 §2: a profile's `eku` reaches the certificate. `ragw dev` with two profiles, one
//! serverAuth only and one serverAuth + clientAuth (the default, what 802.1X / EAP-TLS needs):
//! the built-in worker orders the local CA's matching profile (draft-ietf-acme-profiles) and
//! each issued leaf carries exactly its profile's extended key usages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Dev, csr_for, mac, wait_issued};
use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::enrollment_service_client::EnrollmentServiceClient;
use ragw_runtime::identity::Role;

/// The extended key usage OIDs of a certificate (none when it has no such extension).
fn eku_oids(cert_der: &[u8]) -> Vec<String> {
    use der::Decode;
    use der::oid::AssociatedOid;
    use x509_cert::ext::pkix::ExtendedKeyUsage;
    let cert = x509_cert::Certificate::from_der(cert_der).unwrap();
    cert.tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .filter(|e| e.extn_id == ExtendedKeyUsage::OID)
        .flat_map(|e| {
            ExtendedKeyUsage::from_der(e.extn_value.as_bytes())
                .unwrap()
                .0
        })
        .map(|oid| oid.to_string())
        .collect()
}

const SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_profile_gets_the_extended_key_usages_it_asks_for() {
    let temp = tempfile::tempdir().unwrap();
    let config = temp.path().join("dev.toml");
    std::fs::write(
        &config,
        r#"[[profiles]]
name = "web"
parent_domains = ["web.ragw.test"]
eku = ["serverAuth"]

[[profiles]]
name = "dot1x"
parent_domains = ["dot1x.ragw.test"]
"#,
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let dev = Dev::start(&["--config", &config_arg]);
    let mut gw = EnrollmentServiceClient::new(dev.channel(Role::Gateway).await);

    let mut pending = Vec::new();
    for (i, profile) in [(1, "web"), (2, "dot1x")] {
        let a = gw
            .get_assignment(pb::GetAssignmentRequest {
                device: Some(mac(i)),
                profile: profile.into(),
                current_certificate_der: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let (_, csr) = csr_for(&a.names);
        let e = gw
            .enroll(pb::EnrollRequest {
                csr_der: csr,
                device: Some(mac(i)),
                protocol: pb::Protocol::Est as i32,
                profile: profile.into(),
                current_certificate_der: Vec::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .enrollment
            .unwrap();
        pending.push((a.names[0].clone(), e.id));
    }
    let issued = wait_issued(&mut gw, &pending, Duration::from_secs(300)).await;
    assert_eq!(
        eku_oids(&issued[0].1[0]),
        vec![SERVER_AUTH.to_string()],
        "{}: the web profile asks for serverAuth only",
        issued[0].0
    );
    let mut dual = eku_oids(&issued[1].1[0]);
    dual.sort();
    assert_eq!(
        dual,
        vec![SERVER_AUTH.to_string(), CLIENT_AUTH.to_string()],
        "{}: the default profile asks for serverAuth and clientAuth",
        issued[1].0
    );
}
