//! Opaque page cursors: the sort key of the last item of a page, tied to
//! the query that produced it.
//!
//! A cursor is base64url (no padding) of a small JSON document: a
//! fingerprint of the filters and the key values. The fingerprint is
//! FNV-1a over the filter names and values; it only has to tell queries of
//! one client apart, not resist forgery (a forged cursor can only select
//! rows the client may read anyway).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use projector::http::Problem;
use serde::{Deserialize, Serialize};

/// The longest cursor accepted, in bytes.
pub const CURSOR_BYTES_MAX: usize = 2_048;

#[derive(Debug, Serialize, Deserialize)]
struct Body {
    /// Fingerprint of the query (hex).
    q: String,
    /// Sort key of the last item returned.
    k: Vec<String>,
}

/// Fingerprint of a query's filters (and sort order).
pub fn fingerprint(parts: &[(&str, Option<&str>)]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, value) in parts {
        for byte in name
            .bytes()
            .chain([0])
            .chain(value.unwrap_or("\u{1}absent").bytes())
            .chain([0])
        {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

pub fn encode(fingerprint: &str, keys: &[&str]) -> String {
    let body = Body {
        q: fingerprint.to_owned(),
        k: keys.iter().map(|k| (*k).to_owned()).collect(),
    };
    // Serializing two strings and a list of strings cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).unwrap_or_default())
}

/// The key values of a cursor made by the query with `fingerprint`.
pub fn decode(raw: &str, fingerprint: &str, keys: usize) -> Result<Vec<String>, Problem> {
    let invalid = |why: &str| {
        crate::params::invalid_request(format!(
            "invalid cursor: {why}; pass next_cursor from the previous page unchanged"
        ))
        .with("parameter", "cursor")
    };
    if raw.len() > CURSOR_BYTES_MAX {
        return Err(invalid("too long"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(raw)
        .map_err(|_| invalid("not base64url"))?;
    let body: Body = serde_json::from_slice(&bytes).map_err(|_| invalid("malformed"))?;
    if body.q != fingerprint {
        return Err(invalid("it belongs to a query with other filters"));
    }
    if body.k.len() != keys {
        return Err(invalid("malformed"));
    }
    Ok(body.k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_stay_with_their_query() {
        let q = fingerprint(&[("status", Some("approved")), ("customer_id", None)]);
        let c = encode(&q, &["abc", "d\"e"]);
        assert_eq!(decode(&c, &q, 2).unwrap(), vec!["abc", "d\"e"]);
        let other = fingerprint(&[("status", Some("pending")), ("customer_id", None)]);
        assert!(decode(&c, &other, 2).is_err());
        assert!(decode(&c, &q, 1).is_err());
        assert!(decode("not a cursor!", &q, 2).is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode(b"{}"), &q, 2).is_err());
        assert!(decode(&"A".repeat(CURSOR_BYTES_MAX + 1), &q, 2).is_err());
    }

    #[test]
    fn absent_and_empty_filters_differ() {
        assert_ne!(fingerprint(&[("a", None)]), fingerprint(&[("a", Some(""))]));
        assert_ne!(
            fingerprint(&[("a", Some("b")), ("c", None)]),
            fingerprint(&[("a", None), ("c", Some("b"))])
        );
    }
}
