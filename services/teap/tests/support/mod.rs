//! What the interoperability tests share: finding the peer programs (skip loudly, or fail
//! under `RAGW_REQUIRE_PEERS=1`), running radclient with one request on stdin, and hostap's
//! TEAP peer `eapol_test` (config writer, runner, output parsing) and server `hostapd`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

pub fn peers_required() -> bool {
    std::env::var("RAGW_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// The path of `program`, or `None` after a loud notice; panics when peers are required.
pub fn find_program(program: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    if let Some(found) = dirs.iter().map(|d| d.join(program)).find(|p| p.is_file()) {
        return Some(found);
    }
    missing_peer(&format!(
        "`{program}` is not installed (apt-get install {package})"
    ))
}

/// `None` after a loud notice that `what` is missing; panics when peers are required.
fn missing_peer<T>(what: &str) -> Option<T> {
    if peers_required() {
        panic!("RAGW_REQUIRE_PEERS=1 but {what}");
    }
    let bar = "!".repeat(78);
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n{bar}\n!!! SKIPPED: {what}.\n\
         !!! This interoperability test did NOT run. Set RAGW_REQUIRE_PEERS=1 to fail instead.\n{bar}\n"
    );
    None
}

/// `radclient -x -r 1 -t TIMEOUT 127.0.0.1:PORT COMMAND SECRET` with `request` on stdin; its
/// output is echoed to stderr so a failing test shows what radclient saw.
pub fn run_radclient(
    radclient: &Path,
    port: u16,
    command: &str,
    secret: &str,
    timeout_seconds: u32,
    request: &str,
) -> Output {
    let mut child = Command::new(radclient)
        .args(["-x", "-r", "1", "-t", &timeout_seconds.to_string()])
        .arg(format!("127.0.0.1:{port}"))
        .args([command, secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "radclient exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---- hostap: eapol_test (TEAP peer) and hostapd (TEAP server) --------------------------------
//
// Debian's packages lack EAP-TEAP; `.ci/build-hostap-peers` builds both from Debian's `wpa`
// sources into `${RAGW_PEERS_DIR:-/var/tmp/ragw-peers}/hostap-<version>/` and `.ci/run`
// exports their paths as RAGW_EAPOL_TEST and RAGW_HOSTAPD.

/// hostap's TEAP-capable `eapol_test`, or `None` after a loud notice.
pub fn eapol_test() -> Option<PathBuf> {
    find_hostap_program("eapol_test", "RAGW_EAPOL_TEST")
}

/// hostap's `hostapd` with its RADIUS/EAP-TEAP server, or `None` after a loud notice.
pub fn hostapd() -> Option<PathBuf> {
    find_hostap_program("hostapd", "RAGW_HOSTAPD")
}

/// From `env_var`, else the newest `hostap-*` build in the peers cache directory.
fn find_hostap_program(program: &str, env_var: &str) -> Option<PathBuf> {
    let how = "build it with .ci/build-hostap-peers";
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Some(path);
        }
        return missing_peer(&format!(
            "{env_var}={} is not a file ({how})",
            path.display()
        ));
    }
    let cache = std::env::var_os("RAGW_PEERS_DIR")
        .map_or_else(|| PathBuf::from("/var/tmp/ragw-peers"), PathBuf::from);
    let mut builds: Vec<PathBuf> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("hostap-"))
        .map(|entry| entry.path().join(program))
        .filter(|path| path.is_file())
        .collect();
    builds.sort();
    match builds.pop() {
        Some(path) => Some(path),
        None => missing_peer(&format!(
            "hostap's `{program}` with EAP-TEAP is not built: {env_var} is unset and {}/hostap-*/{program} \
             does not exist ({how})",
            cache.display()
        )),
    }
}

/// How hostap's TEAP peer authenticates.
pub enum TeapPeerAuth<'a> {
    /// A client certificate in TLS (phase 1) and no inner method.
    ClientCertificate { cert: &'a Path, key: &'a Path },
    /// Basic-Password-Auth inside the tunnel: hostap answers a Basic-Password-Auth-Req with the
    /// network's `identity` and `password`.
    BasicPassword { password: &'a str },
    /// An inner EAP method (`phase2="auth=METHOD"`, e.g. `MSCHAPV2`) with the same identity.
    InnerEap { method: &'a str, password: &'a str },
}

pub struct EapolTestConfig<'a> {
    /// Trust anchor for the server's certificate.
    pub ca_cert: &'a Path,
    /// EAP-Response/Identity, and the Basic-Password-Auth / inner-method user name.
    pub identity: &'a str,
    pub auth: TeapPeerAuth<'a>,
}

/// Writes `DIR/eapol_test.conf`: one EAP-TEAP network (TLS 1.2: hostap disables 1.3 for TEAP
/// by default). hostap's TEAP peer refuses to start without a PAC file; `DIR/eapol_test.pac`
/// need not exist.
pub fn write_eapol_test_config(dir: &Path, config: &EapolTestConfig) -> PathBuf {
    write_eapol_test_config_with(dir, config, &[])
}

/// [`write_eapol_test_config`] with extra raw network lines (e.g. `fragment_size=200`,
/// `openssl_ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"`).
pub fn write_eapol_test_config_with(
    dir: &Path,
    config: &EapolTestConfig,
    extra_network_lines: &[&str],
) -> PathBuf {
    let mut network =
        String::from("network={\n\tkey_mgmt=IEEE8021X\n\teap=TEAP\n\teapol_flags=0\n");
    let mut line = |name: &str, value: &str| {
        assert!(
            !value.contains(['"', '\n']),
            "wpa_supplicant strings cannot hold quotes or newlines: {value:?}"
        );
        writeln!(network, "\t{name}=\"{value}\"").unwrap();
    };
    line("identity", config.identity);
    line("ca_cert", &config.ca_cert.display().to_string());
    line(
        "pac_file",
        &dir.join("eapol_test.pac").display().to_string(),
    );
    match config.auth {
        TeapPeerAuth::ClientCertificate { cert, key } => {
            line("client_cert", &cert.display().to_string());
            line("private_key", &key.display().to_string());
        }
        TeapPeerAuth::BasicPassword { password } => line("password", password),
        TeapPeerAuth::InnerEap { method, password } => {
            line("password", password);
            line("phase2", &format!("auth={method}"));
        }
    }
    for extra in extra_network_lines {
        assert!(!extra.contains('\n'), "one line per entry: {extra:?}");
        writeln!(network, "\t{extra}").unwrap();
    }
    network.push_str("}\n");
    let path = dir.join("eapol_test.conf");
    std::fs::write(&path, network).unwrap();
    path
}

/// What one `eapol_test` run printed (it logs to stdout, key material included).
pub struct EapolTestRun {
    pub status: ExitStatus,
    pub stdout: String,
}

impl EapolTestRun {
    /// eapol_test's own verdict: EAP-Success, an Access-Accept, and the MPPE keys in it equal
    /// to the peer's MSK.
    pub fn succeeded(&self) -> bool {
        self.status.success() && self.stdout.lines().any(|l| l == "SUCCESS")
    }

    /// The 64-octet MSK the TEAP peer derived.
    pub fn peer_msk(&self) -> Option<Vec<u8>> {
        hexdump(&self.stdout, "EAP-TEAP: Derived key (MSK)")
    }

    /// The MSK the server sent in its Access-Accept: MS-MPPE-Recv-Key (the first 32 octets)
    /// followed by MS-MPPE-Send-Key, as eapol_test decrypted them.
    pub fn radius_msk(&self) -> Option<Vec<u8>> {
        let mut msk = hexdump(&self.stdout, "MS-MPPE-Recv-Key (crypt)")?;
        msk.extend(hexdump(&self.stdout, "MS-MPPE-Send-Key (sign)")?);
        Some(msk)
    }
}

/// Octets of hostap's `LABEL - hexdump(len=N): xx xx ...` debug line (first occurrence).
pub fn hexdump(log: &str, label: &str) -> Option<Vec<u8>> {
    let prefix = format!("{label} - hexdump(len=");
    let line = log.lines().find_map(|l| l.strip_prefix(prefix.as_str()))?;
    let (len, octets) = line.split_once("): ")?;
    let bytes: Vec<u8> = octets
        .split(' ')
        .map(|o| u8::from_str_radix(o, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    (len.parse() == Ok(bytes.len())).then_some(bytes)
}

/// `eapol_test -c CONFIG -a ADDR -p PORT -s SECRET -r0 -t TIMEOUT`: one authentication, no
/// re-authentication. Output is echoed to stderr so a failing test shows the conversation.
pub fn run_eapol_test(
    eapol_test: &Path,
    config: &Path,
    server: SocketAddr,
    secret: &str,
    timeout_seconds: u32,
) -> EapolTestRun {
    run_eapol_test_with(eapol_test, config, server, secret, timeout_seconds, &[])
}

/// [`run_eapol_test`] with extra arguments, e.g. `-N12:d:300` (an Access-Request attribute:
/// Framed-MTU 300 instead of eapol_test's default 1400).
pub fn run_eapol_test_with(
    eapol_test: &Path,
    config: &Path,
    server: SocketAddr,
    secret: &str,
    timeout_seconds: u32,
    extra_args: &[&str],
) -> EapolTestRun {
    let out = Command::new(eapol_test)
        .arg("-c")
        .arg(config)
        .arg(format!("-a{}", server.ip()))
        .arg(format!("-p{}", server.port()))
        .arg(format!("-s{secret}"))
        .arg("-r0")
        .arg(format!("-t{timeout_seconds}"))
        .args(extra_args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "eapol_test exit {:?}\n--- stdout\n{stdout}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    EapolTestRun {
        status: out.status,
        stdout,
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago (for a server we start ourselves).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (and reaped) when the test ends, pass or fail.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
