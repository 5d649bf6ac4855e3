//! Ids in their one spelling.
//!
//! annals writes every id as a UUID in lowercase hexadecimal with hyphens
//! (`0190a5b8-3c1e-7d4f-9a2b-5c6d7e8f9a0b`, 36 characters): in command
//! answers, `Location`, the views and the events. That is also the only
//! spelling it reads. Other spellings of the same UUID (uppercase, braces,
//! `urn:uuid:`, 32 digits without hyphens) are refused rather than
//! canonicalised: accepted, they would give one resource several URLs,
//! make the same retried request differ from itself (idempotency
//! fingerprints cover the path) and leave the read side to guess, while a
//! client only ever holds ids that annals spelled for it.

use std::fmt;

use uuid::Uuid;

/// Why a text is not an id. The message names the text (shortened) and,
/// for another spelling of a UUID, the spelling to use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    #[error(
        "{} is not an id: ids are UUIDs written in lowercase hex with hyphens \
         (8-4-4-4-12, e.g. {EXAMPLE})",
        Shown(.raw)
    )]
    NotUuid { raw: String },
    #[error(
        "{} is not an id as annals writes it: write it as \"{canonical}\" \
         (lowercase hex with hyphens)",
        Shown(.raw)
    )]
    NotCanonical { raw: String, canonical: Uuid },
    #[error("the nil UUID is not an id")]
    Nil,
}

const EXAMPLE: &str = "0190a5b8-3c1e-7d4f-9a2b-5c6d7e8f9a0b";

/// The spelling of an id as a regular expression, for API documents.
pub const ID_PATTERN: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";

/// The longest part of a refused text repeated in a message, in characters.
const SHOWN_CHARS_MAX: usize = 64;

/// A refused text as a quoted string, cut after [`SHOWN_CHARS_MAX`]
/// characters: the message stays short whatever was sent.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.char_indices();
        match chars.nth(SHOWN_CHARS_MAX) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?} (cut, {} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// Parses an id: a non-nil UUID in its canonical spelling.
pub fn parse_id(raw: &str) -> Result<Uuid, IdError> {
    if is_canonical(raw) {
        // Cannot fail on 36 canonical characters; the fallback keeps this
        // free of a panic all the same.
        let id = Uuid::try_parse(raw).map_err(|_| IdError::NotUuid {
            raw: raw.to_owned(),
        })?;
        if id.is_nil() {
            return Err(IdError::Nil);
        }
        return Ok(id);
    }
    Err(match Uuid::try_parse(raw) {
        Ok(canonical) if canonical.is_nil() => IdError::Nil,
        Ok(canonical) => IdError::NotCanonical {
            raw: raw.to_owned(),
            canonical,
        },
        Err(_) => IdError::NotUuid {
            raw: raw.to_owned(),
        },
    })
}

/// 8-4-4-4-12 lowercase hex digits.
fn is_canonical(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => matches!(b, b'0'..=b'9' | b'a'..=b'f'),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_the_canonical_spelling_is_an_id() {
        let id = Uuid::from_u128(0x0190a5b8_3c1e_7d4f_9a2b_5c6d7e8f9a0b);
        let canonical = id.to_string();
        assert_eq!(parse_id(&canonical), Ok(id));
        for other in [
            canonical.to_uppercase(),
            format!("{{{canonical}}}"),
            format!("urn:uuid:{canonical}"),
            id.simple().to_string(),
        ] {
            assert_eq!(
                parse_id(&other),
                Err(IdError::NotCanonical {
                    raw: other.clone(),
                    canonical: id
                })
            );
            assert!(
                parse_id(&other)
                    .unwrap_err()
                    .to_string()
                    .contains(&canonical)
            );
        }
        assert_eq!(parse_id(&Uuid::nil().to_string()), Err(IdError::Nil));
        for bad in ["", "42", "nope", &canonical[1..], &format!("{canonical}0")] {
            assert!(
                matches!(parse_id(bad), Err(IdError::NotUuid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_long_refused_text_is_cut_in_the_message() {
        let long = "x".repeat(10_000);
        let message = parse_id(&long).unwrap_err().to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("10000 bytes"), "{message}");
    }

    proptest! {
        #[test]
        fn every_uuid_reads_back_from_its_canonical_spelling(bits in 1u128..) {
            let id = Uuid::from_u128(bits);
            prop_assert_eq!(parse_id(&id.to_string()), Ok(id));
            let upper = id.to_string().to_uppercase();
            prop_assert_eq!(parse_id(&upper).is_ok(), upper == id.to_string());
        }
    }
}
