//! Patching the top-level members of a JSON object in place, without
//! building a `serde_json::Value` of the whole document.
//!
//! The read paths that rewrite a few fields of an event (decrypting its
//! personal fields) used to parse the event into a `Value`, change it, and
//! serialize it again: one allocation per key and string, a tree to drop,
//! and a full re-encode, for an event whose other fields pass through
//! untouched. Here the object is parsed once into its members, each value
//! left as the raw JSON text it is in the input (borrowed, not copied), and
//! the output is the input with the chosen values' byte ranges replaced.
//! Everything else — member order, whitespace, number spelling — is kept
//! byte for byte, so the result parses to the same value as the `Value`
//! path would produce.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// One top-level member: its (unescaped) name, and where its value's JSON
/// text lies in the input.
#[derive(Debug)]
pub(crate) struct Member<'a> {
    pub name: Cow<'a, str>,
    pub value: &'a RawValue,
    pub range: Range<usize>,
}

/// A member name, borrowed from the input unless it contains escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// The members in document order, duplicates included.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // Events are small objects; a handful of members is typical.
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((name, value)) = map.next_entry::<Name<'de>, &'de RawValue>()? {
                    members.push((name.0, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// The top-level members of `data`, or `None` if it is not a JSON object.
/// Every value is validated as JSON (the whole input is parsed), but none is
/// decoded.
pub(crate) fn object_members(data: &[u8]) -> Option<Vec<Member<'_>>> {
    let Members(members) = serde_json::from_slice(data).ok()?;
    let base = data.as_ptr() as usize;
    members
        .into_iter()
        .map(|(name, value)| {
            // A borrowed raw value points into `data`; its offset is where
            // its text starts. Checked, so that a serde_json that ever
            // copied would make this return `None` (and callers take the
            // slow path) rather than patch the wrong bytes.
            let start = (value.get().as_ptr() as usize).checked_sub(base)?;
            let end = start.checked_add(value.get().len())?;
            (data.get(start..end)? == value.get().as_bytes()).then_some(Member {
                name,
                value,
                range: start..end,
            })
        })
        .collect()
}

/// A JSON string's content, if `raw` is a string.
pub(crate) fn as_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(text) {
        Ok(s) => Some(Cow::Borrowed(s)),
        // Escapes cannot be borrowed.
        Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
    }
}

/// `data` with each range replaced by its bytes. The ranges must be in
/// ascending order and not overlap (member ranges of one object are).
pub(crate) fn splice(data: &[u8], patches: &[(Range<usize>, Vec<u8>)]) -> Vec<u8> {
    let added: usize = patches.iter().map(|(_, b)| b.len()).sum();
    let mut out = Vec::with_capacity(data.len() + added);
    let mut at = 0;
    for (range, bytes) in patches {
        out.extend_from_slice(&data[at..range.start]);
        out.extend_from_slice(bytes);
        at = range.end;
    }
    out.extend_from_slice(&data[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    #[test]
    fn members_point_at_their_values_text() {
        let data = br#" { "a" : 1 , "b\u0061":{"x":[1,2]}, "c":"s\"t" } "#;
        let members = object_members(data).unwrap();
        let names: Vec<_> = members.iter().map(|m| m.name.as_ref()).collect();
        assert_eq!(names, ["a", "ba", "c"]);
        for m in &members {
            assert_eq!(&data[m.range.clone()], m.value.get().as_bytes());
        }
        assert_eq!(as_str(members[2].value).as_deref(), Some("s\"t"));
        assert_eq!(as_str(members[0].value), None);
        assert!(object_members(b"[1]").is_none());
        assert!(object_members(b"{\"a\":}").is_none());
        assert!(object_members(b"not json").is_none());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Replacing members' values through their ranges gives the same
        /// document as replacing them in a `Value`, for any object and any
        /// choice of members, whatever the input's whitespace.
        #[test]
        fn splicing_agrees_with_the_value_path(
            object in prop::collection::btree_map(".{0,6}", json_value(), 0..6),
            pick in prop::collection::vec(any::<bool>(), 6),
            replacement in json_value(),
            pretty in any::<bool>(),
        ) {
            let object = Value::Object(object.into_iter().collect());
            let data = if pretty {
                serde_json::to_vec_pretty(&object).unwrap()
            } else {
                serde_json::to_vec(&object).unwrap()
            };
            // Compare values read back from text on both sides: a float
            // need not survive a round trip through text bit for bit.
            let value: Value = serde_json::from_slice(&data).unwrap();
            let replacement_bytes = serde_json::to_vec(&replacement).unwrap();
            let replacement: Value = serde_json::from_slice(&replacement_bytes).unwrap();
            let members = object_members(&data).unwrap();
            let mut expected = value.clone();
            let mut patches = Vec::new();
            for (member, chosen) in members.iter().zip(&pick) {
                prop_assert_eq!(
                    serde_json::from_str::<Value>(member.value.get()).unwrap(),
                    value[member.name.as_ref()].clone()
                );
                if *chosen {
                    expected[member.name.as_ref()] = replacement.clone();
                    patches.push((member.range.clone(), replacement_bytes.clone()));
                }
            }
            let patched = splice(&data, &patches);
            prop_assert_eq!(serde_json::from_slice::<Value>(&patched).unwrap(), expected);
        }
    }
}
