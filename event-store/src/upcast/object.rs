//! [`EventObject`]: an event's data object as object steps see it, its
//! top-level members parsed once and every value left as raw JSON text.
//!
//! Most upcasting steps rename, add or drop a few top-level fields and leave
//! the rest alone. Building a `serde_json::Value` of the whole event for
//! that (a map, an allocation per key and string) and serializing it again
//! costs more than the domain's own decoding of the event. Here a value that
//! no step replaces is borrowed from the stored bytes and copied to the
//! output as it is; only replaced values are serialized.

use std::borrow::Cow;
use std::ops::Range;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::rawjson;

/// An event's data, a JSON object, as an object step
/// ([`Upcasters::step_object`](super::Upcasters::step_object)) changes it:
/// its top-level members in order, each value as raw JSON text.
///
/// A step reads members ([`get`](Self::get), [`get_raw`](Self::get_raw),
/// [`contains`](Self::contains)) and changes them ([`rename`](Self::rename),
/// [`remove`](Self::remove), [`set`](Self::set), [`set_raw`](Self::set_raw))
/// with the same outcome as the same operations on a
/// `serde_json::Map`: a set of an absent member adds it, a rename onto an
/// existing name replaces that member. Names are compared unescaped, as a
/// map's keys are.
///
/// Values are decoded only when a step asks for them, and a value no step
/// replaces is written out as the exact text it was stored as.
#[derive(Debug, Default)]
pub struct EventObject<'a> {
    /// In document order, names distinct (data with a duplicate name is
    /// never made into an `EventObject`).
    members: Vec<Member<'a>>,
    /// The JSON text of every value set so far, back to back: one buffer
    /// for all of them rather than an allocation each. UTF-8, checked as
    /// each value is written.
    set_text: Vec<u8>,
}

#[derive(Debug)]
struct Member<'a> {
    /// Unescaped.
    name: Cow<'a, str>,
    value: Text<'a>,
}

/// Where a member's value's JSON text is.
#[derive(Debug, Clone)]
enum Text<'a> {
    /// In the data the object was read from.
    Stored(&'a str),
    /// In `set_text`.
    Set(Range<usize>),
}

impl<'a> From<(Cow<'a, str>, &'a str)> for Member<'a> {
    fn from((name, value): (Cow<'a, str>, &'a str)) -> Self {
        Member {
            name,
            value: Text::Stored(value),
        }
    }
}

impl<'a> From<(Cow<'a, str>, &'a RawValue)> for Member<'a> {
    fn from((name, value): (Cow<'a, str>, &'a RawValue)) -> Self {
        Member {
            name,
            value: Text::Stored(value.get()),
        }
    }
}

impl<'a> EventObject<'a> {
    /// Replaces the contents with the object `data` holds, keeping the
    /// allocations; whether `data` is an object that the fast scanner
    /// (`rawjson::scan_object`) reads, without duplicate names. If not, the
    /// contents are unspecified, and what `data` is is for
    /// `serde_json::Value` to say (the last of duplicate names wins).
    pub(crate) fn read(&mut self, data: &'a [u8]) -> bool {
        self.members.clear();
        self.set_text.clear();
        if self.members.capacity() == 0 {
            // Events are small objects; a handful of members is typical.
            self.members.reserve(8);
        }
        rawjson::scan_object(data, &mut self.members)
            && !rawjson::has_duplicate_names(&self.members, |m| &m.name)
    }

    /// The object in `data`, JSON that `serde_json` wrote from a `Value`
    /// (so without duplicate names), or `None` if it is not an object.
    /// Unlike [`read`](Self::read), it refuses nothing `serde_json` reads.
    pub(crate) fn parse_written(data: &'a [u8]) -> Option<Self> {
        let mut object = EventObject::default();
        rawjson::parse_members_into(data, &mut object.members).ok()?;
        (!rawjson::has_duplicate_names(&object.members, |m| &m.name)).then_some(object)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    fn text(&self, value: &Text<'a>) -> &[u8] {
        match value {
            Text::Stored(text) => text.as_bytes(),
            Text::Set(range) => &self.set_text[range.clone()],
        }
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member names, unescaped, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.name.as_ref())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// The member's value as JSON text, exactly as stored (or as set).
    pub fn get_raw(&self, name: &str) -> Option<&str> {
        let i = self.position(name)?;
        // Set text was checked to be UTF-8 when it was written, so this
        // cannot fail.
        std::str::from_utf8(self.text(&self.members[i].value)).ok()
    }

    /// The member's value decoded as a `T`; `Ok(None)` if there is no such
    /// member, an error naming the member if it is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, String> {
        let Some(raw) = self.get_raw(name) else {
            return Ok(None);
        };
        serde_json::from_str(raw)
            .map(Some)
            .map_err(|e| format!("{name}: {e}"))
    }

    /// Renames the member `from` to `to`, keeping its place; a member
    /// already named `to` is dropped. Whether `from` was there.
    pub fn rename(&mut self, from: &str, to: impl Into<Cow<'a, str>>) -> bool {
        let Some(i) = self.position(from) else {
            return false;
        };
        let to = to.into();
        if to == from {
            return true;
        }
        let i = match self.position(&to) {
            Some(j) => {
                self.members.remove(j);
                if j < i { i - 1 } else { i }
            }
            None => i,
        };
        self.members[i].name = to;
        true
    }

    /// Removes the member; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        match self.position(name) {
            Some(i) => {
                self.members.remove(i);
                true
            }
            None => false,
        }
    }

    /// Sets the member to `value` serialized as JSON: in its place if it
    /// exists, at the end if not. An error naming the member if `value`
    /// does not serialize.
    pub fn set(
        &mut self,
        name: impl Into<Cow<'a, str>>,
        value: impl Serialize,
    ) -> Result<(), String> {
        let name = name.into();
        let start = self.set_text.len();
        let written = serde_json::to_writer(&mut self.set_text, &value)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                // `serde_json` writes UTF-8; checked rather than assumed,
                // as `get_raw` hands the text out as a `str`.
                std::str::from_utf8(&self.set_text[start..])
                    .map(drop)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            self.set_text.truncate(start);
            return Err(format!("{name}: {e}"));
        }
        self.put(name, start..self.set_text.len());
        Ok(())
    }

    /// Sets the member to the JSON text `json`, as [`set`](Self::set) does.
    /// An error naming the member if `json` is not a JSON value (the text is
    /// checked, so that the event stays valid JSON).
    pub fn set_raw(&mut self, name: impl Into<Cow<'a, str>>, json: &str) -> Result<(), String> {
        let name = name.into();
        let raw: &RawValue = serde_json::from_str(json).map_err(|e| format!("{name}: {e}"))?;
        let start = self.set_text.len();
        self.set_text.extend_from_slice(raw.get().as_bytes());
        self.put(name, start..self.set_text.len());
        Ok(())
    }

    /// Points the member at `range` of `set_text`. A value it replaces
    /// stays in `set_text` until the next [`read`](Self::read): steps set
    /// few values, and compacting would cost more than it saves.
    fn put(&mut self, name: Cow<'a, str>, range: Range<usize>) {
        match self.position(&name) {
            Some(i) => self.members[i].value = Text::Set(range),
            None => self.members.push(Member {
                name,
                value: Text::Set(range),
            }),
        }
    }

    /// Appends the object to `out` as compact JSON: members in order,
    /// values as their text.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        // Exact unless a name needs escapes: two quotes and a colon per
        // member, a comma between members, the braces. (Reserved into an
        // empty buffer, this makes it full, so that `Bytes` takes it
        // without an allocation of its own.)
        let len = 1 + self
            .members
            .iter()
            .map(|m| m.name.len() + self.text(&m.value).len() + 4)
            .sum::<usize>()
            .max(1);
        out.reserve(len);
        out.push(b'{');
        for (i, member) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, &member.name);
            out.push(b':');
            out.extend_from_slice(self.text(&member.value));
        }
        out.push(b'}');
    }

    #[cfg(test)]
    fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

/// `s` as a JSON string literal, escaped as `serde_json` escapes it.
fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.push(b'"');
    // Names rarely need escapes; most are copied whole.
    if rawjson::skip_plain_string_bytes(bytes, 0) == bytes.len() {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    /// The object the fast scanner reads from `data`.
    fn read(data: &[u8]) -> Option<EventObject<'_>> {
        let mut object = EventObject::default();
        object.read(data).then_some(object)
    }

    fn reparsed(object: &EventObject<'_>) -> Value {
        serde_json::from_slice(&object.to_vec()).unwrap()
    }

    #[test]
    fn unchanged_values_are_written_as_stored() {
        let data = br#" { "a" : 1.50 , "b\u0061":{"x": [1, 2]}, "c":"s\"t" } "#;
        let object = read(data).unwrap();
        assert_eq!(object.names().collect::<Vec<_>>(), ["a", "ba", "c"]);
        assert_eq!(object.get_raw("a"), Some("1.50"));
        assert_eq!(object.get::<String>("c"), Ok(Some("s\"t".to_string())));
        assert_eq!(object.get::<String>("missing"), Ok(None));
        assert!(object.get::<i64>("c").unwrap_err().starts_with("c: "));
        let written = object.to_vec();
        assert_eq!(written, br#"{"a":1.50,"ba":{"x": [1, 2]},"c":"s\"t"}"#);
    }

    #[test]
    fn only_objects_without_duplicate_names_are_parsed() {
        for data in [
            &b"[1]"[..],
            b"\"a\"",
            b"{\"a\":}",
            b"{\"a\":1} x",
            b"not json",
            b"{\"a\":1,\"a\":2}",
            b"{\"a\":1,\"\\u0061\":2}",
        ] {
            assert!(read(data).is_none(), "{data:?}");
            assert!(EventObject::parse_written(data).is_none(), "{data:?}");
        }
        assert!(read(b"{}").unwrap().is_empty());
        assert!(read(b" {\t}\n").unwrap().is_empty());
    }

    #[test]
    fn changes_follow_map_semantics() {
        let mut object = read(br#"{"a":1,"b":2,"c":3}"#).unwrap();
        assert!(object.rename("c", "a"));
        assert!(!object.rename("x", "y"));
        assert!(object.rename("b", "b"));
        assert_eq!(object.names().collect::<Vec<_>>(), ["b", "a"]);
        object.set("b", json!({"n": [true]})).unwrap();
        object.set("new", "v").unwrap();
        assert!(object.remove("a"));
        assert!(!object.remove("a"));
        assert!(object.set_raw("bad", "{").unwrap_err().starts_with("bad: "));
        object.set_raw("raw", " [1, 2] ").unwrap();
        object.set("b", json!({"n": [true]})).unwrap();
        assert_eq!(object.get_raw("raw"), Some("[1, 2]"));
        object.set("quote\"\n\u{1}é", 1).unwrap();
        assert_eq!(
            reparsed(&object),
            json!({"b": {"n": [true]}, "new": "v", "raw": [1, 2], "quote\"\n\u{1}é": 1})
        );
    }

    #[test]
    fn names_are_escaped_as_serde_json_escapes_them() {
        let name: String = (0u8..0x80)
            .map(char::from)
            .chain("é\u{2028}".chars())
            .collect();
        let mut out = Vec::new();
        write_str(&mut out, &name);
        assert_eq!(out, serde_json::to_vec(&name).unwrap());
    }

    /// One change or read, applied to both representations.
    #[derive(Debug, Clone)]
    enum Op {
        Rename(String, String),
        Remove(String),
        Set(String, Value),
        SetRaw(String, Value),
        Get(String),
    }

    /// Names drawn mostly from a small set, so that operations meet
    /// existing members, plus ones that need escaping.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(vec!["a", "b", "c", "d", "q\"", "t\t", "é"]).prop_map(String::from),
            1 => ".{0,4}",
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        use crate::rawjson::arbitrary_json as value;
        prop_oneof![
            (name(), name()).prop_map(|(a, b)| Op::Rename(a, b)),
            name().prop_map(Op::Remove),
            (name(), value()).prop_map(|(n, v)| Op::Set(n, v)),
            (name(), value()).prop_map(|(n, v)| Op::SetRaw(n, v)),
            name().prop_map(Op::Get),
        ]
    }

    /// `op` with the value it sets as read back from its JSON text, which
    /// is what the `EventObject` holds.
    fn as_read_back(op: &Op) -> Op {
        let read_back = |v: &Value| serde_json::from_str(&v.to_string()).unwrap();
        match op {
            Op::Set(name, v) => Op::Set(name.clone(), read_back(v)),
            Op::SetRaw(name, v) => Op::SetRaw(name.clone(), read_back(v)),
            other => other.clone(),
        }
    }

    fn apply_to_map(map: &mut Map<String, Value>, op: &Op) -> Option<Value> {
        match op {
            Op::Rename(from, to) => {
                if let Some(v) = map.remove(from) {
                    map.insert(to.clone(), v);
                }
            }
            Op::Remove(name) => {
                map.remove(name);
            }
            Op::Set(name, v) | Op::SetRaw(name, v) => {
                map.insert(name.clone(), v.clone());
            }
            Op::Get(name) => return map.get(name).cloned(),
        }
        None
    }

    fn apply_to_object(object: &mut EventObject<'_>, op: &Op) -> Option<Value> {
        match op {
            Op::Rename(from, to) => {
                object.rename(from, to.clone());
            }
            Op::Remove(name) => {
                object.remove(name);
            }
            Op::Set(name, v) => object.set(name.clone(), v).unwrap(),
            Op::SetRaw(name, v) => object
                .set_raw(name.clone(), &serde_json::to_string_pretty(v).unwrap())
                .unwrap(),
            Op::Get(name) => return object.get::<Value>(name).unwrap(),
        }
        None
    }

    proptest! {
        /// Any sequence of operations on an `EventObject` gives the same
        /// JSON, and reads the same values, as on a `serde_json` map, for
        /// any object and whatever the input's whitespace.
        #[test]
        fn operations_agree_with_the_value_path(
            object in prop::collection::btree_map(name(), crate::rawjson::arbitrary_json(), 0..6),
            ops in prop::collection::vec(op(), 0..12),
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
            let Value::Object(mut expected) = serde_json::from_slice(&data).unwrap() else {
                unreachable!()
            };
            let mut fast = EventObject::parse_written(&data).unwrap();
            // The scanner, where it reads the text, reads the same members.
            let mut scanned = EventObject::default();
            if scanned.read(&data) {
                let raw = |o: &EventObject<'_>| {
                    o.names().map(|n| (n.to_owned(), o.get_raw(n).map(str::to_owned))).collect::<Vec<_>>()
                };
                prop_assert_eq!(raw(&scanned), raw(&fast));
            }
            for op in &ops {
                let read = apply_to_object(&mut fast, op);
                let wanted = apply_to_map(&mut expected, &as_read_back(op));
                prop_assert_eq!(read, wanted, "{:?}", op);
            }
            let written: Value = serde_json::from_slice(&fast.to_vec()).unwrap();
            prop_assert_eq!(written, Value::Object(expected));
        }
    }
}
