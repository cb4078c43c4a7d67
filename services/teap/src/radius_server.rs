//! Sans-IO RADIUS server core: datagram + source address + current time in, datagram to send
//! (or a counted reason for silence) out. No sockets, no clock: the [`udp`] shell (or a
//! test) supplies both.
//!
//! What it enforces:
//! - only sources in the [`ClientTable`] are answered (most specific IP/CIDR entry wins, each
//!   with its own [`Secret`]); anything else is dropped and counted, never answered;
//! - every Access-Request and Status-Server must carry a valid Message-Authenticator
//!   (BlastRADIUS hardening), else it is dropped and counted with the reason;
//! - Status-Server (RFC 5997) is answered with Access-Accept without calling the handler;
//! - a retransmission (same source address and port, identifier and Request Authenticator) gets
//!   the very same response bytes from a bounded, expiring cache, without re-running the
//!   [`Handler`]; a duplicate of a request whose answer is still being worked out is dropped.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant};

pub mod radsec;
pub mod udp;

use crate::radius::{AUTHENTICATOR_LEN, Attribute, Code, Packet, RadiusError, attr};

/// A RADIUS shared secret. Its `Debug` and `Display` never show the octets, so it cannot leak
/// through logs or error messages. No `PartialEq`: nothing should compare secrets in
/// variable time.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Refuses an empty secret: RADIUS authenticators over an empty key protect nothing.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, ConfigError> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(ConfigError::EmptySecret);
        }
        Ok(Self(secret))
    }

    /// The octets, for the codec only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Errors in building the server's configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("RADIUS shared secret is empty")]
    EmptySecret,
    #[error("`{0}` is not an IP address or CIDR prefix")]
    BadPrefix(String),
    #[error("prefix length {length} is too long for {address}")]
    PrefixTooLong { address: IpAddr, length: u8 },
}

/// An IP address prefix such as `10.0.0.0/8`, `2001:db8::/32` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    network: IpAddr,
    length: u8,
}

impl IpPrefix {
    pub fn new(address: IpAddr, length: u8) -> Result<Self, ConfigError> {
        let max = max_prefix_len(address);
        if length > max {
            return Err(ConfigError::PrefixTooLong { address, length });
        }
        Ok(Self {
            network: mask(address, length),
            length,
        })
    }

    pub fn single(address: IpAddr) -> Self {
        Self {
            network: address,
            length: max_prefix_len(address),
        }
    }

    pub fn length(&self) -> u8 {
        self.length
    }

    /// Whether `address` lies inside. An IPv4-mapped IPv6 source (`::ffff:a.b.c.d`, what a
    /// dual-stack socket reports) is matched as the IPv4 address it carries.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        address.is_ipv4() == self.network.is_ipv4() && mask(address, self.length) == self.network
    }
}

impl FromStr for IpPrefix {
    type Err = ConfigError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ConfigError::BadPrefix(text.to_owned());
        match text.split_once('/') {
            None => Ok(Self::single(text.parse().map_err(|_| bad())?)),
            Some((address, length)) => Self::new(
                address.parse().map_err(|_| bad())?,
                length.parse().map_err(|_| bad())?,
            ),
        }
    }
}

fn max_prefix_len(address: IpAddr) -> u8 {
    if address.is_ipv4() { 32 } else { 128 }
}

fn mask(address: IpAddr, length: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let kept = u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0);
            IpAddr::V4((bits & kept).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let kept = u128::MAX.checked_shl(128 - u32::from(length)).unwrap_or(0);
            IpAddr::V6((bits & kept).into())
        }
    }
}

/// One RADIUS client (NAS): a name for logs and audit, and its shared secret.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub secret: Secret,
}

/// Which sources may talk to the server, and with which secret.
#[derive(Debug, Clone, Default)]
pub struct ClientTable {
    entries: Vec<(IpPrefix, Client)>,
}

impl ClientTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, prefix: IpPrefix, client: Client) {
        self.entries.retain(|(p, _)| *p != prefix);
        self.entries.push((prefix, client));
    }

    /// The client of the longest prefix containing `source`.
    pub fn lookup(&self, source: IpAddr) -> Option<&Client> {
        self.entries
            .iter()
            .filter(|(prefix, _)| prefix.contains(source))
            .max_by_key(|(prefix, _)| prefix.length())
            .map(|(_, client)| client)
    }
}

/// What the handler answers to an Access-Request: the code (Access-Accept, Access-Reject or
/// Access-Challenge) and attributes; the core adds Message-Authenticator, Proxy-State echo and
/// the Response Authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: Code,
    pub attributes: Vec<Attribute>,
}

/// The handler's answer: now, or later through [`RadiusServer::complete`] (for work that waits
/// on another service; the [`udp`] shell completes what a handler sends to its
/// [`udp::Completer`]). While deferred, duplicates of the request are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    Reply(Reply),
    Deferred,
    /// No answer at all (the handler's protocol says to drop this request silently, e.g. an EAP
    /// packet for a conversation step already being worked on). Not cached: a retransmission
    /// reaches the handler again.
    Discard,
}

/// Identifies one request: source address and port, identifier, Request Authenticator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub source: SocketAddr,
    pub identifier: u8,
    pub authenticator: [u8; AUTHENTICATOR_LEN],
}

/// Decides Access-Requests. Called once per distinct request, never for retransmissions.
pub trait Handler {
    fn handle(&mut self, key: RequestKey, client: &Client, request: &Packet) -> Handled;
}

/// The placeholder handler until the EAP/TEAP state machines exist: rejects everything, saying
/// why.
#[derive(Debug, Clone, Copy, Default)]
pub struct RejectAll;

pub const NOT_IMPLEMENTED_MESSAGE: &str = "EAP-TEAP is not implemented yet";

impl Handler for RejectAll {
    fn handle(&mut self, _key: RequestKey, _client: &Client, _request: &Packet) -> Handled {
        Handled::Reply(Reply {
            code: Code::AccessReject,
            attributes: vec![Attribute::new(
                attr::REPLY_MESSAGE,
                NOT_IMPLEMENTED_MESSAGE.as_bytes().to_vec(),
            )],
        })
    }
}

/// Why a datagram got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    UnknownClient,
    Malformed,
    MissingMessageAuthenticator,
    BadMessageAuthenticator,
    UnsupportedCode,
    DuplicateInProgress,
    ResponseEncodingFailed,
    /// The handler chose silence ([`Handled::Discard`]).
    DiscardedByHandler,
}

/// What the caller should do with a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(Vec<u8>),
    Drop(DropReason),
    /// The handler deferred; the answer comes from [`RadiusServer::complete`].
    Deferred(RequestKey),
}

/// Counters for observability (exported as metrics later).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub dropped: HashMap<DropReason, u64>,
    pub handled: u64,
    pub retransmissions_answered: u64,
    pub status_server_answered: u64,
    pub completions_too_late: u64,
}

impl Counters {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(&reason).copied().unwrap_or(0)
    }
}

/// Retransmission cache bounds. Defaults follow RFC 5080 §2.2.2's advice of a few seconds
/// beyond the client's retransmission window.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    pub max_entries: usize,
    pub lifetime: Duration,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            max_entries: 4096,
            lifetime: Duration::from_secs(30),
        }
    }
}

enum CacheState {
    InProgress { request: Packet, secret: Secret },
    Answered(Vec<u8>),
}

struct CacheEntry {
    inserted: Instant,
    state: CacheState,
}

/// The server core. `H` decides Access-Requests.
pub struct RadiusServer<H> {
    clients: ClientTable,
    handler: H,
    limits: CacheLimits,
    cache: HashMap<RequestKey, CacheEntry>,
    // Insertion order (= time order, since time passed in never goes backwards) for expiry and
    // eviction; may hold keys already removed, skipped when met.
    order: VecDeque<(Instant, RequestKey)>,
    counters: Counters,
}

impl<H: Handler> RadiusServer<H> {
    pub fn new(clients: ClientTable, handler: H, limits: CacheLimits) -> Self {
        Self {
            clients,
            handler,
            limits,
            cache: HashMap::new(),
            order: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The client table's entry for `source`, for a transport that admits clients before their
    /// first packet (RadSec checks a connection's source before its TLS handshake).
    pub fn client_for(&self, source: IpAddr) -> Option<&Client> {
        self.clients.lookup(source)
    }

    pub fn cached_requests(&self) -> usize {
        self.cache.len()
    }

    /// Process one datagram from `source` received at `now`.
    pub fn receive(&mut self, datagram: &[u8], source: SocketAddr, now: Instant) -> Action {
        self.expire(now);
        let Some(client) = self.clients.lookup(source.ip()).cloned() else {
            tracing::debug!(%source, "RADIUS datagram from unknown client dropped");
            return self.drop(DropReason::UnknownClient);
        };
        let request = match Packet::parse_verified_request(datagram, client.secret.expose()) {
            Ok(request) => request,
            Err(error) => {
                let reason = match error {
                    RadiusError::MissingMessageAuthenticator => {
                        DropReason::MissingMessageAuthenticator
                    }
                    RadiusError::BadMessageAuthenticator
                    | RadiusError::DuplicateMessageAuthenticator
                    | RadiusError::MessageAuthenticatorLength(_) => {
                        DropReason::BadMessageAuthenticator
                    }
                    RadiusError::NotAVerifiableRequest(_) => DropReason::UnsupportedCode,
                    _ => DropReason::Malformed,
                };
                tracing::debug!(%source, client = %client.name, %error, "RADIUS request dropped");
                return self.drop(reason);
            }
        };
        if request.code == Code::StatusServer {
            // RFC 5997 §3: answered with Access-Accept, not cached (each probe is new).
            let accept = Packet::response_to(&request, Code::AccessAccept);
            return match accept.encode_response(&request, client.secret.expose()) {
                Ok(bytes) => {
                    self.counters.status_server_answered += 1;
                    Action::Send(bytes)
                }
                Err(_) => self.drop(DropReason::ResponseEncodingFailed),
            };
        }
        let key = RequestKey {
            source,
            identifier: request.identifier,
            authenticator: request.authenticator,
        };
        if let Some(entry) = self.cache.get(&key) {
            return match &entry.state {
                CacheState::Answered(bytes) => {
                    self.counters.retransmissions_answered += 1;
                    Action::Send(bytes.clone())
                }
                CacheState::InProgress { .. } => self.drop(DropReason::DuplicateInProgress),
            };
        }
        self.counters.handled += 1;
        match self.handler.handle(key, &client, &request) {
            Handled::Reply(reply) => match encode_reply(&reply, &request, &client.secret) {
                Ok(bytes) => {
                    self.remember(key, now, CacheState::Answered(bytes.clone()));
                    Action::Send(bytes)
                }
                Err(error) => {
                    tracing::warn!(%source, %error, "RADIUS reply could not be encoded");
                    self.drop(DropReason::ResponseEncodingFailed)
                }
            },
            Handled::Discard => self.drop(DropReason::DiscardedByHandler),
            Handled::Deferred => {
                self.remember(
                    key,
                    now,
                    CacheState::InProgress {
                        request,
                        secret: client.secret,
                    },
                );
                Action::Deferred(key)
            }
        }
    }

    /// Finish a deferred request: the bytes to send to `key.source`, or `None` when the request
    /// expired (or was evicted) meanwhile, or the reply cannot be encoded.
    pub fn complete(&mut self, key: RequestKey, reply: Reply, now: Instant) -> Option<Vec<u8>> {
        self.expire(now);
        let Some(entry) = self.cache.get_mut(&key) else {
            self.counters.completions_too_late += 1;
            return None;
        };
        let CacheState::InProgress { request, secret } = &entry.state else {
            return None;
        };
        match encode_reply(&reply, request, secret) {
            Ok(bytes) => {
                entry.state = CacheState::Answered(bytes.clone());
                Some(bytes)
            }
            Err(_) => {
                self.cache.remove(&key);
                self.drop(DropReason::ResponseEncodingFailed);
                None
            }
        }
    }

    fn drop(&mut self, reason: DropReason) -> Action {
        *self.counters.dropped.entry(reason).or_insert(0) += 1;
        Action::Drop(reason)
    }

    fn remember(&mut self, key: RequestKey, now: Instant, state: CacheState) {
        while self.cache.len() >= self.limits.max_entries.max(1) {
            let Some((inserted, oldest)) = self.order.pop_front() else {
                break;
            };
            self.remove_if_inserted_at(oldest, inserted);
        }
        self.cache.insert(
            key,
            CacheEntry {
                inserted: now,
                state,
            },
        );
        self.order.push_back((now, key));
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(inserted, key)) = self.order.front() {
            if now.saturating_duration_since(inserted) < self.limits.lifetime {
                break;
            }
            self.order.pop_front();
            self.remove_if_inserted_at(key, inserted);
        }
    }

    fn remove_if_inserted_at(&mut self, key: RequestKey, inserted: Instant) {
        if self.cache.get(&key).is_some_and(|e| e.inserted == inserted) {
            self.cache.remove(&key);
        }
    }
}

fn encode_reply(reply: &Reply, request: &Packet, secret: &Secret) -> Result<Vec<u8>, RadiusError> {
    let mut response = Packet::response_to(request, reply.code);
    response.attributes = reply.attributes.clone();
    response.encode_response(request, secret.expose())
}

#[cfg(test)]
#[path = "radius_server/tests.rs"]
mod tests;
