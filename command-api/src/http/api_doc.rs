//! The OpenAPI document of the command API. The operations are described on
//! their handlers; the headers and answers every command shares are
//! described here, from the same constants the handlers use.

use std::collections::BTreeMap;

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{Header, Ref, RefOr, Required, Response};
use utoipa::{PartialSchema, ToSchema};

use crate::http::problem::{PROBLEM_CONTENT_TYPE, Problem, kind};
use crate::http::route::{BodySchema, CommandResponse, Route};
use crate::idempotency::IdempotencyKey;

/// What the document says of one declared route.
pub(crate) struct Described {
    pub route: Route,
    pub collection: &'static str,
    pub creates: bool,
    pub body: BodySchema,
}

/// The OpenAPI document of the declared routes.
pub(crate) fn document(title: &str, described: &[Described]) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathsBuilder};
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApiBuilder};

    let mut components = ComponentsBuilder::new()
        .schema(Problem::name(), Problem::schema())
        .schema(CommandResponse::name(), CommandResponse::schema());
    let mut paths = PathsBuilder::new();
    for d in described {
        for (name, schema) in &d.body.schemas {
            components = components.schema(name.clone(), schema.clone());
        }
        let route = &d.route;
        let tag = d.collection.trim_start_matches('/');
        let mut operation = OperationBuilder::new()
            .tag(tag)
            .summary(Some(route.summary))
            .description(route.description)
            .operation_id(Some(operation_id(route)));
        for name in route.parameters() {
            operation = operation.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(uuid()))
                    .description(Some(if name == "id" {
                        format!("The id of the aggregate in `{}`", d.collection)
                    } else {
                        format!("An id (`{name}`)")
                    })),
            );
        }
        for header in <CommandHeaders as utoipa::IntoParams>::into_params(|| None) {
            operation = operation.parameter(header);
        }
        let required = route.body == crate::http::request::BodyRule::Required;
        let body = RequestBodyBuilder::new()
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(&d.body.name)))
                    .build(),
            )
            .required(Some(if required {
                Required::True
            } else {
                Required::False
            }))
            .description(Some(if required {
                "JSON (`application/json` or `application/*+json`)"
            } else {
                "None, or JSON (`application/json` or `application/*+json`)"
            }))
            .build();
        operation = operation.request_body(Some(body));
        let mut responses = if d.creates {
            created(d.collection)
        } else {
            let mut r = <Applied as utoipa::IntoResponses>::responses();
            r.extend(<NotFound as utoipa::IntoResponses>::responses());
            r
        };
        responses.extend(<CommandProblems as utoipa::IntoResponses>::responses());
        if route.erases_personal_data {
            responses.insert(
                "501".to_owned(),
                problem(format!(
                    "`{}`: the event store keeps no personal-data keys.",
                    kind::NOT_IMPLEMENTED
                ))
                .build()
                .into(),
            );
        }
        for (status, response) in responses {
            operation = operation.response(status, response);
        }
        if route.deprecation.is_some() {
            operation = operation.deprecated(Some(utoipa::openapi::Deprecated::True));
        }
        let method = match route.method {
            axum::http::Method::PUT => HttpMethod::Put,
            axum::http::Method::PATCH => HttpMethod::Patch,
            axum::http::Method::DELETE => HttpMethod::Delete,
            _ => HttpMethod::Post,
        };
        paths = paths.path(
            route.path,
            utoipa::openapi::path::PathItem::new(method, operation),
        );
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title(title)
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Commands on the application's aggregates. Each is decided against the \
                     aggregate's events and appended to the event store; the answer carries the \
                     aggregate's new `version` (also the `ETag`) and the log `position` its last \
                     event has, which the query API reports once it has caught up. `If-Match` \
                     makes a command conditional, `Idempotency-Key` makes retries safe.",
                )),
        )
        .paths(paths)
        .components(Some(components.build()))
        .build()
}

/// A stable, unique id: the method and the path's words.
fn operation_id(route: &Route) -> String {
    let words: Vec<String> = route
        .path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_start_matches('{')
                .trim_end_matches('}')
                .replace(['-', '.'], "_")
        })
        .collect();
    format!(
        "{}_{}",
        route.method.as_str().to_lowercase(),
        words.join("_")
    )
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
fn created(collection: &str) -> BTreeMap<String, RefOr<Response>> {
    let response = success("Created")
        .header(
            "Location",
            header(
                string(),
                &format!("The new aggregate's path: `{collection}/{{id}}`."),
            ),
        )
        .build();
    BTreeMap::from([("201".to_owned(), response.into())])
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
                     `insufficient-funds`); `{}`: the `Idempotency-Key` was used for \
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
