//! `annals dump`: a stream's events, or the log between two positions, as
//! JSON lines (one event per line, as the store's HTTP API shows it), read
//! offline from a data directory, or from a running `annals store`, through
//! the application's decryption and upcasters: what its APIs would serve,
//! erased personal data as `"[erased]"`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use event_store::{
    Direction, EventStore, Position, ReadFrom, RecordedEvent, StoreOptions, StreamId,
};

use crate::DumpArgs;
use crate::setup::{Stop, connect_store, open_embedded};

pub async fn dump(args: DumpArgs, app: &crate::App) -> anyhow::Result<ExitCode> {
    if let (Some(from), Some(to)) = (args.from, args.to)
        && to < from
    {
        anyhow::bail!("--to {to} is before --from {from}: nothing to dump");
    }
    let stream = match &args.stream {
        Some(id) => Some(StreamId::new(id).with_context(|| format!("{id:?} is not a stream id"))?),
        None => None,
    };
    if let Some(url) = &args.store {
        let remote = crate::RemoteStoreArgs {
            url: url.clone(),
            schema: args.store_schema.clone(),
            ca_file: args.store_ca.clone(),
            key: args.store_key.clone(),
            wait_seconds: 0,
            outcome_wait_ms: 0,
        };
        let layered = connect_store(app, &remote, &Stop::new()).await?;
        print(layered.events(), stream.as_ref(), &args).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let (store, layered) = open_embedded(&args.data_dir, StoreOptions::default(), app).await?;
    let printed = print(layered.events(), stream.as_ref(), &args).await;
    let closed = store.close().await.context("closing the store");
    printed.and(closed)?;
    Ok(ExitCode::SUCCESS)
}

/// The stream's events, or the log's, to stdout.
async fn print(
    events: &Arc<dyn EventStore>,
    stream: Option<&StreamId>,
    args: &DumpArgs,
) -> anyhow::Result<()> {
    let out = std::io::stdout().lock();
    let mut out = std::io::BufWriter::new(out);
    match stream {
        Some(stream) => dump_stream(events, stream, args, &mut out).await?,
        None => dump_positions(events, args, &mut out).await?,
    }
    out.flush().context("writing to stdout")
}

/// The stream's events from version `--from` (1) to `--to` (its last).
async fn dump_stream(
    events: &Arc<dyn EventStore>,
    stream: &StreamId,
    args: &DumpArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut next = args.from.unwrap_or(1).max(1);
    let page = events.read_page_max().max(1);
    loop {
        let slice = events
            .read_stream(stream, ReadFrom::Version(next), Direction::Forward, page)
            .await
            .with_context(|| format!("reading {stream}"))?;
        for event in &slice.events {
            if args.to.is_some_and(|to| event.version > to) {
                return Ok(());
            }
            line(event, out)?;
            next = event.version + 1;
        }
        if slice.is_end || slice.events.is_empty() {
            return Ok(());
        }
    }
}

/// The log's events from position `--from` (1) to `--to` (the head).
async fn dump_positions(
    events: &Arc<dyn EventStore>,
    args: &DumpArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut next = args.from.unwrap_or(1).max(1);
    let page_max = events.read_page_max().max(1);
    loop {
        let page = events
            .read_all(Position(next), page_max)
            .await
            .with_context(|| format!("reading the log from position {next}"))?;
        let Some(last) = page.last().map(|e| e.position.0) else {
            return Ok(());
        };
        for event in &page {
            if args.to.is_some_and(|to| event.position.0 > to) {
                return Ok(());
            }
            line(event, out)?;
        }
        next = last + 1;
    }
}

fn line(event: &RecordedEvent, out: &mut impl Write) -> anyhow::Result<()> {
    let wire = event_store_http::wire::event_to_wire(event)
        .with_context(|| format!("the event at position {}", event.position.0))?;
    serde_json::to_writer(&mut *out, &wire).context("writing to stdout")?;
    out.write_all(b"\n").context("writing to stdout")
}
