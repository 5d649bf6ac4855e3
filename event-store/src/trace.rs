//! W3C Trace Context as events carry it: the `traceparent` of a request
//! is stored in the metadata of every event its command appends (member
//! `traceparent`), and a saga issues its commands as children of the
//! event they react to (same trace, a fresh parent id), so that one
//! business flow can be followed across processes by its trace id. The
//! command side writes it, sagas and the projector read it.
//!
//! A header that is not a valid `traceparent` is ignored, as the
//! specification asks (the request then starts no trace); it is never a
//! reason to refuse a command.

use std::fmt;

/// The name of the header and of the event metadata member.
pub const TRACEPARENT: &str = "traceparent";

/// A `traceparent` value: `00-<trace id>-<parent id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

impl TraceParent {
    /// Parses a header value. Version `00` must be exactly 55 characters;
    /// a later version is read by its first 55 (its fields may grow after
    /// a dash). Lowercase hex only; an all-zero trace or parent id, and
    /// version `ff`, are invalid.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let bytes = text.as_bytes();
        // ASCII first: the fields below are sliced by byte offsets.
        if bytes.len() < 55 || !text.is_ascii() {
            return None;
        }
        let version = hex_byte(&text[0..2])?;
        if version == 0xff || (version == 0 && bytes.len() != 55) {
            return None;
        }
        if version != 0 && bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let mut trace_id = [0; 16];
        for (i, byte) in trace_id.iter_mut().enumerate() {
            *byte = hex_byte(&text[3 + 2 * i..5 + 2 * i])?;
        }
        let mut parent_id = [0; 8];
        for (i, byte) in parent_id.iter_mut().enumerate() {
            *byte = hex_byte(&text[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&text[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The trace id in lowercase hex (32 digits): what ties a flow's
    /// requests, events and log lines together.
    pub fn trace_id(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The trace id's 16 bytes.
    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The parent id's 8 bytes: the caller's span.
    pub fn parent_id_bytes(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The same trace with a fresh parent id: what a step caused by this
    /// one carries.
    pub fn child(&self) -> Self {
        let random = *uuid::Uuid::new_v4().as_bytes();
        let mut parent_id = [0; 8];
        parent_id.copy_from_slice(&random[..8]);
        if parent_id == [0; 8] {
            parent_id[7] = 1;
        }
        Self { parent_id, ..*self }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.parent_id),
            self.flags
        )
    }
}

/// The trace an event's metadata names, if it names a valid one.
pub fn of_event(metadata: &crate::Metadata) -> Option<TraceParent> {
    TraceParent::parse(metadata.extra.get(TRACEPARENT)?.as_str()?)
}

/// Two lowercase hex digits.
fn hex_byte(digits: &str) -> Option<u8> {
    if digits.len() != 2
        || !digits
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    u8::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specification_example_reads_and_writes_back() {
        let parsed = TraceParent::parse(EXAMPLE).unwrap();
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.to_string(), EXAMPLE);
        let child = parsed.child();
        assert_eq!(child.trace_id(), parsed.trace_id());
        assert_ne!(child, parsed);
        assert_eq!(TraceParent::parse(&child.to_string()), Some(child));
    }

    #[test]
    fn invalid_values_are_not_read() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version is read by its first fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(TraceParent::parse(later).is_some());
    }

    proptest! {
        #[test]
        fn what_is_written_reads_back(
            trace in any::<[u8; 16]>(),
            parent in any::<[u8; 8]>(),
            flags in any::<u8>(),
        ) {
            prop_assume!(trace != [0; 16] && parent != [0; 8]);
            let value = TraceParent { trace_id: trace, parent_id: parent, flags };
            prop_assert_eq!(TraceParent::parse(&value.to_string()), Some(value));
        }

        #[test]
        fn any_text_is_read_or_refused_without_panicking(text in "\\PC{0,80}") {
            let _ = TraceParent::parse(&text);
        }
    }
}
