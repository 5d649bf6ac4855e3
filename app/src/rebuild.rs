//! `annals rebuild <projection>`: through the admin API of a running
//! process (the default), or in this process on an idle data directory
//! (`--offline`), with a progress bar either way. A rebuild the process is
//! already running (one it resumed at start, say) is followed, not refused.
//!
//! Progress and the outcome are the command's output, on stdout: a bar
//! redrawn in place on a terminal, plain lines every few seconds otherwise
//! (a log file or a pipe should not fill with redraws). Errors go to
//! stderr.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use event_store::StoreOptions;
use indicatif::{FormattedDuration, HumanCount};
use projector::{ProjectorOptions, RebuildPhase, ViewDb, ViewDbOptions};
use serde::Deserialize;

use crate::RebuildArgs;
use crate::admin::{call, client};
use crate::setup::open_embedded;

pub async fn rebuild(args: RebuildArgs, app: &crate::App) -> anyhow::Result<ExitCode> {
    if args.offline {
        offline(args, app).await
    } else {
        remote(args).await
    }
}

/// Progress on stdout: on a terminal, a bar redrawn in place (indicatif);
/// otherwise a plain line every [`Progress::PLAIN_INTERVAL`]. indicatif
/// draws nothing when its target is not a terminal, and a log file or a
/// pipe should get lines it can keep rather than redraws, so those are
/// written here.
pub(crate) enum Progress {
    /// The bar, once the first progress came: a message takes its line,
    /// and the next progress draws a new one below it.
    Terminal(Option<indicatif::ProgressBar>),
    Plain {
        last: Option<Instant>,
    },
}

impl Progress {
    const WIDTH: usize = 30;
    /// How often a terminal's bar is redrawn, per second.
    const REDRAWS_PER_SECOND: u8 = 10;
    /// How often a plain progress line is printed when stdout is a file or
    /// a pipe.
    const PLAIN_INTERVAL: Duration = Duration::from_secs(2);

    pub(crate) fn new() -> Self {
        if std::io::stdout().is_terminal() {
            Self::Terminal(None)
        } else {
            Self::Plain { last: None }
        }
    }

    pub(crate) fn show(&mut self, done: u64, total: u64, per_second: f64, eta: Option<f64>) {
        match self {
            Self::Terminal(bar) => {
                let bar = bar.get_or_insert_with(|| new_bar(total));
                // The message first: the first draw comes at once, and it
                // should show the whole line.
                bar.set_message(rate_and_eta(per_second, eta));
                bar.set_length(total);
                bar.set_position(done);
            }
            Self::Plain { last } => {
                if last.is_some_and(|t| t.elapsed() < Self::PLAIN_INTERVAL) {
                    return;
                }
                *last = Some(Instant::now());
                print_line(&render(done, total, per_second, eta));
            }
        }
    }

    /// A line of its own (on a terminal, in place of the bar).
    pub(crate) fn say(&mut self, message: &str) {
        self.clear();
        print_line(message);
    }

    /// Clears the bar (on a terminal) so that an error starts on a clean
    /// line.
    pub(crate) fn clear(&mut self) {
        if let Self::Terminal(bar) = self
            && let Some(bar) = bar.take()
        {
            bar.finish_and_clear();
        }
    }
}

/// The terminal's bar: the same fields as a plain line, the count and
/// percentage kept by indicatif, the rate and ETA (the rebuild's own) in
/// its message.
fn new_bar(total: u64) -> indicatif::ProgressBar {
    let template = format!(
        "[{{bar:{}}}] {{percent:>3}}%  {{human_pos}} / {{human_len}} events  {{msg}}",
        Progress::WIDTH
    );
    let style = indicatif::ProgressStyle::with_template(&template)
        .map(|style| style.progress_chars("#-"))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stdout_with_hz(Progress::REDRAWS_PER_SECOND),
    )
    .with_style(style)
}

/// One line on stdout. A closed stdout must not stop the rebuild.
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn render(done: u64, total: u64, per_second: f64, eta: Option<f64>) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    let filled = (fraction * Progress::WIDTH as f64).round() as usize;
    let bar = format!(
        "{}{}",
        "#".repeat(filled),
        "-".repeat(Progress::WIDTH - filled)
    );
    format!(
        "[{bar}] {:>3}%  {} / {} events  {}",
        (fraction * 100.0).floor() as u64,
        HumanCount(done),
        HumanCount(total),
        rate_and_eta(per_second, eta),
    )
}

fn rate_and_eta(per_second: f64, eta: Option<f64>) -> String {
    format!(
        "{} events/s  ETA {}",
        HumanCount(per_second.max(0.0).round() as u64),
        eta_text(eta)
    )
}

/// Seconds left as `hh:mm:ss`, or `--:--` while unknown.
fn eta_text(seconds: Option<f64>) -> String {
    match seconds.map(|s| Duration::try_from_secs_f64(s.max(0.0).round())) {
        Some(Ok(left)) => FormattedDuration(left).to_string(),
        _ => "--:--".to_owned(),
    }
}

async fn offline(args: RebuildArgs, app: &crate::App) -> anyhow::Result<ExitCode> {
    // The rebuild reads the log in order only: without a table of streams
    // its memory does not grow with the number of streams in the log.
    let options = StoreOptions {
        log_only: true,
        ..StoreOptions::default()
    };
    let (store, layered) = open_embedded(&args.data_dir, options, app).await?;
    let result = async {
        let views = match &args.database {
            Some(url) => ViewDb::open_with(url, view_options()).await,
            None => ViewDb::open_in_data_dir_with(&args.data_dir, view_options()).await,
        }
        .context("cannot open the view database")?;
        let projector = app
            .projector(layered.events().clone(), views.clone())
            .options(ProjectorOptions::default())
            .build()
            .context("cannot set up the projector")?;
        let mut bar = Progress::new();
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
        let report = report.inspect_err(|_| bar.clear())?;
        bar.say(&format!(
            "{}: rebuilt from the log and swapped in at position {} ({} events in {:.1} s)",
            report.projection,
            report.position.0,
            HumanCount(report.events),
            report.elapsed.as_secs_f64()
        ));
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let closed = store.close().await.context("closing the store");
    result.and(closed)?;
    Ok(ExitCode::SUCCESS)
}

/// The view database as an offline rebuild uses it: one writer filling
/// fresh tables, whose batch's pages fit a small SQLite page cache (the
/// default, 64 MiB per connection, serves a live view's scattered
/// updates); an index build sorts in memory up to the same size before it
/// spills to a file.
fn view_options() -> ViewDbOptions {
    ViewDbOptions {
        sqlite_cache_bytes_max: 16 << 20,
        ..ViewDbOptions::default()
    }
}

/// The parts of the admin API's projection status the progress needs.
#[derive(Debug, Deserialize)]
struct Status {
    head: u64,
    rebuild: Option<RebuildStatus>,
    last_rebuild: Option<LastRebuild>,
}

impl Status {
    /// Whether the process is running a rebuild of the projection now.
    fn rebuilding_here(&self) -> bool {
        self.rebuild.as_ref().is_some_and(|r| r.running_here)
    }
}

#[derive(Debug, Deserialize)]
struct RebuildStatus {
    position: u64,
    events_per_second: f64,
    eta_seconds: Option<f64>,
    running_here: bool,
}

#[derive(Debug, Deserialize)]
struct LastRebuild {
    number: u64,
    position: Option<u64>,
    error: Option<String>,
}

/// How often the status is read while following a rebuild.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Failed reads of the status in a row tolerated while following (the
/// process may be busy swapping).
const POLL_FAILURES_MAX: u32 = 25;

async fn remote(args: RebuildArgs) -> anyhow::Result<ExitCode> {
    let base = args.url.trim_end_matches('/');
    let name = &args.projection;
    let http = client(&args.credentials)?;
    let url = format!("{base}/projections/{name}");
    let mut bar = Progress::new();
    let status = poll(&http, &url, base)
        .await
        .with_context(|| format!("cannot rebuild {name}"))?;
    // The rebuild that ends after this was read is the one to report.
    let before = status.last_rebuild.as_ref().map_or(0, |l| l.number);
    if status.rebuilding_here() {
        bar.say(&format!(
            "{name}: a rebuild is already running at {base}; following it"
        ));
    } else {
        let started = call::<serde_json::Value>(http.post(format!("{url}/rebuild")), base).await;
        if let Err(e) = started {
            // Another client may have started one just now: follow that.
            let now = poll(&http, &url, base).await;
            if !now.is_ok_and(|s| s.rebuilding_here()) {
                return Err(e.context(format!("cannot rebuild {name}")));
            }
            bar.say(&format!(
                "{name}: a rebuild is already running at {base}; following it"
            ));
        }
    }
    follow(&http, &url, base, name, before, &mut bar).await
}

/// Shows the progress of the rebuild that ends after rebuild number
/// `before`, and how it ended.
async fn follow(
    http: &reqwest::Client,
    url: &str,
    base: &str,
    name: &str,
    before: u64,
    bar: &mut Progress,
) -> anyhow::Result<ExitCode> {
    let mut failures = 0;
    loop {
        let status = match poll(http, url, base).await {
            Ok(status) => {
                failures = 0;
                status
            }
            Err(e) if failures < POLL_FAILURES_MAX => {
                failures += 1;
                tracing::debug!(error = %e, "polling the rebuild");
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            }
            Err(e) => {
                bar.clear();
                return Err(e.context(format!("following the rebuild of {name}")));
            }
        };
        match (status.last_rebuild, status.rebuild) {
            (Some(last), _) if last.number > before => {
                return match (last.position, last.error) {
                    (Some(position), _) => {
                        bar.say(&format!(
                            "{name}: rebuilt from the log and swapped in at position {position}"
                        ));
                        Ok(ExitCode::SUCCESS)
                    }
                    (None, error) => {
                        bar.clear();
                        Err(anyhow::anyhow!(
                            "the rebuild of {name} stopped: {} (run this again to resume it)",
                            error.unwrap_or_else(|| "no reason recorded".into())
                        ))
                    }
                };
            }
            (_, Some(r)) => bar.show(r.position, status.head, r.events_per_second, r.eta_seconds),
            (_, None) => {}
        }
        tokio::time::sleep(POLL_INTERVAL).await;
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
            "[########----------------------]  25%  250,000 / 1,000,000 events  50,000 events/s  ETA 00:00:15"
        );
        assert!(render(0, 0, 0.0, None).contains("100%"));
        assert!(render(5, 10, 0.0, None).ends_with("ETA --:--"));
        assert!(render(5, 10, 0.0, Some(f64::INFINITY)).ends_with("ETA --:--"));
        assert!(render(5, 10, 0.0, Some(1e300)).ends_with("ETA --:--"));
        assert_eq!(eta_text(Some(3725.0)), "01:02:05");
        assert!(render(999, 1_000, 0.0, None).contains(" 999 / 1,000 events"));
    }
}
