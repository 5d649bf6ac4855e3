//! `annals rebuild <projection>`: through the admin API of a running
//! process (the default), or in this process on an idle data directory
//! (`--offline`), with a progress bar either way.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use event_store::StoreOptions;
use projector::{Projector, ProjectorOptions, RebuildPhase, ViewDb};
use serde::Deserialize;

use crate::RebuildArgs;
use crate::admin::{call, client};
use crate::run::open_embedded;

pub async fn rebuild(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    if args.offline {
        offline(args).await
    } else {
        remote(args).await
    }
}

/// One line of progress, redrawn in place on a terminal and printed every
/// few seconds otherwise (a log file should not fill with redraws).
struct ProgressBar {
    terminal: bool,
    last: Option<Instant>,
}

impl ProgressBar {
    const WIDTH: usize = 30;

    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn show(&mut self, done: u64, total: u64, per_second: f64, eta: Option<f64>) {
        let interval = if self.terminal {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(2)
        };
        if self.last.is_some_and(|t| t.elapsed() < interval) {
            return;
        }
        self.last = Some(Instant::now());
        let line = render(done, total, per_second, eta);
        let mut err = std::io::stderr().lock();
        // A closed stderr must not stop the rebuild.
        let _ = if self.terminal {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    /// Clears the bar (on a terminal) so that the next line starts clean.
    fn finish(&mut self, message: &str) {
        let mut err = std::io::stderr().lock();
        let _ = match (self.terminal, message.is_empty()) {
            (true, true) => write!(err, "\r\x1b[K"),
            (true, false) => writeln!(err, "\r{message}\x1b[K"),
            (false, true) => Ok(()),
            (false, false) => writeln!(err, "{message}"),
        };
    }
}

fn render(done: u64, total: u64, per_second: f64, eta: Option<f64>) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    let filled = (fraction * ProgressBar::WIDTH as f64).round() as usize;
    let bar = format!(
        "{}{}",
        "#".repeat(filled),
        "-".repeat(ProgressBar::WIDTH - filled)
    );
    let eta = match eta {
        Some(seconds) if seconds.is_finite() => format_duration(seconds),
        _ => "--:--".to_owned(),
    };
    format!(
        "[{bar}] {:>3}%  {} / {} events  {} events/s  ETA {eta}",
        (fraction * 100.0).floor() as u64,
        thousands(done),
        thousands(total),
        thousands(per_second.max(0.0).round() as u64),
    )
}

fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn offline(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let (store, layered) = open_embedded(&args.data_dir, StoreOptions::default()).await?;
    let result = async {
        let views = match &args.database {
            Some(url) => ViewDb::open(url).await,
            None => ViewDb::open_in_data_dir(&args.data_dir).await,
        }
        .context("cannot open the view database")?;
        let projector = Projector::builder(layered, views.clone())
            .options(ProjectorOptions::default())
            .reference_projections()
            .build()
            .context("cannot set up the projector")?;
        let mut bar = ProgressBar::new();
        let report = projector
            .rebuild(&args.projection, |p| {
                if p.phase == RebuildPhase::Replaying {
                    bar.show(
                        p.position.0,
                        p.head.0,
                        p.events_per_second,
                        p.eta.map(|d| d.as_secs_f64()),
                    );
                }
            })
            .await
            .with_context(|| format!("rebuilding {}", args.projection));
        views.close().await;
        let report = report?;
        bar.finish(&format!(
            "{}: rebuilt from the log and swapped in at position {} ({} events in {:.1} s)",
            report.projection,
            report.position.0,
            thousands(report.events),
            report.elapsed.as_secs_f64()
        ));
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let closed = store.close().await.context("closing the store");
    result.and(closed)?;
    Ok(ExitCode::SUCCESS)
}

/// The parts of the admin API's projection status the progress needs.
#[derive(Debug, Deserialize)]
struct Status {
    head: u64,
    rebuild: Option<RebuildStatus>,
    last_rebuild: Option<LastRebuild>,
}

#[derive(Debug, Deserialize)]
struct RebuildStatus {
    position: u64,
    events_per_second: f64,
    eta_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct LastRebuild {
    number: u64,
    position: Option<u64>,
    error: Option<String>,
}

async fn remote(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let base = args.url.trim_end_matches('/');
    let name = &args.projection;
    let http = client()?;
    let url = format!("{base}/projections/{name}");
    // The rebuild that ends after this one started is ours.
    let before = poll(&http, &url, base)
        .await
        .with_context(|| format!("cannot rebuild {name}"))?
        .last_rebuild
        .map_or(0, |l| l.number);
    call::<serde_json::Value>(http.post(format!("{url}/rebuild")), base)
        .await
        .with_context(|| format!("cannot rebuild {name}"))?;
    let mut bar = ProgressBar::new();
    let mut failures = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = match poll(&http, &url, base).await {
            Ok(status) => {
                failures = 0;
                status
            }
            // The process may be busy swapping; give it a few tries.
            Err(e) if failures < 25 => {
                failures += 1;
                tracing::debug!(error = %e, "polling the rebuild");
                continue;
            }
            Err(e) => return Err(e.context(format!("following the rebuild of {name}"))),
        };
        match (status.last_rebuild, status.rebuild) {
            (Some(last), _) if last.number > before => {
                bar.finish("");
                return match (last.position, last.error) {
                    (Some(position), _) => {
                        eprintln!(
                            "{name}: rebuilt from the log and swapped in at position {position}"
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    (None, error) => Err(anyhow::anyhow!(
                        "the rebuild of {name} stopped: {} (run this again to resume it)",
                        error.unwrap_or_else(|| "no reason recorded".into())
                    )),
                };
            }
            (_, Some(r)) => bar.show(r.position, status.head, r.events_per_second, r.eta_seconds),
            (_, None) => {}
        }
    }
}

async fn poll(http: &reqwest::Client, url: &str, base: &str) -> anyhow::Result<Status> {
    call(http.get(url), base).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_show_count_rate_and_eta() {
        assert_eq!(
            render(250_000, 1_000_000, 50_000.4, Some(15.0)),
            "[########----------------------]  25%  250,000 / 1,000,000 events  50,000 events/s  ETA 0:15"
        );
        assert!(render(0, 0, 0.0, None).contains("100%"));
        assert!(render(5, 10, 0.0, None).ends_with("ETA --:--"));
        assert_eq!(format_duration(3725.0), "1:02:05");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
    }
}
