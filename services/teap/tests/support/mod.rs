//! What the radclient tests share: finding the program (skip loudly, or fail under
//! `RAGW_REQUIRE_PEERS=1`) and running it with one request on stdin.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

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
    if peers_required() {
        panic!("RAGW_REQUIRE_PEERS=1 but `{program}` is not installed (apt-get install {package})");
    }
    let bar = "!".repeat(78);
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n{bar}\n!!! SKIPPED: `{program}` is not installed (apt-get install {package}).\n\
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
