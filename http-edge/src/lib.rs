//! What every annals HTTP surface shares at its edge.
//!
//! - [`ids`]: an id is a UUID in one spelling, the lowercase hyphenated
//!   form; the command and the query API parse ids here, so one id is one
//!   aggregate everywhere and one malformed id one problem everywhere.
//! - [`json`]: request bodies decoded so that every struct is read from a
//!   JSON object only (serde's derives also read arrays, field by field).

pub mod ids;
pub mod json;
