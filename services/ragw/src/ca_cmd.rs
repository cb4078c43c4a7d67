//! The local ACME CA: `ragw run --target ca` serves it; `ragw ca show|list|revoke` administer
//! it directly on its files and store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use ragw_acme_ca::pki::describe_certificate;
use ragw_acme_ca::{Ca, serve_ca};
use ragw_runtime::ops::{Health, MetricsRegistry};
use ragw_store::AcmeCertificate;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::serve::{shutdown_signal, wait_stop};

pub async fn run_ca(config: Option<&Path>) -> Result<()> {
    let cfg = Config::load(config)?;
    ragw_runtime::telemetry::init_tracing(cfg.log.format, &cfg.log.level);
    let ca_cfg = cfg
        .ca
        .clone()
        .context("`ragw run --target ca` needs a [ca] section")?;
    let store = ragw_store::open(&cfg.store.resolve(Path::new("ragw.db"))?)
        .await
        .context("opening the store")?;
    let listener = TcpListener::bind(ca_cfg.listen)
        .await
        .with_context(|| format!("binding {}", ca_cfg.listen))?;
    let ops = match ca_cfg.ops_listen {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding {a}"))?,
        ),
        None => None,
    };
    let ca = Arc::new(
        Ca::open(ca_cfg, store, listener.local_addr()?)
            .await
            .context("starting the local ACME CA")?,
    );
    println!("directory: {}", ca.directory_url());
    let (stop_tx, stop_rx) = watch::channel(false);
    let health = Health::new();
    let metrics = MetricsRegistry::new();
    ca.metrics().register(&metrics);
    let ops_task = ops.map(|l| {
        tokio::spawn(ragw_runtime::ops::serve(
            l,
            health.clone(),
            metrics,
            wait_stop(stop_rx.clone()),
        ))
    });
    let server = tokio::spawn(serve_ca(ca, listener, wait_stop(stop_rx)));
    health.set_ready(true);
    shutdown_signal().await;
    health.set_ready(false);
    let _ = stop_tx.send(true);
    server.await.context("CA task")?.context("local ACME CA")?;
    if let Some(t) = ops_task {
        t.await.context("ops task")?.context("ops endpoint")?;
    }
    Ok(())
}

#[derive(Args)]
pub struct CaArgs {
    /// Configuration file with the [ca] and [store] sections the CA runs with.
    #[arg(long, env = "RAGW_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// A `ragw dev` data directory (CA files in DIR/ca, store DIR/ragw.db).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CaCommand,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum CaCommand {
    /// Print the root certificate (PEM); what relying parties install.
    Show {
        /// Print the intermediate and the root.
        #[arg(long)]
        chain: bool,
        /// Print subject, validity and SHA-256 fingerprint instead of PEM.
        #[arg(long)]
        text: bool,
    },
    /// List issued certificates, newest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Revoke a certificate by its serial number (hex); the CRL lists it from then on.
    Revoke {
        serial: String,
        /// unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation,
        /// privilegeWithdrawn, or the RFC 5280 code.
        #[arg(long, default_value = "unspecified")]
        reason: String,
        /// Who revokes, for the audit log.
        #[arg(long, default_value = "admin:cli")]
        actor: String,
    },
}

fn reason_code(s: &str) -> Result<i64> {
    Ok(match s {
        "unspecified" => 0,
        "keyCompromise" => 1,
        "affiliationChanged" => 3,
        "superseded" => 4,
        "cessationOfOperation" => 5,
        "privilegeWithdrawn" => 9,
        other => match other.parse::<i64>() {
            Ok(n) if [0, 1, 3, 4, 5, 9].contains(&n) => n,
            _ => bail!(
                "unknown revocation reason {other:?}: use unspecified, keyCompromise, \
                 affiliationChanged, superseded, cessationOfOperation or privilegeWithdrawn"
            ),
        },
    })
}

/// Where the CA's files and store are.
fn locate(args: &CaArgs) -> Result<(PathBuf, ragw_store::StoreConfig)> {
    let cfg = match (&args.config, &args.data_dir) {
        (None, None) => bail!("name the CA with --config FILE or --data-dir DIR"),
        (Some(f), _) => Some(Config::load(Some(f))?),
        (None, Some(_)) => None,
    };
    let default_db = args
        .data_dir
        .as_ref()
        .map(|d| d.join("ragw.db"))
        .unwrap_or_else(|| PathBuf::from("ragw.db"));
    let store = match &cfg {
        Some(c) => c.store.resolve(&default_db)?,
        None => ragw_store::StoreConfig::Sqlite { path: default_db },
    };
    let ca_dir = match (cfg.as_ref().and_then(|c| c.ca.as_ref()), &args.data_dir) {
        (Some(ca), _) => ca.data_dir.clone(),
        (None, Some(d)) => d.join("ca"),
        (None, None) => bail!("the configuration file has no [ca] section"),
    };
    Ok((ca_dir, store))
}

fn read_pem(dir: &Path, file: &str) -> Result<String> {
    let p = dir.join(file);
    std::fs::read_to_string(&p).with_context(|| {
        format!(
            "reading {} (the CA creates it on its first start)",
            p.display()
        )
    })
}

pub async fn run(args: CaArgs) -> Result<()> {
    let (ca_dir, store_cfg) = locate(&args)?;
    match &args.command {
        CaCommand::Show { chain, text } => {
            let root = read_pem(&ca_dir, "root.pem")?;
            let mut pems = Vec::new();
            if *chain {
                pems.push(("intermediate", read_pem(&ca_dir, "intermediate.pem")?));
            }
            pems.push(("root", root));
            for (what, pem) in pems {
                if *text {
                    for der in ragw_acme_ca::ca::pem_certificates(&pem) {
                        let s = describe_certificate(&der).context("unreadable certificate")?;
                        println!("{what}:");
                        println!("  subject:     {}", s.subject);
                        println!("  issuer:      {}", s.issuer);
                        println!("  serial:      {}", s.serial_hex);
                        println!("  not before:  {}", s.not_before);
                        println!("  not after:   {}", s.not_after);
                        println!("  SHA-256:     {}", s.sha256_fingerprint);
                    }
                } else {
                    print!("{pem}");
                }
            }
        }
        CaCommand::List { limit, format } => {
            let store = ragw_store::open(&store_cfg)
                .await
                .context("opening the store")?;
            let mut items: Vec<AcmeCertificate> = Vec::new();
            let mut after: Option<String> = None;
            while items.len() < *limit as usize {
                let page = store
                    .acme_list_certificates((*limit).min(500), after.as_deref())
                    .await?;
                items.extend(page.items);
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            items.truncate(*limit as usize);
            print_certs(&items, *format);
        }
        CaCommand::Revoke {
            serial,
            reason,
            actor,
        } => {
            let code = reason_code(reason)?;
            let serial = serial.trim().to_ascii_lowercase().replace(':', "");
            let store = ragw_store::open(&store_cfg)
                .await
                .context("opening the store")?;
            let c = store
                .acme_revoke_certificate(&serial, code, actor)
                .await
                .with_context(|| format!("revoking {serial}"))?;
            println!(
                "revoked {} ({}), reason {code}",
                c.serial_hex,
                c.identifiers
                    .iter()
                    .map(|i| i.value.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}

fn time(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn print_certs(items: &[AcmeCertificate], format: Format) {
    match format {
        Format::Json => {
            for c in items {
                let v = json!({
                    "serial": c.serial_hex,
                    "identifiers": c.identifiers.iter().map(|i| json!({"type": i.kind, "value": i.value})).collect::<Vec<_>>(),
                    "account": c.account_id,
                    "order": c.order_id,
                    "profile": c.profile,
                    "issued": time(c.issued),
                    "not_after": time(c.not_after),
                    "revoked": c.revoked,
                    "revocation_reason": c.revocation_reason,
                });
                println!("{v}");
            }
        }
        Format::Table => {
            println!(
                "{:<34} {:<21} {:<8} {:<10} NAMES",
                "SERIAL", "NOT AFTER", "REVOKED", "PROFILE"
            );
            for c in items {
                let mut not_after = time(c.not_after);
                not_after.truncate(20);
                println!(
                    "{:<34} {:<21} {:<8} {:<10} {}",
                    c.serial_hex,
                    not_after,
                    if c.revoked { "yes" } else { "no" },
                    c.profile,
                    c.identifiers
                        .iter()
                        .map(|i| i.value.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
        }
    }
}
