//! Personal data: a key per data subject in the key store, fields sealed
//! with it on the way in and opened on the way out, and erasure by
//! destroying the key (crypto-shredding).

pub mod keys;
pub(crate) mod plaincache;
pub mod shred;
pub mod subjects;

pub use keys::KeyStore;
pub use shred::{ERASED, PLAINTEXT_CACHE_BYTES_DEFAULT, PersonalData, Shredding};
pub use subjects::SubjectKeys;
