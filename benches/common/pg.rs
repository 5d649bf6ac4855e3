//! A PostgreSQL database made for one benchmark run, dropped afterwards:
//! shared by the root benchmarks and, through `#[path]`, the read-side
//! benchmark of query-api.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A database on the PostgreSQL server for this run only, dropped with
/// the value.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    /// Whether the server answers; prints a notice when it does not.
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

    pub async fn create(admin_url: &str) -> PgDatabase {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "annals_bench_{}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::Connection::close(conn).await.unwrap();
        let server = admin_url.split('?').next().unwrap_or(admin_url);
        let server = &server[..server.rfind('/').unwrap()];
        PgDatabase {
            admin_url: admin_url.to_owned(),
            url: format!("{server}/{name}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside any runtime's reach: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await?;
                sqlx::Connection::close(conn).await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop database {}", self.name);
        }
    }
}
