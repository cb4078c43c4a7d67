//! RADIUS server core (ragw_teap::radius_server) with the RejectAll handler: any sequence of
//! datagrams from known and unknown sources, at any pace, never panics, and every answer is a
//! correctly signed response to the request it answers.
//!
//! Input: records of `control (1) | length (2, big-endian) | datagram (length)`; the last record
//! may be short. Control bit 0: sign the datagram as a request with the client's secret (when
//! it parses), so the fuzzer reaches past Message-Authenticator verification; bits 1-2: the
//! source (two ports of an IPv4 client, an IPv6 client, an unknown source); bits 3-7: seconds
//! to advance the clock first (the cache keeps answers 30 s). Length 0 resends the previous
//! datagram (a retransmission) from the chosen source.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ragw_teap::radius::{Code, Packet};
use ragw_teap::radius_server::{
    Action, CacheLimits, Client, ClientTable, DropReason, IpPrefix, RadiusServer, RejectAll, Secret,
};

const SECRET_V4: &[u8] = b"fuzz-secret-v4";
const SECRET_V6: &[u8] = b"fuzz-secret-v6";
const CLIENT_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
const CLIENT_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));
const UNKNOWN: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));

fn client(name: &str, secret: &[u8]) -> Client {
    Client {
        name: name.to_owned(),
        secret: Secret::new(secret).expect("non-empty secret"),
    }
}

fn server() -> RadiusServer<RejectAll> {
    let mut clients = ClientTable::new();
    clients.insert(
        IpPrefix::new(CLIENT_V4, 24).expect("valid prefix"),
        client("v4", SECRET_V4),
    );
    clients.insert(IpPrefix::single(CLIENT_V6), client("v6", SECRET_V6));
    // A small cache, so eviction is reached as well as expiry.
    let limits = CacheLimits {
        max_entries: 4,
        lifetime: Duration::from_secs(30),
    };
    RadiusServer::new(clients, RejectAll, limits)
}

fuzz_target!(|data: &[u8]| {
    let mut server = server();
    let mut now = Instant::now();
    let mut previous: Vec<u8> = Vec::new();
    let mut rest = data;
    while let [control, high, low, tail @ ..] = rest {
        let length = usize::from(u16::from_be_bytes([*high, *low])).min(tail.len());
        let (raw, after) = tail.split_at(length);
        rest = after;
        now += Duration::from_secs(u64::from(control >> 3));
        let (source, secret) = match (control >> 1) & 3 {
            0 => (SocketAddr::new(CLIENT_V4, 1812), Some(SECRET_V4)),
            1 => (SocketAddr::new(CLIENT_V4, 40000), Some(SECRET_V4)),
            2 => (SocketAddr::new(CLIENT_V6, 1812), Some(SECRET_V6)),
            _ => (SocketAddr::new(UNKNOWN, 1812), None),
        };
        let mut datagram = if raw.is_empty() {
            previous.clone()
        } else {
            raw.to_vec()
        };
        if control & 1 != 0 && !raw.is_empty() {
            let signing_secret = secret.unwrap_or(SECRET_V4);
            if let Ok(signed) =
                Packet::parse(&datagram).and_then(|p| p.encode_request(signing_secret))
            {
                datagram = signed;
            }
        }
        let retransmissions_before = server.counters().retransmissions_answered;
        let action = server.receive(&datagram, source, now);
        // A cached answer was made for the first request with this source, identifier and
        // Request Authenticator, whose other attributes may differ from this one's.
        let cached = server.counters().retransmissions_answered > retransmissions_before;
        match (secret, action) {
            (None, Action::Drop(reason)) => assert_eq!(reason, DropReason::UnknownClient),
            (None, other) => panic!("answered an unknown source: {other:?}"),
            (Some(_), Action::Drop(_)) => {}
            (Some(secret), Action::Send(reply)) => check_reply(&datagram, &reply, secret, cached),
            (Some(_), Action::Deferred(key)) => panic!("RejectAll never defers: {key:?}"),
        }
        previous = datagram;
    }
});

/// An answer is Access-Reject (Access-Accept to Status-Server) signed for this very request.
fn check_reply(datagram: &[u8], reply: &[u8], secret: &[u8], cached: bool) {
    let request = Packet::parse_verified_request(datagram, secret)
        .expect("the server answered only a verified request");
    let response = Packet::parse_verified_response(reply, &request, secret)
        .expect("the server's answer verifies against its request");
    let expected = match request.code {
        Code::StatusServer => Code::AccessAccept,
        _ => Code::AccessReject,
    };
    assert_eq!(response.code, expected);
    if !cached {
        assert!(
            response.proxy_states().eq(request.proxy_states()),
            "Proxy-State not echoed in order"
        );
    }
}
