//! Phase 2 (RFC 9930 §3.6): the TLVs exchanged inside the tunnel, one server message in, one
//! peer message out.
//!
//! TLVs are handled in the order of RFC 9930 §4.3 (Crypto-Binding, Intermediate-Result,
//! Result/Request-Action, Identity-Type, Basic-Password-Auth-Req/EAP-Payload, the rest). This peer
//! runs no inner EAP method, so every inner round it takes part in — Basic-Password-Auth, a
//! PKCS#10/PKCS#7 exchange, or none at all (Appendix C.13) — contributes an all-zero IMSK: each
//! Crypto-Binding Request advances the key schedule by one round with neither MSK nor EMSK.

use crate::PeerConfig;
use ragw_teap::eap::{self, Body, Code, Packet};
use ragw_teap::keys::{KeyError, KeySchedule, SessionKeys};
use ragw_teap::tlv::{
    self, Action, CryptoBinding, Limits, Status, Tlv, error_code, nak_for, parse_tlvs, tlv_type,
};

/// Error TLV codes this peer sends or recognises beyond those `ragw_teap::tlv` names
/// (RFC 9930 §4.2.6).
pub mod peer_error_code {
    /// Inner method not supported (sent when the server proposes an inner EAP method).
    pub const INNER_METHOD_NOT_SUPPORTED: u32 = 1032;
    /// Crypto-Binding TLV invalid (Version, Received-Ver or Sub-Type).
    pub const CRYPTO_BINDING_INVALID: u32 = 2003;
    /// Crypto-Binding TLV did not include a required MSK Compound-MAC.
    pub const MSK_MAC_MISSING: u32 = 2004;
    /// MSK Compound-MAC fails verification.
    pub const MSK_MAC_MISMATCH: u32 = 2005;
    /// EMSK Compound-MAC fails verification.
    pub const EMSK_MAC_MISMATCH: u32 = 2007;
}

/// The TEAP version this peer speaks and reports in Received-Ver.
const TEAP_VERSION: u8 = 1;
/// Trusted-Server-Root Credential-Format 1: PKCS#7-Server-Certificate-Root (§4.2.17).
const PKCS7_SERVER_CERTIFICATE_ROOT: u16 = 1;

/// What Phase 2 learned, folded into the final `PeerOutcome`.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    pub pkcs7: Option<Vec<u8>>,
    pub csr_attributes: Option<Vec<u8>>,
    pub trusted_server_root: Option<Vec<u8>>,
    pub server_errors: Vec<u32>,
    pub sent_errors: Vec<u32>,
    pub password_prompts: Vec<String>,
    pub notes: Vec<String>,
    pub crypto_binding_rounds: u32,
    pub csr_requests: u32,
}

pub(crate) struct Phase2 {
    keys: KeySchedule,
    server_outer_tlvs: Vec<u8>,
    peer_outer_tlvs: Vec<u8>,
    limits: Limits,
    binding_verified: bool,
    use_emsk_chain: bool,
    trusted_root_requested: bool,
    /// The last Result the peer sent: the protected result an EAP-Success/Failure must match.
    sent_result: Option<Status>,
    pub collected: Collected,
}

impl Phase2 {
    pub fn new(keys: KeySchedule, server_outer_tlvs: Vec<u8>, peer_outer_tlvs: Vec<u8>) -> Self {
        Self {
            keys,
            server_outer_tlvs,
            peer_outer_tlvs,
            limits: Limits::default(),
            binding_verified: false,
            use_emsk_chain: false,
            trusted_root_requested: false,
            sent_result: None,
            collected: Collected::default(),
        }
    }

    /// The protected result the peer sent last, and whether a Crypto-Binding was verified.
    pub fn protected_success(&self) -> bool {
        self.binding_verified && self.sent_result == Some(Status::Success)
    }

    pub fn sent_result(&self) -> Option<Status> {
        self.sent_result
    }

    /// MSK/EMSK from the chain the peer's last Crypto-Binding Response used (RFC 9930 §6.4).
    pub fn session_keys(&self) -> SessionKeys {
        self.keys.session_keys(self.use_emsk_chain)
    }

    /// One decrypted server message (a TLV list) → the TLVs to send back (maybe none).
    pub fn handle(&mut self, plaintext: &[u8], config: &mut PeerConfig) -> Vec<Tlv> {
        let parsed = match parse_tlvs(plaintext, self.limits) {
            Ok(parsed) => parsed,
            Err(error) => {
                return self.fatal(
                    error_code::UNEXPECTED_TLVS_EXCHANGED,
                    format!("server sent malformed TLVs: {error}"),
                );
            }
        };
        let tlvs = parsed.tlvs;
        let server_result = tlvs.iter().find_map(|t| match t {
            Tlv::Result(status) => Some(*status),
            _ => None,
        });
        for tlv in &tlvs {
            if let Tlv::Error(code) = tlv {
                self.collected.server_errors.push(*code);
            }
        }
        if let Some(&unknown) = parsed.unsupported_mandatory.first() {
            // §4.2: a NAK never answers a message holding a Result TLV.
            if server_result.is_some() {
                return self.fatal(
                    error_code::UNEXPECTED_TLVS_EXCHANGED,
                    format!("unknown mandatory TLV {unknown} beside a Result TLV"),
                );
            }
            self.collected
                .notes
                .push(format!("NAKed unknown mandatory TLV {unknown}"));
            return vec![nak_for(unknown)];
        }
        if tlvs.iter().any(|t| matches!(t, Tlv::Pac(_))) {
            return self.fatal(
                error_code::UNEXPECTED_TLVS_EXCHANGED,
                "server sent the deprecated PAC TLV".into(),
            );
        }
        let mut out = Vec::new();

        // 1. Crypto-Binding.
        let bindings: Vec<&CryptoBinding> = tlvs
            .iter()
            .filter_map(|t| match t {
                Tlv::CryptoBinding(b) => Some(b),
                _ => None,
            })
            .collect();
        match bindings.as_slice() {
            [] => {}
            [request] => match self.answer_binding(request) {
                Ok(response) => out.push(Tlv::CryptoBinding(response)),
                Err((code, why)) => return self.fatal(code, why),
            },
            _ => {
                return self.fatal(
                    error_code::UNEXPECTED_TLVS_EXCHANGED,
                    "more than one Crypto-Binding TLV".into(),
                );
            }
        }

        // 2. Intermediate-Result: echoed with the peer's own (identical) view.
        if let Some(status) = tlvs.iter().find_map(|t| match t {
            Tlv::IntermediateResult { status, .. } => Some(*status),
            _ => None,
        }) {
            if status == Status::Success && bindings.is_empty() {
                return self.fatal(
                    error_code::UNEXPECTED_TLVS_EXCHANGED,
                    "Intermediate-Result(Success) without a Crypto-Binding TLV".into(),
                );
            }
            out.push(Tlv::IntermediateResult {
                status,
                tlvs: Vec::new(),
            });
        }

        self.collect_credentials(&tlvs);

        // 3. Result or Request-Action.
        let mut acknowledge_success = false;
        match server_result {
            Some(Status::Failure) => {
                // §3.9.3: answer a failed Result with a failed Result (no Crypto-Binding).
                out.retain(|t| matches!(t, Tlv::IntermediateResult { .. }));
                out.push(Tlv::Result(Status::Failure));
                self.sent_result = Some(Status::Failure);
                return out;
            }
            Some(Status::Success) => {
                if let Some(fatal) = self
                    .collected
                    .server_errors
                    .iter()
                    .find(|c| (2000..3000).contains(*c))
                {
                    return self.fatal(
                        *fatal,
                        format!("server sent Result(Success) beside fatal Error {fatal}"),
                    );
                }
                if !self.binding_verified {
                    return self.fatal(
                        error_code::TUNNEL_COMPROMISE,
                        "Result(Success) before any Crypto-Binding exchange".into(),
                    );
                }
                acknowledge_success = true;
            }
            None => {}
        }
        // A server may bundle a Request-Action with its Result(Success) (optional
        // provisioning). §4.2.9: the receiver "MAY choose to process any of the TLVs"; one it
        // processes is answered instead of the Result ("another round of Result TLV exchange
        // would occur"), one it declines with "a Result TLV with the same code in the Status
        // field".
        let mut processed_any = false;
        let mut declined: Option<Status> = None;
        for tlv in &tlvs {
            if let Tlv::RequestAction {
                status,
                action,
                tlvs: nested,
            } = tlv
            {
                let processed = match action {
                    Action::ProcessTlv => self.process_tlv_request(nested, &tlvs, config, &mut out),
                    Action::NegotiateEap => false,
                };
                if processed {
                    processed_any = true;
                } else {
                    self.collected
                        .notes
                        .push(format!("declined Request-Action ({action:?}, {status:?})"));
                    declined = Some(match declined {
                        Some(Status::Failure) => Status::Failure,
                        _ => *status,
                    });
                }
            }
        }
        if !processed_any {
            let result = match (acknowledge_success, declined) {
                (_, Some(Status::Failure)) => Some(Status::Failure),
                (true, _) => Some(Status::Success),
                (false, declined) => declined,
            };
            match result {
                Some(Status::Success)
                    if acknowledge_success
                        && config.request_trusted_server_root
                        && !self.trusted_root_requested =>
                {
                    // §3.6.5: the peer asks for more instead of acknowledging the result.
                    self.trusted_root_requested = true;
                    out.push(trusted_server_root_request());
                }
                Some(status) => {
                    out.push(Tlv::Result(status));
                    self.sent_result = Some(status);
                }
                None => {}
            }
        }

        // 4./5. Identity-Type with Basic-Password-Auth-Req or EAP-Payload.
        let identity_type = tlvs.iter().find_map(|t| match t {
            Tlv::IdentityType(kind) => Some(*kind),
            _ => None,
        });
        let password_requests = tlvs
            .iter()
            .filter(|t| matches!(t, Tlv::BasicPasswordAuthReq(_)))
            .count();
        let eap_payloads = tlvs
            .iter()
            .filter(|t| matches!(t, Tlv::EapPayload(_)))
            .count();
        if password_requests + eap_payloads > 1 {
            // §4.3: at most one inner method request per message.
            return self.fatal(
                error_code::UNEXPECTED_TLVS_EXCHANGED,
                "more than one inner method request in one message".into(),
            );
        }
        for tlv in &tlvs {
            match tlv {
                Tlv::BasicPasswordAuthReq(prompt) => {
                    self.collected
                        .password_prompts
                        .push(String::from_utf8_lossy(prompt).into_owned());
                    match &config.password {
                        Some((username, password)) => {
                            if let Some(kind) = identity_type {
                                out.push(Tlv::IdentityType(kind));
                            }
                            out.push(Tlv::BasicPasswordAuthResp {
                                username: username.as_bytes().to_vec(),
                                password: password.clone(),
                            });
                        }
                        // §3.6.2: a peer unwilling to use a password NAKs the request.
                        None => out.push(nak_for(tlv_type::BASIC_PASSWORD_AUTH_REQ)),
                    }
                }
                Tlv::EapPayload(inner) => out.extend(answer_inner_eap(inner, config)),
                _ => {}
            }
        }
        out
    }

    /// Answers the server's Crypto-Binding Request (§4.2.13, §6.3): one more zero-IMSK round,
    /// the server's MAC(s) verified in constant time, and a Response over the request nonce
    /// with its least significant bit set.
    fn answer_binding(&mut self, request: &CryptoBinding) -> Result<CryptoBinding, (u32, String)> {
        use peer_error_code as e;
        if request.version != TEAP_VERSION
            || request.received_version != TEAP_VERSION
            || request.sub_type != CryptoBinding::SUB_TYPE_REQUEST
            || !(1..=3).contains(&request.flags)
        {
            return Err((
                e::CRYPTO_BINDING_INVALID,
                format!(
                    "invalid Crypto-Binding request (version {}, received version {}, flags {}, sub-type {})",
                    request.version, request.received_version, request.flags, request.sub_type
                ),
            ));
        }
        if request.nonce[31] & 1 != 0 {
            return Err((
                e::CRYPTO_BINDING_INVALID,
                "Crypto-Binding request nonce has its least significant bit set".into(),
            ));
        }
        self.keys.next_round(None, None);
        self.collected.crypto_binding_rounds += 1;
        let (server_outer, peer_outer) = (&self.server_outer_tlvs, &self.peer_outer_tlvs);
        self.keys
            .verify(request, server_outer, peer_outer)
            .map_err(|error| (binding_error_code(error), format!("server's {error}")))?;
        let mut nonce = request.nonce;
        nonce[31] |= 1;
        let mut response = CryptoBinding {
            reserved: 0,
            version: TEAP_VERSION,
            received_version: TEAP_VERSION,
            flags: CryptoBinding::FLAG_MSK,
            sub_type: CryptoBinding::SUB_TYPE_RESPONSE,
            nonce,
            emsk_compound_mac: [0; 20],
            msk_compound_mac: [0; 20],
        };
        // Flags 3 (both MACs) when the round has an EMSK, else 2 (§6.3 sender rules).
        self.keys
            .sign_binding(&mut response, server_outer, peer_outer)
            .map_err(|error| (error_code::TUNNEL_COMPROMISE, format!("signing: {error}")))?;
        self.use_emsk_chain = self.keys.binding_uses_emsk_chain(&response);
        self.binding_verified = true;
        Ok(response)
    }

    /// Request-Action(Process-TLV): this peer processes a PKCS#10 request (Appendix C.11).
    /// Returns whether it processed anything.
    fn process_tlv_request(
        &mut self,
        nested: &[u8],
        message: &[Tlv],
        config: &mut PeerConfig,
        out: &mut Vec<Tlv>,
    ) -> bool {
        let nested_tlvs = parse_tlvs(nested, self.limits).map(|p| p.tlvs).ok();
        let asks_pkcs10 = match &nested_tlvs {
            Some(list) => list.iter().any(|t| matches!(t, Tlv::Pkcs10(_))),
            None => false,
        } || bare_type_is(nested, tlv_type::PKCS10);
        if !asks_pkcs10 {
            return false;
        }
        self.collected.csr_requests += 1;
        // The CSR-Attributes TLV may sit inside the Request-Action or beside it (§4.2.18).
        let attributes = nested_tlvs
            .iter()
            .flatten()
            .chain(message.iter())
            .find_map(|t| match t {
                Tlv::CsrAttributes(der) => Some(der.clone()),
                _ => None,
            });
        if let Some(der) = &attributes {
            self.collected.csr_attributes = Some(der.clone());
        }
        let Some(make_csr) = config.csr.as_mut() else {
            return false;
        };
        let csr = make_csr(attributes.as_deref().unwrap_or_default());
        out.push(Tlv::Pkcs10(csr));
        true
    }

    fn collect_credentials(&mut self, tlvs: &[Tlv]) {
        for tlv in tlvs {
            match tlv {
                Tlv::Pkcs7(der) => self.collected.pkcs7 = Some(der.clone()),
                Tlv::CsrAttributes(der) => self.collected.csr_attributes = Some(der.clone()),
                Tlv::TrustedServerRoot {
                    credential_format: PKCS7_SERVER_CERTIFICATE_ROOT,
                    tlvs: nested,
                } => {
                    if let Ok(parsed) = parse_tlvs(nested, self.limits) {
                        for inner in parsed.tlvs {
                            if let Tlv::Pkcs7(der) = inner {
                                self.collected.trusted_server_root = Some(der);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// §3.9.3 fatal error: Result(Failure) with an Error TLV, and nothing else.
    fn fatal(&mut self, code: u32, why: String) -> Vec<Tlv> {
        tracing::debug!(code, %why, "TEAP peer: fatal Phase 2 error");
        self.collected.sent_errors.push(code);
        self.collected.notes.push(why);
        self.sent_result = Some(Status::Failure);
        vec![Tlv::Result(Status::Failure), Tlv::Error(code)]
    }
}

/// The Error TLV code for a Crypto-Binding the key schedule refused (RFC 9930 §4.2.6).
fn binding_error_code(error: KeyError) -> u32 {
    use peer_error_code as e;
    match error {
        KeyError::BadFlags(_) => e::CRYPTO_BINDING_INVALID,
        KeyError::UnexpectedEmskMac => e::MSK_MAC_MISSING,
        KeyError::EmskMacMismatch => e::EMSK_MAC_MISMATCH,
        KeyError::MskMacMismatch => e::MSK_MAC_MISMATCH,
        _ => error_code::TUNNEL_COMPROMISE,
    }
}

/// A Request-Action(Success, Process-TLV) holding an empty Trusted-Server-Root TLV (§4.2.17:
/// "The peer may leave this field empty when using this TLV to request server trust roots").
fn trusted_server_root_request() -> Tlv {
    let request = Tlv::TrustedServerRoot {
        credential_format: PKCS7_SERVER_CERTIFICATE_ROOT,
        tlvs: Vec::new(),
    };
    Tlv::RequestAction {
        status: Status::Success,
        action: Action::ProcessTlv,
        tlvs: request.encode().unwrap_or_default(),
    }
}

/// Some servers put only the 2-octet type of the wanted TLV inside Request-Action.
fn bare_type_is(nested: &[u8], wanted: u16) -> bool {
    match nested {
        [high, low] => u16::from_be_bytes([*high, *low]) & tlv::TYPE_MASK == wanted,
        _ => false,
    }
}

/// This peer runs no inner EAP method: it answers an inner Identity request with the outer
/// identity and any other method with a legacy Nak listing none, so the server can move on.
fn answer_inner_eap(inner: &[u8], config: &PeerConfig) -> Vec<Tlv> {
    let Ok(request) = Packet::parse(inner) else {
        return vec![Tlv::Error(peer_error_code::INNER_METHOD_NOT_SUPPORTED)];
    };
    if request.code != Code::Request {
        return vec![Tlv::Error(peer_error_code::INNER_METHOD_NOT_SUPPORTED)];
    }
    let body = match request.body {
        Body::Identity(_) => Body::Identity(config.outer_identity.as_bytes().to_vec()),
        _ => Body::Nak(vec![0]),
    };
    let response = Packet {
        code: Code::Response,
        identifier: request.identifier,
        body,
    };
    match response.encode() {
        Ok(bytes) => vec![Tlv::EapPayload(bytes)],
        Err(eap::EapError::PacketTooLong(_)) | Err(_) => {
            vec![Tlv::Error(peer_error_code::INNER_METHOD_NOT_SUPPORTED)]
        }
    }
}

#[cfg(test)]
mod tests;
