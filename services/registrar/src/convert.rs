//! Between the wire (ragw-proto) and the domain.

use ragw_domain::{
    AuditEvent, DeviceIdentity, EnrollmentState, ErrorClass, IdentityKind, Protocol,
};
use ragw_proto::registrar::v1 as pb;
use ragw_store::{DeviceRecord, EnrollmentRecord};

pub(crate) fn identity_from_pb(
    field: &str,
    id: Option<&pb::DeviceIdentity>,
) -> Result<DeviceIdentity, String> {
    let id = id.ok_or_else(|| format!("{field} is required"))?;
    let kind = match pb::IdentityKind::try_from(id.kind) {
        Ok(pb::IdentityKind::Mac) => IdentityKind::Mac,
        Ok(pb::IdentityKind::SerialNumber) => IdentityKind::SerialNumber,
        Ok(pb::IdentityKind::IdevidSerial) => IdentityKind::IdevidSerial,
        Ok(pb::IdentityKind::Username) => IdentityKind::Username,
        Ok(pb::IdentityKind::Unspecified) => return Err(format!("{field}.kind is not set")),
        Err(_) => return Err(format!("{field}.kind: unknown identity kind {}", id.kind)),
    };
    DeviceIdentity::new(kind, &id.value).map_err(|e| format!("{field}.value: {e}"))
}

pub(crate) fn identity_to_pb(id: &DeviceIdentity) -> pb::DeviceIdentity {
    let kind = match id.kind() {
        IdentityKind::Mac => pb::IdentityKind::Mac,
        IdentityKind::SerialNumber => pb::IdentityKind::SerialNumber,
        IdentityKind::IdevidSerial => pb::IdentityKind::IdevidSerial,
        IdentityKind::Username => pb::IdentityKind::Username,
    };
    pb::DeviceIdentity {
        kind: kind as i32,
        value: id.value().to_string(),
    }
}

pub(crate) fn protocol_from_pb(v: i32) -> Result<Protocol, String> {
    match pb::Protocol::try_from(v) {
        Ok(pb::Protocol::Est) => Ok(Protocol::Est),
        Ok(pb::Protocol::Teap) => Ok(Protocol::Teap),
        Ok(pb::Protocol::Admin) => Ok(Protocol::Admin),
        Ok(pb::Protocol::Unspecified) => Err("protocol is not set".into()),
        Err(_) => Err(format!("protocol: unknown value {v}")),
    }
}

fn protocol_to_pb(p: Protocol) -> pb::Protocol {
    match p {
        Protocol::Est => pb::Protocol::Est,
        Protocol::Teap => pb::Protocol::Teap,
        Protocol::Admin => pb::Protocol::Admin,
    }
}

pub(crate) fn state_to_pb(s: EnrollmentState) -> pb::EnrollmentState {
    match s {
        EnrollmentState::Received => pb::EnrollmentState::Received,
        EnrollmentState::Rejected => pb::EnrollmentState::Rejected,
        EnrollmentState::AwaitingApproval => pb::EnrollmentState::AwaitingApproval,
        EnrollmentState::Approved => pb::EnrollmentState::Approved,
        EnrollmentState::Queued => pb::EnrollmentState::Queued,
        EnrollmentState::Ordering => pb::EnrollmentState::Ordering,
        EnrollmentState::Issued => pb::EnrollmentState::Issued,
        EnrollmentState::Failed => pb::EnrollmentState::Failed,
    }
}

/// `Ok(None)` for "unspecified" (no filter).
pub(crate) fn state_from_pb(v: i32) -> Result<Option<EnrollmentState>, String> {
    let s = pb::EnrollmentState::try_from(v).map_err(|_| format!("state: unknown value {v}"))?;
    Ok(match s {
        pb::EnrollmentState::Unspecified => None,
        pb::EnrollmentState::Received => Some(EnrollmentState::Received),
        pb::EnrollmentState::Rejected => Some(EnrollmentState::Rejected),
        pb::EnrollmentState::AwaitingApproval => Some(EnrollmentState::AwaitingApproval),
        pb::EnrollmentState::Approved => Some(EnrollmentState::Approved),
        pb::EnrollmentState::Queued => Some(EnrollmentState::Queued),
        pb::EnrollmentState::Ordering => Some(EnrollmentState::Ordering),
        pb::EnrollmentState::Issued => Some(EnrollmentState::Issued),
        pb::EnrollmentState::Failed => Some(EnrollmentState::Failed),
    })
}

pub(crate) fn class_to_pb(c: ErrorClass) -> pb::ErrorClass {
    match c {
        ErrorClass::BadRequest => pb::ErrorClass::BadRequest,
        ErrorClass::BadIdentity => pb::ErrorClass::BadIdentity,
        ErrorClass::InternalCaError => pb::ErrorClass::InternalCaError,
    }
}

pub(crate) fn enrollment_to_pb(e: &EnrollmentRecord) -> pb::Enrollment {
    pb::Enrollment {
        id: e.id.clone(),
        device: Some(identity_to_pb(&e.device)),
        profile: e.profile.clone(),
        label: e.label.clone(),
        names: e.names.clone(),
        state: state_to_pb(e.state) as i32,
        protocol: protocol_to_pb(e.protocol) as i32,
        csr_sha256: e.csr_sha256.clone(),
        created_unix_micros: e.created,
        updated_unix_micros: e.updated,
        certificate_chain: e.certificate_chain.clone(),
        failure_detail: e.failure_detail.clone().unwrap_or_default(),
        failure_class: e
            .failure_class
            .map(|c| class_to_pb(c) as i32)
            .unwrap_or_default(),
        acme_order_url: e.acme_order_url.clone().unwrap_or_default(),
        attempts: i32::try_from(e.attempts).unwrap_or(i32::MAX),
        // Only EnrollmentService answers carry it (see `enrollment_answer`): admin listings
        // would otherwise send every chain twice.
        pkcs7_der: Vec::new(),
    }
}

pub(crate) fn device_to_pb(d: &DeviceRecord) -> pb::Device {
    pb::Device {
        identity: Some(identity_to_pb(&d.identity)),
        approved: d.approved,
        first_seen_unix_micros: d.first_seen,
        labels: d
            .labels
            .iter()
            .map(|(profile, label, parent)| pb::DeviceLabel {
                profile: profile.clone(),
                label: label.clone(),
                parent_domain: parent.clone(),
            })
            .collect(),
    }
}

pub(crate) fn audit_to_pb(e: &AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        seq: e.seq,
        time_unix_micros: e.time_unix_micros,
        actor: e.actor.clone(),
        action: e.action.clone(),
        device: e.device.clone(),
        label: e.label.clone(),
        enrollment: e.enrollment.clone(),
        details_json: e.details.clone(),
        prev_hash_hex: hex::encode(e.prev_hash),
        hash_hex: hex::encode(e.hash),
    }
}
