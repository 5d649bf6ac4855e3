//! SQL shared by the reference projections: loading the rows a batch
//! touches and writing them back in multi-row upserts.
//!
//! Statements are built for row counts that are powers of two, so a
//! connection prepares (and caches) about a dozen shapes per table instead
//! of one per batch size.
//!
//! Placeholders follow the dialect: `$1, $2, ...` on PostgreSQL, anonymous
//! `?` on SQLite. SQLite looks a numbered parameter up by walking a list of
//! every parameter name of the statement, both when it parses one and when
//! the driver asks for its name before binding it, so a statement of 8,192
//! `$n` parameters costs tens of millions of steps per execution; anonymous
//! ones have no name to look up and bind in their order of appearance.

use projector::sqlx;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use projector::Dialect;

/// Rows per statement at most: 16 columns × 512 rows stays far below the
/// bind-parameter limits of SQLite (32,766) and PostgreSQL (65,535).
pub const ROWS_PER_STATEMENT_MAX: usize = 512;

/// Splits `n` into powers of two, largest first, each at most `max`.
pub fn chunk_sizes(mut n: usize, max: usize) -> Vec<usize> {
    let mut out = Vec::new();
    while n > 0 {
        let mut size = max.min(n).next_power_of_two();
        if size > n || size > max {
            size /= 2;
        }
        out.push(size);
        n -= size;
    }
    out
}

/// Appends the placeholder of the `n`th parameter (from 1).
fn push_placeholder(sql: &mut String, dialect: Dialect, n: usize) {
    match dialect {
        Dialect::Sqlite => sql.push('?'),
        Dialect::Postgres => {
            sql.push('$');
            sql.push_str(&n.to_string());
        }
    }
}

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` values.
fn values_list(dialect: Dialect, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            n += 1;
            push_placeholder(&mut sql, dialect, n);
        }
        sql.push(')');
    }
    sql
}

/// `SELECT <columns> FROM <table> WHERE id IN (...)` for `rows` ids.
pub fn select_by_ids(dialect: Dialect, table: &str, columns: &[&str], rows: usize) -> String {
    let mut placeholders = String::with_capacity(rows * 5);
    for i in 1..=rows {
        if i > 1 {
            placeholders.push_str(", ");
        }
        push_placeholder(&mut placeholders, dialect, i);
    }
    format!(
        "SELECT {} FROM {table} WHERE id IN ({placeholders})",
        columns.join(", ")
    )
}

/// A multi-row `INSERT ... ON CONFLICT (id) DO UPDATE` of every column but
/// `id` and the `fixed` ones: columns a row keeps from its insert on. SQLite
/// updates an index whenever one of its columns is assigned, even to the
/// value it has, so leaving them out spares those indexes a delete and an
/// insert per row.
pub fn upsert(
    dialect: Dialect,
    table: &str,
    columns: &[&str],
    fixed: &[&str],
    rows: usize,
) -> String {
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| **c != "id" && !fixed.contains(c))
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO {table} ({}) VALUES {} ON CONFLICT (id) DO UPDATE SET {}",
        columns.join(", "),
        values_list(dialect, rows, columns.len()),
        updates.join(", ")
    )
}

/// `UPDATE table SET a = $1, b = $2 WHERE id = $3`.
pub fn update_by_id(dialect: Dialect, table: &str, columns: &[&str]) -> String {
    let mut sql = format!("UPDATE {table} SET ");
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(column);
        sql.push_str(" = ");
        push_placeholder(&mut sql, dialect, i + 1);
    }
    sql.push_str(" WHERE id = ");
    push_placeholder(&mut sql, dialect, columns.len() + 1);
    sql
}

/// Loads the rows with these ids (those that exist).
pub async fn load_by_ids(
    conn: &mut AnyConnection,
    dialect: Dialect,
    table: &str,
    columns: &[&str],
    ids: &[&str],
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let mut rows = Vec::with_capacity(ids.len());
    let mut rest = ids;
    for size in chunk_sizes(ids.len(), ROWS_PER_STATEMENT_MAX) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let sql = select_by_ids(dialect, table, columns, size);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(*id);
        }
        rows.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_that_add_up() {
        for n in 0..2_000 {
            let sizes = chunk_sizes(n, ROWS_PER_STATEMENT_MAX);
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes.iter().all(|s| s.is_power_of_two() && *s <= 512));
            assert!(sizes.windows(2).all(|w| w[0] >= w[1]));
        }
        assert_eq!(chunk_sizes(600, 512), vec![512, 64, 16, 8]);
    }

    #[test]
    fn statements_have_one_placeholder_per_value() {
        assert_eq!(
            upsert(Dialect::Postgres, "t", &["id", "a"], &[], 2),
            "INSERT INTO t (id, a) VALUES ($1, $2), ($3, $4) ON CONFLICT (id) DO UPDATE SET a = excluded.a"
        );
        assert_eq!(
            select_by_ids(Dialect::Postgres, "t", &["id", "a"], 3),
            "SELECT id, a FROM t WHERE id IN ($1, $2, $3)"
        );
        assert_eq!(
            upsert(Dialect::Sqlite, "t", &["id", "a"], &[], 2),
            "INSERT INTO t (id, a) VALUES (?, ?), (?, ?) ON CONFLICT (id) DO UPDATE SET a = excluded.a"
        );
        assert_eq!(
            upsert(Dialect::Postgres, "t", &["id", "a", "b", "c"], &["b"], 1),
            "INSERT INTO t (id, a, b, c) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET a = excluded.a, c = excluded.c"
        );
        assert_eq!(
            select_by_ids(Dialect::Sqlite, "t", &["id", "a"], 3),
            "SELECT id, a FROM t WHERE id IN (?, ?, ?)"
        );
    }
}
