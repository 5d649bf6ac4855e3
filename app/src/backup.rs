//! `annals backup DIR` and `annals restore BACKUP`: an online copy of a
//! data directory's store (a running store goes on appending), made whole
//! by the store's recovery and checked by `verify`, and its way back into
//! a data directory. What is copied, and why in that order:
//! [`event_store::backup`].

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use event_store::StoreOptions;
use event_store::backup::{Copied, copy_store, store_bytes};

use crate::setup::open_embedded;
use crate::{BackupArgs, RestoreArgs};

pub async fn backup(args: BackupArgs, app: &crate::App) -> anyhow::Result<ExitCode> {
    let copied = copy(&args.data_dir, &args.dir).await.with_context(|| {
        format!(
            "cannot back {} up into {}",
            args.data_dir.display(),
            args.dir.display()
        )
    })?;
    let summary = settle(&args.dir, app).await?;
    println!(
        "backed {} up into {}: {}; events up to position {}",
        args.data_dir.display(),
        args.dir.display(),
        describe(&copied),
        summary.events,
    );
    Ok(verdict(&args.dir, &summary))
}

pub async fn restore(args: RestoreArgs, app: &crate::App) -> anyhow::Result<ExitCode> {
    let checked = event_store::verify(&args.backup)
        .with_context(|| format!("cannot check the backup {}", args.backup.display()))?;
    if !checked.is_ok() {
        anyhow::bail!(
            "the backup {} is damaged ({}); `annals verify --data-dir {}` lists where",
            args.backup.display(),
            checked.problems.first().map_or("", |p| p.detail.as_str()),
            args.backup.display()
        );
    }
    let copied = copy(&args.backup, &args.data_dir).await.with_context(|| {
        format!(
            "cannot restore {} into {}",
            args.backup.display(),
            args.data_dir.display()
        )
    })?;
    let summary = settle(&args.data_dir, app).await?;
    println!(
        "restored {} into {}: {}; events up to position {}",
        args.backup.display(),
        args.data_dir.display(),
        describe(&copied),
        summary.events,
    );
    Ok(verdict(&args.data_dir, &summary))
}

/// Copies with progress on stdout (a bar on a terminal, a line every 2 s
/// otherwise), off the async threads.
async fn copy(from: &Path, to: &Path) -> anyhow::Result<Copied> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let mut progress = Progress::new(store_bytes(&from));
        let copied = copy_store(&from, &to, &mut |read| progress.show(read));
        progress.finish();
        copied
    })
    .await
    .context("the copy task failed")?
    .map_err(anyhow::Error::new)
}

/// Opens the copy as a store, so that recovery makes it whole (drops a
/// batch the copy caught half-written, rebuilds the key store's index),
/// closes it, and checks it.
async fn settle(dir: &Path, app: &crate::App) -> anyhow::Result<event_store::VerifyReport> {
    let (store, _) = open_embedded(dir, StoreOptions::default(), app).await?;
    store
        .close()
        .await
        .with_context(|| format!("closing the copy in {}", dir.display()))?;
    event_store::verify(dir).with_context(|| format!("cannot check the copy in {}", dir.display()))
}

fn describe(copied: &Copied) -> String {
    format!(
        "{} segments, {} snapshot files, {}",
        copied.segments,
        copied.snapshot_files,
        indicatif::HumanBytes(copied.bytes)
    )
}

/// Exit status 0 when the copy verifies; otherwise each problem on a line
/// and 1.
fn verdict(dir: &Path, report: &event_store::VerifyReport) -> ExitCode {
    if report.is_ok() {
        println!(
            "verified: {} events, {} streams: ok",
            report.events, report.streams
        );
        return ExitCode::SUCCESS;
    }
    crate::verify::print_damage(report);
    println!("{} does not verify: DAMAGED", dir.display());
    ExitCode::from(1)
}

/// Bytes copied so far: a bar on a terminal, else a plain line every
/// [`Progress::PLAIN_INTERVAL`] (a log keeps lines, not redraws).
struct Progress {
    total: u64,
    bar: Option<indicatif::ProgressBar>,
    last: Option<Instant>,
}

impl Progress {
    const PLAIN_INTERVAL: Duration = Duration::from_secs(2);

    fn new(total: u64) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let style = indicatif::ProgressStyle::with_template(
                "[{bar:30}] {percent:>3}%  {bytes} / {total_bytes}  {bytes_per_sec}",
            )
            .map(|style| style.progress_chars("#-"))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            indicatif::ProgressBar::new(total).with_style(style)
        });
        Self {
            total,
            bar,
            last: None,
        }
    }

    fn show(&mut self, read: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(read);
            return;
        }
        if self
            .last
            .is_some_and(|t| t.elapsed() < Self::PLAIN_INTERVAL)
        {
            return;
        }
        self.last = Some(Instant::now());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "copied {} of about {}",
            indicatif::HumanBytes(read),
            indicatif::HumanBytes(self.total)
        );
        let _ = out.flush();
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
