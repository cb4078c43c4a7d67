//! Helpers for tests that need a real PostgreSQL.

/// `RAGW_TEST_DATABASE_URL`, or `None` with a loud note. With `RAGW_REQUIRE_PEERS=1` a missing
/// URL fails the test instead of skipping it.
pub fn database_url() -> Option<String> {
    match std::env::var("RAGW_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let msg =
                "RAGW_TEST_DATABASE_URL is not set: SKIPPING the PostgreSQL part of this test";
            if std::env::var("RAGW_REQUIRE_PEERS").as_deref() == Ok("1") {
                panic!("{msg}, but RAGW_REQUIRE_PEERS=1 requires it");
            }
            eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
            None
        }
    }
}

/// A schema name no other test run uses.
pub fn fresh_schema_name() -> String {
    format!(
        "ragw_test_{}_{}",
        std::process::id(),
        uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .get(..12)
            .unwrap_or("x")
    )
}

/// Drops test schemas; best effort, a leftover schema harms nothing.
pub async fn drop_schemas(url: &str, schemas: &[String]) {
    let Ok((client, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await else {
        return;
    };
    let driver = tokio::spawn(conn);
    for s in schemas {
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
            .await;
    }
    drop(client);
    let _ = driver.await;
}
