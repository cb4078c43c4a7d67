//! RADIUS codec (ragw_teap::radius): parsing arbitrary datagrams never panics, a parsed packet
//! re-encodes to exactly the octets its Length field covers, and what the codec signs itself
//! it also verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ragw_teap::radius::{
    self, AUTHENTICATOR_LEN, Code, MS_MPPE_RECV_KEY, MS_MPPE_SEND_KEY, Packet, RadiusError,
    VENDOR_MICROSOFT,
};

const SECRET: &[u8] = b"fuzz-shared-secret";

fuzz_target!(|data: &[u8]| {
    // Nearly never verifies (the fuzzer cannot forge HMAC-MD5), but must reject cleanly.
    let _ = Packet::parse_verified_request(data, SECRET);

    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    let length = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let encoded = packet.encode().expect("a parsed packet re-encodes");
    assert_eq!(encoded, data[..length], "re-encoding changed the packet");
    assert_eq!(Packet::parse(&encoded), Ok(packet.clone()));

    let _ = packet.eap_message();
    let _ = packet.state();
    let _ = packet.proxy_states().count();
    for attribute in &packet.attributes {
        let Some(Ok(vendor)) = attribute.as_vendor_specific() else {
            continue;
        };
        if vendor.vendor_id != VENDOR_MICROSOFT {
            continue;
        }
        for (vendor_type, value) in &vendor.sub_attributes {
            if matches!(*vendor_type, MS_MPPE_SEND_KEY | MS_MPPE_RECV_KEY) {
                let _ = radius::decrypt_mppe_key(value, SECRET, &packet.authenticator);
            }
        }
    }

    if matches!(packet.code, Code::AccessRequest | Code::StatusServer) {
        match packet.encode_request(SECRET) {
            Ok(signed) => {
                let verified = Packet::parse_verified_request(&signed, SECRET)
                    .expect("a request signed by the codec verifies");
                assert_eq!(verified.identifier, packet.identifier);
                assert_eq!(verified.authenticator, packet.authenticator);
            }
            // The added or resized Message-Authenticator can push a full packet over 4096.
            Err(RadiusError::PacketTooLong(_)) => {}
            Err(error) => panic!("signing a parsed request failed: {error}"),
        }
        let reply = Packet::response_to(&packet, Code::AccessReject);
        match reply.encode_response(&packet, SECRET) {
            Ok(bytes) => {
                let parsed = Packet::parse_verified_response(&bytes, &packet, SECRET)
                    .expect("a response signed by the codec verifies");
                assert!(
                    parsed.proxy_states().eq(packet.proxy_states()),
                    "Proxy-State not echoed in order"
                );
            }
            // Echoed Proxy-State attributes can push the response over 4096.
            Err(RadiusError::PacketTooLong(_)) => {}
            Err(error) => panic!("answering a parsed request failed: {error}"),
        }
    }

    // MPPE key hiding round trip with a key and salt taken from the input.
    let key = &data[..data.len().min(239)];
    let salt = [data[0], data[1]];
    let mut request_authenticator = [0; AUTHENTICATOR_LEN];
    request_authenticator.copy_from_slice(&data[4..20]);
    let hidden = radius::encrypt_mppe_key(key, salt, SECRET, &request_authenticator)
        .expect("a key of at most 239 octets hides");
    let revealed = radius::decrypt_mppe_key(&hidden, SECRET, &request_authenticator)
        .expect("a hidden key reveals");
    assert_eq!(revealed, key);
});
