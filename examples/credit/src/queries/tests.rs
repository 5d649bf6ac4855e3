//! The OpenAPI document of the reference routes, as generated from their
//! declarations.

use std::collections::BTreeSet;

use http_edge::openapi;
use serde_json::Value;

fn document() -> Value {
    serde_json::to_value(query_api::openapi(&super::routes())).expect("the document serializes")
}

/// Every operation of the document, with its response statuses.
fn operations(doc: &Value) -> openapi::Operations {
    openapi::operations(doc).expect("an OpenAPI document's paths")
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
    let served: BTreeSet<(String, String)> = super::routes()
        .paths()
        .into_iter()
        .map(|path| ("get".to_owned(), path.to_owned()))
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
        serde_json::json!(crate::views::ORDER_STATUSES)
    );
}

#[test]
fn every_operation_has_a_summary_and_its_own_id() {
    let doc = document();
    assert!(!operations(&doc).is_empty());
    assert_eq!(openapi::unnamed_operations(&doc), Vec::<String>::new());
}

#[test]
fn every_schema_referenced_is_defined() {
    let doc = document();
    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("component schemas");
    assert!(!openapi::refs(&doc).is_empty());
    assert_eq!(openapi::undefined_refs(&doc), Vec::<String>::new());
    assert_eq!(
        schemas["Money"]["properties"]["amount"]["maximum"],
        super::customers::AMOUNT_MAX
    );
    assert_eq!(schemas["Money"]["additionalProperties"], false);
}

#[test]
fn the_document_names_the_api_and_its_version() {
    let doc = document();
    assert_eq!(doc["info"]["title"], "annals query API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
}
