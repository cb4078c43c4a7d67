//! The tokio UDP shell with a plain UDP client (no external peer): a retransmitted request gets
//! byte-identical answers with the handler run once, a datagram longer than 4096 octets is
//! dropped without stopping the loop, and a deferred request is answered when its work
//! completes, with a retransmission during the wait dropped and one after it answered from
//! the cache.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::thread;
use std::time::Duration;

use ragw_teap::radius::{AUTHENTICATOR_LEN, Attribute, Code, Packet, attr};
use ragw_teap::radius_server::udp::{Completer, completion_channel, serve};
use ragw_teap::radius_server::{
    CacheLimits, Client, ClientTable, DropReason, Handled, Handler, IpPrefix, RadiusServer, Reply,
    RequestKey, Secret,
};

const SECRET: &[u8] = b"udp-serve-secret";

#[derive(Default)]
struct CountingReject {
    calls: u32,
}

impl Handler for CountingReject {
    fn handle(&mut self, _key: RequestKey, _client: &Client, _request: &Packet) -> Handled {
        self.calls += 1;
        Handled::Reply(Reply {
            code: Code::AccessReject,
            attributes: vec![Attribute::new(attr::REPLY_MESSAGE, b"call".to_vec())],
        })
    }
}

/// Defers requests whose User-Name is `later`, handing the key and a [`Completer`] to the test,
/// which plays the part of the slow work; answers the rest at once.
struct DeferLater {
    calls: u32,
    completer: Completer,
    deferred: std::sync::mpsc::Sender<(RequestKey, Completer)>,
}

impl Handler for DeferLater {
    fn handle(&mut self, key: RequestKey, _client: &Client, request: &Packet) -> Handled {
        self.calls += 1;
        if request.attribute(attr::USER_NAME) == Some(b"later") {
            self.deferred
                .send((key, self.completer.clone()))
                .expect("test listens");
            return Handled::Deferred;
        }
        Handled::Reply(Reply {
            code: Code::AccessReject,
            attributes: vec![Attribute::new(attr::REPLY_MESSAGE, b"now".to_vec())],
        })
    }
}

fn run_server() -> (
    u16,
    tokio::sync::oneshot::Sender<()>,
    thread::JoinHandle<RadiusServer<CountingReject>>,
) {
    run_with(|_completer| CountingReject::default())
}

fn run_with<H: Handler + Send + 'static>(
    make: impl FnOnce(Completer) -> H + Send + 'static,
) -> (
    u16,
    tokio::sync::oneshot::Sender<()>,
    thread::JoinHandle<RadiusServer<H>>,
) {
    let mut clients = ClientTable::new();
    clients.insert(
        IpPrefix::single("127.0.0.1".parse().unwrap()),
        Client {
            name: "loopback".to_owned(),
            secret: Secret::new(SECRET.to_vec()).unwrap(),
        },
    );
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = thread::spawn(move || {
        let (completer, completions) = completion_channel();
        let core = RadiusServer::new(clients, make(completer), CacheLimits::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            port_tx.send(socket.local_addr().unwrap().port()).unwrap();
            serve(socket, core, completions, async {
                let _ = shutdown_rx.await;
            })
            .await
            .unwrap()
        })
    });
    (port_rx.recv().unwrap(), shutdown, handle)
}

fn client_socket(port: u16) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Only so a broken server cannot hang the test forever; no assertion depends on it.
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    socket.connect(("127.0.0.1", port)).unwrap();
    socket
}

fn access_request(identifier: u8) -> (Packet, Vec<u8>) {
    request_from(identifier, b"device-1")
}

fn request_from(identifier: u8, user: &[u8]) -> (Packet, Vec<u8>) {
    let mut packet = Packet {
        code: Code::AccessRequest,
        identifier,
        authenticator: [identifier; AUTHENTICATOR_LEN],
        attributes: Vec::new(),
    };
    packet.push(Attribute::new(attr::USER_NAME, user.to_vec()));
    let bytes = packet.encode_request(SECRET).unwrap();
    (Packet::parse(&bytes).unwrap(), bytes)
}

fn exchange(socket: &UdpSocket, datagram: &[u8]) -> Vec<u8> {
    socket.send(datagram).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("server answered");
    buf[..n].to_vec()
}

#[test]
fn retransmission_over_udp_gets_identical_bytes_and_handler_runs_once() {
    let (port, shutdown, server) = run_server();
    let socket = client_socket(port);
    let (request, bytes) = access_request(42);
    let first = exchange(&socket, &bytes);
    let second = exchange(&socket, &bytes);
    assert_eq!(first, second);
    let reject = Packet::parse_verified_response(&first, &request, SECRET).unwrap();
    assert_eq!(reject.code, Code::AccessReject);
    shutdown.send(()).unwrap();
    let core = server.join().unwrap();
    assert_eq!(core.handler().calls, 1);
    assert_eq!(core.counters().retransmissions_answered, 1);
}

#[test]
fn oversized_datagram_is_dropped_and_the_loop_keeps_serving() {
    let (port, shutdown, server) = run_server();
    let socket = client_socket(port);
    // A 5000-octet "Access-Request" whose Length field says 5000: truncated to 4096 on receipt,
    // then refused by the codec for its Length field.
    let mut oversized = vec![0u8; 5000];
    oversized[0] = Code::AccessRequest.as_u8();
    oversized[2..4].copy_from_slice(&5000u16.to_be_bytes());
    socket.send(&oversized).unwrap();
    let (request, bytes) = access_request(7);
    let reply = exchange(&socket, &bytes);
    Packet::parse_verified_response(&reply, &request, SECRET).unwrap();
    shutdown.send(()).unwrap();
    let core = server.join().unwrap();
    assert_eq!(core.counters().dropped(DropReason::Malformed), 1);
    assert_eq!(core.handler().calls, 1);
}

#[test]
fn deferred_request_is_answered_on_completion_and_its_retransmissions_are_handled() {
    let (deferred_tx, deferred_rx) = std::sync::mpsc::channel();
    let (port, shutdown, server) = run_with(move |completer| DeferLater {
        calls: 0,
        completer,
        deferred: deferred_tx,
    });
    let socket = client_socket(port);
    let (slow, slow_bytes) = request_from(1, b"later");
    socket.send(&slow_bytes).unwrap();
    let (key, completer) = deferred_rx.recv().unwrap();
    assert_eq!(key.identifier, 1);
    // A retransmission while the work runs, then an unrelated request: datagrams from one
    // socket are handled in order, so once the second is answered the retransmission was seen.
    socket.send(&slow_bytes).unwrap();
    let (quick, quick_bytes) = request_from(2, b"device-2");
    let quick_reply = exchange(&socket, &quick_bytes);
    let quick_reply = Packet::parse_verified_response(&quick_reply, &quick, SECRET).unwrap();
    assert_eq!(
        quick_reply.attribute(attr::REPLY_MESSAGE),
        Some(&b"now"[..])
    );

    assert!(completer.complete(
        key,
        Reply {
            code: Code::AccessChallenge,
            attributes: vec![Attribute::new(attr::STATE, b"st-1".to_vec())],
        },
    ));
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("deferred reply arrives");
    let late = buf[..n].to_vec();
    let challenge = Packet::parse_verified_response(&late, &slow, SECRET).unwrap();
    assert_eq!(challenge.code, Code::AccessChallenge);
    assert_eq!(challenge.state(), Some(&b"st-1"[..]));
    // After completion a retransmission gets the very same bytes, without the handler.
    assert_eq!(exchange(&socket, &slow_bytes), late);

    shutdown.send(()).unwrap();
    let core = server.join().unwrap();
    assert_eq!(core.handler().calls, 2);
    assert_eq!(core.counters().dropped(DropReason::DuplicateInProgress), 1);
    assert_eq!(core.counters().retransmissions_answered, 1);
    assert!(
        !completer.complete(
            key,
            Reply {
                code: Code::AccessReject,
                attributes: Vec::new(),
            },
        ),
        "the loop is gone after shutdown"
    );
}
