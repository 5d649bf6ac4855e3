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
//! chunks, as earlier versions did, kept that fsync to data only, but
//! doubled the bytes written per record; now that most key writes are
//! spares and assignments nobody waits for, the bytes cost more.)
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

mod table;

use table::{MappedLog, Records, SubjectTable};

/// The key log's file name inside the key store's directory.
pub const LOG_FILE: &str = "keys.log";

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
    /// Released after the writer stopped (fields drop after `Drop::drop`).
    _lock: DirLock,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("dir", &self.dir)
            .field("subjects", &self.shared.state.read().subjects.len())
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
        let recovered = recover(Arc::new(MappedLog(map)));
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
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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
        let rest = self.hand_out(missing)?;
        if rest.is_empty() {
            return Ok(());
        }
        self.create(Op::Create(rest)).await
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
        self.send_blocking(Op::Forget(subject_hash(subject), subject.to_owned()))
    }

    /// Destroys the subject's key: returns once the erasure is durable and
    /// the key bytes are overwritten on disk. Idempotent.
    pub async fn forget_subject(&self, subject: &str) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(
            Op::Forget(subject_hash(subject), subject.to_owned()),
            Reply::Async(tx),
        )?;
        rx.await.map_err(|_| writer_gone())?
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

/// What opening found in the log.
struct Recovered {
    subjects: SubjectTable,
    /// Slots that fail their checksum (or are holes) before the last batch.
    damage: Vec<(u64, String)>,
    /// Slots to rewrite before anything else: torn records of the last
    /// batch become void, key records of erased subjects destroyed.
    rewrites: Vec<(u64, Record)>,
    /// Spare keys no assignment names (slot, key).
    free_spares: Vec<(u64, [u8; 32])>,
    /// The highest floor.
    floor: u64,
    next_slot: u64,
    next_batch: u64,
}

/// The record slots of a key log's bytes (its header checked by the
/// caller); a cut record at the end is not a slot.
fn record_slots(bytes: &[u8]) -> Vec<[u8; RECORD_LEN]> {
    bytes
        .get(keylog::HEADER_LEN..)
        .unwrap_or_default()
        .chunks_exact(RECORD_LEN)
        .filter_map(|c| c.try_into().ok())
        .collect()
}

/// What a read-only check of a key log found (see [`check_log`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyLogCheck {
    /// Subjects with a live key.
    pub live: u64,
    /// Subjects whose key was destroyed.
    pub erased: u64,
    /// Spare keys no assignment names.
    pub spares: u64,
    /// Damage, by file offset: keys that may be lost.
    pub damage: Vec<(u64, String)>,
    /// What the next open repairs by itself, losing nothing, by file
    /// offset.
    pub repairs: Vec<(u64, String)>,
}

/// Reads the key log in `dir` without writing or locking anything and says
/// what it holds, as [`KeyStore::open`] would see it; `Ok(None)` if there is
/// no key log. An error if it cannot be read or is not a key log.
pub fn check_log(dir: &Path) -> Result<Option<KeyLogCheck>> {
    let path = dir.join(LOG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        // Before the key log: one file per subject, if any.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return check_legacy_files(dir),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    keylog::decode_header(&bytes)
        .map_err(|why| Error::KeyStore(format!("{}: {why}", path.display())))?;
    let slots = record_slots(&bytes);
    drop(bytes);
    let recovered = recover(Arc::new(slots));
    let mut check = KeyLogCheck {
        spares: recovered.free_spares.len() as u64,
        ..KeyLogCheck::default()
    };
    for entry in recovered.subjects.values() {
        match entry {
            Entry::Key { .. } => check.live += 1,
            Entry::Erased => check.erased += 1,
            // Its record is also in `damage`, which says where.
            Entry::Damaged(_) => {}
        }
    }
    check.damage = recovered
        .damage
        .into_iter()
        .map(|(slot, why)| (keylog::offset_of(slot), why))
        .collect();
    check.repairs = recovered
        .rewrites
        .into_iter()
        .map(|(slot, record)| {
            let what = match record.kind {
                Kind::Void => "a torn record of the last batch (never acknowledged) is cleared",
                _ => "an interrupted erasure is finished",
            };
            (keylog::offset_of(slot), what.to_owned())
        })
        .collect();
    Ok(Some(check))
}

/// [`check_log`] for a key store of the one-file-per-subject format (which
/// the next open migrates into a key log); `Ok(None)` if there is none.
fn check_legacy_files(dir: &Path) -> Result<Option<KeyLogCheck>> {
    let Some((found, _)) = legacy_files(&crate::log::fs::RealFs, dir)? else {
        return Ok(None);
    };
    if found.is_empty() {
        return Ok(None);
    }
    let mut check = KeyLogCheck::default();
    for (path, _, legacy) in found {
        match legacy {
            Ok(Legacy::Erased) => check.erased += 1,
            Ok(_) => check.live += 1,
            Err(why) => check
                .damage
                .push((0, format!("{} is damaged: {why}", path.display()))),
        }
    }
    check.repairs.push((
        0,
        "key files of the one-file-per-subject format are migrated into a key log".into(),
    ));
    Ok(Some(check))
}

/// A key or erasure file of the one-file-per-subject format: its path, the
/// subject its name says, and what it decodes to.
type LegacyFile = (PathBuf, Hash, std::result::Result<Legacy, String>);

/// The key and erasure files of the one-file-per-subject format in `dir`,
/// decoded, and the leftovers of creations interrupted in that format;
/// `None` if `dir` does not exist.
fn legacy_files(fs: &dyn Fs, dir: &Path) -> Result<Option<(Vec<LegacyFile>, Vec<PathBuf>)>> {
    let files = match fs.list(dir) {
        Ok(files) => files,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    let mut found = Vec::new();
    let mut leftovers = Vec::new();
    for path in files {
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        let Some(hash) = parse_hex_hash(stem) else {
            continue;
        };
        match ext {
            "key" | "erased" => {
                let bytes = fs
                    .open(&path, false)
                    .map_err(|e| Error::io(format!("opening {}", path.display()), e))?
                    .read_all()
                    .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                found.push((path, hash, decode_legacy(&bytes, &hash)));
            }
            // A key file whose creation was interrupted: never acknowledged.
            "tmp" => leftovers.push(path),
            _ => {}
        }
    }
    Ok(Some((found, leftovers)))
}

/// What recovery learns from a first pass over the slots, before it
/// decides what each one holds.
struct Survey {
    /// The last batch: the highest batch number among intact records.
    final_batch: u64,
    /// Its first slot: the slot of any of its records minus its index.
    final_start: u64,
    /// One past the last slot that is not all zeros.
    end: u64,
    /// Subjects with an erasure or destroyed-key record, and the slot of
    /// one such record.
    erased: HashMap<Hash, u64>,
    /// Assignments as (spare slot, assignment slot), sorted: a spare is
    /// handed out only once synced, so its assignment always comes after
    /// it. Slots rather than a map from spare to subject, which would hold
    /// 50 bytes for each of millions of subjects while the log is read.
    assigned: Vec<(u64, u64)>,
    /// The highest floor.
    floor: u64,
    /// Key and spare records: what the subject table is sized for.
    keys: usize,
}

impl Survey {
    fn of(records: &dyn Records) -> Self {
        let mut survey = Survey {
            final_batch: 0,
            final_start: 0,
            end: 0,
            erased: HashMap::new(),
            assigned: Vec::new(),
            floor: 0,
            keys: 0,
        };
        let mut first_final: Option<u64> = None;
        for i in 0..records.slot_count() {
            let Some(raw) = records.slot(i) else { break };
            let r = match keylog::decode(&raw) {
                Slot::Empty => continue,
                Slot::Bad(_) => {
                    survey.end = i + 1;
                    continue;
                }
                Slot::Record(r) => r,
            };
            survey.end = i + 1;
            let start = i.saturating_sub(u64::from(r.index));
            if first_final.is_none() || r.batch > survey.final_batch {
                survey.final_batch = r.batch;
                first_final = Some(start);
            } else if r.batch == survey.final_batch {
                first_final = first_final.map(|s| s.min(start));
            }
            match r.kind {
                // A destroyed spare names no subject.
                Kind::Erasure | Kind::Destroyed if r.subject != [0; 32] => {
                    survey.erased.insert(r.subject, i);
                }
                Kind::Assign(spare) => survey.assigned.push((spare, i)),
                Kind::Floor(position) => survey.floor = survey.floor.max(position),
                Kind::Key(_) | Kind::Spare(_) => survey.keys += 1,
                _ => {}
            }
        }
        survey.assigned.sort_unstable();
        survey.final_start = first_final.unwrap_or(0);
        survey
    }

    /// The subject the spare in `slot` was assigned to (by its last
    /// assignment), and whether two assignments name different subjects.
    fn owner(&self, records: &dyn Records, slot: u64) -> Option<(Hash, bool)> {
        let from = self.assigned.partition_point(|(spare, _)| *spare < slot);
        let to = self.assigned.partition_point(|(spare, _)| *spare <= slot);
        let subjects: Vec<Hash> = self.assigned[from..to]
            .iter()
            .filter_map(|(_, at)| match keylog::decode(&records.slot(*at)?) {
                Slot::Record(r) => Some(r.subject),
                _ => None,
            })
            .collect();
        let last = *subjects.last()?;
        Some((last, subjects.iter().any(|s| *s != last)))
    }
}

/// Decides what every slot of the log holds (see the module docs).
///
/// The last batch is the one with the highest batch number among intact
/// records; it starts at the slot of any of its records minus that record's
/// index. The writer appends a batch only after the previous one was
/// synced, so anything unreadable from that slot on was never acknowledged,
/// while anything unreadable before it was.
fn recover(records: Arc<dyn Records>) -> Recovered {
    // Slots are decoded twice (a survey, then the decisions) rather than
    // kept decoded: a decoded slot is larger than its 80 bytes, and a log
    // of millions of subjects would hold them all at once.
    let survey = Survey::of(records.as_ref());
    let (final_batch, final_start, end) = (survey.final_batch, survey.final_start, survey.end);
    let erased = &survey.erased;
    let mut out = Recovered {
        subjects: SubjectTable::new(records.clone(), survey.keys),
        damage: Vec::new(),
        rewrites: Vec::new(),
        free_spares: Vec::new(),
        floor: survey.floor,
        next_slot: end,
        next_batch: final_batch + 1,
    };
    let void = |i: u64| Record {
        kind: Kind::Void,
        index: u16::try_from(i - final_start).unwrap_or(u16::MAX),
        batch: final_batch,
        subject: [0; 32],
    };
    for i in 0..end {
        let Some(raw) = records.slot(i) else { break };
        match &keylog::decode(&raw) {
            Slot::Empty if i >= final_start => out.rewrites.push((i, void(i))),
            Slot::Empty => out
                .damage
                .push((i, "zeros inside the log (a lost write)".into())),
            Slot::Bad(why) => {
                let subject = Record::subject_of_bad(&raw);
                let (batch, index) = Record::place_of_bad(&raw);
                // A spare's record names no subject; its assignment does.
                let owner = survey.owner(records.as_ref(), i).map(|(owner, _)| owner);
                let erased_owner = erased.contains_key(&subject)
                    || (subject == [0; 32] && owner.is_some_and(|h| erased.contains_key(&h)));
                if erased_owner && batch < final_batch && i < final_start {
                    // A key record whose overwrite by its (durable) erasure
                    // was torn: the bytes that name it are never rewritten.
                    let destroyed = Record {
                        kind: Kind::Destroyed,
                        index,
                        batch,
                        subject,
                    };
                    out.rewrites.push((i, destroyed));
                } else if i >= final_start {
                    out.rewrites.push((i, void(i)));
                } else {
                    if let Some(owner) = owner {
                        out.subjects.insert(
                            owner,
                            Entry::Damaged(format!(
                                "its spare key at offset {} is damaged: {why}",
                                keylog::offset_of(i)
                            )),
                        );
                    }
                    out.damage.push((i, why.clone()));
                }
            }
            Slot::Record(r) => match r.kind {
                // An erasure the crash interrupted before its overwrite.
                Kind::Key(_) if erased.contains_key(&r.subject) => {
                    out.rewrites.push((
                        i,
                        Record {
                            kind: Kind::Destroyed,
                            ..*r
                        },
                    ));
                    out.subjects.insert_record(r.subject, erased[&r.subject]);
                }
                Kind::Spare(key) => {
                    let Some((owner, twice)) = survey.owner(records.as_ref(), i) else {
                        out.free_spares.push((i, key));
                        continue;
                    };
                    if let Some(erasure) = erased.get(&owner) {
                        out.rewrites.push((
                            i,
                            Record {
                                kind: Kind::Destroyed,
                                ..*r
                            },
                        ));
                        out.subjects.insert_record(owner, *erasure);
                        continue;
                    }
                    let why = if twice {
                        format!(
                            "the spare key at offset {} is assigned to two subjects",
                            keylog::offset_of(i)
                        )
                    } else if out.subjects.contains_key(&owner) {
                        format!(
                            "the key log holds two keys for it (a spare at offset {})",
                            keylog::offset_of(i)
                        )
                    } else {
                        // The last assignment names the owner (`owner`).
                        let to = survey.assigned.partition_point(|(spare, _)| *spare <= i);
                        out.subjects.insert_record(owner, survey.assigned[to - 1].1);
                        continue;
                    };
                    out.subjects.insert(owner, Entry::Damaged(why));
                }
                Kind::Assign(_) | Kind::Floor(_) => {}
                Kind::Key(key) => {
                    let why = match out.subjects.get(&r.subject) {
                        None => {
                            out.subjects.insert_record(r.subject, i);
                            continue;
                        }
                        Some(Entry::Key { key: first, .. }) if first == key => continue,
                        Some(_) => format!(
                            "the key log holds two different keys for it (the second at offset {})",
                            keylog::offset_of(i)
                        ),
                    };
                    out.subjects.insert(r.subject, Entry::Damaged(why));
                }
                Kind::Erasure | Kind::Destroyed if r.subject != [0; 32] => {
                    out.subjects.insert_record(r.subject, i);
                }
                Kind::Erasure | Kind::Destroyed => {}
                Kind::Void => {}
            },
        }
    }
    out
}

/// The single writer of the log.
struct LogWriter {
    shared: Arc<Shared>,
    file: Arc<dyn FsFile>,
    /// The first slot not written yet.
    next_slot: u64,
    next_batch: u64,
}

/// One batch in the making.
#[derive(Default)]
struct Group {
    records: Vec<Record>,
    /// What the batch changes, published once it is durable.
    pending: HashMap<Hash, Entry>,
    /// Key records (slot, subject) to overwrite once the batch's erasures
    /// are durable.
    destroy: Vec<(u64, Hash)>,
    /// Answered once the batch is durable.
    created: Vec<Reply>,
    /// Answered once the key bytes are overwritten and synced.
    forgotten: Vec<Reply>,
    /// Spare keys the batch makes, handed out once it is durable.
    spares: Vec<(u64, [u8; 32])>,
    /// Set by a reconciliation: the spares that become free again.
    reconciled: Option<Vec<(u64, [u8; 32])>>,
}

impl LogWriter {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Request>) {
        use std::sync::mpsc::RecvTimeoutError;
        let mut open = true;
        while open {
            let mut requests = Vec::new();
            match rx.recv_timeout(ASSIGN_LINGER) {
                Ok(first) => requests.push(first),
                // Time to write the assignments gathered meanwhile.
                Err(RecvTimeoutError::Timeout) => {}
                // Closed: answer what is queued, write what was handed out.
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            while requests.len() < GROUP_REQUESTS_MAX {
                match rx.try_recv() {
                    Ok(request) => requests.push(request),
                    Err(_) => break,
                }
            }
            // Taken after the requests: a floor among them was sent after
            // the appends whose assignments are already in here, and they
            // go first.
            let assigned = std::mem::take(&mut self.shared.state.write().assigned);
            if requests.is_empty() && assigned.is_empty() {
                continue;
            }
            let assignments = assigned
                .chunks(BATCH_RECORDS_MAX)
                .map(|chunk| Request {
                    op: Op::Assign(chunk.to_vec()),
                    reply: Reply::Ignore,
                })
                .collect::<Vec<_>>();
            let requests = assignments.into_iter().chain(requests);
            let mut group = Group::default();
            for request in requests {
                let needed = match &request.op {
                    Op::Create(subjects) => subjects.len(),
                    Op::Assign(assigned) => assigned.len(),
                    Op::Reconcile(used, _) => used.len(),
                    Op::Refill(n) => *n,
                    Op::Forget(..) | Op::Floor(_) => 1,
                };
                if needed > BATCH_RECORDS_MAX {
                    request.reply.send(Err(Error::KeyStore(format!(
                        "{needed} new keys in one request; at most {BATCH_RECORDS_MAX}"
                    ))));
                    continue;
                }
                if group.records.len() + needed > BATCH_RECORDS_MAX {
                    self.commit(std::mem::take(&mut group));
                }
                self.plan(request, &mut group);
            }
            self.commit(group);
        }
        tracing::debug!("key writer stopped");
    }

    fn current(&self, group: &Group, hash: &Hash) -> Option<Entry> {
        group
            .pending
            .get(hash)
            .cloned()
            .or_else(|| self.shared.state.read().subjects.get(hash))
    }

    fn record(&self, group: &Group, kind: Kind, subject: Hash) -> Record {
        Record {
            kind,
            // Bounded by BATCH_RECORDS_MAX.
            index: u16::try_from(group.records.len()).unwrap_or(u16::MAX),
            batch: self.next_batch,
            subject,
        }
    }

    /// Adds a request's records to the group, or answers it at once.
    fn plan(&mut self, request: Request, group: &mut Group) {
        let refusal = {
            let st = self.shared.state.read();
            st.poisoned.clone().map(key_log_stopped)
                .or_else(|| {
                    (!st.damage.is_empty() && matches!(request.op, Op::Create(_))).then(|| {
                        Error::KeyStore(format!(
                            "the key log {} is damaged ({}); no new key is created until it is repaired",
                            self.shared.log_path.display(),
                            st.damage.join("; ")
                        ))
                    })
                })
        };
        if let Some(err) = refusal {
            request.reply.send(Err(err));
            return;
        }
        match request.op {
            Op::Create(subjects) => {
                let mut new = Vec::new();
                for (hash, subject) in subjects {
                    match self.current(group, &hash) {
                        Some(Entry::Key { .. }) => {}
                        Some(Entry::Erased) => {
                            request.reply.send(Err(forgotten(&subject)));
                            return;
                        }
                        Some(Entry::Damaged(why)) => {
                            request.reply.send(Err(Error::KeyStore(format!(
                                "the key of data subject {subject:?} is damaged: {why}"
                            ))));
                            return;
                        }
                        None => new.push(hash),
                    }
                }
                for hash in new {
                    let mut key = [0u8; 32];
                    if let Err(e) = getrandom::fill(&mut key) {
                        request.reply.send(Err(Error::KeyStore(format!(
                            "no randomness for a new key: {e}"
                        ))));
                        return;
                    }
                    let slot = self.next_slot + group.records.len() as u64;
                    group.records.push(self.record(group, Kind::Key(key), hash));
                    group.pending.insert(
                        hash,
                        Entry::Key {
                            key,
                            slot,
                            spare: false,
                        },
                    );
                }
                group.created.push(request.reply);
            }
            Op::Forget(hash, subject) => {
                match self.current(group, &hash) {
                    Some(Entry::Erased) => {}
                    Some(Entry::Damaged(why)) => {
                        request.reply.send(Err(Error::KeyStore(format!(
                            "the key of data subject {subject:?} is damaged: {why}"
                        ))));
                        return;
                    }
                    None if !self.shared.state.read().damage.is_empty() => {
                        // Its key may be in a damaged record: an erasure now
                        // would leave those bytes, and hide the damage.
                        request
                            .reply
                            .send(Err(self.shared.unknown_subject(&subject)));
                        return;
                    }
                    found => {
                        if let Some(Entry::Key { slot, .. }) = found {
                            group.destroy.push((slot, hash));
                        }
                        group.records.push(self.record(group, Kind::Erasure, hash));
                        group.pending.insert(hash, Entry::Erased);
                    }
                }
                group.forgotten.push(request.reply);
            }
            Op::Assign(assigned) => {
                for (hash, slot) in assigned {
                    group
                        .records
                        .push(self.record(group, Kind::Assign(slot), hash));
                }
            }
            Op::Refill(n) => {
                // One call to the operating system for all of them.
                let mut random = vec![0u8; n * 32];
                if let Err(e) = getrandom::fill(&mut random) {
                    tracing::warn!("key log: no randomness for spare keys: {e}");
                    // A later hand-out asks again.
                    self.shared.state.write().refilling = false;
                    request.reply.send(Err(Error::KeyStore(format!(
                        "no randomness for spare keys: {e}"
                    ))));
                    return;
                }
                // Answered once the spares are durable (and in the pool).
                group.created.push(request.reply);
                for chunk in random.chunks_exact(32) {
                    let mut key = [0u8; 32];
                    key.copy_from_slice(chunk);
                    let slot = self.next_slot + group.records.len() as u64;
                    group
                        .records
                        .push(self.record(group, Kind::Spare(key), [0; 32]));
                    group.spares.push((slot, key));
                }
            }
            Op::Floor(position) => {
                // Its own batch, after the assignments queued before it:
                // a floor must never survive a torn batch they were torn in.
                if !group.records.is_empty() {
                    self.commit(std::mem::take(group));
                }
                group
                    .records
                    .push(self.record(group, Kind::Floor(position), [0; 32]));
            }
            Op::Reconcile(used, read_to) => self.reconcile(used, read_to, request.reply, group),
        }
    }

    /// Assigns the spares events were found sealed under, frees the others
    /// and records a floor at `read_to`, in that order.
    fn reconcile(
        &mut self,
        used: Vec<(Hash, String, u64)>,
        read_to: u64,
        reply: Reply,
        group: &mut Group,
    ) {
        let Some(mut free) = self.shared.state.read().unreconciled.clone() else {
            return reply.send(Ok(()));
        };
        // Checked whole before anything is written, so that a refusal
        // leaves the spares as they were.
        let mut found = Vec::new();
        for (hash, subject, slot) in used {
            let Some(key) = free.remove(&slot) else {
                return reply.send(Err(Error::KeyStore(format!(
                    "an event of data subject {subject:?} is sealed under spare key slot {slot}, which the key log {} does not hold as a free spare",
                    self.shared.log_path.display()
                ))));
            };
            if found.iter().any(|(h, _, _)| *h == hash) {
                return reply.send(Err(Error::KeyStore(format!(
                    "events of data subject {subject:?} are sealed under two spare keys"
                ))));
            }
            match self.current(group, &hash) {
                None => found.push((hash, slot, Some(key))),
                // Forgotten after its events were sealed: the spare goes too.
                Some(Entry::Erased) => found.push((hash, slot, None)),
                Some(_) => {
                    return reply.send(Err(Error::KeyStore(format!(
                        "data subject {subject:?} has a key already, and an event of it is sealed under spare key slot {slot} as well"
                    ))));
                }
            }
        }
        for (hash, slot, key) in found {
            match key {
                Some(key) => {
                    group.pending.insert(
                        hash,
                        Entry::Key {
                            key,
                            slot,
                            spare: true,
                        },
                    );
                }
                None => group.destroy.push((slot, hash)),
            }
            group
                .records
                .push(self.record(group, Kind::Assign(slot), hash));
        }
        group.reconciled = Some(free.into_iter().collect());
        self.commit(std::mem::take(group));
        group
            .records
            .push(self.record(group, Kind::Floor(read_to), [0; 32]));
        group.created.push(reply);
    }

    fn poison(&self, what: String, group: Group) {
        tracing::error!("{what}; the key log refuses writes until it is reopened");
        self.shared.state.write().poisoned = Some(what.clone());
        for reply in group.created.into_iter().chain(group.forgotten) {
            reply.send(Err(key_log_stopped(what.clone())));
        }
    }

    /// Appends the group's records, syncs, publishes, answers; then
    /// overwrites the keys of the subjects it erased, syncs, answers those.
    fn commit(&mut self, mut group: Group) {
        if !group.records.is_empty() {
            if let Err(e) = self.append(&group.records) {
                let what = format!(
                    "appending {} records to {} failed: {e}",
                    group.records.len(),
                    self.shared.log_path.display()
                );
                return self.poison(what, group);
            }
            self.next_slot += group.records.len() as u64;
            self.next_batch += 1;
        }
        {
            let mut st = self.shared.state.write();
            st.subjects.extend(group.pending.drain());
            if !group.spares.is_empty() {
                st.spares.append(&mut group.spares);
                st.refilling = false;
            }
            if let Some(mut free) = group.reconciled.take() {
                st.spares.append(&mut free);
                st.unreconciled = None;
            }
            for record in &group.records {
                if let Kind::Floor(position) = record.kind {
                    st.floor = st.floor.max(position);
                }
            }
        }
        for reply in group.created.drain(..) {
            reply.send(Ok(()));
        }
        // The erasures are durable; if the overwrite fails, the next open
        // finishes it.
        if !group.destroy.is_empty()
            && let Err(e) = self.destroy(&group.destroy)
        {
            let what = format!(
                "overwriting erased keys in {} failed: {e}",
                self.shared.log_path.display()
            );
            return self.poison(what, group);
        }
        for reply in group.forgotten.drain(..) {
            reply.send(Ok(()));
        }
    }

    fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        let buf: Vec<u8> = records.iter().flat_map(|r| r.encode()).collect();
        self.file
            .write_all_at(&buf, keylog::offset_of(self.next_slot))?;
        self.file.sync_data()
    }

    fn destroy(&self, slots: &[(u64, Hash)]) -> std::io::Result<()> {
        for (slot, hash) in slots {
            let offset = keylog::offset_of(*slot);
            let mut raw = [0u8; RECORD_LEN];
            self.file.read_exact_at(&mut raw, offset)?;
            let Slot::Record(record) = keylog::decode(&raw) else {
                return Err(std::io::Error::other(format!(
                    "the key record at offset {offset} no longer decodes"
                )));
            };
            // A spare names no subject; the caller knows whose it is.
            let holds = match record.kind {
                Kind::Key(_) => record.subject == *hash,
                Kind::Spare(_) => record.subject == [0; 32],
                _ => false,
            };
            if !holds {
                return Err(std::io::Error::other(format!(
                    "offset {offset} does not hold the key being erased"
                )));
            }
            let destroyed = Record {
                kind: Kind::Destroyed,
                ..record
            };
            self.file.write_all_at(&destroyed.encode(), offset)?;
        }
        self.file.sync_data()
    }
}

/// A key or erasure file of the one-file-per-subject format.
enum Legacy {
    Key([u8; 32]),
    Erased,
}

/// Decodes an old key (`ANNALKEY`) or erasure (`ANNALERA`) file and checks
/// that it belongs to the subject its name says.
fn decode_legacy(bytes: &[u8], hash: &Hash) -> std::result::Result<Legacy, String> {
    if bytes.len() < 48 {
        return Err(format!("{} bytes is too short", bytes.len()));
    }
    let end = bytes.len() - 4;
    let crc = u32::from_le_bytes([bytes[end], bytes[end + 1], bytes[end + 2], bytes[end + 3]]);
    if crc32fast::hash(&bytes[..end]) != crc {
        return Err("checksum mismatch".into());
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != 1 {
        return Err(format!("version {version} is not 1"));
    }
    let len = usize::from(u16::from_le_bytes([bytes[10], bytes[11]]));
    if 44 + len != end || Hash::from(Sha256::digest(&bytes[44..end])) != *hash {
        return Err("the file belongs to another subject".into());
    }
    match &bytes[0..8] {
        b"ANNALKEY" => {
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes[12..44]);
            Ok(Legacy::Key(key))
        }
        b"ANNALERA" => Ok(Legacy::Erased),
        _ => Err("wrong magic".into()),
    }
}

fn parse_hex_hash(stem: &str) -> Option<Hash> {
    if stem.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(stem.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// Overwrites a file with zeros, syncs it and unlinks it, so that its bytes
/// do not survive in blocks the filesystem merely frees.
fn shred_file(fs: &dyn Fs, path: &Path) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let file = fs
        .open(path, true)
        .map_err(|e| Error::io(ctx("opening"), e))?;
    let len = file.len().map_err(|e| Error::io(ctx("reading"), e))?;
    file.write_all_at(&vec![0u8; len as usize], 0)
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io(ctx("overwriting"), e))?;
    drop(file);
    fs.remove(path).map_err(|e| Error::io(ctx("removing"), e))
}

/// Moves the files of the one-file-per-subject format into the log: their
/// records are appended and synced first, and only then are the old files
/// overwritten and removed, so a crash at any point leaves every key in at
/// least one place (and an interrupted migration runs again).
fn migrate_legacy_files(fs: &dyn Fs, dir: &Path, writer: &mut LogWriter) -> Result<()> {
    let Some((found, leftovers)) = legacy_files(fs, dir)? else {
        return Ok(());
    };
    if found.is_empty() && leftovers.is_empty() {
        return Ok(());
    }
    let legacy_erased: HashSet<Hash> = found
        .iter()
        .filter(|(_, _, l)| matches!(l, Ok(Legacy::Erased)))
        .map(|(_, h, _)| *h)
        .collect();
    let mut group = Group::default();
    let mut shred = Vec::new();
    for (path, hash, legacy) in found {
        let current = writer.current(&group, &hash);
        match (legacy, current) {
            (_, Some(Entry::Damaged(_))) => continue,
            (Err(why), None) => {
                let why = format!("{} is damaged: {why}", path.display());
                writer
                    .shared
                    .state
                    .write()
                    .subjects
                    .insert(hash, Entry::Damaged(why));
                continue;
            }
            // The log has the subject already (an earlier migration that
            // was interrupted): the file is a leftover.
            (Err(_), Some(_)) => {}
            (Ok(Legacy::Erased), Some(Entry::Erased)) => {}
            (Ok(Legacy::Erased), found) => {
                if let Some(Entry::Key { slot, .. }) = found {
                    group.destroy.push((slot, hash));
                }
                group
                    .records
                    .push(writer.record(&group, Kind::Erasure, hash));
                group.pending.insert(hash, Entry::Erased);
            }
            (Ok(Legacy::Key(_)), _) if legacy_erased.contains(&hash) => {}
            (Ok(Legacy::Key(_)), Some(Entry::Erased)) => {}
            (Ok(Legacy::Key(key)), Some(Entry::Key { key: logged, .. })) => {
                if key != logged {
                    let why = format!("{} and the key log hold different keys", path.display());
                    writer
                        .shared
                        .state
                        .write()
                        .subjects
                        .insert(hash, Entry::Damaged(why));
                    continue;
                }
            }
            (Ok(Legacy::Key(key)), None) => {
                let slot = writer.next_slot + group.records.len() as u64;
                group
                    .records
                    .push(writer.record(&group, Kind::Key(key), hash));
                group.pending.insert(
                    hash,
                    Entry::Key {
                        key,
                        slot,
                        spare: false,
                    },
                );
            }
        }
        shred.push(path);
    }
    let log = writer.shared.log_path.clone();
    if !group.records.is_empty() {
        writer
            .append(&group.records)
            .map_err(|e| Error::io(format!("migrating old key files into {}", log.display()), e))?;
        writer.next_slot += group.records.len() as u64;
        writer.next_batch += 1;
        writer
            .shared
            .state
            .write()
            .subjects
            .extend(group.pending.drain());
    }
    if !group.destroy.is_empty() {
        writer
            .destroy(&group.destroy)
            .map_err(|e| Error::io(format!("erasing keys in {}", log.display()), e))?;
    }
    tracing::info!(
        files = shred.len() + leftovers.len(),
        "migrated the old key files of {} into {}",
        dir.display(),
        log.display()
    );
    for path in shred.iter().chain(&leftovers) {
        shred_file(fs, path)?;
    }
    fs.sync_dir(dir)
        .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
}

#[cfg(test)]
mod tests;
