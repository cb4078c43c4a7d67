//! The TEAP TLV codec (RFC 9930 §4.2).
//!
//! Each TLV is `M(1) R(1) Type(14) | Length(16) | Value`; Length counts the value only. The R
//! bit is reserved: sent as zero, ignored on receipt.
//!
//! - [`parse_tlvs`] decodes a sequence into [`Tlv`]s within [`Limits`] (total octets, count).
//!   An unknown TLV with M=0 is skipped; an unknown TLV with M=1 is reported in
//!   [`ParsedTlvs::unsupported_mandatory`], and the caller answers it with [`nak_for`].
//! - Types with a simple value are typed; nested TLV lists (NAK, Request-Action,
//!   Intermediate-Result, Vendor-Specific, Trusted-Server-Root) stay raw octets because peers
//!   put non-TLV content there (one fork sends a bare 2-octet type inside Request-Action);
//!   decode them with [`parse_tlvs`] when needed.

/// M bit: the TLV must be understood.
pub const MANDATORY: u16 = 0x8000;
/// R bit: reserved.
pub const RESERVED: u16 = 0x4000;
/// The 14-bit type.
pub const TYPE_MASK: u16 = 0x3fff;
/// Type (2) and Length (2).
pub const HEADER_LEN: usize = 4;
/// Length of a Crypto-Binding TLV value (RFC 9930 §4.2.13).
pub const CRYPTO_BINDING_VALUE_LEN: usize = 76;

/// TLV type numbers (RFC 9930 §4.2).
pub mod tlv_type {
    pub const AUTHORITY_ID: u16 = 1;
    pub const IDENTITY_TYPE: u16 = 2;
    pub const RESULT: u16 = 3;
    pub const NAK: u16 = 4;
    pub const ERROR: u16 = 5;
    pub const CHANNEL_BINDING: u16 = 6;
    pub const VENDOR_SPECIFIC: u16 = 7;
    pub const REQUEST_ACTION: u16 = 8;
    pub const EAP_PAYLOAD: u16 = 9;
    pub const INTERMEDIATE_RESULT: u16 = 10;
    pub const PAC: u16 = 11;
    pub const CRYPTO_BINDING: u16 = 12;
    pub const BASIC_PASSWORD_AUTH_REQ: u16 = 13;
    pub const BASIC_PASSWORD_AUTH_RESP: u16 = 14;
    pub const PKCS7: u16 = 15;
    pub const PKCS10: u16 = 16;
    pub const TRUSTED_SERVER_ROOT: u16 = 17;
    pub const CSR_ATTRIBUTES: u16 = 18;
    pub const IDENTITY_HINT: u16 = 19;
}

/// Error TLV codes the gateway sends (RFC 9930 §4.2.6).
pub mod error_code {
    pub const CLIENT_CERT_NOT_SUPPLIED: u32 = 1019;
    pub const CLIENT_CERT_REJECTED: u32 = 1020;
    pub const UNSUPPORTED_ALGORITHM_IN_CSR: u32 = 1022;
    pub const UNSUPPORTED_EXTENSION_IN_CSR: u32 = 1023;
    pub const BAD_IDENTITY_IN_CSR: u32 = 1024;
    pub const BAD_CSR: u32 = 1025;
    pub const INTERNAL_CA_ERROR: u32 = 1026;
    pub const GENERAL_PKI_ERROR: u32 = 1027;
    /// "Inner method not supported" (added by RFC 9930): the peer refused the proposed method.
    pub const INNER_METHOD_NOT_SUPPORTED: u32 = 1032;
    pub const TUNNEL_COMPROMISE: u32 = 2001;
    pub const UNEXPECTED_TLVS_EXCHANGED: u32 = 2002;
}

/// Why a CSR carried in a PKCS#10 TLV was refused; each class has its own Error TLV code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CsrErrorClass {
    UnsupportedAlgorithm,
    UnsupportedExtension,
    BadIdentity,
    BadCsr,
    InternalCaError,
}

impl CsrErrorClass {
    /// The Error TLV code for this class (1022..=1026).
    pub fn error_code(self) -> u32 {
        match self {
            Self::UnsupportedAlgorithm => error_code::UNSUPPORTED_ALGORITHM_IN_CSR,
            Self::UnsupportedExtension => error_code::UNSUPPORTED_EXTENSION_IN_CSR,
            Self::BadIdentity => error_code::BAD_IDENTITY_IN_CSR,
            Self::BadCsr => error_code::BAD_CSR,
            Self::InternalCaError => error_code::INTERNAL_CA_ERROR,
        }
    }

    /// The Error TLV for this class.
    pub fn error_tlv(self) -> Tlv {
        Tlv::Error(self.error_code())
    }
}

/// Limits applied by [`parse_tlvs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_total_len: usize,
    pub max_count: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_total_len: 64 * 1024,
            max_count: 64,
        }
    }
}

/// Everything that can be wrong with a TLV sequence or a value to encode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlvError {
    #[error("TLV sequence of {len} octets exceeds the {max}-octet limit")]
    SequenceTooLong { len: usize, max: usize },
    #[error("TLV sequence holds more than {max} TLVs")]
    TooManyTlvs { max: usize },
    #[error("TLV at offset {offset} has only {remaining} of its 4 header octets")]
    TruncatedHeader { offset: usize, remaining: usize },
    #[error(
        "TLV type {tlv_type} at offset {offset} declares {length} value octets but {remaining} remain"
    )]
    ValueOverrun {
        offset: usize,
        tlv_type: u16,
        length: usize,
        remaining: usize,
    },
    #[error("TLV type {tlv_type} value is malformed: {reason}")]
    BadValue { tlv_type: u16, reason: &'static str },
    #[error("TLV type {tlv_type} value of {len} octets exceeds 65535")]
    ValueTooLong { tlv_type: u16, len: usize },
}

/// Status of Result, Intermediate-Result and Request-Action TLVs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Success,
    Failure,
}

impl Status {
    fn from_u16(value: u16, tlv_type: u16) -> Result<Self, TlvError> {
        match value {
            1 => Ok(Self::Success),
            2 => Ok(Self::Failure),
            _ => Err(TlvError::BadValue {
                tlv_type,
                reason: "status is neither 1 (Success) nor 2 (Failure)",
            }),
        }
    }

    fn to_u16(self) -> u16 {
        match self {
            Self::Success => 1,
            Self::Failure => 2,
        }
    }
}

/// Request-Action's Action field (RFC 9930 §4.2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    ProcessTlv,
    NegotiateEap,
}

/// Crypto-Binding TLV value (RFC 9930 §4.2.13): Reserved, Version, Received-Ver,
/// `Flags << 4 | Sub-Type`, Nonce (32), EMSK Compound MAC (20), MSK Compound MAC (20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoBinding {
    pub reserved: u8,
    pub version: u8,
    pub received_version: u8,
    /// 1 = EMSK MAC present, 2 = MSK MAC present, 3 = both (4 bits).
    pub flags: u8,
    /// 0 = Binding Request, 1 = Binding Response (4 bits).
    pub sub_type: u8,
    pub nonce: [u8; 32],
    pub emsk_compound_mac: [u8; 20],
    pub msk_compound_mac: [u8; 20],
}

impl CryptoBinding {
    pub const SUB_TYPE_REQUEST: u8 = 0;
    pub const SUB_TYPE_RESPONSE: u8 = 1;
    pub const FLAG_EMSK: u8 = 1;
    pub const FLAG_MSK: u8 = 2;

    fn parse(value: &[u8]) -> Result<Self, TlvError> {
        let bad = |reason| TlvError::BadValue {
            tlv_type: tlv_type::CRYPTO_BINDING,
            reason,
        };
        let fixed: &[u8; CRYPTO_BINDING_VALUE_LEN] = value
            .try_into()
            .map_err(|_| bad("Crypto-Binding value is not 76 octets"))?;
        let mut nonce = [0; 32];
        nonce.copy_from_slice(&fixed[4..36]);
        let mut emsk_compound_mac = [0; 20];
        emsk_compound_mac.copy_from_slice(&fixed[36..56]);
        let mut msk_compound_mac = [0; 20];
        msk_compound_mac.copy_from_slice(&fixed[56..76]);
        Ok(Self {
            reserved: fixed[0],
            version: fixed[1],
            received_version: fixed[2],
            flags: fixed[3] >> 4,
            sub_type: fixed[3] & 0x0f,
            nonce,
            emsk_compound_mac,
            msk_compound_mac,
        })
    }

    fn encode_value(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CRYPTO_BINDING_VALUE_LEN);
        out.extend_from_slice(&[
            self.reserved,
            self.version,
            self.received_version,
            (self.flags << 4) | (self.sub_type & 0x0f),
        ]);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.emsk_compound_mac);
        out.extend_from_slice(&self.msk_compound_mac);
        out
    }

    /// The whole TLV (mandatory header, Length 76, value) with both Compound-MAC fields
    /// zeroed: the first part of the Compound-MAC input (RFC 9930 "Computing the Compound-MAC").
    pub fn tlv_with_macs_zeroed(&self) -> [u8; 4 + CRYPTO_BINDING_VALUE_LEN] {
        let mut out = [0; 4 + CRYPTO_BINDING_VALUE_LEN];
        let [type_hi, type_lo] = (tlv_type::CRYPTO_BINDING | MANDATORY).to_be_bytes();
        let [len_hi, len_lo] = (CRYPTO_BINDING_VALUE_LEN as u16).to_be_bytes();
        let header_and_fields = [
            type_hi,
            type_lo,
            len_hi,
            len_lo,
            self.reserved,
            self.version,
            self.received_version,
            (self.flags << 4) | (self.sub_type & 0x0f),
        ];
        let (head, rest) = out.split_at_mut(header_and_fields.len());
        head.copy_from_slice(&header_and_fields);
        let (nonce, _zeroed_macs) = rest.split_at_mut(self.nonce.len());
        nonce.copy_from_slice(&self.nonce);
        out
    }
}

/// One TEAP TLV. Nested TLV lists are raw octets (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tlv {
    AuthorityId(Vec<u8>),
    /// 1 = User, 2 = Machine.
    IdentityType(u16),
    Result(Status),
    Nak {
        vendor_id: u32,
        nak_type: u16,
        tlvs: Vec<u8>,
    },
    Error(u32),
    ChannelBinding {
        mandatory: bool,
        value: Vec<u8>,
    },
    VendorSpecific {
        mandatory: bool,
        vendor_id: u32,
        tlvs: Vec<u8>,
    },
    RequestAction {
        status: Status,
        action: Action,
        tlvs: Vec<u8>,
    },
    /// A full EAP packet, optionally followed by TLVs.
    EapPayload(Vec<u8>),
    IntermediateResult {
        status: Status,
        tlvs: Vec<u8>,
    },
    /// Deprecated; answered with Result=Failure and Error 2002.
    Pac(Vec<u8>),
    CryptoBinding(CryptoBinding),
    /// The prompt (may be empty).
    BasicPasswordAuthReq(Vec<u8>),
    BasicPasswordAuthResp {
        username: Vec<u8>,
        password: Vec<u8>,
    },
    Pkcs7(Vec<u8>),
    Pkcs10(Vec<u8>),
    TrustedServerRoot {
        credential_format: u16,
        tlvs: Vec<u8>,
    },
    CsrAttributes(Vec<u8>),
    IdentityHint(Vec<u8>),
}

/// The result of [`parse_tlvs`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedTlvs {
    pub tlvs: Vec<Tlv>,
    /// Types of unknown TLVs that had M=1, in order; answer the first with [`nak_for`].
    pub unsupported_mandatory: Vec<u16>,
    /// Types of unknown TLVs with M=0 that were skipped.
    pub skipped_optional: Vec<u16>,
}

/// The NAK TLV answering an unsupported mandatory TLV of `tlv_type` (vendor id 0: IETF).
pub fn nak_for(tlv_type: u16) -> Tlv {
    Tlv::Nak {
        vendor_id: 0,
        nak_type: tlv_type & TYPE_MASK,
        tlvs: Vec::new(),
    }
}

/// Parses a sequence of TLVs, enforcing `limits`.
pub fn parse_tlvs(buf: &[u8], limits: Limits) -> Result<ParsedTlvs, TlvError> {
    if buf.len() > limits.max_total_len {
        return Err(TlvError::SequenceTooLong {
            len: buf.len(),
            max: limits.max_total_len,
        });
    }
    let mut parsed = ParsedTlvs::default();
    let mut offset = 0;
    let mut count = 0;
    while offset < buf.len() {
        count += 1;
        if count > limits.max_count {
            return Err(TlvError::TooManyTlvs {
                max: limits.max_count,
            });
        }
        let rest = &buf[offset..];
        let Some((header, after)) = rest.split_first_chunk::<HEADER_LEN>() else {
            return Err(TlvError::TruncatedHeader {
                offset,
                remaining: rest.len(),
            });
        };
        let type_field = u16::from_be_bytes([header[0], header[1]]);
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let tlv_type = type_field & TYPE_MASK;
        let mandatory = type_field & MANDATORY != 0;
        if length > after.len() {
            return Err(TlvError::ValueOverrun {
                offset,
                tlv_type,
                length,
                remaining: after.len(),
            });
        }
        let value = &after[..length];
        match decode_value(tlv_type, mandatory, value)? {
            Some(tlv) => parsed.tlvs.push(tlv),
            None if mandatory => parsed.unsupported_mandatory.push(tlv_type),
            None => parsed.skipped_optional.push(tlv_type),
        }
        offset += HEADER_LEN + length;
    }
    Ok(parsed)
}

fn decode_value(tlv_type: u16, mandatory: bool, value: &[u8]) -> Result<Option<Tlv>, TlvError> {
    use crate::tlv::tlv_type as t;
    let bad = |reason| TlvError::BadValue { tlv_type, reason };
    let exact_u16 = || -> Result<u16, TlvError> {
        let bytes: [u8; 2] = value.try_into().map_err(|_| bad("value is not 2 octets"))?;
        Ok(u16::from_be_bytes(bytes))
    };
    let tlv = match tlv_type {
        t::AUTHORITY_ID => Tlv::AuthorityId(value.to_vec()),
        t::IDENTITY_TYPE => Tlv::IdentityType(exact_u16()?),
        t::RESULT => Tlv::Result(Status::from_u16(exact_u16()?, tlv_type)?),
        t::NAK => {
            let (vendor, rest) = value
                .split_first_chunk::<4>()
                .ok_or(bad("NAK shorter than Vendor-Id and NAK-Type"))?;
            let (nak_type, tlvs) = rest
                .split_first_chunk::<2>()
                .ok_or(bad("NAK shorter than Vendor-Id and NAK-Type"))?;
            Tlv::Nak {
                vendor_id: u32::from_be_bytes(*vendor),
                nak_type: u16::from_be_bytes(*nak_type),
                tlvs: tlvs.to_vec(),
            }
        }
        t::ERROR => {
            let bytes: [u8; 4] = value
                .try_into()
                .map_err(|_| bad("Error code is not 4 octets"))?;
            Tlv::Error(u32::from_be_bytes(bytes))
        }
        t::CHANNEL_BINDING => Tlv::ChannelBinding {
            mandatory,
            value: value.to_vec(),
        },
        t::VENDOR_SPECIFIC => {
            let (vendor, tlvs) = value
                .split_first_chunk::<4>()
                .ok_or(bad("Vendor-Specific shorter than its Vendor-Id"))?;
            Tlv::VendorSpecific {
                mandatory,
                vendor_id: u32::from_be_bytes(*vendor),
                tlvs: tlvs.to_vec(),
            }
        }
        t::REQUEST_ACTION => {
            let [status, action, tlvs @ ..] = value else {
                return Err(bad("Request-Action shorter than Status and Action"));
            };
            let action = match action {
                1 => Action::ProcessTlv,
                2 => Action::NegotiateEap,
                _ => return Err(bad("Action is neither 1 nor 2")),
            };
            Tlv::RequestAction {
                status: Status::from_u16(u16::from(*status), tlv_type)?,
                action,
                tlvs: tlvs.to_vec(),
            }
        }
        t::EAP_PAYLOAD => Tlv::EapPayload(value.to_vec()),
        t::INTERMEDIATE_RESULT => {
            let (status, tlvs) = value
                .split_first_chunk::<2>()
                .ok_or(bad("Intermediate-Result shorter than its Status"))?;
            Tlv::IntermediateResult {
                status: Status::from_u16(u16::from_be_bytes(*status), tlv_type)?,
                tlvs: tlvs.to_vec(),
            }
        }
        t::PAC => Tlv::Pac(value.to_vec()),
        t::CRYPTO_BINDING => Tlv::CryptoBinding(CryptoBinding::parse(value)?),
        t::BASIC_PASSWORD_AUTH_REQ => Tlv::BasicPasswordAuthReq(value.to_vec()),
        t::BASIC_PASSWORD_AUTH_RESP => {
            let (&user_len, rest) = value.split_first().ok_or(bad("missing Userlen"))?;
            let user_len = usize::from(user_len);
            if rest.len() <= user_len {
                return Err(bad("Username overruns the value or Passlen is missing"));
            }
            let (username, rest) = rest.split_at(user_len);
            let (&pass_len, password) = rest.split_first().ok_or(bad("missing Passlen"))?;
            if password.len() != usize::from(pass_len) {
                return Err(bad("Passlen does not match the remaining octets"));
            }
            Tlv::BasicPasswordAuthResp {
                username: username.to_vec(),
                password: password.to_vec(),
            }
        }
        t::PKCS7 => Tlv::Pkcs7(value.to_vec()),
        t::PKCS10 => Tlv::Pkcs10(value.to_vec()),
        t::TRUSTED_SERVER_ROOT => {
            let (format, tlvs) = value.split_first_chunk::<2>().ok_or(bad(
                "Trusted-Server-Root shorter than its Credential-Format",
            ))?;
            Tlv::TrustedServerRoot {
                credential_format: u16::from_be_bytes(*format),
                tlvs: tlvs.to_vec(),
            }
        }
        t::CSR_ATTRIBUTES => Tlv::CsrAttributes(value.to_vec()),
        t::IDENTITY_HINT => Tlv::IdentityHint(value.to_vec()),
        _ => return Ok(None),
    };
    Ok(Some(tlv))
}

impl Tlv {
    /// The 14-bit type number.
    pub fn tlv_type(&self) -> u16 {
        use tlv_type as t;
        match self {
            Self::AuthorityId(_) => t::AUTHORITY_ID,
            Self::IdentityType(_) => t::IDENTITY_TYPE,
            Self::Result(_) => t::RESULT,
            Self::Nak { .. } => t::NAK,
            Self::Error(_) => t::ERROR,
            Self::ChannelBinding { .. } => t::CHANNEL_BINDING,
            Self::VendorSpecific { .. } => t::VENDOR_SPECIFIC,
            Self::RequestAction { .. } => t::REQUEST_ACTION,
            Self::EapPayload(_) => t::EAP_PAYLOAD,
            Self::IntermediateResult { .. } => t::INTERMEDIATE_RESULT,
            Self::Pac(_) => t::PAC,
            Self::CryptoBinding(_) => t::CRYPTO_BINDING,
            Self::BasicPasswordAuthReq(_) => t::BASIC_PASSWORD_AUTH_REQ,
            Self::BasicPasswordAuthResp { .. } => t::BASIC_PASSWORD_AUTH_RESP,
            Self::Pkcs7(_) => t::PKCS7,
            Self::Pkcs10(_) => t::PKCS10,
            Self::TrustedServerRoot { .. } => t::TRUSTED_SERVER_ROOT,
            Self::CsrAttributes(_) => t::CSR_ATTRIBUTES,
            Self::IdentityHint(_) => t::IDENTITY_HINT,
        }
    }

    /// The M bit this TLV is sent with (RFC 9930 §4.2 per-TLV definitions).
    pub fn mandatory(&self) -> bool {
        match self {
            Self::ChannelBinding { mandatory, .. } | Self::VendorSpecific { mandatory, .. } => {
                *mandatory
            }
            Self::AuthorityId(_)
            | Self::Pac(_)
            | Self::Pkcs7(_)
            | Self::Pkcs10(_)
            | Self::TrustedServerRoot { .. }
            | Self::CsrAttributes(_)
            | Self::IdentityHint(_) => false,
            _ => true,
        }
    }

    fn encode_value(&self) -> Result<Vec<u8>, TlvError> {
        let with_prefix = |prefix: &[u8], rest: &[u8]| [prefix, rest].concat();
        Ok(match self {
            Self::AuthorityId(v)
            | Self::EapPayload(v)
            | Self::Pac(v)
            | Self::BasicPasswordAuthReq(v)
            | Self::Pkcs7(v)
            | Self::Pkcs10(v)
            | Self::CsrAttributes(v)
            | Self::IdentityHint(v)
            | Self::ChannelBinding { value: v, .. } => v.clone(),
            Self::IdentityType(v) => v.to_be_bytes().to_vec(),
            Self::Result(status) => status.to_u16().to_be_bytes().to_vec(),
            Self::Nak {
                vendor_id,
                nak_type,
                tlvs,
            } => with_prefix(
                &[vendor_id.to_be_bytes().as_slice(), &nak_type.to_be_bytes()].concat(),
                tlvs,
            ),
            Self::Error(code) => code.to_be_bytes().to_vec(),
            Self::VendorSpecific {
                vendor_id, tlvs, ..
            } => with_prefix(&vendor_id.to_be_bytes(), tlvs),
            Self::RequestAction {
                status,
                action,
                tlvs,
            } => {
                let action = match action {
                    Action::ProcessTlv => 1,
                    Action::NegotiateEap => 2,
                };
                // Status values are 1 and 2, so the low octet carries them.
                with_prefix(&[status.to_u16() as u8, action], tlvs)
            }
            Self::IntermediateResult { status, tlvs } => {
                with_prefix(&status.to_u16().to_be_bytes(), tlvs)
            }
            Self::CryptoBinding(binding) => binding.encode_value(),
            Self::BasicPasswordAuthResp { username, password } => {
                let too_long = || TlvError::BadValue {
                    tlv_type: tlv_type::BASIC_PASSWORD_AUTH_RESP,
                    reason: "username or password exceeds 255 octets",
                };
                let user_len = u8::try_from(username.len()).map_err(|_| too_long())?;
                let pass_len = u8::try_from(password.len()).map_err(|_| too_long())?;
                [&[user_len][..], username, &[pass_len], password].concat()
            }
            Self::TrustedServerRoot {
                credential_format,
                tlvs,
            } => with_prefix(&credential_format.to_be_bytes(), tlvs),
        })
    }

    /// The raw nested TLV list of a NAK, Vendor-Specific, Request-Action, Intermediate-Result
    /// or Trusted-Server-Root TLV; `None` for types without one.
    pub fn nested_tlv_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Nak { tlvs, .. }
            | Self::VendorSpecific { tlvs, .. }
            | Self::RequestAction { tlvs, .. }
            | Self::IntermediateResult { tlvs, .. }
            | Self::TrustedServerRoot { tlvs, .. } => Some(tlvs),
            _ => None,
        }
    }

    /// Decodes the nested TLV list (see [`Tlv::nested_tlv_bytes`]) within `limits`.
    pub fn parse_nested(&self, limits: Limits) -> Option<Result<ParsedTlvs, TlvError>> {
        self.nested_tlv_bytes()
            .map(|bytes| parse_tlvs(bytes, limits))
    }

    /// Appends the encoded TLV (header and value) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), TlvError> {
        let value = self.encode_value()?;
        let tlv_type = self.tlv_type();
        let length = u16::try_from(value.len()).map_err(|_| TlvError::ValueTooLong {
            tlv_type,
            len: value.len(),
        })?;
        let type_field = if self.mandatory() {
            tlv_type | MANDATORY
        } else {
            tlv_type
        };
        out.extend_from_slice(&type_field.to_be_bytes());
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&value);
        Ok(())
    }

    /// The encoded TLV.
    pub fn encode(&self) -> Result<Vec<u8>, TlvError> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }
}

/// Encodes TLVs back to back.
pub fn encode_tlvs(tlvs: &[Tlv]) -> Result<Vec<u8>, TlvError> {
    let mut out = Vec::new();
    for tlv in tlvs {
        tlv.encode_into(&mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_tlv() -> Vec<Tlv> {
        vec![
            Tlv::AuthorityId(vec![0xde, 0xad]),
            Tlv::IdentityType(2),
            Tlv::Result(Status::Success),
            Tlv::Result(Status::Failure),
            Tlv::Nak {
                vendor_id: 0,
                nak_type: 77,
                tlvs: vec![0, 3, 0, 0],
            },
            Tlv::Error(error_code::BAD_CSR),
            Tlv::ChannelBinding {
                mandatory: false,
                value: vec![1, 2],
            },
            Tlv::VendorSpecific {
                mandatory: true,
                vendor_id: 311,
                tlvs: vec![],
            },
            Tlv::RequestAction {
                status: Status::Failure,
                action: Action::ProcessTlv,
                tlvs: vec![0, 16],
            },
            Tlv::EapPayload(vec![2, 1, 0, 5, 1]),
            Tlv::IntermediateResult {
                status: Status::Success,
                tlvs: vec![],
            },
            Tlv::Pac(vec![9]),
            Tlv::CryptoBinding(CryptoBinding {
                reserved: 0,
                version: 1,
                received_version: 1,
                flags: 3,
                sub_type: CryptoBinding::SUB_TYPE_RESPONSE,
                nonce: [7; 32],
                emsk_compound_mac: [8; 20],
                msk_compound_mac: [9; 20],
            }),
            Tlv::BasicPasswordAuthReq(b"Password:".to_vec()),
            Tlv::BasicPasswordAuthResp {
                username: b"alice".to_vec(),
                password: b"".to_vec(),
            },
            Tlv::Pkcs7(vec![0x30, 0]),
            Tlv::Pkcs10(vec![]),
            Tlv::TrustedServerRoot {
                credential_format: 1,
                tlvs: vec![0, 15, 0, 0],
            },
            Tlv::CsrAttributes(vec![0x30, 0]),
            Tlv::IdentityHint(b"host.example".to_vec()),
        ]
    }

    #[test]
    fn every_tlv_type_round_trips() {
        let tlvs = every_tlv();
        let bytes = encode_tlvs(&tlvs).unwrap();
        let parsed = parse_tlvs(&bytes, Limits::default()).unwrap();
        assert_eq!(parsed.tlvs, tlvs);
        assert!(parsed.unsupported_mandatory.is_empty());
        assert!(parsed.skipped_optional.is_empty());
    }

    #[test]
    fn crypto_binding_matches_hostapd_header() {
        // hostapd sends `80 0c 00 4c 00 01 01 20 <nonce>...`: a Crypto-Binding Request with
        // version 1, received version 1, flags 2 (MSK MAC), sub-type 0.
        let mut wire = vec![0x80, 0x0c, 0x00, 0x4c, 0x00, 0x01, 0x01, 0x20];
        wire.extend_from_slice(&[0xaa; 72]);
        let parsed = parse_tlvs(&wire, Limits::default()).unwrap();
        let [Tlv::CryptoBinding(binding)] = parsed.tlvs.as_slice() else {
            panic!("not one Crypto-Binding: {parsed:?}")
        };
        assert_eq!(binding.version, 1);
        assert_eq!(binding.received_version, 1);
        assert_eq!(binding.flags, CryptoBinding::FLAG_MSK);
        assert_eq!(binding.sub_type, CryptoBinding::SUB_TYPE_REQUEST);
        assert_eq!(binding.nonce, [0xaa; 32]);
        assert_eq!(parsed.tlvs[0].encode().unwrap(), wire);
    }

    #[test]
    fn header_bits_and_wire_form() {
        assert_eq!(
            Tlv::Result(Status::Success).encode().unwrap(),
            [0x80, 0x03, 0, 2, 0, 1]
        );
        assert_eq!(Tlv::Pkcs10(vec![]).encode().unwrap(), [0x00, 0x10, 0, 0]);
        // The reserved R bit is ignored on receipt.
        let parsed = parse_tlvs(&[0xc0, 0x03, 0, 2, 0, 2], Limits::default()).unwrap();
        assert_eq!(parsed.tlvs, [Tlv::Result(Status::Failure)]);
    }

    #[test]
    fn unknown_mandatory_is_reported_for_nak_and_unknown_optional_is_skipped() {
        let wire = [
            0x80, 0x40, 0, 1, 0xff, // unknown mandatory type 64
            0x00, 0x41, 0, 0, // unknown optional type 65
            0x80, 0x03, 0, 2, 0, 1, // Result Success
        ];
        let parsed = parse_tlvs(&wire, Limits::default()).unwrap();
        assert_eq!(parsed.tlvs, [Tlv::Result(Status::Success)]);
        assert_eq!(parsed.unsupported_mandatory, [64]);
        assert_eq!(parsed.skipped_optional, [65]);
        let nak = nak_for(parsed.unsupported_mandatory[0]);
        assert_eq!(nak.encode().unwrap(), [0x80, 0x04, 0, 6, 0, 0, 0, 0, 0, 64]);
    }

    #[test]
    fn nested_tlvs_decode_within_limits() {
        let inner = encode_tlvs(&[Tlv::Pkcs10(vec![]), Tlv::CsrAttributes(vec![0x30, 0])]).unwrap();
        let request_action = Tlv::RequestAction {
            status: Status::Success,
            action: Action::ProcessTlv,
            tlvs: inner,
        };
        let nested = request_action
            .parse_nested(Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            nested.tlvs,
            [Tlv::Pkcs10(vec![]), Tlv::CsrAttributes(vec![0x30, 0])]
        );
        let tight = Limits {
            max_total_len: 64 * 1024,
            max_count: 1,
        };
        assert_eq!(
            request_action.parse_nested(tight),
            Some(Err(TlvError::TooManyTlvs { max: 1 }))
        );
        // The fork's bare 2-octet type inside Request-Action is not a TLV list: the outer TLV
        // still parses and only nested decoding reports the truncation.
        let fork = Tlv::RequestAction {
            status: Status::Success,
            action: Action::ProcessTlv,
            tlvs: vec![0x00, 0x10],
        };
        let outer = parse_tlvs(&fork.encode().unwrap(), Limits::default()).unwrap();
        assert_eq!(outer.tlvs, std::slice::from_ref(&fork));
        assert_eq!(
            fork.parse_nested(Limits::default()),
            Some(Err(TlvError::TruncatedHeader {
                offset: 0,
                remaining: 2
            }))
        );
        assert_eq!(
            Tlv::Result(Status::Success).parse_nested(Limits::default()),
            None
        );
    }

    #[test]
    fn csr_error_classes_map_to_1022_through_1026() {
        let classes = [
            (CsrErrorClass::UnsupportedAlgorithm, 1022),
            (CsrErrorClass::UnsupportedExtension, 1023),
            (CsrErrorClass::BadIdentity, 1024),
            (CsrErrorClass::BadCsr, 1025),
            (CsrErrorClass::InternalCaError, 1026),
        ];
        for (class, code) in classes {
            assert_eq!(class.error_code(), code);
            assert_eq!(class.error_tlv(), Tlv::Error(code));
        }
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_total_len: 16,
            max_count: 2,
        };
        assert_eq!(
            parse_tlvs(&[0; 17], limits),
            Err(TlvError::SequenceTooLong { len: 17, max: 16 })
        );
        // Three empty optional Authority-ID TLVs exceed a count of 2.
        assert_eq!(
            parse_tlvs(&[0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0], limits),
            Err(TlvError::TooManyTlvs { max: 2 })
        );
        assert!(parse_tlvs(&vec![0; 64 * 1024 + 1], Limits::default()).is_err());
    }

    #[test]
    fn malformed_values_have_precise_errors() {
        let limits = Limits::default();
        assert_eq!(
            parse_tlvs(&[0x80, 0x03, 0], limits),
            Err(TlvError::TruncatedHeader {
                offset: 0,
                remaining: 3
            })
        );
        assert_eq!(
            parse_tlvs(&[0x80, 0x03, 0, 2, 0], limits),
            Err(TlvError::ValueOverrun {
                offset: 0,
                tlv_type: 3,
                length: 2,
                remaining: 1
            })
        );
        let bad_value = |wire: &[u8], tlv_type| match parse_tlvs(wire, limits) {
            Err(TlvError::BadValue { tlv_type: t, .. }) => assert_eq!(t, tlv_type),
            other => panic!("expected BadValue for {tlv_type}, got {other:?}"),
        };
        bad_value(&[0x80, 0x03, 0, 2, 0, 3], 3); // Result status 3
        bad_value(&[0x80, 0x03, 0, 1, 1], 3); // Result of 1 octet
        bad_value(&[0x80, 0x05, 0, 2, 0, 1], 5); // Error of 2 octets
        bad_value(&[0x80, 0x04, 0, 5, 0, 0, 0, 0, 1], 4); // NAK without full NAK-Type
        bad_value(&[0x80, 0x08, 0, 2, 1, 3], 8); // Request-Action action 3
        bad_value(&[0x80, 0x0a, 0, 1, 1], 10); // Intermediate-Result of 1 octet
        bad_value(&[0x80, 0x0c, 0, 2, 0, 1], 12); // Crypto-Binding too short
        bad_value(&[0x80, 0x0e, 0, 3, 5, b'a', 0], 14); // Userlen overruns
        bad_value(&[0x80, 0x0e, 0, 4, 1, b'a', 2, b'b'], 14); // Passlen mismatch
        bad_value(&[0x00, 0x11, 0, 1, 1], 17); // Trusted-Server-Root too short
        bad_value(&[0x80, 0x07, 0, 3, 0, 0, 0], 7); // Vendor-Specific too short
        let oversized = Tlv::EapPayload(vec![0; 65536]);
        assert_eq!(
            oversized.encode(),
            Err(TlvError::ValueTooLong {
                tlv_type: 9,
                len: 65536
            })
        );
    }

    #[test]
    fn random_bytes_and_all_truncations_never_panic() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let len = (next() % 96) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Bias toward known types and small lengths so value decoders are reached.
            let mut at = 0;
            while at + 4 <= buf.len() {
                buf[at] &= 0x80;
                buf[at + 1] %= 24;
                buf[at + 2] = 0;
                buf[at + 3] %= 24;
                at += 4 + usize::from(buf[at + 3]);
            }
            for cut in 0..=buf.len() {
                let _ = parse_tlvs(&buf[..cut], Limits::default());
            }
        }
        let good = encode_tlvs(&every_tlv()).unwrap();
        for cut in 0..=good.len() {
            let _ = parse_tlvs(&good[..cut], Limits::default());
        }
    }
}
