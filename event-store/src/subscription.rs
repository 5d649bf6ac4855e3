//! What a subscription hands its consumer, whichever store feeds it.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};

use crate::error::Result;
use crate::types::RecordedEvent;

/// A stream of events in position order, as `Result`s: an error ends it.
pub struct Subscription {
    events: Pin<Box<dyn Stream<Item = Result<RecordedEvent>> + Send>>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Subscription {
    /// Wraps any stream of events (used by the remote client).
    pub fn from_stream(events: impl Stream<Item = Result<RecordedEvent>> + Send + 'static) -> Self {
        Self {
            events: Box::pin(events),
        }
    }

    /// The next event; `None` once the subscription has ended.
    pub async fn next(&mut self) -> Option<Result<RecordedEvent>> {
        self.events.next().await
    }
}

impl Stream for Subscription {
    type Item = Result<RecordedEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.as_mut().poll_next(cx)
    }
}
