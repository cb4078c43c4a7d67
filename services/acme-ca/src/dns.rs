//! A minimal stub resolver for challenge validation: one question to the configured server,
//! over UDP with a TCP retry when the answer is truncated (RFC 7766).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    Timeout,
    Io(String),
    Protocol(String),
    /// The server answered with this response code (SERVFAIL, REFUSED …).
    Rcode(String),
}

impl std::fmt::Display for DnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsError::Timeout => f.write_str("the DNS server did not answer in time"),
            DnsError::Io(e) => write!(f, "DNS transport error: {e}"),
            DnsError::Protocol(e) => write!(f, "bad DNS response: {e}"),
            DnsError::Rcode(r) => write!(f, "the DNS server answered {r}"),
        }
    }
}

const MAX_UDP: usize = 4096;

fn encode(name: &str, rtype: RecordType) -> Result<(u16, Vec<u8>, Name), DnsError> {
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let qname = Name::from_ascii(&fqdn).map_err(|e| DnsError::Protocol(e.to_string()))?;
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname.clone(), rtype));
    let bytes = msg
        .to_vec()
        .map_err(|e| DnsError::Protocol(e.to_string()))?;
    Ok((msg.metadata.id, bytes, qname))
}

fn matches(resp: &Message, id: u16, qname: &Name, rtype: RecordType) -> bool {
    resp.metadata.id == id
        && resp.metadata.message_type == MessageType::Response
        && resp.queries.first().is_some_and(|q| {
            q.query_type() == rtype && q.name().to_lowercase() == qname.to_lowercase()
        })
}

async fn over_udp(
    server: SocketAddr,
    id: u16,
    bytes: &[u8],
    qname: &Name,
    rtype: RecordType,
) -> Result<Message, DnsError> {
    let bind: SocketAddr = if server.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let sock = UdpSocket::bind(bind)
        .await
        .map_err(|e| DnsError::Io(e.to_string()))?;
    sock.connect(server)
        .await
        .map_err(|e| DnsError::Io(e.to_string()))?;
    sock.send(bytes)
        .await
        .map_err(|e| DnsError::Io(e.to_string()))?;
    let mut buf = vec![0u8; MAX_UDP];
    loop {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| DnsError::Io(e.to_string()))?;
        // Anything that is not the answer to this question (stray or spoofed datagrams) is
        // ignored rather than trusted.
        match Message::from_vec(&buf[..n]) {
            Ok(m) if matches(&m, id, qname, rtype) => return Ok(m),
            _ => continue,
        }
    }
}

async fn over_tcp(
    server: SocketAddr,
    id: u16,
    bytes: &[u8],
    qname: &Name,
    rtype: RecordType,
) -> Result<Message, DnsError> {
    let mut s = TcpStream::connect(server)
        .await
        .map_err(|e| DnsError::Io(e.to_string()))?;
    let len =
        u16::try_from(bytes.len()).map_err(|_| DnsError::Protocol("query too long".into()))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    s.write_all(&framed)
        .await
        .map_err(|e| DnsError::Io(e.to_string()))?;
    let mut lenb = [0u8; 2];
    s.read_exact(&mut lenb)
        .await
        .map_err(|e| DnsError::Io(e.to_string()))?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(lenb))];
    s.read_exact(&mut buf)
        .await
        .map_err(|e| DnsError::Io(e.to_string()))?;
    let m = Message::from_vec(&buf).map_err(|e| DnsError::Protocol(e.to_string()))?;
    if !matches(&m, id, qname, rtype) {
        return Err(DnsError::Protocol(
            "the answer does not match the question".into(),
        ));
    }
    Ok(m)
}

/// Asks `server` one question; `Ok(None)` for NXDOMAIN.
pub async fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Option<Message>, DnsError> {
    let (id, bytes, qname) = encode(name, rtype)?;
    let attempt = async {
        let m = over_udp(server, id, &bytes, &qname, rtype).await?;
        if m.metadata.truncation {
            over_tcp(server, id, &bytes, &qname, rtype).await
        } else {
            Ok(m)
        }
    };
    let m = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| DnsError::Timeout)??;
    match m.metadata.response_code {
        ResponseCode::NoError => Ok(Some(m)),
        ResponseCode::NXDomain => Ok(None),
        other => Err(DnsError::Rcode(other.to_string())),
    }
}

/// The TXT strings at `name` (each record's strings concatenated, RFC 8555 §8.4).
pub async fn txt(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<String>, DnsError> {
    let Some(m) = query(server, name, RecordType::TXT, timeout).await? else {
        return Ok(Vec::new());
    };
    Ok(m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect())
}

/// The A and AAAA addresses of `name` (IPv4 first).
pub async fn addresses(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<IpAddr>, DnsError> {
    let mut out = Vec::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        if let Some(m) = query(server, name, rtype, timeout).await? {
            for r in &m.answers {
                match &r.data {
                    RData::A(a) => out.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}
