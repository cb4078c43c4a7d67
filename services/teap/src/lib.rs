//! ragw's TEAP gateway (RFC 9930 carried over RADIUS).
//!
//! Sans-IO building blocks: bytes in, bytes out, no sockets or clocks. The RADIUS codec
//! ([`radius`]), a RADIUS server core with a thin UDP shell ([`radius_server`]: client table,
//! Message-Authenticator required, Status-Server, retransmission cache, deferred replies), the
//! EAP and TEAP TLV codecs ([`eap`], [`tlv`]), the TEAP key schedule ([`keys`]) and the EAP-TEAP
//! server conversation ([`teap_server`]). Around them: the `[teap]` configuration ([`config`])
//! and the [`gateway`], the RADIUS handler that drives conversations with the registrar and the
//! device authentication EST uses. The core is served over UDP ([`radius_server::udp`]) and
//! RadSec, RADIUS over TLS ([`radius_server::radsec`]).

pub mod config;
pub mod eap;
pub mod gateway;
pub mod keys;
pub mod radius;
pub mod radius_server;
pub mod service;
pub mod teap_server;
pub mod tlv;
