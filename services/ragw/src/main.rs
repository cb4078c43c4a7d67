//! ragw: one binary for every component and for the operator's and auditor's commands.

mod admin_cmd;
mod audit_cmd;
mod bench_cmd;
mod ca_cmd;
mod client;
mod config;
mod dev;
mod eap_server_cmd;
mod est_cmd;
mod pki_cmd;
mod serve;
mod teap_cmd;
mod worker_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "ragw",
    version,
    about = "Registration Authority gateway: EST / EAP-TEAP to ACME"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one component (microservice mode) from a configuration file.
    Run {
        #[arg(long, value_enum)]
        target: Target,
        #[arg(long, env = "RAGW_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run everything in one process on embedded defaults (SQLite, generated credentials).
    Dev(dev::DevArgs),
    /// Operator commands: devices, enrollments, approvals, revocation.
    Admin(admin_cmd::AdminArgs),
    /// Auditor commands: query, export and verify the tamper-evident log.
    Audit(audit_cmd::AuditArgs),
    /// For EAP servers that terminate TEAP themselves: get the CSR attributes for a device and
    /// enroll its CSR through the registrar (role eap-server; docs/teap.md).
    EapServer(eap_server_cmd::EapServerArgs),
    /// Local ACME CA: show the root and chain, list issued certificates, revoke by serial.
    Ca(ca_cmd::CaArgs),
    /// Component PKI for production: create the component CA, issue and renew per-component
    /// certificates (role in a SAN URI), print them as a Kubernetes TLS Secret.
    Pki(pki_cmd::PkiArgs),
    /// Load tools: `ragw bench acme` measures ACME servers (the local CA, Pebble, any URL),
    /// `ragw bench est` the EST enrollment pipeline of `ragw dev`.
    Bench(bench_cmd::BenchArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Target {
    /// ACME worker: leases jobs from the registrar and obtains certificates.
    Worker,
    Registrar,
    /// The local ACME CA ([ca] section).
    Ca,
    /// The EST gateway ([est] section).
    Est,
    /// The TEAP gateway: EAP-TEAP over RADIUS ([teap] section).
    Teap,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ragw: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run { target, config } => match target {
                Target::Worker => worker_cmd::run_worker(config.as_deref())
                    .await
                    .map(|()| ExitCode::SUCCESS),
                Target::Registrar => serve::run_registrar(config.as_deref())
                    .await
                    .map(|()| ExitCode::SUCCESS),
                Target::Ca => ca_cmd::run_ca(config.as_deref())
                    .await
                    .map(|()| ExitCode::SUCCESS),
                Target::Est => est_cmd::run_est(config.as_deref())
                    .await
                    .map(|()| ExitCode::SUCCESS),
                Target::Teap => teap_cmd::run_teap(config.as_deref())
                    .await
                    .map(|()| ExitCode::SUCCESS),
            },
            Command::Dev(args) => dev::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Admin(args) => admin_cmd::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Audit(args) => audit_cmd::run(args).await,
            Command::EapServer(args) => eap_server_cmd::run(args).await.map(ExitCode::from),
            Command::Ca(args) => ca_cmd::run(args).await.map(|()| ExitCode::SUCCESS),
            Command::Pki(args) => pki_cmd::run(args).map(|()| ExitCode::SUCCESS),
            Command::Bench(args) => bench_cmd::run(args).await.map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ragw: {e:#}");
            ExitCode::FAILURE
        }
    }
}
