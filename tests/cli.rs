//! The binary's command line, run as a real process: help, bad flags, an
//! unusable data directory, a locked one, graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn annals() -> Command {
    Command::new(env!("CARGO_BIN_EXE_annals"))
}

/// Starts `annals <args>` and waits for the line announcing its address.
pub fn start(args: &[&str], dir: &std::path::Path, announce: &str) -> (Child, String) {
    let mut child = annals()
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("ANNALS_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("annals {args:?} exited before announcing its address"))
            .unwrap();
        if let Some(rest) = line.split(announce).nth(1) {
            break rest.trim().to_string();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = rustix::process::Pid::from_child(child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("annals did not stop within 5 s of SIGTERM");
}

fn one_line_failure(out: &std::process::Output) -> String {
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
    let out = annals().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "store", "verify"] {
        assert!(help.contains(sub), "{help}");
    }
    let out = annals().args(["store", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("ANNALS_DATA_DIR") && help.contains("--listen"),
        "{help}"
    );
}

#[test]
fn an_unknown_flag_is_one_clear_line_and_a_failure() {
    let out = annals().args(["serve", "--no-such-flag"]).output().unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("--no-such-flag"), "{line}");
    assert_eq!(out.status.code(), Some(2));
    let out = annals()
        .args(["store", "--segment-bytes-max", "lots"])
        .output()
        .unwrap();
    one_line_failure(&out);
}

#[test]
fn an_unusable_data_directory_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let out = annals()
        .args(["store", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("data"))
        .output()
        .unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("cannot open the data directory"), "{line}");

    let newer = dir.path().join("newer");
    std::fs::create_dir_all(&newer).unwrap();
    std::fs::write(newer.join("FORMAT"), "annals-data-format 9\n").unwrap();
    let out = annals()
        .args(["store", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&newer)
        .output()
        .unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("format version 9"), "{line}");
}

#[test]
fn a_locked_data_directory_is_refused_and_sigterm_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, addr) = start(
        &["store", "--listen", "127.0.0.1:0"],
        dir.path(),
        "listening on",
    );
    assert!(addr.starts_with("http://127.0.0.1:"), "{addr}");
    let out = annals()
        .args(["store", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("in use by another process"), "{line}");
    let status = terminate(&mut first);
    assert!(status.success(), "{status:?}");
    // The lock went with the process.
    let (mut again, _) = start(
        &["store", "--listen", "127.0.0.1:0"],
        dir.path(),
        "listening on",
    );
    assert!(terminate(&mut again).success());
}

#[test]
fn verify_reports_a_healthy_directory_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let ok = annals()
        .args(["verify", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    std::fs::create_dir_all(dir.path().join("events")).unwrap();
    std::fs::write(
        dir.path().join("events/0000000001.seg"),
        b"not a segment header at all, but long enough to be read as one........",
    )
    .unwrap();
    let bad = annals()
        .args(["verify", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(stdout.contains("DAMAGE"), "{stdout}");
}

#[test]
fn every_subcommand_has_a_manual_page_naming_its_environment_variables() {
    let out = annals().arg("--help").output().unwrap();
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
        let out = annals().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success());
        let page = String::from_utf8_lossy(&out.stdout);
        assert!(page.contains(env), "{sub}: {page}");
    }
}

#[test]
fn missing_or_bad_settings_of_the_split_processes_are_one_clear_line() {
    // No store given.
    let out = annals().arg("command-api").output().unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("--store"), "{line}");
    assert_eq!(out.status.code(), Some(2));

    // A store that is not there: give up after the wait, and say where.
    let out = annals()
        .args([
            "command-api",
            "--store",
            "http://127.0.0.1:9",
            "--store-wait-seconds",
            "0",
        ])
        .env("ANNALS_LOG", "off")
        .output()
        .unwrap();
    let line = one_line_failure(&out);
    assert!(
        line.contains("cannot reach the store at http://127.0.0.1:9"),
        "{line}"
    );

    // A store URL that is no URL.
    let out = annals()
        .args([
            "projector",
            "--store",
            "ftp://x",
            "--database",
            "sqlite::memory:",
        ])
        .output()
        .unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("ftp://x"), "{line}");

    // A database URL of no known kind.
    let out = annals()
        .args([
            "query-api",
            "--database",
            "mysql://x/y",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("cannot open the view database"), "{line}");

    // An address that is no address.
    let dir = tempfile::tempdir().unwrap();
    let out = annals()
        .args(["serve", "--listen", "nowhere", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("cannot listen on nowhere"), "{line}");

    // A rebuild with nobody to ask.
    let out = annals()
        .args(["rebuild", "customers", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("cannot rebuild customers"), "{line}");
}

#[test]
fn serve_locks_its_data_directory_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, addr) = start(
        &["serve", "--listen", "127.0.0.1:0"],
        dir.path(),
        "listening on",
    );
    let out = annals()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let line = one_line_failure(&out);
    assert!(line.contains("in use by another process"), "{line}");
    // An offline rebuild is refused the same way while serve runs.
    let out = annals()
        .args(["rebuild", "customers", "--offline", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
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
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 405);
        assert_eq!(wrong.headers()["content-type"], "application/problem+json");
    });

    let status = terminate(&mut first);
    assert!(status.success(), "{status:?}");
    // The lock went with the process; the offline rebuild runs now.
    let out = annals()
        .args(["rebuild", "customers", "--offline", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("swapped in at position 1"), "{stderr}");
}
