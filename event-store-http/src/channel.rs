//! The client's append channel (`POST /appends`, see the server's
//! `channel` module): one long request whose body carries this client's
//! transactions as NDJSON lines while the answer brings their outcomes
//! back, so that an append costs a line each way instead of a request.
//!
//! One task drives the channel's connection, writes the lines callers
//! queue (what is queued together goes out in one write) and hands each
//! outcome to the caller waiting under its id. A channel unused for
//! [`IDLE_KEEP`] ends itself (well before the server's idle timeout would
//! end it), and the next append opens a new one. When a channel ends with
//! transactions unanswered, each of them is [`Outcome::Lost`] and its
//! caller settles it as a lone append would; one that could not be opened
//! sent nothing.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::batch::{Outcome, outcome_of, refused_whole};
use crate::conn::{Connections, Failure};
use crate::wire::{WireChannelOutcome, WireStreamAppend};
use event_store::Error;

/// How long a channel with nothing in flight stays open: well under the
/// server's idle timeout (a minute by default), which would otherwise end
/// it from the other side.
const IDLE_KEEP: Duration = Duration::from_secs(20);
/// A transaction whose line is over this goes out alone (`/transactions`)
/// where a refusal for its size is an answer of its own; the server takes
/// lines of up to its body limit (32 MiB by default).
pub(crate) const LINE_BYTES_MAX: usize = 8 << 20;
/// Channels open at once. The server commits a channel's lines in one
/// task, and the store commits a caller's append on the caller's thread
/// when it looks alone; concurrent writers on one channel would look
/// alone one after another, and each sync would carry one of them.
/// Spread over channels (the least busy first), they are seen together.
const CHANNELS_MAX: usize = 8;
/// The bytes of queued lines one write carries at most.
const WRITE_BYTES_MAX: usize = 1 << 20;

/// The append channel of one [`crate::RemoteStore`] and its clones.
pub(crate) struct Channels {
    connections: Connections,
    open: Mutex<Vec<Arc<Open>>>,
    unsupported: AtomicBool,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels").finish_non_exhaustive()
    }
}

/// One open channel: the lines for its body, the callers waiting.
struct Open {
    state: Mutex<Waiting>,
}

struct Waiting {
    /// `None` once the channel ended: nothing more is sent on it.
    lines: Option<mpsc::UnboundedSender<Bytes>>,
    replies: HashMap<u64, oneshot::Sender<Outcome>>,
}

/// A transaction's line, borrowing it: the caller keeps the transaction to
/// ask again alone if the answer is lost.
#[derive(serde::Serialize)]
struct Line<'a> {
    id: u64,
    appends: &'a [WireStreamAppend],
}

impl Channels {
    /// The channel to the store at `base` (`connections` reach its
    /// `/appends`).
    pub(crate) fn new(connections: Connections) -> Self {
        Self {
            connections,
            open: Mutex::new(Vec::new()),
            unsupported: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        }
    }

    /// Whether the server was found to have no `/appends`.
    pub(crate) fn unsupported(&self) -> bool {
        self.unsupported.load(Ordering::Relaxed)
    }

    /// Sends `appends` as one transaction and waits for its outcome.
    pub(crate) async fn send(self: &Arc<Self>, appends: &[WireStreamAppend]) -> Outcome {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut line = match serde_json::to_vec(&Line { id, appends }) {
            Ok(line) => line,
            Err(e) => return Outcome::Answered(Err(Error::Remote(format!("encoding: {e}")))),
        };
        line.push(b'\n');
        let line = Bytes::from(line);
        let (reply, answer) = oneshot::channel();
        let mut reply = Some(reply);
        // A channel that ended between being taken and being written to
        // took nothing: the line goes to a new one.
        for _ in 0..2 {
            let open = self.current();
            let mut waiting = open.state.lock();
            let Some(lines) = &waiting.lines else {
                drop(waiting);
                self.forget(&open);
                continue;
            };
            if lines.send(line.clone()).is_err() {
                waiting.lines = None;
                drop(waiting);
                self.forget(&open);
                continue;
            }
            if let Some(reply) = reply.take() {
                waiting.replies.insert(id, reply);
            }
            break;
        }
        if reply.is_some() {
            let why = format!("{}: no append channel could be kept open", self.url());
            return Outcome::Answered(Err(Error::Remote(why)));
        }
        let timeout = self.connections.timeout();
        match tokio::time::timeout(timeout, answer).await {
            Ok(outcome) => {
                outcome.unwrap_or_else(|_| Outcome::Lost("the append channel ended".into()))
            }
            Err(_) => {
                for open in self.open.lock().iter() {
                    open.state.lock().replies.remove(&id);
                }
                Outcome::Lost(format!("no answer within {} ms", timeout.as_millis()))
            }
        }
    }

    fn url(&self) -> &str {
        self.connections.url()
    }

    /// The open channel with the fewest transactions in flight, or a new
    /// one when each has some and there are fewer than [`CHANNELS_MAX`].
    fn current(self: &Arc<Self>) -> Arc<Open> {
        let mut open = self.open.lock();
        open.retain(|o| o.state.lock().lines.is_some());
        let least = open
            .iter()
            .map(|o| (o.state.lock().replies.len(), o))
            .min_by_key(|(in_flight, _)| *in_flight);
        match least {
            Some((0, o)) => return o.clone(),
            Some((_, o)) if open.len() >= CHANNELS_MAX => return o.clone(),
            _ => {}
        }
        let (lines, rx) = mpsc::unbounded_channel();
        let fresh = Arc::new(Open {
            state: Mutex::new(Waiting {
                lines: Some(lines),
                replies: HashMap::new(),
            }),
        });
        open.push(fresh.clone());
        tokio::spawn(drive(self.clone(), fresh.clone(), rx));
        fresh
    }

    /// Drops `ended` from the open channels.
    fn forget(&self, ended: &Arc<Open>) {
        self.open.lock().retain(|o| !Arc::ptr_eq(o, ended));
    }
}

impl Open {
    /// Ends the channel for new lines and settles every caller waiting
    /// with `outcome`.
    fn end(&self, outcome: impl Fn() -> Outcome) {
        let replies = {
            let mut waiting = self.state.lock();
            waiting.lines = None;
            std::mem::take(&mut waiting.replies)
        };
        for (_, reply) in replies {
            let _ = reply.send(outcome());
        }
    }

    /// Hands `outcome` to the caller waiting for `id`.
    fn settle(&self, id: u64, outcome: Outcome) {
        let reply = self.state.lock().replies.remove(&id);
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }

    /// Whether nothing is in flight; then the channel is ended, so that
    /// no line goes out on a channel about to close.
    fn end_if_idle(&self) -> bool {
        let mut waiting = self.state.lock();
        if !waiting.replies.is_empty() {
            return false;
        }
        waiting.lines = None;
        true
    }
}

/// Opens the channel and runs it until it ends.
async fn drive(channels: Arc<Channels>, open: Arc<Open>, rx: mpsc::UnboundedReceiver<Bytes>) {
    let outcome = run(&channels, &open, rx).await;
    channels.forget(&open);
    match outcome {
        Ok(()) => open.end(|| Outcome::Lost("the append channel ended".into())),
        Err(Failure::NotSent(why)) => {
            let why = format!("{}: {why}", channels.url());
            open.end(|| Outcome::Answered(Err(Error::Remote(why.clone()))));
        }
        Err(Failure::Lost(why)) => open.end(|| Outcome::Lost(why.clone())),
    }
}

/// The channel's life: connect, send the request with the lines as its
/// body, read outcomes until the answer ends.
async fn run(
    channels: &Channels,
    open: &Arc<Open>,
    rx: mpsc::UnboundedReceiver<Bytes>,
) -> std::result::Result<(), Failure> {
    let stream = channels.connections.open_stream().await?;
    let (mut sender, driver) = hyper::client::conn::http1::handshake(stream)
        .await
        .map_err(|e| Failure::NotSent(e.to_string()))?;
    let body = Lines {
        rx,
        open: open.clone(),
        idle: Box::pin(tokio::time::sleep(IDLE_KEEP)),
    };
    let request = channels.connections.post(crate::NDJSON, body)?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::Lost(e.to_string()))?;
        read_outcomes(channels, open, response).await
    };
    let mut exchange = std::pin::pin!(exchange);
    let mut driver = std::pin::pin!(driver);
    let waking = http_edge::waking::Waking::default();
    // The connection and the exchange on it wake each other at every
    // message; see `http_edge::waking`.
    std::future::poll_fn(|cx| {
        waking.poll(cx, |cx| {
            if let Poll::Ready(done) = exchange.as_mut().poll(cx) {
                return Poll::Ready(done);
            }
            match driver.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                // The answer may still be in its channel.
                Poll::Ready(ended) => Poll::Ready(match exchange.as_mut().poll(cx) {
                    Poll::Ready(done) => done,
                    Poll::Pending => Err(Failure::Lost(match ended {
                        Ok(()) => "the connection closed".to_owned(),
                        Err(e) => e.to_string(),
                    })),
                }),
            }
        })
    })
    .await
}

/// Reads the answer's lines and settles their callers.
async fn read_outcomes(
    channels: &Channels,
    open: &Open,
    response: hyper::Response<hyper::body::Incoming>,
) -> std::result::Result<(), Failure> {
    let status = response.status();
    if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
        channels.unsupported.store(true, Ordering::Relaxed);
        open.end(|| Outcome::Unsupported);
        return Ok(());
    }
    let mut body = response.into_body();
    if !status.is_success() {
        // Authentication, a store that cannot take writes.
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        open.end(refused_whole(channels.url(), status, &bytes));
        return Ok(());
    }
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Failure::Lost(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        while let Some(at) = buffer.iter().position(|&b| b == b'\n') {
            let line = buffer.split_to(at + 1);
            settle_line(open, &line[..at]);
        }
    }
    Ok(())
}

/// Settles the caller of one outcome line.
fn settle_line(open: &Open, line: &[u8]) {
    let outcome: WireChannelOutcome = match serde_json::from_slice(line) {
        Ok(outcome) => outcome,
        Err(e) => return tracing::warn!(error = %e, "an append channel's answer did not parse"),
    };
    let Some(id) = outcome.id else {
        return tracing::warn!(problem = ?outcome.problem, "an append channel refused a line");
    };
    open.settle(id, outcome_of(outcome.results, outcome.problem));
}

/// The request's body: the lines callers queue, what is queued together in
/// one frame; it ends when the channel is idle for [`IDLE_KEEP`] or ended.
struct Lines {
    rx: mpsc::UnboundedReceiver<Bytes>,
    open: Arc<Open>,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Lines {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        let first = match self.rx.poll_recv(cx) {
            Poll::Ready(Some(first)) => first,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {
                if self.idle.as_mut().poll(cx).is_ready() {
                    if self.open.end_if_idle() {
                        // Every line sent has its caller waiting, so
                        // nothing is queued: the body ends here.
                        self.rx.close();
                        return Poll::Ready(None);
                    }
                    let next = tokio::time::Instant::now() + IDLE_KEEP;
                    self.idle.as_mut().reset(next);
                }
                return Poll::Pending;
            }
        };
        let next = tokio::time::Instant::now() + IDLE_KEEP;
        self.idle.as_mut().reset(next);
        let Ok(second) = self.rx.try_recv() else {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        };
        let mut frame = BytesMut::with_capacity(first.len() + second.len());
        frame.extend_from_slice(&first);
        frame.extend_from_slice(&second);
        while frame.len() < WRITE_BYTES_MAX {
            let Ok(more) = self.rx.try_recv() else { break };
            frame.extend_from_slice(&more);
        }
        Poll::Ready(Some(Ok(Frame::data(frame.freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
