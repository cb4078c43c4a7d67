//! `ragw dev` runs the TEAP gateway: RADIUS on loopback with the generated secret (0600 in
//! DATA_DIR/radius-secret), its address in endpoints.json. A plain UDP client with the
//! project's RADIUS codec checks Status-Server, the TEAP Start for an EAP-Response/Identity
//! (same bytes for a retransmission), the refusal of a forged State with its audit event, and
//! the metrics. (Full TEAP conversations are the TEAP peer's tests.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::Dev;
use ragw_teap::eap;
use ragw_teap::radius::{Attribute, Code, Packet, attr};

fn socket_to(addr: &str) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Only so a broken server cannot hang the test; no assertion depends on it.
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    socket.connect(addr).unwrap();
    socket
}

fn exchange(socket: &UdpSocket, bytes: &[u8]) -> Vec<u8> {
    socket.send(bytes).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("ragw dev answered");
    buf[..n].to_vec()
}

fn access_request(identifier: u8, eap: &[u8], state: Option<&[u8]>) -> Packet {
    let mut p = Packet {
        code: Code::AccessRequest,
        identifier,
        authenticator: rand_authenticator(identifier),
        attributes: Vec::new(),
    };
    p.push(Attribute::new(attr::USER_NAME, b"anonymous@iot".to_vec()));
    p.push(Attribute::new(attr::NAS_IDENTIFIER, b"test-nas".to_vec()));
    p.push(Attribute::new(
        attr::CALLING_STATION_ID,
        b"02-00-00-00-00-42".to_vec(),
    ));
    for a in ragw_teap::radius::eap_message_attributes(eap) {
        p.push(a);
    }
    if let Some(s) = state {
        p.push(Attribute::new(attr::STATE, s.to_vec()));
    }
    p
}

fn rand_authenticator(seed: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    for (i, b) in a.iter_mut().enumerate() {
        *b = seed.wrapping_mul(31).wrapping_add(i as u8 * 7 + 1);
    }
    a
}

#[test]
fn dev_serves_teap_over_radius_on_loopback() {
    let dev = Dev::start(&[]);
    let radius = dev.endpoint("radius");
    let secret_file = dev.dir.join("radius-secret");
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let secret = secret.trim().as_bytes().to_vec();
    assert!(secret.len() >= 16, "a generated secret of some length");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "radius-secret is private");
    }
    let socket = socket_to(&radius);

    // Status-Server (RFC 5997): Access-Accept.
    let probe = Packet {
        code: Code::StatusServer,
        identifier: 1,
        authenticator: rand_authenticator(200),
        attributes: Vec::new(),
    };
    let reply = exchange(&socket, &probe.encode_request(&secret).unwrap());
    let reply = Packet::parse_verified_response(&reply, &probe, &secret).unwrap();
    assert_eq!(reply.code, Code::AccessAccept);

    // EAP-Response/Identity: Access-Challenge with State and the TEAP Start.
    let identity = {
        let id = b"anonymous@iot";
        let mut e = vec![2, 9, 0, (5 + id.len()) as u8, 1];
        e.extend_from_slice(id);
        e
    };
    let request = access_request(2, &identity, None);
    let bytes = request.encode_request(&secret).unwrap();
    let first = exchange(&socket, &bytes);
    let challenge = Packet::parse_verified_response(&first, &request, &secret).unwrap();
    assert_eq!(challenge.code, Code::AccessChallenge);
    let state = challenge.state().expect("State").to_vec();
    let eap_request = challenge.eap_message().unwrap().expect("EAP-Message");
    let start = eap::Packet::parse(&eap_request).unwrap();
    assert_eq!(start.code, eap::Code::Request);
    assert_eq!(start.identifier, 10);
    let eap::Body::Teap(message) = start.body else {
        panic!("not TEAP: {:?}", start.body);
    };
    assert!(message.start && message.version == 1);
    assert!(message.outer_tlvs.is_some(), "the Authority-ID outer TLV");
    // A retransmission gets the same bytes.
    assert_eq!(exchange(&socket, &bytes), first);

    // A State the gateway never issued: Access-Reject with EAP-Failure, audited.
    let forged = access_request(3, &[2, 10, 0, 6, 55, 0x01], Some(b"0123456789abcdef"));
    let reply = exchange(&socket, &forged.encode_request(&secret).unwrap());
    let reject = Packet::parse_verified_response(&reply, &forged, &secret).unwrap();
    assert_eq!(reject.code, Code::AccessReject);
    assert_eq!(reject.eap_message().unwrap().unwrap(), vec![4, 10, 0, 4]);
    assert_ne!(state, b"0123456789abcdef");

    // Audit rows are written by the registrar after the reply; wait for them a while.
    let db = dev.dir.join("ragw.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let events = common::audit_events(&db, "gateway.refused");
        if let Some(e) = events.into_iter().find(|e| e.2.contains("teap")) {
            break e;
        }
        assert!(Instant::now() < deadline, "no TEAP refusal audited");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(refused.2.contains("test-nas"), "{refused:?}");
    assert!(refused.2.contains("02-00-00-00-00-42"), "{refused:?}");
    assert!(refused.2.contains("State"), "{refused:?}");

    let (_, metrics) = common::http_get(&dev.endpoint("metrics"));
    assert!(
        common::metric(&metrics, "ragw_teap_radius_requests_total") >= 4.0,
        "{metrics}"
    );
    assert!(
        common::metric(
            &metrics,
            "ragw_teap_radius_replies_total{code=\"access_challenge\"}"
        ) >= 2.0,
        "{metrics}"
    );
    assert_eq!(
        common::metric(&metrics, "ragw_teap_conversations_open"),
        1.0,
        "{metrics}"
    );
}
