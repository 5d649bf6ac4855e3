//! The connections appends go out on: HTTP/1.1 (over TLS for an
//! `https://` store), each driven by the task that sends a request on it
//! rather than by a task of its own.
//!
//! Why not the general client: with it, every request is handed to the
//! connection's task and its answer handed back, two task wake-ups on top
//! of the socket's, plus URL parsing and pool bookkeeping per request. At
//! one writer an append's round trip is a sync and little else, and on the
//! network bench (`bench-peers/network`) this took annals from 0.71× of
//! tephra-server's appends per second to 0.90–0.92× (8 writers: 0.91× to
//! 1.02×). Reads, subscriptions and everything rare keep the general
//! client, and so do appends when the environment names a proxy for the
//! store, which reqwest knows how to use ([`proxied`]).
//!
//! A connection is taken from the idle list (or opened), used by one
//! request at a time, and put back once its answer has been read whole.
//! One that the server closed while idle is found closed before anything
//! is written on it, and dropped; an error after the request was written
//! is [`Failure::Lost`], since the request may have been acted on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use event_store::{Error, Result};

/// Idle connections kept at most; more than the requests a client sends
/// at once (see `batch`) is never needed.
const IDLE_MAX: usize = 16;
/// How long an idle connection is kept: well under the server's idle
/// timeout (a minute by default), so that a request rarely races the
/// server closing the connection it goes out on.
const IDLE_KEEP: Duration = Duration::from_secs(20);

pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

pub(crate) type Stream = TokioIo<Box<dyn Io>>;

struct Conn {
    sender: SendRequest<Full<Bytes>>,
    /// Reads and writes the socket; polled while a request is on it.
    driver: Pin<Box<Connection<Stream, Full<Bytes>>>>,
    /// When its last answer was read.
    idle_since: Instant,
    waking: http_edge::waking::Waking,
}

/// Where requests go and what each carries.
struct Target {
    /// `host:port` to connect to.
    addr: String,
    /// What every request asks for: the path given, under the base URL's.
    uri: hyper::Uri,
    host_header: HeaderValue,
    authorization: Option<HeaderValue>,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
}

/// Whether the environment (read through `var`) names a proxy that
/// requests to `base` go through. The decision is the one reqwest makes:
/// hyper-util's matcher, from the variables curl reads (`ALL_PROXY`,
/// `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY`, each also in lower case).
pub(crate) fn proxied(base: &str, var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    let first = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|name| var(name).and_then(|v| v.into_string().ok()))
            .unwrap_or_default()
    };
    let matcher = Matcher::builder()
        .all(first(["ALL_PROXY", "all_proxy"]))
        .http(first(["HTTP_PROXY", "http_proxy"]))
        .https(first(["HTTPS_PROXY", "https_proxy"]))
        .no(first(["NO_PROXY", "no_proxy"]))
        .build();
    base.parse::<hyper::Uri>()
        .is_ok_and(|uri| matcher.intercept(&uri).is_some())
}

/// An answer read whole.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Why a request got no answer.
pub(crate) enum Failure {
    /// Nothing was sent: no connection could be made.
    NotSent(String),
    /// The request may have reached the store.
    Lost(String),
}

/// The connections of one [`crate::RemoteStore`] and its clones.
pub(crate) struct Connections {
    base: String,
    target: Target,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("addr", &self.target.addr)
            .finish_non_exhaustive()
    }
}

impl Connections {
    /// For requests to `path` of the store at `base` (`http://` or
    /// `https://`, maybe with a path), sending `token` as a bearer token if
    /// set.
    pub(crate) fn new(
        base: &str,
        path: &str,
        tls: rustls::ClientConfig,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Self> {
        let invalid = |why: String| Error::InvalidOptions(format!("store URL {base:?}: {why}"));
        let url = reqwest::Url::parse(base).map_err(|e| invalid(e.to_string()))?;
        let host = url
            .host_str()
            .ok_or_else(|| invalid("it names no host".into()))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| invalid("it names no port".into()))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let host_header = HeaderValue::from_str(&authority).map_err(|e| invalid(e.to_string()))?;
        let tls = match url.scheme() {
            "https" => {
                // An IPv6 literal comes bracketed in a URL, not in a name.
                let name = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls_pki_types::ServerName::try_from(name.to_owned())
                    .map_err(|e| invalid(e.to_string()))?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(tls)), name))
            }
            _ => None,
        };
        let authorization = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .map_err(|_| Error::InvalidOptions("the token is not a valid header value".into()))?;
        let uri = format!("{}{path}", url.path().trim_end_matches('/'))
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| invalid(e.to_string()))?;
        Ok(Self {
            base: base.to_owned(),
            target: Target {
                addr: format!("{host}:{port}"),
                uri,
                host_header,
                authorization,
                tls,
            },
            timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// How long a request may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The store's base URL, for messages.
    pub(crate) fn url(&self) -> &str {
        &self.base
    }

    /// POSTs `body` (JSON) and reads the answer whole, within the request
    /// timeout: run out before a connection is ready, nothing was sent;
    /// after, the request may have been.
    pub(crate) async fn post_json(&self, body: Bytes) -> std::result::Result<Answer, Failure> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timed_out = || format!("no answer within {} ms", self.timeout.as_millis());
        let conn = tokio::time::timeout_at(deadline, self.ready_connection())
            .await
            .map_err(|_| Failure::NotSent(timed_out()))??;
        tokio::time::timeout_at(deadline, self.exchange(conn, body))
            .await
            .map_err(|_| Failure::Lost(timed_out()))?
    }

    async fn exchange(&self, mut conn: Conn, body: Bytes) -> std::result::Result<Answer, Failure> {
        let request = self.request(body)?;
        let answer = {
            let Conn {
                sender,
                driver,
                waking,
                ..
            } = &mut conn;
            let exchange = async {
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>(Answer { status, body })
            };
            let mut exchange = std::pin::pin!(exchange);
            let lost = |e: hyper::Error| Failure::Lost(e.to_string());
            // The request and the driver wake each other at every message;
            // see `http_edge::waking`.
            std::future::poll_fn(|cx| {
                waking.poll(cx, |cx| {
                    if let Poll::Ready(answer) = exchange.as_mut().poll(cx) {
                        return Poll::Ready(answer.map_err(lost));
                    }
                    let Poll::Ready(ended) = driver.as_mut().poll(cx) else {
                        return Poll::Pending;
                    };
                    // The connection ended: an answer it carried whole is
                    // in the body's channel; anything else never comes (a
                    // request it did not take would wait in its channel
                    // for good).
                    Poll::Ready(match exchange.as_mut().now_or_never() {
                        Some(answer) => answer.map_err(lost),
                        None => Err(Failure::Lost(match ended {
                            Ok(()) => "the connection closed before the answer".to_owned(),
                            Err(e) => e.to_string(),
                        })),
                    })
                })
            })
            .await
        }?;
        if !conn.sender.is_closed() {
            conn.idle_since = Instant::now();
            let mut idle = self.idle.lock();
            if idle.len() < IDLE_MAX {
                idle.push(conn);
            }
        }
        Ok(answer)
    }

    fn request(&self, body: Bytes) -> std::result::Result<Request<Full<Bytes>>, Failure> {
        self.post("application/json", Full::new(body))
    }

    /// A `POST` of `body` (of `content_type`) to the target's path, with
    /// its host and credentials.
    pub(crate) fn post<B>(
        &self,
        content_type: &'static str,
        body: B,
    ) -> std::result::Result<Request<B>, Failure> {
        let target = &self.target;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(target.uri.clone())
            .header(header::HOST, target.host_header.clone())
            .header(header::CONTENT_TYPE, content_type)
            .header("x-requested-with", "annals");
        if let Some(authorization) = &target.authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        request
            .body(body)
            .map_err(|e| Failure::NotSent(format!("building the request: {e}")))
    }

    /// An idle connection that is still open and ready, or a new one.
    async fn ready_connection(&self) -> std::result::Result<Conn, Failure> {
        loop {
            let Some(mut conn) = self.idle.lock().pop() else {
                break;
            };
            if conn.idle_since.elapsed() > IDLE_KEEP {
                continue;
            }
            let Conn {
                sender,
                driver,
                waking,
                ..
            } = &mut conn;
            // The driver notices a close by the server (or an answer it
            // did not ask for) as soon as it is polled. Through `waking`,
            // as in `exchange`: the driver keeps the waker it is polled
            // with, and the request sent next wakes it.
            let ready = std::future::poll_fn(|cx| {
                waking.poll(cx, |cx| {
                    if driver.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(false);
                    }
                    sender.poll_ready(cx).map(|ready| ready.is_ok())
                })
            })
            .await;
            if ready {
                return Ok(conn);
            }
        }
        self.connect().await
    }

    async fn connect(&self) -> std::result::Result<Conn, Failure> {
        let (sender, driver) = http1::handshake(self.open_stream().await?)
            .await
            .map_err(|e| Failure::NotSent(e.to_string()))?;
        Ok(Conn {
            sender,
            driver: Box::pin(driver),
            idle_since: Instant::now(),
            waking: http_edge::waking::Waking::default(),
        })
    }

    /// A new connection to the target (its TLS handshake done, if any),
    /// for HTTP/1.1 of the caller's.
    pub(crate) async fn open_stream(&self) -> std::result::Result<Stream, Failure> {
        let target = &self.target;
        let tcp = TcpStream::connect(&target.addr)
            .await
            .map_err(|e| Failure::NotSent(e.to_string()))?;
        // Requests and answers are small and latency-bound.
        tcp.set_nodelay(true)
            .map_err(|e| Failure::NotSent(e.to_string()))?;
        let io: Box<dyn Io> = match &target.tls {
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| Failure::NotSent(format!("TLS handshake: {e}")))?,
            ),
            None => Box::new(tcp),
        };
        Ok(TokioIo::new(io))
    }
}

#[cfg(test)]
mod tests {
    use super::proxied;
    use std::ffi::OsString;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn a_proxy_for_the_scheme_or_all_sends_appends_through_reqwest() {
        let http = "http://store:2113";
        let https = "https://store:2113";
        assert!(!proxied(http, env(&[])));
        assert!(proxied(http, env(&[("HTTP_PROXY", "http://proxy:3128")])));
        assert!(proxied(http, env(&[("http_proxy", "http://proxy:3128")])));
        assert!(proxied(https, env(&[("https_proxy", "http://proxy:3128")])));
        assert!(proxied(https, env(&[("ALL_PROXY", "socks5://proxy:1080")])));
        assert!(proxied(http, env(&[("all_proxy", "socks5://proxy:1080")])));
        // The other scheme's proxy, or an empty variable, is no proxy.
        assert!(!proxied(https, env(&[("HTTP_PROXY", "http://proxy:3128")])));
        assert!(!proxied(http, env(&[("HTTPS_PROXY", "http://proxy:3128")])));
        assert!(!proxied(http, env(&[("HTTP_PROXY", "")])));
        // NO_PROXY names hosts reached directly, as reqwest reads it.
        let direct = env(&[("HTTP_PROXY", "http://proxy:3128"), ("NO_PROXY", "store")]);
        assert!(!proxied(http, direct));
        let elsewhere = env(&[("HTTP_PROXY", "http://proxy:3128"), ("no_proxy", "other")]);
        assert!(proxied(http, elsewhere));
    }
}
