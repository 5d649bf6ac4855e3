//! Push subscriptions over the whole log.
//!
//! A subscription is a task that reads the log from its next position and
//! hands events to a bounded channel. When it reaches the durable head it
//! waits on the head signal, which the writer updates after every fsync: the
//! store pushes, nobody polls. Because catching up and following live are the
//! same loop over positions, the switch-over can neither skip nor repeat an
//! event. A slow consumer only fills its own channel: the task then waits, the
//! writer never does, and memory stays bounded by the channel and one page.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::error::{Error, Result};
use crate::log::read;
use crate::log::shared::{HeadSignal, Inner};
use crate::subscription::Subscription;
use crate::types::{EventFilter, Position, RecordedEvent};

pub(crate) fn spawn(inner: Arc<Inner>, from: Position, filter: EventFilter) -> Subscription {
    let capacity = inner.options.subscription_buffer;
    let (tx, mut rx) = mpsc::channel(capacity);
    let head = inner.head.subscribe();
    tokio::spawn(run(inner, from, filter, tx, head));
    Subscription::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

async fn run(
    inner: Arc<Inner>,
    from: Position,
    filter: EventFilter,
    tx: mpsc::Sender<Result<RecordedEvent>>,
    mut head: watch::Receiver<HeadSignal>,
) {
    let _counted = crate::telemetry::SubscriptionGauge::open();
    let page = inner
        .options
        .subscription_buffer
        .min(inner.options.limits.read_count_max)
        .max(1);
    let mut next = from.0.max(1);
    loop {
        let signal = *head.borrow_and_update();
        if signal.closed {
            let _ = tx.send(Err(Error::Closed)).await;
            return;
        }
        while next <= signal.position {
            let reader = inner.clone();
            let events =
                tokio::task::spawn_blocking(move || read::read_all(&reader, Position(next), page))
                    .await
                    .unwrap_or_else(|e| {
                        Err(Error::Remote(format!("subscription reader failed: {e}")))
                    });
            let events = match events {
                Ok(events) if !events.is_empty() => events,
                Ok(_) => break,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            for event in events {
                next = event.position.0 + 1;
                if filter.matches(event.stream_id.as_str(), &event.event_type)
                    && tx.send(Ok(event)).await.is_err()
                {
                    return;
                }
            }
        }
        tokio::select! {
            changed = head.changed() => {
                if changed.is_err() {
                    let _ = tx.send(Err(Error::Closed)).await;
                    return;
                }
            }
            () = tx.closed() => return,
        }
    }
}
