//! postgres-es 0.5.0 (the PostgreSQL repository of cqrs-es) on the same
//! workloads, through its repository API: `persist`, `get_events`,
//! `stream_all_events`. Its table is the one its `db/init.sql` creates, in
//! the bench database's `public` schema.

use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent, EventEnvelope};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use sqlx_peer::postgres::PgPoolOptions;

/// `events` as postgres-es's `db/init.sql` creates it.
const TABLE: &str = "CREATE TABLE events (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text NOT NULL,
    event_version  text NOT NULL,
    payload        json NOT NULL,
    metadata       json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
)";

/// The aggregate the repository is typed by; the bench only stores and
/// reads its events.
#[derive(Default, Serialize, Deserialize)]
struct Bench;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
struct Happened(serde_json::Value);

impl DomainEvent for Happened {
    fn event_type(&self) -> String {
        "Happened".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug)]
struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

impl Aggregate for Bench {
    const TYPE: &'static str = "bench";
    type Command = ();
    type Event = Happened;
    type Error = Never;
    type Services = ();

    async fn handle(&mut self, _: (), _: &(), _: &EventSink<Self>) -> Result<(), Never> {
        Ok(())
    }

    fn apply(&mut self, _: Happened) {}
}

impl DomainEvent for super::Payment {
    fn event_type(&self) -> String {
        "Happened".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

/// The same aggregate type with its events typed: loading it decodes each
/// event's payload into a [`super::Payment`], as cqrs-es does when it
/// loads an aggregate.
#[derive(Default, Serialize, Deserialize)]
struct TypedBench {
    total: u64,
}

impl Aggregate for TypedBench {
    const TYPE: &'static str = Bench::TYPE;
    type Command = ();
    type Event = super::Payment;
    type Error = Never;
    type Services = ();

    async fn handle(&mut self, _: (), _: &(), _: &EventSink<Self>) -> Result<(), Never> {
        Ok(())
    }

    fn apply(&mut self, event: super::Payment) {
        self.total += event.amount;
    }
}

pub struct Peer {
    pool: sqlx_peer::PgPool,
    repository: std::sync::Arc<PostgresEventRepository>,
}

fn serialized(aggregate_id: &str, sequence: u64) -> SerializedEvent {
    let payload = serde_json::from_str(&bench_harness::payload::json_200(sequence)).unwrap();
    SerializedEvent::new(
        aggregate_id.to_owned(),
        sequence as usize,
        Bench::TYPE.to_owned(),
        "Happened".to_owned(),
        "1.0".to_owned(),
        payload,
        serde_json::json!({}),
    )
}

impl Peer {
    /// The repository over a pool of `connections` connections to `url`,
    /// with its table created.
    pub async fn connect(url: &str, connections: u32) -> Self {
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .connect(url)
            .await
            .unwrap();
        sqlx_peer::query(TABLE).execute(&pool).await.unwrap();
        let repository = std::sync::Arc::new(PostgresEventRepository::new(pool.clone()));
        Self { pool, repository }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Events persisted per second by `writers` writers of `batch` events
    /// each for `time`, each to an aggregate of its own (named after `run`).
    pub async fn append_rate(&self, run: &str, writers: usize, batch: u64, time: Duration) -> f64 {
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let repository = self.repository.clone();
                let id = format!("{run}-{w}");
                tokio::spawn(async move {
                    let mut sequence = 0;
                    while started.elapsed() < time {
                        let events: Vec<_> =
                            (1..=batch).map(|i| serialized(&id, sequence + i)).collect();
                        repository.persist::<Bench>(&events, None).await.unwrap();
                        sequence += batch;
                    }
                    sequence
                })
            })
            .collect();
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        total as f64 / started.elapsed().as_secs_f64()
    }

    /// `events` events in aggregates of `per_stream`, as the annals fill
    /// writes them: 10 events to each of 50 aggregates per transaction.
    pub async fn fill(&self, events: u64, per_stream: u64) {
        let streams = events / per_stream;
        for round in 0..per_stream / 10 {
            for first in (0..streams).step_by(50) {
                let batch: Vec<_> = (first..(first + 50).min(streams))
                    .flat_map(|s| {
                        let id = format!("fill-{s}");
                        (1..=10).map(move |i| serialized(&id, round * 10 + i))
                    })
                    .collect();
                self.repository
                    .persist::<Bench>(&batch, None)
                    .await
                    .unwrap();
            }
        }
    }

    /// Median time of a load of a whole aggregate's events, over 50, after
    /// as many warm-up loads as annals gets; with [`super::Load::Aggregate`]
    /// each event becomes an `EventEnvelope` of the typed aggregate and is
    /// applied, as the framework's aggregate load does.
    pub async fn load_time(&self, streams: u64, per_stream: u64, load: super::Load) -> Duration {
        for i in 0..super::WARM_UP_LOADS {
            let id = format!("fill-{}", (i * 104_729 + 1) % streams);
            self.repository.get_events::<Bench>(&id).await.unwrap();
        }
        let mut times = Vec::new();
        for i in 0..50 {
            let id = load.stream(i, streams);
            let started = Instant::now();
            let events = self.repository.get_events::<Bench>(&id).await.unwrap();
            let count = events.len() as u64;
            if load == super::Load::Aggregate {
                let mut state = TypedBench::default();
                for event in events {
                    let envelope = EventEnvelope::<TypedBench>::try_from(event).unwrap();
                    state.apply(envelope.payload);
                }
                std::hint::black_box(state.total);
            }
            times.push(started.elapsed());
            assert_eq!(count, per_stream);
        }
        times.sort();
        times[times.len() / 2]
    }

    /// Events replayed per second: every event of the aggregate type.
    pub async fn replay_rate(&self) -> f64 {
        let started = Instant::now();
        let mut stream = self.repository.stream_all_events::<Bench>().await.unwrap();
        let mut read = 0u64;
        while let Some(event) = stream.next::<Bench>(&[]).await {
            event.unwrap();
            read += 1;
        }
        read as f64 / started.elapsed().as_secs_f64()
    }
}
