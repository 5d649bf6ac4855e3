//! Read-only memory maps of files nobody writes: the only `unsafe` in the
//! workspace.
//!
//! A map is only sound while the mapped bytes do not change or shrink
//! underneath it. The store guarantees that for what it maps:
//! - sealed segments, their indexes and bloom filters are never written
//!   again: the writer moves on to a new segment before a segment is sealed,
//!   and index files are written under a temporary name and renamed into
//!   place whole;
//! - the active segment is mapped only during recovery, before the writer
//!   starts, and the map is dropped before a torn tail is truncated;
//! - the data directory is locked (`LOCK`) so no other annals process
//!   writes it.
//!
//! What the store cannot prevent is another program truncating the files;
//! that is outside the contract, like deleting them.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use bytes::Bytes;

/// A read-only map of the whole file, owned by the returned [`Bytes`] so that
/// events decoded from it can be zero-copy slices that keep it alive.
pub fn map_whole_file(file: &File) -> io::Result<Bytes> {
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the store never writes, truncates or replaces a file while a map
    // of it is alive (see the module comment), and the data directory lock
    // keeps other annals processes out, so the mapped bytes cannot change or
    // disappear while the returned `Bytes` (or any slice of it) exists.
    let map = unsafe { memmap2::Mmap::map(file)? };
    Ok(Bytes::from_owner(map))
}

/// A read-only map of `reserve` bytes of a file that is still being appended
/// to (the active segment). The file may be shorter than `reserve`.
///
/// Callers read only below the store's durable length, which never exceeds
/// the file's length; pages past the end of the file are never touched (that
/// would raise SIGBUS). Bytes below the durable length are never rewritten:
/// the writer only appends, and recovery truncates a torn tail before the
/// file is mapped.
pub fn map_growing_file(file: &File, reserve: u64) -> io::Result<Bytes> {
    let len = usize::try_from(reserve).map_err(io::Error::other)?;
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: as for `map_whole_file`, and additionally: the region below the
    // durable length, the only one ever read, is written exactly once before
    // it becomes durable and is never modified or truncated while mapped;
    // mapping past the end of the file is allowed by mmap(2) and harmless as
    // long as those pages are not accessed, which the durable-length bound
    // guarantees.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
    Ok(Bytes::from_owner(map))
}
