//! A throw-away PostgreSQL server owned by one test: `initdb` into a temporary directory, started
//! with `pg_ctl` on a free loopback port, and stopped when dropped. Tests that must restart the
//! database or switch TLS on use this instead of the machine's shared server.
//!
//! As root (CI), the cluster belongs to the `postgres` user (initdb refuses to run as root), and
//! every server command runs through `runuser`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// TLS for the server: PEM files copied into the cluster's directory.
pub struct PgTls {
    pub cert_pem: String,
    pub key_pem: String,
    /// When set, clients may present certificates from this CA (`clientcert=verify-ca` is not
    /// forced: the server's `pg_hba.conf` stays `trust`).
    pub client_ca_pem: Option<String>,
}

pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
    run_as_postgres: bool,
    _dir: tempfile::TempDir,
}

fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("RAGW_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    candidates.sort();
    candidates.pop()
}

fn is_root() -> bool {
    // The effective uid, from /proc/self/status: no libc call needed.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl PgCluster {
    /// Starts a new cluster, or returns `None` after a loud message when PostgreSQL's server
    /// binaries are missing (a failure when RAGW_REQUIRE_PEERS=1).
    pub fn start(tls: Option<PgTls>) -> Option<PgCluster> {
        let Some(bin) = find_bin_dir() else {
            let msg = "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or RAGW_PG_BIN";
            assert!(
                std::env::var("RAGW_REQUIRE_PEERS").as_deref() != Ok("1"),
                "{msg}, but RAGW_REQUIRE_PEERS=1 requires them"
            );
            eprintln!("\n!!! SKIPPED: {msg}. This test did NOT run.\n");
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let run_as_postgres = is_root();
        let cluster = PgCluster {
            bin,
            data,
            log,
            port: free_port(),
            run_as_postgres,
            _dir: dir,
        };
        if run_as_postgres {
            cluster.chown(cluster._dir.path());
        }
        cluster.run_checked(
            "initdb",
            &[
                "-D",
                path_str(&cluster.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let mut conf = format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nmax_connections = 200\n",
            cluster.port,
            cluster._dir.path().display()
        );
        if let Some(tls) = tls {
            let cert = cluster.data.join("server.crt");
            let key = cluster.data.join("server.key");
            std::fs::write(&cert, tls.cert_pem).expect("server cert");
            std::fs::write(&key, tls.key_pem).expect("server key");
            set_mode(&key, 0o600);
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            if let Some(ca) = tls.client_ca_pem {
                std::fs::write(cluster.data.join("client-ca.crt"), ca).expect("client CA");
                conf.push_str("ssl_ca_file = 'client-ca.crt'\n");
            }
            if cluster.run_as_postgres {
                cluster.chown(&cluster.data);
            }
        }
        let conf_path = cluster.data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path).expect("postgresql.conf");
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).expect("postgresql.conf");
        cluster.start_server();
        Some(cluster)
    }

    /// The connection string for the `postgres` database as the `postgres` superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server again after [`PgCluster::stop`].
    pub fn start_server(&self) {
        self.run_checked(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data),
                "-l",
                path_str(&self.log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server: `fast` disconnects clients and shuts down cleanly, `immediate` is the
    /// equivalent of a crash (recovery on the next start).
    pub fn stop(&self, mode: &str) {
        self.run_checked(
            "pg_ctl",
            &["-D", path_str(&self.data), "-m", mode, "-w", "stop"],
        );
    }

    pub fn restart(&self) {
        self.stop("fast");
        self.start_server();
    }

    /// The server's log so far, for failure messages.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn chown(&self, path: &Path) {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown");
        assert!(status.success(), "chown postgres {}", path.display());
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(program);
        if self.run_as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(exe).args(args);
            cmd
        } else {
            let mut cmd = Command::new(exe);
            cmd.args(args);
            cmd
        }
    }

    fn run_checked(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program, args)
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.server_log()
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command(
                "pg_ctl",
                &["-D", path_str(&self.data), "-m", "immediate", "-w", "stop"],
            )
            .output();
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
