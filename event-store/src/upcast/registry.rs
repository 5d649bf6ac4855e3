//! The registry of upcasters: chains of steps per event type, and running
//! them over stored events.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::types::RecordedEvent;

use super::cache::UpcastCache;
use super::object::EventObject;

/// A step that takes the whole data as a `serde_json::Value`.
type ValueStep =
    Arc<dyn Fn(serde_json::Value) -> std::result::Result<serde_json::Value, String> + Send + Sync>;

/// A step that changes the top-level members of the data object in place.
type ObjectStep =
    Arc<dyn Fn(&mut EventObject<'_>) -> std::result::Result<(), String> + Send + Sync>;

/// What a typed step returns ([`Upcasters::step_typed`]), its type erased:
/// the next typed step's input, or for the last step of a chain the value
/// [`Upcasters::upcast_typed`] hands back, for the reader to downcast to the
/// type it registered.
pub type UpcastValue = Box<dyn Any + Send>;

/// Decodes a typed step's input from JSON text.
type DecodeFn = fn(&[u8]) -> serde_json::Result<UpcastValue>;

/// Decodes a typed step's input from a `Value` (after a `Value` step).
type DecodeValueFn = fn(serde_json::Value) -> serde_json::Result<UpcastValue>;

/// Writes a typed step's output as JSON text.
type EncodeFn = fn(&(dyn Any + Send), &mut Vec<u8>) -> serde_json::Result<()>;

/// A step from one Rust type to another, both erased so that a chain can
/// hold steps between any types.
#[derive(Clone)]
struct TypedStep {
    /// The input type, to tell whether the previous typed step's output can
    /// be handed over as it is.
    input: TypeId,
    /// The input type's name without module paths, for errors.
    input_name: Arc<str>,
    decode: DecodeFn,
    decode_value: DecodeValueFn,
    convert: Arc<dyn Fn(UpcastValue) -> std::result::Result<UpcastValue, String> + Send + Sync>,
    encode: EncodeFn,
}

/// One step of a chain, in the representation it works on.
#[derive(Clone)]
enum Step {
    Value(ValueStep),
    Object(ObjectStep),
    Typed(TypedStep),
}

/// What a typed step returned, with what it takes to write it.
struct Typed {
    value: UpcastValue,
    encode: EncodeFn,
}

/// The type of the value in `value` (not of its box).
pub(super) fn type_of(value: &UpcastValue) -> TypeId {
    let value: &dyn Any = &**value;
    value.type_id()
}

fn decode_as<T: DeserializeOwned + Send + 'static>(data: &[u8]) -> serde_json::Result<UpcastValue> {
    serde_json::from_slice::<T>(data).map(|value| Box::new(value) as UpcastValue)
}

fn decode_value_as<T: DeserializeOwned + Send + 'static>(
    data: serde_json::Value,
) -> serde_json::Result<UpcastValue> {
    serde_json::from_value::<T>(data).map(|value| Box::new(value) as UpcastValue)
}

fn encode_as<T: Serialize + 'static>(
    value: &(dyn Any + Send),
    out: &mut Vec<u8>,
) -> serde_json::Result<()> {
    // `Typed` pairs every value with the encoder of its own type, so this
    // does not fail.
    let value = value.downcast_ref::<T>().ok_or_else(|| {
        <serde_json::Error as serde::ser::Error>::custom(format!(
            "internal: the value to write is not a {}",
            std::any::type_name::<T>()
        ))
    })?;
    serde_json::to_writer(out, value)
}

/// An event's data between steps: each step kind reads it in its own
/// representation, and it changes representation only where the kind does.
enum Data {
    /// Still the stored bytes, not parsed yet.
    Stored,
    /// The JSON text a run of object steps wrote, at this range of
    /// [`Work::out`].
    Written(Range<usize>),
    /// What a `Value` step returned.
    Value(serde_json::Value),
    /// What a typed step returned.
    Typed(Typed),
}

/// The buffers a batch of upcasts shares, so that on the object-step path
/// an event costs no allocation of its own.
#[derive(Default)]
struct Work<'a> {
    /// The upcast data of the batch's events, back to back; each event's
    /// data becomes a slice of it.
    out: Vec<u8>,
    /// Reused for every event read from its stored data.
    object: EventObject<'a>,
    /// The events left in the batch, the current one included (0 for a
    /// single event): with the first upcast event's size, what `out` is
    /// sized for.
    remaining: usize,
}

/// What reading an event takes.
enum Need<'u> {
    /// Nothing: it is read as stored.
    Nothing,
    /// Upcasting here, through this chain to this version (or, for a
    /// newer version than that, an error).
    Upcast(&'u Chain, u32),
    /// Nothing here: typed steps alone bring it to its current version,
    /// and the reader runs them ([`Upcasters::upcast_typed`]).
    Typed,
}

/// Hashes event types for the upcasters' map: one call of xxh3 rather than
/// SipHash, as every event read looks its type up. The map's keys come
/// from code, not from input, so flooding it with collisions is no concern.
#[derive(Default, Clone, Copy)]
struct TypeHasher(u64);

impl Hasher for TypeHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }

    /// The terminator `str` hashes after its bytes: mixed in cheaply
    /// rather than hashed as a slice of its own.
    fn write_u8(&mut self, byte: u8) {
        self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The upcasters of a domain: for each event type, its current schema version
/// and one step per older version.
#[derive(Clone, Default)]
pub struct Upcasters {
    /// By event type, so that reading an event costs one lookup by its
    /// type (no allocation), whatever the length of its chain.
    types: HashMap<String, Chain, BuildHasherDefault<TypeHasher>>,
    /// Whether any step is typed.
    typed: bool,
}

/// One event type's versions.
#[derive(Clone, Default)]
struct Chain {
    /// Declared with [`Upcasters::current`]; a type with steps only is not
    /// upcast.
    current: Option<u32>,
    /// The step from each version to the next, by that version.
    steps: BTreeMap<u32, Step>,
    /// The oldest version from which every step up to `current` is typed
    /// (`current` when its last step is not); kept by [`Chain::refresh`].
    typed_from: u32,
}

impl Chain {
    /// Recomputes what depends on the steps and the current version.
    fn refresh(&mut self) {
        let Some(current) = self.current else {
            self.typed_from = 0;
            return;
        };
        let mut from = current;
        while from > 1 && matches!(self.steps.get(&(from - 1)), Some(Step::Typed(_))) {
            from -= 1;
        }
        self.typed_from = from;
    }

    /// Whether typed steps alone bring `version` to the current version.
    fn is_typed(&self, version: u32) -> bool {
        self.current
            .is_some_and(|current| version < current && version >= self.typed_from)
    }
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (event_type, chain) in &self.types {
            map.entry(
                event_type,
                &format_args!(
                    "current {:?}, steps from {:?}",
                    chain.current,
                    chain.steps.keys().collect::<Vec<_>>()
                ),
            );
        }
        map.finish()
    }
}

impl Upcasters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares that events of `event_type` are read at `version`; older
    /// ones must have a chain of steps up to it.
    pub fn current(mut self, event_type: impl Into<String>, version: u32) -> Self {
        let chain = self.types.entry(event_type.into()).or_default();
        chain.current = Some(version);
        chain.refresh();
        self
    }

    /// Adds `step` to `event_type`'s chain, from `from_version`.
    fn with_step(mut self, event_type: String, from_version: u32, step: Step) -> Self {
        let chain = self.types.entry(event_type).or_default();
        chain.steps.insert(from_version, step);
        chain.refresh();
        // Counted again, as the step may have replaced a typed one.
        self.typed = self
            .types
            .values()
            .any(|chain| chain.steps.values().any(|s| matches!(s, Step::Typed(_))));
        self
    }

    /// Registers the step that turns `event_type` data at `from_version` into
    /// `from_version + 1`, taking and returning the whole data as a
    /// `serde_json::Value`; an `Err` is the reason it cannot read the data.
    ///
    /// For steps that rename, add or drop top-level fields,
    /// [`step_object`](Self::step_object) does the same without building a
    /// `Value` of the event.
    pub fn step<F>(self, event_type: impl Into<String>, from_version: u32, step: F) -> Self
    where
        F: Fn(serde_json::Value) -> std::result::Result<serde_json::Value, String>
            + Send
            + Sync
            + 'static,
    {
        self.with_step(event_type.into(), from_version, Step::Value(Arc::new(step)))
    }

    /// Registers the step that turns `event_type` data at `from_version` into
    /// `from_version + 1` by changing the members of the data object in
    /// place (see [`EventObject`]); an `Err` is the reason it cannot read the
    /// data. Data that is not a JSON object is an [`Error::Upcast`] without
    /// calling the step.
    ///
    /// Consecutive object steps share one parse of the stored data and one
    /// write of the result, and values no step replaces are copied as they
    /// are, so a chain of them costs little more than one step. A chain may
    /// mix them with [`step`](Self::step)s; the data is converted where the
    /// kind changes.
    pub fn step_object<F>(self, event_type: impl Into<String>, from_version: u32, step: F) -> Self
    where
        F: Fn(&mut EventObject<'_>) -> std::result::Result<(), String> + Send + Sync + 'static,
    {
        self.with_step(
            event_type.into(),
            from_version,
            Step::Object(Arc::new(step)),
        )
    }

    /// Registers the step that turns `event_type` data at `from_version` into
    /// `from_version + 1` as Rust types: the data decodes as `Old` (with
    /// serde), `step` converts it, and `New` serializes as the data of the
    /// next version; an `Err` is the reason it cannot read the data, as is
    /// data that does not decode as `Old`.
    ///
    /// On the JSON read paths consecutive typed steps share one decode and
    /// one write, and a step's output is handed to the next one as it is
    /// when that one takes the same type. A reader that decodes events into
    /// Rust types runs a chain of typed steps with
    /// [`upcast_typed`](Self::upcast_typed) and writes no JSON at all; so
    /// for a type whose current version decodes as the domain's own event
    /// type, the last step should return that type.
    pub fn step_typed<Old, New, F>(
        self,
        event_type: impl Into<String>,
        from_version: u32,
        step: F,
    ) -> Self
    where
        Old: DeserializeOwned + Send + 'static,
        New: Serialize + Send + 'static,
        F: Fn(Old) -> std::result::Result<New, String> + Send + Sync + 'static,
    {
        let convert = move |value: UpcastValue| {
            let old = value.downcast::<Old>().map_err(|_| {
                format!(
                    "internal: the step takes a {}",
                    std::any::type_name::<Old>()
                )
            })?;
            step(*old).map(|new| Box::new(new) as UpcastValue)
        };
        let step = TypedStep {
            input: TypeId::of::<Old>(),
            input_name: short_type_name(std::any::type_name::<Old>()).into(),
            decode: decode_as::<Old>,
            decode_value: decode_value_as::<Old>,
            convert: Arc::new(convert),
            encode: encode_as::<New>,
        };
        self.with_step(event_type.into(), from_version, Step::Typed(step))
    }

    /// Whether any step was registered with [`step_typed`](Self::step_typed).
    pub fn has_typed_steps(&self) -> bool {
        self.typed
    }

    /// `event` at its type's current version as the value the chain's last
    /// step returns, when typed steps ([`step_typed`](Self::step_typed))
    /// alone lead there from its version: the stored data is decoded once,
    /// as the first step's input, and each step's output is handed to the
    /// next, with no JSON written. `None` for any other event (already
    /// current, of a type with no chain, or whose chain has other steps),
    /// which [`upcast`](Self::upcast) serves.
    pub fn upcast_typed(&self, event: &RecordedEvent) -> Option<Result<UpcastValue>> {
        let chain = self.types.get(event.event_type.as_str())?;
        let current = chain.current?;
        if !chain.is_typed(event.schema_version) {
            return None;
        }
        let mut work = Work::default();
        Some(
            chain
                .run(event, event.schema_version, current, &mut work)
                .and_then(|data| match data {
                    Data::Typed(typed) => Ok(typed.value),
                    _ => Err(failed(
                        event,
                        event.schema_version,
                        "internal: a typed chain did not end in a typed step".into(),
                    )),
                }),
        )
    }

    /// The version events of this type are read at, if it was declared.
    pub fn current_version(&self, event_type: &str) -> Option<u32> {
        self.types.get(event_type).and_then(|c| c.current)
    }

    /// Checks that every declared type has a complete chain from version 1.
    pub fn validate(&self) -> Result<()> {
        for (event_type, chain) in &self.types {
            let Some(current) = chain.current else {
                continue;
            };
            for version in 1..current {
                if !chain.steps.contains_key(&version) {
                    return Err(Error::Upcast {
                        event_type: event_type.clone(),
                        version,
                        detail: format!("no upcaster from version {version} to {}", version + 1),
                    });
                }
            }
        }
        Ok(())
    }

    /// The event at its type's current version.
    pub fn upcast(&self, event: RecordedEvent) -> Result<RecordedEvent> {
        let Need::Upcast(chain, current) = self.need(&event, false) else {
            return Ok(event);
        };
        let mut work = Work::default();
        let (range, version) = upcast_into(&event, chain, current, &mut work)?;
        let mut out = std::mem::take(&mut work.out);
        drop(work);
        let mut event = event;
        // `out` holds this event's data only (at its start unless the
        // chain changed step kinds), sized for it when an object step wrote
        // it, so that `Bytes` takes it as it is: a slice of a `Bytes` made
        // from a `Vec` would allocate.
        out.truncate(range.end);
        out.drain(..range.start);
        event.data = Bytes::from(out);
        event.schema_version = version;
        Ok(event)
    }

    /// Every event at its type's current version, in order. The upcast
    /// events' data shares one buffer.
    pub fn upcast_all(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>> {
        self.upcast_all_with(events, None, false)
            .map(|(events, _)| events)
    }

    /// What `event` needs: whether it is not at its type's current version
    /// (older or, an error for `upcast_into`, newer), and whether it is one
    /// of those left to typed decoding when `leave_typed`.
    fn need(&self, event: &RecordedEvent, leave_typed: bool) -> Need<'_> {
        let Some(chain) = self.types.get(event.event_type.as_str()) else {
            return Need::Nothing;
        };
        match chain.current {
            Some(current) if current != event.schema_version => {
                if leave_typed && chain.is_typed(event.schema_version) {
                    Need::Typed
                } else {
                    Need::Upcast(chain, current)
                }
            }
            _ => Need::Nothing,
        }
    }

    /// As [`upcast_all`](Self::upcast_all), taking what `cache` holds for
    /// the same stored data and caching what it had to upcast (for the
    /// cache generation the events were read in). With `leave_typed`, the
    /// events typed steps alone bring to their current version are left as
    /// stored; the flag says whether there were any.
    pub(super) fn upcast_all_with(
        &self,
        mut events: Vec<RecordedEvent>,
        cache: Option<(&UpcastCache, u64)>,
        leave_typed: bool,
    ) -> Result<(Vec<RecordedEvent>, bool)> {
        let cache = cache.filter(|(cache, _)| cache.is_enabled());
        // The events to upcast here, by index, with their chains: with a
        // cache, only those that it does not hold. Each type is looked up
        // once, by `need`.
        let mut todo: Vec<(usize, &Chain, u32)> = Vec::new();
        let mut hits: Vec<(usize, Bytes, u32)> = Vec::new();
        let mut left_typed = false;
        let mut need = |event: &RecordedEvent| match self.need(event, leave_typed) {
            Need::Upcast(chain, current) => Some((chain, current)),
            Need::Typed => {
                left_typed = true;
                None
            }
            Need::Nothing => None,
        };
        if let Some((cache, _)) = cache {
            let asked: Vec<(usize, &Chain, u32)> = events
                .iter()
                .enumerate()
                .filter_map(|(i, event)| need(event).map(|(chain, current)| (i, chain, current)))
                .collect();
            if asked.is_empty() {
                return Ok((events, left_typed));
            }
            let mut hit = vec![false; asked.len()];
            cache.get_all(
                asked
                    .iter()
                    .map(|&(i, ..)| (events[i].position.0, &events[i].data[..])),
                |k, (data, version)| {
                    hit[k] = true;
                    hits.push((asked[k].0, data, version));
                },
            );
            todo.extend(
                asked
                    .iter()
                    .zip(&hit)
                    .filter(|(_, h)| !**h)
                    .map(|(a, _)| *a),
            );
        }
        let mut upcast = Vec::new();
        let mut out = {
            let mut work = Work::default();
            // Without a cache every event, with no list made of them.
            let mut every = events
                .iter()
                .enumerate()
                .filter_map(|(i, event)| need(event).map(|(chain, current)| (i, chain, current)));
            let mut listed = todo.iter().copied();
            let (indices, n): (&mut dyn Iterator<Item = (usize, &Chain, u32)>, usize) = match cache
            {
                Some(_) => (&mut listed, todo.len()),
                None => (&mut every, events.len()),
            };
            for (k, (i, chain, current)) in indices.enumerate() {
                work.remaining = n - k;
                let (range, version) = upcast_into(&events[i], chain, current, &mut work)?;
                upcast.push((i, range, version));
            }
            work.out
        };
        if let Some((cache, generation)) = cache.filter(|_| !upcast.is_empty()) {
            cache.insert_all(
                generation,
                upcast.iter().map(|(i, range, version)| {
                    let event = &events[*i];
                    (
                        event.position.0,
                        &event.data[..],
                        &out[range.clone()],
                        *version,
                    )
                }),
            );
        }
        for (i, data, version) in hits {
            events[i].data = data;
            events[i].schema_version = version;
        }
        if upcast.is_empty() {
            return Ok((events, left_typed));
        }
        // Where few events were upcast, most of the room is unused: it
        // would stay allocated as long as any of them is.
        if out.capacity() - out.len() > out.len() / 2 {
            out.shrink_to_fit();
        }
        let out = Bytes::from(out);
        for (i, range, version) in upcast {
            events[i].data = out.slice(range);
            events[i].schema_version = version;
        }
        Ok((events, left_typed))
    }
}

/// Upcasts `event`'s data through `chain` to `current` (which `need` found
/// it is not at) into `work.out`: where it was written, and the version.
fn upcast_into<'a>(
    event: &'a RecordedEvent,
    chain: &Chain,
    current: u32,
    work: &mut Work<'a>,
) -> Result<(Range<usize>, u32)> {
    if event.schema_version > current {
        return Err(Error::Upcast {
            event_type: event.event_type.clone(),
            version: event.schema_version,
            detail: format!(
                "written at a newer schema version than this code reads ({current}) at position {}",
                event.position
            ),
        });
    }
    if work.out.capacity() == 0 {
        // The events of a batch are mostly alike, and steps mostly
        // rename and reshape: room for each to grow by half, so that
        // `out` is usually allocated once.
        work.out
            .reserve(work.remaining * (event.data.len() * 3 / 2 + 16));
    }
    let data = chain.run(event, event.schema_version, current, work)?;
    let start = work.out.len();
    // Sized from the stored data (steps mostly rename and reshape), so that
    // serializing rarely reallocates.
    let room = event.data.len() + event.data.len() / 2 + 16;
    let written = match data {
        Data::Written(range) => return Ok((range, current)),
        // `run` ran at least one step, as the event is older than `current`.
        Data::Stored => {
            return Err(failed(event, current, "internal: no step ran".into()));
        }
        Data::Value(value) => {
            work.out.reserve(room);
            serde_json::to_writer(&mut work.out, &value)
        }
        Data::Typed(typed) => {
            work.out.reserve(room);
            (typed.encode)(typed.value.as_ref(), &mut work.out)
        }
    };
    written.map_err(|e| failed(event, current, e.to_string()))?;
    Ok((start..work.out.len(), current))
}

impl Chain {
    /// Runs the steps from `version` to `current` over `event`'s data: the
    /// data at `current`, in the representation the last step left it in
    /// (text it wrote is in `work.out`).
    fn run<'a>(
        &self,
        event: &'a RecordedEvent,
        mut version: u32,
        current: u32,
        work: &mut Work<'a>,
    ) -> Result<Data> {
        let mut data = Data::Stored;
        while version < current {
            let Some(step) = self.steps.get(&version) else {
                if let Data::Stored = data {
                    // Stored data that is not JSON is reported as such
                    // before anything else, as when it was parsed up front.
                    parse_stored(event)?;
                }
                return Err(Error::Upcast {
                    event_type: event.event_type.clone(),
                    version,
                    detail: format!(
                        "no upcaster from version {version} to {} (event at position {})",
                        version + 1,
                        event.position
                    ),
                });
            };
            match step {
                Step::Value(step) => {
                    let value = match data {
                        Data::Stored => parse_stored(event)?,
                        Data::Written(range) => {
                            let value = serde_json::from_slice(&work.out[range.clone()])
                                .map_err(|e| failed(event, version, e.to_string()))?;
                            // Only this event's last text is kept.
                            work.out.truncate(range.start);
                            value
                        }
                        Data::Value(value) => value,
                        Data::Typed(typed) => {
                            serde_json::from_slice(&typed_text(event, version, &typed)?)
                                .map_err(|e| failed(event, version, e.to_string()))?
                        }
                    };
                    data =
                        Data::Value(step(value).map_err(|detail| failed(event, version, detail))?);
                    version += 1;
                }
                Step::Object(_) => {
                    let reached;
                    (data, reached) = match data {
                        Data::Stored if work.object.read(&event.data) => {
                            let reached =
                                self.object_steps(event, &mut work.object, version, current)?;
                            let start = work.out.len();
                            work.object.write_to(&mut work.out);
                            (Data::Written(start..work.out.len()), reached)
                        }
                        // The scanner refused the stored data (it may not
                        // be an object, or not JSON) or it has duplicate
                        // names: what it is, `Value` says.
                        Data::Stored => {
                            let text = object_text(event, &parse_stored(event)?, version)?;
                            run_objects(self, event, &text, version, current, &mut work.out)?
                        }
                        // `object_steps` ran every consecutive object
                        // step, so written data never meets another one.
                        Data::Written(_) => {
                            return Err(failed(
                                event,
                                version,
                                "internal: an object step after a run of object steps".into(),
                            ));
                        }
                        // Rare (a run of object steps after a step of
                        // another kind), so copies are fine.
                        Data::Value(value) => {
                            let text = object_text(event, &value, version)?;
                            run_objects(self, event, &text, version, current, &mut work.out)?
                        }
                        Data::Typed(typed) => {
                            let text = typed_text(event, version, &typed)?;
                            run_objects(self, event, &text, version, current, &mut work.out)?
                        }
                    };
                    version = reached;
                }
                Step::Typed(step) => {
                    let input = match data {
                        Data::Stored => (step.decode)(&event.data),
                        Data::Written(range) => {
                            let input = (step.decode)(&work.out[range.clone()]);
                            work.out.truncate(range.start);
                            input
                        }
                        Data::Value(value) => (step.decode_value)(value),
                        // The common case: the previous step returns what
                        // this one takes.
                        Data::Typed(typed) if type_of(&typed.value) == step.input => {
                            Ok(typed.value)
                        }
                        Data::Typed(typed) => (step.decode)(&typed_text(event, version, &typed)?),
                    }
                    .map_err(|e| {
                        failed(
                            event,
                            version,
                            format!("the data does not decode as {}: {e}", step.input_name),
                        )
                    })?;
                    let value =
                        (step.convert)(input).map_err(|detail| failed(event, version, detail))?;
                    data = Data::Typed(Typed {
                        value,
                        encode: step.encode,
                    });
                    version += 1;
                }
            }
        }
        Ok(data)
    }

    /// Runs the object steps from `version` on, as long as the next step is
    /// one, over `object`; the version reached.
    fn object_steps(
        &self,
        event: &RecordedEvent,
        object: &mut EventObject<'_>,
        mut version: u32,
        current: u32,
    ) -> Result<u32> {
        while version < current {
            let Some(Step::Object(step)) = self.steps.get(&version) else {
                break;
            };
            step(object).map_err(|detail| failed(event, version, detail))?;
            version += 1;
        }
        Ok(version)
    }
}

/// Runs the object steps from `version` on over the object in `text`
/// (which `object_text` wrote), and appends the result to `out`: where it
/// is, and the version reached.
fn run_objects(
    chain: &Chain,
    event: &RecordedEvent,
    text: &[u8],
    version: u32,
    current: u32,
    out: &mut Vec<u8>,
) -> Result<(Data, u32)> {
    let mut object = EventObject::parse_written(text).ok_or_else(|| {
        failed(
            event,
            version,
            "the data does not read back as an object".into(),
        )
    })?;
    let reached = chain.object_steps(event, &mut object, version, current)?;
    let start = out.len();
    object.write_to(out);
    Ok((Data::Written(start..out.len()), reached))
}

/// `name` (from `std::any::type_name`) without module paths:
/// `Wrapper<Money>` for `my_crate::events::Wrapper<my_crate::Money>`.
pub(super) fn short_type_name(name: &str) -> String {
    let mut short = String::with_capacity(name.len());
    let mut segment = String::new();
    for c in name.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            short.push_str(segment.rsplit("::").next().unwrap_or_default());
            segment.clear();
            short.push(c);
        }
    }
    short.push_str(segment.rsplit("::").next().unwrap_or_default());
    short
}

/// What a typed step returned as JSON text, for the step from `version`,
/// which takes another type or representation.
fn typed_text(event: &RecordedEvent, version: u32, typed: &Typed) -> Result<Vec<u8>> {
    let mut text = Vec::new();
    (typed.encode)(typed.value.as_ref(), &mut text)
        .map_err(|e| failed(event, version, e.to_string()))?;
    Ok(text)
}

/// `value` as JSON text for the object step from `version`, or the error
/// that it is not an object.
fn object_text(event: &RecordedEvent, value: &serde_json::Value, version: u32) -> Result<Vec<u8>> {
    if !value.is_object() {
        return Err(failed(
            event,
            version,
            "the data is not a JSON object".into(),
        ));
    }
    serde_json::to_vec(value).map_err(|e| failed(event, version, e.to_string()))
}

/// The event's stored data as a `Value`.
fn parse_stored(event: &RecordedEvent) -> Result<serde_json::Value> {
    serde_json::from_slice(&event.data).map_err(|e| not_json(event, e))
}

fn not_json(event: &RecordedEvent, e: serde_json::Error) -> Error {
    Error::Upcast {
        event_type: event.event_type.clone(),
        version: event.schema_version,
        detail: format!("stored data is not JSON: {e}"),
    }
}

/// The step from `version` failed on `event` for `detail`.
fn failed(event: &RecordedEvent, version: u32, detail: String) -> Error {
    Error::Upcast {
        event_type: event.event_type.clone(),
        version,
        detail: format!(
            "upcasting the event at position {}: {detail}",
            event.position
        ),
    }
}
