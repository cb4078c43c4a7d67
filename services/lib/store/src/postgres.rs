//! PostgreSQL backend through tokio-postgres and a deadpool connection pool.

use std::error::Error as StdError;
use std::str::FromStr;

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::schema::{MIGRATIONS, ddl};
use crate::sql::{Backend, Conn, Dialect, Row, Val};
use crate::{Result, SqlStore, StoreError};

/// Arbitrary constant naming the advisory lock that serializes migrations across replicas.
const MIGRATION_LOCK_KEY: i64 = 0x7261_6777_6d69_6772;

pub struct PgBackend {
    pool: Pool,
}

pub struct PgConn {
    client: Object,
}

fn map_err(e: tokio_postgres::Error) -> StoreError {
    if let Some(code) = e.code()
        && (*code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED)
    {
        return StoreError::Retry(e.to_string());
    }
    match e.as_db_error() {
        Some(db) => StoreError::Backend(format!("{} ({})", db.message(), db.code().code())),
        None => StoreError::Backend(with_causes(&e)),
    }
}

/// "error connecting to server" says little; its causes say why (refused, unknown host …).
fn with_causes(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[derive(Debug)]
struct TypeMismatch(String);

impl std::fmt::Display for TypeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for TypeMismatch {}

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(v) if *ty == Type::INT8 => v.to_sql(ty, out),
            Val::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Val::Int(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Val::Text(s) if <&str as ToSql>::accepts(ty) => s.as_str().to_sql(ty, out),
            Val::Blob(b) if *ty == Type::BYTEA => b.as_slice().to_sql(ty, out),
            other => Err(Box::new(TypeMismatch(format!(
                "cannot bind {other:?} to a {ty} parameter"
            )))),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn read_row(row: &tokio_postgres::Row) -> Result<Row> {
    let mut vals = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let ty = col.type_();
        let bad = |e: tokio_postgres::Error| StoreError::Corrupt(format!("column {i}: {e}"));
        let v = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i).map_err(bad)?.map(Val::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)
                .map_err(bad)?
                .map(|v| Val::Int(v.into()))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)
                .map_err(bad)?
                .map(|v| Val::Int(v.into()))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)
                .map_err(bad)?
                .map(Val::from)
        } else if *ty == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(i)
                .map_err(bad)?
                .map(Val::Blob)
        } else {
            row.try_get::<_, Option<String>>(i)
                .map_err(bad)?
                .map(Val::Text)
        };
        vals.push(v.unwrap_or(Val::Null));
    }
    Ok(Row(vals))
}

impl Conn for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn exec(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let stmt = self.client.prepare_cached(sql).await.map_err(map_err)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        self.client.execute(&stmt, &refs).await.map_err(map_err)
    }

    async fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>> {
        let stmt = self.client.prepare_cached(sql).await.map_err(map_err)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self.client.query(&stmt, &refs).await.map_err(map_err)?;
        rows.iter().map(read_row).collect()
    }

    async fn batch(&mut self, sql: &str) -> Result<()> {
        self.client.batch_execute(sql).await.map_err(map_err)
    }
}

impl Backend for PgBackend {
    type C = PgConn;

    async fn acquire(&self) -> Result<PgConn> {
        let client = self.pool.get().await.map_err(|e| {
            StoreError::Backend(format!("no PostgreSQL connection: {}", with_causes(&e)))
        })?;
        Ok(PgConn { client })
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
}

fn valid_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// Connects, creates `schema` when given, and applies pending migrations.
pub async fn open(
    url: &str,
    schema: Option<&str>,
    pool_size: usize,
) -> Result<SqlStore<PgBackend>> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::Backend(format!("PostgreSQL connection string: {e}")))?;
    if let Some(schema) = schema {
        if !valid_schema_name(schema) {
            return Err(StoreError::Backend(format!(
                "schema name {schema:?} must be 1–63 of a-z 0-9 _ and not start with a digit"
            )));
        }
        let (client, connection) = config.connect(NoTls).await.map_err(|e| {
            StoreError::Backend(format!("cannot connect to PostgreSQL: {}", with_causes(&e)))
        })?;
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .map_err(map_err)?;
        drop(client);
        let _ = driver.await;
        config.options(format!("-c search_path={schema}"));
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(pool_size.max(1))
        .build()
        .map_err(|e| StoreError::Backend(format!("PostgreSQL pool: {e}")))?;
    let backend = PgBackend { pool };
    migrate(&backend).await?;
    Ok(SqlStore::new(backend))
}

async fn migrate(backend: &PgBackend) -> Result<()> {
    let mut conn = backend.acquire().await?;
    conn.batch("BEGIN").await?;
    let result = async {
        conn.exec("SELECT pg_advisory_xact_lock($1)", &[MIGRATION_LOCK_KEY.into()])
            .await?;
        conn.batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied BIGINT NOT NULL)",
        )
        .await?;
        for (version, sql) in MIGRATIONS {
            let rows = conn
                .query(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[(*version).into()],
                )
                .await?;
            if !rows.is_empty() {
                continue;
            }
            conn.batch(&ddl(sql, "BYTEA"))
                .await
                .map_err(|e| StoreError::Migration(format!("version {version}: {e}")))?;
            conn.exec(
                "INSERT INTO schema_migrations (version, applied) VALUES ($1, $2)",
                &[(*version).into(), crate::logic::now_micros().into()],
            )
            .await?;
        }
        Ok::<(), StoreError>(())
    }
    .await;
    match result {
        Ok(()) => conn.batch("COMMIT").await,
        Err(e) => {
            let _ = conn.batch("ROLLBACK").await;
            Err(e)
        }
    }
}
