//! The middleware in front of a router's routes: who is calling, and may
//! they.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use event_store_http::StreamScope;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_edge::Problem;

use super::Role;
use super::audit::{AuditLog, AuditRecord};
use super::jwt::JwtVerifier;
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
    /// Health, OpenAPI and audit routes: `/health/live` open,
    /// `/health/ready` open with its details for authenticated callers
    /// only, `/audit` `admin`, anything else (`/openapi.json`) `read`.
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
                "/audit" => Need::Role(Role::Admin),
                _ if matches!(self, Rule::Health) => Need::Role(Role::Read),
                _ if method == Method::GET || method == Method::HEAD => Need::Role(Role::Read),
                _ if method == Method::DELETE => Need::Role(Role::Admin),
                _ => Need::Role(Role::Write),
            },
        }
    }
}

/// What one process's gate holds: the keys (when authentication is on),
/// the rate limit per key, and the audit log.
#[derive(Debug, Clone)]
pub struct Gate {
    keys: Option<Arc<Credentials>>,
    rule: Rule,
    limits: Option<Arc<RateLimits>>,
    audit: Option<AuditLog>,
}

impl Gate {
    pub fn new(
        keys: Option<Arc<Credentials>>,
        rule: Rule,
        limits: Option<Arc<RateLimits>>,
        audit: Option<AuditLog>,
    ) -> Self {
        Self {
            keys,
            rule,
            limits,
            audit,
        }
    }
}

/// Requests per key and second, and what a key may send at once above
/// that (GCRA: a key that kept under the rate has a burst's credit).
#[derive(Debug)]
pub struct RateLimits {
    per_second: u32,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl RateLimits {
    /// `None` for a rate of 0 (no limit).
    pub fn new(per_second: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        Some(Self {
            per_second,
            limiter: RateLimiter::keyed(Quota::per_second(rate)),
        })
    }

    /// `Ok` while `key` is within its rate; else how long it must wait.
    fn check(&self, key: &str) -> Result<(), Duration> {
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Lets `request` through when its key holds the role its route needs
/// (and is within its rate and its streams); otherwise `401` (no usable
/// key), `403` (a key without the role, or limited to streams elsewhere)
/// or `429`. An admin action is recorded in the audit log once answered.
pub async fn gate(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let need = gate.rule.need(&request);
    let Some(keys) = &gate.keys else {
        // Authentication is off: everyone is let in, admin actions are
        // still recorded.
        return audited(&gate, &need, "anonymous", request, next).await;
    };
    match need {
        Need::Nothing => next.run(request).await,
        Need::DetailsForKeys => {
            if known_key(keys, request.headers()).is_ok() {
                return next.run(request).await;
            }
            without_details(next.run(request).await)
        }
        Need::Role(role) => {
            let key = match known_key(keys, request.headers()) {
                Ok(key) => key,
                Err(refused) => return refused.into_response(),
            };
            if let Err(refused) = admit(&gate, &key, role, &mut request) {
                return refused.into_response();
            }
            audited(&gate, &need, &key.name, request, next).await
        }
    }
}

/// The checks after the key is known: its role, its streams, its rate.
fn admit(gate: &Gate, key: &Key, role: Role, request: &mut Request) -> Result<(), Problem> {
    if !key.has(role) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Forbidden",
            format!(
                "the key {:?} does not hold the role `{}` this route needs",
                key.name,
                role.as_str()
            ),
        )
        .with("required_role", role.as_str()));
    }
    if !key.streams.is_empty() {
        if !matches!(gate.rule, Rule::Store) {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                format!(
                    "the key {:?} is limited to the streams starting with {:?}: it is for the store only",
                    key.name, key.streams
                ),
            ));
        }
        request
            .extensions_mut()
            .insert(StreamScope::new(key.streams.iter().cloned()));
    }
    if let Some(limits) = &gate.limits
        && opens_append_channel(gate, request)
    {
        // An append channel carries many transactions on one request:
        // each counts.
        let (limits, name) = (limits.clone(), key.name.clone());
        request
            .extensions_mut()
            .insert(event_store_http::RequestRate::new(move || {
                limits.check(&name)
            }));
    }
    if let Some(limits) = &gate.limits
        && let Err(wait) = limits.check(&key.name)
    {
        // Whole seconds, rounded up: a client that waits that long is let in.
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!(
                "the key {:?} is over its {} requests per second; retry in {seconds} s",
                key.name, limits.per_second
            ),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(seconds.max(1))));
    }
    Ok(())
}

/// Whether `request` opens an append channel of the store API (`POST
/// /appends`), whose lines the store checks against the caller's rate;
/// other requests need no rate check of their own.
fn opens_append_channel(gate: &Gate, request: &Request) -> bool {
    matches!(gate.rule, Rule::Store)
        && request.method() == axum::http::Method::POST
        && request.uri().path().ends_with("/appends")
}

/// Runs `request`, and records it in the audit log when it is an admin
/// action (it needs `admin` and is not a read).
async fn audited(gate: &Gate, need: &Need, who: &str, request: Request, next: Next) -> Response {
    let action = match (&gate.audit, need) {
        (Some(_), Need::Role(Role::Admin)) if !http_edge::cross_site::is_safe(request.method()) => {
            Some(format!("{} {}", request.method(), request.uri().path()))
        }
        _ => None,
    };
    let response = next.run(request).await;
    if let (Some(log), Some(action)) = (&gate.audit, action) {
        log.record(AuditRecord::now(
            who,
            action,
            Some(response.status().as_u16()),
        ))
        .await;
    }
    response
}

/// What a caller may present as a bearer token: an API key of the keys
/// file, a JWT of an identity provider, or either.
#[derive(Debug)]
pub struct Credentials {
    pub keys: Option<KeyRing>,
    pub jwt: Option<JwtVerifier>,
}

/// The caller the request's bearer token names: an unrevoked key of the
/// ring, or (a token of three dot-separated parts, where JWTs are
/// accepted) the subject of a valid JWT.
fn known_key(credentials: &Credentials, headers: &HeaderMap) -> Result<Key, Problem> {
    let Some(token) = bearer_token(headers) else {
        return Err(unauthorized(
            "this API needs `Authorization: Bearer <token>` with an API key (see `keys create`)",
            "Bearer realm=\"annals\"",
        ));
    };
    if let Some(jwt) = &credentials.jwt
        && token.split('.').count() == 3
    {
        return jwt.verify(token).map_err(|why| {
            unauthorized(
                &format!("the bearer token is not accepted: {why}"),
                "Bearer realm=\"annals\", error=\"invalid_token\"",
            )
        });
    }
    match credentials.keys.as_ref().and_then(|keys| keys.find(token)) {
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
