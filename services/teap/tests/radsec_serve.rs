//! The RadSec shell (RFC 6614) on loopback with a rustls client: Status-Server and
//! Access-Request answered and verified with the secret `radsec`, deferred replies routed back
//! to the connection their request came on, mutual TLS enforced (no client certificate, or one
//! from another CA, is refused at TLS), unknown sources closed before TLS, and a bad Length or a
//! bad Message-Authenticator closing only its own connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ragw_teap::radius::{Attribute, Code, Packet, attr};
use ragw_teap::radius_server::radsec::{
    RADSEC_SECRET, RadsecLimits, RadsecServer, RadsecStats, radsec_tls_config,
};
use ragw_teap::radius_server::udp::{Completer, completion_channel};
use ragw_teap::radius_server::{
    CacheLimits, Client, ClientTable, Handled, Handler, IpPrefix, RadiusServer, Reply, RequestKey,
    Secret,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const SERVER_NAME: &str = "radsec.example.test";

struct Ca {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

fn leaf(
    ca: &Ca,
    name: &str,
    purpose: ExtendedKeyUsagePurpose,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![purpose];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (
        vec![cert.der().clone(), ca.cert.clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// Accepts every Access-Request at once, except user names starting with "defer", whose keys
/// it records for the test to complete.
#[derive(Clone, Default)]
struct TestHandler {
    deferred: Arc<Mutex<Vec<(String, RequestKey)>>>,
}

impl Handler for TestHandler {
    fn handle(&mut self, key: RequestKey, _client: &Client, request: &Packet) -> Handled {
        let user = String::from_utf8_lossy(request.attribute(attr::USER_NAME).unwrap_or_default())
            .into_owned();
        if user.starts_with("defer") {
            self.deferred.lock().unwrap().push((user, key));
            return Handled::Deferred;
        }
        Handled::Reply(Reply {
            code: Code::AccessAccept,
            attributes: vec![Attribute::new(attr::REPLY_MESSAGE, format!("hello {user}"))],
        })
    }
}

struct Harness {
    addr: SocketAddr,
    ca: Ca,
    stats: Arc<RadsecStats>,
    handler: TestHandler,
    completer: Completer,
    shutdown: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<RadiusServer<TestHandler>>,
}

impl Harness {
    async fn start(allowed: &str) -> Harness {
        Harness::start_with(allowed, RadsecLimits::default()).await
    }

    async fn start_with(allowed: &str, limits: RadsecLimits) -> Harness {
        let ca = ca("radsec test CA");
        let (chain, key) = leaf(&ca, SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth);
        let tls = radsec_tls_config(chain, key, std::slice::from_ref(&ca.cert)).unwrap();
        let mut clients = ClientTable::new();
        clients.insert(
            allowed.parse::<IpPrefix>().unwrap(),
            Client {
                name: "proxy".into(),
                secret: Secret::new(RADSEC_SECRET).unwrap(),
            },
        );
        let handler = TestHandler::default();
        let core = RadiusServer::new(clients, handler.clone(), CacheLimits::default());
        let (completer, completions) = completion_channel();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = RadsecServer::new(tls, limits);
        let stats = server.stats();
        let (shutdown, stop) = oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            server
                .serve(listener, core, completions, |_, _| {}, async {
                    let _ = stop.await;
                })
                .await
                .unwrap()
        });
        Harness {
            addr,
            ca,
            stats,
            handler,
            completer,
            shutdown: Some(shutdown),
            served,
        }
    }

    fn client_cert(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        leaf(
            &self.ca,
            "proxy.example.test",
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    async fn connect(
        &self,
        client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.cert.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match client_auth {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
            None => builder.with_no_client_auth(),
        };
        let tcp = TcpStream::connect(self.addr).await?;
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(SERVER_NAME).unwrap(), tcp)
            .await
    }

    async fn connect_ok(&self) -> TlsStream<TcpStream> {
        self.connect(Some(self.client_cert())).await.unwrap()
    }

    async fn stop(mut self) -> RadiusServer<TestHandler> {
        let _ = self.shutdown.take().unwrap().send(());
        self.served.await.unwrap()
    }
}

fn request(code: Code, identifier: u8, user: Option<&str>) -> Packet {
    let mut packet = Packet {
        code,
        identifier,
        authenticator: rand::random(),
        attributes: Vec::new(),
    };
    if let Some(user) = user {
        packet.push(Attribute::new(attr::USER_NAME, user.as_bytes()));
    }
    packet
}

/// Reads one packet framed by its Length; `None` at end of stream or on a TLS error.
async fn read_packet(stream: &mut TlsStream<TcpStream>) -> Option<Vec<u8>> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.ok()?;
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut packet = header.to_vec();
    packet.resize(len, 0);
    stream.read_exact(&mut packet[4..]).await.ok()?;
    Some(packet)
}

async fn ask(stream: &mut TlsStream<TcpStream>, request: &Packet) -> Packet {
    stream
        .write_all(&request.encode_request(RADSEC_SECRET).unwrap())
        .await
        .unwrap();
    let bytes = read_packet(stream).await.expect("a response");
    Packet::parse_verified_response(&bytes, request, RADSEC_SECRET).expect("response verifies")
}

/// The connection is closed (or refused) without an answer to a well-formed Status-Server.
async fn is_refused(stream: std::io::Result<TlsStream<TcpStream>>) -> bool {
    let Ok(mut stream) = stream else {
        return true;
    };
    let probe = request(Code::StatusServer, 1, None);
    if stream
        .write_all(&probe.encode_request(RADSEC_SECRET).unwrap())
        .await
        .is_err()
    {
        return true;
    }
    read_packet(&mut stream).await.is_none()
}

/// Waits (bounded) for the server task to count what the client already saw.
async fn counted(counter: &AtomicU64) -> u64 {
    for _ in 0..200 {
        let value = RadsecStats::get(counter);
        if value > 0 {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    RadsecStats::get(counter)
}

#[tokio::test]
async fn status_server_and_access_request_answered_with_the_radsec_secret() {
    let harness = Harness::start("127.0.0.1").await;
    let mut stream = harness.connect_ok().await;

    let status = request(Code::StatusServer, 7, None);
    assert_eq!(ask(&mut stream, &status).await.code, Code::AccessAccept);

    let access = request(Code::AccessRequest, 8, Some("alice"));
    let reply = ask(&mut stream, &access).await;
    assert_eq!(reply.code, Code::AccessAccept);
    assert_eq!(
        reply.attribute(attr::REPLY_MESSAGE),
        Some(&b"hello alice"[..])
    );

    // Two packets in one write, and one split across writes: framing is by Length only.
    let first = request(Code::AccessRequest, 9, Some("bob"));
    let second = request(Code::AccessRequest, 10, Some("carol"));
    let mut both = first.encode_request(RADSEC_SECRET).unwrap();
    both.extend(second.encode_request(RADSEC_SECRET).unwrap());
    let (head, tail) = both.split_at(7);
    stream.write_all(head).await.unwrap();
    stream.flush().await.unwrap();
    stream.write_all(tail).await.unwrap();
    for expected in [&first, &second] {
        let bytes = read_packet(&mut stream).await.unwrap();
        let reply = Packet::parse_verified_response(&bytes, expected, RADSEC_SECRET).unwrap();
        assert_eq!(reply.code, Code::AccessAccept);
    }

    // A duplicate on the same connection gets the cached bytes, not a second handler call.
    let again = ask(&mut stream, &access).await;
    assert_eq!(
        again.attribute(attr::REPLY_MESSAGE),
        Some(&b"hello alice"[..])
    );
    drop(stream);
    let core = harness.stop().await;
    assert_eq!(core.counters().handled, 3);
    assert_eq!(core.counters().retransmissions_answered, 1);
    assert_eq!(core.counters().status_server_answered, 1);
}

#[tokio::test]
async fn deferred_replies_go_back_to_the_connection_of_their_request() {
    let harness = Harness::start("127.0.0.1").await;
    let mut one = harness.connect_ok().await;
    let mut two = harness.connect_ok().await;
    // Same identifier on both connections: the keys differ by source port.
    let request_one = request(Code::AccessRequest, 42, Some("defer-one"));
    let request_two = request(Code::AccessRequest, 42, Some("defer-two"));
    for (stream, req) in [(&mut one, &request_one), (&mut two, &request_two)] {
        stream
            .write_all(&req.encode_request(RADSEC_SECRET).unwrap())
            .await
            .unwrap();
    }
    let keys = loop {
        let deferred = harness.handler.deferred.lock().unwrap().clone();
        if deferred.len() == 2 {
            break deferred;
        }
        drop(deferred);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_ne!(keys[0].1.source, keys[1].1.source);
    // Completed in reverse order of arrival.
    for (user, key) in keys.iter().rev() {
        assert!(harness.completer.complete(
            *key,
            Reply {
                code: Code::AccessReject,
                attributes: vec![Attribute::new(attr::REPLY_MESSAGE, format!("for {user}"))],
            },
        ));
    }
    for (stream, req, user) in [
        (&mut one, &request_one, "defer-one"),
        (&mut two, &request_two, "defer-two"),
    ] {
        let bytes = read_packet(stream).await.unwrap();
        let reply = Packet::parse_verified_response(&bytes, req, RADSEC_SECRET)
            .expect("the reply answers this connection's request");
        assert_eq!(reply.code, Code::AccessReject);
        assert_eq!(
            reply.attribute(attr::REPLY_MESSAGE),
            Some(format!("for {user}").as_bytes())
        );
    }
    harness.stop().await;
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_at_tls() {
    let harness = Harness::start("127.0.0.1").await;
    assert!(is_refused(harness.connect(None).await).await);
    assert_eq!(counted(&harness.stats.tls_failed).await, 1);
    // The listener still serves a proper client.
    let mut stream = harness.connect_ok().await;
    let status = request(Code::StatusServer, 1, None);
    assert_eq!(ask(&mut stream, &status).await.code, Code::AccessAccept);
    let core = harness.stop().await;
    assert_eq!(core.counters().status_server_answered, 1);
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_at_tls() {
    let harness = Harness::start("127.0.0.1").await;
    let stranger = ca("another CA");
    let cert = leaf(
        &stranger,
        "proxy.example.test",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    assert!(is_refused(harness.connect(Some(cert)).await).await);
    assert_eq!(counted(&harness.stats.tls_failed).await, 1);
    let core = harness.stop().await;
    assert_eq!(core.counters().status_server_answered, 0);
}

#[tokio::test]
async fn a_source_outside_the_client_table_is_closed_before_tls() {
    let harness = Harness::start("192.0.2.0/24").await;
    assert!(is_refused(harness.connect(Some(harness.client_cert())).await).await);
    assert_eq!(counted(&harness.stats.refused_unknown_client).await, 1);
    assert_eq!(RadsecStats::get(&harness.stats.tls_failed), 0);
    harness.stop().await;
}

#[tokio::test]
async fn a_malformed_length_closes_that_connection_only() {
    let harness = Harness::start("127.0.0.1").await;
    let mut healthy = harness.connect_ok().await;
    for bad_length in [19u16, 4097] {
        let mut broken = harness.connect_ok().await;
        let mut bytes = vec![1u8, 3];
        bytes.extend(bad_length.to_be_bytes());
        bytes.extend([0u8; 16]);
        broken.write_all(&bytes).await.unwrap();
        assert!(read_packet(&mut broken).await.is_none(), "closed");
    }
    let status = request(Code::StatusServer, 2, None);
    assert_eq!(ask(&mut healthy, &status).await.code, Code::AccessAccept);
    assert_eq!(RadsecStats::get(&harness.stats.closed_malformed), 2);
    harness.stop().await;
}

#[tokio::test]
async fn a_request_signed_with_another_secret_closes_its_connection() {
    let harness = Harness::start("127.0.0.1").await;
    let mut stream = harness.connect_ok().await;
    let forged = request(Code::AccessRequest, 3, Some("mallory"));
    stream
        .write_all(&forged.encode_request(b"testing123").unwrap())
        .await
        .unwrap();
    assert!(read_packet(&mut stream).await.is_none(), "closed");
    let core = harness.stop().await;
    assert_eq!(core.counters().handled, 0);
    assert_eq!(
        core.counters()
            .dropped(ragw_teap::radius_server::DropReason::BadMessageAuthenticator),
        1
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_and_a_silent_one_times_out() {
    let limits = RadsecLimits {
        max_connections: 1,
        idle_timeout: Duration::from_millis(300),
        ..RadsecLimits::default()
    };
    let harness = Harness::start_with("127.0.0.1", limits).await;
    let mut first = harness.connect_ok().await;
    let status = request(Code::StatusServer, 1, None);
    assert_eq!(ask(&mut first, &status).await.code, Code::AccessAccept);
    assert!(is_refused(harness.connect(Some(harness.client_cert())).await).await);
    assert_eq!(counted(&harness.stats.refused_too_many).await, 1);
    // The first connection, silent from now on, is closed by the server.
    assert!(
        read_packet(&mut first).await.is_none(),
        "idle connection closed"
    );
    assert_eq!(counted(&harness.stats.closed_idle).await, 1);
    // Its slot is free again.
    let mut tries = 0;
    let mut again = loop {
        tries += 1;
        assert!(tries < 200, "the freed connection slot was never reused");
        let mut stream = harness.connect_ok().await;
        let probe = request(Code::StatusServer, 2, None);
        stream
            .write_all(&probe.encode_request(RADSEC_SECRET).unwrap())
            .await
            .unwrap();
        if let Some(bytes) = read_packet(&mut stream).await {
            Packet::parse_verified_response(&bytes, &probe, RADSEC_SECRET).unwrap();
            break stream;
        }
        // The server may not have seen the idle connection's end yet.
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let status = request(Code::StatusServer, 3, None);
    assert_eq!(ask(&mut again, &status).await.code, Code::AccessAccept);
    harness.stop().await;
}
