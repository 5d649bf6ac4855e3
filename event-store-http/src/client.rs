//! [`RemoteStore`]: the [`EventStore`] trait over HTTP, talking to a store
//! served by `annals store`. The command API and the projector run on it
//! unchanged.
//!
//! A subscription follows the server's Server-Sent Events stream; when the
//! connection drops it reconnects with `Last-Event-ID` set to the last
//! position it delivered, so the consumer sees no gap and no duplicate.

use std::time::Duration;

use async_trait::async_trait;
use backon::BackoffBuilder;
use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use reqwest::{Method, RequestBuilder, StatusCode};
use tokio::sync::mpsc;

use crate::wire::{self, Problem, ServerInfo, WireEvents, WireHead, WireLoaded, WireSlice};
use event_store::Subscription;
use event_store::{
    AppendResult, CategoryPage, Direction, EventFilter, Position, ReadFrom, RecordedEvent,
    Snapshot, Stats, StreamAppend, StreamId, StreamListing, StreamPage, StreamSlice,
};
use event_store::{Error, Result};
use event_store::{EventStore, LoadedStream};

/// How the client talks to the server.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
    /// A PEM file of CA certificates to trust for an `https://` store,
    /// besides the Mozilla roots (a private CA's). The server's
    /// certificate is always verified.
    pub ca_file: Option<std::path::PathBuf>,
    /// Limit on each request (not on subscriptions, which stay open).
    pub request_timeout: Duration,
    /// How long a dropped subscription keeps trying to reconnect before it
    /// ends with an error.
    pub reconnect_for: Duration,
    /// A subscription with no bytes (not even a keep-alive) for this long is
    /// taken for dead and reconnected.
    pub idle_timeout: Duration,
    /// Events buffered per subscription.
    pub subscription_buffer: usize,
    /// How long an append whose answer was lost (the connection dropped
    /// once the request was sent) keeps asking the store again, with the
    /// same event ids, to learn whether it was committed. Past it the
    /// append fails with [`Error::Indeterminate`].
    pub outcome_wait: Duration,
    /// Whether appends go out on an append channel (`POST /appends`: one
    /// long request per connection, a line per transaction each way)
    /// rather than as requests of their own (`POST /batch`). On by
    /// default; off for a store behind something that cannot stream a
    /// request and its answer at once. A server without the channel is
    /// found out at the first append either way.
    pub append_channel: bool,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            token: None,
            ca_file: None,
            request_timeout: Duration::from_secs(30),
            reconnect_for: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(45),
            subscription_buffer: 1024,
            outcome_wait: Duration::from_secs(10),
            append_channel: true,
        }
    }
}

/// A store reached over HTTP.
#[derive(Debug, Clone)]
pub struct RemoteStore {
    base: String,
    http: reqwest::Client,
    options: RemoteOptions,
    info: ServerInfo,
    /// Concurrent appends of this client and its clones, sent together.
    batcher: std::sync::Arc<crate::batch::Batcher>,
    /// The connections batches of appends go out on; `None` when the
    /// environment names a proxy, which only reqwest knows how to use.
    connections: Option<std::sync::Arc<crate::conn::Connections>>,
    /// The append channel appends go out on; `None` with a proxy, as
    /// `connections`.
    channels: Option<std::sync::Arc<crate::channel::Channels>>,
}

impl RemoteStore {
    /// Connects to the store at `url` (e.g. `http://127.0.0.1:2113`, or
    /// `https://` for a store serving TLS) and reads its limits; fails
    /// with a clear error if it cannot be reached.
    pub async fn connect(url: &str, options: RemoteOptions) -> Result<Self> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::InvalidOptions(format!(
                "store URL {url:?} must start with http:// or https://"
            )));
        }
        let tls = http_edge::tls::client_config(options.ca_file.as_deref())
            .map_err(|e| Error::InvalidOptions(e.to_string()))?;
        let direct = |path: &str| match crate::conn::proxied(&base, |name| std::env::var_os(name)) {
            true => Ok(None),
            false => crate::conn::Connections::new(
                &base,
                path,
                tls.clone(),
                options.token.as_deref(),
                options.request_timeout,
            )
            .map(Some),
        };
        let connections = direct("/batch")?.map(std::sync::Arc::new);
        let channels = match options.append_channel {
            true => {
                direct("/appends")?.map(|c| std::sync::Arc::new(crate::channel::Channels::new(c)))
            }
            false => None,
        };
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| Error::Remote(format!("building the HTTP client: {e}")))?;
        let mut store = Self {
            base,
            http,
            options,
            batcher: std::sync::Arc::default(),
            connections,
            channels,
            info: ServerInfo {
                data_format_version: 0,
                read_count_max: 1000,
            },
        };
        store.info = store.get_json("/info").await?;
        Ok(store)
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    pub(crate) fn batcher(&self) -> &crate::batch::Batcher {
        &self.batcher
    }

    /// The append channel, unless a proxy is in the way or the server has
    /// none.
    pub(crate) fn channels(&self) -> Option<&std::sync::Arc<crate::channel::Channels>> {
        self.channels.as_ref().filter(|c| !c.unsupported())
    }

    /// Posts a batch of transactions (see `batch`).
    pub(crate) async fn post_batch_request(
        &self,
        body: &wire::WireBatch,
    ) -> std::result::Result<crate::conn::Answer, crate::conn::Failure> {
        let body = serde_json::to_vec(body)
            .map_err(|e| crate::conn::Failure::NotSent(format!("encoding the batch: {e}")))?;
        match &self.connections {
            Some(connections) => connections.post_json(body.into()).await,
            None => self.post_through_proxy("/batch", body).await,
        }
    }

    /// POSTs a JSON `body` to `path` through reqwest (and the proxy it
    /// found in the environment), reading the answer whole.
    async fn post_through_proxy(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> std::result::Result<crate::conn::Answer, crate::conn::Failure> {
        use crate::conn::{Answer, Failure};
        let response = self
            .request(Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| match e.is_connect() {
                true => Failure::NotSent(e.to_string()),
                false => Failure::Lost(e.to_string()),
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::Lost(format!("its answer was cut off: {e}")))?;
        Ok(Answer { status, body })
    }

    /// The events from `from` on, in pages of up to `page` events, each
    /// asked for while the consumer works through the one before: the
    /// server reads and encodes the next page meanwhile. Ends after the
    /// last page that holds events (the head as it was when that page was
    /// read), or with an error.
    pub fn read_all_ahead(
        &self,
        from: Position,
        page: usize,
    ) -> impl futures_util::Stream<Item = Result<Vec<RecordedEvent>>> + Send + 'static {
        // One page waiting for the consumer, one on its way.
        let (tx, mut rx) = mpsc::channel(1);
        let store = self.clone();
        tokio::spawn(async move {
            let mut from = from;
            loop {
                let events = tokio::select! {
                    r = store.read_all(from, page) => r,
                    () = tx.closed() => return,
                };
                let next = match &events {
                    Ok(events) => match events.last() {
                        Some(last) => Position(last.position.0 + 1),
                        None => return,
                    },
                    Err(_) => Position(u64::MAX),
                };
                if tx.send(events).await.is_err() || next.0 == u64::MAX {
                    return;
                }
                from = next;
            }
        });
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(self.options.request_timeout)
            // Marks the request as a program's, not a cross-site form's:
            // the bodiless and non-JSON ones (snapshots, erasure) need it.
            .header("x-requested-with", "annals");
        match &self.options.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn send(&self, builder: RequestBuilder) -> Result<reqwest::Response> {
        let response = builder.send().await.map_err(|e| self.unreachable(&e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.error_from(response).await)
    }

    /// A request that got no answer. A certificate the client refuses is
    /// [`Error::InvalidOptions`]: trying again will not help, trusting
    /// the right CA will.
    fn unreachable(&self, e: &reqwest::Error) -> Error {
        match http_edge::tls::refused_certificate(e) {
            Some(why) => Error::InvalidOptions(format!(
                "{}: the store's TLS certificate is not trusted: {why}",
                self.base
            )),
            None => Error::Remote(format!("{}: {e}", self.base)),
        }
    }

    async fn error_from(&self, response: reqwest::Response) -> Error {
        let status = response.status();
        match response.json::<Problem>().await {
            Ok(problem) => wire::error_of(problem),
            Err(_) => Error::Remote(format!("{} answered {status}", self.base)),
        }
    }

    /// Sends an append, and when its answer is lost after the request may
    /// have reached the store, sends it again (the same event ids) until
    /// the store answers for sure: already committed, committed now, or
    /// refused for a reason that holds whatever happened. An append whose
    /// expected version anchors nothing (`Any`, `StreamExists`) is not sent
    /// again, since a retry could then commit it twice; its lost answer is
    /// [`Error::Indeterminate`] at once.
    ///
    /// `lost` says why the answer to an earlier sending of the append was
    /// lost, if it was (batches, see `batch`): then even a connection
    /// refused at once does not mean that nothing was written, and the
    /// store is asked again as above.
    pub(crate) async fn settle_append<
        B: serde::Serialize + Sync,
        T: serde::de::DeserializeOwned,
    >(
        &self,
        path: &str,
        body: &B,
        anchored: bool,
        mut lost: Option<String>,
    ) -> Result<T> {
        let deadline = std::time::Instant::now() + self.options.outcome_wait;
        // Asking again: from 50 ms, doubling up to a second, until the
        // deadline.
        let mut pauses =
            event_store::pauses::doubling(Duration::from_millis(50), Duration::from_secs(1))
                .build();
        // `lost`: why the first answer was lost, once it was.
        loop {
            match self.request(Method::POST, path).json(body).send().await {
                Ok(response) if response.status().is_success() => {
                    match response.json::<T>().await {
                        Ok(answer) => return Ok(answer),
                        Err(e) => {
                            lost.get_or_insert_with(|| format!("its answer was cut off: {e}"));
                        }
                    }
                }
                Ok(response) => {
                    let err = self.error_from(response).await;
                    // A store that cannot tell yet (restarting, read-only
                    // until an operator looks) is asked again; any other
                    // answer holds whether or not the lost one committed.
                    if lost.is_none() || !err.is_store_failure() {
                        return Err(err);
                    }
                }
                // A connection never made carried nothing.
                Err(e) if lost.is_none() && e.is_connect() => {
                    return Err(Error::Remote(format!("{}: {e}", self.base)));
                }
                Err(e) => {
                    lost.get_or_insert_with(|| e.to_string());
                }
            }
            let why = lost.as_deref().unwrap_or("no answer");
            if !anchored {
                return Err(Error::Indeterminate(format!(
                    "the answer from {} was lost ({why}), and an append without an expected \
                     version is not sent twice",
                    self.base
                )));
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Indeterminate(format!(
                    "the answer from {} was lost ({why}), and the store could not be asked \
                     again within {} ms",
                    self.base,
                    self.options.outcome_wait.as_millis()
                )));
            }
            tracing::warn!(store = %self.base, error = %why, "the answer to an append was lost; asking the store again");
            tokio::time::sleep(pauses.next().unwrap_or(Duration::from_secs(1))).await;
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.decode(self.send(self.request(Method::GET, path)).await?)
            .await
    }

    async fn decode<T: serde::de::DeserializeOwned>(
        &self,
        response: reqwest::Response,
    ) -> Result<T> {
        response
            .json()
            .await
            .map_err(|e| Error::Remote(format!("{}: unreadable answer: {e}", self.base)))
    }
}

/// Whether a retry of an append with this expected version can only find
/// it committed or commit it once: the version pins where it goes.
fn anchored(expected: event_store::ExpectedVersion) -> bool {
    use event_store::ExpectedVersion as E;
    matches!(expected, E::Exact(_) | E::NoStream)
}

#[async_trait]
impl EventStore for RemoteStore {
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        let body = wire::WireTransaction {
            appends: appends
                .iter()
                .map(wire::append_to_wire)
                .collect::<Result<_>>()?,
        };
        let anchored = appends.iter().all(|a| anchored(a.expected));
        self.append_batched(body, anchored).await
    }

    async fn append(
        &self,
        stream_id: &StreamId,
        expected: event_store::ExpectedVersion,
        events: Vec<event_store::NewEvent>,
    ) -> Result<AppendResult> {
        // As a one-stream transaction, so that it can share a request
        // with this client's other appends in flight.
        let mut results = self
            .append_many(vec![StreamAppend::new(stream_id.clone(), expected, events)])
            .await?;
        results.pop().ok_or_else(|| {
            Error::Remote(format!(
                "{}: an append answered without a result",
                self.base
            ))
        })
    }

    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from: ReadFrom,
        direction: Direction,
        max_count: usize,
    ) -> Result<StreamSlice> {
        let from = match from {
            ReadFrom::Start => "start".to_string(),
            ReadFrom::End => "end".to_string(),
            ReadFrom::Version(v) => v.to_string(),
        };
        let direction = match direction {
            Direction::Forward => "forward",
            Direction::Backward => "backward",
        };
        let request = self
            .request(Method::GET, &format!("/streams/{stream_id}"))
            .query(&[
                ("from", from.as_str()),
                ("direction", direction),
                ("max_count", &max_count.to_string()),
            ]);
        let slice: WireSlice = self.decode(self.send(request).await?).await?;
        wire::slice_from_wire(slice)
    }

    async fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let request = self
            .request(Method::GET, "/all")
            .query(&[("from", from.0), ("max_count", max_count as u64)])
            .header(reqwest::header::ACCEPT, wire::EVENTS_BINARY);
        let response = self.send(request).await?;
        let binary = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(wire::EVENTS_BINARY));
        if binary {
            let body = response
                .bytes()
                .await
                .map_err(|e| Error::Remote(format!("{}: answer cut off: {e}", self.base)))?;
            return wire::events_from_binary(body);
        }
        // A server of an earlier release answers in JSON only.
        let events: WireEvents = self.decode(response).await?;
        events
            .events
            .into_iter()
            .map(wire::event_from_wire)
            .collect()
    }

    async fn subscribe(&self, from: Position, filter: EventFilter) -> Result<Subscription> {
        let (tx, mut rx) = mpsc::channel(self.options.subscription_buffer.max(1));
        // Fail early if the server cannot be reached at all.
        self.head().await?;
        tokio::spawn(follow(self.clone(), from, filter, tx));
        Ok(Subscription::from_stream(futures_util::stream::poll_fn(
            move |cx| rx.poll_recv(cx),
        )))
    }

    async fn save_snapshot(
        &self,
        stream_id: &StreamId,
        version: u64,
        schema_version: u32,
        state: Bytes,
    ) -> Result<()> {
        let request = self
            .request(Method::PUT, &format!("/streams/{stream_id}/snapshot"))
            .query(&[
                ("version", version),
                ("schema_version", u64::from(schema_version)),
            ])
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(state);
        self.send(request).await?;
        Ok(())
    }

    async fn load_snapshot(&self, stream_id: &StreamId) -> Result<Option<Snapshot>> {
        let response = self
            .request(Method::GET, &format!("/streams/{stream_id}/snapshot"))
            .send()
            .await
            .map_err(|e| Error::Remote(format!("{}: {e}", self.base)))?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(self.error_from(response).await);
        }
        let snapshot = self.decode(response).await?;
        wire::snapshot_from_wire(stream_id, snapshot).map(Some)
    }

    async fn stats(&self) -> Result<Stats> {
        self.get_json("/stats").await
    }

    async fn head(&self) -> Result<Position> {
        let head: WireHead = self.get_json("/head").await?;
        Ok(Position(head.position))
    }

    async fn list_streams(&self, listing: StreamListing) -> Result<StreamPage> {
        let mut query = vec![
            ("prefix", listing.prefix),
            ("limit", listing.limit.to_string()),
        ];
        if let Some(after) = listing.after {
            query.push(("after", after));
        }
        let request = self.request(Method::GET, "/streams").query(&query);
        self.decode(self.send(request).await?).await
    }

    async fn list_categories(&self, limit: usize) -> Result<CategoryPage> {
        let request = self
            .request(Method::GET, "/categories")
            .query(&[("limit", limit)]);
        self.decode(self.send(request).await?).await
    }

    async fn ready(&self) -> Result<()> {
        self.send(self.request(Method::GET, "/health/ready"))
            .await?;
        Ok(())
    }

    /// One round trip instead of a snapshot request plus stream pages.
    async fn load(
        &self,
        stream_id: &StreamId,
        snapshot_schema: Option<u32>,
    ) -> Result<LoadedStream> {
        let mut request = self.request(Method::GET, &format!("/streams/{stream_id}/load"));
        if let Some(schema) = snapshot_schema {
            request = request.query(&[("snapshot_schema", schema)]);
        }
        let loaded: WireLoaded = self.decode(self.send(request).await?).await?;
        Ok(LoadedStream {
            snapshot: loaded
                .snapshot
                .map(|s| wire::snapshot_from_wire(stream_id, s))
                .transpose()?,
            events: loaded
                .events
                .into_iter()
                .map(wire::event_from_wire)
                .collect::<Result<_>>()?,
            version: loaded.version,
        })
    }

    fn read_page_max(&self) -> usize {
        self.info.read_count_max
    }
}

/// How one connection of a subscription ended.
enum Ended {
    /// The consumer went away.
    Consumer,
    /// The server reported an error; it is final.
    Failed(Error),
    /// The connection dropped or went silent: reconnect.
    Dropped(String),
}

/// Follows the server's event stream across reconnections.
async fn follow(
    store: RemoteStore,
    from: Position,
    filter: EventFilter,
    tx: mpsc::Sender<Result<RecordedEvent>>,
) {
    // The last position delivered (or before `from`): every connection
    // resumes right after it.
    let mut last = from.0.max(1) - 1;
    // The event delivered there, which the log must still hold when the
    // subscription resumes: a store restored from an older copy (or whose
    // tail was lost) would otherwise hand out other events under
    // positions already delivered, and this consumer would never see them.
    let mut last_id: Option<uuid::Uuid> = None;
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut pauses = reconnect_pauses();
    loop {
        let ended = match last_id {
            Some(id) => match store.check_continues(Position(last), id).await {
                Ok(()) => connect_once(&store, &filter, last, &tx).await,
                Err(err @ Error::Diverged(_)) => (Ended::Failed(err), None),
                Err(err) => (Ended::Dropped(err.to_string()), None),
            },
            None => connect_once(&store, &filter, last, &tx).await,
        };
        match ended {
            (Ended::Consumer, _) => return,
            (Ended::Failed(err), _) => {
                let _ = tx.send(Err(err)).await;
                return;
            }
            (Ended::Dropped(why), delivered) => {
                if let Some((position, id)) = delivered {
                    last = position;
                    last_id = Some(id);
                    failing_since = None;
                    pauses = reconnect_pauses();
                }
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > store.options.reconnect_for {
                    let _ = tx
                        .send(Err(Error::Remote(format!(
                            "subscription to {} lost and not restored within {:?}: {why}",
                            store.base, store.options.reconnect_for
                        ))))
                        .await;
                    return;
                }
                tracing::debug!(%why, "subscription connection dropped; reconnecting");
                let pause = pauses
                    .next()
                    .map_or(RECONNECT_PAUSE_MAX, |p| p.min(RECONNECT_PAUSE_MAX));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = tx.closed() => return,
                }
            }
        }
    }
}

/// The longest pause between two attempts to reconnect a subscription.
const RECONNECT_PAUSE_MAX: Duration = Duration::from_secs(2);

/// Pauses between reconnection attempts: from 50 ms, doubling, each
/// lengthened by a random part of up to as much again so that the
/// subscribers of a restarted store do not all come back at once (the
/// doubling stops at half of [`RECONNECT_PAUSE_MAX`], so the jitter never
/// takes a pause past it); never exhausted (the caller gives up after
/// `reconnect_for`).
fn reconnect_pauses() -> impl Iterator<Item = Duration> {
    event_store::pauses::jittered(Duration::from_millis(50), RECONNECT_PAUSE_MAX).build()
}

/// One connection: returns how it ended and the last event delivered
/// (position and id).
async fn connect_once(
    store: &RemoteStore,
    filter: &EventFilter,
    last: u64,
    tx: &mpsc::Sender<Result<RecordedEvent>>,
) -> (Ended, Option<(u64, uuid::Uuid)>) {
    let mut query: Vec<(&str, String)> = Vec::new();
    query.extend(
        filter
            .stream_prefixes
            .iter()
            .map(|p| ("stream_prefix", p.clone())),
    );
    query.extend(filter.event_types.iter().map(|t| ("event_type", t.clone())));
    let mut request = store
        .http
        .get(format!("{}/subscriptions", store.base))
        .query(&query)
        .header(reqwest::header::ACCEPT, "text/event-stream");
    if last > 0 {
        request = request.header("Last-Event-ID", last.to_string());
    }
    if let Some(token) = &store.options.token {
        request = request.bearer_auth(token);
    }
    let response = tokio::select! {
        r = request.send() => r,
        () = tx.closed() => return (Ended::Consumer, None),
    };
    let response = match response {
        Ok(r) if r.status().is_success() => r,
        Ok(r) if r.status().is_client_error() => {
            return (Ended::Failed(store.error_from(r).await), None);
        }
        Ok(r) => {
            return (
                Ended::Dropped(format!("server answered {}", r.status())),
                None,
            );
        }
        Err(e) => return (Ended::Dropped(e.to_string()), None),
    };

    let events = server_sent_events(response.bytes_stream(), store.options.idle_timeout);
    let mut events = std::pin::pin!(events);
    let mut delivered = None;
    loop {
        let message = tokio::select! {
            m = events.next() => m,
            () = tx.closed() => return (Ended::Consumer, delivered),
        };
        let message = match message {
            None => {
                return (
                    Ended::Dropped("the server closed the stream".into()),
                    delivered,
                );
            }
            Some(Err(why)) => return (Ended::Dropped(why), delivered),
            Some(Ok(message)) => message,
        };
        if message.event == "error" {
            let err = serde_json::from_str::<Problem>(&message.data).map_or_else(
                |e| Error::Remote(format!("unreadable error event: {e}")),
                wire::error_of,
            );
            return (Ended::Failed(err), delivered);
        }
        let event = serde_json::from_str::<wire::WireEvent>(&message.data)
            .map_err(|e| Error::Remote(format!("unreadable event: {e}")))
            .and_then(wire::event_from_wire);
        let event = match event {
            Ok(event) => event,
            Err(err) => return (Ended::Failed(err), delivered),
        };
        // A reconnection never repeats an event already delivered.
        if event.position.0 <= last || delivered.is_some_and(|(d, _)| event.position.0 <= d) {
            continue;
        }
        let seen = (event.position.0, event.id);
        if tx.send(Ok(event)).await.is_err() {
            return (Ended::Consumer, delivered);
        }
        delivered = Some(seen);
    }
}

/// The Server-Sent Events of a response body. An error says why the
/// connection is no good: nothing, not even a keep-alive comment, arrived
/// within `idle` of asking for more (the clock runs only while the parser
/// waits for bytes, never while a slow consumer takes the events already
/// read), or the bytes are not UTF-8. The byte stream is watched here
/// rather than the events because comments yield no event, and because the
/// parser would hold a byte that is not UTF-8 forever and read nothing
/// after it.
fn server_sent_events<B, E>(
    body: impl futures_util::Stream<Item = std::result::Result<B, E>> + Send + 'static,
    idle: Duration,
) -> impl futures_util::Stream<Item = std::result::Result<eventsource_stream::Event, String>>
where
    B: AsRef<[u8]> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let checked = futures_util::stream::unfold(
        (Box::pin(body), Utf8Check::default()),
        move |(mut body, mut utf8)| async move {
            let chunk = match tokio::time::timeout(idle, body.next()).await {
                Ok(None) => return None,
                Ok(Some(Ok(chunk))) => utf8.check(chunk.as_ref()).map(|()| chunk),
                Ok(Some(Err(e))) => Err(e.to_string()),
                Err(_) => Err("no data or keep-alive in time".to_owned()),
            };
            Some((chunk, (body, utf8)))
        },
    );
    checked.eventsource().map(|event| {
        event.map_err(|e| match e {
            EventStreamError::Transport(why) => why,
            other => format!("unreadable event stream: {other}"),
        })
    })
}

/// Checks that a byte stream is UTF-8 chunk by chunk: a character cut
/// between two chunks is fine, a byte that cannot start or continue one is
/// not.
#[derive(Debug, Default)]
struct Utf8Check {
    /// The start of a character cut at the end of the last chunk.
    carry: Vec<u8>,
}

impl Utf8Check {
    fn check(&mut self, chunk: &[u8]) -> std::result::Result<(), String> {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(chunk);
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                self.carry = bytes[e.valid_up_to()..].to_vec();
                Ok(())
            }
            Err(e) => Err(format!("the event stream is not UTF-8: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sse_messages_split_across_chunks_are_reassembled() {
        let text = ": keep-alive\n\nid: 5\nevent: event\ndata: {\"a\":\ndata: 1}\n\nevent: error\r\ndata: x\r\n\r\n";
        for split in 0..text.len() {
            let chunks = [&text.as_bytes()[..split], &text.as_bytes()[split..]]
                .map(|c| Ok::<_, std::convert::Infallible>(c.to_vec()));
            let got: Vec<(String, String)> =
                server_sent_events(futures_util::stream::iter(chunks), Duration::from_secs(5))
                    .map(|m| m.map(|m| (m.event, m.data)).unwrap())
                    .collect()
                    .await;
            assert_eq!(
                got,
                vec![
                    ("event".to_owned(), "{\"a\":\n1}".to_owned()),
                    ("error".to_owned(), "x".to_owned()),
                ],
                "split at {split}"
            );
        }
    }

    #[tokio::test]
    async fn a_character_cut_between_chunks_passes_and_a_stray_byte_does_not() {
        let text = "data: \u{e9}t\u{e9}\n\n".as_bytes();
        for split in 0..text.len() {
            let mut check = Utf8Check::default();
            assert_eq!(check.check(&text[..split]), Ok(()), "split at {split}");
            assert_eq!(check.check(&text[split..]), Ok(()), "split at {split}");
        }
        let chunks = [
            b"data: a\n\n".to_vec(),
            vec![0xff, b'\n'],
            b"data: b\n\n".to_vec(),
        ]
        .map(Ok::<_, std::convert::Infallible>);
        let got: Vec<_> =
            server_sent_events(futures_util::stream::iter(chunks), Duration::from_secs(5))
                .take(2)
                .collect()
                .await;
        assert_eq!(got[0].as_ref().map(|e| e.data.as_str()), Ok("a"));
        assert!(
            got[1].as_ref().is_err_and(|why| why.contains("not UTF-8")),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_body_silent_for_the_idle_timeout_is_a_dropped_connection() {
        let silent = futures_util::stream::pending::<std::result::Result<Vec<u8>, String>>();
        let mut events = std::pin::pin!(server_sent_events(silent, Duration::from_millis(50)));
        assert_eq!(
            events.next().await,
            Some(Err("no data or keep-alive in time".to_owned()))
        );
    }
}
