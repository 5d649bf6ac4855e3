//! Push subscriptions: one loop over positions that pages through the log
//! and, at the head, waits for the next commit of any process (woken by
//! `LISTEN`/`NOTIFY` on the store's channel, or by this process's own
//! commits; a poll catches a lost notification). Positions are gap-free
//! and become visible in order, so delivering by position has no gap and
//! no duplicate; a gap would be a broken invariant and ends the
//! subscription with an error rather than skip.

use std::sync::{Arc, Weak};
use std::time::Duration;

use event_store::{Error, EventFilter, Position, Subscription};
use tokio::sync::mpsc;

use crate::shared::Inner;

/// Events read per page while catching up.
const PAGE: usize = 1000;
/// How long a subscriber at the head waits before it looks again without
/// a wake-up.
const POLL: Duration = Duration::from_millis(500);
/// How long the notification listener waits before reconnecting.
const RECONNECT: Duration = Duration::from_secs(1);

pub(crate) fn spawn(inner: Arc<Inner>, from: Position, filter: EventFilter) -> Subscription {
    let (tx, rx) = mpsc::channel(PAGE);
    tokio::spawn(async move {
        let mut head = inner.head.subscribe();
        let mut next = from.0.max(1);
        loop {
            let page = match inner.read_all(Position(next), PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if page.is_empty() {
                tokio::select! {
                    _ = head.changed() => {}
                    () = tokio::time::sleep(POLL) => {}
                    () = tx.closed() => return,
                }
                continue;
            }
            for event in page {
                if event.position.0 != next {
                    let gap = Error::Diverged(format!(
                        "position {next} was expected and position {} came: the log has a gap",
                        event.position
                    ));
                    let _ = tx.send(Err(gap)).await;
                    return;
                }
                next += 1;
                if filter.matches(event.stream_id.as_str(), &event.event_type)
                    && tx.send(Ok(event)).await.is_err()
                {
                    return;
                }
            }
        }
    });
    Subscription::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Follows the store's notification channel for as long as the store
/// lives, moving the known head forward as other processes commit.
pub(crate) fn follow_notifications(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let listener = sqlx::postgres::PgListener::connect_with(&inner.pool).await;
            let channels = [inner.channel.clone(), inner.keys_channel.clone()];
            drop(inner);
            match listener {
                Ok(mut listener) => {
                    if listener
                        .listen_all(channels.iter().map(String::as_str))
                        .await
                        .is_ok()
                    {
                        // Erasures announced while nobody listened were
                        // missed: the keys are read again.
                        if let Some(inner) = weak.upgrade() {
                            inner.keys.clear();
                        }
                        listen(&weak, &mut listener).await;
                    }
                    if let Some(inner) = weak.upgrade() {
                        inner.keys.clear();
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot listen for commits; retrying"),
            }
            if weak.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(RECONNECT).await;
        }
    });
}

async fn listen(weak: &Weak<Inner>, listener: &mut sqlx::postgres::PgListener) {
    loop {
        let notification = tokio::time::timeout(POLL, listener.recv()).await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        match notification {
            // Quiet: check the store is still there and wait again.
            Err(_) => continue,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "lost the commit notifications; reconnecting");
                return;
            }
            Ok(Ok(n)) if n.channel() == inner.keys_channel => inner.keys.erased(n.payload()),
            Ok(Ok(n)) => {
                if let Ok(position) = n.payload().parse::<u64>() {
                    inner.head.send_if_modified(|head| {
                        let newer = position > *head;
                        if newer {
                            *head = position;
                        }
                        newer
                    });
                }
            }
        }
    }
}
