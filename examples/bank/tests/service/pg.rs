//! A PostgreSQL database of its own for a test, dropped afterwards.
//!
//! The server is the one at `ANNALS_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432`). Without one a test is skipped with
//! a notice, except under CI (`CI` set to anything), where that is a
//! failure.

use sqlx::Connection;

pub struct PgDatabase {
    server: String,
    name: String,
    pub url: String,
}

fn server() -> String {
    let server = std::env::var("ANNALS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    server.trim_end_matches('/').to_string()
}

/// A connection to the server's `postgres` database; `None` (skip) when no
/// server runs and this is not CI.
async fn admin_connection(server: &str) -> Option<sqlx::PgConnection> {
    let connect = sqlx::PgConnection::connect(&format!("{server}/postgres"));
    let connected = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
        .await
        .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
    match connected {
        Ok(conn) => Some(conn),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v.is_empty()),
                "PostgreSQL at {server} is required under CI: {e}"
            );
            eprintln!("notice: skipping a PostgreSQL test, no server at {server}: {e}");
            None
        }
    }
}

impl PgDatabase {
    /// Creates `annals_bank_<tag>_<pid>`; `None` (skip) when no server
    /// runs and this is not CI.
    pub async fn create(tag: &str) -> Option<PgDatabase> {
        let server = server();
        let mut conn = admin_connection(&server).await?;
        let name = format!("annals_bank_{tag}_{}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        Some(PgDatabase {
            url: format!("{server}/{name}"),
            server,
            name,
        })
    }
}

/// Drops the database, also when the test failed (`WITH (FORCE)` ends the
/// sessions of a service still running).
impl Drop for PgDatabase {
    fn drop(&mut self) {
        let url = format!("{}/postgres", self.server);
        let name = self.name.clone();
        // Drop runs inside the test's runtime: do the async work on a
        // thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let connect = sqlx::PgConnection::connect(&url);
                if let Ok(Ok(mut conn)) =
                    tokio::time::timeout(std::time::Duration::from_secs(5), connect).await
                {
                    let drop = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut conn);
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), drop).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
