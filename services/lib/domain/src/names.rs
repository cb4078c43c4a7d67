//! DNS naming rules shared by policy, the CSR checks and the local CA.

use std::net::IpAddr;

pub const MAX_DNS_NAME_LEN: usize = 253;

/// LDH label (RFC 1035 §2.3.1 as relaxed by RFC 1123): 1–63 characters, letters, digits and
/// hyphens, not starting or ending with a hyphen.
pub fn is_valid_dns_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A fully qualified host name without the trailing dot; lower case is not required here, the
/// callers compare with [`normalize_dns_name`].
pub fn is_valid_dns_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_DNS_NAME_LEN && name.split('.').all(is_valid_dns_label)
}

/// Lower-cases and strips one trailing dot.
pub fn normalize_dns_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Label-wise "is `name` equal to or under `ancestor`": `ooo.example.com` is not under
/// `oo.example.com`.
pub fn is_at_or_under(name: &str, ancestor: &str) -> bool {
    let name = normalize_dns_name(name);
    let ancestor = normalize_dns_name(ancestor);
    name == ancestor
        || (name.len() > ancestor.len()
            && name.ends_with(&ancestor)
            && name.as_bytes()[name.len() - ancestor.len() - 1] == b'.')
}

/// `localhost` and anything under it (RFC 6761 §6.3): never in a certificate.
pub fn is_localhost(name: &str) -> bool {
    is_at_or_under(name, "localhost")
}

/// The IP ranges a local CA may certify (draft-sweet-iot-acme): private, link-local, loopback,
/// and their IPv6 counterparts (ULA fc00::/7, link-local fe80::/10, ::1).
pub fn is_local_ip(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local() || v4.is_loopback(),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_wise_ancestry() {
        assert!(is_at_or_under("a.example.com", "example.com"));
        assert!(is_at_or_under("A.Example.COM.", "example.com"));
        assert!(is_at_or_under("example.com", "example.com"));
        assert!(!is_at_or_under("ooo.example.com", "oo.example.com"));
        assert!(!is_at_or_under("badexample.com", "example.com"));
        assert!(!is_at_or_under("com", "example.com"));
    }

    #[test]
    fn dns_syntax() {
        assert!(is_valid_dns_name("k7q2m9x4a.devices.example.com"));
        assert!(!is_valid_dns_name("-a.example.com"));
        assert!(!is_valid_dns_name("a..example.com"));
        assert!(!is_valid_dns_name("*.example.com"));
        assert!(!is_valid_dns_name(&"a".repeat(64)));
        assert!(!is_valid_dns_name(""));
    }

    #[test]
    fn localhost_and_ip_ranges() {
        assert!(is_localhost("localhost"));
        assert!(is_localhost("x.LOCALHOST"));
        assert!(!is_localhost("localhost.example.com"));
        for ok in [
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "169.254.1.1",
            "127.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_local_ip(&ok.parse().unwrap()), "{ok}");
        }
        for bad in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "100.64.0.1"] {
            assert!(!is_local_ip(&bad.parse().unwrap()), "{bad}");
        }
    }
}
