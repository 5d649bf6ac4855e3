//! The `tasks` view and the rows `GET /tasks` answers with.

use command_api::DomainEvent;
use event_store::RecordedEvent;
use projector::sqlx::{self, AssertSqlSafe};
use projector::{ApplyError, Projection, Schema, ViewTx};
use query_api::{FromViewRow, ViewRow};
use serde::Serialize;

use crate::task::TaskEvent;

/// The `tasks` view: one row per task.
#[derive(Debug)]
pub struct Tasks;

#[async_trait::async_trait]
impl Projection for Tasks {
    fn name(&self) -> &'static str {
        "tasks"
    }
    fn version(&self) -> u32 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["tasks"]
    }
    fn event_types(&self) -> &'static [&'static str] {
        &["TaskAdded", "TaskCompleted"]
    }
    fn schema(&self) -> Schema {
        let ddl = "CREATE TABLE tasks (id TEXT PRIMARY KEY, title TEXT NOT NULL, done BIGINT NOT NULL, version BIGINT NOT NULL)";
        Schema::new(ddl, ddl)
    }
    async fn apply(&self, tx: &mut ViewTx<'_>, events: &[RecordedEvent]) -> Result<(), ApplyError> {
        let table = tx.table("tasks")?;
        for event in events {
            let id = event.stream_id.as_str().trim_start_matches("task-").to_owned();
            let query =
                match TaskEvent::decode(&event.event_type, event.schema_version, &event.data)
                    .map_err(|e| ApplyError::event(event, e.to_string()))?
                {
                    TaskEvent::TaskAdded { title } => sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO {table} (id, title, done, version) VALUES ($1, $2, 0, $3)"
                    )))
                    .bind(id)
                    .bind(title),
                    TaskEvent::TaskCompleted => sqlx::query(AssertSqlSafe(format!(
                        "UPDATE {table} SET done = 1, version = $2 WHERE id = $1"
                    )))
                    .bind(id),
                };
            query.bind(event.version as i64).execute(tx.conn()).await?;
        }
        Ok(())
    }
}

/// A task as `GET /tasks` shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TaskRow {
    id: String,
    title: String,
    done: bool,
}

impl FromViewRow for TaskRow {
    fn from_row(row: &ViewRow<'_>) -> Result<Self, sqlx::Error> {
        Ok(TaskRow {
            id: row.get("id")?,
            title: row.get("title")?,
            done: row.get::<i64>("done")? == 1,
        })
    }
}
