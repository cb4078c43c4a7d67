//! The built-in server's message handling, without I/O: request bytes in, response bytes out.
//!
//! It answers authoritatively for its zones (SOA and NS at the apex, TXT from the record store,
//! NXDOMAIN / NODATA with the SOA in the authority section, REFUSED outside its zones), applies
//! RFC 2136 updates signed with its own TSIG key (TXT records only), and serves TSIG-signed zone
//! transfers when it is a stealth primary.
//!
//! Anything a peer sends is untrusted: malformed, truncated or oversized messages get FORMERR
//! or no answer at all, never a panic.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::{TSIG, TsigError, make_tsig_record, signed_bitmessage_to_buf};
use hickory_proto::rr::rdata::{NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigner};

use super::metrics::DnsMetrics;
use super::store::{Change, LimitExceeded, RecordStore, Records};
use super::tsig::{DEFAULT_FUDGE, TsigAlgorithm, TsigKey};
use super::{DnsError, now_unix, parse_fqdn, txt_rdata, txt_value};

/// Negative answers may be cached this long (the SOA MINIMUM, RFC 2308): short, so a CA that
/// looks before the record is published retries soon.
pub const NEGATIVE_TTL: u32 = 10;
/// SOA timers for secondaries of a stealth-primary setup: they poll every minute in case a
/// NOTIFY is lost, and keep serving for a week if this server is unreachable.
const SOA_REFRESH: i32 = 60;
const SOA_RETRY: i32 = 30;
const SOA_EXPIRE: i32 = 604_800;
/// Largest UDP response, whatever the client's EDNS buffer: the DNS flag day 2020 value, which
/// avoids IP fragmentation.
const MAX_UDP_RESPONSE: usize = 1232;
/// Zone transfer messages are cut at about this size (well under the 64 KiB TCP limit).
const AXFR_CHUNK: usize = 16 * 1024;
/// A signed request more than this many seconds off is BADTIME even if its own fudge is larger;
/// a long window would let a captured update be replayed for longer.
const MAX_FUDGE: u64 = 300;
const HEADER_LEN: usize = 12;

/// Where a message came from: UDP answers are limited in size, zone transfers need TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// One zone the built-in server is authoritative for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The zone apex, e.g. `devices.ragw.test` or, behind an NS delegation of the challenge
    /// name alone, `_acme-challenge.devices.example.com`.
    pub apex: String,
    /// Names published as the zone's NS records; the first is the SOA MNAME. Empty means
    /// `ns.<apex>`. Behind a delegation, list the names the parent's NS records use.
    pub nameservers: Vec<String>,
    /// The SOA RNAME (mailbox as a name); `None` means `hostmaster.<apex>`.
    pub hostmaster: Option<String>,
}

impl ZoneConfig {
    pub fn new(apex: &str) -> Self {
        Self {
            apex: apex.to_owned(),
            nameservers: Vec::new(),
            hostmaster: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Zone {
    apex: Name,
    nameservers: Vec<Name>,
    hostmaster: Name,
}

/// The sans-IO core of [`super::BuiltinDns`].
pub struct Responder {
    zones: Vec<Zone>,
    key: TsigKey,
    key_name: Name,
    signer: TSigner,
    store: RecordStore,
    metrics: DnsMetrics,
    ttl: u32,
    allow_transfer: bool,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("zones", &self.zones())
            .field("key", &self.key)
            .field("allow_transfer", &self.allow_transfer)
            .finish_non_exhaustive()
    }
}

/// How a request's TSIG record checked out.
enum Tsig {
    Unsigned,
    /// Signed with our key: the response is signed too, chained to this MAC.
    Valid {
        mac: Vec<u8>,
    },
    Invalid(TsigFailure),
}

struct TsigFailure {
    error: TsigError,
    key_name: Name,
    algorithm: hickory_proto::rr::rdata::tsig::TsigAlgorithm,
    /// For BADTIME, which is answered signed (RFC 8945 §5.2.3).
    time_signed: u64,
    mac: Vec<u8>,
}

impl Responder {
    /// A responder for `zones`, accepting updates signed with `key`. `ttl` is the TTL of the
    /// SOA, NS and of TXT records added in process. Zone transfers (AXFR, IXFR answered as
    /// AXFR) are served only when `allow_transfer` is set, and only to requests signed with `key`.
    pub fn new(
        zones: &[ZoneConfig],
        key: TsigKey,
        ttl: u32,
        allow_transfer: bool,
        metrics: DnsMetrics,
    ) -> Result<Self, DnsError> {
        if zones.is_empty() {
            return Err(DnsError::Server("no zone configured".to_owned()));
        }
        let mut built: Vec<Zone> = Vec::new();
        for cfg in zones {
            let apex = parse_fqdn(&cfg.apex)?;
            if let Some(other) = built
                .iter()
                .find(|z| z.apex.zone_of(&apex) || apex.zone_of(&z.apex))
            {
                return Err(DnsError::Server(format!(
                    "the zones {} and {apex} overlap; configure only the outer one",
                    other.apex
                )));
            }
            let nameservers = if cfg.nameservers.is_empty() {
                vec![prepend(&apex, "ns")?]
            } else {
                cfg.nameservers
                    .iter()
                    .map(|n| parse_fqdn(n))
                    .collect::<Result<Vec<_>, _>>()?
            };
            let hostmaster = match &cfg.hostmaster {
                Some(h) => parse_fqdn(h)?,
                None => prepend(&apex, "hostmaster")?,
            };
            built.push(Zone {
                apex,
                nameservers,
                hostmaster,
            });
        }
        Ok(Self {
            zones: built,
            key_name: key.dns_name()?,
            signer: key.signer()?,
            key,
            store: RecordStore::new(now_unix()),
            metrics,
            ttl,
            allow_transfer,
        })
    }

    /// The zone apexes, without trailing dot.
    pub fn zones(&self) -> Vec<String> {
        self.zones
            .iter()
            .map(|z| z.apex.to_ascii().trim_end_matches('.').to_owned())
            .collect()
    }

    pub fn key(&self) -> &TsigKey {
        &self.key
    }

    /// The current SOA serial (one for all zones).
    pub fn serial(&self) -> u32 {
        self.store.read().serial()
    }

    pub(crate) fn store(&self) -> &RecordStore {
        &self.store
    }

    /// Adds a TXT value in process (what [`super::BuiltinDns`]'s provider does).
    pub fn add_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let name = self.name_in_zones(fqdn)?;
        let txt = txt_rdata(value)?;
        self.store
            .apply(
                &[Change::Add {
                    name,
                    txt,
                    ttl: self.ttl,
                }],
                now_unix(),
            )
            .map(|_| ())
            .map_err(|LimitExceeded(m)| DnsError::Limit(m))
    }

    /// Removes one TXT value in process; absent values are not an error.
    pub fn remove_txt(&self, fqdn: &str, value: &str) -> Result<(), DnsError> {
        let name = self.name_in_zones(fqdn)?;
        let txt = txt_rdata(value)?;
        self.store
            .apply(&[Change::Remove { name, txt }], now_unix())
            .map(|_| ())
            .map_err(|LimitExceeded(m)| DnsError::Limit(m))
    }

    /// The TXT values currently served at `fqdn`.
    pub fn txt_values(&self, fqdn: &str) -> Result<Vec<String>, DnsError> {
        let name = parse_fqdn(fqdn)?;
        Ok(self
            .store
            .read()
            .get(&name)
            .map(|set| set.values.iter().map(txt_value).collect())
            .unwrap_or_default())
    }

    fn name_in_zones(&self, fqdn: &str) -> Result<Name, DnsError> {
        let name = parse_fqdn(fqdn)?;
        if self.zone_for(&name).is_none() {
            return Err(DnsError::NotInZone {
                name: fqdn.to_owned(),
                zone: self.zones().join(", "),
            });
        }
        Ok(name)
    }

    fn zone_for(&self, name: &Name) -> Option<&Zone> {
        self.zones.iter().find(|z| z.apex.zone_of(name))
    }

    /// Answers one request. An empty result means "send nothing" (not a request, or too broken
    /// to answer); a zone transfer over TCP may produce several messages, each to be sent in
    /// order. `now` is the Unix time, used for TSIG.
    pub fn handle(&self, request: &[u8], transport: Transport, now: u64) -> Vec<Vec<u8>> {
        let Some(header) = request.get(..HEADER_LEN) else {
            return Vec::new();
        };
        if header[2] & 0x80 != 0 {
            // A response (for example the acknowledgement of a NOTIFY we sent): never answer
            // one, which also keeps two servers from bouncing errors forever.
            return Vec::new();
        }
        if !counts_fit(request) {
            return vec![format_error(header)];
        }
        let message = match Message::from_vec(request) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "malformed DNS request");
                return vec![format_error(header)];
            }
        };

        if message.edns.as_ref().is_some_and(|e| e.version() > 0) {
            self.metrics.record_server_query("BADVERS");
            let response = self.response(&message, ResponseCode::BADVERS);
            return self.finish(response, &Tsig::Unsigned, &message, transport, now);
        }

        let tsig = self.check_tsig(request, &message, now);
        if let Tsig::Invalid(failure) = &tsig {
            if message.op_code == OpCode::Update {
                // Worth an operator's attention: a client holds a wrong key or clock.
                tracing::info!(
                    key = %failure.key_name,
                    error = ?failure.error,
                    "refused an RFC 2136 update with a bad TSIG signature"
                );
                self.metrics.record_server_update("NOTAUTH");
            } else {
                tracing::debug!(
                    key = %failure.key_name,
                    error = ?failure.error,
                    opcode = ?message.op_code,
                    "refused a request with a bad TSIG signature"
                );
                self.metrics.record_server_query("NOTAUTH");
            }
            return self.tsig_error(&message, failure, now);
        }

        match message.op_code {
            OpCode::Query => self.query(&message, &tsig, transport, now),
            OpCode::Update => self.update(&message, &tsig, transport, now),
            _ => {
                let response = self.response(&message, ResponseCode::NotImp);
                self.finish(response, &tsig, &message, transport, now)
            }
        }
    }

    fn check_tsig(&self, raw: &[u8], message: &Message, now: u64) -> Tsig {
        let Some(record) = message.signature() else {
            return Tsig::Unsigned;
        };
        let tsig = &record.data;
        let failure = |error| {
            Tsig::Invalid(TsigFailure {
                error,
                key_name: record.name.clone(),
                algorithm: tsig.algorithm.clone(),
                time_signed: tsig.time,
                mac: tsig.mac.clone(),
            })
        };
        if record.name != self.key_name
            || TsigAlgorithm::from_hickory(&tsig.algorithm) != Some(self.key.algorithm())
        {
            return failure(TsigError::BadKey);
        }
        // Truncated MACs (RFC 8945 §5.2.2.1) are not accepted: hickory cannot verify them and
        // no client we serve sends them.
        if tsig.mac.len() != self.key.algorithm().mac_len() {
            return failure(TsigError::BadSig);
        }
        // The message parsed completely above, so its section counts are consistent; hickory's
        // re-parse below relies on that.
        let Ok((tbv, _)) = signed_bitmessage_to_buf(raw, None, true) else {
            return failure(TsigError::BadSig);
        };
        if self.signer.verify(&tbv, &tsig.mac).is_err() {
            return failure(TsigError::BadSig);
        }
        let fudge = u64::from(tsig.fudge).min(MAX_FUDGE);
        if now.abs_diff(tsig.time) > fudge {
            return failure(TsigError::BadTime);
        }
        Tsig::Valid {
            mac: tsig.mac.clone(),
        }
    }

    /// NOTAUTH with the TSIG error: unsigned for BADKEY/BADSIG (the request proved nothing),
    /// signed for BADTIME with our clock in Other Data so the client can see the skew.
    fn tsig_error(&self, request: &Message, failure: &TsigFailure, now: u64) -> Vec<Vec<u8>> {
        let mut response = self.response(request, ResponseCode::NotAuth);
        let result = if failure.error == TsigError::BadTime {
            let other = now.to_be_bytes()[2..].to_vec();
            self.sign(
                &mut response,
                &failure.mac,
                failure.time_signed,
                Some(TsigError::BadTime),
                other,
            )
            .and_then(|()| response.to_vec())
        } else {
            let stub = TSIG::new(
                failure.algorithm.clone(),
                now,
                DEFAULT_FUDGE,
                Vec::new(),
                request.id,
                Some(failure.error),
                Vec::new(),
            );
            response.set_signature(Box::new(make_tsig_record(failure.key_name.clone(), stub)));
            response.to_vec()
        };
        match result {
            Ok(bytes) => vec![bytes],
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a TSIG error response");
                vec![server_failure(request)]
            }
        }
    }

    fn query(
        &self,
        request: &Message,
        tsig: &Tsig,
        transport: Transport,
        now: u64,
    ) -> Vec<Vec<u8>> {
        let reply = |rcode| {
            self.metrics.record_server_query(rcode_name(rcode));
            let response = self.response(request, rcode);
            self.finish(response, tsig, request, transport, now)
        };
        let [query] = request.queries.as_slice() else {
            return reply(ResponseCode::FormErr);
        };
        if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
            return reply(ResponseCode::Refused);
        }
        let qtype = query.query_type();
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return self.transfer(request, query, tsig, transport, now);
        }
        let qname = query.name();
        let Some(zone) = self.zone_for(qname) else {
            return reply(ResponseCode::Refused);
        };

        let records = self.store.read();
        let mut response = self.response(request, ResponseCode::NoError);
        response.metadata.authoritative = true;
        let at_apex = *qname == zone.apex;
        if at_apex && matches!(qtype, RecordType::SOA | RecordType::ANY) {
            response.add_answer(self.soa_record(zone, records.serial(), self.ttl));
        }
        if at_apex && matches!(qtype, RecordType::NS | RecordType::ANY) {
            response.add_answers(self.ns_records(zone));
        }
        let txt = records.get(qname);
        if let Some(set) = txt.filter(|_| matches!(qtype, RecordType::TXT | RecordType::ANY)) {
            for value in &set.values {
                // The owner name echoes the question, keeping the client's letter case.
                response.add_answer(Record::from_rdata(
                    qname.clone(),
                    set.ttl,
                    RData::TXT(value.clone()),
                ));
            }
        }
        if response.answers.is_empty() {
            let exists = at_apex || txt.is_some() || records.has_names_below(qname);
            if !exists {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            response.add_authority(self.soa_record(
                zone,
                records.serial(),
                NEGATIVE_TTL.min(self.ttl),
            ));
        }
        drop(records);
        self.metrics
            .record_server_query(rcode_name(response.metadata.response_code));
        self.finish(response, tsig, request, transport, now)
    }

    /// AXFR, and IXFR answered with the whole zone (RFC 1995 §4), for secondaries of a
    /// stealth-primary setup.
    fn transfer(
        &self,
        request: &Message,
        query: &Query,
        tsig: &Tsig,
        transport: Transport,
        now: u64,
    ) -> Vec<Vec<u8>> {
        let reply = |rcode| {
            self.metrics.record_server_query(rcode_name(rcode));
            let response = self.response(request, rcode);
            self.finish(response, tsig, request, transport, now)
        };
        let qname = query.name();
        let zone = match self.zone_for(qname) {
            None => return reply(ResponseCode::Refused),
            Some(z) if z.apex != *qname => return reply(ResponseCode::NotAuth),
            Some(z) => z,
        };
        let Tsig::Valid { mac } = tsig else {
            return reply(ResponseCode::Refused);
        };
        if !self.allow_transfer {
            return reply(ResponseCode::Refused);
        }
        let records = self.store.read();
        let serial = records.serial();
        if transport == Transport::Udp {
            if query.query_type() == RecordType::IXFR {
                // RFC 1995 §2: over UDP, the current SOA alone tells the client to retry on TCP
                // (or that it is up to date).
                let mut response = self.response(request, ResponseCode::NoError);
                response.metadata.authoritative = true;
                response.add_answer(self.soa_record(zone, serial, self.ttl));
                drop(records);
                self.metrics.record_server_query("NOERROR");
                return self.finish(response, tsig, request, transport, now);
            }
            drop(records);
            return reply(ResponseCode::FormErr);
        }

        let soa = self.soa_record(zone, serial, self.ttl);
        let mut all = vec![soa.clone()];
        all.extend(self.ns_records(zone));
        for (name, set) in records.under(&zone.apex) {
            for value in &set.values {
                all.push(Record::from_rdata(
                    name.clone(),
                    set.ttl,
                    RData::TXT(value.clone()),
                ));
            }
        }
        all.push(soa);
        drop(records);
        self.metrics.record_server_query("NOERROR");

        let mut chunks: Vec<Vec<Record>> = vec![Vec::new()];
        let mut size = 0usize;
        for record in all {
            let estimate = record.name.len() + 12 + rdata_estimate(&record.data);
            if size + estimate > AXFR_CHUNK && chunks.last().is_some_and(|c| !c.is_empty()) {
                chunks.push(Vec::new());
                size = 0;
            }
            size += estimate;
            if let Some(last) = chunks.last_mut() {
                last.push(record);
            }
        }

        let mut out = Vec::with_capacity(chunks.len());
        let mut previous_mac = mac.clone();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut response = self.response(request, ResponseCode::NoError);
            response.metadata.authoritative = true;
            if i > 0 {
                // RFC 5936 §2.2: only the first message repeats the question.
                response.queries.clear();
                response.edns = None;
            }
            response.insert_answers(chunk);
            let signed = if i == 0 {
                self.sign(&mut response, &previous_mac, now, None, Vec::new())
                    .and_then(|()| response.to_vec())
            } else {
                self.sign_continuation(&mut response, &previous_mac, now)
            };
            match signed {
                Ok(bytes) => {
                    if let Some(sig) = response.signature() {
                        previous_mac = sig.data.mac.clone();
                    }
                    out.push(bytes);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode a zone transfer message");
                    return vec![server_failure(request)];
                }
            }
        }
        tracing::info!(zone = %zone.apex, serial, messages = out.len(), "zone transfer");
        out
    }

    fn update(
        &self,
        request: &Message,
        tsig: &Tsig,
        transport: Transport,
        now: u64,
    ) -> Vec<Vec<u8>> {
        let rcode = self.apply_update(request, tsig, now);
        self.metrics.record_server_update(rcode_name(rcode));
        let zone = request.queries.first().map(|q| q.name().to_string());
        if rcode == ResponseCode::NoError {
            tracing::debug!(
                zone = zone.as_deref().unwrap_or(""),
                "applied an RFC 2136 update"
            );
        } else {
            tracing::info!(
                zone = zone.as_deref().unwrap_or(""),
                rcode = rcode_name(rcode),
                signed = matches!(tsig, Tsig::Valid { .. }),
                "refused an RFC 2136 update"
            );
        }
        let response = self.response(request, rcode);
        self.finish(response, tsig, request, transport, now)
    }

    /// RFC 2136 §3: zone section, authorization, prerequisites, prescan, then all changes or
    /// none.
    fn apply_update(&self, request: &Message, tsig: &Tsig, now: u64) -> ResponseCode {
        let [zone_query] = request.queries.as_slice() else {
            return ResponseCode::FormErr;
        };
        if zone_query.query_type() != RecordType::SOA {
            return ResponseCode::FormErr;
        }
        let Some(zone) = self
            .zones
            .iter()
            .find(|z| z.apex == *zone_query.name() && zone_query.query_class() == DNSClass::IN)
        else {
            return ResponseCode::NotAuth;
        };
        if !matches!(tsig, Tsig::Valid { .. }) {
            return ResponseCode::Refused;
        }
        self.store.write(|records| {
            if let Err(rcode) = check_prerequisites(zone, &request.answers, records) {
                return rcode;
            }
            let changes = match prescan(zone, &request.authorities) {
                Ok(changes) => changes,
                Err(rcode) => return rcode,
            };
            match records.apply(&changes, now) {
                Ok(_) => ResponseCode::NoError,
                Err(LimitExceeded(reason)) => {
                    tracing::warn!(%reason, "refused an RFC 2136 update over the record limit");
                    ResponseCode::Refused
                }
            }
        })
    }

    /// A signed NOTIFY (RFC 1996) for every zone, with the current serial, for the secondaries
    /// of a stealth-primary setup. Returns (message id, bytes) pairs.
    pub(crate) fn notify_messages(&self, now: u64) -> Vec<(u16, Vec<u8>)> {
        let serial = self.serial();
        let mut out = Vec::new();
        for zone in &self.zones {
            let mut message = Message::query();
            message.metadata.op_code = OpCode::Notify;
            message.metadata.authoritative = true;
            message.metadata.recursion_desired = false;
            let mut query = Query::query(zone.apex.clone(), RecordType::SOA);
            query.set_query_class(DNSClass::IN);
            message.add_query(query);
            message.add_answer(self.soa_record(zone, serial, self.ttl));
            let encoded = message
                .finalize(&self.signer, now)
                .and_then(|_| message.to_vec());
            match encoded {
                Ok(bytes) => out.push((message.id, bytes)),
                Err(e) => tracing::warn!(error = %e, zone = %zone.apex, "cannot build a NOTIFY"),
            }
        }
        out
    }

    fn response(&self, request: &Message, rcode: ResponseCode) -> Message {
        let mut response = Message::new(request.id, MessageType::Response, request.op_code);
        response.metadata.recursion_desired = request.recursion_desired;
        response.metadata.checking_disabled = request.checking_disabled;
        response.metadata.response_code = rcode;
        response.queries = request.queries.clone();
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP_RESPONSE as u16);
            edns.set_version(0);
            response.set_edns(edns);
        }
        response
    }

    /// Signs (when the request was validly signed), encodes and, over UDP, truncates to what
    /// the client can receive.
    fn finish(
        &self,
        mut response: Message,
        tsig: &Tsig,
        request: &Message,
        transport: Transport,
        now: u64,
    ) -> Vec<Vec<u8>> {
        let limit = match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => usize::from(request.max_payload()).min(MAX_UDP_RESPONSE),
        };
        for attempt in 0..2 {
            if attempt == 1 {
                // RFC 2181 §9: drop the sections rather than send a partial RRset.
                response.metadata.truncation = true;
                response.answers.clear();
                response.authorities.clear();
                response.additionals.clear();
            }
            let encoded = match tsig {
                Tsig::Valid { mac } => self
                    .sign(&mut response, mac, now, None, Vec::new())
                    .and_then(|()| response.to_vec()),
                _ => response.to_vec(),
            };
            match encoded {
                Ok(bytes) if bytes.len() <= limit => return vec![bytes],
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot encode a DNS response");
                    return vec![server_failure(request)];
                }
            }
        }
        vec![server_failure(request)]
    }

    /// Signs a response to a signed request (RFC 8945 §5.3): request MAC, response, TSIG
    /// variables.
    fn sign(
        &self,
        response: &mut Message,
        request_mac: &[u8],
        time: u64,
        error: Option<TsigError>,
        other: Vec<u8>,
    ) -> Result<(), hickory_proto::ProtoError> {
        response.signature = None;
        let unsigned = response.to_vec()?;
        let stub = TSIG::new(
            self.key.algorithm().to_hickory(),
            time,
            DEFAULT_FUDGE,
            Vec::new(),
            response.id,
            error,
            other,
        );
        let tbs = self
            .signer
            .encode_response_tbs(request_mac, &unsigned, &stub)?;
        let mac = self
            .signer
            .sign(&tbs)
            .map_err(|e| hickory_proto::ProtoError::from(e.to_string()))?;
        response.set_signature(Box::new(make_tsig_record(
            self.key_name.clone(),
            stub.set_mac(mac),
        )));
        Ok(())
    }

    /// Signs a later message of a multi-message response (RFC 8945 §5.3.1): previous MAC,
    /// message, and only the timers of the TSIG variables.
    fn sign_continuation(
        &self,
        response: &mut Message,
        previous_mac: &[u8],
        time: u64,
    ) -> Result<Vec<u8>, hickory_proto::ProtoError> {
        response.signature = None;
        let unsigned = response.to_vec()?;
        let prev_len = u16::try_from(previous_mac.len())
            .map_err(|_| hickory_proto::ProtoError::from("MAC too long"))?;
        let mut tbs = Vec::with_capacity(unsigned.len() + previous_mac.len() + 10);
        tbs.extend_from_slice(&prev_len.to_be_bytes());
        tbs.extend_from_slice(previous_mac);
        tbs.extend_from_slice(&unsigned);
        tbs.extend_from_slice(&time.to_be_bytes()[2..]);
        tbs.extend_from_slice(&DEFAULT_FUDGE.to_be_bytes());
        let mac = self
            .signer
            .sign(&tbs)
            .map_err(|e| hickory_proto::ProtoError::from(e.to_string()))?;
        let tsig = TSIG::new(
            self.key.algorithm().to_hickory(),
            time,
            DEFAULT_FUDGE,
            mac,
            response.id,
            None,
            Vec::new(),
        );
        response.set_signature(Box::new(make_tsig_record(self.key_name.clone(), tsig)));
        response.to_vec()
    }

    fn soa_record(&self, zone: &Zone, serial: u32, ttl: u32) -> Record {
        let mname = zone
            .nameservers
            .first()
            .cloned()
            .unwrap_or_else(|| zone.apex.clone());
        Record::from_rdata(
            zone.apex.clone(),
            ttl,
            RData::SOA(SOA::new(
                mname,
                zone.hostmaster.clone(),
                serial,
                SOA_REFRESH,
                SOA_RETRY,
                SOA_EXPIRE,
                NEGATIVE_TTL,
            )),
        )
    }

    fn ns_records(&self, zone: &Zone) -> Vec<Record> {
        zone.nameservers
            .iter()
            .map(|ns| Record::from_rdata(zone.apex.clone(), self.ttl, RData::NS(NS(ns.clone()))))
            .collect()
    }
}

fn prepend(apex: &Name, label: &str) -> Result<Name, DnsError> {
    apex.prepend_label(label)
        .map_err(|e| DnsError::InvalidName {
            name: format!("{label}.{apex}"),
            reason: e.to_string(),
        })
}

fn rdata_estimate(data: &RData) -> usize {
    match data {
        RData::TXT(txt) => txt.txt_data.iter().map(|s| s.len() + 1).sum(),
        _ => 64,
    }
}

/// Whether the header's section counts can possibly fit in the message (a question takes at
/// least 5 octets, a record 11), so that a 12-octet packet claiming 65535 records is refused
/// before any allocation sized by those counts.
fn counts_fit(request: &[u8]) -> bool {
    let count = |i: usize| {
        request
            .get(i..i + 2)
            .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    };
    let needed = HEADER_LEN + count(4) * 5 + (count(6) + count(8) + count(10)) * 11;
    needed <= request.len()
}

/// FORMERR built from the raw header alone: the message could not be parsed.
fn format_error(header: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    out[0] = header[0];
    out[1] = header[1];
    // QR, the request's opcode and RD; AA/TC cleared.
    out[2] = 0x80 | (header[2] & 0x79);
    out[3] = 1; // FORMERR
    out
}

/// SERVFAIL with the request's question: the response could not be encoded.
fn server_failure(request: &Message) -> Vec<u8> {
    let mut response = Message::new(request.id, MessageType::Response, request.op_code);
    response.metadata.response_code = ResponseCode::ServFail;
    response.metadata.recursion_desired = request.recursion_desired;
    response.queries = request.queries.clone();
    response.to_vec().unwrap_or_else(|_| {
        let mut out = vec![0u8; HEADER_LEN];
        out[..2].copy_from_slice(&request.id.to_be_bytes());
        out[2] = 0x80 | (u8::from(request.op_code) << 3);
        out[3] = 2;
        out
    })
}

/// RFC 2136 §3.2: prerequisites, checked against the records (TXT) and the apex SOA/NS.
fn check_prerequisites(
    zone: &Zone,
    prerequisites: &[Record],
    records: &Records,
) -> Result<(), ResponseCode> {
    let mut value_dependent: Vec<(&Name, Vec<&TXT>)> = Vec::new();
    for rr in prerequisites {
        if rr.ttl != 0 {
            return Err(ResponseCode::FormErr);
        }
        if !zone.apex.zone_of(&rr.name) {
            return Err(ResponseCode::NotZone);
        }
        let is_empty = matches!(rr.data, RData::Update0(_));
        let rtype = rr.record_type();
        let at_apex = rr.name == zone.apex;
        let rrset_exists = |rtype| match rtype {
            RecordType::TXT => records.get(&rr.name).is_some(),
            RecordType::SOA | RecordType::NS => at_apex,
            _ => false,
        };
        let name_in_use = at_apex || records.get(&rr.name).is_some();
        match rr.dns_class {
            DNSClass::ANY => {
                if !is_empty {
                    return Err(ResponseCode::FormErr);
                }
                if rtype == RecordType::ANY {
                    if !name_in_use {
                        return Err(ResponseCode::NXDomain);
                    }
                } else if !rrset_exists(rtype) {
                    return Err(ResponseCode::NXRRSet);
                }
            }
            DNSClass::NONE => {
                if !is_empty {
                    return Err(ResponseCode::FormErr);
                }
                if rtype == RecordType::ANY {
                    if name_in_use {
                        return Err(ResponseCode::YXDomain);
                    }
                } else if rrset_exists(rtype) {
                    return Err(ResponseCode::YXRRSet);
                }
            }
            DNSClass::IN => match &rr.data {
                RData::TXT(txt) => match value_dependent.iter_mut().find(|(n, _)| **n == rr.name) {
                    Some((_, values)) => values.push(txt),
                    None => value_dependent.push((&rr.name, vec![txt])),
                },
                // Only TXT RRsets are compared by value; others are never equal.
                _ => return Err(ResponseCode::NXRRSet),
            },
            _ => return Err(ResponseCode::FormErr),
        }
    }
    for (name, wanted) in value_dependent {
        let actual = records
            .get(name)
            .map(|s| s.values.as_slice())
            .unwrap_or(&[]);
        let same =
            wanted.iter().all(|w| actual.contains(w)) && actual.iter().all(|a| wanted.contains(&a));
        if !same {
            return Err(ResponseCode::NXRRSet);
        }
    }
    Ok(())
}

/// RFC 2136 §3.4.1 prescan plus ragw's policy (TXT only), producing the changes to apply.
fn prescan(zone: &Zone, updates: &[Record]) -> Result<Vec<Change>, ResponseCode> {
    let meta = |t: RecordType| {
        matches!(
            t,
            RecordType::ANY | RecordType::AXFR | RecordType::IXFR | RecordType::OPT
        ) || matches!(u16::from(t), 253 | 254)
    };
    for rr in updates {
        if !zone.apex.zone_of(&rr.name) {
            return Err(ResponseCode::NotZone);
        }
        let rtype = rr.record_type();
        let is_empty = matches!(rr.data, RData::Update0(_));
        match rr.dns_class {
            DNSClass::IN if meta(rtype) || is_empty => return Err(ResponseCode::FormErr),
            DNSClass::ANY
                if rr.ttl != 0 || !is_empty || (meta(rtype) && rtype != RecordType::ANY) =>
            {
                return Err(ResponseCode::FormErr);
            }
            DNSClass::NONE if rr.ttl != 0 || meta(rtype) || is_empty => {
                return Err(ResponseCode::FormErr);
            }
            DNSClass::IN | DNSClass::ANY | DNSClass::NONE => {}
            _ => return Err(ResponseCode::FormErr),
        }
    }
    // Policy: this server only holds challenge TXT records; SOA, NS and every other type (and
    // "delete all RRsets of a name", which would reach them) are not for update.
    if updates.iter().any(|rr| rr.record_type() != RecordType::TXT) {
        return Err(ResponseCode::Refused);
    }
    updates
        .iter()
        .map(|rr| match (&rr.dns_class, &rr.data) {
            (DNSClass::IN, RData::TXT(txt)) => Ok(Change::Add {
                name: rr.name.clone(),
                txt: txt.clone(),
                ttl: rr.ttl,
            }),
            (DNSClass::ANY, _) => Ok(Change::RemoveAll {
                name: rr.name.clone(),
            }),
            (DNSClass::NONE, RData::TXT(txt)) => Ok(Change::Remove {
                name: rr.name.clone(),
                txt: txt.clone(),
            }),
            _ => Err(ResponseCode::FormErr),
        })
        .collect()
}

/// The mnemonic of a response code, as dig prints it and as the metric label.
pub(crate) fn rcode_name(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::YXRRSet => "YXRRSET",
        ResponseCode::NXRRSet => "NXRRSET",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::NotZone => "NOTZONE",
        // Code 16 is BADVERS in a header (+ OPT) and BADSIG only in a TSIG error field; hickory
        // decodes a header's 16 as BADSIG.
        ResponseCode::BADVERS | ResponseCode::BADSIG => "BADVERS",
        _ => "OTHER",
    }
}

#[cfg(test)]
#[path = "responder_tests.rs"]
mod tests;
