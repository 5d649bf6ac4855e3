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

/// A name no other test uses: `annals_<tag>_<pid>_<n>`.
fn unique_name(tag: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "annals_{tag}_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
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
    /// Creates `annals_<tag>_<pid>_<n>`; `None` (skip) when no server runs
    /// and this is not CI.
    pub async fn create(tag: &str) -> Option<PgDatabase> {
        let db = PgDatabase::reserve(tag).await?;
        let mut conn = admin_connection(&db.server).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{}\"",
            db.name
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let _ = conn.close().await;
        Some(db)
    }

    /// A database name of its own that nothing created yet, dropped
    /// afterwards if something did; `None` (skip) as for [`create`].
    pub async fn reserve(tag: &str) -> Option<PgDatabase> {
        let server = server();
        let conn = admin_connection(&server).await?;
        let _ = conn.close().await;
        let name = unique_name(tag);
        Some(PgDatabase {
            url: format!("{server}/{name}"),
            server,
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates a login role that may not create databases, dropped with
    /// this database; its name.
    pub async fn role_without_createdb(&self) -> String {
        let role = format!("{}_user", self.name);
        let mut conn = admin_connection(&self.server).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE \"{role}\" LOGIN NOCREATEDB"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let _ = conn.close().await;
        role
    }

    /// The database's URL for `role` instead of the server's user.
    pub fn url_as(&self, role: &str) -> String {
        let (_, addr) = split_authority(&self.server);
        format!("postgres://{role}@{addr}/{}", self.name)
    }

    /// The server's `host:port`.
    pub fn server_addr(&self) -> String {
        let (_, authority) = split_authority(&self.server);
        authority.to_owned()
    }

    /// The database's URL with `addr` (`host:port`) in place of the
    /// server's address: for reaching it through a proxy.
    pub fn url_through(&self, addr: &str) -> String {
        let (userinfo, _) = split_authority(&self.server);
        format!("postgres://{userinfo}{addr}/{}", self.name)
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

/// `("user@", "host:port")` of a `postgres://user@host:port` URL.
fn split_authority(server: &str) -> (&str, &str) {
    let rest = server.split_once("://").map_or(server, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((user, addr)) => (&authority[..user.len() + 1], addr),
        None => ("", authority),
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
                    let drop_role = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP ROLE IF EXISTS \"{name}_user\""
                    )))
                    .execute(&mut conn);
                    let _ =
                        tokio::time::timeout(std::time::Duration::from_secs(30), drop_role).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
