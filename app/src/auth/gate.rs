//! The middleware in front of a router's routes: who is calling, and may
//! they.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_edge::Problem;

use super::Role;
use super::keys::{Key, KeyRing};

/// Which role a router's routes need, derived from what the router is.
#[derive(Debug, Clone)]
pub enum Rule {
    /// Every route needs this role (query routes `read`, projection admin
    /// `admin`).
    Needs(Role),
    /// Command routes: `write`, but `admin` for those of the methods and
    /// path templates given (the routes that erase personal data).
    Commands(Arc<[(Method, &'static str)]>),
    /// Health and OpenAPI routes: `/health/live` open, `/health/ready`
    /// open with its details for authenticated callers only, anything else
    /// (`/openapi.json`) `read`.
    Health,
    /// The store's API: its health and OpenAPI routes as [`Rule::Health`];
    /// `GET` (reads, subscriptions) `read`, `DELETE` (a subject's key)
    /// `admin`, anything else (appends, snapshots) `write`.
    Store,
}

/// What one request needs.
enum Need {
    Nothing,
    /// Anyone gets an answer; only a known key the details.
    DetailsForKeys,
    Role(Role),
}

impl Rule {
    fn need(&self, request: &Request) -> Need {
        let path = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| request.uri().path(), MatchedPath::as_str);
        let method = request.method();
        match self {
            Rule::Needs(role) => Need::Role(*role),
            Rule::Commands(erasures) => {
                if erasures.iter().any(|(m, p)| m == method && *p == path) {
                    Need::Role(Role::Admin)
                } else {
                    Need::Role(Role::Write)
                }
            }
            Rule::Health | Rule::Store => match path {
                "/health/live" => Need::Nothing,
                "/health/ready" => Need::DetailsForKeys,
                "/openapi.json" => Need::Role(Role::Read),
                _ if matches!(self, Rule::Health) => Need::Role(Role::Read),
                _ if method == Method::GET || method == Method::HEAD => Need::Role(Role::Read),
                _ if method == Method::DELETE => Need::Role(Role::Admin),
                _ => Need::Role(Role::Write),
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct Gate {
    keys: Arc<KeyRing>,
    rule: Rule,
}

impl Gate {
    pub fn new(keys: Arc<KeyRing>, rule: Rule) -> Self {
        Self { keys, rule }
    }
}

/// Lets `request` through when its key holds the role its route needs;
/// otherwise `401` (no usable key) or `403` (a key without the role).
pub async fn gate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    match gate.rule.need(&request) {
        Need::Nothing => next.run(request).await,
        Need::DetailsForKeys => {
            if known_key(&gate.keys, request.headers()).is_ok() {
                return next.run(request).await;
            }
            without_details(next.run(request).await)
        }
        Need::Role(role) => match known_key(&gate.keys, request.headers()) {
            Err(refused) => refused.into_response(),
            Ok(key) if key.has(role) => next.run(request).await,
            Ok(key) => Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                format!(
                    "the key {:?} does not hold the role `{}` this route needs",
                    key.name,
                    role.as_str()
                ),
            )
            .with("required_role", role.as_str())
            .into_response(),
        },
    }
}

/// The key the request presents, when the ring holds it unrevoked.
fn known_key(keys: &KeyRing, headers: &HeaderMap) -> Result<Key, Problem> {
    let Some(token) = bearer_token(headers) else {
        return Err(unauthorized(
            "this API needs `Authorization: Bearer <token>` with an API key (see `keys create`)",
            "Bearer realm=\"annals\"",
        ));
    };
    match keys.find(token) {
        Some(key) if !key.is_revoked() => Ok(key),
        _ => Err(unauthorized(
            "the bearer token is not a valid API key (unknown or revoked)",
            "Bearer realm=\"annals\", error=\"invalid_token\"",
        )),
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's
/// case does not matter (RFC 9110 section 11.1).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn unauthorized(detail: &str, challenge: &'static str) -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        detail,
    )
    .with_header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    )
}

/// A readiness answer cut down to whether the process is ready.
fn without_details(response: Response) -> Response {
    let status = response.status();
    if status.is_success() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        Problem::new(
            status,
            "unavailable",
            "Not ready",
            "a dependency of this process is not ready; a caller with an API key sees which",
        )
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_read_in_any_case_and_nothing_else_is() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            headers
        };
        assert_eq!(bearer_token(&with("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&with("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&with("BEARER  abc ")), Some("abc"));
        assert_eq!(bearer_token(&with("Basic abc")), None);
        assert_eq!(bearer_token(&with("Bearer ")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
