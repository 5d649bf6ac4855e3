//! The view database: a SQLite file (WAL mode) or a PostgreSQL database,
//! reached through sqlx's `Any` driver so that projections and queries are
//! written once for both. Opening applies annals' own tables (the
//! checkpoints) in `migrations/` with sqlx's migrator, which records what it
//! applied and is a no-op the second time. The view tables are the
//! projections' own: the projector creates them from their DDL.
//!
//! **Erased personal data on SQLite.** Overwriting a row is not enough for
//! the old bytes to leave the disk: SQLite leaves deleted cells and freed
//! pages as they were, and in WAL mode the pages a transaction changed are
//! appended to the `-wal` file while older images of them stay there (and
//! in the database file) until a checkpoint. So every connection runs with
//! `secure_delete = ON` (deleted content and freed pages are zeroed), and a
//! write transaction that erased personal data ([`WriteTx::erased_personal_data`])
//! is followed, once it committed, by `wal_checkpoint(TRUNCATE)`: the new
//! page images overwrite the old ones in the database file and the WAL is
//! emptied. A checkpoint that cannot finish (readers holding an older
//! snapshot) is retried a few times at once, then after every later write
//! transaction and in the background, with a warning each time, until it
//! does; opening the database runs one too, for an erasure whose checkpoint
//! a crash interrupted. PostgreSQL keeps old row versions until `VACUUM`
//! and in its WAL; nothing here changes that (see ARCHITECTURE.md).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use backon::BackoffBuilder;
use sqlx::AnyConnection;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor, Row, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::checkpoint::{self, Checkpoint, Track};
use crate::error::{Error, Result};

/// The file name of the SQLite view database inside a data directory.
pub const SQLITE_FILE_NAME: &str = "views.sqlite";

/// Checkpoints tried at once after an erasure before the rest is left to
/// later write transactions and the background retry.
const PURGE_ATTEMPTS: u32 = 4;
/// How long one checkpoint attempt waits for readers of an older snapshot
/// (SQLite's busy handler). The write gate is held meanwhile, so this
/// bounds the pause of the projector's writes.
const PURGE_BUSY_TIMEOUT_MS: u64 = 100;
/// The background retry's longest wait between checkpoints.
const PURGE_RETRY_DELAY_MAX: Duration = Duration::from_secs(60);

// Migration 0002 created the reference domain's tables before projections
// declared their own DDL; it is gone, and databases that applied it must
// still open, so a migration recorded as applied but no longer known is
// ignored (the tables it made are the ones the projections' DDL declares).
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("../migrations/sqlite")
};
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("../migrations/postgres")
};

/// The SQL dialect of the view database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

/// How to open the view database.
#[derive(Debug, Clone)]
pub struct ViewDbOptions {
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long a request waits for a connection before it fails: for a
    /// free one of the pool, or for a new one while the database cannot be
    /// reached (the pool retries connecting until then). Short, so that
    /// during an outage queries and readiness probes answer `503` at once
    /// rather than after the probe gave up.
    pub acquire_timeout: Duration,
    /// SQLite only: how long a writer waits for another process's write
    /// transaction before giving up with "database is locked".
    pub sqlite_busy_timeout: Duration,
    /// SQLite only: the page cache of each connection, in bytes, allocated
    /// as pages are used. A batch's transaction keeps every page it changed
    /// here until it commits; once they no longer fit, SQLite writes them to
    /// the WAL early and again at commit.
    pub sqlite_cache_bytes_max: u64,
    /// PostgreSQL only: the schema that holds the views (created if
    /// missing). `None` uses the server's search path.
    pub postgres_schema: Option<String>,
}

impl ViewDbOptions {
    /// The default of [`ViewDbOptions::acquire_timeout`], in milliseconds:
    /// well under a one-second readiness probe.
    pub const ACQUIRE_TIMEOUT_MS_DEFAULT: u64 = 500;
}

impl Default for ViewDbOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_millis(Self::ACQUIRE_TIMEOUT_MS_DEFAULT),
            sqlite_busy_timeout: Duration::from_secs(10),
            sqlite_cache_bytes_max: 64 << 20,
            postgres_schema: None,
        }
    }
}

/// A handle on the view database: a connection pool plus what the projector
/// needs to write safely. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ViewDb {
    inner: Arc<Inner>,
}

/// SQLite keeps temporary data in memory (see [`ViewDb::open`]).
const TEMP_IN_MEMORY: &str = "PRAGMA temp_store = MEMORY";

#[derive(Debug)]
struct Inner {
    pool: AnyPool,
    /// SQLite: a pool of one connection that every write transaction of
    /// this process uses. A connection's page cache is dropped whenever
    /// another connection wrote to the file; with one writing connection,
    /// the pages a batch touches stay cached for the next batch instead of
    /// being read back for every transaction. PostgreSQL: the pool.
    write_pool: AnyPool,
    dialect: Dialect,
    /// SQLite admits one writer at a time. Writers of this process queue
    /// here instead of polling the file lock, which would add sleeps of up
    /// to 100 ms under contention; other processes are still kept apart by
    /// SQLite's own lock and the busy timeout.
    write_gate: Arc<Mutex<()>>,
    description: String,
    /// SQLite: the busy timeout of every connection, restored after a
    /// checkpoint ran with a shorter one.
    busy_timeout_ms: u64,
    /// SQLite: an erasure committed and the WAL may still hold the old page
    /// images. Cleared only by a checkpoint that completed.
    purge_pending: AtomicBool,
    /// SQLite: the background retry of the checkpoint is running.
    purge_retrying: AtomicBool,
    /// SQLite: a transaction that spilled its temporary data to files
    /// ended without setting it back (see [`ViewDb::begin_bulk_write`]).
    spilled: AtomicBool,
}

/// A write transaction on the view database. Dropping it without
/// [`WriteTx::commit`] rolls it back.
#[derive(Debug)]
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    gate: Option<OwnedMutexGuard<()>>,
    db: Arc<Inner>,
    erased: bool,
    /// Tables to drop once committed, before the gate is released.
    retired: Vec<String>,
}

impl WriteTx {
    /// The connection, for queries inside the transaction.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Declares that this transaction overwrites or deletes personal data,
    /// so that once it commits the old bytes are purged from the files the
    /// database keeps beside its live pages (see the module documentation).
    pub fn erased_personal_data(&mut self) {
        self.erased = true;
    }

    /// SQLite: drops these tables (a swap's retired ones, see
    /// `tables::swap_in`) right after the commit, before any other writer
    /// of this process runs, each in a statement of its own outside any
    /// transaction (which needs no statement journal), then purges the WAL.
    /// A failure to drop them is logged; they are dropped at the next start.
    pub(crate) fn drop_after_commit(&mut self, tables: Vec<String>) {
        if self.db.dialect == Dialect::Sqlite {
            self.retired = tables;
        }
    }

    /// Commits. After an erasure the WAL is purged before the write gate is
    /// released; a purge that cannot finish yet does not fail the commit (it
    /// is logged and retried until it succeeds).
    pub async fn commit(self) -> Result<()> {
        let WriteTx {
            tx,
            gate,
            db,
            erased,
            retired,
        } = self;
        tx.commit().await?;
        if db.dialect == Dialect::Sqlite {
            if erased {
                db.purge_pending.store(true, Ordering::SeqCst);
            }
            if !retired.is_empty()
                && let Err(e) = db.drop_tables(&retired).await
            {
                tracing::warn!(error = %e, "dropping the tables a swap replaced failed; they are dropped at the next start");
            }
            // Committed: a failure here leaves `spilled` set for the next
            // write to finish.
            if db.spilled.load(Ordering::SeqCst) {
                match db.temp_store(TEMP_IN_MEMORY).await {
                    Ok(()) => db.spilled.store(false, Ordering::SeqCst),
                    Err(e) => {
                        tracing::warn!(error = %e, "view database: temporary storage not set back to memory yet")
                    }
                }
            }
            if db.purge_pending.load(Ordering::SeqCst) {
                db.purge(PURGE_ATTEMPTS).await;
            }
        }
        drop(gate);
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

impl ViewDb {
    /// Opens `sqlite://<path>` (the file is created if missing) or
    /// `postgres://...` / `postgresql://...`, then applies the schema.
    pub async fn open(url: &str) -> Result<ViewDb> {
        ViewDb::open_with(url, ViewDbOptions::default()).await
    }

    /// Opens the SQLite view database of a data directory.
    pub async fn open_in_data_dir(data_dir: &Path) -> Result<ViewDb> {
        ViewDb::open_in_data_dir_with(data_dir, ViewDbOptions::default()).await
    }

    /// [`ViewDb::open_in_data_dir`] with `options`.
    pub async fn open_in_data_dir_with(data_dir: &Path, options: ViewDbOptions) -> Result<ViewDb> {
        ViewDb::open_with(&sqlite_url(&data_dir.join(SQLITE_FILE_NAME))?, options).await
    }

    /// [`ViewDb::open`] with `options`.
    pub async fn open_with(url: &str, options: ViewDbOptions) -> Result<ViewDb> {
        sqlx::any::install_default_drivers();
        if options.max_connections == 0 {
            return Err(Error::InvalidOptions(
                "max_connections must be at least 1".into(),
            ));
        }
        let (dialect, connect_url) = parse_url(url)?;
        let description = redact(url);
        let (pool, write_pool) = match dialect {
            Dialect::Sqlite => sqlite_pools(&connect_url, &description, &options).await?,
            Dialect::Postgres => {
                let pool = postgres_pool(&connect_url, &description, &options).await?;
                (pool.clone(), pool)
            }
        };
        let migrator = match dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await?;
        tracing::debug!(database = %description, "view database open, schema up to date");
        let inner = Arc::new(Inner {
            pool,
            write_pool,
            dialect,
            write_gate: Arc::new(Mutex::new(())),
            description,
            busy_timeout_ms: u64::try_from(options.sqlite_busy_timeout.as_millis())
                .unwrap_or(u64::MAX),
            purge_pending: AtomicBool::new(false),
            purge_retrying: AtomicBool::new(false),
            spilled: AtomicBool::new(false),
        });
        if dialect == Dialect::Sqlite {
            // Whether an erasure's purge was cut short by a crash is not
            // recorded anywhere; one checkpoint at open covers it.
            inner.purge_pending.store(true, Ordering::SeqCst);
            let _gate = inner.write_gate.clone().lock_owned().await;
            inner.purge(1).await;
        }
        Ok(ViewDb { inner })
    }

    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// The connection pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    /// The URL the database was opened with, without its password.
    pub fn description(&self) -> &str {
        &self.inner.description
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes can
    /// never fail halfway because another writer committed in between.
    pub async fn begin_write(&self) -> Result<WriteTx> {
        match self.inner.dialect {
            Dialect::Sqlite => {
                let gate = self.inner.write_gate.clone().lock_owned().await;
                // After a spilling transaction that did not commit.
                if self.inner.spilled.load(Ordering::SeqCst) {
                    self.inner.temp_store(TEMP_IN_MEMORY).await?;
                    self.inner.spilled.store(false, Ordering::SeqCst);
                }
                let tx = self.inner.write_pool.begin_with("BEGIN IMMEDIATE").await?;
                Ok(WriteTx {
                    tx,
                    gate: Some(gate),
                    db: self.inner.clone(),
                    erased: false,
                    retired: Vec::new(),
                })
            }
            Dialect::Postgres => Ok(WriteTx {
                tx: self.inner.pool.begin().await?,
                gate: None,
                db: self.inner.clone(),
                erased: false,
                retired: Vec::new(),
            }),
        }
    }

    /// [`ViewDb::begin_write`] for a bulk step that touches no erased data
    /// (building a rebuilt view's indexes). On SQLite its temporary data
    /// (statement journals, the sorts of `CREATE INDEX`) goes to temporary
    /// files, never synced and mostly served from the OS page cache,
    /// instead of memory, where it grows with the table (an index build of
    /// a 1.66M-row view held hundreds of MB). Other transactions keep it in
    /// memory, so that an erasure's old page images never reach a disk.
    pub async fn begin_bulk_write(&self) -> Result<WriteTx> {
        if self.inner.dialect == Dialect::Sqlite {
            let gate = self.inner.write_gate.clone().lock_owned().await;
            // The pragma cannot change inside a transaction. The write
            // pool holds one connection, and the gate keeps other writers
            // of this process off it until the transaction ends.
            self.inner.spilled.store(true, Ordering::SeqCst);
            self.inner.temp_store("PRAGMA temp_store = FILE").await?;
            let tx = self.inner.write_pool.begin_with("BEGIN IMMEDIATE").await?;
            return Ok(WriteTx {
                tx,
                gate: Some(gate),
                db: self.inner.clone(),
                erased: false,
                retired: Vec::new(),
            });
        }
        self.begin_write().await
    }

    /// SQLite: drops the tables a swap retired (see `tables::swap_in`), each
    /// in a statement of its own outside any transaction, which needs no
    /// statement journal; then purges the WAL, as the tables may hold rows
    /// of subjects erased since the live view last caught up. Nothing to
    /// do on PostgreSQL, whose swap drops them.
    pub(crate) async fn drop_retired(&self, tables: &[String]) -> Result<()> {
        if self.inner.dialect != Dialect::Sqlite {
            return Ok(());
        }
        let gate = self.inner.write_gate.clone().lock_owned().await;
        let dropped = self.inner.drop_tables(tables).await;
        if self.inner.purge_pending.load(Ordering::SeqCst) {
            self.inner.purge(PURGE_ATTEMPTS).await;
        }
        drop(gate);
        dropped
    }

    /// Starts a read-only transaction whose statements all see one snapshot
    /// of the database: a page of rows and the checkpoint read beside it
    /// describe the same moment.
    pub async fn begin_read(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.inner.dialect {
            // A deferred SQLite transaction takes its WAL snapshot at the
            // first read and keeps it to the end.
            Dialect::Sqlite => self.inner.pool.begin_with("BEGIN").await?,
            Dialect::Postgres => {
                self.inner
                    .pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        })
    }

    /// A projection's checkpoint for one track.
    pub async fn checkpoint(&self, projection: &str, track: Track) -> Result<Option<Checkpoint>> {
        let mut conn = self.inner.pool.acquire().await?;
        checkpoint::load(&mut conn, projection, track).await
    }

    /// Every checkpoint in the database.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let mut conn = self.inner.pool.acquire().await?;
        checkpoint::load_all(&mut conn).await
    }

    /// SQLite: whether erased personal data may still be in the WAL
    /// because no checkpoint could complete since the erasure (it is being
    /// retried). Always `false` on PostgreSQL.
    pub fn purge_pending(&self) -> bool {
        self.inner.purge_pending.load(Ordering::SeqCst)
    }

    /// Closes every connection; later calls fail. A purge still pending is
    /// tried once more first.
    pub async fn close(&self) {
        if self.purge_pending() {
            let _gate = self.inner.write_gate.clone().lock_owned().await;
            self.inner.purge(1).await;
        }
        self.inner.pool.close().await;
        self.inner.write_pool.close().await;
    }
}

/// The settings of every SQLite connection, as one batch of pragmas.
fn sqlite_pragmas(options: &ViewDbOptions) -> String {
    let busy_ms = options.sqlite_busy_timeout.as_millis();
    let cache_kib = (options.sqlite_cache_bytes_max / 1024).max(1);
    // Per connection: WAL lets readers run beside the writer and
    // see the last committed batch; NORMAL syncs at WAL
    // checkpoints only, and a commit lost to a power cut takes
    // its checkpoint row with it, so the batch is simply applied
    // again.
    //
    // A batch's multi-row upserts each keep a statement journal
    // (the pages they change, to undo the statement alone);
    // `temp_store = MEMORY` keeps it in memory rather than in a
    // temporary file written and read back for every statement.
    // A checkpoint copies the WAL into the database file and
    // syncs both; 16,384 pages (64 MiB with 4 KiB pages) between
    // checkpoints instead of 1,000 lets a page changed by several
    // batches be copied and synced once. Neither changes what a
    // commit guarantees.
    //
    // `secure_delete = ON` zeroes deleted cells, the old version
    // of an updated row and index entry, and pages put on the
    // free list (a dropped table's), so that erased personal
    // data is not left in the file's unused space.
    //
    // The pragma text is built from numbers only.
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         PRAGMA busy_timeout = {busy_ms}; PRAGMA cache_size = -{cache_kib}; \
         PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 16384; \
         PRAGMA secure_delete = ON;"
    )
}

/// The SQLite pools: readers, and the one writer connection every write
/// transaction goes through.
async fn sqlite_pools(
    connect_url: &str,
    description: &str,
    options: &ViewDbOptions,
) -> Result<(AnyPool, AnyPool)> {
    let pragmas = sqlite_pragmas(options);
    // A pool retries a connection that fails to open until its
    // acquire timeout and then says only that it timed out, so
    // one connection is opened here first: a full disk, a
    // read-only directory or a damaged file is reported as
    // what it is, at once.
    let probe = async {
        let mut probe = <AnyConnection as sqlx::Connection>::connect(connect_url).await?;
        probe.execute(sqlx::AssertSqlSafe(pragmas.clone())).await?;
        sqlx::Connection::close(probe).await
    };
    if let Err(e) = probe.await {
        return Err(sqlite_open_failure(e, description, connect_url));
    }
    let with_pragmas = |options: AnyPoolOptions| {
        let pragmas = pragmas.clone();
        options
            .after_connect(move |conn, _| {
                let pragmas = pragmas.clone();
                Box::pin(async move {
                    conn.execute(sqlx::AssertSqlSafe(pragmas)).await?;
                    Ok(())
                })
            })
            .before_acquire(|conn, _| Box::pin(async move { Ok(usable_after_rollback(conn)) }))
    };
    let pool = with_pragmas(pool_options(options))
        .connect(connect_url)
        .await?;
    let writer = with_pragmas(
        AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(options.acquire_timeout),
    )
    .connect(connect_url)
    .await?;
    Ok((pool, writer))
}

/// The PostgreSQL pool, its connections in `options.postgres_schema` when
/// given; reads and writes share it.
async fn postgres_pool(
    connect_url: &str,
    description: &str,
    options: &ViewDbOptions,
) -> Result<AnyPool> {
    let schema = match &options.postgres_schema {
        Some(schema) => Some(checked_identifier(schema)?),
        None => None,
    };
    // As for SQLite, one connection outside the pool first: it
    // reports why the server refuses (where the pool would only
    // time out), and creates a database that does not exist yet.
    ensure_postgres_database(connect_url, description).await?;
    if let Some(schema) = &schema {
        // The schema must exist before connections point their
        // search path at it.
        let mut conn = <AnyConnection as sqlx::Connection>::connect(connect_url).await?;
        conn.execute(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
        )))
        .await?;
        sqlx::Connection::close(conn).await?;
    }
    let pool = pool_options(options)
        .after_connect(move |conn, _| {
            let schema = schema.clone();
            Box::pin(async move {
                if let Some(schema) = schema {
                    conn.execute(sqlx::AssertSqlSafe(format!(
                        "SET search_path TO \"{schema}\""
                    )))
                    .await?;
                }
                Ok(())
            })
        })
        .connect(connect_url)
        .await?;
    Ok(pool)
}

/// The pool every dialect starts from.
fn pool_options(options: &ViewDbOptions) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
}

impl Inner {
    /// SQLite, holding the write gate: drops those of `tables` that exist,
    /// each in an autocommit statement, trying every one; marks the WAL for
    /// a purge if any was dropped (see [`ViewDb::drop_retired`]).
    async fn drop_tables(&self, tables: &[String]) -> Result<()> {
        let mut conn = self.write_pool.acquire().await?;
        let mut first_error = None;
        for table in tables {
            match crate::tables::sqlite_table_exists(&mut conn, table).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            }
            self.purge_pending.store(true, Ordering::SeqCst);
            if let Err(e) = crate::tables::drop_tables(&mut conn, std::slice::from_ref(table)).await
            {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Sets where SQLite keeps temporary data, on the write connection.
    async fn temp_store(&self, pragma: &'static str) -> Result<()> {
        let mut conn = self.write_pool.acquire().await?;
        sqlx::query(pragma).execute(&mut *conn).await?;
        Ok(())
    }

    /// Up to `attempts` checkpoints that empty the WAL, while the caller
    /// holds the write gate. Success clears the pending purge; failure
    /// leaves it for the next write transaction and starts the background
    /// retry. Returns whether the WAL was emptied.
    async fn purge(self: &Arc<Self>, attempts: u32) -> bool {
        let mut delay = Duration::from_millis(20);
        for attempt in 1..=attempts {
            match self.checkpoint_truncate().await {
                Ok(true) => {
                    self.purge_pending.store(false, Ordering::SeqCst);
                    tracing::debug!(database = %self.description, "WAL checkpointed and emptied");
                    return true;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(database = %self.description, error = %e, attempt, "WAL checkpoint failed");
                }
            }
            if attempt < attempts {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        tracing::warn!(
            database = %self.description,
            "the WAL could not be emptied after erasing personal data (readers hold an older \
             snapshot, or another process writes); the old page images stay in the -wal file \
             until a checkpoint succeeds, which is retried"
        );
        self.retry_in_background();
        false
    }

    /// One `wal_checkpoint(TRUNCATE)` on the writing connection, waiting at
    /// most [`PURGE_BUSY_TIMEOUT_MS`] for readers. `Ok(false)`: it could
    /// not complete.
    async fn checkpoint_truncate(&self) -> Result<bool> {
        let mut conn = self.write_pool.acquire().await?;
        conn.execute(sqlx::AssertSqlSafe(format!(
            "PRAGMA busy_timeout = {PURGE_BUSY_TIMEOUT_MS}"
        )))
        .await?;
        let result = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&mut *conn)
            .await;
        // Restore the connection's own timeout even if the checkpoint
        // failed; until then its writes would give up early (and be
        // retried as transient).
        conn.execute(sqlx::AssertSqlSafe(format!(
            "PRAGMA busy_timeout = {}",
            self.busy_timeout_ms
        )))
        .await?;
        // The first column is 1 when the checkpoint could not complete.
        let busy: i64 = result?.try_get(0)?;
        Ok(busy == 0)
    }

    /// Retries the purge with growing pauses until it succeeds or the
    /// database is closed. At most one such task runs.
    fn retry_in_background(self: &Arc<Self>) {
        if self.purge_retrying.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            // From a second, doubling up to PURGE_RETRY_DELAY_MAX.
            let mut delays =
                event_store::pauses::doubling(Duration::from_secs(1), PURGE_RETRY_DELAY_MAX)
                    .build();
            let mut delay = delays.next().unwrap_or(PURGE_RETRY_DELAY_MAX);
            loop {
                tokio::time::sleep(delay).await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                if inner.write_pool.is_closed() {
                    return;
                }
                if !inner.purge_pending.load(Ordering::SeqCst) {
                    inner.purge_retrying.store(false, Ordering::SeqCst);
                    // An erasure whose own purge failed just now found this
                    // task still running and started none.
                    if inner.purge_pending.load(Ordering::SeqCst) {
                        inner.retry_in_background();
                    }
                    return;
                }
                let gate = inner.write_gate.clone().lock_owned().await;
                let done = match inner.checkpoint_truncate().await {
                    Ok(true) => true,
                    Ok(false) => false,
                    Err(e) => {
                        tracing::debug!(database = %inner.description, error = %e, "WAL checkpoint failed");
                        false
                    }
                };
                if done {
                    inner.purge_pending.store(false, Ordering::SeqCst);
                    inner.purge_retrying.store(false, Ordering::SeqCst);
                    drop(gate);
                    tracing::info!(
                        database = %inner.description,
                        "the WAL was emptied; erased personal data is gone from it"
                    );
                    return;
                }
                drop(gate);
                tracing::warn!(
                    database = %inner.description,
                    retry_in = ?delay,
                    "the WAL still holds page images from before an erasure; retrying its checkpoint"
                );
                delay = delays.next().unwrap_or(PURGE_RETRY_DELAY_MAX);
            }
        });
    }
}

/// PostgreSQL's `invalid_catalog_name`: the database does not exist.
const PG_NO_SUCH_DATABASE: &str = "3D000";
/// PostgreSQL's `duplicate_database`: created meanwhile by someone else.
const PG_DUPLICATE_DATABASE: &str = "42P04";

/// Connects once; creates the database if the server says it does not
/// exist, so that the first start of a split deployment needs no step by
/// hand (the projector and the query API may start in either order).
async fn ensure_postgres_database(url: &str, description: &str) -> Result<()> {
    let missing = match <AnyConnection as sqlx::Connection>::connect(url).await {
        Ok(conn) => return Ok(sqlx::Connection::close(conn).await?),
        Err(e) if pg_code(&e).as_deref() == Some(PG_NO_SUCH_DATABASE) => e,
        Err(e) => return Err(Error::Database(e)),
    };
    let options: sqlx::postgres::PgConnectOptions = url.parse().map_err(|e| Error::InvalidUrl {
        url: description.to_owned(),
        reason: format!("{e}"),
    })?;
    let name = options.get_database().unwrap_or_default().to_owned();
    let cannot = |reason: String| Error::CreateDatabase {
        database: name.clone(),
        reason: format!(
            "{}; create it (`createdb {name}`, or CREATE DATABASE as a user allowed to) \
             and start again",
            reason
        ),
    };
    if name.is_empty() {
        return Err(Error::Database(missing));
    }
    // The server's own database is there to connect to for this.
    let mut admin =
        match <sqlx::PgConnection as sqlx::Connection>::connect_with(&options.database("postgres"))
            .await
        {
            Ok(conn) => conn,
            Err(e) => return Err(cannot(crate::error::sql_message(&e))),
        };
    let quoted = name.replace('"', "\"\"");
    let created = admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{quoted}\"")))
        .await;
    let _ = sqlx::Connection::close(admin).await;
    match created {
        Ok(_) => {
            tracing::info!(database = %description, "created the view database");
            Ok(())
        }
        Err(e) if pg_code(&e).as_deref() == Some(PG_DUPLICATE_DATABASE) => Ok(()),
        Err(e) => Err(cannot(crate::error::sql_message(&e))),
    }
}

/// The SQLSTATE of an error the server returned.
fn pg_code(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Free bytes below which a failure to open a SQLite database is put down
/// to a full disk: SQLite grows its shared-memory index 32 KiB at a time
/// and its WAL by pages, so less than this is no room to start in.
const SQLITE_SPACE_NEEDED_BYTES: u64 = 1 << 20;

/// Why a SQLite view database did not open. A failure to write its files
/// on a filesystem with (next to) no space left is said to be that.
fn sqlite_open_failure(error: sqlx::Error, database: &str, connect_url: &str) -> Error {
    if !crate::error::is_storage_failure(&error) {
        return Error::Database(error);
    }
    let file = sqlite_file(connect_url);
    let filesystem = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    match rustix::fs::statvfs(&filesystem) {
        Ok(stat) => {
            let free_bytes = stat.f_bavail.saturating_mul(stat.f_frsize);
            if free_bytes < SQLITE_SPACE_NEEDED_BYTES {
                return Error::NoSpace {
                    database: database.to_owned(),
                    filesystem: filesystem.display().to_string(),
                    free_bytes,
                    error: crate::error::sql_message(&error),
                };
            }
            Error::Database(error)
        }
        Err(_) => Error::Database(error),
    }
}

/// The file of a `sqlite://<path>?<params>` URL as [`parse_url`] makes it.
fn sqlite_file(connect_url: &str) -> std::path::PathBuf {
    let rest = connect_url.strip_prefix("sqlite://").unwrap_or(connect_url);
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    std::path::PathBuf::from(percent_decode(path))
}

/// Undoes the percent-encoding of [`sqlite_url`].
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a pooled SQLite connection can start a transaction.
///
/// When SQLite fails a statement or a `COMMIT` with `SQLITE_FULL` or
/// `SQLITE_IOERR`, it may roll the transaction back itself. The driver
/// still counts it as open, its `ROLLBACK` then fails ("no transaction is
/// active") and the count stays, so every later `BEGIN` on that connection
/// is refused ("begin_with at non-zero transaction depth") for as long as
/// it lives: the writer's pool never replaces its one connection. Such a
/// connection is closed here and the pool opens a fresh one. By the time a
/// connection is acquired again, its release has run the queued rollback,
/// so the count is settled.
fn usable_after_rollback(conn: &AnyConnection) -> bool {
    let usable = !sqlx::Connection::is_in_transaction(conn);
    if !usable {
        tracing::warn!(
            "a view database connection still counted a transaction SQLite had ended \
             (after a failed commit); replacing it"
        );
    }
    usable
}

/// The `sqlite://` URL of a file path, percent-encoding the characters a URL
/// would otherwise take for its own.
pub fn sqlite_url(path: &Path) -> Result<String> {
    let text = path.to_str().ok_or_else(|| Error::InvalidUrl {
        url: path.display().to_string(),
        reason: "the path is not valid UTF-8".into(),
    })?;
    let mut encoded = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' | '?' | '#' | ' ' | '"' | '<' | '>' | '`' | '{' | '}' => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    encoded.push_str(&format!("%{b:02X}"));
                }
            }
            c => encoded.push(c),
        }
    }
    Ok(format!("sqlite://{encoded}"))
}

/// Splits a view database URL into its dialect and the URL to connect with.
fn parse_url(url: &str) -> Result<(Dialect, String)> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: redact(url),
        reason: reason.into(),
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Dialect::Postgres, url.to_owned()));
    }
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Err(invalid(
            "expected sqlite://<path> or postgres://<user>@<host>/<database>",
        ));
    };
    let (path, params) = match rest.split_once('?') {
        Some((path, params)) => (path, Some(params)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(invalid("the SQLite file path is empty"));
    }
    if path == ":memory:" || params.is_some_and(|p| p.contains("mode=memory")) {
        // Each pooled connection would get a database of its own.
        return Err(invalid(
            "an in-memory database cannot be shared by the projector and the query API; use a file",
        ));
    }
    let params = match params {
        Some(p) if p.contains("mode=") => p.to_owned(),
        Some(p) if !p.is_empty() => format!("{p}&mode=rwc"),
        _ => "mode=rwc".to_owned(),
    };
    Ok((Dialect::Sqlite, format!("sqlite://{path}?{params}")))
}

/// A URL with its password replaced, for logs and status pages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Checks that a name can be put in SQL as a quoted identifier as is.
pub(crate) fn checked_identifier(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(Error::InvalidOptions(format!(
            "{name:?} is not a valid identifier: use 1 to 63 lowercase ASCII letters, digits and _, not starting with a digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp_store(tx: &mut WriteTx) -> i64 {
        sqlx::query_scalar::<_, i64>("PRAGMA temp_store")
            .fetch_one(tx.conn())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn only_bulk_writes_spill_temporary_data_to_files() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("v.db").display());
        let db = ViewDb::open(&url).await.unwrap();
        const FILE: i64 = 1;
        const MEMORY: i64 = 2;

        let mut tx = db.begin_write().await.unwrap();
        assert_eq!(temp_store(&mut tx).await, MEMORY);
        tx.commit().await.unwrap();

        let mut tx = db.begin_bulk_write().await.unwrap();
        assert_eq!(temp_store(&mut tx).await, FILE);
        tx.commit().await.unwrap();
        let mut tx = db.begin_write().await.unwrap();
        assert_eq!(temp_store(&mut tx).await, MEMORY);
        tx.commit().await.unwrap();

        // A bulk write that never committed is undone at the next write.
        let mut tx = db.begin_bulk_write().await.unwrap();
        assert_eq!(temp_store(&mut tx).await, FILE);
        drop(tx);
        let mut tx = db.begin_write().await.unwrap();
        assert_eq!(temp_store(&mut tx).await, MEMORY);
        tx.rollback().await.unwrap();
        db.close().await;
    }

    #[test]
    fn sqlite_urls_get_create_mode_and_keep_parameters() {
        assert_eq!(
            parse_url("sqlite:///tmp/v.db").unwrap(),
            (Dialect::Sqlite, "sqlite:///tmp/v.db?mode=rwc".to_owned())
        );
        assert_eq!(
            parse_url("sqlite:rel/v.db?mode=ro").unwrap(),
            (Dialect::Sqlite, "sqlite://rel/v.db?mode=ro".to_owned())
        );
        assert_eq!(
            parse_url("sqlite://v.db?cache=private").unwrap().1,
            "sqlite://v.db?cache=private&mode=rwc"
        );
    }

    #[test]
    fn postgres_urls_pass_through_and_others_are_refused() {
        assert_eq!(
            parse_url("postgresql://u@h/db").unwrap().0,
            Dialect::Postgres
        );
        for bad in [
            "mysql://x/y",
            "views.db",
            "sqlite://",
            "sqlite::memory:",
            "sqlite://x.db?mode=memory",
        ] {
            assert!(
                matches!(parse_url(bad), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://user:secret@host:5432/db"),
            "postgres://user:***@host:5432/db"
        );
        assert_eq!(redact("postgres://user@host/db"), "postgres://user@host/db");
        assert_eq!(redact("sqlite:///a/b"), "sqlite:///a/b");
    }

    #[test]
    fn file_paths_become_urls_with_reserved_characters_encoded() {
        assert_eq!(
            sqlite_url(Path::new("/data dir/v#1?.db")).unwrap(),
            "sqlite:///data%20dir/v%231%3F.db"
        );
        let (_, connect) = parse_url("sqlite:///data%20dir/v%231%3F.db").unwrap();
        assert_eq!(sqlite_file(&connect), Path::new("/data dir/v#1?.db"));
        assert_eq!(sqlite_file("sqlite://v.db?mode=rwc"), Path::new("v.db"));
    }

    /// Files in `dir` whose bytes contain `needle`.
    fn holding(dir: &Path, needle: &[u8]) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                std::fs::read(p)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle)
            })
            .map(|p| p.display().to_string())
            .collect()
    }

    async fn write(db: &ViewDb, sql: &str, erased: bool) {
        let mut tx = db.begin_write().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(tx.conn())
            .await
            .unwrap();
        if erased {
            tx.erased_personal_data();
        }
        tx.commit().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_erasure_leaves_no_old_bytes_once_readers_let_the_checkpoint_finish() {
        let dir = tempfile::tempdir().unwrap();
        let db = ViewDb::open(&sqlite_url(&dir.path().join("v.sqlite")).unwrap())
            .await
            .unwrap();
        write(
            &db,
            "CREATE TABLE people (id TEXT PRIMARY KEY, name TEXT NOT NULL)",
            false,
        )
        .await;
        write(&db, "CREATE INDEX people_by_name ON people (name)", false).await;
        write(
            &db,
            "INSERT INTO people VALUES ('a', 'Hedy Lamarr'), ('b', 'Grace Hopper')",
            false,
        )
        .await;
        assert!(!holding(dir.path(), b"Hedy Lamarr").is_empty());

        // A reader holds a snapshot from before the erasure: the WAL cannot
        // be emptied under it.
        let mut reader = db.begin_read().await.unwrap();
        let name: String = sqlx::query("SELECT name FROM people WHERE id = 'a'")
            .fetch_one(&mut *reader)
            .await
            .unwrap()
            .get(0);
        assert_eq!(name, "Hedy Lamarr");
        write(
            &db,
            "UPDATE people SET name = '[erased]' WHERE id = 'a'",
            true,
        )
        .await;
        assert!(db.purge_pending());
        assert!(!holding(dir.path(), b"Hedy Lamarr").is_empty());

        // Once it is gone, the next write transaction finishes the purge.
        reader.rollback().await.unwrap();
        write(
            &db,
            "INSERT INTO people VALUES ('c', 'Ada Lovelace')",
            false,
        )
        .await;
        assert!(!db.purge_pending());
        assert_eq!(holding(dir.path(), b"Hedy Lamarr"), Vec::<String>::new());
        assert!(!holding(dir.path(), b"Grace Hopper").is_empty());
        db.close().await;
        assert_eq!(holding(dir.path(), b"Hedy Lamarr"), Vec::<String>::new());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_purge_left_pending_is_finished_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let db = ViewDb::open(&sqlite_url(&dir.path().join("v.sqlite")).unwrap())
            .await
            .unwrap();
        write(
            &db,
            "CREATE TABLE people (id TEXT PRIMARY KEY, name TEXT NOT NULL)",
            false,
        )
        .await;
        write(&db, "INSERT INTO people VALUES ('a', 'Hedy Lamarr')", false).await;
        let mut reader = db.begin_read().await.unwrap();
        sqlx::query("SELECT name FROM people")
            .fetch_all(&mut *reader)
            .await
            .unwrap();
        write(&db, "DELETE FROM people WHERE id = 'a'", true).await;
        assert!(db.purge_pending());
        reader.rollback().await.unwrap();
        // No further write comes: the retry (after 1 s) does it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db.purge_pending() {
            assert!(
                std::time::Instant::now() < deadline,
                "the purge was not retried"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(holding(dir.path(), b"Hedy Lamarr"), Vec::<String>::new());
        db.close().await;
    }

    #[test]
    fn identifiers_are_checked() {
        assert!(checked_identifier("views_1").is_ok());
        for bad in ["", "1abc", "Views", "a-b", "a\"b", &"x".repeat(64)] {
            assert!(checked_identifier(bad).is_err(), "{bad}");
        }
    }
}
