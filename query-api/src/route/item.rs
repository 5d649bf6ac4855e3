//! A route answering one row: `GET /things/{id}`.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::MethodRouter;
use projector::http::Problem;
use sqlx::Row;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{RefOr, schema::Schema};

use super::common::{self, Describe, Route, View};
use super::row::{FromViewRow, ViewRow};
use crate::answer::{json_answer, not_found, view_problem};
use crate::params::{self, Params};
use crate::state::QueryState;
use crate::{api_doc, consistency};

/// How the path's parameter is spelled.
#[derive(Debug, Clone, Copy)]
enum IdSpelling {
    /// An annals id (see [`http_edge::ids`]).
    AnnalsId,
    /// Any text of 1 to this many characters.
    Text(usize),
}

/// A route answering the one row its query finds for the path's parameter
/// (bound as `$1`), with `ETag` when the row type has a version; `404` with
/// the view's position when there is none.
///
/// ```
/// use projector::ViewDb;
/// use query_api::{FromViewRow, ItemRoute, QueryConfig, QueryRoutes, QueryState, View, ViewRow};
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
/// let task = ItemRoute::<Task>::new(
///     "/tasks/{id}",
///     View::new("tasks"),
///     "SELECT id, title, done FROM tasks WHERE id = $1",
/// )
/// .noun("task")
/// .summary("One task");
/// let routes = QueryRoutes::new().item(task);
///
/// // Described with its parameter and its answers...
/// let document = serde_json::to_value(query_api::openapi(&routes))?;
/// let operation = &document["paths"]["/tasks/{id}"]["get"];
/// assert_eq!(operation["parameters"][0]["name"], "id");
/// assert!(operation["responses"]["404"].is_object());
///
/// // ...and served. An id must be spelled as annals spells ids.
/// # let dir = tempfile::tempdir()?;
/// let views = ViewDb::open_in_data_dir(dir.path()).await?;
/// let state = QueryState::new(views.clone(), QueryConfig::default());
/// let router = query_api::router(state, &routes);
/// let (status, problem) = get(&router, "/tasks/not-an-id").await?;
/// assert_eq!(status, StatusCode::BAD_REQUEST);
/// assert_eq!(problem["type"], "urn:annals:problem:invalid-id");
///
/// // Until the projector has created the view's table, the view is not ready.
/// let unknown = "/tasks/0190f2a8-7c5e-7cc1-9b5a-3f4b2a1c0d9e";
/// assert_eq!(get(&router, unknown).await?.0, StatusCode::SERVICE_UNAVAILABLE);
///
/// // Once it has, an id the view does not hold is a `404` with the position
/// // it was read at (here the table is created by hand, at position 0).
/// let mut tx = views.begin_write().await?;
/// sqlx::query("CREATE TABLE tasks (id TEXT PRIMARY KEY, title TEXT NOT NULL, done BIGINT NOT NULL)")
///     .execute(tx.conn())
///     .await?;
/// tx.commit().await?;
/// let (status, problem) = get(&router, unknown).await?;
/// assert_eq!(status, StatusCode::NOT_FOUND);
/// assert_eq!(problem["position"], 0);
/// # Ok(())
/// # }
/// ```
pub struct ItemRoute<R> {
    path: &'static str,
    view: View,
    /// The user's query inside the statement that reads the checkpoint in
    /// the same snapshot.
    statement: String,
    id: IdSpelling,
    noun: Option<&'static str>,
    describe: Describe,
    row: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for ItemRoute<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemRoute")
            .field("path", &self.path)
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

impl<R: FromViewRow> ItemRoute<R> {
    /// `path` has one parameter (`/accounts/{id}`), an annals id unless
    /// [`ItemRoute::text_id`] says otherwise; `sql` selects at most one row
    /// of `view`'s tables for it, as `$1` (a row whose columns are all
    /// NULL reads as missing: select its key).
    pub fn new(path: &'static str, view: View, sql: &str) -> Self {
        // One statement reads the checkpoint and the row: one snapshot. The
        // checkpoint row is always there once the projector ran, so a missing
        // item still yields the position it is missing at.
        let statement = format!(
            "SELECT cp.position AS annals_position, v.* FROM projection_checkpoints cp \
             LEFT JOIN ({sql}) AS v ON 1 = 1 WHERE cp.name = $2 AND cp.track = 'live'"
        );
        Self {
            path,
            view,
            statement,
            id: IdSpelling::AnnalsId,
            noun: None,
            describe: Describe::default(),
            row: PhantomData,
        }
    }

    /// The path's parameter is any text of 1 to `chars_max` characters.
    pub fn text_id(mut self, chars_max: usize) -> Self {
        self.id = IdSpelling::Text(chars_max);
        self
    }

    /// What one row is called in a `404` (`no account with id …`); the row
    /// type's schema name by default.
    pub fn noun(mut self, noun: &'static str) -> Self {
        self.noun = Some(noun);
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

    /// The OpenAPI operation id; `get_<path words>` by default.
    pub fn operation_id(mut self, id: &'static str) -> Self {
        self.describe.operation_id = Some(id);
        self
    }

    /// The OpenAPI tag; the view's name by default.
    pub fn tag(mut self, tag: &'static str) -> Self {
        self.describe.tag = Some(tag);
        self
    }

    fn parameter_name(&self) -> &'static str {
        common::path_parameter(self.path).unwrap_or("id")
    }

    fn noun_text(&self) -> String {
        self.noun
            .map_or_else(|| R::name().to_lowercase(), str::to_owned)
    }

    async fn answer(
        &self,
        state: QueryState,
        path: Result<Path<String>, PathRejection>,
        raw: Option<String>,
        headers: HeaderMap,
    ) -> Result<Response, Problem> {
        let Path(raw_id) = path.map_err(params::path_rejection)?;
        let id = match self.id {
            IdSpelling::AnnalsId => params::id(self.parameter_name(), &raw_id)?,
            IdSpelling::Text(chars_max) => {
                params::text_value(self.parameter_name(), &raw_id, chars_max)?.to_owned()
            }
        };
        let params = Params::parse(raw.as_deref(), &["min_position"])?;
        let projection = self.view.projection();
        if let Some(min) = consistency::requested(&params, &headers)? {
            consistency::wait_for(&state, projection, min).await?;
        }
        let problem = |e: sqlx::Error| view_problem(&e, projection);
        let row = sqlx::query(sqlx::AssertSqlSafe(self.statement.as_str()))
            .bind(&id)
            .bind(projection)
            .fetch_optional(state.db().pool())
            .await
            .map_err(problem)?;
        let Some(row) = row else {
            // No checkpoint: the projector never ran, the view is empty.
            return Err(not_found(&self.noun_text(), &id, 0));
        };
        let position: i64 = row.try_get("annals_position").map_err(problem)?;
        // The join leaves every column of a missing row NULL.
        let mut missing = true;
        for column in 1..row.len() {
            if !sqlx::ValueRef::is_null(&row.try_get_raw(column).map_err(problem)?) {
                missing = false;
                break;
            }
        }
        if missing {
            return Err(not_found(&self.noun_text(), &id, position));
        }
        let item = R::from_row(&ViewRow::new(&row)).map_err(problem)?;
        Ok(json_answer(position, item.version(), &item))
    }
}

impl<R: FromViewRow> Route for ItemRoute<R> {
    fn path(&self) -> &'static str {
        self.path
    }

    fn method_router(self: Arc<Self>) -> MethodRouter<QueryState> {
        axum::routing::get(
            move |State(state): State<QueryState>,
                  path: Result<Path<String>, PathRejection>,
                  RawQuery(raw): RawQuery,
                  headers: HeaderMap| {
                let route = self.clone();
                async move { route.answer(state, path, raw, headers).await }
            },
        )
    }

    fn operation(&self, schemas: &mut Vec<(String, RefOr<Schema>)>) -> Operation {
        api_doc::add_schemas::<R>(schemas);
        let noun = self.noun_text();
        let mut parameters = vec![api_doc::path_param(
            self.parameter_name(),
            match self.id {
                IdSpelling::AnnalsId => api_doc::PathSpelling::AnnalsId,
                IdSpelling::Text(chars_max) => api_doc::PathSpelling::Text(chars_max),
            },
        )];
        parameters.extend(api_doc::min_position_params());
        self.describe
            .operation("get", self.path, "One item", self.view)
            .parameters(Some(parameters))
            .responses(api_doc::item_responses(&R::name(), &noun))
            .build()
    }
}
