//! What an HTTP request was answered with, as tests read it.

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// An answer: its status, headers and body (JSON, `null` when empty).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// An answer from its parts; a body that is not JSON fails the test.
    pub(crate) fn new(status: StatusCode, headers: HeaderMap, bytes: &[u8]) -> Answer {
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(bytes).unwrap_or_else(|e| {
                panic!(
                    "a {status} answer whose body is not JSON ({e}): {}",
                    String::from_utf8_lossy(bytes)
                )
            })
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// The header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Annals-Position`: the log position the answer reflects.
    pub fn position(&self) -> Option<u64> {
        self.header("annals-position")?.parse().ok()
    }
}
