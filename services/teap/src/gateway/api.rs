//! The boundary between the gateway and the TEAP conversation: the shape of
//! `teap_server::Conversation` as the TEAP design (issue 9) fixes it, behind a trait so the
//! gateway builds and is tested before the real conversation is merged.
//!
//! To connect the real one: replace the type definitions below with
//! `pub use crate::teap_server::{Answer, Finish, Next, Provisioning, Question};` and
//! `pub use crate::keys::SessionKeys;`, and implement [`TeapEngine`] for a wrapper around
//! `Arc<teap_server::TeapServerConfig>` whose `start` calls `Conversation::start`, and
//! [`TeapConversation`] for `teap_server::Conversation` (each method forwards).

use std::fmt;

/// Starts conversations (holds the TLS configuration, Authority-ID and limits).
pub trait TeapEngine: Send + Sync + 'static {
    type Conversation: TeapConversation;
    /// After the peer's EAP-Response/Identity: the conversation and the EAP-Request/TEAP Start
    /// with `identifier`.
    fn start(&self, identifier: u8, outer_identity: Vec<u8>) -> (Self::Conversation, Vec<u8>);
}

/// One TEAP conversation (sans-IO): EAP-Responses in, what to do next out.
pub trait TeapConversation: Send + 'static {
    /// One EAP-Response packet (already reassembled from EAP-Message attributes).
    fn receive(&mut self, eap_response: &[u8]) -> Next;
    /// The driver's answer to the last [`Next::Ask`].
    fn answer(&mut self, answer: Answer) -> Next;
    fn outer_identity(&self) -> &[u8];
}

pub enum Next {
    /// EAP-Request → Access-Challenge.
    Send(Vec<u8>),
    /// The driver answers with [`TeapConversation::answer`], maybe after async work.
    Ask(Question),
    /// EAP-Success (+keys) → Access-Accept, or EAP-Failure → Access-Reject.
    Finished(Finish),
    /// Silently drop this packet; the conversation is unchanged.
    Discard(String),
}

pub enum Question {
    /// Phase 1 done (TLS tunnel up). Leaf-first DER chain the peer presented (maybe empty).
    TunnelUp { peer_certificates: Vec<Vec<u8>> },
    /// Basic-Password-Auth-Resp received inside the tunnel.
    CheckPassword {
        username: Vec<u8>,
        password: Vec<u8>,
    },
    /// The peer sent a PKCS#10 TLV. DER CSR.
    Enroll { csr_der: Vec<u8> },
}

impl fmt::Debug for Question {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Question::TunnelUp { peer_certificates } => f
                .debug_struct("TunnelUp")
                .field("peer_certificates", &peer_certificates.len())
                .finish(),
            Question::CheckPassword { username, .. } => f
                .debug_struct("CheckPassword")
                .field("username", &String::from_utf8_lossy(username))
                .finish_non_exhaustive(),
            Question::Enroll { csr_der } => f
                .debug_struct("Enroll")
                .field("csr_der_len", &csr_der.len())
                .finish(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// To TunnelUp / CheckPassword: the peer is authenticated; `Some` asks for a CSR.
    Authenticated { provisioning: Option<Provisioning> },
    /// To TunnelUp: ask for Basic-Password-Auth inside the tunnel.
    RequirePassword { prompt: Vec<u8> },
    /// Refuse (Error TLV + Result Failure when the tunnel is up, then EAP-Failure).
    Reject { error_code: u32, reason: String },
    /// To Enroll: certs-only PKCS#7 DER (leaf + chain).
    Issued { pkcs7_der: Vec<u8> },
    /// To Enroll: Error TLV + Intermediate-Result(Failure) + Result(Failure).
    EnrollFailed { error_code: u32, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioning {
    pub csr_attributes_der: Vec<u8>,
    pub required: bool,
}

pub struct Finish {
    pub accepted: bool,
    pub eap: Vec<u8>,
    pub keys: Option<SessionKeys>,
    pub reason: String,
    pub error_code: Option<u32>,
    pub peer_certificates: Vec<Vec<u8>>,
}

/// MSK and EMSK of a finished conversation; overwritten on drop, never printed.
pub struct SessionKeys {
    pub msk: [u8; 64],
    pub emsk: [u8; 64],
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.msk = [0; 64];
        self.emsk = [0; 64];
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}
