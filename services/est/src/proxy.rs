//! Trusted-proxy mode: TLS ends at an ingress, which forwards the client certificate in a
//! header. Only the configured proxy addresses may set it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use der::Decode;
use x509_cert::Certificate;

/// An address block, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen through an IPv6 socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an IP address or CIDR block (10.0.0.0/8, fd00::/8)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (
                a.parse::<IpAddr>().map_err(|_| bad())?,
                Some(p.parse::<u8>().map_err(|_| bad())?),
            ),
            None => (s.parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Longest header value considered: a certificate with a long chain of names, URL-encoded.
const MAX_HEADER_CERT: usize = 16 * 1024;

/// The DER certificate in a proxy's client-certificate header. Accepts URL-encoded PEM (nginx
/// `$ssl_client_escaped_cert`, Traefik), PEM whose line breaks became spaces or tabs (nginx
/// `$ssl_client_cert`), bare base64 DER, and Envoy's `x-forwarded-client-cert` (`Cert="…"`).
pub fn certificate_from_header(value: &[u8]) -> Result<Vec<u8>, String> {
    if value.len() > MAX_HEADER_CERT {
        return Err(format!(
            "the value is {} bytes; at most {MAX_HEADER_CERT} are accepted",
            value.len()
        ));
    }
    let text = std::str::from_utf8(value).map_err(|_| "the value is not ASCII text".to_string())?;
    let text = match text.find("Cert=\"") {
        Some(i) => {
            let rest = &text[i + 6..];
            let end = rest
                .find('"')
                .ok_or_else(|| "the Cert=\"…\" element is not closed".to_string())?;
            &rest[..end]
        }
        None => text,
    };
    let text = percent_decode(text.trim())?;
    let b64 = match text.find("-----BEGIN CERTIFICATE-----") {
        Some(start) => {
            let body = &text[start + 27..];
            let end = body
                .find("-----END CERTIFICATE-----")
                .ok_or_else(|| "the PEM certificate has no END line".to_string())?;
            body[..end].to_string()
        }
        None => text,
    };
    let der = ragw_pki::base64::decode_lenient(b64.as_bytes(), MAX_HEADER_CERT)
        .map_err(|e| e.to_string())?;
    Certificate::from_der(&der).map_err(|e| format!("not a DER X.509 certificate ({e})"))?;
    Ok(der)
}

fn percent_decode(s: &str) -> Result<String, String> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape at byte {i}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the decoded value is not text".to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks() {
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        let one: IpNet = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: IpNet = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("proxy.local".parse::<IpNet>().is_err());
    }

    #[test]
    fn header_formats() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["dev.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().to_vec();
        let pem = cert.pem();
        let escaped: String = pem
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect();
        assert_eq!(certificate_from_header(escaped.as_bytes()).unwrap(), der);
        let spaced = pem.replace('\n', " ");
        assert_eq!(certificate_from_header(spaced.as_bytes()).unwrap(), der);
        let bare: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(certificate_from_header(bare.as_bytes()).unwrap(), der);
        let xfcc = format!("By=spiffe://x;Hash=abc;Cert=\"{escaped}\";Subject=\"\"");
        assert_eq!(certificate_from_header(xfcc.as_bytes()).unwrap(), der);

        assert!(certificate_from_header(b"%zz").is_err());
        assert!(
            certificate_from_header(b"TWFu")
                .unwrap_err()
                .contains("X.509")
        );
        assert!(certificate_from_header(&vec![b'A'; MAX_HEADER_CERT + 1]).is_err());
    }
}
