//! A minimal stub resolver for challenge validation: one question to the configured server,
//! over UDP with a TCP retry when the answer is truncated (RFC 7766).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
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

/// CNAMEs followed from one name before giving up; a delegated `_acme-challenge` name is
/// usually one hop, and the bound keeps a hostile zone from making the CA query forever.
pub const MAX_CNAME_HOPS: usize = 8;

/// What one answer says about `name`: the records of `rtype` at the end of the CNAME chain that
/// starts at `name`, or the name the chain leads to when the answer holds no such records (a
/// server that does not recurse answers with the CNAME alone).
fn follow(
    answers: &[Record],
    name: &Name,
    rtype: RecordType,
    seen: &mut Vec<Name>,
) -> Result<(Vec<RData>, Option<Name>), DnsError> {
    let mut current = name.to_lowercase();
    loop {
        let found: Vec<RData> = answers
            .iter()
            .filter(|r| r.record_type() == rtype && r.name.to_lowercase() == current)
            .map(|r| r.data.clone())
            .collect();
        if !found.is_empty() {
            return Ok((found, None));
        }
        let target = answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c) if r.name.to_lowercase() == current => Some(c.0.to_lowercase()),
            _ => None,
        });
        let Some(target) = target else {
            let next = (current != name.to_lowercase()).then_some(current);
            return Ok((Vec::new(), next));
        };
        if seen.contains(&target) {
            return Err(DnsError::Protocol(format!("CNAME loop at {target}")));
        }
        if seen.len() > MAX_CNAME_HOPS {
            return Err(DnsError::Protocol(format!(
                "more than {MAX_CNAME_HOPS} CNAMEs from {}",
                seen.first().unwrap_or(&target)
            )));
        }
        seen.push(target.clone());
        current = target;
    }
}

/// The `rtype` records of `name`, following CNAMEs both inside an answer and, where an answer
/// stops at a CNAME, by asking for its target, so a delegated `_acme-challenge` name works
/// whether or not the configured server recurses. Empty for NXDOMAIN or no records.
pub async fn resolve(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Vec<RData>, DnsError> {
    let mut current = name.to_string();
    let start = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
        .map_err(|e| DnsError::Protocol(e.to_string()))?
        .to_lowercase();
    let mut seen = vec![start];
    loop {
        let Some(m) = query(server, &current, rtype, timeout).await? else {
            return Ok(Vec::new());
        };
        let Some(asked) = m.queries.first().map(|q| q.name().clone()) else {
            return Err(DnsError::Protocol("the answer has no question".into()));
        };
        match follow(&m.answers, &asked, rtype, &mut seen)? {
            (found, _) if !found.is_empty() => return Ok(found),
            (_, None) => return Ok(Vec::new()),
            (_, Some(next)) => current = next.to_ascii(),
        }
    }
}

/// The TXT strings at `name` (each record's strings concatenated, RFC 8555 §8.4), following
/// CNAMEs.
pub async fn txt(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<String>, DnsError> {
    Ok(resolve(server, name, RecordType::TXT, timeout)
        .await?
        .iter()
        .filter_map(|r| match r {
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

/// The A and AAAA addresses of `name` (IPv4 first), following CNAMEs.
pub async fn addresses(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> Result<Vec<IpAddr>, DnsError> {
    let mut out = Vec::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        for r in resolve(server, name, rtype, timeout).await? {
            match r {
                RData::A(a) => out.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                _ => {}
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use hickory_proto::rr::rdata::{CNAME, TXT};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn cname(from: &str, to: &str) -> Record {
        Record::from_rdata(name(from), 0, RData::CNAME(CNAME(name(to))))
    }

    fn txt(at: &str, v: &str) -> Record {
        Record::from_rdata(name(at), 0, RData::TXT(TXT::new(vec![v.into()])))
    }

    #[test]
    fn follows_a_chain_inside_one_answer() {
        let answers = vec![
            txt("unrelated.test.", "no"),
            cname("_acme-challenge.D.example.test.", "b.example.test."),
            cname("b.example.test.", "c.validation.test."),
            txt("c.validation.test.", "yes"),
        ];
        let mut seen = vec![];
        let (found, next) = follow(
            &answers,
            &name("_acme-challenge.d.example.test."),
            RecordType::TXT,
            &mut seen,
        )
        .unwrap();
        assert_eq!(found.len(), 1);
        assert!(matches!(&found[0], RData::TXT(t) if t.txt_data[0].as_ref() == b"yes"));
        assert!(next.is_none());
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn stops_at_a_cname_it_cannot_answer() {
        let answers = vec![cname("a.test.", "b.test.")];
        let (found, next) =
            follow(&answers, &name("a.test."), RecordType::TXT, &mut vec![]).unwrap();
        assert!(found.is_empty());
        assert_eq!(next, Some(name("b.test.")));
        let (found, next) = follow(&[], &name("a.test."), RecordType::TXT, &mut vec![]).unwrap();
        assert!(found.is_empty());
        assert!(next.is_none());
    }

    #[test]
    fn refuses_loops_and_long_chains() {
        let looped = vec![cname("a.test.", "b.test."), cname("b.test.", "a.test.")];
        let mut seen = vec![name("a.test.")];
        let e = follow(&looped, &name("a.test."), RecordType::TXT, &mut seen).unwrap_err();
        assert!(e.to_string().contains("loop"), "{e}");
        let long: Vec<Record> = (0..20)
            .map(|i| cname(&format!("n{i}.test."), &format!("n{}.test.", i + 1)))
            .collect();
        let e = follow(&long, &name("n0.test."), RecordType::TXT, &mut vec![]).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
    }
}
