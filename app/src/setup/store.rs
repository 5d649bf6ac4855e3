//! The event store a process works on: the embedded one of a data
//! directory, the log in PostgreSQL, or `annals store` over the network,
//! each read through the application's upcasters.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use backon::BackoffBuilder;
use command_api::CommandStore;
use event_store::{EventStore, KeyStore, Shredding, Store, StoreOptions, Upcasting};
use event_store_http::{RemoteOptions, RemoteStore};
use pg_store::{PgOptions, PgStore};

use super::Stop;
use crate::App;

/// Opens the embedded store of a data directory, with the application's
/// personal data encrypted under keys kept beside the log and its old
/// events upcast: `Upcasting(Shredding(Store))`, so a read decrypts first
/// and upcasts the plaintext. Returns the store (to close it) and the
/// layered store to use.
pub async fn open_embedded(
    data_dir: &std::path::Path,
    options: StoreOptions,
    app: &App,
) -> anyhow::Result<(Store, CommandStore)> {
    let store = Store::open(data_dir, options)
        .await
        .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
    let keys = match KeyStore::open(data_dir.join("keys")) {
        Ok(keys) => Arc::new(keys),
        Err(e) => {
            let _ = store.close().await;
            return Err(anyhow::Error::new(e).context(format!(
                "cannot open the key store of {}",
                data_dir.display()
            )));
        }
    };
    let shredding = Shredding::new(store.clone(), keys, app.personal_data.clone());
    // Every read and write would do it first; here its errors stop the
    // start-up with their cause.
    if let Err(e) = shredding.recover().await {
        let _ = store.close().await;
        return Err(anyhow::Error::new(e).context(format!(
            "cannot recover the key store of {}",
            data_dir.display()
        )));
    }
    let layered = match upcasting(shredding, app) {
        Ok(layered) => layered,
        Err(e) => {
            let _ = store.close().await;
            return Err(e);
        }
    };
    Ok((store, layered))
}

/// The log a process opened itself, closed when it stops.
pub enum OwnedStore {
    Segments(Store),
    Postgres(PgStore),
}

impl OwnedStore {
    /// Syncs and closes the segment store (releasing the data directory's
    /// lock), or closes the connections to PostgreSQL.
    pub async fn close(&self) -> anyhow::Result<()> {
        match self {
            OwnedStore::Segments(store) => store.close().await.context("closing the store"),
            OwnedStore::Postgres(store) => {
                store.close().await;
                Ok(())
            }
        }
    }
}

/// The log of `annals serve` and `annals store`: in PostgreSQL when
/// `log.url` names a database, else in the data directory.
pub async fn open_log(
    data_dir: &std::path::Path,
    log: &crate::LogArgs,
    options: StoreOptions,
    app: &App,
) -> anyhow::Result<(OwnedStore, CommandStore)> {
    let Some(url) = &log.url else {
        let (store, layered) = open_embedded(data_dir, options, app).await?;
        return Ok((OwnedStore::Segments(store), layered));
    };
    if !is_postgres(url) {
        anyhow::bail!(
            "--store {} is not a PostgreSQL URL (postgres://...); without --store the log is kept in the data directory",
            redacted(url)
        );
    }
    let (store, layered) = open_postgres(url, &log.schema.name, app)
        .await
        .with_context(|| format!("cannot use the store at {}", redacted(url)))?;
    Ok((OwnedStore::Postgres(store), layered))
}

/// Whether `url` names a PostgreSQL database rather than `annals store`.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `url` with its password, if any, replaced by `***`, for messages.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The log in the PostgreSQL schema `schema` at `url`, with the personal
/// data keys in the same schema: `Upcasting(Shredding(PgStore))`.
pub async fn open_postgres(
    url: &str,
    schema: &str,
    app: &App,
) -> anyhow::Result<(PgStore, CommandStore)> {
    let store = PgStore::connect(
        url,
        PgOptions {
            schema: schema.to_owned(),
            ..PgOptions::default()
        },
    )
    .await?;
    let shredding = Shredding::new(
        store.clone(),
        Arc::new(store.keys()),
        app.personal_data.clone(),
    );
    let layered = upcasting(shredding, app);
    match layered {
        Ok(layered) => Ok((store, layered)),
        Err(e) => {
            store.close().await;
            Err(e)
        }
    }
}

/// `inner` with the application's upcasters on every read path, and on
/// command handlers' loads their typed steps left to the handler.
fn upcasting<S: EventStore>(inner: S, app: &App) -> anyhow::Result<CommandStore> {
    let layered = Upcasting::new(inner, app.upcasters.clone())
        .with_context(|| format!("the upcasters of {} are incomplete", app.name))?;
    Ok(CommandStore::upcasting(Arc::new(layered)))
}

/// Connects to `annals store`, or to the log in PostgreSQL, retrying while
/// it starts. The store serves upcast events already; upcasting again here
/// is a no-op for those and keeps this process correct against a store
/// that does not. On PostgreSQL this process encrypts and decrypts
/// personal data itself, with the keys in the store's schema.
pub async fn connect_store(
    app: &App,
    args: &crate::RemoteStoreArgs,
    stop: &Stop,
) -> anyhow::Result<CommandStore> {
    let options = RemoteOptions {
        token: args.key.clone(),
        ca_file: args.ca_file.clone(),
        outcome_wait: Duration::from_millis(args.outcome_wait_ms),
        ..RemoteOptions::default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(args.wait_seconds);
    // From 50 ms, doubling up to a second.
    let mut pauses =
        event_store::pauses::doubling(Duration::from_millis(50), Duration::from_secs(1)).build();
    let shown = redacted(&args.url);
    loop {
        let connected = if is_postgres(&args.url) {
            match open_postgres(&args.url, &args.schema.name, app).await {
                Ok((_, layered)) => return Ok(layered),
                Err(e) => match e.downcast::<event_store::Error>() {
                    Ok(e) => Err(e),
                    Err(e) => return Err(e),
                },
            }
        } else {
            RemoteStore::connect(&args.url, options.clone()).await
        };
        match connected {
            Ok(store) => return upcasting(store, app),
            // A malformed URL will not get better.
            Err(e @ event_store::Error::InvalidOptions(_)) => {
                return Err(
                    anyhow::Error::new(e).context(format!("cannot use the store at {shown}"))
                );
            }
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot reach the store at {shown} within {} s",
                    args.wait_seconds
                )));
            }
            Err(e) => {
                tracing::info!(url = %shown, error = %e, "waiting for the store");
                let pause = pauses.next().unwrap_or(Duration::from_secs(1));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.wait() => anyhow::bail!("stopped while waiting for the store"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use event_store::{ExpectedVersion, NewEvent, StreamId, Upcasters};
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Deserialize)]
    struct RenamedV1 {
        name: String,
    }

    #[derive(Serialize)]
    struct RenamedV2 {
        title: String,
    }

    /// The command handlers of every process get the upcasting layer as a
    /// typed loader, not only as a store: a stream of events that typed
    /// steps alone bring up to date loads with them left as stored.
    #[tokio::test]
    async fn the_embedded_store_leaves_typed_steps_to_the_command_handlers() {
        let dir = tempfile::tempdir().unwrap();
        let upcasters =
            Upcasters::new()
                .current("Renamed", 2)
                .step_typed("Renamed", 1, |old: RenamedV1| {
                    Ok(RenamedV2 { title: old.name })
                });
        let app = App::new("shop").upcasters(upcasters);
        let (store, layered) = open_embedded(dir.path(), StoreOptions::default(), &app)
            .await
            .unwrap();
        let stream = StreamId::new("thing-1").unwrap();
        let event = NewEvent::json("Renamed", &serde_json::json!({"name": "a"})).unwrap();
        store
            .append(&stream, ExpectedVersion::NoStream, vec![event])
            .await
            .unwrap();

        let (loaded, left) = layered.load(&stream, None).await.unwrap();
        assert!(left.is_some());
        assert_eq!(loaded.events[0].schema_version, 1);
        store.close().await.unwrap();
    }
}
