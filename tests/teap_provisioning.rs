//! Certificate provisioning inside TEAP (RFC 9930 §3.8.2) end to end: ragw's own TEAP peer
//! (`ragw-teap-peer`) as a device behind a NAS, over RADIUS to a `ragw dev` (registrar, local
//! ACME CA and worker all real), with the dev label `iot` (bootstrap password, provisioning
//! offered).
//!
//! - A new device authenticates with the bootstrap password, gets CSR-Attributes naming its
//!   assigned dNSName and key type, sends a CSR for exactly those, and receives a PKCS#7 whose
//!   leaf certifies the assigned name and its key and whose chain `openssl verify` accepts
//!   against DATA_DIR/ca/root.pem; the peer's MSK equals the one in the MS-MPPE keys.
//! - The same CSR again gets the byte-identical certificate, and the registrar holds one
//!   enrollment for the device.
//! - The issued certificate then authenticates the device in phase 1, without a password.
//! - A CSR for a name the device was not assigned: Error 1024, Access-Reject, nothing issued.
//! - A wrong password: Access-Reject, audited as `gateway.refused` with the Calling-Station-Id;
//!   accepts are audited as `gateway.access_granted` with the NAS and Calling-Station-Id.
//! - Manual approval: the first attempt ends in the retryable Error 1027; after
//!   `ragw admin approve` the same CSR gets the certificate.
//!
//! The first three run on SQLite and, with RAGW_TEST_DATABASE_URL, on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod peers;
mod teap_support;

use common::{Dev, Pg};
use teap_support::{Credential, Radius, chain_of, csr_from_attributes, same_csr};

/// The error a registrar refusal of the CSR's names maps to (RFC 9930 §4.2.6).
const BAD_IDENTITY_IN_CSR: u32 = 1024;
/// The retryable error while the enrollment waits (docs/teap.md).
const GENERAL_PKI_ERROR: u32 = 1027;

/// (a) provisioning with the bootstrap password, (b) the same CSR again, (c) phase-1 login with
/// the issued certificate. Returns the device's key and chain for further use.
async fn provision_retry_and_login(
    dev: &Dev,
    serial: &str,
) -> (teap_support::Enrolled, Vec<Vec<u8>>) {
    let radius = Radius::of(dev);
    let password = teap_support::dev_password(dev);
    let work = tempfile::tempdir().unwrap();
    let station = "02-00-5e-00-53-01";

    // (a) A new device: password, CSR from the CSR-Attributes, certificate.
    let (builder, built) = csr_from_attributes(None);
    let peer = teap_support::peer(
        dev,
        "anonymous@iot",
        Credential::Password(serial.into(), password.clone()),
        Some(builder),
    );
    let first = teap_support::run(peer, &radius, station).await;
    assert!(first.accepted, "Access-Reject: {first:?}");
    assert!(first.peer.success, "{:?}", first.peer);
    assert_eq!(first.peer.csr_requests, 1, "{:?}", first.peer);
    let enrolled = built.lock().unwrap().clone().expect("the peer built a CSR");
    assert_eq!(
        first.peer.csr_attributes.as_deref(),
        Some(&enrolled.csr_attributes[..])
    );
    assert_eq!(
        enrolled.names.len(),
        1,
        "one assigned name: {:?}",
        enrolled.names
    );
    let assigned = enrolled.names[0].clone();
    assert!(
        assigned.ends_with(".devices.ragw.test"),
        "the assigned name is under the dev domain: {assigned}"
    );
    let chain = chain_of(&first);
    assert!(
        chain.len() >= 2,
        "leaf and intermediate: {} certs",
        chain.len()
    );
    assert_eq!(
        teap_support::san_dns_names(&chain[0]),
        vec![assigned.clone()]
    );
    assert_eq!(
        teap_support::spki_der(&chain[0]),
        enrolled.spki_der,
        "the leaf certifies the device's key"
    );
    teap_support::openssl_verifies(dev, &chain, work.path());
    let peer_msk = first.peer.keys.as_ref().expect("peer keys").msk;
    assert_eq!(
        first.radius_msk,
        Some(peer_msk),
        "MS-MPPE keys carry the peer's MSK"
    );
    let device = format!("serial:{serial}");
    let granted = teap_support::wait_for_audit(
        dev,
        "gateway.access_granted",
        &[serial, teap_support::NAS, station, "certificate issued"],
    )
    .await;
    assert!(
        granted["details"]
            .as_str()
            .unwrap()
            .contains(r#""label":"iot""#),
        "{granted}"
    );

    // (b) The device did not keep the answer: the same CSR again gets the same certificate.
    let peer = teap_support::peer(
        dev,
        "anonymous@iot",
        Credential::Password(serial.into(), password.clone()),
        Some(same_csr(enrolled.csr_der.clone())),
    );
    let again = teap_support::run(peer, &radius, station).await;
    assert!(again.accepted && again.peer.success, "{again:?}");
    assert_eq!(
        chain_of(&again),
        chain,
        "byte-identical certificate and chain"
    );
    let rows = teap_support::enrollments_of(dev, &device);
    assert_eq!(rows.len(), 1, "one enrollment for the device: {rows:?}");
    assert_eq!(rows[0].1, "issued", "{rows:?}");
    assert_eq!(rows[0].2, assigned, "{rows:?}");

    // (c) The issued certificate authenticates the device in phase 1; no password.
    let peer = teap_support::peer(
        dev,
        "anonymous@iot",
        Credential::Certificate(chain.clone(), enrolled.key_pkcs8.clone()),
        None,
    );
    let login = teap_support::run(peer, &radius, station).await;
    assert!(login.accepted && login.peer.success, "{login:?}");
    assert!(
        login.peer.password_prompts.is_empty(),
        "no password asked: {:?}",
        login.peer
    );
    assert_eq!(
        login.radius_msk,
        Some(login.peer.keys.as_ref().unwrap().msk),
        "MS-MPPE keys carry the peer's MSK"
    );
    assert_ne!(
        login.radius_msk, first.radius_msk,
        "a fresh MSK per conversation"
    );
    // The registrar names the device the certificate was issued to, so the event does too.
    teap_support::wait_for_audit(
        dev,
        "gateway.access_granted",
        &[
            station,
            teap_support::NAS,
            "certificate ragw issued",
            &device,
        ],
    )
    .await;
    assert_eq!(teap_support::enrollments_of(dev, &device).len(), 1);
    (enrolled, chain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_retry_and_certificate_login_on_sqlite() {
    let dev = Dev::start(&[]);
    provision_retry_and_login(&dev, "SN-TEAP-PROV-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_retry_and_certificate_login_on_postgres() {
    let Some(pg) = Pg::fresh() else { return };
    let config = pg.config.to_string_lossy().into_owned();
    let dev = Dev::start(&["--config", &config]);
    provision_retry_and_login(&dev, "SN-TEAP-PROV-PG").await;
    drop(dev);
    pg.drop_schema().await;
}

/// (d) a CSR for a foreign name, (e) a wrong password, and the audit of both and of an accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_names_and_wrong_passwords_are_refused_and_audited() {
    let dev = Dev::start(&[]);
    let radius = Radius::of(&dev);
    let password = teap_support::dev_password(&dev);

    // (d) The password is right, the CSR asks for a name the device was not assigned.
    let serial = "SN-TEAP-FOREIGN";
    let (builder, built) = csr_from_attributes(Some(vec!["printer.example.com".into()]));
    let peer = teap_support::peer(
        &dev,
        "anonymous@iot",
        Credential::Password(serial.into(), password.clone()),
        Some(builder),
    );
    let foreign = teap_support::run(peer, &radius, "02-00-5e-00-53-0d").await;
    assert!(built.lock().unwrap().is_some(), "the peer sent its CSR");
    assert!(!foreign.accepted, "{foreign:?}");
    assert!(!foreign.peer.success);
    assert_eq!(foreign.radius_msk, None);
    assert!(
        foreign.peer.pkcs7.is_none(),
        "nothing issued: {:?}",
        foreign.peer
    );
    assert!(
        foreign.peer.errors.contains(&BAD_IDENTITY_IN_CSR),
        "Error TLV 1024: {:?}",
        foreign.peer
    );
    let rows = teap_support::enrollments_of(&dev, &format!("serial:{serial}"));
    assert!(
        rows.iter().all(|r| r.1 != "issued"),
        "nothing issued for the device: {rows:?}"
    );
    teap_support::wait_for_audit(&dev, "gateway.refused", &[serial, "02-00-5e-00-53-0d"]).await;

    // (e) A wrong password.
    let station = "02-00-5e-00-53-0e";
    let peer = teap_support::peer(
        &dev,
        "anonymous@iot",
        Credential::Password("SN-TEAP-WRONG".into(), "not-the-password".into()),
        None,
    );
    let wrong = teap_support::run(peer, &radius, station).await;
    assert!(!wrong.accepted && !wrong.peer.success, "{wrong:?}");
    assert_eq!(wrong.radius_msk, None);
    let refused = teap_support::wait_for_audit(
        &dev,
        "gateway.refused",
        // The user name tried, not the outer identity, so password guessing can be followed.
        &[
            station,
            teap_support::NAS,
            "SN-TEAP-WRONG",
            "wrong user name or password",
        ],
    )
    .await;
    assert!(
        refused["details"]
            .as_str()
            .unwrap()
            .contains(r#""label":"iot""#),
        "{refused}"
    );

    // An accept without provisioning (the device declines the offer): audited with NAS and
    // Calling-Station-Id.
    let station = "02-00-5e-00-53-0f";
    let peer = teap_support::peer(
        &dev,
        "anonymous@iot",
        Credential::Password("SN-TEAP-NETONLY".into(), password),
        None,
    );
    let accepted = teap_support::run(peer, &radius, station).await;
    assert!(accepted.accepted && accepted.peer.success, "{accepted:?}");
    assert!(accepted.peer.pkcs7.is_none());
    teap_support::wait_for_audit(
        &dev,
        "gateway.access_granted",
        &[
            "SN-TEAP-NETONLY",
            station,
            teap_support::NAS,
            "not requested",
        ],
    )
    .await;
}

/// (f) Manual approval: the retryable error first, the certificate for the same CSR after
/// `ragw admin approve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_approval_then_the_same_csr_gets_the_certificate() {
    let dev = Dev::start(&["--approve", "manual"]);
    let radius = Radius::of(&dev);
    let password = teap_support::dev_password(&dev);
    let serial = "SN-TEAP-APPROVE";
    let station = "02-00-5e-00-53-1a";

    let (builder, built) = csr_from_attributes(None);
    let peer = teap_support::peer(
        &dev,
        "anonymous@iot",
        Credential::Password(serial.into(), password.clone()),
        Some(builder),
    );
    let waiting = teap_support::run(peer, &radius, station).await;
    assert!(!waiting.accepted && !waiting.peer.success, "{waiting:?}");
    assert!(waiting.peer.pkcs7.is_none());
    assert!(
        waiting.peer.errors.contains(&GENERAL_PKI_ERROR),
        "the retryable Error 1027: {:?}",
        waiting.peer
    );
    let enrolled = built.lock().unwrap().clone().expect("a CSR was sent");
    let rows = teap_support::enrollments_of(&dev, &format!("serial:{serial}"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1, "awaiting_approval", "{rows:?}");
    let (code, out, err) = dev.cli(&["admin", "pending"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&rows[0].0), "{out}");
    let (code, _, err) = dev.cli(&["admin", "approve", &rows[0].0, "--reason", "known sensor"]);
    assert_eq!(code, 0, "{err}");

    let peer = teap_support::peer(
        &dev,
        "anonymous@iot",
        Credential::Password(serial.into(), password),
        Some(same_csr(enrolled.csr_der.clone())),
    );
    let issued = teap_support::run(peer, &radius, station).await;
    assert!(issued.accepted && issued.peer.success, "{issued:?}");
    let chain = chain_of(&issued);
    assert_eq!(teap_support::san_dns_names(&chain[0]), enrolled.names);
    let work = tempfile::tempdir().unwrap();
    teap_support::openssl_verifies(&dev, &chain, work.path());
    let rows = teap_support::enrollments_of(&dev, &format!("serial:{serial}"));
    assert_eq!(rows.len(), 1, "the same enrollment: {rows:?}");
    assert_eq!(rows[0].1, "issued", "{rows:?}");
}
