//! What a list route may be asked: filters on its columns and the key its
//! pages are ordered and continued by; and the SQL a request makes of them.
//!
//! Column names and the route's query are the developer's SQL text; every
//! value from a request is bound, never put into the text.

use utoipa::openapi::schema::{ObjectBuilder, Type};

use crate::api_doc;
use crate::params::{self, Params};
use projector::http::{Problem, problem_type};

/// A value bound to a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    Int(i64),
    Text(String),
}

/// The type of a key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Text,
    Integer,
}

/// The columns a list is ordered by, ascending, the last of them unique
/// (an id): a page continues after the key of the previous page's last
/// row (keyset pagination), so pages neither skip nor repeat rows while
/// the view changes.
///
/// A list of tasks by title (ties by id); [`ListRoute`](crate::ListRoute)'s
/// example pages through one:
///
/// ```
/// use query_api::{FromViewRow, Key, ListRoute, View, ViewRow};
/// # #[derive(serde::Serialize, utoipa::ToSchema)]
/// # struct Task { id: String, title: String }
/// # impl FromViewRow for Task {
/// #     fn from_row(row: &ViewRow<'_>) -> Result<Self, sqlx::Error> {
/// #         Ok(Task { id: row.get("id")?, title: row.get("title")? })
/// #     }
/// # }
/// let by_title = Key::text("title").then_text("id");
/// let tasks = ListRoute::<Task>::new("/tasks", View::new("tasks"), "SELECT id, title FROM tasks")
///     .key(by_title);
/// # let _ = tasks;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    columns: Vec<(&'static str, KeyType)>,
}

impl Key {
    /// Ordered by a text column.
    pub fn text(column: &'static str) -> Self {
        Self {
            columns: vec![(column, KeyType::Text)],
        }
    }

    /// Ordered by an integer column.
    pub fn integer(column: &'static str) -> Self {
        Self {
            columns: vec![(column, KeyType::Integer)],
        }
    }

    /// Then by a text column (rows equal on the columns before).
    pub fn then_text(mut self, column: &'static str) -> Self {
        self.columns.push((column, KeyType::Text));
        self
    }

    /// Then by an integer column.
    pub fn then_integer(mut self, column: &'static str) -> Self {
        self.columns.push((column, KeyType::Integer));
        self
    }

    pub(crate) fn len(&self) -> usize {
        self.columns.len()
    }

    pub(crate) fn columns(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.iter().map(|(c, _)| *c)
    }

    /// The key of a row, as a cursor holds it.
    pub(crate) fn of_row(&self, row: &sqlx::any::AnyRow) -> Result<Vec<String>, sqlx::Error> {
        use sqlx::Row;
        self.columns
            .iter()
            .map(|(column, kind)| match kind {
                KeyType::Text => row.try_get::<String, _>(*column),
                KeyType::Integer => row.try_get::<i64, _>(*column).map(|v| v.to_string()),
            })
            .collect()
    }

    /// The values of a cursor's key, to bind.
    pub(crate) fn binds(&self, values: Vec<String>) -> Result<Vec<Bind>, Problem> {
        self.columns
            .iter()
            .zip(values)
            .map(|((_, kind), value)| match kind {
                KeyType::Text => Ok(Bind::Text(value)),
                KeyType::Integer => value.parse().map(Bind::Int).map_err(|_| {
                    Problem::bad_request(
                        problem_type::INVALID_REQUEST,
                        "invalid cursor: malformed; pass next_cursor from the previous page unchanged",
                    )
                    .with("parameter", "cursor")
                }),
            })
            .collect()
    }
}

/// What a filter's value is and how it is checked.
#[derive(Debug, Clone)]
enum Value {
    Integer { min: i64, max: i64 },
    Text { chars_max: usize },
    Id,
    OneOf(&'static [&'static str]),
}

/// How a filter's value selects rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Eq,
    AtLeast,
    AtMost,
    StartsWith,
}

/// A query parameter of a list route that selects rows by a column:
/// `?owner=…` → `WHERE owner_id = $n`.
///
/// ```
/// use query_api::{Filter, FromViewRow, Key, ListRoute, QueryRoutes, View, ViewRow};
/// # #[derive(serde::Serialize, utoipa::ToSchema)]
/// # struct Account { id: String }
/// # impl FromViewRow for Account {
/// #     fn from_row(row: &ViewRow<'_>) -> Result<Self, sqlx::Error> { Ok(Account { id: row.get("id")? }) }
/// # }
///
/// let accounts = ListRoute::<Account>::new(
///     "/accounts",
///     View::new("accounts"),
///     "SELECT id, owner_id, status, name, balance FROM accounts",
/// )
/// // `?owner=<id>`: an id in its one spelling.
/// .filter(Filter::id("owner").eq("owner_id"))
/// // `?balance_min=<n>`: 0 or more.
/// .filter(Filter::integer("balance_min", 0, i64::MAX).at_least("balance"))
/// // `?status=open` or `?status=closed`.
/// .filter(Filter::one_of("status", &["open", "closed"]).eq("status"))
/// // `?name_prefix=<text>`: pages then go by name, a range on its index.
/// .filter(
///     Filter::text("name_prefix", 100)
///         .starts_with("name")
///         .ordered_by(Key::text("name").then_text("id"))
///         .describe("Only accounts whose holder's name starts with this."),
/// );
///
/// // Each is a query parameter of the route, with what it accepts.
/// let document = serde_json::to_value(query_api::openapi(&QueryRoutes::new().list(accounts)))?;
/// let parameters = &document["paths"]["/accounts"]["get"]["parameters"];
/// assert_eq!(parameters[1]["name"], "balance_min");
/// assert_eq!(parameters[1]["schema"]["minimum"], 0);
/// assert_eq!(parameters[2]["schema"]["enum"], serde_json::json!(["open", "closed"]));
/// assert_eq!(parameters[3]["description"], "Only accounts whose holder's name starts with this.");
/// # Ok::<(), serde_json::Error>(())
/// ```

#[derive(Debug, Clone)]
pub struct Filter {
    name: &'static str,
    value: Value,
    comparison: Comparison,
    column: &'static str,
    normalize: Option<fn(&str) -> String>,
    key: Option<Key>,
    description: Option<&'static str>,
}

impl Filter {
    fn new(name: &'static str, value: Value) -> Self {
        Self {
            name,
            value,
            comparison: Comparison::Eq,
            column: name,
            normalize: None,
            key: None,
            description: None,
        }
    }

    /// An integer from `min` to `max`.
    pub fn integer(name: &'static str, min: i64, max: i64) -> Self {
        Self::new(name, Value::Integer { min, max })
    }

    /// A text of 1 to `chars_max` characters.
    pub fn text(name: &'static str, chars_max: usize) -> Self {
        Self::new(name, Value::Text { chars_max })
    }

    /// An id in its one spelling (see [`http_edge::ids`]); any other
    /// spelling is `400 invalid-id`.
    pub fn id(name: &'static str) -> Self {
        Self::new(name, Value::Id)
    }

    /// One of a closed set of words.
    pub fn one_of(name: &'static str, values: &'static [&'static str]) -> Self {
        Self::new(name, Value::OneOf(values))
    }

    /// Rows whose `column` equals the value.
    pub fn eq(self, column: &'static str) -> Self {
        self.compare(Comparison::Eq, column)
    }

    /// Rows whose `column` is at least the value.
    pub fn at_least(self, column: &'static str) -> Self {
        self.compare(Comparison::AtLeast, column)
    }

    /// Rows whose `column` is at most the value.
    pub fn at_most(self, column: &'static str) -> Self {
        self.compare(Comparison::AtMost, column)
    }

    /// Rows whose `column` starts with the value (byte order: a range on
    /// an index of `column`).
    pub fn starts_with(self, column: &'static str) -> Self {
        self.compare(Comparison::StartsWith, column)
    }

    fn compare(mut self, comparison: Comparison, column: &'static str) -> Self {
        self.comparison = comparison;
        self.column = column;
        self
    }

    /// Transforms a text value before it is compared (e.g. folding the
    /// case, for a column that holds folded text).
    pub fn normalize(mut self, normalize: fn(&str) -> String) -> Self {
        self.normalize = Some(normalize);
        self
    }

    /// When this filter is given, pages are ordered by `key` instead of
    /// the route's key (e.g. by name with a name prefix, an index range).
    pub fn ordered_by(mut self, key: Key) -> Self {
        self.key = Some(key);
        self
    }

    /// What the filter selects, for the OpenAPI document.
    pub fn describe(mut self, description: &'static str) -> Self {
        self.description = Some(description);
        self
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    pub(crate) fn key(&self) -> Option<&Key> {
        self.key.as_ref()
    }

    /// The filter's value in a request, checked; `None` when not given.
    pub(crate) fn parse(&self, params: &Params) -> Result<Option<Bind>, Problem> {
        let name = self.name;
        Ok(match &self.value {
            Value::Integer { min, max } => params.integer(name, *min, *max)?.map(Bind::Int),
            Value::Text { chars_max } => params.text(name, *chars_max)?.map(|text| {
                Bind::Text(self.normalize.map_or_else(|| text.to_owned(), |f| f(text)))
            }),
            Value::Id => params
                .get(name)
                .map(|raw| params::id(name, raw).map(Bind::Text))
                .transpose()?,
            Value::OneOf(values) => match params.get(name) {
                None => None,
                Some(value) if values.contains(&value) => Some(Bind::Text(value.to_owned())),
                Some(value) => {
                    return Err(Problem::bad_request(
                        problem_type::INVALID_REQUEST,
                        format!("{name} must be one of {}, not {value:?}", values.join(", ")),
                    )
                    .with("parameter", name));
                }
            },
        })
    }

    /// The OpenAPI parameter.
    pub(crate) fn parameter(&self) -> utoipa::openapi::path::Parameter {
        let schema = match &self.value {
            Value::Integer { min, max } => api_doc::integer(*min, *max),
            Value::Text { chars_max } => api_doc::text(*chars_max),
            Value::Id => api_doc::id_schema(),
            Value::OneOf(values) => ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(values.iter().copied())),
        };
        let generated;
        let description = match self.description {
            Some(d) => d,
            None => {
                generated = match self.comparison {
                    Comparison::Eq => format!("Only rows whose {} is this.", self.column),
                    Comparison::AtLeast => {
                        format!("Only rows whose {} is at least this.", self.column)
                    }
                    Comparison::AtMost => {
                        format!("Only rows whose {} is at most this.", self.column)
                    }
                    Comparison::StartsWith => {
                        format!("Only rows whose {} starts with this.", self.column)
                    }
                };
                &generated
            }
        };
        api_doc::query_param(self.name, schema, description)
    }
}

/// A page query: the route's query as a subquery, the filters given, the
/// key to continue after, the order and the limit; with its binds.
///
/// The limit is written into the text, not bound: SQLite plans with the
/// value of a bound `LIMIT` and so marks the statement as depending on it,
/// which makes every new binding re-prepare the statement (on each
/// request). A page size is a checked integer, and the few distinct ones
/// each get a cached statement.
pub(crate) fn page_sql(
    base: &str,
    filters: &[(&Filter, Bind)],
    key: &Key,
    after: Option<Vec<Bind>>,
    limit: usize,
) -> (String, Vec<Bind>) {
    let mut sql = format!("SELECT * FROM ({base}) AS annals_view WHERE 1 = 1");
    let mut binds: Vec<Bind> = Vec::new();
    let mut bind = |sql: &mut String, value: Bind| {
        binds.push(value);
        sql.push_str(&format!("${}", binds.len()));
    };
    for (filter, value) in filters {
        let column = filter.column;
        match filter.comparison {
            Comparison::Eq | Comparison::AtLeast | Comparison::AtMost => {
                let op = match filter.comparison {
                    Comparison::AtLeast => ">=",
                    Comparison::AtMost => "<=",
                    _ => "=",
                };
                sql.push_str(&format!(" AND {column} {op} "));
                bind(&mut sql, value.clone());
            }
            Comparison::StartsWith => {
                let prefix = match value {
                    Bind::Text(text) => text.clone(),
                    Bind::Int(n) => n.to_string(),
                };
                sql.push_str(&format!(" AND {column} >= "));
                bind(&mut sql, Bind::Text(prefix.clone()));
                if let Some(upper) = prefix_upper_bound(&prefix) {
                    sql.push_str(&format!(" AND {column} < "));
                    bind(&mut sql, Bind::Text(upper));
                }
            }
        }
    }
    let columns: Vec<&str> = key.columns().collect();
    if let Some(after) = after {
        if columns.len() == 1 {
            sql.push_str(&format!(" AND {} > ", columns[0]));
        } else {
            sql.push_str(&format!(" AND ({}) > ", columns.join(", ")));
        }
        let mut placeholders = Vec::new();
        for value in after {
            let mut one = String::new();
            bind(&mut one, value);
            placeholders.push(one);
        }
        if placeholders.len() == 1 {
            sql.push_str(&placeholders[0]);
        } else {
            sql.push_str(&format!("({})", placeholders.join(", ")));
        }
    }
    sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", columns.join(", ")));
    (sql, binds)
}

/// The smallest string greater than every string starting with `prefix`
/// (byte order), or `None` when there is none.
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        // Skip the surrogate range, which no char occupies.
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upper_bound_of_a_prefix_covers_exactly_its_extensions() {
        assert_eq!(prefix_upper_bound("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_upper_bound("zoë").as_deref(), Some("zoì"));
        assert_eq!(
            prefix_upper_bound("a\u{D7FF}").as_deref(),
            Some("a\u{E000}")
        );
        assert_eq!(
            prefix_upper_bound("a\u{10FFFF}").as_deref(),
            Some("b"),
            "the last char overflows into the previous one"
        );
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        for name in ["ab", "abz", "ab\u{10FFFF}x"] {
            assert!(("ab".."ac").contains(&name));
        }
    }

    #[test]
    fn filters_parse_check_and_normalize_their_values() {
        let params = Params::parse(
            Some("n=5&t=Ab&o=x&s=red&i=0190a1b2-0000-7000-8000-000000000001"),
            &["n", "t", "o", "s", "i", "absent"],
        )
        .unwrap();
        assert_eq!(
            Filter::integer("n", 0, 9).parse(&params).unwrap(),
            Some(Bind::Int(5))
        );
        assert!(Filter::integer("n", 6, 9).parse(&params).is_err());
        assert_eq!(
            Filter::text("t", 5)
                .normalize(|t| t.to_lowercase())
                .parse(&params)
                .unwrap(),
            Some(Bind::Text("ab".into()))
        );
        assert!(Filter::text("t", 1).parse(&params).is_err());
        let colours = Filter::one_of("s", &["red", "green"]);
        assert_eq!(
            colours.parse(&params).unwrap(),
            Some(Bind::Text("red".into()))
        );
        let wrong = Filter::one_of("o", &["red"]).parse(&params).unwrap_err();
        assert_eq!(wrong.slug(), "invalid-request");
        assert!(Filter::id("i").parse(&params).unwrap().is_some());
        assert_eq!(
            Filter::id("o").parse(&params).unwrap_err().slug(),
            "invalid-id"
        );
        assert_eq!(
            Filter::integer("absent", 0, 1).parse(&params).unwrap(),
            None
        );
    }

    #[test]
    fn a_page_query_binds_every_value_in_order() {
        let owner = Filter::id("owner").eq("owner_id");
        let rich = Filter::integer("min", 0, 100).at_least("balance");
        let (sql, binds) = page_sql(
            "SELECT id, owner_id, balance FROM accounts",
            &[(&owner, Bind::Text("o".into())), (&rich, Bind::Int(7))],
            &Key::text("id"),
            Some(vec![Bind::Text("k".into())]),
            21,
        );
        assert_eq!(
            sql,
            "SELECT * FROM (SELECT id, owner_id, balance FROM accounts) AS annals_view \
             WHERE 1 = 1 AND owner_id = $1 AND balance >= $2 AND id > $3 ORDER BY id LIMIT 21"
        );
        assert_eq!(
            binds,
            vec![Bind::Text("o".into()), Bind::Int(7), Bind::Text("k".into())]
        );
    }

    #[test]
    fn a_prefix_is_a_range_and_a_key_of_several_columns_a_row_comparison() {
        let prefix = Filter::text("p", 10).starts_with("name");
        let key = Key::text("name").then_integer("seq");
        let (sql, binds) = page_sql(
            "SELECT * FROM t",
            &[(&prefix, Bind::Text("ab".into()))],
            &key,
            key.binds(vec!["abc".into(), "3".into()]).ok(),
            2,
        );
        assert_eq!(
            sql,
            "SELECT * FROM (SELECT * FROM t) AS annals_view WHERE 1 = 1 AND name >= $1 \
             AND name < $2 AND (name, seq) > ($3, $4) ORDER BY name, seq LIMIT 2"
        );
        assert_eq!(binds[1], Bind::Text("ac".into()));
        assert_eq!(binds[3], Bind::Int(3));
        assert!(key.binds(vec!["abc".into(), "three".into()]).is_err());
        let (first_page, _) = page_sql("SELECT * FROM t", &[], &key, None, 2);
        assert!(first_page.ends_with("WHERE 1 = 1 ORDER BY name, seq LIMIT 2"));
    }
}
