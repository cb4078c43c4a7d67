//! EAP and TEAP framing (ragw_teap::eap): parsing arbitrary octets never panics, and whatever
//! parses re-encodes to a packet that parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ragw_teap::eap::{Body, Packet, TeapMessage, teap_flag};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::parse(data) {
        let encoded = packet.encode().expect("a parsed EAP packet re-encodes");
        assert_eq!(Packet::parse(&encoded), Ok(packet.clone()));
        // Only the TEAP flags' reserved bit is not kept; everything else is octet-exact.
        let length = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let mut original = data[..length].to_vec();
        if matches!(packet.body, Body::Teap(_)) {
            original[5] &= !teap_flag::RESERVED;
        }
        assert_eq!(encoded, original, "re-encoding changed the packet");
    }

    // The same octets as the Type-Data of a TEAP packet (after the type octet 55).
    if let Ok(message) = TeapMessage::parse(data) {
        assert_eq!(
            message.flags() & !teap_flag::RESERVED,
            data[0] & !teap_flag::RESERVED
        );
        let packet = Packet {
            code: ragw_teap::eap::Code::Response,
            identifier: 0,
            body: Body::Teap(message.clone()),
        };
        match packet.encode() {
            Ok(encoded) => assert_eq!(
                Packet::parse(&encoded).map(|p| p.body),
                Ok(Body::Teap(message))
            ),
            Err(ragw_teap::eap::EapError::PacketTooLong(_)) => {}
            Err(error) => panic!("encoding a parsed TEAP message failed: {error}"),
        }
    }
});
