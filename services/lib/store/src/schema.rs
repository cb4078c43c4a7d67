//! Migrations. Each backend runs them at start-up; applied versions are recorded in
//! `schema_migrations`. The DDL is shared: integers are BIGINT (times in Unix microseconds,
//! booleans as 0/1) and `{blob}` is BYTEA or BLOB.

pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    approved BIGINT NOT NULL DEFAULT 0,
    first_seen BIGINT NOT NULL
);
CREATE TABLE labels (
    device_id TEXT NOT NULL REFERENCES devices(id),
    profile TEXT NOT NULL,
    parent_domain TEXT NOT NULL,
    label TEXT NOT NULL,
    created BIGINT NOT NULL,
    PRIMARY KEY (device_id, profile),
    UNIQUE (parent_domain, label)
);
CREATE TABLE enrollments (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices(id),
    profile TEXT NOT NULL,
    label TEXT NOT NULL,
    parent_domain TEXT NOT NULL,
    names TEXT NOT NULL,
    protocol TEXT NOT NULL,
    csr_der {blob} NOT NULL,
    csr_sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token TEXT,
    lease_expires BIGINT,
    not_before BIGINT NOT NULL DEFAULT 0,
    acme_order_url TEXT,
    failure_detail TEXT,
    failure_class TEXT,
    UNIQUE (device_id, csr_sha256)
);
CREATE INDEX enrollments_ready ON enrollments (state, not_before);
CREATE INDEX enrollments_created ON enrollments (created, id);
CREATE TABLE certificates (
    serial_hex TEXT PRIMARY KEY,
    enrollment_id TEXT NOT NULL UNIQUE REFERENCES enrollments(id),
    device_id TEXT NOT NULL REFERENCES devices(id),
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    chain_der {blob} NOT NULL,
    issued BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0,
    revoked_at BIGINT,
    revocation_reason TEXT
);
CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    time BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    device TEXT NOT NULL,
    label TEXT NOT NULL,
    enrollment TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_events_device ON audit_events (device, seq);
CREATE INDEX audit_events_label ON audit_events (label, seq);
CREATE INDEX audit_events_action ON audit_events (action, seq);
CREATE INDEX audit_events_time ON audit_events (time);
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
"#,
    ),
    (2, ACME_CA_V2),
    (3, ACME_CA_V3),
    (4, ISSUER_CHAIN_V4),
    (5, REVOCATION_JOBS_V5),
];

/// Operator revocations on their way to the issuing CA (one job per revoked certificate).
const REVOCATION_JOBS_V5: &str = r#"
CREATE TABLE revocation_jobs (
    serial_hex TEXT PRIMARY KEY REFERENCES certificates(serial_hex),
    reason TEXT NOT NULL,
    state TEXT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token TEXT,
    lease_expires BIGINT,
    not_before BIGINT NOT NULL DEFAULT 0,
    failure_detail TEXT
);
CREATE INDEX revocation_jobs_ready ON revocation_jobs (state, not_before);
"#;

/// The newest certificate of a profile, whose chain gives the CA certificates gateways serve.
const ISSUER_CHAIN_V4: &str = r#"
CREATE INDEX certificates_issued ON certificates (issued);
"#;

/// Order reuse: a newOrder for identifiers the account already has a pending or ready order
/// for gets that order back, found through a hash of its canonical identifier list.
const ACME_CA_V3: &str = r#"
ALTER TABLE acme_orders ADD COLUMN ident_hash TEXT;
CREATE INDEX acme_orders_reuse ON acme_orders (account_id, ident_hash);
"#;

/// The local ACME CA's state (RFC 8555 objects, issued certificates, used nonces).
const ACME_CA_V2: &str = r#"
CREATE TABLE acme_accounts (
    id TEXT PRIMARY KEY,
    thumbprint TEXT NOT NULL UNIQUE,
    jwk TEXT NOT NULL,
    status TEXT NOT NULL,
    contacts TEXT NOT NULL,
    eab_kid TEXT,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL
);
CREATE TABLE acme_authzs (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES acme_accounts(id),
    ident_type TEXT NOT NULL,
    ident_value TEXT NOT NULL,
    status TEXT NOT NULL,
    expires BIGINT NOT NULL,
    subdomain_auth BIGINT NOT NULL DEFAULT 0,
    wildcard BIGINT NOT NULL DEFAULT 0,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL
);
CREATE INDEX acme_authzs_lookup ON acme_authzs (account_id, ident_value, status);
CREATE TABLE acme_challenges (
    id TEXT PRIMARY KEY,
    authz_id TEXT NOT NULL REFERENCES acme_authzs(id),
    position BIGINT NOT NULL,
    type TEXT NOT NULL,
    token TEXT NOT NULL,
    status TEXT NOT NULL,
    validated BIGINT,
    error TEXT
);
CREATE INDEX acme_challenges_authz ON acme_challenges (authz_id, position);
CREATE TABLE acme_orders (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES acme_accounts(id),
    status TEXT NOT NULL,
    identifiers TEXT NOT NULL,
    profile TEXT NOT NULL,
    not_before BIGINT,
    not_after BIGINT,
    expires BIGINT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    error TEXT,
    cert_serial TEXT
);
CREATE INDEX acme_orders_account ON acme_orders (account_id, id);
CREATE TABLE acme_order_authzs (
    order_id TEXT NOT NULL REFERENCES acme_orders(id),
    authz_id TEXT NOT NULL REFERENCES acme_authzs(id),
    position BIGINT NOT NULL,
    PRIMARY KEY (order_id, authz_id)
);
CREATE TABLE acme_certificates (
    serial_hex TEXT PRIMARY KEY,
    order_id TEXT REFERENCES acme_orders(id),
    account_id TEXT REFERENCES acme_accounts(id),
    identifiers TEXT NOT NULL,
    spki_sha256 TEXT NOT NULL,
    profile TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    chain_der {blob} NOT NULL,
    issued BIGINT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0,
    revoked_at BIGINT,
    revocation_reason BIGINT
);
CREATE INDEX acme_certificates_issued ON acme_certificates (issued, serial_hex);
CREATE INDEX acme_certificates_revoked ON acme_certificates (revoked, not_after);
CREATE TABLE acme_nonces (
    nonce TEXT PRIMARY KEY,
    expires BIGINT NOT NULL
);
CREATE INDEX acme_nonces_expires ON acme_nonces (expires);
CREATE TABLE acme_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#;

pub(crate) fn ddl(sql: &str, blob: &str) -> String {
    sql.replace("{blob}", blob)
}
