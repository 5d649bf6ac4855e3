//! The projector of a process, in a task of its own.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use event_store::EventStore;

use super::Stop;
use super::config::projector_options;
use crate::App;

/// The projector running in a task of its own.
pub struct RunningProjector {
    pub handle: projector::ProjectorHandle,
    /// What readiness looks at.
    pub check: crate::health::ProjectorCheck,
    task: tokio::task::JoinHandle<projector::Result<()>>,
}

impl RunningProjector {
    /// Builds the application's projections over `store` and `views` and
    /// runs them until `stop`. A projector that fails stops the whole process:
    /// without it the process would serve stale views for ever, and a
    /// supervisor should notice.
    pub fn start(
        app: &App,
        store: Arc<dyn EventStore>,
        views: projector::ViewDb,
        options: &crate::ProjectorOptions,
        stop: &Stop,
    ) -> anyhow::Result<Self> {
        let projector = app
            .projector(store, views)
            .options(projector_options(options))
            .build()
            .context("cannot set up the projector")?;
        let handle = projector.handle();
        let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let task = {
            let running = running.clone();
            let stopped = stop.wait();
            let stop = stop.clone();
            tokio::spawn(async move {
                let result = projector.run(stopped).await;
                running.store(false, std::sync::atomic::Ordering::SeqCst);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "the projector stopped");
                    stop.trigger();
                }
                result
            })
        };
        Ok(Self {
            check: crate::health::ProjectorCheck {
                running,
                handle: handle.clone(),
                stuck_after: Duration::from_millis(options.projection_stuck_after_ms),
            },
            handle,
            task,
        })
    }

    /// Waits for the task to end (after `stop`), with its outcome.
    pub async fn finish(self) -> anyhow::Result<()> {
        match self.task.await {
            Ok(result) => result.context("the projector failed"),
            Err(e) => Err(anyhow::anyhow!("the projector task ended abnormally: {e}")),
        }
    }
}
