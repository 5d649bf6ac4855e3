//! The task aggregate: added once, completed once.

use command_api::{Aggregate, AggregateCommand, DomainError, JsonEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug)]
pub enum TaskCommand {
    Add { id: Uuid, title: String },
    Complete { id: Uuid },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum TaskEvent {
    TaskAdded { title: String },
    TaskCompleted,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("the task exists already")]
    Exists,
    #[error("the task is done")]
    Done,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Task {
    added: bool,
    done: bool,
}

impl Aggregate for Task {
    const TYPE: &'static str = "task";
    const SNAPSHOT_SCHEMA: u32 = 1;
    type Command = TaskCommand;
    type Event = TaskEvent;
    type Error = TaskError;
    fn handle(&self, command: &TaskCommand) -> Result<Vec<TaskEvent>, TaskError> {
        match command {
            TaskCommand::Add { .. } if self.added => Err(TaskError::Exists),
            TaskCommand::Add { title, .. } => {
                Ok(vec![TaskEvent::TaskAdded { title: title.clone() }])
            }
            TaskCommand::Complete { .. } if self.done => Err(TaskError::Done),
            TaskCommand::Complete { .. } => Ok(vec![TaskEvent::TaskCompleted]),
        }
    }
    fn apply(&mut self, event: &TaskEvent) {
        match event {
            TaskEvent::TaskAdded { .. } => self.added = true,
            TaskEvent::TaskCompleted => self.done = true,
        }
    }
}

impl AggregateCommand for TaskCommand {
    fn aggregate_id(&self) -> Uuid {
        match self {
            Self::Add { id, .. } | Self::Complete { id } => *id,
        }
    }
    fn creates_aggregate(&self) -> bool {
        matches!(self, Self::Add { .. })
    }
    fn name(&self) -> &'static str {
        match self {
            Self::Add { .. } => "add",
            Self::Complete { .. } => "complete",
        }
    }
}

impl JsonEvent for TaskEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::TaskAdded { .. } => "TaskAdded",
            Self::TaskCompleted => "TaskCompleted",
        }
    }
}

impl DomainError for TaskError {
    fn rule(&self) -> &'static str {
        match self {
            Self::Exists => "task-exists",
            Self::Done => "task-done",
        }
    }
}
