//! What the processes are built from: the stop request they share, the
//! event store they open or connect to, how they serve HTTP, the projector
//! task, and the configuration of each library from the command line.

mod config;
mod http;
mod projector;
mod stop;
mod store;

pub use config::{command_config, handler_config, query_config, view_db_options};
pub use http::{bind, local_addr, scheme, serve_config, serve_http};
pub use projector::RunningProjector;
pub use stop::Stop;
pub use store::{connect_store, is_postgres, open_embedded, open_log, redacted};
