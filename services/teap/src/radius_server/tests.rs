#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const SECRET: &[u8] = b"core-secret-1";

fn client(name: &str, secret: &[u8]) -> Client {
    Client {
        name: name.to_owned(),
        secret: Secret::new(secret.to_vec()).unwrap(),
    }
}

fn table() -> ClientTable {
    let mut clients = ClientTable::new();
    clients.insert("192.0.2.0/24".parse().unwrap(), client("lab", SECRET));
    clients
}

fn source() -> SocketAddr {
    "192.0.2.7:40000".parse().unwrap()
}

/// Counts calls and rejects, so tests can see how often the core ran it.
#[derive(Default)]
struct CountingHandler {
    calls: u32,
    defer: bool,
}

impl Handler for CountingHandler {
    fn handle(&mut self, _key: RequestKey, _client: &Client, _request: &Packet) -> Handled {
        self.calls += 1;
        if self.defer {
            return Handled::Deferred;
        }
        Handled::Reply(Reply {
            code: Code::AccessReject,
            attributes: vec![Attribute::new(attr::REPLY_MESSAGE, b"no".to_vec())],
        })
    }
}

fn server(limits: CacheLimits) -> RadiusServer<CountingHandler> {
    RadiusServer::new(table(), CountingHandler::default(), limits)
}

fn request(code: Code, identifier: u8, authenticator_seed: u8) -> Packet {
    let mut packet = Packet {
        code,
        identifier,
        authenticator: [authenticator_seed; AUTHENTICATOR_LEN],
        attributes: Vec::new(),
    };
    packet.push(Attribute::new(attr::USER_NAME, b"device-1".to_vec()));
    packet
}

fn signed(code: Code, identifier: u8, seed: u8, secret: &[u8]) -> (Packet, Vec<u8>) {
    let packet = request(code, identifier, seed);
    let bytes = packet.encode_request(secret).unwrap();
    (Packet::parse(&bytes).unwrap(), bytes)
}

fn sent(action: Action) -> Vec<u8> {
    match action {
        Action::Send(bytes) => bytes,
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn unknown_client_is_dropped_counted_and_handler_not_called() {
    let mut core = server(CacheLimits::default());
    let (_, bytes) = signed(Code::AccessRequest, 1, 1, SECRET);
    let stranger: SocketAddr = "198.51.100.1:1812".parse().unwrap();
    assert_eq!(
        core.receive(&bytes, stranger, Instant::now()),
        Action::Drop(DropReason::UnknownClient)
    );
    assert_eq!(core.counters().dropped(DropReason::UnknownClient), 1);
    assert_eq!(core.handler().calls, 0);
}

#[test]
fn missing_message_authenticator_is_dropped() {
    let mut core = server(CacheLimits::default());
    // Plain encode(): no Message-Authenticator at all.
    let bytes = request(Code::AccessRequest, 1, 1).encode().unwrap();
    assert_eq!(
        core.receive(&bytes, source(), Instant::now()),
        Action::Drop(DropReason::MissingMessageAuthenticator)
    );
    let status = request(Code::StatusServer, 2, 2).encode().unwrap();
    assert_eq!(
        core.receive(&status, source(), Instant::now()),
        Action::Drop(DropReason::MissingMessageAuthenticator)
    );
    assert_eq!(
        core.counters()
            .dropped(DropReason::MissingMessageAuthenticator),
        2
    );
    assert_eq!(core.handler().calls, 0);
}

#[test]
fn wrong_secret_message_authenticator_is_dropped() {
    let mut core = server(CacheLimits::default());
    let (_, bytes) = signed(Code::AccessRequest, 1, 1, b"not-the-secret");
    assert_eq!(
        core.receive(&bytes, source(), Instant::now()),
        Action::Drop(DropReason::BadMessageAuthenticator)
    );
    let (_, status) = signed(Code::StatusServer, 2, 2, b"not-the-secret");
    assert_eq!(
        core.receive(&status, source(), Instant::now()),
        Action::Drop(DropReason::BadMessageAuthenticator)
    );
    assert_eq!(
        core.counters().dropped(DropReason::BadMessageAuthenticator),
        2
    );
    assert_eq!(core.handler().calls, 0);
}

#[test]
fn garbage_and_accounting_are_dropped_with_their_reason() {
    let mut core = server(CacheLimits::default());
    assert_eq!(
        core.receive(&[1, 2, 3], source(), Instant::now()),
        Action::Drop(DropReason::Malformed)
    );
    let accounting = request(Code::AccountingRequest, 1, 1).encode().unwrap();
    assert_eq!(
        core.receive(&accounting, source(), Instant::now()),
        Action::Drop(DropReason::UnsupportedCode)
    );
}

#[test]
fn status_server_is_answered_with_access_accept_without_the_handler() {
    let mut core = server(CacheLimits::default());
    let (status, bytes) = signed(Code::StatusServer, 9, 3, SECRET);
    let reply = sent(core.receive(&bytes, source(), Instant::now()));
    let accept = Packet::parse_verified_response(&reply, &status, SECRET).unwrap();
    assert_eq!(accept.code, Code::AccessAccept);
    assert_eq!(core.handler().calls, 0);
    assert_eq!(core.counters().status_server_answered, 1);
}

#[test]
fn reject_all_says_teap_is_not_implemented() {
    let mut core = RadiusServer::new(table(), RejectAll, CacheLimits::default());
    let (req, bytes) = signed(Code::AccessRequest, 4, 4, SECRET);
    let reply = sent(core.receive(&bytes, source(), Instant::now()));
    let reject = Packet::parse_verified_response(&reply, &req, SECRET).unwrap();
    assert_eq!(reject.code, Code::AccessReject);
    assert_eq!(
        reject.attribute(attr::REPLY_MESSAGE),
        Some(NOT_IMPLEMENTED_MESSAGE.as_bytes())
    );
}

#[test]
fn retransmission_gets_identical_bytes_and_handler_runs_once() {
    let mut core = server(CacheLimits::default());
    let (req, bytes) = signed(Code::AccessRequest, 5, 5, SECRET);
    let start = Instant::now();
    let first = sent(core.receive(&bytes, source(), start));
    let again = sent(core.receive(&bytes, source(), start + Duration::from_secs(1)));
    assert_eq!(first, again);
    assert_eq!(core.handler().calls, 1);
    assert_eq!(core.counters().retransmissions_answered, 1);
    Packet::parse_verified_response(&again, &req, SECRET).unwrap();

    // Same identifier and authenticator from another port is a different request.
    let other_port: SocketAddr = "192.0.2.7:40001".parse().unwrap();
    sent(core.receive(&bytes, other_port, start));
    // So is a new authenticator with the same identifier (the client reused the id).
    let (_, fresh) = signed(Code::AccessRequest, 5, 6, SECRET);
    sent(core.receive(&fresh, source(), start));
    assert_eq!(core.handler().calls, 3);
}

#[test]
fn cache_entry_expires_after_its_lifetime() {
    let lifetime = Duration::from_secs(30);
    let mut core = server(CacheLimits {
        max_entries: 16,
        lifetime,
    });
    let (_, bytes) = signed(Code::AccessRequest, 5, 5, SECRET);
    let start = Instant::now();
    sent(core.receive(&bytes, source(), start));
    sent(core.receive(&bytes, source(), start + lifetime - Duration::from_secs(1)));
    assert_eq!(core.handler().calls, 1, "still cached just before expiry");
    sent(core.receive(&bytes, source(), start + lifetime));
    assert_eq!(core.handler().calls, 2, "expired entry is handled afresh");
}

#[test]
fn cache_is_bounded_and_evicts_the_oldest() {
    let mut core = server(CacheLimits {
        max_entries: 2,
        lifetime: Duration::from_secs(30),
    });
    let now = Instant::now();
    let requests: Vec<Vec<u8>> = (0..3)
        .map(|i| signed(Code::AccessRequest, i, i, SECRET).1)
        .collect();
    for r in &requests {
        sent(core.receive(r, source(), now));
    }
    assert_eq!(core.cached_requests(), 2);
    assert_eq!(core.handler().calls, 3);
    // The newest two are still cached; the oldest was evicted and runs again.
    sent(core.receive(&requests[2], source(), now));
    sent(core.receive(&requests[1], source(), now));
    assert_eq!(core.handler().calls, 3);
    sent(core.receive(&requests[0], source(), now));
    assert_eq!(core.handler().calls, 4);
}

#[test]
fn duplicate_of_request_in_progress_is_dropped_then_completion_is_cached() {
    let mut core = RadiusServer::new(
        table(),
        CountingHandler {
            calls: 0,
            defer: true,
        },
        CacheLimits::default(),
    );
    let (req, bytes) = signed(Code::AccessRequest, 7, 7, SECRET);
    let now = Instant::now();
    let Action::Deferred(key) = core.receive(&bytes, source(), now) else {
        panic!("handler deferred");
    };
    assert_eq!(
        core.receive(&bytes, source(), now),
        Action::Drop(DropReason::DuplicateInProgress)
    );
    assert_eq!(core.handler().calls, 1);
    let reply = Reply {
        code: Code::AccessReject,
        attributes: Vec::new(),
    };
    let answer = core.complete(key, reply.clone(), now).unwrap();
    Packet::parse_verified_response(&answer, &req, SECRET).unwrap();
    assert_eq!(sent(core.receive(&bytes, source(), now)), answer);
    assert_eq!(core.handler().calls, 1);
    // Completing again does not produce a second, different answer.
    assert_eq!(core.complete(key, reply, now), None);
}

#[test]
fn completion_after_expiry_is_counted_and_sends_nothing() {
    let lifetime = Duration::from_secs(30);
    let mut core = RadiusServer::new(
        table(),
        CountingHandler {
            calls: 0,
            defer: true,
        },
        CacheLimits {
            max_entries: 16,
            lifetime,
        },
    );
    let (_, bytes) = signed(Code::AccessRequest, 7, 7, SECRET);
    let now = Instant::now();
    let Action::Deferred(key) = core.receive(&bytes, source(), now) else {
        panic!("handler deferred");
    };
    let reply = Reply {
        code: Code::AccessReject,
        attributes: Vec::new(),
    };
    assert_eq!(core.complete(key, reply, now + lifetime), None);
    assert_eq!(core.counters().completions_too_late, 1);
}

#[test]
fn most_specific_prefix_wins() {
    let mut clients = ClientTable::new();
    clients.insert("10.0.0.0/8".parse().unwrap(), client("wide", b"s1"));
    clients.insert("10.1.0.0/16".parse().unwrap(), client("narrow", b"s2"));
    clients.insert("10.1.2.3".parse().unwrap(), client("host", b"s3"));
    clients.insert("2001:db8::/32".parse().unwrap(), client("v6", b"s4"));
    let name = |ip: &str| clients.lookup(ip.parse().unwrap()).map(|c| c.name.clone());
    assert_eq!(name("10.1.2.3").as_deref(), Some("host"));
    assert_eq!(name("10.1.2.4").as_deref(), Some("narrow"));
    assert_eq!(name("10.2.0.1").as_deref(), Some("wide"));
    assert_eq!(name("11.0.0.1"), None);
    assert_eq!(name("2001:db8::1").as_deref(), Some("v6"));
    assert_eq!(name("::ffff:10.1.2.3").as_deref(), Some("host"));
    assert_eq!(name("2001:db9::1"), None);
    // A prefix written with host bits set still means its network.
    let prefix: IpPrefix = "10.1.2.3/16".parse().unwrap();
    assert!(prefix.contains("10.1.200.1".parse().unwrap()));
    assert!("10.0.0.0/33".parse::<IpPrefix>().is_err());
    assert!("not-an-ip".parse::<IpPrefix>().is_err());
    assert!(
        "0.0.0.0/0"
            .parse::<IpPrefix>()
            .unwrap()
            .contains("8.8.8.8".parse().unwrap())
    );
}

#[test]
fn secret_never_appears_in_debug_or_display() {
    let c = client("lab", b"hunter2-very-secret");
    let table = {
        let mut t = ClientTable::new();
        t.insert("127.0.0.1".parse().unwrap(), c.clone());
        t
    };
    for text in [
        format!("{c:?}"),
        format!("{:?}", c.secret),
        format!("{}", c.secret),
        format!("{table:?}"),
        format!("{table:#?}"),
    ] {
        // Neither as text nor as the octet list a derived Debug of Vec<u8> would print.
        assert!(!text.contains("hunter2"), "secret leaked: {text}");
        assert!(!text.contains("104, 117, 110"), "secret leaked: {text}");
    }
    assert_eq!(format!("{:?}", c.secret), "Secret(<redacted>)");
    assert!(matches!(
        Secret::new(Vec::new()),
        Err(ConfigError::EmptySecret)
    ));
}
