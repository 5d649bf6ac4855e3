//! Projections own their DDL: the projector creates missing tables at
//! start and leaves existing ones as they are, and a view database made when
//! the reference tables came from migration 0002 still opens and serves.

use annals_credit::generator::Generator;
use annals_credit::views::{CustomersProjection, OrdersProjection};
use projector::{Dialect, Projection};

use crate::common::{
    TestDb, dump_views, generate, open_store, project_all, reference_projector, test_options,
};

async fn tables(db: &projector::ViewDb) -> Vec<String> {
    let sql = match db.dialect() {
        Dialect::Sqlite => {
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name IN ('customers', 'orders') ORDER BY name"
        }
        Dialect::Postgres => {
            "SELECT tablename::text FROM pg_catalog.pg_tables WHERE schemaname = current_schema() \
             AND tablename IN ('customers', 'orders') ORDER BY tablename"
        }
    };
    sqlx::query_scalar(sql).fetch_all(db.pool()).await.unwrap()
}

#[tokio::test]
async fn the_projector_creates_the_tables_its_projections_declare() {
    for test_db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let db = test_db.open().await;
        assert!(
            tables(&db).await.is_empty(),
            "migrations make no view tables"
        );
        let projector = reference_projector(&store, &db, test_options());
        projector.create_tables().await.unwrap();
        assert_eq!(tables(&db).await, ["customers", "orders"]);
        // Idempotent: existing tables are left as they are.
        projector.create_tables().await.unwrap();
        db.close().await;
    }
}

/// Before projections declared their DDL, migration 0002 created the
/// reference tables and was recorded as applied. Such a database opens (the
/// migration is no longer known), keeps its rows, and the projector goes on
/// with the tables it finds.
#[tokio::test]
async fn a_database_that_applied_the_old_reference_migration_still_opens() {
    for test_db in TestDb::all().await {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path()).await;
        let mut generator = Generator::new(5);
        generate(&store, &mut generator, 600).await;
        let db = test_db.open().await;
        // What migration 0002 did: the same DDL, and its record.
        for projection in [&CustomersProjection as &dyn Projection, &OrdersProjection] {
            let ddl = projection.schema().ddl(db.dialect());
            sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
                .execute(db.pool())
                .await
                .unwrap();
        }
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (2, 'reference views', $1, $2, 0)",
        )
        .bind(true)
        .bind(vec![0u8; 48])
        .execute(db.pool())
        .await
        .unwrap();
        project_all(&store, &db).await;
        let before = dump_views(&db).await;
        assert!(!before.0.is_empty());
        db.close().await;

        let db = test_db.open().await;
        assert_eq!(dump_views(&db).await, before);
        project_all(&store, &db).await;
        assert_eq!(dump_views(&db).await, before);
        db.close().await;
    }
}
