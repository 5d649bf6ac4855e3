//! What the root benchmarks share beyond `bench_harness`: the real binary
//! as a server, and the reference domain over HTTP.

#![allow(dead_code, reason = "each benchmark uses a part")]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `annals <args>` logging warnings only (request and saga
    /// spans then cost nothing) and waits for `announce` on stderr.
    pub fn start(args: &[&str], announce: &str) -> Server {
        Server::start_logging(args, announce, "warn")
    }

    /// [`Server::start`] logging at `level` (`info`: every request and
    /// saga event in a span, as a server runs by default).
    pub fn start_logging(args: &[&str], announce: &str, level: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_annals"))
            .args(args)
            .env("ANNALS_LOG", level)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("the server announces itself").unwrap();
            if let Some(rest) = line.split(announce).nth(1) {
                break rest.trim().to_owned();
            }
        };
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("{line}");
            }
        });
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let _ = self.child.wait();
    }
}

pub fn eur(amount: i64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

pub async fn wait_ready(http: &reqwest::Client, url: &str) {
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{url}/health/ready")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not get ready");
}

/// The CPU time (user and system) process `pid` has used so far, or this
/// process's when `pid` is `None`, in seconds.
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).unwrap();
    // Fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 12th and 13th of these.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}
