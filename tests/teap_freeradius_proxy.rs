//! EAP-TEAP through a FreeRADIUS proxy: Debian's FreeRADIUS 3.2 (no TEAP module of its own),
//! configured with exactly the files in `deploy/freeradius/` (placeholders filled in), proxies
//! the realm `iot` to a `ragw dev`. ragw's own TEAP peer, as a device behind a NAS talking to
//! FreeRADIUS with FreeRADIUS's NAS secret, runs the whole provisioning flow: bootstrap
//! password, CSR for the names the CSR-Attributes give, PKCS#7 whose chain `openssl verify`
//! accepts, and the MSK that FreeRADIUS re-encrypted into the MS-MPPE keys for the NAS equal to
//! the peer's. Then ragw stops answering for a while: FreeRADIUS marks the home server zombie,
//! probes it with Status-Server (`status_check = status-server`), and ragw's answer revives it.
//!
//! Skips loudly without `freeradius`; fails instead with RAGW_REQUIRE_PEERS=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod peers;
mod teap_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Dev;
use teap_support::{Credential, Radius, chain_of, csr_from_attributes};

const REALM: &str = "iot";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/freeradius")
}

/// Copies a file of deploy/freeradius into `dir`, every placeholder replaced; panics when a
/// placeholder is left (the files and this test must not drift apart).
fn render(name: &str, dir: &Path, values: &[(&str, String)]) {
    let mut text = std::fs::read_to_string(deploy_dir().join(name)).unwrap();
    for (placeholder, value) in values {
        text = text.replace(&format!("@{placeholder}@"), value);
    }
    let left: Vec<&str> = text
        .split('@')
        .skip(1)
        .step_by(2)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .collect();
    assert!(left.is_empty(), "{name}: placeholders not filled: {left:?}");
    let target = dir.join(name);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(target, text).unwrap();
}

/// The server-wide part only a test needs: paths into the temp dir, logging to stdout, the
/// three modules the site uses (an eap module needs one EAP type; md5 needs no certificates),
/// and the rendered deploy files.
fn radiusd_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = {d}
sbindir = /usr/sbin
logdir = {d}/log
raddbdir = {d}
radacctdir = {d}/radacct
name = radiusd
confdir = {d}
modconfdir = {d}/mods-config
run_dir = {d}/run
db_dir = {d}
libdir = /usr/lib/freeradius
pidfile = {d}/run/radiusd.pid
# Longer than the home server's response_window, so a held request is not given up early.
max_request_time = 40
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {{
	destination = stdout
	colourise = no
	auth = yes
}}
security {{
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = yes
}}
proxy_requests = yes
$INCLUDE proxy.conf
$INCLUDE clients.conf
thread pool {{
	start_servers = 2
	max_servers = 4
	min_spare_servers = 1
	max_spare_servers = 3
	max_requests_per_server = 0
}}
modules {{
	preprocess {{
		huntgroups = {d}/huntgroups
		hints = {d}/hints
	}}
	realm suffix {{
		format = suffix
		delimiter = "@"
	}}
	eap {{
		default_eap_type = md5
		timer_expire = 60
		ignore_unknown_eap_types = no
		max_sessions = 1024
		md5 {{
		}}
	}}
}}
$INCLUDE sites-available/ragw-teap
"#
    )
}

fn random_secret() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

struct FreeRadius {
    process: peers::KillOnDrop,
    port: u16,
    nas_secret: String,
}

impl FreeRadius {
    fn start(program: &Path, dir: &Path, ragw: &Radius) -> FreeRadius {
        let port = peers::free_port();
        let nas_secret = random_secret();
        let values = [
            ("RAGW_TEAP_ADDRESS", ragw.server.ip().to_string()),
            ("RAGW_TEAP_PORT", ragw.server.port().to_string()),
            (
                "RAGW_TEAP_SECRET",
                String::from_utf8(ragw.secret.clone()).unwrap(),
            ),
            ("TEAP_REALM", REALM.to_string()),
            ("NAS_ADDRESS", "127.0.0.1".to_string()),
            ("NAS_SECRET", nas_secret.clone()),
            ("LISTEN_ADDRESS", "127.0.0.1".to_string()),
            ("LISTEN_PORT", port.to_string()),
        ];
        for name in ["proxy.conf", "clients.conf", "sites-available/ragw-teap"] {
            render(name, dir, &values);
        }
        for empty in ["huntgroups", "hints"] {
            std::fs::write(dir.join(empty), "").unwrap();
        }
        for sub in ["log", "run", "radacct"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("radiusd.conf"), radiusd_conf(dir)).unwrap();
        let mut cmd = Command::new(program);
        // -X: debug output on stdout, one thread, in the foreground.
        cmd.arg("-X").arg("-d").arg(dir).arg("-n").arg("radiusd");
        let log = dir.join("radiusd.log");
        let mut process = peers::spawn_logged(cmd, "freeradius", &log);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!(
                    "freeradius exited with {status}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if log_text(&log).contains("Ready to process requests") {
                break;
            }
            assert!(Instant::now() < deadline, "freeradius did not get ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        FreeRadius {
            process,
            port,
            nas_secret,
        }
    }

    fn radius(&self) -> Radius {
        Radius {
            server: ([127, 0, 0, 1], self.port).into(),
            secret: self.nas_secret.as_bytes().to_vec(),
        }
    }

    fn log(&self) -> String {
        log_text(&self.process.log)
    }

    /// Waits (bounded by `within`) for a line of the debug log containing `needle`.
    async fn wait_for_log(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the freeradius log"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn log_text(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

fn signal(dev: &Dev, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(dev.child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_through_a_freeradius_proxy() {
    let Some(freeradius) = peers::find_program("freeradius", "freeradius") else {
        return;
    };
    let dev = Dev::start(&[]);
    let ragw = Radius::of(&dev);
    let work = tempfile::tempdir().unwrap();
    let proxy = FreeRadius::start(&freeradius, &work.path().join("raddb"), &ragw);
    let nas = proxy.radius();
    let password = teap_support::dev_password(&dev);
    let serial = "SN-TEAP-PROXIED";
    let station = "02-00-5e-00-53-70";

    let (builder, built) = csr_from_attributes(None);
    let peer = teap_support::peer(
        &dev,
        &format!("anonymous@{REALM}"),
        Credential::Password(serial.into(), password.clone()),
        Some(builder),
    );
    let outcome = teap_support::run(peer, &nas, station).await;
    assert!(
        outcome.accepted && outcome.peer.success,
        "{outcome:?}\n{}",
        proxy.log()
    );
    let enrolled = built.lock().unwrap().clone().expect("the peer built a CSR");
    assert_eq!(enrolled.names.len(), 1, "{:?}", enrolled.names);
    let chain = chain_of(&outcome);
    assert_eq!(teap_support::san_dns_names(&chain[0]), enrolled.names);
    assert_eq!(teap_support::spki_der(&chain[0]), enrolled.spki_der);
    teap_support::openssl_verifies(&dev, &chain, work.path());
    let peer_msk = outcome.peer.keys.as_ref().expect("peer keys").msk;
    assert_eq!(
        outcome.radius_msk,
        Some(peer_msk),
        "FreeRADIUS handed the NAS ragw's MSK (re-encrypted with the NAS secret)"
    );
    // ragw saw FreeRADIUS as its RADIUS client, and the NAS's attributes passed through.
    teap_support::wait_for_audit(
        &dev,
        "gateway.access_granted",
        &[serial, station, teap_support::NAS, "certificate issued"],
    )
    .await;
    let proxied = proxy.log();
    assert!(
        proxied.contains(&format!(
            "Proxying request to home server {}",
            ragw.server.ip()
        )),
        "{proxied}"
    );

    // ragw goes silent (SIGSTOP): the request FreeRADIUS proxies meanwhile gets no answer
    // within response_window, FreeRADIUS marks ragw zombie and probes it with Status-Server;
    // once ragw runs again its Access-Accept to the probe revives the home server.
    let metrics = dev.endpoint("metrics");
    let status_servers = || {
        let (_, body) = common::http_get(&metrics);
        common::metric(
            &body,
            "ragw_teap_radius_requests_total{code=\"status_server\"}",
        )
    };
    let probes_before = status_servers();
    signal(&dev, "STOP");
    let stalled = teap_support::peer(
        &dev,
        &format!("anonymous@{REALM}"),
        Credential::Password(serial.into(), password.clone()),
        None,
    );
    // One transmission only: FreeRADIUS restarts its response window when the NAS
    // retransmits.
    let stall_attrs = ragw_teap_peer::RadiusAttrs {
        calling_station_id: Some("02-00-5e-00-53-71".into()),
        nas_identifier: Some(teap_support::NAS.into()),
        framed_mtu: None,
        timeout: Duration::from_secs(120),
        max_tries: 1,
    };
    let stall_nas = nas.clone();
    let stalled = tokio::spawn(async move {
        ragw_teap_peer::run_over_radius(stalled, stall_nas.server, &stall_nas.secret, stall_attrs)
            .await
    });
    let home = format!(
        "Marking home server {} port {}",
        ragw.server.ip(),
        ragw.server.port()
    );
    let zombie = proxy
        .wait_for_log(&format!("{home} as zombie"), Duration::from_secs(90))
        .await;
    // A zombie home server is probed with Status-Server every `check_interval` (10 s in
    // deploy/freeradius/proxy.conf): let one probe reach ragw's socket before ragw resumes, since
    // ragw's late answer to the stalled request may revive it first.
    tokio::time::sleep(Duration::from_secs(12)).await;
    signal(&dev, "CONT");
    let alive = proxy
        .wait_for_log(&format!("{home} alive"), Duration::from_secs(60))
        .await;
    // Not the blind revival of `status_check = none` ("we have no idea if it really is alive").
    assert!(!alive.contains("no idea"), "{alive}");
    // The queued probe is answered once ragw runs again; its counter follows shortly.
    let probed_by = Instant::now() + Duration::from_secs(20);
    while status_servers() <= probes_before && Instant::now() < probed_by {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        status_servers() > probes_before,
        "ragw counted no Status-Server: {zombie} / {alive}"
    );
    stalled.abort();

    // And the revived home server carries conversations again.
    let peer = teap_support::peer(
        &dev,
        &format!("anonymous@{REALM}"),
        Credential::Password("SN-TEAP-AFTER".into(), password),
        None,
    );
    let after = teap_support::run(peer, &nas, "02-00-5e-00-53-72").await;
    assert!(
        after.accepted && after.peer.success,
        "{after:?}\n{}",
        proxy.log()
    );
}
