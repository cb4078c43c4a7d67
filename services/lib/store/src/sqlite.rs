//! SQLite backend: the embedded default. One connection in WAL mode behind an async mutex, so
//! waiting for the database never blocks a runtime thread; each statement is short.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, ErrorCode};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::schema::{MIGRATIONS, ddl};
use crate::sql::{Backend, Conn, Dialect, Row, Val};
use crate::{Result, SqlStore, StoreError};

pub struct SqliteBackend {
    conn: Arc<Mutex<Connection>>,
}

pub struct SqliteConn {
    guard: OwnedMutexGuard<Connection>,
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            StoreError::Retry(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

fn to_sqlite(v: &Val) -> SqlValue {
    match v {
        Val::Null => SqlValue::Null,
        Val::Int(i) => SqlValue::Integer(*i),
        Val::Text(s) => SqlValue::Text(s.clone()),
        Val::Blob(b) => SqlValue::Blob(b.clone()),
    }
}

fn from_sqlite(v: ValueRef<'_>) -> Result<Val> {
    Ok(match v {
        ValueRef::Null => Val::Null,
        ValueRef::Integer(i) => Val::Int(i),
        // No column is REAL; a value that became one was written by someone else.
        ValueRef::Real(f) => Val::Text(f.to_string()),
        ValueRef::Text(t) => Val::Text(
            String::from_utf8(t.to_vec())
                .map_err(|_| StoreError::Corrupt("a text column holds invalid UTF-8".into()))?,
        ),
        ValueRef::Blob(b) => Val::Blob(b.to_vec()),
    })
}

/// Our SQL is written with `$n` placeholders; SQLite's positional form is `?n`.
fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

impl SqliteConn {
    fn exec_now(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let mut stmt = self
            .guard
            .prepare_cached(&sqlite_sql(sql))
            .map_err(map_err)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(params.iter().map(to_sqlite)))
            .map_err(map_err)?;
        Ok(n as u64)
    }

    fn query_now(&mut self, sql: &str, params: &[Val]) -> Result<Vec<Row>> {
        let mut stmt = self
            .guard
            .prepare_cached(&sqlite_sql(sql))
            .map_err(map_err)?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter().map(to_sqlite)))
            .map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(map_err)? {
            let mut vals = Vec::with_capacity(columns);
            for i in 0..columns {
                vals.push(from_sqlite(row.get_ref(i).map_err(map_err)?)?);
            }
            out.push(Row(vals));
        }
        Ok(out)
    }
}

impl Conn for SqliteConn {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn exec(&mut self, sql: &str, params: &[Val]) -> impl Future<Output = Result<u64>> + Send {
        std::future::ready(self.exec_now(sql, params))
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[Val],
    ) -> impl Future<Output = Result<Vec<Row>>> + Send {
        std::future::ready(self.query_now(sql, params))
    }

    fn batch(&mut self, sql: &str) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(self.guard.execute_batch(sql).map_err(map_err))
    }
}

impl Backend for SqliteBackend {
    type C = SqliteConn;

    fn acquire(&self) -> impl Future<Output = Result<SqliteConn>> + Send {
        let conn = self.conn.clone();
        async move {
            Ok(SqliteConn {
                guard: conn.lock_owned().await,
            })
        }
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
}

/// Opens (creating if needed) the database file and applies pending migrations.
pub async fn open(path: &Path) -> Result<SqlStore<SqliteBackend>> {
    let path = path.to_path_buf();
    let conn = tokio::task::spawn_blocking(move || open_sync(&path))
        .await
        .map_err(|e| StoreError::Backend(format!("opening SQLite: {e}")))??;
    Ok(SqlStore::new(SqliteBackend {
        conn: Arc::new(Mutex::new(conn)),
    }))
}

fn open_sync(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
    }
    let mut conn = Connection::open(path).map_err(map_err)?;
    restrict_permissions(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(map_err)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
    )
    .map_err(map_err)?;
    migrate(&mut conn)?;
    Ok(conn)
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| StoreError::Backend(format!("restricting {}: {e}", path.display())))
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) -> Result<()> {
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(map_err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied BIGINT NOT NULL)",
    )
    .map_err(map_err)?;
    for (version, sql) in MIGRATIONS {
        let applied: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .map_err(map_err)?;
        if applied > 0 {
            continue;
        }
        tx.execute_batch(&ddl(sql, "BLOB"))
            .map_err(|e| StoreError::Migration(format!("version {version}: {e}")))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied) VALUES (?1, ?2)",
            [*version, crate::logic::now_micros()],
        )
        .map_err(map_err)?;
    }
    tx.commit().map_err(map_err)
}
