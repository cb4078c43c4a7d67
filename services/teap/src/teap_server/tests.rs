//! The server driven by a minimal in-test TEAP peer: a rustls `ClientConnection` plus the
//! crate's EAP/TLV codecs and key schedule. The peer computes its keys on its own side of the
//! tunnel (its own exporter output), so matching MSKs prove both ends derived the same keys.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::ClientConnection;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use std::io::{Read, Write};

use super::*;

struct Pki {
    ca_der: CertificateDer<'static>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    client_chain: Vec<CertificateDer<'static>>,
    client_key: PrivateKeyDer<'static>,
    csr_key: KeyPair,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "TEAP test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = CertificateParams::new(vec!["teap.test".to_string()])
        .expect("server params")
        .signed_by(&server_key, &ca)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("client key");
    let mut client_params = CertificateParams::new(Vec::<String>::new()).expect("client params");
    client_params
        .distinguished_name
        .push(DnType::CommonName, "device-1");
    let client_cert = client_params
        .signed_by(&client_key, &ca)
        .expect("client cert");
    Pki {
        ca_der: ca.der().clone(),
        server_chain: vec![server_cert.der().clone()],
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        client_chain: vec![client_cert.der().clone()],
        client_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client_key.serialize_der())),
        csr_key: KeyPair::generate().expect("CSR key"),
    }
}

const AUTHORITY_ID: &[u8] = b"\x01\x02ragw-test-authority";
const TRUST_ROOT_PKCS7: &[u8] = b"\x30\x03\x02\x01\x07";

fn server_config(pki: &Pki, limits: ConversationLimits) -> Arc<TeapServerConfig> {
    Arc::new(TeapServerConfig {
        tls: tls_server_config(pki.server_chain.clone(), pki.server_key.clone_key())
            .expect("server TLS config"),
        authority_id: AUTHORITY_ID.to_vec(),
        limits,
        trusted_server_root_pkcs7: Some(TRUST_ROOT_PKCS7.to_vec()),
    })
}

fn client_tls(pki: &Pki, with_certificate: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .expect("TLS 1.2")
    .with_root_certificates(roots);
    let config = if with_certificate {
        builder
            .with_client_auth_cert(pki.client_chain.clone(), pki.client_key.clone_key())
            .expect("client cert")
    } else {
        builder.with_no_client_auth()
    };
    Arc::new(config)
}

/// Deterministic nonces: every call fills with a running counter.
fn counter_random() -> RandomSource {
    let mut counter = 0u8;
    Box::new(move |buf: &mut [u8]| {
        for octet in buf.iter_mut() {
            counter = counter.wrapping_add(1);
            *octet = counter;
        }
    })
}

/// Rewrites the peer's n-th phase-2 reply (0-based): the TLVs it would send → raw TLV octets.
type Tamper = Box<dyn FnMut(usize, &[Tlv]) -> Option<Vec<u8>>>;

/// How the test peer answers an inner EAP method request (after its Identity).
#[derive(Clone)]
enum InnerAnswer {
    /// EAP-Response/GTC with this password.
    Gtc(Vec<u8>),
    /// Legacy Nak proposing these types.
    Nak(Vec<u8>),
}

#[derive(Default)]
struct Behaviour {
    password: Option<(Vec<u8>, Vec<u8>)>,
    /// Inner EAP: the identity for EAP-Response/Identity and the answer to the method.
    inner_eap: Option<(Vec<u8>, InnerAnswer)>,
    csr: Option<Vec<u8>>,
    ask_trusted_server_root: bool,
    outer_tlvs: Vec<u8>,
    /// Peer outer TLVs claimed in the peer's own Compound-MAC instead of `outer_tlvs`.
    forged_outer_tlvs: Option<Vec<u8>>,
    max_fragment: usize,
    tamper: Option<Tamper>,
}

enum PeerStep {
    Send(Vec<u8>),
    Done(Code),
}

struct TestPeer {
    tls: ClientConnection,
    behaviour: Behaviour,
    server_outer: Vec<u8>,
    sent_first: bool,
    reassembly: Option<(usize, Vec<u8>)>,
    outgoing: Vec<u8>,
    out_sent: usize,
    keys: Option<KeySchedule>,
    /// Every phase-2 message the server sent, decoded.
    received: Vec<Vec<Tlv>>,
    /// Every phase-2 reply this peer built (before any tampering).
    sent: Vec<Vec<Tlv>>,
    replies: usize,
    last_reply: Vec<u8>,
    pkcs7: Option<Vec<u8>>,
    trusted_server_root: Option<Vec<u8>>,
    /// TLS data lengths and flags of every server TEAP packet (after Start).
    server_fragments: Vec<(usize, u8)>,
    peer_fragments: usize,
    /// Every inner EAP-Request the server sent (decoded from its EAP-Payload TLVs).
    inner_requests: Vec<Packet>,
    /// The peer finished an inner EAP method: its next Crypto-Binding is that method's round.
    inner_method_done: bool,
}

impl TestPeer {
    fn new(tls: Arc<rustls::ClientConfig>, mut behaviour: Behaviour) -> Self {
        if behaviour.max_fragment == 0 {
            behaviour.max_fragment = 1400;
        }
        let name = ServerName::try_from("teap.test").expect("name");
        Self {
            tls: ClientConnection::new(tls, name).expect("client"),
            behaviour,
            server_outer: Vec::new(),
            sent_first: false,
            reassembly: None,
            outgoing: Vec::new(),
            out_sent: 0,
            keys: None,
            received: Vec::new(),
            sent: Vec::new(),
            replies: 0,
            last_reply: Vec::new(),
            pkcs7: None,
            trusted_server_root: None,
            server_fragments: Vec::new(),
            peer_fragments: 0,
            inner_requests: Vec::new(),
            inner_method_done: false,
        }
    }

    fn respond(&mut self, request: &[u8]) -> PeerStep {
        let packet = Packet::parse(request).expect("server packet parses");
        let message = match packet.body {
            Body::Empty => return PeerStep::Done(packet.code),
            Body::Teap(message) => message,
            other => panic!("server sent {other:?}"),
        };
        assert_eq!(packet.code, Code::Request);
        let id = packet.identifier;
        if message.start {
            assert_eq!(message.flags(), 0x31, "Start flags as hostapd sends them");
            assert!(message.tls_data.is_empty());
            self.server_outer = message.outer_tlvs.clone().expect("Authority-ID outer TLV");
            let mut hello = Vec::new();
            self.tls.write_tls(&mut hello).expect("client hello");
            return self.send_message(id, hello);
        }
        assert!(message.outer_tlvs.is_none(), "O only on the Start");
        self.server_fragments
            .push((message.tls_data.len(), message.flags()));
        if self.out_sent < self.outgoing.len() {
            assert!(message.tls_data.is_empty(), "server ACK carries no data");
            return self.next_fragment(id);
        }
        let data = match (self.reassembly.take(), message.more_fragments) {
            (None, true) => {
                let total = message.message_length.expect("L on the first fragment") as usize;
                self.reassembly = Some((total, message.tls_data));
                return self.ack(id);
            }
            (None, false) => {
                assert!(message.message_length.is_none(), "L only when fragmenting");
                message.tls_data
            }
            (Some((total, mut data)), more) => {
                assert!(
                    message.message_length.is_none(),
                    "L only on the first fragment"
                );
                data.extend_from_slice(&message.tls_data);
                if more {
                    self.reassembly = Some((total, data));
                    return self.ack(id);
                }
                assert_eq!(data.len(), total, "Message Length matches");
                data
            }
        };
        let mut rest = data.as_slice();
        while !rest.is_empty() {
            self.tls.read_tls(&mut rest).expect("read_tls");
            self.tls.process_new_packets().expect("client TLS");
        }
        if !self.tls.is_handshaking() && self.keys.is_none() {
            let seed = self
                .tls
                .export_keying_material([0u8; 40], keys::SESSION_KEY_SEED_LABEL, None)
                .expect("exporter");
            let suite = u16::from(self.tls.negotiated_cipher_suite().expect("suite").suite());
            let hash = PrfHash::for_cipher_suite(suite).expect("PRF hash");
            self.keys = Some(KeySchedule::new(hash, &seed));
        }
        let mut plaintext = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.tls.reader().read(&mut buf) {
                Ok(0) => break,
                Ok(n) => plaintext.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        if !plaintext.is_empty() {
            let tlvs = tlv::parse_tlvs(&plaintext, tlv::Limits::default())
                .expect("server TLVs parse")
                .tlvs;
            self.received.push(tlvs.clone());
            let raw = if matches!(tlvs.as_slice(), [Tlv::Nak { .. }]) {
                // The server NAKed something: answer its previous request again, cleanly.
                self.last_reply.clone()
            } else {
                let reply = self.reply(&tlvs);
                let index = self.replies;
                self.replies += 1;
                let clean = tlv::encode_tlvs(&reply).expect("reply encodes");
                self.sent.push(reply.clone());
                self.last_reply = clean.clone();
                match self.behaviour.tamper.as_mut() {
                    Some(tamper) => tamper(index, &reply).unwrap_or(clean),
                    None => clean,
                }
            };
            self.tls.writer().write_all(&raw).expect("write TLVs");
        }
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut out).expect("write_tls");
        }
        self.send_message(id, out)
    }

    fn reply(&mut self, tlvs: &[Tlv]) -> Vec<Tlv> {
        let mut out = Vec::new();
        let keys = self.keys.as_mut().expect("keys after the handshake");
        for tlv in tlvs {
            if let Tlv::IntermediateResult { status, .. } = tlv {
                out.push(Tlv::IntermediateResult {
                    status: *status,
                    tlvs: Vec::new(),
                });
            }
        }
        for tlv in tlvs {
            if let Tlv::CryptoBinding(request) = tlv {
                assert_eq!(request.sub_type, CryptoBinding::SUB_TYPE_REQUEST);
                assert_eq!((request.version, request.received_version), (1, 1));
                assert_eq!(request.flags, CryptoBinding::FLAG_MSK);
                assert_eq!(request.nonce[31] & 1, 0, "request nonce LSB is 0");
                // hostap 2.10's peer: S-IMCK advances after an inner EAP method even when it
                // gave no keys; Basic-Password-Auth and no inner method are binding-only.
                if std::mem::take(&mut self.inner_method_done) {
                    keys.next_method_round(None, None);
                } else {
                    keys.next_round(None, None);
                }
                keys.verify(request, &self.server_outer, &self.behaviour.outer_tlvs)
                    .expect("server's Compound-MAC verifies on the peer side");
                let mut nonce = request.nonce;
                nonce[31] |= 1;
                let mut response = CryptoBinding {
                    reserved: 0,
                    version: 1,
                    received_version: 1,
                    flags: CryptoBinding::FLAG_MSK,
                    sub_type: CryptoBinding::SUB_TYPE_RESPONSE,
                    nonce,
                    emsk_compound_mac: [0; 20],
                    msk_compound_mac: [0; 20],
                };
                let claimed_outer = self
                    .behaviour
                    .forged_outer_tlvs
                    .as_ref()
                    .unwrap_or(&self.behaviour.outer_tlvs);
                keys.sign_binding(&mut response, &self.server_outer, claimed_outer)
                    .expect("peer signs its Crypto-Binding");
                out.push(Tlv::CryptoBinding(response));
            }
        }
        let mut answered_request_action = false;
        for tlv in tlvs {
            match tlv {
                Tlv::BasicPasswordAuthReq(_) => {
                    let (username, password) = self
                        .behaviour
                        .password
                        .clone()
                        .expect("peer has a password");
                    out.push(Tlv::BasicPasswordAuthResp { username, password });
                }
                Tlv::RequestAction { status, tlvs, .. } => {
                    answered_request_action = true;
                    assert_eq!(tlvs, &[0, 16, 0, 0], "Request-Action names PKCS#10");
                    match &self.behaviour.csr {
                        Some(csr) => out.push(Tlv::Pkcs10(csr.clone())),
                        None => out.push(Tlv::Result(*status)),
                    }
                }
                Tlv::EapPayload(payload) => {
                    let request = Packet::parse(payload).expect("inner EAP packet parses");
                    assert_eq!(request.code, Code::Request);
                    let (identity, answer) = self
                        .behaviour
                        .inner_eap
                        .clone()
                        .expect("peer does inner EAP");
                    let body = match (&request.body, answer) {
                        (Body::Identity(_), _) => Body::Identity(identity),
                        (Body::Other { method_type: 6, .. }, InnerAnswer::Gtc(password)) => {
                            self.inner_method_done = true;
                            Body::Other {
                                method_type: 6,
                                data: password,
                            }
                        }
                        (_, InnerAnswer::Nak(types)) => Body::Nak(types),
                        (other, _) => panic!("unexpected inner request {other:?}"),
                    };
                    let response = Packet {
                        code: Code::Response,
                        identifier: request.identifier,
                        body,
                    };
                    self.inner_requests.push(request);
                    out.push(Tlv::EapPayload(response.encode().expect("inner response")));
                }
                Tlv::Pkcs7(pkcs7) => self.pkcs7 = Some(pkcs7.clone()),
                Tlv::TrustedServerRoot { tlvs, .. } => {
                    self.trusted_server_root = Some(tlvs.clone());
                }
                _ => {}
            }
        }
        for tlv in tlvs {
            if let Tlv::Result(status) = tlv
                && !answered_request_action
            {
                out.push(Tlv::Result(*status));
            }
        }
        if self.behaviour.ask_trusted_server_root && self.replies == 0 {
            out.push(Tlv::TrustedServerRoot {
                credential_format: 1,
                tlvs: Vec::new(),
            });
        }
        out
    }

    fn send_message(&mut self, id: u8, data: Vec<u8>) -> PeerStep {
        self.outgoing = data;
        self.out_sent = 0;
        self.next_fragment(id)
    }

    fn next_fragment(&mut self, id: u8) -> PeerStep {
        let total = self.outgoing.len();
        let end = (self.out_sent + self.behaviour.max_fragment).min(total);
        let mut message = TeapMessage::new(self.outgoing[self.out_sent..end].to_vec());
        message.more_fragments = end < total;
        if self.out_sent == 0 && message.more_fragments {
            message.message_length = Some(total as u32);
        }
        if !self.sent_first {
            self.sent_first = true;
            message.outer_tlvs = Some(self.behaviour.outer_tlvs.clone());
        }
        self.out_sent = end;
        self.peer_fragments += 1;
        PeerStep::Send(response(id, message))
    }

    fn ack(&mut self, id: u8) -> PeerStep {
        PeerStep::Send(response(id, TeapMessage::new(Vec::new())))
    }

    fn session_keys(&self) -> SessionKeys {
        self.keys.as_ref().expect("keys").session_keys(false)
    }
}

fn response(identifier: u8, message: TeapMessage) -> Vec<u8> {
    Packet {
        code: Code::Response,
        identifier,
        body: Body::Teap(message),
    }
    .encode()
    .expect("response encodes")
}

struct Outcome {
    finish: Finish,
    peer: TestPeer,
    peer_end: Code,
    questions: Vec<String>,
}

/// Runs a whole conversation; `driver` answers the server's questions.
fn run(
    config: Arc<TeapServerConfig>,
    mut peer: TestPeer,
    mut driver: impl FnMut(&Question) -> Answer,
) -> Outcome {
    let (mut conversation, start) = Conversation::start(
        config,
        7,
        b"anonymous@example.test".to_vec(),
        counter_random(),
    )
    .expect("start");
    let mut request = start;
    let mut questions = Vec::new();
    for _ in 0..500 {
        let reply = match peer.respond(&request) {
            PeerStep::Send(reply) => reply,
            PeerStep::Done(code) => panic!("peer saw {code:?} before the server finished"),
        };
        let mut next = conversation.receive(&reply);
        loop {
            match next {
                Next::Send(bytes) => {
                    request = bytes;
                    break;
                }
                Next::Ask(question) => {
                    questions.push(format!("{question:?}"));
                    let answer = driver(&question);
                    next = conversation.answer(answer);
                }
                Next::Finished(finish) => {
                    assert!(conversation.is_finished());
                    let PeerStep::Done(peer_end) = peer.respond(&finish.eap) else {
                        panic!("final packet is not Success/Failure")
                    };
                    return Outcome {
                        finish,
                        peer,
                        peer_end,
                        questions,
                    };
                }
                Next::Discard(why) => panic!("server discarded a well-formed response: {why}"),
            }
        }
    }
    panic!("conversation did not end")
}

fn types(tlvs: &[Tlv]) -> Vec<u16> {
    tlvs.iter().map(Tlv::tlv_type).collect()
}

fn assert_success_with_matching_keys(outcome: &Outcome) {
    assert!(outcome.finish.accepted, "{}", outcome.finish.reason);
    assert_eq!(outcome.peer_end, Code::Success);
    assert_eq!(outcome.finish.error_code, None);
    let server_keys = outcome.finish.keys.as_ref().expect("keys");
    let peer_keys = outcome.peer.session_keys();
    assert_eq!(server_keys.msk, peer_keys.msk);
    assert_eq!(server_keys.emsk, peer_keys.emsk);
    assert_ne!(server_keys.msk, [0; 64]);
}

fn authenticated() -> Answer {
    Answer::Authenticated { provisioning: None }
}

#[test]
fn client_certificate_without_inner_method_succeeds_with_matching_keys() {
    let pki = pki();
    let peer = TestPeer::new(
        client_tls(&pki, true),
        Behaviour {
            // An outer TLV from the peer enters both Compound-MACs.
            outer_tlvs: Tlv::IdentityHint(b"device-1".to_vec()).encode().unwrap(),
            ..Behaviour::default()
        },
    );
    let client_leaf = pki.client_chain[0].to_vec();
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |question| match question {
            Question::TunnelUp { peer_certificates } => {
                assert_eq!(peer_certificates, std::slice::from_ref(&client_leaf));
                authenticated()
            }
            other => panic!("unexpected {other:?}"),
        },
    );
    assert_success_with_matching_keys(&outcome);
    // rustls prefers the SHA-384 suite here, so the PRF runs on SHA-384 (SHA-256: below).
    assert_eq!(
        outcome
            .peer
            .tls
            .negotiated_cipher_suite()
            .map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
    );
    assert_eq!(outcome.finish.peer_certificates, [client_leaf]);
    // Appendix C.13: Crypto-Binding(Request) + Result(Success), answered in kind.
    assert_eq!(outcome.peer.received.len(), 1);
    assert_eq!(
        types(&outcome.peer.received[0]),
        [tlv_type::CRYPTO_BINDING, tlv_type::RESULT]
    );
    assert_eq!(outcome.peer.received[0][1], Tlv::Result(Status::Success));
    // EAP-Success echoes the identifier of the response it answers.
    let eap = &outcome.finish.eap;
    assert_eq!(eap.len(), 4);
    assert_eq!(eap[0], 3);
}

#[test]
fn start_packet_is_s_o_with_authority_id() {
    let pki = pki();
    let (conversation, start) = Conversation::start(
        server_config(&pki, ConversationLimits::default()),
        42,
        b"id".to_vec(),
        counter_random(),
    )
    .unwrap();
    let packet = Packet::parse(&start).unwrap();
    assert_eq!((packet.code, packet.identifier), (Code::Request, 42));
    let Body::Teap(message) = packet.body else {
        panic!("not TEAP")
    };
    assert_eq!(message.flags(), 0x31);
    assert!(message.tls_data.is_empty());
    assert_eq!(
        message.outer_tlvs.unwrap(),
        Tlv::AuthorityId(AUTHORITY_ID.to_vec()).encode().unwrap()
    );
    assert_eq!(conversation.outer_identity(), b"id");
}

#[test]
fn basic_password_accepted() {
    let pki = pki();
    let peer = TestPeer::new(
        client_tls(&pki, false),
        Behaviour {
            password: Some((b"alice".to_vec(), b"correct horse".to_vec())),
            ..Behaviour::default()
        },
    );
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
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
                authenticated()
            }
            other => panic!("unexpected {other:?}"),
        },
    );
    assert_success_with_matching_keys(&outcome);
    assert_eq!(
        outcome.peer.received[0],
        [Tlv::BasicPasswordAuthReq(b"Password:".to_vec())]
    );
    assert_eq!(
        types(&outcome.peer.received[1]),
        [
            tlv_type::INTERMEDIATE_RESULT,
            tlv_type::CRYPTO_BINDING,
            tlv_type::RESULT
        ]
    );
    // The password never reaches a Debug rendering.
    assert!(outcome.questions[1].contains("<redacted>"));
    assert!(!outcome.questions[1].contains("correct horse"));
}

#[test]
fn basic_password_rejected() {
    let pki = pki();
    let peer = TestPeer::new(
        client_tls(&pki, false),
        Behaviour {
            password: Some((b"alice".to_vec(), b"wrong".to_vec())),
            ..Behaviour::default()
        },
    );
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |question| match question {
            Question::TunnelUp { .. } => Answer::RequirePassword { prompt: Vec::new() },
            Question::CheckPassword { .. } => Answer::Reject {
                error_code: 1020,
                reason: "bad password".into(),
            },
            other => panic!("unexpected {other:?}"),
        },
    );
    assert!(!outcome.finish.accepted);
    assert!(outcome.finish.keys.is_none());
    assert_eq!(outcome.peer_end, Code::Failure);
    assert_eq!(outcome.finish.error_code, Some(1020));
    assert_eq!(
        outcome.finish.reason,
        "driver rejected the peer: bad password"
    );
    assert_eq!(
        outcome.peer.received[1],
        [
            Tlv::IntermediateResult {
                status: Status::Failure,
                tlvs: vec![]
            },
            Tlv::Error(1020),
            Tlv::Result(Status::Failure)
        ]
    );
}

#[test]
fn reject_at_tunnel_up_is_protected_failure() {
    let pki = pki();
    let peer = TestPeer::new(client_tls(&pki, false), Behaviour::default());
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |_| Answer::Reject {
            error_code: error_code::CLIENT_CERT_NOT_SUPPLIED,
            reason: "no certificate".into(),
        },
    );
    assert!(!outcome.finish.accepted);
    assert_eq!(outcome.peer_end, Code::Failure);
    assert_eq!(outcome.finish.error_code, Some(1019));
    assert_eq!(
        outcome.peer.received[0],
        [Tlv::Error(1019), Tlv::Result(Status::Failure)]
    );
}

fn csr(pki: &Pki) -> Vec<u8> {
    CertificateParams::new(vec!["device-1.example.test".to_string()])
        .unwrap()
        .serialize_request(&pki.csr_key)
        .unwrap()
        .der()
        .to_vec()
}

const CSR_ATTRS: &[u8] = b"\x30\x0b\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x09\x07";

fn provisioning(required: bool) -> Answer {
    Answer::Authenticated {
        provisioning: Some(Provisioning {
            csr_attributes_der: CSR_ATTRS.to_vec(),
            required,
        }),
    }
}

#[test]
fn provisioning_issues_pkcs7_then_succeeds() {
    let pki = pki();
    let csr = csr(&pki);
    let peer = TestPeer::new(
        client_tls(&pki, true),
        Behaviour {
            csr: Some(csr.clone()),
            ..Behaviour::default()
        },
    );
    let pkcs7 = b"\x30\x80issued-certs-only".to_vec();
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |question| match question {
            Question::TunnelUp { .. } => provisioning(true),
            Question::Enroll { csr_der } => {
                assert_eq!(csr_der, &csr);
                Answer::Issued {
                    pkcs7_der: pkcs7.clone(),
                }
            }
            other => panic!("unexpected {other:?}"),
        },
    );
    assert_success_with_matching_keys(&outcome);
    assert_eq!(
        outcome.peer.received[0],
        [
            Tlv::RequestAction {
                status: Status::Failure,
                action: Action::ProcessTlv,
                tlvs: vec![0, 16, 0, 0]
            },
            Tlv::CsrAttributes(CSR_ATTRS.to_vec())
        ]
    );
    assert_eq!(
        types(&outcome.peer.received[1]),
        [
            tlv_type::PKCS7,
            tlv_type::INTERMEDIATE_RESULT,
            tlv_type::CRYPTO_BINDING,
            tlv_type::RESULT
        ]
    );
    assert_eq!(outcome.peer.pkcs7.as_deref(), Some(pkcs7.as_slice()));
}

#[test]
fn provisioning_after_password_binds_twice() {
    let pki = pki();
    let csr = csr(&pki);
    let peer = TestPeer::new(
        client_tls(&pki, false),
        Behaviour {
            password: Some((b"bob".to_vec(), b"pw".to_vec())),
            csr: Some(csr),
            ..Behaviour::default()
        },
    );
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |question| match question {
            Question::TunnelUp { .. } => Answer::RequirePassword { prompt: Vec::new() },
            Question::CheckPassword { .. } => provisioning(false),
            Question::Enroll { .. } => Answer::Issued {
                pkcs7_der: b"p7".to_vec(),
            },
        },
    );
    assert_success_with_matching_keys(&outcome);
    // Optional provisioning rides along with the binding round and its Result(Success).
    assert_eq!(
        types(&outcome.peer.received[1]),
        [
            tlv_type::INTERMEDIATE_RESULT,
            tlv_type::CRYPTO_BINDING,
            tlv_type::RESULT,
            tlv_type::REQUEST_ACTION,
            tlv_type::CSR_ATTRIBUTES
        ]
    );
    assert_eq!(
        types(&outcome.peer.received[2]),
        [
            tlv_type::PKCS7,
            tlv_type::INTERMEDIATE_RESULT,
            tlv_type::CRYPTO_BINDING,
            tlv_type::RESULT
        ]
    );
}

#[test]
fn enroll_failure_sends_error_1024_and_fails() {
    let pki = pki();
    let peer = TestPeer::new(
        client_tls(&pki, true),
        Behaviour {
            csr: Some(csr(&pki)),
            ..Behaviour::default()
        },
    );
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |question| match question {
            Question::TunnelUp { .. } => provisioning(false),
            Question::Enroll { .. } => Answer::EnrollFailed {
                error_code: error_code::BAD_IDENTITY_IN_CSR,
                reason: "CSR names another device".into(),
            },
            other => panic!("unexpected {other:?}"),
        },
    );
    assert!(!outcome.finish.accepted);
    assert_eq!(outcome.peer_end, Code::Failure);
    assert_eq!(outcome.finish.error_code, Some(1024));
    assert_eq!(
        outcome.finish.reason,
        "enrollment failed: CSR names another device"
    );
    assert_eq!(
        outcome.peer.received[1],
        [
            Tlv::IntermediateResult {
                status: Status::Failure,
                tlvs: vec![]
            },
            Tlv::Error(1024),
            Tlv::Result(Status::Failure)
        ]
    );
}

#[test]
fn optional_provisioning_declined_still_succeeds() {
    let pki = pki();
    let peer = TestPeer::new(client_tls(&pki, true), Behaviour::default());
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |question| match question {
            Question::TunnelUp { .. } => provisioning(false),
            other => panic!("unexpected {other:?}"),
        },
    );
    assert_success_with_matching_keys(&outcome);
    // One phase-2 round: the offer (Request-Action Status Success) beside Crypto-Binding and
    // Result(Success); the peer's Crypto-Binding + Result(Success) declines and ends it.
    assert_eq!(outcome.peer.received.len(), 1);
    assert_eq!(
        types(&outcome.peer.received[0]),
        [
            tlv_type::CRYPTO_BINDING,
            tlv_type::RESULT,
            tlv_type::REQUEST_ACTION,
            tlv_type::CSR_ATTRIBUTES
        ]
    );
    assert_eq!(
        outcome.peer.received[0][2],
        Tlv::RequestAction {
            status: Status::Success,
            action: Action::ProcessTlv,
            tlvs: vec![0, 16, 0, 0]
        }
    );
}

#[test]
fn optional_provisioning_accepted_with_binding_enrolls() {
    let pki = pki();
    let csr = csr(&pki);
    let peer = TestPeer::new(
        client_tls(&pki, true),
        Behaviour {
            csr: Some(csr.clone()),
            ..Behaviour::default()
        },
    );
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |question| match question {
            Question::TunnelUp { .. } => provisioning(false),
            Question::Enroll { csr_der } => {
                assert_eq!(csr_der, &csr);
                Answer::Issued {
                    pkcs7_der: b"p7".to_vec(),
                }
            }
            other => panic!("unexpected {other:?}"),
        },
    );
    assert_success_with_matching_keys(&outcome);
    assert_eq!(
        types(&outcome.peer.sent[0]),
        [tlv_type::CRYPTO_BINDING, tlv_type::PKCS10]
    );
    assert_eq!(
        types(&outcome.peer.received[1]),
        [
            tlv_type::PKCS7,
            tlv_type::INTERMEDIATE_RESULT,
            tlv_type::CRYPTO_BINDING,
            tlv_type::RESULT
        ]
    );
    assert_eq!(outcome.peer.pkcs7.as_deref(), Some(&b"p7"[..]));
}

#[test]
fn optional_provisioning_answered_by_pkcs10_alone_enrolls() {
    // RFC 9930 §4.2.9: the peer may process the Request-Action instead of acknowledging the
    // Result; the PKCS#7 round's own Crypto-Binding is then the one that must verify.
    let pki = pki();
    let csr = csr(&pki);
    let only_csr = csr.clone();
    let peer = TestPeer::new(
        client_tls(&pki, true),
        Behaviour {
            csr: Some(csr.clone()),
            tamper: Some(only_first(move |_| {
                Tlv::Pkcs10(only_csr.clone()).encode().unwrap()
            })),
            ..Behaviour::default()
        },
    );
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |question| match question {
            Question::TunnelUp { .. } => provisioning(false),
            Question::Enroll { .. } => Answer::Issued {
                pkcs7_der: b"p7".to_vec(),
            },
            other => panic!("unexpected {other:?}"),
        },
    );
    assert_success_with_matching_keys(&outcome);
    assert_eq!(outcome.peer.pkcs7.as_deref(), Some(&b"p7"[..]));
}

#[test]
fn required_provisioning_declined_fails() {
    let pki = pki();
    let peer = TestPeer::new(client_tls(&pki, true), Behaviour::default());
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |question| match question {
            Question::TunnelUp { .. } => provisioning(true),
            other => panic!("unexpected {other:?}"),
        },
    );
    assert!(!outcome.finish.accepted);
    assert_eq!(outcome.peer_end, Code::Failure);
    // The peer answered the Failure-status Request-Action with Result(Failure).
    assert_eq!(outcome.finish.reason, "peer sent Result(Failure)");
}

#[test]
fn trusted_server_root_is_sent_when_asked() {
    let pki = pki();
    let peer = TestPeer::new(
        client_tls(&pki, false),
        Behaviour {
            password: Some((b"alice".to_vec(), b"pw".to_vec())),
            ask_trusted_server_root: true,
            ..Behaviour::default()
        },
    );
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |question| match question {
            Question::TunnelUp { .. } => Answer::RequirePassword { prompt: Vec::new() },
            _ => authenticated(),
        },
    );
    assert_success_with_matching_keys(&outcome);
    assert_eq!(
        outcome.peer.trusted_server_root,
        Some(Tlv::Pkcs7(TRUST_ROOT_PKCS7.to_vec()).encode().unwrap())
    );
}

#[test]
fn fragmentation_both_ways() {
    let pki = pki();
    let limits = ConversationLimits {
        max_tls_fragment: 100,
        max_exchanges: 200,
        ..ConversationLimits::default()
    };
    let peer = TestPeer::new(
        client_tls(&pki, true),
        Behaviour {
            max_fragment: 40,
            outer_tlvs: Tlv::IdentityHint(b"frag".to_vec()).encode().unwrap(),
            ..Behaviour::default()
        },
    );
    let outcome = run(server_config(&pki, limits), peer, |_| authenticated());
    assert_success_with_matching_keys(&outcome);
    let fragments = &outcome.peer.server_fragments;
    assert!(
        fragments.iter().filter(|(len, _)| *len == 100).count() > 5,
        "server fragmented: {fragments:?}"
    );
    assert!(fragments.iter().all(|(len, _)| *len <= 100));
    // Checked in TestPeer::respond: L on first fragments only, Message Length matches.
    assert!(
        outcome.peer.peer_fragments > 10,
        "peer fragmented too: {}",
        outcome.peer.peer_fragments
    );
}

// ---- hostile inputs ----

/// A conversation after Start, with the peer's real ClientHello at hand.
struct Opened {
    conversation: Conversation,
    start_id: u8,
    client_hello: Vec<u8>,
}

fn opened(limits: ConversationLimits) -> Opened {
    let pki = pki();
    let (conversation, start) = Conversation::start(
        server_config(&pki, limits),
        7,
        b"x".to_vec(),
        counter_random(),
    )
    .unwrap();
    let start_id = Packet::parse(&start).unwrap().identifier;
    let name = ServerName::try_from("teap.test").unwrap();
    let mut client = ClientConnection::new(client_tls(&pki, false), name).unwrap();
    let mut client_hello = Vec::new();
    client.write_tls(&mut client_hello).unwrap();
    Opened {
        conversation,
        start_id,
        client_hello,
    }
}

fn teap(more: bool, length: Option<u32>, tls_data: &[u8], outer: Option<Vec<u8>>) -> TeapMessage {
    TeapMessage {
        more_fragments: more,
        start: false,
        version: 1,
        message_length: length,
        tls_data: tls_data.to_vec(),
        outer_tlvs: outer,
    }
}

fn finished(next: Next) -> Finish {
    match next {
        Next::Finished(finish) => finish,
        other => panic!("expected Finished, got {other:?}"),
    }
}

fn sent(next: Next) -> Packet {
    match next {
        Next::Send(bytes) => Packet::parse(&bytes).unwrap(),
        other => panic!("expected Send, got {other:?}"),
    }
}

fn assert_failed(finish: &Finish, reason_part: &str) {
    assert!(!finish.accepted);
    assert!(finish.keys.is_none());
    assert_eq!(finish.eap[0], 4, "EAP-Failure");
    assert!(
        finish.reason.contains(reason_part),
        "reason {:?} lacks {reason_part:?}",
        finish.reason
    );
}

#[test]
fn wrong_identifier_is_discarded_and_state_kept() {
    let mut o = opened(ConversationLimits {
        max_tls_fragment: 200,
        ..ConversationLimits::default()
    });
    let hello = teap(false, None, &o.client_hello, Some(vec![]));
    let wrong = response(o.start_id.wrapping_add(1), hello.clone());
    assert!(
        matches!(o.conversation.receive(&wrong), Next::Discard(why) if why.contains("identifier"))
    );
    let request = Packet {
        code: Code::Request,
        ..Packet::parse(&wrong).unwrap()
    }
    .encode()
    .unwrap();
    assert!(matches!(o.conversation.receive(&request), Next::Discard(_)));
    assert!(matches!(o.conversation.receive(&[2, 1]), Next::Discard(_)));
    let right = response(o.start_id, hello);
    let packet = sent(o.conversation.receive(&right));
    assert_eq!(packet.identifier, o.start_id.wrapping_add(1));
    // The server's hello flight exceeds one 200-octet fragment: L + M on the first.
    let Body::Teap(message) = packet.body else {
        panic!("not TEAP")
    };
    assert!(message.more_fragments);
    assert!(message.message_length.unwrap() as usize > message.tls_data.len());
}

#[test]
fn bad_flags_end_the_conversation() {
    let mut o = opened(ConversationLimits::default());
    let mut start_flag = teap(false, None, &o.client_hello, None);
    start_flag.start = true;
    let finish = finished(o.conversation.receive(&response(o.start_id, start_flag)));
    assert_failed(&finish, "Start flag");
    assert_eq!(finish.eap[1], o.start_id);
    // Finished: anything later is discarded.
    let again = response(o.start_id, teap(false, None, &o.client_hello, None));
    assert!(matches!(o.conversation.receive(&again), Next::Discard(_)));

    // An unsupported version does not parse as TEAP: dropped like any malformed packet.
    let mut o = opened(ConversationLimits::default());
    let mut bytes = response(o.start_id, teap(false, None, &o.client_hello, None));
    bytes[5] = (bytes[5] & !0x07) | 2;
    assert!(
        matches!(o.conversation.receive(&bytes), Next::Discard(why) if why.contains("version"))
    );

    // O on the peer's second message.
    let mut o = opened(ConversationLimits::default());
    let half = o.client_hello.len() / 2;
    let total = o.client_hello.len() as u32;
    let first = response(
        o.start_id,
        teap(true, Some(total), &o.client_hello[..half], Some(vec![])),
    );
    let ack = sent(o.conversation.receive(&first));
    let second = response(
        ack.identifier,
        teap(false, None, &o.client_hello[half..], Some(vec![])),
    );
    assert_failed(
        &finished(o.conversation.receive(&second)),
        "O flag (outer TLVs) on a message other than the peer's first",
    );

    // Legacy Nak instead of TEAP.
    let mut o = opened(ConversationLimits::default());
    let nak = Packet {
        code: Code::Response,
        identifier: o.start_id,
        body: Body::Nak(vec![13]),
    }
    .encode()
    .unwrap();
    assert_failed(&finished(o.conversation.receive(&nak)), "legacy Nak");
}

#[test]
fn length_lies_end_the_conversation() {
    // L on an unfragmented message that disagrees with its data.
    let mut o = opened(ConversationLimits::default());
    let lie = response(o.start_id, teap(false, Some(5000), &o.client_hello, None));
    assert_failed(
        &finished(o.conversation.receive(&lie)),
        "Message Length 5000 but the unfragmented message carries",
    );
    // L beyond the message limit.
    let mut o = opened(ConversationLimits::default());
    let huge = response(o.start_id, teap(true, Some(1 << 20), &[0x16; 10], None));
    assert_failed(
        &finished(o.conversation.receive(&huge)),
        "exceeds the 65536-octet limit",
    );
    // Fragments carrying more than L.
    let mut o = opened(ConversationLimits::default());
    let ack = sent(o.conversation.receive(&response(
        o.start_id,
        teap(true, Some(20), &[0x16; 15], None),
    )));
    let over = response(ack.identifier, teap(false, None, &[0x16; 15], None));
    assert_failed(
        &finished(o.conversation.receive(&over)),
        "more than the Message Length 20",
    );
    // Fragments ending short of L.
    let mut o = opened(ConversationLimits::default());
    let ack = sent(o.conversation.receive(&response(
        o.start_id,
        teap(true, Some(20), &[0x16; 5], None),
    )));
    let short = response(ack.identifier, teap(false, None, &[0x16; 5], None));
    assert_failed(
        &finished(o.conversation.receive(&short)),
        "fragments total 10 octets but Message Length was 20",
    );
    // L on a later fragment.
    let mut o = opened(ConversationLimits::default());
    let ack = sent(o.conversation.receive(&response(
        o.start_id,
        teap(true, Some(20), &[0x16; 5], None),
    )));
    let late_l = response(ack.identifier, teap(true, Some(20), &[0x16; 5], None));
    assert_failed(
        &finished(o.conversation.receive(&late_l)),
        "L flag on a fragment other than the first",
    );
    // M without L on the first fragment.
    let mut o = opened(ConversationLimits::default());
    let no_l = response(o.start_id, teap(true, None, &[0x16; 5], None));
    assert_failed(
        &finished(o.conversation.receive(&no_l)),
        "first fragment (M flag) without the L flag",
    );
}

#[test]
fn fragment_flood_hits_the_exchange_limit() {
    let limits = ConversationLimits {
        max_exchanges: 20,
        ..ConversationLimits::default()
    };
    let mut o = opened(limits);
    let mut next = o.conversation.receive(&response(
        o.start_id,
        teap(true, Some(60_000), &[0x16], None),
    ));
    let mut acks = 0;
    let finish = loop {
        match next {
            Next::Send(bytes) => {
                acks += 1;
                let id = Packet::parse(&bytes).unwrap().identifier;
                next = o
                    .conversation
                    .receive(&response(id, teap(true, None, &[0x16], None)));
            }
            other => break finished(other),
        }
    };
    assert_eq!(acks, 20);
    assert_failed(&finish, "exchange limit of 20 EAP-Responses exceeded");
}

#[test]
fn garbage_tls_ends_with_a_tls_failure() {
    let mut o = opened(ConversationLimits::default());
    let garbage = response(o.start_id, teap(false, None, b"GET / HTTP/1.1\r\n", None));
    assert_failed(&finished(o.conversation.receive(&garbage)), "TLS");
}

/// Runs a client-certificate conversation whose first phase-2 reply is rewritten.
fn tampered(tamper: Tamper) -> Outcome {
    let pki = pki();
    let peer = TestPeer::new(
        client_tls(&pki, true),
        Behaviour {
            tamper: Some(tamper),
            ..Behaviour::default()
        },
    );
    run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |_| authenticated(),
    )
}

fn only_first(change: impl Fn(&[Tlv]) -> Vec<u8> + 'static) -> Tamper {
    Box::new(move |index, tlvs| (index == 0).then(|| change(tlvs)))
}

#[test]
fn truncated_tlvs_get_error_2002() {
    let outcome = tampered(only_first(|_| vec![0x80, 0x03, 0x00]));
    assert_failed(&outcome.finish, "malformed TLVs from the peer");
    assert_eq!(outcome.finish.error_code, Some(2002));
    assert_eq!(outcome.peer_end, Code::Failure);
    assert_eq!(
        outcome.peer.received[1],
        [Tlv::Error(2002), Tlv::Result(Status::Failure)]
    );
}

#[test]
fn unknown_mandatory_tlv_is_naked_and_conversation_continues() {
    let outcome = tampered(only_first(|tlvs| {
        let mut raw = tlv::encode_tlvs(tlvs).unwrap();
        raw.extend_from_slice(&[0x80, 0x40, 0x00, 0x01, 0xff]);
        raw
    }));
    assert_eq!(
        outcome.peer.received[1],
        [Tlv::Nak {
            vendor_id: 0,
            nak_type: 64,
            tlvs: vec![]
        }]
    );
    assert_success_with_matching_keys(&outcome);
}

#[test]
fn pac_tlv_gets_error_2002() {
    let outcome = tampered(only_first(|tlvs| {
        let mut tlvs = tlvs.to_vec();
        tlvs.push(Tlv::Pac(vec![1, 2, 3]));
        tlv::encode_tlvs(&tlvs).unwrap()
    }));
    assert_failed(&outcome.finish, "PAC TLV");
    assert_eq!(outcome.finish.error_code, Some(2002));
    assert_eq!(
        outcome.peer.received[1],
        [Tlv::Error(2002), Tlv::Result(Status::Failure)]
    );
}

#[test]
fn unexpected_tlv_gets_error_2002() {
    let outcome = tampered(only_first(|tlvs| {
        let mut tlvs = tlvs.to_vec();
        tlvs.push(Tlv::Pkcs7(vec![0x30, 0]));
        tlv::encode_tlvs(&tlvs).unwrap()
    }));
    assert_failed(&outcome.finish, "unexpected TLV type 15");
    assert_eq!(outcome.finish.error_code, Some(2002));
}

fn with_binding(tlvs: &[Tlv], change: impl Fn(&mut CryptoBinding)) -> Vec<u8> {
    let tlvs: Vec<Tlv> = tlvs
        .iter()
        .cloned()
        .map(|tlv| match tlv {
            Tlv::CryptoBinding(mut binding) => {
                change(&mut binding);
                Tlv::CryptoBinding(binding)
            }
            other => other,
        })
        .collect();
    tlv::encode_tlvs(&tlvs).unwrap()
}

#[test]
fn wrong_crypto_binding_gets_error_2001() {
    type Change = fn(&mut CryptoBinding);
    let cases: [(&str, Change); 5] = [
        // The key schedule's own words for a MAC mismatch are its business.
        ("", |b| b.msk_compound_mac[0] ^= 1),
        ("nonce", |b| b.nonce[0] ^= 1),
        ("sub-type", |b| b.sub_type = CryptoBinding::SUB_TYPE_REQUEST),
        ("received version", |b| b.received_version = 2),
        ("flags", |b| b.flags = 0),
    ];
    for (what, change) in cases {
        let outcome = tampered(only_first(move |tlvs| with_binding(tlvs, change)));
        assert_failed(&outcome.finish, "Crypto-Binding Response invalid");
        assert!(
            outcome.finish.reason.contains(what),
            "{what}: {}",
            outcome.finish.reason
        );
        assert_eq!(outcome.finish.error_code, Some(2001));
        assert_eq!(outcome.peer_end, Code::Failure);
        assert_eq!(
            outcome.peer.received[1],
            [Tlv::Error(2001), Tlv::Result(Status::Failure)]
        );
    }
}

#[test]
fn peer_outer_tlvs_enter_the_compound_mac() {
    // The peer's MAC claims outer TLVs other than those it sent.
    let pki = pki();
    let peer = TestPeer::new(
        client_tls(&pki, true),
        Behaviour {
            outer_tlvs: Tlv::IdentityHint(b"device-1".to_vec()).encode().unwrap(),
            forged_outer_tlvs: Some(Tlv::IdentityHint(b"forged".to_vec()).encode().unwrap()),
            ..Behaviour::default()
        },
    );
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |_| authenticated(),
    );
    assert_failed(&outcome.finish, "Crypto-Binding Response invalid");
    assert_eq!(outcome.finish.error_code, Some(2001));
    assert_eq!(outcome.peer_end, Code::Failure);
}

#[test]
fn answers_out_of_turn_are_handled() {
    let mut o = opened(ConversationLimits::default());
    assert!(matches!(
        o.conversation.answer(authenticated()),
        Next::Discard(why) if why == "no question is outstanding"
    ));
    let pki = pki();
    let peer = TestPeer::new(client_tls(&pki, true), Behaviour::default());
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |_| Answer::Issued { pkcs7_der: vec![1] },
    );
    assert_failed(&outcome.finish, "driver answered Issued to TunnelUp");
    assert_eq!(outcome.peer_end, Code::Failure);
}

#[test]
fn random_responses_never_panic() {
    let mut state: u64 = 0x0123_4567_89ab_cdef;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..200 {
        let mut o = opened(ConversationLimits {
            max_exchanges: 8,
            ..ConversationLimits::default()
        });
        let mut id = o.start_id;
        for _ in 0..8 {
            let len = (next() % 80) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if data.len() >= 6 {
                data[0] = 2;
                data[1] = id;
                data[2] = 0;
                data[3] = data.len() as u8;
                data[4] = 55;
                data[5] = (data[5] & 0xf8) | 1;
            }
            match o.conversation.receive(&data) {
                Next::Send(bytes) => id = Packet::parse(&bytes).unwrap().identifier,
                Next::Finished(_) => break,
                Next::Discard(_) | Next::Ask(_) => {}
            }
        }
    }
}

fn client_tls_with(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: Option<Vec<rustls::SupportedCipherSuite>>,
) -> Arc<rustls::ClientConfig> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    if let Some(suites) = suites {
        provider.cipher_suites = suites;
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(pki.client_chain.clone(), pki.client_key.clone_key())
            .unwrap(),
    )
}

#[test]
fn sha256_suite_keys_match_too() {
    let pki = pki();
    let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
    let tls = client_tls_with(&pki, &[&rustls::version::TLS12], Some(vec![suite]));
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        TestPeer::new(tls, Behaviour::default()),
        |_| authenticated(),
    );
    assert_success_with_matching_keys(&outcome);
    assert_eq!(
        outcome
            .peer
            .tls
            .negotiated_cipher_suite()
            .map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
    );
}

#[test]
fn tls13_only_peer_is_refused() {
    let pki = pki();
    let tls = client_tls_with(&pki, &[&rustls::version::TLS13], None);
    let mut peer = TestPeer::new(tls, Behaviour::default());
    let (mut conversation, start) = Conversation::start(
        server_config(&pki, ConversationLimits::default()),
        1,
        b"x".to_vec(),
        counter_random(),
    )
    .unwrap();
    let PeerStep::Send(hello) = peer.respond(&start) else {
        panic!("no ClientHello")
    };
    let finish = finished(conversation.receive(&hello));
    assert_failed(&finish, "TLS: peer is incompatible");
}

#[test]
fn empty_answer_declines_required_provisioning_as_hostap_does() {
    // hostap's peer ignores a lone Request-Action and answers "no recognized TLVs" with an
    // empty response: required provisioning (sent alone, Appendix C.11) fails with a protected
    // Result(Failure).
    for required in [false, true] {
        let pki = pki();
        let peer = TestPeer::new(
            client_tls(&pki, true),
            Behaviour {
                tamper: Some(only_first(|_| Vec::new())),
                ..Behaviour::default()
            },
        );
        let outcome = run(
            server_config(&pki, ConversationLimits::default()),
            peer,
            move |_| provisioning(required),
        );
        if required {
            assert_failed(
                &outcome.finish,
                "peer declined the required certificate provisioning",
            );
            assert_eq!(outcome.peer.received[1], [Tlv::Result(Status::Failure)]);
        } else {
            // The optional offer travels with a Crypto-Binding Request (hostap answers that
            // one): an empty answer leaves the binding unanswered.
            assert_failed(&outcome.finish, "no Crypto-Binding TLV");
            assert_eq!(outcome.finish.error_code, Some(2002));
        }
    }
}

#[test]
fn empty_answer_to_password_request_is_unexpected() {
    let pki = pki();
    let peer = TestPeer::new(
        client_tls(&pki, false),
        Behaviour {
            password: Some((b"a".to_vec(), b"b".to_vec())),
            tamper: Some(only_first(|_| Vec::new())),
            ..Behaviour::default()
        },
    );
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |_| Answer::RequirePassword { prompt: Vec::new() },
    );
    assert_failed(&outcome.finish, "no Basic-Password-Auth-Resp");
    assert_eq!(outcome.finish.error_code, Some(2002));
}

#[test]
fn conversation_is_send_and_debug_hides_secrets() {
    fn assert_send<T: Send>() {}
    assert_send::<Conversation>();
    assert_send::<Next>();
    let question = Question::CheckPassword {
        username: b"alice".to_vec(),
        password: Zeroizing::new(b"hunter2".to_vec()),
    };
    let rendered = format!("{question:?}");
    assert!(rendered.contains("alice") && !rendered.contains("hunter2"));
}

/// The peer's first Crypto-Binding round answered with `instead` in place of its Result.
fn result_replaced_by(instead: Tlv) -> Tamper {
    only_first(move |reply| {
        let changed: Vec<Tlv> = reply
            .iter()
            .map(|tlv| match tlv {
                Tlv::Result(_) => instead.clone(),
                other => other.clone(),
            })
            .collect();
        tlv::encode_tlvs(&changed).expect("encodes")
    })
}

fn trusted_server_root_request(status: Status) -> Tlv {
    Tlv::RequestAction {
        status,
        action: Action::ProcessTlv,
        tlvs: Tlv::TrustedServerRoot {
            credential_format: 1,
            tlvs: Vec::new(),
        }
        .encode()
        .expect("encodes"),
    }
}

#[test]
fn trusted_server_root_request_answering_result_gets_roots_and_a_fresh_binding() {
    // Appendix C.10 pattern: Crypto-Binding(Response) + Request-Action instead of a Result.
    for roots in [true, false] {
        let pki = pki();
        let peer = TestPeer::new(
            client_tls(&pki, true),
            Behaviour {
                tamper: Some(result_replaced_by(trusted_server_root_request(
                    Status::Success,
                ))),
                ..Behaviour::default()
            },
        );
        let mut config = (*server_config(&pki, ConversationLimits::default())).clone();
        if !roots {
            config.trusted_server_root_pkcs7 = None;
        }
        let outcome = run(Arc::new(config), peer, |_| authenticated());
        assert_success_with_matching_keys(&outcome);
        let mut expected = vec![tlv_type::CRYPTO_BINDING, tlv_type::RESULT];
        if roots {
            expected.push(tlv_type::TRUSTED_SERVER_ROOT);
        }
        assert_eq!(types(&outcome.peer.received[1]), expected, "roots={roots}");
        assert_eq!(
            outcome.peer.trusted_server_root,
            roots.then(|| Tlv::Pkcs7(TRUST_ROOT_PKCS7.to_vec()).encode().unwrap())
        );
    }
}

#[test]
fn unserved_required_trusted_server_root_request_fails() {
    let pki = pki();
    let peer = TestPeer::new(
        client_tls(&pki, true),
        Behaviour {
            tamper: Some(result_replaced_by(trusted_server_root_request(
                Status::Failure,
            ))),
            ..Behaviour::default()
        },
    );
    let mut config = (*server_config(&pki, ConversationLimits::default())).clone();
    config.trusted_server_root_pkcs7 = None;
    let outcome = run(Arc::new(config), peer, |_| authenticated());
    assert_failed(&outcome.finish, "Trusted-Server-Root");
}

#[test]
fn csr_with_a_bad_binding_answering_the_offer_is_a_tunnel_compromise() {
    let pki = pki();
    let peer = TestPeer::new(
        client_tls(&pki, true),
        Behaviour {
            csr: Some(csr(&pki)),
            tamper: Some(only_first(|reply| {
                let changed: Vec<Tlv> = reply
                    .iter()
                    .map(|tlv| match tlv {
                        Tlv::CryptoBinding(binding) => {
                            let mut binding = binding.clone();
                            binding.msk_compound_mac[0] ^= 1;
                            Tlv::CryptoBinding(binding)
                        }
                        other => other.clone(),
                    })
                    .collect();
                tlv::encode_tlvs(&changed).expect("encodes")
            })),
            ..Behaviour::default()
        },
    );
    let mut questions = Vec::new();
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |question| {
            questions.push(format!("{question:?}"));
            provisioning(false)
        },
    );
    assert_failed(&outcome.finish, "Crypto-Binding Response invalid");
    assert_eq!(outcome.finish.error_code, Some(2001));
    assert!(
        !questions.iter().any(|q| q.starts_with("Enroll")),
        "a CSR under a bad binding reached the driver: {questions:?}"
    );
}

// ---- inner EAP-GTC --------------------------------------------------------------------------

fn gtc_peer(pki: &Pki, answer: InnerAnswer, tamper: Option<Tamper>) -> TestPeer {
    TestPeer::new(
        client_tls(pki, false),
        Behaviour {
            inner_eap: Some((b"device-7".to_vec(), answer)),
            tamper,
            ..Behaviour::default()
        },
    )
}

fn require_gtc() -> Answer {
    Answer::RequireInnerEap {
        method: InnerMethod::Gtc,
        prompt: b"Password".to_vec(),
    }
}

/// The driver of the GTC cases: EAP-GTC at TunnelUp, then `check` for the password.
fn run_gtc(pki: &Pki, peer: TestPeer, mut check: impl FnMut(&[u8], &[u8]) -> Answer) -> Outcome {
    run(
        server_config(pki, ConversationLimits::default()),
        peer,
        |question| match question {
            Question::TunnelUp { peer_certificates } => {
                assert!(peer_certificates.is_empty());
                require_gtc()
            }
            Question::CheckPassword { username, password } => check(username, password),
            other => panic!("unexpected {other:?}"),
        },
    )
}

fn eap_payload_of(tlvs: &[Tlv]) -> Packet {
    match tlvs {
        [Tlv::EapPayload(payload)] => Packet::parse(payload).expect("inner EAP"),
        other => panic!("expected one EAP-Payload TLV, got {other:?}"),
    }
}

#[test]
fn gtc_accepted_checks_the_password_and_keys_match() {
    let pki = pki();
    let peer = gtc_peer(&pki, InnerAnswer::Gtc(b"correct horse".to_vec()), None);
    let outcome = run_gtc(&pki, peer, |username, password| {
        assert_eq!(username, b"device-7");
        assert_eq!(password, b"correct horse");
        authenticated()
    });
    // The peer advanced S-IMCK with the zero IMSK (as hostap does): equal keys prove the
    // server did too.
    assert_success_with_matching_keys(&outcome);
    let received = &outcome.peer.received;
    assert_eq!(received.len(), 3, "{received:?}");
    let identity = eap_payload_of(&received[0]);
    assert_eq!(identity.body, Body::Identity(Vec::new()));
    let gtc = eap_payload_of(&received[1]);
    assert_eq!(
        gtc.body,
        Body::Other {
            method_type: 6,
            data: b"Password".to_vec()
        }
    );
    assert_eq!(gtc.identifier, identity.identifier.wrapping_add(1));
    assert_eq!(
        types(&received[2]),
        [
            tlv_type::INTERMEDIATE_RESULT,
            tlv_type::CRYPTO_BINDING,
            tlv_type::RESULT
        ]
    );
    assert_eq!(
        received[2][0],
        Tlv::IntermediateResult {
            status: Status::Success,
            tlvs: vec![]
        }
    );
    // The MSK is not the one a binding-only round (Basic-Password-Auth) would give.
    let peer_tls = &outcome.peer.tls;
    let seed = peer_tls
        .export_keying_material([0u8; 40], keys::SESSION_KEY_SEED_LABEL, None)
        .expect("exporter");
    let hash = PrfHash::for_cipher_suite(u16::from(
        peer_tls.negotiated_cipher_suite().unwrap().suite(),
    ))
    .unwrap();
    let mut binding_only = KeySchedule::new(hash, &seed);
    binding_only.next_round(None, None);
    assert_ne!(
        binding_only.session_keys(false).msk,
        outcome.finish.keys.as_ref().unwrap().msk
    );
    // The token never reaches a Debug rendering.
    assert!(outcome.questions[1].contains("device-7"));
    assert!(!outcome.questions[1].contains("correct horse"));
}

#[test]
fn gtc_wrong_password_is_a_protected_failure() {
    let pki = pki();
    let peer = gtc_peer(&pki, InnerAnswer::Gtc(b"wrong".to_vec()), None);
    let outcome = run_gtc(&pki, peer, |_, password| {
        assert_eq!(password, b"wrong");
        Answer::Reject {
            error_code: 1003,
            reason: "bad password".into(),
        }
    });
    assert!(!outcome.finish.accepted);
    assert!(outcome.finish.keys.is_none());
    assert_eq!(outcome.peer_end, Code::Failure);
    assert_eq!(outcome.finish.error_code, Some(1003));
    assert_eq!(
        outcome.peer.received[2],
        [
            Tlv::IntermediateResult {
                status: Status::Failure,
                tlvs: vec![]
            },
            Tlv::Error(1003),
            Tlv::Result(Status::Failure)
        ]
    );
}

#[test]
fn gtc_refused_by_legacy_nak_is_inner_method_not_supported() {
    let pki = pki();
    // hostap's peer with phase2="auth=MSCHAPV2" answers EAP-GTC with a Nak proposing 26.
    let peer = gtc_peer(&pki, InnerAnswer::Nak(vec![26]), None);
    let outcome = run_gtc(&pki, peer, |_, _| panic!("no password to check"));
    assert!(!outcome.finish.accepted);
    assert_eq!(outcome.peer_end, Code::Failure);
    assert_eq!(outcome.finish.error_code, Some(1032));
    assert_failed(&outcome.finish, "refused inner EAP method 6");
    assert!(
        outcome.finish.reason.contains("[26]"),
        "{}",
        outcome.finish.reason
    );
    assert_eq!(
        outcome.peer.received[2],
        [
            Tlv::IntermediateResult {
                status: Status::Failure,
                tlvs: vec![]
            },
            Tlv::Error(1032),
            Tlv::Result(Status::Failure)
        ]
    );
    assert_eq!(outcome.questions.len(), 1, "{:?}", outcome.questions);
}

#[test]
fn nak_tlv_for_eap_payload_is_inner_method_not_supported() {
    let pki = pki();
    let peer = gtc_peer(
        &pki,
        InnerAnswer::Gtc(b"unused".to_vec()),
        Some(only_first(|_| {
            tlv::encode_tlvs(&[tlv::nak_for(tlv_type::EAP_PAYLOAD)]).unwrap()
        })),
    );
    let outcome = run_gtc(&pki, peer, |_, _| panic!("no password to check"));
    assert_eq!(outcome.finish.error_code, Some(1032));
    assert_eq!(
        outcome.peer.received[1],
        [Tlv::Error(1032), Tlv::Result(Status::Failure)]
    );
}

/// The inner EAP response the peer would send, replaced (only its n-th reply).
fn inner_replaced(n: usize, change: impl Fn(Vec<u8>) -> Vec<Tlv> + 'static) -> Tamper {
    Box::new(move |index, tlvs| {
        (index == n).then(|| {
            let [Tlv::EapPayload(payload)] = tlvs else {
                panic!("expected the peer's EAP-Payload, got {tlvs:?}")
            };
            tlv::encode_tlvs(&change(payload.clone())).unwrap()
        })
    })
}

/// Rewrites the peer's inner EAP packet into the TLVs it sends instead.
type InnerChange = Box<dyn Fn(Vec<u8>) -> Vec<Tlv>>;

fn gtc_failure(tamper: Tamper) -> Outcome {
    let pki = pki();
    let peer = gtc_peer(&pki, InnerAnswer::Gtc(b"pw".to_vec()), Some(tamper));
    run_gtc(&pki, peer, |_, _| panic!("no password to check"))
}

#[test]
fn malformed_eap_payloads_get_error_2002() {
    let cases: Vec<(&str, usize, InnerChange)> = vec![
        (
            "malformed EAP packet",
            0,
            Box::new(|_| vec![Tlv::EapPayload(vec![2, 0, 0, 40, 1])]),
        ),
        (
            "malformed EAP packet",
            1,
            Box::new(|_| vec![Tlv::EapPayload(Vec::new())]),
        ),
        (
            "with identifier",
            0,
            Box::new(|mut payload| {
                payload[1] = payload[1].wrapping_add(1);
                vec![Tlv::EapPayload(payload)]
            }),
        ),
        (
            "inner EAP Request",
            1,
            Box::new(|mut payload| {
                payload[0] = 1;
                vec![Tlv::EapPayload(payload)]
            }),
        ),
        (
            "2 EAP-Payload TLVs",
            0,
            Box::new(|payload| vec![Tlv::EapPayload(payload.clone()), Tlv::EapPayload(payload)]),
        ),
        ("0 EAP-Payload TLVs", 1, Box::new(|_| Vec::new())),
        (
            "(EAP type 4) while waiting for the method",
            1,
            Box::new(|mut payload| {
                payload[4] = 4;
                vec![Tlv::EapPayload(payload)]
            }),
        ),
        (
            "(Identity) while waiting for the method",
            1,
            Box::new(|mut payload| {
                payload[4] = 1;
                vec![Tlv::EapPayload(payload)]
            }),
        ),
        (
            "(legacy Nak) while waiting for the Identity",
            0,
            Box::new(|payload| vec![Tlv::EapPayload(vec![2, payload[1], 0, 6, 3, 6])]),
        ),
    ];
    for (expected, n, change) in cases {
        let outcome = gtc_failure(inner_replaced(n, change));
        assert_failed(&outcome.finish, expected);
        assert_eq!(outcome.finish.error_code, Some(2002), "{expected}");
        assert_eq!(
            outcome.peer.received.last().unwrap(),
            &[Tlv::Error(2002), Tlv::Result(Status::Failure)],
            "{expected}"
        );
    }
}

#[test]
fn eap_payload_outside_an_inner_method_is_unexpected() {
    let pki = pki();
    let peer = TestPeer::new(
        client_tls(&pki, false),
        Behaviour {
            password: Some((b"alice".to_vec(), b"pw".to_vec())),
            tamper: Some(only_first(|_| {
                tlv::encode_tlvs(&[Tlv::EapPayload(vec![2, 0, 0, 5, 1])]).unwrap()
            })),
            ..Behaviour::default()
        },
    );
    let outcome = run(
        server_config(&pki, ConversationLimits::default()),
        peer,
        |_| Answer::RequirePassword { prompt: Vec::new() },
    );
    assert_failed(&outcome.finish, "unexpected TLV type 9");
    assert_eq!(outcome.finish.error_code, Some(2002));
}

#[test]
fn gtc_can_be_asked_again_after_a_check() {
    let pki = pki();
    let peer = gtc_peer(&pki, InnerAnswer::Gtc(b"token".to_vec()), None);
    let mut checks = 0;
    let outcome = run_gtc(&pki, peer, |_, _| {
        checks += 1;
        if checks == 1 {
            require_gtc()
        } else {
            authenticated()
        }
    });
    assert_success_with_matching_keys(&outcome);
    assert_eq!(checks, 2);
    // Identity, GTC, Identity, GTC: a fresh inner EAP conversation each time.
    assert_eq!(outcome.peer.inner_requests.len(), 4);
}
