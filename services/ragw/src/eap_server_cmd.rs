//! `ragw eap-server`: the enrollment an EAP server that terminates TEAP itself (FreeRADIUS,
//! an ISE-style server) runs against the registrar, one RPC per step. It is the documented
//! example client of docs/teap.md ("EAP servers that terminate TEAP themselves"): it calls
//! EnrollmentService with a component certificate carrying `urn:ragw:role:eap-server`, exactly
//! as such a server would.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::enrollment_service_client::EnrollmentServiceClient;
use ragw_runtime::identity::Role;
use tonic::transport::Channel;

use crate::admin_cmd::{parse_device, state_name};
use crate::client::{ConnectArgs, connect, status_error};

/// A PEM CSR larger than this is not a CSR (the registrar refuses DER above 64 KiB anyway).
const MAX_CSR_FILE: usize = 256 * 1024;

#[derive(Args)]
pub struct EapServerArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: EapServerCommand,
}

#[derive(Args, Clone)]
pub struct DeviceArgs {
    /// The device as the EAP server authenticated it, kind:value (mac:…, serial:…, idevid:…,
    /// user:…). The registrar trusts it because the caller holds the eap-server role.
    #[arg(long)]
    pub identity: String,
    /// The registrar profile the device enrolls under.
    #[arg(long)]
    pub profile: String,
}

#[derive(Subcommand)]
pub enum EapServerCommand {
    /// GetAssignment: the device's names, and the CSR-Attributes DER (RFC 9908) to send to the
    /// peer in the TEAP CSR-Attributes TLV.
    Csrattrs {
        #[command(flatten)]
        device: DeviceArgs,
        /// Where to write the CsrAttrs DER.
        #[arg(long)]
        out: PathBuf,
    },
    /// Enroll the peer's PKCS#10 and wait for the certificate: writes the certs-only PKCS#7 DER
    /// to send to the peer in the TEAP PKCS#7 TLV. Exits 75 (EX_TEMPFAIL) with the enrollment
    /// id when the wait ends first; `ragw eap-server wait ID` picks it up.
    Enroll {
        #[command(flatten)]
        device: DeviceArgs,
        /// The peer's CSR, DER or PEM.
        #[arg(long)]
        csr: PathBuf,
        /// How long to wait for issuance, e.g. 20s, 1500ms, 2m; 0 returns at once.
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        wait: Duration,
        /// Where to write the PKCS#7 DER.
        #[arg(long)]
        out: PathBuf,
    },
    /// WaitEnrollment: wait for an enrollment made earlier and write its PKCS#7 DER.
    Wait {
        enrollment_id: String,
        #[arg(long, default_value = "20s", value_parser = parse_duration)]
        wait: Duration,
        #[arg(long)]
        out: PathBuf,
    },
}

/// The exit status when the certificate is not issued yet (sysexits EX_TEMPFAIL).
pub const EXIT_PENDING: u8 = 75;

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 20s, 1500ms, 2m)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        other => Err(format!("unknown duration unit {other:?}: use ms, s or m")),
    }
}

/// DER as is; PEM (`-----BEGIN CERTIFICATE REQUEST-----`, as `openssl req` writes) decoded.
fn read_csr(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() > MAX_CSR_FILE {
        bail!("{} is {} bytes: not a CSR", path.display(), bytes.len());
    }
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(bytes);
    }
    let text = std::str::from_utf8(&bytes)
        .with_context(|| format!("{} is PEM but not UTF-8", path.display()))?;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("\n");
    ragw_pki::base64::decode_lenient(body.as_bytes(), MAX_CSR_FILE)
        .with_context(|| format!("{}: bad PEM body", path.display()))
}

fn write_out(path: &Path, der: &[u8]) -> Result<()> {
    std::fs::write(path, der).with_context(|| format!("writing {}", path.display()))
}

/// Waits for a terminal state, calling WaitEnrollment again while the registrar's own cap on
/// one wait is shorter than ours.
async fn wait_for(
    client: &mut EnrollmentServiceClient<Channel>,
    mut enrollment: pb::Enrollment,
    wait: Duration,
) -> Result<pb::Enrollment> {
    let deadline = Instant::now() + wait;
    loop {
        let terminal = matches!(
            pb::EnrollmentState::try_from(enrollment.state),
            Ok(pb::EnrollmentState::Issued
                | pb::EnrollmentState::Rejected
                | pb::EnrollmentState::Failed)
        );
        let left = deadline.saturating_duration_since(Instant::now());
        if terminal || left.is_zero() {
            return Ok(enrollment);
        }
        enrollment = client
            .wait_enrollment(pb::WaitEnrollmentRequest {
                id: enrollment.id.clone(),
                timeout_millis: u32::try_from(left.as_millis()).unwrap_or(u32::MAX),
            })
            .await
            .map_err(status_error)
            .context("WaitEnrollment")?
            .into_inner();
    }
}

/// Writes the PKCS#7 of an issued enrollment, or says why there is none.
fn finish(enrollment: &pb::Enrollment, out: &Path) -> Result<u8> {
    let state =
        pb::EnrollmentState::try_from(enrollment.state).unwrap_or(pb::EnrollmentState::Unspecified);
    match state {
        pb::EnrollmentState::Issued => {
            if enrollment.pkcs7_der.is_empty() {
                bail!(
                    "enrollment {} is issued but the registrar sent no PKCS#7",
                    enrollment.id
                );
            }
            write_out(out, &enrollment.pkcs7_der)?;
            println!("enrollment  {}", enrollment.id);
            println!("state       issued");
            println!("names       {}", enrollment.names.join(","));
            println!(
                "pkcs7       {} ({} bytes)",
                out.display(),
                enrollment.pkcs7_der.len()
            );
            Ok(0)
        }
        pb::EnrollmentState::Rejected | pb::EnrollmentState::Failed => {
            let class = pb::ErrorClass::try_from(enrollment.failure_class)
                .map(|c| c.as_str_name())
                .unwrap_or("ERROR_CLASS_UNSPECIFIED");
            bail!(
                "enrollment {} {}: {} ({class}); a new attempt needs a new CSR",
                enrollment.id,
                state_name(enrollment.state),
                enrollment.failure_detail
            )
        }
        _ => {
            println!("enrollment  {}", enrollment.id);
            println!("state       {}", state_name(enrollment.state));
            eprintln!(
                "not issued yet; run `ragw eap-server wait {}` (or retry the same CSR)",
                enrollment.id
            );
            Ok(EXIT_PENDING)
        }
    }
}

/// Runs one subcommand; the value is the process exit status.
pub async fn run(args: EapServerArgs) -> Result<u8> {
    let channel = connect(&args.connect, Role::EapServer).await?;
    let mut client = EnrollmentServiceClient::new(channel);
    match args.command {
        EapServerCommand::Csrattrs { device, out } => {
            let assignment = client
                .get_assignment(pb::GetAssignmentRequest {
                    device: Some(parse_device(&device.identity)?),
                    profile: device.profile,
                    current_certificate_der: Vec::new(),
                })
                .await
                .map_err(status_error)
                .context("GetAssignment")?
                .into_inner();
            if assignment.csr_attributes_der.is_empty() {
                bail!("the registrar sent no CSR attributes (is it older than this client?)");
            }
            write_out(&out, &assignment.csr_attributes_der)?;
            println!("label       {}", assignment.label);
            println!("names       {}", assignment.names.join(","));
            println!("keys        {}", assignment.allowed_keys.join(","));
            println!(
                "csrattrs    {} ({} bytes)",
                out.display(),
                assignment.csr_attributes_der.len()
            );
            Ok(0)
        }
        EapServerCommand::Enroll {
            device,
            csr,
            wait,
            out,
        } => {
            let response = client
                .enroll(pb::EnrollRequest {
                    csr_der: read_csr(&csr)?,
                    device: Some(parse_device(&device.identity)?),
                    protocol: pb::Protocol::Teap as i32,
                    profile: device.profile,
                    current_certificate_der: Vec::new(),
                })
                .await
                .map_err(status_error)
                .context("Enroll")?
                .into_inner();
            let enrollment = response
                .enrollment
                .context("the registrar answered Enroll without an enrollment")?;
            let enrollment = wait_for(&mut client, enrollment, wait).await?;
            finish(&enrollment, &out)
        }
        EapServerCommand::Wait {
            enrollment_id,
            wait,
            out,
        } => {
            let enrollment = client
                .get_enrollment(pb::GetEnrollmentRequest { id: enrollment_id })
                .await
                .map_err(status_error)
                .context("GetEnrollment")?
                .into_inner();
            let enrollment = wait_for(&mut client, enrollment, wait).await?;
            finish(&enrollment, &out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
