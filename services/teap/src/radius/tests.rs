#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 2865 §7.1: Access-Request from 192.168.1.16, User-Name "nemo", password "arctangent",
/// secret "xyzzy5461".
const RFC2865_REQUEST: &str = "01 00 00 38 0f 40 3f 94 73 97 80 57 bd 83 d5 cb 98 f4 22 7a
    01 06 6e 65 6d 6f 02 12 0d be 70 8d 93 d4 13 ce 31 96 e4 3f 78 2a 0a ee
    04 06 c0 a8 01 10 05 06 00 00 00 03";
/// RFC 2865 §7.1: the Access-Accept answering it.
const RFC2865_ACCEPT: &str = "02 00 00 26 86 fe 22 0e 76 24 ba 2a 10 05 f6 bf 9b 55 e0 b2
    06 06 00 00 00 01 0f 06 00 00 00 00 0e 06 c0 a8 01 03";

/// Access-Request, id 0x2a, authenticator 00..0f, Message-Authenticator, User-Name "anon",
/// EAP-Message (EAP-Response/Identity "anon"); secret "testing123". The Message-Authenticator
/// was computed independently with Python's hmac and `openssl dgst -md5 -mac HMAC`.
const SIGNED_REQUEST: &str = "012a0037000102030405060708090a0b0c0d0e0f
    5012562cc29a462c0733c6b4a0e22082995d 0106616e6f6e 4f0b0201000901616e6f6e";

#[test]
fn rfc2865_example_parses_and_reencodes_identically() {
    let bytes = unhex(RFC2865_REQUEST);
    let packet = Packet::parse(&bytes).unwrap();
    assert_eq!(packet.code, Code::AccessRequest);
    assert_eq!(packet.identifier, 0);
    assert_eq!(packet.attribute(attr::USER_NAME), Some(&b"nemo"[..]));
    assert_eq!(packet.attributes.len(), 4);
    assert_eq!(packet.encode().unwrap(), bytes);
}

#[test]
fn rfc2865_example_user_password_hiding() {
    let request = Packet::parse(&unhex(RFC2865_REQUEST)).unwrap();
    let hidden = hide_user_password(b"arctangent", b"xyzzy5461", &request.authenticator).unwrap();
    assert_eq!(
        Some(hidden.as_slice()),
        request.attribute(attr::USER_PASSWORD)
    );
}

#[test]
fn rfc2865_example_response_authenticator_verifies() {
    let request = Packet::parse(&unhex(RFC2865_REQUEST)).unwrap();
    let accept = unhex(RFC2865_ACCEPT);
    let parsed = Packet::parse_verified_response(&accept, &request, b"xyzzy5461").unwrap();
    assert_eq!(parsed.code, Code::AccessAccept);
    assert_eq!(
        Packet::parse_verified_response(&accept, &request, b"wrong"),
        Err(RadiusError::BadResponseAuthenticator)
    );
}

#[test]
fn message_authenticator_known_answer() {
    let bytes = unhex(SIGNED_REQUEST);
    let packet = Packet::parse_verified_request(&bytes, b"testing123").unwrap();
    assert_eq!(
        packet.eap_message().unwrap().unwrap(),
        unhex("0201000901616e6f6e")
    );
    // Our encoder produces the same bytes from the unsigned packet.
    let mut unsigned = packet.clone();
    unsigned
        .attributes
        .retain(|a| a.attribute_type != attr::MESSAGE_AUTHENTICATOR);
    assert_eq!(unsigned.encode_request(b"testing123").unwrap(), bytes);
}

#[test]
fn request_with_bad_or_missing_message_authenticator_is_refused() {
    let bytes = unhex(SIGNED_REQUEST);
    assert_eq!(
        Packet::parse_verified_request(&bytes, b"testing124"),
        Err(RadiusError::BadMessageAuthenticator)
    );
    let mut tampered = bytes.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert_eq!(
        Packet::parse_verified_request(&tampered, b"testing123"),
        Err(RadiusError::BadMessageAuthenticator)
    );
    let mut packet = Packet::parse(&bytes).unwrap();
    packet
        .attributes
        .retain(|a| a.attribute_type != attr::MESSAGE_AUTHENTICATOR);
    assert_eq!(
        Packet::parse_verified_request(&packet.encode().unwrap(), b"testing123"),
        Err(RadiusError::MissingMessageAuthenticator)
    );
    let mut twice = Packet::parse(&bytes).unwrap();
    twice.push(Attribute::new(attr::MESSAGE_AUTHENTICATOR, [0; 16]));
    assert_eq!(
        Packet::parse_verified_request(&twice.encode().unwrap(), b"testing123"),
        Err(RadiusError::DuplicateMessageAuthenticator)
    );
    let mut short = Packet::parse(&bytes).unwrap();
    short.attributes[0].value.truncate(15);
    assert_eq!(
        Packet::parse_verified_request(&short.encode().unwrap(), b"testing123"),
        Err(RadiusError::MessageAuthenticatorLength(15))
    );
    assert_eq!(
        Packet::parse_verified_request(&bytes, b""),
        Err(RadiusError::EmptySecret)
    );
    let mut accept = Packet::parse(&bytes).unwrap();
    accept.code = Code::AccessAccept;
    assert_eq!(
        Packet::parse_verified_request(&accept.encode().unwrap(), b"testing123"),
        Err(RadiusError::NotAVerifiableRequest(Code::AccessAccept))
    );
    let mut accounting = Packet::parse(&bytes).unwrap();
    accounting.code = Code::AccountingRequest;
    assert_eq!(
        Packet::parse_verified_request(&accounting.encode().unwrap(), b"testing123"),
        Err(RadiusError::NotAVerifiableRequest(Code::AccountingRequest))
    );
}

#[test]
fn response_puts_message_authenticator_first_and_echoes_proxy_state_in_order() {
    let mut request = Packet::parse(&unhex(SIGNED_REQUEST)).unwrap();
    request.push(Attribute::new(attr::PROXY_STATE, b"first".to_vec()));
    request.push(Attribute::new(attr::USER_NAME, b"x".to_vec()));
    request.push(Attribute::new(attr::PROXY_STATE, b"second".to_vec()));
    let mut challenge = Packet::response_to(&request, Code::AccessChallenge);
    challenge.push(Attribute::new(attr::STATE, b"conversation-1".to_vec()));
    challenge
        .attributes
        .extend(eap_message_attributes(&unhex("0102000a0d2100000000")));
    // A Proxy-State the caller put in by mistake is replaced by the request's.
    challenge.push(Attribute::new(attr::PROXY_STATE, b"stray".to_vec()));
    let bytes = challenge.encode_response(&request, b"testing123").unwrap();
    assert_eq!(bytes[20], attr::MESSAGE_AUTHENTICATOR);
    assert_eq!(bytes[21], 18);
    let parsed = Packet::parse_verified_response(&bytes, &request, b"testing123").unwrap();
    assert_eq!(parsed.code, Code::AccessChallenge);
    assert_eq!(parsed.identifier, 0x2a);
    assert_eq!(parsed.state(), Some(&b"conversation-1"[..]));
    let echoed: Vec<&[u8]> = parsed.proxy_states().collect();
    assert_eq!(echoed, vec![&b"first"[..], &b"second"[..]]);
    // Either authenticator failing is detected.
    let mut bad_ma = bytes.clone();
    bad_ma[22] ^= 1;
    let ra = md5_parts(&[
        &{
            let mut b = bad_ma.clone();
            b[4..20].copy_from_slice(&request.authenticator);
            b
        },
        b"testing123",
    ]);
    bad_ma[4..20].copy_from_slice(&ra);
    assert_eq!(
        Packet::parse_verified_response(&bad_ma, &request, b"testing123"),
        Err(RadiusError::BadMessageAuthenticator)
    );
    let mut bad_ra = bytes.clone();
    bad_ra[4] ^= 1;
    assert_eq!(
        Packet::parse_verified_response(&bad_ra, &request, b"testing123"),
        Err(RadiusError::BadResponseAuthenticator)
    );
}

#[test]
fn status_server_is_verified_like_an_access_request() {
    let status = Packet {
        code: Code::StatusServer,
        identifier: 7,
        authenticator: [9; 16],
        attributes: vec![],
    };
    let bytes = status.encode_request(b"s3cret").unwrap();
    let parsed = Packet::parse_verified_request(&bytes, b"s3cret").unwrap();
    assert_eq!(parsed.code, Code::StatusServer);
}

#[test]
fn malformed_packets_get_precise_errors() {
    let good = unhex(RFC2865_REQUEST);
    assert_eq!(Packet::parse(&good[..19]), Err(RadiusError::TooShort(19)));
    assert_eq!(
        Packet::parse(&vec![0; 4097]),
        Err(RadiusError::DatagramTooLong(4097))
    );
    let mut b = good.clone();
    b[2..4].copy_from_slice(&19u16.to_be_bytes());
    assert_eq!(Packet::parse(&b), Err(RadiusError::BadLengthField(19)));
    b[2..4].copy_from_slice(&4097u16.to_be_bytes());
    assert_eq!(Packet::parse(&b), Err(RadiusError::BadLengthField(4097)));
    b[2..4].copy_from_slice(&57u16.to_be_bytes());
    assert_eq!(
        Packet::parse(&b),
        Err(RadiusError::LengthExceedsDatagram {
            field: 57,
            datagram: 56
        })
    );
    // Octets past Length are padding (RFC 2865 §3).
    let mut padded = good.clone();
    padded.extend_from_slice(&[0xff; 3]);
    assert_eq!(
        Packet::parse(&padded).unwrap(),
        Packet::parse(&good).unwrap()
    );
    let mut b = good.clone();
    b[0] = 42;
    assert_eq!(Packet::parse(&b), Err(RadiusError::UnknownCode(42)));
    let mut b = good.clone();
    b[21] = 1;
    assert_eq!(
        Packet::parse(&b),
        Err(RadiusError::AttributeTooShort {
            offset: 20,
            length: 1
        })
    );
    let mut b = good.clone();
    b[51] = 7; // last attribute (offset 50) claims one octet more than remains
    assert_eq!(
        Packet::parse(&b),
        Err(RadiusError::AttributeOverrun {
            offset: 50,
            length: 7,
            remaining: 6
        })
    );
    let mut b = good.clone();
    b.push(5);
    b[2..4].copy_from_slice(&57u16.to_be_bytes());
    assert_eq!(
        Packet::parse(&b),
        Err(RadiusError::TruncatedAttributeHeader { offset: 56 })
    );
}

#[test]
fn encoder_refuses_oversized_values_and_packets() {
    let mut p = Packet {
        code: Code::AccessChallenge,
        identifier: 1,
        authenticator: [0; 16],
        attributes: vec![Attribute::new(attr::STATE, vec![0; 254])],
    };
    assert_eq!(
        p.encode(),
        Err(RadiusError::AttributeValueTooLong {
            attribute_type: attr::STATE,
            len: 254
        })
    );
    p.attributes = eap_message_attributes(&vec![0; 4100]);
    assert!(matches!(p.encode(), Err(RadiusError::PacketTooLong(_))));
    // The largest EAP that fits: 4096 - 20 header - 18 Message-Authenticator, in 255-octet
    // attributes of 253 value octets.
    let room = (4096 - 20 - 18) / 255 * 253;
    p.attributes = eap_message_attributes(&vec![0; room]);
    let request = Packet::parse(&unhex(SIGNED_REQUEST)).unwrap();
    assert!(p.encode_response(&request, b"k").unwrap().len() <= 4096);
}

#[test]
fn eap_message_split_at_253_and_reassembled_in_order() {
    let mut eap = vec![0u8; 937];
    eap[0] = 1;
    eap[2..4].copy_from_slice(&937u16.to_be_bytes());
    for (i, b) in eap.iter_mut().enumerate().skip(4) {
        *b = i as u8;
    }
    let parts = eap_message_attributes(&eap);
    let sizes: Vec<usize> = parts.iter().map(|a| a.value.len()).collect();
    assert_eq!(sizes, vec![253, 253, 253, 178]);
    let mut p = Packet {
        code: Code::AccessRequest,
        identifier: 3,
        authenticator: [1; 16],
        attributes: vec![Attribute::new(attr::USER_NAME, b"u".to_vec())],
    };
    p.attributes.extend(parts);
    let bytes = p.encode_request(b"k").unwrap();
    let parsed = Packet::parse_verified_request(&bytes, b"k").unwrap();
    assert_eq!(parsed.eap_message().unwrap().unwrap(), eap);
    // Out of order reassembly is caught by the EAP length only when it changes; a dropped
    // fragment always is.
    p.attributes.pop();
    assert!(matches!(
        p.eap_message(),
        Err(RadiusError::BadEapMessage(_))
    ));
    let none = Packet::parse(&unhex(RFC2865_REQUEST)).unwrap();
    assert_eq!(none.eap_message(), Ok(None));
    let start = Packet {
        attributes: eap_message_attributes(&[]),
        ..none
    };
    assert_eq!(start.eap_message(), Ok(Some(vec![])));
}

#[test]
fn vendor_specific_round_trip_and_malformed() {
    let a = Attribute::vendor_specific(VENDOR_MICROSOFT, MS_MPPE_SEND_KEY, b"abc").unwrap();
    assert_eq!(a.value, unhex("00000137 1005 616263"));
    let vsa = a.as_vendor_specific().unwrap().unwrap();
    assert_eq!(vsa.vendor_id, 311);
    assert_eq!(vsa.sub_attributes, vec![(16, &b"abc"[..])]);
    for bad in [
        "000001",
        "00000137 10",
        "00000137 1001",
        "00000137 1009 6162",
    ] {
        let a = Attribute::new(attr::VENDOR_SPECIFIC, unhex(bad));
        assert!(matches!(
            a.as_vendor_specific(),
            Some(Err(RadiusError::BadVendorSpecific(_)))
        ));
    }
    assert!(
        Attribute::new(attr::STATE, vec![])
            .as_vendor_specific()
            .is_none()
    );
    assert!(Attribute::vendor_specific(1, 1, &[0; 248]).is_err());
    assert!(Attribute::vendor_specific(1, 1, &[0; 247]).is_ok());
}

#[test]
fn mppe_key_known_answer_and_round_trip() {
    // Independently computed in Python: key 00..1f, salt 8001, secret "xyzzy5461",
    // request authenticator of the RFC 2865 §7.1 example.
    let ra: [u8; 16] = unhex("0f403f9473978057bd83d5cb98f4227a")
        .try_into()
        .unwrap();
    let key: Vec<u8> = (0..32).collect();
    let hidden = encrypt_mppe_key(&key, [0x00, 0x01], b"xyzzy5461", &ra).unwrap();
    assert_eq!(
        hidden,
        unhex(
            "8001e74fd77a66159af1c00e2603ed8f8a2d775b72924f399d2c98d1909d856dfa8608c3baf9\
             2fc0c0313d7dd2b3bb1fe1e7"
        )
    );
    assert_eq!(decrypt_mppe_key(&hidden, b"xyzzy5461", &ra).unwrap(), key);
    assert_ne!(decrypt_mppe_key(&hidden, b"other", &ra).ok(), Some(key));
    assert!(matches!(
        decrypt_mppe_key(&hidden[..hidden.len() - 1], b"xyzzy5461", &ra),
        Err(RadiusError::BadMppeKey(_))
    ));
    let mut no_high_bit = hidden.clone();
    no_high_bit[0] &= 0x7f;
    assert!(matches!(
        decrypt_mppe_key(&no_high_bit, b"xyzzy5461", &ra),
        Err(RadiusError::BadMppeKey(_))
    ));
}

#[test]
fn mppe_attributes_from_msk() {
    let ra = [7u8; 16];
    let msk: [u8; 64] = core::array::from_fn(|i| i as u8);
    let [recv, send] = mppe_key_attributes(&msk, [1, 2], [3, 4], b"s", &ra).unwrap();
    let recv = recv.as_vendor_specific().unwrap().unwrap();
    let send = send.as_vendor_specific().unwrap().unwrap();
    assert_eq!(
        (recv.vendor_id, recv.sub_attributes[0].0),
        (311, MS_MPPE_RECV_KEY)
    );
    assert_eq!(
        (send.vendor_id, send.sub_attributes[0].0),
        (311, MS_MPPE_SEND_KEY)
    );
    assert_eq!(recv.sub_attributes[0].1.len(), 50);
    assert_eq!(
        decrypt_mppe_key(recv.sub_attributes[0].1, b"s", &ra).unwrap(),
        &msk[..32]
    );
    assert_eq!(
        decrypt_mppe_key(send.sub_attributes[0].1, b"s", &ra).unwrap(),
        &msk[32..]
    );
    assert!(mppe_key_attributes(&msk, [1, 2], [0x81, 2], b"s", &ra).is_err());
}

#[test]
fn mppe_key_length_bound_is_what_a_vendor_sub_attribute_holds() {
    let ra = [7u8; 16];
    let longest = encrypt_mppe_key(&[5; 239], [0, 1], b"s", &ra).unwrap();
    assert_eq!(longest.len(), 242);
    assert!(Attribute::vendor_specific(VENDOR_MICROSOFT, MS_MPPE_SEND_KEY, &longest).is_ok());
    assert_eq!(decrypt_mppe_key(&longest, b"s", &ra).unwrap(), vec![5; 239]);
    assert!(matches!(
        encrypt_mppe_key(&[5; 240], [0, 1], b"s", &ra),
        Err(RadiusError::BadMppeKey(_))
    ));
}

#[test]
fn only_access_accept_reject_and_challenge_are_encoded_as_responses() {
    let request = Packet::parse(&unhex(SIGNED_REQUEST)).unwrap();
    for code in [
        Code::AccessRequest,
        Code::StatusServer,
        Code::AccountingResponse,
    ] {
        assert_eq!(
            Packet::response_to(&request, code).encode_response(&request, b"k"),
            Err(RadiusError::NotAResponseCode(code))
        );
    }
    for code in [
        Code::AccessAccept,
        Code::AccessReject,
        Code::AccessChallenge,
    ] {
        assert!(
            Packet::response_to(&request, code)
                .encode_response(&request, b"k")
                .is_ok()
        );
    }
}

/// Random bytes, random mutations of valid packets and every truncation: typed errors or
/// packets, never a panic.
#[test]
fn arbitrary_input_never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = [
        unhex(SIGNED_REQUEST),
        unhex(RFC2865_REQUEST),
        unhex(RFC2865_ACCEPT),
    ];
    let request = Packet::parse(&valid[0]).unwrap();
    let exercise = |bytes: &[u8]| {
        if let Ok(p) = Packet::parse(bytes) {
            let _ = p.eap_message();
            let _ = p.encode();
            for a in &p.attributes {
                let _ = a.as_vendor_specific();
            }
        }
        let _ = Packet::parse_verified_request(bytes, b"testing123");
        let _ = Packet::parse_verified_response(bytes, &request, b"testing123");
        let _ = decrypt_mppe_key(bytes, b"k", &[0; 16]);
    };
    for v in &valid {
        for len in 0..=v.len() {
            exercise(&v[..len]);
        }
    }
    for _ in 0..20_000 {
        let r = next();
        let mut bytes = if r % 2 == 0 {
            let len = (next() % 300) as usize;
            (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
        } else {
            valid[(r as usize / 2) % valid.len()].clone()
        };
        for _ in 0..(next() % 4) {
            if !bytes.is_empty() {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
        }
        exercise(&bytes);
    }
}
