//! EnrollmentService: what gateways call on behalf of an authenticated device.

use std::time::{Duration, Instant};

use ragw_domain::{DeviceIdentity, Profile, Protocol};
use ragw_pki::{
    CsrAttrsRequest, CsrError, MAX_CSR_DER_LEN, ParsedCsr, certs_only, check_csr, encode_csr_attrs,
    parse_csr,
};
use ragw_proto::registrar::v1 as pb;
use ragw_runtime::identity::Role;
use ragw_store::NewEnrollment;
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::Registrar;
use crate::auth::{Caller, store_status};
use crate::convert::{enrollment_to_pb, identity_from_pb, identity_to_pb, protocol_from_pb};

const MAX_PROFILE_NAME: usize = 64;
const MAX_ID_LEN: usize = 64;
const MAX_CERT_DER_LEN: usize = 16 * 1024;

/// Poll interval of waits, so changes made by another registrar replica are seen.
const POLL: Duration = Duration::from_millis(250);

/// Who may call on behalf of a device: ragw's own gateways, and EAP servers that terminate
/// TEAP themselves. Both authenticated the device, so both are trusted with its identity.
const DEVICE_CALLERS: &[Role] = &[Role::Gateway, Role::EapServer];

/// An EnrollmentService answer: the enrollment, with its chain as the certs-only PKCS#7 an EAP
/// server hands to the peer once it is issued.
fn enrollment_answer(record: &ragw_store::EnrollmentRecord) -> Result<pb::Enrollment, Status> {
    let mut out = enrollment_to_pb(record);
    if out.state == pb::EnrollmentState::Issued as i32 && !out.certificate_chain.is_empty() {
        out.pkcs7_der = certs_only(&out.certificate_chain).map_err(|e| {
            tracing::error!(enrollment = %record.id, error = %e, "issued chain cannot be packaged");
            Status::internal(format!(
                "enrollment {} is issued but its chain cannot be packaged as PKCS#7: {e}",
                record.id
            ))
        })?;
    }
    Ok(out)
}

/// The CSR attributes ragw's EST and TEAP gateways send: the assigned names and the profile's
/// first allowed key type (its signature hash follows from it).
fn csr_attributes_der(names: &[String], profile: &Profile) -> Result<Vec<u8>, Status> {
    let request = CsrAttrsRequest {
        dns_names: names.to_vec(),
        key: profile.allowed_keys.first().copied(),
        challenge_password: false,
    };
    encode_csr_attrs(&request).map_err(|e| {
        Status::failed_precondition(format!(
            "profile {:?}: the CSR attributes cannot be encoded: {e}",
            profile.name
        ))
    })
}

impl Registrar {
    /// An EAP server enrolls for the TEAP peers it authenticated, never for EST: its calls
    /// must say TEAP, so the audit log cannot attribute its devices to another protocol.
    async fn check_caller_protocol(
        &self,
        caller: &Caller,
        rpc: &str,
        protocol: i32,
        device: &str,
    ) -> Result<(), Status> {
        if caller.role == Role::EapServer && protocol != pb::Protocol::Teap as i32 {
            let status = Status::permission_denied(format!(
                "{rpc}: the role eap-server may only act for TEAP (protocol PROTOCOL_TEAP)"
            ));
            return Err(self.refuse(&caller.actor(), rpc, status, device).await);
        }
        Ok(())
    }

    fn profile(&self, name: &str) -> Result<&Profile, String> {
        if name.len() > MAX_PROFILE_NAME {
            return Err(format!(
                "profile name is {} bytes; at most {MAX_PROFILE_NAME} are allowed",
                name.len()
            ));
        }
        if name.is_empty() {
            return Err("profile is required".into());
        }
        self.profiles
            .get(name)
            .ok_or_else(|| format!("unknown profile {name:?}"))
    }

    /// A refused CSR: the status carries the class and TEAP code so a gateway can answer in
    /// its own protocol (EST 400 + CMC failInfo, TEAP Error TLV).
    fn csr_status(e: &CsrError, expected: &[String]) -> Status {
        let mut status = Status::invalid_argument(format!("csr_der: {e}"));
        let md = status.metadata_mut();
        md.insert(
            "ragw-error-class",
            MetadataValue::from_static(e.class().as_str()),
        );
        if let Ok(v) = MetadataValue::try_from(e.teap_error_code().to_string()) {
            md.insert("ragw-teap-error", v);
        }
        if let Ok(v) = MetadataValue::try_from(expected.join(",")) {
            md.insert("ragw-expected-names", v);
        }
        status
    }

    /// The certificate a re-enrolling device authenticated with must be one ragw issued to that
    /// same device, and not revoked.
    async fn check_current_certificate(
        &self,
        device: &DeviceIdentity,
        der: &[u8],
        csr_sha256: &str,
    ) -> Result<(), String> {
        if der.len() > MAX_CERT_DER_LEN {
            return Err(format!(
                "current_certificate_der is {} bytes; at most {MAX_CERT_DER_LEN} are allowed",
                der.len()
            ));
        }
        let serial = crate::worker::certificate_facts(der)
            .map_err(|e| format!("current_certificate_der: {e}"))?
            .serial_hex;
        let record = self
            .store
            .get_certificate(&serial)
            .await
            .map_err(|e| format!("looking up the current certificate: {e}"))?
            .ok_or_else(|| {
                format!("the current certificate (serial {serial}) was not issued by ragw")
            })?;
        if &record.device != device {
            return Err(format!(
                "the current certificate (serial {serial}) belongs to another device"
            ));
        }
        if record.revoked {
            return Err(format!(
                "the current certificate (serial {serial}) is revoked"
            ));
        }
        if record.chain.first().map(Vec::as_slice) != Some(der) {
            return Err(format!(
                "the current certificate does not match the one ragw issued with serial {serial}"
            ));
        }
        // A renewed certificate has no second life: only the newest certificate of its profile
        // re-enrolls, so a stolen old one cannot. The one exception is the retry of the very
        // request that superseded it (same device, same CSR), which returns that same
        // enrollment. A device that lost its new certificate enrolls with its bootstrap
        // credential (IDevID or password) instead.
        let profile = self
            .store
            .get_enrollment(&record.enrollment_id)
            .await
            .map_err(|e| format!("looking up the current certificate's enrollment: {e}"))?
            .map(|e| e.profile)
            .ok_or_else(|| {
                format!("the current certificate (serial {serial}) has no enrollment")
            })?;
        let newest = self
            .store
            .newest_certificate(device, &profile)
            .await
            .map_err(|e| format!("looking up the device's newest certificate: {e}"))?;
        if let Some(newest) = newest
            && newest.serial_hex != record.serial_hex
        {
            let same_request = self
                .store
                .get_enrollment(&newest.enrollment_id)
                .await
                .map_err(|e| format!("looking up the renewal: {e}"))?
                .is_some_and(|e| e.csr_sha256 == csr_sha256);
            if !same_request {
                return Err(format!(
                    "the current certificate (serial {serial}) has been superseded by serial {}; \
                     re-enroll with the newest certificate, or enroll with the bootstrap credential",
                    newest.serial_hex
                ));
            }
        }
        Ok(())
    }

    /// The device a ragw-issued certificate belongs to; the full check (same DER, not revoked)
    /// follows in [`check_current_certificate`](Self::check_current_certificate).
    async fn device_for_certificate(&self, der: &[u8]) -> Result<DeviceIdentity, String> {
        if der.len() > MAX_CERT_DER_LEN {
            return Err(format!(
                "current_certificate_der is {} bytes; at most {MAX_CERT_DER_LEN} are allowed",
                der.len()
            ));
        }
        let serial = crate::worker::certificate_facts(der)
            .map_err(|e| format!("current_certificate_der: {e}"))?
            .serial_hex;
        let record = self
            .store
            .get_certificate(&serial)
            .await
            .map_err(|e| format!("looking up the current certificate: {e}"))?
            .ok_or_else(|| {
                format!("the current certificate (serial {serial}) was not issued by ragw")
            })?;
        Ok(record.device)
    }

    /// The device a gateway call is about: the identity the gateway authenticated or, when it
    /// sends none, the one the ragw-issued certificate names (the gateway cannot map an opaque
    /// name back to a device). Refusals are audited.
    async fn requesting_device(
        &self,
        caller: &Caller,
        rpc: &str,
        device: Option<&pb::DeviceIdentity>,
        current_certificate_der: &[u8],
    ) -> Result<DeviceIdentity, Status> {
        let found = if device.is_none() && !current_certificate_der.is_empty() {
            self.device_for_certificate(current_certificate_der)
                .await
                .map_err(Status::permission_denied)
        } else {
            identity_from_pb("device", device).map_err(Status::invalid_argument)
        };
        match found {
            Ok(d) => Ok(d),
            Err(status) => Err(self.refuse(&caller.actor(), rpc, status, "").await),
        }
    }

    async fn enroll_inner(
        &self,
        caller: &Caller,
        req: pb::EnrollRequest,
    ) -> Result<pb::EnrollResponse, Status> {
        let device = self
            .requesting_device(
                caller,
                "Enroll",
                req.device.as_ref(),
                &req.current_certificate_der,
            )
            .await?;
        let device_key = device.key();
        self.check_caller_protocol(caller, "Enroll", req.protocol, &device_key)
            .await?;
        let refuse_for = |status: Status| {
            let key = device_key.clone();
            async move { self.refuse(&caller.actor(), "Enroll", status, &key).await }
        };
        let protocol = match protocol_from_pb(req.protocol) {
            Ok(Protocol::Admin) => {
                return Err(refuse_for(Status::invalid_argument(
                    "protocol admin is not a device protocol",
                ))
                .await);
            }
            Ok(p) => p,
            Err(m) => return Err(refuse_for(Status::invalid_argument(m)).await),
        };
        let profile = match self.profile(&req.profile) {
            Ok(p) => p.clone(),
            Err(m) => return Err(refuse_for(Status::invalid_argument(m)).await),
        };
        if req.csr_der.is_empty() {
            return Err(refuse_for(Status::invalid_argument("csr_der is empty")).await);
        }
        if req.csr_der.len() > MAX_CSR_DER_LEN {
            return Err(refuse_for(Status::invalid_argument(format!(
                "csr_der is {} bytes; at most {MAX_CSR_DER_LEN} are allowed",
                req.csr_der.len()
            )))
            .await);
        }
        let csr: ParsedCsr = match parse_csr(&req.csr_der) {
            Ok(c) => c,
            Err(e) => return Err(refuse_for(Self::csr_status(&e, &[])).await),
        };
        if !req.current_certificate_der.is_empty()
            && let Err(m) = self
                .check_current_certificate(&device, &req.current_certificate_der, &csr.sha256_hex())
                .await
        {
            return Err(refuse_for(Status::permission_denied(m)).await);
        }
        // Only GetAssignment (/csrattrs) allocates a label: a refused enrollment must leave no
        // device or label behind, and a device without a name cannot have built a valid CSR.
        let Some(assignment) = self
            .store
            .find_label(&device, &profile.name)
            .await
            .map_err(store_status)?
        else {
            let e = CsrError::NoNameAssigned {
                profile: profile.name.clone(),
            };
            return Err(refuse_for(Self::csr_status(&e, &[])).await);
        };
        let names = profile.names_for(&assignment.label, &assignment.parent_domain);
        if let Err(e) = check_csr(&csr, &profile, &names) {
            return Err(refuse_for(Self::csr_status(&e, &names.required)).await);
        }
        let mut all_names = csr.dns_names.clone();
        all_names.extend(csr.ip_addresses.iter().map(|ip| ip.to_string()));
        let new = NewEnrollment {
            id: uuid_v4(),
            device: device.clone(),
            profile: profile.name.clone(),
            approval: profile.approval,
            label: assignment.label.clone(),
            parent_domain: assignment.parent_domain.clone(),
            names: all_names,
            protocol,
            csr_der: csr.der.clone(),
            csr_sha256: csr.sha256_hex(),
            actor: caller.actor(),
            details: json!({
                "key": csr.key.to_string(),
                "signature_algorithm": csr.signature_algorithm,
                "reenrollment": !req.current_certificate_der.is_empty(),
            }),
        };
        let (record, existing) = self
            .store
            .create_enrollment(new)
            .await
            .map_err(store_status)?;
        if !existing {
            self.metrics.enrollments_created.inc();
            self.notify_change();
        }
        Ok(pb::EnrollResponse {
            enrollment: Some(enrollment_answer(&record)?),
            existing,
        })
    }
}

fn uuid_v4() -> String {
    let b: [u8; 16] = rand::random();
    let mut b = b;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn check_id(field: &str, id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    if id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(Status::invalid_argument(format!(
            "{field} is not an enrollment id"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::enrollment_service_server::EnrollmentService for Registrar {
    async fn get_assignment(
        &self,
        request: Request<pb::GetAssignmentRequest>,
    ) -> Result<Response<pb::Assignment>, Status> {
        let caller = self
            .authorize(&request, "GetAssignment", DEVICE_CALLERS)
            .await?;
        let req = request.into_inner();
        let device = self
            .requesting_device(
                &caller,
                "GetAssignment",
                req.device.as_ref(),
                &req.current_certificate_der,
            )
            .await?;
        // A device named only by its certificate must present its current one (the checks of a
        // re-enrollment; with no CSR, a superseded certificate has no retry to excuse it).
        if req.device.is_none()
            && let Err(m) = self
                .check_current_certificate(&device, &req.current_certificate_der, "")
                .await
        {
            return Err(self
                .refuse(
                    &caller.actor(),
                    "GetAssignment",
                    Status::permission_denied(m),
                    &device.key(),
                )
                .await);
        }
        let profile = match self.profile(&req.profile) {
            Ok(p) => p.clone(),
            Err(m) => {
                return Err(self
                    .refuse(
                        &caller.actor(),
                        "GetAssignment",
                        Status::invalid_argument(m),
                        &device.key(),
                    )
                    .await);
            }
        };
        let a = self
            .store
            .assign_label(
                &device,
                &profile.name,
                profile.primary_parent_domain(),
                &caller.actor(),
            )
            .await
            .map_err(store_status)?;
        let names = profile.names_for(&a.label, &a.parent_domain);
        let csr_attributes_der = match csr_attributes_der(&names.required, &profile) {
            Ok(der) => der,
            Err(status) => {
                return Err(self
                    .refuse(&caller.actor(), "GetAssignment", status, &device.key())
                    .await);
            }
        };
        self.metrics.rpc("GetAssignment", "ok");
        Ok(Response::new(pb::Assignment {
            label: a.label,
            parent_domain: a.parent_domain,
            names: names.required,
            allowed_keys: profile.allowed_keys.iter().map(|k| k.to_string()).collect(),
            profile: profile.name.clone(),
            csr_attributes_der,
            device: Some(identity_to_pb(&device)),
        }))
    }

    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let caller = self.authorize(&request, "Enroll", DEVICE_CALLERS).await?;
        let out = self.enroll_inner(&caller, request.into_inner()).await?;
        self.metrics
            .rpc("Enroll", if out.existing { "existing" } else { "ok" });
        Ok(Response::new(out))
    }

    async fn get_enrollment(
        &self,
        request: Request<pb::GetEnrollmentRequest>,
    ) -> Result<Response<pb::Enrollment>, Status> {
        let caller = self
            .authorize(
                &request,
                "GetEnrollment",
                &[Role::Gateway, Role::EapServer, Role::Admin],
            )
            .await?;
        let req = request.into_inner();
        if let Err(s) = check_id("id", &req.id) {
            return Err(self.refuse(&caller.actor(), "GetEnrollment", s, "").await);
        }
        let e = self
            .store
            .get_enrollment(&req.id)
            .await
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("enrollment {} not found", req.id)))?;
        self.metrics.rpc("GetEnrollment", "ok");
        Ok(Response::new(enrollment_answer(&e)?))
    }

    async fn record_refusal(
        &self,
        request: Request<pb::RecordRefusalRequest>,
    ) -> Result<Response<pb::RecordRefusalResponse>, Status> {
        let caller = self
            .authorize(&request, "RecordRefusal", DEVICE_CALLERS)
            .await?;
        let req = request.into_inner();
        self.check_caller_protocol(&caller, "RecordRefusal", req.protocol, "")
            .await?;
        let clip = |s: &str, n: usize| -> String {
            s.chars().filter(|c| !c.is_control()).take(n).collect()
        };
        let protocol = protocol_from_pb(req.protocol)
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let draft =
            ragw_domain::AuditDraft::new(caller.actor(), "gateway.refused").details(json!({
                "protocol": protocol,
                "label": clip(&req.label, 64),
                "claimed_identity": clip(&req.claimed_identity, 128),
                "client_address": clip(&req.client_address, 64),
                "status": req.status,
                "reason": clip(&req.reason, 512),
                "operation": clip(&req.operation, 32),
                "nas": clip(&req.nas, 128),
                "calling_station_id": clip(&req.calling_station_id, 64),
            }));
        self.store.append_audit(draft).await.map_err(store_status)?;
        self.metrics.rpc("RecordRefusal", "ok");
        Ok(Response::new(pb::RecordRefusalResponse {}))
    }

    async fn record_access(
        &self,
        request: Request<pb::RecordAccessRequest>,
    ) -> Result<Response<pb::RecordAccessResponse>, Status> {
        let caller = self
            .authorize(&request, "RecordAccess", DEVICE_CALLERS)
            .await?;
        let req = request.into_inner();
        self.check_caller_protocol(&caller, "RecordAccess", req.protocol, "")
            .await?;
        let clip = |s: &str, n: usize| -> String {
            s.chars().filter(|c| !c.is_control()).take(n).collect()
        };
        let protocol = protocol_from_pb(req.protocol)
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|_| "unknown".into());
        // The gateway authenticated the device; a malformed identity is recorded as such rather
        // than losing the accept from the log.
        let device = match req.device.as_ref() {
            None => String::new(),
            Some(d) => match identity_from_pb("device", Some(d)) {
                Ok(id) => id.to_string(),
                Err(e) => format!("invalid ({})", clip(&e, 128)),
            },
        };
        let draft =
            ragw_domain::AuditDraft::new(caller.actor(), "gateway.access_granted").details(json!({
                "protocol": protocol,
                "label": clip(&req.label, 64),
                "device": device,
                "outer_identity": clip(&req.outer_identity, 128),
                "client_address": clip(&req.client_address, 64),
                "nas": clip(&req.nas, 128),
                "calling_station_id": clip(&req.calling_station_id, 64),
                "reason": clip(&req.reason, 512),
                "enrollment_id": clip(&req.enrollment_id, 64),
            }));
        self.store.append_audit(draft).await.map_err(store_status)?;
        self.metrics.rpc("RecordAccess", "ok");
        Ok(Response::new(pb::RecordAccessResponse {}))
    }

    async fn get_ca_certificates(
        &self,
        request: Request<pb::GetCaCertificatesRequest>,
    ) -> Result<Response<pb::CaCertificates>, Status> {
        let caller = self
            .authorize(
                &request,
                "GetCaCertificates",
                &[Role::Gateway, Role::EapServer, Role::Admin, Role::Auditor],
            )
            .await?;
        let req = request.into_inner();
        let profile = match self.profile(&req.profile) {
            Ok(p) => p.name.clone(),
            Err(m) => {
                return Err(self
                    .refuse(
                        &caller.actor(),
                        "GetCaCertificates",
                        Status::invalid_argument(m),
                        "",
                    )
                    .await);
            }
        };
        let certificates_der = self
            .store
            .issuer_certificates(&profile)
            .await
            .map_err(store_status)?;
        self.metrics.rpc("GetCaCertificates", "ok");
        Ok(Response::new(pb::CaCertificates { certificates_der }))
    }

    async fn wait_enrollment(
        &self,
        request: Request<pb::WaitEnrollmentRequest>,
    ) -> Result<Response<pb::Enrollment>, Status> {
        let caller = self
            .authorize(
                &request,
                "WaitEnrollment",
                &[Role::Gateway, Role::EapServer, Role::Admin],
            )
            .await?;
        let req = request.into_inner();
        if let Err(s) = check_id("id", &req.id) {
            return Err(self.refuse(&caller.actor(), "WaitEnrollment", s, "").await);
        }
        let wait = Duration::from_millis(u64::from(req.timeout_millis)).min(self.settings.max_wait);
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            let e = self
                .store
                .get_enrollment(&req.id)
                .await
                .map_err(store_status)?
                .ok_or_else(|| Status::not_found(format!("enrollment {} not found", req.id)))?;
            let now = Instant::now();
            if e.state.is_terminal() || now >= deadline {
                self.metrics.rpc("WaitEnrollment", "ok");
                return Ok(Response::new(enrollment_answer(&e)?));
            }
            let _ = tokio::time::timeout((deadline - now).min(POLL), notified).await;
        }
    }
}
