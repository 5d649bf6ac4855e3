//! The admin web UI in a real headless browser (Debian's Chromium driven
//! by Selenium, `tests/ui/browser.py`) against a real `annals serve` with
//! API keys on: it loads with no console errors, the stream browser shows
//! the events the test appended, the live tail shows a new event within a
//! second, and a rebuild started from the page swaps the view. Every
//! process serves `/ui`, and its `/ui/config.json` names exactly the APIs
//! it answers.
//!
//! Chromium, chromedriver and Selenium are installed by `.ci/run`; without
//! them the browser test is skipped with a notice, except under CI. Set
//! `ANNALS_UI_SCREENSHOTS=docs` to write the README's screenshots.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::auth::{create_key, http};
use crate::process::{Proc, output_within};

const BROWSER: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser, its driver and Selenium are here; `false` (skip)
/// outside CI, a failure under CI.
fn browser_available() -> bool {
    let selenium = Command::new("python3")
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|out| out.status.success());
    let present = selenium && Path::new(BROWSER).exists() && Path::new(DRIVER).exists();
    if !present {
        assert!(
            std::env::var_os("CI").is_none_or(|v| v.is_empty()),
            "the UI test needs {BROWSER}, {DRIVER} and python3's selenium under CI (.ci/run installs them)"
        );
        eprintln!("notice: skipping the browser test: no {BROWSER}, {DRIVER} or selenium");
    }
    present
}

async fn post(url: &str, path: &str, token: &str, body: Value) -> Value {
    let response = http()
        .post(format!("{url}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");
    response.json().await.unwrap()
}

/// GETs `path` (with `token` unless empty), expecting 200 and JSON.
async fn get(url: &str, path: &str, token: &str) -> Value {
    let mut request = http().get(format!("{url}{path}"));
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

fn customer(name: &str) -> Value {
    json!({
        "name": name,
        "email": format!("{}@example.org", name.to_lowercase().replace(' ', ".")),
        "credit_limit": {"amount": 5000, "currency": "EUR"}
    })
}

/// Waits (up to 60 s) until the process is ready: the page's overview
/// asks `/health/ready`, and a 503 there is a console error.
async fn ready(url: &str) {
    for _ in 0..600 {
        let answer = http().get(format!("{url}/health/ready")).send().await;
        if answer.is_ok_and(|a| a.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} not ready within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_ui_browses_tails_and_rebuilds_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.jsonl");
    let token = create_key(&keys, "operator", &["read", "write", "admin"]);
    let serve = Proc::serve(
        &dir.path().join("data"),
        &["--keys-file", keys.to_str().unwrap()],
    );
    let url = &serve.url;
    ready(url).await;
    let first = post(url, "/customers", &token, customer("Grace Hopper")).await;
    let id = first["id"].as_str().unwrap();
    post(
        url,
        &format!("/customers/{id}/reservations"),
        &token,
        json!({"order_id": uuid::Uuid::now_v7(), "amount": {"amount": 100, "currency": "EUR"}}),
    )
    .await;
    for name in ["Ada Lovelace", "Edsger Dijkstra"] {
        post(url, "/customers", &token, customer(name)).await;
    }
    let stream = format!("customer-{id}");
    let before = get(url, "/projections/customers", &token).await;

    let mut command = Command::new("python3");
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui/browser.py"))
        .args(["--base", url, "--key", &token, "--stream", &stream])
        .args(["--stream-events", "2", "--prefix", "customer-"])
        .args(["--append", "/customers", "--append-body"])
        .arg(customer("Barbara Liskov").to_string())
        .args(["--projection", "customers"]);
    if let Some(shots) = std::env::var_os("ANNALS_UI_SCREENSHOTS") {
        command.arg("--screenshots").arg(shots);
    }
    let out = output_within(&mut command, Duration::from_secs(240));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("ui ok"), "{stdout}");

    // The rebuild the page started swapped the view in, and the view
    // holds every customer, the one the live tail saw included.
    let after = get(url, "/projections/customers", &token).await;
    assert_eq!(after["state"], "live", "{after}");
    let rebuilds = |status: &Value| status["last_rebuild"]["number"].as_u64().unwrap_or(0);
    assert_eq!(rebuilds(&after), rebuilds(&before) + 1, "{after}");
    assert!(
        after["last_rebuild"]["position"].as_u64().is_some(),
        "{after}"
    );
    let customers = get(url, "/customers?limit=100&min_position=1", &token).await;
    let names: Vec<&str> = customers["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names.len(), 4, "{customers}");
    assert!(names.contains(&"Barbara Liskov"), "{customers}");
}

/// `/ui/config.json` of a process, and every API it names answering 200.
async fn check_config(
    url: &str,
    process: &str,
    store: Option<&str>,
    projections: bool,
    sagas: bool,
) {
    let page = http().get(format!("{url}/ui")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(page.text().await.unwrap().contains("/ui/app.js"));
    for asset in ["/ui/app.js", "/ui/app.css"] {
        let answer = http().get(format!("{url}{asset}")).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{asset}");
    }
    let config: Value = http()
        .get(format!("{url}/ui/config.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["process"], process, "{config}");
    assert_eq!(config["store"].as_str(), store, "{config}");
    assert_eq!(config["projections"], projections, "{config}");
    assert_eq!(config["sagas"], sagas, "{config}");
    let mut apis = vec![String::from("/health/live")];
    if let Some(store) = store {
        apis.extend(
            [
                "/streams?limit=5",
                "/categories",
                "/stats",
                "/head",
                "/all?max_count=1",
            ]
            .map(|p| format!("{store}{p}")),
        );
    }
    if projections {
        apis.push("/projections".into());
    }
    if sagas {
        apis.push("/sagas".into());
    }
    for api in apis {
        let answer = http().get(format!("{url}{api}")).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{process}: {api}");
    }
    for (api, named) in [("/projections", projections), ("/sagas", sagas)] {
        if !named {
            let answer = http().get(format!("{url}{api}")).send().await.unwrap();
            assert_eq!(
                answer.status(),
                404,
                "{process}: {api} answers but is not named"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_serves_the_ui_and_names_its_apis() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Proc::serve(&dir.path().join("serve"), &[]);
    check_config(&serve.url, "serve", Some("/store"), true, true).await;

    let store = Proc::store(&dir.path().join("store"));
    crate::split::append_noted(&store.url, "ui-test", 3).await;
    check_config(&store.url, "store", Some(""), false, false).await;
    let listed = get(&store.url, "/streams?prefix=ui-", "").await;
    assert_eq!(listed["streams"][0]["stream_id"], "ui-test", "{listed}");
    assert_eq!(listed["streams"][0]["version"], 3, "{listed}");

    let commands = Proc::start(
        &[
            "command-api",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &store.url,
            "--saga",
        ],
        "command API listening on",
    );
    check_config(&commands.url, "command-api", Some("/store"), false, true).await;
    // Through the command API, the store's listing reads the same.
    let listed_there = get(&commands.url, "/store/streams?prefix=ui-", "").await;
    assert_eq!(listed_there, listed);
}
