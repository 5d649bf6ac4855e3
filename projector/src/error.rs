//! The projector's one error type.
//!
//! A variant that wraps another library's error says what that error says
//! in its own message and does not also hand it out as its `source()`:
//! a caller printing the chain (`anyhow`'s `{:#}`) would otherwise repeat
//! the same text once per layer.

use event_store::Position;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("view database: {}", sql_message(.0))]
    Database(sqlx::Error),

    #[error("applying the view schema: {}", migrate_message(.0))]
    Migrate(sqlx::migrate::MigrateError),

    #[error("event store: {0}")]
    Store(event_store::Error),

    /// The view database cannot write for want of space. SQLite reports a
    /// full disk as "database or disk is full" or, when the file it cannot
    /// grow is its shared-memory index, as a mere "disk I/O error"; this
    /// says what the filesystem says.
    #[error(
        "view database {database}: no space left on device ({free_bytes} bytes free on {filesystem}): {error}"
    )]
    NoSpace {
        database: String,
        filesystem: String,
        free_bytes: u64,
        error: String,
    },

    /// The view database does not exist and could not be created.
    #[error("the view database {database:?} does not exist and cannot be created: {reason}")]
    CreateDatabase { database: String, reason: String },

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

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::Migrate(e)
    }
}

impl From<event_store::Error> for Error {
    fn from(e: event_store::Error) -> Self {
        Error::Store(e)
    }
}

/// A database error as one message: sqlx's own text, which already holds
/// the driver's, and for a full disk the words an operator looks for
/// (SQLite says only "database or disk is full").
pub fn sql_message(e: &sqlx::Error) -> String {
    if is_disk_full(e) {
        format!("no space left on device ({e})")
    } else {
        e.to_string()
    }
}

fn migrate_message(e: &sqlx::migrate::MigrateError) -> String {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => sql_message(e),
        e => e.to_string(),
    }
}

/// Whether the database could not write for want of space: SQLite's
/// `SQLITE_FULL`, PostgreSQL's `disk_full`, or the OS saying so.
pub fn is_disk_full(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("53100")
                || sqlite_primary_code(db.as_ref()) == Some(SQLITE_FULL)
        }
        _ => false,
    }
}

/// Whether the database failed to write or read its files: SQLite's
/// `SQLITE_IOERR` family and `SQLITE_FULL`, or an I/O error of the OS.
pub(crate) fn is_storage_failure(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => matches!(
            sqlite_primary_code(db.as_ref()),
            Some(SQLITE_IOERR | SQLITE_FULL)
        ),
        _ => false,
    }
}

/// SQLite result codes this module tells apart (primary codes; extended
/// ones add multiples of 256).
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;

/// The primary result code of an error SQLite returned (`None` for other
/// databases, whose codes are not SQLite's).
fn sqlite_primary_code(db: &dyn sqlx::error::DatabaseError) -> Option<i64> {
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    db.code()?.parse::<i64>().ok().map(|c| c & 0xff)
}

impl Error {
    /// True for failures of the infrastructure (connection lost, database
    /// busy, disk full, store unreachable) that a later retry may not see.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(e) => is_transient_sql(e),
            Error::NoSpace { .. } => true,
            Error::Store(e) => e.is_store_failure(),
            _ => false,
        }
    }
}

/// Whether a database error says nothing about the data: lost connections,
/// busy or locked databases, serialization failures, a full disk or a
/// failing one, a server shutting down. Anything else (a constraint, a
/// type error) is a fault of what was written.
pub fn is_transient_sql(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // SQLite: busy or locked, and I/O errors and a full disk, which
            // no event is to blame for: the batch waits for the disk.
            let sqlite_busy = sqlite_primary_code(db.as_ref()).is_some_and(|c| {
                matches!(c, SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL)
            });
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
