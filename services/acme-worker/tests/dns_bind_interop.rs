//! `Rfc2136Provider` against a real BIND 9 primary with a TSIG key and an update policy, as
//! operators run it (shared/notes/acme.md §4). Skips loudly without BIND; fails under
//! `RAGW_REQUIRE_PEERS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use hickory_proto::rr::RecordType;
use ragw_acme_worker::dns::{
    DnsError, DnsMetrics, DnsProvider, Rfc2136Config, Rfc2136Provider, Rfc2136Transport,
    TsigAlgorithm, TsigKey,
};

const ZONE: &str = "devices.example.test";

struct Bind {
    addr: SocketAddr,
    key_file: std::path::PathBuf,
    _named: common::KillOnDrop,
    _dir: tempfile::TempDir,
}

/// BIND as primary of `ZONE`, granting the key `acme-update` TXT changes anywhere in the zone;
/// the key `other-key` is known but granted nothing.
fn start_bind(named: &Path, tsig_keygen: &Path) -> Bind {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key_file = d.join("acme-update.key");
    for (name, file) in [
        ("acme-update", &key_file),
        ("other-key", &d.join("other.key")),
    ] {
        let out = Command::new(tsig_keygen)
            .args(["-a", "hmac-sha256", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        std::fs::write(file, &out.stdout).unwrap();
    }
    let port = common::free_port();
    std::fs::write(
        d.join("named.conf"),
        format!(
            r#"include "{d}/acme-update.key";
include "{d}/other.key";
options {{
  directory "{d}";
  pid-file "{d}/named.pid";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  allow-query {{ 127.0.0.1; }};
  dnssec-validation no;
}};
controls {{ }};
zone "{ZONE}" {{
  type primary;
  file "{d}/db.{ZONE}";
  update-policy {{ grant acme-update. zonesub TXT; }};
}};
"#,
            d = d.display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join(format!("db.{ZONE}")),
        format!(
            "$TTL 60\n@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60\n  IN NS ns1.{ZONE}.\nns1 IN A 127.0.0.1\n"
        ),
    )
    .unwrap();
    let named = common::start_named(named, d);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    common::wait_until("named to answer", || {
        common::query(addr, &format!("{ZONE}."), RecordType::SOA).is_some()
    });
    Bind {
        addr,
        key_file,
        _named: named,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc2136_provider_against_bind() {
    let Some(named) = common::find_program("named", "bind9") else {
        return;
    };
    let Some(keygen) = common::find_program("tsig-keygen", "bind9") else {
        return;
    };
    let Some(dig) = common::find_program("dig", "bind9-dnsutils") else {
        return;
    };
    let bind = start_bind(&named, &keygen);
    // The provider reads the very file BIND includes.
    let key = TsigKey::from_bind_file(&bind.key_file, None).unwrap();
    assert_eq!(key.name(), "acme-update");
    let metrics = DnsMetrics::new();

    for transport in [Rfc2136Transport::Udp, Rfc2136Transport::Tcp] {
        let mut config = Rfc2136Config::new(bind.addr, ZONE, key.clone());
        config.transport = transport;
        let provider = Rfc2136Provider::new(config)
            .unwrap()
            .with_metrics(metrics.clone());
        let name = format!("_acme-challenge.k7q2m9x4.{ZONE}");

        // Two concurrent challenges on one name (pre-authorization and a renewal).
        let (a, b) = tokio::join!(
            provider.add_txt(&name, "first-token"),
            provider.add_txt(&name, "second-token")
        );
        a.unwrap();
        b.unwrap();
        provider.add_txt(&name, "first-token").await.unwrap();
        assert_eq!(
            common::dig_txt(&dig, bind.addr, &name, false),
            ["first-token", "second-token"],
            "{transport:?}"
        );

        provider.remove_txt(&name, "first-token").await.unwrap();
        assert_eq!(
            common::dig_txt(&dig, bind.addr, &name, true),
            ["second-token"]
        );
        // Removing what is not there is fine (cleanup after a failure).
        provider.remove_txt(&name, "first-token").await.unwrap();
        provider.remove_txt(&name, "second-token").await.unwrap();
        assert!(common::dig_txt(&dig, bind.addr, &name, false).is_empty());

        // A value longer than one character-string round-trips.
        let long = "L".repeat(300);
        provider.add_txt(&name, &long).await.unwrap();
        assert_eq!(
            common::dig_txt(&dig, bind.addr, &name, false),
            std::slice::from_ref(&long)
        );
        provider.remove_txt(&name, &long).await.unwrap();
        assert!(common::dig_txt(&dig, bind.addr, &name, false).is_empty());
    }
    assert_eq!(metrics.update_count("rfc2136", "add", "ok"), 8);
    assert_eq!(metrics.update_count("rfc2136", "remove", "ok"), 8);

    let name = format!("_acme-challenge.wrong.{ZONE}");
    let provider_with = |key: TsigKey| {
        Rfc2136Provider::new(Rfc2136Config::new(bind.addr, ZONE, key))
            .unwrap()
            .with_metrics(metrics.clone())
    };

    // The right name, the wrong secret: BIND answers NOTAUTH/BADSIG.
    let wrong_secret = TsigKey::generate("acme-update", TsigAlgorithm::HmacSha256).unwrap();
    let err = provider_with(wrong_secret)
        .add_txt(&name, "x")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DnsError::TsigRejected { detail, .. } if detail.contains("BADSIG")),
        "{err}"
    );
    assert!(err.to_string().contains("refused the TSIG key"), "{err}");
    assert_eq!(metrics.update_count("rfc2136", "add", "tsig_rejected"), 1);

    // A key BIND does not know: BADKEY.
    let unknown = TsigKey::generate("nobody", TsigAlgorithm::HmacSha256).unwrap();
    let err = provider_with(unknown)
        .add_txt(&name, "x")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DnsError::TsigRejected { detail, .. } if detail.contains("BADKEY")),
        "{err}"
    );

    // A key BIND knows but whose update policy grants nothing: REFUSED.
    let other = TsigKey::from_bind_file(&bind._dir.path().join("other.key"), None).unwrap();
    let err = provider_with(other).add_txt(&name, "x").await.unwrap_err();
    assert!(matches!(err, DnsError::Refused { .. }), "{err}");

    // A zone BIND does not serve.
    let provider =
        Rfc2136Provider::new(Rfc2136Config::new(bind.addr, "elsewhere.test", key.clone())).unwrap();
    let err = provider
        .add_txt("_acme-challenge.elsewhere.test", "x")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DnsError::NotAuthoritative { .. } | DnsError::Refused { .. }
        ),
        "{err}"
    );

    // Names outside the configured zone never leave the process.
    let provider = provider_with(key);
    let err = provider
        .add_txt("_acme-challenge.example.com", "x")
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::NotInZone { .. }), "{err}");
    assert!(common::dig_txt(&dig, bind.addr, &name, false).is_empty());
}
