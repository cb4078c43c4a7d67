//! Base64 as EST carries it (RFC 7030 §4, RFC 8951 §3): standard alphabet, with or without line
//! breaks (LF or CRLF), padding optional on input.
//!
//! Decoding scans the text itself before handing it to the `base64` crate, so an error names the
//! offending character by its position in what the client sent (line and column), not in a
//! whitespace-stripped copy the client never saw.

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use thiserror::Error;

/// Accepts input with and without `=` padding; the output of a decode is the same either way.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a base64 body was refused. Messages are meant for the client as they are.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Base64Error {
    #[error("the body is empty; expected base64-encoded DER")]
    Empty,

    #[error(
        "the body is {len} bytes of base64; at most {max} bytes are accepted (before decoding)"
    )]
    TooLarge { len: usize, max: usize },

    #[error(
        "the body is not base64: {} at byte {offset} (line {line}, column {column}); \
         send the DER encoded with the standard base64 alphabet (A-Z a-z 0-9 + /), line breaks \
         allowed{hint}",
        describe_byte(*.byte)
    )]
    InvalidCharacter {
        byte: u8,
        offset: usize,
        line: usize,
        column: usize,
        hint: &'static str,
    },

    #[error(
        "the base64 text ends after {symbols} symbols, which cannot encode whole bytes \
         (a multiple of 4 symbols is expected, padded with '=')"
    )]
    Truncated { symbols: usize },

    #[error("the base64 text has '=' padding in the wrong place (at symbol {symbol})")]
    BadPadding { symbol: usize },

    #[error(
        "the base64 text is not canonical: its last symbol has bits set that encode no data; \
         the body is probably truncated or corrupted"
    )]
    TrailingBits,
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("the character {:?}", b as char)
    } else {
        format!("the byte 0x{b:02x}")
    }
}

/// Decodes base64 text as EST clients send it: whitespace (space, tab, CR, LF) anywhere is
/// ignored, `=` padding is optional. `max_input` bounds the text length; it is checked before
/// any work is done.
pub fn decode_lenient(input: &[u8], max_input: usize) -> Result<Vec<u8>, Base64Error> {
    if input.len() > max_input {
        return Err(Base64Error::TooLarge {
            len: input.len(),
            max: max_input,
        });
    }
    let mut symbols = Vec::with_capacity(input.len());
    let (mut line, mut line_start) = (1usize, 0usize);
    let mut padding_at = None;
    for (offset, &b) in input.iter().enumerate() {
        match b {
            b'\n' => {
                line += 1;
                line_start = offset + 1;
            }
            b' ' | b'\t' | b'\r' => {}
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' => {
                if let Some(symbol) = padding_at {
                    return Err(Base64Error::BadPadding { symbol });
                }
                symbols.push(b);
            }
            b'=' => {
                padding_at.get_or_insert(symbols.len());
                symbols.push(b);
            }
            _ => {
                let hint = match b {
                    b'-' if input.starts_with(b"-----BEGIN") => {
                        "; remove the PEM header and footer lines and send only the base64 between them"
                    }
                    b'-' | b'_' => {
                        "; this looks like the URL-safe alphabet, use '+' and '/' instead"
                    }
                    _ if input.first() == Some(&0x30) && !b.is_ascii_graphic() => {
                        "; this looks like raw DER, encode it as base64 first"
                    }
                    _ => "",
                };
                return Err(Base64Error::InvalidCharacter {
                    byte: b,
                    offset,
                    line,
                    column: offset - line_start + 1,
                    hint,
                });
            }
        }
    }
    if symbols.is_empty() {
        return Err(Base64Error::Empty);
    }
    let data_symbols = padding_at.unwrap_or(symbols.len());
    if padding_at.is_some() && (symbols.len() % 4 != 0 || symbols.len() - data_symbols > 2) {
        return Err(Base64Error::BadPadding {
            symbol: data_symbols,
        });
    }
    if data_symbols % 4 == 1 {
        return Err(Base64Error::Truncated {
            symbols: data_symbols,
        });
    }
    LENIENT.decode(&symbols).map_err(|e| match e {
        base64::DecodeError::InvalidLastSymbol(_, _) => Base64Error::TrailingBits,
        base64::DecodeError::InvalidPadding => Base64Error::BadPadding {
            symbol: data_symbols,
        },
        // The scan above leaves only the cases mapped here; report anything else as truncation
        // rather than panicking on an assumption about a dependency.
        base64::DecodeError::InvalidByte(offset, _) => Base64Error::BadPadding { symbol: offset },
        base64::DecodeError::InvalidLength(_) => Base64Error::Truncated {
            symbols: data_symbols,
        },
    })
}

/// Encodes `data` as padded standard base64. `line_length` 0 means one line without a line
/// break; otherwise lines of at most `line_length` characters, each ended by CRLF (MIME style,
/// RFC 2045 §6.8).
pub fn encode_wrapped(data: &[u8], line_length: usize) -> String {
    let text = general_purpose::STANDARD.encode(data);
    if line_length == 0 {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 2 * text.len().div_ceil(line_length));
    // The text is ASCII, so chunking bytes never splits a character.
    for chunk in text.as_bytes().chunks(line_length) {
        out.extend(chunk.iter().map(|&b| b as char));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 16;

    #[test]
    fn accepts_every_common_wrapping() {
        let data: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        for wrap in [0, 64, 76] {
            let text = encode_wrapped(&data, wrap);
            assert_eq!(decode_lenient(text.as_bytes(), MAX).unwrap(), data);
            let lf = text.replace("\r\n", "\n");
            assert_eq!(decode_lenient(lf.as_bytes(), MAX).unwrap(), data);
        }
        let unpadded = general_purpose::STANDARD_NO_PAD.encode(&data[..10]);
        assert_eq!(
            decode_lenient(unpadded.as_bytes(), MAX).unwrap(),
            &data[..10]
        );
        assert_eq!(decode_lenient(b"  TWFu\r\n", MAX).unwrap(), b"Man");
    }

    #[test]
    fn wrapping_is_crlf_and_bounded() {
        let text = encode_wrapped(&[7u8; 100], 64);
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.len() <= 64 && !l.contains('\n')));
        assert!(text.ends_with("\r\n"));
        assert!(!encode_wrapped(&[7u8; 100], 0).contains('\n'));
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = decode_lenient(b"TWFu\nTW#u", MAX).unwrap_err();
        assert_eq!(
            e,
            Base64Error::InvalidCharacter {
                byte: b'#',
                offset: 7,
                line: 2,
                column: 3,
                hint: ""
            }
        );
        assert!(
            e.to_string().contains("'#' at byte 7 (line 2, column 3)"),
            "{e}"
        );

        let e = decode_lenient(b"-----BEGIN CERTIFICATE REQUEST-----\nTWFu", MAX).unwrap_err();
        assert!(e.to_string().contains("PEM header"), "{e}");
        let e = decode_lenient(b"ab-_", MAX).unwrap_err();
        assert!(e.to_string().contains("URL-safe"), "{e}");
        let e = decode_lenient(&[0x30, 0x82, 0x01], MAX).unwrap_err();
        assert!(e.to_string().contains("raw DER"), "{e}");

        assert_eq!(decode_lenient(b" \r\n", MAX), Err(Base64Error::Empty));
        assert_eq!(decode_lenient(b"", MAX), Err(Base64Error::Empty));
        assert_eq!(
            decode_lenient(b"TWFuT", MAX),
            Err(Base64Error::Truncated { symbols: 5 })
        );
        assert!(matches!(
            decode_lenient(b"TW=u", MAX),
            Err(Base64Error::BadPadding { .. })
        ));
        assert!(matches!(
            decode_lenient(b"T===", MAX),
            Err(Base64Error::BadPadding { .. })
        ));
        assert_eq!(decode_lenient(b"TWF=", MAX), Err(Base64Error::TrailingBits));
        assert_eq!(
            decode_lenient(&[b'A'; 9], 8),
            Err(Base64Error::TooLarge { len: 9, max: 8 })
        );
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    let v = x.rotate_left(i as u32 * 5) as u8;
                    // Mostly base64 symbols, so the later stages are reached too.
                    b"AQgw+/=\n\r Zz9"[(v % 13) as usize]
                })
                .collect();
            let _ = decode_lenient(&bytes, MAX);
        }
    }
}
