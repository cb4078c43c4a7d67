//! `ragw bench acme`: issue N certificates with C concurrent ACME clients against the local CA,
//! Pebble or any directory, in the per-name dns-01 flow and the pre-authorized flow, and
//! report orders/s and ACME POSTs per certificate. Every target gets the same client and the
//! same flow; dns-01 answers come from an in-process responder the targets resolve against.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use ragw_acme_ca::bench::{self, Flow, Options, Report, Target};
use ragw_acme_ca::client::AcmeClient;
use ragw_acme_ca::dns_responder::DnsResponder;

mod est;
mod teap;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Load-test ACME servers.
    Acme(AcmeBench),
    /// Enroll N pledges, C at a time, at the EST gateway of `ragw dev`; report enrollments/s,
    /// latency percentiles and the crypto-only ceiling of the same pipeline.
    Est(est::EstBench),
    /// Run N TEAP provisioning conversations, C at a time, through the RADIUS front of
    /// `ragw dev`; report conversations/s, latency percentiles, RADIUS round trips and the
    /// TLS-handshake-only rate measured in the same run.
    Teap(teap::TeapBench),
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Flows {
    PerName,
    PreAuthorized,
    Both,
}

#[derive(Args)]
pub struct AcmeBench {
    /// Certificates per measurement.
    #[arg(short = 'n', long, default_value_t = 200)]
    pub certificates: usize,
    /// Concurrent clients (one account each).
    #[arg(short = 'c', long, default_value_t = 8)]
    pub concurrency: usize,
    #[arg(long, value_enum, default_value = "both")]
    pub flow: Flows,
    /// Parent domain of the names ordered.
    #[arg(long, default_value = "devices.example.test")]
    pub domain: String,
    /// Start the local CA (`ragw run --target ca`, SQLite unless --postgres) and measure it.
    #[arg(long)]
    pub local: bool,
    /// Back the local CA with this PostgreSQL database (a fresh schema) instead of SQLite.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Start Debian's pebble (PEBBLE_VA_NOSLEEP=1) and measure it with the same client.
    #[arg(long)]
    pub pebble: bool,
    /// Measure this directory too; its CA must resolve dns-01 names at --dns-listen.
    #[arg(long)]
    pub directory: Option<String>,
    /// Trust anchor (PEM) for --directory.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Where the dns-01 responder listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub dns_listen: std::net::SocketAddr,
    /// Unmeasured certificates issued first against each target.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes the local CA's `ca.toml` into `work`, owner-only: a `--postgres` URL may carry a
/// password.
fn write_local_config(
    work: &std::path::Path,
    args: &AcmeBench,
    dns: std::net::SocketAddr,
) -> Result<PathBuf> {
    // JSON string syntax is valid TOML basic-string syntax, so quotes and backslashes in the
    // URL cannot break the file.
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let store = match &args.postgres {
        Some(url) => format!(
            "backend = \"postgres\"\nurl = {}\nschema = \"ragw_bench_{}\"\npool_size = 16\n",
            quote(url),
            hex::encode(rand_bytes())
        ),
        None => format!(
            "backend = \"sqlite\"\npath = {}\n",
            quote(&work.join("bench.db").display().to_string())
        ),
    };
    let config = work.join("ca.toml");
    ragw_runtime::identity::write_private_file(
        &config,
        format!(
            "[log]\nlevel = \"warn\"\n\n[store]\n{store}\n[ca]\nlisten = \"127.0.0.1:0\"\n\
             data_dir = {}\ndomain_suffixes = [{}]\ndns_resolver = \"{dns}\"\n\
             account_requests_per_second = 0\n",
            quote(&work.join("ca").display().to_string()),
            quote(&args.domain)
        ),
    )
    .with_context(|| format!("writing {}", config.display()))?;
    Ok(config)
}

fn start_local(
    work: &std::path::Path,
    args: &AcmeBench,
    dns: std::net::SocketAddr,
) -> Result<(Killed, Target)> {
    let config = write_local_config(work, args, dns)?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["run", "--target", "ca", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the local CA")?;
    let stdout = child.stdout.take().context("CA stdout")?;
    let child = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let directory = line
        .trim()
        .strip_prefix("directory: ")
        .context("the local CA did not print its directory")?
        .to_string();
    let root = std::fs::read_to_string(work.join("ca").join("root.pem"))?;
    Ok((
        child,
        Target {
            label: match &args.postgres {
                Some(_) => "ragw local CA (PostgreSQL)".into(),
                None => "ragw local CA (SQLite)".into(),
            },
            directory,
            root_pem: Some(root),
        },
    ))
}

fn rand_bytes() -> [u8; 4] {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ std::process::id()).to_be_bytes()
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn start_pebble(
    work: &std::path::Path,
    dns: std::net::SocketAddr,
) -> Result<(Killed, Target)> {
    let (ca_pem, cert, key) = bench::loopback_tls(work)?;
    let port = free_port()?;
    let mgmt = free_port()?;
    let http = free_port()?;
    let tls = free_port()?;
    let config = work.join("pebble.json");
    std::fs::write(
        &config,
        serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http,
            "tlsPort": tls,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }})
        .to_string(),
    )?;
    let child = Command::new("pebble")
        .arg("-config")
        .arg(&config)
        .arg("-dnsserver")
        .arg(dns.to_string())
        .env("PEBBLE_VA_NOSLEEP", "1")
        // Pebble rejects 5% of good nonces by default to exercise clients; a throughput
        // comparison turns that off.
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(std::fs::File::create(work.join("pebble.log"))?)
        .stderr(std::fs::File::create(work.join("pebble.err"))?)
        .spawn()
        .context("starting pebble (apt install pebble)")?;
    let child = Killed(child);
    let directory = format!("https://127.0.0.1:{port}/dir");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if AcmeClient::connect(&directory, Some(&ca_pem)).await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("pebble did not answer at {directory}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((
        child,
        Target {
            label: "Pebble (Debian)".into(),
            directory,
            root_pem: Some(ca_pem),
        },
    ))
}

#[derive(Clone)]
enum Kind {
    Local,
    Pebble,
    External {
        directory: String,
        root: Option<String>,
    },
}

async fn start(
    kind: &Kind,
    work: &std::path::Path,
    args: &AcmeBench,
    dns: std::net::SocketAddr,
) -> Result<(Option<Killed>, Target)> {
    std::fs::create_dir_all(work)?;
    Ok(match kind {
        Kind::Local => {
            let (c, t) = start_local(work, args, dns)?;
            (Some(c), t)
        }
        Kind::Pebble => {
            let (c, t) = start_pebble(work, dns).await?;
            (Some(c), t)
        }
        Kind::External { directory, root } => (
            None,
            Target {
                label: directory.clone(),
                directory: directory.clone(),
                root_pem: root.clone(),
            },
        ),
    })
}

/// How often a target that stopped answering is restarted and measured again.
const MAX_RESTARTS: usize = 3;

pub async fn run(args: BenchArgs) -> Result<()> {
    let args = match args.command {
        BenchCommand::Acme(a) => a,
        BenchCommand::Est(e) => return est::run(e).await,
        BenchCommand::Teap(t) => return teap::run(t).await,
    };
    if args.certificates == 0 || args.concurrency == 0 {
        bail!("-n and -c must be positive");
    }
    let work = std::env::temp_dir().join(format!("ragw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let dns = Arc::new(
        DnsResponder::start(args.dns_listen.ip())
            .await
            .context("starting the dns-01 responder")?,
    );
    let mut kinds = Vec::new();
    if args.local || (args.directory.is_none() && !args.pebble) {
        kinds.push(Kind::Local);
    }
    if args.pebble {
        kinds.push(Kind::Pebble);
    }
    if let Some(d) = &args.directory {
        let root = match &args.root {
            Some(p) => Some(std::fs::read_to_string(p)?),
            None => None,
        };
        kinds.push(Kind::External {
            directory: d.clone(),
            root,
        });
    }
    let flows: &[Flow] = match args.flow {
        Flows::PerName => &[Flow::PerName],
        Flows::PreAuthorized => &[Flow::PreAuthorized],
        Flows::Both => &[Flow::PerName, Flow::PreAuthorized],
    };
    println!(
        "ragw bench acme: n={} c={} domain={} dns-01 responder {}",
        args.certificates,
        args.concurrency,
        args.domain,
        dns.addr()
    );
    let mut reports: Vec<(Report, usize)> = Vec::new();
    let mut instance = 0usize;
    for flow in flows {
        for kind in &kinds {
            let mut restarts = 0usize;
            loop {
                instance += 1;
                // A fresh instance per measurement: no run inherits another's state.
                let (child, t) =
                    start(kind, &work.join(instance.to_string()), &args, dns.addr()).await?;
                let probe = AcmeClient::connect(&t.directory, t.root_pem.as_deref()).await?;
                if *flow == Flow::PreAuthorized && probe.dir.new_authz.is_none() {
                    println!(
                        "{:<28} {:<26} n/a: the directory has no newAuthz",
                        t.label,
                        flow.name()
                    );
                    break;
                }
                let options = |n: usize| Options {
                    certificates: n,
                    concurrency: args.concurrency,
                    flow: *flow,
                    domain: args.domain.clone(),
                    dns: dns.clone(),
                    poll_timeout: Duration::from_secs(60),
                };
                let warm = if args.warmup > 0 {
                    Some(bench::run(&t, options(args.warmup)).await?)
                } else {
                    None
                };
                let r = match warm {
                    Some(w) if w.wedged => w,
                    _ => bench::run(&t, options(args.certificates)).await?,
                };
                drop(child);
                if r.wedged && restarts < MAX_RESTARTS && !matches!(kind, Kind::External { .. }) {
                    restarts += 1;
                    println!(
                        "{:<28} {:<26} stopped answering after {} certificates ({}); restarting it",
                        r.label,
                        r.flow.name(),
                        r.issued,
                        r.first_error.as_deref().unwrap_or("timeout")
                    );
                    continue;
                }
                println!(
                    "{:<28} {:<26} issued {:>5} failed {:>3}  {:>8.1} orders/s  {:>5.2} POSTs/cert  \
                     p50 {:>6.1} ms  p95 {:>6.1} ms  badNonce retries {}",
                    r.label,
                    r.flow.name(),
                    r.issued,
                    r.failures,
                    r.orders_per_second(),
                    r.posts_per_certificate(),
                    r.latency_percentile(0.5).as_secs_f64() * 1000.0,
                    r.latency_percentile(0.95).as_secs_f64() * 1000.0,
                    r.bad_nonce_retries,
                );
                if let Some(e) = &r.first_error {
                    println!("    first error: {e}");
                }
                reports.push((r, restarts));
                break;
            }
        }
    }
    println!(
        "\n| Target | Flow | N | C | Issued | Failed | Wall time (s) | Orders/s | ACME POSTs per certificate | p50 (ms) | p95 (ms) | Restarts |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (r, restarts) in &reports {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.1} | {:.2} | {:.1} | {:.1} | {} |",
            r.label,
            r.flow.name(),
            args.certificates,
            args.concurrency,
            r.issued,
            r.failures,
            r.elapsed.as_secs_f64(),
            r.orders_per_second(),
            r.posts_per_certificate(),
            r.latency_percentile(0.5).as_secs_f64() * 1000.0,
            r.latency_percentile(0.95).as_secs_f64() * 1000.0,
            restarts,
        );
    }
    let find = |flow: Flow, prefix: &str| {
        reports
            .iter()
            .map(|(r, _)| r)
            .find(|r| r.flow == flow && r.label.starts_with(prefix) && !r.wedged)
    };
    if let (Some(local), Some(pebble)) =
        (find(Flow::PerName, "ragw"), find(Flow::PerName, "Pebble"))
    {
        println!(
            "\nper-name dns-01, {} vs {}: {:.2}x the orders/s, {:.2} vs {:.2} POSTs per certificate",
            local.label,
            pebble.label,
            local.orders_per_second() / pebble.orders_per_second().max(1e-9),
            local.posts_per_certificate(),
            pebble.posts_per_certificate()
        );
    }
    if let (Some(pre), Some(pebble)) = (
        find(Flow::PreAuthorized, "ragw"),
        find(Flow::PerName, "Pebble"),
    ) {
        println!(
            "pre-authorized {} vs per-name {}: {:.2}x the orders/s",
            pre.label,
            pebble.label,
            pre.orders_per_second() / pebble.orders_per_second().max(1e-9)
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn local_config_is_private_and_quotes_the_url() {
        let work = tempfile::tempdir().unwrap();
        let url = r#"postgres://bench:pa"ss\word@127.0.0.1/db"#;
        let args = AcmeBench {
            certificates: 1,
            concurrency: 1,
            flow: Flows::PerName,
            domain: "devices.example.test".into(),
            local: true,
            postgres: Some(url.into()),
            pebble: false,
            directory: None,
            root: None,
            dns_listen: "127.0.0.1:0".parse().unwrap(),
            warmup: 0,
        };
        let path = write_local_config(work.path(), &args, "127.0.0.1:53".parse().unwrap()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let cfg = crate::config::Config::load(Some(&path)).unwrap();
        assert_eq!(cfg.store.url.as_deref(), Some(url));
    }
}
