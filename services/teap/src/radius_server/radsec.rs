//! RadSec (RFC 6614, RADIUS over TLS on TCP) around the same sans-IO [`RadiusServer`] core and
//! [`Handler`] as the [`udp`](super::udp) shell: the core decides, this module only moves bytes.
//!
//! The transport rules it applies (RFC 6614, with the TCP rules of RFC 6613 it builds on):
//! - TLS 1.2 or later with mutual authentication: a client must present a certificate chaining
//!   to the configured client CA, else the handshake fails; its source address must also be in
//!   the core's client table (checked before the handshake, so unknown sources cost nothing).
//! - The RADIUS shared secret on a TLS connection is the fixed string `radsec`
//!   ([`RADSEC_SECRET`]); the client table handed to the core should carry it.
//! - Packets are framed on the stream by the RADIUS Length field. A Length outside 20..=4096
//!   loses the framing, so the connection is closed. RFC 6613 §2.6.4 turns "silently discard"
//!   into "discard and close" over TCP: a packet the core drops as malformed, unauthenticated,
//!   of an unsupported code or from an unknown client closes its connection too; a duplicate
//!   still in progress or a handler's [`Handled::Discard`](super::Handled::Discard) does not.
//! - Clients do not retransmit on a connection (TCP does), but a client that lost a
//!   connection may send the request again on a new one, and a proxy may forward a duplicate.
//!   The core keys requests by source address and port, which for TCP names one connection: a
//!   duplicate on the same connection gets the cached answer, one on a new connection reaches
//!   the handler again (the TEAP gateway then sees a repeated EAP step for its State).
//! - Status-Server (RFC 5997) is answered by the core as on UDP and serves as keepalive.
//!
//! One task owns the core; each connection has its own task (TLS, framing, writes) and a
//! bounded queue of replies. A deferred request's completion goes back to the connection the
//! request came on, and is dropped if that connection has closed meanwhile.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::udp::{Completion, Completions};
use super::{Action, DropReason, Handler, RadiusServer, RequestKey};
use crate::radius::{HEADER_LEN, MAX_PACKET_LEN};

/// The shared secret of every RADIUS/TLS connection (RFC 6614 §2.3).
pub const RADSEC_SECRET: &[u8] = b"radsec";

/// The IANA port for RADIUS/TLS (RFC 6614 §2.1).
pub const RADSEC_PORT: u16 = 2083;

/// Connection bounds.
#[derive(Debug, Clone, Copy)]
pub struct RadsecLimits {
    /// Connections open at once; one beyond is closed right after accept.
    pub max_connections: usize,
    /// A connection silent this long (no packet, no Status-Server) is closed.
    pub idle_timeout: Duration,
    /// Time for the TLS handshake to complete.
    pub handshake_timeout: Duration,
    /// Replies queued for one connection; a client not reading them is disconnected.
    pub max_queued_replies: usize,
}

impl Default for RadsecLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            idle_timeout: Duration::from_secs(120),
            handshake_timeout: Duration::from_secs(10),
            max_queued_replies: 256,
        }
    }
}

/// Connection-level counters (packet-level ones are the core's [`Counters`](super::Counters)
/// and the `observe` callback, as on UDP).
#[derive(Debug, Default)]
pub struct RadsecStats {
    pub accepted: AtomicU64,
    pub refused_unknown_client: AtomicU64,
    pub refused_too_many: AtomicU64,
    pub tls_failed: AtomicU64,
    pub closed_malformed: AtomicU64,
    pub closed_idle: AtomicU64,
    pub closed_slow_reader: AtomicU64,
    pub completions_for_closed: AtomicU64,
    pub open: AtomicU64,
}

impl RadsecStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RadsecConfigError {
    #[error("RadSec client CA: {0}")]
    ClientCa(String),
    #[error("RadSec TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// The server side TLS configuration: TLS 1.2 and 1.3 (aws-lc-rs), the server chain and key,
/// and a client certificate required and verified against `client_cas`.
pub fn radsec_tls_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_cas: &[CertificateDer<'static>],
) -> Result<Arc<ServerConfig>, RadsecConfigError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in client_cas {
        roots
            .add(ca.clone())
            .map_err(|e| RadsecConfigError::ClientCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(RadsecConfigError::ClientCa(
            "no client CA certificate: RadSec requires mutual authentication".into(),
        ));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| RadsecConfigError::ClientCa(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// What the connection tasks tell the core task.
enum Event {
    Packet { connection: u64, packet: Vec<u8> },
    Closed { connection: u64 },
}

/// What the core task tells a connection task.
enum Outbound {
    Send(Vec<u8>),
    Close,
}

struct Connection {
    source: SocketAddr,
    outbound: mpsc::Sender<Outbound>,
}

/// The RadSec listener: TLS configuration, bounds and counters.
pub struct RadsecServer {
    tls: Arc<ServerConfig>,
    limits: RadsecLimits,
    stats: Arc<RadsecStats>,
}

impl RadsecServer {
    pub fn new(tls: Arc<ServerConfig>, limits: RadsecLimits) -> Self {
        Self {
            tls,
            limits,
            stats: Arc::new(RadsecStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<RadsecStats> {
        Arc::clone(&self.stats)
    }

    /// Serves until `shutdown` resolves, then closes every connection and hands the core back.
    /// `observe` sees every packet (`Some(packet)`) and completion (`None`) with what became of
    /// it, as with [`udp::serve_observed`](super::udp::serve_observed).
    pub async fn serve<H, S, O>(
        self,
        listener: TcpListener,
        mut core: RadiusServer<H>,
        completions: Completions,
        mut observe: O,
        shutdown: S,
    ) -> std::io::Result<RadiusServer<H>>
    where
        H: Handler,
        S: Future<Output = ()>,
        O: FnMut(Option<&[u8]>, &Action),
    {
        let acceptor = TlsAcceptor::from(Arc::clone(&self.tls));
        // Each connection waits for the core before reading on, so this bound only smooths
        // bursts across connections.
        let (events_tx, mut events) = mpsc::channel::<Event>(self.limits.max_connections.max(1));
        let mut connections: HashMap<u64, Connection> = HashMap::new();
        // Deferred requests by the connection they came on.
        let mut deferred: HashMap<RequestKey, u64> = HashMap::new();
        let mut next_id: u64 = 0;
        let mut completions = Some(completions);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, source) = match accepted {
                        Ok(accepted) => accepted,
                        // Out of descriptors or a connection reset before accept: transient.
                        Err(error) => {
                            tracing::warn!(%error, "RadSec accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    if core.client_for(source.ip()).is_none() {
                        RadsecStats::bump(&self.stats.refused_unknown_client);
                        tracing::debug!(%source, "RadSec connection from unknown client closed");
                        continue;
                    }
                    if connections.len() >= self.limits.max_connections {
                        RadsecStats::bump(&self.stats.refused_too_many);
                        tracing::warn!(%source, max = self.limits.max_connections,
                            "RadSec connection refused: too many connections");
                        continue;
                    }
                    next_id += 1;
                    let id = next_id;
                    let (outbound_tx, outbound_rx) =
                        mpsc::channel(self.limits.max_queued_replies.max(1));
                    connections.insert(id, Connection { source, outbound: outbound_tx });
                    RadsecStats::bump(&self.stats.accepted);
                    self.stats.open.store(connections.len() as u64, Ordering::Relaxed);
                    tokio::spawn(run_connection(
                        id,
                        stream,
                        source,
                        acceptor.clone(),
                        self.limits,
                        Arc::clone(&self.stats),
                        events_tx.clone(),
                        outbound_rx,
                    ));
                }
                completion = next_completion(&mut completions) => {
                    let Some(Completion { key, reply }) = completion else {
                        completions = None;
                        continue;
                    };
                    let connection = deferred.remove(&key);
                    // Completed even when the connection is gone, so the core's cache holds the
                    // answer rather than an entry in progress.
                    let Some(bytes) = core.complete(key, reply, Instant::now()) else {
                        tracing::debug!(source = %key.source, identifier = key.identifier,
                            "deferred RADIUS reply came too late; the request expired");
                        continue;
                    };
                    match connection.filter(|id| connections.contains_key(id)) {
                        Some(id) => queue(&self.stats, &mut connections, id, bytes.clone()),
                        None => {
                            RadsecStats::bump(&self.stats.completions_for_closed);
                            tracing::debug!(source = %key.source,
                                "deferred RADIUS reply for a closed RadSec connection dropped");
                        }
                    }
                    observe(None, &Action::Send(bytes));
                }
                event = events.recv() => {
                    // `events_tx` lives in this loop, so the channel never closes here.
                    let Some(event) = event else { continue };
                    match event {
                        Event::Closed { connection } => {
                            connections.remove(&connection);
                            deferred.retain(|_, id| *id != connection);
                            self.stats.open.store(connections.len() as u64, Ordering::Relaxed);
                        }
                        Event::Packet { connection, packet } => {
                            let Some(source) = connections.get(&connection).map(|c| c.source)
                            else {
                                continue;
                            };
                            let action = core.receive(&packet, source, Instant::now());
                            match &action {
                                Action::Send(reply) => {
                                    queue(&self.stats, &mut connections, connection, reply.clone());
                                }
                                Action::Deferred(key) => {
                                    deferred.insert(*key, connection);
                                }
                                Action::Drop(reason) if closes_connection(*reason) => {
                                    tracing::debug!(%source, ?reason,
                                        "RadSec packet dropped; closing its connection");
                                    RadsecStats::bump(&self.stats.closed_malformed);
                                    if let Some(target) = connections.remove(&connection) {
                                        let _ = target.outbound.try_send(Outbound::Close);
                                    }
                                }
                                Action::Drop(reason) => {
                                    tracing::debug!(%source, ?reason, "RadSec packet dropped");
                                }
                            }
                            observe(Some(&packet), &action);
                        }
                    }
                }
            }
        }
        // Dropping the queues ends every connection task.
        drop(connections);
        Ok(core)
    }
}

/// RFC 6613 §2.6.4: what UDP silently discards closes a TCP connection, except drops that say
/// nothing about the peer's framing or honesty.
fn closes_connection(reason: DropReason) -> bool {
    match reason {
        DropReason::UnknownClient
        | DropReason::Malformed
        | DropReason::MissingMessageAuthenticator
        | DropReason::BadMessageAuthenticator
        | DropReason::UnsupportedCode => true,
        DropReason::DuplicateInProgress
        | DropReason::ResponseEncodingFailed
        | DropReason::DiscardedByHandler => false,
    }
}

/// Queues a reply; a connection whose queue is full (its client does not read) is forgotten,
/// which drops its queue's sender: the task writes what is queued, then closes.
fn queue(stats: &RadsecStats, connections: &mut HashMap<u64, Connection>, id: u64, bytes: Vec<u8>) {
    let Some(connection) = connections.get(&id) else {
        return;
    };
    match connection.outbound.try_send(Outbound::Send(bytes)) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            RadsecStats::bump(&stats.closed_slow_reader);
            tracing::warn!(source = %connection.source, connection = id,
                "RadSec reply queue full; closing the connection");
            connections.remove(&id);
        }
        // The task is ending; its Closed event follows.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

async fn next_completion(completions: &mut Option<Completions>) -> Option<Completion> {
    match completions {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_connection(
    id: u64,
    stream: TcpStream,
    source: SocketAddr,
    acceptor: TlsAcceptor,
    limits: RadsecLimits,
    stats: Arc<RadsecStats>,
    events: mpsc::Sender<Event>,
    outbound: mpsc::Receiver<Outbound>,
) {
    // RADIUS replies are small and latency matters more than packing.
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            tracing::debug!(%source, connection = id, "RadSec connection established");
            let end = pump(id, tls, limits, &stats, &events, outbound).await;
            tracing::debug!(%source, connection = id, %end, "RadSec connection closed");
        }
        Ok(Err(error)) => {
            RadsecStats::bump(&stats.tls_failed);
            tracing::info!(%source, %error, "RadSec TLS handshake failed");
        }
        Err(_) => {
            RadsecStats::bump(&stats.tls_failed);
            tracing::info!(%source, "RadSec TLS handshake timed out");
        }
    }
    let _ = events.send(Event::Closed { connection: id }).await;
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    PeerClosed,
    Idle,
    MalformedLength(u16),
    ClosedByServer,
    Io(std::io::ErrorKind),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::PeerClosed => f.write_str("closed by the client"),
            End::Idle => f.write_str("idle timeout"),
            End::MalformedLength(length) => write!(f, "RADIUS Length {length} out of range"),
            End::ClosedByServer => f.write_str("closed by the server"),
            End::Io(kind) => write!(f, "I/O error: {kind}"),
        }
    }
}

/// Reads framed packets and writes queued replies until one side ends.
async fn pump<T>(
    id: u64,
    mut tls: T,
    limits: RadsecLimits,
    stats: &RadsecStats,
    events: &mpsc::Sender<Event>,
    mut outbound: mpsc::Receiver<Outbound>,
) -> End
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    // One packet is at most 4096 octets, so a full buffer always holds a whole packet.
    let mut buffer = vec![0u8; MAX_PACKET_LEN];
    let mut filled = 0usize;
    let end = loop {
        let idle = tokio::time::sleep(limits.idle_timeout);
        let free = match buffer.get_mut(filled..) {
            Some(free) => free,
            None => break End::MalformedLength(0),
        };
        tokio::select! {
            reply = outbound.recv() => match reply {
                Some(Outbound::Send(bytes)) => {
                    if let Err(error) = tls.write_all(&bytes).await {
                        break End::Io(error.kind());
                    }
                    if let Err(error) = tls.flush().await {
                        break End::Io(error.kind());
                    }
                }
                Some(Outbound::Close) | None => break End::ClosedByServer,
            },
            () = idle => {
                RadsecStats::bump(&stats.closed_idle);
                break End::Idle;
            }
            read = tls.read(free) => match read {
                Ok(0) => break End::PeerClosed,
                Ok(n) => {
                    filled += n;
                    match deliver(id, &mut buffer, &mut filled, events).await {
                        Ok(()) => {}
                        Err(end) => {
                            if matches!(end, End::MalformedLength(_)) {
                                RadsecStats::bump(&stats.closed_malformed);
                            }
                            break end;
                        }
                    }
                }
                Err(error) => break End::Io(error.kind()),
            },
        }
    };
    // A polite close_notify; the peer may already be gone.
    let _ = tls.shutdown().await;
    end
}

/// Hands every whole packet in `buffer[..filled]` to the core task, keeping the remainder.
async fn deliver(
    id: u64,
    buffer: &mut [u8],
    filled: &mut usize,
    events: &mpsc::Sender<Event>,
) -> Result<(), End> {
    loop {
        // Code, Identifier, then the 2-octet Length: enough to frame.
        let Some(&[_, _, high, low]) = buffer.get(..*filled).and_then(|b| b.get(..4)) else {
            return Ok(());
        };
        let length = u16::from_be_bytes([high, low]);
        let len = usize::from(length);
        if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&len) {
            return Err(End::MalformedLength(length));
        }
        let Some(packet) = buffer.get(..len).filter(|_| len <= *filled) else {
            return Ok(());
        };
        let packet = packet.to_vec();
        if events
            .send(Event::Packet {
                connection: id,
                packet,
            })
            .await
            .is_err()
        {
            return Err(End::ClosedByServer);
        }
        buffer.copy_within(len..*filled, 0);
        *filled -= len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_discards_that_close_a_tcp_connection() {
        assert!(closes_connection(DropReason::Malformed));
        assert!(closes_connection(DropReason::BadMessageAuthenticator));
        assert!(closes_connection(DropReason::MissingMessageAuthenticator));
        assert!(closes_connection(DropReason::UnknownClient));
        assert!(!closes_connection(DropReason::DuplicateInProgress));
        assert!(!closes_connection(DropReason::DiscardedByHandler));
    }
}
