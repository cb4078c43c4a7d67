//! The gateway driven directly (no sockets): a scripted TEAP conversation stands in for
//! `teap_server`, a recording fake for the registrar.

use super::*;
use crate::config::{RadiusClient, TeapLimits};
use crate::radius_server::IpPrefix;
use crate::radius_server::udp::{Completions, completion_channel};
use ragw_device_auth::{
    BasicAuth, CertIdentityField, ClientCertAuth, SERIAL_NUMBER, Secret as PasswordSecret,
};
use std::sync::atomic::{AtomicU64, Ordering};

const RADIUS_SECRET: &[u8] = b"nas-secret-for-tests";
const MSK: [u8; 64] = [0x5a; 64];

// ---------------------------------------------------------------------------------------------
// A scripted conversation: what the "peer" does is fixed by the script; each EAP-Response the
// test sends advances it one step.

#[derive(Clone, Default)]
struct Script {
    peer_certificates: Vec<Vec<u8>>,
    password: Option<(Vec<u8>, Vec<u8>)>,
    csr: Option<Vec<u8>>,
}

#[derive(Clone, Default)]
struct Record {
    answers: Arc<Mutex<Vec<Answer>>>,
    fragments: Arc<Mutex<Vec<Option<usize>>>>,
    outer_identities: Arc<Mutex<Vec<Vec<u8>>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Started,
    AskedPassword,
    AskedCsr,
    SentCertificate,
    Done,
}

struct ScriptedConversation {
    script: Script,
    record: Record,
    identity: Vec<u8>,
    phase: Phase,
    identifier: u8,
}

struct ScriptedEngine {
    script: Script,
    record: Record,
}

impl TeapEngine for ScriptedEngine {
    type Conversation = ScriptedConversation;

    fn start(
        &self,
        identifier: u8,
        outer_identity: Vec<u8>,
        max_tls_fragment: Option<usize>,
    ) -> Result<(ScriptedConversation, Vec<u8>), String> {
        self.record.fragments.lock().unwrap().push(max_tls_fragment);
        self.record
            .outer_identities
            .lock()
            .unwrap()
            .push(outer_identity.clone());
        let conversation = ScriptedConversation {
            script: self.script.clone(),
            record: self.record.clone(),
            identity: outer_identity,
            phase: Phase::Started,
            identifier,
        };
        Ok((conversation, teap_request(identifier)))
    }
}

/// An EAP-Request/TEAP carrying only flags (the content does not matter to the gateway).
fn teap_request(identifier: u8) -> Vec<u8> {
    vec![1, identifier, 0, 6, 55, 0x01]
}

impl ScriptedConversation {
    fn send(&mut self) -> Next {
        self.identifier = self.identifier.wrapping_add(1);
        Next::Send(teap_request(self.identifier))
    }

    fn finish(&mut self, accepted: bool, reason: &str, error_code: Option<u32>) -> Next {
        self.phase = Phase::Done;
        Next::Finished(Finish {
            accepted,
            eap: vec![if accepted { 3 } else { 4 }, self.identifier, 0, 4],
            keys: accepted.then(|| SessionKeys {
                msk: MSK,
                emsk: [0; 64],
            }),
            reason: reason.into(),
            error_code,
            peer_certificates: self.script.peer_certificates.clone(),
        })
    }
}

impl TeapConversation for ScriptedConversation {
    fn receive(&mut self, _eap_response: &[u8]) -> Next {
        match self.phase {
            Phase::Started => Next::Ask(Question::TunnelUp {
                peer_certificates: self.script.peer_certificates.clone(),
            }),
            Phase::AskedPassword => match self.script.password.clone() {
                Some((username, password)) => Next::Ask(Question::CheckPassword {
                    username,
                    password: zeroize::Zeroizing::new(password),
                }),
                None => self.finish(false, "peer gave no password", None),
            },
            Phase::AskedCsr => match self.script.csr.clone() {
                Some(csr_der) => Next::Ask(Question::Enroll { csr_der }),
                None => self.finish(true, "", None),
            },
            Phase::SentCertificate => self.finish(true, "", None),
            Phase::Done => Next::Discard("conversation over".into()),
        }
    }

    fn answer(&mut self, answer: Answer) -> Next {
        self.record.answers.lock().unwrap().push(answer.clone());
        match answer {
            Answer::Authenticated { provisioning: None } => self.finish(true, "", None),
            Answer::Authenticated {
                provisioning: Some(_),
            } => {
                self.phase = Phase::AskedCsr;
                self.send()
            }
            // The script's password arrives as CheckPassword whichever method carried it.
            Answer::RequirePassword { .. } | Answer::RequireInnerEap { .. } => {
                self.phase = Phase::AskedPassword;
                self.send()
            }
            Answer::Reject { error_code, reason } | Answer::EnrollFailed { error_code, reason } => {
                self.finish(false, &reason, Some(error_code))
            }
            Answer::Issued { .. } => {
                self.phase = Phase::SentCertificate;
                self.send()
            }
        }
    }

    fn outer_identity(&self) -> &[u8] {
        &self.identity
    }
}

// ---------------------------------------------------------------------------------------------
// The registrar fake.

#[derive(Default)]
struct FakeRegistrar {
    assignments: Mutex<Vec<pb::GetAssignmentRequest>>,
    enrolls: Mutex<Vec<pb::EnrollRequest>>,
    waits: Mutex<Vec<pb::WaitEnrollmentRequest>>,
    refusals: Mutex<Vec<pb::RecordRefusalRequest>>,
    accesses: Mutex<Vec<pb::RecordAccessRequest>>,
    /// State the enrollment has after Enroll and after each wait.
    enroll_state: Mutex<Vec<pb::EnrollmentState>>,
    enroll_error: Mutex<Option<Status>>,
    issued_chain: Vec<Vec<u8>>,
    /// Serial numbers whose ragw-issued certificate the registrar recognises (via the DER).
    known_certificate: Option<Vec<u8>>,
}

impl FakeRegistrar {
    fn enrollment(&self) -> pb::Enrollment {
        let mut states = self.enroll_state.lock().unwrap();
        let state = if states.len() > 1 {
            states.remove(0)
        } else {
            states
                .first()
                .copied()
                .unwrap_or(pb::EnrollmentState::Issued)
        };
        pb::Enrollment {
            id: "enr-1".into(),
            state: state as i32,
            certificate_chain: if state == pb::EnrollmentState::Issued {
                self.issued_chain.clone()
            } else {
                Vec::new()
            },
            ..Default::default()
        }
    }
}

impl Registrar for FakeRegistrar {
    fn get_assignment(
        &self,
        request: pb::GetAssignmentRequest,
    ) -> RegistrarFuture<'_, pb::Assignment> {
        let known = request.current_certificate_der.is_empty()
            || self.known_certificate.as_ref() == Some(&request.current_certificate_der);
        self.assignments.lock().unwrap().push(request);
        Box::pin(async move {
            if !known {
                return Err(Status::permission_denied("not a certificate ragw issued"));
            }
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

    fn enroll(&self, request: pb::EnrollRequest) -> RegistrarFuture<'_, pb::EnrollResponse> {
        self.enrolls.lock().unwrap().push(request);
        let error = self.enroll_error.lock().unwrap().take();
        let enrollment = self.enrollment();
        Box::pin(async move {
            match error {
                Some(status) => Err(status),
                None => Ok(pb::EnrollResponse {
                    enrollment: Some(enrollment),
                    existing: false,
                }),
            }
        })
    }

    fn wait_enrollment(
        &self,
        request: pb::WaitEnrollmentRequest,
    ) -> RegistrarFuture<'_, pb::Enrollment> {
        self.waits.lock().unwrap().push(request);
        let enrollment = self.enrollment();
        Box::pin(async move { Ok(enrollment) })
    }

    fn record_refusal(&self, request: pb::RecordRefusalRequest) -> RegistrarFuture<'_, ()> {
        self.refusals.lock().unwrap().push(request);
        Box::pin(async { Ok(()) })
    }

    fn record_access(&self, request: pb::RecordAccessRequest) -> RegistrarFuture<'_, ()> {
        self.accesses.lock().unwrap().push(request);
        Box::pin(async { Ok(()) })
    }
}

// ---------------------------------------------------------------------------------------------
// Harness.

struct Harness {
    gateway: TeapGateway<ScriptedEngine>,
    completions: Completions,
    registrar: Arc<FakeRegistrar>,
    record: Record,
    now: Arc<AtomicU64>,
    client: Client,
    next_authenticator: u8,
}

fn label_with_password(name: &str) -> TeapLabel {
    let mut label = TeapLabel::new(name, "iot");
    let mut basic = BasicAuth::new(IdentityKind::SerialNumber);
    basic.bootstrap = Some(PasswordSecret::from_plain("boot-secret"));
    label.basic = Some(basic);
    label
}

fn config(labels: Vec<TeapLabel>) -> TeapConfig {
    TeapConfig {
        clients: vec![RadiusClient {
            name: "nas1".into(),
            prefix: IpPrefix::single("192.0.2.10".parse().unwrap()),
            secret: Secret::new(RADIUS_SECRET.to_vec()).unwrap(),
        }],
        default_label: labels.first().map(|l| l.label.clone()),
        labels,
        limits: TeapLimits {
            max_conversations: 2,
            ..TeapLimits::default()
        },
        authority_id: b"ragw-test".to_vec(),
    }
}

impl Harness {
    fn new(config: TeapConfig, script: Script, registrar: FakeRegistrar) -> Harness {
        let (completer, completions) = completion_channel();
        let registrar = Arc::new(registrar);
        let record = Record::default();
        let now = Arc::new(AtomicU64::new(0));
        let base = Instant::now();
        let clock_now = Arc::clone(&now);
        let counter = Arc::new(AtomicU64::new(1));
        let gateway = TeapGateway::new(
            config,
            ScriptedEngine {
                script,
                record: record.clone(),
            },
            Arc::clone(&registrar) as Arc<dyn Registrar>,
            completer,
            TeapMetrics::new(),
            Arc::new(move |buf: &mut [u8]| {
                // Distinct, predictable octets: enough for State uniqueness and salts.
                let n = counter.fetch_add(1, Ordering::Relaxed).to_be_bytes();
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = n[i % 8] ^ (i as u8);
                }
            }),
            Arc::new(move || base + Duration::from_secs(clock_now.load(Ordering::Relaxed))),
        )
        .unwrap();
        Harness {
            gateway,
            completions,
            registrar,
            record,
            now,
            client: Client {
                name: "nas1".into(),
                secret: Secret::new(RADIUS_SECRET.to_vec()).unwrap(),
            },
            next_authenticator: 1,
        }
    }

    fn request(&mut self, eap: &[u8], state: Option<&[u8]>) -> (RequestKey, Packet) {
        let authenticator = [self.next_authenticator; 16];
        self.next_authenticator += 1;
        let mut packet = Packet {
            code: Code::AccessRequest,
            identifier: self.next_authenticator,
            authenticator,
            attributes: Vec::new(),
        };
        packet.push(Attribute::new(attr::USER_NAME, b"anonymous@iot".to_vec()));
        packet.push(Attribute::new(attr::NAS_IDENTIFIER, b"switch-7".to_vec()));
        packet.push(Attribute::new(attr::NAS_IP_ADDRESS, vec![192, 0, 2, 10]));
        packet.push(Attribute::new(
            attr::CALLING_STATION_ID,
            b"02-00-00-00-00-01".to_vec(),
        ));
        for a in radius::eap_message_attributes(eap) {
            packet.push(a);
        }
        if let Some(state) = state {
            packet.push(Attribute::new(attr::STATE, state.to_vec()));
        }
        let key = RequestKey {
            source: "192.0.2.10:1645".parse().unwrap(),
            identifier: packet.identifier,
            authenticator,
        };
        (key, packet)
    }

    /// Sends one Access-Request and returns the reply, waiting for a deferred one.
    async fn exchange(&mut self, eap: &[u8], state: Option<&[u8]>) -> (Reply, Packet) {
        let (key, packet) = self.request(eap, state);
        let client = self.client.clone();
        match self.gateway.handle(key, &client, &packet) {
            Handled::Reply(reply) => (reply, packet),
            Handled::Deferred => {
                let completion = self.completions.recv().await.unwrap();
                assert_eq!(completion.key, key);
                (completion.reply, packet)
            }
            Handled::Discard => panic!("discarded"),
        }
    }

    fn answers(&self) -> Vec<Answer> {
        self.record.answers.lock().unwrap().clone()
    }

    /// Lets spawned audit tasks run.
    async fn settle(&self) {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }
}

fn identity_response(identifier: u8, identity: &[u8]) -> Vec<u8> {
    let mut eap = vec![2, identifier, 0, 0, 1];
    eap.extend_from_slice(identity);
    let len = eap.len() as u16;
    eap[2..4].copy_from_slice(&len.to_be_bytes());
    eap
}

fn teap_response(identifier: u8) -> Vec<u8> {
    vec![2, identifier, 0, 6, 55, 0x01]
}

fn state_of(reply: &Reply) -> Vec<u8> {
    assert_eq!(reply.code, Code::AccessChallenge);
    reply
        .attributes
        .iter()
        .find(|a| a.attribute_type == attr::STATE)
        .map(|a| a.value.clone())
        .expect("a State")
}

fn attribute(reply: &Reply, t: u8) -> Option<Vec<u8>> {
    reply
        .attributes
        .iter()
        .find(|a| a.attribute_type == t)
        .map(|a| a.value.clone())
}

fn eap_of(reply: &Reply) -> Vec<u8> {
    reply
        .attributes
        .iter()
        .filter(|a| a.attribute_type == attr::EAP_MESSAGE)
        .flat_map(|a| a.value.clone())
        .collect()
}

fn self_signed(serial: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["device.example".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]), serial);
    (params.self_signed(&key).unwrap(), key)
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn password_then_enrollment_ends_in_accept_with_keys_and_audit() {
    let (issued, _) = self_signed("issued");
    let registrar = FakeRegistrar {
        enroll_state: Mutex::new(vec![
            pb::EnrollmentState::Queued,
            pb::EnrollmentState::Issued,
        ]),
        issued_chain: vec![issued.der().to_vec()],
        ..Default::default()
    };
    let script = Script {
        password: Some((b"SN-0042".to_vec(), b"boot-secret".to_vec())),
        csr: Some(b"csr-der".to_vec()),
        ..Default::default()
    };
    let mut h = Harness::new(config(vec![label_with_password("iot")]), script, registrar);

    let (start, _) = h
        .exchange(&identity_response(7, b"anonymous@iot"), None)
        .await;
    let state = state_of(&start);
    assert_eq!(state.len(), STATE_LEN);
    assert_eq!(
        eap_of(&start),
        teap_request(8),
        "TEAP Start with the next identifier"
    );
    assert_eq!(
        h.record.outer_identities.lock().unwrap()[0],
        b"anonymous@iot"
    );
    assert_eq!(h.gateway.open_conversations(), 1);

    // TunnelUp without a certificate: the label takes passwords.
    let (r, _) = h.exchange(&teap_response(8), Some(&state)).await;
    assert_eq!(state_of(&r), state);
    // CheckPassword: right → assignment → provisioning offered with CSR attributes.
    let (r, _) = h.exchange(&teap_response(9), Some(&state)).await;
    assert_eq!(state_of(&r), state);
    // Enroll: queued, then issued during the hold.
    let (r, _) = h.exchange(&teap_response(10), Some(&state)).await;
    assert_eq!(state_of(&r), state);
    let (accept, request) = h.exchange(&teap_response(11), Some(&state)).await;
    assert_eq!(accept.code, Code::AccessAccept);
    assert_eq!(eap_of(&accept)[0], 3, "EAP-Success");
    assert_eq!(attribute(&accept, attr::USER_NAME).unwrap(), b"SN-0042");

    // MS-MPPE-Recv-Key / Send-Key hide the two MSK halves (RFC 2548 with this request).
    let mut keys = Vec::new();
    for a in accept
        .attributes
        .iter()
        .filter(|a| a.attribute_type == attr::VENDOR_SPECIFIC)
    {
        let vsa = a.as_vendor_specific().unwrap().unwrap();
        assert_eq!(vsa.vendor_id, radius::VENDOR_MICROSOFT);
        for (t, v) in vsa.sub_attributes {
            keys.push((
                t,
                radius::decrypt_mppe_key(v, RADIUS_SECRET, &request.authenticator).unwrap(),
            ));
        }
    }
    keys.sort();
    assert_eq!(
        keys,
        vec![
            (radius::MS_MPPE_SEND_KEY, MSK[32..].to_vec()),
            (radius::MS_MPPE_RECV_KEY, MSK[..32].to_vec()),
        ]
    );

    let answers = h.answers();
    assert_eq!(answers.len(), 3);
    assert!(matches!(answers[0], Answer::RequirePassword { .. }));
    let Answer::Authenticated {
        provisioning: Some(p),
    } = &answers[1]
    else {
        panic!("{:?}", answers[1]);
    };
    assert!(!p.required);
    let attrs = ragw_pki::csrattrs::parse_csr_attrs(&p.csr_attributes_der).unwrap();
    assert!(!attrs.is_empty());
    let Answer::Issued { pkcs7_der } = &answers[2] else {
        panic!("{:?}", answers[2]);
    };
    assert_eq!(*pkcs7_der, certs_only(&[issued.der().to_vec()]).unwrap());

    let enroll = h.registrar.enrolls.lock().unwrap()[0].clone();
    assert_eq!(enroll.protocol, pb::Protocol::Teap as i32);
    assert_eq!(enroll.profile, "iot");
    assert_eq!(enroll.csr_der, b"csr-der");
    assert_eq!(enroll.device.unwrap().value, "SN-0042");
    let wait = h.registrar.waits.lock().unwrap()[0].clone();
    assert_eq!(wait.id, "enr-1");
    assert!(wait.timeout_millis > 0 && wait.timeout_millis <= 20_000);

    h.settle().await;
    let access = h.registrar.accesses.lock().unwrap()[0].clone();
    assert_eq!(access.label, "iot");
    assert_eq!(access.calling_station_id, "02-00-00-00-00-01");
    assert!(
        access.nas.contains("switch-7") && access.nas.contains("192.0.2.10"),
        "{}",
        access.nas
    );
    assert_eq!(access.client_address, "192.0.2.10:1645");
    assert!(
        access.reason.contains("password") && access.reason.contains("issued"),
        "{}",
        access.reason
    );
    assert_eq!(access.enrollment_id, "enr-1");
    assert_eq!(h.gateway.open_conversations(), 0);

    // The conversation is over: its State is refused now.
    let (late, _) = h.exchange(&teap_response(12), Some(&state)).await;
    assert_eq!(late.code, Code::AccessReject);
    assert_eq!(eap_of(&late), vec![4, 12, 0, 4]);
}

#[tokio::test]
async fn label_with_eap_gtc_asks_for_the_password_by_inner_gtc_and_checks_it_alike() {
    let script = Script {
        password: Some((b"SN-0042".to_vec(), b"boot-secret".to_vec())),
        ..Default::default()
    };
    let mut label = label_with_password("iot");
    label.password_method = PasswordMethod::EapGtc;
    label.certificate = CertificateProvisioning::Never;
    let mut h = Harness::new(config(vec![label]), script, FakeRegistrar::default());
    let (start, _) = h
        .exchange(&identity_response(1, b"anonymous@iot"), None)
        .await;
    let state = state_of(&start);
    h.exchange(&teap_response(2), Some(&state)).await;
    let (accept, _) = h.exchange(&teap_response(3), Some(&state)).await;
    assert_eq!(accept.code, Code::AccessAccept);
    assert_eq!(attribute(&accept, attr::USER_NAME).unwrap(), b"SN-0042");
    let answers = h.answers();
    assert_eq!(
        answers[0],
        Answer::RequireInnerEap {
            method: InnerMethod::Gtc,
            prompt: b"Password".to_vec(),
        }
    );
    assert_eq!(answers[1], Answer::Authenticated { provisioning: None });
    h.settle().await;
    let access = h.registrar.accesses.lock().unwrap()[0].clone();
    assert!(access.reason.contains("EAP-GTC"), "{}", access.reason);
}

#[tokio::test]
async fn wrong_password_is_rejected_with_eap_failure_and_audited() {
    let script = Script {
        password: Some((b"SN-1".to_vec(), b"guess".to_vec())),
        ..Default::default()
    };
    let mut h = Harness::new(
        config(vec![label_with_password("iot")]),
        script,
        FakeRegistrar::default(),
    );
    let (start, _) = h
        .exchange(&identity_response(1, b"anonymous@iot"), None)
        .await;
    let state = state_of(&start);
    h.exchange(&teap_response(2), Some(&state)).await;
    let (reject, _) = h.exchange(&teap_response(3), Some(&state)).await;
    assert_eq!(reject.code, Code::AccessReject);
    assert_eq!(eap_of(&reject)[0], 4, "EAP-Failure");
    assert!(matches!(
        h.answers().last(),
        Some(Answer::Reject {
            error_code: UNSPECIFIED_AUTHENTICATION_FAILURE,
            ..
        })
    ));
    h.settle().await;
    let refusal = h.registrar.refusals.lock().unwrap()[0].clone();
    assert_eq!(refusal.protocol, pb::Protocol::Teap as i32);
    assert!(
        refusal.reason.contains("wrong user name or password"),
        "{}",
        refusal.reason
    );
    assert_eq!(refusal.status, UNSPECIFIED_AUTHENTICATION_FAILURE);
    assert_eq!(refusal.calling_station_id, "02-00-00-00-00-01");
    assert!(h.registrar.accesses.lock().unwrap().is_empty());
    assert!(h.registrar.enrolls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn idevid_chained_to_the_anchors_authenticates_without_password() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 5]), "IDEV-77");
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();

    let mut label = TeapLabel::new("factory", "iot");
    label.client_cert = Some(ClientCertAuth {
        trust_anchors: vec![ca.der().clone()],
        identity: CertIdentityField::Subject(SERIAL_NUMBER),
        identity_kind: IdentityKind::IdevidSerial,
    });
    label.certificate = CertificateProvisioning::Never;
    let script = Script {
        peer_certificates: vec![leaf.der().to_vec()],
        ..Default::default()
    };
    let mut h = Harness::new(
        config(vec![label.clone()]),
        script,
        FakeRegistrar::default(),
    );
    let (start, _) = h
        .exchange(&identity_response(1, b"dev@factory"), None)
        .await;
    let (accept, _) = h.exchange(&teap_response(2), Some(&state_of(&start))).await;
    assert_eq!(accept.code, Code::AccessAccept);
    assert_eq!(attribute(&accept, attr::USER_NAME).unwrap(), b"IDEV-77");
    assert_eq!(
        h.answers(),
        vec![Answer::Authenticated { provisioning: None }]
    );
    assert!(
        h.registrar.assignments.lock().unwrap().is_empty(),
        "no provisioning, no assignment"
    );

    // A certificate from another maker, on a label without passwords: refused with 1020 after
    // the registrar did not recognise it as one ragw issued.
    let (stranger, _) = self_signed("X-1");
    let script = Script {
        peer_certificates: vec![stranger.der().to_vec()],
        ..Default::default()
    };
    let mut h = Harness::new(config(vec![label]), script, FakeRegistrar::default());
    let (start, _) = h
        .exchange(&identity_response(1, b"dev@factory"), None)
        .await;
    let (reject, _) = h.exchange(&teap_response(2), Some(&state_of(&start))).await;
    assert_eq!(reject.code, Code::AccessReject);
    let Some(Answer::Reject { error_code, reason }) = h.answers().last().cloned() else {
        panic!("{:?}", h.answers());
    };
    assert_eq!(error_code, error_code::CLIENT_CERT_REJECTED);
    assert!(
        reason.contains("not issued by") && reason.contains("ragw issued"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_certificate_ragw_issued_authenticates_through_the_registrar() {
    let (mine, _) = self_signed("ragw-issued");
    let registrar = FakeRegistrar {
        known_certificate: Some(mine.der().to_vec()),
        ..Default::default()
    };
    let mut label = label_with_password("iot");
    label.certificate = CertificateProvisioning::Required;
    let script = Script {
        peer_certificates: vec![mine.der().to_vec()],
        ..Default::default()
    };
    let mut h = Harness::new(config(vec![label]), script, registrar);
    let (start, _) = h.exchange(&identity_response(1, b"x@iot"), None).await;
    let state = state_of(&start);
    let (r, _) = h.exchange(&teap_response(2), Some(&state)).await;
    assert_eq!(r.code, Code::AccessChallenge);
    let Some(Answer::Authenticated {
        provisioning: Some(p),
    }) = h.answers().first().cloned()
    else {
        panic!("{:?}", h.answers());
    };
    assert!(p.required);
    let asked = h.registrar.assignments.lock().unwrap().clone();
    assert_eq!(
        asked.len(),
        1,
        "the assignment doubles as the certificate check"
    );
    assert_eq!(asked[0].current_certificate_der, mine.der().to_vec());
    assert!(asked[0].device.is_none());
}

#[tokio::test]
async fn enrollment_pending_or_refused_fails_with_the_mapped_code() {
    let script = Script {
        password: Some((b"SN-1".to_vec(), b"boot-secret".to_vec())),
        csr: Some(b"csr".to_vec()),
        ..Default::default()
    };
    let run = |registrar: FakeRegistrar| {
        let script = script.clone();
        async move {
            let mut h = Harness::new(config(vec![label_with_password("iot")]), script, registrar);
            let (start, _) = h.exchange(&identity_response(1, b"a@iot"), None).await;
            let state = state_of(&start);
            for id in 2..5 {
                h.exchange(&teap_response(id), Some(&state)).await;
            }
            h.answers().last().cloned().unwrap()
        }
    };
    let pending = run(FakeRegistrar {
        enroll_state: Mutex::new(vec![pb::EnrollmentState::AwaitingApproval]),
        ..Default::default()
    })
    .await;
    let Answer::EnrollFailed { error_code, reason } = pending else {
        panic!("{pending:?}");
    };
    assert_eq!(error_code, error_code::GENERAL_PKI_ERROR);
    assert!(
        reason.contains("awaiting approval") && reason.contains("same CSR"),
        "{reason}"
    );

    let refused = FakeRegistrar::default();
    *refused.enroll_error.lock().unwrap() = Some({
        let mut s = Status::invalid_argument("csr_der: the CSR asks for evil.example");
        s.metadata_mut()
            .insert("ragw-error-class", "bad_identity".parse().unwrap());
        s
    });
    let answer = run(refused).await;
    assert_eq!(
        answer,
        Answer::EnrollFailed {
            error_code: error_code::BAD_IDENTITY_IN_CSR,
            reason: "the CSR asks for evil.example".into()
        }
    );

    let down = FakeRegistrar::default();
    *down.enroll_error.lock().unwrap() = Some(Status::unavailable("connection refused"));
    let Answer::EnrollFailed { error_code, reason } = run(down).await else {
        panic!();
    };
    assert_eq!(error_code, error_code::INTERNAL_CA_ERROR);
    assert!(reason.contains("try again later"), "{reason}");

    let failed = FakeRegistrar {
        enroll_state: Mutex::new(vec![pb::EnrollmentState::Failed]),
        ..Default::default()
    };
    let Answer::EnrollFailed { error_code, .. } = run(failed).await else {
        panic!();
    };
    assert_eq!(
        error_code,
        error_code::GENERAL_PKI_ERROR,
        "no failure class given"
    );
}

#[tokio::test]
async fn conversations_are_bounded_expire_and_discard_while_busy() {
    let script = Script {
        password: Some((b"SN-1".to_vec(), b"boot-secret".to_vec())),
        ..Default::default()
    };
    let mut h = Harness::new(
        config(vec![label_with_password("iot")]),
        script,
        FakeRegistrar::default(),
    );
    let (a, _) = h.exchange(&identity_response(1, b"a@iot"), None).await;
    let (b, _) = h.exchange(&identity_response(1, b"b@iot"), None).await;
    assert_ne!(state_of(&a), state_of(&b));
    // max_conversations = 2.
    let (full, _) = h.exchange(&identity_response(1, b"c@iot"), None).await;
    assert_eq!(full.code, Code::AccessReject);
    let message = String::from_utf8(attribute(&full, attr::REPLY_MESSAGE).unwrap()).unwrap();
    assert!(message.contains("max_conversations"), "{message}");

    // While a step is deferred, a new packet for the conversation is discarded.
    let state = state_of(&a);
    let (key, packet) = h.request(&teap_response(2), Some(&state));
    let client = h.client.clone();
    assert_eq!(h.gateway.handle(key, &client, &packet), Handled::Deferred);
    let (key2, packet2) = h.request(&teap_response(2), Some(&state));
    assert_eq!(h.gateway.handle(key2, &client, &packet2), Handled::Discard);
    let done = h.completions.recv().await.unwrap();
    assert_eq!(done.key, key);

    // Past the lifetime both expire: their States are refused and a new one fits.
    h.now.store(
        TeapLimits::default().conversation_lifetime.as_secs() + 1,
        Ordering::Relaxed,
    );
    let (expired, _) = h.exchange(&teap_response(3), Some(&state)).await;
    assert_eq!(expired.code, Code::AccessReject);
    assert_eq!(h.gateway.open_conversations(), 0);
    let (again, _) = h.exchange(&identity_response(1, b"c@iot"), None).await;
    assert_eq!(again.code, Code::AccessChallenge);
}

#[tokio::test]
async fn requests_outside_a_conversation_are_refused_and_labels_follow_the_realm() {
    let mut h = Harness::new(
        config(vec![label_with_password("iot"), label_with_password("lab")]),
        Script::default(),
        FakeRegistrar::default(),
    );
    // Not an Identity and no State.
    let (r, _) = h.exchange(&teap_response(5), None).await;
    assert_eq!(r.code, Code::AccessReject);
    assert_eq!(eap_of(&r), vec![4, 5, 0, 4]);
    // No EAP-Message at all.
    let (key, mut packet) = h.request(&teap_response(5), None);
    packet
        .attributes
        .retain(|a| a.attribute_type != attr::EAP_MESSAGE);
    let client = h.client.clone();
    let Handled::Reply(r) = h.gateway.handle(key, &client, &packet) else {
        panic!();
    };
    assert_eq!(r.code, Code::AccessReject);
    assert!(eap_of(&r).is_empty());
    // A State that was never issued.
    let (r, _) = h.exchange(&teap_response(6), Some(b"forged-state")).await;
    assert_eq!(r.code, Code::AccessReject);

    let (r, _) = h
        .exchange(&identity_response(1, b"anonymous@lab"), None)
        .await;
    assert_eq!(r.code, Code::AccessChallenge);
    h.settle().await;
    let refusals = h.registrar.refusals.lock().unwrap().clone();
    assert_eq!(refusals.len(), 3);
    assert!(refusals.iter().all(|r| r.operation == "radius"));
    assert!(
        refusals[2].reason.contains("State"),
        "{}",
        refusals[2].reason
    );

    // Without a default label, an unknown realm is refused.
    let mut cfg = config(vec![label_with_password("iot")]);
    cfg.default_label = None;
    let mut h = Harness::new(cfg, Script::default(), FakeRegistrar::default());
    let (r, _) = h
        .exchange(&identity_response(1, b"anonymous@example.com"), None)
        .await;
    assert_eq!(r.code, Code::AccessReject);
    let message = String::from_utf8(attribute(&r, attr::REPLY_MESSAGE).unwrap()).unwrap();
    assert!(message.contains("names no configured label"), "{message}");
}

#[test]
fn reply_message_is_cut_at_a_character_boundary() {
    let long = "é".repeat(200);
    let cut = truncate_bytes(long.as_bytes(), MAX_REPLY_MESSAGE);
    assert!(cut.len() <= MAX_REPLY_MESSAGE);
    assert!(std::str::from_utf8(cut).is_ok());
}

#[tokio::test]
async fn guessing_a_user_name_is_slowed_as_in_est() {
    let mut h = Harness::new(
        config(vec![label_with_password("iot")]),
        Script {
            password: Some((b"SN-7".to_vec(), b"guess".to_vec())),
            ..Default::default()
        },
        FakeRegistrar::default(),
    );
    async fn attempt(h: &mut Harness) -> Answer {
        let (start, _) = h.exchange(&identity_response(1, b"a@iot"), None).await;
        let state = state_of(&start);
        h.exchange(&teap_response(2), Some(&state)).await;
        h.exchange(&teap_response(3), Some(&state)).await;
        h.answers().last().cloned().unwrap()
    }
    let Answer::Reject { reason, .. } = attempt(&mut h).await else {
        panic!();
    };
    assert!(reason.contains("wrong user name or password"), "{reason}");
    // At once again: the name must wait (1 s after one failure), whatever the password.
    let Answer::Reject { reason, .. } = attempt(&mut h).await else {
        panic!();
    };
    assert!(
        reason.contains("not checked") && reason.contains("try again in 1 s"),
        "{reason}"
    );
    // After the wait the password is checked again (and is still wrong).
    h.now.store(2, Ordering::Relaxed);
    let Answer::Reject { reason, .. } = attempt(&mut h).await else {
        panic!();
    };
    assert!(reason.contains("wrong user name or password"), "{reason}");
}

#[tokio::test]
async fn framed_mtu_sizes_the_tls_fragments() {
    let mut h = Harness::new(
        config(vec![label_with_password("iot")]),
        Script::default(),
        FakeRegistrar::default(),
    );
    h.exchange(&identity_response(1, b"a@iot"), None).await;
    for (mtu, expected) in [(1400u32, 1390usize), (20, 64), (9000, 1400)] {
        let (key, mut packet) = h.request(&identity_response(1, b"b@iot"), None);
        packet.push(Attribute::new(attr::FRAMED_MTU, mtu.to_be_bytes().to_vec()));
        let client = h.client.clone();
        let Handled::Reply(reply) = h.gateway.handle(key, &client, &packet) else {
            panic!();
        };
        assert_eq!(reply.code, Code::AccessChallenge);
        assert_eq!(
            h.record.fragments.lock().unwrap().last(),
            Some(&Some(expected))
        );
        // Make room again (max_conversations = 2).
        let state = StateId::try_from(state_of(&reply).as_slice()).unwrap();
        h.gateway.shared.remove(state);
    }
    assert_eq!(
        h.record.fragments.lock().unwrap()[0],
        None,
        "no Framed-MTU, no override"
    );
}

#[tokio::test]
async fn another_client_cannot_continue_a_conversation() {
    let mut h = Harness::new(
        config(vec![label_with_password("iot")]),
        Script::default(),
        FakeRegistrar::default(),
    );
    let (start, _) = h.exchange(&identity_response(1, b"a@iot"), None).await;
    let state = state_of(&start);
    let (key, packet) = h.request(&teap_response(2), Some(&state));
    let other = Client {
        name: "nas2".into(),
        secret: Secret::new(RADIUS_SECRET.to_vec()).unwrap(),
    };
    let Handled::Reply(reply) = h.gateway.handle(key, &other, &packet) else {
        panic!();
    };
    assert_eq!(reply.code, Code::AccessReject);
    // The conversation itself goes on for the client that started it.
    let (next, _) = h.exchange(&teap_response(2), Some(&state)).await;
    assert_eq!(next.code, Code::AccessChallenge);
}
