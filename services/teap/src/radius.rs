//! A small, strict RADIUS codec (RFC 2865) with the pieces an EAP server needs.
//!
//! - [`Packet::parse`] / [`Packet::encode`]: code, identifier, authenticator and attributes,
//!   at most [`MAX_PACKET_LEN`] octets; every malformed input is a typed [`RadiusError`].
//! - Requests: [`Packet::parse_verified_request`] parses an Access-Request or Status-Server
//!   (RFC 5997) and requires exactly one valid Message-Authenticator (RFC 3579 §3.2, HMAC-MD5
//!   keyed with the shared secret, compared in constant time). A request without one is refused
//!   with [`RadiusError::MissingMessageAuthenticator`] (BlastRADIUS hardening, CVE-2024-3596).
//! - Responses: [`Packet::encode_response`] puts Message-Authenticator FIRST (computed over the
//!   packet carrying the Request Authenticator), echoes the request's Proxy-State attributes in
//!   order at the end, then writes the Response Authenticator
//!   `MD5(Code+Identifier+Length+RequestAuth+Attributes+Secret)`.
//! - EAP-Message split at 253 octets and reassembled in order ([`eap_message_attributes`],
//!   [`Packet::eap_message`]); State and Proxy-State accessors.
//! - MS-MPPE-Send-Key / MS-MPPE-Recv-Key (RFC 2548 §2.4.2/§2.4.3) hiding and recovery, and
//!   [`mppe_key_attributes`] for an EAP MSK: Recv-Key = MSK\[0..32\], Send-Key = MSK\[32..64\]
//!   (RFC 5216 §2.3 as hostapd's RADIUS server sends them).
//!
//! Randomness stays outside: the caller supplies request authenticators and MPPE salts.

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// RFC 2865 §3 header: Code, Identifier, Length (2), Authenticator (16).
pub const HEADER_LEN: usize = 20;
/// RFC 2865 §3 / RFC 7930: the largest RADIUS packet.
pub const MAX_PACKET_LEN: usize = 4096;
/// An attribute's value holds at most 253 octets (its length octet counts type and length).
pub const MAX_ATTRIBUTE_VALUE_LEN: usize = 253;
/// Length of the Request/Response Authenticator and of the Message-Authenticator value.
pub const AUTHENTICATOR_LEN: usize = 16;

/// Attribute types used by the gateway (RFC 2865, RFC 2869, RFC 3579).
pub mod attr {
    pub const USER_NAME: u8 = 1;
    pub const USER_PASSWORD: u8 = 2;
    pub const NAS_IP_ADDRESS: u8 = 4;
    pub const FRAMED_MTU: u8 = 12;
    pub const REPLY_MESSAGE: u8 = 18;
    pub const STATE: u8 = 24;
    pub const VENDOR_SPECIFIC: u8 = 26;
    pub const CALLED_STATION_ID: u8 = 30;
    pub const CALLING_STATION_ID: u8 = 31;
    pub const NAS_IDENTIFIER: u8 = 32;
    pub const PROXY_STATE: u8 = 33;
    pub const EAP_MESSAGE: u8 = 79;
    pub const MESSAGE_AUTHENTICATOR: u8 = 80;
}

/// Microsoft's vendor id and its MPPE key vendor types (RFC 2548 §2.4.2, §2.4.3).
pub const VENDOR_MICROSOFT: u32 = 311;
pub const MS_MPPE_SEND_KEY: u8 = 16;
pub const MS_MPPE_RECV_KEY: u8 = 17;

/// Everything that can be wrong with a RADIUS datagram or a value to encode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RadiusError {
    #[error("datagram of {0} octets is shorter than the 20-octet RADIUS header")]
    TooShort(usize),
    #[error("datagram of {0} octets exceeds the 4096-octet RADIUS maximum")]
    DatagramTooLong(usize),
    #[error("length field {0} is outside 20..=4096")]
    BadLengthField(usize),
    #[error("length field {field} exceeds the {datagram}-octet datagram")]
    LengthExceedsDatagram { field: usize, datagram: usize },
    #[error("unknown RADIUS code {0}")]
    UnknownCode(u8),
    #[error("attribute at offset {offset} has only its type octet")]
    TruncatedAttributeHeader { offset: usize },
    #[error("attribute at offset {offset} declares length {length} (< 2)")]
    AttributeTooShort { offset: usize, length: u8 },
    #[error("attribute at offset {offset} declares length {length} but {remaining} octets remain")]
    AttributeOverrun {
        offset: usize,
        length: u8,
        remaining: usize,
    },
    #[error("attribute {attribute_type} value of {len} octets exceeds 253")]
    AttributeValueTooLong { attribute_type: u8, len: usize },
    #[error("encoded packet of {0} octets exceeds 4096")]
    PacketTooLong(usize),
    #[error("{0:?} is not a response code")]
    NotAResponseCode(Code),
    #[error("{0:?} is not a request this server verifies")]
    NotAVerifiableRequest(Code),
    #[error("request carries no Message-Authenticator")]
    MissingMessageAuthenticator,
    #[error("request carries more than one Message-Authenticator")]
    DuplicateMessageAuthenticator,
    #[error("Message-Authenticator value is {0} octets, not 16")]
    MessageAuthenticatorLength(usize),
    #[error("Message-Authenticator does not match")]
    BadMessageAuthenticator,
    #[error("Response Authenticator does not match")]
    BadResponseAuthenticator,
    #[error("response identifier {response} does not match request identifier {request}")]
    IdentifierMismatch { request: u8, response: u8 },
    #[error("Vendor-Specific attribute is malformed: {0}")]
    BadVendorSpecific(&'static str),
    #[error("reassembled EAP-Message is malformed: {0}")]
    BadEapMessage(&'static str),
    #[error("MPPE key attribute is malformed: {0}")]
    BadMppeKey(&'static str),
    #[error("shared secret is empty")]
    EmptySecret,
}

/// RADIUS packet codes this codec recognises. Anything else is [`RadiusError::UnknownCode`].
/// Accounting codes are recognised so a server can refuse them by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    AccessRequest,
    AccessAccept,
    AccessReject,
    AccountingRequest,
    AccountingResponse,
    AccessChallenge,
    StatusServer,
    StatusClient,
}

impl Code {
    pub fn from_u8(value: u8) -> Result<Self, RadiusError> {
        Ok(match value {
            1 => Code::AccessRequest,
            2 => Code::AccessAccept,
            3 => Code::AccessReject,
            4 => Code::AccountingRequest,
            5 => Code::AccountingResponse,
            11 => Code::AccessChallenge,
            12 => Code::StatusServer,
            13 => Code::StatusClient,
            other => return Err(RadiusError::UnknownCode(other)),
        })
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Code::AccessRequest => 1,
            Code::AccessAccept => 2,
            Code::AccessReject => 3,
            Code::AccountingRequest => 4,
            Code::AccountingResponse => 5,
            Code::AccessChallenge => 11,
            Code::StatusServer => 12,
            Code::StatusClient => 13,
        }
    }
}

/// One attribute: type and raw value (at most 253 octets when encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub attribute_type: u8,
    pub value: Vec<u8>,
}

impl Attribute {
    pub fn new(attribute_type: u8, value: impl Into<Vec<u8>>) -> Self {
        Self {
            attribute_type,
            value: value.into(),
        }
    }

    /// A Vendor-Specific attribute (26) in the RFC 2865 §5.26 recommended format: Vendor-Id,
    /// then one vendor sub-attribute (type, length, value).
    pub fn vendor_specific(
        vendor_id: u32,
        vendor_type: u8,
        value: &[u8],
    ) -> Result<Self, RadiusError> {
        // 4 octets vendor id + 2 octets sub-header + value must fit in 253.
        if value.len() > MAX_ATTRIBUTE_VALUE_LEN - 6 {
            return Err(RadiusError::AttributeValueTooLong {
                attribute_type: attr::VENDOR_SPECIFIC,
                len: value.len() + 6,
            });
        }
        let mut v = Vec::with_capacity(6 + value.len());
        v.extend_from_slice(&vendor_id.to_be_bytes());
        v.push(vendor_type);
        v.push((value.len() + 2) as u8);
        v.extend_from_slice(value);
        Ok(Self::new(attr::VENDOR_SPECIFIC, v))
    }

    /// The vendor id and sub-attributes of a Vendor-Specific attribute; `None` for another type.
    pub fn as_vendor_specific(&self) -> Option<Result<VendorSpecific<'_>, RadiusError>> {
        (self.attribute_type == attr::VENDOR_SPECIFIC).then(|| VendorSpecific::parse(&self.value))
    }
}

/// A parsed Vendor-Specific attribute value (RFC 2865 §5.26 recommended format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorSpecific<'a> {
    pub vendor_id: u32,
    /// `(vendor type, value)` in order.
    pub sub_attributes: Vec<(u8, &'a [u8])>,
}

impl<'a> VendorSpecific<'a> {
    fn parse(value: &'a [u8]) -> Result<Self, RadiusError> {
        let (id, mut rest) =
            value
                .split_first_chunk::<4>()
                .ok_or(RadiusError::BadVendorSpecific(
                    "shorter than the 4-octet vendor id",
                ))?;
        let mut sub_attributes = Vec::new();
        while !rest.is_empty() {
            let [vendor_type, len, ..] = *rest else {
                return Err(RadiusError::BadVendorSpecific(
                    "truncated sub-attribute header",
                ));
            };
            let len = usize::from(len);
            if len < 2 || len > rest.len() {
                return Err(RadiusError::BadVendorSpecific(
                    "sub-attribute length out of range",
                ));
            }
            sub_attributes.push((vendor_type, &rest[2..len]));
            rest = &rest[len..];
        }
        Ok(Self {
            vendor_id: u32::from_be_bytes(*id),
            sub_attributes,
        })
    }
}

/// A RADIUS packet. `authenticator` is the Request Authenticator of a request, or the Response
/// Authenticator of a parsed response (encoding a response computes it; see
/// [`Packet::encode_response`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub code: Code,
    pub identifier: u8,
    pub authenticator: [u8; AUTHENTICATOR_LEN],
    pub attributes: Vec<Attribute>,
}

impl Packet {
    /// A response to `request` with its identifier and no attributes yet.
    pub fn response_to(request: &Packet, code: Code) -> Self {
        Self {
            code,
            identifier: request.identifier,
            authenticator: [0; AUTHENTICATOR_LEN],
            attributes: Vec::new(),
        }
    }

    /// Parse a datagram. Octets past the Length field are padding and ignored (RFC 2865 §3);
    /// a Length field past the datagram's end is an error.
    pub fn parse(datagram: &[u8]) -> Result<Self, RadiusError> {
        if datagram.len() < HEADER_LEN {
            return Err(RadiusError::TooShort(datagram.len()));
        }
        if datagram.len() > MAX_PACKET_LEN {
            return Err(RadiusError::DatagramTooLong(datagram.len()));
        }
        let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
        if !(HEADER_LEN..=MAX_PACKET_LEN).contains(&length) {
            return Err(RadiusError::BadLengthField(length));
        }
        if length > datagram.len() {
            return Err(RadiusError::LengthExceedsDatagram {
                field: length,
                datagram: datagram.len(),
            });
        }
        let code = Code::from_u8(datagram[0])?;
        let mut authenticator = [0; AUTHENTICATOR_LEN];
        authenticator.copy_from_slice(&datagram[4..HEADER_LEN]);
        let mut attributes = Vec::new();
        let mut offset = HEADER_LEN;
        while offset < length {
            let remaining = length - offset;
            if remaining < 2 {
                return Err(RadiusError::TruncatedAttributeHeader { offset });
            }
            let attribute_type = datagram[offset];
            let attr_len = datagram[offset + 1];
            if attr_len < 2 {
                return Err(RadiusError::AttributeTooShort {
                    offset,
                    length: attr_len,
                });
            }
            if usize::from(attr_len) > remaining {
                return Err(RadiusError::AttributeOverrun {
                    offset,
                    length: attr_len,
                    remaining,
                });
            }
            let end = offset + usize::from(attr_len);
            attributes.push(Attribute::new(attribute_type, &datagram[offset + 2..end]));
            offset = end;
        }
        Ok(Self {
            code,
            identifier: datagram[1],
            authenticator,
            attributes,
        })
    }

    /// Encode as-is (no authenticator computed).
    pub fn encode(&self) -> Result<Vec<u8>, RadiusError> {
        let mut out = Vec::with_capacity(HEADER_LEN + 64);
        out.push(self.code.as_u8());
        out.push(self.identifier);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.authenticator);
        for a in &self.attributes {
            if a.value.len() > MAX_ATTRIBUTE_VALUE_LEN {
                return Err(RadiusError::AttributeValueTooLong {
                    attribute_type: a.attribute_type,
                    len: a.value.len(),
                });
            }
            out.push(a.attribute_type);
            out.push((a.value.len() + 2) as u8);
            out.extend_from_slice(&a.value);
            if out.len() > MAX_PACKET_LEN {
                return Err(RadiusError::PacketTooLong(out.len()));
            }
        }
        let len = out.len() as u16; // <= 4096, checked above
        out[2..4].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }

    /// The first attribute of `attribute_type`.
    pub fn attribute(&self, attribute_type: u8) -> Option<&[u8]> {
        self.attributes
            .iter()
            .find(|a| a.attribute_type == attribute_type)
            .map(|a| a.value.as_slice())
    }

    /// Every attribute of `attribute_type`, in packet order.
    pub fn attributes_of(&self, attribute_type: u8) -> impl Iterator<Item = &[u8]> {
        self.attributes
            .iter()
            .filter(move |a| a.attribute_type == attribute_type)
            .map(|a| a.value.as_slice())
    }

    pub fn push(&mut self, attribute: Attribute) {
        self.attributes.push(attribute);
    }

    /// The State attribute (RFC 2865 §5.24) the NAS echoed from our Access-Challenge.
    pub fn state(&self) -> Option<&[u8]> {
        self.attribute(attr::STATE)
    }

    /// Proxy-State attributes (RFC 2865 §5.33) in order; a response echoes them unchanged.
    pub fn proxy_states(&self) -> impl Iterator<Item = &[u8]> {
        self.attributes_of(attr::PROXY_STATE)
    }

    /// The EAP packet carried in EAP-Message attributes, concatenated in order (RFC 3579 §3.1).
    /// `Ok(None)`: no EAP-Message. `Ok(Some(empty))`: a single empty EAP-Message (EAP-Start).
    /// Otherwise the EAP header's Length must equal the reassembled length.
    pub fn eap_message(&self) -> Result<Option<Vec<u8>>, RadiusError> {
        let mut parts = self.attributes_of(attr::EAP_MESSAGE).peekable();
        if parts.peek().is_none() {
            return Ok(None);
        }
        let eap: Vec<u8> = parts.flatten().copied().collect();
        if eap.is_empty() {
            return Ok(Some(eap));
        }
        if eap.len() < 4 {
            return Err(RadiusError::BadEapMessage(
                "shorter than the 4-octet EAP header",
            ));
        }
        if usize::from(u16::from_be_bytes([eap[2], eap[3]])) != eap.len() {
            return Err(RadiusError::BadEapMessage(
                "EAP Length disagrees with the reassembled EAP-Message attributes",
            ));
        }
        Ok(Some(eap))
    }

    /// Parse an Access-Request or Status-Server and verify its Message-Authenticator, which is
    /// required (exactly one, 16 octets, HMAC-MD5 over the packet with the value zeroed).
    pub fn parse_verified_request(datagram: &[u8], secret: &[u8]) -> Result<Self, RadiusError> {
        if secret.is_empty() {
            return Err(RadiusError::EmptySecret);
        }
        let packet = Self::parse(datagram)?;
        if !matches!(packet.code, Code::AccessRequest | Code::StatusServer) {
            return Err(RadiusError::NotAVerifiableRequest(packet.code));
        }
        let received = packet.single_message_authenticator()?;
        let expected = packet.message_authenticator_over(&packet.authenticator, secret)?;
        if bool::from(expected.ct_eq(received)) {
            Ok(packet)
        } else {
            Err(RadiusError::BadMessageAuthenticator)
        }
    }

    fn single_message_authenticator(&self) -> Result<&[u8], RadiusError> {
        let mut found = self.attributes_of(attr::MESSAGE_AUTHENTICATOR);
        let first = found
            .next()
            .ok_or(RadiusError::MissingMessageAuthenticator)?;
        if found.next().is_some() {
            return Err(RadiusError::DuplicateMessageAuthenticator);
        }
        if first.len() != AUTHENTICATOR_LEN {
            return Err(RadiusError::MessageAuthenticatorLength(first.len()));
        }
        Ok(first)
    }

    /// HMAC-MD5(secret, packet) with every Message-Authenticator value zeroed and `authenticator`
    /// in the header (the request's own for requests, the Request Authenticator for responses).
    fn message_authenticator_over(
        &self,
        authenticator: &[u8; AUTHENTICATOR_LEN],
        secret: &[u8],
    ) -> Result<[u8; AUTHENTICATOR_LEN], RadiusError> {
        let mut zeroed = self.clone();
        zeroed.authenticator = *authenticator;
        for a in &mut zeroed.attributes {
            if a.attribute_type == attr::MESSAGE_AUTHENTICATOR {
                a.value.fill(0);
            }
        }
        Ok(hmac_md5(secret, &zeroed.encode()?))
    }

    /// Encode a request (Access-Request or Status-Server) with a Message-Authenticator first.
    /// `self.authenticator` is the Request Authenticator, which the caller draws at random.
    pub fn encode_request(&self, secret: &[u8]) -> Result<Vec<u8>, RadiusError> {
        if secret.is_empty() {
            return Err(RadiusError::EmptySecret);
        }
        let mut signed = self.with_message_authenticator_first();
        let mac = signed.message_authenticator_over(&self.authenticator, secret)?;
        signed.attributes[0].value = mac.to_vec();
        signed.encode()
    }

    /// Encode a response to `request`: Message-Authenticator first (BlastRADIUS hardening),
    /// this packet's attributes except any Proxy-State, then the request's Proxy-State
    /// attributes in order, and the Response Authenticator in the header.
    /// (Status-Server is answered with Access-Accept, RFC 5997 §3.)
    pub fn encode_response(&self, request: &Packet, secret: &[u8]) -> Result<Vec<u8>, RadiusError> {
        if secret.is_empty() {
            return Err(RadiusError::EmptySecret);
        }
        if !matches!(
            self.code,
            Code::AccessAccept | Code::AccessReject | Code::AccessChallenge
        ) {
            return Err(RadiusError::NotAResponseCode(self.code));
        }
        let mut signed = self.with_message_authenticator_first();
        signed.identifier = request.identifier;
        signed
            .attributes
            .retain(|a| a.attribute_type != attr::PROXY_STATE);
        signed.attributes.extend(
            request
                .attributes
                .iter()
                .filter(|a| a.attribute_type == attr::PROXY_STATE)
                .cloned(),
        );
        let mac = signed.message_authenticator_over(&request.authenticator, secret)?;
        signed.attributes[0].value = mac.to_vec();
        signed.authenticator = request.authenticator;
        let mut bytes = signed.encode()?;
        let response_authenticator = md5_parts(&[&bytes, secret]);
        bytes[4..HEADER_LEN].copy_from_slice(&response_authenticator);
        Ok(bytes)
    }

    /// Parse a response to `request` and check its Response Authenticator and, when present,
    /// its Message-Authenticator (for tests and a future proxying client).
    pub fn parse_verified_response(
        datagram: &[u8],
        request: &Packet,
        secret: &[u8],
    ) -> Result<Self, RadiusError> {
        let packet = Self::parse(datagram)?;
        if packet.identifier != request.identifier {
            return Err(RadiusError::IdentifierMismatch {
                request: request.identifier,
                response: packet.identifier,
            });
        }
        let mut with_request_auth = packet.encode()?;
        with_request_auth[4..HEADER_LEN].copy_from_slice(&request.authenticator);
        let expected = md5_parts(&[&with_request_auth, secret]);
        if !bool::from(expected.ct_eq(&packet.authenticator)) {
            return Err(RadiusError::BadResponseAuthenticator);
        }
        if packet
            .attributes_of(attr::MESSAGE_AUTHENTICATOR)
            .next()
            .is_some()
        {
            let received = packet.single_message_authenticator()?;
            let expected = packet.message_authenticator_over(&request.authenticator, secret)?;
            if !bool::from(expected.ct_eq(received)) {
                return Err(RadiusError::BadMessageAuthenticator);
            }
        }
        Ok(packet)
    }

    fn with_message_authenticator_first(&self) -> Self {
        let mut signed = self.clone();
        signed
            .attributes
            .retain(|a| a.attribute_type != attr::MESSAGE_AUTHENTICATOR);
        signed.attributes.insert(
            0,
            Attribute::new(attr::MESSAGE_AUTHENTICATOR, [0; AUTHENTICATOR_LEN]),
        );
        signed
    }
}

/// Split an EAP packet into EAP-Message attributes of at most 253 octets each, in order.
pub fn eap_message_attributes(eap: &[u8]) -> Vec<Attribute> {
    if eap.is_empty() {
        return vec![Attribute::new(attr::EAP_MESSAGE, Vec::new())];
    }
    eap.chunks(MAX_ATTRIBUTE_VALUE_LEN)
        .map(|chunk| Attribute::new(attr::EAP_MESSAGE, chunk))
        .collect()
}

/// RFC 2865 §5.2 User-Password hiding (used by tests and by clients built on this codec).
pub fn hide_user_password(
    password: &[u8],
    secret: &[u8],
    request_authenticator: &[u8; AUTHENTICATOR_LEN],
) -> Result<Vec<u8>, RadiusError> {
    if password.len() > 128 {
        return Err(RadiusError::AttributeValueTooLong {
            attribute_type: attr::USER_PASSWORD,
            len: password.len(),
        });
    }
    let mut padded = password.to_vec();
    padded.resize(password.len().div_ceil(16).max(1) * 16, 0);
    Ok(md5_chain_hide(&padded, secret, request_authenticator))
}

/// `c(i) = p(i) XOR MD5(secret + c(i-1))`, `c(0) = seed` (RFC 2865 §5.2, RFC 2548 §2.4.2).
fn md5_chain_hide(plain: &[u8], secret: &[u8], seed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len());
    let mut previous = seed.to_vec();
    for block in plain.chunks(16) {
        let b = md5_parts(&[secret, &previous]);
        let c: Vec<u8> = block.iter().zip(b).map(|(p, b)| p ^ b).collect();
        out.extend_from_slice(&c);
        previous = c;
    }
    out
}

fn md5_chain_reveal(hidden: &[u8], secret: &[u8], seed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hidden.len());
    let mut previous = seed;
    for block in hidden.chunks(16) {
        let b = md5_parts(&[secret, previous]);
        out.extend(block.iter().zip(b).map(|(c, b)| c ^ b));
        previous = block;
    }
    out
}

/// The value of an MS-MPPE-Send-Key or MS-MPPE-Recv-Key sub-attribute (RFC 2548 §2.4.2):
/// Salt (2 octets, high bit forced on), then the hidden String (key length octet, key, zero
/// padding to a multiple of 16) with `b(1) = MD5(secret + RequestAuth + Salt)`.
pub fn encrypt_mppe_key(
    key: &[u8],
    salt: [u8; 2],
    secret: &[u8],
    request_authenticator: &[u8; AUTHENTICATOR_LEN],
) -> Result<Vec<u8>, RadiusError> {
    if secret.is_empty() {
        return Err(RadiusError::EmptySecret);
    }
    // Salt + hidden string must fit a vendor sub-attribute: 2 + 16k <= 247.
    // 2 + 16 * ceil((1 + len) / 16) <= 247  <=>  len <= 239.
    if key.len() > 239 {
        return Err(RadiusError::BadMppeKey(
            "key longer than a sub-attribute holds",
        ));
    }
    let salt = [salt[0] | 0x80, salt[1]];
    let mut plain = Vec::with_capacity(key.len() + 16);
    plain.push(key.len() as u8);
    plain.extend_from_slice(key);
    plain.resize(plain.len().div_ceil(16) * 16, 0);
    let mut seed = request_authenticator.to_vec();
    seed.extend_from_slice(&salt);
    let mut out = salt.to_vec();
    out.extend(md5_chain_hide(&plain, secret, &seed));
    Ok(out)
}

/// Recover the key from an MS-MPPE-Send-Key / Recv-Key sub-attribute value.
pub fn decrypt_mppe_key(
    value: &[u8],
    secret: &[u8],
    request_authenticator: &[u8; AUTHENTICATOR_LEN],
) -> Result<Vec<u8>, RadiusError> {
    let (salt, hidden) = value
        .split_first_chunk::<2>()
        .ok_or(RadiusError::BadMppeKey("shorter than the salt"))?;
    if salt[0] & 0x80 == 0 {
        return Err(RadiusError::BadMppeKey("salt high bit not set"));
    }
    if hidden.is_empty() || hidden.len() % 16 != 0 {
        return Err(RadiusError::BadMppeKey(
            "hidden string not a multiple of 16 octets",
        ));
    }
    let mut seed = request_authenticator.to_vec();
    seed.extend_from_slice(salt);
    let plain = md5_chain_reveal(hidden, secret, &seed);
    let key_len = usize::from(plain[0]);
    if key_len + 1 > plain.len() {
        return Err(RadiusError::BadMppeKey(
            "key length exceeds the hidden string",
        ));
    }
    Ok(plain[1..1 + key_len].to_vec())
}

/// MS-MPPE-Recv-Key (MSK\[0..32\]) and MS-MPPE-Send-Key (MSK\[32..64\]) Vendor-Specific
/// attributes for an Access-Accept, as RFC 5216 §2.3 and hostapd's RADIUS server assign them.
/// The two salts must differ (RFC 2548: unique per attribute); the caller draws them at random.
pub fn mppe_key_attributes(
    msk: &[u8; 64],
    recv_salt: [u8; 2],
    send_salt: [u8; 2],
    secret: &[u8],
    request_authenticator: &[u8; AUTHENTICATOR_LEN],
) -> Result<[Attribute; 2], RadiusError> {
    if (recv_salt[0] | 0x80, recv_salt[1]) == (send_salt[0] | 0x80, send_salt[1]) {
        return Err(RadiusError::BadMppeKey(
            "Recv-Key and Send-Key salts are equal",
        ));
    }
    let recv = encrypt_mppe_key(&msk[..32], recv_salt, secret, request_authenticator)?;
    let send = encrypt_mppe_key(&msk[32..], send_salt, secret, request_authenticator)?;
    Ok([
        Attribute::vendor_specific(VENDOR_MICROSOFT, MS_MPPE_RECV_KEY, &recv)?,
        Attribute::vendor_specific(VENDOR_MICROSOFT, MS_MPPE_SEND_KEY, &send)?,
    ])
}

fn md5_parts(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    // HMAC accepts keys of any length, so new_from_slice cannot fail for Hmac<Md5>; were it to,
    // an all-zero MAC fails closed (no verification passes with it).
    let mut mac = match <Hmac<Md5> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 16],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests;
