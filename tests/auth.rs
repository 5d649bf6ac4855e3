//! API keys and roles on every process, as real processes on loopback.
//! The route × role matrix is generated from each process's own OpenAPI
//! document, so a route added later is checked without touching this
//! file: no key → 401 with `WWW-Authenticate`, a key without the route's
//! role → 403 naming it, a key with it → neither. Also: the lowercase
//! `bearer` scheme, a revoked key refused within a second, and a
//! non-loopback address refused without keys unless `--insecure`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{Proc, annals, output_within, start_seen};

const ROLES: [&str; 3] = ["read", "write", "admin"];

/// Creates a key with `roles` in `keys_file` through the CLI; its token.
pub fn create_key(keys_file: &Path, name: &str, roles: &[&str]) -> String {
    create_key_with(keys_file, name, roles, &[])
}

/// [`create_key`] with more arguments (`--stream-prefix P`).
pub fn create_key_with(keys_file: &Path, name: &str, roles: &[&str], more: &[&str]) -> String {
    let mut command = annals();
    command.args(["keys", "create", "--name", name, "--keys-file"]);
    command.arg(keys_file);
    for role in roles {
        command.args(["--role", role]);
    }
    command.args(more);
    let out = output_within(&mut command, Duration::from_secs(30));
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64, "{token}");
    token
}

/// One key per role, named after it.
fn keys_per_role(keys_file: &Path) -> BTreeMap<&'static str, String> {
    ROLES
        .iter()
        .map(|role| (*role, create_key(keys_file, role, &[role])))
        .collect()
}

pub fn http() -> reqwest::Client {
    http_edge::tls::install_default_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The route's role as the security model states it, from the method and
/// path alone; `None` for the open health routes.
fn role_of_app_route(method: &str, path: &str) -> Option<&'static str> {
    match path {
        "/health/live" | "/health/ready" => None,
        _ if path.starts_with("/projections") || path == "/audit" => Some("admin"),
        _ if path.ends_with("/personal-data") || path.ends_with("/forget") => Some("admin"),
        _ if method == "get" => Some("read"),
        _ => Some("write"),
    }
}

fn role_of_store_route(method: &str, path: &str) -> Option<&'static str> {
    match (method, path) {
        (_, "/health/live" | "/health/ready") => None,
        ("get", _) => Some("read"),
        ("delete", _) => Some("admin"),
        _ => Some("write"),
    }
}

/// Every operation of the process at `url`'s OpenAPI document (read with
/// `read_key`), plus the document itself, with its path parameters filled.
async fn operations(http: &reqwest::Client, url: &str, read_key: &str) -> Vec<(String, String)> {
    let document: Value = http
        .get(format!("{url}/openapi.json"))
        .bearer_auth(read_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut operations = vec![("get".to_owned(), "/openapi.json".to_owned())];
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                operations.push((method.to_owned(), path.clone()));
            }
        }
    }
    operations
}

/// `{id}` and friends replaced by a fresh id (a stream name, a projection
/// name: unknown ones, which is all the matrix needs).
fn filled(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').unwrap() + start;
        out.push_str(&uuid::Uuid::now_v7().to_string());
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Sends `method path` with `authorization` (the whole header value);
/// the status and the response headers (the body is not waited for: a
/// subscription's never ends).
async fn call(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    path: &str,
    authorization: Option<String>,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    // Marked as a program's request: the cross-site rule is not what
    // this test is about (tests/security.rs is).
    let mut request = http
        .request(method, format!("{url}{}", filled(path)))
        .header("x-requested-with", "test");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

async fn problem(response: reqwest::Response) -> Value {
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.unwrap()
}

/// Checks every operation of the process at `url` against `role_of`;
/// returns how many needed each role.
async fn check_matrix(
    url: &str,
    keys: &BTreeMap<&'static str, String>,
    role_of: fn(&str, &str) -> Option<&'static str>,
) -> BTreeMap<&'static str, usize> {
    let http = http();
    let mut counts = BTreeMap::new();
    for (method, path) in operations(&http, url, &keys["read"]).await {
        let Some(needed) = role_of(&method, &path) else {
            let open = call(&http, url, &method, &path, None).await;
            assert!(
                ![401, 403].contains(&open.status().as_u16()),
                "{method} {path} is open: {open:?}"
            );
            continue;
        };
        *counts.entry(needed).or_insert(0) += 1;
        let anonymous = call(&http, url, &method, &path, None).await;
        assert_eq!(anonymous.status(), 401, "{method} {path} without a key");
        assert!(
            anonymous.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{method} {path}"
        );
        assert_eq!(problem(anonymous).await["status"], 401);
        let unknown = call(
            &http,
            url,
            &method,
            &path,
            Some(format!("Bearer {}", "0".repeat(64))),
        )
        .await;
        assert_eq!(unknown.status(), 401, "{method} {path} with an unknown key");
        for (role, token) in keys {
            let answer = call(&http, url, &method, &path, Some(format!("bearer {token}"))).await;
            let status = answer.status().as_u16();
            if *role == needed {
                assert!(
                    ![401, 403].contains(&status),
                    "{method} {path} with a {role} key: {status}"
                );
            } else {
                assert_eq!(
                    status, 403,
                    "{method} {path} with a {role} key (needs {needed})"
                );
                let body = problem(answer).await;
                assert_eq!(body["required_role"], needed, "{body}");
                assert!(body["detail"].as_str().unwrap().contains(needed), "{body}");
            }
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_serve_needs_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys = keys_per_role(&data.join("api-keys.jsonl"));
    let serve = Proc::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "listening on",
    );
    let counts = check_matrix(&serve.url, &keys, role_of_app_route).await;
    // Queries and the document, commands, projection admin and erasure.
    assert!(counts["read"] >= 4, "{counts:?}");
    assert!(counts["write"] >= 5, "{counts:?}");
    assert!(counts["admin"] >= 5, "{counts:?}");

    // Readiness tells anyone whether, and a key holder why.
    let http = http();
    let anonymous: Value = http
        .get(format!("{}/health/ready", serve.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anonymous, serde_json::json!({"status": "ready"}));
    let detailed: Value = http
        .get(format!("{}/health/ready", serve.url))
        .bearer_auth(&keys["write"])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detailed["checks"]["store"], "ok", "{detailed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_the_split_processes_needs_its_role() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let keys_file = store_dir.join("api-keys.jsonl");
    let keys = keys_per_role(&keys_file);
    // The processes' own keys for the store: the least each needs.
    let command_key = create_key(&keys_file, "command-api", &["read", "write"]);
    let projector_key = create_key(&keys_file, "projector", &["read"]);
    let keys_file = keys_file.to_str().unwrap();
    let store = Proc::store(&store_dir);
    let views = format!("sqlite://{}", dir.path().join("views.sqlite").display());
    let command = Proc::start(
        &[
            "command-api",
            "--store",
            &store.url,
            "--store-key",
            &command_key,
            "--listen",
            "127.0.0.1:0",
            "--keys-file",
            keys_file,
        ],
        "command API listening on",
    );
    let projector = Proc::start(
        &[
            "projector",
            "--store",
            &store.url,
            "--store-key",
            &projector_key,
            "--database",
            &views,
            "--listen",
            "127.0.0.1:0",
            "--keys-file",
            keys_file,
        ],
        "projector listening on",
    );
    let query = Proc::start(
        &[
            "query-api",
            "--database",
            &views,
            "--listen",
            "127.0.0.1:0",
            "--keys-file",
            keys_file,
        ],
        "query API listening on",
    );
    let store_counts = check_matrix(&store.url, &keys, role_of_store_route).await;
    assert!(
        store_counts["read"] >= 5 && store_counts["write"] >= 2 && store_counts["admin"] >= 1,
        "{store_counts:?}"
    );
    let command_counts = check_matrix(&command.url, &keys, role_of_app_route).await;
    assert!(
        command_counts["write"] >= 5 && command_counts["admin"] >= 2,
        "{command_counts:?}"
    );
    let projector_counts = check_matrix(&projector.url, &keys, role_of_app_route).await;
    assert!(projector_counts["admin"] >= 4, "{projector_counts:?}");
    let query_counts = check_matrix(&query.url, &keys, role_of_app_route).await;
    assert!(query_counts["read"] >= 3, "{query_counts:?}");

    // The command API reaches the store with its key: a command goes through.
    let http = http();
    let created = http
        .post(format!("{}/customers", command.url))
        .bearer_auth(&keys["write"])
        .json(&serde_json::json!({
            "name": "Ada", "email": "ada@example.com",
            "credit_limit": {"amount": 1000, "currency": "EUR"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys_file = data.join("api-keys.jsonl");
    create_key(&keys_file, "operator", &["admin"]);
    let serve = Proc::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "listening on",
    );
    // A key created while the process runs counts without a restart.
    let token = create_key(&keys_file, "temporary", &["read"]);
    let http = http();
    let url = format!("{}/openapi.json", serve.url);
    let status = |token: String| {
        let request = http.get(&url).bearer_auth(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let deadline = Instant::now() + Duration::from_secs(1);
    while status(token.clone()).await != 200 {
        assert!(
            Instant::now() < deadline,
            "a new key is not accepted within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = output_within(
        annals().args([
            "keys",
            "revoke",
            "temporary",
            "--keys-file",
            keys_file.to_str().unwrap(),
        ]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    let revoked = Instant::now();
    loop {
        match status(token.clone()).await {
            401 => break,
            200 => {}
            other => panic!("{other}"),
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "the revoked key still works"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = output_within(
        annals().args(["keys", "list", "--keys-file", keys_file.to_str().unwrap()]),
        Duration::from_secs(30),
    );
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("temporary\tread\t") && l.contains("\trevoked\t")),
        "{listed}"
    );
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("operator\tadmin\t") && l.ends_with("active\tstreams=*")),
        "{listed}"
    );
    // The file holds hashes, never a token.
    let file = std::fs::read_to_string(&keys_file).unwrap();
    assert!(!file.contains(&token));
}

#[test]
fn a_non_loopback_address_without_keys_is_refused_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = output_within(
        annals().args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            data.to_str().unwrap(),
        ]),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let line = crate::cli::one_line_failure(&out);
    assert!(line.contains("refusing to serve 0.0.0.0:"), "{line}");
    assert!(line.contains("--insecure"), "{line}");
    assert!(!data.exists(), "the data directory was touched");
    // A split process refuses before it waits for its store or opens its
    // database.
    let views = dir.path().join("views.sqlite");
    for args in [
        vec![
            "command-api",
            "--store",
            "http://127.0.0.1:9",
            "--listen",
            "0.0.0.0:0",
        ],
        vec![
            "query-api",
            "--database",
            &format!("sqlite://{}?mode=rwc", views.display()),
            "--listen",
            "0.0.0.0:0",
        ],
    ] {
        let out = output_within(annals().args(&args), Duration::from_secs(10));
        let line = crate::cli::one_line_failure(&out);
        assert!(line.contains("refusing to serve 0.0.0.0:"), "{line}");
    }
    assert!(!views.exists(), "the view database was touched");

    // With --insecure each starts, and warns at start and in readiness.
    for (args, announce) in [
        (
            vec!["serve", "--data-dir", data.to_str().unwrap()],
            "listening on http://0.0.0.0:",
        ),
        (
            vec![
                "store",
                "--data-dir",
                dir.path().join("store").to_str().unwrap(),
            ],
            "store listening on http://0.0.0.0:",
        ),
    ] {
        let (seen, ready) = start_insecure(&args, announce);
        assert!(
            seen.iter()
                .any(|l| l.contains("warning: --insecure: serving 0.0.0.0:")),
            "{seen:?}"
        );
        assert_eq!(ready["status"], "ready", "{ready}");
        let warnings = ready["warnings"].to_string();
        assert!(warnings.contains("--insecure"), "{ready}");
    }
}

/// Starts `annals <args> --listen 0.0.0.0:0 --insecure`, waits for
/// `announce` and its port, then for readiness; what it printed and the
/// ready answer.
fn start_insecure(args: &[&str], announce: &str) -> (Vec<String>, Value) {
    let mut args = args.to_vec();
    args.extend(["--listen", "0.0.0.0:0", "--insecure"]);
    let (mut child, seen) = start_seen(&args, announce);
    let port = seen
        .iter()
        .find_map(|l| l.split(announce).nth(1))
        .and_then(|port| port.trim().parse::<u16>().ok());
    let ready = port.map(|port| {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let url = format!("http://127.0.0.1:{port}/health/ready");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let answer = http().get(&url).send().await.unwrap();
                let ok = answer.status().is_success();
                let body: Value = answer.json().await.unwrap();
                if ok || Instant::now() > deadline {
                    break body;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    let _ = child.kill();
    let _ = child.wait();
    let ready = ready.unwrap_or_else(|| panic!("no port announced: {seen:?}"));
    (seen, ready)
}
