//! The query API of annals: JSON over HTTP, answered from the SQL views the
//! projector maintains. It never reads the event store.
//!
//! An application declares its query routes ([`QueryRoutes`]): each is a
//! path, the view it reads ([`View`]), a SQL query and a row type the user
//! defines ([`FromViewRow`]). [`ItemRoute`] answers one row for the path's
//! id; [`ListRoute`] answers pages, filtered by declared [`Filter`]s and
//! ordered by a [`Key`]. Annals serves every route the same way
//! ([`router`]) and describes it in the OpenAPI document ([`openapi`]).
//!
//! **Positions.** Every answer carries `Annals-Position: <n>`: the log
//! position the view it was read from reflects (the checkpoint of the
//! route's projection, read in the same snapshot as the rows).
//!
//! **Read your writes.** A client that sends the position a command
//! returned, as `min_position=<n>` or `Annals-Min-Position: <n>`, is
//! answered only once the view has reached it. The API waits up to
//! [`QueryConfig::min_position_wait_max`], re-reading the checkpoint with a
//! short backoff (the projector may run in another process), then answers
//! `503` with `Retry-After`. A view stopped by a failed event answers `503`
//! at once.
//!
//! **Items** carry `ETag: "<version>"` when the row type has a version.
//!
//! **Pages** are ordered by the route's key (or a filter's, when given) and
//! paged with an opaque `cursor` (`next_cursor` of the previous page) and
//! `limit` (1 to [`QueryConfig::page_size_max`]). A cursor only continues
//! the query that produced it.
//!
//! **Errors** are RFC 9457 problem documents ([`http_edge::Problem`]):
//! unknown, repeated or invalid parameters, cursors or positions `400`, an
//! id not spelled as annals writes ids (lowercase hyphenated UUID, see
//! [`http_edge::ids`]) `400 invalid-id` as on the command side, unknown ids
//! `404` with the position, a view not there yet or a database that cannot
//! answer `503`.

mod answer;
mod api_doc;
mod consistency;
mod cursor;
mod params;
mod route;
mod state;

use axum::Router;

pub use answer::{MIN_POSITION_HEADER, POSITION_HEADER};
pub use api_doc::openapi;
pub use route::{Filter, FromViewRow, ItemRoute, Key, ListRoute, QueryRoutes, View, ViewRow};
pub use state::{QueryConfig, QueryState};

/// The query API router serving `routes`, answering unknown paths with
/// problem documents.
pub fn router(state: QueryState, routes: &QueryRoutes) -> Router {
    self::routes(state, routes)
        .fallback(projector::http::no_route)
        .method_not_allowed_fallback(projector::http::method_not_allowed)
}

/// The query routes without a fallback, to merge with other APIs in one
/// process (`axum` refuses to merge two routers that both have one).
pub fn routes(state: QueryState, routes: &QueryRoutes) -> Router {
    routes
        .iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path(), route.clone().method_router())
        })
        .with_state(state)
}
