//! `ragw admin`: devices, enrollments, approvals, revocation.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ragw_proto::registrar::v1 as pb;
use ragw_proto::registrar::v1::admin_service_client::AdminServiceClient;
use ragw_runtime::identity::Role;

use crate::client::{ConnectArgs, connect, status_error};

#[derive(Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// List known devices, their labels and approval.
    Devices {
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// List enrollments, optionally of one device or in one state.
    Enrollments {
        /// kind:value, e.g. mac:02:00:00:00:00:01 or serial:SN123.
        #[arg(long)]
        device: Option<String>,
        /// received, rejected, awaiting_approval, approved, queued, ordering, issued or failed.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Enrollments waiting for an operator.
    Pending,
    /// Approve an enrollment; the device's later renewals pass until the approval is revoked.
    Approve {
        enrollment_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deny an enrollment.
    Deny {
        enrollment_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Withdraw a device's standing approval.
    RevokeApproval {
        /// kind:value
        device: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Mark a certificate ragw recorded as revoked and queue its revocation at the issuing CA
    /// (a worker calls the CA's ACME revokeCert; the CA's CRL lists it once done).
    RevokeCert {
        serial_hex: String,
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
}

pub fn parse_device(s: &str) -> Result<pb::DeviceIdentity> {
    let (kind, value) = s
        .split_once(':')
        .context("a device is written kind:value (mac:…, serial:…, idevid:…, user:…)")?;
    let kind = match kind {
        "mac" => pb::IdentityKind::Mac,
        "serial" => pb::IdentityKind::SerialNumber,
        "idevid" => pb::IdentityKind::IdevidSerial,
        "user" => pb::IdentityKind::Username,
        other => bail!("unknown device kind {other:?}: use mac, serial, idevid or user"),
    };
    Ok(pb::DeviceIdentity {
        kind: kind as i32,
        value: value.to_string(),
    })
}

fn parse_state(s: &str) -> Result<pb::EnrollmentState> {
    let upper = format!("ENROLLMENT_STATE_{}", s.to_ascii_uppercase());
    pb::EnrollmentState::from_str_name(&upper).with_context(|| format!("unknown state {s:?}"))
}

pub fn state_name(v: i32) -> String {
    pb::EnrollmentState::try_from(v)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("ENROLLMENT_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| format!("state-{v}"))
}

fn device_text(d: Option<&pb::DeviceIdentity>) -> String {
    d.map(|d| {
        let kind = pb::IdentityKind::try_from(d.kind)
            .map(|k| match k {
                pb::IdentityKind::Mac => "mac",
                pb::IdentityKind::SerialNumber => "serial",
                pb::IdentityKind::IdevidSerial => "idevid",
                pb::IdentityKind::Username => "user",
                pb::IdentityKind::Unspecified => "?",
            })
            .unwrap_or("?");
        format!("{kind}:{}", d.value)
    })
    .unwrap_or_default()
}

fn print_enrollments(list: &[pb::Enrollment]) {
    println!(
        "{:<36}  {:<26}  {:<17}  {:<8}  NAMES",
        "ENROLLMENT", "DEVICE", "STATE", "PROFILE"
    );
    for e in list {
        println!(
            "{:<36}  {:<26}  {:<17}  {:<8}  {}",
            e.id,
            device_text(e.device.as_ref()),
            state_name(e.state),
            e.profile,
            e.names.join(",")
        );
    }
}

pub async fn run(args: AdminArgs) -> Result<()> {
    let channel = connect(&args.connect, Role::Admin).await?;
    let mut client = AdminServiceClient::new(channel);
    match args.command {
        AdminCommand::Devices { limit } => {
            let mut after = String::new();
            println!("{:<26}  {:<8}  LABELS", "DEVICE", "APPROVED");
            loop {
                let page = client
                    .list_devices(pb::ListDevicesRequest { limit, after })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                for d in &page.devices {
                    let labels: Vec<String> = d
                        .labels
                        .iter()
                        .map(|l| format!("{}={}.{}", l.profile, l.label, l.parent_domain))
                        .collect();
                    println!(
                        "{:<26}  {:<8}  {}",
                        device_text(d.identity.as_ref()),
                        if d.approved { "yes" } else { "no" },
                        labels.join(" ")
                    );
                }
                if page.next.is_empty() {
                    break;
                }
                after = page.next;
            }
        }
        AdminCommand::Enrollments {
            device,
            state,
            limit,
        } => {
            let device = device.as_deref().map(parse_device).transpose()?;
            let state = state
                .as_deref()
                .map(parse_state)
                .transpose()?
                .unwrap_or(pb::EnrollmentState::Unspecified);
            let mut after = String::new();
            let mut all = Vec::new();
            loop {
                let page = client
                    .list_enrollments(pb::ListEnrollmentsRequest {
                        device: device.clone(),
                        state: state as i32,
                        limit,
                        after,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                all.extend(page.enrollments);
                if page.next.is_empty() {
                    break;
                }
                after = page.next;
            }
            print_enrollments(&all);
        }
        AdminCommand::Pending => {
            let page = client
                .list_pending_approvals(pb::ListPendingApprovalsRequest {
                    limit: 1000,
                    after: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_enrollments(&page.enrollments);
        }
        AdminCommand::Approve {
            enrollment_id,
            reason,
        } => {
            let e = client
                .approve(pb::ApproveRequest {
                    enrollment_id,
                    reason,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "approved {} ({}), now {}",
                e.id,
                device_text(e.device.as_ref()),
                state_name(e.state)
            );
        }
        AdminCommand::Deny {
            enrollment_id,
            reason,
        } => {
            let e = client
                .deny(pb::DenyRequest {
                    enrollment_id,
                    reason,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "denied {} ({}), now {}",
                e.id,
                device_text(e.device.as_ref()),
                state_name(e.state)
            );
        }
        AdminCommand::RevokeApproval { device, reason } => {
            let d = client
                .revoke_approval(pb::RevokeApprovalRequest {
                    device: Some(parse_device(&device)?),
                    reason,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("approval of {} revoked", device_text(d.identity.as_ref()));
        }
        AdminCommand::RevokeCert { serial_hex, reason } => {
            let r = client
                .revoke_certificate(pb::RevokeCertificateRequest { serial_hex, reason })
                .await
                .map_err(status_error)?
                .into_inner();
            println!(
                "certificate {} (enrollment {}) revoked; revocation at the issuing CA queued",
                r.serial_hex, r.enrollment_id
            );
        }
    }
    Ok(())
}
