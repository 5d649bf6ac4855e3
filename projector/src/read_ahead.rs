//! A subscription read ahead of the projection: a task of its own pulls
//! events from the store's subscription (reading the log, decrypting
//! personal data, upcasting: whatever the store's layers do on the way)
//! into a bounded buffer, while the projection's transaction of the
//! previous batch runs. Without it, a rebuild or a catch-up takes turns:
//! it decrypts a batch, then waits for the database, then decrypts the
//! next, and keeps one core busy out of two.

use event_store::{RecordedEvent, Result, Subscription};
use tokio::sync::mpsc;

/// `subscription`, read up to `events_max` events ahead by a task that
/// ends when the returned subscription is dropped (even while the log is
/// quiet) or the inner one ends.
pub(crate) fn read_ahead(mut subscription: Subscription, events_max: usize) -> Subscription {
    let (sender, receiver) = mpsc::channel::<Result<RecordedEvent>>(events_max.max(1));
    tokio::spawn(async move {
        loop {
            let item = tokio::select! {
                () = sender.closed() => return,
                item = subscription.next() => item,
            };
            let Some(item) = item else { return };
            if sender.send(item).await.is_err() {
                return;
            }
        }
    });
    Subscription::from_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use event_store::{Position, StreamId, Timestamp};
    use futures_util::StreamExt;

    use super::*;

    /// Sets its flag when dropped.
    struct Dropped(Arc<AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    fn event(position: u64) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::nil(),
            stream_id: StreamId::new("s-1").unwrap(),
            version: position,
            position: Position(position),
            event_type: "E".into(),
            schema_version: 1,
            timestamp: Timestamp(0),
            data: Bytes::from_static(b"{}"),
            metadata: Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test]
    async fn events_arrive_in_order_and_dropping_it_ends_the_reader_at_a_quiet_head() {
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = Dropped(dropped.clone());
        // Ten events, then a log that stays quiet.
        let inner = futures_util::stream::iter((1..=10).map(|p| Ok(event(p))))
            .chain(futures_util::stream::pending())
            .map(move |item| {
                let _ = &guard;
                item
            });
        let mut ahead = read_ahead(Subscription::from_stream(inner), 3);
        for expected in 1..=10 {
            let event = ahead.next().await.unwrap().unwrap();
            assert_eq!(event.position, Position(expected));
        }
        assert!(!dropped.load(Ordering::Acquire));
        drop(ahead);
        for _ in 0..200 {
            if dropped.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the reader still holds the store's subscription");
    }
}
