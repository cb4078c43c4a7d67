//! The hostap peers against each other, before they are pointed at ragw's own TEAP server:
//! hostap's TEAP peer `eapol_test` authenticates over RADIUS to hostapd's integrated EAP-TEAP
//! server (a standalone RADIUS server, `driver=none`), TLS 1.2, with a phase-1 client
//! certificate and no inner method, with Basic-Password-Auth inside the tunnel, and with an
//! inner EAP-MSCHAPv2 (whose MSK feeds the key schedule, unlike the other two). The MSK
//! the peer derives must equal the one hostapd derives and the MS-MPPE keys of its
//! Access-Accept; a wrong password must fail. This proves the binaries and the test harness
//! (locators, config writer, runner, MSK parsing) are real.
//! Skips loudly without the hostap builds; fails under `RAGW_REQUIRE_PEERS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use support::{
    EapolTestConfig, KillOnDrop, TeapPeerAuth, eapol_test, free_udp_port, hexdump, hostapd,
    run_eapol_test, write_eapol_test_config,
};

const SECRET: &str = "hostap-reference-secret";
const DEVICE: &str = "device-0001";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn write_pem(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

/// A throwaway CA with a server certificate for hostapd and a client certificate for the peer
/// (ECDSA P-256).
fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hostap reference CA");
    let ca = write_pem(
        dir,
        "ca.pem",
        &ca_params.self_signed(&ca_key).unwrap().pem(),
    );
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose, san: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(san).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (
            write_pem(dir, &format!("{name}.pem"), &cert.pem()),
            write_pem(dir, &format!("{name}.key"), &key.serialize_pem()),
        )
    };
    let (server_cert, server_key) = leaf(
        "radius.example.test",
        ExtendedKeyUsagePurpose::ServerAuth,
        vec!["radius.example.test".to_string()],
    );
    let (client_cert, client_key) = leaf(DEVICE, ExtendedKeyUsagePurpose::ClientAuth, vec![]);
    Pki {
        ca,
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

/// How hostapd's TEAP server authenticates the peer (its `eap_teap_auth`).
#[derive(Clone, Copy)]
enum ServerAuth {
    /// 2: a phase-1 client certificate suffices, no inner method.
    ClientCertificate = 2,
    /// 1: Basic-Password-Auth inside the tunnel.
    BasicPassword = 1,
    /// 0: an inner EAP method (the user's first method in the user file: MSCHAPv2).
    InnerEap = 0,
}

struct Hostapd {
    _process: KillOnDrop,
    log: PathBuf,
    radius: SocketAddr,
}

impl Hostapd {
    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap()).into_owned()
    }
}

/// hostapd as a RADIUS server on a free port with its EAP-TEAP server, TLS 1.2 only, debug
/// log with keys (`-dd -K`) in `DIR/hostapd.log`; returns once it serves.
fn start_hostapd(hostapd: &Path, dir: &Path, pki: &Pki, auth: ServerAuth) -> Hostapd {
    let users = dir.join("hostapd.eap_user");
    // Phase 1: any identity gets TEAP. Phase 2 ([2]): the client certificate's subject as
    // hostapd spells it, and the password user (Basic-Password-Auth or inner EAP-MSCHAPv2).
    std::fs::write(
        &users,
        format!("*\tTEAP\n\"/CN={DEVICE}\"\tTLS\t[2]\n\"{USER}\"\tMSCHAPV2\t\"{PASSWORD}\"\t[2]\n"),
    )
    .unwrap();
    let clients = dir.join("hostapd.radius_clients");
    std::fs::write(&clients, format!("127.0.0.1/32 {SECRET}\n")).unwrap();
    let port = free_udp_port();
    let config = dir.join("hostapd.conf");
    // eap_fast_a_id(_info): the TEAP server's Authority-ID; pac_opaque_encr_key: required by
    // hostapd's TEAP server even when it never provisions PACs.
    std::fs::write(
        &config,
        format!(
            "driver=none\ninterface=ragwnone0\nlogger_stdout=-1\nlogger_stdout_level=0\n\
             eap_server=1\neap_user_file={users}\nradius_server_clients={clients}\n\
             radius_server_auth_port={port}\nca_cert={ca}\nserver_cert={cert}\nprivate_key={key}\n\
             tls_flags=[DISABLE-TLSv1.3]\neap_server_erp=0\neap_teap_auth={auth}\neap_teap_id=0\n\
             eap_fast_a_id=7261677774657374617574686f726974\neap_fast_a_id_info=ragw test\n\
             pac_opaque_encr_key=000102030405060708090a0b0c0d0e0f\n",
            users = users.display(),
            clients = clients.display(),
            ca = pki.ca.display(),
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            auth = auth as u8,
        ),
    )
    .unwrap();
    let log = dir.join("hostapd.log");
    let mut child = Command::new(hostapd)
        .args(["-dd", "-K"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Only so a broken hostapd cannot hang the test; no assertion depends on it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
        if text.contains("Setup of interface done") {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("hostapd exited ({status}) before serving:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "hostapd did not come up:\n{text}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    Hostapd {
        _process: KillOnDrop(child),
        log,
        radius: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// Starts hostapd, runs eapol_test against it once; `None` when the peers are not built.
fn authenticate(
    server_auth: ServerAuth,
    peer: impl FnOnce(&Pki) -> (String, TeapPeerAuthOwned),
) -> Option<(support::EapolTestRun, String)> {
    let (Some(eapol_test), Some(hostapd)) = (eapol_test(), hostapd()) else {
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let server = start_hostapd(&hostapd, dir.path(), &pki, server_auth);
    let (identity, auth) = peer(&pki);
    let config = write_eapol_test_config(
        dir.path(),
        &EapolTestConfig {
            ca_cert: &pki.ca,
            identity: &identity,
            auth: auth.borrowed(),
        },
    );
    let run = run_eapol_test(&eapol_test, &config, server.radius, SECRET, 20);
    let log = server.log();
    drop(server);
    Some((run, log))
}

/// `TeapPeerAuth` owning its paths, so a case can build it from the per-test PKI.
enum TeapPeerAuthOwned {
    ClientCertificate { cert: PathBuf, key: PathBuf },
    BasicPassword { password: String },
    InnerEap { method: String, password: String },
}

impl TeapPeerAuthOwned {
    fn borrowed(&self) -> TeapPeerAuth<'_> {
        match self {
            Self::ClientCertificate { cert, key } => TeapPeerAuth::ClientCertificate { cert, key },
            Self::BasicPassword { password } => TeapPeerAuth::BasicPassword { password },
            Self::InnerEap { method, password } => TeapPeerAuth::InnerEap { method, password },
        }
    }
}

/// Success as eapol_test sees it, and one 64-octet MSK on both sides and in the Access-Accept.
fn assert_same_msk_everywhere(run: &support::EapolTestRun, hostapd_log: &str) {
    assert!(
        run.succeeded(),
        "eapol_test did not succeed; hostapd log:\n{hostapd_log}"
    );
    let peer_msk = run.peer_msk().expect("eapol_test printed no TEAP MSK");
    assert_eq!(peer_msk.len(), 64);
    let server_msk =
        hexdump(hostapd_log, "EAP-TEAP: Derived key (MSK)").expect("hostapd printed no TEAP MSK");
    assert_eq!(
        peer_msk, server_msk,
        "peer and server derived different MSKs"
    );
    assert_eq!(
        run.radius_msk()
            .expect("no MS-MPPE keys in the Access-Accept"),
        peer_msk,
        "the Access-Accept's MPPE keys are not the MSK"
    );
}

#[test]
fn teap_client_certificate_without_inner_method() {
    let Some((run, log)) = authenticate(ServerAuth::ClientCertificate, |pki| {
        (
            DEVICE.to_string(),
            TeapPeerAuthOwned::ClientCertificate {
                cert: pki.client_cert.clone(),
                key: pki.client_key.clone(),
            },
        )
    }) else {
        return;
    };
    assert_same_msk_everywhere(&run, &log);
    assert!(
        log.contains(&format!(
            "Peer subject from Phase 1 client certificate: '/CN={DEVICE}'"
        )),
        "hostapd did not authenticate the client certificate"
    );
    assert!(
        log.contains("skip inner auth"),
        "hostapd ran an inner method"
    );
}

#[test]
fn teap_basic_password_auth() {
    let Some((run, log)) = authenticate(ServerAuth::BasicPassword, |_| {
        (
            USER.to_string(),
            TeapPeerAuthOwned::BasicPassword {
                password: PASSWORD.to_string(),
            },
        )
    }) else {
        return;
    };
    assert_same_msk_everywhere(&run, &log);
    assert!(log.contains("EAP-TEAP: Correct password"));
}

#[test]
fn teap_basic_password_auth_wrong_password_fails() {
    let Some((run, log)) = authenticate(ServerAuth::BasicPassword, |_| {
        (
            USER.to_string(),
            TeapPeerAuthOwned::BasicPassword {
                password: "wrong horse".to_string(),
            },
        )
    }) else {
        return;
    };
    assert!(!run.succeeded(), "a wrong password was accepted");
    assert!(log.contains("EAP-TEAP: Invalid password"), "{log}");
    assert!(
        run.stdout.contains("Access-Reject"),
        "hostapd did not answer with Access-Reject"
    );
}

#[test]
fn teap_inner_eap_mschapv2() {
    let Some((run, log)) = authenticate(ServerAuth::InnerEap, |_| {
        (
            USER.to_string(),
            TeapPeerAuthOwned::InnerEap {
                method: "MSCHAPV2".to_string(),
                password: PASSWORD.to_string(),
            },
        )
    }) else {
        return;
    };
    assert_same_msk_everywhere(&run, &log);
    // The inner method's MSK went into the compound keys (IMSK), not a zero IMSK.
    assert!(
        hexdump(&run.stdout, "EAP-TEAP: IMSK from MSK").is_some_and(|imsk| imsk != [0u8; 32]),
        "no inner-method IMSK in eapol_test's log"
    );
}
