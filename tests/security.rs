//! What a caller cannot do beyond its key, on real processes over
//! loopback: send a state change from a cross-site form, go over its
//! rate, touch streams outside its prefixes, or act as admin without
//! leaving a record in the audit log; and JWTs of an identity provider
//! standing in for keys.

use std::time::Duration;

use serde_json::{Value, json};

use crate::auth::{create_key, create_key_with, http};
use crate::process::{Proc, annals, output_within};

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "{status}"
    );
    (status, response.json().await.unwrap())
}

/// A customer registered through the command API; its id.
async fn register(http: &reqwest::Client, url: &str, token: Option<&str>) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let mut request = http.post(format!("{url}/customers")).json(&json!({
        "customer_id": id, "name": "Ada", "email": "ada@example.com",
        "credit_limit": {"amount": 100, "currency": "EUR"}
    }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let created = request.send().await.unwrap();
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_cannot_erase_or_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    // Authentication off, as on a developer's machine: the case a page in
    // the developer's browser could exploit.
    let serve = Proc::serve(&dir.path().join("data"), &[]);
    let http = http();
    let id = register(&http, &serve.url, None).await;

    // What an HTML form on another site sends.
    for (path, body, content_type) in [
        (
            format!("/customers/{id}/forget"),
            "x=1",
            "application/x-www-form-urlencoded",
        ),
        (
            "/projections/customers/rebuild".to_owned(),
            "{}",
            "text/plain",
        ),
    ] {
        let answer = http
            .post(format!("{}{path}", serve.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, body) = problem(answer).await;
        assert_eq!(status, 415, "{path}: {body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("X-Requested-With"),
            "{body}"
        );
    }
    // `fetch` in no-cors mode with no body at all.
    let (status, _) = problem(
        http.post(format!("{}/projections/customers/rebuild", serve.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);

    // Nothing was erased and nothing rebuilt.
    let customer = http
        .get(format!("{}/customers/{id}?min_position=1", serve.url))
        .send()
        .await
        .unwrap();
    assert_eq!(customer.status(), 200);
    let customer: Value = customer.json().await.unwrap();
    assert_eq!(customer["name"], "Ada", "{customer}");
    let projection: Value = http
        .get(format!("{}/projections/customers", serve.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(projection["state"], "rebuilding", "{projection}");

    // A program says so, and is let through.
    let rebuilt = http
        .post(format!("{}/projections/customers/rebuild", serve.url))
        .header("x-requested-with", "test")
        .send()
        .await
        .unwrap();
    assert!(rebuilt.status().is_success(), "{:?}", rebuilt.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_is_answered_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_key(&data.join("api-keys.jsonl"), "reader", &["read"]);
    let other = create_key(&data.join("api-keys.jsonl"), "other", &["read"]);
    let serve = Proc::serve(&data, &["--rate-limit-per-second", "5"]);
    let http = http();
    let url = format!("{}/openapi.json", serve.url);
    let mut limited = None;
    for _ in 0..50 {
        let answer = http.get(&url).bearer_auth(&token).send().await.unwrap();
        if answer.status() == 429 {
            limited = Some(answer);
            break;
        }
        assert_eq!(answer.status(), 200);
    }
    let answer = limited.expect("50 requests at once were never limited at 5 per second");
    let retry_after: u64 = answer.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let (_, body) = problem(answer).await;
    assert!(
        body["detail"].as_str().unwrap().contains("reader"),
        "{body}"
    );
    // The limit is per key: another key is not held back by this one.
    let answer = http.get(&url).bearer_auth(&other).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    // And the key is let in again once it waited.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let answer = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}

/// On an append channel each transaction counts against the key's rate:
/// past it, lines are refused with `429` while the channel answers on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_rate_counts_each_transaction_on_an_append_channel() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_key(&data.join("api-keys.jsonl"), "writer", &["read", "write"]);
    let data_dir = data.to_str().unwrap();
    let store = Proc::start(
        &[
            "store",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir,
            "--rate-limit-per-second",
            "5",
        ],
        "store listening on",
    );
    let lines: String = (0..50)
        .map(|i| {
            let line = json!({"id": i, "appends": [
                {"stream_id": format!("s-{i}"), "expected_version": "any", "events": [noted()]}
            ]});
            format!("{line}\n")
        })
        .collect();
    let answer = http()
        .post(format!("{}/appends", store.url))
        .bearer_auth(&token)
        .header("content-type", "application/x-ndjson")
        .body(lines)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let text = answer.text().await.unwrap();
    let outcomes: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(outcomes.len(), 50, "{text}");
    let limited = outcomes
        .iter()
        .filter(|o| o["problem"]["status"] == 429)
        .count();
    assert!(
        (1..50).contains(&limited),
        "{limited} of 50 limited: {text}"
    );
}

/// A new event as the store's API takes it.
fn noted() -> Value {
    json!({"id": uuid::Uuid::new_v4(), "type": "Noted", "data": {"n": 1}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_limited_to_a_stream_prefix_touches_only_those_streams() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys_file = data.join("api-keys.jsonl");
    let tenant = create_key_with(
        &keys_file,
        "tenant-a",
        &["read", "write"],
        &["--stream-prefix", "tenant-a-"],
    );
    let full = create_key(&keys_file, "full", &["read", "write"]);
    let store = Proc::store(&data);
    let http = http();
    let append = |stream: &str, token: &str| {
        http.post(format!("{}/streams/{stream}", store.url))
            .bearer_auth(token)
            .json(&json!({"expected_version": "any", "events": [noted()]}))
            .send()
    };
    assert_eq!(append("tenant-a-1", &tenant).await.unwrap().status(), 200);
    assert_eq!(append("tenant-b-1", &full).await.unwrap().status(), 200);

    let (status, body) = problem(append("tenant-b-2", &tenant).await.unwrap()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["stream"], "tenant-b-2", "{body}");
    for path in ["/streams/tenant-b-1", "/streams/tenant-b-1/load", "/all"] {
        let answer = http
            .get(format!("{}{path}", store.url))
            .bearer_auth(&tenant)
            .send()
            .await
            .unwrap();
        assert_eq!(problem(answer).await.0, 403, "{path}");
    }
    let read = http
        .get(format!("{}/streams/tenant-a-1", store.url))
        .bearer_auth(&tenant)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    // A transaction that reaches outside writes nothing at all.
    let transaction = http
        .post(format!("{}/transactions", store.url))
        .bearer_auth(&tenant)
        .json(&json!({"appends": [
            {"stream_id": "tenant-a-2", "expected_version": "any", "events": [noted()]},
            {"stream_id": "tenant-b-3", "expected_version": "any", "events": [noted()]}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(transaction).await.0, 403);
    let head: Value = http
        .get(format!("{}/head", store.url))
        .bearer_auth(&full)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(head["position"], 2, "{head}");

    // A subscription asking for another tenant's prefix is refused; one
    // asking for nothing in particular sees only the key's streams.
    let refused = http
        .get(format!("{}/subscriptions?stream_prefix=tenant-", store.url))
        .bearer_auth(&tenant)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(refused).await.0, 403);
    let mut subscription = http
        .get(format!("{}/subscriptions", store.url))
        .bearer_auth(&tenant)
        .send()
        .await
        .unwrap();
    assert_eq!(subscription.status(), 200);
    let mut seen = String::new();
    while !seen.contains("tenant-a-1") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), subscription.chunk())
            .await
            .expect("the subscription sent nothing")
            .unwrap()
            .expect("the subscription ended");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Another tenant's event comes later in the log; wait past it.
    let more = tokio::time::timeout(Duration::from_millis(500), subscription.chunk()).await;
    if let Ok(Ok(Some(chunk))) = more {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("tenant-b"), "{seen}");
    drop(store);

    // Such a key is for the store: the command and query APIs refuse it.
    let serve = Proc::serve(&data, &[]);
    let answer = http
        .get(format!("{}/openapi.json", serve.url))
        .bearer_auth(&tenant)
        .send()
        .await
        .unwrap();
    let (status, body) = problem(answer).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("store"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_action_is_in_the_audit_log_with_who_and_what() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keys_file = data.join("api-keys.jsonl");
    let admin = create_key(&keys_file, "operator", &["admin", "write", "read"]);
    let reader = create_key(&keys_file, "reader", &["read"]);
    let serve = Proc::serve(&data, &[]);
    let http = http();
    let id = register(&http, &serve.url, Some(&admin)).await;

    let erased = http
        .delete(format!("{}/customers/{id}/personal-data", serve.url))
        .bearer_auth(&admin)
        .header("x-requested-with", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 200, "{:?}", erased.text().await);
    let rebuilt = http
        .post(format!("{}/projections/customers/rebuild", serve.url))
        .bearer_auth(&admin)
        .header("x-requested-with", "test")
        .send()
        .await
        .unwrap();
    let rebuild_status = rebuilt.status().as_u16();
    // Reading is not an action: no record.
    let listed = http
        .get(format!("{}/projections", serve.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    // A refused attempt is not an admin action either.
    let refused = http
        .post(format!("{}/projections/customers/skip", serve.url))
        .bearer_auth(&reader)
        .header("x-requested-with", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // Admins read it over HTTP; other keys may not.
    let answer = http
        .get(format!("{}/audit", serve.url))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(problem(answer).await.0, 403);
    let records: Vec<Value> = http
        .get(format!("{}/audit", serve.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<(&str, &str, u64)> = records
        .iter()
        .filter(|r| !r["who"].as_str().unwrap().starts_with("cli:"))
        .map(|r| {
            assert!(r["at"].as_str().unwrap().ends_with('Z'), "{r}");
            (
                r["who"].as_str().unwrap(),
                r["action"].as_str().unwrap(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let erasure = format!("DELETE /customers/{id}/personal-data");
    assert_eq!(
        actions,
        [
            ("operator", erasure.as_str(), 200),
            (
                "operator",
                "POST /projections/customers/rebuild",
                u64::from(rebuild_status)
            ),
        ],
        "{records:?}"
    );
    // Key changes are there too, by the operating-system user.
    assert!(
        records.iter().any(|r| r["action"]
            .as_str()
            .unwrap()
            .starts_with("keys create reader")
            && r["who"].as_str().unwrap().starts_with("cli:")),
        "{records:?}"
    );

    // And on the command line, without the process.
    drop(serve);
    let out = output_within(
        annals().args(["audit", "--data-dir", data.to_str().unwrap(), "--last", "1"]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains("/projections/customers/rebuild"),
        "{stdout}"
    );
}

/// An identity provider: a P-256 key, its JWKS, tokens it signs.
struct IdentityProvider {
    key: jsonwebtoken::EncodingKey,
    jwks: Value,
}

impl IdentityProvider {
    fn new() -> Self {
        use p256::pkcs8::EncodePrivateKey;
        let mut bytes = [0u8; 32];
        let secret = loop {
            getrandom::fill(&mut bytes).unwrap();
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                break secret;
            }
        };
        let der = secret.to_pkcs8_der().unwrap();
        let key = jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes());
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256)
                .unwrap();
        jwk.common.key_id = Some("idp-1".into());
        Self {
            key,
            jwks: json!({ "keys": [jwk] }),
        }
    }

    fn token(&self, claims: Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("idp-1".into());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

fn claims(audience: &str, roles: &[&str]) -> Value {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    json!({"iss": "https://id.example", "aud": audience, "sub": "ada", "exp": exp, "roles": roles})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_of_the_identity_provider_stands_in_for_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let idp = IdentityProvider::new();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, idp.jwks.to_string()).unwrap();
    let serve = Proc::serve(
        &data,
        &[
            "--jwt-jwks",
            jwks.to_str().unwrap(),
            "--jwt-issuer",
            "https://id.example",
            "--jwt-audience",
            "annals",
            "--jwt-algorithm",
            "ES256",
        ],
    );
    let http = http();
    let reader = idp.token(claims("annals", &["read"]));
    let writer = idp.token(claims("annals", &["read", "write", "admin"]));
    let elsewhere = idp.token(claims("another-service", &["read", "write", "admin"]));
    // A list read before the views exist is `503 view-not-ready`.
    crate::split::wait_ready(&http, &serve.url).await;

    // No token: authentication is on with a JWKS alone.
    let answer = http
        .get(format!("{}/customers", serve.url))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(answer).await.0, 401);
    let answer = http
        .get(format!("{}/customers", serve.url))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // The reader's roles do not include write.
    let answer = http
        .post(format!("{}/customers", serve.url))
        .bearer_auth(&reader)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(answer).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["required_role"], "write");
    // A token for another audience is refused, and says why.
    let answer = http
        .get(format!("{}/customers", serve.url))
        .bearer_auth(&elsewhere)
        .send()
        .await
        .unwrap();
    assert!(
        answer.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let (status, body) = problem(answer).await;
    assert_eq!(status, 401);
    assert!(
        body["detail"].as_str().unwrap().contains("not valid"),
        "{body}"
    );
    // An admin action by a token's subject is in the audit log by name.
    let id = register(&http, &serve.url, Some(&writer)).await;
    let erased = http
        .delete(format!("{}/customers/{id}/personal-data", serve.url))
        .bearer_auth(&writer)
        .header("x-requested-with", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 200);
    let records: Vec<Value> = http
        .get(format!("{}/audit", serve.url))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        records.iter().any(|r| r["who"] == "jwt:ada"
            && r["action"] == format!("DELETE /customers/{id}/personal-data")),
        "{records:?}"
    );
}
