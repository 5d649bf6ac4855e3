//! Patching the top-level members of a JSON object in place, without
//! building a `serde_json::Value` of the whole document.
//!
//! The read paths that rewrite a few fields of an event (decrypting its
//! personal fields) would otherwise parse the event into a `Value`, change
//! it, and serialize it again: one allocation per key and string, a tree to
//! drop, and a full re-encode, for an event whose other fields pass through
//! untouched. Here the object is parsed once into its members, each value
//! left as the raw JSON text it is in the input (borrowed, not copied), and
//! the output is the input with the chosen values' byte ranges replaced.
//! Everything else — member order, whitespace, number spelling — is kept
//! byte for byte, so the result parses to the same value as the `Value`
//! path would produce.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, Visitor};
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

/// Appends an object's members to a vector in document order, duplicates
/// included, each made into an `M` from its name and raw value.
struct MembersInto<'v, M>(&'v mut Vec<M>);

impl<'de, M> DeserializeSeed<'de> for MembersInto<'_, M>
where
    M: From<(Cow<'de, str>, &'de RawValue)>,
{
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, M> Visitor<'de> for MembersInto<'_, M>
where
    M: From<(Cow<'de, str>, &'de RawValue)>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some((name, value)) = map.next_entry::<Name<'de>, &'de RawValue>()? {
            self.0.push(M::from((name.0, value)));
        }
        Ok(())
    }
}

/// Appends the top-level members of `data` to `members` in document order,
/// each made into an `M` from its (unescaped) name and its value's raw JSON
/// text; an error if `data` is not a JSON object (`members` may then hold
/// some of them). The whole input is validated as JSON, but no value is
/// decoded.
pub(crate) fn parse_members_into<'a, M>(
    data: &'a [u8],
    members: &mut Vec<M>,
) -> serde_json::Result<()>
where
    M: From<(Cow<'a, str>, &'a RawValue)>,
{
    let mut deserializer = serde_json::Deserializer::from_slice(data);
    MembersInto(members).deserialize(&mut deserializer)?;
    deserializer.end()
}

/// How deeply [`scan_object`] nests arrays and objects: well below
/// `serde_json`'s limit (128), so that it never accepts what `serde_json`
/// refuses for depth.
const SCAN_DEPTH_MAX: usize = 64;

/// Number tokens longer than this are left to `serde_json` (see
/// [`scan_object`]): far from the digits at which a number overflows `f64`.
const SCAN_NUMBER_BYTES_MAX: usize = 100;

/// Appends the top-level members of the JSON object in `data` to `members`
/// in document order, as (unescaped name, value's JSON text); whether
/// `data` is one (if not, `members` may hold some of them).
///
/// A hand-written scanner, several times faster than [`parse_members_into`]
/// for the small objects events are: the read path runs it on every
/// upcast event. It is strict where `serde_json` reads the same text into a
/// `Value` differently or not at all, so that whatever it accepts a `Value`
/// reads alike: it validates the whole text (UTF-8, grammar, escapes), and
/// refuses (for the caller to let `serde_json` decide) exponents, number
/// tokens over [`SCAN_NUMBER_BYTES_MAX`] bytes, `\u` escapes of surrogates
/// and nesting deeper than [`SCAN_DEPTH_MAX`]. A refusal says nothing about
/// whether `data` is JSON.
pub(crate) fn scan_object<'a, M>(data: &'a [u8], members: &mut Vec<M>) -> bool
where
    M: From<(Cow<'a, str>, &'a str)>,
{
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let b = text.as_bytes();
    let mut i = skip_whitespace(b, 0);
    if b.get(i) != Some(&b'{') {
        return false;
    }
    i = skip_whitespace(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return skip_whitespace(b, i + 1) == b.len();
    }
    loop {
        let Some((end, escaped)) = scan_string(b, i) else {
            return false;
        };
        // Slicing by `get`: every index here is next to an ASCII byte, so
        // on a character boundary, but a mistake must not panic.
        let Some(quoted) = text.get(i..end) else {
            return false;
        };
        let name = if escaped {
            // Unescaped as `serde_json` unescapes a `Value`'s keys.
            match serde_json::from_str::<String>(quoted) {
                Ok(name) => Cow::Owned(name),
                Err(_) => return false,
            }
        } else {
            match quoted.get(1..quoted.len() - 1) {
                Some(name) => Cow::Borrowed(name),
                None => return false,
            }
        };
        i = skip_whitespace(b, end);
        if b.get(i) != Some(&b':') {
            return false;
        }
        i = skip_whitespace(b, i + 1);
        // The object itself is one level.
        let Some(end) = scan_value(b, i, SCAN_DEPTH_MAX - 1) else {
            return false;
        };
        let Some(value) = text.get(i..end) else {
            return false;
        };
        members.push(M::from((name, value)));
        i = skip_whitespace(b, end);
        match b.get(i) {
            Some(b',') => i = skip_whitespace(b, i + 1),
            Some(b'}') => return skip_whitespace(b, i + 1) == b.len(),
            _ => return false,
        }
    }
}

fn skip_whitespace(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The string starting at `b[i]`: the index after its closing quote, and
/// whether it has escapes.
fn scan_string(b: &[u8], i: usize) -> Option<(usize, bool)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        j = skip_plain_string_bytes(b, j);
        match *b.get(j)? {
            b'"' => return Some((j + 1, escaped)),
            b'\\' => {
                escaped = true;
                match *b.get(j + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                    b'u' => {
                        let hex = b.get(j + 2..j + 6)?;
                        let mut code = 0u32;
                        for &h in hex {
                            code = code * 16 + char::from(h).to_digit(16)?;
                        }
                        // Whether a surrogate is paired is `serde_json`'s
                        // to judge.
                        if (0xD800..=0xDFFF).contains(&code) {
                            return None;
                        }
                        j += 6;
                    }
                    _ => return None,
                }
            }
            0x00..=0x1f => return None,
            _ => j += 1,
        }
    }
}

/// The index of the first byte from `i` on that ends a string's plain run
/// (a quote, a backslash or a control character), or `b.len()`. Eight
/// bytes at a time: most of an event's bytes are in strings (ids, names).
pub(crate) fn skip_plain_string_bytes(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    const SPACES: u64 = u64::from_ne_bytes([0x20; 8]);
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // The high bit of each byte that is zero after the xor (a quote or
        // backslash) or below 0x20. Bits above the lowest match may be
        // false positives (borrows), so only the lowest one is used.
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        let found = zero(x ^ QUOTES) | zero(x ^ BACKSLASHES) | (x.wrapping_sub(SPACES) & !x & HIGH);
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&byte) = b.get(i) {
        if byte == b'"' || byte == b'\\' || byte < 0x20 {
            return i;
        }
        i += 1;
    }
    i
}

/// The value starting at `b[i]`: the index after it.
fn scan_value(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => scan_string(b, i).map(|(end, _)| end),
        b'{' => {
            let depth = depth.checked_sub(1)?;
            let mut j = skip_whitespace(b, i + 1);
            if b.get(j) == Some(&b'}') {
                return Some(j + 1);
            }
            loop {
                let (end, _) = scan_string(b, j)?;
                j = skip_whitespace(b, end);
                if b.get(j) != Some(&b':') {
                    return None;
                }
                j = scan_value(b, skip_whitespace(b, j + 1), depth)?;
                j = skip_whitespace(b, j);
                match *b.get(j)? {
                    b',' => j = skip_whitespace(b, j + 1),
                    b'}' => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        b'[' => {
            let depth = depth.checked_sub(1)?;
            let mut j = skip_whitespace(b, i + 1);
            if b.get(j) == Some(&b']') {
                return Some(j + 1);
            }
            loop {
                j = skip_whitespace(b, scan_value(b, j, depth)?);
                match *b.get(j)? {
                    b',' => j = skip_whitespace(b, j + 1),
                    b']' => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        b't' => literal(b, i, b"true"),
        b'f' => literal(b, i, b"false"),
        b'n' => literal(b, i, b"null"),
        b'-' | b'0'..=b'9' => scan_number(b, i),
        _ => None,
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (b.get(i..i + word.len())? == word).then_some(i + word.len())
}

/// A number without exponent: `-?(0|[1-9][0-9]*)(\.[0-9]+)?`.
fn scan_number(b: &[u8], i: usize) -> Option<usize> {
    let digits = |mut j: usize| {
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        j
    };
    let mut j = i;
    if b.get(j) == Some(&b'-') {
        j += 1;
    }
    j = match *b.get(j)? {
        b'0' => j + 1,
        b'1'..=b'9' => digits(j + 1),
        _ => return None,
    };
    if b.get(j) == Some(&b'.') {
        let end = digits(j + 1);
        if end == j + 1 {
            return None;
        }
        j = end;
    }
    // An exponent, or a number long enough to overflow: `serde_json`
    // decides what it reads as.
    if matches!(b.get(j), Some(b'e' | b'E')) || j - i > SCAN_NUMBER_BYTES_MAX {
        return None;
    }
    Some(j)
}

/// Whether two items share a name. Event objects are small, so a pairwise
/// check beats hashing, up to a size where it no longer does.
pub(crate) fn has_duplicate_names<T>(items: &[T], name: impl Fn(&T) -> &str) -> bool {
    if items.len() <= 16 {
        return items
            .iter()
            .enumerate()
            .any(|(i, m)| items[..i].iter().any(|o| name(o) == name(m)));
    }
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    !items.iter().all(|m| seen.insert(name(m)))
}

/// The top-level members of `data`, or `None` if it is not a JSON object.
/// Every value is validated as JSON (the whole input is parsed), but none is
/// decoded.
pub(crate) fn object_members(data: &[u8]) -> Option<Vec<Member<'_>>> {
    // Events are small objects; a handful of members is typical.
    let mut members: Vec<(Cow<'_, str>, &RawValue)> = Vec::with_capacity(8);
    parse_members_into(data, &mut members).ok()?;
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

/// Any JSON value, a few levels deep, for property tests of the code that
/// handles raw JSON.
#[cfg(test)]
pub(crate) fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::{Value, json};

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

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

    proptest! {
        /// Replacing members' values through their ranges gives the same
        /// document as replacing them in a `Value`, for any object and any
        /// choice of members, whatever the input's whitespace.
        #[test]
        fn splicing_agrees_with_the_value_path(
            object in prop::collection::btree_map(".{0,6}", arbitrary_json(), 0..6),
            pick in prop::collection::vec(any::<bool>(), 6),
            replacement in arbitrary_json(),
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

        /// Whatever the scanner accepts, even bytes changed at random, a
        /// `Value` reads as an object with the same members; and it accepts
        /// every object `serde_json` writes without exponents.
        #[test]
        fn the_scanner_never_reads_what_a_value_does_not(
            object in prop::collection::btree_map(".{0,6}", arbitrary_json(), 0..6),
            pretty in any::<bool>(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 0..3),
        ) {
            let object = Value::Object(object.into_iter().collect());
            let mut data = if pretty {
                serde_json::to_vec_pretty(&object).unwrap()
            } else {
                serde_json::to_vec(&object).unwrap()
            };
            let has_exponent = |data: &[u8]| {
                let text = String::from_utf8_lossy(data);
                serde_json::from_str::<Value>(&text).is_ok_and(|v| numbers_with_exponents(&v))
            };
            if edits.is_empty() && !has_exponent(&data) {
                let mut members: Vec<(Cow<'_, str>, &str)> = Vec::new();
                prop_assert!(scan_object(&data, &mut members), "{}", String::from_utf8_lossy(&data));
            }
            for (at, byte, how) in edits {
                let i = at.index(data.len() + 1);
                match how {
                    0 => data.insert(i, byte),
                    1 if i < data.len() => { data.remove(i); }
                    _ if i < data.len() => data[i] = byte,
                    _ => {}
                }
            }
            let mut members: Vec<(Cow<'_, str>, &str)> = Vec::new();
            if scan_object(&data, &mut members) {
                let value: Value = serde_json::from_slice(&data).unwrap();
                let object = value.as_object().unwrap();
                // Duplicate names: the last one is the value's.
                let mut expected = serde_json::Map::new();
                for (name, raw) in &members {
                    expected.insert(name.to_string(), serde_json::from_str(raw).unwrap());
                }
                prop_assert_eq!(&expected, object);
            }
        }
    }

    /// Whether `value` has a number `serde_json` writes with an exponent.
    fn numbers_with_exponents(value: &Value) -> bool {
        match value {
            Value::Number(n) => n.to_string().contains(['e', 'E']),
            Value::Array(items) => items.iter().any(numbers_with_exponents),
            Value::Object(members) => members.values().any(numbers_with_exponents),
            _ => false,
        }
    }

    #[test]
    fn the_scanner_reads_json_and_refuses_the_rest() {
        let scan = |data: &[u8]| {
            let mut members: Vec<(Cow<'_, str>, &str)> = Vec::new();
            scan_object(data, &mut members).then(|| {
                members
                    .into_iter()
                    .map(|(n, v)| (n.into_owned(), v.to_owned()))
                    .collect::<Vec<_>>()
            })
        };
        let data = " {\"a\" :-0.5,\t\"b\\u00e9\\n\":[true, false,null,{\"c\":\"\\u00e9\\/\"}],\r\n\"d\":\"é\",\"e\":{}, \"f\":[ ],\"g\":0} ";
        assert_eq!(
            scan(data.as_bytes()).unwrap(),
            [
                ("a", "-0.5"),
                ("bé\n", "[true, false,null,{\"c\":\"\\u00e9\\/\"}]"),
                ("d", "\"é\""),
                ("e", "{}"),
                ("f", "[ ]"),
                ("g", "0"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        // Not JSON.
        for data in [
            &b""[..],
            b"{",
            b"{\"a\":01}",
            b"{\"a\":1.}",
            b"{\"a\":-}",
            b"{\"a\":.5}",
            b"{\"a\":+1}",
            b"{\"a\":tru}",
            b"{\"a\":nul}",
            b"{\"a\":\"\x01\"}",
            b"{\"a\":\"\\q\"}",
            b"{\"a\":\"\\u12G4\"}",
            b"{\"a\":\"\\u12\"}",
            b"{\"a\":\"\xff\"}",
            b"{\"a\":[1,]}",
            b"{\"a\":[1 2]}",
            b"{\"a\":{\"b\"}}",
            b"{\"a\":{1:2}}",
            b"{\"a\":1,}",
            b"{,}",
            b"{\"a\" 1}",
            b"{\"a\":1}}",
            b"{\"a\":1} 2",
            b"{\"a\":\"x}",
            b"{a:1}",
            b"\xc2\xa0{}",
            b"[]",
        ] {
            assert!(scan(data).is_none(), "{}", String::from_utf8_lossy(data));
            assert!(serde_json::from_slice::<serde_json::Map<String, Value>>(data).is_err());
        }
        // JSON, but for `serde_json` to read.
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(64), "]".repeat(64));
        let long = format!("{{\"a\":{}}}", "1".repeat(101));
        for data in [
            &b"{\"a\":1e5}"[..],
            b"{\"a\":1E-5}",
            b"{\"a\":\"\\ud83d\\ude00\"}",
            b"{\"\\ud83d\\ude00\":1}",
            deep.as_bytes(),
            long.as_bytes(),
        ] {
            assert!(scan(data).is_none(), "{}", String::from_utf8_lossy(data));
        }
        let deep_enough = format!("{{\"a\":{}1{}}}", "[".repeat(63), "]".repeat(63));
        assert!(scan(deep_enough.as_bytes()).is_some());
        assert!(scan(format!("{{\"a\":{}}}", "1".repeat(100)).as_bytes()).is_some());
    }
}
