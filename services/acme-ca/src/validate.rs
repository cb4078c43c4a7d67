//! Challenge validation (RFC 8555 §8.3 http-01, §8.4 dns-01; RFC 8738 for IP identifiers).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::digest;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use ragw_store::AcmeIdentifier;

use crate::b64;
use crate::dns::{self, DnsError};
use crate::problem::{Problem, ProblemType};

/// The TXT value dns-01 expects: base64url(SHA-256(key authorization)).
pub fn dns01_value(key_authorization: &str) -> String {
    b64::encode(digest::digest(
        &digest::SHA256,
        key_authorization.as_bytes(),
    ))
}

/// Checks one challenge; `Err` is the problem recorded on the challenge.
#[async_trait]
pub trait Validator: Send + Sync {
    async fn validate(
        &self,
        challenge_type: &str,
        identifier: &AcmeIdentifier,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), Problem>;
}

/// Validation over the network: DNS questions to the configured server, HTTP to port
/// `http_port` of the addresses it gives.
pub struct NetValidator {
    pub resolver: SocketAddr,
    pub timeout: Duration,
    pub http_port: u16,
}

fn dns_problem(name: &str, e: &DnsError) -> Problem {
    Problem::new(ProblemType::Dns, format!("looking up {name}: {e}"))
}

#[async_trait]
impl Validator for NetValidator {
    async fn validate(
        &self,
        challenge_type: &str,
        identifier: &AcmeIdentifier,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), Problem> {
        match (challenge_type, identifier.kind.as_str()) {
            ("dns-01", "dns") => {
                let name = format!("_acme-challenge.{}", identifier.value);
                let expected = dns01_value(key_authorization);
                let found = dns::txt(self.resolver, &name, self.timeout)
                    .await
                    .map_err(|e| dns_problem(&name, &e))?;
                if found.iter().any(|v| v == &expected) {
                    return Ok(());
                }
                if found.is_empty() {
                    return Err(Problem::new(
                        ProblemType::Dns,
                        format!("no TXT record found at {name}"),
                    ));
                }
                let shown: Vec<String> = found
                    .iter()
                    .take(5)
                    .map(|v| format!("{:?}", v.chars().take(60).collect::<String>()))
                    .collect();
                Err(Problem::new(
                    ProblemType::IncorrectResponse,
                    format!(
                        "{name} has TXT {}, not the expected {expected:?}",
                        shown.join(", ")
                    ),
                ))
            }
            ("http-01", _) => self.http01(identifier, token, key_authorization).await,
            (t, k) => Err(Problem::malformed(format!(
                "challenge {t} cannot validate a {k} identifier"
            ))),
        }
    }
}

impl NetValidator {
    async fn http01(
        &self,
        identifier: &AcmeIdentifier,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), Problem> {
        let (addrs, host) = match identifier.kind.as_str() {
            "ip" => {
                let ip: IpAddr = identifier
                    .value
                    .parse()
                    .map_err(|_| Problem::malformed("stored IP identifier is not an address"))?;
                let host = match ip {
                    IpAddr::V4(_) => ip.to_string(),
                    IpAddr::V6(_) => format!("[{ip}]"),
                };
                (vec![ip], host)
            }
            _ => {
                let addrs = dns::addresses(self.resolver, &identifier.value, self.timeout)
                    .await
                    .map_err(|e| dns_problem(&identifier.value, &e))?;
                if addrs.is_empty() {
                    return Err(Problem::new(
                        ProblemType::Dns,
                        format!("{} has no A or AAAA record", identifier.value),
                    ));
                }
                (addrs, identifier.value.clone())
            }
        };
        let path = format!("/.well-known/acme-challenge/{token}");
        let mut last = Problem::new(ProblemType::Connection, "no address to connect to");
        for ip in addrs {
            let addr = SocketAddr::new(ip, self.http_port);
            match tokio::time::timeout(self.timeout, fetch(addr, &host, &path)).await {
                Err(_) => {
                    last = Problem::new(
                        ProblemType::Connection,
                        format!("http://{host}{path} via {addr}: timed out"),
                    );
                }
                Ok(Err(p)) => last = p,
                Ok(Ok((200, body))) => {
                    let text = String::from_utf8_lossy(&body);
                    if text.trim_end() == key_authorization {
                        return Ok(());
                    }
                    return Err(Problem::new(
                        ProblemType::IncorrectResponse,
                        format!(
                            "http://{host}{path} answered {:?}, not the key authorization",
                            text.chars().take(80).collect::<String>()
                        ),
                    ));
                }
                Ok(Ok((status, _))) => {
                    return Err(Problem::new(
                        ProblemType::Unauthorized,
                        format!("http://{host}{path} answered HTTP {status}"),
                    ));
                }
            }
        }
        Err(last)
    }
}

async fn fetch(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, Vec<u8>), Problem> {
    let conn_err = |e: &dyn std::fmt::Display| {
        Problem::new(
            ProblemType::Connection,
            format!("http://{host}{path} via {addr}: {e}"),
        )
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| conn_err(&e))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| conn_err(&e))?;
    let driver = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "ragw-acme-ca")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| conn_err(&e))?;
    let resp = send.send_request(req).await.map_err(|e| conn_err(&e))?;
    let status = resp.status().as_u16();
    // A key authorization is under 200 bytes; anything much longer is not one.
    let body = Limited::new(resp.into_body(), 4096)
        .collect()
        .await
        .map_err(|e| conn_err(&e))?
        .to_bytes()
        .to_vec();
    driver.abort();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::dns_responder::DnsResponder;

    #[test]
    fn dns01_value_matches_rfc_example_shape() {
        let v = dns01_value("token.thumbprint");
        assert_eq!(v.len(), 43);
    }

    #[tokio::test]
    async fn dns01_against_a_responder() {
        let r = DnsResponder::start("127.0.0.1".parse().unwrap())
            .await
            .unwrap();
        let v = NetValidator {
            resolver: r.addr(),
            timeout: Duration::from_secs(2),
            http_port: 1,
        };
        let id = AcmeIdentifier::dns("d.example.test");
        let p = v.validate("dns-01", &id, "t", "t.k").await.unwrap_err();
        assert_eq!(p.kind, ProblemType::Dns);
        r.add_txt("_acme-challenge.d.example.test", "wrong");
        let p = v.validate("dns-01", &id, "t", "t.k").await.unwrap_err();
        assert_eq!(p.kind, ProblemType::IncorrectResponse);
        r.add_txt("_acme-challenge.d.example.test", &dns01_value("t.k"));
        v.validate("dns-01", &id, "t", "t.k").await.unwrap();

        // A delegated challenge name: two CNAME hops, each answered alone, then the TXT.
        let id = AcmeIdentifier::dns("e.example.test");
        r.set_cname("_acme-challenge.e.example.test", "e.acme.example.net");
        r.set_cname("e.acme.example.net", "final.validation.example.org");
        r.add_txt("final.validation.example.org", &dns01_value("t.k"));
        v.validate("dns-01", &id, "t", "t.k").await.unwrap();
        let p = v.validate("dns-01", &id, "t", "t.other").await.unwrap_err();
        assert_eq!(p.kind, ProblemType::IncorrectResponse);
        // A loop is a DNS problem, not a hang.
        r.set_cname(
            "final.validation.example.org",
            "_acme-challenge.e.example.test",
        );
        let p = v.validate("dns-01", &id, "t", "t.k").await.unwrap_err();
        assert_eq!(p.kind, ProblemType::Dns);
        assert!(p.detail.contains("loop"), "{}", p.detail);
    }

    #[tokio::test]
    async fn http01_against_a_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 2048];
                    let n = s.read(&mut buf).await.unwrap();
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let body = if req.starts_with("GET /.well-known/acme-challenge/tok ") {
                        "tok.thumb\n"
                    } else {
                        "nope"
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    s.write_all(resp.as_bytes()).await.unwrap();
                });
            }
        });
        let r = DnsResponder::start("127.0.0.1".parse().unwrap())
            .await
            .unwrap();
        r.set_address("h.example.test", "127.0.0.1".parse().unwrap());
        let v = NetValidator {
            resolver: r.addr(),
            timeout: Duration::from_secs(2),
            http_port: port,
        };
        v.validate(
            "http-01",
            &AcmeIdentifier::dns("h.example.test"),
            "tok",
            "tok.thumb",
        )
        .await
        .unwrap();
        v.validate(
            "http-01",
            &AcmeIdentifier::ip("127.0.0.1"),
            "tok",
            "tok.thumb",
        )
        .await
        .unwrap();
        let p = v
            .validate(
                "http-01",
                &AcmeIdentifier::ip("127.0.0.1"),
                "other",
                "other.thumb",
            )
            .await
            .unwrap_err();
        assert_eq!(p.kind, ProblemType::IncorrectResponse);
    }
}
