//! Domain events stored as plain JSON with no code of their own: an enum
//! whose variants are the event types (serde's externally tagged form),
//! each stored with its fields as the event's data.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::aggregate::{DecodeError, DomainEvent};

/// Events of one aggregate as a serde enum: the variant's name is the
/// stored event type and its fields are the data. Implementing this is all
/// a domain writes; [`DomainEvent`] comes with it. Schema version 1; an
/// event type that changes shape gets an upcaster (see
/// [`event_store::Upcasters`]) and its own [`DomainEvent`] impl.
///
/// ```
/// use command_api::{DomainEvent, JsonEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize)]
/// enum TaskEvent {
///     TaskAdded { title: String },
///     TaskDone,
/// }
///
/// impl JsonEvent for TaskEvent {
///     fn event_type(&self) -> &'static str {
///         match self {
///             TaskEvent::TaskAdded { .. } => "TaskAdded",
///             TaskEvent::TaskDone => "TaskDone",
///         }
///     }
/// }
///
/// let added = TaskEvent::TaskAdded { title: "milk".into() };
/// assert_eq!(added.encode().unwrap(), br#"{"title":"milk"}"#);
/// let done = TaskEvent::decode("TaskDone", 1, b"{}").unwrap();
/// assert!(matches!(done, TaskEvent::TaskDone));
/// ```
pub trait JsonEvent:
    Serialize + DeserializeOwned + Send + Sync + std::fmt::Debug + 'static
{
    /// The stored event type: the variant's name as serde spells it.
    fn event_type(&self) -> &'static str;
}

impl<T: JsonEvent> DomainEvent for T {
    fn event_type(&self) -> &'static str {
        JsonEvent::event_type(self)
    }

    fn encode(&self) -> serde_json::Result<Vec<u8>> {
        match serde_json::to_value(self)? {
            // A variant with fields: `{"<type>": <data>}`.
            Value::Object(mut tagged) if tagged.len() == 1 => {
                let data = tagged
                    .remove(JsonEvent::event_type(self))
                    .or_else(|| tagged.into_iter().next().map(|(_, data)| data))
                    .unwrap_or_else(|| Value::Object(Map::new()));
                serde_json::to_vec(&data)
            }
            // A variant without fields: `"<type>"`, stored as `{}`.
            Value::String(_) => Ok(b"{}".to_vec()),
            _ => Err(serde::ser::Error::custom(
                "a JsonEvent must be an externally tagged enum",
            )),
        }
    }

    fn decode(event_type: &str, schema_version: u32, data: &[u8]) -> Result<Self, DecodeError> {
        let data: Value = crate::aggregate::decode_data(event_type, schema_version, data)?;
        let as_fields = Value::Object(Map::from_iter([(event_type.to_owned(), data.clone())]));
        serde_json::from_value(as_fields).or_else(|with_fields| {
            // A variant without fields, stored as `{}` (or as nothing).
            let empty = data.is_null() || data.as_object().is_some_and(Map::is_empty);
            match empty {
                true => {
                    serde_json::from_value(Value::String(event_type.to_owned())).map_err(|_| {
                        match with_fields.classify() {
                            serde_json::error::Category::Data => {
                                DecodeError::UnknownType(event_type.to_owned())
                            }
                            _ => DecodeError::Data {
                                event_type: event_type.to_owned(),
                                source: with_fields,
                            },
                        }
                    })
                }
                false => Err(DecodeError::Data {
                    event_type: event_type.to_owned(),
                    source: with_fields,
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Event {
        Added {
            title: String,
            n: u32,
        },
        #[serde(rename = "Renamed")]
        Retitled(RetitledData),
        Done,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct RetitledData {
        title: String,
    }

    impl JsonEvent for Event {
        fn event_type(&self) -> &'static str {
            match self {
                Event::Added { .. } => "Added",
                Event::Retitled(_) => "Renamed",
                Event::Done => "Done",
            }
        }
    }

    #[test]
    fn every_kind_of_variant_round_trips_through_its_stored_form() {
        for event in [
            Event::Added {
                title: "a".into(),
                n: 2,
            },
            Event::Retitled(RetitledData { title: "b".into() }),
            Event::Done,
        ] {
            let data = event.encode().unwrap();
            let stored: Value = serde_json::from_slice(&data).unwrap();
            assert!(stored.is_object(), "{stored}");
            let back = Event::decode(DomainEvent::event_type(&event), 1, &data).unwrap();
            assert_eq!(back, event);
        }
    }

    #[test]
    fn unknown_types_bad_data_and_other_versions_are_errors() {
        assert!(matches!(
            Event::decode("Deleted", 1, b"{}"),
            Err(DecodeError::UnknownType(t)) if t == "Deleted"
        ));
        assert!(matches!(
            Event::decode("Added", 1, br#"{"title": 3}"#),
            Err(DecodeError::Data { .. })
        ));
        assert!(matches!(
            Event::decode("Done", 2, b"{}"),
            Err(DecodeError::UnsupportedSchema { found: 2, .. })
        ));
    }
}
