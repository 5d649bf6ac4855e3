//! View table names and shadow tables.
//!
//! Table names only ever come from the closed set a projection declares
//! (checked to be plain lowercase identifiers at registration) plus the fixed
//! [`SHADOW_SUFFIX`]; nothing from a request or an event is put into SQL text.
//!
//! A shadow table is created from its projection's DDL under the shadow's
//! name (see [`crate::schema`]); this module reads and rewrites the heads of
//! those `CREATE` statements, and swaps the shadows in.

use sqlx::AnyConnection;

use crate::error::{Error, Result};

/// Appended to a live table's name to name its shadow during a rebuild.
pub const SHADOW_SUFFIX: &str = "__rebuild";

/// SQLite: appended to a live table's name once a swap replaced it, until
/// it is dropped outside the swap (see [`swap_in`]).
pub const RETIRED_SUFFIX: &str = "__retired";

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
    for suffix in [SHADOW_SUFFIX, RETIRED_SUFFIX] {
        if name.ends_with(suffix) {
            return Err(format!("table name {name:?} must not end with {suffix:?}"));
        }
    }
    if name.len() + SHADOW_SUFFIX.len() > 48 {
        return Err(format!(
            "table name {name:?} is too long (at most 39 bytes)"
        ));
    }
    Ok(())
}

/// SQLite: whether the database has a table of that name.
pub(crate) async fn sqlite_table_exists(conn: &mut AnyConnection, table: &str) -> Result<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1")
            .bind(table.to_owned())
            .fetch_optional(&mut *conn)
            .await?;
    Ok(found.is_some())
}

/// Drops these tables if they exist (and with them their indexes).
pub(crate) async fn drop_tables(conn: &mut AnyConnection, tables: &[String]) -> Result<()> {
    for table in tables {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE IF EXISTS {table}")))
            .execute(&mut *conn)
            .await?;
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

/// The names the live tables are retired under (see [`swap_in`]).
pub(crate) fn retired(live: &TableNames) -> Vec<String> {
    live.iter()
        .map(|(_, table)| format!("{table}{RETIRED_SUFFIX}"))
        .collect()
}

/// Replaces the old tables by the shadows. Runs inside the caller's
/// transaction, which makes the swap atomic for every reader.
///
/// PostgreSQL drops the old tables here. SQLite renames them to their
/// retired names, for [`crate::ViewDb::drop_retired`] to drop after the
/// commit: dropped inside the transaction, every page of a table (which
/// `secure_delete` rewrites) would be copied into the statement journal,
/// which is kept in memory so that the old rows of erased subjects never
/// reach a disk, and holds hundreds of MB for a large view.
pub(crate) async fn swap_in(
    conn: &mut AnyConnection,
    dialect: crate::Dialect,
    live: &TableNames,
    shadows: &TableNames,
) -> Result<()> {
    let retired = retired(live);
    for (((_, live_table), (_, shadow)), retired) in live.iter().zip(shadows.iter()).zip(&retired) {
        let drop = match dialect {
            crate::Dialect::Postgres => format!("DROP TABLE IF EXISTS {live_table}"),
            crate::Dialect::Sqlite => {
                if !sqlite_table_exists(conn, live_table).await? {
                    String::new()
                } else {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP TABLE IF EXISTS {retired}"
                    )))
                    .execute(&mut *conn)
                    .await?;
                    format!("ALTER TABLE {live_table} RENAME TO {retired}")
                }
            }
        };
        if !drop.is_empty() {
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut *conn)
                .await?;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE {shadow} RENAME TO {live_table}"
        )))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A cursor over the head of a `CREATE ...` statement.
struct Scanner<'a> {
    sql: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
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

    /// Consumes `IF NOT EXISTS` if it comes next.
    fn if_not_exists(&mut self) -> Result<()> {
        if self.keyword("IF") && !(self.keyword("NOT") && self.keyword("EXISTS")) {
            return Err(self.unparsable());
        }
        Ok(())
    }

    /// Consumes `[IF NOT EXISTS] <table>`, what follows `CREATE TABLE`;
    /// returns the byte range of the table's name.
    fn table_head(&mut self) -> Result<(usize, usize)> {
        self.if_not_exists()?;
        self.identifier()
    }

    /// Consumes `[UNIQUE] INDEX [IF NOT EXISTS] <index> ON <table>`, what
    /// follows `CREATE` in an index's statement; returns the byte ranges of
    /// the index's name and of the table's.
    fn index_head(&mut self) -> Result<((usize, usize), (usize, usize))> {
        self.keyword("UNIQUE");
        if !self.keyword("INDEX") {
            return Err(self.unparsable());
        }
        self.if_not_exists()?;
        let index = self.identifier()?;
        if !self.keyword("ON") {
            return Err(self.unparsable());
        }
        let table = self.identifier()?;
        Ok((index, table))
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

/// What a `CREATE` statement of a projection's DDL creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Head {
    Table { table: String },
    Index { index: String, table: String },
}

/// Reads the head of `CREATE TABLE [IF NOT EXISTS] <table> ...` or
/// `CREATE [UNIQUE] INDEX [IF NOT EXISTS] <index> ON <table> ...`.
pub(crate) fn statement_head(sql: &str) -> Result<Head> {
    let mut head = Scanner { sql, at: 0 };
    if !head.keyword("CREATE") {
        return Err(head.unparsable());
    }
    if head.keyword("TABLE") {
        let (start, end) = head.table_head()?;
        return Ok(Head::Table {
            table: unquote(&sql[start..end]),
        });
    }
    let ((index_start, index_end), (table_start, table_end)) = head.index_head()?;
    Ok(Head::Index {
        index: unquote(&sql[index_start..index_end]),
        table: unquote(&sql[table_start..table_end]),
    })
}

/// `CREATE TABLE [IF NOT EXISTS] <name> ...` under a new name.
pub(crate) fn rename_table(sql: &str, new_name: &str) -> Result<String> {
    let mut head = Scanner { sql, at: 0 };
    if !(head.keyword("CREATE") && head.keyword("TABLE")) {
        return Err(head.unparsable());
    }
    let (start, end) = head.table_head()?;
    Ok(format!("{}\"{new_name}\"{}", &sql[..start], &sql[end..]))
}

/// `CREATE [UNIQUE] INDEX [IF NOT EXISTS] <index> ON <table> ...` under the
/// index name `new_index`, for the table `new_table`.
pub(crate) fn rename_index(sql: &str, new_index: &str, new_table: &str) -> Result<String> {
    let mut head = Scanner { sql, at: 0 };
    if !head.keyword("CREATE") {
        return Err(head.unparsable());
    }
    let ((index_start, index_end), (table_start, table_end)) = head.index_head()?;
    if new_index.contains('"') || new_table.contains('"') {
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
            rename_table("CREATE TABLE customers (\n id TEXT)", "customers__rebuild").unwrap(),
            "CREATE TABLE \"customers__rebuild\" (\n id TEXT)"
        );
        assert_eq!(
            rename_table("CREATE TABLE \"customers\" (id TEXT)", "x").unwrap(),
            "CREATE TABLE \"x\" (id TEXT)"
        );
        assert_eq!(
            rename_table("create table if not exists [a b](id)", "x").unwrap(),
            "create table if not exists \"x\"(id)"
        );
        assert!(rename_table("CREATE VIEW v AS SELECT 1", "x").is_err());
        assert!(rename_table("CREATE TABLE \"unterminated (id)", "x").is_err());
    }

    #[test]
    fn index_statements_get_a_new_name_and_table() {
        assert_eq!(
            rename_index(
                "CREATE INDEX customers_by_available ON customers (available, id)",
                "customers_by_available__rebuild",
                "customers__rebuild",
            )
            .unwrap(),
            "CREATE INDEX \"customers_by_available__rebuild\" ON \"customers__rebuild\" (available, id)"
        );
        assert_eq!(
            rename_index(
                "CREATE UNIQUE INDEX IF NOT EXISTS u ON t(x) WHERE x > 0",
                "u2",
                "t2"
            )
            .unwrap(),
            "CREATE UNIQUE INDEX IF NOT EXISTS \"u2\" ON \"t2\"(x) WHERE x > 0"
        );
        assert!(rename_index("CREATE INDEX u ON t(x)", "a\"b", "t2").is_err());
        assert!(rename_index("CREATE INDEX u t(x)", "u", "t").is_err());
    }

    #[test]
    fn statement_heads_name_what_they_create() {
        assert_eq!(
            statement_head("CREATE TABLE IF NOT EXISTS \"books\" (id TEXT)").unwrap(),
            Head::Table {
                table: "books".into()
            }
        );
        assert_eq!(
            statement_head("create unique index b1 on books (id)").unwrap(),
            Head::Index {
                index: "b1".into(),
                table: "books".into()
            }
        );
        assert!(statement_head("DROP TABLE books").is_err());
        assert!(statement_head("CREATE TRIGGER t AFTER INSERT ON books BEGIN END").is_err());
    }

    #[test]
    fn declared_table_names_are_checked() {
        assert!(check_table_name("customers").is_ok());
        assert!(check_table_name("_x1").is_ok());
        for bad in [
            "",
            "Accounts",
            "1x",
            "a-b",
            "a;drop",
            "x__rebuild",
            "x__retired",
            &"x".repeat(40),
        ] {
            assert!(check_table_name(bad).is_err(), "{bad}");
        }
    }
}
