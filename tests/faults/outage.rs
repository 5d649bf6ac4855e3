//! A view database outage under the split deployment: `annals projector`
//! and `annals query-api` reach PostgreSQL through a TCP proxy in the test,
//! which is cut (every connection closed, new ones refused) and restored;
//! the PostgreSQL server itself keeps running for the other tests. While
//! it is cut, readiness probes and queries answer 503 within a second (a
//! probe's usual timeout), saying why; once it is back, the projector goes
//! on by itself and both processes are ready again.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::proxy::Proxy;
use crate::pg::PgDatabase;
use crate::process::Proc;
use crate::split::{command, eur, http, query_at, wait_ready};

/// `GET url`, timed: status, body and how long the answer took.
async fn timed_get(http: &reqwest::Client, url: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let response = http.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, started.elapsed())
}

/// What a probe with a one-second timeout needs.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_database_outage_is_answered_at_once_and_the_projector_resumes_after_it() {
    let Some(db) = PgDatabase::create("outage").await else {
        return;
    };
    let proxy = Proxy::start(&db.server_addr()).await;
    let proxied = db.url_through(proxy.url.trim_start_matches("http://"));
    let dir = tempfile::tempdir().unwrap();
    let store = Proc::store(dir.path());
    let commands = Proc::start(
        &[
            "command-api",
            "--store",
            &store.url,
            "--listen",
            "127.0.0.1:0",
        ],
        "command API listening on",
    );
    let mut projector = Proc::start(
        &[
            "projector",
            "--store",
            &store.url,
            "--database",
            &proxied,
            "--listen",
            "127.0.0.1:0",
        ],
        "projector listening on",
    );
    let mut query = Proc::start(
        &[
            "query-api",
            "--database",
            &proxied,
            "--listen",
            "127.0.0.1:0",
        ],
        "query API listening on",
    );
    let http = http();
    for p in [&store, &commands, &projector, &query] {
        wait_ready(&http, &p.url).await;
    }
    let register = |name: &'static str| {
        let http = http.clone();
        let url = format!("{}/customers", commands.url);
        async move {
            let (status, body) = command(
                &http,
                &url,
                &json!({"name": name, "email": "someone@example.org", "credit_limit": eur(100)}),
            )
            .await;
            assert_eq!(status, 201, "{body}");
            (
                body["id"].as_str().unwrap().to_owned(),
                body["position"].as_u64().unwrap(),
            )
        }
    };
    let (first, position) = register("Before The Outage").await;
    query_at(&http, &format!("{}/customers/{first}", query.url), position).await;

    proxy.refuse_connections(true);
    proxy.sever_all();
    // Twice: the first probe finds the pool's connections dead, the second
    // an empty pool that can open none.
    for _ in 0..2 {
        for p in [&query, &projector] {
            let (status, body, took) = timed_get(&http, &format!("{}/health/ready", p.url)).await;
            assert_eq!(status, 503, "{}: {body}", p.url);
            assert!(
                took < ANSWER_WITHIN,
                "{}: readiness took {took:?}: {body}",
                p.url
            );
            let views = body["checks"]["views"].as_str().unwrap_or_default();
            assert!(views.contains("does not answer"), "{body}");
        }
    }
    for path in [
        format!("customers/{first}"),
        format!("customers/{first}?min_position={position}"),
        "orders?limit=5".to_owned(),
    ] {
        let (status, body, took) = timed_get(&http, &format!("{}/{path}", query.url)).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body["type"], "urn:annals:problem:unavailable", "{body}");
        assert!(took < ANSWER_WITHIN, "{path} took {took:?}");
    }
    // Commands go on; the projector waits for its database.
    let (second, second_position) = register("During The Outage").await;

    proxy.refuse_connections(false);
    let seen = query_at(
        &http,
        &format!("{}/customers/{second}", query.url),
        second_position,
    )
    .await;
    assert_eq!(seen["name"], "During The Outage");
    for p in [&query, &projector] {
        wait_ready(&http, &p.url).await;
    }
    assert!(projector.terminate().success());
    assert!(query.terminate().success());
}
