//! The bank as its users run it: the real `annals-bank` binary serving on
//! a port of loopback, driven over HTTP. Accounts open and take money; a
//! transfer completes through the saga and one to a closed account comes
//! back; a stale `If-Match` is refused; an idempotent deposit is replayed
//! across a restart without a second append; queries read their writes,
//! filter and page; a rebuild through the command line leaves the view as
//! it was; a holder is forgotten and the account goes on. Once with the
//! views in SQLite, once in PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use annals::testkit::{Service, TestDatabase};

/// How long any one wait may take before the test fails (CI is a loaded
/// 2-core machine).
const WAIT_MAX: Duration = Duration::from_secs(60);

/// An answer: status, headers and body (JSON, or `null`).
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `position` of a command's answer.
    fn position(&self) -> u64 {
        self.body["position"].as_u64().unwrap()
    }
}

struct Bank {
    http: reqwest::Client,
    url: String,
}

impl Bank {
    fn new(url: &str) -> Bank {
        http_edge::tls::install_default_provider();
        Bank {
            http: reqwest::Client::builder()
                .timeout(WAIT_MAX)
                .build()
                .unwrap(),
            url: url.to_owned(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A `POST` with `body` (none for `null`).
    async fn post(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.http.post(format!("{}{path}", self.url));
        request = if body.is_null() {
            // A program's bodiless POST says so (a form's could not).
            request.header("x-requested-with", "test")
        } else {
            request.json(&body)
        };
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send(
            self.http
                .delete(format!("{}{path}", self.url))
                .header("x-requested-with", "test"),
        )
        .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.url)))
            .await
    }

    /// Opens an account; its id.
    async fn open(&self, holder: &str, currency: &str) -> String {
        let opened = self
            .post(
                "/accounts",
                json!({"holder": holder, "currency": currency}),
                &[],
            )
            .await;
        assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
        let id = opened.body["id"].as_str().unwrap().to_owned();
        assert_eq!(opened.header("location"), Some(&*format!("/accounts/{id}")));
        id
    }

    async fn deposit(&self, account: &str, amount: i64, headers: &[(&str, &str)]) -> Answer {
        self.post(
            &format!("/accounts/{account}/deposits"),
            json!({"amount": amount, "currency": "EUR"}),
            headers,
        )
        .await
    }

    /// The account as the view holds it once it reflects `position`.
    async fn account(&self, id: &str, position: u64) -> Value {
        let got = self
            .get(&format!("/accounts/{id}?min_position={position}"))
            .await;
        assert_eq!(got.status, StatusCode::OK, "{}", got.body);
        let reflected: u64 = got.header("annals-position").unwrap().parse().unwrap();
        assert!(reflected >= position, "{reflected} < {position}");
        got.body
    }

    /// Requests a transfer; its id.
    async fn transfer(&self, from: &str, to: &str, amount: i64) -> String {
        let requested = self
            .post(
                "/transfers",
                json!({
                    "from_account": from,
                    "to_account": to,
                    "amount": {"amount": amount, "currency": "EUR"},
                }),
                &[],
            )
            .await;
        assert_eq!(requested.status, StatusCode::CREATED, "{}", requested.body);
        requested.body["id"].as_str().unwrap().to_owned()
    }

    /// The transfer once the saga has finished it (completed or failed).
    async fn finished(&self, id: &str) -> Value {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let got = self.get(&format!("/transfers/{id}")).await;
            if got.status == StatusCode::OK
                && matches!(got.body["status"].as_str(), Some("completed" | "failed"))
            {
                return got.body;
            }
            assert!(
                Instant::now() < deadline,
                "transfer {id} not finished within {WAIT_MAX:?}: {} {}",
                got.status,
                got.body
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every account of a filtered listing, page by page; the number of
    /// pages too.
    async fn all_accounts(&self, query: &str, limit: usize) -> (Vec<Value>, usize) {
        let mut items = Vec::new();
        let mut pages = 0;
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/accounts?{query}&limit={limit}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.get(&path).await;
            assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
            let got = page.body["items"].as_array().unwrap();
            assert!(got.len() <= limit);
            items.extend(got.iter().cloned());
            pages += 1;
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return (items, pages),
            }
        }
    }
}

/// The whole story, on the views `views` names (`--database <url>`, or
/// none for SQLite in the data directory).
async fn scenario(views: &[&str]) {
    let mut service = Service::builder(env!("CARGO_BIN_EXE_annals-bank"))
        .args(views)
        .start();
    assert_eq!(
        service.name(),
        "bank",
        "it announces itself by the App's name"
    );
    let bank = Bank::new(service.url());

    // Accounts open; field errors are reported all at once.
    let refused = bank
        .post(
            "/accounts",
            json!({"holder": " ", "currency": "eur", "overdraft_limit": -1}),
            &[],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let pointers: Vec<&str> = refused.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/holder", "/currency", "/overdraft_limit"]);
    let alice = bank.open("Alice Adams", "EUR").await;
    let bob = bank.open("Bob Brown", "EUR").await;
    let carol = bank.open("Carol Clark", "EUR").await;
    let dave = bank.open("Dave Dunn", "USD").await;

    // An idempotent deposit.
    let key = [("Idempotency-Key", "deposit-alice-1")];
    let deposited = bank.deposit(&alice, 10_000, &key).await;
    assert_eq!(deposited.status, StatusCode::OK, "{}", deposited.body);
    assert_eq!(deposited.header("etag"), Some("\"2\""));
    assert_eq!(deposited.header("idempotent-replayed"), None);
    let again = bank.deposit(&alice, 10_000, &key).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, deposited.body);

    // Read your write.
    let view = bank.account(&alice, deposited.position()).await;
    assert_eq!(view["balance"], 10_000, "{view}");
    assert_eq!(view["holder"], "Alice Adams");
    assert_eq!(view["version"], 2);

    // A transfer the saga completes.
    let paid = bank.transfer(&alice, &bob, 2_500).await;
    let transfer = bank.finished(&paid).await;
    assert_eq!(transfer["status"], "completed", "{transfer}");
    assert!(transfer["failure"].is_null(), "{transfer}");
    let position = transfer["position"].as_u64().unwrap();
    let view = bank.account(&alice, position).await;
    assert_eq!(view["balance"], 7_500, "{view}");
    assert_eq!(view["transfers"]["sent"], 1);
    assert_eq!(view["transfers"]["in_flight"], 0);
    assert_eq!(bank.account(&bob, position).await["balance"], 2_500);

    // A transfer to a closed account comes back.
    let closed = bank
        .post(&format!("/accounts/{carol}/close"), Value::Null, &[])
        .await;
    assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
    let refused = bank.transfer(&alice, &carol, 1_000).await;
    let transfer = bank.finished(&refused).await;
    assert_eq!(transfer["status"], "failed", "{transfer}");
    assert_eq!(transfer["failure"]["rule"], "account-closed", "{transfer}");
    let position = transfer["position"].as_u64().unwrap();
    let view = bank.account(&alice, position).await;
    assert_eq!(view["balance"], 7_500, "{view}");
    assert_eq!(view["transfers"]["returned"], 1, "{view}");
    assert_eq!(view["transfers"]["in_flight"], 0, "{view}");

    // A stale If-Match: 412 with both versions.
    let stale = bank
        .post(
            &format!("/accounts/{bob}/withdrawals"),
            json!({"amount": 100, "currency": "EUR"}),
            &[("If-Match", "\"1\"")],
        )
        .await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.body
    );
    assert_eq!(stale.body["expected_version"], 1);
    let current = stale.body["current_version"].as_u64().unwrap();
    assert!(current > 1, "{}", stale.body);
    assert_eq!(stale.header("etag"), Some(&*format!("\"{current}\"")));
    let etag = format!("\"{current}\"");
    let withdrawn = bank
        .post(
            &format!("/accounts/{bob}/withdrawals"),
            json!({"amount": 100, "currency": "EUR"}),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(withdrawn.status, StatusCode::OK, "{}", withdrawn.body);
    let view = bank.account(&bob, withdrawn.position()).await;
    assert_eq!(view["balance"], 2_400);

    // Filters and pages: more EUR accounts than a page holds.
    let mut last = 0;
    for n in 0..5 {
        let id = bank.open(&format!("Extra {n}"), "EUR").await;
        last = bank.deposit(&id, 1, &[]).await.position();
    }
    bank.account(&alice, last).await;
    let (eur, pages) = bank.all_accounts("currency=EUR", 2).await;
    assert_eq!(eur.len(), 8);
    assert_eq!(pages, 4);
    let ids: Vec<&str> = eur.iter().map(|a| a["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(ids, sorted, "pages are in id order, without repeats");
    assert!(eur.iter().all(|a| a["currency"] == "EUR"));
    let (closed, _) = bank.all_accounts("currency=EUR&status=closed", 2).await;
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0]["id"], carol.as_str());
    let bad = bank.get("/accounts?status=frozen").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);

    // A holder is forgotten; the account goes on.
    let forgotten = bank.delete(&format!("/accounts/{dave}/holder")).await;
    assert_eq!(forgotten.status, StatusCode::OK, "{}", forgotten.body);
    let view = bank.account(&dave, forgotten.position()).await;
    assert_eq!(view["holder"], "[erased]", "{view}");
    let again = bank.delete(&format!("/accounts/{dave}/holder")).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["version"], forgotten.body["version"]);
    let usd = bank
        .post(
            &format!("/accounts/{dave}/deposits"),
            json!({"amount": 700, "currency": "USD"}),
            &[],
        )
        .await;
    assert_eq!(usd.status, StatusCode::OK, "{}", usd.body);
    let view = bank.account(&dave, usd.position()).await;
    assert_eq!(view["balance"], 700);
    assert_eq!(view["holder"], "[erased]");

    // A restart: the idempotent deposit is still answered from its record.
    service.restart();
    let bank = Bank::new(service.url());
    let replayed = bank.deposit(&alice, 10_000, &key).await;
    assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.body);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.body, deposited.body);
    let before = bank.account(&alice, last).await;
    assert_eq!(before["balance"], 7_500, "nothing was appended twice");

    // A rebuild through the command line gives the same view.
    let everything: Vec<Value> = bank.all_accounts("currency=EUR", 200).await.0;
    let out = service.run(&["rebuild", "accounts", "--url", service.url()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("accounts: rebuilt from the log"),
        "{stdout}"
    );
    assert_eq!(bank.all_accounts("currency=EUR", 200).await.0, everything);
    // The name stays erased: the rebuild read it from the store, erased.
    assert_eq!(bank.account(&dave, 0).await["holder"], "[erased]");

    // The document lists the bank's routes.
    let doc = bank.get("/openapi.json").await;
    for path in [
        "/accounts",
        "/accounts/{id}",
        "/accounts/{id}/deposits",
        "/accounts/{id}/holder",
        "/transfers",
        "/transfers/{id}",
    ] {
        assert!(doc.body["paths"][path].is_object(), "{path}");
    }

    // A crash (SIGKILL) loses nothing that was answered.
    service.kill();
    service.start_again();
    let bank = Bank::new(service.url());
    assert_eq!(bank.account(&alice, last).await["balance"], 7_500);
    assert!(service.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_serves_its_accounts_and_transfers_with_views_in_sqlite() {
    scenario(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_serves_its_accounts_and_transfers_with_views_in_postgres() {
    let Some(db) = TestDatabase::create("bank_service").await else {
        return;
    };
    scenario(&["--database", db.url()]).await;
}

/// The README shows `src/main.rs` whole, as it is.
#[test]
fn the_readme_shows_the_whole_service() {
    let main = include_str!("../../src/main.rs");
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(main.trim()),
        "README.md must show src/main.rs as it is"
    );
}
