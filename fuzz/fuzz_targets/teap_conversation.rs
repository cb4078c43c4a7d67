//! The TEAP server conversation (ragw_teap::teap_server::Conversation) after its Start: any
//! sequence of EAP-Responses — raw, wrapped as TEAP, or TLVs sealed inside a real TLS 1.2
//! tunnel — and any answers to its questions never panic, and every step is one the driver can
//! act on: a parseable EAP-Request whose identifier moves on, EAP-Success only with keys, an
//! EAP-Failure of four octets, nothing but Discard once finished.
//!
//! Input: records of `control (1) | length (2, big-endian) | bytes (length)`; the last record
//! may be short. Control bits 0-1 pick what the bytes become:
//! - 0: a raw EAP packet (with bit 2 set its identifier octet is patched to the expected one);
//! - 1: TEAP type data (flags octet first) in an EAP-Response with the expected identifier;
//! - 2: the genuine peer's next TLS flight (the bytes are ignored), so the fuzzer reaches the
//!   tunnel; its fragments go out as the server's limits allow;
//! - 3: TLV octets written into the genuine peer's TLS connection and sent sealed.
//!
//! Bits 3-5 choose the answer to a question the conversation asks (Authenticated without or
//! with optional or required provisioning, RequirePassword, Reject, Issued, EnrollFailed);
//! bits 6-7 set the server's fragment size for the whole run (first record only).
#![no_main]

use std::io::{Read, Write};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use ragw_teap::eap::{Body, Code, Packet, TeapMessage};
use ragw_teap::teap_server::{
    Answer, Conversation, ConversationLimits, Next, Provisioning, TeapServerConfig,
    tls_server_config,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::ClientConnection;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

const SERVER_NAME: &str = "teap.fuzz";

struct Fixture {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

/// Made once per process: key generation is far slower than one input.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA");
        let key = KeyPair::generate().expect("server key");
        let leaf = CertificateParams::new(vec![SERVER_NAME.to_string()])
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("server certificate");
        let server = tls_server_config(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server TLS config");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca.der().to_vec()))
            .expect("root");
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("TLS 1.2")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Fixture {
            server,
            client: Arc::new(client),
        }
    })
}

fn answer(choice: u8) -> Answer {
    let provisioning = |required| {
        Some(Provisioning {
            csr_attributes_der: vec![0x30, 0x00],
            required,
        })
    };
    match choice & 7 {
        0 => Answer::Authenticated { provisioning: None },
        1 => Answer::Authenticated {
            provisioning: provisioning(false),
        },
        2 => Answer::Authenticated {
            provisioning: provisioning(true),
        },
        3 => Answer::RequirePassword { prompt: Vec::new() },
        4 => Answer::Reject {
            error_code: 1003,
            reason: "fuzz".into(),
        },
        // A certs-only PKCS#7 is opaque to the conversation; any octets do.
        5 => Answer::Issued {
            pkcs7_der: vec![0x30, 0x03, 0x02, 0x01, 0x07],
        },
        _ => Answer::EnrollFailed {
            error_code: 1025,
            reason: "fuzz".into(),
        },
    }
}

fn response(identifier: u8, message: TeapMessage) -> Option<Vec<u8>> {
    Packet {
        code: Code::Response,
        identifier,
        body: Body::Teap(message),
    }
    .encode()
    .ok()
}

struct Run {
    conversation: Conversation,
    client: ClientConnection,
    /// Identifier of the last EAP-Request.
    identifier: u8,
    /// The genuine peer's TLS octets not yet sent.
    pending_tls: Vec<u8>,
    finished: bool,
}

impl Run {
    /// Checks one step and follows questions until the conversation needs input again.
    fn step(&mut self, mut next: Next, choice: u8) {
        loop {
            match next {
                Next::Send(bytes) => {
                    assert!(!self.finished, "a request after the end");
                    let packet = Packet::parse(&bytes).expect("the server's request parses");
                    assert_eq!(packet.code, Code::Request);
                    assert_eq!(packet.identifier, self.identifier.wrapping_add(1));
                    self.identifier = packet.identifier;
                    if let Body::Teap(message) = packet.body {
                        self.absorb(&message.tls_data);
                    }
                    return;
                }
                Next::Ask(_) => {
                    assert!(!self.finished, "a question after the end");
                    next = self.conversation.answer(answer(choice));
                }
                Next::Finished(finish) => {
                    assert!(!self.finished, "finished twice");
                    self.finished = true;
                    assert_eq!(finish.accepted, finish.keys.is_some());
                    assert_eq!(finish.eap.len(), 4);
                    let code = if finish.accepted { 3 } else { 4 };
                    assert_eq!(finish.eap[0], code);
                    assert!(self.conversation.is_finished());
                    return;
                }
                Next::Discard(_) => return,
            }
        }
    }

    /// The genuine peer reads what the server sent (errors are the fuzzer's doing: ignored).
    fn absorb(&mut self, tls: &[u8]) {
        let mut rest = tls;
        while !rest.is_empty() {
            if self.client.read_tls(&mut rest).is_err() {
                return;
            }
        }
        if self.client.process_new_packets().is_err() {
            return;
        }
        let mut sink = [0u8; 4096];
        while matches!(self.client.reader().read(&mut sink), Ok(n) if n > 0) {}
    }

    fn queue_client_output(&mut self) {
        while self.client.wants_write() {
            if self.client.write_tls(&mut self.pending_tls).is_err() {
                return;
            }
        }
    }

    /// The next genuine message, whole (the server reassembles; fragmenting is mode 1's job).
    fn send_tls(&mut self) -> Option<Vec<u8>> {
        self.queue_client_output();
        let data = std::mem::take(&mut self.pending_tls);
        response(self.identifier, TeapMessage::new(data))
    }
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let fragment = match data.first().map_or(0, |c| c >> 6) {
        0 => 1024,
        1 => 64,
        2 => 300,
        _ => 16_000,
    };
    let limits = ConversationLimits {
        max_tls_fragment: fragment,
        ..ConversationLimits::default()
    };
    let config = Arc::new(TeapServerConfig {
        tls: fixture.server.clone(),
        authority_id: b"fuzz-authority".to_vec(),
        limits,
        trusted_server_root_pkcs7: Some(vec![0x30, 0x00]),
    });
    let mut counter = 0u8;
    let random = Box::new(move |buf: &mut [u8]| {
        for octet in buf.iter_mut() {
            counter = counter.wrapping_add(1);
            *octet = counter;
        }
    });
    let Ok((conversation, _start)) = Conversation::start(config, 1, b"fuzz".to_vec(), random)
    else {
        return;
    };
    let Ok(client) = ClientConnection::new(
        fixture.client.clone(),
        ServerName::try_from(SERVER_NAME).unwrap(),
    ) else {
        return;
    };
    let mut run = Run {
        conversation,
        client,
        identifier: 1,
        pending_tls: Vec::new(),
        finished: false,
    };
    let mut rest = data;
    while let [control, high, low, tail @ ..] = rest {
        let length = usize::from(u16::from_be_bytes([*high, *low])).min(tail.len());
        let (bytes, after) = tail.split_at(length);
        rest = after;
        let packet = match control & 3 {
            0 => {
                let mut raw = bytes.to_vec();
                if control & 4 != 0
                    && let Some(id) = raw.get_mut(1)
                {
                    *id = run.identifier;
                }
                Some(raw)
            }
            1 => {
                let mut type_data = vec![55];
                type_data.extend_from_slice(bytes);
                let length = u16::try_from(4 + type_data.len()).unwrap_or(u16::MAX);
                let mut raw = vec![2, run.identifier];
                raw.extend_from_slice(&length.to_be_bytes());
                raw.extend_from_slice(&type_data);
                Some(raw)
            }
            2 => run.send_tls(),
            _ => {
                if run.client.is_handshaking() {
                    None
                } else {
                    let _ = run.client.writer().write_all(bytes);
                    run.send_tls()
                }
            }
        };
        let Some(packet) = packet else { continue };
        let next = run.conversation.receive(&packet);
        if run.finished {
            assert!(
                matches!(next, Next::Discard(_)),
                "input after the end: {next:?}"
            );
            continue;
        }
        run.step(next, control >> 3);
    }
});
