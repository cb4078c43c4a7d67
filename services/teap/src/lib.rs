//! ragw's TEAP gateway (RFC 9930 carried over RADIUS).
//!
//! Sans-IO building blocks: bytes in, bytes out, no sockets or clocks. Today this crate holds
//! the RADIUS codec ([`radius`]), a RADIUS server core with a thin UDP shell
//! ([`radius_server`]: client table, Message-Authenticator required, Status-Server,
//! retransmission cache), the EAP and TEAP TLV codecs ([`eap`], [`tlv`]), the TEAP key
//! schedule ([`keys`]) and the EAP-TEAP server conversation ([`teap_server`]). RadSec and the
//! registrar hookup come next (issue 9). Nothing here is wired into the
//! `ragw` binary yet.

pub mod eap;
pub mod keys;
pub mod radius;
pub mod radius_server;
pub mod teap_server;
pub mod tlv;
