//! The process-wide request to stop.

use std::sync::Arc;

use anyhow::Context;

/// The process-wide request to stop: set by SIGINT or SIGTERM, or by a part
/// of the process that cannot go on. Every server and task waits on it.
#[derive(Debug, Clone)]
pub struct Stop(Arc<tokio::sync::watch::Sender<bool>>);

impl Stop {
    /// Installs the signal handlers before returning, so a signal that
    /// arrives early is not lost.
    pub fn on_signals() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt =
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut terminate =
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let stop = Self::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("shutting down");
            trigger.trigger();
        });
        Ok(stop)
    }

    /// A stop only [`Stop::trigger`] asks for.
    pub fn new() -> Self {
        Self(Arc::new(tokio::sync::watch::channel(false).0))
    }

    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Becomes `true` once stopping was asked for.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.subscribe()
    }

    /// Resolves once stopping was asked for.
    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut receiver = self.0.subscribe();
        async move {
            // An error means every sender is gone: nothing can ask to stop
            // any more, so stopping now is the only sensible answer.
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    }
}

impl Default for Stop {
    fn default() -> Self {
        Self::new()
    }
}
