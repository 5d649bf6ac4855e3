//! The to-do service as a user runs it: its own binary, `serve` on a
//! loopback port, driven over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test fails on any error")]

use annals::testkit::Service;
use serde_json::{Value, json};

#[tokio::test]
async fn tasks_are_added_completed_and_listed_over_http() {
    let mut service = Service::start(env!("CARGO_BIN_EXE_annals-todo"));
    assert_eq!(service.name(), "todo", "the service announces itself by the App's name");
    let base = service.url().to_owned();
    let http = service.http().clone();

    let mut positions = Vec::new();
    for title in ["milk", "bread", "eggs"] {
        let added =
            http.post(format!("{base}/tasks")).json(&json!({"title": title})).send().await.unwrap();
        assert_eq!(added.status(), 201);
        let body: Value = added.json().await.unwrap();
        positions
            .push((body["id"].as_str().unwrap().to_owned(), body["position"].as_u64().unwrap()));
    }
    let (bread, _) = &positions[1];
    let done = http.post(format!("{base}/tasks/{bread}/complete")).send().await.unwrap();
    assert_eq!(done.status(), 200);
    let position = done.json::<Value>().await.unwrap()["position"].as_u64().unwrap();
    let again = http.post(format!("{base}/tasks/{bread}/complete")).send().await.unwrap();
    assert_eq!(again.status(), 422);
    let problem: Value = again.json().await.unwrap();
    assert_eq!(problem["rule"], "task-done", "{problem}");

    // Read your write: the view answers once it has the completion.
    let page: Value = http
        .get(format!("{base}/tasks?done=1&min_position={position}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().expect("a page");
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["title"], "bread");
    assert_eq!(items[0]["done"], true);

    // Pages of one, in id order, until the cursor runs out.
    let mut titles = Vec::new();
    let mut url = format!("{base}/tasks?limit=1&min_position={position}");
    loop {
        let page: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        titles.extend(page["items"].as_array().unwrap().iter().map(|t| t["title"].clone()));
        match page["next_cursor"].as_str() {
            Some(cursor) => url = format!("{base}/tasks?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(titles, [json!("milk"), json!("bread"), json!("eggs")]);

    // A bad filter is a problem document, and so is an unknown task.
    let bad = http.get(format!("{base}/tasks?done=yes")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    let missing = http
        .post(format!("{base}/tasks/0190d7a4-7c0e-7000-8000-000000000000/complete"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The OpenAPI document describes the declared routes.
    let doc: Value =
        http.get(format!("{base}/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/tasks"]["post"].is_object(), "{doc}");
    assert!(doc["paths"]["/tasks"]["get"].is_object(), "{doc}");
    assert!(doc["paths"]["/tasks/{id}/complete"]["post"].is_object(), "{doc}");

    // A restart on the same data: the tasks are still there.
    service.restart();
    let page = service.get("/tasks?done=1").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.body["items"][0]["title"], "bread", "{}", page.body);

    assert!(service.stop().success(), "the service stops cleanly on SIGTERM");
}

/// README's "Build your own service" shows this service's `main.rs` as it
/// is: the file and the README change together.
#[test]
fn the_readme_shows_this_main_rs() {
    let readme = include_str!("../../../README.md");
    let main = include_str!("../src/main.rs");
    assert!(readme.contains(&format!("```rust\n{main}```")), "README.md shows an older main.rs");
}
