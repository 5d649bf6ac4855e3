//! Reads on both backends: single items with their position and ETag,
//! filtered lists walked page by page, and every kind of bad input as a
//! problem document with the right status.

use std::collections::BTreeSet;

use annals_credit::generator::Generator;
use axum::http::StatusCode;
use query_api::QueryConfig;

use crate::common::{TestDb, app, assert_problem, generate, get, open_store, project_all};

/// Walks every page of `uri` (which has no cursor) and returns the items.
async fn all_pages(app: &axum::Router, uri: &str) -> Vec<serde_json::Value> {
    let mut items = Vec::new();
    let mut next: Option<String> = None;
    let separator = if uri.contains('?') { '&' } else { '?' };
    for _ in 0..10_000 {
        let page_uri = match &next {
            Some(cursor) => format!("{uri}{separator}cursor={cursor}"),
            None => uri.to_owned(),
        };
        let answer = get(app, &page_uri).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        assert_eq!(answer.body["position"].as_u64(), Some(answer.position()));
        items.extend(answer.body["items"].as_array().unwrap().iter().cloned());
        match answer.body["next_cursor"].as_str() {
            Some(cursor) => next = Some(cursor.to_owned()),
            None => return items,
        }
    }
    panic!("too many pages");
}

#[tokio::test]
async fn items_lists_and_filters_on_every_backend() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut generator = Generator::new(101);
    let head = generate(&store, &mut generator, 4_000).await;
    for test_db in TestDb::all().await {
        let db = test_db.open().await;
        project_all(&store, &db).await;
        let app = app(&db, QueryConfig::default());
        let backend = test_db.name;

        // One customer: body, position header, ETag.
        let model = &generator.customers()[3];
        let answer = get(&app, &format!("/customers/{}", model.id)).await;
        assert_eq!(answer.status, StatusCode::OK, "{backend}");
        assert_eq!(answer.position(), head.0);
        assert_eq!(answer.headers["etag"], format!("\"{}\"", model.version));
        let body = &answer.body;
        assert_eq!(body["id"], model.id.as_str());
        assert_eq!(body["name"], model.name.as_str());
        assert_eq!(body["email"], model.email.as_str());
        assert_eq!(body["credit_limit"]["amount"], model.credit_limit);
        assert_eq!(body["credit_limit"]["currency"], model.currency.as_str());
        assert_eq!(body["reserved"]["amount"], model.reserved);
        assert_eq!(body["available"]["amount"], model.available());
        assert_eq!(body["orders"]["placed"], model.placed);
        assert_eq!(body["orders"]["approved"], model.approved);
        assert_eq!(body["orders"]["rejected"], model.rejected);
        assert_eq!(body["orders"]["cancelled"], model.cancelled);
        assert_eq!(body["version"], model.version);
        assert!(body["registered_at"].as_str().unwrap().ends_with('Z'));
        assert!(body["position"].as_u64().unwrap() <= head.0);

        // One order.
        let order = generator.orders().find(|o| o.status == "rejected").unwrap();
        let answer = get(&app, &format!("/orders/{}", order.id)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.headers["etag"], format!("\"{}\"", order.version));
        assert_eq!(answer.body["status"], "rejected");
        assert_eq!(answer.body["reason"], "credit limit exceeded");
        assert_eq!(answer.body["customer_id"], order.customer_id.as_str());
        assert_eq!(answer.body["total"]["amount"], order.total);
        assert_eq!(answer.body["line_count"], order.line_count);

        // Unknown ids: 404 with the position the view was read at.
        let unknown = uuid::Uuid::new_v4();
        for uri in [
            format!("/customers/{unknown}"),
            format!("/orders/{unknown}"),
        ] {
            let answer = get(&app, &uri).await;
            assert_problem(&answer, StatusCode::NOT_FOUND);
            assert_eq!(answer.position(), head.0);
            assert_eq!(answer.body["position"], head.0);
        }

        // Every customer, page by page, in id order, each once.
        let everyone = all_pages(&app, "/customers?limit=7").await;
        let ids: Vec<&str> = everyone.iter().map(|c| c["id"].as_str().unwrap()).collect();
        let mut expected: Vec<&str> = generator
            .customers()
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        expected.sort();
        assert_eq!(ids, expected, "{backend}");

        // Credit used up.
        let used_up = all_pages(&app, "/customers?credit_available=0&limit=3").await;
        let got: BTreeSet<&str> = used_up.iter().map(|c| c["id"].as_str().unwrap()).collect();
        let want: BTreeSet<&str> = generator
            .customers()
            .iter()
            .filter(|c| c.available() == 0)
            .map(|c| c.id.as_str())
            .collect();
        assert!(!want.is_empty());
        assert_eq!(got, want);

        // A name prefix, ignoring case, ordered by name.
        let prefix_model = generator
            .customers()
            .iter()
            .find(|c| c.name.starts_with("Zo"))
            .or_else(|| generator.customers().first())
            .unwrap();
        let prefix: String = prefix_model.name.chars().take(3).collect();
        let upper = prefix.to_uppercase();
        let uri = format!("/customers?name_prefix={}&limit=4", urlencode(&upper));
        let named = all_pages(&app, &uri).await;
        let folded = prefix.to_lowercase();
        let mut want: Vec<(String, String)> = generator
            .customers()
            .iter()
            .filter(|c| c.name.to_lowercase().starts_with(&folded))
            .map(|c| (c.name.to_lowercase(), c.id.clone()))
            .collect();
        want.sort();
        let got: Vec<(String, String)> = named
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_lowercase(),
                    c["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert!(!want.is_empty());
        assert_eq!(got, want, "{backend}: prefix {upper}");

        // Orders of one customer with one status.
        let customer = &order.customer_id;
        let orders = all_pages(
            &app,
            &format!("/orders?customer_id={customer}&status=rejected&limit=2"),
        )
        .await;
        let mut want: Vec<&str> = generator
            .orders()
            .filter(|o| &o.customer_id == customer && o.status == "rejected")
            .map(|o| o.id.as_str())
            .collect();
        want.sort();
        let got: Vec<&str> = orders.iter().map(|o| o["id"].as_str().unwrap()).collect();
        assert_eq!(got, want);
        let approved = all_pages(&app, "/orders?status=approved&limit=50").await;
        assert_eq!(
            approved.len(),
            generator
                .orders()
                .filter(|o| o.status == "approved")
                .count()
        );
        db.close().await;
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn bad_input_is_a_problem_document_with_status_400() {
    let test_db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut generator = Generator::new(102);
    generate(&store, &mut generator, 500).await;
    let db = test_db.open().await;
    project_all(&store, &db).await;
    let config = QueryConfig {
        page_size_max: 50,
        ..QueryConfig::default()
    };
    let app = app(&db, config);

    // Both sides of the page-size limit.
    assert_eq!(get(&app, "/customers?limit=1").await.status, StatusCode::OK);
    assert_eq!(
        get(&app, "/customers?limit=50").await.status,
        StatusCode::OK
    );
    for bad in [
        "/customers?limit=0",
        "/customers?limit=51",
        "/customers?limit=-1",
        "/customers?limit=ten",
        "/customers?credit_available=-1",
        "/customers?credit_available=1000000000000001",
        "/customers?credit_available=abc",
        "/customers?name_prefix=",
        "/customers?colour=red",
        "/customers?limit=5&limit=6",
        "/customers?cursor=garbage!",
        "/customers?cursor=e30",
        "/orders?status=shipped",
        "/orders?min_position=-3",
        "/orders?min_position=99999999999999999999",
    ] {
        let answer = get(&app, bad).await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
        assert_eq!(
            answer.body["type"], "urn:annals:problem:invalid-request",
            "{bad}"
        );
    }
    let long_prefix = format!("/customers?name_prefix={}", "a".repeat(101));
    assert_problem(&get(&app, &long_prefix).await, StatusCode::BAD_REQUEST);
    let ok_prefix = format!("/customers?name_prefix={}", "a".repeat(100));
    assert_eq!(get(&app, &ok_prefix).await.status, StatusCode::OK);
    let long_id = format!("/customers/{}", "x".repeat(257));
    assert_problem(&get(&app, &long_id).await, StatusCode::BAD_REQUEST);
    assert_problem(&get(&app, "/nothing/here").await, StatusCode::NOT_FOUND);
    // A known path with a method it does not serve.
    let response = tower::ServiceExt::oneshot(
        app.clone(),
        axum::http::Request::builder()
            .method("DELETE")
            .uri("/customers")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );

    // A cursor only continues the query that made it.
    let first = get(&app, "/customers?credit_available=0&limit=1").await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let other = get(&app, &format!("/customers?limit=1&cursor={cursor}")).await;
    assert_problem(&other, StatusCode::BAD_REQUEST);
    assert!(
        other.body["detail"]
            .as_str()
            .unwrap()
            .contains("other filters")
    );
    let same = get(
        &app,
        &format!("/customers?credit_available=0&limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(same.status, StatusCode::OK);
    assert_ne!(same.body["items"][0]["id"], first.body["items"][0]["id"]);
    db.close().await;
}

/// An id is the lowercase hyphenated UUID the views hold: another spelling
/// of the same UUID, or no UUID at all, is refused with one `invalid-id`
/// problem on every route that takes an id (never a `404`, never an empty
/// page).
#[tokio::test]
async fn ids_have_one_spelling_on_every_route() {
    let test_db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path()).await;
    let mut generator = Generator::new(7);
    generate(&store, &mut generator, 300).await;
    let db = test_db.open().await;
    project_all(&store, &db).await;
    let app = app(&db, QueryConfig::default());

    let page = get(&app, "/orders?limit=1").await;
    let order = page.body["items"][0]["id"].as_str().unwrap().to_owned();
    let customer = page.body["items"][0]["customer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for uri in [
        format!("/customers/{customer}"),
        format!("/orders/{order}"),
        format!("/orders?customer_id={customer}"),
    ] {
        let answer = get(&app, &uri).await;
        assert_eq!(answer.status, StatusCode::OK, "{uri}: {answer:?}");
    }
    let spellings = |id: &str| {
        let uuid = uuid::Uuid::parse_str(id).unwrap();
        vec![
            id.to_uppercase(),
            format!("%7B{id}%7D"),
            format!("urn:uuid:{id}"),
            uuid.simple().to_string(),
            uuid::Uuid::nil().to_string(),
            "nope".to_owned(),
            "x".repeat(257),
        ]
    };
    for (c, o) in spellings(&customer).into_iter().zip(spellings(&order)) {
        let mut details = Vec::new();
        for uri in [
            format!("/customers/{c}"),
            format!("/orders/{o}"),
            format!("/orders?customer_id={c}"),
        ] {
            let answer = get(&app, &uri).await;
            assert_problem(&answer, StatusCode::BAD_REQUEST);
            assert_eq!(
                answer.body["type"], "urn:annals:problem:invalid-id",
                "{uri}"
            );
            assert_eq!(answer.body["title"], "Invalid id", "{uri}");
            let detail = answer.body["detail"].as_str().unwrap();
            let raw_c = c.replace("%7B", "{").replace("%7D", "}");
            let raw_o = o.replace("%7B", "{").replace("%7D", "}");
            details.push(detail.replace(&raw_o, &raw_c).replace(&order, &customer));
        }
        assert!(
            details.iter().all(|d| d == &details[0]),
            "one id, one problem: {details:#?}"
        );
    }
    let empty = get(&app, "/orders?customer_id=").await;
    assert_problem(&empty, StatusCode::BAD_REQUEST);
    assert_eq!(empty.body["type"], "urn:annals:problem:invalid-id");
}
