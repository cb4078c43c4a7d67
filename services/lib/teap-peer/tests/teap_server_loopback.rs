//! The peer against the project's own server conversation (`ragw_teap::teap_server`), both
//! sans-IO, in memory: the two sides were written independently from RFC 9930.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use ragw_teap::teap_server::{
    Answer, Conversation, ConversationLimits, Finish, Next, Provisioning, Question,
    TeapServerConfig, tls_server_config,
};
use ragw_teap::tlv::error_code;
use ragw_teap_peer::{Peer, PeerConfig, PeerOutcome, PeerStep, client_tls_config};
use rustls_pki_types::ServerName;
use support::{Pki, SERVER_NAME, rcgen_csr};

const AUTHORITY: &[u8] = b"ragw-authority";

fn server_config(
    pki: &Pki,
    max_tls_fragment: usize,
    roots: Option<Vec<u8>>,
) -> Arc<TeapServerConfig> {
    Arc::new(TeapServerConfig {
        tls: tls_server_config(pki.server_chain.clone(), pki.server_key.clone_key()).unwrap(),
        authority_id: AUTHORITY.to_vec(),
        limits: ConversationLimits {
            max_tls_fragment,
            ..ConversationLimits::default()
        },
        trusted_server_root_pkcs7: roots,
    })
}

fn peer_config(pki: &Pki, client_cert: bool) -> PeerConfig {
    let client_auth = client_cert.then(|| (pki.client_chain.clone(), pki.client_key.clone_key()));
    let tls = client_tls_config(std::slice::from_ref(&pki.ca_der), client_auth).unwrap();
    PeerConfig::new(
        tls,
        ServerName::try_from(SERVER_NAME).unwrap(),
        "anonymous@example",
    )
}

/// Runs a whole conversation; `decide` answers the server's questions.
fn converse(
    mut peer: Peer,
    config: Arc<TeapServerConfig>,
    mut decide: impl FnMut(Question) -> Answer,
) -> (PeerOutcome, Finish) {
    let mut counter = 0u8;
    let random = Box::new(move |buf: &mut [u8]| {
        counter = counter.wrapping_add(1);
        buf.fill(counter.wrapping_mul(0x3b));
    });
    let (mut conversation, start) =
        Conversation::start(config, 2, peer.outer_identity().as_bytes().to_vec(), random).unwrap();
    let mut to_peer = start;
    for _ in 0..200 {
        let response = match peer.receive(&to_peer) {
            PeerStep::Send(response) => response,
            PeerStep::Done(outcome) => panic!("peer finished first: {outcome:?}"),
        };
        let mut next = conversation.receive(&response);
        loop {
            match next {
                Next::Ask(question) => next = conversation.answer(decide(question)),
                Next::Send(request) => {
                    to_peer = request;
                    break;
                }
                Next::Finished(finish) => {
                    return match peer.receive(&finish.eap) {
                        PeerStep::Done(outcome) => (*outcome, finish),
                        PeerStep::Send(_) => panic!("peer continues after {finish:?}"),
                    };
                }
                Next::Discard(why) => panic!("server discarded the peer's response: {why}"),
            }
        }
    }
    panic!("conversation did not end")
}

fn assert_same_keys(outcome: &PeerOutcome, finish: &Finish) {
    let peer = outcome.keys.as_ref().expect("peer keys");
    let server = finish.keys.as_ref().expect("server keys");
    assert_eq!(peer.msk, server.msk);
    assert_eq!(peer.emsk, server.emsk);
}

#[test]
fn client_certificate_without_inner_method() {
    let pki = Pki::new();
    let mut seen_chain = 0;
    let (outcome, finish) = converse(
        Peer::new(peer_config(&pki, true)).unwrap(),
        server_config(&pki, 1024, None),
        |question| match question {
            Question::TunnelUp { peer_certificates } => {
                seen_chain = peer_certificates.len();
                Answer::Authenticated { provisioning: None }
            }
            other => panic!("unexpected {other:?}"),
        },
    );
    assert!(outcome.success && finish.accepted, "{outcome:?} {finish:?}");
    assert_same_keys(&outcome, &finish);
    assert_eq!(seen_chain, 2);
    assert_eq!(outcome.authority_id.as_deref(), Some(AUTHORITY));
    assert_eq!(outcome.crypto_binding_rounds, 1);
}

#[test]
fn peer_outer_identity_type_tlv_enters_both_compound_macs() {
    // RFC 9930 §7.3: a Phase 1 client certificate goes with an Identity-Type outer TLV.
    let pki = Pki::new();
    let mut config = peer_config(&pki, true);
    config.outer_tlvs = ragw_teap::tlv::Tlv::IdentityType(2).encode().unwrap();
    let (outcome, finish) = converse(
        Peer::new(config).unwrap(),
        server_config(&pki, 1024, None),
        |_| Answer::Authenticated { provisioning: None },
    );
    assert!(outcome.success && finish.accepted, "{outcome:?} {finish:?}");
    assert_same_keys(&outcome, &finish);
}

#[test]
fn basic_password_with_fragmentation_both_ways() {
    let pki = Pki::new();
    let mut config = peer_config(&pki, false);
    config.password = Some(("alice".into(), b"correct horse".to_vec()));
    config.max_fragment = 64;
    let (outcome, finish) = converse(
        Peer::new(config).unwrap(),
        server_config(&pki, 200, None),
        |question| match question {
            Question::TunnelUp { peer_certificates } => {
                assert!(peer_certificates.is_empty());
                Answer::RequirePassword {
                    prompt: b"Password:".to_vec(),
                }
            }
            Question::CheckPassword { username, password } => {
                assert_eq!(username, b"alice");
                assert_eq!(password.as_slice(), b"correct horse");
                Answer::Authenticated { provisioning: None }
            }
            other => panic!("unexpected {other:?}"),
        },
    );
    assert!(outcome.success && finish.accepted, "{outcome:?} {finish:?}");
    assert_same_keys(&outcome, &finish);
    assert_eq!(outcome.password_prompts, ["Password:"]);
    assert!(
        outcome.exchanges > 8,
        "fragments were exchanged: {}",
        outcome.exchanges
    );
}

#[test]
fn rejected_password_ends_in_protected_failure() {
    let pki = Pki::new();
    let mut config = peer_config(&pki, false);
    config.password = Some(("alice".into(), b"wrong".to_vec()));
    let (outcome, finish) = converse(
        Peer::new(config).unwrap(),
        server_config(&pki, 1024, None),
        |question| match question {
            Question::TunnelUp { .. } => Answer::RequirePassword { prompt: vec![] },
            Question::CheckPassword { .. } => Answer::Reject {
                error_code: 1003,
                reason: "bad password".into(),
            },
            other => panic!("unexpected {other:?}"),
        },
    );
    assert!(!outcome.success && !finish.accepted);
    assert_eq!(outcome.errors, [1003]);
    assert!(outcome.keys.is_none());
}

#[test]
fn certificate_provisioning_returns_the_issued_pkcs7() {
    let pki = Pki::new();
    let attributes = vec![0x30, 0x03, 0x06, 0x01, 0x2a];
    let mut config = peer_config(&pki, true);
    config.csr = Some(Box::new(rcgen_csr));
    let mut csr_seen = Vec::new();
    let (outcome, finish) = converse(
        Peer::new(config).unwrap(),
        server_config(&pki, 1024, None),
        |question| match question {
            Question::TunnelUp { .. } => Answer::Authenticated {
                provisioning: Some(Provisioning {
                    csr_attributes_der: attributes.clone(),
                    required: true,
                }),
            },
            Question::Enroll { csr_der } => {
                csr_seen = csr_der.clone();
                Answer::Issued {
                    pkcs7_der: [b"PKCS7:".as_slice(), &csr_der].concat(),
                }
            }
            other => panic!("unexpected {other:?}"),
        },
    );
    assert!(outcome.success && finish.accepted, "{outcome:?} {finish:?}");
    assert_same_keys(&outcome, &finish);
    assert!(csr_seen.windows(14).any(|w| w == b"device-attrs-5"));
    assert_eq!(
        outcome.pkcs7.as_deref(),
        Some([b"PKCS7:".as_slice(), &csr_seen].concat().as_slice())
    );
    assert_eq!(outcome.csr_attributes, Some(attributes));
}

#[test]
fn password_then_provisioning_takes_two_binding_rounds() {
    // The server answers the password with Intermediate-Result + Crypto-Binding + the
    // provisioning Request-Action; the PKCS#7 comes with a second Crypto-Binding.
    let pki = Pki::new();
    let mut config = peer_config(&pki, false);
    config.password = Some(("alice".into(), b"correct horse".to_vec()));
    config.csr = Some(Box::new(rcgen_csr));
    let (outcome, finish) = converse(
        Peer::new(config).unwrap(),
        server_config(&pki, 1024, None),
        |question| match question {
            Question::TunnelUp { .. } => Answer::RequirePassword { prompt: vec![] },
            Question::CheckPassword { .. } => Answer::Authenticated {
                provisioning: Some(Provisioning {
                    csr_attributes_der: vec![0x30, 0x00],
                    required: true,
                }),
            },
            Question::Enroll { .. } => Answer::Issued {
                pkcs7_der: b"PKCS7".to_vec(),
            },
        },
    );
    assert!(outcome.success && finish.accepted, "{outcome:?} {finish:?}");
    assert_same_keys(&outcome, &finish);
    assert_eq!(outcome.crypto_binding_rounds, 2);
    assert_eq!(outcome.pkcs7.as_deref(), Some(&b"PKCS7"[..]));
}

#[test]
fn optional_provisioning_offer_is_taken_by_a_peer_with_a_csr_builder() {
    // The offer comes with the first Crypto-Binding + Result(Success); the peer answers with
    // its binding and a PKCS#10, and the PKCS#7 comes with a second binding round.
    let pki = Pki::new();
    let mut config = peer_config(&pki, true);
    config.csr = Some(Box::new(rcgen_csr));
    let (outcome, finish) = converse(
        Peer::new(config).unwrap(),
        server_config(&pki, 1024, None),
        |question| match question {
            Question::TunnelUp { .. } => Answer::Authenticated {
                provisioning: Some(Provisioning {
                    csr_attributes_der: vec![0x30, 0x00],
                    required: false,
                }),
            },
            Question::Enroll { .. } => Answer::Issued {
                pkcs7_der: b"PKCS7".to_vec(),
            },
            other => panic!("unexpected {other:?}"),
        },
    );
    assert!(outcome.success && finish.accepted, "{outcome:?} {finish:?}");
    assert_same_keys(&outcome, &finish);
    assert_eq!(outcome.crypto_binding_rounds, 2);
    assert_eq!(outcome.pkcs7.as_deref(), Some(&b"PKCS7"[..]));
}

#[test]
fn refused_csr_ends_in_failure_with_its_error_code() {
    let pki = Pki::new();
    let mut config = peer_config(&pki, true);
    config.csr = Some(Box::new(|_: &[u8]| b"garbage".to_vec()));
    let (outcome, finish) = converse(
        Peer::new(config).unwrap(),
        server_config(&pki, 1024, None),
        |question| match question {
            Question::TunnelUp { .. } => Answer::Authenticated {
                provisioning: Some(Provisioning {
                    csr_attributes_der: vec![0x30, 0x00],
                    required: true,
                }),
            },
            Question::Enroll { .. } => Answer::EnrollFailed {
                error_code: error_code::BAD_CSR,
                reason: "not a CSR".into(),
            },
            other => panic!("unexpected {other:?}"),
        },
    );
    assert!(!outcome.success && !finish.accepted);
    assert_eq!(outcome.errors, [error_code::BAD_CSR]);
    assert_eq!(finish.error_code, Some(error_code::BAD_CSR));
}

#[test]
fn declined_provisioning_succeeds_when_optional_and_fails_when_required() {
    for (required, expect) in [(false, true), (true, false)] {
        let pki = Pki::new();
        let (outcome, finish) = converse(
            Peer::new(peer_config(&pki, true)).unwrap(),
            server_config(&pki, 1024, None),
            |question| match question {
                Question::TunnelUp { .. } => Answer::Authenticated {
                    provisioning: Some(Provisioning {
                        csr_attributes_der: vec![0x30, 0x00],
                        required,
                    }),
                },
                other => panic!("unexpected {other:?}"),
            },
        );
        assert_eq!(
            outcome.success, expect,
            "required={required}: {outcome:?} {finish:?}"
        );
        assert_eq!(finish.accepted, expect, "required={required}: {finish:?}");
        if expect {
            assert_same_keys(&outcome, &finish);
        }
    }
}

/// The peer asks as RFC 9930 §3.6.5 and Appendix C.10 show: Crypto-Binding(Response) +
/// Request-Action(Process-TLV, Trusted-Server-Root) instead of Result(Success), expecting the
/// server's Trusted-Server-Root + Result(Success) (with a fresh Crypto-Binding round).
#[test]
fn trusted_server_root_is_delivered_on_request() {
    let pki = Pki::new();
    let mut config = peer_config(&pki, true);
    config.request_trusted_server_root = true;
    let (outcome, finish) = converse(
        Peer::new(config).unwrap(),
        server_config(&pki, 1024, Some(b"ROOTS-PKCS7".to_vec())),
        |_| Answer::Authenticated { provisioning: None },
    );
    assert!(outcome.success && finish.accepted, "{outcome:?} {finish:?}");
    assert_same_keys(&outcome, &finish);
    assert_eq!(
        outcome.trusted_server_root.as_deref(),
        Some(&b"ROOTS-PKCS7"[..])
    );
}
