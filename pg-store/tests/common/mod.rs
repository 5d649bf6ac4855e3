//! What the PostgreSQL tests share: the server, and what they do without
//! one.

use std::sync::atomic::{AtomicU64, Ordering};

/// The `postgres` database of the server at `ANNALS_TEST_POSTGRES` (by
/// default `postgres://postgres@127.0.0.1:5432`), as every PostgreSQL
/// test of the workspace finds it.
pub fn server() -> String {
    let server = std::env::var("ANNALS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    format!("{}/postgres", server.trim_end_matches('/'))
}

/// Without a server a test is skipped with a notice, except under CI,
/// where that is a failure.
pub fn skip_without_server(e: &dyn std::fmt::Display) {
    assert!(
        std::env::var_os("CI").is_none_or(|v| v.is_empty()),
        "PostgreSQL at {} is required under CI: {e}",
        server()
    );
    eprintln!(
        "notice: skipping a PostgreSQL test, no server at {}: {e}",
        server()
    );
}

/// A schema name no other test of this run uses.
pub fn fresh_schema(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "annals_{tag}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Drops `schema` and everything in it.
pub async fn drop_schema(schema: &str) {
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&server())
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
}
