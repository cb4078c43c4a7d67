//! A real RadSec client: FreeRADIUS 3.2 (Debian `freeradius`) proxying to ragw's RadSec
//! listener over TLS (a `home_server` with `proto = tcp` and a `tls { }` block, client
//! certificate from the test CA, secret `radsec`). `radclient` talks RADIUS/UDP to FreeRADIUS;
//! FreeRADIUS forwards over RadSec; ragw's answers come back through it.
//!
//! FreeRADIUS runs with its own configuration directory on free ports. Skips loudly without
//! `freeradius`/`radclient`; fails under `RAGW_REQUIRE_PEERS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use ragw_teap::radius::{Attribute, Code, Packet, attr};
use ragw_teap::radius_server::radsec::{
    RADSEC_SECRET, RadsecLimits, RadsecServer, RadsecStats, radsec_tls_config,
};
use ragw_teap::radius_server::udp::completion_channel;
use ragw_teap::radius_server::{
    CacheLimits, Client, ClientTable, Handled, Handler, RadiusServer, Reply, RequestKey, Secret,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::{KillOnDrop, find_program, free_udp_port, run_radclient};
use tokio::net::TcpListener;

const NAS_SECRET: &str = "nas-secret";
const REPLY: &str = "answered by ragw over RadSec";

/// Accepts `alice`, rejects anyone else.
struct Decide;

impl Handler for Decide {
    fn handle(&mut self, _key: RequestKey, _client: &Client, request: &Packet) -> Handled {
        let alice = request.attribute(attr::USER_NAME) == Some(&b"alice"[..]);
        Handled::Reply(Reply {
            code: if alice {
                Code::AccessAccept
            } else {
                Code::AccessReject
            },
            attributes: vec![Attribute::new(attr::REPLY_MESSAGE, REPLY)],
        })
    }
}

struct Pki {
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    ca: CertificateDer<'static>,
}

/// CA, ragw's RadSec server certificate (127.0.0.1 / localhost) and FreeRADIUS's client
/// certificate, the latter two and the CA written as PEM into `dir`.
fn pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "RadSec interop CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose, san: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(san).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        (params.signed_by(&key, &issuer).unwrap(), key)
    };
    let (server_cert, server_key) = leaf(
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
        vec!["localhost".into(), "127.0.0.1".into()],
    );
    let (client_cert, client_key) = leaf(
        "freeradius-proxy",
        ExtendedKeyUsagePurpose::ClientAuth,
        vec!["freeradius-proxy.example.test".into()],
    );
    std::fs::write(dir.join("client.pem"), client_cert.pem()).unwrap();
    std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
    Pki {
        server_chain: vec![server_cert.der().clone(), ca_cert.der().clone()],
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        ca: ca_cert.der().clone(),
    }
}

/// A self-contained radiusd.conf: one NAS (radclient) on UDP, every request proxied to the
/// `ragw` home server over RadSec.
fn freeradius_config(dir: &Path, udp_port: u16, radsec_port: u16) -> String {
    let d = dir.display();
    format!(
        r#"prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
raddbdir = {d}
confdir = {d}
logdir = {d}/log
run_dir = {d}/run
libdir = /usr/lib/freeradius
pidfile = {d}/run/radiusd.pid
name = freeradius
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {{
	destination = stdout
}}
security {{
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = yes
}}
proxy_requests = yes
client nas {{
	ipaddr = 127.0.0.1
	secret = {NAS_SECRET}
}}
home_server ragw {{
	type = auth
	ipaddr = 127.0.0.1
	port = {radsec_port}
	proto = tcp
	secret = radsec
	status_check = status-server
	check_interval = 6
	response_window = 10
	tls {{
		private_key_file = {d}/client.key
		certificate_file = {d}/client.pem
		ca_file = {d}/ca.pem
		fragment_size = 8192
	}}
}}
home_server_pool ragw_pool {{
	type = fail-over
	home_server = ragw
}}
realm ragw {{
	auth_pool = ragw_pool
}}
thread pool {{
	start_servers = 1
	max_servers = 4
	min_spare_servers = 1
	max_spare_servers = 4
	max_requests_per_server = 0
}}
modules {{
}}
instantiate {{
}}
server default {{
	listen {{
		type = auth
		ipaddr = 127.0.0.1
		port = {udp_port}
	}}
	authorize {{
		update control {{
			&Proxy-To-Realm := "ragw"
		}}
	}}
	authenticate {{
	}}
}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeradius_proxies_over_radsec_to_ragw() {
    let Some(freeradius) = find_program("freeradius", "freeradius") else {
        return;
    };
    let Some(radclient) = find_program("radclient", "freeradius-utils") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("log")).unwrap();
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    let pki = pki(dir.path());

    let tls = radsec_tls_config(pki.server_chain, pki.server_key, &[pki.ca]).unwrap();
    let mut clients = ClientTable::new();
    clients.insert(
        "127.0.0.1".parse().unwrap(),
        Client {
            name: "freeradius".into(),
            secret: Secret::new(RADSEC_SECRET).unwrap(),
        },
    );
    let core = RadiusServer::new(clients, Decide, CacheLimits::default());
    let (_completer, completions) = completion_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let radsec_port = listener.local_addr().unwrap().port();
    let server = RadsecServer::new(tls, RadsecLimits::default());
    let stats = server.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(listener, core, completions, |_, _| {}, async {
        let _ = stopped.await;
    }));

    let udp_port = free_udp_port();
    std::fs::write(
        dir.path().join("radiusd.conf"),
        freeradius_config(dir.path(), udp_port, radsec_port),
    )
    .unwrap();
    let mut child = Command::new(&freeradius)
        .args(["-X", "-d"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _freeradius = KillOnDrop(child);
    let (lines_tx, lines) = std_mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("freeradius: {line}");
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready = tokio::task::spawn_blocking(move || {
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) {
            if line.contains("Ready to process requests") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(ready, "FreeRADIUS did not start (its log is above)");

    let accept = tokio::task::spawn_blocking({
        let radclient = radclient.clone();
        move || {
            run_radclient(
                &radclient,
                udp_port,
                "auth",
                NAS_SECRET,
                15,
                "User-Name = alice\nMessage-Authenticator = 0x00\n",
            )
        }
    })
    .await
    .unwrap();
    let accept_out = String::from_utf8_lossy(&accept.stdout).into_owned();
    assert!(accept.status.success(), "radclient saw no Access-Accept");
    assert!(accept_out.contains("Access-Accept"), "{accept_out}");
    assert!(
        accept_out.contains(REPLY),
        "ragw's Reply-Message proxied back"
    );

    let reject = tokio::task::spawn_blocking(move || {
        run_radclient(
            &radclient,
            udp_port,
            "auth",
            NAS_SECRET,
            15,
            "User-Name = mallory\nMessage-Authenticator = 0x00\n",
        )
    })
    .await
    .unwrap();
    let reject_out = String::from_utf8_lossy(&reject.stdout).into_owned();
    assert!(reject_out.contains("Access-Reject"), "{reject_out}");
    assert!(reject_out.contains(REPLY));

    assert_eq!(RadsecStats::get(&stats.tls_failed), 0);
    assert!(RadsecStats::get(&stats.accepted) >= 1);
    let _ = stop.send(());
    let core = served.await.unwrap().unwrap();
    assert_eq!(core.counters().handled, 2, "both requests reached ragw");
    eprintln!(
        "ragw RadSec: {} connection(s), {} Status-Server answered",
        RadsecStats::get(&stats.accepted),
        core.counters().status_server_answered
    );
}
