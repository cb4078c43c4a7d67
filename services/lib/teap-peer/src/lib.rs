//! ragw's own EAP-TEAP version 1 peer (RFC 9930), written for tests and benchmarks.
//!
//! - [`Peer`] is sans-IO: one EAP-Request (or Success/Failure) in, one [`PeerStep`] out. TLS 1.2
//!   runs in a rustls [`rustls::ClientConnection`] fed through in-memory buffers; the client
//!   certificate is optional ([`client_tls_config`]).
//! - Outer layer: EAP-Request/Identity → the outer identity; TEAP Start → ClientHello (O flag
//!   only when [`PeerConfig::outer_tlvs`] is non-empty); the server's L/M fragments are
//!   reassembled and ACKed; the peer's own messages are cut at [`PeerConfig::max_fragment`].
//! - Phase 2: Basic-Password-Auth-Req → Basic-Password-Auth-Resp from [`PeerConfig::password`];
//!   Request-Action(Process-TLV, PKCS#10) → a PKCS#10 TLV from [`PeerConfig::csr`] (called with
//!   the CSR-Attributes DER), or the request's Status as Result when `csr` is None (declined).
//!   A Request-Action bundled with the server's Result(Success) (optional provisioning) is
//!   answered with the PKCS#10 instead of the Result when there is a builder (RFC 9930 §4.2.9:
//!   another Result round follows), and with Result(Success) when there is none;
//!   PKCS#7, Trusted-Server-Root, Intermediate-Result and Error TLVs are kept; a Crypto-Binding
//!   Request is verified and answered (nonce with its LSB set; MSK MAC, plus the EMSK MAC when the
//!   chain has an EMSK); Result is echoed. Keys come from `ragw_teap::keys` (the project's one
//!   key schedule).
//! - EAP-Success yields MSK/EMSK only after a verified Crypto-Binding and a Result(Success) the
//!   peer sent; anything else ends in a failed [`PeerOutcome`] saying why. Being a test peer, it
//!   reports malformed or unexpected server packets as failures instead of silently discarding
//!   them.
//! - [`run_over_radius`] drives a whole conversation against a RADIUS server over UDP.

mod fragment;
mod peer;
mod phase2;
mod radius_driver;
mod tls;

pub use fragment::{FragmentError, Fragmenter, Reassembled, Reassembler};
pub use peer::{Peer, PeerOutcome, PeerStep};
pub use phase2::peer_error_code;
pub use radius_driver::{RadiusAttrs, RadiusOutcome, run_over_radius, run_over_radsec};
pub use ragw_teap::keys::SessionKeys;
pub use tls::{client_tls_config, radsec_client_tls_config};

use std::sync::Arc;

use rustls_pki_types::ServerName;

/// Builds the PKCS#10 DER for a CSR-Attributes DER (empty when the server sent none).
pub type CsrBuilder = Box<dyn FnMut(&[u8]) -> Vec<u8> + Send>;

/// Everything a [`Peer`] needs. Build `tls` with [`client_tls_config`].
pub struct PeerConfig {
    pub tls: Arc<rustls::ClientConfig>,
    /// The name the server certificate must match.
    pub server_name: ServerName<'static>,
    /// EAP-Response/Identity and RADIUS User-Name (an anonymous NAI, RFC 9930 §3).
    pub outer_identity: String,
    /// Username and password for Basic-Password-Auth-Req; None NAKs the request.
    pub password: Option<(String, Vec<u8>)>,
    /// Answers Request-Action(Process-TLV, PKCS#10); None declines provisioning.
    pub csr: Option<CsrBuilder>,
    /// Ask for the server's trust roots (Trusted-Server-Root) once the server sends
    /// Result(Success) after a verified Crypto-Binding.
    pub request_trusted_server_root: bool,
    /// Largest TLS payload per EAP-Response before the peer fragments (RFC 5216 §2.1.5).
    pub max_fragment: usize,
    /// Largest reassembled server message accepted.
    pub max_message_len: usize,
    /// Outer TLVs (raw, encoded) for the first peer message; usually empty. RFC 9930 §7.3 asks
    /// for an Identity-Type outer TLV when a client certificate is sent in Phase 1.
    pub outer_tlvs: Vec<u8>,
    /// EAP-Requests after which the peer gives up (guards against a looping server).
    pub max_exchanges: u32,
}

impl PeerConfig {
    /// A config with the defaults: no password, provisioning declined, fragments of 1024
    /// octets, 64 KiB messages, no outer TLVs, 100 exchanges.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        outer_identity: impl Into<String>,
    ) -> Self {
        Self {
            tls,
            server_name,
            outer_identity: outer_identity.into(),
            password: None,
            csr: None,
            request_trusted_server_root: false,
            max_fragment: 1024,
            max_message_len: 64 * 1024,
            outer_tlvs: Vec::new(),
            max_exchanges: 100,
        }
    }
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("server_name", &self.server_name)
            .field("outer_identity", &self.outer_identity)
            .field(
                "password",
                &self.password.as_ref().map(|(user, _)| (user, "<redacted>")),
            )
            .field("csr", &self.csr.as_ref().map(|_| "<builder>"))
            .field(
                "request_trusted_server_root",
                &self.request_trusted_server_root,
            )
            .field("max_fragment", &self.max_fragment)
            .field("max_message_len", &self.max_message_len)
            .field("outer_tlvs", &self.outer_tlvs)
            .field("max_exchanges", &self.max_exchanges)
            .finish_non_exhaustive()
    }
}

/// Errors of the peer's setup and of the RADIUS driver. Protocol failures of a running
/// conversation are not errors: they end in a failed [`PeerOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("UDP: {0}")]
    Io(#[from] std::io::Error),
    #[error("RADIUS: {0}")]
    Radius(#[from] ragw_teap::radius::RadiusError),
    #[error("no verified RADIUS response after {tries} tries")]
    Timeout { tries: u32 },
    #[error("RADIUS {0} carries no Message-Authenticator")]
    MissingMessageAuthenticator(&'static str),
    #[error("Access-Challenge carries no EAP-Message")]
    ChallengeWithoutEap,
    #[error("RADIUS server answered with unexpected code {0:?}")]
    UnexpectedCode(ragw_teap::radius::Code),
    #[error("MS-MPPE keys in Access-Accept: {0}")]
    MppeKeys(String),
    #[error("the peer finished but the RADIUS server sent Access-Challenge")]
    PeerFinishedEarly(Box<PeerOutcome>),
    #[error("EAP encoding: {0}")]
    Eap(#[from] ragw_teap::eap::EapError),
}
