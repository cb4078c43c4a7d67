//! The RADIUS codec against a real peer: FreeRADIUS's `radclient` (Debian `freeradius-utils`)
//! sends Access-Requests whose Message-Authenticator it computes itself; a one-shot UDP
//! responder built on the codec verifies them and answers. radclient checks the Response
//! Authenticator and the Message-Authenticator of what comes back, and decrypts MS-MPPE keys;
//! Status-Server (RFC 5997) is verified and answered too.
//! Skips loudly without radclient; fails under `RAGW_REQUIRE_PEERS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Output;
use std::thread;
use std::time::Duration;

use support::{find_program, run_radclient};

use ragw_teap::radius::{
    Attribute, Code, Packet, RadiusError, attr, eap_message_attributes, mppe_key_attributes,
};

const SECRET: &str = "interop-secret-17";

/// An EAP-Response longer than one attribute, so radclient splits it and we reassemble it.
fn long_eap_response() -> Vec<u8> {
    let mut eap = vec![2, 0x11, 0, 0, 55];
    eap.extend((0..295u32).map(|i| i as u8));
    let len = eap.len() as u16;
    eap[2..4].copy_from_slice(&len.to_be_bytes());
    eap
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serve exactly one request on a fresh socket: `answer` builds the reply datagram (or `None`
/// to stay silent) from the verification result. Returns the port and the verified request.
fn one_shot_responder<F>(answer: F) -> (u16, thread::JoinHandle<Result<Packet, RadiusError>>)
where
    F: FnOnce(&Result<Packet, RadiusError>) -> Option<Vec<u8>> + Send + 'static,
{
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Only so a broken radclient cannot hang the test forever; no assertion depends on it.
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let (n, from) = socket.recv_from(&mut buf).expect("radclient sent nothing");
        let verified = Packet::parse_verified_request(&buf[..n], SECRET.as_bytes());
        if let Some(reply) = answer(&verified) {
            socket.send_to(&reply, from).unwrap();
        }
        verified
    });
    (port, handle)
}

fn radclient(radclient: &Path, port: u16, request: &str) -> Output {
    radclient_command(radclient, port, "auth", request)
}

fn radclient_command(radclient: &Path, port: u16, command: &str, request: &str) -> Output {
    run_radclient(radclient, port, command, SECRET, 3, request)
}

/// `expect` is the reply code radclient must see to exit 0 (its `Response-Packet-Type`).
fn eap_request_line(expect: &str) -> String {
    format!(
        "Response-Packet-Type = {expect}, User-Name = \"device-1\", EAP-Message = 0x{}, Message-Authenticator = 0x00, \
         Proxy-State = 0x70726f78792d61, Proxy-State = 0x70726f78792d62\n",
        hex(&long_eap_response())
    )
}

#[test]
fn radclient_accepts_our_access_challenge_with_state_and_proxy_state_echo() {
    let Some(radclient_path) = find_program("radclient", "freeradius-utils") else {
        return;
    };
    let (port, responder) = one_shot_responder(|verified| {
        let request = verified.as_ref().ok()?;
        let mut challenge = Packet::response_to(request, Code::AccessChallenge);
        challenge.push(Attribute::new(attr::STATE, b"conversation-42".to_vec()));
        challenge
            .attributes
            .extend(eap_message_attributes(&[1, 0x12, 0, 6, 55, 0x31]));
        Some(
            challenge
                .encode_response(request, SECRET.as_bytes())
                .unwrap(),
        )
    });
    let out = radclient(&radclient_path, port, &eap_request_line("Access-Challenge"));
    let request = responder
        .join()
        .unwrap()
        .expect("radclient's request verifies");
    assert_eq!(request.eap_message().unwrap().unwrap(), long_eap_response());
    assert!(
        request.attributes_of(attr::EAP_MESSAGE).count() >= 2,
        "radclient split the 300-octet EAP-Message"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "radclient refused our Access-Challenge"
    );
    assert!(stdout.contains("Received Access-Challenge"), "{stdout}");
    assert!(
        stdout.contains("State = 0x636f6e766572736174696f6e2d3432"),
        "{stdout}"
    );
    // radclient's -x dump of the reply lists both Proxy-States in the order sent.
    let a = stdout
        .rfind("Proxy-State = 0x70726f78792d61")
        .expect("first echoed");
    let b = stdout
        .rfind("Proxy-State = 0x70726f78792d62")
        .expect("second echoed");
    assert!(a < b, "Proxy-State echoed in order");
}

#[test]
fn radclient_decrypts_the_mppe_keys_of_our_access_accept() {
    let Some(radclient_path) = find_program("radclient", "freeradius-utils") else {
        return;
    };
    let msk: [u8; 64] = core::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(3));
    let (port, responder) = one_shot_responder(move |verified| {
        let request = verified.as_ref().ok()?;
        let mut accept = Packet::response_to(request, Code::AccessAccept);
        accept.attributes.extend(
            mppe_key_attributes(
                &msk,
                [0x12, 0x34],
                [0x56, 0x78],
                SECRET.as_bytes(),
                &request.authenticator,
            )
            .unwrap(),
        );
        accept
            .attributes
            .extend(eap_message_attributes(&[3, 0x12, 0, 4]));
        Some(accept.encode_response(request, SECRET.as_bytes()).unwrap())
    });
    let out = radclient(&radclient_path, port, &eap_request_line("Access-Accept"));
    responder
        .join()
        .unwrap()
        .expect("radclient's request verifies");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "radclient refused our Access-Accept");
    assert!(stdout.contains("Received Access-Accept"), "{stdout}");
    assert!(
        stdout.contains(&format!("MS-MPPE-Recv-Key = 0x{}", hex(&msk[..32]))),
        "Recv-Key is MSK[0..32]: {stdout}"
    );
    assert!(
        stdout.contains(&format!("MS-MPPE-Send-Key = 0x{}", hex(&msk[32..]))),
        "Send-Key is MSK[32..64]: {stdout}"
    );
}

#[test]
fn radclient_rejects_a_reply_whose_message_authenticator_is_wrong() {
    let Some(radclient_path) = find_program("radclient", "freeradius-utils") else {
        return;
    };
    let (port, responder) = one_shot_responder(|verified| {
        let request = verified.as_ref().ok()?;
        let mut challenge = Packet::response_to(request, Code::AccessChallenge);
        challenge.push(Attribute::new(attr::STATE, b"s".to_vec()));
        let mut bytes = challenge
            .encode_response(request, SECRET.as_bytes())
            .unwrap();
        // Corrupt the Message-Authenticator (first attribute), then re-sign the Response
        // Authenticator so only the Message-Authenticator is wrong.
        bytes[22] ^= 0xff;
        let mut with_request_auth = bytes.clone();
        with_request_auth[4..20].copy_from_slice(&request.authenticator);
        with_request_auth.extend_from_slice(SECRET.as_bytes());
        let response_auth = md5(&with_request_auth);
        bytes[4..20].copy_from_slice(&response_auth);
        Some(bytes)
    });
    let out = radclient(&radclient_path, port, &eap_request_line("Access-Challenge"));
    responder
        .join()
        .unwrap()
        .expect("radclient's request verifies");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && !stdout.contains("Received Access-Challenge"),
        "radclient must refuse a reply with a wrong Message-Authenticator: {stdout}"
    );
    // The refusal is for the Message-Authenticator, not the Response Authenticator: this is
    // what proves radclient checks the value our codec computes in the passing tests.
    assert!(stderr.contains("invalid Message-Authenticator"), "{stderr}");
}

#[test]
fn radclient_request_without_message_authenticator_is_refused_by_the_codec() {
    let Some(radclient_path) = find_program("radclient", "freeradius-utils") else {
        return;
    };
    let (port, responder) = one_shot_responder(|_| None);
    let _ = radclient(
        &radclient_path,
        port,
        "User-Name = \"device-1\", User-Password = \"pw\"\n",
    );
    assert_eq!(
        responder.join().unwrap(),
        Err(RadiusError::MissingMessageAuthenticator)
    );
}

#[test]
fn radclient_status_server_is_verified_and_answered_with_access_accept() {
    let Some(radclient_path) = find_program("radclient", "freeradius-utils") else {
        return;
    };
    let (port, responder) = one_shot_responder(|verified| {
        let request = verified.as_ref().ok()?;
        let accept = Packet::response_to(request, Code::AccessAccept);
        Some(accept.encode_response(request, SECRET.as_bytes()).unwrap())
    });
    let out = radclient_command(
        &radclient_path,
        port,
        "status",
        "Message-Authenticator = 0x00\n",
    );
    let request = responder
        .join()
        .unwrap()
        .expect("radclient's Status-Server verifies");
    assert_eq!(request.code, Code::StatusServer);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "radclient refused our answer: {stdout}"
    );
    assert!(stdout.contains("Received Access-Accept"), "{stdout}");
}

fn md5(data: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(data).into()
}
