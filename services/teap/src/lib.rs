//! ragw's TEAP gateway (RFC 9930 carried over RADIUS).
//!
//! Sans-IO building blocks: bytes in, bytes out, no sockets or clocks. Today this crate holds
//! only the RADIUS codec ([`radius`]); the EAP and TEAP state machines and the UDP/RadSec loop
//! that drives them come next (issue 9). Nothing here is wired into the `ragw` binary yet.

pub mod radius;
pub mod radius_server;
