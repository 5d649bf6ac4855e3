//! State shared by the store handle, the writer thread, readers and
//! subscriptions. A module of its own so that each of them depends on it
//! and none on the others.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::log::snapshots::SnapshotStore;
use crate::log::state::State;
use crate::options::StoreOptions;

/// What subscribers wait on: the durable head, and whether the store closed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HeadSignal {
    pub position: u64,
    pub closed: bool,
}

/// State shared by the store handle, the writer thread and subscriptions.
#[derive(Debug)]
pub(crate) struct Inner {
    pub events_dir: PathBuf,
    pub options: StoreOptions,
    pub state: RwLock<State>,
    pub head: watch::Sender<HeadSignal>,
    /// Why the writer stopped, once it has.
    pub failure: Mutex<Option<String>>,
    /// Held by the writer while it writes to the active segment (checking
    /// `failure` first) and by the syncer while it cuts the segment back
    /// after a failed sync, so that nothing is written behind the cut.
    pub writes: Mutex<()>,
    pub snapshots: SnapshotStore,
    pub bloom_skips: AtomicU64,
    pub index_probes: AtomicU64,
}

impl Inner {
    /// Passes `result` on; when it is damage, the store becomes read-only
    /// first (unless it already is), so that nothing is appended to a log
    /// known to be damaged until an operator has looked (`annals verify`),
    /// and readiness says why. Damage in sealed segments is found this way,
    /// by the first read that meets it: opening checks their headers and
    /// indexes, not every record.
    pub(crate) fn note_damage<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(Error::Corruption {
            file,
            offset,
            detail,
        }) = &result
        {
            let mut st = self.state.write();
            if st.read_only.is_none() {
                let reason = format!(
                    "corruption in {} at offset {offset}: {detail} (found by a read; run `annals verify`)",
                    file.display()
                );
                tracing::error!(%reason, "the store is read-only from now on");
                st.read_only = Some(reason);
            }
        }
        result
    }
}
