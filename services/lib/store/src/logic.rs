//! The store's operations, written once over [`Conn`] and run inside one transaction each.

use ragw_domain::audit::{ChainVerifier, parse_hash_hex};
use ragw_domain::enrollment::initial_path;
use ragw_domain::label::random_label;
use ragw_domain::{
    AuditDraft, AuditEvent, DeviceIdentity, EnrollmentState, ErrorClass, IdentityKind, Protocol,
};
use rand::Rng;
use serde_json::json;

use crate::sql::{Conn, Dialect, Row, Val};
use crate::{
    AuditFilter, CertificateRecord, DeviceRecord, EnrollmentFilter, EnrollmentRecord, FailOutcome,
    IssuedCertificate, LabelAssignment, LeasedJob, NewEnrollment, Page, Result, StoreError,
    VerifyReport,
};

/// A connection inside a transaction, with the audit head read at its start.
pub(crate) struct Tx<C: Conn> {
    pub c: C,
    pub now: i64,
    head: Option<(i64, [u8; 32])>,
    /// Take the audit head at the first append instead of at BEGIN (see `begin_audit_last`).
    lazy_head: bool,
}

pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How a transaction is opened, and how it takes the audit head.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Begin {
    /// A read-only snapshot.
    Read,
    /// A write that takes the audit head at BEGIN (see [`Tx::begin`]).
    Write,
    /// A write that takes the audit head at its first append (see [`Tx::begin_audit_last`]).
    WriteAuditLast,
    /// A write that appends no audit event (see [`Tx::begin_unaudited`]).
    WriteUnaudited,
}

impl<C: Conn> Tx<C> {
    pub async fn open(c: C, begin: Begin) -> Result<Self> {
        match begin {
            Begin::Read => Self::begin(c, false).await,
            Begin::Write => Self::begin(c, true).await,
            Begin::WriteAuditLast => Self::begin_audit_last(c).await,
            Begin::WriteUnaudited => Self::begin_unaudited(c).await,
        }
    }

    /// Write transactions lock the audit head first: every writer appends to the one chain, so
    /// taking that lock up front orders writers and rules out lock-order deadlocks.
    pub async fn begin(mut c: C, write: bool) -> Result<Self> {
        let dialect = c.dialect();
        match (dialect, write) {
            (Dialect::Postgres, true) => c.batch("BEGIN").await?,
            (Dialect::Postgres, false) => {
                c.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
            (Dialect::Sqlite, true) => c.batch("BEGIN IMMEDIATE").await?,
            (Dialect::Sqlite, false) => c.batch("BEGIN").await?,
        }
        let mut tx = Tx {
            c,
            now: now_micros(),
            head: None,
            lazy_head: false,
        };
        if write {
            let sql = match dialect {
                Dialect::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
                Dialect::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
            };
            let head = read_head(&mut tx.c, sql).await;
            match head {
                Ok(h) => tx.head = Some(h),
                Err(e) => {
                    let _ = tx.c.batch("ROLLBACK").await;
                    return Err(e);
                }
            }
        }
        Ok(tx)
    }

    /// A write transaction that does not take the audit head, for writes that append no audit
    /// event (ACME nonces and secrets), so they never wait behind audited writers.
    pub async fn begin_unaudited(mut c: C) -> Result<Self> {
        match c.dialect() {
            Dialect::Postgres => c.batch("BEGIN").await?,
            Dialect::Sqlite => c.batch("BEGIN IMMEDIATE").await?,
        }
        Ok(Tx {
            c,
            now: now_micros(),
            head: None,
            lazy_head: false,
        })
    }

    /// A write transaction that takes the audit head only when it appends its event, so the
    /// global chain lock is held for the last statements and the commit rather than the whole
    /// transaction. Only for operations whose audit append comes after all their other writes
    /// and that guard their own races with conditional updates (the ACME CA's): then no lock
    /// is ever awaited while the head is held, and no lock-order cycle can form.
    pub async fn begin_audit_last(c: C) -> Result<Self> {
        let mut tx = Self::begin_unaudited(c).await?;
        tx.lazy_head = true;
        Ok(tx)
    }

    pub async fn commit(mut self) -> Result<()> {
        self.c.batch("COMMIT").await
    }

    pub async fn rollback(mut self) {
        // The connection is dropped after a failed rollback, so nothing half-done survives.
        let _ = self.c.batch("ROLLBACK").await;
    }

    pub(crate) async fn audit(&mut self, draft: AuditDraft) -> Result<AuditEvent> {
        if self.head.is_none() && self.lazy_head {
            let sql = match self.c.dialect() {
                Dialect::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
                Dialect::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
            };
            self.head = Some(read_head(&mut self.c, sql).await?);
        }
        let (seq, hash) = self.head.ok_or_else(|| {
            StoreError::Backend("audit append outside a write transaction".into())
        })?;
        let ev = draft.seal(seq, hash, self.now);
        self.c
            .exec(
                "INSERT INTO audit_events (seq, time, actor, action, device, label, enrollment, details, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    ev.seq.into(),
                    ev.time_unix_micros.into(),
                    (&ev.actor).into(),
                    (&ev.action).into(),
                    (&ev.device).into(),
                    (&ev.label).into(),
                    (&ev.enrollment).into(),
                    (&ev.details).into(),
                    hex::encode(ev.prev_hash).into(),
                    hex::encode(ev.hash).into(),
                ],
            )
            .await?;
        self.c
            .exec(
                "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1",
                &[ev.seq.into(), hex::encode(ev.hash).into()],
            )
            .await?;
        self.head = Some((ev.seq, ev.hash));
        Ok(ev)
    }
}

async fn read_head<C: Conn>(c: &mut C, sql: &str) -> Result<(i64, [u8; 32])> {
    let rows = c.query(sql, &[]).await?;
    let row = rows
        .first()
        .ok_or_else(|| StoreError::Corrupt("the audit head row is missing".into()))?;
    let seq = row.int(0)?;
    let hash = parse_hash_hex(&row.text(1)?)
        .ok_or_else(|| StoreError::Corrupt("the audit head hash is not 64 hex digits".into()))?;
    Ok((seq, hash))
}

// ---------------------------------------------------------------------------------------------
// Devices and labels

async fn ensure_device<C: Conn>(
    tx: &mut Tx<C>,
    device: &DeviceIdentity,
    actor: &str,
) -> Result<bool> {
    let key = device.key();
    let existing =
        tx.c.query(
            "SELECT approved FROM devices WHERE id = $1",
            &[(&key).into()],
        )
        .await?;
    if let Some(row) = existing.first() {
        return Ok(row.int(0)? != 0);
    }
    let now = tx.now;
    tx.c.exec(
        "INSERT INTO devices (id, kind, value, approved, first_seen) VALUES ($1, $2, $3, 0, $4)",
        &[
            (&key).into(),
            device.kind().as_str().into(),
            device.value().into(),
            now.into(),
        ],
    )
    .await?;
    tx.audit(
        AuditDraft::new(actor, "device.registered")
            .device(&key)
            .details(json!({"kind": device.kind().as_str()})),
    )
    .await?;
    Ok(false)
}

pub(crate) async fn find_label<C: Conn>(
    tx: &mut Tx<C>,
    device: &DeviceIdentity,
    profile: &str,
) -> Result<Option<LabelAssignment>> {
    let rows =
        tx.c.query(
            "SELECT parent_domain, label FROM labels WHERE device_id = $1 AND profile = $2",
            &[(&device.key()).into(), profile.into()],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    Ok(Some(LabelAssignment {
        device: device.clone(),
        profile: profile.to_string(),
        parent_domain: row.text(0)?,
        label: row.text(1)?,
        allocated: false,
    }))
}

pub(crate) async fn assign_label<C: Conn>(
    tx: &mut Tx<C>,
    device: &DeviceIdentity,
    profile: &str,
    parent_domain: &str,
    actor: &str,
) -> Result<LabelAssignment> {
    if let Some(existing) = find_label(tx, device, profile).await? {
        return Ok(existing);
    }
    let key = device.key();
    ensure_device(tx, device, actor).await?;
    // 44 bits per draw: a clash is rare, ten in a row means something else is wrong.
    for _ in 0..10 {
        let label = random_label(&mut rand::rng());
        let clash =
            tx.c.query(
                "SELECT 1 FROM labels WHERE parent_domain = $1 AND label = $2",
                &[parent_domain.into(), (&label).into()],
            )
            .await?;
        if !clash.is_empty() {
            continue;
        }
        let now = tx.now;
        tx.c.exec(
            "INSERT INTO labels (device_id, profile, parent_domain, label, created) VALUES ($1, $2, $3, $4, $5)",
            &[
                (&key).into(),
                profile.into(),
                parent_domain.into(),
                (&label).into(),
                now.into(),
            ],
        )
        .await?;
        tx.audit(
            AuditDraft::new(actor, "label.allocated")
                .device(&key)
                .label(&label)
                .details(json!({"profile": profile, "parent_domain": parent_domain})),
        )
        .await?;
        return Ok(LabelAssignment {
            device: device.clone(),
            profile: profile.to_string(),
            parent_domain: parent_domain.to_string(),
            label,
            allocated: true,
        });
    }
    Err(StoreError::Conflict(format!(
        "could not find a free label under {parent_domain} in ten draws"
    )))
}

async fn device_labels<C: Conn>(c: &mut C, key: &str) -> Result<Vec<(String, String, String)>> {
    let rows = c
        .query(
            "SELECT profile, label, parent_domain FROM labels WHERE device_id = $1 ORDER BY profile",
            &[key.into()],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.text(0)?, r.text(1)?, r.text(2)?)))
        .collect()
}

fn device_from_row(row: &Row) -> Result<(DeviceIdentity, bool, i64)> {
    let kind = row.text(1)?;
    let kind = IdentityKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown identity kind {kind:?}")))?;
    let identity = DeviceIdentity::new(kind, &row.text(2)?)
        .map_err(|e| StoreError::Corrupt(format!("stored device identity: {e}")))?;
    Ok((identity, row.int(3)? != 0, row.int(4)?))
}

pub(crate) async fn get_device<C: Conn>(
    tx: &mut Tx<C>,
    device: &DeviceIdentity,
) -> Result<Option<DeviceRecord>> {
    let key = device.key();
    let rows =
        tx.c.query(
            "SELECT id, kind, value, approved, first_seen FROM devices WHERE id = $1",
            &[(&key).into()],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let (identity, approved, first_seen) = device_from_row(row)?;
    let labels = device_labels(&mut tx.c, &key).await?;
    Ok(Some(DeviceRecord {
        identity,
        approved,
        first_seen,
        labels,
    }))
}

pub(crate) async fn list_devices<C: Conn>(
    tx: &mut Tx<C>,
    limit: u32,
    after: Option<&str>,
) -> Result<Page<DeviceRecord>> {
    let limit = clamp_limit(limit);
    let rows = tx
        .c
        .query(
            "SELECT id, kind, value, approved, first_seen FROM devices WHERE id > $1 ORDER BY id LIMIT $2",
            &[after.unwrap_or("").into(), (limit + 1).into()],
        )
        .await?;
    let mut items = Vec::new();
    let mut next = None;
    for (i, row) in rows.iter().enumerate() {
        if i as i64 == limit {
            next = items.last().map(|d: &DeviceRecord| d.identity.key());
            break;
        }
        let (identity, approved, first_seen) = device_from_row(row)?;
        let labels = device_labels(&mut tx.c, &identity.key()).await?;
        items.push(DeviceRecord {
            identity,
            approved,
            first_seen,
            labels,
        });
    }
    Ok(Page { items, next })
}

fn clamp_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, 1000))
}

// ---------------------------------------------------------------------------------------------
// Enrollments

const ENROLLMENT_COLUMNS: &str = "e.id, e.device_id, e.profile, e.label, e.parent_domain, e.names, e.protocol, \
     e.csr_der, e.csr_sha256, e.state, e.created, e.updated, e.attempts, e.lease_owner, e.lease_expires, \
     e.not_before, e.acme_order_url, e.failure_detail, e.failure_class, c.chain_der \
     FROM enrollments e LEFT JOIN certificates c ON c.enrollment_id = e.id";

fn enrollment_from_row(row: &Row) -> Result<EnrollmentRecord> {
    let device = DeviceIdentity::from_key(&row.text(1)?)
        .map_err(|e| StoreError::Corrupt(format!("enrollment device: {e}")))?;
    let names: Vec<String> = serde_json::from_str(&row.text(5)?)
        .map_err(|e| StoreError::Corrupt(format!("enrollment names: {e}")))?;
    let protocol_text = row.text(6)?;
    let protocol = Protocol::parse(&protocol_text)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown protocol {protocol_text:?}")))?;
    let state_text = row.text(9)?;
    let state = EnrollmentState::parse(&state_text)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown state {state_text:?}")))?;
    let failure_class = match row.opt_text(18)? {
        None => None,
        Some(s) => Some(
            ErrorClass::parse(&s)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown error class {s:?}")))?,
        ),
    };
    let chain = match row.0.get(19) {
        Some(Val::Blob(b)) => split_chain(b)?,
        _ => Vec::new(),
    };
    Ok(EnrollmentRecord {
        id: row.text(0)?,
        device,
        profile: row.text(2)?,
        label: row.text(3)?,
        parent_domain: row.text(4)?,
        names,
        protocol,
        csr_der: row.blob(7)?,
        csr_sha256: row.text(8)?,
        state,
        created: row.int(10)?,
        updated: row.int(11)?,
        attempts: row.int(12)?,
        lease_owner: row.opt_text(13)?,
        lease_expires: row.opt_int(14)?,
        not_before: row.int(15)?,
        acme_order_url: row.opt_text(16)?,
        failure_detail: row.opt_text(17)?,
        failure_class,
        certificate_chain: chain,
    })
}

/// Chains are stored as a sequence of (u32 big-endian length, DER) entries.
pub(crate) fn join_chain(chain: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for cert in chain {
        out.extend_from_slice(&(cert.len() as u32).to_be_bytes());
        out.extend_from_slice(cert);
    }
    out
}

pub(crate) fn split_chain(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| StoreError::Corrupt("certificate chain length is cut short".into()))?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(StoreError::Corrupt(
                "certificate chain entry is cut short".into(),
            ));
        }
        out.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    Ok(out)
}

pub(crate) async fn get_enrollment<C: Conn>(
    tx: &mut Tx<C>,
    id: &str,
) -> Result<Option<EnrollmentRecord>> {
    let rows =
        tx.c.query(
            &format!("SELECT {ENROLLMENT_COLUMNS} WHERE e.id = $1"),
            &[id.into()],
        )
        .await?;
    rows.first().map(enrollment_from_row).transpose()
}

async fn must_get_enrollment<C: Conn>(tx: &mut Tx<C>, id: &str) -> Result<EnrollmentRecord> {
    get_enrollment(tx, id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("enrollment {id}")))
}

pub(crate) async fn create_enrollment<C: Conn>(
    tx: &mut Tx<C>,
    new: &NewEnrollment,
) -> Result<(EnrollmentRecord, bool)> {
    let key = new.device.key();
    let existing =
        tx.c.query(
            &format!("SELECT {ENROLLMENT_COLUMNS} WHERE e.device_id = $1 AND e.csr_sha256 = $2"),
            &[(&key).into(), (&new.csr_sha256).into()],
        )
        .await?;
    if let Some(row) = existing.first() {
        return Ok((enrollment_from_row(row)?, true));
    }
    let approved = ensure_device(tx, &new.device, &new.actor).await?;
    let path = initial_path(new.approval, approved);
    let final_state = path.last().copied().unwrap_or(EnrollmentState::Received);
    let names = serde_json::to_string(&new.names)
        .map_err(|e| StoreError::Corrupt(format!("names: {e}")))?;
    let now = tx.now;
    tx.c.exec(
        "INSERT INTO enrollments (id, device_id, profile, label, parent_domain, names, protocol, csr_der, csr_sha256, \
         state, created, updated, attempts, not_before) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, 0, $11)",
        &[
            (&new.id).into(),
            (&key).into(),
            (&new.profile).into(),
            (&new.label).into(),
            (&new.parent_domain).into(),
            names.into(),
            new.protocol.as_str().into(),
            new.csr_der.clone().into(),
            (&new.csr_sha256).into(),
            final_state.as_str().into(),
            now.into(),
        ],
    )
    .await?;
    for state in path {
        let mut details = match state {
            EnrollmentState::Received => {
                let mut d = json!({
                    "profile": new.profile,
                    "protocol": new.protocol.as_str(),
                    "csr_sha256": new.csr_sha256,
                    "names": new.names,
                });
                if let (Some(obj), Some(extra)) = (d.as_object_mut(), new.details.as_object()) {
                    for (k, v) in extra {
                        obj.insert(k.clone(), v.clone());
                    }
                }
                d
            }
            EnrollmentState::AwaitingApproval => {
                json!({"reason": "the profile requires an operator's approval for this device"})
            }
            EnrollmentState::Approved => json!({
                "by": "policy",
                "reason": if approved { "the device holds a standing approval" } else { "the profile approves automatically" },
            }),
            _ => json!({}),
        };
        if details.as_object().is_some_and(|o| o.is_empty()) {
            details = json!({});
        }
        tx.audit(
            AuditDraft::new(&new.actor, state.audit_action())
                .device(&key)
                .label(&new.label)
                .enrollment(&new.id)
                .details(details),
        )
        .await?;
    }
    Ok((must_get_enrollment(tx, &new.id).await?, false))
}

pub(crate) async fn list_enrollments<C: Conn>(
    tx: &mut Tx<C>,
    filter: &EnrollmentFilter,
    limit: u32,
    after: Option<&str>,
) -> Result<Page<EnrollmentRecord>> {
    let limit = clamp_limit(limit);
    let (after_created, after_id) = match after {
        None => (i64::MIN, String::new()),
        Some(cursor) => {
            let (c, id) = cursor.split_once('/').ok_or_else(|| {
                StoreError::Conflict(format!(
                    "page cursor {cursor:?} is not one this server issued"
                ))
            })?;
            let c = c.parse::<i64>().map_err(|_| {
                StoreError::Conflict(format!(
                    "page cursor {cursor:?} is not one this server issued"
                ))
            })?;
            (c, id.to_string())
        }
    };
    let mut sql = format!(
        "SELECT {ENROLLMENT_COLUMNS} WHERE (e.created > $1 OR (e.created = $1 AND e.id > $2))"
    );
    let mut params: Vec<Val> = vec![after_created.into(), after_id.into()];
    if let Some(d) = &filter.device {
        params.push(d.key().into());
        sql.push_str(&format!(" AND e.device_id = ${}", params.len()));
    }
    if let Some(s) = filter.state {
        params.push(s.as_str().into());
        sql.push_str(&format!(" AND e.state = ${}", params.len()));
    }
    params.push((limit + 1).into());
    sql.push_str(&format!(
        " ORDER BY e.created, e.id LIMIT ${}",
        params.len()
    ));
    let rows = tx.c.query(&sql, &params).await?;
    let mut items = Vec::new();
    let mut next = None;
    for (i, row) in rows.iter().enumerate() {
        if i as i64 == limit {
            next = items
                .last()
                .map(|e: &EnrollmentRecord| format!("{}/{}", e.created, e.id));
            break;
        }
        items.push(enrollment_from_row(row)?);
    }
    Ok(Page { items, next })
}

pub(crate) async fn count_enrollments<C: Conn>(tx: &mut Tx<C>) -> Result<i64> {
    let rows = tx.c.query("SELECT COUNT(*) FROM enrollments", &[]).await?;
    rows.first()
        .ok_or_else(|| StoreError::Corrupt("COUNT returned no row".into()))?
        .int(0)
}

async fn move_state<C: Conn>(
    tx: &mut Tx<C>,
    e: &EnrollmentRecord,
    to: EnrollmentState,
    actor: &str,
    details: serde_json::Value,
) -> Result<()> {
    if !e.state.can_move_to(to) {
        return Err(StoreError::Conflict(format!(
            "enrollment {} is {}, it cannot become {}",
            e.id, e.state, to
        )));
    }
    let now = tx.now;
    tx.c.exec(
        "UPDATE enrollments SET state = $1, updated = $2 WHERE id = $3",
        &[to.as_str().into(), now.into(), (&e.id).into()],
    )
    .await?;
    tx.audit(
        AuditDraft::new(actor, to.audit_action())
            .device(e.device.key())
            .label(&e.label)
            .enrollment(&e.id)
            .details(details),
    )
    .await?;
    Ok(())
}

async fn set_device_approval<C: Conn>(
    tx: &mut Tx<C>,
    device: &DeviceIdentity,
    approved: bool,
) -> Result<u64> {
    tx.c.exec(
        "UPDATE devices SET approved = $1 WHERE id = $2",
        &[approved.into(), device.key().into()],
    )
    .await
}

pub(crate) async fn approve<C: Conn>(
    tx: &mut Tx<C>,
    id: &str,
    actor: &str,
    reason: &str,
) -> Result<EnrollmentRecord> {
    let e = must_get_enrollment(tx, id).await?;
    if e.state != EnrollmentState::AwaitingApproval {
        return Err(StoreError::Conflict(format!(
            "enrollment {id} is {}, not awaiting approval",
            e.state
        )));
    }
    set_device_approval(tx, &e.device, true).await?;
    tx.audit(
        AuditDraft::new(actor, "approval.granted")
            .device(e.device.key())
            .label(&e.label)
            .enrollment(id)
            .details(json!({"reason": reason, "scope": "device, until revoked"})),
    )
    .await?;
    move_state(
        tx,
        &e,
        EnrollmentState::Approved,
        actor,
        json!({"by": "operator", "reason": reason}),
    )
    .await?;
    let e = must_get_enrollment(tx, id).await?;
    move_state(tx, &e, EnrollmentState::Queued, actor, json!({})).await?;
    must_get_enrollment(tx, id).await
}

pub(crate) async fn deny<C: Conn>(
    tx: &mut Tx<C>,
    id: &str,
    actor: &str,
    reason: &str,
) -> Result<EnrollmentRecord> {
    let e = must_get_enrollment(tx, id).await?;
    if e.state != EnrollmentState::AwaitingApproval {
        return Err(StoreError::Conflict(format!(
            "enrollment {id} is {}, not awaiting approval",
            e.state
        )));
    }
    tx.audit(
        AuditDraft::new(actor, "approval.denied")
            .device(e.device.key())
            .label(&e.label)
            .enrollment(id)
            .details(json!({"reason": reason})),
    )
    .await?;
    let detail = format!("denied by an operator: {reason}");
    move_state(
        tx,
        &e,
        EnrollmentState::Rejected,
        actor,
        json!({"reason": reason}),
    )
    .await?;
    tx.c.exec(
        "UPDATE enrollments SET failure_detail = $1, failure_class = $2 WHERE id = $3",
        &[
            detail.into(),
            ErrorClass::BadIdentity.as_str().into(),
            id.into(),
        ],
    )
    .await?;
    must_get_enrollment(tx, id).await
}

pub(crate) async fn revoke_approval<C: Conn>(
    tx: &mut Tx<C>,
    device: &DeviceIdentity,
    actor: &str,
    reason: &str,
) -> Result<DeviceRecord> {
    if set_device_approval(tx, device, false).await? == 0 {
        return Err(StoreError::NotFound(format!("device {device}")));
    }
    tx.audit(
        AuditDraft::new(actor, "approval.revoked")
            .device(device.key())
            .details(json!({"reason": reason})),
    )
    .await?;
    get_device(tx, device)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("device {device}")))
}

// ---------------------------------------------------------------------------------------------
// Worker leases

pub(crate) async fn lease_jobs<C: Conn>(
    tx: &mut Tx<C>,
    worker: &str,
    max: u32,
    lease_micros: i64,
) -> Result<Vec<LeasedJob>> {
    let lock = match tx.c.dialect() {
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        Dialect::Sqlite => "",
    };
    let now = tx.now;
    let ids = tx
        .c
        .query(
            &format!(
                "SELECT id FROM enrollments WHERE (state = 'queued' AND not_before <= $1) \
                 OR (state = 'ordering' AND lease_expires < $1) ORDER BY not_before, created, id LIMIT $2{lock}"
            ),
            &[now.into(), i64::from(max.clamp(1, 100)).into()],
        )
        .await?;
    let mut jobs = Vec::new();
    for row in &ids {
        let id = row.text(0)?;
        let e = must_get_enrollment(tx, &id).await?;
        let token = hex::encode(rand::rng().random::<[u8; 16]>());
        let expires = now.saturating_add(lease_micros);
        let details = json!({
            "worker": worker,
            "attempt": e.attempts + 1,
            "lease_expires": expires,
            "previous_worker": if e.state == EnrollmentState::Ordering { e.lease_owner.clone() } else { None },
            "acme_order_url": e.acme_order_url,
        });
        move_state(tx, &e, EnrollmentState::Ordering, worker, details).await?;
        tx.c.exec(
            "UPDATE enrollments SET lease_owner = $1, lease_token = $2, lease_expires = $3, attempts = attempts + 1 WHERE id = $4",
            &[worker.into(), (&token).into(), expires.into(), (&id).into()],
        )
        .await?;
        jobs.push(LeasedJob {
            enrollment: must_get_enrollment(tx, &id).await?,
            lease_token: token,
            lease_expires: expires,
        });
    }
    Ok(jobs)
}

/// The enrollment, if `token` is its current lease.
async fn leased<C: Conn>(tx: &mut Tx<C>, id: &str, token: &str) -> Result<EnrollmentRecord> {
    let e = must_get_enrollment(tx, id).await?;
    let rows =
        tx.c.query(
            "SELECT 1 FROM enrollments WHERE id = $1 AND state = 'ordering' AND lease_token = $2",
            &[id.into(), token.into()],
        )
        .await?;
    if rows.is_empty() {
        return Err(StoreError::LeaseLost(id.to_string()));
    }
    Ok(e)
}

pub(crate) async fn append_job_audit<C: Conn>(
    tx: &mut Tx<C>,
    id: &str,
    token: &str,
    draft: AuditDraft,
) -> Result<AuditEvent> {
    let e = leased(tx, id, token).await?;
    tx.audit(draft.device(e.device.key()).label(&e.label).enrollment(id))
        .await
}

pub(crate) async fn extend_lease<C: Conn>(
    tx: &mut Tx<C>,
    id: &str,
    token: &str,
    lease_micros: i64,
) -> Result<i64> {
    leased(tx, id, token).await?;
    let expires = tx.now.saturating_add(lease_micros);
    tx.c.exec(
        "UPDATE enrollments SET lease_expires = $1 WHERE id = $2",
        &[expires.into(), id.into()],
    )
    .await?;
    Ok(expires)
}

pub(crate) async fn record_order<C: Conn>(
    tx: &mut Tx<C>,
    id: &str,
    token: &str,
    url: &str,
) -> Result<()> {
    let e = leased(tx, id, token).await?;
    if e.acme_order_url.as_deref() == Some(url) {
        return Ok(());
    }
    let now = tx.now;
    tx.c.exec(
        "UPDATE enrollments SET acme_order_url = $1, updated = $2 WHERE id = $3",
        &[url.into(), now.into(), id.into()],
    )
    .await?;
    tx.audit(
        AuditDraft::new(
            e.lease_owner.clone().unwrap_or_default(),
            "enrollment.order_recorded",
        )
        .device(e.device.key())
        .label(&e.label)
        .enrollment(id)
        .details(json!({"acme_order_url": url, "previous": e.acme_order_url})),
    )
    .await?;
    Ok(())
}

pub(crate) async fn complete<C: Conn>(
    tx: &mut Tx<C>,
    id: &str,
    token: &str,
    worker: &str,
    cert: &IssuedCertificate,
) -> Result<EnrollmentRecord> {
    let current = must_get_enrollment(tx, id).await?;
    if current.state == EnrollmentState::Issued {
        // A worker that lost the answer to its Complete call retries it: same certificate, same
        // outcome.
        if current.certificate_chain.first() == cert.chain.first() {
            return Ok(current);
        }
        return Err(StoreError::Conflict(format!(
            "enrollment {id} was already issued a different certificate"
        )));
    }
    let e = leased(tx, id, token).await?;
    let now = tx.now;
    tx.c.exec(
        "INSERT INTO certificates (serial_hex, enrollment_id, device_id, not_before, not_after, chain_der, issued, revoked) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
        &[
            (&cert.serial_hex).into(),
            id.into(),
            e.device.key().into(),
            cert.not_before.into(),
            cert.not_after.into(),
            join_chain(&cert.chain).into(),
            now.into(),
        ],
    )
    .await?;
    move_state(
        tx,
        &e,
        EnrollmentState::Issued,
        worker,
        json!({"serial": cert.serial_hex, "not_after": cert.not_after, "chain_length": cert.chain.len()}),
    )
    .await?;
    tx.c.exec(
        "UPDATE enrollments SET lease_owner = NULL, lease_token = NULL, lease_expires = NULL WHERE id = $1",
        &[id.into()],
    )
    .await?;
    must_get_enrollment(tx, id).await
}

pub(crate) async fn fail<C: Conn>(
    tx: &mut Tx<C>,
    id: &str,
    token: &str,
    worker: &str,
    outcome: &FailOutcome,
) -> Result<EnrollmentRecord> {
    let e = leased(tx, id, token).await?;
    let give_up = !outcome.retryable || e.attempts >= outcome.max_attempts;
    let details = json!({
        "detail": outcome.detail,
        "class": outcome.class.as_str(),
        "retryable": outcome.retryable,
        "attempt": e.attempts,
        "acme_problem": outcome.acme_problem,
        "retry_at": if give_up { None } else { Some(outcome.retry_at) },
        "gave_up_after_attempts": if give_up && outcome.retryable { Some(e.attempts) } else { None },
    });
    if give_up {
        move_state(tx, &e, EnrollmentState::Failed, worker, details).await?;
        tx.c.exec(
            "UPDATE enrollments SET failure_detail = $1, failure_class = $2, lease_owner = NULL, lease_token = NULL, \
             lease_expires = NULL WHERE id = $3",
            &[(&outcome.detail).into(), outcome.class.as_str().into(), id.into()],
        )
        .await?;
    } else {
        move_state(tx, &e, EnrollmentState::Queued, worker, details).await?;
        tx.c.exec(
            "UPDATE enrollments SET not_before = $1, failure_detail = $2, failure_class = $3, lease_owner = NULL, \
             lease_token = NULL, lease_expires = NULL WHERE id = $4",
            &[
                outcome.retry_at.into(),
                (&outcome.detail).into(),
                outcome.class.as_str().into(),
                id.into(),
            ],
        )
        .await?;
    }
    must_get_enrollment(tx, id).await
}

// ---------------------------------------------------------------------------------------------
// Certificates

const CERT_COLUMNS: &str = "serial_hex, enrollment_id, device_id, not_before, not_after, issued, revoked, revocation_reason, chain_der FROM certificates";

fn certificate_from_row(row: &Row) -> Result<CertificateRecord> {
    Ok(CertificateRecord {
        serial_hex: row.text(0)?,
        enrollment_id: row.text(1)?,
        device: DeviceIdentity::from_key(&row.text(2)?)
            .map_err(|e| StoreError::Corrupt(format!("certificate device: {e}")))?,
        not_before: row.int(3)?,
        not_after: row.int(4)?,
        issued: row.int(5)?,
        revoked: row.int(6)? != 0,
        revocation_reason: row.opt_text(7)?,
        chain: split_chain(&row.blob(8)?)?,
    })
}

pub(crate) async fn issuer_certificates<C: Conn>(
    tx: &mut Tx<C>,
    profile: &str,
) -> Result<Vec<Vec<u8>>> {
    let rows =
        tx.c.query(
            "SELECT c.chain_der FROM certificates c JOIN enrollments e ON e.id = c.enrollment_id \
             WHERE e.profile = $1 ORDER BY c.issued DESC, c.serial_hex DESC LIMIT 1",
            &[profile.into()],
        )
        .await?;
    match rows.first() {
        Some(row) => Ok(split_chain(&row.blob(0)?)?.into_iter().skip(1).collect()),
        None => Ok(Vec::new()),
    }
}

pub(crate) async fn get_certificate<C: Conn>(
    tx: &mut Tx<C>,
    serial_hex: &str,
) -> Result<Option<CertificateRecord>> {
    let rows =
        tx.c.query(
            &format!("SELECT {CERT_COLUMNS} WHERE serial_hex = $1"),
            &[serial_hex.to_ascii_lowercase().into()],
        )
        .await?;
    rows.first().map(certificate_from_row).transpose()
}

pub(crate) async fn newest_certificate<C: Conn>(
    tx: &mut Tx<C>,
    (device_key, profile): &(String, String),
) -> Result<Option<CertificateRecord>> {
    let rows =
        tx.c.query(
            "SELECT c.serial_hex, c.enrollment_id, c.device_id, c.not_before, c.not_after, c.issued, \
             c.revoked, c.revocation_reason, c.chain_der \
             FROM certificates c JOIN enrollments e ON e.id = c.enrollment_id \
             WHERE c.device_id = $1 AND e.profile = $2 \
             ORDER BY c.issued DESC, c.not_before DESC, c.serial_hex DESC LIMIT 1",
            &[device_key.into(), profile.into()],
        )
        .await?;
    rows.first().map(certificate_from_row).transpose()
}

pub(crate) async fn revoke_certificate<C: Conn>(
    tx: &mut Tx<C>,
    serial_hex: &str,
    actor: &str,
    reason: &str,
) -> Result<CertificateRecord> {
    let cert = get_certificate(tx, serial_hex)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("certificate with serial {serial_hex}")))?;
    if cert.revoked {
        return Err(StoreError::Conflict(format!(
            "certificate {} is already revoked",
            cert.serial_hex
        )));
    }
    let now = tx.now;
    tx.c.exec(
        "UPDATE certificates SET revoked = 1, revoked_at = $1, revocation_reason = $2 WHERE serial_hex = $3",
        &[now.into(), reason.into(), (&cert.serial_hex).into()],
    )
    .await?;
    tx.audit(
        AuditDraft::new(actor, "certificate.revoked")
            .device(cert.device.key())
            .enrollment(&cert.enrollment_id)
            .details(json!({"serial": cert.serial_hex, "reason": reason})),
    )
    .await?;
    // Same transaction: the registrar's row and the job that takes it to the CA go together.
    crate::revocation::queue_revocation(tx, &cert, actor, reason).await?;
    get_certificate(tx, serial_hex)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("certificate with serial {serial_hex}")))
}

/// Unrevoked certificates still valid at `valid_at` (Unix micros), by serial, for the CRL
/// poller.
pub(crate) async fn unrevoked_certificates<C: Conn>(
    tx: &mut Tx<C>,
    valid_at: i64,
    limit: u32,
    after: Option<&str>,
) -> Result<Page<CertificateRecord>> {
    let limit = clamp_limit(limit);
    let rows =
        tx.c.query(
            &format!(
                "SELECT {CERT_COLUMNS} WHERE revoked = 0 AND not_after >= $1 AND serial_hex > $2 \
                 ORDER BY serial_hex LIMIT $3"
            ),
            &[
                valid_at.into(),
                after.unwrap_or("").into(),
                (limit + 1).into(),
            ],
        )
        .await?;
    let mut items = Vec::new();
    let mut next = None;
    for (i, row) in rows.iter().enumerate() {
        if i as i64 == limit {
            next = items
                .last()
                .map(|c: &CertificateRecord| c.serial_hex.clone());
            break;
        }
        items.push(certificate_from_row(row)?);
    }
    Ok(Page { items, next })
}

/// Marks a certificate revoked because its CA's CRL lists it. Idempotent: an unknown or already
/// revoked serial changes nothing and returns `None`.
pub(crate) async fn revoke_certificate_from_crl<C: Conn>(
    tx: &mut Tx<C>,
    serial_hex: &str,
    actor: &str,
    reason: &str,
) -> Result<Option<CertificateRecord>> {
    let Some(cert) = get_certificate(tx, serial_hex).await? else {
        return Ok(None);
    };
    if cert.revoked {
        return Ok(None);
    }
    let now = tx.now;
    tx.c.exec(
        "UPDATE certificates SET revoked = 1, revoked_at = $1, revocation_reason = $2 WHERE serial_hex = $3",
        &[now.into(), reason.into(), (&cert.serial_hex).into()],
    )
    .await?;
    tx.audit(
        AuditDraft::new(actor, "certificate.revoked")
            .device(cert.device.key())
            .enrollment(&cert.enrollment_id)
            .details(json!({"serial": cert.serial_hex, "reason": reason, "source": "crl"})),
    )
    .await?;
    get_certificate(tx, serial_hex).await
}

// ---------------------------------------------------------------------------------------------
// Audit

pub(crate) async fn append_audit<C: Conn>(tx: &mut Tx<C>, draft: AuditDraft) -> Result<AuditEvent> {
    tx.audit(draft).await
}

const AUDIT_COLUMNS: &str = "seq, time, actor, action, device, label, enrollment, details, prev_hash, hash FROM audit_events";

fn audit_from_row(row: &Row) -> Result<AuditEvent> {
    let hash = |i: usize| -> Result<[u8; 32]> {
        let text = row.text(i)?;
        // A hash edited into something that is not 64 hex digits is still a readable row:
        // verification reports it instead of the store refusing to read it.
        Ok(parse_hash_hex(&text).unwrap_or([0xff; 32]))
    };
    Ok(AuditEvent {
        seq: row.int(0)?,
        time_unix_micros: row.int(1)?,
        actor: row.text(2)?,
        action: row.text(3)?,
        device: row.text(4)?,
        label: row.text(5)?,
        enrollment: row.text(6)?,
        details: row.text(7)?,
        prev_hash: hash(8)?,
        hash: hash(9)?,
    })
}

pub(crate) async fn query_audit<C: Conn>(
    tx: &mut Tx<C>,
    filter: &AuditFilter,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<AuditEvent>> {
    let mut sql = format!("SELECT {AUDIT_COLUMNS} WHERE seq > $1");
    let mut params: Vec<Val> = vec![after_seq.into()];
    for (column, value) in [
        ("device", &filter.device),
        ("label", &filter.label),
        ("action", &filter.action),
        ("actor", &filter.actor),
    ] {
        if let Some(v) = value {
            params.push(v.into());
            sql.push_str(&format!(" AND {column} = ${}", params.len()));
        }
    }
    if let Some(since) = filter.since {
        params.push(since.into());
        sql.push_str(&format!(" AND time >= ${}", params.len()));
    }
    if let Some(until) = filter.until {
        params.push(until.into());
        sql.push_str(&format!(" AND time < ${}", params.len()));
    }
    params.push(clamp_limit(limit).into());
    sql.push_str(&format!(" ORDER BY seq LIMIT ${}", params.len()));
    let rows = tx.c.query(&sql, &params).await?;
    rows.iter().map(audit_from_row).collect()
}

pub(crate) async fn verify_audit<C: Conn>(tx: &mut Tx<C>) -> Result<VerifyReport> {
    let (head_seq, head_hash) =
        read_head(&mut tx.c, "SELECT seq, hash FROM audit_head WHERE id = 1").await?;
    let mut verifier = ChainVerifier::from_genesis();
    let mut after = i64::MIN;
    loop {
        let rows =
            tx.c.query(
                &format!("SELECT {AUDIT_COLUMNS} WHERE seq > $1 ORDER BY seq LIMIT 2000"),
                &[after.into()],
            )
            .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let ev = audit_from_row(row)?;
            after = ev.seq;
            verifier.push(&ev);
        }
        if verifier.result().is_err() {
            break;
        }
    }
    verifier.check_head(head_seq, head_hash);
    Ok(VerifyReport {
        checked: verifier.checked(),
        head_seq,
        head_hash,
        broken: verifier.result().err(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn chain_encoding_round_trips_and_refuses_truncation() {
        let chain = vec![vec![1, 2, 3], vec![], vec![9; 300]];
        let joined = join_chain(&chain);
        assert_eq!(split_chain(&joined).unwrap(), chain);
        assert!(split_chain(&joined[..joined.len() - 1]).is_err());
        assert!(split_chain(&[0, 0]).is_err());
    }
}
