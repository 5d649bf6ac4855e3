//! What a server is told about its connections: limits, timeouts, TLS.

use std::sync::Arc;
use std::time::Duration;

/// The limits and timeouts of every connection, and its TLS. Each is a
/// command-line option of every `annals` process.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// How long a request head may take to arrive, from its first byte
    /// (`408` and the connection closed after).
    pub header_read_timeout: Duration,
    /// How long a connection may send nothing while the server waits for
    /// it: between requests (the connection is then closed), or inside a
    /// request body (`408`).
    pub idle_timeout: Duration,
    /// The longest request target (path and query) accepted (`414`).
    pub uri_bytes_max: usize,
    /// The largest request head (request line and header fields)
    /// accepted (`431`).
    pub request_head_bytes_max: usize,
    /// The most header fields a request may have (`431`).
    pub header_fields_max: usize,
    /// TLS on every connection when set (see [`crate::tls::server_config`]);
    /// plain HTTP otherwise.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The most connections served at once. One more waits in the
    /// listen backlog until one ends, so a flood of connections costs the
    /// process no more than this many (keep it under the file-descriptor
    /// limit, `ulimit -n`).
    pub connections_max: usize,
}

impl ServeConfig {
    pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
    pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
    pub const URI_BYTES_MAX_DEFAULT: usize = 8 << 10;
    pub const REQUEST_HEAD_BYTES_MAX_DEFAULT: usize = 32 << 10;
    pub const HEADER_FIELDS_MAX_DEFAULT: usize = 100;
    pub const CONNECTIONS_MAX_DEFAULT: usize = 4096;
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_millis(Self::HEADER_READ_TIMEOUT_MS_DEFAULT),
            idle_timeout: Duration::from_millis(Self::IDLE_TIMEOUT_MS_DEFAULT),
            uri_bytes_max: Self::URI_BYTES_MAX_DEFAULT,
            request_head_bytes_max: Self::REQUEST_HEAD_BYTES_MAX_DEFAULT,
            header_fields_max: Self::HEADER_FIELDS_MAX_DEFAULT,
            tls: None,
            connections_max: Self::CONNECTIONS_MAX_DEFAULT,
        }
    }
}
