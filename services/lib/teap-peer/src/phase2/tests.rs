#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use ragw_teap::keys::{KeySchedule, PrfHash};
use ragw_teap::tlv::{Action, CryptoBinding, Status, Tlv, encode_tlvs};
use rustls_pki_types::ServerName;

use super::*;
use crate::{PeerConfig, client_tls_config};

const SEED: [u8; 40] = [0x5a; 40];
/// The Authority-ID outer TLV of the server's Start (`00 01 00 04 de ad be ef`).
const SERVER_OUTER: [u8; 8] = [0, 1, 0, 4, 0xde, 0xad, 0xbe, 0xef];

fn config() -> PeerConfig {
    let tls = client_tls_config(&[], None).unwrap();
    PeerConfig::new(
        tls,
        ServerName::try_from("teap.example").unwrap(),
        "anonymous@example",
    )
}

fn phase2() -> Phase2 {
    Phase2::new(
        KeySchedule::new(PrfHash::Sha256, &SEED),
        SERVER_OUTER.to_vec(),
        Vec::new(),
    )
}

/// The server's side of the same key schedule, advanced one zero-IMSK round per binding.
struct ServerKeys(KeySchedule);

impl ServerKeys {
    fn new() -> Self {
        Self(KeySchedule::new(PrfHash::Sha256, &SEED))
    }

    fn request(&mut self, nonce_byte: u8) -> CryptoBinding {
        self.0.next_round(None, None);
        let mut nonce = [nonce_byte; 32];
        nonce[31] &= 0xfe;
        let mut binding = CryptoBinding {
            reserved: 0,
            version: 1,
            received_version: 1,
            flags: 0,
            sub_type: CryptoBinding::SUB_TYPE_REQUEST,
            nonce,
            emsk_compound_mac: [0; 20],
            msk_compound_mac: [0; 20],
        };
        self.0
            .sign_binding(&mut binding, &SERVER_OUTER, &[])
            .unwrap();
        binding
    }

    fn verify(&self, response: &CryptoBinding) {
        self.0.verify(response, &SERVER_OUTER, &[]).unwrap();
    }
}

fn handle(phase2: &mut Phase2, config: &mut PeerConfig, tlvs: &[Tlv]) -> Vec<Tlv> {
    phase2.handle(&encode_tlvs(tlvs).unwrap(), config)
}

fn response_binding(tlvs: &[Tlv]) -> &CryptoBinding {
    tlvs.iter()
        .find_map(|t| match t {
            Tlv::CryptoBinding(b) => Some(b),
            _ => None,
        })
        .expect("a Crypto-Binding response")
}

#[test]
fn no_inner_method_binding_and_result_are_answered_and_verify_on_the_server() {
    // Appendix C.13: Crypto-Binding(Request) + Result(Success) right after Phase 1.
    let mut server = ServerKeys::new();
    let request = server.request(0x11);
    let mut peer = phase2();
    let mut config = config();
    let out = handle(
        &mut peer,
        &mut config,
        &[
            Tlv::CryptoBinding(request.clone()),
            Tlv::Result(Status::Success),
        ],
    );
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[1], Tlv::Result(Status::Success));
    let response = response_binding(&out);
    assert_eq!(response.sub_type, CryptoBinding::SUB_TYPE_RESPONSE);
    assert_eq!((response.version, response.received_version), (1, 1));
    assert_eq!(response.flags, CryptoBinding::FLAG_MSK);
    let mut expected_nonce = request.nonce;
    expected_nonce[31] |= 1;
    assert_eq!(response.nonce, expected_nonce);
    assert_ne!(response.msk_compound_mac, [0; 20]);
    assert_eq!(response.emsk_compound_mac, [0; 20]);
    server.verify(response);
    assert!(peer.protected_success());
    let peer_keys = peer.session_keys();
    let server_keys = server
        .0
        .session_keys(server.0.binding_uses_emsk_chain(response));
    assert_eq!(peer_keys.msk, server_keys.msk);
    assert_eq!(peer_keys.emsk, server_keys.emsk);
    assert_eq!(peer.collected.crypto_binding_rounds, 1);
}

#[test]
fn tampered_or_malformed_bindings_are_fatal_with_precise_codes() {
    type Tamper = fn(&mut CryptoBinding);
    let cases: [(Tamper, u32); 5] = [
        (
            |b| b.msk_compound_mac[0] ^= 1,
            peer_error_code::MSK_MAC_MISMATCH,
        ),
        (
            |b| b.nonce[31] |= 1,
            peer_error_code::CRYPTO_BINDING_INVALID,
        ),
        (|b| b.version = 2, peer_error_code::CRYPTO_BINDING_INVALID),
        (
            |b| b.received_version = 0,
            peer_error_code::CRYPTO_BINDING_INVALID,
        ),
        (
            |b| b.sub_type = CryptoBinding::SUB_TYPE_RESPONSE,
            peer_error_code::CRYPTO_BINDING_INVALID,
        ),
    ];
    for (tamper, code) in cases {
        let mut request = ServerKeys::new().request(0x22);
        tamper(&mut request);
        let mut peer = phase2();
        let out = handle(
            &mut peer,
            &mut config(),
            &[Tlv::CryptoBinding(request), Tlv::Result(Status::Success)],
        );
        assert_eq!(out, [Tlv::Result(Status::Failure), Tlv::Error(code)]);
        assert!(!peer.protected_success());
        assert_eq!(peer.collected.sent_errors, [code]);
    }
}

#[test]
fn a_binding_over_other_outer_tlvs_does_not_verify() {
    // The server MACs the outer TLVs it sent; a peer that saw different ones refuses.
    let request = ServerKeys::new().request(0x33);
    let mut peer = Phase2::new(
        KeySchedule::new(PrfHash::Sha256, &SEED),
        vec![0, 1, 0, 1, 0xff],
        Vec::new(),
    );
    let out = handle(&mut peer, &mut config(), &[Tlv::CryptoBinding(request)]);
    assert_eq!(
        out,
        [
            Tlv::Result(Status::Failure),
            Tlv::Error(peer_error_code::MSK_MAC_MISMATCH)
        ]
    );
}

#[test]
fn result_success_without_any_binding_is_a_tunnel_compromise() {
    let mut peer = phase2();
    let out = handle(&mut peer, &mut config(), &[Tlv::Result(Status::Success)]);
    assert_eq!(
        out,
        [
            Tlv::Result(Status::Failure),
            Tlv::Error(error_code::TUNNEL_COMPROMISE)
        ]
    );
}

#[test]
fn basic_password_is_answered_from_config_with_identity_type_echoed_or_naked() {
    let mut peer = phase2();
    let mut with_password = config();
    with_password.password = Some(("alice".into(), b"secret".to_vec()));
    let out = handle(
        &mut peer,
        &mut with_password,
        &[
            Tlv::IdentityType(1),
            Tlv::BasicPasswordAuthReq(b"Password:".to_vec()),
        ],
    );
    assert_eq!(
        out,
        [
            Tlv::IdentityType(1),
            Tlv::BasicPasswordAuthResp {
                username: b"alice".to_vec(),
                password: b"secret".to_vec()
            }
        ]
    );
    assert_eq!(peer.collected.password_prompts, ["Password:"]);
    let out = handle(
        &mut phase2(),
        &mut config(),
        &[Tlv::BasicPasswordAuthReq(b"Password:".to_vec())],
    );
    assert_eq!(out, [nak_for(tlv_type::BASIC_PASSWORD_AUTH_REQ)]);
}

#[test]
fn password_round_then_final_binding_verifies() {
    // Appendix C.1: the server's Intermediate-Result + Crypto-Binding + Result after the
    // password is echoed with the peer's own Intermediate-Result.
    let mut server = ServerKeys::new();
    let mut peer = phase2();
    let mut config = config();
    config.password = Some(("alice".into(), b"secret".to_vec()));
    handle(
        &mut peer,
        &mut config,
        &[Tlv::BasicPasswordAuthReq(b"Password:".to_vec())],
    );
    let out = handle(
        &mut peer,
        &mut config,
        &[
            Tlv::IntermediateResult {
                status: Status::Success,
                tlvs: vec![],
            },
            Tlv::CryptoBinding(server.request(0x44)),
            Tlv::Result(Status::Success),
        ],
    );
    assert!(
        matches!(
            out.as_slice(),
            [
                Tlv::CryptoBinding(_),
                Tlv::IntermediateResult {
                    status: Status::Success,
                    ..
                },
                Tlv::Result(Status::Success)
            ]
        ),
        "{out:?}"
    );
    server.verify(response_binding(&out));
    assert!(peer.protected_success());
}

fn csr_recorder(seen: Arc<Mutex<Vec<Vec<u8>>>>) -> crate::CsrBuilder {
    Box::new(move |attributes: &[u8]| {
        seen.lock().unwrap().push(attributes.to_vec());
        b"CSR-DER".to_vec()
    })
}

#[test]
fn pkcs10_request_is_answered_with_the_builders_csr_in_both_encodings() {
    let attributes = vec![0x30, 0x03, 0x06, 0x01, 0x2a];
    let nested = encode_tlvs(&[Tlv::Pkcs10(vec![])]).unwrap();
    let bare = vec![0x00, 0x10];
    for (inside, beside) in [(nested, true), (bare, true)] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut config = config();
        config.csr = Some(csr_recorder(seen.clone()));
        let mut peer = phase2();
        let mut message = vec![Tlv::RequestAction {
            status: Status::Failure,
            action: Action::ProcessTlv,
            tlvs: inside,
        }];
        if beside {
            message.push(Tlv::CsrAttributes(attributes.clone()));
        }
        let out = handle(&mut peer, &mut config, &message);
        assert_eq!(out, [Tlv::Pkcs10(b"CSR-DER".to_vec())]);
        assert_eq!(*seen.lock().unwrap(), std::slice::from_ref(&attributes));
        assert_eq!(peer.collected.csr_attributes, Some(attributes.clone()));
        assert_eq!(peer.collected.csr_requests, 1);
    }
    // CSR-Attributes nested inside the Request-Action reach the builder too.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut config = config();
    config.csr = Some(csr_recorder(seen.clone()));
    let inside =
        encode_tlvs(&[Tlv::Pkcs10(vec![]), Tlv::CsrAttributes(attributes.clone())]).unwrap();
    let out = handle(
        &mut phase2(),
        &mut config,
        &[Tlv::RequestAction {
            status: Status::Success,
            action: Action::ProcessTlv,
            tlvs: inside,
        }],
    );
    assert_eq!(out, [Tlv::Pkcs10(b"CSR-DER".to_vec())]);
    assert_eq!(*seen.lock().unwrap(), [attributes]);
}

#[test]
fn pkcs10_request_without_a_builder_is_declined_with_its_status() {
    for status in [Status::Success, Status::Failure] {
        let mut peer = phase2();
        let out = handle(
            &mut peer,
            &mut config(),
            &[Tlv::RequestAction {
                status,
                action: Action::ProcessTlv,
                tlvs: vec![0x00, 0x10, 0, 0],
            }],
        );
        assert_eq!(out, [Tlv::Result(status)]);
        assert!(!peer.protected_success());
    }
}

#[test]
fn bundled_optional_offer_is_answered_with_a_csr_instead_of_the_result() {
    // The server's optional provisioning offer rides with Crypto-Binding + Result(Success)
    // (RFC 9930 §4.2.9: a Request-Action "in response to a ... Result TLV"). With a CSR
    // builder the peer processes it: binding + PKCS#10 and no Result yet; without one it
    // acknowledges the Result and the offer is declined.
    for with_builder in [true, false] {
        let mut server = ServerKeys::new();
        let mut peer = phase2();
        let mut config = config();
        let seen = Arc::new(Mutex::new(Vec::new()));
        if with_builder {
            config.csr = Some(csr_recorder(seen.clone()));
        }
        let out = handle(
            &mut peer,
            &mut config,
            &[
                Tlv::CryptoBinding(server.request(0x42)),
                Tlv::Result(Status::Success),
                Tlv::RequestAction {
                    status: Status::Success,
                    action: Action::ProcessTlv,
                    tlvs: vec![0x00, 0x10, 0, 0],
                },
                Tlv::CsrAttributes(vec![0x30, 0x00]),
            ],
        );
        server.verify(response_binding(&out));
        let types: Vec<u16> = out.iter().map(Tlv::tlv_type).collect();
        if with_builder {
            assert_eq!(
                types,
                [tlv_type::CRYPTO_BINDING, tlv_type::PKCS10],
                "{out:?}"
            );
            assert_eq!(*seen.lock().unwrap(), [vec![0x30, 0x00]]);
            assert!(
                !peer.protected_success(),
                "the Result round is still to come"
            );
        } else {
            assert_eq!(
                types,
                [tlv_type::CRYPTO_BINDING, tlv_type::RESULT],
                "{out:?}"
            );
            assert_eq!(out[1], Tlv::Result(Status::Success));
            assert!(peer.protected_success());
        }
    }
}

#[test]
fn issued_certificate_message_is_kept_and_acknowledged() {
    // Appendix C.11 step 3: PKCS#7 + Intermediate-Result(Success) + Crypto-Binding + Result.
    let mut server = ServerKeys::new();
    let mut peer = phase2();
    let out = handle(
        &mut peer,
        &mut config(),
        &[
            Tlv::Pkcs7(b"PKCS7-DER".to_vec()),
            Tlv::IntermediateResult {
                status: Status::Success,
                tlvs: vec![],
            },
            Tlv::CryptoBinding(server.request(0x55)),
            Tlv::Result(Status::Success),
        ],
    );
    assert_eq!(out.len(), 3, "{out:?}");
    server.verify(response_binding(&out));
    assert_eq!(peer.collected.pkcs7.as_deref(), Some(&b"PKCS7-DER"[..]));
    assert!(peer.protected_success());
}

#[test]
fn bad_csr_failure_is_echoed_and_error_codes_collected() {
    // Appendix C.12: Error + Intermediate-Result(Failure) + Result(Failure).
    let mut peer = phase2();
    let out = handle(
        &mut peer,
        &mut config(),
        &[
            Tlv::Error(error_code::BAD_CSR),
            Tlv::IntermediateResult {
                status: Status::Failure,
                tlvs: vec![],
            },
            Tlv::Result(Status::Failure),
        ],
    );
    assert_eq!(
        out,
        [
            Tlv::IntermediateResult {
                status: Status::Failure,
                tlvs: vec![]
            },
            Tlv::Result(Status::Failure)
        ]
    );
    assert_eq!(peer.collected.server_errors, [error_code::BAD_CSR]);
    assert_eq!(peer.sent_result(), Some(Status::Failure));
}

#[test]
fn unknown_mandatory_tlvs_are_naked_unless_a_result_is_present() {
    let unknown = [0x80, 0x40, 0, 1, 0xff];
    let mut peer = phase2();
    assert_eq!(peer.handle(&unknown, &mut config()), [nak_for(64)]);
    let mut with_result = unknown.to_vec();
    with_result.extend(Tlv::Result(Status::Success).encode().unwrap());
    assert_eq!(
        phase2().handle(&with_result, &mut config()),
        [
            Tlv::Result(Status::Failure),
            Tlv::Error(error_code::UNEXPECTED_TLVS_EXCHANGED)
        ]
    );
    // Malformed TLVs and the deprecated PAC are fatal 2002 as well.
    assert_eq!(
        phase2().handle(&[0x80, 0x03, 0, 2, 0], &mut config()),
        [
            Tlv::Result(Status::Failure),
            Tlv::Error(error_code::UNEXPECTED_TLVS_EXCHANGED)
        ]
    );
    assert_eq!(
        handle(&mut phase2(), &mut config(), &[Tlv::Pac(vec![1])]),
        [
            Tlv::Result(Status::Failure),
            Tlv::Error(error_code::UNEXPECTED_TLVS_EXCHANGED)
        ]
    );
}

#[test]
fn trusted_server_root_is_requested_once_then_result_acknowledged() {
    let mut server = ServerKeys::new();
    let mut peer = phase2();
    let mut config = config();
    config.request_trusted_server_root = true;
    let out = handle(
        &mut peer,
        &mut config,
        &[
            Tlv::CryptoBinding(server.request(0x66)),
            Tlv::Result(Status::Success),
        ],
    );
    let [
        Tlv::CryptoBinding(response),
        Tlv::RequestAction {
            status,
            action,
            tlvs,
        },
    ] = out.as_slice()
    else {
        panic!("expected Crypto-Binding + Request-Action, got {out:?}")
    };
    server.verify(response);
    assert_eq!((*status, *action), (Status::Success, Action::ProcessTlv));
    assert_eq!(
        parse_tlvs(tlvs, Limits::default()).unwrap().tlvs,
        [Tlv::TrustedServerRoot {
            credential_format: 1,
            tlvs: vec![]
        }]
    );
    assert!(!peer.protected_success(), "no Result(Success) sent yet");
    let root = encode_tlvs(&[Tlv::Pkcs7(b"ROOTS".to_vec())]).unwrap();
    let out = handle(
        &mut peer,
        &mut config,
        &[
            Tlv::TrustedServerRoot {
                credential_format: 1,
                tlvs: root,
            },
            Tlv::Result(Status::Success),
        ],
    );
    assert_eq!(out, [Tlv::Result(Status::Success)]);
    assert_eq!(
        peer.collected.trusted_server_root.as_deref(),
        Some(&b"ROOTS"[..])
    );
    assert!(peer.protected_success());
}

#[test]
fn inner_eap_is_answered_with_identity_or_a_nak() {
    let identity_request = Packet {
        code: Code::Request,
        identifier: 7,
        body: Body::Identity(vec![]),
    }
    .encode()
    .unwrap();
    let out = handle(
        &mut phase2(),
        &mut config(),
        &[Tlv::EapPayload(identity_request)],
    );
    let [Tlv::EapPayload(inner)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        Packet::parse(inner).unwrap().body,
        Body::Identity(b"anonymous@example".to_vec())
    );
    let md5_request = Packet {
        code: Code::Request,
        identifier: 8,
        body: Body::Other {
            method_type: 4,
            data: vec![1, 2],
        },
    }
    .encode()
    .unwrap();
    let out = handle(
        &mut phase2(),
        &mut config(),
        &[Tlv::EapPayload(md5_request)],
    );
    let [Tlv::EapPayload(inner)] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(Packet::parse(inner).unwrap().body, Body::Nak(vec![0]));
}

#[test]
fn random_plaintext_never_panics() {
    let mut state: u64 = 0x853c_49e6_748f_ea9b;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut config = config();
    config.password = Some(("alice".into(), b"pw".to_vec()));
    config.csr = Some(Box::new(|_: &[u8]| b"CSR".to_vec()));
    config.request_trusted_server_root = true;
    for _ in 0..3000 {
        let len = (next() % 120) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Mostly well-framed TLVs of known types, so the value handlers run.
        let mut at = 0;
        while at + 4 <= buf.len() {
            buf[at] &= 0x80;
            buf[at + 1] %= 20;
            buf[at + 2] = 0;
            let room = buf.len() - at - 4;
            buf[at + 3] = (usize::from(buf[at + 3]) % (room + 1)) as u8;
            at += 4 + usize::from(buf[at + 3]);
        }
        let mut peer = phase2();
        let _ = peer.handle(&buf, &mut config);
        let _ = peer.handle(&buf, &mut config);
    }
}
