//! Schema evolution on read: upcasters turn an event stored at an old schema
//! version into the current one, one version step at a time, every time it
//! is read. Stored bytes are never rewritten.
//!
//! [`Upcasting`] wraps any [`EventStore`] so that every read path — stream
//! reads, aggregate loads, reads of the whole log and subscriptions — returns
//! current events; appends pass through untouched. An event whose type has a
//! declared current version but no chain of upcasters leading there is an
//! [`Error::Upcast`] naming its type and version, never dropped.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::api::{EventStore, LoadedStream};
use crate::error::{Error, Result};
use crate::subscription::Subscription;
use crate::types::{
    AppendResult, Direction, EventFilter, Position, ReadFrom, RecordedEvent, Snapshot, Stats,
    StreamAppend, StreamId, StreamSlice,
};

type Step =
    Arc<dyn Fn(serde_json::Value) -> std::result::Result<serde_json::Value, String> + Send + Sync>;

/// The upcasters of a domain: for each event type, its current schema version
/// and one step per older version.
#[derive(Clone, Default)]
pub struct Upcasters {
    /// By event type, so that reading an event costs one lookup by its
    /// type (no allocation), whatever the length of its chain.
    types: HashMap<String, Chain>,
}

/// One event type's versions.
#[derive(Clone, Default)]
struct Chain {
    /// Declared with [`Upcasters::current`]; a type with steps only is not
    /// upcast.
    current: Option<u32>,
    /// The step from each version to the next, by that version.
    steps: BTreeMap<u32, Step>,
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
        self.types.entry(event_type.into()).or_default().current = Some(version);
        self
    }

    /// Registers the step that turns `event_type` data at `from_version` into
    /// `from_version + 1`.
    pub fn step<F>(mut self, event_type: impl Into<String>, from_version: u32, step: F) -> Self
    where
        F: Fn(serde_json::Value) -> std::result::Result<serde_json::Value, String>
            + Send
            + Sync
            + 'static,
    {
        self.types
            .entry(event_type.into())
            .or_default()
            .steps
            .insert(from_version, Arc::new(step));
        self
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
    pub fn upcast(&self, mut event: RecordedEvent) -> Result<RecordedEvent> {
        let Some(chain) = self.types.get(event.event_type.as_str()) else {
            return Ok(event);
        };
        let Some(current) = chain.current else {
            return Ok(event);
        };
        if event.schema_version == current {
            return Ok(event);
        }
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
        let mut data: serde_json::Value =
            serde_json::from_slice(&event.data).map_err(|e| Error::Upcast {
                event_type: event.event_type.clone(),
                version: event.schema_version,
                detail: format!("stored data is not JSON: {e}"),
            })?;
        let mut version = event.schema_version;
        while version < current {
            let Some(step) = chain.steps.get(&version) else {
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
            data = step(data).map_err(|detail| Error::Upcast {
                event_type: event.event_type.clone(),
                version,
                detail: format!(
                    "upcasting the event at position {}: {detail}",
                    event.position
                ),
            })?;
            version += 1;
        }
        // Sized from the stored data (steps mostly rename and reshape), so
        // that serializing rarely reallocates.
        let mut out = Vec::with_capacity(event.data.len() + event.data.len() / 2 + 16);
        serde_json::to_writer(&mut out, &data).map_err(|e| Error::Upcast {
            event_type: event.event_type.clone(),
            version,
            detail: e.to_string(),
        })?;
        event.data = Bytes::from(out);
        event.schema_version = version;
        Ok(event)
    }
}

/// An [`EventStore`] whose reads return upcast events.
#[derive(Debug, Clone)]
pub struct Upcasting<S> {
    inner: S,
    upcasters: Arc<Upcasters>,
}

impl<S: EventStore> Upcasting<S> {
    pub fn new(inner: S, upcasters: Upcasters) -> Result<Self> {
        upcasters.validate()?;
        Ok(Self {
            inner,
            upcasters: Arc::new(upcasters),
        })
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn all(&self, events: Vec<RecordedEvent>) -> Result<Vec<RecordedEvent>> {
        events
            .into_iter()
            .map(|e| self.upcasters.upcast(e))
            .collect()
    }
}

#[async_trait]
impl<S: EventStore> EventStore for Upcasting<S> {
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<Vec<AppendResult>> {
        self.inner.append_many(appends).await
    }

    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from: ReadFrom,
        direction: Direction,
        max_count: usize,
    ) -> Result<StreamSlice> {
        let mut slice = self
            .inner
            .read_stream(stream_id, from, direction, max_count)
            .await?;
        slice.events = self.all(slice.events)?;
        Ok(slice)
    }

    async fn read_all(&self, from: Position, max_count: usize) -> Result<Vec<RecordedEvent>> {
        let events = self.inner.read_all(from, max_count).await?;
        self.all(events)
    }

    async fn subscribe(&self, from: Position, filter: EventFilter) -> Result<Subscription> {
        let upcasters = self.upcasters.clone();
        let inner = self.inner.subscribe(from, filter).await?;
        Ok(Subscription::from_stream(
            inner.map(move |event| event.and_then(|e| upcasters.upcast(e))),
        ))
    }

    async fn save_snapshot(
        &self,
        stream_id: &StreamId,
        version: u64,
        schema_version: u32,
        state: Bytes,
    ) -> Result<()> {
        self.inner
            .save_snapshot(stream_id, version, schema_version, state)
            .await
    }

    async fn load_snapshot(&self, stream_id: &StreamId) -> Result<Option<Snapshot>> {
        self.inner.load_snapshot(stream_id).await
    }

    async fn stats(&self) -> Result<Stats> {
        self.inner.stats().await
    }

    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }

    async fn ready(&self) -> Result<()> {
        self.inner.ready().await
    }

    async fn forget_subject(&self, stream_id: &StreamId) -> Result<()> {
        self.inner.forget_subject(stream_id).await
    }

    async fn load(
        &self,
        stream_id: &StreamId,
        snapshot_schema: Option<u32>,
    ) -> Result<LoadedStream> {
        let mut loaded = self.inner.load(stream_id, snapshot_schema).await?;
        loaded.events = self.all(loaded.events)?;
        Ok(loaded)
    }

    fn read_page_max(&self) -> usize {
        self.inner.read_page_max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Timestamp;
    use serde_json::json;

    fn stored(event_type: &str, version: u32, data: serde_json::Value) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::nil(),
            stream_id: StreamId::new("customer-1").unwrap(),
            version: 1,
            position: Position(7),
            event_type: event_type.into(),
            schema_version: version,
            timestamp: Timestamp(0),
            data: Bytes::from(serde_json::to_vec(&data).unwrap()),
            metadata: Bytes::from_static(b"{}"),
        }
    }

    fn chain() -> Upcasters {
        Upcasters::new()
            .current("Registered", 3)
            .step("Registered", 1, |mut v| {
                let name = v["name"].as_str().unwrap_or_default().to_string();
                let (given, family) = name.split_once(' ').unwrap_or((&name, ""));
                v["given_name"] = json!(given);
                v["family_name"] = json!(family);
                v.as_object_mut().map(|o| o.remove("name"));
                Ok(v)
            })
            .step("Registered", 2, |mut v| {
                if v.get("currency").is_none() {
                    v["currency"] = json!("EUR");
                }
                Ok(v)
            })
    }

    #[test]
    fn chains_run_from_any_old_version_to_the_current_one() {
        let up = chain();
        let v1 = up
            .upcast(stored("Registered", 1, json!({"name": "Ada Lovelace"})))
            .unwrap();
        assert_eq!(v1.schema_version, 3);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&v1.data).unwrap(),
            json!({"given_name": "Ada", "family_name": "Lovelace", "currency": "EUR"})
        );
        let v2 = up
            .upcast(stored(
                "Registered",
                2,
                json!({"given_name": "A", "family_name": "B", "currency": "USD"}),
            ))
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&v2.data).unwrap()["currency"],
            "USD"
        );
        let current = stored("Registered", 3, json!({"x": 1}));
        assert_eq!(up.upcast(current.clone()).unwrap(), current);
        let other = stored("Unrelated", 1, json!({"x": 1}));
        assert_eq!(up.upcast(other.clone()).unwrap(), other);
    }

    #[test]
    fn a_missing_step_or_a_newer_version_is_an_error_naming_type_and_version() {
        let broken = Upcasters::new()
            .current("Registered", 3)
            .step("Registered", 1, Ok);
        assert!(matches!(
            broken.validate(),
            Err(Error::Upcast { ref event_type, version: 2, .. }) if event_type == "Registered"
        ));
        match broken.upcast(stored("Registered", 1, json!({}))) {
            Err(Error::Upcast {
                event_type,
                version,
                ..
            }) => {
                assert_eq!((event_type.as_str(), version), ("Registered", 2));
            }
            other => panic!("expected an upcast error, got {other:?}"),
        }
        assert!(matches!(
            chain().upcast(stored("Registered", 4, json!({}))),
            Err(Error::Upcast { version: 4, .. })
        ));
    }
}
