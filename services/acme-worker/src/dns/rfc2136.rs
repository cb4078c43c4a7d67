//! RFC 2136 dynamic updates signed with TSIG (RFC 8945), for an external authoritative server:
//! BIND, Knot, PowerDNS, Windows DNS, or ragw's own [`super::BuiltinDns`].
//!
//! Messages are built and signed here with hickory-proto and carried by hickory-net. The
//! response is checked here too, not by hickory's client-side verifier: that one turns every
//! unsigned TSIG error answer (BADSIG, BADKEY) into a misleading "truncated HMAC" error, while
//! operators need to hear "the server refused your key".

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_net::{DnsHandle, NetError};
use hickory_proto::op::{DnsRequest, DnsRequestOptions, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TsigError, signed_bitmessage_to_buf};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

use super::metrics::{DnsMetrics, Operation};
use super::responder::rcode_name;
use super::tsig::{TsigAlgorithm, TsigKey};
use super::{DnsError, DnsProvider, now_unix, parse_fqdn, txt_rdata};

/// How updates reach the server. UDP is what nsupdate uses; TCP for networks that only let
/// TCP/53 through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rfc2136Transport {
    #[default]
    Udp,
    Tcp,
}

/// Where and how to send updates.
#[derive(Debug, Clone)]
pub struct Rfc2136Config {
    /// The primary server of the zone (its update port, usually 53).
    pub server: SocketAddr,
    /// The zone the challenge names are in (the zone section of every update).
    pub zone: String,
    /// The TSIG key the server's update policy grants TXT changes to.
    pub key: TsigKey,
    /// TTL of the TXT records added.
    pub ttl: u32,
    /// How long to wait for the server's answer, retransmissions included.
    pub timeout: Duration,
    pub transport: Rfc2136Transport,
}

impl Rfc2136Config {
    /// TTL 60 s, timeout 10 s, UDP.
    pub fn new(server: SocketAddr, zone: &str, key: TsigKey) -> Self {
        Self {
            server,
            zone: zone.to_owned(),
            key,
            ttl: 60,
            timeout: Duration::from_secs(10),
            transport: Rfc2136Transport::Udp,
        }
    }
}

/// A [`DnsProvider`] that sends RFC 2136 updates signed with TSIG.
pub struct Rfc2136Provider {
    config: Rfc2136Config,
    zone: Name,
    signer: TSigner,
    metrics: DnsMetrics,
}

impl std::fmt::Debug for Rfc2136Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config's key redacts its secret; the signer holds it too and is left out.
        f.debug_struct("Rfc2136Provider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Rfc2136Provider {
    pub fn new(config: Rfc2136Config) -> Result<Self, DnsError> {
        let zone = parse_fqdn(&config.zone)?;
        let signer = config.key.signer()?;
        Ok(Self {
            config,
            zone,
            signer,
            metrics: DnsMetrics::default(),
        })
    }

    /// Counts updates in `metrics` (provider label `rfc2136`).
    pub fn with_metrics(mut self, metrics: DnsMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn config(&self) -> &Rfc2136Config {
        &self.config
    }

    async fn update(&self, operation: Operation, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let result = self.try_update(operation, fqdn, value).await;
        self.metrics.record_update("rfc2136", operation, &result);
        match &result {
            Ok(()) => tracing::debug!(
                server = %self.config.server, name = fqdn, ?operation, "RFC 2136 update applied"
            ),
            Err(e) => tracing::warn!(
                server = %self.config.server, name = fqdn, ?operation, error = %e, "RFC 2136 update failed"
            ),
        }
        result
    }

    async fn try_update(
        &self,
        operation: Operation,
        fqdn: &str,
        value: &str,
    ) -> Result<(), DnsError> {
        let name = parse_fqdn(fqdn)?;
        if !self.zone.zone_of(&name) {
            return Err(DnsError::NotInZone {
                name: fqdn.to_owned(),
                zone: self.config.zone.clone(),
            });
        }
        let txt = RData::TXT(txt_rdata(value)?);

        let mut message = Message::query();
        message.metadata.op_code = OpCode::Update;
        message.metadata.recursion_desired = false;
        let mut zone = Query::query(self.zone.clone(), RecordType::SOA);
        zone.set_query_class(DNSClass::IN);
        message.add_query(zone);
        // RFC 2136 §2.5.1 "add to an RRset" and §2.5.4 "delete an RR from an RRset": both touch
        // this one value, never the other values of the name.
        let record = match operation {
            Operation::Add => Record::from_rdata(name, self.config.ttl, txt),
            Operation::Remove => {
                let mut record = Record::from_rdata(name, 0, txt);
                record.dns_class = DNSClass::NONE;
                record
            }
        };
        message.add_authority(record);

        let now = now_unix();
        message
            .finalize(&self.signer, now)
            .map_err(|e| DnsError::Key(format!("cannot sign the update: {e}")))?;
        let request_mac = message
            .signature()
            .map(|s| s.data.mac.clone())
            .unwrap_or_default();

        let response = self.exchange(message).await?;
        self.check_response(&response, &request_mac, fqdn)
    }

    async fn exchange(&self, message: Message) -> Result<Vec<u8>, DnsError> {
        let server = self.config.server;
        let timeout = self.config.timeout;
        let request = DnsRequest::new(message, DnsRequestOptions::default());
        let provider = TokioRuntimeProvider::new();
        let transport_error = |e: NetError| match e {
            NetError::Timeout => DnsError::Timeout {
                server: server.to_string(),
                timeout,
            },
            other => DnsError::Transport {
                server: server.to_string(),
                detail: other.to_string(),
            },
        };
        let exchange = async {
            // hickory spawns its background I/O task into a JoinSet owned by the runtime
            // provider and aborts it when the last provider clone is dropped (for TCP that is
            // at the end of `exchange` itself), so both the provider and the exchange handle are
            // kept until the answer is in.
            let exchange = match self.config.transport {
                Rfc2136Transport::Udp => UdpClientStream::builder(server, provider.clone())
                    .with_timeout(Some(timeout))
                    .exchange(),
                Rfc2136Transport::Tcp => {
                    TcpClientStream::exchange(server, None, timeout, None, provider.clone())
                        .await
                        .map_err(transport_error)?
                }
            };
            let mut responses = exchange.send(request);
            let first = responses.next().await;
            drop(responses);
            drop(exchange);
            drop(provider);
            match first {
                Some(Ok(response)) => Ok(response.into_buffer()),
                Some(Err(e)) => Err(transport_error(e)),
                None => Err(transport_error(NetError::Timeout)),
            }
        };
        // hickory bounds each attempt; this bounds the whole exchange, connection included.
        tokio::time::timeout(timeout + Duration::from_secs(1), exchange)
            .await
            .map_err(|_| DnsError::Timeout {
                server: server.to_string(),
                timeout,
            })?
    }

    fn check_response(&self, bytes: &[u8], request_mac: &[u8], fqdn: &str) -> Result<(), DnsError> {
        let server = self.config.server.to_string();
        let key = self.config.key.name().to_owned();
        let bad = |detail: String| DnsError::BadResponse {
            server: server.clone(),
            key: key.clone(),
            detail,
        };
        let response = Message::from_vec(bytes).map_err(|e| bad(format!("unparsable: {e}")))?;
        if let Some(error) = response.signature().and_then(|s| s.data.error) {
            return Err(DnsError::TsigRejected {
                server,
                key,
                detail: describe_tsig_error(error),
            });
        }
        match response.metadata.response_code {
            ResponseCode::NoError => {}
            ResponseCode::NotAuth if response.signature().is_none() => {
                return Err(DnsError::TsigRejected {
                    server,
                    key,
                    detail: format!(
                        "NOTAUTH without a TSIG record: the server does not accept the key, or is \
                         not authoritative for the zone {}",
                        self.config.zone
                    ),
                });
            }
            ResponseCode::NotAuth => {
                return Err(DnsError::NotAuthoritative {
                    server,
                    zone: self.config.zone.clone(),
                });
            }
            ResponseCode::Refused => {
                return Err(DnsError::Refused {
                    server,
                    name: fqdn.to_owned(),
                    key,
                    zone: self.config.zone.clone(),
                });
            }
            other => {
                return Err(DnsError::Rcode {
                    server,
                    name: fqdn.to_owned(),
                    rcode: rcode_name(other).to_owned(),
                });
            }
        }

        // Success must be authenticated, or anyone on the path could fake it.
        let Some(record) = response.signature() else {
            return Err(bad("the answer is not signed".to_owned()));
        };
        let tsig = &record.data;
        if record.name != *self.signer.signer_name()
            || TsigAlgorithm::from_hickory(&tsig.algorithm) != Some(self.config.key.algorithm())
        {
            return Err(bad(format!(
                "the answer is signed with the key {}",
                record.name
            )));
        }
        let (tbv, _) = signed_bitmessage_to_buf(bytes, Some(request_mac), true)
            .map_err(|e| bad(e.to_string()))?;
        self.signer
            .verify(&tbv, &tsig.mac)
            .map_err(|_| bad("the MAC does not verify".to_owned()))?;
        let now = now_unix();
        if now.abs_diff(tsig.time) > u64::from(tsig.fudge) {
            return Err(bad(format!(
                "signed at {} but the local clock says {now}",
                tsig.time
            )));
        }
        Ok(())
    }
}

fn describe_tsig_error(error: TsigError) -> String {
    match error {
        TsigError::BadSig => {
            "BADSIG: the MAC does not verify, so the secret (or algorithm) differs from the \
             server's copy of the key"
                .to_owned()
        }
        TsigError::BadKey => {
            "BADKEY: the server knows no key of this name and algorithm".to_owned()
        }
        TsigError::BadTime => {
            "BADTIME: the clocks of this host and of the server differ by more than the allowed \
             fudge (300 s); check NTP"
                .to_owned()
        }
        TsigError::BadTrunc => "BADTRUNC: the server refuses the MAC length".to_owned(),
        TsigError::Unknown(code) => format!("TSIG error {code}"),
    }
}

#[async_trait]
impl DnsProvider for Rfc2136Provider {
    async fn add_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.update(Operation::Add, fqdn, value).await
    }

    async fn remove_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        self.update(Operation::Remove, fqdn, value).await
    }

    fn name(&self) -> &str {
        "rfc2136"
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::MessageType;

    use super::*;

    fn key() -> TsigKey {
        TsigKey::new("k", TsigAlgorithm::HmacSha256, vec![7; 32]).unwrap()
    }

    fn provider(server: SocketAddr) -> Rfc2136Provider {
        let mut config = Rfc2136Config::new(server, "zone.test", key());
        config.timeout = Duration::from_millis(500);
        Rfc2136Provider::new(config).unwrap()
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let metrics = DnsMetrics::new();
        let p = provider(silent.local_addr().unwrap()).with_metrics(metrics.clone());
        let err = p
            .add_txt("_acme-challenge.zone.test", "x")
            .await
            .unwrap_err();
        assert!(matches!(err, DnsError::Timeout { .. }), "{err}");
        assert_eq!(metrics.update_count("rfc2136", "add", "timeout"), 1);
    }

    #[tokio::test]
    async fn a_closed_tcp_port_is_a_transport_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut p = provider(addr);
        p.config.transport = Rfc2136Transport::Tcp;
        let err = p
            .add_txt("_acme-challenge.zone.test", "x")
            .await
            .unwrap_err();
        assert!(
            matches!(err, DnsError::Transport { .. } | DnsError::Timeout { .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn invalid_input_is_refused_locally() {
        let p = provider("127.0.0.1:9".parse().unwrap());
        for (name, value) in [
            ("_acme-challenge.other.test", "x"),
            ("", "x"),
            ("_acme-challenge.zone.test", ""),
            ("_acme-challenge.zone.test", "é"),
        ] {
            assert!(
                matches!(
                    p.add_txt(name, value).await,
                    Err(DnsError::NotInZone { .. }
                        | DnsError::InvalidName { .. }
                        | DnsError::InvalidValue(_))
                ),
                "{name} {value}"
            );
        }
    }

    fn answer(rcode: ResponseCode) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Update);
        m.metadata.response_code = rcode;
        m
    }

    #[test]
    fn responses_are_checked() {
        let p = provider("127.0.0.1:53".parse().unwrap());
        let check = |m: Message| p.check_response(&m.to_vec().unwrap(), &[1; 32], "n.zone.test");
        assert!(matches!(
            check(answer(ResponseCode::NoError)),
            Err(DnsError::BadResponse { .. })
        ));
        assert!(matches!(
            check(answer(ResponseCode::NotAuth)),
            Err(DnsError::TsigRejected { .. })
        ));
        assert!(matches!(
            check(answer(ResponseCode::Refused)),
            Err(DnsError::Refused { .. })
        ));
        assert!(matches!(
            check(answer(ResponseCode::ServFail)),
            Err(DnsError::Rcode { rcode, .. }) if rcode == "SERVFAIL"
        ));
        // Signed by someone else.
        let other = TsigKey::new("k", TsigAlgorithm::HmacSha256, vec![8; 32])
            .unwrap()
            .signer()
            .unwrap();
        let mut m = answer(ResponseCode::NoError);
        m.finalize(&other, now_unix()).unwrap();
        assert!(matches!(check(m), Err(DnsError::BadResponse { .. })));
    }
}
