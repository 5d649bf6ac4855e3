//! An application's own binary as its users run it, for end-to-end tests:
//! `serve` on a loopback port over a temporary data directory, driven over
//! HTTP.
//!
//! Every wait on the process has a deadline ([`WAIT_MAX`]), and the
//! process is killed when the [`Service`] is dropped, passed or failed, so
//! a broken build fails a test instead of hanging it.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Answer, WAIT_MAX};

/// What the processes announce on stderr once they accept connections:
/// `<application name>: listening on http://<address>`.
const ANNOUNCEMENT: &str = ": listening on ";

/// How to start a [`Service`]: the binary, and what to add to
/// `serve --listen 127.0.0.1:0 --data-dir <temporary directory>`.
#[derive(Debug, Clone)]
pub struct ServiceBuilder {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

impl ServiceBuilder {
    /// One more argument after the ones the testkit gives.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// More arguments after the ones the testkit gives (`--database
    /// <url>`, a setting, ...).
    pub fn args(mut self, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// An environment variable of the process (`ANNALS_LOG` is `warn`
    /// unless set here).
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((name.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Starts the service over a new temporary data directory and waits
    /// until it listens.
    pub fn start(self) -> Service {
        let data = tempfile::tempdir()
            .unwrap_or_else(|e| panic!("creating a temporary data directory: {e}"));
        // reqwest's TLS needs the process's crypto provider.
        http_edge::tls::install_default_provider();
        // Marked as a program's requests, as any client but a browser's
        // would be: bodiless commands need it (`http_edge::cross_site`).
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            http_edge::cross_site::REQUESTED_WITH,
            reqwest::header::HeaderValue::from_static("annals-testkit"),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(WAIT_MAX)
            .build()
            .unwrap_or_else(|e| panic!("building the HTTP client: {e}"));
        let mut service = Service {
            builder: self,
            data,
            http,
            running: None,
        };
        service.start_again();
        service
    }
}

/// The application's binary serving over a temporary data directory of
/// its own (kept across restarts, deleted at the end).
///
/// ```no_run
/// # async fn example() {
/// use annals::testkit::Service;
/// let mut service = Service::builder("target/release/annals-todo").start();
/// let added = service
///     .post("/tasks", serde_json::json!({"title": "milk"}))
///     .await;
/// assert_eq!(added.status, 201, "{}", added.body);
/// service.restart();
/// assert!(service.stop().success());
/// # }
/// ```
#[derive(Debug)]
pub struct Service {
    builder: ServiceBuilder,
    data: tempfile::TempDir,
    http: reqwest::Client,
    running: Option<Running>,
}

/// The process of a started service.
#[derive(Debug)]
struct Running {
    child: Child,
    name: String,
    url: String,
}

impl Service {
    /// A service of the binary at `program`: in an integration test of
    /// the application's package, `env!("CARGO_BIN_EXE_<name>")`.
    pub fn builder(program: impl AsRef<Path>) -> ServiceBuilder {
        ServiceBuilder {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// [`Service::builder`] started as it is.
    pub fn start(program: impl AsRef<Path>) -> Service {
        Service::builder(program).start()
    }

    fn running(&self) -> &Running {
        match &self.running {
            Some(running) => running,
            None => panic!("the service is not running (killed or stopped)"),
        }
    }

    /// The base URL it listens on, `http://127.0.0.1:<port>` (a restart
    /// changes the port).
    pub fn url(&self) -> &str {
        &self.running().url
    }

    /// The name it announced itself with: the application's.
    pub fn name(&self) -> &str {
        &self.running().name
    }

    /// The data directory, the same across restarts.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// An HTTP client whose requests time out after [`WAIT_MAX`] and carry
    /// `X-Requested-With` (see `http_edge::cross_site`).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends `request` and reads the answer whole.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("sending a request to {}: {e}", self.url()));
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("reading an answer of {}: {e}", self.url()));
        Answer::new(status, headers, &bytes)
    }

    /// `GET <url><path>`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.url())))
            .await
    }

    /// `POST <url><path>` with `body` as JSON (`null`: no body).
    pub async fn post(&self, path: &str, body: Value) -> Answer {
        let mut request = self.http.post(format!("{}{path}", self.url()));
        if !body.is_null() {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// `DELETE <url><path>`.
    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.http.delete(format!("{}{path}", self.url())))
            .await
    }

    /// Stops it gracefully and starts it again on the same data directory
    /// and arguments; a stop that does not succeed fails the test.
    pub fn restart(&mut self) {
        if self.running.is_some() {
            let status = self.stop();
            assert!(status.success(), "the service stopped with {status}");
        }
        self.start_again();
    }

    /// Starts it (again, after [`kill`](Self::kill) or
    /// [`stop`](Self::stop)) on the same data directory and arguments.
    pub fn start_again(&mut self) {
        assert!(self.running.is_none(), "the service is running already");
        self.running = Some(self.spawn());
    }

    /// SIGKILL, as a crash would end it. Fails if it had exited by itself
    /// (a crash of its own would otherwise pass for the test's kill).
    pub fn kill(&mut self) {
        let Some(mut running) = self.running.take() else {
            panic!("the service is not running");
        };
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!("the service had exited by itself before the kill: {status}");
        }
        running
            .child
            .kill()
            .unwrap_or_else(|e| panic!("killing the service: {e}"));
        let status = running
            .child
            .wait()
            .unwrap_or_else(|e| panic!("waiting for the killed service: {e}"));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(rustix::process::Signal::KILL.as_raw()),
            "the service was not ended by the SIGKILL: {status}"
        );
    }

    /// SIGTERM, then its exit status (a graceful stop succeeds); fails the
    /// test if it has not stopped within [`WAIT_MAX`].
    pub fn stop(&mut self) -> ExitStatus {
        let Some(mut running) = self.running.take() else {
            panic!("the service is not running");
        };
        let pid = rustix::process::Pid::from_child(&running.child);
        // It may have exited already: its status says so below.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + WAIT_MAX;
        while Instant::now() < deadline {
            match running.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("waiting for the service: {e}"),
            }
        }
        panic!("the service did not stop within {WAIT_MAX:?} of SIGTERM");
    }

    /// The binary with the service's environment, for one-shot
    /// subcommands (`rebuild`, `status`, `verify`, ...): run it with
    /// [`output_within`].
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.builder.program);
        command
            .env("ANNALS_LOG", "warn")
            .envs(self.builder.envs.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs the binary with `args` to its end (at most [`WAIT_MAX`]).
    pub fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command();
        command.args(args);
        output_within(&mut command, WAIT_MAX)
    }

    /// Starts the process and waits for its announcement.
    fn spawn(&self) -> Running {
        let mut child = self
            .command()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(self.data.path())
            .args(&self.builder.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.builder.program.display()));
        let Some(stderr) = child.stderr.take() else {
            panic!("the service's stderr is not piped");
        };
        let program = self
            .builder
            .program
            .file_name()
            .map_or_else(|| "service".into(), |n| n.to_string_lossy().into_owned());
        let (lines, announced) = mpsc::channel::<String>();
        // Keep draining stderr (and show it with the test's output) so the
        // service never blocks on a full pipe; the lines also go to the
        // channel while the test waits for the announcement.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{program}: {line}");
                let _ = lines.send(line);
            }
        });
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match announced.recv_timeout(left) {
                Ok(line) => {
                    if let Some((name, url)) = line.split_once(ANNOUNCEMENT)
                        && !name.contains(char::is_whitespace)
                    {
                        return Running {
                            child,
                            name: name.to_owned(),
                            url: url.trim().to_owned(),
                        };
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait();
                    panic!("the service exited before listening: {status:?}");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the service did not listen within {WAIT_MAX:?}");
                }
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut running) = self.running.take() {
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

/// Runs `command` to its end, its output captured; kills it and fails the
/// test if it has not ended within `limit`.
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let pid = rustix::process::Pid::from_child(&child);
    let (done, ended) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if ended.recv_timeout(limit).is_err() {
            // Still running at the deadline: end it, so that the wait
            // below returns and the test fails.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            return true;
        }
        false
    });
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {command:?}: {e}"));
    let _ = done.send(());
    let killed = watchdog.join().unwrap_or(true);
    assert!(
        !killed,
        "{command:?} did not finish within {limit:?}; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
