//! The key store for crypto-shredding: one 256-bit key per data subject, in
//! a group-committed log of fixed-size records (`keys/keys.log`, layout in
//! [`crate::format::keylog`]), never in the event log.
//!
//! **Creating keys.** One writer thread owns the log. Callers queue the
//! subjects they need keys for; the writer takes everything queued, appends
//! one record per new key, makes them durable with one `fdatasync`, and only
//! then publishes the keys and wakes the callers. [`Shredding`] waits for
//! that before it encrypts an event, so no event is acknowledged under a key
//! that a crash could lose. A new file starts with one chunk of zeroed
//! slots and then grows by appends: the `fdatasync` that makes a batch
//! durable makes the new length durable with it. (Growing in zero-filled
//! chunks would keep that fsync to data only, but double the bytes written
//! per record; most key writes are spares and assignments nobody waits
//! for, so the bytes cost more than the fsync saves.)
//!
//! **Spare keys.** Waiting for that fsync and then for the event log's
//! would put two fsyncs in a row on a new subject's first append. So the
//! writer also keeps a pool of *spare* keys, made and synced ahead of need
//! for no subject ([`KeyStore::assign_keys`]). A new subject takes one at
//! once; the *assignment* record is queued behind it and nobody waits for
//! it. Every field sealed under a spare names the spare's slot, so the
//! event log itself is the record of an assignment a crash lost: opening
//! leaves the spares the log shows unassigned aside until [`Shredding`]
//! has read the events above the last *floor* (a position at or below
//! which every such event's assignment is durable) and handed back the
//! slots they name ([`KeyStore::reconcile`]). Only then are spares handed
//! out again, so one key never serves two subjects.
//!
//! **Forgetting.** The writer appends an erasure record and syncs it (from
//! then on the subject is erased, whatever happens), then overwrites the key
//! record in place with a *destroyed* record (the key bytes zeroed) and
//! syncs again. The key bytes exist in no other file: the log is never
//! copied or compacted. A crash between the two steps, or inside the
//! overwrite, is finished at the next open.
//!
//! **Opening** maps the log, keeps about 10 bytes per subject in memory
//! (`table`: the slot of the record naming it, read back on lookup) and
//! decides what each slot holds (`recover`):
//! - a record failing its checksum, or zeros before a record, inside the
//!   last batch written: a torn append, never acknowledged. It is cleared
//!   (rewritten as a *void* record) and logged;
//! - the same anywhere before the last batch: damage. It is reported with
//!   its offset by every lookup of a subject the log does not know (it may
//!   have been that subject's key), and no new key is created until the log
//!   is repaired; subjects whose records are intact keep working;
//! - a key record whose subject has an erasure record: an erasure the crash
//!   interrupted; it is overwritten now.
//!
//! A subject with neither a key nor an erasure record is a *lost* key (a
//! damaged or incomplete key store), reported as [`Error::KeyStore`], never
//! mistaken for erasure. The last batch is the one place where damage and a
//! torn append look the same: a record of it that fails its checksum is
//! taken for torn, and a subject whose events were encrypted under it then
//! reads as a lost key (an error), not as erased.
//!
//! **The subject index** (`keys/subjects.idx`, layout in
//! [`crate::format::keyindex`]) keeps what recovery decided about the log's
//! first slots, so that opening reads only the slots after them: start-up
//! follows the keys made since the index was written, not every key ever
//! made. It is written when the store closes (and at open) once at least
//! 65,536 slots (`INDEX_TAIL_MIN`) follow those it covers, and it is only a cache:
//! it names record slots, every lookup reads the record back and checks
//! its checksum and full subject hash. An index that does not fit the log
//! (its last covered slot reads differently, the log is shorter) or whose
//! header or meta section fails its checksum is set aside and the log read
//! whole. An entry block is checked when a lookup first reads it: a
//! damaged one makes the subjects whose search reads it report damage,
//! with a message saying how to rebuild the index, and the next close
//! rebuilds it from the whole log.
//!
//! **Earlier versions** kept one file per subject
//! (`<sha256(subject)>.key` / `.erased`). Opening migrates them: their
//! records are appended to the log and synced, then each old key file is
//! overwritten with zeros, synced and unlinked. A damaged old file is left
//! in place and its subject reports the damage.
//!
//! [`Shredding`]: crate::Shredding

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::format::keylog::{self, Kind, RECORD_LEN, Record, Slot};
use crate::log::fs::{Fs, FsFile, RealFs};
use crate::log::lock::DirLock;
use crate::log::mmap::VolatileMap;
use crate::log::recovery::write_file_durably;

mod check;
mod index;
mod legacy;
mod recovery;
mod table;
mod writer;

pub use check::{KeyLogCheck, check_log};
use index::{load_index, write_index};
use legacy::migrate_legacy_files;
use recovery::recover;
use table::{MappedLog, Records, SubjectTable};
use writer::LogWriter;

/// The key log's file name inside the key store's directory.
pub const LOG_FILE: &str = "keys.log";
/// The subject index's file name inside the key store's directory.
pub const INDEX_FILE: &str = "subjects.idx";

/// The subject index is rewritten once at least this many slots (5 MiB of
/// log) follow those it covers: reading that many at open takes a few tens
/// of milliseconds, while rewriting the index costs 8 bytes per subject.
pub(crate) const INDEX_TAIL_MIN: u64 = 65_536;

/// A new file is made with this many zeroed record slots (320 KiB).
const CHUNK_SLOTS: u64 = 4096;
/// At most this many queued requests share one fsync.
const GROUP_REQUESTS_MAX: usize = 1024;
/// At most this many records in one batch (their index is a u16).
const BATCH_RECORDS_MAX: usize = 1 << 16;
/// Spare keys are made in batches up to this many once fewer than
/// [`SPARES_LOW`] are left (and at open): a burst of new subjects (tens of
/// thousands a second) empties the pool no faster than a refill's fsync
/// replenishes it, and refills stay a few a second at most, as each one's
/// fsync competes with the event log's on the same disk.
const SPARES_TARGET: usize = 16_384;
const SPARES_LOW: usize = SPARES_TARGET / 2;
/// How long handed-out spares' assignments may wait for the writer when
/// nothing else is queued (see [`LogWriter::run`]): nobody waits for them,
/// so their fsyncs are kept to a handful a second.
const ASSIGN_LINGER: std::time::Duration = std::time::Duration::from_millis(100);
/// A floor is recorded at most this often...
const FLOOR_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
/// ...after spares were handed out, or once the log has grown this many
/// events past the last floor (bounding what recovery reads).
const FLOOR_EVENTS_MAX: u64 = 100_000;

/// A subject's key, or the fact that it was destroyed.
#[derive(Clone, PartialEq, Eq)]
pub enum SubjectKey {
    Key([u8; 32]),
    Erased,
}

impl std::fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never print key material.
            SubjectKey::Key(_) => f.write_str("Key(..)"),
            SubjectKey::Erased => f.write_str("Erased"),
        }
    }
}

type Hash = [u8; 32];

fn subject_hash(subject: &str) -> Hash {
    Sha256::digest(subject.as_bytes()).into()
}

/// What the log says about one subject.
#[derive(Clone)]
enum Entry {
    /// A live key and the slot of its record (a spare's slot for a spare).
    Key {
        key: [u8; 32],
        slot: u64,
        spare: bool,
    },
    Erased,
    /// The subject's record cannot be trusted; the text says why.
    Damaged(String),
}

struct State {
    subjects: SubjectTable,
    /// Damage that names no subject (a record failing its checksum): any
    /// subject the log does not know may have been its owner.
    damage: Vec<String>,
    /// Set when a write or fsync failed; the writer refuses everything after.
    poisoned: Option<String>,
    /// Synced spare keys ready to hand out (slot, key).
    spares: Vec<(u64, [u8; 32])>,
    /// Spares the log shows unassigned at open, until [`KeyStore::reconcile`]
    /// learns which of them events were sealed under; `None` once done.
    unreconciled: Option<HashMap<u64, [u8; 32]>>,
    /// A refill of the spares is queued.
    refilling: bool,
    /// Spares handed out whose assignment records the writer has yet to
    /// write (subject, spare slot), in hand-out order. Nobody waits for
    /// them, so they are not sent as requests: the writer takes them with
    /// its next group, or after [`ASSIGN_LINGER`] at the latest.
    assigned: Vec<(Hash, u64)>,
    /// The highest floor in the log.
    floor: u64,
}

/// When the next floor is due.
struct FloorClock {
    floor: u64,
    at: std::time::Instant,
}

struct Shared {
    log_path: PathBuf,
    state: RwLock<State>,
}

impl Shared {
    fn unknown_subject(&self, subject: &str) -> Error {
        let st = self.state.read();
        if st.damage.is_empty() {
            Error::KeyStore(format!(
                "no key and no erasure record for data subject {subject:?} in {}: the key store is incomplete or was replaced",
                self.log_path.display()
            ))
        } else {
            Error::KeyStore(format!(
                "no key record for data subject {subject:?}, and the key log {} is damaged ({}); the subject's key may be among the damaged records",
                self.log_path.display(),
                st.damage.join("; ")
            ))
        }
    }
}

enum Reply {
    Async(oneshot::Sender<Result<()>>),
    Blocking(std::sync::mpsc::SyncSender<Result<()>>),
    /// Nobody waits (assignments, refills, floors).
    Ignore,
}

impl Reply {
    fn send(self, result: Result<()>) {
        // A caller that went away no longer needs the answer.
        match self {
            Reply::Async(tx) => {
                let _ = tx.send(result);
            }
            Reply::Blocking(tx) => {
                let _ = tx.send(result);
            }
            Reply::Ignore => {
                if let Err(e) = result {
                    tracing::warn!("key log: {e}");
                }
            }
        }
    }
}

enum Op {
    /// Keys for these subjects (hash, id for messages) unless they have one.
    Create(Vec<(Hash, String)>),
    Forget(Hash, String),
    /// Spare keys handed out (subject, spare slot).
    Assign(Vec<(Hash, u64)>),
    /// This many new spare keys.
    Refill(usize),
    /// A floor, in a batch of its own after every assignment queued before.
    Floor(u64),
    /// The spares events were found sealed under (subject, spare slot), and
    /// the log position read up to.
    Reconcile(Vec<(Hash, String, u64)>, u64),
}

struct Request {
    op: Op,
    reply: Reply,
}

/// Per-subject keys in a group-committed log.
pub struct KeyStore {
    dir: PathBuf,
    shared: Arc<Shared>,
    requests: Option<std::sync::mpsc::Sender<Request>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    floor_clock: Mutex<FloorClock>,
    /// Spares were handed out since the last floor.
    handed_out: std::sync::atomic::AtomicBool,
    /// The log slots the subject index covered when opened (read through
    /// it rather than from the log).
    indexed: u64,
    /// Released after the writer stopped (fields drop after `Drop::drop`).
    _lock: DirLock,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("dir", &self.dir)
            // Not the subject count: with an index that reads every
            // indexed subject's record.
            .field("slots_indexed_at_open", &self.indexed)
            .finish_non_exhaustive()
    }
}

impl Drop for KeyStore {
    fn drop(&mut self) {
        // Closing the queue stops the writer once it has answered everything.
        self.requests.take();
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
    }
}

impl KeyStore {
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, Arc::new(RealFs))
    }

    /// Opens (creating it if needed) the key store in `dir` on the given
    /// filesystem. The directory is locked while the key store is open.
    pub fn open_with(dir: impl AsRef<Path>, fs: Arc<dyn Fs>) -> Result<Self> {
        Self::open_indexing(dir, fs, INDEX_TAIL_MIN)
    }

    /// As [`KeyStore::open_with`], writing the subject index once
    /// `index_tail_min` slots follow those it covers.
    pub(crate) fn open_indexing(
        dir: impl AsRef<Path>,
        fs: Arc<dyn Fs>,
        index_tail_min: u64,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating the key store {}", dir.display()), e))?;
        let lock = DirLock::acquire(&dir)?;
        let log_path = dir.join(LOG_FILE);
        let ctx = |what: &str| format!("{what} {}", log_path.display());
        let exists = fs
            .list(&dir)
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
            .contains(&log_path);
        if !exists {
            let mut bytes = keylog::encode_header().to_vec();
            bytes.resize(keylog::offset_of(CHUNK_SLOTS) as usize, 0);
            write_file_durably(fs.as_ref(), &dir, LOG_FILE, &bytes)?;
        }
        let file = fs
            .open(&log_path, true)
            .map_err(|e| Error::io(ctx("opening"), e))?;
        // Mapped rather than read, and kept: the subject table reads its
        // records back from the map (see `table`).
        let map = VolatileMap::map(file.std_file()).map_err(|e| Error::io(ctx("mapping"), e))?;
        let header: [u8; keylog::HEADER_LEN] = map.copy(0).unwrap_or([0; keylog::HEADER_LEN]);
        keylog::decode_header(&header)
            .map_err(|why| Error::KeyStore(format!("{}: {why}", log_path.display())))?;
        let records: Arc<dyn Records> = Arc::new(MappedLog(map));
        let base = load_index(fs.as_ref(), &dir, records.as_ref());
        let mut recovered = recover(records.clone(), base);
        for (slot, record) in &recovered.rewrites {
            tracing::warn!(
                file = %log_path.display(),
                offset = keylog::offset_of(*slot),
                "key log: {}",
                match record.kind {
                    Kind::Void => "clearing a torn record of the last batch (never acknowledged)",
                    _ => "finishing an interrupted erasure",
                }
            );
            file.write_all_at(&record.encode(), keylog::offset_of(*slot))
                .map_err(|e| Error::io(ctx("repairing"), e))?;
        }
        if !recovered.rewrites.is_empty() {
            file.sync_data().map_err(|e| Error::io(ctx("syncing"), e))?;
        }
        let mut indexed = recovered.from;
        if recovered.rewrites.is_empty() && recovered.next_slot - recovered.from >= index_tail_min {
            match write_index(fs.as_ref(), &dir, &recovered, records.as_ref()) {
                // Read again through the index just written: what was read
                // into memory is then dropped.
                Ok(()) => {
                    let base = load_index(fs.as_ref(), &dir, records.as_ref());
                    recovered = recover(records.clone(), base);
                    indexed = recovered.from;
                }
                Err(why) => tracing::warn!(
                    dir = %dir.display(),
                    "key store: the subject index was not written: {why}"
                ),
            }
        }
        let damage: Vec<String> = recovered
            .damage
            .iter()
            .map(|(slot, why)| format!("offset {}: {why}", keylog::offset_of(*slot)))
            .collect();
        for why in &damage {
            tracing::error!(file = %log_path.display(), "key log damaged at {why}");
        }
        let floor = recovered.floor;
        let shared = Arc::new(Shared {
            log_path: log_path.clone(),
            state: RwLock::new(State {
                subjects: recovered.subjects,
                damage,
                poisoned: None,
                spares: Vec::new(),
                unreconciled: (!recovered.free_spares.is_empty())
                    .then(|| recovered.free_spares.into_iter().collect()),
                refilling: false,
                assigned: Vec::new(),
                floor,
            }),
        });
        let mut writer = LogWriter {
            shared: shared.clone(),
            file,
            next_slot: recovered.next_slot,
            next_batch: recovered.next_batch,
            index: writer::IndexUpkeep {
                fs: fs.clone(),
                dir: dir.clone(),
                covered: indexed,
                tail_min: index_tail_min,
            },
        };
        migrate_legacy_files(fs.as_ref(), &dir, &mut writer)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("annals-keys".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::io("starting the key writer", e))?;
        Ok(Self {
            dir,
            shared,
            requests: Some(tx),
            writer: Mutex::new(Some(handle)),
            floor_clock: Mutex::new(FloorClock {
                floor,
                at: std::time::Instant::now(),
            }),
            handed_out: std::sync::atomic::AtomicBool::new(false),
            indexed,
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many of the key log's slots opening read through the subject
    /// index rather than from the log.
    pub fn slots_indexed_at_open(&self) -> u64 {
        self.indexed
    }

    /// Whether the subject's key or erasure is known (it then needs no
    /// write to the key log).
    #[cfg(test)]
    pub(crate) fn is_cached(&self, subject: &str) -> bool {
        self.shared
            .state
            .read()
            .subjects
            .contains_key(&subject_hash(subject))
    }

    /// How many spare keys are ready to hand out.
    pub fn spare_keys(&self) -> usize {
        self.shared.state.read().spares.len()
    }

    /// The subject's key or its erasure. A subject never seen is
    /// `Ok(None)`, unless damage in the log may have been its key; use
    /// [`KeyStore::require`] where a key must exist.
    pub fn lookup(&self, subject: &str) -> Result<Option<SubjectKey>> {
        let hash = subject_hash(subject);
        let st = self.shared.state.read();
        match st.subjects.get(&hash) {
            Some(Entry::Key { key, .. }) => Ok(Some(SubjectKey::Key(key))),
            Some(Entry::Erased) => Ok(Some(SubjectKey::Erased)),
            Some(Entry::Damaged(why)) => Err(Error::KeyStore(format!(
                "the key of data subject {subject:?} is damaged: {why}"
            ))),
            None if st.damage.is_empty() => Ok(None),
            None => {
                drop(st);
                Err(self.shared.unknown_subject(subject))
            }
        }
    }

    /// The subject's key or erasure, where data encrypted for it exists: a
    /// missing key then means the key store lost it.
    pub fn require(&self, subject: &str) -> Result<SubjectKey> {
        self.lookup(subject)?
            .ok_or_else(|| self.shared.unknown_subject(subject))
    }

    /// The subject's existing key for encrypting; never writes. A forgotten
    /// subject gets no new key: writing personal data for it is refused.
    pub(crate) fn existing_key_for_write(&self, subject: &str) -> Result<Option<[u8; 32]>> {
        Ok(self.key_for_sealing(subject)?.map(|(key, _)| key))
    }

    /// As [`KeyStore::existing_key_for_write`], with the slot of the key
    /// when it is a spare (sealed fields must name it).
    pub(crate) fn key_for_sealing(&self, subject: &str) -> Result<Option<([u8; 32], Option<u64>)>> {
        let hash = subject_hash(subject);
        if let Some(Entry::Key { key, slot, spare }) = self.shared.state.read().subjects.get(&hash)
        {
            return Ok(Some((key, spare.then_some(slot))));
        }
        match self.lookup(subject)? {
            Some(SubjectKey::Key(key)) => Ok(Some((key, None))),
            Some(SubjectKey::Erased) => Err(forgotten(subject)),
            None => Ok(None),
        }
    }

    /// Makes sure every subject has a key (or is erased), without waiting
    /// for the key log where spare keys allow: a subject without a key
    /// takes a spare (its assignment is written in the background), and
    /// only when none is left is a key created durably as by
    /// [`KeyStore::ensure_keys`]. Data sealed under a spare must name its
    /// slot (see the module docs); [`Shredding`] does.
    ///
    /// [`Shredding`]: crate::Shredding
    pub async fn assign_keys<I, S>(&self, subjects: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let Some(Op::Create(missing)) = self.missing(subjects)? else {
            return Ok(());
        };
        let keyed = missing.len();
        let rest = self.hand_out(missing)?;
        if !rest.is_empty() {
            self.create(Op::Create(rest)).await?;
        }
        crate::telemetry::subjects_keyed(keyed);
        Ok(())
    }

    /// Queues a creation and waits until it is durable.
    async fn create(&self, op: Op) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(op, Reply::Async(tx))?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Gives spares to the subjects that still have no key; returns those
    /// left without one.
    fn hand_out(&self, missing: Vec<(Hash, String)>) -> Result<Vec<(Hash, String)>> {
        let mut st = self.shared.state.write();
        if st.poisoned.is_some() || !st.damage.is_empty() || st.unreconciled.is_some() {
            // The writer gives the answer (an error, or a durable key).
            return Ok(missing);
        }
        let mut rest = Vec::new();
        for (hash, subject) in missing {
            if st.subjects.contains_key(&hash) {
                // Raced with another caller (or an erasure, which sealing
                // then refuses).
                continue;
            }
            if self.take_spare(&mut st, hash).is_none() {
                rest.push((hash, subject));
            }
        }
        self.refill_if_low(&mut st, false)?;
        Ok(rest)
    }

    /// The key to seal the subject's data under now: its own, or a spare
    /// it takes at once. The path every registration takes: one hash of
    /// the subject, a read lock and, for a new subject, a write lock.
    pub(crate) fn key_or_spare(&self, subject: &str) -> Result<SealingKey> {
        let hash = subject_hash(subject);
        let known = |st: &State| match st.subjects.get(&hash) {
            Some(Entry::Key { key, slot, spare }) => {
                Some(SealingKey::Ready(key, spare.then_some(slot)))
            }
            Some(_) => Some(SealingKey::Unusable),
            None => None,
        };
        if let Some(found) = known(&self.shared.state.read()) {
            return Ok(found);
        }
        let mut st = self.shared.state.write();
        if let Some(found) = known(&st) {
            return Ok(found);
        }
        if st.poisoned.is_some() || !st.damage.is_empty() || st.unreconciled.is_some() {
            return Ok(SealingKey::Missing);
        }
        let taken = self.take_spare(&mut st, hash);
        self.refill_if_low(&mut st, false)?;
        Ok(taken.map_or(SealingKey::Missing, |(key, slot)| {
            SealingKey::Ready(key, Some(slot))
        }))
    }

    /// Gives the subject (known to have no entry) a spare, if one is ready.
    fn take_spare(&self, st: &mut State, hash: Hash) -> Option<([u8; 32], u64)> {
        let (slot, key) = st.spares.pop()?;
        st.subjects.insert(
            hash,
            Entry::Key {
                key,
                slot,
                spare: true,
            },
        );
        // Recorded while the lock is held, in the order the spares are
        // handed out and before any append that uses them: the writer takes
        // them after the requests of its group, so before any floor sent
        // once such an append returned (the floor relies on it).
        st.assigned.push((hash, slot));
        self.handed_out
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Some((key, slot))
    }

    /// Has spare keys made if the pool is low, so that the first new
    /// subjects after a start find spares rather than wait for a key log
    /// fsync each ([`Shredding::recover`] calls it once the log is
    /// reconciled). Returns once they are durable if the pool was empty
    /// (one fsync, at start-up), at once otherwise.
    ///
    /// [`Shredding::recover`]: crate::Shredding::recover
    pub async fn prepare_spares(&self) -> Result<()> {
        let made = self.refill_if_low(&mut self.shared.state.write(), true)?;
        match made {
            Some(made) => made.await.map_err(|_| writer_gone())?,
            None => Ok(()),
        }
    }

    /// Asks the writer for more spares if the pool (counting those held
    /// back until reconciled) is low and no refill is under way. With
    /// `wait_if_empty`, and the pool empty, what answers once they are
    /// durable.
    fn refill_if_low(
        &self,
        st: &mut State,
        wait_if_empty: bool,
    ) -> Result<Option<oneshot::Receiver<Result<()>>>> {
        let pool = st.spares.len() + st.unreconciled.as_ref().map_or(0, HashMap::len);
        if pool >= SPARES_LOW || st.refilling {
            return Ok(None);
        }
        st.refilling = true;
        if wait_if_empty && pool == 0 {
            let (tx, rx) = oneshot::channel();
            self.send(Op::Refill(SPARES_TARGET), Reply::Async(tx))?;
            return Ok(Some(rx));
        }
        self.send(Op::Refill(SPARES_TARGET - pool), Reply::Ignore)?;
        Ok(None)
    }

    /// Tells the key store that the event log holds everything up to
    /// `position` (an append through [`Shredding`] just returned with it),
    /// so that a floor is recorded now and then.
    ///
    /// [`Shredding`]: crate::Shredding
    pub fn note_appended(&self, position: u64) {
        // On every append: most return here, touching no other lock.
        let mut clock = self.floor_clock.lock();
        if position <= clock.floor || clock.at.elapsed() < FLOOR_INTERVAL {
            return;
        }
        if self.shared.state.read().unreconciled.is_some() {
            return;
        }
        let handed_out = self
            .handed_out
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        if !handed_out && position - clock.floor < FLOOR_EVENTS_MAX {
            return;
        }
        // Every event at or below `position` was appended before this
        // call, after the assignment of any spare it is sealed under was
        // queued: the floor's batch comes after theirs.
        if self.send(Op::Floor(position), Reply::Ignore).is_ok() {
            *clock = FloorClock {
                floor: position,
                at: std::time::Instant::now(),
            };
        }
    }

    /// The spare slots events may have been sealed under without their
    /// assignment reaching the log, and the floor above which the event log
    /// must be read to find them; `None` when there is nothing to find.
    pub fn unreconciled(&self) -> Option<(u64, HashSet<u64>)> {
        let st = self.shared.state.read();
        st.unreconciled
            .as_ref()
            .map(|spares| (st.floor, spares.keys().copied().collect()))
    }

    /// Records which spares the events above the floor were sealed under
    /// (subject, spare slot), read up to log position `read_to`; the other
    /// spares become available again. Returns once that is durable.
    pub async fn reconcile(&self, used: Vec<(String, u64)>, read_to: u64) -> Result<()> {
        let used = used
            .into_iter()
            .map(|(subject, slot)| (subject_hash(&subject), subject, slot))
            .collect();
        let (tx, rx) = oneshot::channel();
        self.send(Op::Reconcile(used, read_to), Reply::Async(tx))?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Makes sure every subject has a key (or is erased), creating the
    /// missing ones durably; returns once they are synced. Concurrent calls
    /// share the log's fsyncs.
    pub async fn ensure_keys<I, S>(&self, subjects: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let Some(op) = self.missing(subjects)? else {
            return Ok(());
        };
        self.create(op).await
    }

    /// The subject's key, created (durably) if it has none. Blocks while
    /// the key is written: call it from blocking code, not an async task
    /// (there, use [`KeyStore::ensure_keys`]). A forgotten subject gets no
    /// new key: writing personal data for it is refused.
    pub fn key_for_write(&self, subject: &str) -> Result<[u8; 32]> {
        if let Some(key) = self.existing_key_for_write(subject)? {
            return Ok(key);
        }
        if let Some(op) = self.missing([subject])? {
            self.send_blocking(op)?;
        }
        self.existing_key_for_write(subject)?
            .ok_or_else(|| self.shared.unknown_subject(subject))
    }

    /// Destroys the subject's key. Idempotent. Blocks while the log is
    /// written (see [`KeyStore::forget_subject`] for async code).
    pub fn forget(&self, subject: &str) -> Result<()> {
        self.send_blocking(Op::Forget(subject_hash(subject), subject.to_owned()))?;
        crate::telemetry::erased();
        Ok(())
    }

    /// Destroys the subject's key: returns once the erasure is durable and
    /// the key bytes are overwritten on disk. Idempotent.
    pub async fn forget_subject(&self, subject: &str) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(
            Op::Forget(subject_hash(subject), subject.to_owned()),
            Reply::Async(tx),
        )?;
        rx.await.map_err(|_| writer_gone())??;
        crate::telemetry::erased();
        Ok(())
    }

    /// The creation request for the subjects the log does not know yet.
    fn missing<I, S>(&self, subjects: I) -> Result<Option<Op>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let st = self.shared.state.read();
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        for subject in subjects {
            let subject = subject.as_ref();
            let hash = subject_hash(subject);
            match st.subjects.get(&hash) {
                Some(Entry::Key { .. }) => {}
                Some(Entry::Erased) => return Err(forgotten(subject)),
                Some(Entry::Damaged(why)) => {
                    return Err(Error::KeyStore(format!(
                        "the key of data subject {subject:?} is damaged: {why}"
                    )));
                }
                None => {
                    if seen.insert(hash) {
                        missing.push((hash, subject.to_owned()));
                    }
                }
            }
        }
        Ok((!missing.is_empty()).then_some(Op::Create(missing)))
    }

    fn send(&self, op: Op, reply: Reply) -> Result<()> {
        self.requests
            .as_ref()
            .ok_or_else(writer_gone)?
            .send(Request { op, reply })
            .map_err(|_| writer_gone())
    }

    fn send_blocking(&self, op: Op) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.send(op, Reply::Blocking(tx))?;
        rx.recv().map_err(|_| writer_gone())?
    }
}

/// What [`KeyStore::key_or_spare`] found for a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SealingKey {
    /// The key to seal under, and its slot if it is a spare.
    Ready([u8; 32], Option<u64>),
    /// No key, and none could be handed out at once (no spare ready, the
    /// log not reconciled, damaged or stopped): [`KeyStore::assign_keys`]
    /// makes one or says why not.
    Missing,
    /// Erased or damaged: sealing refuses it with the reason
    /// ([`KeyStore::key_for_sealing`]).
    Unusable,
}

fn forgotten(subject: &str) -> Error {
    Error::KeyStore(format!(
        "data subject {subject:?} was forgotten; no personal data can be stored for it"
    ))
}

fn writer_gone() -> Error {
    Error::Poisoned("the personal-data key writer stopped".into())
}

/// A key log that cannot be written (a full disk, an I/O error) makes the
/// store unavailable for what needs it; it says nothing about the keys it
/// holds, so it is never reported as a missing or damaged key.
fn key_log_stopped(why: String) -> Error {
    Error::Poisoned(format!(
        "the personal-data key log stopped accepting writes after a failed write or fsync: {why}"
    ))
}

#[cfg(test)]
mod tests;
