//! The store's tables, created and brought up to date in their own schema
//! when a store connects. Steps are numbered and applied once, under an
//! advisory lock, so that processes starting together do not race.

use event_store::{Error, Result};
// Every dynamic statement names only the store's schema, checked by
// `schema::check_name` to be a plain identifier.
use sqlx::AssertSqlSafe;
use sqlx::PgPool;

use crate::chunks;
use crate::shared::pg_error;

/// Each step's statements; `{s}` is the schema. Never edit a step that
/// shipped: add one.
const STEPS: &[&str] = &[
    r#"
CREATE TABLE {s}.events (
    position       bigint PRIMARY KEY,
    stream_id      text NOT NULL,
    version        bigint NOT NULL,
    event_id       uuid NOT NULL,
    event_type     text NOT NULL,
    schema_version integer NOT NULL,
    recorded_at    bigint NOT NULL,
    data           bytea NOT NULL,
    metadata       bytea NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE {s}.streams (
    stream_id     text PRIMARY KEY,
    version       bigint NOT NULL,
    last_position bigint NOT NULL
);
CREATE TABLE {s}.head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    position bigint NOT NULL
);
INSERT INTO {s}.head (position) VALUES (0);
CREATE TABLE {s}.snapshots (
    stream_id      text PRIMARY KEY,
    version        bigint NOT NULL,
    schema_version integer NOT NULL,
    recorded_at    bigint NOT NULL,
    state          bytea NOT NULL
);
"#,
    r#"
CREATE TABLE {s}.subject_keys (
    subject    text PRIMARY KEY,
    key        bytea CHECK (key IS NULL OR octet_length(key) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    erased_at  timestamptz,
    CHECK ((key IS NULL) = (erased_at IS NOT NULL))
);
"#,
    // `{pack}` and `{span}` are `chunks::PACK` and one less than
    // `chunks::CHUNK_EVENTS`: a new packing needs a step of its own that
    // rewrites the chunks.
    r#"
CREATE TABLE {s}.chunks (
    stream_id    text NOT NULL,
    last_version bigint NOT NULL CHECK (last_version > 0),
    events       bytea NOT NULL,
    PRIMARY KEY (stream_id, last_version)
);
-- Compressed in the row while it fits a page: a load then reads one page
-- per chunk instead of looking each up in the TOAST table.
ALTER TABLE {s}.chunks ALTER COLUMN events SET STORAGE MAIN;
DO $$
BEGIN
    -- lz4 unpacks several times faster than the default pglz, where the
    -- server was built with it.
    IF 'lz4' = ANY (SELECT unnest(enumvals) FROM pg_settings
                    WHERE name = 'default_toast_compression') THEN
        ALTER TABLE {s}.chunks ALTER COLUMN events SET COMPRESSION lz4;
    END IF;
END
$$;
INSERT INTO {s}.chunks (stream_id, last_version, events)
SELECT stream_id, max(version), string_agg({pack}, ''::bytea ORDER BY version)
FROM {s}.events
GROUP BY stream_id, (version - 1) / ({span} + 1)
HAVING count(*) = {span} + 1;
"#,
];

/// A schema name annals accepts: lowercase letters, digits and `_`, not
/// starting with a digit, at most 63 bytes (so it needs no quoting).
pub(crate) fn check_name(schema: &str) -> Result<()> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidOptions(format!(
            "PostgreSQL schema name {schema:?}: use lowercase letters, digits and _ (not first), at most 63"
        )))
    }
}

/// Creates the schema and applies the steps it lacks.
pub(crate) async fn migrate(pool: &PgPool, schema: &str) -> Result<()> {
    let mut tx = pool.begin().await.map_err(pg_error)?;
    // One process migrates at a time; the others find it done.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("annals-migrate-{schema}"))
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.migrations (step integer PRIMARY KEY)"
    )))
    .execute(&mut *tx)
    .await
    .map_err(pg_error)?;
    let done: Option<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT max(step) FROM {schema}.migrations"
    )))
    .fetch_one(&mut *tx)
    .await
    .map_err(pg_error)?;
    let done = done.unwrap_or(0);
    let known = STEPS.len() as i32;
    if done > known {
        return Err(Error::InvalidOptions(format!(
            "the PostgreSQL schema {schema} is at step {done} of its migrations; this build knows {known}: use a newer annals"
        )));
    }
    for (i, step) in STEPS.iter().enumerate().skip(done as usize) {
        let step = step
            .replace("{s}", schema)
            .replace("{pack}", chunks::PACK)
            .replace("{span}", &(chunks::CHUNK_EVENTS - 1).to_string());
        sqlx::raw_sql(AssertSqlSafe(step))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {schema}.migrations (step) VALUES ($1)"
        )))
        .bind(i as i32 + 1)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn schema_names_need_no_quoting() {
        for good in ["annals", "tenant_7", "_x"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(64);
        for bad in ["", "Annals", "7up", "a-b", "a;drop", "a b", long.as_str()] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
