//! hostap's TEAP peer (`eapol_test`, hostap 2.10) against ragw's own EAP-TEAP server
//! conversation (`ragw_teap::teap_server`), over RADIUS on loopback through the project's
//! RADIUS server core and its UDP shell.
//!
//! The RADIUS handler here is test-only: it keeps one [`Conversation`] per RADIUS State it
//! issued, answers the EAP-Response/Identity with the TEAP Start, answers the conversation's
//! questions at once with a fixed policy (a Phase 1 client certificate authenticates; without
//! one, Basic-Password-Auth or inner EAP-GTC against a fixed password), and ends with
//! Access-Accept (EAP-Success, MS-MPPE keys from the MSK) or Access-Reject (EAP-Failure).
//!
//! Every successful case asserts that eapol_test reports SUCCESS and that the MSK it derived
//! equals both the MSK ragw's conversation produced and the MS-MPPE keys eapol_test decrypted
//! from the Access-Accept. Skips loudly without the hostap build; fails under
//! `RAGW_REQUIRE_PEERS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use ragw_teap::eap::{self, Body};
use ragw_teap::radius::{self, Attribute, Code, Packet, attr};
use ragw_teap::radius_server::{
    CacheLimits, Client, ClientTable, Handled, Handler, IpPrefix, RadiusServer, Reply, RequestKey,
    Secret,
};
use ragw_teap::teap_server::{
    Answer, Conversation, ConversationLimits, InnerMethod, Next, Provisioning, Question,
    TeapServerConfig, tls_server_config,
};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::{EapolTestConfig, TeapPeerAuth, eapol_test};

const SECRET: &str = "eapol-test-interop-secret";
const DEVICE: &str = "device-0001";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse";
/// Error TLV code sent with a refused password: 1003 "Unspecified authentication failure"
/// (RFC 9930 §4.2.6, a warning; the Result(Failure) beside it ends the conversation).
const BAD_CREDENTIALS: u32 = 1003;

// ---- PKI ------------------------------------------------------------------------------------

struct Pki {
    ca_pem: PathBuf,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    client_cert_pem: PathBuf,
    client_key_pem: PathBuf,
}

/// A throwaway CA (ECDSA P-256) with a server certificate for ragw and a client certificate
/// for eapol_test.
fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "eapol_test interop CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose, san: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(san).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        (params.signed_by(&key, &issuer).unwrap(), key)
    };
    let (server_cert, server_key) = leaf(
        "radius.example.test",
        ExtendedKeyUsagePurpose::ServerAuth,
        vec!["radius.example.test".to_string()],
    );
    let (client_cert, client_key) = leaf(DEVICE, ExtendedKeyUsagePurpose::ClientAuth, vec![]);
    let client_cert_pem = dir.join("client.pem");
    std::fs::write(&client_cert_pem, client_cert.pem()).unwrap();
    let client_key_pem = dir.join("client.key");
    std::fs::write(&client_key_pem, client_key.serialize_pem()).unwrap();
    Pki {
        ca_pem,
        server_chain: vec![server_cert.der().clone(), ca_cert.der().clone()],
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        client_cert_pem,
        client_key_pem,
    }
}

// ---- the test-only RADIUS handler -----------------------------------------------------------

/// What the handler decides on the conversation's questions.
#[derive(Clone)]
struct Policy {
    /// Sent with `Authenticated` after a client certificate or the right password.
    provisioning: Option<Provisioning>,
    /// Without a client certificate, ask for the password by inner EAP-GTC instead of
    /// Basic-Password-Auth.
    inner_gtc: bool,
}

/// One finished conversation as the server saw it.
#[derive(Debug)]
struct ServerOutcome {
    accepted: bool,
    msk: Option<[u8; 64]>,
    reason: String,
    error_code: Option<u32>,
    peer_certificates: usize,
}

struct TeapHandler {
    base: TeapServerConfig,
    policy: Policy,
    conversations: HashMap<Vec<u8>, Conversation>,
    next_state: u64,
    outcomes: Vec<ServerOutcome>,
    questions: Vec<String>,
    discards: Vec<String>,
    /// Longest EAP-Request sent in an Access-Challenge.
    longest_request: usize,
}

impl TeapHandler {
    fn new(base: TeapServerConfig, policy: Policy) -> Self {
        Self {
            base,
            policy,
            conversations: HashMap::new(),
            next_state: 0,
            outcomes: Vec::new(),
            questions: Vec::new(),
            discards: Vec::new(),
            longest_request: 0,
        }
    }

    /// The conversation's configuration, its TLS fragments sized from the NAS's Framed-MTU:
    /// the EAP header, type, flags and a first fragment's Message Length take 10 octets.
    fn config_for(&self, request: &Packet) -> Arc<TeapServerConfig> {
        let mut config = self.base.clone();
        if let Some(mtu) = request
            .attribute(attr::FRAMED_MTU)
            .and_then(|value| <[u8; 4]>::try_from(value).ok())
            .map(u32::from_be_bytes)
        {
            let mtu = usize::try_from(mtu).unwrap_or(usize::MAX);
            config.limits.max_tls_fragment = mtu
                .saturating_sub(10)
                .clamp(64, self.base.limits.max_tls_fragment);
        }
        Arc::new(config)
    }

    fn decide(&mut self, question: Question) -> Answer {
        self.questions.push(format!("{question:?}"));
        match question {
            Question::TunnelUp { peer_certificates } if !peer_certificates.is_empty() => {
                Answer::Authenticated {
                    provisioning: self.policy.provisioning.clone(),
                }
            }
            Question::TunnelUp { .. } if self.policy.inner_gtc => Answer::RequireInnerEap {
                method: InnerMethod::Gtc,
                prompt: b"Password".to_vec(),
            },
            Question::TunnelUp { .. } => Answer::RequirePassword { prompt: Vec::new() },
            Question::CheckPassword { username, password } => {
                if username == USER.as_bytes() && password.as_slice() == PASSWORD.as_bytes() {
                    Answer::Authenticated {
                        provisioning: self.policy.provisioning.clone(),
                    }
                } else {
                    Answer::Reject {
                        error_code: BAD_CREDENTIALS,
                        reason: "wrong password".into(),
                    }
                }
            }
            Question::Enroll { .. } => Answer::EnrollFailed {
                error_code: ragw_teap::tlv::error_code::INTERNAL_CA_ERROR,
                reason: "this test issues no certificates".into(),
            },
        }
    }

    fn drive(
        &mut self,
        mut conversation: Conversation,
        mut next: Next,
        client: &Client,
        request: &Packet,
    ) -> Reply {
        loop {
            match next {
                Next::Ask(question) => {
                    let answer = self.decide(question);
                    next = conversation.answer(answer);
                }
                Next::Send(eap_request) => {
                    self.longest_request = self.longest_request.max(eap_request.len());
                    self.next_state += 1;
                    let state = format!("ragw-test-{}", self.next_state).into_bytes();
                    let mut attributes = radius::eap_message_attributes(&eap_request);
                    attributes.push(Attribute::new(attr::STATE, state.clone()));
                    self.conversations.insert(state, conversation);
                    return Reply {
                        code: Code::AccessChallenge,
                        attributes,
                    };
                }
                Next::Finished(finish) => {
                    let mut attributes = radius::eap_message_attributes(&finish.eap);
                    let code = match (&finish.keys, finish.accepted) {
                        (Some(keys), true) => {
                            let mut salts = [0u8; 4];
                            rand::rng().fill_bytes(&mut salts);
                            // The two salts must differ (RFC 2548).
                            if salts[..2] == salts[2..] {
                                salts[3] ^= 1;
                            }
                            attributes.extend(
                                radius::mppe_key_attributes(
                                    &keys.msk,
                                    [salts[0], salts[1]],
                                    [salts[2], salts[3]],
                                    client.secret.expose(),
                                    &request.authenticator,
                                )
                                .unwrap(),
                            );
                            Code::AccessAccept
                        }
                        _ => Code::AccessReject,
                    };
                    self.outcomes.push(ServerOutcome {
                        accepted: finish.accepted,
                        msk: finish.keys.as_ref().map(|keys| keys.msk),
                        reason: finish.reason.clone(),
                        error_code: finish.error_code,
                        peer_certificates: finish.peer_certificates.len(),
                    });
                    return Reply { code, attributes };
                }
                Next::Discard(why) => {
                    // A RADIUS handler must answer; the test fails on any discard.
                    self.discards.push(why.clone());
                    return reject(&format!("discarded: {why}"));
                }
            }
        }
    }
}

fn reject(message: &str) -> Reply {
    Reply {
        code: Code::AccessReject,
        attributes: vec![Attribute::new(
            attr::REPLY_MESSAGE,
            message.as_bytes().to_vec(),
        )],
    }
}

impl Handler for TeapHandler {
    fn handle(&mut self, _key: RequestKey, client: &Client, request: &Packet) -> Handled {
        let Ok(Some(eap_response)) = request.eap_message() else {
            return Handled::Reply(reject("no EAP-Message"));
        };
        let known = request
            .state()
            .and_then(|state| self.conversations.remove(state));
        let (conversation, next) = match known {
            Some(mut conversation) => {
                let next = conversation.receive(&eap_response);
                (conversation, next)
            }
            None => {
                let Ok(packet) = eap::Packet::parse(&eap_response) else {
                    return Handled::Reply(reject("malformed EAP"));
                };
                let Body::Identity(identity) = packet.body else {
                    return Handled::Reply(reject("expected EAP-Response/Identity"));
                };
                let random = Box::new(|buf: &mut [u8]| rand::rng().fill_bytes(buf));
                let (conversation, start) = Conversation::start(
                    self.config_for(request),
                    packet.identifier.wrapping_add(1),
                    identity,
                    random,
                )
                .unwrap();
                (conversation, Next::Send(start))
            }
        };
        Handled::Reply(self.drive(conversation, next, client, request))
    }
}

// ---- running one case -----------------------------------------------------------------------

struct Case<'a> {
    auth: TeapPeerAuth<'a>,
    identity: &'a str,
    policy: Policy,
    /// Extra eapol_test network lines (cipher suite, fragment size).
    network: &'a [&'a str],
    /// Extra eapol_test arguments (RADIUS attributes such as Framed-MTU).
    args: &'a [&'a str],
}

struct CaseResult {
    run: support::EapolTestRun,
    /// The RADIUS core handed back at shutdown, holding the handler and what it saw.
    core: RadiusServer<TeapHandler>,
}

impl CaseResult {
    fn handler(&self) -> &TeapHandler {
        self.core.handler()
    }
}

/// Serves RADIUS with the handler on 127.0.0.1:0 in a thread of its own and runs eapol_test
/// against it once. The only use of `radius_server::udp::serve` in this file.
fn serve_and_run(
    eapol_test: &Path,
    config: &Path,
    handler: TeapHandler,
    args: &[&str],
) -> CaseResult {
    let mut clients = ClientTable::new();
    clients.insert(
        IpPrefix::single("127.0.0.1".parse().unwrap()),
        Client {
            name: "eapol_test".to_owned(),
            secret: Secret::new(SECRET.as_bytes().to_vec()).unwrap(),
        },
    );
    let core = RadiusServer::new(clients, handler, CacheLimits::default());
    let (address_tx, address_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            address_tx.send(socket.local_addr().unwrap()).unwrap();
            // This handler answers at once; the completion channel stays idle.
            let (_completer, completions) = ragw_teap::radius_server::udp::completion_channel();
            ragw_teap::radius_server::udp::serve(socket, core, completions, async {
                let _ = shutdown_rx.await;
            })
            .await
            .unwrap()
        })
    });
    let address = address_rx.recv().unwrap();
    let run = support::run_eapol_test_with(eapol_test, config, address, SECRET, 20, args);
    shutdown.send(()).unwrap();
    let core = server.join().unwrap();
    CaseResult { run, core }
}

fn run_case(case: Case<'_>, max_tls_fragment: usize) -> Option<CaseResult> {
    let eapol_test = eapol_test()?;
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let owned_auth;
    let auth = match case.auth {
        // The client certificate lives in this case's PKI.
        TeapPeerAuth::ClientCertificate { .. } => {
            owned_auth = (pki.client_cert_pem.clone(), pki.client_key_pem.clone());
            TeapPeerAuth::ClientCertificate {
                cert: &owned_auth.0,
                key: &owned_auth.1,
            }
        }
        other => other,
    };
    let config = support::write_eapol_test_config_with(
        dir.path(),
        &EapolTestConfig {
            ca_cert: &pki.ca_pem,
            identity: case.identity,
            auth,
        },
        case.network,
    );
    let base = TeapServerConfig {
        tls: tls_server_config(pki.server_chain.clone(), pki.server_key.clone_key()).unwrap(),
        authority_id: b"ragw-test-authority".to_vec(),
        limits: ConversationLimits {
            max_tls_fragment,
            ..ConversationLimits::default()
        },
        trusted_server_root_pkcs7: None,
    };
    Some(serve_and_run(
        &eapol_test,
        &config,
        TeapHandler::new(base, case.policy),
        case.args,
    ))
}

/// SUCCESS as eapol_test sees it; one accepted conversation; one MSK in eapol_test's peer, in
/// ragw's conversation and in the Access-Accept's MPPE keys.
fn assert_success_same_msk(result: &CaseResult) {
    let handler = result.handler();
    assert!(
        handler.discards.is_empty(),
        "discards: {:?}",
        handler.discards
    );
    assert!(
        result.run.succeeded(),
        "eapol_test did not succeed; server outcomes {:?}, questions {:?}",
        handler.outcomes,
        handler.questions
    );
    let [outcome] = handler.outcomes.as_slice() else {
        panic!("expected one finished conversation: {:?}", handler.outcomes);
    };
    assert!(outcome.accepted, "{outcome:?}");
    let server_msk = outcome.msk.expect("accepted without an MSK");
    let peer_msk = result
        .run
        .peer_msk()
        .expect("eapol_test printed no TEAP MSK");
    assert_eq!(
        peer_msk, server_msk,
        "eapol_test and ragw derived different MSKs"
    );
    assert_eq!(
        result
            .run
            .radius_msk()
            .expect("no MS-MPPE keys in the Access-Accept"),
        server_msk,
        "the Access-Accept's MPPE keys are not ragw's MSK"
    );
}

fn certificate_case<'a>(network: &'a [&'a str]) -> Case<'a> {
    Case {
        // Paths filled in by run_case from its PKI.
        auth: TeapPeerAuth::ClientCertificate {
            cert: Path::new(""),
            key: Path::new(""),
        },
        identity: DEVICE,
        policy: Policy {
            provisioning: None,
            inner_gtc: false,
        },
        network,
        args: &[],
    }
}

/// The cipher suite of the ServerHello eapol_test received (from its OpenSSL message dump):
/// handshake type 2, 3-octet length, version, 32-octet random, session id, then the suite.
fn negotiated_suite(log: &str) -> Option<u16> {
    let mut lines = log.lines();
    lines.find(|line| line.ends_with("(handshake/server hello)"))?;
    let hello = support::hexdump(lines.next()?, "OpenSSL: Message")?;
    let session_id_len = usize::from(*hello.get(38)?);
    let suite = hello.get(39 + session_id_len..41 + session_id_len)?;
    Some(u16::from_be_bytes([suite[0], suite[1]]))
}

#[test]
fn client_certificate_sha384_suite() {
    let Some(result) = run_case(
        certificate_case(&["openssl_ciphers=\"ECDHE-ECDSA-AES256-GCM-SHA384\""]),
        1024,
    ) else {
        return;
    };
    assert_success_same_msk(&result);
    assert!(result.handler().outcomes[0].peer_certificates > 0);
    // TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384: the TLS PRF and Compound-MAC use SHA-384.
    assert_eq!(negotiated_suite(&result.run.stdout), Some(0xc02c));
}

#[test]
fn client_certificate_sha256_suite() {
    let Some(result) = run_case(
        certificate_case(&["openssl_ciphers=\"ECDHE-ECDSA-AES128-GCM-SHA256\""]),
        1024,
    ) else {
        return;
    };
    assert_success_same_msk(&result);
    // TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256: the TLS PRF and Compound-MAC use SHA-256.
    assert_eq!(negotiated_suite(&result.run.stdout), Some(0xc02b));
}

#[test]
fn basic_password_auth_accepted() {
    let Some(result) = run_case(
        Case {
            auth: TeapPeerAuth::BasicPassword { password: PASSWORD },
            identity: USER,
            policy: Policy {
                provisioning: None,
                inner_gtc: false,
            },
            network: &[],
            args: &[],
        },
        1024,
    ) else {
        return;
    };
    assert_success_same_msk(&result);
    assert!(
        result
            .handler()
            .questions
            .iter()
            .any(|q| q.starts_with("CheckPassword")),
        "{:?}",
        result.handler().questions
    );
}

#[test]
fn wrong_password_rejected() {
    let Some(result) = run_case(
        Case {
            auth: TeapPeerAuth::BasicPassword {
                password: "wrong horse",
            },
            identity: USER,
            policy: Policy {
                provisioning: None,
                inner_gtc: false,
            },
            network: &[],
            args: &[],
        },
        1024,
    ) else {
        return;
    };
    assert!(!result.run.succeeded(), "a wrong password was accepted");
    assert!(result.run.stdout.contains("Access-Reject"));
    let [outcome] = result.handler().outcomes.as_slice() else {
        panic!(
            "expected one finished conversation: {:?}",
            result.handler().outcomes
        );
    };
    assert!(!outcome.accepted && outcome.msk.is_none(), "{outcome:?}");
    assert!(outcome.reason.contains("wrong password"), "{outcome:?}");
    assert_eq!(outcome.error_code, Some(BAD_CREDENTIALS));
}

#[test]
fn small_framed_mtu_fragments_both_ways() {
    const MTU: usize = 300;
    // A client certificate makes the peer's second flight long enough to fragment.
    let mut case = certificate_case(&["fragment_size=200"]);
    case.args = &["-N12:d:300"];
    let Some(result) = run_case(case, 1024) else {
        return;
    };
    assert_success_same_msk(&result);
    let log = &result.run.stdout;
    assert!(
        log.contains("more fragments will follow"),
        "eapol_test did not fragment its messages"
    );
    assert!(
        log.contains("SSL: Building ACK"),
        "eapol_test acknowledged no fragment of ours"
    );
    assert!(
        result.handler().longest_request <= MTU,
        "an EAP-Request of {} octets exceeds the Framed-MTU {MTU}",
        result.handler().longest_request
    );
}

#[test]
fn optional_provisioning_offer_does_not_break_hostap() {
    // hostap 2.10 has no PKCS#10 support: it must ignore the bundled offer and still succeed.
    let mut case = certificate_case(&[]);
    case.policy = Policy {
        provisioning: Some(Provisioning {
            // CsrAttrs: SEQUENCE { challengePassword OID }.
            csr_attributes_der: vec![
                0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x07,
            ],
            required: false,
        }),
        inner_gtc: false,
    };
    let Some(result) = run_case(case, 1024) else {
        return;
    };
    assert_success_same_msk(&result);
    assert!(
        result.run.stdout.contains("Request-Action"),
        "eapol_test saw no Request-Action"
    );
    assert!(
        !result
            .handler()
            .questions
            .iter()
            .any(|q| q.starts_with("Enroll")),
        "hostap sent a CSR?"
    );
}

#[test]
fn optional_provisioning_offer_after_password_does_not_break_hostap() {
    let Some(result) = run_case(
        Case {
            auth: TeapPeerAuth::BasicPassword { password: PASSWORD },
            identity: USER,
            policy: Policy {
                provisioning: Some(Provisioning {
                    csr_attributes_der: vec![0x30, 0x00],
                    required: false,
                }),
                inner_gtc: false,
            },
            network: &[],
            args: &[],
        },
        1024,
    ) else {
        return;
    };
    assert_success_same_msk(&result);
}

fn gtc_case<'a>(method: &'a str, password: &'a str) -> Case<'a> {
    Case {
        auth: TeapPeerAuth::InnerEap { method, password },
        identity: USER,
        policy: Policy {
            provisioning: None,
            inner_gtc: true,
        },
        network: &[],
        args: &[],
    }
}

#[test]
fn inner_eap_gtc_accepted() {
    let Some(result) = run_case(gtc_case("GTC", PASSWORD), 1024) else {
        return;
    };
    // The MSK from S-IMCK[1] of the zero-IMSK round: eapol_test's, ragw's and the MPPE keys'.
    assert_success_same_msk(&result);
    let questions = &result.handler().questions;
    assert!(
        questions
            .iter()
            .any(|q| q.starts_with("CheckPassword") && q.contains(USER)),
        "{questions:?}"
    );
    assert!(
        result
            .run
            .stdout
            .contains("EAP-TEAP: Selected Phase 2 EAP vendor 0 method 6"),
        "eapol_test did not run inner EAP-GTC"
    );
}

#[test]
fn inner_eap_gtc_wrong_password_rejected() {
    let Some(result) = run_case(gtc_case("GTC", "wrong horse"), 1024) else {
        return;
    };
    assert!(!result.run.succeeded(), "a wrong password was accepted");
    assert!(result.run.stdout.contains("Access-Reject"));
    let [outcome] = result.handler().outcomes.as_slice() else {
        panic!(
            "expected one finished conversation: {:?}",
            result.handler().outcomes
        );
    };
    assert!(!outcome.accepted && outcome.msk.is_none(), "{outcome:?}");
    assert!(outcome.reason.contains("wrong password"), "{outcome:?}");
    assert_eq!(outcome.error_code, Some(BAD_CREDENTIALS));
}

#[test]
fn inner_eap_gtc_refused_by_a_peer_configured_for_another_method() {
    // phase2="auth=MSCHAPV2": hostap answers the EAP-Request/GTC with a legacy Nak.
    let Some(result) = run_case(gtc_case("MSCHAPV2", PASSWORD), 1024) else {
        return;
    };
    assert!(!result.run.succeeded());
    let [outcome] = result.handler().outcomes.as_slice() else {
        panic!(
            "expected one finished conversation: {:?}",
            result.handler().outcomes
        );
    };
    assert!(!outcome.accepted, "{outcome:?}");
    assert_eq!(
        outcome.error_code,
        Some(ragw_teap::tlv::error_code::INNER_METHOD_NOT_SUPPORTED),
        "{outcome:?}"
    );
    assert!(outcome.reason.contains("legacy Nak"), "{outcome:?}");
    assert!(
        !result
            .handler()
            .questions
            .iter()
            .any(|q| q.starts_with("CheckPassword"))
    );
}
