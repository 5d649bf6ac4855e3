use bytes::Bytes;

use std::any::TypeId;

use super::cache::UpcastCache;
use super::registry::{short_type_name, type_of};
use super::*;
use crate::error::Error;
use crate::types::*;
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
        .step("Registered", 2, default_currency_value)
}

fn default_currency_value(
    mut v: serde_json::Value,
) -> std::result::Result<serde_json::Value, String> {
    if v.get("currency").is_none() {
        v["currency"] = json!("EUR");
    }
    Ok(v)
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

/// `chain()` with object steps.
fn object_chain() -> Upcasters {
    Upcasters::new()
        .current("Registered", 3)
        .step_object("Registered", 1, split_name)
        .step_object("Registered", 2, default_currency)
}

fn split_name(data: &mut EventObject<'_>) -> std::result::Result<(), String> {
    let name: String = data.get("name")?.unwrap_or_default();
    let (given, family) = name.split_once(' ').unwrap_or((&name, ""));
    data.set("given_name", given)?;
    data.set("family_name", family)?;
    data.remove("name");
    Ok(())
}

fn default_currency(data: &mut EventObject<'_>) -> std::result::Result<(), String> {
    if !data.contains("currency") {
        data.set("currency", "EUR")?;
    }
    Ok(())
}

fn read(event: &RecordedEvent) -> serde_json::Value {
    serde_json::from_slice(&event.data).unwrap()
}

#[test]
fn object_steps_and_value_steps_agree_and_mix() {
    let mixed = [
        Upcasters::new()
            .current("Registered", 3)
            .step_object("Registered", 1, split_name)
            .step("Registered", 2, default_currency_value),
        chain().step_object("Registered", 2, default_currency),
    ];
    for data in [
        json!({"name": "Ada Lovelace", "n": [1, {"x": null}]}),
        json!({"name": "Ada", "currency": "USD", "e\"\u{1}": 1.5}),
        json!({}),
    ] {
        let expected = chain()
            .upcast(stored("Registered", 1, data.clone()))
            .unwrap();
        for upcasters in std::iter::once(object_chain()).chain(mixed.clone()) {
            let event = upcasters
                .upcast(stored("Registered", 1, data.clone()))
                .unwrap();
            assert_eq!(event.schema_version, 3);
            assert_eq!(read(&event), read(&expected), "{upcasters:?}");
        }
    }
    // An object step's value between two `Value` steps, and the reverse.
    let sandwich = Upcasters::new()
        .current("T", 4)
        .step("T", 1, |v| Ok(json!({"inner": v})))
        .step_object("T", 2, |o| o.set("added", 2))
        .step("T", 3, |mut v| {
            v["added"] = json!(v["added"].as_i64().unwrap_or(0) + 1);
            Ok(v)
        });
    let event = sandwich.upcast(stored("T", 1, json!([1]))).unwrap();
    assert_eq!(read(&event), json!({"inner": [1], "added": 3}));
}

#[test]
fn object_steps_see_duplicate_names_as_a_value_does() {
    let mut event = stored("Registered", 2, json!({}));
    event.data = Bytes::from_static(br#"{"currency":"USD","given_name":"A","currency":"GBP"}"#);
    for upcasters in [chain(), object_chain()] {
        let read_back = read(&upcasters.upcast(event.clone()).unwrap());
        assert_eq!(read_back, json!({"given_name": "A", "currency": "GBP"}));
    }
}

#[test]
fn object_step_errors_name_type_and_version() {
    let failing = Upcasters::new()
        .current("Registered", 3)
        .step_object("Registered", 1, |_| Ok(()))
        .step_object("Registered", 2, |_| Err("no currency here".into()));
    let upcast_error = |upcasters: &Upcasters, data: &'static [u8], version| {
        let mut event = stored("Registered", version, json!({}));
        event.data = Bytes::from_static(data);
        match upcasters.upcast(event) {
            Err(Error::Upcast {
                event_type,
                version,
                detail,
            }) => {
                assert_eq!(event_type, "Registered");
                (version, detail)
            }
            other => panic!("expected an upcast error, got {other:?}"),
        }
    };
    let (version, detail) = upcast_error(&failing, b"{}", 1);
    assert_eq!(version, 2);
    assert!(detail.ends_with("position 7: no currency here"), "{detail}");
    // Data that is no object, or no JSON, fails as it would have before
    // any step ran: at its stored version, saying so.
    for data in [&b"[1]"[..], b"\"x\"", b"null"] {
        let (version, detail) = upcast_error(&object_chain(), data, 1);
        assert_eq!(version, 1);
        assert!(
            detail.ends_with("the data is not a JSON object"),
            "{detail}"
        );
    }
    for upcasters in [&chain(), &object_chain(), &failing] {
        let (version, detail) = upcast_error(upcasters, b"{\"a\":", 1);
        assert_eq!(version, 1);
        assert!(detail.starts_with("stored data is not JSON"), "{detail}");
    }
    let gap = Upcasters::new()
        .current("Registered", 3)
        .step_object("Registered", 1, |_| Ok(()));
    assert_eq!(upcast_error(&gap, b"{}", 1).0, 2);
    assert!(
        upcast_error(&gap, b"{", 2)
            .1
            .starts_with("stored data is not JSON")
    );
    assert!(
        upcast_error(&gap, b"{}", 2)
            .1
            .starts_with("no upcaster from version 2")
    );
}

/// Upcasters for a mixed batch, and the batch at positions 0..5: old
/// and current events, a type without upcasters, a `Value` step.
fn mixed_batch() -> (Upcasters, Vec<RecordedEvent>) {
    let up = object_chain()
        .step("Other", 1, |v| Ok(json!({"wrapped": v})))
        .current("Other", 2);
    let mut events = vec![
        stored("Registered", 1, json!({"name": "Ada Lovelace"})),
        stored("Registered", 3, json!({"given_name": "A"})),
        stored("Unrelated", 1, json!([1])),
        stored("Other", 1, json!("x")),
        stored(
            "Registered",
            2,
            json!({"given_name": "G", "currency": "USD"}),
        ),
    ];
    for (i, event) in events.iter_mut().enumerate() {
        event.position = Position(i as u64);
    }
    (up, events)
}

#[test]
fn a_batch_reads_as_its_events_one_by_one() {
    let (up, mut events) = mixed_batch();
    let one_by_one: Vec<_> = events
        .iter()
        .map(|e| up.upcast(e.clone()).unwrap())
        .collect();
    assert_eq!(up.upcast_all(events.clone()).unwrap(), one_by_one);
    assert_eq!(one_by_one[1], events[1]);
    assert_eq!(read(&one_by_one[3]), json!({"wrapped": "x"}));
    // The first event that cannot be read fails the batch.
    events[4].data = Bytes::from_static(b"[2]");
    assert!(matches!(
        up.upcast_all(events),
        Err(Error::Upcast { version: 2, .. })
    ));
}

#[test]
fn a_cached_batch_reads_as_an_uncached_one() {
    let (up, mut events) = mixed_batch();
    let cache = UpcastCache::new(1 << 20);
    let uncached = up.upcast_all(events.clone()).unwrap();
    for _ in 0..2 {
        let (cached, left_typed) = up
            .upcast_all_with(events.clone(), Some((&cache, cache.generation())), false)
            .unwrap();
        assert_eq!(cached, uncached);
        assert!(!left_typed);
    }
    // Only the three events that needed a step are kept.
    assert_eq!(cache.usage().0, 3);
    // The same position read as other data (erased since, say) is
    // upcast from that data, not served from the cache.
    events[0].data = Bytes::from(serde_json::to_vec(&json!({"name": "X Y"})).unwrap());
    let (cached, _) = up
        .upcast_all_with(events.clone(), Some((&cache, cache.generation())), false)
        .unwrap();
    assert_eq!(cached, up.upcast_all(events.clone()).unwrap());
    assert_eq!(read(&cached[0])["given_name"], "X");
    // An error still fails the batch, whatever is cached.
    events[4].data = Bytes::from_static(b"[2]");
    assert!(matches!(
        up.upcast_all_with(events, Some((&cache, cache.generation())), false),
        Err(Error::Upcast { version: 2, .. })
    ));
}

/// `chain()`'s versions as Rust types.
#[derive(serde::Deserialize)]
struct RegisteredV1 {
    #[serde(default)]
    name: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct RegisteredV2 {
    given_name: String,
    family_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct RegisteredV3 {
    given_name: String,
    family_name: String,
    currency: String,
}

fn split_name_typed(v1: RegisteredV1) -> std::result::Result<RegisteredV2, String> {
    let (given, family) = v1.name.split_once(' ').unwrap_or((&v1.name, ""));
    Ok(RegisteredV2 {
        given_name: given.into(),
        family_name: family.into(),
        currency: None,
    })
}

fn default_currency_typed(v2: RegisteredV2) -> std::result::Result<RegisteredV3, String> {
    Ok(RegisteredV3 {
        given_name: v2.given_name,
        family_name: v2.family_name,
        currency: v2.currency.unwrap_or_else(|| "EUR".into()),
    })
}

/// `chain()` with typed steps.
fn typed_chain() -> Upcasters {
    Upcasters::new()
        .current("Registered", 3)
        .step_typed("Registered", 1, split_name_typed)
        .step_typed("Registered", 2, default_currency_typed)
}

#[test]
fn typed_steps_agree_with_the_other_kinds_and_mix_with_them() {
    let mixed = [
        Upcasters::new()
            .current("Registered", 3)
            .step_typed("Registered", 1, split_name_typed)
            .step_object("Registered", 2, default_currency),
        Upcasters::new()
            .current("Registered", 3)
            .step_object("Registered", 1, split_name)
            .step_typed("Registered", 2, default_currency_typed),
        chain().step_typed("Registered", 2, default_currency_typed),
        typed_chain().step("Registered", 2, default_currency_value),
    ];
    assert!(typed_chain().has_typed_steps() && !chain().has_typed_steps());
    assert!(
        !typed_chain()
            .step_object("Registered", 1, split_name)
            .step_object("Registered", 2, default_currency)
            .has_typed_steps(),
        "every typed step replaced"
    );
    for (version, data) in [
        (1, json!({"name": "Ada Lovelace"})),
        (1, json!({"name": "Ada"})),
        (1, json!({})),
        (
            2,
            json!({"given_name": "A", "family_name": "B", "currency": "USD"}),
        ),
        (2, json!({"given_name": "A", "family_name": "B"})),
    ] {
        let expected = chain().upcast(stored("Registered", version, data.clone()));
        let expected = read(&expected.unwrap());
        for upcasters in std::iter::once(typed_chain()).chain(mixed.clone()) {
            let event = upcasters
                .upcast(stored("Registered", version, data.clone()))
                .unwrap();
            assert_eq!(event.schema_version, 3);
            assert_eq!(read(&event), expected, "{upcasters:?}");
        }
        // The same, as a batch and as the value itself.
        let batch = typed_chain()
            .upcast_all(vec![stored("Registered", version, data.clone())])
            .unwrap();
        assert_eq!(read(&batch[0]), expected);
        let value = typed_chain()
            .upcast_typed(&stored("Registered", version, data.clone()))
            .unwrap()
            .unwrap();
        let value = value.downcast::<RegisteredV3>().unwrap();
        assert_eq!(serde_json::to_value(&*value).unwrap(), expected);
    }
}

#[test]
fn typed_decoding_serves_only_events_that_typed_steps_alone_bring_to_current() {
    let up = typed_chain()
        .current("Other", 2)
        .step("Other", 1, Ok)
        .current("Half", 3)
        .step("Half", 1, Ok)
        .step_typed("Half", 2, |v: serde_json::Value| Ok(v));
    let typed = |event_type: &str, version: u32| {
        up.upcast_typed(&stored(event_type, version, json!({})))
            .is_some()
    };
    assert!(typed("Registered", 1) && typed("Registered", 2));
    assert!(!typed("Registered", 3), "already current");
    assert!(!typed("Registered", 4), "newer: an error for `upcast`");
    assert!(!typed("Other", 1) && !typed("Unrelated", 1));
    assert!(typed("Half", 2) && !typed("Half", 1));
    // A step whose input is not the previous step's output gets it as
    // JSON text: here `RegisteredV3` from the text of a `RegisteredV2`
    // with its currency.
    let retyped = Upcasters::new()
        .current("Registered", 3)
        .step_typed("Registered", 1, |v: RegisteredV1| {
            let mut v2 = split_name_typed(v)?;
            v2.currency = Some("SEK".into());
            Ok(v2)
        })
        .step_typed("Registered", 2, |v: RegisteredV3| Ok(v));
    let value = retyped
        .upcast_typed(&stored("Registered", 1, json!({"name": "Ada L"})))
        .unwrap()
        .unwrap()
        .downcast::<RegisteredV3>()
        .unwrap();
    assert_eq!(
        *value,
        RegisteredV3 {
            given_name: "Ada".into(),
            family_name: "L".into(),
            currency: "SEK".into()
        }
    );
}

#[test]
fn a_typed_value_is_known_by_its_own_type_not_its_box() {
    let value: UpcastValue = Box::new(RegisteredV3 {
        given_name: "A".into(),
        family_name: "B".into(),
        currency: "EUR".into(),
    });
    assert_eq!(type_of(&value), TypeId::of::<RegisteredV3>());
    assert_ne!(type_of(&value), TypeId::of::<UpcastValue>());
}

#[test]
fn type_names_in_errors_lose_their_module_paths() {
    assert_eq!(
        short_type_name("a::b::Wrapper<a::Money, (c::D, [u8; 2])>"),
        "Wrapper<Money, (D, [u8; 2])>"
    );
    assert_eq!(short_type_name("u32"), "u32");
    assert_eq!(
        short_type_name(std::any::type_name::<Option<RegisteredV1>>()),
        "Option<RegisteredV1>"
    );
}

#[test]
fn typed_step_errors_name_type_and_version() {
    let refusing = typed_chain().step_typed("Registered", 2, |_: RegisteredV2| {
        Err::<RegisteredV3, _>("no currency for this one".to_owned())
    });
    let cases: [(Upcasters, RecordedEvent, u32, &str); 4] = [
        (
            typed_chain(),
            stored("Registered", 1, json!({"name": 7})),
            1,
            "does not decode as",
        ),
        (
            typed_chain(),
            stored("Registered", 2, json!({"given_name": "A"})),
            2,
            "family_name",
        ),
        (
            refusing,
            stored("Registered", 1, json!({"name": "A B"})),
            2,
            "no currency for this one",
        ),
        (
            typed_chain(),
            RecordedEvent {
                data: Bytes::from_static(b"{not json"),
                ..stored("Registered", 1, json!({}))
            },
            1,
            "does not decode as",
        ),
    ];
    for (up, event, at, detail) in cases {
        let errors = [
            up.upcast(event.clone()).unwrap_err(),
            up.upcast_typed(&event).unwrap().unwrap_err(),
        ];
        for error in errors {
            match error {
                Error::Upcast {
                    event_type,
                    version,
                    detail: got,
                } => {
                    assert_eq!((event_type.as_str(), version), ("Registered", at));
                    assert!(got.contains(detail), "{got}");
                    assert!(got.contains("position 7"), "{got}");
                }
                other => panic!("expected an upcast error, got {other:?}"),
            }
        }
    }
}

#[test]
fn a_batch_leaving_typed_events_upcasts_the_others_and_caches_only_them() {
    let up = typed_chain()
        .current("Other", 2)
        .step("Other", 1, |v| Ok(json!({"wrapped": v})));
    let mut events = vec![
        stored("Registered", 1, json!({"name": "Ada Lovelace"})),
        stored("Other", 1, json!("x")),
        stored("Registered", 3, json!({"given_name": "A"})),
        stored(
            "Registered",
            2,
            json!({"given_name": "A", "family_name": "B"}),
        ),
    ];
    for (i, event) in events.iter_mut().enumerate() {
        event.position = Position(i as u64);
    }
    let cache = UpcastCache::new(1 << 20);
    for cache in [None, Some((&cache, cache.generation()))] {
        let (read_back, left_typed) = up.upcast_all_with(events.clone(), cache, true).unwrap();
        assert!(left_typed);
        assert_eq!(read_back[0], events[0]);
        assert_eq!(read(&read_back[1]), json!({"wrapped": "x"}));
        assert_eq!(read_back[1].schema_version, 2);
        assert_eq!(read_back[2..], events[2..]);
        // Without old events for typed steps, the flag says so.
        let (_, left_typed) = up
            .upcast_all_with(events[1..3].to_vec(), cache, true)
            .unwrap();
        assert!(!left_typed);
        // Without `leave_typed`, they are upcast here.
        let (read_back, left_typed) = up.upcast_all_with(events.clone(), cache, false).unwrap();
        assert!(!left_typed);
        assert_eq!(read_back, up.upcast_all(events.clone()).unwrap());
        assert_eq!(read_back[0].schema_version, 3);
    }
    assert_eq!(cache.usage().0, 3);
}
