//! Reading a surface's OpenAPI document (as JSON) for what every surface's
//! tests check against the router that serves it: which operations it
//! documents, with which statuses, and whether its operations and schema
//! references hold together.
//!
//! Nothing here panics: each function answers what it found, or what is
//! wrong, and the test asserts on that.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The operations of a document: `(method, path)` (the method lowercase,
/// as the document spells it) with the statuses its responses list.
pub type Operations = BTreeMap<(String, String), BTreeSet<String>>;

/// The keys of a path item that are operations.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Where references to the document's own schemas point.
const SCHEMA_REF_PREFIX: &str = "#/components/schemas/";

/// Every operation of `doc`, with its response statuses; `Err` names what
/// is not shaped as an OpenAPI document's paths are (a path item key that
/// is not a method, an operation without responses).
pub fn operations(doc: &Value) -> Result<Operations, String> {
    let paths = doc["paths"]
        .as_object()
        .ok_or("the document has no paths object")?;
    let mut operations = BTreeMap::new();
    for (path, item) in paths {
        let item = item
            .as_object()
            .ok_or_else(|| format!("{path}: the path item is not an object"))?;
        for (method, operation) in item {
            if !METHODS.contains(&method.as_str()) {
                return Err(format!("{path}: {method} is not an HTTP method"));
            }
            let statuses = operation["responses"]
                .as_object()
                .ok_or_else(|| format!("{method} {path}: no responses object"))?
                .keys()
                .cloned()
                .collect();
            operations.insert((method.clone(), path.clone()), statuses);
        }
    }
    Ok(operations)
}

/// Every `$ref` anywhere in `value`, in document order.
pub fn refs(value: &Value) -> Vec<&str> {
    let mut found = Vec::new();
    collect_refs(value, &mut found);
    found
}

fn collect_refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => found.push(r),
                    _ => collect_refs(v, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, found)),
        _ => {}
    }
}

/// The references of `doc` that do not name one of its component schemas
/// (a reference elsewhere than to a component schema counts): empty when
/// every schema referenced is defined.
pub fn undefined_refs(doc: &Value) -> Vec<String> {
    let schemas = doc["components"]["schemas"].as_object();
    refs(doc)
        .into_iter()
        .filter_map(|r| match r.strip_prefix(SCHEMA_REF_PREFIX) {
            None => Some(format!("{r} is not a component schema")),
            Some(name) if !schemas.is_some_and(|s| s.contains_key(name)) => {
                Some(format!("{r} is not defined"))
            }
            Some(_) => None,
        })
        .collect()
}

/// Operations of `doc` without a summary, without an operation id, or with
/// one another operation has too: empty when every operation has a summary
/// and its own id.
pub fn unnamed_operations(doc: &Value) -> Vec<String> {
    let mut defects = Vec::new();
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        let Some(item) = item.as_object() else {
            defects.push(format!("{path}: the path item is not an object"));
            continue;
        };
        for (method, operation) in item {
            if !operation["summary"].is_string() {
                defects.push(format!("{method} {path} has no summary"));
            }
            match operation["operationId"].as_str() {
                None => defects.push(format!("{method} {path} has no operation id")),
                Some(id) if !ids.insert(id) => defects.push(format!("{id} is used twice")),
                Some(_) => {}
            }
        }
    }
    defects
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc() -> Value {
        json!({
            "paths": {
                "/a/{id}": {
                    "get": {
                        "summary": "Read an a",
                        "operationId": "get_a",
                        "responses": {
                            "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}},
                            "404": {}
                        }
                    },
                    "post": {
                        "operationId": "get_a",
                        "responses": {"200": {"$ref": "#/components/schemas/B"}}
                    }
                }
            },
            "components": {"schemas": {"A": {}}}
        })
    }

    #[test]
    fn operations_are_listed_with_their_statuses() {
        let operations = operations(&doc()).unwrap();
        let keys: Vec<_> = operations.keys().cloned().collect();
        assert_eq!(
            keys,
            [
                ("get".to_owned(), "/a/{id}".to_owned()),
                ("post".to_owned(), "/a/{id}".to_owned())
            ]
        );
        assert_eq!(
            operations[&("get".to_owned(), "/a/{id}".to_owned())],
            BTreeSet::from(["200".to_owned(), "404".to_owned()])
        );
    }

    #[test]
    fn a_path_item_key_that_is_no_method_is_an_error() {
        let doc = json!({"paths": {"/a": {"fetch": {"responses": {}}}}});
        assert_eq!(
            operations(&doc).unwrap_err(),
            "/a: fetch is not an HTTP method"
        );
        assert!(operations(&json!({})).is_err());
    }

    #[test]
    fn references_to_missing_schemas_are_found() {
        let doc = doc();
        assert_eq!(
            refs(&doc),
            ["#/components/schemas/A", "#/components/schemas/B"]
        );
        assert_eq!(
            undefined_refs(&doc),
            ["#/components/schemas/B is not defined"]
        );
        let elsewhere = json!({"a": {"$ref": "#/definitions/A"}});
        assert_eq!(
            undefined_refs(&elsewhere),
            ["#/definitions/A is not a component schema"]
        );
    }

    #[test]
    fn operations_without_a_summary_or_their_own_id_are_found() {
        assert_eq!(
            unnamed_operations(&doc()),
            ["post /a/{id} has no summary", "get_a is used twice"]
        );
    }
}
