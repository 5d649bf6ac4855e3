//! Serving an application on a listener, the same way in every process.
//!
//! Each connection is HTTP/1.1 through hyper, behind a guard that
//! checks request heads before hyper reads them and keeps the
//! connection's clocks. Every answer with a status of 400 or more is a
//! problem document: the guard writes its own refusals (a head that does
//! not parse `400`, a target too long `414`, header fields too many or too
//! large `431`, a head that stalls `408`), and the answers of the
//! application pass through a last resort on their way out,
//! which turns any error answer that is not a problem document into one
//! (and a request whose body stalled into `408`).
//!
//! With TLS ([`ServeConfig::tls`]), the handshake comes first and must
//! finish within the header-read timeout (a client that stalls in it is
//! cut off); the guard then sits on the decrypted stream, so every check
//! and clock applies inside TLS as it does without.
//!
//! Shutdown: once `shutdown` resolves, the listener is closed, every
//! connection finishes the request it is on and closes, and [`serve`]
//! returns when the last one has.

mod config;
mod guard;
mod refusal;

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

pub use config::ServeConfig;
pub use refusal::PROBLEM_CONTENT_TYPE;

use guard::Guarded;

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting connections, lets the requests in flight finish and returns.
/// Nagle's algorithm is off on every connection: requests and answers are
/// small and latency-bound, and a delayed ACK meeting Nagle's wait costs
/// tens of milliseconds.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(config.connections_max.max(1)));
    loop {
        // A slot first: at the limit, new connections wait in the backlog.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        // Reap the connections that ended, so the set stays small.
        while connections.try_join_next().is_some() {}
        match accepted {
            Ok((tcp, _)) => {
                let served = connection(tcp, app.clone(), config.clone(), stopped.clone());
                connections.spawn(async move {
                    served.await;
                    drop(slot);
                });
            }
            Err(e) => accept_failed(e).await,
        }
    }
    drop(listener);
    stop.send_replace(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// An error from `accept`: one about the connection itself is that
/// connection's loss; any other (out of file descriptors, say) is waited
/// out for a second rather than spun on.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Serves one connection until it ends, or until `stopped` (then the
/// request in flight finishes first); with TLS, after its handshake.
async fn connection(
    mut tcp: TcpStream,
    app: Router,
    config: Arc<ServeConfig>,
    mut stopped: watch::Receiver<bool>,
) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let Some(tls) = config.tls.clone() else {
        return http(tcp, app, config, stopped).await;
    };
    if speaks_plain_http(&tcp, config.header_read_timeout).await {
        let answer = refusal::Refusal::plain_http_on_tls().to_bytes();
        return guard::close_with(&mut tcp, Some(&answer)).await;
    }
    let handshake = tokio_rustls::TlsAcceptor::from(tls).accept(tcp);
    let stream = tokio::select! {
        outcome = tokio::time::timeout(config.header_read_timeout, handshake) => match outcome {
            Ok(Ok(stream)) => stream,
            // Not TLS (plain HTTP, say), or a certificate the client
            // refused: there is no channel to answer on.
            Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!("TLS handshake timed out"),
        },
        // A handshake is not a request in flight: stopping ends it.
        _ = stopped.wait_for(|stop| *stop) => return,
    };
    http(stream, app, config, stopped).await;
}

/// Whether the client on `tcp` started with what a plain HTTP request
/// starts with (a method's first letter) rather than a TLS handshake
/// record (`0x16`): it then gets a plain answer telling it to use HTTPS,
/// where a TLS alert would tell it nothing. The byte is peeked, not read,
/// so the handshake sees it.
async fn speaks_plain_http(tcp: &TcpStream, wait: Duration) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, tcp.peek(&mut first)).await,
        Ok(Ok(1)) if first[0].is_ascii_uppercase()
    )
}

/// HTTP/1.1 on `io` behind the guard, until the connection ends or
/// `stopped`.
async fn http<IO>(io: IO, app: Router, config: Arc<ServeConfig>, mut stopped: watch::Receiver<bool>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let guarded = Guarded::new(io, &config);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        // The guard ends the input after a refused head; hyper must still
        // finish the requests before it.
        .half_close(true)
        // The guard keeps the clocks.
        .header_read_timeout(None)
        // The guard refuses what is over the limits before hyper sees it;
        // hyper's own limits only need to take what the guard lets by.
        .max_headers(config.header_fields_max.max(1))
        .max_buf_size((config.request_head_bytes_max + (64 << 10)).max(HYPER_BUF_BYTES_DEFAULT));
    let edge = Edge {
        app,
        idle_timeout: config.idle_timeout,
    };
    let mut conn = builder.serve_connection(TokioIo::new(guarded), edge);
    let mut stopping = *stopped.borrow();
    if stopping {
        Pin::new(&mut conn).graceful_shutdown();
    }
    // The connection and the handler of its request wake each other at
    // every message; see `crate::waking`.
    let waking = crate::waking::Waking::default();
    let outcome = loop {
        tokio::select! {
            outcome = poll_fn(|cx| waking.poll(cx, |cx| conn.poll_without_shutdown(cx))) => break outcome,
            _ = stopped.changed(), if !stopping => {
                stopping = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    match outcome {
        Ok(()) => conn.into_parts().io.into_inner().finish().await,
        // The client went away or broke the protocol mid-request: there is
        // nobody to answer.
        Err(e) => tracing::debug!(error = %e, "connection ended"),
    }
}

/// hyper's own default for the read buffer, in bytes.
const HYPER_BUF_BYTES_DEFAULT: usize = 8192 + 4096 * 100;

/// The application as hyper calls it: the request body watched for the
/// idle timeout, the answer checked by `refusal::ensure_problem`.
#[derive(Clone)]
struct Edge {
    app: Router,
    idle_timeout: Duration,
}

impl hyper::service::Service<Request<Incoming>> for Edge {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let app = self.app.clone();
        let idle_timeout = self.idle_timeout;
        let timed_out = Arc::new(AtomicBool::new(false));
        let request = request.map(|body| {
            Body::new(Watched {
                inner: body,
                timed_out: timed_out.clone(),
            })
        });
        Box::pin(async move {
            let Ok(response) = app.oneshot(request).await;
            let stalled = timed_out.load(Ordering::Acquire).then_some(idle_timeout);
            Ok(refusal::ensure_problem(response, stalled).await)
        })
    }
}

/// A request body that notes whether it failed on a timeout.
struct Watched {
    inner: Incoming,
    timed_out: Arc<AtomicBool>,
}

impl hyper::body::Body for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &polled
            && crate::timed_out(e)
        {
            self.timed_out.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
