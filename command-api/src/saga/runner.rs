//! Runs a [`Saga`]: subscription, lanes, checkpoints, retries, status.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff};
use event_store::{
    Clock, Direction, EventStore, ExpectedVersion, NewEvent, Position, ReadFrom, RecordedEvent,
    Subscription, SystemClock,
};
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

use super::checkpoint::{CHECKPOINT_EVENT_TYPE, Checkpoint, checkpoint_stream};
use super::contract::{Flow, Saga, SagaContext, SagaError, lock};
use super::status::{MarkStopped, SagaFailure, SagaHandle, SagaState};

/// How a saga is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaConfig {
    /// Write a checkpoint once the watermark has moved this many log
    /// positions past the last one (positions the saga's filter skips count
    /// too). After a crash at most about this many positions are read, and
    /// the saga's events among them handled, again (harmlessly: the steps
    /// are idempotent).
    pub checkpoint_every_events: NonZeroU64,
    /// Write a checkpoint at least this often while there is progress to
    /// save, so a quiet saga does not leave its last events unrecorded.
    pub checkpoint_interval: Duration,
    /// First pause before retrying an event after a transient failure (or
    /// following the log again after it failed); it doubles on each failure,
    /// and each pause is lengthened by a random part of up to as much again
    /// so that retries do not come in lockstep; none is longer than
    /// `retry_backoff_max`.
    pub retry_backoff_min: Duration,
    pub retry_backoff_max: Duration,
    /// Events handled at once (in different lanes).
    pub concurrency: usize,
    /// Events received but not yet done, at most; past it the saga stops
    /// reading until some finish (one stuck lane must not fill memory).
    pub window: usize,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            checkpoint_every_events: NonZeroU64::new(1000).unwrap_or(NonZeroU64::MIN),
            checkpoint_interval: Duration::from_secs(1),
            retry_backoff_min: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(10),
            concurrency: 32,
            window: 10_000,
        }
    }
}

/// Runs one saga until shutdown. Build it with the saga and the store it
/// follows, then [`SagaRunner::run`] it in a task of its own.
pub struct SagaRunner<S: Saga> {
    saga: Arc<S>,
    store: Arc<dyn EventStore>,
    config: SagaConfig,
    start_after: Option<Position>,
    status: SagaHandle,
    clock: Arc<dyn Clock>,
}

impl<S: Saga> std::fmt::Debug for SagaRunner<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaRunner")
            .field("saga", &self.saga.name())
            .field("config", &self.config)
            .field("start_after", &self.start_after)
            .field("clock", &self.clock)
            .finish()
    }
}

impl<S: Saga> SagaRunner<S> {
    pub fn new(saga: S, store: Arc<dyn EventStore>, config: SagaConfig) -> Self {
        let status = SagaHandle::new(saga.name(), Some((store.clone(), saga.filter())));
        Self {
            saga: Arc::new(saga),
            store,
            config,
            start_after: None,
            status,
            clock: Arc::new(SystemClock),
        }
    }

    /// The clock [`SagaContext::now`] reads (the wall clock by default):
    /// a test of a deadline sets the time instead of waiting for it.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Ignores the checkpoint and starts after `position` (`Position::ZERO`:
    /// the whole log) with the default state. The steps are idempotent, so
    /// going over events again changes nothing.
    pub fn starting_after(mut self, position: Position) -> Self {
        self.start_after = Some(position);
        self
    }

    pub fn handle(&self) -> SagaHandle {
        self.status.clone()
    }

    pub fn saga(&self) -> &Arc<S> {
        &self.saga
    }

    /// Follows the log until `shutdown` resolves, then lets the events being
    /// handled finish their attempt, writes a last checkpoint and returns.
    /// Failures never end it.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let _stopped = MarkStopped(self.status.clone());
        let mut shutdown = Shutdown::new(shutdown);
        let Some(checkpoint) = self.start(&mut shutdown).await else {
            return;
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut run = self.started(checkpoint, stop_rx);
        self.follow(&mut run, &mut shutdown).await;
        self.stop(run, stop_tx).await;
    }

    /// The run's memory from the checkpoint it starts from, reported as
    /// running.
    fn started(
        &self,
        checkpoint: Checkpoint<S::State>,
        stop: watch::Receiver<bool>,
    ) -> Run<S::State> {
        let start = Position(checkpoint.position);
        let summary = self.saga.summary(&checkpoint.state);
        self.status.update(|s| {
            s.state = SagaState::Running;
            s.started_after = start.0;
            s.position = start.0;
            s.checkpoint = start.0;
            s.state_summary = summary;
        });
        tracing::info!(saga = self.saga.name(), after = start.0, "saga started");
        Run {
            lanes: Lanes::new(start),
            tasks: JoinSet::new(),
            in_task: HashMap::new(),
            checkpointed: start,
            checkpoint_due: tokio::time::Instant::now() + self.config.checkpoint_interval,
            state: Arc::new(Mutex::new(checkpoint.state)),
            stop,
            last_received: None,
        }
    }

    /// Subscribes and follows the log until shutdown, subscribing again
    /// after a back-off whenever following fails.
    async fn follow(&self, run: &mut Run<S::State>, shutdown: &mut Shutdown<'_>) {
        let mut pause = None;
        loop {
            let followed = match self.subscribe(run).await {
                Ok(subscription) => {
                    self.follow_subscription(run, subscription, shutdown, &mut pause)
                        .await
                }
                Err(error) => Followed::Failed(error),
            };
            match followed {
                Followed::Stopped => return,
                Followed::Failed(error) => {
                    self.failed_to_follow(error);
                    if !self.back_off(&mut pause, shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// A subscription from the first position not yet received.
    async fn subscribe(&self, run: &Run<S::State>) -> Result<Subscription, String> {
        let from = Position(run.lanes.received.0 + 1);
        // Coming back after a failure: a log truncated or restored from an
        // older copy since would hand out other events under positions
        // already handled, and the saga would miss them.
        if let Some((position, id)) = run.last_received
            && let Err(e) = self.store.check_continues(position, id).await
        {
            return Err(match e {
                event_store::Error::Diverged(why) => format!(
                    "{why}; restart this process so that the saga resumes from its \
                         checkpoint in the log as it is now"
                ),
                other => format!("cannot check the log before subscribing again: {other}"),
            });
        }
        let subscription = self
            .store
            .subscribe(from, self.saga.filter())
            .await
            .map_err(|e| format!("cannot subscribe: {e}"))?;
        // Back after a failure: an idle log brings no event to say so, and
        // readiness must not wait for one.
        self.status.update(|s| s.state = SagaState::Running);
        Ok(subscription)
    }

    /// Hands the subscription's events to the lanes, books finished tasks
    /// and writes checkpoints, until shutdown or until the subscription
    /// fails.
    async fn follow_subscription(
        &self,
        run: &mut Run<S::State>,
        mut subscription: Subscription,
        shutdown: &mut Shutdown<'_>,
        pause: &mut Option<ExponentialBackoff>,
    ) -> Followed {
        loop {
            let can_read = run.lanes.outstanding.len() < self.config.window.max(1);
            let has_tasks = !run.tasks.is_empty();
            let next = tokio::select! {
                biased;
                () = shutdown.wait() => Next::Stop,
                Some(finished) = run.tasks.join_next_with_id(), if has_tasks => Next::Finished(finished),
                item = subscription.next(), if can_read => Next::Event(item),
                () = tokio::time::sleep_until(run.checkpoint_due),
                    if run.lanes.watermark() > run.checkpointed => Next::CheckpointDue,
            };
            match next {
                Next::Stop => return Followed::Stopped,
                Next::CheckpointDue => self.checkpoint(run).await,
                Next::Finished(finished) => {
                    self.finished(run, finished);
                    self.dispatch(run);
                    if self.checkpoint_is_due(run) {
                        self.checkpoint(run).await;
                    }
                }
                Next::Event(Some(Ok(event))) => {
                    // Following works again: the next failure waits the
                    // shortest pause.
                    *pause = None;
                    self.received(run, event);
                }
                Next::Event(Some(Err(e))) => {
                    return Followed::Failed(format!("the subscription failed: {e}"));
                }
                Next::Event(None) => return Followed::Failed("the subscription ended".into()),
            }
        }
    }

    /// Whether the watermark moved far enough, or long enough ago, to be
    /// written.
    fn checkpoint_is_due(&self, run: &Run<S::State>) -> bool {
        run.lanes.watermark().0 - run.checkpointed.0 >= self.config.checkpoint_every_events.get()
            || (tokio::time::Instant::now() >= run.checkpoint_due
                && run.lanes.watermark() > run.checkpointed)
    }

    /// Queues an event in its lane and starts what can start.
    fn received(&self, run: &mut Run<S::State>, event: RecordedEvent) {
        run.last_received = Some((event.position, event.id));
        let lane = self.saga.lane(&event);
        run.lanes.arrived(lane, event);
        self.dispatch(run);
        let in_flight = run.lanes.outstanding.len() as u64;
        self.status.update(|s| s.events_in_flight = in_flight);
    }

    /// Events being handled finish their attempt (a command half-sent is not
    /// abandoned); those waiting to retry stop waiting and stay undone, so
    /// the checkpoint stays below them. Then the last checkpoint.
    async fn stop(&self, mut run: Run<S::State>, stop: watch::Sender<bool>) {
        let _ = stop.send(true);
        while let Some(finished) = run.tasks.join_next_with_id().await {
            self.finished(&mut run, finished);
        }
        if run.lanes.watermark() > run.checkpointed {
            self.checkpoint(&mut run).await;
        }
        tracing::info!(
            saga = self.saga.name(),
            position = run.lanes.watermark().0,
            checkpoint = run.checkpointed.0,
            "saga stopped"
        );
    }

    /// The checkpoint to start from: the configured position, or the last
    /// one written. `None` when stopped meanwhile.
    async fn start(&self, shutdown: &mut Shutdown<'_>) -> Option<Checkpoint<S::State>> {
        if let Some(position) = self.start_after {
            return Some(Checkpoint {
                position: position.0,
                state: S::State::default(),
            });
        }
        let mut pause = None;
        loop {
            match self.read_checkpoint().await {
                Ok(checkpoint) => return Some(checkpoint),
                Err(SagaError::Transient(error)) => {
                    self.failed_to_follow(format!("cannot read the checkpoint: {error}"));
                    if !self.back_off(&mut pause, shutdown).await {
                        return None;
                    }
                }
                Err(SagaError::Permanent(error)) => {
                    // Starting over is slow but safe: every step is
                    // idempotent. Stopping would leave every event undone.
                    tracing::error!(saga = self.saga.name(), %error,
                        "the saga's checkpoint cannot be read; starting from the beginning of the log");
                    self.status.update(|s| {
                        s.last_error = Some(SagaFailure {
                            position: None,
                            event_type: Some(CHECKPOINT_EVENT_TYPE.into()),
                            error: format!("the checkpoint cannot be read: {error}"),
                            skipped: true,
                        });
                    });
                    return Some(Checkpoint {
                        position: 0,
                        state: S::State::default(),
                    });
                }
            }
        }
    }

    async fn read_checkpoint(&self) -> Result<Checkpoint<S::State>, SagaError> {
        let stream =
            checkpoint_stream(self.saga.name()).map_err(|e| SagaError::Permanent(e.to_string()))?;
        let slice = self
            .store
            .read_stream(&stream, ReadFrom::End, Direction::Backward, 1)
            .await
            .map_err(SagaError::from_store)?;
        let Some(event) = slice.events.first() else {
            return Ok(Checkpoint {
                position: 0,
                state: S::State::default(),
            });
        };
        event.data_as::<Checkpoint<S::State>>().map_err(|e| {
            SagaError::Permanent(format!(
                "{} at position {} does not decode: {e}",
                event.event_type, event.position
            ))
        })
    }

    /// Starts handling queued events while there is room.
    fn dispatch(&self, run: &mut Run<S::State>) {
        while run.tasks.len() < self.config.concurrency.max(1) {
            let Some((lane, event)) = run.lanes.next_ready() else {
                return;
            };
            let position = event.position;
            let worker = Worker {
                saga: Arc::clone(&self.saga),
                store: Arc::clone(&self.store),
                clock: Arc::clone(&self.clock),
                config: self.config.clone(),
                status: self.status.clone(),
            };
            let work = handle_until_done(worker, event, Arc::clone(&run.state), run.stop.clone());
            let id = run.tasks.spawn(work).id();
            run.in_task.insert(id, (lane, position));
        }
    }

    /// Books a finished task: its lane is free again and, if its event is
    /// done, the watermark may move.
    fn finished(
        &self,
        run: &mut Run<S::State>,
        finished: Result<(Id, Done), tokio::task::JoinError>,
    ) {
        let (id, done) = match finished {
            Ok((id, done)) => (id, done),
            Err(e) => {
                // A handler that panicked is a bug in the saga; the event
                // is skipped like any other that cannot succeed.
                let id = e.id();
                let position = run.in_task.get(&id).map(|(_, p)| p.0);
                tracing::error!(saga = self.saga.name(), position, error = %e,
                    "the saga's handler panicked; the event is skipped");
                self.status.update(|s| {
                    s.events_skipped += 1;
                    s.last_error = Some(SagaFailure {
                        position,
                        event_type: None,
                        error: format!("the handler panicked: {e}"),
                        skipped: true,
                    });
                });
                (id, Done::Yes)
            }
        };
        let Some((lane, position)) = run.in_task.remove(&id) else {
            return;
        };
        run.lanes.finished(lane, position, done == Done::Yes);
        let watermark = run.lanes.watermark().0;
        let in_flight = run.lanes.outstanding.len() as u64;
        self.status.update(|s| {
            s.position = watermark;
            s.events_in_flight = in_flight;
            if done == Done::Yes {
                s.events_handled += 1;
            }
        });
    }

    /// Appends the watermark and the state. A failure is logged and retried
    /// at the next occasion: the checkpoint only bounds how much is handled
    /// again.
    async fn checkpoint(&self, run: &mut Run<S::State>) {
        run.checkpoint_due = tokio::time::Instant::now() + self.config.checkpoint_interval;
        let position = run.lanes.watermark();
        let state = lock(&run.state).clone();
        let summary = self.saga.summary(&state);
        let written = async {
            let stream = checkpoint_stream(self.saga.name())?;
            let event = NewEvent::json(
                CHECKPOINT_EVENT_TYPE,
                &Checkpoint {
                    position: position.0,
                    state,
                },
            )
            .map_err(|e| event_store::Error::InvalidAppend(e.to_string()))?;
            self.store
                .append(&stream, ExpectedVersion::Any, vec![event])
                .await
        }
        .await;
        match written {
            Ok(_) => {
                run.checkpointed = position;
                self.status.update(|s| {
                    s.checkpoint = position.0;
                    s.state_summary = summary;
                });
                tracing::debug!(
                    saga = self.saga.name(),
                    position = position.0,
                    "saga checkpoint written"
                );
            }
            Err(e) => {
                tracing::warn!(saga = self.saga.name(), position = position.0, error = %e,
                    "cannot write the saga's checkpoint");
                self.status.update(|s| {
                    s.last_error = Some(SagaFailure {
                        position: None,
                        event_type: Some(CHECKPOINT_EVENT_TYPE.into()),
                        error: format!("cannot write the checkpoint: {e}"),
                        skipped: false,
                    });
                });
            }
        }
    }

    /// The saga cannot follow the log for now.
    fn failed_to_follow(&self, error: String) {
        tracing::warn!(saga = self.saga.name(), %error, "the saga will retry");
        self.status.update(|s| {
            s.state = SagaState::Retrying;
            s.last_error = Some(SagaFailure {
                position: None,
                event_type: None,
                error,
                skipped: false,
            });
        });
    }

    /// Waits the next of the `pause`s (the first of a fresh series when
    /// `None`). False when stopped meanwhile.
    async fn back_off(
        &self,
        pause: &mut Option<ExponentialBackoff>,
        shutdown: &mut Shutdown<'_>,
    ) -> bool {
        let wait = next_pause(pause, &self.config);
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = shutdown.wait() => false,
        }
    }
}

/// The waits between retries: from the configured minimum, doubling on
/// each failure, each lengthened by a random part of up to as much again
/// so that sagas failing together (every process's, on one store outage)
/// do not retry in lockstep. The doubling stops at half the maximum, so
/// no wait is longer than `retry_backoff_max`.
fn retry_pauses(config: &SagaConfig) -> ExponentialBackoff {
    event_store::pauses::jittered(config.retry_backoff_min, config.retry_backoff_max).build()
}

/// The next wait of `pauses`, starting a series when there is none.
fn next_pause(pauses: &mut Option<ExponentialBackoff>, config: &SagaConfig) -> Duration {
    pauses
        .get_or_insert_with(|| retry_pauses(config))
        .next()
        .map_or(config.retry_backoff_max, |p| {
            p.min(config.retry_backoff_max)
        })
}

/// Whether an event is done (handled or skipped) or still to do (stopped
/// while waiting to retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Yes,
    No,
}

/// What a task handling one event works with.
struct Worker<S: Saga> {
    saga: Arc<S>,
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    config: SagaConfig,
    status: SagaHandle,
}

/// Handles `event` until it is done: retries transient failures with a
/// back-off, skips one that cannot succeed, gives up waiting at shutdown.
async fn handle_until_done<S: Saga>(
    worker: Worker<S>,
    event: RecordedEvent,
    state: Arc<Mutex<S::State>>,
    stop: watch::Receiver<bool>,
) -> Done {
    use tracing::Instrument;
    // Every line logged while the event is handled names the flow it
    // belongs to, as the saga's commands carry it.
    let flow = Flow::of(&event);
    let trace_id = flow.traceparent.map(|t| t.trace_id());
    let span = tracing::info_span!(
        "saga_event",
        saga = worker.saga.name(),
        position = event.position.0,
        correlation_id = %flow.correlation_id,
        // The saga's commands are caused by this event.
        causation_id = %event.id,
        trace_id = trace_id.as_deref(),
    );
    if let Some(traceparent) = &flow.traceparent {
        crate::trace::adopt(traceparent, &span);
    }
    handle_in_span(worker, event, flow, state, stop)
        .instrument(span)
        .await
}

async fn handle_in_span<S: Saga>(
    worker: Worker<S>,
    event: RecordedEvent,
    flow: Flow,
    state: Arc<Mutex<S::State>>,
    mut stop: watch::Receiver<bool>,
) -> Done {
    let Worker {
        saga,
        store,
        clock,
        config,
        status,
    } = worker;
    let name = saga.name();
    let mut pause = None;
    let mut attempt = 1;
    // Counted in the status as an event being retried.
    let mut retrying = false;
    let done = loop {
        let context = SagaContext::new(
            Arc::clone(&store),
            name,
            &event,
            flow,
            attempt,
            Arc::clone(&state),
            Arc::clone(&clock),
        );
        match saga.handle(&event, &context).await {
            Ok(()) => {
                tracing::debug!(saga = name, position = event.position.0, event_type = %event.event_type,
                    stream = %event.stream_id, attempt, "saga step done");
                break Done::Yes;
            }
            Err(SagaError::Permanent(error)) => {
                tracing::error!(saga = name, position = event.position.0, event_type = %event.event_type,
                    stream = %event.stream_id, %error, "the saga skips an event it cannot handle");
                status.update(|s| {
                    s.events_skipped += 1;
                    s.last_error = Some(SagaFailure {
                        position: Some(event.position.0),
                        event_type: Some(event.event_type.clone()),
                        error,
                        skipped: true,
                    });
                });
                break Done::Yes;
            }
            Err(SagaError::Transient(error)) => {
                tracing::warn!(saga = name, position = event.position.0, event_type = %event.event_type,
                    stream = %event.stream_id, attempt, %error, "the saga will retry an event");
                status.update(|s| {
                    if !retrying {
                        s.events_retrying += 1;
                    }
                    s.last_error = Some(SagaFailure {
                        position: Some(event.position.0),
                        event_type: Some(event.event_type.clone()),
                        error,
                        skipped: false,
                    });
                });
                retrying = true;
                let wait = next_pause(&mut pause, &config);
                let stopped = tokio::select! {
                    () = tokio::time::sleep(wait) => false,
                    _ = stop.wait_for(|stop| *stop) => true,
                };
                if stopped {
                    break Done::No;
                }
                attempt += 1;
            }
        }
    };
    // Also when a stop cut the first wait short: the event is no longer
    // being retried by this run.
    if retrying {
        status.update(|s| s.events_retrying = s.events_retrying.saturating_sub(1));
    }
    done
}

/// What one run keeps in memory.
struct Run<T> {
    lanes: Lanes,
    tasks: JoinSet<Done>,
    /// The lane and position of each running task.
    in_task: HashMap<Id, (String, Position)>,
    checkpointed: Position,
    checkpoint_due: tokio::time::Instant,
    state: Arc<Mutex<T>>,
    stop: watch::Receiver<bool>,
    /// The last event received (position and id): the log must still hold
    /// it when the subscription starts again.
    last_received: Option<(Position, uuid::Uuid)>,
}

/// Events received and not done, by lane. A lane has at most one event
/// being handled; the rest wait behind it in log order.
struct Lanes {
    /// The last position received from the subscription.
    received: Position,
    /// Positions received and not done.
    outstanding: BTreeSet<u64>,
    waiting: HashMap<String, VecDeque<RecordedEvent>>,
    running: HashSet<String>,
    /// Lanes with waiting events and nothing running, oldest first.
    ready: VecDeque<String>,
}

impl Lanes {
    fn new(start: Position) -> Self {
        Self {
            received: start,
            outstanding: BTreeSet::new(),
            waiting: HashMap::new(),
            running: HashSet::new(),
            ready: VecDeque::new(),
        }
    }

    /// Every event at or below this position is done.
    fn watermark(&self) -> Position {
        match self.outstanding.first() {
            Some(first) => Position(first.saturating_sub(1)),
            None => self.received,
        }
    }

    fn arrived(&mut self, lane: String, event: RecordedEvent) {
        self.received = self.received.max(event.position);
        self.outstanding.insert(event.position.0);
        let queue = self.waiting.entry(lane.clone()).or_default();
        queue.push_back(event);
        if queue.len() == 1 && !self.running.contains(&lane) {
            self.ready.push_back(lane);
        }
    }

    /// The next event to start, marking its lane running.
    fn next_ready(&mut self) -> Option<(String, RecordedEvent)> {
        let lane = self.ready.pop_front()?;
        let queue = self.waiting.get_mut(&lane)?;
        let event = queue.pop_front()?;
        if queue.is_empty() {
            self.waiting.remove(&lane);
        }
        self.running.insert(lane.clone());
        Some((lane, event))
    }

    fn finished(&mut self, lane: String, position: Position, done: bool) {
        if done {
            self.outstanding.remove(&position.0);
        }
        self.running.remove(&lane);
        if self.waiting.contains_key(&lane) {
            self.ready.push_back(lane);
        }
    }
}

/// How following one subscription ended.
enum Followed {
    /// Shutdown.
    Stopped,
    /// The subscription failed or ended; why.
    Failed(String),
}

/// What woke the saga's loop.
enum Next {
    Stop,
    Event(Option<event_store::Result<RecordedEvent>>),
    Finished(Result<(Id, Done), tokio::task::JoinError>),
    CheckpointDue,
}

/// The shutdown future, waited on from several places and never polled
/// again once it resolved.
struct Shutdown<'a> {
    future: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    resolved: bool,
}

impl<'a> Shutdown<'a> {
    fn new(future: impl Future<Output = ()> + Send + 'a) -> Self {
        Self {
            future: Box::pin(future),
            resolved: false,
        }
    }

    async fn wait(&mut self) {
        if !self.resolved {
            (&mut self.future).await;
            self.resolved = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_never_passes_the_maximum_and_resets() {
        let config = SagaConfig {
            retry_backoff_min: Duration::from_millis(10),
            retry_backoff_max: Duration::from_millis(35),
            ..SagaConfig::default()
        };
        // Each wait is its step of the series plus a jitter of less than
        // the step again; the steps stop doubling at half the maximum.
        let steps = [10_000, 17_500, 17_500, 17_500, 17_500].map(Duration::from_micros);
        for _ in 0..20 {
            let mut pause = None;
            for step in steps {
                let wait = next_pause(&mut pause, &config);
                assert!(step <= wait && wait < step * 2, "{wait:?} for {step:?}");
                assert!(wait <= config.retry_backoff_max, "{wait:?}");
            }
            pause = None;
            let wait = next_pause(&mut pause, &config);
            assert!(wait < Duration::from_millis(20), "{wait:?} after a reset");
        }
    }

    fn event(position: u64) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::new_v4(),
            stream_id: event_store::StreamId::new("order-1").unwrap(),
            version: 1,
            position: Position(position),
            event_type: "E".into(),
            schema_version: 1,
            timestamp: event_store::Timestamp(0),
            data: bytes::Bytes::new(),
            metadata: bytes::Bytes::new(),
        }
    }

    #[test]
    fn the_watermark_waits_for_the_oldest_event_not_done() {
        let mut lanes = Lanes::new(Position(10));
        lanes.arrived("a".into(), event(11));
        lanes.arrived("b".into(), event(12));
        lanes.arrived("a".into(), event(13));
        assert_eq!(lanes.watermark(), Position(10));
        let (lane_a, first) = lanes.next_ready().unwrap();
        assert_eq!((lane_a.as_str(), first.position), ("a", Position(11)));
        let (lane_b, second) = lanes.next_ready().unwrap();
        assert_eq!((lane_b.as_str(), second.position), ("b", Position(12)));
        // Lane a's second event waits for its first.
        assert!(lanes.next_ready().is_none());
        lanes.finished(lane_b, Position(12), true);
        assert_eq!(lanes.watermark(), Position(10));
        lanes.finished(lane_a, Position(11), true);
        assert_eq!(lanes.watermark(), Position(12));
        let (lane, third) = lanes.next_ready().unwrap();
        assert_eq!(third.position, Position(13));
        lanes.finished(lane, Position(13), false);
        assert_eq!(lanes.watermark(), Position(12));
    }
}
