//! A route answering pages of rows: `GET /things?filter=…&limit=&cursor=`.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::MethodRouter;
use projector::http::Problem;
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{RefOr, schema::Schema};

use super::common::{Describe, Route, View};
use super::filter::{Bind, Filter, Key, page_sql};
use super::row::{FromViewRow, ViewRow};
use crate::answer::{self, json_answer, view_problem};
use crate::params::Params;
use crate::state::QueryState;
use crate::{api_doc, consistency, cursor};

/// The parameters every list accepts besides its filters.
const PAGE_PARAMETERS: [&str; 3] = ["limit", "cursor", "min_position"];

/// A route answering pages of the rows its query selects, filtered by the
/// declared [`Filter`]s a request gives, ordered by a [`Key`] and
/// continued by an opaque cursor.
///
/// The query is a `SELECT` without `ORDER BY` or `LIMIT`; annals reads it as
/// a subquery, so filters and keys name the columns it returns.
///
/// ```
/// use projector::ViewDb;
/// use query_api::{Filter, FromViewRow, Key, ListRoute, QueryConfig, QueryRoutes, QueryState, View, ViewRow};
///
/// # use axum::{Router, body::{Body, to_bytes}, http::{Request, StatusCode}};
/// # use tower::ServiceExt;
/// # /// The status and JSON body of `GET uri`.
/// # async fn get(router: &Router, uri: &str) -> Result<(StatusCode, serde_json::Value), Box<dyn std::error::Error>> {
/// #     let answer = router.clone().oneshot(Request::get(uri).body(Body::empty())?).await?;
/// #     let status = answer.status();
/// #     Ok((status, serde_json::from_slice(&to_bytes(answer.into_body(), 1 << 20).await?)?))
/// # }
///
/// #[derive(serde::Serialize, utoipa::ToSchema)]
/// struct Task {
///     id: String,
///     title: String,
///     done: bool,
/// }
///
/// impl FromViewRow for Task {
///     fn from_row(row: &ViewRow<'_>) -> Result<Self, sqlx::Error> {
///         Ok(Task { id: row.get("id")?, title: row.get("title")?, done: row.get::<i64>("done")? == 1 })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tasks = ListRoute::<Task>::new("/tasks", View::new("tasks"), "SELECT id, title, done FROM tasks")
///     .key(Key::text("title").then_text("id"))
///     .filter(Filter::integer("done", 0, 1).eq("done"));
///
/// // The `tasks` projection keeps this table; here it is filled by hand.
/// # let dir = tempfile::tempdir()?;
/// let views = ViewDb::open_in_data_dir(dir.path()).await?;
/// let mut tx = views.begin_write().await?;
/// sqlx::query("CREATE TABLE tasks (id TEXT PRIMARY KEY, title TEXT NOT NULL, done BIGINT NOT NULL)")
///     .execute(tx.conn())
///     .await?;
/// sqlx::query("INSERT INTO tasks VALUES ('1', 'milk', 1), ('2', 'bread', 0), ('3', 'eggs', 1)")
///     .execute(tx.conn())
///     .await?;
/// tx.commit().await?;
///
/// let state = QueryState::new(views, QueryConfig::default());
/// let router = query_api::router(state, &QueryRoutes::new().list(tasks));
///
/// // Done tasks by title, one a page: eggs, then milk.
/// let (_, first) = get(&router, "/tasks?done=1&limit=1").await?;
/// assert_eq!(first["items"][0]["title"], "eggs");
/// let cursor = first["next_cursor"].as_str().unwrap_or_default();
/// let (_, second) = get(&router, &format!("/tasks?done=1&limit=1&cursor={cursor}")).await?;
/// assert_eq!(second["items"][0]["title"], "milk");
/// assert!(second["next_cursor"].is_null());
///
/// // A value the filter does not allow is refused, naming the parameter.
/// let (status, problem) = get(&router, "/tasks?done=2").await?;
/// assert_eq!(status, StatusCode::BAD_REQUEST);
/// assert_eq!(problem["parameter"], "done");
/// # Ok(())
/// # }
/// ```
pub struct ListRoute<R> {
    path: &'static str,
    view: View,
    sql: String,
    key: Key,
    filters: Vec<Filter>,
    /// Every parameter name the route accepts.
    accepted: Vec<&'static str>,
    describe: Describe,
    row: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for ListRoute<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListRoute")
            .field("path", &self.path)
            .field("view", &self.view)
            .field("key", &self.key)
            .field("filters", &self.filters)
            .finish_non_exhaustive()
    }
}

/// A page of rows, as a list answers it.
#[derive(Debug, Serialize)]
struct Page<R> {
    items: Vec<R>,
    next_cursor: Option<String>,
    position: i64,
}

impl<R: FromViewRow> ListRoute<R> {
    /// Pages of the rows `sql` selects from `view`'s tables, ordered by a
    /// text column `id` unless [`ListRoute::key`] says otherwise.
    pub fn new(path: &'static str, view: View, sql: &str) -> Self {
        Self {
            path,
            view,
            sql: sql.to_owned(),
            key: Key::text("id"),
            filters: Vec::new(),
            accepted: PAGE_PARAMETERS.to_vec(),
            describe: Describe::default(),
            row: PhantomData,
        }
    }

    /// The columns pages are ordered by; the last one unique.
    pub fn key(mut self, key: Key) -> Self {
        self.key = key;
        self
    }

    /// A query parameter selecting rows. Filters combine (`AND`).
    pub fn filter(mut self, filter: Filter) -> Self {
        self.accepted.insert(self.filters.len(), filter.name());
        self.filters.push(filter);
        self
    }

    pub fn summary(mut self, summary: &'static str) -> Self {
        self.describe.summary = Some(summary);
        self
    }

    pub fn description(mut self, description: &'static str) -> Self {
        self.describe.description = Some(description);
        self
    }

    /// The OpenAPI operation id; `list_<path words>` by default.
    pub fn operation_id(mut self, id: &'static str) -> Self {
        self.describe.operation_id = Some(id);
        self
    }

    /// The OpenAPI tag; the view's name by default.
    pub fn tag(mut self, tag: &'static str) -> Self {
        self.describe.tag = Some(tag);
        self
    }

    async fn answer(
        &self,
        state: QueryState,
        raw: Option<String>,
        headers: HeaderMap,
    ) -> Result<Response, Problem> {
        let params = Params::parse(raw.as_deref(), &self.accepted)?;
        let mut given: Vec<(&Filter, Bind)> = Vec::new();
        for filter in &self.filters {
            if let Some(value) = filter.parse(&params)? {
                given.push((filter, value));
            }
        }
        let limit = answer::page_limit(&params, state.config())?;
        let key = given.iter().find_map(|(f, _)| f.key()).unwrap_or(&self.key);
        // The cursor holds the key of the last row; it only continues the
        // query with the same filters, values and order.
        let texts: Vec<(String, Option<String>)> =
            self.filters
                .iter()
                .map(|f| {
                    let value = given
                        .iter()
                        .find(|(g, _)| g.name() == f.name())
                        .map(|(_, v)| match v {
                            Bind::Int(n) => n.to_string(),
                            Bind::Text(t) => t.clone(),
                        });
                    (f.name().to_owned(), value)
                })
                .chain([
                    ("\u{1}path".to_owned(), Some(self.path.to_owned())),
                    (
                        "\u{1}key".to_owned(),
                        Some(key.columns().collect::<Vec<_>>().join(",")),
                    ),
                ])
                .collect();
        let parts: Vec<(&str, Option<&str>)> = texts
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_deref()))
            .collect();
        let fingerprint = cursor::fingerprint(&parts);
        let after = match params.get("cursor") {
            Some(raw) => Some(key.binds(cursor::decode(raw, &fingerprint, key.len())?)?),
            None => None,
        };
        let projection = self.view.projection();
        if let Some(min) = consistency::requested(&params, &headers)? {
            consistency::wait_for(&state, projection, min).await?;
        }
        let (sql, binds) = page_sql(&self.sql, &given, key, after, limit + 1);
        let (position, rows) = answer::read_page(&state, projection, sql, binds).await?;
        let problem = |e: sqlx::Error| view_problem(&e, projection);
        let shown = rows.len().min(limit);
        let items = rows[..shown]
            .iter()
            .map(|row| R::from_row(&ViewRow::new(row)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(problem)?;
        let next_cursor = match (rows.len() > limit, shown.checked_sub(1)) {
            (true, Some(last)) => {
                let values = key.of_row(&rows[last]).map_err(problem)?;
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                Some(cursor::encode(&fingerprint, &values))
            }
            _ => None,
        };
        Ok(json_answer(
            position,
            None,
            &Page {
                items,
                next_cursor,
                position,
            },
        ))
    }
}

impl<R: FromViewRow> Route for ListRoute<R> {
    fn path(&self) -> &'static str {
        self.path
    }

    fn method_router(self: Arc<Self>) -> MethodRouter<QueryState> {
        axum::routing::get(
            move |State(state): State<QueryState>, RawQuery(raw): RawQuery, headers: HeaderMap| {
                let route = self.clone();
                async move { route.answer(state, raw, headers).await }
            },
        )
    }

    fn operation(&self, schemas: &mut Vec<(String, RefOr<Schema>)>) -> Operation {
        api_doc::add_schemas::<R>(schemas);
        let page = api_doc::add_page_schema(&R::name(), schemas);
        let mut parameters: Vec<_> = self.filters.iter().map(Filter::parameter).collect();
        parameters.extend(api_doc::page_params());
        parameters.extend(api_doc::min_position_params());
        self.describe
            .operation("list", self.path, "A page of items", self.view)
            .parameters(Some(parameters))
            .responses(api_doc::list_responses(&page))
            .build()
    }
}
