//! A PostgreSQL database made for one benchmark run, dropped afterwards;
//! and what the workspace's PostgreSQL tests share: where the server is,
//! a schema per test, and what a test does without a server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A database on the PostgreSQL server for this run only, dropped with
/// the value.
#[derive(Debug)]
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

/// Why a database could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("the server URL {0} has no database path")]
    Url(String),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

impl PgDatabase {
    /// Whether the server at `admin_url` answers; prints a notice when it
    /// does not, as its rows are then skipped.
    pub async fn reachable(admin_url: &str) -> bool {
        sqlx::any::install_default_drivers();
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url),
        )
        .await;
        match connected {
            Ok(Ok(conn)) => {
                let _ = sqlx::Connection::close(conn).await;
                true
            }
            Ok(Err(e)) => {
                eprintln!("notice: PostgreSQL at {admin_url} unreachable ({e}); skipping its rows");
                false
            }
            Err(_) => {
                eprintln!("notice: PostgreSQL at {admin_url} timed out; skipping its rows");
                false
            }
        }
    }

    /// Creates a database of a name no other run uses on the server at
    /// `admin_url` (whose own database is only connected to).
    pub async fn create(admin_url: &str) -> Result<PgDatabase, PgError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        sqlx::any::install_default_drivers();
        let server = admin_url.split('?').next().unwrap_or(admin_url);
        let server = server
            .rfind('/')
            .map(|slash| &server[..slash])
            .ok_or_else(|| PgError::Url(admin_url.to_owned()))?;
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let name = format!(
            "annals_bench_{}_{millis}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await?;
        sqlx::Connection::close(conn).await?;
        Ok(PgDatabase {
            admin_url: admin_url.to_owned(),
            url: format!("{server}/{name}"),
            name,
        })
    }
}

/// Drops the database on the server.
async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    sqlx::Connection::close(conn).await
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside any runtime's reach: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(drop_database(&url, &name))
                .map_err(|e| e.to_string())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop database {}", self.name);
        }
    }
}

// What every PostgreSQL test of the workspace shares.

/// The `postgres` database of the server at `ANNALS_TEST_POSTGRES` (by
/// default `postgres://postgres@127.0.0.1:5432`), as every PostgreSQL
/// test of the workspace finds it.
pub fn test_server() -> String {
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
        test_server()
    );
    eprintln!(
        "notice: skipping a PostgreSQL test, no server at {}: {e}",
        test_server()
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
pub async fn drop_schema(schema: &str) -> Result<(), PgError> {
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&test_server())
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&admin)
    .await?;
    admin.close().await;
    Ok(())
}
