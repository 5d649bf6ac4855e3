//! The REST command API.
//!
//! | method and path | command | success |
//! |---|---|---|
//! | `POST /customers` | register (`customer_id` optional, `name`, `email`, `credit_limit`) | 201 |
//! | `POST /customers/{id}/credit-limit` | change the credit limit (`credit_limit`) | 200 |
//! | `POST /customers/{id}/reservations` | reserve credit (`order_id`, `amount`) | 200 |
//! | `POST /customers/{id}/reservations/{order_id}/release` | release the order's credit | 200 |
//! | `DELETE /customers/{id}/personal-data` | erase the customer's personal data (right to be forgotten); idempotent | 200 |
//! | `POST /customers/{id}/forget` | the same, the older form (deprecated alias: `Deprecation` and `Link` to its successor on every answer) | 200 |
//! | `POST /orders` | place (`order_id` optional, `customer_id`, `lines` and/or `total`) | 201 |
//! | `POST /orders/{id}/approve` | approve | 200 |
//! | `POST /orders/{id}/reject` | reject (`reason`) | 200 |
//! | `POST /orders/{id}/cancel` | cancel (`reason` optional) | 200 |
//!
//! Money is `{"amount": <integer minor units>, "currency": "EUR"}`. A
//! success answers `{"id", "version", "position"}` with `ETag: "<version>"`;
//! `position` is the global position of the aggregate's latest event, which
//! the query side reports once it has caught up (read-your-writes).
//!
//! Headers: `If-Match: "<version>"` runs the command only on that version
//! (else `412`); `Idempotency-Key` makes retries return the first answer
//! (`Idempotent-Replayed: true`) without appending again, also after a
//! restart, and a key reused with another request is `422`. Only successes
//! are recorded, so a refused command can be retried with its key.
//! `X-Correlation-Id` (a UUID) is stored in the events' metadata and echoed.
//!
//! Ids, in the path and in bodies, are UUIDs in their one spelling
//! ([`http_edge::ids`]); bodies are JSON objects, and so is every object in
//! them ([`http_edge::json`]).
//!
//! Errors are RFC 9457 problem documents ([`Problem`]), `type`
//! `urn:annals:problem:<slug>` with the slugs in [`kind`].

mod api_doc;
mod problem;
mod request;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use event_store::EventStore;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;

use crate::domain::customer::Customer;
use crate::domain::order::Order;
use crate::handler::{CommandHandler, HandlerConfig};

pub use api_doc::openapi;
pub use problem::{PROBLEM_CONTENT_TYPE, Problem, etag, kind};
pub use request::{COMMAND_ID, CORRELATION_ID, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};

use request::BodyReceived;

/// Limits and behaviour of the command API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Largest request body accepted (`413` above).
    pub body_bytes_max: usize,
    /// Requests handled at once; more are answered `503` at once instead of
    /// queueing without bound.
    pub in_flight_requests_max: usize,
    /// Longest a request may take. One whose body has not fully arrived by
    /// then is `408` (nothing was applied); one that was read and is still
    /// being handled is `503`, and the command may still commit: retrying
    /// with the same idempotency key tells.
    pub request_timeout: Duration,
    pub customers: HandlerConfig,
    pub orders: HandlerConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            body_bytes_max: 64 << 10,
            in_flight_requests_max: 1024,
            request_timeout: Duration::from_secs(30),
            customers: HandlerConfig::default(),
            orders: HandlerConfig::default(),
        }
    }
}

/// What the routes share: one handler per aggregate type and the limits.
/// Cheap to clone; code outside HTTP (a saga) can issue commands through
/// [`ApiState::customers`] and [`ApiState::orders`].
#[derive(Debug, Clone)]
pub struct ApiState {
    customers: CommandHandler<Customer>,
    orders: CommandHandler<Order>,
    config: Arc<ApiConfig>,
    in_flight: Arc<Semaphore>,
}

impl ApiState {
    pub fn new(store: Arc<dyn EventStore>, config: ApiConfig) -> Self {
        Self {
            customers: CommandHandler::new(store.clone(), config.customers.clone()),
            orders: CommandHandler::new(store, config.orders.clone()),
            in_flight: Arc::new(Semaphore::new(config.in_flight_requests_max)),
            config: Arc::new(config),
        }
    }

    pub fn customers(&self) -> &CommandHandler<Customer> {
        &self.customers
    }

    pub fn orders(&self) -> &CommandHandler<Order> {
        &self.orders
    }

    pub fn config(&self) -> &ApiConfig {
        &self.config
    }
}

/// The command API as a standalone application: [`routes`] plus
/// problem-document answers for unknown paths (`404`) and methods (`405`).
pub fn router(state: ApiState) -> Router {
    with_problem_fallbacks(routes(state))
}

/// The command routes without fallbacks, to merge with other APIs
/// (`axum` refuses to merge two routers that both have one); add
/// [`with_problem_fallbacks`] once to the merged router.
pub fn routes(state: ApiState) -> Router {
    let guard = middleware::from_fn_with_state(state.clone(), guard);
    endpoints()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        })
        .layer(DefaultBodyLimit::max(state.config.body_bytes_max))
        .layer(guard)
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

type Endpoint = (MethodFilter, &'static str, MethodRouter<ApiState>);

/// Every command endpoint. The router is built from this table, and a test
/// holds the OpenAPI document to it.
#[expect(
    deprecated,
    reason = "the deprecated alias of the erasure is still served, for existing clients"
)]
fn endpoints() -> [Endpoint; 10] {
    fn endpoint<H: Handler<T, ApiState>, T: 'static>(
        method: MethodFilter,
        path: &'static str,
        handler: H,
    ) -> Endpoint {
        (method, path, on(method, handler))
    }
    [
        endpoint(MethodFilter::POST, "/customers", routes::register_customer),
        endpoint(
            MethodFilter::POST,
            "/customers/{id}/credit-limit",
            routes::change_credit_limit,
        ),
        endpoint(
            MethodFilter::POST,
            "/customers/{id}/reservations",
            routes::reserve_credit,
        ),
        endpoint(
            MethodFilter::POST,
            "/customers/{id}/reservations/{order_id}/release",
            routes::release_credit,
        ),
        endpoint(
            MethodFilter::DELETE,
            "/customers/{id}/personal-data",
            routes::erase_personal_data,
        ),
        endpoint(
            MethodFilter::POST,
            "/customers/{id}/forget",
            routes::forget_customer,
        ),
        endpoint(MethodFilter::POST, "/orders", routes::place_order),
        endpoint(
            MethodFilter::POST,
            "/orders/{id}/approve",
            routes::approve_order,
        ),
        endpoint(
            MethodFilter::POST,
            "/orders/{id}/reject",
            routes::reject_order,
        ),
        endpoint(
            MethodFilter::POST,
            "/orders/{id}/cancel",
            routes::cancel_order,
        ),
    ]
}

/// Answers unknown paths and unsupported methods with problem documents.
pub fn with_problem_fallbacks(router: Router) -> Router {
    router
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting connections, lets the requests in flight finish and returns,
/// with the default connection limits and timeouts of
/// [`http_edge::serve()`]. The caller closes the store afterwards.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    http_edge::serve(
        listener,
        router,
        http_edge::ServeConfig::default(),
        shutdown,
    )
    .await
}

/// Bounds the requests in flight and the time each may take.
async fn guard(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            kind::OVERLOADED,
            "Overloaded",
            format!(
                "{} requests are already in progress; retry shortly",
                state.config.in_flight_requests_max
            ),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        .into_response();
    };
    let received = BodyReceived::default();
    request.extensions_mut().insert(received.clone());
    match tokio::time::timeout(state.config.request_timeout, next.run(request)).await {
        Ok(response) => response,
        // Nothing can have been applied to a command that was not even read.
        Err(_) if !received.get() => {
            tracing::info!(timeout = ?state.config.request_timeout, "a command's body did not arrive in time");
            request::body_timeout(format!(
                "the request body did not arrive within {} ms; nothing was applied",
                state.config.request_timeout.as_millis()
            ))
            .into_response()
        }
        Err(_) => {
            tracing::warn!(timeout = ?state.config.request_timeout, "a command request timed out");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                kind::TIMEOUT,
                "Timed out",
                "the command did not finish in time and may or may not have been applied; \
                 retry with the same Idempotency-Key to find out",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            .into_response()
        }
    }
}

async fn route_not_found(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        kind::ROUTE_NOT_FOUND,
        "Not found",
        format!("no command endpoint at {}", uri.path()),
    )
}

async fn method_not_allowed(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        kind::METHOD_NOT_ALLOWED,
        "Method not allowed",
        format!(
            "{} does not accept this method; commands are POSTed (erasing personal data is a DELETE)",
            uri.path()
        ),
    )
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "a command request handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        kind::INTERNAL,
        "Internal error",
        "an internal error interrupted the command; retry with the same Idempotency-Key \
         to learn whether it was applied",
    )
    .into_response()
}
