//! Thin tokio shell around [`crate::radius_server`]: receive a datagram, hand it with its source
//! and the current time to the core, send whatever the core says. All decisions live in the
//! core; this loop only does I/O.
//!
//! Deferred requests: a [`Handler`] that needs to wait on another service (the registrar)
//! answers [`Handled::Deferred`](crate::radius_server::Handled::Deferred), starts its work (for
//! example a spawned task) and, when done, hands the reply to a [`Completer`] it was built with.
//! The loop feeds that to [`RadiusServer::complete`] and sends the result. Meanwhile it keeps
//! serving: retransmissions of the waiting request are dropped by the core (the NAS retries
//! again), and once the reply is sent, later retransmissions get the same bytes from the
//! core's cache.

use std::future::Future;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{Action, Handler, RadiusServer, Reply, RequestKey};
use crate::radius::MAX_PACKET_LEN;

/// The reply to a request the handler deferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub key: RequestKey,
    pub reply: Reply,
}

/// The sending side, held by the handler (and cloned into its tasks).
#[derive(Debug, Clone)]
pub struct Completer(mpsc::UnboundedSender<Completion>);

impl Completer {
    /// Hands the reply for `key` to the loop. `false` when the loop is gone (shut down), so
    /// there is nobody to answer anymore.
    pub fn complete(&self, key: RequestKey, reply: Reply) -> bool {
        self.0.send(Completion { key, reply }).is_ok()
    }
}

/// The receiving side, given to [`serve`].
#[derive(Debug)]
pub struct Completions(mpsc::UnboundedReceiver<Completion>);

impl Completions {
    /// The next completion, for a caller driving a handler without [`serve`] (tests);
    /// `None` once every [`Completer`] is gone.
    pub async fn recv(&mut self) -> Option<Completion> {
        self.0.recv().await
    }
}

/// A channel for deferred replies. Unbounded on purpose: every completion belongs to a request
/// the core holds in its bounded cache, so the handler's own bound on work in flight bounds
/// the queue, and a finished task never blocks on a busy loop.
pub fn completion_channel() -> (Completer, Completions) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Completer(tx), Completions(rx))
}

/// Serve RADIUS on `socket` until `shutdown` resolves, then hand the core back (its counters
/// and cache survive for inspection or a restart on another socket). `completions` carries the
/// replies of deferred requests; a handler that never defers can pass a channel whose
/// [`Completer`] was dropped.
pub async fn serve<H, S>(
    socket: UdpSocket,
    core: RadiusServer<H>,
    completions: Completions,
    shutdown: S,
) -> std::io::Result<RadiusServer<H>>
where
    H: Handler,
    S: Future<Output = ()>,
{
    serve_observed(socket, core, completions, |_, _| {}, shutdown).await
}

/// [`serve`], telling `observe` what became of every datagram (`Some(datagram)`) and every
/// completion (`None`): for metrics.
pub async fn serve_observed<H, S, O>(
    socket: UdpSocket,
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
    // RFC 2865 §3 / RFC 7930: a RADIUS packet is at most 4096 octets; a longer datagram is
    // truncated to 4096 here and the core rejects it by its Length field if that lies.
    let mut buffer = vec![0u8; MAX_PACKET_LEN];
    let mut completions = Some(completions.0);
    tokio::pin!(shutdown);
    loop {
        let (len, source) = tokio::select! {
            () = &mut shutdown => return Ok(core),
            completion = next_completion(&mut completions) => {
                match completion {
                    Some(Completion { key, reply }) => {
                        match core.complete(key, reply, Instant::now()) {
                            Some(bytes) => {
                                send(&socket, &bytes, key.source).await;
                                observe(None, &Action::Send(bytes));
                            }
                            None => tracing::debug!(source = %key.source,
                                identifier = key.identifier,
                                "deferred RADIUS reply came too late; the request expired"),
                        }
                    }
                    // Every Completer is gone: nothing will complete anymore.
                    None => completions = None,
                }
                continue;
            }
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                // ICMP port-unreachable from an earlier send surfaces here on some platforms;
                // it says nothing about the next datagram, so keep serving.
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => continue,
                Err(error) => return Err(error),
            },
        };
        let Some(datagram) = buffer.get(..len) else {
            continue;
        };
        let action = core.receive(datagram, source, Instant::now());
        match &action {
            Action::Send(reply) => send(&socket, reply, source).await,
            Action::Drop(reason) => {
                tracing::debug!(%source, ?reason, "RADIUS datagram dropped");
            }
            Action::Deferred(key) => {
                tracing::debug!(%source, identifier = key.identifier,
                    "RADIUS request deferred; its reply comes through the completion channel");
            }
        }
        observe(Some(datagram), &action);
    }
}

async fn next_completion(
    completions: &mut Option<mpsc::UnboundedReceiver<Completion>>,
) -> Option<Completion> {
    match completions {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], target: std::net::SocketAddr) {
    if let Err(error) = socket.send_to(bytes, target).await {
        tracing::warn!(%target, %error, "sending RADIUS reply failed");
    }
}
