//! The built-in authoritative DNS server for the challenge zone(s): a thin tokio UDP/TCP shell
//! around the sans-IO [`Responder`].
//!
//! # Deployment shapes
//!
//! - **All-in-one (`ragw dev`)**: the local ACME CA queries this server directly; the worker
//!   publishes records in process through [`BuiltinDns`]'s [`DnsProvider`] implementation.
//! - **External ACME clients against the dev CA**: certbot, lego or `nsupdate` send RFC 2136
//!   updates signed with the server's key. The key is generated on first start and written in
//!   BIND syntax (mode 0600) at [`BuiltinDnsConfig::key_file`]; hand that file to
//!   `nsupdate -k`, or its name/secret to lego (`RFC2136_TSIG_*`) or certbot.
//! - **Behind an NS delegation**: the public zone delegates the challenge names to this server,
//!   e.g. with the zone `devices.example.com` served here and, in `example.com`,
//!   `devices NS ragw-dns.example.com.` plus its address; or, to delegate the pre-authorization
//!   name alone, the zone `_acme-challenge.devices.example.com` served here and
//!   `_acme-challenge.devices NS ragw-dns.example.com.` in the parent. List the NS target names
//!   in [`ZoneConfig::nameservers`] so the answers match the delegation. The public CA then
//!   asks this server directly.
//! - **Stealth (hidden) primary**: set [`BuiltinDnsConfig::allow_transfer`] and list the
//!   public secondaries in [`BuiltinDnsConfig::notify`]. They transfer the zone (AXFR, TSIG
//!   signed with this server's key: configure it on them, e.g. BIND
//!   `primaries { <addr> port <port> key "<name>"; };`), receive a signed NOTIFY after each
//!   change, and serve the records to the world while this server stays unlisted. The SOA
//!   refresh is 60 s, so a lost NOTIFY delays a record by at most a minute.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::metrics::{DnsMetrics, Operation};
use super::responder::{Responder, Transport, ZoneConfig};
use super::tsig::{TsigAlgorithm, TsigKey};
use super::{DnsError, DnsProvider, now_unix};

/// Name of the key generated on first start.
pub const DEFAULT_KEY_NAME: &str = "ragw-dns-update";
/// At most this many TCP connections at once; more wait in the accept queue.
const MAX_TCP_CONNECTIONS: usize = 256;
/// A TCP client idle this long between messages is disconnected (RFC 7766 §6.2.3 suggests
/// seconds, not minutes).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Binding UDP and TCP to one free port can race with other processes; retry this often.
const BIND_ATTEMPTS: usize = 32;
/// NOTIFY retransmissions (RFC 1996 §3.6 suggests a few, with a timeout).
const NOTIFY_ATTEMPTS: usize = 5;
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of the built-in server.
#[derive(Debug, Clone)]
pub struct BuiltinDnsConfig {
    /// UDP and TCP are both bound here. Port 0 picks a free port, the same one for both.
    pub listen: SocketAddr,
    pub zones: Vec<ZoneConfig>,
    /// The TSIG key file (BIND `key` syntax). Created with a new key, mode 0600, if missing;
    /// reused as is otherwise.
    pub key_file: PathBuf,
    /// Name and algorithm of a generated key.
    pub key_name: String,
    pub key_algorithm: TsigAlgorithm,
    /// TTL of the SOA, NS and of records added in process.
    pub ttl: u32,
    /// Serve TSIG-signed zone transfers (stealth primary).
    pub allow_transfer: bool,
    /// Secondaries to send a NOTIFY to after each change.
    pub notify: Vec<SocketAddr>,
}

impl BuiltinDnsConfig {
    /// Key `ragw-dns-update` (hmac-sha256), TTL 60 s, no zone transfers, no NOTIFY.
    pub fn new(listen: SocketAddr, zones: &[&str], key_file: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            zones: zones.iter().map(|z| ZoneConfig::new(z)).collect(),
            key_file: key_file.into(),
            key_name: DEFAULT_KEY_NAME.to_owned(),
            key_algorithm: TsigAlgorithm::HmacSha256,
            ttl: 60,
            allow_transfer: false,
            notify: Vec::new(),
        }
    }
}

struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

struct Inner {
    responder: Arc<Responder>,
    metrics: DnsMetrics,
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    key_file: PathBuf,
    key_created: bool,
    notify: Vec<SocketAddr>,
    sockets: Mutex<Option<Sockets>>,
}

/// The built-in DNS server, and a [`DnsProvider`] that publishes into it in process. Clones
/// share the server.
#[derive(Clone)]
pub struct BuiltinDns {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BuiltinDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinDns")
            .field("udp_addr", &self.inner.udp_addr)
            .field("tcp_addr", &self.inner.tcp_addr)
            .field("responder", &self.inner.responder)
            .finish_non_exhaustive()
    }
}

impl BuiltinDns {
    /// Loads or creates the TSIG key and binds the sockets; [`serve`](Self::serve) answers.
    /// Records can be added before serving starts.
    pub async fn bind(config: BuiltinDnsConfig, metrics: DnsMetrics) -> Result<Self, DnsError> {
        let (key, key_created) =
            TsigKey::load_or_generate(&config.key_file, &config.key_name, config.key_algorithm)?;
        let responder = Responder::new(
            &config.zones,
            key,
            config.ttl,
            config.allow_transfer,
            metrics.clone(),
        )?;
        let sockets = bind_pair(config.listen).await?;
        let udp_addr = local_addr(&sockets.udp.local_addr(), config.listen)?;
        let tcp_addr = local_addr(&sockets.tcp.local_addr(), config.listen)?;
        tracing::info!(
            %udp_addr,
            %tcp_addr,
            zones = ?responder.zones(),
            key = responder.key().name(),
            key_file = %config.key_file.display(),
            "built-in DNS server bound"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                responder: Arc::new(responder),
                metrics,
                udp_addr,
                tcp_addr,
                key_file: config.key_file,
                key_created,
                notify: config.notify,
                sockets: Mutex::new(Some(sockets)),
            }),
        })
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.inner.udp_addr
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.inner.tcp_addr
    }

    /// The TSIG key that signs updates and zone transfers.
    pub fn tsig_key(&self) -> &TsigKey {
        self.inner.responder.key()
    }

    /// Where the key is stored (BIND syntax, mode 0600).
    pub fn key_file(&self) -> &Path {
        &self.inner.key_file
    }

    /// Whether [`bind`](Self::bind) generated the key (first start) rather than loading it.
    pub fn key_created(&self) -> bool {
        self.inner.key_created
    }

    pub fn responder(&self) -> &Responder {
        &self.inner.responder
    }

    /// The TXT values currently served at `fqdn`.
    pub fn txt_values(&self, fqdn: &str) -> Result<Vec<String>, DnsError> {
        self.inner.responder.txt_values(fqdn)
    }

    /// Answers on UDP and TCP (and sends NOTIFYs, if configured) until `shutdown` completes.
    /// Fails if called a second time: the sockets belong to one serving task.
    pub fn serve(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<(), DnsError>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        // Taken now, not when the future is first polled, so a second call fails whatever the
        // order in which the two futures run.
        let sockets = inner
            .sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        async move {
            let sockets = sockets.ok_or_else(|| DnsError::Server("already serving".to_owned()))?;
            let udp = Arc::new(sockets.udp);
            let mut tasks = JoinSet::new();
            tasks.spawn(udp_loop(Arc::clone(&udp), Arc::clone(&inner.responder)));
            tasks.spawn(tcp_loop(sockets.tcp, Arc::clone(&inner.responder)));
            if !inner.notify.is_empty() {
                tasks.spawn(notify_loop(
                    Arc::clone(&inner.responder),
                    inner.notify.clone(),
                    inner.udp_addr.ip(),
                ));
            }
            tokio::pin!(shutdown);
            let result = tokio::select! {
                () = &mut shutdown => Ok(()),
                Some(ended) = tasks.join_next() => Err(DnsError::Server(match ended {
                    Ok(reason) => reason,
                    Err(e) => format!("a server task failed: {e}"),
                })),
            };
            // Dropping the set aborts the loops, and with them every TCP connection task.
            tasks.shutdown().await;
            tracing::info!(udp_addr = %inner.udp_addr, "built-in DNS server stopped");
            result
        }
    }
}

#[async_trait]
impl DnsProvider for BuiltinDns {
    async fn add_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let result = self.inner.responder.add_txt(fqdn, value);
        self.inner
            .metrics
            .record_update("builtin", Operation::Add, &result);
        result
    }

    async fn remove_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let result = self.inner.responder.remove_txt(fqdn, value);
        self.inner
            .metrics
            .record_update("builtin", Operation::Remove, &result);
        result
    }

    fn name(&self) -> &str {
        "builtin"
    }
}

/// UDP and TCP on the same port, also when the port is chosen by the system.
async fn bind_pair(listen: SocketAddr) -> Result<Sockets, DnsError> {
    let bind_error = |e: std::io::Error| DnsError::Server(format!("cannot bind {listen}: {e}"));
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind(listen).await.map_err(bind_error)?;
        let port = udp.local_addr().map_err(bind_error)?.port();
        match TcpListener::bind(SocketAddr::new(listen.ip(), port)).await {
            Ok(tcp) => return Ok(Sockets { udp, tcp }),
            Err(e) if listen.port() == 0 => last_error = Some(e),
            Err(e) => return Err(bind_error(e)),
        }
    }
    Err(DnsError::Server(format!(
        "cannot bind UDP and TCP to one free port on {}: {}",
        listen.ip(),
        last_error.map_or_else(|| "no attempt".to_owned(), |e| e.to_string())
    )))
}

fn local_addr(
    addr: &std::io::Result<SocketAddr>,
    listen: SocketAddr,
) -> Result<SocketAddr, DnsError> {
    addr.as_ref()
        .copied()
        .map_err(|e| DnsError::Server(format!("cannot read the address bound for {listen}: {e}")))
}

/// The responder must never take the server down; a panic (a bug in a dependency's parser,
/// say) costs one request.
fn handle_guarded(responder: &Responder, request: &[u8], transport: Transport) -> Vec<Vec<u8>> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        responder.handle(request, transport, now_unix())
    }))
    .unwrap_or_else(|_| {
        tracing::error!(
            len = request.len(),
            "the DNS responder panicked; request dropped"
        );
        Vec::new()
    })
}

async fn udp_loop(socket: Arc<UdpSocket>, responder: Arc<Responder>) -> String {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors from earlier sends surface here; they concern one peer only.
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        let Some(request) = buf.get(..len) else {
            continue;
        };
        for reply in handle_guarded(&responder, request, Transport::Udp) {
            if let Err(e) = socket.send_to(&reply, peer).await {
                tracing::debug!(%peer, error = %e, "UDP send error");
            }
        }
    }
}

async fn tcp_loop(listener: TcpListener, responder: Arc<Responder>) -> String {
    let limit = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            return "the TCP connection limit was closed".to_owned();
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and similar: keep serving what is open.
                tracing::warn!(error = %e, "TCP accept error");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let responder = Arc::clone(&responder);
        connections.spawn(async move {
            if let Err(e) = tcp_connection(stream, &responder).await {
                tracing::debug!(%peer, error = %e, "TCP connection ended");
            }
            drop(permit);
        });
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
}

async fn tcp_connection(mut stream: TcpStream, responder: &Responder) -> std::io::Result<()> {
    let mut request = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        let len = usize::from(u16::from_be_bytes(len));
        request.resize(len, 0);
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut request)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        let replies = handle_guarded(responder, &request, Transport::Tcp);
        if replies.is_empty() {
            // Nothing sensible to say (not even FORMERR): the stream is out of step.
            return Ok(());
        }
        for reply in replies {
            let Ok(reply_len) = u16::try_from(reply.len()) else {
                tracing::warn!(len = reply.len(), "a TCP reply exceeds 64 KiB; dropped");
                continue;
            };
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&reply_len.to_be_bytes());
            framed.extend_from_slice(&reply);
            stream.write_all(&framed).await?;
        }
    }
}

/// Sends a NOTIFY for every zone to every secondary after each change, retransmitting until
/// acknowledged (RFC 1996 §3.6). Changes during a round are folded into the next one.
async fn notify_loop(
    responder: Arc<Responder>,
    targets: Vec<SocketAddr>,
    local_ip: IpAddr,
) -> String {
    let mut serials = responder.store().subscribe();
    // The first round goes out at start: the serial jumped to the clock on restart, and the
    // secondaries should learn that their copy (with the records from before) is stale.
    serials.mark_changed();
    loop {
        if serials.changed().await.is_err() {
            return "the record store was dropped".to_owned();
        }
        let serial = *serials.borrow_and_update();
        let messages = responder.notify_messages(now_unix());
        let mut rounds = JoinSet::new();
        for target in &targets {
            for (id, message) in &messages {
                rounds.spawn(send_notify(*target, local_ip, *id, message.clone()));
            }
        }
        while let Some(result) = rounds.join_next().await {
            if let Ok(Err(e)) = result {
                tracing::warn!(serial, error = %e, "NOTIFY not acknowledged");
            }
        }
    }
}

async fn send_notify(
    target: SocketAddr,
    local_ip: IpAddr,
    id: u16,
    message: Vec<u8>,
) -> Result<(), String> {
    // Send from the serving address (not the wildcard) when there is one: secondaries accept
    // a NOTIFY only from an address listed as their primary.
    let source = if local_ip.is_unspecified() || local_ip.is_ipv4() != target.is_ipv4() {
        if target.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        }
    } else {
        local_ip
    };
    let socket = UdpSocket::bind(SocketAddr::new(source, 0))
        .await
        .map_err(|e| format!("{target}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..NOTIFY_ATTEMPTS {
        socket
            .send_to(&message, target)
            .await
            .map_err(|e| format!("{target}: {e}"))?;
        let deadline = tokio::time::Instant::now() + NOTIFY_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
                Err(_) => break,
                Ok(Err(_)) => break,
                Ok(Ok((len, from))) => {
                    let acked = from == target
                        && buf.get(..len.min(4)).is_some_and(|h| {
                            h.len() == 4 && h[..2] == id.to_be_bytes() && h[2] & 0x80 != 0
                        });
                    if acked {
                        tracing::debug!(%target, "NOTIFY acknowledged");
                        return Ok(());
                    }
                }
            }
        }
    }
    Err(format!(
        "{target}: no answer after {NOTIFY_ATTEMPTS} attempts"
    ))
}
