//! A tiny authoritative DNS responder (UDP and TCP, one port) serving TXT and A/AAAA records
//! from memory. The load tool publishes dns-01 answers with it, so the figures measure the CAs
//! rather than a DNS server's update path; tests use it where BIND is not the point.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;

#[derive(Default)]
struct Zone {
    txt: HashMap<String, Vec<String>>,
    addrs: HashMap<String, Vec<IpAddr>>,
    cnames: HashMap<String, String>,
}

/// Stops serving when dropped.
pub struct DnsResponder {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    tasks: JoinSet<()>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsResponder {
    /// Binds UDP and TCP on the same free port of `ip`.
    pub async fn start(ip: IpAddr) -> std::io::Result<DnsResponder> {
        let mut last = None;
        for _ in 0..20 {
            let udp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => {
                    let zone = Arc::new(Mutex::new(Zone::default()));
                    let mut tasks = JoinSet::new();
                    tasks.spawn(serve_udp(udp, zone.clone()));
                    tasks.spawn(serve_tcp(tcp, zone.clone()));
                    return Ok(DnsResponder { addr, zone, tasks });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn add_txt(&self, name: &str, value: &str) {
        if let Ok(mut z) = self.zone.lock() {
            z.txt.entry(key(name)).or_default().push(value.to_string());
        }
    }

    pub fn remove_txt(&self, name: &str, value: &str) {
        if let Ok(mut z) = self.zone.lock() {
            let k = key(name);
            if let Some(v) = z.txt.get_mut(&k) {
                v.retain(|x| x != value);
                if v.is_empty() {
                    z.txt.remove(&k);
                }
            }
        }
    }

    pub fn set_address(&self, name: &str, ip: IpAddr) {
        if let Ok(mut z) = self.zone.lock() {
            z.addrs.insert(key(name), vec![ip]);
        }
    }

    /// Makes `name` an alias of `target`. Questions for `name` get the CNAME alone, as from a
    /// server that does not hold (or chase) the target, so the asker has to follow it.
    pub fn set_cname(&self, name: &str, target: &str) {
        if let Ok(mut z) = self.zone.lock() {
            z.cnames.insert(key(name), key(target));
        }
    }

    pub fn txt_count(&self) -> usize {
        self.zone.lock().map(|z| z.txt.len()).unwrap_or(0)
    }

    pub fn stop(mut self) {
        self.tasks.abort_all();
    }
}

fn answer(zone: &Mutex<Zone>, query: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    let Some(q) = req.queries.first() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp.to_vec().ok();
    };
    resp.add_query(q.clone());
    if req.metadata.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        return resp.to_vec().ok();
    }
    let name = key(&q.name().to_ascii());
    let z = zone.lock().ok()?;
    if let Some(target) = z.cnames.get(&name) {
        let target = Name::from_ascii(format!("{target}.")).ok()?;
        resp.add_answer(Record::from_rdata(
            q.name().clone(),
            0,
            RData::CNAME(CNAME(target)),
        ));
        return resp.to_vec().ok();
    }
    let known = z.txt.contains_key(&name) || z.addrs.contains_key(&name);
    match q.query_type() {
        RecordType::TXT => {
            for v in z.txt.get(&name).into_iter().flatten() {
                resp.add_answer(Record::from_rdata(
                    q.name().clone(),
                    0,
                    RData::TXT(TXT::new(vec![v.clone()])),
                ));
            }
        }
        RecordType::A | RecordType::AAAA => {
            for ip in z.addrs.get(&name).into_iter().flatten() {
                match (ip, q.query_type()) {
                    (IpAddr::V4(v4), RecordType::A) => {
                        resp.add_answer(Record::from_rdata(q.name().clone(), 0, RData::A(A(*v4))));
                    }
                    (IpAddr::V6(v6), RecordType::AAAA) => {
                        resp.add_answer(Record::from_rdata(
                            q.name().clone(),
                            0,
                            RData::AAAA(AAAA(*v6)),
                        ));
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    if !known {
        resp.metadata.response_code = ResponseCode::NXDomain;
    }
    resp.to_vec().ok()
}

async fn serve_udp(sock: UdpSocket, zone: Arc<Mutex<Zone>>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(out) = answer(&zone, &buf[..n]) {
            let _ = sock.send_to(&out, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<Mutex<Zone>>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let zone = zone.clone();
        tokio::spawn(async move {
            loop {
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if s.read_exact(&mut q).await.is_err() {
                    return;
                }
                let Some(out) = answer(&zone, &q) else {
                    return;
                };
                let Ok(l) = u16::try_from(out.len()) else {
                    return;
                };
                let mut framed = l.to_be_bytes().to_vec();
                framed.extend_from_slice(&out);
                if s.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn answers_what_it_holds() {
        let r = DnsResponder::start("127.0.0.1".parse().unwrap())
            .await
            .unwrap();
        r.add_txt("_acme-challenge.a.example.test", "v1");
        r.add_txt("_acme-challenge.a.example.test.", "v2");
        r.set_address("a.example.test", "10.0.0.7".parse().unwrap());
        let t = Duration::from_secs(2);
        let mut got = crate::dns::txt(r.addr(), "_acme-challenge.A.example.test", t)
            .await
            .unwrap();
        got.sort();
        assert_eq!(got, vec!["v1", "v2"]);
        assert!(
            crate::dns::txt(r.addr(), "nothing.example.test", t)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            crate::dns::addresses(r.addr(), "a.example.test", t)
                .await
                .unwrap(),
            vec!["10.0.0.7".parse::<IpAddr>().unwrap()]
        );
        r.remove_txt("_acme-challenge.a.example.test", "v1");
        assert_eq!(
            crate::dns::txt(r.addr(), "_acme-challenge.a.example.test", t)
                .await
                .unwrap(),
            vec!["v2"]
        );
    }
}
