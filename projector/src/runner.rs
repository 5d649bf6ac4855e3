//! Following the log for one projection track: subscribe from the
//! checkpoint, gather batches, apply each in one transaction with its
//! checkpoint, stop on poison events, retry what is transient.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use event_store::{EventFilter, Position, RecordedEvent, Subscription};
use futures_util::FutureExt;
use tokio::sync::{Notify, watch};

use crate::checkpoint::{self, TrackState};
use crate::error::{Error, Result, is_transient_sql};
use crate::projection::{ApplyError, ViewTx};
use crate::read_ahead::read_ahead;
use crate::registry::{Registered, Shared};
use crate::retry::Retries;
use crate::tables::TableNames;

/// How long a catching-up batch waits for the next event before it commits
/// what it has: long enough for the store to read its next page, short
/// enough not to matter at the head.
const LINGER: Duration = Duration::from_millis(50);

/// Why [`follow`] returned.
#[derive(Debug)]
pub(crate) enum FollowEnd {
    /// The stop signal fired; every started batch was committed or rolled back.
    Stopped,
    /// (`until` only) the track caught up as asked.
    CaughtUp(Position),
    /// (rebuild track only) the handler failed on an event.
    Failed { position: Position, reason: String },
}

/// How far a track following the log with an end in sight must get.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CatchUp {
    /// At most this many events behind the head of the log, which keeps
    /// moving.
    NearHead(u64),
    /// At least this position, a fixed target.
    Reach(Position),
}

/// Progress after a committed batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchDone {
    pub position: Position,
    /// The newest head of the log the track knows of.
    pub head: Position,
}

/// One projection track and what it needs to run.
pub(crate) struct TrackRunner<'a> {
    pub shared: &'a Shared,
    pub reg: &'a Registered,
    pub track: checkpoint::Track,
}

/// Where [`TrackRunner::follow`] goes after a step.
enum Next {
    /// Read the checkpoint again and go on from it.
    Reload,
    /// A transient problem (noted already): wait, then reload.
    Retry,
    /// Wait for a wake-up or a poll tick, then reload.
    Idle,
    /// What `follow` returns.
    End(Result<FollowEnd>),
}

impl Next {
    /// After the track recorded a failure: reload, which finds it failed.
    fn after_failure(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Stopped => Next::End(Ok(FollowEnd::Stopped)),
            Outcome::Committed | Outcome::Conflict | Outcome::Failed => Next::Reload,
        }
    }
}

/// A track subscribed to the log after its checkpoint.
struct Following {
    sub: Subscription,
    /// Positions an operator skipped, not to apply.
    skipped: BTreeSet<u64>,
    /// The checkpoint: the last position committed.
    position: Position,
    /// The newest head of the log the track knows of.
    head: Position,
}

enum Attempt {
    Committed,
    /// The checkpoint had moved: reload it.
    Conflict,
    /// The handler blamed this event.
    EventFault {
        position: Position,
        reason: String,
    },
    /// The handler failed without saying which event.
    Unattributed(String),
}

enum Outcome {
    Committed,
    Conflict,
    Failed,
    Stopped,
}

impl TrackRunner<'_> {
    fn tables(&self) -> &TableNames {
        match self.track {
            checkpoint::Track::Live => &self.reg.live,
            checkpoint::Track::Rebuild => &self.reg.shadow,
        }
    }

    fn wake(&self) -> &Notify {
        match self.track {
            checkpoint::Track::Live => &self.reg.wake_live,
            checkpoint::Track::Rebuild => &self.reg.wake_rebuild,
        }
    }

    fn name(&self) -> &'static str {
        self.reg.name
    }

    /// Follows the log until stopped (or, with `until`, until the track
    /// caught up as it says; or, for a rebuild, until it fails).
    ///
    /// A rebuild stops a little short of the head on purpose: the swap
    /// applies the remainder under its lock, so a log that keeps growing
    /// cannot keep the rebuild chasing an exact head for ever.
    ///
    /// Each round starts over from the checkpoint as stored: after a
    /// conflict, a failure, a wake-up or a transient error, the checkpoint
    /// is the one truth about where the track is.
    pub async fn follow(
        &self,
        stop: &mut watch::Receiver<bool>,
        until: Option<CatchUp>,
        on_batch: &mut (dyn FnMut(BatchDone) + Send),
    ) -> Result<FollowEnd> {
        let mut retries = Retries::new(&self.shared.options);
        loop {
            if *stop.borrow() {
                return Ok(FollowEnd::Stopped);
            }
            let next = match self.subscribe(stop).await {
                Ok(following) => {
                    self.apply_batches(following, until, on_batch, stop, &mut retries)
                        .await
                }
                Err(next) => next,
            };
            let stopped = match next {
                Next::Reload => false,
                Next::Retry => retries.wait(stop).await,
                Next::Idle => self.idle(stop).await,
                Next::End(end) => return end,
            };
            if stopped {
                return Ok(FollowEnd::Stopped);
            }
        }
    }

    /// Reads the checkpoint, checks it can go on from there, and subscribes
    /// to the log after it.
    async fn subscribe(&self, stop: &mut watch::Receiver<bool>) -> Result<Following, Next> {
        let cp = self.checkpoint_to_follow(stop).await?;
        let skipped = self
            .skipped()
            .await
            .map_err(|e| self.retry(&e.to_string()))?;
        let sub = self
            .shared
            .store
            .subscribe(cp.position.next(), EventFilter::all())
            .await
            .map_err(|e| self.retry(&format!("subscribing to the event store: {e}")))?;
        let position = cp.position;
        let mut head = position;
        if self.track == checkpoint::Track::Live
            && let Ok(h) = self.shared.store.head().await
        {
            head = head.max(h);
            if h <= position {
                // Subscribed at the head: whatever failed before is
                // over, even if no event comes to prove it.
                self.reg.clear_live_problem();
            }
        }
        Ok(Following {
            sub: read_ahead(sub, self.shared.options.batch_events_max),
            skipped,
            position,
            head,
        })
    }

    /// The track's checkpoint, once it is one to follow the log from: not
    /// failed, written by this version of the code, and still on the log.
    async fn checkpoint_to_follow(
        &self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<checkpoint::Checkpoint, Next> {
        let rebuild = self.track == checkpoint::Track::Rebuild;
        let cp = match self.load_checkpoint().await {
            Ok(Some(cp)) => cp,
            Ok(None) if rebuild => {
                return Err(Next::End(Err(Error::Conflict {
                    projection: self.name().into(),
                    detail: "the rebuild was finished or cancelled elsewhere".into(),
                })));
            }
            Ok(None) => {
                return Err(match self.insert_live_checkpoint().await {
                    Ok(()) => Next::Reload,
                    Err(e) => self.retry(&e.to_string()),
                });
            }
            Err(e) => return Err(self.retry(&e.to_string())),
        };
        if cp.state == TrackState::Failed {
            if rebuild {
                return Err(Next::End(Ok(FollowEnd::Failed {
                    position: cp.error_position.unwrap_or(cp.position.next()),
                    reason: cp.last_error.unwrap_or_default(),
                })));
            }
            return Err(Next::Idle);
        }
        if cp.version != self.reg.version {
            // The tables were built by other code: wait for the rebuild
            // that replaces them (it wakes this track when it swaps).
            if rebuild {
                return Err(Next::End(Err(Error::Conflict {
                    projection: self.name().into(),
                    detail: format!(
                        "the rebuild in progress is for version {}, this code is version {}",
                        cp.version, self.reg.version
                    ),
                })));
            }
            return Err(Next::Idle);
        }
        match check_log(self.shared.store.as_ref(), &cp).await {
            Ok(None) => Ok(cp),
            Ok(Some(why)) => {
                let reason = format!(
                    "{why}; the tables hold events the log no longer has, so the projection \
                     must be rebuilt from the log (`annals rebuild {}`)",
                    self.name()
                );
                tracing::error!(projection = self.name(), track = self.track.as_str(), %reason, "the event log diverged from the projection's checkpoint");
                let failed = self
                    .fail(cp.position, cp.position, None, &reason, stop)
                    .await;
                Err(Next::after_failure(failed))
            }
            Err(e) => Err(self.retry(&format!("checking the checkpoint against the log: {e}"))),
        }
    }

    /// Gathers and commits batches from the subscription until the track
    /// must start over from its checkpoint, wait, or end.
    async fn apply_batches(
        &self,
        mut following: Following,
        until: Option<CatchUp>,
        on_batch: &mut (dyn FnMut(BatchDone) + Send),
        stop: &mut watch::Receiver<bool>,
        retries: &mut Retries,
    ) -> Next {
        loop {
            match self.caught_up(until, &mut following).await {
                Ok(true) => return Next::End(Ok(FollowEnd::CaughtUp(following.position))),
                Ok(false) => {}
                Err(e) => return self.retry(&format!("reading the head of the log: {e}")),
            }
            let from = following.position;
            let batch = self
                .collect(&mut following.sub, &mut following.head, stop)
                .await;
            let (events, problem) = check_contiguous(from, batch.events);
            if let Some(last) = events.last() {
                let to = last.position;
                let state = match (self.track, batch.drained && problem.is_none()) {
                    (checkpoint::Track::Rebuild, _) => TrackState::Rebuilding,
                    (checkpoint::Track::Live, true) => TrackState::Live,
                    (checkpoint::Track::Live, false) => TrackState::CatchingUp,
                };
                match self
                    .commit(from, events, state, &following.skipped, stop)
                    .await
                {
                    Outcome::Committed => {
                        retries.reset();
                        self.reg.record_progress(self.track, to.0 - from.0);
                        following.position = to;
                        on_batch(BatchDone {
                            position: to,
                            head: following.head.max(to),
                        });
                    }
                    Outcome::Conflict | Outcome::Failed => return Next::Reload,
                    Outcome::Stopped => return Next::End(Ok(FollowEnd::Stopped)),
                }
            }
            let Following {
                position, skipped, ..
            } = &following;
            if let Some(next) = self
                .after_batch(problem, batch.end, *position, skipped, stop)
                .await
            {
                return next;
            }
        }
    }

    /// Whether the track got as far as `until` asks; reads the head of the
    /// log when the target moves with it.
    async fn caught_up(
        &self,
        until: Option<CatchUp>,
        following: &mut Following,
    ) -> event_store::Result<bool> {
        Ok(match until {
            None => false,
            Some(CatchUp::Reach(target)) => following.position >= target,
            Some(CatchUp::NearHead(slack)) => {
                let head = self.shared.store.head().await?;
                following.head = following.head.max(head);
                following.head.0.saturating_sub(following.position.0) <= slack
            }
        })
    }

    /// What follows a batch whose events were committed: `None` to gather
    /// the next one, or why the subscription is over.
    async fn after_batch(
        &self,
        gap: Option<Error>,
        end: Option<CollectEnd>,
        position: Position,
        skipped: &BTreeSet<u64>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Next> {
        match (gap, end) {
            (Some(gap), _) => {
                tracing::error!(projection = self.name(), track = self.track.as_str(), %gap, "gap in the event positions; resubscribing from the checkpoint");
                self.note_error(&gap.to_string()).await;
                Some(Next::Retry)
            }
            (None, Some(CollectEnd::Stop)) => Some(Next::End(Ok(FollowEnd::Stopped))),
            (None, Some(CollectEnd::Woken)) => Some(Next::Reload),
            (None, Some(CollectEnd::Failed(e))) => {
                tracing::warn!(projection = self.name(), error = %e, "subscription ended; resubscribing");
                self.note_error(&format!("event store subscription: {e}"))
                    .await;
                Some(Next::Retry)
            }
            (None, Some(CollectEnd::Unreadable { event_type, reason })) => Some(
                self.unreadable(position, skipped, &event_type, &reason, stop)
                    .await,
            ),
            (None, None) => None,
        }
    }

    /// Meets an event the store cannot bring to the current schema, right
    /// after the track's position: the track fails on it if it is one the
    /// projection reads, and steps over it otherwise.
    async fn unreadable(
        &self,
        position: Position,
        skipped: &BTreeSet<u64>,
        event_type: &str,
        reason: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> Next {
        // The subscription delivers every position in order,
        // so the event it could not read is the next one.
        let unreadable = position.next();
        if self.reg.wants_type(event_type) && !skipped.contains(&unreadable.0) {
            let failed = self.fail(position, unreadable, None, reason, stop).await;
            return Next::after_failure(failed);
        }
        // Not an event this projection reads (or one an operator skipped):
        // step over it and subscribe again after it, as for any ignored
        // event.
        let state = match self.track {
            checkpoint::Track::Rebuild => TrackState::Rebuilding,
            checkpoint::Track::Live => TrackState::CatchingUp,
        };
        match self
            .attempt_with_retry(position, unreadable, None, &[], state, stop)
            .await
        {
            None => Next::End(Ok(FollowEnd::Stopped)),
            Some(_) => Next::Reload,
        }
    }

    /// Notes a transient problem; the track waits, then starts over.
    fn retry(&self, problem: &str) -> Next {
        self.note_transient(problem);
        Next::Retry
    }

    /// Waits for a wake-up (resume, skip, swap), a poll tick (the change may
    /// come from another process) or the stop signal. True when stopped.
    async fn idle(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let poll = self.shared.options.failed_poll_interval;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => true,
            () = self.wake().notified() => false,
            () = tokio::time::sleep(poll) => false,
        }
    }

    async fn load_checkpoint(&self) -> Result<Option<checkpoint::Checkpoint>> {
        let mut conn = self.shared.db.pool().acquire().await?;
        checkpoint::load(&mut conn, self.name(), self.track).await
    }

    async fn insert_live_checkpoint(&self) -> Result<()> {
        let mut tx = self.shared.db.begin_write().await?;
        checkpoint::insert_if_missing(
            tx.conn(),
            self.name(),
            checkpoint::Track::Live,
            self.reg.version,
            TrackState::CatchingUp,
        )
        .await?;
        tx.commit().await
    }

    async fn skipped(&self) -> Result<BTreeSet<u64>> {
        let mut conn = self.shared.db.pool().acquire().await?;
        checkpoint::skipped_positions(&mut conn, self.name(), self.reg.version).await
    }

    /// Remembers a transient problem for the status page.
    fn note_transient(&self, error: &str) {
        crate::telemetry::retrying(self.name(), self.track);
        tracing::warn!(projection = self.name(), track = self.track.as_str(), %error, "retrying");
        self.reg.note_problem(self.track, error);
    }

    /// Remembers a problem and also stores it in the checkpoint row, where
    /// other processes see it.
    async fn note_error(&self, error: &str) {
        self.reg.note_problem(self.track, error);
        let stored = async {
            let mut tx = self.shared.db.begin_write().await?;
            checkpoint::note_error(tx.conn(), self.name(), self.track, error).await?;
            tx.commit().await
        };
        if let Err(e) = stored.await {
            tracing::warn!(projection = self.name(), error = %e, "could not store the error in the status");
        }
    }

    /// Gathers up to a batch of events: waits for the first, then takes
    /// what follows without waiting once the known head is reached.
    async fn collect(
        &self,
        sub: &mut Subscription,
        head: &mut Position,
        stop: &mut watch::Receiver<bool>,
    ) -> Collected {
        let max = self.shared.options.batch_events_max;
        let mut out = Collected {
            events: Vec::new(),
            drained: false,
            end: None,
        };
        let first = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => {
                out.end = Some(CollectEnd::Stop);
                return out;
            }
            () = self.wake().notified() => {
                out.end = Some(CollectEnd::Woken);
                return out;
            }
            item = sub.next() => item,
        };
        let mut last;
        match first {
            Some(Ok(event)) => {
                last = event.position;
                out.events.push(event);
            }
            Some(Err(e)) => {
                out.end = Some(CollectEnd::of_error(e));
                return out;
            }
            None => {
                out.end = Some(CollectEnd::Failed("the subscription ended".into()));
                return out;
            }
        }
        while out.events.len() < max {
            let next = match sub.next().now_or_never() {
                Some(item) => item,
                None => {
                    if last >= *head {
                        // Caught up with what we knew: is there more?
                        match self.shared.store.head().await {
                            Ok(h) => *head = h,
                            Err(_) => {
                                out.drained = true;
                                break;
                            }
                        }
                        if last >= *head {
                            out.drained = true;
                            break;
                        }
                    }
                    match tokio::time::timeout(LINGER, sub.next()).await {
                        Ok(item) => item,
                        Err(_) => break,
                    }
                }
            };
            match next {
                Some(Ok(event)) => {
                    last = event.position;
                    *head = (*head).max(last);
                    out.events.push(event);
                }
                Some(Err(e)) => {
                    out.end = Some(CollectEnd::of_error(e));
                    break;
                }
                None => {
                    out.end = Some(CollectEnd::Failed("the subscription ended".into()));
                    break;
                }
            }
        }
        out
    }

    /// Applies a batch of contiguous events after `from`. A poison event
    /// leaves the events before it committed and the track failed on it.
    async fn commit(
        &self,
        from: Position,
        events: Vec<RecordedEvent>,
        state: TrackState,
        skipped: &BTreeSet<u64>,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let Some(to) = events.last().map(|e| e.position) else {
            return Outcome::Committed;
        };
        let ids = BatchIds::of(&events);
        let wanted: Vec<RecordedEvent> = events
            .into_iter()
            .filter(|e| self.reg.wants(e) && !skipped.contains(&e.position.0))
            .collect();
        let fault = match self
            .attempt_with_retry(from, to, ids.at(to), &wanted, state, stop)
            .await
        {
            None => return Outcome::Stopped,
            Some(Attempt::Committed) => return Outcome::Committed,
            Some(Attempt::Conflict) => return Outcome::Conflict,
            Some(fault) => fault,
        };
        let blamed = match fault {
            Attempt::EventFault { position, reason }
                if position > from
                    && position <= to
                    && wanted.iter().any(|e| e.position == position) =>
            {
                Some((position, reason))
            }
            Attempt::EventFault { reason, .. } | Attempt::Unattributed(reason) => {
                if wanted.len() == 1 {
                    Some((wanted[0].position, reason))
                } else {
                    None
                }
            }
            Attempt::Committed | Attempt::Conflict => None,
        };
        match blamed {
            Some((position, reason)) => {
                // Commit what comes before the poison event, then stop on it.
                let prefix: Vec<RecordedEvent> = wanted
                    .iter()
                    .filter(|e| e.position < position)
                    .cloned()
                    .collect();
                let before = Position(position.0 - 1);
                if before > from {
                    match self
                        .attempt_with_retry(from, before, ids.at(before), &prefix, state, stop)
                        .await
                    {
                        None => return Outcome::Stopped,
                        Some(Attempt::Committed) => {}
                        Some(Attempt::Conflict) => return Outcome::Conflict,
                        // The handler is not deterministic; find the event
                        // one at a time.
                        Some(_) => {
                            return self
                                .one_by_one(from, &prefix, before, &ids, state, stop)
                                .await;
                        }
                    }
                }
                let event = wanted.iter().find(|e| e.position == position);
                self.fail(before, position, event, &reason, stop).await
            }
            None => self.one_by_one(from, &wanted, to, &ids, state, stop).await,
        }
    }

    /// Applies the wanted events one transaction each, to find which one
    /// fails; then moves through the ignored events up to `to`.
    async fn one_by_one(
        &self,
        from: Position,
        wanted: &[RecordedEvent],
        to: Position,
        ids: &BatchIds,
        state: TrackState,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        let mut at = from;
        for event in wanted {
            match self
                .attempt_with_retry(
                    at,
                    event.position,
                    Some(event.id),
                    std::slice::from_ref(event),
                    state,
                    stop,
                )
                .await
            {
                None => return Outcome::Stopped,
                Some(Attempt::Committed) => at = event.position,
                Some(Attempt::Conflict) => return Outcome::Conflict,
                Some(Attempt::EventFault { reason, .. } | Attempt::Unattributed(reason)) => {
                    let before = Position(event.position.0 - 1);
                    // Ignored events between the last success and the
                    // poison event.
                    match self.step_over(at, before, ids, state, stop).await {
                        Outcome::Committed => {}
                        ended => return ended,
                    }
                    return self
                        .fail(before, event.position, Some(event), &reason, stop)
                        .await;
                }
            }
        }
        self.step_over(at, to, ids, state, stop).await
    }

    /// Moves the checkpoint from `from` to `to` over events the projection
    /// does not apply. Anything but `Committed` ends the batch.
    async fn step_over(
        &self,
        from: Position,
        to: Position,
        ids: &BatchIds,
        state: TrackState,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        if to <= from {
            return Outcome::Committed;
        }
        match self
            .attempt_with_retry(from, to, ids.at(to), &[], state, stop)
            .await
        {
            None => Outcome::Stopped,
            Some(Attempt::Committed) => Outcome::Committed,
            Some(_) => Outcome::Conflict,
        }
    }

    /// Records that the event at `failed` stopped the track, whose
    /// checkpoint is `at`.
    /// `event` is the failed event when it was read: its correlation and
    /// W3C trace ids go into the log line, so that the failure can be
    /// followed back to the request that caused it.
    async fn fail(
        &self,
        at: Position,
        failed: Position,
        event: Option<&RecordedEvent>,
        reason: &str,
        stop: &mut watch::Receiver<bool>,
    ) -> Outcome {
        crate::telemetry::failed(self.name(), self.track);
        let flow = event.map(crate::telemetry::Flow::of).unwrap_or_default();
        tracing::error!(
            projection = self.name(),
            track = self.track.as_str(),
            position = failed.0,
            correlation_id = flow.correlation_id.as_deref(),
            trace_id = flow.trace_id.as_deref(),
            error = reason,
            "projection stopped on an event it cannot apply"
        );
        let mut retries = Retries::new(&self.shared.options);
        loop {
            let recorded = async {
                let mut tx = self.shared.db.begin_write().await?;
                let done = checkpoint::record_failure(
                    tx.conn(),
                    self.name(),
                    self.track,
                    at,
                    failed,
                    reason,
                )
                .await?;
                tx.commit().await?;
                Ok::<_, Error>(done)
            };
            match recorded.await {
                Ok(true) => return Outcome::Failed,
                Ok(false) => return Outcome::Conflict,
                Err(e) => {
                    self.note_transient(&e.to_string());
                    if retries.wait(stop).await {
                        return Outcome::Stopped;
                    }
                }
            }
        }
    }

    /// One transaction, retried while the failure is transient. `None`
    /// when stopped while waiting to retry.
    async fn attempt_with_retry(
        &self,
        from: Position,
        to: Position,
        to_id: Option<uuid::Uuid>,
        wanted: &[RecordedEvent],
        state: TrackState,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Attempt> {
        let mut retries = Retries::new(&self.shared.options);
        loop {
            match self.attempt(from, to, to_id, wanted, state).await {
                Ok(attempt) => return Some(attempt),
                Err(e) => {
                    self.note_transient(&e.to_string());
                    if retries.wait(stop).await {
                        return None;
                    }
                }
            }
        }
    }

    /// One transaction: move the checkpoint from `from` to `to` and apply
    /// `wanted`. `Err` means a failure of the infrastructure, worth a retry.
    async fn attempt(
        &self,
        from: Position,
        to: Position,
        to_id: Option<uuid::Uuid>,
        wanted: &[RecordedEvent],
        state: TrackState,
    ) -> Result<Attempt> {
        let db = &self.shared.db;
        let mut tx = db.begin_write().await?;
        // The checkpoint first: it takes the row lock, and a writer that
        // lost a race learns it before doing any work.
        let moved = checkpoint::advance(
            tx.conn(),
            self.name(),
            self.track,
            self.reg.version,
            from,
            to,
            to_id,
            state,
        )
        .await?;
        if !moved {
            tx.rollback().await?;
            return Ok(Attempt::Conflict);
        }
        if !wanted.is_empty() {
            let (applied, erased) = {
                let mut view = ViewTx::new(tx.conn(), db.dialect(), self.tables());
                let applied = AssertUnwindSafe(self.reg.projection.apply(&mut view, wanted))
                    .catch_unwind()
                    .await;
                (applied, view.erased())
            };
            if erased {
                tx.erased_personal_data();
            }
            let fault = match applied {
                Ok(Ok(())) => None,
                Ok(Err(ApplyError::Database(e))) if is_transient_sql(&e) => {
                    drop(tx);
                    return Err(Error::Database(e));
                }
                Ok(Err(ApplyError::Event { position, reason })) => {
                    Some(Attempt::EventFault { position, reason })
                }
                Ok(Err(e)) => Some(Attempt::Unattributed(e.to_string())),
                Err(panic) => Some(Attempt::Unattributed(format!(
                    "the handler panicked: {}",
                    panic_message(panic.as_ref())
                ))),
            };
            if let Some(fault) = fault {
                // Dropping the transaction rolls it back; an explicit
                // rollback could fail on a connection left in a bad state.
                drop(tx);
                return Ok(fault);
            }
        }
        tx.commit().await?;
        crate::telemetry::batch_committed(self.name(), self.track, to.0 - from.0);
        Ok(Attempt::Committed)
    }
}

/// The ids of a batch's events by position, to record with a checkpoint
/// the event it stands on.
struct BatchIds(Vec<(Position, uuid::Uuid)>);

impl BatchIds {
    fn of(events: &[RecordedEvent]) -> Self {
        Self(events.iter().map(|e| (e.position, e.id)).collect())
    }

    fn at(&self, position: Position) -> Option<uuid::Uuid> {
        self.0
            .binary_search_by_key(&position, |(p, _)| *p)
            .ok()
            .map(|i| self.0[i].1)
    }
}

/// Whether the log still holds what a checkpoint says its tables were
/// built from: `Some(why)` when it does not (it was truncated past it, or
/// restored from an older copy). A checkpoint without an event id (at 0,
/// or past an event that could not be read) is checked against the head
/// alone; an event that cannot be read now cannot be compared, and the
/// track meets it as it goes on.
pub(crate) async fn check_log(
    store: &dyn event_store::EventStore,
    cp: &checkpoint::Checkpoint,
) -> Result<Option<String>> {
    if cp.position == Position::ZERO {
        return Ok(None);
    }
    let checked = match cp.event_id {
        Some(id) => store.check_continues(cp.position, id).await,
        None => match store.head().await {
            Ok(head) if head >= cp.position => Ok(()),
            Ok(head) => Err(event_store::Error::Diverged(format!(
                "the log ends at position {head}, before position {}: it lost events it had \
                 served (a truncated segment, or a data directory restored from an older copy)",
                cp.position
            ))),
            Err(e) => Err(e),
        },
    };
    match checked {
        Ok(()) => Ok(None),
        Err(event_store::Error::Diverged(why)) => Ok(Some(why)),
        Err(
            e @ (event_store::Error::Corruption { .. }
            | event_store::Error::Upcast { .. }
            | event_store::Error::KeyStore(_)),
        ) => {
            tracing::warn!(position = cp.position.0, error = %e, "cannot read the event at a checkpoint to compare it");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// What [`TrackRunner::collect`] gathered.
struct Collected {
    events: Vec<RecordedEvent>,
    /// The subscription had nothing more right away: the track is live.
    drained: bool,
    end: Option<CollectEnd>,
}

enum CollectEnd {
    Stop,
    Woken,
    Failed(String),
    /// The store cannot bring the next event to the current schema
    /// ([`event_store::Error::Upcast`]): no retry will read it.
    Unreadable {
        event_type: String,
        reason: String,
    },
}

impl CollectEnd {
    fn of_error(e: event_store::Error) -> Self {
        match e {
            event_store::Error::Upcast { ref event_type, .. } => CollectEnd::Unreadable {
                event_type: event_type.clone(),
                reason: e.to_string(),
            },
            other => CollectEnd::Failed(other.to_string()),
        }
    }
}

/// Keeps the events that continue `position` without a hole; a hole is
/// returned as an error after them.
fn check_contiguous(
    position: Position,
    mut events: Vec<RecordedEvent>,
) -> (Vec<RecordedEvent>, Option<Error>) {
    let mut expected = position.next();
    for (i, event) in events.iter().enumerate() {
        if event.position != expected {
            let gap = Error::Gap {
                expected,
                found: event.position,
            };
            events.truncate(i);
            return (events, Some(gap));
        }
        expected = expected.next();
    }
    (events, None)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn event(position: u64) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::nil(),
            stream_id: event_store::StreamId::new("s").unwrap(),
            version: position,
            position: Position(position),
            event_type: "E".into(),
            schema_version: 1,
            timestamp: event_store::Timestamp(0),
            data: Bytes::from_static(b"{}"),
            metadata: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn contiguous_events_pass_and_a_hole_cuts_the_batch() {
        let (ok, problem) = check_contiguous(Position(4), vec![event(5), event(6)]);
        assert_eq!(ok.len(), 2);
        assert!(problem.is_none());

        let (ok, problem) = check_contiguous(Position(4), vec![event(5), event(7), event(8)]);
        assert_eq!(ok.len(), 1);
        assert!(matches!(
            problem,
            Some(Error::Gap {
                expected: Position(6),
                found: Position(7)
            })
        ));

        // A duplicate is out of sequence too.
        let (ok, problem) = check_contiguous(Position(4), vec![event(4)]);
        assert!(ok.is_empty());
        assert!(problem.is_some());
    }
}
