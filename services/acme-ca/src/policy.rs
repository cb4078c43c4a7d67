//! Which identifiers this CA certifies (draft-sweet-iot-acme §3.4): DNS names at or under the
//! configured suffixes or under `.local`, never `localhost`; IP addresses only when private,
//! link-local or loopback.

use std::net::IpAddr;

use ragw_domain::names::{
    is_at_or_under, is_local_ip, is_localhost, is_valid_dns_name, normalize_dns_name,
};
use ragw_store::AcmeIdentifier;
use serde_json::Value;

use crate::config::CaConfig;
use crate::problem::{Problem, ProblemType};

const MAX_IDENTIFIER_LEN: usize = 253;

fn reject(detail: String) -> Problem {
    Problem::new(ProblemType::RejectedIdentifier, detail)
}

fn shown(s: &str) -> String {
    let short: String = s.chars().take(80).collect();
    format!("{short:?}")
}

/// Parses an `{"type": …, "value": …}` object and applies the policy; returns the normalized
/// identifier.
pub fn parse_identifier(cfg: &CaConfig, v: &Value) -> Result<AcmeIdentifier, Problem> {
    let obj = v
        .as_object()
        .ok_or_else(|| Problem::malformed("an identifier must be a JSON object"))?;
    let kind = match obj.get("type") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(Problem::malformed("an identifier needs a string \"type\"")),
    };
    let value = match obj.get("value") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(Problem::malformed("an identifier needs a string \"value\"")),
    };
    check(cfg, kind, value)
}

pub fn check(cfg: &CaConfig, kind: &str, value: &str) -> Result<AcmeIdentifier, Problem> {
    if value.len() > MAX_IDENTIFIER_LEN {
        return Err(reject(format!(
            "identifier values are at most {MAX_IDENTIFIER_LEN} characters"
        )));
    }
    match kind {
        "dns" => check_dns(cfg, value).map(AcmeIdentifier::dns),
        "ip" => check_ip(cfg, value).map(|ip| AcmeIdentifier::ip(ip.to_string())),
        other => Err(Problem::new(
            ProblemType::UnsupportedIdentifier,
            format!(
                "identifier type {} is not supported (dns, ip)",
                shown(other)
            ),
        )),
    }
}

pub fn check_dns(cfg: &CaConfig, value: &str) -> Result<String, Problem> {
    if value.starts_with("*.") {
        return Err(reject(format!(
            "{} is a wildcard; this CA issues certificates for individual names only",
            shown(value)
        )));
    }
    let name = normalize_dns_name(value);
    if !is_valid_dns_name(&name) {
        return Err(reject(format!(
            "{} is not a valid DNS name (dot-separated labels of letters, digits and hyphens)",
            shown(value)
        )));
    }
    if is_localhost(&name) {
        return Err(reject(format!(
            "{} is a localhost name, which is never certified",
            shown(value)
        )));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(reject(format!(
            "{} is an IP address; use an identifier of type \"ip\"",
            shown(value)
        )));
    }
    let under_suffix = cfg.domain_suffixes.iter().any(|s| is_at_or_under(&name, s));
    let under_local = cfg.allow_local && name != "local" && is_at_or_under(&name, "local");
    if !under_suffix && !under_local {
        let mut allowed: Vec<String> = cfg.domain_suffixes.clone();
        if cfg.allow_local {
            allowed.push("local".into());
        }
        return Err(reject(format!(
            "{} is outside the domains this CA certifies ({})",
            shown(value),
            allowed.join(", ")
        )));
    }
    Ok(name)
}

pub fn check_ip(cfg: &CaConfig, value: &str) -> Result<IpAddr, Problem> {
    let ip: IpAddr = value
        .parse()
        .map_err(|_| Problem::malformed(format!("{} is not an IP address", shown(value))))?;
    if !cfg.allow_ip {
        return Err(reject("this CA does not certify IP addresses".into()));
    }
    if !cfg.http01 {
        return Err(reject(
            "IP identifiers are validated with http-01, which is turned off".into(),
        ));
    }
    if !is_local_ip(&ip) {
        return Err(reject(format!(
            "{ip} is not a private, link-local or loopback address"
        )));
    }
    Ok(ip)
}

/// RFC 9444 `ancestorDomain` of `name`: a proper, label-wise ancestor this CA may authorize.
pub fn check_ancestor(cfg: &CaConfig, name: &str, ancestor: &Value) -> Result<String, Problem> {
    let Value::String(a) = ancestor else {
        return Err(Problem::malformed("\"ancestorDomain\" must be a string"));
    };
    if !cfg.subdomain_auth {
        return Err(reject(
            "this CA does not offer subdomain authorization (RFC 9444)".into(),
        ));
    }
    let a = check_dns(cfg, a)?;
    if a == name || !is_at_or_under(name, &a) {
        return Err(Problem::malformed(format!(
            "\"ancestorDomain\" {a:?} is not an ancestor of {name:?}"
        )));
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn default_cfg() -> CaConfig {
        let mut c = CaConfig::new(
            "/tmp/x".into(),
            vec!["devices.example.test".into()],
            "127.0.0.1:53".parse().unwrap(),
        );
        c.validate().unwrap();
        c
    }

    /// `.local` names and IP identifiers switched on.
    fn cfg() -> CaConfig {
        let mut c = default_cfg();
        c.allow_local = true;
        c.allow_ip = true;
        c
    }

    #[test]
    fn local_names_and_ips_are_refused_unless_switched_on() {
        let c = default_cfg();
        for (kind, value) in [
            ("dns", "printer.local"),
            ("dns", "localhost"),
            ("dns", "printer"),
            ("dns", "printer.internal"),
            ("ip", "127.0.0.1"),
            ("ip", "10.1.2.3"),
        ] {
            let p = check(&c, kind, value).unwrap_err();
            assert_eq!(p.kind, ProblemType::RejectedIdentifier, "{value}");
        }
        let on = cfg();
        assert!(check(&on, "dns", "printer.local").is_ok());
        assert!(check(&on, "ip", "127.0.0.1").is_ok());
    }

    #[test]
    fn names() {
        let c = cfg();
        assert_eq!(
            check(&c, "dns", "A.Devices.Example.Test.").unwrap().value,
            "a.devices.example.test"
        );
        assert!(check(&c, "dns", "devices.example.test").is_ok());
        assert!(check(&c, "dns", "printer.local").is_ok());
        for bad in [
            "localhost",
            "x.localhost",
            "example.test",
            "baddevices.example.test",
            "*.devices.example.test",
            "a..devices.example.test",
            "local",
            "10.0.0.1",
            "",
        ] {
            let p = check(&c, "dns", bad).unwrap_err();
            assert_eq!(p.kind, ProblemType::RejectedIdentifier, "{bad}");
        }
        let long = format!("{}.devices.example.test", "a".repeat(300));
        assert!(check(&c, "dns", &long).is_err());
        assert_eq!(
            check(&c, "email", "x").unwrap_err().kind,
            ProblemType::UnsupportedIdentifier
        );
    }

    #[test]
    fn ips() {
        let c = cfg();
        assert_eq!(check(&c, "ip", "10.1.2.3").unwrap().value, "10.1.2.3");
        assert_eq!(check(&c, "ip", "fd00:0::1").unwrap().value, "fd00::1");
        assert_eq!(
            check(&c, "ip", "8.8.8.8").unwrap_err().kind,
            ProblemType::RejectedIdentifier
        );
        assert_eq!(
            check(&c, "ip", "not-an-ip").unwrap_err().kind,
            ProblemType::Malformed
        );
    }

    #[test]
    fn ancestors() {
        let c = cfg();
        let n = "a.b.devices.example.test";
        assert_eq!(
            check_ancestor(&c, n, &json!("devices.example.test")).unwrap(),
            "devices.example.test"
        );
        assert!(check_ancestor(&c, n, &json!("b.devices.example.test")).is_ok());
        assert!(check_ancestor(&c, n, &json!(n)).is_err());
        assert!(
            check_ancestor(
                &c,
                "ooo.devices.example.test",
                &json!("oo.devices.example.test")
            )
            .is_err()
        );
        assert!(check_ancestor(&c, n, &json!("example.test")).is_err());
        assert!(check_ancestor(&c, n, &json!(5)).is_err());
        assert!(parse_identifier(&c, &json!({"type": "dns"})).is_err());
    }
}
