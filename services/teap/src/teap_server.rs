//! The sans-IO EAP-TEAP version 1 server conversation (RFC 9930), over TLS 1.2.
//!
//! One [`Conversation`] per authenticating peer. The driver (the RADIUS gateway) feeds it
//! reassembled EAP-Response packets and gets [`Next`] back: an EAP-Request to send in an
//! Access-Challenge, a [`Question`] only the driver can answer (policy, password check,
//! enrollment), or the end ([`Finish`]: EAP-Success with the MSK/EMSK, or EAP-Failure with a
//! precise reason). No sockets, clocks or randomness inside: the Crypto-Binding nonces come
//! from the [`RandomSource`] the driver passes to [`Conversation::start`].
//!
//! ```text
//! let (mut conv, start) = Conversation::start(config, id, outer_identity, random)?;  // → Access-Challenge
//! loop match conv.receive(&eap_response) / conv.answer(answer) {
//!     Next::Send(eap_request)  → Access-Challenge
//!     Next::Ask(question)      → decide (maybe asynchronously), then conv.answer(..)
//!     Next::Finished(finish)   → Access-Accept (finish.keys) or Access-Reject
//!     Next::Discard(why)       → drop the packet silently; the conversation is unchanged
//! }
//! ```
//!
//! The conversation (RFC 9930 §3, Appendix C):
//! - Start: flags S+O (0x31, as hostapd sends it), empty TLS data, an Authority-ID outer TLV.
//!   The peer's first message may carry outer TLVs; both sides' outer TLVs enter the
//!   Compound-MAC.
//! - Phase 1: full TLS 1.2 handshake (no resumption). When the peer's Finished arrives the
//!   driver is asked [`Question::TunnelUp`] with the peer's certificate chain; the server's
//!   Finished goes out together with the first Phase 2 TLVs.
//! - Phase 2, by the answer:
//!   - [`Answer::Authenticated`] without provisioning: Crypto-Binding(Request) +
//!     Result(Success) (Appendix C.13). After Basic-Password-Auth
//!     ([`Question::CheckPassword`]) an Intermediate-Result(Success) goes along.
//!   - With *optional* provisioning (`required: false`) the same message also carries the
//!     offer: Crypto-Binding(Request) + Result(Success) + Request-Action(Status Success,
//!     Process-TLV, an empty PKCS#10 TLV) + CSR-Attributes TLV. A lone Request-Action would
//!     hang hostap 2.10's peer (it finds no TLV it recognises and sends nothing), while it
//!     ignores one bundled with the binding round and completes. RFC 9930 §4.2.9 allows the
//!     bundle: "The Request-Action TLV MAY be sent by both the peer and the server in response
//!     to a successful or failed Result TLV", and the receiver "MAY choose to process any of
//!     the TLVs"; "If the receiving entity chooses NOT to process any TLV in the list, then it
//!     sends back a Result TLV with the same code in the Status field", and "After processing
//!     the TLVs ... another round of Result TLV exchange would occur". So the peer's
//!     Crypto-Binding(Response) + Result(Success) without PKCS#10 declines and ends in
//!     EAP-Success; a PKCS#10 TLV (with or without a Result, which then does not count) is
//!     the processed request and becomes [`Question::Enroll`]. If the PKCS#10 comes with a
//!     Crypto-Binding Response, that binding is verified first (a bad one is 2001). If it comes
//!     without one (the peer took the Request-Action for the whole request, as in the
//!     Appendix C.11 flow), it is accepted all the same: the PKCS#7 round carries a fresh
//!     Crypto-Binding, and success requires that one verified. (§4.2.9 text as in RFC 7170
//!     §4.2.9 with erratum 6157, carried into RFC 9930.)
//!   - With *required* provisioning the Appendix C.11 flow: Request-Action(Status Failure,
//!     Process-TLV, PKCS#10) + CSR-Attributes and no Result (after Basic-Password-Auth,
//!     Intermediate-Result + Crypto-Binding(Request) go along); anything but a PKCS#10 fails.
//!   - [`Answer::RequirePassword`]: Basic-Password-Auth-Req; the response becomes
//!     [`Question::CheckPassword`].
//!   - [`Answer::RequireInnerEap`] runs an inner EAP method in EAP-Payload TLVs (RFC 9930
//!     "Inner EAP Authentication": "A TEAP server therefore MUST begin an EAP authentication with an
//!     EAP-Request/Identity (carried in an EAP-Payload TLV)"): EAP-Request/Identity, then for
//!     [`InnerMethod::Gtc`] an EAP-Request/GTC carrying the prompt (RFC 3748 §5.6). The inner
//!     identity and the GTC response become [`Question::CheckPassword`], so a password is
//!     checked the same way whichever method carried it; success is Intermediate-Result +
//!     Crypto-Binding + Result, as after Basic-Password-Auth. The inner EAP conversation never
//!     ends in an inner EAP-Success/Failure ("a TEAP server MUST NOT finish the EAP
//!     conversation with an EAP Success or EAP Failure packet"). A legacy Nak to the method
//!     request (hostap sends one proposing its configured `phase2` methods) or a NAK TLV for
//!     EAP-Payload ends in Error 1032 (Inner method not supported) + Result(Failure); a
//!     malformed EAP-Payload, a Request, a wrong inner identifier or another method type in
//!     2002. No Identity-Type TLV is sent (it is a hint; hostapd sends none either).
//!   - [`Answer::Issued`] sends PKCS#7 + Intermediate-Result(Success) +
//!     Crypto-Binding(Request) + Result(Success); [`Answer::EnrollFailed`] sends Error +
//!     Intermediate-Result(Failure) + Result(Failure) (Appendix C.12).
//!   - The peer's Crypto-Binding(Response) is checked (version, received version, sub-type,
//!     nonce, Compound-MAC) before any Result it carries; Result(Success) then ends in
//!     EAP-Success with the keys.
//!   - Trusted-Server-Root (Appendix C.10 pattern, §3.6.5): a peer may answer our
//!     Result(Success) with its Crypto-Binding(Response) + Request-Action(Process-TLV,
//!     Trusted-Server-Root) instead of a Result. With
//!     [`TeapServerConfig::trusted_server_root_pkcs7`] set, the roots go out in a
//!     Trusted-Server-Root TLV beside a fresh Crypto-Binding(Request) + Result(Success);
//!     without roots the request is not processed and its Status decides (Success: the same
//!     fresh round without roots; Failure: protected failure). A Trusted-Server-Root request
//!     elsewhere adds the roots to our next message.
//! - Key rounds: every Crypto-Binding Request first runs a round of the key schedule. After
//!   no inner method, after Basic-Password-Auth and after a PKCS#7 it is a binding-only
//!   round, [`KeySchedule::next_round`]`(None, None)` (all-zero IMSK, S-IMCK kept: as hostap
//!   does); the first round after an inner EAP method is that method's,
//!   [`KeySchedule::next_method_round`], with the all-zero IMSK for EAP-GTC (no keys) and
//!   S-IMCK advancing, which is what hostap 2.10 does on both sides (its inner-GTC run gave the
//!   MSK from `S-IMCK[1]`; `tests/vectors/hostap_gtc_trace.txt`). See [`crate::keys`] for where
//!   the MSK/EMSK then come from. The session_key_seed is the TLS exporter output for
//!   [`keys::SESSION_KEY_SEED_LABEL`] (no context, 40 octets), the PRF hash that of the
//!   negotiated suite.
//! - Failures inside the tunnel are protected: Result(Failure) + Error TLV (2001 for a bad
//!   Crypto-Binding, 2002 for unexpected or malformed TLVs and PAC TLVs), the peer's answer,
//!   then EAP-Failure. An unknown mandatory TLV from the peer is answered with a NAK TLV and
//!   the conversation waits for a corrected response. Framing violations, TLS errors and
//!   exceeding [`ConversationLimits`] end at once with EAP-Failure.
//! - An empty phase-2 answer (hostap's peer sends one when it recognises no TLV) counts as an
//!   empty TLV list: it declines a lone (required) provisioning request, and is unexpected
//!   elsewhere.
//! - A response with the wrong EAP identifier, or anything that is not an EAP-Response, is
//!   [`Next::Discard`]ed, as are responses while a question is outstanding and after the end;
//!   every other problem ends in `Finished { accepted: false, reason, error_code, .. }`.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::ServerConnection;
use zeroize::Zeroizing;

use crate::eap::{self, Body, Code, Packet, TeapMessage};
use crate::keys::{self, KeySchedule, PrfHash, SessionKeys};
use crate::tlv::{self, Action, CryptoBinding, Status, Tlv, error_code, tlv_type};

mod fragment;
mod tls;

pub use tls::{TlsConfigError, tls_server_config};

use fragment::{Outgoing, Reassembly, Received};

/// Bounds on one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationLimits {
    /// Largest TLS data in one of our EAP-Requests. Size it from the NAS's Framed-MTU: the
    /// EAP packet adds 6 octets (EAP header, type, flags), 10 on a first fragment with L.
    pub max_tls_fragment: usize,
    /// Largest reassembled peer message (TLS data), and largest decrypted TLV block.
    pub max_message_len: usize,
    /// Most EAP-Responses (ACKs included) one conversation accepts.
    pub max_exchanges: usize,
    /// Limits for decoding the peer's TLVs.
    pub tlv: tlv::Limits,
}

impl Default for ConversationLimits {
    fn default() -> Self {
        Self {
            max_tls_fragment: 1024,
            max_message_len: 64 * 1024,
            max_exchanges: 50,
            tlv: tlv::Limits::default(),
        }
    }
}

/// Configuration shared by all conversations.
#[derive(Debug, Clone)]
pub struct TeapServerConfig {
    /// From [`tls_server_config`].
    pub tls: Arc<rustls::ServerConfig>,
    /// The Authority-ID sent in the Start packet.
    pub authority_id: Vec<u8>,
    pub limits: ConversationLimits,
    /// Certs-only PKCS#7 sent when the peer asks for the Trusted-Server-Root.
    pub trusted_server_root_pkcs7: Option<Vec<u8>>,
}

/// Fills the buffer with random octets (Crypto-Binding nonces). Supplied by the driver.
pub type RandomSource = Box<dyn FnMut(&mut [u8]) + Send>;

/// Why a conversation could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("TLS server connection refused: {0}")]
    Tls(#[from] rustls::Error),
    #[error("Authority-ID cannot be encoded: {0}")]
    AuthorityId(#[from] tlv::TlvError),
    #[error("Start packet cannot be encoded: {0}")]
    Eap(#[from] eap::EapError),
}

/// What the driver does next.
#[derive(Debug)]
pub enum Next {
    /// An EAP-Request: send it in an Access-Challenge.
    Send(Vec<u8>),
    /// A decision only the driver can make; answer with [`Conversation::answer`].
    Ask(Question),
    /// The end: EAP-Success (Access-Accept with the keys) or EAP-Failure (Access-Reject).
    Finished(Finish),
    /// Drop this packet silently; the conversation is unchanged.
    Discard(String),
}

/// A question for the driver.
pub enum Question {
    /// Phase 1 is done (TLS 1.2 tunnel up). The leaf-first DER chain the peer presented (empty
    /// when it presented none). Answer `Authenticated`, `RequirePassword` or `Reject`.
    TunnelUp { peer_certificates: Vec<Vec<u8>> },
    /// A Basic-Password-Auth-Resp arrived. Answer `Authenticated`, `RequirePassword` (ask
    /// again) or `Reject`.
    CheckPassword {
        username: Vec<u8>,
        password: Zeroizing<Vec<u8>>,
    },
    /// The peer sent a PKCS#10 TLV (DER CSR). Answer `Issued`, `EnrollFailed` or `Reject`.
    Enroll { csr_der: Vec<u8> },
}

impl fmt::Debug for Question {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TunnelUp { peer_certificates } => f
                .debug_struct("TunnelUp")
                .field("peer_certificates", &peer_certificates.len())
                .finish(),
            Self::CheckPassword { username, .. } => f
                .debug_struct("CheckPassword")
                .field("username", &String::from_utf8_lossy(username))
                .field("password", &"<redacted>")
                .finish(),
            Self::Enroll { csr_der } => f
                .debug_struct("Enroll")
                .field("csr_der_len", &csr_der.len())
                .finish(),
        }
    }
}

/// The driver's answer to the last [`Question`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The peer is authenticated (to `TunnelUp` or `CheckPassword`). With `provisioning` the
    /// server asks for a CSR before finishing.
    Authenticated { provisioning: Option<Provisioning> },
    /// Ask for Basic-Password-Auth inside the tunnel (the prompt may be empty).
    RequirePassword { prompt: Vec<u8> },
    /// Run an inner EAP method in EAP-Payload TLVs (to `TunnelUp`, or to `CheckPassword` to
    /// ask again): EAP-Request/Identity, then the method. For [`InnerMethod::Gtc`] the
    /// `prompt` is the EAP-GTC message shown to the user, and the inner identity and the
    /// token become [`Question::CheckPassword`].
    RequireInnerEap {
        method: InnerMethod,
        prompt: Vec<u8>,
    },
    /// Refuse: protected Result(Failure) + Error TLV, then EAP-Failure.
    Reject { error_code: u32, reason: String },
    /// To `Enroll`: the certs-only PKCS#7 (DER) answering the CSR.
    Issued { pkcs7_der: Vec<u8> },
    /// To `Enroll`: refused (Error TLV code, e.g. 1022–1027) → EAP-Failure.
    EnrollFailed { error_code: u32, reason: String },
}

/// A certificate-provisioning request (RFC 9930 Appendix C.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioning {
    /// DER CsrAttrs (RFC 7030 §4.5.2) sent in the CSR-Attributes TLV.
    pub csr_attributes_der: Vec<u8>,
    /// Sets the Request-Action Status, "the result if the party who receives this TLV does
    /// not process the action" (RFC 9930 §4.2.9): Failure when required, Success when not. A
    /// peer declining an optional request is still authenticated. An optional request is
    /// bundled with the Crypto-Binding round and Result(Success); a required one is sent on its
    /// own (Appendix C.11). See the module docs.
    pub required: bool,
}

/// An inner EAP method the server runs in EAP-Payload TLVs (RFC 9930 "Inner EAP Authentication").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InnerMethod {
    /// EAP-GTC (RFC 3748 §5.6): the server sends a prompt, the peer answers with its password
    /// (or token) as the response. It exports no keys: the Crypto-Binding after it rests on
    /// the all-zero IMSK ([`KeySchedule::next_method_round`]), so it binds nothing of the inner
    /// exchange to the tunnel, like Basic-Password-Auth. RFC 9930 ("Limitations on Inner
    /// Methods") calls GTC "not useful as phase 2 methods within TEAP" and says
    /// implementations "MUST NOT permit the use of inner EAP methods which fail to perform
    /// crypto-binding": the driver should offer it only where configured for peers that
    /// cannot do Basic-Password-Auth.
    Gtc,
}

impl InnerMethod {
    /// The EAP method type.
    pub fn eap_type(self) -> u8 {
        match self {
            InnerMethod::Gtc => eap::method::GTC,
        }
    }
}

/// How the conversation ended.
#[derive(Debug)]
pub struct Finish {
    pub accepted: bool,
    /// EAP-Success or EAP-Failure, for the Access-Accept/Reject.
    pub eap: Vec<u8>,
    /// MSK/EMSK when accepted.
    pub keys: Option<SessionKeys>,
    /// Why, for logs and audit (never contains secrets).
    pub reason: String,
    /// The Error TLV code we sent (or the peer sent, when it ended the conversation).
    pub error_code: Option<u32>,
    /// The chain the peer presented in phase 1 (leaf first; empty when none).
    pub peer_certificates: Vec<Vec<u8>>,
}

/// Which question is outstanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    TunnelUp,
    CheckPassword,
    Enroll,
}

/// What follows a verified Crypto-Binding Response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterBinding {
    /// We sent Result(Success): the peer's Result(Success) ends the conversation (or its
    /// Request-Action for the Trusted-Server-Root starts one more round).
    Finish,
    /// We sent Result(Success) with an optional provisioning Request-Action(Success) beside
    /// it: a PKCS#10 TLV enrolls, Result(Success) alone declines and ends the conversation.
    OfferProvision,
    /// We sent a required provisioning Request-Action(Failure) and no Result: only a PKCS#10
    /// TLV lets the conversation go on.
    RequireProvision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    reason: String,
    error_code: Option<u32>,
}

/// An inner EAP conversation in progress (its own EAP state machine, RFC 9930 "Inner EAP Authentication").
#[derive(Debug, Clone, PartialEq, Eq)]
struct InnerEap {
    method: InnerMethod,
    /// Identifier of the inner EAP-Request outstanding.
    identifier: u8,
    prompt: Vec<u8>,
    /// The peer's EAP-Response/Identity, once received; the method request is then out.
    identity: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Handshake,
    Asked(Asked),
    AwaitPasswordResp,
    AwaitInnerEap(InnerEap),
    AwaitCsr { required: bool },
    AwaitBinding { then: AfterBinding },
    AwaitFailureAck(Failure),
    Finished,
}

/// One EAP-TEAP server conversation. See the module docs.
pub struct Conversation {
    config: Arc<TeapServerConfig>,
    tls: ServerConnection,
    random: RandomSource,
    outer_identity: Vec<u8>,
    /// Identifier of the last EAP-Request sent; the next response must echo it.
    identifier: u8,
    exchanges: usize,
    /// The Authority-ID outer TLV of our Start, as sent.
    server_outer_tlvs: Vec<u8>,
    /// Outer TLVs of the peer's first message (empty when it sent none).
    peer_outer_tlvs: Vec<u8>,
    peer_message_seen: bool,
    incoming: Reassembly,
    outgoing: Outgoing,
    phase: Phase,
    keys: Option<KeySchedule>,
    /// The Crypto-Binding Request awaiting the peer's Response.
    binding_request: Option<CryptoBinding>,
    peer_certificates: Vec<Vec<u8>>,
    /// The peer asked for the Trusted-Server-Root: include it in the next request.
    send_trusted_server_root: bool,
    /// An inner EAP method succeeded: the next Crypto-Binding round is that method's
    /// ([`KeySchedule::next_method_round`]), not a binding-only one.
    inner_eap_round_pending: bool,
}

impl fmt::Debug for Conversation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conversation")
            .field(
                "outer_identity",
                &String::from_utf8_lossy(&self.outer_identity),
            )
            .field("identifier", &self.identifier)
            .field("exchanges", &self.exchanges)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

/// A phase-2 step's result before it becomes a [`Next`].
type Step = Next;

impl Conversation {
    /// Begins after the peer's EAP-Response/Identity: the conversation and the
    /// EAP-Request/TEAP Start (flags S+O, Authority-ID outer TLV, no TLS data) carrying
    /// `identifier`. `random` supplies the Crypto-Binding nonces.
    pub fn start(
        config: Arc<TeapServerConfig>,
        identifier: u8,
        outer_identity: Vec<u8>,
        random: RandomSource,
    ) -> Result<(Conversation, Vec<u8>), StartError> {
        let tls = ServerConnection::new(config.tls.clone())?;
        let server_outer_tlvs = Tlv::AuthorityId(config.authority_id.clone()).encode()?;
        let mut start = TeapMessage::new(Vec::new());
        start.start = true;
        start.outer_tlvs = Some(server_outer_tlvs.clone());
        let packet = Packet {
            code: Code::Request,
            identifier,
            body: Body::Teap(start),
        }
        .encode()?;
        let conversation = Conversation {
            config,
            tls,
            random,
            outer_identity,
            identifier,
            exchanges: 0,
            server_outer_tlvs,
            peer_outer_tlvs: Vec::new(),
            peer_message_seen: false,
            incoming: Reassembly::default(),
            outgoing: Outgoing::default(),
            phase: Phase::Handshake,
            keys: None,
            binding_request: None,
            peer_certificates: Vec::new(),
            send_trusted_server_root: false,
            inner_eap_round_pending: false,
        };
        Ok((conversation, packet))
    }

    /// The identity from the peer's EAP-Response/Identity.
    pub fn outer_identity(&self) -> &[u8] {
        &self.outer_identity
    }

    /// The chain the peer presented in phase 1 (empty before the tunnel is up or when none).
    pub fn peer_certificates(&self) -> &[Vec<u8>] {
        &self.peer_certificates
    }

    /// Whether the conversation has ended (every later packet is discarded).
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// One EAP-Response packet (already reassembled from its EAP-Message attributes).
    pub fn receive(&mut self, eap_response: &[u8]) -> Next {
        match &self.phase {
            Phase::Finished => return Next::Discard("conversation already finished".into()),
            Phase::Asked(asked) => {
                return Next::Discard(format!("waiting for the driver's answer to {asked:?}"));
            }
            _ => {}
        }
        let packet = match Packet::parse(eap_response) {
            Ok(packet) => packet,
            Err(error) => return Next::Discard(format!("not a valid EAP packet: {error}")),
        };
        if packet.code != Code::Response {
            return Next::Discard(format!(
                "EAP {:?} where a Response was expected",
                packet.code
            ));
        }
        if packet.identifier != self.identifier {
            return Next::Discard(format!(
                "EAP identifier {} does not match the outstanding request's {}",
                packet.identifier, self.identifier
            ));
        }
        self.exchanges += 1;
        if self.exchanges > self.config.limits.max_exchanges {
            return self.fail_now(
                format!(
                    "exchange limit of {} EAP-Responses exceeded",
                    self.config.limits.max_exchanges
                ),
                None,
            );
        }
        let message = match packet.body {
            Body::Teap(message) => message,
            Body::Nak(types) => {
                return self.fail_now(
                    format!("peer refused EAP-TEAP (legacy Nak proposing types {types:?})"),
                    None,
                );
            }
            Body::Identity(_) => {
                return self.fail_now("peer sent an Identity inside EAP-TEAP".into(), None);
            }
            Body::Other { method_type, .. } => {
                return self.fail_now(
                    format!("peer answered with EAP type {method_type} instead of TEAP"),
                    None,
                );
            }
            Body::Empty => return self.fail_now("empty EAP-Response".into(), None),
        };
        self.receive_teap(message)
    }

    /// The driver's answer to the last [`Next::Ask`].
    pub fn answer(&mut self, answer: Answer) -> Next {
        let Phase::Asked(asked) = self.phase.clone() else {
            return Next::Discard("no question is outstanding".into());
        };
        match (asked, answer) {
            (
                asked @ (Asked::TunnelUp | Asked::CheckPassword),
                Answer::Authenticated { provisioning },
            ) => {
                // After Basic-Password-Auth the inner exchange's Intermediate-Result goes along.
                let intermediate = asked == Asked::CheckPassword;
                match provisioning {
                    None => self.send_final_binding(intermediate, Vec::new()),
                    Some(provisioning) if provisioning.required => {
                        if intermediate {
                            let tlvs = provisioning_tlvs(provisioning);
                            self.send_binding(
                                true,
                                Vec::new(),
                                tlvs,
                                AfterBinding::RequireProvision,
                            )
                        } else {
                            self.send_provisioning_request(provisioning)
                        }
                    }
                    Some(provisioning) => {
                        let mut after = vec![Tlv::Result(Status::Success)];
                        after.extend(provisioning_tlvs(provisioning));
                        self.send_binding(
                            intermediate,
                            Vec::new(),
                            after,
                            AfterBinding::OfferProvision,
                        )
                    }
                }
            }
            (Asked::TunnelUp | Asked::CheckPassword, Answer::RequirePassword { prompt }) => {
                self.inner_eap_round_pending = false;
                self.phase = Phase::AwaitPasswordResp;
                self.send_tlvs(vec![Tlv::BasicPasswordAuthReq(prompt)])
            }
            (
                Asked::TunnelUp | Asked::CheckPassword,
                Answer::RequireInnerEap { method, prompt },
            ) => {
                self.inner_eap_round_pending = false;
                // Any identifier starts the inner EAP state machine; ours follows the outer one.
                let identifier = self.identifier;
                self.phase = Phase::AwaitInnerEap(InnerEap {
                    method,
                    identifier,
                    prompt,
                    identity: None,
                });
                self.send_inner_eap_request(identifier, Body::Identity(Vec::new()))
            }
            (asked, Answer::Reject { error_code, reason }) => self.fail_protected(
                format!("driver rejected the peer: {reason}"),
                Some(error_code),
                asked != Asked::TunnelUp,
            ),
            (Asked::Enroll, Answer::Issued { pkcs7_der }) => {
                self.send_final_binding(true, vec![Tlv::Pkcs7(pkcs7_der)])
            }
            (Asked::Enroll, Answer::EnrollFailed { error_code, reason }) => self.fail_protected(
                format!("enrollment failed: {reason}"),
                Some(error_code),
                true,
            ),
            (asked, answer) => self.fail_protected(
                format!("driver answered {} to {asked:?}", answer_name(&answer)),
                None,
                false,
            ),
        }
    }

    fn receive_teap(&mut self, message: TeapMessage) -> Next {
        if message.start {
            return self.fail_now("peer set the Start flag".into(), None);
        }
        let first_peer_message = !self.peer_message_seen;
        self.peer_message_seen = true;
        if let Some(outer) = &message.outer_tlvs {
            if !first_peer_message {
                return self.fail_now(
                    "O flag (outer TLVs) on a message other than the peer's first".into(),
                    None,
                );
            }
            if let Err(error) = tlv::parse_tlvs(outer, self.config.limits.tlv) {
                return self.fail_now(format!("malformed outer TLVs: {error}"), None);
            }
            self.peer_outer_tlvs = outer.clone();
        }
        if self.outgoing.pending() {
            let is_ack = message.tls_data.is_empty()
                && !message.more_fragments
                && message.message_length.is_none()
                && message.outer_tlvs.is_none();
            if !is_ack {
                return self.fail_now(
                    "peer sent data while our fragmented message awaited its ACK".into(),
                    None,
                );
            }
            let fragment = self.outgoing.next(self.config.limits.max_tls_fragment);
            return self.send_teap(fragment);
        }
        let tls_data = match self
            .incoming
            .receive(&message, self.config.limits.max_message_len)
        {
            Ok(Received::NeedAck) => return self.send_teap(TeapMessage::new(Vec::new())),
            Ok(Received::Complete(data)) => data,
            Err(reason) => return self.fail_now(format!("fragmentation: {reason}"), None),
        };
        if let Phase::AwaitFailureAck(failure) = &self.phase {
            let failure = failure.clone();
            return self.finish_failure(failure.reason, failure.error_code);
        }
        if tls_data.is_empty() {
            if self.phase == Phase::Handshake {
                return self.fail_now(
                    "peer sent an empty message (an ACK) during the TLS handshake".into(),
                    None,
                );
            }
            // In phase 2 an empty response says "nothing to send": hostap's peer answers so
            // when it recognises no TLV (e.g. a Request-Action it does not process).
            return self.handle_tlvs(&[]);
        }
        self.process_tls(&tls_data)
    }

    fn process_tls(&mut self, data: &[u8]) -> Next {
        let mut rest = data;
        while !rest.is_empty() {
            if let Err(error) = self.tls.read_tls(&mut rest) {
                return self.fail_now(format!("TLS input refused: {error}"), None);
            }
            if let Err(error) = self.tls.process_new_packets() {
                return self.fail_now(format!("TLS: {error}"), None);
            }
        }
        let plaintext = match self.read_plaintext() {
            Ok(plaintext) => plaintext,
            Err(reason) => return self.fail_now(reason, None),
        };
        if self.phase == Phase::Handshake {
            if self.tls.is_handshaking() {
                if !plaintext.is_empty() {
                    return self.fail_now("application data during the handshake".into(), None);
                }
                let mut out = Vec::new();
                if let Err(error) = self.tls.write_tls(&mut out) {
                    return self.fail_now(format!("TLS output failed: {error}"), None);
                }
                if out.is_empty() {
                    return self.fail_now("TLS handshake produced nothing to send".into(), None);
                }
                return self.send_message(out);
            }
            if !plaintext.is_empty() {
                return self.fail_now("peer sent TLVs before the tunnel was up".into(), None);
            }
            return self.tunnel_up();
        }
        self.handle_tlvs(&plaintext)
    }

    fn read_plaintext(&mut self) -> Result<Vec<u8>, String> {
        let mut plaintext = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.tls.reader().read(&mut buf) {
                Ok(0) => return Err("peer closed the TLS tunnel".into()),
                Ok(n) => {
                    plaintext.extend_from_slice(buf.get(..n).unwrap_or_default());
                    if plaintext.len() > self.config.limits.max_message_len {
                        return Err(format!(
                            "decrypted TLVs exceed the {}-octet limit",
                            self.config.limits.max_message_len
                        ));
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    return Ok(plaintext);
                }
                Err(error) => return Err(format!("TLS read failed: {error}")),
            }
        }
    }

    fn tunnel_up(&mut self) -> Next {
        if self.tls.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_2) {
            return self.fail_now(
                format!(
                    "negotiated {:?}, TEAP here runs over TLS 1.2 only",
                    self.tls.protocol_version()
                ),
                None,
            );
        }
        let Some(suite) = self.tls.negotiated_cipher_suite() else {
            return self.fail_now("no negotiated cipher suite".into(), None);
        };
        let suite_id = u16::from(suite.suite());
        let Some(hash) = PrfHash::for_cipher_suite(suite_id) else {
            return self.fail_now(
                format!("no TLS 1.2 PRF hash known for cipher suite {suite_id:#06x}"),
                None,
            );
        };
        let seed = match self.tls.export_keying_material(
            Zeroizing::new([0u8; 40]),
            keys::SESSION_KEY_SEED_LABEL,
            None,
        ) {
            Ok(seed) => seed,
            Err(error) => {
                return self.fail_now(format!("session key seed export failed: {error}"), None);
            }
        };
        self.keys = Some(KeySchedule::new(hash, &seed));
        self.peer_certificates = self
            .tls
            .peer_certificates()
            .map(|chain| chain.iter().map(|cert| cert.to_vec()).collect())
            .unwrap_or_default();
        tracing::debug!(
            suite = format_args!("{suite_id:#06x}"),
            peer_certificates = self.peer_certificates.len(),
            "TEAP tunnel up"
        );
        self.phase = Phase::Asked(Asked::TunnelUp);
        Next::Ask(Question::TunnelUp {
            peer_certificates: self.peer_certificates.clone(),
        })
    }

    fn handle_tlvs(&mut self, bytes: &[u8]) -> Step {
        let parsed = match tlv::parse_tlvs(bytes, self.config.limits.tlv) {
            Ok(parsed) => parsed,
            Err(error) => {
                return self.fail_protected(
                    format!("malformed TLVs from the peer: {error}"),
                    Some(error_code::UNEXPECTED_TLVS_EXCHANGED),
                    false,
                );
            }
        };
        if let Some(&unknown) = parsed.unsupported_mandatory.first() {
            // Phase unchanged: the peer may answer the outstanding request again without it.
            tracing::debug!(tlv_type = unknown, "NAK for an unknown mandatory TLV");
            return self.send_tlvs(vec![tlv::nak_for(unknown)]);
        }
        let tlvs = parsed.tlvs;
        let peer = PeerTlvs::collect(&tlvs, self.config.limits.tlv);
        if peer.pac {
            return self.fail_protected(
                "peer sent a PAC TLV (deprecated)".into(),
                Some(error_code::UNEXPECTED_TLVS_EXCHANGED),
                false,
            );
        }
        if peer.asks_trusted_server_root && self.config.trusted_server_root_pkcs7.is_some() {
            self.send_trusted_server_root = true;
        }
        let phase = self.phase.clone();
        if let Some(unexpected) = tlvs.iter().find(|tlv| !expected_in(&phase, tlv)) {
            return self.fail_protected(
                format!(
                    "unexpected TLV type {} in phase {phase:?}",
                    unexpected.tlv_type()
                ),
                Some(error_code::UNEXPECTED_TLVS_EXCHANGED),
                false,
            );
        }
        match phase {
            Phase::AwaitPasswordResp => self.on_password_response(&peer),
            Phase::AwaitInnerEap(inner) => self.on_inner_eap_response(&peer, inner),
            Phase::AwaitCsr { required } => self.on_csr_response(&peer, required),
            Phase::AwaitBinding { then } => self.on_binding_response(&peer, then),
            Phase::Handshake | Phase::Asked(_) | Phase::AwaitFailureAck(_) | Phase::Finished => {
                self.fail_now(format!("TLVs arrived in phase {phase:?}"), None)
            }
        }
    }

    fn on_password_response(&mut self, peer: &PeerTlvs) -> Step {
        if peer.result == Some(Status::Failure) {
            return self.peer_failed(peer);
        }
        if peer.naks.contains(&tlv_type::BASIC_PASSWORD_AUTH_REQ) {
            return self.fail_protected(
                "peer does not support Basic-Password-Auth".into(),
                None,
                false,
            );
        }
        let Some((username, password)) = peer.password.clone() else {
            return self.fail_protected(
                "no Basic-Password-Auth-Resp in answer to Basic-Password-Auth-Req".into(),
                Some(error_code::UNEXPECTED_TLVS_EXCHANGED),
                false,
            );
        };
        self.phase = Phase::Asked(Asked::CheckPassword);
        Next::Ask(Question::CheckPassword { username, password })
    }

    /// The peer's EAP-Payload during an inner EAP method: its EAP-Response/Identity, then the
    /// method's response. A malformed or unexpected packet is a protected failure (2002); a
    /// legacy Nak to the method request, or a NAK TLV for EAP-Payload, is "Inner method not
    /// supported" (1032).
    fn on_inner_eap_response(&mut self, peer: &PeerTlvs, inner: InnerEap) -> Step {
        if peer.result == Some(Status::Failure) {
            return self.peer_failed(peer);
        }
        if peer.naks.contains(&tlv_type::EAP_PAYLOAD) {
            return self.fail_protected(
                "peer does not support inner EAP methods (NAK TLV for EAP-Payload)".into(),
                Some(error_code::INNER_METHOD_NOT_SUPPORTED),
                false,
            );
        }
        let [payload] = peer.eap_payloads.as_slice() else {
            return self.fail_protected(
                format!(
                    "{} EAP-Payload TLVs in answer to our inner EAP-Request (expected one)",
                    peer.eap_payloads.len()
                ),
                Some(error_code::UNEXPECTED_TLVS_EXCHANGED),
                false,
            );
        };
        let packet = match Packet::parse(payload) {
            Ok(packet) => packet,
            Err(error) => {
                return self.fail_protected(
                    format!("malformed EAP packet in the EAP-Payload TLV: {error}"),
                    Some(error_code::UNEXPECTED_TLVS_EXCHANGED),
                    false,
                );
            }
        };
        if packet.code != Code::Response || packet.identifier != inner.identifier {
            return self.fail_protected(
                format!(
                    "inner EAP {:?} with identifier {} where the Response to request {} was \
                     expected",
                    packet.code, packet.identifier, inner.identifier
                ),
                Some(error_code::UNEXPECTED_TLVS_EXCHANGED),
                false,
            );
        }
        let method_type = inner.method.eap_type();
        match (inner.identity, packet.body) {
            (None, Body::Identity(identity)) => {
                let identifier = inner.identifier.wrapping_add(1);
                let request = Body::Other {
                    method_type,
                    data: inner.prompt.clone(),
                };
                self.phase = Phase::AwaitInnerEap(InnerEap {
                    identifier,
                    identity: Some(identity),
                    ..inner
                });
                self.send_inner_eap_request(identifier, request)
            }
            (
                Some(identity),
                Body::Other {
                    method_type: t,
                    data,
                },
            ) if t == method_type => {
                // EAP-GTC: the whole Type-Data is the response (RFC 3748 §5.6).
                let password = Zeroizing::new(data);
                self.inner_eap_round_pending = true;
                self.phase = Phase::Asked(Asked::CheckPassword);
                Next::Ask(Question::CheckPassword {
                    username: identity,
                    password,
                })
            }
            (Some(_), Body::Nak(proposed)) => self.fail_protected(
                format!(
                    "peer refused inner EAP method {method_type} (legacy Nak proposing \
                     {proposed:?})"
                ),
                Some(error_code::INNER_METHOD_NOT_SUPPORTED),
                true,
            ),
            (identity, body) => self.fail_protected(
                format!(
                    "unexpected inner EAP-Response ({}) while waiting for {}",
                    inner_body_name(&body),
                    if identity.is_some() {
                        "the method's response"
                    } else {
                        "the Identity"
                    }
                ),
                Some(error_code::UNEXPECTED_TLVS_EXCHANGED),
                false,
            ),
        }
    }

    fn send_inner_eap_request(&mut self, identifier: u8, body: Body) -> Step {
        let packet = Packet {
            code: Code::Request,
            identifier,
            body,
        };
        match packet.encode() {
            Ok(bytes) => self.send_tlvs(vec![Tlv::EapPayload(bytes)]),
            Err(error) => self.fail_now(
                format!("inner EAP-Request cannot be encoded: {error}"),
                None,
            ),
        }
    }

    fn on_csr_response(&mut self, peer: &PeerTlvs, required: bool) -> Step {
        if let Some(csr_der) = peer.pkcs10.clone() {
            self.phase = Phase::Asked(Asked::Enroll);
            return Next::Ask(Question::Enroll { csr_der });
        }
        if peer.result == Some(Status::Failure) {
            return self.peer_failed(peer);
        }
        // No PKCS#10: declined, whether by Result(Success) (RFC 9930 §4.2.9), a NAK, or an
        // empty answer (hostap).
        if required {
            return self.fail_protected(
                "peer declined the required certificate provisioning".into(),
                None,
                false,
            );
        }
        tracing::debug!("peer declined optional certificate provisioning");
        self.send_final_binding(false, Vec::new())
    }

    fn on_binding_response(&mut self, peer: &PeerTlvs, then: AfterBinding) -> Step {
        let Some(binding) = peer.crypto_binding.clone() else {
            if peer.result == Some(Status::Failure) {
                return self.peer_failed(peer);
            }
            if let (Some(csr_der), AfterBinding::OfferProvision | AfterBinding::RequireProvision) =
                (peer.pkcs10.clone(), then)
            {
                // The peer processed our Request-Action instead of acknowledging the binding
                // round; the PKCS#7 round that follows carries a Crypto-Binding of its own, and
                // success needs that one verified (see the module docs).
                self.binding_request = None;
                self.phase = Phase::Asked(Asked::Enroll);
                return Next::Ask(Question::Enroll { csr_der });
            }
            return self.fail_protected(
                "no Crypto-Binding TLV in answer to our Crypto-Binding Request".into(),
                Some(error_code::UNEXPECTED_TLVS_EXCHANGED),
                false,
            );
        };
        if let Err(reason) = self.verify_binding(&binding) {
            return self.fail_protected(
                format!("Crypto-Binding Response invalid: {reason}"),
                Some(error_code::TUNNEL_COMPROMISE),
                false,
            );
        }
        self.binding_request = None;
        if peer.intermediate_result == Some(Status::Failure) || peer.result == Some(Status::Failure)
        {
            return self.peer_failed(peer);
        }
        if let Some(csr_der) = peer.pkcs10.clone() {
            self.phase = Phase::Asked(Asked::Enroll);
            return Next::Ask(Question::Enroll { csr_der });
        }
        if then == AfterBinding::RequireProvision {
            return self.fail_protected(
                "peer declined the required certificate provisioning".into(),
                None,
                false,
            );
        }
        if let Some(status) = peer.trusted_server_root_request {
            // RFC 9930 Appendix C.10 pattern: a Request-Action answering our Result(Success).
            // With roots configured they go out beside a fresh Crypto-Binding + Result(Success)
            // (encode_and_seal adds them); without, the request is not processed and its own
            // Status decides (§4.2.9).
            if self.send_trusted_server_root || status == Status::Success {
                tracing::debug!(
                    served = self.send_trusted_server_root,
                    "peer asked for the Trusted-Server-Root"
                );
                return self.send_final_binding(false, Vec::new());
            }
            return self.fail_protected(
                "peer requires a Trusted-Server-Root this server has not got".into(),
                None,
                false,
            );
        }
        if peer.result != Some(Status::Success) {
            return self.fail_protected(
                "no Result TLV in answer to our Result(Success)".into(),
                Some(error_code::UNEXPECTED_TLVS_EXCHANGED),
                false,
            );
        }
        if then == AfterBinding::OfferProvision {
            tracing::debug!("peer declined optional certificate provisioning");
        }
        let use_emsk_chain = self
            .keys
            .as_ref()
            .is_some_and(|keys| keys.binding_uses_emsk_chain(&binding));
        self.finish_success(use_emsk_chain)
    }

    /// RFC 9930 §4.2.13 checks on the peer's Crypto-Binding Response.
    fn verify_binding(&self, binding: &CryptoBinding) -> Result<(), String> {
        let Some(request) = &self.binding_request else {
            return Err("no Crypto-Binding Request is outstanding".into());
        };
        let Some(keys) = &self.keys else {
            return Err("no key schedule".into());
        };
        if binding.version != 1 {
            return Err(format!("version {} (expected 1)", binding.version));
        }
        if binding.received_version != eap::TEAP_VERSION {
            return Err(format!(
                "received version {} (we sent version {})",
                binding.received_version,
                eap::TEAP_VERSION
            ));
        }
        if binding.sub_type != CryptoBinding::SUB_TYPE_RESPONSE {
            return Err(format!("sub-type {} (expected Response)", binding.sub_type));
        }
        if !(1..=3).contains(&binding.flags) {
            return Err(format!("flags {}", binding.flags));
        }
        let mut expected_nonce = request.nonce;
        if let Some(last) = expected_nonce.last_mut() {
            *last |= 1;
        }
        if binding.nonce != expected_nonce {
            return Err("nonce is not our request nonce with its low bit set".into());
        }
        keys.verify(binding, &self.server_outer_tlvs, &self.peer_outer_tlvs)
            .map_err(|error| error.to_string())
    }

    fn send_provisioning_request(&mut self, provisioning: Provisioning) -> Step {
        let required = provisioning.required;
        self.phase = Phase::AwaitCsr { required };
        self.send_tlvs(provisioning_tlvs(provisioning))
    }

    /// Crypto-Binding(Request) + Result(Success), after `before` (e.g. the PKCS#7 TLV);
    /// with Intermediate-Result(Success) when an inner exchange just succeeded.
    fn send_final_binding(&mut self, intermediate: bool, before: Vec<Tlv>) -> Step {
        self.send_binding(
            intermediate,
            before,
            vec![Tlv::Result(Status::Success)],
            AfterBinding::Finish,
        )
    }

    fn send_binding(
        &mut self,
        intermediate: bool,
        mut tlvs: Vec<Tlv>,
        after: Vec<Tlv>,
        then: AfterBinding,
    ) -> Step {
        let Some(keys) = self.keys.as_mut() else {
            return self.fail_now("Crypto-Binding without a key schedule".into(), None);
        };
        // Only the first round after an inner EAP method is that method's; later ones (e.g.
        // after the PKCS#7) are binding-only.
        if std::mem::take(&mut self.inner_eap_round_pending) {
            // No inner method here exports keys (EAP-GTC): the zero IMSK, S-IMCK advancing.
            keys.next_method_round(None, None);
        } else {
            keys.next_round(None, None);
        }
        let mut nonce = [0u8; 32];
        (self.random)(&mut nonce);
        if let Some(last) = nonce.last_mut() {
            *last &= 0xfe;
        }
        let mut binding = CryptoBinding {
            reserved: 0,
            version: 1,
            received_version: eap::TEAP_VERSION,
            // Set by sign_binding: 2 (MSK Compound-MAC) as no inner method here gives an EMSK.
            flags: 0,
            sub_type: CryptoBinding::SUB_TYPE_REQUEST,
            nonce,
            emsk_compound_mac: [0; 20],
            msk_compound_mac: [0; 20],
        };
        if let Err(error) =
            keys.sign_binding(&mut binding, &self.server_outer_tlvs, &self.peer_outer_tlvs)
        {
            return self.fail_now(format!("Crypto-Binding cannot be signed: {error}"), None);
        }
        self.binding_request = Some(binding.clone());
        if intermediate {
            tlvs.push(Tlv::IntermediateResult {
                status: Status::Success,
                tlvs: Vec::new(),
            });
        }
        tlvs.push(Tlv::CryptoBinding(binding));
        tlvs.extend(after);
        self.phase = Phase::AwaitBinding { then };
        self.send_tlvs(tlvs)
    }

    /// Protected failure: [Intermediate-Result(Failure)] + Error + Result(Failure) inside the
    /// tunnel; the peer's answer is followed by EAP-Failure.
    fn fail_protected(
        &mut self,
        reason: String,
        error_code: Option<u32>,
        intermediate: bool,
    ) -> Step {
        tracing::debug!(%reason, ?error_code, "TEAP protected failure");
        let mut tlvs = Vec::new();
        if intermediate {
            tlvs.push(Tlv::IntermediateResult {
                status: Status::Failure,
                tlvs: Vec::new(),
            });
        }
        if let Some(code) = error_code {
            tlvs.push(Tlv::Error(code));
        }
        tlvs.push(Tlv::Result(Status::Failure));
        self.phase = Phase::AwaitFailureAck(Failure {
            reason: reason.clone(),
            error_code,
        });
        match self.encode_and_seal(tlvs) {
            Ok(out) => self.send_message(out),
            Err(detail) => self.fail_now(format!("{reason}; {detail}"), error_code),
        }
    }

    /// The peer ended the conversation with Result(Failure).
    fn peer_failed(&mut self, peer: &PeerTlvs) -> Step {
        let reason = if peer.errors.is_empty() {
            "peer sent Result(Failure)".to_string()
        } else {
            format!(
                "peer sent Result(Failure) with Error TLVs {:?}",
                peer.errors
            )
        };
        let code = peer.errors.first().copied();
        self.finish_failure(reason, code)
    }

    fn send_tlvs(&mut self, tlvs: Vec<Tlv>) -> Step {
        match self.encode_and_seal(tlvs) {
            Ok(out) => self.send_message(out),
            Err(reason) => self.fail_now(reason, None),
        }
    }

    /// Encodes the TLVs (plus a pending Trusted-Server-Root) and encrypts them; returns the
    /// TLS records with anything else rustls had queued (e.g. our Finished) in front.
    fn encode_and_seal(&mut self, mut tlvs: Vec<Tlv>) -> Result<Vec<u8>, String> {
        if self.send_trusted_server_root {
            self.send_trusted_server_root = false;
            if let Some(pkcs7) = &self.config.trusted_server_root_pkcs7 {
                let inner = Tlv::Pkcs7(pkcs7.clone())
                    .encode()
                    .map_err(|error| format!("Trusted-Server-Root PKCS#7: {error}"))?;
                tlvs.push(Tlv::TrustedServerRoot {
                    credential_format: TRUSTED_SERVER_ROOT_PKCS7,
                    tlvs: inner,
                });
            }
        }
        let plain =
            tlv::encode_tlvs(&tlvs).map_err(|error| format!("TLVs cannot be encoded: {error}"))?;
        self.tls
            .writer()
            .write_all(&plain)
            .map_err(|error| format!("TLS write failed: {error}"))?;
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls
                .write_tls(&mut out)
                .map_err(|error| format!("TLS output failed: {error}"))?;
        }
        Ok(out)
    }

    /// Sends one message of TLS data, fragmenting it as configured.
    fn send_message(&mut self, tls_data: Vec<u8>) -> Step {
        let first = self
            .outgoing
            .start(tls_data, self.config.limits.max_tls_fragment);
        self.send_teap(first)
    }

    fn send_teap(&mut self, message: TeapMessage) -> Step {
        self.identifier = self.identifier.wrapping_add(1);
        let packet = Packet {
            code: Code::Request,
            identifier: self.identifier,
            body: Body::Teap(message),
        };
        match packet.encode() {
            Ok(bytes) => Next::Send(bytes),
            Err(error) => self.fail_now(format!("EAP-Request cannot be encoded: {error}"), None),
        }
    }

    fn finish_success(&mut self, use_emsk_chain: bool) -> Step {
        let Some(keys) = &self.keys else {
            return self.fail_now("success without a key schedule".into(), None);
        };
        let session_keys = keys.session_keys(use_emsk_chain);
        self.phase = Phase::Finished;
        Next::Finished(Finish {
            accepted: true,
            eap: self.final_packet(Code::Success),
            keys: Some(session_keys),
            reason: "authenticated; Crypto-Binding verified".into(),
            error_code: None,
            peer_certificates: self.peer_certificates.clone(),
        })
    }

    fn finish_failure(&mut self, reason: String, error_code: Option<u32>) -> Step {
        tracing::debug!(%reason, ?error_code, "TEAP conversation failed");
        self.phase = Phase::Finished;
        Next::Finished(Finish {
            accepted: false,
            eap: self.final_packet(Code::Failure),
            keys: None,
            reason,
            error_code,
            peer_certificates: self.peer_certificates.clone(),
        })
    }

    /// Ends at once with EAP-Failure (no protected exchange).
    fn fail_now(&mut self, reason: String, error_code: Option<u32>) -> Step {
        self.finish_failure(reason, error_code)
    }

    /// EAP-Success/Failure carry the identifier of the response they answer (RFC 3748 §4.2).
    fn final_packet(&self, code: Code) -> Vec<u8> {
        let length = eap::HEADER_LEN as u16;
        let [high, low] = length.to_be_bytes();
        vec![code.to_u8(), self.identifier, high, low]
    }
}

/// Credential-Format 1: PKCS#7-Server-Certificate-Root (RFC 9930 §4.2.18).
const TRUSTED_SERVER_ROOT_PKCS7: u16 = 1;

/// Request-Action(Process-TLV, empty PKCS#10 TLV) + CSR-Attributes TLV.
fn provisioning_tlvs(provisioning: Provisioning) -> Vec<Tlv> {
    let status = if provisioning.required {
        Status::Failure
    } else {
        Status::Success
    };
    // An empty PKCS#10 TLV names the TLV the peer is asked to send; encoding it cannot fail.
    let pkcs10 = Tlv::Pkcs10(Vec::new()).encode().unwrap_or_default();
    vec![
        Tlv::RequestAction {
            status,
            action: Action::ProcessTlv,
            tlvs: pkcs10,
        },
        Tlv::CsrAttributes(provisioning.csr_attributes_der),
    ]
}

fn inner_body_name(body: &Body) -> String {
    match body {
        Body::Empty => "no type".into(),
        Body::Identity(_) => "Identity".into(),
        Body::Nak(_) => "legacy Nak".into(),
        Body::Teap(_) => "EAP-TEAP".into(),
        Body::Other { method_type, .. } => format!("EAP type {method_type}"),
    }
}

fn answer_name(answer: &Answer) -> &'static str {
    match answer {
        Answer::Authenticated { .. } => "Authenticated",
        Answer::RequirePassword { .. } => "RequirePassword",
        Answer::RequireInnerEap { .. } => "RequireInnerEap",
        Answer::Reject { .. } => "Reject",
        Answer::Issued { .. } => "Issued",
        Answer::EnrollFailed { .. } => "EnrollFailed",
    }
}

/// Whether `tlv` may appear in a peer message in `phase`. Informational TLVs are accepted
/// everywhere; the rest only where they answer what we sent.
fn expected_in(phase: &Phase, tlv: &Tlv) -> bool {
    match tlv {
        Tlv::IdentityType(_)
        | Tlv::IdentityHint(_)
        | Tlv::Error(_)
        | Tlv::Nak { .. }
        | Tlv::TrustedServerRoot { .. }
        | Tlv::Result(_) => true,
        Tlv::VendorSpecific { mandatory, .. } | Tlv::ChannelBinding { mandatory, .. } => !mandatory,
        // Only a Request-Action asking for the Trusted-Server-Root is served.
        Tlv::RequestAction { .. } => true,
        Tlv::BasicPasswordAuthResp { .. } => *phase == Phase::AwaitPasswordResp,
        Tlv::Pkcs10(_) => matches!(phase, Phase::AwaitCsr { .. } | Phase::AwaitBinding { .. }),
        Tlv::CryptoBinding(_) | Tlv::IntermediateResult { .. } => {
            matches!(phase, Phase::AwaitBinding { .. })
        }
        Tlv::EapPayload(_) => matches!(phase, Phase::AwaitInnerEap(_)),
        Tlv::AuthorityId(_)
        | Tlv::Pac(_)
        | Tlv::BasicPasswordAuthReq(_)
        | Tlv::Pkcs7(_)
        | Tlv::CsrAttributes(_) => false,
    }
}

/// What a peer message says, gathered once.
#[derive(Default)]
struct PeerTlvs {
    result: Option<Status>,
    intermediate_result: Option<Status>,
    crypto_binding: Option<CryptoBinding>,
    password: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    /// EAP-Payload TLV values (an EAP packet, maybe followed by TLVs); may hold a password.
    eap_payloads: Vec<Zeroizing<Vec<u8>>>,
    pkcs10: Option<Vec<u8>>,
    errors: Vec<u32>,
    naks: Vec<u16>,
    pac: bool,
    /// The peer asked for the Trusted-Server-Root: with a Request-Action, its Status.
    trusted_server_root_request: Option<Status>,
    /// The peer asked for it at all (a Request-Action or a bare Trusted-Server-Root TLV).
    asks_trusted_server_root: bool,
}

impl PeerTlvs {
    fn collect(tlvs: &[Tlv], limits: tlv::Limits) -> Self {
        let mut peer = PeerTlvs::default();
        for tlv in tlvs {
            match tlv {
                Tlv::Result(status) => peer.result = Some(worse(peer.result, *status)),
                Tlv::IntermediateResult { status, .. } => {
                    peer.intermediate_result = Some(worse(peer.intermediate_result, *status));
                }
                Tlv::CryptoBinding(binding) => peer.crypto_binding = Some(binding.clone()),
                Tlv::BasicPasswordAuthResp { username, password } => {
                    peer.password = Some((username.clone(), Zeroizing::new(password.clone())));
                }
                Tlv::EapPayload(payload) => peer.eap_payloads.push(Zeroizing::new(payload.clone())),
                Tlv::Pkcs10(csr) => peer.pkcs10 = Some(csr.clone()),
                Tlv::Error(code) => peer.errors.push(*code),
                Tlv::Nak { nak_type, .. } => peer.naks.push(*nak_type),
                Tlv::Pac(_) => peer.pac = true,
                Tlv::TrustedServerRoot { .. } => {
                    peer.asks_trusted_server_root = true;
                    peer.trusted_server_root_request
                        .get_or_insert(Status::Success);
                }
                Tlv::RequestAction {
                    status,
                    action: Action::ProcessTlv,
                    ..
                } => {
                    let asks_root = tlv.parse_nested(limits).is_some_and(|nested| {
                        nested.is_ok_and(|nested| {
                            nested
                                .tlvs
                                .iter()
                                .any(|inner| matches!(inner, Tlv::TrustedServerRoot { .. }))
                        })
                    });
                    if asks_root {
                        peer.asks_trusted_server_root = true;
                        peer.trusted_server_root_request =
                            Some(worse(peer.trusted_server_root_request, *status));
                    }
                }
                _ => {}
            }
        }
        peer
    }
}

fn worse(previous: Option<Status>, status: Status) -> Status {
    match previous {
        Some(Status::Failure) => Status::Failure,
        _ => status,
    }
}

#[cfg(test)]
mod tests;
