#![allow(clippy::unwrap_used, clippy::expect_used)]

use rustls_pki_types::ServerName;

use super::*;
use crate::client_tls_config;

fn peer() -> Peer {
    let tls = client_tls_config(&[], None).unwrap();
    Peer::new(PeerConfig::new(
        tls,
        ServerName::try_from("teap.example").unwrap(),
        "anonymous@example",
    ))
    .unwrap()
}

fn start() -> Vec<u8> {
    let mut start = TeapMessage::new(Vec::new());
    start.start = true;
    start.outer_tlvs = Some(vec![0, 1, 0, 2, 0xab, 0xcd]);
    Packet {
        code: Code::Request,
        identifier: 1,
        body: Body::Teap(start),
    }
    .encode()
    .unwrap()
}

#[test]
fn identity_then_start_gives_identity_and_client_hello_without_o_flag() {
    let mut peer = peer();
    let PeerStep::Send(identity) = peer.receive(&[1, 0, 0, 5, 1]) else {
        panic!("no identity response")
    };
    assert_eq!(
        Packet::parse(&identity).unwrap().body,
        Body::Identity(b"anonymous@example".to_vec())
    );
    let PeerStep::Send(hello) = peer.receive(&start()) else {
        panic!("no ClientHello")
    };
    let packet = Packet::parse(&hello).unwrap();
    assert_eq!((packet.code, packet.identifier), (Code::Response, 1));
    let Body::Teap(message) = packet.body else {
        panic!("not TEAP")
    };
    assert!(!message.start);
    assert_eq!(message.outer_tlvs, None, "no outer TLVs, so no O flag");
    assert_eq!(
        message.tls_data.first(),
        Some(&0x16),
        "a TLS handshake record"
    );
    assert_eq!(peer.authority_id.as_deref(), Some(&[0xab, 0xcd][..]));
}

#[test]
fn configured_outer_tlvs_ride_on_the_first_message_only() {
    let tls = client_tls_config(&[], None).unwrap();
    let mut config = PeerConfig::new(
        tls,
        ServerName::try_from("teap.example").unwrap(),
        "anonymous@example",
    );
    config.outer_tlvs = Tlv::IdentityType(2).encode().unwrap();
    config.max_fragment = 50;
    let mut peer = Peer::new(config).unwrap();
    let PeerStep::Send(first) = peer.receive(&start()) else {
        panic!()
    };
    let Body::Teap(first) = Packet::parse(&first).unwrap().body else {
        panic!()
    };
    assert_eq!(
        first.outer_tlvs.as_deref(),
        Some(&[0x80, 2, 0, 2, 0, 2][..])
    );
    assert!(first.more_fragments && first.message_length.is_some());
    let ack = Packet {
        code: Code::Request,
        identifier: 2,
        body: Body::Teap(TeapMessage::new(Vec::new())),
    }
    .encode()
    .unwrap();
    let PeerStep::Send(second) = peer.receive(&ack) else {
        panic!()
    };
    let Body::Teap(second) = Packet::parse(&second).unwrap().body else {
        panic!()
    };
    assert_eq!(second.outer_tlvs, None);
    assert_eq!(second.message_length, None);
}

#[test]
fn other_methods_are_naked_towards_teap_before_start() {
    let mut peer = peer();
    let PeerStep::Send(nak) = peer.receive(&[1, 4, 0, 6, 4, 0]) else {
        panic!()
    };
    assert_eq!(Packet::parse(&nak).unwrap().body, Body::Nak(vec![55]));
}

#[test]
fn framing_violations_end_the_conversation_with_a_reason() {
    // TEAP data before Start, a fragment without L, then anything after the end.
    let mut peer = peer();
    let PeerStep::Done(outcome) = peer.receive(&[1, 1, 0, 7, 55, 0x01, 0x16]) else {
        panic!()
    };
    assert!(outcome.failure.unwrap().contains("before TEAP Start"));
    assert!(matches!(peer.receive(&start()), PeerStep::Done(_)));
    let mut peer = peer_after_start();
    let PeerStep::Done(outcome) = peer.receive(&[1, 9, 0, 7, 55, 0x41, 0x16]) else {
        panic!()
    };
    assert!(outcome.failure.unwrap().contains("lacks the L flag"));
}

fn peer_after_start() -> Peer {
    let mut peer = peer();
    assert!(matches!(peer.receive(&start()), PeerStep::Send(_)));
    peer
}

#[test]
fn random_packets_never_panic_in_any_early_stage() {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..400 {
        let len = (next() % 200) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if buf.len() >= 6 {
            buf[0] = 1 + (buf[0] % 4);
            let len = (buf.len() as u16).to_be_bytes();
            buf[2..4].copy_from_slice(&len);
            buf[4] = 55;
            buf[5] = (buf[5] & 0xf8) | 1;
        }
        let mut peer = if round % 2 == 0 {
            peer()
        } else {
            peer_after_start()
        };
        for cut in [buf.len(), buf.len() / 2, 5, 0] {
            let _ = peer.receive(buf.get(..cut).unwrap_or_default());
        }
    }
}
