//! `ragw audit`: query, export and verify the hash-chained audit log.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use ragw_domain::{AuditEvent, ChainVerifier};
use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::audit_service_client::AuditServiceClient;
use ragw_runtime::identity::Role;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::client::{ConnectArgs, connect, status_error};

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Args, Clone, Default)]
pub struct FilterArgs {
    /// kind:value, e.g. mac:02:00:00:00:00:01.
    #[arg(long)]
    device: Option<String>,
    #[arg(long)]
    label: Option<String>,
    /// e.g. enrollment.issued, approval.granted, rpc.refused.
    #[arg(long)]
    action: Option<String>,
    /// e.g. admin:alice, gateway:est-0.
    #[arg(long)]
    actor: Option<String>,
    /// RFC 3339 time, inclusive.
    #[arg(long)]
    since: Option<String>,
    /// RFC 3339 time, exclusive.
    #[arg(long)]
    until: Option<String>,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Show events matching filters.
    Query {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Stop after this many events (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u64,
    },
    /// Stream events as JSON lines (to a file or standard output).
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Verify the chain: on the server, or in an export with --file.
    Verify {
        /// A JSON-lines export to check offline, without a registrar.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

fn parse_time(flag: &str, v: &Option<String>) -> Result<i64> {
    match v {
        None => Ok(0),
        Some(s) => {
            let t = OffsetDateTime::parse(s, &Rfc3339).with_context(|| {
                format!("--{flag} {s:?} is not an RFC 3339 time (e.g. 2026-11-22T10:00:00Z)")
            })?;
            Ok(i64::try_from(t.unix_timestamp_nanos() / 1000)
                .unwrap_or(i64::MAX)
                .max(1))
        }
    }
}

impl FilterArgs {
    fn to_pb(&self) -> Result<pb::AuditFilter> {
        if let Some(d) = &self.device {
            crate::admin_cmd::parse_device(d)?;
        }
        Ok(pb::AuditFilter {
            device: self.device.clone().unwrap_or_default(),
            label: self.label.clone().unwrap_or_default(),
            action: self.action.clone().unwrap_or_default(),
            actor: self.actor.clone().unwrap_or_default(),
            since_unix_micros: parse_time("since", &self.since)?,
            until_unix_micros: parse_time("until", &self.until)?,
        })
    }
}

fn from_pb(e: &pb::AuditEvent) -> Result<AuditEvent> {
    let hash = |s: &str| {
        ragw_domain::audit::parse_hash_hex(s)
            .with_context(|| format!("event {} carries a malformed hash", e.seq))
    };
    Ok(AuditEvent {
        seq: e.seq,
        time_unix_micros: e.time_unix_micros,
        actor: e.actor.clone(),
        action: e.action.clone(),
        device: e.device.clone(),
        label: e.label.clone(),
        enrollment: e.enrollment.clone(),
        details: e.details_json.clone(),
        prev_hash: hash(&e.prev_hash_hex)?,
        hash: hash(&e.hash_hex)?,
    })
}

fn time_text(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| micros.to_string())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_event(out: &mut impl Write, format: Format, e: &AuditEvent) -> Result<()> {
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(e)?)?,
        Format::Csv => writeln!(
            out,
            "{}",
            [
                e.seq.to_string(),
                time_text(e.time_unix_micros),
                e.actor.clone(),
                e.action.clone(),
                e.device.clone(),
                e.label.clone(),
                e.enrollment.clone(),
                e.details.clone(),
                hex::encode(e.hash),
            ]
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",")
        )?,
        Format::Table => writeln!(
            out,
            "{:>6}  {:<27}  {:<24}  {:<28}  {:<26}  {:<10}  {}",
            e.seq,
            time_text(e.time_unix_micros),
            e.actor,
            e.action,
            e.device,
            e.label,
            e.details
        )?,
    }
    Ok(())
}

pub async fn run(args: AuditArgs) -> Result<ExitCode> {
    if let AuditCommand::Verify { file: Some(file) } = &args.command {
        return verify_file(file);
    }
    let channel = connect(&args.connect, Role::Auditor).await?;
    let mut client = AuditServiceClient::new(channel);
    match args.command {
        AuditCommand::Query {
            filter,
            format,
            limit,
        } => {
            let filter = filter.to_pb()?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match format {
                Format::Table => writeln!(
                    out,
                    "{:>6}  {:<27}  {:<24}  {:<28}  {:<26}  {:<10}  DETAILS",
                    "SEQ", "TIME", "ACTOR", "ACTION", "DEVICE", "LABEL"
                )?,
                Format::Csv => writeln!(
                    out,
                    "seq,time,actor,action,device,label,enrollment,details,hash"
                )?,
                Format::Json => {}
            }
            let mut after = 0;
            let mut shown = 0u64;
            loop {
                let page = client
                    .query(pb::AuditQueryRequest {
                        filter: Some(filter.clone()),
                        limit: 1000,
                        after_seq: after,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                for e in &page.events {
                    if limit > 0 && shown >= limit {
                        return Ok(ExitCode::SUCCESS);
                    }
                    write_event(&mut out, format, &from_pb(e)?)?;
                    shown += 1;
                }
                if page.next_after_seq == 0 {
                    break;
                }
                after = page.next_after_seq;
            }
        }
        AuditCommand::Export { filter, output } => {
            let filter = filter.to_pb()?;
            let mut stream = client
                .export(pb::AuditExportRequest {
                    filter: Some(filter),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let mut out: Box<dyn Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let progress = std::io::stderr().is_terminal();
            let mut n = 0u64;
            while let Some(e) = stream.message().await.map_err(status_error)? {
                write_event(&mut out, Format::Json, &from_pb(&e)?)?;
                n += 1;
                if progress && n.is_multiple_of(1000) {
                    eprint!("\rexported {n} events (up to seq {})", e.seq);
                }
            }
            out.flush()?;
            if progress {
                eprintln!("\rexported {n} events");
            }
        }
        AuditCommand::Verify { file: _ } => {
            let r = client
                .verify(pb::AuditVerifyRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            if r.ok {
                println!(
                    "audit chain intact: {} events, head hash {}",
                    r.events_checked, r.head_hash_hex
                );
            } else {
                eprintln!(
                    "audit chain BROKEN at event {}: {} ({} events verified before it)",
                    r.first_bad_seq, r.problem, r.events_checked
                );
                return Ok(ExitCode::from(2));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_file(path: &PathBuf) -> Result<ExitCode> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut verifier: Option<ChainVerifier> = None;
    let mut starts_at = 0;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let e: AuditEvent = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: not an exported audit event",
                path.display(),
                i + 1
            )
        })?;
        let v = verifier.get_or_insert_with(|| {
            starts_at = e.seq;
            if e.seq == 1 {
                ChainVerifier::from_genesis()
            } else {
                ChainVerifier::from_any_start()
            }
        });
        v.push(&e);
    }
    let Some(v) = verifier else {
        bail!("{} holds no events", path.display());
    };
    match v.result() {
        Ok(n) => {
            let scope = if starts_at == 1 {
                "from the first event"
            } else {
                "an excerpt; its first event is taken on trust"
            };
            println!(
                "audit export intact: {n} events ({scope}), last hash {}",
                hex::encode(v.last_hash())
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(b) => {
            eprintln!("audit export BROKEN at event {}: {}", b.seq, b.problem);
            Ok(ExitCode::from(2))
        }
    }
}
