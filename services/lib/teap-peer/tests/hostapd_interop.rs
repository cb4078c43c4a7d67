//! The peer against a real TEAP server: hostap 2.10's hostapd as a standalone RADIUS server
//! (`driver=none`, integrated EAP server), built from Debian's `wpa` sources by
//! `.ci/build-hostap-peers` (binary from `RAGW_HOSTAPD`, else `/var/tmp/ragw-peers/hostap-*/`).
//! Cases: a Phase 1 client certificate with no inner method (`eap_teap_auth=2`, RFC 9930
//! Appendix C.13) under both PRF hashes, and Basic-Password-Auth (`eap_teap_auth=1`, Appendix
//! C.1). The peer's own MSK must equal the MSK hostapd hands out in MS-MPPE-Recv/Send-Key.
//!
//! Skips loudly when hostapd is missing; fails instead with `RAGW_REQUIRE_PEERS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ragw_teap_peer::{
    Peer, PeerConfig, RadiusAttrs, RadiusOutcome, client_tls_config, run_over_radius,
};
use rustls_pki_types::ServerName;
use support::{Pki, SERVER_NAME};

const SECRET: &str = "interop-secret";
/// hostapd reads its Authority-ID from the EAP-FAST options: "ragwtestauthorit" in hex.
const A_ID_HEX: &str = "7261677774657374617574686f726974";

fn peers_required() -> bool {
    std::env::var("RAGW_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

fn find_hostapd() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RAGW_HOSTAPD").map(PathBuf::from)
        && path.is_file()
    {
        return Some(path);
    }
    let dir = std::env::var_os("RAGW_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/ragw-peers"));
    let found = std::fs::read_dir(&dir).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("hostap-"))
            .map(|e| e.path().join("hostapd"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if peers_required() {
            panic!(
                "RAGW_REQUIRE_PEERS=1 but no hostapd with EAP-TEAP (set RAGW_HOSTAPD or run .ci/build-hostap-peers)"
            );
        }
        let bar = "!".repeat(78);
        let _ = writeln!(
            std::io::stderr().lock(),
            "\n{bar}\n!!! SKIPPED: no TEAP-capable hostapd (RAGW_HOSTAPD, {}/hostap-*/hostapd).\n\
             !!! Build it with .ci/build-hostap-peers. This interoperability test did NOT run.\n\
             !!! Set RAGW_REQUIRE_PEERS=1 to fail instead.\n{bar}\n",
            dir.display()
        );
    }
    found
}

/// A running hostapd, killed on drop (only this child, by its handle).
struct Hostapd {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Hostapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Hostapd {
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// Optional hostapd settings of one case.
#[derive(Default)]
struct Tweaks<'a> {
    openssl_ciphers: Option<&'a str>,
    fragment_size: Option<usize>,
}

fn start_hostapd(binary: &Path, pki: &Pki, teap_auth: u8, tweaks: Tweaks<'_>) -> Hostapd {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(path("server.pem"), &pki.server_cert_pem).unwrap();
    std::fs::write(path("server.key"), &pki.server_key_pem).unwrap();
    std::fs::write(path("clients"), format!("127.0.0.1/32 {SECRET}\n")).unwrap();
    std::fs::write(
        path("users"),
        "* TEAP\n\"/CN=device-0001\" TLS [2]\n\"alice\" MSCHAPV2,GTC \"correct horse\" [2]\n",
    )
    .unwrap();
    let port = free_udp_port();
    let mut conf = format!(
        "driver=none\ninterface=ragwpeer{port}\nlogger_stdout=-1\nlogger_stdout_level=0\n\
         eap_server=1\neap_user_file={users}\nradius_server_clients={clients}\n\
         radius_server_auth_port={port}\nca_cert={ca}\nserver_cert={cert}\nprivate_key={key}\n\
         eap_server_erp=0\neap_teap_auth={teap_auth}\neap_teap_id=0\neap_fast_a_id={A_ID_HEX}\n\
         eap_fast_a_id_info=ragw test\npac_opaque_encr_key=000102030405060708090a0b0c0d0e0f\n\
         tls_flags=[DISABLE-TLSv1.3]\n",
        users = path("users").display(),
        clients = path("clients").display(),
        ca = path("ca.pem").display(),
        cert = path("server.pem").display(),
        key = path("server.key").display(),
    );
    if let Some(ciphers) = tweaks.openssl_ciphers {
        conf.push_str(&format!("openssl_ciphers={ciphers}\n"));
    }
    if let Some(size) = tweaks.fragment_size {
        conf.push_str(&format!("fragment_size={size}\n"));
    }
    std::fs::write(path("hostapd.conf"), conf).unwrap();
    let log = path("hostapd.log");
    let child = Command::new(binary)
        .arg("-dd")
        .arg(path("hostapd.conf"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hostapd");
    Hostapd {
        child,
        log,
        addr: ([127, 0, 0, 1], port).into(),
        _dir: dir,
    }
}

fn peer(pki: &Pki, client_cert: bool, password: Option<&str>, max_fragment: usize) -> Peer {
    let client_auth = client_cert.then(|| (pki.client_chain.clone(), pki.client_key.clone_key()));
    let tls = client_tls_config(std::slice::from_ref(&pki.ca_der), client_auth).unwrap();
    let mut config = PeerConfig::new(
        tls,
        ServerName::try_from(SERVER_NAME).unwrap(),
        "anonymous@example",
    );
    config.password = password.map(|p| ("alice".to_string(), p.as_bytes().to_vec()));
    config.max_fragment = max_fragment;
    Peer::new(config).unwrap()
}

fn attrs() -> RadiusAttrs {
    RadiusAttrs {
        calling_station_id: Some("02-00-00-00-00-01".into()),
        nas_identifier: Some("ragw-peer-interop".into()),
        framed_mtu: Some(1400),
        // hostapd needs a moment to open its RADIUS port: the first requests are retransmitted.
        timeout: Duration::from_millis(500),
        max_tries: 20,
    }
}

fn run(hostapd: &Hostapd, peer: Peer) -> RadiusOutcome {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match runtime.block_on(run_over_radius(
        peer,
        hostapd.addr,
        SECRET.as_bytes(),
        attrs(),
    )) {
        Ok(outcome) => outcome,
        Err(error) => panic!("{error}\nhostapd log tail:\n{}", hostapd.log_tail()),
    }
}

fn assert_accepted_with_matching_msk(hostapd: &Hostapd, outcome: &RadiusOutcome) {
    assert!(
        outcome.accepted && outcome.peer.success,
        "{outcome:?}\nhostapd log tail:\n{}",
        hostapd.log_tail()
    );
    let msk = outcome.peer.keys.as_ref().unwrap().msk;
    assert_eq!(
        outcome.radius_msk,
        Some(msk),
        "hostapd's MS-MPPE keys carry the MSK the peer derived"
    );
    assert_eq!(outcome.peer.crypto_binding_rounds, 1);
    assert_eq!(
        outcome.peer.authority_id.as_deref(),
        Some(&b"ragwtestauthorit"[..])
    );
}

#[test]
fn client_certificate_without_inner_method_against_hostapd() {
    let Some(binary) = find_hostapd() else {
        return;
    };
    let pki = Pki::new();
    // Default suite with an EC key: ECDHE-ECDSA-AES256-GCM-SHA384 (PRF SHA-384); then
    // AES128-GCM-SHA256 (PRF SHA-256) with small fragments both ways, so hostapd reassembles
    // the peer's fragments and the peer hostapd's.
    let cases = [
        (Tweaks::default(), 1024, 0xc02c_u16),
        (
            Tweaks {
                openssl_ciphers: Some("ECDHE-ECDSA-AES128-GCM-SHA256"),
                fragment_size: Some(200),
            },
            100,
            0xc02b,
        ),
    ];
    for (tweaks, max_fragment, suite) in cases {
        let fragmented = tweaks.fragment_size.is_some();
        let hostapd = start_hostapd(&binary, &pki, 2, tweaks);
        let outcome = run(&hostapd, peer(&pki, true, None, max_fragment));
        assert_accepted_with_matching_msk(&hostapd, &outcome);
        assert_eq!(outcome.peer.cipher_suite, Some(suite));
        if fragmented {
            assert!(
                outcome.requests > 10,
                "fragments and ACKs were exchanged: {} requests",
                outcome.requests
            );
        }
    }
}

#[test]
fn outer_identity_type_tlv_against_hostapd() {
    let Some(binary) = find_hostapd() else {
        return;
    };
    let pki = Pki::new();
    let hostapd = start_hostapd(&binary, &pki, 2, Tweaks::default());
    let client_auth = Some((pki.client_chain.clone(), pki.client_key.clone_key()));
    let tls = client_tls_config(std::slice::from_ref(&pki.ca_der), client_auth).unwrap();
    let mut config = PeerConfig::new(
        tls,
        ServerName::try_from(SERVER_NAME).unwrap(),
        "anonymous@example",
    );
    config.outer_tlvs = ragw_teap::tlv::Tlv::IdentityType(2).encode().unwrap();
    let outcome = run(&hostapd, Peer::new(config).unwrap());
    assert_accepted_with_matching_msk(&hostapd, &outcome);
}

#[test]
fn basic_password_against_hostapd() {
    let Some(binary) = find_hostapd() else {
        return;
    };
    let pki = Pki::new();
    let hostapd = start_hostapd(&binary, &pki, 1, Tweaks::default());
    let outcome = run(&hostapd, peer(&pki, false, Some("correct horse"), 1024));
    assert_accepted_with_matching_msk(&hostapd, &outcome);
    assert_eq!(outcome.peer.password_prompts.len(), 1);

    let hostapd = start_hostapd(&binary, &pki, 1, Tweaks::default());
    let outcome = run(&hostapd, peer(&pki, false, Some("wrong"), 1024));
    assert!(!outcome.accepted, "{outcome:?}");
    assert!(!outcome.peer.success);
    assert_eq!(outcome.radius_msk, None);
}
