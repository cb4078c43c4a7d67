//! The peer against the scripted RFC 9930 server of `support`, in memory (sans-IO both sides).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ragw_teap::tlv::error_code;
use ragw_teap_peer::{Peer, PeerConfig, client_tls_config};
use rustls_pki_types::ServerName;
use support::{AUTHORITY_ID, MiniServer, Pki, Plan, SERVER_NAME, ServerStep, converse, rcgen_csr};

fn peer_config(pki: &Pki, client_cert: bool) -> PeerConfig {
    let client_auth = client_cert.then(|| (pki.client_chain.clone(), pki.client_key.clone_key()));
    let tls = client_tls_config(std::slice::from_ref(&pki.ca_der), client_auth).unwrap();
    PeerConfig::new(
        tls,
        ServerName::try_from(SERVER_NAME).unwrap(),
        "anonymous@example",
    )
}

fn server_keys(step: &ServerStep) -> Option<&ragw_teap_peer::SessionKeys> {
    match step {
        ServerStep::Finished { keys, .. } => keys.as_ref(),
        ServerStep::Send(_) => None,
    }
}

fn server_success(step: &ServerStep) -> bool {
    matches!(step, ServerStep::Finished { success: true, .. })
}

#[test]
fn client_certificate_without_inner_method_succeeds_with_matching_keys() {
    // Appendix C.13.
    let pki = Pki::new();
    let mut peer = Peer::new(peer_config(&pki, true)).unwrap();
    let (mut server, start) = MiniServer::start(pki.server_config(), Plan::NoInner, 1024);
    let (outcome, finished) = converse(&mut peer, &mut server, start);
    assert!(outcome.success, "{outcome:?}");
    assert!(server_success(&finished));
    let (peer_keys, server_keys) = (
        outcome.keys.as_ref().unwrap(),
        server_keys(&finished).unwrap(),
    );
    assert_eq!(peer_keys.msk, server_keys.msk);
    assert_eq!(peer_keys.emsk, server_keys.emsk);
    assert_ne!(peer_keys.msk, [0; 64]);
    assert_eq!(outcome.crypto_binding_rounds, 1);
    assert_eq!(outcome.authority_id.as_deref(), Some(AUTHORITY_ID));
    assert_eq!(
        server.peer_certificates.len(),
        2,
        "the server saw the client chain"
    );
    assert_eq!(outcome.server_certificates[0], pki.server_chain[0].as_ref());
    assert!(outcome.cipher_suite.is_some());
    assert!(outcome.errors.is_empty() && outcome.sent_errors.is_empty());
}

#[test]
fn basic_password_with_small_fragments_both_ways_succeeds() {
    // Appendix C.1 with Appendix C.5 fragmentation in both directions.
    let pki = Pki::new();
    let mut config = peer_config(&pki, false);
    config.password = Some(("alice".into(), b"correct horse".to_vec()));
    config.max_fragment = 64;
    let mut peer = Peer::new(config).unwrap();
    let plan = Plan::Password {
        username: b"alice".to_vec(),
        password: b"correct horse".to_vec(),
    };
    let (mut server, start) = MiniServer::start(pki.server_config(), plan, 300);
    let (outcome, finished) = converse(&mut peer, &mut server, start);
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(
        outcome.keys.as_ref().unwrap().msk,
        server_keys(&finished).unwrap().msk
    );
    assert_eq!(outcome.password_prompts, ["Password:"]);
    assert!(server.peer_certificates.is_empty());
    assert!(
        server.server_fragments_sent > 3,
        "server certificate flight was fragmented"
    );
    assert!(
        server.peer_fragments_acked > 0,
        "peer's flight was fragmented"
    );
}

#[test]
fn wrong_password_fails_after_the_protected_failure() {
    // Appendix C.2.
    let pki = Pki::new();
    let mut config = peer_config(&pki, false);
    config.password = Some(("alice".into(), b"wrong".to_vec()));
    let mut peer = Peer::new(config).unwrap();
    let plan = Plan::Password {
        username: b"alice".to_vec(),
        password: b"correct horse".to_vec(),
    };
    let (mut server, start) = MiniServer::start(pki.server_config(), plan, 1024);
    let (outcome, finished) = converse(&mut peer, &mut server, start);
    assert!(!outcome.success);
    assert!(!server_success(&finished));
    assert!(outcome.keys.is_none());
    assert_eq!(outcome.errors, [1003]);
    assert!(
        outcome
            .failure
            .as_deref()
            .unwrap()
            .contains("Result(Failure)"),
        "{outcome:?}"
    );
}

#[test]
fn certificate_provisioning_returns_the_pkcs7_for_the_peers_csr() {
    // Appendix C.11: client certificate in Phase 1, then PKCS#10 → PKCS#7.
    let pki = Pki::new();
    let attributes = vec![0x30, 0x03, 0x06, 0x01, 0x2a];
    let mut config = peer_config(&pki, true);
    config.csr = Some(Box::new(rcgen_csr));
    let mut peer = Peer::new(config).unwrap();
    let plan = Plan::Provision {
        required: true,
        csr_attributes: attributes.clone(),
        issue: Box::new(|csr| Ok([b"PKCS7 for ".as_slice(), csr].concat())),
    };
    let (mut server, start) = MiniServer::start(pki.server_config(), plan, 1024);
    let (outcome, finished) = converse(&mut peer, &mut server, start);
    assert!(outcome.success, "{outcome:?}");
    assert!(server_success(&finished));
    let csr = server.received_csr.clone().expect("the server got a CSR");
    assert_eq!(csr[0], 0x30, "DER SEQUENCE");
    assert!(
        csr.windows(14).any(|w| w == b"device-attrs-5"),
        "the CSR builder saw the 5-octet CSR-Attributes"
    );
    assert_eq!(
        outcome.pkcs7.as_deref(),
        Some([b"PKCS7 for ".as_slice(), &csr].concat().as_slice())
    );
    assert_eq!(outcome.csr_attributes, Some(attributes));
    assert_eq!(outcome.csr_requests, 1);
    assert_eq!(
        outcome.keys.as_ref().unwrap().msk,
        server_keys(&finished).unwrap().msk
    );
}

#[test]
fn bad_csr_ends_in_failure_with_the_servers_error_code() {
    // Appendix C.12.
    let pki = Pki::new();
    let mut config = peer_config(&pki, true);
    config.csr = Some(Box::new(|_: &[u8]| b"not a CSR".to_vec()));
    let mut peer = Peer::new(config).unwrap();
    let plan = Plan::Provision {
        required: true,
        csr_attributes: vec![0x30, 0x00],
        issue: Box::new(|_| Err(error_code::BAD_CSR)),
    };
    let (mut server, start) = MiniServer::start(pki.server_config(), plan, 1024);
    let (outcome, finished) = converse(&mut peer, &mut server, start);
    assert!(!outcome.success);
    assert!(!server_success(&finished));
    assert_eq!(outcome.errors, [error_code::BAD_CSR]);
    assert!(outcome.pkcs7.is_none());
}

#[test]
fn declining_optional_provisioning_still_authenticates_and_required_fails() {
    for (required, expect_success) in [(false, true), (true, false)] {
        let pki = Pki::new();
        let mut peer = Peer::new(peer_config(&pki, true)).unwrap();
        let plan = Plan::Provision {
            required,
            csr_attributes: vec![0x30, 0x00],
            issue: Box::new(|_| panic!("no CSR expected")),
        };
        let (mut server, start) = MiniServer::start(pki.server_config(), plan, 1024);
        let (outcome, finished) = converse(&mut peer, &mut server, start);
        assert_eq!(
            outcome.success, expect_success,
            "required={required}: {outcome:?}"
        );
        assert_eq!(server_success(&finished), expect_success);
        assert_eq!(outcome.csr_requests, 1);
        assert!(server.received_csr.is_none());
    }
}

#[test]
fn trusted_server_root_is_requested_and_kept() {
    let pki = Pki::new();
    let mut config = peer_config(&pki, true);
    config.request_trusted_server_root = true;
    let mut peer = Peer::new(config).unwrap();
    let (mut server, start) = MiniServer::start(pki.server_config(), Plan::NoInner, 1024);
    server.trusted_root_pkcs7 = Some(b"ROOTS-PKCS7".to_vec());
    let (outcome, finished) = converse(&mut peer, &mut server, start);
    assert!(outcome.success, "{outcome:?}");
    assert!(server_success(&finished));
    assert_eq!(
        outcome.trusted_server_root.as_deref(),
        Some(&b"ROOTS-PKCS7"[..])
    );
}

#[test]
fn untrusted_server_certificate_fails_in_tls_with_an_alert() {
    let pki = Pki::new();
    let other = Pki::new();
    let mut peer = Peer::new(peer_config(&other, false)).unwrap();
    let (mut server, start) = MiniServer::start(pki.server_config(), Plan::NoInner, 1024);
    let (outcome, finished) = converse(&mut peer, &mut server, start);
    assert!(!outcome.success);
    let ServerStep::Finished {
        success, reason, ..
    } = &finished
    else {
        unreachable!()
    };
    assert!(!success);
    assert!(
        reason.contains("TLS"),
        "server saw the peer's alert: {reason}"
    );
    let failure = outcome.failure.unwrap();
    assert!(failure.contains("TLS"), "{failure}");
}

#[test]
fn premature_eap_success_is_not_accepted() {
    let pki = Pki::new();
    let mut peer = Peer::new(peer_config(&pki, true)).unwrap();
    let (_server, start) = MiniServer::start(pki.server_config(), Plan::NoInner, 1024);
    assert!(matches!(
        peer.receive(&start),
        ragw_teap_peer::PeerStep::Send(_)
    ));
    let ragw_teap_peer::PeerStep::Done(outcome) = peer.receive(&[3, 18, 0, 4]) else {
        panic!("EAP-Success must end the conversation")
    };
    assert!(!outcome.success);
    assert!(outcome.keys.is_none());
}

#[test]
fn retransmitted_request_gets_the_same_response() {
    let pki = Pki::new();
    let mut peer = Peer::new(peer_config(&pki, true)).unwrap();
    let (_server, start) = MiniServer::start(pki.server_config(), Plan::NoInner, 1024);
    let ragw_teap_peer::PeerStep::Send(first) = peer.receive(&start) else {
        panic!()
    };
    let ragw_teap_peer::PeerStep::Send(again) = peer.receive(&start) else {
        panic!()
    };
    assert_eq!(first, again);
}
