//! The projector's one error type.

use event_store::Position;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("view database: {0}")]
    Database(#[from] sqlx::Error),

    #[error("applying the view schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    #[error("event store: {0}")]
    Store(#[from] event_store::Error),

    #[error("invalid view database URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("invalid projector options: {0}")]
    InvalidOptions(String),

    #[error("no projection named {0:?}")]
    UnknownProjection(String),

    /// A projection whose declaration cannot work (bad name or table name,
    /// two projections with one name or one table).
    #[error("invalid projection {name:?}: {reason}")]
    InvalidProjection { name: String, reason: String },

    /// The request does not fit the projection's state (skipping an event
    /// of a projection that is not failed, a rebuild already running, ...).
    #[error("projection {projection}: {detail}")]
    Conflict { projection: String, detail: String },

    /// The store delivered an event out of sequence. Never skipped over.
    #[error("the event store delivered position {found} where {expected} was due")]
    Gap { expected: Position, found: Position },

    /// A projection's handler failed on an event (a poison event).
    #[error("projection {projection} failed at position {position}: {reason}")]
    ProjectionFailed {
        projection: String,
        position: Position,
        reason: String,
    },

    /// The view database holds something the projector cannot work with.
    #[error("view schema: {0}")]
    Schema(String),

    /// The operation stopped because the projector is shutting down; what
    /// was committed stays and the work resumes at the next start.
    #[error("stopped by shutdown")]
    ShutDown,
}

impl Error {
    /// True for failures of the infrastructure (connection lost, database
    /// busy, store unreachable) that a later retry may not see.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(e) => is_transient_sql(e),
            Error::Store(e) => e.is_store_failure(),
            _ => false,
        }
    }
}

/// Whether a database error says nothing about the data: lost connections,
/// busy or locked databases, serialization failures, a server shutting down.
/// Anything else (a constraint, a type error) is a fault of what was written.
pub fn is_transient_sql(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // SQLite: 5 BUSY, 6 LOCKED and their extended codes (x + 256k).
            let sqlite_busy = code
                .parse::<i64>()
                .map(|c| matches!(c & 0xff, 5 | 6))
                .unwrap_or(false);
            // PostgreSQL: serialization failure, deadlock, connection
            // exceptions, insufficient resources, operator intervention.
            let pg_transient = code == "40001"
                || code == "40P01"
                || code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57");
            sqlite_busy || pg_transient
        }
        _ => false,
    }
}
