//! Running the `annals` binary in tests with bounded waits: every wait on a
//! child has a deadline, and a child is killed when its test ends, passed
//! or failed, so a broken build fails instead of hanging CI.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub fn annals() -> Command {
    Command::new(env!("CARGO_BIN_EXE_annals"))
}

/// A running `annals` process, killed when dropped.
pub struct Proc {
    child: Child,
    pub url: String,
    /// Every line it wrote to stderr so far.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `annals <args>` and waits (up to 60 s) for
    /// "<announce> http://..." on stderr.
    pub fn start(args: &[&str], announce: &str) -> Proc {
        Proc::start_with_env(args, &[], announce)
    }

    /// [`Proc::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)], announce: &str) -> Proc {
        let mut child = annals()
            .args(args)
            .env("ANNALS_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        let role = args.first().copied().unwrap_or("annals").to_string();
        // Keep draining stderr (and show it) so the child never blocks on a
        // full pipe; the first lines also go to the channel.
        let kept = Arc::new(Mutex::new(Vec::new()));
        let keeping = kept.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("annals {role}: {line}");
                keeping.lock().unwrap().push(line.clone());
                let _ = lines_tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split(announce).nth(1) {
                        break rest.trim().to_string();
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait();
                    panic!("annals {args:?} exited before announcing itself: {status:?}");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("annals {args:?} did not announce {announce:?} within 60 s");
                }
            }
        };
        Proc {
            child,
            url,
            stderr: kept,
        }
    }

    /// The lines it wrote to stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// `annals store` on a free loopback port over `data_dir`.
    pub fn store(data_dir: &std::path::Path) -> Proc {
        let data_dir = data_dir.to_str().unwrap();
        Proc::start(
            &["store", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
            "store listening on",
        )
    }

    /// `annals serve` on a free loopback port over `data_dir`, with
    /// `extra` arguments.
    pub fn serve(data_dir: &std::path::Path, extra: &[&str]) -> Proc {
        let data_dir = data_dir.to_str().unwrap();
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir];
        args.extend_from_slice(extra);
        Proc::start(&args, "listening on")
    }

    /// SIGKILL, as a crash would end it. Fails if the process had already
    /// exited by itself (a crash of its own would otherwise pass for one
    /// of the test's kills) or ended some other way.
    pub fn kill(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("annals had exited by itself before the kill: {status}");
        }
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "annals was not ended by the SIGKILL: {status}"
        );
    }

    /// Stops the process however it stands, for the end of a test.
    fn kill_quietly(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status (a graceful stop succeeds) within 30 s.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_quietly();
        panic!("annals did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_quietly();
    }
}

/// Runs a command to completion, killing it (and failing) after `limit`.
pub fn output_within(command: &mut Command, limit: Duration) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = rustix::process::Pid::from_child(&child);
    let (done_tx, done_rx) = mpsc::channel();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            // Still running at the deadline: stop it, so that
            // wait_with_output below returns and the test fails.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            return true;
        }
        false
    });
    let out = child.wait_with_output().unwrap();
    let _ = done_tx.send(());
    let killed = watchdog.join().unwrap();
    assert!(
        !killed,
        "{command:?} did not finish within {limit:?}; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Starts `annals <args>` with warnings logged, waits (up to 60 s) for a
/// stderr line containing `announce`, and returns the process with the
/// lines seen so far.
pub fn start_seen(args: &[&str], announce: &str) -> (Child, Vec<String>) {
    let mut child = annals()
        .args(args)
        .env("ANNALS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|l: &String| l.contains(announce)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no announcement ({e}): {seen:?}");
            }
        }
    }
    (child, seen)
}
