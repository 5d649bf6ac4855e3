//! The saga's checkpoint: an event in its own stream saying how far it got
//! and what its state was there.

use event_store::StreamId;
use serde::{Deserialize, Serialize};

/// Event type of a checkpoint; its data is [`Checkpoint`].
pub const CHECKPOINT_EVENT_TYPE: &str = "SagaCheckpoint";

/// The stream holding `saga`'s checkpoints.
pub fn checkpoint_stream(saga: &str) -> Result<StreamId, event_store::Error> {
    StreamId::new(format!("saga-{saga}-checkpoint")).map_err(Into::into)
}

/// The data of a `SagaCheckpoint` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint<S> {
    /// Every event up to this position was handled (or skipped).
    pub position: u64,
    /// The saga's state at that point (absent in checkpoints written before
    /// the saga had state: the default).
    #[serde(default)]
    pub state: S,
}
