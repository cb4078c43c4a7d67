//! TEMPORARY stand-in for helper K's `keys` module (branch wt-keys), following the API sketch in
//! the TEAP design brief so `teap_server` compiles and its tests run. Deleted when wt-keys is
//! merged. MSK chain only: no inner method here yields an EMSK.

use std::fmt;

use aws_lc_rs::hmac;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::tlv::{CryptoBinding, Tlv};

/// The hash of the TLS 1.2 PRF, from the negotiated cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrfHash {
    Sha256,
    Sha384,
}

impl PrfHash {
    /// `*_SHA384` TLS 1.2 suites use P_SHA384, the others P_SHA256.
    pub fn for_cipher_suite(suite: u16) -> Option<PrfHash> {
        match suite {
            0xc02c | 0xc030 | 0x009d | 0x009f | 0xc024 | 0xc028 => Some(PrfHash::Sha384),
            0xc02b | 0xc02f | 0xcca8 | 0xcca9 | 0x009c | 0x009e | 0xc023 | 0xc027 => {
                Some(PrfHash::Sha256)
            }
            _ => None,
        }
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            PrfHash::Sha256 => hmac::HMAC_SHA256,
            PrfHash::Sha384 => hmac::HMAC_SHA384,
        }
    }
}

/// Exporter label of the session key seed (no context, 40 octets).
pub const SESSION_KEY_SEED_LABEL: &[u8] = b"EXPORTER: teap session key seed";

/// TLS 1.2 PRF (RFC 5246 §5): P_hash(secret, label || seed).
pub fn tls12_prf(hash: PrfHash, secret: &[u8], label: &[u8], seed: &[u8], out: &mut [u8]) {
    let key = hmac::Key::new(hash.algorithm(), secret);
    let label_seed = [label, seed].concat();
    let mut a = hmac::sign(&key, &label_seed).as_ref().to_vec();
    let mut written = 0;
    while written < out.len() {
        let block = hmac::sign(&key, &[a.as_slice(), &label_seed].concat());
        let take = (out.len() - written).min(block.as_ref().len());
        out[written..written + take].copy_from_slice(&block.as_ref()[..take]);
        written += take;
        a = hmac::sign(&key, &a).as_ref().to_vec();
    }
}

/// Why a peer's Crypto-Binding does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("Crypto-Binding flags {0} name no Compound-MAC this round has")]
    BadFlags(u8),
    #[error("MSK Compound-MAC does not verify")]
    MskMacMismatch,
}

/// The Compound-MACs over one Crypto-Binding TLV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompoundMacs {
    pub emsk: Option<[u8; 20]>,
    pub msk: [u8; 20],
}

/// Final MSK and EMSK.
pub struct SessionKeys {
    pub msk: [u8; 64],
    pub emsk: [u8; 64],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.msk.zeroize();
        self.emsk.zeroize();
    }
}

/// The TEAP inner-method key chain (MSK based).
pub struct KeySchedule {
    hash: PrfHash,
    s_imck: [u8; 40],
    cmk: [u8; 20],
}

impl fmt::Debug for KeySchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySchedule(<redacted>)")
    }
}

impl Drop for KeySchedule {
    fn drop(&mut self) {
        self.s_imck.zeroize();
        self.cmk.zeroize();
    }
}

impl KeySchedule {
    pub fn new(hash: PrfHash, session_key_seed: &[u8; 40]) -> KeySchedule {
        KeySchedule {
            hash,
            s_imck: *session_key_seed,
            cmk: [0; 20],
        }
    }

    pub fn next_round(&mut self, inner_msk: Option<&[u8]>, _inner_emsk: Option<&[u8]>) {
        let mut imsk = [0u8; 32];
        if let Some(msk) = inner_msk {
            let take = msk.len().min(32);
            imsk[..take].copy_from_slice(&msk[..take]);
        }
        let mut imck = [0u8; 60];
        tls12_prf(
            self.hash,
            &self.s_imck,
            b"Inner Methods Compound Keys",
            &imsk,
            &mut imck,
        );
        self.s_imck.copy_from_slice(&imck[..40]);
        self.cmk.copy_from_slice(&imck[40..60]);
        imck.zeroize();
        imsk.zeroize();
    }

    pub fn compound_macs(
        &self,
        binding: &CryptoBinding,
        server_outer_tlvs: &[u8],
        peer_outer_tlvs: &[u8],
    ) -> CompoundMacs {
        let mut zeroed = binding.clone();
        zeroed.emsk_compound_mac = [0; 20];
        zeroed.msk_compound_mac = [0; 20];
        // Encoding a fixed-size Crypto-Binding cannot fail.
        let cb = Tlv::CryptoBinding(zeroed).encode().unwrap_or_default();
        let key = hmac::Key::new(self.hash.algorithm(), &self.cmk);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&cb);
        ctx.update(&[crate::eap::method::TEAP]);
        ctx.update(server_outer_tlvs);
        ctx.update(peer_outer_tlvs);
        let tag = ctx.sign();
        let mut msk = [0u8; 20];
        msk.copy_from_slice(&tag.as_ref()[..20]);
        CompoundMacs { emsk: None, msk }
    }

    pub fn verify(
        &self,
        peer_binding: &CryptoBinding,
        server_outer_tlvs: &[u8],
        peer_outer_tlvs: &[u8],
    ) -> Result<(), KeyError> {
        if peer_binding.flags != CryptoBinding::FLAG_MSK {
            return Err(KeyError::BadFlags(peer_binding.flags));
        }
        let macs = self.compound_macs(peer_binding, server_outer_tlvs, peer_outer_tlvs);
        if bool::from(macs.msk.ct_eq(&peer_binding.msk_compound_mac)) {
            Ok(())
        } else {
            Err(KeyError::MskMacMismatch)
        }
    }

    pub fn session_keys(&self, _use_emsk_chain: bool) -> SessionKeys {
        let mut keys = SessionKeys {
            msk: [0; 64],
            emsk: [0; 64],
        };
        tls12_prf(
            self.hash,
            &self.s_imck,
            b"Session Key Generating Function",
            &[],
            &mut keys.msk,
        );
        tls12_prf(
            self.hash,
            &self.s_imck,
            b"Extended Session Key Generating Function",
            &[],
            &mut keys.emsk,
        );
        keys
    }
}
