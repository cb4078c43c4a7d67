#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const SECRET: &[u8] = b"testing123";

fn attrs() -> RadiusAttrs {
    RadiusAttrs {
        calling_station_id: Some("02-00-00-00-00-01".into()),
        nas_identifier: Some("nas1".into()),
        framed_mtu: Some(1400),
        timeout: Duration::from_millis(200),
        max_tries: 3,
    }
}

#[test]
fn access_request_carries_identity_nas_attributes_split_eap_state_and_a_valid_authenticator() {
    let eap: Vec<u8> = {
        let mut eap = vec![2, 9, 0, 0];
        eap.resize(600, 0xab);
        let len = eap.len() as u16;
        eap[2..4].copy_from_slice(&len.to_be_bytes());
        eap
    };
    let request = build_request(
        42,
        [7; AUTHENTICATOR_LEN],
        "anonymous@example",
        &eap,
        Some(b"state-1"),
        &attrs(),
    )
    .unwrap();
    let datagram = request.encode_request(SECRET).unwrap();
    let parsed = Packet::parse_verified_request(&datagram, SECRET).expect("verifies");
    assert_eq!(
        parsed.attributes[0].attribute_type,
        attr::MESSAGE_AUTHENTICATOR
    );
    assert_eq!(parsed.identifier, 42);
    assert_eq!(parsed.authenticator, [7; AUTHENTICATOR_LEN]);
    assert_eq!(
        parsed.attribute(attr::USER_NAME),
        Some(&b"anonymous@example"[..])
    );
    assert_eq!(parsed.attribute(attr::NAS_IDENTIFIER), Some(&b"nas1"[..]));
    assert_eq!(
        parsed.attribute(attr::CALLING_STATION_ID),
        Some(&b"02-00-00-00-00-01"[..])
    );
    assert_eq!(
        parsed.attribute(attr::FRAMED_MTU),
        Some(&1400u32.to_be_bytes()[..])
    );
    assert_eq!(parsed.state(), Some(&b"state-1"[..]));
    let parts: Vec<usize> = parsed
        .attributes_of(attr::EAP_MESSAGE)
        .map(<[u8]>::len)
        .collect();
    assert_eq!(parts, [253, 253, 94]);
    assert_eq!(parsed.eap_message().unwrap(), Some(eap));
}

#[test]
fn mppe_keys_of_an_accept_give_back_the_msk() {
    let request = build_request(1, [3; 16], "a", &[2, 1, 0, 5, 1], None, &attrs()).unwrap();
    let msk: [u8; 64] = std::array::from_fn(|i| i as u8);
    let mut accept = Packet::response_to(&request, Code::AccessAccept);
    for attribute in
        radius::mppe_key_attributes(&msk, [0x81, 1], [0x82, 2], SECRET, &request.authenticator)
            .unwrap()
    {
        accept.push(attribute);
    }
    assert_eq!(
        mppe_msk(&accept, SECRET, &request.authenticator).unwrap(),
        Some(msk)
    );
    // The wrong request authenticator garbles the keys (length octet or content).
    let wrong = mppe_msk(&accept, SECRET, &[4; 16]);
    assert!(!matches!(wrong, Ok(Some(k)) if k == msk));
    let bare = Packet::response_to(&request, Code::AccessAccept);
    assert_eq!(
        mppe_msk(&bare, SECRET, &request.authenticator).unwrap(),
        None
    );
}

#[tokio::test]
async fn a_lost_answer_is_recovered_by_retransmitting_the_same_datagram() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(server_addr).await.unwrap();
    let request = build_request(5, [9; 16], "a", &[2, 5, 0, 5, 1], None, &attrs()).unwrap();
    let datagram = request.encode_request(SECRET).unwrap();
    let responder = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        // Ignore the first transmission, answer the second with a stray datagram first.
        for _ in 0..2 {
            let (len, from) = server.recv_from(&mut buf).await.unwrap();
            seen.push((buf[..len].to_vec(), from));
        }
        let (bytes, from) = seen.last().cloned().unwrap();
        let parsed = Packet::parse_verified_request(&bytes, SECRET).unwrap();
        server.send_to(b"not radius", from).await.unwrap();
        let challenge = Packet::response_to(&parsed, Code::AccessChallenge);
        let reply = challenge.encode_response(&parsed, SECRET).unwrap();
        server.send_to(&reply, from).await.unwrap();
        seen
    });
    let (response, retransmissions) = exchange_udp(&client, &datagram, &request, SECRET, &attrs())
        .await
        .expect("answered after a retransmission");
    assert_eq!(response.code, Code::AccessChallenge);
    assert_eq!(retransmissions, 1);
    let seen = responder.await.unwrap();
    assert_eq!(seen[0].0, seen[1].0, "the retransmission is byte-identical");
}

#[tokio::test]
async fn silence_ends_in_a_timeout_after_max_tries() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(server.local_addr().unwrap()).await.unwrap();
    let request = build_request(6, [1; 16], "a", &[2, 6, 0, 5, 1], None, &attrs()).unwrap();
    let datagram = request.encode_request(SECRET).unwrap();
    let mut quick = attrs();
    quick.timeout = Duration::from_millis(20);
    let result = exchange_udp(&client, &datagram, &request, SECRET, &quick).await;
    assert!(
        matches!(result, Err(PeerError::Timeout { tries: 3 })),
        "{result:?}"
    );
    let mut buf = [0u8; 4096];
    for _ in 0..3 {
        let len = server.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..len], datagram.as_slice());
    }
}

#[test]
fn the_driver_future_and_the_peer_are_send_for_spawned_benchmarks() {
    fn assert_send<T: Send>(_: &T) {}
    let tls = crate::client_tls_config(&[], None).unwrap();
    let config = crate::PeerConfig::new(
        tls,
        rustls_pki_types::ServerName::try_from("teap.example").unwrap(),
        "anonymous@example",
    );
    let peer = Peer::new(config).unwrap();
    assert_send(&peer);
    let future = run_over_radius(peer, ([127, 0, 0, 1], 9).into(), SECRET, attrs());
    assert_send(&future);
}
