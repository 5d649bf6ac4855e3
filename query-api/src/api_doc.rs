//! The OpenAPI document of the query API, generated from the declared
//! routes: their parameters, row schemas, page schemas and problems, from
//! the same constants the handlers check.

use projector::http::{Problem, problem_response, retry_after_header};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::schema::{
    ArrayBuilder, KnownFormat, ObjectBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HttpMethod, InfoBuilder, OpenApiBuilder, PathsBuilder, Ref,
    RefOr, Required, Responses,
};

use crate::cursor::CURSOR_BYTES_MAX;
use crate::route::QueryRoutes;
use crate::state::QueryConfig;

/// The OpenAPI document of the query API serving `routes`.
pub fn openapi(routes: &QueryRoutes) -> utoipa::openapi::OpenApi {
    let mut schemas: Vec<(String, RefOr<Schema>)> = Vec::new();
    let mut paths = PathsBuilder::new();
    for route in routes.iter() {
        let operation = route.operation(&mut schemas);
        paths = paths.path(route.path(), PathItem::new(HttpMethod::Get, operation));
    }
    let mut components = ComponentsBuilder::new().schema_from::<Problem>();
    for (name, schema) in schemas {
        components = components.schema(name, schema);
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("annals query API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The application's views as the projector keeps them. Every answer carries \
                     `Annals-Position`, the log position it reflects; a client sends the \
                     `position` a command returned as `min_position` (or \
                     `Annals-Min-Position`) to read its own writes. Lists are paged with an \
                     opaque `cursor`.",
                )),
        )
        .paths(paths.build())
        .components(Some(components.build()))
        .build()
}

/// Adds the schema of a row type and those it refers to.
pub(crate) fn add_schemas<R: utoipa::ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    let name = R::name().into_owned();
    if schemas.iter().any(|(n, _)| *n == name) {
        return;
    }
    schemas.push((name, R::schema()));
    R::schemas(schemas);
}

/// Adds the schema of a page of `row`s (`<row>Page`); its name.
pub(crate) fn add_page_schema(row: &str, schemas: &mut Vec<(String, RefOr<Schema>)>) -> String {
    let name = format!("{row}Page");
    if !schemas.iter().any(|(n, _)| *n == name) {
        let page = ObjectBuilder::new()
            .description(Some(format!("A page of {row} items.")))
            .property(
                "items",
                ArrayBuilder::new().items(Ref::from_schema_name(row)),
            )
            .required("items")
            .property(
                "next_cursor",
                ObjectBuilder::new()
                    .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                    .description(Some(
                        "Pass as `cursor` for the next page; null on the last page.",
                    )),
            )
            .required("next_cursor")
            .property(
                "position",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .description(Some(
                        "The log position the page reflects (also in `Annals-Position`).",
                    )),
            )
            .required("position");
        schemas.push((name.clone(), page.build().into()));
    }
    name
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

/// How an item route's path parameter is spelled.
pub(crate) enum PathSpelling {
    AnnalsId,
    Text(usize),
}

/// The path parameter of an item route.
pub(crate) fn path_param(name: &str, spelling: PathSpelling) -> Parameter {
    let (schema, description) = match spelling {
        PathSpelling::AnnalsId => (
            id_schema(),
            "The id, as the command API returned it: a UUID in lowercase hex with hyphens \
             (any other spelling is `400 invalid-id`).",
        ),
        PathSpelling::Text(chars_max) => (text(chars_max), "The item's key."),
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

/// Read your writes: `min_position` or `Annals-Min-Position`.
pub(crate) fn min_position_params() -> [Parameter; 2] {
    let position = || {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0))
    };
    [
        query_param(
            "min_position",
            position(),
            "Answer only once the view reflects this log position (the `position` a command \
             returned): the request waits a few seconds at most, then answers `503`. The \
             header `Annals-Min-Position` does the same; when both are given they must agree.",
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

/// `limit` and `cursor` of the lists.
pub(crate) fn page_params() -> [Parameter; 2] {
    let defaults = QueryConfig::default();
    [
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

/// The `Annals-Position` header of an answer.
fn position_header(description: &str) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0)),
        )
        .description(Some(description))
        .build()
}

/// A `200` with a JSON body of the schema `schema`.
fn ok(description: &str, schema: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(schema)))
                .build(),
        )
        .header(
            "Annals-Position",
            position_header("The log position the view reflects"),
        )
}

/// The problems every query can answer besides `404`.
fn read_problems(responses: ResponsesBuilder) -> ResponsesBuilder {
    responses
        .response(
            "400",
            problem_response(
                "`invalid-request`: an unknown, repeated or malformed parameter, a cursor of \
                 another query, or a malformed `Annals-Min-Position`; `invalid-id`: an id not \
                 in its one spelling.",
            )
            .build(),
        )
        .response(
            "500",
            problem_response("`internal`: the error is in the server's log.").build(),
        )
        .response(
            "503",
            problem_response(
                "`position-not-yet-visible`: the view did not reach `min_position` in time; \
                 `projection-failed`: the view is stopped by an event it cannot apply and will \
                 not reach it until an operator acts; `view-not-ready`: the view's tables are \
                 not created yet; `unavailable`: the view database cannot answer right now.",
            )
            .header("Retry-After", retry_after_header())
            .header(
                "Annals-Position",
                position_header(
                    "The log position the view is at (with `position-not-yet-visible` and \
                     `projection-failed`).",
                ),
            )
            .build(),
        )
}

/// The answers of an item route whose row schema is `row`.
pub(crate) fn item_responses(row: &str, noun: &str) -> Responses {
    let found = ok(&format!("The {noun}"), row).header(
        "ETag",
        HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some(
                "The version of the item, quoted (`\"3\"`), when it has one: send it as \
                 `If-Match` to a command",
            ))
            .build(),
    );
    let missing = problem_response(&format!(
        "`not-found`: no {noun} with this id in the view at the position in `Annals-Position`"
    ))
    .header(
        "Annals-Position",
        position_header("The log position the view reflects"),
    );
    read_problems(
        ResponsesBuilder::new()
            .response("200", found.build())
            .response("404", missing.build()),
    )
    .build()
}

/// The answers of a list route whose page schema is `page`.
pub(crate) fn list_responses(page: &str) -> Responses {
    read_problems(ResponsesBuilder::new().response("200", ok("A page", page).build())).build()
}
