//! The log engine: segments on disk, the single writer with group commit,
//! recovery, reads per stream and in global order, snapshots and push
//! subscriptions.

pub mod fs;
pub(crate) mod listing;
pub(crate) mod lock;
pub(crate) mod mmap;
pub(crate) mod read;
pub(crate) mod recovery;
pub(crate) mod scan;
pub(crate) mod segment;
pub(crate) mod shared;
pub(crate) mod snapshots;
pub(crate) mod state;
pub(crate) mod store;
pub(crate) mod subscribe;
pub(crate) mod syncer;
pub(crate) mod writer;

pub use recovery::RecoveryReport;
pub use store::{DATA_FORMAT_VERSION, Store};
