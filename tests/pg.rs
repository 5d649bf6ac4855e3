//! A PostgreSQL database of its own for a test, dropped afterwards.
//!
//! The server is the one at `ANNALS_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432`). Without one a test is skipped with
//! a notice, except under CI (`CI` set to anything), where that is a
//! failure.

use std::sync::atomic::{AtomicU32, Ordering};

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

impl PgDatabase {
    /// Creates `annals_<tag>_<pid>_<n>`; `None` (skip) when no server runs
    /// and this is not CI.
    pub async fn create(tag: &str) -> Option<PgDatabase> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let server = server();
        let connect = sqlx::PgConnection::connect(&format!("{server}/postgres"));
        let connected = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
            .await
            .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none_or(|v| v.is_empty()),
                    "PostgreSQL at {server} is required under CI: {e}"
                );
                eprintln!("notice: skipping a PostgreSQL test, no server at {server}: {e}");
                return None;
            }
        };
        let name = format!(
            "annals_{tag}_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
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

    /// Every row of each table as JSON text, in primary-key order.
    pub async fn dump(&self, tables: &[&str]) -> Vec<Vec<String>> {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        let mut out = Vec::new();
        for table in tables {
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT row_to_json(t)::text FROM {table} t ORDER BY id"
            )))
            .fetch_all(&mut conn)
            .await
            .unwrap();
            out.push(rows);
        }
        let _ = conn.close().await;
        out
    }
}

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
                    // WITH (FORCE) ends other sessions; still, never wait
                    // for ever in a test's cleanup.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), drop).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
