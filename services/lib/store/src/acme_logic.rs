//! The ACME CA's store operations, written once over [`Conn`] and run inside one transaction
//! each (see `acme.rs` for the trait they implement).

use std::collections::HashSet;

use ragw_domain::AuditDraft;
use rand::Rng;
use serde_json::{Value, json};

use crate::acme::{
    AccountStatus, AcmeAccount, AcmeAuthz, AcmeCertificate, AcmeChallenge, AcmeCounts,
    AcmeIdentifier, AcmeOrder, AuthzStatus, ChallengeStatus, NewAcmeAccount, NewAcmeCertificate,
    NewAcmeOrder, NewAuthzSpec, OrderIdentifier, OrderStatus, RevokedEntry, ValidationOutcome,
    account_actor,
};
use crate::logic::{Tx, join_chain, split_chain};
use crate::sql::{Conn, Dialect, Row, Val};
use crate::{Page, Result, StoreError};

/// Identifiers in URLs: 96 random bits, hex.
fn new_id() -> String {
    hex::encode(rand::rng().random::<[u8; 12]>())
}

/// Challenge tokens: 128 random bits (RFC 8555 §8.3 asks for at least that), hex, which is
/// within the base64url alphabet the RFC requires.
fn new_token() -> String {
    hex::encode(rand::rng().random::<[u8; 16]>())
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn clamp_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, 1000))
}

// ---------------------------------------------------------------------------------------------
// Nonces and secrets

pub(crate) async fn use_nonce<C: Conn>(tx: &mut Tx<C>, nonce: &str, expires: i64) -> Result<bool> {
    let now = tx.now;
    // Pruning in passing keeps the table at about (request rate × nonce lifetime) rows without
    // a background job; one request in 64 pays for it.
    if rand::rng().random_range(0..64u32) == 0 {
        tx.c.exec("DELETE FROM acme_nonces WHERE expires < $1", &[now.into()])
            .await?;
    }
    let n =
        tx.c.exec(
            "INSERT INTO acme_nonces (nonce, expires) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[nonce.into(), expires.into()],
        )
        .await?;
    Ok(n == 1)
}

pub(crate) async fn begin_request<C: Conn>(
    tx: &mut Tx<C>,
    nonce: &str,
    expires: i64,
    account_id: Option<&str>,
) -> Result<(bool, Option<AcmeAccount>)> {
    let fresh = use_nonce(tx, nonce, expires).await?;
    let account = match account_id {
        Some(id) => get_account(tx, id).await?,
        None => None,
    };
    Ok((fresh, account))
}

pub(crate) async fn secret<C: Conn>(tx: &mut Tx<C>, name: &str, candidate: &str) -> Result<String> {
    tx.c.exec(
        "INSERT INTO acme_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[name.into(), candidate.into()],
    )
    .await?;
    let rows =
        tx.c.query(
            "SELECT value FROM acme_secrets WHERE name = $1",
            &[name.into()],
        )
        .await?;
    rows.first()
        .ok_or_else(|| StoreError::Corrupt(format!("secret {name} vanished")))?
        .text(0)
}

// ---------------------------------------------------------------------------------------------
// Accounts

const ACCOUNT_COLUMNS: &str =
    "id, jwk, thumbprint, status, contacts, eab_kid, created FROM acme_accounts";

fn account_from_row(row: &Row) -> Result<AcmeAccount> {
    let status = row.text(3)?;
    Ok(AcmeAccount {
        id: row.text(0)?,
        jwk: row.text(1)?,
        thumbprint: row.text(2)?,
        status: AccountStatus::parse(&status).ok_or_else(|| corrupt("account status", &status))?,
        contacts: serde_json::from_str(&row.text(4)?).map_err(|e| corrupt("contacts", e))?,
        eab_kid: row.opt_text(5)?,
        created: row.int(6)?,
    })
}

pub(crate) async fn get_account<C: Conn>(tx: &mut Tx<C>, id: &str) -> Result<Option<AcmeAccount>> {
    let rows =
        tx.c.query(
            &format!("SELECT {ACCOUNT_COLUMNS} WHERE id = $1"),
            &[id.into()],
        )
        .await?;
    rows.first().map(account_from_row).transpose()
}

async fn must_get_account<C: Conn>(tx: &mut Tx<C>, id: &str) -> Result<AcmeAccount> {
    get_account(tx, id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("ACME account {id}")))
}

pub(crate) async fn find_account<C: Conn>(
    tx: &mut Tx<C>,
    thumbprint: &str,
) -> Result<Option<AcmeAccount>> {
    let rows =
        tx.c.query(
            &format!("SELECT {ACCOUNT_COLUMNS} WHERE thumbprint = $1"),
            &[thumbprint.into()],
        )
        .await?;
    rows.first().map(account_from_row).transpose()
}

pub(crate) async fn create_account<C: Conn>(
    tx: &mut Tx<C>,
    new: &NewAcmeAccount,
) -> Result<(AcmeAccount, bool)> {
    if let Some(existing) = find_account(tx, &new.thumbprint).await? {
        return Ok((existing, false));
    }
    let id = new_id();
    let contacts = serde_json::to_string(&new.contacts).map_err(|e| corrupt("contacts", e))?;
    let now = tx.now;
    // Two newAccount requests with one key can race; the loser gets the winner's account.
    let inserted = tx.c.exec(
        "INSERT INTO acme_accounts (id, thumbprint, jwk, status, contacts, eab_kid, created, updated) \
         VALUES ($1, $2, $3, 'valid', $4, $5, $6, $6) ON CONFLICT (thumbprint) DO NOTHING",
        &[
            (&id).into(),
            (&new.thumbprint).into(),
            (&new.jwk).into(),
            contacts.into(),
            new.eab_kid.clone().into(),
            now.into(),
        ],
    )
    .await?;
    if inserted == 0 {
        let existing = find_account(tx, &new.thumbprint)
            .await?
            .ok_or_else(|| StoreError::Retry("account insert raced with a deletion".into()))?;
        return Ok((existing, false));
    }
    tx.audit(
        AuditDraft::new(account_actor(&id), "acme.account.created").details(json!({
            "account": id,
            "thumbprint": new.thumbprint,
            "contacts": new.contacts,
            "eab_kid": new.eab_kid,
            "details": new.details,
        })),
    )
    .await?;
    Ok((must_get_account(tx, &id).await?, true))
}

pub(crate) async fn update_contacts<C: Conn>(
    tx: &mut Tx<C>,
    id: &str,
    contacts: &[String],
) -> Result<AcmeAccount> {
    let before = must_get_account(tx, id).await?;
    if before.contacts == contacts {
        return Ok(before);
    }
    let text = serde_json::to_string(contacts).map_err(|e| corrupt("contacts", e))?;
    let now = tx.now;
    tx.c.exec(
        "UPDATE acme_accounts SET contacts = $1, updated = $2 WHERE id = $3",
        &[text.into(), now.into(), id.into()],
    )
    .await?;
    tx.audit(
        AuditDraft::new(account_actor(id), "acme.account.updated")
            .details(json!({"account": id, "contacts": contacts, "previous": before.contacts})),
    )
    .await?;
    must_get_account(tx, id).await
}

pub(crate) async fn deactivate_account<C: Conn>(tx: &mut Tx<C>, id: &str) -> Result<AcmeAccount> {
    let before = must_get_account(tx, id).await?;
    if before.status != AccountStatus::Valid {
        return Err(StoreError::Conflict(format!(
            "ACME account {id} is {}",
            before.status
        )));
    }
    let now = tx.now;
    if tx
        .c
        .exec(
            "UPDATE acme_accounts SET status = 'deactivated', updated = $1 WHERE id = $2 AND status = 'valid'",
            &[now.into(), id.into()],
        )
        .await?
        == 0
    {
        return Err(StoreError::Conflict(format!("ACME account {id} is no longer valid")));
    }
    // RFC 8555 §7.3.6: the server should also deactivate the account's pending
    // authorizations; valid ones are left to expire, they can no longer be used.
    tx.c.exec(
        "UPDATE acme_authzs SET status = 'deactivated', updated = $1 WHERE account_id = $2 AND status = 'pending'",
        &[now.into(), id.into()],
    )
    .await?;
    tx.audit(
        AuditDraft::new(account_actor(id), "acme.account.deactivated")
            .details(json!({"account": id})),
    )
    .await?;
    must_get_account(tx, id).await
}

pub(crate) async fn change_key<C: Conn>(
    tx: &mut Tx<C>,
    id: &str,
    old_thumbprint: &str,
    new_jwk: &str,
    new_thumbprint: &str,
) -> Result<AcmeAccount> {
    let acct = must_get_account(tx, id).await?;
    if acct.thumbprint != old_thumbprint {
        return Err(StoreError::Conflict(format!(
            "the key of ACME account {id} changed meanwhile"
        )));
    }
    if let Some(other) = find_account(tx, new_thumbprint).await? {
        return Err(StoreError::Conflict(format!(
            "the new key already belongs to ACME account {}",
            other.id
        )));
    }
    let now = tx.now;
    if tx
        .c
        .exec(
            "UPDATE acme_accounts SET jwk = $1, thumbprint = $2, updated = $3 WHERE id = $4 AND thumbprint = $5",
            &[
                new_jwk.into(),
                new_thumbprint.into(),
                now.into(),
                id.into(),
                old_thumbprint.into(),
            ],
        )
        .await?
        == 0
    {
        return Err(StoreError::Conflict(format!(
            "the key of ACME account {id} changed meanwhile"
        )));
    }
    tx.audit(
        AuditDraft::new(account_actor(id), "acme.account.key_changed").details(json!({
            "account": id,
            "old_thumbprint": old_thumbprint,
            "new_thumbprint": new_thumbprint,
        })),
    )
    .await?;
    must_get_account(tx, id).await
}

// ---------------------------------------------------------------------------------------------
// Authorizations and challenges

const AUTHZ_COLUMNS: &str = "id, account_id, ident_type, ident_value, status, expires, subdomain_auth, wildcard, created FROM acme_authzs";
const CHALLENGE_COLUMNS: &str =
    "id, authz_id, type, token, status, validated, error FROM acme_challenges";

pub(crate) fn effective_authz_status(stored: AuthzStatus, expires: i64, now: i64) -> AuthzStatus {
    match stored {
        AuthzStatus::Pending | AuthzStatus::Valid if expires <= now => AuthzStatus::Expired,
        s => s,
    }
}

fn challenge_from_row(row: &Row) -> Result<AcmeChallenge> {
    let status = row.text(4)?;
    Ok(AcmeChallenge {
        id: row.text(0)?,
        authz_id: row.text(1)?,
        kind: row.text(2)?,
        token: row.text(3)?,
        status: ChallengeStatus::parse(&status)
            .ok_or_else(|| corrupt("challenge status", &status))?,
        validated: row.opt_int(5)?,
        error: row.opt_text(6)?,
    })
}

fn authz_from_row(row: &Row, now: i64) -> Result<AcmeAuthz> {
    let status = row.text(4)?;
    let stored = AuthzStatus::parse(&status).ok_or_else(|| corrupt("authz status", &status))?;
    let expires = row.int(5)?;
    Ok(AcmeAuthz {
        id: row.text(0)?,
        account_id: row.text(1)?,
        identifier: AcmeIdentifier {
            kind: row.text(2)?,
            value: row.text(3)?,
        },
        status: effective_authz_status(stored, expires, now),
        expires,
        subdomain_auth: row.int(6)? != 0,
        wildcard: row.int(7)? != 0,
        created: row.int(8)?,
        challenges: Vec::new(),
    })
}

pub(crate) async fn get_authz<C: Conn>(tx: &mut Tx<C>, id: &str) -> Result<Option<AcmeAuthz>> {
    let rows =
        tx.c.query(
            &format!("SELECT {AUTHZ_COLUMNS} WHERE id = $1"),
            &[id.into()],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let mut authz = authz_from_row(row, tx.now)?;
    let rows =
        tx.c.query(
            &format!("SELECT {CHALLENGE_COLUMNS} WHERE authz_id = $1 ORDER BY position"),
            &[id.into()],
        )
        .await?;
    authz.challenges = rows.iter().map(challenge_from_row).collect::<Result<_>>()?;
    Ok(Some(authz))
}

async fn must_get_authz<C: Conn>(tx: &mut Tx<C>, id: &str) -> Result<AcmeAuthz> {
    get_authz(tx, id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("authorization {id}")))
}

async fn insert_authz<C: Conn>(
    tx: &mut Tx<C>,
    account_id: &str,
    spec: &NewAuthzSpec,
) -> Result<String> {
    let id = new_id();
    let now = tx.now;
    tx.c.exec(
        "INSERT INTO acme_authzs (id, account_id, ident_type, ident_value, status, expires, subdomain_auth, wildcard, created, updated) \
         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $8)",
        &[
            (&id).into(),
            account_id.into(),
            (&spec.identifier.kind).into(),
            (&spec.identifier.value).into(),
            spec.expires.into(),
            spec.subdomain_auth.into(),
            spec.wildcard.into(),
            now.into(),
        ],
    )
    .await?;
    for (position, kind) in spec.challenge_types.iter().enumerate() {
        tx.c.exec(
            "INSERT INTO acme_challenges (id, authz_id, position, type, token, status) VALUES ($1, $2, $3, $4, $5, 'pending')",
            &[
                new_id().into(),
                (&id).into(),
                (position as i64).into(),
                kind.into(),
                new_token().into(),
            ],
        )
        .await?;
    }
    Ok(id)
}

pub(crate) async fn create_authz_standalone<C: Conn>(
    tx: &mut Tx<C>,
    account_id: &str,
    spec: &NewAuthzSpec,
) -> Result<AcmeAuthz> {
    active_account(tx, account_id).await?;
    let id = insert_authz(tx, account_id, spec).await?;
    tx.audit(
        AuditDraft::new(account_actor(account_id), "acme.authz.created").details(json!({
            "authz": id,
            "identifier": identifier_json(&spec.identifier),
            "subdomain_auth": spec.subdomain_auth,
            "expires": spec.expires,
            "pre_authorization": true,
        })),
    )
    .await?;
    must_get_authz(tx, &id).await
}

async fn active_account<C: Conn>(tx: &mut Tx<C>, account_id: &str) -> Result<AcmeAccount> {
    let acct = must_get_account(tx, account_id).await?;
    if acct.status != AccountStatus::Valid {
        return Err(StoreError::Conflict(format!(
            "ACME account {account_id} is {}",
            acct.status
        )));
    }
    Ok(acct)
}

pub(crate) async fn deactivate_authz<C: Conn>(
    tx: &mut Tx<C>,
    id: &str,
    account_id: &str,
) -> Result<AcmeAuthz> {
    let authz = must_get_authz(tx, id).await?;
    if authz.account_id != account_id {
        return Err(StoreError::NotFound(format!("authorization {id}")));
    }
    if !matches!(authz.status, AuthzStatus::Pending | AuthzStatus::Valid) {
        return Err(StoreError::Conflict(format!(
            "authorization {id} is {}, only pending or valid ones can be deactivated",
            authz.status
        )));
    }
    let now = tx.now;
    if tx
        .c
        .exec(
            "UPDATE acme_authzs SET status = 'deactivated', updated = $1 WHERE id = $2 AND status IN ('pending', 'valid')",
            &[now.into(), id.into()],
        )
        .await?
        == 0
    {
        return Err(StoreError::Conflict(format!(
            "authorization {id} changed meanwhile"
        )));
    }
    tx.audit(
        AuditDraft::new(account_actor(account_id), "acme.authz.deactivated").details(json!({
            "authz": id,
            "identifier": identifier_json(&authz.identifier),
            "was": authz.status.as_str(),
        })),
    )
    .await?;
    must_get_authz(tx, id).await
}

pub(crate) async fn get_challenge<C: Conn>(
    tx: &mut Tx<C>,
    id: &str,
) -> Result<Option<(AcmeChallenge, AcmeAuthz)>> {
    let rows =
        tx.c.query(
            &format!("SELECT {CHALLENGE_COLUMNS} WHERE id = $1"),
            &[id.into()],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let challenge = challenge_from_row(row)?;
    let authz = must_get_authz(tx, &challenge.authz_id).await?;
    Ok(Some((challenge, authz)))
}

pub(crate) async fn record_validation<C: Conn>(
    tx: &mut Tx<C>,
    challenge_id: &str,
    account_id: &str,
    outcome: &ValidationOutcome,
) -> Result<(AcmeChallenge, AcmeAuthz)> {
    let (challenge, authz) = get_challenge(tx, challenge_id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("challenge {challenge_id}")))?;
    if authz.account_id != account_id {
        return Err(StoreError::NotFound(format!("challenge {challenge_id}")));
    }
    if authz.status != AuthzStatus::Pending
        || !matches!(
            challenge.status,
            ChallengeStatus::Pending | ChallengeStatus::Processing
        )
    {
        return Err(StoreError::Conflict(format!(
            "authorization {} is {} and challenge {challenge_id} is {}",
            authz.id, authz.status, challenge.status
        )));
    }
    active_account(tx, account_id).await?;
    let now = tx.now;
    // The authorization's pending -> decided step is the compare-and-set that lets exactly
    // one of several racing validations decide.
    let (new_status, new_expires) = match outcome {
        ValidationOutcome::Valid { authz_expires } => ("valid", *authz_expires),
        ValidationOutcome::Invalid { .. } => ("invalid", authz.expires),
    };
    if tx
        .c
        .exec(
            "UPDATE acme_authzs SET status = $1, expires = $2, updated = $3 WHERE id = $4 AND status = 'pending'",
            &[
                new_status.into(),
                new_expires.into(),
                now.into(),
                (&authz.id).into(),
            ],
        )
        .await?
        == 0
    {
        return Err(StoreError::Conflict(format!(
            "authorization {} was decided meanwhile",
            authz.id
        )));
    }
    let (action, details) = match outcome {
        ValidationOutcome::Valid { authz_expires } => {
            tx.c.exec(
                "UPDATE acme_challenges SET status = 'valid', validated = $1 WHERE id = $2",
                &[now.into(), challenge_id.into()],
            )
            .await?;

            (
                "acme.authz.valid",
                json!({
                    "authz": authz.id,
                    "identifier": identifier_json(&authz.identifier),
                    "challenge": challenge.kind,
                    "subdomain_auth": authz.subdomain_auth,
                    "expires": authz_expires,
                }),
            )
        }
        ValidationOutcome::Invalid { error } => {
            tx.c.exec(
                "UPDATE acme_challenges SET status = 'invalid', validated = $1, error = $2 WHERE id = $3",
                &[now.into(), error.into(), challenge_id.into()],
            )
            .await?;

            let problem: Value =
                serde_json::from_str(error).unwrap_or(Value::String(error.clone()));
            (
                "acme.authz.invalid",
                json!({
                    "authz": authz.id,
                    "identifier": identifier_json(&authz.identifier),
                    "challenge": challenge.kind,
                    "error": problem,
                }),
            )
        }
    };
    tx.audit(AuditDraft::new(account_actor(account_id), action).details(details))
        .await?;
    get_challenge(tx, challenge_id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("challenge {challenge_id}")))
}

fn identifier_json(id: &AcmeIdentifier) -> Value {
    json!({"type": id.kind, "value": id.value})
}

/// Label-wise proper ancestors of a DNS name: `a.b.c` → `b.c`, `c`.
fn proper_ancestors(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = name;
    while let Some((_, parent)) = rest.split_once('.') {
        out.push(parent.to_string());
        rest = parent;
    }
    out
}

enum Coverage {
    Exact(String),
    Ancestor(String, String),
}

/// A valid, unexpired authorization of the account that covers `ident`: its own, or an
/// ancestor's with subdomain authorization (RFC 9444).
pub(crate) async fn account_authorized_for<C: Conn>(
    tx: &mut Tx<C>,
    account_id: &str,
    identifiers: &[AcmeIdentifier],
) -> Result<bool> {
    if identifiers.is_empty() {
        return Ok(false);
    }
    for ident in identifiers {
        let (base, wildcard) = match ident.value.strip_prefix("*.") {
            Some(rest) if ident.kind == "dns" => (rest, true),
            _ => (ident.value.as_str(), false),
        };
        let base = AcmeIdentifier {
            kind: ident.kind.clone(),
            value: base.to_string(),
        };
        if covering_authz(tx, account_id, &base, wildcard)
            .await?
            .is_none()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn covering_authz<C: Conn>(
    tx: &mut Tx<C>,
    account_id: &str,
    ident: &AcmeIdentifier,
    wildcard: bool,
) -> Result<Option<Coverage>> {
    let now = tx.now;
    let rows =
        tx.c.query(
            "SELECT id FROM acme_authzs WHERE account_id = $1 AND ident_type = $2 AND ident_value = $3 \
             AND wildcard = $4 AND status = 'valid' AND expires > $5 ORDER BY expires DESC LIMIT 1",
            &[
                account_id.into(),
                (&ident.kind).into(),
                (&ident.value).into(),
                wildcard.into(),
                now.into(),
            ],
        )
        .await?;
    if let Some(row) = rows.first() {
        return Ok(Some(Coverage::Exact(row.text(0)?)));
    }
    if ident.kind != "dns" {
        return Ok(None);
    }
    let ancestors = proper_ancestors(&ident.value);
    if ancestors.is_empty() {
        return Ok(None);
    }
    let mut params: Vec<Val> = vec![account_id.into(), now.into()];
    let mut placeholders = Vec::with_capacity(ancestors.len());
    for a in &ancestors {
        params.push(a.into());
        placeholders.push(format!("${}", params.len()));
    }
    let rows = tx
        .c
        .query(
            &format!(
                "SELECT id, ident_value FROM acme_authzs WHERE account_id = $1 AND ident_type = 'dns' \
                 AND subdomain_auth = 1 AND wildcard = 0 AND status = 'valid' AND expires > $2 \
                 AND ident_value IN ({}) ORDER BY expires DESC LIMIT 1",
                placeholders.join(", ")
            ),
            &params,
        )
        .await?;
    match rows.first() {
        Some(row) => Ok(Some(Coverage::Ancestor(row.text(0)?, row.text(1)?))),
        None => Ok(None),
    }
}

/// A pending, unexpired authorization of the account made from the same spec, so that
/// retried or parallel orders for one name (or one ancestor) share one challenge.
async fn reusable_pending<C: Conn>(
    tx: &mut Tx<C>,
    account_id: &str,
    spec: &NewAuthzSpec,
) -> Result<Option<String>> {
    let now = tx.now;
    let rows =
        tx.c.query(
            "SELECT id FROM acme_authzs WHERE account_id = $1 AND ident_type = $2 AND ident_value = $3 \
             AND wildcard = $4 AND subdomain_auth = $5 AND status = 'pending' AND expires > $6 \
             ORDER BY expires DESC LIMIT 1",
            &[
                account_id.into(),
                (&spec.identifier.kind).into(),
                (&spec.identifier.value).into(),
                spec.wildcard.into(),
                spec.subdomain_auth.into(),
                now.into(),
            ],
        )
        .await?;
    rows.first().map(|r| r.text(0)).transpose()
}

// ---------------------------------------------------------------------------------------------
// Orders

const ORDER_COLUMNS: &str = "id, account_id, status, identifiers, profile, not_before, not_after, expires, created, error, cert_serial, updated FROM acme_orders";

/// An order left `processing` this long was abandoned (the CA stopped between claiming it and
/// storing its certificate): it may be finalized again. Issuance itself takes milliseconds.
const STALE_PROCESSING_MICROS: i64 = 120_000_000;

/// Hash of what makes two newOrder requests the same order (RFC 8555 leaves reuse to the CA;
/// Boulder hands back the pending order of the same account for the same names).
fn order_key(new: &NewAcmeOrder) -> String {
    use sha2::{Digest, Sha256};
    let mut lines: Vec<String> = new
        .identifiers
        .iter()
        .map(|i| {
            format!(
                "{}:{}:{}",
                i.order.identifier.kind,
                i.order.identifier.value,
                i.order.ancestor_domain.as_deref().unwrap_or("")
            )
        })
        .collect();
    lines.sort();
    lines.dedup();
    let text = format!(
        "{}\n{:?}\n{:?}\n{}",
        new.profile,
        new.not_before,
        new.not_after,
        lines.join("\n")
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn identifiers_to_json(ids: &[OrderIdentifier]) -> Value {
    Value::Array(
        ids.iter()
            .map(|i| {
                let mut v = json!({"type": i.identifier.kind, "value": i.identifier.value});
                if let (Some(a), Some(obj)) = (&i.ancestor_domain, v.as_object_mut()) {
                    obj.insert("ancestorDomain".into(), Value::String(a.clone()));
                }
                v
            })
            .collect(),
    )
}

fn identifiers_from_json(text: &str) -> Result<Vec<OrderIdentifier>> {
    let v: Value = serde_json::from_str(text).map_err(|e| corrupt("order identifiers", e))?;
    let arr = v
        .as_array()
        .ok_or_else(|| corrupt("order identifiers", "not an array"))?;
    arr.iter()
        .map(|i| {
            let field = |k: &str| {
                i.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| corrupt("order identifier", format!("no {k}")))
            };
            Ok(OrderIdentifier {
                identifier: AcmeIdentifier {
                    kind: field("type")?,
                    value: field("value")?,
                },
                ancestor_domain: i
                    .get("ancestorDomain")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
        })
        .collect()
}

fn effective_order_status(
    stored: OrderStatus,
    expires: i64,
    now: i64,
    authzs: &[AuthzStatus],
    updated: i64,
) -> OrderStatus {
    let abandoned =
        stored == OrderStatus::Processing && updated < now.saturating_sub(STALE_PROCESSING_MICROS);
    match stored {
        OrderStatus::Processing if !abandoned => OrderStatus::Processing,
        OrderStatus::Pending | OrderStatus::Ready | OrderStatus::Processing => {
            if expires <= now
                || authzs
                    .iter()
                    .any(|s| !matches!(s, AuthzStatus::Pending | AuthzStatus::Valid))
            {
                OrderStatus::Invalid
            } else if !authzs.is_empty() && authzs.iter().all(|s| *s == AuthzStatus::Valid) {
                OrderStatus::Ready
            } else {
                OrderStatus::Pending
            }
        }
        s => s,
    }
}

pub(crate) async fn get_order<C: Conn>(tx: &mut Tx<C>, id: &str) -> Result<Option<AcmeOrder>> {
    let rows =
        tx.c.query(
            &format!("SELECT {ORDER_COLUMNS} WHERE id = $1"),
            &[id.into()],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let status_text = row.text(2)?;
    let stored =
        OrderStatus::parse(&status_text).ok_or_else(|| corrupt("order status", &status_text))?;
    let expires = row.int(7)?;
    let authz_rows = tx
        .c
        .query(
            "SELECT a.id, a.status, a.expires FROM acme_order_authzs oa JOIN acme_authzs a ON a.id = oa.authz_id \
             WHERE oa.order_id = $1 ORDER BY oa.position",
            &[id.into()],
        )
        .await?;
    let now = tx.now;
    let mut authz_ids = Vec::with_capacity(authz_rows.len());
    let mut statuses = Vec::with_capacity(authz_rows.len());
    for r in &authz_rows {
        authz_ids.push(r.text(0)?);
        let s = r.text(1)?;
        let s = AuthzStatus::parse(&s).ok_or_else(|| corrupt("authz status", &s))?;
        statuses.push(effective_authz_status(s, r.int(2)?, now));
    }
    Ok(Some(AcmeOrder {
        id: row.text(0)?,
        account_id: row.text(1)?,
        status: effective_order_status(stored, expires, now, &statuses, row.int(11)?),
        identifiers: identifiers_from_json(&row.text(3)?)?,
        profile: row.text(4)?,
        not_before: row.opt_int(5)?,
        not_after: row.opt_int(6)?,
        expires,
        created: row.int(8)?,
        error: row.opt_text(9)?,
        authz_ids,
        cert_serial: row.opt_text(10)?,
    }))
}

async fn must_get_order<C: Conn>(tx: &mut Tx<C>, id: &str) -> Result<AcmeOrder> {
    get_order(tx, id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("order {id}")))
}

/// How one identifier of a new order is linked to an authorization.
struct Link {
    authz: String,
    how: &'static str,
    ancestor: Option<String>,
}

/// Per identifier of `new`, the valid authorization that covers it now (its own or an
/// ancestor's), `None` where there is none.
async fn coverage<C: Conn>(tx: &mut Tx<C>, new: &NewAcmeOrder) -> Result<Vec<Option<Link>>> {
    let mut out = Vec::with_capacity(new.identifiers.len());
    for item in &new.identifiers {
        let ident = &item.order.identifier;
        out.push(
            match covering_authz(tx, &new.account_id, ident, item.new_authz.wildcard).await? {
                Some(Coverage::Exact(a)) => Some(Link {
                    authz: a,
                    how: "reused",
                    ancestor: None,
                }),
                Some(Coverage::Ancestor(a, name)) => Some(Link {
                    authz: a,
                    how: "ancestor",
                    ancestor: Some(name),
                }),
                None => None,
            },
        );
    }
    Ok(out)
}

fn link_decision(ident: &AcmeIdentifier, link: &Link, spec: &NewAuthzSpec) -> Value {
    let created = link.how == "new" || link.how == "pending-reused";
    json!({
        "identifier": identifier_json(ident),
        "authz": link.authz,
        "how": link.how,
        "ancestor": link.ancestor,
        "authz_identifier": if created { Some(identifier_json(&spec.identifier)) } else { None },
    })
}

/// Links `order_id` to the authorizations of `links`, each once (one ancestor authorization
/// may cover several names of the order), in identifier order.
async fn insert_links<C: Conn>(tx: &mut Tx<C>, order_id: &str, links: &[Link]) -> Result<()> {
    let mut linked: HashSet<&str> = HashSet::new();
    let mut position = 0i64;
    for link in links {
        if linked.insert(&link.authz) {
            tx.c.exec(
                "INSERT INTO acme_order_authzs (order_id, authz_id, position) VALUES ($1, $2, $3)",
                &[order_id.into(), (&link.authz).into(), position.into()],
            )
            .await?;
            position += 1;
        }
    }
    Ok(())
}

/// Points a pending order whose identifiers are all covered by valid authorizations now (a
/// parent was pre-authorized after the order was made) at those authorizations, so that it
/// becomes `ready` instead of waiting for challenges that no longer matter. The pending
/// authorizations it leaves stay as they are: other orders may share them.
async fn relink_covered<C: Conn>(
    tx: &mut Tx<C>,
    existing: &AcmeOrder,
    new: &NewAcmeOrder,
    links: &[Link],
) -> Result<AcmeOrder> {
    // The row lock orders concurrent relinks of one order on PostgreSQL (SQLite writers are
    // serialized already); `existing` may predate another newOrder's relink, so it is read
    // again under the lock.
    let lock = match tx.c.dialect() {
        Dialect::Postgres => "SELECT updated FROM acme_orders WHERE id = $1 FOR UPDATE",
        Dialect::Sqlite => "SELECT updated FROM acme_orders WHERE id = $1",
    };
    let rows = tx.c.query(lock, &[(&existing.id).into()]).await?;
    let seen = rows
        .first()
        .ok_or_else(|| StoreError::NotFound(format!("order {}", existing.id)))?
        .int(0)?;
    let current = must_get_order(tx, &existing.id).await?;
    if current.status != OrderStatus::Pending || current.authz_ids != existing.authz_ids {
        return Ok(current);
    }
    // Compare-and-set on `updated` as well: of two newOrders relinking the same order at once,
    // the second finds it changed and hands back what the first made of it.
    let stamp = tx.now.max(seen.saturating_add(1));
    if tx
        .c
        .exec(
            "UPDATE acme_orders SET updated = $1 WHERE id = $2 AND status = 'pending' AND updated = $3",
            &[stamp.into(), (&existing.id).into(), seen.into()],
        )
        .await?
        == 0
    {
        return must_get_order(tx, &existing.id).await;
    }
    tx.c.exec(
        "DELETE FROM acme_order_authzs WHERE order_id = $1",
        &[(&existing.id).into()],
    )
    .await?;
    insert_links(tx, &existing.id, links).await?;
    let order = must_get_order(tx, &existing.id).await?;
    let decisions: Vec<Value> = new
        .identifiers
        .iter()
        .zip(links)
        .map(|(item, link)| link_decision(&item.order.identifier, link, &item.new_authz))
        .collect();
    tx.audit(
        AuditDraft::new(account_actor(&new.account_id), "acme.order.relinked").details(json!({
            "order": existing.id,
            "identifiers": identifiers_to_json(&existing.identifiers),
            "authorizations": decisions,
            "replaced": existing.authz_ids,
            "status": order.status.as_str(),
        })),
    )
    .await?;
    Ok(order)
}

pub(crate) async fn create_order<C: Conn>(tx: &mut Tx<C>, new: &NewAcmeOrder) -> Result<AcmeOrder> {
    active_account(tx, &new.account_id).await?;
    let key = order_key(new);
    let now = tx.now;
    let covered = coverage(tx, new).await?;
    let candidates =
        tx.c.query(
            "SELECT id FROM acme_orders WHERE account_id = $1 AND ident_hash = $2 AND status = 'pending' \
             AND expires > $3 ORDER BY created DESC LIMIT 3",
            &[(&new.account_id).into(), (&key).into(), now.into()],
        )
        .await?;
    for c in &candidates {
        let existing = must_get_order(tx, &c.text(0)?).await?;
        match existing.status {
            OrderStatus::Ready => return Ok(existing),
            // Handing back a pending order would hide coverage that exists now (RFC 9444): the
            // client would solve challenges the server no longer needs.
            OrderStatus::Pending => {
                return match covered.into_iter().collect::<Option<Vec<Link>>>() {
                    Some(links) => relink_covered(tx, &existing, new, &links).await,
                    None => Ok(existing),
                };
            }
            _ => {}
        }
    }
    let id = new_id();
    let order_ids: Vec<OrderIdentifier> = new.identifiers.iter().map(|i| i.order.clone()).collect();
    tx.c.exec(
        "INSERT INTO acme_orders (id, account_id, status, identifiers, profile, not_before, not_after, expires, created, updated, ident_hash) \
         VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $8, $9)",
        &[
            (&id).into(),
            (&new.account_id).into(),
            identifiers_to_json(&order_ids).to_string().into(),
            (&new.profile).into(),
            new.not_before.into(),
            new.not_after.into(),
            new.expires.into(),
            now.into(),
            key.into(),
        ],
    )
    .await?;
    let mut links = Vec::with_capacity(new.identifiers.len());
    for (item, cover) in new.identifiers.iter().zip(covered) {
        let link = match cover {
            Some(l) => l,
            None => match reusable_pending(tx, &new.account_id, &item.new_authz).await? {
                Some(a) => Link {
                    authz: a,
                    how: "pending-reused",
                    ancestor: None,
                },
                None => Link {
                    authz: insert_authz(tx, &new.account_id, &item.new_authz).await?,
                    how: "new",
                    ancestor: None,
                },
            },
        };
        links.push(link);
    }
    insert_links(tx, &id, &links).await?;
    let decisions: Vec<Value> = new
        .identifiers
        .iter()
        .zip(&links)
        .map(|(item, link)| link_decision(&item.order.identifier, link, &item.new_authz))
        .collect();
    let order = must_get_order(tx, &id).await?;
    tx.audit(
        AuditDraft::new(account_actor(&new.account_id), "acme.order.created").details(json!({
            "order": id,
            "identifiers": identifiers_to_json(&order_ids),
            "profile": new.profile,
            "authorizations": decisions,
            "status": order.status.as_str(),
        })),
    )
    .await?;
    Ok(order)
}

pub(crate) async fn list_orders<C: Conn>(
    tx: &mut Tx<C>,
    account_id: &str,
    limit: u32,
    after: Option<&str>,
) -> Result<Page<String>> {
    let limit = clamp_limit(limit);
    let rows =
        tx.c.query(
            "SELECT id FROM acme_orders WHERE account_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[
                account_id.into(),
                after.unwrap_or("").into(),
                (limit + 1).into(),
            ],
        )
        .await?;
    let mut items: Vec<String> = rows.iter().map(|r| r.text(0)).collect::<Result<_>>()?;
    let next = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().cloned()
    } else {
        None
    };
    Ok(Page { items, next })
}

pub(crate) async fn begin_finalize<C: Conn>(
    tx: &mut Tx<C>,
    order_id: &str,
    account_id: &str,
) -> Result<AcmeOrder> {
    let order = must_get_order(tx, order_id).await?;
    if order.account_id != account_id {
        return Err(StoreError::NotFound(format!("order {order_id}")));
    }
    if order.status != OrderStatus::Ready {
        return Err(StoreError::Conflict(order.status.as_str().to_string()));
    }
    active_account(tx, account_id).await?;
    let now = tx.now;
    if tx
        .c
        .exec(
            "UPDATE acme_orders SET status = 'processing', updated = $1 WHERE id = $2 \
             AND (status = 'pending' OR (status = 'processing' AND updated < $3))",
            &[
                now.into(),
                order_id.into(),
                now.saturating_sub(STALE_PROCESSING_MICROS).into(),
            ],
        )
        .await?
        == 0
    {
        return Err(StoreError::Conflict("processing".into()));
    }
    must_get_order(tx, order_id).await
}

async fn insert_certificate<C: Conn>(tx: &mut Tx<C>, cert: &NewAcmeCertificate) -> Result<()> {
    let identifiers: Vec<Value> = cert.identifiers.iter().map(identifier_json).collect();
    let now = tx.now;
    tx.c.exec(
        "INSERT INTO acme_certificates (serial_hex, order_id, account_id, identifiers, spki_sha256, profile, \
         not_before, not_after, chain_der, issued, revoked) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0)",
        &[
            cert.serial_hex.to_ascii_lowercase().into(),
            cert.order_id.clone().into(),
            cert.account_id.clone().into(),
            Value::Array(identifiers).to_string().into(),
            (&cert.spki_sha256).into(),
            (&cert.profile).into(),
            cert.not_before.into(),
            cert.not_after.into(),
            join_chain(&cert.chain).into(),
            now.into(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn complete_finalize<C: Conn>(
    tx: &mut Tx<C>,
    cert: &NewAcmeCertificate,
) -> Result<AcmeOrder> {
    let order_id = cert
        .order_id
        .as_deref()
        .ok_or_else(|| StoreError::Conflict("a finalized certificate needs its order".into()))?;
    let order = must_get_order(tx, order_id).await?;
    if order.status != OrderStatus::Processing {
        return Err(StoreError::Conflict(format!(
            "order {order_id} is {}, not processing",
            order.status
        )));
    }
    let now = tx.now;
    let serial = cert.serial_hex.to_ascii_lowercase();
    if tx
        .c
        .exec(
            "UPDATE acme_orders SET status = 'valid', cert_serial = $1, updated = $2 WHERE id = $3 AND status = 'processing'",
            &[(&serial).into(), now.into(), order_id.into()],
        )
        .await?
        == 0
    {
        return Err(StoreError::Conflict(format!(
            "order {order_id} is no longer processing"
        )));
    }
    insert_certificate(tx, cert).await?;
    tx.audit(
        AuditDraft::new(account_actor(&order.account_id), "acme.certificate.issued").details(
            json!({
                "order": order_id,
                "serial": serial,
                "identifiers": cert.identifiers.iter().map(identifier_json).collect::<Vec<_>>(),
                "profile": cert.profile,
                "not_before": cert.not_before,
                "not_after": cert.not_after,
                "authorizations": order.authz_ids,
            }),
        ),
    )
    .await?;
    must_get_order(tx, order_id).await
}

pub(crate) async fn fail_finalize<C: Conn>(
    tx: &mut Tx<C>,
    order_id: &str,
    error: &str,
) -> Result<AcmeOrder> {
    let order = must_get_order(tx, order_id).await?;
    if order.status != OrderStatus::Processing {
        return Err(StoreError::Conflict(format!(
            "order {order_id} is {}, not processing",
            order.status
        )));
    }
    let now = tx.now;
    if tx
        .c
        .exec(
            "UPDATE acme_orders SET status = 'invalid', error = $1, updated = $2 WHERE id = $3 AND status = 'processing'",
            &[error.into(), now.into(), order_id.into()],
        )
        .await?
        == 0
    {
        return Err(StoreError::Conflict(format!(
            "order {order_id} is no longer processing"
        )));
    }
    let problem: Value = serde_json::from_str(error).unwrap_or(Value::String(error.to_string()));
    tx.audit(
        AuditDraft::new(account_actor(&order.account_id), "acme.order.failed")
            .details(json!({"order": order_id, "error": problem})),
    )
    .await?;
    must_get_order(tx, order_id).await
}

pub(crate) async fn record_certificate<C: Conn>(
    tx: &mut Tx<C>,
    cert: &NewAcmeCertificate,
    purpose: &str,
) -> Result<()> {
    insert_certificate(tx, cert).await?;
    tx.audit(
        AuditDraft::new("acme-ca", "acme.certificate.issued").details(json!({
            "serial": cert.serial_hex.to_ascii_lowercase(),
            "identifiers": cert.identifiers.iter().map(identifier_json).collect::<Vec<_>>(),
            "profile": cert.profile,
            "purpose": purpose,
            "not_before": cert.not_before,
            "not_after": cert.not_after,
        })),
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Certificates

const CERT_COLUMNS: &str = "serial_hex, order_id, account_id, identifiers, spki_sha256, profile, not_before, not_after, \
     issued, revoked, revoked_at, revocation_reason, chain_der FROM acme_certificates";

fn certificate_from_row(row: &Row) -> Result<AcmeCertificate> {
    let ids: Value =
        serde_json::from_str(&row.text(3)?).map_err(|e| corrupt("certificate identifiers", e))?;
    let identifiers = ids
        .as_array()
        .ok_or_else(|| corrupt("certificate identifiers", "not an array"))?
        .iter()
        .map(|i| {
            Ok(AcmeIdentifier {
                kind: i
                    .get("type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| corrupt("certificate identifier", "no type"))?
                    .to_string(),
                value: i
                    .get("value")
                    .and_then(Value::as_str)
                    .ok_or_else(|| corrupt("certificate identifier", "no value"))?
                    .to_string(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(AcmeCertificate {
        serial_hex: row.text(0)?,
        order_id: row.opt_text(1)?,
        account_id: row.opt_text(2)?,
        identifiers,
        spki_sha256: row.text(4)?,
        profile: row.text(5)?,
        not_before: row.int(6)?,
        not_after: row.int(7)?,
        issued: row.int(8)?,
        revoked: row.int(9)? != 0,
        revoked_at: row.opt_int(10)?,
        revocation_reason: row.opt_int(11)?,
        chain: split_chain(&row.blob(12)?)?,
    })
}

pub(crate) async fn get_certificate<C: Conn>(
    tx: &mut Tx<C>,
    serial_hex: &str,
) -> Result<Option<AcmeCertificate>> {
    let rows =
        tx.c.query(
            &format!("SELECT {CERT_COLUMNS} WHERE serial_hex = $1"),
            &[serial_hex.to_ascii_lowercase().into()],
        )
        .await?;
    rows.first().map(certificate_from_row).transpose()
}

pub(crate) async fn list_certificates<C: Conn>(
    tx: &mut Tx<C>,
    limit: u32,
    after: Option<&str>,
) -> Result<Page<AcmeCertificate>> {
    let limit = clamp_limit(limit);
    let rows = match after {
        None => {
            tx.c.query(
                &format!("SELECT {CERT_COLUMNS} ORDER BY issued DESC, serial_hex DESC LIMIT $1"),
                &[(limit + 1).into()],
            )
            .await?
        }
        Some(cursor) => {
            let (issued, serial) = cursor
                .split_once(':')
                .and_then(|(i, s)| Some((i.parse::<i64>().ok()?, s.to_string())))
                .ok_or_else(|| StoreError::Conflict(format!("bad page cursor {cursor:?}")))?;
            tx.c.query(
                &format!(
                    "SELECT {CERT_COLUMNS} WHERE issued < $1 OR (issued = $1 AND serial_hex < $2) \
                     ORDER BY issued DESC, serial_hex DESC LIMIT $3"
                ),
                &[issued.into(), serial.into(), (limit + 1).into()],
            )
            .await?
        }
    };
    let mut items: Vec<AcmeCertificate> = rows
        .iter()
        .map(certificate_from_row)
        .collect::<Result<_>>()?;
    let next = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items
            .last()
            .map(|c| format!("{}:{}", c.issued, c.serial_hex))
    } else {
        None
    };
    Ok(Page { items, next })
}

pub(crate) async fn revoke_certificate<C: Conn>(
    tx: &mut Tx<C>,
    serial_hex: &str,
    reason: i64,
    actor: &str,
) -> Result<AcmeCertificate> {
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
    if tx
        .c
        .exec(
            "UPDATE acme_certificates SET revoked = 1, revoked_at = $1, revocation_reason = $2 WHERE serial_hex = $3 AND revoked = 0",
            &[now.into(), reason.into(), (&cert.serial_hex).into()],
        )
        .await?
        == 0
    {
        return Err(StoreError::Conflict(format!(
            "certificate {} is already revoked",
            cert.serial_hex
        )));
    }
    tx.audit(
        AuditDraft::new(actor, "acme.certificate.revoked").details(json!({
            "serial": cert.serial_hex,
            "reason": reason,
            "order": cert.order_id,
            "account": cert.account_id,
            "identifiers": cert.identifiers.iter().map(identifier_json).collect::<Vec<_>>(),
        })),
    )
    .await?;
    get_certificate(tx, serial_hex)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("certificate with serial {serial_hex}")))
}

pub(crate) async fn revoked_unexpired<C: Conn>(tx: &mut Tx<C>) -> Result<Vec<RevokedEntry>> {
    let now = tx.now;
    let rows =
        tx.c.query(
            "SELECT serial_hex, revoked_at, revocation_reason FROM acme_certificates \
             WHERE revoked = 1 AND not_after > $1 ORDER BY serial_hex",
            &[now.into()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(RevokedEntry {
                serial_hex: r.text(0)?,
                revoked_at: r.opt_int(1)?.unwrap_or(0),
                reason: r.opt_int(2)?,
            })
        })
        .collect()
}

pub(crate) async fn counts<C: Conn>(tx: &mut Tx<C>) -> Result<AcmeCounts> {
    let rows =
        tx.c.query(
            "SELECT \
             (SELECT COUNT(*) FROM acme_accounts), \
             (SELECT COUNT(*) FROM acme_accounts WHERE status = 'valid'), \
             (SELECT COUNT(*) FROM acme_orders), \
             (SELECT COUNT(*) FROM acme_authzs), \
             (SELECT COUNT(*) FROM acme_authzs WHERE status = 'valid'), \
             (SELECT COUNT(*) FROM acme_certificates), \
             (SELECT COUNT(*) FROM acme_certificates WHERE revoked = 1)",
            &[],
        )
        .await?;
    let r = rows
        .first()
        .ok_or_else(|| StoreError::Corrupt("counts returned no row".into()))?;
    Ok(AcmeCounts {
        accounts: r.int(0)?,
        valid_accounts: r.int(1)?,
        orders: r.int(2)?,
        authzs: r.int(3)?,
        valid_authzs: r.int(4)?,
        certificates: r.int(5)?,
        revoked: r.int(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_label_wise() {
        assert_eq!(
            proper_ancestors("a.devices.example.com"),
            vec!["devices.example.com", "example.com", "com"]
        );
        assert!(proper_ancestors("com").is_empty());
        assert!(!proper_ancestors("ooo.example.com").contains(&"oo.example.com".to_string()));
    }

    #[test]
    fn order_status_follows_authorizations() {
        use AuthzStatus as A;
        let f = |s: &[A]| effective_order_status(OrderStatus::Pending, 100, 50, s, 0);
        assert_eq!(f(&[A::Valid, A::Valid]), OrderStatus::Ready);
        assert_eq!(f(&[A::Valid, A::Pending]), OrderStatus::Pending);
        assert_eq!(f(&[A::Valid, A::Expired]), OrderStatus::Invalid);
        assert_eq!(f(&[A::Deactivated]), OrderStatus::Invalid);
        assert_eq!(f(&[]), OrderStatus::Pending);
        assert_eq!(
            effective_order_status(OrderStatus::Pending, 10, 50, &[A::Valid], 0),
            OrderStatus::Invalid
        );
        assert_eq!(
            effective_order_status(OrderStatus::Valid, 10, 50, &[A::Expired], 0),
            OrderStatus::Valid
        );
        assert_eq!(effective_authz_status(A::Valid, 10, 50), A::Expired);
        // A claim abandoned longer than the grace period makes the order finalizable again.
        let now = 10 * STALE_PROCESSING_MICROS;
        let processing = |updated| {
            effective_order_status(OrderStatus::Processing, i64::MAX, now, &[A::Valid], updated)
        };
        assert_eq!(processing(now - 1), OrderStatus::Processing);
        assert_eq!(
            processing(now - 2 * STALE_PROCESSING_MICROS),
            OrderStatus::Ready
        );
        assert_eq!(effective_authz_status(A::Invalid, 10, 50), A::Invalid);
    }
}
