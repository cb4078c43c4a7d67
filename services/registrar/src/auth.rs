//! Who is calling, and may they: the role comes from the caller's component certificate.

use ragw_domain::AuditDraft;
use ragw_runtime::identity::{Role, roles_from_cert_der, subject_name_from_cert_der};
use serde_json::json;
use tonic::{Code, Request, Status};

use crate::Registrar;

#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// How the caller appears in audit events: `role:name`.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.name)
    }
}

pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::InvalidArgument => "invalid_argument",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::Unauthenticated => "unauthenticated",
        Code::FailedPrecondition => "failed_precondition",
        Code::ResourceExhausted => "resource_exhausted",
        Code::Unavailable => "unavailable",
        Code::Aborted => "aborted",
        Code::DeadlineExceeded => "deadline_exceeded",
        _ => "internal",
    }
}

impl Registrar {
    /// Checks that the caller presented a component certificate with one of `allowed`; a
    /// refusal is audited.
    pub(crate) async fn authorize<T>(
        &self,
        req: &Request<T>,
        rpc: &'static str,
        allowed: &[Role],
    ) -> Result<Caller, Status> {
        let cert = req.peer_certs().and_then(|c| c.first().cloned());
        let Some(cert) = cert else {
            return Err(self
                .refuse(
                    "unknown",
                    rpc,
                    Status::unauthenticated("a client certificate is required"),
                    "",
                )
                .await);
        };
        let name = subject_name_from_cert_der(cert.as_ref()).unwrap_or_else(|| "unnamed".into());
        let roles = match roles_from_cert_der(cert.as_ref()) {
            Ok(r) => r,
            Err(e) => {
                return Err(self
                    .refuse(
                        &name,
                        rpc,
                        Status::unauthenticated(format!("client certificate unreadable: {e}")),
                        "",
                    )
                    .await);
            }
        };
        match roles.iter().find(|r| allowed.contains(r)) {
            Some(role) => Ok(Caller { name, role: *role }),
            None => {
                let want: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
                let have: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                let actor = match roles.first() {
                    Some(r) => format!("{}:{name}", r.as_str()),
                    None => name.clone(),
                };
                Err(self
                    .refuse(
                        &actor,
                        rpc,
                        Status::permission_denied(format!(
                            "{rpc} requires the role {}; the client certificate of {name:?} carries [{}]",
                            want.join(" or "),
                            have.join(", ")
                        )),
                        "",
                    )
                    .await)
            }
        }
    }

    /// Records a refused call and returns the status to send. Nothing but this event is stored.
    pub(crate) async fn refuse(
        &self,
        actor: &str,
        rpc: &str,
        status: Status,
        device: &str,
    ) -> Status {
        self.metrics.rpc(rpc, code_name(status.code()));
        let draft = AuditDraft::new(actor, "rpc.refused")
            .device(device)
            .details(json!({
                "rpc": rpc,
                "code": code_name(status.code()),
                "reason": status.message(),
            }));
        if let Err(e) = self.store.append_audit(draft).await {
            tracing::error!(error = %e, rpc, "could not audit a refused call");
            return Status::unavailable("the audit log is unavailable; nothing was done");
        }
        status
    }
}

/// Maps store errors onto gRPC statuses without leaking database detail to callers.
pub(crate) fn store_status(e: ragw_store::StoreError) -> Status {
    use ragw_store::StoreError as E;
    match e {
        E::NotFound(what) => Status::not_found(format!("{what} not found")),
        E::Conflict(m) => Status::failed_precondition(m),
        E::LeaseLost(id) => Status::failed_precondition(format!(
            "the lease on enrollment {id} is no longer held by this worker"
        )),
        other => {
            tracing::error!(error = %other, "store failure");
            Status::unavailable("the registrar's database is unavailable; retry later")
        }
    }
}
