//! A thin RADIUS client (RFC 2865, RFC 3579) that carries one [`Peer`] conversation to a RADIUS
//! server as a NAS would: over UDP ([`run_over_radius`]) or RadSec, RADIUS over TLS on TCP
//! (RFC 6614, [`run_over_radsec`]), the same requests either way.
//!
//! Each Access-Request carries User-Name (the outer identity), the EAP-Response split into
//! EAP-Message attributes of at most 253 octets, the State of the last Access-Challenge, the
//! optional Calling-Station-Id / NAS-Identifier / Framed-MTU, and a Message-Authenticator
//! (`ragw_teap::radius::Packet::encode_request` puts it first). Responses must verify
//! (Response Authenticator and Message-Authenticator, which is required here); datagrams that do
//! not are ignored while waiting. After a timeout the very same datagram is sent again (same
//! identifier and authenticator), so a server that deferred the request answers it later.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ragw_teap::radius::{
    self, AUTHENTICATOR_LEN, Attribute, Code, MS_MPPE_RECV_KEY, MS_MPPE_SEND_KEY, Packet,
    VENDOR_MICROSOFT, attr,
};
use ragw_teap::radius_server::radsec::RADSEC_SECRET;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::{Peer, PeerError, PeerOutcome, PeerStep};

/// NAS-side attributes and timing for [`run_over_radius`].
#[derive(Debug, Clone)]
pub struct RadiusAttrs {
    pub calling_station_id: Option<String>,
    pub nas_identifier: Option<String>,
    pub framed_mtu: Option<u32>,
    /// Wait this long for a verified response before retransmitting.
    pub timeout: Duration,
    /// Transmissions of one request (first send included) before giving up.
    pub max_tries: u32,
}

impl Default for RadiusAttrs {
    fn default() -> Self {
        Self {
            calling_station_id: None,
            nas_identifier: None,
            framed_mtu: None,
            timeout: Duration::from_secs(1),
            max_tries: 5,
        }
    }
}

/// The end of a conversation over RADIUS.
#[derive(Debug)]
pub struct RadiusOutcome {
    /// The peer's view (its own derived MSK in `peer.keys`).
    pub peer: PeerOutcome,
    /// Access-Accept (true) or Access-Reject (false).
    pub accepted: bool,
    /// MS-MPPE-Recv-Key || MS-MPPE-Send-Key of the Access-Accept (the server's MSK), if present.
    pub radius_msk: Option<[u8; 64]>,
    /// Reply-Message attributes of the final response.
    pub reply_messages: Vec<String>,
    /// Access-Requests sent (distinct requests, not counting retransmissions).
    pub requests: u32,
    /// Retransmissions after a timeout.
    pub retransmissions: u32,
}

/// Runs `peer` against the RADIUS server at `server` with the shared `secret`.
pub async fn run_over_radius(
    peer: Peer,
    server: SocketAddr,
    secret: &[u8],
    attrs: RadiusAttrs,
) -> Result<RadiusOutcome, PeerError> {
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    converse(peer, Transport::Udp(socket), secret, attrs).await
}

/// Runs `peer` against a RadSec (RFC 6614) server at `server`: one TLS connection (`tls` should
/// present the client certificate the server requires; [`crate::radsec_client_tls_config`]
/// builds one), the fixed shared secret `radsec`, and no retransmission: TCP delivers, so
/// `attrs.timeout * attrs.max_tries` bounds the wait for each response instead.
pub async fn run_over_radsec(
    peer: Peer,
    server: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    attrs: RadiusAttrs,
) -> Result<RadiusOutcome, PeerError> {
    let tcp = TcpStream::connect(server).await?;
    tcp.set_nodelay(true)?;
    let stream = TlsConnector::from(tls).connect(server_name, tcp).await?;
    converse(peer, Transport::Tls(Box::new(stream)), RADSEC_SECRET, attrs).await
}

/// How Access-Requests travel.
enum Transport {
    Udp(UdpSocket),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The conversation, whatever the transport.
async fn converse(
    mut peer: Peer,
    mut transport: Transport,
    secret: &[u8],
    attrs: RadiusAttrs,
) -> Result<RadiusOutcome, PeerError> {
    // Fresh randomness per use (no generator held across awaits keeps this future Send).
    let mut radius_identifier: u8 = rand::random();
    // NAS-initiated: the NAS asked for the identity on the link, the peer answered.
    let mut eap_response = peer.identity_response(rand::random());
    let mut state: Option<Vec<u8>> = None;
    let mut requests = 0;
    let mut retransmissions = 0;
    loop {
        let authenticator: [u8; AUTHENTICATOR_LEN] = rand::random();
        let request = build_request(
            radius_identifier,
            authenticator,
            peer.outer_identity(),
            &eap_response,
            state.as_deref(),
            &attrs,
        )?;
        let datagram = request.encode_request(secret)?;
        requests += 1;
        let (response, resent) =
            exchange(&mut transport, &datagram, &request, secret, &attrs).await?;
        retransmissions += resent;
        radius_identifier = radius_identifier.wrapping_add(1);
        if response.attribute(attr::MESSAGE_AUTHENTICATOR).is_none() {
            return Err(PeerError::MissingMessageAuthenticator(code_name(
                response.code,
            )));
        }
        let eap = response.eap_message()?;
        match response.code {
            Code::AccessChallenge => {
                let eap = eap
                    .filter(|e| !e.is_empty())
                    .ok_or(PeerError::ChallengeWithoutEap)?;
                state = response.state().map(<[u8]>::to_vec);
                match peer.receive(&eap) {
                    PeerStep::Send(next) => eap_response = next,
                    PeerStep::Done(outcome) => return Err(PeerError::PeerFinishedEarly(outcome)),
                }
            }
            Code::AccessAccept | Code::AccessReject => {
                let accepted = response.code == Code::AccessAccept;
                let outcome = match eap.filter(|e| !e.is_empty()) {
                    Some(eap) => match peer.receive(&eap) {
                        PeerStep::Done(outcome) => *outcome,
                        PeerStep::Send(_) => PeerOutcome {
                            failure: Some(
                                "the peer wanted to continue after the final RADIUS response"
                                    .into(),
                            ),
                            ..PeerOutcome::default()
                        },
                    },
                    None => PeerOutcome {
                        failure: Some("final RADIUS response without EAP-Message".into()),
                        ..PeerOutcome::default()
                    },
                };
                let radius_msk = if accepted {
                    mppe_msk(&response, secret, &request.authenticator)?
                } else {
                    None
                };
                let reply_messages = response
                    .attributes_of(attr::REPLY_MESSAGE)
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect();
                return Ok(RadiusOutcome {
                    peer: outcome,
                    accepted,
                    radius_msk,
                    reply_messages,
                    requests,
                    retransmissions,
                });
            }
            other => return Err(PeerError::UnexpectedCode(other)),
        }
    }
}

fn build_request(
    identifier: u8,
    authenticator: [u8; AUTHENTICATOR_LEN],
    outer_identity: &str,
    eap: &[u8],
    state: Option<&[u8]>,
    attrs: &RadiusAttrs,
) -> Result<Packet, PeerError> {
    let mut request = Packet {
        code: Code::AccessRequest,
        identifier,
        authenticator,
        attributes: Vec::new(),
    };
    request.push(Attribute::new(attr::USER_NAME, outer_identity.as_bytes()));
    if let Some(nas) = &attrs.nas_identifier {
        request.push(Attribute::new(attr::NAS_IDENTIFIER, nas.as_bytes()));
    }
    if let Some(calling) = &attrs.calling_station_id {
        request.push(Attribute::new(attr::CALLING_STATION_ID, calling.as_bytes()));
    }
    if let Some(mtu) = attrs.framed_mtu {
        request.push(Attribute::new(attr::FRAMED_MTU, mtu.to_be_bytes()));
    }
    for part in radius::eap_message_attributes(eap) {
        request.push(part);
    }
    if let Some(state) = state {
        request.push(Attribute::new(attr::STATE, state));
    }
    Ok(request)
}

/// Sends `datagram` and waits for the response that verifies against `request`. Returns the
/// response and the retransmission count.
async fn exchange(
    transport: &mut Transport,
    datagram: &[u8],
    request: &Packet,
    secret: &[u8],
    attrs: &RadiusAttrs,
) -> Result<(Packet, u32), PeerError> {
    match transport {
        Transport::Udp(socket) => exchange_udp(socket, datagram, request, secret, attrs).await,
        Transport::Tls(stream) => exchange_tls(stream, datagram, request, secret, attrs)
            .await
            .map(|response| (response, 0)),
    }
}

/// Over TCP nothing is retransmitted (RFC 6613 §2.6.1: the transport does it); packets are
/// framed by their Length field.
async fn exchange_tls(
    stream: &mut TlsStream<TcpStream>,
    datagram: &[u8],
    request: &Packet,
    secret: &[u8],
    attrs: &RadiusAttrs,
) -> Result<Packet, PeerError> {
    stream.write_all(datagram).await?;
    stream.flush().await?;
    let tries = attrs.max_tries.max(1);
    let deadline = tokio::time::Instant::now() + attrs.timeout * tries;
    loop {
        let packet = tokio::time::timeout_at(deadline, read_framed(stream))
            .await
            .map_err(|_| PeerError::Timeout { tries })??;
        match Packet::parse_verified_response(&packet, request, secret) {
            Ok(response) => return Ok(response),
            Err(error) => tracing::debug!(%error, "TEAP peer: ignored RadSec packet"),
        }
    }
}

/// One RADIUS packet from the stream, by its Length field.
async fn read_framed(stream: &mut TlsStream<TcpStream>) -> Result<Vec<u8>, PeerError> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await?;
    let [_, _, high, low] = header;
    let len = usize::from(u16::from_be_bytes([high, low]));
    if !(radius::HEADER_LEN..=radius::MAX_PACKET_LEN).contains(&len) {
        return Err(PeerError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("RadSec packet Length {len} out of range"),
        )));
    }
    let mut packet = vec![0u8; len];
    packet[..4].copy_from_slice(&header);
    stream.read_exact(&mut packet[4..]).await?;
    Ok(packet)
}

/// Sends `datagram` and waits for a response that verifies against `request`, retransmitting
/// the same datagram after each timeout. Returns the response and the retransmission count.
async fn exchange_udp(
    socket: &UdpSocket,
    datagram: &[u8],
    request: &Packet,
    secret: &[u8],
    attrs: &RadiusAttrs,
) -> Result<(Packet, u32), PeerError> {
    let tries = attrs.max_tries.max(1);
    let mut buf = vec![0u8; radius::MAX_PACKET_LEN];
    for attempt in 0..tries {
        match socket.send(datagram).await {
            Ok(_) => {}
            // An ICMP port-unreachable from an earlier try surfaces on the next call: the
            // server was not listening yet, which a retransmission may cure.
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(error) => return Err(error.into()),
        }
        let deadline = tokio::time::Instant::now() + attrs.timeout;
        loop {
            let received = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await;
            let Ok(received) = received else {
                break;
            };
            let len = match received {
                Ok(len) => len,
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(error) => return Err(error.into()),
            };
            let Some(bytes) = buf.get(..len) else {
                continue;
            };
            match Packet::parse_verified_response(bytes, request, secret) {
                Ok(response) => return Ok((response, attempt)),
                // A stale answer to an earlier request or a forgery: keep waiting.
                Err(error) => tracing::debug!(%error, "TEAP peer: ignored RADIUS datagram"),
            }
        }
        tracing::debug!(attempt, "TEAP peer: RADIUS timeout, retransmitting");
    }
    Err(PeerError::Timeout { tries })
}

/// MSK = MS-MPPE-Recv-Key || MS-MPPE-Send-Key (RFC 5216 §2.3 assignment); None without them.
fn mppe_msk(
    response: &Packet,
    secret: &[u8],
    request_authenticator: &[u8; AUTHENTICATOR_LEN],
) -> Result<Option<[u8; 64]>, PeerError> {
    let mut recv = None;
    let mut send = None;
    for attribute in &response.attributes {
        let Some(vendor) = attribute.as_vendor_specific() else {
            continue;
        };
        let vendor = vendor?;
        if vendor.vendor_id != VENDOR_MICROSOFT {
            continue;
        }
        for (vendor_type, value) in vendor.sub_attributes {
            let slot = match vendor_type {
                MS_MPPE_RECV_KEY => &mut recv,
                MS_MPPE_SEND_KEY => &mut send,
                _ => continue,
            };
            *slot = Some(radius::decrypt_mppe_key(
                value,
                secret,
                request_authenticator,
            )?);
        }
    }
    match (recv, send) {
        (None, None) => Ok(None),
        (Some(recv), Some(send)) if recv.len() == 32 && send.len() == 32 => {
            let mut msk = [0u8; 64];
            msk[..32].copy_from_slice(&recv);
            msk[32..].copy_from_slice(&send);
            Ok(Some(msk))
        }
        (recv, send) => Err(PeerError::MppeKeys(format!(
            "Recv-Key {} octets, Send-Key {} octets (want 32 each)",
            recv.map_or(0, |k| k.len()),
            send.map_or(0, |k| k.len())
        ))),
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::AccessAccept => "Access-Accept",
        Code::AccessReject => "Access-Reject",
        Code::AccessChallenge => "Access-Challenge",
        _ => "response",
    }
}

#[cfg(test)]
mod tests;
