//! View table names and shadow tables.
//!
//! Table names only ever come from the closed set a projection declares
//! (checked to be plain lowercase identifiers at registration) plus the fixed
//! [`SHADOW_SUFFIX`]; nothing from a request or an event is put into SQL text.
//!
//! A shadow table is a structural copy of its live table, taken from the
//! database catalog so that the migrations stay the one source of the
//! schema: PostgreSQL copies it with `LIKE ... INCLUDING ALL`; SQLite has no
//! such statement, so the stored `CREATE TABLE` / `CREATE INDEX` texts are
//! re-issued under the shadow's names. SQLite index names are schema-wide,
//! so they alternate between `<name>` and `<name>__rebuild` from one rebuild
//! to the next.

use sqlx::AnyConnection;
use sqlx::Row;

use crate::db::Dialect;
use crate::error::{Error, Result};

/// Appended to a live table's name to name its shadow during a rebuild.
pub const SHADOW_SUFFIX: &str = "__rebuild";

/// The actual names of a projection's tables for one track: declared name →
/// table to write.
#[derive(Debug, Clone)]
pub(crate) struct TableNames {
    pairs: Vec<(&'static str, String)>,
}

impl TableNames {
    pub fn live(declared: &[&'static str]) -> Self {
        Self {
            pairs: declared.iter().map(|t| (*t, (*t).to_owned())).collect(),
        }
    }

    pub fn shadow(declared: &[&'static str]) -> Self {
        Self {
            pairs: declared
                .iter()
                .map(|t| (*t, format!("{t}{SHADOW_SUFFIX}")))
                .collect(),
        }
    }

    pub fn get(&self, declared: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(d, _)| *d == declared)
            .map(|(_, actual)| actual.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.pairs.iter().map(|(d, a)| (*d, a.as_str()))
    }
}

/// Checks a declared table name: it is put into SQL text, so it must be a
/// plain identifier, and it must leave room for the shadow suffix within
/// PostgreSQL's 63-byte limit.
pub(crate) fn check_table_name(name: &str) -> std::result::Result<(), String> {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain {
        return Err(format!(
            "table name {name:?} must be lowercase ASCII letters, digits and _, not starting with a digit"
        ));
    }
    if name.ends_with(SHADOW_SUFFIX) {
        return Err(format!(
            "table name {name:?} must not end with {SHADOW_SUFFIX:?}"
        ));
    }
    if name.len() + SHADOW_SUFFIX.len() > 48 {
        return Err(format!(
            "table name {name:?} is too long (at most 39 bytes)"
        ));
    }
    Ok(())
}

/// Drops the shadow tables of a projection (and with them their indexes).
pub(crate) async fn drop_shadows(conn: &mut AnyConnection, shadows: &TableNames) -> Result<()> {
    for (_, table) in shadows.iter() {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Creates empty shadow tables with the structure of the live ones.
pub(crate) async fn create_shadows(
    conn: &mut AnyConnection,
    dialect: Dialect,
    live: &TableNames,
    shadows: &TableNames,
) -> Result<()> {
    for ((_, live_table), (_, shadow)) in live.iter().zip(shadows.iter()) {
        match dialect {
            Dialect::Postgres => {
                let exists: bool = sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM pg_catalog.pg_class c \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relname = $1 AND c.relkind = 'r' AND n.nspname = current_schema()",
                )
                .bind(live_table)
                .fetch_one(&mut *conn)
                .await?
                    > 0;
                if !exists {
                    return Err(missing_table(live_table));
                }
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "CREATE TABLE {shadow} (LIKE {live_table} INCLUDING ALL)"
                )))
                .execute(&mut *conn)
                .await?;
            }
            Dialect::Sqlite => {
                let rows = sqlx::query(
                    "SELECT type, name, sql FROM sqlite_schema \
                     WHERE tbl_name = $1 AND sql IS NOT NULL \
                     ORDER BY CASE type WHEN 'table' THEN 0 ELSE 1 END, name",
                )
                .bind(live_table)
                .fetch_all(&mut *conn)
                .await?;
                if !rows.iter().any(|r| r.get::<String, _>(0) == "table") {
                    return Err(missing_table(live_table));
                }
                for row in rows {
                    let kind: String = row.try_get(0)?;
                    let sql: String = row.try_get(2)?;
                    let ddl = match kind.as_str() {
                        "table" => rename_sqlite_table(&sql, shadow)?,
                        "index" => rename_sqlite_index(&sql, shadow)?,
                        // Triggers and views on view tables are not part of
                        // the model; refuse rather than half-copy.
                        other => {
                            return Err(Error::Schema(format!(
                                "{live_table} has a {other}, which a rebuild cannot copy"
                            )));
                        }
                    };
                    sqlx::query(sqlx::AssertSqlSafe(ddl))
                        .execute(&mut *conn)
                        .await?;
                }
            }
        }
    }
    Ok(())
}

fn missing_table(table: &str) -> Error {
    Error::Schema(format!(
        "table {table} does not exist; a projection's tables are created by a migration in migrations/<backend>/"
    ))
}

/// Replaces the old tables by the shadows: drop, rename. Runs inside the
/// caller's transaction, which makes the swap atomic for every reader.
pub(crate) async fn swap_in(
    conn: &mut AnyConnection,
    live: &TableNames,
    shadows: &TableNames,
) -> Result<()> {
    for ((_, live_table), (_, shadow)) in live.iter().zip(shadows.iter()) {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {live_table}")))
            .execute(&mut *conn)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {shadow} RENAME TO {live_table}"
        )))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A cursor over the head of a `CREATE ...` statement.
struct Head<'a> {
    sql: &'a str,
    at: usize,
}

impl<'a> Head<'a> {
    fn skip_space(&mut self) {
        while let Some(c) = self.sql[self.at..].chars().next() {
            if c.is_whitespace() {
                self.at += c.len_utf8();
            } else {
                break;
            }
        }
    }

    /// Consumes a keyword (case-insensitive) if it comes next.
    fn keyword(&mut self, word: &str) -> bool {
        self.skip_space();
        let rest = &self.sql[self.at..];
        let matches = rest.len() >= word.len()
            && rest.is_char_boundary(word.len())
            && rest[..word.len()].eq_ignore_ascii_case(word)
            && !rest[word.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if matches {
            self.at += word.len();
        }
        matches
    }

    /// Consumes an identifier (bare or quoted); returns its byte range.
    fn identifier(&mut self) -> Result<(usize, usize)> {
        self.skip_space();
        let start = self.at;
        let rest = &self.sql[start..];
        let close = match rest.chars().next() {
            Some('"') => Some('"'),
            Some('`') => Some('`'),
            Some('[') => Some(']'),
            _ => None,
        };
        let len = match close {
            Some(close) => {
                // Doubled quotes inside a quoted name stand for one quote.
                let mut i = 1;
                loop {
                    match rest[i..].find(close) {
                        Some(j) => {
                            let end = i + j + 1;
                            if close != ']' && rest[end..].starts_with(close) {
                                i = end + 1;
                            } else {
                                break end;
                            }
                        }
                        None => return Err(self.unparsable()),
                    }
                }
            }
            None => rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
                .unwrap_or(rest.len()),
        };
        if len == 0 {
            return Err(self.unparsable());
        }
        self.at = start + len;
        Ok((start, start + len))
    }

    fn unparsable(&self) -> Error {
        Error::Schema(format!(
            "cannot copy the schema statement {:?}",
            self.sql.chars().take(120).collect::<String>()
        ))
    }
}

/// Unquotes an identifier as SQLite stores it.
fn unquote(raw: &str) -> String {
    let mut chars = raw.chars();
    match chars.next() {
        Some('"') => raw[1..raw.len() - 1].replace("\"\"", "\""),
        Some('`') => raw[1..raw.len() - 1].replace("``", "`"),
        Some('[') => raw[1..raw.len() - 1].to_owned(),
        _ => raw.to_owned(),
    }
}

/// `CREATE TABLE [IF NOT EXISTS] <name> ...` under a new name.
pub(crate) fn rename_sqlite_table(sql: &str, new_name: &str) -> Result<String> {
    let mut head = Head { sql, at: 0 };
    if !(head.keyword("CREATE") && head.keyword("TABLE")) {
        return Err(head.unparsable());
    }
    if head.keyword("IF") && !(head.keyword("NOT") && head.keyword("EXISTS")) {
        return Err(head.unparsable());
    }
    let (start, end) = head.identifier()?;
    Ok(format!("{}\"{new_name}\"{}", &sql[..start], &sql[end..]))
}

/// `CREATE [UNIQUE] INDEX [IF NOT EXISTS] <index> ON <table> ...` for the
/// table `new_table`, with the index name toggled between `<name>` and
/// `<name>__rebuild` so that it does not collide with the live index.
pub(crate) fn rename_sqlite_index(sql: &str, new_table: &str) -> Result<String> {
    let mut head = Head { sql, at: 0 };
    if !head.keyword("CREATE") {
        return Err(head.unparsable());
    }
    head.keyword("UNIQUE");
    if !head.keyword("INDEX") {
        return Err(head.unparsable());
    }
    if head.keyword("IF") && !(head.keyword("NOT") && head.keyword("EXISTS")) {
        return Err(head.unparsable());
    }
    let (index_start, index_end) = head.identifier()?;
    if !head.keyword("ON") {
        return Err(head.unparsable());
    }
    let (table_start, table_end) = head.identifier()?;
    let index = unquote(&sql[index_start..index_end]);
    let new_index = match index.strip_suffix(SHADOW_SUFFIX) {
        Some(base) => base.to_owned(),
        None => format!("{index}{SHADOW_SUFFIX}"),
    };
    if new_index.contains('"') {
        return Err(head.unparsable());
    }
    Ok(format!(
        "{}\"{new_index}\"{}\"{new_table}\"{}",
        &sql[..index_start],
        &sql[index_end..table_start],
        &sql[table_end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_statements_are_renamed_bare_or_quoted() {
        assert_eq!(
            rename_sqlite_table("CREATE TABLE customers (\n id TEXT)", "customers__rebuild")
                .unwrap(),
            "CREATE TABLE \"customers__rebuild\" (\n id TEXT)"
        );
        // SQLite quotes the name when ALTER TABLE ... RENAME rewrote it.
        assert_eq!(
            rename_sqlite_table("CREATE TABLE \"customers\" (id TEXT)", "x").unwrap(),
            "CREATE TABLE \"x\" (id TEXT)"
        );
        assert_eq!(
            rename_sqlite_table("create table if not exists [a b](id)", "x").unwrap(),
            "create table if not exists \"x\"(id)"
        );
        assert!(rename_sqlite_table("CREATE VIEW v AS SELECT 1", "x").is_err());
        assert!(rename_sqlite_table("CREATE TABLE \"unterminated (id)", "x").is_err());
    }

    #[test]
    fn index_names_alternate_and_point_at_the_new_table() {
        let first = rename_sqlite_index(
            "CREATE INDEX customers_by_available ON customers (available, id)",
            "customers__rebuild",
        )
        .unwrap();
        assert_eq!(
            first,
            "CREATE INDEX \"customers_by_available__rebuild\" ON \"customers__rebuild\" (available, id)"
        );
        // After the swap SQLite stores the renamed table quoted; the next
        // rebuild toggles the index name back.
        let second = rename_sqlite_index(
            "CREATE INDEX \"customers_by_available__rebuild\" ON \"customers\" (available, id)",
            "customers__rebuild",
        )
        .unwrap();
        assert_eq!(
            second,
            "CREATE INDEX \"customers_by_available\" ON \"customers__rebuild\" (available, id)"
        );
        // A name with a quote in it is refused rather than re-quoted.
        assert!(
            rename_sqlite_index(
                "CREATE UNIQUE INDEX IF NOT EXISTS \"a\"\"b\" ON t(x) WHERE x > 0",
                "t2"
            )
            .unwrap_err()
            .to_string()
            .contains("cannot copy")
        );
        assert_eq!(
            rename_sqlite_index("CREATE UNIQUE INDEX u ON t(x) WHERE x > 0", "t2").unwrap(),
            "CREATE UNIQUE INDEX \"u__rebuild\" ON \"t2\"(x) WHERE x > 0"
        );
    }

    #[test]
    fn declared_table_names_are_checked() {
        assert!(check_table_name("customers").is_ok());
        assert!(check_table_name("_x1").is_ok());
        for bad in [
            "",
            "Customers",
            "1x",
            "a-b",
            "a;drop",
            "x__rebuild",
            &"x".repeat(40),
        ] {
            assert!(check_table_name(bad).is_err(), "{bad}");
        }
    }
}
