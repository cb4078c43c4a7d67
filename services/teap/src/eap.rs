//! A strict EAP packet codec (RFC 3748 §4) with TEAP framing (RFC 9930 §4.1).
//!
//! - [`Packet::parse`] / [`Packet::encode`]: Request/Response/Success/Failure, identifier and
//!   length checks. Octets past the Length field are data-link padding and ignored (RFC 3748
//!   §4.1). Success and Failure carry no data.
//! - Typed bodies for Identity (1), legacy Nak (3, Responses only, with the desired types) and
//!   TEAP (55); any other method type is kept as raw bytes.
//! - [`TeapMessage`]: flags byte `L M S O R Ver`, optional Message Length (L), optional Outer TLV
//!   Length (O), the TLS data and the outer TLVs (raw; see [`crate::tlv`] to decode them).
//!
//! Fragment reassembly is left to the state machine that drives this codec.

/// Code, Identifier, Length (2).
pub const HEADER_LEN: usize = 4;

/// EAP method types this codec gives a typed body.
pub mod method {
    pub const IDENTITY: u8 = 1;
    pub const NAK: u8 = 3;
    /// Generic Token Card (RFC 3748 §5.6).
    pub const GTC: u8 = 6;
    pub const TEAP: u8 = 55;
}

/// TEAP flags octet (RFC 9930 §4.1): bits `L M S O R` then a 3-bit version.
pub mod teap_flag {
    pub const LENGTH_INCLUDED: u8 = 0x80;
    pub const MORE_FRAGMENTS: u8 = 0x40;
    pub const START: u8 = 0x20;
    pub const OUTER_TLV_LENGTH_INCLUDED: u8 = 0x10;
    /// Reserved: sent as zero, ignored on receipt.
    pub const RESERVED: u8 = 0x08;
    pub const VERSION_MASK: u8 = 0x07;
}

/// The only TEAP version (RFC 9930 §4.1).
pub const TEAP_VERSION: u8 = 1;

/// Everything that can be wrong with an EAP packet or a value to encode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EapError {
    #[error("packet of {0} octets is shorter than the 4-octet EAP header")]
    TooShort(usize),
    #[error("length field {field} exceeds the {available}-octet buffer")]
    LengthExceedsBuffer { field: usize, available: usize },
    #[error("length field {0} is shorter than the 4-octet header")]
    LengthBelowHeader(usize),
    #[error("unknown EAP code {0}")]
    UnknownCode(u8),
    #[error("{code:?} must be exactly 4 octets, length field is {length}")]
    SuccessFailureWithData { code: Code, length: usize },
    #[error("{0:?} carries no data, but a body was given to encode")]
    BodyOnSuccessOrFailure(Code),
    #[error("{0:?} has no type octet")]
    MissingType(Code),
    #[error("Nak is only valid in a Response")]
    NakInRequest,
    #[error("Nak carries no desired type")]
    EmptyNak,
    #[error("TEAP packet has no flags octet")]
    MissingTeapFlags,
    #[error("unsupported TEAP version {0}")]
    UnsupportedTeapVersion(u8),
    #[error("TEAP L flag set but the 4-octet Message Length is missing")]
    MissingMessageLength,
    #[error("TEAP O flag set but the 4-octet Outer TLV Length is missing")]
    MissingOuterTlvLength,
    #[error("TEAP Outer TLV Length {declared} exceeds the {remaining} octets remaining")]
    OuterTlvLengthOverrun { declared: usize, remaining: usize },
    #[error("encoded EAP packet of {0} octets exceeds 65535")]
    PacketTooLong(usize),
}

/// EAP codes (RFC 3748 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Request,
    Response,
    Success,
    Failure,
}

impl Code {
    pub fn from_u8(value: u8) -> Result<Self, EapError> {
        match value {
            1 => Ok(Self::Request),
            2 => Ok(Self::Response),
            3 => Ok(Self::Success),
            4 => Ok(Self::Failure),
            other => Err(EapError::UnknownCode(other)),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            Self::Request => 1,
            Self::Response => 2,
            Self::Success => 3,
            Self::Failure => 4,
        }
    }

    fn carries_type(self) -> bool {
        matches!(self, Self::Request | Self::Response)
    }
}

/// The Type and Type-Data of a Request or Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Success or Failure: no data.
    Empty,
    /// Identity (type 1): the identity octets (may be empty; not necessarily UTF-8).
    Identity(Vec<u8>),
    /// Legacy Nak (type 3): the method types the peer would accept; `[0]` means none.
    Nak(Vec<u8>),
    /// TEAP (type 55).
    Teap(TeapMessage),
    /// Any other method type with its raw type data.
    Other { method_type: u8, data: Vec<u8> },
}

/// One EAP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub code: Code,
    pub identifier: u8,
    pub body: Body,
}

impl Packet {
    /// Parses one EAP packet. Octets beyond the Length field are ignored (RFC 3748 §4.1).
    pub fn parse(buf: &[u8]) -> Result<Self, EapError> {
        if buf.len() < HEADER_LEN {
            return Err(EapError::TooShort(buf.len()));
        }
        let code = Code::from_u8(buf[0])?;
        let identifier = buf[1];
        let length = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if length < HEADER_LEN {
            return Err(EapError::LengthBelowHeader(length));
        }
        if length > buf.len() {
            return Err(EapError::LengthExceedsBuffer {
                field: length,
                available: buf.len(),
            });
        }
        let data = &buf[HEADER_LEN..length];
        if !code.carries_type() {
            if !data.is_empty() {
                return Err(EapError::SuccessFailureWithData { code, length });
            }
            return Ok(Self {
                code,
                identifier,
                body: Body::Empty,
            });
        }
        let (&method_type, type_data) = data.split_first().ok_or(EapError::MissingType(code))?;
        let body = match method_type {
            method::IDENTITY => Body::Identity(type_data.to_vec()),
            method::NAK => {
                if code != Code::Response {
                    return Err(EapError::NakInRequest);
                }
                if type_data.is_empty() {
                    return Err(EapError::EmptyNak);
                }
                Body::Nak(type_data.to_vec())
            }
            method::TEAP => Body::Teap(TeapMessage::parse(type_data)?),
            other => Body::Other {
                method_type: other,
                data: type_data.to_vec(),
            },
        };
        Ok(Self {
            code,
            identifier,
            body,
        })
    }

    /// Encodes the packet. A Success/Failure with a body, or a Request/Response without one,
    /// is refused rather than silently fixed.
    pub fn encode(&self) -> Result<Vec<u8>, EapError> {
        let mut out = vec![self.code.to_u8(), self.identifier, 0, 0];
        match (&self.body, self.code.carries_type()) {
            (Body::Empty, false) => {}
            (Body::Empty, true) => return Err(EapError::MissingType(self.code)),
            (_, false) => return Err(EapError::BodyOnSuccessOrFailure(self.code)),
            (Body::Identity(identity), true) => {
                out.push(method::IDENTITY);
                out.extend_from_slice(identity);
            }
            (Body::Nak(types), true) => {
                if self.code != Code::Response {
                    return Err(EapError::NakInRequest);
                }
                if types.is_empty() {
                    return Err(EapError::EmptyNak);
                }
                out.push(method::NAK);
                out.extend_from_slice(types);
            }
            (Body::Teap(message), true) => {
                out.push(method::TEAP);
                message.encode_into(&mut out)?;
            }
            (Body::Other { method_type, data }, true) => {
                out.push(*method_type);
                out.extend_from_slice(data);
            }
        }
        let length = u16::try_from(out.len()).map_err(|_| EapError::PacketTooLong(out.len()))?;
        out[2..4].copy_from_slice(&length.to_be_bytes());
        Ok(out)
    }
}

/// The Type-Data of an EAP-TEAP packet (RFC 9930 §4.1).
///
/// The L and O flags are not stored: L is set exactly when `message_length` is present, O
/// exactly when `outer_tlvs` is present (it may be present and empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeapMessage {
    pub more_fragments: bool,
    pub start: bool,
    pub version: u8,
    /// Total length of the fragmented message; only on the first fragment.
    pub message_length: Option<u32>,
    pub tls_data: Vec<u8>,
    /// Raw outer TLVs; only in the first message of each side (first fragment).
    pub outer_tlvs: Option<Vec<u8>>,
}

impl TeapMessage {
    /// An ACK or plain fragment carrier with version 1 and no optional fields.
    pub fn new(tls_data: Vec<u8>) -> Self {
        Self {
            more_fragments: false,
            start: false,
            version: TEAP_VERSION,
            message_length: None,
            tls_data,
            outer_tlvs: None,
        }
    }

    /// Parses the type data following the type octet 55.
    pub fn parse(type_data: &[u8]) -> Result<Self, EapError> {
        let (&flags, mut rest) = type_data.split_first().ok_or(EapError::MissingTeapFlags)?;
        let version = flags & teap_flag::VERSION_MASK;
        if version != TEAP_VERSION {
            return Err(EapError::UnsupportedTeapVersion(version));
        }
        let message_length = if flags & teap_flag::LENGTH_INCLUDED != 0 {
            let (value, tail) = split_u32(rest).ok_or(EapError::MissingMessageLength)?;
            rest = tail;
            Some(value)
        } else {
            None
        };
        let outer_tlv_length = if flags & teap_flag::OUTER_TLV_LENGTH_INCLUDED != 0 {
            let (value, tail) = split_u32(rest).ok_or(EapError::MissingOuterTlvLength)?;
            rest = tail;
            Some(value)
        } else {
            None
        };
        let (tls_data, outer_tlvs) = match outer_tlv_length {
            None => (rest, None),
            Some(declared) => {
                let declared = usize::try_from(declared).unwrap_or(usize::MAX);
                if declared > rest.len() {
                    return Err(EapError::OuterTlvLengthOverrun {
                        declared,
                        remaining: rest.len(),
                    });
                }
                let (tls, outer) = rest.split_at(rest.len() - declared);
                (tls, Some(outer.to_vec()))
            }
        };
        Ok(Self {
            more_fragments: flags & teap_flag::MORE_FRAGMENTS != 0,
            start: flags & teap_flag::START != 0,
            version,
            message_length,
            tls_data: tls_data.to_vec(),
            outer_tlvs,
        })
    }

    /// The flags octet this message encodes to.
    pub fn flags(&self) -> u8 {
        let mut flags = self.version & teap_flag::VERSION_MASK;
        if self.message_length.is_some() {
            flags |= teap_flag::LENGTH_INCLUDED;
        }
        if self.more_fragments {
            flags |= teap_flag::MORE_FRAGMENTS;
        }
        if self.start {
            flags |= teap_flag::START;
        }
        if self.outer_tlvs.is_some() {
            flags |= teap_flag::OUTER_TLV_LENGTH_INCLUDED;
        }
        flags
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EapError> {
        if self.version != TEAP_VERSION {
            return Err(EapError::UnsupportedTeapVersion(self.version));
        }
        out.push(self.flags());
        if let Some(length) = self.message_length {
            out.extend_from_slice(&length.to_be_bytes());
        }
        if let Some(outer) = &self.outer_tlvs {
            let len =
                u32::try_from(outer.len()).map_err(|_| EapError::PacketTooLong(outer.len()))?;
            out.extend_from_slice(&len.to_be_bytes());
        }
        out.extend_from_slice(&self.tls_data);
        if let Some(outer) = &self.outer_tlvs {
            out.extend_from_slice(outer);
        }
        Ok(())
    }
}

fn split_u32(buf: &[u8]) -> Option<(u32, &[u8])> {
    let (head, tail) = buf.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*head), tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(packet: &Packet) {
        let bytes = packet.encode().unwrap();
        assert_eq!(&Packet::parse(&bytes).unwrap(), packet);
    }

    #[test]
    fn success_failure_identity_nak_round_trip() {
        for code in [Code::Success, Code::Failure] {
            round_trip(&Packet {
                code,
                identifier: 9,
                body: Body::Empty,
            });
        }
        round_trip(&Packet {
            code: Code::Response,
            identifier: 1,
            body: Body::Identity(b"anonymous".to_vec()),
        });
        round_trip(&Packet {
            code: Code::Response,
            identifier: 2,
            body: Body::Nak(vec![method::TEAP, 13]),
        });
        round_trip(&Packet {
            code: Code::Request,
            identifier: 3,
            body: Body::Other {
                method_type: 13,
                data: vec![0x20],
            },
        });
    }

    #[test]
    fn identity_request_wire_form() {
        let packet = Packet::parse(&[1, 7, 0, 5, 1]).unwrap();
        assert_eq!(packet.code, Code::Request);
        assert_eq!(packet.identifier, 7);
        assert_eq!(packet.body, Body::Identity(vec![]));
    }

    #[test]
    fn hostapd_start_flags_parse() {
        // Start as hostapd sends it: flags 0x31 (S, O, version 1), outer TLV length 8,
        // Authority-ID TLV (type 1, length 4).
        let wire = [
            1, 1, 0, 18, 55, 0x31, 0, 0, 0, 8, 0, 1, 0, 4, 0xde, 0xad, 0xbe, 0xef, 0xff,
        ];
        // Length field 18 leaves one trailing octet of padding outside the packet.
        let packet = Packet::parse(&wire).unwrap();
        let Body::Teap(teap) = &packet.body else {
            panic!("not TEAP: {packet:?}")
        };
        assert!(teap.start && !teap.more_fragments);
        assert_eq!(teap.message_length, None);
        assert!(teap.tls_data.is_empty());
        assert_eq!(
            teap.outer_tlvs.as_deref(),
            Some(&[0, 1, 0, 4, 0xde, 0xad, 0xbe, 0xef][..])
        );
        assert_eq!(teap.flags(), 0x31);
        assert_eq!(packet.encode().unwrap(), wire[..18]);
    }

    #[test]
    fn teap_all_fields_round_trip() {
        round_trip(&Packet {
            code: Code::Response,
            identifier: 200,
            body: Body::Teap(TeapMessage {
                more_fragments: true,
                start: false,
                version: 1,
                message_length: Some(3000),
                tls_data: vec![0x16, 3, 3, 0, 5],
                outer_tlvs: Some(vec![0x80, 19, 0, 0]),
            }),
        });
        round_trip(&Packet {
            code: Code::Response,
            identifier: 4,
            body: Body::Teap(TeapMessage::new(vec![])),
        });
    }

    #[test]
    fn trailing_padding_is_ignored() {
        let packet = Packet::parse(&[3, 5, 0, 4, 0xaa, 0xbb]).unwrap();
        assert_eq!(packet.body, Body::Empty);
    }

    #[test]
    fn malformed_packets_have_precise_errors() {
        assert_eq!(Packet::parse(&[1, 1, 0]), Err(EapError::TooShort(3)));
        assert_eq!(Packet::parse(&[9, 1, 0, 4]), Err(EapError::UnknownCode(9)));
        assert_eq!(
            Packet::parse(&[1, 1, 0, 3]),
            Err(EapError::LengthBelowHeader(3))
        );
        assert_eq!(
            Packet::parse(&[1, 1, 0, 9, 1]),
            Err(EapError::LengthExceedsBuffer {
                field: 9,
                available: 5
            })
        );
        assert_eq!(
            Packet::parse(&[3, 1, 0, 5, 1]),
            Err(EapError::SuccessFailureWithData {
                code: Code::Success,
                length: 5
            })
        );
        assert_eq!(
            Packet::parse(&[2, 1, 0, 4]),
            Err(EapError::MissingType(Code::Response))
        );
        assert_eq!(
            Packet::parse(&[1, 1, 0, 6, 3, 55]),
            Err(EapError::NakInRequest)
        );
        assert_eq!(Packet::parse(&[2, 1, 0, 5, 3]), Err(EapError::EmptyNak));
        assert_eq!(
            Packet::parse(&[1, 1, 0, 5, 55]),
            Err(EapError::MissingTeapFlags)
        );
        assert_eq!(
            Packet::parse(&[1, 1, 0, 6, 55, 0x02]),
            Err(EapError::UnsupportedTeapVersion(2))
        );
        assert_eq!(
            Packet::parse(&[1, 1, 0, 9, 55, 0x81, 0, 0, 1]),
            Err(EapError::MissingMessageLength)
        );
        assert_eq!(
            Packet::parse(&[1, 1, 0, 8, 55, 0x11, 0, 0]),
            Err(EapError::MissingOuterTlvLength)
        );
        assert_eq!(
            Packet::parse(&[1, 1, 0, 11, 55, 0x11, 0, 0, 0, 3, 0]),
            Err(EapError::OuterTlvLengthOverrun {
                declared: 3,
                remaining: 1
            })
        );
    }

    #[test]
    fn encode_refuses_inconsistent_packets() {
        let oversized = Packet {
            code: Code::Request,
            identifier: 0,
            body: Body::Identity(vec![0; 65535]),
        };
        assert_eq!(oversized.encode(), Err(EapError::PacketTooLong(65540)));
        let nak_request = Packet {
            code: Code::Request,
            identifier: 0,
            body: Body::Nak(vec![55]),
        };
        assert_eq!(nak_request.encode(), Err(EapError::NakInRequest));
        let success_with_data = Packet {
            code: Code::Success,
            identifier: 0,
            body: Body::Identity(vec![]),
        };
        assert_eq!(
            success_with_data.encode(),
            Err(EapError::BodyOnSuccessOrFailure(Code::Success))
        );
        let mut wrong_version = TeapMessage::new(vec![]);
        wrong_version.version = 2;
        let packet = Packet {
            code: Code::Request,
            identifier: 0,
            body: Body::Teap(wrong_version),
        };
        assert_eq!(packet.encode(), Err(EapError::UnsupportedTeapVersion(2)));
    }

    #[test]
    fn random_bytes_and_truncations_never_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let len = (next() % 64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if buf.len() >= 5 {
                buf[0] = (buf[0] % 5) + 1;
                buf[2] = 0;
                buf[3] = buf.len() as u8;
                buf[4] = 55;
            }
            for cut in 0..=buf.len() {
                let _ = Packet::parse(&buf[..cut]);
            }
        }
        let good = Packet {
            code: Code::Response,
            identifier: 1,
            body: Body::Teap(TeapMessage {
                more_fragments: false,
                start: false,
                version: 1,
                message_length: Some(7),
                tls_data: vec![1, 2, 3],
                outer_tlvs: Some(vec![0, 19, 0, 0]),
            }),
        }
        .encode()
        .unwrap();
        for cut in 0..=good.len() {
            let _ = Packet::parse(&good[..cut]);
        }
    }
}
