//! Running the `annals-bank` binary with bounded waits: every wait on a
//! child has a deadline, and a child is killed when its test ends, passed
//! or failed, so a broken build fails instead of hanging CI.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn bank() -> Command {
    Command::new(env!("CARGO_BIN_EXE_annals-bank"))
}

/// A running `annals-bank` process, killed when dropped.
pub struct Proc {
    child: Child,
    pub url: String,
}

impl Proc {
    /// Starts `annals-bank <args>` and waits (up to 60 s) for
    /// "annals: listening on http://..." on stderr.
    pub fn serve(args: &[&str]) -> Proc {
        let mut child = bank()
            .arg("serve")
            .args(args)
            .env("ANNALS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        // Keep draining stderr (and show it) so the child never blocks on a
        // full pipe; the lines also go to the channel.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("annals-bank: {line}");
                let _ = lines_tx.send(line);
            }
        });
        let announce = "annals: listening on ";
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
                    panic!("annals-bank {args:?} exited before listening: {status:?}");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("annals-bank {args:?} did not listen within 60 s");
                }
            }
        };
        Proc { child, url }
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
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("annals-bank did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `annals-bank <args>` to completion, killing it (and failing) after
/// `limit`.
pub fn run_within(args: &[&str], limit: Duration) -> Output {
    let child = bank()
        .args(args)
        .env("ANNALS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = rustix::process::Pid::from_child(&child);
    let (done_tx, done_rx) = mpsc::channel();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
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
        "annals-bank {args:?} did not finish within {limit:?}; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
