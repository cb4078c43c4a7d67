//! Edited, deleted and reordered audit rows, changed directly in each database, are reported by
//! `ragw audit verify` with the first bad sequence number; so is a tampered export.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Dev, Pg};
use ragw_proto::registrar::v1::enrollment_service_client::EnrollmentServiceClient;
use ragw_runtime::identity::Role;

/// Enough activity for a chain of a few dozen events.
async fn make_events(dev: &Dev) {
    let mut client = EnrollmentServiceClient::new(dev.channel(Role::Gateway).await);
    common::enroll(&mut client, 0..6).await;
}

fn assert_intact(dev: &Dev) {
    let (code, out, err) = dev.cli(&["audit", "verify"]);
    assert_eq!(code, 0, "expected an intact chain: {out}{err}");
    assert!(out.contains("intact"), "{out}");
}

fn assert_broken_at(dev: &Dev, seq: i64) {
    let (code, out, err) = dev.cli(&["audit", "verify"]);
    assert_ne!(code, 0, "tampering went unnoticed: {out}{err}");
    assert!(
        err.contains(&format!("BROKEN at event {seq}:")),
        "expected the first bad event to be {seq}: {err}"
    );
}

/// The raw SQL each case runs, whatever the database.
trait Db {
    async fn exec(&mut self, sql: &str);
    async fn count(&mut self) -> i64;
}

struct Sqlite(rusqlite::Connection);

impl Db for Sqlite {
    async fn exec(&mut self, sql: &str) {
        self.0.execute_batch(sql).unwrap();
    }
    async fn count(&mut self) -> i64 {
        self.0
            .query_row("SELECT COUNT(*) FROM audit_events", [], |r| r.get(0))
            .unwrap()
    }
}

struct Postgres(tokio_postgres::Client);

impl Db for Postgres {
    async fn exec(&mut self, sql: &str) {
        self.0.batch_execute(sql).await.unwrap();
    }
    async fn count(&mut self) -> i64 {
        self.0
            .query_one("SELECT COUNT(*) FROM audit_events", &[])
            .await
            .unwrap()
            .get(0)
    }
}

async fn tamper_cases(dev: &Dev, db: &mut impl Db) {
    make_events(dev).await;
    let total = db.count().await;
    assert!(total >= 20, "only {total} events");
    assert_intact(dev);

    // Edit one field of event 5.
    db.exec("CREATE TABLE saved AS SELECT * FROM audit_events WHERE seq IN (3, 4, 5, 7)")
        .await;
    db.exec("UPDATE audit_events SET actor = 'mallory' WHERE seq = 5")
        .await;
    assert_broken_at(dev, 5);
    db.exec("DELETE FROM audit_events WHERE seq = 5; INSERT INTO audit_events SELECT * FROM saved WHERE seq = 5").await;
    assert_intact(dev);

    // Edit the details JSON, keeping it valid JSON.
    db.exec("UPDATE audit_events SET details = '{}' WHERE seq = 4")
        .await;
    assert_broken_at(dev, 4);
    db.exec("DELETE FROM audit_events WHERE seq = 4; INSERT INTO audit_events SELECT * FROM saved WHERE seq = 4").await;
    assert_intact(dev);

    // Delete event 7.
    db.exec("DELETE FROM audit_events WHERE seq = 7").await;
    assert_broken_at(dev, 7);
    db.exec("INSERT INTO audit_events SELECT * FROM saved WHERE seq = 7")
        .await;
    assert_intact(dev);

    // Reorder: events 3 and 4 trade places.
    db.exec(
        "UPDATE audit_events SET seq = -3 WHERE seq = 3; UPDATE audit_events SET seq = 3 WHERE seq = 4; \
         UPDATE audit_events SET seq = 4 WHERE seq = -3;",
    )
    .await;
    assert_broken_at(dev, 3);
    db.exec(
        "UPDATE audit_events SET seq = -3 WHERE seq = 3; UPDATE audit_events SET seq = 3 WHERE seq = 4; \
         UPDATE audit_events SET seq = 4 WHERE seq = -3;",
    )
    .await;
    assert_intact(dev);

    // Cut the last event off the end.
    db.exec(&format!("DELETE FROM audit_events WHERE seq = {total}"))
        .await;
    assert_broken_at(dev, total);
}

fn export_and_tamper_offline(dev: &Dev) {
    let file = dev.dir.join("export.jsonl");
    let file_s = file.to_string_lossy().into_owned();
    let (code, out, err) = dev.cli(&["audit", "export", "--output", &file_s]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = dev.cli(&["audit", "verify", "--file", &file_s]);
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[5] = lines[5].replace("\"actor\":\"", "\"actor\":\"x");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (code, _, err) = dev.cli(&["audit", "verify", "--file", &file_s]);
    assert_ne!(code, 0);
    assert!(err.contains("BROKEN at event 6:"), "{err}");
    // An excerpt (from a filtered export) verifies on its own terms.
    let (code, out, err) = dev.cli(&[
        "audit",
        "query",
        "--action",
        "label.allocated",
        "--format",
        "csv",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().count(),
        7,
        "header + 6 label allocations: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_sqlite() {
    let dev = Dev::start(&["--no-worker"]);
    export_and_tamper_offline_after_events(&dev).await;
    let mut db = Sqlite(rusqlite::Connection::open(dev.dir.join("ragw.db")).unwrap());
    tamper_cases(&dev, &mut db).await;
}

async fn export_and_tamper_offline_after_events(dev: &Dev) {
    make_events(dev).await;
    export_and_tamper_offline(dev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_postgres() {
    let Some(pg) = Pg::fresh() else { return };
    let config = pg.config.to_string_lossy().into_owned();
    let dev = Dev::start(&["--no-worker", "--config", &config]);
    let mut db = Postgres(pg.client().await);
    tamper_cases(&dev, &mut db).await;
    drop(dev);
    pg.drop_schema().await;
}
