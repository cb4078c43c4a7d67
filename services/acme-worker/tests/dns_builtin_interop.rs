//! The built-in DNS server against real clients: `nsupdate -k` with the key file it writes,
//! `dig`, ragw's own `Rfc2136Provider`, and BIND as a secondary of the server in its
//! stealth-primary role. Tests needing BIND tools skip loudly without them and fail under
//! `RAGW_REQUIRE_PEERS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use ragw_acme_worker::dns::{
    BuiltinDns, BuiltinDnsConfig, DnsError, DnsMetrics, DnsProvider, Rfc2136Config,
    Rfc2136Provider, Rfc2136Transport, TsigAlgorithm, TsigKey,
};
use tokio::sync::oneshot;

const ZONE: &str = "devices.ragw.test";

/// A running built-in server; stops when dropped.
struct Running {
    dns: BuiltinDns,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), DnsError>>>,
}

impl Running {
    async fn start(config: BuiltinDnsConfig, metrics: DnsMetrics) -> Self {
        let dns = BuiltinDns::bind(config, metrics).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(dns.serve(async {
            let _ = stopped.await;
        }));
        Self {
            dns,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn loopback() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

fn script(addr: SocketAddr, body: &str) -> String {
    format!(
        "server {} {}\nzone {ZONE}\n{body}\nsend\n",
        addr.ip(),
        addr.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsupdate_and_dig_against_the_builtin_server() {
    let Some(nsupdate) = common::find_program("nsupdate", "bind9-dnsutils") else {
        return;
    };
    let Some(dig) = common::find_program("dig", "bind9-dnsutils") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("dns/update.key");
    let metrics = DnsMetrics::new();
    let server = Running::start(
        BuiltinDnsConfig::new(loopback(), &[ZONE], &key_file),
        metrics.clone(),
    )
    .await;
    let dns = &server.dns;
    assert!(dns.key_created());
    assert_eq!(dns.udp_addr().port(), dns.tcp_addr().port());
    assert_ne!(dns.udp_addr().port(), 0);
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    if let Some(check) = common::find_optional("named-checkconf", "bind9-utils") {
        // BIND itself accepts the key file.
        let conf = dir.path().join("check.conf");
        std::fs::write(&conf, format!("include \"{}\";\n", key_file.display())).unwrap();
        let out = std::process::Command::new(check)
            .arg(&conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let addr = dns.udp_addr();
    let name = format!("_acme-challenge.k7q2m9x4.{ZONE}.");

    let (ok, out) = common::nsupdate(
        &nsupdate,
        Some(&key_file),
        &script(
            addr,
            &format!(
                "update add {name} 60 TXT \"value-one\"\nupdate add {name} 60 TXT \"value-two\""
            ),
        ),
    );
    assert!(ok, "nsupdate failed: {out}");
    assert_eq!(
        common::dig_txt(&dig, addr, &name, false),
        ["value-one", "value-two"]
    );
    assert_eq!(
        common::dig_txt(&dig, addr, &name, true),
        ["value-one", "value-two"]
    );
    assert_eq!(dns.txt_values(&name).unwrap(), ["value-one", "value-two"]);

    // Delete one value: the other stays.
    let (ok, out) = common::nsupdate(
        &nsupdate,
        Some(&key_file),
        &script(addr, &format!("update delete {name} TXT \"value-one\"")),
    );
    assert!(ok, "nsupdate failed: {out}");
    assert_eq!(common::dig_txt(&dig, addr, &name, false), ["value-two"]);

    // Unsigned: refused, nothing changes.
    let (ok, out) = common::nsupdate(
        &nsupdate,
        None,
        &script(addr, &format!("update add {name} 60 TXT \"unsigned\"")),
    );
    assert!(!ok, "an unsigned update succeeded: {out}");
    assert!(out.contains("REFUSED"), "{out}");
    // Another key of the same name: BADSIG.
    let wrong = dir.path().join("wrong.key");
    std::fs::write(
        &wrong,
        TsigKey::generate("ragw-dns-update", TsigAlgorithm::HmacSha256)
            .unwrap()
            .to_bind_config(),
    )
    .unwrap();
    let (ok, out) = common::nsupdate(
        &nsupdate,
        Some(&wrong),
        &script(addr, &format!("update add {name} 60 TXT \"forged\"")),
    );
    assert!(!ok, "a forged update succeeded: {out}");
    assert!(out.contains("BADSIG") || out.contains("NOTAUTH"), "{out}");
    // Other types are refused even with the key.
    let (ok, out) = common::nsupdate(
        &nsupdate,
        Some(&key_file),
        &script(addr, &format!("update add k7q2m9x4.{ZONE}. 60 A 192.0.2.1")),
    );
    assert!(!ok && out.contains("REFUSED"), "{out}");
    assert_eq!(common::dig_txt(&dig, addr, &name, false), ["value-two"]);

    // Delete the whole TXT RRset, nsupdate style.
    let (ok, out) = common::nsupdate(
        &nsupdate,
        Some(&key_file),
        &script(addr, &format!("update delete {name} TXT")),
    );
    assert!(ok, "nsupdate failed: {out}");
    assert!(common::dig_txt(&dig, addr, &name, false).is_empty());
    let nx = common::query(addr, &name, RecordType::TXT).unwrap();
    assert_eq!(nx.response_code, ResponseCode::NXDomain);

    // Outside the zone: REFUSED.
    let outside = common::query(addr, "example.com.", RecordType::TXT).unwrap();
    assert_eq!(outside.response_code, ResponseCode::Refused);

    assert_eq!(metrics.server_update_count("NOERROR"), 3);
    assert_eq!(metrics.server_update_count("REFUSED"), 2);
    assert_eq!(metrics.server_update_count("NOTAUTH"), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_generated_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("update.key");
    let config = BuiltinDnsConfig::new(loopback(), &[ZONE], &key_file);
    let first = Running::start(config.clone(), DnsMetrics::new()).await;
    let key = first.dns.tsig_key().clone();
    assert!(first.dns.key_created());
    assert_eq!(first.dns.key_file(), key_file);
    first.shutdown().await;

    let second = Running::start(config, DnsMetrics::new()).await;
    assert!(!second.dns.key_created());
    assert_eq!(second.dns.tsig_key(), &key);
    assert_eq!(TsigKey::from_bind_file(&key_file, None).unwrap(), key);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_twice_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(
        BuiltinDnsConfig::new(loopback(), &[ZONE], dir.path().join("k")),
        DnsMetrics::new(),
    )
    .await;
    let err = running.dns.serve(std::future::pending()).await.unwrap_err();
    assert!(err.to_string().contains("already serving"), "{err}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc2136_provider_against_the_builtin_server() {
    let dir = tempfile::tempdir().unwrap();
    let server_metrics = DnsMetrics::new();
    let server = Running::start(
        BuiltinDnsConfig::new(loopback(), &[ZONE], dir.path().join("update.key")),
        server_metrics.clone(),
    )
    .await;
    let addr = server.dns.udp_addr();
    let key = TsigKey::from_bind_file(server.dns.key_file(), None).unwrap();
    let client_metrics = DnsMetrics::new();
    let name = format!("_acme-challenge.p3x8w1zq.{ZONE}");

    for transport in [Rfc2136Transport::Udp, Rfc2136Transport::Tcp] {
        let mut config = Rfc2136Config::new(addr, ZONE, key.clone());
        config.transport = transport;
        let provider = Rfc2136Provider::new(config)
            .unwrap()
            .with_metrics(client_metrics.clone());
        let adds: Vec<_> = (0..8)
            .map(|i| {
                let provider = &provider;
                let name = name.clone();
                async move { provider.add_txt(&name, &format!("token-{i}")).await }
            })
            .collect();
        for result in futures::future::join_all(adds).await {
            result.unwrap();
        }
        let values = common::txt_values(addr, &format!("{name}.")).unwrap();
        assert_eq!(values.len(), 8, "{transport:?}: {values:?}");
        for i in 0..8 {
            provider
                .remove_txt(&name, &format!("token-{i}"))
                .await
                .unwrap();
        }
        assert!(common::txt_values(addr, &format!("{name}.")).is_none());
    }
    assert_eq!(client_metrics.update_count("rfc2136", "add", "ok"), 16);
    assert_eq!(server_metrics.server_update_count("NOERROR"), 32);

    let provider_with =
        |key: TsigKey| Rfc2136Provider::new(Rfc2136Config::new(addr, ZONE, key)).unwrap();
    let err =
        provider_with(TsigKey::generate("ragw-dns-update", TsigAlgorithm::HmacSha256).unwrap())
            .add_txt(&name, "x")
            .await
            .unwrap_err();
    assert!(
        matches!(&err, DnsError::TsigRejected { detail, .. } if detail.contains("BADSIG")),
        "{err}"
    );
    let err = provider_with(TsigKey::generate("someone", TsigAlgorithm::HmacSha256).unwrap())
        .add_txt(&name, "x")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DnsError::TsigRejected { detail, .. } if detail.contains("BADKEY")),
        "{err}"
    );
    let err = Rfc2136Provider::new(Rfc2136Config::new(addr, "ragw.test", key.clone()))
        .unwrap()
        .add_txt("_acme-challenge.ragw.test", "x")
        .await
        .unwrap_err();
    assert!(matches!(err, DnsError::NotAuthoritative { .. }), "{err}");
    assert!(server.dns.txt_values(&name).unwrap().is_empty());

    // The in-process provider and RFC 2136 clients share one record set.
    server.dns.add_txt(&name, "in-process").await.unwrap();
    provider_with(key.clone())
        .add_txt(&name, "over-the-wire")
        .await
        .unwrap();
    assert_eq!(
        common::txt_values(addr, &format!("{name}.")).unwrap(),
        ["in-process", "over-the-wire"]
    );
    server.shutdown().await;
}

/// BIND as a public secondary of the built-in server (the stealth-primary setup): it
/// transfers the zone with TSIG, gets a NOTIFY after each change, and serves the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_secondary_of_the_stealth_primary() {
    let Some(named) = common::find_program("named", "bind9") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bind_port = common::free_port();
    let bind_addr: SocketAddr = ([127, 0, 0, 1], bind_port).into();

    let mut config = BuiltinDnsConfig::new(loopback(), &[ZONE], d.join("ragw.key"));
    config.allow_transfer = true;
    config.notify = vec![bind_addr];
    let server = Running::start(config, DnsMetrics::new()).await;
    let primary = server.dns.udp_addr();
    let key_name = server.dns.tsig_key().name().to_owned();
    let name = format!("_acme-challenge.k7q2m9x4.{ZONE}");
    server.dns.add_txt(&name, "before-transfer").await.unwrap();

    write_secondary_conf(d, bind_port, primary, &key_name);
    let _named = common::start_named(&named, d);
    common::wait_until("BIND to transfer the zone", || {
        common::txt_values(bind_addr, &format!("{name}.")).is_some_and(|v| v == ["before-transfer"])
    });

    // A change reaches the secondary through NOTIFY + transfer.
    server.dns.add_txt(&name, "after-notify").await.unwrap();
    common::wait_until("BIND to pick up an added record", || {
        common::txt_values(bind_addr, &format!("{name}."))
            .is_some_and(|v| v == ["after-notify", "before-transfer"])
    });
    server
        .dns
        .remove_txt(&name, "before-transfer")
        .await
        .unwrap();
    server.dns.remove_txt(&name, "after-notify").await.unwrap();
    common::wait_until("BIND to drop the removed records", || {
        common::query(bind_addr, &format!("{name}."), RecordType::TXT)
            .is_some_and(|m| m.response_code == ResponseCode::NXDomain)
    });
    server.shutdown().await;
}

fn write_secondary_conf(d: &Path, port: u16, primary: SocketAddr, key_name: &str) {
    std::fs::write(
        d.join("named.conf"),
        format!(
            r#"include "{d}/ragw.key";
options {{
  directory "{d}";
  pid-file "{d}/named.pid";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  allow-query {{ 127.0.0.1; }};
  dnssec-validation no;
  notify no;
}};
controls {{ }};
zone "{ZONE}" {{
  type secondary;
  file "{d}/secondary.db";
  primaries {{ {ip} port {pport} key "{key_name}"; }};
}};
"#,
            d = d.display(),
            ip = primary.ip(),
            pport = primary.port(),
        ),
    )
    .unwrap();
}
