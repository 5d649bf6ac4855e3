//! The event store a process works on: the embedded one of a data
//! directory, or `annals store` over the network, each read through the
//! application's upcasters.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use backon::{BackoffBuilder, ExponentialBuilder};
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
) -> anyhow::Result<(Store, Arc<dyn EventStore>)> {
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

/// `inner` with the application's upcasters on every read path.
fn upcasting<S: EventStore>(inner: S, app: &App) -> anyhow::Result<Arc<dyn EventStore>> {
    let layered = Upcasting::new(inner, app.upcasters.clone())
        .with_context(|| format!("the upcasters of {} are incomplete", app.name))?;
    Ok(Arc::new(layered))
}

/// Connects to `annals store`, retrying while it starts. The store serves
/// upcast events already; upcasting again here is a no-op for those and
/// keeps this process correct against a store that does not.
pub async fn connect_store(
    app: &App,
    args: &crate::RemoteStoreArgs,
    stop: &Stop,
) -> anyhow::Result<Arc<dyn EventStore>> {
    let options = RemoteOptions {
        token: args.key.clone(),
        ca_file: args.ca_file.clone(),
        outcome_wait: Duration::from_millis(args.outcome_wait_ms),
        ..RemoteOptions::default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(args.wait_seconds);
    // From 50 ms, doubling up to a second.
    let mut pauses = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(1))
        .without_max_times()
        .build();
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
