//! The row type of a route: what a user's query returns, as JSON.

use sqlx::any::AnyRow;
use sqlx::{Any, Row};

/// A type a route answers with, decoded from one row of its query.
///
/// The row type is the user's: `#[derive(Serialize, ToSchema)]` for the
/// body and the OpenAPI schema, and this trait to read it from a row by
/// column name.
///
/// ```
/// use query_api::{FromViewRow, ViewRow};
///
/// #[derive(serde::Serialize, utoipa::ToSchema)]
/// struct Book {
///     id: String,
///     title: String,
///     version: i64,
/// }
///
/// impl FromViewRow for Book {
///     fn from_row(row: &ViewRow<'_>) -> Result<Self, sqlx::Error> {
///         Ok(Book { id: row.get("id")?, title: row.get("title")?, version: row.get("version")? })
///     }
///     fn version(&self) -> Option<i64> {
///         Some(self.version)
///     }
/// }
/// ```
pub trait FromViewRow: serde::Serialize + utoipa::ToSchema + Send + Sync + Sized + 'static {
    /// Reads the row type from a row of the route's query.
    fn from_row(row: &ViewRow<'_>) -> Result<Self, sqlx::Error>;

    /// The version of the item (its stream's version, say): sent as
    /// `ETag: "<version>"` with a single item, for a client's `If-Match`.
    fn version(&self) -> Option<i64> {
        None
    }
}

/// One row of a route's query, read by column name.
#[derive(Clone, Copy)]
pub struct ViewRow<'r> {
    row: &'r AnyRow,
}

impl std::fmt::Debug for ViewRow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use sqlx::Column;
        let columns: Vec<&str> = self.row.columns().iter().map(|c| c.name()).collect();
        f.debug_struct("ViewRow")
            .field("columns", &columns)
            .finish()
    }
}

impl<'r> ViewRow<'r> {
    pub(crate) fn new(row: &'r AnyRow) -> Self {
        Self { row }
    }

    /// The value of `column`, decoded as `T` (`String`, `i64`, `f64`,
    /// `bool`, or an `Option` of them for a nullable column).
    pub fn get<T>(&self, column: &str) -> Result<T, sqlx::Error>
    where
        T: for<'a> sqlx::Decode<'a, Any> + sqlx::Type<Any>,
    {
        self.row.try_get(column)
    }
}
