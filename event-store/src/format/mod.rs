//! The on-disk format, one module per file kind. Every integer is
//! little-endian and every checksum is CRC-32/ISO-HDLC (`crc32fast`).
//! docs/format.md has the same layouts as one page.

pub mod bloom;
pub mod event;
pub mod frame;
pub mod header;
pub mod index;
pub mod keyindex;
pub mod keylog;
pub mod snapshot;
