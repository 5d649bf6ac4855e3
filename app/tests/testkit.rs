//! The projection testkit on a view of its own: notes written, rewritten
//! and erased fold into a `notes` table, read back as rows and through a
//! list route and an item route, on SQLite and on PostgreSQL. A projection
//! that stops on an event fails the test that reads it, and a PostgreSQL
//! database of a test is gone once the test is done with it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use annals::testkit::{ProjectionTest, TestDatabase, given};
use command_api::{Aggregate, AggregateCommand, DomainError, DomainEvent, JsonEvent};
use event_store::{Direction, EventStore, NewEvent, ReadFrom, RecordedEvent, StreamId};
use projector::sqlx::{self, AssertSqlSafe};
use projector::{ApplyError, Projection, Schema, ViewTx};
use query_api::{Filter, FromViewRow, ItemRoute, Key, ListRoute, QueryRoutes, View, ViewRow};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

/// A note: written, rewritten, erased.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Note {
    erased: bool,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum NoteEvent {
    Written { text: String },
    Erased,
}

impl JsonEvent for NoteEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Written { .. } => "Written",
            Self::Erased => "Erased",
        }
    }
}

#[derive(Debug)]
enum NoteCommand {
    Write { id: Uuid, text: String },
}

impl AggregateCommand for NoteCommand {
    fn aggregate_id(&self) -> Uuid {
        match self {
            Self::Write { id, .. } => *id,
        }
    }
    fn creates_aggregate(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "write"
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the note is erased")]
struct NoteErased;

impl DomainError for NoteErased {
    fn rule(&self) -> &'static str {
        "note-erased"
    }
}

impl Aggregate for Note {
    const TYPE: &'static str = "note";
    const SNAPSHOT_SCHEMA: u32 = 1;
    type Command = NoteCommand;
    type Event = NoteEvent;
    type Error = NoteErased;
    fn handle(&self, command: &NoteCommand) -> Result<Vec<NoteEvent>, NoteErased> {
        let NoteCommand::Write { text, .. } = command;
        if self.erased {
            return Err(NoteErased);
        }
        Ok(vec![NoteEvent::Written { text: text.clone() }])
    }
    fn apply(&mut self, event: &NoteEvent) {
        self.erased |= matches!(event, NoteEvent::Erased);
    }
}

/// The `notes` view: a row per note with its text and word count; an
/// erased note keeps its row without text.
#[derive(Debug)]
struct Notes;

#[async_trait::async_trait]
impl Projection for Notes {
    fn name(&self) -> &'static str {
        "notes"
    }
    fn version(&self) -> u32 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["notes"]
    }
    fn event_types(&self) -> &'static [&'static str] {
        &["Written", "Erased"]
    }
    fn schema(&self) -> Schema {
        let ddl = "CREATE TABLE notes (id TEXT PRIMARY KEY, text TEXT, words BIGINT NOT NULL, \
                   version BIGINT NOT NULL)";
        Schema::new(ddl, ddl)
    }
    async fn apply(&self, tx: &mut ViewTx<'_>, events: &[RecordedEvent]) -> Result<(), ApplyError> {
        let table = tx.table("notes")?;
        for event in events {
            let id = event
                .stream_id
                .as_str()
                .trim_start_matches("note-")
                .to_owned();
            let version = event.version as i64;
            let decoded = NoteEvent::decode(&event.event_type, event.schema_version, &event.data)
                .map_err(|e| ApplyError::event(event, e.to_string()))?;
            let query = match decoded {
                NoteEvent::Written { text } => {
                    let words = text.split_whitespace().count() as i64;
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {table} (id, text, words, version) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (id) DO UPDATE SET text = $2, words = $3, version = $4"
                    )))
                    .bind(id)
                    .bind(text)
                    .bind(words)
                    .bind(version)
                }
                NoteEvent::Erased => sqlx::query(AssertSqlSafe(format!(
                    "UPDATE {table} SET text = NULL, words = 0, version = $2 WHERE id = $1"
                )))
                .bind(id)
                .bind(version),
            };
            query.execute(tx.conn()).await?;
        }
        Ok(())
    }
}

/// A note as the routes show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct NoteRow {
    id: String,
    text: Option<String>,
    words: i64,
    version: i64,
}

impl FromViewRow for NoteRow {
    fn from_row(row: &ViewRow<'_>) -> Result<Self, sqlx::Error> {
        Ok(NoteRow {
            id: row.get("id")?,
            text: row.get("text")?,
            words: row.get("words")?,
            version: row.get("version")?,
        })
    }
    fn version(&self) -> Option<i64> {
        Some(self.version)
    }
}

fn routes() -> QueryRoutes {
    let select = "SELECT id, text, words, version FROM notes";
    QueryRoutes::new()
        .list(
            ListRoute::<NoteRow>::new("/notes", View::new("notes"), select)
                .key(Key::text("id"))
                .filter(Filter::integer("words", 0, 1000).eq("words")),
        )
        .item(ItemRoute::<NoteRow>::new(
            "/notes/{id}",
            View::new("notes"),
            &format!("{select} WHERE id = $1"),
        ))
}

/// The same story on either database.
async fn notes_fold_into_rows_and_answer_queries(view: ProjectionTest) {
    // Nothing yet: the table exists, empty.
    assert_eq!(view.rows("SELECT id FROM notes").await, Vec::<Value>::new());
    let empty = view.get(&routes(), "/notes").await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    assert_eq!(empty.body["items"], json!([]));

    // Time-ordered ids, so that rows and pages come in a known order.
    let first = Uuid::now_v7();
    let second = Uuid::now_v7();
    view.given::<Note>(
        first,
        [NoteEvent::Written {
            text: "buy milk".into(),
        }],
    )
    .await;
    view.given::<Note>(
        second,
        [
            NoteEvent::Written {
                text: "call".into(),
            },
            NoteEvent::Written {
                text: "call the bank".into(),
            },
        ],
    )
    .await;
    let last = view
        .given_stream(&format!("note-{first}"), [NoteEvent::Erased])
        .await;

    let rows = view
        .rows("SELECT id, text, words, version FROM notes ORDER BY id")
        .await;
    assert_eq!(
        rows,
        [
            json!({"id": first.to_string(), "text": null, "words": 0, "version": 2}),
            json!({"id": second.to_string(), "text": "call the bank", "words": 3, "version": 2}),
        ]
    );
    #[derive(Debug, PartialEq, Deserialize)]
    struct Words {
        words: i64,
    }
    assert_eq!(
        view.rows_as::<Words>("SELECT words FROM notes ORDER BY id")
            .await,
        [Words { words: 0 }, Words { words: 3 }]
    );

    // The routes answer from the same rows, at the position they reflect.
    let three = view.get(&routes(), "/notes?words=3").await;
    assert_eq!(three.status, 200, "{}", three.body);
    assert_eq!(
        three.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        three.body
    );
    assert_eq!(three.body["items"][0]["text"], "call the bank");
    assert_eq!(three.position(), Some(last.0));
    let item = view.get(&routes(), &format!("/notes/{second}")).await;
    assert_eq!(item.status, 200, "{}", item.body);
    assert_eq!(item.header("etag"), Some("\"2\""));
    assert_eq!(item.body["words"], 3);
    let missing = view
        .get(&routes(), &format!("/notes/{}", Uuid::now_v7()))
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    let refused = view.get(&routes(), "/notes?words=many").await;
    assert_eq!(refused.status, 400, "{}", refused.body);

    // Events went in as a command appends them: encoded by their own
    // code, on the aggregate's stream, with one command's metadata.
    let stream = StreamId::new(format!("note-{second}")).unwrap();
    let stored = view
        .store()
        .read_stream(&stream, ReadFrom::Start, Direction::Forward, 10)
        .await
        .unwrap()
        .events;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].event_type, "Written");
    let metadata = stored[0].metadata().unwrap();
    assert!(metadata.correlation_id.is_some(), "{metadata:?}");
    assert_eq!(metadata.correlation_id, metadata.causation_id);
    assert!(metadata.extra["command_id"].is_string(), "{metadata:?}");
    assert_eq!(metadata, stored[1].metadata().unwrap());
}

#[tokio::test]
async fn notes_fold_into_rows_and_answer_queries_on_sqlite() {
    notes_fold_into_rows_and_answer_queries(ProjectionTest::sqlite(Notes).await).await;
}

#[tokio::test]
async fn notes_fold_into_rows_and_answer_queries_on_postgres() {
    let Some(view) = ProjectionTest::postgres(Notes).await else {
        return;
    };
    notes_fold_into_rows_and_answer_queries(view).await;
}

/// Events the projection ignores still move it to the head, so reads do
/// not wait for them.
#[tokio::test]
async fn events_of_other_types_do_not_hold_the_view_back() {
    let view = ProjectionTest::sqlite(Notes).await;
    let id = Uuid::now_v7();
    view.given::<Note>(id, [NoteEvent::Written { text: "a b".into() }])
        .await;
    view.given_raw("other-1", vec![NewEvent::new("Unrelated", "{}")])
        .await;
    assert_eq!(
        view.rows("SELECT words FROM notes").await,
        [json!({"words": 2})]
    );
}

/// A projection that cannot apply an event fails the test reading it,
/// naming the event, rather than waiting for ever.
#[tokio::test]
#[should_panic(expected = "the projection notes stopped on the event at position 2")]
async fn a_projection_stopped_on_an_event_fails_the_test() {
    let view = ProjectionTest::sqlite(Notes).await;
    let id = Uuid::now_v7();
    view.given::<Note>(
        id,
        [NoteEvent::Written {
            text: "fine".into(),
        }],
    )
    .await;
    view.given_raw(
        &format!("note-{id}"),
        vec![NewEvent::new("Written", r#"{"text": 7}"#)],
    )
    .await;
    view.rows("SELECT id FROM notes").await;
}

/// The aggregate testkit is there too, under the same module.
#[test]
fn the_aggregate_testkit_is_reexported() {
    given::<Note>([NoteEvent::Erased])
        .when(NoteCommand::Write {
            id: Uuid::now_v7(),
            text: "again".into(),
        })
        .then_rule("note-erased");
}

/// Whether the server at `server` has a database called `name`.
async fn database_exists(server: &str, name: &str) -> bool {
    let mut admin =
        <sqlx::PgConnection as sqlx::Connection>::connect(&format!("{server}/postgres"))
            .await
            .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    count == 1
}

/// A test's PostgreSQL database answers while the test has it and is
/// dropped with it, even with a session still open.
#[tokio::test]
async fn a_test_database_is_dropped_with_its_value() {
    let Some(db) = TestDatabase::create("dropped").await else {
        return;
    };
    let name = db.name().to_owned();
    let server = db
        .url()
        .strip_suffix(&format!("/{name}"))
        .unwrap()
        .to_owned();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    assert!(database_exists(&server, &name).await);
    drop(db);
    assert!(!database_exists(&server, &name).await);
    drop(conn);
}
