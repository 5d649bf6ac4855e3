//! TLS between real processes on loopback, with a CA generated here:
//! `annals store`, `command-api`, `projector` and `query-api` all serve
//! HTTPS, the split processes reach the store over HTTPS trusting the CA
//! (`--store-ca`), a command goes in through HTTPS and its view comes back
//! through HTTPS, and `annals status` reads the projector's admin API
//! over HTTPS (`--ca`). A client that does not trust the CA is refused
//! with a certificate error, and so is a split process without
//! `--store-ca`; plain HTTP to a TLS port is told to use HTTPS. Missing or
//! invalid certificate files and a non-loopback address without TLS stop
//! the start with one line; `--insecure` starts with a warning. PostgreSQL
//! is reached over TLS with `sslmode` and `sslrootcert`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::one_line_failure;
use crate::pg::PgDatabase;
use crate::process::{Proc, annals, output_within, start_seen};
use crate::split::{command, eur, query_at};
use annals::testkit::TestCa;

/// `ca`'s certificate file, as the command lines here take it.
fn ca_arg(ca: &TestCa) -> String {
    ca.ca_file().display().to_string()
}

fn client(ca: Option<&Path>) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(http_edge::tls::client_config(ca).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Starts `annals <args> <extra>`.
fn start(args: &[&str], extra: &[String], announce: &str) -> Proc {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(extra.iter().map(String::as_str));
    Proc::start(&all, announce)
}

async fn wait_ready(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = http.get(format!("{url}/health/ready")).send().await;
        if let Ok(response) = &answer
            && response.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "{url} is not ready: {answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_processes_speak_tls_end_to_end() {
    let ca = TestCa::new();
    let tls = ca.serve_flags();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let views = format!("sqlite://{}", dir.path().join("views.sqlite").display());
    let store = start(
        &[
            "store",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &tls,
        "store listening on",
    );
    assert!(store.url.starts_with("https://127.0.0.1:"), "{}", store.url);
    let command_api = start(
        &[
            "command-api",
            "--store",
            &store.url,
            "--store-ca",
            &ca_arg(&ca),
            "--listen",
            "127.0.0.1:0",
        ],
        &tls,
        "command API listening on",
    );
    let projector = start(
        &[
            "projector",
            "--store",
            &store.url,
            "--store-ca",
            &ca_arg(&ca),
            "--database",
            &views,
            "--listen",
            "127.0.0.1:0",
        ],
        &tls,
        "projector listening on",
    );
    let query_api = start(
        &["query-api", "--database", &views, "--listen", "127.0.0.1:0"],
        &tls,
        "query API listening on",
    );
    let http = client(Some(&ca.ca_file()));
    for p in [&store, &command_api, &projector, &query_api] {
        assert!(p.url.starts_with("https://"), "{}", p.url);
        wait_ready(&http, &p.url).await;
    }

    // A command through HTTPS, its view read back through HTTPS.
    let (status, body) = command(
        &http,
        &format!("{}/customers", command_api.url),
        &json!({"name": "Ada", "email": "ada@example.org", "credit_limit": eur(500)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap();
    let position = body["position"].as_u64().unwrap();
    let view = query_at(
        &http,
        &format!("{}/customers/{id}", query_api.url),
        position,
    )
    .await;
    assert_eq!(view["name"], "Ada", "{view}");
    assert_eq!(view["credit_limit"], eur(500), "{view}");

    // The admin CLI over HTTPS, trusting the CA with --ca; without it the
    // certificate is refused in one line.
    let out = output_within(
        annals().args(["status", "--url", &projector.url, "--ca", &ca_arg(&ca)]),
        Duration::from_secs(30),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("customers"), "{stdout}");
    let out = output_within(
        annals().args(["status", "--url", &projector.url]),
        Duration::from_secs(30),
    );
    let line = one_line_failure(&out);
    assert!(line.contains("certificate"), "{line}");

    // A client trusting only the public roots: a certificate error.
    let refused = client(None)
        .get(format!("{}/health/live", query_api.url))
        .send()
        .await
        .unwrap_err();
    let why = http_edge::tls::refused_certificate(&refused);
    assert!(
        why.as_deref().is_some_and(|w| w.contains("UnknownIssuer")),
        "{refused:?}"
    );

    // Plain HTTP to a TLS port: not the route's answer, a 400 that says
    // to use HTTPS.
    let plain = client(None)
        .get(query_api.url.replace("https://", "http://") + "/health/live")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    let problem: Value = plain.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("https://"),
        "{problem}"
    );

    // A split process that does not trust the store's CA stops at once,
    // naming the certificate, rather than waiting for the store.
    let started = Instant::now();
    let out = output_within(
        annals().args([
            "command-api",
            "--store",
            &store.url,
            "--listen",
            "127.0.0.1:0",
        ]),
        Duration::from_secs(60),
    );
    let line = one_line_failure(&out);
    assert!(line.contains("certificate is not trusted"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn missing_or_invalid_certificate_files_are_one_line_errors() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
    )
    .unwrap();
    let key = ca.key_file().display().to_string();
    let cert = ca.cert_file().display().to_string();
    for (cert, key, named) in [
        (missing.to_str().unwrap(), key.as_str(), &missing),
        (cert.as_str(), missing.to_str().unwrap(), &missing),
        (garbage.to_str().unwrap(), key.as_str(), &garbage),
    ] {
        let out = output_within(
            annals().args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data.to_str().unwrap(),
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ]),
            Duration::from_secs(30),
        );
        let line = one_line_failure(&out);
        assert!(line.contains(named.to_str().unwrap()), "{line}");
    }
    assert!(!data.exists(), "the data directory was touched");
    // One of the pair alone, from the environment too.
    let out = output_within(
        annals()
            .args(["query-api", "--database", "sqlite::memory:"])
            .env("ANNALS_TLS_CERT", &cert),
        Duration::from_secs(30),
    );
    let line = one_line_failure(&out);
    assert!(line.contains("--tls-key"), "{line}");
}

#[test]
fn a_non_loopback_address_needs_tls_as_well_as_keys_unless_insecure() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.jsonl");
    let out = output_within(
        annals().args([
            "keys",
            "create",
            "--name",
            "ops",
            "--role",
            "admin",
            "--keys-file",
            keys.to_str().unwrap(),
        ]),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let keys = keys.to_str().unwrap();
    let serve = |data: &str| -> Vec<String> {
        [
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--keys-file",
            keys,
            "--data-dir",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([dir.path().join(data).to_str().unwrap().to_owned()])
        .collect()
    };

    // Keys without TLS: refused, naming TLS alone.
    let args = serve("refused");
    let out = output_within(annals().args(&args), Duration::from_secs(30));
    let line = one_line_failure(&out);
    assert!(line.contains("refusing to serve 0.0.0.0:"), "{line}");
    assert!(line.contains("without TLS:"), "{line}");
    assert!(line.contains("--tls-cert"), "{line}");
    assert!(!line.contains("keys create"), "{line}");
    assert!(!dir.path().join("refused").exists());
    // The same for a split process, before it opens its database.
    let views = dir.path().join("views.sqlite");
    let out = output_within(
        annals().args([
            "query-api",
            "--database",
            &format!("sqlite://{}?mode=rwc", views.display()),
            "--listen",
            "0.0.0.0:0",
            "--keys-file",
            keys,
        ]),
        Duration::from_secs(30),
    );
    let line = one_line_failure(&out);
    assert!(line.contains("without TLS:"), "{line}");
    assert!(!views.exists(), "the view database was touched");

    // Keys and TLS: it serves.
    let mut args = serve("served");
    args.extend(ca.serve_flags());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut child, seen) = start_seen(&args, "listening on");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter()
            .any(|l| l.contains("listening on https://0.0.0.0:")),
        "{seen:?}"
    );
    assert!(!seen.iter().any(|l| l.contains("warning")), "{seen:?}");

    // Keys, no TLS, --insecure: it serves, with the warning at start and
    // on readiness (whose details only a key sees).
    let mut args = serve("insecure");
    args.push("--insecure".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut child, seen) = start_seen(&args, "listening on");
    let port = seen
        .iter()
        .find_map(|l| l.split("listening on http://0.0.0.0:").nth(1))
        .and_then(|port| port.trim().parse::<u16>().ok());
    let ready = port.map(|port| {
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let url = format!("http://127.0.0.1:{port}/health/ready");
            let answer = client(None)
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            answer.json::<Value>().await.unwrap()
        })
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter()
            .any(|l| l.contains("warning: --insecure: serving 0.0.0.0:")
                && l.contains("without TLS")),
        "{seen:?}"
    );
    let ready = ready.unwrap_or_else(|| panic!("no port announced: {seen:?}"));
    assert!(ready.to_string().contains("--insecure"), "{ready}");
}

/// The self-signed certificate the local PostgreSQL serves (`ssl = on`).
const PG_CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_over_tls_verifies_the_server_against_sslrootcert() {
    use sqlx::Connection;
    let Some(db) = PgDatabase::create("tls").await else {
        return;
    };
    assert!(
        Path::new(PG_CERT).exists(),
        "the PostgreSQL server's certificate {PG_CERT} is needed"
    );
    let other_ca = TestCa::new();
    let connect = |url: String| async move {
        tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(&url))
            .await
            .unwrap_or_else(|_| panic!("{url}: no answer within 10 s"))
    };
    let error_of = |r: Result<sqlx::PgConnection, sqlx::Error>| match r {
        Ok(_) => panic!("connected"),
        Err(e) => e.to_string(),
    };

    // Verification on without the right root: refused, naming the
    // certificate.
    let no_root = error_of(connect(format!("{}?sslmode=verify-full", db.url)).await);
    assert!(no_root.contains("certificate"), "{no_root}");
    let wrong_root = error_of(
        connect(format!(
            "{}?sslmode=verify-ca&sslrootcert={}",
            db.url,
            ca_arg(&other_ca)
        ))
        .await,
    );
    assert!(wrong_root.contains("certificate"), "{wrong_root}");
    // The right root, but a name the certificate (`localhost`) does not
    // carry: verify-full refuses, verify-ca accepts.
    let port = db.server_addr().rsplit_once(':').unwrap().1.to_owned();
    let wrong_name = error_of(
        connect(format!(
            "{}?sslmode=verify-full&sslrootcert={PG_CERT}",
            db.url_through(&format!("127.0.0.1:{port}"))
        ))
        .await,
    );
    assert!(wrong_name.contains("certificate"), "{wrong_name}");
    let verified_ca = format!(
        "{}?sslmode=verify-ca&sslrootcert={PG_CERT}",
        db.url_through(&format!("127.0.0.1:{port}"))
    );
    let mut conn = connect(verified_ca.clone()).await.unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(encrypted);
    let _ = conn.close().await;
    // And verify-full by the certificate's own name.
    let by_name = format!(
        "{}?sslmode=verify-full&sslrootcert={PG_CERT}",
        db.url_through(&format!("localhost:{port}"))
    );
    let conn = connect(by_name).await.unwrap();
    let _ = conn.close().await;

    // A query API on that URL: ready, its views over TLS.
    let query_api = Proc::start(
        &[
            "query-api",
            "--database",
            &verified_ca,
            "--listen",
            "127.0.0.1:0",
        ],
        "query API listening on",
    );
    wait_ready(&client(None), &query_api.url).await;
}
