//! The UDP RADIUS front ([`ragw_teap::radius_server::udp::serve`] around [`ragw_teap::radius_server`]) against
//! FreeRADIUS's `radclient`: an Access-Request with Message-Authenticator gets the placeholder
//! Access-Reject, Status-Server gets Access-Accept, and a client using the wrong secret gets
//! no answer at all. Skips loudly without radclient; fails under `RAGW_REQUIRE_PEERS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Output;
use std::thread;

use support::{find_program, run_radclient};

use ragw_teap::radius_server::udp::{completion_channel, serve};
use ragw_teap::radius_server::{
    CacheLimits, Client, ClientTable, DropReason, IpPrefix, NOT_IMPLEMENTED_MESSAGE, RadiusServer,
    RejectAll, Secret,
};

const SECRET: &str = "udp-interop-secret-23";

/// A running server on 127.0.0.1:<port>; `stop` shuts it down and returns the core.
struct RunningServer {
    port: u16,
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: thread::JoinHandle<RadiusServer<RejectAll>>,
}

impl RunningServer {
    fn start() -> Self {
        let mut clients = ClientTable::new();
        clients.insert(
            IpPrefix::single("127.0.0.1".parse().unwrap()),
            Client {
                name: "loopback".to_owned(),
                secret: Secret::new(SECRET.as_bytes().to_vec()).unwrap(),
            },
        );
        let core = RadiusServer::new(clients, RejectAll, CacheLimits::default());
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(socket.local_addr().unwrap().port()).unwrap();
                // RejectAll never defers: the completion channel stays empty.
                let (_completer, completions) = completion_channel();
                serve(socket, core, completions, async {
                    let _ = shutdown_rx.await;
                })
                .await
                .unwrap()
            })
        });
        let port = port_rx.recv().unwrap();
        Self {
            port,
            shutdown,
            thread,
        }
    }

    fn stop(self) -> RadiusServer<RejectAll> {
        self.shutdown.send(()).unwrap();
        self.thread.join().unwrap()
    }
}

fn radclient(path: &Path, port: u16, command: &str, secret: &str, request: &str) -> Output {
    run_radclient(path, port, command, secret, 2, request)
}

const AUTH_REQUEST: &str = "Response-Packet-Type = Access-Reject, User-Name = \"device-1\", \
    EAP-Message = 0x0201000b016465766963652d31, Message-Authenticator = 0x00\n";

#[test]
fn radclient_access_request_gets_the_not_implemented_access_reject() {
    let Some(path) = find_program("radclient", "freeradius-utils") else {
        return;
    };
    let server = RunningServer::start();
    let out = radclient(&path, server.port, "auth", SECRET, AUTH_REQUEST);
    let core = server.stop();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "radclient did not get the expected Access-Reject: {stdout}"
    );
    assert!(stdout.contains("Received Access-Reject"), "{stdout}");
    assert!(stdout.contains(NOT_IMPLEMENTED_MESSAGE), "{stdout}");
    assert_eq!(core.counters().handled, 1);
}

#[test]
fn radclient_status_server_gets_access_accept() {
    let Some(path) = find_program("radclient", "freeradius-utils") else {
        return;
    };
    let server = RunningServer::start();
    let out = radclient(
        &path,
        server.port,
        "status",
        SECRET,
        "Message-Authenticator = 0x00\n",
    );
    let core = server.stop();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "radclient refused our answer: {stdout}"
    );
    assert!(stdout.contains("Received Access-Accept"), "{stdout}");
    assert_eq!(core.counters().status_server_answered, 1);
    assert_eq!(core.counters().handled, 0);
}

#[test]
fn radclient_with_the_wrong_secret_gets_no_answer() {
    let Some(path) = find_program("radclient", "freeradius-utils") else {
        return;
    };
    let server = RunningServer::start();
    let out = radclient(&path, server.port, "auth", "wrong-secret", AUTH_REQUEST);
    let core = server.stop();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "radclient got an answer: {stdout}");
    assert!(!stdout.contains("Received"), "{stdout}");
    assert!(core.counters().dropped(DropReason::BadMessageAuthenticator) >= 1);
    assert_eq!(core.counters().handled, 0);
}

#[test]
fn radclient_access_request_without_message_authenticator_gets_no_answer_and_is_counted() {
    let Some(path) = find_program("radclient", "freeradius-utils") else {
        return;
    };
    let server = RunningServer::start();
    let out = radclient(
        &path,
        server.port,
        "auth",
        SECRET,
        "User-Name = \"device-1\", User-Password = \"pw\"\n",
    );
    let core = server.stop();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "radclient got an answer: {stdout}");
    assert!(!stdout.contains("Received"), "{stdout}");
    assert!(
        core.counters()
            .dropped(DropReason::MissingMessageAuthenticator)
            >= 1
    );
    assert_eq!(core.counters().handled, 0);
}
