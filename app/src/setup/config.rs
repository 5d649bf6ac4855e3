//! Each library's configuration from the command line's options.

use std::num::NonZeroU64;
use std::time::Duration;

/// How the process's command handlers work (routes and sagas alike).
pub fn handler_config(options: &crate::CommandOptions) -> command_api::HandlerConfig {
    command_api::HandlerConfig {
        snapshot_every_events: NonZeroU64::new(options.snapshot_every_events),
        ..command_api::HandlerConfig::default()
    }
}

/// How the command routes behave.
pub fn command_config(options: &crate::CommandOptions) -> command_api::ApiConfig {
    command_api::ApiConfig {
        body_bytes_max: options.body_bytes_max as usize,
        in_flight_requests_max: options.in_flight_requests_max as usize,
        ..command_api::ApiConfig::default()
    }
}

pub fn projector_options(options: &crate::ProjectorOptions) -> projector::ProjectorOptions {
    projector::ProjectorOptions {
        batch_events_max: options.batch_events_max as usize,
        ..projector::ProjectorOptions::default()
    }
}

pub fn view_db_options(args: &crate::ViewDbArgs) -> projector::ViewDbOptions {
    projector::ViewDbOptions {
        acquire_timeout: Duration::from_millis(args.database_acquire_timeout_ms),
        ..projector::ViewDbOptions::default()
    }
}

pub fn query_config(options: &crate::QueryOptions) -> query_api::QueryConfig {
    query_api::QueryConfig {
        page_size_max: options.page_size_max as usize,
        min_position_wait_max: Duration::from_millis(options.min_position_wait_ms),
        ..query_api::QueryConfig::default()
    }
}
