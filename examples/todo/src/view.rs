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

/// The view from the events alone: the real store and projector, a real
/// SQLite file or PostgreSQL database, read as rows and through
/// `GET /tasks`.
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use annals::testkit::ProjectionTest;
    use serde_json::json;
    use uuid::Uuid;

    use super::Tasks;
    use crate::task::{Task, TaskEvent};

    fn added(title: &str) -> TaskEvent {
        TaskEvent::TaskAdded { title: title.into() }
    }

    async fn tasks_are_listed_open_and_done(view: ProjectionTest) {
        // Time-ordered ids: the list's order.
        let (milk, bread) = (Uuid::now_v7(), Uuid::now_v7());
        view.given::<Task>(milk, [added("milk")]).await;
        view.given::<Task>(bread, [added("bread"), TaskEvent::TaskCompleted]).await;

        assert_eq!(
            view.rows("SELECT id, title, done, version FROM tasks ORDER BY id").await,
            [
                json!({"id": milk.to_string(), "title": "milk", "done": 0, "version": 1}),
                json!({"id": bread.to_string(), "title": "bread", "done": 1, "version": 2}),
            ]
        );
        let routes = crate::queries();
        let done = view.get(&routes, "/tasks?done=1").await;
        assert_eq!(done.status, 200, "{}", done.body);
        assert_eq!(
            done.body["items"],
            json!([{"id": bread.to_string(), "title": "bread", "done": true}])
        );
        let all = view.get(&routes, "/tasks").await;
        let titles: Vec<&str> = all.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, ["milk", "bread"]);
        assert_eq!(all.position(), Some(3));
    }

    #[tokio::test]
    async fn tasks_are_listed_open_and_done_from_sqlite() {
        tasks_are_listed_open_and_done(ProjectionTest::sqlite(Tasks).await).await;
    }

    #[tokio::test]
    async fn tasks_are_listed_open_and_done_from_postgres() {
        let Some(view) = ProjectionTest::postgres(Tasks).await else { return };
        tasks_are_listed_open_and_done(view).await;
    }
}
