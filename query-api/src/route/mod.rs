//! Query routes as declarations: a path, the view (projection) it reads, a
//! query and a row type. Annals answers every declared route the same way
//! (parameters, pages, read-your-writes, positions, problems) and
//! describes it in the OpenAPI document.

mod common;
mod filter;
mod item;
mod list;
mod row;

use std::sync::Arc;

pub(crate) use common::Route;
pub use common::View;
pub(crate) use filter::Bind;
pub use filter::{Filter, Key};
pub use item::ItemRoute;
pub use list::ListRoute;
pub use row::{FromViewRow, ViewRow};

/// The query routes of an application: built once, served by
/// [`crate::router`] and described by [`crate::openapi`].
///
/// ```
/// use query_api::{FromViewRow, ItemRoute, Key, ListRoute, QueryRoutes, View, ViewRow, Filter};
///
/// #[derive(serde::Serialize, utoipa::ToSchema)]
/// struct Account { id: String, owner_id: String, balance: i64 }
///
/// impl FromViewRow for Account {
///     fn from_row(row: &ViewRow<'_>) -> Result<Self, sqlx::Error> {
///         Ok(Account { id: row.get("id")?, owner_id: row.get("owner_id")?, balance: row.get("balance")? })
///     }
/// }
///
/// let accounts = View::new("accounts");
/// let routes = QueryRoutes::new()
///     .item(ItemRoute::<Account>::new("/accounts/{id}", accounts,
///             "SELECT id, owner_id, balance FROM accounts WHERE id = $1")
///         .summary("One account"))
///     .list(ListRoute::<Account>::new("/accounts", accounts,
///             "SELECT id, owner_id, balance FROM accounts")
///         .key(Key::text("id"))
///         .filter(Filter::id("owner").eq("owner_id"))
///         .filter(Filter::integer("balance_min", 0, i64::MAX).at_least("balance"))
///         .summary("A page of accounts"));
/// assert_eq!(routes.paths(), ["/accounts/{id}", "/accounts"]);
///
/// // The OpenAPI document describes each route with its filters.
/// let document = serde_json::to_value(query_api::openapi(&routes))?;
/// let list = &document["paths"]["/accounts"]["get"];
/// assert_eq!(list["summary"], "A page of accounts");
/// assert_eq!(list["parameters"][0]["name"], "owner");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct QueryRoutes {
    routes: Vec<Arc<dyn Route>>,
}

impl QueryRoutes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route answering one row.
    pub fn item<R: FromViewRow>(mut self, route: ItemRoute<R>) -> Self {
        self.routes.push(Arc::new(route));
        self
    }

    /// Adds a route answering pages of rows.
    pub fn list<R: FromViewRow>(mut self, route: ListRoute<R>) -> Self {
        self.routes.push(Arc::new(route));
        self
    }

    /// Adds every route of `other`.
    pub fn merge(mut self, other: QueryRoutes) -> Self {
        self.routes.extend(other.routes);
        self
    }

    /// The paths served, in declaration order.
    pub fn paths(&self) -> Vec<&'static str> {
        self.routes.iter().map(|r| r.path()).collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<dyn Route>> {
        self.routes.iter()
    }
}
