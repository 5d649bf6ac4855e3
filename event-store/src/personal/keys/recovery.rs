//! Opening the key log: what every slot holds, torn appends, damage and
//! interrupted erasures (see the module docs of `keys`).

use super::*;
use crate::format::keyindex::{SubjectIndex, Summary};

/// A subject index that fits the log: what recovery of the slots it
/// covers decided, so that only the slots after them are read.
pub(super) struct Base {
    pub(super) summary: Summary,
    pub(super) index: Arc<SubjectIndex>,
}

/// What opening found in the log.
pub(super) struct Recovered {
    /// The slots the subject index covered (0 without one): recovery read
    /// the slots from here on.
    pub(super) from: u64,
    pub(super) subjects: SubjectTable,
    /// Slots that fail their checksum (or are holes) before the last batch.
    pub(super) damage: Vec<(u64, String)>,
    /// Slots to rewrite before anything else: torn records of the last
    /// batch become void, key records of erased subjects destroyed.
    pub(super) rewrites: Vec<(u64, Record)>,
    /// Spare keys no assignment names (slot, key).
    pub(super) free_spares: Vec<(u64, [u8; 32])>,
    /// The highest floor.
    pub(super) floor: u64,
    pub(super) next_slot: u64,
    pub(super) next_batch: u64,
    /// The first slot of the last batch.
    pub(super) final_start: u64,
}

/// The record slots of a key log's bytes (its header checked by the
/// caller); a cut record at the end is not a slot.
pub(super) fn record_slots(bytes: &[u8]) -> Vec<[u8; RECORD_LEN]> {
    bytes
        .get(keylog::HEADER_LEN..)
        .unwrap_or_default()
        .chunks_exact(RECORD_LEN)
        .filter_map(|c| c.try_into().ok())
        .collect()
}

/// What recovery learns from a first pass over the slots, before it
/// decides what each one holds.
pub(super) struct Survey {
    /// The last batch: the highest batch number among intact records.
    pub(super) final_batch: u64,
    /// Its first slot: the slot of any of its records minus its index.
    pub(super) final_start: u64,
    /// One past the last slot that is not all zeros.
    pub(super) end: u64,
    /// Subjects with an erasure or destroyed-key record, and the slot of
    /// one such record.
    pub(super) erased: HashMap<Hash, u64>,
    /// Assignments as (spare slot, assignment slot), sorted: a spare is
    /// handed out only once synced, so its assignment always comes after
    /// it. Slots rather than a map from spare to subject, which would hold
    /// 50 bytes for each of millions of subjects while the log is read.
    pub(super) assigned: Vec<(u64, u64)>,
    /// The highest floor.
    pub(super) floor: u64,
    /// Key and spare records: what the subject table is sized for.
    pub(super) keys: usize,
}

impl Survey {
    /// Surveys the slots from `from` on (`last_batch`: the highest batch
    /// before them, and its first slot).
    pub(super) fn of(records: &dyn Records, from: u64, last_batch: (u64, u64)) -> Self {
        let (last_batch, last_batch_start) = last_batch;
        let mut survey = Survey {
            final_batch: last_batch,
            final_start: from,
            end: from,
            erased: HashMap::new(),
            assigned: Vec::new(),
            floor: 0,
            keys: 0,
        };
        let mut first_final: Option<u64> = (from > 0).then_some(last_batch_start);
        for i in from..records.slot_count() {
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
        survey.final_start = first_final.unwrap_or(from);
        survey
    }

    /// The subject the spare in `slot` was assigned to (by its last
    /// assignment), and whether two assignments name different subjects.
    pub(super) fn owner(&self, records: &dyn Records, slot: u64) -> Option<(Hash, bool)> {
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
///
/// With a subject index (`base`), only the slots after those it covers are
/// read, and what the index says stands for the slots before: the decisions
/// are the same as a reading of the whole log would make, but damage done
/// to the covered slots after the index was written is found when a lookup
/// reads the damaged record (or by `check_log`), not here.
pub(super) fn recover(records: Arc<dyn Records>, base: Option<Base>) -> Recovered {
    let (from, summary, index) = match base {
        Some(Base { summary, index }) => (summary.covered, summary, Some(index)),
        None => (0, Summary::default(), None),
    };
    // Slots are decoded twice (a survey, then the decisions) rather than
    // kept decoded: a decoded slot is larger than its 80 bytes, and a log
    // of millions of subjects would hold them all at once.
    let last_batch_start = from.saturating_sub(u64::from(summary.last_batch_len));
    let survey = Survey::of(
        records.as_ref(),
        from,
        (summary.last_batch, last_batch_start),
    );
    let mut out = Recovered {
        from,
        subjects: SubjectTable::new(records.clone(), index, survey.keys),
        damage: summary.damaged_slots,
        rewrites: Vec::new(),
        free_spares: Vec::new(),
        floor: survey.floor.max(summary.floor),
        next_slot: survey.end,
        next_batch: survey.final_batch.max(summary.last_batch) + 1,
        final_start: survey.final_start,
    };
    out.subjects.extend(
        summary
            .damaged_subjects
            .into_iter()
            .map(|(hash, why)| (hash, Entry::Damaged(why))),
    );
    let decide = Decide {
        survey: &survey,
        records: records.as_ref(),
    };
    let mut free: Vec<u64> = summary.free_spares;
    free.sort_unstable();
    decide.covered_spares_assigned(&mut out, &mut free, from);
    decide.covered_keys_erased(&mut out);
    for i in from..survey.end {
        let Some(raw) = records.slot(i) else { break };
        match &keylog::decode(&raw) {
            Slot::Empty if i >= survey.final_start => out.rewrites.push((i, decide.void(i))),
            Slot::Empty => out
                .damage
                .push((i, "zeros inside the log (a lost write)".into())),
            Slot::Bad(why) => decide.bad(&mut out, i, &raw, why),
            Slot::Record(r) => decide.record(&mut out, i, r),
        }
    }
    for slot in free {
        decide.covered_spare(&mut out, slot);
    }
    out
}

/// What recovery decides for each slot, from what the survey found.
struct Decide<'a> {
    survey: &'a Survey,
    records: &'a dyn Records,
}

impl Decide<'_> {
    /// Spares free in the covered slots that assignments after them name,
    /// decided as a reading of the whole log decides them when it reaches
    /// the spare's slot; they leave `free`.
    fn covered_spares_assigned(&self, out: &mut Recovered, free: &mut Vec<u64>, from: u64) {
        let mut spares: Vec<u64> = self
            .survey
            .assigned
            .iter()
            .map(|(spare, _)| *spare)
            .filter(|spare| *spare < from)
            .collect();
        spares.dedup();
        for spare in spares {
            match free.binary_search(&spare) {
                Ok(at) => {
                    free.remove(at);
                    self.covered_spare(out, spare);
                }
                // Assigned among the covered slots already, or no spare.
                Err(_) => {
                    if let Some((owner, _)) = self.survey.owner(self.records, spare) {
                        let why = format!(
                            "the spare key at offset {} is assigned to two subjects",
                            keylog::offset_of(spare)
                        );
                        out.subjects.insert(owner, Entry::Damaged(why));
                    }
                }
            }
        }
    }

    /// A spare the index found free: what its slot holds now.
    fn covered_spare(&self, out: &mut Recovered, slot: u64) {
        let Some(raw) = self.records.slot(slot) else {
            return out.damage.push((slot, "past the end of the log".into()));
        };
        match &keylog::decode(&raw) {
            Slot::Record(r) => match r.kind {
                Kind::Spare(key) => self.spare(out, slot, r, key),
                Kind::Destroyed => {}
                _ => out
                    .damage
                    .push((slot, "a free spare key's slot holds another record".into())),
            },
            Slot::Bad(why) => self.bad(out, slot, &raw, why),
            Slot::Empty => out
                .damage
                .push((slot, "zeros inside the log (a lost write)".into())),
        }
    }

    /// Erasures after the covered slots of subjects whose key the index
    /// names: a crash may have cut the overwrite of that key short.
    fn covered_keys_erased(&self, out: &mut Recovered) {
        for hash in self.survey.erased.keys() {
            let Some(slot) = out.subjects.indexed_key_slot(hash) else {
                continue;
            };
            let Some(raw) = self.records.slot(slot) else {
                continue;
            };
            let destroyed = match keylog::decode(&raw) {
                Slot::Record(r) if matches!(r.kind, Kind::Key(_) | Kind::Spare(_)) => Record {
                    kind: Kind::Destroyed,
                    ..r
                },
                Slot::Bad(_) => {
                    let (batch, index) = Record::place_of_bad(&raw);
                    Record {
                        kind: Kind::Destroyed,
                        index,
                        batch,
                        subject: Record::subject_of_bad(&raw),
                    }
                }
                _ => continue,
            };
            out.rewrites.push((slot, destroyed));
        }
    }

    /// What a slot of the last batch that holds nothing intact becomes.
    fn void(&self, i: u64) -> Record {
        Record {
            kind: Kind::Void,
            index: u16::try_from(i - self.survey.final_start).unwrap_or(u16::MAX),
            batch: self.survey.final_batch,
            subject: [0; 32],
        }
    }

    /// A slot that fails its checksum: a torn append in the last batch, a
    /// torn overwrite by an erasure, or damage.
    fn bad(&self, out: &mut Recovered, i: u64, raw: &[u8; RECORD_LEN], why: &str) {
        let survey = self.survey;
        let erased = &survey.erased;
        let subject = Record::subject_of_bad(raw);
        let (batch, index) = Record::place_of_bad(raw);
        // A spare's record names no subject; its assignment does.
        let owner = survey.owner(self.records, i).map(|(owner, _)| owner);
        let erased_owner = erased.contains_key(&subject)
            || (subject == [0; 32] && owner.is_some_and(|h| erased.contains_key(&h)));
        if erased_owner && batch < survey.final_batch && i < survey.final_start {
            // A key record whose overwrite by its (durable) erasure
            // was torn: the bytes that name it are never rewritten.
            let destroyed = Record {
                kind: Kind::Destroyed,
                index,
                batch,
                subject,
            };
            out.rewrites.push((i, destroyed));
        } else if i >= survey.final_start {
            out.rewrites.push((i, self.void(i)));
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
            out.damage.push((i, why.to_owned()));
        }
    }

    /// An intact record.
    fn record(&self, out: &mut Recovered, i: u64, r: &Record) {
        let erased = &self.survey.erased;
        match r.kind {
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
            Kind::Spare(key) => self.spare(out, i, r, key),
            Kind::Assign(_) | Kind::Floor(_) => {}
            Kind::Key(key) => {
                let why = match out.subjects.get(&r.subject) {
                    None => {
                        out.subjects.insert_record(r.subject, i);
                        return;
                    }
                    Some(Entry::Key { key: first, .. }) if first == key => return,
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
        }
    }

    /// A spare key: free, its owner's key, its erased owner's, or damage
    /// when it is assigned twice or its owner has another key.
    fn spare(&self, out: &mut Recovered, i: u64, r: &Record, key: [u8; 32]) {
        let survey = self.survey;
        let Some((owner, twice)) = survey.owner(self.records, i) else {
            out.free_spares.push((i, key));
            return;
        };
        if let Some(erasure) = survey.erased.get(&owner) {
            out.rewrites.push((
                i,
                Record {
                    kind: Kind::Destroyed,
                    ..*r
                },
            ));
            out.subjects.insert_record(owner, *erasure);
            return;
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
            return;
        };
        out.subjects.insert(owner, Entry::Damaged(why));
    }
}
