//! Hostile EAP-TEAP responses at the conversation level: every case goes into a
//! `teap_server::Conversation` at the state it targets and must end exactly as the table says —
//! silently dropped (`Next::Discard`, the conversation unchanged and still able to run a
//! handshake) or `Finished { accepted: false }` with EAP-Failure and the expected Error code —
//! and never panic.
//!
//! - Outer-layer cases are files in `tests/corpus/` (made by `tests/corpus/make-corpus.py`),
//!   fed right after the Start.
//! - Cases that need the tunnel (TLVs per state, a wrong Crypto-Binding, data where an ACK is
//!   due) are built here with a rustls client as the peer's TLS side.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use ragw_teap::eap::{Body, Code, Packet, TeapMessage};
use ragw_teap::teap_server::{
    Answer, Conversation, ConversationLimits, Finish, Next, Provisioning, Question,
    TeapServerConfig, tls_server_config,
};
use ragw_teap::tlv::{self, CryptoBinding, Status, Tlv, error_code, tlv_type};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::ClientConnection;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

const START_ID: u8 = 7;
const SERVER_NAME: &str = "teap.test";

struct Pki {
    ca: CertificateDer<'static>,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hostile corpus CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![SERVER_NAME.to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let server = tls_server_config(
        vec![leaf.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap();
    Pki {
        ca: ca.der().clone(),
        server,
    }
}

fn start(pki: &Pki, limits: ConversationLimits) -> (Conversation, Vec<u8>) {
    let config = Arc::new(TeapServerConfig {
        tls: pki.server.clone(),
        authority_id: b"hostile-corpus".to_vec(),
        limits,
        trusted_server_root_pkcs7: None,
    });
    let mut counter = 0u8;
    let random = Box::new(move |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            counter = counter.wrapping_add(1);
            *b = counter;
        }
    });
    Conversation::start(config, START_ID, b"anonymous".to_vec(), random).unwrap()
}

fn client(pki: &Pki) -> ClientConnection {
    let tls = ragw_teap_peer::client_tls_config(std::slice::from_ref(&pki.ca), None).unwrap();
    ClientConnection::new(tls, ServerName::try_from(SERVER_NAME).unwrap()).unwrap()
}

fn response(identifier: u8, message: TeapMessage) -> Vec<u8> {
    Packet {
        code: Code::Response,
        identifier,
        body: Body::Teap(message),
    }
    .encode()
    .unwrap()
}

fn request(next: &Next) -> Packet {
    match next {
        Next::Send(bytes) => Packet::parse(bytes).unwrap(),
        other => panic!("expected an EAP-Request, got {other:?}"),
    }
}

fn teap_of(packet: &Packet) -> &TeapMessage {
    match &packet.body {
        Body::Teap(m) => m,
        other => panic!("not TEAP: {other:?}"),
    }
}

fn assert_failure(finish: &Finish, reason_part: &str, code: Option<u32>) {
    assert!(!finish.accepted, "{finish:?}");
    assert!(finish.keys.is_none());
    assert_eq!(finish.eap.len(), 4, "{:?}", finish.eap);
    assert_eq!(finish.eap[0], 4, "EAP-Failure");
    assert!(
        finish.reason.contains(reason_part),
        "reason {:?} lacks {reason_part:?}",
        finish.reason
    );
    assert_eq!(finish.error_code, code, "{finish:?}");
}

// ---------------------------------------------------------------------------------------------
// The checked-in corpus.

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Silently dropped; the conversation still takes a real ClientHello.
    Discard(&'static str),
    /// EAP-Failure at once, no Error TLV (no tunnel to carry one).
    Fail(&'static str),
}

const CORPUS: &[(&str, Expect)] = &[
    ("eap-too-short", Expect::Discard("not a valid EAP packet")),
    (
        "eap-length-below-header",
        Expect::Discard("not a valid EAP packet"),
    ),
    (
        "eap-length-exceeds-buffer",
        Expect::Discard("not a valid EAP packet"),
    ),
    (
        "eap-unknown-code",
        Expect::Discard("not a valid EAP packet"),
    ),
    (
        "eap-request-not-response",
        Expect::Discard("where a Response was expected"),
    ),
    (
        "eap-success-from-peer",
        Expect::Discard("where a Response was expected"),
    ),
    (
        "eap-response-without-type",
        Expect::Discard("not a valid EAP packet"),
    ),
    (
        "eap-wrong-identifier",
        Expect::Discard("does not match the outstanding request"),
    ),
    ("eap-empty-nak", Expect::Discard("not a valid EAP packet")),
    (
        "teap-missing-flags",
        Expect::Discard("not a valid EAP packet"),
    ),
    ("teap-version-0", Expect::Discard("not a valid EAP packet")),
    ("teap-version-2", Expect::Discard("not a valid EAP packet")),
    (
        "teap-l-flag-truncated-length",
        Expect::Discard("not a valid EAP packet"),
    ),
    (
        "teap-o-flag-truncated-length",
        Expect::Discard("not a valid EAP packet"),
    ),
    (
        "teap-outer-length-overrun",
        Expect::Discard("not a valid EAP packet"),
    ),
    ("legacy-nak-to-teap", Expect::Fail("legacy Nak")),
    (
        "identity-inside-teap",
        Expect::Fail("Identity inside EAP-TEAP"),
    ),
    (
        "other-method-eap-tls",
        Expect::Fail("EAP type 13 instead of TEAP"),
    ),
    ("flags-start-from-peer", Expect::Fail("Start flag")),
    (
        "flags-ack-during-handshake",
        Expect::Fail("an ACK) during the TLS handshake"),
    ),
    ("malformed-outer-tlvs", Expect::Fail("malformed outer TLVs")),
    (
        "l-flag-length-mismatch",
        Expect::Fail("Message Length 100 but the unfragmented"),
    ),
    (
        "message-length-over-limit",
        Expect::Fail("exceeds the 65536-octet limit"),
    ),
    (
        "first-fragment-without-l",
        Expect::Fail("without the L flag"),
    ),
    (
        "fragment-l-on-second",
        Expect::Fail("L flag on a fragment other than the first"),
    ),
    (
        "fragment-overruns-declared",
        Expect::Fail("more than the Message Length 1500"),
    ),
    (
        "fragment-short-of-declared",
        Expect::Fail("but Message Length was 3000"),
    ),
    (
        "fragment-empty-with-m",
        Expect::Fail("empty fragment with the M flag"),
    ),
    (
        "fragment-o-flag-on-second",
        Expect::Fail("O flag (outer TLVs) on a message other"),
    ),
    (
        "fragment-flood-size-bound",
        Expect::Fail("more than the Message Length 65536"),
    ),
    (
        "fragment-flood-exchange-bound",
        Expect::Fail("exchange limit of 50"),
    ),
    ("oversized-eap-packet", Expect::Fail("TLS")),
    ("tls-garbage", Expect::Fail("TLS")),
    ("tls-record-too-large", Expect::Fail("TLS")),
    ("tls-not-a-client-hello", Expect::Fail("TLS")),
    ("tls-alert-first", Expect::Fail("TLS")),
];

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The length-prefixed packets of one corpus file.
fn packets(name: &str) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(corpus_dir().join(format!("{name}.bin"))).unwrap();
    let mut rest = bytes.as_slice();
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        out.push(rest[2..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    out
}

#[test]
fn corpus_files_and_table_agree() {
    let files: BTreeSet<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".bin").map(str::to_string)
        })
        .collect();
    let table: BTreeSet<String> = CORPUS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        files, table,
        "rerun tests/corpus/make-corpus.py or update CORPUS"
    );
}

#[test]
fn every_corpus_case_ends_as_expected() {
    let pki = pki();
    for &(name, expect) in CORPUS {
        let (mut conversation, _start) = start(&pki, ConversationLimits::default());
        let packets = packets(name);
        let (last, leading) = packets.split_last().unwrap();
        let mut expected_id = START_ID;
        for (i, p) in leading.iter().enumerate() {
            assert_eq!(
                p[1], expected_id,
                "{name}: packet {i} has the ACK's identifier"
            );
            let next = conversation.receive(p);
            let ack = request(&next);
            let message = teap_of(&ack);
            assert!(
                message.tls_data.is_empty() && !message.more_fragments,
                "{name}: packet {i} must be ACKed, got {message:?}"
            );
            expected_id = ack.identifier;
        }
        match (conversation.receive(last), expect) {
            (Next::Discard(why), Expect::Discard(part)) => {
                assert!(
                    why.contains(part),
                    "{name}: discard reason {why:?} lacks {part:?}"
                );
                // Unchanged: the real ClientHello that a genuine peer sends still works.
                let mut hello = Vec::new();
                client(&pki).write_tls(&mut hello).unwrap();
                let next = conversation.receive(&response(START_ID, TeapMessage::new(hello)));
                assert!(
                    matches!(&next, Next::Send(_)),
                    "{name}: after the discard a ClientHello must be answered, got {next:?}"
                );
            }
            (Next::Finished(finish), Expect::Fail(part)) => {
                assert_failure(&finish, part, None);
                assert!(conversation.is_finished());
                assert!(
                    matches!(conversation.receive(last), Next::Discard(_)),
                    "{name}: anything after the end is dropped"
                );
                eprintln!("{name}: Finished: {}", finish.reason);
            }
            (other, expect) => panic!("{name}: expected {expect:?}, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cases that need the tunnel.

/// A conversation with its TLS tunnel up, seen from the peer's side.
struct Tunnel {
    conversation: Conversation,
    tls: ClientConnection,
    /// Identifier of the last EAP-Request, which the next response echoes.
    id: u8,
    /// TLVs of the server's last phase-2 message.
    last: Vec<Tlv>,
}

impl Tunnel {
    /// Runs the handshake and answers `TunnelUp` with `answer`; the server's phase-2 TLVs are
    /// in `last`. Fragments are large enough that nothing is fragmented.
    fn open(pki: &Pki, answer: Answer) -> Tunnel {
        let limits = ConversationLimits {
            max_tls_fragment: 16_000,
            ..ConversationLimits::default()
        };
        let (conversation, _start) = start(pki, limits);
        let mut t = Tunnel {
            conversation,
            tls: client(pki),
            id: START_ID,
            last: Vec::new(),
        };
        let mut hello = Vec::new();
        t.tls.write_tls(&mut hello).unwrap();
        let next = t.receive_raw(hello);
        t.absorb(&next);
        let mut flight = Vec::new();
        while t.tls.wants_write() {
            t.tls.write_tls(&mut flight).unwrap();
        }
        match t.receive_raw(flight) {
            Next::Ask(Question::TunnelUp { peer_certificates }) => {
                assert!(peer_certificates.is_empty())
            }
            other => panic!("expected TunnelUp, got {other:?}"),
        }
        let next = t.conversation.answer(answer);
        t.absorb(&next);
        assert!(!t.tls.is_handshaking());
        t
    }

    fn receive_raw(&mut self, tls_data: Vec<u8>) -> Next {
        self.conversation
            .receive(&response(self.id, TeapMessage::new(tls_data)))
    }

    /// Feeds a server request to the TLS client; decodes any TLVs it carried into `last`.
    fn absorb(&mut self, next: &Next) {
        let packet = request(next);
        self.id = packet.identifier;
        let message = teap_of(&packet);
        assert!(!message.more_fragments, "unfragmented in these tests");
        let mut rest = message.tls_data.as_slice();
        while !rest.is_empty() {
            self.tls.read_tls(&mut rest).unwrap();
        }
        self.tls.process_new_packets().unwrap();
        let mut plain = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.tls.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            plain.extend_from_slice(&buf[..n]);
        }
        self.last = if plain.is_empty() {
            Vec::new()
        } else {
            tlv::parse_tlvs(&plain, tlv::Limits::default())
                .unwrap()
                .tlvs
        };
    }

    /// Sends raw TLV octets through the tunnel.
    fn send(&mut self, raw_tlvs: &[u8]) -> Next {
        self.tls.writer().write_all(raw_tlvs).unwrap();
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut out).unwrap();
        }
        self.receive_raw(out)
    }

    fn request_binding(&self) -> CryptoBinding {
        self.last
            .iter()
            .find_map(|t| match t {
                Tlv::CryptoBinding(b) => Some(b.clone()),
                _ => None,
            })
            .expect("the server sent a Crypto-Binding Request")
    }

    /// The server answered with a protected failure carrying `code`; the peer's
    /// Result(Failure) then ends the conversation with EAP-Failure.
    fn expect_protected_failure(mut self, next: Next, code: Option<u32>, reason_part: &str) {
        self.absorb(&next);
        assert!(
            self.last.contains(&Tlv::Result(Status::Failure)),
            "Result(Failure) in {:?}",
            self.last
        );
        let errors: Vec<u32> = self
            .last
            .iter()
            .filter_map(|t| match t {
                Tlv::Error(c) => Some(*c),
                _ => None,
            })
            .collect();
        assert_eq!(
            errors,
            code.into_iter().collect::<Vec<_>>(),
            "{:?}",
            self.last
        );
        let ack = encode(&[Tlv::Result(Status::Failure)]);
        match self.send(&ack) {
            Next::Finished(finish) => {
                assert_failure(&finish, reason_part, code);
                eprintln!("tunnel case: Finished: {}", finish.reason);
            }
            other => panic!("expected Finished, got {other:?}"),
        }
    }
}

fn encode(tlvs: &[Tlv]) -> Vec<u8> {
    tlv::encode_tlvs(tlvs).unwrap()
}

fn raw_tlv(tlv_type: u16, mandatory: bool, declared_len: u16, value: &[u8]) -> Vec<u8> {
    let field = tlv_type | if mandatory { tlv::MANDATORY } else { 0 };
    let mut out = field.to_be_bytes().to_vec();
    out.extend_from_slice(&declared_len.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn password_resp() -> Vec<u8> {
    encode(&[Tlv::BasicPasswordAuthResp {
        username: b"device-1".to_vec(),
        password: b"pw".to_vec(),
    }])
}

fn require_password() -> Answer {
    Answer::RequirePassword { prompt: Vec::new() }
}

fn required_provisioning() -> Answer {
    Answer::Authenticated {
        provisioning: Some(Provisioning {
            csr_attributes_der: vec![0x30, 0x00],
            required: true,
        }),
    }
}

fn no_provisioning() -> Answer {
    Answer::Authenticated { provisioning: None }
}

const UNEXPECTED: Option<u32> = Some(error_code::UNEXPECTED_TLVS_EXCHANGED);

/// (case, answer at TunnelUp, the peer's raw TLVs, expected Error code, reason part)
type TunnelCase = (
    &'static str,
    fn() -> Answer,
    fn() -> Vec<u8>,
    Option<u32>,
    &'static str,
);

const TUNNEL_CASES: &[TunnelCase] = &[
    // Malformed TLV sequences in answer to Basic-Password-Auth-Req.
    (
        "truncated-tlv-header",
        require_password,
        || vec![0x80, 0x0e, 0x00],
        UNEXPECTED,
        "malformed TLVs",
    ),
    (
        "truncated-tlv-value",
        require_password,
        || raw_tlv(tlv_type::BASIC_PASSWORD_AUTH_RESP, true, 10, b"ab"),
        UNEXPECTED,
        "malformed TLVs",
    ),
    (
        "tlv-length-0xffff",
        require_password,
        || raw_tlv(tlv_type::RESULT, true, 0xffff, &[0, 1]),
        UNEXPECTED,
        "malformed TLVs",
    ),
    (
        "too-many-tlvs",
        require_password,
        || encode(&vec![Tlv::IdentityType(1); 65]),
        UNEXPECTED,
        "malformed TLVs",
    ),
    (
        "password-resp-userlen-overflow",
        require_password,
        || raw_tlv(tlv_type::BASIC_PASSWORD_AUTH_RESP, true, 3, &[200, b'a', 0]),
        UNEXPECTED,
        "malformed TLVs",
    ),
    (
        "result-status-7",
        require_password,
        || raw_tlv(tlv_type::RESULT, true, 2, &[0, 7]),
        UNEXPECTED,
        "malformed TLVs",
    ),
    (
        "crypto-binding-75-octets",
        no_provisioning,
        || raw_tlv(tlv_type::CRYPTO_BINDING, true, 75, &[0; 75]),
        UNEXPECTED,
        "malformed TLVs",
    ),
    // An Intermediate-Result whose nested TLV overruns it, outside the one state that takes it.
    (
        "nested-overflow-intermediate-result",
        require_password,
        || {
            raw_tlv(
                tlv_type::INTERMEDIATE_RESULT,
                true,
                6,
                &[0, 1, 0x80, 0x03, 0x01, 0x00],
            )
        },
        UNEXPECTED,
        "unexpected TLV type 10",
    ),
    // Unexpected TLVs per state.
    (
        "password-state-crypto-binding",
        require_password,
        || raw_tlv(tlv_type::CRYPTO_BINDING, true, 76, &[0; 76]),
        UNEXPECTED,
        "unexpected TLV type 12",
    ),
    (
        "password-state-pkcs7",
        require_password,
        || encode(&[Tlv::Pkcs7(vec![0x30, 0x00])]),
        UNEXPECTED,
        "unexpected TLV type 15",
    ),
    (
        "password-state-csr-attributes",
        require_password,
        || encode(&[Tlv::CsrAttributes(vec![0x30, 0x00])]),
        UNEXPECTED,
        "unexpected TLV type 18",
    ),
    (
        "password-state-eap-payload",
        require_password,
        || encode(&[Tlv::EapPayload(vec![2, 1, 0, 5, 1])]),
        UNEXPECTED,
        "unexpected TLV type 9",
    ),
    (
        "password-state-password-req",
        require_password,
        || encode(&[Tlv::BasicPasswordAuthReq(Vec::new())]),
        UNEXPECTED,
        "unexpected TLV type 13",
    ),
    (
        "password-state-authority-id",
        require_password,
        || encode(&[Tlv::AuthorityId(b"x".to_vec())]),
        UNEXPECTED,
        "unexpected TLV type 1",
    ),
    (
        "password-state-pac",
        require_password,
        || raw_tlv(tlv_type::PAC, true, 4, &[0, 1, 0, 0]),
        UNEXPECTED,
        "PAC TLV",
    ),
    (
        "password-state-only-result",
        require_password,
        || encode(&[Tlv::Result(Status::Success)]),
        UNEXPECTED,
        "no Basic-Password-Auth-Resp",
    ),
    (
        "csr-state-password-resp",
        required_provisioning,
        password_resp,
        UNEXPECTED,
        "unexpected TLV type 14",
    ),
    (
        "csr-state-crypto-binding",
        required_provisioning,
        || raw_tlv(tlv_type::CRYPTO_BINDING, true, 76, &[0; 76]),
        UNEXPECTED,
        "unexpected TLV type 12",
    ),
    (
        "csr-state-declined",
        required_provisioning,
        || encode(&[Tlv::Result(Status::Success)]),
        None,
        "declined the required certificate provisioning",
    ),
    (
        "binding-state-password-resp",
        no_provisioning,
        password_resp,
        UNEXPECTED,
        "unexpected TLV type 14",
    ),
    (
        "binding-state-no-binding",
        no_provisioning,
        || encode(&[Tlv::Result(Status::Success)]),
        UNEXPECTED,
        "no Crypto-Binding TLV",
    ),
];

#[test]
fn malformed_and_unexpected_tlvs_end_in_protected_failures() {
    let pki = pki();
    for &(name, answer, tlvs, code, reason) in TUNNEL_CASES {
        eprintln!("case {name}");
        let mut tunnel = Tunnel::open(&pki, answer());
        let next = tunnel.send(&tlvs());
        tunnel.expect_protected_failure(next, code, reason);
    }
}

/// A case name and how it spoils the echoed Crypto-Binding Request.
type BindingChange = (&'static str, fn(&mut CryptoBinding));

/// Crypto-Binding Responses that are wrong in one field each: Error 2001 Tunnel Compromise.
#[test]
fn wrong_crypto_bindings_are_a_tunnel_compromise() {
    let pki = pki();
    let cases: &[BindingChange] = &[
        ("zero-macs", |b| {
            b.sub_type = CryptoBinding::SUB_TYPE_RESPONSE;
            b.nonce[31] |= 1;
        }),
        ("flipped-msk-mac", |b| {
            b.sub_type = CryptoBinding::SUB_TYPE_RESPONSE;
            b.nonce[31] |= 1;
            b.msk_compound_mac = b.msk_compound_mac.map(|x| !x);
        }),
        ("echoed-request", |_| {}),
        ("nonce-low-bit-clear", |b| {
            b.sub_type = CryptoBinding::SUB_TYPE_RESPONSE
        }),
        ("other-nonce", |b| {
            b.sub_type = CryptoBinding::SUB_TYPE_RESPONSE;
            b.nonce[0] ^= 0x55;
            b.nonce[31] |= 1;
        }),
        ("version-2", |b| {
            b.sub_type = CryptoBinding::SUB_TYPE_RESPONSE;
            b.nonce[31] |= 1;
            b.version = 2;
        }),
        ("received-version-0", |b| {
            b.sub_type = CryptoBinding::SUB_TYPE_RESPONSE;
            b.nonce[31] |= 1;
            b.received_version = 0;
        }),
        ("flags-0", |b| {
            b.sub_type = CryptoBinding::SUB_TYPE_RESPONSE;
            b.nonce[31] |= 1;
            b.flags = 0;
        }),
    ];
    for &(name, change) in cases {
        eprintln!("binding case {name}");
        let mut tunnel = Tunnel::open(&pki, no_provisioning());
        let mut binding = tunnel.request_binding();
        change(&mut binding);
        let next = tunnel.send(&encode(&[
            Tlv::CryptoBinding(binding),
            Tlv::Result(Status::Success),
        ]));
        tunnel.expect_protected_failure(
            next,
            Some(error_code::TUNNEL_COMPROMISE),
            "Crypto-Binding Response invalid",
        );
    }
}

/// An unknown mandatory TLV is NAKed and the conversation goes on: the corrected answer is
/// taken.
#[test]
fn unknown_mandatory_tlv_is_naked_then_the_conversation_continues() {
    let pki = pki();
    let mut tunnel = Tunnel::open(&pki, require_password());
    let next = tunnel.send(&raw_tlv(0x3abc, true, 2, b"zz"));
    tunnel.absorb(&next);
    assert_eq!(
        tunnel.last,
        vec![Tlv::Nak {
            vendor_id: 0,
            nak_type: 0x3abc,
            tlvs: Vec::new()
        }]
    );
    match tunnel.send(&password_resp()) {
        Next::Ask(Question::CheckPassword { username, .. }) => assert_eq!(username, b"device-1"),
        other => panic!("expected CheckPassword, got {other:?}"),
    }
}

/// A nested TLV overrunning its Request-Action is not looked into unless the action could be
/// served (a Trusted-Server-Root request): the valid Basic-Password-Auth-Resp beside it counts.
#[test]
fn nested_overflow_in_a_request_action_is_ignored() {
    let pki = pki();
    let mut tunnel = Tunnel::open(&pki, require_password());
    let mut raw = raw_tlv(
        tlv_type::REQUEST_ACTION,
        true,
        6,
        &[1, 1, 0x00, 0x11, 0x7f, 0xff],
    );
    raw.extend(password_resp());
    match tunnel.send(&raw) {
        Next::Ask(Question::CheckPassword { username, .. }) => assert_eq!(username, b"device-1"),
        other => panic!("expected CheckPassword, got {other:?}"),
    }
}

/// TLV octets sent outside TLS once the tunnel is up end the conversation at once.
#[test]
fn plaintext_tlvs_after_the_handshake_are_a_tls_failure() {
    let pki = pki();
    let mut tunnel = Tunnel::open(&pki, require_password());
    match tunnel.receive_raw(password_resp()) {
        Next::Finished(finish) => assert_failure(&finish, "TLS", None),
        other => panic!("expected Finished, got {other:?}"),
    }
}

/// Data where the server waits for an ACK of its fragmented flight: EAP-Failure.
#[test]
fn data_instead_of_an_ack_ends_the_conversation() {
    let pki = pki();
    let limits = ConversationLimits {
        max_tls_fragment: 200,
        ..ConversationLimits::default()
    };
    let (mut conversation, _start) = start(&pki, limits);
    let mut hello = Vec::new();
    client(&pki).write_tls(&mut hello).unwrap();
    let first = request(&conversation.receive(&response(START_ID, TeapMessage::new(hello))));
    assert!(
        teap_of(&first).more_fragments,
        "the server flight is fragmented"
    );
    let next = conversation.receive(&response(
        first.identifier,
        TeapMessage::new(b"not an ack".to_vec()),
    ));
    match next {
        Next::Finished(finish) => assert_failure(
            &finish,
            "while our fragmented message awaited its ACK",
            None,
        ),
        other => panic!("expected Finished, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Gateway level: the real UDP RADIUS front of `TeapService` with a fake registrar. Hostile
// conversations run beside a good one, which must complete untouched.

mod gateway {
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use std::time::Duration;

    use ragw_device_auth::{BasicAuth, Secret as PasswordSecret};
    use ragw_domain::IdentityKind;
    use ragw_proto::registrar::v1 as pb;
    use ragw_teap::config::{RadiusClient, TeapConfig, TeapLabel, TeapLimits};
    use ragw_teap::gateway::{Registrar, RegistrarFuture};
    use ragw_teap::radius::{self, Attribute, Code as RadiusCode, Packet as RadiusPacket, attr};
    use ragw_teap::radius_server::Secret;
    use ragw_teap::service::{TeapService, TeapTls};
    use ragw_teap_peer::{Peer, PeerConfig, RadiusAttrs, run_over_radius};
    use tokio::net::UdpSocket;

    use super::*;

    const RADIUS_SECRET: &[u8] = b"hostile-gateway-secret";
    const PASSWORD: &str = "boot-secret";

    /// Assigns one name and issues a fixed chain; records refusals.
    struct FakeRegistrar {
        chain: Vec<Vec<u8>>,
        refusals: Mutex<Vec<String>>,
    }

    impl Registrar for FakeRegistrar {
        fn get_assignment(
            &self,
            _request: pb::GetAssignmentRequest,
        ) -> RegistrarFuture<'_, pb::Assignment> {
            Box::pin(async {
                Ok(pb::Assignment {
                    label: "k7q2m9x4".into(),
                    parent_domain: "devices.example.com".into(),
                    names: vec!["k7q2m9x4.devices.example.com".into()],
                    allowed_keys: vec!["ecdsa-p256".into()],
                    profile: "iot".into(),
                    ..Default::default()
                })
            })
        }

        fn enroll(&self, _request: pb::EnrollRequest) -> RegistrarFuture<'_, pb::EnrollResponse> {
            let enrollment = pb::Enrollment {
                id: "enr-good".into(),
                state: pb::EnrollmentState::Issued as i32,
                certificate_chain: self.chain.clone(),
                ..Default::default()
            };
            Box::pin(async move {
                Ok(pb::EnrollResponse {
                    enrollment: Some(enrollment),
                    existing: false,
                })
            })
        }

        fn wait_enrollment(
            &self,
            _request: pb::WaitEnrollmentRequest,
        ) -> RegistrarFuture<'_, pb::Enrollment> {
            Box::pin(async { Err(tonic::Status::unimplemented("not needed")) })
        }

        fn record_refusal(&self, request: pb::RecordRefusalRequest) -> RegistrarFuture<'_, ()> {
            self.refusals.lock().unwrap().push(request.reason);
            Box::pin(async { Ok(()) })
        }

        fn record_access(&self, _request: pb::RecordAccessRequest) -> RegistrarFuture<'_, ()> {
            Box::pin(async { Ok(()) })
        }
    }

    struct Served {
        addr: SocketAddr,
        ca: CertificateDer<'static>,
        registrar: Arc<FakeRegistrar>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    }

    async fn serve() -> Served {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "hostile gateway CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![SERVER_NAME.to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let device_key = KeyPair::generate().unwrap();
        let device = CertificateParams::new(vec!["k7q2m9x4.devices.example.com".to_string()])
            .unwrap()
            .signed_by(&device_key, &ca)
            .unwrap();
        let mut label = TeapLabel::new("iot", "iot");
        let mut basic = BasicAuth::new(IdentityKind::SerialNumber);
        basic.bootstrap = Some(PasswordSecret::from_plain(PASSWORD));
        label.basic = Some(basic);
        let config = TeapConfig {
            clients: vec![RadiusClient {
                name: "loopback".into(),
                prefix: "127.0.0.0/8".parse().unwrap(),
                secret: Secret::new(RADIUS_SECRET.to_vec()).unwrap(),
            }],
            labels: vec![label],
            default_label: Some("iot".into()),
            limits: TeapLimits::default(),
            authority_id: b"hostile-gateway".to_vec(),
        };
        let tls = TeapTls {
            cert_chain_pem: leaf.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
            trusted_server_root_pem: Vec::new(),
        };
        let registrar = Arc::new(FakeRegistrar {
            chain: vec![device.der().to_vec(), ca.der().to_vec()],
            refusals: Mutex::new(Vec::new()),
        });
        let service = TeapService::new(config, tls, registrar.clone() as Arc<dyn Registrar>);
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            service
                .serve(socket, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Served {
            addr,
            ca: ca.der().clone(),
            registrar,
            stop: Some(stop),
            task,
        }
    }

    /// A NAS that sends whatever it is told, with valid RADIUS framing.
    struct HostileNas {
        socket: UdpSocket,
        next_id: u8,
    }

    impl HostileNas {
        async fn new(server: SocketAddr) -> HostileNas {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            socket.connect(server).await.unwrap();
            HostileNas { socket, next_id: 0 }
        }

        fn request(&mut self, eap: &[u8], state: Option<&[u8]>) -> RadiusPacket {
            self.next_id = self.next_id.wrapping_add(1);
            let mut authenticator = [0u8; 16];
            authenticator[0] = self.next_id;
            authenticator[15] = 0xa5;
            let mut p = RadiusPacket {
                code: RadiusCode::AccessRequest,
                identifier: self.next_id,
                authenticator,
                attributes: Vec::new(),
            };
            p.push(Attribute::new(attr::USER_NAME, b"anonymous@iot".to_vec()));
            p.push(Attribute::new(
                attr::CALLING_STATION_ID,
                b"02-66-66-66-66-66".to_vec(),
            ));
            for a in radius::eap_message_attributes(eap) {
                p.push(a);
            }
            if let Some(s) = state {
                p.push(Attribute::new(attr::STATE, s.to_vec()));
            }
            p
        }

        /// Sends `datagram` and waits up to `wait` for a verified answer to `request`.
        async fn exchange_raw(
            &mut self,
            datagram: &[u8],
            request: &RadiusPacket,
            wait: Duration,
        ) -> Option<RadiusPacket> {
            self.socket.send(datagram).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let n = tokio::time::timeout_at(deadline, self.socket.recv(&mut buf))
                    .await
                    .ok()?
                    .unwrap();
                if let Ok(r) =
                    RadiusPacket::parse_verified_response(&buf[..n], request, RADIUS_SECRET)
                {
                    return Some(r);
                }
            }
        }

        async fn exchange(&mut self, eap: &[u8], state: Option<&[u8]>) -> (RadiusPacket, Vec<u8>) {
            let request = self.request(eap, state);
            let datagram = request.encode_request(RADIUS_SECRET).unwrap();
            let reply = self
                .exchange_raw(&datagram, &request, Duration::from_secs(10))
                .await
                .expect("the gateway answers");
            let eap = reply.eap_message().unwrap().unwrap_or_default();
            (reply, eap)
        }

        /// Identity → the Start: (State, the Start's EAP identifier).
        async fn begin(&mut self) -> (Vec<u8>, u8) {
            let identity = {
                let id = b"anonymous@iot";
                let mut e = vec![2, 1, 0, (5 + id.len()) as u8, 1];
                e.extend_from_slice(id);
                e
            };
            let (reply, eap) = self.exchange(&identity, None).await;
            assert_eq!(reply.code, RadiusCode::AccessChallenge);
            (reply.state().unwrap().to_vec(), eap[1])
        }
    }

    fn teap_response(id: u8, flags: u8, length: Option<u32>, data: &[u8]) -> Vec<u8> {
        let mut m = TeapMessage::new(data.to_vec());
        m.more_fragments = flags & 0x40 != 0;
        m.message_length = length;
        response(id, m)
    }

    /// A fragment flood until the gateway ends it: Access-Reject with EAP-Failure.
    async fn fragment_flood(server: SocketAddr) -> usize {
        let mut nas = HostileNas::new(server).await;
        let (mut state, mut id) = nas.begin().await;
        for sent in 1..=200usize {
            let length = (sent == 1).then_some(65_536);
            let (reply, eap) = nas
                .exchange(
                    &teap_response(id, 0x40, length, &[0x5a; 1000]),
                    Some(&state),
                )
                .await;
            match reply.code {
                RadiusCode::AccessChallenge => {
                    state = reply.state().unwrap().to_vec();
                    id = eap[1];
                }
                RadiusCode::AccessReject => {
                    assert_eq!(eap[0], 4, "EAP-Failure");
                    return sent;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("the flood was never stopped");
    }

    /// TLS garbage after the Start: Access-Reject.
    async fn garbage_tls(server: SocketAddr) {
        let mut nas = HostileNas::new(server).await;
        let (state, id) = nas.begin().await;
        let (reply, eap) = nas
            .exchange(
                &teap_response(id, 0, None, b"\x16\x03\x03\xff\xffjunk"),
                Some(&state),
            )
            .await;
        assert_eq!(reply.code, RadiusCode::AccessReject);
        assert_eq!(eap[0], 4);
    }

    /// Damaged EAP under a live State: a packet that does not parse as EAP, or is not a
    /// Response, is refused by the gateway before it reaches the conversation (Access-Reject
    /// with EAP-Failure, audited); a Response with a stale identifier reaches it and is dropped
    /// in silence. Either way the conversation itself lives on: a genuine ClientHello under the
    /// same State is answered with the server's flight.
    async fn damaged_eap_leaves_the_conversation(
        server: SocketAddr,
        pki_ca: CertificateDer<'static>,
    ) {
        let mut nas = HostileNas::new(server).await;
        let (state, id) = nas.begin().await;
        // Not EAP at all: no identifier to answer, so no EAP-Failure either. A Request: its
        // identifier gets the EAP-Failure.
        for (damaged, failure) in [
            (vec![2, id, 0, 60, 55, 1], vec![]),
            (vec![1, id, 0, 6, 55, 1], vec![4, id, 0, 4]),
        ] {
            let (reply, eap) = nas.exchange(&damaged, Some(&state)).await;
            assert_eq!(reply.code, RadiusCode::AccessReject, "{damaged:?}");
            assert_eq!(eap, failure, "{damaged:?}");
        }
        let stale = vec![2, id.wrapping_add(9), 0, 6, 55, 1];
        let request = nas.request(&stale, Some(&state));
        let datagram = request.encode_request(RADIUS_SECRET).unwrap();
        assert!(
            nas.exchange_raw(&datagram, &request, Duration::from_millis(500))
                .await
                .is_none(),
            "a stale identifier is answered with silence"
        );
        let tls = ragw_teap_peer::client_tls_config(&[pki_ca], None).unwrap();
        let mut hello = Vec::new();
        ClientConnection::new(tls, ServerName::try_from(SERVER_NAME).unwrap())
            .unwrap()
            .write_tls(&mut hello)
            .unwrap();
        let (reply, eap) = nas
            .exchange(&response(id, TeapMessage::new(hello)), Some(&state))
            .await;
        assert_eq!(reply.code, RadiusCode::AccessChallenge);
        assert_eq!(eap[0], 1, "the server's flight, an EAP-Request");
    }

    /// A State the gateway never issued, and a request with a wrong Message-Authenticator.
    async fn forgeries(server: SocketAddr) {
        let mut nas = HostileNas::new(server).await;
        let (reply, eap) = nas
            .exchange(&[2, 3, 0, 6, 55, 1], Some(b"0123456789abcdef"))
            .await;
        assert_eq!(reply.code, RadiusCode::AccessReject);
        assert_eq!(eap[0], 4);
        let request = nas.request(&[2, 3, 0, 6, 55, 1], None);
        let mut datagram = request.encode_request(RADIUS_SECRET).unwrap();
        let last = datagram.len() - 1;
        datagram[last] ^= 0xff;
        assert!(
            nas.exchange_raw(&datagram, &request, Duration::from_millis(500))
                .await
                .is_none(),
            "a forged Message-Authenticator is dropped"
        );
    }

    async fn good_conversation(server: SocketAddr, ca: CertificateDer<'static>) {
        let tls = ragw_teap_peer::client_tls_config(&[ca], None).unwrap();
        let mut config = PeerConfig::new(
            tls,
            ServerName::try_from(SERVER_NAME).unwrap(),
            "anonymous@iot",
        );
        config.password = Some(("good-device-1".into(), PASSWORD.as_bytes().to_vec()));
        let csr_key = KeyPair::generate().unwrap();
        config.csr = Some(Box::new(move |_attributes: &[u8]| {
            CertificateParams::new(vec!["k7q2m9x4.devices.example.com".to_string()])
                .unwrap()
                .serialize_request(&csr_key)
                .unwrap()
                .der()
                .to_vec()
        }));
        let outcome = run_over_radius(
            Peer::new(config).unwrap(),
            server,
            RADIUS_SECRET,
            RadiusAttrs {
                calling_station_id: Some("02-00-00-00-00-01".into()),
                framed_mtu: Some(1400),
                ..RadiusAttrs::default()
            },
        )
        .await
        .expect("the good conversation completes");
        assert!(outcome.accepted, "{outcome:?}");
        assert!(outcome.peer.success, "{:?}", outcome.peer);
        assert!(
            outcome.peer.pkcs7.is_some(),
            "the device got its certificate"
        );
        assert_eq!(
            outcome.radius_msk.as_ref().map(|m| m.to_vec()),
            outcome.peer.keys.as_ref().map(|k| k.msk.to_vec()),
            "the NAS and the peer hold the same MSK"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_conversations_leave_a_concurrent_good_one_untouched() {
        let mut served = serve().await;
        let addr = served.addr;
        let ca = served.ca.clone();
        let good = tokio::spawn(async move {
            // Twice: once while the floods start, once while they are in full flow.
            good_conversation(addr, ca.clone()).await;
            good_conversation(addr, ca).await;
        });
        let (flood_a, flood_b, (), (), ()) = tokio::join!(
            fragment_flood(addr),
            fragment_flood(addr),
            garbage_tls(addr),
            damaged_eap_leaves_the_conversation(addr, served.ca.clone()),
            forgeries(addr),
        );
        // The default exchange bound: 50 responses per conversation, the 51st ends it.
        assert_eq!(flood_a, 51);
        assert_eq!(flood_b, 51);
        good.await.expect("the good conversations completed");
        // Refusals are audited after the reply; give the audit tasks a moment.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let refusals = served.registrar.refusals.lock().unwrap().clone();
            if refusals.iter().any(|r| r.contains("exchange limit")) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no audited exchange-limit refusal: {refusals:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        served.stop.take().unwrap().send(()).unwrap();
        served.task.await.unwrap();
    }
}
