//! The reference views on both backends: exact rows for hand-written event
//! sequences, a generated log checked against the generator's own model,
//! SQLite and PostgreSQL giving identical tables, and "credit used up" as an
//! indexed query.

use annals_credit::generator::Generator;
use annals_credit::views::{CUSTOMER_COLUMNS, ORDER_COLUMNS};
use projector::{Dialect, ViewDb};
use sqlx::Row;

use crate::common::{
    Backend, TestDb, append_raw, dump, dump_views, generate, open_store, project_all,
};

const C1: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const O1: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const O2: &str = "7c9e6679-0000-40de-944b-e07fc1f90ae7";

fn money(amount: i64) -> String {
    format!(r#"{{"amount":{amount},"currency":"EUR"}}"#)
}

/// The row of `customers` for an id, as column → text.
async fn customer(db: &ViewDb, id: &str) -> std::collections::HashMap<String, String> {
    row_by_id(db, "customers", &CUSTOMER_COLUMNS, id).await
}

async fn order(db: &ViewDb, id: &str) -> std::collections::HashMap<String, String> {
    row_by_id(db, "orders", &ORDER_COLUMNS, id).await
}

async fn row_by_id(
    db: &ViewDb,
    table: &str,
    columns: &[&str],
    id: &str,
) -> std::collections::HashMap<String, String> {
    let rows = dump(db, table, columns).await;
    let row = rows
        .into_iter()
        .find(|r| r[0] == id)
        .unwrap_or_else(|| panic!("no row {id} in {table}"));
    columns.iter().map(|c| (*c).to_owned()).zip(row).collect()
}

#[tokio::test]
async fn a_customer_and_orders_fold_into_exact_rows_on_every_backend() {
    for test_db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let customer_stream = format!("customer-{C1}");
        append_raw(
            &store,
            &customer_stream,
            "CustomerRegistered",
            &format!(
                r#"{{"customer_id":"{C1}","name":"Zoë Ångström","email":"zoe@example.com","credit_limit":{}}}"#,
                money(10_000)
            ),
        )
        .await;
        append_raw(
            &store,
            &format!("order-{O1}"),
            "OrderPlaced",
            &format!(
                r#"{{"order_id":"{O1}","customer_id":"{C1}","lines":[{{"sku":"A","quantity":2,"unit_price":{}}},{{"sku":"B","quantity":1,"unit_price":{}}}],"total":{}}}"#,
                money(3_000),
                money(1_000),
                money(7_000)
            ),
        )
        .await;
        append_raw(
            &store,
            &customer_stream,
            "CreditReserved",
            &format!(
                r#"{{"customer_id":"{C1}","order_id":"{O1}","amount":{}}}"#,
                money(7_000)
            ),
        )
        .await;
        append_raw(
            &store,
            &format!("order-{O1}"),
            "OrderApproved",
            &format!(r#"{{"order_id":"{O1}","customer_id":"{C1}"}}"#),
        )
        .await;
        // A second order that does not fit: rejected.
        append_raw(
            &store,
            &format!("order-{O2}"),
            "OrderPlaced",
            &format!(
                r#"{{"order_id":"{O2}","customer_id":"{C1}","lines":[],"total":{},"extra_field":"ignored"}}"#,
                money(5_000)
            ),
        )
        .await;
        append_raw(
            &store,
            &format!("order-{O2}"),
            "OrderRejected",
            &format!(
                r#"{{"order_id":"{O2}","customer_id":"{C1}","reason":"credit limit exceeded"}}"#
            ),
        )
        .await;
        // The limit drops below what is reserved: available stays at 0.
        append_raw(
            &store,
            &customer_stream,
            "CreditLimitChanged",
            &format!(
                r#"{{"customer_id":"{C1}","credit_limit":{}}}"#,
                money(5_000)
            ),
        )
        .await;
        // An event of a type nobody wants: only moves the checkpoints.
        let head = append_raw(&store, "audit-1", "SomethingElse", "{}").await;

        let db = test_db.open().await;
        project_all(&store, &db).await;

        let c = customer(&db, C1).await;
        assert_eq!(c["name"], "Zoë Ångström", "{:?}", test_db.backend);
        assert_eq!(c["name_folded"], "zoë ångström");
        assert_eq!(c["email"], "zoe@example.com");
        assert_eq!(c["currency"], "EUR");
        assert_eq!(c["credit_limit"], "5000");
        assert_eq!(c["reserved"], "7000");
        assert_eq!(c["available"], "0");
        assert_eq!(c["orders_placed"], "2");
        assert_eq!(c["orders_approved"], "1");
        assert_eq!(c["orders_rejected"], "1");
        assert_eq!(c["orders_cancelled"], "0");
        // Customer stream: registered, reserved, limit changed.
        assert_eq!(c["version"], "3");
        assert_eq!(c["position"], "7");

        let o1 = order(&db, O1).await;
        assert_eq!(o1["customer_id"], C1);
        assert_eq!(o1["total"], "7000");
        assert_eq!(o1["line_count"], "2");
        assert_eq!(o1["status"], "approved");
        assert_eq!(o1["reason"], "NULL");
        assert_eq!(o1["version"], "2");
        let o2 = order(&db, O2).await;
        assert_eq!(o2["status"], "rejected");
        assert_eq!(o2["reason"], "credit limit exceeded");
        assert_eq!(o2["line_count"], "0");

        // Both checkpoints went through the event nobody wanted.
        for name in ["customers", "orders"] {
            let cp = crate::common::checkpoint(&db, name).await.unwrap();
            assert_eq!(cp.position, head, "{name} on {:?}", test_db.backend);
        }

        // Then a cancellation releases the credit.
        append_raw(
            &store,
            &format!("order-{O1}"),
            "OrderCancelled",
            &format!(r#"{{"order_id":"{O1}","customer_id":"{C1}"}}"#),
        )
        .await;
        append_raw(
            &store,
            &customer_stream,
            "CreditReleased",
            &format!(
                r#"{{"customer_id":"{C1}","order_id":"{O1}","amount":{}}}"#,
                money(7_000)
            ),
        )
        .await;
        project_all(&store, &db).await;
        let c = customer(&db, C1).await;
        assert_eq!(c["reserved"], "0");
        assert_eq!(c["available"], "5000");
        assert_eq!(c["orders_cancelled"], "1");
        let o1 = order(&db, O1).await;
        assert_eq!(o1["status"], "cancelled");
        assert_eq!(o1["reason"], "NULL");

        // Forgetting erases the personal columns and nothing else; the
        // erased name matches no search.
        append_raw(
            &store,
            &customer_stream,
            "CustomerForgotten",
            &format!(r#"{{"customer_id":"{C1}"}}"#),
        )
        .await;
        project_all(&store, &db).await;
        let c = customer(&db, C1).await;
        assert_eq!(c["name"], projector::personal::ERASED);
        assert_eq!(c["email"], projector::personal::ERASED);
        assert_eq!(c["name_folded"], "");
        assert_eq!(c["available"], "5000");
        assert_eq!(c["version"], "5");
        db.close().await;
    }
}

#[tokio::test]
async fn a_generated_log_matches_the_generator_model_and_both_backends_agree() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut generator = Generator::new(42);
    generate(&store, &mut generator, 6_000).await;

    let mut dumps = Vec::new();
    for test_db in TestDb::all().await {
        let db = test_db.open().await;
        project_all(&store, &db).await;

        let customers = dump(&db, "customers", &CUSTOMER_COLUMNS).await;
        assert_eq!(customers.len(), generator.customers().len());
        for model in generator.customers() {
            let row = customers.iter().find(|r| r[0] == model.id).unwrap();
            let expected = [
                model.id.clone(),
                model.name.clone(),
                model.name.to_lowercase(),
                model.email.clone(),
                model.currency.clone(),
                model.credit_limit.to_string(),
                model.reserved.to_string(),
                model.available().to_string(),
                model.placed.to_string(),
                model.approved.to_string(),
                model.rejected.to_string(),
                model.cancelled.to_string(),
                model.version.to_string(),
            ];
            assert_eq!(&row[..13], &expected[..], "{:?}", test_db.backend);
        }
        let orders = dump(&db, "orders", &ORDER_COLUMNS).await;
        assert_eq!(orders.len(), generator.orders().count());
        for model in generator.orders() {
            let row = orders.iter().find(|r| r[0] == model.id).unwrap();
            assert_eq!(row[1], model.customer_id);
            assert_eq!(row[2], model.currency);
            assert_eq!(row[3], model.total.to_string());
            assert_eq!(row[4], model.line_count.to_string());
            assert_eq!(row[5], model.status);
            assert_eq!(
                row[6],
                model.reason.clone().unwrap_or_else(|| "NULL".into())
            );
            assert_eq!(row[9], model.version.to_string());
        }
        dumps.push((test_db.backend, dump_views(&db).await));
        db.close().await;
    }
    // Same log, same tables, whatever the backend (times included: they
    // come from the log, not from the clock of the projector).
    if let [(_, sqlite), (Backend::Postgres, postgres)] = &dumps[..] {
        assert!(sqlite == postgres, "SQLite and PostgreSQL views differ");
    }
    assert!(
        generator.customers().iter().any(|c| c.available() == 0),
        "the log should have customers with used-up credit"
    );
}

#[tokio::test]
async fn customers_with_used_up_credit_is_a_plain_indexed_query() {
    for test_db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let mut generator = Generator::new(5);
        generate(&store, &mut generator, 3_000).await;
        let db = test_db.open().await;
        project_all(&store, &db).await;

        let used_up: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM customers WHERE available = 0 ORDER BY id LIMIT 100",
        )
        .fetch_all(db.pool())
        .await
        .unwrap();
        let mut expected: Vec<String> = generator
            .customers()
            .iter()
            .filter(|c| c.available() == 0)
            .map(|c| c.id.clone())
            .collect();
        expected.sort();
        expected.truncate(100);
        assert!(!expected.is_empty());
        assert_eq!(used_up, expected);

        let mut conn = db.pool().acquire().await.unwrap();
        let plan: Vec<String> = match db.dialect() {
            Dialect::Sqlite => sqlx::query(
                "EXPLAIN QUERY PLAN SELECT id FROM customers WHERE available = 0 ORDER BY id LIMIT 100",
            )
            .fetch_all(&mut *conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(3))
            .collect(),
            Dialect::Postgres => {
                // A small table is cheaper to scan and sort; ask what the
                // index allows: with scans and sorts made prohibitive, a
                // plan without a sort exists only if the index gives the
                // order.
                for setting in [
                    "SET enable_seqscan = off",
                    "SET enable_bitmapscan = off",
                    "SET enable_sort = off",
                ] {
                    sqlx::query(setting).execute(&mut *conn).await.unwrap();
                }
                sqlx::query(
                    "EXPLAIN SELECT id FROM customers WHERE available = 0 ORDER BY id LIMIT 100",
                )
                .fetch_all(&mut *conn)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(0))
                .collect()
            }
        };
        let plan = plan.join("\n");
        assert!(
            plan.contains("customers_by_available"),
            "{:?} plan does not use the index:\n{plan}",
            test_db.backend
        );
        assert!(
            !plan.contains("TEMP B-TREE") && !plan.contains("Sort"),
            "{:?} plan sorts instead of reading the index in order:\n{plan}",
            test_db.backend
        );
        drop(conn);
        db.close().await;
    }
}

#[tokio::test]
async fn opening_twice_applies_the_schema_once_and_bad_urls_are_refused() {
    for test_db in TestDb::all().await {
        let first = test_db.open().await;
        first.close().await;
        let again = test_db.open().await;
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(again.pool())
            .await
            .unwrap();
        let migrations =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/sqlite"))
                .unwrap()
                .count() as i64;
        assert_eq!(applied, migrations);
        assert_eq!(
            again.checkpoints().await.unwrap(),
            Vec::new(),
            "no checkpoint before a projector ran"
        );
        again.close().await;
    }
    for bad in ["mysql://localhost/x", "views.sqlite", "sqlite::memory:"] {
        let err = ViewDb::open(bad).await.unwrap_err();
        assert!(
            matches!(err, projector::Error::InvalidUrl { .. }),
            "{bad}: {err}"
        );
    }
}

#[tokio::test]
async fn the_sqlite_file_is_in_wal_mode() {
    let test_db = TestDb::sqlite();
    let db = test_db.open().await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    db.close().await;
}

/// Nagle's algorithm on a connection to PostgreSQL holds back the end of a
/// statement sent in more than one segment until the server's delayed
/// acknowledgement (40 ms on Linux): a rebuild's multi-row upserts spent
/// most of their time asleep that way. Every connection must have
/// `TCP_NODELAY`; the sockets are found through `/proc/self`.
#[tokio::test]
async fn postgres_connections_have_nagles_algorithm_off() {
    let Some(test_db) = TestDb::postgres().await else {
        return;
    };
    let db = test_db.open().await;
    sqlx::query("SELECT 1").execute(db.pool()).await.unwrap();
    // postgres://user@host:port/database?...
    let authority = test_db.url().split('/').nth(2).unwrap();
    let port: u16 = authority
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(5432);
    let sockets = tcp_sockets_to(port);
    assert!(
        !sockets.is_empty(),
        "no TCP connection to port {port} found"
    );
    for socket in &sockets {
        assert!(
            rustix::net::sockopt::tcp_nodelay(socket).unwrap(),
            "a connection to the view database has Nagle's algorithm on"
        );
    }
    db.close().await;
}

/// This process's TCP sockets connected to `port`, as duplicates of its
/// file descriptors.
fn tcp_sockets_to(port: u16) -> Vec<std::os::fd::OwnedFd> {
    use std::collections::HashSet;
    // The inodes of the sockets whose remote port is `port`.
    let mut inodes = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields[2]
                .rsplit(':')
                .next()
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if remote_port == Some(port) {
                inodes.insert(fields[9].to_owned());
            }
        }
    }
    let me = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    let mut sockets = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
        else {
            continue;
        };
        if !inodes.contains(inode) {
            continue;
        }
        let fd: i32 = entry.file_name().to_string_lossy().parse().unwrap();
        sockets.push(
            rustix::process::pidfd_getfd(&me, fd, rustix::process::PidfdGetfdFlags::empty())
                .unwrap(),
        );
    }
    sockets
}
