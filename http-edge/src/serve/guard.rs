//! The socket as hyper sees it: a connection whose request heads were
//! checked before hyper reads them.
//!
//! hyper answers a head it cannot parse (a garbage request line, two
//! different `Content-Length`s, a URI over 64 KiB, too many or too large
//! header fields) on its own, with an empty `400`, `414` or `431`, and no
//! option changes that. So [`Guarded`] keeps each request head back until
//! it is whole, parses it with the same parser hyper uses (`httparse`) and
//! the same framing rules (RFC 9112 section 6), and hands it on only when
//! hyper will take it. A head that is refused never reaches hyper: hyper
//! sees the end of the input instead, finishes the requests before it and
//! ends the connection, and [`Guarded::finish`] then writes the refusal as
//! a problem document. To know where the next head starts, it follows
//! each body's framing (a length, or chunks); the body bytes themselves go
//! straight through.
//!
//! It also keeps the connection's clocks, which run only while hyper waits
//! for input: a head must arrive within the header-read timeout of its
//! first byte (else `408`), a connection may wait for its next request for
//! the idle timeout (then it is closed), and a body that sends nothing for
//! the idle timeout fails with an `io::ErrorKind::TimedOut` error, which
//! reaches the application through the request body.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::config::ServeConfig;
use super::refusal::Refusal;

/// How many bytes a chunk-size line or a trailer line of a chunked body
/// may take before the guard stops following the body (hyper then refuses
/// it on its own, and closes the connection).
const CHUNK_LINE_BYTES_MAX: usize = 4096;

/// How long a refused connection is drained after the answer, and how
/// much, so that a client still sending its request reads the answer
/// instead of a reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES_MAX: usize = 1 << 20;

/// Where the input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Between requests, or inside a head not yet handed on.
    Head,
    /// In a body of this many more bytes.
    Length(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Past something the guard could not follow (a malformed chunked
    /// body): hyper refuses it and ends the connection, so what comes
    /// after goes through unchecked.
    Through,
    /// A head was refused, a timeout struck or the client closed: hyper
    /// sees the end of the input.
    Ended,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line (size, extensions, line end).
    Size,
    /// In a chunk's data, this many bytes to go.
    Data(u64),
    /// In the line end after a chunk's data.
    DataEnd,
    /// In the trailer section, after the last chunk: field lines, then an
    /// empty line that ends the body.
    Trailers,
}

/// A connection (TCP, or TLS over TCP: the checks and clocks apply to
/// the plaintext) whose request heads are checked before hyper reads
/// them; see the module documentation.
#[derive(Debug)]
pub(super) struct Guarded<IO> {
    io: IO,
    limits: Limits,
    /// Bytes read from the socket that hyper has not taken yet.
    input: BytesMut,
    /// How many bytes at the front of `input` hyper may take.
    released: usize,
    framing: Framing,
    /// When the wait for input began (reset by every byte that arrives).
    waiting_since: Option<Instant>,
    /// When the head being read began.
    head_since: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    /// The answer to send once hyper is done.
    refusal: Option<Refusal>,
}

/// The limits the guard enforces, from [`ServeConfig`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
    uri_bytes_max: usize,
    head_bytes_max: usize,
    header_fields_max: usize,
}

/// What a look at the input found.
enum Step {
    /// Bytes were released, or the state changed: look again.
    Progress,
    /// More input is needed.
    NeedInput,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Guarded<IO> {
    pub(super) fn new(io: IO, config: &ServeConfig) -> Guarded<IO> {
        Guarded {
            io,
            limits: Limits {
                header_read_timeout: config.header_read_timeout,
                idle_timeout: config.idle_timeout,
                uri_bytes_max: config.uri_bytes_max,
                head_bytes_max: config.request_head_bytes_max,
                header_fields_max: config.header_fields_max,
            },
            input: BytesMut::with_capacity(8 << 10),
            released: 0,
            framing: Framing::Head,
            waiting_since: None,
            head_since: None,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            refusal: None,
        }
    }

    /// Once hyper is done with the connection: writes the refusal, if a
    /// head was refused or timed out, closes the sending side, and drains
    /// what the client still sends for a moment: a client still writing a
    /// request that was answered early (a refused head, a body over its
    /// limit) would otherwise get a reset, which can cost it the answer.
    pub(super) async fn finish(mut self) {
        let answer = self.refusal.take().map(|refusal| {
            tracing::debug!(status = refusal.status.as_u16(), detail = %refusal.detail, "refused a request at the connection");
            refusal.to_bytes()
        });
        close_with(&mut self.io, answer.as_deref()).await;
    }

    /// Follows the input as far as it goes: checks a whole head, or
    /// releases body bytes.
    fn step(&mut self) -> Step {
        let unseen = self.input.len() - self.released;
        if unseen == 0 {
            return Step::NeedInput;
        }
        match self.framing {
            Framing::Head => self.head(),
            Framing::Length(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(unseen);
                self.released += n;
                let left = left - n as u64;
                self.framing = if left == 0 {
                    Framing::Head
                } else {
                    Framing::Length(left)
                };
                Step::Progress
            }
            Framing::Chunked(chunk) => self.chunked(chunk),
            Framing::Through => {
                self.released = self.input.len();
                Step::Progress
            }
            Framing::Ended => Step::NeedInput,
        }
    }

    /// Checks the head at `released`, once it is whole.
    fn head(&mut self) -> Step {
        let start = self.released;
        let mut fields = vec![httparse::EMPTY_HEADER; self.limits.header_fields_max];
        let mut request = httparse::Request::new(&mut fields);
        let parsed = request.parse(&self.input[start..]);
        let refusal = match parsed {
            Ok(httparse::Status::Complete(len)) => match self.framing_of(&request, len) {
                Ok(framing) => {
                    self.released += len;
                    self.framing = framing;
                    self.head_since = None;
                    return Step::Progress;
                }
                Err(refusal) => refusal,
            },
            Ok(httparse::Status::Partial) => match self.partial_refusal(start) {
                Some(refusal) => refusal,
                None => return Step::NeedInput,
            },
            Err(httparse::Error::TooManyHeaders) => {
                Refusal::too_many_fields(self.limits.header_fields_max)
            }
            Err(e) => Refusal::malformed(format!("the request head does not parse: {e}")),
        };
        self.refuse(refusal);
        Step::Progress
    }

    /// A head not yet whole that is already over a limit.
    fn partial_refusal(&self, start: usize) -> Option<Refusal> {
        let head = &self.input[start..];
        // The request line is the method, the target and the version: a
        // line longer than the target's limit plus room for the other two
        // has a target over the limit.
        let request_line_max = self.limits.uri_bytes_max + 64;
        let request_line = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
        if request_line > request_line_max {
            return Some(Refusal::uri_too_long(self.limits.uri_bytes_max));
        }
        (head.len() > self.limits.head_bytes_max)
            .then(|| Refusal::head_too_large(self.limits.head_bytes_max))
    }

    /// The framing of the body after a whole head, or why the head is
    /// refused: the checks hyper makes (and a few it does not: a request
    /// with both `Transfer-Encoding` and `Content-Length` is refused, as
    /// RFC 9112 allows, rather than read by one of the two).
    fn framing_of(
        &self,
        request: &httparse::Request<'_, '_>,
        len: usize,
    ) -> Result<Framing, Refusal> {
        let target = request.path.unwrap_or_default();
        if target.len() > self.limits.uri_bytes_max {
            return Err(Refusal::uri_too_long(self.limits.uri_bytes_max));
        }
        if len > self.limits.head_bytes_max {
            return Err(Refusal::head_too_large(self.limits.head_bytes_max));
        }
        let method = request.method.unwrap_or_default();
        if http::Method::from_bytes(method.as_bytes()).is_err() {
            return Err(Refusal::malformed(format!("{method:?} is not a method")));
        }
        if http::Uri::try_from(target).is_err() {
            return Err(Refusal::malformed("the request target is not a URI"));
        }
        let http_10 = request.version == Some(0);
        let mut length: Option<u64> = None;
        let mut chunked: Option<bool> = None;
        for field in request.headers.iter() {
            if http::HeaderName::from_bytes(field.name.as_bytes()).is_err()
                || http::HeaderValue::from_bytes(field.value).is_err()
            {
                return Err(Refusal::malformed(format!(
                    "the header field {:?} is not valid",
                    field.name
                )));
            }
            if field.name.eq_ignore_ascii_case("transfer-encoding") {
                if http_10 {
                    return Err(Refusal::malformed(
                        "an HTTP/1.0 request cannot have a Transfer-Encoding",
                    ));
                }
                // The last coding of the last field is the one that frames
                // the body.
                let value = String::from_utf8_lossy(field.value);
                let last = value
                    .rsplit(',')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                chunked = Some(last.eq_ignore_ascii_case("chunked"));
            } else if field.name.eq_ignore_ascii_case("content-length") {
                let value = std::str::from_utf8(field.value).unwrap_or_default().trim();
                let parsed = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| value.parse::<u64>().ok())
                    .flatten()
                    .filter(|n| *n < u64::MAX - 1);
                let Some(n) = parsed else {
                    return Err(Refusal::malformed(format!(
                        "Content-Length {value:?} is not a length"
                    )));
                };
                if length.is_some_and(|before| before != n) {
                    return Err(Refusal::malformed(
                        "the request has two different Content-Lengths",
                    ));
                }
                length = Some(n);
            }
        }
        match (chunked, length) {
            (Some(_), Some(_)) => Err(Refusal::malformed(
                "the request has both Transfer-Encoding and Content-Length",
            )),
            (Some(false), None) => Err(Refusal::malformed(
                "the request's Transfer-Encoding does not end in chunked",
            )),
            (Some(true), None) => Ok(Framing::Chunked(Chunk::Size)),
            (None, Some(n)) if n > 0 => Ok(Framing::Length(n)),
            (None, _) => Ok(Framing::Head),
        }
    }

    /// Follows a chunked body as far as the input goes, releasing it.
    fn chunked(&mut self, chunk: Chunk) -> Step {
        let unseen = &self.input[self.released..];
        let (taken, next) = match chunk {
            Chunk::Size => match unseen.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let line = &unseen[..end];
                    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
                    let size = std::str::from_utf8(&line[..digits])
                        .ok()
                        .and_then(|hex| u64::from_str_radix(hex, 16).ok());
                    match size {
                        Some(0) => (end + 1, Framing::Chunked(Chunk::Trailers)),
                        Some(n) => (end + 1, Framing::Chunked(Chunk::Data(n))),
                        None => (0, Framing::Through),
                    }
                }
                None if unseen.len() > CHUNK_LINE_BYTES_MAX => (0, Framing::Through),
                None => return Step::NeedInput,
            },
            Chunk::Data(left) => {
                let n = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(unseen.len());
                let left = left - n as u64;
                let next = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                };
                (n, Framing::Chunked(next))
            }
            Chunk::DataEnd => match unseen {
                [b'\n', ..] => (1, Framing::Chunked(Chunk::Size)),
                [b'\r', b'\n', ..] => (2, Framing::Chunked(Chunk::Size)),
                [b'\r'] => return Step::NeedInput,
                _ => (0, Framing::Through),
            },
            Chunk::Trailers => match unseen.iter().position(|&b| b == b'\n') {
                Some(end) if matches!(&unseen[..end], b"" | b"\r") => (end + 1, Framing::Head),
                Some(end) => (end + 1, Framing::Chunked(Chunk::Trailers)),
                None if unseen.len() > CHUNK_LINE_BYTES_MAX => (0, Framing::Through),
                None => return Step::NeedInput,
            },
        };
        self.released += taken;
        self.framing = next;
        Step::Progress
    }

    /// Refuses the head at `released`: hyper gets the end of the input, and
    /// [`Guarded::finish`] the answer.
    fn refuse(&mut self, refusal: Refusal) {
        self.input.truncate(self.released);
        self.framing = Framing::Ended;
        self.refusal = Some(refusal);
    }

    /// What happens when the wait for input has lasted too long, if it
    /// has: the deadline of the current wait, polled.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let now = Instant::now();
        let head_started = self.framing == Framing::Head && self.input.len() > self.released;
        let deadline = if head_started {
            *self.head_since.get_or_insert(now) + self.limits.header_read_timeout
        } else {
            *self.waiting_since.get_or_insert(now) + self.limits.idle_timeout
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        ready!(self.timer.as_mut().poll(cx));
        match self.framing {
            Framing::Head if head_started => {
                self.refuse(Refusal::head_timeout(self.limits.header_read_timeout));
                Poll::Ready(Ok(()))
            }
            // Between requests: close quietly.
            Framing::Head => {
                self.framing = Framing::Ended;
                Poll::Ready(Ok(()))
            }
            _ => {
                self.framing = Framing::Ended;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the request body sent nothing for {} ms",
                        self.limits.idle_timeout.as_millis()
                    ),
                )))
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.released > 0 {
                let n = this.released.min(buf.remaining());
                buf.put_slice(&this.input[..n]);
                this.input.advance(n);
                this.released -= n;
                return Poll::Ready(Ok(()));
            }
            if this.framing == Framing::Ended {
                // The end of the input, as hyper sees it.
                return Poll::Ready(Ok(()));
            }
            if let Step::Progress = this.step() {
                continue;
            }
            let mut chunk = [0u8; 8 << 10];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // The client closed its side: a partial head is
                    // dropped; a partial body is hyper's to report.
                    if this.framing == Framing::Head {
                        this.input.truncate(this.released);
                    }
                    this.framing = Framing::Ended;
                }
                Poll::Ready(Ok(())) => {
                    this.input.extend_from_slice(read.filled());
                    this.waiting_since = None;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    ready!(this.poll_deadline(cx))?;
                }
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Writes `answer` (when there is one), closes the output, then reads
/// and drops what the client still sends for a while, so that a client
/// still sending its request reads the answer instead of a reset.
pub(super) async fn close_with<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    answer: Option<&[u8]>,
) {
    if let Some(answer) = answer
        && io.write_all(answer).await.is_err()
    {
        return;
    }
    if io.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 16 << 10];
        let mut drained = 0;
        while drained < LINGER_BYTES_MAX {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
