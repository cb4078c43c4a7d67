//! TLS 1.2 PRF and the EAP-TEAP key schedule (RFC 9930 §6, TLS 1.2 derivations).
//!
//! ```text
//! session_key_seed = TLS-Exporter("EXPORTER: teap session key seed", no context, 40) = S-IMCK[0]
//! IMSK[j]   = first 32 of PRF(EMSK[j], "TEAPbindkey@ietf.org", 0x00 | 0x00 | 0x40)  (EMSK chain)
//!             MSK[j] truncated / zero-padded to 32, or 32 zero octets                 (MSK chain)
//! IMCK[j]   = first 60 of PRF(S-IMCK[j-1], "Inner Methods Compound Keys", IMSK[j])
//! S-IMCK[j] = IMCK[j][0..40],  CMK[j] = IMCK[j][40..60]
//! Compound-MAC = first 20 of HMAC(CMK[j], CB TLV with MACs zeroed | 0x37 | server outer TLVs
//!                                         | peer outer TLVs)
//! MSK  = first 64 of PRF(S-IMCK[n], "Session Key Generating Function", "")
//! EMSK = first 64 of PRF(S-IMCK[n], "Extended Session Key Generating Function", "")
//! ```
//!
//! Two chains run side by side, one fed by inner MSKs and one by inner EMSKs. A round whose
//! method gives no EMSK leaves the EMSK chain as it was (RFC 9930 "Unintended Side Effects":
//! "`IMCK_EMSK[j] = IMCK_EMSK[j-1]`"). The final keys come from the EMSK chain when the peer's
//! Crypto-Binding carried an EMSK Compound-MAC, otherwise from the MSK chain.
//!
//! Sans-IO and allocation-free: the caller runs TLS and passes the exported seed in. No key
//! material reaches `Debug` output or logs.

use hmac::{Hmac, KeyInit, Mac};
use sha2_0_11::{Sha256, Sha384};
use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroize;

use crate::eap::method;
use crate::tlv::CryptoBinding;

/// TLS exporter label for the session_key_seed (RFC 9930 "TEAP Authentication Phase 1: Key
/// Derivations"); export it with no context.
pub const SESSION_KEY_SEED_LABEL: &[u8] = b"EXPORTER: teap session key seed";
/// Length of the exported session_key_seed, which is `S-IMCK[0]`.
pub const SESSION_KEY_SEED_LEN: usize = 40;
/// Length of an Inner Method Session Key.
pub const IMSK_LEN: usize = 32;
/// Length of `S-IMCK[j]`.
pub const S_IMCK_LEN: usize = 40;
/// Length of `CMK[j]`.
pub const CMK_LEN: usize = 20;
/// Length of a Compound-MAC field in the Crypto-Binding TLV.
pub const COMPOUND_MAC_LEN: usize = 20;
/// Length of the TEAP MSK and of the TEAP EMSK.
pub const SESSION_KEY_LEN: usize = 64;

const IMCK_LEN: usize = S_IMCK_LEN + CMK_LEN;
const TEAP_BINDKEY_LABEL: &[u8] = b"TEAPbindkey@ietf.org";
/// The RFC 5295 USRK seed: a 0x00 delimiter (no optional data) and the 2-octet length 64.
const TEAP_BINDKEY_SEED: &[u8] = &[0x00, 0x00, 0x40];
const IMCK_LABEL: &[u8] = b"Inner Methods Compound Keys";
const MSK_LABEL: &[u8] = b"Session Key Generating Function";
const EMSK_LABEL: &[u8] = b"Extended Session Key Generating Function";
const MAX_HASH_LEN: usize = 48;

/// The hash behind the TLS 1.2 PRF and the Compound-MAC HMAC of the negotiated suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrfHash {
    Sha256,
    Sha384,
}

impl PrfHash {
    /// The PRF hash of a TLS 1.2 cipher suite that rustls can negotiate: `*_SHA384` suites use
    /// SHA-384, the other AEAD suites SHA-256. `None` for anything else (TLS 1.3 suites
    /// included), so an unexpected suite fails instead of deriving keys the peer will not.
    pub fn for_cipher_suite(suite: u16) -> Option<PrfHash> {
        match suite {
            // TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            // TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            // TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            0xc02b | 0xc02f | 0xcca8 | 0xcca9 => Some(PrfHash::Sha256),
            // TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
            0xc02c | 0xc030 => Some(PrfHash::Sha384),
            _ => None,
        }
    }

    /// Output length of the hash in octets.
    pub fn output_len(self) -> usize {
        match self {
            PrfHash::Sha256 => 32,
            PrfHash::Sha384 => 48,
        }
    }
}

/// One HMAC output, wiped when dropped because most of them are key material.
struct HmacOutput {
    bytes: [u8; MAX_HASH_LEN],
    len: usize,
}

impl HmacOutput {
    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }
}

impl Drop for HmacOutput {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

fn hmac_parts(hash: PrfHash, key: &[u8], parts: &[&[u8]]) -> HmacOutput {
    let mut output = HmacOutput {
        bytes: [0; MAX_HASH_LEN],
        len: hash.output_len(),
    };
    // HMAC takes keys of any length (RFC 2104), so new_from_slice cannot fail; were it to, the
    // all-zero output fails closed: it matches no peer's MAC and no peer's keys.
    match hash {
        PrfHash::Sha256 => {
            if let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
                parts.iter().for_each(|part| mac.update(part));
                output.bytes[..32].copy_from_slice(&mac.finalize().into_bytes());
            }
        }
        PrfHash::Sha384 => {
            if let Ok(mut mac) = <Hmac<Sha384> as KeyInit>::new_from_slice(key) {
                parts.iter().for_each(|part| mac.update(part));
                output.bytes.copy_from_slice(&mac.finalize().into_bytes());
            }
        }
    }
    output
}

/// TLS 1.2 PRF (RFC 5246 §5): fills `out` with `P_<hash>(secret, label + seed)`. Any output
/// length works; "the first N octets of PRF(...)" is this with an N-octet `out`.
pub fn tls12_prf(hash: PrfHash, secret: &[u8], label: &[u8], seed: &[u8], out: &mut [u8]) {
    // A(1) = HMAC(secret, label + seed); A(i) = HMAC(secret, A(i-1)).
    let mut a = hmac_parts(hash, secret, &[label, seed]);
    let mut chunks = out.chunks_mut(hash.output_len()).peekable();
    while let Some(chunk) = chunks.next() {
        let block = hmac_parts(hash, secret, &[a.as_slice(), label, seed]);
        let block = block.as_slice();
        chunk.copy_from_slice(block.get(..chunk.len()).unwrap_or(block));
        if chunks.peek().is_some() {
            a = hmac_parts(hash, secret, &[a.as_slice()]);
        }
    }
}

/// Why a Crypto-Binding TLV was refused or no Compound-MAC could be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No inner round has been run yet, so there is no CMK; call
    /// [`KeySchedule::next_round`] (with `(None, None)` when there is no inner method).
    #[error("no inner method round has been run, so there is no CMK for a Compound-MAC")]
    NoInnerRound,
    /// Flags is not 1 (EMSK MAC), 2 (MSK MAC) or 3 (both).
    #[error("Crypto-Binding Flags {0} names neither an EMSK nor an MSK Compound-MAC")]
    BadFlags(u8),
    /// The peer sent an EMSK Compound-MAC but no inner method so far gave an EMSK.
    #[error("Crypto-Binding has an EMSK Compound-MAC but no inner method derived an EMSK")]
    UnexpectedEmskMac,
    /// The EMSK Compound-MAC did not verify (RFC 9930 error 2007).
    #[error("the EMSK Compound-MAC does not verify")]
    EmskMacMismatch,
    /// The MSK Compound-MAC did not verify (RFC 9930 error 2005).
    #[error("the MSK Compound-MAC does not verify")]
    MskMacMismatch,
}

/// The Compound-MACs over one Crypto-Binding TLV. No `PartialEq`: compare received MACs
/// with [`KeySchedule::verify`], which is constant time.
#[derive(Clone)]
pub struct CompoundMacs {
    /// Present when the current round's inner method gave an EMSK.
    pub emsk: Option<[u8; COMPOUND_MAC_LEN]>,
    pub msk: [u8; COMPOUND_MAC_LEN],
}

impl std::fmt::Debug for CompoundMacs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompoundMacs")
            .field("emsk", &self.emsk.map(|_| "<redacted>"))
            .field("msk", &"<redacted>")
            .finish()
    }
}

/// The TEAP MSK and EMSK (64 octets each), wiped on drop, redacted in `Debug`.
pub struct SessionKeys {
    pub msk: [u8; SESSION_KEY_LEN],
    pub emsk: [u8; SESSION_KEY_LEN],
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.msk.zeroize();
        self.emsk.zeroize();
    }
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("msk", &"<redacted>")
            .field("emsk", &"<redacted>")
            .finish()
    }
}

/// One chain's state: S-IMCK[j] and CMK[j] (no CMK before the chain's first round).
struct Chain {
    s_imck: [u8; S_IMCK_LEN],
    cmk: Option<[u8; CMK_LEN]>,
}

impl Chain {
    /// IMCK[j] from `imsk`; `keep_s_imck` takes only CMK[j] from it (a round without keys).
    fn advance(&mut self, hash: PrfHash, imsk: &[u8; IMSK_LEN], keep_s_imck: bool) {
        let mut imck = [0; IMCK_LEN];
        tls12_prf(hash, &self.s_imck, IMCK_LABEL, imsk, &mut imck);
        let (s_imck, cmk) = imck.split_at(S_IMCK_LEN);
        if !keep_s_imck {
            self.s_imck.copy_from_slice(s_imck);
        }
        let mut new_cmk = [0; CMK_LEN];
        new_cmk.copy_from_slice(cmk);
        if let Some(old) = self.cmk.as_mut() {
            old.zeroize();
        }
        self.cmk = Some(new_cmk);
        imck.zeroize();
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        self.s_imck.zeroize();
        if let Some(cmk) = self.cmk.as_mut() {
            cmk.zeroize();
        }
    }
}

/// The TEAP key schedule of one conversation, both chains. Create it once the tunnel is up
/// with the exported session_key_seed, call [`next_round`](Self::next_round) after each
/// successful inner method (or once with `(None, None)` when there is none, as hostap does:
/// the Crypto-Binding then has a CMK and the keys still come from the session_key_seed),
/// then sign/verify the Crypto-Binding and take the [`SessionKeys`].
pub struct KeySchedule {
    hash: PrfHash,
    msk_chain: Chain,
    emsk_chain: Chain,
    rounds: usize,
    emsk_in_current_round: bool,
}

impl std::fmt::Debug for KeySchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySchedule")
            .field("hash", &self.hash)
            .field("rounds", &self.rounds)
            .field("emsk_in_current_round", &self.emsk_in_current_round)
            .field("emsk_chain_keyed", &self.emsk_chain.cmk.is_some())
            .finish_non_exhaustive()
    }
}

impl KeySchedule {
    /// `S-IMCK[0] = session_key_seed` for both chains.
    pub fn new(hash: PrfHash, session_key_seed: &[u8; SESSION_KEY_SEED_LEN]) -> KeySchedule {
        KeySchedule {
            hash,
            msk_chain: Chain {
                s_imck: *session_key_seed,
                cmk: None,
            },
            emsk_chain: Chain {
                s_imck: *session_key_seed,
                cmk: None,
            },
            rounds: 0,
            emsk_in_current_round: false,
        }
    }

    /// The hash this schedule was created with.
    pub fn hash(&self) -> PrfHash {
        self.hash
    }

    /// How many inner rounds have been run.
    pub fn rounds(&self) -> usize {
        self.rounds
    }

    /// Whether the current round's inner method gave an EMSK, i.e. whether this side sends an
    /// EMSK Compound-MAC now.
    pub fn emsk_in_current_round(&self) -> bool {
        self.emsk_in_current_round
    }

    /// One successful inner method, round j. The MSK chain takes the method's MSK truncated or
    /// zero-padded to 32 octets; the EMSK chain advances only when the method gave an EMSK.
    /// Empty keys count as absent.
    ///
    /// `(None, None)` (no inner method, Basic-Password-Auth) is a binding-only round: `CMK[j]`
    /// comes from the all-zero IMSK but S-IMCK stays as it was, so when no method made keys the
    /// MSK/EMSK are "generated directly from the session_key_seed" (RFC 9930, "EAP Master
    /// Session Key Generation"). hostap 2.10's server and peer do exactly this (its traces: CMK
    /// from the zero-IMSK IMCK, MSK from `S-IMCK[0]`). FreeRADIUS 3.2 instead advances S-IMCK
    /// with the zero IMSK; the Crypto-Binding cannot tell the two apart (same CMK), only the
    /// MSK differs.
    pub fn next_round(&mut self, inner_msk: Option<&[u8]>, inner_emsk: Option<&[u8]>) {
        let inner_msk = inner_msk.filter(|msk| !msk.is_empty());
        let inner_emsk = inner_emsk.filter(|emsk| !emsk.is_empty());
        let binding_only = inner_msk.is_none() && inner_emsk.is_none();
        self.round(inner_msk, inner_emsk, binding_only);
    }

    /// One successful inner *EAP* method, round j: like [`next_round`](Self::next_round), but
    /// the MSK chain's S-IMCK always advances, with the all-zero IMSK when the method exported
    /// no MSK (EAP-GTC, RFC 3748 §5.6, makes no keys). RFC 9930 "Generating the Inner Method
    /// Session Key": "If inner method does not provide either MSK or EMSK ... then both MSK and
    /// IMSK[j] are set to all zeroes", and `S-IMCK[j]` is the first 40 octets of `IMCK[j]`.
    /// hostap 2.10 does this for an inner EAP method without keys on both sides
    /// (`eap_teap_derive_imck` with no MSK writes S-IMCK), and keeps S-IMCK only for
    /// Basic-Password-Auth and no inner method, which is what `next_round(None, None)` does.
    pub fn next_method_round(&mut self, inner_msk: Option<&[u8]>, inner_emsk: Option<&[u8]>) {
        let inner_msk = inner_msk.filter(|msk| !msk.is_empty());
        let inner_emsk = inner_emsk.filter(|emsk| !emsk.is_empty());
        self.round(inner_msk, inner_emsk, false);
    }

    fn round(&mut self, inner_msk: Option<&[u8]>, inner_emsk: Option<&[u8]>, keep_s_imck: bool) {
        let hash = self.hash;
        let mut msk_imsk = [0; IMSK_LEN];
        if let Some(msk) = inner_msk {
            msk_imsk
                .iter_mut()
                .zip(msk)
                .for_each(|(imsk_octet, msk_octet)| *imsk_octet = *msk_octet);
        }
        self.msk_chain.advance(hash, &msk_imsk, keep_s_imck);
        msk_imsk.zeroize();

        self.emsk_in_current_round = false;
        if let Some(emsk) = inner_emsk {
            let mut emsk_imsk = [0; IMSK_LEN];
            tls12_prf(
                hash,
                emsk,
                TEAP_BINDKEY_LABEL,
                TEAP_BINDKEY_SEED,
                &mut emsk_imsk,
            );
            self.emsk_chain.advance(hash, &emsk_imsk, false);
            emsk_imsk.zeroize();
            self.emsk_in_current_round = true;
        }
        self.rounds += 1;
    }

    fn compound_mac(
        &self,
        cmk: &[u8; CMK_LEN],
        binding_tlv: &[u8],
        server_outer_tlvs: &[u8],
        peer_outer_tlvs: &[u8],
    ) -> [u8; COMPOUND_MAC_LEN] {
        let full = hmac_parts(
            self.hash,
            cmk,
            &[
                binding_tlv,
                &[method::TEAP],
                server_outer_tlvs,
                peer_outer_tlvs,
            ],
        );
        let mut mac = [0; COMPOUND_MAC_LEN];
        mac.iter_mut()
            .zip(full.as_slice())
            .for_each(|(out, octet)| *out = *octet);
        mac
    }

    /// The Compound-MACs over `binding` (its MAC fields are ignored: the input has them
    /// zeroed, its Flags are used as they are). `server_outer_tlvs` / `peer_outer_tlvs`: all
    /// Outer TLVs of the first server / first peer TEAP message, in the order sent. The EMSK
    /// MAC is computed only when the current round gave an EMSK (RFC 9930 "Unintended Side
    /// Effects").
    pub fn compound_macs(
        &self,
        binding: &CryptoBinding,
        server_outer_tlvs: &[u8],
        peer_outer_tlvs: &[u8],
    ) -> Result<CompoundMacs, KeyError> {
        let msk_cmk = self.msk_chain.cmk.as_ref().ok_or(KeyError::NoInnerRound)?;
        let binding_tlv = binding.tlv_with_macs_zeroed();
        let msk = self.compound_mac(msk_cmk, &binding_tlv, server_outer_tlvs, peer_outer_tlvs);
        let emsk = match (&self.emsk_chain.cmk, self.emsk_in_current_round) {
            (Some(emsk_cmk), true) => {
                Some(self.compound_mac(emsk_cmk, &binding_tlv, server_outer_tlvs, peer_outer_tlvs))
            }
            _ => None,
        };
        Ok(CompoundMacs { emsk, msk })
    }

    /// Completes a Crypto-Binding this side sends: sets Flags (3 when the current round gave
    /// an EMSK, else 2) and fills both Compound-MAC fields (the EMSK one zero when absent).
    /// Version, Received-Ver, Sub-Type and Nonce are the caller's.
    pub fn sign_binding(
        &self,
        binding: &mut CryptoBinding,
        server_outer_tlvs: &[u8],
        peer_outer_tlvs: &[u8],
    ) -> Result<(), KeyError> {
        if self.msk_chain.cmk.is_none() {
            return Err(KeyError::NoInnerRound);
        }
        binding.flags = if self.emsk_in_current_round {
            CryptoBinding::FLAG_EMSK | CryptoBinding::FLAG_MSK
        } else {
            CryptoBinding::FLAG_MSK
        };
        let macs = self.compound_macs(binding, server_outer_tlvs, peer_outer_tlvs)?;
        binding.msk_compound_mac = macs.msk;
        binding.emsk_compound_mac = macs.emsk.unwrap_or([0; COMPOUND_MAC_LEN]);
        Ok(())
    }

    /// Checks the Compound-MACs the other side sent, in constant time: each MAC its Flags
    /// announce must verify. An EMSK MAC is checked with the EMSK chain's latest CMK (carried
    /// forward through rounds without an EMSK); it is refused when no round ever gave an
    /// EMSK. An MSK-only binding is accepted even when an EMSK exists (the RFC leaves that
    /// downgrade to policy; hostap accepts it). Version, Received-Ver, Sub-Type and Nonce
    /// checks are the caller's.
    pub fn verify(
        &self,
        peer_binding: &CryptoBinding,
        server_outer_tlvs: &[u8],
        peer_outer_tlvs: &[u8],
    ) -> Result<(), KeyError> {
        let msk_cmk = self.msk_chain.cmk.as_ref().ok_or(KeyError::NoInnerRound)?;
        let flags = peer_binding.flags;
        let (wants_emsk, wants_msk) = match flags {
            CryptoBinding::FLAG_EMSK => (true, false),
            CryptoBinding::FLAG_MSK => (false, true),
            f if f == CryptoBinding::FLAG_EMSK | CryptoBinding::FLAG_MSK => (true, true),
            other => return Err(KeyError::BadFlags(other)),
        };
        let binding_tlv = peer_binding.tlv_with_macs_zeroed();
        let msk_ok: Choice = if wants_msk {
            let expected =
                self.compound_mac(msk_cmk, &binding_tlv, server_outer_tlvs, peer_outer_tlvs);
            expected.ct_eq(&peer_binding.msk_compound_mac)
        } else {
            Choice::from(1)
        };
        let emsk_ok: Choice = if wants_emsk {
            let emsk_cmk = self
                .emsk_chain
                .cmk
                .as_ref()
                .ok_or(KeyError::UnexpectedEmskMac)?;
            let expected =
                self.compound_mac(emsk_cmk, &binding_tlv, server_outer_tlvs, peer_outer_tlvs);
            expected.ct_eq(&peer_binding.emsk_compound_mac)
        } else {
            Choice::from(1)
        };
        if !bool::from(emsk_ok) {
            return Err(KeyError::EmskMacMismatch);
        }
        if !bool::from(msk_ok) {
            return Err(KeyError::MskMacMismatch);
        }
        Ok(())
    }

    /// Whether the final keys come from the EMSK chain for this (verified) peer binding: its
    /// Flags announce an EMSK Compound-MAC and some round gave an EMSK.
    pub fn binding_uses_emsk_chain(&self, peer_binding: &CryptoBinding) -> bool {
        peer_binding.flags & CryptoBinding::FLAG_EMSK != 0 && self.emsk_chain.cmk.is_some()
    }

    /// The TEAP MSK and EMSK from `S-IMCK[n]` of the EMSK chain (`use_emsk_chain`, when the
    /// peer's Crypto-Binding carried an EMSK MAC, see
    /// [`binding_uses_emsk_chain`](Self::binding_uses_emsk_chain)) or of the MSK chain. The EMSK
    /// chain is only taken when some round gave an EMSK. hostap 2.10 always takes the MSK
    /// chain, which differs only after an inner method with an EMSK. With no rounds both
    /// chains are the
    /// session_key_seed (RFC 9930 "EAP Master Session Key Generation").
    pub fn session_keys(&self, use_emsk_chain: bool) -> SessionKeys {
        let chain = if use_emsk_chain && self.emsk_chain.cmk.is_some() {
            &self.emsk_chain
        } else {
            &self.msk_chain
        };
        let mut keys = SessionKeys {
            msk: [0; SESSION_KEY_LEN],
            emsk: [0; SESSION_KEY_LEN],
        };
        tls12_prf(self.hash, &chain.s_imck, MSK_LABEL, &[], &mut keys.msk);
        tls12_prf(self.hash, &chain.s_imck, EMSK_LABEL, &[], &mut keys.emsk);
        keys
    }
}

#[cfg(test)]
mod tests;
