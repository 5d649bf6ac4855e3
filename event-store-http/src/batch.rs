//! Concurrent appends of one [`RemoteStore`] sent together: while a
//! request is on its way, the appends that arrive meanwhile queue, and
//! the next request carries every one queued (`POST /batch`), each
//! transaction committed or refused on its own by the server. At one
//! writer a request carries one transaction; at 64 they share a few
//! requests, and the server's request path stops being what limits them.
//!
//! Requests are sent by spawned tasks, never by a caller's future: a
//! caller that gives up waiting cannot take other callers' answers with
//! it. An answer that is lost (the connection dropped once the batch was
//! sent) is lost for each of its transactions, and each caller then
//! settles its own as a lone append would ([`RemoteStore::append_batched`]).

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::client::RemoteStore;
use crate::conn::Failure;
use crate::server::BATCH_TRANSACTIONS_MAX;
use crate::wire::{self, WireBatch, WireBatchResults, WireTransaction};
use event_store::{AppendResult, Error, Result};
use hyper::StatusCode;

/// Requests in flight at once. Measured on the loopback bench (appends per
/// second at 1, 8 and 64 writers): 2 held eight writers to 60 % of what
/// sending each append alone gave, 16 lost at 64 writers what batching won;
/// 8 matched sending alone at 1 and 8 writers and gave 1.8× at 64.
const SENDERS_MAX: usize = 8;
/// Payload bytes one request carries at most (the server takes 32 MiB).
const BATCH_BYTES_MAX: usize = 8 << 20;

/// What became of one transaction sent in a batch.
pub(crate) enum Outcome {
    Answered(Result<Vec<AppendResult>>),
    /// The batch may or may not have been committed.
    Lost(String),
    /// The server has no `/batch` (an earlier release).
    Unsupported,
}

struct Pending {
    transaction: WireTransaction,
    bytes: usize,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    senders: usize,
}

/// The queue of a [`RemoteStore`] and its clones.
#[derive(Default)]
pub(crate) struct Batcher {
    queue: Mutex<Queue>,
    unsupported: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl Batcher {
    /// Whether the server was found to have no `/batch`.
    pub(crate) fn unsupported(&self) -> bool {
        self.unsupported.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Queues a transaction; returns the batch to send now if a sender
    /// slot was free (the caller then spawns its sender).
    fn enqueue(&self, pending: Pending) -> Option<Vec<Pending>> {
        let mut queue = self.queue.lock();
        queue.pending.push(pending);
        if queue.senders < SENDERS_MAX {
            queue.senders += 1;
            return Some(take_batch(&mut queue.pending));
        }
        None
    }

    /// A sender is done with its batch: the next batch it sends, or `None`
    /// when nothing is queued (its slot is then free).
    fn next(&self) -> Option<Vec<Pending>> {
        let mut queue = self.queue.lock();
        if queue.pending.is_empty() {
            queue.senders -= 1;
            return None;
        }
        Some(take_batch(&mut queue.pending))
    }
}

/// About what `transaction` takes on the wire.
fn line_bytes(transaction: &WireTransaction) -> usize {
    transaction
        .appends
        .iter()
        .flat_map(|a| &a.events)
        .map(|e| e.data.get().len() + e.metadata.as_ref().map_or(0, |m| m.get().len()) + 200)
        .sum()
}

/// The oldest queued transactions, up to a request's worth.
fn take_batch(pending: &mut Vec<Pending>) -> Vec<Pending> {
    let mut bytes = 0;
    let mut count = 0;
    for p in pending.iter() {
        if count == BATCH_TRANSACTIONS_MAX || (count > 0 && bytes + p.bytes > BATCH_BYTES_MAX) {
            break;
        }
        bytes += p.bytes;
        count += 1;
    }
    pending.drain(..count).collect()
}

/// A sender slot held by a caller sending a batch. When the caller is done
/// (or stops waiting), what was queued meanwhile goes out from a task that
/// keeps the slot; with nothing queued the slot is free again.
struct SenderSlot(RemoteStore);

impl Drop for SenderSlot {
    fn drop(&mut self) {
        if let Some(next) = self.0.batcher().next() {
            let store = self.0.clone();
            tokio::spawn(store.send_batches(next));
        }
    }
}

impl RemoteStore {
    /// Sends the transaction with whatever other appends of this client
    /// are queued, and settles it: a lost answer is asked again alone if
    /// the transaction's expected versions anchor it (so a retry finds it
    /// committed or commits it once), and is [`Error::Indeterminate`]
    /// otherwise.
    pub(crate) async fn append_batched(
        &self,
        transaction: WireTransaction,
        anchored: bool,
    ) -> Result<Vec<AppendResult>> {
        if let Some(channels) = self.channels()
            && line_bytes(&transaction) <= crate::channel::LINE_BYTES_MAX
        {
            let outcome = channels.send(&transaction.appends).await;
            return self.settle(Ok(outcome), transaction, anchored).await;
        }
        if self.batcher().unsupported() {
            return self.append_alone(&transaction, anchored, None).await;
        }
        let bytes = line_bytes(&transaction);
        let (reply, answer) = oneshot::channel();
        // Kept to ask again alone if the answer is lost.
        let kept = transaction.clone();
        let pending = Pending {
            transaction,
            bytes,
            reply,
        };
        if let Some(batch) = self.batcher().enqueue(pending) {
            // This caller sends it (no task to hand it to at one writer);
            // the slot is handed on even if the caller stops waiting.
            let _slot = SenderSlot(self.clone());
            self.send_batch(batch).await;
        }
        self.settle(answer.await, kept, anchored).await
    }

    /// What the caller of `kept` gets from its outcome (`Err` when the
    /// sender of its batch stopped waiting).
    async fn settle(
        &self,
        outcome: std::result::Result<Outcome, oneshot::error::RecvError>,
        kept: WireTransaction,
        anchored: bool,
    ) -> Result<Vec<AppendResult>> {
        match outcome {
            Ok(Outcome::Answered(result)) => result,
            Ok(Outcome::Unsupported) => self.append_alone(&kept, anchored, None).await,
            Ok(Outcome::Lost(why)) if anchored => {
                tracing::warn!(store = %self.url(), error = %why, "the answer to a batch of appends was lost; asking the store again");
                self.append_alone(&kept, anchored, Some(why)).await
            }
            Ok(Outcome::Lost(why)) => Err(Error::Indeterminate(format!(
                "the answer from {} was lost ({why}), and an append without an expected \
                 version is not sent twice",
                self.url()
            ))),
            // The caller sending the batch stopped waiting for it, or the
            // runtime is shutting down: it may have been sent.
            Err(_) if anchored => {
                let why = "the request carrying it was abandoned".to_owned();
                self.append_alone(&kept, anchored, Some(why)).await
            }
            Err(_) => Err(Error::Indeterminate(format!(
                "the request to {} was abandoned before its answer",
                self.url()
            ))),
        }
    }

    /// One transaction alone, as `/transactions` takes it; `lost` says why
    /// the answer to an earlier sending of it was lost, if it was (it may
    /// then be committed already, whatever the store answers now).
    async fn append_alone(
        &self,
        transaction: &WireTransaction,
        anchored: bool,
        lost: Option<String>,
    ) -> Result<Vec<AppendResult>> {
        let results: wire::WireResults = self
            .settle_append("/transactions", transaction, anchored, lost)
            .await?;
        Ok(results.results)
    }

    /// Sends `batch`, then every batch queued meanwhile, until none is.
    async fn send_batches(self, mut batch: Vec<Pending>) {
        loop {
            self.send_batch(batch).await;
            match self.batcher().next() {
                Some(next) => batch = next,
                None => return,
            }
        }
    }

    async fn send_batch(&self, batch: Vec<Pending>) {
        let (transactions, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.transaction, p.reply)).unzip();
        let body = WireBatch { transactions };
        let outcomes = self.post_batch(&body, replies.len()).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that went away no longer needs its answer.
            let _ = reply.send(outcome);
        }
    }

    /// The outcome of each of `count` transactions.
    async fn post_batch(&self, body: &WireBatch, count: usize) -> Vec<Outcome> {
        let all = |make: &dyn Fn() -> Outcome| (0..count).map(|_| make()).collect();
        let response = match self.post_batch_request(body).await {
            Ok(response) => response,
            // A connection never made carried nothing.
            Err(Failure::NotSent(why)) => {
                let why = format!("{}: {why}", self.url());
                return all(&|| Outcome::Answered(Err(Error::Remote(why.clone()))));
            }
            Err(Failure::Lost(why)) => return all(&|| Outcome::Lost(why.clone())),
        };
        let status = response.status;
        if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
            self.batcher()
                .unsupported
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return all(&|| Outcome::Unsupported);
        }
        if !status.is_success() {
            // Authentication, a malformed batch, a store that cannot take
            // writes.
            return all(&refused_whole(self.url(), status, &response.body));
        }
        let answer = match serde_json::from_slice::<WireBatchResults>(&response.body) {
            Ok(answer) if answer.outcomes.len() == count => answer,
            Ok(answer) => {
                let why = format!(
                    "the answer names {} outcomes for {count} transactions",
                    answer.outcomes.len()
                );
                return all(&|| Outcome::Lost(why.clone()));
            }
            Err(e) => {
                let why = format!("its answer was cut off: {e}");
                return all(&|| Outcome::Lost(why.clone()));
            }
        };
        answer
            .outcomes
            .into_iter()
            .map(|outcome| outcome_of(outcome.results, outcome.problem))
            .collect()
    }
}

/// One transaction's outcome as the store answered it (in a batch or on
/// an append channel).
pub(crate) fn outcome_of(
    results: Option<Vec<AppendResult>>,
    problem: Option<wire::Problem>,
) -> Outcome {
    match (results, problem) {
        (_, Some(problem)) => Outcome::Answered(Err(wire::error_of(problem))),
        (Some(results), None) => Outcome::Answered(Ok(results)),
        (None, None) => Outcome::Lost("an outcome with neither results nor a problem".into()),
    }
}

/// The outcome of each transaction of a request the store answered
/// `status` with `body` and refused whole (nothing of it was committed):
/// the store's problem, or the status when the body is none.
pub(crate) fn refused_whole(url: &str, status: StatusCode, body: &[u8]) -> impl Fn() -> Outcome {
    let problem = serde_json::from_slice::<wire::Problem>(body).ok();
    let why = format!("{url} answered {status}");
    move || {
        Outcome::Answered(Err(match &problem {
            Some(problem) => wire::error_of(problem.clone()),
            None => Error::Remote(why.clone()),
        }))
    }
}
