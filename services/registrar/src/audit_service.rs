//! AuditService: query, export and verify the hash-chained log.

use std::pin::Pin;

use futures::Stream;
use ragw_proto::registrar::v1 as pb;
use ragw_runtime::identity::Role;
use ragw_store::AuditFilter;
use tonic::{Request, Response, Status};

use crate::Registrar;
use crate::auth::store_status;
use crate::convert::audit_to_pb;

const EXPORT_PAGE: u32 = 500;
const MAX_FILTER_FIELD: usize = 256;

fn filter_from_pb(f: Option<pb::AuditFilter>) -> Result<AuditFilter, Status> {
    let f = f.unwrap_or_default();
    let opt = |name: &str, v: String| -> Result<Option<String>, Status> {
        if v.len() > MAX_FILTER_FIELD {
            return Err(Status::invalid_argument(format!(
                "filter.{name} is {} bytes; at most {MAX_FILTER_FIELD} are allowed",
                v.len()
            )));
        }
        Ok((!v.is_empty()).then_some(v))
    };
    if f.since_unix_micros < 0 || f.until_unix_micros < 0 {
        return Err(Status::invalid_argument(
            "filter times must not be negative",
        ));
    }
    Ok(AuditFilter {
        device: opt("device", f.device)?,
        label: opt("label", f.label)?,
        action: opt("action", f.action)?,
        actor: opt("actor", f.actor)?,
        since: (f.since_unix_micros > 0).then_some(f.since_unix_micros),
        until: (f.until_unix_micros > 0).then_some(f.until_unix_micros),
    })
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::AuditEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for Registrar {
    async fn query(
        &self,
        request: Request<pb::AuditQueryRequest>,
    ) -> Result<Response<pb::AuditQueryResponse>, Status> {
        let caller = self
            .authorize(&request, "Query", &[Role::Auditor, Role::Admin])
            .await?;
        let req = request.into_inner();
        let filter = match filter_from_pb(req.filter) {
            Ok(f) => f,
            Err(s) => return Err(self.refuse(&caller.actor(), "Query", s, "").await),
        };
        let limit = if req.limit == 0 {
            100
        } else {
            req.limit.min(1000)
        };
        let events = self
            .store
            .query_audit(&filter, req.after_seq.max(0), limit)
            .await
            .map_err(store_status)?;
        self.metrics.rpc("Query", "ok");
        let next = if events.len() as u32 == limit {
            events.last().map(|e| e.seq).unwrap_or(0)
        } else {
            0
        };
        Ok(Response::new(pb::AuditQueryResponse {
            events: events.iter().map(audit_to_pb).collect(),
            next_after_seq: next,
        }))
    }

    type ExportStream = EventStream;

    async fn export(
        &self,
        request: Request<pb::AuditExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let caller = self
            .authorize(&request, "Export", &[Role::Auditor, Role::Admin])
            .await?;
        let req = request.into_inner();
        let filter = match filter_from_pb(req.filter) {
            Ok(f) => f,
            Err(s) => return Err(self.refuse(&caller.actor(), "Export", s, "").await),
        };
        self.metrics.rpc("Export", "ok");
        let store = self.store.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut after = 0;
            loop {
                match store.query_audit(&filter, after, EXPORT_PAGE).await {
                    Ok(events) => {
                        let done = (events.len() as u32) < EXPORT_PAGE;
                        for e in &events {
                            after = e.seq;
                            if tx.send(Ok(audit_to_pb(e))).await.is_err() {
                                return;
                            }
                        }
                        if done {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(store_status(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn verify(
        &self,
        request: Request<pb::AuditVerifyRequest>,
    ) -> Result<Response<pb::AuditVerifyResponse>, Status> {
        self.authorize(&request, "Verify", &[Role::Auditor, Role::Admin])
            .await?;
        let report = self.store.verify_audit().await.map_err(store_status)?;
        self.metrics.rpc(
            "Verify",
            if report.broken.is_none() {
                "ok"
            } else {
                "broken"
            },
        );
        Ok(Response::new(pb::AuditVerifyResponse {
            ok: report.broken.is_none(),
            events_checked: report.checked,
            first_bad_seq: report.broken.as_ref().map(|b| b.seq).unwrap_or(0),
            problem: report.broken.map(|b| b.problem).unwrap_or_default(),
            head_hash_hex: hex::encode(report.head_hash),
        }))
    }
}
