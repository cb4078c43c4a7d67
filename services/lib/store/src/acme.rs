//! State of the local ACME CA (RFC 8555 accounts, orders, authorizations, challenges, issued
//! certificates and revocations, used nonces), for both backends.
//!
//! Statuses that depend on the clock or on other objects (an authorization's `expired`, an
//! order's `ready` or `invalid`) are computed when an object is read, inside the reading
//! transaction, so no background job has to keep them current and every replica sees the same
//! answer.
//!
//! Decisions (an authorization becoming valid or invalid, an order created or satisfied by an
//! ancestor authorization, a certificate issued or revoked, account changes) append their audit
//! event in the same transaction as the change.

use std::fmt;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::acme_logic as logic;
use crate::logic::{Begin, Tx};
use crate::sql::Backend;
use crate::{Page, Result, SqlStore};

macro_rules! status_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum!(
    /// RFC 8555 §7.1.6 account statuses.
    AccountStatus {
        Valid => "valid",
        Deactivated => "deactivated",
        Revoked => "revoked",
    }
);

status_enum!(
    /// RFC 8555 §7.1.6 authorization statuses; `Expired` is only ever computed.
    AuthzStatus {
        Pending => "pending",
        Valid => "valid",
        Invalid => "invalid",
        Deactivated => "deactivated",
        Expired => "expired",
        Revoked => "revoked",
    }
);

status_enum!(
    /// RFC 8555 §7.1.6 challenge statuses.
    ChallengeStatus {
        Pending => "pending",
        Processing => "processing",
        Valid => "valid",
        Invalid => "invalid",
    }
);

status_enum!(
    /// RFC 8555 §7.1.6 order statuses; `Ready` is only ever computed.
    OrderStatus {
        Pending => "pending",
        Ready => "ready",
        Processing => "processing",
        Valid => "valid",
        Invalid => "invalid",
    }
);

/// An ACME identifier (`dns` or `ip`), value normalized by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AcmeIdentifier {
    pub kind: String,
    pub value: String,
}

impl AcmeIdentifier {
    pub fn dns(value: impl Into<String>) -> Self {
        AcmeIdentifier {
            kind: "dns".into(),
            value: value.into(),
        }
    }

    pub fn ip(value: impl Into<String>) -> Self {
        AcmeIdentifier {
            kind: "ip".into(),
            value: value.into(),
        }
    }
}

impl fmt::Display for AcmeIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeAccount {
    pub id: String,
    /// The account's public key as a JWK (JSON text).
    pub jwk: String,
    /// RFC 7638 thumbprint of `jwk` (base64url): one account per key.
    pub thumbprint: String,
    pub status: AccountStatus,
    pub contacts: Vec<String>,
    /// The external account binding key that vouched for the account, if one did.
    pub eab_kid: Option<String>,
    pub created: i64,
}

#[derive(Debug, Clone)]
pub struct NewAcmeAccount {
    pub jwk: String,
    pub thumbprint: String,
    pub contacts: Vec<String>,
    pub eab_kid: Option<String>,
    /// Extra facts for the audit event (e.g. the key type).
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeChallenge {
    pub id: String,
    pub authz_id: String,
    /// `dns-01`, `http-01`, …
    pub kind: String,
    pub token: String,
    pub status: ChallengeStatus,
    pub validated: Option<i64>,
    /// RFC 7807 problem document (JSON text) of a failed validation.
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeAuthz {
    pub id: String,
    pub account_id: String,
    pub identifier: AcmeIdentifier,
    /// Effective status: `expired` once `expires` has passed.
    pub status: AuthzStatus,
    pub expires: i64,
    /// RFC 9444: once valid, this authorization covers names under its identifier.
    pub subdomain_auth: bool,
    pub wildcard: bool,
    pub created: i64,
    pub challenges: Vec<AcmeChallenge>,
}

/// What to create when no existing authorization can be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuthzSpec {
    pub identifier: AcmeIdentifier,
    pub subdomain_auth: bool,
    pub wildcard: bool,
    pub challenge_types: Vec<String>,
    /// When the new, pending authorization expires (Unix micros).
    pub expires: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderIdentifier {
    pub identifier: AcmeIdentifier,
    /// RFC 9444 `ancestorDomain`, as the client sent it (normalized).
    pub ancestor_domain: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewOrderIdentifier {
    pub order: OrderIdentifier,
    /// The authorization to create when no valid one of the same account covers the
    /// identifier (exactly, or as a valid ancestor with subdomain authorization).
    pub new_authz: NewAuthzSpec,
}

#[derive(Debug, Clone)]
pub struct NewAcmeOrder {
    pub account_id: String,
    pub identifiers: Vec<NewOrderIdentifier>,
    pub profile: String,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub expires: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeOrder {
    pub id: String,
    pub account_id: String,
    /// Effective status (`ready` and expiry computed from the linked authorizations).
    pub status: OrderStatus,
    pub identifiers: Vec<OrderIdentifier>,
    pub profile: String,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub expires: i64,
    pub created: i64,
    /// RFC 7807 problem document (JSON text) of a failed finalization.
    pub error: Option<String>,
    pub authz_ids: Vec<String>,
    pub cert_serial: Option<String>,
}

/// The outcome of one challenge validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationOutcome {
    /// The authorization becomes valid until `authz_expires`.
    Valid { authz_expires: i64 },
    /// The challenge and its authorization become invalid; `error` is a problem document.
    Invalid { error: String },
}

#[derive(Debug, Clone)]
pub struct NewAcmeCertificate {
    pub serial_hex: String,
    /// `None` for certificates the CA issues for itself (its HTTPS server certificate).
    pub order_id: Option<String>,
    pub account_id: Option<String>,
    pub identifiers: Vec<AcmeIdentifier>,
    /// Hex SHA-256 of the subject public key info, to authorize revocation by the
    /// certificate's key.
    pub spki_sha256: String,
    pub profile: String,
    pub not_before: i64,
    pub not_after: i64,
    /// DER, end entity first.
    pub chain: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeCertificate {
    pub serial_hex: String,
    pub order_id: Option<String>,
    pub account_id: Option<String>,
    pub identifiers: Vec<AcmeIdentifier>,
    pub spki_sha256: String,
    pub profile: String,
    pub not_before: i64,
    pub not_after: i64,
    pub issued: i64,
    pub revoked: bool,
    pub revoked_at: Option<i64>,
    /// RFC 5280 CRLReason code.
    pub revocation_reason: Option<i64>,
    pub chain: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    pub serial_hex: String,
    pub revoked_at: i64,
    pub reason: Option<i64>,
}

/// Object counts, for metrics and for tests that check a refused request changed nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcmeCounts {
    pub accounts: i64,
    pub valid_accounts: i64,
    pub orders: i64,
    pub authzs: i64,
    pub valid_authzs: i64,
    pub certificates: i64,
    pub revoked: i64,
}

#[async_trait]
pub trait AcmeStore: Send + Sync {
    /// Records `nonce` as used until `expires`; `false` when it was used before.
    async fn acme_use_nonce(&self, nonce: &str, expires: i64) -> Result<bool>;
    /// The store half of every signed request, in one transaction: spends `nonce` (`false`
    /// when it was used before) and reads the signing account, if there is one.
    async fn acme_begin_request(
        &self,
        nonce: &str,
        expires: i64,
        account_id: Option<&str>,
    ) -> Result<(bool, Option<AcmeAccount>)>;
    /// Stores `candidate` under `name` unless a value is already there; returns the stored
    /// value, so every replica ends up with the same secret.
    async fn acme_secret(&self, name: &str, candidate: &str) -> Result<String>;

    /// Creates the account, or returns the existing one with the same key thumbprint and
    /// `false`.
    async fn acme_create_account(&self, new: NewAcmeAccount) -> Result<(AcmeAccount, bool)>;
    async fn acme_get_account(&self, id: &str) -> Result<Option<AcmeAccount>>;
    async fn acme_find_account(&self, thumbprint: &str) -> Result<Option<AcmeAccount>>;
    async fn acme_update_contacts(&self, id: &str, contacts: Vec<String>) -> Result<AcmeAccount>;
    async fn acme_deactivate_account(&self, id: &str) -> Result<AcmeAccount>;
    /// Replaces the account key. [`StoreError::Conflict`] when the new key already belongs
    /// to an account, or when the current key is no longer `old_thumbprint`.
    async fn acme_change_key(
        &self,
        id: &str,
        old_thumbprint: &str,
        new_jwk: &str,
        new_thumbprint: &str,
    ) -> Result<AcmeAccount>;

    async fn acme_create_order(&self, new: NewAcmeOrder) -> Result<AcmeOrder>;
    async fn acme_get_order(&self, id: &str) -> Result<Option<AcmeOrder>>;
    /// Order ids of an account, oldest first.
    async fn acme_list_orders(
        &self,
        account_id: &str,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<String>>;

    /// Creates a pending authorization (RFC 8555 §7.4.1 pre-authorization).
    async fn acme_create_authz(&self, account_id: &str, spec: NewAuthzSpec) -> Result<AcmeAuthz>;
    async fn acme_get_authz(&self, id: &str) -> Result<Option<AcmeAuthz>>;
    async fn acme_deactivate_authz(&self, id: &str, account_id: &str) -> Result<AcmeAuthz>;
    /// The challenge and its authorization.
    async fn acme_get_challenge(&self, id: &str) -> Result<Option<(AcmeChallenge, AcmeAuthz)>>;
    /// Applies a validation result. [`StoreError::Conflict`] when the authorization is no
    /// longer pending (another request decided first); the caller then re-reads it.
    async fn acme_record_validation(
        &self,
        challenge_id: &str,
        account_id: &str,
        outcome: ValidationOutcome,
    ) -> Result<(AcmeChallenge, AcmeAuthz)>;

    /// Moves a `ready` order to `processing`; [`StoreError::Conflict`] naming the effective
    /// status otherwise.
    async fn acme_begin_finalize(&self, order_id: &str, account_id: &str) -> Result<AcmeOrder>;
    /// Stores the issued certificate and makes the order `valid`.
    async fn acme_complete_finalize(&self, cert: NewAcmeCertificate) -> Result<AcmeOrder>;
    /// Makes a `processing` order `invalid` with `error` (a problem document).
    async fn acme_fail_finalize(&self, order_id: &str, error: &str) -> Result<AcmeOrder>;
    /// Records a certificate issued outside an order (the CA's own server certificate).
    async fn acme_record_certificate(&self, cert: NewAcmeCertificate, purpose: &str) -> Result<()>;

    async fn acme_get_certificate(&self, serial_hex: &str) -> Result<Option<AcmeCertificate>>;
    /// Issued certificates, newest first; `after` is the cursor from the previous page.
    async fn acme_list_certificates(
        &self,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<AcmeCertificate>>;
    /// [`StoreError::Conflict`] when already revoked, [`StoreError::NotFound`] when unknown.
    async fn acme_revoke_certificate(
        &self,
        serial_hex: &str,
        reason: i64,
        actor: &str,
    ) -> Result<AcmeCertificate>;
    /// Whether `account_id` holds a valid, unexpired authorization for every identifier (its
    /// own, or an RFC 9444 ancestor's); `*.name` needs a wildcard authorization of `name`.
    /// RFC 8555 §7.6 lets such an account revoke a certificate it did not order.
    async fn acme_account_authorized_for(
        &self,
        account_id: &str,
        identifiers: &[AcmeIdentifier],
    ) -> Result<bool>;
    /// Revoked certificates that have not expired yet: what a CRL must list.
    async fn acme_revoked_unexpired(&self) -> Result<Vec<RevokedEntry>>;
    async fn acme_counts(&self) -> Result<AcmeCounts>;
}

/// The actor name of an ACME account in audit events.
pub fn account_actor(account_id: &str) -> String {
    format!("acme-account:{account_id}")
}

impl<B: Backend> SqlStore<B> {
    /// A write without an audit event that never takes the audit head (used nonces, secrets,
    /// claiming an order).
    async fn run_unaudited<A, R, F>(&self, args: A, f: F) -> Result<R>
    where
        A: Send + Sync + 'static,
        R: Send + 'static,
        F: for<'a> Fn(&'a mut Tx<B::C>, &'a A) -> BoxFuture<'a, Result<R>> + Send + Sync + 'static,
    {
        self.run_as(Begin::WriteUnaudited, args, f).await
    }

    /// A write whose one audit event is appended after its other writes, so the audit head is
    /// held only for the append and the commit.
    async fn run_audited<A, R, F>(&self, args: A, f: F) -> Result<R>
    where
        A: Send + Sync + 'static,
        R: Send + 'static,
        F: for<'a> Fn(&'a mut Tx<B::C>, &'a A) -> BoxFuture<'a, Result<R>> + Send + Sync + 'static,
    {
        self.run_as(Begin::WriteAuditLast, args, f).await
    }
}

#[async_trait]
impl<B: Backend> AcmeStore for SqlStore<B> {
    async fn acme_use_nonce(&self, nonce: &str, expires: i64) -> Result<bool> {
        self.run_unaudited((nonce.to_string(), expires), |tx, a| {
            Box::pin(logic::use_nonce(tx, &a.0, a.1))
        })
        .await
    }

    async fn acme_begin_request(
        &self,
        nonce: &str,
        expires: i64,
        account_id: Option<&str>,
    ) -> Result<(bool, Option<AcmeAccount>)> {
        let args = (nonce.to_string(), expires, account_id.map(str::to_string));
        self.run_unaudited(args, |tx, a| {
            Box::pin(logic::begin_request(tx, &a.0, a.1, a.2.as_deref()))
        })
        .await
    }

    async fn acme_secret(&self, name: &str, candidate: &str) -> Result<String> {
        self.run_unaudited((name.to_string(), candidate.to_string()), |tx, a| {
            Box::pin(logic::secret(tx, &a.0, &a.1))
        })
        .await
    }

    async fn acme_create_account(&self, new: NewAcmeAccount) -> Result<(AcmeAccount, bool)> {
        self.run_audited(new, |tx, a| Box::pin(logic::create_account(tx, a)))
            .await
    }

    async fn acme_get_account(&self, id: &str) -> Result<Option<AcmeAccount>> {
        self.run(false, id.to_string(), |tx, a| {
            Box::pin(logic::get_account(tx, a))
        })
        .await
    }

    async fn acme_find_account(&self, thumbprint: &str) -> Result<Option<AcmeAccount>> {
        self.run(false, thumbprint.to_string(), |tx, a| {
            Box::pin(logic::find_account(tx, a))
        })
        .await
    }

    async fn acme_update_contacts(&self, id: &str, contacts: Vec<String>) -> Result<AcmeAccount> {
        self.run_audited((id.to_string(), contacts), |tx, a| {
            Box::pin(logic::update_contacts(tx, &a.0, &a.1))
        })
        .await
    }

    async fn acme_deactivate_account(&self, id: &str) -> Result<AcmeAccount> {
        self.run_audited(id.to_string(), |tx, a| {
            Box::pin(logic::deactivate_account(tx, a))
        })
        .await
    }

    async fn acme_change_key(
        &self,
        id: &str,
        old_thumbprint: &str,
        new_jwk: &str,
        new_thumbprint: &str,
    ) -> Result<AcmeAccount> {
        let args = (
            id.to_string(),
            old_thumbprint.to_string(),
            new_jwk.to_string(),
            new_thumbprint.to_string(),
        );
        self.run_audited(args, |tx, a| {
            Box::pin(logic::change_key(tx, &a.0, &a.1, &a.2, &a.3))
        })
        .await
    }

    async fn acme_create_order(&self, new: NewAcmeOrder) -> Result<AcmeOrder> {
        self.run_audited(new, |tx, a| Box::pin(logic::create_order(tx, a)))
            .await
    }

    async fn acme_get_order(&self, id: &str) -> Result<Option<AcmeOrder>> {
        self.run(false, id.to_string(), |tx, a| {
            Box::pin(logic::get_order(tx, a))
        })
        .await
    }

    async fn acme_list_orders(
        &self,
        account_id: &str,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<String>> {
        let args = (account_id.to_string(), limit, after.map(str::to_string));
        self.run(false, args, |tx, a| {
            Box::pin(logic::list_orders(tx, &a.0, a.1, a.2.as_deref()))
        })
        .await
    }

    async fn acme_create_authz(&self, account_id: &str, spec: NewAuthzSpec) -> Result<AcmeAuthz> {
        self.run_audited((account_id.to_string(), spec), |tx, a| {
            Box::pin(logic::create_authz_standalone(tx, &a.0, &a.1))
        })
        .await
    }

    async fn acme_get_authz(&self, id: &str) -> Result<Option<AcmeAuthz>> {
        self.run(false, id.to_string(), |tx, a| {
            Box::pin(logic::get_authz(tx, a))
        })
        .await
    }

    async fn acme_deactivate_authz(&self, id: &str, account_id: &str) -> Result<AcmeAuthz> {
        self.run_audited((id.to_string(), account_id.to_string()), |tx, a| {
            Box::pin(logic::deactivate_authz(tx, &a.0, &a.1))
        })
        .await
    }

    async fn acme_get_challenge(&self, id: &str) -> Result<Option<(AcmeChallenge, AcmeAuthz)>> {
        self.run(false, id.to_string(), |tx, a| {
            Box::pin(logic::get_challenge(tx, a))
        })
        .await
    }

    async fn acme_record_validation(
        &self,
        challenge_id: &str,
        account_id: &str,
        outcome: ValidationOutcome,
    ) -> Result<(AcmeChallenge, AcmeAuthz)> {
        let args = (challenge_id.to_string(), account_id.to_string(), outcome);
        self.run_audited(args, |tx, a| {
            Box::pin(logic::record_validation(tx, &a.0, &a.1, &a.2))
        })
        .await
    }

    async fn acme_begin_finalize(&self, order_id: &str, account_id: &str) -> Result<AcmeOrder> {
        // Claiming the order records no decision (issuance does), so it stays off the chain.
        self.run_unaudited((order_id.to_string(), account_id.to_string()), |tx, a| {
            Box::pin(logic::begin_finalize(tx, &a.0, &a.1))
        })
        .await
    }

    async fn acme_complete_finalize(&self, cert: NewAcmeCertificate) -> Result<AcmeOrder> {
        self.run_audited(cert, |tx, a| Box::pin(logic::complete_finalize(tx, a)))
            .await
    }

    async fn acme_fail_finalize(&self, order_id: &str, error: &str) -> Result<AcmeOrder> {
        self.run_audited((order_id.to_string(), error.to_string()), |tx, a| {
            Box::pin(logic::fail_finalize(tx, &a.0, &a.1))
        })
        .await
    }

    async fn acme_record_certificate(&self, cert: NewAcmeCertificate, purpose: &str) -> Result<()> {
        self.run_audited((cert, purpose.to_string()), |tx, a| {
            Box::pin(logic::record_certificate(tx, &a.0, &a.1))
        })
        .await
    }

    async fn acme_get_certificate(&self, serial_hex: &str) -> Result<Option<AcmeCertificate>> {
        self.run(false, serial_hex.to_string(), |tx, a| {
            Box::pin(logic::get_certificate(tx, a))
        })
        .await
    }

    async fn acme_list_certificates(
        &self,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page<AcmeCertificate>> {
        self.run(false, (limit, after.map(str::to_string)), |tx, a| {
            Box::pin(logic::list_certificates(tx, a.0, a.1.as_deref()))
        })
        .await
    }

    async fn acme_account_authorized_for(
        &self,
        account_id: &str,
        identifiers: &[AcmeIdentifier],
    ) -> Result<bool> {
        let args = (account_id.to_string(), identifiers.to_vec());
        self.run_as(Begin::Read, args, |tx, a| {
            Box::pin(logic::account_authorized_for(tx, &a.0, &a.1))
        })
        .await
    }

    async fn acme_revoke_certificate(
        &self,
        serial_hex: &str,
        reason: i64,
        actor: &str,
    ) -> Result<AcmeCertificate> {
        let args = (serial_hex.to_string(), reason, actor.to_string());
        self.run_audited(args, |tx, a| {
            Box::pin(logic::revoke_certificate(tx, &a.0, a.1, &a.2))
        })
        .await
    }

    async fn acme_revoked_unexpired(&self) -> Result<Vec<RevokedEntry>> {
        self.run(false, (), |tx, _| Box::pin(logic::revoked_unexpired(tx)))
            .await
    }

    async fn acme_counts(&self) -> Result<AcmeCounts> {
        self.run(false, (), |tx, _| Box::pin(logic::counts(tx)))
            .await
    }
}
