//! The outer EAP/TEAP layer of the peer: identity, Start, TLS through buffers, fragments.

use std::io::{Read, Write};

use ragw_teap::eap::{Body, Code, Packet, TeapMessage, method};
use ragw_teap::keys::{KeySchedule, PrfHash, SESSION_KEY_SEED_LABEL, SessionKeys};
use ragw_teap::tlv::{Limits, Status, Tlv, encode_tlvs, parse_tlvs};
use rustls::ClientConnection;

use crate::fragment::{Fragmenter, Reassembled, Reassembler};
use crate::phase2::Phase2;
use crate::{PeerConfig, PeerError};

/// The largest `max_fragment` honoured: an EAP packet's 16-bit length minus TEAP headers.
pub const MAX_FRAGMENT: usize = 65_000;

/// What the caller does next.
#[derive(Debug)]
pub enum PeerStep {
    /// Send this EAP-Response.
    Send(Vec<u8>),
    /// The conversation is over (EAP-Success, EAP-Failure, or a peer-side failure).
    Done(Box<PeerOutcome>),
}

/// How a conversation ended, and what the peer received on the way.
#[derive(Debug, Default)]
pub struct PeerOutcome {
    /// EAP-Success after a protected Result(Success) and a verified Crypto-Binding.
    pub success: bool,
    /// MSK and EMSK (RFC 9930 §6.4); only on success.
    pub keys: Option<SessionKeys>,
    /// The PKCS#7 TLV (certs-only SignedData DER) answering the peer's CSR.
    pub pkcs7: Option<Vec<u8>>,
    /// The CSR-Attributes TLV value (DER) the server sent.
    pub csr_attributes: Option<Vec<u8>>,
    /// The PKCS#7 inside a Trusted-Server-Root TLV.
    pub trusted_server_root: Option<Vec<u8>>,
    /// Error TLV codes the server sent, in order.
    pub errors: Vec<u32>,
    /// Error TLV codes the peer sent (fatal Phase 2 errors), in order.
    pub sent_errors: Vec<u32>,
    /// Human-readable notes on the conversation (declined requests, NAKs, failure reasons).
    pub result_messages: Vec<String>,
    /// Why the peer considers the conversation failed (None on success).
    pub failure: Option<String>,
    /// Basic-Password-Auth-Req prompts seen.
    pub password_prompts: Vec<String>,
    /// Request-Action(Process-TLV, PKCS#10) requests seen.
    pub csr_requests: u32,
    /// Crypto-Binding exchanges (inner rounds) completed.
    pub crypto_binding_rounds: u32,
    /// Authority-ID outer TLV of the server's Start.
    pub authority_id: Option<Vec<u8>>,
    /// Negotiated TLS cipher suite code.
    pub cipher_suite: Option<u16>,
    /// Leaf-first DER chain the server presented.
    pub server_certificates: Vec<Vec<u8>>,
    /// EAP-Requests received.
    pub exchanges: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    BeforeStart,
    Tunnel,
    Finished,
}

/// A sans-IO TEAP peer conversation. See the crate docs for the behaviour.
pub struct Peer {
    config: PeerConfig,
    tls: ClientConnection,
    stage: Stage,
    server_outer_tlvs: Vec<u8>,
    authority_id: Option<Vec<u8>>,
    sent_first_message: bool,
    reassembler: Reassembler,
    fragmenter: Fragmenter,
    phase2: Option<Phase2>,
    tls_failure: Option<String>,
    last_exchange: Option<(Vec<u8>, Vec<u8>)>,
    exchanges: u32,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("config", &self.config)
            .field("stage", &self.stage)
            .field("exchanges", &self.exchanges)
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// A peer ready for the server's EAP-Request/Identity (or directly its TEAP Start). The
    /// peer draws no randomness of its own: the Crypto-Binding nonce comes from the server and
    /// rustls draws the TLS randoms from its crypto provider.
    pub fn new(mut config: PeerConfig) -> Result<Self, PeerError> {
        // An EAP packet holds at most 65535 octets; leave room for the headers.
        config.max_fragment = config.max_fragment.clamp(1, MAX_FRAGMENT);
        let tls = ClientConnection::new(config.tls.clone(), config.server_name.clone())?;
        let reassembler = Reassembler::new(config.max_message_len);
        Ok(Self {
            config,
            tls,
            stage: Stage::BeforeStart,
            server_outer_tlvs: Vec::new(),
            authority_id: None,
            sent_first_message: false,
            reassembler,
            fragmenter: Fragmenter::default(),
            phase2: None,
            tls_failure: None,
            last_exchange: None,
            exchanges: 0,
        })
    }

    pub fn outer_identity(&self) -> &str {
        &self.config.outer_identity
    }

    /// The EAP-Response/Identity for a NAS that starts without asking (RADIUS drivers).
    pub fn identity_response(&self, identifier: u8) -> Vec<u8> {
        encode_response(
            identifier,
            Body::Identity(self.config.outer_identity.as_bytes().to_vec()),
        )
    }

    /// One EAP packet from the server (Request, Success or Failure).
    pub fn receive(&mut self, eap_packet: &[u8]) -> PeerStep {
        if self.stage == Stage::Finished {
            return self.fail("EAP packet after the conversation finished".into());
        }
        // RFC 3748 §4.1: a retransmitted Request gets the previous Response again.
        if let Some((request, response)) = &self.last_exchange
            && request.as_slice() == eap_packet
        {
            return PeerStep::Send(response.clone());
        }
        self.exchanges += 1;
        if self.exchanges > self.config.max_exchanges {
            return self.fail(format!(
                "more than {} EAP-Requests; giving up",
                self.config.max_exchanges
            ));
        }
        let packet = match Packet::parse(eap_packet) {
            Ok(packet) => packet,
            Err(error) => return self.fail(format!("malformed EAP packet from server: {error}")),
        };
        let step = match (packet.code, packet.body) {
            (Code::Success, _) => return self.finish(true),
            (Code::Failure, _) => return self.finish(false),
            (Code::Response, _) => return self.fail("server sent an EAP-Response".into()),
            (Code::Request, Body::Identity(_)) => {
                PeerStep::Send(self.identity_response(packet.identifier))
            }
            (Code::Request, Body::Teap(message)) => self.on_teap(packet.identifier, message),
            (Code::Request, Body::Other { method_type, .. })
                if self.stage == Stage::BeforeStart =>
            {
                tracing::debug!(method_type, "TEAP peer: proposing TEAP with a legacy Nak");
                PeerStep::Send(encode_response(
                    packet.identifier,
                    Body::Nak(vec![method::TEAP]),
                ))
            }
            (Code::Request, other) => {
                return self.fail(format!("unexpected EAP-Request body {other:?}"));
            }
        };
        if let PeerStep::Send(response) = &step {
            self.last_exchange = Some((eap_packet.to_vec(), response.clone()));
        }
        step
    }

    fn on_teap(&mut self, identifier: u8, message: TeapMessage) -> PeerStep {
        if message.start {
            if self.stage != Stage::BeforeStart {
                return self.fail("second TEAP Start".into());
            }
            self.stage = Stage::Tunnel;
            self.server_outer_tlvs = message.outer_tlvs.clone().unwrap_or_default();
            if let Ok(parsed) = parse_tlvs(&self.server_outer_tlvs, Limits::default()) {
                self.authority_id = parsed.tlvs.into_iter().find_map(|t| match t {
                    Tlv::AuthorityId(id) => Some(id),
                    _ => None,
                });
            }
            // A Start carries no TLS data; the ClientHello is already queued in rustls.
            return self.send_tls(identifier);
        }
        if self.stage != Stage::Tunnel {
            return self.fail("TEAP packet before TEAP Start".into());
        }
        if self.fragmenter.has_pending() {
            if !message.tls_data.is_empty() || message.more_fragments {
                return self.fail("server sent data instead of ACKing the peer's fragment".into());
            }
            let fragment = self.fragmenter.next(self.config.max_fragment);
            return PeerStep::Send(encode_response(identifier, Body::Teap(fragment)));
        }
        match self.reassembler.push(&message) {
            Err(error) => self.fail(format!("server fragment: {error}")),
            Ok(Reassembled::Incomplete) => PeerStep::Send(encode_response(
                identifier,
                Body::Teap(TeapMessage::new(vec![])),
            )),
            Ok(Reassembled::Complete(tls_data)) => self.on_tls_message(identifier, &tls_data),
        }
    }

    fn on_tls_message(&mut self, identifier: u8, tls_data: &[u8]) -> PeerStep {
        let mut rest = tls_data;
        while !rest.is_empty() {
            match self.tls.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => return self.fail(format!("TLS input: {error}")),
            }
            if let Err(error) = self.tls.process_new_packets() {
                // rustls queued an alert: send it; the server answers with EAP-Failure.
                tracing::debug!(%error, "TEAP peer: TLS failure");
                self.tls_failure = Some(format!("TLS: {error}"));
                return self.send_tls(identifier);
            }
        }
        if !self.tls.is_handshaking() && self.phase2.is_none() {
            match self.start_phase2() {
                Ok(phase2) => self.phase2 = Some(phase2),
                Err(why) => return self.fail(why),
            }
        }
        if let Some(phase2) = self.phase2.as_mut() {
            let mut plaintext = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match self.tls.reader().read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => plaintext.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(error) => {
                        let why = format!("TLS read: {error}");
                        return self.fail(why);
                    }
                }
            }
            if !plaintext.is_empty() {
                let response = phase2.handle(&plaintext, &mut self.config);
                if !response.is_empty() {
                    let bytes = match encode_tlvs(&response) {
                        Ok(bytes) => bytes,
                        Err(error) => return self.fail(format!("encoding TLVs: {error}")),
                    };
                    if let Err(error) = self.tls.writer().write_all(&bytes) {
                        return self.fail(format!("TLS write: {error}"));
                    }
                }
            }
        }
        self.send_tls(identifier)
    }

    fn start_phase2(&mut self) -> Result<Phase2, String> {
        let suite = self
            .tls
            .negotiated_cipher_suite()
            .ok_or("handshake finished without a cipher suite")?;
        let code = u16::from(suite.suite());
        let hash = PrfHash::for_cipher_suite(code)
            .ok_or_else(|| format!("no TEAP PRF for cipher suite {code:#06x}"))?;
        let mut seed = [0u8; 40];
        self.tls
            .export_keying_material(&mut seed, SESSION_KEY_SEED_LABEL, None)
            .map_err(|error| format!("TLS exporter: {error}"))?;
        let keys = KeySchedule::new(hash, &seed);
        Ok(Phase2::new(
            keys,
            self.server_outer_tlvs.clone(),
            self.config.outer_tlvs.clone(),
        ))
    }

    /// Everything rustls wants to send, as one TEAP message (fragmented if large); an empty
    /// message is an ACK.
    fn send_tls(&mut self, identifier: u8) -> PeerStep {
        let mut out = Vec::new();
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut out) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => return self.fail(format!("TLS output: {error}")),
            }
        }
        let outer_tlvs = if self.sent_first_message || self.config.outer_tlvs.is_empty() {
            None
        } else {
            Some(self.config.outer_tlvs.clone())
        };
        self.sent_first_message = true;
        let first = self
            .fragmenter
            .start(out, outer_tlvs, self.config.max_fragment);
        PeerStep::Send(encode_response(identifier, Body::Teap(first)))
    }

    fn finish(&mut self, eap_success: bool) -> PeerStep {
        let protected_success = self.phase2.as_ref().is_some_and(Phase2::protected_success);
        let mut outcome = self.outcome();
        match (eap_success, protected_success) {
            (true, true) => {
                outcome.success = true;
                outcome.keys = self.phase2.as_ref().map(Phase2::session_keys);
            }
            (true, false) => {
                outcome.failure = Some(
                    "EAP-Success without a protected Result(Success) after a verified Crypto-Binding"
                        .into(),
                );
            }
            (false, _) => {
                let sent = self.phase2.as_ref().and_then(Phase2::sent_result);
                outcome.failure = Some(match (&self.tls_failure, sent) {
                    (Some(tls), _) => format!("EAP-Failure after {tls}"),
                    (None, Some(Status::Failure)) => {
                        "EAP-Failure after a protected Result(Failure)".into()
                    }
                    (None, _) => "EAP-Failure".into(),
                });
            }
        }
        self.stage = Stage::Finished;
        PeerStep::Done(Box::new(outcome))
    }

    fn fail(&mut self, why: String) -> PeerStep {
        tracing::debug!(%why, "TEAP peer: conversation failed");
        let mut outcome = self.outcome();
        outcome.failure = Some(why);
        self.stage = Stage::Finished;
        PeerStep::Done(Box::new(outcome))
    }

    fn outcome(&mut self) -> PeerOutcome {
        let mut outcome = PeerOutcome {
            authority_id: self.authority_id.clone(),
            cipher_suite: self
                .tls
                .negotiated_cipher_suite()
                .map(|s| u16::from(s.suite())),
            server_certificates: self
                .tls
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.as_ref().to_vec()).collect())
                .unwrap_or_default(),
            exchanges: self.exchanges,
            ..PeerOutcome::default()
        };
        if let Some(phase2) = self.phase2.as_mut() {
            let collected = std::mem::take(&mut phase2.collected);
            outcome.pkcs7 = collected.pkcs7;
            outcome.csr_attributes = collected.csr_attributes;
            outcome.trusted_server_root = collected.trusted_server_root;
            outcome.errors = collected.server_errors;
            outcome.sent_errors = collected.sent_errors;
            outcome.result_messages = collected.notes;
            outcome.password_prompts = collected.password_prompts;
            outcome.csr_requests = collected.csr_requests;
            outcome.crypto_binding_rounds = collected.crypto_binding_rounds;
        }
        if let Some(tls) = &self.tls_failure {
            outcome.result_messages.push(tls.clone());
        }
        outcome
    }
}

fn encode_response(identifier: u8, body: Body) -> Vec<u8> {
    let packet = Packet {
        code: Code::Response,
        identifier,
        body,
    };
    // Responses built here stay far below the 65535-octet EAP limit: fragments are bounded by
    // max_fragment and identities by the caller's config.
    packet.encode().unwrap_or_default()
}

#[cfg(test)]
mod tests;
