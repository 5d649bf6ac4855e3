//! `POST /appends`: an append channel, many transactions on one request.
//!
//! The request body is NDJSON, one [`WireChannelAppend`] a line, sent for
//! as long as the client likes; the answer, started at once, is NDJSON
//! too, one [`WireChannelOutcome`] a line, in the order the transactions
//! were settled (each names its id). Each transaction is committed or
//! refused on its own, as in `/batch`. Authentication, scope and the
//! request's limits apply once, to the request that opens the channel;
//! what a line costs is its parse and its append (and, for a caller with
//! a rate limit, a check of it: each line counts as a request). The lines in flight on
//! one channel are bounded ([`IN_FLIGHT_MAX`]): past it, the channel stops
//! reading until one is settled, and the client's writes wait.
//!
//! Everything runs in the connection's own task: the answer's body is the
//! stream that reads the request's lines, commits them and writes their
//! outcomes, so no line costs a task or a wake-up of its own.
//!
//! The channel ends when the client ends its body (every transaction read
//! is still settled and answered), when the body fails (it stalled past
//! the connection's idle timeout, or the client went away), or when the
//! server is stopping (it reads no further line, answers those in flight
//! and ends the answer; the client opens a channel to wherever it goes
//! next).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::stream::FuturesUnordered;
use futures_util::{Stream, StreamExt};
use hyper::body::Body as _;

use super::{ApiError, AppState, Scope, commit_one};
use crate::scope::RequestRate;
use crate::wire::{self, Problem, WireChannelAppend, WireChannelOutcome};

/// Transactions of one channel being committed at once.
pub const IN_FLIGHT_MAX: usize = super::BATCH_TRANSACTIONS_MAX;

type Settling = Pin<Box<dyn Future<Output = WireChannelOutcome> + Send>>;

/// Opens the channel: the answer's head goes out now, its lines as the
/// transactions are settled.
pub(super) fn open(
    state: AppState,
    scope: Scope,
    rate: Option<RequestRate>,
    body: Body,
) -> Response {
    let stopping: Option<Pin<Box<dyn Future<Output = ()> + Send>>> =
        state.config.stopping.clone().map(|mut stopping| {
            Box::pin(async move {
                // A dropped sender is a server that stopped as well.
                let _ = stopping.wait_for(|stop| *stop).await;
            }) as Pin<Box<dyn Future<Output = ()> + Send>>
        });
    let channel = Channel {
        line_bytes_max: state.config.body_bytes_max,
        state,
        scope,
        rate,
        body,
        buffer: BytesMut::new(),
        scanned: 0,
        lines: 0,
        reading: true,
        stopping,
        settling: FuturesUnordered::new(),
    };
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::NDJSON),
        )],
        Body::from_stream(channel),
    )
        .into_response()
}

/// The answer's body, and the reader of the request's.
struct Channel {
    state: AppState,
    scope: Scope,
    /// The caller's rate, when it is limited: each line counts.
    rate: Option<RequestRate>,
    body: Body,
    /// Bytes read and not yet taken as lines.
    buffer: BytesMut,
    /// How far `buffer` was searched for a line end.
    scanned: usize,
    /// Lines taken so far.
    lines: u64,
    line_bytes_max: usize,
    /// Whether more lines are to be read.
    reading: bool,
    stopping: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    settling: FuturesUnordered<Settling>,
}

impl Channel {
    /// Takes the lines read whole and starts their transactions, reading
    /// more of the body while it has some ready and the bound allows;
    /// the outcome of a line that cannot be taken is returned at once.
    fn read_lines(&mut self, cx: &mut Context<'_>, out: &mut Vec<u8>) {
        if self
            .stopping
            .as_mut()
            .is_some_and(|stopping| stopping.as_mut().poll(cx).is_ready())
        {
            self.reading = false;
        }
        while self.reading && self.settling.len() < IN_FLIGHT_MAX {
            if let Some(line) = self.next_line() {
                self.take(line, out);
                continue;
            }
            if self.buffer.len() > self.line_bytes_max {
                self.reading = false;
                let problem = too_long(self.line_bytes_max);
                push(out, &refusal(None, Some(self.lines + 1), problem));
                return;
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    // The client is gone or stalled: what it sent whole is
                    // settled, and nobody may be there to read the answer.
                    tracing::debug!(error = %e, "an append channel's body failed");
                    self.reading = false;
                }
                Poll::Ready(None) => {
                    self.reading = false;
                    if !self.buffer.iter().all(u8::is_ascii_whitespace) {
                        // The last line, without its line end.
                        let line = self.buffer.split().freeze();
                        self.take(line, out);
                    }
                }
            }
        }
    }

    /// The next whole line of `buffer`, without its line end.
    fn next_line(&mut self) -> Option<Bytes> {
        let Some(at) = memchr(&self.buffer[self.scanned..]) else {
            self.scanned = self.buffer.len();
            return None;
        };
        let end = self.scanned + at;
        let mut line = self.buffer.split_to(end + 1);
        line.truncate(end);
        self.scanned = 0;
        Some(line.freeze())
    }

    /// Starts the transaction of `line`; a line that does not parse is
    /// answered into `out` now, blank lines are skipped.
    fn take(&mut self, line: Bytes, out: &mut Vec<u8>) {
        self.lines += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let append: WireChannelAppend = match serde_json::from_slice(&line) {
            Ok(append) => append,
            Err(e) => {
                let id = id_of(&line);
                let line_number = id.is_none().then_some(self.lines);
                let problem = invalid(format!("line {}: {e}", self.lines));
                push(out, &refusal(id, line_number, problem));
                return;
            }
        };
        let id = append.id;
        if let Some(Err(wait)) = self.rate.as_ref().map(RequestRate::check) {
            push(out, &refusal(Some(id), None, rate_limited(wait)));
            return;
        }
        let state = self.state.clone();
        let scope = Scope(self.scope.0.clone());
        let transaction = wire::WireTransaction {
            appends: append.appends,
        };
        self.settling.push(Box::pin(async move {
            match commit_one(&state, &scope, transaction).await {
                Ok(results) => WireChannelOutcome {
                    id: Some(id),
                    line: None,
                    results: Some(results),
                    problem: None,
                },
                Err(ApiError(problem)) => refusal(Some(id), None, *problem),
            }
        }));
    }
}

impl Stream for Channel {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let mut out = Vec::new();
        loop {
            this.read_lines(cx, &mut out);
            let mut settled = false;
            while let Poll::Ready(Some(outcome)) = this.settling.poll_next_unpin(cx) {
                push(&mut out, &outcome);
                settled = true;
            }
            // A settled transaction frees a place: read on before answering,
            // so that one write carries what is ready.
            if !(settled && this.reading) {
                break;
            }
        }
        if !out.is_empty() {
            return Poll::Ready(Some(Ok(Bytes::from(out))));
        }
        if !this.reading && this.settling.is_empty() {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// Where the first line end of `bytes` is.
fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// The id of a line that did not parse whole, if its `id` did.
fn id_of(line: &[u8]) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: u64,
    }
    serde_json::from_slice::<Id>(line).ok().map(|i| i.id)
}

fn push(out: &mut Vec<u8>, outcome: &WireChannelOutcome) {
    match serde_json::to_writer(&mut *out, outcome) {
        Ok(()) => out.push(b'\n'),
        Err(e) => tracing::error!(error = %e, "an append channel's outcome did not encode"),
    }
}

fn refusal(id: Option<u64>, line: Option<u64>, problem: Problem) -> WireChannelOutcome {
    WireChannelOutcome {
        id,
        line,
        results: None,
        problem: Some(problem),
    }
}

fn invalid(detail: String) -> Problem {
    let ApiError(problem) = ApiError::bad_request(detail);
    *problem
}

fn rate_limited(wait: std::time::Duration) -> Problem {
    // Whole seconds, rounded up, as the answer to a request over its rate.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Problem {
        problem_type: wire::problem::RATE_LIMITED.into(),
        title: "Too many requests".into(),
        status: 429,
        detail: format!(
            "this caller is over its requests per second (each transaction on a channel is one); \
             nothing was done; retry in {} s",
            seconds.max(1)
        ),
        ..Problem::default()
    }
}

fn too_long(max: usize) -> Problem {
    Problem {
        problem_type: wire::problem::LIMIT_EXCEEDED.into(),
        title: "Line too long".into(),
        status: 413,
        detail: format!(
            "a line of the append channel is over {max} bytes; the channel reads no further"
        ),
        limit: Some("body_bytes_max".into()),
        max: Some(max as u64),
        ..Problem::default()
    }
}
