//! What every annals HTTP surface shares at its edge.
//!
//! - [`json`]: request bodies decoded so that every struct is read from a
//!   JSON object only (serde's derives also read arrays, field by field).

pub mod json;
