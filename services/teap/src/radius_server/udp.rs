//! Thin tokio shell around [`crate::radius_server`]: receive a datagram, hand it with its source
//! and the current time to the core, send whatever the core says. All decisions live in the
//! core; this loop only does I/O.

use std::future::Future;
use std::time::Instant;

use tokio::net::UdpSocket;

use super::{Action, Handler, RadiusServer};
use crate::radius::MAX_PACKET_LEN;

/// Serve RADIUS on `socket` until `shutdown` resolves, then hand the core back (its counters
/// and cache survive for inspection or a restart on another socket).
///
/// Deferred requests ([`crate::radius_server::Handled::Deferred`]) are not completed by this
/// loop yet: a handler used here must answer immediately.
pub async fn serve<H, S>(
    socket: UdpSocket,
    mut core: RadiusServer<H>,
    shutdown: S,
) -> std::io::Result<RadiusServer<H>>
where
    H: Handler,
    S: Future<Output = ()>,
{
    // RFC 2865 §3 / RFC 7930: a RADIUS packet is at most 4096 octets; a longer datagram is
    // truncated to 4096 here and the core rejects it by its Length field if that lies.
    let mut buffer = vec![0u8; MAX_PACKET_LEN];
    tokio::pin!(shutdown);
    loop {
        let (len, source) = tokio::select! {
            () = &mut shutdown => return Ok(core),
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
        match core.receive(datagram, source, Instant::now()) {
            Action::Send(reply) => {
                if let Err(error) = socket.send_to(&reply, source).await {
                    tracing::warn!(%source, %error, "sending RADIUS reply failed");
                }
            }
            Action::Drop(reason) => {
                tracing::debug!(%source, ?reason, "RADIUS datagram dropped");
            }
            Action::Deferred(key) => {
                tracing::warn!(%source, identifier = key.identifier,
                    "handler deferred a request but the UDP loop cannot complete deferred requests yet");
            }
        }
    }
}
