//! AdminService: operators list devices and enrollments, decide approvals, revoke.

use ragw_proto::registrar::v1 as pb;
use ragw_runtime::identity::Role;
use ragw_store::EnrollmentFilter;
use tonic::{Request, Response, Status};

use crate::Registrar;
use crate::auth::store_status;
use crate::convert::{device_to_pb, enrollment_to_pb, identity_from_pb, state_from_pb};

const MAX_REASON: usize = 1024;
const MAX_CURSOR: usize = 256;

fn check_reason(reason: &str) -> Result<(), Status> {
    if reason.len() > MAX_REASON {
        return Err(Status::invalid_argument(format!(
            "reason is {} bytes; at most {MAX_REASON} are allowed",
            reason.len()
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "reason contains control characters",
        ));
    }
    Ok(())
}

fn check_cursor(after: &str) -> Result<Option<&str>, Status> {
    if after.len() > MAX_CURSOR {
        return Err(Status::invalid_argument(
            "after is not a cursor this registrar issued",
        ));
    }
    Ok((!after.is_empty()).then_some(after))
}

impl Registrar {
    async fn list(
        &self,
        actor: &str,
        rpc: &'static str,
        filter: EnrollmentFilter,
        limit: u32,
        after: &str,
    ) -> Result<pb::ListEnrollmentsResponse, Status> {
        let after = match check_cursor(after) {
            Ok(a) => a,
            Err(s) => return Err(self.refuse(actor, rpc, s, "").await),
        };
        let page = self
            .store
            .list_enrollments(&filter, if limit == 0 { 100 } else { limit }, after)
            .await
            .map_err(|e| match e {
                ragw_store::StoreError::Conflict(m) => Status::invalid_argument(m),
                other => store_status(other),
            })?;
        self.metrics.rpc(rpc, "ok");
        Ok(pb::ListEnrollmentsResponse {
            enrollments: page.items.iter().map(enrollment_to_pb).collect(),
            next: page.next.unwrap_or_default(),
        })
    }
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for Registrar {
    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let caller = self
            .authorize(&request, "ListDevices", &[Role::Admin])
            .await?;
        let req = request.into_inner();
        let after = match check_cursor(&req.after) {
            Ok(a) => a,
            Err(s) => return Err(self.refuse(&caller.actor(), "ListDevices", s, "").await),
        };
        let page = self
            .store
            .list_devices(if req.limit == 0 { 100 } else { req.limit }, after)
            .await
            .map_err(store_status)?;
        self.metrics.rpc("ListDevices", "ok");
        Ok(Response::new(pb::ListDevicesResponse {
            devices: page.items.iter().map(device_to_pb).collect(),
            next: page.next.unwrap_or_default(),
        }))
    }

    async fn list_enrollments(
        &self,
        request: Request<pb::ListEnrollmentsRequest>,
    ) -> Result<Response<pb::ListEnrollmentsResponse>, Status> {
        let caller = self
            .authorize(&request, "ListEnrollments", &[Role::Admin])
            .await?;
        let actor = caller.actor();
        let req = request.into_inner();
        let device = match req.device.as_ref() {
            None => None,
            Some(d) => match identity_from_pb("device", Some(d)) {
                Ok(d) => Some(d),
                Err(m) => {
                    return Err(self
                        .refuse(&actor, "ListEnrollments", Status::invalid_argument(m), "")
                        .await);
                }
            },
        };
        let state = match state_from_pb(req.state) {
            Ok(s) => s,
            Err(m) => {
                return Err(self
                    .refuse(&actor, "ListEnrollments", Status::invalid_argument(m), "")
                    .await);
            }
        };
        let out = self
            .list(
                &actor,
                "ListEnrollments",
                EnrollmentFilter { device, state },
                req.limit,
                &req.after,
            )
            .await?;
        Ok(Response::new(out))
    }

    async fn list_pending_approvals(
        &self,
        request: Request<pb::ListPendingApprovalsRequest>,
    ) -> Result<Response<pb::ListEnrollmentsResponse>, Status> {
        let caller = self
            .authorize(&request, "ListPendingApprovals", &[Role::Admin])
            .await?;
        let req = request.into_inner();
        let filter = EnrollmentFilter {
            device: None,
            state: Some(ragw_domain::EnrollmentState::AwaitingApproval),
        };
        let out = self
            .list(
                &caller.actor(),
                "ListPendingApprovals",
                filter,
                req.limit,
                &req.after,
            )
            .await?;
        Ok(Response::new(out))
    }

    async fn approve(
        &self,
        request: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::Enrollment>, Status> {
        let caller = self.authorize(&request, "Approve", &[Role::Admin]).await?;
        let req = request.into_inner();
        if let Err(s) = check_reason(&req.reason) {
            return Err(self.refuse(&caller.actor(), "Approve", s, "").await);
        }
        let e = self
            .store
            .approve(&req.enrollment_id, &caller.actor(), &req.reason)
            .await
            .map_err(store_status)?;
        self.metrics.rpc("Approve", "ok");
        self.notify_change();
        Ok(Response::new(enrollment_to_pb(&e)))
    }

    async fn deny(
        &self,
        request: Request<pb::DenyRequest>,
    ) -> Result<Response<pb::Enrollment>, Status> {
        let caller = self.authorize(&request, "Deny", &[Role::Admin]).await?;
        let req = request.into_inner();
        if let Err(s) = check_reason(&req.reason) {
            return Err(self.refuse(&caller.actor(), "Deny", s, "").await);
        }
        let e = self
            .store
            .deny(&req.enrollment_id, &caller.actor(), &req.reason)
            .await
            .map_err(store_status)?;
        self.metrics.rpc("Deny", "ok");
        self.notify_change();
        Ok(Response::new(enrollment_to_pb(&e)))
    }

    async fn revoke_approval(
        &self,
        request: Request<pb::RevokeApprovalRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let caller = self
            .authorize(&request, "RevokeApproval", &[Role::Admin])
            .await?;
        let actor = caller.actor();
        let req = request.into_inner();
        let device = match identity_from_pb("device", req.device.as_ref()) {
            Ok(d) => d,
            Err(m) => {
                return Err(self
                    .refuse(&actor, "RevokeApproval", Status::invalid_argument(m), "")
                    .await);
            }
        };
        if let Err(s) = check_reason(&req.reason) {
            return Err(self
                .refuse(&actor, "RevokeApproval", s, &device.key())
                .await);
        }
        let d = self
            .store
            .revoke_approval(&device, &actor, &req.reason)
            .await
            .map_err(store_status)?;
        self.metrics.rpc("RevokeApproval", "ok");
        Ok(Response::new(device_to_pb(&d)))
    }

    async fn revoke_certificate(
        &self,
        request: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::RevokeCertificateResponse>, Status> {
        let caller = self
            .authorize(&request, "RevokeCertificate", &[Role::Admin])
            .await?;
        let actor = caller.actor();
        let req = request.into_inner();
        let serial = req
            .serial_hex
            .trim()
            .trim_start_matches("0x")
            .to_ascii_lowercase()
            .replace(':', "");
        if serial.is_empty() || serial.len() > 64 || !serial.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(self
                .refuse(
                    &actor,
                    "RevokeCertificate",
                    Status::invalid_argument("serial_hex must be 1–64 hexadecimal digits"),
                    "",
                )
                .await);
        }
        if let Err(s) = check_reason(&req.reason) {
            return Err(self.refuse(&actor, "RevokeCertificate", s, "").await);
        }
        let c = match self
            .store
            .revoke_certificate(&serial, &actor, &req.reason)
            .await
        {
            Ok(c) => c,
            // An unknown or already revoked serial is a refusal like any other: audited.
            Err(
                e @ (ragw_store::StoreError::NotFound(_) | ragw_store::StoreError::Conflict(_)),
            ) => {
                return Err(self
                    .refuse(&actor, "RevokeCertificate", store_status(e), "")
                    .await);
            }
            Err(e) => return Err(store_status(e)),
        };
        self.metrics.rpc("RevokeCertificate", "ok");
        // A worker waiting in Lease takes the revocation job queued with it at once.
        self.notify_change();
        Ok(Response::new(pb::RevokeCertificateResponse {
            serial_hex: c.serial_hex,
            enrollment_id: c.enrollment_id,
        }))
    }
}
