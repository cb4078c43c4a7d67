//! Test support: certificates, and a small scripted TEAP v1 *server* written from RFC 9930 so
//! the peer can be run end to end (TLS 1.2 through buffers, fragmentation both ways, Phase 2
//! TLVs, Crypto-Binding with the project's key schedule) before the real `teap_server` exists.
//! It is a test fixture: one fixed plan per conversation, panics on anything unexpected.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use ragw_teap::eap::{Body, Code, Packet, TeapMessage};
use ragw_teap::keys::{KeySchedule, PrfHash, SESSION_KEY_SEED_LABEL, SessionKeys};
use ragw_teap::tlv::{Action, CryptoBinding, Limits, Status, Tlv, encode_tlvs, parse_tlvs};
use ragw_teap_peer::{Fragmenter, Reassembled, Reassembler};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub const SERVER_NAME: &str = "teap.example";
pub const AUTHORITY_ID: &[u8] = b"ragw-test-authority";

/// A CA, a server certificate for [`SERVER_NAME`] and a client certificate, all from the CA.
pub struct Pki {
    pub ca_der: CertificateDer<'static>,
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key: PrivateKeyDer<'static>,
    pub client_chain: Vec<CertificateDer<'static>>,
    pub client_key: PrivateKeyDer<'static>,
}

impl Pki {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ragw TEAP test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &issuer).unwrap();
            (
                vec![cert.der().clone(), ca_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                cert.pem(),
                key.serialize_pem(),
            )
        };
        let (server_chain, server_key, server_cert_pem, server_key_pem) =
            leaf(vec![SERVER_NAME.into()], SERVER_NAME);
        let (client_chain, client_key, _, _) = leaf(vec![], "device-0001");
        Self {
            ca_der: ca_cert.der().clone(),
            ca_pem: ca_cert.pem(),
            server_cert_pem,
            server_key_pem,
            server_chain,
            server_key,
            client_chain,
            client_key,
        }
    }

    /// TLS 1.2 server config asking for (but not requiring) a client certificate from the CA.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .unwrap();
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())
            .unwrap();
        Arc::new(config)
    }
}

/// A CSR builder for the peer: a fresh P-256 key, CN from the CSR-Attributes length (so the
/// test can see the attributes reached it).
pub fn rcgen_csr(attributes: &[u8]) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("device-attrs-{}", attributes.len()),
    );
    params.serialize_request(&key).unwrap().der().to_vec()
}

/// CA decision on a CSR: the PKCS#7 to send, or an Error TLV code.
pub type Issue = Box<dyn FnMut(&[u8]) -> Result<Vec<u8>, u32> + Send>;

/// What the scripted server does in Phase 2.
pub enum Plan {
    /// Appendix C.13: Crypto-Binding + Result right away.
    NoInner,
    /// Appendix C.1/C.2: Basic-Password-Auth.
    Password {
        username: Vec<u8>,
        password: Vec<u8>,
    },
    /// Appendix C.11/C.12: Request-Action(Process-TLV, PKCS#10) + CSR-Attributes.
    Provision {
        required: bool,
        csr_attributes: Vec<u8>,
        issue: Issue,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Handshake,
    AwaitPassword,
    AwaitCsr,
    /// Waiting for the peer's Crypto-Binding Response (+ Result, or a Request-Action).
    AwaitBinding,
    /// Binding verified; waiting for the peer's final Result.
    AwaitResult,
    /// A failure Result was sent; the peer's answer is followed by EAP-Failure.
    AwaitFailureAck,
}

pub enum ServerStep {
    Send(Vec<u8>),
    Finished {
        success: bool,
        eap: Vec<u8>,
        keys: Option<SessionKeys>,
        reason: String,
    },
}

pub struct MiniServer {
    tls: ServerConnection,
    plan: Plan,
    max_fragment: usize,
    identifier: u8,
    server_outer: Vec<u8>,
    peer_outer: Option<Vec<u8>>,
    reassembler: Reassembler,
    fragmenter: Fragmenter,
    keys: Option<KeySchedule>,
    stage: Stage,
    nonce_counter: u8,
    last_nonce: [u8; 32],
    pub trusted_root_pkcs7: Option<Vec<u8>>,
    pub peer_certificates: Vec<Vec<u8>>,
    pub received_csr: Option<Vec<u8>>,
    pub peer_fragments_acked: u32,
    pub server_fragments_sent: u32,
}

impl MiniServer {
    /// The conversation and its TEAP Start (S + O flags, Authority-ID outer TLV).
    pub fn start(config: Arc<ServerConfig>, plan: Plan, max_fragment: usize) -> (Self, Vec<u8>) {
        let server_outer = Tlv::AuthorityId(AUTHORITY_ID.to_vec()).encode().unwrap();
        let mut server = Self {
            tls: ServerConnection::new(config).unwrap(),
            plan,
            max_fragment,
            identifier: 17,
            server_outer: server_outer.clone(),
            peer_outer: None,
            reassembler: Reassembler::new(64 * 1024),
            fragmenter: Fragmenter::default(),
            keys: None,
            stage: Stage::Handshake,
            nonce_counter: 0,
            last_nonce: [0; 32],
            trusted_root_pkcs7: None,
            peer_certificates: Vec::new(),
            received_csr: None,
            peer_fragments_acked: 0,
            server_fragments_sent: 0,
        };
        let mut start = TeapMessage::new(Vec::new());
        start.start = true;
        start.outer_tlvs = Some(server_outer);
        let start = server.request(start);
        (server, start)
    }

    fn request(&mut self, message: TeapMessage) -> Vec<u8> {
        self.identifier = self.identifier.wrapping_add(1);
        Packet {
            code: Code::Request,
            identifier: self.identifier,
            body: Body::Teap(message),
        }
        .encode()
        .unwrap()
    }

    fn end(&mut self, success: bool, reason: impl Into<String>) -> ServerStep {
        let keys = if success {
            Some(self.keys.as_ref().unwrap().session_keys(false))
        } else {
            None
        };
        let eap = Packet {
            code: if success {
                Code::Success
            } else {
                Code::Failure
            },
            identifier: self.identifier,
            body: Body::Empty,
        }
        .encode()
        .unwrap();
        ServerStep::Finished {
            success,
            eap,
            keys,
            reason: reason.into(),
        }
    }

    /// One EAP-Response from the peer.
    pub fn receive(&mut self, eap_response: &[u8]) -> ServerStep {
        let packet = Packet::parse(eap_response).unwrap();
        assert_eq!(packet.code, Code::Response);
        assert_eq!(packet.identifier, self.identifier, "response identifier");
        let Body::Teap(message) = packet.body else {
            panic!("not TEAP: {:?}", packet.body)
        };
        if self.peer_outer.is_none() {
            self.peer_outer = Some(message.outer_tlvs.clone().unwrap_or_default());
        } else {
            assert!(
                message.outer_tlvs.is_none(),
                "O flag after the first peer message"
            );
        }
        if self.fragmenter.has_pending() {
            assert!(message.tls_data.is_empty(), "expected an ACK");
            let next = self.fragmenter.next(self.max_fragment);
            self.server_fragments_sent += 1;
            return ServerStep::Send(self.request(next));
        }
        let tls_data = match self.reassembler.push(&message).unwrap() {
            Reassembled::Incomplete => {
                self.peer_fragments_acked += 1;
                return ServerStep::Send(self.request(TeapMessage::new(Vec::new())));
            }
            Reassembled::Complete(data) => data,
        };
        let mut rest = tls_data.as_slice();
        while !rest.is_empty() {
            if self.tls.read_tls(&mut rest).unwrap() == 0 {
                break;
            }
            if let Err(error) = self.tls.process_new_packets() {
                return self.end(false, format!("server TLS: {error}"));
            }
        }
        if self.stage == Stage::Handshake && !self.tls.is_handshaking() {
            self.begin_phase2();
        } else if self.stage != Stage::Handshake {
            let mut plaintext = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match std::io::Read::read(&mut self.tls.reader(), &mut chunk) {
                    Ok(0) => break,
                    Ok(n) => plaintext.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("server TLS read: {e}"),
                }
            }
            if let Some(finished) = self.phase2(&plaintext) {
                return finished;
            }
        }
        self.flush()
    }

    fn flush(&mut self) -> ServerStep {
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut out).unwrap();
        }
        assert!(!out.is_empty(), "scripted server has nothing to send");
        let first = self.fragmenter.start(out, None, self.max_fragment);
        self.server_fragments_sent += 1;
        ServerStep::Send(self.request(first))
    }

    fn send_tlvs(&mut self, tlvs: &[Tlv]) {
        let bytes = encode_tlvs(tlvs).unwrap();
        std::io::Write::write_all(&mut self.tls.writer(), &bytes).unwrap();
    }

    fn binding_request(&mut self) -> Tlv {
        let keys = self.keys.as_mut().unwrap();
        keys.next_round(None, None);
        self.nonce_counter += 1;
        let mut nonce = [self.nonce_counter.wrapping_mul(37); 32];
        nonce[0] = self.nonce_counter;
        nonce[31] &= 0xfe;
        self.last_nonce = nonce;
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
        keys.sign_binding(
            &mut binding,
            &self.server_outer,
            self.peer_outer.as_deref().unwrap_or_default(),
        )
        .unwrap();
        Tlv::CryptoBinding(binding)
    }

    fn begin_phase2(&mut self) {
        let suite = u16::from(self.tls.negotiated_cipher_suite().unwrap().suite());
        let mut seed = [0u8; 40];
        self.tls
            .export_keying_material(&mut seed, SESSION_KEY_SEED_LABEL, None)
            .unwrap();
        self.keys = Some(KeySchedule::new(
            PrfHash::for_cipher_suite(suite).unwrap(),
            &seed,
        ));
        self.peer_certificates = self
            .tls
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default();
        match &self.plan {
            Plan::NoInner => {
                let binding = self.binding_request();
                self.send_tlvs(&[binding, Tlv::Result(Status::Success)]);
                self.stage = Stage::AwaitBinding;
            }
            Plan::Password { .. } => {
                self.send_tlvs(&[Tlv::BasicPasswordAuthReq(b"Password:".to_vec())]);
                self.stage = Stage::AwaitPassword;
            }
            Plan::Provision {
                required,
                csr_attributes,
                ..
            } => {
                let status = if *required {
                    Status::Failure
                } else {
                    Status::Success
                };
                let request = Tlv::RequestAction {
                    status,
                    action: Action::ProcessTlv,
                    tlvs: Tlv::Pkcs10(Vec::new()).encode().unwrap(),
                };
                let attributes = Tlv::CsrAttributes(csr_attributes.clone());
                self.send_tlvs(&[request, attributes]);
                self.stage = Stage::AwaitCsr;
            }
        }
    }

    fn fail_tlvs(&mut self, error: u32) {
        self.send_tlvs(&[
            Tlv::Error(error),
            Tlv::IntermediateResult {
                status: Status::Failure,
                tlvs: vec![],
            },
            Tlv::Result(Status::Failure),
        ]);
        self.stage = Stage::AwaitFailureAck;
    }

    /// Phase 2 logic; Some = the conversation ends now.
    fn phase2(&mut self, plaintext: &[u8]) -> Option<ServerStep> {
        let tlvs = parse_tlvs(plaintext, Limits::default()).unwrap().tlvs;
        if self.stage == Stage::AwaitFailureAck {
            return Some(self.end(false, "failure acknowledged"));
        }
        if tlvs.contains(&Tlv::Result(Status::Failure)) {
            return Some(self.end(false, format!("peer sent Result(Failure): {tlvs:?}")));
        }
        match self.stage {
            Stage::AwaitPassword => {
                let Some((username, password)) = tlvs.iter().find_map(|t| match t {
                    Tlv::BasicPasswordAuthResp { username, password } => {
                        Some((username.clone(), password.clone()))
                    }
                    _ => None,
                }) else {
                    return Some(self.end(false, format!("no password response: {tlvs:?}")));
                };
                let Plan::Password {
                    username: want_user,
                    password: want_password,
                } = &self.plan
                else {
                    unreachable!()
                };
                if (&username, &password) == (want_user, want_password) {
                    let binding = self.binding_request();
                    self.send_tlvs(&[
                        Tlv::IntermediateResult {
                            status: Status::Success,
                            tlvs: vec![],
                        },
                        binding,
                        Tlv::Result(Status::Success),
                    ]);
                    self.stage = Stage::AwaitBinding;
                } else {
                    self.fail_tlvs(1003);
                }
            }
            Stage::AwaitCsr => {
                if let Some(csr) = tlvs.iter().find_map(|t| match t {
                    Tlv::Pkcs10(der) => Some(der.clone()),
                    _ => None,
                }) {
                    self.received_csr = Some(csr.clone());
                    let Plan::Provision { issue, .. } = &mut self.plan else {
                        unreachable!()
                    };
                    match issue(&csr) {
                        Ok(pkcs7) => {
                            let binding = self.binding_request();
                            self.send_tlvs(&[
                                Tlv::Pkcs7(pkcs7),
                                Tlv::IntermediateResult {
                                    status: Status::Success,
                                    tlvs: vec![],
                                },
                                binding,
                                Tlv::Result(Status::Success),
                            ]);
                            self.stage = Stage::AwaitBinding;
                        }
                        Err(code) => self.fail_tlvs(code),
                    }
                } else if tlvs.contains(&Tlv::Result(Status::Success)) {
                    // The peer declined optional provisioning: protected termination anyway.
                    let binding = self.binding_request();
                    self.send_tlvs(&[binding, Tlv::Result(Status::Success)]);
                    self.stage = Stage::AwaitBinding;
                } else {
                    return Some(self.end(false, format!("no CSR: {tlvs:?}")));
                }
            }
            Stage::AwaitBinding => {
                let Some(binding) = tlvs.iter().find_map(|t| match t {
                    Tlv::CryptoBinding(b) => Some(b.clone()),
                    _ => None,
                }) else {
                    return Some(self.end(false, format!("no Crypto-Binding: {tlvs:?}")));
                };
                let mut expected_nonce = self.last_nonce;
                expected_nonce[31] |= 1;
                assert_eq!(binding.nonce, expected_nonce, "response nonce");
                assert_eq!(binding.sub_type, CryptoBinding::SUB_TYPE_RESPONSE);
                if let Err(error) = self.keys.as_ref().unwrap().verify(
                    &binding,
                    &self.server_outer,
                    self.peer_outer.as_deref().unwrap_or_default(),
                ) {
                    self.send_tlvs(&[Tlv::Result(Status::Failure), Tlv::Error(2001)]);
                    self.stage = Stage::AwaitFailureAck;
                    let _ = error;
                    return None;
                }
                let wants_roots = tlvs.iter().any(|t| {
                    matches!(t, Tlv::RequestAction { tlvs, .. }
                        if parse_tlvs(tlvs, Limits::default()).is_ok_and(|p| p.tlvs.iter().any(
                            |t| matches!(t, Tlv::TrustedServerRoot { .. }))))
                });
                if wants_roots {
                    let roots = self.trusted_root_pkcs7.clone().unwrap_or_default();
                    self.send_tlvs(&[
                        Tlv::TrustedServerRoot {
                            credential_format: 1,
                            tlvs: Tlv::Pkcs7(roots).encode().unwrap(),
                        },
                        Tlv::Result(Status::Success),
                    ]);
                    self.stage = Stage::AwaitResult;
                } else if tlvs.contains(&Tlv::Result(Status::Success)) {
                    return Some(self.end(true, "protected success"));
                } else {
                    return Some(self.end(false, format!("no Result: {tlvs:?}")));
                }
            }
            Stage::AwaitResult => {
                if tlvs.contains(&Tlv::Result(Status::Success)) {
                    return Some(self.end(true, "protected success after roots"));
                }
                return Some(self.end(false, format!("no final Result: {tlvs:?}")));
            }
            Stage::Handshake | Stage::AwaitFailureAck => unreachable!(),
        }
        None
    }
}

/// Drives a peer against the scripted server until both are done.
pub fn converse(
    peer: &mut ragw_teap_peer::Peer,
    server: &mut MiniServer,
    start: Vec<u8>,
) -> (ragw_teap_peer::PeerOutcome, ServerStep) {
    use ragw_teap_peer::PeerStep;
    // The NAS-side identity exchange happens before the server starts TEAP.
    let identity = peer.identity_response(1);
    assert!(matches!(
        Packet::parse(&identity).unwrap().body,
        Body::Identity(_)
    ));
    let mut to_peer = start;
    for _ in 0..200 {
        match peer.receive(&to_peer) {
            PeerStep::Send(response) => match server.receive(&response) {
                ServerStep::Send(request) => to_peer = request,
                finished @ ServerStep::Finished { .. } => {
                    let ServerStep::Finished { eap, .. } = &finished else {
                        unreachable!()
                    };
                    match peer.receive(eap) {
                        PeerStep::Done(outcome) => return (*outcome, finished),
                        PeerStep::Send(_) => panic!("peer continues after EAP-Success/Failure"),
                    }
                }
            },
            PeerStep::Done(outcome) => panic!("peer finished before the server: {outcome:?}"),
        }
    }
    panic!("conversation did not end")
}
