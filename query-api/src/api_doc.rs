//! The OpenAPI document of the query API. The operations are described on
//! their handlers; the parameters and problems they share are described
//! here, from the same constants the handlers check.

use std::collections::BTreeMap;

use projector::http::{Problem, problem_response, retry_after_header};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Required, Response};

use crate::cursor::CURSOR_BYTES_MAX;
use crate::customers::{Customer, CustomerPage, OrderCounts};
use crate::orders::{Order, OrderPage};
use crate::{Money, QueryConfig};

#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(
        title = "annals query API",
        version = env!("CARGO_PKG_VERSION"),
        description = "Customers and orders as the projector's views show them. Every answer carries `Annals-Position`, the log position it reflects; a client sends the `position` a command returned as `min_position` (or `Annals-Min-Position`) to read its own writes. Lists are paged with an opaque `cursor`."
    ),
    paths(
        crate::customers::list,
        crate::customers::one,
        crate::orders::list,
        crate::orders::one
    ),
    components(schemas(Problem, Money, Customer, CustomerPage, OrderCounts, Order, OrderPage))
)]
struct QueryApi;

/// The OpenAPI document of the query API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <QueryApi as utoipa::OpenApi>::openapi()
}

/// An optional query parameter.
pub(crate) fn query_param(name: &str, schema: ObjectBuilder, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

/// An integer from `min` to `max`.
pub(crate) fn integer(min: i64, max: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min))
        .maximum(Some(max))
}

/// A text of 1 to `chars_max` characters.
pub(crate) fn text(chars_max: usize) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(chars_max))
}

/// An id: a UUID in its one spelling.
pub(crate) fn id_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
        .pattern(Some(http_edge::ids::ID_PATTERN))
}

/// The `Annals-Position` header of a `503` that waited for a position.
fn position_header() -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .description(Some(
            "The log position the view is at (with `position-not-yet-visible` and \
             `projection-failed`).",
        ))
        .build()
}

/// The `id` path parameter of a single item.
pub(crate) struct PathId;

impl utoipa::IntoParams for PathId {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(id_schema()))
                .description(Some(
                    "The id, as the command API returned it: a UUID in lowercase hex with \
                     hyphens (any other spelling is `400 invalid-id`).",
                ))
                .build(),
        ]
    }
}

/// Read your writes: `min_position` or `Annals-Min-Position`.
pub(crate) struct MinPosition;

impl utoipa::IntoParams for MinPosition {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let position = || {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(0))
        };
        vec![
            query_param(
                "min_position",
                position(),
                "Answer only once the view reflects this log position (the `position` a \
                 command returned): the request waits a few seconds at most, then answers \
                 `503`. The header `Annals-Min-Position` does the same; when both are \
                 given they must agree.",
            ),
            ParameterBuilder::new()
                .name("Annals-Min-Position")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .schema(Some(position()))
                .description(Some("Same as the `min_position` query parameter."))
                .build(),
        ]
    }
}

/// `limit` and `cursor` of the lists.
pub(crate) struct PageParams;

impl utoipa::IntoParams for PageParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let defaults = QueryConfig::default();
        vec![
            query_param(
                "limit",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .default(Some(defaults.page_size_default.into())),
                &format!(
                    "Items per page, from 1 to the server's maximum ({} unless configured \
                     otherwise).",
                    defaults.page_size_max
                ),
            ),
            query_param(
                "cursor",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(CURSOR_BYTES_MAX)),
                "The `next_cursor` of the previous page, unchanged, with the same filters.",
            ),
        ]
    }
}

/// The problems every query can answer besides `404`.
pub(crate) struct ReadProblems;

impl utoipa::IntoResponses for ReadProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [
            (
                "400",
                problem_response(
                    "`invalid-request`: an unknown, repeated or malformed parameter, a cursor \
                     of another query, or a malformed `Annals-Min-Position`.",
                )
                .build(),
            ),
            (
                "500",
                problem_response("`internal`: the error is in the server's log.").build(),
            ),
            (
                "503",
                problem_response(
                    "`position-not-yet-visible`: the view did not reach `min_position` in \
                     time; `projection-failed`: the view is stopped by an event it cannot \
                     apply and will not reach it until an operator acts; `unavailable`: the \
                     view database cannot answer right now.",
                )
                .header("Retry-After", retry_after_header())
                .header("Annals-Position", position_header())
                .build(),
            ),
        ]
        .into_iter()
        .map(|(status, response)| (status.to_owned(), response.into()))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use axum::routing::MethodFilter;
    use serde_json::Value;

    use super::*;

    fn method_name(method: MethodFilter) -> &'static str {
        [
            (MethodFilter::GET, "get"),
            (MethodFilter::POST, "post"),
            (MethodFilter::PUT, "put"),
            (MethodFilter::DELETE, "delete"),
            (MethodFilter::PATCH, "patch"),
        ]
        .into_iter()
        .find(|(m, _)| *m == method)
        .map(|(_, name)| name)
        .expect("a method the table uses")
    }

    fn document() -> Value {
        serde_json::to_value(openapi()).expect("the document serializes")
    }

    /// Every operation of the document, with its response statuses.
    fn operations(doc: &Value) -> BTreeMap<(String, String), BTreeSet<String>> {
        const METHODS: [&str; 8] = [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ];
        let mut operations = BTreeMap::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("a path item") {
                assert!(METHODS.contains(&method.as_str()), "{path}: {method}");
                let statuses = operation["responses"]
                    .as_object()
                    .expect("responses")
                    .keys()
                    .cloned()
                    .collect();
                operations.insert((method.clone(), path.clone()), statuses);
            }
        }
        operations
    }

    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(r)) => found.push(r),
                        _ => refs(v, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }

    fn parameters(doc: &Value, method: &str, path: &str) -> BTreeSet<(String, String)> {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["in"].as_str().expect("in").to_owned(),
                    p["name"].as_str().expect("name").to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn the_document_describes_exactly_the_routes_served() {
        let served: BTreeSet<(String, String)> = crate::endpoints()
            .iter()
            .map(|(method, path, _)| (method_name(*method).to_owned(), (*path).to_owned()))
            .collect();
        let documented: BTreeSet<_> = operations(&document()).into_keys().collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn every_operation_lists_its_statuses_with_problem_documents() {
        let list: &[&str] = &["200", "400", "500", "503"];
        let one: &[&str] = &["200", "400", "404", "500", "503"];
        let expected = [
            ("/customers", list),
            ("/customers/{id}", one),
            ("/orders", list),
            ("/orders/{id}", one),
        ];
        let doc = document();
        let operations = operations(&doc);
        for (path, statuses) in expected {
            let listed = &operations[&("get".to_owned(), path.to_owned())];
            let statuses: BTreeSet<String> = statuses.iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(listed, &statuses, "{path}");
            let responses = &doc["paths"][path]["get"]["responses"];
            for status in statuses.iter().filter(|s| !s.starts_with('2')) {
                assert_eq!(
                    responses[status]["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{path} {status}"
                );
            }
            assert!(
                responses["200"]["headers"]["Annals-Position"].is_object(),
                "{path}"
            );
            assert!(
                responses["503"]["headers"]["Retry-After"].is_object(),
                "{path}"
            );
            if path.ends_with("{id}") {
                assert!(responses["200"]["headers"]["ETag"].is_object(), "{path}");
            }
        }
    }

    #[test]
    fn every_parameter_a_handler_accepts_is_documented() {
        let doc = document();
        let read_your_writes = [("query", "min_position"), ("header", "Annals-Min-Position")];
        let expected: [(&str, &[(&str, &str)]); 4] = [
            (
                "/customers",
                &[
                    ("query", "credit_available"),
                    ("query", "name_prefix"),
                    ("query", "limit"),
                    ("query", "cursor"),
                ],
            ),
            ("/customers/{id}", &[("path", "id")]),
            (
                "/orders",
                &[
                    ("query", "customer_id"),
                    ("query", "status"),
                    ("query", "limit"),
                    ("query", "cursor"),
                ],
            ),
            ("/orders/{id}", &[("path", "id")]),
        ];
        for (path, own) in expected {
            let expected: BTreeSet<(String, String)> = own
                .iter()
                .chain(&read_your_writes)
                .map(|(place, name)| ((*place).to_owned(), (*name).to_owned()))
                .collect();
            assert_eq!(parameters(&doc, "get", path), expected, "{path}");
        }
        let status = doc["paths"]["/orders"]["get"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == "status")
            .expect("status");
        assert_eq!(
            status["schema"]["enum"],
            serde_json::json!(projector::reference::ORDER_STATUSES)
        );
    }

    #[test]
    fn every_operation_has_a_summary_and_its_own_id() {
        let doc = document();
        let mut ids = BTreeSet::new();
        for item in doc["paths"].as_object().expect("paths").values() {
            for operation in item.as_object().expect("a path item").values() {
                assert!(operation["summary"].is_string(), "{operation}");
                let id = operation["operationId"].as_str().expect("an operation id");
                assert!(ids.insert(id.to_owned()), "{id} is used twice");
            }
        }
    }

    #[test]
    fn every_schema_referenced_is_defined() {
        let doc = document();
        let schemas = doc["components"]["schemas"]
            .as_object()
            .expect("component schemas");
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} is not a component schema"));
            assert!(schemas.contains_key(name), "{r} is not defined");
        }
        assert_eq!(
            schemas["Money"]["properties"]["amount"]["maximum"],
            crate::customers::AMOUNT_MAX
        );
        assert_eq!(schemas["Money"]["additionalProperties"], false);
    }

    #[test]
    fn the_document_names_the_api_and_its_version() {
        let doc = document();
        assert_eq!(doc["info"]["title"], "annals query API");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }
}
