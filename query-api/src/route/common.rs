//! What item and list routes share: the view they read, the route the
//! router and the document see, what a declaration says of its operation,
//! and the words of a path.

use std::sync::Arc;

use axum::routing::MethodRouter;
use utoipa::openapi::path::{Operation, OperationBuilder};
use utoipa::openapi::{RefOr, schema::Schema};

use crate::state::QueryState;

/// The view a route reads: the projection whose tables its query reads.
/// Its checkpoint is the position of every answer, and what
/// `min_position` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    projection: &'static str,
}

impl View {
    /// The view of the projection named `projection`
    /// ([`projector::Projection::name`]).
    pub const fn new(projection: &'static str) -> Self {
        Self { projection }
    }

    pub fn projection(&self) -> &'static str {
        self.projection
    }
}

/// One declared route, whatever its row type.
pub(crate) trait Route: Send + Sync + std::fmt::Debug {
    fn path(&self) -> &'static str;
    fn method_router(self: Arc<Self>) -> MethodRouter<QueryState>;
    /// The `GET` operation, adding the schemas it refers to.
    fn operation(&self, schemas: &mut Vec<(String, RefOr<Schema>)>) -> Operation;
}

/// What every route's declaration says of its operation.
#[derive(Debug, Clone, Default)]
pub(crate) struct Describe {
    pub summary: Option<&'static str>,
    pub description: Option<&'static str>,
    pub operation_id: Option<&'static str>,
    pub tag: Option<&'static str>,
}

impl Describe {
    /// The start of the operation of a route at `path` reading `view`,
    /// with what the declaration leaves out filled in: the operation id
    /// `<verb>_<path words>`, `summary`, and the view's name as the tag.
    pub(crate) fn operation(
        &self,
        verb: &str,
        path: &str,
        summary: &'static str,
        view: View,
    ) -> OperationBuilder {
        OperationBuilder::new()
            .operation_id(Some(self.operation_id.map_or_else(
                || format!("{verb}_{}", path_words(path)),
                str::to_owned,
            )))
            .summary(Some(self.summary.unwrap_or(summary)))
            .description(self.description)
            .tag(self.tag.unwrap_or(view.projection()))
    }
}

/// An operation id made of a path: `/accounts/{id}` → `accounts_id`.
pub(crate) fn path_words(path: &str) -> String {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches(|c| c == '{' || c == '}'))
        .collect::<Vec<_>>()
        .join("_")
}

/// The name of a path's one parameter (`/accounts/{id}` → `id`).
pub(crate) fn path_parameter(path: &str) -> Option<&str> {
    let start = path.find('{')?;
    let end = path[start..].find('}')? + start;
    Some(&path[start + 1..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_operations_and_parameter() {
        assert_eq!(path_words("/accounts/{id}"), "accounts_id");
        assert_eq!(path_words("/accounts"), "accounts");
        assert_eq!(path_parameter("/accounts/{id}"), Some("id"));
        assert_eq!(path_parameter("/accounts"), None);
    }
}
