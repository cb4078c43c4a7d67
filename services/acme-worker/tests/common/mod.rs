//! Helpers for the DNS interoperability tests: finding external programs (skipping loudly, or
//! failing under `RAGW_REQUIRE_PEERS=1`), running BIND on a free port, and asking DNS servers.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// Generous bound on waiting for a peer to come up or converge; only a hung peer reaches it.
pub const PEER_DEADLINE: Duration = Duration::from_secs(90);

pub fn peers_required() -> bool {
    std::env::var("RAGW_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

fn lookup(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.iter().map(|d| d.join(program)).find(|p| p.is_file())
}

fn require(program: &str, package: &str) {
    if peers_required() {
        panic!("RAGW_REQUIRE_PEERS=1 but `{program}` is not installed (apt-get install {package})");
    }
}

/// A program that only adds a check to a test that runs anyway (`named-checkconf`): `None`
/// quietly when missing, unless peers are required.
pub fn find_optional(program: &str, package: &str) -> Option<PathBuf> {
    let found = lookup(program);
    if found.is_none() {
        require(program, package);
    }
    found
}

/// The path of `program` (searching PATH and the sbin directories, where `named` lives), or
/// `None` after a loud notice; panics instead when peers are required.
pub fn find_program(program: &str, package: &str) -> Option<PathBuf> {
    if let Some(found) = lookup(program) {
        return Some(found);
    }
    require(program, package);
    // Written to the stderr handle, not with eprintln!, which the test harness captures and
    // shows only for failing tests: a skip must be visible in a passing run.
    use std::io::Write;
    let bar = "!".repeat(78);
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n{bar}\n!!! SKIPPED: `{program}` is not installed (apt-get install {package}).\n\
         !!! This interoperability test did NOT run. Set RAGW_REQUIRE_PEERS=1 to fail instead.\n\
         {bar}\n"
    );
    None
}

/// A port free for both UDP and TCP on 127.0.0.1 right now (for programs that cannot report
/// the port they bound themselves).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// A child process killed (and reaped) on drop.
pub struct KillOnDrop {
    pub child: Child,
    pub name: String,
    pub log: Option<PathBuf>,
}

impl KillOnDrop {
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log_text());
        }
    }
}

/// `named` in the foreground with `dir/named.conf`, logging to `dir/named.log`. When this
/// process is root, BIND runs as root too (no `-u`): the test directory is private to root,
/// and `-u bind` would need it handed over to the bind user.
pub fn start_named(named: &Path, dir: &Path) -> KillOnDrop {
    let conf = dir.join("named.conf");
    if let Some(check) = find_optional("named-checkconf", "bind9-utils") {
        let out = Command::new(check).arg(&conf).output().unwrap();
        assert!(
            out.status.success(),
            "named-checkconf: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = dir.join("named.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let child = Command::new(named)
        .arg("-g")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    KillOnDrop {
        child,
        name: "named".to_owned(),
        log: Some(log),
    }
}

/// One UDP query; `None` if there is no answer within a second.
pub fn query(server: SocketAddr, qname: &str, qtype: RecordType) -> Option<Message> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(qname).unwrap(), qtype));
    socket.send_to(&m.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut buf).ok()?;
    let response = Message::from_vec(&buf[..len]).unwrap();
    (response.id == m.id).then_some(response)
}

/// The TXT values at `qname` as `server` answers (sorted), or `None` on NXDOMAIN / no answer.
pub fn txt_values(server: SocketAddr, qname: &str) -> Option<Vec<String>> {
    let response = query(server, qname, RecordType::TXT)?;
    if response.response_code != ResponseCode::NoError {
        return None;
    }
    let mut values: Vec<String> = response
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect();
    values.sort();
    Some(values)
}

/// Polls `f` until it returns true, panicking with `what` past [`PEER_DEADLINE`].
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < PEER_DEADLINE,
            "gave up waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `dig +short` answer lines, quotes stripped (TXT values), sorted.
pub fn dig_txt(dig: &Path, server: SocketAddr, qname: &str, tcp: bool) -> Vec<String> {
    let mut cmd = Command::new(dig);
    cmd.arg("+short")
        .arg("+time=2")
        .arg("+tries=2")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string());
    if tcp {
        cmd.arg("+tcp");
    }
    let out = cmd.arg("TXT").arg(qname).output().unwrap();
    assert!(out.status.success(), "dig failed: {out:?}");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.replace("\" \"", "").trim_matches('"').to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

/// Runs `nsupdate` with `script` on stdin; returns (success, stdout + stderr).
pub fn nsupdate(nsupdate: &Path, key_file: Option<&Path>, script: &str) -> (bool, String) {
    use std::io::Write;
    let mut cmd = Command::new(nsupdate);
    if let Some(key) = key_file {
        cmd.arg("-k").arg(key);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
