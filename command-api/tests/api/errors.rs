//! Every kind of bad request, through the router in-process: each gets the
//! right status and problem document, and none writes anything.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use command_api::ApiConfig;
use event_store::Position;
use serde_json::json;
use uuid::Uuid;

use crate::harness::{Fixture, eur, register_body};
use crate::meddling::Meddling;

async fn registered(f: &Fixture, limit: i64) -> Uuid {
    let reply = f.post("/customers", &register_body(limit), &[]).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.id()
}

#[tokio::test]
async fn malformed_json_is_400_and_writes_nothing() {
    let f = Fixture::new().await;
    for body in [
        "{",
        "[]",
        "null",
        r#"{"name": "Ada", "email": "a@b.co"}"#,
        r#"{"name": "Ada", "email": "a@b.co", "credit_limit": {"amount": 12.5, "currency": "EUR"}}"#,
        r#"{"name": "Ada", "email": "a@b.co", "credit_limit": {"amount": "12", "currency": "EUR"}}"#,
        r#"{"name": "Ada", "email": "a@b.co", "credit_limit": {"amount": 99999999999999999999, "currency": "EUR"}}"#,
        r#"{"name": "Ada", "email": "a@b.co", "credit_limit": {"amount": 1, "currency": "EUR"}, "vip": true}"#,
    ] {
        let reply = f
            .post_raw("/customers", "application/json", body, &[])
            .await;
        reply.assert_problem(400, "malformed-request");
        assert!(reply.body["line"].is_u64(), "{}", reply.text);
    }
    assert_eq!(f.head().await, Position::ZERO);
}

#[tokio::test]
async fn every_invalid_field_is_reported_with_a_pointer() {
    let f = Fixture::new().await;
    let reply = f
        .post(
            "/customers",
            &json!({
                "customer_id": "not-a-uuid",
                "name": "   ",
                "email": "ada@",
                "credit_limit": {"amount": -1, "currency": "EUR"},
            }),
            &[],
        )
        .await;
    reply.assert_problem(400, "invalid-fields");
    let pointers: Vec<&str> = reply.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        ["/customer_id", "/name", "/email", "/credit_limit/amount"]
    );

    let currency = f
        .post(
            "/customers",
            &json!({"name": "Ada", "email": "ada@example.com",
                    "credit_limit": {"amount": 1, "currency": "XYZ"}}),
            &[],
        )
        .await;
    currency.assert_problem(400, "invalid-fields");
    assert_eq!(
        currency.body["errors"][0]["pointer"],
        "/credit_limit/currency"
    );
    assert_eq!(f.head().await, Position::ZERO);
}

#[tokio::test]
async fn amounts_are_checked_at_both_ends() {
    let f = Fixture::new().await;
    let max = annals_credit::domain::money::AMOUNT_MAX;
    let at_max = f.post("/customers", &register_body(max), &[]).await;
    assert_eq!(at_max.status, 201, "{}", at_max.text);
    let over = f.post("/customers", &register_body(max + 1), &[]).await;
    over.assert_problem(400, "invalid-fields");
    assert_eq!(over.body["errors"][0]["pointer"], "/credit_limit/amount");
    let zero_limit = f.post("/customers", &register_body(0), &[]).await;
    assert_eq!(zero_limit.status, 201, "a zero credit limit is allowed");

    let customer = at_max.id();
    let reserve =
        |amount: i64| json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(amount)});
    let path = format!("/customers/{customer}/reservations");
    for amount in [0, -5] {
        let reply = f.post(&path, &reserve(amount), &[]).await;
        reply.assert_problem(400, "invalid-fields");
        assert_eq!(reply.body["errors"][0]["pointer"], "/amount/amount");
    }
    assert_eq!(f.post(&path, &reserve(1), &[]).await.status, 200);
}

#[tokio::test]
async fn ids_in_the_path_must_be_uuids() {
    let f = Fixture::new().await;
    let reply = f
        .post(
            "/customers/42/credit-limit",
            &json!({"credit_limit": eur(5)}),
            &[],
        )
        .await;
    reply.assert_problem(400, "invalid-id");
    assert_eq!(reply.body["parameter"], "id");
    let customer = Uuid::new_v4();
    let release = f
        .post_raw(
            &format!("/customers/{customer}/reservations/nope/release"),
            "",
            "",
            &[],
        )
        .await;
    release.assert_problem(400, "invalid-id");
    assert_eq!(release.body["parameter"], "order_id");
}

#[tokio::test]
async fn bodies_must_be_declared_json() {
    let f = Fixture::new().await;
    let body = register_body(100).to_string();
    let wrong = f
        .post_raw("/customers", "text/plain", body.clone(), &[])
        .await;
    wrong.assert_problem(415, "unsupported-media-type");
    let missing = f.post_raw("/customers", "", body.clone(), &[]).await;
    missing.assert_problem(415, "unsupported-media-type");
    let charset = f
        .post_raw("/customers", "application/json; charset=utf-8", body, &[])
        .await;
    assert_eq!(charset.status, 201, "{}", charset.text);
    let empty = f.post_raw("/customers", "", "", &[]).await;
    empty.assert_problem(400, "malformed-request");
}

#[tokio::test]
async fn the_body_limit_holds_on_both_sides() {
    let limit = 1024;
    let f = Fixture::with_config(ApiConfig {
        body_bytes_max: limit,
        ..ApiConfig::default()
    })
    .await;
    // Valid JSON padded with spaces to an exact size.
    let padded = |size: usize| {
        let json = register_body(100).to_string();
        format!("{json}{}", " ".repeat(size - json.len()))
    };
    let at_limit = f
        .post_raw("/customers", "application/json", padded(limit), &[])
        .await;
    assert_eq!(at_limit.status, 201, "{}", at_limit.text);
    let over = f
        .post_raw("/customers", "application/json", padded(limit + 1), &[])
        .await;
    over.assert_problem(413, "body-too-large");

    // Without Content-Length (a streamed body), the limit still holds.
    let chunks: Vec<Result<String, std::io::Error>> =
        vec![Ok(padded(limit + 1)[..600].to_owned()), Ok(" ".repeat(600))];
    let streamed = Body::from_stream(futures_util::stream::iter(chunks));
    let request = Request::post("/customers")
        .header("content-type", "application/json")
        .body(streamed)
        .unwrap();
    f.send(request).await.assert_problem(413, "body-too-large");
    assert_eq!(f.head().await, Position(1));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems_too() {
    let f = Fixture::new().await;
    let nowhere = f.post("/invoices", &json!({}), &[]).await;
    nowhere.assert_problem(404, "route-not-found");
    let get = f
        .send(Request::get("/customers").body(Body::empty()).unwrap())
        .await;
    get.assert_problem(405, "method-not-allowed");
    assert!(get.header("allow").is_some_and(|a| a.contains("POST")));
}

#[tokio::test]
async fn commands_on_unknown_aggregates_are_404() {
    let f = Fixture::new().await;
    let customer = Uuid::new_v4();
    let reply = f
        .post(
            &format!("/customers/{customer}/credit-limit"),
            &json!({"credit_limit": eur(5)}),
            &[],
        )
        .await;
    reply.assert_problem(404, "not-found");
    assert!(reply.text.contains(&customer.to_string()));
    let order = Uuid::new_v4();
    let approve = f
        .post_raw(&format!("/orders/{order}/approve"), "", "", &[])
        .await;
    approve.assert_problem(404, "not-found");
    assert_eq!(f.head().await, Position::ZERO);
}

#[tokio::test]
async fn broken_rules_are_422_naming_the_rule() {
    let f = Fixture::new().await;
    let customer = registered(&f, 100).await;
    let head = f.head().await;
    let reply = f
        .post(
            &format!("/customers/{customer}/reservations"),
            &json!({"order_id": Uuid::new_v4().to_string(), "amount": eur(101)}),
            &[],
        )
        .await;
    reply.assert_problem(422, "business-rule-violated");
    assert_eq!(reply.body["rule"], "credit-limit-exceeded");
    assert_eq!(reply.body["credit_limit"], eur(100));
    assert_eq!(reply.body["requested"], eur(101));
    let again = f
        .post(
            "/customers",
            &json!({"customer_id": customer.to_string(), "name": "Ada",
                    "email": "ada@example.com", "credit_limit": eur(1)}),
            &[],
        )
        .await;
    again.assert_problem(422, "business-rule-violated");
    assert_eq!(again.body["rule"], "customer-already-registered");
    let currency = f
        .post(
            &format!("/customers/{customer}/credit-limit"),
            &json!({"credit_limit": {"amount": 5, "currency": "USD"}}),
            &[],
        )
        .await;
    assert_eq!(currency.body["rule"], "currency-mismatch");
    assert_eq!(f.head().await, head);
}

#[tokio::test]
async fn a_stale_if_match_is_412_with_both_versions() {
    let f = Fixture::new().await;
    let customer = registered(&f, 100).await;
    let path = format!("/customers/{customer}/credit-limit");
    let first = f
        .post(
            &path,
            &json!({"credit_limit": eur(200)}),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.header("etag"), Some("\"2\""));
    let head = f.head().await;
    let stale = f
        .post(
            &path,
            &json!({"credit_limit": eur(300)}),
            &[("if-match", "\"1\"")],
        )
        .await;
    stale.assert_problem(412, "precondition-failed");
    assert_eq!(stale.body["expected_version"], 1);
    assert_eq!(stale.body["current_version"], 2);
    assert_eq!(stale.header("etag"), Some("\"2\""));
    assert_eq!(f.head().await, head);
    for bad in ["2", "W/\"2\"", "\"2\", \"3\"", "*", "\"x\"", "\"\""] {
        let reply = f
            .post(
                &path,
                &json!({"credit_limit": eur(300)}),
                &[("if-match", bad)],
            )
            .await;
        reply.assert_problem(400, "invalid-header");
        assert_eq!(reply.body["header"], "If-Match");
    }
}

#[tokio::test]
async fn headers_are_validated() {
    let f = Fixture::new().await;
    let long_key = "k".repeat(256);
    let reply = f
        .post(
            "/customers",
            &register_body(1),
            &[("idempotency-key", &long_key)],
        )
        .await;
    reply.assert_problem(400, "invalid-header");
    assert_eq!(reply.body["header"], "Idempotency-Key");
    let key_at_limit = "k".repeat(255);
    let ok = f
        .post(
            "/customers",
            &register_body(1),
            &[("idempotency-key", &key_at_limit)],
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    let correlation = f
        .post(
            "/customers",
            &register_body(1),
            &[("x-correlation-id", "abc")],
        )
        .await;
    correlation.assert_problem(400, "invalid-header");
    assert_eq!(f.head().await, Position(2));
}

#[tokio::test]
async fn order_contents_are_validated_line_by_line() {
    let f = Fixture::new().await;
    let customer = Uuid::new_v4().to_string();
    let line = |sku: &str, quantity: i64, price: Value| json!({"sku": sku, "quantity": quantity, "unit_price": price});
    use serde_json::Value;
    let cases = [
        (
            json!({"customer_id": customer, "lines": [line("A", 0, eur(5))]}),
            "/lines/0/quantity",
        ),
        (
            json!({"customer_id": customer, "lines": [line("A", 1, eur(5)), line("", 1, eur(5))]}),
            "/lines/1/sku",
        ),
        (
            json!({"customer_id": customer,
                   "lines": [line("A", 1, eur(5)), line("B", 1, json!({"amount": 5, "currency": "USD"}))]}),
            "/lines/1/unit_price",
        ),
        (
            json!({"customer_id": customer, "lines": [line("A", 2, eur(5))], "total": eur(11)}),
            "/total",
        ),
        (json!({"customer_id": customer}), "/lines"),
        (
            json!({"customer_id": customer, "total": eur(0)}),
            "/total/amount",
        ),
        (json!({"customer_id": "x", "total": eur(3)}), "/customer_id"),
    ];
    for (body, pointer) in cases {
        let reply = f.post("/orders", &body, &[]).await;
        reply.assert_problem(400, "invalid-fields");
        assert_eq!(
            reply.body["errors"][0]["pointer"], pointer,
            "{}",
            reply.text
        );
    }
    let ok = f
        .post(
            "/orders",
            &json!({"customer_id": customer, "lines": [line("A", 2, eur(5))], "total": eur(10)}),
            &[],
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    assert_eq!(f.head().await, Position(1));
}

#[tokio::test]
async fn bodies_of_field_less_commands_are_empty_or_empty_objects() {
    let f = Fixture::new().await;
    let order = f
        .post(
            "/orders",
            &json!({"customer_id": Uuid::new_v4().to_string(), "total": eur(3)}),
            &[],
        )
        .await
        .id();
    let extra = f
        .post(&format!("/orders/{order}/approve"), &json!({"x": 1}), &[])
        .await;
    extra.assert_problem(400, "malformed-request");
    let empty_object = f
        .post(&format!("/orders/{order}/approve"), &json!({}), &[])
        .await;
    assert_eq!(empty_object.status, 200, "{}", empty_object.text);
    let no_reason = f
        .post(&format!("/orders/{order}/reject"), &json!({}), &[])
        .await;
    no_reason.assert_problem(400, "malformed-request");
}

#[tokio::test]
async fn a_closed_store_is_503_not_a_crash() {
    let f = Fixture::new().await;
    f.store.close().await.unwrap();
    let reply = f.post("/customers", &register_body(1), &[]).await;
    reply.assert_problem(503, "store-unavailable");
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(
        !reply.text.contains("closed"),
        "internals stay hidden: {}",
        reply.text
    );
}

#[tokio::test]
async fn a_request_over_its_time_is_503_timeout() {
    let f = Fixture::with_store(
        ApiConfig {
            request_timeout: Duration::from_millis(50),
            ..ApiConfig::default()
        },
        |store| {
            let slow = Meddling::new(store);
            slow.delay_appends(Duration::from_secs(5));
            slow
        },
    )
    .await;
    let reply = f.post("/customers", &register_body(1), &[]).await;
    reply.assert_problem(503, "timeout");
    assert!(reply.text.contains("Idempotency-Key"));
}

#[tokio::test]
async fn requests_over_the_in_flight_limit_are_503_at_once() {
    let slow = std::sync::OnceLock::new();
    let f = Fixture::with_store(
        ApiConfig {
            in_flight_requests_max: 1,
            ..ApiConfig::default()
        },
        |store| {
            let meddling = Meddling::new(store);
            // Long enough that the second request arrives while the first
            // is held up, even on a loaded machine.
            meddling.delay_appends(Duration::from_secs(3));
            let _ = slow.set(meddling.clone());
            meddling
        },
    )
    .await;
    let slow = slow.get().unwrap().clone();
    let f = std::sync::Arc::new(f);
    let first = tokio::spawn({
        let f = f.clone();
        async move { f.post("/customers", &register_body(1), &[]).await }
    });
    slow.appends_started(1).await;
    let second = f.post("/customers", &register_body(2), &[]).await;
    second.assert_problem(503, "overloaded");
    assert_eq!(second.header("retry-after"), Some("1"));
    let first = tokio::time::timeout(Duration::from_secs(60), first)
        .await
        .expect("the first request is answered within 60 s")
        .unwrap();
    assert_eq!(first.status, 201);
    // The slot is free again.
    assert_eq!(
        f.post("/customers", &register_body(3), &[]).await.status,
        201
    );
}

#[tokio::test]
async fn a_panic_in_a_handler_is_a_500_problem() {
    let f = Fixture::with_store(ApiConfig::default(), |store| {
        let broken = Meddling::new(store);
        broken.panic_on_append();
        broken
    })
    .await;
    let reply = f.post("/customers", &register_body(1), &[]).await;
    reply.assert_problem(500, "internal");
    assert!(
        !reply.text.contains("injected"),
        "internals stay hidden: {}",
        reply.text
    );
    assert_eq!(f.head().await, Position::ZERO);
}

/// The spellings of `id` that are not the canonical one, and ids that are
/// no UUID at all.
fn id_misspellings(id: Uuid) -> Vec<String> {
    let canonical = id.to_string();
    vec![
        canonical.to_uppercase(),
        format!("{{{canonical}}}"),
        format!("urn:uuid:{canonical}"),
        id.simple().to_string(),
        Uuid::nil().to_string(),
        "nope".to_owned(),
        "42".to_owned(),
    ]
}

/// An id is the lowercase hyphenated UUID, in the path and in the body
/// alike: every other spelling is refused with one and the same problem
/// (the id's own detail), on every route, and nothing is written.
#[tokio::test]
async fn ids_have_one_spelling_on_every_route() {
    let f = Fixture::new().await;
    let customer = registered(&f, 100).await;
    let order = Uuid::new_v4();
    let placed = f
        .post(
            "/orders",
            &json!({"order_id": order.to_string(), "customer_id": customer.to_string(),
                    "total": eur(5)}),
            &[],
        )
        .await;
    assert_eq!(placed.status, 201, "{}", placed.text);
    let head = f.head().await;

    for (raw_customer, raw_order) in id_misspellings(customer)
        .into_iter()
        .zip(id_misspellings(order))
    {
        let mut details = Vec::new();
        // Ids in the path.
        let c = &raw_customer;
        let o = &raw_order;
        // Braces are not allowed in a URI as they are.
        let encode = |raw: &str| raw.replace('{', "%7B").replace('}', "%7D");
        let (pc, po) = (&encode(c), &encode(o));
        let path_cases = [
            (
                "POST",
                format!("/customers/{pc}/credit-limit"),
                json!({"credit_limit": eur(5)}),
            ),
            (
                "POST",
                format!("/customers/{pc}/reservations"),
                json!({"order_id": order.to_string(), "amount": eur(1)}),
            ),
            (
                "POST",
                format!("/customers/{pc}/reservations/{order}/release"),
                json!({}),
            ),
            (
                "POST",
                format!("/customers/{customer}/reservations/{po}/release"),
                json!({}),
            ),
            (
                "DELETE",
                format!("/customers/{pc}/personal-data"),
                json!({}),
            ),
            ("POST", format!("/customers/{pc}/forget"), json!({})),
            ("POST", format!("/orders/{po}/approve"), json!({})),
            (
                "POST",
                format!("/orders/{po}/reject"),
                json!({"reason": "no"}),
            ),
            ("POST", format!("/orders/{po}/cancel"), json!({})),
        ];
        for (method, path, body) in path_cases {
            let request = Request::builder()
                .method(method)
                .uri(&path)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            let reply = f.send(request).await;
            reply.assert_problem(400, "invalid-id");
            details.push((path, reply.body["detail"].as_str().unwrap().to_owned()));
        }
        // Ids in the body.
        let body_cases = [
            (
                "/customers",
                json!({"customer_id": c, "name": "Ada", "email": "ada@example.com",
                       "credit_limit": eur(1)}),
            ),
            (
                &*format!("/customers/{customer}/reservations"),
                json!({"order_id": o, "amount": eur(1)}),
            ),
            (
                "/orders",
                json!({"order_id": o, "customer_id": customer.to_string(), "total": eur(1)}),
            ),
            ("/orders", json!({"customer_id": c, "total": eur(1)})),
        ];
        for (path, body) in body_cases {
            let reply = f.post(path, &body, &[]).await;
            reply.assert_problem(400, "invalid-fields");
            let errors = reply.body["errors"].as_array().unwrap();
            assert_eq!(errors.len(), 1, "{}", reply.text);
            details.push((
                path.to_owned(),
                errors[0]["detail"].as_str().unwrap().to_owned(),
            ));
        }
        // The order's misspelling reads like the customer's once the ids
        // are swapped: the detail depends on the id, not on the route.
        let (customer_text, order_text) = (customer.to_string(), order.to_string());
        let normal = |d: &str| d.replace(o, c).replace(&order_text, &customer_text);
        let first = normal(&details[0].1);
        assert!(
            details.iter().all(|(_, d)| normal(d) == first),
            "one id, one problem: {details:#?}"
        );
    }
    assert_eq!(f.head().await, head, "a refused id writes nothing");
    // The canonical spelling is the aggregate.
    let ok = f
        .post(
            &format!("/customers/{customer}/credit-limit"),
            &json!({"credit_limit": eur(50)}),
            &[],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
}

/// A body is a JSON object, as the OpenAPI document says, and so is every
/// object inside it: serde would read an array as the fields in order.
#[tokio::test]
async fn arrays_are_not_objects() {
    let f = Fixture::new().await;
    let customer = registered(&f, 100).await;
    let head = f.head().await;
    let cases = [
        (
            "POST",
            "/customers".to_owned(),
            r#"[null,"Ada","ada@x.org",[7,"EUR"]]"#,
        ),
        (
            "POST",
            "/customers".to_owned(),
            r#"{"name":"Ada","email":"ada@x.org","credit_limit":[7,"EUR"]}"#,
        ),
        (
            "POST",
            format!("/customers/{customer}/credit-limit"),
            r#"[[7,"EUR"]]"#,
        ),
        ("POST", format!("/customers/{customer}/forget"), "[]"),
        (
            "DELETE",
            format!("/customers/{customer}/personal-data"),
            "[]",
        ),
        (
            "POST",
            "/orders".to_owned(),
            &*format!(
                r#"{{"customer_id":"{customer}","lines":[["SKU-1",1,{{"amount":5,"currency":"EUR"}}]]}}"#
            ),
        ),
    ];
    for (method, path, body) in cases {
        let request = Request::builder()
            .method(method)
            .uri(&path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let reply = f.send(request).await;
        reply.assert_problem(400, "malformed-request");
        assert!(
            reply.body["detail"].as_str().unwrap().contains("object"),
            "{method} {path} {body}: {}",
            reply.text
        );
        assert!(reply.body["line"].is_u64(), "{}", reply.text);
    }
    assert_eq!(f.head().await, head, "nothing was written");
}

/// A name needs a character one can see: zero-width and bidi-control
/// characters alone are no name, and neither are invisible fillers.
#[tokio::test]
async fn names_need_a_visible_character() {
    let f = Fixture::new().await;
    for name in [
        "\u{200B}",
        "\u{202E}",
        "\u{200B}\u{202E}\u{2066}\u{2069}\u{200D}\u{FEFF}",
        " \u{2060} \u{200C} ",
        "\u{3164}",
        "\u{FE0F}\u{0301}",
    ] {
        let reply = f
            .post(
                "/customers",
                &json!({"name": name, "email": "ada@example.com", "credit_limit": eur(1)}),
                &[],
            )
            .await;
        reply.assert_problem(400, "invalid-fields");
        assert_eq!(reply.body["errors"][0]["pointer"], "/name", "{name:?}");
        assert!(
            reply.body["detail"].as_str().unwrap().contains("visible"),
            "{}",
            reply.text
        );
    }
    assert_eq!(f.head().await, Position::ZERO);
    let accented = f
        .post(
            "/customers",
            &json!({"name": "Zo\u{0065}\u{0301} \u{200D}", "email": "z@example.com",
                    "credit_limit": eur(1)}),
            &[],
        )
        .await;
    assert_eq!(accented.status, 201, "{}", accented.text);
}
