//! API keys and roles on every HTTP surface a process serves.
//!
//! A caller presents `Authorization: Bearer <token>`; the token's SHA-256
//! is looked up in the keys file (`keys`), and the key must hold the role
//! the route needs. The role is derived from what the process serves, not
//! declared per route: query routes and the OpenAPI document need `read`,
//! command routes `write` (those that erase personal data `admin`),
//! projection admin `admin`; on the store, reads and subscriptions `read`,
//! appends and snapshots `write`, erasing a subject's key `admin`.
//! `/health/live` is open; `/health/ready` tells anyone whether the
//! process is ready and only an authenticated caller why.
//!
//! A key may be limited to stream prefixes (the store's `StreamScope`),
//! and each key to a rate of requests (`429` over it). Admin actions are
//! recorded in the audit log (`audit`).
//!
//! Authentication is on when the keys file exists or `--auth` asks for it.
//! Without it, or without TLS (`--tls-cert`, `--tls-key`), a process
//! serves only loopback addresses unless `--insecure` says otherwise.

mod audit;
mod command;
mod gate;
mod jwt;
mod keys;
mod watched;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use serde::{Deserialize, Serialize};

pub use audit::AUDIT_FILE_NAME;
pub(crate) use command::{audit_command, keys_command};
pub use gate::Rule;
pub use keys::KEYS_FILE_NAME;
use keys::KeyRing;

/// What a key may do.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries, store reads and subscriptions, OpenAPI documents.
    Read,
    /// Commands and store appends.
    Write,
    /// Projection admin (status, rebuild, skip, resume), personal-data
    /// erasure, and the store's key operations.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// How a process lets callers in: with the keys of a keys file, or (on
/// loopback, or where the operator said `--insecure`) anyone.
#[derive(Debug, Clone)]
pub struct Access {
    /// What callers may present; none while authentication is off.
    keys: Option<Arc<gate::Credentials>>,
    insecure: bool,
    /// Whether the process serves TLS: keys sent in the clear protect
    /// nothing on a network.
    tls: bool,
    limits: Option<Arc<gate::RateLimits>>,
    audit: Option<audit::AuditLog>,
}

impl Access {
    /// From a process's flags; `data_dir` is where `annals serve` and
    /// `annals store` look for the keys file when `--keys-file` does not
    /// name one.
    pub(crate) fn from_args(
        args: &crate::AuthArgs,
        data_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let path = match (&args.keys_file, data_dir) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(dir)) => Some(dir.join(KEYS_FILE_NAME)),
            (None, None) => None,
        };
        let audit = match (&args.audit_log, &path) {
            (Some(file), _) => Some(audit::AuditLog::at(file.clone())),
            (None, Some(keys_file)) => Some(audit::AuditLog::at(audit_beside(keys_file))),
            (None, None) => None,
        };
        let jwt = args
            .jwt_settings()
            .map(|settings| jwt::JwtVerifier::load(&settings))
            .transpose()?;
        let ring = match path {
            Some(path) if args.auth || path.exists() => Some(KeyRing::open(path)),
            None if args.auth && jwt.is_none() => {
                anyhow::bail!("--auth needs --keys-file: the file of the keys to accept")
            }
            _ => None,
        };
        let keys = (ring.is_some() || jwt.is_some())
            .then(|| Arc::new(gate::Credentials { keys: ring, jwt }));
        Ok(Self {
            keys,
            insecure: args.insecure,
            tls: false,
            limits: gate::RateLimits::new(args.rate_limit_per_second).map(Arc::new),
            audit,
        })
    }

    /// The same, for a process that serves TLS (`on`) or plain HTTP.
    pub(crate) fn with_tls(self, on: bool) -> Self {
        Self { tls: on, ..self }
    }

    pub fn is_on(&self) -> bool {
        self.keys.is_some()
    }

    /// Whether the operator turned the exposure check off (`--insecure`)
    /// while keys or TLS are missing: readiness says so, so that a
    /// forgotten flag shows on every probe, not only in a start-up log.
    pub fn is_insecure(&self) -> bool {
        self.insecure && !self.missing().is_empty()
    }

    /// What a non-loopback address needs that this process lacks.
    fn missing(&self) -> Vec<Missing> {
        let mut missing = Vec::new();
        if !self.is_on() {
            missing.push(Missing::Authentication);
        }
        if !self.tls {
            missing.push(Missing::Tls);
        }
        missing
    }

    /// `router`'s routes (not its fallbacks: an unknown path tells nothing)
    /// behind the keys, each needing what `rule` says; with authentication
    /// off, only the audit log's record of admin actions.
    pub fn protect(&self, router: Router, rule: Rule) -> Router {
        // A router without routes has nothing to protect (and axum refuses
        // a route layer on it).
        if (self.keys.is_none() && self.audit.is_none()) || !router.has_routes() {
            return router;
        }
        router.route_layer(axum::middleware::from_fn_with_state(
            gate::Gate::new(
                self.keys.clone(),
                rule,
                self.limits.clone(),
                self.audit.clone(),
            ),
            gate::gate,
        ))
    }

    /// The process's health and OpenAPI routes (see [`crate::health`]),
    /// and `/audit` where it keeps an audit log (then in `document` too),
    /// behind the keys as [`Rule::Health`] says. Readiness warns when the
    /// process runs `--insecure`.
    pub fn health_routes(
        &self,
        mut readiness: crate::health::Readiness,
        mut document: utoipa::openapi::OpenApi,
    ) -> Router {
        readiness.insecure = self.is_insecure();
        if self.audit.is_some() {
            document.merge(audit_openapi());
        }
        self.protect(
            crate::health::routes(readiness, document).merge(self.audit_routes()),
            Rule::Health,
        )
    }

    /// `GET /metrics` (see [`crate::telemetry`]) for the `read` role,
    /// reading `scrape` into its gauges; nothing under `--no-metrics`.
    pub fn metrics_routes(&self, scrape: crate::telemetry::Scrape) -> Router {
        self.protect(crate::telemetry::routes(scrape), Rule::Needs(Role::Read))
    }

    /// The read routes of the store the process uses, under `/store`
    /// (`read` role): the admin UI's stream browser, log and live tail.
    /// Their subscriptions end when `stop` triggers.
    pub fn store_routes(
        &self,
        store: Arc<dyn event_store::EventStore>,
        stop: &crate::setup::Stop,
    ) -> Router {
        let config = event_store_http::ServerConfig {
            stopping: Some(stop.watch()),
            ..event_store_http::ServerConfig::default()
        };
        let routes = Router::new().nest(
            crate::ui::STORE_PREFIX,
            event_store_http::read_router(store, config),
        );
        self.protect(routes, Rule::Needs(Role::Read))
    }

    /// `GET /sagas` over `sagas` (`read` role).
    pub fn saga_routes(&self, sagas: Vec<command_api::SagaHandle>) -> Router {
        self.protect(crate::sagas::status_routes(sagas), Rule::Needs(Role::Read))
    }

    /// `GET /audit?last=N`, the audit log's last records (100 by default,
    /// oldest first), for the `admin` role; nothing when the process has no
    /// audit log. Protect it with [`Rule::Health`] or [`Rule::Store`].
    pub fn audit_routes(&self) -> Router {
        match &self.audit {
            Some(log) => Router::new().route(
                "/audit",
                axum::routing::get(audit_route).with_state(log.clone()),
            ),
            None => Router::new(),
        }
    }

    /// Refuses to serve a non-loopback address without keys or without
    /// TLS, unless the operator said `--insecure` (then a warning).
    pub fn check_exposure(&self, addr: SocketAddr, name: &str) -> anyhow::Result<()> {
        let missing = self.missing();
        if !missing.is_empty() && !addr.ip().is_loopback() {
            if !self.insecure {
                return Err(refusal(addr, name, &missing));
            }
            let without = Missing::list(&missing);
            tracing::warn!(%addr, "serving a non-loopback address without {without} (--insecure): anyone who can reach it, or see its traffic, may read, write and erase");
            eprintln!("{name}: warning: --insecure: serving {addr} without {without}");
        }
        if let Some(ring) = self.keys.as_ref().and_then(|c| c.keys.as_ref()) {
            tracing::info!(keys_file = %ring.path().display(), "API keys required");
        }
        Ok(())
    }

    /// The refusal of [`Access::check_exposure`] for the addresses
    /// `listen` names, before the process does anything else (the split
    /// processes reach their store before they bind).
    pub async fn check_listen(&self, listen: &str, name: &str) -> anyhow::Result<()> {
        let missing = self.missing();
        if missing.is_empty() || self.insecure {
            return Ok(());
        }
        let addrs = tokio::net::lookup_host(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        for addr in addrs {
            if !addr.ip().is_loopback() {
                return Err(refusal(addr, name, &missing));
            }
        }
        Ok(())
    }
}

/// The audit log beside the keys file at `keys_file`.
pub(crate) fn audit_beside(keys_file: &Path) -> PathBuf {
    keys_file.with_file_name(AUDIT_FILE_NAME)
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    last: Option<usize>,
}

#[utoipa::path(get, path = "/audit", tag = "admin",
    params(("last" = Option<usize>, Query, description = "How many of the latest records (default 100)")),
    responses((status = 200, description = "The latest admin actions, oldest first: `at`, `who` (the key's name), `action`, `status`")))]
async fn audit_route(
    axum::extract::State(log): axum::extract::State<audit::AuditLog>,
    query: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let last = match query {
        Ok(q) => q.0.last.unwrap_or(100),
        Err(e) => {
            return http_edge::Problem::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid-request",
                "Invalid request",
                format!("malformed query: {e}"),
            )
            .into_response();
        }
    };
    match tokio::task::spawn_blocking(move || log.read(Some(last))).await {
        Ok(Ok(records)) => axum::Json(records).into_response(),
        Ok(Err(e)) => http_edge::Problem::internal(&format!("{e:#}")).into_response(),
        Err(e) => http_edge::Problem::internal(&e.to_string()).into_response(),
    }
}

/// The OpenAPI document of `GET /audit`.
fn audit_openapi() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(audit_route))]
    struct AuditApi;
    <AuditApi as utoipa::OpenApi>::openapi()
}

/// What serving a non-loopback address needs.
#[derive(Debug, Clone, Copy)]
enum Missing {
    Authentication,
    Tls,
}

impl Missing {
    fn what(self) -> &'static str {
        match self {
            Missing::Authentication => "authentication",
            Missing::Tls => "TLS",
        }
    }

    fn remedy(self, name: &str) -> String {
        match self {
            Missing::Authentication => format!("create a key with `{name} keys create`"),
            Missing::Tls => "give --tls-cert and --tls-key".to_owned(),
        }
    }

    /// "authentication and TLS", say.
    fn list(missing: &[Missing]) -> String {
        let names: Vec<&str> = missing.iter().map(|m| m.what()).collect();
        names.join(" and ")
    }
}

/// One line naming what is missing and how to add it.
fn refusal(addr: SocketAddr, name: &str, missing: &[Missing]) -> anyhow::Error {
    let remedies: Vec<String> = missing.iter().map(|m| m.remedy(name)).collect();
    anyhow::anyhow!(
        "refusing to serve {addr} without {}: {}, or pass --insecure",
        Missing::list(missing),
        remedies.join(" and ")
    )
}

impl crate::KeysFileArgs {
    pub(crate) fn path(&self) -> PathBuf {
        self.keys_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(KEYS_FILE_NAME))
    }
}

impl crate::AuthArgs {
    /// The JWT settings, when `--jwt-jwks` is given (clap makes sure the
    /// issuer and audience are too).
    fn jwt_settings(&self) -> Option<jwt::JwtSettings> {
        Some(jwt::JwtSettings {
            jwks_file: self.jwt_jwks.clone()?,
            issuer: self.jwt_issuer.clone()?,
            audience: self.jwt_audience.clone()?,
            algorithms: self.jwt_algorithm.clone(),
            roles_claim: self.jwt_roles_claim.clone(),
        })
    }
}

impl crate::AuditArgs {
    pub(crate) fn path(&self) -> PathBuf {
        self.audit_log
            .clone()
            .unwrap_or_else(|| audit_beside(&self.file.path()))
    }
}
