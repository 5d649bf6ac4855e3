//! A PostgreSQL database of a test's own, dropped afterwards.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::Connection;

/// The server tests use when `ANNALS_TEST_POSTGRES` names none.
const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// How long connecting to the server may take before it counts as absent.
const CONNECT_WAIT_MAX: Duration = Duration::from_secs(5);

/// A database no other test uses, on the server at `ANNALS_TEST_POSTGRES`
/// (default `postgres://postgres@127.0.0.1:5432`), dropped when the value
/// is dropped (also when the test failed; `WITH (FORCE)` ends the sessions
/// of a service still connected).
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates `annals_test_<tag>_<pid>_<n>`. `None`, after a notice on
    /// stderr, when no server answers, so that the test skips; under CI
    /// (`CI` set to anything) that fails the test instead.
    pub async fn create(tag: &str) -> Option<TestDatabase> {
        let server = server();
        let mut conn = admin_connection(&server).await?;
        let name = unique_name(tag);
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating the test database {name} on {server}: {e}"));
        let _ = conn.close().await;
        Some(TestDatabase {
            url: format!("{server}/{name}"),
            server,
            name,
        })
    }

    /// The database's URL, as `--database` takes it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop may run inside the test's runtime, which cannot be blocked
        // on: do the async work on a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(drop_database(&server, &name));
        })
        .join();
    }
}

/// Drops a test database, bounded: cleanup never hangs a test run. On
/// failure the database stays behind, with a notice.
async fn drop_database(server: &str, name: &str) {
    let dropped = tokio::time::timeout(Duration::from_secs(30), async {
        let mut conn = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await?;
        conn.close().await
    })
    .await;
    match dropped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("notice: test database {name} left behind: {e}"),
        Err(_) => eprintln!("notice: test database {name} left behind: no drop within 30 s"),
    }
}

/// `ANNALS_TEST_POSTGRES` without a trailing slash, or the default.
fn server() -> String {
    let server = std::env::var("ANNALS_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_SERVER.into());
    server.trim_end_matches('/').to_owned()
}

/// Whether a test that finds no server must fail rather than skip.
fn required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// A connection to the server's `postgres` database; `None` (skip) when no
/// server answers and this is not CI.
async fn admin_connection(server: &str) -> Option<sqlx::PgConnection> {
    let connect = sqlx::PgConnection::connect(&format!("{server}/postgres"));
    let reason = match tokio::time::timeout(CONNECT_WAIT_MAX, connect).await {
        Ok(Ok(conn)) => return Some(conn),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {CONNECT_WAIT_MAX:?}"),
    };
    assert!(
        !required(),
        "PostgreSQL at {server} is required under CI: {reason}"
    );
    eprintln!("notice: skipping a PostgreSQL test, no server at {server}: {reason}");
    None
}

/// `annals_test_<tag>_<pid>_<n>`: unique among the tests of every process
/// running at once, and a plain identifier whatever `tag` holds.
fn unique_name(tag: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    // PostgreSQL keeps 63 bytes of a name; the pid and counter need 22.
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(28)
        .collect();
    format!(
        "annals_test_{tag}_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn names_are_plain_identifiers_of_at_most_63_bytes() {
        let name = unique_name("a-very-long-TAG with spaces/and slashes and more");
        assert!(name.len() <= 63, "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "{name}"
        );
        assert_ne!(unique_name("x"), unique_name("x"));
    }
}
