//! The binary's command line, run as a real process: help, bad flags, an
//! unusable data directory, a locked one, graceful shutdown on SIGTERM.

use std::process::Command;
use std::time::Duration;

pub use crate::process::annals;
use crate::process::{Proc, output_within};

/// Starts `annals <args> --data-dir <dir>` and waits for its announcement.
pub fn start(args: &[&str], dir: &std::path::Path, announce: &str) -> Proc {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--data-dir");
    all.push(dir.to_str().unwrap());
    Proc::start(&all, announce)
}

/// Runs a command that is expected to end on its own, within a minute.
fn run(command: &mut Command) -> std::process::Output {
    output_within(command, Duration::from_secs(60))
}

pub fn one_line_failure(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(
        stderr.lines().count(),
        1,
        "expected one line, got:\n{stderr}"
    );
    assert!(stderr.starts_with("annals: "), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    stderr
}

#[test]
fn help_reads_as_a_manual() {
    let out = run(annals().arg("--help"));
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "store", "verify"] {
        assert!(help.contains(sub), "{help}");
    }
    let out = run(annals().args(["store", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("ANNALS_DATA_DIR") && help.contains("--listen"),
        "{help}"
    );
}

#[test]
fn an_unknown_flag_is_one_clear_line_and_a_failure() {
    let out = run(annals().args(["serve", "--no-such-flag"]));
    let line = one_line_failure(&out);
    assert!(line.contains("--no-such-flag"), "{line}");
    assert_eq!(out.status.code(), Some(2));
    let out = run(annals().args(["store", "--segment-bytes-max", "lots"]));
    one_line_failure(&out);
}

#[test]
fn an_unusable_data_directory_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let out = run(annals()
        .args(["store", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("data")));
    let line = one_line_failure(&out);
    assert!(line.contains("cannot open the data directory"), "{line}");
    assert_eq!(
        line.matches("Not a directory").count(),
        1,
        "the OS error is said once: {line}"
    );

    let newer = dir.path().join("newer");
    std::fs::create_dir_all(&newer).unwrap();
    std::fs::write(newer.join("FORMAT"), "annals-data-format 9\n").unwrap();
    let out = run(annals()
        .args(["store", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&newer));
    let line = one_line_failure(&out);
    assert!(line.contains("format version 9"), "{line}");
}

#[test]
fn a_locked_data_directory_is_refused_and_sigterm_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(
        &["store", "--listen", "127.0.0.1:0"],
        dir.path(),
        "listening on",
    );
    let addr = first.url.clone();
    assert!(addr.starts_with("http://127.0.0.1:"), "{addr}");
    let out = run(annals()
        .args(["store", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path()));
    let line = one_line_failure(&out);
    assert!(line.contains("in use by another process"), "{line}");
    let status = first.terminate();
    assert!(status.success(), "{status:?}");
    // The lock went with the process.
    let mut again = start(
        &["store", "--listen", "127.0.0.1:0"],
        dir.path(),
        "listening on",
    );
    assert!(again.terminate().success());
}

#[test]
fn verify_reports_a_healthy_directory_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    // A directory a store created (an empty one is refused: see the
    // fault suite).
    let mut store = start(
        &["store", "--listen", "127.0.0.1:0"],
        dir.path(),
        "listening on",
    );
    assert!(store.terminate().success());
    let ok = run(annals().args(["verify", "--data-dir"]).arg(dir.path()));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let json = run(annals()
        .args(["verify", "--json", "--data-dir"])
        .arg(dir.path()));
    assert!(json.status.success());
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["segments"], 1, "{report}");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");

    std::fs::create_dir_all(dir.path().join("events")).unwrap();
    std::fs::write(
        dir.path().join("events/0000000001.seg"),
        b"not a segment header at all, but long enough to be read as one........",
    )
    .unwrap();
    let bad = run(annals().args(["verify", "--data-dir"]).arg(dir.path()));
    assert_eq!(bad.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(stdout.contains("DAMAGE"), "{stdout}");
    let json = run(annals()
        .args(["verify", "--json", "--data-dir"])
        .arg(dir.path()));
    assert_eq!(json.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    let problem = &report["problems"][0];
    assert!(
        problem["file"]
            .as_str()
            .unwrap()
            .ends_with("0000000001.seg"),
        "{report}"
    );
    assert!(problem["offset"].is_u64() && problem["detail"].is_string());

    // The key store counts, here in the per-subject files of an old
    // release (read only: the fixture is not migrated).
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/store-v1");
    let old = run(annals().args(["verify", "--data-dir"]).arg(&fixture));
    let stdout = String::from_utf8_lossy(&old.stdout);
    assert!(old.status.success(), "{stdout}");
    assert!(stdout.contains("3 live subject keys"), "{stdout}");
    assert!(
        stdout.contains("migrated into a key log on open"),
        "{stdout}"
    );
    assert!(!fixture.join("keys").join("keys.log").exists());
}

#[test]
fn every_subcommand_has_a_manual_page_naming_its_environment_variables() {
    let out = run(annals().arg("--help"));
    let help = String::from_utf8_lossy(&out.stdout);
    for (sub, env) in [
        ("serve", "ANNALS_DATABASE_URL"),
        ("command-api", "ANNALS_STORE_URL"),
        ("projector", "ANNALS_BATCH_EVENTS_MAX"),
        ("query-api", "ANNALS_MIN_POSITION_WAIT_MS"),
        ("rebuild", "ANNALS_URL"),
        ("verify", "ANNALS_DATA_DIR"),
    ] {
        assert!(help.contains(sub), "{help}");
        let out = run(annals().args([sub, "--help"]));
        assert!(out.status.success());
        let page = String::from_utf8_lossy(&out.stdout);
        assert!(page.contains(env), "{sub}: {page}");
    }
}

#[test]
fn missing_or_bad_settings_of_the_split_processes_are_one_clear_line() {
    // Limits outside their range.
    for (sub, flag) in [
        ("serve", "--batch-events-max"),
        ("serve", "--in-flight-requests-max"),
        ("query-api", "--page-size-max"),
    ] {
        let out = run(annals().args([sub, flag, "0"]));
        let line = one_line_failure(&out);
        assert!(
            line.contains(flag) && line.contains("not in 1..="),
            "{line}"
        );
        assert!(!line.contains("For more information"), "{line}");
    }

    // No store given.
    let out = run(annals().arg("command-api"));
    let line = one_line_failure(&out);
    assert!(line.contains("--store"), "{line}");
    assert_eq!(out.status.code(), Some(2));

    // A store that is not there: give up after the wait, and say where.
    let out = run(annals()
        .args([
            "command-api",
            "--store",
            "http://127.0.0.1:9",
            "--store-wait-seconds",
            "0",
        ])
        .env("ANNALS_LOG", "off"));
    let line = one_line_failure(&out);
    assert!(
        line.contains("cannot reach the store at http://127.0.0.1:9"),
        "{line}"
    );

    // A store URL that is no URL.
    let out = run(annals().args([
        "projector",
        "--store",
        "ftp://x",
        "--database",
        "sqlite::memory:",
    ]));
    let line = one_line_failure(&out);
    assert!(line.contains("ftp://x"), "{line}");

    // A database URL of no known kind.
    let out = run(annals().args([
        "query-api",
        "--database",
        "mysql://x/y",
        "--listen",
        "127.0.0.1:0",
    ]));
    let line = one_line_failure(&out);
    assert!(line.contains("cannot open the view database"), "{line}");

    // An address that is no address.
    let dir = tempfile::tempdir().unwrap();
    let out = run(annals()
        .args(["serve", "--listen", "nowhere", "--data-dir"])
        .arg(dir.path()));
    let line = one_line_failure(&out);
    assert!(line.contains("cannot listen on nowhere"), "{line}");

    // A rebuild with nobody to ask.
    let out = run(annals().args(["rebuild", "customers", "--url", "http://127.0.0.1:9"]));
    let line = one_line_failure(&out);
    assert!(line.contains("cannot rebuild customers"), "{line}");

    // The admin commands ask :8080 unless told; in a split deployment the
    // projector is elsewhere, which the failure says how to give.
    let out = run(annals()
        .args(["status"])
        .env("ANNALS_URL", "http://127.0.0.1:9"));
    let line = one_line_failure(&out);
    assert!(line.contains("--url"), "{line}");
}

/// A rebuild asked for while one is running (as one a restarted process
/// resumes by itself) follows that one instead of being refused, and with
/// stdout a pipe prints its progress as plain lines, not a redrawn bar.
#[test]
fn a_rebuild_asked_for_while_one_runs_follows_it_with_plain_progress_lines() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Instant;

    use sqlx::{Connection, Executor};

    let dir = tempfile::tempdir().unwrap();
    let serve = start(
        &["serve", "--listen", "127.0.0.1:0"],
        dir.path(),
        "listening on",
    );
    let url = serve.url.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = crate::split::http();
    let mut lock = rt.block_on(async {
        crate::split::wait_ready(&http, &url).await;
        let mut last = 0;
        for i in 0..3 {
            let (status, body) = crate::split::command(
                &http,
                &format!("{url}/customers"),
                &serde_json::json!({"name": format!("Customer {i}"), "email": "c@example.org",
                                    "credit_limit": crate::split::eur(500)}),
            )
            .await;
            assert_eq!(status, 201, "{body}");
            last = body["position"].as_u64().unwrap();
        }
        crate::split::query_at(&http, &format!("{url}/customers"), last).await;
        // Another writer holds the views' write lock: the rebuild started
        // next runs, waiting for it.
        let views = dir.path().join("views.sqlite");
        let mut lock = sqlx::SqliteConnection::connect(&format!("sqlite://{}", views.display()))
            .await
            .unwrap();
        lock.execute("BEGIN IMMEDIATE").await.unwrap();
        let started = http
            .post(format!("{url}/projections/customers/rebuild"))
            .header("x-requested-with", "test")
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 202);
        lock
    });

    let mut child = annals()
        .args(["rebuild", "customers", "--url", &url])
        .env("ANNALS_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|l: &String| l.contains("events/s")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "no progress while a rebuild runs; stdout: {seen:?}, stderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("already running")),
        "{seen:?}"
    );
    rt.block_on(lock.execute("ROLLBACK")).unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the rebuild did not finish");
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    seen.extend(lines_rx.try_iter());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let last = seen.last().cloned().unwrap_or_default();
    assert!(last.contains("swapped in at position"), "{seen:?}");
    for line in &seen {
        assert!(
            !line.contains('\r') && !line.contains('\x1b'),
            "a redrawn bar in {line:?}"
        );
    }
    drop(serve);
}

#[test]
fn serve_locks_its_data_directory_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(
        &["serve", "--listen", "127.0.0.1:0"],
        dir.path(),
        "listening on",
    );
    let addr = first.url.clone();
    let out = run(annals()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path()));
    let line = one_line_failure(&out);
    assert!(line.contains("in use by another process"), "{line}");
    // An offline rebuild is refused the same way while serve runs.
    let out = run(annals()
        .args(["rebuild", "customers", "--offline", "--data-dir"])
        .arg(dir.path()));
    let line = one_line_failure(&out);
    assert!(line.contains("in use by another process"), "{line}");

    // The one process answers commands, queries, admin and health.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = crate::split::http();
        crate::split::wait_ready(&http, &addr).await;
        let (status, body) = crate::split::command(
            &http,
            &format!("{addr}/customers"),
            &serde_json::json!({"name": "Ada", "email": "ada@example.org",
                                "credit_limit": crate::split::eur(500)}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().unwrap();
        let position = body["position"].as_u64().unwrap();
        let seen = crate::split::query_at(&http, &format!("{addr}/customers/{id}"), position).await;
        assert_eq!(seen["name"], "Ada");
        let admin = http
            .get(format!("{addr}/projections"))
            .send()
            .await
            .unwrap();
        assert_eq!(admin.status(), 200);
        let wrong = http
            .delete(format!("{addr}/customers"))
            .header("x-requested-with", "test")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 405);
        assert_eq!(wrong.headers()["content-type"], "application/problem+json");
    });

    let status = first.terminate();
    assert!(status.success(), "{status:?}");
    // The lock went with the process; the offline rebuild runs now.
    let out = run(annals()
        .args(["rebuild", "customers", "--offline", "--data-dir"])
        .arg(dir.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("swapped in at position 1"), "{stdout}");
}

#[test]
fn an_offline_rebuild_of_a_directory_without_a_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(annals()
        .args(["rebuild", "customers", "--offline", "--data-dir"])
        .arg(dir.path().join("typo")));
    let line = one_line_failure(&out);
    assert!(line.contains("holds no event log to read"), "{line}");
    assert!(!dir.path().join("typo").exists(), "nothing was created");
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut child = annals()
        .args(["store", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("ANNALS_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Read until the announcement, then stop it and read the rest.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&seen).contains("listening on") {
        assert!(std::time::Instant::now() < deadline, "no announcement");
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "exited early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    stderr.read_to_end(&mut seen).unwrap();
    assert!(child.wait().unwrap().success());
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("INFO"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a pipe: {text:?}");
}

#[test]
fn the_applications_settings_are_flags_of_the_processes_that_run_sagas() {
    for sub in ["serve", "command-api"] {
        let out = run(annals().args([sub, "--help"]));
        assert!(out.status.success());
        let page = String::from_utf8_lossy(&out.stdout);
        for expected in [
            "--order-decision-timeout-ms <MS>",
            "ANNALS_ORDER_DECISION_TIMEOUT_MS",
            "[default: 30000]",
        ] {
            assert!(page.contains(expected), "{sub}: {expected}: {page}");
        }
    }

    // A bad value is one line and a usage error, like any flag's.
    for (sub, value) in [("serve", "soon"), ("serve", "0"), ("command-api", "1.5")] {
        let out = run(annals().args([sub, "--order-decision-timeout-ms", value]));
        let line = one_line_failure(&out);
        assert_eq!(out.status.code(), Some(2), "{line}");
        assert!(line.contains("--order-decision-timeout-ms"), "{line}");
    }
    let out = run(annals()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ANNALS_ORDER_DECISION_TIMEOUT_MS", "soon"));
    let line = one_line_failure(&out);
    assert!(line.contains("soon"), "{line}");

    // Processes that run no saga do not take it.
    let out = run(annals().args(["store", "--order-decision-timeout-ms", "5"]));
    let line = one_line_failure(&out);
    assert!(line.contains("--order-decision-timeout-ms"), "{line}");
}

/// `annals status --json` prints the admin API's answer for a script to
/// read, with the same exit status as the table.
#[test]
fn status_prints_the_projections_as_json_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let serve = start(
        &["serve", "--listen", "127.0.0.1:0"],
        dir.path(),
        "listening on",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(crate::split::wait_ready(&crate::split::http(), &serve.url));
    let out = run(annals().args(["status", "--json", "--url", &serve.url]));
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let projections = answer["projections"].as_array().unwrap();
    let names: Vec<&str> = projections
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"customers"), "{answer}");
    for projection in projections {
        assert!(projection["state"].is_string(), "{projection}");
        assert!(projection["position"].is_u64(), "{projection}");
    }
}

/// `annals dump` prints the log as JSON lines through decryption (an
/// erased customer's name as "[erased]", another's in clear), a stream
/// or a range of it, and refuses a range backwards or a directory in use
/// with one line.
#[test]
fn dump_prints_events_as_the_apis_serve_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = start(
        &["serve", "--listen", "127.0.0.1:0"],
        dir.path(),
        "listening on",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = crate::split::http();
    let (kept, erased) = rt.block_on(async {
        crate::split::wait_ready(&http, &serve.url).await;
        let mut ids = Vec::new();
        for name in ["Ada Lovelace", "Hedy Lamarr"] {
            let (status, body) = crate::split::command(
                &http,
                &format!("{}/customers", serve.url),
                &serde_json::json!({"name": name, "email": "x@example.org",
                                    "credit_limit": crate::split::eur(100)}),
            )
            .await;
            assert_eq!(status, 201, "{body}");
            ids.push(body["id"].as_str().unwrap().to_owned());
        }
        let erase = http
            .delete(format!("{}/customers/{}/personal-data", serve.url, ids[1]))
            .header("x-requested-with", "test")
            .send()
            .await
            .unwrap();
        assert_eq!(erase.status(), 200);
        (ids[0].clone(), ids[1].clone())
    });

    // While serve holds the directory: one line.
    let busy = run(annals().args(["dump", "--data-dir"]).arg(dir.path()));
    let line = one_line_failure(&busy);
    assert!(line.contains("in use by another process"), "{line}");
    assert!(serve.terminate().success());

    let lines = |extra: &[&str]| -> Vec<serde_json::Value> {
        let out = run(annals()
            .args(["dump", "--data-dir"])
            .arg(dir.path())
            .args(extra));
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let all = lines(&[]);
    let positions: Vec<u64> = all
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (1..=positions.len() as u64).collect::<Vec<_>>());
    let registered = |id: &str| {
        all.iter()
            .find(|e| e["stream_id"] == format!("customer-{id}") && e["version"] == 1)
            .unwrap_or_else(|| panic!("no registration of {id}"))
            .clone()
    };
    assert_eq!(registered(&kept)["data"]["name"], "Ada Lovelace");
    assert_eq!(registered(&erased)["data"]["name"], "[erased]");

    let stream = format!("customer-{kept}");
    let one = lines(&["--stream", &stream]);
    assert!(!one.is_empty());
    assert!(one.iter().all(|e| e["stream_id"] == stream.as_str()));
    assert_eq!(one[0]["version"], 1);
    let range = lines(&["--from", "2", "--to", "3"]);
    let positions: Vec<u64> = range
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, [2, 3]);

    let backwards = run(annals()
        .args(["dump", "--from", "3", "--to", "2", "--data-dir"])
        .arg(dir.path()));
    let line = one_line_failure(&backwards);
    assert!(line.contains("before --from"), "{line}");
}

/// `annals dump --store URL` reads a running `annals store`; an
/// unreachable one is one line.
#[test]
fn dump_reads_a_running_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Proc::store(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(crate::split::append_noted(&store.url, "dump-test", 2));
    let out = run(annals().args(["dump", "--store", &store.url, "--stream", "dump-test"]));
    assert!(out.status.success(), "{out:?}");
    let events: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let data: Vec<&serde_json::Value> = events.iter().map(|e| &e["data"]).collect();
    assert_eq!(
        data,
        [&serde_json::json!({"n": 1}), &serde_json::json!({"n": 2})]
    );
    let out = run(annals().args(["dump", "--store", &store.url, "--from", "2"]));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);

    let out = run(annals().args(["dump", "--store", "http://127.0.0.1:9"]));
    let line = one_line_failure(&out);
    assert!(line.contains("cannot reach the store"), "{line}");
}
