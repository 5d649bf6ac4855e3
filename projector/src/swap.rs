//! Rebuilds: replay the whole log into shadow tables while the live tables
//! keep serving, then swap them in within one transaction.
//!
//! The rebuild track has its own checkpoint row, so an interrupted rebuild
//! resumes where its last batch committed; a rebuild for another projection
//! version starts over with fresh shadows. The swap runs once the shadows
//! have caught up with the head of the log. It locks the live checkpoint
//! (the live track cannot commit meanwhile), applies inside the same
//! transaction whatever the live track got ahead by, drops the old tables
//! (SQLite: renames them aside, dropped right after the commit, see
//! `tables::swap_in`), renames the shadows and moves the live checkpoint,
//! so readers see either the old view or the new one, each with its own
//! position, never a mix.

use std::time::{Duration, Instant};

use event_store::{Position, RecordedEvent};

use crate::checkpoint::{self, Checkpoint, Track, TrackState};
use crate::db::Dialect;
use crate::error::{Error, Result};
use crate::projection::ViewTx;
use crate::rebuild::{RebuildPhase, RebuildProgress, RebuildReport};
use crate::registry::{Registered, Shared};
use crate::runner::{CatchUp, FollowEnd, TrackRunner};
use crate::tables;

/// Swap attempts a rebuild makes before it gives up (each one follows the
/// log again first); the rebuild checkpoint stays, so asking again resumes.
const SWAP_ATTEMPTS_MAX: u32 = 1_000;

/// Marks a projection as being rebuilt by this process for as long as it
/// lives.
pub(crate) struct RebuildGuard<'a> {
    reg: &'a Registered,
}

impl<'a> RebuildGuard<'a> {
    pub fn take(reg: &'a Registered) -> Result<Self> {
        if reg
            .rebuild_running
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::Conflict {
                projection: reg.name.into(),
                detail: "a rebuild is already running".into(),
            });
        }
        Ok(Self { reg })
    }
}

impl Drop for RebuildGuard<'_> {
    fn drop(&mut self) {
        self.reg
            .rebuild_running
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs (or resumes) a rebuild to its swap.
pub(crate) async fn rebuild(
    shared: &Shared,
    reg: &Registered,
    progress: &mut (dyn FnMut(&RebuildProgress) + Send),
) -> Result<RebuildReport> {
    let _guard = RebuildGuard::take(reg)?;
    reg.start_rebuild();
    let outcome = run(shared, reg, progress).await;
    reg.finish_rebuild(&outcome);
    outcome
}

async fn run(
    shared: &Shared,
    reg: &Registered,
    progress: &mut (dyn FnMut(&RebuildProgress) + Send),
) -> Result<RebuildReport> {
    let started = Instant::now();
    let from = prepare(shared, reg).await?;
    tracing::info!(
        projection = reg.name,
        version = reg.version,
        from = from.0,
        "rebuilding into shadow tables"
    );
    let mut stop = shared.stop.subscribe();
    let runner = TrackRunner {
        shared,
        reg,
        track: Track::Rebuild,
    };
    // Within one batch of the head is close enough to swap: the swap
    // applies the rest inside its transaction.
    let near = shared
        .options
        .batch_events_max
        .min(shared.options.swap_catch_up_events_max / 2) as u64;
    let mut until = CatchUp::NearHead(near);
    let mut postponed = 0u32;
    loop {
        let mut on_batch = |done: crate::runner::BatchDone| {
            let report = progress_of(reg, from, done.position, done.head, started);
            reg.set_rebuild_progress(Some(report.clone()));
            progress(&report);
        };
        let end = runner.follow(&mut stop, Some(until), &mut on_batch).await?;
        match end {
            FollowEnd::Stopped => return Err(Error::ShutDown),
            FollowEnd::Failed { position, reason } => {
                return Err(Error::ProjectionFailed {
                    projection: reg.name.into(),
                    position,
                    reason,
                });
            }
            FollowEnd::CaughtUp(position) => {
                let mut swapping = progress_of(reg, from, position, position, started);
                swapping.phase = RebuildPhase::Swapping;
                progress(&swapping);
                index_shadows(shared, reg).await?;
                let target = match swap(shared, reg, position).await? {
                    Swap::Done(swapped) => {
                        reg.wake_live.notify_one();
                        let mut done = progress_of(reg, from, swapped, swapped, started);
                        done.phase = RebuildPhase::Done;
                        reg.set_rebuild_progress(None);
                        progress(&done);
                        tracing::info!(
                            projection = reg.name,
                            position = swapped.0,
                            seconds = started.elapsed().as_secs_f64(),
                            "rebuild swapped in"
                        );
                        return Ok(RebuildReport {
                            projection: reg.name.to_owned(),
                            version: reg.version,
                            resumed_from: from,
                            position: swapped,
                            events: swapped.0 - from.0,
                            elapsed: started.elapsed(),
                        });
                    }
                    Swap::Postponed { target } => target,
                };
                // The shadows fell behind the live tables by more than the
                // swap may apply, or an event failed inside the swap: catch
                // up through the live tables' position (a fixed target, so
                // a growing log cannot keep this going), where a failing
                // event meets the rebuild track and is recorded; then try
                // again near the head.
                postponed += 1;
                if postponed >= SWAP_ATTEMPTS_MAX {
                    return Err(Error::Conflict {
                        projection: reg.name.into(),
                        detail: format!(
                            "the swap was postponed {postponed} times: the log grows faster than the rebuild applies it"
                        ),
                    });
                }
                until = match until {
                    CatchUp::NearHead(_) => CatchUp::Reach(target),
                    CatchUp::Reach(_) => CatchUp::NearHead(near),
                };
            }
        }
    }
}

fn progress_of(
    reg: &Registered,
    from: Position,
    position: Position,
    head: Position,
    started: Instant,
) -> RebuildProgress {
    let rate = reg.rebuild_rate();
    let remaining = head.0.saturating_sub(position.0);
    let eta = (rate > 0.0).then(|| Duration::from_secs_f64(remaining as f64 / rate));
    RebuildProgress {
        projection: reg.name.to_owned(),
        phase: RebuildPhase::Replaying,
        resumed_from: from,
        position,
        head,
        events_per_second: rate,
        eta,
        elapsed: started.elapsed(),
    }
}

/// Creates the rebuild checkpoint and shadow tables, or keeps those of an
/// interrupted rebuild of the same version. Returns where replay starts.
async fn prepare(shared: &Shared, reg: &Registered) -> Result<Position> {
    // Left by a process that stopped between a swap and their drop: they
    // hold index names the shadows may need (and, until dropped, rows of
    // subjects erased since).
    shared.db.drop_retired(&tables::retired(&reg.live)).await?;
    let mut tx = shared.db.begin_write().await?;
    let existing = checkpoint::load(tx.conn(), reg.name, Track::Rebuild).await?;
    // An interrupted rebuild resumes only if the log still holds what its
    // shadows were built from.
    let existing = match existing {
        Some(cp) => match crate::runner::check_log(shared.store.as_ref(), &cp).await? {
            None => Some(cp),
            Some(why) => {
                tracing::warn!(projection = reg.name, %why, "starting the rebuild over");
                None
            }
        },
        None => None,
    };
    let from = match existing {
        Some(cp) if cp.version == reg.version => {
            if cp.state == TrackState::Failed {
                // Asking again is how an operator retries a failed rebuild.
                checkpoint::resume(tx.conn(), reg.name, Track::Rebuild, TrackState::Rebuilding)
                    .await?;
            }
            cp.position
        }
        _ => {
            tables::drop_shadows(tx.conn(), &reg.shadow).await?;
            crate::schema::create_shadows(tx.conn(), shared.db.dialect(), &reg.schema, &reg.shadow)
                .await?;
            checkpoint::reset(
                tx.conn(),
                reg.name,
                Track::Rebuild,
                reg.version,
                TrackState::Rebuilding,
            )
            .await?;
            Position::ZERO
        }
    };
    tx.commit().await?;
    Ok(from)
}

/// Builds the shadows' indexes left for after the load, in a transaction
/// of its own: on PostgreSQL it holds no lock on the live tables, and the
/// swap's transaction stays short.
async fn index_shadows(shared: &Shared, reg: &Registered) -> Result<()> {
    let started = Instant::now();
    let mut tx = shared.db.begin_bulk_write().await?;
    crate::schema::index_shadows(tx.conn(), shared.db.dialect(), &reg.schema, &reg.shadow).await?;
    tx.commit().await?;
    tracing::debug!(
        projection = reg.name,
        seconds = started.elapsed().as_secs_f64(),
        "shadow indexes built"
    );
    Ok(())
}

/// What a swap attempt did.
enum Swap {
    /// The shadows are the live tables now, at this position.
    Done(Position),
    /// The shadows must first catch up to `target`.
    Postponed { target: Position },
}

/// Swaps the shadows in if the rebuild checkpoint is still at `expected`.
async fn swap(shared: &Shared, reg: &Registered, expected: Position) -> Result<Swap> {
    let lock = match shared.db.dialect() {
        Dialect::Postgres => " FOR UPDATE",
        Dialect::Sqlite => "",
    };
    let mut tx = shared.db.begin_write().await?;
    let live = lock_checkpoint(tx.conn(), reg.name, Track::Live, lock).await?;
    let rebuild = lock_checkpoint(tx.conn(), reg.name, Track::Rebuild, lock).await?;
    let Some(rebuild) = rebuild else {
        return Err(Error::Conflict {
            projection: reg.name.into(),
            detail: "the rebuild was finished or cancelled elsewhere".into(),
        });
    };
    let live_position = live.as_ref().map_or(Position::ZERO, |cp| cp.position);
    let postponed = Swap::Postponed {
        target: live_position.max(rebuild.position),
    };
    if rebuild.position != expected
        || rebuild.version != reg.version
        || rebuild.state == TrackState::Failed
    {
        tx.rollback().await?;
        return Ok(postponed);
    }
    let mut position = rebuild.position;
    let mut event_id = rebuild.event_id;
    // The live tables got ahead of the shadows on the log as it is, unless
    // the log diverged under them (which is why a rebuild was asked for):
    // then what they got ahead by is not in the log any more.
    let live_ahead = match &live {
        Some(cp) if cp.position > position => {
            match crate::runner::check_log(shared.store.as_ref(), cp).await? {
                None => true,
                Some(why) => {
                    tracing::warn!(projection = reg.name, %why, "the live tables are not on the log any more; the rebuild replaces them as it is");
                    false
                }
            }
        }
        _ => false,
    };
    if live_ahead {
        let behind = live_position.0 - position.0;
        if behind > shared.options.swap_catch_up_events_max as u64 {
            tx.rollback().await?;
            return Ok(postponed);
        }
        let skipped = checkpoint::skipped_positions(tx.conn(), reg.name, reg.version).await?;
        let events = read_range(shared, position, live_position).await?;
        let wanted: Vec<RecordedEvent> = events
            .into_iter()
            .filter(|e| reg.wants(e) && !skipped.contains(&e.position.0))
            .collect();
        if !wanted.is_empty() {
            let mut view = ViewTx::new(tx.conn(), shared.db.dialect(), &reg.shadow);
            if let Err(e) = reg.projection.apply(&mut view, &wanted).await {
                // Let the rebuild track meet the event the normal way, which
                // attributes and records the failure.
                tracing::warn!(projection = reg.name, error = %e, "swap postponed");
                drop(tx);
                return Ok(postponed);
            }
            if view.erased() {
                tx.erased_personal_data();
            }
        }
        position = live_position;
        event_id = live.as_ref().and_then(|cp| cp.event_id);
    }
    tables::swap_in(tx.conn(), shared.db.dialect(), &reg.live, &reg.shadow).await?;
    let now = event_store::Timestamp::now().0;
    if live.is_some() {
        sqlx::query(
            "UPDATE projection_checkpoints \
             SET position = $1, version = $2, state = 'live', last_error = NULL, \
                 error_position = NULL, updated_at = $3, event_id = $5 \
             WHERE name = $4 AND track = 'live'",
        )
        .bind(checkpoint::to_sql(position)?)
        .bind(i64::from(reg.version))
        .bind(now)
        .bind(reg.name)
        .bind(event_id.map(|id| id.to_string()))
        .execute(tx.conn())
        .await?;
    } else {
        sqlx::query(
            "INSERT INTO projection_checkpoints \
             (name, track, version, position, state, started_at, updated_at, event_id) \
             VALUES ($1, 'live', $2, $3, 'live', $4, $4, $5)",
        )
        .bind(reg.name)
        .bind(i64::from(reg.version))
        .bind(checkpoint::to_sql(position)?)
        .bind(now)
        .bind(event_id.map(|id| id.to_string()))
        .execute(tx.conn())
        .await?;
    }
    checkpoint::delete(tx.conn(), reg.name, Track::Rebuild).await?;
    // Dropped before the next writer (an erasure, say) gets the database;
    // one the process did not get to is dropped at its next start.
    tx.drop_after_commit(tables::retired(&reg.live));
    tx.commit().await?;
    Ok(Swap::Done(position))
}

async fn lock_checkpoint(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    track: Track,
    lock: &str,
) -> Result<Option<Checkpoint>> {
    // Reading through `load` and then locking would leave a window; the
    // lock clause goes on the read itself.
    if lock.is_empty() {
        return checkpoint::load(conn, name, track).await;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM projection_checkpoints WHERE name = $1 AND track = $2{lock}"
    )))
    .bind(name)
    .bind(track.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    checkpoint::load(conn, name, track).await
}

/// The events after `from` up to `to`, checked to be contiguous.
async fn read_range(shared: &Shared, from: Position, to: Position) -> Result<Vec<RecordedEvent>> {
    let page = shared.store.read_page_max().max(1);
    let mut out = Vec::with_capacity((to.0 - from.0) as usize);
    let mut next = from.next();
    while next <= to {
        let want = usize::try_from(to.0 - next.0 + 1)
            .unwrap_or(usize::MAX)
            .min(page);
        let events = shared.store.read_all(next, want).await?;
        if events.is_empty() {
            return Err(Error::Gap {
                expected: next,
                found: Position::ZERO,
            });
        }
        for event in events {
            if event.position > to {
                break;
            }
            if event.position != next {
                return Err(Error::Gap {
                    expected: next,
                    found: event.position,
                });
            }
            next = next.next();
            out.push(event);
        }
    }
    Ok(out)
}
