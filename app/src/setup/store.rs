//! The event store a process works on: the embedded one of a data
//! directory, or `annals store` over the network, each read through the
//! application's upcasters.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use backon::BackoffBuilder;
use command_api::CommandStore;
use event_store::{EventStore, KeyStore, Shredding, Store, StoreOptions, Upcasting};
use event_store_http::{RemoteOptions, RemoteStore};

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

/// `inner` with the application's upcasters on every read path, and on
/// command handlers' loads their typed steps left to the handler.
fn upcasting<S: EventStore>(inner: S, app: &App) -> anyhow::Result<CommandStore> {
    let layered = Upcasting::new(inner, app.upcasters.clone())
        .with_context(|| format!("the upcasters of {} are incomplete", app.name))?;
    Ok(CommandStore::upcasting(Arc::new(layered)))
}

/// Connects to `annals store`, retrying while it starts. The store serves
/// upcast events already; upcasting again here is a no-op for those and
/// keeps this process correct against a store that does not.
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
    loop {
        match RemoteStore::connect(&args.url, options.clone()).await {
            Ok(store) => return upcasting(store, app),
            // A malformed URL will not get better.
            Err(e @ event_store::Error::InvalidOptions(_)) => {
                return Err(
                    anyhow::Error::new(e).context(format!("cannot use the store at {}", args.url))
                );
            }
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot reach the store at {} within {} s",
                    args.url, args.wait_seconds
                )));
            }
            Err(e) => {
                tracing::info!(url = %args.url, error = %e, "waiting for the store");
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
