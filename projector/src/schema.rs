//! The tables a projection owns, as it declares them: its DDL, one text
//! per SQL dialect, and what the projector does with it.
//!
//! A projection's DDL is a list of `CREATE TABLE` and `CREATE [UNIQUE]
//! INDEX` statements separated by `;` (with `--` comments), on its declared
//! tables only, written with the live table names. The projector
//!
//! - creates, at start, every declared table that does not exist yet, with
//!   its indexes ([`create_missing`]). A table that exists is left as it is:
//!   its shape is the one the version that filled it declared, and only a
//!   rebuild replaces it. That is why a change of the DDL must come with a
//!   new [`Projection::version`](crate::Projection::version): the rebuild it
//!   starts creates the new shape in the shadow tables, and the swap puts
//!   it in place of the old one;
//! - creates the shadow tables of a rebuild from the same statements, under
//!   the shadow names ([`create_shadows`]).
//!
//! Index names are schema-wide in both dialects, so the index of a shadow
//! cannot take the name of its live twin: each index is created under its
//! declared name or that name with [`SHADOW_SUFFIX`], whichever is free.
//! The names thus alternate from one rebuild to the next.

use sqlx::AnyConnection;

use crate::db::Dialect;
use crate::error::{Error, Result};
use crate::tables::{self, SHADOW_SUFFIX, TableNames};

/// The DDL of a projection's tables, in each dialect the view database
/// speaks. Usually two files beside the projection:
///
/// ```
/// use projector::Schema;
///
/// const BOOKS: Schema = Schema::new(
///     "CREATE TABLE books (id TEXT NOT NULL PRIMARY KEY, title TEXT NOT NULL) WITHOUT ROWID;
///      CREATE INDEX books_by_title ON books (title, id);",
///     "CREATE TABLE books (id TEXT COLLATE \"C\" NOT NULL PRIMARY KEY, title TEXT NOT NULL);
///      CREATE INDEX books_by_title ON books (title, id);",
/// );
/// assert!(BOOKS.ddl(projector::Dialect::Sqlite).contains("WITHOUT ROWID"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    sqlite: &'static str,
    postgres: &'static str,
    indexes_after_load: bool,
}

impl Schema {
    /// The DDL for SQLite and for PostgreSQL (e.g. `include_str!` of two
    /// files).
    pub const fn new(sqlite: &'static str, postgres: &'static str) -> Self {
        Self {
            sqlite,
            postgres,
            indexes_after_load: false,
        }
    }

    /// A rebuild creates the shadow tables without their non-unique
    /// indexes and builds those once the shadows have caught up, just
    /// before the swap: both databases build an index over a filled
    /// table by sorting it, several times faster than they maintain it
    /// row by row (a million `customers` rows into SQLite: about 3×).
    ///
    /// Only for a projection whose handler finds its rows by their key
    /// (or a unique index, which is always created with the table): a
    /// handler that looks rows up through one of the deferred indexes
    /// would scan the whole shadow table instead, for every lookup.
    pub const fn indexes_after_load(mut self) -> Self {
        self.indexes_after_load = true;
        self
    }

    /// The DDL for one dialect.
    pub fn ddl(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => self.sqlite,
            Dialect::Postgres => self.postgres,
        }
    }
}

/// One statement of a projection's DDL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Statement {
    Table {
        table: String,
        sql: String,
    },
    Index {
        index: String,
        table: String,
        sql: String,
    },
}

impl Statement {
    fn table(&self) -> &str {
        match self {
            Statement::Table { table, .. } | Statement::Index { table, .. } => table,
        }
    }
}

/// A projection's DDL, checked and split, for both dialects.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    sqlite: Vec<Statement>,
    postgres: Vec<Statement>,
    indexes_after_load: bool,
}

impl Parsed {
    /// Checks `schema` against the declared tables: every statement creates
    /// one of them or an index on one of them, and each is created.
    pub fn new(schema: Schema, declared: &[&'static str]) -> std::result::Result<Self, String> {
        let check = |dialect: Dialect| -> std::result::Result<Vec<Statement>, String> {
            let statements = parse(schema.ddl(dialect))
                .map_err(|e| format!("{} schema: {e}", dialect.as_str()))?;
            for statement in &statements {
                if !declared.contains(&statement.table()) {
                    return Err(format!(
                        "{} schema: table {:?} is not one of the projection's tables",
                        dialect.as_str(),
                        statement.table()
                    ));
                }
                if let Statement::Index { index, .. } = statement {
                    tables::check_table_name(index)
                        .map_err(|e| format!("{} schema: index {e}", dialect.as_str()))?;
                }
                if let Statement::Table { table, sql } = statement
                    && references_another_table(sql)
                {
                    return Err(format!(
                        "{} schema: table {table} declares a foreign key; a view's tables are \
                         rebuilt and swapped in one by one, so they cannot reference each other",
                        dialect.as_str()
                    ));
                }
            }
            for table in declared {
                let created = statements
                    .iter()
                    .filter(|s| matches!(s, Statement::Table { table: t, .. } if t == table))
                    .count();
                if created != 1 {
                    return Err(format!(
                        "{} schema: table {table} must be created once, not {created} times",
                        dialect.as_str()
                    ));
                }
            }
            Ok(statements)
        };
        Ok(Self {
            sqlite: check(Dialect::Sqlite)?,
            postgres: check(Dialect::Postgres)?,
            indexes_after_load: schema.indexes_after_load,
        })
    }

    fn statements(&self, dialect: Dialect) -> &[Statement] {
        match dialect {
            Dialect::Sqlite => &self.sqlite,
            Dialect::Postgres => &self.postgres,
        }
    }

    /// Whether a rebuild creates `statement` only once the shadows are
    /// filled (see [`Schema::indexes_after_load`]).
    fn after_load(&self, statement: &Statement) -> bool {
        self.indexes_after_load
            && matches!(statement, Statement::Index { sql, .. } if !is_unique_index(sql))
    }
}

/// Whether a `CREATE TABLE` statement declares a foreign key (`REFERENCES`,
/// as a word outside quotes).
fn references_another_table(sql: &str) -> bool {
    let mut quoted: Option<char> = None;
    let mut word = String::new();
    for c in sql.chars().chain(std::iter::once(' ')) {
        match quoted {
            Some(q) if c == q => quoted = None,
            Some(_) => {}
            None if c == '\'' || c == '"' || c == '`' => {
                quoted = Some(c);
                word.clear();
            }
            None if c.is_ascii_alphanumeric() || c == '_' => word.push(c),
            None => {
                if word.eq_ignore_ascii_case("REFERENCES") {
                    return true;
                }
                word.clear();
            }
        }
    }
    false
}

/// Whether `sql` (`CREATE [UNIQUE] INDEX ...`) creates a unique index.
fn is_unique_index(sql: &str) -> bool {
    sql.split_whitespace()
        .nth(1)
        .is_some_and(|word| word.eq_ignore_ascii_case("UNIQUE"))
}

/// Splits DDL into statements: `;` ends one, outside quotes; `--` starts a
/// comment up to the end of the line.
fn split(ddl: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = ddl.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                current.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    current.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            current.push('\n');
                            break;
                        }
                    }
                }
                ';' => statements.push(std::mem::take(&mut current)),
                c => current.push(c),
            },
        }
    }
    statements.push(current);
    statements
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn parse(ddl: &str) -> std::result::Result<Vec<Statement>, String> {
    split(ddl)
        .into_iter()
        .map(|sql| {
            let head = tables::statement_head(&sql).map_err(|e| e.to_string())?;
            Ok(match head {
                tables::Head::Table { table } => Statement::Table { table, sql },
                tables::Head::Index { index, table } => Statement::Index { index, table, sql },
            })
        })
        .collect()
}

/// Creates every declared table that does not exist, with its indexes.
pub(crate) async fn create_missing(
    conn: &mut AnyConnection,
    dialect: Dialect,
    schema: &Parsed,
) -> Result<()> {
    let statements = schema.statements(dialect);
    let mut missing = Vec::new();
    for statement in statements {
        if let Statement::Table { table, .. } = statement
            && !table_exists(conn, dialect, table).await?
        {
            missing.push(table.as_str());
        }
    }
    for statement in statements {
        if missing.contains(&statement.table()) {
            create(conn, dialect, statement, statement.table()).await?;
        }
    }
    Ok(())
}

/// Creates the (dropped) shadow tables of a rebuild from the DDL, without
/// the indexes built after the load.
pub(crate) async fn create_shadows(
    conn: &mut AnyConnection,
    dialect: Dialect,
    schema: &Parsed,
    shadows: &TableNames,
) -> Result<()> {
    for statement in schema.statements(dialect) {
        if !schema.after_load(statement) {
            create(conn, dialect, statement, shadow_of(shadows, statement)?).await?;
        }
    }
    Ok(())
}

/// Creates the indexes of the filled shadow tables that
/// [`create_shadows`] left for after the load, unless they exist (a
/// rebuild that resumed, or whose swap was postponed, made them before).
pub(crate) async fn index_shadows(
    conn: &mut AnyConnection,
    dialect: Dialect,
    schema: &Parsed,
    shadows: &TableNames,
) -> Result<()> {
    for statement in schema.statements(dialect) {
        let Statement::Index { index, .. } = statement else {
            continue;
        };
        if !schema.after_load(statement) {
            continue;
        }
        let shadow = shadow_of(shadows, statement)?;
        let toggled = format!("{index}{SHADOW_SUFFIX}");
        if index_on(conn, dialect, index, shadow).await?
            || index_on(conn, dialect, &toggled, shadow).await?
        {
            continue;
        }
        create(conn, dialect, statement, shadow).await?;
    }
    Ok(())
}

fn shadow_of<'a>(shadows: &'a TableNames, statement: &Statement) -> Result<&'a str> {
    shadows
        .get(statement.table())
        .ok_or_else(|| Error::Schema(format!("table {} has no shadow", statement.table())))
}

/// Runs one statement for the table `table` (the declared one or its
/// shadow), under a free index name.
async fn create(
    conn: &mut AnyConnection,
    dialect: Dialect,
    statement: &Statement,
    table: &str,
) -> Result<()> {
    let sql = match statement {
        Statement::Table { sql, .. } => tables::rename_table(sql, table)?,
        Statement::Index { index, sql, .. } => {
            let toggled = format!("{index}{SHADOW_SUFFIX}");
            let name = if !relation_exists(conn, dialect, index).await? {
                index.clone()
            } else if !relation_exists(conn, dialect, &toggled).await? {
                toggled
            } else {
                return Err(Error::Schema(format!(
                    "index {index} and {toggled} both exist; drop the one not on {table}"
                )));
            };
            tables::rename_index(sql, &name, table)?
        }
    };
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) async fn table_exists(
    conn: &mut AnyConnection,
    dialect: Dialect,
    table: &str,
) -> Result<bool> {
    let sql = match dialect {
        Dialect::Sqlite => "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = $1",
        Dialect::Postgres => {
            "SELECT COUNT(*) FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND c.relkind = 'r' AND n.nspname = current_schema()"
        }
    };
    let count: i64 = sqlx::query_scalar(sql)
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
    Ok(count > 0)
}

/// Whether the index `index` exists on `table`.
async fn index_on(
    conn: &mut AnyConnection,
    dialect: Dialect,
    index: &str,
    table: &str,
) -> Result<bool> {
    let sql = match dialect {
        Dialect::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND name = $1 AND tbl_name = $2"
        }
        Dialect::Postgres => {
            "SELECT COUNT(*) FROM pg_catalog.pg_indexes \
             WHERE indexname = $1 AND tablename = $2 AND schemaname = current_schema()"
        }
    };
    let count: i64 = sqlx::query_scalar(sql)
        .bind(index)
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
    Ok(count > 0)
}

/// Whether a name is taken by a table or index (one namespace for both in
/// PostgreSQL; index names are schema-wide in SQLite).
async fn relation_exists(conn: &mut AnyConnection, dialect: Dialect, name: &str) -> Result<bool> {
    let sql = match dialect {
        Dialect::Sqlite => "SELECT COUNT(*) FROM sqlite_schema WHERE name = $1",
        Dialect::Postgres => {
            "SELECT COUNT(*) FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND n.nspname = current_schema()"
        }
    };
    let count: i64 = sqlx::query_scalar(sql)
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    Ok(count > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DDL: &str = "-- books; one row a book\n\
        CREATE TABLE books (id TEXT PRIMARY KEY, title TEXT DEFAULT 'a;b');\n\
        CREATE INDEX IF NOT EXISTS books_by_title ON books (title, id); -- why\n\
        CREATE UNIQUE INDEX books_one ON books (id);";

    #[test]
    fn ddl_splits_into_statements_outside_quotes_and_comments() {
        let statements = parse(DDL).unwrap();
        assert_eq!(statements.len(), 3, "{statements:?}");
        assert_eq!(
            statements[0],
            Statement::Table {
                table: "books".into(),
                sql: "CREATE TABLE books (id TEXT PRIMARY KEY, title TEXT DEFAULT 'a;b')".into()
            }
        );
        assert!(matches!(
            &statements[1],
            Statement::Index { index, table, .. } if index == "books_by_title" && table == "books"
        ));
        assert!(matches!(&statements[2], Statement::Index { index, .. } if index == "books_one"));
    }

    #[test]
    fn only_non_unique_indexes_wait_for_the_load_and_only_when_asked() {
        let eager = Parsed::new(Schema::new(DDL, DDL), &["books"]).unwrap();
        let deferring =
            Parsed::new(Schema::new(DDL, DDL).indexes_after_load(), &["books"]).unwrap();
        let after_load = |parsed: &Parsed| -> Vec<bool> {
            parsed
                .statements(Dialect::Sqlite)
                .iter()
                .map(|s| parsed.after_load(s))
                .collect()
        };
        assert_eq!(after_load(&eager), [false, false, false]);
        // The table, `books_by_title`, the unique `books_one`.
        assert_eq!(after_load(&deferring), [false, true, false]);
        assert!(is_unique_index("create  unique index u on t (a)"));
        assert!(!is_unique_index("CREATE INDEX unique_names ON t (a)"));
    }

    #[test]
    fn a_schema_creates_exactly_the_declared_tables() {
        let ok = Schema::new(DDL, DDL);
        assert!(Parsed::new(ok, &["books"]).is_ok());
        let missing = Parsed::new(ok, &["books", "authors"]).unwrap_err();
        assert!(missing.contains("authors"), "{missing}");
        let foreign = Schema::new(DDL, "CREATE TABLE other (id TEXT)");
        assert!(
            Parsed::new(foreign, &["books"])
                .unwrap_err()
                .contains("postgres")
        );
        let twice = Schema::new(
            "CREATE TABLE books (a INT); CREATE TABLE books (b INT)",
            DDL,
        );
        assert!(Parsed::new(twice, &["books"]).is_err());
        let view = Schema::new("CREATE VIEW books AS SELECT 1", DDL);
        assert!(Parsed::new(view, &["books"]).is_err());
    }

    #[test]
    fn foreign_keys_between_view_tables_are_refused() {
        let ddl = "CREATE TABLE authors (id TEXT PRIMARY KEY); \
                   CREATE TABLE books (id TEXT PRIMARY KEY, author TEXT REFERENCES authors (id))";
        let refused = Parsed::new(Schema::new(ddl, ddl), &["authors", "books"]).unwrap_err();
        assert!(refused.contains("foreign key"), "{refused}");
        let table_level = "CREATE TABLE authors (id TEXT PRIMARY KEY); \
                           CREATE TABLE books (id TEXT, a TEXT, FOREIGN KEY (a) references authors)";
        assert!(Parsed::new(Schema::new(table_level, table_level), &["authors", "books"]).is_err());
        // The word inside a quoted default or name is not a reference.
        let quoted = "CREATE TABLE authors (id TEXT PRIMARY KEY, note TEXT DEFAULT 'references', \
                      \"references_count\" INT)";
        assert!(Parsed::new(Schema::new(quoted, quoted), &["authors"]).is_ok());
    }
}
