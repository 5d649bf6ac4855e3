//! The OpenAPI document of the command API. The operations are described on
//! their handlers; the headers and answers every command shares are
//! described here, from the same constants the handlers use.

use std::collections::BTreeMap;

use utoipa::ToSchema;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{Header, Ref, RefOr, Required, Response};

use crate::http::problem::{PROBLEM_CONTENT_TYPE, Problem, kind};
use crate::http::routes::{
    self, CancelBody, CommandResponse, CreditLimitBody, MoneyBody, NoFields, OrderLineBody,
    PlaceOrderBody, RegisterCustomerBody, RejectBody, ReserveCreditBody,
};
use crate::idempotency::IdempotencyKey;

#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(
        title = "annals command API",
        version = env!("CARGO_PKG_VERSION"),
        description = "Commands on customers and orders. Each is decided against the aggregate's events and appended to the event store; the answer carries the aggregate's new `version` (also the `ETag`) and the log `position` its last event has, which the query API reports once it has caught up. `If-Match` makes a command conditional, `Idempotency-Key` makes retries safe. Money is `{\"amount\": <integer minor units>, \"currency\": \"EUR\"}`."
    ),
    paths(
        routes::register_customer,
        routes::change_credit_limit,
        routes::reserve_credit,
        routes::release_credit,
        routes::erase_personal_data,
        routes::forget_customer,
        routes::place_order,
        routes::approve_order,
        routes::reject_order,
        routes::cancel_order
    ),
    components(schemas(
        Problem,
        CommandResponse,
        MoneyBody,
        RegisterCustomerBody,
        CreditLimitBody,
        ReserveCreditBody,
        NoFields,
        OrderLineBody,
        PlaceOrderBody,
        RejectBody,
        CancelBody
    ))
)]
struct CommandApi;

/// The OpenAPI document of the command API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    <CommandApi as utoipa::OpenApi>::openapi()
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn uuid() -> ObjectBuilder {
    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
}

fn header(schema: ObjectBuilder, description: &str) -> Header {
    HeaderBuilder::new()
        .schema(schema)
        .description(Some(description))
        .build()
}

fn request_header(name: &str, schema: ObjectBuilder, description: String) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

/// The headers every command accepts.
pub(crate) struct CommandHeaders;

impl utoipa::IntoParams for CommandHeaders {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            request_header(
                "If-Match",
                string().pattern(Some("^\"[0-9]+\"$")),
                "Run the command only on this version of the aggregate, as an `ETag` \
                 gave it (`\"3\"`); on any other it is refused with `412`."
                    .into(),
            ),
            request_header(
                "Idempotency-Key",
                string()
                    .min_length(Some(1))
                    .max_length(Some(IdempotencyKey::BYTES_MAX))
                    .pattern(Some("^[!-~]+$")),
                format!(
                    "Makes retries safe: a retry with the same key and request gets the \
                     first answer again (with `Idempotent-Replayed: true`) without running \
                     the command again, also after a restart. The same key with another \
                     method, path or body is `422`. Only successes are recorded, so a \
                     refused command can be retried with its key. 1 to {} printable ASCII \
                     characters.",
                    IdempotencyKey::BYTES_MAX
                ),
            ),
            request_header(
                "X-Correlation-Id",
                uuid(),
                "The conversation the command belongs to, stored in the metadata of its \
                 events and echoed; the command's own id when absent."
                    .into(),
            ),
        ]
    }
}

/// The answer of a command that changed an existing aggregate (or found
/// nothing to change).
fn success(description: &str) -> ResponseBuilder {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(CommandResponse::name())))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .header(
            "ETag",
            header(
                string(),
                "The aggregate's version after the command, quoted (`\"3\"`): what to \
                 send as `If-Match` next.",
            ),
        )
        .header(
            "X-Correlation-Id",
            header(uuid(), "The conversation's id, as given or generated."),
        )
        .header(
            "X-Command-Id",
            header(
                uuid(),
                "The id of the command, stored in its events (of the first request, for \
                 a replay).",
            ),
        )
        .header(
            "Idempotent-Replayed",
            header(
                string().enum_values(Some(["true"])),
                "`true` when this is the recorded answer to an earlier request with the \
                 same `Idempotency-Key`.",
            ),
        )
}

/// `201` for commands that create their aggregate.
pub(crate) struct Created;

impl utoipa::IntoResponses for Created {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let response = success("Created")
            .header(
                "Location",
                header(
                    string(),
                    "The new aggregate's path: `/customers/{id}` or `/orders/{id}`.",
                ),
            )
            .build();
        BTreeMap::from([("201".to_owned(), response.into())])
    }
}

/// `200` for commands on an existing aggregate.
pub(crate) struct Applied;

impl utoipa::IntoResponses for Applied {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        BTreeMap::from([(
            "200".to_owned(),
            success("Applied (or nothing to change)").build().into(),
        )])
    }
}

fn problem(description: String) -> ResponseBuilder {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(Problem::name())))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content(PROBLEM_CONTENT_TYPE, content)
}

fn retry_after() -> Header {
    header(
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0)),
        "Seconds to wait before trying again.",
    )
}

/// `404` for commands on an aggregate that must exist.
pub(crate) struct NotFound;

impl utoipa::IntoResponses for NotFound {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let response = problem(format!("`{}`: no such aggregate.", kind::NOT_FOUND));
        BTreeMap::from([("404".to_owned(), response.build().into())])
    }
}

/// The problems every command can answer.
pub(crate) struct CommandProblems;

impl utoipa::IntoResponses for CommandProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        [
            (
                "400",
                problem(format!(
                    "`{}`: the body is not the JSON expected (with `line` and `column`); \
                     `{}`: fields break their rules, each listed in `errors` with a JSON \
                     `pointer` and a `detail`; `{}`: a malformed `If-Match`, \
                     `Idempotency-Key` or `X-Correlation-Id` (named in `header`); `{}`: an \
                     id in the path is not a UUID.",
                    kind::MALFORMED_REQUEST,
                    kind::INVALID_FIELDS,
                    kind::INVALID_HEADER,
                    kind::INVALID_ID,
                )),
            ),
            (
                "409",
                problem(format!(
                    "`{}`: the aggregate changed concurrently on every attempt, nothing was \
                     written and the command can be retried; `{}`: a request with this \
                     `Idempotency-Key` is still in progress.",
                    kind::CONCURRENCY_CONFLICT,
                    kind::IDEMPOTENCY_KEY_IN_FLIGHT,
                ))
                .header("Retry-After", retry_after()),
            ),
            (
                "412",
                problem(format!(
                    "`{}`: the aggregate is not at the version in `If-Match`; \
                     `expected_version` and `current_version` say which versions differ.",
                    kind::PRECONDITION_FAILED,
                ))
                .header(
                    "ETag",
                    header(string(), "The aggregate's current version, quoted."),
                ),
            ),
            (
                "413",
                problem(format!(
                    "`{}`: the body is over the size limit.",
                    kind::BODY_TOO_LARGE
                )),
            ),
            (
                "415",
                problem(format!(
                    "`{}`: a body sent without a JSON `Content-Type`.",
                    kind::UNSUPPORTED_MEDIA_TYPE
                )),
            ),
            (
                "422",
                problem(format!(
                    "`{}`: the command breaks a rule of the domain, named in `rule` (e.g. \
                     `credit-limit-exceeded`); `{}`: the `Idempotency-Key` was used for \
                     another request.",
                    kind::BUSINESS_RULE_VIOLATED,
                    kind::IDEMPOTENCY_KEY_REUSED,
                )),
            ),
            (
                "500",
                problem(format!(
                    "`{}`: the server failed; retry with the same `Idempotency-Key` to learn \
                     whether the command was applied; `{}`: the aggregate's personal data \
                     cannot be decrypted because its key is missing or damaged (not erased), \
                     nothing was written; `{}`: an event of the aggregate's history cannot be \
                     brought to its current schema version (`event_type` and `version` say \
                     which), nothing was written; `{}`: the aggregate's events are damaged in \
                     the event log (`file` and `offset` say where), nothing was written.",
                    kind::INTERNAL,
                    kind::PERSONAL_DATA_UNREADABLE,
                    kind::UPCAST,
                    kind::DATA_DAMAGED,
                )),
            ),
            (
                "503",
                problem(format!(
                    "`{}`: the event store cannot take commands (`detail` says why: read-only \
                     after damage, stopped after a failed write such as a full disk, \
                     unreachable), nothing was written; `{}`: the store failed while \
                     committing the command, which may or may not have been applied (retry \
                     with the same `Idempotency-Key` to find out); `{}`: \
                     too many requests in progress; `{}`: the command did not finish in time \
                     and may or may not have been applied (retry with the same \
                     `Idempotency-Key` to find out).",
                    kind::STORE_UNAVAILABLE,
                    kind::OUTCOME_UNKNOWN,
                    kind::OVERLOADED,
                    kind::TIMEOUT,
                ))
                .header("Retry-After", retry_after()),
            ),
        ]
        .into_iter()
        .map(|(status, response)| (status.to_owned(), response.build().into()))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use axum::routing::MethodFilter;
    use serde_json::{Value, json};

    use super::*;
    use crate::domain::money::AMOUNT_MAX;
    use crate::domain::order::{OrderItems, Sku};

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

    #[test]
    fn the_document_describes_exactly_the_routes_served() {
        let served: BTreeSet<(String, String)> = crate::http::endpoints()
            .iter()
            .map(|(method, path, _)| (method_name(*method).to_owned(), (*path).to_owned()))
            .collect();
        let documented: BTreeSet<_> = operations(&document()).into_keys().collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn every_operation_lists_its_statuses_headers_and_body() {
        let problems = ["400", "409", "412", "413", "415", "422", "500", "503"];
        let creating = ["/customers", "/orders"];
        let optional_body = [
            "/customers/{id}/reservations/{order_id}/release",
            "/customers/{id}/personal-data",
            "/customers/{id}/forget",
            "/orders/{id}/approve",
            "/orders/{id}/cancel",
        ];
        let doc = document();
        for ((method, path), listed) in operations(&doc) {
            let operation = &doc["paths"][&path][&method];
            let creates = creating.contains(&path.as_str());
            let mut expected: BTreeSet<String> = problems.iter().map(|s| (*s).to_owned()).collect();
            expected.insert(if creates { "201" } else { "200" }.to_owned());
            if !creates {
                expected.insert("404".to_owned());
            }
            if ["/customers/{id}/personal-data", "/customers/{id}/forget"].contains(&path.as_str())
            {
                // A store without personal-data keys cannot forget.
                expected.insert("501".to_owned());
            }
            assert_eq!(listed, expected, "{path}");

            for status in listed.iter().filter(|s| !s.starts_with('2')) {
                assert_eq!(
                    operation["responses"][status]["content"][PROBLEM_CONTENT_TYPE]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{path} {status}"
                );
            }
            let success = &operation["responses"][if creates { "201" } else { "200" }];
            assert_eq!(
                success["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/CommandResponse",
                "{path}"
            );
            for name in [
                "ETag",
                "X-Correlation-Id",
                "X-Command-Id",
                "Idempotent-Replayed",
            ] {
                assert!(success["headers"][name].is_object(), "{path}: {name}");
            }
            assert_eq!(
                success["headers"]["Location"].is_object(),
                creates,
                "{path}"
            );
            for (status, name) in [
                ("409", "Retry-After"),
                ("412", "ETag"),
                ("503", "Retry-After"),
            ] {
                assert!(
                    operation["responses"][status]["headers"][name].is_object(),
                    "{path} {status}: {name}"
                );
            }

            let headers: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .filter(|p| p["in"] == "header")
                .map(|p| p["name"].as_str().expect("name"))
                .collect();
            assert_eq!(
                headers,
                BTreeSet::from(["If-Match", "Idempotency-Key", "X-Correlation-Id"]),
                "{path}"
            );
            let path_params: BTreeSet<String> = operation["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| format!("{{{}}}", p["name"].as_str().expect("name")))
                .collect();
            let in_path: BTreeSet<String> = path
                .split('/')
                .filter(|segment| segment.starts_with('{'))
                .map(str::to_owned)
                .collect();
            assert_eq!(path_params, in_path, "{path}");
            let body = &operation["requestBody"];
            assert!(
                body["content"]["application/json"]["schema"]["$ref"].is_string(),
                "{path}"
            );
            assert_eq!(
                body["required"] == true,
                !optional_body.contains(&path.as_str()),
                "{path}"
            );
        }
    }

    #[test]
    fn the_older_erasure_route_is_documented_as_a_deprecated_alias() {
        let doc = document();
        let erase = &doc["paths"]["/customers/{id}/personal-data"]["delete"];
        let alias = &doc["paths"]["/customers/{id}/forget"]["post"];
        assert_ne!(erase["deprecated"], true, "{erase}");
        assert_eq!(alias["deprecated"], true, "{alias}");
        let summary = alias["summary"].as_str().expect("a summary");
        assert!(
            summary.contains("DELETE /customers/{id}/personal-data"),
            "{summary}"
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
    }

    #[test]
    fn the_schemas_state_the_limits_the_parsers_apply() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["Money"]["properties"]["amount"]["maximum"],
            json!(AMOUNT_MAX)
        );
        let line = &schemas["OrderLine"]["properties"];
        assert_eq!(line["quantity"]["maximum"], json!(OrderItems::QUANTITY_MAX));
        assert_eq!(line["sku"]["maxLength"], json!(Sku::BYTES_MAX));
        let lines = &schemas["PlaceOrder"]["properties"]["lines"];
        assert_eq!(lines["maxItems"], json!(OrderItems::LINES_MAX), "{lines}");
        for body in [
            "RegisterCustomer",
            "PlaceOrder",
            "ReserveCredit",
            "NoFields",
        ] {
            assert_eq!(
                schemas[body]["additionalProperties"],
                json!(false),
                "{body}"
            );
        }
    }

    #[test]
    fn the_document_names_the_api_and_its_version() {
        let doc = document();
        assert_eq!(doc["info"]["title"], "annals command API");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }
}
