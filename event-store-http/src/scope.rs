//! The streams one caller may touch through the store API.

use std::sync::Arc;

/// The stream prefixes a caller is limited to: a tenant's key with the
/// prefix `tenant-a-` appends to, reads and subscribes to only the streams
/// whose ids start with it. Whatever authenticates callers in front of
/// [`router`](super::router) puts it in the request's extensions; a
/// request without one may touch every stream.
///
/// A limited caller cannot read the whole log (`GET /all`): it subscribes
/// instead, and its subscription is narrowed to its prefixes (or refused
/// when it asks for a prefix outside them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamScope {
    prefixes: Arc<[String]>,
}

impl StreamScope {
    /// Limited to the streams starting with one of `prefixes`; with none,
    /// to no stream at all.
    pub fn new(prefixes: impl IntoIterator<Item = String>) -> Self {
        Self {
            prefixes: prefixes.into_iter().collect(),
        }
    }

    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// Whether the stream `id` is within the scope.
    pub fn allows(&self, id: &str) -> bool {
        self.prefixes.iter().any(|p| id.starts_with(p.as_str()))
    }
}

/// A caller's request rate, checked for each transaction of an append
/// channel (`POST /appends`): the layer in front that limits requests per
/// caller puts it in the request's extensions when it lets the channel's
/// request through, and each line then counts as a request of its own
/// (refused with `429` when over the rate, the channel staying open).
#[derive(Clone)]
pub struct RequestRate(Arc<dyn Fn() -> Result<(), std::time::Duration> + Send + Sync>);

impl RequestRate {
    /// `check` answers `Ok` while the caller is within its rate, else how
    /// long it must wait; it is called once per transaction.
    pub fn new(
        check: impl Fn() -> Result<(), std::time::Duration> + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new(check))
    }

    pub(crate) fn check(&self) -> Result<(), std::time::Duration> {
        (self.0)()
    }
}

impl std::fmt::Debug for RequestRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestRate").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_allows_its_prefixes_and_nothing_else() {
        let scope = StreamScope::new(["tenant-a-".to_string(), "shared-".to_string()]);
        assert!(scope.allows("tenant-a-1"));
        assert!(scope.allows("shared-x"));
        assert!(!scope.allows("tenant-b-1"));
        assert!(!scope.allows("tenant-a"));
        // A prefix within the scope (every stream it names is).
        assert!(scope.allows("tenant-a-orders-"));
        assert!(!scope.allows("tenant-"));
        assert!(!StreamScope::new(Vec::new()).allows("anything"));
    }
}
