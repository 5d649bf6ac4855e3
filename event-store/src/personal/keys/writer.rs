//! The single writer of the key log: group commit, spares, assignments,
//! floors and erasures.

use super::*;

/// The single writer of the log.
pub(super) struct LogWriter {
    pub(super) shared: Arc<Shared>,
    pub(super) file: Arc<dyn FsFile>,
    /// The first slot not written yet.
    pub(super) next_slot: u64,
    pub(super) next_batch: u64,
    pub(super) index: IndexUpkeep,
}

/// What the writer needs to rewrite the subject index when it stops.
pub(super) struct IndexUpkeep {
    pub(super) fs: Arc<dyn Fs>,
    pub(super) dir: PathBuf,
    /// The slots the index on disk covers.
    pub(super) covered: u64,
    pub(super) tail_min: u64,
}

/// One batch in the making.
#[derive(Default)]
pub(super) struct Group {
    pub(super) records: Vec<Record>,
    /// What the batch changes, published once it is durable.
    pub(super) pending: HashMap<Hash, Entry>,
    /// Key records (slot, subject) to overwrite once the batch's erasures
    /// are durable.
    pub(super) destroy: Vec<(u64, Hash)>,
    /// Answered once the batch is durable.
    pub(super) created: Vec<Reply>,
    /// Answered once the key bytes are overwritten and synced.
    pub(super) forgotten: Vec<Reply>,
    /// Spare keys the batch makes, handed out once it is durable.
    pub(super) spares: Vec<(u64, [u8; 32])>,
    /// Set by a reconciliation: the spares that become free again.
    pub(super) reconciled: Option<Vec<(u64, [u8; 32])>>,
}

impl LogWriter {
    pub(super) fn run(mut self, rx: std::sync::mpsc::Receiver<Request>) {
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
        self.write_index_at_close();
        tracing::debug!("key writer stopped");
    }

    /// Rewrites the subject index if enough slots follow those it covers,
    /// so that the next open reads only what comes after, or from the whole
    /// log if a lookup found it damaged. Nothing is written past this
    /// point, so the log reads as the next open will find it.
    fn write_index_at_close(&self) {
        let upkeep = &self.index;
        let (poisoned, damaged) = {
            let st = self.shared.state.read();
            (st.poisoned.is_some(), st.subjects.index_failed())
        };
        if poisoned || (!damaged && self.next_slot.saturating_sub(upkeep.covered) < upkeep.tail_min)
        {
            return;
        }
        let written = VolatileMap::map(self.file.std_file())
            .map_err(|e| format!("mapping the key log: {e}"))
            .and_then(|map| {
                let records: Arc<dyn Records> = Arc::new(MappedLog(map));
                let rewrite = |base| {
                    let recovered = recover(records.clone(), base);
                    write_index(
                        upkeep.fs.as_ref(),
                        &upkeep.dir,
                        &recovered,
                        records.as_ref(),
                    )
                };
                if damaged {
                    return rewrite(None);
                }
                let base = load_index(upkeep.fs.as_ref(), &upkeep.dir, records.as_ref());
                let through_base = base.is_some();
                match rewrite(base) {
                    // Its entries are read whole here: a block damaged on
                    // disk that no lookup read shows now.
                    Err(why) if through_base => {
                        tracing::warn!(
                            "key store: the subject index is rebuilt from the key log: {why}"
                        );
                        rewrite(None)
                    }
                    done => done,
                }
            });
        if let Err(why) = written {
            tracing::warn!(
                dir = %upkeep.dir.display(),
                "key store: the subject index was not written at close: {why}"
            );
        }
    }

    pub(super) fn current(&self, group: &Group, hash: &Hash) -> Option<Entry> {
        group
            .pending
            .get(hash)
            .cloned()
            .or_else(|| self.shared.state.read().subjects.get(hash))
    }

    pub(super) fn record(&self, group: &Group, kind: Kind, subject: Hash) -> Record {
        Record {
            kind,
            // Bounded by BATCH_RECORDS_MAX.
            index: u16::try_from(group.records.len()).unwrap_or(u16::MAX),
            batch: self.next_batch,
            subject,
        }
    }

    /// Adds a request's records to the group, or answers it at once.
    pub(super) fn plan(&mut self, request: Request, group: &mut Group) {
        if let Some(err) = self.refusal(&request.op) {
            request.reply.send(Err(err));
            return;
        }
        let reply = request.reply;
        match request.op {
            Op::Create(subjects) => self.plan_create(subjects, reply, group),
            Op::Forget(hash, subject) => self.plan_forget(hash, &subject, reply, group),
            Op::Assign(assigned) => {
                for (hash, slot) in assigned {
                    group
                        .records
                        .push(self.record(group, Kind::Assign(slot), hash));
                }
            }
            Op::Refill(n) => self.plan_refill(n, reply, group),
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
            Op::Reconcile(used, read_to) => self.reconcile(used, read_to, reply, group),
        }
    }

    /// Why `op` cannot be done now: the log stopped, or new keys while it
    /// is damaged.
    fn refusal(&self, op: &Op) -> Option<Error> {
        let st = self.shared.state.read();
        st.poisoned.clone().map(key_log_stopped).or_else(|| {
            (!st.damage.is_empty() && matches!(op, Op::Create(_))).then(|| {
                Error::KeyStore(format!(
                    "the key log {} is damaged ({}); no new key is created until it is repaired",
                    self.shared.log_path.display(),
                    st.damage.join("; ")
                ))
            })
        })
    }

    /// Adds a record of a new key for the subject to the group.
    pub(super) fn add_key(&self, group: &mut Group, hash: Hash, key: [u8; 32]) {
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

    /// Adds an erasure record for the subject to the group, and the
    /// overwrite of its key record if `found` (what the log says of it)
    /// holds one.
    pub(super) fn add_erasure(&self, group: &mut Group, hash: Hash, found: Option<Entry>) {
        if let Some(Entry::Key { slot, .. }) = found {
            group.destroy.push((slot, hash));
        }
        group.records.push(self.record(group, Kind::Erasure, hash));
        group.pending.insert(hash, Entry::Erased);
    }

    /// From now on the subject's key reads as damaged, and why.
    pub(super) fn mark_damaged(&self, hash: Hash, why: String) {
        self.shared
            .state
            .write()
            .subjects
            .insert(hash, Entry::Damaged(why));
    }

    /// New keys for the subjects that have none; refused whole if one of
    /// them is erased or damaged.
    fn plan_create(&mut self, subjects: Vec<(Hash, String)>, reply: Reply, group: &mut Group) {
        let mut new = Vec::new();
        for (hash, subject) in subjects {
            match self.current(group, &hash) {
                Some(Entry::Key { .. }) => {}
                Some(Entry::Erased) => {
                    reply.send(Err(forgotten(&subject)));
                    return;
                }
                Some(Entry::Damaged(why)) => {
                    reply.send(Err(Error::KeyStore(format!(
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
                reply.send(Err(Error::KeyStore(format!(
                    "no randomness for a new key: {e}"
                ))));
                return;
            }
            self.add_key(group, hash, key);
        }
        group.created.push(reply);
    }

    /// An erasure record for the subject, and the overwrite of its key.
    fn plan_forget(&mut self, hash: Hash, subject: &str, reply: Reply, group: &mut Group) {
        match self.current(group, &hash) {
            Some(Entry::Erased) => {}
            Some(Entry::Damaged(why)) => {
                reply.send(Err(Error::KeyStore(format!(
                    "the key of data subject {subject:?} is damaged: {why}"
                ))));
                return;
            }
            None if !self.shared.state.read().damage.is_empty() => {
                // Its key may be in a damaged record: an erasure now
                // would leave those bytes, and hide the damage.
                reply.send(Err(self.shared.unknown_subject(subject)));
                return;
            }
            found => self.add_erasure(group, hash, found),
        }
        group.forgotten.push(reply);
    }

    /// `n` new spare keys, answered once they are durable.
    fn plan_refill(&mut self, n: usize, reply: Reply, group: &mut Group) {
        // One call to the operating system for all of them.
        let mut random = vec![0u8; n * 32];
        if let Err(e) = getrandom::fill(&mut random) {
            tracing::warn!("key log: no randomness for spare keys: {e}");
            // A later hand-out asks again.
            self.shared.state.write().refilling = false;
            reply.send(Err(Error::KeyStore(format!(
                "no randomness for spare keys: {e}"
            ))));
            return;
        }
        // Answered once the spares are durable (and in the pool).
        group.created.push(reply);
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

    /// Assigns the spares events were found sealed under, frees the others
    /// and records a floor at `read_to`, in that order.
    pub(super) fn reconcile(
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

    pub(super) fn poison(&self, what: String, group: Group) {
        tracing::error!("{what}; the key log refuses writes until it is reopened");
        self.shared.state.write().poisoned = Some(what.clone());
        for reply in group.created.into_iter().chain(group.forgotten) {
            reply.send(Err(key_log_stopped(what.clone())));
        }
    }

    /// Appends the group's records, syncs, publishes, answers; then
    /// overwrites the keys of the subjects it erased, syncs, answers those.
    pub(super) fn commit(&mut self, mut group: Group) {
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

    pub(super) fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        let buf: Vec<u8> = records.iter().flat_map(|r| r.encode()).collect();
        self.file
            .write_all_at(&buf, keylog::offset_of(self.next_slot))?;
        self.file.sync_data()
    }

    pub(super) fn destroy(&self, slots: &[(u64, Hash)]) -> std::io::Result<()> {
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
